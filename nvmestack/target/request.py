"""A command on its way through the device, the same for every transport.

The life of a request, as in Linux's nvmet (``struct nvmet_req``):

1. The transport fetches a submission queue entry and makes a
   :class:`Request` (``Controller.new_request``); the request holds its own
   copy of the 64 bytes, as a device latches an entry when it fetches it.
2. ``Controller.prepare(req)`` parses the command: it finds the handler,
   checks the opcode, namespace and fields the transport needs, and sets
   ``data_len``/``data_dir`` (and ``meta_len`` for a separate metadata
   buffer).  A command that fails here is already completed.
3. The transport maps the data: for the PCIe function a scatter list of views
   of host memory described by PRPs or SGLs; for NVMe/TCP in-capsule data or
   a buffer filled by H2CData (writes) or sent as C2HData (reads).  It
   assigns ``req.data`` (and ``req.meta``) as a list of memoryviews covering
   exactly ``data_len`` (``meta_len``) bytes.
4. ``Controller.execute(req)`` runs the command.  It completes the request
   (now, or later for Asynchronous Event Requests, delayed faults and
   background work) by calling :meth:`Request.complete`, which fills the
   completion and calls ``req.on_complete(req)`` exactly once.
"""

from __future__ import annotations

import threading
from enum import IntEnum
from typing import Any, Callable, Sequence

from ..memory import sg_gather, sg_scatter, sg_slice
from ..spec.cqe import Completion
from ..spec.layout import Struct
from ..spec.sqe import SQE_SIZE, Command
from ..spec.status import SUCCESS, Status

__all__ = ["DataDirection", "Request"]


class DataDirection(IntEnum):
    NONE = 0
    HOST_TO_CTRL = 1  # write-like: the device reads host memory
    CTRL_TO_HOST = 2  # read-like: the device writes host memory


class Request:
    __slots__ = (
        "sqe", "cmd", "sqid", "ctrl", "ns", "handler",
        "data_len", "data_dir", "meta_len", "data", "meta",
        "cqe", "status", "on_complete", "_done", "_lock", "context",
    )

    def __init__(self, sqe: Any, sqid: int, on_complete: Callable[["Request"], None] | None = None):
        raw = bytearray(SQE_SIZE)
        raw[:] = (sqe.raw if isinstance(sqe, Struct) else memoryview(sqe).cast("B"))[:SQE_SIZE]
        self.sqe = Command.view(raw)
        self.cmd: Command = self.sqe  # replaced by the typed view once parsed
        self.sqid = sqid
        self.ctrl = None
        self.ns = None
        self.handler = None
        self.data_len = 0
        self.data_dir = DataDirection.NONE
        self.meta_len = 0
        self.data: Sequence[memoryview] = ()
        self.meta: Sequence[memoryview] = ()
        self.cqe = Completion(cid=self.sqe.cid, sqid=sqid)
        self.status: Status = SUCCESS
        self.on_complete = on_complete
        self._done = False
        self._lock = threading.Lock()
        self.context: dict[str, Any] = {}

    # -- identity -------------------------------------------------------

    @property
    def admin(self) -> bool:
        return self.sqid == 0

    @property
    def cid(self) -> int:
        return self.sqe.cid

    @property
    def opcode(self) -> int:
        return self.sqe.opcode

    @property
    def done(self) -> bool:
        return self._done

    # -- data movement between the command and the transport's buffers --

    def write_data(self, data: Any, offset: int = 0) -> None:
        """Copy ``data`` into the host's buffer at ``offset`` (reads,
        Identify, Get Log Page ...).  Writing past ``data_len`` is a bug of
        the handler and raises."""
        sg_scatter(self.data, memoryview(data).cast("B"), offset)

    def read_data(self, length: int | None = None, offset: int = 0) -> bytearray:
        """A copy of ``length`` bytes of the host's buffer (small structures
        such as DSM ranges and firmware pieces; block data goes to the backend
        straight from ``req.data``)."""
        if length is None:
            length = self.data_len - offset
        out = bytearray(length)
        sg_gather(self.data, memoryview(out), offset)
        return out

    def data_views(self, offset: int, length: int) -> list[memoryview]:
        """The part ``offset``..``offset+length`` of the scatter list, as views."""
        return sg_slice(self.data, offset, length)

    def meta_views(self, offset: int, length: int) -> list[memoryview]:
        return sg_slice(self.meta, offset, length)

    # -- completion -------------------------------------------------------

    def complete(self, status: Status = SUCCESS, dw0: int | None = None, dw1: int | None = None) -> bool:
        """Complete the request once; later calls are ignored and return
        False (a request aborted while its handler still runs, for example)."""
        with self._lock:
            if self._done:
                return False
            self._done = True
        if dw0 is not None:
            self.cqe.dw0 = dw0
        if dw1 is not None:
            self.cqe.dw1 = dw1
        self.status = status
        status.apply(self.cqe)
        if self.ctrl is not None:
            self.ctrl._request_done(self)
        if self.on_complete is not None:
            self.on_complete(self)
        return True

    def cancel(self) -> None:
        """End the request without a completion (its queue is gone: controller
        reset, queue deletion, lost connection)."""
        with self._lock:
            self._done = True

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        return f"<Request sqid={self.sqid} cid={self.cid:#x} opcode={self.opcode:#04x} {state}>"
