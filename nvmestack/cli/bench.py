"""``nvmestack bench``: a workload generator in the spirit of fio, over any
device the command line can open (a registered ``nvme0n1``, a
``tcp://ADDR/NQN?nsid=N`` address, a drive directory with ``-n``).

The options keep fio's names (``--rw``, ``--bs``, ``--iodepth``,
``--numjobs``, ``--runtime``, ``--time_based``, ``--size``, ``--io_size``,
``--offset``, ``--rwmixread``, ``--verify``, ``--do_verify``,
``--randseed``, ``--output-format``, ``--output``) and fio's meaning where
the engine (:mod:`nvmestack.bench.workload`) allows it; the JSON report
follows fio's ``--output-format=json`` layout (``jobs[].read`` /
``write`` with ``io_bytes``, ``bw_bytes``, ``iops``, ``lat_ns`` with
``percentile``).  Differences from fio, on purpose:

* ``--size`` is the region ``[offset, offset + size)`` shared by all
  ``numjobs`` copies, split evenly between them (fio gives every job its own
  ``size`` over the same region unless ``offset_increment`` is set);
* latency is submission to completion (fio's ``lat``), and the percentiles
  are of that latency (fio's ``lat_percentiles=1``);
* ``--output FILE`` writes the JSON report to FILE whatever
  ``--output-format`` says, and standard output still gets the report in
  that format (fio writes only to FILE).

Like fio, write workloads overwrite the region without asking.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import textwrap
import threading
import time
from typing import Any

from .common import CliError, command, number

__all__ = ["StatusLine", "parse_runtime", "resolve_namespace"]

RW_CHOICES = ("read", "write", "randread", "randwrite", "rw", "readwrite", "randrw")


# ---------------------------------------------------------------------------
# option values


def parse_runtime(text: str) -> float:
    """fio's time values: seconds by default, or with a unit (``us``,
    ``ms``, ``s``, ``m``, ``h``, ``d``); fractions accepted (``0.3``)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|usec|ms|msec|s|sec|m|min|h|d)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"expected a time (e.g. 5, 0.5, 500ms, 2m) but got {text!r}")
    scale = {None: 1.0, "s": 1.0, "sec": 1.0, "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
             "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}[m.group(2)]
    value = float(m.group(1)) * scale
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the time must be positive, not {text!r}")
    return value


def _positive(text: str) -> int:
    value = number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number but got {text!r}")
    return value


def _percent(text: str) -> int:
    value = number(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"expected a percentage (0-100) but got {text!r}")
    return value


def _bool01(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 0 or 1 but got {text!r}")


def _wrap(text: str) -> str:
    """Fill each paragraph to 79 columns (the help keeps the paragraphs)."""
    return "\n\n".join(par if par.startswith(" ") else textwrap.fill(" ".join(par.split()), 79)
                         for par in text.split("\n\n"))


# ---------------------------------------------------------------------------
# the parser


_DESCRIPTION = """\
Run a fio-like workload on a namespace and report IOPS, bandwidth and latency percentiles \
(p50/p99/p99.9), as text or as fio-shaped JSON.

DEVICE is a namespace (nvme0n1, tcp://ADDR[:PORT]/NQN?nsid=N) or a controller (nvme0, tcp://..., a drive \
directory) with -n/--namespace-id; a controller with a single namespace needs no -n.

WARNING: like fio, write workloads (write, randwrite, rw, randrw) overwrite the data in the region \
[offset, offset + size) of the namespace without asking.

--size is the region shared by all --numjobs copies (split evenly between them); without --runtime each \
copy goes through its slice once; with --runtime the run stops when the runtime is up or the slices are \
done, and with --time_based it goes on until the runtime is up.  --verify writes a header with a CRC32C \
in every block and checks it when read back (after the writes, unless --do_verify 0) or when a later \
read job with --verify and the same --randseed reads the region; any mismatch ends with exit status 1."""


@command("bench", "run a fio-like workload and report IOPS, bandwidth and latency",
         description=_wrap(_DESCRIPTION))
def _bench_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("device", metavar="DEVICE", help="namespace or controller (see above)")
    p.add_argument("-n", "--namespace-id", type=_positive, metavar="NSID", help="namespace to use")
    p.add_argument("--name", default="bench", help="job name (default: bench)")
    p.add_argument("--rw", "--readwrite", dest="rw", default="read", metavar="MODE",
                   help=f"I/O pattern: {'|'.join(RW_CHOICES)} (default: read)")
    p.add_argument("--rwmixread", type=_percent, metavar="PCT", help="percentage of reads in rw/randrw (default 50)")
    p.add_argument("--rwmixwrite", type=_percent, metavar="PCT", help="percentage of writes in rw/randrw")
    p.add_argument("--bs", "--blocksize", dest="bs", type=_positive, default=4096, metavar="BYTES",
                   help="block size of each I/O, e.g. 4k, 128k (default: 4k)")
    p.add_argument("--iodepth", type=_positive, default=1, metavar="N", help="I/Os in flight per job (default: 1)")
    p.add_argument("--iodepth_batch_submit", "--iodepth_batch", "--iodepth-batch-submit", dest="iodepth_batch_submit",
                   type=int, default=0, metavar="N",
                   help="I/Os submitted together (one plug, one doorbell or send); 0: every free slot at once "
                        "(default: 0)")
    p.add_argument("--numjobs", type=_positive, default=1, metavar="N",
                   help="copies of the job, each in its own thread with its own I/O queue (default: 1)")
    p.add_argument("--runtime", type=parse_runtime, metavar="TIME", help="stop after TIME (seconds, or 500ms, 2m ...)")
    p.add_argument("--time_based", "--time-based", dest="time_based", action="store_true",
                   help="run for the whole --runtime, going over the region again as needed")
    p.add_argument("--size", type=_positive, metavar="BYTES",
                   help="size of the region, shared by the jobs (default: from --offset to the end)")
    p.add_argument("--io_size", "--io-size", "--io_limit", dest="io_size", type=_positive, metavar="BYTES",
                   help="bytes of I/O per job (default: its share of the region, once)")
    p.add_argument("--offset", type=number, default=0, metavar="BYTES", help="start of the region (default: 0)")
    p.add_argument("--verify", nargs="?", const="crc32c", metavar="crc32c",
                   help="per-block headers with a CRC32C, checked when read back")
    p.add_argument("--do_verify", "--do-verify", dest="do_verify", type=_bool01, default=True, metavar="0|1",
                   help="after writing, read back and check what was written (default: 1)")
    p.add_argument("--randseed", "--seed", dest="seed", type=number, default=0, metavar="N",
                   help="seed of the random offsets and of the verify pattern (default: 0)")
    p.add_argument("--hipri", action="store_true",
                   help="polled I/O (as fio's hipri): the job's thread polls a queue of its own for completions "
                        "instead of being woken by the queue's receive thread (a drive's device runs inline)")
    p.add_argument("-o", "--output-format", default="normal", metavar="FMT", help="normal|json (default: normal)")
    p.add_argument("--output", metavar="FILE", help="also write the JSON report to FILE")
    p.set_defaults(func=run_bench)


# ---------------------------------------------------------------------------
# the namespace


def resolve_namespace(dev: Any, nsid: int | None) -> Any:
    """The HostNamespace the command names: ``nsid`` (from -n, or the
    device name), else the controller's only namespace."""
    namespaces = dev.ctrl.namespaces
    if nsid is None:
        if len(namespaces) == 1:
            return next(iter(namespaces.values()))
        if not namespaces:
            raise CliError(f"{dev.name}: the controller has no active namespace")
        listed = ", ".join(str(n) for n in sorted(namespaces))
        raise CliError(f"{dev.name}: the controller has namespaces {listed}: choose one with -n/--namespace-id")
    ns = namespaces.get(nsid)
    if ns is None:
        raise CliError(f"{dev.name}: no active namespace {nsid}")
    return ns


def _device_label(dev: Any, nsid: int) -> str:
    spec = dev.spec
    if spec.registered:
        return f"{spec.name}n{nsid}"
    if spec.transport == "tcp":
        base = spec.name.split("?", 1)[0]
        return f"{base}?nsid={nsid}"
    return f"{spec.name} (nsid {nsid})"


# ---------------------------------------------------------------------------
# the job


def _make_job(args: argparse.Namespace, block: Any) -> Any:
    from ..bench.workload import Job

    rw = args.rw
    if rw not in RW_CHOICES:
        raise CliError(f"bench: --rw {rw!r}: expected one of {', '.join(RW_CHOICES)}")
    if args.verify is not None and args.verify.lower() not in ("crc32c", "crc32c-intel", "1"):
        raise CliError(f"bench: --verify={args.verify}: only crc32c is supported")
    if args.rwmixread is not None and args.rwmixwrite is not None and args.rwmixread + args.rwmixwrite != 100:
        raise CliError("bench: --rwmixread and --rwmixwrite do not add up to 100")
    rwmixread = args.rwmixread if args.rwmixread is not None else (
        100 - args.rwmixwrite if args.rwmixwrite is not None else 50)
    if args.time_based and args.runtime is None:
        raise CliError("bench: --time_based needs --runtime")
    devsize = block.size
    offset = args.offset
    if offset >= devsize:
        raise CliError(f"bench: --offset {offset} is beyond the namespace's {devsize} bytes")
    span = args.size if args.size is not None else devsize - offset
    if offset + span > devsize:
        raise CliError(f"bench: --offset {offset} + --size {span} is beyond the namespace's {devsize} bytes")
    if args.time_based:
        limit = None  # until the runtime is up
    elif args.io_size is not None:
        limit = args.io_size
    elif args.runtime is not None:
        # fio: the runtime or the region done once, whichever comes first
        limit = max(1, span // args.bs // args.numjobs) * args.bs
    else:
        limit = None  # the engine's default: each copy's slice once
    try:
        return Job(name=args.name, rw=rw, bs=args.bs, iodepth=args.iodepth, numjobs=args.numjobs,
                   iodepth_batch_submit=args.iodepth_batch_submit,
                   runtime=args.runtime, size=limit, offset=offset, span=span, rwmixread=rwmixread,
                   verify=args.verify is not None, do_verify=args.do_verify, seed=args.seed)
    except ValueError as exc:
        raise CliError(f"bench: {exc}") from None


# ---------------------------------------------------------------------------
# the status line (fio's "Jobs: 1 (f=1): [r(1)][40.0%][r=215MiB/s][r=55.0k IOPS][eta 00m:03s]")


def _rw_letter(job: Any) -> str:
    """fio's run-state letter: R/W/M sequential read/write/mixed, r/w/m random."""
    pct = job.read_percent
    letter = "r" if pct == 100 else "w" if pct == 0 else "m"
    return letter if job.random else letter.upper()


class StatusLine:
    """fio's one-line status on standard error, redrawn about twice a second
    while the jobs run; drawn only when the stream is a terminal and
    ``enabled`` (never in JSON mode), erased at the end."""

    INTERVAL = 0.5

    def __init__(self, block: Any, job: Any, *, enabled: bool = True, stream: Any = None,
                 clock=time.monotonic):
        from ..bench.workload import _bytes, _num

        self._bytes, self._num = _bytes, _num
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(enabled and isatty is not None and isatty() and os.environ.get("TERM") != "dumb")
        self.block = block
        self.job = job
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._width = 0
        self._start = 0.0
        self._first = None
        self._last = None

    def _total_bytes(self) -> int | None:
        job = self.job
        if job.size is not None:
            return job.size * job.numjobs
        if job.runtime is None:
            per_copy = (job.span or self.block.size - job.offset) // job.bs // job.numjobs * job.bs
            return per_copy * job.numjobs
        return None

    def line(self, now: float, stats: Any) -> str:
        """The status text for ``stats`` (an IoStats snapshot) at ``now``."""
        job = self.job
        elapsed = now - self._start
        first, last = self._first, self._last or (self._start, self._first)
        dt = max(1e-9, now - last[0])
        prev = last[1]
        rb = (stats.read_sectors - prev.read_sectors) * 512 / dt
        wb = (stats.write_sectors - prev.write_sectors) * 512 / dt
        ri = (stats.read_ios - prev.read_ios) / dt
        wi = (stats.write_ios - prev.write_ios) / dt
        done = (stats.read_sectors + stats.write_sectors - first.read_sectors - first.write_sectors) * 512
        fracs = []
        if job.runtime is not None:
            fracs.append(elapsed / job.runtime)
        total = self._total_bytes()
        if total:
            fracs.append(done / total)
        frac = min(0.999, max(fracs)) if fracs else 0.0
        eta = ""
        if fracs and frac > 0:
            left = max(0.0, elapsed / frac - elapsed)
            if job.runtime is not None:
                left = min(left, max(0.0, job.runtime - elapsed))
            secs = math.ceil(left)
            eta = f"[eta {secs // 60:02d}m:{secs % 60:02d}s]"
        bw, iops = [], []
        if job.read_percent:
            bw.append(f"r={self._bytes(rb)}/s")
            iops.append(f"r={self._num(ri)}")
        if job.read_percent < 100 or job.verify:
            bw.append(f"w={self._bytes(wb)}/s")
            iops.append(f"w={self._num(wi)}")
        n = job.numjobs
        return (f"Jobs: {n} (f={n}): [{_rw_letter(job)}({n})][{frac * 100:.1f}%][{','.join(bw)}]"
                f"[{','.join(iops)} IOPS]{eta}")

    def _draw(self) -> None:
        now = self.clock()
        stats = self.block.stats()
        text = self.line(now, stats)
        self._last = (now, stats)
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            try:
                self._draw()
            except Exception:  # noqa: BLE001 - the status line must never end a run
                return

    def start(self) -> StatusLine:
        self._start = self.clock()
        if self.enabled:
            self._first = self.block.stats()
            self._last = (self._start, self._first)
            self._thread = threading.Thread(target=self._loop, name="bench-status", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()


# ---------------------------------------------------------------------------
# output


def dumps_json(obj: Any) -> str:
    """fio's JSON layout (``"key" : value``, two-space indent)."""
    return json.dumps(obj, indent=2, separators=(",", " : ")) + "\n"


def _header(job: Any, label: str) -> str:
    from ..bench.workload import _bytes

    mix = f", rwmixread={job.rwmixread}" if 0 < job.read_percent < 100 else ""
    verify = ", verify=crc32c" if job.verify else ""
    n = job.numjobs
    return (f"{job.name}: (g=0): rw={job.rw}{mix}, bs={_bytes(job.bs)}, iodepth={job.iodepth}, "
            f"ioengine=nvmestack{verify}\n"
            f"Starting {n} thread{'s' if n > 1 else ''} on {label}\n")


def _run_jobs(block: Any, job: Any, stop: threading.Event) -> Any:
    """run_jobs in a worker thread, so that Ctrl-C in the main thread stops
    the jobs (and their I/Os complete) rather than abandoning them."""
    from ..bench.workload import run_jobs

    box: dict[str, Any] = {}
    done = threading.Event()

    def body() -> None:
        try:
            box["result"] = run_jobs(block, job, stop=stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=body, name="bench", daemon=True)
    worker.start()
    interrupted = False
    # Event.wait, not Thread.join: a join interrupted by Ctrl-C may leave the
    # thread looking finished while it is not.
    while not done.is_set():
        try:
            done.wait(0.2)
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
    worker.join()
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, ValueError):
            raise CliError(f"bench: {exc}") from None
        raise exc
    box["result"].interrupted = interrupted
    return box["result"]


def run_bench(args: argparse.Namespace) -> int:
    from ..host.block import BlockDevice
    from .devices import open_device, parse_device

    fmt = args.output_format
    if fmt == "json+":
        fmt = "json"
    if fmt not in ("normal", "json"):
        raise CliError(f"Invalid output format: {fmt}")
    if args.rw not in RW_CHOICES:
        raise CliError(f"bench: --rw {args.rw!r}: expected one of {', '.join(RW_CHOICES)}")
    spec = parse_device(args.device)
    nsid = args.namespace_id if args.namespace_id is not None else spec.nsid
    out_file = None
    if args.output:
        try:
            out_file = open(args.output, "w")
        except OSError as exc:
            raise CliError(f"bench: {args.output}: {exc.strerror or exc}") from None
    try:
        queues = {"io_queues": args.numjobs}
        if args.hipri:
            # Polled: the job's thread reaps its own queue; a drive's function
            # then runs inline too (in the thread that rings its doorbells),
            # so no other thread is woken for an I/O.
            queues.update(poll_queues=args.numjobs, drive_mode="inline")
        with open_device(spec, **queues) as dev:
            ns = resolve_namespace(dev, nsid)
            label = _device_label(dev, ns.nsid)
            block = BlockDevice(ns, name=label, polled=args.hipri)
            job = _make_job(args, block)
            if fmt == "normal":
                sys.stdout.write(_header(job, label))
                sys.stdout.flush()
            status = StatusLine(block, job, enabled=fmt == "normal").start()
            try:
                result = _run_jobs(block, job, threading.Event())
            finally:
                status.stop()
        report = result.as_dict()
        if fmt == "json":
            sys.stdout.write(dumps_json(report))
        else:
            sys.stdout.write(result.text())
        sys.stdout.flush()
        if out_file is not None:
            out_file.write(dumps_json(report))
    finally:
        if out_file is not None:
            out_file.close()
    rc = 0
    for line in result.errors:
        print(f"bench: {line}", file=sys.stderr)
        rc = 1
    if result.verify_error_count:
        first = result.verify_errors[0] if result.verify_errors else None
        where = f" (first: LBA {first.lba}: {first.reason})" if first else ""
        print(f"bench: verify failed: {result.verify_error_count} bad block"
              f"{'s' if result.verify_error_count != 1 else ''}{where}", file=sys.stderr)
        rc = 1
    if getattr(result, "interrupted", False):
        print("bench: interrupted", file=sys.stderr)
        rc = rc or 130
    return rc
