"""nvme-cli 2.3's text for ``get-feature`` and ``set-feature``, byte for byte
(checked against the real nvme-cli's output for the same completions, see
``tests/cli/data/make_golden_features.py``).

The names and layouts here are nvme-cli's (``nvme_feature_to_string``,
``nvme_feature_show_fields``, the ``d()`` hex dump), which are not always the
specification's: the feature's bit positions come from
:mod:`nvmestack.spec.features`.
"""

from __future__ import annotations

import time

from ..spec.features import (
    ApstData,
    Arbitration,
    AsyncEventConfiguration,
    ErrorRecovery,
    FeatureCapabilities,
    FeatureId,
    HostControlledThermalManagement,
    HostMemoryBufferAttributes,
    InterruptCoalescing,
    InterruptVectorConfiguration,
    LbaRangeTypeData,
    NumberOfQueues,
    PowerManagement,
    ReservationNotificationMask,
    TemperatureThreshold,
    TimestampData,
)
from .output import hx

__all__ = [
    "FEATURE_NAMES",
    "SELECT_NAMES",
    "alt_hex",
    "feature_fields_text",
    "feature_line",
    "feature_name",
    "hexdump",
    "lba_range_text",
    "lba_status_interval_text",
    "select_name",
    "select_result_text",
    "set_feature_line",
]

#: nvme-cli's ``nvme_feature_to_string`` (its names, not always the specification's).
FEATURE_NAMES = {
    0x01: "Arbitration",
    0x02: "Power Management",
    0x03: "LBA Range Type",
    0x04: "Temperature Threshold",
    0x05: "Error Recovery",
    0x06: "Volatile Write Cache",
    0x07: "Number of Queues",
    0x08: "Interrupt Coalescing",
    0x09: "Interrupt Vector Configuration",
    0x0A: "Write Atomicity Normal",
    0x0B: "Async Event Configuration",
    0x0C: "Autonomous Power State Transition",
    0x0D: "Host Memory Buffer",
    0x0E: "Timestamp",
    0x0F: "Keep Alive Timer",
    0x10: "Host Controlled Thermal Management",
    0x11: "Non-Operational Power State Config",
    0x12: "Read Recovery Level",
    0x13: "Predictable Latency Mode Config",
    0x14: "Predictable Latency Mode Window",
    0x15: "LBA Status Interval",
    0x16: "Host Behavior",
    0x17: "Sanitize",
    0x18: "Endurance Event Group Configuration",
    0x19: "I/O Command Set Profile",
    0x1A: "Spinup Control",
    0x1D: "Flexible Direct Placement",
    0x1E: "Flexible Direct Placement Events",
    0x7D: "Enhanced Controller Metadata",
    0x7E: "Controller Metadata",
    0x7F: "Namespace Metadata",
    0x80: "Software Progress",
    0x81: "Host Identifier",
    0x82: "Reservation Notification Mask",
    0x83: "Reservation Persistence",
    0x84: "Namespace Write Protect",
}

#: nvme-cli's ``nvme_select_to_string`` (8 is its "changed" pseudo-select).
SELECT_NAMES = {0: "Current", 1: "Default", 2: "Saved", 3: "Supported capabilities", 8: "Changed"}

FID_FDP = 0x1D
FID_FDP_EVENTS = 0x1E


def feature_name(fid: int) -> str:
    return FEATURE_NAMES.get(fid, "Unknown")


def select_name(sel: int) -> str:
    return SELECT_NAMES.get(sel, "Reserved")


def alt_hex(value: int, width: int) -> str:
    """C's ``%#0*x``: zero has no ``0x`` (``00000000``), others count it in the width."""
    if value == 0:
        return "0" * width
    return f"{value:#0{width}x}"


def _enabled(flag: int | bool) -> str:
    return "Enabled" if flag else "Disabled"


def _true(flag: int | bool) -> str:
    return "True" if flag else "False"


def hexdump(data: bytes | bytearray | memoryview, width: int = 16) -> str:
    """nvme-cli's ``d(buf, len, 16, 1)`` (:func:`nvmestack.cli.output.hexdump`)."""
    from .output import hexdump as _hexdump

    return _hexdump(data, width)


def feature_line(fid: int, sel: int, result: int) -> str:
    """``get-feature:0x01 (Arbitration), Current value:0x03020107``."""
    return (f"get-feature:{alt_hex(fid, 4 if fid else 2)} ({feature_name(fid)}), "
            f"{select_name(sel)} value:{alt_hex(result, 10 if result else 8)}\n")


def select_result_text(result: int) -> str:
    """The capabilities of Get Features with Select = 11b."""
    caps = FeatureCapabilities.from_dword(result)
    out = ""
    if caps.saveable:
        out += "  Feature is saveable\n"
    if caps.ns_specific:
        out += "  Feature is per-namespace\n"
    if caps.changeable:
        out += "  Feature is changeable\n"
    return out


def set_feature_line(fid: int, value: int, cdw12: int, save: bool) -> str:
    return (f"set-feature:{alt_hex(fid, 4 if fid else 2)} ({feature_name(fid)}), "
            f"value:{alt_hex(value, 10 if value else 8)}, cdw12:{alt_hex(cdw12, 10 if cdw12 else 8)}, "
            f"save:{hx(int(save))}\n")


# -- nvme_feature_show_fields ----------------------------------------------------------------------

_LBA_TYPES = {0: "Reserved", 1: "Filesystem", 2: "RAID", 3: "Cache", 4: "Page / Swap file"}
_WORKLOAD_HINTS = {0: "No Workload", 1: "Extended Idle Period with a Burst of Random Writes",
                   2: "Heavy Sequential Writes"}
_THRESHOLD_TYPES = {0: "Over Temperature Threshold", 1: "Under Temperature Threshold"}
_WRITE_PROTECT = {0: "No Write Protect", 1: "Write Protect", 2: "Write Protect Until Power Cycle",
                  3: "Permanent Write Protect"}
_PLM_WINDOWS = {1: "Deterministic Window (DTWIN)", 2: "Non-deterministic Window (NDWIN)"}
_FDP_EVENTS = {0x00: "Reclaim Unit Not Fully Written", 0x01: "Reclaim Unit Active Time Limit Exceeded",
               0x02: "Controller Level Reset Modified Reclaim Unit Handles", 0x03: "Invalid Placement Identifier",
               0x80: "Media Reallocated", 0x81: "Implicitly Modified Reclaim Unit Handle"}
_CTRL_METADATA = {
    0x01: "Operating System Controller Name",
    0x02: "Operating System Driver Name",
    0x03: "Operating System Driver Version",
    0x04: "Pre-boot Controller Name",
    0x05: "Pre-boot Driver Name",
    0x06: "Pre-boot Driver Version",
    0x07: "System Processor Model",
    0x08: "Chipset Driver Name",
    0x09: "Chipset Driver Version",
    0x0A: "Operating System Name and Build",
    0x0B: "System Product Name",
    0x0C: "Firmware Version",
    0x0D: "Operating System Driver Filename",
    0x0E: "Display Driver Name",
    0x0F: "Display Driver Version",
    0x10: "Host-Determined Failure Record",
}
_NS_METADATA = {
    0x01: "Operating System Namespace Name",
    0x02: "Pre-boot Namespace Name",
    0x03: "Operating System Namespace Name Qualifier 1",
    0x04: "Operating System Namespace Name Qualifier 2",
}


def _lba_type(kind: int) -> str:
    if kind in _LBA_TYPES:
        return _LBA_TYPES[kind]
    return "Reserved" if kind <= 0x7F else "Vendor Specific"


def _temperature_select(tmpsel: int) -> str:
    if tmpsel == 0:
        return "Composite Temperature"
    if tmpsel <= 8:
        return f"Temperature Sensor {tmpsel}"
    return "Reserved"


def _c_int(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def lba_range_text(data: bytes, last: int) -> str:
    """``nvme_show_lba_range``: entries 0 to ``last`` (nvme-cli passes an
    ``int``; past the 64 entries of the buffer it would read beyond it)."""
    page = LbaRangeTypeData.from_bytes(bytes(data).ljust(LbaRangeTypeData.SIZE, b"\0")[:LbaRangeTypeData.SIZE])
    out = ""
    for i in range(min(_c_int(last), 63) + 1):
        e = page.entry[i]
        attrs = e.attributes
        out += f"\ttype       : {hx(e.type)} - {_lba_type(e.type)}\n"
        overwrite = "may be overwritten" if attrs & 1 else "should not be overwritten"
        hidden = "hidden from" if attrs & 2 else "visible from"
        out += f"\tattributes : {hx(attrs)} - LBA range {overwrite}, LBA range should be {hidden} the OS/EFI/BIOS\n"
        out += f"\tslba       : {hx(e.slba)}\n"
        out += f"\tnlb        : {hx(e.nlb)}\n"
        out += f"\tguid       : {bytes(e.guid).hex()}\n"
    return out


def lba_status_interval_text(result: int) -> str:
    return (f"\tLBA Status Information Poll Interval (LSIPI)  : {result >> 16 & 0xFFFF}\n"
            f"\tLBA Status Information Report Interval (LSIRI): {result & 0xFFFF}\n")


def _apst_text(data: bytes) -> str:
    table = ApstData.from_bytes(bytes(data).ljust(ApstData.SIZE, b"\0")[:ApstData.SIZE])
    out = "\tAuto PST Entries\t.................\n"
    for i in range(32):
        e = table.entry[i]
        out += f"\tEntry[{i:2d}]   \n\t.................\n"
        out += f"\tIdle Time Prior to Transition (ITPT): {e.itpt} ms\n"
        out += f"\tIdle Transition Power State   (ITPS): {e.itps}\n"
        out += "\t.................\n"
    return out


def _timestamp_text(data: bytes) -> str:
    ts = TimestampData.from_bytes(bytes(data).ljust(TimestampData.SIZE, b"\0")[:TimestampData.SIZE])
    ms = ts.timestamp
    try:
        when = time.strftime("%c %Z", time.localtime(ms // 1000))
    except (OverflowError, OSError, ValueError):
        when = "-"
    attr = ts.attr
    out = f"\tThe timestamp is : {ms} ({when})\n"
    if attr & 2:
        out += "\tThe Timestamp field was initialized with a Timestamp value using a Set Features command.\n"
    else:
        out += "\tThe Timestamp field was initialized to \u20180\u2019 by a Controller Level Reset.\n"
    if attr & 1:
        out += ("\tThe controller may have stopped counting during vendor specific intervals after the "
                "Timestamp value was initialized\n")
    else:
        out += ("\tThe controller counted time in milliseconds continuously since the Timestamp value was "
                "initialized.\n")
    return out


def _hmb_text(data: bytes) -> str:
    hmb = HostMemoryBufferAttributes.from_bytes(
        bytes(data).ljust(HostMemoryBufferAttributes.SIZE, b"\0")[:HostMemoryBufferAttributes.SIZE])
    return (f"\tHost Memory Descriptor List Entry Count (HMDLEC): {hmb.hmdlec}\n"
            f"\tHost Memory Descriptor List Address     (HMDLAU): 0x{hmb.hmdlau:x}\n"
            f"\tHost Memory Descriptor List Address     (HMDLAL): 0x{hmb.hmdlal:x}\n"
            f"\tHost Memory Buffer Size                  (HSIZE): {hmb.hsize}\n")


def _plm_config_text(data: bytes) -> str:
    data = bytes(data).ljust(56, b"\0")
    ee = int.from_bytes(data[0:2], "little")
    reads, writes, ticks = (int.from_bytes(data[o:o + 8], "little") for o in (32, 40, 48))
    return (f"\tEnable Event          :{ee:04x}\n"
            f"\tDTWIN Reads Threshold :{reads}\n"
            f"\tDTWIN Writes Threshold:{writes}\n"
            f"\tDTWIN Time Threshold  :{ticks}\n")


def _metadata_text(fid: int, data: bytes) -> str:
    """``nvme_show_host_metadata``.  nvme-cli copies each value with
    ``strncpy`` into one buffer it never clears, then prints it as a
    string; the same is done here."""
    data = bytes(data)
    names = _NS_METADATA if fid == FeatureId.NS_METADATA else _CTRL_METADATA
    unknown = "Unknown Namespace Type" if fid == FeatureId.NS_METADATA else "Unknown Controller Type"
    count = data[0] if data else 0
    out = f"\tNum Metadata Element Descriptors: {count}\n"
    value = bytearray(4096)
    pos = 2
    for i in range(count):
        if pos + 4 > len(data):
            break
        etype, rev = data[pos], data[pos + 1]
        length = int.from_bytes(data[pos + 2:pos + 4], "little")
        n = min(len(value) - 1, length)
        src = data[pos + 4:pos + 4 + n]
        nul = src.find(b"\0")
        if nul >= 0:
            value[:n] = src[:nul].ljust(n, b"\0")
        else:
            value[:len(src)] = src
        text = bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
        out += f"\tElement[{i:<3d}]:\n"
        out += f"\t\tType\t    : 0x{etype:02x} ({names.get(etype, unknown)})\n"
        out += f"\t\tRevision : {rev}\n"
        out += f"\t\tLength   : {length}\n"
        out += f"\t\tValue    : {text}\n"
        pos += 4 + length
    return out


def feature_fields_text(fid: int, result: int, data: bytes | None) -> str:
    """``-H``: the fields of a feature's value (and its data), as
    nvme-cli's ``nvme_feature_show_fields`` prints them.  Features it does
    not decode print nothing."""
    r = result & 0xFFFFFFFF
    F = FeatureId
    if fid == F.ARBITRATION:
        a = Arbitration.from_dword(r)
        burst = "No limit" if a.ab == 7 else str(1 << a.ab)
        return (f"\tHigh Priority Weight   (HPW): {a.hpw + 1}\n"
                f"\tMedium Priority Weight (MPW): {a.mpw + 1}\n"
                f"\tLow Priority Weight    (LPW): {a.lpw + 1}\n"
                f"\tArbitration Burst       (AB): {burst}\n")
    if fid == F.POWER_MGMT:
        pm = PowerManagement.from_dword(r)
        return (f"\tWorkload Hint (WH): {pm.wh} - {_WORKLOAD_HINTS.get(pm.wh, 'Reserved')}\n"
                f"\tPower State   (PS): {pm.ps}\n")
    if fid == F.LBA_RANGE:
        num = r & 0x3F
        out = f"\tNumber of LBA Ranges (NUM): {num + 1}\n"
        if data is not None:
            out += lba_range_text(data, num)
        return out
    if fid == F.TEMP_THRESH:
        t = TemperatureThreshold.from_dword(r)
        return (f"\tThreshold Type Select         (THSEL): {t.thsel} - {_THRESHOLD_TYPES.get(t.thsel, 'Reserved')}\n"
                f"\tThreshold Temperature Select (TMPSEL): {t.tmpsel} - {_temperature_select(t.tmpsel)}\n"
                f"\tTemperature Threshold         (TMPTH): {t.tmpth - 273}°C ({t.tmpth} Kelvin)\n")
    if fid == F.ERR_RECOVERY:
        e = ErrorRecovery.from_dword(r)
        return (f"\tDeallocated or Unwritten Logical Block Error Enable (DULBE): {_enabled(e.dulbe)}\n"
                f"\tTime Limited Error Recovery                          (TLER): {e.tler * 100} ms\n")
    if fid == F.VOLATILE_WC:
        return f"\tVolatile Write Cache Enable (WCE): {_enabled(r & 1)}\n"
    if fid == F.NUM_QUEUES:
        q = NumberOfQueues.from_dword(r)
        return (f"\tNumber of IO Completion Queues Allocated (NCQA): {q.ncqa + 1}\n"
                f"\tNumber of IO Submission Queues Allocated (NSQA): {q.nsqa + 1}\n")
    if fid == F.IRQ_COALESCE:
        c = InterruptCoalescing.from_dword(r)
        return (f"\tAggregation Time     (TIME): {c.time * 100} usec\n"
                f"\tAggregation Threshold (THR): {c.thr + 1}\n")
    if fid == F.IRQ_CONFIG:
        v = InterruptVectorConfiguration.from_dword(r)
        return (f"\tCoalescing Disable (CD): {_true(v.cd)}\n"
                f"\tInterrupt Vector   (IV): {v.iv}\n")
    if fid == F.WRITE_ATOMIC:
        return f"\tDisable Normal (DN): {_true(r & 1)}\n"
    if fid == F.ASYNC_EVENT:
        a = AsyncEventConfiguration.from_dword(r)
        rows = [("Discovery Log Page Change Notices", a.dlpcn),
                ("Endurance Group Event Aggregate Log Change Notices", a.ega),
                ("LBA Status Information Notices", a.lbas),
                ("Predictable Latency Event Aggregate Log Change Notices", a.pla),
                ("Asymmetric Namespace Access Change Notices", a.ana),
                ("Telemetry Log Notices", a.telem),
                ("Firmware Activation Notices", a.fw),
                ("Namespace Attribute Notices", a.nan),
                ("SMART / Health Critical Warnings", a.smart)]
        return "".join(f"\t{name:<58s}: {'Send async event' if on else 'Do not send async event'}\n"
                       for name, on in rows)
    if fid == F.AUTO_PST:
        out = f"\tAutonomous Power State Transition Enable (APSTE): {_enabled(r & 1)}\n"
        if data is not None:
            out += _apst_text(data)
        return out
    if fid == F.HOST_MEM_BUF:
        out = f"\tEnable Host Memory (EHM): {_enabled(r & 1)}\n"
        if data is not None:
            out += _hmb_text(data)
        return out
    if fid == F.TIMESTAMP:
        return _timestamp_text(data) if data is not None else ""
    if fid == F.KATO:
        return f"\tKeep Alive Timeout (KATO) in milliseconds: {r}\n"
    if fid == F.HCTM:
        h = HostControlledThermalManagement.from_dword(r)
        return (f"\tThermal Management Temperature 1 (TMT1) : {h.tmt1} Kelvin ({h.tmt1 - 273}°C)\n"
                f"\tThermal Management Temperature 2 (TMT2) : {h.tmt2} Kelvin ({h.tmt2 - 273}°C)\n")
    if fid == F.NOPSC:
        return f"\tNon-Operational Power State Permissive Mode Enable (NOPPME): {_true(r & 1)}\n"
    if fid == F.RRL:
        return f"\tRead Recovery Level (RRL): {r & 0xF}\n"
    if fid == F.PLM_CONFIG:
        out = f"\tPredictable Latency Window Enabled: {_true(r & 1)}\n"
        if data is not None:
            out += _plm_config_text(data)
        return out
    if fid == F.PLM_WINDOW:
        return f"\tWindow Select: {_PLM_WINDOWS.get(r & 7, 'Reserved')}"  # no newline, as nvme-cli
    if fid == F.LBA_STS_INTERVAL:
        return lba_status_interval_text(r)
    if fid == F.HOST_BEHAVIOR:
        if data is None:
            return ""
        return f"\tHost Behavior Support: {_true(len(data) and data[0] & 1)}\n"
    if fid == F.SANITIZE:
        return f"\tNo-Deallocate Response Mode (NODRM) : {r & 1}\n"
    if fid == F.ENDURANCE_EVT_CFG:
        return (f"\tEndurance Group Identifier (ENDGID): {r & 0xFFFF}\n"
                f"\tEndurance Group Critical Warnings  : {r >> 16 & 0xFF}\n")
    if fid == F.IOCS_PROFILE:
        return f"\tI/O Command Set Profile: {_true(r & 1)}\n"
    if fid == F.SPINUP_CONTROL:
        return f"\tSpinup control feature Enabled: {_true(r & 1)}\n"
    if fid == FID_FDP:
        return (f"\tFlexible Direct Placement Enable (FDPE)       : {'Yes' if r & 1 else 'No'}\n"
                f"\tFlexible Direct Placement Configuration Index : {r >> 8 & 0xF}\n")
    if fid == FID_FDP_EVENTS:
        if data is None:
            return ""
        out = ""
        for i in range(min(r, len(data) // 2)):
            evt, evta = data[2 * i], data[2 * i + 1]
            out += f"\t{_FDP_EVENTS.get(evt, 'Unknown'):<53s}: {'' if evta & 1 else 'Not '}Enabled\n"
        return out
    if fid in (F.ENH_CTRL_METADATA, F.CTRL_METADATA, F.NS_METADATA):
        return _metadata_text(fid, data) if data is not None else ""
    if fid == F.SW_PROGRESS:
        return f"\tPre-boot Software Load Count (PBSLC): {r & 0xFF}\n"
    if fid == F.HOST_ID:
        if data is None:
            return ""
        hostid = int.from_bytes(bytes(data[:8]), "little")
        return f"\tHost Identifier (HOSTID):  {hostid}\n"
    if fid == F.RESV_MASK:
        m = ReservationNotificationMask.from_dword(r)
        return (f"\tMask Reservation Preempted Notification  (RESPRE): {_true(m.respre)}\n"
                f"\tMask Reservation Released Notification   (RESREL): {_true(m.resrel)}\n"
                f"\tMask Registration Preempted Notification (REGPRE): {_true(m.regpre)}\n")
    if fid == F.RESV_PERSIST:
        return f"\tPersist Through Power Loss (PTPL): {_true(r & 1)}\n"
    if fid == F.WRITE_PROTECT:
        return f"\tNamespace Write Protect: {_WRITE_PROTECT.get(r, 'Reserved')}\n"
    return ""
