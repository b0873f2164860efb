"""Transfers above 512 KiB over NVMe/TCP (issue 12, item 13): blktests
nvme/029 writes 1025 blocks (524,800 bytes) with nvme-cli; our MDTS of
512 KiB made Linux refuse it.  The default MDTS is now 4 MiB, chosen in
serve's configuration (``"mdts"``) or with ``serve --mdts``, and one
command that large moves in capsule, through R2T and H2CData PDUs, and
through C2HData PDUs, whatever their sizes."""

from __future__ import annotations

import json
import os

import pytest

from nvmestack.cli.serve import Server, ServeError
from nvmestack.host.tcp import connect
from nvmestack.spec.nvm import Read, Write
from nvmestack.target import Namespace, Subsystem
from nvmestack.target.tcp import TcpTarget

from .conftest import HOSTNQN, NQN, namespace

BS = 512


@pytest.mark.parametrize("target_options, host_options", [
    ({}, {}),  # R2T with one H2CData PDU per MiB (MAXH2CDATA), one C2HData PDU
    ({"maxh2cdata": 64 << 10, "max_c2h_data": 64 << 10}, {"hdr_digest": True, "data_digest": True}),
    ({"in_capsule_data_size": 1 << 20}, {}),  # the 1025-block write in the capsule
])
@pytest.mark.parametrize("nblocks", [1025, 8192])
def test_one_command_moves_more_than_512_kib(target_options, host_options, nblocks):
    sub = Subsystem(NQN, serial="LARGE")
    sub.add_namespace(namespace(1, 16384))
    target = TcpTarget([sub], **target_options)
    port = int(target.listen("127.0.0.1", 0).trsvcid)
    target.start()
    ctrl = None
    try:
        ctrl = connect("127.0.0.1", port, NQN, hostnqn=HOSTNQN, io_queues=1, ctrl_loss_tmo=0, **host_options)
        assert ctrl.identify.mdts == 10 and ctrl.max_transfer == 4 << 20
        data = os.urandom(nblocks * BS)
        ctrl.execute(Write(nsid=1, slba=1, nlb=nblocks - 1), data, qid=1)  # one command: MDTS allows it
        assert sub.namespaces[1].data.read_bytes(BS, len(data)) == data
        out = bytearray(len(data))
        ctrl.execute(Read(nsid=1, slba=1, nlb=nblocks - 1), out, qid=1)
        assert bytes(out) == data
    finally:
        if ctrl is not None:
            ctrl.shutdown()
        target.stop()
        sub.close()


def _config(mdts=None) -> dict:
    config = {"ports": [{"portid": 1, "addr": {"traddr": "127.0.0.1", "trsvcid": "0"}}],
              "subsystems": [{"nqn": NQN, "namespaces": [{"nsid": 1, "nblocks": 16384}]}]}
    if mdts is not None:
        config["mdts"] = mdts
    return config


def test_serve_chooses_the_mdts(tmp_path):
    path = tmp_path / "target.json"
    path.write_text(json.dumps(_config(8)))
    server = Server(json.loads(path.read_text()), str(tmp_path / "data"), config_path=str(path))
    server.start()
    ctrls = []
    try:
        port = int(server._ports[1][1].trsvcid)

        def mdts():
            ctrls.append(connect("127.0.0.1", port, NQN, hostnqn=HOSTNQN, io_queues=1, ctrl_loss_tmo=0))
            return ctrls[-1].identify.mdts

        assert mdts() == 8
        # A changed "mdts" is what hosts connecting from then on see.
        assert "mdts 0 for new connections (no limit)" in server.reload(_config(0))
        assert mdts() == 0
        assert ctrls[0].identify.mdts == 8
        assert server.reload(_config()) == ["mdts 10 for new connections (4 MiB)"]
        assert mdts() == 10
        for bad in (17, -1, "4", True):
            with pytest.raises(ServeError, match="mdts"):
                server.reload(_config(bad))
    finally:
        for ctrl in ctrls:
            ctrl.shutdown()
        server.close()


def test_serve_mdts_option(tmp_path, capsys):
    import argparse

    from nvmestack.cli.main import main

    args = argparse.Namespace(addr="127.0.0.1", port=0, discovery_port=0, mdts=12)
    server = Server(_config(8), str(tmp_path / "data"), args)
    server.start()
    try:
        port = int(server.target.ports[0].trsvcid)
        ctrl = connect("127.0.0.1", port, NQN, hostnqn=HOSTNQN, io_queues=1, ctrl_loss_tmo=0)
        try:
            assert ctrl.identify.mdts == 12  # the command line wins over the configuration
        finally:
            ctrl.shutdown()
    finally:
        server.close()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--mdts", "17", "--data-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert exited.value.code == 1 and "--mdts" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
