"""``nvmestack bench``: the fio-like workload generator on the command line,
against the NVMe/TCP target served in the test and against a drive
directory.  Counts and placement are checked against the device's own data
(the target's backend, the drive's namespace file); no timing assertions."""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import threading

import pytest

from nvmestack.bench.workload import HEADER_SIZE, MAGIC, Job, run_jobs
from nvmestack.cli.bench import StatusLine, parse_runtime
from nvmestack.host.block import BlockDevice

BS = 512  # both fixtures' namespaces have 512-byte blocks


class Target:
    """One device under test: the CLI arguments naming namespace 1, and
    access to the namespace's data on the device side."""

    def __init__(self, kind: str, args: list[str], read, write):
        self.kind = kind
        self.args = args
        self.read = read  # (offset, length) -> bytes
        self.write = write  # (offset, data)


@pytest.fixture(params=["drive", "tcp"])
def target(request):
    if request.param == "tcp":
        tgt = request.getfixturevalue("tcp_target")
        data = tgt.subsystem.namespaces[1].data
        return Target("tcp", [tgt.url + "?nsid=1"], data.read_bytes, data.write_bytes)
    path = request.getfixturevalue("drive")
    file = os.path.join(path, "ns1.data")

    def read(offset: int, length: int) -> bytes:
        with open(file, "rb") as f:
            f.seek(offset)
            return f.read(length).ljust(length, b"\0")

    def write(offset: int, data: bytes) -> None:
        with open(file, "r+b") as f:
            f.seek(offset)
            f.write(data)

    return Target("drive", [path, "-n", "1"], read, write)


def _percentiles_ordered(lat: dict) -> None:
    pct = lat["percentile"]
    values = [pct[k] for k in sorted(pct, key=float)]
    assert values == sorted(values)
    assert lat["min"] <= pct["50.000000"] <= pct["99.000000"] <= pct["99.900000"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]


def test_randread_json_is_fio_shaped(cli, target):
    r = cli("bench", *target.args, "--name", "rr", "--rw", "randread", "--bs", "4k", "--iodepth", "4",
            "--size", "1M", "-o", "json")
    assert r.rc == 0, r.err
    assert r.err == ""  # no status line in JSON mode (and not a terminal anyway)
    rep = r.json()
    assert {"fio version", "timestamp", "time", "jobs"} <= set(rep)
    (job,) = rep["jobs"]
    assert {"jobname", "jobid", "error", "job options", "read", "write", "job_runtime"} <= set(job)
    assert job["jobname"] == "rr" and job["error"] == 0
    opts = job["job options"]
    assert (opts["rw"], opts["bs"], opts["iodepth"]) == ("randread", "4096", "4")
    rd, wr = job["read"], job["write"]
    assert {"io_bytes", "io_kbytes", "bw_bytes", "bw", "iops", "runtime", "total_ios", "lat_ns"} <= set(rd)
    assert rd["total_ios"] == 256  # the 1 MiB region once, in 4 KiB I/Os
    assert rd["io_bytes"] == rd["total_ios"] * 4096 == 1 << 20
    assert rd["io_kbytes"] == 1024
    assert rd["iops"] > 0 and rd["bw_bytes"] > 0
    assert rd["lat_ns"]["N"] == 256
    _percentiles_ordered(rd["lat_ns"])
    assert wr["total_ios"] == 0 and wr["io_bytes"] == 0
    assert rep["aggregate"]["read"]["total_ios"] == 256


def test_normal_output_and_output_file(cli, target, tmp_path):
    out = tmp_path / "report.json"
    r = cli("bench", *target.args, "--rw", "read", "--bs", "8k", "--size", "256k", "--output", out)
    assert r.rc == 0, r.err
    assert "rw=read, bs=8KiB, iodepth=1" in r.out
    assert "read: IOPS=" in r.out
    assert "p50=" in r.out and "p99=" in r.out and "p99.9=" in r.out
    assert "READ: bw=" in r.out and "io=256KiB" in r.out
    rep = json.loads(out.read_text())
    assert rep["jobs"][0]["read"]["total_ios"] == 32
    assert rep["jobs"][0]["read"]["io_bytes"] == 256 * 1024


def test_sequential_write_lands_in_the_region(cli, target):
    offset, size = 1 << 20, 64 << 10
    r = cli("bench", *target.args, "--rw", "write", "--bs", "4k", "--iodepth", "8", "--offset", offset,
            "--size", size, "--verify", "--do_verify", "0", "--randseed", "11", "-o", "json")
    assert r.rc == 0, r.err
    wr = r.json()["jobs"][0]["write"]
    assert wr["total_ios"] == 16 and wr["io_bytes"] == size
    for lba in range(offset // BS, (offset + size) // BS):
        magic, _crc, hlba, seed, _seq = struct.unpack("<IIQQQ", target.read(lba * BS, HEADER_SIZE))
        assert (magic, hlba, seed) == (MAGIC, lba, 11)
    assert target.read(offset - BS, BS) == bytes(BS)  # nothing outside the region
    assert target.read(offset + size, BS) == bytes(BS)


def test_verify_catches_corruption(cli, target):
    region = ["--offset", "2M", "--size", "128k", "--bs", "4k", "--randseed", "5"]
    r = cli("bench", *target.args, "--rw", "randwrite", "--iodepth", "4", *region, "--verify", "-o", "json")
    assert r.rc == 0, r.err
    assert r.json()["jobs"][0]["verify"]["errors"] == 0
    # a read pass with the same seed checks every block
    r = cli("bench", *target.args, "--rw", "read", "--iodepth", "4", *region, "--verify", "-o", "json")
    assert r.rc == 0, r.err
    v = r.json()["jobs"][0]["verify"]
    assert v == {"blocks": 256, "errors": 0, "mismatches": []}
    # corrupt one byte of one block on the device side, then read again
    lba = (2 << 20) // BS + 37
    byte = target.read(lba * BS + 200, 1)
    target.write(lba * BS + 200, bytes([byte[0] ^ 0xFF]))
    r = cli("bench", *target.args, "--rw", "randread", "--iodepth", "4", *region, "--verify", "-o", "json")
    assert r.rc == 1
    assert len(r.err.splitlines()) == 1
    assert r.err.startswith("bench: verify failed: ") and f"LBA {lba}:" in r.err and "CRC32C" in r.err
    (job,) = r.json()["jobs"]  # the report is still printed
    assert job["verify"]["errors"] >= 1
    assert {m["lba"] for m in job["verify"]["mismatches"]} == {lba}
    # a block never written with the header: the text form says so too
    r = cli("bench", *target.args, "--rw", "read", "--offset", "8M", "--size", "4k", "--verify")
    assert r.rc == 1
    assert "no verify header" in r.err and "verify:" in r.out


def test_write_then_verify_pass(cli, target):
    r = cli("bench", *target.args, "--rw", "randwrite", "--bs", "2k", "--iodepth", "8", "--size", "256k",
            "--verify", "crc32c", "-o", "json")
    assert r.rc == 0, r.err
    job = r.json()["jobs"][0]
    assert job["write"]["total_ios"] == 128
    assert job["job options"]["verify"] == "crc32c"
    assert 0 < job["verify"]["blocks"] <= 512 and job["verify"]["errors"] == 0


def test_polled_io_writes_and_verifies(cli, target):
    """--hipri: a polled queue reaped by the job's thread (a drive's device
    runs inline); the same workload and the same data as interrupts."""
    r = cli("bench", *target.args, "--rw", "randwrite", "--bs", "4k", "--iodepth", "16", "--size", "256k",
            "--verify", "crc32c", "--hipri", "-o", "json")
    assert r.rc == 0, r.err
    job = r.json()["jobs"][0]
    assert job["write"]["total_ios"] == 64
    assert job["verify"]["blocks"] == 512 and job["verify"]["errors"] == 0


@pytest.mark.parametrize("rw", ["randrw", "rw"])
def test_rw_mix_is_respected(cli, target, rw):
    r = cli("bench", *target.args, "--rw", rw, "--rwmixread", "75", "--bs", "4k", "--iodepth", "4",
            "--size", "2M", "-o", "json")
    assert r.rc == 0, r.err
    job = r.json()["jobs"][0]
    reads, writes = job["read"]["total_ios"], job["write"]["total_ios"]
    assert reads + writes == 512
    assert 300 < reads < 460  # 384 expected; binomial sd ~10
    assert job["job options"]["rwmixread"] == "75"
    assert job["read"]["io_bytes"] == reads * 4096 and job["write"]["io_bytes"] == writes * 4096


def test_rw_mix_extremes_and_rwmixwrite(cli, tcp_target):
    dev = tcp_target.url + "?nsid=2"
    r = cli("bench", dev, "--rw", "randrw", "--rwmixread", "100", "--size", "64k", "-o", "json")
    assert r.rc == 0, r.err
    job = r.json()["jobs"][0]
    assert job["read"]["total_ios"] == 16 and job["write"]["total_ios"] == 0
    r = cli("bench", dev, "--rw", "randrw", "--rwmixwrite", "100", "--size", "64k", "-o", "json")
    job = r.json()["jobs"][0]
    assert job["read"]["total_ios"] == 0 and job["write"]["total_ios"] == 16


def test_numjobs_and_runtime(cli, tcp_target):
    dev = tcp_target.url + "?nsid=1"
    r = cli("bench", dev, "--rw", "randread", "--numjobs", "2", "--iodepth", "2", "--size", "128k", "-o", "json")
    assert r.rc == 0, r.err
    rep = r.json()
    assert [j["jobid"] for j in rep["jobs"]] == [0, 1]
    assert [j["read"]["total_ios"] for j in rep["jobs"]] == [16, 16]  # the region split between the jobs
    assert rep["aggregate"]["read"]["total_ios"] == 32
    r = cli("bench", dev, "--rw", "randread", "--runtime", "0.3", "--time_based", "--size", "64k", "-o", "json")
    assert r.rc == 0, r.err
    rd = r.json()["jobs"][0]["read"]
    assert rd["total_ios"] > 0 and rd["io_bytes"] == rd["total_ios"] * 4096
    assert r.json()["jobs"][0]["job options"]["runtime"] == "0.3"
    # without --time_based the region once ends the run (fio), and --io_size bounds it
    r = cli("bench", dev, "--rw", "randread", "--runtime", "60", "--size", "64k", "-o", "json")
    assert r.json()["jobs"][0]["read"]["total_ios"] == 16
    r = cli("bench", dev, "--rw", "randread", "--io_size", "16k", "--size", "1M", "-o", "json")
    assert r.json()["jobs"][0]["read"]["total_ios"] == 4


def test_registered_namespace_name(cli, tcp_target):
    r = cli("connect", "-t", "tcp", "-a", "127.0.0.1", "-s", tcp_target.port, "-n", tcp_target.subsystem.nqn)
    if r.rc != 0 and "invalid choice" in r.err:
        pytest.skip("connect is not there yet")
    assert r.rc == 0, r.err
    r = cli("bench", "nvme0n2", "--size", "16k", "-o", "json")
    assert r.rc == 0, r.err
    assert r.json()["device"] == "nvme0n2"
    assert r.json()["jobs"][0]["read"]["total_ios"] == 4


@pytest.mark.parametrize("args, message", [
    (["--rw", "trim"], "--rw 'trim'"),
    (["--bs", "1000"], "not a multiple of the block size 512"),
    (["--offset", "64M"], "beyond the namespace"),
    (["--offset", "31M", "--size", "2M"], "beyond the namespace"),
    (["--verify=md5"], "only crc32c"),
    (["--time_based"], "needs --runtime"),
    (["--rwmixread", "150"], "percentage"),
    (["--runtime", "soon"], "expected a time"),
    (["--iodepth", "0"], "positive"),
    (["-o", "binary"], "Invalid output format"),
    (["-n", "9"], "no active namespace 9"),
])
def test_bad_options(cli, drive, args, message):
    r = cli("bench", drive, "-n", "1", "--size", "64k", *args)
    assert r.rc == 1
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert message in r.err
    assert "Traceback" not in r.err


def test_controller_with_two_namespaces_needs_n(cli, drive, tcp_target):
    for dev in (drive, tcp_target.url):
        r = cli("bench", dev, "--size", "64k")
        assert r.rc == 1
        assert "namespaces 1, 2" in r.err and "-n" in r.err
    r = cli("bench", "/nonexistent/dir")
    assert r.rc == 1 and "No such file" in r.err


def test_help_says_writes_do_not_ask(cli):
    r = cli("bench", "--help")
    assert r.rc == 0
    assert "without asking" in r.out
    for opt in ("--rw", "--bs", "--iodepth", "--numjobs", "--runtime", "--size", "--offset", "--verify",
                "--rwmixread", "--randseed", "--output-format", "--output", "--time_based", "--namespace-id"):
        assert opt in r.out


def test_runtime_values():
    assert parse_runtime("5") == 5.0
    assert parse_runtime("0.3") == pytest.approx(0.3)
    assert parse_runtime("500ms") == pytest.approx(0.5)
    assert parse_runtime("2m") == 120.0
    for bad in ("0", "-1", "5 parsecs", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_runtime(bad)


# ---------------------------------------------------------------------------
# the status line and stopping


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _FakeStats:
    def __init__(self, rs=0, ws=0, ri=0, wi=0):
        self.read_sectors, self.write_sectors, self.read_ios, self.write_ios = rs, ws, ri, wi


class _FakeBlock:
    size = 1 << 20

    def __init__(self):
        self.now = _FakeStats()

    def stats(self):
        return self.now


def test_status_line_only_on_a_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    job = Job(rw="randread", bs=4096, runtime=10.0)
    assert not StatusLine(_FakeBlock(), job, stream=io.StringIO()).enabled
    assert not StatusLine(_FakeBlock(), job, stream=_Tty(), enabled=False).enabled
    clock = iter([100.0, 102.0]).__next__
    block = _FakeBlock()
    s = StatusLine(block, job, stream=_Tty(), clock=clock)
    assert s.enabled
    s._start = clock()
    s._first = block.stats()
    s._last = (s._start, s._first)
    # 2 s later: 4 MiB read in 1024 I/Os
    line = s.line(clock(), _FakeStats(rs=8192, ri=1024))
    assert line.startswith("Jobs: 1 (f=1): [r(1)][20.0%]")
    assert "[r=2MiB/s]" in line and "[r=512 IOPS]" in line and "[eta 00m:08s]" in line


def test_stop_event_ends_the_jobs_early(tcp_target):
    from nvmestack.cli.devices import open_device

    with open_device(tcp_target.url + "?nsid=1", io_queues=1) as dev:
        block = BlockDevice(dev.ctrl.namespaces[1])
        stop = threading.Event()
        stop.set()
        res = run_jobs(block, Job(rw="randwrite", bs=4096, size=1 << 20, verify=True), stop=stop)
    assert res.jobs[0].error is None
    assert res.write.ios == 0 and res.jobs[0].verified_blocks == 0


def test_url_options_reach_the_connection(cli, tcp_target, monkeypatch):
    """?disable_sqflow in a tcp:// argument is nvme connect --disable-sqflow:
    the I/O queues connect with SQ flow control disabled (reads then end
    with a C2HData carrying SUCCESS) and the data is the same."""
    from nvmestack.target import tcp as target_tcp

    seen = []
    original = target_tcp.TcpConnection._finish_connect

    def finish(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append((self.qid, self.sqflow_disabled))

    monkeypatch.setattr(target_tcp.TcpConnection, "_finish_connect", finish)
    r = cli("bench", tcp_target.url + "?nsid=1&disable_sqflow", "--rw", "randwrite", "--bs", "4k", "--iodepth", "8",
            "--size", "256k", "--verify", "crc32c", "-o", "json")
    assert r.rc == 0, r.err
    assert r.json()["jobs"][0]["verify"]["errors"] == 0
    io_queues = [flag for qid, flag in seen if qid]
    assert io_queues and all(io_queues)
