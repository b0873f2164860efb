"""Host queues: tags (command identifiers), the in-flight map, and the
submission and completion rings of a memory based transport.

:class:`TagSet` hands out tags ``0 .. depth-1``; the last ``reserved`` of
them are only for requests that ask for a reserved tag (Asynchronous Event
Requests on the admin queue, as Linux keeps its AEN command outside the
admin tag set).  The command identifier of a request is its tag with a
4-bit generation counter above it (``gen << 12 | tag``, Linux's
``nvme_cid``): a completion that carries the identifier of an earlier
use of the tag is recognised as stale and ignored.

:class:`HostQueue` is what the core sees of a queue, whatever the
transport: its id, its tags and the requests in flight by tag.
:meth:`HostQueue.submit` takes tags for a batch, lets the transport
write each entry (``_write``) and tells the device once (``_ring``, one
doorbell per batch).  A request that finds no free tag waits in the
queue's ``waiting`` list until a completion frees one.

:class:`MemoryQueue` adds the rings in host memory (NVMe over PCIe): a
:class:`SubmissionRing` and a :class:`CompletionRing` over memoryviews,
and two doorbell writers.  Its completion path
(:meth:`MemoryQueue.process_completions`) consumes the completion queue
entries whose phase tag is the expected one, looks the requests up by
command identifier, writes the CQ head doorbell once for the whole batch,
and then hands the requests to the core (outside the queue lock).

The rings and the tag logic are sans-I/O: memory is a memoryview and the
doorbells are callables, so they are tested without a device.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..spec.cqe import CQE_SIZE
from ..spec.sqe import SQE_SIZE, Command

if TYPE_CHECKING:
    from .request import HostRequest

__all__ = [
    "CID_TAG_BITS",
    "MAX_TAGS",
    "TagSet",
    "CqEntry",
    "SubmissionRing",
    "CompletionRing",
    "HostQueue",
    "MemoryQueue",
]

log = logging.getLogger(__name__)

CID_TAG_BITS = 12
MAX_TAGS = 1 << CID_TAG_BITS  # 4096 tags per queue: Linux caps io_queue_depth at 4095 for the same reason
_TAG_MASK = MAX_TAGS - 1
_GEN_MASK = 0xF


class TagSet:
    """Tags ``0 .. depth-1`` of one queue, the last ``reserved`` of them kept
    for reserved requests.  Not thread safe: the queue lock protects it."""

    def __init__(self, depth: int, reserved: int = 0):
        if not 1 <= depth <= MAX_TAGS:
            raise ValueError(f"tag set depth {depth} is not 1..{MAX_TAGS}")
        if not 0 <= reserved < depth or (reserved and depth - reserved < 1):
            raise ValueError(f"{reserved} reserved tags do not leave a normal tag of {depth}")
        self.depth = depth
        self.reserved = reserved
        self._free = deque(range(depth - reserved))
        self._free_reserved = deque(range(depth - reserved, depth))
        self._gen = bytearray(depth)
        self._busy = bytearray(depth)

    @property
    def normal(self) -> int:
        """Tags for ordinary requests."""
        return self.depth - self.reserved

    @property
    def in_use(self) -> int:
        return self.depth - len(self._free) - len(self._free_reserved)

    def available(self, reserved: bool = False) -> int:
        return len(self._free_reserved if reserved else self._free)

    def get(self, reserved: bool = False) -> int | None:
        """A free tag (None when there is none); its generation moves on."""
        pool = self._free_reserved if reserved else self._free
        if not pool:
            return None
        tag = pool.popleft()
        self._busy[tag] = 1
        self._gen[tag] = (self._gen[tag] + 1) & _GEN_MASK
        return tag

    def put(self, tag: int) -> None:
        if not 0 <= tag < self.depth or not self._busy[tag]:
            raise ValueError(f"tag {tag} is not in use")
        self._busy[tag] = 0
        (self._free_reserved if tag >= self.depth - self.reserved else self._free).append(tag)

    def cid(self, tag: int) -> int:
        """The command identifier of ``tag``'s current use."""
        return (self._gen[tag] << CID_TAG_BITS) | tag

    def tag_of(self, cid: int) -> int | None:
        """The tag a command identifier names if it is that tag's current
        use (None for an unknown, free or stale identifier)."""
        tag = cid & _TAG_MASK
        if tag >= self.depth or not self._busy[tag]:
            return None
        if (cid >> CID_TAG_BITS) & _GEN_MASK != self._gen[tag]:
            return None
        return tag


class CqEntry(NamedTuple):
    """A completion queue entry, decoded: the 16-bit status word includes
    the phase tag in bit 0 (``Status.from_field`` takes it as it is).  A
    named tuple: made once per completion, it must be cheap to build."""

    dw0: int
    dw1: int
    sqhd: int
    sqid: int
    cid: int
    status_field: int


_CQE = struct.Struct("<IIHHHH")
_CID = struct.Struct("<H")
_CID_OFF = Command.cid.offset
_STATUS = struct.Struct("<H")


class SubmissionRing:
    """The host's side of a submission queue in memory: entries are copied
    to the slot at the tail; ``head`` follows the controller's SQ Head
    Pointer reported in completions."""

    def __init__(self, mem: memoryview, entries: int):
        if entries < 2 or len(mem) < entries * SQE_SIZE:
            raise ValueError(f"a submission ring of {entries} entries needs {entries * SQE_SIZE} bytes")
        self.mem = mem
        self.entries = entries
        self.tail = 0
        self.head = 0

    @property
    def free(self) -> int:
        """Slots that may be written before the ring is full."""
        return self.entries - 1 - (self.tail - self.head) % self.entries

    def write(self, sqe: memoryview) -> int:
        """Copy a 64-byte entry to the tail slot and advance the tail;
        returns the slot used."""
        slot = self.tail
        off = slot * SQE_SIZE
        self.mem[off : off + SQE_SIZE] = sqe
        self.tail = (slot + 1) % self.entries
        return slot

    def update_head(self, sqhd: int) -> None:
        if 0 <= sqhd < self.entries:
            self.head = sqhd


class CompletionRing:
    """The host's side of a completion queue in memory: ``head`` and the
    phase tag the next new entry carries (1 on the first pass, flipped on
    every wrap)."""

    def __init__(self, mem: memoryview, entries: int):
        if entries < 2 or len(mem) < entries * CQE_SIZE:
            raise ValueError(f"a completion ring of {entries} entries needs {entries * CQE_SIZE} bytes")
        self.mem = mem
        self.entries = entries
        self.head = 0
        self.phase = 1

    def pending(self) -> bool:
        """Whether the entry at the head is new (its phase tag matches)."""
        return (_STATUS.unpack_from(self.mem, self.head * CQE_SIZE + 14)[0] & 1) == self.phase

    def reap(self, limit: int | None = None) -> list[CqEntry]:
        """Consume the new entries (phase tag as expected), oldest first.  The
        status word (with the phase tag, written last by the device) is read
        before the rest of the entry."""
        out: list[CqEntry] = []
        mem = self.mem
        head, phase, entries = self.head, self.phase, self.entries
        while limit is None or len(out) < limit:
            off = head * CQE_SIZE
            if (_STATUS.unpack_from(mem, off + 14)[0] & 1) != phase:
                break
            dw0, dw1, sqhd, sqid, cid, status = _CQE.unpack_from(mem, off)
            out.append(CqEntry(dw0, dw1, sqhd, sqid, cid, status))
            head += 1
            if head == entries:
                head = 0
                phase ^= 1
        self.head, self.phase = head, phase
        return out


class HostQueue:
    """A queue as the core sees it (see the module docstring).

    ``qid`` 0 is the admin queue.  ``depth`` is the number of tags (one less
    than the ring entries for a memory queue: a full ring holds
    entries - 1 commands); ``reserved`` of them are for reserved requests.
    ``polled``: completions are found by polling (no interrupt);
    ``vector``: the interrupt vector otherwise."""

    def __init__(self, qid: int, depth: int, *, reserved: int = 0, polled: bool = False,
                 vector: int | None = None):
        self.qid = qid
        self.depth = depth
        self.tags = TagSet(depth, reserved)
        self.inflight: dict[int, HostRequest] = {}
        self.waiting: deque[HostRequest] = deque()
        self.lock = threading.RLock()
        self.polled = polled
        self.vector = vector
        self.alive = True
        # Set by the core: called with each request as it starts (queue lock
        # held), and with each request and its completion queue entry.
        self.on_start: Callable[[HostRequest], Any] | None = None
        self.on_complete: Callable[[HostRequest, CqEntry], Any] | None = None
        # The core's (poll, wait) pair for requests on this queue, made once.
        self.poll_fns: tuple[Any, Any] | None = None
        # Statistics.
        self.submitted = 0
        self.completed = 0
        self.doorbells = 0
        self.cq_doorbells = 0
        self.spurious = 0  # completions naming no request in flight

    # -- submission ---------------------------------------------------------------

    def submit(self, reqs: Sequence["HostRequest"]) -> list["HostRequest"]:
        """Take a tag for each request, write the entries and ring the
        doorbell once.  ``on_start(req)`` runs for each request after it got
        its command identifier and before its entry is written (the core
        stamps the time and traces there).  A request that finds no free tag
        waits in ``waiting`` (started when a completion frees one).  Returns
        the requests refused because the queue is no longer alive."""
        with self.lock:
            if not self.alive:
                return list(reqs)
            on_start = self.on_start
            started = 0
            for req in reqs:
                tag = self.tags.get(req.reserved)
                if tag is None:
                    self.waiting.append(req)
                    continue
                req.tag = tag
                _CID.pack_into(req.cmd.raw, _CID_OFF, self.tags.cid(tag))
                req.qid = self.qid
                req.queue = self
                self.inflight[tag] = req
                if on_start is not None:
                    on_start(req)
                self._write(req)
                started += 1
            if started:
                self.submitted += started
                self.doorbells += 1
                self._ring()
        return []

    def wait_ready(self, timeout: float) -> None:
        """Polled queues: wait until completions may be there (at most
        ``timeout`` s).  Transports that can wait for the device (a socket)
        override this; the default pauses briefly."""
        time.sleep(min(timeout, 0.0002))

    def _startable(self) -> list["HostRequest"]:
        """Waiting requests that a free tag now allows (queue lock held)."""
        out: list[HostRequest] = []
        if not self.waiting:
            return out
        free = {False: self.tags.available(False), True: self.tags.available(True)}
        keep: deque[HostRequest] = deque()
        for req in self.waiting:
            if free[req.reserved] > 0:
                free[req.reserved] -= 1
                out.append(req)
            else:
                keep.append(req)
        self.waiting = keep
        return out

    def _write(self, req: "HostRequest") -> None:
        """Transport: put the request's entry where the device will fetch it."""
        raise NotImplementedError

    def _ring(self) -> None:
        """Transport: tell the device new entries are there (once per batch)."""
        raise NotImplementedError

    # -- completion ---------------------------------------------------------------

    def take(self, cid: int) -> "HostRequest | None":
        """The request in flight with command identifier ``cid``, removed
        from the in-flight map with its tag freed (queue lock held by the
        caller or not); None for an unknown or stale identifier."""
        with self.lock:
            tag = self.tags.tag_of(cid)
            if tag is None:
                self.spurious += 1
                return None
            req = self.inflight.get(tag)
            if req is None:  # pragma: no cover - tags and map move together
                self.tags.put(tag)
                self.spurious += 1
                return None
            self._took(tag)
            return req

    def _took(self, tag: int) -> None:
        """:meth:`take` for a tag the caller just found in flight (queue lock
        held): out of the in-flight map, the tag freed."""
        req = self.inflight.pop(tag)
        self.tags.put(tag)
        self.completed += 1
        req.queue = None

    def owns(self, req: "HostRequest") -> bool:
        """Whether ``req`` is in flight on this queue now."""
        with self.lock:
            return req.tag >= 0 and self.inflight.get(req.tag) is req

    def release(self, req: "HostRequest") -> bool:
        """Take ``req`` out of flight without a completion (a cancelled
        request); False if it was not in flight here."""
        with self.lock:
            if self.inflight.get(req.tag) is not req:
                return False
            del self.inflight[req.tag]
            self.tags.put(req.tag)
            req.queue = None
            return True

    def drain(self) -> list["HostRequest"]:
        """Every request in flight or waiting for a tag, taken out of the
        queue (reset); the queue stops accepting requests."""
        with self.lock:
            self.alive = False
            reqs = list(self.inflight.values())
            for tag in list(self.inflight):
                self.tags.put(tag)
            self.inflight.clear()
            for req in reqs:
                req.queue = None
            reqs.extend(self.waiting)
            self.waiting.clear()
            return reqs

    def snapshot(self) -> list["HostRequest"]:
        """The requests in flight now (a copy)."""
        with self.lock:
            return list(self.inflight.values())

    def cq_ready(self) -> bool:
        """Transport: whether a new completion is waiting (a cheap look)."""
        return False

    def process_completions(self) -> int:
        """Transport: consume new completions, calling ``on_complete(req,
        entry)`` for each, then start the requests that waited for a tag;
        returns how many entries were consumed."""
        raise NotImplementedError

    def __repr__(self) -> str:
        kind = "polled" if self.polled else f"irq {self.vector}"
        return f"<{type(self).__name__} {self.qid} depth={self.depth} {kind} inflight={len(self.inflight)}>"


class MemoryQueue(HostQueue):
    """A queue pair whose rings are in host memory (NVMe over PCIe).

    ``sq_mem``/``cq_mem`` are the rings' bytes; ``ring_sq(tail)`` and
    ``ring_cq(head)`` write the doorbells."""

    def __init__(self, qid: int, entries: int, sq_mem: memoryview, cq_mem: memoryview,
                 ring_sq: Callable[[int], None], ring_cq: Callable[[int], None], *,
                 reserved: int = 0, polled: bool = False, vector: int | None = None):
        super().__init__(qid, min(entries - 1, MAX_TAGS), reserved=reserved, polled=polled, vector=vector)
        self.entries = entries
        self.sq = SubmissionRing(sq_mem, entries)
        self.cq = CompletionRing(cq_mem, entries)
        self._ring_sq = ring_sq
        self._ring_cq = ring_cq

    def cq_ready(self) -> bool:
        return self.cq.pending()

    def _write(self, req: "HostRequest") -> None:
        self.sq.write(req.cmd.raw)

    def _ring(self) -> None:
        self._ring_sq(self.sq.tail)

    def process_completions(self) -> int:
        """Reap the completion ring, match entries to requests by command
        identifier, write the CQ head doorbell once, then (outside the lock)
        call ``on_complete(req, entry)`` for each match and start the
        requests that waited for a tag."""
        found: list[tuple[HostRequest, CqEntry]] = []
        with self.lock:
            if not self.alive:
                return 0
            entries = self.cq.reap()
            if not entries:
                return 0
            for entry in entries:
                self.sq.update_head(entry.sqhd)
                req = self.take(entry.cid)
                if req is None:
                    log.warning("queue %d: completion for unknown command id %#x (status %#x) ignored",
                                self.qid, entry.cid, entry.status_field >> 1)
                    continue
                found.append((req, entry))
            self.cq_doorbells += 1
            self._ring_cq(self.cq.head)
            restart = self._startable()
        complete = self.on_complete
        for req, entry in found:
            if complete is not None:
                complete(req, entry)
        if restart:
            self.submit(restart)
        return len(entries)
