"""Log pages returned by Get Log Page (NVMe 2.0 base spec 5.16.1 "Log Page
Identifiers" and the log pages that follow it; 5.16.1.23 "Discovery" for the
NVMe over Fabrics Discovery log page).

Every structure is a view (see ``layout.py``): wrap the data buffer a Get Log
Page command returned with ``SmartLog.decode(buf)`` and read only the fields
you need.  The discovery log is variable length: a 1024-byte header followed
by ``numrec`` 1024-byte entries; :func:`discovery_log_entries` views the
entries of a buffer in place and :func:`build_discovery_log` assembles one.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Any, Iterable

from .fabrics import DISCOVERY_NQN
from .layout import Array, Bits, Field, Flag, IntArray, Raw, Str, Struct, TitledEnum

__all__ = [
    "LogPageId",
    "log_page_name",
    "LidSupportedAndEffects",
    "SupportedLogPages",
    "ErrorInformationEntry",
    "CriticalWarning",
    "EnduranceGroupCriticalWarning",
    "SmartLog",
    "FirmwareSlotLog",
    "CHANGED_NS_LIST_OVERFLOW",
    "ChangedNamespaceList",
    "CommandSubmissionExecution",
    "CommandScope",
    "CommandEffects",
    "Effects",
    "CommandsSupportedAndEffects",
    "SelfTestOperation",
    "SelfTestResultCode",
    "SelfTestResult",
    "DeviceSelfTestLog",
    "ReservationNotificationType",
    "ReservationNotificationLog",
    "SanitizeStatus",
    "SanitizeStatusLog",
    "NVME_DISC_SUBSYS_NAME",
    "TransportType",
    "AddressFamily",
    "SubsystemType",
    "SecureChannel",
    "DiscoveryEntryFlags",
    "TcpSecurityType",
    "DiscoveryLogHeader",
    "DiscoveryLogEntry",
    "DISCOVERY_LOG_HEADER_SIZE",
    "DISCOVERY_LOG_ENTRY_SIZE",
    "discovery_log_size",
    "discovery_log_entries",
    "build_discovery_log",
]


# --------------------------------------------------------------------------
# Log page identifiers


class LogPageId(TitledEnum):
    """Log Page Identifier (LID), Get Log Page CDW10 bits 7:0 (NVMe 2.0
    figure 202 "Get Log Page - Log Page Identifiers"; 0Eh is defined by the
    NVM Command Set, BFh by the Zoned Namespace Command Set)."""

    SUPPORTED_LOG_PAGES = 0x00, "Supported Log Pages"
    ERROR = 0x01, "Error Information"
    SMART = 0x02, "SMART / Health Information"
    FW_SLOT = 0x03, "Firmware Slot Information"
    CHANGED_NS = 0x04, "Changed Namespace List"
    CMD_EFFECTS = 0x05, "Commands Supported and Effects"
    DEVICE_SELF_TEST = 0x06, "Device Self-test"
    TELEMETRY_HOST = 0x07, "Telemetry Host-Initiated"
    TELEMETRY_CTRL = 0x08, "Telemetry Controller-Initiated"
    ENDURANCE_GROUP = 0x09, "Endurance Group Information"
    PREDICTABLE_LAT_NVMSET = 0x0A, "Predictable Latency Per NVM Set"
    PREDICTABLE_LAT_AGG = 0x0B, "Predictable Latency Event Aggregate"
    ANA = 0x0C, "Asymmetric Namespace Access"
    PERSISTENT_EVENT = 0x0D, "Persistent Event Log"
    LBA_STATUS = 0x0E, "LBA Status Information"
    ENDURANCE_GRP_EVT = 0x0F, "Endurance Group Event Aggregate"
    MEDIA_UNIT_STATUS = 0x10, "Media Unit Status"
    SUPPORTED_CAP_CONFIG_LIST = 0x11, "Supported Capacity Configuration List"
    FID_SUPPORTED_EFFECTS = 0x12, "Feature Identifiers Supported and Effects"
    MI_CMD_SUPPORTED_EFFECTS = 0x13, "NVMe-MI Commands Supported and Effects"
    CMD_FEATURE_LOCKDOWN = 0x14, "Command and Feature Lockdown"
    BOOT_PARTITION = 0x15, "Boot Partition"
    ROTATIONAL_MEDIA = 0x16, "Rotational Media Information"
    DISCOVERY = 0x70, "Discovery"
    RESERVATION = 0x80, "Reservation Notification"
    SANITIZE = 0x81, "Sanitize Status"
    ZNS_CHANGED_ZONES = 0xBF, "Changed Zone List"


def log_page_name(lid: int) -> str:
    """The specification's name for a log page identifier."""
    try:
        return LogPageId(lid).title
    except ValueError:
        if 0xC0 <= lid <= 0xFF:
            return f"Vendor Specific ({lid:#04x})"
        return f"Unknown log page ({lid:#04x})"


# --------------------------------------------------------------------------
# Supported Log Pages (LID 00h), NVMe 2.0 5.16.1.1


class LidSupportedAndEffects(Struct):
    """One entry of the Supported Log Pages log page (figure 204)."""

    SIZE = 4

    value = Field(0, 4, "The whole LID Supported and Effects dword")
    lsupp = Flag(0, 4, 0, "LID Supported (LSUPP)")
    ios = Flag(0, 4, 1, "Index Offset Supported (IOS)")
    lidsp = Bits(0, 4, 16, 16, "LID Specific Parameter (LIDSP)")


class SupportedLogPages(Struct):
    """Supported Log Pages (LID 00h): one entry per log page identifier."""

    SIZE = 1024

    lid_support = Array(0, LidSupportedAndEffects, 256, "LID Supported and Effects, indexed by LID")

    def is_supported(self, lid: int) -> bool:
        return self.lid_support[lid].lsupp


# --------------------------------------------------------------------------
# Error Information (LID 01h), NVMe 2.0 5.16.1.2


class ErrorInformationEntry(Struct):
    """One 64-byte Error Information Log Entry (figure 205).  The log page is
    a sequence of these, most recent first."""

    SIZE = 64

    error_count = Field(0, 8, "Error Count: unique, incrementing; 0 marks an invalid entry")
    sqid = Field(8, 2, "Submission Queue ID (FFFFh if not command specific)")
    cmdid = Field(10, 2, "Command ID (FFFFh if not command specific)")
    status_field = Field(12, 2, "Status Field with the Phase Tag, as in the CQE")
    phase_tag = Flag(12, 2, 0, "Phase Tag posted for the command")
    status = Bits(12, 2, 1, 15, "Status Field without the phase tag")
    sc = Bits(12, 2, 1, 8, "Status Code (SC)")
    sct = Bits(12, 2, 9, 3, "Status Code Type (SCT)")
    crd = Bits(12, 2, 12, 2, "Command Retry Delay (CRD)")
    more = Flag(12, 2, 14, "More (M)")
    dnr = Flag(12, 2, 15, "Do Not Retry (DNR)")
    parm_error_location = Field(14, 2, "Parameter Error Location")
    pel_byte = Bits(14, 2, 0, 8, "Parameter Error Location: byte in the command (0-63)")
    pel_bit = Bits(14, 2, 8, 3, "Parameter Error Location: bit in that byte (0-7)")
    lba = Field(16, 8, "LBA: first LBA that experienced the error")
    nsid = Field(24, 4, "Namespace the error is associated with")
    vs = Field(28, 1, "Vendor Specific Information Available: a log page identifier, or 0")
    trtype = Field(29, 1, "Transport Type (TRTYPE), 0 if not transport related")
    csi = Field(30, 1, "Command Set Indicator (later revisions; reserved in 2.0)")
    opcode = Field(31, 1, "Opcode of the command (later revisions; reserved in 2.0)")
    cs = Field(32, 8, "Command Specific Information")
    trtype_spec_info = Field(40, 2, "Transport Type Specific Information")
    log_page_version = Field(63, 1, "Log Page Version (LPV)")


# --------------------------------------------------------------------------
# SMART / Health Information (LID 02h), NVMe 2.0 5.16.1.3


class CriticalWarning(IntFlag):
    """Critical Warning, byte 0 of the SMART / Health log (also the bits 7:0
    of the Asynchronous Event Configuration feature)."""

    SPARE = 1 << 0  # available spare below threshold
    TEMPERATURE = 1 << 1  # a temperature is over/under its threshold
    RELIABILITY = 1 << 2  # NVM subsystem reliability degraded
    READ_ONLY = 1 << 3  # media placed in read-only mode
    VOLATILE_BACKUP = 1 << 4  # volatile memory backup device failed
    PMR_READ_ONLY = 1 << 5  # Persistent Memory Region read-only or unreliable


class EnduranceGroupCriticalWarning(IntFlag):
    """Endurance Group Critical Warning Summary, byte 6 of the SMART log."""

    SPARE = 1 << 0
    RELIABILITY = 1 << 2
    READ_ONLY = 1 << 3


class SmartLog(Struct):
    """SMART / Health Information log page (figure 207).  Counters are
    128-bit; temperatures are in kelvins (0 = not reported)."""

    SIZE = 512

    critical_warning = Field(0, 1, "Critical Warning (see CriticalWarning)")
    cw_spare = Flag(0, 1, 0, "Critical Warning: available spare below threshold")
    cw_temperature = Flag(0, 1, 1, "Critical Warning: temperature threshold condition")
    cw_reliability = Flag(0, 1, 2, "Critical Warning: NVM subsystem reliability degraded")
    cw_read_only = Flag(0, 1, 3, "Critical Warning: media placed in read only mode")
    cw_volatile_backup = Flag(0, 1, 4, "Critical Warning: volatile memory backup failed")
    cw_pmr_read_only = Flag(0, 1, 5, "Critical Warning: Persistent Memory Region read only")
    temperature = Field(1, 2, "Composite Temperature, kelvins")
    avail_spare = Field(3, 1, "Available Spare, percent")
    spare_thresh = Field(4, 1, "Available Spare Threshold, percent")
    percent_used = Field(5, 1, "Percentage Used (may exceed 100; 255 means >= 255)")
    endu_grp_crit_warn_sumry = Field(6, 1, "Endurance Group Critical Warning Summary")
    data_units_read = Field(32, 16, "Data Units Read, thousands of 512-byte units")
    data_units_written = Field(48, 16, "Data Units Written, thousands of 512-byte units")
    host_reads = Field(64, 16, "Host Read Commands")
    host_writes = Field(80, 16, "Host Write Commands")
    ctrl_busy_time = Field(96, 16, "Controller Busy Time, minutes")
    power_cycles = Field(112, 16, "Power Cycles")
    power_on_hours = Field(128, 16, "Power On Hours")
    unsafe_shutdowns = Field(144, 16, "Unsafe Shutdowns")
    media_errors = Field(160, 16, "Media and Data Integrity Errors")
    num_err_log_entries = Field(176, 16, "Number of Error Information Log Entries")
    warning_temp_time = Field(192, 4, "Warning Composite Temperature Time, minutes")
    critical_comp_time = Field(196, 4, "Critical Composite Temperature Time, minutes")
    temp_sensor = IntArray(200, 2, 8, "Temperature Sensor 1-8, kelvins (index 0 is sensor 1)")
    thm_temp1_trans_count = Field(216, 4, "Thermal Management Temperature 1 Transition Count")
    thm_temp2_trans_count = Field(220, 4, "Thermal Management Temperature 2 Transition Count")
    thm_temp1_total_time = Field(224, 4, "Total Time For Thermal Management Temperature 1, seconds")
    thm_temp2_total_time = Field(228, 4, "Total Time For Thermal Management Temperature 2, seconds")

    @property
    def warnings(self) -> CriticalWarning:
        return CriticalWarning(self.critical_warning)

    @property
    def temperature_celsius(self) -> int | None:
        """Composite temperature in degrees Celsius (None if not reported)."""
        k = self.temperature
        return k - 273 if k else None


# --------------------------------------------------------------------------
# Firmware Slot Information (LID 03h), NVMe 2.0 5.16.1.4


class FirmwareSlotLog(Struct):
    """Firmware Slot Information log page (figure 208).  Slots are numbered
    1 to 7; an empty or unsupported slot reads as ``""`` (all zeros on the
    wire: write ``bytes(8)`` to clear one)."""

    SIZE = 512

    afi = Field(0, 1, "Active Firmware Info (AFI)")
    active_slot = Bits(0, 1, 0, 3, "AFI: slot of the currently active firmware")
    next_slot = Bits(0, 1, 4, 3, "AFI: slot activated at the next Controller Level Reset (0 = none)")
    frs1 = Str(8, 8, "Firmware Revision for Slot 1 (FRS1)")
    frs2 = Str(16, 8, "Firmware Revision for Slot 2 (FRS2)")
    frs3 = Str(24, 8, "Firmware Revision for Slot 3 (FRS3)")
    frs4 = Str(32, 8, "Firmware Revision for Slot 4 (FRS4)")
    frs5 = Str(40, 8, "Firmware Revision for Slot 5 (FRS5)")
    frs6 = Str(48, 8, "Firmware Revision for Slot 6 (FRS6)")
    frs7 = Str(56, 8, "Firmware Revision for Slot 7 (FRS7)")

    @staticmethod
    def _slot_name(slot: int) -> str:
        if not 1 <= slot <= 7:
            raise ValueError(f"firmware slot must be 1..7, not {slot}")
        return f"frs{slot}"

    def frs(self, slot: int) -> str:
        """The firmware revision in ``slot`` (1-7)."""
        return getattr(self, self._slot_name(slot))

    def set_frs(self, slot: int, revision: str | bytes) -> None:
        setattr(self, self._slot_name(slot), revision)


# --------------------------------------------------------------------------
# Changed Namespace List (LID 04h), NVMe 2.0 5.16.1.5

CHANGED_NS_LIST_OVERFLOW = 0xFFFFFFFF


class ChangedNamespaceList(Struct):
    """Changed Namespace List log page: up to 1024 NSIDs, zero-terminated.
    If more than 1024 namespaces changed, the first entry is FFFFFFFFh and
    the rest are zero."""

    SIZE = 4096
    MAX_ENTRIES = 1024

    nsid = IntArray(0, 4, 1024, "Changed namespace identifiers")

    @property
    def overflow(self) -> bool:
        """True if more than 1024 namespaces changed."""
        return self.nsid[0] == CHANGED_NS_LIST_OVERFLOW

    def nsids(self) -> list[int]:
        """The listed NSIDs, up to the first zero entry (empty on overflow)."""
        if self.overflow:
            return []
        out = []
        for n in self.nsid:
            if n == 0:
                break
            out.append(n)
        return out

    @classmethod
    def build(cls, nsids: Iterable[int]) -> "ChangedNamespaceList":
        """A list naming ``nsids`` (or the overflow marker if over 1024)."""
        ids = sorted(set(int(n) for n in nsids))
        for n in ids:
            if not 1 <= n <= 0xFFFFFFFE:
                raise ValueError(f"invalid namespace identifier {n:#x} in a changed namespace list")
        page = cls()
        page.nsid = [CHANGED_NS_LIST_OVERFLOW] if len(ids) > cls.MAX_ENTRIES else ids
        return page


# --------------------------------------------------------------------------
# Commands Supported and Effects (LID 05h), NVMe 2.0 5.16.1.6


class CommandSubmissionExecution(IntEnum):
    """Command Submission and Execution (CSE), bits 18:16 of an entry."""

    NONE = 0  # no restriction
    SINGLE_PER_NAMESPACE = 1  # only with no other command outstanding to the same namespace
    SINGLE_PER_CONTROLLER = 2  # only with no other command outstanding to any namespace


class Effects(IntFlag):
    """The bits of a Commands Supported and Effects entry, as one value
    (CSUPP, LBCC, NCC, NIC, CCC, and the CSE values at bits 18:16)."""

    CSUPP = 1 << 0
    LBCC = 1 << 1
    NCC = 1 << 2
    NIC = 1 << 3
    CCC = 1 << 4
    CSE_NS = CommandSubmissionExecution.SINGLE_PER_NAMESPACE << 16
    CSE_CTRL = CommandSubmissionExecution.SINGLE_PER_CONTROLLER << 16


class CommandScope(IntFlag):
    """Command Scope (CSP), bits 31:20 of an entry."""

    NAMESPACE = 1 << 0
    CONTROLLER = 1 << 1
    NVM_SET = 1 << 2
    ENDURANCE_GROUP = 1 << 3
    DOMAIN = 1 << 4
    NVM_SUBSYSTEM = 1 << 5


class CommandEffects(Struct):
    """Commands Supported and Effects data structure (figure 210)."""

    SIZE = 4

    value = Field(0, 4, "The whole entry")
    csupp = Flag(0, 4, 0, "Command Supported (CSUPP)")
    lbcc = Flag(0, 4, 1, "Logical Block Content Change (LBCC)")
    ncc = Flag(0, 4, 2, "Namespace Capability Change (NCC)")
    nic = Flag(0, 4, 3, "Namespace Inventory Change (NIC)")
    ccc = Flag(0, 4, 4, "Controller Capability Change (CCC)")
    cser = Bits(0, 4, 14, 2, "Command Submission and Execution Relaxations (CSER; after 2.0, Linux NVME_CMD_EFFECTS_CSER_MASK)")
    cse = Bits(0, 4, 16, 3, "Command Submission and Execution (CSE)")
    uuid_sel = Flag(0, 4, 19, "UUID Selection Supported")
    csp = Bits(0, 4, 20, 12, "Command Scope (CSP)")


class CommandsSupportedAndEffects(Struct):
    """Commands Supported and Effects log page: one entry per admin opcode
    (ACS0-ACS255) and one per I/O opcode (IOCS0-IOCS255)."""

    SIZE = 4096

    acs = Array(0, CommandEffects, 256, "Admin Command Supported entries, indexed by opcode")
    iocs = Array(1024, CommandEffects, 256, "I/O Command Supported entries, indexed by opcode")


# --------------------------------------------------------------------------
# Device Self-test (LID 06h), NVMe 2.0 5.16.1.7


class SelfTestOperation(IntEnum):
    """Self-test Code / Current Device Self-Test Operation."""

    NONE = 0x0  # no operation in progress (current operation only)
    SHORT = 0x1
    EXTENDED = 0x2
    VENDOR_SPECIFIC = 0xE


class SelfTestResultCode(IntEnum):
    """Result of the device self-test operation, DSTS bits 3:0."""

    NO_ERROR = 0x0
    ABORTED_BY_COMMAND = 0x1  # aborted by a Device Self-test command
    ABORTED_BY_RESET = 0x2  # aborted by a Controller Level Reset
    ABORTED_NS_REMOVED = 0x3  # a namespace was removed from the namespace inventory
    ABORTED_FORMAT = 0x4  # aborted by a Format NVM command
    FATAL_ERROR = 0x5
    UNKNOWN_SEGMENT_FAILED = 0x6
    KNOWN_SEGMENT_FAILED = 0x7  # the first failed segment is in Segment Number
    ABORTED_UNKNOWN = 0x8
    ABORTED_SANITIZE = 0x9
    UNUSED = 0xF  # entry does not contain a test result


class SelfTestResult(Struct):
    """Self-test Result Data Structure (figure 212), 28 bytes."""

    SIZE = 28

    dsts = Field(0, 1, "Device Self-test Status")
    result = Bits(0, 1, 0, 4, "DSTS: result of the operation (SelfTestResultCode)")
    code = Bits(0, 1, 4, 4, "DSTS: Self-test Code of the operation (SelfTestOperation)")
    seg = Field(1, 1, "Segment Number of the first failure")
    vdi = Field(2, 1, "Valid Diagnostic Information")
    nsid_valid = Flag(2, 1, 0, "VDI: Namespace Identifier field valid (NSIDV)")
    flba_valid = Flag(2, 1, 1, "VDI: Failing LBA field valid (FLBAV)")
    sct_valid = Flag(2, 1, 2, "VDI: Status Code Type field valid (SCTV)")
    sc_valid = Flag(2, 1, 3, "VDI: Status Code field valid (SCV)")
    poh = Field(4, 8, "Power On Hours at completion or abort")
    nsid = Field(12, 4, "Namespace Identifier of the failing LBA")
    flba = Field(16, 8, "Failing LBA")
    sct = Bits(24, 1, 0, 3, "Status Code Type")
    sc = Field(25, 1, "Status Code")
    vs = Raw(26, 2, "Vendor Specific")


class DeviceSelfTestLog(Struct):
    """Device Self-test log page (figure 211): the current operation and the
    20 most recent results, newest first."""

    SIZE = 564
    MAX_RESULTS = 20

    current_operation = Bits(0, 1, 0, 4, "Current Device Self-Test Operation (SelfTestOperation)")
    completion = Bits(1, 1, 0, 7, "Current Device Self-Test Completion, percent")
    result = Array(4, SelfTestResult, 20, "Self-test Result Data Structures, newest first")


# --------------------------------------------------------------------------
# Reservation Notification (LID 80h), NVMe 2.0 5.16.1.24


class ReservationNotificationType(IntEnum):
    """Reservation Notification Log Page Type (RNLPT)."""

    EMPTY = 0
    REGISTRATION_PREEMPTED = 1
    RESERVATION_RELEASED = 2
    RESERVATION_PREEMPTED = 3


class ReservationNotificationLog(Struct):
    """Reservation Notification log page (64 bytes)."""

    SIZE = 64

    lpc = Field(0, 8, "Log Page Count")
    rnlpt = Field(8, 1, "Reservation Notification Log Page Type")
    nalp = Field(9, 1, "Number of Available Log Pages")
    nsid = Field(12, 4, "Namespace ID")


# --------------------------------------------------------------------------
# Sanitize Status (LID 81h), NVMe 2.0 5.16.1.25


class SanitizeStatus(IntEnum):
    """Status of the most recent sanitize operation, SSTAT bits 2:0."""

    NEVER_SANITIZED = 0
    COMPLETED = 1
    IN_PROGRESS = 2
    FAILED = 3
    COMPLETED_NO_DEALLOCATE = 4  # completed with deallocation despite No-Deallocate After Sanitize


class SanitizeStatusLog(Struct):
    """Sanitize Status log page (figure 267 of 2.0; 512 bytes).  Estimated
    times are in seconds; FFFFFFFFh means not reported."""

    SIZE = 512
    NO_ESTIMATE = 0xFFFFFFFF

    sprog = Field(0, 2, "Sanitize Progress: numerator over 65536 (FFFFh if not in progress)")
    sstat = Field(2, 2, "Sanitize Status (SSTAT)")
    status = Bits(2, 2, 0, 3, "SSTAT: status of the most recent sanitize operation (SanitizeStatus)")
    passes = Bits(2, 2, 3, 5, "SSTAT: Overwrite Passes completed")
    global_data_erased = Flag(2, 2, 8, "SSTAT: Global Data Erased")
    scdw10 = Field(4, 4, "Sanitize Command Dword 10 Information")
    eto = Field(8, 4, "Estimated Time For Overwrite")
    etbe = Field(12, 4, "Estimated Time For Block Erase")
    etce = Field(16, 4, "Estimated Time For Crypto Erase")
    etond = Field(20, 4, "Estimated Time For Overwrite With No-Deallocate Media Modification")
    etbend = Field(24, 4, "Estimated Time For Block Erase With No-Deallocate Media Modification")
    etcend = Field(28, 4, "Estimated Time For Crypto Erase With No-Deallocate Media Modification")


# --------------------------------------------------------------------------
# Discovery (LID 70h), NVMe 2.0 5.16.1.23

NVME_DISC_SUBSYS_NAME = DISCOVERY_NQN  # the well-known discovery NQN, written once in fabrics.py
DISCOVERY_LOG_HEADER_SIZE = 1024
DISCOVERY_LOG_ENTRY_SIZE = 1024


class TransportType(IntEnum):
    """Transport Type (TRTYPE)."""

    RDMA = 1
    FC = 2
    TCP = 3
    LOOP = 0xFE  # intra-host transport (loopback), reserved for host usage


class AddressFamily(IntEnum):
    """Address Family (ADRFAM)."""

    PCI = 0  # Linux NVMF_ADDR_FAMILY_PCI
    IPV4 = 1
    IPV6 = 2
    IB = 3
    FC = 4
    LOOP = 0xFE  # intra-host transport


class SubsystemType(IntEnum):
    """Subsystem Type (SUBTYPE) of a discovery log entry."""

    REFERRAL = 1  # another Discovery subsystem
    NVM = 2  # an NVM subsystem
    CURRENT_DISCOVERY = 3  # the Discovery subsystem answering the Get Log Page


class SecureChannel(IntEnum):
    """TREQ bits 1:0, Secure Channel requirement."""

    NOT_SPECIFIED = 0
    REQUIRED = 1
    NOT_REQUIRED = 2


class DiscoveryEntryFlags(IntFlag):
    """Entry Flags (EFLAGS)."""

    DUPRETINFO = 1 << 0  # Duplicate Returned Information
    EPCSD = 1 << 1  # Explicit Persistent Connection Support for Discovery
    NCC = 1 << 2  # No CDC Connectivity (later revisions; Linux NVMF_DISC_EFLAGS_NCC)


class TcpSecurityType(IntEnum):
    """TSAS Security Type (SECTYPE) for NVMe/TCP."""

    NONE = 0
    TLS12 = 1
    TLS13 = 2


class DiscoveryLogHeader(Struct):
    """The 1024-byte header of the Discovery log page."""

    SIZE = DISCOVERY_LOG_HEADER_SIZE

    genctr = Field(0, 8, "Generation Counter (GENCTR)")
    numrec = Field(8, 8, "Number of Records (NUMREC)")
    recfmt = Field(16, 2, "Record Format (RECFMT), 0")


class DiscoveryLogEntry(Struct):
    """One 1024-byte Discovery Log Page Entry."""

    SIZE = DISCOVERY_LOG_ENTRY_SIZE

    trtype = Field(0, 1, "Transport Type (TRTYPE)")
    adrfam = Field(1, 1, "Address Family (ADRFAM)")
    subtype = Field(2, 1, "Subsystem Type (SUBTYPE)")
    treq = Field(3, 1, "Transport Requirements (TREQ)")
    secure_channel = Bits(3, 1, 0, 2, "TREQ: Secure Channel requirement (SecureChannel)")
    disable_sqflow = Flag(3, 1, 2, "TREQ: SQ flow control disable supported")
    portid = Field(4, 2, "Port ID (PORTID)")
    cntlid = Field(6, 2, "Controller ID (CNTLID): FFFFh dynamic, FFFEh static (remember the Connect answer)")
    asqsz = Field(8, 2, "Admin Max SQ Size (ASQSZ)")
    eflags = Field(10, 2, "Entry Flags (EFLAGS)")
    trsvcid = Str(32, 32, "Transport Service Identifier (TRSVCID), e.g. the TCP port", pad=b" ")
    subnqn = Str(256, 256, "NVM Subsystem Qualified Name (SUBNQN)", pad=b"\0")
    traddr = Str(512, 256, "Transport Address (TRADDR)", pad=b" ")
    tsas = Raw(768, 256, "Transport Specific Address Subtype (TSAS)")
    tcp_sectype = Field(768, 1, "TSAS for TCP: Security Type (SECTYPE)")
    rdma_qptype = Field(768, 1, "TSAS for RDMA: QP Service Type (RDMA_QPTYPE)")
    rdma_prtype = Field(769, 1, "TSAS for RDMA: Provider Type (RDMA_PRTYPE)")
    rdma_cms = Field(770, 1, "TSAS for RDMA: Connection Management Service (RDMA_CMS)")
    rdma_pkey = Field(776, 2, "TSAS for RDMA: Partition Key (RDMA_PKEY)")


def discovery_log_size(numrec: int) -> int:
    """Bytes of a discovery log page holding ``numrec`` entries."""
    if numrec < 0:
        raise ValueError("the number of records cannot be negative")
    return DISCOVERY_LOG_HEADER_SIZE + numrec * DISCOVERY_LOG_ENTRY_SIZE


def discovery_log_entries(buf: Any, numrec: int | None = None) -> list[DiscoveryLogEntry]:
    """Views of the entries of the discovery log page in ``buf`` (no copy).

    ``numrec`` defaults to the header's NUMREC.  A host may read only part
    of a large log, so only entries wholly inside ``buf`` are returned."""
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    header = DiscoveryLogHeader.view(mv)
    count = header.numrec if numrec is None else numrec
    fit = (len(mv) - DISCOVERY_LOG_HEADER_SIZE) // DISCOVERY_LOG_ENTRY_SIZE
    return [
        DiscoveryLogEntry.view(mv, DISCOVERY_LOG_HEADER_SIZE + i * DISCOVERY_LOG_ENTRY_SIZE)
        for i in range(min(count, fit))
    ]


def build_discovery_log(entries: Iterable[Any], genctr: int = 0, recfmt: int = 0) -> bytearray:
    """A whole discovery log page: header (NUMREC = number of entries) and
    the entries (``DiscoveryLogEntry`` or 1024 raw bytes each)."""
    items = list(entries)
    out = bytearray(discovery_log_size(len(items)))
    header = DiscoveryLogHeader.view(out)
    header.genctr = genctr
    header.numrec = len(items)
    header.recfmt = recfmt
    for i, entry in enumerate(items):
        data = entry.raw if isinstance(entry, Struct) else memoryview(entry).cast("B")
        if len(data) != DISCOVERY_LOG_ENTRY_SIZE:
            raise ValueError(f"discovery log entry {i} is {len(data)} bytes, not {DISCOVERY_LOG_ENTRY_SIZE}")
        off = DISCOVERY_LOG_HEADER_SIZE + i * DISCOVERY_LOG_ENTRY_SIZE
        out[off : off + DISCOVERY_LOG_ENTRY_SIZE] = data
    return out
