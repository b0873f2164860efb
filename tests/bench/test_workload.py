"""The workload engine (bench/workload.py): counts, verify, the read/write
mix and the JSON report, over a BlockDevice on a live NvmeController over
an in-process PCIe function in its inline and thread modes (fixtures from
tests/host/conftest.py).  No timing assertions."""

from __future__ import annotations

import json
import struct

import pytest

from nvmestack.bench.workload import HEADER_SIZE, MAGIC, Job, run, run_jobs
from nvmestack.host.block import BlockDevice

from .conftest import NS_BLOCK_SIZE, NS_BLOCKS

BS = NS_BLOCK_SIZE


@pytest.fixture
def dev(ctrl):
    return BlockDevice(ctrl.namespaces[1], timeout=20)


def test_sequential_write_counts_and_placement(dev, host_subsystem):
    before = dev.stats()
    res = run(dev, name="sw", rw="write", bs=4096, iodepth=4, offset=64 * BS, span=64 * 1024, verify=True,
              do_verify=False, seed=7)
    (job,) = res.jobs
    assert job.error is None
    assert job.write.ios == 16 and job.write.io_bytes == 64 * 1024
    assert job.read.ios == 0
    assert len(job.write.lat_ns) == 16 and all(x > 0 for x in job.write.lat_ns)
    after = dev.stats()
    assert after.write_ios - before.write_ios == 16
    assert after.write_sectors - before.write_sectors == 128
    data = host_subsystem.namespaces[1].data
    for lba in (64, 65, 64 + 127):
        magic, _crc, hlba, seed, _seq = struct.unpack_from("<IIQQQ", data.read_bytes(lba * BS, HEADER_SIZE))
        assert (magic, hlba, seed) == (MAGIC, lba, 7)
    assert data.read_bytes(63 * BS, BS) == bytes(BS)  # nothing outside the region
    assert data.read_bytes((64 + 128) * BS, BS) == bytes(BS)


def test_numjobs_split_the_region_and_sizes(dev):
    res = run(dev, name="rr", rw="randread", bs=2048, iodepth=8, numjobs=3, size=40 * 2048, span=96 * 2048)
    assert [j.index for j in res.jobs] == [0, 1, 2]
    for j in res.jobs:
        assert j.error is None
        assert j.read.ios == 40 and j.write.ios == 0
    assert res.read.ios == 120 and res.read.io_bytes == 120 * 2048
    assert len(res.read.lat_ns) == 120


def test_runtime_bound_run(dev):
    res = run(dev, rw="randread", bs=4096, iodepth=2, runtime=0.2)
    assert res.jobs[0].error is None
    assert res.read.ios > 0


def test_write_then_verify_pass_is_clean(dev):
    res = run(dev, rw="randwrite", bs=4096, iodepth=8, size=200 * 4096, span=64 * 4096, verify=True, seed=3)
    (job,) = res.jobs
    assert job.error is None
    assert job.write.ios == 200
    assert job.verify_error_count == 0 and job.verify_errors == []
    # the verify pass read back every block written at least once
    assert 0 < job.verified_blocks <= 64 * 8


def test_verify_catches_a_corrupted_block(dev, host_subsystem):
    span = 32 * 4096
    w = run(dev, name="w", rw="write", bs=4096, iodepth=4, offset=1024 * BS, span=span, verify=True,
            do_verify=False, seed=11)
    assert w.jobs[0].error is None and w.jobs[0].write.ios == 32
    bad = 1024 + 8 * 5 + 3  # the 4th block of the 6th I/O
    data = host_subsystem.namespaces[1].data
    block = bytearray(data.read_bytes(bad * BS, BS))
    block[300] ^= 0x40
    data.write_bytes(bad * BS, bytes(block))
    r = run(dev, name="v", rw="read", bs=4096, iodepth=4, offset=1024 * BS, span=span, verify=True, seed=11)
    (job,) = r.jobs
    assert job.error is None
    assert job.verified_blocks == 32 * 8
    assert job.verify_error_count == 1
    assert [e.lba for e in job.verify_errors] == [bad]
    assert "CRC32C" in job.verify_errors[0].reason
    assert r.as_dict()["jobs"][0]["verify"]["mismatches"][0]["lba"] == bad
    assert f"LBA {bad}" in r.text()


def test_verify_catches_misplaced_and_missing_blocks(dev, host_subsystem):
    run(dev, rw="write", bs=BS, span=8 * BS, verify=True, do_verify=False, seed=5)
    data = host_subsystem.namespaces[1].data
    data.write_bytes(2 * BS, data.read_bytes(6 * BS, BS))  # block 6 copied onto block 2
    data.write_bytes(4 * BS, bytes(BS))  # block 4 lost
    res = run(dev, rw="read", bs=BS, span=8 * BS, verify=True, seed=5)
    errors = {e.lba: e.reason for e in res.verify_errors}
    assert sorted(errors) == [2, 4]
    assert "header names LBA 6" in errors[2]
    assert "no verify header" in errors[4]
    other_seed = run(dev, rw="read", bs=BS, span=8 * BS, verify=True, seed=6)
    assert other_seed.verify_error_count == 8


def test_randrw_read_after_write_is_clean(dev):
    res = run(dev, rw="randrw", bs=4096, iodepth=4, size=300 * 4096, span=16 * 4096, verify=True, seed=9)
    assert res.jobs[0].error is None
    assert res.verify_error_count == 0
    assert res.jobs[0].verified_blocks > 16 * 8  # reads checked as they went, then the verify pass


def test_verify_catches_a_stale_block(dev, host_subsystem):
    """A lost write (the block's previous contents, with a valid header) is
    caught by the CRCs the job recorded."""
    from nvmestack.bench.workload import _Runner

    runner = _Runner(dev, Job(rw="write", bs=BS, span=8 * BS, verify=True, do_verify=False, seed=4), 0)
    runner.run()
    data = host_subsystem.namespaces[1].data
    old = data.read_bytes(3 * BS, BS)
    runner.issued = 0  # write the whole span again
    runner.run()
    data.write_bytes(3 * BS, old)
    runner._verify_pass()
    assert [(e.lba, e.reason.split(":")[0]) for e in runner.verify_errors] == [(3, "stale data")]


def test_randrw_mix_roughly_honoured(dev):
    res = run(dev, rw="randrw", rwmixread=70, bs=BS, iodepth=4, size=600 * BS, seed=1)
    (job,) = res.jobs
    assert job.read.ios + job.write.ios == 600
    assert 0.6 < job.read.ios / 600 < 0.8
    res = run(dev, rw="randrw", rwmixread=10, bs=BS, iodepth=4, size=600 * BS, seed=2)
    assert 0.03 < res.read.ios / 600 < 0.2


def test_json_report_keys(dev):
    res = run_jobs(dev, [Job(name="a", rw="randrw", bs=4096, iodepth=4, numjobs=2, size=20 * 4096),
                         Job(name="b", rw="read", bs=8192, size=10 * 8192)])
    report = json.loads(json.dumps(res.as_dict()))
    assert [j["jobname"] for j in report["jobs"]] == ["a", "a", "b"]
    for j in report["jobs"]:
        assert j["error"] == 0
        for d in ("read", "write"):
            sec = j[d]
            for key in ("io_bytes", "iops", "bw_bytes", "bw", "runtime", "total_ios", "lat_ns"):
                assert key in sec
            lat = sec["lat_ns"]
            for key in ("min", "max", "mean", "stddev", "N", "percentile"):
                assert key in lat
            pct = lat["percentile"]
            for key in ("50.000000", "99.000000", "99.900000"):
                assert key in pct
            if sec["total_ios"]:
                assert lat["min"] <= pct["50.000000"] <= pct["99.000000"] <= pct["99.900000"] <= lat["max"]
                assert lat["min"] <= lat["mean"] <= lat["max"]
                assert sec["io_bytes"] == sec["total_ios"] * int(j["job options"]["bs"])
    b = report["jobs"][2]
    assert b["read"]["total_ios"] == 10 and b["write"]["total_ios"] == 0
    agg = report["aggregate"]
    assert agg["read"]["total_ios"] == sum(j["read"]["total_ios"] for j in report["jobs"])
    assert agg["write"]["total_ios"] == sum(j["write"]["total_ios"] for j in report["jobs"])
    assert sum(j["read"]["total_ios"] + j["write"]["total_ios"] for j in report["jobs"][:2]) == 40
    text = res.text()
    assert "IOPS=" in text and "lat percentiles" in text and "Run status" in text


def test_iodepth_batch_submit_bounds_each_submission(dev, ctrl):
    """fio's iodepth_batch_submit: at most that many I/Os per submission
    batch (one doorbell each); 0 sends every free slot at once."""

    def counts():
        return sum(q.submitted for q in ctrl.io_queues), sum(q.doorbells for q in ctrl.io_queues)

    s0, d0 = counts()
    res = run(dev, rw="randread", bs=BS, iodepth=8, iodepth_batch_submit=2, size=64 * BS, span=128 * BS)
    s1, d1 = counts()
    assert res.jobs[0].error is None and res.read.ios == 64
    assert s1 - s0 == 64
    assert d1 - d0 >= 32  # never more than 2 commands per doorbell
    res = run(dev, rw="randread", bs=BS, iodepth=8, size=64 * BS, span=128 * BS)
    s2, d2 = counts()
    assert res.read.ios == 64 and s2 - s1 == 64
    assert d2 - d1 < 64  # the first refill of 8 goes out in one batch


@pytest.mark.parametrize("options, message", [
    ({"rw": "sideways"}, "rw must be"),
    ({"iodepth": 0}, "iodepth"),
    ({"rwmixread": 101}, "rwmixread"),
    ({"iodepth_batch_submit": -1}, "iodepth_batch_submit"),
])
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        Job(**options)


def test_bad_geometry(dev):
    with pytest.raises(ValueError, match="multiple of the block size"):
        run(dev, bs=1000)
    with pytest.raises(ValueError, match="beyond"):
        run(dev, offset=BS, span=NS_BLOCKS * BS)
