"""``nvmestack serve`` as a user runs it: a subprocess on free ports of
127.0.0.1, raw NVMe/TCP hosts against it, SIGTERM/SIGINT, data kept."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nvmestack.cli.serve import DEFAULT_NQN
from nvmestack.spec.admin import GetLogPage, SetFeatures
from nvmestack.spec.fabrics import DISCOVERY_NQN
from nvmestack.spec.log import DiscoveryLogHeader, discovery_log_entries
from nvmestack.spec.nvm import Read, Write
from nvmestack.spec.registers import Reg
from nvmestack.spec.status import FabricsStatus
from nvmestack.target import tcp as tcp_target

from .conftest import HOSTNQN, RawHost

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """``python -m nvmestack serve ...`` with its output read by a thread."""

    def __init__(self, *args: str):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if tcp_target.WORKERS:  # the io_path variants with worker processes: serve with them
            args = (*args, "--workers", str(tcp_target.WORKERS))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nvmestack", "serve", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        self.out: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.out.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_ready(self) -> list[str]:
        seen = []
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"serve ended: {''.join(seen)} {self.proc.stderr.read()}")
            seen.append(line)
            if line.startswith("Stop with"):
                return seen
        raise AssertionError(f"serve did not start: {seen}")

    def ports(self, lines) -> dict[str, int]:
        ports = {}
        for line in lines:
            m = re.match(r"\s+port \d+: ([\d.]+):(\d+) \((.*)\)", line)
            if m:
                ports["discovery" if m.group(3) == "discovery only" else "io"] = int(m.group(2))
        return ports

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(STOP_TIMEOUT)
        self.reader.join(STOP_TIMEOUT)
        self.stderr = self.proc.stderr.read()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


@pytest.fixture
def serve():
    started = []

    def start(*args):
        s = Serve(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


def discovery_entries(h):
    first = h.command(GetLogPage(lid=0x70, numdl=255), length=1024)
    size = 1024 * (DiscoveryLogHeader.view(first.data).numrec + 1)
    return discovery_log_entries(h.command(GetLogPage(lid=0x70, numdl=size // 4 - 1), length=size).data)


def io_queue(addr, nqn):
    admin = RawHost(addr).setup_admin(nqn)
    assert admin.command(SetFeatures(fid=7, cdw11=0)).ok
    io = RawHost(addr).setup_io(admin.cntlid, subnqn=nqn)
    return admin, io


def test_serve_embedded_default_keeps_data_across_restarts(serve, tmp_path):
    data_dir = tmp_path / "data"
    port, disc = free_port(), free_port()
    s = serve("--port", str(port), "--discovery-port", str(disc), "--data-dir", str(data_dir))
    lines = s.wait_ready()
    text = "".join(lines)
    assert f"nvme connect -t tcp -a 127.0.0.1 -s {port} -n {DEFAULT_NQN}" in text
    assert f"nvme discover -t tcp -a 127.0.0.1 -s {disc}" in text
    assert s.ports(lines) == {"io": port, "discovery": disc}
    addr = ("127.0.0.1", port)

    # Raw protocol: ICReq, Connect, Property Get CAP.
    h = RawHost(addr)
    h.ic()
    assert h.connect(DEFAULT_NQN).ok
    cap = h.prop_get(Reg.CAP, 8)
    assert cap.ok and cap.cqe.result64 & 0xFFFF == 1023
    h.close()

    # Discovery on its own port lists the subsystem on the I/O port.
    d = RawHost(("127.0.0.1", disc)).setup_admin(DISCOVERY_NQN)
    entries = discovery_entries(d)
    assert [(e.subnqn, e.trsvcid.strip()) for e in entries[1:]] == [(DEFAULT_NQN, str(port))]
    d.close()

    # Write, stop with SIGTERM: exit 0, the data is in the namespace's file.
    admin, io = io_queue(addr, DEFAULT_NQN)
    pattern = os.urandom(64 * 1024)
    assert io.command(Write(nsid=1, slba=2048, nblocks=128), pattern, write=True).ok
    # The namespace is the embedded default's 1 GiB.
    assert io.command(Read(nsid=1, slba=(1 << 30) // 512 - 1, nblocks=1), length=512).ok
    assert io.command(Read(nsid=1, slba=(1 << 30) // 512, nblocks=1), length=512).status.sc == 0x80
    assert s.stop(signal.SIGTERM) == 0, s.stderr
    assert "Traceback" not in s.stderr
    assert "stopped" in "".join(s.out)
    subdirs = [p for p in data_dir.iterdir() if p.is_dir()]
    assert len(subdirs) == 1
    # The configuration the first start wrote: the embedded default.
    written = json.loads((data_dir / "target.json").read_text())
    assert [s["nqn"] for s in written["subsystems"]] == [DEFAULT_NQN]
    sub_dir = subdirs[0]
    assert (sub_dir / "clean").exists() and (sub_dir / "state.json").exists()
    data_file = sub_dir / "ns1.data"
    assert data_file.stat().st_size == 1 << 30
    with open(data_file, "rb") as f:
        f.seek(2048 * 512)
        assert f.read(len(pattern)) == pattern
    assert data_file.stat().st_blocks * 512 < 64 << 20  # still sparse
    admin.close()
    io.close()

    # Restart on ports it picks itself; the data is there; SIGINT stops it too.
    s2 = serve("--port", "0", "--discovery-port", "0", "--data-dir", str(data_dir))
    ports = s2.ports(s2.wait_ready())
    admin, io = io_queue(("127.0.0.1", ports["io"]), DEFAULT_NQN)
    assert io.command(Read(nsid=1, slba=2048, nblocks=128), length=len(pattern)).data == pattern
    io.close()
    admin.close()
    assert s2.stop(signal.SIGINT) == 0, s2.stderr
    state = json.loads((sub_dir / "state.json").read_text())
    assert state  # saved again


def test_serve_from_a_configuration(serve, tmp_path):
    other_host = "nqn.2014-08.org.nvmexpress:uuid:99999999-2222-3333-4444-555555555555"
    port_a, port_b = free_port(), free_port()
    config = {
        "ports": [
            {"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": str(port_a)},
             "subsystems": ["nqn.2026-11.io.nvmestack:open"]},
            {"portid": 2, "addr": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": str(port_b)}},
        ],
        "subsystems": [
            {"nqn": "nqn.2026-11.io.nvmestack:open", "attr": {"serial": "OPEN1"},
             "namespaces": [{"nsid": 1, "nblocks": 2048, "device": {"path": "disks/open.img"}}]},
            {"nqn": "nqn.2026-11.io.nvmestack:closed", "allowed_hosts": [other_host],
             "namespaces": [{"nsid": 1, "nblocks": 1024}, {"nsid": 2, "nblocks": 4096,
                                                            "format": {"formats": [[4096, 0]]}}]},
        ],
    }
    (tmp_path / "disks").mkdir()
    path = tmp_path / "target.json"
    path.write_text(json.dumps(config))
    s = serve("--config", str(path), "--data-dir", str(tmp_path / "data"))
    text = "".join(s.wait_ready())
    assert f"nvme connect -t tcp -a 127.0.0.1 -s {port_a} -n nqn.2026-11.io.nvmestack:open" in text
    assert f"-s {port_a} -n nqn.2026-11.io.nvmestack:closed" not in text
    assert (tmp_path / "disks" / "open.img").stat().st_size == 2048 * 512
    # Our host sees only the open subsystem, on both ports; the other host sees both.
    d = RawHost(("127.0.0.1", port_a)).setup_admin(DISCOVERY_NQN)
    seen = sorted((e.subnqn, e.trsvcid.strip()) for e in discovery_entries(d)[1:])
    assert seen == sorted([("nqn.2026-11.io.nvmestack:open", str(port_a)),
                           ("nqn.2026-11.io.nvmestack:open", str(port_b))])
    d2 = RawHost(("127.0.0.1", port_b))
    d2.hostnqn = other_host
    d2.setup_admin(DISCOVERY_NQN)
    assert len(discovery_entries(d2)) == 1 + 3
    h = RawHost(("127.0.0.1", port_b))
    h.ic()
    assert h.connect("nqn.2026-11.io.nvmestack:closed").status.sc == FabricsStatus.CONNECT_INVALID_PARAMETERS
    h2 = RawHost(("127.0.0.1", port_a))
    h2.ic()
    assert h2.connect("nqn.2026-11.io.nvmestack:closed", hostnqn=other_host).cqe.dw0 == (1 << 16) | 256
    admin = RawHost(("127.0.0.1", port_b))
    admin.hostnqn = other_host
    admin.setup_admin("nqn.2026-11.io.nvmestack:closed")
    assert admin.cntlid
    for x in (d, d2, h, h2, admin):
        x.close()
    assert s.stop() == 0, s.stderr


def test_serve_default_then_target_namespace_add(serve, tmp_path):
    """The README's flow: serve the embedded default, add a namespace with
    ``nvmestack target``; a connected host sees it appear."""
    from nvmestack.host.tcp import connect

    data_dir = tmp_path / "data"
    s = serve("--port", "0", "--discovery-port", "0", "--data-dir", str(data_dir))
    lines = s.wait_ready()
    text = "".join(lines)
    port = s.ports(lines)["io"]
    assert f"wrote the embedded default configuration to {data_dir / 'target.json'}" in text
    assert f"nvme connect -t tcp -a 127.0.0.1 -s {port} -n {DEFAULT_NQN}" in text
    assert f"nvmestack connect -t tcp -a 127.0.0.1 -s {port} -n {DEFAULT_NQN}" in text
    assert f"nvmestack id-ctrl tcp://127.0.0.1:{port}/{DEFAULT_NQN}" in text
    ctrl = connect("127.0.0.1", port, DEFAULT_NQN, hostnqn=HOSTNQN, io_queues=1)
    try:
        assert sorted(ctrl.namespaces) == [1]
        s.proc.send_signal(signal.SIGHUP)  # re-read the configuration (nothing changed): serve goes on
        out = subprocess.run([sys.executable, "-m", "nvmestack", "target", "namespace", "add", "--data-dir",
                              str(data_dir), "--size", "64M"], capture_output=True, text=True, cwd=ROOT,
                             timeout=START_TIMEOUT)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"namespace 2 added to {DEFAULT_NQN}: 64 MiB")
        deadline = time.monotonic() + START_TIMEOUT
        while 2 not in ctrl.namespaces and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ctrl.namespaces[2].identify.nsze == (64 << 20) // 512
        assert any(e.type == 2 and e.info == 0 and e.nsids == [2] for e in list(ctrl.events))
        while not any("namespace 2 of" in line for line in s.out) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"nvmestack serve: namespace 2 of {DEFAULT_NQN} added (64 MiB)\n" in s.out
    finally:
        ctrl.shutdown()
    assert s.stop() == 0, s.stderr
    assert "Traceback" not in s.stderr
    # The next start serves both.
    s2 = serve("--port", "0", "--discovery-port", "0", "--data-dir", str(data_dir))
    text = "".join(s2.wait_ready())
    assert "ns 1 1 GiB, ns 2 64 MiB" in text and "wrote the embedded default" not in text
    assert s2.stop() == 0, s2.stderr


def test_serve_reports_configuration_errors_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    for content, needle in (
        ("{not json", "not valid JSON"),
        (json.dumps({"subsystems": [{"nqn": ""}]}), "not a usable subsystem NQN"),
        (json.dumps({"subsystems": [{"nqn": "nqn.2026-11.io.nvmestack:x"}],
                     "ports": [{"addr": {"trtype": "rdma", "trsvcid": "4420"}}]}), "only tcp"),
    ):
        bad.write_text(content)
        out = subprocess.run([sys.executable, "-m", "nvmestack", "serve", "--config", str(bad), "--data-dir",
                              str(tmp_path / "d")], capture_output=True, text=True, timeout=STOP_TIMEOUT, cwd=ROOT)
        assert out.returncode == 1
        assert needle in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    # A port in use.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "nvmestack", "serve", "--port", str(port), "--discovery-port", "0",
                              "--data-dir", str(tmp_path / "d")], capture_output=True, text=True,
                             timeout=STOP_TIMEOUT, cwd=ROOT)
    assert out.returncode == 1 and "cannot listen" in out.stderr and "Traceback" not in out.stderr


def test_hostnqn_constant_is_a_valid_nqn():
    from nvmestack.spec.fabrics import is_valid_nqn

    assert is_valid_nqn(HOSTNQN) and is_valid_nqn(DEFAULT_NQN)
