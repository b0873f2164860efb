"""The block layer: a namespace as a block device (Linux's blk-mq in front of
drivers/nvme/host, in miniature).

:class:`BlockDevice` turns reads, writes, flushes, discards (Dataset
Management with Deallocate), Write Zeroes and Verify at byte offsets or at
LBAs into NVM commands for the namespace's controller, and back into a result or
an exception.  The path of a user request (a :class:`BlockIO`, Linux's bio)::

    check the range (block aligned, inside the namespace)
    -> split into pieces within the queue limits (QueueLimits: MDTS,
       segments per command, NOIOB chunk boundaries, 256 DSM ranges,
       65536 blocks per Write Zeroes / Verify)
    -> each piece becomes a request (one command), or merges into a request
       already waiting in the current plug (back or front merge of
       contiguous reads or writes, discard ranges gathered into one DSM)
    -> dispatch: the NVM commands go to the controller as one submission
       batch (ctrl.make_request() + ctrl.submit_batch(): one doorbell per
       queue; ctrl.submit() one by one for a controller without them)
    -> completion callbacks: statistics, then the BlockIO completes once
       every request carrying a piece of it has completed; any failed
       piece fails the whole BlockIO (partial success is never reported)

Three faces over the same path, with the same method names:

- :class:`BlockDevice` itself is synchronous: ``dev.write(0, data)``
  returns when the data is on the device and raises the command's error
  (``NvmeStatusError`` from ``HostRequest.raise_for_status()``);
- ``dev.aio`` is the asyncio API: ``await dev.aio.read(0, 4096)``;
- ``dev.submit`` returns the :class:`BlockIO` at once (``.wait()``,
  ``.result()``, ``await io``), for batches.

The request is queued when the method is called (for ``dev.aio`` too: the
method returns a coroutine that only waits), so calls made inside
``with plug():`` (or ``dev.plug()``) are collected and merged when the plug
ends, like ``blk_start_plug()``/``blk_finish_plug()``::

    with dev.plug():
        ios = [dev.submit.write(off, chunk) for off, chunk in pieces]
    for io in ios:
        io.result()          # contiguous writes went out as few commands

Waiting for a request that is still in a plug dispatches the plug first
(Linux flushes the plug when a task sleeps), so synchronous calls inside a
plug work and just do not merge.

Statistics (:meth:`BlockDevice.stats`) have the fields and meaning of
``/sys/block/<dev>/stat`` (Documentation/block/stat.rst); :func:`iostat`
computes ``iostat -x`` figures between two snapshots.

Facts from Linux: NVME_MAX_SEGS 127 and NVME_MAX_KB_SZ 4096 (pci.c; newer
kernels use 128 and 8192); a plug holds at most 32 requests
(BLK_MAX_REQUEST_COUNT); flushes and Write Zeroes never merge
(rq_mergeable()); without a volatile write cache a flush is completed at
once and FUA is dropped (submit_bio_noacct()); on a format whose metadata is
8 bytes of PI, reads and writes set PRACT (the controller inserts and strips
the PI) with the type's checks, and any other metadata format refuses them
(nvme_setup_rw(), nvme_ns_has_pi()); discard limits from DMRL and
DMRSL, Write Zeroes from WZSL (nvme_init_non_mdts_limits()); chunk
boundaries from a power-of-two NOIOB (nvme_set_chunk_sectors()); the
statistics' accounting points (blk_account_io_start/merge/done,
update_io_ticks) and time_in_queue as the sum of the four groups' ticks
(part_stat_show()).  Unlike Linux, Write Zeroes is not limited by MDTS (it
moves no data; the spec's WZSL is the limit), and Verify, which Linux has no
block operation for, is accounted in the read group (op_stat_group() puts
every non-write operation there).
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import operator
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ..spec.nvm import (
    MAX_DSM_RANGES,
    DatasetManagement,
    Flush,
    Prinfo,
    Read,
    Verify,
    Write,
    WriteZeroes,
    pack_dsm_ranges,
)
from ..spec.pi import PI_TUPLE_SIZE
from .request import DIR_FROM_DEVICE, DIR_NONE, DIR_TO_DEVICE, HostRequest

__all__ = [
    "DEFAULT_MAX_TRANSFER",
    "MAX_BLOCKS_PER_COMMAND",
    "MAX_DSM_RANGE_BLOCKS",
    "NVME_MAX_SEGS",
    "PLUG_MAX_REQUESTS",
    "SECTOR_SIZE",
    "BlockDevice",
    "BlockIO",
    "IoStatSummary",
    "IoStats",
    "Op",
    "Plug",
    "QueueLimits",
    "StatGroup",
    "iostat",
    "plug",
    "queue_limits",
]

log = logging.getLogger(__name__)

SECTOR_SIZE = 512  # the unit of the sector counts in /sys/block/<dev>/stat
NVME_MAX_SEGS = 127  # Linux pci.c: segments (scatter list entries) per command
DEFAULT_MAX_TRANSFER = 4096 * 1024  # Linux pci.c NVME_MAX_KB_SZ: the cap when MDTS is 0
MAX_BLOCKS_PER_COMMAND = 0x10000  # NLB is a 16-bit 0's based count
MAX_DSM_RANGE_BLOCKS = 0xFFFFFFFF  # a DSM range's length is a 32-bit count
PLUG_MAX_REQUESTS = 32  # Linux BLK_MAX_REQUEST_COUNT: a plug this full is dispatched

_NS_PER_MS = 1_000_000
# SLBA (CDW10-11) and CDW12 (NLB 15:0, FUA bit 30) of Read/Write, packed together (offsets from spec/).
_RW_RANGE = struct.Struct("<QI")
_RW_RANGE_OFF = Read.slba.offset
assert Read.nlb.offset == _RW_RANGE_OFF + 8 and Read.fua.offset == _RW_RANGE_OFF + 8
_FUA = 1 << Read.fua.lsb


class Op(IntEnum):
    """Block operations (Linux REQ_OP_*, plus Verify)."""

    READ = 0
    WRITE = 1
    FLUSH = 2
    DISCARD = 3
    WRITE_ZEROES = 4
    VERIFY = 5


class StatGroup(IntEnum):
    """Statistics groups (Linux enum stat_group)."""

    READ = 0
    WRITE = 1
    DISCARD = 2
    FLUSH = 3


_GROUP = {
    Op.READ: StatGroup.READ,
    Op.VERIFY: StatGroup.READ,
    Op.WRITE: StatGroup.WRITE,
    Op.WRITE_ZEROES: StatGroup.WRITE,
    Op.DISCARD: StatGroup.DISCARD,
    Op.FLUSH: StatGroup.FLUSH,
}
# Linux op_is_write(): the direction /sys/block/<dev>/inflight splits by.
_IS_WRITE = {Op.READ: False, Op.VERIFY: False, Op.WRITE: True, Op.WRITE_ZEROES: True,
             Op.DISCARD: True, Op.FLUSH: True}
_MERGEABLE = (Op.READ, Op.WRITE, Op.DISCARD)
# The same two maps as tuples indexed by the op's value (every request).
_GROUP_OF = tuple(int(_GROUP[op]) for op in Op)
_WRITE_OF = tuple(int(_IS_WRITE[op]) for op in Op)


# ---------------------------------------------------------------------------
# Queue limits


@dataclass(frozen=True)
class QueueLimits:
    """What one command may carry (Linux struct queue_limits, in blocks and
    bytes of this namespace's format)."""

    block_size: int
    max_transfer: int  # bytes of data per Read/Write command, a multiple of block_size
    max_segments: int = NVME_MAX_SEGS  # buffers (scatter list entries) per command
    chunk_blocks: int = 0  # a Read/Write never crosses a multiple of this (0: no boundary)
    max_discard_ranges: int = MAX_DSM_RANGES
    max_discard_range_blocks: int = MAX_DSM_RANGE_BLOCKS
    max_write_zeroes_blocks: int = MAX_BLOCKS_PER_COMMAND
    max_verify_blocks: int = MAX_BLOCKS_PER_COMMAND
    write_cache: bool = True  # a volatile write cache: Flush and FUA are sent
    discard: bool = True  # ONCS: Dataset Management
    write_zeroes: bool = True  # ONCS: Write Zeroes
    verify: bool = True  # ONCS: Verify

    def __post_init__(self) -> None:
        bs = self.block_size
        if bs <= 0:
            raise ValueError(f"invalid block size {bs}")
        if self.max_transfer < bs or self.max_transfer % bs:
            raise ValueError(f"max_transfer {self.max_transfer} is not a positive multiple of the block size {bs}")
        if self.max_segments < 1:
            raise ValueError("max_segments must be >= 1")
        if self.chunk_blocks < 0:
            raise ValueError("chunk_blocks must be >= 0")
        if not 1 <= self.max_discard_ranges <= MAX_DSM_RANGES:
            raise ValueError(f"max_discard_ranges must be within 1..{MAX_DSM_RANGES}")
        if not 1 <= self.max_discard_range_blocks <= MAX_DSM_RANGE_BLOCKS:
            raise ValueError("max_discard_range_blocks out of range")
        for name in ("max_write_zeroes_blocks", "max_verify_blocks"):
            if not 1 <= getattr(self, name) <= MAX_BLOCKS_PER_COMMAND:
                raise ValueError(f"{name} must be within 1..{MAX_BLOCKS_PER_COMMAND}")

    @property
    def max_blocks(self) -> int:
        """Blocks per Read/Write command."""
        return self.max_transfer // self.block_size


def _pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _size_limit_blocks(units: int, page_size: int, block_size: int) -> int:
    """A WZSL/VSL value (a power of two of CAP.MPSMIN pages; 0: no limit) in
    blocks, within the 16-bit NLB."""
    if not units:
        return MAX_BLOCKS_PER_COMMAND
    return max(1, min(MAX_BLOCKS_PER_COMMAND, ((1 << units) * page_size) // block_size))


def queue_limits(ns: Any, **overrides: Any) -> QueueLimits:
    """The limits of ``ns`` from what its controller reports.

    - ``max_transfer``: ``ctrl.max_transfer`` (MDTS; 0 means unlimited and
      takes DEFAULT_MAX_TRANSFER), rounded down to whole blocks;
    - ``max_segments``: ``ctrl.max_segments`` or ``ctrl.transport.max_segments``
      when one is exposed, NVME_MAX_SEGS otherwise;
    - ``chunk_blocks``: Identify Namespace NOIOB when a power of two;
    - the DSM, Write Zeroes and Verify limits from ``ctrl.identify_nvm``
      (the I/O command set specific Identify Controller: DMRL, DMRSL, WZSL,
      VSL, in CAP.MPSMIN pages from ``ctrl.cap``) when the controller keeps
      one; the specification's limits otherwise;
    - ONCS and VWC from ``ctrl.identify`` (all supported when absent).

    ``overrides`` replace any field (tests, tuning)."""
    ctrl = ns.ctrl
    bs = int(ns.block_size)
    mt = int(getattr(ctrl, "max_transfer", 0) or 0) or DEFAULT_MAX_TRANSFER
    mt = max(bs, mt // bs * bs)
    segs = getattr(ctrl, "max_segments", None) or getattr(getattr(ctrl, "transport", None), "max_segments", None)
    values: dict[str, Any] = {"block_size": bs, "max_transfer": mt, "max_segments": int(segs or NVME_MAX_SEGS)}
    idns = getattr(ns, "identify", None)
    noiob = int(getattr(idns, "noiob", 0) or 0) if idns is not None else 0
    if _pow2(noiob):
        values["chunk_blocks"] = noiob
    idc = getattr(ctrl, "identify", None)
    if idc is not None:
        values["write_cache"] = bool(idc.vwc_present)
        values["discard"] = bool(idc.oncs_dsm)
        values["write_zeroes"] = bool(idc.oncs_write_zeroes)
        values["verify"] = bool(idc.oncs_verify)
    nvm = getattr(ctrl, "identify_nvm", None)
    if nvm is not None:
        page = int(getattr(ctrl, "page_size", 0) or 0)
        if not page:
            cap = int(getattr(ctrl, "cap", 0) or 0)
            page = 1 << (12 + ((cap >> 48) & 0xF))
        if nvm.dmrl:
            values["max_discard_ranges"] = min(MAX_DSM_RANGES, int(nvm.dmrl))
        if nvm.dmrsl:
            values["max_discard_range_blocks"] = int(nvm.dmrsl)
        values["max_write_zeroes_blocks"] = _size_limit_blocks(int(nvm.wzsl), page, bs)
        values["max_verify_blocks"] = _size_limit_blocks(int(nvm.vsl), page, bs)
    values.update(overrides)
    if "max_transfer" in overrides:
        values["max_transfer"] = max(bs, int(values["max_transfer"]) // bs * bs)
    return QueueLimits(**values)


# ---------------------------------------------------------------------------
# Buffers


def _segment(buf: Any, writable: bool) -> memoryview:
    """A flat byte view of one user buffer (no copy)."""
    try:
        mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not {type(buf).__name__}") from None
    if writable and mv.readonly:
        raise TypeError("read buffers must be writable (bytearray, memoryview of writable memory, ...)")
    if mv.format != "B" or mv.ndim != 1:
        if not mv.c_contiguous:
            raise ValueError("buffers must be C-contiguous")
        mv = mv.cast("B")
    elif not mv.contiguous:
        raise ValueError("buffers must be contiguous")
    return mv


def _segments(bufs: Iterable[Any], writable: bool) -> tuple[list[memoryview], int]:
    if isinstance(bufs, (bytes, bytearray, memoryview)):
        raise TypeError("expected a list of buffers (use read/write for a single buffer)")
    segs = [mv for mv in (_segment(b, writable) for b in bufs) if mv.nbytes]
    return segs, sum(mv.nbytes for mv in segs)


def _split_rw(slba: int, segs: Sequence[memoryview], limits: QueueLimits) -> list[tuple[int, int, list[memoryview]]]:
    """Cut a scatter list into (slba, nblocks, segments) pieces: each at most
    max_transfer bytes and max_segments buffers, not crossing a chunk
    boundary, and a whole number of blocks (a buffer is cut where a piece
    must end).  A block that needs more than max_segments buffers cannot be
    sent: ValueError."""
    bs = limits.block_size
    chunk = limits.chunk_blocks
    todo = deque(segs)
    pieces = []
    lba = slba
    while todo:
        blocks = limits.max_blocks
        if chunk:
            blocks = min(blocks, chunk - lba % chunk)
        room = blocks * bs
        taken: list[memoryview] = []
        nbytes = 0
        while todo and len(taken) < limits.max_segments and nbytes < room:
            seg = todo[0]
            n = min(seg.nbytes, room - nbytes)
            if n == seg.nbytes:
                taken.append(todo.popleft())
            else:
                taken.append(seg[:n])
                todo[0] = seg[n:]
            nbytes += n
        excess = nbytes % bs
        if excess:
            # The segment limit ended the piece inside a block: give the
            # partial block back to the next piece.
            if nbytes < bs:
                raise ValueError(
                    f"scatter list too fragmented: a {bs}-byte block spans more than "
                    f"{limits.max_segments} buffers")
            nbytes -= excess
            while excess:
                last = taken.pop()
                if last.nbytes <= excess:
                    todo.appendleft(last)
                    excess -= last.nbytes
                else:
                    keep = last.nbytes - excess
                    taken.append(last[:keep])
                    todo.appendleft(last[keep:])
                    excess = 0
        pieces.append((lba, nbytes // bs, taken))
        lba += nbytes // bs
    return pieces


# ---------------------------------------------------------------------------
# Requests


class _Request:
    """One command's worth of work (Linux struct request): the pieces of one
    or more BlockIOs merged together."""

    __slots__ = (
        "completed",
        "deallocate",
        "dev",
        "fua",
        "hreq",
        "ios",
        "merged",
        "nblocks",
        "op",
        "ranges",
        "segs",
        "slba",
        "start_ns",
    )

    def __init__(self, dev: BlockDevice, op: Op, slba: int, nblocks: int, *, segs=None, ranges=None,
                 fua: bool = False, deallocate: bool = False):
        self.dev = dev
        self.op = op
        self.slba = slba
        self.nblocks = nblocks
        self.segs: list[memoryview] = segs if segs is not None else []
        self.ranges: list[tuple[int, int]] = ranges if ranges is not None else []
        self.fua = fua
        self.deallocate = deallocate
        self.ios: list[BlockIO] = []
        self.start_ns = 0
        self.hreq: Any = None
        self.completed = False
        self.merged = 0

    def hreq_done(self, hreq: Any) -> None:
        """The done callback of this request's HostRequest."""
        self.dev._on_done(self, hreq)

    @property
    def end(self) -> int:
        return self.slba + self.nblocks

    def overlaps(self, other: _Request) -> bool:
        if self.op == Op.FLUSH or other.op == Op.FLUSH:
            return False
        mine = self.ranges if self.op == Op.DISCARD else [(self.slba, self.nblocks)]
        theirs = other.ranges if other.op == Op.DISCARD else [(other.slba, other.nblocks)]
        return any(a < c + d and c < a + b for a, b in mine for c, d in theirs)

    def try_merge(self, piece: _Request, limits: QueueLimits) -> bool:
        """Absorb ``piece`` when the result stays one valid command: back or
        front merge of contiguous reads/writes within max_transfer,
        max_segments and the chunk boundary; discard ranges gathered up to
        max_discard_ranges (Linux's multi-range discard merge)."""
        if piece.dev is not self.dev or piece.op != self.op or self.op not in _MERGEABLE:
            return False
        if self.op == Op.DISCARD:
            if len(self.ranges) + len(piece.ranges) > limits.max_discard_ranges:
                return False
            self.ranges.extend(piece.ranges)
            self.nblocks += piece.nblocks
            return True
        if piece.fua != self.fua:
            return False
        if self.nblocks + piece.nblocks > limits.max_blocks:
            return False
        if len(self.segs) + len(piece.segs) > limits.max_segments:
            return False
        if piece.slba == self.end:  # back merge
            first, last = self.slba, piece.end - 1
        elif piece.end == self.slba:  # front merge
            first, last = piece.slba, self.end - 1
        else:
            return False
        chunk = limits.chunk_blocks
        if chunk and first // chunk != last // chunk:
            return False
        if piece.slba == self.end:
            self.segs.extend(piece.segs)
        else:
            self.segs[:0] = piece.segs
            self.slba = piece.slba
        self.nblocks += piece.nblocks
        return True


class _IoRequest(HostRequest):
    """A read or write of one buffer that nothing merges with: the
    HostRequest is the block layer's request too (Linux allocates the
    request and the driver's command together), so the fast path makes one
    object per command.  Its HostRequest completion completes it
    (:meth:`BlockDevice._io_done`); ``io`` is the one BlockIO it serves."""

    __slots__ = ("dev", "op", "slba", "nblocks", "start_ns", "completed", "io")

    def _finish(self) -> None:
        HostRequest._finish(self)
        try:
            self.dev._io_done(self)
        except Exception:  # pragma: no cover - a bug must not break the completion path
            log.exception("completing %r", self)


class BlockIO:
    """A user request (Linux's bio before splitting): done when every command
    carrying a piece of it has completed; failed if any of them failed.

    ``wait()``/``result()`` block; ``await io`` waits in asyncio (awaiting
    the HostRequests, then the BlockIO's own completion);
    ``add_done_callback(fn)`` calls ``fn(io)`` once done (at once if done
    already)."""

    def __init__(self, op: Op, value: Any = None):
        self.op = op
        self._value = value
        self._lock = threading.Lock()
        self._done = False
        self._event: threading.Event | None = None  # made by the first wait that must block
        self._pending = 1  # the submitter's reference, dropped by _seal()
        self._errors: list[tuple[int, BaseException]] = []
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[BlockIO], Any]] = []
        self._hreqs: list[Any] = []
        self._plug: Plug | None = None

    # -- completion (called by the block layer)

    def _get(self) -> None:
        with self._lock:
            self._pending += 1

    def _put(self, lba: int = 0, exc: BaseException | None = None) -> None:
        with self._lock:
            if exc is not None:
                self._errors.append((lba, exc))
            self._pending -= 1
            if self._pending:
                return
            if self._errors:
                self._error = min(self._errors, key=lambda e: e[0])[1]
                if self._error is not None:
                    self._value = None
            callbacks, self._callbacks = self._callbacks, []
            self._done = True
            event = self._event
        if event is not None:
            event.set()
        for fn in callbacks:
            self._call(fn)

    def _seal(self) -> None:
        self._put()

    def _call(self, fn: Callable[[BlockIO], Any]) -> None:
        try:
            fn(self)
        except Exception:  # a callback's failure must not break completion
            log.exception("BlockIO done callback %r failed", fn)

    # -- public

    @property
    def done(self) -> bool:
        return self._done

    @property
    def requests(self) -> list[Any]:
        """The HostRequests dispatched for this I/O so far."""
        return list(self._hreqs)

    def add_done_callback(self, fn: Callable[[BlockIO], Any]) -> None:
        with self._lock:
            if not self._done:
                self._callbacks.append(fn)
                return
        self._call(fn)

    def _unplug(self) -> None:
        plug_ = self._plug
        if plug_ is not None and not self._done:
            plug_.flush()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until done (dispatching the plug holding it first); True
        when done."""
        if self._done:
            return True
        self._unplug()
        deadline = None if timeout is None else time.monotonic() + timeout
        for hreq in list(self._hreqs):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            hreq.wait(left)  # drives completion polling where the queue needs it
        with self._lock:
            if self._done:
                return True
            event = self._event
            if event is None:
                event = self._event = threading.Event()
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return event.wait(left)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.wait(timeout):
            raise TimeoutError(f"{self!r} not done after {timeout} s")
        return self._error

    def result(self, timeout: float | None = None) -> Any:
        """The value (bytes read, the buffer, ...) or the first failure's
        exception (the one at the lowest LBA)."""
        exc = self.exception(timeout)
        if exc is not None:
            raise exc
        return self._value

    def __await__(self):
        if not self._done:
            self._unplug()
            for hreq in list(self._hreqs):
                if not getattr(hreq, "done", False):
                    try:
                        yield from hreq.__await__()
                    except Exception:  # the status is collected by the completion callback
                        pass
            if not self._done:
                loop = asyncio.get_running_loop()
                fut = loop.create_future()
                self.add_done_callback(lambda _io: _wake(loop, fut))
                yield from fut.__await__()
        return self.result(0)

    def __repr__(self) -> str:
        state = "pending" if not self.done else ("failed" if self._error is not None else "done")
        return f"<BlockIO {self.op.name} {state}>"


def _set_done(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _wake(loop: asyncio.AbstractEventLoop, fut: asyncio.Future) -> None:
    try:
        loop.call_soon_threadsafe(_set_done, fut)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _done_io(op: Op, value: Any) -> BlockIO:
    io = BlockIO(op, value)
    io._seal()
    return io


# ---------------------------------------------------------------------------
# Plugging


_current_plug: contextvars.ContextVar[Plug | None] = contextvars.ContextVar("nvmestack_block_plug", default=None)


def _open_plug() -> Plug | None:
    """The plug of this context (thread or asyncio task), None when there
    is none or it has ended."""
    current = _current_plug.get()
    return current if current is not None and not current._closed else None


class Plug:
    """Requests collected before dispatch (Linux struct blk_plug): pieces
    merge into the requests already here; the lot is dispatched in order
    when the plug ends, when it holds PLUG_MAX_REQUESTS requests, or when
    someone waits for one of them.  Merging never crosses a flush or a
    request overlapping the new piece, so queued requests to the same blocks
    keep their order."""

    def __init__(self, merge: bool = True) -> None:
        self._lock = threading.RLock()
        self._requests: list[_Request] = []
        self._closed = False
        self.merge = merge  # False: only batch the submissions (fio's own I/Os stay as they are)

    def __len__(self) -> int:
        return len(self._requests)

    def add(self, piece: _Request, limits: QueueLimits) -> None:
        with self._lock:
            if self._closed:
                piece.dev._start(piece)
                piece.dev._dispatch([piece])
                return
            for rq in reversed(self._requests if self.merge else ()):
                if rq.dev is not piece.dev:
                    continue
                if rq.try_merge(piece, limits):
                    rq.dev._merged(rq, piece)
                    return
                if rq.op == Op.FLUSH or piece.op == Op.FLUSH or rq.overlaps(piece):
                    break
            piece.dev._start(piece)
            self._requests.append(piece)
            if len(self._requests) >= PLUG_MAX_REQUESTS:
                self._flush_locked()

    def flush(self) -> None:
        """Dispatch everything collected so far."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        while self._requests:
            batch, self._requests = self._requests, []
            # One submission batch (one doorbell per queue) per run of
            # requests to the same device, in order.
            run: list[_Request] = []
            for rq in batch:
                if run and run[0].dev is not rq.dev:
                    run[0].dev._dispatch(run)
                    run = []
                run.append(rq)
            if run:
                run[0].dev._dispatch(run)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._flush_locked()


@contextmanager
def plug(*, merge: bool = True) -> Iterator[Plug]:
    """Collect the requests queued in this context (thread or asyncio task)
    and dispatch them, merged (unless ``merge`` is False), at the end as
    one submission batch.  Nested plugs join the outer one (as
    blk_start_plug())."""
    current = _open_plug()
    if current is not None:
        yield current
        return
    p = Plug(merge)
    token = _current_plug.set(p)
    try:
        yield p
    finally:
        _current_plug.reset(token)
        p.close()


# ---------------------------------------------------------------------------
# Statistics


_STAT_FIELDS = (
    "read_ios", "read_merges", "read_sectors", "read_ticks",
    "write_ios", "write_merges", "write_sectors", "write_ticks",
    "in_flight", "io_ticks", "time_in_queue",
    "discard_ios", "discard_merges", "discard_sectors", "discard_ticks",
    "flush_ios", "flush_ticks",
)


@dataclass(frozen=True)
class IoStats:
    """A snapshot of a device's I/O statistics, as /sys/block/<dev>/stat.

    Counts per group (read, write, discard, flush): ``ios`` completed
    requests (commands), ``merges`` pieces merged into a queued request,
    ``sectors`` 512-byte sectors, ``ticks`` milliseconds requests spent from
    creation to completion (summed); ``in_flight`` requests created and not
    completed; ``io_ticks`` milliseconds with at least one request in flight;
    ``time_in_queue`` the sum of the four groups' request times (ms).
    ``timestamp_ns`` is the device clock at the snapshot."""

    ios: tuple[int, int, int, int]
    merges: tuple[int, int, int, int]
    sectors: tuple[int, int, int, int]
    nsecs: tuple[int, int, int, int]
    in_flight: int
    io_ticks_ns: int
    timestamp_ns: int
    inflight_rw: tuple[int, int] = (0, 0)

    FIELDS = _STAT_FIELDS

    def _group(name: str, index: int, what: str):
        if what == "ticks":
            return property(lambda self: self.nsecs[index] // _NS_PER_MS, doc=f"{name} ticks (ms)")
        return property(lambda self: getattr(self, what)[index], doc=f"{name} {what}")

    read_ios = _group("read", 0, "ios")
    read_merges = _group("read", 0, "merges")
    read_sectors = _group("read", 0, "sectors")
    read_ticks = _group("read", 0, "ticks")
    write_ios = _group("write", 1, "ios")
    write_merges = _group("write", 1, "merges")
    write_sectors = _group("write", 1, "sectors")
    write_ticks = _group("write", 1, "ticks")
    discard_ios = _group("discard", 2, "ios")
    discard_merges = _group("discard", 2, "merges")
    discard_sectors = _group("discard", 2, "sectors")
    discard_ticks = _group("discard", 2, "ticks")
    flush_ios = _group("flush", 3, "ios")
    flush_ticks = _group("flush", 3, "ticks")
    del _group

    @property
    def io_ticks(self) -> int:
        return self.io_ticks_ns // _NS_PER_MS

    @property
    def time_in_queue(self) -> int:
        return sum(self.nsecs) // _NS_PER_MS

    def fields(self) -> tuple[int, ...]:
        """The 17 values in the order the kernel prints them."""
        return tuple(getattr(self, name) for name in _STAT_FIELDS)

    def as_dict(self) -> dict[str, int]:
        return dict(zip(_STAT_FIELDS, self.fields()))

    def __str__(self) -> str:
        """The line /sys/block/<dev>/stat shows (each value %8u)."""
        return " ".join(f"{v:8d}" for v in self.fields())


class _Stats:
    """The counters behind IoStats (Linux struct disk_stats + bd_stamp)."""

    def __init__(self, clock: Callable[[], int]):
        self.clock = clock
        self.lock = threading.Lock()
        self.ios = [0] * 4
        self.merges = [0] * 4
        self.sectors = [0] * 4
        self.nsecs = [0] * 4
        self.in_flight = [0, 0]
        self.io_ticks = 0
        self.stamp = clock()

    def _update_io_ticks(self, now: int, end: bool) -> None:
        # update_io_ticks(): the time since the last stamp counts as busy
        # when requests were in flight over it.
        if now > self.stamp:
            if end or self.in_flight[0] + self.in_flight[1]:
                self.io_ticks += now - self.stamp
            self.stamp = now

    def start(self, rq: _Request) -> None:
        now = self.clock()
        rq.start_ns = now
        with self.lock:
            self._update_io_ticks(now, False)
            self.in_flight[_WRITE_OF[rq.op]] += 1

    def merge(self, op: Op) -> None:
        with self.lock:
            self.merges[_GROUP_OF[op]] += 1

    def done(self, rq: _Request, block_size: int) -> bool:
        """Count ``rq`` as completed, once: False (nothing counted) when it
        was already."""
        now = self.clock()
        op = rq.op
        group = _GROUP_OF[op]
        with self.lock:
            if rq.completed:
                return False
            rq.completed = True
            self._update_io_ticks(now, True)
            self.ios[group] += 1
            if op != Op.FLUSH:
                self.sectors[group] += rq.nblocks * block_size // SECTOR_SIZE
            if now > rq.start_ns:
                self.nsecs[group] += now - rq.start_ns
            self.in_flight[_WRITE_OF[op]] -= 1
        return True

    def snapshot(self) -> IoStats:
        now = self.clock()
        with self.lock:
            if self.in_flight[0] + self.in_flight[1]:
                self._update_io_ticks(now, True)
            return IoStats(tuple(self.ios), tuple(self.merges), tuple(self.sectors), tuple(self.nsecs),
                           self.in_flight[0] + self.in_flight[1], self.io_ticks, now,
                           (self.in_flight[0], self.in_flight[1]))


@dataclass(frozen=True)
class IoStatSummary:
    """``iostat -x`` figures for one interval (sysstat's formulas): per
    second rates, average request times in ms (``await`` over reads and
    writes), average queue size and utilisation in percent."""

    interval: float  # seconds
    r_s: float
    w_s: float
    d_s: float
    f_s: float
    rkB_s: float
    wkB_s: float
    dkB_s: float
    rrqm_s: float
    wrqm_s: float
    drqm_s: float
    r_await: float
    w_await: float
    d_await: float
    f_await: float
    await_: float
    rareq_sz: float
    wareq_sz: float
    aqu_sz: float
    util: float

    HEADER = ("r/s", "w/s", "rkB/s", "wkB/s", "rrqm/s", "wrqm/s", "r_await", "w_await", "await",
              "aqu-sz", "%util")

    def row(self) -> tuple[float, ...]:
        return (self.r_s, self.w_s, self.rkB_s, self.wkB_s, self.rrqm_s, self.wrqm_s, self.r_await,
                self.w_await, self.await_, self.aqu_sz, self.util)

    def __str__(self) -> str:
        head = " ".join(f"{h:>9}" for h in self.HEADER)
        return head + "\n" + " ".join(f"{v:9.2f}" for v in self.row())


def iostat(before: IoStats, after: IoStats) -> IoStatSummary:
    """``iostat -x`` between two snapshots of the same device, from the
    millisecond and sector values of the stat file as iostat reads them."""
    itv_ms = (after.timestamp_ns - before.timestamp_ns) / _NS_PER_MS
    if itv_ms <= 0:
        raise ValueError("the second snapshot must be taken after the first")
    a, b = after.fields(), before.fields()
    d = dict(zip(_STAT_FIELDS, (x - y for x, y in zip(a, b))))
    secs = itv_ms / 1000.0

    def rate(v: float) -> float:
        return v / secs

    def avg(num: float, den: float) -> float:
        return num / den if den else 0.0

    return IoStatSummary(
        interval=secs,
        r_s=rate(d["read_ios"]),
        w_s=rate(d["write_ios"]),
        d_s=rate(d["discard_ios"]),
        f_s=rate(d["flush_ios"]),
        rkB_s=rate(d["read_sectors"] / 2),
        wkB_s=rate(d["write_sectors"] / 2),
        dkB_s=rate(d["discard_sectors"] / 2),
        rrqm_s=rate(d["read_merges"]),
        wrqm_s=rate(d["write_merges"]),
        drqm_s=rate(d["discard_merges"]),
        r_await=avg(d["read_ticks"], d["read_ios"]),
        w_await=avg(d["write_ticks"], d["write_ios"]),
        d_await=avg(d["discard_ticks"], d["discard_ios"]),
        f_await=avg(d["flush_ticks"], d["flush_ios"]),
        await_=avg(d["read_ticks"] + d["write_ticks"], d["read_ios"] + d["write_ios"]),
        rareq_sz=avg(d["read_sectors"] / 2, d["read_ios"]),
        wareq_sz=avg(d["write_sectors"] / 2, d["write_ios"]),
        aqu_sz=d["time_in_queue"] / itv_ms,
        util=min(100.0, 100.0 * d["io_ticks"] / itv_ms),
    )


# ---------------------------------------------------------------------------
# The three faces


class _Ops:
    """The operations, shared by the synchronous device, ``dev.aio`` and
    ``dev.submit``; each face decides what to return for the BlockIO."""

    __slots__ = ()
    _dev: BlockDevice

    def _finish(self, io: BlockIO) -> Any:
        raise NotImplementedError

    # -- byte offsets (block aligned)

    def read(self, offset: int, size: int):
        """Read ``size`` bytes at ``offset``: a new bytearray."""
        dev = self._dev
        lba, n = dev._byte_range(offset, size)
        buf = bytearray(n * dev.block_size)
        return self._finish(dev._start_rw(Op.READ, lba, [memoryview(buf)] if n else [], n, buf))

    def readinto(self, offset: int, buf: Any):
        """Read into ``buf`` (its size a multiple of the block size) at
        ``offset``: the number of bytes read."""
        return self.readv(offset, [buf])

    def readv(self, offset: int, bufs: Iterable[Any]):
        """Read at ``offset`` into several buffers in turn (preadv)."""
        dev = self._dev
        segs, total = _segments(bufs, writable=True)
        lba, n = dev._byte_range(offset, total)
        return self._finish(dev._start_rw(Op.READ, lba, segs, n, total))

    def write(self, offset: int, data: Any, *, fua: bool = False):
        """Write ``data`` (a multiple of the block size) at ``offset``: the
        number of bytes written.  ``fua``: Force Unit Access."""
        return self.writev(offset, [data], fua=fua)

    def writev(self, offset: int, bufs: Iterable[Any], *, fua: bool = False):
        """Write several buffers in turn at ``offset`` (pwritev)."""
        dev = self._dev
        segs, total = _segments(bufs, writable=False)
        lba, n = dev._byte_range(offset, total)
        return self._finish(dev._start_rw(Op.WRITE, lba, segs, n, total, fua=fua))

    def flush(self):
        """Commit the volatile write cache (nothing to do without one)."""
        return self._finish(self._dev._start_flush())

    def discard(self, offset: int, size: int):
        """Deallocate ``size`` bytes at ``offset`` (Dataset Management, AD)."""
        dev = self._dev
        return self._finish(dev._start_discard(*dev._byte_range(offset, size)))

    def write_zeroes(self, offset: int, size: int, *, deallocate: bool = False, fua: bool = False):
        """Zero ``size`` bytes at ``offset`` (Write Zeroes; ``deallocate``
        sets DEAC)."""
        dev = self._dev
        lba, n = dev._byte_range(offset, size)
        return self._finish(dev._start_nodata(Op.WRITE_ZEROES, lba, n, deallocate=deallocate, fua=fua))

    def verify(self, offset: int, size: int):
        """Verify ``size`` bytes at ``offset`` (no data transfer)."""
        dev = self._dev
        lba, n = dev._byte_range(offset, size)
        return self._finish(dev._start_nodata(Op.VERIFY, lba, n))

    # -- LBAs

    def read_blocks(self, lba: int, nblocks: int):
        """Read ``nblocks`` blocks from ``lba``: a new bytearray."""
        dev = self._dev
        lba, n = dev._lba_range(lba, nblocks)
        buf = bytearray(n * dev.block_size)
        return self._finish(dev._start_rw(Op.READ, lba, [memoryview(buf)] if n else [], n, buf))

    def readinto_blocks(self, lba: int, buf: Any):
        dev = self._dev
        seg = _segment(buf, True)
        total = seg.nbytes
        lba, n = dev._lba_range(lba, dev._whole_blocks(total))
        return self._finish(dev._start_rw(Op.READ, lba, [seg] if total else [], n, total))

    def readv_blocks(self, lba: int, bufs: Iterable[Any]):
        dev = self._dev
        segs, total = _segments(bufs, writable=True)
        lba, n = dev._lba_range(lba, dev._whole_blocks(total))
        return self._finish(dev._start_rw(Op.READ, lba, segs, n, total))

    def write_blocks(self, lba: int, data: Any, *, fua: bool = False):
        dev = self._dev
        seg = _segment(data, False)
        total = seg.nbytes
        lba, n = dev._lba_range(lba, dev._whole_blocks(total))
        return self._finish(dev._start_rw(Op.WRITE, lba, [seg] if total else [], n, total, fua=fua))

    def writev_blocks(self, lba: int, bufs: Iterable[Any], *, fua: bool = False):
        dev = self._dev
        segs, total = _segments(bufs, writable=False)
        lba, n = dev._lba_range(lba, dev._whole_blocks(total))
        return self._finish(dev._start_rw(Op.WRITE, lba, segs, n, total, fua=fua))

    def discard_blocks(self, lba: int, nblocks: int):
        dev = self._dev
        return self._finish(dev._start_discard(*dev._lba_range(lba, nblocks)))

    def write_zeroes_blocks(self, lba: int, nblocks: int, *, deallocate: bool = False, fua: bool = False):
        dev = self._dev
        lba, n = dev._lba_range(lba, nblocks)
        return self._finish(dev._start_nodata(Op.WRITE_ZEROES, lba, n, deallocate=deallocate, fua=fua))

    def verify_blocks(self, lba: int, nblocks: int):
        dev = self._dev
        lba, n = dev._lba_range(lba, nblocks)
        return self._finish(dev._start_nodata(Op.VERIFY, lba, n))


class SubmitApi(_Ops):
    """``dev.submit``: every operation returns its :class:`BlockIO` at once."""

    __slots__ = ("_dev",)

    def __init__(self, dev: BlockDevice):
        self._dev = dev

    def _finish(self, io: BlockIO) -> BlockIO:
        return io


async def _await_io(io: BlockIO) -> Any:
    return await io


class AsyncApi(_Ops):
    """``dev.aio``: the asyncio API.  Each operation queues its commands
    when called and returns a coroutine that waits for them and returns the
    result (or raises the failure)."""

    __slots__ = ("_dev",)

    def __init__(self, dev: BlockDevice):
        self._dev = dev

    def _finish(self, io: BlockIO):
        return _await_io(io)


class BlockDevice(_Ops):
    """Namespace ``ns`` (a HostNamespace) as a block device.

    The synchronous API: each operation returns when done and raises the
    failure of any of its commands.  ``dev.aio`` and ``dev.submit`` have the
    same operations for asyncio and for batches.  Offsets and sizes in bytes
    must be multiples of the block size (ValueError otherwise); the
    ``*_blocks`` forms take LBAs and block counts.

    ``limits`` overrides (keyword arguments of :class:`QueueLimits`, e.g.
    ``max_segments=4``) adjust what a command may carry; ``clock`` (ns, for
    tests) times the statistics; ``timeout`` bounds the synchronous waits
    (None: the controller's own request timeouts and recovery end every
    request); ``polled`` sends the commands to the controller's polled I/O
    queues (completions found by polling while waiting, Linux's REQ_POLLED)."""

    def __init__(self, ns: Any, *, clock: Callable[[], int] = time.monotonic_ns,
                 timeout: float | None = None, name: str | None = None, polled: bool = False,
                 **limits: Any):
        self.ns = ns
        self.polled = polled
        self._dev = self
        self._overrides = dict(limits)
        self._limits_cache: tuple | None = None
        self._templates: dict[tuple, bytes] = {}  # prepared Read/Write entries per (class, NSID)
        queue_limits(ns, **self._overrides)  # fail early on bad overrides
        self._stats = _Stats(clock)
        self._timeout = timeout
        ctrl_name = getattr(ns.ctrl, "name", None)
        self.name = name or (f"{ctrl_name}n{ns.nsid}" if isinstance(ctrl_name, str) else f"nvme?n{ns.nsid}")
        self.submit = SubmitApi(self)
        self.aio = AsyncApi(self)
        self.double_completions = 0

    # -- geometry

    @property
    def block_size(self) -> int:
        return int(self.ns.block_size)

    @property
    def nblocks(self) -> int:
        return int(self.ns.nblocks)

    @property
    def size(self) -> int:
        """Capacity in bytes."""
        return self.nblocks * self.block_size

    @property
    def limits(self) -> QueueLimits:
        """The current limits, as the controller reports them now (a reset
        or a format may change them): computed again whenever one of the
        structures they come from is another object or the block size or
        MDTS changed, which is never on the I/O path."""
        ns = self.ns
        ctrl = ns.ctrl
        try:  # the host core's controller has them all (a plain read: every command asks)
            key = (ctrl.identify, ns.identify, ctrl.identify_nvm, ctrl.transport, ns.block_size, ctrl.max_transfer,
                   ctrl.max_segments)
        except AttributeError:  # another controller: what it lacks counts as None (0 for max_transfer)
            key = (getattr(ctrl, "identify", None), getattr(ns, "identify", None), getattr(ctrl, "identify_nvm", None),
                   getattr(ctrl, "transport", None), ns.block_size, getattr(ctrl, "max_transfer", 0),
                   getattr(ctrl, "max_segments", None))
        cached = self._limits_cache
        # The sources compare by identity first (a tuple's comparison), the
        # sizes by value.
        if cached is not None and cached[0] == key:
            return cached[1]
        limits = queue_limits(ns, **self._overrides)
        self._limits_cache = (key, limits)  # holds the sources: no id is reused while cached
        return limits

    def plug(self, *, merge: bool = True):
        """``with dev.plug():`` -- the module's :func:`plug`."""
        return plug(merge=merge)

    def __repr__(self) -> str:
        return f"<BlockDevice {self.name} {self.nblocks} x {self.block_size} B>"

    # -- statistics

    def stats(self) -> IoStats:
        """A snapshot of the I/O statistics."""
        return self._stats.snapshot()

    def stat(self) -> tuple[int, ...]:
        """The 17 values of /sys/block/<dev>/stat in the kernel's order."""
        return self.stats().fields()

    def inflight(self) -> tuple[int, int]:
        """/sys/block/<dev>/inflight: requests in flight (reads, writes)."""
        return self.stats().inflight_rw

    def iostat(self, before: IoStats, after: IoStats | None = None) -> IoStatSummary:
        """``iostat -x`` from ``before`` to ``after`` (now by default)."""
        return iostat(before, after if after is not None else self.stats())

    # -- the synchronous face

    def _finish(self, io: BlockIO) -> Any:
        return io.result(self._timeout)

    # -- arguments

    def _whole_blocks(self, nbytes: int) -> int:
        bs = self.block_size
        if nbytes % bs:
            raise ValueError(f"buffer size {nbytes} is not a multiple of the block size {bs}")
        return nbytes // bs

    def _lba_range(self, lba: Any, nblocks: Any) -> tuple[int, int]:
        lba, nblocks = operator.index(lba), operator.index(nblocks)
        if getattr(self.ns, "removed", False):
            raise OSError(errno.ENXIO, f"{self.name}: the namespace was removed")
        if lba < 0 or nblocks < 0:
            raise ValueError(f"negative LBA or block count ({lba}, {nblocks})")
        cap = self.nblocks
        if lba + nblocks > cap or (nblocks == 0 and lba > cap):
            raise ValueError(f"blocks {lba}..{lba + nblocks - 1} are beyond the end of {self.name} ({cap} blocks)")
        return lba, nblocks

    def _byte_range(self, offset: Any, size: Any) -> tuple[int, int]:
        offset, size = operator.index(offset), operator.index(size)
        bs = self.block_size
        if offset < 0 or size < 0:
            raise ValueError(f"negative offset or size ({offset}, {size})")
        if offset % bs:
            raise ValueError(f"offset {offset} is not a multiple of the block size {bs}")
        if size % bs:
            raise ValueError(f"size {size} is not a multiple of the block size {bs}")
        return self._lba_range(offset // bs, size // bs)

    # -- building requests

    def _start_rw(self, op: Op, lba: int, segs: list[memoryview], nblocks: int, value: Any,
                  *, fua: bool = False) -> BlockIO:
        if nblocks == 0:
            return _done_io(op, value)
        prinfo = self._protection()  # metadata the block layer cannot carry: refused before anything is sent
        limits = self.limits
        fua = fua and limits.write_cache
        chunk = limits.chunk_blocks
        if len(segs) == 1 and nblocks <= limits.max_blocks and (
                not chunk or lba // chunk == (lba + nblocks - 1) // chunk):
            # One buffer that fits one command: the piece _split_rw would make.
            if prinfo is None and FAST_PATH:
                make_io = getattr(self.ns.ctrl, "make_io", None)
                current = _open_plug()
                if make_io is not None and (current is None or not current.merge):
                    # Nothing can merge with it: the command itself is the request.
                    return self._queue_one(self._io_request(make_io, op, lba, nblocks, segs, fua), value, current,
                                           limits)
            pieces = [_Request(self, op, lba, nblocks, segs=segs, fua=fua)]
        else:
            pieces = [_Request(self, op, slba, n, segs=s, fua=fua) for slba, n, s in _split_rw(lba, segs, limits)]
        return self._queue(op, value, pieces, limits)

    def _start_flush(self) -> BlockIO:
        limits = self.limits
        if not limits.write_cache:
            return _done_io(Op.FLUSH, None)
        return self._queue(Op.FLUSH, None, [_Request(self, Op.FLUSH, 0, 0)], limits)

    def _start_discard(self, lba: int, nblocks: int) -> BlockIO:
        if nblocks == 0:
            return _done_io(Op.DISCARD, None)
        limits = self.limits
        if not limits.discard:
            raise _unsupported(self, "Dataset Management")
        ranges = []
        end = lba + nblocks
        while lba < end:
            n = min(end - lba, limits.max_discard_range_blocks)
            ranges.append((lba, n))
            lba += n
        step = limits.max_discard_ranges
        pieces = []
        for i in range(0, len(ranges), step):
            group = ranges[i:i + step]
            pieces.append(_Request(self, Op.DISCARD, group[0][0], sum(n for _, n in group), ranges=group))
        return self._queue(Op.DISCARD, None, pieces, limits)

    def _start_nodata(self, op: Op, lba: int, nblocks: int, *, deallocate: bool = False,
                      fua: bool = False) -> BlockIO:
        if nblocks == 0:
            return _done_io(op, None)
        limits = self.limits
        if op == Op.WRITE_ZEROES:
            if not limits.write_zeroes:
                raise _unsupported(self, "Write Zeroes")
            step = limits.max_write_zeroes_blocks
        else:
            if not limits.verify:
                raise _unsupported(self, "Verify")
            step = limits.max_verify_blocks
        fua = fua and limits.write_cache
        pieces = []
        end = lba + nblocks
        while lba < end:
            n = min(end - lba, step)
            pieces.append(_Request(self, op, lba, n, fua=fua, deallocate=deallocate))
            lba += n
        return self._queue(op, None, pieces, limits)

    def _queue(self, op: Op, value: Any, pieces: list[_Request], limits: QueueLimits) -> BlockIO:
        current = _open_plug()
        if len(pieces) == 1:
            return self._queue_one(pieces[0], value, current, limits)
        io = BlockIO(op, value)
        io._plug = current
        try:
            for piece in pieces:
                io._get()
                piece.ios.append(io)
                if current is not None:
                    current.add(piece, limits)
                else:
                    self._start(piece)
            if current is None:
                self._dispatch(pieces)
        finally:
            io._seal()
        return io

    def _queue_one(self, piece: _Request, value: Any, current: Plug | None, limits: QueueLimits) -> BlockIO:
        """:meth:`_queue` for one piece (``current``: the open plug or
        None): its reference is the only one the BlockIO waits for (nothing
        to seal once the others are queued)."""
        io = BlockIO(piece.op, value)
        io._plug = current
        if type(piece) is _IoRequest:
            piece.io = io
            io._hreqs.append(piece)
        else:
            piece.ios.append(io)
        if current is not None:
            current.add(piece, limits)
        else:
            self._start(piece)
            self._dispatch([piece])
        return io

    # -- accounting and dispatch (called by the plug too)

    def _start(self, rq: _Request) -> None:
        self._stats.start(rq)

    def _merged(self, rq: _Request, piece: _Request) -> None:
        """``piece`` was absorbed by ``rq``: its BlockIOs now wait for rq."""
        self._stats.merge(piece.op)
        rq.merged += 1
        for io in piece.ios:
            if io in rq.ios:
                io._put()  # already waiting for rq
            else:
                rq.ios.append(io)

    def _protection(self) -> int | None:
        """How data commands treat the namespace's metadata, as Linux without
        an integrity buffer: None when there is none; the PRINFO to use when
        it is protection information only (8 bytes of PI, the controller
        inserts and strips it: PRACT, plus the checks of the PI type)."""
        ns = self.ns
        ms = int(getattr(ns, "metadata_size", 0) or 0)
        if not ms:
            return None
        pi_type = int(getattr(ns, "pi_type", 0) or 0)
        if pi_type and ms == PI_TUPLE_SIZE:
            if pi_type == 3:
                return Prinfo.PRACT | Prinfo.PRCHK_GUARD
            return Prinfo.PRACT | Prinfo.PRCHK_GUARD | Prinfo.PRCHK_REF
        raise _unsupported(self, f"reads and writes on a format with {ms} bytes of metadata per block "
                                 f"without PI to strip (use passthrough with a metadata buffer)")

    def _command(self, rq: _Request) -> tuple[Any, list | None, int]:
        nsid = self.ns.nsid
        op = rq.op
        if op in (Op.READ, Op.WRITE):
            cls, direction = (Read, DIR_FROM_DEVICE) if op == Op.READ else (Write, DIR_TO_DEVICE)
            prinfo = self._protection()
            if prinfo is None:
                return self._plain_rw(cls, rq.slba, rq.nblocks, rq.fua), rq.segs, direction
            cmd = cls(nsid=nsid, slba=rq.slba, nblocks=rq.nblocks, fua=rq.fua)
            cmd.prinfo = prinfo
            cmd.reftag = rq.slba & 0xFFFFFFFF
            return cmd, rq.segs, direction
        if op == Op.FLUSH:
            return Flush(nsid=nsid), None, DIR_NONE
        if op == Op.DISCARD:
            buf = pack_dsm_ranges(rq.ranges)
            cmd = DatasetManagement(nsid=nsid, nranges=len(rq.ranges), ad=True)
            return cmd, [memoryview(buf)], DIR_TO_DEVICE
        pi = bool(getattr(self.ns, "pi_type", 0)) and getattr(self.ns, "metadata_size", 0) == PI_TUPLE_SIZE
        if op == Op.WRITE_ZEROES:
            cmd = WriteZeroes(nsid=nsid, slba=rq.slba, nblocks=rq.nblocks, deac=rq.deallocate, fua=rq.fua)
            if pi:  # the controller generates the PI of the zeroed blocks (Linux: PRACT)
                cmd.prinfo = Prinfo.PRACT
                cmd.reftag = rq.slba & 0xFFFFFFFF
            return cmd, None, DIR_NONE
        cmd = Verify(nsid=nsid, slba=rq.slba, nblocks=rq.nblocks)
        if pi:  # check the stored PI (PRACT is not allowed on Verify)
            cmd.prinfo = Prinfo.PRCHK_GUARD | (Prinfo.PRCHK_REF if self.ns.pi_type != 3 else 0)
            cmd.reftag = rq.slba & 0xFFFFFFFF
        return cmd, None, DIR_NONE

    def _dispatch(self, rqs: list[Any]) -> None:
        """Send requests as one submission batch: ``make_request`` and
        ``submit_batch`` when the controller has them (one doorbell per
        queue, whatever the caller's own ``ctrl.plug()``), ``submit`` one
        by one otherwise.  A request that cannot be sent fails.

        The fast path: with a controller that has ``submit_io`` (the host
        core), the _IoRequests _start_rw made and the requests
        ``make_request`` makes for every other piece go to the thread's
        queue as one batch."""
        ctrl = self.ns.ctrl
        submit_io = getattr(ctrl, "submit_io", None)
        fast = submit_io is not None and (FAST_PATH or any(type(rq) is _IoRequest for rq in rqs))
        make = getattr(ctrl, "make_request", None)
        batch = getattr(ctrl, "submit_batch", None)
        batched = make is not None and (fast or batch is not None)
        polled = self.polled
        extra = {"polled": True} if polled else {}
        started: list[tuple[Any, Any]] = []
        for rq in rqs:
            if type(rq) is _IoRequest:  # made whole by _start_rw
                started.append((rq, rq))
                continue
            try:
                cmd, data, direction = self._command(rq)
                if batched:
                    hreq = make(cmd, data, direction=direction, **extra)
                else:
                    hreq = ctrl.submit(cmd, data, direction=direction, **extra)
            except Exception as exc:  # e.g. the controller is dead: the request fails
                self._complete(rq, exc)
                continue
            rq.hreq = hreq
            for io in rq.ios:
                io._hreqs.append(hreq)
            hreq.add_done_callback(rq.hreq_done)
            started.append((rq, hreq))
        if not started or not batched:
            return
        try:
            if fast:
                submit_io([hreq for _, hreq in started], polled)
            else:
                batch([hreq for _, hreq in started])
        except Exception as exc:
            log.exception("%s: submitting %d requests failed", self.name, len(started))
            for rq, hreq in started:
                if not hreq.done:
                    if rq is hreq and getattr(ctrl, "_fail", None) is not None:
                        ctrl._fail(hreq, exc)  # finishes it: _io_done completes the block request
                    else:
                        self._complete(rq, exc)

    def _plain_rw(self, cls: type, slba: int, nblocks: int, fua: bool) -> Any:
        """A Read or Write without metadata from the namespace's prepared
        entry: SLBA and CDW12 (NLB, FUA) packed in one go."""
        nsid = self.ns.nsid
        template = self._templates.get((cls, nsid))
        if template is None:
            template = self._templates[(cls, nsid)] = bytes(cls(nsid=nsid))
        raw = bytearray(template)
        _RW_RANGE.pack_into(raw, _RW_RANGE_OFF, slba, (nblocks - 1) | (_FUA if fua else 0))
        return cls.adopt(raw)

    def _io_request(self, make_io: Callable[..., Any], op: Op, lba: int, nblocks: int, segs: list[memoryview],
                    fua: bool) -> _IoRequest:
        """A read or write without metadata as one :class:`_IoRequest`: its
        command from the prepared entry, SLBA and CDW12 packed in one go."""
        cls, direction = (Read, DIR_FROM_DEVICE) if op is Op.READ else (Write, DIR_TO_DEVICE)
        req = make_io(self._plain_rw(cls, lba, nblocks, fua), segs, direction, self.polled, _IoRequest)
        req.dev = self
        req.op = op
        req.slba = lba
        req.nblocks = nblocks
        req.start_ns = 0
        req.completed = False
        req.io = None
        return req

    def _io_done(self, req: _IoRequest) -> None:
        """An _IoRequest finished (its HostRequest completion)."""
        self._on_done(req, req)

    def _on_done(self, rq: _Request, hreq: Any) -> None:
        status = hreq.status
        if hreq.error is None and status is not None and status.ok:
            self._complete(rq, None)
            return
        exc = None
        try:
            hreq.raise_for_status()
        except Exception as err:
            exc = err
        self._complete(rq, exc)

    def _complete(self, rq: _Request, exc: BaseException | None) -> None:
        try:
            first = self._stats.done(rq, self.block_size)
        except Exception:
            log.exception("%s: statistics update failed", self.name)
            first = True
        if not first:
            self.double_completions += 1
            log.error("%s: request %s LBA %d completed twice", self.name, rq.op.name, rq.slba)
            return
        if type(rq) is _IoRequest:
            io, rq.io = rq.io, None
            if io is not None:
                io._put(rq.slba, exc)
            return
        ios, rq.ios, rq.segs = rq.ios, [], []
        for io in ios:
            io._put(rq.slba, exc)


#: The block layer's fast path: reads and writes as one _IoRequest each from a
#: prepared command, batches through ``ctrl.make_io``/``ctrl.submit_io``.
#: Off (NVMESTACK_FAST_PATH=0, the target's switch too): every command takes
#: the general path (_Request, make_request, submit_batch), the reference.
FAST_PATH = os.environ.get("NVMESTACK_FAST_PATH", "1") != "0"


def _unsupported(dev: BlockDevice, what: str) -> Exception:
    import io as _io

    return _io.UnsupportedOperation(f"{dev.name}: the controller does not support {what} (ONCS)")
