"""Worker processes serving the I/O queues (target/workers.py): the same
answers as one process, changes made in the main process seen at once,
SMART and keep alive counting the workers' I/O, a dead worker noticed.

(Every other test in tests/tcp also runs with two worker processes: the
``io_path`` variants ``fast-workers`` and ``general-workers``.)"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from nvmestack.spec.admin import FormatNvm, GetLogPage
from nvmestack.spec.log import SmartLog
from nvmestack.spec.nvm import Compare, DatasetManagement, DsmRange, Flush, Read, Write, WriteUncorrectable, WriteZeroes
from nvmestack.spec.registers import Reg
from nvmestack.spec.sqe import Command
from nvmestack.spec.status import GenericStatus, MediaStatus
from nvmestack.target import Namespace, Subsystem
from nvmestack.target.backend import FileBackend
from nvmestack.target.tcp import TcpTarget
from nvmestack.target.workers import WorkerQueue
from nvmestack.tcp import ConnectionClosed, TermReqReceived

from .conftest import NQN, RawHost
from .test_target import code, nqn_queues, wait_until

BS = 512
BLOCKS = 8192


@pytest.fixture(autouse=True)
def io_path():
    """These tests choose their processes themselves (no io_path variants)."""
    return "fast"


@pytest.fixture
def targets(tmp_path):
    made = []

    def start(workers=2, *, memory=False, blocks=BLOCKS, **options):
        sub = Subsystem(NQN, serial="WORKERS")
        directory = tmp_path / f"t{len(made)}"
        directory.mkdir()
        if memory:
            ns = Namespace(1, blocks)
        else:
            ns = Namespace(1, blocks, backends=lambda role, size: FileBackend(directory / f"ns1-{role}", size))
        sub.add_namespace(ns)
        target = TcpTarget([sub], workers=workers, **options)
        port = target.listen("127.0.0.1", 0)
        target.start()
        target.test_addr = ("127.0.0.1", int(port.trsvcid))
        target.sub = sub
        target.directory = directory
        made.append(target)
        return target

    yield start
    for target in made:
        target.stop()


class Hosts:
    """An admin queue and I/O queues of one controller (RawHost each)."""

    def __init__(self, target, io_queues=1, kato=0):
        self.target = target
        self.all = []
        self.admin = self.raw().setup_admin(kato=kato)
        nqn_queues(self.admin, max(2, io_queues))
        self.io = [self.raw().setup_io(self.admin.cntlid, qid=q + 1) for q in range(io_queues)]

    def raw(self):
        h = RawHost(self.target.test_addr)
        self.all.append(h)
        return h

    def close(self):
        for h in self.all:
            h.close()


@pytest.fixture
def hosts():
    made = []

    def make(target, **kw):
        h = Hosts(target, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def worker_queues(target, count=None):
    """The WorkerQueues (by QID); ``count``: wait for that many (the host may
    read the Connect's answer before the main process handed the queue on)."""
    if count is not None:
        wait_until(lambda: len(target._pool.queues) == count, what=f"{count} worker queues")
    return sorted(target._pool.queues.values(), key=lambda q: q.qid)


def smart(admin) -> SmartLog:
    reply = admin.command(GetLogPage(lid=0x02, numd=512 // 4 - 1, nsid=0xFFFFFFFF), length=512)
    assert reply.ok, reply.status
    return SmartLog.view(bytearray(reply.data))


def pid_alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------------


def test_queues_in_two_workers_share_the_namespace(targets, hosts):
    target = targets()
    h = hosts(target, io_queues=2)
    q1, q2 = worker_queues(target, 2)
    assert q1.worker is not q2.worker  # the least loaded worker takes the next queue
    assert all(pid_alive(pid) for pid in target.worker_pids) and len(target.worker_pids) == 2
    data = os.urandom(16 * BS)
    assert h.io[0].command(Write(nsid=1, slba=40, nblocks=16), data, write=True).ok
    assert h.io[1].command(Read(nsid=1, slba=40, nblocks=16), length=len(data)).data == data
    big = os.urandom(256 * BS)  # R2T and H2CData; read back by sendfile
    assert h.io[1].command(Write(nsid=1, slba=1000, nblocks=256), big, write=True, in_capsule=False).ok
    assert h.io[0].command(Flush(nsid=1)).ok
    assert h.io[0].command(Read(nsid=1, slba=1000, nblocks=256), length=len(big)).data == big
    # the workers' fast paths served them (the queues' own counters)
    assert (q1.counters.host_write_commands, q1.counters.host_read_commands) == (1, 1)
    assert (q2.counters.host_write_commands, q2.counters.host_read_commands) == (1, 1)
    # the file the main process sees holds it
    assert target.sub.namespaces[1].data.read_bytes(1000 * BS, len(big)) == big


def test_commands_right_after_the_connect_are_not_lost(targets, hosts):
    """Commands pipelined behind an I/O queue's Connect (in the same
    segment) reach the worker: the main process reads no further than the
    Connect."""
    target = targets()
    h = hosts(target)
    data = os.urandom(BS)
    assert h.io[0].command(Write(nsid=1, slba=7, nblocks=1), data, write=True).ok
    io = h.raw()
    io.ic()
    cmd, cdata = io.connect_cmd(qid=2, cntlid=h.admin.cntlid)
    cmd.cid = 100
    read = Read(nsid=1, slba=7, nblocks=1)
    read.cid = 101
    flush = Flush(nsid=1)
    flush.cid = 102
    wire = b"".join(bytes(b) for b in io.stream.command(cmd, [cdata], length=len(cdata), write=True, in_capsule=True))
    wire += b"".join(bytes(b) for b in io.stream.command(read, [], length=BS))
    wire += b"".join(bytes(b) for b in io.stream.command(flush, []))
    io.sock.sendall(wire)
    assert io.result(100).ok
    assert io.result(101, length=BS).data == data
    assert io.result(102).ok
    assert [q.qid for q in worker_queues(target, 2)] == [1, 2]


SCRIPT_PATTERN = bytes(range(256)) * 2


def run_script(target) -> list:
    """The same commands against a target: what the host sees of each."""
    h = Hosts(target)
    io = h.io[0]
    seen = []

    def note(reply, data=True):
        seen.append((code(reply), reply.cqe.dw0, reply.data if data else b""))

    try:
        note(io.command(Write(nsid=1, slba=10, nblocks=1), SCRIPT_PATTERN, write=True))
        note(io.command(Read(nsid=1, slba=BLOCKS - 1, nblocks=2), length=2 * BS))  # beyond the end
        note(io.command(Read(nsid=2, slba=0, nblocks=1), length=BS))  # no such namespace
        note(io.command(Read(nsid=1, slba=10, nblocks=1, fua=True), length=BS))
        note(io.command(Compare(nsid=1, slba=10, nblocks=1), SCRIPT_PATTERN, write=True))
        note(io.command(Compare(nsid=1, slba=10, nblocks=1), bytes(BS), write=True))
        note(io.command(WriteZeroes(nsid=1, slba=10, nblocks=1)))
        note(io.command(Read(nsid=1, slba=10, nblocks=1), length=BS))
        note(io.command(Write(nsid=1, slba=20, nblocks=2), SCRIPT_PATTERN * 2, write=True))
        dsm = DatasetManagement(nsid=1, nr=0)
        dsm.ad = True
        rng = DsmRange()
        rng.slba = 20
        rng.nlb = 1
        note(io.command(dsm, bytes(rng), write=True))
        note(io.command(Read(nsid=1, slba=20, nblocks=2), length=2 * BS))
        note(io.command(WriteUncorrectable(nsid=1, slba=30, nblocks=1)))
        note(io.command(Read(nsid=1, slba=30, nblocks=1), length=BS))
        note(io.command(Command(opcode=0x7E, nsid=1)))  # no such opcode
        note(io.command(Write(nsid=1, slba=0, nblocks=8), SCRIPT_PATTERN, write=True))  # data shorter than NLB
        note(io.command(Flush(nsid=0xFFFFFFFF)))
        return seen
    finally:
        h.close()


def test_forwarded_commands_answer_as_one_process(targets):
    """What the worker's fast path declines runs on the main process's
    general path: every status and every byte as without workers."""
    alone = run_script(targets(workers=0))
    with_workers = run_script(targets(workers=2))
    assert with_workers == alone
    statuses = [s for s, _, _ in alone]
    assert statuses[1] == (0, GenericStatus.LBA_OUT_OF_RANGE)
    assert statuses[5] == (2, MediaStatus.COMPARE_FAILURE)
    assert statuses[12] == (2, MediaStatus.UNRECOVERED_READ_ERROR)
    assert statuses[13] == (0, GenericStatus.INVALID_OPCODE)


def test_memory_namespaces_are_served_by_forwarding(targets, hosts):
    target = targets(memory=True)
    h = hosts(target, io_queues=2)
    data = os.urandom(8 * BS)
    assert h.io[0].command(Write(nsid=1, slba=0, nblocks=8), data, write=True).ok
    assert h.io[1].command(Read(nsid=1, slba=0, nblocks=8), length=len(data)).data == data
    assert all(q.counters.host_read_commands == 0 for q in worker_queues(target, 2))  # not the workers' fast path
    log = smart(h.admin)
    assert (log.host_reads, log.host_writes) == (1, 1)


def test_changes_in_the_main_process_are_seen_at_once(targets, hosts):
    target = targets()
    h = hosts(target)
    (queue,) = worker_queues(target, 1)
    io = h.io[0]
    data = os.urandom(BS)
    assert io.command(Write(nsid=1, slba=5, nblocks=1), data, write=True).ok
    assert io.command(Read(nsid=1, slba=5, nblocks=1), length=BS).data == data
    # the namespace goes (the target's API, no admin command): the next read knows
    target.sub.remove_namespace(1)
    assert code(io.command(Read(nsid=1, slba=5, nblocks=1), length=BS)) == (0, GenericStatus.INVALID_FIELD)
    # another one, smaller, in its place
    other = target.directory / "other"
    target.sub.add_namespace(Namespace(1, 64, backends=lambda role, size: FileBackend(other, size)))
    assert io.command(Read(nsid=1, slba=5, nblocks=1), length=BS).data == bytes(BS)
    assert code(io.command(Read(nsid=1, slba=64, nblocks=1), length=BS)) == (0, GenericStatus.LBA_OUT_OF_RANGE)
    reads = queue.counters.host_read_commands
    assert io.command(Write(nsid=1, slba=63, nblocks=1), data, write=True).ok
    assert io.command(Read(nsid=1, slba=63, nblocks=1), length=BS).data == data
    assert queue.counters.host_read_commands == reads + 1  # the new namespace on the worker's fast path
    # Format NVM to 4 KiB blocks: the worker reads the new geometry
    assert h.admin.command(FormatNvm(nsid=1, lbafl=3)).ok
    assert io.command(Read(nsid=1, slba=0, nblocks=1), length=4096).data == bytes(4096)
    assert code(io.command(Read(nsid=1, slba=8, nblocks=1), length=4096)) == (0, GenericStatus.LBA_OUT_OF_RANGE)
    # a fault rule armed in the main process applies to the next command
    from nvmestack.target.faults import FaultInjector

    FaultInjector.install(target.sub).fail(GenericStatus.DATA_TRANSFER_ERROR, opcode=0x02, count=1)
    assert code(io.command(Read(nsid=1, slba=0, nblocks=1), length=4096)) == (0, GenericStatus.DATA_TRANSFER_ERROR)
    assert io.command(Read(nsid=1, slba=0, nblocks=1), length=4096).ok


def test_smart_counts_the_workers_io(targets, hosts):
    target = targets()
    h = hosts(target, io_queues=2)
    before = smart(h.admin)
    chunk = os.urandom(1000 * BS)  # 500 KiB: one data unit is 1,000 blocks of 512 bytes
    for i, io in enumerate(h.io):
        assert io.command(Write(nsid=1, slba=i * 1000, nblocks=1000), chunk, write=True).ok
        assert io.command(Read(nsid=1, slba=i * 1000, nblocks=1000), length=len(chunk)).data == chunk
    after = smart(h.admin)
    assert after.host_writes - before.host_writes == 2
    assert after.host_reads - before.host_reads == 2
    assert after.data_units_written - before.data_units_written == 2
    assert after.data_units_read - before.data_units_read == 2
    assert all(q.counters.host_read_commands == 1 for q in worker_queues(target))
    # a queue that ends hands its counts to the subsystem
    h.io[0].close()
    wait_until(lambda: len(worker_queues(target)) == 1, what="the queue to be released")
    assert smart(h.admin).host_reads == after.host_reads


def test_io_in_a_worker_keeps_the_controller_alive(targets, hosts):
    """Traffic on a worker's queue counts as a sign of life for the Keep
    Alive Timer (as without workers); without it, the controller goes."""
    target = targets()
    h = hosts(target, kato=1000)
    io = h.io[0]
    ctrl = target.controllers[0]
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        assert io.command(Read(nsid=1, slba=0, nblocks=1), length=BS).ok
        time.sleep(0.05)
    assert ctrl in target.controllers
    assert isinstance(target.queues_of(ctrl)[1], WorkerQueue)
    # no traffic at all: the timer runs out, the worker's connection closes
    assert isinstance(io.closed_or_terminated(timeout=10), (ConnectionClosed, TermReqReceived))
    assert ctrl not in target.controllers
    wait_until(lambda: not target._pool.queues, what="the worker queue to be released")


def test_reset_and_teardown_reach_the_workers(targets, hosts):
    target = targets()
    h = hosts(target)
    io = h.io[0]
    assert io.command(Read(nsid=1, slba=0, nblocks=1), length=BS).ok
    # CC.EN = 0: the queue stays, its commands fail as in one process
    assert h.admin.prop_set(Reg.CC, 0).ok
    assert code(io.command(Read(nsid=1, slba=0, nblocks=1), length=BS)) == (0, GenericStatus.COMMAND_SEQUENCE_ERROR)
    # the association ends (its admin queue closes): the worker closes the I/O queue
    h.admin.close()
    assert isinstance(io.closed_or_terminated(), (ConnectionClosed, TermReqReceived))
    wait_until(lambda: not target._pool.queues and not target.controllers, what="everything released")
    # and the host reconnects
    again = hosts(target)
    data = os.urandom(BS)
    assert again.io[0].command(Write(nsid=1, slba=3, nblocks=1), data, write=True).ok
    assert again.io[0].command(Read(nsid=1, slba=3, nblocks=1), length=BS).data == data


def test_a_killed_worker_is_noticed(targets, hosts, monkeypatch):
    from nvmestack.target import workers

    monkeypatch.setattr(workers, "_MIN_LIFE", 0.0)  # replaced however young it died
    target = targets()
    h = hosts(target, io_queues=3)
    queues = worker_queues(target, 3)
    victim = queues[0].worker.pid
    lost = [q.qid for q in queues if q.worker.pid == victim]
    kept = [q.qid for q in queues if q.worker.pid != victim]
    assert 1 in lost and 2 in kept
    os.kill(victim, signal.SIGKILL)
    # its connections drop, its queues are released; the other worker's queue goes on
    for qid in lost:
        assert isinstance(h.io[qid - 1].closed_or_terminated(), (ConnectionClosed, TermReqReceived))
    wait_until(lambda: [q.qid for q in worker_queues(target)] == kept, what="the dead worker's queues released")
    assert not set(lost) & set(target.queues_of(target.controllers[0]))
    assert h.io[1].command(Read(nsid=1, slba=0, nblocks=1), length=BS).ok
    wait_until(lambda: not pid_alive(victim), what="the dead worker reaped")
    # a new connection for the queue works (in a live worker)
    again = h.raw().setup_io(h.admin.cntlid, qid=1)
    data = os.urandom(BS)
    assert again.command(Write(nsid=1, slba=9, nblocks=1), data, write=True).ok
    assert h.io[1].command(Read(nsid=1, slba=9, nblocks=1), length=BS).data == data
    # a new worker took its place
    wait_until(lambda: len(target.worker_pids) == 2 and victim not in target.worker_pids, what="a new worker")
    assert all(pid_alive(pid) for pid in target.worker_pids)
    for qid in lost[1:]:
        again = h.raw().setup_io(h.admin.cntlid, qid=qid)
        assert again.command(Read(nsid=1, slba=9, nblocks=1), length=BS).data == data
    assert {q.worker.pid for q in worker_queues(target)} - {victim} == set(target.worker_pids)


def test_stop_ends_the_workers_and_leaks_nothing(tmp_path):
    def fds():
        return set(os.listdir("/proc/self/fd"))

    before = fds()
    sub = Subsystem(NQN, serial="WORKERS")
    sub.add_namespace(Namespace(1, BLOCKS, backends=lambda role, size: FileBackend(tmp_path / role, size)))
    target = TcpTarget([sub], workers=2)
    port = target.listen("127.0.0.1", 0)
    target.start()
    target.test_addr = ("127.0.0.1", int(port.trsvcid))
    h = Hosts(target, io_queues=2)
    data = os.urandom(BS)
    assert h.io[0].command(Write(nsid=1, slba=1, nblocks=1), data, write=True).ok
    pids = target.worker_pids
    target.stop()
    assert not any(pid_alive(pid) for pid in pids)
    for io in h.io:
        assert isinstance(io.closed_or_terminated(), (ConnectionClosed, TermReqReceived))
    h.close()
    sub.close()
    assert sub.namespaces[1].data._fd == -1
    with open(tmp_path / "data", "rb") as f:
        assert f.read()[BS : 2 * BS] == data
    fresh = target._loop  # stop() leaves a new event loop for a restart (as without workers)
    loop_fds = {str(fresh.selector.fileno()), str(fresh._wake_r.fileno()), str(fresh._wake_w.fileno())}
    assert fds() - loop_fds <= before, fds() - before



@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_with_workers_stops_cleanly(tmp_path, sig):
    """``serve --workers 2``: I/O queues in the workers; SIGINT/SIGTERM
    stops them (no process left), the data is in the file and there after
    a restart."""
    from nvmestack.cli.serve import DEFAULT_NQN

    from .test_serve import Serve, free_port, io_queue

    data_dir = tmp_path / "data"
    port = free_port()
    args = ("--port", str(port), "--discovery-port", str(free_port()), "--data-dir", str(data_dir), "--workers", "2")
    s = Serve(*args)
    try:
        text = "".join(s.wait_ready())
        pids = [int(p) for p in re.search(r"served by 2 worker processes \(([\d, ]+)\)", text).group(1).split(", ")]
        assert len(pids) == 2 and all(pid_alive(pid) for pid in pids)
        admin, io = io_queue(("127.0.0.1", port), DEFAULT_NQN)
        pattern = os.urandom(64 * 1024)
        assert io.command(Write(nsid=1, slba=2048, nblocks=128), pattern, write=True).ok
        assert s.stop(sig) == 0, s.stderr
        assert "Traceback" not in s.stderr
        assert not any(pid_alive(pid) for pid in pids)
        assert isinstance(io.closed_or_terminated(), (ConnectionClosed, TermReqReceived))
        admin.close()
        io.close()
        s = Serve(*args)
        s.wait_ready()
        admin, io = io_queue(("127.0.0.1", port), DEFAULT_NQN)
        assert io.command(Read(nsid=1, slba=2048, nblocks=128), length=len(pattern)).data == pattern
        assert s.stop() == 0, s.stderr
        admin.close()
        io.close()
    finally:
        s.kill()


def test_the_configurations_workers_and_the_option(tmp_path):
    """``"workers": N`` in the configuration, replaced by ``--workers``."""
    import argparse

    from nvmestack.cli.serve import Server, add_arguments

    config = {"subsystems": [{"nqn": NQN, "namespaces": []}], "workers": 2,
              "ports": [{"portid": 1, "addr": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "0"},
                         "subsystems": [NQN]}]}
    server = Server(config, str(tmp_path / "a"))
    try:
        assert server.target.workers == 2
        server.start()
        assert len(server.target.worker_pids) == 2
        assert "I/O queues served by 2 worker processes" in "\n".join(server.describe())
    finally:
        server.close()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    server = Server(config, str(tmp_path / "b"), parser.parse_args(["--workers", "0"]))
    try:
        assert server.target.workers == 0 and server.target._pool is None
    finally:
        server.close()


def test_a_format_through_the_api_is_seen_at_once(targets, hosts):
    """Namespace.reformat called directly (no admin command) tells the workers too."""
    target = targets()
    h = hosts(target)
    io = h.io[0]
    assert io.command(Read(nsid=1, slba=BLOCKS - 1, nblocks=1), length=BS).ok
    target.sub.namespaces[1].reformat(3, extended=False, pi_type=0, pi_first=False)  # 4 KiB blocks
    assert code(io.command(Read(nsid=1, slba=BLOCKS - 1, nblocks=1), length=BS)) == (
        0, GenericStatus.LBA_OUT_OF_RANGE)
    assert io.command(Read(nsid=1, slba=BLOCKS // 8 - 1, nblocks=1), length=4096).data == bytes(4096)
