"""Our host against a path that goes silent (issue 12, item 3): a proxy on
127.0.0.1 between the host and the NVMe/TCP target stops forwarding without
closing anything -- what a network partition looks like to both ends: no
FIN, no RST, bytes held.  The host must notice within KATO and the I/O
timeout (the watchdog's keep alive, deadlines and health check never wait
on each other), reconnect once the path is back, and complete every write
exactly once with its data on the medium.

Times are short so the tests take a few seconds; the only timing asserted
is the generous bound that proves "within KATO + I/O timeout" against the
admin timeout (60 s) a blocked health check would wait for."""

from __future__ import annotations

import random
import select
import socket
import threading
import time
import uuid

import pytest

from nvmestack.host import CtrlState, HostRequest
from nvmestack.host.tcp import connect
from nvmestack.spec.nvm import Read, Write
from nvmestack.target import Namespace, Subsystem
from nvmestack.target.tcp import TcpTarget

from .test_host import wait_for
from .conftest import namespace

NQN = "nqn.2026-11.io.nvmestack:partition"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0f0f0f0f-1111-2222-3333-555555555555"
HOSTID = uuid.UUID("0f0f0f0f-1111-2222-3333-555555555555")
BS = 512
KATO = 2.0
IO_TIMEOUT = 1.0
#: Slack on top of KATO + I/O timeout for a loaded two-core machine; far
#: below the 60 s admin timeout a blocking health check waits for.
SLACK = 3.0
WAIT = 30.0


class BlackholeProxy:
    """Forwards connections on ``port`` to the target, a thread per
    direction.  :meth:`cut` makes the path silent (nothing is forwarded,
    nothing is closed; new connections are accepted and held the same
    way); :meth:`heal` forwards again, what was held first, as TCP delivers
    it once a partition ends."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.passing = threading.Event()
        self.passing.set()
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.socks: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def cut(self) -> None:
        self.passing.clear()

    def heal(self) -> None:
        self.passing.set()

    def _spawn(self, fn, *args) -> None:
        thread = threading.Thread(target=fn, args=args, name="blackhole-proxy", daemon=True)
        thread.start()
        self.threads.append(thread)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.socks += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.closed.is_set():
                if not self.passing.wait(0.05):
                    continue  # cut: leave the bytes where they are
                ready, _, _ = select.select([src], [], [], 0.05)
                if not ready:
                    continue
                data = src.recv(65536)
                while not self.passing.is_set() and not self.closed.is_set():
                    time.sleep(0.01)  # cut meanwhile: hold what was read
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except (OSError, ValueError):
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed.set()
        self.passing.set()
        self.listener.close()
        with self.lock:
            socks = list(self.socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self.threads:
            thread.join(5)
        for sock in socks:
            sock.close()


class Path:
    """A target, the proxy in front of it and the hosts connected through it."""

    def __init__(self):
        self.subsystem = Subsystem(NQN, serial="PARTITION1", model="nvmestack partition test")
        self.subsystem.add_namespace(namespace(1, 16384))
        self.target = TcpTarget([self.subsystem])
        listening = self.target.listen("127.0.0.1", 0)
        self.target.start()
        self.proxy = BlackholeProxy(int(listening.trsvcid))
        self.ctrls = []

    def connect(self, **options):
        options.setdefault("hostnqn", HOSTNQN)
        options.setdefault("hostid", HOSTID)
        options.setdefault("io_queues", 2)
        options.setdefault("kato", KATO)
        options.setdefault("io_timeout", IO_TIMEOUT)
        # The admin timeout stays the default (60 s): a watchdog that waits
        # on a Property Get waits that long.
        options.setdefault("reconnect_delay", 0.1)
        options.setdefault("ctrl_loss_tmo", -1)
        ctrl = connect("127.0.0.1", self.proxy.port, NQN, **options)
        self.ctrls.append(ctrl)
        return ctrl

    def close(self):
        self.proxy.heal()  # an orderly shutdown talks to the controller
        for ctrl in self.ctrls:
            ctrl.shutdown()
        self.proxy.close()
        self.target.stop()
        self.subsystem.close()
        for ctrl in self.ctrls:
            assert ctrl.double_completions == 0


@pytest.fixture
def path():
    p = Path()
    yield p
    p.close()


def _watch_recovery(ctrl) -> list[float]:
    """Times at which the controller left LIVE (it noticed the path is gone)."""
    left: list[float] = []
    ctrl.state_callbacks.append(lambda old, new: left.append(time.monotonic()) if old == CtrlState.LIVE else None)
    return left


def test_partition_with_writes_in_flight(path):
    """Writes go out while the path is silent: the host notices within KATO
    and the I/O timeout, reconnects when the path returns, and every write
    completes once with its data on the medium."""
    ctrl = path.connect()
    before = HostRequest.double_completions
    left = _watch_recovery(ctrl)
    rng = random.Random(12)
    warm = rng.randbytes(8 * BS)
    ctrl.execute(Write(nsid=1, slba=0, nlb=7), warm)

    path.proxy.cut()
    cut_at = time.monotonic()
    writes = []
    for i in range(24):
        nblocks = 1 + i % 20  # in-capsule and R2T writes
        data = rng.randbytes(nblocks * BS)
        slba = 64 + i * 32
        writes.append((slba, data, ctrl.submit(Write(nsid=1, slba=slba, nlb=nblocks - 1), data)))

    bound = KATO + IO_TIMEOUT + SLACK
    assert wait_for(lambda: left, bound), f"the silent path went unnoticed for {bound:g} s"
    assert left[0] - cut_at <= bound
    time.sleep(0.5)  # reconnect attempts meet the silent path too
    path.proxy.heal()

    for _slba, _data, req in writes:
        req.wait(WAIT)
        assert req.done
        req.raise_for_status()
    assert ctrl.wait_live(WAIT)
    assert ctrl.transport.associations >= 2
    for slba, data, _req in [(0, warm, None)] + writes:
        buf = bytearray(len(data))
        ctrl.execute(Read(nsid=1, slba=slba, nlb=len(data) // BS - 1), buf)
        assert buf == data
    assert ctrl.double_completions == 0 and HostRequest.double_completions == before


def test_idle_partition_is_noticed_by_keep_alive(path):
    """Nothing in flight: the keep alive alone notices the silent path
    within KATO; the host comes back when the path does."""
    ctrl = path.connect()
    left = _watch_recovery(ctrl)
    assert ctrl.state == CtrlState.LIVE
    path.proxy.cut()
    cut_at = time.monotonic()
    bound = KATO + SLACK
    assert wait_for(lambda: left, bound), f"the silent path went unnoticed for {bound:g} s"
    assert left[0] - cut_at <= bound
    path.proxy.heal()
    assert ctrl.wait_live(WAIT)
    data = random.Random(7).randbytes(4 * BS)
    ctrl.execute(Write(nsid=1, slba=8, nlb=3), data)
    buf = bytearray(len(data))
    ctrl.execute(Read(nsid=1, slba=8, nlb=3), buf)
    assert buf == data
