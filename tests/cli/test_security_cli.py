"""Security defaults of ``serve`` and its configuration (issue 12, item 9):
a host taken off a subsystem loses its live associations at once; a
subsystem open to any host on a reachable address is warned about; data
and state are the owner's alone (files 0600, directories 0700)."""

from __future__ import annotations

import json
import os
import stat

from nvmestack.cli.serve import DEFAULT_NQN, Server, default_config
from nvmestack.host.core import CtrlState

from .test_target_config import HOSTNQN, NQN_A, OTHER_HOST, hosts, served, wait_for  # noqa: F401 (fixtures)


def test_revoking_a_host_closes_its_connections(served, hosts, cli):
    server = served()
    ctrl = hosts(server.port())
    other = hosts(server.port(), hostnqn=OTHER_HOST)
    # Allowing one host turns allow_any_host off: HOSTNQN may no longer use NQN_A.
    assert cli("target", "host", "add", "--nqn", NQN_A, OTHER_HOST, "--config", server.path).rc == 0
    wait_for(lambda: ctrl.state == CtrlState.DEAD, "the revoked host's controller gone")
    assert other.state == CtrlState.LIVE
    assert [c.hostnqn for c in server.target.controllers] == [OTHER_HOST]
    wait_for(lambda: f"host {HOSTNQN} may no longer use {NQN_A}: its connections closed" in server.changes,
             "the change reported")
    # Taking the allowed host off again leaves nobody.
    assert cli("target", "host", "remove", "--nqn", NQN_A, OTHER_HOST, "--config", server.path).rc == 0
    wait_for(lambda: other.state == CtrlState.DEAD, "the other host's controller gone")
    assert not server.target.controllers


def _config(traddr: str, **attr) -> dict:
    config = default_config()
    for port in config["ports"]:
        port["addr"].update(traddr=traddr, trsvcid="0")
    config["subsystems"][0]["attr"].update(attr)
    return config


def test_a_subsystem_open_to_any_host_on_a_reachable_address_is_warned_about(tmp_path):
    for traddr, attr, warned in (("0.0.0.0", {}, True), ("127.0.0.1", {}, False),
                                 ("0.0.0.0", {"allow_any_host": False}, False)):
        server = Server(_config(traddr, **attr), str(tmp_path / f"d-{traddr}-{warned}"))
        try:
            warnings = server.security_warnings()
        finally:
            server.close()
        if warned:
            assert len(warnings) == 1, warnings  # the discovery-only port exposes no subsystem
            assert "0.0.0.0:" in warnings[0] and DEFAULT_NQN in warnings[0] and "any host" in warnings[0]
            assert "0.0.0.0:0 " not in warnings[0]  # the port it listens on, not the "any free port" asked for
        else:
            assert warnings == []


def test_data_and_state_are_the_owners_alone(served, cli, tmp_path):
    server = served()
    assert cli("target", "namespace", "add", "--config", server.path, "--size", "1M").rc == 0
    wait_for(lambda: 2 in server.subsystems[0].namespaces, "namespace 2")
    server.close()
    # A default configuration written by a first start, too.
    data = tmp_path / "fresh"
    r = cli("target", "namespace", "add", "--data-dir", data, "--size", "64K")
    assert r.rc == 0, r.err
    fresh = Server(json.loads((data / "target.json").read_text()), str(data), config_path=str(data / "target.json"))
    fresh.close()
    seen = 0
    for top in (tmp_path / "data", data):
        assert stat.S_IMODE(os.stat(top).st_mode) == 0o700, top
        for root, dirs, files in os.walk(top):
            for d in dirs:
                assert stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) == 0o700, d
            for f in files:
                if f == "target.json" or f.endswith(".lock"):
                    continue  # the configuration: an ordinary file, in the 0700 directory
                assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o600, os.path.join(root, f)
                seen += f.endswith(".data") or f in ("state.json", "config.json", "clean")
    assert seen >= 7
