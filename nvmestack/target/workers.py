"""Worker processes for the I/O queues of an NVMe/TCP target.

A queue per core, as Linux does it: in CPython that means processes.
``TcpTarget(workers=N)`` (``nvmestack serve --workers N``) starts N worker
processes, each with its own event loop (the same :class:`~.tcp._EventLoop`
and :class:`~.tcp.TcpConnection` code as the main process).

* The **main process** accepts every connection and runs its handshake: the
  ICReq and the Fabrics Connect (read one PDU at a time, so that it never
  reads past the Connect).  It keeps the admin queues, the controllers, the
  subsystems and everything controller-wide.
* After an I/O queue's Connect succeeded and its answer went out, the main
  process hands the socket to the worker with the fewest queues
  (``SCM_RIGHTS`` over the worker's AF_UNIX stream, :class:`_Channel`),
  with the queue's state: the negotiated PDU parameters (the worker's
  stream makes the same ICReq negotiation again), QID, SQ size and head,
  SQ flow control, the output not sent yet.  In the association the
  connection is replaced by a :class:`WorkerQueue`, the main process's
  handle of the queue.
* The worker serves Read, Write and Flush on its fast path: the same
  :class:`~.fastpath.FastIo` code, over a replica of what it needs (the
  controller's readiness and write cache, each active namespace's plain
  geometry) and the namespace's file, whose descriptor comes with
  ``SCM_RIGHTS``.  Memory-backed namespaces cannot be shared: their
  commands are forwarded like any other.
* Everything the fast path declines is **forwarded**: the main process runs
  it on the general path (``_GeneralPath``, the code a connection of the
  main process runs) in the context of the controller's I/O queue; an R2T
  it wants goes out through the worker, the H2CData comes back, and the
  completion (with read data) returns to the worker, which sends it.  The
  host sees the statuses it would see without workers.
* Anything that changes what a fast path may do -- an admin command
  (namespace management and attachment, Format NVM, Set Features, CC
  writes, sanitize), a forwarded command other than plain I/O (Write
  Uncorrectable), a namespace added or removed, a fault rule armed --
  bumps a **generation** counter in shared memory *before* the host can
  learn of it.  A worker reads it once per batch of received commands;
  when it moved, the worker waits for the main process's new state (at
  most ``_SYNC_WAIT``; without it in time it forwards everything until it
  comes), so the next command sees the change as in one process.
* Each queue has a slot in the same shared memory: its SMART counters
  (summed by ``Health`` like any queue's :class:`~.health.IoCounters`)
  and the time of its last traffic (the keep-alive timer counts I/O as a
  sign of life, as without workers).
* A teardown (admin queue lost, keep alive timeout, Disconnect of the
  association, the target stopping) closes the queue in its worker; a
  connection the host closes in a worker releases the queue in the main
  process.  A worker that dies is noticed at once (its channel ends): its
  queues are released (the host's connections closed with it) and a new
  worker takes its place.

The messages between the processes are private to this module (a frame
of length, kind and descriptor count, then a pickle): no NVMe wire format.
"""

from __future__ import annotations

import array
import itertools
import logging
import mmap
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from ..spec.cqe import Completion
from ..spec.opcodes import FABRICS_OPCODE, AdminOpcode, FabricsType
from ..spec.tcp import DigestType
from ..tcp import DEFAULT_MAXH2CDATA, ControllerStream, HostStream
from .backend import FileBackend
from .fastpath import FastIo
from .health import IoCounters
from .io import write_cache_enabled
from .namespace import FastGeometry
from .tcp import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IN_CAPSULE_DATA_SIZE,
    TcpConnection,
    _EventLoop,
    _KEEPS_IO_STATE,
    _GeneralPath,
    _Write,
)

__all__ = ["WorkerPool", "WorkerQueue", "worker_main"]

log = logging.getLogger(__name__)

# Messages, main process -> worker.
_FILE, _STATE, _HANDOFF, _R2T, _DONE, _ABORT, _STOP, _RELEASED, _TERMINATE = range(1, 10)
# Messages, worker -> main process.
_CMD, _DATA, _WRITE, _CLOSED, _REFRESH = range(16, 21)

_FRAME = struct.Struct("<IBB")  # payload length, kind, descriptors that came with it
_RECV = 1 << 18
_ANC = socket.CMSG_SPACE(64 * 4)
_MAX_FDS = 32  # descriptors one message carries at most

# Shared memory: the generation, then one slot per queue.
_GEN = struct.Struct("<Q")
_SLOT = struct.Struct("<QQQQdd")  # bytes read/written, read/write commands, busy seconds, last traffic
_SLOTS_AT = 64
MAX_QUEUES = 65536
"""I/O queues the workers of one target serve at once (shared memory slots)."""
_SHM_SIZE = _SLOTS_AT + _SLOT.size * MAX_QUEUES
_READ_ONLY_ADMIN = frozenset(int(op) for op in (
    AdminOpcode.GET_LOG_PAGE, AdminOpcode.IDENTIFY, AdminOpcode.GET_FEATURES, AdminOpcode.KEEP_ALIVE,
    AdminOpcode.ASYNC_EVENT_REQUEST))
_PROPERTY_GET = int(FabricsType.PROPERTY_GET)
_SYNC_WAIT = 1.0  # seconds a worker waits for the state after a change before it forwards instead
_MIN_LIFE = 2.0  # seconds a worker must have lived to be replaced when it dies (no respawn loop)


class _Channel:
    """One end of the AF_UNIX stream between the main process and a
    worker: framed messages, with descriptors (``SCM_RIGHTS``), sent from
    any thread (queued, written by the event loop), received by the event
    loop and handed to ``on_message(kind, obj, fds)``; ``on_end()`` once
    when it ends."""

    def __init__(self, sock: socket.socket, loop: _EventLoop, on_message: Callable, on_end: Callable):
        sock.setblocking(False)
        self.sock = sock
        self.loop = loop
        self.on_message = on_message
        self.on_end = on_end
        self._queue: deque = deque()  # [view, fds, things to close once sent]
        self._lock = threading.Lock()
        self._in = bytearray()
        self._fds: deque[int] = deque()
        self._dead = False
        self._gone = False
        self._reading = True  # for _EventLoop._modify
        self._pending = ()
        self._want_write = False

    @property
    def closed(self) -> bool:
        return self._gone

    def register(self) -> None:
        self.loop.selector.register(self.sock, 1, self)  # selectors.EVENT_READ
        self.loop._wake()

    def send(self, kind: int, obj: Any, fds: list[int] = (), close: list = ()) -> bool:
        """Queue a message (from any thread); ``close``: descriptors or
        sockets to close once it is sent."""
        body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _FRAME.pack(len(body), kind, len(fds)) + body
        with self._lock:
            if self._gone:
                _close_all(close)
                return False
            self._queue.append([memoryview(frame), list(fds), list(close)])
        self.loop.poke(self)
        return True

    # -- event loop -------------------------------------------------------------------

    def _flush(self, interest: bool = True) -> None:
        with self._lock:
            queue = self._queue
            while queue and not self._dead:
                item = queue[0]
                view, fds, close = item
                try:
                    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
                    n = self.sock.sendmsg([view], anc)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    self._dead = True
                    break
                if fds or close:
                    _close_all(close)
                    item[1] = item[2] = []
                if n < view.nbytes:
                    item[0] = view[n:]
                    break
                queue.popleft()
            want = bool(queue) and not self._dead
        if interest and want != self._want_write:
            self._want_write = want
            self.loop.want_write(self, want)

    def _flushed(self) -> None:
        if self._dead:
            self._close()

    def _writable(self) -> None:
        self._flush()
        self._flushed()

    def _readable(self) -> None:
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(_RECV, _ANC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, anc = b"", []
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                self._fds.extend(fds)
        if not data:
            self._close()
            return
        buf = self._in
        buf += data
        pos = 0
        while len(buf) - pos >= _FRAME.size:
            length, kind, nfds = _FRAME.unpack_from(buf, pos)
            end = pos + _FRAME.size + length
            if len(buf) < end:
                break
            obj = pickle.loads(bytes(buf[pos + _FRAME.size : end]))
            fds = [self._fds.popleft() for _ in range(min(nfds, len(self._fds)))]
            pos = end
            try:
                self.on_message(kind, obj, fds)
            except Exception:  # a bug must not end the channel
                log.exception("worker channel: message %d failed", kind)
        del buf[:pos]

    def flush_blocking(self, timeout: float) -> None:
        """Send what is queued, waiting up to ``timeout`` (outside the loop)."""
        deadline = time.monotonic() + timeout
        while True:
            self._flush(interest=False)
            with self._lock:
                if not self._queue or self._dead:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                select.select([], [self.sock], [], min(left, 0.05))
            except (OSError, ValueError):
                return

    def _close(self) -> None:
        if self._gone:
            return
        with self._lock:
            self._gone = True
            self._dead = True
            queued, self._queue = self._queue, deque()
        self.loop.forget(self)
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass
        for item in queued:
            _close_all(item[2])
        while self._fds:
            _close_all([self._fds.popleft()])
        self.on_end()

    def __repr__(self) -> str:
        return f"<worker channel fd {self.sock.fileno()}>"


def _close_all(things: list) -> None:
    for thing in things:
        try:
            if isinstance(thing, int):
                os.close(thing)
            else:
                thing.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# The main process


class _SlotCounters:
    """A worker queue's :class:`~.health.IoCounters`, read from its shared
    memory slot (the worker writes it before it sends each batch's answers)."""

    __slots__ = ("_shm", "_off")

    def __init__(self, shm: mmap.mmap, off: int):
        self._shm = shm
        self._off = off

    def _field(index: int) -> property:  # noqa: N805 - a class-body helper
        return property(lambda self: _SLOT.unpack_from(self._shm, self._off)[index])

    bytes_read = _field(0)
    bytes_written = _field(1)
    host_read_commands = _field(2)
    host_write_commands = _field(3)
    busy_seconds = _field(4)
    last_traffic = _field(5)
    del _field


assert set(IoCounters.__slots__) <= set(dir(_SlotCounters))


class WorkerQueue(_GeneralPath):
    """An I/O queue a worker process serves, as the main process sees it:
    the association's handle of the queue (:meth:`abort`), the general path
    of the commands the worker forwards (the same code a connection of the
    main process runs), and its SMART counters."""

    def __init__(self, pool: "WorkerPool", worker: "_Worker", token: int, conn: TcpConnection, slot: int,
                 ctoken: int):
        self.pool = pool
        self.target = pool.target
        self.worker = worker
        self.token = token
        self.conn = conn  # the main process's connection object (counted on its port until the queue ends)
        self.ctrl = conn.ctrl
        self.qid = conn.qid
        self.sqsize = conn.sqsize
        self.slot = slot
        self.ctoken = ctoken
        self.peer = conn.peer
        self._writes: dict = {}
        self._dead = False
        self.counters = _SlotCounters(pool.shm, _SLOTS_AT + slot * _SLOT.size)

    @property
    def closed(self) -> bool:
        return self._dead

    def abort(self) -> None:
        """Close the queue's connection (from any thread): its worker does."""
        if not self._dead:
            self.worker.channel.send(_ABORT, (self.token,))

    def terminate(self, fes: int, fei: int = 0) -> None:
        """End the connection with a C2HTermReq (from any thread)."""
        if not self._dead:
            self.worker.channel.send(_TERMINATE, (self.token, fes, fei))

    def _ask_data(self, cid: int, length: int) -> None:
        self.worker.channel.send(_R2T, (self.token, cid, length))

    def _answer(self, cid: int, cqe: Any, data: list | None, cancel: bool, disconnect: bool) -> None:
        raw = cqe.raw if hasattr(cqe, "raw") else memoryview(cqe)
        payload = None if data is None else b"".join(data)
        self.worker.channel.send(_DONE, (self.token, cid, bytes(raw[:16]), payload, cancel, disconnect))

    def __repr__(self) -> str:
        return f"<WorkerQueue ctrl {self.ctrl.cntlid} qid {self.qid} in worker {self.worker.index}>"


class _Worker:
    """A worker process as the main process sees it."""

    def __init__(self, index: int):
        self.index = index
        self.process: subprocess.Popen | None = None
        self.channel: _Channel | None = None
        self.alive = False
        self.started = 0.0
        self.queues: dict[int, WorkerQueue] = {}
        self.files: dict[int, FileBackend] = {}  # the namespace files it has a descriptor of
        self.sent: dict[int, tuple] = {}  # the controller states it was last sent

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class WorkerPool:
    """The worker processes of a :class:`~.tcp.TcpTarget` (main process side)."""

    def __init__(self, target: Any, count: int):
        self.target = target
        self.count = count
        self.lock = threading.Lock()
        self._shm_fd = -1
        self.shm: mmap.mmap | None = None  # while started
        self.generation = 0
        self.workers: list[_Worker] = []
        self.queues: dict[int, WorkerQueue] = {}
        self._tokens = itertools.count(1)
        self._file_keys = itertools.count(1)
        self._free_slots = list(range(MAX_QUEUES - 1, -1, -1))
        self._ctokens: dict[Any, int] = {}
        self._ctoken_seq = itertools.count(1)
        self._stopping = False

    # -- life -------------------------------------------------------------------------

    def watch(self, subsystem: Any) -> None:
        """Bump the generation whenever ``subsystem``'s I/O state changes."""
        if self.bump not in subsystem.io_state_hooks:
            subsystem.io_state_hooks.append(self.bump)

    def bump(self) -> None:
        """What a fast path may do may have changed: workers look again
        before their next batch of commands."""
        with self.lock:
            self.generation += 1
            if self.shm is not None:
                _GEN.pack_into(self.shm, 0, self.generation)

    def after_command(self, queue: Any, req: Any) -> None:
        """A command ran on the general path of ``queue`` (main process):
        bump the generation when it may have changed what a fast path may
        do.  Admin commands other than those that only read do; so do I/O
        commands other than plain data movement (Write Uncorrectable), and
        a forwarded command after which its controller's state differs from
        what its worker has (a write that cleared an uncorrectable mark)."""
        opcode = req.opcode
        if queue.qid == 0:
            if opcode in _READ_ONLY_ADMIN or (opcode == FABRICS_OPCODE and req.sqe.nsid & 0xFF == _PROPERTY_GET):
                return
            self.bump()
        elif opcode not in _KEEPS_IO_STATE:
            self.bump()
        elif type(queue) is WorkerQueue:
            sent = queue.worker.sent.get(queue.ctoken)
            if sent is not None and sent != self._controller_state(queue.ctrl):
                self.bump()

    def start(self) -> None:
        self._stopping = False
        self._shm_fd = os.memfd_create("nvmestack-workers", os.MFD_CLOEXEC)
        os.ftruncate(self._shm_fd, _SHM_SIZE)
        self.shm = mmap.mmap(self._shm_fd, _SHM_SIZE)
        _GEN.pack_into(self.shm, 0, self.generation)
        self._free_slots = list(range(MAX_QUEUES - 1, -1, -1))
        self.workers = [self._spawn(i) for i in range(self.count)]

    def _spawn(self, index: int) -> _Worker:
        worker = _Worker(index)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["NVMESTACK_WORKER_LOG_LEVEL"] = str(logging.getLogger().getEffectiveLevel())
        code = "import sys; from nvmestack.target.workers import worker_main; sys.exit(worker_main(sys.argv[1:]))"
        try:
            worker.process = subprocess.Popen(
                [sys.executable, "-c", code, str(child.fileno()), str(self._shm_fd), str(index)],
                pass_fds=(child.fileno(), self._shm_fd), env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.error("NVMe/TCP target: worker %d could not start: %s", index, exc)
            parent.close()
            return worker
        finally:
            child.close()
        worker.alive = True
        worker.started = time.monotonic()
        worker.channel = _Channel(parent, self.target._loop, lambda kind, obj, fds: self._message(worker, kind, obj, fds),
                                  lambda: self._lost(worker))
        worker.channel.register()
        log.info("NVMe/TCP target: worker %d is process %d", index, worker.process.pid)
        return worker

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker (its connections close, its last counts come
        in), wait for the processes, release what is left."""
        self._stopping = True
        workers = list(self.workers)
        for worker in workers:
            if worker.alive:
                worker.channel.send(_STOP, None)
        deadline = time.monotonic() + timeout
        for worker in workers:
            if worker.process is None:
                continue
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("NVMe/TCP target: worker %d did not stop; killed", worker.index)
                worker.process.kill()
                worker.process.wait()
        for worker in workers:  # the event loop reads their last messages and the end
            end = time.monotonic() + 2.0
            while worker.channel is not None and not worker.channel.closed and time.monotonic() < end:
                time.sleep(0.01)
            if worker.channel is not None and not worker.channel.closed:
                worker.channel._close()
        self.workers = []
        for queue in list(self.queues.values()):  # (a channel closed from here)
            self._release(queue)
        with self.lock:
            shm, self.shm = self.shm, None
        if shm is not None:
            shm.close()
            os.close(self._shm_fd)
            self._shm_fd = -1

    def _lost(self, worker: _Worker) -> None:
        """A worker's channel ended: it exited or died (event loop thread)."""
        worker.alive = False
        for queue in list(worker.queues.values()):
            self._release(queue)
        worker.files.clear()
        status = worker.process.poll() if worker.process is not None else None
        if status is None and worker.process is not None:
            try:
                status = worker.process.wait(1.0)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                status = worker.process.wait()
        if self._stopping:
            return
        log.warning("NVMe/TCP target: worker %d (process %s) ended (status %s); its connections are closed",
                    worker.index, worker.pid, status)
        if time.monotonic() - worker.started < _MIN_LIFE:
            log.error("NVMe/TCP target: worker %d died at once; not started again", worker.index)
            return
        if worker in self.workers:
            self.workers[self.workers.index(worker)] = self._spawn(worker.index)

    # -- queues -----------------------------------------------------------------------

    def hand_off(self, conn: TcpConnection) -> None:
        """``conn`` (main process, event loop) just connected an I/O queue
        and sent the answer: a worker serves it from now on."""
        ctrl, qid = conn.ctrl, conn.qid
        live = [w for w in self.workers if w.alive]
        if self._stopping or not live or not self._free_slots:
            log.warning("NVMe/TCP target: no worker for queue %d of controller %d; served here", qid, ctrl.cntlid)
            conn._serve_io_queue(ctrl, self.target.fast_path)
            return
        worker = min(live, key=lambda w: len(w.queues))
        with self.lock:
            slot = self._free_slots.pop()
            token = next(self._tokens)
            ctoken = self._ctokens.get(ctrl)
            if ctoken is None:
                ctoken = self._ctokens[ctrl] = next(self._ctoken_seq)
        _SLOT.pack_into(self.shm, _SLOTS_AT + slot * _SLOT.size, 0, 0, 0, 0, 0.0, time.monotonic())
        queue = WorkerQueue(self, worker, token, conn, slot, ctoken)
        if not self.target.replace_queue(ctrl, qid, conn, queue):
            with self.lock:
                self._free_slots.append(slot)
            conn._close()  # the association ended meanwhile
            return
        stream = conn.stream
        params = {
            "token": token, "ctoken": ctoken, "qid": qid, "sqsize": conn.sqsize, "sqhd": conn._sqhd,
            "sqflow_disabled": conn.sqflow_disabled, "peer": conn.peer, "fast_path": self.target.fast_path,
            "cpda": stream.cpda, "maxh2cdata": stream.maxh2cdata, "max_icd": stream.max_icd,
            "max_c2h_data": stream.max_c2h_data, "hdgst": stream.hdgst, "ddgst": stream.ddgst,
            "hpda": stream.hpda, "maxr2t": stream.maxr2t, "slot": slot,
            "pending": b"".join(bytes(b) for b in conn._pending),  # the answer to the Connect, if the socket did not take it
        }
        # The main process's connection lets go of the socket (it stays
        # counted on its port until the queue ends).
        conn._pending = []
        conn.ctrl = None
        conn._dead = True
        self.target._loop.forget(conn)
        conn._closed.set()
        with self.lock:
            worker.queues[token] = queue
            self.queues[token] = queue
        ctrl.subsystem.health.attach_counters(queue.counters)
        self._send_state(worker)
        worker.channel.send(_HANDOFF, params, fds=[conn.sock.fileno()], close=[conn.sock])

    def _release(self, queue: WorkerQueue) -> None:
        """The queue ended in its worker (or the worker did)."""
        with self.lock:
            if self.queues.pop(queue.token, None) is None:
                return
            queue.worker.queues.pop(queue.token, None)
        queue._dead = True
        ctrl = queue.ctrl
        ctrl.subsystem.health.retire_counters(queue.counters)
        with self.lock:
            _SLOT.pack_into(self.shm, _SLOTS_AT + queue.slot * _SLOT.size, 0, 0, 0, 0, 0.0, 0.0)
            self._free_slots.append(queue.slot)
            if not any(q.ctrl is ctrl for q in self.queues.values()):
                self._ctokens.pop(ctrl, None)
        self.target.queue_closed(ctrl, queue.qid, queue)
        self.target._connection_done(queue.conn)
        if queue.worker.alive:
            # The worker closes the socket now: a host that sees it closed
            # finds the queue free (a Disconnect, then a new Connect).
            queue.worker.channel.send(_RELEASED, (queue.token,))

    def collect_traffic(self) -> None:
        """Fold the workers' last I/O into their controllers' keep alive."""
        for queue in list(self.queues.values()):
            seen = queue.counters.last_traffic
            if seen > queue.ctrl.last_keep_alive:
                queue.ctrl.last_keep_alive = seen

    # -- messages ---------------------------------------------------------------------

    def _message(self, worker: _Worker, kind: int, obj: Any, fds: list[int]) -> None:
        _close_all(fds)  # workers send none
        if kind == _REFRESH:
            self._send_state(worker)
            return
        queue = worker.queues.get(obj[0])
        if queue is None:
            return  # gone meanwhile
        if kind == _CMD:
            _, sqe, data, digest_error, conflict = obj
            queue._general_command(sqe, None if data is None else memoryview(data), digest_error, conflict)
        elif kind == _DATA:
            _, cid, data, bad = obj
            write = queue._writes.get(cid)
            if write is not None and write.req is not None:
                del queue._writes[cid]
                write.views = [memoryview(data)]
                write.bad = bad
                queue._data_in(write)
        elif kind == _WRITE:
            _, sqe, data, bad = obj
            queue._general_write(sqe, [memoryview(data)], bad)
        elif kind == _CLOSED:
            self._release(queue)

    def _send_state(self, worker: _Worker) -> None:
        """What the worker's fast paths may do now (event loop thread)."""
        generation = self.generation  # read first: the state below is at least this new
        ctrls = {q.ctoken: q.ctrl for q in list(worker.queues.values())}
        states = {}
        keys: set[int] = set()
        for ctoken, ctrl in ctrls.items():
            states[ctoken] = self._controller_state(ctrl, worker, keys)
        worker.files = {k: b for k, b in worker.files.items() if k in keys}
        worker.sent = states
        worker.channel.send(_STATE, (generation, states, sorted(keys)))

    def _controller_state(self, ctrl: Any, worker: _Worker | None = None, keys: set[int] | None = None) -> tuple:
        """What the fast path of ``ctrl``'s queues may do (and, for
        ``worker``, the descriptors of the files it lacks are sent)."""
        sub = ctrl.subsystem
        faults = sub.faults
        ready = (faults is None or not faults.rules) and sub.command_gate is None and bool(ctrl.regs.csts.rdy)
        namespaces = []
        for nsid, ns in list(sub.namespaces.items()):
            geo = ns.fast
            if geo is None or ctrl.cntlid not in ns.attached or ns.uncorrectable:
                continue
            backend = geo.backend
            if type(backend) is not FileBackend:
                continue  # memory cannot be shared: its commands are forwarded
            key = getattr(backend, "_worker_key", None)
            if key is None:
                key = backend._worker_key = next(self._file_keys)
            if worker is not None and key not in worker.files:
                try:
                    backend._enter()
                except OSError:
                    continue  # closed meanwhile
                try:
                    fd = os.dup(backend._fd)
                finally:
                    backend._leave()
                worker.channel.send(_FILE, (key, backend.size, backend.path), fds=[fd], close=[fd])
                worker.files[key] = backend
            if keys is not None:
                keys.add(key)
            namespaces.append((nsid, geo.shift, geo.nblocks, key, backend.size))
        return ctrl.cntlid, ctrl.max_transfer, ready, write_cache_enabled(ctrl), namespaces

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.alive and w.pid is not None]


# ---------------------------------------------------------------------------
# A worker process


class _ReplicaHealth:
    """The worker's counters go to shared memory, not to a Health."""

    def attach_counters(self, counters: IoCounters) -> None:
        pass

    def retire_counters(self, counters: IoCounters) -> None:
        pass


class _ReplicaSubsystem:
    def __init__(self) -> None:
        self.namespaces: dict[int, _ReplicaNamespace] = {}  # changed in place (FastIo keeps the dict)
        self.health = _ReplicaHealth()
        self.faults = None
        self.command_gate = None


class _ReplicaFeatures:
    version = 0

    @property
    def saved(self) -> "_ReplicaFeatures":
        return self


class _ReplicaController:
    """What :class:`~.fastpath.FastIo` reads of a controller, as the main
    process last described it."""

    def __init__(self, process: "_WorkerProcess", cntlid: int, max_transfer: int):
        self.process = process
        self.cntlid = cntlid
        self.max_transfer = max_transfer
        self.subsystem = _ReplicaSubsystem()
        self.features = _ReplicaFeatures()
        self.outstanding: dict[tuple[int, int], int] = {}  # forwarded commands not answered yet
        self.ready = False
        self.wce = True
        self.last_keep_alive = 0.0


class _ReplicaNamespace:
    __slots__ = ("nsid", "attached", "fast", "uncorrectable")

    def __init__(self, nsid: int, cntlid: int, geometry: FastGeometry):
        self.nsid = nsid
        self.attached = frozenset((cntlid,))
        self.fast = geometry
        self.uncorrectable = ()  # a namespace with any is not sent (its commands are forwarded)

    def flush(self) -> None:
        self.fast.backend.flush()


class _WorkerFastIo(FastIo):
    """:class:`~.fastpath.FastIo` in a worker: the same command code; what
    it may do comes from the main process (the generation in shared memory
    says when to ask again)."""

    __slots__ = ()

    def ready(self) -> bool:
        ctrl = self.ctrl
        process = ctrl.process
        if _GEN.unpack_from(process.shm, 0)[0] != process.generation and not process.sync_state():
            return False  # no answer in time: forward everything until the new state is in
        return ctrl.ready and not self._closed

    def _write_cache(self) -> bool:
        return self.ctrl.wce


class WorkerConnection(TcpConnection):
    """An I/O queue's connection served in a worker process: the fast path
    here, everything else forwarded to the main process."""

    def __init__(self, process: "_WorkerProcess", sock: socket.socket, p: dict, replica: _ReplicaController):
        super().__init__(process, sock, None, p["peer"])
        digests = DigestType(0)
        if p["hdgst"]:
            digests |= DigestType.HDGST_ENABLE
        if p["ddgst"]:
            digests |= DigestType.DDGST_ENABLE
        stream = ControllerStream(cpda=p["cpda"], maxh2cdata=p["maxh2cdata"], max_icd=p["max_icd"],
                                  digests=digests, max_c2h_data=p["max_c2h_data"])
        # The negotiation the main process did, again: the stream is live as it was.
        icreq = HostStream(hpda=p["hpda"], hdgst=p["hdgst"], ddgst=p["ddgst"], maxr2t=p["maxr2t"]).initiate()
        stream.receive_data(b"".join(bytes(b) for b in icreq))
        self.stream = stream
        self.token = p["token"]
        self.process = process
        self.replica = replica
        self.ctrl = replica
        self.qid = p["qid"]
        self.sqsize = p["sqsize"]
        self.sqflow_disabled = p["sqflow_disabled"]
        self._sqhd = p["sqhd"]
        self.deadline = None
        self._slot = _SLOTS_AT + p["slot"] * _SLOT.size
        self._queue_released = False
        self._shut_wanted = False
        self._serve_io_queue(replica, p["fast_path"], _WorkerFastIo)
        if p["pending"]:
            self._out.append(p["pending"])

    # -- forwarding ---------------------------------------------------------------------

    def _forwarded(self, cid: int) -> None:
        key = (self.qid, cid)
        outstanding = self.replica.outstanding
        outstanding[key] = outstanding.get(key, 0) + 1

    def _general_command(self, sqe: Any, data: memoryview | None, digest_error: bool, conflict: bool) -> None:
        cid = sqe[2] | sqe[3] << 8
        self._forwarded(cid)
        self.process.channel.send(_CMD, (self.token, bytes(sqe), None if data is None else bytes(data),
                                         digest_error, conflict))

    def _general_write(self, sqe: Any, views: list, bad: bool) -> None:
        self._forwarded(sqe[2] | sqe[3] << 8)
        self.process.channel.send(_WRITE, (self.token, bytes(sqe), b"".join(views), bad))

    def _forward_data(self, cid: int, write: _Write) -> None:
        self.process.channel.send(_DATA, (self.token, cid, b"".join(write.views), write.bad))

    def _r2t(self, cid: int, length: int) -> None:
        """The main process wants a forwarded write's data."""
        if self._dead:
            return
        self._writes[cid] = _Write(None, forward=True)
        self._send(self.stream.r2t(cid, 0, length))

    def _done(self, cid: int, cqe: bytes, data: bytes | None, cancel: bool, disconnect: bool) -> None:
        """A forwarded command's completion."""
        key = (self.qid, cid)
        outstanding = self.replica.outstanding
        left = outstanding.get(key, 0) - 1
        if left > 0:
            outstanding[key] = left
        else:
            outstanding.pop(key, None)
        if cancel:
            write = self._writes.get(cid)
            if write is not None and write.forward:
                del self._writes[cid]
        if self._dead:
            return
        self._answer(cid, Completion.view(bytearray(cqe)), None if data is None else [memoryview(data)], cancel,
                     disconnect)

    # -- counters -----------------------------------------------------------------------

    def _publish(self) -> None:
        fast = self.fast
        if fast is not None:
            c = fast.counters
            _SLOT.pack_into(self.process.shm, self._slot, c.bytes_read, c.bytes_written, c.host_read_commands,
                            c.host_write_commands, c.busy_seconds, self.replica.last_keep_alive)

    def _flush(self) -> None:
        self._publish()  # before the answers go: a host that saw them sees them counted
        super()._flush()

    def _release_queue(self) -> None:
        self._publish()  # the last counts, before the main process retires the queue
        super()._release_queue()

    def _released(self) -> None:
        """The main process released the queue (_RELEASED): a host that
        sees the connection end finds the QID free, as in one process."""
        self._queue_released = True
        if self._shut_wanted:
            self._shut_wanted = False
            super()._shutdown_write()

    def _shutdown_write(self) -> None:
        """After a TermReq: the half close waits for the queue's release."""
        if self._queue_released or self.process.channel.closed:
            super()._shutdown_write()
        else:
            self._shut_wanted = True

    def _close_socket(self) -> None:
        """Closed once the main process released the queue."""
        if self._queue_released or self.process.channel.closed:
            super()._close_socket()
        else:
            self.process._closing[self.token] = self.sock

    def __repr__(self) -> str:
        return f"<WorkerConnection {self.peer} ctrl {self.replica.cntlid} qid {self.qid}>"


class _WorkerProcess:
    """A worker: its event loop, its connections, the channel to the main
    process.  Stands in for the target of its connections."""

    # What a TcpConnection reads of its target (the real values come with each queue).
    cpda = 0
    maxh2cdata = DEFAULT_MAXH2CDATA
    in_capsule_data_size = DEFAULT_IN_CAPSULE_DATA_SIZE
    digests = DigestType.HDGST_ENABLE | DigestType.DDGST_ENABLE
    max_c2h_data = None
    handshake_timeout = DEFAULT_HANDSHAKE_TIMEOUT
    fast_path = True
    _pool = None

    def __init__(self, sock: socket.socket, shm: mmap.mmap):
        self.shm = shm
        self.generation = -1
        self._loop = _EventLoop(self)
        self._loop._tid = threading.get_ident()
        self.channel = _Channel(sock, self._loop, self._message, self._main_gone)
        self._listeners: dict = {}
        self._conns: dict[int, WorkerConnection] = {}
        self.replicas: dict[int, _ReplicaController] = {}
        self.files: dict[int, FileBackend] = {}
        self._retired: list[FileBackend] = []
        self._refreshing = False
        self._closing: dict[int, socket.socket] = {}  # sockets waiting for their queue's release

    @property
    def connections(self) -> list[WorkerConnection]:
        return list(self._conns.values())

    def _accept(self, listener: Any, port: Any) -> None:  # pragma: no cover - a worker listens nowhere
        pass

    def _connection_done(self, conn: WorkerConnection) -> None:
        self._conns.pop(conn.token, None)

    def queue_closed(self, ctrl: Any, qid: int, conn: WorkerConnection) -> None:
        self.channel.send(_CLOSED, (conn.token,))

    def sync_state(self) -> bool:
        """The generation moved: ask the main process for the current state
        and wait for it (messages that come meanwhile are handled as
        usual); False when it did not come in time."""
        want = _GEN.unpack_from(self.shm, 0)[0]
        self.refresh()
        self.channel.flush_blocking(_SYNC_WAIT)
        deadline = time.monotonic() + _SYNC_WAIT
        while self.generation < want and not self.channel.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                ready, _, _ = select.select([self.channel.sock], [], [], left)
            except (OSError, ValueError):
                return False
            if ready:
                self.channel._readable()
        return self.generation >= want

    def refresh(self) -> None:
        if not self._refreshing:
            self._refreshing = True
            self.channel.send(_REFRESH, None)

    def run(self) -> None:
        self.channel.register()
        self._loop._run()
        self.channel.flush_blocking(5.0)
        for sock in self._closing.values():
            sock.close()
        for backend in list(self.files.values()) + self._retired:
            backend.close()

    def _main_gone(self) -> None:
        self._loop._stopping = True

    def _message(self, kind: int, obj: Any, fds: list[int]) -> None:
        if kind == _FILE:
            key, size, path = obj
            self.files[key] = FileBackend.adopt(fds[0], size, path)
        elif kind == _STATE:
            self._apply(*obj)
        elif kind == _HANDOFF:
            sock = socket.socket(fileno=fds[0])
            sock.setblocking(False)
            conn = WorkerConnection(self, sock, obj, self.replicas[obj["ctoken"]])
            self._conns[conn.token] = conn
            self._loop.selector.register(sock, 1, conn)  # selectors.EVENT_READ
            if conn._out:
                self._loop.dirty.add(conn)
        elif kind == _STOP:
            self._loop._stopping = True
        elif kind == _RELEASED:
            sock = self._closing.pop(obj[0], None)
            if sock is not None:
                sock.close()
            elif obj[0] in self._conns:
                self._conns[obj[0]]._released()
        else:
            _close_all(fds)
            conn = self._conns.get(obj[0])
            if conn is None:
                return
            if kind == _R2T:
                conn._r2t(obj[1], obj[2])
            elif kind == _DONE:
                conn._done(*obj[1:])
            elif kind == _ABORT:
                conn.abort()
            elif kind == _TERMINATE:
                conn.terminate(obj[1], obj[2])

    def _apply(self, generation: int, states: dict, keys: list[int]) -> None:
        """The main process's description of what the fast paths may do."""
        for ctoken, (cntlid, max_transfer, ready, wce, namespaces) in states.items():
            replica = self.replicas.get(ctoken)
            if replica is None:
                replica = self.replicas[ctoken] = _ReplicaController(self, cntlid, max_transfer)
            replica.ready = ready
            replica.wce = wce
            fresh = {}
            for nsid, shift, nblocks, key, size in namespaces:
                backend = self.files.get(key)
                if backend is None:
                    continue
                backend.size = size
                fresh[nsid] = _ReplicaNamespace(nsid, cntlid, FastGeometry(shift, nblocks, backend))
            replica.subsystem.namespaces.clear()
            replica.subsystem.namespaces.update(fresh)
        in_use = {c.replica for c in self._conns.values()}
        for ctoken in [t for t, r in self.replicas.items() if t not in states and r not in in_use]:
            del self.replicas[ctoken]
        wanted = set(keys)
        for key in [k for k in self.files if k not in wanted]:
            self._retired.append(self.files.pop(key))
        still = []
        for backend in self._retired:  # closed once no sendfile holds it
            if backend._users:
                still.append(backend)
            else:
                backend.close()
        self._retired = still
        self.generation = generation
        self._refreshing = False


def worker_main(argv: list[str]) -> int:
    """The worker process (started by :class:`WorkerPool`): ``CONTROL_FD SHM_FD INDEX``."""
    control_fd, shm_fd, index = (int(a) for a in argv[:3])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process stops its workers
    level = int(os.environ.get("NVMESTACK_WORKER_LOG_LEVEL", logging.WARNING))
    logging.basicConfig(level=level, format=f"%(asctime)s worker {index} %(name)s: %(message)s", stream=sys.stderr)
    shm = mmap.mmap(shm_fd, _SHM_SIZE)
    os.close(shm_fd)
    process = _WorkerProcess(socket.socket(fileno=control_fd), shm)
    process.run()
    return 0
