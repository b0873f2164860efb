"""PCI configuration space as an NVMe PCIe function uses it (PCI Local Bus
Specification 3.0 chapter 6 "Configuration Space", PCI Bus Power Management
Interface 1.2, PCI Express Base Specification chapter 7 "PCI Express
Capability Structure"; NVMe 2.0 base spec / NVMe over PCIe 3.x name the
class code and the capabilities an NVMe controller carries).

- :class:`ConfigHeader`: the 64-byte type 0 header;
- the capabilities an NVMe function exposes, each a Struct: power
  management, MSI, MSI-X (plus the MSI-X table entry), PCI Express;
- :func:`iter_capabilities` / :func:`find_capability` (and the extended
  versions from offset 100h) walk a configuration buffer's linked lists.

Everything is little-endian.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum, IntFlag

from .layout import Array, Bits, Field, Flag, Struct

__all__ = [
    "PCI_CFG_SPACE_SIZE",
    "PCI_CFG_SPACE_EXP_SIZE",
    "PCI_STD_HEADER_SIZE",
    "PCI_CAPABILITY_START",
    "PCI_EXT_CAPABILITY_START",
    "NVME_CLASS_CODE",
    "PCI_CLASS_STORAGE",
    "PCI_SUBCLASS_NVM",
    "PCI_PROG_IF_NVME",
    "Cfg",
    "PciCommand",
    "PciStatus",
    "HeaderType",
    "InterruptPin",
    "BarSpace",
    "MemBarType",
    "CapId",
    "ExtCapId",
    "PowerState",
    "PcieDeviceType",
    "Bar",
    "ConfigHeader",
    "CapHeader",
    "PmCapability",
    "MsiCapability",
    "MsiCapability32",
    "MsiCapability64",
    "MsixCapability",
    "MsixTableEntry",
    "MSIX_TABLE_ENTRY_SIZE",
    "msix_pba_size",
    "msix_pba_position",
    "PcieCapability",
    "ExtCapHeader",
    "bar_size_mask",
    "iter_capabilities",
    "find_capability",
    "iter_ext_capabilities",
    "find_ext_capability",
]

PCI_CFG_SPACE_SIZE = 256
"""Configuration space of a conventional PCI function."""
PCI_CFG_SPACE_EXP_SIZE = 4096
"""Configuration space of a PCI Express function (extended space from 100h)."""
PCI_STD_HEADER_SIZE = 64
"""The standard (type 0 / type 1) header."""
PCI_CAPABILITY_START = 0x40
"""Capabilities live after the standard header."""
PCI_EXT_CAPABILITY_START = 0x100
"""The first extended capability header is always at 100h."""

PCI_CLASS_STORAGE = 0x01
PCI_SUBCLASS_NVM = 0x08  # Non-Volatile Memory controller
PCI_PROG_IF_NVME = 0x02  # NVM Express
NVME_CLASS_CODE = (PCI_CLASS_STORAGE << 16) | (PCI_SUBCLASS_NVM << 8) | PCI_PROG_IF_NVME
"""Class code 010802h: mass storage, non-volatile memory, NVM Express (I/O controller)."""


class Cfg(IntEnum):
    """Type 0 configuration header register offsets."""

    VENDOR_ID = 0x00
    DEVICE_ID = 0x02
    COMMAND = 0x04
    STATUS = 0x06
    REVISION_ID = 0x08
    CLASS_PROG = 0x09
    CLASS_DEVICE = 0x0A
    CLASS_BASE = 0x0B
    CACHE_LINE_SIZE = 0x0C
    LATENCY_TIMER = 0x0D
    HEADER_TYPE = 0x0E
    BIST = 0x0F
    BAR0 = 0x10
    BAR1 = 0x14
    BAR2 = 0x18
    BAR3 = 0x1C
    BAR4 = 0x20
    BAR5 = 0x24
    CARDBUS_CIS = 0x28
    SUBSYSTEM_VENDOR_ID = 0x2C
    SUBSYSTEM_ID = 0x2E
    ROM_ADDRESS = 0x30
    CAPABILITY_LIST = 0x34
    INTERRUPT_LINE = 0x3C
    INTERRUPT_PIN = 0x3D
    MIN_GNT = 0x3E
    MAX_LAT = 0x3F


class PciCommand(IntFlag):
    """Command register (04h) bits."""

    IO_SPACE = 1 << 0
    MEMORY_SPACE = 1 << 1
    BUS_MASTER = 1 << 2
    SPECIAL_CYCLES = 1 << 3
    MWI_ENABLE = 1 << 4
    VGA_PALETTE_SNOOP = 1 << 5
    PARITY_ERROR_RESPONSE = 1 << 6
    SERR_ENABLE = 1 << 8
    FAST_BACK_TO_BACK = 1 << 9
    INTX_DISABLE = 1 << 10


class PciStatus(IntFlag):
    """Status register (06h) bits (DEVSEL timing, bits 10:9, is a field)."""

    INTERRUPT_STATUS = 1 << 3
    CAP_LIST = 1 << 4
    MHZ_66 = 1 << 5
    FAST_BACK_TO_BACK = 1 << 7
    MASTER_DATA_PARITY_ERROR = 1 << 8
    SIGNALED_TARGET_ABORT = 1 << 11
    RECEIVED_TARGET_ABORT = 1 << 12
    RECEIVED_MASTER_ABORT = 1 << 13
    SIGNALED_SYSTEM_ERROR = 1 << 14
    DETECTED_PARITY_ERROR = 1 << 15


class HeaderType(IntEnum):
    """Header Type (0Eh) bits 6:0, the header layout."""

    NORMAL = 0  # type 0: endpoints
    BRIDGE = 1  # type 1: PCI-to-PCI bridges
    CARDBUS = 2


class InterruptPin(IntEnum):
    """Interrupt Pin (3Dh)."""

    NONE = 0
    INTA = 1
    INTB = 2
    INTC = 3
    INTD = 4


class BarSpace(IntEnum):
    """Base address register bit 0."""

    MEMORY = 0
    IO = 1


class MemBarType(IntEnum):
    """Memory base address register bits 2:1."""

    BITS_32 = 0b00
    BELOW_1M = 0b01  # obsolete
    BITS_64 = 0b10  # the BAR and the next one form a 64-bit address


class CapId(IntEnum):
    """Capability IDs of the (conventional) capability list."""

    PM = 0x01  # PCI Power Management
    MSI = 0x05  # Message Signaled Interrupts
    VENDOR = 0x09  # Vendor specific
    PCIE = 0x10  # PCI Express
    MSIX = 0x11  # MSI-X


class ExtCapId(IntEnum):
    """Extended capability IDs (configuration space from 100h)."""

    AER = 0x0001  # Advanced Error Reporting
    DSN = 0x0003  # Device Serial Number
    VENDOR = 0x000B  # Vendor specific
    ARI = 0x000E  # Alternative Routing-ID Interpretation
    SRIOV = 0x0010  # Single Root I/O Virtualization


class PowerState(IntEnum):
    """PMCSR PowerState (bits 1:0)."""

    D0 = 0
    D1 = 1
    D2 = 2
    D3HOT = 3


class PcieDeviceType(IntEnum):
    """PCI Express Capabilities register, Device/Port Type (bits 7:4)."""

    ENDPOINT = 0x0
    LEGACY_ENDPOINT = 0x1
    ROOT_PORT = 0x4
    UPSTREAM_PORT = 0x5
    DOWNSTREAM_PORT = 0x6
    PCIE_TO_PCI_BRIDGE = 0x7
    PCI_TO_PCIE_BRIDGE = 0x8
    RC_INTEGRATED_ENDPOINT = 0x9
    RC_EVENT_COLLECTOR = 0xA


# --- type 0 header ------------------------------------------------------------


class Bar(Struct):
    """One 32-bit base address register.  For a 64-bit memory BAR the next
    BAR holds address bits 63:32."""

    SIZE = 4

    value = Field(0, 4, "The whole register")
    space = Bits(0, 4, 0, 1, "Memory (0) or I/O (1) space indicator, see BarSpace")
    mem_type = Bits(0, 4, 1, 2, "Memory BAR type (bits 2:1), see MemBarType")
    prefetchable = Flag(0, 4, 3, "Memory BAR prefetchable")
    mem_base = Bits(0, 4, 4, 28, "Memory BAR base address bits 31:4")

    @property
    def is_io(self) -> bool:
        return self.space == BarSpace.IO

    @property
    def is_64bit(self) -> bool:
        return not self.is_io and self.mem_type == MemBarType.BITS_64

    @property
    def address(self) -> int:
        """Address bits 31:4 (memory) or 31:2 (I/O) with the flag bits cleared."""
        return self.value & (~0x3 if self.is_io else ~0xF) & 0xFFFFFFFF


def bar_size_mask(size: int, *, io: bool = False, bits64: bool = False) -> int:
    """The address bits of a BAR that stay writable for a region of ``size``
    bytes: what the BAR reads back (before its flag bits are or-ed in)
    after software writes all ones to it to size it.  The result covers one
    dword, or both dwords of a 64-bit memory BAR with ``bits64``.  Memory
    BARs decode at least 16 bytes, I/O BARs at least 4."""
    low = 4 if io else 16
    width = 64 if bits64 else 32
    if io and bits64:
        raise ValueError("I/O BARs are 32 bits wide")
    if size < low or size & (size - 1) or size >= 1 << width:
        raise ValueError(f"BAR size {size} is not a power of two in {low}..2**{width - 1}")
    return ~(size - 1) & ((1 << width) - 1) & ~(0x3 if io else 0xF)


class ConfigHeader(Struct):
    """The 64-byte type 0 configuration header."""

    SIZE = PCI_STD_HEADER_SIZE

    vendor_id = Field(Cfg.VENDOR_ID, 2, "Vendor ID")
    device_id = Field(Cfg.DEVICE_ID, 2, "Device ID")
    command = Field(Cfg.COMMAND, 2, "Command register, see PciCommand")
    io_space = Flag(Cfg.COMMAND, 2, 0, "Command: I/O Space Enable")
    memory_space = Flag(Cfg.COMMAND, 2, 1, "Command: Memory Space Enable")
    bus_master = Flag(Cfg.COMMAND, 2, 2, "Command: Bus Master Enable")
    intx_disable = Flag(Cfg.COMMAND, 2, 10, "Command: Interrupt Disable")
    status = Field(Cfg.STATUS, 2, "Status register, see PciStatus")
    interrupt_status = Flag(Cfg.STATUS, 2, 3, "Status: Interrupt Status (INTx pending)")
    cap_list = Flag(Cfg.STATUS, 2, 4, "Status: Capabilities List present")
    revision_id = Field(Cfg.REVISION_ID, 1, "Revision ID")
    class_code = Field(Cfg.CLASS_PROG, 3, "Class Code (base class, subclass, prog-if)")
    prog_if = Field(Cfg.CLASS_PROG, 1, "Class Code: Programming Interface")
    subclass = Field(Cfg.CLASS_DEVICE, 1, "Class Code: Sub-Class")
    base_class = Field(Cfg.CLASS_BASE, 1, "Class Code: Base Class")
    cache_line_size = Field(Cfg.CACHE_LINE_SIZE, 1, "Cache Line Size")
    latency_timer = Field(Cfg.LATENCY_TIMER, 1, "Latency Timer")
    header_type = Field(Cfg.HEADER_TYPE, 1, "Header Type")
    header_layout = Bits(Cfg.HEADER_TYPE, 1, 0, 7, "Header Type: layout, see HeaderType")
    multi_function = Flag(Cfg.HEADER_TYPE, 1, 7, "Header Type: Multi-Function Device")
    bist = Field(Cfg.BIST, 1, "BIST register")
    bist_code = Bits(Cfg.BIST, 1, 0, 4, "BIST: Completion Code")
    bist_start = Flag(Cfg.BIST, 1, 6, "BIST: Start BIST")
    bist_capable = Flag(Cfg.BIST, 1, 7, "BIST: BIST Capable")
    bars = Array(Cfg.BAR0, Bar, 6, "Base Address Registers 0-5")
    cardbus_cis = Field(Cfg.CARDBUS_CIS, 4, "CardBus CIS Pointer")
    subsystem_vendor_id = Field(Cfg.SUBSYSTEM_VENDOR_ID, 2, "Subsystem Vendor ID")
    subsystem_id = Field(Cfg.SUBSYSTEM_ID, 2, "Subsystem ID")
    rom_address = Field(Cfg.ROM_ADDRESS, 4, "Expansion ROM Base Address")
    rom_enable = Flag(Cfg.ROM_ADDRESS, 4, 0, "Expansion ROM: Address Decode Enable")
    rom_base = Bits(Cfg.ROM_ADDRESS, 4, 11, 21, "Expansion ROM: base address bits 31:11")
    capabilities_pointer = Field(Cfg.CAPABILITY_LIST, 1, "Capabilities Pointer")
    interrupt_line = Field(Cfg.INTERRUPT_LINE, 1, "Interrupt Line")
    interrupt_pin = Field(Cfg.INTERRUPT_PIN, 1, "Interrupt Pin, see InterruptPin")
    min_gnt = Field(Cfg.MIN_GNT, 1, "Min_Gnt")
    max_lat = Field(Cfg.MAX_LAT, 1, "Max_Lat")

    def bar_address(self, index: int) -> int:
        """The memory or I/O address BAR ``index`` decodes, joining the
        next BAR as bits 63:32 when the BAR is a 64-bit memory BAR."""
        bar = self.bars[index]
        if bar.is_64bit:
            if index >= 5:
                raise ValueError("BAR5 cannot be the low half of a 64-bit BAR")
            return bar.address | (self.bars[index + 1].value << 32)
        return bar.address


# --- capabilities ---------------------------------------------------------------


class CapHeader(Struct):
    """The two bytes every capability starts with."""

    SIZE = 2

    cap_id = Field(0, 1, "Capability ID, see CapId")
    cap_next = Field(1, 1, "Next Capability Pointer (0 ends the list)")


class PmCapability(CapHeader):
    """PCI Power Management capability (ID 01h), 8 bytes."""

    SIZE = 8

    pmc = Field(2, 2, "Power Management Capabilities (PMC)")
    pm_version = Bits(2, 2, 0, 3, "PMC: Version")
    pme_clock = Flag(2, 2, 3, "PMC: PME Clock")
    dsi = Flag(2, 2, 5, "PMC: Device Specific Initialization (DSI)")
    aux_current = Bits(2, 2, 6, 3, "PMC: Aux_Current")
    d1_support = Flag(2, 2, 9, "PMC: D1 Support")
    d2_support = Flag(2, 2, 10, "PMC: D2 Support")
    pme_support = Bits(2, 2, 11, 5, "PMC: PME_Support (D0, D1, D2, D3hot, D3cold)")
    pmcsr = Field(4, 2, "Power Management Control/Status (PMCSR)")
    power_state = Bits(4, 2, 0, 2, "PMCSR: PowerState, see PowerState")
    no_soft_reset = Flag(4, 2, 3, "PMCSR: No_Soft_Reset (D3hot -> D0 keeps state)")
    pme_enable = Flag(4, 2, 8, "PMCSR: PME_En")
    data_select = Bits(4, 2, 9, 4, "PMCSR: Data_Select")
    data_scale = Bits(4, 2, 13, 2, "PMCSR: Data_Scale")
    pme_status = Flag(4, 2, 15, "PMCSR: PME_Status")
    pmcsr_bse = Field(6, 1, "PMCSR PCI-to-PCI Bridge Support Extensions")
    data = Field(7, 1, "Data")


class MsiCapability(CapHeader):
    """MSI capability (ID 05h): the part common to all four layouts
    (message control and the low message address)."""

    SIZE = 8

    message_control = Field(2, 2, "Message Control")
    msi_enable = Flag(2, 2, 0, "Message Control: MSI Enable")
    multiple_message_capable = Bits(2, 2, 1, 3, "Message Control: Multiple Message Capable (log2 vectors)")
    multiple_message_enable = Bits(2, 2, 4, 3, "Message Control: Multiple Message Enable (log2 vectors)")
    addr64 = Flag(2, 2, 7, "Message Control: 64 bit address capable")
    per_vector_masking = Flag(2, 2, 8, "Message Control: Per-vector masking capable")
    message_address = Field(4, 4, "Message Address (bits 31:2; 1:0 reserved)")

    @property
    def vectors_capable(self) -> int:
        return 1 << self.multiple_message_capable

    @property
    def vectors_enabled(self) -> int:
        return 1 << self.multiple_message_enable


class MsiCapability32(MsiCapability):
    """MSI capability, 32-bit address with per-vector masking (20 bytes;
    without masking only the first 10 bytes exist)."""

    SIZE = 20

    message_data = Field(8, 2, "Message Data")
    mask_bits = Field(12, 4, "Mask Bits")
    pending_bits = Field(16, 4, "Pending Bits")


class MsiCapability64(MsiCapability):
    """MSI capability, 64-bit address with per-vector masking (24 bytes;
    without masking only the first 14 bytes exist)."""

    SIZE = 24

    message_upper_address = Field(8, 4, "Message Upper Address")
    message_data = Field(12, 2, "Message Data")
    mask_bits = Field(16, 4, "Mask Bits")
    pending_bits = Field(20, 4, "Pending Bits")

    @property
    def address(self) -> int:
        """The 64-bit message address."""
        return (self.message_upper_address << 32) | self.message_address


class MsixCapability(CapHeader):
    """MSI-X capability (ID 11h), 12 bytes."""

    SIZE = 12

    message_control = Field(2, 2, "Message Control")
    table_size = Bits(2, 2, 0, 11, "Message Control: Table Size (N - 1)")
    function_mask = Flag(2, 2, 14, "Message Control: Function Mask")
    msix_enable = Flag(2, 2, 15, "Message Control: MSI-X Enable")
    table = Field(4, 4, "Table Offset / Table BIR")
    table_bir = Bits(4, 4, 0, 3, "Table BIR: which BAR holds the table")
    table_qword = Bits(4, 4, 3, 29, "Table Offset bits 31:3")
    pba = Field(8, 4, "PBA Offset / PBA BIR")
    pba_bir = Bits(8, 4, 0, 3, "PBA BIR: which BAR holds the pending bit array")
    pba_qword = Bits(8, 4, 3, 29, "PBA Offset bits 31:3")

    @property
    def table_entries(self) -> int:
        """Number of table entries (Table Size + 1)."""
        return self.table_size + 1

    @property
    def table_offset(self) -> int:
        """Byte offset of the table in its BAR (8-byte aligned)."""
        return self.table_qword << 3

    @table_offset.setter
    def table_offset(self, offset: int) -> None:
        if offset & 7:
            raise ValueError(f"MSI-X table offset {offset:#x} is not 8-byte aligned")
        self.table_qword = offset >> 3

    @property
    def pba_offset(self) -> int:
        """Byte offset of the pending bit array in its BAR (8-byte aligned)."""
        return self.pba_qword << 3

    @pba_offset.setter
    def pba_offset(self, offset: int) -> None:
        if offset & 7:
            raise ValueError(f"MSI-X PBA offset {offset:#x} is not 8-byte aligned")
        self.pba_qword = offset >> 3


MSIX_TABLE_ENTRY_SIZE = 16


class MsixTableEntry(Struct):
    """One 16-byte MSI-X table entry (in the BAR named by Table BIR)."""

    SIZE = MSIX_TABLE_ENTRY_SIZE

    msg_addr = Field(0, 4, "Message Address (bits 31:2; 1:0 reserved)")
    msg_upper_addr = Field(4, 4, "Message Upper Address")
    msg_data = Field(8, 4, "Message Data")
    vector_control = Field(12, 4, "Vector Control")
    masked = Flag(12, 4, 0, "Vector Control: Mask Bit")

    @property
    def address(self) -> int:
        """The 64-bit message address."""
        return (self.msg_upper_addr << 32) | self.msg_addr

    @address.setter
    def address(self, addr: int) -> None:
        if addr & 3 or not 0 <= addr < 1 << 64:
            raise ValueError(f"MSI-X message address {addr:#x} must be a dword-aligned 64-bit address")
        self.msg_addr = addr & 0xFFFFFFFF
        self.msg_upper_addr = addr >> 32


def msix_pba_size(entries: int) -> int:
    """Bytes of the pending bit array for ``entries`` vectors (whole qwords)."""
    if not 1 <= entries <= 2048:
        raise ValueError(f"MSI-X vector count {entries} out of range 1..2048")
    return (entries + 63) // 64 * 8


def msix_pba_position(vector: int) -> tuple[int, int]:
    """``(byte offset, bit)`` of ``vector``'s pending bit in the PBA."""
    if not 0 <= vector < 2048:
        raise ValueError(f"MSI-X vector {vector} out of range 0..2047")
    return vector >> 3, vector & 7


class PcieCapability(CapHeader):
    """PCI Express capability (ID 10h), version 2 layout, 60 bytes (endpoints
    without slots use the device and link registers; the slot and root
    registers are reserved for them)."""

    SIZE = 60

    pcie_cap = Field(2, 2, "PCI Express Capabilities register")
    version = Bits(2, 2, 0, 4, "Capability Version")
    port_type = Bits(2, 2, 4, 4, "Device/Port Type, see PcieDeviceType")
    slot_implemented = Flag(2, 2, 8, "Slot Implemented")
    interrupt_message_number = Bits(2, 2, 9, 5, "Interrupt Message Number")

    devcap = Field(4, 4, "Device Capabilities")
    max_payload_supported = Bits(4, 4, 0, 3, "Device Capabilities: Max_Payload_Size Supported (128 << n)")
    phantom_functions = Bits(4, 4, 3, 2, "Device Capabilities: Phantom Functions Supported")
    extended_tag_supported = Flag(4, 4, 5, "Device Capabilities: Extended Tag Field Supported")
    l0s_latency = Bits(4, 4, 6, 3, "Device Capabilities: Endpoint L0s Acceptable Latency")
    l1_latency = Bits(4, 4, 9, 3, "Device Capabilities: Endpoint L1 Acceptable Latency")
    role_based_error = Flag(4, 4, 15, "Device Capabilities: Role-Based Error Reporting")
    slot_power_value = Bits(4, 4, 18, 8, "Device Capabilities: Captured Slot Power Limit Value")
    slot_power_scale = Bits(4, 4, 26, 2, "Device Capabilities: Captured Slot Power Limit Scale")
    flr_capable = Flag(4, 4, 28, "Device Capabilities: Function Level Reset Capability")

    devctl = Field(8, 2, "Device Control")
    correctable_error_reporting = Flag(8, 2, 0, "Device Control: Correctable Error Reporting Enable")
    non_fatal_error_reporting = Flag(8, 2, 1, "Device Control: Non-Fatal Error Reporting Enable")
    fatal_error_reporting = Flag(8, 2, 2, "Device Control: Fatal Error Reporting Enable")
    unsupported_request_reporting = Flag(8, 2, 3, "Device Control: Unsupported Request Reporting Enable")
    relaxed_ordering = Flag(8, 2, 4, "Device Control: Enable Relaxed Ordering")
    max_payload = Bits(8, 2, 5, 3, "Device Control: Max_Payload_Size (128 << n)")
    extended_tag = Flag(8, 2, 8, "Device Control: Extended Tag Field Enable")
    phantom_functions_enable = Flag(8, 2, 9, "Device Control: Phantom Functions Enable")
    aux_power_pm = Flag(8, 2, 10, "Device Control: Aux Power PM Enable")
    no_snoop = Flag(8, 2, 11, "Device Control: Enable No Snoop")
    max_read_request = Bits(8, 2, 12, 3, "Device Control: Max_Read_Request_Size (128 << n)")
    initiate_flr = Flag(8, 2, 15, "Device Control: Initiate Function Level Reset")

    devsta = Field(10, 2, "Device Status")
    correctable_error_detected = Flag(10, 2, 0, "Device Status: Correctable Error Detected")
    non_fatal_error_detected = Flag(10, 2, 1, "Device Status: Non-Fatal Error Detected")
    fatal_error_detected = Flag(10, 2, 2, "Device Status: Fatal Error Detected")
    unsupported_request_detected = Flag(10, 2, 3, "Device Status: Unsupported Request Detected")
    aux_power_detected = Flag(10, 2, 4, "Device Status: AUX Power Detected")
    transactions_pending = Flag(10, 2, 5, "Device Status: Transactions Pending")

    lnkcap = Field(12, 4, "Link Capabilities")
    max_link_speed = Bits(12, 4, 0, 4, "Link Capabilities: Max Link Speed")
    max_link_width = Bits(12, 4, 4, 6, "Link Capabilities: Maximum Link Width")
    aspm_support = Bits(12, 4, 10, 2, "Link Capabilities: ASPM Support")
    l0s_exit_latency = Bits(12, 4, 12, 3, "Link Capabilities: L0s Exit Latency")
    l1_exit_latency = Bits(12, 4, 15, 3, "Link Capabilities: L1 Exit Latency")
    clock_pm = Flag(12, 4, 18, "Link Capabilities: Clock Power Management")
    surprise_down_reporting = Flag(12, 4, 19, "Link Capabilities: Surprise Down Error Reporting Capable")
    dll_active_reporting = Flag(12, 4, 20, "Link Capabilities: Data Link Layer Link Active Reporting Capable")
    bandwidth_notification = Flag(12, 4, 21, "Link Capabilities: Link Bandwidth Notification Capability")
    port_number = Bits(12, 4, 24, 8, "Link Capabilities: Port Number")

    lnkctl = Field(16, 2, "Link Control")
    aspm_control = Bits(16, 2, 0, 2, "Link Control: ASPM Control")
    read_completion_boundary = Flag(16, 2, 3, "Link Control: Read Completion Boundary (0: 64, 1: 128 bytes)")
    link_disable = Flag(16, 2, 4, "Link Control: Link Disable")
    retrain_link = Flag(16, 2, 5, "Link Control: Retrain Link")
    common_clock = Flag(16, 2, 6, "Link Control: Common Clock Configuration")
    extended_synch = Flag(16, 2, 7, "Link Control: Extended Synch")

    lnksta = Field(18, 2, "Link Status")
    current_link_speed = Bits(18, 2, 0, 4, "Link Status: Current Link Speed")
    negotiated_link_width = Bits(18, 2, 4, 6, "Link Status: Negotiated Link Width")
    link_training = Flag(18, 2, 11, "Link Status: Link Training")
    slot_clock = Flag(18, 2, 12, "Link Status: Slot Clock Configuration")
    dll_link_active = Flag(18, 2, 13, "Link Status: Data Link Layer Link Active")

    sltcap = Field(20, 4, "Slot Capabilities")
    sltctl = Field(24, 2, "Slot Control")
    sltsta = Field(26, 2, "Slot Status")
    rtctl = Field(28, 2, "Root Control")
    rtcap = Field(30, 2, "Root Capabilities")
    rtsta = Field(32, 4, "Root Status")
    devcap2 = Field(36, 4, "Device Capabilities 2")
    devctl2 = Field(40, 2, "Device Control 2")
    devsta2 = Field(42, 2, "Device Status 2")
    lnkcap2 = Field(44, 4, "Link Capabilities 2")
    lnkctl2 = Field(48, 2, "Link Control 2")
    lnksta2 = Field(50, 2, "Link Status 2")
    sltcap2 = Field(52, 4, "Slot Capabilities 2")
    sltctl2 = Field(56, 2, "Slot Control 2")
    sltsta2 = Field(58, 2, "Slot Status 2")


class ExtCapHeader(Struct):
    """The 32-bit header of an extended capability (offset 100h and up)."""

    SIZE = 4

    value = Field(0, 4, "The whole header")
    ext_cap_id = Bits(0, 4, 0, 16, "PCI Express Extended Capability ID, see ExtCapId")
    ext_cap_version = Bits(0, 4, 16, 4, "Capability Version")
    ext_cap_next = Bits(0, 4, 20, 12, "Next Capability Offset (0 ends the list)")


# --- walking the lists -------------------------------------------------------


def _bytes(config) -> memoryview:
    mv = config if isinstance(config, memoryview) else memoryview(config)
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def iter_capabilities(config) -> Iterator[tuple[int, int]]:
    """Yield ``(offset, capability id)`` for each entry of the capability
    list of a configuration space buffer (at least the 64-byte header).

    Nothing is yielded when Status.Capabilities List is clear.  Pointers
    have their two low bits ignored, as PCI requires.  A pointer into the
    header or past the conventional 256 bytes, or a list that loops,
    raises ``ValueError``."""
    mv = _bytes(config)
    header = ConfigHeader.view(mv)
    if not header.cap_list:
        return
    end = min(len(mv), PCI_CFG_SPACE_SIZE)
    seen: set[int] = set()
    ptr = header.capabilities_pointer & 0xFC
    while ptr:
        if ptr < PCI_CAPABILITY_START or ptr + CapHeader.SIZE > end:
            raise ValueError(f"capability pointer {ptr:#x} outside {PCI_CAPABILITY_START:#x}..{end:#x}")
        if ptr in seen:
            raise ValueError(f"capability list loops at {ptr:#x}")
        seen.add(ptr)
        yield ptr, mv[ptr]
        ptr = mv[ptr + 1] & 0xFC


def find_capability(config, cap_id: int) -> int | None:
    """Offset of the first capability with ``cap_id``, or None."""
    for offset, cid in iter_capabilities(config):
        if cid == cap_id:
            return offset
    return None


def iter_ext_capabilities(config) -> Iterator[tuple[int, int, int]]:
    """Yield ``(offset, extended capability id, version)`` for each entry of
    the extended capability list (from 100h) of a 4 KiB configuration space
    buffer.  A header of 0 or FFFFFFFFh at 100h means there is no list;
    bad pointers or loops raise ``ValueError``."""
    mv = _bytes(config)
    if len(mv) < PCI_CFG_SPACE_EXP_SIZE:
        return
    seen: set[int] = set()
    ptr = PCI_EXT_CAPABILITY_START
    while ptr:
        if ptr < PCI_EXT_CAPABILITY_START or ptr + ExtCapHeader.SIZE > PCI_CFG_SPACE_EXP_SIZE:
            raise ValueError(f"extended capability pointer {ptr:#x} outside 100h..FFFh")
        if ptr in seen:
            raise ValueError(f"extended capability list loops at {ptr:#x}")
        seen.add(ptr)
        hdr = ExtCapHeader.view(mv, ptr)
        if hdr.value in (0, 0xFFFFFFFF):
            if ptr == PCI_EXT_CAPABILITY_START:
                return
            raise ValueError(f"empty extended capability header at {ptr:#x}")
        yield ptr, hdr.ext_cap_id, hdr.ext_cap_version
        ptr = hdr.ext_cap_next & 0xFFC


def find_ext_capability(config, cap_id: int) -> int | None:
    """Offset of the first extended capability with ``cap_id``, or None."""
    for offset, cid, _ in iter_ext_capabilities(config):
        if cid == cap_id:
            return offset
    return None
