"""Features for Get Features / Set Features (NVMe 2.0 base spec 5.27.1
"Feature Specific Information", figure 317 "Feature Identifiers").

Most features are one dword: the value in Set Features Command Dword 11 and
the result in Dword 0 of the completion of Get Features.  Each has a 4-byte
:class:`FeatureDword` view here with its bit fields::

    cdw11 = NumberOfQueues.for_counts(8, 8).dword          # Set Features
    nq = NumberOfQueues.from_dword(cqe.dw0)                # its result
    nq.nsqa, nq.sq_count

A few features also move a data buffer (APST table, Timestamp, Host
Identifier, ...); those have their own structures and
:func:`feature_data_length` says how many bytes a command carries.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Any, ClassVar, NamedTuple

from .admin import (
    FeatureSelect,  # SEL of Get Features; SUPPORTED returns FeatureCapabilities
)
from .layout import Array, Bits, Field, Flag, Raw, Struct, TitledEnum
from .log import CriticalWarning

__all__ = [
    "FeatureId",
    "feature_name",
    "FeatureSelect",
    "FeatureCapability",
    "FeatureCapabilities",
    "FeatureDword",
    "feature_dword_class",
    "Arbitration",
    "PowerManagement",
    "LbaRangeTypeDword",
    "LbaRangeKind",
    "LbaRangeTypeEntry",
    "LbaRangeTypeData",
    "ThresholdType",
    "TMPSEL_ALL",
    "TemperatureThreshold",
    "ErrorRecovery",
    "VolatileWriteCache",
    "NumberOfQueues",
    "InterruptCoalescing",
    "InterruptVectorConfiguration",
    "WriteAtomicity",
    "AsyncEventConfiguration",
    "AutonomousPowerStateTransition",
    "ApstEntry",
    "ApstData",
    "HostMemoryBuffer",
    "HostMemoryBufferAttributes",
    "TimestampOrigin",
    "TimestampData",
    "KeepAliveTimer",
    "HostControlledThermalManagement",
    "IoCommandSetProfile",
    "HostBehaviorSupport",
    "SoftwareProgressMarker",
    "HostIdentifier",
    "HostIdentifier64",
    "HostIdentifier128",
    "ReservationNotificationMask",
    "ReservationPersistence",
    "WriteProtectState",
    "NamespaceWriteProtectionConfig",
    "FeatureInfo",
    "FEATURES",
    "feature_data_length",
]


class FeatureId(TitledEnum):
    """Feature Identifier (FID), CDW10 bits 7:0 of Get/Set Features.  03h
    (LBA Range Type) is defined by the NVM Command Set."""

    ARBITRATION = 0x01, "Arbitration"
    POWER_MGMT = 0x02, "Power Management"
    LBA_RANGE = 0x03, "LBA Range Type"
    TEMP_THRESH = 0x04, "Temperature Threshold"
    ERR_RECOVERY = 0x05, "Error Recovery"
    VOLATILE_WC = 0x06, "Volatile Write Cache"
    NUM_QUEUES = 0x07, "Number of Queues"
    IRQ_COALESCE = 0x08, "Interrupt Coalescing"
    IRQ_CONFIG = 0x09, "Interrupt Vector Configuration"
    WRITE_ATOMIC = 0x0A, "Write Atomicity Normal"
    ASYNC_EVENT = 0x0B, "Asynchronous Event Configuration"
    AUTO_PST = 0x0C, "Autonomous Power State Transition"
    HOST_MEM_BUF = 0x0D, "Host Memory Buffer"
    TIMESTAMP = 0x0E, "Timestamp"
    KATO = 0x0F, "Keep Alive Timer"
    HCTM = 0x10, "Host Controlled Thermal Management"
    NOPSC = 0x11, "Non-Operational Power State Config"
    RRL = 0x12, "Read Recovery Level Config"
    PLM_CONFIG = 0x13, "Predictable Latency Mode Config"
    PLM_WINDOW = 0x14, "Predictable Latency Mode Window"
    LBA_STS_INTERVAL = 0x15, "LBA Status Information Report Interval"
    HOST_BEHAVIOR = 0x16, "Host Behavior Support"
    SANITIZE = 0x17, "Sanitize Config"
    ENDURANCE_EVT_CFG = 0x18, "Endurance Group Event Configuration"
    IOCS_PROFILE = 0x19, "I/O Command Set Profile"
    SPINUP_CONTROL = 0x1A, "Spinup Control"
    ENH_CTRL_METADATA = 0x7D, "Enhanced Controller Metadata"
    CTRL_METADATA = 0x7E, "Controller Metadata"
    NS_METADATA = 0x7F, "Namespace Metadata"
    SW_PROGRESS = 0x80, "Software Progress Marker"
    HOST_ID = 0x81, "Host Identifier"
    RESV_MASK = 0x82, "Reservation Notification Mask"
    RESV_PERSIST = 0x83, "Reservation Persistence"
    WRITE_PROTECT = 0x84, "Namespace Write Protection Config"


def feature_name(fid: int) -> str:
    """The specification's name for a feature identifier."""
    try:
        return FeatureId(fid).title
    except ValueError:
        if 0xC0 <= fid <= 0xFF:
            return f"Vendor Specific ({fid:#04x})"
        return f"Unknown feature ({fid:#04x})"


class FeatureCapability(IntFlag):
    """Completion dword 0 of Get Features with SEL = 11b (figure 193)."""

    SAVEABLE = 1 << 0
    NS_SPECIFIC = 1 << 1
    CHANGEABLE = 1 << 2


# --------------------------------------------------------------------------
# One-dword features


class FeatureDword(Struct):
    """Base of the one-dword feature values (CDW11 of Set Features, DW0 of
    the Get Features completion).  ``FID`` names the feature."""

    SIZE = 4
    FID: ClassVar[int | None] = None

    dword = Field(0, 4, "The whole dword")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fid = vars(cls).get("FID")
        if fid is not None:
            if fid in _DWORD_CLASSES:
                raise TypeError(f"{cls.__name__}: feature {fid:#x} already has {_DWORD_CLASSES[fid].__name__}")
            _DWORD_CLASSES[fid] = cls

    @classmethod
    def from_dword(cls, value: int):
        """A fresh view holding ``value`` (e.g. a completion's dw0)."""
        obj = cls()
        obj.dword = value
        return obj

    def __int__(self) -> int:
        return self.dword


_DWORD_CLASSES: dict[int, type[FeatureDword]] = {}


def feature_dword_class(fid: int) -> type[FeatureDword]:
    """The dword view for a feature (``FeatureDword`` itself if none)."""
    return _DWORD_CLASSES.get(fid, FeatureDword)


class FeatureCapabilities(FeatureDword):
    """Get Features with SEL = 11b (Supported Capabilities): completion dword 0."""

    saveable = Flag(0, 4, 0, "Saveable: the feature has a saved value")
    ns_specific = Flag(0, 4, 1, "Namespace Specific")
    changeable = Flag(0, 4, 2, "Changeable by Set Features")


class Arbitration(FeatureDword):
    FID = FeatureId.ARBITRATION

    ab = Bits(0, 4, 0, 3, "Arbitration Burst: 2^n commands; 111b means no limit")
    lpw = Bits(0, 4, 8, 8, "Low Priority Weight (0's based)")
    mpw = Bits(0, 4, 16, 8, "Medium Priority Weight (0's based)")
    hpw = Bits(0, 4, 24, 8, "High Priority Weight (0's based)")


class PowerManagement(FeatureDword):
    FID = FeatureId.POWER_MGMT

    ps = Bits(0, 4, 0, 5, "Power State (PS)")
    wh = Bits(0, 4, 5, 3, "Workload Hint (WH)")


class LbaRangeTypeDword(FeatureDword):
    """LBA Range Type, CDW11 / DW0 (NVM Command Set)."""

    FID = FeatureId.LBA_RANGE

    num = Bits(0, 4, 0, 6, "Number of LBA Ranges (NUM), 0's based")


class LbaRangeKind(IntEnum):
    """Type of an LBA range."""

    GENERAL_PURPOSE = 0
    FILESYSTEM = 1
    RAID = 2
    CACHE = 3
    PAGE_SWAP = 4


class LbaRangeTypeEntry(Struct):
    """One 64-byte LBA Range Type entry."""

    SIZE = 64

    type = Field(0, 1, "Type (LbaRangeKind)")
    attributes = Field(1, 1, "Attributes")
    overwrite = Flag(1, 1, 0, "Attributes: the range may be overwritten")
    hidden = Flag(1, 1, 1, "Attributes: hidden from the OS / EFI / BIOS")
    slba = Field(16, 8, "Starting LBA")
    nlb = Field(24, 8, "Number of Logical Blocks (0's based)")
    guid = Raw(32, 16, "Unique Identifier (GUID)")


class LbaRangeTypeData(Struct):
    """The LBA Range Type data buffer: 64 entries."""

    SIZE = 4096

    entry = Array(0, LbaRangeTypeEntry, 64, "LBA Range Type entries")


class ThresholdType(IntEnum):
    """Threshold Type Select (THSEL)."""

    OVER = 0
    UNDER = 1


TMPSEL_ALL = 0xF  # Threshold Temperature Select: all sensors (Set Features only)


class TemperatureThreshold(FeatureDword):
    FID = FeatureId.TEMP_THRESH

    tmpth = Bits(0, 4, 0, 16, "Temperature Threshold (TMPTH), kelvins")
    tmpsel = Bits(0, 4, 16, 4, "Threshold Temperature Select: 0 composite, 1-8 sensor, Fh all")
    thsel = Bits(0, 4, 20, 2, "Threshold Type Select (ThresholdType)")


class ErrorRecovery(FeatureDword):
    FID = FeatureId.ERR_RECOVERY

    tler = Bits(0, 4, 0, 16, "Time Limited Error Recovery (TLER), 100 ms units")
    dulbe = Flag(0, 4, 16, "Deallocated or Unwritten Logical Block Error Enable (DULBE)")


class VolatileWriteCache(FeatureDword):
    FID = FeatureId.VOLATILE_WC

    wce = Flag(0, 4, 0, "Volatile Write Cache Enable (WCE)")


class NumberOfQueues(FeatureDword):
    """Number of Queues.  Set Features asks with NSQR/NCQR; the completion
    answers with NSQA/NCQA (same bit positions).  All are 0's based."""

    FID = FeatureId.NUM_QUEUES
    MAX_QUEUES = 65535  # FFFFh is not a valid 0's based request

    nsqr = Bits(0, 4, 0, 16, "Number of I/O Submission Queues Requested (NSQR), 0's based")
    ncqr = Bits(0, 4, 16, 16, "Number of I/O Completion Queues Requested (NCQR), 0's based")
    nsqa = Bits(0, 4, 0, 16, "Number of I/O Submission Queues Allocated (NSQA), 0's based")
    ncqa = Bits(0, 4, 16, 16, "Number of I/O Completion Queues Allocated (NCQA), 0's based")

    @classmethod
    def for_counts(cls, sq: int, cq: int) -> "NumberOfQueues":
        """A request (or result) for ``sq`` submission and ``cq`` completion
        queues, counted from 1."""
        for what, n in (("submission", sq), ("completion", cq)):
            if not 1 <= n <= cls.MAX_QUEUES:
                raise ValueError(f"number of I/O {what} queues must be 1..{cls.MAX_QUEUES}, not {n}")
        return cls(nsqr=sq - 1, ncqr=cq - 1)

    @property
    def sq_count(self) -> int:
        return self.nsqa + 1

    @property
    def cq_count(self) -> int:
        return self.ncqa + 1


class InterruptCoalescing(FeatureDword):
    FID = FeatureId.IRQ_COALESCE

    thr = Bits(0, 4, 0, 8, "Aggregation Threshold (THR), 0's based entries")
    time = Bits(0, 4, 8, 8, "Aggregation Time (TIME), 100 microsecond units")


class InterruptVectorConfiguration(FeatureDword):
    FID = FeatureId.IRQ_CONFIG

    iv = Bits(0, 4, 0, 16, "Interrupt Vector (IV)")
    cd = Flag(0, 4, 16, "Coalescing Disable (CD)")


class WriteAtomicity(FeatureDword):
    FID = FeatureId.WRITE_ATOMIC

    dn = Flag(0, 4, 0, "Disable Normal (DN)")


class AsyncEventConfiguration(FeatureDword):
    """Asynchronous Event Configuration: which events are reported."""

    FID = FeatureId.ASYNC_EVENT

    smart = Bits(0, 4, 0, 8, "SMART / Health Critical Warnings (CriticalWarning bits)")
    nan = Flag(0, 4, 8, "Namespace Attribute Notices")
    fw = Flag(0, 4, 9, "Firmware Activation Notices")
    telem = Flag(0, 4, 10, "Telemetry Log Notices")
    ana = Flag(0, 4, 11, "Asymmetric Namespace Access Change Notices")
    pla = Flag(0, 4, 12, "Predictable Latency Event Aggregate Log Change Notices")
    lbas = Flag(0, 4, 13, "LBA Status Information Notices")
    ega = Flag(0, 4, 14, "Endurance Group Event Aggregate Log Change Notices")
    nnsshdn = Flag(0, 4, 15, "Normal NVM Subsystem Shutdown (NNSSHDN)")
    zdcn = Flag(0, 4, 27, "Zone Descriptor Changed Notices (Zoned Namespace Command Set)")
    dlpcn = Flag(0, 4, 31, "Discovery Log Page Change Notification (fabrics)")

    @property
    def critical_warnings(self) -> CriticalWarning:
        return CriticalWarning(self.smart)


class AutonomousPowerStateTransition(FeatureDword):
    FID = FeatureId.AUTO_PST

    apste = Flag(0, 4, 0, "Autonomous Power State Transition Enable (APSTE)")


class ApstEntry(Struct):
    """One 8-byte Autonomous Power State Transition entry (one per power
    state)."""

    SIZE = 8

    value = Field(0, 8, "The whole entry")
    itps = Bits(0, 8, 3, 5, "Idle Transition Power State (ITPS)")
    itpt = Bits(0, 8, 8, 24, "Idle Time Prior to Transition (ITPT), milliseconds")


class ApstData(Struct):
    """The APST data buffer: entry n applies to power state n."""

    SIZE = 256

    entry = Array(0, ApstEntry, 32, "APST entries, indexed by power state")


class HostMemoryBuffer(FeatureDword):
    """Host Memory Buffer, CDW11 (buffer size and list go in CDW12-15)."""

    FID = FeatureId.HOST_MEM_BUF

    ehm = Flag(0, 4, 0, "Enable Host Memory (EHM)")
    mr = Flag(0, 4, 1, "Memory Return (MR)")


class HostMemoryBufferAttributes(Struct):
    """Host Memory Buffer Attributes, the data of Get Features (4096 bytes)."""

    SIZE = 4096

    hsize = Field(0, 4, "Host Memory Buffer Size, memory page size units")
    hmdlal = Field(4, 4, "Host Memory Descriptor List Lower Address")
    hmdlau = Field(8, 4, "Host Memory Descriptor List Upper Address")
    hmdlec = Field(12, 4, "Host Memory Descriptor List Entry Count")


class TimestampOrigin(IntEnum):
    """Timestamp Origin, attribute bits 3:1."""

    RESET = 0  # counting from zero since the last Controller Level Reset
    SET_FEATURES = 1  # set by a host with Set Features


class TimestampData(Struct):
    """Timestamp data structure (8 bytes)."""

    SIZE = 8
    MAX = (1 << 48) - 1

    timestamp = Field(0, 6, "Timestamp: milliseconds since midnight 01-Jan-1970 UTC")
    attr = Field(6, 1, "Attributes")
    synch = Flag(6, 1, 0, "Synch: the timestamp may have stopped (non-operational state)")
    origin = Bits(6, 1, 1, 3, "Timestamp Origin (TimestampOrigin)")


class KeepAliveTimer(FeatureDword):
    FID = FeatureId.KATO

    kato = Field(0, 4, "Keep Alive Timeout (KATO), milliseconds; 0 disables")


class HostControlledThermalManagement(FeatureDword):
    FID = FeatureId.HCTM

    tmt2 = Bits(0, 4, 0, 16, "Thermal Management Temperature 2 (TMT2), kelvins")
    tmt1 = Bits(0, 4, 16, 16, "Thermal Management Temperature 1 (TMT1), kelvins")


class IoCommandSetProfile(FeatureDword):
    """I/O Command Set Profile (19h): CDW11 of Set Features, DW0 of the Get
    Features completion (NVMe 2.0 figures 429 and 430)."""

    FID = FeatureId.IOCS_PROFILE

    iocsci = Bits(0, 4, 0, 9, "I/O Command Set Combination Index (IOCSCI) into Identify CNS 1Ch")


class HostBehaviorSupport(Struct):
    """Host Behavior Support data structure (512 bytes)."""

    SIZE = 512

    acre = Field(0, 1, "Advanced Command Retry Enable (ACRE)")
    etdas = Field(1, 1, "Extended Telemetry Data Area 4 Supported (ETDAS)")
    lbafee = Field(2, 1, "LBA Format Extension Enable (LBAFEE)")


class SoftwareProgressMarker(FeatureDword):
    FID = FeatureId.SW_PROGRESS

    pbslc = Bits(0, 4, 0, 8, "Pre-boot Software Load Count (PBSLC)")


class HostIdentifier(FeatureDword):
    """Host Identifier, CDW11 / DW0: the identifier itself is data."""

    FID = FeatureId.HOST_ID

    exhid = Flag(0, 4, 0, "Enable Extended Host Identifier (EXHID): 128-bit instead of 64-bit")


class HostIdentifier64(Struct):
    """Host Identifier data with EXHID cleared: a 64-bit identifier."""

    SIZE = 8

    hostid = Raw(0, 8, "Host Identifier (HOSTID), 64-bit")


class HostIdentifier128(Struct):
    """Host Identifier data with EXHID set: a 128-bit identifier (fabrics
    require this form)."""

    SIZE = 16

    hostid = Raw(0, 16, "Host Identifier (HOSTID), 128-bit")


class ReservationNotificationMask(FeatureDword):
    FID = FeatureId.RESV_MASK

    regpre = Flag(0, 4, 1, "Mask Registration Preempted Notification (REGPRE)")
    resrel = Flag(0, 4, 2, "Mask Reservation Released Notification (RESREL)")
    respre = Flag(0, 4, 3, "Mask Reservation Preempted Notification (RESPRE)")


class ReservationPersistence(FeatureDword):
    FID = FeatureId.RESV_PERSIST

    ptpl = Flag(0, 4, 0, "Persist Through Power Loss (PTPL)")


class WriteProtectState(IntEnum):
    """Namespace Write Protection State (WPS)."""

    NO_WRITE_PROTECT = 0
    WRITE_PROTECT = 1
    WRITE_PROTECT_UNTIL_POWER_CYCLE = 2
    PERMANENT_WRITE_PROTECT = 3


class NamespaceWriteProtectionConfig(FeatureDword):
    FID = FeatureId.WRITE_PROTECT

    wps = Bits(0, 4, 0, 3, "Write Protection State (WriteProtectState)")


# --------------------------------------------------------------------------
# Per-feature facts


class FeatureInfo(NamedTuple):
    """What the specification says of a feature: ``data_size`` is the
    bytes of its data buffer (0: dword only; the maximum where it varies,
    see :func:`feature_data_length`); ``ns_specific`` is True where the
    feature's scope is the namespace (its NSID selects the namespace)."""

    data_size: int
    ns_specific: bool = False


FEATURES: dict[FeatureId, FeatureInfo] = {
    FeatureId.ARBITRATION: FeatureInfo(0),
    FeatureId.POWER_MGMT: FeatureInfo(0),
    FeatureId.LBA_RANGE: FeatureInfo(LbaRangeTypeData.SIZE, ns_specific=True),
    FeatureId.TEMP_THRESH: FeatureInfo(0),
    FeatureId.ERR_RECOVERY: FeatureInfo(0, ns_specific=True),
    FeatureId.VOLATILE_WC: FeatureInfo(0),
    FeatureId.NUM_QUEUES: FeatureInfo(0),
    FeatureId.IRQ_COALESCE: FeatureInfo(0),
    FeatureId.IRQ_CONFIG: FeatureInfo(0),
    FeatureId.WRITE_ATOMIC: FeatureInfo(0),
    FeatureId.ASYNC_EVENT: FeatureInfo(0),
    FeatureId.AUTO_PST: FeatureInfo(ApstData.SIZE),
    FeatureId.HOST_MEM_BUF: FeatureInfo(HostMemoryBufferAttributes.SIZE),  # Get Features only
    FeatureId.TIMESTAMP: FeatureInfo(TimestampData.SIZE),
    FeatureId.KATO: FeatureInfo(0),
    FeatureId.HCTM: FeatureInfo(0),
    FeatureId.NOPSC: FeatureInfo(0),
    FeatureId.RRL: FeatureInfo(0),
    FeatureId.PLM_CONFIG: FeatureInfo(512),
    FeatureId.PLM_WINDOW: FeatureInfo(0),
    FeatureId.LBA_STS_INTERVAL: FeatureInfo(0),
    FeatureId.HOST_BEHAVIOR: FeatureInfo(HostBehaviorSupport.SIZE),
    FeatureId.SANITIZE: FeatureInfo(0),
    FeatureId.ENDURANCE_EVT_CFG: FeatureInfo(0),
    FeatureId.IOCS_PROFILE: FeatureInfo(0),
    FeatureId.SPINUP_CONTROL: FeatureInfo(0),
    FeatureId.ENH_CTRL_METADATA: FeatureInfo(4096),
    FeatureId.CTRL_METADATA: FeatureInfo(4096),
    FeatureId.NS_METADATA: FeatureInfo(4096, ns_specific=True),
    FeatureId.SW_PROGRESS: FeatureInfo(0),
    FeatureId.HOST_ID: FeatureInfo(HostIdentifier128.SIZE),
    FeatureId.RESV_MASK: FeatureInfo(0, ns_specific=True),
    FeatureId.RESV_PERSIST: FeatureInfo(0, ns_specific=True),
    FeatureId.WRITE_PROTECT: FeatureInfo(0, ns_specific=True),
}


def feature_data_length(fid: int, cdw11: int = 0, *, host_to_controller: bool = False) -> int:
    """Bytes of data a Get Features (or, with ``host_to_controller``, a
    Set Features) command for ``fid`` transfers.

    The Host Identifier is 8 bytes, or 16 when CDW11.EXHID is set; Set
    Features Host Memory Buffer carries its parameters in dwords only."""
    try:
        info = FEATURES[FeatureId(fid)]
    except ValueError:
        raise ValueError(f"no data length known for feature {fid:#04x}") from None
    if fid == FeatureId.HOST_ID:
        return HostIdentifier128.SIZE if cdw11 & 1 else HostIdentifier64.SIZE
    if fid == FeatureId.HOST_MEM_BUF and host_to_controller:
        return 0
    return info.data_size
