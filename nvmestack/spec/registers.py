"""Controller registers / properties (NVMe 2.0 base spec 3.1.4 "Controller
Properties") and the PCIe doorbells that follow them (SQyTDBL / CQyHDBL).

Over PCIe these are the first bytes of BAR0; over Fabrics the same offsets
and sizes are the properties of Property Get / Property Set.  Each register
is a :class:`~nvmestack.spec.layout.Struct` with its named bit fields, and
:class:`ControllerRegisters` is a view of the whole 4 KiB register file, so
a device can keep BAR0 as one ``bytearray``::

    bar0 = bytearray(doorbell_region_size(nqueues=65, dstrd=0))
    regs = ControllerRegisters.view(bar0)
    regs.cap.mqes = 1023
    regs.cc.en                      # one read of one dword

All registers are little-endian.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

from .layout import Bits, Field, Flag, Struct, Sub

__all__ = [
    "Reg",
    "REGISTER_FILE_SIZE",
    "DOORBELL_BASE",
    "NSSR_SIGNATURE",
    "NVME_VS_1_0",
    "NVME_VS_1_1",
    "NVME_VS_1_2",
    "NVME_VS_1_2_1",
    "NVME_VS_1_3",
    "NVME_VS_1_4",
    "NVME_VS_2_0",
    "nvme_version",
    "CapAms",
    "CapCss",
    "CapCps",
    "CapCrms",
    "Ams",
    "CcCss",
    "Shn",
    "Shst",
    "ShutdownType",
    "CmbSzu",
    "BootReadStatus",
    "PmrTimeUnit",
    "Cap",
    "Vs",
    "Intms",
    "Intmc",
    "Cc",
    "Csts",
    "Nssr",
    "Aqa",
    "Asq",
    "Acq",
    "Cmbloc",
    "Cmbsz",
    "Bpinfo",
    "Bprsel",
    "Bpmbl",
    "Cmbmsc",
    "Cmbsts",
    "Cmbebs",
    "Cmbswtp",
    "Nssd",
    "Crto",
    "Pmrcap",
    "Pmrctl",
    "Pmrsts",
    "Pmrebs",
    "Pmrswtp",
    "Pmrmscl",
    "Pmrmscu",
    "ControllerRegisters",
    "page_size",
    "mps_for_page_size",
    "timeout_ms",
    "doorbell_stride",
    "sq_tail_doorbell",
    "cq_head_doorbell",
    "doorbell_decode",
    "doorbell_region_size",
]


class Reg(IntEnum):
    """Register offsets (base spec 3.1.4, "Property Definition").  ``Reg.X.size``
    is the register's width in bytes (4 or 8)."""

    CAP = 0x00  # Controller Capabilities
    VS = 0x08  # Version
    INTMS = 0x0C  # Interrupt Mask Set
    INTMC = 0x10  # Interrupt Mask Clear
    CC = 0x14  # Controller Configuration
    CSTS = 0x1C  # Controller Status
    NSSR = 0x20  # NVM Subsystem Reset
    AQA = 0x24  # Admin Queue Attributes
    ASQ = 0x28  # Admin Submission Queue Base Address
    ACQ = 0x30  # Admin Completion Queue Base Address
    CMBLOC = 0x38  # Controller Memory Buffer Location
    CMBSZ = 0x3C  # Controller Memory Buffer Size
    BPINFO = 0x40  # Boot Partition Information
    BPRSEL = 0x44  # Boot Partition Read Select
    BPMBL = 0x48  # Boot Partition Memory Buffer Location
    CMBMSC = 0x50  # Controller Memory Buffer Memory Space Control
    CMBSTS = 0x58  # Controller Memory Buffer Status
    CMBEBS = 0x5C  # Controller Memory Buffer Elasticity Buffer Size
    CMBSWTP = 0x60  # Controller Memory Buffer Sustained Write Throughput
    NSSD = 0x64  # NVM Subsystem Shutdown
    CRTO = 0x68  # Controller Ready Timeouts
    PMRCAP = 0xE00  # Persistent Memory Region Capabilities
    PMRCTL = 0xE04  # Persistent Memory Region Control
    PMRSTS = 0xE08  # Persistent Memory Region Status
    PMREBS = 0xE0C  # Persistent Memory Region Elasticity Buffer Size
    PMRSWTP = 0xE10  # Persistent Memory Region Sustained Write Throughput
    PMRMSCL = 0xE14  # Persistent Memory Region Controller Memory Space Control Lower
    PMRMSCU = 0xE18  # Persistent Memory Region Controller Memory Space Control Upper

    @property
    def size(self) -> int:
        """Width of the register in bytes."""
        return 8 if self in _WIDE_REGISTERS else 4

    @classmethod
    def at(cls, offset: int) -> Reg | None:
        """The register that starts at ``offset`` (None when none does)."""
        try:
            return cls(offset)
        except ValueError:
            return None


_WIDE_REGISTERS = frozenset({Reg.CAP, Reg.ASQ, Reg.ACQ, Reg.BPMBL, Reg.CMBMSC})

REGISTER_FILE_SIZE = 0x1000
"""Bytes of controller registers before the first doorbell."""

DOORBELL_BASE = 0x1000
"""Offset of the Admin SQ Tail doorbell (SQ0TDBL)."""

NSSR_SIGNATURE = 0x4E564D65
"""Value ("NVMe" in ASCII) whose write to NSSR.NSSRC starts an NVM Subsystem Reset."""


def nvme_version(mjr: int, mnr: int, ter: int = 0) -> int:
    """The VS register value for version ``mjr.mnr.ter``."""
    if not (0 <= mjr <= 0xFFFF and 0 <= mnr <= 0xFF and 0 <= ter <= 0xFF):
        raise ValueError(f"version {mjr}.{mnr}.{ter} does not fit VS")
    return (mjr << 16) | (mnr << 8) | ter


NVME_VS_1_0 = nvme_version(1, 0)
NVME_VS_1_1 = nvme_version(1, 1)
NVME_VS_1_2 = nvme_version(1, 2)
NVME_VS_1_2_1 = nvme_version(1, 2, 1)
NVME_VS_1_3 = nvme_version(1, 3)
NVME_VS_1_4 = nvme_version(1, 4)
NVME_VS_2_0 = nvme_version(2, 0)


# --- coded values ---------------------------------------------------------


class CapAms(IntFlag):
    """CAP.AMS (bits 18:17), optional arbitration mechanisms supported
    (round robin is always supported and has no bit)."""

    WRRU = 1 << 0  # weighted round robin with urgent priority class (CAP bit 17)
    VENDOR = 1 << 1  # vendor specific (CAP bit 18)


class CapCss(IntFlag):
    """CAP.CSS (bits 44:37), command sets supported; bit n of this value is
    CAP bit 37 + n."""

    NVM = 1 << 0  # NVM command set (CAP bit 37)
    IOCS = 1 << 6  # one or more I/O command sets (CAP bit 43)
    NOIOCS = 1 << 7  # no I/O command set, admin only (CAP bit 44)


class CapCps(IntEnum):
    """CAP.CPS (bits 47:46), controller power scope."""

    NOT_REPORTED = 0
    CONTROLLER = 1
    DOMAIN = 2
    NVM_SUBSYSTEM = 3


class CapCrms(IntFlag):
    """CAP.CRMS (bits 60:59), controller ready modes supported."""

    CRWMS = 1 << 0  # controller ready with media (CAP bit 59)
    CRIMS = 1 << 1  # controller ready independent of media (CAP bit 60)


class Ams(IntEnum):
    """CC.AMS (bits 13:11), arbitration mechanism selected."""

    ROUND_ROBIN = 0
    WRRU = 1  # weighted round robin with urgent priority class
    VENDOR = 7


class CcCss(IntEnum):
    """CC.CSS (bits 6:4), I/O command set selected."""

    NVM = 0
    ALL_IOCS = 6  # all supported I/O command sets (CAP.CSS.IOCS)
    ADMIN_ONLY = 7  # admin command set only (CAP.CSS.NOIOCS)


class Shn(IntEnum):
    """CC.SHN (bits 15:14), shutdown notification."""

    NONE = 0
    NORMAL = 1
    ABRUPT = 2


class Shst(IntEnum):
    """CSTS.SHST (bits 3:2), shutdown status."""

    NORMAL = 0  # normal operation, no shutdown requested
    OCCURRING = 1  # shutdown processing occurring
    COMPLETE = 2  # shutdown processing complete


class ShutdownType(IntEnum):
    """CSTS.ST (bit 6), what the shutdown reported in SHST applies to."""

    CONTROLLER = 0
    NVM_SUBSYSTEM = 1


class CmbSzu(IntEnum):
    """CMBSZ.SZU (bits 11:8), the unit of CMBSZ.SZ: 4 KiB * 16**SZU."""

    SZ_4K = 0
    SZ_64K = 1
    SZ_1M = 2
    SZ_16M = 3
    SZ_256M = 4
    SZ_4G = 5
    SZ_64G = 6


class BootReadStatus(IntEnum):
    """BPINFO.BRS (bits 25:24), boot partition read status."""

    NONE = 0
    IN_PROGRESS = 1
    SUCCESS = 2
    ERROR = 3


class PmrTimeUnit(IntEnum):
    """PMRCAP.PMRTU (bits 9:8), unit of PMRCAP.PMRTO."""

    MS_500 = 0
    MINUTES = 1


# --- one Struct per register ------------------------------------------------


class Cap(Struct):
    """Controller Capabilities (CAP, 00h, 8 bytes)."""

    SIZE = 8

    value = Field(0, 8, "The whole register")
    mqes = Bits(0, 8, 0, 16, "Maximum Queue Entries Supported (MQES), 0's based")
    cqr = Flag(0, 8, 16, "Contiguous Queues Required (CQR)")
    ams = Bits(0, 8, 17, 2, "Arbitration Mechanism Supported (AMS), see CapAms")
    to = Bits(0, 8, 24, 8, "Timeout (TO), in 500 ms units")
    dstrd = Bits(0, 8, 32, 4, "Doorbell Stride (DSTRD): stride is 4 << DSTRD bytes")
    nssrs = Flag(0, 8, 36, "NVM Subsystem Reset Supported (NSSRS)")
    css = Bits(0, 8, 37, 8, "Command Sets Supported (CSS), see CapCss")
    css_nvm = Flag(0, 8, 37, "CSS bit 0: NVM command set supported")
    css_iocs = Flag(0, 8, 43, "CSS bit 6: one or more I/O command sets supported")
    css_noiocs = Flag(0, 8, 44, "CSS bit 7: no I/O command set supported")
    bps = Flag(0, 8, 45, "Boot Partition Support (BPS)")
    cps = Bits(0, 8, 46, 2, "Controller Power Scope (CPS), see CapCps")
    mpsmin = Bits(0, 8, 48, 4, "Memory Page Size Minimum (MPSMIN): 2 ** (12 + MPSMIN)")
    mpsmax = Bits(0, 8, 52, 4, "Memory Page Size Maximum (MPSMAX): 2 ** (12 + MPSMAX)")
    pmrs = Flag(0, 8, 56, "Persistent Memory Region Supported (PMRS)")
    cmbs = Flag(0, 8, 57, "Controller Memory Buffer Supported (CMBS)")
    nsss = Flag(0, 8, 58, "NVM Subsystem Shutdown Supported (NSSS)")
    crms = Bits(0, 8, 59, 2, "Controller Ready Modes Supported (CRMS), see CapCrms")
    crwms = Flag(0, 8, 59, "CRMS bit 0: Controller Ready With Media Support (CRWMS)")
    crims = Flag(0, 8, 60, "CRMS bit 1: Controller Ready Independent of Media Support (CRIMS)")

    @property
    def max_queue_entries(self) -> int:
        """MQES as a number of entries (MQES + 1)."""
        return self.mqes + 1

    @property
    def timeout_ms(self) -> int:
        """CAP.TO in milliseconds."""
        return timeout_ms(self.to)

    @property
    def doorbell_stride(self) -> int:
        """Bytes between consecutive doorbell registers."""
        return doorbell_stride(self.dstrd)

    @property
    def page_size_min(self) -> int:
        return page_size(self.mpsmin)

    @property
    def page_size_max(self) -> int:
        return page_size(self.mpsmax)


class Vs(Struct):
    """Version (VS, 08h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    ter = Bits(0, 4, 0, 8, "Tertiary Version Number (TER)")
    mnr = Bits(0, 4, 8, 8, "Minor Version Number (MNR)")
    mjr = Bits(0, 4, 16, 16, "Major Version Number (MJR)")


class Intms(Struct):
    """Interrupt Mask Set (INTMS, 0Ch); not used with MSI-X."""

    SIZE = 4

    ivms = Field(0, 4, "Interrupt Vector Mask Set (IVMS): one bit per vector")


class Intmc(Struct):
    """Interrupt Mask Clear (INTMC, 10h); not used with MSI-X."""

    SIZE = 4

    ivmc = Field(0, 4, "Interrupt Vector Mask Clear (IVMC): one bit per vector")


class Cc(Struct):
    """Controller Configuration (CC, 14h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    en = Flag(0, 4, 0, "Enable (EN)")
    css = Bits(0, 4, 4, 3, "I/O Command Set Selected (CSS), see CcCss")
    mps = Bits(0, 4, 7, 4, "Memory Page Size (MPS): 2 ** (12 + MPS)")
    ams = Bits(0, 4, 11, 3, "Arbitration Mechanism Selected (AMS), see Ams")
    shn = Bits(0, 4, 14, 2, "Shutdown Notification (SHN), see Shn")
    iosqes = Bits(0, 4, 16, 4, "I/O Submission Queue Entry Size (IOSQES): 2 ** n bytes")
    iocqes = Bits(0, 4, 20, 4, "I/O Completion Queue Entry Size (IOCQES): 2 ** n bytes")
    crime = Flag(0, 4, 24, "Controller Ready Independent of Media Enable (CRIME)")

    @property
    def page_size(self) -> int:
        """CC.MPS in bytes."""
        return page_size(self.mps)


class Csts(Struct):
    """Controller Status (CSTS, 1Ch)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    rdy = Flag(0, 4, 0, "Ready (RDY)")
    cfs = Flag(0, 4, 1, "Controller Fatal Status (CFS)")
    shst = Bits(0, 4, 2, 2, "Shutdown Status (SHST), see Shst")
    nssro = Flag(0, 4, 4, "NVM Subsystem Reset Occurred (NSSRO)")
    pp = Flag(0, 4, 5, "Processing Paused (PP)")
    st = Flag(0, 4, 6, "Shutdown Type (ST), see ShutdownType")


class Nssr(Struct):
    """NVM Subsystem Reset (NSSR, 20h)."""

    SIZE = 4

    nssrc = Field(0, 4, "NVM Subsystem Reset Control (NSSRC): write NSSR_SIGNATURE to reset")


class Aqa(Struct):
    """Admin Queue Attributes (AQA, 24h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    asqs = Bits(0, 4, 0, 12, "Admin Submission Queue Size (ASQS), 0's based")
    acqs = Bits(0, 4, 16, 12, "Admin Completion Queue Size (ACQS), 0's based")


class _QueueBase(Struct):
    """A 64-bit, 4 KiB aligned base address whose bits 11:0 are reserved."""

    SIZE = 8

    value = Field(0, 8, "The whole register")

    @property
    def address(self) -> int:
        """The base address (bits 63:12, reserved bits 11:0 dropped)."""
        return self.value & ~0xFFF

    @address.setter
    def address(self, addr: int) -> None:
        if addr & 0xFFF:
            raise ValueError(f"{type(self).__name__}: base address {addr:#x} is not 4 KiB aligned")
        self.value = addr


class Asq(_QueueBase):
    """Admin Submission Queue Base Address (ASQ, 28h)."""

    asqb = Bits(0, 8, 12, 52, "Admin Submission Queue Base (ASQB), address bits 63:12")


class Acq(_QueueBase):
    """Admin Completion Queue Base Address (ACQ, 30h)."""

    acqb = Bits(0, 8, 12, 52, "Admin Completion Queue Base (ACQB), address bits 63:12")


class Cmbloc(Struct):
    """Controller Memory Buffer Location (CMBLOC, 38h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    bir = Bits(0, 4, 0, 3, "Base Indicator Register (BIR)")
    cqmms = Flag(0, 4, 3, "CMB Queue Mixed Memory Support (CQMMS)")
    cqpds = Flag(0, 4, 4, "CMB Queue Physically Discontiguous Support (CQPDS)")
    cdplms = Flag(0, 4, 5, "CMB Data Pointer Mixed Locations Support (CDPLMS)")
    cdpcils = Flag(0, 4, 6, "CMB Data Pointer and Command Independent Locations Support (CDPCILS)")
    cdmmms = Flag(0, 4, 7, "CMB Data Metadata Mixed Memory Support (CDMMMS)")
    cqda = Flag(0, 4, 8, "CMB Queue Dword Alignment (CQDA)")
    ofst = Bits(0, 4, 12, 20, "Offset (OFST), in CMBSZ.SZU units")


class Cmbsz(Struct):
    """Controller Memory Buffer Size (CMBSZ, 3Ch)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    sqs = Flag(0, 4, 0, "Submission Queue Support (SQS)")
    cqs = Flag(0, 4, 1, "Completion Queue Support (CQS)")
    lists = Flag(0, 4, 2, "PRP SGL List Support (LISTS)")
    rds = Flag(0, 4, 3, "Read Data Support (RDS)")
    wds = Flag(0, 4, 4, "Write Data Support (WDS)")
    szu = Bits(0, 4, 8, 4, "Size Units (SZU), see CmbSzu")
    sz = Bits(0, 4, 12, 20, "Size (SZ), in SZU units")

    @property
    def unit(self) -> int:
        """Bytes of one SZU unit: 4 KiB * 16 ** SZU."""
        return 1 << (12 + 4 * self.szu)

    @property
    def size_bytes(self) -> int:
        """The size of the controller memory buffer in bytes."""
        return self.sz * self.unit


class Bpinfo(Struct):
    """Boot Partition Information (BPINFO, 40h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    bpsz = Bits(0, 4, 0, 15, "Boot Partition Size (BPSZ), in 128 KiB units")
    brs = Bits(0, 4, 24, 2, "Boot Read Status (BRS), see BootReadStatus")
    abpid = Flag(0, 4, 31, "Active Boot Partition ID (ABPID)")


class Bprsel(Struct):
    """Boot Partition Read Select (BPRSEL, 44h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    bprsz = Bits(0, 4, 0, 10, "Boot Partition Read Size (BPRSZ), in 4 KiB units")
    bprof = Bits(0, 4, 10, 20, "Boot Partition Read Offset (BPROF), in 4 KiB units")
    bpid = Flag(0, 4, 31, "Boot Partition Identifier (BPID)")


class Bpmbl(Struct):
    """Boot Partition Memory Buffer Location (BPMBL, 48h, 8 bytes)."""

    SIZE = 8

    value = Field(0, 8, "The whole register")
    bmbba = Bits(0, 8, 12, 52, "Boot Partition Memory Buffer Base Address (BMBBA), bits 63:12")


class Cmbmsc(Struct):
    """Controller Memory Buffer Memory Space Control (CMBMSC, 50h, 8 bytes)."""

    SIZE = 8

    value = Field(0, 8, "The whole register")
    cre = Flag(0, 8, 0, "Capabilities Registers Enabled (CRE)")
    cmse = Flag(0, 8, 1, "Controller Memory Space Enable (CMSE)")
    cba = Bits(0, 8, 12, 52, "Controller Base Address (CBA), address bits 63:12")


class Cmbsts(Struct):
    """Controller Memory Buffer Status (CMBSTS, 58h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    cbai = Flag(0, 4, 0, "Controller Base Address Invalid (CBAI)")


class Cmbebs(Struct):
    """Controller Memory Buffer Elasticity Buffer Size (CMBEBS, 5Ch)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    cmbszu = Bits(0, 4, 0, 4, "CMB Elasticity Buffer Size Units (CMBSZU): 0 bytes, 1 KiB, 2 MiB, 3 GiB")
    rbb = Flag(0, 4, 4, "Read Bypass Behavior (RBB)")
    cmbwbz = Bits(0, 4, 8, 24, "CMB Elasticity Buffer Size Base (CMBWBZ)")


class Cmbswtp(Struct):
    """Controller Memory Buffer Sustained Write Throughput (CMBSWTP, 60h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    cmbswtu = Bits(0, 4, 0, 4, "CMB Sustained Write Throughput Units (CMBSWTU)")
    cmbswtv = Bits(0, 4, 8, 24, "CMB Sustained Write Throughput (CMBSWTV)")


class Nssd(Struct):
    """NVM Subsystem Shutdown (NSSD, 64h)."""

    SIZE = 4

    nssc = Field(0, 4, "NVM Subsystem Shutdown Control (NSSC)")


class Crto(Struct):
    """Controller Ready Timeouts (CRTO, 68h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    crwmt = Bits(0, 4, 0, 16, "Controller Ready With Media Timeout (CRWMT), 500 ms units")
    crimt = Bits(0, 4, 16, 16, "Controller Ready Independent of Media Timeout (CRIMT), 500 ms units")


class Pmrcap(Struct):
    """Persistent Memory Region Capabilities (PMRCAP, E00h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    rds = Flag(0, 4, 3, "Read Data Support (RDS)")
    wds = Flag(0, 4, 4, "Write Data Support (WDS)")
    bir = Bits(0, 4, 5, 3, "Base Indicator Register (BIR)")
    pmrtu = Bits(0, 4, 8, 2, "PMR Time Units (PMRTU), see PmrTimeUnit")
    pmrwbm = Bits(0, 4, 10, 4, "PMR Write Barrier Mechanisms (PMRWBM)")
    pmrto = Bits(0, 4, 16, 8, "PMR Timeout (PMRTO), in PMRTU units")
    cmss = Flag(0, 4, 24, "Controller Memory Space Supported (CMSS)")


class Pmrctl(Struct):
    """Persistent Memory Region Control (PMRCTL, E04h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    en = Flag(0, 4, 0, "Enable (EN)")


class Pmrsts(Struct):
    """Persistent Memory Region Status (PMRSTS, E08h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    err = Bits(0, 4, 0, 8, "Error (ERR)")
    nrdy = Flag(0, 4, 8, "Not Ready (NRDY)")
    hsts = Bits(0, 4, 9, 3, "Health Status (HSTS)")
    cbai = Flag(0, 4, 12, "Controller Base Address Invalid (CBAI)")


class Pmrebs(Struct):
    """Persistent Memory Region Elasticity Buffer Size (PMREBS, E0Ch)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    pmrszu = Bits(0, 4, 0, 4, "PMR Elasticity Buffer Size Units (PMRSZU)")
    rbb = Flag(0, 4, 4, "Read Bypass Behavior (RBB)")
    pmrwbz = Bits(0, 4, 8, 24, "PMR Elasticity Buffer Size Base (PMRWBZ)")


class Pmrswtp(Struct):
    """Persistent Memory Region Sustained Write Throughput (PMRSWTP, E10h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    pmrswtu = Bits(0, 4, 0, 4, "PMR Sustained Write Throughput Units (PMRSWTU)")
    pmrswtv = Bits(0, 4, 8, 24, "PMR Sustained Write Throughput (PMRSWTV)")


class Pmrmscl(Struct):
    """PMR Controller Memory Space Control Lower (PMRMSCL, E14h)."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    cmse = Flag(0, 4, 1, "Controller Memory Space Enable (CMSE)")
    cba = Bits(0, 4, 12, 20, "Controller Base Address (CBA), address bits 31:12")


class Pmrmscu(Struct):
    """PMR Controller Memory Space Control Upper (PMRMSCU, E18h)."""

    SIZE = 4

    cba = Field(0, 4, "Controller Base Address (CBA), address bits 63:32")


class ControllerRegisters(Struct):
    """The register file: the first 4 KiB of BAR0 (or the property space
    of a Fabrics controller), one sub-view per register."""

    SIZE = REGISTER_FILE_SIZE

    cap = Sub(Reg.CAP, Cap, "Controller Capabilities")
    vs = Sub(Reg.VS, Vs, "Version")
    intms = Sub(Reg.INTMS, Intms, "Interrupt Mask Set")
    intmc = Sub(Reg.INTMC, Intmc, "Interrupt Mask Clear")
    cc = Sub(Reg.CC, Cc, "Controller Configuration")
    csts = Sub(Reg.CSTS, Csts, "Controller Status")
    nssr = Sub(Reg.NSSR, Nssr, "NVM Subsystem Reset")
    aqa = Sub(Reg.AQA, Aqa, "Admin Queue Attributes")
    asq = Sub(Reg.ASQ, Asq, "Admin Submission Queue Base Address")
    acq = Sub(Reg.ACQ, Acq, "Admin Completion Queue Base Address")
    cmbloc = Sub(Reg.CMBLOC, Cmbloc, "Controller Memory Buffer Location")
    cmbsz = Sub(Reg.CMBSZ, Cmbsz, "Controller Memory Buffer Size")
    bpinfo = Sub(Reg.BPINFO, Bpinfo, "Boot Partition Information")
    bprsel = Sub(Reg.BPRSEL, Bprsel, "Boot Partition Read Select")
    bpmbl = Sub(Reg.BPMBL, Bpmbl, "Boot Partition Memory Buffer Location")
    cmbmsc = Sub(Reg.CMBMSC, Cmbmsc, "Controller Memory Buffer Memory Space Control")
    cmbsts = Sub(Reg.CMBSTS, Cmbsts, "Controller Memory Buffer Status")
    cmbebs = Sub(Reg.CMBEBS, Cmbebs, "Controller Memory Buffer Elasticity Buffer Size")
    cmbswtp = Sub(Reg.CMBSWTP, Cmbswtp, "Controller Memory Buffer Sustained Write Throughput")
    nssd = Sub(Reg.NSSD, Nssd, "NVM Subsystem Shutdown")
    crto = Sub(Reg.CRTO, Crto, "Controller Ready Timeouts")
    pmrcap = Sub(Reg.PMRCAP, Pmrcap, "Persistent Memory Region Capabilities")
    pmrctl = Sub(Reg.PMRCTL, Pmrctl, "Persistent Memory Region Control")
    pmrsts = Sub(Reg.PMRSTS, Pmrsts, "Persistent Memory Region Status")
    pmrebs = Sub(Reg.PMREBS, Pmrebs, "Persistent Memory Region Elasticity Buffer Size")
    pmrswtp = Sub(Reg.PMRSWTP, Pmrswtp, "Persistent Memory Region Sustained Write Throughput")
    pmrmscl = Sub(Reg.PMRMSCL, Pmrmscl, "PMR Controller Memory Space Control Lower")
    pmrmscu = Sub(Reg.PMRMSCU, Pmrmscu, "PMR Controller Memory Space Control Upper")

    def read(self, offset: int, size: int) -> int:
        """The little-endian value of ``size`` (1, 2, 4 or 8) bytes at ``offset``."""
        self._check_access(offset, size)
        off = self._off + offset
        return int.from_bytes(self._mv[off : off + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        """Store ``value`` as ``size`` little-endian bytes at ``offset``."""
        self._check_access(offset, size)
        if not 0 <= value < 1 << (8 * size):
            raise ValueError(f"{value:#x} does not fit in {size} byte(s)")
        off = self._off + offset
        self._mv[off : off + size] = value.to_bytes(size, "little")

    def _check_access(self, offset: int, size: int) -> None:
        if size not in (1, 2, 4, 8):
            raise ValueError(f"register access size must be 1, 2, 4 or 8, not {size}")
        if offset < 0 or offset + size > self.SIZE:
            raise ValueError(f"register access {offset:#x}+{size} outside the register file")


# --- helpers ----------------------------------------------------------------


def page_size(mps: int) -> int:
    """Memory page size in bytes for a CC.MPS / CAP.MPSMIN / CAP.MPSMAX value."""
    if not 0 <= mps <= 15:
        raise ValueError(f"MPS {mps} out of range 0..15")
    return 1 << (12 + mps)


def mps_for_page_size(size: int) -> int:
    """The MPS value for a page size in bytes (a power of two, 4 KiB .. 128 MiB)."""
    if size < 4096 or size & (size - 1) or size > 1 << 27:
        raise ValueError(f"{size} is not a memory page size (power of two, 4 KiB .. 128 MiB)")
    return size.bit_length() - 13


def timeout_ms(units: int) -> int:
    """A CAP.TO / CRTO.CRWMT / CRTO.CRIMT value (500 ms units) in milliseconds."""
    if units < 0:
        raise ValueError(f"timeout {units} is negative")
    return units * 500


def doorbell_stride(dstrd: int) -> int:
    """Bytes between doorbell registers for a CAP.DSTRD value."""
    if not 0 <= dstrd <= 15:
        raise ValueError(f"DSTRD {dstrd} out of range 0..15")
    return 4 << dstrd


def _check_qid(qid: int) -> None:
    if not 0 <= qid <= 0xFFFF:
        raise ValueError(f"queue id {qid} out of range 0..65535")


def sq_tail_doorbell(qid: int, dstrd: int = 0) -> int:
    """BAR0 offset of the Submission Queue ``qid`` Tail Doorbell (SQyTDBL)."""
    _check_qid(qid)
    return DOORBELL_BASE + (2 * qid) * doorbell_stride(dstrd)


def cq_head_doorbell(qid: int, dstrd: int = 0) -> int:
    """BAR0 offset of the Completion Queue ``qid`` Head Doorbell (CQyHDBL)."""
    _check_qid(qid)
    return DOORBELL_BASE + (2 * qid + 1) * doorbell_stride(dstrd)


def doorbell_decode(offset: int, dstrd: int = 0) -> tuple[int, bool] | None:
    """``(qid, is_cq)`` for the doorbell at BAR0 ``offset``; None when the
    offset is below the doorbells or not on a doorbell boundary."""
    stride = doorbell_stride(dstrd)
    rel = offset - DOORBELL_BASE
    if rel < 0 or rel % stride:
        return None
    index = rel // stride
    qid = index >> 1
    if qid > 0xFFFF:
        return None
    return qid, bool(index & 1)


def doorbell_region_size(nqueues: int, dstrd: int = 0) -> int:
    """Bytes of BAR0 needed for the registers plus the doorbells of queue
    ids 0 .. ``nqueues`` - 1 (an SQ and a CQ doorbell each)."""
    if nqueues < 0 or nqueues > 0x10000:
        raise ValueError(f"queue count {nqueues} out of range 0..65536")
    return DOORBELL_BASE + 2 * nqueues * doorbell_stride(dstrd)
