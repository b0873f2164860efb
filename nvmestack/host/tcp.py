"""The NVMe/TCP transport: the host driver's side of NVMe over TCP (Linux
drivers/nvme/host/tcp.c, with the Fabrics parts of fabrics.c), plus
discovery, connect and disconnect helpers (what ``nvme discover``,
``nvme connect`` and ``nvme disconnect`` do through libnvme).

:class:`TcpTransport` implements :class:`~nvmestack.host.transport.Transport`,
so the host core (:class:`~nvmestack.host.core.NvmeController`) runs over it
unchanged: bring-up, identify, queues, I/O, timeouts, keep alive and reset
are the core's; the transport only carries things.

* One TCP connection per queue (:class:`TcpQueue`), each opened with the
  ICReq/ICResp exchange and then a Fabrics Connect: the admin queue with
  controller ID FFFFh (dynamic model: the subsystem allocates a
  controller, whose ID the response returns) and KATO, every I/O queue with
  that controller ID and its SQSIZE.  The PDU rules (framing, digests,
  alignment, R2T and data checks, termination) are the sans-I/O
  :class:`~nvmestack.tcp.HostStream`'s; this module does the sockets.
* Registers are properties: ``reg_read32/64`` is Property Get and
  ``reg_write32`` Property Set on the admin queue (a broken connection reads
  all ones, like a PCIe function that fell off the bus).
* Commands travel as command capsules with an SGL: write data up to the
  queue's in-capsule size (8 KiB on the admin queue, ``IOCCSZ * 16 - 64`` on
  I/O queues; Fabrics commands always) goes in the capsule, larger writes
  wait for the controller's R2Ts and answer each with H2CData PDUs of at
  most MAXH2CDATA bytes; reads arrive as C2HData and are copied into the
  caller's buffers (a C2HData with SUCCESS completes the command with no
  response capsule).  Data is never copied to be sent: PDUs go out with
  ``sendmsg`` over the caller's buffers.  A data digest error completes the
  command with Data Transfer Error (and the core retries it), as Linux.
* A receive thread per connection (a selector on the socket) feeds the
  stream, completes requests and answers R2Ts; submitters send directly
  (non-blocking) and leave what the socket does not take to that thread.
  Polled queues have no thread: polling does the same work.
* Keep alive: the core sends Keep Alive every KATO / 2 (the transport
  sets the controller's ``kato``; 5 s by default, Linux's
  NVME_DEFAULT_KATO; 0 for a discovery controller, as Linux).
* A lost connection (EOF, socket error, a protocol error, a C2HTermReq, a
  timed out transport command) starts the core's error recovery, as
  Linux's nvme_tcp_error_recovery, and so does a command whose timeout
  makes the core reset the controller (a Keep Alive or admin command, an
  I/O command after its Abort: the path may be silent, so nothing waits on
  it -- ``error_recovery``): every queue is torn down, the requests in
  flight are requeued, and after ``reconnect_delay`` seconds (10 by
  default, NVMF_DEF_RECONNECT_DELAY) the whole association is connected
  again (a new controller).  A failed attempt is retried every
  ``reconnect_delay`` until ``ctrl_loss_tmo`` (600 s by default,
  NVMF_DEF_CTRL_LOSS_TMO; negative or None: forever) -- that is
  ``ceil(ctrl_loss_tmo / reconnect_delay)`` attempts -- or until a Connect
  fails with DNR; then the controller is dead and its requests fail.
  Requests complete exactly once (the core guarantees it; a response on a
  connection that was torn down is never delivered).

Discovery: :func:`discover` connects to a discovery controller (the
well-known discovery NQN, port 8009 by default), reads the Discovery log
page (70h) as nvme-cli does -- header, entries, header again, and again
from the start while the generation counter changed -- and disconnects.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import select
import selectors
import socket
import struct
import threading
import time
import uuid
import weakref
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..memory import sg_scatter
from ..spec.dptr import Psdt
from ..spec.fabrics import (
    CNTLID_DYNAMIC,
    DISCOVERY_NQN,
    Connect,
    ConnectData,
    ConnectResult,
    PropertyGet,
    PropertySet,
    uuid_nqn,
    nqn_unusable,
    validate_nqn,
)
from ..spec.log import (
    DISCOVERY_LOG_ENTRY_SIZE,
    DISCOVERY_LOG_HEADER_SIZE,
    AddressFamily,
    DiscoveryLogEntry,
    DiscoveryLogHeader,
    LogPageId,
    SubsystemType,
    TransportType,
)
from ..spec.opcodes import FABRICS_OPCODE
from ..spec.registers import Reg, Shn, Shst
from ..spec.status import GenericStatus, Status
from ..spec.tcp import DISCOVERY_PORT, IO_PORT
from ..tcp import (
    ADMIN_MAX_ICD,
    SGL_IN_CAPSULE,
    SGL_TRANSPORT,
    C2HDataReceived,
    ConnectionClosed,
    HostStream,
    ICRespReceived,
    ProtocolError,
    R2TReceived,
    ResponseReceived,
    TermReqReceived,
)
from .queue import CqEntry, HostQueue
from .request import DIR_FROM_DEVICE, DIR_NONE, DIR_TO_DEVICE, NvmeHostError
from .transport import Transport, TransportError

if TYPE_CHECKING:
    from .core import NvmeController
    from .request import HostRequest

__all__ = [
    "TcpTransport",
    "TcpQueue",
    "ConnectError",
    "DiscoveryLog",
    "default_host",
    "discover",
    "discover_log",
    "get_discovery_log",
    "connect",
    "connect_all",
    "disconnect",
    "DEFAULT_KATO",
    "DEFAULT_RECONNECT_DELAY",
    "DEFAULT_CTRL_LOSS_TMO",
    "DEFAULT_QUEUE_SIZE",
    "DISCOVERY_RETRIES",
]

log = logging.getLogger(__name__)

DEFAULT_KATO = 5.0  # seconds, Linux's NVME_DEFAULT_KATO (0 for discovery controllers)
DEFAULT_RECONNECT_DELAY = 10.0  # seconds, NVMF_DEF_RECONNECT_DELAY
DEFAULT_CTRL_LOSS_TMO = 600.0  # seconds, NVMF_DEF_CTRL_LOSS_TMO
DEFAULT_QUEUE_SIZE = 128  # I/O queue entries, NVMF_DEF_QUEUE_SIZE
DEFAULT_CONNECT_TIMEOUT = 10.0  # TCP connect and ICResp (Linux waits 10 s for the ICResp)
ADMIN_QUEUE_ENTRIES = 32  # NVME_AQ_DEPTH: the admin Connect's SQSIZE is 31
DISCOVERY_RETRIES = 10  # nvme-cli's MAX_DISC_RETRIES: genctr changed, read again
LOG_PAGE_CHUNK = 4096  # libnvme reads log pages 4 KiB per command (NVME_LOG_PAGE_PDU_SIZE)
RECV_SIZE = 256 * 1024
_PUMP_BATCH = 32  # socket reads per pump before the completions are delivered
_SEND_BATCH = 64  # buffers per sendmsg
_READY_POLL = 0.002

_CQE = struct.Struct("<IIHHHH")
_MPTR_SGL = struct.Struct("<QQI3xB")  # MPTR, then SGL1: address, length, 3 reserved bytes, SGL identifier
_SGL_IN_CAPSULE = SGL_IN_CAPSULE  # Data Block, sub type Offset
_SGL_TRANSPORT = SGL_TRANSPORT  # Transport SGL Data Block, sub type Transport Specific
_STATUS_DATA_TRANSFER_ERROR = Status(0, GenericStatus.DATA_TRANSFER_ERROR).to_field()
_CC_EN = 1
_CC_SHN_MASK = 3 << 14
_CSTS_RDY = 1

_host_lock = threading.Lock()
_default_host: tuple[str, uuid.UUID] | None = None
_transports: "weakref.WeakSet[TcpTransport]" = weakref.WeakSet()


def _at_exit() -> None:
    """The interpreter is exiting: transports stop reconnecting (a controller
    nobody shut down would otherwise keep the core's reset worker, which
    the interpreter waits for, retrying until its controller loss timeout)."""
    for transport in list(_transports):
        transport._closed = True


_register_atexit = getattr(threading, "_register_atexit", None)  # runs before executor threads are joined
if _register_atexit is not None:
    _register_atexit(_at_exit)


def default_host() -> tuple[str, uuid.UUID]:
    """The Host NQN and Host Identifier used when none is given: one random
    UUID per process and the UUID-format NQN made from it (what nvme-cli
    generates without /etc/nvme/hostnqn)."""
    global _default_host
    with _host_lock:
        if _default_host is None:
            hostid = uuid.uuid4()
            _default_host = (uuid_nqn(hostid), hostid)
        return _default_host


class ConnectError(TransportError):
    """Connecting a queue failed: the TCP connection, the ICReq/ICResp
    exchange or the Fabrics Connect.  ``status`` is the Connect's NVMe
    status when the controller answered (its DNR says whether trying again
    can help)."""

    def __init__(self, message: str, status: Status | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class DiscoveryLog:
    """A Discovery log page: its generation counter and entries."""

    genctr: int
    entries: list[DiscoveryLogEntry]


class _TcpData:
    """A request's data as the transport moves it (``req.mapping``)."""

    __slots__ = ("views", "length", "write", "in_capsule", "received", "status")

    def __init__(self, views: list[memoryview], length: int, write: bool, in_capsule: bool):
        self.views = views
        self.length = length
        self.write = write
        self.in_capsule = in_capsule
        self.received = 0  # read data that arrived (C2HData)
        self.status: int | None = None  # a status field to complete with instead of success


class _Waiter:
    """One of the transport's own commands (Connect, Property Get/Set)."""

    __slots__ = ("event", "cid", "tags", "tag", "status", "dw0", "dw1", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.cid = -1
        self.tags = None
        self.tag = -1
        self.status: Status | None = None
        self.dw0 = 0
        self.dw1 = 0
        self.error: BaseException | None = None


class TcpQueue(HostQueue):
    """One queue pair of the TCP transport: its own connection, a
    :class:`~nvmestack.tcp.HostStream`, a send queue and (unless polled) a
    receive thread.  ``depth`` tags (SQSIZE of the Connect, 0's based: a
    queue of N entries holds N - 1 commands).  ``broken`` says why the
    connection ended (None while it works)."""

    def __init__(self, transport: "TcpTransport", qid: int, depth: int, sock: socket.socket, stream: HostStream,
                 *, polled: bool = False):
        super().__init__(qid, depth, polled=polled)
        self.transport = transport
        self.sock = sock
        self.stream = stream
        self.broken: str | None = None
        self.maxh2cdata = 0
        self.cpda = 0
        self._tx: deque[Any] = deque()  # buffers not sent yet
        # Command capsules of the batch being submitted (queue lock held):
        # _ring moves them to _tx under the tx lock once per batch.
        self._staged: list[Any] = []
        self._tx_lock = threading.Lock()
        self._rx_lock = threading.Lock()
        self._internal: dict[int, _Waiter] = {}  # tag -> the transport's own command in flight
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._lost = False  # the transport heard about the loss
        self._send_error: str | None = None
        self._tag_freed = False  # a transport command gave its tag back while requests wait for one
        self._wake_lock = threading.Lock()
        self._poller: Any = None  # select.poll of a polled queue's socket (wait_ready)
        self._poll_out = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # Statistics.
        self.bytes_sent = 0
        self.bytes_received = 0
        self.r2ts = 0
        self.c2h_pdus = 0
        self.h2c_pdus = 0
        self.responses = 0  # response capsules
        self.send_stalls = 0  # sends the socket refused for now (finished when it is writable)
        self.success_completions = 0  # commands completed by a C2HData with SUCCESS

    @property
    def inline_size(self) -> int:
        """Most write data a command capsule carries on this queue."""
        return self.stream.max_icd

    # -- connection setup ----------------------------------------------------------

    def handshake(self, timeout: float) -> None:
        """The ICReq/ICResp exchange (blocking, at most ``timeout`` s)."""
        sock, stream = self.sock, self.stream
        deadline = time.monotonic() + timeout
        try:
            sock.settimeout(timeout)
            sock.sendall(b"".join(bytes(b) for b in stream.initiate()))
            while not stream.live:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConnectError(f"queue {self.qid}: no ICResp within {timeout:g} s")
                sock.settimeout(remaining)
                buf = stream.recv_buffer(4096)
                n = sock.recv_into(buf)
                for ev in stream.received_into(n):
                    if isinstance(ev, ICRespReceived):
                        self.maxh2cdata = ev.maxh2cdata
                        self.cpda = ev.cpda
                        if ev.hdgst != stream.want_hdgst or ev.ddgst != stream.want_ddgst:
                            # Linux refuses a controller that grants other digests than asked.
                            raise ConnectError(f"queue {self.qid}: digests asked header {stream.want_hdgst} "
                                               f"data {stream.want_ddgst}, granted header {ev.hdgst} data {ev.ddgst}")
                    elif isinstance(ev, ProtocolError):
                        if ev.term:
                            try:
                                sock.sendall(b"".join(bytes(b) for b in ev.term))
                            except OSError:
                                pass
                        raise ConnectError(f"queue {self.qid}: bad ICResp: {ev.message}")
                    elif isinstance(ev, TermReqReceived):
                        raise ConnectError(f"queue {self.qid}: the controller terminated the connection "
                                           f"(FES {ev.fes:#x}, FEI {ev.fei:#x})")
                    elif isinstance(ev, ConnectionClosed):
                        raise ConnectError(f"queue {self.qid}: connection closed before the ICResp")
        except socket.timeout:
            raise ConnectError(f"queue {self.qid}: no ICResp within {timeout:g} s") from None
        except OSError as exc:
            raise ConnectError(f"queue {self.qid}: ICReq/ICResp: {exc}") from exc

    def start(self) -> None:
        """Go non-blocking and start the receive thread (not for polled queues)."""
        self.sock.setblocking(False)
        if not self.polled:
            self._thread = threading.Thread(target=self._run, name=f"nvme-tcp-q{self.qid}", daemon=True)
            self._thread.start()

    def retag(self, depth: int, reserved: int) -> None:
        """New tags (the core's admin queue layout: reserved AER tags)."""
        deadline = time.monotonic() + 5
        while True:
            with self.lock:
                if not self._internal and not self.inflight:
                    self.depth = depth
                    self.tags = type(self.tags)(depth, reserved)
                    return
            if time.monotonic() >= deadline:
                raise TransportError(f"queue {self.qid}: commands still in flight")
            time.sleep(0.001)

    # -- the transport's own commands ---------------------------------------------

    def command(self, cmd: Any, data: Any = None, timeout: float = 60.0) -> tuple[Status, int, int]:
        """Send a command of the transport itself (Connect, Property Get/Set)
        with ``data`` in the capsule, wait for its response; returns (status,
        dword 0, dword 1).  TransportError when the connection fails or the
        command times out (which breaks the connection, as Linux's error
        recovery after a timeout)."""
        waiter = _Waiter()
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if self.broken:
                    raise TransportError(f"queue {self.qid}: connection lost ({self.broken})")
                tag = self.tags.get()
                if tag is not None:
                    cid = self.tags.cid(tag)
                    cmd.cid = cid
                    waiter.cid, waiter.tags, waiter.tag = cid, self.tags, tag
                    self._internal[tag] = waiter
                    bufs = [data] if data is not None else []
                    pdus = self.stream.command(cmd.raw, bufs, write=bool(bufs), in_capsule=True if bufs else None)
                    with self._tx_lock:
                        self._tx.extend(pdus)
                    break
            if time.monotonic() >= deadline:
                raise TransportError(f"queue {self.qid}: no free command identifier")
            time.sleep(0.001)
        self._kick()
        while not waiter.event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                what = type(cmd).__name__
                reason = f"{what} timed out after {timeout:g} s"
                self._break(reason)
                self.transport._connection_lost(self, reason)
                raise TransportError(f"queue {self.qid}: {reason}")
            if self.polled:
                self._pump(False)
                waiter.event.wait(min(remaining, 0.0005))
            else:
                waiter.event.wait(min(remaining, 0.5))
        if waiter.error is not None:
            raise waiter.error
        return waiter.status, waiter.dw0, waiter.dw1

    def _fail_internal(self, error: BaseException) -> None:
        with self.lock:
            waiters = list(self._internal.values())
            self._internal.clear()
        for waiter in waiters:
            waiter.error = error
            waiter.event.set()

    # -- sending -------------------------------------------------------------------

    def _write(self, req: "HostRequest") -> None:
        """A command capsule for ``req`` (queue lock held); sent by _ring."""
        m: _TcpData | None = req.mapping
        if m is None:
            pdus = self.stream.command_views(req.cmd.raw, [], 0, False)
        else:
            m.received = 0
            m.status = None
            pdus = self.stream.command_views(req.cmd.raw, m.views, m.length, m.write, m.in_capsule)
        self._staged.extend(pdus)

    def _ring(self) -> None:
        """The batch's capsules go to the send queue together (queue lock
        held), then out."""
        staged = self._staged
        if staged:
            with self._tx_lock:
                self._tx.extend(staged)
            staged.clear()
        self._kick()

    def _kick(self) -> None:
        """Send what is queued without blocking; the receive thread sends
        the rest when the socket can take it."""
        with self._tx_lock:
            if not self._tx:
                return
            self._flush_locked()
            left = bool(self._tx)
        if self._send_error:
            self._break(self._send_error)
        elif left and not self.polled:
            self._wake()

    def _wake(self) -> None:
        with self._wake_lock:  # never a descriptor number that stop() gave back
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # full: a wake-up is pending anyway
                pass

    def _flush_locked(self) -> None:
        """Send queued buffers until the socket would block (tx lock held);
        a failure is left in ``_send_error``."""
        tx = self._tx
        sock = self.sock
        while tx:
            if self.broken or self._send_error:
                tx.clear()
                return
            batch = list(itertools.islice(tx, _SEND_BATCH))
            try:
                sent = sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                self.send_stalls += 1
                return
            except OSError as exc:
                # Broken by the caller once the tx lock is released (_break
                # takes the queue lock, which submitters hold before this one).
                tx.clear()
                self._send_error = f"send failed: {exc}"
                return
            self.bytes_sent += sent
            while sent:
                head = tx[0]
                size = len(head) if not isinstance(head, memoryview) else head.nbytes
                if sent >= size:
                    tx.popleft()
                    sent -= size
                else:
                    tx[0] = memoryview(head)[sent:]
                    sent = 0

    # -- receiving -----------------------------------------------------------------

    def _run(self) -> None:
        thread = threading.current_thread()
        thread.nvme_completion_context = True  # waits in done callbacks poll (see HostRequest.wait)
        sel = selectors.DefaultSelector()
        try:
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
        except (OSError, ValueError):
            sel.close()
            return
        want_write = False
        try:
            while not self._stopping and not self.broken:
                pending = bool(self._tx)
                if pending != want_write:
                    want_write = pending
                    sel.modify(self.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0))
                for key, _mask in sel.select():
                    if key.fileobj == self._wake_r:
                        try:
                            while os.read(self._wake_r, 512):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                if self._stopping:
                    break
                try:
                    self._pump(True)
                except Exception:  # a bug: the connection is given up, the thread ends cleanly
                    log.exception("queue %d: receive", self.qid)
                    self._break("internal error in the receive path")
        except (OSError, ValueError):
            if not self._stopping:
                self._break("receive thread: socket gone")
        finally:
            sel.close()
        if self.broken and not self._stopping:
            self.transport._connection_lost(self, self.broken)

    def _pump(self, wait: bool) -> int:
        """Send what can be sent, read what arrived and act on it; then
        deliver the completions (outside the locks).  Returns how many."""
        if not self._rx_lock.acquire(blocking=wait):
            return 0
        done: list[tuple[HostRequest, CqEntry]] = []
        lost: str | None = None
        try:
            if self.broken:
                return 0
            with self._tx_lock:
                self._flush_locked()
            stream = self.stream
            for _ in range(_PUMP_BATCH):
                buf = stream.recv_buffer(RECV_SIZE, keep=True)  # the events are gone before the next
                try:
                    n = self.sock.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    lost = f"receive failed: {exc}"
                    break
                self.bytes_received += n
                lost = self._handle(stream.received_into(n), done)
                if lost or self.broken or n < len(buf):  # short: the socket is drained for now
                    break
            if not lost:
                with self._tx_lock:
                    self._flush_locked()
            if not lost and self._send_error:
                lost = self._send_error
        finally:
            self._rx_lock.release()
        if lost:
            self._break(lost)
        elif self.broken:
            lost = self.broken
        if done or self._tag_freed:
            self._tag_freed = False
            self._deliver(done)
        if lost:
            self.transport._connection_lost(self, lost)
        return len(done)

    def _handle(self, events: list, done: list) -> str | None:
        """Act on the stream's events; returns why the connection must end.
        The queue lock is taken once for all of them (the handlers look up
        and take requests in flight under it)."""
        with self.lock:
            return self._handle_locked(events, done)

    def _handle_locked(self, events: list, done: list) -> str | None:
        for ev in events:
            kind = type(ev)
            if kind is ResponseReceived:
                why = self._on_response(ev, done)
            elif kind is C2HDataReceived:
                why = self._on_c2h(ev, done)
            elif kind is R2TReceived:
                why = self._on_r2t(ev)
            elif kind is ProtocolError:
                log.error("queue %d: protocol error from the controller: %s (FES %#x)", self.qid, ev.message, ev.fes)
                if ev.term:
                    self._send_term(ev.term)
                return f"protocol error: {ev.message}"
            elif kind is TermReqReceived:
                log.error("queue %d: the controller terminated the connection (C2HTermReq FES %#x FEI %#x)",
                          self.qid, ev.fes, ev.fei)
                return f"C2HTermReq (FES {ev.fes:#x})"
            elif kind is ConnectionClosed:
                return "connection closed by the controller"
            else:
                why = None
            if why:
                return why
        return None

    def _send_term(self, term: list) -> None:
        """Best effort: the H2CTermReq goes out before the socket closes."""
        with self._tx_lock:
            self._tx.clear()
            try:
                self.sock.setblocking(True)
                self.sock.settimeout(1.0)
                self.sock.sendall(b"".join(bytes(b) for b in term))
            except OSError:
                pass

    def _lookup(self, cid: int) -> "HostRequest | None":
        tag = self.tags.tag_of(cid)
        return self.inflight.get(tag) if tag is not None else None

    def _on_response(self, ev: ResponseReceived, done: list) -> str | None:
        """A response capsule (queue lock held)."""
        dw0, dw1, sqhd, sqid, cid, status = _CQE.unpack_from(ev.cqe)
        self.responses += 1
        waiter = self._internal.get(cid & 0xFFF)
        if waiter is not None and waiter.cid == cid:
            del self._internal[cid & 0xFFF]
            waiter.tags.put(waiter.tag)
            self._tag_freed = bool(self.waiting)
            waiter.status = Status.from_field(status, fabrics=True)
            waiter.dw0, waiter.dw1 = dw0, dw1
            waiter.event.set()
            return None
        req = self._lookup(cid)
        if req is None:
            self.spurious += 1
            log.warning("queue %d: response for unknown command id %#x (status %#x) ignored", self.qid, cid,
                        status >> 1)
            return None
        m: _TcpData | None = req.mapping
        if m is not None and not m.write and not status >> 1 and m.received != m.length:
            # NVMe has no short read (Linux's nvme_tcp_data_in_short).
            return f"command {cid:#x}: {m.received} of {m.length} bytes of read data before the response"
        if m is not None and m.status is not None and not status >> 1:
            status = m.status
        self._took(req.tag)
        done.append((req, CqEntry(dw0, dw1, sqhd, sqid, cid, status)))
        return None

    def _on_c2h(self, ev: C2HDataReceived, done: list) -> str | None:
        """A C2HData PDU (queue lock held)."""
        self.c2h_pdus += 1
        req = self._lookup(ev.cid)
        if req is None:  # taken out of flight meanwhile (timeout while connecting)
            return None
        m: _TcpData | None = req.mapping
        if m is None or m.write:
            return f"C2HData for command {ev.cid:#x}, which reads no data"
        data, offset, views = ev.data, ev.offset, m.views
        n = data.nbytes
        if len(views) == 1 and offset + n <= m.length:  # one buffer: one copy, no scatter walk
            views[0][offset : offset + n] = data
        else:
            try:
                sg_scatter(views, data, offset)
            except ValueError:
                return f"C2HData {offset}+{n} beyond command {ev.cid:#x}'s {m.length} bytes"
        m.received += n
        if ev.digest_error:
            log.error("queue %d: data digest error in C2HData of command %#x", self.qid, ev.cid)
            m.status = _STATUS_DATA_TRANSFER_ERROR
        if not ev.success:
            return None
        if m.received != m.length:
            return f"command {ev.cid:#x}: SUCCESS after {m.received} of {m.length} bytes"
        self._took(req.tag)
        self.success_completions += 1
        status = m.status or 0
        done.append((req, CqEntry(0, 0, 0, self.qid, ev.cid, status)))
        return None

    def _on_r2t(self, ev: R2TReceived) -> str | None:
        """An R2T (queue lock held)."""
        self.r2ts += 1
        req = self._lookup(ev.cid)
        if req is None:
            return None
        m: _TcpData | None = req.mapping
        if m is None or not m.write:
            return f"R2T for command {ev.cid:#x}, which writes no data"
        pdus = self.stream.data_for_r2t(ev, m.views)
        self.h2c_pdus += -(-ev.length // max(1, self.stream.maxh2cdata))
        with self._tx_lock:
            self._tx.extend(pdus)
        return None

    def _deliver(self, done: list) -> None:
        complete = self.on_complete
        for req, entry in done:
            if complete is not None:
                complete(req, entry)
        with self.lock:
            restart = self._startable() if self.alive else []
        if restart:
            self.submit(restart)

    # -- HostQueue ------------------------------------------------------------------

    def cq_ready(self) -> bool:
        return False

    def wait_ready(self, timeout: float) -> None:
        """A polled queue's caller waits here for the socket (data to read,
        or room for what is still to send) instead of sleeping."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            self._poll_out = False
        want_out = bool(self._tx)
        if want_out != self._poll_out:
            poller.modify(self.sock, select.POLLIN | (select.POLLOUT if want_out else 0))
            self._poll_out = want_out
        try:
            poller.poll(max(0, int(timeout * 1000)) or 1)
        except (OSError, ValueError):  # closed meanwhile: the next poll finds out
            pass

    def process_completions(self) -> int:
        return self._pump(False)

    def release(self, req: "HostRequest") -> bool:
        cid = req.cid
        if super().release(req):
            self.stream.forget(cid)
            return True
        return False

    # -- teardown -------------------------------------------------------------------

    def _break(self, reason: str) -> None:
        """The connection is over: shut the socket, fail the transport's own
        commands, wake the receive thread."""
        with self.lock:
            if self.broken:
                return
            self.broken = reason
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._fail_internal(TransportError(f"queue {self.qid}: connection lost ({reason})"))
        self._wake()

    def stop(self) -> None:
        """Close the connection (orderly teardown: no recovery is started)."""
        self._stopping = True
        self._break("queue stopped")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._rx_lock, self._tx_lock:
            self._tx.clear()
            try:
                self.sock.close()
            except OSError:
                pass
        with self._wake_lock:
            fds = (self._wake_r, self._wake_w)
            self._wake_r = self._wake_w = -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def __repr__(self) -> str:
        state = f" broken={self.broken!r}" if self.broken else ""
        return f"<TcpQueue {self.qid} depth={self.depth} inflight={len(self.inflight)}{state}>"


class TcpTransport(Transport):
    """The NVMe/TCP transport to the controller of subsystem ``subnqn`` at
    ``addr``:``port`` (see the module docstring).

    Options (Linux's ``nvme connect`` names): ``hostnqn``/``hostid`` (default
    :func:`default_host`); ``hdr_digest``/``data_digest``; ``kato`` seconds
    (default 5, 0 for the discovery NQN; 0 turns keep alive off);
    ``reconnect_delay`` and ``ctrl_loss_tmo`` seconds; ``queue_size`` I/O
    queue entries (128); ``disable_sqflow`` (ask for SQ flow control to be
    off); ``connect_timeout`` seconds for the TCP connection and the ICResp;
    ``command_timeout`` seconds for the transport's own commands (default:
    the controller's admin timeout); ``hpda`` (alignment asked of the
    controller's data PDUs)."""

    name = "tcp"
    needs_keep_alive = True
    fabrics = True
    max_transfer_size = 8 << 20
    max_segments = 256
    page_size = 4096

    def __init__(
        self,
        addr: str,
        port: int = IO_PORT,
        *,
        subnqn: str,
        hostnqn: str | None = None,
        hostid: uuid.UUID | str | bytes | None = None,
        hdr_digest: bool = False,
        data_digest: bool = False,
        kato: float | None = None,
        reconnect_delay: float = DEFAULT_RECONNECT_DELAY,
        ctrl_loss_tmo: float | None = DEFAULT_CTRL_LOSS_TMO,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        disable_sqflow: bool = False,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        command_timeout: float | None = None,
        hpda: int = 0,
    ):
        super().__init__()
        problem = nqn_unusable(subnqn)  # a target may serve any name (Linux's nvmet does)
        if problem is not None:
            raise ValueError(f"invalid NQN {subnqn!r}: {problem}")
        if hostnqn is None or hostid is None:
            default_nqn, default_id = default_host()
            hostnqn = hostnqn if hostnqn is not None else default_nqn
            hostid = hostid if hostid is not None else default_id
        validate_nqn(hostnqn)
        if isinstance(hostid, (bytes, bytearray)):
            hostid = uuid.UUID(bytes=bytes(hostid))
        elif not isinstance(hostid, uuid.UUID):
            hostid = uuid.UUID(str(hostid))
        if reconnect_delay <= 0:
            raise ValueError("reconnect_delay must be positive")
        if queue_size < 2:
            raise ValueError("queue_size must be at least 2")
        self.addr = addr
        self.port = int(port)
        self.subnqn = subnqn
        self.hostnqn = hostnqn
        self.hostid: uuid.UUID = hostid
        self.hdr_digest = bool(hdr_digest)
        self.data_digest = bool(data_digest)
        self.discovery = subnqn == DISCOVERY_NQN
        if kato is None:
            kato = 0.0 if self.discovery else DEFAULT_KATO
        if kato < 0:
            raise ValueError("kato cannot be negative")
        self.kato = float(kato)
        self.needs_keep_alive = self.kato > 0
        self.reconnect_delay = float(reconnect_delay)
        self.ctrl_loss_tmo = None if ctrl_loss_tmo is None or ctrl_loss_tmo < 0 else float(ctrl_loss_tmo)
        self.queue_size = int(queue_size)
        self.disable_sqflow = bool(disable_sqflow)
        self.connect_timeout = float(connect_timeout)
        self.command_timeout = command_timeout
        self.hpda = hpda
        self.cntlid: int | None = None
        self.queues: dict[int, TcpQueue] = {}
        self.nr_reconnects = 0  # failed attempts in the current outage (Linux's nr_reconnects)
        self.associations = 0  # times the controller went live (1 + resets and reconnections)
        self.connections_lost = 0
        self._recovering = False  # a lost connection: wait reconnect_delay before the first attempt
        self._lock = threading.RLock()
        self._closed = False
        _transports.add(self)

    @property
    def max_reconnects(self) -> int | None:
        """Attempts before giving up (None: forever), as Linux computes it."""
        if self.ctrl_loss_tmo is None:
            return None
        return math.ceil(self.ctrl_loss_tmo / self.reconnect_delay)

    def attach(self, ctrl: "NvmeController") -> None:
        super().attach(ctrl)
        if self.kato:
            ctrl.kato = self.kato
        ctrl.state_callbacks.append(self._state_changed)

    def _state_changed(self, old: Any, new: Any) -> None:
        if new.value == "live":
            self.nr_reconnects = 0
            self.associations += 1

    # ------------------------------------------------------------------
    # connections

    def _command_timeout(self) -> float:
        if self.command_timeout is not None:
            return float(self.command_timeout)
        ctrl = self.ctrl
        return float(ctrl.admin_timeout) if ctrl is not None else 60.0

    def _open(self, qid: int, depth: int, *, polled: bool, max_icd: int) -> TcpQueue:
        """A connected queue: TCP connection, ICReq/ICResp, receive thread."""
        try:
            sock = socket.create_connection((self.addr, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise ConnectError(f"queue {qid}: cannot connect to {self.addr}:{self.port}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = HostStream(hpda=self.hpda, hdgst=self.hdr_digest, ddgst=self.data_digest, maxr2t=0,
                                max_icd=max_icd)
            queue = TcpQueue(self, qid, depth, sock, stream, polled=polled)
        except BaseException:
            sock.close()
            raise
        try:
            queue.handshake(self.connect_timeout)
            queue.start()
        except BaseException:
            queue.stop()
            raise
        return queue

    def _connect_data(self, cntlid: int) -> bytearray:
        data = ConnectData()
        data.hostid = self.hostid.bytes
        data.cntlid = cntlid
        data.subsysnqn = self.subnqn
        data.hostnqn = self.hostnqn
        return bytearray(data.raw)

    def _fabrics_connect(self, queue: TcpQueue, qid: int, entries: int, cntlid: int) -> int:
        """Fabrics Connect on ``queue``; returns the controller ID."""
        cmd = Connect(qid=qid, sqsize=entries - 1)
        if qid == 0:
            cmd.kato = int(round(self.kato * 1000))
        cmd.disable_sqflow = self.disable_sqflow
        try:
            status, dw0, _ = queue.command(cmd, self._connect_data(cntlid), self._command_timeout())
        except TransportError as exc:
            raise ConnectError(f"Connect (queue {qid}): {exc}") from exc
        if not status.ok:
            raise ConnectError(f"Connect (queue {qid}) to {self.subnqn}: {status}", status)
        result = ConnectResult.from_bytes(dw0.to_bytes(4, "little"))
        if qid == 0 and result.authreq:
            raise ConnectError(f"Connect (queue 0): the controller requires authentication "
                               f"(AUTHREQ {result.authreq:#x}), which is not supported",
                               Status(1, 0x82, dnr=True, fabrics=True))
        return result.cntlid

    def _admin(self) -> TcpQueue:
        queue = self.queues.get(0)
        if queue is None or queue.broken:
            raise TransportError("the admin queue is not connected")
        return queue

    # ------------------------------------------------------------------
    # registers (properties)

    def _property_get(self, offset: int, size: int) -> int:
        cmd = PropertyGet(ofst=offset, attrib_size=1 if size == 8 else 0)
        status, dw0, dw1 = self._admin().command(cmd, None, self._command_timeout())
        if not status.ok:
            raise TransportError(f"Property Get {offset:#x}: {status}")
        return dw0 | dw1 << 32 if size == 8 else dw0

    def _property_set(self, offset: int, value: int, size: int = 4) -> None:
        cmd = PropertySet(ofst=offset, attrib_size=1 if size == 8 else 0, value=value)
        status, _, _ = self._admin().command(cmd, None, self._command_timeout())
        if not status.ok:
            raise TransportError(f"Property Set {offset:#x} = {value:#x}: {status}")

    def reg_read32(self, offset: int) -> int:
        try:
            return self._property_get(offset, 4)
        except TransportError as exc:
            log.debug("Property Get %#x: %s", offset, exc)
            return 0xFFFFFFFF

    def reg_read64(self, offset: int) -> int:
        return self._property_get(offset, 8)

    def reg_write32(self, offset: int, value: int) -> None:
        self._property_set(offset, value, 4)

    # ------------------------------------------------------------------
    # bring-up

    def _sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds unless the transport or controller closes."""
        deadline = time.monotonic() + delay
        while True:
            ctrl = self.ctrl
            if self._closed or (ctrl is not None and getattr(ctrl, "_closed", False)):
                raise TransportError("the controller is being removed")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 0.05))

    def enable_device(self) -> None:
        """Connect the admin queue (a new association: controller ID FFFFh)."""
        if self._closed:
            raise TransportError("the transport is closed")
        if self._recovering:
            # Linux's error recovery schedules the first reconnect after the delay.
            self._recovering = False
            log.info("%s:%d: reconnecting in %g s", self.addr, self.port, self.reconnect_delay)
            self._sleep(self.reconnect_delay)
        self.remove_queues()  # what is left of an earlier association
        self.cntlid = None
        queue = self._open(0, ADMIN_QUEUE_ENTRIES - 1, polled=False, max_icd=ADMIN_MAX_ICD)
        try:
            self.cntlid = self._fabrics_connect(queue, 0, ADMIN_QUEUE_ENTRIES, CNTLID_DYNAMIC)
        except BaseException:
            queue.stop()
            raise
        with self._lock:
            self.queues[0] = queue
        log.info("%s:%d: connected to %s, controller %d", self.addr, self.port, self.subnqn, self.cntlid)

    def setup_admin_queue(self, entries: int, reserved: int) -> HostQueue:
        queue = self._admin()
        queue.retag(min(entries, ADMIN_QUEUE_ENTRIES) - 1, reserved)
        return queue

    def create_io_queue(self, qid: int, entries: int, *, polled: bool) -> HostQueue:
        if self.cntlid is None:
            raise TransportError("no controller: the admin queue is not connected")
        idc = self.ctrl.identify if self.ctrl is not None else None
        entries = min(entries, self.queue_size)
        if idc is not None and idc.maxcmd:
            entries = min(entries, idc.maxcmd)
        entries = max(2, entries)
        icd = 0
        if idc is not None:
            if idc.icdoff:
                raise TransportError(f"ICDOFF {idc.icdoff} is not supported (Linux neither)")
            icd = max(0, idc.ioccsz * 16 - 64)
        queue = self._open(qid, entries - 1, polled=polled, max_icd=icd)
        try:
            self._fabrics_connect(queue, qid, entries, self.cntlid)
        except BaseException:
            queue.stop()
            raise
        with self._lock:
            self.queues[qid] = queue
        return queue

    def delete_io_queue(self, queue: HostQueue) -> None:
        """Close the queue's connection (Linux sends no Disconnect either)."""
        self._forget(queue)

    def _forget(self, queue: HostQueue) -> None:
        with self._lock:
            if self.queues.get(queue.qid) is queue:
                del self.queues[queue.qid]
        if isinstance(queue, TcpQueue):
            queue.stop()

    def disable(self, shutdown: bool, timeout: float) -> bool:
        """The I/O queues' connections close first (Linux's teardown order),
        then CC.SHN = normal (``shutdown``) or CC.EN = 0 through Property
        Set, waiting for CSTS.SHST = complete or CSTS.RDY = 0."""
        with self._lock:
            io = [q for qid, q in self.queues.items() if qid]
        for queue in io:
            self._forget(queue)
        try:
            cc = self._property_get(Reg.CC, 4)
            if shutdown:
                self._property_set(Reg.CC, (cc & ~_CC_SHN_MASK) | Shn.NORMAL << 14)
            else:
                self._property_set(Reg.CC, cc & ~(_CC_EN | _CC_SHN_MASK))
            deadline = time.monotonic() + timeout
            while True:
                csts = self._property_get(Reg.CSTS, 4)
                if shutdown and (csts >> 2) & 3 == Shst.COMPLETE:
                    return True
                if not shutdown and not csts & _CSTS_RDY:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(_READY_POLL)
        except TransportError as exc:
            log.info("%s:%d: disabling the controller: %s", self.addr, self.port, exc)
            return False

    def remove_queues(self) -> None:
        with self._lock:
            queues = list(self.queues.values())
            self.queues.clear()
        for queue in queues:
            queue.stop()

    def reconnect_after(self, error: Exception) -> float | None:
        """Linux's nvmf_should_reconnect: not after a Connect refused with
        DNR, and not beyond ``ceil(ctrl_loss_tmo / reconnect_delay)`` failed
        attempts."""
        if self._closed:
            return None
        status = getattr(error, "status", None)
        if isinstance(status, Status) and status.dnr:
            log.error("%s:%d: %s (DNR): not reconnecting", self.addr, self.port, error)
            return None
        self.nr_reconnects += 1
        limit = self.max_reconnects
        if limit is not None and self.nr_reconnects >= limit:
            log.error("%s:%d: controller loss timeout (%d reconnect attempts failed)", self.addr, self.port,
                      self.nr_reconnects)
            return None
        return self.reconnect_delay

    def _connection_lost(self, queue: TcpQueue, reason: str) -> None:
        """A queue's connection ended without us closing it: the core's error
        recovery (LIVE: reset, which tears everything down and reconnects);
        while connecting, its requests are cancelled at once (the attempt
        fails instead of waiting for timeouts)."""
        with self._lock:
            if queue._lost or queue._stopping:
                return
            queue._lost = True
        queue._break(reason)
        ctrl = self.ctrl
        if ctrl is None or self._closed:
            return
        from .core import CtrlState  # late: core imports the transports' users

        state = ctrl.state
        log.warning("%s: queue %d: connection lost: %s", ctrl.name, queue.qid, reason)
        self.connections_lost += 1
        if state in (CtrlState.LIVE, CtrlState.RESETTING):
            self._recovering = True
            ctrl._schedule_reset(f"queue {queue.qid}: {reason}")
        elif state == CtrlState.CONNECTING:
            for req in queue.snapshot():
                if queue.release(req):
                    req.noretry = True
                    ctrl._cancel(req)
            with queue.lock:
                waiting = list(queue.waiting)
                queue.waiting.clear()
            for req in waiting:
                ctrl._fail(req, TransportError(f"queue {queue.qid}: connection lost ({reason})"))

    def error_recovery(self, reason: str) -> None:
        """A command timed out (Linux's nvme_tcp_timeout ->
        nvme_tcp_error_recovery): the path may be silent, so every
        connection of the association is torn down now -- the reset then
        reads all ones instead of waiting on Property Gets, and the
        transport's own commands waiting on the old connections fail at
        once.  The first reconnection waits the reconnect delay, as after a
        lost connection."""
        with self._lock:
            queues = list(self.queues.values())
            self._recovering = True
            for queue in queues:
                queue._lost = True  # the core is resetting already: no second recovery
        if queues:
            log.warning("%s:%d: error recovery: %s: closing the association's connections", self.addr,
                        self.port, reason)
        for queue in queues:
            queue._break(f"error recovery ({reason})")

    # ------------------------------------------------------------------
    # data path

    def submit(self, queue: HostQueue, reqs: list["HostRequest"]) -> list["HostRequest"]:
        rejected = queue.submit(reqs)
        if isinstance(queue, TcpQueue) and queue.broken and not queue._stopping:
            self._connection_lost(queue, queue.broken)
        return rejected

    def map_data(self, req: "HostRequest", queue: HostQueue) -> None:
        """The command's SGL (as Linux's nvme_tcp_map_data): no data -- a
        null transport data block; a write that fits the capsule -- a data
        block at offset 0 of the in-capsule data; otherwise a transport data
        block (R2T/H2CData or C2HData)."""
        raw = req.cmd.raw
        req.mapping = None
        if req.meta and any(mv.nbytes for mv in req.meta):
            raise TransportError("NVMe/TCP has no separate metadata buffer (use extended LBA formats)")
        data = req.data
        if len(data) == 1 and data[0].nbytes:  # the usual one buffer
            views = data
            length = data[0].nbytes
        else:
            views = [mv for mv in data if mv.nbytes]
            length = sum(mv.nbytes for mv in views)
        direction = req.direction
        raw[1] = (raw[1] & 0x3F) | Psdt.SGL_MPTR_CONTIGUOUS << 6
        if not length or direction == DIR_NONE:
            _MPTR_SGL.pack_into(raw, 16, 0, 0, 0, _SGL_TRANSPORT)
            return
        if direction == DIR_TO_DEVICE:
            limit = ADMIN_MAX_ICD if raw[0] == FABRICS_OPCODE else getattr(queue, "inline_size", 0)
            in_capsule = length <= limit
            # In-capsule: a data block at offset 0 (ICDOFF 0) of the capsule's data.
            _MPTR_SGL.pack_into(raw, 16, 0, 0, length, _SGL_IN_CAPSULE if in_capsule else _SGL_TRANSPORT)
            req.mapping = _TcpData(views, length, True, in_capsule)
        elif direction == DIR_FROM_DEVICE:
            _MPTR_SGL.pack_into(raw, 16, 0, 0, length, _SGL_TRANSPORT)
            req.mapping = _TcpData(views, length, False, False)
        else:
            raise TransportError("NVMe/TCP does not carry bidirectional data")

    def unmap_data(self, req: "HostRequest") -> None:
        req.mapping = None

    # ------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        self.remove_queues()

    def __repr__(self) -> str:
        return f"<TcpTransport {self.addr}:{self.port} {self.subnqn} cntlid={self.cntlid}>"


# ---------------------------------------------------------------------------
# discovery, connect, disconnect


_TRANSPORT_OPTIONS = frozenset({
    "hostnqn", "hostid", "hdr_digest", "data_digest", "kato", "reconnect_delay", "ctrl_loss_tmo", "queue_size",
    "disable_sqflow", "connect_timeout", "command_timeout", "hpda",
})


def _read_log(ctrl: "NvmeController", offset: int, length: int, rae: bool) -> bytearray:
    """Bytes ``offset``.. of the Discovery log page, 4 KiB per command."""
    out = bytearray(length)
    pos = 0
    while pos < length:
        n = min(LOG_PAGE_CHUNK, length - pos)
        out[pos : pos + n] = ctrl.get_log_page(LogPageId.DISCOVERY, n, nsid=0, rae=rae, offset=offset + pos)
        pos += n
    return out


def get_discovery_log(ctrl: "NvmeController", max_retries: int = DISCOVERY_RETRIES) -> DiscoveryLog:
    """Read the Discovery log page through a connected discovery controller
    as nvme-cli does: the header, then the entries, then the header once
    more; while the generation counter differs, from the start again (at
    most ``max_retries`` times)."""
    tries = 0
    while True:
        header = DiscoveryLogHeader.from_bytes(_read_log(ctrl, 0, DISCOVERY_LOG_HEADER_SIZE, True))
        genctr, numrec = header.genctr, header.numrec
        if numrec == 0:
            return DiscoveryLog(genctr, [])
        body = _read_log(ctrl, DISCOVERY_LOG_HEADER_SIZE, numrec * DISCOVERY_LOG_ENTRY_SIZE, True)
        again = DiscoveryLogHeader.from_bytes(_read_log(ctrl, 0, DISCOVERY_LOG_HEADER_SIZE, False))
        tries += 1
        if again.genctr == genctr:
            if again.numrec != numrec:
                raise NvmeHostError(f"discovery log: NUMREC changed from {numrec} to {again.numrec} "
                                    f"with the same generation counter {genctr}")
            entries = [DiscoveryLogEntry.from_bytes(body[i * DISCOVERY_LOG_ENTRY_SIZE : (i + 1)
                                                         * DISCOVERY_LOG_ENTRY_SIZE]) for i in range(numrec)]
            return DiscoveryLog(genctr, entries)
        log.info("discovery log: generation counter %d -> %d, reading again", genctr, again.genctr)
        if tries >= max_retries:
            raise NvmeHostError(f"discovery log: the generation counter kept changing ({tries} reads)")


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    transport = {k: v for k, v in options.items() if k in _TRANSPORT_OPTIONS}
    controller = {k: v for k, v in options.items() if k not in _TRANSPORT_OPTIONS}
    return transport, controller


def discover(addr: str, port: int = DISCOVERY_PORT, hostnqn: str | None = None, *,
             max_retries: int = DISCOVERY_RETRIES, subnqn: str = DISCOVERY_NQN,
             **options: Any) -> list[DiscoveryLogEntry]:
    """The Discovery log entries of the discovery controller at
    ``addr``:``port`` (``nvme discover``): connect, read the log page
    (:func:`get_discovery_log`), disconnect.  ``options`` go to
    :class:`TcpTransport` (digests, hostid, timeouts) and
    :class:`~nvmestack.host.core.NvmeController` (timeouts)."""
    return discover_log(addr, port, hostnqn, max_retries=max_retries, subnqn=subnqn, **options).entries


def discover_log(addr: str, port: int = DISCOVERY_PORT, hostnqn: str | None = None, *,
                 max_retries: int = DISCOVERY_RETRIES, subnqn: str = DISCOVERY_NQN,
                 **options: Any) -> DiscoveryLog:
    """:func:`discover` with the generation counter."""
    from .core import NvmeController

    topts, copts = _split_options(options)
    copts.setdefault("io_queues", 0)
    copts.setdefault("aen_commands", 0)
    transport = TcpTransport(addr, port, subnqn=subnqn, hostnqn=hostnqn, **topts)
    ctrl = NvmeController(transport, **copts)
    try:
        return get_discovery_log(ctrl, max_retries)
    finally:
        ctrl.shutdown()


def connect(addr: str, port: int = IO_PORT, subnqn: str | None = None, hostnqn: str | None = None,
            **options: Any) -> "NvmeController":
    """A live controller of ``subnqn`` at ``addr``:``port`` over NVMe/TCP
    (``nvme connect``).  ``options`` go to :class:`TcpTransport` (hostid,
    digests, kato, reconnect_delay, ctrl_loss_tmo, queue_size, ...) and to
    :class:`~nvmestack.host.core.NvmeController` (io_queues, timeouts,
    name, ...).  ControllerDeadError when it cannot be brought up."""
    from .core import NvmeController

    if subnqn is None:
        raise ValueError("connect needs the subsystem NQN")
    topts, copts = _split_options(options)
    transport = TcpTransport(addr, port, subnqn=subnqn, hostnqn=hostnqn, **topts)
    return NvmeController(transport, **copts)


def connect_all(addr: str, port: int = DISCOVERY_PORT, hostnqn: str | None = None,
                **options: Any) -> list["NvmeController"]:
    """``nvme connect-all``: discover, then connect to every NVM subsystem
    the log names on a TCP port (IPv4/IPv6); options as :func:`connect`."""
    topts, _ = _split_options(options)
    disc_opts = {k: v for k, v in topts.items() if k not in ("kato", "queue_size")}
    entries = discover(addr, port, hostnqn, **disc_opts)
    ctrls = []
    try:
        for entry in entries:
            if entry.trtype != TransportType.TCP or entry.subtype != SubsystemType.NVM:
                continue
            if entry.adrfam not in (AddressFamily.IPV4, AddressFamily.IPV6):
                continue
            ctrls.append(connect(entry.traddr.strip(), int(entry.trsvcid.strip()), entry.subnqn, hostnqn,
                                 **options))
    except BaseException:
        for ctrl in ctrls:
            ctrl.shutdown()
        raise
    return ctrls


def disconnect(ctrl: "NvmeController") -> bool:
    """``nvme disconnect``: shut the controller down (CC.SHN through Property
    Set) and close its connections; returns whether the shutdown completed."""
    return ctrl.shutdown()
