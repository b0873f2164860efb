"""fio in a guest against our PCIe function (vfio-user) and, in the same
guest and run, against QEMU's own emulated NVMe device (``-device nvme``).

    .venv/bin/python bench/vfio_user.py [--runtime 5] [--size-mib 256]

One guest (QEMU with vfio-user-pci from Debian's archive, see
nvmestack/testing/vm/qemu.py) gets both devices, each over a sparse file of
the same size on the host; the guest's own nvme driver drives both.  For
each job -- 4 KiB random read at QD1 and QD32, 128 KiB sequential read at
QD32 (libaio, O_DIRECT, time based) -- it prints IOPS, bandwidth and mean
latency of both and the ratio ours/QEMU's.  Figures on a shared machine
under TCG vary by tens of per cent from run to run: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nvmestack.cli.drive import create_drive  # noqa: E402
from nvmestack.cli.vfio_user import DriveServer  # noqa: E402
from nvmestack.testing.vm import VM, ensure_image  # noqa: E402
from nvmestack.testing.vm.qemu import ensure_qemu  # noqa: E402

JOBS = [
    ("4k randread QD1", "--rw=randread --bs=4k --iodepth=1"),
    ("4k randread QD32", "--rw=randread --bs=4k --iodepth=32"),
    ("128k seqread QD32", "--rw=read --bs=128k --iodepth=32"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runtime", type=int, default=5, help="seconds per job and device (5)")
    ap.add_argument("--size-mib", type=int, default=256, help="namespace size (256)")
    a = ap.parse_args()
    size = a.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="nvmestack-bench-vfu-") as tmp:
        drive = create_drive(os.path.join(tmp, "drive"), size=size, serial="OURS", model="nvmestack")
        qimg = os.path.join(tmp, "qemu-nvme.img")
        with open(qimg, "wb") as f:
            f.truncate(size)
        sock = os.path.join(tmp, "d.sock")
        server = DriveServer(drive, sock)
        t = threading.Thread(target=server.serve_forever, daemon=True)
        t.start()
        dev = {"driver": "vfio-user-pci", "id": "ours", "socket": {"type": "unix", "path": sock}}
        extra = ["-object", "memory-backend-memfd,id=mem,size=1024M,share=on", "-device", json.dumps(dev),
                 "-drive", f"file={qimg},if=none,id=q0,format=raw,cache=none,aio=threads",
                 "-device", "nvme,serial=QEMU,drive=q0"]
        try:
            with VM(ensure_image(), mem=1024, cpus=2, qemu=ensure_qemu(), machine="pc,memory-backend=mem",
                    extra=extra) as vm:
                vm.check("modprobe nvme; sleep 2")
                names = {}
                for line in vm.check("for c in /sys/class/nvme/nvme*; do echo $(basename $c) $(cat $c/serial); done").splitlines():
                    ctrl, serial = line.split()
                    names[serial] = f"/dev/{ctrl}n1"
                results = {}
                for label, job in JOBS:
                    for who in ("OURS", "QEMU"):
                        out = vm.check(f"fio --name=b --filename={names[who]} --ioengine=libaio --direct=1 {job} "
                                       f"--time_based --runtime={a.runtime} --ramp_time=1 --output-format=json",
                                       a.runtime * 4 + 60)
                        r = json.loads(out[out.index("{"):])["jobs"][0]["read"]
                        results[label, who] = (r["iops"], r["bw"] / 1024, r["lat_ns"]["mean"] / 1000)
                print(f"{'job':20} {'ours IOPS':>10} {'MiB/s':>8} {'lat us':>8}   {'QEMU IOPS':>10} {'MiB/s':>8} "
                      f"{'lat us':>8}   ours/QEMU")
                for label, _ in JOBS:
                    o, q = results[label, "OURS"], results[label, "QEMU"]
                    print(f"{label:20} {o[0]:10.0f} {o[1]:8.1f} {o[2]:8.0f}   {q[0]:10.0f} {q[1]:8.1f} {q[2]:8.0f}   "
                          f"{o[0] / q[0]:.2f}")
                print("server:", dict(server.device.stats))
        finally:
            server.stop()
            t.join(10)
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
