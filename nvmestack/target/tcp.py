"""The NVMe/TCP target: the device core reached over TCP, one connection per
queue, Linux's nvmet-tcp as the model.

::

    target = TcpTarget()
    target.add_subsystem(subsystem)
    target.listen("127.0.0.1", 4420)                    # NVM subsystems + discovery
    target.listen("127.0.0.1", 8009, subsystems=())     # discovery only
    target.start()
    ...
    target.stop()

One thread, the target's event loop (epoll through :mod:`selectors`),
serves every connection: it accepts, reads each socket into its sans-I/O
:class:`~nvmestack.tcp.ControllerStream` and acts on the events: the ICReq
is answered, the first command must be Connect (admin queue: a new
controller; I/O queue: a queue of an existing one), then every command
becomes a core :class:`~nvmestack.target.request.Request` -- prepared by
the controller, its data mapped (in-capsule data, an R2T and the H2CData
that answers it, or a buffer the command fills and C2HData carries back),
executed by the core, answered with a response capsule (or with SUCCESS on
the last C2HData when SQ flow control is disabled).  Read, Write and Flush
on an I/O queue are first offered to the fast path
(:mod:`~nvmestack.target.fastpath`), which answers from prepared headers.
The answers to everything one read of the socket brought are sent together
with one ``sendmsg``; data goes out of the command's own buffers without a
copy; what the socket does not take waits for it to drain (and while a
host leaves more than a few MiB unread, its commands are not read either).
Commands that complete on other threads (deferred commands, Asynchronous
Event Requests) hand their answers to the loop.

An idle connection costs a few KiB and no thread.  Abuse is bounded: a
connection that has not sent its ICReq and Connect within
``handshake_timeout`` is closed, as is one Connect's worth of pipelined
Connects (one connection makes at most one controller or queue); a port
holds at most ``max_connections``, and at that limit or out of file
descriptors the oldest connection still in its handshake makes room for a
new one (or, with none, the listener rests a moment instead of spinning).

A protocol error ends only its own connection (after the C2HTermReq);
losing the admin queue ends the association (the other queues close, the
controller goes), and so does a Keep Alive Timeout, checked by one
watchdog thread for every controller.
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import resource
import selectors
import socket
import struct
import threading
import time
from typing import Any, Iterable

from ..spec.cqe import Completion
from ..spec.dptr import Psdt, SglDescriptor
from ..spec.fabrics import CONNECT_DATA_SIZE
from ..spec.opcodes import FABRICS_OPCODE, FabricsType, NvmOpcode
from ..spec.sqe import Command
from ..spec.status import GenericStatus, Status
from ..spec.tcp import COMMON_HEADER_SIZE, IO_PORT, DigestType, PduHeader, PduType
from ..tcp import (
    DEFAULT_MAXH2CDATA,
    SGL_IN_CAPSULE,
    SGL_TRANSPORT,
    CommandReceived,
    ConnectionClosed,
    ControllerStream,
    H2CDataReceived,
    ICReqReceived,
    ProtocolError,
    StreamState,
    TermReqReceived,
    buffers_len,
    slice_buffers,
)
from .errors import NvmeError
from .fabrics import FabricsTarget, Port, admit, fail_request
from .backend import FileSlice
from .fastpath import ENABLED as FAST_PATH_ENABLED
from .fastpath import FLUSH, READ, WRITE, FastIo
from .request import DataDirection, Request
from .subsystem import Subsystem

__all__ = ["TcpTarget", "TcpConnection", "DEFAULT_IN_CAPSULE_DATA_SIZE"]

log = logging.getLogger(__name__)

DEFAULT_IN_CAPSULE_DATA_SIZE = 16384
_RECV_SIZE = 64 * 1024
_IOV_MAX = 512
_SGL_PARAM = Command.sgl1.offset  # SGL1 in the SQE (the error log's parameter location)
_SGL_ADDRESS = _SGL_PARAM + SglDescriptor.address.offset
_SGL_LENGTH = _SGL_PARAM + SglDescriptor.length.offset
_SGL_IDENT = _SGL_PARAM + SglDescriptor.sgl_identifier.offset
_LE32 = struct.Struct("<I")
_LE64 = struct.Struct("<Q")
# Prepared PDU headers of the fast path (NVMe/TCP 1.0: C2HData and CapsuleResp
# without digests): common header, then CCCID/DATAO/DATAL, or the 16-byte CQE.
_C2H_HEAD = struct.Struct("<BBBBIHHII4x")
_RESP = struct.Struct("<BBBBIIIHHHH")
_C2H_DATA, _CAPSULE_RESP = 0x07, 0x05
_LAST_PDU, _SUCCESS = 0x04, 0x08
_FAST_FLAGS = 0x40  # FUSE 00b, PSDT 01b (SGL): the only byte 1 NVMe/TCP commands carry
_LINGER = 2.0  # seconds a terminated connection waits for the host to close
_BACKLOG = 4 << 20  # output bytes a connection may have queued before we stop reading its commands
_ACCEPT_REST = 0.1  # seconds a listener rests at the connection limit or without file descriptors
_IDLE_TICK = 1.0  # the event loop wakes at least this often
_LISTEN_BACKLOG = 1024  # connections the kernel holds for accept (capped by net.core.somaxconn)
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds a new connection has to send its ICReq and Connect."""
_HANDSHAKE_PDUS = frozenset(int(t) for t in (PduType.ICREQ, PduType.CAPSULE_CMD, PduType.H2C_DATA))
_PLEN = PduHeader.plen.offset
_HLEN = PduHeader.hlen.offset
# I/O commands that never change what a worker's fast path may do (see
# WorkerPool.after_command; Write Uncorrectable, for one, does).
_KEEPS_IO_STATE = frozenset(int(op) for op in (
    NvmOpcode.READ, NvmOpcode.WRITE, NvmOpcode.FLUSH, NvmOpcode.COMPARE, NvmOpcode.WRITE_ZEROES,
    NvmOpcode.DATASET_MANAGEMENT, NvmOpcode.VERIFY))
FAST_PATH = FAST_PATH_ENABLED
"""Whether targets use the I/O fast path unless told (``NVMESTACK_FAST_PATH=0``:
every command on the general path, to compare the two)."""
WORKERS = int(os.environ.get("NVMESTACK_WORKERS", "0") or 0)
"""Worker processes of a target unless told (``NVMESTACK_WORKERS=N``: to run
a test suite with them; ``serve --workers``)."""


class _Write:
    """A write waiting for its H2CData."""

    __slots__ = ("req", "views", "bad", "connect", "sqe", "forward")

    def __init__(self, req: Any, connect: bool = False, sqe: bytes | None = None, forward: bool = False):
        self.req = req  # None for a fast-path write (its command is ``sqe``) and a forwarded one
        self.views: list[memoryview] = []
        self.bad = False
        self.connect = connect
        self.sqe = sqe
        self.forward = forward  # a worker process collects the data for the main process (workers.py)


class _ConnectRequest:
    """Stands in for a request while a Connect waits for its data."""

    __slots__ = ("sqe", "cid")

    def __init__(self, sqe: memoryview, cid: int):
        self.sqe = bytes(sqe)
        self.cid = cid


class _GeneralPath:
    """The general path of one queue's commands: the core's Request,
    prepared, its data mapped (in-capsule, or asked for with an R2T), run,
    answered.  :class:`TcpConnection` runs it for the queues it serves
    itself; with worker processes (``workers.py``) the main process runs it
    for the commands a worker forwards, with the same code.  A subclass
    supplies ``target``, ``ctrl``, ``qid``, ``_writes``, ``_dead`` and the two
    transport steps: :meth:`_ask_data` (an R2T) and :meth:`_answer` (the
    completion, with the data the command read)."""

    target: Any
    ctrl: Any
    qid: int | None
    _writes: dict
    _dead: bool

    def _general_command(self, sqe: Any, data: memoryview | None, digest_error: bool, conflict: bool) -> None:
        """Run one command on the general path; ``conflict``: a fast-path
        write with the same identifier waits for its data."""
        ctrl = self.ctrl
        # Any command is a sign of life, as in Linux's nvmet (traffic based
        # keep alive): a busy host is never timed out between Keep Alives.
        ctrl.last_keep_alive = time.monotonic()
        req = ctrl.new_request(sqe, self.qid, self._on_complete)
        if conflict:
            fail_request(req, NvmeError(GenericStatus.COMMAND_ID_CONFLICT))
            return
        if not self._admitted(req, digest_error):
            return
        err = self._map(req, sqe, data)
        if err is not None:
            fail_request(req, err)
        elif req.cid not in self._writes:
            ctrl.execute(req)

    def _admitted(self, req: Request, digest_error: bool) -> bool:
        """The transport's checks (Fabrics admission, a damaged capsule) and
        the core's prepare; False when the command already failed."""
        err = admit(self.ctrl, req)
        if err is None and digest_error:
            err = NvmeError(GenericStatus.TRANSIENT_TRANSPORT_ERROR, dnr=False, msg="data digest error")
        if err is not None:
            fail_request(req, err)
            return False
        return self.ctrl.prepare(req)

    def _map(self, req: Request, sqe: Any, data: memoryview | None) -> NvmeError | None:
        """Give the request its data: in-capsule data, a buffer to fill, or
        an R2T (the command runs when the H2CData is in)."""
        n = req.data_len
        if req.meta_len:
            return NvmeError(GenericStatus.INVALID_FIELD, param=16, msg="no separate metadata over fabrics")
        if n and req.sqe.psdt != Psdt.SGL_MPTR_CONTIGUOUS:
            return NvmeError(GenericStatus.INVALID_FIELD, param=1, bit=6, msg="PSDT must select SGLs (01b)")
        ident = sqe[_SGL_IDENT]
        length = _LE32.unpack_from(sqe, _SGL_LENGTH)[0]
        if data is not None:
            if ident != SGL_IN_CAPSULE:
                return NvmeError(GenericStatus.INVALID_FIELD, param=_SGL_PARAM, msg="in-capsule data without its SGL")
            if req.data_dir != DataDirection.HOST_TO_CTRL:
                return NvmeError(GenericStatus.INVALID_FIELD, param=_SGL_PARAM, msg="in-capsule data for a read")
            offset = _LE64.unpack_from(sqe, _SGL_ADDRESS)[0]
            if offset >= data.nbytes:
                return NvmeError(GenericStatus.SGL_OFFSET_INVALID, param=_SGL_PARAM)
            if offset + length > data.nbytes or length < n:
                return NvmeError(GenericStatus.DATA_SGL_LENGTH_INVALID, param=_SGL_PARAM)
            req.data = [data[offset : offset + n]]
            return None
        if not n:
            req.data = []
            return None
        if ident != SGL_TRANSPORT:
            if ident == SGL_IN_CAPSULE:
                return NvmeError(GenericStatus.DATA_SGL_LENGTH_INVALID, param=_SGL_PARAM,
                                 msg="in-capsule SGL without in-capsule data")
            return NvmeError(GenericStatus.SGL_DESCRIPTOR_TYPE_INVALID, param=_SGL_PARAM)
        if length < n:
            return NvmeError(GenericStatus.DATA_SGL_LENGTH_INVALID, param=_SGL_PARAM,
                             msg=f"SGL of {length} bytes for a {n}-byte transfer")
        if req.data_dir == DataDirection.HOST_TO_CTRL:
            self._writes[req.cid] = _Write(req)
            self._ask_data(req.cid, n)
            return None
        req.data = [memoryview(bytearray(n))]
        return None

    def _data_in(self, write: _Write) -> None:
        """The H2CData of a general-path write is in: run it."""
        req = write.req
        if write.bad:
            fail_request(req, NvmeError(GenericStatus.TRANSIENT_TRANSPORT_ERROR, dnr=False, msg="data digest error"))
            return
        req.data = write.views
        self.ctrl.execute(req)

    def _general_write(self, sqe: Any, views: list, bad: bool) -> None:
        """A write the fast path asked the data for but then declined (the
        namespace changed meanwhile, a fault was armed, a digest error):
        the general path runs it with the data that came."""
        ctrl = self.ctrl
        req = ctrl.new_request(sqe, self.qid, self._on_complete)
        if not self._admitted(req, bad):
            return
        if req.meta_len or req.data_dir != DataDirection.HOST_TO_CTRL or buffers_len(views) < req.data_len:
            fail_request(req, NvmeError(GenericStatus.DATA_SGL_LENGTH_INVALID, param=_SGL_PARAM,
                                        msg="the format changed under the write"))
            return
        req.data = slice_buffers(views, 0, req.data_len)
        ctrl.execute(req)

    def _on_complete(self, req: Request) -> None:
        if self._dead:
            return
        data = None
        if req.data_dir == DataDirection.CTRL_TO_HOST and req.data_len and req.data and req.status.ok:
            data = req.data
        cancel = False
        if data is None:
            write = self._writes.get(req.cid)
            if write is not None and write.req is req:
                # Completed (aborted, reset) before its data came.
                del self._writes[req.cid]
                cancel = True
        pool = self.target._pool
        if pool is not None:
            # What a worker's fast path may do can have changed (a namespace,
            # the write cache, a reset, Write Uncorrectable...): the workers
            # look again before their next batch.  Before the host can learn
            # of the change.
            pool.after_command(self, req)
        self._answer(req.cid, req.cqe, data, cancel, bool(req.context.get("disconnect")))

    def _ask_data(self, cid: int, length: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _answer(self, cid: int, cqe: Any, data: list | None, cancel: bool, disconnect: bool) -> None:
        raise NotImplementedError  # pragma: no cover - abstract


class TcpConnection(_GeneralPath):
    """One TCP connection: one queue once Connect succeeded.

    Driven by its target's event loop (:class:`_EventLoop`): the loop calls
    :meth:`_readable` when the socket has data and :meth:`_writable` when
    output that did not fit the socket buffer can go on.  Other threads
    (completions of deferred commands, Asynchronous Event Requests, the keep
    alive watchdog) hand their PDUs to :meth:`_send`, which passes them to
    the loop; :meth:`abort` closes the connection from anywhere."""

    def __init__(self, target: "TcpTarget", sock: socket.socket, port: Port, peer: Any):
        self.target = target
        self.sock = sock
        self.port = port
        self.peer = peer
        try:
            self.local_addr = sock.getsockname()[0]
        except OSError:
            self.local_addr = ""
        self.stream = ControllerStream(
            cpda=target.cpda,
            maxh2cdata=target.maxh2cdata,
            max_icd=target.in_capsule_data_size,
            digests=target.digests,
            max_c2h_data=target.max_c2h_data,
        )
        self.ctrl = None
        self.qid: int | None = None
        self.sqsize = 0
        self.sqflow_disabled = False
        self._sqhd = 0
        self._writes: dict[int, _Write] = {}
        self._connecting = False  # a Connect waits for its data
        self._out: list = []  # PDUs of this loop iteration (loop thread only)
        self._xout: list = []  # PDUs from other threads (under _send_lock)
        self._send_lock = threading.Lock()
        self._pending: list = []  # what the socket did not take yet
        self._reading = True  # the loop watches for input (off while output is backed up)
        self._dead = False
        self._close_after_flush = False
        self._linger_until: float | None = None
        # ICReq and Connect must come within the handshake timeout.
        self.deadline: float | None = time.monotonic() + target.handshake_timeout
        self._closed = threading.Event()
        self.fast: FastIo | None = None  # an I/O queue's fast path, once connected
        self._fast_now: FastIo | None = None  # the fast path, for this batch
        self._c2h_pdo = 0  # PDO of the C2HData we send (HPDA); 0: send through the stream's builders
        # With worker processes, the handshake is read one PDU at a time, so
        # that nothing past an I/O queue's Connect is ever read here: what
        # follows stays in the socket for the worker it is handed to.
        self._exact = target._pool is not None
        self._pdu_head = bytearray()
        self._pdu_left = 0
        self._hand_off = False  # an I/O queue's Connect succeeded: the socket goes to a worker

    # -- life ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection is closed and its queue released."""
        return self._closed.wait(timeout)

    def abort(self) -> None:
        """Close the connection now (from any thread; the loop cleans up)."""
        self._dead = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.target._loop.poke(self)

    def terminate(self, fes: int, fei: int = 0) -> None:
        """End the connection with a C2HTermReq (from any thread): the queue
        is released and the host gets a moment to read it and close."""
        self._send(self.stream.terminate(fes, fei))  # the loop sees the stream ended and lingers

    def _readable(self) -> None:
        """The loop saw input: read once, act on the events, send the answers."""
        if self._linger_until is not None:
            self._drain_linger()
            return
        stream = self.stream
        buf = stream.recv_buffer(_RECV_SIZE)
        try:
            if self._exact:
                n = self._recv_pdu(buf)
            else:
                n = self.sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        events = stream.received_into(n)
        fast = self.fast
        if fast is not None and fast.ready():
            self._fast_now = fast
            start = time.monotonic()
            # Any command is a sign of life (see _command): once a batch.
            fast.ctrl.last_keep_alive = start
            try:
                for event in events:
                    self._handle(event)
            finally:
                self._fast_now = None
                fast.busy(time.monotonic() - start)
        else:
            for event in events:
                self._handle(event)
        self._flush()
        if self._dead:
            self._close()
        elif stream.state is StreamState.ERROR:
            self._release_queue()
            self._begin_linger()
        elif stream.closed or self._close_after_flush:
            self._close_when_sent()
        elif self._hand_off:
            self._hand_off = False
            self.target._pool.hand_off(self)

    def _recv_pdu(self, buf: memoryview) -> int:
        """Receive no more than the rest of the current PDU (the handshake
        of a target with worker processes).  What cannot be a handshake PDU
        is read as without workers (the stream ends the connection)."""
        if self._pdu_left:
            n = self.sock.recv_into(buf, min(self._pdu_left, len(buf)))
            self._pdu_left -= n
            return n
        peek = self.sock.recv(len(buf), socket.MSG_PEEK)
        if not peek:
            return self.sock.recv_into(buf)  # the end (or the error)
        head = self._pdu_head  # a common header begun in an earlier read
        seen = head + peek
        take = len(peek)
        if len(seen) < COMMON_HEADER_SIZE:
            self._pdu_head = seen
        else:
            self._pdu_head = bytearray()
            plen = _LE32.unpack_from(seen, _PLEN)[0]
            if seen[0] in _HANDSHAKE_PDUS and COMMON_HEADER_SIZE <= seen[_HLEN] <= plen:
                rest = plen - len(head)
                take = min(rest, len(peek))
                self._pdu_left = rest - take
        n = self.sock.recv_into(buf, take)
        self._pdu_left += take - n
        return n

    def _release_queue(self) -> None:
        if self.fast is not None:
            self.fast.close()
            self.fast = self._fast_now = None
        ctrl, self.ctrl = self.ctrl, None
        if ctrl is not None:
            self.target.queue_closed(ctrl, self.qid, self)

    def _begin_linger(self) -> None:
        """After a TermReq: let the host read it and close first (closing
        with unread input would reset the connection and could lose it)."""
        self._linger_until = time.monotonic() + _LINGER
        if not self._pending:
            self._shutdown_write()
        self.target._loop.timer(self._linger_until)

    def _shutdown_write(self) -> None:
        """Our side is done sending (the TermReq went out)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _drain_linger(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close()

    def _close_when_sent(self) -> None:
        self._close_after_flush = True
        if not self._pending:
            self._close()

    def _expired(self, now: float) -> bool:
        """The loop's timer check: True when the connection was closed."""
        if self._linger_until is not None and now >= self._linger_until:
            self._close()
            return True
        if self.deadline is not None and now >= self.deadline:
            log.info("NVMe/TCP connection from %s: no %s within %.0f s, closed", self.peer,
                     "Connect" if self.stream.live else "ICReq", self.target.handshake_timeout)
            self._close()
            return True
        return False

    def _close(self) -> None:
        """Release everything (loop thread)."""
        if self._closed.is_set():
            return
        self._dead = True
        for write in self._writes.values():
            if write.req is not None and not write.connect:
                write.req.cancel()
        self._writes.clear()
        try:
            self._release_queue()
        except Exception:  # a bug must not take the target down
            log.exception("NVMe/TCP connection from %s: releasing its queue failed", self.peer)
        self.target._loop.forget(self)
        self._close_socket()
        _release_slices(self._pending)
        _release_slices(self._out)
        self._pending = []
        self._out = []
        self.target._connection_done(self)
        self._closed.set()

    def _close_socket(self) -> None:
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass

    # -- sending ---------------------------------------------------------------------

    def _send(self, bufs: list) -> None:
        """Queue PDUs for the host (from any thread)."""
        if not bufs or self._dead:
            return
        loop = self.target._loop
        if loop.in_loop():
            self._out.extend(bufs)
            loop.dirty.add(self)
        else:
            with self._send_lock:
                self._xout.extend(bufs)
            loop.poke(self)

    def _flush(self) -> None:
        """Send what this iteration produced (loop thread)."""
        out = self._out
        if self._xout:
            with self._send_lock:
                out.extend(self._xout)
                self._xout = []
        if not out:
            return
        self._out = []
        if self._dead:
            _release_slices(out)
            return
        if self._pending:
            self._pending.extend(out)
        else:
            self._pending = self._write(out)
            if self._pending:
                self.target._loop.want_write(self, True)
        if self._reading and self._pending and _buffered(self._pending) > _BACKLOG:
            # The host does not read what it asked for: stop reading its
            # commands until it does (its own send buffer holds the rest).
            self._reading = False
            self.target._loop.want_read(self, False)

    def _flushed(self) -> None:
        """After the loop flushed what other threads (or handlers) queued."""
        if self._dead:
            self._close()
        elif self.stream.state is StreamState.ERROR and self._linger_until is None:
            self._release_queue()  # we terminated it (TcpConnection.terminate)
            self._begin_linger()
        elif self._close_after_flush and self._linger_until is None:
            self._close_when_sent()

    def _writable(self) -> None:
        """The socket takes more output (loop thread)."""
        self._pending = self._write(self._pending)
        if not self._pending:
            self.target._loop.want_write(self, False)
            if not self._reading:
                self._reading = True
                self.target._loop.want_read(self, True)
            if self._linger_until is not None:
                self._shutdown_write()
            elif self._close_after_flush:
                self._close()

    def _write(self, bufs: list) -> list:
        """Send as much of ``bufs`` as the socket takes now; the rest.  A
        :class:`~nvmestack.target.backend.FileSlice` among them goes with
        ``sendfile`` (file to socket in the kernel)."""
        try:
            while bufs:
                slice_at = _first_slice(bufs)
                if slice_at == 0:
                    bufs[0].send(self.sock)  # all of it, or BlockingIOError with the rest left in it
                    bufs = bufs[1:]
                    continue
                chunk = bufs[:min(slice_at, _IOV_MAX)]
                sent = self.sock.sendmsg(chunk)
                i = 0
                for buf in chunk:
                    size = buf.nbytes if type(buf) is memoryview else len(buf)
                    if sent < size:
                        break
                    sent -= size
                    i += 1
                bufs = bufs[i:]
                if sent:
                    bufs[0] = memoryview(bufs[0]).cast("B")[sent:]
        except (BlockingIOError, InterruptedError):
            return bufs
        except OSError:
            self._dead = True
            self.target._loop.poke(self)
            _release_slices(bufs)
            return []
        return bufs

    # -- events ----------------------------------------------------------------------

    def _handle(self, event: Any) -> None:
        kind = type(event)
        if kind is CommandReceived:
            self._command(event)
        elif kind is H2CDataReceived:
            self._h2c(event)
        elif kind is ICReqReceived:
            self._send(event.reply)
        elif kind is ProtocolError:
            log.warning("NVMe/TCP protocol error from %s: %s (FES %#x, FEI %d)", self.peer, event.message,
                        event.fes, event.fei)
            if event.term:
                self._send(event.term)
            self._close_after_flush = True
        elif kind is TermReqReceived:
            log.warning("NVMe/TCP host %s terminated the connection: FES %#x FEI %d", self.peer, event.fes, event.fei)
            self._close_after_flush = True
        elif kind is ConnectionClosed:
            self._close_after_flush = True

    def _command(self, ev: CommandReceived) -> None:
        if self.qid is not None:
            self._sqhd = (self._sqhd + 1) % (self.sqsize + 1)
        ctrl = self.ctrl
        if ctrl is None:
            self._connect(ev)
            return
        if self._fast_now is not None and self._fast_command(ev):
            return
        pending = self._writes.get(ev.cid)
        # A fast-path write with this identifier waiting for its data is a conflict.
        self._general_command(ev.sqe, ev.data, ev.data_digest_error, pending is not None and pending.sqe is not None)

    def _fast_command(self, ev: CommandReceived) -> bool:
        """Offer the command to the fast path (fastpath.py); True when it
        ran there and its answer is on its way.  Declined commands go on to
        the general path untouched."""
        sqe = ev.sqe
        if sqe[1] != _FAST_FLAGS or ev.data_digest_error or ev.cid in self._writes:
            return False
        fast = self._fast_now
        opcode = sqe[0]
        if opcode == READ:
            if ev.data is not None or sqe[_SGL_IDENT] != SGL_TRANSPORT:
                return False
            data = fast.read(sqe, _LE32.unpack_from(sqe, _SGL_LENGTH)[0], zero_copy=self._c2h_pdo != 0)
            if data is None:
                return False
            self._read_done(ev.cid, data)
            return True
        if opcode == WRITE:
            data = ev.data
            if data is None:
                # The data comes with H2CData: ask for it (R2T); the write
                # runs when it is in (_h2c).
                if sqe[_SGL_IDENT] != SGL_TRANSPORT:
                    return False
                length = fast.write_length(sqe)
                if length is None or length > _LE32.unpack_from(sqe, _SGL_LENGTH)[0]:
                    return False
                self._writes[ev.cid] = _Write(None, sqe=bytes(sqe))
                self._out.extend(self.stream.r2t(ev.cid, 0, length))
                return True
            if sqe[_SGL_IDENT] != SGL_IN_CAPSULE or _LE64.unpack_from(sqe, _SGL_ADDRESS)[0]:
                return False
            length = _LE32.unpack_from(sqe, _SGL_LENGTH)[0]
            if length > data.nbytes or not fast.write(sqe, data[:length]):
                return False
        elif opcode == FLUSH:
            if ev.data is not None or not fast.flush(sqe):
                return False
        else:
            return False
        self._success(ev.cid)
        return True

    def _success(self, cid: int) -> None:
        """The response capsule of a command that succeeded with DW0/DW1 0."""
        if self._c2h_pdo:
            self._out.append(_RESP.pack(_CAPSULE_RESP, 0, 24, 0, 24, 0, 0,
                                         0xFFFF if self.sqflow_disabled else self._sqhd, self.qid, cid, 0))
        else:
            cqe = Completion(cid=cid, sqid=self.qid, sqhd=0xFFFF if self.sqflow_disabled else self._sqhd)
            self._out.extend(self.stream.response(cqe))

    def _read_done(self, cid: int, data) -> None:
        """C2HData (and the response, unless SQ flow control is off) of a
        read that succeeded."""
        n = len(data)
        pdo = self._c2h_pdo
        max_c2h = self.stream.max_c2h_data
        if type(data) is FileSlice and max_c2h is not None and n > max_c2h:
            data = data.read()  # cut into PDUs by the stream's builder
        if not pdo or (max_c2h is not None and n > max_c2h):
            self._out.extend(self.stream.c2h_data(cid, [data], last=True, success=self.sqflow_disabled))
            if not self.sqflow_disabled:
                self._success(cid)
            return
        out = self._out
        flags = _LAST_PDU | _SUCCESS if self.sqflow_disabled else _LAST_PDU
        out.append(_C2H_HEAD.pack(_C2H_DATA, flags, 24, pdo, pdo + n, cid, 0, 0, n))
        if pdo > 24:
            out.append(bytes(pdo - 24))
        out.append(data)
        if not self.sqflow_disabled:  # the response _success builds, inline on the hot path
            out.append(_RESP.pack(_CAPSULE_RESP, 0, 24, 0, 24, 0, 0, self._sqhd, self.qid, cid, 0))

    def _h2c(self, ev: H2CDataReceived) -> None:
        write = self._writes.get(ev.cid)
        if write is None:  # pragma: no cover - the stream only accepts data it asked for
            return
        write.views.append(ev.data)
        write.bad = write.bad or ev.digest_error
        if not ev.r2t_done:
            return
        del self._writes[ev.cid]
        if write.connect:
            self._finish_connect(write.req, write.views, write.bad)
            return
        if write.sqe is not None:
            fast = self._fast_now
            if not write.bad and fast is not None and fast.write(write.sqe, write.views):
                self._success(ev.cid)
            else:  # the fast path declines it now: the general path, with the data in hand
                self._general_write(write.sqe, write.views, write.bad)
            return
        if write.forward:
            self._forward_data(ev.cid, write)
            return
        self._data_in(write)

    def _forward_data(self, cid: int, write: "_Write") -> None:  # pragma: no cover - workers.py overrides
        raise NotImplementedError

    def _ask_data(self, cid: int, length: int) -> None:
        self._send(self.stream.r2t(cid, 0, length))

    def _answer(self, cid: int, cqe: Any, data: list | None, cancel: bool, disconnect: bool) -> None:
        """The completion of a general-path command (and the data it read)."""
        cqe.sqid = self.qid
        cqe.sqhd = 0xFFFF if self.sqflow_disabled else self._sqhd
        stream = self.stream
        if data is not None:
            success = self.sqflow_disabled and not cqe.dw0 and not cqe.dw1
            out = stream.c2h_data(cid, data, last=True, success=success)
            if not success:
                out.extend(stream.response(cqe))
        else:
            if cancel:
                stream.cancel_transfers(cid)
            out = stream.response(cqe)
        if disconnect:
            self._close_after_flush = True  # before the answer goes: the loop closes once it is sent
        self._send(out)

    # -- Connect ---------------------------------------------------------------------

    def _reply(self, cid: int, status: Status, dw0: int = 0, sqid: int = 0) -> None:
        cqe = Completion(cid=cid, sqid=sqid, sqhd=0xFFFF if self.sqflow_disabled else self._sqhd)
        cqe.dw0 = dw0
        status.apply(cqe)
        self._send(self.stream.response(cqe))

    def _connect(self, ev: CommandReceived) -> None:
        sqe = ev.command
        if self._connecting:
            # One Connect per connection: while one waits for its data, any
            # other command (a second Connect included) is out of sequence.
            self._reply(ev.cid, GenericStatus.COMMAND_SEQUENCE_ERROR.status(dnr=True))
            return
        if sqe.opcode != FABRICS_OPCODE or sqe.nsid & 0xFF != FabricsType.CONNECT:
            self._reply(ev.cid, GenericStatus.COMMAND_SEQUENCE_ERROR.status(dnr=True))
            return
        if ev.cid in self._writes:
            self._reply(ev.cid, GenericStatus.COMMAND_ID_CONFLICT.status(dnr=True))
            return
        if ev.data_digest_error:
            self._reply(ev.cid, GenericStatus.TRANSIENT_TRANSPORT_ERROR.status())
            return
        sgl = ev.sgl
        pending = _ConnectRequest(ev.sqe, ev.cid)
        if ev.data is not None:
            if sgl.sgl_identifier != SGL_IN_CAPSULE or sgl.address + CONNECT_DATA_SIZE > ev.data.nbytes:
                self._reply(ev.cid, GenericStatus.DATA_SGL_LENGTH_INVALID.status(dnr=True))
                return
            self._finish_connect(pending, [ev.data[sgl.address : sgl.address + CONNECT_DATA_SIZE]], False)
            return
        if sgl.sgl_identifier != SGL_TRANSPORT or sgl.length < CONNECT_DATA_SIZE:
            self._reply(ev.cid, GenericStatus.DATA_SGL_LENGTH_INVALID.status(dnr=True))
            return
        self._writes[ev.cid] = _Write(pending, connect=True)
        self._connecting = True
        self._send(self.stream.r2t(ev.cid, 0, CONNECT_DATA_SIZE))

    def _finish_connect(self, pending: _ConnectRequest, views: list[memoryview], bad: bool) -> None:
        self._connecting = False
        if self.ctrl is not None:  # pragma: no cover - _command sends nothing here once connected
            self._reply(pending.cid, GenericStatus.COMMAND_SEQUENCE_ERROR.status(dnr=True))
            return
        if bad:
            self._reply(pending.cid, GenericStatus.TRANSIENT_TRANSPORT_ERROR.status())
            return
        data = b"".join(bytes(v) for v in views) if len(views) > 1 else views[0]
        outcome = self.target.connect(self.port, pending.sqe, data, self, local_addr=self.local_addr)
        if not outcome.ok:
            log.info("Connect from %s refused: %s (%s)", self.peer, outcome.status, outcome.message)
            self._reply(pending.cid, outcome.status, outcome.dw0)
            return
        self.ctrl = outcome.ctrl
        self.qid = outcome.qid
        self.sqsize = outcome.sqsize
        self.sqflow_disabled = outcome.sqflow_disabled
        self._sqhd = 1 % (self.sqsize + 1)
        self.deadline = None  # the handshake is over
        self._exact = False
        if self.qid and self.target._pool is not None:
            # An I/O queue: once the answer is out, a worker process serves it.
            self._hand_off = True
        elif self.qid:
            self._serve_io_queue(self.ctrl, self.target.fast_path)
        self._reply(pending.cid, outcome.status, outcome.dw0, sqid=self.qid)

    def _serve_io_queue(self, ctrl: Any, fast_path: bool, fast_io: type = FastIo) -> None:
        """This connection serves I/O queue ``qid`` of ``ctrl`` itself: its
        fast path (``fast_io``), and prepared C2HData headers without digests."""
        if not fast_path:
            return
        self.fast = fast_io(ctrl, self.qid)
        stream = self.stream
        if not stream.hdgst and not stream.ddgst:
            align = (stream.tx_pda + 1) * 4
            self._c2h_pdo = -(-24 // align) * align

    def __repr__(self) -> str:
        ctrl = f" ctrl {self.ctrl.cntlid} qid {self.qid}" if self.ctrl is not None else ""
        return f"<TcpConnection {self.peer}{ctrl}>"


class TcpTarget(FabricsTarget):
    """An NVMe/TCP target: ports, subsystems, connections (see the module
    docstring).

    ``cpda``, ``maxh2cdata``, ``digests`` (which digests hosts may have),
    ``in_capsule_data_size`` (IOCCSZ) and ``max_c2h_data`` (cut C2HData
    PDUs at this size; ``None``: one PDU per command) tune the transport;
    ``fast_path`` (default :data:`FAST_PATH`) lets I/O queues use
    :mod:`~nvmestack.target.fastpath`; ``workers`` (default :data:`WORKERS`, 0: none) serves
    every I/O queue in one of that many worker processes
    (:mod:`~nvmestack.target.workers`);
    other keywords (``mqes``, ``mdts``) go to every controller."""

    def __init__(
        self,
        subsystems: Iterable[Subsystem] = (),
        *,
        cpda: int = 0,
        maxh2cdata: int = DEFAULT_MAXH2CDATA,
        digests: DigestType = DigestType.HDGST_ENABLE | DigestType.DDGST_ENABLE,
        in_capsule_data_size: int = DEFAULT_IN_CAPSULE_DATA_SIZE,
        max_c2h_data: int | None = None,
        fast_path: bool | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_connections: int | None = None,
        workers: int | None = None,
        **controller_options: Any,
    ):
        workers = WORKERS if workers is None else workers
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, not {workers}")
        self._pool = None  # the worker processes (workers.py), made below
        super().__init__(in_capsule_data_size=in_capsule_data_size, **controller_options)
        self.cpda = cpda
        self.maxh2cdata = maxh2cdata
        self.digests = digests
        self.max_c2h_data = max_c2h_data
        # Read/Write/Flush on I/O queues take the fast path when they can
        # (fastpath.py); False runs every command on the general path.
        self.fast_path = FAST_PATH if fast_path is None else fast_path
        self.workers = workers
        if workers:
            from .workers import WorkerPool

            self._pool = WorkerPool(self, workers)
        for sub in subsystems:
            self.add_subsystem(sub)
        self._listeners: dict[socket.socket, Port] = {}
        self._connections: set[TcpConnection] = set()
        self._conn_lock = threading.Lock()
        # Abuse limits: a connection must send its ICReq and Connect within
        # handshake_timeout seconds; a port holds at most max_connections.
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections or _default_max_connections()
        self._port_connections: dict[int, int] = {}
        self._fd_warned = False
        self._loop = _EventLoop(self)
        self._stopping = threading.Event()
        self._keep_alive_changed = threading.Event()
        self._started = False
        self._threads: list[threading.Thread] = []

    # -- ports -------------------------------------------------------------------------

    def listen(self, addr: str = "127.0.0.1", port: int = IO_PORT, *, subsystems: Iterable[str] | None = None,
               portid: int = 0) -> Port:
        """Listen on ``addr``:``port`` (0: any free port; the Port says which)
        exposing ``subsystems`` (NQNs; ``None``: all, ``()``: discovery only),
        as port ``portid`` of the discovery log (0: the next free one)."""
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((addr, port))
            sock.listen(_LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        bound = sock.getsockname()[1]
        entry = Port(addr, str(bound), portid=portid, subsystems=None if subsystems is None else set(subsystems))
        self.add_port(entry)
        with self._conn_lock:
            self._listeners[sock] = entry
        self._loop.register_listener(sock, entry)
        return entry

    def unlisten(self, port: Port) -> None:
        """Stop listening on ``port``; its associations end."""
        with self._conn_lock:
            socks = [s for s, p in self._listeners.items() if p is port]
            for s in socks:
                del self._listeners[s]
        for s in socks:
            self._loop.unregister_listener(s)
            s.close()
        self.remove_port(port)

    def address(self, port: Port) -> tuple[str, int]:
        return port.traddr, int(port.trsvcid)

    # -- running -----------------------------------------------------------------------

    def add_subsystem(self, subsystem: Subsystem) -> Subsystem:
        super().add_subsystem(subsystem)
        if self._pool is not None:
            self._pool.watch(subsystem)
        return subsystem

    def start(self) -> "TcpTarget":
        if self._started:
            return self
        self._started = True
        self._loop.start()
        if self._pool is not None:
            self._pool.start()
        thread = threading.Thread(target=self._keep_alive_loop, name="nvmet keep-alive", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, close every connection, end every association."""
        self._stopping.set()
        self._keep_alive_changed.set()
        if self._pool is not None:
            self._pool.stop(timeout)  # while the loop still runs: the workers' last words arrive
        self._loop.stop(timeout)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        with self._conn_lock:
            listeners = list(self._listeners)
            self._listeners.clear()
        for sock in listeners:
            sock.close()
        self.close()
        self._started = False
        self._loop = _EventLoop(self)  # a fresh one, should the target start again

    def __enter__(self) -> "TcpTarget":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def worker_pids(self) -> list[int]:
        """The process IDs of the live worker processes (none without workers)."""
        return self._pool.pids() if self._pool is not None else []

    @property
    def connections(self) -> list[TcpConnection]:
        with self._conn_lock:
            return list(self._connections)

    def _accept(self, listener: socket.socket, port: Port) -> None:
        """Take the connections waiting on ``listener`` (loop thread).  At
        the connection limit, or out of file descriptors, the oldest
        connection still in its handshake makes room; with none, the
        listener rests a moment instead of spinning."""
        for _ in range(64):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if not self._evict(None):
                        if not self._fd_warned:
                            self._fd_warned = True
                            log.warning("NVMe/TCP target: out of file descriptors (%s); not accepting for a moment",
                                        exc.strerror)
                        self._loop.rest(listener)
                        return
                    continue
                return
            if self._port_connections.get(id(port), 0) >= self.max_connections and not self._evict(port):
                log.info("NVMe/TCP connection from %s refused: port %s holds %d connections", peer, port.portid,
                         self.max_connections)
                sock.close()
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover
                pass
            conn = TcpConnection(self, sock, port, peer)
            with self._conn_lock:
                if self._stopping.is_set():
                    sock.close()
                    return
                self._connections.add(conn)
                self._port_connections[id(port)] = self._port_connections.get(id(port), 0) + 1
            self._loop.add(conn)

    def _evict(self, port: Port | None) -> bool:
        """Close the oldest connection (of ``port``) that has no queue yet."""
        victim = self._loop.oldest_handshake(port)
        if victim is None:
            return False
        log.info("NVMe/TCP connection from %s closed in its handshake to make room", victim.peer)
        victim._close()
        return True

    def _connection_done(self, conn: TcpConnection) -> None:
        with self._conn_lock:
            if conn in self._connections:
                self._connections.discard(conn)
                key = id(conn.port)
                left = self._port_connections.get(key, 1) - 1
                if left:
                    self._port_connections[key] = left
                else:
                    self._port_connections.pop(key, None)

    def connect(self, *args: Any, **kwargs: Any):
        outcome = super().connect(*args, **kwargs)
        if outcome.ok and outcome.qid == 0:
            self._keep_alive_changed.set()  # a new Keep Alive Timer to watch
        return outcome

    def expire_keep_alive(self, now: float | None = None):
        if self._pool is not None:
            self._pool.collect_traffic()  # the workers' I/O counts as a sign of life too
        return super().expire_keep_alive(now)

    def next_keep_alive_deadline(self) -> float | None:
        if self._pool is not None:
            self._pool.collect_traffic()
        return super().next_keep_alive_deadline()

    def _keep_alive_loop(self) -> None:
        while not self._stopping.is_set():
            self.expire_keep_alive()
            deadline = self.next_keep_alive_deadline()
            wait = 1.0 if deadline is None else min(1.0, max(0.01, deadline - time.monotonic() + 0.005))
            self._keep_alive_changed.wait(wait)
            self._keep_alive_changed.clear()


def _buffered(bufs: list) -> int:
    return sum(b.nbytes if type(b) is memoryview else len(b) for b in bufs)


def _first_slice(bufs: list) -> int:
    """Index of the first FileSlice in ``bufs`` (len(bufs) when none)."""
    for i, buf in enumerate(bufs):
        if type(buf) is FileSlice:
            return i
    return len(bufs)


def _release_slices(bufs: list) -> None:
    for buf in bufs:
        if type(buf) is FileSlice:
            buf.release()


def _default_max_connections() -> int:
    """Connections per port: what the file descriptor limit leaves room for."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover
        return 1024
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(16, min(65536, soft - 64))


class _EventLoop:
    """The thread that serves every connection of a target (epoll through
    :mod:`selectors`): accepts, reads, writes, and closes connections whose
    handshake or linger time ran out.  A connection is served by this one
    thread only; other threads reach it through :meth:`poke`."""

    def __init__(self, target: "TcpTarget"):
        self.target = target
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.dirty: set[TcpConnection] = set()  # loop thread: connections with output to flush
        self._poked: set[TcpConnection] = set()  # other threads (under _lock)
        self._lock = threading.Lock()
        self._woken = False
        self._handshakes: list[tuple[float, int, TcpConnection]] = []  # heap of deadlines
        self._timers: list[float] = []  # heap of other wake-up times
        self._resting: dict[socket.socket, float] = {}
        self._seq = 0
        self._tid: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- other threads --------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nvmet-tcp", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stopping = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def in_loop(self) -> bool:
        return threading.get_ident() == self._tid

    def poke(self, conn: TcpConnection) -> None:
        """``conn`` has output or was aborted: the loop takes care of it."""
        if self.in_loop():
            self.dirty.add(conn)
            return
        with self._lock:
            self._poked.add(conn)
            woken, self._woken = self._woken, True
        if not woken:
            self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    def register_listener(self, sock: socket.socket, port: Port) -> None:
        self.selector.register(sock, selectors.EVENT_READ, port)
        self._wake()

    def unregister_listener(self, sock: socket.socket) -> None:
        self._resting.pop(sock, None)
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    # -- loop thread ----------------------------------------------------------------

    def add(self, conn: TcpConnection) -> None:
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        self._seq += 1
        heapq.heappush(self._handshakes, (conn.deadline, self._seq, conn))

    def forget(self, conn: TcpConnection) -> None:
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.dirty.discard(conn)

    def want_write(self, conn: TcpConnection, on: bool) -> None:
        self._modify(conn, conn._reading, on)

    def want_read(self, conn: TcpConnection, on: bool) -> None:
        self._modify(conn, on, bool(conn._pending))

    def _modify(self, conn: TcpConnection, read: bool, write: bool) -> None:
        mask = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
        try:
            if mask:
                self.selector.modify(conn.sock, mask, conn)
            else:
                self.selector.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            if mask and not conn.closed:
                try:
                    self.selector.register(conn.sock, mask, conn)
                except (KeyError, ValueError, OSError):
                    pass

    def timer(self, when: float) -> None:
        heapq.heappush(self._timers, when)

    def rest(self, listener: socket.socket) -> None:
        """Stop accepting on ``listener`` for a moment (limits, EMFILE)."""
        if listener in self._resting:
            return
        try:
            self.selector.unregister(listener)
        except (KeyError, ValueError):
            return
        until = time.monotonic() + _ACCEPT_REST
        self._resting[listener] = until
        self.timer(until)

    def oldest_handshake(self, port: Port | None) -> TcpConnection | None:
        for _, _, conn in sorted(self._handshakes):
            if conn.deadline is not None and not conn.closed and (port is None or conn.port is port):
                return conn
        return None

    def _run(self) -> None:
        self._tid = threading.get_ident()
        select = self.selector.select
        while not self._stopping:
            timeout = self._next_timeout()
            try:
                ready = select(timeout)
            except InterruptedError:  # pragma: no cover
                continue
            for key, mask in ready:
                data = key.data
                try:
                    if data is None:
                        self._woken_up()
                    elif type(data) is Port:
                        self.target._accept(key.fileobj, data)
                    else:  # a connection (or a worker process's channel, workers.py)
                        if mask & selectors.EVENT_WRITE and not data.closed:
                            data._writable()
                        if mask & selectors.EVENT_READ and not data.closed:
                            data._readable()
                except Exception:  # a bug must not take the target down
                    log.exception("NVMe/TCP event loop: %r failed", data)
                    if data is not None and type(data) is not Port:
                        data._close()
            self._flush_dirty()
            self._check_timers()
        self._shutdown()

    def _woken_up(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError, OSError):
            pass
        with self._lock:
            poked, self._poked = self._poked, set()
            self._woken = False
        self.dirty |= poked

    def _flush_dirty(self) -> None:
        while self.dirty:
            conn = self.dirty.pop()
            if conn.closed:
                continue
            conn._flush()
            conn._flushed()

    def _next_timeout(self) -> float:
        nearest = time.monotonic() + _IDLE_TICK
        handshakes = self._handshakes
        while handshakes and (handshakes[0][2].deadline is None or handshakes[0][2].closed):
            heapq.heappop(handshakes)
        if handshakes:
            nearest = min(nearest, handshakes[0][0])
        if self._timers:
            nearest = min(nearest, self._timers[0])
        return max(0.0, nearest - time.monotonic())

    def _check_timers(self) -> None:
        now = time.monotonic()
        handshakes = self._handshakes
        while handshakes and (handshakes[0][0] <= now or handshakes[0][2].deadline is None
                              or handshakes[0][2].closed):
            _, _, conn = heapq.heappop(handshakes)
            if conn.deadline is not None and not conn.closed:
                conn._expired(now)
        if self._timers and self._timers[0] <= now:
            while self._timers and self._timers[0] <= now:
                heapq.heappop(self._timers)
            for conn in [c for c in self.target.connections if c._linger_until is not None]:
                conn._expired(now)
            for listener, until in list(self._resting.items()):
                if until <= now:
                    del self._resting[listener]
                    port = self.target._listeners.get(listener)
                    if port is not None:
                        try:
                            self.selector.register(listener, selectors.EVENT_READ, port)
                        except (KeyError, ValueError, OSError):
                            pass

    def _shutdown(self) -> None:
        for conn in self.target.connections:
            conn._dead = True
            conn._close()
        for sock in (self._wake_r, self._wake_w):
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self.selector.close()
