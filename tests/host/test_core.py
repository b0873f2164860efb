"""The host core over the PCIe function: bring-up, namespace scan, the
request life cycle, passthrough, the state machine, shutdown, and the
basic recovery paths (timeout -> abort, timeout -> reset, CSTS.CFS ->
reset, retries, a controller that ends dead), in the inline and the
threaded device modes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from nvmestack.host import (
    ALLOWED_TRANSITIONS,
    ControllerDeadError,
    CtrlState,
    HostRequest,
    NvmeController,
    NvmeHostError,
    NvmeStatusError,
    PciTransport,
)
from nvmestack.host.queue import TagSet
from nvmestack.spec.admin import (
    AsyncEventRequest,
    Cns,
    FeatureSelect,
    GetFeatures,
    GetLogPage,
    Identify,
    NamespaceAttachment,
    NamespaceManagement,
    SetFeatures,
)
from nvmestack.spec.features import FeatureId, NumberOfQueues
from nvmestack.spec.identify import ControllerList, IdentifyController, IdentifyNamespace
from nvmestack.spec.log import CriticalWarning, LogPageId, SmartLog
from nvmestack.spec.nvm import Flush, Read, Write
from nvmestack.spec.opcodes import AdminOpcode, NvmOpcode
from nvmestack.spec.registers import CcCss, Reg, Shst
from nvmestack.spec.status import CommandSpecificStatus, GenericStatus, PathStatus
from nvmestack.target import Namespace

from .conftest import NS_BLOCK_SIZE, NS_BLOCKS, pattern, wait_for

BS = NS_BLOCK_SIZE


def write(ctrl, slba, data, **kw):
    return ctrl.execute(Write(nsid=1, slba=slba, nlb=len(data) // BS - 1), data, **kw)


def read(ctrl, slba, nbytes, **kw):
    buf = bytearray(nbytes)
    ctrl.execute(Read(nsid=1, slba=slba, nlb=nbytes // BS - 1), buf, **kw)
    return bytes(buf)


# ---------------------------------------------------------------------------
# bring-up


def test_probe_and_identify(ctrl, host_subsystem):
    assert ctrl.state is CtrlState.LIVE
    idc = ctrl.identify
    assert isinstance(idc, IdentifyController)
    assert idc.sn == "HOST0001"
    assert idc.mn == "nvmestack host test"
    # MDTS 10 of 4 KiB pages (the device's default): 4 MiB.
    assert ctrl.max_transfer == (1 << 10) * 4096
    assert ctrl.io_queue_count == 2
    assert ctrl.queues_granted >= 2
    # CC as the driver programmed it: enabled, 4 KiB pages, all supported I/O
    # command sets (110b: CAP.CSS.IOCSS is set, as Linux's nvme_enable_ctrl), RR,
    # 64/16-byte entries.
    assert ctrl.css == CcCss.ALL_IOCS
    cc = ctrl.transport.reg_read32(Reg.CC)
    assert cc & 1 and (cc >> 7) & 0xF == 0 and (cc >> 4) & 7 == 6 and (cc >> 11) & 7 == 0
    assert (cc >> 16) & 0xF == 6 and (cc >> 20) & 0xF == 4
    assert [new for _old, new in ctrl.state_history] == [CtrlState.CONNECTING, CtrlState.LIVE]
    assert ctrl.identify_nvm is not None  # the NVM command set specific Identify Controller
    # One Asynchronous Event Request is outstanding on a reserved admin tag.
    aers = [r for r in ctrl.admin_queue.snapshot() if r.opcode == AdminOpcode.ASYNC_EVENT_REQUEST]
    assert len(aers) == 1 and aers[0].reserved
    assert aers[0].tag >= ctrl.admin_queue.tags.normal
    # The device granted the queues the driver created.
    dev = ctrl.transport.function.controller
    assert set(dev.io_sqs) == {1, 2}


def test_namespace_scan(make_function, make_controller, host_subsystem):
    host_subsystem.add_namespace(Namespace(3, 2048, lba_format=3))  # 4 KiB blocks
    ctrl = make_controller()
    assert sorted(ctrl.namespaces) == [1, 3]
    ns1, ns3 = ctrl.namespaces[1], ctrl.namespaces[3]
    assert (ns1.nblocks, ns1.block_size, ns1.metadata_size) == (NS_BLOCKS, 512, 0)
    assert (ns3.nblocks, ns3.block_size) == (2048, 4096)
    dev_ns = host_subsystem.namespaces[1]
    assert ns1.ids.nguid == dev_ns.nguid
    assert ns1.ids.eui64 == dev_ns.eui64
    assert ns1.ids.uuid == dev_ns.uuid
    assert ns1.ids.csi == 0
    assert isinstance(ns1.identify, IdentifyNamespace)
    assert ns1.ctrl is ctrl and ns1.nsid == 1


def test_queue_counts_follow_the_grant(make_function, make_controller):
    fn = make_function()
    fn.controller.max_io_queues = 3  # what the device grants at most
    ctrl = make_controller(fn, io_queues=4, poll_queues=2)
    assert ctrl.queues_granted == 3
    assert ctrl.io_queue_count == 3
    # Polled queues come out of the grant after at least one default queue.
    assert ctrl.poll_queue_count == 2
    assert [q.polled for q in ctrl.io_queues] == [False, True, True]


def test_admin_only_controller(make_controller):
    ctrl = make_controller(io_queues=0)
    assert ctrl.io_queue_count == 0
    assert 1 in ctrl.namespaces
    req = ctrl.submit(Read(nsid=1, slba=0, nlb=0), bytearray(BS))
    req.wait(5)
    assert req.done
    with pytest.raises(NvmeHostError, match="no I/O queue"):
        req.raise_for_status()


# ---------------------------------------------------------------------------
# I/O


@pytest.mark.parametrize("nblocks", [1, 8, 9, 64, 1024])
def test_write_read_round_trip(ctrl, nblocks):
    data = pattern(nblocks * BS, nblocks)
    req = write(ctrl, 100, data)
    assert req.ok and req.status.ok and req.qid in (1, 2)
    assert read(ctrl, 100, len(data)) == data


def test_submit_is_asynchronous_and_waitable(ctrl):
    data = pattern(8 * BS, 7)
    reqs = [ctrl.submit(Write(nsid=1, slba=16 * i, nlb=7), data) for i in range(16)]
    for req in reqs:
        assert req.wait(10).done
        req.raise_for_status()
    seen = []
    req = ctrl.submit(Flush(nsid=1))
    req.add_done_callback(seen.append)
    req.wait(10)
    assert wait_for(lambda: seen == [req])
    late = []
    req.add_done_callback(late.append)  # done already: called at once
    assert late == [req]
    assert all(read(ctrl, 16 * i, 8 * BS) == data for i in range(16))


def test_asyncio_await(ctrl):
    data = pattern(4 * BS, 3)

    async def main():
        w = await ctrl.submit(Write(nsid=1, slba=40, nlb=3), data)
        w.raise_for_status()
        buf = bytearray(4 * BS)
        reqs = [ctrl.submit(Read(nsid=1, slba=40, nlb=3), buf)]
        done = await asyncio.gather(*reqs)
        return done[0], buf

    req, buf = asyncio.run(main())
    assert req.ok and bytes(buf) == data


def test_polled_queue(make_controller):
    ctrl = make_controller(io_queues=1, poll_queues=1)
    polled = ctrl.io_queues[1]
    assert polled.polled and polled.vector is None
    data = pattern(16 * BS, 11)
    req = write(ctrl, 0, data, polled=True)
    assert req.qid == polled.qid
    buf = bytearray(len(data))
    r = ctrl.submit(Read(nsid=1, slba=0, nlb=15), buf, polled=True)
    r.wait(10)
    assert r.ok and r.qid == polled.qid and bytes(buf) == data

    async def via_asyncio():
        out = bytearray(len(data))
        await ctrl.submit(Read(nsid=1, slba=0, nlb=15), out, polled=True)
        return bytes(out)

    assert asyncio.run(via_asyncio()) == data
    # The device created the CQ without interrupts.
    dev_cq = ctrl.transport.function.queues.queue(polled.qid, cq=True)
    assert dev_cq is not None and not dev_cq.ien


def test_interrupt_driven_queue(make_controller):
    ctrl = make_controller(io_queues=2)
    queue = ctrl.io_queues[0]
    assert not queue.polled and queue.vector == 1
    before = ctrl.transport.interrupt_count(1)
    write(ctrl, 0, pattern(BS), qid=1)
    assert wait_for(lambda: ctrl.transport.interrupt_count(1) > before)
    dev_cq = ctrl.transport.function.queues.queue(1, cq=True)
    assert dev_cq.ien and dev_cq.iv == 1
    assert ctrl.transport.function.config.msix_enabled


def test_everything_polled_without_interrupts(make_controller):
    ctrl = make_controller(transport_options={"interrupts": "none"})
    assert ctrl.admin_queue.polled and all(q.polled for q in ctrl.io_queues)
    data = pattern(8 * BS, 5)
    write(ctrl, 8, data)
    assert read(ctrl, 8, len(data)) == data
    status, _ = ctrl.admin_passthru(Identify(cns=Cns.CTRL), bytearray(4096))
    assert status.ok


def test_pin_based_interrupts(make_controller):
    ctrl = make_controller(transport_options={"interrupts": "intx"})
    assert all(q.vector == 0 for q in ctrl.io_queues)
    data = pattern(8 * BS, 6)
    write(ctrl, 8, data)
    assert read(ctrl, 8, len(data)) == data


def test_worker_threads_spread_over_queues(make_controller):
    ctrl = make_controller(io_queues=2)
    qids = []
    lock = threading.Lock()

    def worker(i):
        req = write(ctrl, 64 * i, pattern(BS, i))
        with lock:
            qids.append(req.qid)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(qids) == {1, 2}


def test_plug_rings_one_doorbell_per_batch(make_controller):
    ctrl = make_controller(io_queues=1)
    queue = ctrl.io_queues[0]
    before = queue.doorbells
    with ctrl.plug():
        reqs = [ctrl.submit(Write(nsid=1, slba=8 * i, nlb=7), pattern(8 * BS, i)) for i in range(10)]
        assert queue.doorbells == before
    assert queue.doorbells == before + 1
    for req in reqs:
        req.wait(10).raise_for_status()


def test_tag_exhaustion_waits_for_free_tags(make_controller):
    ctrl = make_controller(io_queues=1, io_queue_depth=4)  # three tags
    assert ctrl.io_queues[0].depth == 3
    reqs = [ctrl.submit(Write(nsid=1, slba=i, nlb=0), pattern(BS, i)) for i in range(40)]
    for req in reqs:
        req.wait(10).raise_for_status()
    assert all(read(ctrl, i, BS) == pattern(BS, i) for i in range(40))


def test_error_status_raises_and_does_not_retry_with_dnr(ctrl):
    req = ctrl.submit(Read(nsid=1, slba=NS_BLOCKS, nlb=0), bytearray(BS))
    req.wait(10)
    assert req.done and not req.ok
    assert req.status.code is GenericStatus.LBA_OUT_OF_RANGE
    assert req.retries == 0
    with pytest.raises(NvmeStatusError) as info:
        req.raise_for_status()
    assert info.value.status == req.status


def test_retries_without_dnr(ctrl, host_subsystem):
    rule = host_subsystem.faults.fail(GenericStatus.INTERNAL_ERROR, dnr=False, opcode=NvmOpcode.WRITE, count=2)
    req = write(ctrl, 0, pattern(BS, 1))
    assert req.ok and req.retries == 2 and rule.hits == 2
    # Always failing: up to max_retries, then the error.
    host_subsystem.faults.fail(GenericStatus.INTERNAL_ERROR, dnr=False, opcode=NvmOpcode.WRITE)
    with pytest.raises(NvmeStatusError) as info:
        write(ctrl, 0, pattern(BS, 1))
    assert info.value.request.retries == ctrl.max_retries


def test_double_completion_is_refused_and_counted():
    before = HostRequest.double_completions
    req = HostRequest(Flush(nsid=1))
    assert req._begin_completion()
    assert not req._begin_completion()
    assert HostRequest.double_completions == before + 1
    HostRequest.double_completions = before  # this test's own refusal, on purpose


def test_tag_set_generations():
    tags = TagSet(4, reserved=1)
    assert tags.normal == 3
    a = tags.get()
    cid = tags.cid(a)
    assert tags.tag_of(cid) == a
    tags.put(a)
    assert tags.tag_of(cid) is None  # free
    b = [tags.get() for _ in range(3)]
    assert a in b and tags.get() is None
    assert tags.tag_of(cid) is None  # same tag, newer generation
    r = tags.get(reserved=True)
    assert r == 3 and tags.get(reserved=True) is None


# ---------------------------------------------------------------------------
# passthrough


def test_admin_passthru_identify_log_features(ctrl):
    buf = bytearray(4096)
    status, result = ctrl.admin_passthru(Identify(cns=Cns.CTRL), buf)
    assert status.ok and IdentifyController.from_bytes(buf).sn == "HOST0001"

    smart = bytearray(SmartLog.SIZE)
    cmd = GetLogPage(lid=LogPageId.SMART, nsid=0xFFFFFFFF)
    cmd.length = SmartLog.SIZE
    status, _ = ctrl.admin_passthru(cmd, smart)
    assert status.ok and SmartLog.from_bytes(smart).avail_spare == 100

    status, result = ctrl.admin_passthru(GetFeatures(fid=FeatureId.NUM_QUEUES, sel=FeatureSelect.CURRENT))
    assert status.ok and NumberOfQueues.from_dword(result).sq_count == ctrl.queues_granted

    status, _ = ctrl.admin_passthru(SetFeatures(fid=FeatureId.VOLATILE_WC, cdw11=0))
    assert status.ok
    assert ctrl.get_features(FeatureId.VOLATILE_WC) & 1 == 0

    # NVMe errors come back as statuses, not exceptions.
    bad = GetLogPage(lid=0x7E, nsid=0xFFFFFFFF)
    bad.length = 512
    status, _ = ctrl.admin_passthru(bad, bytearray(512))
    assert status.code is CommandSpecificStatus.INVALID_LOG_PAGE
    status, _ = ctrl.admin_passthru(bytes([0xC5]) + bytes(63))  # an opcode nobody implements
    assert status.code is GenericStatus.INVALID_OPCODE


def test_io_passthru(ctrl):
    data = pattern(4 * BS, 9)
    status, _ = ctrl.io_passthru(Write(nsid=1, slba=200, nlb=3), data)
    assert status.ok
    buf = bytearray(4 * BS)
    status, _ = ctrl.io_passthru(Read(nsid=1, slba=200, nlb=3), buf, qid=2)
    assert status.ok and bytes(buf) == data
    status, _ = ctrl.io_passthru(Read(nsid=1, slba=NS_BLOCKS + 5, nlb=0), bytearray(BS))
    assert status.code is GenericStatus.LBA_OUT_OF_RANGE
    with pytest.raises(ValueError):
        ctrl.io_passthru(Flush(nsid=1), qid=0)


def test_passthru_is_not_retried(ctrl, host_subsystem):
    host_subsystem.faults.fail(GenericStatus.INTERNAL_ERROR, dnr=False, opcode=NvmOpcode.WRITE, count=1)
    status, _ = ctrl.io_passthru(Write(nsid=1, slba=0, nlb=0), pattern(BS))
    assert status.code is GenericStatus.INTERNAL_ERROR and not status.dnr


def test_passthru_effects_rescan_after_namespace_management(ctrl, host_subsystem):
    assert ctrl.command_effects(AdminOpcode.NAMESPACE_MANAGEMENT, admin=True) & 0x8  # NIC
    host = bytearray(4096)
    idn = IdentifyNamespace.view(host)
    idn.nsze = idn.ncap = 1024
    status, nsid = ctrl.admin_passthru(NamespaceManagement(sel=0), host)
    assert status.ok and nsid not in ctrl.namespaces
    ctrls = ControllerList()
    ctrls.num = 1
    ctrls.identifiers = [ctrl.identify.cntlid]
    status, _ = ctrl.admin_passthru(NamespaceAttachment(nsid=nsid, sel=0), bytes(ctrls))
    assert status.ok
    # The attachment's NIC effect rescanned before admin_passthru returned.
    assert nsid in ctrl.namespaces and ctrl.namespaces[nsid].nblocks == 1024


# ---------------------------------------------------------------------------
# asynchronous events


def test_namespace_added_at_run_time_appears_after_the_event(ctrl, host_subsystem):
    seen = []
    ctrl.namespace_callbacks.append(lambda action, ns: seen.append((action, ns.nsid)))
    host_subsystem.add_namespace(Namespace(5, 512))
    assert wait_for(lambda: 5 in ctrl.namespaces)
    assert ("added", 5) in seen
    assert wait_for(lambda: any(e.type == 2 and 5 in e.nsids for e in ctrl.events))
    # The AER was re-armed: a removal is seen too.
    host_subsystem.remove_namespace(5)
    assert wait_for(lambda: 5 not in ctrl.namespaces)
    assert ("removed", 5) in seen


def test_smart_event_is_read_and_reported(ctrl, host_subsystem):
    got = []
    ctrl.event_callbacks.append(got.append)
    host_subsystem.health.set_warning(CriticalWarning.RELIABILITY)
    assert wait_for(lambda: got)
    event = got[0]
    assert event.type == 1 and event.log_page == LogPageId.SMART
    assert SmartLog.from_bytes(event.data).cw_reliability


# ---------------------------------------------------------------------------
# state machine


def test_linux_transitions_table():
    S = CtrlState
    expected = {
        S.LIVE: {S.CONNECTING},
        S.RESETTING: {S.NEW, S.LIVE},
        S.CONNECTING: {S.NEW, S.RESETTING},
        S.DELETING: {S.LIVE, S.RESETTING, S.CONNECTING},
        S.DELETING_NOIO: {S.DELETING, S.DEAD},
        S.DEAD: {S.DELETING},
    }
    assert {k: set(v) for k, v in ALLOWED_TRANSITIONS.items()} == expected


def test_state_changes_allowed_and_refused(make_function):
    fn = make_function()
    transport = PciTransport(fn)
    ctrl = NvmeController(transport, connect=False, io_queues=1)
    try:
        S = CtrlState
        assert ctrl.state is S.NEW
        assert not ctrl.change_state(S.LIVE)  # NEW -> LIVE: only through CONNECTING
        assert not ctrl.change_state(S.DEAD)
        assert not ctrl.change_state(S.DELETING)
        assert ctrl.change_state(S.CONNECTING)
        assert not ctrl.change_state(S.RESETTING)  # CONNECTING -> RESETTING refused
        assert not ctrl.change_state(S.CONNECTING)
        assert ctrl.change_state(S.LIVE)
        assert not ctrl.change_state(S.CONNECTING)
        assert not ctrl.change_state(S.DEAD)  # only from DELETING
        assert ctrl.change_state(S.RESETTING)
        assert not ctrl.change_state(S.LIVE)  # RESETTING -> LIVE refused: reconnect first
        assert ctrl.change_state(S.CONNECTING)
        assert ctrl.change_state(S.DELETING)
        assert not ctrl.change_state(S.LIVE)
        assert ctrl.change_state(S.DEAD)
        assert not ctrl.change_state(S.DELETING)
        assert ctrl.change_state(S.DELETING_NOIO)
        assert ctrl.state is S.DELETING_NOIO
        with pytest.raises(NvmeHostError):
            ctrl.connect()
    finally:
        ctrl.shutdown()


def test_connect_later(make_function):
    ctrl = NvmeController(PciTransport(make_function()), connect=False, io_queues=1)
    try:
        req = ctrl.submit(Flush(nsid=1))  # held until the controller is live
        assert not req.done
        ctrl.connect()
        req.wait(10).raise_for_status()
    finally:
        ctrl.shutdown()


# ---------------------------------------------------------------------------
# shutdown


def test_orderly_shutdown(ctrl):
    data = pattern(8 * BS, 2)
    write(ctrl, 0, data)
    fn = ctrl.transport.function
    assert ctrl.shutdown() is True
    csts = fn.mmio_read(Reg.CSTS, 4)
    assert (csts >> 2) & 3 == Shst.COMPLETE
    assert ctrl.state is CtrlState.DELETING_NOIO
    # The I/O queues were deleted before the shutdown notification.
    assert not fn.controller.io_sqs and not fn.controller.io_cqs
    assert ctrl.namespaces == {}
    req = ctrl.submit(Flush(nsid=1))
    assert req.done
    with pytest.raises(ControllerDeadError, match="being removed"):
        req.raise_for_status()
    assert ctrl.shutdown() is True  # idempotent
    assert bytes(fn.subsystem.namespaces[1].data.read_bytes(0, len(data))) == data


# ---------------------------------------------------------------------------
# recovery


def test_timeout_aborts_the_command_and_the_retry_succeeds(make_controller, host_subsystem):
    ctrl = make_controller(io_timeout=0.3)
    data = pattern(8 * BS, 4)
    write(ctrl, 50, data)
    rule = host_subsystem.faults.drop(opcode=NvmOpcode.READ, count=1)
    req = ctrl.submit(Read(nsid=1, slba=50, nlb=7), buf := bytearray(len(data)))
    req.wait(20)
    assert req.ok and bytes(buf) == data
    assert rule.hits == 1
    assert ctrl.stats["aborts"] == 1 and ctrl.stats["resets"] == 0
    assert req.retries == 1  # the aborted attempt, then success
    assert ctrl.state is CtrlState.LIVE


def test_ignored_abort_ends_in_a_reset(make_controller, host_subsystem):
    ctrl = make_controller(io_timeout=0.3, admin_timeout=5)
    data = pattern(8 * BS, 8)
    write(ctrl, 60, data)
    faults = host_subsystem.faults
    faults.drop(opcode=NvmOpcode.READ, count=1)
    faults.fail(GenericStatus.SUCCESS.status(), admin=True, opcode=AdminOpcode.ABORT, count=1)  # "not aborted"
    others = [ctrl.submit(Write(nsid=1, slba=1000 + 8 * i, nlb=7), pattern(8 * BS, 100 + i)) for i in range(6)]
    req = ctrl.submit(Read(nsid=1, slba=60, nlb=7), buf := bytearray(len(data)))
    req.wait(20)
    assert req.ok and bytes(buf) == data
    assert ctrl.stats["resets"] == 1
    assert ctrl.state is CtrlState.LIVE
    assert (CtrlState.LIVE, CtrlState.RESETTING) in ctrl.state_history
    for i, w in enumerate(others):
        w.wait(20).raise_for_status()
        assert read(ctrl, 1000 + 8 * i, 8 * BS) == pattern(8 * BS, 100 + i)


def test_controller_fatal_status_resets(make_controller, host_subsystem):
    ctrl = make_controller(io_timeout=5, watchdog_interval=0.02)
    host_subsystem.faults.fatal(opcode=NvmOpcode.WRITE, count=1)
    data = pattern(16 * BS, 12)
    req = write(ctrl, 300, data)  # completes after the reset, resubmitted
    assert req.ok and req.retries == 1
    assert ctrl.stats["resets"] == 1
    assert read(ctrl, 300, len(data)) == data
    csts = ctrl.transport.reg_read32(Reg.CSTS)
    assert csts & 1 and not csts & 2


def test_reset_requeues_outstanding_io(make_controller, host_subsystem):
    ctrl = make_controller()
    host_subsystem.faults.delay(30, opcode=NvmOpcode.WRITE, count=4)  # held in the device
    reqs = [ctrl.submit(Write(nsid=1, slba=500 + 8 * i, nlb=7), pattern(8 * BS, 200 + i)) for i in range(8)]
    assert wait_for(lambda: sum(len(q.inflight) for q in ctrl.io_queues) <= 4 and
                    sum(r.done for r in reqs) >= 4, 10)
    assert ctrl.reset() is True
    for req in reqs:
        req.wait(20).raise_for_status()
    for i in range(8):
        assert read(ctrl, 500 + 8 * i, 8 * BS) == pattern(8 * BS, 200 + i)
    assert sum(r.retries for r in reqs) == 4
    assert ctrl.stats["requeued"] == 4


def test_requests_during_reset_wait_for_live(make_controller):
    ctrl = make_controller()
    assert ctrl.reset(wait=False)
    req = ctrl.submit(Write(nsid=1, slba=0, nlb=0), pattern(BS, 3))
    assert ctrl.wait_live(10)
    req.wait(10).raise_for_status()
    assert read(ctrl, 0, BS) == pattern(BS, 3)


def test_device_that_never_becomes_ready_ends_dead(make_function):
    frozen = make_function(clock=lambda: 0.0, controller_options={"timeout_units": 1})
    ctrl = NvmeController(PciTransport(frozen), connect=False, io_queues=1)
    try:
        with pytest.raises(ControllerDeadError, match="CAP.TO"):
            ctrl.connect()
        assert ctrl.state is CtrlState.DEAD
        assert [new for _old, new in ctrl.state_history] == [CtrlState.CONNECTING, CtrlState.DELETING,
                                                            CtrlState.DEAD]
        req = ctrl.submit(Flush(nsid=1))
        assert req.done
        with pytest.raises(ControllerDeadError, match="dead"):
            req.raise_for_status()
        with pytest.raises(ControllerDeadError):
            ctrl.admin_passthru(Identify(cns=Cns.CTRL), bytearray(4096))
    finally:
        ctrl.shutdown()


def test_unanswered_identify_while_connecting_ends_dead(make_function, host_subsystem):
    host_subsystem.faults.drop(admin=True, opcode=AdminOpcode.IDENTIFY, count=1)
    ctrl = NvmeController(PciTransport(make_function()), connect=False, io_queues=1, admin_timeout=0.3)
    try:
        with pytest.raises(ControllerDeadError, match="Identify Controller"):
            ctrl.connect()
        assert ctrl.state is CtrlState.DEAD
    finally:
        ctrl.shutdown()


def test_failed_reset_leaves_the_controller_dead(make_controller, host_subsystem):
    ctrl = make_controller(admin_timeout=0.3)
    pending = []
    host_subsystem.faults.fail(GenericStatus.INTERNAL_ERROR, admin=True, opcode=AdminOpcode.IDENTIFY)
    assert ctrl.reset() is False
    assert ctrl.state is CtrlState.DEAD
    assert "reset failed" in ctrl.dead_reason
    pending.append(ctrl.submit(Write(nsid=1, slba=0, nlb=0), pattern(BS)))
    with pytest.raises(ControllerDeadError):
        pending[0].raise_for_status()
    with pytest.raises(NvmeHostError):
        ctrl.reset()


def test_aer_is_cancelled_not_failed_on_reset(make_controller):
    ctrl = make_controller()
    aer = next(r for r in ctrl.admin_queue.snapshot() if r.reserved)
    assert ctrl.reset()
    assert aer.done and aer.status.code is PathStatus.ABORTED_BY_HOST
    new = [r for r in ctrl.admin_queue.snapshot() if r.reserved]
    assert len(new) == 1 and new[0] is not aer
    assert isinstance(new[0].cmd, AsyncEventRequest)


def test_error_event_is_read_and_reported(ctrl):
    from nvmestack.spec.registers import sq_tail_doorbell

    got = []
    ctrl.event_callbacks.append(got.append)
    # A doorbell of a queue that does not exist: the device reports an error event.
    ctrl.transport.function.mmio_write(sq_tail_doorbell(40), 4, 1)
    assert wait_for(lambda: got)
    event = got[0]
    assert event.type == 0 and event.log_page == LogPageId.ERROR and event.data is not None
    assert ctrl.state is CtrlState.LIVE


def test_waiting_inside_a_done_callback_does_not_deadlock(make_controller):
    ctrl = make_controller(io_queues=1)
    data = pattern(BS, 61)
    results = []

    def chained(first):
        out = bytearray(BS)
        inner = ctrl.submit(Read(nsid=1, slba=7, nlb=0), out, qid=1)
        results.append((threading.current_thread().name, inner.wait(10).ok, bytes(out)))

    req = ctrl.make_request(Write(nsid=1, slba=7, nlb=0), data, qid=1)
    req.add_done_callback(chained)  # before it starts: runs on the completion thread
    ctrl.submit_batch([req])
    assert wait_for(lambda: results, 10)
    assert results == [("nvme-irq-1", True, data)]


def test_state_callbacks(make_controller):
    ctrl = make_controller()
    seen = []
    ctrl.state_callbacks.append(lambda old, new: seen.append(new))
    assert ctrl.reset()
    assert seen == [CtrlState.RESETTING, CtrlState.CONNECTING, CtrlState.LIVE]


def test_refused_queue_creation_leaves_an_admin_only_controller(make_controller, host_subsystem):
    host_subsystem.faults.fail(CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER, admin=True,
                               opcode=AdminOpcode.CREATE_IO_SQ)
    ctrl = make_controller(io_queues=2)
    assert ctrl.state is CtrlState.LIVE and ctrl.io_queue_count == 0
    assert 1 in ctrl.namespaces
    dev = ctrl.transport.function.controller
    assert not dev.io_sqs and not dev.io_cqs  # the CQ made for the refused SQ was deleted
    status, _ = ctrl.admin_passthru(Identify(cns=Cns.CTRL), bytearray(4096))
    assert status.ok


def test_failed_probe_releases_everything(make_function):
    before = threading.active_count()
    fn = make_function(clock=lambda: 0.0, controller_options={"timeout_units": 1})
    with pytest.raises(ControllerDeadError, match="did not become 1"):
        NvmeController(PciTransport(fn), io_queues=1)
    assert wait_for(lambda: threading.active_count() <= before, 5)
    assert not fn._sinks  # the transport took its interrupt sink away


def test_a_controller_without_io_command_set_selection_is_enabled_with_nvm(make_function, make_controller):
    # CAP.CSS.IOCSS clear (an NVMe 1.x controller): CC.CSS 000b, as Linux.
    function = make_function()
    function.controller.regs.cap.css_iocs = False
    ctrl = make_controller(function)
    assert ctrl.css == CcCss.NVM
    assert (ctrl.transport.reg_read32(Reg.CC) >> 4) & 7 == 0
    assert function.controller.regs.cc.css == CcCss.NVM
