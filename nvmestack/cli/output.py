"""Render device structures the way nvme-cli 2.3 prints them.

Pure formatting, no I/O: every function takes a spec view (``IdentifyController``,
``IdentifyNamespace``, ``SmartLog``, ...) and returns text, or a ``dict`` for
``-o json`` that :func:`dumps` turns into nvme-cli's JSON text.

The target is nvme-cli 2.3 with libnvme 1.3 (Debian 12), whose output the tests
compare against byte for byte (``tests/cli/data/nvme-cli-2.3``).  Points worth
knowing when reading or extending this module:

* Numbers that C prints with ``%#x`` read ``0`` for zero and ``0x1f`` otherwise
  (:func:`hx`), never ``0x0``.
* JSON is json-c's pretty form: two-space indent, ``"key":value`` without a
  space.  128-bit counters (``tnvmcap``, SMART data units, ...) are JSON
  *strings* of the decimal value; everything else is a JSON number.
* Strings from the device (``sn``, ``mn``, ``fr``) keep their space padding,
  in text and in JSON.
"""

from __future__ import annotations

import json
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Iterable, Sequence

from nvmestack.spec.identify import IdentifyController, IdentifyNamespace
from nvmestack.spec.log import (
    ChangedNamespaceList,
    DeviceSelfTestLog,
    ErrorInformationEntry,
    FirmwareSlotLog,
    SanitizeStatusLog,
    SmartLog,
)
from nvmestack.spec.status import nvme_cli_string

__all__ = [
    "hx",
    "s32",
    "dumps",
    "id_ctrl_text",
    "id_ctrl_json",
    "id_ns_text",
    "id_ns_json",
    "smart_log_text",
    "smart_log_json",
    "error_log_text",
    "error_log_json",
    "fw_log_text",
    "fw_log_json",
    "hexdump",
    "get_log_text",
    "ns_descs_text",
    "ns_descs_json",
    "command_name",
    "effects_log_text",
    "effects_log_json",
    "changed_ns_list_text",
    "changed_ns_list_json",
    "self_test_log_text",
    "self_test_log_json",
    "sanitize_log_text",
    "sanitize_log_json",
    "REGS_SIZE",
    "show_regs_text",
    "show_regs_json",
]


# -- helpers -----------------------------------------------------------------


def hx(value: int) -> str:
    """C's ``%#x``: ``0`` for zero, ``0x..`` (lower case) otherwise."""
    return f"{value:#x}" if value else "0"


def s32(value: int) -> int:
    """A 32-bit field as C's ``int`` sees it (nvme-cli prints many with ``%d``)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def dumps(obj: Any) -> str:
    """JSON text as nvme-cli prints it (json-c pretty, then a newline).  An
    empty object or array is written as json-c writes it: opened, a new line,
    and closed at the indentation of its key (``"x":{\n  }``)."""
    return _json(obj, 0) + "\n"


def _json(obj: Any, level: int) -> str:
    pad = "  " * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{\n" + "  " * level + "}"
        items = [f"{pad}{json.dumps(str(k), ensure_ascii=False)}:{_json(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * level + "}"
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[\n" + "  " * level + "]"
        items = [pad + _json(v, level + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + "  " * level + "]"
    return json.dumps(obj, ensure_ascii=False)


def _raw(struct: Any, name: str) -> bytes:
    """The bytes of field ``name`` as on the wire (padding kept)."""
    field = type(struct).__dict__[name]
    return bytes(struct)[field.offset : field.offset + field.size]


def _cstr(data: bytes) -> str:
    """A fixed-size C character field printed with ``%-.*s``: up to the first NUL."""
    return data.split(b"\0", 1)[0].decode("latin-1")


def _celsius(kelvin: int) -> int:
    return kelvin - 273


def _temp(kelvin: int) -> str:
    return f"{_celsius(kelvin)}°C ({kelvin} Kelvin)"


def _uuid(data: bytes) -> str:
    h = data.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _si(value: int) -> str:
    """nvme-cli's ``suffix_si_get`` with ``%.2f``: powers of 1000, k to Q."""
    suffixes = ["", "k", "M", "G", "T", "P", "E", "Z", "Y", "R", "Q"]
    i = 0
    scaled = Decimal(value)
    while scaled >= 1000 and i < len(suffixes) - 1:
        scaled /= 1000
        i += 1
    return f"{scaled.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN)} {suffixes[i]}B"


def _signed32(cls: type, out: dict[str, Any]) -> dict[str, Any]:
    """nvme-cli 2.3 adds 32-bit fields with ``json_object_add_value_int``: signed."""
    for key, value in out.items():
        field = cls.__dict__.get(key)
        if isinstance(value, int) and getattr(field, "size", 0) == 4 and type(field).__name__ == "Field":
            out[key] = s32(value)
    return out


# -- Identify Controller ---------------------------------------------------------


_PSD_WORKLOAD = {0: "-", 1: "1MiB 32 RW, 30s idle", 2: "80K 128KiB SW"}


def _ps_power(power: int, scale: int) -> str:
    scale &= 3
    if scale == 0:
        return "-"
    if scale == 1:
        return f"{power // 10000}.{power % 10000:04d}W"
    if scale == 2:
        return f"{power // 100}.{power % 100:02d}W"
    return "reserved"


def _power_states(ctrl: IdentifyController) -> list[str]:
    lines = []
    for i in range(min(ctrl.npss, 31) + 1):
        p = ctrl.psd[i]
        if p.mxps:
            mp = f"{p.mp // 10000}.{p.mp % 10000:04d}W"
        else:
            mp = f"{p.mp // 100}.{p.mp % 100:02d}W"
        op = "non-operational" if p.nops else "operational"
        raw = bytes(p)
        lines.append(
            f"ps {i:6d} : mp:{mp} {op} enlat:{s32(p.enlat)} exlat:{s32(p.exlat)}"
            f" rrt:{raw[12]} rrl:{raw[13]}"
        )
        lines.append(
            f"            rwt:{raw[14]} rwl:{raw[15]} idle_power:{_ps_power(p.idlp, p.ips)}"
            f" active_power:{_ps_power(p.actp, p.aps)}"
        )
        lines.append(f"            active_power_workload:{_PSD_WORKLOAD.get(p.apw, 'reserved')}")
    return lines


def _ctrl_fields(ctrl: IdentifyController) -> list[tuple[str, str]]:
    """(name, text value) in nvme-cli's order."""
    c = ctrl
    ieee = _raw(c, "ieee")
    d = str
    rows: list[tuple[str, str]] = [
        ("vid", hx(c.vid)),
        ("ssvid", hx(c.ssvid)),
        ("sn", _cstr(_raw(c, "sn"))),
        ("mn", _cstr(_raw(c, "mn"))),
        ("fr", _cstr(_raw(c, "fr"))),
        ("rab", d(c.rab)),
        ("ieee", f"{ieee[2]:02x}{ieee[1]:02x}{ieee[0]:02x}"),
        ("cmic", hx(c.cmic)),
        ("mdts", d(c.mdts)),
        ("cntlid", hx(c.cntlid)),
        ("ver", hx(c.ver)),
        ("rtd3r", hx(c.rtd3r)),
        ("rtd3e", hx(c.rtd3e)),
        ("oaes", hx(c.oaes)),
        ("ctratt", hx(c.ctratt)),
        ("rrls", hx(c.rrls)),
        ("cntrltype", d(c.cntrltype)),
        ("fguid", _uuid(_raw(c, "fguid"))),
        ("crdt1", d(c.crdt1)),
        ("crdt2", d(c.crdt2)),
        ("crdt3", d(c.crdt3)),
        ("nvmsr", d(c.nvmsr)),
        ("vwci", d(c.vwci)),
        ("mec", d(c.mec)),
        ("oacs", hx(c.oacs)),
        ("acl", d(c.acl)),
        ("aerl", d(c.aerl)),
        ("frmw", hx(c.frmw)),
        ("lpa", hx(c.lpa)),
        ("elpe", d(c.elpe)),
        ("npss", d(c.npss)),
        ("avscc", hx(c.avscc)),
        ("apsta", hx(c.apsta)),
        ("wctemp", d(c.wctemp)),
        ("cctemp", d(c.cctemp)),
        ("mtfa", d(c.mtfa)),
        ("hmpre", d(s32(c.hmpre))),
        ("hmmin", d(s32(c.hmmin))),
        ("tnvmcap", d(c.tnvmcap)),
        ("unvmcap", d(c.unvmcap)),
        ("rpmbs", hx(c.rpmbs)),
        ("edstt", d(c.edstt)),
        ("dsto", d(c.dsto)),
        ("fwug", d(c.fwug)),
        ("kas", d(c.kas)),
        ("hctma", hx(c.hctma)),
        ("mntmt", d(c.mntmt)),
        ("mxtmt", d(c.mxtmt)),
        ("sanicap", hx(c.sanicap)),
        ("hmminds", d(c.hmminds)),
        ("hmmaxd", d(c.hmmaxd)),
        ("nsetidmax", d(c.nsetidmax)),
        ("endgidmax", d(c.endgidmax)),
        ("anatt", d(c.anatt)),
        ("anacap", d(c.anacap)),
        ("anagrpmax", d(c.anagrpmax)),
        ("nanagrpid", d(c.nanagrpid)),
        ("pels", d(c.pels)),
        ("domainid", d(c.domainid)),
        ("megcap", d(c.megcap)),
        ("sqes", hx(c.sqes)),
        ("cqes", hx(c.cqes)),
        ("maxcmd", d(c.maxcmd)),
        ("nn", d(s32(c.nn))),
        ("oncs", hx(c.oncs)),
        ("fuses", hx(c.fuses)),
        ("fna", hx(c.fna)),
        ("vwc", hx(c.vwc)),
        ("awun", d(c.awun)),
        ("awupf", d(c.awupf)),
        ("icsvscc", d(c.icsvscc)),
        ("nwpc", d(c.nwpc)),
        ("acwu", d(c.acwu)),
        ("ocfs", hx(c.ocfs)),
        ("sgls", hx(c.sgls)),
        ("mnan", d(c.mnan)),
        ("maxdna", d(c.maxdna)),
        ("maxcna", d(c.maxcna)),
        ("subnqn", _cstr(_raw(c, "subnqn"))),
        ("ioccsz", d(c.ioccsz)),
        ("iorcsz", d(c.iorcsz)),
        ("icdoff", d(c.icdoff)),
        ("fcatt", hx(c.fcatt)),
        ("msdbd", d(c.msdbd)),
        ("ofcs", d(c.ofcs)),
    ]
    return rows


def id_ctrl_text(ctrl: IdentifyController, human: bool = False, vendor: bool = False) -> str:
    """``nvme id-ctrl`` normal output; ``human`` adds the ``-H`` decoding
    under the fields nvme-cli decodes, ``vendor`` (``-v``) the hex dump of
    the vendor specific area after the power states."""
    lines = ["NVME Identify Controller:"]
    for name, value in _ctrl_fields(ctrl):
        lines.append(f"{name:<10}: {value}")
        if human:
            lines += _ctrl_human(ctrl, name)
    lines += _power_states(ctrl)
    text = "\n".join(lines) + "\n"
    if vendor:
        text += "vs[]:\n" + hexdump(_raw(ctrl, "vs"))
    return text


def _sup(v: int, yes: str = "", no: str = "Not ") -> str:
    return yes if v else no


def _ctrl_human(c: IdentifyController, name: str) -> list[str]:
    """The ``-H`` lines nvme-cli 2.3 prints under Identify Controller field
    ``name`` (nothing for the fields it does not decode).  Reserved bits are
    shown only when set, with nvme-cli's own column and bit ranges."""
    out: list[str] = []

    def row(span: str, value: int, text: str, indent: str = "  ") -> None:
        out.append(f"{indent}[{span}] : {hx(value)}\t{text}")

    def flag(span: str, value: int, text: str, indent: str = "  ") -> None:
        row(span, value, text, indent)

    def b(value: int, bit: int) -> int:
        return (value >> bit) & 1

    if name == "cmic":
        v = c.cmic
        if v >> 4:
            row("7:4", v >> 4, "Reserved")
        row("3:3", b(v, 3), f"ANA {_sup(b(v, 3), '', 'not ')}supported")
        row("2:2", b(v, 2), "SR-IOV" if b(v, 2) else "PCI")
        row("1:1", b(v, 1), ("Multi" if b(v, 1) else "Single") + " Controller")
        row("0:0", b(v, 0), ("Multi" if b(v, 0) else "Single") + " Port")
        out.append("")
    elif name == "oaes":
        v = c.oaes
        row("31:31", b(v, 31), f"Discovery Log Change Notice {_sup(b(v, 31))}Supported")
        if (v >> 28) & 7:
            row("30:28", (v >> 28) & 7, "Reserved")
        row("27:27", b(v, 27), f"Zone Descriptor Changed Notices {_sup(b(v, 27))}Supported")
        if (v >> 16) & 0x7FF:
            row("26:16", (v >> 16) & 0x7FF, "Reserved")
        row("15:15", b(v, 15), f"Normal NSS Shutdown Event {_sup(b(v, 15))}Supported")
        row("14:14", b(v, 14), f"Endurance Group Event Aggregate Log Page Change Notice {_sup(b(v, 14))}Supported")
        row("13:13", b(v, 13), f"LBA Status Information Notices {_sup(b(v, 13))}Supported")
        row("12:12", b(v, 12), f"Predictable Latency Event Aggregate Log Change Notices {_sup(b(v, 12))}Supported")
        row("11:11", b(v, 11), f"Asymmetric Namespace Access Change Notices {_sup(b(v, 11))}Supported")
        if b(v, 10):
            row("10:10", 1, "Reserved")
        row("9:9", b(v, 9), f"Firmware Activation Notices {_sup(b(v, 9))}Supported")
        row("8:8", b(v, 8), f"Namespace Attribute Changed Event {_sup(b(v, 8))}Supported")
        if v & 0xFF:
            row("7:0", v & 0xFF, "Reserved")
        out.append("")
    elif name == "ctratt":
        v = c.ctratt
        if v >> 20:
            row("31:20", v >> 20, "Reserved", " ")
        row("19:19", b(v, 19), f"Flexible Data Placement {_sup(b(v, 19))}Supported")
        if (v >> 16) & 7:
            row("18:16", (v >> 16) & 7, "Reserved")
        for bit, text in (
            (15, "Extended LBA Formats"), (14, "Delete NVM Set"), (13, "Delete Endurance Group"),
            (12, "Variable Capacity Management"), (11, "Fixed Capacity Management"),
            (10, "Multi Domain Subsystem"), (9, "UUID List"), (8, "SQ Associations"),
            (7, "Namespace Granularity"), (6, "Traffic Based Keep Alive"), (5, "Predictable Latency Mode"),
            (4, "Endurance Groups"), (3, "Read Recovery Levels"), (2, "NVM Sets"),
            (1, "Non-Operational Power State Permissive"), (0, "128-bit Host Identifier"),
        ):
            row(f"{bit}:{bit}", b(v, bit), f"{text} {_sup(b(v, bit))}Supported")
        out.append("")
    elif name == "cntrltype":
        v = c.cntrltype
        types = ("Controller type not reported", "I/O Controller", "Discovery Controller",
                 "Administrative Controller")
        row("7:2", (v & 0xFC) >> 2, "Reserved")
        row("1:0", v, types[v & 3])
    elif name == "nvmsr":
        v = c.nvmsr
        if (v >> 2) & 0xFC:
            row("7:2", (v >> 2) & 0xFC, "Reserved", " ")
        row("1:1", b(v, 1), f"NVM subsystem {_sup(b(v, 1))}part of an Enclosure")
        row("0:0", b(v, 0), f"NVM subsystem {_sup(b(v, 0))}part of an Storage Device")
        out.append("")
    elif name == "vwci":
        v = c.vwci
        row("7:7", b(v, 7), f"VPD Write Cycles Remaining field is {_sup(b(v, 7))}valid.")
        row("6:0", v & 0xFE, "VPD Write Cycles Remaining ")
        out.append("")
    elif name == "mec":
        v = c.mec
        if (v >> 2) & 0xFC:
            row("7:2", (v >> 2) & 0xFC, "Reserved", " ")
        row("1:1", b(v, 1), f"NVM subsystem {_sup(b(v, 1))}contains a Management Endpoint on a PCIe port")
        row("0:0", b(v, 0), f"NVM subsystem {_sup(b(v, 0))}contains a Management Endpoint on an SMBus/I2C port")
        out.append("")
    elif name == "oacs":
        v = c.oacs
        if v >> 11:
            row("15:11", v >> 11, "Reserved", " ")
        for bit, text in (
            (10, "Lockdown Command and Feature"), (9, "Get LBA Status Capability"), (8, "Doorbell Buffer Config"),
            (7, "Virtualization Management"), (6, "NVMe-MI Send and Receive"), (5, "Directives"),
            (4, "Device Self-test"), (3, "NS Management and Attachment"), (2, "FW Commit and Download"),
            (1, "Format NVM"), (0, "Security Send and Receive"),
        ):
            row(f"{bit}:{bit}", b(v, bit), f"{text} {_sup(b(v, bit))}Supported")
        out.append("")
    elif name == "frmw":
        v = c.frmw
        if v >> 6:
            row("7:6", v >> 6, "Reserved")
        row("5:5", b(v, 5), f"Multiple FW or Boot Update Detection {_sup(b(v, 5))}Supported")
        row("4:4", b(v, 4), f"Firmware Activate Without Reset {_sup(b(v, 4))}Supported")
        row("3:1", (v >> 1) & 7, "Number of Firmware Slots")
        row("0:0", b(v, 0), "Firmware Slot 1 Read" + ("-Only" if b(v, 0) else "/Write"))
        out.append("")
    elif name == "lpa":
        v = c.lpa
        if b(v, 7):
            row("7:7", 1, "Reserved")
        for bit, text in (
            (6, "Telemetry Log Data Area 4"), (5, "LID 0x0, Scope of each command in LID 0x5, 0x12, 0x13"),
            (4, "Persistent Event log"), (3, "Telemetry host/controller initiated log page"),
            (2, "Extended data for Get Log Page"), (1, "Command Effects Log Page"), (0, "SMART/Health Log Page per NS"),
        ):
            row(f"{bit}:{bit}", b(v, bit), f"{text} {_sup(b(v, bit))}Supported")
        out.append("")
    elif name == "elpe":
        out += [f"  [7:0] : {c.elpe} (0's based)\tError Log Page Entries (ELPE)", ""]
    elif name == "npss":
        out += [f"  [7:0] : {c.npss} (0's based)\tNumber of Power States Support (NPSS)", ""]
    elif name in ("avscc", "icsvscc"):
        v = getattr(c, name)
        if v >> 1:
            row("7:1", v >> 1, "Reserved")
        who = "Admin" if name == "avscc" else "NVM"
        row("0:0", b(v, 0), f"{who} Vendor Specific Commands uses " + ("NVMe" if b(v, 0) else "Vendor Specific")
            + " Format")
        out.append("")
    elif name == "apsta":
        v = c.apsta
        if v >> 1:
            row("7:1", v >> 1, "Reserved")
        row("0:0", b(v, 0), f"Autonomous Power State Transitions {_sup(b(v, 0))}Supported")
        out.append("")
    elif name in ("wctemp", "cctemp", "mntmt", "mxtmt"):
        v = getattr(c, name)
        label = {
            "wctemp": "Warning Composite Temperature Threshold (WCTEMP)",
            "cctemp": "Critical Composite Temperature Threshold (CCTEMP)",
            "mntmt": "Minimum Thermal Management Temperature (MNTMT)",
            "mxtmt": "Maximum Thermal Management Temperature (MXTMT)",
        }[name]
        out += [f" [15:0] : {_celsius(v)}°C ({v} Kelvin)\t{label}", ""]
    elif name in ("tnvmcap", "unvmcap"):
        label = "Total NVM Capacity (TNVMCAP)" if name == "tnvmcap" else "Unallocated NVM Capacity (UNVMCAP)"
        out += [f"[127:0] : {getattr(c, name)}", f"\t{label}", ""]
    elif name == "rpmbs":
        v = c.rpmbs
        out.append(f" [31:24]: {hx(v >> 24)}\tAccess Size")
        out.append(f" [23:16]: {hx((v >> 16) & 0xFF)}\tTotal Size")
        if (v >> 6) & 0x3FF:
            row("15:6", (v >> 6) & 0x3FF, "Reserved", " ")
        row("5:3", (v >> 3) & 7, "Authentication Method")
        row("2:0", v & 7, "Number of RPMB Units")
        out.append("")
    elif name == "hctma":
        v = c.hctma
        if v >> 1:
            row("15:1", v >> 1, "Reserved", " ")
        row("0:0", b(v, 0), f"Host Controlled Thermal Management {_sup(b(v, 0))}Supported")
        out.append("")
    elif name == "sanicap":
        v = c.sanicap
        nodmmas = v >> 30
        texts = ("Additional media modification after sanitize operation completes successfully is not defined",
                 "Media is not additionally modified after sanitize operation completes successfully",
                 "Media is additionally modified after sanitize operation completes successfully",
                 "Reserved")
        row("31:30", nodmmas, texts[nodmmas])
        # nvme-cli 2.3 reads NDI the other way round: set means Not Supported.
        row("29:29", b(v, 29), f"No-Deallocate After Sanitize bit in Sanitize command {_sup(b(v, 29), 'Not ', '')}"
            "Supported")
        if (v >> 3) & 0x3FFFFFF:
            row("28:3", (v >> 3) & 0x3FFFFFF, "Reserved")
        row("2:2", b(v, 2), f"Overwrite Sanitize Operation {_sup(b(v, 2))}Supported", "    ")
        row("1:1", b(v, 1), f"Block Erase Sanitize Operation {_sup(b(v, 1))}Supported", "    ")
        row("0:0", b(v, 0), f"Crypto Erase Sanitize Operation {_sup(b(v, 0))}Supported", "    ")
        out.append("")
    elif name == "anacap":
        v = c.anacap
        row("7:7", b(v, 7), f"Non-zero group ID {_sup(b(v, 7))}Supported")
        row("6:6", b(v, 6), f"Group ID does {_sup(b(v, 6), 'not ', '')}change")
        if b(v, 5):
            row("5:5", 1, "Reserved", " ")
        for bit, text in ((4, "ANA Change state"), (3, "ANA Persistent Loss state"), (2, "ANA Inaccessible state"),
                          (1, "ANA Non-optimized state"), (0, "ANA Optimized state")):
            row(f"{bit}:{bit}", b(v, bit), f"{text} {_sup(b(v, bit))}Supported")
        out.append("")
    elif name in ("sqes", "cqes"):
        v = getattr(c, name)
        q = "SQ" if name == "sqes" else "CQ"
        row("7:4", v >> 4, f"Max {q} Entry Size ({1 << (v >> 4)})")
        row("3:0", v & 0xF, f"Min {q} Entry Size ({1 << (v & 0xF)})")
        out.append("")
    elif name == "oncs":
        v = c.oncs
        if v >> 9:
            row("15:9", v >> 9, "Reserved", " ")
        for bit, text in ((8, "Copy"), (7, "Verify"), (6, "Timestamp"), (5, "Reservations"), (4, "Save and Select"),
                          (3, "Write Zeroes"), (2, "Data Set Management"), (1, "Write Uncorrectable"),
                          (0, "Compare")):
            row(f"{bit}:{bit}", b(v, bit), f"{text} {_sup(b(v, bit))}Supported")
        out.append("")
    elif name == "fuses":
        v = c.fuses
        if (v & 0xFE) >> 1:
            row("15:1", (v & 0xFE) >> 1, "Reserved", " ")
        row("0:0", b(v, 0), f"Fused Compare and Write {_sup(b(v, 0))}Supported")
        out.append("")
    elif name == "fna":
        v = c.fna
        if v >> 4:
            row("7:4", v >> 4, "Reserved")
        # As in nvme-cli 2.3: a set bit 3 reads "Not Supported".
        row("3:3", b(v, 3), f"Format NVM Broadcast NSID (FFFFFFFFh) {_sup(b(v, 3), 'Not ', '')}Supported")
        row("2:2", b(v, 2), f"Crypto Erase {_sup(b(v, 2))}Supported as part of Secure Erase")
        row("1:1", b(v, 1), "Crypto Erase Applies to " + ("All" if b(v, 1) else "Single") + " Namespace(s)")
        row("0:0", b(v, 0), "Format Applies to " + ("All" if b(v, 0) else "Single") + " Namespace(s)")
        out.append("")
    elif name == "vwc":
        v = c.vwc
        flush = ("Support for the NSID field set to FFFFFFFFh is not indicated", "Reserved",
                 "The Flush command does not support NSID set to FFFFFFFFh",
                 "The Flush command supports NSID set to FFFFFFFFh")
        if v >> 3:
            row("7:3", v >> 3, "Reserved")
        row("2:1", (v >> 1) & 3, flush[(v >> 1) & 3])
        row("0:0", b(v, 0), f"Volatile Write Cache {_sup(b(v, 0))}Present")
        out.append("")
    elif name == "nwpc":
        v = c.nwpc
        if v >> 3:
            row("7:3", v >> 3, "Reserved")
        row("2:2", b(v, 2), f"Permanent Write Protect {_sup(b(v, 2))}Supported")
        row("1:1", b(v, 1), f"Write Protect Until Power Supply {_sup(b(v, 1))}Supported")
        row("0:0", b(v, 0), f"No Write Protect and Write Protect Namespace {_sup(b(v, 0))}Supported")
        out.append("")
    elif name == "ocfs":
        v = c.ocfs
        if v >> 2:
            row("15:2", v >> 2, "Reserved")
        row("1:1", b(v, 1), f"Controller Copy Format 1h {_sup(b(v, 1))}Supported")
        row("0:0", b(v, 0), f"Controller Copy Format 0h {_sup(b(v, 0))}Supported")
        out.append("")
    elif name == "sgls":
        v = c.sgls
        sglsp = v & 3
        if v >> 22:
            out.append(f" [31:22]: {hx(v >> 22)}\tReserved")
        for bit, text in (
            (21, "Transport SGL Data Block Descriptor %sSupported"), (20, "Address Offsets %sSupported"),
            (19, "Metadata Pointer Containing SGL Descriptor is %sSupported"),
            (18, "SGL Length Larger than Buffer %sSupported"), (17, "Byte-Aligned Contig. MD Buffer %sSupported"),
            (16, "SGL Bit-Bucket %sSupported"),
        ):
            if sglsp or b(v, bit):
                out.append(f" [{bit}:{bit}]: {hx(b(v, bit))}\t" + text % _sup(b(v, bit)))
        out.append(f" [15:8] : {hx((v >> 8) & 0xFF)}\tSGL Descriptor Threshold")
        if (v >> 3) & 0x1F:
            out.append(f" [7:3] : {hx((v >> 3) & 0x1F)}\tReserved")
        if sglsp or b(v, 2):
            row("2:2", b(v, 2), f"Keyed SGL Data Block descriptor {_sup(b(v, 2))}Supported")
        if sglsp == 3:
            row("1:0", sglsp, "Reserved")
        elif sglsp == 2:
            row("1:0", sglsp, "Scatter-Gather Lists Supported. Dword alignment required.")
        elif sglsp == 1:
            row("1:0", sglsp, "Scatter-Gather Lists Supported. No Dword alignment required.")
        else:
            out.append(f" [1:0]  : {hx(sglsp)}\tScatter-Gather Lists Not Supported")
        out.append("")
    elif name == "fcatt":
        v = c.fcatt
        if v >> 1:
            row("7:1", v >> 1, "Reserved")
        row("0:0", b(v, 0), ("Static" if b(v, 0) else "Dynamic") + " Controller Model")
        out.append("")
    elif name == "ofcs":
        v = c.ofcs
        if v >> 1:
            row("15:1", v >> 1, "Reserved")
        row("0:0", b(v, 0), "Disconnect command " + ("" if b(v, 0) else "Not") + " Supported")
        out.append("")
    return out


def id_ctrl_json(ctrl: IdentifyController) -> dict[str, Any]:
    """``nvme id-ctrl -o json``: nvme-cli's keys, numbers and strings."""
    c = ctrl
    ieee = _raw(c, "ieee")
    out: dict[str, Any] = {
        "vid": c.vid,
        "ssvid": c.ssvid,
        "sn": _cstr(_raw(c, "sn")),
        "mn": _cstr(_raw(c, "mn")),
        "fr": _cstr(_raw(c, "fr")),
        "rab": c.rab,
        "ieee": ieee[2] << 16 | ieee[1] << 8 | ieee[0],
        "cmic": c.cmic,
        "mdts": c.mdts,
        "cntlid": c.cntlid,
        "ver": c.ver,
        "rtd3r": c.rtd3r,
        "rtd3e": c.rtd3e,
        "oaes": c.oaes,
        "ctratt": c.ctratt,
        "rrls": c.rrls,
        "cntrltype": c.cntrltype,
        "fguid": _uuid(_raw(c, "fguid")),
        "crdt1": c.crdt1,
        "crdt2": c.crdt2,
        "crdt3": c.crdt3,
        "nvmsr": c.nvmsr,
        "vwci": c.vwci,
        "mec": c.mec,
        "oacs": c.oacs,
        "acl": c.acl,
        "aerl": c.aerl,
        "frmw": c.frmw,
        "lpa": c.lpa,
        "elpe": c.elpe,
        "npss": c.npss,
        "avscc": c.avscc,
        "apsta": c.apsta,
        "wctemp": c.wctemp,
        "cctemp": c.cctemp,
        "mtfa": c.mtfa,
        "hmpre": c.hmpre,
        "hmmin": c.hmmin,
        "tnvmcap": str(c.tnvmcap),
        "unvmcap": str(c.unvmcap),
        "rpmbs": c.rpmbs,
        "edstt": c.edstt,
        "dsto": c.dsto,
        "fwug": c.fwug,
        "kas": c.kas,
        "hctma": c.hctma,
        "mntmt": c.mntmt,
        "mxtmt": c.mxtmt,
        "sanicap": c.sanicap,
        "hmminds": c.hmminds,
        "hmmaxd": c.hmmaxd,
        "nsetidmax": c.nsetidmax,
        "endgidmax": c.endgidmax,
        "anatt": c.anatt,
        "anacap": c.anacap,
        "anagrpmax": c.anagrpmax,
        "nanagrpid": c.nanagrpid,
        "pels": c.pels,
        "domainid": c.domainid,
        "megcap": str(c.megcap),
        "sqes": c.sqes,
        "cqes": c.cqes,
        "maxcmd": c.maxcmd,
        "nn": c.nn,
        "oncs": c.oncs,
        "fuses": c.fuses,
        "fna": c.fna,
        "vwc": c.vwc,
        "awun": c.awun,
        "awupf": c.awupf,
        "icsvscc": c.icsvscc,
        "nwpc": c.nwpc,
        "acwu": c.acwu,
        "ocfs": c.ocfs,
        "sgls": c.sgls,
        "mnan": c.mnan,
        "maxdna": str(c.maxdna),
        "maxcna": c.maxcna,
    }
    subnqn = _cstr(_raw(c, "subnqn"))
    if subnqn:
        out["subnqn"] = subnqn
    out.update(
        ioccsz=c.ioccsz,
        iorcsz=c.iorcsz,
        icdoff=c.icdoff,
        fcatt=c.fcatt,
        msdbd=c.msdbd,
        ofcs=c.ofcs,
    )
    psds = []
    for i in range(min(c.npss, 31) + 1):
        p = c.psd[i]
        raw = bytes(p)
        psds.append(
            {
                "max_power": p.mp,
                "flags": p.flags,
                "entry_lat": s32(p.enlat),
                "exit_lat": s32(p.exlat),
                "read_tput": raw[12],
                "read_lat": raw[13],
                "write_tput": raw[14],
                "write_lat": raw[15],
                "idle_power": p.idlp,
                "idle_scale": p.ips,
                "active_power": p.actp,
                "active_power_work": p.apw,
                "active_scale": p.aps,
            }
        )
    out["psds"] = psds
    return _signed32(IdentifyController, out)


# -- Identify Namespace ------------------------------------------------------------


def _bits(lines: list[str], rows: Iterable[tuple[str, int, str]]) -> None:
    """``-H`` decode lines: ``  [hi:lo] : value\\tmeaning``, then a blank line."""
    for span, value, text in rows:
        lines.append(f"  [{span}] : {hx(value)}\t{text}")
    lines.append("")


def _ns_human(n: IdentifyNamespace, name: str) -> list[str]:
    """The ``-H`` decode block nvme-cli prints under field ``name`` (or nothing)."""

    def sup(v: int) -> str:
        return "Supported" if v else "Not Supported"

    def bit(f: int, b: int) -> int:
        return (f >> b) & 1

    def rsvd(f: int, lsb: int) -> list[tuple[str, int, str]]:
        # Reserved high bits are printed only when set.
        v = f >> lsb
        return [(f"7:{lsb}", v, "Reserved")] if v else []

    lines: list[str] = []
    if name == "nsfeat":
        f = n.nsfeat
        _bits(lines, rsvd(f, 5) + [
            ("4:4", bit(f, 4), f"NPWG, NPWA, NPDG, NPDA, and NOWS are {sup(bit(f, 4))}"),
            ("3:3", bit(f, 3), "NGUID and EUI64 fields if non-zero, " + ("Never Reused" if bit(f, 3) else "Reused")),
            ("2:2", bit(f, 2), f"Deallocated or Unwritten Logical Block error {sup(bit(f, 2))}"),
            ("1:1", bit(f, 1), "Namespace uses " + ("NAWUN, NAWUPF, and NACWU" if bit(f, 1) else "AWUN, AWUPF, and ACWU")),
            ("0:0", bit(f, 0), f"Thin Provisioning {sup(bit(f, 0))}"),
        ])
    elif name == "flbas":
        f = n.flbas
        _bits(lines, rsvd(f, 7) + [
            ("6:5", (f >> 5) & 3, "Most significant 2 bits of Current LBA Format Selected"),
            ("4:4", bit(f, 4), "Metadata Transferred "
             + ("at End of Data LBA" if bit(f, 4) else "in Separate Contiguous Buffer")),
            ("3:0", f & 0xF, "Least significant 4 bits of Current LBA Format Selected"),
        ])
    elif name == "mc":
        f = n.mc
        _bits(lines, rsvd(f, 2) + [
            ("1:1", bit(f, 1), f"Metadata Pointer {sup(bit(f, 1))}"),
            ("0:0", bit(f, 0), f"Metadata as Part of Extended Data LBA {sup(bit(f, 0))}"),
        ])
    elif name == "dpc":
        f = n.dpc
        _bits(lines, rsvd(f, 5) + [
            ("4:4", bit(f, 4), f"Protection Information Transferred as Last 8 Bytes of Metadata {sup(bit(f, 4))}"),
            ("3:3", bit(f, 3), f"Protection Information Transferred as First 8 Bytes of Metadata {sup(bit(f, 3))}"),
            ("2:2", bit(f, 2), f"Protection Information Type 3 {sup(bit(f, 2))}"),
            ("1:1", bit(f, 1), f"Protection Information Type 2 {sup(bit(f, 1))}"),
            ("0:0", bit(f, 0), f"Protection Information Type 1 {sup(bit(f, 0))}"),
        ])
    elif name == "dps":
        f = n.dps
        pit = f & 7
        _bits(lines, rsvd(f, 4) + [
            ("3:3", bit(f, 3), "Protection Information is Transferred as "
             + ("First" if bit(f, 3) else "Last") + " 8 Bytes of Metadata"),
            ("2:0", pit, "Protection Information Disabled" if pit == 0
             else f"Protection Information Type {pit} Enabled" if pit <= 3
             else "Protection Information Reserved Enabled"),
        ])
    elif name == "nmic":
        f = n.nmic
        _bits(lines, rsvd(f, 1) + [
            ("0:0", bit(f, 0), "Namespace Multipath " + ("Capable" if bit(f, 0) else "Not Capable")),
        ])
    elif name == "rescap":
        f = n.rescap
        _bits(lines, [
            ("7:7", bit(f, 7), "Ignore Existing Key - Used as defined in revision "
             + ("1.3 or later" if bit(f, 7) else "1.2.1 or earlier")),
            ("6:6", bit(f, 6), f"Exclusive Access - All Registrants {sup(bit(f, 6))}"),
            ("5:5", bit(f, 5), f"Write Exclusive - All Registrants {sup(bit(f, 5))}"),
            ("4:4", bit(f, 4), f"Exclusive Access - Registrants Only {sup(bit(f, 4))}"),
            ("3:3", bit(f, 3), f"Write Exclusive - Registrants Only {sup(bit(f, 3))}"),
            ("2:2", bit(f, 2), f"Exclusive Access {sup(bit(f, 2))}"),
            ("1:1", bit(f, 1), f"Write Exclusive {sup(bit(f, 1))}"),
            ("0:0", bit(f, 0), f"Persist Through Power Loss {sup(bit(f, 0))}"),
        ])
    elif name == "fpi":
        f = n.fpi
        _bits(lines, [
            ("7:7", bit(f, 7), f"Format Progress Indicator {sup(bit(f, 7))}"),
            ("6:0", f & 0x7F, f"Format Progress Indicator (Remaining {f & 0x7F}%)"),
        ])
    elif name == "dlfeat":
        f = n.dlfeat
        read = f & 7
        read_text = {0: "Not Reported", 1: "0x00", 2: "0xFF"}.get(read, "Reserved Value")
        _bits(lines, rsvd(f, 5) + [
            ("4:4", bit(f, 4), "Guard Field of Deallocated Logical Blocks is set to "
             + ("CRC of The Value Read" if bit(f, 4) else "0xFFFF")),
            ("3:3", bit(f, 3), f"Deallocate Bit in the Write Zeroes Command is {sup(bit(f, 3))}"),
            ("2:0", read, f"Bytes Read From a Deallocated Logical Block and its Metadata are {read_text}"),
        ])
    return lines


def _lbafs(ns: IdentifyNamespace, with_unique: bool = True) -> list[tuple[int, int, int]]:
    """(ms, lbads, rp byte) of the formats nvme-cli 2.3 lists: NLBAF + NULBAF + 1
    in text, NLBAF + 1 in JSON (``with_unique=False``).

    Like nvme-cli, entries past the 64 of the LBA format list are read from the
    bytes that follow it, and RP is the whole byte 3.
    """
    data = bytes(ns)
    out = []
    for i in range(ns.nlbaf + (ns.nulbaf if with_unique else 0) + 1):
        off = 128 + 4 * i
        if off + 4 > len(data):
            break
        out.append((int.from_bytes(data[off : off + 2], "little"), data[off + 2], data[off + 3]))
    return out


def _lbaf_in_use(ns: IdentifyNamespace) -> int:
    """FLBAS bits 6:5 and 3:0 together: the index of the format in use."""
    return ((ns.flbas >> 5) & 3) << 4 | (ns.flbas & 0xF)


_RP_NAMES = {0: "Best", 1: "Better", 2: "Good", 3: "Degraded"}


def id_ns_text(ns: IdentifyNamespace, nsid: int, human: bool = False, vendor: bool = False) -> str:
    """``nvme id-ns`` normal (and ``-H``) output for namespace ``nsid``;
    ``vendor`` (``-v``) adds the hex dump nvme-cli 2.3 calls vendor specific:
    bytes 392-4095 (its structure has LBSTM at 384)."""
    n = ns
    d = str
    lines = [f"NVME Identify Namespace {nsid}:"]

    def row(name: str, value: str, label: str | None = None) -> None:
        lines.append(label if label is not None else f"{name:<8}: {value}")
        if human:
            lines.extend(_ns_human(n, name))

    row("nsze", hx(n.nsze))
    row("ncap", hx(n.ncap))
    row("nuse", hx(n.nuse))
    row("nsfeat", hx(n.nsfeat))
    row("nlbaf", d(n.nlbaf))
    row("flbas", hx(n.flbas))
    row("mc", hx(n.mc))
    row("dpc", hx(n.dpc))
    row("dps", hx(n.dps))
    row("nmic", hx(n.nmic))
    row("rescap", hx(n.rescap))
    row("fpi", hx(n.fpi))
    row("dlfeat", d(n.dlfeat))
    for name in ("nawun", "nawupf", "nacwu", "nabsn", "nabo", "nabspf", "noiob"):
        row(name, d(getattr(n, name)))
    row("nvmcap", d(n.nvmcap))
    if n.nsfeat & 0x10:
        for name in ("npwg", "npwa", "npdg", "npda", "nows"):
            row(name, d(getattr(n, name)))
    row("mssrl", d(n.mssrl))
    row("mcl", d(n.mcl))
    row("msrc", d(n.msrc))
    row("nulbaf", d(n.nulbaf))
    lines.append(f"anagrpid: {n.anagrpid}")
    lines.append(f"nsattr\t: {n.nsattr}")
    lines.append(f"nvmsetid: {n.nvmsetid}")
    lines.append(f"endgid  : {n.endgid}")
    lines.append(f"nguid   : {_raw(n, 'nguid').hex()}")
    lines.append(f"eui64   : {_raw(n, 'eui64').hex()}")
    in_use = _lbaf_in_use(n)
    for i, (ms, lbads, rp) in enumerate(_lbafs(n)):
        mark = "(in use)" if i == in_use else ""
        if human:
            lines.append(
                f"LBA Format {i:2d} : Metadata Size: {ms:<3d} bytes - "
                f"Data Size: {s32(1 << (lbads & 31)):<2d} bytes - Relative Performance: "
                f"{hx(rp)} {_RP_NAMES.get(rp, 'Best')} {mark}"
            )
        else:
            lines.append(f"lbaf {i:2d} : ms:{ms:<3d} lbads:{lbads:<2d} rp:{hx(rp)} {mark}")
    text = "\n".join(lines) + "\n"
    if vendor:
        text += "vs[]:\n" + hexdump(bytes(n)[392:])
    return text


def id_ns_json(ns: IdentifyNamespace) -> dict[str, Any]:
    """``nvme id-ns -o json``."""
    n = ns
    out: dict[str, Any] = {}
    for name in ("nsze", "ncap", "nuse", "nsfeat", "nlbaf", "flbas", "mc", "dpc", "dps",
                 "nmic", "rescap", "fpi", "dlfeat", "nawun", "nawupf", "nacwu", "nabsn",
                 "nabo", "nabspf", "noiob"):
        out[name] = getattr(n, name)
    out["nvmcap"] = str(n.nvmcap)
    out["nsattr"] = n.nsattr
    out["nvmsetid"] = n.nvmsetid
    if n.nsfeat & 0x10:
        for name in ("npwg", "npwa", "npdg", "npda", "nows"):
            out[name] = getattr(n, name)
    for name in ("mssrl", "mcl", "msrc", "nulbaf", "anagrpid", "endgid"):
        out[name] = getattr(n, name)
    out["eui64"] = _raw(n, "eui64").hex()
    out["nguid"] = _raw(n, "nguid").hex()
    _signed32(IdentifyNamespace, out)
    out["lbafs"] = [{"ms": ms, "ds": lbads, "rp": rp} for ms, lbads, rp in _lbafs(n, False)]
    return out


# -- SMART / Health log ----------------------------------------------------------


def smart_log_text(log: SmartLog, device: str, nsid: int = 0xFFFFFFFF, human: bool = False) -> str:
    """``nvme smart-log`` output; ``device`` is the kernel name (``nvme0``)."""
    s = log
    du_read = s.data_units_read
    du_written = s.data_units_written
    lines = [
        f"Smart Log for NVME device:{device} namespace-id:{nsid:x}",
        f"critical_warning\t\t\t: {hx(s.critical_warning)}",
    ]
    if human:
        cw = s.critical_warning
        for bit, label in enumerate((
            "Available Spare[0]",
            "Temp. Threshold[1]",
            "NVM subsystem Reliability[2]",
            "Read-only[3]",
            "Volatile mem. backup failed[4]",
            "Persistent Mem. RO[5]",
        )):
            lines.append(f"      {label:<31}: {(cw >> bit) & 1}")
    lines += [
        f"temperature\t\t\t\t: {_temp(s.temperature)}",
        f"available_spare\t\t\t\t: {s.avail_spare}%",
        f"available_spare_threshold\t\t: {s.spare_thresh}%",
        f"percentage_used\t\t\t\t: {s.percent_used}%",
        f"endurance group critical warning summary: {hx(s.endu_grp_crit_warn_sumry)}",
        f"Data Units Read\t\t\t\t: {du_read} ({_si(du_read * 1000 * 512)})",
        f"Data Units Written\t\t\t: {du_written} ({_si(du_written * 1000 * 512)})",
        f"host_read_commands\t\t\t: {s.host_reads}",
        f"host_write_commands\t\t\t: {s.host_writes}",
        f"controller_busy_time\t\t\t: {s.ctrl_busy_time}",
        f"power_cycles\t\t\t\t: {s.power_cycles}",
        f"power_on_hours\t\t\t\t: {s.power_on_hours}",
        f"unsafe_shutdowns\t\t\t: {s.unsafe_shutdowns}",
        f"media_errors\t\t\t\t: {s.media_errors}",
        f"num_err_log_entries\t\t\t: {s.num_err_log_entries}",
        f"Warning Temperature Time\t\t: {s.warning_temp_time}",
        f"Critical Composite Temperature Time\t: {s.critical_comp_time}",
    ]
    for i, t in enumerate(s.temp_sensor):
        if t:
            lines.append(f"{'Temperature Sensor %d' % (i + 1):<31}: {_temp(t)}")
    lines += [
        f"Thermal Management T1 Trans Count\t: {s.thm_temp1_trans_count}",
        f"Thermal Management T2 Trans Count\t: {s.thm_temp2_trans_count}",
        f"Thermal Management T1 Total Time\t: {s.thm_temp1_total_time}",
        f"Thermal Management T2 Total Time\t: {s.thm_temp2_total_time}",
    ]
    return "\n".join(lines) + "\n"


def smart_log_json(log: SmartLog, human: bool = False) -> dict[str, Any]:
    """``nvme smart-log -o json``: 128-bit counters as decimal strings;
    ``human`` (``-H``) splits the critical warning into its bits."""
    s = log
    cw = s.critical_warning
    warning: Any = cw
    if human:
        warning = {"value": cw, "available_spare": cw & 1, "temp_threshold": cw >> 1 & 1,
                   "reliability_degraded": cw >> 2 & 1, "ro": cw >> 3 & 1, "vmbu_failed": cw >> 4 & 1,
                   "pmr_ro": cw >> 5 & 1}
    out: dict[str, Any] = {
        "critical_warning": warning,
        "temperature": s.temperature,
        "avail_spare": s.avail_spare,
        "spare_thresh": s.spare_thresh,
        "percent_used": s.percent_used,
        "endurance_grp_critical_warning_summary": s.endu_grp_crit_warn_sumry,
        "data_units_read": str(s.data_units_read),
        "data_units_written": str(s.data_units_written),
        "host_read_commands": str(s.host_reads),
        "host_write_commands": str(s.host_writes),
        "controller_busy_time": str(s.ctrl_busy_time),
        "power_cycles": str(s.power_cycles),
        "power_on_hours": str(s.power_on_hours),
        "unsafe_shutdowns": str(s.unsafe_shutdowns),
        "media_errors": str(s.media_errors),
        "num_err_log_entries": str(s.num_err_log_entries),
        "warning_temp_time": s.warning_temp_time,
        "critical_comp_time": s.critical_comp_time,
    }
    for i, t in enumerate(s.temp_sensor):
        if t:
            out[f"temperature_sensor_{i + 1}"] = t
    out.update(
        thm_temp1_trans_count=s.thm_temp1_trans_count,
        thm_temp2_trans_count=s.thm_temp2_trans_count,
        thm_temp1_total_time=s.thm_temp1_total_time,
        thm_temp2_total_time=s.thm_temp2_total_time,
    )
    return _signed32(SmartLog, out)


# -- Error Information log -------------------------------------------------------------


def error_log_json(entries: Sequence[ErrorInformationEntry]) -> dict[str, Any]:
    """``nvme error-log -o json``."""
    errors = []
    for e in entries:
        errors.append(
            {
                "error_count": e.error_count,
                "sqid": e.sqid,
                "cmdid": e.cmdid,
                "status_field": e.status_field >> 1,
                "phase_tag": e.status_field & 1,
                "parm_error_location": e.parm_error_location,
                "lba": e.lba,
                "nsid": s32(e.nsid),  # json_object_add_value_int: FFFFFFFFh prints -1
                "vs": e.vs,
                "trtype": e.trtype,
                "cs": e.cs,
                "trtype_spec_info": e.trtype_spec_info,
            }
        )
    return {"errors": errors}


_TRTYPE_TEXT = {
    0: "The transport type is not indicated or the error is not transport related.",
    1: "RDMA Transport error.",
    2: "Fibre Channel Transport error.",
    3: "TCP Transport error.",
    254: "Intra-host Transport error.",
}


def error_log_text(entries: Sequence[ErrorInformationEntry], device: str,
                   fabrics: bool = False) -> str:
    """``nvme error-log`` output; ``fabrics`` picks libnvme's status names for
    command specific codes from 80h (as ``nvme_status_to_string`` does)."""
    lines = [f"Error Log Entries for device:{device} entries:{len(entries)}", "................."]
    for i, e in enumerate(entries):
        status = e.status_field >> 1
        text = f"({nvme_cli_string(status, fabrics)})"
        lines += [
            f" Entry[{i:2d}]   ",
            ".................",
            f"error_count\t: {e.error_count}",
            f"sqid\t\t: {e.sqid}",
            f"cmdid\t\t: {hx(e.cmdid)}",
            f"status_field\t: {hx(status)}{text}",
            f"phase_tag\t: {hx(e.status_field & 1)}",
            f"parm_err_loc\t: {hx(e.parm_error_location)}",
            f"lba\t\t: {hx(e.lba)}",
            f"nsid\t\t: {hx(e.nsid)}",
            f"vs\t\t: {e.vs}",
            f"trtype\t\t: {_TRTYPE_TEXT.get(e.trtype, 'Reserved')}",
            f"cs\t\t: {hx(e.cs)}",
            f"trtype_spec_info: {hx(e.trtype_spec_info)}",
            ".................",
        ]
    return "\n".join(lines) + "\n"


# -- Firmware Slot Information log ---------------------------------------------------------


def _fw_slots(log: FirmwareSlotLog) -> list[tuple[int, int, str]]:
    """(slot, the 8 bytes as a little-endian u64, printable text) of non-empty slots."""
    out = []
    for slot in range(1, 8):
        raw = _raw(log, f"frs{slot}")
        value = int.from_bytes(raw, "little")
        if value:
            text = "".join(chr(b) if 0x21 <= b <= 0x7E else "." for b in raw)
            out.append((slot, value, text))
    return out


def fw_log_text(log: FirmwareSlotLog, device: str) -> str:
    """``nvme fw-log`` output."""
    lines = [f"Firmware Log for device:{device}", f"afi  : {hx(log.afi)}"]
    for slot, value, text in _fw_slots(log):
        lines.append(f"frs{slot} : {value:#018x} ({text})")
    return "\n".join(lines) + "\n"


def fw_log_json(log: FirmwareSlotLog, device: str) -> dict[str, Any]:
    """``nvme fw-log -o json``: one object named after the device."""
    inner: dict[str, Any] = {"Active Firmware Slot (afi)": log.afi}
    for slot, value, text in _fw_slots(log):
        inner[f"Firmware Rev Slot {slot}"] = f"{value} ({text})"
    return {device: inner}


# -- hex dumps ------------------------------------------------------------------------


def hexdump(data: bytes | bytearray | memoryview, width: int = 16) -> str:
    """nvme-cli's ``d(buf, len, 16, 1)``: a column header, then ``offset:``
    lines of 16 bytes with their printable characters in quotes.

    The ASCII column of a short last line is nvme-cli's too: the C buffer
    keeps the character left at the next position by the line before (on the
    first line, whatever the stack held: a blank, or nothing at position 15,
    as nvme-cli 2.3 prints here)."""
    data = bytes(data)
    out = ["     " + "".join(f"{i:3x}" for i in range(16))]
    ascii_buf = [" "] * (width - 1) + [""]
    for start in range(0, len(data), width):
        chunk = data[start : start + width]
        for i, byte in enumerate(chunk):
            ascii_buf[i] = chr(byte) if 0x21 <= byte <= 0x7E else "."
        hexes = "".join(f" {byte:02x}" for byte in chunk)
        if len(chunk) == width:
            out.append(f"{start:04x}:{hexes} \"{''.join(ascii_buf)}\"")
        else:
            missing = width - len(chunk)
            pad = " " * (2 * missing + missing)
            shown = "".join(ascii_buf[: len(chunk) + 1])
            out.append(f"{start:04x}:{hexes} {pad} \"{shown}\"")
    return "\n".join(out) + "\n"


def get_log_text(data: bytes, device: str, lid: int, nsid: int) -> str:
    """``nvme get-log`` normal output: a heading and the hex dump."""
    return f"Device:{device} log-id:{lid} namespace-id:{hx(nsid)}\n" + hexdump(data)


# -- Namespace Identification Descriptors ----------------------------------------------


def _ns_descs(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(offset, NIDT, NIDL, NID) of each descriptor the way nvme-cli walks the
    list: up to a zero NIDL, unknown types skipped by their length."""
    out = []
    pos = 0
    while pos + 4 <= len(data):
        nidt, nidl = data[pos], data[pos + 1]
        if nidl == 0:
            break
        out.append((pos, nidt, nidl, data[pos + 4 : pos + 4 + nidl]))
        pos += 4 + nidl
    return out


def ns_descs_text(data: bytes, nsid: int) -> str:
    """``nvme ns-descs`` normal output."""
    lines = [f"NVME Namespace Identification Descriptors NS {nsid}:"]
    for _, nidt, nidl, nid in _ns_descs(bytes(data)):
        if nidt == 1:
            lines.append(f"eui64   : {nid[:8].hex()}")
        elif nidt == 2:
            lines.append(f"nguid   : {nid[:16].hex()}")
        elif nidt == 3:
            lines.append(f"uuid    : {_uuid(nid[:16].ljust(16, bytes(1)))}")
        elif nidt == 4:
            lines.append(f"csi     : {nid[0]}")
        # nvme-cli 2.3 passes over other types silently.
    return "\n".join(lines) + "\n"


def ns_descs_json(data: bytes) -> dict[str, Any]:
    """``nvme ns-descs -o json``."""
    descs = []
    for loc, nidt, nidl, nid in _ns_descs(bytes(data)):
        entry: dict[str, Any] = {"loc": loc, "nidt": nidt, "nidl": nidl}
        if nidt == 1:
            entry.update(type="eui64", eui64=nid[:8].hex())
        elif nidt == 2:
            entry.update(type="nguid", nguid=nid[:16].hex())
        elif nidt == 3:
            entry.update(type="uuid", uuid=_uuid(nid[:16].ljust(16, bytes(1))))
        elif nidt == 4:
            entry.update(type="csi", csi=str(nid[0]))
        else:
            continue
        descs.append(entry)
    return {"ns-descs": descs}


# -- Commands Supported and Effects --------------------------------------------------------

ADMIN_COMMAND_NAMES = {
    0x00: "Delete I/O Submission Queue", 0x01: "Create I/O Submission Queue", 0x02: "Get Log Page",
    0x04: "Delete I/O Completion Queue", 0x05: "Create I/O Completion Queue", 0x06: "Identify", 0x08: "Abort",
    0x09: "Set Features", 0x0A: "Get Features", 0x0C: "Asynchronous Event Request",
    0x0D: "Namespace Management", 0x10: "Firmware Commit", 0x11: "Firmware Image Download",
    0x14: "Device Self-test", 0x15: "Namespace Attachment", 0x18: "Keep Alive", 0x19: "Directive Send",
    0x1A: "Directive Receive", 0x1C: "Virtualization Management", 0x1D: "NVMe-MI Send",
    0x1E: "NVMe-MI Receive", 0x7C: "Doorbell Buffer Config", 0x80: "Format NVM", 0x81: "Security Send",
    0x82: "Security Receive", 0x84: "Sanitize", 0x86: "Get LBA Status",
}
IO_COMMAND_NAMES = {
    0x00: "Flush", 0x01: "Write", 0x02: "Read", 0x04: "Write Uncorrectable", 0x05: "Compare",
    0x08: "Write Zeroes", 0x09: "Dataset Management", 0x0C: "Verify", 0x0D: "Reservation Register",
    0x0E: "Reservation Report", 0x11: "Reservation Acquire", 0x15: "Reservation Release", 0x19: "Copy",
    0x79: "Zone Management Send", 0x7A: "Zone Management Receive", 0x7D: "Zone Append",
}


def command_name(admin: bool, opcode: int) -> str:
    """nvme-cli's ``nvme_cmd_to_string``: its name for an opcode, else "Unknown"."""
    return (ADMIN_COMMAND_NAMES if admin else IO_COMMAND_NAMES).get(opcode, "Unknown")


_CSE_TEXT = {0: "No command restriction", 1: "No other command for same namespace",
             2: "No other command for any namespace"}
_CSI_TITLE = {0: "NVM", 2: "ZNS"}


def _effects_human(value: int) -> str:
    def pm(bit: int) -> str:
        return "+" if value >> bit & 1 else "-"

    cse = (value >> 16) & 3  # libnvme 1.3's CSE mask is two bits wide
    return (f"  CSUPP{pm(0)}  LBCC{pm(1)}  NCC{pm(2)}  NIC{pm(3)}  CCC{pm(4)}  USS{pm(19)}"
            f"  {_CSE_TEXT.get(cse, 'Reserved CSE')}")


def effects_log_text(pages: Sequence[tuple[int, Any]], human: bool = False) -> str:
    """``nvme effects-log`` normal (and ``-H``) output for (CSI, log page)
    pairs, in the order nvme-cli lists them."""
    out: list[str] = []
    for csi, log in pages:
        out.append(f"{_CSI_TITLE.get(csi, 'Unknown')} Command Set Log Page")
        out.append("-" * 80)
        # nvme-cli 2.3 never lists admin opcodes BFh and FFh (its loops stop one short).
        sections = (
            ("Admin Commands", "ACS", log.acs, range(0x00, 0xBF), True),
            ("Vendor Specific Admin Commands", "ACS", log.acs, range(0xC0, 0xFF), True),
            ("I/O Commands", "IOCS", log.iocs, range(0x00, 0x80), False),
            ("Vendor Specific I/O Commands", "IOCS", log.iocs, range(0x80, 0x100), False),
        )
        for title, prefix, entries, opcodes, admin in sections:
            rows = []
            for opcode in opcodes:
                value = entries[opcode].value
                if not value & 1:
                    continue
                label = f"{prefix}{opcode}"
                line = f"{label:<9}[{command_name(admin, opcode):<32}] {value:08x}"
                if human:
                    line += _effects_human(value)
                rows.append(line)
            if rows:
                out.append(title)
                out += rows
                out.append("")
    return "".join(line + "\n" for line in out)


def effects_log_json(pages: Sequence[tuple[int, Any]]) -> list[dict[str, Any]]:
    """``nvme effects-log -o json``: one object per command set."""
    out = []
    for csi, log in pages:
        acs = {f"ACS_{op} ({command_name(True, op)})": s32(log.acs[op].value)
               for op in range(256) if log.acs[op].value & 1}
        iocs = {f"IOCS_{op} ({command_name(False, op)})": s32(log.iocs[op].value)
                for op in range(256) if log.iocs[op].value & 1}
        out.append({"command_set_identifier": csi, "admin_cmd_set": acs, "io_cmd_set": iocs})
    return out


# -- Changed Namespace List ------------------------------------------------------------------------


def changed_ns_list_text(log: ChangedNamespaceList) -> str:
    """``nvme changed-ns-list-log`` normal output (no heading in nvme-cli 2.3)."""
    if log.overflow:
        return f"more than {ChangedNamespaceList.MAX_ENTRIES} ns changed\n"
    return "".join(f"[{i:4d}]:{nsid:#x}\n" for i, nsid in enumerate(log.nsids()))


def changed_ns_list_json(log: ChangedNamespaceList, device: str) -> dict[str, Any] | None:
    """``nvme changed-ns-list-log -o json``; None when the list overflowed
    (nvme-cli 2.3 prints nothing then).  Entries are numbered from 1 here,
    from 0 in the text."""
    if log.overflow:
        return None
    return {"Changed Namespace List Log": device,
            device: {f"[{i + 1:4d}]": f"{nsid:#x}" for i, nsid in enumerate(log.nsids())}}


# -- Device Self-test ----------------------------------------------------------------------------------

_DST_RESULT = {
    0x0: "Operation completed without error",
    0x1: "Operation was aborted by a Device Self-test command",
    0x2: "Operation was aborted by a Controller Level Reset",
    0x3: "Operation was aborted due to a removal of a namespace from the namespace inventory",
    0x4: "Operation was aborted due to the processing of a Format NVM command",
    0x5: "A fatal error or unknown test error occurred while the controller was executing the device "
         "self-test operation and the operation did not complete",
    0x6: "Operation completed with a segment that failed and the segment that failed is not known",
    0x7: "Operation completed with one or more failed segments and the first segment that failed is "
         "indicated in the SegmentNumber field",
    0x8: "Operation was aborted for unknown reason",
    0x9: "Operation was aborted due to a sanitize operation",
    0xA: "Reserved",
}
_DST_CODE = {0x1: "Short device self-test operation", 0x2: "Extended device self-test operation",
             0xE: "Vendor specific"}


def self_test_log_text(log: DeviceSelfTestLog, entries: int, device: str, verbose: bool = False) -> str:
    """``nvme self-test-log`` normal (and ``-v``) output, ``entries`` results."""
    raw = bytes(log)
    lines = [f"Device Self Test Log for NVME device:{device}",
             f"Current operation  : {hx(raw[0])}",
             f"Current Completion : {raw[1]}%"]
    for i in range(min(entries, DeviceSelfTestLog.MAX_RESULTS)):
        r = log.result[i]
        rr = bytes(r)
        result = rr[0] & 0xF
        lines.append(f"Self Test Result[{i}]:")
        text = f"  Operation Result             : {hx(result)}"
        if verbose:
            text += " " + _DST_RESULT.get(result, "Entry not used (does not contain a result)")
        lines.append(text)
        if result == 0xF:
            continue
        code = rr[0] >> 4
        text = f"  Self Test Code               : {code:x}"
        if verbose:
            text += " " + _DST_CODE.get(code, "Reserved")
        lines.append(text)
        if result == 0x7:
            lines.append(f"  Segment Number               : {hx(rr[1])}")
        vdi = rr[2]
        lines.append(f"  Valid Diagnostic Information : {hx(vdi)}")
        lines.append(f"  Power on hours (POH)         : {hx(r.poh)}")
        if vdi & 1:
            lines.append(f"  Namespace Identifier         : {hx(r.nsid)}")
        if vdi & 2:
            lines.append(f"  Failing LBA                  : {hx(r.flba)}")
        if vdi & 4:
            lines.append(f"  Status Code Type             : {hx(rr[24])}")
        if vdi & 8:
            text = f"  Status Code                  : {hx(rr[25])}"
            if verbose:
                text += " " + nvme_cli_string(((rr[24] & 7) << 8) | rr[25])
            lines.append(text)
        lines.append(f"  Vendor Specific              : {hx(rr[26])} {hx(rr[27])}")
    return "\n".join(lines) + "\n"


def self_test_log_json(log: DeviceSelfTestLog, entries: int) -> dict[str, Any]:
    """``nvme self-test-log -o json``."""
    raw = bytes(log)
    reports = []
    for i in range(min(entries, DeviceSelfTestLog.MAX_RESULTS)):
        r = log.result[i]
        rr = bytes(r)
        entry: dict[str, Any] = {"Self test result": rr[0] & 0xF}
        if rr[0] & 0xF != 0xF:
            vdi = rr[2]
            entry["Self test code"] = rr[0] >> 4
            entry["Segment number"] = rr[1]
            entry["Valid Diagnostic Information"] = vdi
            entry["Power on hours"] = r.poh
            if vdi & 1:
                entry["Namespace Identifier"] = s32(r.nsid)
            if vdi & 2:
                entry["Failing LBA"] = r.flba
            if vdi & 4:
                entry["Status Code Type"] = rr[24]
            if vdi & 8:
                entry["Status Code"] = rr[25]
            entry["Vendor Specific"] = rr[27] << 8 | rr[26]
        reports.append(entry)
    return {"Current Device Self-Test Operation": raw[0], "Current Device Self-Test Completion": raw[1],
            "List of Valid Reports": reports}


# -- Sanitize Status ---------------------------------------------------------------------------------------

_SANITIZE_STATUS = {
    0: "NVM Subsystem has never been sanitized.",
    1: "Most Recent Sanitize Command Completed Successfully.",
    2: "Sanitize in Progress.",
    3: "Most Recent Sanitize Command Failed.",
    4: "Most Recent Sanitize Command (No-Deallocate After Sanitize) Completed Successfully.",
}


def sanitize_log_text(log: SanitizeStatusLog, human: bool = False) -> str:
    """``nvme sanitize-log`` normal (and ``-H``) output."""
    sstat = log.sstat
    status = sstat & 7
    text = f"Sanitize Progress                      (SPROG) :  {log.sprog}"
    if human and status == 2:
        text += f"\t({log.sprog * 100 / 65536:f}%)"
    lines = [text, f"Sanitize Status                        (SSTAT) :  {hx(status)}"]
    if human:
        lines.append(f"\t[2:0]\t{_SANITIZE_STATUS.get(status, 'Unknown')}")
        lines.append(f"\t[7:3]\tNumber of completed passes if most recent operation was overwrite:\t"
                     f"{(sstat >> 3) & 0x1F}")
        if sstat >> 8 & 1:
            lines.append("\t  [8]\tGlobal Data Erased set: no NS LB in the NVM subsystem has been written to and no "
                         "PMR in the NVM subsystem has been enabled")
        else:
            lines.append("\t  [8]\tGlobal Data Erased cleared: a NS LB in the NVM subsystem has been written to or a "
                         "PMR in the NVM subsystem has been enabled")
    lines.append(f"Sanitize Command Dword 10 Information (SCDW10) :  {hx(log.scdw10)}")
    for label, value in (
        ("Estimated Time For Overwrite                   ", log.eto),
        ("Estimated Time For Block Erase                 ", log.etbe),
        ("Estimated Time For Crypto Erase                ", log.etce),
        ("Estimated Time For Overwrite (No-Deallocate)   ", log.etond),
        ("Estimated Time For Block Erase (No-Deallocate) ", log.etbend),
        ("Estimated Time For Crypto Erase (No-Deallocate)", log.etcend),
    ):
        suffix = " (No time period reported)" if value == 0xFFFFFFFF else ""
        lines.append(f"{label}:  {value}{suffix}")
    return "\n".join(lines) + "\n"


def sanitize_log_json(log: SanitizeStatusLog, device: str) -> dict[str, Any]:
    """``nvme sanitize-log -o json`` (32-bit values signed, as nvme-cli 2.3)."""
    sstat = log.sstat
    status = sstat & 7
    return {device: {
        "sprog": log.sprog,
        "sstat": {
            "global_erased": (sstat >> 8) & 1,
            "no_cmplted_passes": (sstat >> 3) & 0x1F,
            "status": f"({status}) {_SANITIZE_STATUS.get(status, 'Unknown')}",
        },
        "cdw10_info": s32(log.scdw10),
        "time_over_write": s32(log.eto),
        "time_block_erase": s32(log.etbe),
        "time_crypto_erase": s32(log.etce),
        "time_over_write_no_dealloc": s32(log.etond),
        "time_block_erase_no_dealloc": s32(log.etbend),
        "time_crypto_erase_no_dealloc": s32(log.etcend),
    }}


# -- Controller registers (show-regs) --------------------------------------------------------------------

#: The bytes ``show-regs -o binary`` writes: 0000h to 0E1Bh (through PMRMSCU).
REGS_SIZE = 0x0E1C
_ALL_ONES32 = 0xFFFFFFFF

_REG_LAYOUT = (  # JSON order, offsets and widths
    ("cap", 0x00, 8), ("vs", 0x08, 4), ("intms", 0x0C, 4), ("intmc", 0x10, 4), ("cc", 0x14, 4),
    ("csts", 0x1C, 4), ("nssr", 0x20, 4), ("crto", 0x68, 4), ("aqa", 0x24, 4), ("asq", 0x28, 8),
    ("acq", 0x30, 8), ("cmbloc", 0x38, 4), ("cmbsz", 0x3C, 4), ("bpinfo", 0x40, 4), ("bprsel", 0x44, 4),
    ("bpmbl", 0x48, 8), ("cmbmsc", 0x50, 8), ("cmbsts", 0x58, 4), ("pmrcap", 0xE00, 4), ("pmrctl", 0xE04, 4),
    ("pmrsts", 0xE08, 4), ("pmrebs", 0xE0C, 4), ("pmrswtp", 0xE10, 4), ("pmrmscl", 0xE14, 4),
    ("pmrmscu", 0xE18, 4),
)


def _regs(data: bytes) -> dict[str, int]:
    return {name: int.from_bytes(data[off : off + size], "little") for name, off, size in _REG_LAYOUT}


def show_regs_json(data: bytes) -> dict[str, Any]:
    """``nvme show-regs -o json`` for a register file image (absent
    registers are all ones); 64-bit registers unsigned, others signed."""
    out: dict[str, Any] = {}
    for name, value in _regs(bytes(data)).items():
        size = next(sz for n, _, sz in _REG_LAYOUT if n == name)
        out[name] = value if size == 8 else s32(value)
    return out


_SZU = ("4 KB", "64 KB", "1 MB", "16 MB", "256 MB", "4 GB", "64 GB")
_PMR_SZU = ("Bytes", "One KB", "One MB", "One GB")
_PMR_HSTS = ("Normal Operation", "Restore Error", "Read Only", "Unreliable")


def _regs_human(name: str, v: int, r: dict[str, int]) -> list[str]:
    """The ``-H`` decoding of one register, as nvme-cli 2.3 prints it."""
    def yn(bit: int, yes: str = "Yes", no: str = "No") -> str:
        return yes if v >> bit & 1 else no

    if name == "cap":
        css = (v >> 37) & 0xFF
        return [
            f"\tController Ready With Media Support (CRWMS): {yn(59, 'Supported', 'Not Supported')}",
            f"\tController Ready Independent of Media Support (CRIMS): {yn(60, 'Supported', 'Not Supported')}",
            "\tController Memory Buffer Supported (CMBS): The Controller Memory Buffer is "
            + yn(57, "Supported", "Not Supported"),
            "\tPersistent Memory Region Supported (PMRS): The Persistent Memory Region is "
            + yn(56, "Supported", "Not Supported"),
            f"\tMemory Page Size Maximum         (MPSMAX): {1 << (12 + ((v >> 52) & 0xF))} bytes",
            f"\tMemory Page Size Minimum         (MPSMIN): {1 << (12 + ((v >> 48) & 0xF))} bytes",
            f"\tBoot Partition Support              (BPS): {yn(45)}",
            "\tCommand Sets Supported              (CSS): NVM command set is "
            + ("Supported" if css & 1 else "Not Supported"),
            "\t                                           One or more I/O Command Sets are "
            + ("Supported" if css & 0x40 else "Not Supported"),
            "\t                                           "
            + ("Only Admin Command Set Supported" if css & 0x80 else "I/O Command Set is Supported"),
            f"\tNVM Subsystem Reset Supported     (NSSRS): {yn(36)}",
            f"\tDoorbell Stride                   (DSTRD): {1 << (2 + ((v >> 32) & 0xF))} bytes",
            f"\tTimeout                              (TO): {((v >> 24) & 0xFF) * 500} ms",
            "\tArbitration Mechanism Supported     (AMS): Weighted Round Robin with Urgent Priority Class is "
            + yn(17, "supported", "not supported"),
            f"\tContiguous Queues Required          (CQR): {yn(16)}",
            f"\tMaximum Queue Entries Supported    (MQES): {(v & 0xFFFF) + 1}",
            "",
        ]
    if name == "vs":
        return [f"\tNVMe specification {v >> 16}.{(v >> 8) & 0xFF}", ""]
    if name == "cc":
        shn = {0: "No notification; no effect", 1: "Normal shutdown notification",
               2: "Abrupt shutdown notification"}.get((v >> 14) & 3, "Reserved")
        ams = {0: "Round Robin", 1: "Weighted Round Robin with Urgent Priority Class",
               7: "Vendor Specific"}.get((v >> 11) & 7, "Reserved")
        css = {0x00: "NVM Command Set", 0x60: "All supported I/O Command Sets",
               0x70: "Admin Command Set only"}.get(v & 0x70, "Reserved")
        return [
            f"\tController Ready Independent of Media Enable (CRIME): {yn(24, 'Enabled', 'Disabled')}",
            f"\tI/O Completion Queue Entry Size (IOCQES): {1 << ((v >> 20) & 0xF)} bytes",
            f"\tI/O Submission Queue Entry Size (IOSQES): {1 << ((v >> 16) & 0xF)} bytes",
            f"\tShutdown Notification              (SHN): {shn}",
            f"\tArbitration Mechanism Selected     (AMS): {ams}",
            f"\tMemory Page Size                   (MPS): {1 << (12 + ((v >> 7) & 0xF))} bytes",
            f"\tI/O Command Set Selected           (CSS): {css}",
            f"\tEnable                              (EN): {yn(0)}",
            "",
        ]
    if name == "csts":
        shst = {0: "Normal operation (no shutdown has been requested)", 1: "Shutdown processing occurring",
                2: "Shutdown processing complete"}.get((v >> 2) & 3, "Reserved")
        return [
            f"\tProcessing Paused               (PP): {yn(5)}",
            f"\tNVM Subsystem Reset Occurred (NSSRO): {yn(4)}",
            f"\tShutdown Status               (SHST): {shst}",
            f"\tController Fatal Status        (CFS): {yn(1, 'True', 'False')}",
            f"\tReady                          (RDY): {yn(0)}",
            "",
        ]
    if name == "nssr":
        return [f"\tNVM Subsystem Reset Control (NSSRC): {v}", ""]
    if name == "crto":
        # nvme-cli 2.3 masks CRIMT after shifting it down: it always reads 0.
        return ["\tCRIMT                               : 0 secs",
                f"\tCRWMT                               : {(v & 0xFFFF) // 2} secs"]
    if name == "intms":
        return [f"\tInterrupt Vector Mask Set (IVMS): {v:x}", ""]
    if name == "intmc":
        return [f"\tInterrupt Vector Mask Clear (IVMC): {v:x}", ""]
    if name == "aqa":
        return [f"\tAdmin Completion Queue Size (ACQS): {((v >> 16) & 0xFFF) + 1}",
                f"\tAdmin Submission Queue Size (ASQS): {(v & 0xFFF) + 1}", ""]
    if name == "asq":
        return [f"\tAdmin Submission Queue Base (ASQB): {v:x}", ""]
    if name == "acq":
        return [f"\tAdmin Completion Queue Base (ACQB): {v:x}", ""]
    if name == "cmbloc":
        if r["cmbsz"] == 0:
            return ["\tController Memory Buffer feature is not supported", ""]
        enf = ("Enforced", "Not Enforced")
        return [
            f"\tOffset                                                        (OFST): 0x{v >> 12:x} "
            "(See cmbsz.szu for granularity)",
            f"\tCMB Queue Dword Alignment                                     (CQDA): {(v >> 8) & 1}",
            f"\tCMB Data Metadata Mixed Memory Support                      (CDMMMS): {enf[(v >> 7) & 1]}",
            f"\tCMB Data Pointer and Command Independent Locations Support (CDPCILS): {enf[(v >> 6) & 1]}",
            f"\tCMB Data Pointer Mixed Locations Support                    (CDPMLS): {enf[(v >> 5) & 1]}",
            f"\tCMB Queue Physically Discontiguous Support                   (CQPDS): {enf[(v >> 4) & 1]}",
            f"\tCMB Queue Mixed Memory Support                               (CQMMS): {enf[(v >> 3) & 1]}",
            f"\tBase Indicator Register                                        (BIR): 0x{v & 7:x}",
            "",
        ]
    if name == "cmbsz":
        if v == 0:
            return ["\tController Memory Buffer feature is not supported", ""]

        def sup(bit: int) -> str:
            return "Supported" if v >> bit & 1 else "Not supported"

        szu = (v >> 8) & 0xF
        return [
            f"\tSize                      (SZ): {v >> 12}",
            f"\tSize Units               (SZU): {_SZU[szu] if szu < len(_SZU) else 'Reserved'}",
            f"\tWrite Data Support       (WDS): Write Data and metadata transfer in Controller Memory Buffer is "
            f"{sup(4)}",
            f"\tRead Data Support        (RDS): Read Data and metadata transfer in Controller Memory Buffer is "
            f"{sup(3)}",
            f"\tPRP SGL List Support   (LISTS): PRP/SG Lists in Controller Memory Buffer is {sup(2)}",
            f"\tCompletion Queue Support (CQS): Admin and I/O Completion Queues in Controller Memory Buffer is "
            f"{sup(1)}",
            f"\tSubmission Queue Support (SQS): Admin and I/O Submission Queues in Controller Memory Buffer is "
            f"{sup(0)}",
            "",
        ]
    if name == "bpinfo":
        brs = ("No Boot Partition read operation requested", "Boot Partition read in progress",
               "Boot Partition read completed successfully", "Error completing Boot Partition read")
        return [f"\tActive Boot Partition ID      (ABPID): {v >> 31}",
                f"\tBoot Read Status                (BRS): {brs[(v >> 24) & 3]}",
                f"\tBoot Partition Size            (BPSZ): {v & 0x7FFF}"]
    if name == "bprsel":
        return [f"\tBoot Partition Identifier      (BPID): {v >> 31}",
                f"\tBoot Partition Read Offset    (BPROF): {(v >> 10) & 0xFFFFF:x}",
                f"\tBoot Partition Read Size      (BPRSZ): {v & 0x3FF:x}"]
    if name == "bpmbl":
        return [f"\tBoot Partition Memory Buffer Base Address (BMBBA): {v:x}"]
    if name == "cmbmsc":
        return [f"\tController Base Address         (CBA): {v >> 12:x}",
                f"\tController Memory Space Enable (CMSE): {(v >> 1) & 1:x}",
                "\tCapabilities Registers Enabled  (CRE): CMBLOC and CMBSZ registers are"
                + (" " if v & 1 else " NOT ") + "enabled", ""]
    if name == "cmbsts":
        return [f"\tController Base Address Invalid (CBAI): {v & 1:x}", ""]
    if name == "pmrcap":
        return [
            "\tController Memory Space Supported                   (CMSS): Referencing PMR with host supplied "
            "addresses is " + yn(24, "Supported", "Not Supported"),
            f"\tPersistent Memory Region Timeout                   (PMRTO): {(v >> 16) & 0xFF:x}",
            f"\tPersistent Memory Region Write Barrier Mechanisms (PMRWBM): {(v >> 10) & 0xF:x}",
            "\tPersistent Memory Region Time Units                (PMRTU): PMR time unit is "
            + ("minutes" if (v >> 8) & 3 else "500 milliseconds"),
            f"\tBase Indicator Register                              (BIR): {(v >> 5) & 7:x}",
            "\tWrite Data Support                                   (WDS): Write data to the PMR is "
            + yn(4, "supported", "not supported"),
            "\tRead Data Support                                    (RDS): Read data from the PMR is "
            + yn(3, "supported", "not supported"),
        ]
    if name == "pmrctl":
        return [f"\tEnable (EN): PMR is {yn(0, 'READY', 'Disabled')}"]
    if name == "pmrsts":
        hsts = (v >> 9) & 7
        ready = not (v >> 8 & 1) and r["pmrctl"] & 1
        return [
            f"\tController Base Address Invalid (CBAI): {(v >> 12) & 1:x}",
            f"\tHealth Status                   (HSTS): {_PMR_HSTS[hsts] if hsts < 4 else 'Reserved'}",
            "\tNot Ready                       (NRDY): The Persistent Memory Region is "
            + ("READY" if ready else "Not Ready") + " to process PCI Express memory read and write requests",
            f"\tError                            (ERR): {v & 0xFF:x}",
        ]
    if name == "pmrebs":
        szu = v & 0xF
        return [
            f"\tPMR Elasticity Buffer Size Base  (PMRWBZ): {v >> 8:x}",
            "\tRead Bypass Behavior                     : memory reads not conflicting with memory writes in the "
            "PMR Elasticity Buffer " + yn(4, "SHALL", "MAY") + " bypass those memory writes",
            f"\tPMR Elasticity Buffer Size Units (PMRSZU): {_PMR_SZU[szu] if szu < 4 else 'Reserved'}",
        ]
    if name == "pmrswtp":
        szu = v & 0xF
        return [f"\tPMR Sustained Write Throughput       (PMRSWTV): {v >> 8:x}",
                f"\tPMR Sustained Write Throughput Units (PMRSWTU): {_PMR_SZU[szu] if szu < 4 else 'Reserved'}/second"]
    if name == "pmrmscl":
        return [f"\tController Base Address         (CBA): {hx(v >> 12)}",
                f"\tController Memory Space Enable (CMSE): {hx((v >> 1) & 1)}", ""]
    if name == "pmrmscu":
        return [f"\tController Base Address         (CBA): {hx(v)}"]
    return []


_REG_LABELS = {
    "cap": "cap     : ", "vs": "version : ", "cc": "cc      : ", "csts": "csts    : ", "nssr": "nssr    : ",
    "crto": "crto    : ", "intms": "intms   : ", "intmc": "intmc   : ", "aqa": "aqa     : ", "asq": "asq     : ",
    "acq": "acq     : ", "cmbloc": "cmbloc  : ", "cmbsz": "cmbsz   : ", "bpinfo": "bpinfo  : ",
    "bprsel": "bprsel  : ", "bpmbl": "bpmbl   : ", "cmbmsc": "cmbmsc\t: ", "cmbsts": "cmbsts\t: ",
    "pmrcap": "pmrcap  : ", "pmrctl": "pmrctl  : ", "pmrsts": "pmrsts  : ", "pmrebs": "pmrebs  : ",
    "pmrswtp": "pmrswtp : ", "pmrmscl": "pmrmscl\t: ", "pmrmscu": "pmrmscu\t: ",
}


def show_regs_text(data: bytes, fabrics: bool = False, human: bool = False) -> str:
    """``nvme show-regs`` normal (and ``-H``) output for a register file
    image.  CAP, VS, CC, CSTS, NSSR and CRTO are left out when they read all
    ones (32 bits: absent over Fabrics); the other registers are printed for
    a PCIe function only (``fabrics`` false)."""
    r = _regs(bytes(data))
    lines: list[str] = []
    names = ["cap", "vs", "cc", "csts", "nssr", "crto"]
    if not fabrics:
        names += ["intms", "intmc", "aqa", "asq", "acq", "cmbloc", "cmbsz", "bpinfo", "bprsel", "bpmbl",
                  "cmbmsc", "cmbsts", "pmrcap", "pmrctl", "pmrsts", "pmrebs", "pmrswtp", "pmrmscl", "pmrmscu"]
    for name in names:
        v = r[name]
        if name in ("cap", "vs", "cc", "csts", "nssr", "crto") and v == _ALL_ONES32:
            continue
        value = hx(v) if name in ("pmrmscl", "pmrmscu") else f"{v:x}"
        lines.append(_REG_LABELS[name] + value)
        if human:
            lines += _regs_human(name, v, r)
    return "".join(line + "\n" for line in lines)
