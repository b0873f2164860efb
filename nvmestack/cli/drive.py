"""Emulated PCIe drives: ``nvmestack drive create|attach|detach``.

A drive is a directory holding one NVM subsystem in the layout of
:mod:`nvmestack.target.persist` (``config.json``, ``state.json``, the
namespaces' sparse files).  Any command given the directory's path, or the
``nvmeN`` name that ``drive attach`` registered for it, runs the drive as a
PCIe function (:class:`~nvmestack.target.pci.PciFunction`) in its own
process, driven by the host driver over PCIe
(:class:`~nvmestack.host.pci.PciTransport`); what the commands change
(namespaces, formats, firmware, SMART counters, data) is saved back when the
command ends.  One process uses a drive at a time (a lock file).
"""

from __future__ import annotations

import argparse
import os
import re

from ..spec.fabrics import nqn_problem
from ..target import persist
from ..target.namespace import DEFAULT_LBA_FORMATS
from .common import CliError, command, number
from .devices import Registry, is_drive, parse_device

__all__ = ["create_drive"]

DEFAULT_DRIVE_SIZE = 1 << 30


def _format_index(block_size: int, metadata_size: int) -> int:
    for i, f in enumerate(DEFAULT_LBA_FORMATS):
        if f.data_size == block_size and f.metadata_size == metadata_size:
            return i
    choices = ", ".join(f"{f.data_size}+{f.metadata_size}" for f in DEFAULT_LBA_FORMATS)
    raise CliError(f"no LBA format with {block_size}-byte blocks and {metadata_size} bytes of metadata "
                   f"(supported: {choices})")


def create_drive(path: str, *, nqn: str | None = None, size: int = DEFAULT_DRIVE_SIZE, namespaces: int = 1,
                 block_size: int = 512, metadata_size: int = 0, pi_type: int = 0, serial: str | None = None,
                 model: str = "nvmestack PCIe drive", firmware: str = "1.0", capacity: int | None = None,
                 max_namespaces: int = 1024) -> str:
    """Create the drive directory ``path`` (which must not exist or be empty)
    with ``namespaces`` namespaces of ``size`` bytes each; returns its
    absolute path."""
    path = os.path.abspath(path)
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise CliError(f"{path}: already exists and is not an empty directory")
    if size <= 0 or size % block_size:
        raise CliError(f"namespace size {size} is not a positive multiple of the {block_size}-byte block")
    if not 0 <= namespaces <= max_namespaces:
        raise CliError(f"{namespaces} namespaces: expected 0 to {max_namespaces}")
    lbaf = _format_index(block_size, metadata_size)
    if nqn is None:
        base = re.sub(r"[^a-z0-9-]+", "-", os.path.basename(path).lower()).strip("-") or "drive"
        nqn = f"nqn.2026-11.io.nvmestack:drive-{base}"
    problem = nqn_problem(nqn)
    if problem:
        raise CliError(f"invalid NQN {nqn!r}: {problem}")
    if serial is None:
        serial = os.urandom(6).hex().upper()
    if len(serial.encode()) > 20:
        raise CliError("serial number longer than 20 bytes")
    attr = {"allow_any_host": True, "serial": serial, "model": model, "firmware": firmware,
            "max_namespaces": max_namespaces}
    if capacity is not None:
        attr["capacity"] = capacity
    nss = []
    for nsid in range(1, namespaces + 1):
        fmt = {"lba_format": lbaf}
        if pi_type:
            fmt["pi_type"] = pi_type
        nss.append({"nsid": nsid, "nblocks": size // block_size, "format": fmt})
    entry = {"nqn": nqn, "allowed_hosts": [], "attr": attr, "namespaces": nss}
    os.makedirs(path, mode=0o700, exist_ok=True)
    config = os.path.join(path, persist.CONFIG_FILE)
    try:
        persist._write_json(config, {"version": persist.FORMAT_VERSION, "subsystems": [entry]})
        subsys = persist.load(path)
    except (OSError, ValueError) as exc:
        try:
            os.remove(config)
        except OSError:
            pass
        raise CliError(f"{path}: {exc}") from None
    subsys.close()
    return path


# ---------------------------------------------------------------------------
# commands


def _create(args: argparse.Namespace) -> int:
    path = create_drive(args.path, nqn=args.nqn, size=args.size, namespaces=args.namespaces,
                        block_size=args.block_size, metadata_size=args.metadata_size, pi_type=args.pi,
                        serial=args.serial, model=args.model, capacity=args.capacity)
    print(f"created drive {path}")
    if args.attach:
        name = _register(path)
        print(f"attached as /dev/{name}")
    return 0


def _register(path: str) -> str:
    with Registry() as reg:
        existing = reg.find(transport="pcie", drive=path)
        if existing:
            return existing[0]
        return reg.add({"transport": "pcie", "drive": path})


def _attach(args: argparse.Namespace) -> int:
    if not is_drive(args.path):
        raise CliError(f"{args.path}: not a drive directory (see 'nvmestack drive create')")
    path = os.path.abspath(args.path)
    from .devices import DeviceSpec, open_spec

    # Bring it up once, as the kernel's probe would, so a broken drive is said now.
    dev = open_spec(DeviceSpec(path, {"transport": "pcie", "drive": path}), io_queues=0)
    dev.close()
    name = _register(path)
    print(f"/dev/{name}")
    return 0


def _detach(args: argparse.Namespace) -> int:
    target = args.device
    with Registry() as reg:
        if is_drive(target):
            names = reg.find(transport="pcie", drive=os.path.abspath(target))
        else:
            spec = parse_device(target)
            if spec.transport != "pcie":
                raise CliError(f"{target}: not a PCIe drive (use 'nvmestack disconnect' for fabrics)")
            names = [spec.name]
        if not names:
            raise CliError(f"{target}: not attached")
        for name in names:
            del reg.entries[name]
    for name in names:
        print(f"detached /dev/{name}")
    return 0


def _namespace_add(args: argparse.Namespace) -> int:
    from .drive_control import on_drive

    request = {"op": "namespace-add", "size": args.size, "block_size": args.block_size,
               "metadata_size": args.metadata_size, "pi": args.pi, "nsid": args.namespace_id}
    reply, served = on_drive(args.path, request)
    print(f"added namespace {reply['nsid']} ({reply['nblocks']} blocks of {reply['block_size']} bytes)"
          + (" to the running drive; its host was notified" if served else ""))
    return 0


def _namespace_remove(args: argparse.Namespace) -> int:
    from .drive_control import on_drive

    reply, served = on_drive(args.path, {"op": "namespace-remove", "nsid": args.namespace_id})
    print(f"removed namespace {reply['nsid']}" + (" from the running drive; its host was notified" if served else ""))
    return 0


def _drive_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="drive_command", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="create a drive directory",
                       description="Create an emulated PCIe drive: a directory with its subsystem "
                                   "configuration, state and sparse namespace files.")
    c.add_argument("path", metavar="DIR")
    c.add_argument("-s", "--size", type=number, default=DEFAULT_DRIVE_SIZE,
                   help="bytes per namespace (suffixes K, M, G, T; default 1G)")
    c.add_argument("-N", "--namespaces", type=int, default=1, help="namespaces to create (default 1)")
    c.add_argument("-b", "--block-size", type=number, default=512, help="LBA data size, 512 or 4096 (default 512)")
    c.add_argument("-m", "--metadata-size", type=number, default=0, help="metadata bytes per block (0, 8, 16)")
    c.add_argument("-p", "--pi", type=int, default=0, choices=(0, 1, 2, 3), help="protection information type")
    c.add_argument("--nqn", help="subsystem NQN (default: from the directory name)")
    c.add_argument("--serial", help="serial number (default: random)")
    c.add_argument("--model", default="nvmestack PCIe drive", help="model number")
    c.add_argument("--capacity", type=number, help="total NVM capacity in bytes (for namespace management)")
    c.add_argument("-a", "--attach", action="store_true", help="also attach it (name it /dev/nvmeN)")
    c.set_defaults(func=_create)
    a = sub.add_parser("attach", help="name a drive /dev/nvmeN (like binding a PCIe device)")
    a.add_argument("path", metavar="DIR")
    a.set_defaults(func=_attach)
    d = sub.add_parser("detach", help="forget a drive's /dev/nvmeN name (the directory stays)")
    d.add_argument("device", metavar="DEVICE|DIR")
    d.set_defaults(func=_detach)
    n = sub.add_parser("namespace", help="add or remove a namespace (also while the drive is served to a VM)",
                       description="Add or remove a namespace of a drive.  While 'nvmestack vfio-user' serves the "
                                   "drive, the server makes the change and the guest's driver is told "
                                   "(Namespace Attribute Changed); either way the drive is saved.")
    nsub = n.add_subparsers(dest="namespace_command", metavar="ACTION", required=True)
    na = nsub.add_parser("add", help="add a namespace attached to the drive's controller")
    na.add_argument("path", metavar="DIR")
    na.add_argument("-s", "--size", type=number, required=True, help="bytes (suffixes K, M, G, T)")
    na.add_argument("-b", "--block-size", type=number, default=512, help="LBA data size, 512 or 4096 (default 512)")
    na.add_argument("-m", "--metadata-size", type=number, default=0, help="metadata bytes per block (0, 8, 16)")
    na.add_argument("-p", "--pi", type=int, default=0, choices=(0, 1, 2, 3), help="protection information type")
    na.add_argument("-n", "--namespace-id", type=number, help="NSID (default: the lowest free one)")
    na.set_defaults(func=_namespace_add)
    nr = nsub.add_parser("remove", help="remove a namespace and its data")
    nr.add_argument("path", metavar="DIR")
    nr.add_argument("-n", "--namespace-id", type=number, required=True, help="NSID")
    nr.set_defaults(func=_namespace_remove)


command("drive", "emulated PCIe drives: create, attach, detach, namespace add|remove",
        description="Emulated PCIe drives: directories that run as a PCIe function under the host driver.")(
    _drive_parser)
