"""``nvmestack vfio-user DRIVE --socket PATH``: a drive as a VM's PCIe device.

The drive directory (``nvmestack drive create``) runs as a PCIe function
behind a vfio-user server (:mod:`nvmestack.target.pci.vfio_user`); QEMU's
``-device vfio-user-pci`` connects to the socket and the guest's own NVMe
driver drives it.  The drive is the same one every other command sees:
its configuration, namespaces, firmware slots and SMART counters are
loaded from the directory and saved back (namespace changes at once,
everything at the end).  One process uses a drive at a time: while the
server runs, ``nvmestack drive namespace add|remove`` reach it through the
drive's control socket (:mod:`nvmestack.cli.drive_control`) and the guest
is told of the change (Namespace Attribute Changed).

SIGINT/SIGTERM stop the server: the function is reset, the namespaces'
files flushed and closed and the state saved, so every write the guest saw
acknowledged is on disk.  ``--fault`` arms fault injection (repeatable),
``--trace FILE`` writes one line per vfio-user message.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time

from ..memory import DmaError  # noqa: F401 - re-exported for callers of DriveServer
from ..spec.opcodes import AdminOpcode, NvmOpcode
from .common import CliError, command
from .devices import DriveLock, is_drive

__all__ = ["DriveServer", "parse_fault", "parse_pci_id"]

log = logging.getLogger(__name__)


def parse_pci_id(text: str) -> tuple[int, int]:
    """``VVVV:DDDD`` (hex) -> (vendor, device)."""
    try:
        vendor, device = (int(part, 16) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected VENDOR:DEVICE in hex, e.g. 4e56:0001") from None
    if not (0 <= vendor < 0xFFFF and 0 <= device <= 0xFFFF):
        raise argparse.ArgumentTypeError(f"{text!r}: ids are 16-bit, and vendor FFFFh means no function")
    return vendor, device


_FAULT_ACTIONS = ("fail", "delay", "drop", "media", "fatal")


def _int(text: str) -> int:
    return int(text, 0)


def parse_fault(text: str) -> tuple[str, dict]:
    """``ACTION[=ARG][:KEY=VALUE,...]`` -> (action, keyword arguments of
    the FaultInjector method).  ACTION: fail=STATUS (e.g. 0x281), delay=SECONDS,
    drop, media=LBA[-LBA], fatal; KEYs: admin (0/1), opcode, nsid, sqid, count."""
    head, _, rest = text.partition(":")
    action, _, arg = head.partition("=")
    if action not in _FAULT_ACTIONS:
        raise argparse.ArgumentTypeError(f"fault {text!r}: action must be one of {', '.join(_FAULT_ACTIONS)}")
    kwargs: dict = {}
    try:
        for item in filter(None, rest.split(",")):
            key, _, value = item.partition("=")
            if key == "admin":
                kwargs["admin"] = bool(_int(value))
            elif key == "opcode":
                kwargs["opcode"] = _opcode(value)
            elif key in ("nsid", "sqid", "count"):
                kwargs[key] = _int(value)
            else:
                raise ValueError(f"unknown key {key!r}")
        if action == "fail":
            from ..spec.status import Status

            code = _int(arg)
            kwargs["status"] = Status(code >> 8 & 7, code & 0xFF)
        elif action == "delay":
            kwargs["seconds"] = float(arg)
        elif action == "media":
            lo, _, hi = arg.partition("-")
            kwargs["lbas"] = range(_int(lo), _int(hi or lo) + 1)
        elif arg:
            raise ValueError(f"{action} takes no argument")
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"fault {text!r}: {exc}") from None
    return action, kwargs


def _opcode(value: str) -> int:
    try:
        return _int(value)
    except ValueError:
        name = value.upper().replace("-", "_")
        for enum in (NvmOpcode, AdminOpcode):
            if name in enum.__members__:
                return int(enum[name])
        raise ValueError(f"unknown opcode {value!r}") from None


def arm_fault(subsystem, action: str, kwargs: dict):
    from ..target.faults import FaultInjector

    faults = FaultInjector.install(subsystem)
    kwargs = dict(kwargs)
    if action == "fail":
        return faults.fail(kwargs.pop("status"), **kwargs)
    if action == "delay":
        return faults.delay(kwargs.pop("seconds"), **kwargs)
    if action == "media":
        return faults.media_error(kwargs.pop("lbas"), **kwargs)
    return getattr(faults, action)(**kwargs)


class DriveServer:
    """A drive directory served over vfio-user on ``socket_path``.

    ``serve_forever()`` runs the socket loop on the calling thread until
    :meth:`stop`; :meth:`close` then saves the drive.  ``pci_id`` and
    ``subsystem_id`` are (vendor, device) pairs for configuration space
    (default: the function's own ids); Identify's VID/SSVID follow them."""

    def __init__(self, drive: str, socket_path: str, *, pci_id: tuple[int, int] | None = None,
                 subsystem_id: tuple[int, int] | None = None, msix_vectors: int | None = None,
                 trace=None):
        from ..target import persist
        from ..target.pci import PciFunction
        from ..target.pci.vfio_user import DmaWindows, VfioUserDevice, VfioUserServer

        if not is_drive(drive):
            raise CliError(f"{drive}: not a drive directory (see 'nvmestack drive create')")
        self.drive = os.path.abspath(drive)
        self.socket_path = os.path.abspath(socket_path)
        self._closers: list = []
        self.lock = DriveLock(self.drive)
        self._closers.append(self.lock.release)
        try:
            try:
                self.subsystem = persist.load(self.drive)
            except (OSError, ValueError) as exc:
                raise CliError(str(exc)) from None
            self._closers.append(self.subsystem.close)
            options: dict = {}
            if pci_id is not None:
                options["vendor_id"], options["device_id"] = pci_id
            if subsystem_id is not None:
                options["subsystem_vendor_id"], options["subsystem_id"] = subsystem_id
            if msix_vectors is not None:
                options["msix_vectors"] = msix_vectors
            self.memory = DmaWindows()
            self.function = PciFunction(self.subsystem, self.memory, mode="thread", **options)
            self._closers.append(self.function.close)
            self.device = VfioUserDevice(self.function)
            self._closers.append(self.device.close)
            if trace is not None:
                self.device.trace = trace
            from .drive_control import ControlServer

            self.control = ControlServer(self.subsystem, self.drive)
            self._closers.append(self.control.close)
            try:
                self.server = VfioUserServer(self.device, self.socket_path)
            except OSError as exc:
                raise CliError(f"{self.socket_path}: {exc}") from None
        except BaseException:
            self._close_all()
            raise

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        self.server.stop()

    def _close_all(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing goes on
                log.exception("closing the drive server")

    def close(self) -> None:
        """Reset the function, flush and close the namespaces, save the drive."""
        self._close_all()

    def __enter__(self) -> DriveServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def qemu_command_line(socket_path: str, mem_mib: int = 1024) -> str:
    from ..target.pci.vfio_user import qemu_arguments

    args = qemu_arguments(socket_path, mem_mib=mem_mib)
    return " ".join(a if a.startswith("-") or "{" not in a else f"'{a}'" for a in args)


def _run(args: argparse.Namespace) -> int:
    trace_file = None
    trace = None
    if args.trace:
        trace_file = sys.stdout if args.trace == "-" else open(args.trace, "a", buffering=1)  # noqa: SIM115
        t0 = time.monotonic()

        def trace(line: str) -> None:
            trace_file.write(f"{time.monotonic() - t0:10.6f} {line}\n")

    server = DriveServer(args.drive, args.socket, pci_id=args.pci_id, subsystem_id=args.subsystem_id,
                         msix_vectors=args.msix_vectors, trace=trace)
    try:
        for action, kwargs in args.fault:
            arm_fault(server.subsystem, action, kwargs)
        cfg = server.function.config
        print(f"serving {server.drive} ({cfg.vendor_id:04x}:{cfg.device_id:04x}) on {server.socket_path}", flush=True)
        print("QEMU arguments (with -M pc or q35 and the same -m):", flush=True)
        print("  " + qemu_command_line(server.socket_path, args.mem), flush=True)
        stop = threading.Event()

        def on_signal(signum, frame):
            stop.set()
            server.stop()

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, on_signal)
        server.serve_forever()
    finally:
        server.close()
        if trace_file not in (None, sys.stdout):
            with contextlib.suppress(OSError):
                trace_file.close()
    print(f"stopped; {server.drive} saved", flush=True)
    return 0


@command("vfio-user", "serve a drive to a VM as a PCIe device (QEMU -device vfio-user-pci)",
         description="Serve a drive directory (nvmestack drive create) over vfio-user on a UNIX socket: QEMU's "
                     "-device vfio-user-pci puts it into a guest, whose own NVMe driver drives it.  Prints the QEMU "
                     "arguments.  SIGINT/SIGTERM stop it with every acknowledged write on disk and the drive saved.")
def _parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("drive", metavar="DRIVE", help="drive directory")
    p.add_argument("-S", "--socket", required=True, metavar="PATH", help="UNIX socket to listen on")
    p.add_argument("--pci-id", type=parse_pci_id, metavar="VID:DID",
                   help="PCI vendor and device id (hex; default: nvmestack's 4e56:0001)")
    p.add_argument("--subsystem-id", type=parse_pci_id, metavar="SVID:SSID",
                   help="PCI subsystem vendor and subsystem id (hex; default: the vendor and device id)")
    p.add_argument("--msix-vectors", type=int, metavar="N", help="MSI-X table entries (default 65)")
    p.add_argument("--mem", type=int, default=1024, metavar="MIB", help="guest memory in the printed QEMU arguments")
    p.add_argument("--fault", type=parse_fault, action="append", default=[], metavar="SPEC",
                   help="fault injection, repeatable: ACTION[=ARG][:KEY=VALUE,...] with ACTION fail=STATUS, "
                        "delay=SECONDS, drop, media=LBA[-LBA], fatal and KEYs admin, opcode, nsid, sqid, count "
                        "(e.g. drop:opcode=read,count=1)")
    p.add_argument("--trace", metavar="FILE", help="write one line per vfio-user message to FILE (- for stdout)")
    p.set_defaults(func=_run)
