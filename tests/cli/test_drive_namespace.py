"""``nvmestack drive namespace add|remove``: the same change whether the
drive is free (the command loads and saves it) or served by ``nvmestack
vfio-user`` (the server applies it through the drive's control socket, the
running controller is told, the configuration is saved before the answer)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from nvmestack.cli.devices import DriveLock
from nvmestack.cli.drive import create_drive
from nvmestack.cli.drive_control import CONTROL_SOCKET, control_path
from nvmestack.cli.vfio_user import DriveServer


def _config_namespaces(drive: str) -> dict[int, dict]:
    with open(os.path.join(drive, "config.json")) as f:
        (entry,) = json.load(f)["subsystems"]
    return {ns["nsid"]: ns for ns in entry["namespaces"]}


def _list_ns(cli, drive) -> list[int]:
    r = cli("list-ns", drive)
    assert r.rc == 0, r.err
    return [int(line.split(":")[-1], 16) for line in r.out.splitlines()]


def test_add_and_remove_on_a_free_drive(cli, drive):
    r = cli("drive", "namespace", "add", drive, "--size", "16M")
    assert r.rc == 0, r.err
    assert r.out.strip() == "added namespace 3 (32768 blocks of 512 bytes)"
    assert _config_namespaces(drive)[3]["nblocks"] == 32768
    assert os.path.exists(os.path.join(drive, "clean"))  # closed cleanly: saved and free
    assert _list_ns(cli, drive) == [1, 2, 3]
    r = cli("id-ns", drive, "-n", "3", "-o", "json")
    assert r.rc == 0 and r.json()["nsze"] == 32768
    r = cli("drive", "namespace", "add", drive, "--size", "8M", "-b", "4096", "-n", "7")
    assert r.rc == 0, r.err
    assert r.out.strip() == "added namespace 7 (2048 blocks of 4096 bytes)"
    r = cli("id-ns", drive, "-n", "7", "-o", "json")
    assert r.rc == 0 and r.json()["nsze"] == 2048
    # The data written to a namespace added this way stays there.
    data = drive + "/payload"
    with open(data, "wb") as f:
        f.write((b"seven" * 820)[:4096])
    assert cli("write", drive, "-n", "7", "-s", "1", "-c", "0", "-z", "4096", "-d", data).rc == 0
    r = cli("drive", "namespace", "remove", drive, "-n", "2")
    assert r.rc == 0 and r.out.strip() == "removed namespace 2"
    assert _list_ns(cli, drive) == [1, 3, 7]
    assert sorted(_config_namespaces(drive)) == [1, 3, 7]
    out = drive + "/back"
    assert cli("read", drive, "-n", "7", "-s", "1", "-c", "0", "-z", "4096", "-d", out).rc == 0
    assert open(out, "rb").read() == (b"seven" * 820)[:4096]


@pytest.mark.parametrize("args, message", [
    (("add", "--size", "1000"), "not a positive multiple of the 512-byte block"),
    (("add", "--size", "4M", "-b", "1024"), "no LBA format with 1024-byte blocks"),
    (("add", "--size", "4M", "-n", "1"), "namespace 1 exists"),
    (("add", "--size", "4M", "-n", "5000"), "namespace ID 5000: expected 1 to"),
    (("add", "--size", "2G"), "do not fit"),
    (("add", "--size", "4M", "-p", "1"), "protection information needs 8 or more bytes of metadata"),
    (("remove", "-n", "9"), "no namespace 9"),
])
def test_bad_requests_are_refused_in_one_line(cli, drive, args, message):
    before = open(os.path.join(drive, "config.json")).read()
    r = cli("drive", "namespace", args[0], drive, *args[1:])
    assert r.rc == 1 and message in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert json.loads(open(os.path.join(drive, "config.json")).read()) == json.loads(before)


def test_not_a_drive(cli, tmp_path):
    r = cli("drive", "namespace", "add", str(tmp_path), "--size", "4M")
    assert r.rc == 1 and "not a drive directory" in r.err


def test_a_drive_held_by_a_command_is_in_use(cli, drive):
    lock = DriveLock(drive)
    try:
        r = cli("drive", "namespace", "add", drive, "--size", "4M")
    finally:
        lock.release()
    assert r.rc == 1 and "in use by another process" in r.err


def test_add_and_remove_while_served(cli, drive, tmp_path):
    with DriveServer(drive, str(tmp_path / "s.sock")) as srv:
        ctrl = srv.function.controller
        assert os.path.exists(control_path(drive))
        assert os.stat(control_path(drive)).st_mode & 0o077 == 0
        r = cli("drive", "namespace", "add", drive, "--size", "16M")
        assert r.rc == 0, r.err
        assert r.out.strip() == "added namespace 3 (32768 blocks of 512 bytes) to the running drive; its host was notified"
        ns = srv.subsystem.namespaces[3]
        # Attached to the running controller, which records the change for
        # its Changed Namespace List log (and posts the notice if enabled).
        assert ctrl.cntlid in ns.attached and 3 in ctrl.changed_namespaces
        # Saved before the answer: the configuration names it and its file.
        saved = _config_namespaces(drive)[3]
        assert saved["nblocks"] == 32768 and saved.get("attach", "all") == "all"
        # Errors come back from the server as one line.
        r = cli("drive", "namespace", "add", drive, "--size", "4M", "-n", "3")
        assert r.rc == 1 and "namespace 3 exists" in r.err
        r = cli("drive", "namespace", "remove", drive, "-n", "2")
        assert r.rc == 0 and "from the running drive" in r.out
        assert 2 not in srv.subsystem.namespaces and 2 in ctrl.changed_namespaces
        assert sorted(_config_namespaces(drive)) == [1, 3]
        assert srv.control.requests == 2
    assert not os.path.exists(control_path(drive))
    assert _list_ns(cli, drive) == [1, 3]


def test_the_control_socket_survives_garbage(cli, drive, tmp_path):
    with DriveServer(drive, str(tmp_path / "s.sock")):
        for junk in (b"not json\n", b"[1, 2]\n", b'{"op": "format-everything"}\n', b'{"op": "namespace-add", "size": "big"}\n',
                     b'{"op": "namespace-add"}\n', b"\n"):
            c = socket.socket(socket.AF_UNIX)
            c.connect(control_path(drive))
            c.sendall(junk)
            reply = json.loads(c.makefile("rb").readline())
            c.close()
            assert set(reply) == {"error"}, (junk, reply)
        c = socket.socket(socket.AF_UNIX)  # one that connects and says nothing, then goes
        c.connect(control_path(drive))
        c.close()
        r = cli("drive", "namespace", "add", drive, "--size", "4M")
        assert r.rc == 0, r.err
    assert sorted(_config_namespaces(drive)) == [1, 2, 3]


def test_a_long_drive_path(cli, tmp_path):
    """The control socket of a drive whose path does not fit a socket address."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    drive = create_drive(str(deep / "drive"), size=8 << 20, capacity=1 << 30)
    assert len(os.path.join(drive, CONTROL_SOCKET)) > 108
    with DriveServer(drive, str(tmp_path / "s.sock")) as srv:
        r = cli("drive", "namespace", "add", drive, "--size", "4M")
        assert r.rc == 0, r.err
        assert 2 in srv.subsystem.namespaces
