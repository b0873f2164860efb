"""Submission and completion queues in host memory: doorbells, arbitration,
command fetch and completion posting (NVMe 2.0 base spec 3.3 "Queue
Mechanism", 4.13 "Command Arbitration"; NVMe over PCIe 3.x doorbells).

The :class:`QueueManager` is the PCIe function's side of the queues:

* it is the controller's ``queue_ops`` (the admin commands Create/Delete
  I/O Submission/Completion Queue validate every field in the core, then
  call :meth:`QueueManager.create_cq` and friends to build the rings);
* the function gives it doorbell writes (:meth:`QueueManager.doorbell`);
  an out of range value or the doorbell of a queue that does not exist is
  reported with the Error asynchronous event (Write to Invalid Doorbell
  Register, Invalid Doorbell Write Value) and otherwise ignored;
* it fetches 64-byte entries from submission queues in arbitration order
  (round robin, or weighted round robin with urgent priority class and the
  Arbitration feature's burst and weights), runs each through the core
  (``new_request`` -> ``prepare`` -> DMA mapping -> ``execute``) and posts
  the 16-byte completion with the phase tag, SQ head and SQ id;
* a completion queue never has an unconsumed entry overwritten: while it is
  full, completions wait in order (and the submission queues that use it
  are not fetched from) until the host moves the head.

Two modes run the same code: ``inline`` processes what a doorbell write
made available before the write returns (deterministic tests), ``thread``
runs the device on its own thread, woken by doorbell writes.

Locks (never taken in the other order): the *gate* (held while a command
is fetched and started, and by the function around resets) -> the
controller's lock -> the *post lock* (completion posting and CQ head
doorbells, so that the interrupt logic hears about posted and consumed
entries in the order they happened) -> the queue lock.  Nothing calls the
controller or the interrupt logic while holding the queue lock, nor the
controller or the host's interrupt sinks while holding the post lock:
events, interrupts and sink calls found under them are made after they
are released.
"""

from __future__ import annotations

import collections
import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...memory import DmaError
from ...spec.admin import QueuePriority
from ...spec.cqe import CQE_SIZE
from ...spec.features import FeatureId
from ...spec.log import LogPageId
from ...spec.registers import Ams
from ...spec.sqe import SQE_SIZE, Command
from ...spec.status import CommandSpecificStatus, GenericStatus
from ..controller import AsyncEventType
from ..errors import NvmeError
from ..fastpath import FLUSH, FastIo
from .dma import map_prps

if TYPE_CHECKING:
    from ..request import Request
    from .function import PciFunction

# The fast path's fields: PRP1/PRP2 and CID of the entry; a successful
# completion (DW0, DW1, SQHD and the phase are filled when it is posted).
_PRPS = struct.Struct("<QQ")
_PRPS_OFF = Command.prp1.offset
assert Command.prp2.offset == _PRPS_OFF + 8 and Command.cid.offset == 2
_CID = struct.Struct("<H")
_CQE_SUCCESS = struct.Struct("<IIHHHH")  # DW0, DW1, SQHD, SQID, CID, status and phase

__all__ = [
    "NO_BURST_LIMIT",
    "CompletionQueue",
    "ErrorEventInfo",
    "QueueManager",
    "SubmissionQueue",
]

log = logging.getLogger(__name__)

NO_BURST_LIMIT = 7  # Arbitration Burst 111b


class ErrorEventInfo:
    """Asynchronous Event Information for Error events (type 0h)."""

    INVALID_DOORBELL_REGISTER = 0x00  # Write to Invalid Doorbell Register
    INVALID_DOORBELL_VALUE = 0x01  # Invalid Doorbell Write Value
    DIAGNOSTIC_FAILURE = 0x02
    PERSISTENT_INTERNAL_ERROR = 0x03
    TRANSIENT_INTERNAL_ERROR = 0x04
    FIRMWARE_IMAGE_LOAD_ERROR = 0x05


class _Ring:
    """Entries of ``entry_size`` bytes in host memory: one contiguous range
    or the pages of a PRP list."""

    __slots__ = ("alive", "contiguous", "entry_size", "page_size", "pages", "qid", "size")

    def __init__(self, qid: int, size: int, entry_size: int, pages: list[int], page_size: int, contiguous: bool):
        self.qid = qid
        self.size = size
        self.entry_size = entry_size
        self.pages = pages
        self.page_size = page_size
        self.contiguous = contiguous
        self.alive = True

    @property
    def base(self) -> int:
        return self.pages[0]

    def address(self, index: int) -> int:
        offset = index * self.entry_size
        if self.contiguous:
            return self.pages[0] + offset
        return self.pages[offset // self.page_size] + offset % self.page_size


class SubmissionQueue(_Ring):
    __slots__ = ("cqid", "head", "qprio", "tail", "fast")

    def __init__(self, qid: int, size: int, pages: list[int], page_size: int, contiguous: bool,
                 cqid: int, qprio: int):
        super().__init__(qid, size, SQE_SIZE, pages, page_size, contiguous)
        self.cqid = cqid
        self.qprio = qprio
        self.head = 0
        self.tail = 0
        self.fast: FastIo | None = None  # an I/O queue's fast path (fastpath.py)

    @property
    def pending(self) -> int:
        """Entries the host submitted that the device has not fetched."""
        return (self.tail - self.head) % self.size

    def __repr__(self) -> str:
        return f"<SQ {self.qid} size={self.size} head={self.head} tail={self.tail} cq={self.cqid}>"


class CompletionQueue(_Ring):
    __slots__ = ("head", "held", "ien", "iv", "phase", "sqids", "tail")

    def __init__(self, qid: int, size: int, pages: list[int], page_size: int, contiguous: bool,
                 ien: bool, iv: int):
        super().__init__(qid, size, CQE_SIZE, pages, page_size, contiguous)
        self.ien = ien
        self.iv = iv
        self.head = 0
        self.tail = 0
        self.phase = 1
        # Completions waiting for room: (16 bytes, the submission queue).
        self.held: collections.deque[tuple[bytearray, SubmissionQueue]] = collections.deque()
        self.sqids: set[int] = set()

    @property
    def full(self) -> bool:
        return (self.tail + 1) % self.size == self.head

    @property
    def unconsumed(self) -> int:
        """Entries posted that the host has not released with the head doorbell."""
        return (self.tail - self.head) % self.size

    def __repr__(self) -> str:
        return (f"<CQ {self.qid} size={self.size} head={self.head} tail={self.tail} "
                f"phase={self.phase} held={len(self.held)}>")


@dataclass
class _RoundRobin:
    """Round robin with an arbitration burst over a set of queues."""

    current: int | None = None
    left: int = 0

    def pick(self, qids: list[int], burst: int | None) -> int:
        """The next queue of ``qids`` (sorted, not empty)."""
        if self.current in qids and self.left > 0:
            self.left -= 1
            return self.current
        after = [q for q in qids if self.current is None or q > self.current]
        self.current = after[0] if after else qids[0]
        self.left = (burst - 1) if burst is not None else 1 << 30
        return self.current

    def reset(self) -> None:
        self.current = None
        self.left = 0


@dataclass
class _Arbiter:
    """Arbitration state (NVMe 2.0 base spec 4.13).

    Round robin: every submission queue, the admin queue included, in turn,
    up to the arbitration burst (2^AB commands, AB = 111b no limit) from one
    queue before the next.  Weighted round robin with urgent priority class:
    the admin queue strictly first, then urgent queues (round robin among
    them), then high, medium and low priority queues weighted: each round a
    class may launch HPW+1, MPW+1, LPW+1 commands (round robin with burst
    inside the class), classes in that order, a new round when no class
    with work has credit left."""

    rr: _RoundRobin = field(default_factory=_RoundRobin)
    urgent: _RoundRobin = field(default_factory=_RoundRobin)
    classes: dict[int, _RoundRobin] = field(
        default_factory=lambda: {p: _RoundRobin() for p in (QueuePriority.HIGH, QueuePriority.MEDIUM,
                                                            QueuePriority.LOW)})
    credits: dict[int, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.rr.reset()
        self.urgent.reset()
        for state in self.classes.values():
            state.reset()
        self.credits.clear()

    def pick(self, ready: list[SubmissionQueue], ams: int, arbitration: int) -> SubmissionQueue:
        ab = arbitration & 0x7
        burst = None if ab == NO_BURST_LIMIT else 1 << ab
        if ams != Ams.WRRU and len(ready) == 1:  # round robin over one queue (the usual I/O load)
            self.rr.pick([ready[0].qid], burst)
            return ready[0]
        by_qid = {sq.qid: sq for sq in ready}
        if ams != Ams.WRRU:
            return by_qid[self.rr.pick(sorted(by_qid), burst)]
        if 0 in by_qid:
            return by_qid[0]
        urgent = sorted(q for q, sq in by_qid.items() if sq.qprio == QueuePriority.URGENT)
        if urgent:
            return by_qid[self.urgent.pick(urgent, burst)]
        weights = {
            QueuePriority.HIGH: (arbitration >> 24 & 0xFF) + 1,
            QueuePriority.MEDIUM: (arbitration >> 16 & 0xFF) + 1,
            QueuePriority.LOW: (arbitration >> 8 & 0xFF) + 1,
        }
        members = {p: sorted(q for q, sq in by_qid.items() if sq.qprio == p) for p in weights}
        for _round in range(2):
            for prio in (QueuePriority.HIGH, QueuePriority.MEDIUM, QueuePriority.LOW):
                if not members[prio]:
                    continue
                left = self.credits.get(prio, weights[prio])
                if left > 0:
                    self.credits[prio] = left - 1
                    return by_qid[self.classes[prio].pick(members[prio], burst)]
            # Every class with work spent its weight: a new round.
            self.credits = dict(weights)
        raise AssertionError("arbitration found no queue")  # pragma: no cover


class _Posting:
    """``with manager._posting():`` -- the post lock held, interrupt sinks
    deferred until it is released, then a completion write that failed
    reported (controller fatal status).  Re-entrant, like the lock; an
    object rather than a generator: it wraps every posted completion."""

    __slots__ = ("manager",)

    def __init__(self, manager: "QueueManager"):
        self.manager = manager

    def __enter__(self) -> None:
        m = self.manager
        m.post_lock.acquire()
        m.function._defer_sinks(1)

    def __exit__(self, *exc: Any) -> None:
        m = self.manager
        fn = m.function
        try:
            fn._defer_sinks(-1)
        finally:
            m.post_lock.release()
        fn._flush_sinks()
        if m._fatal:
            m._fatal = False
            m.ctrl.fatal()


class QueueManager:
    """The queues of one PCIe function (see the module docstring)."""

    def __init__(self, function: PciFunction, *, mode: str = "thread"):
        if mode not in ("thread", "inline"):
            raise ValueError(f"mode must be 'thread' or 'inline', not {mode!r}")
        self.function = function
        self.memory = function.memory
        self.mode = mode
        self.lock = threading.RLock()
        self.post_lock = threading.RLock()
        self._fast_ready: tuple[Any, bool] | None = None  # (FastIo, its ready()) for this run of commands
        # The Arbitration feature's dword for this run of commands (None: read
        # it again): read once per run, and again after any command of the
        # general path (a Set Features changes it).
        self._arbitration: int | None = None
        self._post_scope = _Posting(self)
        # Held while a command is fetched and started; the function holds it
        # around resets so that no command of an old queue starts after one.
        self.gate = threading.RLock()
        self.sqs: dict[int, SubmissionQueue] = {}
        self.cqs: dict[int, CompletionQueue] = {}
        self.page_size = 4096
        self.ams = Ams.ROUND_ROBIN
        self.arbiter = _Arbiter()
        self.stopped = False  # shutdown: no more fetching until a reset
        self.epoch = 0
        self.fetched = 0  # commands fetched (statistics, tests)
        self._fatal = False
        # (SQ id, command id) of the latest commands fetched, in order.
        self.fetch_log: collections.deque[tuple[int, int]] = collections.deque(maxlen=4096)
        self._local = threading.local()
        # Device thread.
        self._cond = threading.Condition()
        self._work = False
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        if mode == "thread":
            self._thread = threading.Thread(target=self._worker, name="nvme-pci-device", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------
    # what the rest of the function reads

    @property
    def ctrl(self):
        return self.function.controller

    @property
    def max_vectors(self) -> int:
        """Interrupt vectors a completion queue may use: the MSI-X table
        size with MSI-X, the enabled MSI messages with MSI, else vector 0
        only (pin-based or single message MSI)."""
        cfg = self.function.config
        if cfg.msix_enabled:
            return int(self.function.msix_vectors)
        if cfg.msi_enabled:
            return max(1, int(cfg.msi_vectors_enabled))
        return 1

    @property
    def enabled(self) -> bool:
        return 0 in self.sqs

    def queue(self, qid: int, cq: bool = False):
        """The live queue (for tests and tracing)."""
        with self.lock:
            return (self.cqs if cq else self.sqs).get(qid)

    # ------------------------------------------------------------------
    # building rings

    def _pages(self, prp1: int, contiguous: bool, nbytes: int) -> list[int]:
        page = self.page_size
        if contiguous:
            return [prp1]
        # PRP1 points to a PRP list (page aligned) with one entry, of
        # offset 0, per memory page of the queue.
        count = -(-nbytes // page)
        try:
            raw = self.memory.read(prp1, 8 * count)
        except DmaError as exc:
            raise NvmeError(GenericStatus.DATA_TRANSFER_ERROR, dnr=False, param=24, msg=str(exc)) from None
        pages = [int.from_bytes(raw[8 * i : 8 * i + 8], "little") for i in range(count)]
        for addr in pages:
            if addr & (page - 1):
                raise NvmeError(GenericStatus.PRP_OFFSET_INVALID, param=24,
                                msg=f"queue PRP entry {addr:#x} is not page aligned")
        return pages

    def setup_admin(self, asqs: int, acqs: int, asq: int, acq: int, *, page_size: int, ams: int) -> None:
        """The admin queues from AQA/ASQ/ACQ (sizes as entries, not 0's based),
        at controller enable."""
        with self.lock:
            self._teardown()
            self.page_size = page_size
            self.ams = ams
            self.stopped = False
            cq = CompletionQueue(0, acqs, [acq], page_size, True, True, 0)
            sq = SubmissionQueue(0, asqs, [asq], page_size, True, 0, QueuePriority.URGENT)
            cq.sqids.add(0)
            self.cqs[0] = cq
            self.sqs[0] = sq

    # The controller's QueueOps protocol (target/admin.py validated the fields).

    def create_cq(self, qid: int, size: int, prp1: int, contiguous: bool, ien: bool, iv: int) -> None:
        pages = self._pages(prp1, bool(contiguous), size * CQE_SIZE)
        with self.lock:
            self.cqs[qid] = CompletionQueue(qid, size, pages, self.page_size, bool(contiguous), bool(ien), iv)

    def create_sq(self, qid: int, size: int, prp1: int, contiguous: bool, cqid: int, qprio: int) -> None:
        pages = self._pages(prp1, bool(contiguous), size * SQE_SIZE)
        with self.lock:
            cq = self.cqs.get(cqid)
            if cq is None:  # the core checked it; a reset raced the command
                raise NvmeError(CommandSpecificStatus.COMPLETION_QUEUE_INVALID)
            sq = self.sqs[qid] = SubmissionQueue(qid, size, pages, self.page_size, bool(contiguous), cqid, qprio)
            if self.function.fast_path:
                sq.fast = FastIo(self.ctrl, qid)
            cq.sqids.add(qid)

    def delete_sq(self, qid: int) -> None:
        """Entries not fetched are dropped; the core already completed the
        outstanding commands (Command Aborted due to SQ Deletion)."""
        with self.lock:
            sq = self.sqs.pop(qid, None)
            if sq is None:
                return
            sq.alive = False
            if sq.fast is not None:
                sq.fast.close()
            cq = self.cqs.get(sq.cqid)
            if cq is not None:
                cq.sqids.discard(qid)

    def delete_cq(self, qid: int) -> None:
        with self._posting():
            with self.lock:
                cq = self.cqs.pop(qid, None)
                if cq is None:
                    return
                cq.alive = False
                cq.held.clear()
            if cq.ien:
                self.function._irq_outstanding(cq.iv, cq.qid, False)

    # ------------------------------------------------------------------
    # reset and shutdown

    def _teardown(self) -> None:
        for q in list(self.sqs.values()) + list(self.cqs.values()):
            q.alive = False
            if isinstance(q, CompletionQueue):
                q.held.clear()
            elif q.fast is not None:
                q.fast.close()
        self.sqs.clear()
        self.cqs.clear()
        self.arbiter.reset()
        self.epoch += 1

    def reset(self) -> None:
        """Controller reset: every queue (admin included) is gone; completions
        of their commands that come later are dropped."""
        with self.lock:
            self._teardown()
            self.stopped = False

    def stop(self) -> None:
        """Shutdown: fetch nothing more until the next reset."""
        with self.lock:
            self.stopped = True

    def drain(self, timeout: float = 5.0) -> bool:
        """Process what was submitted (shutdown notification); True when the
        device went idle with nothing left to fetch."""
        if self.mode == "inline" or threading.current_thread() is self._thread:
            self.process()
            return not self._fetchable()
        with self._cond:
            self._work = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: not self._work and not self._busy and not self._fetchable(),
                                       timeout)

    def _fetching(self) -> bool:
        """Whether the device fetches commands at all now (queue lock held):
        not shut down, bus master enabled, no fatal status."""
        return not self.stopped and bool(self.sqs) and self._dma_allowed() and not self.ctrl.regs.csts.cfs

    def _fetchable(self) -> bool:
        with self.lock:
            return self._fetching() and any(self._ready(sq) for sq in self.sqs.values())

    # ------------------------------------------------------------------
    # doorbells

    def doorbell(self, qid: int, is_cq: bool, value: int) -> None:
        """A write of ``value`` (bits 15:0) to SQ ``qid``'s tail or CQ
        ``qid``'s head doorbell."""
        event = None
        kick = False
        if is_cq:
            with self._posting():
                with self.lock:
                    if not self.enabled:
                        return  # no queue exists while the controller is disabled
                    cq = self.cqs.get(qid)
                    if cq is None:
                        event = ErrorEventInfo.INVALID_DOORBELL_REGISTER
                    elif value >= cq.size or (value - cq.head) % cq.size > cq.unconsumed:
                        # Out of range, or releasing entries never posted
                        # (removing an entry from an empty completion queue).
                        event = ErrorEventInfo.INVALID_DOORBELL_VALUE
                    else:
                        cq.head = value
                        irqs = self._flush(cq)
                        consumed = cq.ien and not cq.unconsumed
                        kick = True
                if kick:
                    if consumed:
                        # Every posted entry consumed: the interrupt condition is gone.
                        self.function._irq_outstanding(cq.iv, cq.qid, False)
                    self._signal(irqs)
        else:
            with self.lock:
                if not self.enabled:
                    return
                sq = self.sqs.get(qid)
                if sq is None:
                    event = ErrorEventInfo.INVALID_DOORBELL_REGISTER
                elif value >= sq.size or (value - sq.head) % sq.size < sq.pending:
                    # Out of range, or more entries than the queue holds
                    # (the tail passed the head: a full submission queue).
                    event = ErrorEventInfo.INVALID_DOORBELL_VALUE
                else:
                    sq.tail = value
                    kick = sq.pending > 0
        if event is not None:
            log.debug("invalid doorbell write: %s qid %d value %#x (event info %d)",
                      "CQ head" if is_cq else "SQ tail", qid, value, event)
            self.ctrl.post_event(AsyncEventType.ERROR, event, LogPageId.ERROR)
        elif kick:
            self.kick()

    def _posting(self) -> "_Posting":
        """The post lock, with interrupt sinks called (and a failed
        completion write reported) only once it is released."""
        return self._post_scope

    # ------------------------------------------------------------------
    # processing

    def kick(self) -> None:
        """New work may be there (doorbell, CQ room, bus master enabled)."""
        if self.mode == "inline":
            self.process()
            return
        with self._cond:
            self._work = True
            self._cond.notify_all()

    def resume(self) -> None:
        """Bus mastering came back: post what waited, then fetch."""
        with self._posting():
            irqs = []
            with self.lock:
                for cq in list(self.cqs.values()):
                    irqs += self._flush(cq)
            self._signal(irqs)
        self.kick()

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._work and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._work = False
                self._busy = True
            try:
                self.process()
            except Exception:  # pragma: no cover - process() catches per command
                log.exception("device thread")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def process(self) -> None:
        """Fetch and run commands until no submission queue has one that may
        be fetched.  Not re-entered from the same thread (a completion that
        makes the host ring a doorbell is picked up by the running loop)."""
        if getattr(self._local, "busy", False):
            return
        self._local.busy = True
        self._fast_ready = None  # looked at again for this run of commands
        self._arbitration = None
        try:
            while not self._closed:
                with self.gate:
                    fatal = False
                    with self.lock:
                        try:
                            item = self._fetch()
                        except DmaError as exc:
                            log.warning("submission queue entry fetch failed: %s", exc)
                            item, fatal = None, True
                    if fatal:
                        self.ctrl.fatal()
                    if item is None:
                        return
                    self._start(*item)
        finally:
            self._local.busy = False

    def _dma_allowed(self) -> bool:
        return bool(self.function.config.bus_master_enabled)

    def _ready(self, sq: SubmissionQueue) -> bool:
        if sq.head == sq.tail:
            return False
        cq = self.cqs.get(sq.cqid)
        # A completion queue with completions waiting for room stops the
        # submission queues that post to it.
        return cq is not None and not cq.held

    def _fetch(self):
        """The next command by arbitration: (sq, cq, 64 bytes), head moved."""
        if not self._fetching():
            return None
        ready = [sq for sq in self.sqs.values() if self._ready(sq)]
        if not ready:
            return None
        # Arbitration Burst applies to round robin too; the weights to WRR.
        arbitration = self._arbitration
        if arbitration is None:
            arbitration = self._arbitration = self.ctrl.features.value(FeatureId.ARBITRATION)
        sq = self.arbiter.pick(ready, self.ams, arbitration)
        raw = bytes(self.memory.view(sq.address(sq.head), SQE_SIZE))
        sq.head = (sq.head + 1) % sq.size
        self.fetched += 1
        self.fetch_log.append((sq.qid, int.from_bytes(raw[2:4], "little")))
        return sq, self.cqs[sq.cqid], raw

    def _start(self, sq: SubmissionQueue, cq: CompletionQueue, raw: bytes) -> None:
        fast = sq.fast
        if fast is not None and not raw[1]:
            # Whether the fast path may run (FastIo.ready) is looked at once for
            # a run of commands of one queue, as the TCP target does once per
            # batch received, and again after any command of the general path
            # (which may change it: a Sanitize, a Format, a reset).
            ready = self._fast_ready
            if ready is None or ready[0] is not fast:
                ready = self._fast_ready = (fast, fast.ready())
            if ready[1] and self._fast(fast, sq, cq, raw):
                return
        self._fast_ready = None
        ctrl = self.ctrl
        req = ctrl.new_request(raw, sq.qid, self._completer(sq, cq))
        try:
            if not ctrl.prepare(req):
                return
            try:
                self.function.map_request(req)
            except NvmeError as err:
                ctrl._fail(req, err)
                return
            ctrl.execute(req)
        except Exception as exc:  # a bug must not take the device down
            log.exception("internal error starting %r", req)
            if not req.done:
                ctrl._fail(req, NvmeError(GenericStatus.INTERNAL_ERROR, dnr=False, msg=str(exc)))
        finally:
            self._arbitration = None  # it may have changed it

    def _fast(self, fast: FastIo, sq: SubmissionQueue, cq: CompletionQueue, raw: bytes) -> bool:
        """Offer a command with FUSE 00b and PRPs to the fast path; True when
        it ran there and its completion is posted."""
        opcode = raw[0]
        if opcode == FLUSH:
            if not fast.flush(raw):
                return False
        else:
            prp1, prp2 = _PRPS.unpack_from(raw, _PRPS_OFF)
            memory, page_size = self.memory, self.page_size
            if not fast.transfer(raw, lambda length: map_prps(memory, prp1, prp2, length, page_size)):
                return False
        self.post_entry(sq, cq, bytearray(_CQE_SUCCESS.pack(0, 0, 0, sq.qid, _CID.unpack_from(raw, 2)[0], 0)))
        return True

    def _completer(self, sq: SubmissionQueue, cq: CompletionQueue) -> Callable[[Request], None]:
        def on_complete(req: Request) -> None:
            self.post(sq, cq, req)

        return on_complete

    # ------------------------------------------------------------------
    # completions

    def post(self, sq: SubmissionQueue, cq: CompletionQueue, req: Request) -> None:
        """Post ``req``'s completion to ``cq`` (or keep it until there is
        room).  Thread safe; dropped when the queue is gone (reset)."""
        self.post_entry(sq, cq, bytearray(req.cqe.raw))
        if req.admin:
            self.function._admin_completed(req)

    def post_entry(self, sq: SubmissionQueue, cq: CompletionQueue, entry: bytearray) -> None:
        """Post a 16-byte completion entry (SQ head and phase filled in here)."""
        with self._post_scope:
            with self.lock:
                if not cq.alive:
                    return
                cq.held.append((entry, sq))
                irqs = self._flush(cq)
            if irqs:
                self._signal(irqs)

    def _flush(self, cq: CompletionQueue) -> list[tuple[int, int, int]]:
        """Write waiting completions while there is room (queue lock held);
        the interrupts to signal for them: (vector, CQ id, count)."""
        posted = 0
        if not cq.alive or not self._dma_allowed():
            return []
        while cq.held and not cq.full:
            entry, sq = cq.held[0]
            entry[8:10] = (sq.head & 0xFFFF).to_bytes(2, "little")
            entry[14] = (entry[14] & 0xFE) | cq.phase
            try:
                dest = self.memory.view(cq.address(cq.tail), CQE_SIZE)
                dest[:14] = entry[:14]
                dest[14:] = entry[14:]  # the phase tag last
            except DmaError as exc:
                log.warning("completion queue %d write failed: %s", cq.qid, exc)
                self._fatal = True  # reported when the locks are released
                break
            cq.held.popleft()
            cq.tail = (cq.tail + 1) % cq.size
            if cq.tail == 0:
                cq.phase ^= 1
            posted += 1
        if not posted or not cq.ien:
            return []
        return [(cq.iv, cq.qid, posted)]

    def _signal(self, irqs: list[tuple[int, int, int]]) -> None:
        """Tell the interrupt logic about posted completions (post lock held)."""
        for vector, qid, count in irqs:
            self.function._irq_outstanding(vector, qid, True)
            for _ in range(count):
                self.function._interrupt(vector, qid != 0)

