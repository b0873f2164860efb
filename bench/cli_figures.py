"""The issue's bench figures, measured with the command line itself:
``nvmestack bench`` for 4 KiB random read at QD1 and QD32 and 128 KiB
sequential read at QD8, through a drive directory (the PCIe function and
the host driver, in the bench process) and through NVMe/TCP on loopback to
``nvmestack serve`` running as a separate process.  Each run is a separate
``nvmestack bench -o json`` process; the namespace is first filled by a
sequential write so that reads return real data.  Prints a table; asserts
nothing.

    .venv/bin/python bench/cli_figures.py [--seconds 5] [--size 256M]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

NQN = "nqn.2026-11.io.nvmestack:default"
NVMESTACK = [sys.executable, "-m", "nvmestack"]

WORKLOADS = (
    ("4 KiB random read, QD1", ["--rw", "randread", "--bs", "4k", "--iodepth", "1"]),
    ("4 KiB random read, QD32", ["--rw", "randread", "--bs", "4k", "--iodepth", "32"]),
    ("128 KiB sequential read, QD8", ["--rw", "read", "--bs", "128k", "--iodepth", "8"]),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nvmestack serve did not listen on port {port}")


def bench(device: list[str], args: list[str], env: dict) -> dict:
    cmd = NVMESTACK + ["bench", *device, *args, "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def row(label: str, rep: dict) -> str:
    rd = rep["aggregate"]["read"]
    pct = rd["lat_ns"]["percentile"]
    return (f"{label:<32}{rd['iops']:>10.0f}{rd['bw_bytes'] / (1 << 20):>10.1f}"
            f"{pct['50.000000'] / 1e3:>10.0f}{pct['99.000000'] / 1e3:>10.0f}{pct['99.900000'] / 1e3:>10.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="runtime of each workload (default 5)")
    ap.add_argument("--size", default="256M", help="region read (default 256M; it is written first)")
    opts = ap.parse_args()
    header = f"{'':<32}{'IOPS':>10}{'MiB/s':>10}{'p50 us':>10}{'p99 us':>10}{'p99.9 us':>10}"
    runtime = ["--runtime", str(opts.seconds), "--time_based", "--size", opts.size]
    with tempfile.TemporaryDirectory(prefix="nvmestack-figures-") as tmp:
        env = dict(os.environ, NVMESTACK_STATE_DIR=os.path.join(tmp, "state"))
        env.pop("NVMESTACK_TRACE", None)
        # a drive directory: one 1 GiB namespace, 512-byte blocks
        drive = os.path.join(tmp, "drive0")
        subprocess.run(NVMESTACK + ["drive", "create", "-s", "1G", drive], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        devices = [("PCIe drive", [drive, "-n", "1"])]
        # nvmestack serve in its own process, its default subsystem on a free port
        port = free_port()
        serve = subprocess.Popen(NVMESTACK + ["serve", "--port", str(port), "--discovery-port", str(free_port()),
                                              "--data-dir", os.path.join(tmp, "serve")],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_listening(port)
            devices.append(("NVMe/TCP loopback", [f"tcp://127.0.0.1:{port}/{NQN}?nsid=1"]))
            print(f"nvmestack bench, {opts.seconds:g} s per workload, {os.cpu_count()} CPUs, "
                  f"Python {sys.version.split()[0]}")
            for name, dev in devices:
                bench(dev, ["--rw", "write", "--bs", "128k", "--iodepth", "8", "--size", opts.size], env)
                print(f"\n{name}\n{header}")
                for label, args in WORKLOADS:
                    print(row(label, bench(dev, args + runtime, env)), flush=True)
        finally:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()


if __name__ == "__main__":
    main()
