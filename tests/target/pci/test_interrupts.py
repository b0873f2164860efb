"""Interrupt logic: MSI-X table/PBA with vector and function masks, MSI with
mask and pending bits, INTx with INTMS/INTMC, coalescing with an injectable
clock, resets."""

import threading

import pytest

from nvmestack.spec.pci import Cfg, PciCommand, PciStatus
from nvmestack.target.pci.config import ConfigSpace
from nvmestack.target.pci.interrupts import Interrupts

NVEC = 8
TABLE = 0x2000
PBA = 0x3000


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def cfg():
    return ConfigSpace(NVEC, 16 * 1024)


@pytest.fixture
def sunk():
    return []


@pytest.fixture
def irq(cfg, clock, sunk):
    irq = Interrupts(cfg, NVEC, sink=sunk.append, clock=clock)
    yield irq
    irq.close()


def bus_master(cfg, on=True):
    cmd = cfg.command
    cfg.write(Cfg.COMMAND, 2, cmd | PciCommand.BUS_MASTER if on else cmd & ~PciCommand.BUS_MASTER)


def msix_control(cfg, enable=True, function_mask=False):
    cfg.write(cfg.msix_offset + 2, 2, (0x8000 if enable else 0) | (0x4000 if function_mask else 0))


def msix_unmask(irq, vector, masked=False):
    irq.msix_write(TABLE + 16 * vector + 12, 4, int(masked))


def pba(irq):
    return irq.msix_read(PBA, 8)


def msi_enable(cfg, log2_vectors=0):
    cfg.write(cfg.msi_offset + 2, 2, 1 | log2_vectors << 4)


def vectors(irq):
    return [v for v, _ in irq.fired]


@pytest.fixture
def msix(cfg, irq):
    """MSI-X enabled, Bus Master on, every vector still masked."""
    bus_master(cfg)
    msix_control(cfg)
    assert irq.mode == "msix"
    return irq


# --- MSI-X table and PBA ------------------------------------------------------------------


def test_table_out_of_reset(irq):
    for v in range(NVEC):
        assert irq.msix_read(TABLE + 16 * v + 12, 4) == 1  # masked
        assert irq.msix_read(TABLE + 16 * v, 8) == 0
    assert pba(irq) == 0
    assert irq.claims(TABLE) and irq.claims(TABLE + 16 * NVEC - 4) and irq.claims(PBA)
    assert not irq.claims(TABLE + 16 * NVEC) and not irq.claims(0x1000) and not irq.claims(PBA + 8)


def test_table_entry_fields(irq):
    base = TABLE + 16 * 3
    irq.msix_write(base, 8, 0x0000_0001_FEE0_2003)  # address (bits 1:0 reserved)
    irq.msix_write(base + 8, 4, 0x4041)
    irq.msix_write(base + 12, 4, 0xFFFF_FFFE)  # reserved bits, mask bit 0
    entry = irq.msix_entry(3)
    assert entry.address == 0x1_FEE0_2000 and entry.msg_data == 0x4041
    assert not entry.masked and entry.vector_control == 0
    assert irq.msix_read(base, 4) == 0xFEE0_2000 and irq.msix_read(base + 4, 4) == 1
    assert irq.msix_read(base + 8, 8) == 0x4041  # qword: data + vector control
    assert irq.msix_read(base + 1, 4) == 0  # misaligned
    irq.msix_write(base + 2, 4, 0xFFFFFFFF)  # misaligned write dropped
    assert irq.msix_read(base, 4) == 0xFEE0_2000
    irq.msix_write(TABLE + 16 * NVEC, 4, 0)  # past the table: nothing
    assert irq.msix_read(TABLE + 16 * NVEC, 4) == 0


def test_msix_unmasked_vector_delivers(msix, sunk, clock):
    msix_unmask(msix, 1)
    clock.now = 2.5
    msix.signal(1)
    assert sunk == [1] and msix.fired == [(1, 2.5)] and pba(msix) == 0
    assert msix.delivered[1] == 1


def test_msix_masked_vector_sets_pending_and_fires_on_unmask(msix, sunk):
    msix.signal(2)
    msix.signal(2)
    assert sunk == [] and pba(msix) == 1 << 2 and msix.msix_pending(2)
    msix_unmask(msix, 5)  # another vector: nothing
    assert sunk == [] and pba(msix) == 1 << 2
    msix_unmask(msix, 2)
    assert sunk == [2] and pba(msix) == 0  # one message for the pending bit
    msix_unmask(msix, 2, masked=True)
    msix_unmask(msix, 2)
    assert sunk == [2]


def test_msix_function_mask(msix, sunk, cfg):
    for v in range(NVEC):
        msix_unmask(msix, v)
    msix_control(cfg, function_mask=True)
    msix.signal(0)
    msix.signal(6)
    assert sunk == [] and pba(msix) == 1 << 0 | 1 << 6
    msix_unmask(msix, 6, masked=True)  # still masked by itself once the function mask goes
    msix_control(cfg)
    assert sunk == [0] and pba(msix) == 1 << 6
    msix_unmask(msix, 6)
    assert sunk == [0, 6] and pba(msix) == 0


def test_msix_needs_bus_master(msix, sunk, cfg):
    msix_unmask(msix, 1)
    bus_master(cfg, False)
    msix.signal(1)
    assert sunk == [] and pba(msix) == 2  # held, not lost
    bus_master(cfg)
    assert sunk == [1] and pba(msix) == 0


def test_msix_serviced_pending_bit_is_cleared(msix, sunk):
    msix.set_outstanding(3, True, source=7)
    msix.signal(3)
    assert pba(msix) == 1 << 3
    msix.set_outstanding(3, False, source=7)  # host consumed the completions meanwhile
    assert pba(msix) == 0
    msix_unmask(msix, 3)
    assert sunk == []


def test_msix_bad_vector_dropped(msix, sunk):
    msix.signal(NVEC)
    msix.signal(-1)
    assert sunk == [] and msix.dropped == 2


def test_pba_is_read_only(msix):
    msix.signal(4)
    msix.msix_write(PBA, 8, 0)
    assert pba(msix) == 1 << 4


def test_msix_disabled_then_enabled_delivers_pending(cfg, irq, sunk):
    bus_master(cfg)
    msix_control(cfg, function_mask=True)
    irq.signal(1)
    msix_unmask(irq, 1)
    assert sunk == [] and pba(irq) == 2
    msix_control(cfg, enable=True, function_mask=False)
    assert sunk == [1]


def test_sink_errors_do_not_escape(cfg, clock):
    def boom(vector):
        raise RuntimeError("host bug")

    irq = Interrupts(cfg, NVEC, sink=boom, clock=clock)
    bus_master(cfg)
    msix_control(cfg)
    msix_unmask(irq, 0)
    irq.signal(0)
    assert irq.fired == [(0, 0.0)]


def test_vector_count_must_match_table(cfg):
    with pytest.raises(ValueError):
        Interrupts(cfg, NVEC + 1)


# --- INTMS / INTMC with MSI-X ------------------------------------------------------------


def test_intms_reserved_with_msix(msix, cfg):
    msix.intms_write(0xFFFF)
    assert msix.intms_value == 0 and msix.intmc_value == 0
    msix_control(cfg, enable=False)
    assert msix.intms_value == 0  # the writes were ignored, not deferred
    msix.intms_write(0x5)
    assert msix.intms_value == 0x5
    msix_control(cfg)
    assert msix.intms_value == 0
    msix.intmc_write(0x5)
    msix_control(cfg, enable=False)
    assert msix.intms_value == 0x5


# --- MSI -------------------------------------------------------------------------------------


@pytest.fixture
def msi(cfg, irq):
    bus_master(cfg)
    msi_enable(cfg, 2)  # 4 vectors
    assert irq.mode == "msi" and cfg.msi_vectors_enabled == 4
    return irq


def test_msi_delivery_and_vector_folding(msi, sunk):
    msi.signal(1)
    msi.signal(6)  # only 4 messages allocated: 6 -> 2
    msi.signal(0)
    assert sunk == [1, 2, 0]


def test_msi_mask_bits_and_pending_bits(msi, cfg, sunk):
    mask, pending = cfg.msi_offset + 16, cfg.msi_offset + 20
    cfg.write(mask, 4, 0b0100)
    msi.signal(2)
    msi.signal(3)
    assert sunk == [3] and cfg.read(pending, 4) == 0b0100
    cfg.write(mask, 4, 0)
    assert sunk == [3, 2] and cfg.read(pending, 4) == 0


def test_msi_with_intms_intmc(msi, cfg, sunk):
    msi.intms_write(1 << 1 | 1 << 3)
    assert msi.intms_value == 0b1010 and msi.intmc_value == 0b1010
    msi.signal(1)
    msi.signal(0)
    assert sunk == [0] and cfg.msi_pending_bits == 0b0010
    msi.intmc_write(1 << 3)  # a different vector: nothing pending there
    assert sunk == [0] and msi.intms_value == 0b0010
    msi.intmc_write(1 << 1)
    assert sunk == [0, 1] and cfg.msi_pending_bits == 0 and msi.intms_value == 0


def test_msi_pending_dropped_when_serviced(msi, cfg, sunk):
    msi.intms_write(1)
    msi.set_outstanding(0, True, "cq0")
    msi.signal(0)
    assert cfg.msi_pending_bits == 1
    msi.set_outstanding(0, False, "cq0")
    assert cfg.msi_pending_bits == 0
    msi.intmc_write(1)
    assert sunk == []


def test_msi_needs_bus_master(msi, cfg, sunk):
    bus_master(cfg, False)
    msi.signal(1)
    assert sunk == [] and cfg.msi_pending_bits == 2
    bus_master(cfg)
    assert sunk == [1]


def test_msix_takes_precedence_over_msi(msi, cfg, sunk):
    msix_control(cfg)
    assert msi.mode == "msix"
    msi.signal(1)
    assert sunk == [] and pba(msi) == 2  # the MSI-X entry is masked


# --- INTx ------------------------------------------------------------------------------------


def interrupt_status(cfg):
    return bool(cfg.status & PciStatus.INTERRUPT_STATUS)


def test_intx_level_follows_outstanding_completions(cfg, irq, sunk):
    assert irq.mode == "intx" and not irq.intx_asserted
    irq.set_outstanding(0, True, source=0)
    irq.signal(0)
    assert irq.intx_asserted and interrupt_status(cfg) and sunk == [0]
    irq.signal(0)  # another completion while asserted: the host is told again
    assert irq.intx_asserted and sunk == [0, 0]
    irq.set_outstanding(0, False, source=0)  # host moved the CQ head to the tail
    assert not irq.intx_asserted and not interrupt_status(cfg)


def test_intx_shared_vector_needs_all_sources_consumed(irq):
    irq.set_outstanding(1, True, "a")
    irq.set_outstanding(1, True, "b")
    irq.signal(1)
    irq.set_outstanding(1, False, "a")
    assert irq.intx_asserted
    irq.set_outstanding(1, False, "b")
    assert not irq.intx_asserted


def test_intx_with_intms_intmc(cfg, irq, sunk):
    irq.intms_write(1 << 0)
    irq.signal(0)
    assert not irq.intx_asserted and not interrupt_status(cfg) and sunk == []
    assert irq.intx_status == {0}
    irq.signal(2)
    assert irq.intx_asserted and sunk == [2]
    irq.set_outstanding(2, False)
    assert not irq.intx_asserted
    irq.intmc_write(1 << 0)
    assert irq.intx_asserted and interrupt_status(cfg) and sunk == [2, 0]
    irq.intms_write(1 << 0)
    assert not irq.intx_asserted


def test_intx_disable_gates_the_pin_not_the_status(cfg, irq, sunk):
    cfg.write(Cfg.COMMAND, 2, PciCommand.INTX_DISABLE)
    irq.signal(0)
    assert not irq.intx_asserted and interrupt_status(cfg) and sunk == []
    cfg.write(Cfg.COMMAND, 2, 0)
    assert irq.intx_asserted and sunk == [0]


def test_intx_not_used_with_msi(cfg, irq, sunk):
    irq.signal(0)
    assert irq.intx_asserted
    bus_master(cfg)
    msi_enable(cfg)
    assert not irq.intx_asserted and not interrupt_status(cfg)


# --- coalescing --------------------------------------------------------------------------------


@pytest.fixture
def coalescing(msix):
    for v in range(NVEC):
        msix_unmask(msix, v)
    msix.set_coalescing(3, 10)  # 4 completions or 1 ms
    return msix


def test_coalescing_threshold(coalescing, sunk):
    for _ in range(3):
        coalescing.cq_completion(1)
    assert sunk == [] and coalescing.aggregated(1) == 3
    coalescing.cq_completion(1)
    assert sunk == [1] and coalescing.aggregated(1) == 0
    for _ in range(4):
        coalescing.cq_completion(1)
    assert sunk == [1, 1]


def test_coalescing_time(coalescing, sunk, clock):
    clock.now = 1.0
    coalescing.cq_completion(2)
    clock.now = 1.0005
    coalescing.cq_completion(2)
    assert coalescing.poll() == 0 and sunk == []
    clock.now = 1.0009
    assert coalescing.poll() == 0
    clock.now = 1.001  # 1 ms after the *first* completion
    assert coalescing.poll() == 1
    assert coalescing.fired == [(2, 1.001)]
    assert coalescing.poll() == 0


def test_expired_time_fires_on_next_completion(coalescing, sunk, clock):
    coalescing.cq_completion(2)
    clock.now = 0.5
    coalescing.cq_completion(3)  # vector 2 has waited long enough: it fires now
    assert sunk == [2] and coalescing.aggregated(3) == 1


def test_admin_vector_never_coalesced(coalescing, sunk):
    coalescing.set_vector_config(0, False)  # even if asked
    coalescing.cq_completion(0)
    assert sunk == [0]


def test_coalescing_disable_and_uncoalesced_queues(coalescing, sunk):
    coalescing.set_vector_config(4, True)
    coalescing.cq_completion(4)
    assert sunk == [4]
    coalescing.cq_completion(5, coalesce=False)
    assert sunk == [4, 5]
    coalescing.cq_completion(6)
    coalescing.cq_completion(6)
    coalescing.set_vector_config(6, True)  # disabling flushes what was aggregated
    assert sunk == [4, 5, 6]
    coalescing.set_vector_config(6, False)
    coalescing.cq_completion(6)
    assert sunk == [4, 5, 6]


def test_zero_threshold_or_time_means_no_delay(coalescing, sunk):
    coalescing.set_coalescing(0, 10)
    coalescing.cq_completion(1)
    coalescing.set_coalescing(7, 0)
    coalescing.cq_completion(2)
    assert sunk == [1, 2]


def test_defaults_do_not_coalesce(msix, sunk):
    for v in range(NVEC):
        msix_unmask(msix, v)
    assert msix.coalescing == (0, 0)
    msix.cq_completion(3)
    assert sunk == [3]


def test_flush_and_lowered_threshold(coalescing, sunk):
    coalescing.cq_completion(1)
    coalescing.cq_completion(2)
    coalescing.cq_completion(2)
    coalescing.flush(2)
    assert sunk == [2]
    coalescing.flush()
    assert sunk == [2, 1]
    coalescing.cq_completion(3)
    coalescing.cq_completion(3)
    coalescing.set_coalescing(1, 10)  # threshold now 2: already reached
    assert sunk == [2, 1, 3]


def test_direct_signal_ends_aggregation(coalescing, sunk):
    coalescing.cq_completion(1)
    coalescing.signal(1)
    assert sunk == [1] and coalescing.aggregated(1) == 0


def test_consumed_completions_end_aggregation(coalescing, sunk, clock):
    coalescing.set_outstanding(1, True, 1)
    coalescing.cq_completion(1)
    coalescing.set_outstanding(1, False, 1)  # host polled them
    clock.now = 1.0
    assert coalescing.poll() == 0 and sunk == []


def test_coalesced_masked_vector_goes_pending(coalescing, sunk):
    msix_unmask(coalescing, 1, masked=True)
    for _ in range(4):
        coalescing.cq_completion(1)
    assert sunk == [] and coalescing.msix_pending(1)
    msix_unmask(coalescing, 1)
    assert sunk == [1]


def test_timer_thread_with_real_clock(cfg):
    got = threading.Event()
    irq = Interrupts(cfg, NVEC, sink=lambda v: got.set())
    try:
        bus_master(cfg)
        msix_control(cfg)
        msix_unmask(irq, 1)
        irq.set_coalescing(100, 1)  # 101 completions or 100 us
        irq.cq_completion(1)
        assert got.wait(5), "the aggregation time never fired"
        assert [v for v, _ in irq.fired] == [1]
    finally:
        irq.close()


# --- resets ----------------------------------------------------------------------------------------


def test_controller_reset(cfg, irq, sunk):
    irq.intms_write(0x3)
    irq.signal(1)
    irq.set_coalescing(5, 5)
    irq.set_vector_config(2, True)
    irq.controller_reset()
    assert irq.intms_value == 0 and irq.intx_status == set() and not irq.intx_asserted
    assert irq.coalescing == (0, 0) and irq.coalesced(2)


def test_flr_resets_table_and_pending(cfg, clock, sunk):
    calls = []
    cfg = ConfigSpace(NVEC, 16 * 1024, on_flr=lambda: calls.append(irq.msix_entry(1).masked))
    irq = Interrupts(cfg, NVEC, sink=sunk.append, clock=clock)
    bus_master(cfg)
    msix_control(cfg)
    irq.msix_write(TABLE + 16, 8, 0xFEE0_0000)
    msix_unmask(irq, 1)
    irq.signal(2)
    assert pba(irq) == 4
    cfg.write(cfg.pcie_offset + 8, 2, 1 << 15)
    assert calls == [True]  # the interrupt logic was reset before the controller
    assert irq.msix_entry(1).masked and irq.msix_entry(1).address == 0 and pba(irq) == 0
    assert irq.mode == "intx" and not cfg.bus_master_enabled


def test_fired_is_trimmed(msix):
    msix.fired_limit = 4
    msix_unmask(msix, 0)
    for _ in range(20):
        msix.signal(0)
    assert len(msix.fired) <= 8 and msix.delivered[0] == 20
