"""python -m nvmestack.testing.vm: build the guest image, run commands in a
fresh guest, or get a shell on its console.

    python -m nvmestack.testing.vm build [--force] [--install]
    python -m nvmestack.testing.vm run [--hostfwd GUESTPORT]... [--host-port PORT]... -- 'nvme version'
    python -m nvmestack.testing.vm shell [--hostfwd GUESTPORT]... [--host-port PORT]...

``run`` boots a guest, runs each command in turn (printing its output),
powers the guest off and exits with the first failing command's status.
``shell`` attaches the terminal to the guest's serial console (socat;
Ctrl-] leaves) and powers the guest off afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from .build import BuildError, cache_dir, ensure_image, which
from .vm import VM, VMError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nvmestack.testing.vm",
                                 description="A QEMU guest with the real Linux NVMe/TCP drivers.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help=f"build (or refresh) the guest image in {cache_dir()}")
    b.add_argument("--force", action="store_true", help="rebuild the initramfs even when up to date")
    b.add_argument("--install", action="store_true", help="apt-get install missing Debian packages first")
    for name, text in (("run", "boot, run COMMANDs, power off"), ("shell", "boot and attach to the console")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--mem", type=int, default=1024, help="MiB (1024)")
        p.add_argument("--cpus", type=int, default=2)
        p.add_argument("--accel", choices=["auto", "kvm", "tcg"])
        p.add_argument("--hostfwd", type=int, action="append", default=[], metavar="GUESTPORT",
                       help="forward a free host port on 127.0.0.1 to this guest port")
        p.add_argument("--host-port", type=int, action="append", default=[], metavar="PORT",
                       help="let the guest reach host 127.0.0.1:PORT as 10.0.2.100:PORT")
        p.add_argument("--timeout", type=float, default=600, help="seconds per command (600)")
        if name == "run":
            p.add_argument("commands", nargs="+", metavar="COMMAND", help="shell command run in the guest")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "build":
            image = ensure_image(force=a.force, install=a.install)
            print(json.dumps({"kernel": str(image.kernel), "initrd": str(image.initrd),
                              "kernel_version": image.kernel_version}, indent=1))
            return 0
        vm = VM(mem=a.mem, cpus=a.cpus, accel=a.accel, hostfwd=a.hostfwd, host_ports=a.host_port)
        with vm:
            print("# booted in {:.1f} s ({}); forwards: {}".format(
                vm.boot_seconds, vm.accel_used,
                ", ".join(f"127.0.0.1:{h} -> guest:{g}" for g, h in vm.ports.items()) or "none"),
                file=sys.stderr, flush=True)
            if a.cmd == "shell":
                socat = which("socat") or "socat"
                subprocess.call([socat, "-,raw,echo=0,escape=0x1d", "UNIX-CONNECT:" + os.path.join(vm.dir, "serial.sock")])
                return 0
            for cmd in a.commands:
                rc, out = vm.run(cmd, a.timeout, binary=True)
                sys.stdout.buffer.write(out)
                sys.stdout.flush()
                if rc:
                    return rc
        return 0
    except (BuildError, VMError) as exc:
        print(f"nvmestack-vm: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
