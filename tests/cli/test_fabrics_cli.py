"""discover, connect, connect-all, disconnect(-all), gen/show-hostnqn, list,
list-subsys, list-ns, list-ctrl against a target served in the test (and
drives), with the layouts Debian's nvme-cli 2.3 printed through the kernel
for our target (data/nvme-cli-2.3/fabrics)."""

from __future__ import annotations

import pathlib
import re

from nvmestack.spec.fabrics import DISCOVERY_NQN
from nvmestack.target.tcp import TcpTarget

from .conftest import TCP_NQN, make_tcp_subsystem

GOLDEN = pathlib.Path(__file__).parent / "data" / "nvme-cli-2.3" / "fabrics"


def golden(name: str) -> str:
    text = (GOLDEN / f"{name}.txt").read_text()
    return text.split("\n", 1)[1]  # drop the "# rc=" line


def test_connect_list_disconnect(cli, tcp_target):
    r = cli("connect", "-t", "tcp", "-a", "127.0.0.1", "-s", tcp_target.port, "-n", TCP_NQN)
    assert r.rc == 0 and r.out == "", r.err
    r = cli("connect", "-t", "tcp", "-a", "127.0.0.1", "-s", tcp_target.port, "-n", TCP_NQN)
    assert r.rc == 1 and "already connected" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("connect", "-t", "tcp", "-a", "127.0.0.1", "-s", tcp_target.port, "-n", TCP_NQN, "-D", "-o", "json")
    assert r.rc == 0 and r.json() == {"device": "nvme1"}
    r = cli("list", "-o", "json")
    assert r.rc == 0, r.err
    devs = r.json()["Devices"]
    assert [d["DevicePath"] for d in devs] == ["/dev/nvme0n1", "/dev/nvme0n2", "/dev/nvme1n1", "/dev/nvme1n2"]
    ns = tcp_target.subsystem.namespaces[1]
    d = devs[0]
    assert d["SerialNumber"] == "CLITEST01" and d["ModelNumber"] == "nvmestack cli test"
    assert d["MaximumLBA"] == ns.nblocks and d["SectorSize"] == 512 and d["PhysicalSize"] == ns.nblocks * 512
    assert list(d) == list(_golden_json("list-json")["Devices"][0])
    # text: nvme-cli's columns
    r = cli("list")
    head = golden("list").splitlines()
    lines = r.out.splitlines()
    assert lines[:2] == head[:2]
    assert lines[2].startswith("/dev/nvme0n1          /dev/ng0n1            CLITEST01            nvmestack cli test")
    assert "  33.55  MB    512   B +  0 B   " in lines[2]
    # disconnect by NQN: nvme-cli's message
    r = cli("disconnect", "-n", TCP_NQN)
    assert r.rc == 0 and r.out == f"NQN:{TCP_NQN} disconnected 2 controller(s)\n"
    assert cli("list", "-o", "json").json() == {"Devices": []}
    r = cli("list-ns", "nvme0")
    assert r.rc == 1 and "nvme0" in r.err


def _golden_json(name):
    import json

    return json.loads(golden(name))


def test_list_layouts_follow_nvme_cli(cli, tcp_target):
    assert cli("connect", "-t", "tcp", "-a", "127.0.0.1", "-s", tcp_target.port, "-n", TCP_NQN).rc == 0
    r = cli("list", "-v")
    want = golden("list-v").splitlines()
    got = r.out.splitlines()
    assert got[0] == want[0] and got[1] == want[1] and got[4] == want[4] and got[5] == want[5]
    assert got[9] == want[9]
    assert got[10] == want[10].replace("  1.07  GB", " 33.55  MB")  # the golden target had 1 GiB
    assert got[2].startswith(f"nvme-subsys0     {TCP_NQN}") and got[2].endswith(" nvme0")
    assert re.match(r"nvme0    CLITEST01 +nvmestack cli test +1\.0 +tcp +traddr=127\.0\.0\.1,trsvcid=\d+,"
                    r"src_addr=127\.0\.0\.1 nvme-subsys0 nvme0n1, nvme0n2$", got[6]), got[6]
    j = cli("list", "-v", "-o", "json").json()
    w = _golden_json("list-v-json")
    assert list(j["Devices"][0]) == list(w["Devices"][0])
    sub = j["Devices"][0]["Subsystems"][0]
    assert list(sub) == list(w["Devices"][0]["Subsystems"][0])
    assert sub["SubsystemNQN"] == TCP_NQN
    assert list(sub["Controllers"][0]) == list(w["Devices"][0]["Subsystems"][0]["Controllers"][0])
    assert [n["NSID"] for n in sub["Namespaces"]] == [1, 2]
    # list-subsys
    r = cli("list-subsys")
    lines = r.out.splitlines()
    assert lines[0] == f"nvme-subsys0 - NQN={TCP_NQN}" and lines[1] == "\\"
    assert re.match(r" \+- nvme0 tcp traddr=127\.0\.0\.1,trsvcid=\d+,src_addr=127\.0\.0\.1 live $", lines[2])
    r = cli("list-subsys", "/dev/nvme0n1")
    assert r.out.splitlines()[2].endswith(" live optimized")
    j = cli("list-subsys", "-o", "json").json()
    w = _golden_json("list-subsys-json")
    assert list(j[0]) == list(w[0]) and list(j[0]["Subsystems"][0]["Paths"][0]) == list(w[0]["Subsystems"][0]["Paths"][0])
    # list-ns / list-ctrl through the registered name
    assert cli("list-ns", "/dev/nvme0").out == "[   0]:0x1\n[   1]:0x2\n"
    assert cli("list-ns", "nvme0", "-n", "2", "-o", "json").json() == {"nsid_list": [{"nsid": 2}]}
    # each command is its own association: the controller list holds the one asking
    r = cli("list-ctrl", "nvme0", "-o", "json").json()
    assert r["num_ctrl"] == 1 and 1 <= r["ctrl_list"][0]["ctrl_id"] <= 0xFFEF
    r = cli("list-ctrl", "nvme0")
    assert re.match(r"num of ctrls present: 1\n\[   0\]:0x[0-9a-f]+\n$", r.out), r.out


def test_discover_and_connect_all(cli):
    sub = make_tcp_subsystem()
    tgt = TcpTarget([sub])
    io = tgt.listen("127.0.0.1", 0)
    disc = tgt.listen("127.0.0.1", 0, subsystems=[])
    tgt.start()
    try:
        r = cli("discover", "-t", "tcp", "-a", "127.0.0.1", "-s", disc.trsvcid)
        assert r.rc == 0, r.err
        lines = r.out.splitlines()
        assert lines[0] == "" and re.match(r"Discovery Log Number of Records 2, Generation counter \d+$", lines[1])
        want = golden("discover").splitlines()
        keys = [line.split(":")[0] for line in want[2:14]]
        assert [line.split(":")[0] for line in lines[2:14]] == keys
        assert "subnqn:  " + DISCOVERY_NQN in lines and "subnqn:  " + TCP_NQN in lines
        assert f"trsvcid: {io.trsvcid}" in lines
        assert "treq:    not specified, sq flow control disable supported" in lines
        j = cli("discover", "-t", "tcp", "-a", "127.0.0.1", "-s", disc.trsvcid, "-o", "json").json()
        w = _golden_json("discover-json")
        assert list(j) == list(w) and list(j["records"][1]) == list(w["records"][1])
        assert j["records"][1]["subnqn"] == TCP_NQN and j["records"][1]["trsvcid"] == io.trsvcid
        rc, raw, _ = cli.raw("discover", "-t", "tcp", "-a", "127.0.0.1", "-s", disc.trsvcid, "-o", "binary")
        assert rc == 0 and len(raw) == 1024 * 3 and int.from_bytes(raw[8:16], "little") == 2
        # connect-all: connects the NVM subsystem entry, prints nothing
        r = cli("connect-all", "-t", "tcp", "-a", "127.0.0.1", "-s", disc.trsvcid)
        assert r.rc == 0 and r.out == "", r.err
        devs = cli("list", "-o", "json").json()["Devices"]
        assert [d["DevicePath"] for d in devs] == ["/dev/nvme0n1", "/dev/nvme0n2"]
        assert cli("disconnect", "-d", "/dev/nvme0").out == ""
        assert cli("list", "-o", "json").json() == {"Devices": []}
        assert cli("connect-all", "-t", "tcp", "-a", "127.0.0.1", "-s", disc.trsvcid).rc == 0
        assert cli("disconnect-all").rc == 0
        assert cli("list", "-o", "json").json() == {"Devices": []}
    finally:
        tgt.stop()
        sub.close()


def test_errors_are_one_line(cli, tcp_target):
    cases = [
        (("connect", "-a", "127.0.0.1", "-n", TCP_NQN), "--transport"),
        (("connect", "-t", "rdma", "-a", "127.0.0.1", "-n", TCP_NQN), "not supported"),
        (("connect", "-t", "tcp", "-a", "127.0.0.1", "-s", tcp_target.port, "-n", "nqn.2026-11.io.nvmestack:none"),
         "failed to connect"),
        (("connect", "-t", "tcp", "-a", "127.0.0.1", "-s", tcp_target.port, "-n", "x" * 224), "invalid subsystem NQN"),
        (("connect", "-t", "tcp", "-a", "127.0.0.1", "-s", "1", "-n", TCP_NQN), "failed to connect"),
        (("disconnect",), "-n"),
        (("disconnect", "-d", "nvme7"), "Did not find device nvme7"),
        (("list-ns", "nvme3"), "nvme3"),
    ]
    for argv, text in cases:
        r = cli(*argv)
        assert r.rc == 1, (argv, r)
        assert text in r.err and len(r.err.strip().splitlines()) == 1, (argv, r.err)
        assert "Traceback" not in r.err


def test_hostnqn(cli, state_dir, monkeypatch):
    r = cli("gen-hostnqn")
    assert r.rc == 0 and re.match(r"nqn\.2014-08\.org\.nvmexpress:uuid:[0-9a-f-]{36}\n$", r.out)
    monkeypatch.setattr("nvmestack.cli.devices.NVME_ETC", str(state_dir / "etc"))
    a = cli("show-hostnqn").out
    assert a == cli("show-hostnqn").out and a.startswith("nqn.2014-08.org.nvmexpress:uuid:")
    (state_dir / "etc").mkdir()
    (state_dir / "etc" / "hostnqn").write_text("nqn.2014-08.org.nvmexpress:uuid:0e8c3a5e-1d31-4f4e-9a3c-5b2f0d6e7a11\n")
    assert cli("show-hostnqn").out == "nqn.2014-08.org.nvmexpress:uuid:0e8c3a5e-1d31-4f4e-9a3c-5b2f0d6e7a11\n"


def test_drives_in_list(cli, drive):
    assert cli("drive", "attach", drive).out == "/dev/nvme0\n"
    devs = cli("list", "-o", "json").json()["Devices"]
    assert [d["DevicePath"] for d in devs] == ["/dev/nvme0n1", "/dev/nvme0n2"]
    assert devs[0]["SerialNumber"] == "DRIVETEST01"
    r = cli("list-subsys")
    assert r.out.splitlines()[2] == f" +- nvme0 pcie {drive} live "
    assert cli("list-ns", drive, "--all").out == "[   0]:0x1\n[   1]:0x2\n"
    assert cli("disconnect-all").rc == 0  # leaves PCIe devices alone
    assert len(cli("list", "-o", "json").json()["Devices"]) == 2
