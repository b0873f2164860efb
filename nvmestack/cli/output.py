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
from nvmestack.spec.log import ErrorInformationEntry, FirmwareSlotLog, SmartLog
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
    """JSON text as nvme-cli prints it (json-c pretty, then a newline)."""
    return json.dumps(obj, indent=2, separators=(",", ":"), ensure_ascii=False) + "\n"


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


def id_ctrl_text(ctrl: IdentifyController) -> str:
    """``nvme id-ctrl`` normal output."""
    lines = ["NVME Identify Controller:"]
    lines += [f"{name:<10}: {value}" for name, value in _ctrl_fields(ctrl)]
    lines += _power_states(ctrl)
    return "\n".join(lines) + "\n"


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


def id_ns_text(ns: IdentifyNamespace, nsid: int, human: bool = False) -> str:
    """``nvme id-ns`` normal (and ``-H``) output for namespace ``nsid``."""
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
    return "\n".join(lines) + "\n"


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


def smart_log_json(log: SmartLog) -> dict[str, Any]:
    """``nvme smart-log -o json``: 128-bit counters as decimal strings."""
    s = log
    out: dict[str, Any] = {
        "critical_warning": s.critical_warning,
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
                "nsid": e.nsid,
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
