"""Error paths of the command line (issue 12, item 10): bad input is said in
one line, exits 1, and leaves nothing behind (no data directory, no
namespace file, no registry)."""

from __future__ import annotations

import os
import socket

import pytest

from nvmestack.spec.fabrics import PropertyGet
from nvmestack.spec.log import ErrorInformationEntry


def one_line_failure(result, needle: str) -> None:
    assert result.rc == 1, result
    assert needle in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("option, value, needle", [
    ("--port", "99999", "99999"),
    ("--port", "-1", "-1"),
    ("--discovery-port", "65536", "65536"),
    ("--port", "x", "'x'"),
    ("--addr", "999.1.1.1", "999.1.1.1"),
    ("--addr", "localhost.invalid", "localhost.invalid"),
    ("--workers", "-1", "-1"),
    ("--workers", "x", "'x'"),
])
def test_serve_checks_its_options_before_creating_anything(cli, tmp_path, option, value, needle):
    data = tmp_path / "data"
    one_line_failure(cli("serve", option, value, "--data-dir", data), needle)
    assert not data.exists()


def test_a_failed_serve_start_leaves_nothing_behind(cli, tmp_path):
    data = tmp_path / "data"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_failure(cli("serve", "--port", port, "--discovery-port", "0", "--data-dir", data), "cannot listen")
    assert not data.exists()
    # An existing data directory keeps what it had and gains nothing.
    data.mkdir()
    (data / "mine").write_text("kept")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_failure(cli("serve", "--port", port, "--discovery-port", "0", "--data-dir", data), "cannot listen")
    assert sorted(os.listdir(data)) == ["mine"]


def test_serve_configuration_errors_exit_1(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    one_line_failure(cli("serve", "--config", bad, "--data-dir", tmp_path / "d"), "not valid JSON")
    assert not (tmp_path / "d").exists()


def test_serve_checks_the_configurations_workers(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"subsystems": [], "workers": "two"}')
    one_line_failure(cli("serve", "--config", bad, "--data-dir", tmp_path / "d"), "\"workers\" must be 0..")
    assert not (tmp_path / "d").exists()


def test_a_failed_connect_says_one_line_and_registers_nothing(cli, state_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    r = cli("connect", "-t", "tcp", "-a", "127.0.0.1", "-s", port, "-n", "nqn.2014-08.org.example:nothing")
    one_line_failure(r, "failed to connect")
    assert not (state_dir / "devices.json").exists()


def test_the_error_log_names_no_namespace_for_a_fabrics_command():
    from nvmestack.target import Namespace, Subsystem

    sub = Subsystem("nqn.2026-11.io.nvmestack:errlog")
    sub.add_namespace(Namespace(1, 64))
    ctrl = sub.add_controller(fabrics=True)
    req = ctrl.submit(PropertyGet(ofst=0x1234))  # no such property: Invalid Field
    assert req.status.value & 0x7FF
    entry = ErrorInformationEntry.view(bytearray(ctrl.error_log[0]))
    assert entry.cmdid == req.cid
    assert entry.nsid == 0xFFFFFFFF  # not FCTYPE (04h) read as an NSID
