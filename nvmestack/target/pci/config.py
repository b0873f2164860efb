"""PCI configuration space of the NVMe PCIe function.

A 4096-byte PCI Express configuration space: the type 0 header and a
capability list with power management, MSI, MSI-X and the PCI Express
capability.  The layout (offsets chosen here, values from the PCI Local Bus
3.0, PCI Power Management 1.2 and PCI Express Base specifications)::

    00h  type 0 header   vendor/device id, command, status, class 010802h,
                         BAR0/1: one 64-bit non-prefetchable memory BAR
    40h  power management  (next 50h)   D0 and D3hot, No_Soft_Reset
    50h  MSI, 64-bit, per-vector masking (next 70h), up to 32 vectors
    70h  MSI-X            (next 80h)    table and PBA in BAR0 (BIR 0)
    80h  PCI Express v2   (next 00h)    endpoint, FLR capable
   100h  no extended capabilities (a zero header, as PCIe requires)

Every register is modelled as bytes with two masks, as a real function
implements it: a write changes only the bits of the *write mask* (RW) and
clears the bits of the *write-one-to-clear mask* (RW1C) that are written as
ones; everything else (read-only, HwInit, reserved bits) ignores writes and
reserved bits read zero.  A few registers have side effects on top
(see :meth:`ConfigSpace.write`): PMCSR only accepts the supported power
states, MSI Multiple Message Enable is limited to what is capable, and
Device Control's Initiate Function Level Reset resets the function and reads
back 0.

Accesses are 1, 2 or 4 bytes, naturally aligned, at offsets 0..4095; a
multi-byte access may span several registers (a 4-byte write at 04h writes
Command and Status).  Anything else -- another size, a misaligned offset, an
offset outside the 4 KiB -- is an access that no register claims: **reads
return all ones** of the access size (what a host sees for a configuration
request that completes with Unsupported Request) and **writes are dropped**.

The vendor and device id default to :data:`PCI_VENDOR_ID` and
:data:`PCI_DEVICE_ID`, nvmestack's own 4e56:0001 -- not QEMU's 1b36:0010,
which Linux's nvme driver matches by an explicit entry of its id table to
apply quirks for QEMU's device; every NVMe driver binds by class code
anyway.  Pass your own ids when the function should identify differently
(the PCIe function takes them from its subsystem's ``vid`` and ``ssvid``
when those are set).  Identify Controller's VID and SSVID are read from
here, so the two always agree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from nvmestack.spec.pci import (
    MSIX_TABLE_ENTRY_SIZE,
    NVME_CLASS_CODE,
    PCI_CFG_SPACE_EXP_SIZE,
    CapId,
    Cfg,
    MemBarType,
    PciCommand,
    PcieDeviceType,
    PciStatus,
    PowerState,
    bar_size_mask,
    msix_pba_size,
)

__all__ = [
    "MSIX_OFFSET",
    "MSIX_TABLE_OFFSET",
    "MSI_OFFSET",
    "PCIE_OFFSET",
    "PM_OFFSET",
    "PCI_DEVICE_ID",
    "PCI_VENDOR_ID",
    "QEMU_NVME_DEVICE_ID",
    "QEMU_NVME_VENDOR_ID",
    "ConfigSpace",
]

QEMU_NVME_VENDOR_ID = 0x1B36
"""Red Hat, Inc.: the vendor id of QEMU's emulated devices."""
QEMU_NVME_DEVICE_ID = 0x0010
"""QEMU's emulated NVMe controller."""

# The ids of our PCIe function (configuration space, and through it Identify
# Controller VID/SSVID): "NV" and device 1.  No PCI-SIG assignment stands
# behind them; they only have to stay out of the drivers' quirk tables.
PCI_VENDOR_ID, PCI_DEVICE_ID = 0x4E56, 0x0001

PM_OFFSET = 0x40
MSI_OFFSET = 0x50
MSIX_OFFSET = 0x70
PCIE_OFFSET = 0x80
_COMMAND = int(Cfg.COMMAND)  # the command register's low byte
_PMCSR = PM_OFFSET + 4  # PMCSR's low byte
_MEMORY_SPACE = int(PciCommand.MEMORY_SPACE)
_BUS_MASTER = int(PciCommand.BUS_MASTER)

MSIX_TABLE_OFFSET = 0x2000
"""Default MSI-X table offset in BAR0: after the registers (000h) and the
doorbells (1000h..1FFFh, 512 queue pairs with CAP.DSTRD 0)."""

# Command register bits software can change.  I/O Space stays 0: the
# function has no I/O BAR.  Special Cycles, MWI, VGA snoop and Fast
# Back-to-Back are hardwired to 0 on PCI Express.
_COMMAND_WRITABLE = (
    PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER | PciCommand.PARITY_ERROR_RESPONSE
    | PciCommand.SERR_ENABLE | PciCommand.INTX_DISABLE
)
# Status register bits that are RW1C (error bits the function may set).
_STATUS_W1C = (
    PciStatus.MASTER_DATA_PARITY_ERROR | PciStatus.SIGNALED_TARGET_ABORT | PciStatus.RECEIVED_TARGET_ABORT
    | PciStatus.RECEIVED_MASTER_ABORT | PciStatus.SIGNALED_SYSTEM_ERROR | PciStatus.DETECTED_PARITY_ERROR
)

# Power management capability (PM 1.2).
_PMC = 0x0003  # version 011b (PM 1.2); no D1/D2, no PME generation
_PMCSR_NO_SOFT_RESET = 1 << 3
_PMCSR_WRITABLE = 0x0003  # PowerState; PME_En/PME_Status hardwired 0 (no PME support)

# MSI capability.
_MSI_CTRL_ENABLE = 1 << 0
_MSI_CTRL_MME_SHIFT = 4
_MSI_CTRL_MME = 0x7 << _MSI_CTRL_MME_SHIFT
_MSI_CTRL_64BIT = 1 << 7
_MSI_CTRL_PVM = 1 << 8
_MSI_ADDR_LO, _MSI_ADDR_HI, _MSI_DATA, _MSI_MASK, _MSI_PENDING = 4, 8, 12, 16, 20

# MSI-X capability.
_MSIX_CTRL_FUNCTION_MASK = 1 << 14
_MSIX_CTRL_ENABLE = 1 << 15

# PCI Express capability (version 2, endpoint, no slot).
_PCIE_CAPS = 0x0002 | (PcieDeviceType.ENDPOINT << 4)
_DEVCAP = (
    0x1            # Max_Payload_Size Supported: 256 bytes
    | 1 << 5       # Extended Tag Field Supported
    | 0x7 << 6     # Endpoint L0s Acceptable Latency: no limit
    | 0x7 << 9     # Endpoint L1 Acceptable Latency: no limit
    | 1 << 15      # Role-Based Error Reporting (required since PCIe 1.1)
    | 1 << 28      # Function Level Reset Capability
)
_DEVCTL_FLR = 1 << 15
_DEVCTL_DEFAULT = 1 << 4 | 1 << 11 | 0x2 << 12  # relaxed ordering, no snoop, MRRS 512 bytes
_DEVCTL_WRITABLE = (
    0x000F         # error reporting enables
    | 1 << 4       # relaxed ordering
    | 0x7 << 5     # Max_Payload_Size
    | 1 << 8       # Extended Tag Field Enable (supported)
    | 1 << 11      # Enable No Snoop
    | 0x7 << 12    # Max_Read_Request_Size
    | _DEVCTL_FLR  # Initiate FLR (self-clearing, reads 0)
)  # Phantom Functions and Aux Power PM Enable stay 0: not supported
_DEVSTA_W1C = 0x000F  # correctable / non-fatal / fatal / unsupported request detected
_LINK_SPEED = 3  # 8.0 GT/s (index into the Supported Link Speeds Vector)
_LINK_WIDTH = 4  # x4
_LNKCAP = _LINK_SPEED | _LINK_WIDTH << 4 | 1 << 22  # no ASPM; ASPM Optionality Compliance
_LNKCTL_WRITABLE = 0x0003 | 1 << 3 | 1 << 6 | 1 << 7  # ASPM control, RCB, common clock, extended synch
_LNKSTA = _LINK_SPEED | _LINK_WIDTH << 4 | 1 << 12  # current speed/width, slot clock configuration
_LNKCAP2 = 0b1110  # Supported Link Speeds Vector: 2.5, 5.0, 8.0 GT/s
_LNKCTL2_DEFAULT = _LINK_SPEED  # Target Link Speed
_LNKCTL2_WRITABLE = 0x000F

# Offsets of the PCI Express capability's registers.
_PCIE_DEVCAP, _PCIE_DEVCTL, _PCIE_DEVSTA = 4, 8, 10
_PCIE_LNKCAP, _PCIE_LNKCTL, _PCIE_LNKSTA = 12, 16, 18
_PCIE_LNKCAP2, _PCIE_LNKCTL2 = 44, 48
_PCIE_CAP_SIZE = 60

_BAR0_FLAGS = MemBarType.BITS_64 << 1  # memory space, 64-bit, not prefetchable


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


class ConfigSpace:
    """The configuration space of one NVMe PCIe function.

    ``msix_vectors``: MSI-X table entries (1..2048).  ``bar0_size``: BAR0's
    size, a power of two large enough for the registers, the doorbells and
    the MSI-X table and PBA.  ``on_flr`` is called (without arguments, after
    the configuration space and the reset listeners have been reset) when
    software initiates a Function Level Reset.  ``msi_vectors`` is what MSI's
    Multiple Message Capable advertises (a power of two up to 32; default
    the smallest power of two covering ``msix_vectors``, at most 32).

    Listeners: :meth:`add_listener` callbacks run after every write that
    reached a register (the interrupt logic re-evaluates masks and enables);
    :meth:`add_reset_listener` callbacks run on FLR and :meth:`reset`, before
    ``on_flr``.  Both run without the configuration space's lock held.
    """

    SIZE = PCI_CFG_SPACE_EXP_SIZE

    pm_offset = PM_OFFSET
    msi_offset = MSI_OFFSET
    msix_offset = MSIX_OFFSET
    pcie_offset = PCIE_OFFSET

    def __init__(
        self,
        msix_vectors: int,
        bar0_size: int,
        *,
        on_flr: Callable[[], None] | None = None,
        vendor_id: int = PCI_VENDOR_ID,
        device_id: int = PCI_DEVICE_ID,
        revision_id: int = 0x02,
        subsystem_vendor_id: int | None = None,
        subsystem_id: int | None = None,
        msi_vectors: int | None = None,
        msix_table_offset: int = MSIX_TABLE_OFFSET,
        msix_pba_offset: int | None = None,
    ):
        if not 1 <= msix_vectors <= 2048:
            raise ValueError(f"MSI-X vector count {msix_vectors} out of range 1..2048")
        for name, value in (("vendor_id", vendor_id), ("device_id", device_id)):
            if not 0 <= value < 0xFFFF:
                raise ValueError(f"{name} {value:#x} is not a valid id (FFFFh means no function)")
        if msi_vectors is None:
            msi_vectors = 1
            while msi_vectors < min(msix_vectors, 32):
                msi_vectors <<= 1
        if msi_vectors not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"MSI vector count {msi_vectors} is not a power of two up to 32")
        if msix_table_offset & 7 or msix_table_offset < 0x1000:
            raise ValueError(f"MSI-X table offset {msix_table_offset:#x} must be 8-byte aligned, above the registers")
        table_size = msix_vectors * MSIX_TABLE_ENTRY_SIZE
        if msix_pba_offset is None:
            msix_pba_offset = _align_up(msix_table_offset + table_size, 0x1000)
        pba_size = msix_pba_size(msix_vectors)
        if msix_pba_offset & 7:
            raise ValueError(f"MSI-X PBA offset {msix_pba_offset:#x} is not 8-byte aligned")
        if msix_pba_offset < msix_table_offset + table_size and msix_table_offset < msix_pba_offset + pba_size:
            raise ValueError("MSI-X table and PBA overlap")
        end = max(msix_table_offset + table_size, msix_pba_offset + pba_size)
        bar_size_mask(bar0_size, bits64=True)  # raises unless a power of two >= 16
        if end > bar0_size:
            raise ValueError(f"BAR0 size {bar0_size:#x} does not hold the MSI-X table and PBA (up to {end:#x})")

        self.msix_vectors = msix_vectors
        self.msi_vectors_capable = msi_vectors
        self.bar0_size = bar0_size
        self.msix_table_offset = msix_table_offset
        self.msix_table_size = table_size
        self.msix_pba_offset = msix_pba_offset
        self.msix_pba_size = pba_size
        self.on_flr = on_flr
        self.vendor_id = vendor_id
        self.device_id = device_id
        self.flr_count = 0

        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        self._reset_listeners: list[Callable[[], None]] = []
        self._image = bytearray(self.SIZE)  # power-on values
        self._wmask = bytearray(self.SIZE)
        self._w1cmask = bytearray(self.SIZE)
        self.subsystem_vendor_id = vendor_id if subsystem_vendor_id is None else subsystem_vendor_id
        self.subsystem_id = device_id if subsystem_id is None else subsystem_id
        self._build(revision_id, self.subsystem_vendor_id, self.subsystem_id)
        self._cfg = bytearray(self._image)

    # ------------------------------------------------------------------
    # construction

    def _init(self, offset: int, size: int, value: int, wmask: int = 0, w1c: int = 0) -> None:
        self._image[offset : offset + size] = value.to_bytes(size, "little")
        self._wmask[offset : offset + size] = wmask.to_bytes(size, "little")
        self._w1cmask[offset : offset + size] = w1c.to_bytes(size, "little")

    def _build(self, revision_id: int, subsystem_vendor_id: int, subsystem_id: int) -> None:
        i = self._init
        i(Cfg.VENDOR_ID, 2, self.vendor_id)
        i(Cfg.DEVICE_ID, 2, self.device_id)
        i(Cfg.COMMAND, 2, 0, _COMMAND_WRITABLE)
        i(Cfg.STATUS, 2, PciStatus.CAP_LIST, 0, _STATUS_W1C)
        i(Cfg.REVISION_ID, 1, revision_id & 0xFF)
        i(Cfg.CLASS_PROG, 3, NVME_CLASS_CODE)
        i(Cfg.CACHE_LINE_SIZE, 1, 0, 0xFF)  # RW, no effect on PCI Express
        i(Cfg.HEADER_TYPE, 1, 0)  # type 0, single function
        bar_mask = bar_size_mask(self.bar0_size, bits64=True)
        i(Cfg.BAR0, 4, _BAR0_FLAGS, bar_mask & 0xFFFFFFFF)
        i(Cfg.BAR1, 4, 0, bar_mask >> 32)
        # BAR2..BAR5, CardBus CIS and the expansion ROM BAR read 0 and ignore writes.
        i(Cfg.SUBSYSTEM_VENDOR_ID, 2, subsystem_vendor_id & 0xFFFF)
        i(Cfg.SUBSYSTEM_ID, 2, subsystem_id & 0xFFFF)
        i(Cfg.CAPABILITY_LIST, 1, PM_OFFSET)
        i(Cfg.INTERRUPT_LINE, 1, 0, 0xFF)
        i(Cfg.INTERRUPT_PIN, 1, 1)  # INTA#

        pm = PM_OFFSET
        i(pm, 1, CapId.PM)
        i(pm + 1, 1, MSI_OFFSET)
        i(pm + 2, 2, _PMC)
        i(pm + 4, 2, _PMCSR_NO_SOFT_RESET, _PMCSR_WRITABLE)

        msi = MSI_OFFSET
        mmc = self.msi_vectors_capable.bit_length() - 1
        i(msi, 1, CapId.MSI)
        i(msi + 1, 1, MSIX_OFFSET)
        i(msi + 2, 2, mmc << 1 | _MSI_CTRL_64BIT | _MSI_CTRL_PVM, _MSI_CTRL_ENABLE | _MSI_CTRL_MME)
        i(msi + _MSI_ADDR_LO, 4, 0, 0xFFFFFFFC)
        i(msi + _MSI_ADDR_HI, 4, 0, 0xFFFFFFFF)
        i(msi + _MSI_DATA, 2, 0, 0xFFFF)  # Extended Message Data (0Eh) not capable: reads 0
        i(msi + _MSI_MASK, 4, 0, (1 << self.msi_vectors_capable) - 1)
        i(msi + _MSI_PENDING, 4, 0)  # read-only; the interrupt logic sets it

        msix = MSIX_OFFSET
        i(msix, 1, CapId.MSIX)
        i(msix + 1, 1, PCIE_OFFSET)
        i(msix + 2, 2, self.msix_vectors - 1, _MSIX_CTRL_FUNCTION_MASK | _MSIX_CTRL_ENABLE)
        i(msix + 4, 4, self.msix_table_offset | 0)  # BIR 0
        i(msix + 8, 4, self.msix_pba_offset | 0)

        pcie = PCIE_OFFSET
        i(pcie, 1, CapId.PCIE)
        i(pcie + 1, 1, 0)
        i(pcie + 2, 2, _PCIE_CAPS)
        i(pcie + _PCIE_DEVCAP, 4, _DEVCAP)
        i(pcie + _PCIE_DEVCTL, 2, _DEVCTL_DEFAULT, _DEVCTL_WRITABLE)
        i(pcie + _PCIE_DEVSTA, 2, 0, 0, _DEVSTA_W1C)
        i(pcie + _PCIE_LNKCAP, 4, _LNKCAP)
        i(pcie + _PCIE_LNKCTL, 2, 0, _LNKCTL_WRITABLE)
        i(pcie + _PCIE_LNKSTA, 2, _LNKSTA)
        i(pcie + _PCIE_LNKCAP2, 4, _LNKCAP2)
        i(pcie + _PCIE_LNKCTL2, 2, _LNKCTL2_DEFAULT, _LNKCTL2_WRITABLE)
        # Slot and root registers, Device Capabilities/Control 2: 0 (none supported).
        # 100h: an all-zero extended capability header means "no extended capabilities".

    # ------------------------------------------------------------------
    # listeners

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each configuration write that reached a
        register (and after resets)."""
        self._listeners.append(callback)

    def add_reset_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the function is reset (FLR or
        :meth:`reset`), before ``on_flr``."""
        self._reset_listeners.append(callback)

    # ------------------------------------------------------------------
    # access

    @staticmethod
    def _valid(offset: int, size: int) -> bool:
        return size in (1, 2, 4) and offset % size == 0 and 0 <= offset < PCI_CFG_SPACE_EXP_SIZE

    def read(self, offset: int, size: int) -> int:
        """Read ``size`` (1, 2 or 4) bytes at ``offset``; an access no register
        claims reads all ones."""
        if not self._valid(offset, size):
            return (1 << (8 * size)) - 1 if 0 < size <= 8 else 0
        with self._lock:
            return int.from_bytes(self._cfg[offset : offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        """Write ``size`` (1, 2 or 4) bytes at ``offset`` through the write
        masks; invalid accesses are dropped."""
        if not self._valid(offset, size):
            return
        value &= (1 << (8 * size)) - 1
        flr = False
        with self._lock:
            cfg, wmask, w1c = self._cfg, self._wmask, self._w1cmask
            old_pmcsr = self._get(PM_OFFSET + 4, 2)
            for k in range(size):
                pos = offset + k
                byte = (value >> (8 * k)) & 0xFF
                cfg[pos] = ((cfg[pos] & ~wmask[pos]) | (byte & wmask[pos])) & ~(byte & w1c[pos]) & 0xFF
            if self._touches(offset, size, PM_OFFSET + 4, 2):
                self._fix_pmcsr(old_pmcsr)
            if self._touches(offset, size, MSI_OFFSET + 2, 2):
                self._fix_msi_control()
            if self._touches(offset, size, PCIE_OFFSET + _PCIE_DEVCTL, 2):
                devctl = self._get(PCIE_OFFSET + _PCIE_DEVCTL, 2)
                if devctl & _DEVCTL_FLR:
                    self._set(PCIE_OFFSET + _PCIE_DEVCTL, 2, devctl & ~_DEVCTL_FLR)
                    flr = True
        if flr:
            self.function_level_reset()
        else:
            self._notify()

    @staticmethod
    def _touches(offset: int, size: int, reg: int, reg_size: int) -> bool:
        return offset < reg + reg_size and reg < offset + size

    def _get(self, offset: int, size: int) -> int:
        return int.from_bytes(self._cfg[offset : offset + size], "little")

    def _set(self, offset: int, size: int, value: int) -> None:
        self._cfg[offset : offset + size] = value.to_bytes(size, "little")

    def _fix_pmcsr(self, old: int) -> None:
        pmcsr = self._get(PM_OFFSET + 4, 2)
        if pmcsr & 0x3 in (PowerState.D1, PowerState.D2):
            # PM 1.2: a write of an unsupported state completes normally, the
            # data is discarded and the state does not change.
            self._set(PM_OFFSET + 4, 2, (pmcsr & ~0x3) | (old & 0x3))
        # D3hot -> D0 with No_Soft_Reset set keeps the function's state.

    def _fix_msi_control(self) -> None:
        ctrl = self._get(MSI_OFFSET + 2, 2)
        mmc = (ctrl >> 1) & 0x7
        mme = (ctrl & _MSI_CTRL_MME) >> _MSI_CTRL_MME_SHIFT
        if mme > mmc:  # software must not enable more than capable: keep what is capable
            self._set(MSI_OFFSET + 2, 2, (ctrl & ~_MSI_CTRL_MME) | (mmc << _MSI_CTRL_MME_SHIFT))

    def _notify(self) -> None:
        for callback in list(self._listeners):
            callback()

    # ------------------------------------------------------------------
    # resets

    def reset(self) -> None:
        """Conventional reset: every register back to its power-on value;
        the reset listeners run (not ``on_flr``)."""
        with self._lock:
            self._cfg[:] = self._image
        for callback in list(self._reset_listeners):
            callback()
        self._notify()

    def function_level_reset(self) -> None:
        """Function Level Reset (Device Control bit 15).  The whole
        configuration space returns to its power-on values except the
        PCI Express link registers (Link Control / Link Control 2 and the
        Device Control Max_Payload_Size, which FLR must not disturb as the
        link keeps running); Bus Master, Memory Space, MSI and MSI-X enables
        are thereby cleared.  Then the reset listeners (the interrupt logic)
        run, then ``on_flr`` (the controller)."""
        with self._lock:
            keep = {
                PCIE_OFFSET + _PCIE_LNKCTL: (2, 0xFFFF),
                PCIE_OFFSET + _PCIE_LNKCTL2: (2, 0xFFFF),
                PCIE_OFFSET + _PCIE_DEVCTL: (2, 0x7 << 5),
            }
            saved = {off: self._get(off, size) & mask for off, (size, mask) in keep.items()}
            self._cfg[:] = self._image
            for off, (size, mask) in keep.items():
                self._set(off, size, (self._get(off, size) & ~mask) | saved[off])
            self.flr_count += 1
        for callback in list(self._reset_listeners):
            callback()
        if self.on_flr is not None:
            self.on_flr()
        self._notify()

    # ------------------------------------------------------------------
    # what the rest of the function asks

    def snapshot(self) -> bytes:
        """A copy of the whole 4 KiB space (for the capability walkers)."""
        with self._lock:
            return bytes(self._cfg)

    @property
    def command(self) -> int:
        return self.read(Cfg.COMMAND, 2)

    @property
    def status(self) -> int:
        return self.read(Cfg.STATUS, 2)

    @property
    def power_state(self) -> PowerState:
        return PowerState(self.read(PM_OFFSET + 4, 2) & 0x3)

    # Checked for every doorbell, fetch and interrupt: one byte each (a
    # single-byte read needs no lock), no enum arithmetic.  Memory Space
    # Enable and Bus Master Enable are in the command register's low byte;
    # PMCSR's PowerState (bits 1:0) is 00b in D0.

    @property
    def memory_space_enabled(self) -> bool:
        """The function decodes BAR0: Memory Space Enable set and the
        function in D0 (in D3hot it answers configuration requests only)."""
        cfg = self._cfg
        return bool(cfg[_COMMAND] & _MEMORY_SPACE) and not cfg[_PMCSR] & 3

    @property
    def bus_master_enabled(self) -> bool:
        """The function may issue memory requests (DMA, MSI/MSI-X messages):
        Bus Master Enable set and the function in D0."""
        cfg = self._cfg
        return bool(cfg[_COMMAND] & _BUS_MASTER) and not cfg[_PMCSR] & 3

    @property
    def intx_disabled(self) -> bool:
        return bool(self.command & PciCommand.INTX_DISABLE)

    @property
    def bar0_address(self) -> int:
        """The 64-bit address BAR0 is programmed with (flag bits removed)."""
        with self._lock:
            return (self._get(Cfg.BAR0, 4) & ~0xF) | self._get(Cfg.BAR1, 4) << 32

    # MSI

    @property
    def _msi_control(self) -> int:
        return self.read(MSI_OFFSET + 2, 2)

    @property
    def msi_enabled(self) -> bool:
        return bool(self._msi_control & _MSI_CTRL_ENABLE)

    @property
    def msi_vectors_enabled(self) -> int:
        """Vectors allocated by Multiple Message Enable (1 << MME)."""
        return 1 << ((self._msi_control & _MSI_CTRL_MME) >> _MSI_CTRL_MME_SHIFT)

    @property
    def msi_address(self) -> int:
        with self._lock:
            return self._get(MSI_OFFSET + _MSI_ADDR_LO, 4) | self._get(MSI_OFFSET + _MSI_ADDR_HI, 4) << 32

    @property
    def msi_data(self) -> int:
        return self.read(MSI_OFFSET + _MSI_DATA, 2)

    @property
    def msi_mask_bits(self) -> int:
        return self.read(MSI_OFFSET + _MSI_MASK, 4)

    @property
    def msi_pending_bits(self) -> int:
        return self.read(MSI_OFFSET + _MSI_PENDING, 4)

    def set_msi_pending(self, bits: int) -> None:
        """Set the (read-only to software) MSI Pending Bits register."""
        with self._lock:
            self._set(MSI_OFFSET + _MSI_PENDING, 4, bits & ((1 << self.msi_vectors_capable) - 1))

    # MSI-X

    @property
    def _msix_control(self) -> int:
        return self.read(MSIX_OFFSET + 2, 2)

    @property
    def msix_enabled(self) -> bool:
        return bool(self._msix_control & _MSIX_CTRL_ENABLE)

    @property
    def msix_function_mask(self) -> bool:
        return bool(self._msix_control & _MSIX_CTRL_FUNCTION_MASK)

    # INTx and error reporting

    def set_interrupt_status(self, pending: bool) -> None:
        """Status bit 3 (Interrupt Status): the function's INTx is pending
        (whatever Interrupt Disable says)."""
        with self._lock:
            status = self._get(Cfg.STATUS, 2)
            status = status | PciStatus.INTERRUPT_STATUS if pending else status & ~PciStatus.INTERRUPT_STATUS
            self._set(Cfg.STATUS, 2, int(status))

    def report_status(self, bits: int) -> None:
        """Set RW1C error bits of the Status register (e.g. Received Master
        Abort when a DMA request got an Unsupported Request completion)."""
        with self._lock:
            self._set(Cfg.STATUS, 2, self._get(Cfg.STATUS, 2) | (bits & _STATUS_W1C))

    def report_device_status(self, bits: int) -> None:
        """Set RW1C bits 3:0 of the PCI Express Device Status register."""
        with self._lock:
            off = PCIE_OFFSET + _PCIE_DEVSTA
            self._set(off, 2, self._get(off, 2) | (bits & _DEVSTA_W1C))
