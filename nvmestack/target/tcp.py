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

Each accepted connection gets a thread that reads the socket into the
sans-I/O :class:`~nvmestack.tcp.ControllerStream` and acts on its events:
the ICReq is answered, the first command must be Connect (admin queue:
a new controller; I/O queue: a queue of an existing one), then every
command becomes a core :class:`~nvmestack.target.request.Request` --
prepared by the controller, its data mapped (in-capsule data, an R2T and
the H2CData that answers it, or a buffer the command fills and C2HData
carries back), executed by the core, answered with a response capsule (or
with SUCCESS on the last C2HData when SQ flow control is disabled).  The
responses of one read are sent together with one ``sendmsg``; data goes
out of the command's own buffers without a copy.

A protocol error ends only its own connection (after the C2HTermReq);
losing the admin queue ends the association (the other queues close, the
controller goes), and so does a Keep Alive Timeout, checked by one
watchdog thread for every controller.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import struct
import threading
import time
from typing import Any, Iterable

from ..spec.cqe import Completion
from ..spec.dptr import Psdt, SglDescriptor
from ..spec.fabrics import CONNECT_DATA_SIZE
from ..spec.opcodes import FABRICS_OPCODE, FabricsType
from ..spec.sqe import Command
from ..spec.status import GenericStatus, Status
from ..spec.tcp import IO_PORT, DigestType
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
)
from .errors import NvmeError
from .fabrics import FabricsTarget, Port, admit, fail_request
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
FAST_PATH = os.environ.get("NVMESTACK_FAST_PATH", "1") != "0"
"""Whether targets use the I/O fast path unless told (``NVMESTACK_FAST_PATH=0``:
every command on the general path, to compare the two)."""


class _Write:
    """A write waiting for its H2CData."""

    __slots__ = ("req", "views", "bad", "connect")

    def __init__(self, req: Any, connect: bool = False):
        self.req = req
        self.views: list[memoryview] = []
        self.bad = False
        self.connect = connect


class _ConnectRequest:
    """Stands in for a request while a Connect waits for its data."""

    __slots__ = ("sqe", "cid")

    def __init__(self, sqe: memoryview, cid: int):
        self.sqe = bytes(sqe)
        self.cid = cid


class TcpConnection:
    """One TCP connection: one queue once Connect succeeded."""

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
        self._send_lock = threading.Lock()
        self._out: list = []
        self._batching = False
        self._tid = 0
        self._dead = False
        self._close_after_flush = False
        self.fast: FastIo | None = None  # an I/O queue's fast path, once connected
        self._fast_now: FastIo | None = None  # the fast path, for this batch
        self._c2h_pdo = 0  # PDO of the C2HData we send (HPDA); 0: send through the stream's builders
        self.thread = threading.Thread(target=self._run, name=f"nvmet-tcp {peer}", daemon=True)

    # -- life ------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def abort(self) -> None:
        """Close the connection now (its thread then cleans up)."""
        self._dead = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _run(self) -> None:
        self._tid = threading.get_ident()
        stream = self.stream
        try:
            while not self._dead:
                buf = stream.recv_buffer(_RECV_SIZE)
                try:
                    n = self.sock.recv_into(buf)
                except OSError:
                    break
                events = stream.received_into(n)
                self._batching = True
                fast = self.fast
                if fast is not None and fast.ready():
                    self._fast_now = fast
                    start = time.monotonic()
                    # Any command is a sign of life (see _command): once a batch.
                    fast.ctrl.last_keep_alive = start
                else:
                    self._fast_now = None
                try:
                    for event in events:
                        self._handle(event)
                finally:
                    self._batching = False
                    if self._fast_now is not None:
                        self._fast_now = None
                        fast.busy(time.monotonic() - start)
                self._flush()
                if stream.closed or self._close_after_flush:
                    break
            if stream.state is StreamState.ERROR and not self._dead:
                self._release_queue()
                self._linger()
        except Exception:  # a bug must not take the target down
            log.exception("NVMe/TCP connection from %s failed", self.peer)
        finally:
            self._cleanup()

    def _release_queue(self) -> None:
        if self.fast is not None:
            self.fast.close()
            self.fast = self._fast_now = None
        ctrl, self.ctrl = self.ctrl, None
        if ctrl is not None:
            self.target.queue_closed(ctrl, self.qid, self)

    def _linger(self) -> None:
        """After a TermReq: let the host read it and close first (closing
        with unread input would reset the connection and could lose it)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(_LINGER)
            deadline = time.monotonic() + _LINGER
            while time.monotonic() < deadline and self.sock.recv(65536):
                pass
        except OSError:
            pass

    def _cleanup(self) -> None:
        self._dead = True
        for write in self._writes.values():
            if not write.connect:
                write.req.cancel()
        self._writes.clear()
        self._release_queue()
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass
        self.target._connection_done(self)

    # -- sending ---------------------------------------------------------------------

    def _send(self, bufs: list) -> None:
        if not bufs:
            return
        with self._send_lock:
            if self._batching and threading.get_ident() == self._tid:
                self._out.extend(bufs)
                return
            self._sendall(bufs)

    def _flush(self) -> None:
        with self._send_lock:
            out, self._out = self._out, []
            if out:
                self._sendall(out)

    def _sendall(self, bufs: list) -> None:
        if self._dead:
            return
        try:
            while bufs:
                chunk = bufs[:_IOV_MAX] if len(bufs) > _IOV_MAX else bufs
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
        except OSError:
            self.abort()

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
        # Any command is a sign of life, as in Linux's nvmet (traffic based
        # keep alive): a busy host is never timed out between Keep Alives.
        ctrl.last_keep_alive = time.monotonic()
        req = ctrl.new_request(ev.sqe, self.qid, self._on_complete)
        err = admit(ctrl, req)
        if err is None and ev.data_digest_error:
            err = NvmeError(GenericStatus.TRANSIENT_TRANSPORT_ERROR, dnr=False, msg="data digest error")
        if err is not None:
            fail_request(req, err)
            return
        if not ctrl.prepare(req):
            return
        err = self._map(req, ev)
        if err is not None:
            fail_request(req, err)
        elif req.cid not in self._writes:
            ctrl.execute(req)

    def _fast_command(self, ev: CommandReceived) -> bool:
        """Offer the command to the fast path (fastpath.py); True when it
        ran there and its answer is on its way.  Declined commands go on to
        the general path untouched."""
        sqe = ev.sqe
        if sqe[1] != _FAST_FLAGS or ev.data_digest_error:
            return False
        fast = self._fast_now
        opcode = sqe[0]
        if opcode == READ:
            if ev.data is not None or sqe[_SGL_IDENT] != SGL_TRANSPORT:
                return False
            data = fast.read(sqe, _LE32.unpack_from(sqe, _SGL_LENGTH)[0])
            if data is None:
                return False
            self._read_done(ev.cid, data)
            return True
        if opcode == WRITE:
            data = ev.data
            if data is None or sqe[_SGL_IDENT] != SGL_IN_CAPSULE or _LE64.unpack_from(sqe, _SGL_ADDRESS)[0]:
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
        if not pdo or (max_c2h is not None and n > max_c2h):
            self._out.extend(self.stream.c2h_data(cid, [data], last=True, success=self.sqflow_disabled))
            if not self.sqflow_disabled:
                self._success(cid)
            return
        out = self._out
        if self.sqflow_disabled:
            out.append(_C2H_HEAD.pack(_C2H_DATA, _LAST_PDU | _SUCCESS, 24, pdo, pdo + n, cid, 0, 0, n))
            if pdo > 24:
                out.append(bytes(pdo - 24))
            out.append(data)
            return
        out.append(_C2H_HEAD.pack(_C2H_DATA, _LAST_PDU, 24, pdo, pdo + n, cid, 0, 0, n))
        if pdo > 24:
            out.append(bytes(pdo - 24))
        out.append(data)
        out.append(_RESP.pack(_CAPSULE_RESP, 0, 24, 0, 24, 0, 0, self._sqhd, self.qid, cid, 0))

    def _map(self, req: Request, ev: CommandReceived) -> NvmeError | None:
        """Give the request its data: in-capsule data, a buffer to fill, or
        an R2T (the command runs when the H2CData is in)."""
        n = req.data_len
        if req.meta_len:
            return NvmeError(GenericStatus.INVALID_FIELD, param=16, msg="no separate metadata over fabrics")
        if n and req.sqe.psdt != Psdt.SGL_MPTR_CONTIGUOUS:
            return NvmeError(GenericStatus.INVALID_FIELD, param=1, bit=6, msg="PSDT must select SGLs (01b)")
        sqe = ev.sqe
        ident = sqe[_SGL_IDENT]
        length = _LE32.unpack_from(sqe, _SGL_LENGTH)[0]
        if ev.data is not None:
            if ident != SGL_IN_CAPSULE:
                return NvmeError(GenericStatus.INVALID_FIELD, param=_SGL_PARAM, msg="in-capsule data without its SGL")
            if req.data_dir != DataDirection.HOST_TO_CTRL:
                return NvmeError(GenericStatus.INVALID_FIELD, param=_SGL_PARAM, msg="in-capsule data for a read")
            offset = _LE64.unpack_from(sqe, _SGL_ADDRESS)[0]
            if offset >= ev.data.nbytes:
                return NvmeError(GenericStatus.SGL_OFFSET_INVALID, param=_SGL_PARAM)
            if offset + length > ev.data.nbytes or length < n:
                return NvmeError(GenericStatus.DATA_SGL_LENGTH_INVALID, param=_SGL_PARAM)
            req.data = [ev.data[offset : offset + n]]
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
            self._send(self.stream.r2t(req.cid, 0, n))
            return None
        req.data = [memoryview(bytearray(n))]
        return None

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
        req = write.req
        if write.bad:
            fail_request(req, NvmeError(GenericStatus.TRANSIENT_TRANSPORT_ERROR, dnr=False, msg="data digest error"))
            return
        req.data = write.views
        self.ctrl.execute(req)

    def _on_complete(self, req: Request) -> None:
        if self._dead:
            return
        cqe = req.cqe
        cqe.sqid = self.qid
        cqe.sqhd = 0xFFFF if self.sqflow_disabled else self._sqhd
        stream = self.stream
        if req.data_dir == DataDirection.CTRL_TO_HOST and req.data_len and req.data and req.status.ok:
            success = self.sqflow_disabled and not cqe.dw0 and not cqe.dw1
            out = stream.c2h_data(req.cid, req.data, last=True, success=success)
            if not success:
                out.extend(stream.response(cqe))
        else:
            if req.cid in self._writes and self._writes[req.cid].req is req:
                # Completed (aborted, reset) before its data came.
                del self._writes[req.cid]
                stream.cancel_transfers(req.cid)
            out = stream.response(cqe)
        self._send(out)
        if req.context.get("disconnect"):
            self._close_after_flush = True
            if threading.get_ident() != self._tid:
                self.abort()

    # -- Connect ---------------------------------------------------------------------

    def _reply(self, cid: int, status: Status, dw0: int = 0, sqid: int = 0) -> None:
        cqe = Completion(cid=cid, sqid=sqid, sqhd=0xFFFF if self.sqflow_disabled else self._sqhd)
        cqe.dw0 = dw0
        status.apply(cqe)
        self._send(self.stream.response(cqe))

    def _connect(self, ev: CommandReceived) -> None:
        sqe = ev.command
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
        self._send(self.stream.r2t(ev.cid, 0, CONNECT_DATA_SIZE))

    def _finish_connect(self, pending: _ConnectRequest, views: list[memoryview], bad: bool) -> None:
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
        if self.qid and self.target.fast_path:
            self.fast = FastIo(self.ctrl, self.qid)
            stream = self.stream
            if not stream.hdgst and not stream.ddgst:
                align = (stream.tx_pda + 1) * 4
                self._c2h_pdo = -(-24 // align) * align
        self._reply(pending.cid, outcome.status, outcome.dw0, sqid=self.qid)

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
    :mod:`~nvmestack.target.fastpath`;
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
        **controller_options: Any,
    ):
        super().__init__(in_capsule_data_size=in_capsule_data_size, **controller_options)
        self.cpda = cpda
        self.maxh2cdata = maxh2cdata
        self.digests = digests
        self.max_c2h_data = max_c2h_data
        # Read/Write/Flush on I/O queues take the fast path when they can
        # (fastpath.py); False runs every command on the general path.
        self.fast_path = FAST_PATH if fast_path is None else fast_path
        for sub in subsystems:
            self.add_subsystem(sub)
        self._listeners: dict[socket.socket, Port] = {}
        self._connections: set[TcpConnection] = set()
        self._conn_lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
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
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        bound = sock.getsockname()[1]
        entry = Port(addr, str(bound), portid=portid, subsystems=None if subsystems is None else set(subsystems))
        self.add_port(entry)
        with self._conn_lock:
            self._listeners[sock] = entry
        self._selector.register(sock, selectors.EVENT_READ, entry)
        self._wake()
        return entry

    def unlisten(self, port: Port) -> None:
        """Stop listening on ``port``; its associations end."""
        with self._conn_lock:
            socks = [s for s, p in self._listeners.items() if p is port]
            for s in socks:
                del self._listeners[s]
        for s in socks:
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self.remove_port(port)

    def address(self, port: Port) -> tuple[str, int]:
        return port.traddr, int(port.trsvcid)

    # -- running -----------------------------------------------------------------------

    def start(self) -> "TcpTarget":
        if self._started:
            return self
        self._started = True
        for name, run in (("nvmet-tcp accept", self._accept_loop), ("nvmet keep-alive", self._keep_alive_loop)):
            thread = threading.Thread(target=run, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, close every connection, end every association."""
        self._stopping.set()
        self._keep_alive_changed.set()
        self._wake()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        with self._conn_lock:
            listeners = list(self._listeners)
            self._listeners.clear()
            connections = list(self._connections)
        for sock in listeners:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        for conn in connections:
            conn.abort()
        deadline = time.monotonic() + timeout
        for conn in connections:
            conn.thread.join(max(0.0, deadline - time.monotonic()))
        self.close()
        self._started = False

    def __enter__(self) -> "TcpTarget":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def connections(self) -> list[TcpConnection]:
        with self._conn_lock:
            return list(self._connections)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # pragma: no cover
            pass

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=1.0):
                if key.fileobj is self._wake_r:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:  # pragma: no cover
                        pass
                    continue
                self._accept(key.fileobj, key.data)
        try:
            self._selector.unregister(self._wake_r)
        except (KeyError, ValueError):  # pragma: no cover
            pass

    def _accept(self, listener: socket.socket, port: Port) -> None:
        while True:
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(True)
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
            conn.start()

    def _connection_done(self, conn: TcpConnection) -> None:
        with self._conn_lock:
            self._connections.discard(conn)

    def connect(self, *args: Any, **kwargs: Any):
        outcome = super().connect(*args, **kwargs)
        if outcome.ok and outcome.qid == 0:
            self._keep_alive_changed.set()  # a new Keep Alive Timer to watch
        return outcome

    def _keep_alive_loop(self) -> None:
        while not self._stopping.is_set():
            self.expire_keep_alive()
            deadline = self.next_keep_alive_deadline()
            wait = 1.0 if deadline is None else min(1.0, max(0.01, deadline - time.monotonic() + 0.005))
            self._keep_alive_changed.wait(wait)
            self._keep_alive_changed.clear()
