"""The PCIe function's BAR0 and life cycle (target/pci/function.py), driven
through the low-level test API only: registers, the enable / disable /
shutdown handshakes and their timing, the admin queue from AQA/ASQ/ACQ,
controller reset with outstanding I/O, NVM Subsystem Reset, Function Level
Reset, bus mastering and memory space."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvmestack.memory import PhysicalMemory
from nvmestack.spec.admin import AsyncEventRequest, CreateIoCq, Identify
from nvmestack.spec.identify import IdentifyController
from nvmestack.spec.nvm import Flush, Read, Write
from nvmestack.spec.opcodes import NvmOpcode
from nvmestack.spec.pci import Cfg, PciCommand
from nvmestack.spec.registers import NSSR_SIGNATURE, Reg, Shst, nvme_version
from nvmestack.target.faults import FaultInjector
from nvmestack.target.pci.function import PciFunction
from nvmestack.target.pci.lowlevel import HostCq, QueuePair, RawHost

from .conftest import FakeClock, ok, status_is

# ----------------------------------------------------------------------------
# registers


def test_capabilities_and_version(make_function):
    _fn, h = make_function()
    h.enable_device()
    cap = h.cap
    assert cap.mqes == 1023 and cap.cqr and cap.ams == 1
    assert cap.to == 20 and cap.dstrd == 0 and cap.nssrs and cap.css_nvm
    assert cap.mpsmin == 0 and cap.mpsmax == 4
    assert h.bar_read32(Reg.VS) == nvme_version(2, 0)
    # CAP as two dwords is the same register.
    assert h.bar_read32(0) | h.bar_read32(4) << 32 == h.bar_read64(0)


def test_read_only_and_reserved_registers_ignore_writes(make_function):
    _fn, h = make_function()
    h.enable_device()
    cap, vs = h.bar_read64(Reg.CAP), h.bar_read32(Reg.VS)
    h.bar_write64(Reg.CAP, 0)
    h.bar_write32(Reg.CAP + 4, 0xFFFFFFFF)
    h.bar_write32(Reg.VS, 0x12345678)
    assert h.bar_read64(Reg.CAP) == cap and h.bar_read32(Reg.VS) == vs
    # Reserved offsets and the unused CMB/PMR registers read 0 and stay 0.
    for off in (0x6C, 0x100, 0x800, Reg.CMBLOC, Reg.PMRCAP, 0xFFC):
        h.bar_write32(off, 0xFFFFFFFF)
        assert h.bar_read32(off) == 0, hex(off)
    # CSTS is read-only (RDY stays 0 while disabled).
    h.bar_write32(Reg.CSTS, 0xFFFFFFFF)
    assert h.bar_read32(Reg.CSTS) == 0
    # CC's reserved bits read 0; AQA's too.
    h.bar_write32(Reg.CC, 0xFE00000E)
    assert h.bar_read32(Reg.CC) == 0
    h.bar_write32(Reg.AQA, 0xFFFFFFFF)
    assert h.bar_read32(Reg.AQA) == 0x0FFF0FFF
    # Doorbells are write-only: they read 0.
    assert h.bar_read32(0x1000) == 0 and h.bar_read32(0x1004) == 0


def test_admin_queue_base_registers_64_and_32_bit(make_function):
    _fn, h = make_function()
    h.enable_device()
    h.bar_write64(Reg.ASQ, 0x1_2345_6000)
    assert h.bar_read64(Reg.ASQ) == 0x1_2345_6000
    assert h.bar_read32(Reg.ASQ) == 0x2345_6000 and h.bar_read32(Reg.ASQ + 4) == 1
    # Halves written separately; bits 11:0 are reserved.
    h.bar_write32(Reg.ACQ, 0xABCD_EFFF)
    h.bar_write32(Reg.ACQ + 4, 0x2)
    assert h.bar_read64(Reg.ACQ) == 0x2_ABCD_E000
    # An 8-byte write to two 4-byte registers is two 4-byte writes.
    h.bar_write64(Reg.INTMC + 4, 0)  # CC (0) and CSTS (read-only)
    assert h.bar_read32(Reg.CC) == 0


def test_memory_space_disabled_reads_all_ones_and_drops_writes(make_function):
    _fn, h = make_function()
    assert h.bar_read32(Reg.VS) == 0xFFFFFFFF
    assert h.bar_read64(Reg.CAP) == (1 << 64) - 1
    h.bar_write32(Reg.AQA, 0x00010001)
    h.enable_device()
    assert h.bar_read32(Reg.AQA) == 0
    assert h.bar_read32(Reg.VS) == nvme_version(2, 0)


def test_small_and_misaligned_accesses(make_function):
    fn, h = make_function()
    h.enable_device()
    vs = h.bar_read32(Reg.VS)
    assert fn.mmio_read(Reg.VS + 2, 2) == vs >> 16
    assert fn.mmio_read(Reg.VS + 1, 1) == (vs >> 8) & 0xFF
    fn.mmio_write(Reg.AQA, 2, 0x0101)  # too small: dropped
    fn.mmio_write(Reg.AQA + 1, 4, 0x0101)  # misaligned: dropped
    assert h.bar_read32(Reg.AQA) == 0
    assert fn.mmio_read(fn.bar0_size, 4) == 0xFFFFFFFF  # outside the BAR


def test_ready_delay_must_be_within_cap_to(subsystem, host_memory):
    with pytest.raises(ValueError):
        PciFunction(subsystem, host_memory, mode="inline", ready_delay=11.0)  # CAP.TO is 10 s
    assert not subsystem.controllers


# ----------------------------------------------------------------------------
# enable / disable / shutdown handshakes


def test_enable_handshake_rdy_follows_after_the_delay(make_function):
    clock = FakeClock()
    fn, h = make_function(ready_delay=0.5, clock=clock)
    h.enable_device()
    assert fn.ready_delay <= h.timeout  # within CAP.TO
    asq, acq = h.make_queue(4, 64), h.make_queue(4, 16)
    h.set_admin_queues(asq, acq)
    assert h.bar_read32(Reg.AQA) == 0x00030003
    h.write_cc(en=True)
    assert h.cc.en
    assert not h.csts.rdy  # not before the delay
    clock.advance(0.499)
    assert not h.csts.rdy
    clock.advance(0.001)
    assert h.csts.rdy and not h.csts.cfs
    assert h.wait_ready(True, timeout=0)


def test_disable_handshake_rdy_clears_after_the_delay(make_function):
    clock = FakeClock()
    fn, h = make_function(ready_delay=0.25, clock=clock)
    h.enable_device()
    h.set_admin_queues(h.make_queue(4, 64), h.make_queue(4, 16))
    h.write_cc(en=True)
    clock.advance(0.25)
    assert h.csts.rdy
    h.write_cc(en=False)
    assert not h.cc.en
    assert h.csts.rdy  # still 1 until the reset is reported
    clock.advance(0.25)
    assert not h.csts.rdy
    # The admin queues are gone: a doorbell does nothing.
    assert fn.queues.queue(0) is None


def test_disable_before_ready_never_shows_rdy(make_function):
    clock = FakeClock()
    _fn, h = make_function(ready_delay=0.25, clock=clock)
    h.enable_device()
    h.set_admin_queues(h.make_queue(4, 64), h.make_queue(4, 16))
    h.write_cc(en=True)
    clock.advance(0.1)
    h.write_cc(en=False)
    for _ in range(4):
        assert not h.csts.rdy
        clock.advance(0.1)


def test_real_clock_handshake(make_function, mode):
    _fn, h = make_function(mode=mode, ready_delay=0.01)
    h.enable_device()
    h.set_admin_queues(h.make_queue(2, 64), h.make_queue(2, 16))
    h.write_cc(en=True)
    assert h.wait_ready(True)
    h.write_cc(en=False)
    assert h.wait_ready(False)


@pytest.mark.parametrize("aqa,asq_off,acq_off", [
    (0x00000003, 0, 0),      # ACQS 0: one entry
    (0x00030000, 0, 0),      # ASQS 0
    (0x00030003, 0x200, 0),  # ASQ not page aligned (only 4 KiB alignment is kept by the register)
])
def test_invalid_admin_queue_configuration_is_fatal(make_function, aqa, asq_off, acq_off):
    fn, h = make_function(ready_delay=0)
    h.enable_device()
    sq, cq = h.alloc(8192), h.alloc(8192)
    h.bar_write32(Reg.AQA, aqa)
    if asq_off:
        # A base aligned to 4 KiB but not to the 8 KiB page CC.MPS=1 asks for.
        h.bar_write64(Reg.ASQ, sq.addr + 4096)
        h.bar_write64(Reg.ACQ, cq.addr)
        h.write_cc(en=True, mps=1)
    else:
        h.bar_write64(Reg.ASQ, sq.addr)
        h.bar_write64(Reg.ACQ, cq.addr)
        h.write_cc(en=True)
    csts = h.csts
    assert csts.cfs and not csts.rdy
    assert fn.queues.queue(0) is None
    # A reset and a valid configuration bring it up.
    h.write_cc(en=False)
    assert h.wait_ready(False) and not h.csts.cfs
    h.enable()
    ok(h.identify(1)[0])


def test_unsupported_cc_values_are_fatal(make_function):
    _fn, h = make_function(ready_delay=0)
    h.enable_device()
    h.set_admin_queues(h.make_queue(2, 64), h.make_queue(2, 16))
    h.write_cc(en=True, mps=5)  # above CAP.MPSMAX
    assert h.csts.cfs and not h.csts.rdy


def test_normal_shutdown_completes_submitted_commands_first(make_function, mode):
    clock = FakeClock()
    _fn, h = make_function(mode=mode, ready_delay=0.1, clock=clock)
    h.enable_device()
    asq, acq = h.make_queue(8, 64), h.make_queue(8, 16)
    h.set_admin_queues(asq, acq)
    h.write_cc(en=True)
    clock.advance(0.1)
    assert h.csts.rdy and h.csts.shst == Shst.NORMAL
    admin = QueuePair(h, 0, asq, HostCq(h, 0, acq))
    # Three commands submitted while the device may not fetch them yet ...
    buf = h.alloc(3 * 4096)
    h.set_bus_master(False)
    for i in range(3):
        admin.post(Identify(cns=1, prp1=buf.addr + 4096 * i), cid=10 + i)
    admin.ring()
    h.set_bus_master(True)
    # ... then the shutdown notification.
    h.bar_write32(Reg.CC, h.bar_read32(Reg.CC) | 1 << 14)  # SHN = normal
    assert h.csts.shst == Shst.OCCURRING
    clock.advance(0.1)
    assert h.csts.shst == Shst.COMPLETE
    assert h.csts.rdy  # a shutdown does not clear RDY
    # Every submitted command completed before the shutdown did.
    got = admin.reap()
    assert [c.cid for c in got] == [10, 11, 12]
    for cqe in got:
        ok(cqe)
    admin.release()
    # Nothing is fetched after a shutdown, until a reset.
    admin.submit(Identify(cns=1, prp1=buf.addr), cid=13)
    h.settle()
    assert admin.peek() is None
    h.write_cc(en=False)
    clock.advance(0.1)
    assert h.csts.shst == Shst.NORMAL and not h.csts.rdy


def test_abrupt_shutdown_reports_complete(host):
    fn = host.function
    assert host.shutdown(abrupt=True)
    assert host.csts.shst == Shst.COMPLETE
    assert fn.queues.stopped
    host.disable()
    host.enable()
    ok(host.identify(1)[0])


# ----------------------------------------------------------------------------
# the admin queue


def test_admin_queue_from_aqa_asq_acq_step_by_step(make_function, mode):
    fn, h = make_function(mode=mode)
    h.enable_device()
    asq, acq = h.make_queue(2, 64), h.make_queue(2, 16)
    h.set_admin_queues(asq, acq)
    h.write_cc(en=True)
    assert h.wait_ready()
    q = fn.queues.queue(0)
    assert (q.size, q.base) == (2, asq.addr)
    assert (fn.queues.queue(0, cq=True).size, fn.queues.queue(0, cq=True).base) == (2, acq.addr)
    buf = h.alloc(4096)
    h.write_sqe(asq, 0, Identify(cid=0x1234, cns=1, prp1=buf.addr))
    h.ring_sq(0, 1)
    assert h.settle()
    cqe = h.read_cqe(acq, 0)
    assert cqe.phase == 1 and cqe.cid == 0x1234 and cqe.sqid == 0 and cqe.sqhd == 1
    ok(cqe)
    idc = IdentifyController.from_bytes(bytes(buf.view[:4096]))
    assert idc.mn.strip() == "nvmestack test" and idc.cntlid == fn.controller.cntlid
    assert idc.sqes_min == 6 and idc.cqes_min == 4
    h.ring_cq(0, 1)
    # The second command lands in the second slot with the same phase.
    h.write_sqe(asq, 1, Identify(cid=0x1235, cns=1, prp1=buf.addr))
    h.ring_sq(0, 0)
    h.settle()
    cqe = h.read_cqe(acq, 1)
    assert (cqe.phase, cqe.cid, cqe.sqhd) == (1, 0x1235, 0)


def test_identify_through_the_admin_queue(host):
    cqe, data = host.identify(1)
    ok(cqe)
    assert IdentifyController.from_bytes(data).sn.strip() == "SN0001"
    cqe, data = host.identify(0, nsid=1)
    ok(cqe)
    assert int.from_bytes(data[:8], "little") == 8192  # NSZE


def test_sgl_support_is_reported(make_function):
    _fn, h = make_function(sgl=False)
    h.bring_up()
    assert IdentifyController.from_bytes(h.identify(1)[1]).sgls_support == 0
    _fn2, h2 = make_function(sgl=True)
    h2.bring_up()
    assert IdentifyController.from_bytes(h2.identify(1)[1]).sgls_support != 0


# ----------------------------------------------------------------------------
# resets


def test_reset_with_outstanding_io_ends_it_without_completion(host, subsystem):
    fn = host.function
    faults = FaultInjector.install(subsystem)
    faults.drop(opcode=NvmOpcode.READ, admin=False)
    io = host.create_io_queue_pair(1, 8)
    buf = host.alloc(4096)
    for i in range(3):
        io.post(Read(cid=i + 1, nsid=1, slba=i, nlb=0, prp1=buf.addr))
    io.post(Flush(cid=9, nsid=1))
    io.ring()
    assert [c.cid for c in io.wait(1)] == [9]
    assert len([k for k in fn.controller.outstanding if k[0] == 1]) == 3
    assert host.disable()
    assert not fn.controller.outstanding
    assert fn.queues.queue(1) is None and fn.queues.queue(1, cq=True) is None
    # Nothing arrives on the old rings, ever.
    host.settle()
    assert io.peek() is None
    # Re-initialised, the device serves the host again; queue 1 is new.
    host.enable()
    faults.clear()
    io = host.create_io_queue_pair(1, 8)
    ok(io.command(Read(nsid=1, slba=0, nlb=0, prp1=buf.addr)))


def test_delayed_completion_after_reset_is_dropped(host, subsystem):
    faults = FaultInjector.install(subsystem)
    faults.delay(0.3, opcode=NvmOpcode.WRITE, admin=False)
    io = host.create_io_queue_pair(1, 8)
    buf = host.alloc(4096)
    buf.view[:4] = b"late"
    io.submit(Write(cid=5, nsid=1, slba=0, nlb=0, prp1=buf.addr))
    host.settle()
    rule_req = faults.rules[0].requests[0]
    assert not rule_req.done  # still waiting for its timer
    assert host.disable()
    for timer in list(faults._timers):
        timer.join(5)
    assert io.peek() is None
    assert rule_req.done
    # The write never ran: the block is still zero.
    host.enable()
    io = host.create_io_queue_pair(1, 8)
    out = host.alloc(4096)
    ok(io.command(Read(nsid=1, slba=0, nlb=0, prp1=out.addr)))
    assert bytes(out.view[:4]) == bytes(4)


def test_nvm_subsystem_reset(host):
    fn = host.function
    io = host.create_io_queue_pair(1, 4)
    assert io is not None
    host.bar_write32(Reg.NSSR, 0x12345678)  # not the signature: nothing
    assert host.csts.rdy and not host.csts.nssro
    host.bar_write32(Reg.NSSR, NSSR_SIGNATURE)
    csts = host.csts
    assert csts.nssro and not csts.rdy
    assert host.bar_read32(Reg.NSSR) == 0  # NSSR reads 0
    assert fn.queues.queue(0) is None and fn.queues.queue(1) is None
    assert not host.cc.en
    # NSSRO is RW1C.
    host.bar_write32(Reg.CSTS, 0)
    assert host.csts.nssro
    host.bar_write32(Reg.CSTS, 1 << 4)
    assert not host.csts.nssro
    host.enable()
    ok(host.identify(1)[0])


def test_function_level_reset(host):
    fn = host.function
    host.create_io_queue_pair(1, 4)
    host.enable_msix()
    assert host.cfg_read(Cfg.COMMAND, 2) & PciCommand.BUS_MASTER
    host.function_level_reset()
    # Configuration space: command register cleared (BAR0 not decoded).
    assert host.cfg_read(Cfg.COMMAND, 2) & (PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER) == 0
    assert host.bar_read32(Reg.VS) == 0xFFFFFFFF
    host.enable_device()
    # Controller: disabled, admin queue registers cleared, no queues.
    assert host.bar_read32(Reg.CC) == 0 and host.bar_read32(Reg.CSTS) == 0
    assert host.bar_read32(Reg.AQA) == 0 and host.bar_read64(Reg.ASQ) == 0 and host.bar_read64(Reg.ACQ) == 0
    assert fn.queues.queue(0) is None and fn.queues.queue(1) is None
    assert not fn.config.msix_enabled
    host.enable()
    ok(host.identify(1)[0])
    io = host.create_io_queue_pair(1, 4)
    ok(io.command(Flush(nsid=1)))


# ----------------------------------------------------------------------------
# bus mastering


def test_bus_master_disabled_no_fetch_no_post(host):
    fn = host.function
    admin = host.admin
    buf = host.alloc(4096)
    host.set_bus_master(False)
    fetched = fn.queues.fetched
    admin.submit(Identify(cns=1, prp1=buf.addr), cid=77)
    host.settle()
    assert fn.queues.fetched == fetched
    assert admin.peek() is None and bytes(buf.view[:16]) == bytes(16)
    host.set_bus_master(True)
    got = admin.wait(1)
    assert [c.cid for c in got] == [77]
    ok(got[0])
    assert IdentifyController.from_bytes(bytes(buf.view)).cntlid == fn.controller.cntlid


def test_completions_wait_while_bus_master_is_off(host, subsystem):
    faults = FaultInjector.install(subsystem)
    faults.drop(opcode=NvmOpcode.FLUSH, admin=False)
    io = host.create_io_queue_pair(1, 8)
    io.submit(Flush(nsid=1), cid=3)
    host.settle()
    req = faults.parked[0]
    host.set_bus_master(False)
    req.complete()  # the device finishes the command while it may not post
    assert io.peek() is None
    host.set_bus_master(True)
    assert [c.cid for c in io.wait(1)] == [3]


# ----------------------------------------------------------------------------
# interrupts through BAR0


def test_intms_intmc_and_msix_reserves_them(host):
    fn = host.function
    host.bar_write32(Reg.INTMS, 0x5)
    assert host.bar_read32(Reg.INTMS) == 0x5 and host.bar_read32(Reg.INTMC) == 0x5
    host.bar_write32(Reg.INTMC, 0x1)
    assert host.bar_read32(Reg.INTMS) == 0x4
    host.enable_msix()
    assert host.bar_read32(Reg.INTMS) == 0
    host.bar_write32(Reg.INTMS, 0xFF)
    host.bar_write32(Reg.INTMC, 0x0)
    assert fn.interrupts.intms_value == 0


def test_msix_interrupt_per_queue_and_polled_queues(host):
    host.enable_msix()
    host.clear_fired()
    ok(host.identify(1)[0])
    assert host.fired() == [0]  # the admin queue's vector
    host.clear_fired()
    io = host.create_io_queue_pair(1, 4, ien=True, iv=3)
    host.clear_fired()
    ok(io.command(Flush(nsid=1)))
    assert host.fired() == [3]
    host.clear_fired()
    polled = host.create_io_queue_pair(2, 4, ien=False)
    host.clear_fired()
    ok(polled.command(Flush(nsid=1)))
    assert host.fired() == []


def test_intx_level_follows_the_completion_queue_head(make_function):
    fn, h = make_function()
    admin = h.bring_up()
    assert not fn.interrupts.intx_asserted
    buf = h.alloc(4096)
    admin.submit(Identify(cns=1, prp1=buf.addr), cid=1)
    assert fn.interrupts.intx_asserted
    assert len(admin.reap()) == 1
    assert fn.interrupts.intx_asserted  # until the host moves the head
    admin.release()
    assert not fn.interrupts.intx_asserted


def test_interrupt_vector_must_exist_in_the_mode_in_use(host):
    from nvmestack.spec.status import CommandSpecificStatus

    cmd = CreateIoCq(qid=1, prp1=host.alloc(4096).addr, pc=True, ien=True, iv=1)
    cmd.entries = 4
    status_is(host.admin_command(cmd)[0], CommandSpecificStatus.INVALID_INTERRUPT_VECTOR)
    host.enable_msix()
    cmd.iv = host.function.msix_vectors
    status_is(host.admin_command(cmd)[0], CommandSpecificStatus.INVALID_INTERRUPT_VECTOR)
    cmd.iv = host.function.msix_vectors - 1
    ok(host.admin_command(cmd)[0])


def test_async_event_request_survives_until_reset(host):
    """An outstanding AER is a command the reset ends without completion."""
    fn = host.function
    host.admin.submit(AsyncEventRequest(), cid=40)
    host.settle()
    assert (0, 40) in fn.controller.outstanding
    host.disable()
    assert not fn.controller.outstanding


# ----------------------------------------------------------------------------
# doorbell stride and random register traffic


def test_doorbell_stride(make_function, mode):
    _fn, h = make_function(mode=mode, dstrd=2)
    h.bring_up()
    assert h.cap.dstrd == 2
    assert h.sq_doorbell(1) == 0x1000 + 2 * 16 and h.cq_doorbell(1) == 0x1000 + 3 * 16
    io = h.create_io_queue_pair(1, 4)
    for _ in range(6):
        ok(io.command(Flush(nsid=1)))
    # A write between two doorbells is nothing.
    h.bar_write32(0x1004, 1)
    ok(h.identify(1)[0])


def test_random_register_and_doorbell_writes_never_break_the_device(make_function, mode):
    _fn, h = make_function(mode=mode)
    h.bring_up()
    rng = random.Random(1234)
    offsets = [r.value for r in Reg] + [0x1000 + 4 * i for i in range(40)] + [rng.randrange(0, 0x2000) & ~3
                                                                              for _ in range(40)]
    for _ in range(600):
        off = rng.choice(offsets)
        value = rng.choice([0, 1, 0xFFFFFFFF, rng.getrandbits(32), rng.getrandbits(16)])
        if off == Reg.NSSR and rng.random() < 0.5:
            value = NSSR_SIGNATURE
        if off in (Reg.ASQ, Reg.ACQ, Reg.CAP) and rng.random() < 0.5:
            h.bar_write64(off, rng.getrandbits(64))
        else:
            h.bar_write32(off, value)
        h.bar_read32(off)
    h.settle()
    # A correctly initialising host gets a working controller.
    h.bar_write32(Reg.CSTS, 1 << 4)
    h.bar_write32(Reg.INTMC, 0xFFFFFFFF)
    h.enable()
    ok(h.identify(1)[0])
    io = h.create_io_queue_pair(1, 8)
    buf = h.alloc(4096)
    buf.view[:3] = b"abc"
    ok(io.command(Write(nsid=1, slba=3, nlb=0, prp1=buf.addr)))
    out = h.alloc(4096)
    ok(io.command(Read(nsid=1, slba=3, nlb=0, prp1=out.addr)))
    assert bytes(out.view[:3]) == b"abc"


def test_nssro_survives_function_level_reset(host):
    host.bar_write32(Reg.NSSR, NSSR_SIGNATURE)
    host.function_level_reset()
    host.enable_device()
    assert host.csts.nssro and not host.csts.rdy


# ----------------------------------------------------------------------------
# DMA failures of the queues themselves


def test_admin_queue_in_memory_the_host_does_not_have_is_fatal(make_function, mode):
    fn, h = make_function(mode=mode)
    h.enable_device()
    acq = h.make_queue(4, 16)
    h.bar_write32(Reg.AQA, 0x00030003)
    h.bar_write64(Reg.ASQ, fn.memory.base + fn.memory.size - 4096 * 4)  # never allocated
    h.bar_write64(Reg.ACQ, acq.addr)
    h.write_cc(en=True)
    assert h.wait_ready()
    h.ring_sq(0, 1)
    h.settle()
    assert h.csts.cfs
    assert bytes(acq.entry(0)) == bytes(16)
    h.disable()
    assert not h.csts.cfs
    h.enable()
    ok(h.identify(1)[0])


def test_completion_queue_in_memory_the_host_does_not_have_is_fatal(host):
    fn = host.function
    cmd = CreateIoCq(qid=1, prp1=fn.memory.base + fn.memory.size - 4096 * 8, pc=True)
    cmd.entries = 4
    ok(host.admin_command(cmd)[0])
    io_sq = host.make_queue(4, 64)
    cqe, _ = host.create_io_sq(1, 4, 1, queue=io_sq)
    ok(cqe)
    host.write_sqe(io_sq, 0, Flush(cid=1, nsid=1))
    host.ring_sq(1, 1)
    host.settle()
    assert host.csts.cfs


# ----------------------------------------------------------------------------
# interrupt coalescing configured through Set Features


def test_coalescing_features_reach_the_interrupt_logic(make_function, mode):
    from nvmestack.spec.admin import SetFeatures
    from nvmestack.spec.features import FeatureId

    # A frozen interrupt clock: only the threshold ends an aggregation.
    fn, host = make_function(mode=mode, interrupt_clock=FakeClock())
    host.bring_up()
    host.enable_msix()
    io = host.create_io_queue_pair(1, 16, ien=True, iv=1)
    # THR 3 (four completions per interrupt), TIME 200 (20 ms).
    ok(host.admin_command(SetFeatures(fid=FeatureId.IRQ_COALESCE, cdw11=3 | 200 << 8))[0])
    assert fn.interrupts.coalescing == (3, 200)
    host.clear_fired()
    for cid in range(1, 9):
        io.post(Flush(nsid=1), cid=cid)
    io.ring()
    assert len(io.wait(8)) == 8
    host.settle()
    assert host.fired().count(1) == 2
    # Coalescing Disable for vector 1: one interrupt per completion.
    ok(host.admin_command(SetFeatures(fid=FeatureId.IRQ_CONFIG, cdw11=1 | 1 << 16))[0])
    assert not fn.interrupts.coalesced(1)
    host.clear_fired()
    for _ in range(3):
        ok(io.command(Flush(nsid=1)))
    assert host.fired().count(1) == 3
    # A controller reset returns to the saved/default values.
    host.disable()
    host.enable()
    assert fn.interrupts.coalescing == (0, 0) and fn.interrupts.coalesced(1)


# ----------------------------------------------------------------------------
# property: any BAR0 traffic, then a correct host


_REGISTER_OFFSETS = sorted({r.value for r in Reg} | {0x04, 0x2C, 0x34, 0x6C, 0x100, 0xFFC})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(
    st.tuples(
        st.one_of(st.sampled_from(_REGISTER_OFFSETS),
                  st.integers(0x1000, 0x1000 + 8 * 80).map(lambda o: o & ~3),
                  st.integers(0, 0x4000)),
        st.sampled_from([1, 2, 4, 8]),
        st.one_of(st.sampled_from([0, 1, 0xFFFFFFFF, NSSR_SIGNATURE, 0x00460001]),
                  st.integers(0, (1 << 64) - 1)),
    ),
    max_size=40,
))
def test_property_any_bar0_writes_then_a_correct_host(subsystem, writes):
    mem = PhysicalMemory(4 << 20)
    fn = PciFunction(subsystem, mem, mode="inline", ready_delay=0)
    try:
        h = RawHost(fn)
        h.bring_up(admin_entries=4)
        for offset, size, value in writes:
            fn.mmio_write(offset, size, value & ((1 << (8 * size)) - 1))
            fn.mmio_read(offset, size)
        # Reserved registers stayed zero; CAP and VS unchanged.
        assert h.bar_read32(0x6C) == 0 and h.bar_read32(0xFFC) == 0
        assert h.bar_read32(Reg.VS) == nvme_version(2, 0) and h.cap.mqes == 1023
        # A host that initialises correctly gets a working controller.
        h.enable_device()
        h.bar_write32(Reg.CSTS, 1 << 4)
        h.enable(admin_entries=4)
        assert not h.csts.cfs
        cqe, data = h.identify(1)
        ok(cqe)
        assert IdentifyController.from_bytes(data).cntlid == fn.controller.cntlid
        io = h.create_io_queue_pair(1, 4)
        ok(io.command(Flush(nsid=1)))
    finally:
        fn.close()
        mem.close()


def test_masked_msix_vector_sets_pending_bit_and_fires_when_unmasked(host):
    fn = host.function
    host.enable_msix()
    io = host.create_io_queue_pair(1, 4, ien=True, iv=2)
    pba = fn.config.msix_pba_offset
    host.msix_mask(2, True)
    host.clear_fired()
    io.submit(Flush(nsid=1), cid=7)
    host.settle()
    assert io.peek() is not None  # posted ...
    assert host.fired() == [] and host.bar_read64(pba) & 1 << 2  # ... interrupt pending
    host.msix_mask(2, False)
    assert host.fired() == [2] and not host.bar_read64(pba) & 1 << 2
    assert [c.cid for c in io.wait(1)] == [7]
    # Consumed while masked: the pending bit goes away with the condition.
    host.msix_mask(2, True)
    host.clear_fired()
    io.submit(Flush(nsid=1), cid=8)
    host.settle()
    assert host.bar_read64(pba) & 1 << 2
    assert [c.cid for c in io.wait(1)] == [8]
    assert not host.bar_read64(pba) & 1 << 2
    host.msix_mask(2, False)
    assert host.fired() == []


# ----------------------------------------------------------------------------
# PCI ids: configuration space and Identify Controller agree


def _identify(h):
    buf = h.alloc(4096)
    ok(h.admin.command(Identify(cns=1, prp1=buf.addr)))
    return IdentifyController.from_bytes(bytes(buf.view))


def test_identify_vid_and_ssvid_are_the_configuration_space_ids(make_function):
    from nvmestack.target.pci.config import PCI_VENDOR_ID

    _fn, h = make_function()
    h.bring_up()
    c = _identify(h)
    assert c.vid == h.cfg_read(Cfg.VENDOR_ID, 2) == PCI_VENDOR_ID
    assert c.ssvid == h.cfg_read(Cfg.SUBSYSTEM_VENDOR_ID, 2) != 0


def test_the_subsystem_s_pci_ids_are_the_function_s(make_function, subsystem):
    subsystem.vid, subsystem.ssvid = 0x1D0F, 0x1AF4
    _fn, h = make_function()
    h.bring_up()
    assert (h.cfg_read(Cfg.VENDOR_ID, 2), h.cfg_read(Cfg.SUBSYSTEM_VENDOR_ID, 2)) == (0x1D0F, 0x1AF4)
    c = _identify(h)
    assert (c.vid, c.ssvid) == (0x1D0F, 0x1AF4)


def test_ids_given_to_the_function_are_what_identify_reports(make_function):
    _fn, h = make_function(vendor_id=0x8086, subsystem_vendor_id=0x1028)
    h.bring_up()
    c = _identify(h)
    assert (c.vid, c.ssvid) == (0x8086, 0x1028) == (h.cfg_read(Cfg.VENDOR_ID, 2),
                                                    h.cfg_read(Cfg.SUBSYSTEM_VENDOR_ID, 2))


def test_enable_with_all_io_command_sets_selected(make_function):
    # CC.CSS 110b through BAR0: ready, no CFS, and the NVM command set works.
    _fn, h = make_function()
    h.enable_device()
    assert (h.bar_read64(Reg.CAP) >> 43) & 1  # CAP.CSS.IOCSS
    h.enable(css=6)
    csts = h.bar_read32(Reg.CSTS)
    assert csts & 1 and not csts & 2
    buf = h.alloc(4096)
    ok(h.admin.command(Identify(cns=0x1C, cntid=0xFFFF, prp1=buf.addr)))
    assert bytes(buf.view)[:8] == (1).to_bytes(8, "little") and not any(bytes(buf.view)[8:])
