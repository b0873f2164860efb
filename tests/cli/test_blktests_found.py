"""What blktests' nvme group found when run against ``serve`` (issue 12,
item 13): subsystem names outside the NQN form are served (with a
warning) as Linux's nvmet serves them; a namespace's UUID, NGUID and EUI-64
are set from the command line and a running serve applies a change of
them (or ``nvmestack target`` refuses what it cannot take); removing a
subsystem removes its data, so a later one of that name starts afresh."""

from __future__ import annotations

import json
import logging
import os
import uuid

from nvmestack.cli.serve import Server
from nvmestack.host.core import CtrlState
from nvmestack.host.tcp import connect
from nvmestack.spec.nvm import Read, Write

from .test_target_config import HOSTNQN, NQN_A, NQN_B, hosts, served, wait_for  # noqa: F401 (fixtures)

BLKTESTS_NQN = "blktests-subsystem-1"


def one_server(config_path, data_dir) -> Server:
    server = Server(json.loads(config_path.read_text()), str(data_dir), config_path=str(config_path))
    server.start()
    return server


def test_a_subsystem_name_outside_the_nqn_form_is_served_with_a_warning(cli, tmp_path, caplog):
    config = tmp_path / "target.json"
    common = ("--config", config)
    assert cli("target", "port", "add", "-s", "0", *common).rc == 0
    r = cli("target", "subsystem", "add", BLKTESTS_NQN, *common)
    assert r.rc == 0, r.err
    assert r.err.startswith("warning: ") and "NQN form" in r.err and len(r.err.strip().splitlines()) == 1
    assert cli("target", "namespace", "add", "--nqn", BLKTESTS_NQN, "--size", "1M", *common).rc == 0
    with caplog.at_level(logging.WARNING, logger="nvmestack.serve"):
        server = one_server(config, tmp_path / "data")
    try:
        assert any(BLKTESTS_NQN in rec.getMessage() and "NQN form" in rec.getMessage() for rec in caplog.records)
        port = int(server._ports[1][1].trsvcid)
        ctrl = connect("127.0.0.1", port, BLKTESTS_NQN, hostnqn=HOSTNQN, io_queues=1, ctrl_loss_tmo=0)
        try:
            assert sorted(ctrl.namespaces) == [1]
            assert ctrl.identify.subnqn.rstrip("\0") == BLKTESTS_NQN
        finally:
            ctrl.shutdown()
        # nvme-cli's connect takes any name; so does ours.
        r = cli("connect", "-t", "tcp", "-a", "127.0.0.1", "-s", port, "-n", BLKTESTS_NQN)
        assert r.rc == 0, r.err
        assert cli("disconnect", "-n", BLKTESTS_NQN).rc == 0
    finally:
        server.close()


def test_namespace_identifiers_are_set_from_the_command_line(served, hosts, cli):
    server = served()
    ids = {"uuid": "4b1c3cd4-0a5e-4e4f-8d6c-2d8a4a7b8c01", "nguid": "00112233-4455-6677-8899-aabbccddeeff",
           "eui64": "0011223344556677"}
    r = cli("target", "namespace", "add", "--config", server.path, "--size", "1M", "--uuid", ids["uuid"],
            "--nguid", ids["nguid"].replace("-", ""), "--eui64", ids["eui64"])
    assert r.rc == 0, r.err
    ctrl = hosts(server.port())
    wait_for(lambda: 2 in ctrl.namespaces, "namespace 2")
    found = ctrl.namespaces[2].ids
    assert found.uuid == uuid.UUID(ids["uuid"]).bytes
    assert found.nguid == bytes.fromhex(ids["nguid"].replace("-", ""))
    assert found.eui64 == bytes.fromhex(ids["eui64"])
    # Bad or repeated identifiers are refused in one line.
    for option, value, needle in (("--uuid", "nope", "not a UUID"), ("--nguid", "0011", "16 bytes"),
                                  ("--eui64", "00" * 9, "8 bytes"), ("--uuid", ids["uuid"], "already")):
        r = cli("target", "namespace", "add", "--config", server.path, "--size", "1M", option, value)
        assert r.rc == 1 and needle in r.err and len(r.err.strip().splitlines()) == 1, (option, r.err)


def test_a_restore_that_changes_identifiers_is_applied_by_a_running_serve(served, hosts, cli, tmp_path):
    server = served()
    ctrl = hosts(server.port())
    pattern = os.urandom(4096)
    buf = ctrl.alloc_buffer(4096)
    buf[:] = pattern
    ctrl.execute(Write(nsid=1, slba=0, nblocks=8), buf, qid=1)
    saved = tmp_path / "saved.json"
    assert cli("target", "save", saved, "--config", server.path).rc == 0
    config = json.loads(saved.read_text())
    new_uuid = "9a1d0c55-7e4f-4b8a-9c1e-3f2a6b5d4c03"
    device = config["subsystems"][0]["namespaces"][0].setdefault("device", {})
    device.update(uuid=new_uuid, nguid="ffeeddcc-bbaa-9988-7766-554433221100", eui64="8877665544332211")
    saved.write_text(json.dumps(config))
    r = cli("target", "restore", saved, "--config", server.path)
    assert r.rc == 0, r.err
    sub = server.subsystems[0]
    wait_for(lambda: 1 in sub.namespaces and bytes(sub.namespaces[1].uuid) == uuid.UUID(new_uuid).bytes,
             "the running serve's UUID")
    assert bytes(sub.namespaces[1].eui64) == bytes.fromhex("8877665544332211")
    wait_for(lambda: f"namespace 1 of {NQN_A} replaced (1 MiB)" in server.changes, "the change reported")
    wait_for(lambda: ctrl.namespaces.get(1) is not None and ctrl.namespaces[1].ids.uuid == uuid.UUID(new_uuid).bytes,
             "the connected host re-reads the namespace")
    # A host that connects now sees the new identifiers, and the data is still there.
    again = hosts(server.port())
    assert again.namespaces[1].ids.uuid == uuid.UUID(new_uuid).bytes
    out = again.alloc_buffer(4096)
    again.execute(Read(nsid=1, slba=0, nblocks=8), out, qid=1)
    assert bytes(out) == pattern
    # A restart keeps them.
    again.shutdown()
    ctrl.shutdown()
    server.close()
    restarted = served()
    assert bytes(restarted.subsystems[0].namespaces[1].uuid) == uuid.UUID(new_uuid).bytes


def test_what_a_running_serve_cannot_take_is_refused(served, cli):
    server = served()
    before = server.path.read_bytes()
    r = cli("target", "subsystem", "set", NQN_A, "--serial", "OTHER", "--config", server.path)
    assert r.rc == 1 and "running serve cannot change" in r.err and "serial" in r.err
    assert len(r.err.strip().splitlines()) == 1 and server.path.read_bytes() == before
    assert server.subsystems[0].serial == "LIVE-A"
    server.close()
    r = cli("target", "subsystem", "set", NQN_A, "--serial", "OTHER", "--config", server.path)
    assert r.rc == 0, r.err
    assert served().subsystems[0].serial == "OTHER"


def test_subsystem_remove_takes_its_data_along(served, hosts, cli):
    server = served()
    config = ("--config", server.path)
    assert cli("target", "subsystem", "add", NQN_B, *config).rc == 0
    assert cli("target", "namespace", "add", "--nqn", NQN_B, "--size", "1M", *config).rc == 0
    wait_for(lambda: NQN_B in server.target.subsystems and server.subsystems[-1].namespaces, "subsystem B")
    directory = server.path.parent / "data" / "nqn.2026-11.io.nvmestack_cfg-b"
    ctrl = hosts(server.port(), NQN_B)
    buf = ctrl.alloc_buffer(4096)
    buf[:] = os.urandom(4096)
    ctrl.execute(Write(nsid=1, slba=0, nblocks=8), buf, qid=1)
    assert (directory / "ns1.data").exists()
    # While serve runs: serve deletes it once the subsystem is gone.
    r = cli("target", "subsystem", "remove", NQN_B, *config)
    assert r.rc == 0 and "deleted" in r.out
    wait_for(lambda: ctrl.state == CtrlState.DEAD and not directory.exists(), "B and its directory gone")
    # A new subsystem of the same name starts afresh.
    assert cli("target", "subsystem", "add", NQN_B, *config).rc == 0
    assert cli("target", "namespace", "add", "--nqn", NQN_B, "--size", "1M", *config).rc == 0
    wait_for(lambda: NQN_B in server.target.subsystems and server.subsystems[-1].namespaces, "subsystem B again")
    fresh = hosts(server.port(), NQN_B)
    out = fresh.alloc_buffer(4096)
    fresh.execute(Read(nsid=1, slba=0, nblocks=8), out, qid=1)
    assert bytes(out) == bytes(4096)
    fresh.shutdown()
    # While serve is stopped: the command deletes it.
    server.close()
    assert directory.exists()
    r = cli("target", "subsystem", "remove", NQN_B, *config)
    assert r.rc == 0 and not directory.exists()
    assert (server.path.parent / "data" / "nqn.2026-11.io.nvmestack_cfg-a").exists()
