"""A command on its way through the host driver (Linux's ``struct request``
with its ``struct nvme_request`` payload).

A :class:`HostRequest` is made by the core (``NvmeController.submit``) from a
64-byte command and the caller's buffers.  It keeps its own copy of the
command (the core stamps the command identifier into it when a tag is
taken, the transport fills in the data pointer), the buffers as a list of
memoryviews, and, once the controller answered, the completion: ``status``
(a :class:`~nvmestack.spec.status.Status`), ``result`` (completion dword 0)
and ``dw1``.

Waiting: ``req.wait(timeout)`` blocks (polling the request's queue when that
queue is polled), ``await req`` works inside asyncio (the completion, which
happens on another thread, wakes the loop), and ``add_done_callback(fn)``
calls ``fn(req)`` once the request is done -- usually on the transport's
completion thread, so a callback should be quick; one that waits for
another request polls that request's queue instead of blocking the
completion thread.

A request completes exactly once.  The core goes through
:meth:`HostRequest._begin_completion`, which lets only the first caller in;
any later attempt is refused and counted in
:data:`HostRequest.double_completions` (tests assert it stays 0).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..spec.sqe import SQE_SIZE, Command, command_class
from ..spec.status import Status

__all__ = [
    "DIR_NONE",
    "DIR_TO_DEVICE",
    "DIR_FROM_DEVICE",
    "DIR_BIDIRECTIONAL",
    "NvmeHostError",
    "NvmeStatusError",
    "ControllerDeadError",
    "HostRequest",
    "as_buffers",
]

log = logging.getLogger(__name__)

DIR_NONE = 0
DIR_TO_DEVICE = 1  # host to controller (write-like)
DIR_FROM_DEVICE = 2  # controller to host (read-like)
DIR_BIDIRECTIONAL = 3  # both (opcode bits 1:0 = 11b)

_POLL_PAUSE = 0.0002  # seconds between two polls of a polled queue
_WAIT_SLICE = 0.05  # re-check how to wait (a request may move to a polled queue)


class NvmeHostError(Exception):
    """Base of the host driver's errors."""


class NvmeStatusError(NvmeHostError):
    """A command completed with an error status.  ``status`` is the
    :class:`~nvmestack.spec.status.Status`, ``request`` the request."""

    def __init__(self, status: Status, request: "HostRequest | None" = None):
        self.status = status
        self.request = request
        what = ""
        if request is not None:
            what = f"{request.opcode_name} (qid {request.qid}, cid {request.cid:#x}): "
        super().__init__(f"{what}NVMe status: {status}")


class ControllerDeadError(NvmeHostError):
    """The controller cannot be used: it failed and could not be recovered
    (state DEAD), or it is being removed."""


def as_buffers(data: Any, *, name: str = "data") -> list[memoryview]:
    """The caller's buffers as a list of byte memoryviews: ``None`` -> [], one
    buffer (bytes-like, or an object with a ``view`` like a DmaBuffer) ->
    [view], a list or tuple of them -> their views in order."""
    if data is None:
        return []
    if isinstance(data, (list, tuple)):
        return [_view(item, name) for item in data]
    return [_view(data, name)]


def _view(item: Any, name: str) -> memoryview:
    view = getattr(item, "view", None)
    if isinstance(view, memoryview) and not isinstance(item, memoryview):
        item = view
    try:
        mv = item if isinstance(item, memoryview) else memoryview(item)
    except TypeError:
        raise TypeError(f"{name}: {type(item).__name__} is not a buffer") from None
    if mv.format != "B" or mv.ndim != 1:
        if not mv.contiguous:
            raise ValueError(f"{name}: buffers must be contiguous")
        mv = mv.cast("B")
    return mv


class HostRequest:
    """One command and its completion (see the module docstring).

    Attributes the other layers read: ``cmd`` (a typed
    :class:`~nvmestack.spec.sqe.Command` view of the request's own 64
    bytes), ``data`` and ``meta`` (lists of memoryviews), ``direction``
    (0 none, 1 host to device, 2 device to host, 3 both), ``qid``, ``cid``,
    ``status`` (None until done), ``result`` (CQE dword 0), ``dw1``,
    ``done``, ``error`` (the exception ``raise_for_status`` raises),
    ``submitted_at`` / ``completed_at`` (``time.perf_counter()`` of the
    latest submission to a queue and of the completion), ``retries``."""

    __slots__ = (
        "cmd", "data", "meta", "direction", "qid", "status", "result", "dw1", "error",
        "timeout", "deadline", "retries", "aborted", "noretry", "internal", "passthru",
        "reserved", "polled", "submitted_at", "completed_at", "queue", "tag", "ctrl",
        "mapping", "_context", "traced", "_poll", "_poll_wait", "_event", "_lock", "_callbacks", "_completing", "_done",
        "__weakref__",
    )

    #: Completions refused because the request had completed already (every
    #: request of the process); stays 0 unless something is wrong.
    double_completions = 0
    _counter_lock = threading.Lock()

    def __init__(self, cmd: Any, data: Any = None, meta: Any = None, *, admin: bool | None = None,
                 direction: int | None = None):
        raw = bytearray(SQE_SIZE)
        src = cmd.raw if isinstance(cmd, Command) else memoryview(cmd).cast("B")
        if len(src) < SQE_SIZE:
            raise ValueError(f"a command is {SQE_SIZE} bytes, got {len(src)}")
        raw[:] = src[:SQE_SIZE]
        if admin is None:
            admin = bool(getattr(type(cmd), "ADMIN", False))
        opcode = raw[0]
        fctype = raw[4] if opcode == 0x7F else None
        cls = type(cmd) if isinstance(cmd, Command) and type(cmd).OPCODE == opcode else command_class(admin, opcode, fctype)
        data = as_buffers(data)
        meta = as_buffers(meta, name="meta")
        if direction is None:
            direction = self.default_direction(opcode) if (data or meta) else DIR_NONE
        if direction not in (DIR_NONE, DIR_TO_DEVICE, DIR_FROM_DEVICE, DIR_BIDIRECTIONAL):
            raise ValueError(f"direction must be 0, 1, 2 or 3, not {direction!r}")
        if direction in (DIR_FROM_DEVICE, DIR_BIDIRECTIONAL):
            for mv in data + meta:
                if mv.readonly:
                    raise ValueError("a read-only buffer cannot receive data from the device")
        self._setup(cls.view(raw), data, meta, direction, admin)

    @classmethod
    def prepared(cls, cmd: Command, data: list[memoryview], direction: int) -> "HostRequest":
        """A request for a command the caller built for it: ``cmd`` a typed
        view of 64 bytes of its own (its class's OPCODE is its opcode, an
        I/O command), ``data`` byte memoryviews able to take what
        ``direction`` moves.  Nothing is copied or checked -- the block
        layer's fast path, whose commands come from templates."""
        self = object.__new__(cls)
        self._setup(cmd, data, [], direction, False)
        return self

    def _setup(self, cmd: Command, data: list[memoryview], meta: list[memoryview], direction: int,
               admin: bool) -> None:
        self.cmd: Command = cmd
        self.data = data
        self.meta = meta
        self.direction = direction
        self.qid: int | None = 0 if admin else None
        self.status: Status | None = None
        self.result = 0
        self.dw1 = 0
        self.error: BaseException | None = None
        self.timeout = 0.0  # seconds; 0: no timeout
        self.deadline = 0.0
        self.retries = 0
        self.aborted = False  # an Abort was sent for the current attempt
        self.noretry = False  # complete on the first error (passthrough, admin)
        self.internal = False  # part of controller initialisation: not held back
        self.passthru = False
        self.reserved = False  # takes a reserved tag (Asynchronous Event Request)
        self.polled = False
        self.submitted_at = 0.0
        self.completed_at = 0.0
        self.queue = None  # the HostQueue it is in flight on
        self.tag = -1
        self.ctrl = None
        self.mapping = None  # the transport's data mapping (PRP lists, bounce buffers)
        self._context: dict[str, Any] | None = None  # made by the first use of ``context``
        self.traced = False  # the tracer saw this attempt's setup and not yet its completion
        self._poll: Callable[[], Any] | None = None
        # A polled queue's wait for its completions to arrive (no thread wakes us).
        self._poll_wait: Callable[[float], Any] | None = None
        self._event: threading.Event | None = None  # made by the first wait that must block
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[HostRequest], Any]] | None = None  # made by the first callback
        self._completing = False
        self._done = False

    @staticmethod
    def default_direction(opcode: int) -> int:
        """The transfer direction opcode bits 1:0 give; a command with data
        whose opcode says "no transfer" reads (as Linux's passthrough)."""
        bits = opcode & 0x3
        if bits == 0:
            return DIR_FROM_DEVICE
        return bits

    @property
    def context(self) -> dict[str, Any]:
        """A dict for the layers' own notes about this request (made when
        first asked for: most requests never need one)."""
        context = self._context
        if context is None:
            context = self._context = {}
        return context

    # -- identity ---------------------------------------------------------------

    @property
    def cid(self) -> int:
        """Command Identifier (assigned when a tag is taken)."""
        return self.cmd.cid

    @property
    def opcode(self) -> int:
        return self.cmd.opcode

    @property
    def admin(self) -> bool:
        return self.qid == 0

    @property
    def opcode_name(self) -> str:
        from ..spec.opcodes import opcode_name

        fctype = self.cmd.raw[4] if self.cmd.opcode == 0x7F else None
        return opcode_name(self.cmd.opcode, bool(self.admin), fctype)

    @property
    def nbytes(self) -> int:
        """Bytes of data the request carries."""
        return sum(mv.nbytes for mv in self.data)

    @property
    def latency(self) -> float | None:
        """Seconds from the last submission to the completion (None until done)."""
        if not self._done or not self.submitted_at:
            return None
        return self.completed_at - self.submitted_at

    # -- completion -------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    @property
    def ok(self) -> bool:
        """Done, without error."""
        return self._done and self.error is None and self.status is not None and self.status.ok

    def _begin_completion(self) -> bool:
        """Claim the right to complete this request: True for the first
        caller; every later call is refused and counted."""
        with self._lock:
            if not self._completing:
                self._completing = True
                return True
        with HostRequest._counter_lock:
            HostRequest.double_completions += 1
        ctrl = self.ctrl
        if ctrl is not None:
            ctrl.double_completions += 1
        log.error("refused a second completion of %r", self)
        return False

    def _reopen(self) -> None:
        """Between two attempts (a retry): the request is not done."""
        with self._lock:
            self._completing = False

    def _finish(self) -> None:
        """Mark done, wake waiters and run the callbacks (after
        :meth:`_begin_completion` and the result fields were set)."""
        with self._lock:
            self._done = True
            callbacks, self._callbacks = self._callbacks, None
            event = self._event
        if event is not None:
            event.set()
        for fn in callbacks or ():
            try:
                fn(self)
            except Exception:  # a caller's callback must not break the driver
                log.exception("done callback of %r failed", self)

    def _call(self, fn: Callable[["HostRequest"], Any]) -> None:
        try:
            fn(self)
        except Exception:  # a caller's callback must not break the driver
            log.exception("done callback of %r failed", self)

    def add_done_callback(self, fn: Callable[["HostRequest"], Any]) -> None:
        """Call ``fn(req)`` when the request is done (at once if it is)."""
        with self._lock:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        self._call(fn)

    def wait(self, timeout: float | None = None) -> "HostRequest":
        """Wait until done or ``timeout`` seconds passed; returns the request
        (check ``done``).  Polls the request's queue if it is a polled one."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        in_handler = getattr(threading.current_thread(), "nvme_completion_context", False)
        while not self._done:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            poll = self._poll
            if poll is None and in_handler:
                # Waiting inside a completion handler (a done callback): the
                # handler cannot also deliver this completion, so poll.
                queue = self.queue
                poll = queue.process_completions if queue is not None else None
            if poll is not None:
                try:
                    poll()
                except Exception:
                    log.exception("polling for %r", self)
                if self._done:
                    break
                poll_wait = self._poll_wait
                if poll_wait is not None:
                    # Block in the queue's own readiness wait (the socket),
                    # then poll again: the completion wakes this thread only.
                    poll_wait(_WAIT_SLICE if remaining is None else min(_WAIT_SLICE, remaining))
                    continue
                pause = _POLL_PAUSE
            else:
                pause = _WAIT_SLICE
            event = self._event
            if event is None:
                with self._lock:
                    if self._done:
                        break
                    event = self._event
                    if event is None:
                        event = self._event = threading.Event()
            event.wait(pause if remaining is None else min(pause, remaining))
        return self

    def raise_for_status(self) -> "HostRequest":
        """Raise the request's error (ControllerDeadError, or NvmeStatusError
        for a failed command); returns the request otherwise."""
        if self.error is not None:
            raise self.error
        if not self._done:
            raise NvmeHostError(f"{self!r} is not done")
        if self.status is not None and not self.status.ok:
            raise NvmeStatusError(self.status, self)
        return self

    def __await__(self):
        if not self._done:
            poll = self._poll
            if poll is not None:
                while not self._done:
                    poll = self._poll
                    if poll is None:
                        break
                    poll()
                    if self._done:
                        break
                    yield from asyncio.sleep(_POLL_PAUSE).__await__()
            if not self._done:
                loop = asyncio.get_running_loop()
                fut = loop.create_future()

                def wake(_req: HostRequest) -> None:
                    def settle() -> None:
                        if not fut.done():
                            fut.set_result(None)

                    try:
                        loop.call_soon_threadsafe(settle)
                    except RuntimeError:  # the loop is closed
                        pass

                self.add_done_callback(wake)
                while not self._done:
                    poll = self._poll
                    if poll is None:
                        yield from fut.__await__()
                        break
                    # It moved to a polled queue meanwhile: drive the polling.
                    poll()
                    if not self._done:
                        yield from asyncio.sleep(_POLL_PAUSE).__await__()
        return self

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        st = f" {self.status!r}" if self.status is not None else ""
        return f"<HostRequest {self.opcode_name} qid={self.qid} cid={self.cid:#x} {state}{st}>"
