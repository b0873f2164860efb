"""The host NVMe/TCP transport (nvmestack.host.tcp) end to end against the
NVMe/TCP target on 127.0.0.1 (random ports): connect, identify, properties,
I/O with in-capsule data, R2T/H2CData and C2HData, digests, discovery,
disconnect, keep alive, and recovery from lost connections with the
requests in flight completing exactly once.  No timing is asserted: waits
are bounded by generous timeouts and look at states and counters."""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest

from nvmestack.host import ControllerDeadError, CtrlState, HostRequest, NvmeHostError, TransportError
from nvmestack.host.tcp import (
    ADMIN_QUEUE_ENTRIES,
    DEFAULT_CTRL_LOSS_TMO,
    DEFAULT_KATO,
    DEFAULT_RECONNECT_DELAY,
    ConnectError,
    DiscoveryLog,
    TcpTransport,
    connect,
    connect_all,
    disconnect,
    discover,
    discover_log,
    get_discovery_log,
)
from nvmestack.spec.dptr import Psdt, SglSubtype, SglType
from nvmestack.spec.fabrics import DISCOVERY_NQN
from nvmestack.spec.log import DISCOVERY_LOG_ENTRY_SIZE, DiscoveryLogEntry, DiscoveryLogHeader, SubsystemType
from nvmestack.spec.nvm import Flush, Read, Write
from nvmestack.spec.opcodes import NvmOpcode
from nvmestack.spec.registers import Reg
from nvmestack.spec.status import GenericStatus
from nvmestack.target import Namespace, Subsystem
from .conftest import namespace
from nvmestack.target.faults import FaultInjector
from nvmestack.target.tcp import TcpTarget
from nvmestack.target import tcp as tcp_target
from nvmestack.tcp import ControllerStream, FatalErrorStatus

NQN = "nqn.2026-11.io.nvmestack:host-tcp"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0f0f0f0f-1111-2222-3333-444444444444"
HOSTID = uuid.UUID("0f0f0f0f-1111-2222-3333-444444444444")
BLOCKS = 16384
BS = 512
WAIT = 30.0


def wait_for(predicate, timeout: float = WAIT, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def pattern(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


class Env:
    """A target (with a fault injector) and the hosts connected to it."""

    def __init__(self):
        self.subsystem = Subsystem(NQN, serial="HOSTTCP1", model="nvmestack host tcp test")
        self.subsystem.add_namespace(namespace(1, BLOCKS))
        self.faults = FaultInjector.install(self.subsystem)
        self.targets: list[TcpTarget] = []
        self.ctrls = []
        self.target = None
        self.port = 0

    def start_target(self, port: int = 0, **options) -> TcpTarget:
        target = TcpTarget([self.subsystem], **options)
        listening = target.listen("127.0.0.1", port)
        target.start()
        self.targets.append(target)
        self.target = target
        self.port = int(listening.trsvcid)
        return target

    def connect(self, **options):
        options.setdefault("hostnqn", HOSTNQN)
        options.setdefault("hostid", HOSTID)
        options.setdefault("io_queues", 2)
        options.setdefault("reconnect_delay", 0.05)
        ctrl = connect("127.0.0.1", self.port, NQN, **options)
        self.ctrls.append(ctrl)
        return ctrl

    def target_ctrl(self, host_ctrl):
        """The target's controller of a host controller (by controller ID)."""
        cntlid = host_ctrl.transport.cntlid
        return next((c for c in self.target.controllers if c.cntlid == cntlid and c.subsystem is self.subsystem),
                    None)

    def connections_of(self, target_ctrl, qids=None):
        """The target's connections of a controller; with worker processes,
        the I/O queues they serve are WorkerQueues (abort, terminate)."""
        queues = [c for c in self.target.connections if c.ctrl is target_ctrl]
        if self.target._pool is not None:
            queues += [q for q in self.target._pool.queues.values() if q.ctrl is target_ctrl]
        return [q for q in queues if qids is None or q.qid in qids]

    def close(self):
        for ctrl in self.ctrls:
            ctrl.shutdown()
        for target in self.targets:
            target.stop()
        self.faults.close()
        self.subsystem.close()
        for ctrl in self.ctrls:
            assert ctrl.double_completions == 0
        # Every connection's receive thread ended with its controller.
        assert wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("nvme-tcp-q")])


def skip_if_workers(env, why):
    if tcp_target.WORKERS:
        pytest.skip(why)


@pytest.fixture
def env():
    e = Env()
    yield e
    e.close()


@pytest.fixture
def live(env):
    env.start_target()
    return env


def write_read(ctrl, slba: int, data: bytes, **options) -> bytes:
    nlb = len(data) // BS - 1
    ctrl.execute(Write(nsid=1, slba=slba, nlb=nlb), data, **options)
    buf = bytearray(len(data))
    ctrl.execute(Read(nsid=1, slba=slba, nlb=nlb), buf, **options)
    return bytes(buf)


# ---------------------------------------------------------------------------
# bring-up, properties, identify


def test_connect_identify_and_properties(live):
    ctrl = live.connect()
    assert ctrl.state == CtrlState.LIVE
    transport: TcpTransport = ctrl.transport
    tctrl = live.target_ctrl(ctrl)
    assert tctrl is not None and transport.cntlid == tctrl.cntlid
    # The admin Connect: dynamic controller, our host, KATO in milliseconds (Linux's default 5 s).
    assert tctrl.hostnqn == HOSTNQN and tctrl.hostid == HOSTID.bytes
    assert tctrl.kato == int(DEFAULT_KATO * 1000)
    assert ctrl.kato == DEFAULT_KATO
    # Properties are the controller's registers.
    assert transport.reg_read64(Reg.CAP) == tctrl.get_property(Reg.CAP, 8)
    assert transport.reg_read32(Reg.VS) == tctrl.get_property(Reg.VS, 4)
    assert transport.reg_read32(Reg.CSTS) & 1
    assert ctrl.identify.subnqn == NQN
    assert ctrl.identify.cntlid == tctrl.cntlid
    assert 1 in ctrl.namespaces and ctrl.namespaces[1].nblocks == BLOCKS
    # One connection per queue: admin + 2 I/O queues, Connect with SQSIZE = entries - 1.
    assert ctrl.io_queue_count == 2
    assert sorted(transport.queues) == [0, 1, 2]
    assert sorted(c.qid for c in live.connections_of(tctrl)) == [0, 1, 2]
    io = [c for c in live.connections_of(tctrl) if c.qid]
    assert all(c.sqsize == transport.queue_size - 1 for c in io)
    assert transport.queues[0].depth == ADMIN_QUEUE_ENTRIES - 1
    assert transport.queues[1].depth == transport.queue_size - 1
    # In-capsule sizes: 8 KiB on the admin queue, IOCCSZ on the I/O queues.
    assert transport.queues[0].inline_size == 8192
    assert transport.queues[1].inline_size == ctrl.identify.ioccsz * 16 - 64 == live.target.in_capsule_data_size


def test_defaults_are_linux_defaults():
    transport = TcpTransport("127.0.0.1", subnqn=NQN)
    assert transport.port == 4420
    assert transport.kato == DEFAULT_KATO == 5.0
    assert transport.reconnect_delay == DEFAULT_RECONNECT_DELAY == 10.0
    assert transport.ctrl_loss_tmo == DEFAULT_CTRL_LOSS_TMO == 600.0
    assert transport.max_reconnects == 60
    assert transport.queue_size == 128
    disc = TcpTransport("127.0.0.1", 8009, subnqn=DISCOVERY_NQN)
    assert disc.kato == 0 and not disc.needs_keep_alive
    forever = TcpTransport("127.0.0.1", subnqn=NQN, ctrl_loss_tmo=-1)
    assert forever.max_reconnects is None
    with pytest.raises(ValueError):
        TcpTransport("127.0.0.1", subnqn="x" * 224)  # too long for SUBNQN (any shorter name is carried)
    with pytest.raises(ValueError):
        TcpTransport("127.0.0.1", subnqn=NQN, reconnect_delay=0)


def test_map_data_sgls():
    """The SGL of each kind of command, as Linux's nvme_tcp_map_data."""
    transport = TcpTransport("127.0.0.1", subnqn=NQN)

    class Q:
        inline_size = 4096

    def mapped(cmd, data, **kw):
        req = HostRequest(cmd, data, **kw)
        transport.map_data(req, Q())
        return req

    req = mapped(Flush(nsid=1), None)
    assert req.cmd.psdt == Psdt.SGL_MPTR_CONTIGUOUS
    assert req.cmd.sgl1.sgl_type == SglType.TRANSPORT_DATA_BLOCK and req.cmd.sgl1.length == 0
    req = mapped(Write(nsid=1, slba=0, nlb=7), bytes(4096))
    assert req.cmd.sgl1.sgl_type == SglType.DATA_BLOCK and req.cmd.sgl1.sgl_subtype == SglSubtype.OFFSET
    assert req.cmd.sgl1.address == 0 and req.cmd.sgl1.length == 4096 and req.mapping.in_capsule
    req = mapped(Write(nsid=1, slba=0, nlb=15), bytes(8192))
    assert req.cmd.sgl1.sgl_type == SglType.TRANSPORT_DATA_BLOCK and req.cmd.sgl1.length == 8192
    assert not req.mapping.in_capsule
    req = mapped(Read(nsid=1, slba=0, nlb=1), bytearray(1024))
    assert req.cmd.sgl1.sgl_type == SglType.TRANSPORT_DATA_BLOCK
    assert req.cmd.sgl1.sgl_subtype == SglSubtype.TRANSPORT_SPECIFIC and req.cmd.sgl1.length == 1024
    with pytest.raises(TransportError, match="metadata"):
        mapped(Read(nsid=1, slba=0, nlb=1), bytearray(1024), meta=bytearray(16))


# ---------------------------------------------------------------------------
# I/O


@pytest.mark.parametrize("hdr_digest,data_digest", [(False, False), (True, False), (False, True), (True, True)])
def test_io_in_capsule_and_r2t(live, hdr_digest, data_digest):
    ctrl = live.connect(hdr_digest=hdr_digest, data_digest=data_digest, io_queues=1)
    queue = ctrl.transport.queues[1]
    assert queue.stream.hdgst == hdr_digest and queue.stream.ddgst == data_digest
    icd = queue.inline_size
    # Small writes travel in the capsule: no R2T.
    for size in (BS, 4096, icd):
        data = pattern(size, size)
        assert write_read(ctrl, 0, data) == data
    assert queue.r2ts == 0
    # Larger ones wait for R2Ts (one per command: MAXR2T 0) and go as H2CData.
    for i, size in enumerate((icd + BS, 64 * 1024, 256 * 1024)):
        data = pattern(size, 100 + i)
        assert write_read(ctrl, 1024 * i, data) == data
    assert queue.r2ts == 3
    assert queue.c2h_pdus >= 6
    # Scattered buffers on both sides.
    parts = [pattern(4096, 7), pattern(12288, 8), pattern(BS, 9)]
    ctrl.execute(Write(nsid=1, slba=4000, nlb=(4096 + 12288 + BS) // BS - 1), parts)
    out = [bytearray(BS * 3), bytearray(4096 + 12288 + BS - BS * 3)]
    ctrl.execute(Read(nsid=1, slba=4000, nlb=(4096 + 12288 + BS) // BS - 1), out)
    assert b"".join(out) == b"".join(parts)


def test_h2c_and_c2h_split_in_pdus(env):
    """MAXH2CDATA 4 KiB: an R2T is answered by many H2CData PDUs; the target
    cuts reads in 4 KiB C2HData PDUs."""
    env.start_target(maxh2cdata=4096, max_c2h_data=4096)
    ctrl = env.connect(io_queues=1, data_digest=True)
    queue = ctrl.transport.queues[1]
    assert queue.maxh2cdata == 4096
    data = pattern(64 * 1024, 3)
    assert write_read(ctrl, 100, data) == data
    assert queue.r2ts == 1 and queue.h2c_pdus == 16
    assert queue.c2h_pdus == 16


def test_concurrent_io_many_threads(live):
    ctrl = live.connect(io_queues=2, queue_size=16)
    errors = []

    def worker(n):
        try:
            for i in range(20):
                size = BS * (1 + (i * 7 + n) % 64)
                slba = n * 2048 + i * 64
                data = pattern(size, n * 1000 + i)
                assert write_read(ctrl, slba, data) == data
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors
    # Queue depth 15: more requests than tags at once wait for a tag.
    reqs = [ctrl.submit(Write(nsid=1, slba=i * 8, nlb=7), pattern(4096, i), qid=1) for i in range(40)]
    for req in reqs:
        req.wait(WAIT)
        req.raise_for_status()


def test_sq_flow_control_disabled_uses_success(live):
    """With SQ flow control off the target completes reads with SUCCESS in
    the last C2HData and sends no response capsule."""
    ctrl = live.connect(io_queues=1, disable_sqflow=True)
    queue = ctrl.transport.queues[1]
    data = pattern(32 * 1024, 5)
    assert write_read(ctrl, 0, data) == data
    assert queue.success_completions == 1


def test_polled_queue(live):
    ctrl = live.connect(io_queues=1, poll_queues=1)
    assert ctrl.poll_queue_count == 1
    polled = ctrl.io_queues[1]
    assert polled.polled and polled._thread is None
    data = pattern(64 * 1024, 11)
    assert write_read(ctrl, 0, data, polled=True) == data
    assert polled.r2ts == 1


def test_data_digest_error_is_retried(live, monkeypatch):
    """A C2HData with a wrong data digest completes the command with Data
    Transfer Error (as Linux), which the core retries."""
    skip_if_workers(live, "spoils the target's C2HData in this process; a worker sends it")
    ctrl = live.connect(io_queues=1, data_digest=True)
    data = pattern(8192, 21)
    ctrl.execute(Write(nsid=1, slba=0, nlb=15), data)
    original = ControllerStream.c2h_data
    spoiled = []

    def spoil(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if not spoiled:
            spoiled.append(True)
            out[-1] = bytes(b ^ 0xFF for b in bytes(out[-1]))  # the data digest
        return out

    monkeypatch.setattr(ControllerStream, "c2h_data", spoil)
    buf = bytearray(8192)
    req = ctrl.execute(Read(nsid=1, slba=0, nlb=15), buf)
    assert spoiled and buf == data
    assert req.retries == 1 and ctrl.stats["retries"] == 1


def test_data_digest_error_status_without_retry(live, monkeypatch):
    skip_if_workers(live, "spoils the target's C2HData in this process; a worker sends it")
    ctrl = live.connect(io_queues=1, data_digest=True)
    original = ControllerStream.c2h_data

    def spoil(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        out[-1] = bytes(b ^ 0xFF for b in bytes(out[-1]))
        return out

    monkeypatch.setattr(ControllerStream, "c2h_data", spoil)
    status, _ = ctrl.io_passthru(Read(nsid=1, slba=0, nlb=0), bytearray(BS))
    assert status.code == GenericStatus.DATA_TRANSFER_ERROR
    assert ctrl.state == CtrlState.LIVE


# ---------------------------------------------------------------------------
# discovery, connect, disconnect


def test_discover(live):
    entries = discover("127.0.0.1", live.port, HOSTNQN, hostid=HOSTID)
    by_type = {e.subtype: e for e in entries}
    assert set(by_type) == {SubsystemType.CURRENT_DISCOVERY, SubsystemType.NVM}
    nvm = by_type[SubsystemType.NVM]
    assert nvm.subnqn == NQN and nvm.traddr == "127.0.0.1" and nvm.trsvcid == str(live.port)
    assert by_type[SubsystemType.CURRENT_DISCOVERY].subnqn == DISCOVERY_NQN
    assert wait_for(lambda: live.target.controllers == [])  # the discovery controller went with the disconnect
    logpage = discover_log("127.0.0.1", live.port, HOSTNQN, data_digest=True, hdr_digest=True)
    assert isinstance(logpage, DiscoveryLog) and logpage.genctr == live.target.genctr
    assert [e.subnqn for e in logpage.entries] == [e.subnqn for e in entries]


def test_discovery_controller_has_no_keep_alive(live):
    from nvmestack.host import NvmeController

    transport = TcpTransport("127.0.0.1", live.port, subnqn=DISCOVERY_NQN, hostnqn=HOSTNQN)
    ctrl = NvmeController(transport, io_queues=0, aen_commands=0)
    try:
        assert ctrl.kato == 0
        tctrl = next(c for c in live.target.controllers if c.cntlid == transport.cntlid)
        assert tctrl.subsystem.discovery and tctrl.kato == 120000  # the target's discovery default
        assert len(get_discovery_log(ctrl).entries) == 2
    finally:
        ctrl.shutdown()


def test_connect_all(live):
    ctrls = connect_all("127.0.0.1", live.port, HOSTNQN, hostid=HOSTID, io_queues=1)
    live.ctrls.extend(ctrls)
    assert [c.identify.subnqn for c in ctrls] == [NQN]
    data = pattern(4096, 1)
    assert write_read(ctrls[0], 0, data) == data


class _LogCtrl:
    """A stand-in controller whose Discovery log changes while it is read:
    each header read takes the next generation counter of ``genctrs``."""

    def __init__(self, genctrs, numrec=5):
        self.genctrs = list(genctrs)
        self.genctr = None
        self.reads = []
        self.numrec = numrec

    def get_log_page(self, lid, length, *, nsid, rae, offset):
        self.reads.append((offset, length, rae))
        if offset == 0:
            self.genctr = self.genctrs.pop(0) if len(self.genctrs) > 1 else self.genctrs[0]
        page = bytearray(1024 + self.numrec * DISCOVERY_LOG_ENTRY_SIZE)
        header = DiscoveryLogHeader.view(page)
        header.genctr = self.genctr
        header.numrec = self.numrec
        for i in range(self.numrec):
            entry = DiscoveryLogEntry.view(page, 1024 + i * DISCOVERY_LOG_ENTRY_SIZE)
            entry.subnqn = f"nqn.2026-11.io.nvmestack:gen{self.genctr}-{i}"
        return page[offset : offset + length]


def test_discovery_generation_counter_reread():
    """Header, entries, header again; while GENCTR moved, from the start
    (the entries read with a stale counter are thrown away)."""
    ctrl = _LogCtrl([1, 2, 2, 2])  # header 1, closing header 2: read again
    log = get_discovery_log(ctrl)
    assert log.genctr == 2
    assert [e.subnqn for e in log.entries] == [f"nqn.2026-11.io.nvmestack:gen2-{i}" for i in range(5)]
    # Entries are read 4 KiB per command from offset 1024; headers with RAE
    # set except the closing one.
    one_pass = [(0, 1024, True), (1024, 4096, True), (5120, 1024, True), (0, 1024, False)]
    assert ctrl.reads == one_pass * 2
    unstable = _LogCtrl(list(range(100)))
    with pytest.raises(NvmeHostError, match="generation counter"):
        get_discovery_log(unstable, max_retries=3)
    assert unstable.reads == one_pass * 3
    assert get_discovery_log(_LogCtrl([5], numrec=0)) == DiscoveryLog(5, [])


def test_disconnect(live):
    ctrl = live.connect()
    tctrl = live.target_ctrl(ctrl)
    assert disconnect(ctrl) is True
    assert ctrl.state in (CtrlState.DELETING_NOIO, CtrlState.DEAD)
    assert tctrl.regs.csts.shst == 2  # the shutdown completed (CC.SHN through Property Set)
    assert wait_for(lambda: tctrl not in live.target.controllers)
    assert wait_for(lambda: not live.connections_of(tctrl))
    with pytest.raises(ControllerDeadError):
        ctrl.execute(Read(nsid=1, slba=0, nlb=0), bytearray(BS))


def test_connect_refused(live):
    with pytest.raises(ControllerDeadError, match="Connect Invalid Parameters"):
        connect("127.0.0.1", live.port, "nqn.2026-11.io.nvmestack:nobody", hostnqn=HOSTNQN)
    live.subsystem.allow_any_host = False
    try:
        with pytest.raises(ControllerDeadError, match="Connect Invalid Parameters"):  # as a missing subsystem
            connect("127.0.0.1", live.port, NQN, hostnqn=HOSTNQN)
        live.subsystem.allowed_hosts.add(HOSTNQN)
        live.connect()
    finally:
        live.subsystem.allow_any_host = True
        live.subsystem.allowed_hosts.clear()
    with pytest.raises(ControllerDeadError, match="cannot connect"):
        connect("127.0.0.1", 1, NQN, hostnqn=HOSTNQN)  # nobody listens on port 1
    assert live.target.controllers and all(c.hostnqn == HOSTNQN for c in live.target.controllers)


def test_connect_error_carries_dnr(live):
    transport = TcpTransport("127.0.0.1", live.port, subnqn="nqn.2026-11.io.nvmestack:nobody", hostnqn=HOSTNQN)
    with pytest.raises(ConnectError) as info:
        transport.enable_device()
    assert info.value.status is not None and info.value.status.dnr
    assert transport.reconnect_after(info.value) is None
    transport.close()


# ---------------------------------------------------------------------------
# keep alive


def test_keep_alive(live):
    ctrl = live.connect(kato=2, watchdog_interval=0.05)
    tctrl = live.target_ctrl(ctrl)
    assert tctrl.kato == 2000
    seen = {tctrl.last_keep_alive}
    assert wait_for(lambda: seen.add(tctrl.last_keep_alive) or len(seen) >= 3)
    # The target never expired the controller: same association, still live.
    assert ctrl.state == CtrlState.LIVE and ctrl.transport.associations == 1
    assert tctrl in live.target.controllers


# ---------------------------------------------------------------------------
# lost connections


def _park_writes(env, ctrl, count, qid=1):
    """``count`` writes the target receives and never completes."""
    env.faults.drop(admin=False, opcode=NvmOpcode.WRITE, count=count)
    reqs = []
    datas = []
    for i in range(count):
        data = pattern(BS * (1 + i % 40), 500 + i)  # in-capsule and R2T writes
        datas.append(data)
        reqs.append(ctrl.submit(Write(nsid=1, slba=i * 64, nlb=len(data) // BS - 1), data, qid=qid))
    assert wait_for(lambda: len([r for r in env.faults.parked if not r.done]) == count)
    assert not any(r.done for r in reqs)
    return reqs, datas


@pytest.mark.parametrize("which", ["io", "admin", "all"])
def test_reconnect_after_lost_connection(live, which):
    """A connection dies with writes in flight: the host tears the
    association down, reconnects (a new controller) and the writes complete
    exactly once, with their data on the medium."""
    ctrl = live.connect(io_queues=2)
    transport = ctrl.transport
    old = live.target_ctrl(ctrl)
    reqs, datas = _park_writes(live, ctrl, 12)
    qids = {"io": {1}, "admin": {0}, "all": None}[which]
    victims = live.connections_of(old, qids)
    assert victims
    for conn in victims:
        conn.abort()
    for req in reqs:
        req.wait(WAIT)
        assert req.done
        req.raise_for_status()
    assert ctrl.state == CtrlState.LIVE
    assert transport.associations == 2 and transport.connections_lost >= 1
    new = live.target_ctrl(ctrl)
    assert new is not None and new is not old
    assert wait_for(lambda: old not in live.target.controllers)
    assert ctrl.stats["requeued"] >= len(reqs)
    for i, data in enumerate(datas):
        buf = bytearray(len(data))
        ctrl.execute(Read(nsid=1, slba=i * 64, nlb=len(data) // BS - 1), buf)
        assert buf == data
    assert ctrl.double_completions == 0


def test_reconnect_after_target_restart(env):
    env.start_target()
    port = env.port
    ctrl = env.connect(io_queues=1, reconnect_delay=0.05, ctrl_loss_tmo=-1)
    data = pattern(16384, 77)
    assert write_read(ctrl, 0, data) == data
    env.target.stop()
    assert wait_for(lambda: ctrl.state != CtrlState.LIVE)
    # Requests made during the outage wait and go out after the reconnection.
    new_data = pattern(65536, 78)
    req = ctrl.submit(Write(nsid=1, slba=512, nlb=127), new_data)
    assert wait_for(lambda: ctrl.transport.nr_reconnects >= 2)  # attempts fail while nobody listens
    assert not req.done
    env.start_target(port=port)
    req.wait(WAIT)
    req.raise_for_status()
    assert ctrl.state == CtrlState.LIVE and ctrl.transport.associations == 2
    assert ctrl.transport.nr_reconnects == 0
    buf = bytearray(len(data))
    ctrl.execute(Read(nsid=1, slba=0, nlb=31), buf)
    assert buf == data
    assert write_read(ctrl, 512, new_data) == new_data


def test_controller_loss_timeout(env):
    env.start_target()
    ctrl = env.connect(io_queues=1, reconnect_delay=0.05, ctrl_loss_tmo=0.2)
    reqs, _ = _park_writes(env, ctrl, 3)
    env.target.stop()
    for req in reqs:
        req.wait(WAIT)
        assert req.done
        assert isinstance(req.error, ControllerDeadError)
    assert ctrl.state == CtrlState.DEAD
    assert ctrl.transport.nr_reconnects == ctrl.transport.max_reconnects == 4
    with pytest.raises(ControllerDeadError):
        ctrl.execute(Read(nsid=1, slba=0, nlb=0), bytearray(BS))


def test_no_reconnect_after_connect_with_dnr(env):
    """A Connect refused with DNR (the host is no longer allowed) ends the
    reconnection at once, as Linux's nvmf_should_reconnect."""
    env.start_target()
    ctrl = env.connect(io_queues=1, reconnect_delay=0.05, ctrl_loss_tmo=-1)
    tctrl = env.target_ctrl(ctrl)
    env.subsystem.allow_any_host = False
    for conn in env.connections_of(tctrl, {0}):
        conn.abort()
    assert wait_for(lambda: ctrl.state == CtrlState.DEAD)
    assert "Connect Invalid Parameters" in (ctrl.dead_reason or "")  # answered as a missing subsystem
    assert ctrl.transport.nr_reconnects == 0
    env.subsystem.allow_any_host = True


def test_term_req_from_the_controller(live):
    """A C2HTermReq ends the connection; the host recovers."""
    ctrl = live.connect(io_queues=1)
    tctrl = live.target_ctrl(ctrl)
    conn = live.connections_of(tctrl, {1})[0]
    conn.terminate(FatalErrorStatus.PDU_SEQUENCE_ERROR)
    assert wait_for(lambda: ctrl.transport.associations == 2 and ctrl.state == CtrlState.LIVE)
    data = pattern(4096, 3)
    assert write_read(ctrl, 0, data) == data


def test_bad_pdu_from_the_controller(live):
    """A PDU the host cannot accept: H2CTermReq, then recovery."""
    ctrl = live.connect(io_queues=1)
    tctrl = live.target_ctrl(ctrl)
    conn = live.connections_of(tctrl, {1})[0]
    if live.target._pool is not None:
        pytest.skip("sends a PDU through a connection of the main process (a worker serves this one)")
    conn._send([bytes([0x7E, 0, 24, 0, 24, 0, 0, 0]) + bytes(16)])  # unknown PDU type
    assert wait_for(lambda: ctrl.transport.associations == 2 and ctrl.state == CtrlState.LIVE)
    assert ctrl.transport.connections_lost >= 1
    data = pattern(4096, 4)
    assert write_read(ctrl, 0, data) == data


def test_reset_is_a_new_association(live):
    ctrl = live.connect(io_queues=1)
    old = live.target_ctrl(ctrl)
    assert ctrl.reset(timeout=WAIT)
    assert ctrl.transport.associations == 2
    new = live.target_ctrl(ctrl)
    assert new is not old
    assert wait_for(lambda: old not in live.target.controllers)
    data = pattern(4096, 5)
    assert write_read(ctrl, 0, data) == data


# ---------------------------------------------------------------------------
# the block layer on top, and recovery under load


def test_block_device_over_tcp(env):
    """BlockDevice splits by MDTS and spreads threads over the queues."""
    from nvmestack.host.block import BlockDevice

    env.start_target(mdts=7)  # 512 KiB: the 1 MiB writes below are split
    live = env
    ctrl = live.connect(io_queues=2)
    dev = BlockDevice(ctrl.namespaces[1], timeout=WAIT)
    assert ctrl.max_transfer < 1 << 20
    shadows = {}

    def worker(i):
        rng = random.Random(i)
        start = i * (2 << 20)
        shadow = bytearray(rng.randbytes(1 << 20))  # larger than MDTS: split
        dev.write(start, bytes(shadow))
        for _ in range(10):
            off = rng.randrange(0, (1 << 20) // BS - 64) * BS
            chunk = rng.randbytes(rng.randrange(1, 64) * BS)
            dev.write(start + off, chunk)
            shadow[off : off + len(chunk)] = chunk
        shadows[i] = shadow

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(shadows) == [0, 1, 2]
    dev.flush()
    for i, shadow in shadows.items():
        assert bytes(dev.read(i * (2 << 20), 1 << 20)) == bytes(shadow)


def test_io_survives_repeated_connection_loss(live):
    """Writers and readers keep going while every connection of the
    association is cut three times: each request completes exactly once and
    the medium ends up with what the shadow copy says."""
    ctrl = live.connect(io_queues=2, reconnect_delay=0.02)
    region = 256  # blocks per worker
    stop = threading.Event()
    errors = []
    shadows = {}

    def worker(i):
        rng = random.Random(1000 + i)
        shadow = bytearray(region * BS)
        base = i * region
        try:
            while not stop.is_set():
                off = rng.randrange(0, region - 16)
                n = rng.randrange(1, 16)
                data = rng.randbytes(n * BS)
                ctrl.execute(Write(nsid=1, slba=base + off, nlb=n - 1), data)
                shadow[off * BS : (off + n) * BS] = data
                buf = bytearray(n * BS)
                ctrl.execute(Read(nsid=1, slba=base + off, nlb=n - 1), buf)
                assert buf == shadow[off * BS : (off + n) * BS]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        shadows[i] = shadow

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for cut in range(3):
            assert wait_for(lambda c=cut: ctrl.state == CtrlState.LIVE and ctrl.stats["completed"] > 40 * (c + 1))
            tctrl = live.target_ctrl(ctrl)
            for conn in live.connections_of(tctrl):
                conn.abort()
            assert wait_for(lambda c=cut: ctrl.transport.associations == c + 2 and ctrl.state == CtrlState.LIVE)
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT)
    assert not errors, errors
    assert ctrl.double_completions == 0 and HostRequest.double_completions == 0
    for i, shadow in shadows.items():
        buf = bytearray(region * BS)
        ctrl.execute(Read(nsid=1, slba=i * region, nlb=region - 1), buf)
        assert buf == shadow


# ---------------------------------------------------------------------------
# protocol checks against a fake controller (nvmestack.tcp.ControllerStream
# and a socket): what the real target never does


class FakeController:
    """A minimal NVMe/TCP controller: answers the ICReq, Connect and
    Property Get/Set (CC.EN and CC.SHN show in CSTS); ``on_command(fake,
    conn, ev)`` sees every other command first and may answer it, or
    misbehave.  ``received`` keeps the events that ended connections."""

    CAP = 127 | 1 << 16 | 10 << 24 | 1 << 37  # MQES 127, CQR, TO 5 s, CSS NVM, MPSMIN = MPSMAX = 4 KiB

    def __init__(self, **stream_options):
        import socket

        self.stream_options = stream_options
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.regs = {Reg.CAP: self.CAP, Reg.VS: 0x20000, Reg.CC: 0, Reg.CSTS: 0}
        self.on_command = None
        self.received = []
        self.commands = []
        self.socks = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.socks.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def send(self, sock, bufs):
        sock.sendall(b"".join(bytes(b) for b in bufs))

    def respond(self, conn, cid, status=0, dw0=0, dw1=0):
        from nvmestack.spec.cqe import Completion

        cqe = Completion(cid=cid, dw0=dw0, dw1=dw1)
        cqe.status = status
        self.send(conn[0], conn[1].response(cqe))

    def _serve(self, sock):
        from nvmestack.tcp import CommandReceived, ConnectionClosed, ICReqReceived, ProtocolError, TermReqReceived

        stream = ControllerStream(**self.stream_options)
        conn = (sock, stream)
        try:
            while True:
                data = sock.recv(1 << 20)
                for ev in stream.receive_data(data):
                    if isinstance(ev, ICReqReceived):
                        self.send(sock, ev.reply)
                    elif isinstance(ev, CommandReceived):
                        self.commands.append(bytes(ev.sqe))
                        if self.on_command is not None and self.on_command(self, conn, ev):
                            continue
                        self._fabrics(conn, ev)
                    elif isinstance(ev, (TermReqReceived, ProtocolError, ConnectionClosed)):
                        self.received.append(ev)
                        return
                if not data:
                    return
        except OSError:
            return
        finally:
            sock.close()

    def _fabrics(self, conn, ev):
        sqe = ev.sqe
        if sqe[0] != 0x7F:
            self.respond(conn, ev.cid, status=0x01)  # Invalid Command Opcode
            return
        fctype = sqe[4]
        if fctype == 0x01:  # Connect
            self.respond(conn, ev.cid, dw0=1)
        elif fctype == 0x04:  # Property Get
            value = self.regs.get(int.from_bytes(sqe[44:48], "little"), 0)
            self.respond(conn, ev.cid, dw0=value & 0xFFFFFFFF, dw1=value >> 32)
        elif fctype == 0x00:  # Property Set
            offset = int.from_bytes(sqe[44:48], "little")
            value = int.from_bytes(sqe[48:52], "little")
            self.regs[offset] = value
            if offset == Reg.CC:
                csts = value & 1
                if (value >> 14) & 3:
                    csts |= 2 << 2  # shutdown complete
                self.regs[Reg.CSTS] = csts
            self.respond(conn, ev.cid)
        else:
            self.respond(conn, ev.cid, status=0x02)

    def close(self):
        self._stop = True
        self.listener.close()
        for sock in self.socks:
            try:
                sock.close()
            except OSError:
                pass


@pytest.fixture
def fake():
    fakes = []
    transports = []

    def make(transport_options=None, **stream_options):
        f = FakeController(**stream_options)
        fakes.append(f)
        options = {"hostnqn": HOSTNQN, "connect_timeout": 5, "command_timeout": 5}
        options.update(transport_options or {})
        t = TcpTransport("127.0.0.1", f.port, subnqn=NQN, **options)
        transports.append(t)
        return f, t

    yield make
    for t in transports:
        t.close()
    for f in fakes:
        f.close()


def test_fake_properties_and_connect(fake):
    f, transport = fake()
    transport.enable_device()
    assert transport.cntlid == 1
    assert transport.reg_read64(Reg.CAP) == FakeController.CAP
    transport.reg_write32(Reg.CC, 0x460001)
    assert transport.reg_read32(Reg.CSTS) & 1
    assert transport.disable(shutdown=True, timeout=5)
    connect_sqe = f.commands[0]
    assert connect_sqe[0] == 0x7F and connect_sqe[4] == 0x01
    assert int.from_bytes(connect_sqe[44:46], "little") == ADMIN_QUEUE_ENTRIES - 1  # SQSIZE
    assert int.from_bytes(connect_sqe[48:52], "little") == int(DEFAULT_KATO * 1000)  # KATO, ms
    assert connect_sqe[1] >> 6 == Psdt.SGL_MPTR_CONTIGUOUS
    assert connect_sqe[39] == (SglType.DATA_BLOCK << 4 | SglSubtype.OFFSET)  # the Connect data is in the capsule


@pytest.mark.parametrize("asked,granted", [((True, False), 0), ((True, True), 1), ((False, True), 0)])
def test_fake_digest_mismatch_refused(fake, asked, granted):
    """As Linux, a controller that grants other digests than asked is refused."""
    from nvmestack.spec.tcp import DigestType

    f, transport = fake({"hdr_digest": asked[0], "data_digest": asked[1]}, digests=DigestType(granted))
    with pytest.raises(ConnectError, match="digests"):
        transport.enable_device()
    assert transport.cntlid is None and not transport.queues


def test_fake_response_for_unknown_command_is_ignored(fake):
    f, transport = fake()

    def stray(fake_, conn, ev):
        if ev.sqe[0] == 0x7F and ev.sqe[4] == 0x04:
            fake_.respond(conn, ev.cid ^ 0x0800, dw0=0xDEAD)  # a command identifier we never used
        return False

    transport.enable_device()
    f.on_command = stray
    assert transport.reg_read32(Reg.VS) == 0x20000
    queue = transport.queues[0]
    assert wait_for(lambda: queue.spurious == 1)
    assert not queue.broken


def test_fake_r2t_for_a_command_without_write_data(fake):
    """An R2T the host cannot answer: H2CTermReq (FES 01h, FEI at CCCID) and
    the connection ends; the command waiting on it fails."""
    from nvmestack.spec.tcp import R2T as R2THeader, pdu_layout

    f, transport = fake()

    def bad_r2t(fake_, conn, ev):
        if ev.sqe[0] == 0x7F and ev.sqe[4] == 0x04:
            layout = pdu_layout(R2THeader.PDU_TYPE, 0)
            pdu = R2THeader()
            pdu.set_layout(layout)
            pdu.cccid, pdu.ttag, pdu.r2to, pdu.r2tl = ev.cid, 1, 0, 4096
            fake_.send(conn[0], [bytes(pdu)])
            return True
        return False

    transport.enable_device()
    f.on_command = bad_r2t
    assert transport.reg_read32(Reg.CSTS) == 0xFFFFFFFF  # the connection is gone
    queue = transport.queues[0]
    assert queue.broken and "protocol error" in queue.broken
    assert wait_for(lambda: f.received)
    term = f.received[0]
    assert term.fes == FatalErrorStatus.INVALID_HEADER_FIELD and term.fei == 8  # CCCID


def test_fake_c2h_data_beyond_the_transfer(fake):
    """More read data than the command asked for: H2CTermReq with FES 04h
    (Data Transfer Out of Range)."""
    f, transport = fake()
    transport.enable_device()
    queue = transport.queues[0]

    def too_much(fake_, conn, ev):
        if ev.sqe[0] == NvmOpcode.READ:
            fake_.send(conn[0], conn[1].c2h_data(ev.cid, [bytes(8192)], last=True))
            return True
        return False

    f.on_command = too_much
    req = HostRequest(Read(nsid=1, slba=0, nlb=7), bytearray(4096))
    transport.map_data(req, queue)
    queue.submit([req])
    assert wait_for(lambda: queue.broken)
    assert wait_for(lambda: f.received)
    assert f.received[0].fes == FatalErrorStatus.DATA_TRANSFER_OUT_OF_RANGE
    assert not req.done  # with no controller, the request is left for the core's drain


def test_cpda_alignment(env):
    """A controller asking for 32-byte aligned host data (CPDA 7): command
    capsules and H2CData carry their data at such offsets (Linux's host
    would refuse; the stream pads)."""
    env.start_target(cpda=7)
    ctrl = env.connect(io_queues=1, data_digest=True, hdr_digest=True)
    queue = ctrl.transport.queues[1]
    assert queue.cpda == 7 and queue.stream.tx_pda == 7
    for size in (BS, 64 * 1024):
        data = pattern(size, size)
        assert write_read(ctrl, 0, data) == data
    assert queue.r2ts == 1


# ---------------------------------------------------------------------------
# the core's machinery over TCP: events, timeouts, removal while reconnecting


def test_namespace_change_event(live):
    """An Asynchronous Event Request (on its reserved admin tag) completes
    when a namespace appears; the host rescans."""
    ctrl = live.connect(io_queues=1)
    assert list(ctrl.namespaces) == [1]
    live.subsystem.add_namespace(Namespace(2, 2048))
    assert wait_for(lambda: 2 in ctrl.namespaces)
    assert ctrl.namespaces[2].nblocks == 2048
    assert any(e.type == 2 for e in ctrl.events)


def test_timeout_abort_over_tcp(live):
    """A write the controller sits on times out; the core's Abort travels on
    the admin connection and the retry completes it."""
    ctrl = live.connect(io_queues=1, io_timeout=0.5, watchdog_interval=0.05)
    live.faults.drop(admin=False, opcode=NvmOpcode.WRITE, count=1)
    data = pattern(8192, 31)
    req = ctrl.execute(Write(nsid=1, slba=64, nlb=15), data)
    assert req.ok and req.retries >= 1
    assert ctrl.stats["aborts"] >= 1 and ctrl.transport.associations == 1
    buf = bytearray(8192)
    ctrl.execute(Read(nsid=1, slba=64, nlb=15), buf)
    assert buf == data


def test_shutdown_while_reconnecting(env):
    """Removing a controller that waits to reconnect does not wait for the
    next attempt; pending requests fail."""
    env.start_target()
    ctrl = env.connect(io_queues=1, reconnect_delay=120, ctrl_loss_tmo=-1)
    env.target.stop()
    assert wait_for(lambda: ctrl.state == CtrlState.CONNECTING)
    req = ctrl.submit(Read(nsid=1, slba=0, nlb=0), bytearray(BS))
    done = threading.Event()
    threading.Thread(target=lambda: (ctrl.shutdown(), done.set()), daemon=True).start()
    assert done.wait(WAIT)  # long before the next attempt (120 s)
    assert req.done and isinstance(req.error, ControllerDeadError)
    assert ctrl.state in (CtrlState.DEAD, CtrlState.DELETING_NOIO)


def test_small_socket_buffers(live):
    """Sends that the socket takes in pieces (EAGAIN): the rest goes out
    when the socket is writable again, PDUs never interleave."""
    import socket as socketmod

    ctrl = live.connect(io_queues=2)
    for queue in ctrl.transport.queues.values():
        queue.sock.setsockopt(socketmod.SOL_SOCKET, socketmod.SO_SNDBUF, 4096)
    errors = []

    def worker(n):
        try:
            for i in range(4):
                data = pattern(256 * 1024, n * 10 + i)
                assert write_read(ctrl, n * 2048 + i * 512, data, qid=1 + n % 2) == data
                small = pattern(8192, n * 10 + i + 5)
                assert write_read(ctrl, 12000 + n * 16, small, qid=1 + n % 2) == small
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors, errors
    assert ctrl.transport.associations == 1
    assert sum(q.send_stalls for q in ctrl.io_queues) > 0
