"""Queues of the PCIe function (target/pci/queues.py) through the low-level
test API: I/O queue creation and deletion with every error status, data
through an I/O queue pair, wrap-around and phase tags, a full completion
queue holding completions back, invalid doorbell writes and their
asynchronous events, round robin and weighted round robin arbitration, and
queues described by PRP lists.  Scenarios run on the inline and the
threaded device."""

import pytest

from nvmestack.spec.admin import (
    AsyncEventRequest,
    CreateIoCq,
    CreateIoSq,
    GetFeatures,
    GetLogPage,
    Identify,
    QueuePriority,
    Sanitize,
    SetFeatures,
)
from nvmestack.spec.features import FeatureId
from nvmestack.spec.log import LogPageId
from nvmestack.spec.nvm import Flush, Read, Write
from nvmestack.spec.opcodes import NvmOpcode
from nvmestack.spec.registers import Reg
from nvmestack.spec.status import CommandSpecificStatus as CS
from nvmestack.spec.status import GenericStatus as G
from nvmestack.target.faults import FaultInjector
from nvmestack.target.pci.lowlevel import HostCq, QueuePair

from .conftest import ok, status_is

PAGE = 4096


def event_dw0(info, log_page=LogPageId.ERROR, event_type=0):
    return event_type | info << 8 | log_page << 16


def read_error_log(h):
    cmd = GetLogPage(lid=LogPageId.ERROR, nsid=0xFFFFFFFF)
    cmd.length = 64
    ok(h.admin_command(cmd, 64)[0])


def submit_aer(h, cid):
    h.admin.submit(AsyncEventRequest(), cid=cid)
    h.settle()


def wait_event(h, cid):
    """The completion of the AER ``cid`` (other admin completions are kept)."""
    cqe = h.admin.cq.claim(0, cid, timeout=5)
    assert cqe is not None, "no asynchronous event"
    ok(cqe)
    return cqe.dw0


# ----------------------------------------------------------------------------
# Create / Delete I/O queues, end to end


def create_cq(h, qid, entries=4, *, prp1=None, pc=True, ien=False, iv=0):
    cmd = CreateIoCq(qid=qid, prp1=h.alloc(PAGE).addr if prp1 is None else prp1, pc=pc, ien=ien, iv=iv)
    cmd.entries = entries
    return h.admin_command(cmd)[0]


def create_sq(h, qid, cqid, entries=4, *, prp1=None, pc=True, qprio=0):
    cmd = CreateIoSq(qid=qid, prp1=h.alloc(PAGE).addr if prp1 is None else prp1, pc=pc, cqid=cqid, qprio=qprio)
    cmd.entries = entries
    return h.admin_command(cmd)[0]


def test_create_and_delete_queue_errors(host):
    h = host
    fn = h.function
    # Completion queues.
    status_is(create_cq(h, 0), CS.INVALID_QUEUE_IDENTIFIER)
    status_is(create_cq(h, 65), CS.INVALID_QUEUE_IDENTIFIER)  # above the 64 granted
    status_is(create_cq(h, 1, entries=1), CS.INVALID_QUEUE_SIZE)  # QSIZE 0
    status_is(create_cq(h, 1, entries=1025), CS.INVALID_QUEUE_SIZE)  # above MQES + 1
    status_is(create_cq(h, 1, pc=False), G.INVALID_FIELD)  # CAP.CQR = 1
    status_is(create_cq(h, 1, prp1=h.alloc(2 * PAGE).addr + 512), G.PRP_OFFSET_INVALID)
    status_is(create_cq(h, 1, iv=1, ien=True), CS.INVALID_INTERRUPT_VECTOR)  # pin-based: vector 0 only
    assert fn.queues.queue(1, cq=True) is None
    ok(create_cq(h, 1))
    status_is(create_cq(h, 1), CS.INVALID_QUEUE_IDENTIFIER)  # exists
    # Submission queues.
    status_is(create_sq(h, 1, cqid=0), CS.COMPLETION_QUEUE_INVALID)
    status_is(create_sq(h, 1, cqid=2), CS.COMPLETION_QUEUE_INVALID)
    status_is(create_sq(h, 0, cqid=1), CS.INVALID_QUEUE_IDENTIFIER)
    status_is(create_sq(h, 65, cqid=1), CS.INVALID_QUEUE_IDENTIFIER)
    status_is(create_sq(h, 1, cqid=1, entries=1), CS.INVALID_QUEUE_SIZE)
    status_is(create_sq(h, 1, cqid=1, entries=1025), CS.INVALID_QUEUE_SIZE)
    status_is(create_sq(h, 1, cqid=1, pc=False), G.INVALID_FIELD)
    status_is(create_sq(h, 1, cqid=1, prp1=h.alloc(2 * PAGE).addr + 64), G.PRP_OFFSET_INVALID)
    assert fn.queues.queue(1) is None
    ok(create_sq(h, 1, cqid=1))
    status_is(create_sq(h, 1, cqid=1), CS.INVALID_QUEUE_IDENTIFIER)
    assert fn.queues.queue(1).cqid == 1
    # Deletion.
    status_is(h.delete_io_cq(1), CS.INVALID_QUEUE_DELETION)  # SQ 1 uses it
    status_is(h.delete_io_sq(2), CS.INVALID_QUEUE_IDENTIFIER)
    status_is(h.delete_io_sq(0), CS.INVALID_QUEUE_IDENTIFIER)
    status_is(h.delete_io_cq(0), CS.INVALID_QUEUE_IDENTIFIER)
    ok(h.delete_io_sq(1))
    assert fn.queues.queue(1) is None
    status_is(h.delete_io_sq(1), CS.INVALID_QUEUE_IDENTIFIER)
    ok(h.delete_io_cq(1))
    assert fn.queues.queue(1, cq=True) is None
    status_is(h.delete_io_cq(1), CS.INVALID_QUEUE_IDENTIFIER)
    # Fewer queues granted by Set Features Number of Queues.
    ok(h.admin_command(SetFeatures(fid=FeatureId.NUM_QUEUES, cdw11=1 | 1 << 16))[0])
    status_is(create_cq(h, 3), CS.INVALID_QUEUE_IDENTIFIER)
    ok(create_cq(h, 2))
    status_is(create_sq(h, 3, cqid=2), CS.INVALID_QUEUE_IDENTIFIER)
    ok(create_sq(h, 2, cqid=2))


def test_queue_entry_sizes_come_from_cc(make_function):
    _fn, h = make_function()
    h.enable_device()
    asq, acq = h.make_queue(4, 64), h.make_queue(4, 16)
    h.set_admin_queues(asq, acq)
    h.write_cc(en=True, iosqes=0, iocqes=0)
    assert h.wait_ready()
    h.admin = QueuePair(h, 0, asq, HostCq(h, 0, acq))
    status_is(create_cq(h, 1), CS.INVALID_QUEUE_SIZE)


def test_write_then_read_through_an_io_queue_pair(host):
    io = host.create_io_queue_pair(1, 16)
    data = bytes(range(256)) * 16
    out = host.alloc(PAGE)
    src = host.alloc(PAGE)
    src.view[:] = data
    cqe = io.command(Write(nsid=1, slba=16, nlb=7, prp1=src.addr))
    ok(cqe)
    assert cqe.sqid == 1
    cqe = io.command(Read(nsid=1, slba=16, nlb=7, prp1=out.addr))
    ok(cqe)
    assert bytes(out.view) == data
    # Two pages through PRP1 (with an offset) and PRP2.
    big = host.alloc(2 * PAGE)
    big.view[512 : 512 + PAGE] = bytes(range(251)) * (PAGE // 251) + bytes(PAGE % 251)
    ok(io.command(Write(nsid=1, slba=0, nlb=7, prp1=big.addr + 512, prp2=big.addr + PAGE)))
    back = host.alloc(PAGE)
    ok(io.command(Read(nsid=1, slba=0, nlb=7, prp1=back.addr)))
    assert bytes(back.view) == bytes(big.view[512 : 512 + PAGE])
    # A bad data pointer fails the command (through the core's error path).
    cqe = io.command(Read(nsid=1, slba=0, nlb=0, prp1=0x10))
    status_is(cqe, G.DATA_TRANSFER_ERROR, dnr=None)
    assert host.function.controller.error_count >= 1


def test_wrap_around_and_phase_flips_on_two_entry_queues(host):
    io = host.create_io_queue_pair(1, 2)
    fn = host.function
    seen = []
    for _ in range(6):
        index, phase = io.cq.head, io.cq.phase
        cqe = io.command(Flush(nsid=1))
        ok(cqe)
        raw = host.read_cqe(io.cq.queue, index)
        assert raw.phase == phase and raw.cid == cqe.cid
        seen.append((index, cqe.phase, cqe.sqhd))
    # CQ slots 0,1,0,1 ... with the phase flipping on every wrap; SQHD is the
    # SQ head after each fetch (2 entries: 1, 0, 1, 0 ...).
    assert seen == [(0, 1, 1), (1, 1, 0), (0, 0, 1), (1, 0, 0), (0, 1, 1), (1, 1, 0)]
    sq, cq = fn.queues.queue(1), fn.queues.queue(1, cq=True)
    # Three wraps of the CQ: the device now writes phase 0.
    assert (sq.head, sq.tail, cq.head, cq.tail, cq.phase) == (0, 0, 0, 0, 0)
    assert io.cq.phase == 0


def test_full_completion_queue_holds_completions_back(host):
    fn = host.function
    io = host.create_io_queue_pair(1, 4, cq_entries=2)
    cqring = io.cq.queue
    for cid in (1, 2, 3):
        io.post(Flush(nsid=1), cid=cid)
    io.ring()
    host.settle()
    # One slot of a 2-entry queue can be used: the second completion waits
    # and the third command is not even fetched meanwhile.
    first = io.reap()
    assert [c.cid for c in first] == [1] and first[0].sqhd == 1
    assert bytes(cqring.entry(1)) == bytes(16)  # never written
    cq, sq = fn.queues.queue(1, cq=True), fn.queues.queue(1)
    assert len(cq.held) == 1 and sq.head == 2
    io.release()  # CQ head 1: room for one
    second = io.wait(1)
    assert [(c.cid, c.sqhd, c.phase) for c in second] == [(2, 2, 1)]
    third = io.wait(1)
    assert [(c.cid, c.sqhd, c.phase) for c in third] == [(3, 3, 0)]
    assert not cq.held and sq.head == 3
    # The host's view was never overwritten: slot 1 still holds cid 2.
    assert host.read_cqe(cqring, 1).cid == 2


def test_commands_keep_flowing_through_a_small_completion_queue(host):
    io = host.create_io_queue_pair(1, 8, cq_entries=2)
    for cid in range(1, 8):
        io.post(Flush(nsid=1), cid=cid)
    io.ring()
    got = []
    for _ in range(7):
        got += io.wait(1)
    assert [c.cid for c in got] == list(range(1, 8))


# ----------------------------------------------------------------------------
# invalid doorbell writes


def test_sq_tail_doorbell_overflow_raises_an_event(host):
    fn = host.function
    io = host.create_io_queue_pair(1, 4)
    submit_aer(host, 0x50)
    host.ring_sq(1, 4)  # == queue size: out of range
    assert wait_event(host, 0x50) == event_dw0(0x01)
    assert fn.queues.queue(1).tail == 0  # the write was ignored
    # The queue still works.
    ok(io.command(Flush(nsid=1)))
    # More entries than the queue holds (the tail passes the head).
    read_error_log(host)  # unmasks Error events
    submit_aer(host, 0x51)
    host.set_bus_master(False)
    for cid in (10, 11, 12):
        io.post(Flush(nsid=1), cid=cid)
    io.ring()  # three outstanding in a 4-entry queue: full
    host.ring_sq(1, (io.sq_tail + 1) % 4)  # a fourth: overflow
    host.set_bus_master(True)
    assert wait_event(host, 0x51) == event_dw0(0x01)
    assert sorted(c.cid for c in io.wait(3)) == [10, 11, 12]


def test_doorbell_of_a_missing_queue_raises_an_event(host):
    submit_aer(host, 0x60)
    host.ring_sq(5, 1)
    assert wait_event(host, 0x60) == event_dw0(0x00)
    # A second error while Error events are masked waits for the log read.
    submit_aer(host, 0x61)
    host.ring_cq(7, 0)
    host.settle()
    assert host.admin.cq.claim(0, 0x61, timeout=0) is None
    read_error_log(host)
    assert wait_event(host, 0x61) == event_dw0(0x00)
    # Doorbells far beyond the created queues too (but inside the doorbell range).
    read_error_log(host)
    submit_aer(host, 0x62)
    host.ring_sq(200, 0)
    assert wait_event(host, 0x62) == event_dw0(0x00)


def test_cq_head_doorbell_invalid_values_raise_events(host):
    fn = host.function
    io = host.create_io_queue_pair(1, 4)
    submit_aer(host, 0x70)
    host.ring_cq(1, 4)  # out of range
    assert wait_event(host, 0x70) == event_dw0(0x01)
    read_error_log(host)
    submit_aer(host, 0x71)
    host.ring_cq(1, 2)  # releases entries never posted: an empty CQ
    assert wait_event(host, 0x71) == event_dw0(0x01)
    assert fn.queues.queue(1, cq=True).head == 0
    ok(io.command(Flush(nsid=1)))
    # The admin queue's doorbells are checked too.
    read_error_log(host)
    submit_aer(host, 0x72)
    host.ring_sq(0, 32)
    assert wait_event(host, 0x72) == event_dw0(0x01)


# ----------------------------------------------------------------------------
# arbitration


def fetch_order(fn, since):
    return [sqid for sqid, _cid in list(fn.queues.fetch_log)[since:]]


def run_batch(host, pairs_and_counts, cq):
    """Post commands to several SQs while bus mastering is off, ring them
    all, turn bus mastering on; returns the SQ ids in fetch order."""
    fn = host.function
    host.set_bus_master(False)
    cid = 100
    total = 0
    for pair, count in pairs_and_counts:
        for _ in range(count):
            pair.post(Flush(nsid=1), cid=cid)
            cid += 1
        pair.ring()
        total += count
    since = len(fn.queues.fetch_log)
    host.set_bus_master(True)
    got = cq.wait(total)
    assert len(got) == total
    for cqe in got:
        ok(cqe)
    order = fetch_order(fn, since)
    assert [c.sqid for c in got if c.sqid] == [q for q in order if q]  # completions in fetch order
    return order


@pytest.mark.parametrize("ab,expected", [
    (0, [1, 2, 3, 1, 2, 3, 1, 2, 3]),
    (1, [1, 1, 2, 2, 3, 3, 1, 2, 3]),
    (7, [1, 1, 1, 2, 2, 2, 3, 3, 3]),
])
def test_round_robin_with_arbitration_burst(host, ab, expected):
    ok(host.admin_command(SetFeatures(fid=FeatureId.ARBITRATION, cdw11=ab))[0])
    pairs = [host.create_io_queue_pair(q, 8, cq_entries=32, cqid=1) for q in (1, 2, 3)]
    order = run_batch(host, [(p, 3) for p in pairs], pairs[0].cq)
    assert order == expected


def test_weighted_round_robin_with_urgent_class(make_function, mode):
    _fn, h = make_function(mode=mode)
    h.enable_device()
    h.enable(ams=1)  # CC.AMS = weighted round robin with urgent priority class
    # AB 0 (one command per turn), LPW 0, MPW 1, HPW 2 (0's based weights).
    ok(h.admin_command(SetFeatures(fid=FeatureId.ARBITRATION, cdw11=0 | 0 << 8 | 1 << 16 | 2 << 24))[0])
    high = h.create_io_queue_pair(1, 8, cq_entries=32, cqid=1, qprio=QueuePriority.HIGH)
    medium = h.create_io_queue_pair(2, 8, cqid=1, qprio=QueuePriority.MEDIUM)
    low = h.create_io_queue_pair(3, 8, cqid=1, qprio=QueuePriority.LOW)
    urgent = h.create_io_queue_pair(4, 8, cqid=1, qprio=QueuePriority.URGENT)
    # An admin command in the same batch goes first (strict priority).
    buf = h.alloc(PAGE)
    h.set_bus_master(False)
    h.admin.post(Identify(cns=1, prp1=buf.addr), cid=0x99)
    h.admin.ring()
    order = run_batch(h, [(low, 2), (medium, 4), (high, 6), (urgent, 2)], high.cq)
    assert order == [0, 4, 4, 1, 1, 1, 2, 2, 3, 1, 1, 1, 2, 2, 3]
    assert [c.cid for c in h.admin.wait(1)] == [0x99]


def test_round_robin_ignores_queue_priority(host):
    ok(host.admin_command(SetFeatures(fid=FeatureId.ARBITRATION, cdw11=0))[0])
    low = host.create_io_queue_pair(1, 8, cq_entries=32, cqid=1, qprio=QueuePriority.LOW)
    urgent = host.create_io_queue_pair(2, 8, cqid=1, qprio=QueuePriority.URGENT)
    order = run_batch(host, [(low, 2), (urgent, 2)], low.cq)
    assert order == [1, 2, 1, 2]


# ----------------------------------------------------------------------------
# queues described by PRP lists (CAP.CQR = 0)


def test_prp_list_queues_when_cqr_is_clear(make_function, mode):
    fn, h = make_function(mode=mode, contiguous_queues=False)
    h.bring_up()
    assert not h.cap.cqr
    # 128 x 64-byte SQ entries and 512 x 16-byte CQ entries: two pages each.
    io = h.create_io_queue_pair(1, 128, cq_entries=512, paged=True)
    sq = fn.queues.queue(1)
    assert not sq.contiguous and sq.pages == [p.addr for p in io.sq.pages]
    src = h.alloc(PAGE)
    out = h.alloc(PAGE)
    for i in range(140):  # past the first page of both rings and around the SQ
        src.view[:4] = i.to_bytes(4, "little")
        ok(io.command(Write(nsid=1, slba=i % 8, nlb=0, prp1=src.addr)))
        ok(io.command(Read(nsid=1, slba=i % 8, nlb=0, prp1=out.addr)))
        assert bytes(out.view[:4]) == i.to_bytes(4, "little")
    assert io.cq.head == 280 % 512


def test_prp_list_queue_errors(make_function):
    fn, h = make_function(contiguous_queues=False)
    h.bring_up()
    ring = h.make_paged_queue(512, 16)
    ring.buf.view[8:16] = (ring.pages[1].addr + 16).to_bytes(8, "little")  # not page aligned
    status_is(create_cq(h, 1, entries=512, prp1=ring.addr, pc=False), G.PRP_OFFSET_INVALID)
    assert fn.queues.queue(1, cq=True) is None
    # A PRP list in memory the host does not have.
    status_is(create_cq(h, 1, entries=512, prp1=0x1000, pc=False), G.DATA_TRANSFER_ERROR, dnr=False)
    # Physically contiguous queues still work.
    ok(create_cq(h, 1))


# ----------------------------------------------------------------------------
# deletion with commands outstanding


def test_delete_sq_aborts_its_outstanding_commands(host, subsystem):
    fn = host.function
    faults = FaultInjector.install(subsystem)
    faults.drop(opcode=NvmOpcode.FLUSH, admin=False)
    io = host.create_io_queue_pair(1, 8)
    io.submit(Flush(nsid=1), cid=0x33)
    host.settle()
    assert (1, 0x33) in fn.controller.outstanding
    ok(host.delete_io_sq(1))
    got = io.wait(1)
    assert [c.cid for c in got] == [0x33]
    status_is(got[0], G.ABORTED_SQ_DELETION, dnr=False)
    assert (1, 0x33) not in fn.controller.outstanding
    assert fn.queues.queue(1) is None
    # Doorbells of the deleted SQ are now doorbells of a missing queue.
    submit_aer(host, 0x40)
    host.ring_sq(1, 1)
    assert wait_event(host, 0x40) == event_dw0(0x00)
    ok(host.delete_io_cq(1))


def test_device_keeps_serving_many_commands(host):
    io = host.create_io_queue_pair(1, 16)
    bufs = [host.alloc(512) for _ in range(8)]
    for round_ in range(5):
        for i, buf in enumerate(bufs):
            buf.view[:2] = bytes([round_, i])
            io.post(Write(nsid=1, slba=100 + i, nlb=0, prp1=buf.addr), cid=io.new_cid())
        io.ring()
        assert len(io.wait(8)) == 8
    for i in range(8):
        out = host.alloc(512)
        ok(io.command(Read(nsid=1, slba=100 + i, nlb=0, prp1=out.addr)))
        assert bytes(out.view[:2]) == bytes([4, i])
    assert host.bar_read32(Reg.CSTS) & 0x3 == 1  # ready, not fatal


def test_a_command_that_changes_what_the_fast_path_may_do_is_seen_by_the_next_one(host, subsystem, io_path):
    """The device looks at whether the fast path may run once for a run of
    commands of one queue, and again after any command of the general path:
    a Sanitize fetched between two Reads of one run gates the second Read."""
    fn = host.function
    ops = subsystem.operations
    ops.sanitize_seconds = 5.0
    ok(host.admin_command(SetFeatures(fid=FeatureId.ARBITRATION, cdw11=0))[0])  # round robin, one per turn
    pair = host.create_io_queue_pair(1, 8)
    buf = host.alloc(PAGE)
    ok(pair.command(Read(nsid=1, slba=0, nlb=0, prp1=buf.addr)))  # the arbiter last served queue 1, then...
    ok(host.admin_command(GetFeatures(fid=FeatureId.ARBITRATION))[0])  # ...the admin queue
    host.set_bus_master(False)
    pair.post(Read(nsid=1, slba=0, nlb=0, prp1=buf.addr), cid=1)
    pair.post(Read(nsid=1, slba=0, nlb=0, prp1=buf.addr), cid=2)
    pair.ring()
    host.admin.post(Sanitize(sanact=2), cid=7)
    host.admin.ring()
    since = len(fn.queues.fetch_log)
    host.set_bus_master(True)
    (san,) = host.admin.wait(1)
    ok(san)
    first, second = sorted(pair.wait(2), key=lambda c: c.cid)
    assert fetch_order(fn, since) == [1, 0, 1]  # Read, Sanitize, Read: one run of commands
    ok(first)
    status_is(second, G.SANITIZE_IN_PROGRESS, dnr=False)
    ops._stop.set()  # end the sanitize operation early
    assert ops.wait_sanitize()
