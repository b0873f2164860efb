"""``nvmestack trace -- COMMAND ...`` and ``NVMESTACK_TRACE=FILE``: the
decoded command trace (Linux's nvme_setup_cmd / nvme_complete_rq lines) and
the latency histograms, around other commands, against the NVMe/TCP target
served in the test and against a drive directory."""

from __future__ import annotations

import json
import re

import pytest

from nvmestack.cli import devices

SETUP = re.compile(r"^\d+\.\d{6} \d+: nvme_setup_cmd: (nvme\d+): qid=(\d+), cmdid=(\d+), nsid=(\d+), "
                   r"flags=0x[0-9a-f]+, meta=0x[0-9a-f]+, cmd=\((\S+) (.*)\)$")
COMPLETE = re.compile(r"^\d+\.\d{6} \d+: nvme_complete_rq: (nvme\d+): qid=(\d+), cmdid=(\d+), res=0x[0-9a-f]+, "
                      r"retries=\d+, flags=0x[0-9a-f]+, status=(0x[0-9a-f]+|none)$")


def _events(text: str) -> tuple[list[tuple], list[tuple]]:
    setups, completes = [], []
    for line in text.splitlines():
        m = SETUP.match(line)
        if m:
            setups.append(m.groups())
            continue
        m = COMPLETE.match(line)
        if m:
            completes.append(m.groups())
    return setups, completes


def _table(text: str) -> dict[str, int]:
    """The latency table's rows: label -> count."""
    rows = {}
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("latency (usecs)"))
    for line in lines[start + 1:]:
        m = re.match(r"^(.+?)\s+(\d+)(\s+[-\d.]+){6}$", line)
        if not m:
            break
        rows[m.group(1)] = int(m.group(2))
    return rows


@pytest.fixture(params=["drive", "tcp"])
def device(request):
    """Namespace 1 of the device as bench arguments, and the controller."""
    if request.param == "tcp":
        tgt = request.getfixturevalue("tcp_target")
        return {"kind": "tcp", "ctrl": tgt.url, "ns": [tgt.url + "?nsid=1"]}
    path = request.getfixturevalue("drive")
    return {"kind": "drive", "ctrl": path, "ns": [path, "-n", "1"]}


@pytest.fixture(autouse=True)
def no_tracer_left():
    yield
    assert "tracer" not in devices.SESSION_OPTIONS


def _have(command: str) -> bool:
    from nvmestack.cli.common import COMMANDS
    from nvmestack.cli.main import build_parser

    build_parser()
    return command in COMMANDS


def test_trace_id_ctrl_shows_identify_and_its_completion(cli, device):
    if not _have("id-ctrl"):
        pytest.skip("id-ctrl is not there yet")
    r = cli("trace", "--", "id-ctrl", device["ctrl"], "-o", "json")
    assert r.rc == 0, r.err
    assert json.loads(r.out)["sn"].strip()  # the command's own output is untouched
    setups, completes = _events(r.err)
    idents = [s for s in setups if s[4] == "nvme_admin_identify" and s[5].startswith("cns=1,")]
    assert idents, r.err
    ctrl, qid, cid, _nsid, _op, args = idents[-1]
    assert qid == "0" and args == "cns=1, ctrlid=0"
    assert (ctrl, "0", cid, "0x0") in completes
    rows = _table(r.err)
    assert rows["nvme_admin_identify"] == sum(1 for s in setups if s[4] == "nvme_admin_identify")


def test_trace_bench_lines_and_histograms(cli, device):
    r = cli("trace", "--histogram", "--", "bench", *device["ns"], "--rw", "randread", "--size", "32k",
            "-o", "json")
    assert r.rc == 0, r.err
    rep = json.loads(r.out)  # stdout is still bench's JSON
    assert rep["jobs"][0]["read"]["total_ios"] == 8
    setups, completes = _events(r.err)
    reads = [s for s in setups if s[4] == "nvme_cmd_read"]
    assert len(reads) == 8
    for _ctrl, qid, _cid, nsid, _op, args in reads:
        assert qid != "0" and nsid == "1"
        slba, length = re.match(r"slba=(\d+), len=(\d+), ctrl=0x0, dsmgmt=0, reftag=0$", args).groups()
        assert int(length) == 7 and int(slba) % 8 == 0 and int(slba) < 64  # 4 KiB I/Os in the first 32 KiB
    io_completes = [c for c in completes if c[1] != "0"]
    assert len(io_completes) == 8 and all(c[3] == "0x0" for c in io_completes)
    assert {(s[1], s[2]) for s in reads} == {(c[1], c[2]) for c in io_completes}
    # identify during initialisation, queue creation, the reads
    names = {s[4] for s in setups}
    assert {"nvme_admin_identify", "nvme_admin_set_features", "nvme_admin_get_log_page"} <= names
    if device["kind"] == "drive":  # PCIe creates its I/O queues (TCP connects them)
        assert {"nvme_admin_create_cq", "nvme_admin_create_sq"} <= names
    assert re.search(r"^\d+ commands set up, \d+ completed$", r.err, re.MULTILINE)
    rows = _table(r.err)
    assert rows["nvme_cmd_read"] == 8
    assert rows["qid 0"] >= 3
    assert "usecs : count     distribution" in r.err
    assert re.search(r"^nvme_cmd_read:$", r.err, re.MULTILINE)


def test_filter_io_and_opcode(cli, device):
    r = cli("trace", "--filter", "io", "--", "bench", *device["ns"], "--rw", "write", "--size", "16k")
    assert r.rc == 0, r.err
    setups, completes = _events(r.err)
    assert len(setups) == 4 and all(s[4] == "nvme_cmd_write" and s[1] != "0" for s in setups)
    assert len(completes) == 4 and all(c[1] != "0" for c in completes)
    assert set(_table(r.err)) == {f"qid {setups[0][1]}", "nvme_cmd_write"}

    for words in (["identify"], ["admin:0x06"], ["nvme_admin_identify"], ["Identify"]):
        args = [x for w in words for x in ("--filter", w)]
        r = cli("trace", *args, "--", "bench", *device["ns"], "--size", "4k")
        assert r.rc == 0, r.err
        setups, completes = _events(r.err)
        assert setups and {s[4] for s in setups} == {"nvme_admin_identify"}, words
        assert len(completes) == len(setups)

    r = cli("trace", "--filter", "read,get_log_page", "--", "bench", *device["ns"], "--size", "4k")
    setups, _ = _events(r.err)
    assert {s[4] for s in setups} == {"nvme_cmd_read", "nvme_admin_get_log_page"}


def test_filter_qid(cli, tcp_target):
    dev = tcp_target.url + "?nsid=2"
    r = cli("trace", "--filter", "qid=1", "--", "bench", dev, "--size", "8k")
    assert r.rc == 0, r.err
    setups, completes = _events(r.err)
    assert len(setups) == 2 and all(s[1] == "1" and s[4] == "nvme_cmd_read" and s[3] == "2" for s in setups)
    assert len(completes) == 2


def _event(name, qid, opcode, fctype=None):
    from nvmestack.host.trace import TraceEvent

    return TraceEvent(name, 0.0, "nvme0", qid, 1, opcode, fctype, 0, sqe=bytes(64))


@pytest.mark.parametrize("words, admin_identify, io_read, connect, io_connect", [
    ([], True, True, True, True),
    (["admin"], True, False, False, False),
    (["io"], False, True, False, False),
    (["fabrics"], False, False, True, True),
    (["connect"], False, False, True, True),
    (["fabrics:0x1"], False, False, True, True),
    (["0x02"], False, True, False, False),  # Read on an I/O queue; 02h on the admin queue is Get Log Page
    (["admin:0x06,io:0x02"], True, True, False, False),
    (["qid=1"], False, True, False, True),
    (["Get Log Page", "nvme_cmd_read"], False, True, False, False),
])
def test_event_filter(words, admin_identify, io_read, connect, io_connect):
    from nvmestack.cli.trace import EventFilter
    from nvmestack.host.trace import COMPLETE, SETUP

    f = EventFilter(words)
    for name in (SETUP, COMPLETE):
        assert f(_event(name, 0, 0x06)) == admin_identify
        assert f(_event(name, 1, 0x02)) == io_read
        assert f(_event(name, 0, 0x7F, 0x01)) == connect
        assert f(_event(name, 1, 0x7F, 0x01)) == io_connect


def test_output_file_quiet_and_decoded(cli, drive, tmp_path):
    out = tmp_path / "trace.txt"
    r = cli("trace", "--output", out, "--", "bench", drive, "-n", "2", "--size", "8k")
    assert r.rc == 0, r.err
    assert r.err == ""
    text = out.read_text()
    setups, _ = _events(text)
    assert len([s for s in setups if s[4] == "nvme_cmd_read"]) == 2
    assert "latency (usecs)" in text
    assert "read: IOPS=" in r.out

    r = cli("trace", "-q", "--", "bench", drive, "-n", "2", "--size", "8k")
    assert r.rc == 0
    assert _events(r.err) == ([], [])
    assert _table(r.err)["nvme_cmd_read"] == 2

    r = cli("trace", "--decoded", "--filter", "get_log_page", "--", "bench", drive, "-n", "2", "--size", "8k")
    setups, _ = _events(r.err)
    assert setups and all("lid=" in s[5] and "cdw10=" not in s[5] for s in setups)


def test_exit_status_and_errors(cli, drive):
    r = cli("trace", "--", "bench", drive, "-n", "7", "--size", "4k")
    assert r.rc == 1
    assert "no active namespace 7" in r.err
    assert "latency (usecs)" in r.err  # the histograms of what ran
    for args, message in ((["trace"], "no command to trace"),
                          (["trace", "--"], "no command to trace"),
                          (["trace", "--filter", "bogus", "--", "bench", drive], "--filter 'bogus'"),
                          (["trace", "--filter", "io:0x1ff", "--", "bench", drive], "0 to 0xff"),
                          (["trace", "--", "trace", "--", "bench", drive], "cannot trace"),
                          (["trace", "--output", "/nonexistent/x", "--", "bench", drive, "-n", "1"],
                           "/nonexistent/x")):
        r = cli(*args)
        assert r.rc == 1, args
        assert len(r.err.strip().splitlines()) == 1 and message in r.err, (args, r.err)
    r = cli("trace", "--", "bench", drive, "--no-such-option")
    assert r.rc == 1 and "unrecognized arguments" in r.err


def test_environment_variable(cli, drive, tmp_path, monkeypatch):
    log = tmp_path / "env-trace.txt"
    monkeypatch.setenv("NVMESTACK_TRACE", str(log))
    r = cli("bench", drive, "-n", "1", "--size", "8k", "-o", "json")
    assert r.rc == 0, r.err
    assert r.err == ""
    assert json.loads(r.out)["jobs"][0]["read"]["total_ios"] == 2
    text = log.read_text()
    setups, _ = _events(text)
    assert len([s for s in setups if s[4] == "nvme_cmd_read"]) == 2
    assert _table(text)["nvme_cmd_read"] == 2
    # appended, and filtered by NVMESTACK_TRACE_FILTER
    assert "nvme_admin_identify" in {s[4] for s in setups}
    monkeypatch.setenv("NVMESTACK_TRACE_FILTER", "write")
    r = cli("bench", drive, "-n", "1", "--rw", "write", "--size", "8k")
    assert r.rc == 0, r.err
    full = log.read_text()
    assert full.startswith(text)
    setups, _ = _events(full[len(text):])
    assert [s[4] for s in setups] == ["nvme_cmd_write"] * 2
    monkeypatch.setenv("NVMESTACK_TRACE_FILTER", "nonsense")
    r = cli("bench", drive, "-n", "1", "--size", "8k")
    assert r.rc == 1 and r.err.startswith("NVMESTACK_TRACE_FILTER 'nonsense'")
    # the trace command's own options win over the variable
    monkeypatch.delenv("NVMESTACK_TRACE_FILTER")
    size = log.stat().st_size
    r = cli("trace", "-q", "--", "bench", drive, "-n", "1", "--size", "8k")
    assert r.rc == 0 and log.stat().st_size == size
