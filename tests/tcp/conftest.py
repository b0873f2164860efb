"""A raw NVMe/TCP host for the target tests: a socket and the sans-I/O
HostStream, one command at a time (or several, by hand)."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from nvmestack.host import block as host_block_module
from nvmestack.spec.cqe import Completion
from nvmestack.spec.fabrics import Connect, ConnectData, PropertyGet, PropertySet
from nvmestack.spec.registers import Reg
from nvmestack.spec.status import Status
from nvmestack.target import Namespace, Subsystem
from nvmestack.target import tcp as tcp_target
from nvmestack.target.namespace import shared_memory_backends
from nvmestack.target.tcp import TcpTarget
from nvmestack.tcp import (
    C2HDataReceived,
    ConnectionClosed,
    HostStream,
    ICRespReceived,
    ProtocolError,
    R2TReceived,
    ResponseReceived,
    TermReqReceived,
)

from ..io_paths import both_io_paths

NQN = "nqn.2026-11.io.nvmestack:test"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"
TIMEOUT = 20.0


class Reply:
    """What came back for one command."""

    def __init__(self, cqe: bytes | None, data: bytes, success_flag: bool = False):
        self.cqe = Completion.view(bytearray(cqe)) if cqe is not None else Completion()
        self.data = data
        self.success_flag = success_flag

    @property
    def status(self) -> Status:
        return Status.of(self.cqe)

    @property
    def ok(self) -> bool:
        return self.status.ok


class RawHost:
    def __init__(self, addr: tuple[str, int], *, hdgst=False, ddgst=False, hpda=0, maxr2t=0, timeout=TIMEOUT):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = HostStream(hdgst=hdgst, ddgst=ddgst, hpda=hpda, maxr2t=maxr2t)
        self.events: list = []
        self.cid = 0
        self.cntlid = None
        self.hostnqn = HOSTNQN
        self.hostid = uuid.UUID("11111111-2222-3333-4444-555555555555")
        self.icresp = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- plumbing -----------------------------------------------------------------

    def send(self, bufs):
        if isinstance(bufs, (bytes, bytearray)):
            bufs = [bufs]
        self.sock.sendall(b"".join(bytes(b) for b in bufs))

    def pump(self) -> bool:
        """Read once; False when the connection ended."""
        try:
            data = self.sock.recv(1 << 18)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        self.events.extend(self.stream.receive_data(data))
        return bool(data)

    def wait_for(self, pred, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if pred(ev):
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching event; have {self.events}")
            if not self.pump():
                for i, ev in enumerate(self.events):
                    if pred(ev):
                        return self.events.pop(i)
                raise ConnectionError(f"connection closed; events {self.events}")

    def closed_or_terminated(self, timeout=TIMEOUT):
        """The event that ended the connection (TermReq or close)."""
        return self.wait_for(lambda e: isinstance(e, (TermReqReceived, ConnectionClosed, ProtocolError)), timeout)

    def ic(self):
        self.send(self.stream.initiate())
        self.icresp = self.wait_for(lambda e: isinstance(e, ICRespReceived))
        return self.icresp

    def next_cid(self):
        self.cid = (self.cid + 1) & 0xFFFF
        return self.cid

    def submit(self, sqe, data=b"", *, length=None, write=False, in_capsule=None):
        if not sqe.cid:
            sqe.cid = self.next_cid()
        bufs = [data] if data else []
        self.send(self.stream.command(sqe, bufs, length=length, write=write, in_capsule=in_capsule))
        return sqe.cid

    def result(self, cid, data=b"", length=0) -> Reply:
        """Serve R2Ts, gather C2HData, until the command ends."""
        got = bytearray(length)
        while True:
            ev = self.wait_for(lambda e: getattr(e, "cid", None) == cid)
            if isinstance(ev, R2TReceived):
                self.send(self.stream.data_for_r2t(ev, [data]))
            elif isinstance(ev, C2HDataReceived):
                assert not ev.digest_error
                got[ev.offset : ev.offset + len(ev.data)] = ev.data
                if ev.success:
                    return Reply(None, bytes(got), True)
            elif isinstance(ev, ResponseReceived):
                return Reply(bytes(ev.cqe), bytes(got))

    def command(self, sqe, data=b"", *, length=None, write=False, in_capsule=None) -> Reply:
        if length is None:
            length = len(data)
        cid = self.submit(sqe, data, length=length, write=write, in_capsule=in_capsule)
        return self.result(cid, data if write else b"", 0 if write else length)

    # -- fabrics --------------------------------------------------------------------

    def connect_cmd(self, subnqn=NQN, *, qid=0, cntlid=0xFFFF, sqsize=31, kato=0, sqflow_disable=False, hostnqn=None):
        cmd = Connect(qid=qid, sqsize=sqsize, kato=kato)
        cmd.disable_sqflow = sqflow_disable
        data = ConnectData()
        data.host_uuid = self.hostid
        data.cntlid = cntlid
        data.subsysnqn = subnqn
        data.hostnqn = hostnqn or self.hostnqn
        return cmd, bytes(data)

    def connect(self, subnqn=NQN, *, in_capsule=None, **kw) -> Reply:
        cmd, data = self.connect_cmd(subnqn, **kw)
        reply = self.command(cmd, data, write=True, in_capsule=in_capsule)
        if reply.ok and kw.get("qid", 0) == 0:
            self.cntlid = reply.cqe.dw0 & 0xFFFF
        return reply

    def prop_get(self, offset, size=4) -> Reply:
        cmd = PropertyGet(ofst=offset)
        cmd.attrib_size = 1 if size == 8 else 0
        return self.command(cmd)

    def prop_set(self, offset, value, size=4) -> Reply:
        cmd = PropertySet(ofst=offset, value=value)
        cmd.attrib_size = 1 if size == 8 else 0
        return self.command(cmd)

    def enable(self):
        reply = self.prop_set(Reg.CC, 1 | (6 << 16) | (4 << 20))
        assert reply.ok, reply.status
        deadline = time.monotonic() + TIMEOUT
        while not self.prop_get(Reg.CSTS).cqe.dw0 & 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def setup_admin(self, subnqn=NQN, **kw):
        self.ic()
        reply = self.connect(subnqn, **kw)
        assert reply.ok, reply.status
        self.enable()
        return self

    def setup_io(self, cntlid, qid=1, subnqn=NQN, **kw):
        self.ic()
        reply = self.connect(subnqn, qid=qid, cntlid=cntlid, **kw)
        assert reply.ok, reply.status
        return self


def namespace(nsid, blocks, **kw) -> Namespace:
    """A namespace in memory; with worker processes on, in memory they
    share (a memfd), so that their fast path serves it."""
    if tcp_target.WORKERS:
        kw.setdefault("backends", shared_memory_backends)
    return Namespace(nsid, blocks, **kw)


def make_subsystem(nqn=NQN, blocks=8192, **kw) -> Subsystem:
    sub = Subsystem(nqn, serial="TCPTEST", **kw)
    sub.add_namespace(namespace(1, blocks))
    return sub


# Every test here runs on the fast and the general path (target and host),
# each in one process and with two worker processes serving the I/O queues.
io_path = both_io_paths(tcp_target, host_block_module, workers=2)


@pytest.fixture
def target():
    tgt = TcpTarget([make_subsystem()])
    port = tgt.listen("127.0.0.1", 0)
    tgt.start()
    tgt.test_addr = ("127.0.0.1", int(port.trsvcid))
    yield tgt
    tgt.stop()


@pytest.fixture
def host(target):
    hosts = []

    def make(**kw):
        h = RawHost(target.test_addr, **kw)
        hosts.append(h)
        return h

    yield make
    for h in hosts:
        h.close()
