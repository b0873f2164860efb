"""A workload engine in the spirit of fio, over the host block layer.

A :class:`Job` describes one workload with fio's option names (``rw``,
``bs``, ``iodepth``, ``numjobs``, ``runtime``, ``size``, ``offset``,
``rwmixread``, ``verify``, ``do_verify``) plus ``span`` (the length of the
region from ``offset``; fio spells it ``size`` when there is no
``io_size``).  :func:`run_jobs` runs jobs concurrently on a
:class:`~nvmestack.host.block.BlockDevice`, each of the ``numjobs`` copies
of a job in its own thread, and returns a :class:`BenchResult`:
``as_dict()`` is a report shaped like fio's ``--output-format=json``
(``jobs`` with ``read``/``write`` sections holding ``io_bytes``, ``iops``,
``bw_bytes``, ``lat_ns`` with ``percentile``), plus an ``aggregate`` entry
(fio's group reporting), and ``text()`` a short summary like fio's.

How a job runs (fio's libaio engine, in miniature): up to ``iodepth`` I/Os
are in flight through ``dev.submit`` (each returns its BlockIO at once), the
I/Os of a refill sent as one batch (one plug), or in batches of
``iodepth_batch_submit`` (fio's option; its default of 1 would cost a send
per I/O here, so 0, the whole refill, is ours); a
done callback stamps the completion time (``time.perf_counter_ns``, so the
latency is submission to completion, fio's ``lat``); the job thread reaps
completions, refills the queue and waits on the oldest I/O in flight when
nothing has completed (waiting also drives completion polling where the
queue needs it).  Read and write buffers are allocated once per slot.

Offsets: the region ``[offset, offset + span)`` is split evenly between the
``numjobs`` copies (as fio's ``offset_increment`` would), so copies never
touch each other's blocks; sequential jobs go through their slice in order
and wrap around, random ones go through every ``bs``-aligned unit of it
once per pass in a random order (fio's random map, kept as a scrambled
full-period congruential sequence rather than a bitmap, so it costs no
memory; a new order every pass).  A job stops after ``size`` bytes (default: its slice
once, when no ``runtime`` is given) or after ``runtime`` seconds, whichever
comes first.

Verify (``verify=True``, fio's ``verify=crc32c`` with a header): every
logical block a job writes starts with a 32-byte header -- a magic number,
the CRC32C (``spec.checksum.crc32c``) of the rest of the block, the block's
LBA, the job's seed and a write sequence number -- followed by a pattern
that changes with the LBA and the write; the job also records each block's
CRC.  Reads check what they read: the magic, that the header names the LBA
read, that the CRC matches the contents, the seed, and, for blocks this job
wrote, that the CRC is the one of the last write (a stale or lost write).
A job that writes then reads back everything it wrote (``do_verify``,
default on); a read job with ``verify`` checks blocks written earlier by a
verifying job with the same seed.  Two I/Os of a verifying job never touch
the same unit at once.  Mismatches are reported with their LBA
(:class:`VerifyError`), never raised.
"""

from __future__ import annotations

import math
import random
import struct
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from ..spec.checksum import crc32c

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "PERCENTILES",
    "BenchResult",
    "DirectionResult",
    "Job",
    "JobResult",
    "VerifyError",
    "run",
    "run_jobs",
    "summary_text",
]

RW_MODES = ("read", "write", "randread", "randwrite", "randrw", "rw", "readwrite")
# fio's default percentile list (percentile_list)
PERCENTILES = (1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0,
               99.0, 99.5, 99.9, 99.95, 99.99)

MAGIC = 0x4E564231  # "NVB1" little-endian-ish tag at the start of every verified block
_HEADER = struct.Struct("<IIQQQ")  # magic, crc32c of block[8:], lba, seed, sequence
HEADER_SIZE = _HEADER.size  # 32
_CRC_OFFSET = 8  # the CRC covers the block from here to its end
_PATTERN_SIZE = 1 << 16
MAX_RECORDED_ERRORS = 64


# ---------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Job:
    """One workload (fio's job section).  Sizes are in bytes and must be
    multiples of the device's block size; ``bs`` also of ``offset``'s grid."""

    name: str = "job"
    rw: str = "read"  # read | write | randread | randwrite | randrw (rw/readwrite: sequential mix)
    bs: int = 4096
    iodepth: int = 1
    iodepth_batch_submit: int = 0  # I/Os per submission batch (one plug); 0: every free slot at once
    numjobs: int = 1
    runtime: float | None = None  # seconds
    size: int | None = None  # bytes of I/O per job copy
    offset: int = 0  # start of the region
    span: int | None = None  # length of the region (default: to the end of the device)
    rwmixread: int = 50  # percent of reads in a mixed workload
    verify: bool = False
    do_verify: bool = True  # after writing, read back and check what was written
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rw not in RW_MODES:
            raise ValueError(f"rw must be one of {', '.join(RW_MODES)}, not {self.rw!r}")
        if self.bs <= 0:
            raise ValueError(f"bs must be positive, not {self.bs}")
        if self.iodepth < 1:
            raise ValueError(f"iodepth must be at least 1, not {self.iodepth}")
        if self.iodepth_batch_submit < 0:
            raise ValueError(f"iodepth_batch_submit must be 0 or more, not {self.iodepth_batch_submit}")
        if self.numjobs < 1:
            raise ValueError(f"numjobs must be at least 1, not {self.numjobs}")
        if self.runtime is not None and self.runtime <= 0:
            raise ValueError(f"runtime must be positive, not {self.runtime}")
        if self.size is not None and self.size <= 0:
            raise ValueError(f"size must be positive, not {self.size}")
        if self.offset < 0:
            raise ValueError(f"offset must not be negative, not {self.offset}")
        if self.span is not None and self.span <= 0:
            raise ValueError(f"span must be positive, not {self.span}")
        if not 0 <= self.rwmixread <= 100:
            raise ValueError(f"rwmixread must be within 0..100, not {self.rwmixread}")

    @property
    def random(self) -> bool:
        return self.rw.startswith("rand")

    @property
    def read_percent(self) -> int:
        """Share of reads, in percent."""
        if self.rw in ("read", "randread"):
            return 100
        if self.rw in ("write", "randwrite"):
            return 0
        return self.rwmixread

    @property
    def writes(self) -> bool:
        return self.read_percent < 100


@dataclass(frozen=True)
class VerifyError:
    """A block whose contents are not what was written."""

    lba: int
    reason: str
    job: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"lba": self.lba, "reason": self.reason, "job": self.job}

    def __str__(self) -> str:
        return f"{self.job}: verify: LBA {self.lba}: {self.reason}"


# ---------------------------------------------------------------------------
# Results


def _percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of a sorted sequence."""
    n = len(sorted_values)
    if not n:
        return 0
    rank = max(1, math.ceil(p / 100.0 * n))
    return sorted_values[min(n, rank) - 1]


@dataclass
class DirectionResult:
    """One direction (read or write) of a job or of several."""

    ios: int = 0
    io_bytes: int = 0
    runtime_ns: int = 0
    lat_ns: list[int] = field(default_factory=list)  # sorted

    @property
    def iops(self) -> float:
        return self.ios * 1e9 / self.runtime_ns if self.runtime_ns else 0.0

    @property
    def bw_bytes(self) -> float:
        return self.io_bytes * 1e9 / self.runtime_ns if self.runtime_ns else 0.0

    def lat(self) -> dict[str, Any]:
        lat = self.lat_ns
        n = len(lat)
        if not n:
            return {"min": 0, "max": 0, "mean": 0.0, "stddev": 0.0, "N": 0,
                    "percentile": {f"{p:.6f}": 0 for p in PERCENTILES}}
        mean = sum(lat) / n
        var = sum((x - mean) ** 2 for x in lat) / (n - 1) if n > 1 else 0.0
        return {"min": lat[0], "max": lat[-1], "mean": mean, "stddev": math.sqrt(var), "N": n,
                "percentile": {f"{p:.6f}": _percentile(lat, p) for p in PERCENTILES}}

    def as_dict(self) -> dict[str, Any]:
        """fio's per-direction section (bw in KiB/s, runtime in ms)."""
        return {
            "io_bytes": self.io_bytes,
            "io_kbytes": self.io_bytes // 1024,
            "bw_bytes": round(self.bw_bytes),
            "bw": round(self.bw_bytes / 1024),
            "iops": self.iops,
            "runtime": self.runtime_ns // 1_000_000,
            "total_ios": self.ios,
            "lat_ns": self.lat(),
        }

    @classmethod
    def combine(cls, parts: Iterable[DirectionResult]) -> DirectionResult:
        """Jobs run side by side: counts add up over the longest runtime."""
        parts = list(parts)
        lat: list[int] = []
        for p in parts:
            lat.extend(p.lat_ns)
        lat.sort()
        return cls(ios=sum(p.ios for p in parts), io_bytes=sum(p.io_bytes for p in parts),
                   runtime_ns=max((p.runtime_ns for p in parts), default=0), lat_ns=lat)


@dataclass
class JobResult:
    """One copy of a job (one thread)."""

    job: Job
    index: int  # the copy's number (0 .. numjobs-1)
    read: DirectionResult
    write: DirectionResult
    runtime_ns: int
    error: str | None = None
    verified_blocks: int = 0
    verify_errors: list[VerifyError] = field(default_factory=list)  # the first MAX_RECORDED_ERRORS
    verify_error_count: int = 0

    @property
    def name(self) -> str:
        return self.job.name

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobname": self.job.name,
            "jobid": self.index,
            "error": 0 if self.error is None else 1,
            "error_msg": self.error or "",
            "job_runtime": self.runtime_ns // 1_000_000,
            "job options": _job_options(self.job),
            "read": self.read.as_dict(),
            "write": self.write.as_dict(),
            "verify": {
                "blocks": self.verified_blocks,
                "errors": self.verify_error_count,
                "mismatches": [e.as_dict() for e in self.verify_errors],
            },
        }


def _job_options(job: Job) -> dict[str, str]:
    opts = {"rw": job.rw, "bs": str(job.bs), "iodepth": str(job.iodepth), "numjobs": str(job.numjobs),
            "offset": str(job.offset)}
    if job.iodepth_batch_submit:
        opts["iodepth_batch_submit"] = str(job.iodepth_batch_submit)
    if job.runtime is not None:
        opts["runtime"] = str(job.runtime)
    if job.size is not None:
        opts["size"] = str(job.size)
    if job.span is not None:
        opts["span"] = str(job.span)
    if job.rw in ("randrw", "rw", "readwrite"):
        opts["rwmixread"] = str(job.rwmixread)
    if job.verify:
        opts["verify"] = "crc32c"
        opts["do_verify"] = "1" if job.do_verify else "0"
    opts["randseed"] = str(job.seed)
    return opts


@dataclass
class BenchResult:
    """Every job copy's result; ``as_dict()`` is the JSON report."""

    device: str
    jobs: list[JobResult]
    timestamp: float

    @property
    def read(self) -> DirectionResult:
        return DirectionResult.combine(j.read for j in self.jobs)

    @property
    def write(self) -> DirectionResult:
        return DirectionResult.combine(j.write for j in self.jobs)

    @property
    def verify_errors(self) -> list[VerifyError]:
        return [e for j in self.jobs for e in j.verify_errors]

    @property
    def verify_error_count(self) -> int:
        return sum(j.verify_error_count for j in self.jobs)

    @property
    def errors(self) -> list[str]:
        return [f"{j.name}.{j.index}: {j.error}" for j in self.jobs if j.error]

    def as_dict(self) -> dict[str, Any]:
        from .. import __version__ as version

        agg = {
            "jobname": "all",
            "error": 1 if self.errors else 0,
            "job_runtime": max((j.runtime_ns for j in self.jobs), default=0) // 1_000_000,
            "read": self.read.as_dict(),
            "write": self.write.as_dict(),
            "verify": {"blocks": sum(j.verified_blocks for j in self.jobs),
                       "errors": self.verify_error_count},
        }
        return {
            "fio version": f"nvmestack-{version}",
            "timestamp": int(self.timestamp),
            "time": time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(self.timestamp)),
            "device": self.device,
            "jobs": [j.as_dict() for j in self.jobs],
            "aggregate": agg,
        }

    def text(self) -> str:
        return summary_text(self)


# ---------------------------------------------------------------------------
# Text summary (fio's normal output, abridged)


def _num(value: float) -> str:
    """fio's short numbers: 950, 12.3k, 1.23M."""
    suffix = ""
    for limit, sfx in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            value, suffix = value / limit, sfx
            break
    return (f"{value:.3g}" if value < 1000 else f"{value:.0f}") + suffix


def _bytes(value: float, binary: bool = True) -> str:
    """48.1MiB (binary) or 50.4MB (decimal)."""
    base, units = (1024.0, ("B", "KiB", "MiB", "GiB", "TiB")) if binary else (1000.0, ("B", "kB", "MB", "GB", "TB"))
    i = 0
    while value >= base and i < len(units) - 1:
        value /= base
        i += 1
    return (f"{value:.3g}" if value < 1000 else f"{value:.0f}") + units[i]


def _lat_unit(lat: dict[str, Any]) -> tuple[str, float]:
    """fio's choice of unit, from the mean: nsec, usec or msec."""
    mean = lat["mean"]
    if mean >= 10_000_000:
        return "msec", 1e6
    if mean >= 10_000:
        return "usec", 1e3
    return "nsec", 1.0


def _direction_text(name: str, d: DirectionResult) -> list[str]:
    if not d.ios:
        return []
    runtime_ms = d.runtime_ns // 1_000_000
    lines = [(f"  {name}: IOPS={_num(d.iops)}, BW={_bytes(d.bw_bytes)}/s ({_bytes(d.bw_bytes, False)}/s)"
              f"({_bytes(d.io_bytes)}/{runtime_ms}msec)")]
    lat = d.lat()
    unit, div = _lat_unit(lat)
    lines.append(f"    lat ({unit}): min={lat['min'] / div:.0f}, max={lat['max'] / div:.0f}, "
                 f"avg={lat['mean'] / div:.2f}, stdev={lat['stddev'] / div:.2f}")
    pct = lat["percentile"]
    parts = ", ".join(f"p{label}=[{pct[f'{p:.6f}'] / div:.0f}]"
                      for p, label in ((50.0, "50"), (99.0, "99"), (99.9, "99.9")))
    lines.append(f"    lat percentiles ({unit}): {parts}")
    return lines


def summary_text(result: BenchResult) -> str:
    """fio's normal output, abridged: per job copy, then the group."""
    lines: list[str] = []
    for j in result.jobs:
        job = j.job
        lines.append(f"{j.name}: (jobid={j.index}, rw={job.rw}, bs={_bytes(job.bs)}, iodepth={job.iodepth}): "
                     f"err={0 if j.error is None else 1}{': ' + j.error if j.error else ''}")
        lines += _direction_text("read", j.read)
        lines += _direction_text("write", j.write)
        if job.verify:
            lines.append(f"  verify: {j.verified_blocks} blocks checked, {j.verify_error_count} errors")
            for e in j.verify_errors[:8]:
                lines.append(f"    LBA {e.lba}: {e.reason}")
    lines.append("")
    lines.append(f"Run status ({result.device}, {len(result.jobs)} jobs):")
    for name, d in (("READ", result.read), ("WRITE", result.write)):
        if d.ios:
            lines.append(f"  {name:>5}: bw={_bytes(d.bw_bytes)}/s ({_bytes(d.bw_bytes, False)}/s), "
                         f"iops={_num(d.iops)}, io={_bytes(d.io_bytes)}, run={d.runtime_ns // 1_000_000}msec")
            lat = d.lat()
            unit, div = _lat_unit(lat)
            pct = lat["percentile"]
            lines.append(f"         lat ({unit}): p50={pct['50.000000'] / div:.0f}, p99={pct['99.000000'] / div:.0f}, "
                         f"p99.9={pct['99.900000'] / div:.0f}, avg={lat['mean'] / div:.2f}")
    if result.verify_error_count:
        lines.append(f"  verify: {result.verify_error_count} errors")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# The engine


class _Slot:
    """One I/O's worth of state and buffer, reused once its I/O is reaped."""

    __slots__ = ("buf", "crcs", "done_q", "end", "io", "is_read", "lba", "mv", "start", "unit")

    def __init__(self, size: int, nblocks: int, done_q: deque, buf: Any = None):
        self.buf = buf if buf is not None else bytearray(size)
        view = getattr(self.buf, "view", None)  # a DMA buffer's bytes
        self.mv = view if isinstance(view, memoryview) else memoryview(self.buf)
        self.crcs = [0] * nblocks
        self.done_q = done_q
        self.io: Any = None
        self.is_read = True
        self.lba = 0
        self.unit = 0
        self.start = 0
        self.end = 0

    def on_done(self, _io: Any) -> None:
        self.end = time.perf_counter_ns()
        self.done_q.append(self)


class _Runner:
    """One copy of a job, run in one thread."""

    def __init__(self, dev: Any, job: Job, index: int, stop: threading.Event | None = None):
        self.dev = dev
        self.job = job
        self.index = index
        self.stop = stop
        lbs = int(dev.block_size)
        if job.bs % lbs:
            raise ValueError(f"bs {job.bs} is not a multiple of the block size {lbs}")
        if job.offset % lbs:
            raise ValueError(f"offset {job.offset} is not a multiple of the block size {lbs}")
        size = int(dev.size)
        span = job.span if job.span is not None else size - job.offset
        if job.offset + span > size:
            raise ValueError(f"offset {job.offset} + span {span} is beyond the device's {size} bytes")
        units = span // job.bs // job.numjobs
        if units < 1:
            raise ValueError(f"a span of {span} bytes holds no {job.bs}-byte block for each of {job.numjobs} jobs")
        self.lbs = lbs
        self.bsb = job.bs // lbs  # logical blocks per I/O
        self.units = units
        self.base_lba = job.offset // lbs + index * units * self.bsb
        self.rng = random.Random(f"{job.seed}:{job.name}:{index}")
        self.read_pct = job.read_percent
        self.random = job.random
        self.limit = job.size if job.size is not None else (None if job.runtime is not None else units * job.bs)
        self.verify = job.verify
        self.expected: array | None = None
        if job.verify and job.writes:
            self.expected = array("q", [-1]) * (units * self.bsb)
        self.busy: set[int] = set()
        self._perm: tuple[int, ...] = ()
        self._perm_x = 0
        self._perm_left = 0
        self.seq = 0
        self.pos = 0
        self.issued = 0
        self.read = DirectionResult()
        self.write = DirectionResult()
        self.read_lat = array("q")
        self.write_lat = array("q")
        self.error: str | None = None
        self.verified = 0
        self.verify_errors: list[VerifyError] = []
        self.verify_error_count = 0
        self.pattern = b""
        if job.verify:
            self.pattern = random.Random(job.seed).randbytes(_PATTERN_SIZE + lbs)

    # -- what to do next

    def _next_main(self) -> tuple[bool, int] | None:
        job = self.job
        if self.limit is not None and self.issued >= self.limit:
            return None
        self.issued += job.bs
        rng = self.rng
        pct = self.read_pct
        is_read = pct == 100 or (pct and rng.random() * 100 < pct)
        if self.random:
            unit = self._random_unit()
            if self.verify:
                while unit in self.busy:
                    unit = self._random_unit()
        else:
            unit = self.pos
            if self.verify:
                while unit in self.busy:
                    unit = (unit + 1) % self.units
            self.pos = (unit + 1) % self.units
        return bool(is_read), unit

    def _random_unit(self) -> int:
        """The next unit of the pass's random order: a full-period LCG
        modulo 2^k >= units (Hull-Dobell: c odd, a = 1 mod 4) visits every
        value once per 2^k steps; an odd multiply, a xorshift and another
        odd multiply (bijections modulo 2^k) scramble its weak low bits;
        values beyond the last unit are skipped."""
        units = self.units
        if units == 1:
            return 0
        while True:
            if not self._perm_left:
                rng = self.rng
                bits = (units - 1).bit_length()
                m = 1 << bits
                self._perm = (m - 1, bits, 4 * rng.randrange(max(1, m >> 2)) + 1, 2 * rng.randrange(m >> 1) + 1,
                              2 * rng.randrange(m >> 1) + 1, 2 * rng.randrange(m >> 1) + 1)
                self._perm_x = rng.randrange(m)
                self._perm_left = m
            mask, bits, a, c, b1, b2 = self._perm
            x = self._perm_x = (a * self._perm_x + c) & mask
            self._perm_left -= 1
            y = (x * b1) & mask
            y ^= y >> (bits // 2 + 1)
            y = (y * b2) & mask
            if y < units:
                return y

    # -- verify

    def _fill(self, slot: _Slot) -> None:
        """Headers, pattern and CRCs for the blocks of a write."""
        self.seq += 1
        seq = self.seq
        lbs = self.lbs
        mv, pat, crcs = slot.mv, self.pattern, slot.crcs
        body = lbs - HEADER_SIZE
        seed = self.job.seed & 0xFFFFFFFFFFFFFFFF
        for i in range(self.bsb):
            o = i * lbs
            lba = slot.lba + i
            k = (lba * 2654435761 + seq * 40503) % _PATTERN_SIZE
            mv[o + HEADER_SIZE:o + lbs] = pat[k:k + body]
            _HEADER.pack_into(mv, o, MAGIC, 0, lba, seed, seq)
            crc = crc32c(mv[o + _CRC_OFFSET:o + lbs])
            struct.pack_into("<I", mv, o + 4, crc)
            crcs[i] = crc

    def _mismatch(self, lba: int, reason: str) -> None:
        self.verify_error_count += 1
        if len(self.verify_errors) < MAX_RECORDED_ERRORS:
            self.verify_errors.append(VerifyError(lba, reason, self.job.name))

    def _check(self, slot: _Slot) -> None:
        """Check the blocks a read brought back."""
        lbs = self.lbs
        mv = slot.mv
        expected = self.expected
        first = (slot.lba - self.base_lba)
        seed = self.job.seed & 0xFFFFFFFFFFFFFFFF
        for i in range(self.bsb):
            want = -1
            if expected is not None:
                want = expected[first + i]
                if want < 0:
                    continue  # this job never wrote it: nothing to compare with
            lba = slot.lba + i
            o = i * lbs
            self.verified += 1
            magic, crc, hlba, hseed, _seq = _HEADER.unpack_from(mv, o)
            if magic != MAGIC:
                self._mismatch(lba, f"no verify header (magic {magic:#010x}, expected {MAGIC:#010x})")
            elif hlba != lba:
                self._mismatch(lba, f"header names LBA {hlba}")
            elif hseed != seed:
                self._mismatch(lba, f"written with seed {hseed}, expected {seed}")
            else:
                actual = crc32c(mv[o + _CRC_OFFSET:o + lbs])
                if actual != crc:
                    self._mismatch(lba, f"CRC32C {actual:#010x} of the contents, header says {crc:#010x}")
                elif want >= 0 and crc != want:
                    self._mismatch(lba, f"stale data: CRC32C {crc:#010x}, last write had {want:#010x}")

    # -- the I/O loop

    def _pipeline(self, next_io: Callable[[], tuple[bool, int] | None],
                  on_complete: Callable[[_Slot], None], deadline_ns: int | None) -> None:
        """Keep up to iodepth I/Os in flight until next_io() says stop, the
        deadline passes or an I/O fails; return when all have completed."""
        dev = self.dev
        done_q: deque = deque()
        depth = self.job.iodepth
        if self.verify:
            depth = min(depth, self.units)
        # I/O buffers the device maps without a copy where it has them (fio's
        # buffers with O_DIRECT: PCIe DMA memory; plain memory otherwise).
        ctrl = getattr(getattr(dev, "ns", None), "ctrl", None)
        alloc = getattr(ctrl, "alloc_buffer", None)
        release = getattr(ctrl, "free_buffer", None)
        bufs = [alloc(self.job.bs) for _ in range(depth)] if alloc is not None and release is not None else []
        try:
            free = [_Slot(self.job.bs, self.bsb, done_q, bufs[i] if bufs else None) for i in range(depth)]
            self._pipeline_run(free, done_q, next_io, on_complete, deadline_ns)
        finally:
            for buf in bufs:
                release(buf)

    def _pipeline_run(self, free: list, done_q: deque, next_io: Callable[[], tuple[bool, int] | None],
                      on_complete: Callable[[_Slot], None], deadline_ns: int | None) -> None:
        dev = self.dev
        submit = dev.submit
        readinto = submit.readinto_blocks
        write = submit.write_blocks
        clock = time.perf_counter_ns
        plug = getattr(dev, "plug", None)
        pending: deque = deque()
        busy = self.busy
        verify = self.verify
        base, bsb = self.base_lba, self.bsb
        inflight = 0
        stop = False
        stop_event = self.stop
        batch = self.job.iodepth_batch_submit
        while True:
            # The I/Os of one refill go out as one submission batch (a plug that
            # does not merge: each I/O stays the command fio would send), or
            # in batches of iodepth_batch_submit.
            # The deadline and the stop event are looked at once per refill.
            if free and not stop and ((deadline_ns is not None and clock() >= deadline_ns)
                                      or (stop_event is not None and stop_event.is_set())):
                stop = True
            with plug(merge=False) if plug is not None and len(free) > 1 else nullcontext():
                room = batch or len(free)
                while free and not stop and room:
                    if self.error is not None:
                        stop = True
                        break
                    room -= 1
                    item = next_io()
                    if item is None:
                        stop = True
                        break
                    slot = free.pop()
                    slot.is_read, slot.unit = item
                    slot.lba = lba = base + slot.unit * bsb
                    if verify:
                        busy.add(slot.unit)
                        if not slot.is_read:
                            self._fill(slot)
                    slot.end = 0
                    slot.start = clock()
                    try:
                        io = readinto(lba, slot.mv) if slot.is_read else write(lba, slot.mv)
                    except Exception as exc:  # noqa: BLE001 - refused before any command went out
                        self.error = f"{'read' if slot.is_read else 'write'} at LBA {lba}: {exc}"
                        busy.discard(slot.unit)
                        free.append(slot)
                        stop = True
                        break
                    slot.io = io
                    io.add_done_callback(slot.on_done)
                    pending.append(io)
                    inflight += 1
            if batch and free and not stop and not room:
                continue  # the refill's next batch
            if not inflight:
                return
            if not done_q:
                while pending and pending[0].done:
                    pending.popleft()
                if pending:
                    pending[0].wait()
                else:
                    time.sleep(0)  # done, the callbacks are running in another thread
                continue
            while done_q:
                slot = done_q.popleft()
                inflight -= 1
                exc = slot.io.exception(0)
                if exc is not None:
                    if self.error is None:
                        self.error = f"{'read' if slot.is_read else 'write'} at LBA {slot.lba}: {exc}"
                else:
                    on_complete(slot)
                slot.io = None
                if verify:
                    busy.discard(slot.unit)
                free.append(slot)

    def _main_done(self, slot: _Slot) -> None:
        lat = slot.end - slot.start
        if slot.is_read:
            self.read.ios += 1
            self.read_lat.append(lat)
            if self.verify:
                self._check(slot)
        else:
            self.write.ios += 1
            self.write_lat.append(lat)
            expected = self.expected
            if expected is not None:
                first = slot.lba - self.base_lba
                for i, crc in enumerate(slot.crcs):
                    expected[first + i] = crc

    def _verify_pass(self) -> None:
        """Read back every unit this job wrote and check it."""
        expected = self.expected
        if expected is None:
            return
        bsb = self.bsb
        units = iter([u for u in range(self.units) if any(c >= 0 for c in expected[u * bsb:(u + 1) * bsb])])

        def next_io() -> tuple[bool, int] | None:
            u = next(units, None)
            return None if u is None else (True, u)

        self._pipeline(next_io, self._check, None)

    def run(self, barrier: threading.Barrier | None = None) -> JobResult:
        if barrier is not None:
            barrier.wait()
        job = self.job
        start = time.perf_counter_ns()
        deadline = None if job.runtime is None else start + int(job.runtime * 1e9)
        try:
            self._pipeline(self._next_main, self._main_done, deadline)
        except Exception as exc:  # noqa: BLE001 - reported in the result, like fio's err=
            self.error = self.error or f"{type(exc).__name__}: {exc}"
        end = time.perf_counter_ns()
        runtime = max(1, end - start)
        for d, lat in ((self.read, self.read_lat), (self.write, self.write_lat)):
            d.io_bytes = d.ios * job.bs
            d.runtime_ns = runtime
            d.lat_ns = sorted(lat)
        stopped = self.stop is not None and self.stop.is_set()
        if job.verify and job.do_verify and self.error is None and not stopped:
            try:
                self._verify_pass()
            except Exception as exc:  # noqa: BLE001
                self.error = self.error or f"verify: {type(exc).__name__}: {exc}"
        return JobResult(job=job, index=self.index, read=self.read, write=self.write, runtime_ns=runtime,
                         error=self.error, verified_blocks=self.verified, verify_errors=self.verify_errors,
                         verify_error_count=self.verify_error_count)


def run_jobs(dev: Any, jobs: Job | Iterable[Job], *, stop: threading.Event | None = None) -> BenchResult:
    """Run the jobs side by side on ``dev`` (a BlockDevice), every copy of
    every job (``numjobs``) in its own thread (a single copy runs in the
    calling thread), started together; returns when all have finished
    (including their verify pass).  Setting ``stop`` (fio's Ctrl-C) ends
    every job early: no new I/O is issued, those in flight complete, the
    verify pass is skipped and the results so far are returned."""
    if isinstance(jobs, Job):
        jobs = [jobs]
    runners = [_Runner(dev, job, i, stop) for job in jobs for i in range(job.numjobs)]
    if not runners:
        raise ValueError("no jobs to run")
    stamp = time.time()
    if len(runners) == 1:
        results = [runners[0].run()]
    else:
        barrier = threading.Barrier(len(runners))
        results_by: dict[int, JobResult] = {}
        failures: list[BaseException] = []

        def body(k: int, r: _Runner) -> None:
            try:
                results_by[k] = r.run(barrier)
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=body, args=(k, r), name=f"bench-{r.job.name}.{r.index}", daemon=True)
                   for k, r in enumerate(runners)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        results = [results_by[k] for k in range(len(runners))]
    return BenchResult(device=getattr(dev, "name", "?"), jobs=results, timestamp=stamp)


def run(dev: Any, **options: Any) -> BenchResult:
    """One job from fio-style keyword options: ``run(dev, rw="randread", bs=4096, iodepth=32, runtime=5)``."""
    return run_jobs(dev, Job(**options))

