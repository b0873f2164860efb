"""Create/Delete I/O Submission and Completion Queues (NVMe 2.0 base spec
5.4-5.7), validated by the controller before the transport's queue_ops
builds the rings; and the command control admin commands: Asynchronous
Event Request (5.2) and Abort (5.1)."""

import pytest

from nvmestack.spec.admin import (
    Abort,
    AsyncEventRequest,
    CreateIoCq,
    CreateIoSq,
    DeleteIoCq,
    DeleteIoSq,
    SetFeatures,
)
from nvmestack.spec.features import FeatureId, NumberOfQueues
from nvmestack.spec.log import LogPageId
from nvmestack.spec.nvm import Read
from nvmestack.spec.opcodes import AdminOpcode, NvmOpcode
from nvmestack.spec.registers import Reg
from nvmestack.spec.status import CommandSpecificStatus, GenericStatus, Status
from nvmestack.target.controller import AsyncEventType
from nvmestack.target.errors import NvmeError
from nvmestack.target.faults import FaultInjector

from .conftest import enable

PAGE = 4096


class FakeQueueOps:
    """Records what the controller asks the transport to do."""

    def __init__(self, max_vectors=4):
        self.max_vectors = max_vectors
        self.calls = []
        self.fail_next = None

    def _call(self, *args):
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err
        self.calls.append(args)

    def create_cq(self, qid, size, prp1, contiguous, ien, iv):
        self._call("create_cq", qid, size, prp1, contiguous, ien, iv)

    def create_sq(self, qid, size, prp1, contiguous, cqid, qprio):
        self._call("create_sq", qid, size, prp1, contiguous, cqid, qprio)

    def delete_sq(self, qid):
        self._call("delete_sq", qid)

    def delete_cq(self, qid):
        self._call("delete_cq", qid)


@pytest.fixture
def ops():
    return FakeQueueOps()


@pytest.fixture
def pctrl(subsystem, ops):
    """An enabled controller of a memory-based transport (PCIe)."""
    return enable(subsystem.add_controller(queue_ops=ops))


def status(ctrl, cmd, sqid=0):
    req = ctrl.submit(cmd, sqid=sqid)
    return Status.of(req.cqe)


def expect(st, code, dnr=True):
    assert (st.sct, st.sc, st.dnr) == (code.sct, code, dnr), st


def cq(qid, entries=16, prp1=0x10000, pc=True, ien=True, iv=1, **kw):
    return CreateIoCq(qid=qid, entries=entries, prp1=prp1, pc=pc, ien=ien, iv=iv, **kw)


def sq(qid, cqid, entries=16, prp1=0x20000, pc=True, qprio=0, **kw):
    return CreateIoSq(qid=qid, cqid=cqid, entries=entries, prp1=prp1, pc=pc, qprio=qprio, **kw)


# ---------------------------------------------------------------- create


def test_create_cq_and_sq(pctrl, ops):
    assert status(pctrl, cq(1, entries=32, prp1=0x123000, iv=2)).ok
    assert ops.calls == [("create_cq", 1, 32, 0x123000, True, True, 2)]
    assert pctrl.io_cqs[1] == {"size": 32, "prp1": 0x123000, "contiguous": True, "ien": True, "iv": 2}
    assert status(pctrl, sq(1, 1, entries=64, prp1=0x456000, qprio=2)).ok
    assert ops.calls[-1] == ("create_sq", 1, 64, 0x456000, True, 1, 2)
    assert pctrl.io_sqs[1]["cqid"] == 1
    # Several submission queues may share a completion queue.
    assert status(pctrl, sq(2, 1)).ok


def test_create_cq_invalid_queue_identifier(pctrl, ops):
    expect(status(pctrl, cq(0)), CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
    expect(status(pctrl, cq(65)), CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)  # beyond the maximum
    assert status(pctrl, cq(1)).ok
    expect(status(pctrl, cq(1)), CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)  # in use
    assert ops.calls == [("create_cq", 1, 16, 0x10000, True, True, 1)]


def test_queue_identifiers_follow_number_of_queues(subsystem, ops):
    ctrl = enable(subsystem.add_controller(queue_ops=ops))
    assert status(ctrl, SetFeatures(fid=FeatureId.NUM_QUEUES, cdw11=NumberOfQueues.for_counts(2, 3).dword)).ok
    assert status(ctrl, cq(3)).ok
    expect(status(ctrl, cq(4)), CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
    assert status(ctrl, sq(2, 3)).ok
    expect(status(ctrl, sq(3, 3)), CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
    # Once queues exist the number of queues is fixed until a reset.
    st = status(ctrl, SetFeatures(fid=FeatureId.NUM_QUEUES, cdw11=0))
    expect(st, GenericStatus.COMMAND_SEQUENCE_ERROR)


@pytest.mark.parametrize("make", [cq, lambda qid, **kw: sq(qid, 1, **kw)])
def test_invalid_queue_size(pctrl, make):
    assert status(pctrl, cq(1)).ok
    mqes = pctrl.regs.cap.mqes
    expect(status(pctrl, make(2, entries=1)), CommandSpecificStatus.INVALID_QUEUE_SIZE)  # QSIZE 0
    expect(status(pctrl, make(2, entries=mqes + 2)), CommandSpecificStatus.INVALID_QUEUE_SIZE)
    assert status(pctrl, make(2, entries=mqes + 1)).ok


@pytest.mark.parametrize("make", [cq, lambda qid, **kw: sq(qid, 1, **kw)])
def test_contiguous_queues_required(pctrl, make):
    assert pctrl.regs.cap.cqr
    assert status(pctrl, cq(1)).ok
    expect(status(pctrl, make(2, pc=False)), GenericStatus.INVALID_FIELD)


@pytest.mark.parametrize("make", [cq, lambda qid, **kw: sq(qid, 1, **kw)])
def test_queue_base_must_be_page_aligned(pctrl, make):
    assert status(pctrl, cq(1)).ok
    expect(status(pctrl, make(2, prp1=0x10200)), GenericStatus.PRP_OFFSET_INVALID)


def test_invalid_interrupt_vector(pctrl, ops):
    expect(status(pctrl, cq(1, iv=4)), CommandSpecificStatus.INVALID_INTERRUPT_VECTOR)
    expect(status(pctrl, cq(1, iv=0xFFFF)), CommandSpecificStatus.INVALID_INTERRUPT_VECTOR)
    assert status(pctrl, cq(1, iv=3)).ok
    assert pctrl.io_cqs[1]["iv"] == 3


def test_create_sq_completion_queue_invalid(pctrl):
    expect(status(pctrl, sq(1, 0)), CommandSpecificStatus.COMPLETION_QUEUE_INVALID)
    expect(status(pctrl, sq(1, 2)), CommandSpecificStatus.COMPLETION_QUEUE_INVALID)
    assert status(pctrl, cq(2)).ok
    assert status(pctrl, sq(1, 2)).ok
    expect(status(pctrl, sq(1, 2)), CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
    expect(status(pctrl, sq(0, 2)), CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)


def test_queue_entry_sizes_come_from_cc(subsystem, ops):
    ctrl = subsystem.add_controller(queue_ops=ops)
    ctrl.set_property(Reg.CC, 4, 1 | (7 << 16) | (5 << 20))  # 128-byte SQEs, 32-byte CQEs
    assert ctrl.enabled
    expect(status(ctrl, cq(1)), CommandSpecificStatus.INVALID_QUEUE_SIZE)
    ctrl.io_cqs[1] = {"size": 16}
    expect(status(ctrl, sq(1, 1)), CommandSpecificStatus.INVALID_QUEUE_SIZE)
    assert ops.calls == []


def test_transport_failure_leaves_no_queue(pctrl, ops):
    ops.fail_next = NvmeError(GenericStatus.INTERNAL_ERROR, dnr=False)
    expect(status(pctrl, cq(1)), GenericStatus.INTERNAL_ERROR, dnr=False)
    assert 1 not in pctrl.io_cqs
    assert status(pctrl, cq(1)).ok


# ---------------------------------------------------------------- delete


def test_delete_queues(pctrl, ops):
    assert status(pctrl, cq(1)).ok and status(pctrl, sq(1, 1)).ok
    expect(status(pctrl, DeleteIoCq(qid=1)), CommandSpecificStatus.INVALID_QUEUE_DELETION)
    assert status(pctrl, DeleteIoSq(qid=1)).ok
    assert status(pctrl, DeleteIoCq(qid=1)).ok
    assert ops.calls[-2:] == [("delete_sq", 1), ("delete_cq", 1)]
    assert not pctrl.io_sqs and not pctrl.io_cqs


def test_delete_invalid_queue_identifier(pctrl, ops):
    for cmd in (DeleteIoSq(qid=0), DeleteIoSq(qid=1), DeleteIoCq(qid=0), DeleteIoCq(qid=3)):
        expect(status(pctrl, cmd), CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
    assert ops.calls == []


def test_delete_sq_aborts_its_outstanding_commands(pctrl):
    assert status(pctrl, cq(1)).ok and status(pctrl, sq(1, 1)).ok
    pending = pctrl.new_request(Read(nsid=1, cid=7), sqid=1)
    assert pctrl.prepare(pending)  # fetched, data not mapped yet
    other = pctrl.new_request(Read(nsid=1, cid=7), sqid=2)
    assert pctrl.prepare(other)
    assert status(pctrl, DeleteIoSq(qid=1)).ok
    assert pending.done
    expect(pending.status, GenericStatus.ABORTED_SQ_DELETION, dnr=False)
    assert not other.done


def test_queue_commands_without_queue_ops_are_invalid_opcode(ctrl):
    for cmd in (cq(1), sq(1, 1), DeleteIoSq(qid=1), DeleteIoCq(qid=1)):
        expect(status(ctrl, cmd), GenericStatus.INVALID_OPCODE)


# ---------------------------------------------------------------- Asynchronous Event Request


def test_async_event_request_limit(ctrl):
    reqs = [ctrl.submit(AsyncEventRequest(cid=i)) for i in range(4)]
    assert not any(r.done for r in reqs)
    st = status(ctrl, AsyncEventRequest(cid=9))
    expect(st, CommandSpecificStatus.ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED)
    ctrl.post_event(AsyncEventType.ERROR, 0x02, LogPageId.ERROR)
    assert reqs[0].done and Status.of(reqs[0].cqe).ok
    assert reqs[0].cqe.dw0 == AsyncEventType.ERROR | 0x02 << 8 | LogPageId.ERROR << 16
    again = ctrl.submit(AsyncEventRequest(cid=10))  # a place is free again
    assert not again.done and len(ctrl.aer_requests) == 4


# ---------------------------------------------------------------- Abort


def test_abort_a_waiting_async_event_request(ctrl):
    waiting = ctrl.submit(AsyncEventRequest(cid=0x42))
    req = ctrl.submit(Abort(sqid=0, abort_cid=0x42, cid=1))
    assert Status.of(req.cqe).ok and req.cqe.dw0 & 1 == 0  # aborted
    assert waiting.done
    expect(waiting.status, GenericStatus.ABORT_REQUESTED, dnr=False)
    assert waiting not in ctrl.aer_requests
    ctrl.post_event(AsyncEventType.ERROR, 0, LogPageId.ERROR)  # nothing to complete: kept
    assert ctrl.pending_events


def test_abort_of_an_unknown_or_finished_command(ctrl):
    req = ctrl.submit(Abort(sqid=0, abort_cid=0x77, cid=1))
    assert Status.of(req.cqe).ok and req.cqe.dw0 & 1 == 1  # not aborted
    req = ctrl.submit(Abort(sqid=5, abort_cid=1, cid=2))
    assert Status.of(req.cqe).ok and req.cqe.dw0 & 1 == 1
    req = ctrl.submit(Abort(sqid=0, abort_cid=3, cid=3))  # itself
    assert Status.of(req.cqe).ok and req.cqe.dw0 & 1 == 1


def test_abort_a_command_a_fault_holds(subsystem, ctrl):
    faults = FaultInjector.install(subsystem)
    faults.drop(admin=False, opcode=NvmOpcode.READ, count=1)
    held = ctrl.submit(Read(nsid=1, cid=0x21), sqid=1)
    assert not held.done
    req = ctrl.submit(Abort(sqid=1, abort_cid=0x21, cid=5))
    assert req.cqe.dw0 & 1 == 0
    assert held.done
    expect(held.status, GenericStatus.ABORT_REQUESTED, dnr=False)
    assert (1, 0x21) not in ctrl.outstanding


def test_abort_leaves_a_running_command_alone(ctrl):
    running = ctrl.new_request(Read(nsid=1, cid=0x31), sqid=1)
    assert ctrl.prepare(running)  # outstanding, not held back by anything
    req = ctrl.submit(Abort(sqid=1, abort_cid=0x31, cid=6))
    assert req.cqe.dw0 & 1 == 1 and not running.done


def test_abort_command_limit_exceeded(subsystem, ctrl):
    faults = FaultInjector.install(subsystem)
    faults.drop(admin=True, opcode=AdminOpcode.ABORT, count=4)
    held = [ctrl.submit(Abort(sqid=0, abort_cid=0x100 + i, cid=0x10 + i)) for i in range(4)]
    assert not any(r.done for r in held)  # ACL + 1 = 4 outstanding Abort commands
    st = status(ctrl, Abort(sqid=0, abort_cid=0x200, cid=0x20))
    expect(st, CommandSpecificStatus.ABORT_COMMAND_LIMIT_EXCEEDED, dnr=False)
    # Once one of them completes there is a place again.
    held[0].complete()
    req = ctrl.submit(Abort(sqid=0, abort_cid=0x11, cid=0x21))
    assert Status.of(req.cqe).ok and req.cqe.dw0 & 1 == 0 and held[1].done
