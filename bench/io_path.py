"""The I/O path against this machine's limits, in one run (issue 11).

Everything is pinned: the server side (our target, or the native tool's
server) to CPU 0, the client side to CPU 1.  Measured:

* the machine: sockperf TCP ping-pong (72-byte messages, the size of a
  command capsule) and iperf3 one-stream throughput on loopback, and fio
  reading the namespace's backing file directly (4 KiB random, psync, QD1
  per job, and 128 KiB sequential): what the network and the backend allow;
* ``nvmestack serve`` (the NVMe/TCP target) driven by a native initiator
  (``--perf PATH`` to SPDK's spdk_nvme_perf, when you have built one) or by
  ``bench/nvmf_load.py``, a lean Python initiator that costs less per
  command than the target: 4 KiB random read QD32 and QD1, 4 KiB random
  write QD32, 128 KiB sequential read QD8, each with the fast path and with
  every command on the general path (``NVMESTACK_FAST_PATH=0``); the
  target's CPU microseconds per command come from its own CPU time;
* our host: ``nvmestack bench`` against the same target (4 KiB random read
  QD32) with a completion thread (each refill sent at once, and in batches
  of 16: fio's ``--iodepth_batch_submit``), polled (``--hipri``), and polled with SQ
  flow control disabled (``?disable_sqflow``: no response capsule after a
  read's data), its CPU microseconds per command from its own CPU time
  (the process's start and end excluded);
* an emulated PCIe drive through our host (``nvmestack bench`` on a drive
  directory, host and device in one process), 4 KiB random read QD32, with
  and without ``--hipri``.

``--baseline DIR`` (another checkout, e.g. ``git worktree add DIR <commit>``)
adds that checkout's target, its host (against this checkout's target) and
its PCIe drive, for a before/after in one run.

* worker processes: ``serve`` and ``serve --workers 2``, unpinned, each
  driven by two nvmf_load.py processes at once (4 KiB random read QD32):
  whether the target uses the second core.

Each figure is measured ``--repeat`` times; min and median are printed.
Prints a table; asserts nothing.  Needs Debian's sockperf, iperf3 and fio
(``./install.sh --bench``); a missing tool's rows say so.

    .venv/bin/python bench/io_path.py [--seconds 5] [--repeat 3] [--perf PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nvmf_load  # noqa: E402
from cli_figures import free_port, wait_listening  # noqa: E402

NQN = "nqn.2026-11.io.nvmestack:default"
NVMESTACK = [sys.executable, "-m", "nvmestack"]
SERVER_CPU, CLIENT_CPU = "0", "1"
SPAN = 256 << 20  # bytes of the namespace the workloads address (written first)

TARGET_WORKLOADS = (
    ("4 KiB random read QD32", dict(rw="randread", bs=4096, qd=32)),
    ("4 KiB random write QD32", dict(rw="randwrite", bs=4096, qd=32)),
    ("4 KiB random read QD1", dict(rw="randread", bs=4096, qd=1)),
    ("128 KiB sequential read QD8", dict(rw="read", bs=131072, qd=8)),
)


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd]


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "-"
    return f"{fmt.format(min(values))} / {fmt.format(statistics.median(values))}"


# -- the machine -------------------------------------------------------------------------


def sockperf(seconds: float) -> tuple[float | None, float | None]:
    """(ping-pong p50 latency us for 72 bytes, throughput GB/s for 64 KiB messages)."""
    if not shutil.which("sockperf"):
        return None, None
    port = free_port()
    server = subprocess.Popen(pinned(SERVER_CPU, ["sockperf", "sr", "--tcp", "-i", "127.0.0.1", "-p", str(port)]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        out = subprocess.run(pinned(CLIENT_CPU, ["sockperf", "pp", "--tcp", "-i", "127.0.0.1", "-p", str(port),
                                                 "-t", str(int(seconds)), "-m", "72"]),
                             capture_output=True, text=True).stdout
        p50 = re.search(r"percentile 50\.000 =\s+([\d.]+)", out)
        out = subprocess.run(pinned(CLIENT_CPU, ["sockperf", "tp", "--tcp", "-i", "127.0.0.1", "-p", str(port),
                                                 "-t", str(int(seconds)), "-m", "65000"]),
                             capture_output=True, text=True).stdout
        bw = re.search(r"BandWidth is ([\d.]+) MBps", out)
        # sockperf's MBps are MiB per second
        return (float(p50.group(1)) if p50 else None), (float(bw.group(1)) * (1 << 20) / 1e9 if bw else None)
    finally:
        server.kill()
        server.wait()


def iperf3(seconds: float) -> float | None:
    """One TCP stream on loopback, GB/s."""
    if not shutil.which("iperf3"):
        return None
    port = free_port()
    server = subprocess.Popen(pinned(SERVER_CPU, ["iperf3", "-s", "-p", str(port)]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        time.sleep(0.2)
        out = subprocess.run(pinned(CLIENT_CPU, ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t",
                                                 str(int(seconds)), "-J"]), capture_output=True, text=True).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 8e9
    except (ValueError, KeyError):
        return None
    finally:
        server.kill()
        server.wait()


def fio_file(path: str, seconds: float, rw: str, bs: str) -> dict | None:
    """fio reading the backing file itself (psync, one job, CPU 0)."""
    if not shutil.which("fio"):
        return None
    out = subprocess.run(pinned(SERVER_CPU, ["fio", "--name=backend", f"--filename={path}", f"--rw={rw}",
                                             f"--bs={bs}", "--ioengine=psync", f"--size={SPAN}", "--time_based",
                                             f"--runtime={seconds}", "--output-format=json"]),
                         capture_output=True, text=True).stdout
    try:
        job = json.loads(out)["jobs"][0]["read"]
    except (ValueError, KeyError, IndexError):
        return None
    return {"iops": job["iops"], "gbs": job["bw_bytes"] / 1e9}


# -- the target -------------------------------------------------------------------------


class Serve:
    """``nvmestack serve`` on CPU 0 with its own data directory."""

    def __init__(self, tmp: str, *, fast: bool, source: str | None = None, data_dir: str = "serve",
                 workers: int = 0, pin: bool = True):
        self.port = free_port()
        env = dict(os.environ, NVMESTACK_STATE_DIR=os.path.join(tmp, "state"),
                   NVMESTACK_FAST_PATH="1" if fast else "0")
        if source:  # another checkout's nvmestack (--baseline)
            env["PYTHONPATH"] = os.path.abspath(source)
        env.pop("NVMESTACK_TRACE", None)
        self.data_dir = os.path.join(tmp, data_dir)
        cmd = NVMESTACK + ["serve", "--port", str(self.port), "--discovery-port", str(free_port()),
                           "--data-dir", self.data_dir] + (["--workers", str(workers)] if workers else [])
        self.proc = subprocess.Popen(
            pinned(SERVER_CPU, cmd) if pin else cmd,
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=os.path.abspath(source) if source else None)  # -m puts the working directory first on the path
        wait_listening(self.port)
        self.env = env

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load(serve: Serve, seconds: float, **workload) -> dict:
    """nvmf_load.py on CPU 1 in its own process; adds the target's CPU us per command."""
    cmd = pinned(CLIENT_CPU, [sys.executable, os.path.join(os.path.dirname(__file__), "nvmf_load.py"),
                              "127.0.0.1", str(serve.port), NQN, "--rw", workload["rw"], "--bs", str(workload["bs"]),
                              "--qd", str(workload["qd"]), "--seconds", str(seconds), "--span", str(SPAN)])
    before = cpu_seconds(serve.proc.pid)
    out = subprocess.run(cmd, capture_output=True, text=True)
    used = cpu_seconds(serve.proc.pid) - before
    if out.returncode:
        raise SystemExit(f"nvmf_load failed: {out.stderr.strip()}")
    rep = json.loads(out.stdout)
    rep["target_cpu_us"] = used / max(1, rep["commands"]) * 1e6
    return rep


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (serve's worker processes)."""
    total = cpu_seconds(pid)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def load_pair(serve: Serve, seconds: float, **workload) -> dict:
    """Two nvmf_load.py processes at once (two associations, an I/O queue
    each), nothing pinned: what a target using one core or both does."""
    cmd = [sys.executable, os.path.join(os.path.dirname(__file__), "nvmf_load.py"), "127.0.0.1", str(serve.port),
           NQN, "--rw", workload["rw"], "--bs", str(workload["bs"]), "--qd", str(workload["qd"]),
           "--seconds", str(seconds), "--span", str(SPAN)]
    before = tree_cpu_seconds(serve.proc.pid)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate() for p in procs]
    used = tree_cpu_seconds(serve.proc.pid) - before
    if any(p.returncode for p in procs):
        raise SystemExit(f"nvmf_load failed: {' '.join(err.strip() for _, err in outs)}")
    reps = [json.loads(out) for out, _ in outs]
    commands = sum(r["commands"] for r in reps)
    return {"iops": sum(r["iops"] for r in reps), "p50_us": statistics.median(r["p50_us"] for r in reps),
            "target_cpu_us": used / max(1, commands) * 1e6}


def spdk_perf(perf: str, serve: Serve, seconds: float, rw: str, bs: int, qd: int) -> dict | None:
    """SPDK's spdk_nvme_perf on CPU 1 (core mask 0x2), no hugepages."""
    trid = f"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{serve.port} subnqn:{NQN}"
    before = cpu_seconds(serve.proc.pid)
    out = subprocess.run([perf, "-r", trid, "-q", str(qd), "-o", str(bs), "-w", rw, "-t", str(int(seconds)),
                          "-c", "0x2", "--no-huge", "-s", "1024"], capture_output=True, text=True)
    used = cpu_seconds(serve.proc.pid) - before
    m = re.search(r"^Total\s*:\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)", out.stdout, re.M)
    if not m:
        print(f"  spdk_nvme_perf gave no figures: {out.stderr.strip()[-300:]}")
        return None
    iops = float(m.group(1))
    return {"iops": iops, "mb_s": float(m.group(2)), "p50_us": float(m.group(3)),
            "target_cpu_us": used / max(1.0, iops * seconds) * 1e6}


# Our host's configurations: (label, URL query added, bench options).  The
# URL options are nvme connect's (disable_sqflow: reads end with a C2HData
# carrying SUCCESS, no response capsule); --hipri is fio's polled I/O.
HOST_VARIANTS = (
    ("completion thread", "", []),
    ("completion thread, batches of 16", "", ["--iodepth_batch_submit", "16"]),
    ("polled (--hipri)", "", ["--hipri"]),
    ("polled, SQ flow control disabled", "&disable_sqflow", ["--hipri"]),
)
# The configurations an older checkout (--baseline) has too.
BASELINE_HOST_VARIANTS = (HOST_VARIANTS[0], HOST_VARIANTS[2])


# The PCIe drive's configurations: (label, bench options, CPU to pin to or
# None).  Host and device share one process; unpinned, its threads (the
# device's, the completion thread) may use both CPUs.
PCIE_VARIANTS = (
    ("completion thread", [], None),
    ("polled (--hipri)", ["--hipri"], None),
    ("polled (--hipri), pinned to CPU 1", ["--hipri"], CLIENT_CPU),
)


def our_bench(device: list[str], env: dict, seconds: float, args: list[str], cpu: str | None,
              source: str | None = None) -> dict:
    """``nvmestack bench`` (our host, or the one of the checkout ``source``)
    in its own process; adds its CPU us per command, without what the
    process spends before and after the I/O (the CPU time of the same
    command run for a moment, subtracted)."""
    if source:
        env = dict(env, PYTHONPATH=os.path.abspath(source))
    short = _bench_cpu(device, env, 0.01, args, cpu, source)[0]
    used, out = _bench_cpu(device, env, seconds, args, cpu, source)
    rd = json.loads(out)["aggregate"]["read"]
    ios = rd["total_ios"] if "total_ios" in rd else rd["iops"] * seconds
    return {"iops": rd["iops"], "p50_us": rd["lat_ns"]["percentile"]["50.000000"] / 1e3,
            "host_cpu_us": max(0.0, used - short) / max(1.0, ios) * 1e6}


def _bench_cpu(device: list[str], env: dict, seconds: float, args: list[str], cpu: str | None,
               source: str | None) -> tuple[float, str]:
    cmd = NVMESTACK + ["bench", *device, *args, "--runtime", str(seconds), "--time_based", "--size", str(SPAN),
                       "-o", "json"]
    proc = subprocess.Popen(pinned(cpu, cmd) if cpu else cmd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=os.path.abspath(source) if source else None)
    used = 0.0
    while proc.poll() is None:  # its CPU time just before it exits
        try:
            used = cpu_seconds(proc.pid)
        except (OSError, IndexError):
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)}: {err.strip()}")
    return used, out


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def idle_connections(serve: Serve, count: int = 1000) -> tuple[float, float]:
    """KiB of the target's memory per idle connection: (after ICReq only,
    after ICReq and an admin Connect, i.e. with its controller)."""
    import uuid

    conns = []
    try:
        base = rss_kib(serve.proc.pid)
        for _ in range(count):
            conns.append(nvmf_load._Conn("127.0.0.1", serve.port))
        time.sleep(0.5)
        bare = (rss_kib(serve.proc.pid) - base) / count
        for i, conn in enumerate(conns):
            host = uuid.UUID(int=i + 1)
            nvmf_load._connect(conn, NQN, 0, 31, 0xFFFF, host.bytes, f"nqn.2014-08.org.nvmexpress:uuid:{host}")
        time.sleep(0.5)
        connected = (rss_kib(serve.proc.pid) - base) / count
        return bare, connected
    finally:
        for conn in conns:
            conn.sock.close()


# -- the run ------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="runtime of each measurement (default 5)")
    ap.add_argument("--repeat", type=int, default=3, help="measurements per figure (default 3)")
    ap.add_argument("--perf", help="spdk_nvme_perf binary: drive the target with SPDK's initiator too")
    ap.add_argument("--baseline", metavar="DIR",
                    help="another checkout of nvmestack (e.g. a git worktree of an older commit): its serve is "
                         "measured too, as the 'baseline' path")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: machine,general,idle,host,workers,pcie")
    opts = ap.parse_args()
    skip = set(filter(None, opts.skip.split(",")))
    secs, rep = opts.seconds, opts.repeat
    try:
        import nvmestack._compiled as compiled  # noqa: F401
        build = "compiled modules"
    except ImportError:
        build = "plain Python modules"
    print(f"nvmestack I/O path, {secs:g} s x {rep} per figure (min / median), {os.cpu_count()} CPUs, "
          f"server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}, Python {sys.version.split()[0]}, {build}\n")
    with tempfile.TemporaryDirectory(prefix="nvmestack-io-path-") as tmp:
        limits: dict[str, list[float]] = {"pp": [], "tp": [], "iperf": [], "fio4k": [], "fio128k": []}
        results: dict[tuple[str, str], list[dict]] = {}
        serve = Serve(tmp, fast=True)
        try:
            # fill the region the reads address (so they read data, not holes)
            nvmf_load.run("127.0.0.1", serve.port, NQN, rw="write", bs=131072, qd=8, seconds=1e9,
                          span=SPAN, latencies=False, limit=SPAN // 131072)
            os.sync()  # no writeback of the fill competing with the first measurement
            data_file = next(os.path.join(dp, f) for dp, _, fs in os.walk(serve.data_dir) for f in fs
                             if f.endswith(".data"))
            for _ in range(rep):
                if "machine" not in skip:
                    pp, tp = sockperf(min(secs, 3))
                    if pp:
                        limits["pp"].append(pp)
                    if tp:
                        limits["tp"].append(tp)
                    bw = iperf3(min(secs, 3))
                    if bw:
                        limits["iperf"].append(bw)
                    for key, rw, bs in (("fio4k", "randread", "4k"), ("fio128k", "read", "128k")):
                        got = fio_file(data_file, min(secs, 3), rw, bs)
                        if got:
                            limits[key].append(got["iops"] if key == "fio4k" else got["gbs"])
                for label, workload in TARGET_WORKLOADS:
                    results.setdefault(("fast", label), []).append(load(serve, secs, **workload))
                    if opts.perf:
                        got = spdk_perf(opts.perf, serve, secs, workload["rw"], workload["bs"], workload["qd"])
                        if got:
                            results.setdefault(("spdk", label), []).append(got)
            idle = idle_connections(serve) if "idle" not in skip else None
            host_rows: dict[str, list[dict]] = {}
            if "host" not in skip:
                url = f"tcp://127.0.0.1:{serve.port}/{NQN}?nsid=1"
                for _ in range(rep):
                    for label, device, extra in HOST_VARIANTS:
                        host_rows.setdefault(label, []).append(
                            our_bench([url + device], serve.env, secs,
                                      ["--rw", "randread", "--bs", "4k", "--iodepth", "32", *extra], CLIENT_CPU))
                    if opts.baseline:  # the other checkout's host against the same target
                        for label, device, extra in BASELINE_HOST_VARIANTS:
                            host_rows.setdefault(f"{label}, baseline", []).append(
                                our_bench([url + device], serve.env, secs,
                                          ["--rw", "randread", "--bs", "4k", "--iodepth", "32", *extra], CLIENT_CPU,
                                          source=opts.baseline))
        finally:
            serve.stop()
        if "general" not in skip:
            general = Serve(tmp, fast=False)
            try:
                for _ in range(rep):
                    for label, workload in TARGET_WORKLOADS:
                        results.setdefault(("general", label), []).append(load(general, secs, **workload))
            finally:
                general.stop()
        if opts.baseline:
            base = Serve(tmp, fast=True, source=opts.baseline, data_dir="baseline")
            try:
                nvmf_load.run("127.0.0.1", base.port, NQN, rw="write", bs=131072, qd=8, seconds=1e9,
                              span=SPAN, latencies=False, limit=SPAN // 131072)
                os.sync()
                for _ in range(rep):
                    for label, workload in TARGET_WORKLOADS:
                        results.setdefault(("baseline", label), []).append(load(base, secs, **workload))
            finally:
                base.stop()
        workers_rows: dict[str, list[dict]] = {}
        if "workers" not in skip:
            for label, count in (("one process", 0), ("--workers 2", 2)):
                srv = Serve(tmp, fast=True, data_dir=f"workers{count}", workers=count, pin=False)
                try:
                    nvmf_load.run("127.0.0.1", srv.port, NQN, rw="write", bs=131072, qd=8, seconds=1e9,
                                  span=SPAN, latencies=False, limit=SPAN // 131072)
                    os.sync()
                    for _ in range(rep):
                        workers_rows.setdefault(label, []).append(
                            load_pair(srv, secs, rw="randread", bs=4096, qd=32))
                finally:
                    srv.stop()
        pcie_rows: dict[str, list[dict]] = {}
        if "pcie" not in skip:
            drives = [("", None)] + ([(", baseline", opts.baseline)] if opts.baseline else [])
            for n, (suffix, source) in enumerate(drives):
                drive = os.path.join(tmp, f"drive{n}")
                env = dict(os.environ, NVMESTACK_STATE_DIR=os.path.join(tmp, "state"))
                where = {"env": dict(env, PYTHONPATH=os.path.abspath(source)), "cwd": os.path.abspath(source)} \
                    if source else {"env": env}
                subprocess.run(NVMESTACK + ["drive", "create", "-s", "1G", drive], check=True,
                               stdout=subprocess.DEVNULL, **where)
                subprocess.run(NVMESTACK + ["bench", drive, "-n", "1", "--rw", "write", "--bs", "128k", "--iodepth",
                                            "8", "--size", str(SPAN), "-o", "json"], check=True,
                               stdout=subprocess.DEVNULL, **where)
                for _ in range(rep):
                    for label, extra, cpu in PCIE_VARIANTS[:2] if source else PCIE_VARIANTS:
                        pcie_rows.setdefault(label + suffix, []).append(
                            our_bench([drive, "-n", "1"], env, secs,
                                      ["--rw", "randread", "--bs", "4k", "--iodepth", "32", *extra], cpu,
                                      source=source))

    # -- report ---------------------------------------------------------------------------
    print("The machine (native tools, loopback, pinned)")
    print(f"  sockperf ping-pong 72 B, p50 latency        {spread(limits['pp'], '{:.1f}')} us")
    print(f"  sockperf throughput 65000 B messages        {spread(limits['tp'], '{:.2f}')} GB/s")
    print(f"  iperf3 one stream                           {spread(limits['iperf'], '{:.2f}')} GB/s")
    print(f"  fio on the backing file, 4 KiB rand, QD1    {spread(limits['fio4k'])} IOPS")
    print(f"  fio on the backing file, 128 KiB seq        {spread(limits['fio128k'], '{:.2f}')} GB/s")
    print()
    print("nvmestack serve (target on CPU 0), driven by bench/nvmf_load.py" +
          (" and spdk_nvme_perf" if opts.perf else "") + " on CPU 1")
    head = f"  {'workload':<30}{'path':<9}{'IOPS':>17}{'MB/s':>15}{'p50 us':>15}{'target CPU us/cmd':>22}"
    print(head)
    for label, _ in TARGET_WORKLOADS:
        for path in ("fast", "general", "baseline", "spdk"):
            rows = results.get((path, label))
            if not rows:
                continue
            print(f"  {label:<30}{path:<9}{spread([r['iops'] for r in rows]):>17}"
                  f"{spread([r['mb_s'] for r in rows]):>15}{spread([r['p50_us'] for r in rows], '{:.0f}'):>15}"
                  f"{spread([r['target_cpu_us'] for r in rows], '{:.1f}'):>22}")
    print()

    def median(key, path, label):
        rows = results.get((path, label)) or []
        return statistics.median([r[key] for r in rows]) if rows else None

    print("Ratios (medians)")
    fast_rr = median("iops", "fast", TARGET_WORKLOADS[0][0])
    gen_rr = median("iops", "general", TARGET_WORKLOADS[0][0])
    if fast_rr and gen_rr:
        print(f"  4 KiB random read QD32, fast / general path            {fast_rr / gen_rr:.1f}x")
    for label, _ in TARGET_WORKLOADS:
        now, then = median("iops", "fast", label), median("iops", "baseline", label)
        if now and then:
            print(f"  {label}, this tree / baseline {'':<{max(0, 27 - len(label))}}{now / then:.1f}x")
    fast_cpu = median("target_cpu_us", "fast", TARGET_WORKLOADS[0][0])
    gen_cpu = median("target_cpu_us", "general", TARGET_WORKLOADS[0][0])
    if fast_cpu and gen_cpu:
        print(f"  target CPU per 4 KiB read, general / fast path         {gen_cpu / fast_cpu:.1f}x")
    if fast_rr and limits["fio4k"]:
        print(f"  4 KiB random read QD32 / fio on the file (QD1 psync)   {fast_rr / statistics.median(limits['fio4k']):.2f}")
    qd1 = median("p50_us", "fast", TARGET_WORKLOADS[2][0])
    if qd1 and limits["pp"]:
        print(f"  QD1 p50 latency / sockperf ping-pong p50               {qd1 / statistics.median(limits['pp']):.1f}x")
    seq = median("mb_s", "fast", TARGET_WORKLOADS[3][0])
    if seq and limits["iperf"]:
        print(f"  128 KiB read QD8 / iperf3 one stream                   {seq / 1e3 / statistics.median(limits['iperf']):.2f}")
    print()
    if idle:
        print(f"1,000 idle connections: {idle[0]:.1f} KiB each after ICReq, {idle[1]:.1f} KiB each with an admin "
              f"Connect (its controller included), target RSS growth\n")
    if host_rows:
        print("Our host (nvmestack bench, CPU 1) against nvmestack serve (CPU 0), 4 KiB random read QD32")
        for label, rows in host_rows.items():
            tail = (f", / lean initiator {statistics.median([r['iops'] for r in rows]) / fast_rr:.2f}"
                    if fast_rr else "")
            print(_row(label, rows, "host_cpu_us", "host CPU", tail))
    if workers_rows:
        print("Worker processes: nvmestack serve unpinned, two bench/nvmf_load.py at once (an association each), "
              "4 KiB random read QD32")
        for label, rows in workers_rows.items():
            print(_row(label, rows, "target_cpu_us", "target CPU", " (all its processes)"))
        if len(workers_rows) == 2:
            one, two = (statistics.median(r["iops"] for r in rows) for rows in workers_rows.values())
            print(f"  --workers 2 / one process                              {two / one:.2f}")
    if pcie_rows:
        print("An emulated PCIe drive through our host (nvmestack bench, host and device in one process), 4 KiB "
              "random read QD32")
        for label, rows in pcie_rows.items():
            print(_row(label, rows, "host_cpu_us", "CPU", " (host and device)"))


def _row(label: str, rows: list[dict], cpu_key: str, cpu_name: str, tail: str = "") -> str:
    """One configuration's line: IOPS, p50 and CPU per command, min / median."""
    return (f"  {label:<34} IOPS {spread([r['iops'] for r in rows])}, "
            f"p50 {spread([r['p50_us'] for r in rows])} us, "
            f"{cpu_name} {spread([r[cpu_key] for r in rows], '{:.1f}')} us/cmd{tail}")


if __name__ == "__main__":
    main()
