"""nvmestack against itself over NVMe/TCP on loopback: 4 KiB random read at
QD1 and QD32, 128 KiB sequential read at QD1 and QD8.  The target runs as
`nvmestack serve` in its own process; the host is nvmestack's driver in this
one.  The reference, measured in the same run, is the same 4 KiB read
executed in-process by the target core (no transport at all).  Prints
figures; asserts nothing.

    .venv/bin/python bench/tcp.py [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

from nvmestack.host import NvmeController
from nvmestack.host.tcp import TcpTransport
from nvmestack.spec.nvm import Read
from nvmestack.spec.registers import Reg
from nvmestack.target import Namespace, Subsystem

NQN = "nqn.2026-11.io.nvmestack:default"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def run_qd(ctrl, nsid: int, block: int, nlb: int, span: int, depth: int, seconds: float, sequential: bool):
    """Keep ``depth`` reads in flight for ``seconds``; returns (IOPS, MB/s)."""
    bufs = [ctrl.alloc_buffer(block * nlb) for _ in range(depth)]
    rng = random.Random(1)
    lba = 0
    done = 0

    def next_lba():
        nonlocal lba
        if sequential:
            lba = (lba + nlb) % (span - nlb)
            return lba
        return rng.randrange(0, span - nlb) // nlb * nlb

    start = time.perf_counter()
    deadline = start + seconds
    inflight = [ctrl.submit(Read(nsid=nsid, slba=next_lba(), nlb=nlb - 1), bufs[i]) for i in range(depth)]
    while True:
        for i, req in enumerate(inflight):
            req.wait()
            req.raise_for_status()
            done += 1
            if time.perf_counter() < deadline:
                inflight[i] = ctrl.submit(Read(nsid=nsid, slba=next_lba(), nlb=nlb - 1), bufs[i])
            else:
                inflight[i] = None
        inflight = [r for r in inflight if r is not None]
        if not inflight:
            break
    elapsed = time.perf_counter() - start
    return done / elapsed, done * block * nlb / elapsed / 1e6


def core_reference(seconds: float) -> float:
    subsys = Subsystem("nqn.2026-11.io.nvmestack:ref", serial="REF")
    subsys.add_namespace(Namespace(1, 1 << 16))
    ctrl = subsys.add_controller()
    ctrl.set_property(Reg.CC, 4, 1 | (6 << 16) | (4 << 20))
    buf = memoryview(bytearray(4096))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        ctrl.submit(bytes(Read(nsid=1, slba=8 * (n % 1000), nlb=7)), sqid=1, data=buf)
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    port, disc = free_port(), free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        server = subprocess.Popen(
            [sys.executable, "-m", "nvmestack", "serve", "--port", str(port), "--discovery-port", str(disc),
             "--data-dir", data_dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(port)
            ctrl = NvmeController(TcpTransport("127.0.0.1", port, subnqn=NQN))
            ns = ctrl.namespaces[min(ctrl.namespaces)]
            span = min(ns.nblocks, (256 << 20) // ns.block_size)  # read within the first 256 MiB
            bs = ns.block_size
            results = []
            ref = core_reference(min(args.seconds, 1.0))
            for name, nlb, depth, seq in (
                ("4 KiB random read, QD1", 4096 // bs, 1, False),
                ("4 KiB random read, QD32", 4096 // bs, 32, False),
                ("128 KiB sequential read, QD1", (128 << 10) // bs, 1, True),
                ("128 KiB sequential read, QD8", (128 << 10) // bs, 8, True),
            ):
                iops, mbs = run_qd(ctrl, ns.nsid, bs, nlb, span, depth, args.seconds, seq)
                results.append((name, iops, mbs))
            ctrl.shutdown()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"CPUs: {os.cpu_count()}; target: `nvmestack serve` (separate process); host: nvmestack driver")
    print(f"{'workload':<32} {'IOPS':>9} {'MB/s':>8} {'vs core 4K':>11}")
    for name, iops, mbs in results:
        print(f"{name:<32} {iops:>9,.0f} {mbs:>8.1f} {iops / ref:>10.3f}x")
    print(f"{'reference: core 4 KiB read, in-process':<32} {ref:>9,.0f}")


if __name__ == "__main__":
    main()
