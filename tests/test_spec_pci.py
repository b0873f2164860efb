import pytest

from nvmestack.spec.pci import (
    NVME_CLASS_CODE,
    PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE,
    Bar,
    CapHeader,
    CapId,
    ConfigHeader,
    ExtCapHeader,
    ExtCapId,
    MemBarType,
    MsiCapability32,
    MsiCapability64,
    MsixCapability,
    MsixTableEntry,
    PciCommand,
    PcieCapability,
    PcieDeviceType,
    PciStatus,
    PmCapability,
    PowerState,
    bar_size_mask,
    find_capability,
    find_ext_capability,
    iter_capabilities,
    iter_ext_capabilities,
    msix_pba_position,
    msix_pba_size,
)


def le(raw, off, size):
    return int.from_bytes(bytes(raw)[off : off + size], "little")


def test_constants():
    assert NVME_CLASS_CODE == 0x010802
    assert (PCI_CFG_SPACE_SIZE, PCI_CFG_SPACE_EXP_SIZE) == (256, 4096)
    assert (CapId.PM, CapId.MSI, CapId.PCIE, CapId.MSIX) == (0x01, 0x05, 0x10, 0x11)
    assert PciCommand.IO_SPACE == 1 and PciCommand.MEMORY_SPACE == 2 and PciCommand.BUS_MASTER == 4
    assert PciCommand.INTX_DISABLE == 1 << 10
    assert PciStatus.CAP_LIST == 1 << 4


def test_header_offsets_encode():
    h = ConfigHeader(
        vendor_id=0x1B36, device_id=0x0010, revision_id=2, class_code=NVME_CLASS_CODE,
        subsystem_vendor_id=0x1AF4, subsystem_id=0x1100, capabilities_pointer=0x40,
        interrupt_line=11, interrupt_pin=1, header_type=0x80, cache_line_size=0x10, latency_timer=0x20,
    )
    raw = bytes(h)
    assert ConfigHeader.SIZE == 64 and len(raw) == 64
    assert le(raw, 0x00, 2) == 0x1B36 and le(raw, 0x02, 2) == 0x0010
    assert raw[0x08] == 2
    assert raw[0x09:0x0C] == bytes([0x02, 0x08, 0x01])  # prog-if, subclass, base class
    assert raw[0x0C] == 0x10 and raw[0x0D] == 0x20 and raw[0x0E] == 0x80
    assert le(raw, 0x2C, 2) == 0x1AF4 and le(raw, 0x2E, 2) == 0x1100
    assert raw[0x34] == 0x40 and raw[0x3C] == 11 and raw[0x3D] == 1
    back = ConfigHeader.decode(raw)
    assert (back.base_class, back.subclass, back.prog_if) == (1, 8, 2)
    assert back.multi_function and back.header_layout == 0


def test_command_status_bits():
    h = ConfigHeader()
    h.memory_space = True
    h.bus_master = True
    h.intx_disable = True
    assert h.command == PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER | PciCommand.INTX_DISABLE
    h.command = PciCommand.IO_SPACE
    assert h.io_space and not h.memory_space
    raw = bytearray(64)
    raw[0x06] = 0x18  # interrupt status + capabilities list
    d = ConfigHeader.decode(raw)
    assert d.cap_list and d.interrupt_status
    raw[0x0F] = 0x80 | 0x40 | 0x5
    assert d.bist_capable and d.bist_start and d.bist_code == 5
    raw[0x30:0x34] = (0xFFF80001).to_bytes(4, "little")
    assert d.rom_enable and d.rom_base == 0xFFF80000 >> 11


def test_bars():
    h = ConfigHeader()
    h.bars[0].value = 0xFEB0_0000 | MemBarType.BITS_64 << 1 | 1 << 3
    h.bars[1].value = 0x0000_0001
    h.bars[2].value = 0xC001  # I/O BAR
    raw = bytes(h)
    assert le(raw, 0x10, 4) == 0xFEB0000C and le(raw, 0x14, 4) == 1 and le(raw, 0x18, 4) == 0xC001
    b0 = h.bars[0]
    assert b0.space == 0 and b0.mem_type == MemBarType.BITS_64 and b0.prefetchable and b0.is_64bit
    assert h.bar_address(0) == 0x1_FEB0_0000
    assert h.bars[2].is_io and h.bar_address(2) == 0xC000
    assert Bar.decode((0x1000_0000).to_bytes(4, "little")).mem_base == 0x100_0000
    assert bar_size_mask(16 * 1024) == 0xFFFF_C000
    assert bar_size_mask(256, io=True) == 0xFFFF_FF00
    assert bar_size_mask(1 << 33, bits64=True) == 0xFFFF_FFFE_0000_0000
    with pytest.raises(ValueError):
        bar_size_mask(3000)
    with pytest.raises(ValueError):
        bar_size_mask(8)
    with pytest.raises(ValueError):
        bar_size_mask(1 << 32)


def test_pm_capability():
    assert PmCapability.SIZE == 8
    pm = PmCapability(cap_id=CapId.PM, cap_next=0x50, pm_version=3, d1_support=1, pme_support=0x1F)
    raw = bytes(pm)
    assert raw[0] == 0x01 and raw[1] == 0x50
    assert le(raw, 2, 2) == 3 | 1 << 9 | 0x1F << 11
    pm.power_state = PowerState.D3HOT
    pm.no_soft_reset = True
    assert le(pm.raw, 4, 2) == 0b1011
    d = PmCapability.decode(bytes([1, 0, 0, 0, 0x02, 0x81, 0, 0]))
    assert d.power_state == PowerState.D2 and d.pme_enable and d.pme_status


def test_msi_capability():
    assert (MsiCapability32.SIZE, MsiCapability64.SIZE) == (20, 24)
    msi = MsiCapability64(
        cap_id=CapId.MSI, msi_enable=1, multiple_message_capable=5, multiple_message_enable=2,
        addr64=1, per_vector_masking=1, message_address=0xFEE0_0000, message_upper_address=0x1,
        message_data=0x4021, mask_bits=0xF0, pending_bits=0x3,
    )
    raw = bytes(msi)
    assert le(raw, 2, 2) == 1 | 5 << 1 | 2 << 4 | 1 << 7 | 1 << 8
    assert le(raw, 4, 4) == 0xFEE0_0000 and le(raw, 8, 4) == 1
    assert le(raw, 12, 2) == 0x4021 and le(raw, 16, 4) == 0xF0 and le(raw, 20, 4) == 3
    assert msi.address == 0x1_FEE0_0000
    assert msi.vectors_capable == 32 and msi.vectors_enabled == 4
    m32 = MsiCapability32(message_address=0xFEE0_1000, message_data=0x55, mask_bits=1, pending_bits=2)
    raw32 = bytes(m32)
    assert le(raw32, 8, 2) == 0x55 and le(raw32, 12, 4) == 1 and le(raw32, 16, 4) == 2


def test_msix_capability_and_table():
    assert MsixCapability.SIZE == 12
    cap = MsixCapability(cap_id=CapId.MSIX, table_size=63, msix_enable=1, function_mask=1, table_bir=0, pba_bir=4)
    cap.table_offset = 0x2000
    cap.pba_offset = 0x3008
    raw = bytes(cap)
    assert le(raw, 2, 2) == 63 | 1 << 14 | 1 << 15
    assert le(raw, 4, 4) == 0x2000 and le(raw, 8, 4) == 0x3008 | 4
    assert cap.table_entries == 64 and cap.pba_offset == 0x3008
    with pytest.raises(ValueError):
        cap.table_offset = 0x2004
    with pytest.raises(ValueError):
        cap.table_size = 2048

    assert MsixTableEntry.SIZE == 16
    table = bytearray(16 * 4)
    e = MsixTableEntry.view(table, 16 * 2)
    e.address = 0x0000_0001_FEE0_0004
    e.msg_data = 0x41
    e.masked = True
    assert le(table, 32, 4) == 0xFEE0_0004 and le(table, 36, 4) == 1
    assert le(table, 40, 4) == 0x41 and le(table, 44, 4) == 1
    with pytest.raises(ValueError):
        e.address = 0xFEE0_0002
    other = MsixCapability(table_offset=0x1000, pba_offset=0x1800, table_size=7)
    assert le(other.raw, 4, 4) == 0x1000 and le(other.raw, 8, 4) == 0x1800
    assert MsixTableEntry(address=0xFEE0_0000).msg_addr == 0xFEE0_0000
    assert msix_pba_size(1) == 8 and msix_pba_size(64) == 8 and msix_pba_size(65) == 16
    assert msix_pba_position(9) == (1, 1)


def test_pcie_capability():
    assert PcieCapability.SIZE == 60
    cap = PcieCapability(cap_id=CapId.PCIE, version=2, port_type=PcieDeviceType.ENDPOINT, flr_capable=1,
                         max_payload_supported=1, max_link_speed=3, max_link_width=4, port_number=7)
    raw = bytes(cap)
    assert le(raw, 2, 2) == 2
    assert le(raw, 4, 4) == 1 | 1 << 28
    assert le(raw, 12, 4) == 3 | 4 << 4 | 7 << 24
    cap.initiate_flr = True
    cap.max_read_request = 2
    assert le(cap.raw, 8, 2) == 1 << 15 | 2 << 12
    raw2 = bytearray(60)
    raw2[2:4] = (0x92).to_bytes(2, "little")  # version 2, type 9
    raw2[10] = 0x20  # transactions pending
    raw2[18:20] = (3 | 8 << 4 | 1 << 13).to_bytes(2, "little")
    d = PcieCapability.decode(raw2)
    assert d.version == 2 and d.port_type == PcieDeviceType.RC_INTEGRATED_ENDPOINT
    assert d.transactions_pending
    assert d.current_link_speed == 3 and d.negotiated_link_width == 8 and d.dll_link_active
    assert PcieCapability.FIELDS["devcap2"].offset == 0x24
    assert PcieCapability.FIELDS["lnksta2"].offset == 0x32


def build_config():
    cfg = bytearray(PCI_CFG_SPACE_EXP_SIZE)
    h = ConfigHeader.view(cfg)
    h.cap_list = True
    h.capabilities_pointer = 0x40
    PmCapability.view(cfg, 0x40).cap_id = CapId.PM
    cfg[0x41] = 0x50
    MsixCapability.view(cfg, 0x50).cap_id = CapId.MSIX
    cfg[0x51] = 0x70 | 0x3  # low two bits must be ignored
    cfg[0x70] = CapId.PCIE
    cfg[0x71] = 0
    ExtCapHeader.view(cfg, 0x100).value = ExtCapId.AER | 1 << 16 | 0x148 << 20
    ExtCapHeader.view(cfg, 0x148).value = ExtCapId.DSN | 1 << 16
    return cfg


def test_capability_walk():
    cfg = build_config()
    assert list(iter_capabilities(cfg)) == [(0x40, 1), (0x50, 0x11), (0x70, 0x10)]
    assert find_capability(cfg, CapId.PCIE) == 0x70
    assert find_capability(cfg, CapId.MSI) is None
    assert CapHeader.view(cfg, 0x50).cap_next == 0x73
    assert list(iter_ext_capabilities(cfg)) == [(0x100, 1, 1), (0x148, 3, 1)]
    assert find_ext_capability(cfg, ExtCapId.DSN) == 0x148
    # a 256-byte space has no extended list
    assert list(iter_ext_capabilities(cfg[:256])) == []
    # without Status.Capabilities List nothing is walked
    ConfigHeader.view(cfg).cap_list = False
    assert list(iter_capabilities(cfg)) == []


def test_capability_walk_rejects_bad_lists():
    cfg = build_config()
    cfg[0x71] = 0x40  # loop back to the first
    with pytest.raises(ValueError, match="loops"):
        list(iter_capabilities(cfg))
    cfg = build_config()
    cfg[0x71] = 0x20  # into the header
    with pytest.raises(ValueError):
        list(iter_capabilities(cfg))
    cfg = build_config()
    ExtCapHeader.view(cfg, 0x148).value = ExtCapId.DSN | 1 << 16 | 0x100 << 20
    with pytest.raises(ValueError, match="loops"):
        list(iter_ext_capabilities(cfg))
    empty = bytearray(PCI_CFG_SPACE_EXP_SIZE)
    empty[0x100:0x104] = b"\xff\xff\xff\xff"
    assert list(iter_ext_capabilities(empty)) == []
