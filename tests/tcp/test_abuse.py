"""What a misbehaving or hostile client can and cannot do to the NVMe/TCP
target (issue 12, items 1 and 2): pipelined Connects make one controller,
idle connections time out and cost no thread, a port's connection limit and
the file descriptor limit leave room for a well-behaved host, and nothing
a client made outlives its connection."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from nvmestack.spec.nvm import Read, Write
from nvmestack.spec.status import FabricsStatus, GenericStatus
from nvmestack.spec.tcp import PduType
from nvmestack.target.tcp import TcpTarget
from nvmestack.tcp import SGL_IN_CAPSULE, SGL_TRANSPORT

from .conftest import NQN, RawHost, make_subsystem
from .test_target import io_pair, wait_until

CAPSULE = struct.Struct("<BBBBI")


def good_host_io(addr, timeout=10.0) -> None:
    """A well-behaved host: admin and I/O queue, a write read back."""
    def factory(**kw):
        return RawHost(addr, timeout=timeout, **kw)

    admin, io = io_pair(factory)
    data = os.urandom(4096)
    assert io.command(Write(nsid=1, slba=8, nblocks=8), data, write=True).ok
    assert io.command(Read(nsid=1, slba=8, nblocks=8), length=4096).data == data
    io.close()
    admin.close()


def raw_connects(host: RawHost, count: int, *, in_capsule: bool) -> bytes:
    """``count`` admin Connect capsules back to back (CIDs 1..count)."""
    cmd, data = host.connect_cmd()
    out = bytearray()
    for cid in range(1, count + 1):
        cmd.cid = cid
        cmd.psdt = 1
        sqe = bytearray(bytes(cmd))
        if in_capsule:
            struct.pack_into("<QI3xB", sqe, 24, 0, len(data), SGL_IN_CAPSULE)
            out += CAPSULE.pack(PduType.CAPSULE_CMD, 0, 72, 72, 72 + len(data)) + sqe + data
        else:
            struct.pack_into("<QI3xB", sqe, 24, 0, len(data), SGL_TRANSPORT)
            out += CAPSULE.pack(PduType.CAPSULE_CMD, 0, 72, 0, 72) + sqe
    return bytes(out)


@pytest.fixture
def abuse_target():
    tgt = TcpTarget([make_subsystem()], handshake_timeout=1.0)
    port = tgt.listen("127.0.0.1", 0)
    tgt.start()
    yield tgt, ("127.0.0.1", int(port.trsvcid))
    tgt.stop()


class RawPdus:
    """PDUs read off a socket without a host stream (it would refuse R2Ts
    for commands it did not send)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()

    def next(self) -> bytes:
        while True:
            if len(self.buf) >= 8:
                plen = struct.unpack_from("<I", self.buf, 4)[0]
                if len(self.buf) >= plen:
                    pdu = bytes(self.buf[:plen])
                    del self.buf[:plen]
                    return pdu
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk


@pytest.mark.parametrize("in_capsule", [False, True], ids=["r2t", "in-capsule"])
def test_pipelined_connects_make_one_controller(abuse_target, in_capsule):
    target, addr = abuse_target
    sub = target.subsystems[NQN]
    count = 1000
    host = RawHost(addr)
    host.ic()
    _, data = host.connect_cmd()
    host.send(raw_connects(host, count, in_capsule=in_capsule))
    pdus = RawPdus(host.sock)
    statuses = {}
    r2ts = []
    while len(statuses) + len(r2ts) < count:
        pdu = pdus.next()
        if pdu[0] == PduType.R2T:
            r2ts.append(struct.unpack_from("<HH", pdu, 8))  # CCCID, TTAG
        else:
            assert pdu[0] == PduType.CAPSULE_RESP
            cid, status = struct.unpack_from("<HH", pdu, 20)
            statuses[cid] = status >> 1 & 0x7FF
    if not in_capsule:
        # the first Connect waits for its data; every other one is out of sequence
        assert [cid for cid, _ in r2ts] == [1]
        host.send(struct.pack("<BBBBIHHII4x", PduType.H2C_DATA, 0x04, 24, 24, 24 + len(data), 1, r2ts[0][1], 0,
                              len(data)) + data)
        pdu = pdus.next()
        assert pdu[0] == PduType.CAPSULE_RESP
        cid, status = struct.unpack_from("<HH", pdu, 20)
        statuses[cid] = status >> 1 & 0x7FF
    assert statuses[1] == 0
    assert all(statuses[cid] == GenericStatus.COMMAND_SEQUENCE_ERROR for cid in range(2, count + 1))
    assert len(sub.controllers) == 1
    host.close()
    wait_until(lambda: not sub.controllers and not target.controllers, what="the controller to go")


def test_idle_connections_time_out_and_cost_no_thread():
    target = TcpTarget([make_subsystem()], handshake_timeout=5.0)
    addr = ("127.0.0.1", int(target.listen("127.0.0.1", 0).trsvcid))
    target.start()
    threads = threading.active_count()
    idle = [socket.create_connection(addr) for _ in range(2000)]
    try:
        wait_until(lambda: len(target.connections) >= 2000, what="the target to accept them")
        assert threading.active_count() == threads  # no thread per connection
        started = time.monotonic()
        good_host_io(addr)
        assert time.monotonic() - started < 10.0
        # a second later every idle connection is closed by the target
        wait_until(lambda: not target.connections, timeout=15, what="the idle connections to time out")
        closed = 0
        for sock in idle:
            sock.settimeout(5)
            try:
                closed += sock.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(idle)
    finally:
        for sock in idle:
            sock.close()
        target.stop()
    assert threading.active_count() == threads - 2  # the loop and the keep alive watchdog stopped


def test_a_port_at_its_connection_limit_still_admits_a_good_host():
    target = TcpTarget([make_subsystem()], max_connections=50, handshake_timeout=60.0)
    port = target.listen("127.0.0.1", 0)
    target.start()
    addr = ("127.0.0.1", int(port.trsvcid))
    idle = []
    try:
        idle = [socket.create_connection(addr) for _ in range(80)]
        wait_until(lambda: len(target.connections) == 50 and sum(_closed(s) for s in idle) == 30,
                   what="the limit to hold")
        good_host_io(addr)  # evicts two idle connections in their handshake
        assert len(target.connections) <= 50
    finally:
        for sock in idle:
            sock.close()
        target.stop()


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


_SERVER = textwrap.dedent("""
    import json, resource, sys, threading
    if int(sys.argv[1]):
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1])))
    from nvmestack.target import Namespace, Subsystem
    from nvmestack.target.tcp import TcpTarget
    sub = Subsystem("%s", serial="ABUSE")
    sub.add_namespace(Namespace(1, 8192))
    target = TcpTarget([sub], handshake_timeout=float(sys.argv[2]), max_connections=100000)
    port = target.listen("127.0.0.1", 0)
    target.start()
    print(port.trsvcid, flush=True)
    for line in sys.stdin:  # "stats": what the target holds now
        with open("/proc/self/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        print(json.dumps({"controllers": len(sub.controllers), "connections": len(target.connections),
                          "threads": threading.active_count(), "rss_kib": rss}), flush=True)
    target.stop()
""" % NQN)


class ServerProcess:
    """A target in its own process (its own descriptor limit, memory and threads to measure)."""

    def __init__(self, nofile: int = 0, handshake_timeout: float = 60.0):
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(nofile), str(handshake_timeout)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addr = ("127.0.0.1", int(self.proc.stdout.readline()))

    def stats(self) -> dict:
        import json

        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(20)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_file_descriptors_the_target_neither_spins_nor_locks_out_a_good_host():
    server = ServerProcess(nofile=96)
    idle = []
    try:
        idle = [socket.create_connection(server.addr) for _ in range(150)]  # more than its 96 descriptors
        time.sleep(1.0)
        before = _cpu_seconds(server.proc.pid)
        time.sleep(2.0)
        assert _cpu_seconds(server.proc.pid) - before < 0.5  # resting, not spinning on EMFILE
        good_host_io(server.addr)
    finally:
        for sock in idle:
            sock.close()
        server.close()


def test_after_the_abuse_the_target_holds_what_it_held_before():
    """Pipelined Connects and idle connections while a good host works;
    afterwards no stray controller, connection or thread, and the memory
    back near where it was (the old leak was ~10 KiB per pipelined Connect
    and a thread per connection)."""
    server = ServerProcess(handshake_timeout=2.0)
    try:
        good_host_io(server.addr)  # warm up: the first association allocates what every later one reuses
        start = server.stats()
        # 1,000 pipelined Connects on one connection, the good host working meanwhile
        abuser = RawHost(server.addr)
        abuser.ic()
        abuser.send(raw_connects(abuser, 1000, in_capsule=False))
        good_host_io(server.addr)
        idle = [socket.create_connection(server.addr) for _ in range(2000)]
        good_host_io(server.addr)
        abuser.close()
        for sock in idle:
            sock.close()
        deadline = time.monotonic() + 20
        while True:
            now = server.stats()
            if now["controllers"] == 0 and now["connections"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert now["controllers"] == 0 and now["connections"] == 0
        assert now["threads"] == start["threads"]
        assert now["rss_kib"] - start["rss_kib"] < 16 << 10
    finally:
        server.close()


def test_controllers_per_host_are_bounded():
    target = TcpTarget([make_subsystem()], max_controllers_per_host=2)
    addr = ("127.0.0.1", int(target.listen("127.0.0.1", 0).trsvcid))
    target.start()
    hosts = []
    try:
        for _ in range(2):
            hosts.append(RawHost(addr).setup_admin())
        third = RawHost(addr)
        third.ic()
        reply = third.connect()
        assert (reply.status.sct, reply.status.sc) == (1, FabricsStatus.CONTROLLER_BUSY)
        other = RawHost(addr)
        other.hostnqn = "nqn.2014-08.org.nvmexpress:uuid:99999999-2222-3333-4444-555555555555"
        other.setup_admin()  # another host is not held back
        hosts.append(other)
        hosts.pop(0).close()  # one association ends: room for one more
        wait_until(lambda: len(target.controllers) == 2, what="the association to end")
        assert third.connect().ok
        hosts.append(third)
    finally:
        for host in hosts:
            host.close()
        target.stop()


def test_admin_sqsize_beyond_mqes_is_refused(abuse_target):
    target, addr = abuse_target
    host = RawHost(addr)
    host.ic()
    reply = host.connect(sqsize=1024)  # MQES is 1023
    assert (reply.status.sct, reply.status.sc) == (1, FabricsStatus.CONNECT_INVALID_PARAMETERS)
    assert not target.subsystems[NQN].controllers
    assert host.connect(sqsize=1023).ok
    host.close()


def test_an_idle_connection_costs_a_few_kib():
    """1,000 connections past their ICReq, idle: each costs the target a few
    KiB (no thread, no receive buffer kept), well under 20 KiB."""
    server = ServerProcess(handshake_timeout=60.0)
    hosts = []
    try:
        good_host_io(server.addr)
        start = server.stats()
        for _ in range(1000):
            host = RawHost(server.addr)
            host.ic()
            hosts.append(host)
        now = server.stats()
        assert now["connections"] == 1000 and now["threads"] == start["threads"]
        assert (now["rss_kib"] - start["rss_kib"]) / 1000 < 20
    finally:
        for host in hosts:
            host.close()
        server.close()
