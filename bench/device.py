"""Device-side throughput: 4 KiB reads through the target core and through
the PCIe function, against the backend alone as the reference measured in
the same run.  Prints figures; asserts nothing.

    .venv/bin/python bench/device.py [--seconds S]
"""

from __future__ import annotations

import argparse
import time

from nvmestack.memory import PhysicalMemory
from nvmestack.spec.nvm import Read
from nvmestack.spec.registers import Reg
from nvmestack.target import Namespace, Subsystem
from nvmestack.target.namespace import DEFAULT_LBA_FORMATS
from nvmestack.target.pci import PciFunction, RawHost

BLOCKS = 8  # 4 KiB of 512-byte blocks


def rate(fn, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            fn()
        n += 100
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()

    subsys = Subsystem("nqn.2026-11.io.nvmestack:bench", serial="BENCH")
    ns = subsys.add_namespace(Namespace(1, 1 << 16, formats=DEFAULT_LBA_FORMATS))
    ns.data.write_bytes(0, b"\x5a" * (1 << 20))

    buf = memoryview(bytearray(4096))
    backend = rate(lambda: ns.data.readinto(4096, [buf]), args.seconds)

    ctrl = subsys.add_controller()
    ctrl.set_property(Reg.CC, 4, 1 | (6 << 16) | (4 << 20))
    cmd = bytes(Read(nsid=1, slba=8, nblocks=BLOCKS))
    core = rate(lambda: ctrl.submit(cmd, sqid=1, data=buf), args.seconds)

    fn = PciFunction(subsys, PhysicalMemory(16 << 20), mode="inline")
    host = RawHost(fn)
    host.enable_device()
    host.enable()
    io = host.create_io_queue_pair(1, entries=64)
    dma = host.alloc(4096)
    pci = rate(lambda: io.command(Read(nsid=1, slba=8, nblocks=BLOCKS, prp1=dma.addr)), args.seconds)
    fn.close()
    subsys.close()

    print(f"{'path':<40} {'IOPS':>10} {'vs backend':>11}")
    for name, value in (("backend readinto (reference)", backend),
                        ("target core: Controller.submit", core),
                        ("PCIe function, inline, RawHost QD1", pci)):
        print(f"{name:<40} {value:>10,.0f} {value / backend:>10.3f}x")


if __name__ == "__main__":
    main()
