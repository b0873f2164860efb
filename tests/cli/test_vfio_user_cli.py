"""``nvmestack vfio-user DRIVE --socket PATH``: options, the QEMU arguments it
prints, a clean stop on SIGTERM with the drive saved and free again."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from nvmestack.cli.vfio_user import DriveServer, arm_fault, parse_fault, parse_pci_id
from nvmestack.spec.opcodes import NvmOpcode
from nvmestack.spec.vfio_user import HEADER, REGION_ACCESS, Command, RegionIndex


def test_parse_pci_id():
    assert parse_pci_id("4e56:0001") == (0x4E56, 1)
    for bad in ("4e56", "ffff:0001", "zz:1", "1:10000"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_pci_id(bad)


def test_parse_fault():
    assert parse_fault("drop:opcode=read,count=1,admin=0") == ("drop", {"opcode": NvmOpcode.READ, "count": 1,
                                                                        "admin": False})
    action, kw = parse_fault("fail=0x281:nsid=1")
    assert action == "fail" and (kw["status"].sct, kw["status"].sc, kw["nsid"]) == (2, 0x81, 1)
    assert parse_fault("delay=1.5") == ("delay", {"seconds": 1.5})
    assert parse_fault("media=10-12")[1]["lbas"] == range(10, 13)
    for bad in ("explode", "drop:colour=red", "drop=3", "fail=x", "drop:opcode=nosuch"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_fault(bad)


def test_drive_server_ids_faults_and_the_lock(drive, tmp_path, cli):
    with DriveServer(drive, str(tmp_path / "s.sock"), pci_id=(0x1234, 0x5678), subsystem_id=(0x1AF4, 0x1100)) as srv:
        cfg = srv.function.config
        assert (cfg.vendor_id, cfg.device_id, cfg.subsystem_vendor_id, cfg.subsystem_id) == (0x1234, 0x5678, 0x1AF4, 0x1100)
        rule = arm_fault(srv.subsystem, *parse_fault("drop:opcode=read,count=1"))
        assert rule in srv.subsystem.faults.rules
        r = cli("id-ctrl", drive)
        assert r.rc == 1 and "in use" in r.err  # one process uses a drive at a time
    r = cli("id-ctrl", drive, "-o", "json")
    assert r.rc == 0 and r.json()["sn"].strip() == "DRIVETEST01"


def test_command_prints_qemu_arguments_and_stops_on_sigterm(drive, tmp_path):
    sock = str(tmp_path / "d.sock")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "nvmestack", "vfio-user", drive, "--socket", sock, "--mem", "2048",
                             "--trace", str(tmp_path / "trace")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # A client reads the vendor id, then goes away.
        c = socket.socket(socket.AF_UNIX)
        c.connect(sock)
        body = REGION_ACCESS.pack(0, RegionIndex.CONFIG, 2)
        c.sendall(HEADER.pack(1, Command.REGION_READ, 16 + len(body), 0, 0) + body)
        reply = c.recv(64)
        assert reply[-2:] == (0x4E56).to_bytes(2, "little")
        c.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "size=2048M,share=on" in out and '"driver":"vfio-user-pci"' in out and sock in out
    assert "saved" in out
    assert not os.path.exists(sock)
    assert "REGION_READ" in (tmp_path / "trace").read_text()
    # The drive was closed cleanly (its clean marker) and is free for the next user.
    assert os.path.exists(os.path.join(drive, "clean"))
    with DriveServer(drive, sock):
        pass
    json.loads(open(os.path.join(drive, "state.json")).read())
