"""The Linux kernel's NVMe/TCP host (nvme-tcp, driven by Debian's nvme-cli)
in the guest against our target: ``python -m nvmestack serve`` running on
the host's 127.0.0.1, which the guest reaches as 10.0.2.100 through QEMU's
guestfwd (one socat per connection).

Each test connects the kernel to the target and disconnects it again; the
target runs from its embedded default configuration in a temporary data
directory for the whole module, and is restarted once (the data must
survive it).  Every test runs twice: with the target in one process, and
with ``serve --workers 2`` (worker processes serving the I/O queues,
target/workers.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nvmestack.spec.fabrics import DISCOVERY_NQN
from nvmestack.spec.tcp import PduFlags, PduType
from nvmestack.testing.vm import HOST_ADDR, die_with_parent

#: Kernel host options keeping a broken connection from blocking the guest
#: for the default 10 minutes: I/O fails after ctrl-loss-tmo seconds.
CONNECT_OPTIONS = "--ctrl-loss-tmo=30 --reconnect-delay=2"


class ServeProcess:
    """``python -m nvmestack serve`` on 127.0.0.1 as a subprocess."""

    def __init__(self, port: int, discovery_port: int, data_dir: Path, workers: int = 0):
        self.port, self.discovery_port, self.data_dir = port, discovery_port, data_dir
        self.argv = [sys.executable, "-m", "nvmestack", "serve", "--addr", "127.0.0.1", "--port", str(port),
                     "--discovery-port", str(discovery_port), "--data-dir", str(data_dir), "--workers", str(workers)]
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"serve-{self.starts}.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 120.0) -> None:
        self.starts += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=die_with_parent(signal.SIGTERM))
        deadline = time.monotonic() + timeout
        waiting = {self.port, self.discovery_port}
        while waiting:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`{shlex.join(self.argv[1:])}` exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"`{shlex.join(self.argv[1:])}` did not listen on {sorted(waiting)} "
                                   f"within {timeout} s:\n{self.log()[-4000:]}")
            for port in sorted(waiting):  # a copy: ports are discarded meanwhile
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=5).close()
                    waiting.discard(port)
                except OSError:
                    pass
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        """The worker processes this start of serve reported."""
        m = re.search(r"I/O queues served by \d+ worker processes \(([\d, ]+)\)", self.log())
        return [int(p) for p in m.group(1).split(", ")] if m else []

    def worker_connections(self) -> int:
        """TCP connections the worker processes hold (beyond their own
        channel and wake-up sockets: three each)."""
        count = 0
        for pid in self.worker_pids():
            fds = Path(f"/proc/{pid}/fd")
            count += sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("socket:")) - 3
        return count

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then wait; returns the exit status (None: had to be killed)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            return None


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[0, 2], ids=["one-process", "workers"])
def target(request, vm, interop_ports, tmp_path_factory):
    """Our target, running (in one process, or with two worker processes
    for the I/O queues); also makes sure the guest has its NVMe/TCP host module."""
    vm.check("modprobe nvme-tcp", 60)
    serve = ServeProcess(interop_ports["target"], interop_ports["discovery"],
                         tmp_path_factory.mktemp("serve") / "data", workers=request.param)
    serve.data_dir.mkdir()
    serve.start()
    yield serve
    serve.stop()


def parse_discovery(text: str) -> list[dict[str, str]]:
    """nvme-cli's normal `nvme discover` output: one dict per log entry."""
    entries = []
    for block in re.split(r"=+Discovery Log Entry \d+=+", text)[1:]:
        entries.append({k.strip(): v.strip() for k, v in re.findall(r"^(\w+):\s*(.*)$", block, re.MULTILINE)})
    return entries


@pytest.fixture(scope="module")
def subsystem(vm, target):
    """The NQN of the subsystem our target serves (from its discovery log)."""
    out = vm.check(f"nvme discover -t tcp -a {HOST_ADDR} -s {target.discovery_port}", 120)
    nqns = [e["subnqn"] for e in parse_discovery(out) if e.get("subnqn") and e["subnqn"] != DISCOVERY_NQN]
    assert nqns, out
    return nqns[0]


class Connection:
    """The kernel connected to our subsystem: ``ctrl`` /dev/nvmeX, ``ns`` /dev/nvmeXnY."""

    def __init__(self, vm, nqn: str, ctrl: str, ns: str):
        self.vm, self.nqn, self.ctrl, self.ns = vm, nqn, ctrl, ns


def kernel_connect(vm, target, nqn: str, flags: str = "", port: int | None = None) -> Connection:
    port = port or target.port
    vm.check(f"nvme connect -t tcp -a {HOST_ADDR} -s {port} -n {nqn} {CONNECT_OPTIONS} {flags}", 120)
    ctrl = vm.check(f"nvme-dev -c {nqn} 60", 90).strip()
    ns = vm.check(f"nvme-dev {nqn} 60", 90).strip()
    return Connection(vm, nqn, ctrl, ns)


def kernel_disconnect(vm, nqn: str) -> str:
    return vm.check(f"nvme disconnect -n {nqn}", 120)


@pytest.fixture
def connected(vm, target, subsystem):
    """The kernel host connected (no digests) for one test, disconnected after it."""
    conn = kernel_connect(vm, target, subsystem)
    yield conn
    vm.run(f"umount /mnt/interop 2>/dev/null; nvme disconnect -n {subsystem}", 120)


def nvme_json(vm, cmd: str) -> dict:
    return json.loads(vm.check(cmd + " -o json", 120))


# -- tests ---------------------------------------------------------------------------------------


def test_discover(vm, target, subsystem):
    out = vm.check(f"nvme discover -t tcp -a {HOST_ADDR} -s {target.discovery_port}", 120)
    entries = {e["subnqn"]: e for e in parse_discovery(out)}
    entry = entries[subsystem]
    assert entry["trtype"] == "tcp"
    assert entry["adrfam"] == "ipv4"
    assert entry["subtype"] == "nvme subsystem"
    # The entry names the port as our target sees it (the guest reaches it
    # through the forward, at the same port number).
    assert entry["trsvcid"] == str(target.port)
    assert entry["traddr"] == "127.0.0.1"


@pytest.mark.parametrize("hdr,data", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["plain", "header-digest", "data-digest", "both-digests"])
def test_connect_io_disconnect(vm, target, subsystem, interop_ports, pdu_tap, hdr, data):
    """nvme connect (-g header digest, -G data digest), I/O, nvme disconnect;
    the connections go through a tap that checks the PDUs on the wire."""
    tap = pdu_tap(target.port)
    flags = ("-g " if hdr else "") + ("-G" if data else "")
    conn = kernel_connect(vm, target, subsystem, flags, port=interop_ports["tap"])
    try:
        listed = vm.check("nvme list", 60)
        assert conn.ns in listed
        address = vm.check(f"cat /sys/class/nvme/{conn.ctrl.removeprefix('/dev/')}/address", 30)
        assert f"traddr={HOST_ADDR}" in address and f"trsvcid={interop_ports['tap']}" in address
        # Data both ways: 1 MiB written, read back past the page cache.
        out = vm.check(f"dd if=/dev/urandom of=/tmp/data bs=64k count=16 2>/dev/null && "
                       f"dd if=/tmp/data of={conn.ns} bs=64k seek=16 oflag=direct 2>/dev/null && "
                       f"a=$(sha256sum < /tmp/data) && "
                       f"b=$(dd if={conn.ns} bs=64k skip=16 count=16 iflag=direct 2>/dev/null | sha256sum) && "
                       f"echo \"$a\" && echo \"$b\"", 120)
        a, b = out.split("\n")[:2]
        assert a == b
    finally:
        out = kernel_disconnect(vm, subsystem)
    assert "disconnected 1 controller" in out
    rc, _ = vm.run(f"test -e {conn.ctrl}", 30)
    assert rc != 0, "the controller device is still there after nvme disconnect"

    # On the wire: an admin and at least one I/O connection, each negotiating
    # exactly the digests asked for, then using them on every PDU.
    assert len(tap.connections) >= 2
    data_pdus = 0
    for record in tap.connections:
        icreq, icresp = record["h2c"][0], record["c2h"][0]
        assert icreq[0] == PduType.ICREQ and icresp[0] == PduType.ICRESP
        assert icreq[5][11] == hdr | data << 1  # DGST asked for
        assert icresp[5][11] == hdr | data << 1  # and granted
        for ptype, flags_, hlen, pdo, plen, _ in record["h2c"][1:] + record["c2h"][1:]:
            assert bool(flags_ & PduFlags.HDGSTF) == hdr, (PduType(ptype), flags_)
            if pdo:  # the PDU carries data
                data_pdus += 1
                assert bool(flags_ & PduFlags.DDGSTF) == data, (PduType(ptype), flags_)
    assert data_pdus > 0


def test_id_ctrl(vm, connected):
    idc = nvme_json(vm, f"nvme id-ctrl {connected.ctrl}")
    assert idc["subnqn"] == connected.nqn
    assert idc["sn"].strip() and idc["mn"].strip()
    assert idc["ioccsz"] >= 4  # a command capsule holds at least the 64-byte SQE
    assert idc["iorcsz"] >= 1
    assert idc["maxcmd"] >= 1
    assert idc["cntrltype"] == 1  # I/O controller
    listed = vm.check("nvme list", 60)
    assert idc["sn"].strip() in listed


def test_id_ns(vm, connected):
    idns = nvme_json(vm, f"nvme id-ns {connected.ns}")
    lbaf = idns["lbafs"][idns["flbas"] & 0xF]
    block = 1 << lbaf["ds"]
    size = int(vm.check(f"blockdev --getsize64 {connected.ns}", 30))
    assert idns["nsze"] > 0
    assert idns["nsze"] * block == size
    assert int(vm.check(f"blockdev --getss {connected.ns}", 30)) == block


def test_smart_log(vm, connected):
    before = nvme_json(vm, f"nvme smart-log {connected.ctrl}")
    assert before["critical_warning"] == 0
    vm.check(f"dd if=/dev/urandom of={connected.ns} bs=64k count=64 oflag=direct 2>/dev/null", 120)
    after = nvme_json(vm, f"nvme smart-log {connected.ctrl}")
    # nvme-cli prints the 128-bit counters as strings.
    assert int(after["host_write_commands"]) >= int(before["host_write_commands"]) + 64
    assert int(after["data_units_written"]) > int(before["data_units_written"])


FIO_JOBS = [("4k", "randwrite", "4M"), ("4k", "write", "4M"), ("128k", "randwrite", "16M"), ("128k", "write", "16M")]


@pytest.mark.parametrize("bs,rw,size", FIO_JOBS, ids=[f"{bs}-{rw}" for bs, rw, _ in FIO_JOBS])
def test_fio_write_verify(vm, target, connected, bs, rw, size):
    """Two fio jobs at queue depth 32 write their own areas and verify them."""
    out = vm.check(f"fio --name=interop --filename={connected.ns} --rw={rw} --bs={bs} --size={size} "
                   f"--offset_increment={size} --numjobs=2 --iodepth=32 --ioengine=libaio --direct=1 "
                   f"--verify=crc32c --verify_fatal=1 --do_verify=1 --output-format=json 2>&1", 600)
    report = json.loads(out[out.index("{"):])
    if target.workers:  # the kernel's I/O queues were served by the worker processes
        assert len(target.worker_pids()) == target.workers
        assert target.worker_connections() >= 1
    assert len(report["jobs"]) == 2
    want = int(size[:-1]) << 20
    for job in report["jobs"]:
        assert job["error"] == 0
        assert job["write"]["io_bytes"] == want
        assert job["read"]["io_bytes"] == want  # the verify pass read it all back


def test_ext4_survives_a_target_restart(vm, target, subsystem):
    files = "for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/mnt/interop/f$i bs=64k count=$((i * 4)) 2>/dev/null; done"
    sums = "cd /mnt/interop && sha256sum f1 f2 f3 f4 f5 f6 && cd /"
    conn = kernel_connect(vm, target, subsystem)
    try:
        vm.check(f"mkfs.ext4 -F -q {conn.ns}", 300)
        vm.check(f"mkdir -p /mnt/interop && mount -t ext4 {conn.ns} /mnt/interop && "
                 f"mkdir /mnt/interop/dir && echo hello > /mnt/interop/dir/hello && {files} && sync", 300)
        written = vm.check(sums, 120)
        if target.workers:
            assert target.worker_connections() >= 1
        vm.check("umount /mnt/interop", 120)
        fsck = vm.run(f"fsck.ext4 -f -n {conn.ns}", 300)
        assert fsck[0] == 0, fsck[1]
    finally:
        vm.run("umount /mnt/interop 2>/dev/null", 60)
        kernel_disconnect(vm, subsystem)

    assert target.stop() == 0, "nvmestack serve did not stop cleanly on SIGTERM:\n" + target.log()[-4000:]
    target.start()

    conn = kernel_connect(vm, target, subsystem)
    try:
        vm.check(f"mount -t ext4 -o ro {conn.ns} /mnt/interop", 120)
        assert vm.check(sums, 120) == written
        assert vm.check("cat /mnt/interop/dir/hello", 30).strip() == "hello"
        vm.check("umount /mnt/interop", 120)
        fsck = vm.run(f"fsck.ext4 -f -n {conn.ns}", 300)
        assert fsck[0] == 0, fsck[1]
    finally:
        vm.run("umount /mnt/interop 2>/dev/null", 60)
        kernel_disconnect(vm, subsystem)


def test_kernel_reconnects_across_a_target_restart(vm, target, subsystem):
    """The kernel stays connected while our target restarts: it reconnects
    (every --reconnect-delay) to a new controller, I/O issued meanwhile
    completes afterwards, and the data from before the restart is there."""
    conn = kernel_connect(vm, target, subsystem)
    name = conn.ctrl.removeprefix("/dev/")
    try:
        before = vm.check(f"dd if=/dev/urandom of=/tmp/before bs=64k count=32 2>/dev/null && "
                          f"dd if=/tmp/before of={conn.ns} bs=64k seek=1024 oflag=direct 2>/dev/null && "
                          f"sha256sum < /tmp/before", 120).split()[0]
        assert target.stop() == 0, target.log()[-4000:]
        # The kernel notices (the connections closed) and starts reconnecting.
        vm.check(f"for i in $(seq 300); do [ \"$(cat /sys/class/nvme/{name}/state)\" != live ] && exit 0; "
                 f"sleep 0.1; done; exit 1", 60)
        # A write issued while the target is down waits for the reconnection.
        # (the guest outlives the module: no marker from an earlier run may answer for this one)
        vm.check(f"rm -f /tmp/during.rc && dd if=/dev/urandom of=/tmp/during bs=64k count=32 2>/dev/null && "
                 f"(dd if=/tmp/during of={conn.ns} bs=64k seek=2048 oflag=direct 2>/dev/null; echo $? > /tmp/during.rc) "
                 f"> /dev/null 2>&1 &", 60)
        time.sleep(1)
        target.start()
        vm.check("for i in $(seq 600); do [ -e /tmp/during.rc ] && exit $(cat /tmp/during.rc); sleep 0.1; done; "
                 "exit 1", 120)
        state = vm.check(f"cat /sys/class/nvme/{name}/state", 30).strip()
        assert state == "live", f"{vm.run('dmesg | tail -40', 30)[1]}\n{target.log()[-3000:]}"
        after = vm.check(f"dd if={conn.ns} bs=64k skip=1024 count=32 iflag=direct 2>/dev/null | sha256sum && "
                         f"dd if={conn.ns} bs=64k skip=2048 count=32 iflag=direct 2>/dev/null | sha256sum && "
                         f"sha256sum < /tmp/during", 120).split("\n")
        assert after[0].split()[0] == before
        assert after[1].split()[0] == after[2].split()[0]
    finally:
        kernel_disconnect(vm, subsystem)
