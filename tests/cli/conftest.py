"""Fixtures for command line tests: an isolated state directory, an NVMe/TCP
target served in the test process, a local drive directory, and ``cli``
which runs ``nvmestack`` in process and returns (exit status, stdout, stderr)."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass

import pytest

from nvmestack.cli.main import main
from nvmestack.target.namespace import Namespace
from nvmestack.target.subsystem import Subsystem
from nvmestack.target.tcp import TcpTarget

TCP_NQN = "nqn.2026-11.io.nvmestack:clitest"


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """Every test gets its own registry and host identity."""
    d = tmp_path / "state"
    monkeypatch.setenv("NVMESTACK_STATE_DIR", str(d))
    return d


@pytest.fixture
def cli(capsysbinary):
    """``cli("id-ctrl", dev, "-o", "json")`` -> Result(rc, out, err)."""

    def run(*args: str) -> Result:
        capsysbinary.readouterr()
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 1
        out, err = capsysbinary.readouterr()
        return Result(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    run.raw = lambda *args: _raw(capsysbinary, *args)
    return run


def _raw(capsysbinary, *args):
    capsysbinary.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsysbinary.readouterr()
    return rc, out, err


def make_tcp_subsystem(nqn: str = TCP_NQN, namespaces: int = 2, blocks: int = 1 << 16) -> Subsystem:
    sub = Subsystem(nqn, serial="CLITEST01", model="nvmestack cli test")
    for nsid in range(1, namespaces + 1):
        sub.add_namespace(Namespace(nsid, blocks))
    return sub


@pytest.fixture
def tcp_target():
    """An NVMe/TCP target (subsystem TCP_NQN with two 32 MiB namespaces) on
    an ephemeral loopback port; ``.url`` is the tcp:// device argument,
    ``.subsystem`` the device side to compare against."""
    sub = make_tcp_subsystem()
    tgt = TcpTarget([sub])
    port = tgt.listen("127.0.0.1", 0)
    tgt.start()
    tgt.subsystem = sub
    tgt.port = int(port.trsvcid)
    tgt.url = f"tcp://127.0.0.1:{tgt.port}/{TCP_NQN}"
    yield tgt
    tgt.stop()
    sub.close()


@pytest.fixture
def drive(tmp_path):
    """A drive directory (two 32 MiB namespaces, 512-byte blocks)."""
    from nvmestack.cli.drive import create_drive

    return create_drive(str(tmp_path / "drive0"), size=32 << 20, namespaces=2, serial="DRIVETEST01",
                        capacity=1 << 30)
