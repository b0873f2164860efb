"""Identify data structures (NVMe 2.0 base spec 5.17.2 "Identify Data
Structures" and NVM Command Set spec 1.0 4.1.5 "I/O Command Set specific
Identify data structures").

Every structure the Identify command returns is 4096 bytes
(:data:`IDENTIFY_DATA_SIZE`).  The CNS value that selects each one is given
in its docstring (the CNS enumeration itself lives in ``spec/admin.py``):

=========================================  ===============================
CNS 00h (CSI 00h)                          :class:`IdentifyNamespace`
CNS 01h                                    :class:`IdentifyController`
CNS 02h, 07h, 10h, 1Ah                     :class:`NamespaceList`
CNS 03h                                    Namespace Identification
                                           Descriptor list (functions)
CNS 06h, CSI 00h                           :class:`IdentifyControllerNvm`
CNS 08h                                    :class:`IdentifyNamespaceIndependent`
CNS 12h, 13h; Namespace Attachment data    :class:`ControllerList`
=========================================  ===============================

Each structure names its whole fields once at their byte offsets; the
commonly decoded bits of a field are Bits/Flag fields next to it (``oacs``
and ``oacs_fw``, ``sqes`` and ``sqes_min``, ...).  Byte ranges the
specification reserves are listed in each class's ``RESERVED`` tuple of
``(offset, length)`` so that fields plus reserved ranges tile the structure
exactly (the tests check this).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Any, ClassVar, Iterable, Iterator, NamedTuple

from .layout import Array, Bits, Field, Flag, IntArray, Raw, Str, Struct

__all__ = [
    "IDENTIFY_DATA_SIZE",
    "NQN_SIZE",
    "POWER_STATE_COUNT",
    "LBA_FORMAT_COUNT",
    "NS_LIST_MAX",
    "CTRL_LIST_MAX",
    "NSID_BROADCAST",
    # coded values
    "ControllerType",
    "Cmic",
    "Oaes",
    "Ctratt",
    "Oacs",
    "Lpa",
    "Oncs",
    "Fna",
    "SglSupport",
    "VwcFlush",
    "Sanicap",
    "Anacap",
    "Nwpc",
    "PowerScale",
    "Nsfeat",
    "MetadataCapabilities",
    "Dpc",
    "Rescap",
    "DeallocReadBehavior",
    "RelativePerformance",
    "NidType",
    "NID_LENGTHS",
    # structures
    "PowerStateDescriptor",
    "IdentifyController",
    "LbaFormat",
    "IdentifyNamespace",
    "IdentifyControllerNvm",
    "IdentifyNamespaceIndependent",
    "IoCommandSetVector",
    "IOCS_COMBINATION_COUNT",
    "IdentifyIoCommandSet",
    "NamespaceList",
    "ControllerList",
    "NsIdDescriptor",
    "NsIdEntry",
    "encode_ns_id_descriptors",
    "iter_ns_id_descriptors",
    "decode_ns_id_descriptors",
]

IDENTIFY_DATA_SIZE = 4096
NQN_SIZE = 256
POWER_STATE_COUNT = 32
LBA_FORMAT_COUNT = 64
NS_LIST_MAX = 1024  # NSIDs in a namespace list (4096 / 4)
CTRL_LIST_MAX = 2047  # controller identifiers after the 2-byte count
IOCS_COMBINATION_COUNT = 512  # I/O Command Set Combinations in CNS 1Ch (4096 / 8)
NSID_BROADCAST = 0xFFFFFFFF


# --------------------------------------------------------------------------
# Coded values of Identify Controller
# --------------------------------------------------------------------------


class ControllerType(IntEnum):
    """CNTRLTYPE, byte 111 (0 means not reported, pre-1.4 controllers)."""

    NOT_REPORTED = 0
    IO = 1
    DISCOVERY = 2
    ADMIN = 3


class Cmic(IntFlag):
    """Controller Multi-Path I/O and Namespace Sharing Capabilities, byte 76."""

    MULTI_PORT = 1 << 0
    MULTI_CTRL = 1 << 1
    SRIOV = 1 << 2  # controller is an SR-IOV virtual function
    ANA_REPORTING = 1 << 3


class Oaes(IntFlag):
    """Optional Asynchronous Events Supported, bytes 95:92."""

    NS_ATTR = 1 << 8
    FW_ACTIVATION = 1 << 9
    ANA_CHANGE = 1 << 11
    PLEA_CHANGE = 1 << 12  # Predictable Latency Event Aggregate Log Change
    LBA_STATUS = 1 << 13
    EGEA_CHANGE = 1 << 14  # Endurance Group Event Aggregate Log Change
    NORMAL_SHUTDOWN = 1 << 15  # Normal NVM Subsystem Shutdown
    ZONE_DESC_CHANGE = 1 << 27  # Zoned Namespace Command Set
    DISCOVERY_LOG_CHANGE = 1 << 31  # NVMe over Fabrics discovery controllers


class Ctratt(IntFlag):
    """Controller Attributes, bytes 99:96."""

    HOST_ID_128 = 1 << 0
    NOPSPM = 1 << 1  # Non-Operational Power State Permissive Mode
    NVM_SETS = 1 << 2
    READ_RECOVERY_LEVELS = 1 << 3
    ENDURANCE_GROUPS = 1 << 4
    PREDICTABLE_LATENCY = 1 << 5
    TBKAS = 1 << 6  # Traffic Based Keep Alive
    NS_GRANULARITY = 1 << 7
    SQ_ASSOCIATIONS = 1 << 8
    UUID_LIST = 1 << 9
    MDS = 1 << 10  # Multi-Domain Subsystem
    FIXED_CAPACITY = 1 << 11
    VARIABLE_CAPACITY = 1 << 12
    DELETE_ENDGRP = 1 << 13
    DELETE_NVM_SET = 1 << 14
    ELBAS = 1 << 15  # Extended LBA Formats Supported


class Oacs(IntFlag):
    """Optional Admin Command Support, bytes 257:256."""

    SECURITY = 1 << 0
    FORMAT = 1 << 1
    FW = 1 << 2  # Firmware Commit / Firmware Image Download
    NS_MGMT = 1 << 3  # Namespace Management and Attachment
    SELF_TEST = 1 << 4
    DIRECTIVES = 1 << 5
    NVME_MI = 1 << 6
    VIRT_MGMT = 1 << 7
    DBBUF_CONFIG = 1 << 8
    LBA_STATUS = 1 << 9
    LOCKDOWN = 1 << 10  # Command and Feature Lockdown


class Lpa(IntFlag):
    """Log Page Attributes, byte 261."""

    SMART_PER_NS = 1 << 0
    CMD_EFFECTS = 1 << 1
    EXTENDED_DATA = 1 << 2  # extended data for Get Log Page (NUMDU, LPOU)
    TELEMETRY = 1 << 3
    PERSISTENT_EVENT = 1 << 4
    SUPPORTED_LOGS = 1 << 5  # Supported Log Pages log page
    TELEMETRY_DA4 = 1 << 6  # Telemetry Data Area 4


class Oncs(IntFlag):
    """Optional NVM Command Support, bytes 521:520."""

    COMPARE = 1 << 0
    WRITE_UNCORRECTABLE = 1 << 1
    DSM = 1 << 2
    WRITE_ZEROES = 1 << 3
    SAVE_SELECT = 1 << 4  # Save in Set Features, Select in Get Features
    RESERVATIONS = 1 << 5
    TIMESTAMP = 1 << 6
    VERIFY = 1 << 7
    COPY = 1 << 8


class Fna(IntFlag):
    """Format NVM Attributes, byte 524."""

    FORMAT_ALL_NS = 1 << 0
    SECURE_ERASE_ALL_NS = 1 << 1
    CRYPTO_ERASE = 1 << 2
    NO_BROADCAST_NSID = 1 << 3  # FNVMBS: set = Format NVM with NSID FFFFFFFFh not supported


class SglSupport(IntEnum):
    """SGLS bits 1:0: whether (and with what alignment) SGLs are supported."""

    NOT_SUPPORTED = 0
    SUPPORTED = 1  # no alignment or granularity requirement for data blocks
    DWORD_ALIGNED = 2  # data blocks need dword alignment and granularity


class VwcFlush(IntEnum):
    """VWC bits 2:1: Flush command behaviour with NSID FFFFFFFFh."""

    NOT_REPORTED = 0
    BROADCAST_NOT_SUPPORTED = 2
    BROADCAST_SUPPORTED = 3


class Sanicap(IntFlag):
    """Sanitize Capabilities, bytes 331:328 (NODMMAS is the 2-bit field 31:30)."""

    CRYPTO_ERASE = 1 << 0
    BLOCK_ERASE = 1 << 1
    OVERWRITE = 1 << 2
    NDI = 1 << 29  # No-Deallocate Inhibited


class Anacap(IntFlag):
    """Asymmetric Namespace Access Capabilities, byte 343."""

    OPTIMIZED = 1 << 0
    NON_OPTIMIZED = 1 << 1
    INACCESSIBLE = 1 << 2
    PERSISTENT_LOSS = 1 << 3
    CHANGE = 1 << 4
    GRPID_NO_CHANGE = 1 << 6  # ANAGRPID does not change while attached
    GRPID_NONZERO_MGMT = 1 << 7  # non-zero ANAGRPID in Namespace Management


class Nwpc(IntFlag):
    """Namespace Write Protection Capabilities, byte 531."""

    WRITE_PROTECT = 1 << 0
    UNTIL_POWER_CYCLE = 1 << 1
    PERMANENT = 1 << 2


class PowerScale(IntEnum):
    """IPS / APS of a power state descriptor."""

    NOT_REPORTED = 0
    WATT_0_0001 = 1  # 0.0001 W units
    WATT_0_01 = 2  # 0.01 W units


_SCALE_WATTS = {PowerScale.WATT_0_0001: 0.0001, PowerScale.WATT_0_01: 0.01}


# --------------------------------------------------------------------------
# Power State Descriptor (base spec figure "Power State Descriptor Data
# Structure"), 32 entries at byte 2048 of Identify Controller
# --------------------------------------------------------------------------


class PowerStateDescriptor(Struct):
    """One 32-byte power state descriptor (PSD0..PSD31)."""

    SIZE = 32
    RESERVED: ClassVar[tuple[tuple[int, int], ...]] = ((2, 1), (19, 1), (23, 9))

    mp = Field(0, 2, "Maximum Power (MP), in 0.01 W or, with MXPS, 0.0001 W")
    flags = Field(3, 1, "Byte 3: MXPS (bit 0) and NOPS (bit 1)")
    mxps = Flag(3, 1, 0, "Max Power Scale (MXPS): MP is in 0.0001 W units")
    nops = Flag(3, 1, 1, "Non-Operational State (NOPS): no I/O in this state")
    enlat = Field(4, 4, "Entry Latency (ENLAT), microseconds")
    exlat = Field(8, 4, "Exit Latency (EXLAT), microseconds")
    rrt = Bits(12, 1, 0, 5, "Relative Read Throughput (RRT)")
    rrl = Bits(13, 1, 0, 5, "Relative Read Latency (RRL)")
    rwt = Bits(14, 1, 0, 5, "Relative Write Throughput (RWT)")
    rwl = Bits(15, 1, 0, 5, "Relative Write Latency (RWL)")
    idlp = Field(16, 2, "Idle Power (IDLP)")
    ips = Bits(18, 1, 6, 2, "Idle Power Scale (IPS), see PowerScale")
    actp = Field(20, 2, "Active Power (ACTP)")
    apws = Field(22, 1, "Byte 22: APW (bits 2:0) and APS (bits 7:6)")
    apw = Bits(22, 1, 0, 3, "Active Power Workload (APW)")
    aps = Bits(22, 1, 6, 2, "Active Power Scale (APS), see PowerScale")

    @property
    def max_power_watts(self) -> float:
        """MP in watts (0.0 when not reported)."""
        return self.mp * (0.0001 if self.mxps else 0.01)

    @property
    def idle_power_watts(self) -> float | None:
        """IDLP in watts, or ``None`` when IPS says it is not reported."""
        scale = _SCALE_WATTS.get(self.ips)
        return None if scale is None else self.idlp * scale

    @property
    def active_power_watts(self) -> float | None:
        """ACTP in watts, or ``None`` when APS says it is not reported."""
        scale = _SCALE_WATTS.get(self.aps)
        return None if scale is None else self.actp * scale


# --------------------------------------------------------------------------
# Identify Controller data structure (CNS 01h)
# --------------------------------------------------------------------------


class IdentifyController(Struct):
    """Identify Controller data structure (CNS 01h), 4096 bytes.

    Text fields (SN, MN, FR) are ASCII padded with spaces; SUBNQN is UTF-8
    padded with NULs.  128-bit capacities (TNVMCAP, UNVMCAP, MEGCAP, MAXDNA)
    read and write as Python ints."""

    SIZE = IDENTIFY_DATA_SIZE
    RESERVED: ClassVar[tuple[tuple[int, int], ...]] = (
        (102, 9),
        (134, 119),  # 240..252 belong to NVMe-MI but are reserved here
        (358, 10),
        (384, 128),
        (564, 204),
        (1024, 768),
        (1807, 241),
    )

    # -- Controller Capabilities and Features (bytes 0..255) --
    vid = Field(0, 2, "PCI Vendor ID (VID)")
    ssvid = Field(2, 2, "PCI Subsystem Vendor ID (SSVID)")
    sn = Str(4, 20, "Serial Number (SN)")
    mn = Str(24, 40, "Model Number (MN)")
    fr = Str(64, 8, "Firmware Revision (FR)")
    rab = Field(72, 1, "Recommended Arbitration Burst (RAB), power of two")
    ieee = Field(73, 3, "IEEE OUI Identifier (IEEE), least significant byte first")
    cmic = Field(76, 1, "Controller Multi-Path I/O and Namespace Sharing Capabilities (CMIC)")
    cmic_multi_port = Flag(76, 1, 0, "CMIC: NVM subsystem may have more than one port")
    cmic_multi_ctrl = Flag(76, 1, 1, "CMIC: NVM subsystem may have two or more controllers")
    cmic_sriov = Flag(76, 1, 2, "CMIC: controller is an SR-IOV virtual function")
    cmic_ana = Flag(76, 1, 3, "CMIC: Asymmetric Namespace Access reporting supported")
    mdts = Field(77, 1, "Maximum Data Transfer Size (MDTS), power of two of CAP.MPSMIN; 0 = no limit")
    cntlid = Field(78, 2, "Controller ID (CNTLID)")
    ver = Field(80, 4, "Version (VER), same layout as the VS register")
    ver_ter = Bits(80, 4, 0, 8, "VER: tertiary version")
    ver_mnr = Bits(80, 4, 8, 8, "VER: minor version")
    ver_mjr = Bits(80, 4, 16, 16, "VER: major version")
    rtd3r = Field(84, 4, "RTD3 Resume Latency (RTD3R), microseconds")
    rtd3e = Field(88, 4, "RTD3 Entry Latency (RTD3E), microseconds")
    oaes = Field(92, 4, "Optional Asynchronous Events Supported (OAES), see Oaes")
    ctratt = Field(96, 4, "Controller Attributes (CTRATT), see Ctratt")
    rrls = Field(100, 2, "Read Recovery Levels Supported (RRLS)")
    cntrltype = Field(111, 1, "Controller Type (CNTRLTYPE), see ControllerType")
    fguid = Raw(112, 16, "FRU Globally Unique Identifier (FGUID)")
    crdt1 = Field(128, 2, "Command Retry Delay Time 1 (CRDT1), 100 ms units")
    crdt2 = Field(130, 2, "Command Retry Delay Time 2 (CRDT2), 100 ms units")
    crdt3 = Field(132, 2, "Command Retry Delay Time 3 (CRDT3), 100 ms units")
    nvmsr = Field(253, 1, "NVM Subsystem Report (NVMSR)")
    vwci = Field(254, 1, "VPD Write Cycle Information (VWCI)")
    mec = Field(255, 1, "Management Endpoint Capabilities (MEC)")

    # -- Admin Command Set Attributes & Optional Controller Capabilities --
    oacs = Field(256, 2, "Optional Admin Command Support (OACS), see Oacs")
    oacs_security = Flag(256, 2, 0, "OACS: Security Send/Receive")
    oacs_format = Flag(256, 2, 1, "OACS: Format NVM")
    oacs_fw = Flag(256, 2, 2, "OACS: Firmware Commit / Image Download")
    oacs_ns_mgmt = Flag(256, 2, 3, "OACS: Namespace Management")
    oacs_self_test = Flag(256, 2, 4, "OACS: Device Self-test")
    oacs_directives = Flag(256, 2, 5, "OACS: Directives")
    oacs_nvme_mi = Flag(256, 2, 6, "OACS: NVMe-MI Send/Receive")
    oacs_virt_mgmt = Flag(256, 2, 7, "OACS: Virtualization Management")
    oacs_dbbuf = Flag(256, 2, 8, "OACS: Doorbell Buffer Config")
    oacs_lba_status = Flag(256, 2, 9, "OACS: Get LBA Status")
    oacs_lockdown = Flag(256, 2, 10, "OACS: Command and Feature Lockdown")
    acl = Field(258, 1, "Abort Command Limit (ACL), 0's based")
    aerl = Field(259, 1, "Asynchronous Event Request Limit (AERL), 0's based")
    frmw = Field(260, 1, "Firmware Updates (FRMW)")
    frmw_slot1_ro = Flag(260, 1, 0, "FRMW: firmware slot 1 is read only")
    frmw_slots = Bits(260, 1, 1, 3, "FRMW: number of firmware slots (1..7)")
    frmw_no_reset = Flag(260, 1, 4, "FRMW: activation without reset supported")
    frmw_mud = Flag(260, 1, 5, "FRMW: Multiple Update Detection supported")
    lpa = Field(261, 1, "Log Page Attributes (LPA), see Lpa")
    lpa_smart_per_ns = Flag(261, 1, 0, "LPA: SMART / Health log per namespace")
    lpa_cmd_effects = Flag(261, 1, 1, "LPA: Commands Supported and Effects log")
    lpa_extended = Flag(261, 1, 2, "LPA: extended data for Get Log Page")
    lpa_telemetry = Flag(261, 1, 3, "LPA: Telemetry Host-Initiated / Controller-Initiated logs")
    lpa_persistent_event = Flag(261, 1, 4, "LPA: Persistent Event log")
    elpe = Field(262, 1, "Error Log Page Entries (ELPE), 0's based")
    npss = Field(263, 1, "Number of Power States Support (NPSS), 0's based")
    avscc = Field(264, 1, "Admin Vendor Specific Command Configuration (AVSCC)")
    apsta = Field(265, 1, "Autonomous Power State Transition Attributes (APSTA)")
    apsta_apst = Flag(265, 1, 0, "APSTA: autonomous power state transitions supported")
    wctemp = Field(266, 2, "Warning Composite Temperature Threshold (WCTEMP), kelvin")
    cctemp = Field(268, 2, "Critical Composite Temperature Threshold (CCTEMP), kelvin")
    mtfa = Field(270, 2, "Maximum Time for Firmware Activation (MTFA), 100 ms units")
    hmpre = Field(272, 4, "Host Memory Buffer Preferred Size (HMPRE), 4 KiB units")
    hmmin = Field(276, 4, "Host Memory Buffer Minimum Size (HMMIN), 4 KiB units")
    tnvmcap = Field(280, 16, "Total NVM Capacity (TNVMCAP), bytes")
    unvmcap = Field(296, 16, "Unallocated NVM Capacity (UNVMCAP), bytes")
    rpmbs = Field(312, 4, "Replay Protected Memory Block Support (RPMBS)")
    edstt = Field(316, 2, "Extended Device Self-test Time (EDSTT), minutes")
    dsto = Field(318, 1, "Device Self-test Options (DSTO)")
    fwug = Field(319, 1, "Firmware Update Granularity (FWUG), 4 KiB units")
    kas = Field(320, 2, "Keep Alive Support (KAS), 100 ms units; 0 = not supported")
    hctma = Field(322, 2, "Host Controlled Thermal Management Attributes (HCTMA)")
    mntmt = Field(324, 2, "Minimum Thermal Management Temperature (MNTMT), kelvin")
    mxtmt = Field(326, 2, "Maximum Thermal Management Temperature (MXTMT), kelvin")
    sanicap = Field(328, 4, "Sanitize Capabilities (SANICAP), see Sanicap")
    sanicap_ces = Flag(328, 4, 0, "SANICAP: Crypto Erase supported")
    sanicap_bes = Flag(328, 4, 1, "SANICAP: Block Erase supported")
    sanicap_ows = Flag(328, 4, 2, "SANICAP: Overwrite supported")
    sanicap_ndi = Flag(328, 4, 29, "SANICAP: No-Deallocate Inhibited")
    sanicap_nodmmas = Bits(328, 4, 30, 2, "SANICAP: No-Deallocate Modifies Media After Sanitize")
    hmminds = Field(332, 4, "Host Memory Buffer Minimum Descriptor Entry Size (HMMINDS), 4 KiB units")
    hmmaxd = Field(336, 2, "Host Memory Maximum Descriptors Entries (HMMAXD)")
    nsetidmax = Field(338, 2, "NVM Set Identifier Maximum (NSETIDMAX)")
    endgidmax = Field(340, 2, "Endurance Group Identifier Maximum (ENDGIDMAX)")
    anatt = Field(342, 1, "ANA Transition Time (ANATT), seconds")
    anacap = Field(343, 1, "Asymmetric Namespace Access Capabilities (ANACAP), see Anacap")
    anagrpmax = Field(344, 4, "ANA Group Identifier Maximum (ANAGRPMAX)")
    nanagrpid = Field(348, 4, "Number of ANA Group Identifiers (NANAGRPID)")
    pels = Field(352, 4, "Persistent Event Log Size (PELS), 64 KiB units")
    domainid = Field(356, 2, "Domain Identifier (DOMAINID)")
    megcap = Field(368, 16, "Max Endurance Group Capacity (MEGCAP), bytes")

    # -- NVM Command Set Attributes (bytes 512..767) --
    sqes = Field(512, 1, "Submission Queue Entry Size (SQES)")
    sqes_min = Bits(512, 1, 0, 4, "SQES: required entry size, power of two (6 = 64 bytes)")
    sqes_max = Bits(512, 1, 4, 4, "SQES: maximum entry size, power of two")
    cqes = Field(513, 1, "Completion Queue Entry Size (CQES)")
    cqes_min = Bits(513, 1, 0, 4, "CQES: required entry size, power of two (4 = 16 bytes)")
    cqes_max = Bits(513, 1, 4, 4, "CQES: maximum entry size, power of two")
    maxcmd = Field(514, 2, "Maximum Outstanding Commands (MAXCMD), fabrics")
    nn = Field(516, 4, "Number of Namespaces (NN): the largest valid NSID")
    oncs = Field(520, 2, "Optional NVM Command Support (ONCS), see Oncs")
    oncs_compare = Flag(520, 2, 0, "ONCS: Compare")
    oncs_write_uncor = Flag(520, 2, 1, "ONCS: Write Uncorrectable")
    oncs_dsm = Flag(520, 2, 2, "ONCS: Dataset Management")
    oncs_write_zeroes = Flag(520, 2, 3, "ONCS: Write Zeroes")
    oncs_save_select = Flag(520, 2, 4, "ONCS: Save / Select fields of Set/Get Features")
    oncs_reservations = Flag(520, 2, 5, "ONCS: Reservations")
    oncs_timestamp = Flag(520, 2, 6, "ONCS: Timestamp feature")
    oncs_verify = Flag(520, 2, 7, "ONCS: Verify")
    oncs_copy = Flag(520, 2, 8, "ONCS: Copy")
    fuses = Field(522, 2, "Fused Operation Support (FUSES)")
    fuses_compare_write = Flag(522, 2, 0, "FUSES: Compare and Write fused operation")
    fna = Field(524, 1, "Format NVM Attributes (FNA), see Fna")
    fna_format_all = Flag(524, 1, 0, "FNA: a format applies to all namespaces")
    fna_sec_erase_all = Flag(524, 1, 1, "FNA: a secure erase applies to all namespaces")
    fna_crypto_erase = Flag(524, 1, 2, "FNA: cryptographic erase supported")
    fna_no_broadcast = Flag(524, 1, 3, "FNA: set when Format NVM with NSID FFFFFFFFh is NOT supported (FNVMBS)")
    vwc = Field(525, 1, "Volatile Write Cache (VWC)")
    vwc_present = Flag(525, 1, 0, "VWC: a volatile write cache is present")
    vwc_flush = Bits(525, 1, 1, 2, "VWC: Flush with NSID FFFFFFFFh, see VwcFlush")
    awun = Field(526, 2, "Atomic Write Unit Normal (AWUN), logical blocks, 0's based")
    awupf = Field(528, 2, "Atomic Write Unit Power Fail (AWUPF), logical blocks, 0's based")
    icsvscc = Field(530, 1, "I/O Command Set Vendor Specific Command Configuration (ICSVSCC)")
    nwpc = Field(531, 1, "Namespace Write Protection Capabilities (NWPC), see Nwpc")
    acwu = Field(532, 2, "Atomic Compare & Write Unit (ACWU), logical blocks, 0's based")
    ocfs = Field(534, 2, "Optional Copy Formats Supported (OCFS)")
    sgls = Field(536, 4, "SGL Support (SGLS)")
    sgls_support = Bits(536, 4, 0, 2, "SGLS: SGL support and alignment, see SglSupport")
    sgls_keyed = Flag(536, 4, 2, "SGLS: Keyed SGL Data Block descriptor")
    sgls_bit_bucket = Flag(536, 4, 16, "SGLS: SGL Bit Bucket descriptor")
    sgls_mptr_contig = Flag(536, 4, 17, "SGLS: byte aligned contiguous metadata buffer")
    sgls_oversize = Flag(536, 4, 18, "SGLS: SGL longer than the data to transfer")
    sgls_mptr_sgl = Flag(536, 4, 19, "SGLS: MPTR holding an SGL descriptor")
    sgls_offset = Flag(536, 4, 20, "SGLS: Address field as an offset")
    sgls_transport = Flag(536, 4, 21, "SGLS: Transport SGL Data Block descriptor")
    mnan = Field(540, 4, "Maximum Number of Allowed Namespaces (MNAN)")
    maxdna = Field(544, 16, "Maximum Domain Namespace Attachments (MAXDNA)")
    maxcna = Field(560, 4, "Maximum I/O Controller Namespace Attachments (MAXCNA)")
    subnqn = Str(768, NQN_SIZE, "NVM Subsystem NVMe Qualified Name (SUBNQN)", pad=b"\0", encoding="utf-8")

    # -- NVMe over Fabrics attributes (bytes 1792..2047) --
    ioccsz = Field(1792, 4, "I/O Queue Command Capsule Supported Size (IOCCSZ), 16-byte units")
    iorcsz = Field(1796, 4, "I/O Queue Response Capsule Supported Size (IORCSZ), 16-byte units")
    icdoff = Field(1800, 2, "In Capsule Data Offset (ICDOFF), 16-byte units")
    fcatt = Field(1802, 1, "Fabrics Controller Attributes (FCATT)")
    fcatt_static = Flag(1802, 1, 0, "FCATT: static controller model (dynamic when clear)")
    msdbd = Field(1803, 1, "Maximum SGL Data Block Descriptors (MSDBD); 0 = no limit")
    ofcs = Field(1804, 2, "Optional Fabric Commands Support (OFCS)")
    ofcs_disconnect = Flag(1804, 2, 0, "OFCS: Disconnect command supported")
    dctype = Field(1806, 1, "Discovery Controller Type (DCTYPE, TP 8010; reserved before)")

    # -- Power State Descriptors and Vendor Specific --
    psd = Array(2048, PowerStateDescriptor, POWER_STATE_COUNT, "Power State Descriptors (PSD0..PSD31)")
    vs = Raw(3072, 1024, "Vendor Specific (VS)")

    def power_states(self) -> list[PowerStateDescriptor]:
        """The descriptors NPSS says are valid (PSD0..PSD[NPSS])."""
        return self.psd[: self.npss + 1]


# --------------------------------------------------------------------------
# Identify Namespace data structure, NVM Command Set (CNS 00h)
# --------------------------------------------------------------------------


class Nsfeat(IntFlag):
    """Namespace Features (NSFEAT), byte 24."""

    THIN_PROVISIONING = 1 << 0
    NS_ATOMICS = 1 << 1  # NAWUN, NAWUPF, NACWU are valid
    DULBE = 1 << 2  # Deallocated or Unwritten Logical Block error
    UID_REUSE = 1 << 3  # non-zero NGUID / EUI64 are never reused
    OPT_PERF = 1 << 4  # NPWG, NPWA, NPDG, NPDA, NOWS are valid


class MetadataCapabilities(IntFlag):
    """Metadata Capabilities (MC), byte 27."""

    EXTENDED_LBA = 1 << 0  # metadata at the end of each logical block
    SEPARATE_BUFFER = 1 << 1  # metadata in the buffer MPTR points to


class Dpc(IntFlag):
    """End-to-end Data Protection Capabilities (DPC), byte 28."""

    TYPE1 = 1 << 0
    TYPE2 = 1 << 1
    TYPE3 = 1 << 2
    FIRST_8 = 1 << 3  # PI in the first eight bytes of metadata
    LAST_8 = 1 << 4  # PI in the last eight bytes of metadata


class Rescap(IntFlag):
    """Reservation Capabilities (RESCAP), byte 31."""

    PTPL = 1 << 0  # Persist Through Power Loss
    WRITE_EXCLUSIVE = 1 << 1
    EXCLUSIVE_ACCESS = 1 << 2
    WRITE_EXCLUSIVE_REG_ONLY = 1 << 3
    EXCLUSIVE_ACCESS_REG_ONLY = 1 << 4
    WRITE_EXCLUSIVE_ALL_REGS = 1 << 5
    EXCLUSIVE_ACCESS_ALL_REGS = 1 << 6
    IEKEY = 1 << 7  # Ignore Existing Key as defined since revision 1.3


class DeallocReadBehavior(IntEnum):
    """DLFEAT bits 2:0: what reading a deallocated logical block returns."""

    NOT_REPORTED = 0
    ZEROES = 1
    ONES = 2  # every byte FFh


class RelativePerformance(IntEnum):
    """RP, bits 1:0 of byte 3 of an LBA Format."""

    BEST = 0
    BETTER = 1
    GOOD = 2
    DEGRADED = 3


class LbaFormat(Struct):
    """LBA Format data structure (LBAF0..LBAF63), 4 bytes."""

    SIZE = 4
    RESERVED: ClassVar[tuple[tuple[int, int], ...]] = ()

    ms = Field(0, 2, "Metadata Size (MS), bytes per logical block")
    lbads = Field(2, 1, "LBA Data Size (LBADS), power of two; 0 = format not available")
    rp = Bits(3, 1, 0, 2, "Relative Performance (RP), see RelativePerformance")

    @property
    def block_size(self) -> int:
        """The logical block data size in bytes, ``1 << LBADS`` (0 when LBADS is 0)."""
        lbads = self.lbads
        return 1 << lbads if lbads else 0


class IdentifyNamespace(Struct):
    """Identify Namespace data structure for the NVM Command Set (CNS 00h),
    4096 bytes."""

    SIZE = IDENTIFY_DATA_SIZE
    RESERVED: ClassVar[tuple[tuple[int, int], ...]] = ((81, 1), (83, 9), (96, 3), (384, 3328))

    nsze = Field(0, 8, "Namespace Size (NSZE), logical blocks")
    ncap = Field(8, 8, "Namespace Capacity (NCAP), logical blocks")
    nuse = Field(16, 8, "Namespace Utilization (NUSE), logical blocks")
    nsfeat = Field(24, 1, "Namespace Features (NSFEAT), see Nsfeat")
    nsfeat_thin = Flag(24, 1, 0, "NSFEAT: thin provisioning")
    nsfeat_atomics = Flag(24, 1, 1, "NSFEAT: NAWUN, NAWUPF, NACWU are valid")
    nsfeat_dulbe = Flag(24, 1, 2, "NSFEAT: Deallocated or Unwritten Logical Block error")
    nsfeat_uid_reuse = Flag(24, 1, 3, "NSFEAT: NGUID / EUI64 never reused")
    nsfeat_opt_perf = Flag(24, 1, 4, "NSFEAT: NPWG, NPWA, NPDG, NPDA, NOWS are valid")
    nlbaf = Field(25, 1, "Number of LBA Formats (NLBAF), 0's based")
    flbas = Field(26, 1, "Formatted LBA Size (FLBAS)")
    flbas_index_lo = Bits(26, 1, 0, 4, "FLBAS: bits 3:0 of the LBA format index")
    flbas_extended = Flag(26, 1, 4, "FLBAS: metadata transferred at the end of each block")
    flbas_index_hi = Bits(26, 1, 5, 2, "FLBAS: bits 5:4 of the LBA format index")
    mc = Field(27, 1, "Metadata Capabilities (MC), see MetadataCapabilities")
    mc_extended = Flag(27, 1, 0, "MC: metadata as part of an extended data LBA")
    mc_separate = Flag(27, 1, 1, "MC: metadata in a separate buffer (MPTR)")
    dpc = Field(28, 1, "End-to-end Data Protection Capabilities (DPC), see Dpc")
    dps = Field(29, 1, "End-to-end Data Protection Type Settings (DPS)")
    dps_pi_type = Bits(29, 1, 0, 3, "DPS: protection information type (0 = disabled, 1..3)")
    dps_pi_first = Flag(29, 1, 3, "DPS: PI in the first eight bytes of metadata (else last)")
    nmic = Field(30, 1, "Namespace Multi-path I/O and Namespace Sharing Capabilities (NMIC)")
    nmic_shared = Flag(30, 1, 0, "NMIC: namespace may be attached to two or more controllers")
    rescap = Field(31, 1, "Reservation Capabilities (RESCAP), see Rescap")
    fpi = Field(32, 1, "Format Progress Indicator (FPI)")
    fpi_remaining = Bits(32, 1, 0, 7, "FPI: percentage of the namespace left to format")
    fpi_supported = Flag(32, 1, 7, "FPI: format progress indicator supported")
    dlfeat = Field(33, 1, "Deallocate Logical Block Features (DLFEAT)")
    dlfeat_read = Bits(33, 1, 0, 3, "DLFEAT: read behaviour, see DeallocReadBehavior")
    dlfeat_write_zeroes = Flag(33, 1, 3, "DLFEAT: Deallocate bit of Write Zeroes supported")
    dlfeat_guard_crc = Flag(33, 1, 4, "DLFEAT: Guard of deallocated blocks is the CRC of the data")
    nawun = Field(34, 2, "Namespace Atomic Write Unit Normal (NAWUN), 0's based")
    nawupf = Field(36, 2, "Namespace Atomic Write Unit Power Fail (NAWUPF), 0's based")
    nacwu = Field(38, 2, "Namespace Atomic Compare & Write Unit (NACWU), 0's based")
    nabsn = Field(40, 2, "Namespace Atomic Boundary Size Normal (NABSN), 0's based")
    nabo = Field(42, 2, "Namespace Atomic Boundary Offset (NABO)")
    nabspf = Field(44, 2, "Namespace Atomic Boundary Size Power Fail (NABSPF), 0's based")
    noiob = Field(46, 2, "Namespace Optimal I/O Boundary (NOIOB), logical blocks")
    nvmcap = Field(48, 16, "NVM Capacity (NVMCAP), bytes")
    npwg = Field(64, 2, "Namespace Preferred Write Granularity (NPWG), 0's based")
    npwa = Field(66, 2, "Namespace Preferred Write Alignment (NPWA), 0's based")
    npdg = Field(68, 2, "Namespace Preferred Deallocate Granularity (NPDG), 0's based")
    npda = Field(70, 2, "Namespace Preferred Deallocate Alignment (NPDA), 0's based")
    nows = Field(72, 2, "Namespace Optimal Write Size (NOWS), 0's based")
    mssrl = Field(74, 2, "Maximum Single Source Range Length (MSSRL)")
    mcl = Field(76, 4, "Maximum Copy Length (MCL)")
    msrc = Field(80, 1, "Maximum Source Range Count (MSRC), 0's based")
    nulbaf = Field(82, 1, "Number of Unique Capability LBA Formats (NULBAF)")
    anagrpid = Field(92, 4, "ANA Group Identifier (ANAGRPID)")
    nsattr = Field(99, 1, "Namespace Attributes (NSATTR)")
    nsattr_write_protected = Flag(99, 1, 0, "NSATTR: namespace is currently write protected")
    nvmsetid = Field(100, 2, "NVM Set Identifier (NVMSETID)")
    endgid = Field(102, 2, "Endurance Group Identifier (ENDGID)")
    nguid = Raw(104, 16, "Namespace Globally Unique Identifier (NGUID)")
    eui64 = Raw(120, 8, "IEEE Extended Unique Identifier (EUI64)")
    lbaf = Array(128, LbaFormat, LBA_FORMAT_COUNT, "LBA Format 0..63 Support (LBAF0..LBAF63)")
    vs = Raw(3712, 384, "Vendor Specific (VS)")

    @property
    def lba_format_index(self) -> int:
        """The LBA format in use: FLBAS bits 3:0 plus bits 6:5 as index bits 5:4."""
        return self.flbas_index_lo | (self.flbas_index_hi << 4)

    @lba_format_index.setter
    def lba_format_index(self, index: int) -> None:
        index = int(index)
        if not 0 <= index < LBA_FORMAT_COUNT:
            raise ValueError(f"lba_format_index: {index} is not 0..{LBA_FORMAT_COUNT - 1}")
        self.flbas_index_lo = index & 0xF
        self.flbas_index_hi = index >> 4

    @property
    def lba_format(self) -> LbaFormat:
        """A view of the LBA format the namespace is formatted with."""
        return self.lbaf[self.lba_format_index]

    @property
    def block_size(self) -> int:
        """Logical block data size in bytes of the format in use."""
        return self.lba_format.block_size

    @property
    def metadata_size(self) -> int:
        """Metadata bytes per logical block of the format in use."""
        return self.lba_format.ms

    def lba_formats(self) -> list[LbaFormat]:
        """The LBA formats NLBAF says are valid (LBAF0..LBAF[NLBAF])."""
        return self.lbaf[: self.nlbaf + 1]


# --------------------------------------------------------------------------
# I/O Command Set specific Identify Controller, NVM Command Set (CNS 06h,
# CSI 00h)
# --------------------------------------------------------------------------


class IdentifyControllerNvm(Struct):
    """I/O Command Set specific Identify Controller data structure for the
    NVM Command Set (CNS 06h, CSI 00h), 4096 bytes.  Size limits are powers
    of two in units of CAP.MPSMIN; 0 means no limit reported."""

    SIZE = IDENTIFY_DATA_SIZE
    RESERVED: ClassVar[tuple[tuple[int, int], ...]] = ((16, 4080),)

    vsl = Field(0, 1, "Verify Size Limit (VSL)")
    wzsl = Field(1, 1, "Write Zeroes Size Limit (WZSL)")
    wusl = Field(2, 1, "Write Uncorrectable Size Limit (WUSL)")
    dmrl = Field(3, 1, "Dataset Management Ranges Limit (DMRL)")
    dmrsl = Field(4, 4, "Dataset Management Range Size Limit (DMRSL), logical blocks")
    dmsl = Field(8, 8, "Dataset Management Size Limit (DMSL), logical blocks")


# --------------------------------------------------------------------------
# I/O Command Set Independent Identify Namespace (CNS 08h)
# --------------------------------------------------------------------------


class IdentifyNamespaceIndependent(Struct):
    """I/O Command Set Independent Identify Namespace data structure (CNS
    08h), 4096 bytes: the namespace attributes that do not depend on its
    I/O command set (NVMe 2.0 figure 280; libnvme ``struct
    nvme_id_independent_id_ns``)."""

    SIZE = IDENTIFY_DATA_SIZE
    RESERVED: ClassVar[tuple[tuple[int, int], ...]] = ((9, 1), (15, 4081))

    nsfeat = Field(0, 1, "Common Namespace Features (NSFEAT)")
    nmic = Field(1, 1, "Namespace Multi-path I/O and Namespace Sharing Capabilities (NMIC)")
    nmic_shared = Flag(1, 1, 0, "NMIC: namespace may be attached to two or more controllers")
    rescap = Field(2, 1, "Reservation Capabilities (RESCAP), see Rescap")
    fpi = Field(3, 1, "Format Progress Indicator (FPI)")
    anagrpid = Field(4, 4, "ANA Group Identifier (ANAGRPID)")
    nsattr = Field(8, 1, "Namespace Attributes (NSATTR)")
    nsattr_write_protected = Flag(8, 1, 0, "NSATTR: namespace is currently write protected")
    nvmsetid = Field(10, 2, "NVM Set Identifier (NVMSETID)")
    endgid = Field(12, 2, "Endurance Group Identifier (ENDGID)")
    nstat = Field(14, 1, "Namespace Status (NSTAT)")
    nstat_ready = Flag(14, 1, 0, "NSTAT: Namespace Ready (NRDY)")


# --------------------------------------------------------------------------
# Namespace list (CNS 02h active, 07h active for a CSI, 10h/1Ah allocated)
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# Identify I/O Command Set data structure (CNS 1Ch)
# --------------------------------------------------------------------------


class IoCommandSetVector(IntFlag):
    """An I/O Command Set Vector: bit n is the command set with CSI n."""

    NVM = 1 << 0  # NVMS
    KEY_VALUE = 1 << 1  # KVCS
    ZONED = 1 << 2  # ZNSCS
    SUBSYSTEM_LOCAL_MEMORY = 1 << 3  # SLMCS
    COMPUTATIONAL_PROGRAMS = 1 << 4  # CPNCS


class IdentifyIoCommandSet(Struct):
    """Identify I/O Command Set data structure (CNS 1Ch), 4096 bytes: 512
    I/O Command Set Combinations (IOCCS0..511), each an 8-byte
    IoCommandSetVector; the first zero entry ends the list.  The I/O Command
    Set Profile feature (19h) selects one by its index."""

    SIZE = IDENTIFY_DATA_SIZE
    RESERVED: ClassVar[tuple[tuple[int, int], ...]] = ()

    iocsc = IntArray(0, 8, IOCS_COMBINATION_COUNT, "I/O Command Set Combinations (IOCCS0..IOCCS511)")

    def combinations(self) -> list[int]:
        """The combinations before the first zero entry."""
        out = []
        for vector in self.iocsc:
            if not vector:
                break
            out.append(vector)
        return out


class NamespaceList(Struct):
    """A namespace list: up to 1024 NSIDs in increasing order, unused
    entries zero (CNS 02h, 07h, 10h, 1Ah)."""

    SIZE = IDENTIFY_DATA_SIZE
    RESERVED: ClassVar[tuple[tuple[int, int], ...]] = ()

    ns = IntArray(0, 4, NS_LIST_MAX, "Namespace identifiers")

    @classmethod
    def from_nsids(cls, nsids: Iterable[int]) -> "NamespaceList":
        """A new list holding ``nsids`` (see :meth:`set_nsids`)."""
        obj = cls()
        obj.set_nsids(nsids)
        return obj

    def set_nsids(self, nsids: Iterable[int]) -> None:
        """Write ``nsids`` (non-zero, strictly increasing, not FFFFFFFFh,
        at most 1024) and zero the rest of the list."""
        ids = [int(n) for n in nsids]
        if len(ids) > NS_LIST_MAX:
            raise ValueError(f"namespace list: {len(ids)} NSIDs, at most {NS_LIST_MAX}")
        prev = 0
        for n in ids:
            if not 0 < n < NSID_BROADCAST:
                raise ValueError(f"namespace list: NSID {n:#x} is not a valid namespace identifier")
            if n <= prev:
                raise ValueError(f"namespace list: NSIDs must increase ({n:#x} after {prev:#x})")
            prev = n
        self.ns = ids

    def nsids(self) -> list[int]:
        """The NSIDs before the first zero entry."""
        out = []
        for n in self.ns:
            if n == 0:
                break
            out.append(n)
        return out


# --------------------------------------------------------------------------
# Controller list (CNS 12h, 13h; data of Namespace Attachment)
# --------------------------------------------------------------------------


class ControllerList(Struct):
    """A controller list: the number of identifiers, then up to 2047 16-bit
    controller identifiers (CNS 12h, 13h; Namespace Attachment data)."""

    SIZE = IDENTIFY_DATA_SIZE
    RESERVED: ClassVar[tuple[tuple[int, int], ...]] = ()

    num = Field(0, 2, "Number of Identifiers")
    identifiers = IntArray(2, 2, CTRL_LIST_MAX, "Controller identifiers")

    @classmethod
    def from_ids(cls, ids: Iterable[int]) -> "ControllerList":
        """A new list holding ``ids`` (see :meth:`set_ids`)."""
        obj = cls()
        obj.set_ids(ids)
        return obj

    def set_ids(self, ids: Iterable[int]) -> None:
        """Write the count and the identifiers; zero the unused entries."""
        values = [int(i) for i in ids]
        if len(values) > CTRL_LIST_MAX:
            raise ValueError(f"controller list: {len(values)} identifiers, at most {CTRL_LIST_MAX}")
        for i in values:
            if not 0 <= i <= 0xFFFF:
                raise ValueError(f"controller list: identifier {i:#x} does not fit in 16 bits")
        self.num = len(values)
        self.identifiers = values

    def ids(self) -> list[int]:
        """The first ``num`` identifiers."""
        n = self.num
        if n > CTRL_LIST_MAX:
            raise ValueError(f"controller list: Number of Identifiers {n} exceeds {CTRL_LIST_MAX}")
        return self.identifiers[:n]


# --------------------------------------------------------------------------
# Namespace Identification Descriptor list (CNS 03h)
# --------------------------------------------------------------------------


class NidType(IntEnum):
    """Namespace Identifier Type (NIDT)."""

    EUI64 = 1
    NGUID = 2
    UUID = 3
    CSI = 4


# The NIDL each known NIDT requires.
NID_LENGTHS: dict[int, int] = {NidType.EUI64: 8, NidType.NGUID: 16, NidType.UUID: 16, NidType.CSI: 1}


class NsIdDescriptor(Struct):
    """Header of one Namespace Identification Descriptor; NIDL bytes of
    NID follow it."""

    SIZE = 4
    RESERVED: ClassVar[tuple[tuple[int, int], ...]] = ((2, 2),)

    nidt = Field(0, 1, "Namespace Identifier Type (NIDT), see NidType")
    nidl = Field(1, 1, "Namespace Identifier Length (NIDL), bytes of NID")


class NsIdEntry(NamedTuple):
    """One decoded descriptor: its type (a NidType when known) and its NID
    (a read-only view into the buffer)."""

    nidt: int
    nid: memoryview


def _nidt(value: int) -> int:
    try:
        return NidType(value)
    except ValueError:
        return value


def encode_ns_id_descriptors(
    descriptors: Iterable[tuple[int, Any]],
    into: Any = None,
    size: int = IDENTIFY_DATA_SIZE,
) -> Any:
    """Pack ``(nidt, nid)`` pairs into a descriptor list of ``size`` bytes.

    ``nid`` is bytes-like (an int is accepted for CSI).  Known types must
    have their exact length (EUI64 8, NGUID 16, UUID 16, CSI 1).  Unused
    bytes are zero, which terminates the list.  Writes into ``into`` (a
    writable buffer, from its start) when given, else into a new bytearray;
    returns the buffer."""
    items = []
    total = 0
    for nidt, nid in descriptors:
        nidt = int(nidt)
        if isinstance(nid, int):
            if nidt != NidType.CSI:
                raise ValueError(f"descriptor NIDT {nidt}: an integer NID is only taken for CSI")
            nid = bytes([nid])
        data = memoryview(nid).cast("B")
        nidl = len(data)
        if not 1 <= nidt <= 0xFF:
            raise ValueError(f"descriptor NIDT {nidt} is not 1..255")
        if not 1 <= nidl <= 0xFF:
            raise ValueError(f"descriptor NIDT {nidt}: NID of {nidl} bytes is not 1..255")
        want = NID_LENGTHS.get(nidt)
        if want is not None and nidl != want:
            raise ValueError(f"descriptor {NidType(nidt).name}: NID must be {want} bytes, got {nidl}")
        total += NsIdDescriptor.SIZE + nidl
        if total > size:
            raise ValueError(f"descriptor list: descriptors do not fit in {size} bytes")
        items.append((nidt, data))
    buf = bytearray(size) if into is None else into
    mv = memoryview(buf).cast("B")
    if len(mv) < size:
        raise ValueError(f"descriptor list: buffer of {len(mv)} bytes, need {size}")
    if into is not None:
        mv[:size] = bytes(size)
    pos = 0
    for nidt, data in items:
        hdr = NsIdDescriptor.view(mv, pos)
        hdr.nidt = nidt
        hdr.nidl = len(data)
        pos += NsIdDescriptor.SIZE
        mv[pos : pos + len(data)] = data
        pos += len(data)
    return buf


def iter_ns_id_descriptors(data: Any) -> Iterator[NsIdEntry]:
    """Walk a descriptor list, yielding :class:`NsIdEntry` without copying.

    Stops at a descriptor whose NIDL is 0 or at the end of ``data``.  Raises
    ``ValueError`` for a descriptor that runs past the end of the buffer
    and for a known NIDT whose NIDL is not its defined length."""
    mv = memoryview(data).cast("B").toreadonly()
    n = len(mv)
    pos = 0
    hsize = NsIdDescriptor.SIZE
    while pos < n:
        if n - pos < hsize:
            if any(mv[pos:]):
                raise ValueError(f"descriptor at byte {pos}: truncated header ({n - pos} bytes left)")
            return
        hdr = NsIdDescriptor.view(mv, pos)
        nidt, nidl = hdr.nidt, hdr.nidl
        if nidl == 0:
            return
        end = pos + hsize + nidl
        if end > n:
            raise ValueError(f"descriptor at byte {pos}: NIDL {nidl} runs past the end of the list ({n} bytes)")
        want = NID_LENGTHS.get(nidt)
        if want is not None and nidl != want:
            raise ValueError(
                f"descriptor at byte {pos}: {NidType(nidt).name} needs NIDL {want}, got {nidl}"
            )
        yield NsIdEntry(_nidt(nidt), mv[pos + hsize : end])
        pos = end


def decode_ns_id_descriptors(data: Any) -> list[tuple[int, bytes]]:
    """All descriptors of a list as ``(nidt, nid bytes)`` pairs (copies)."""
    return [(e.nidt, bytes(e.nid)) for e in iter_ns_id_descriptors(data)]
