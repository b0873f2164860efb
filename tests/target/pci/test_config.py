"""Configuration space of the PCIe function: ids, capability list, write
masks, BAR sizing, command/status, power management, MSI/MSI-X control, FLR."""

import pytest

from nvmestack.spec.pci import (
    NVME_CLASS_CODE,
    CapId,
    Cfg,
    ConfigHeader,
    MsiCapability64,
    MsixCapability,
    PciCommand,
    PcieCapability,
    PcieDeviceType,
    PciStatus,
    PmCapability,
    PowerState,
    find_capability,
    iter_capabilities,
    iter_ext_capabilities,
)
from nvmestack.target.pci.config import PCI_DEVICE_ID, PCI_VENDOR_ID, ConfigSpace

BAR0_SIZE = 16 * 1024


@pytest.fixture
def cfg():
    return ConfigSpace(16, BAR0_SIZE)


def struct_at(cfg, cls, offset):
    return cls.from_bytes(cfg.snapshot()[offset : offset + cls.SIZE])


# --- identity ------------------------------------------------------------------


def test_ids_class_code_and_header(cfg):
    # Our own ids, not QEMU's 1b36:0010 (which Linux's nvme driver quirks).
    assert cfg.read(Cfg.VENDOR_ID, 2) == PCI_VENDOR_ID == 0x4E56
    assert cfg.read(Cfg.DEVICE_ID, 2) == PCI_DEVICE_ID == 0x0001
    assert cfg.read(0, 4) == 0x0001_4E56
    assert cfg.read(Cfg.REVISION_ID, 4) >> 8 == NVME_CLASS_CODE == 0x010802
    assert cfg.read(Cfg.CLASS_BASE, 1) == 0x01 and cfg.read(Cfg.CLASS_DEVICE, 1) == 0x08
    assert cfg.read(Cfg.CLASS_PROG, 1) == 0x02
    assert cfg.read(Cfg.HEADER_TYPE, 1) == 0
    assert cfg.read(Cfg.INTERRUPT_PIN, 1) == 1  # INTA#
    header = ConfigHeader.from_bytes(cfg.snapshot()[:64])
    assert header.cap_list and header.capabilities_pointer == 0x40
    assert (header.subsystem_vendor_id, header.subsystem_id) == (PCI_VENDOR_ID, PCI_DEVICE_ID)
    assert header.command == 0 and not header.interrupt_status


def test_ids_are_configurable():
    cfg = ConfigSpace(4, BAR0_SIZE, vendor_id=0x1234, device_id=0x5678, revision_id=7,
                      subsystem_vendor_id=0xAAAA, subsystem_id=0xBBBB)
    assert cfg.read(0, 4) == 0x5678_1234
    assert cfg.read(Cfg.REVISION_ID, 1) == 7
    assert cfg.read(Cfg.SUBSYSTEM_VENDOR_ID, 4) == 0xBBBB_AAAA
    with pytest.raises(ValueError):
        ConfigSpace(4, BAR0_SIZE, vendor_id=0xFFFF)  # "no function here"


@pytest.mark.parametrize("nvec, size", [(0, BAR0_SIZE), (2049, 1 << 20), (16, 3 * 4096), (16, 8 * 1024)])
def test_bad_construction(nvec, size):
    with pytest.raises(ValueError):
        ConfigSpace(nvec, size)


# --- capability list ---------------------------------------------------------------


def test_capability_list_walk(cfg):
    snap = cfg.snapshot()
    assert len(snap) == 4096
    assert list(iter_capabilities(snap)) == [
        (0x40, CapId.PM), (0x50, CapId.MSI), (0x70, CapId.MSIX), (0x80, CapId.PCIE)]
    assert find_capability(snap, CapId.PM) == cfg.pm_offset
    assert find_capability(snap, CapId.MSI) == cfg.msi_offset
    assert find_capability(snap, CapId.MSIX) == cfg.msix_offset
    assert find_capability(snap, CapId.PCIE) == cfg.pcie_offset
    assert list(iter_ext_capabilities(snap)) == []  # zero header at 100h
    assert cfg.read(0x100, 4) == 0


def test_pm_capability(cfg):
    pm = struct_at(cfg, PmCapability, cfg.pm_offset)
    assert pm.pm_version == 3 and not pm.d1_support and not pm.d2_support and pm.pme_support == 0
    assert pm.power_state == PowerState.D0 and pm.no_soft_reset


def test_msi_capability(cfg):
    msi = struct_at(cfg, MsiCapability64, cfg.msi_offset)
    assert msi.addr64 and msi.per_vector_masking
    assert msi.vectors_capable == 16  # smallest power of two covering 16 MSI-X vectors
    assert not msi.msi_enable and msi.vectors_enabled == 1
    assert ConfigSpace(64, 1 << 16).msi_vectors_capable == 32  # MSI stops at 32
    assert ConfigSpace(3, BAR0_SIZE).msi_vectors_capable == 4


def test_msix_capability_points_into_bar0(cfg):
    msix = struct_at(cfg, MsixCapability, cfg.msix_offset)
    assert msix.table_entries == 16
    assert msix.table_bir == 0 and msix.pba_bir == 0
    assert msix.table_offset == cfg.msix_table_offset == 0x2000
    assert msix.pba_offset == cfg.msix_pba_offset == 0x3000
    assert not msix.msix_enable and not msix.function_mask
    # a big table pushes the PBA further; both must fit in BAR0
    big = ConfigSpace(2048, 1 << 16)
    assert big.msix_pba_offset >= big.msix_table_offset + 2048 * 16
    assert big.msix_pba_offset + big.msix_pba_size <= 1 << 16


def test_pcie_capability(cfg):
    pcie = struct_at(cfg, PcieCapability, cfg.pcie_offset)
    assert pcie.cap_next == 0
    assert pcie.version == 2 and pcie.port_type == PcieDeviceType.ENDPOINT and not pcie.slot_implemented
    assert pcie.flr_capable and pcie.role_based_error
    assert not pcie.initiate_flr
    # the link is up at a speed and width it is capable of
    assert 1 <= pcie.current_link_speed <= pcie.max_link_speed
    assert 1 <= pcie.negotiated_link_width <= pcie.max_link_width
    assert pcie.lnkcap2 >> pcie.max_link_speed & 1  # speed listed in the Supported Link Speeds Vector
    assert not pcie.link_training


# --- write masks -------------------------------------------------------------------


def test_read_only_registers_ignore_writes(cfg):
    before = cfg.snapshot()
    for off in (0x00, 0x08, 0x0C, 0x2C, 0x34, 0x3C, 0x40, 0x50, 0x70, 0x74, 0x78, 0x80, 0x84, 0x8C, 0x100, 0xFFC):
        cfg.write(off, 4, 0xFFFFFFFF)
        cfg.write(off, 4, 0)
    after = cfg.snapshot()
    assert after[0x00:0x04] == before[0x00:0x04]  # ids
    assert after[0x08:0x0C] == before[0x08:0x0C]  # revision, class code
    assert after[0x0E] == 0  # header type
    assert after[0x2C:0x30] == before[0x2C:0x30]  # subsystem ids
    assert after[0x34] == 0x40 and after[0x3D] == 1  # capability pointer, interrupt pin
    assert list(iter_capabilities(after)) == list(iter_capabilities(before))
    assert after[0x84:0x88] == before[0x84:0x88]  # device capabilities
    assert after[0x8C:0x90] == before[0x8C:0x90]  # link capabilities
    assert after[0x100:] == bytes(0xF00)  # extended space: nothing


def test_rw_scratch_registers(cfg):
    cfg.write(Cfg.CACHE_LINE_SIZE, 1, 0x10)
    cfg.write(Cfg.INTERRUPT_LINE, 1, 11)
    assert cfg.read(Cfg.CACHE_LINE_SIZE, 1) == 0x10 and cfg.read(Cfg.INTERRUPT_LINE, 1) == 11
    cfg.write(Cfg.LATENCY_TIMER, 1, 0xFF)  # hardwired 0 on PCI Express
    assert cfg.read(Cfg.LATENCY_TIMER, 1) == 0


def test_command_register_bits(cfg):
    cfg.write(Cfg.COMMAND, 2, 0xFFFF)
    cmd = cfg.read(Cfg.COMMAND, 2)
    assert cmd == (PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER | PciCommand.PARITY_ERROR_RESPONSE
                   | PciCommand.SERR_ENABLE | PciCommand.INTX_DISABLE)
    assert not cmd & PciCommand.IO_SPACE  # no I/O BAR
    assert cfg.memory_space_enabled and cfg.bus_master_enabled and cfg.intx_disabled
    cfg.write(Cfg.COMMAND, 2, PciCommand.MEMORY_SPACE)
    assert cfg.memory_space_enabled and not cfg.bus_master_enabled and not cfg.intx_disabled
    cfg.write(Cfg.COMMAND, 1, PciCommand.BUS_MASTER)  # byte access
    assert cfg.bus_master_enabled and not cfg.memory_space_enabled
    cfg.write(Cfg.COMMAND + 1, 1, PciCommand.INTX_DISABLE >> 8)
    assert cfg.intx_disabled and cfg.bus_master_enabled


def test_status_rw1c_and_read_only_bits(cfg):
    assert cfg.status == PciStatus.CAP_LIST
    cfg.write(Cfg.STATUS, 2, 0xFFFF)  # nothing to clear, read-only bits stay
    assert cfg.status == PciStatus.CAP_LIST
    cfg.report_status(PciStatus.RECEIVED_MASTER_ABORT | PciStatus.DETECTED_PARITY_ERROR | PciStatus.CAP_LIST)
    cfg.set_interrupt_status(True)
    assert cfg.status == (PciStatus.CAP_LIST | PciStatus.RECEIVED_MASTER_ABORT | PciStatus.DETECTED_PARITY_ERROR
                          | PciStatus.INTERRUPT_STATUS)
    # a dword write of Command with zeros in the Status half clears nothing
    cfg.write(Cfg.COMMAND, 4, PciCommand.MEMORY_SPACE)
    assert cfg.status & PciStatus.RECEIVED_MASTER_ABORT
    cfg.write(Cfg.STATUS, 2, PciStatus.RECEIVED_MASTER_ABORT | PciStatus.INTERRUPT_STATUS | PciStatus.CAP_LIST)
    assert cfg.status == PciStatus.CAP_LIST | PciStatus.DETECTED_PARITY_ERROR | PciStatus.INTERRUPT_STATUS
    cfg.write(Cfg.COMMAND, 4, 0xFFFF_0000)
    assert cfg.status == PciStatus.CAP_LIST | PciStatus.INTERRUPT_STATUS
    assert cfg.command == 0


def test_pcie_device_control_and_status(cfg):
    off = cfg.pcie_offset
    cfg.write(off + 8, 2, 0xFFFF & ~(1 << 15))
    pcie = struct_at(cfg, PcieCapability, off)
    assert pcie.max_payload == 7 and pcie.max_read_request == 7 and pcie.extended_tag
    assert not pcie.phantom_functions_enable and not pcie.aux_power_pm  # not supported: read 0
    cfg.report_device_status(0x1F)
    assert cfg.read(off + 10, 2) == 0xF  # bit 4 (AUX power) is not an error bit
    cfg.write(off + 10, 2, 0x5)
    assert cfg.read(off + 10, 2) == 0xA
    cfg.write(off + 16, 2, 0xFFFF)
    assert cfg.read(off + 16, 2) == 0x00CB  # link disable / retrain are reserved for endpoints
    cfg.write(off + 18, 2, 0)
    assert struct_at(cfg, PcieCapability, off).current_link_speed != 0  # link status read-only


# --- BAR0 --------------------------------------------------------------------------


def test_bar0_sizing_protocol(cfg):
    assert cfg.read(Cfg.BAR0, 4) == 0x4  # 64-bit memory, not prefetchable
    cfg.write(Cfg.BAR0, 4, 0xFFFFFFFF)
    cfg.write(Cfg.BAR1, 4, 0xFFFFFFFF)
    low, high = cfg.read(Cfg.BAR0, 4), cfg.read(Cfg.BAR1, 4)
    assert low & 0xF == 0x4
    size = ((~(high << 32 | (low & ~0xF))) & (1 << 64) - 1) + 1
    assert size == BAR0_SIZE
    cfg.write(Cfg.BAR0, 4, 0xFEB0_0000)
    cfg.write(Cfg.BAR1, 4, 0x0000_0012)
    assert cfg.read(Cfg.BAR0, 4) == 0xFEB0_0004
    assert cfg.bar0_address == 0x12_FEB0_0000
    header = ConfigHeader.from_bytes(cfg.snapshot()[:64])
    assert header.bars[0].is_64bit and header.bar_address(0) == 0x12_FEB0_0000
    cfg.write(Cfg.BAR0, 4, 0xFEB0_1234)  # bits below the size are not writable
    assert cfg.read(Cfg.BAR0, 4) == 0xFEB0_0004


def test_big_bar_masks_upper_dword():
    cfg = ConfigSpace(4, 8 << 30)
    cfg.write(Cfg.BAR0, 4, 0xFFFFFFFF)
    cfg.write(Cfg.BAR1, 4, 0xFFFFFFFF)
    assert cfg.read(Cfg.BAR0, 4) == 0x4 and cfg.read(Cfg.BAR1, 4) == 0xFFFFFFFE


def test_other_bars_and_rom_read_zero(cfg):
    for off in (Cfg.BAR2, Cfg.BAR3, Cfg.BAR4, Cfg.BAR5, Cfg.CARDBUS_CIS, Cfg.ROM_ADDRESS):
        cfg.write(off, 4, 0xFFFFFFFF)
        assert cfg.read(off, 4) == 0, hex(off)


# --- access sizes ---------------------------------------------------------------------


def test_sub_dword_reads(cfg):
    dword = cfg.read(0x08, 4)
    assert cfg.read(0x08, 1) | cfg.read(0x09, 1) << 8 | cfg.read(0x0A, 2) << 16 == dword


@pytest.mark.parametrize("offset, size", [(1, 2), (2, 4), (0x11, 4), (4096, 4), (5000, 1), (-4, 4), (0, 3), (0, 8)])
def test_invalid_accesses_read_ones_and_drop_writes(cfg, offset, size):
    before = cfg.snapshot()
    assert cfg.read(offset, size) == (1 << (8 * size)) - 1
    cfg.write(offset, size, 0)
    cfg.write(offset, size, (1 << (8 * size)) - 1)
    assert cfg.snapshot() == before


def test_odd_byte_offsets_are_fine(cfg):
    cfg.write(Cfg.COMMAND + 1, 1, 0x04)
    assert cfg.read(Cfg.COMMAND + 1, 1) == 0x04 and cfg.intx_disabled


# --- power management -------------------------------------------------------------------


def test_power_states(cfg):
    pmcsr = cfg.pm_offset + 4
    cfg.write(Cfg.COMMAND, 2, PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER)
    cfg.write(Cfg.BAR0, 4, 0xFEB0_0000)
    cfg.write(pmcsr, 2, PowerState.D3HOT)
    assert cfg.power_state == PowerState.D3HOT
    assert not cfg.memory_space_enabled and not cfg.bus_master_enabled  # config requests only
    cfg.write(pmcsr, 2, PowerState.D1)  # unsupported: discarded
    assert cfg.power_state == PowerState.D3HOT
    cfg.write(pmcsr, 2, PowerState.D0)
    assert cfg.power_state == PowerState.D0
    assert cfg.memory_space_enabled and cfg.read(Cfg.BAR0, 4) == 0xFEB0_0004  # No_Soft_Reset: state kept
    cfg.write(pmcsr, 2, PowerState.D2)
    assert cfg.power_state == PowerState.D0
    cfg.write(pmcsr, 2, 0xFFFC)  # PME bits are hardwired 0, No_Soft_Reset read-only
    assert cfg.read(pmcsr, 2) == 0x0008


# --- MSI / MSI-X control ---------------------------------------------------------------


def test_msi_control_and_registers():
    cfg = ConfigSpace(4, BAR0_SIZE)  # 4 MSI vectors capable
    off = cfg.msi_offset
    cfg.write(off + 2, 2, 0xFFFF)
    ctrl = cfg.read(off + 2, 2)
    assert ctrl & 1 and cfg.msi_enabled
    assert (ctrl >> 4) & 7 == 2 and cfg.msi_vectors_enabled == 4  # MME limited to MMC
    assert (ctrl >> 1) & 7 == 2 and ctrl & (1 << 7) and ctrl & (1 << 8)
    assert ctrl >> 9 == 0  # reserved / extended message data not capable
    cfg.write(off + 2, 2, 1 | 1 << 4)
    assert cfg.msi_vectors_enabled == 2
    cfg.write(off + 4, 4, 0xFEE0_1003)
    cfg.write(off + 8, 4, 0x1)
    cfg.write(off + 12, 4, 0xFFFF_4021)
    assert cfg.msi_address == 0x1_FEE0_1000  # address bits 1:0 reserved
    assert cfg.msi_data == 0x4021 and cfg.read(off + 14, 2) == 0
    cfg.write(off + 16, 4, 0xFFFFFFFF)
    assert cfg.msi_mask_bits == 0xF  # only the capable vectors have mask bits
    cfg.write(off + 20, 4, 0xFFFFFFFF)
    assert cfg.msi_pending_bits == 0  # read-only
    cfg.set_msi_pending(0xFF)
    assert cfg.read(off + 20, 4) == 0xF
    cfg.write(off + 2, 2, 0)
    assert not cfg.msi_enabled


def test_msix_control(cfg):
    off = cfg.msix_offset
    cfg.write(off + 2, 2, 0xFFFF)
    assert cfg.read(off + 2, 2) == 0xC000 | 15  # enable, function mask, table size read-only
    assert cfg.msix_enabled and cfg.msix_function_mask
    cfg.write(off + 3, 1, 0x80)
    assert cfg.msix_enabled and not cfg.msix_function_mask
    cfg.write(off + 4, 4, 0)
    cfg.write(off + 8, 4, 0)
    assert cfg.read(off + 4, 4) == 0x2000 and cfg.read(off + 8, 4) == 0x3000


def test_listeners_run_after_writes(cfg):
    seen = []
    cfg.add_listener(lambda: seen.append(cfg.command))
    cfg.write(Cfg.COMMAND, 2, PciCommand.BUS_MASTER)
    assert seen == [PciCommand.BUS_MASTER]
    cfg.write(4096, 4, 0)  # dropped: nobody is told
    assert len(seen) == 1


# --- function level reset ------------------------------------------------------------------


def test_function_level_reset():
    events = []
    cfg = ConfigSpace(8, BAR0_SIZE, on_flr=lambda: events.append(("flr", cfg.command, cfg.msix_enabled)))
    cfg.add_reset_listener(lambda: events.append(("listener",)))
    devctl = cfg.pcie_offset + 8
    cfg.write(Cfg.COMMAND, 2, PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER)
    cfg.write(Cfg.BAR0, 4, 0xFEB0_0000)
    cfg.write(cfg.msix_offset + 2, 2, 0x8000)
    cfg.write(cfg.msi_offset + 4, 4, 0xFEE0_0000)
    cfg.write(Cfg.INTERRUPT_LINE, 1, 9)
    cfg.write(devctl, 2, (cfg.read(devctl, 2) & ~(7 << 5)) | 1 << 5)  # MPS 256 bytes
    cfg.write(cfg.pm_offset + 4, 2, PowerState.D3HOT)
    assert events == []
    cfg.write(devctl, 2, cfg.read(devctl, 2) | 1 << 15)
    assert events == [("listener",), ("flr", 0, False)]
    assert cfg.flr_count == 1
    assert not cfg.read(devctl, 2) & 1 << 15  # Initiate FLR always reads 0
    assert (cfg.read(devctl, 2) >> 5) & 7 == 1  # link-related setting survives
    assert cfg.command == 0 and not cfg.bus_master_enabled and not cfg.memory_space_enabled
    assert cfg.read(Cfg.BAR0, 4) == 0x4 and cfg.read(Cfg.INTERRUPT_LINE, 1) == 0
    assert not cfg.msix_enabled and cfg.msi_address == 0 and cfg.power_state == PowerState.D0
    assert cfg.read(0, 4) == 0x0001_4E56  # identity untouched


def test_flr_bit_in_dword_write_and_without_callback(cfg):
    cfg.write(Cfg.COMMAND, 2, PciCommand.BUS_MASTER)
    cfg.write(cfg.pcie_offset + 8, 4, 1 << 15)  # Device Control + Device Status in one dword
    assert cfg.flr_count == 1 and cfg.command == 0
    cfg.write(cfg.pcie_offset + 8, 2, 0)
    assert cfg.flr_count == 1  # writing 0 does nothing


def test_conventional_reset(cfg):
    seen = []
    cfg.add_reset_listener(lambda: seen.append(1))
    cfg.write(Cfg.COMMAND, 2, PciCommand.BUS_MASTER)
    cfg.reset()
    assert cfg.command == 0 and seen == [1] and cfg.flr_count == 0
