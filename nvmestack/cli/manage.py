"""Management commands: namespaces (``create-ns``, ``delete-ns``,
``attach-ns``, ``detach-ns``), ``format``, firmware (``fw-download``,
``fw-commit``), ``device-self-test``, ``sanitize``, passthrough
(``admin-passthru``, ``io-passthru``) and resets (``reset``,
``subsystem-reset``), as nvme-cli 2.3 has them: same names, long and short
options, messages (stdout or stderr as nvme-cli prints them) and exit
statuses.

Where we differ from nvme-cli 2.3, and why:

* A namespace is taken from ``-n``, else from the device name (``nvme0n1``,
  ``tcp://...?nsid=N``); ``-n`` works with every device form, so a drive
  path or a ``tcp://`` address (which name a controller) can be used too.
  ``admin-passthru``/``io-passthru``/``attach-ns``/``detach-ns`` also take
  the namespace from the device name when ``-n`` is not given.
* ``format`` and ``sanitize`` destroy data: without ``--force`` (``-f`` is
  accepted for it too) they print nvme-cli's warning and wait 10 seconds for
  Ctrl-C when standard input is a terminal, and refuse when it is not (a
  script must say ``--force``).  nvme-cli 2.3's ``sanitize`` has no
  confirmation.
* ``sanitize -w/--wait`` (ours) follows the Sanitize Status log until the
  operation ends, with a progress bar on a terminal.
* An emulated drive only runs while a command runs, so on a drive
  ``device-self-test`` and ``sanitize`` wait for the operation to end.
* ``fw-download`` sends the last piece with the bytes that are left (nvme-cli
  2.3 sends a whole ``--xfer`` and reads past the image), pieces are at
  most the controller's MDTS, and without ``-p`` a progress bar is drawn on
  a terminal.
* ``fw-commit`` prints nvme-cli's "Success activating firmware ..., but
  firmware requires ... reset" for the three reset-required statuses (the
  2.3 binary shows the status line there: its status mask never matches).
* ``admin-passthru``/``io-passthru`` refuse non-zero ``--flags`` as the
  Linux driver does (EINVAL).
* ``subsystem-reset`` writes NSSR (a register over PCIe, a Property Set over
  Fabrics) when CAP.NSSRS says the controller supports it, then brings the
  controller up again; otherwise nvme-cli's "not supported" message.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from ..host.request import DIR_FROM_DEVICE, DIR_NONE, DIR_TO_DEVICE
from ..spec.admin import (
    Cns,
    DeviceSelfTest,
    FirmwareCommit,
    FirmwareImageDownload,
    FormatNvm,
    NamespaceAttachment,
    NamespaceManagement,
    NsAttachmentSelect,
    NsManagementSelect,
    Sanitize,
    SanitizeAction,
    SelfTestCode,
)
from ..spec.identify import ControllerList, IdentifyNamespace
from ..spec.log import DeviceSelfTestLog, LogPageId, SanitizeStatus, SanitizeStatusLog
from ..spec.registers import NSSR_SIGNATURE, Reg
from ..spec.sqe import Command
from ..spec.status import CommandSpecificStatus, Status, StatusCodeType
from .common import CliError, Progress, byte, command, dword, number, show_status, word
from . import output
from .devices import Device, open_device, state_dir

__all__ = ["NSID_ALL", "command_name", "hexdump", "resolve_nsid"]

NSID_ALL = 0xFFFFFFFF

# nvme-cli's command names (nvme_cmd_to_string), for the passthrough messages.
ADMIN_NAMES = output.ADMIN_COMMAND_NAMES
IO_NAMES = output.IO_COMMAND_NAMES

# nvme-cli's texts for the Sanitize Status log's status field.
SSTAT_TEXT = {
    SanitizeStatus.NEVER_SANITIZED: "NVM Subsystem has never been sanitized.",
    SanitizeStatus.COMPLETED: "Most Recent Sanitize Command Completed Successfully.",
    SanitizeStatus.IN_PROGRESS: "Sanitize in Progress.",
    SanitizeStatus.FAILED: "Most Recent Sanitize Command Failed.",
    SanitizeStatus.COMPLETED_NO_DEALLOCATE:
        "Most Recent Sanitize Command (No-Deallocate After Sanitize) Completed Successfully.",
}

_POLL = 0.1  # seconds between two looks at a log page while waiting


def command_name(admin: bool, opcode: int) -> str:
    """nvme-cli's name of a command ("Vendor Specific" when it has none)."""
    return (ADMIN_NAMES if admin else IO_NAMES).get(opcode, "Vendor Specific")


# ---------------------------------------------------------------------------
# helpers shared with io.py


def device_label(text: str) -> str:
    """The device as nvme-cli names it in messages (basename of /dev/...)."""
    return os.path.basename(text.rstrip("/")) if text.startswith("/dev/") else text


def resolve_nsid(args: argparse.Namespace, dev: Device, what: str, *, required: bool = True) -> int | None:
    """``-n`` when given (non-zero), else the namespace the device names."""
    nsid = getattr(args, "namespace_id", None)
    if nsid:
        return nsid
    if dev.nsid:
        return dev.nsid
    if required:
        raise CliError(f"{what}: no namespace: give -n/--namespace-id or a namespace device "
                       f"(nvme0n1, tcp://...?nsid=N)")
    return None


def hexdump(data: bytes | bytearray | memoryview, width: int = 16) -> str:
    """nvme-cli's ``d()`` hex dump (:func:`nvmestack.cli.output.hexdump`)."""
    return output.hexdump(data, width)


@contextlib.contextmanager
def quiet_host_logs() -> Iterator[None]:
    """Keep the host driver's notes (a reset it was asked for, a rescan
    racing the shutdown) off standard error unless logging is configured."""
    logger = logging.getLogger("nvmestack.host")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def settle(ctrl: Any) -> None:
    """Let the host finish the work it queued (a rescan after a reset or a
    namespace change) before the command shuts the controller down."""
    wq = getattr(ctrl, "_wq", None)
    if wq is None:
        return
    with contextlib.suppress(Exception):
        wq.submit(lambda: None).result(10)


def confirm_destruction(args: argparse.Namespace, command: str, lines: list[str], final: str) -> None:
    """nvme-cli's warning and 10 seconds for Ctrl-C, unless --force; with no
    terminal to see the warning, refuse."""
    if args.force:
        return
    try:
        interactive = sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        interactive = False
    if not interactive:
        raise CliError(f"{command}: refusing to run without --force: this erases data and standard input "
                       f"is not a terminal to confirm it")
    err = sys.stderr
    for line in lines:
        err.write(line + "\n")
    err.flush()
    time.sleep(10)
    err.write(final + "\n")
    err.flush()


def _admin(dev: Device, cmd: Any, data: Any = None, *, timeout_ms: int | None = None) -> tuple[Status, int]:
    timeout = timeout_ms / 1000 if timeout_ms else None
    return dev.ctrl.admin_passthru(cmd, data, timeout=timeout)


@contextlib.contextmanager
def open_quietly(device: str, **options: Any) -> Iterator[Device]:
    """``open_device`` for a command whose failures are said in one line
    (the host driver's own notes stay off standard error)."""
    with quiet_host_logs(), open_device(device, **options) as dev:
        yield dev


def _open(args: argparse.Namespace, **options: Any):
    return open_quietly(args.device, **options)


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", metavar="DEVICE",
                   help="nvme0, /dev/nvme0, nvme0n1, tcp://ADDR[:PORT]/NQN[?nsid=N] or a drive directory")


# ---------------------------------------------------------------------------
# create-ns


_SI = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_SI_RE = re.compile(r"\s*(0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(.*)\Z")


def parse_si(opt: str, text: str) -> tuple[int, bool]:
    """nvme-cli's ``--nsze-si``/``--ncap-si`` value: a number with an
    optional SI suffix (k, M, G, T, P, E; powers of 1000).  Returns (value,
    has_suffix): with a suffix it is a size in bytes, else blocks."""
    m = _SI_RE.match(text)
    bad = CliError(f"Expected long suffixed integer argument for '{opt}-si' but got '{text}'!")
    if not m:
        raise bad
    num, rest = m.group(1), m.group(2)
    suffix = rest[:1]
    if rest and suffix not in _SI:
        raise bad
    try:
        value = Decimal(int(num, 16)) if num[:2].lower() == "0x" else Decimal(num)
    except InvalidOperation:
        raise bad from None
    return int(value * _SI[suffix]), bool(rest)


def _formats_template(dev: Device) -> IdentifyNamespace:
    """What nvme-cli reads the LBA formats from: Identify Namespace for
    NSID FFFFFFFFh (the formats every namespace can use), else the first
    active namespace."""
    from ..host.request import NvmeStatusError

    try:
        return IdentifyNamespace.from_bytes(dev.ctrl.identify_raw(Cns.NS, NSID_ALL))
    except NvmeStatusError:
        nsids = sorted(dev.ctrl.namespaces)
        if not nsids:
            raise
        return IdentifyNamespace.from_bytes(dev.ctrl.identify_raw(Cns.NS, nsids[0]))


def _lba_bytes(ns: IdentifyNamespace, flbas: int) -> int:
    fmt = ns.lbaf[flbas & 0xF]
    return (1 << fmt.lbads) + fmt.ms


def _build_create_ns(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-s", "--nsze", type=number, default=0, metavar="IONUM", help="size of ns (NSZE)")
    p.add_argument("-c", "--ncap", type=number, default=0, metavar="IONUM", help="capacity of ns (NCAP)")
    p.add_argument("-f", "--flbas", type=byte, default=None, metavar="NUM",
                   help="Formatted LBA size (FLBAS), if entering this value ignore 'block-size' field")
    p.add_argument("-d", "--dps", type=byte, default=0, metavar="NUM", help="data protection settings (DPS)")
    p.add_argument("-m", "--nmic", type=byte, default=0, metavar="NUM",
                   help="multipath and sharing capabilities (NMIC)")
    p.add_argument("-a", "--anagrp-id", type=dword, default=0, metavar="NUM", help="ANA Group Identifier (ANAGRPID)")
    p.add_argument("-i", "--nvmset-id", type=word, default=0, metavar="NUM", help="NVM Set Identifier (NVMSETID)")
    p.add_argument("-b", "--block-size", type=number, default=0, metavar="IONUM",
                   help="target block size, specify only if 'FLBAS' value not entered")
    p.add_argument("-t", "--timeout", type=dword, default=120000, metavar="NUM", help="timeout value, in milliseconds")
    p.add_argument("-y", "--csi", type=byte, default=0, metavar="NUM", help="command set identifier (CSI)")
    p.add_argument("-l", "--lbstm", type=number, default=0, metavar="IONUM",
                   help="logical block storage tag mask (LBSTM)")
    p.add_argument("-S", "--nsze-si", default=None, metavar="STRING", help="size of ns (NSZE) in standard SI units")
    p.add_argument("-C", "--ncap-si", default=None, metavar="STRING",
                   help="capacity of ns (NCAP) in standard SI units")
    p.set_defaults(func=create_ns)


command("create-ns", "Creates a namespace with the provided parameters",
        description="Send a namespace management command to the specified device to create a namespace with the "
                    "given parameters. The next available namespace ID is used for the create operation. Note that "
                    "create-ns does not attach the namespace to a controller, the attach-ns command is "
                    "needed.")(_build_create_ns)


def create_ns(args: argparse.Namespace) -> int:
    flbas = args.flbas
    if flbas is not None and args.block_size:
        raise CliError("Invalid specification of both FLBAS and Block Size, please specify only one")
    bs = args.block_size
    if bs and bs & (bs - 1):
        raise CliError(f"Invalid value for block size ({bs}). Block size must be a power of two")
    if args.lbstm:
        raise CliError("create-ns: --lbstm: this device has no storage tags (LBSTM must be 0)")
    if flbas is None and not bs:
        raise CliError("FLBAS corresponding to block size 0 not found; "
                       "Please correct block size, or specify FLBAS directly")
    with _open(args, io_queues=0) as dev:
        ctrl = dev.ctrl
        if bs:
            template = _formats_template(dev)
            for i, fmt in enumerate(template.lba_formats()):
                if fmt.lbads and (1 << fmt.lbads) == bs and fmt.ms == 0:
                    flbas = i
                    break
        if flbas is None:
            raise CliError(f"FLBAS corresponding to block size {bs} not found; "
                           "Please correct block size, or specify FLBAS directly")
        nsze, ncap = args.nsze, args.ncap
        sized = []
        for opt, value, text in (("nsze", nsze, args.nsze_si), ("ncap", ncap, args.ncap_si)):
            if text is None:
                sized.append(value)
                continue
            if value:
                raise CliError(f"Invalid specification of both {opt} and its SI argument, please specify only one")
            amount, is_bytes = parse_si(opt, text)
            if is_bytes:
                oacs_ns_mgmt = bool(ctrl.identify.oacs & 0x8)
                if oacs_ns_mgmt:
                    template = _formats_template(dev)
                else:
                    nsids = sorted(ctrl.namespaces)
                    template = IdentifyNamespace.from_bytes(ctrl.identify_raw(Cns.NS, nsids[0] if nsids else 1))
                lbas = _lba_bytes(template, flbas)
                amount //= lbas
            sized.append(amount)
        nsze, ncap = sized
        spec = IdentifyNamespace()
        spec.nsze = nsze & 0xFFFFFFFFFFFFFFFF
        spec.ncap = ncap & 0xFFFFFFFFFFFFFFFF
        spec.flbas = flbas
        spec.dps = args.dps
        spec.nmic = args.nmic
        spec.anagrpid = args.anagrp_id
        spec.nvmsetid = args.nvmset_id
        cmd = NamespaceManagement(sel=NsManagementSelect.CREATE, csi=args.csi)
        status, result = _admin(dev, cmd, bytearray(bytes(spec)), timeout_ms=args.timeout)
        show_status(status)
        print(f"create-ns: Success, created nsid:{result}")
        settle(ctrl)
    return 0


# ---------------------------------------------------------------------------
# delete-ns


def _build_delete_ns(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-n", "--namespace-id", type=dword, default=0, metavar="NUM", help="namespace to delete")
    p.add_argument("-t", "--timeout", type=dword, default=120000, metavar="NUM", help="timeout value, in milliseconds")
    p.set_defaults(func=delete_ns)


command("delete-ns", "Deletes a namespace from the controller",
        description="Delete the given namespace by sending a namespace management command to the provided device. "
                    "All controllers should be detached from the namespace prior to namespace deletion. A namespace "
                    "ID becomes inactive when that namespace is detached or, if the namespace is not already "
                    "inactive, once deleted.")(_build_delete_ns)


def delete_ns(args: argparse.Namespace) -> int:
    with _open(args, io_queues=0) as dev:
        nsid = resolve_nsid(args, dev, "delete-ns")
        cmd = NamespaceManagement(sel=NsManagementSelect.DELETE, nsid=nsid)
        status, _ = _admin(dev, cmd, timeout_ms=args.timeout)
        show_status(status)
        print(f"delete-ns: Success, deleted nsid:{nsid}")
        settle(dev.ctrl)
    return 0


# ---------------------------------------------------------------------------
# attach-ns / detach-ns


def _build_attach(name: str, func) -> Any:
    def build(p: argparse.ArgumentParser) -> None:
        _add_device(p)
        p.add_argument("-n", "--namespace-id", type=dword, default=0, metavar="NUM", help="namespace to attach")
        p.add_argument("-c", "--controllers", default="", metavar="LIST",
                       help="optional comma-sep controller id list")
        p.set_defaults(func=func, command_label=name)

    return build


def _controller_ids(text: str, what: str) -> list[int]:
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part, 0)
        except ValueError:
            raise CliError(f"{what}: controller id list is malformed") from None
        if not 0 <= value <= 0xFFFF:
            raise CliError(f"{what}: controller id list is malformed")
        ids.append(value)
    return ids


def _attach(args: argparse.Namespace, attach: bool) -> int:
    what = "attach-ns" if attach else "detach-ns"
    ids = _controller_ids(args.controllers, what)
    with _open(args, io_queues=0) as dev:
        nsid = args.namespace_id or dev.nsid
        if not nsid:
            raise CliError(f"{what}: namespace-id parameter required")
        if not ids:
            print("warning: empty controller-id list will result in no actual change in namespace attachment",
                  file=sys.stderr)
        clist = ControllerList.from_ids(ids)
        sel = NsAttachmentSelect.ATTACH if attach else NsAttachmentSelect.DETACH
        status, _ = _admin(dev, NamespaceAttachment(sel=sel, nsid=nsid), bytearray(bytes(clist)))
        show_status(status)
        print(f"{what}: Success, nsid:{nsid}")
        settle(dev.ctrl)
    return 0


def attach_ns(args: argparse.Namespace) -> int:
    return _attach(args, True)


def detach_ns(args: argparse.Namespace) -> int:
    return _attach(args, False)


command("attach-ns", "Attaches a namespace to requested controller(s)",
        description="Attach the given namespace to the given controller or comma-sep list of controllers. ID of "
                    "the given namespace becomes active upon attachment to a controller. A namespace must be "
                    "attached to a controller before IO commands may be directed to that namespace.")(
    _build_attach("attach-ns", attach_ns))
command("detach-ns", "Detaches a namespace from requested controller(s)",
        description="Detach the given namespace from the given controller; de-activates the given namespace's ID. "
                    "A namespace must be attached to a controller before IO commands may be directed to that "
                    "namespace.")(_build_attach("detach-ns", detach_ns))


# ---------------------------------------------------------------------------
# format


def _build_format(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-n", "--namespace-id", type=dword, default=0, metavar="NUM",
                   help="identifier of desired namespace")
    p.add_argument("-t", "--timeout", type=dword, default=600000, metavar="NUM", help="timeout value, in milliseconds")
    p.add_argument("-l", "--lbaf", type=byte, default=None, metavar="NUM", help="LBA format to apply (required)")
    p.add_argument("-s", "--ses", type=byte, default=0, metavar="NUM", help="[0-2]: secure erase")
    p.add_argument("-i", "--pi", type=byte, default=0, metavar="NUM",
                   help="[0-3]: protection info off/Type 1/Type 2/Type 3")
    p.add_argument("-p", "--pil", type=byte, default=0, metavar="NUM",
                   help="[0-1]: protection info location last/first 8 bytes of metadata")
    p.add_argument("-m", "--ms", type=byte, default=0, metavar="NUM", help="[0-1]: extended format off/on")
    p.add_argument("-r", "--reset", action="store_true",
                   help="Automatically reset the controller after successful format")
    p.add_argument("-f", "--force", action="store_true",
                   help="The \"I know what I'm doing\" flag, skip confirmation before sending command")
    p.add_argument("-b", "--block-size", type=number, default=0, metavar="IONUM", help="target block size")
    p.set_defaults(func=format_cmd)


command("format", "Format namespace with new block format",
        description="Re-format a specified namespace on the given device. Can erase all data in namespace (user "
                    "data erase) or delete data encryption key if specified. Can also be used to change LBAF to "
                    "change the namespaces reported physical block format.")(_build_format)


def format_cmd(args: argparse.Namespace) -> int:
    lbaf = args.lbaf
    bs = args.block_size
    if lbaf is not None and bs:
        raise CliError("Invalid specification of both LBAF and Block Size, please specify only one")
    if bs and bs & (bs - 1):
        raise CliError(f"Invalid value for block size ({bs}), must be a power of two")
    with _open(args, io_queues=0) as dev:
        ctrl = dev.ctrl
        if ctrl.identify.fna & 1:
            # FNA bit 0: a format of one namespace formats them all.
            nsid = NSID_ALL
        else:
            nsid = args.namespace_id or dev.nsid or 0
        if nsid == 0:
            raise CliError("Invalid namespace ID, specify a namespace to format or use '-n 0xffffffff' to format "
                           "all namespaces on this controller.")
        prev_lbaf = 0
        if nsid != NSID_ALL:
            ns = IdentifyNamespace.from_bytes(ctrl.identify_raw(Cns.NS, nsid))
            prev_lbaf = ns.lba_format_index
            if bs:
                for i, fmt in enumerate(ns.lba_formats()):
                    if fmt.lbads and (1 << fmt.lbads) == bs and fmt.ms == 0:
                        lbaf = i
                        break
                if lbaf is None:
                    raise CliError(f"LBAF corresponding to given block size {bs} not found; "
                                   "Please correct block size, or specify LBAF directly")
            elif lbaf is None:
                lbaf = prev_lbaf
        elif lbaf is None:
            lbaf = 0
        for name, value, limit in (("secure erase settings", args.ses, 7), ("lbaf", lbaf, 63), ("pi", args.pi, 7),
                                   ("pil", args.pil, 1), ("ms", args.ms, 1)):
            if value > limit:
                raise CliError(f"invalid {name}:{value}")
        label = device_label(args.device)
        confirm_destruction(args, "format", [
            f"You are about to format {label}, namespace {nsid:#x}{'(ALL namespaces)' if nsid == NSID_ALL else ''}.",
            "WARNING: Format may irrevocably delete this device's data.",
            "You have 10 seconds to press Ctrl-C to cancel this operation.",
            "",
            "Use the force [--force] option to suppress this warning.",
        ], "Sending format operation ... ")
        cmd = FormatNvm(nsid=nsid, lbaf=lbaf, mset=bool(args.ms), pi=args.pi, pil=bool(args.pil), ses=args.ses)
        status, _ = _admin(dev, cmd, timeout_ms=args.timeout)
        show_status(status)
        print(f"Success formatting namespace:{nsid:x}")
        sys.stdout.flush()
        if args.reset and not ctrl.reset(wait=True):
            raise CliError(f"Reset: {ctrl.dead_reason or 'the controller did not come back'}")
        settle(ctrl)
    return 0


# ---------------------------------------------------------------------------
# fw-download / fw-commit


def _build_fw_download(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-f", "--fw", default="", metavar="FILE", help="firmware file (required)")
    p.add_argument("-x", "--xfer", type=dword, default=4096, metavar="NUM", help="transfer chunksize limit")
    p.add_argument("-o", "--offset", type=dword, default=0, metavar="NUM", help="starting dword offset, default 0")
    p.add_argument("-p", "--progress", action="store_true", help="display firmware transfer progress")
    p.add_argument("-i", "--ignore-ovr", action="store_true", help="ignore overwrite errors")
    p.set_defaults(func=fw_download)


command("fw-download", "Download new firmware",
        description="Copy all or part of a firmware image to a controller for future update. Optionally, specify "
                    "how many KiB of the firmware to transfer at once. The offset will start at 0 and automatically "
                    "adjust based on xfer size unless fw is split across multiple files. May be submitted while "
                    "outstanding commands exist on the Admin and IO Submission Queues. Activate downloaded "
                    "firmware with fw-activate, and then reset the device to apply the downloaded "
                    "firmware.")(_build_fw_download)


class FirmwareStash:
    """The pieces ``fw-download`` gave a device, kept in the state directory
    until ``fw-commit`` uses them.

    With the kernel, ``nvme fw-download`` and ``nvme fw-commit`` talk to the
    same controller, which holds the downloaded pieces in between (until a
    controller reset drops them).  Each of our commands opens its own
    association (a new controller), so we keep the pieces on the host side
    and give them again to the controller of the next ``fw-download`` or
    ``fw-commit`` before its own commands: the device sees the same sequence
    of commands on one controller as with the kernel.  ``reset`` and
    ``subsystem-reset`` drop them (as the device would); a successful commit
    uses them up."""

    def __init__(self, dev: Device):
        entry = dev.spec.entry
        if entry.get("transport") == "pcie":
            key = f"pcie|{os.path.abspath(entry.get('drive', ''))}"
        else:
            key = f"{entry.get('transport')}|{entry.get('traddr')}|{entry.get('trsvcid')}|{entry.get('subnqn')}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        self.path = os.path.join(state_dir(), "fw-download", digest)

    def pieces(self) -> list[tuple[int, bytes]]:
        out = []
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []
        for name in names:
            if not name.endswith(".bin"):
                continue
            try:
                offset = int(name[:-4], 16)
                with open(os.path.join(self.path, name), "rb") as f:
                    out.append((offset, f.read()))
            except (ValueError, OSError):
                continue
        return out

    def add(self, offset: int, data: bytes) -> None:
        os.makedirs(self.path, exist_ok=True)
        tmp = os.path.join(self.path, f".{offset:08x}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.path, f"{offset:08x}.bin"))

    def clear(self) -> None:
        for offset, _ in self.pieces():
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.path, f"{offset:08x}.bin"))
        with contextlib.suppress(OSError):
            os.rmdir(self.path)

    def replay(self, dev: Device, what: str) -> None:
        """Give the kept pieces to this command's controller."""
        for offset, data in self.pieces():
            status, _ = _admin(dev, FirmwareImageDownload(offset=offset, length=len(data)), bytearray(data))
            if not status.ok and not (status.sct == StatusCodeType.COMMAND_SPECIFIC
                                      and status.sc == CommandSpecificStatus.OVERLAPPING_RANGE):
                raise CliError(f"{what}: the image downloaded before could not be given to the controller again "
                               f"(offset 0x{offset:08x}): NVMe status: {status}")


def fw_download(args: argparse.Namespace) -> int:
    try:
        with open(args.fw, "rb") as f:
            image = f.read()
    except OSError as exc:
        raise CliError(f"Failed to open firmware file {args.fw}: {exc.strerror or exc}") from None
    size = len(image)
    if size % 4 or size == 0:
        raise CliError(f"Invalid size:{size} for f/w image")
    offset = (args.offset << 2) & 0xFFFFFFFF
    xfer = args.xfer
    if xfer == 0 or xfer % 4096:
        xfer = 4096
    with _open(args, io_queues=0) as dev:
        stash = FirmwareStash(dev)
        stash.replay(dev, "fw-download")
        limit = dev.ctrl.max_transfer
        if limit and xfer > limit:
            xfer = max(4, limit - limit % 4)
        out = sys.stdout
        bar = Progress("fw-download", size, enabled=not args.progress, unit="B")
        with bar:
            while offset < size:
                length = min(xfer, size - offset)
                if args.progress:
                    out.write(f"Firmware download: transferring 0x{offset:08x}/0x{size:08x} bytes: "
                              f"{100 * offset // size:03d}%\r")
                    out.flush()
                piece = image[offset:offset + length]
                sent = _fw_piece(dev, piece, offset, size, args)
                if sent is None:
                    return 1
                if sent:
                    stash.add(offset, piece)
                offset += length
                bar.update(offset)
        if args.progress:
            out.write("\n")
        print("Firmware download success")
    return 0


def _fw_piece(dev: Device, piece: bytes, offset: int, size: int, args: argparse.Namespace) -> bool | None:
    """Send one piece (nvme-cli's three tries unless DNR).  True when the
    controller took it, False for an ignored overlap, None on failure
    (reported)."""
    retries = 3
    for attempt in range(retries):
        if attempt:
            print(f"retrying offset {offset:x} ({attempt}/{retries})", file=sys.stderr)
        cmd = FirmwareImageDownload(offset=offset, length=len(piece))
        status, _ = _admin(dev, cmd, bytearray(piece))
        if status.ok:
            return True
        ovr = status.sct == StatusCodeType.COMMAND_SPECIFIC and status.sc == CommandSpecificStatus.OVERLAPPING_RANGE
        if ovr and args.ignore_ovr:
            return False
        if args.progress:
            sys.stdout.write("\n")
        sys.stdout.flush()
        print(f"fw-download: error on offset 0x{offset:08x}/0x{size:08x}", file=sys.stderr)
        print(f"NVMe status: {status}", file=sys.stderr)
        if ovr:
            print("Use --ignore-ovr to ignore overwrite errors", file=sys.stderr)
            return None
        if status.dnr:
            return None
    return None


def _build_fw_commit(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-s", "--slot", type=byte, default=0, metavar="NUM", help="[0-7]: firmware slot for commit action")
    p.add_argument("-a", "--action", type=byte, default=0, metavar="NUM", help="[0-7]: commit action")
    p.add_argument("-b", "--bpid", type=byte, default=0, metavar="NUM",
                   help="[0,1]: boot partition identifier, if applicable (default: 0)")
    p.set_defaults(func=fw_commit)


command("fw-commit", "Verify and commit firmware to a specific slot (fw-activate in old version < 1.2)",
        description="Verify downloaded firmware image and commit to specific firmware slot. Device is not "
                    "automatically reset following firmware activation. A reset may be issued with an 'echo 1 > "
                    "/sys/class/nvme/nvmeX/reset_controller'. Ensure nvmeX is the device you just activated "
                    "before reset.", aliases=("fw-activate",))(_build_fw_commit)

_RESET_KIND = {
    CommandSpecificStatus.FW_ACTIVATION_REQUIRES_CONVENTIONAL_RESET: "conventional",
    CommandSpecificStatus.FW_ACTIVATION_REQUIRES_NVM_SUBSYSTEM_RESET: "subsystem",
    CommandSpecificStatus.FW_ACTIVATION_REQUIRES_CONTROLLER_LEVEL_RESET: "any controller",
}


def fw_commit(args: argparse.Namespace) -> int:
    if args.slot > 7:
        raise CliError(f"invalid slot:{args.slot}")
    if args.action > 7 or args.action in (4, 5):
        raise CliError(f"invalid action:{args.action}")
    if args.bpid > 1:
        raise CliError(f"invalid boot partition id:{args.bpid}")
    with _open(args, io_queues=0) as dev:
        stash = FirmwareStash(dev)
        stash.replay(dev, "fw-commit")
        cmd = FirmwareCommit(fs=args.slot, ca=args.action, bpid=bool(args.bpid))
        status, result = _admin(dev, cmd)
        if status.ok or (status.sct == StatusCodeType.COMMAND_SPECIFIC and status.sc in _RESET_KIND):
            stash.clear()  # the commit took the image
        bp = f" bpid:{args.bpid}" if args.action in (6, 7) else ""
        rc = 0
        if status.ok:
            print(f"Success committing firmware action:{args.action} slot:{args.slot}{bp}")
        else:
            rc = 1
            kind = None
            if status.sct == StatusCodeType.COMMAND_SPECIFIC:
                kind = _RESET_KIND.get(status.sc)
            if kind is not None:
                print(f"Success activating firmware action:{args.action} slot:{args.slot}{bp}, "
                      f"but firmware requires {kind} reset")
            else:
                sys.stdout.flush()
                print(f"NVMe status: {status}", file=sys.stderr)
        out = [f"Multiple Update Detected (MUD) Value: {result}\n"]
        if result & 1:
            out.append("Detected an overlapping firmware/boot partition image update command sequence due to "
                       "processing a command from a Management Endpoint")
        if result >> 1 & 1:
            out.append("Detected an overlapping firmware/boot partition image update command sequence due to "
                       "processing a command from an Admin SQ on a controller")
        sys.stdout.write("".join(out))
        sys.stdout.flush()
        settle(dev.ctrl)
    return rc


# ---------------------------------------------------------------------------
# device-self-test


def _build_self_test(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-n", "--namespace-id", type=dword, default=None, metavar="NUM",
                   help="Indicate the namespace in which the device self-test has to be carried out")
    p.add_argument("-s", "--self-test-code", type=byte, default=None, metavar="NUM",
                   help="This field specifies the action taken by the device self-test command : 0h Show current "
                        "state of device self-test operation 1h Start a short device self-test operation 2h Start "
                        "a extended device self-test operation eh Start a vendor specific device self-test "
                        "operation fh Abort the device self-test operation")
    p.add_argument("-w", "--wait", action="store_true", help="Wait for the test to finish")
    p.set_defaults(func=device_self_test)


command("device-self-test", "Perform the necessary tests to observe the performance",
        description="Implementing the device self-test feature which provides the necessary log to determine the "
                    "state of the device")(_build_self_test)


def _self_test_log(dev: Device) -> DeviceSelfTestLog:
    data = dev.ctrl.get_log_page(LogPageId.DEVICE_SELF_TEST, DeviceSelfTestLog.SIZE, nsid=NSID_ALL)
    return DeviceSelfTestLog.from_bytes(data)


_DASH = "=" * 50
_SPIN = "-\\|/"


def _wait_self_test(dev: Device) -> int:
    """nvme-cli's wait: "Waiting ..." and a bar until no test runs."""
    out = sys.stdout
    tty = out.isatty() if hasattr(out, "isatty") else False
    edstt = dev.ctrl.identify.edstt
    stall_limit = edstt * 60 // 100 + 60
    print("Waiting for self test completion...")
    out.flush()
    percent = 0
    last_change = time.monotonic()
    spin = 0
    while True:
        if tty:
            out.write(f"\r[{_DASH[:percent // 2]}{_SPIN[spin % 4]}{' ' * (49 - percent // 2)}] {percent:3d}%")
            out.flush()
        time.sleep(_POLL)
        log = _self_test_log(dev)
        if log.current_operation == 0:
            out.write(f"\r[{_DASH}] {100:3d}%\n")
            out.flush()
            return 0
        if log.completion < percent:
            out.write("\n")
            raise CliError("progress broken")
        if log.completion != percent:
            percent = log.completion
            last_change = time.monotonic()
        elif time.monotonic() - last_change > stall_limit:
            raise CliError(f"no progress for {stall_limit} seconds, stop waiting")
        spin += 1


def device_self_test(args: argparse.Namespace) -> int:
    with _open(args, io_queues=0) as dev:
        stc = args.self_test_code
        drive = dev.spec.transport == "pcie"
        if stc is None or stc == 0:
            log = _self_test_log(dev)
            if log.current_operation == 0:
                print("no self test running")
            elif args.wait or drive:
                return _waiting(dev)
            else:
                print(f"progress {log.completion}%")
            return 0
        nsid = args.namespace_id if args.namespace_id is not None else (dev.nsid or NSID_ALL)
        status, _ = _admin(dev, DeviceSelfTest(nsid=nsid, stc=stc))
        show_status(status)
        if stc == SelfTestCode.ABORT:
            print("Aborting device self-test operation")
        elif stc == SelfTestCode.EXTENDED:
            print("Extended Device self-test started")
        elif stc == SelfTestCode.SHORT:
            print("Short Device self-test started")
        if stc != SelfTestCode.ABORT and (args.wait or drive):
            return _waiting(dev)
    return 0


def _waiting(dev: Device) -> int:
    try:
        return _wait_self_test(dev)
    except KeyboardInterrupt:
        print("\nInterrupted device self-test operation by Interrupt")
        status, _ = _admin(dev, DeviceSelfTest(nsid=NSID_ALL, stc=SelfTestCode.ABORT))
        show_status(status)
        print("Aborting device self-test operation")
        return 1


# ---------------------------------------------------------------------------
# sanitize


def _build_sanitize(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-d", "--no-dealloc", action="store_true", help="No deallocate after sanitize.")
    p.add_argument("-i", "--oipbp", action="store_true", help="Overwrite invert pattern between passes.")
    p.add_argument("-n", "--owpass", type=byte, default=0, metavar="NUM", help="Overwrite pass count.")
    p.add_argument("-u", "--ause", action="store_true", help="Allow unrestricted sanitize exit.")
    p.add_argument("-a", "--sanact", default=None, metavar="STRING",
                   help="Sanitize action: 1 = Exit failure mode, 2 = Start block erase, 3 = Start overwrite, "
                        "4 = Start crypto erase")
    p.add_argument("-p", "--ovrpat", type=dword, default=0, metavar="NUM", help="Overwrite pattern.")
    p.add_argument("-f", "--force", action="store_true",
                   help="The \"I know what I'm doing\" flag, skip confirmation before sending command")
    p.add_argument("-w", "--wait", action="store_true",
                   help="wait for the sanitize operation to end, following the Sanitize Status log")
    p.set_defaults(func=sanitize)


command("sanitize", "Submit a sanitize command", description="Send a sanitize command.")(_build_sanitize)

_SANACT_NAMES = (
    ("exit-failure", 1, SanitizeAction.EXIT_FAILURE_MODE),
    ("start-block-erase", 7, SanitizeAction.BLOCK_ERASE),
    ("start-overwrite", 7, SanitizeAction.OVERWRITE),
    ("start-crypto-erase", 7, SanitizeAction.CRYPTO_ERASE),
)


def parse_sanact(text: str) -> int:
    """nvme-cli's ``--sanact``: a name (or a prefix of at least the
    distinguishing length) or a number."""
    low = text.lower()
    value = 0
    for name, least, action in _SANACT_NAMES:
        if len(low) >= least and name.startswith(low):
            value = int(action)
    if value:
        return value
    try:
        return byte(text)
    except argparse.ArgumentTypeError:
        raise CliError(f"Expected byte argument for 'sanact' but got '{text}'!") from None


def sanitize(args: argparse.Namespace) -> int:
    sanact = parse_sanact(args.sanact) if args.sanact is not None else 0
    if sanact not in (SanitizeAction.EXIT_FAILURE_MODE, SanitizeAction.BLOCK_ERASE, SanitizeAction.OVERWRITE,
                      SanitizeAction.CRYPTO_ERASE):
        raise CliError("Invalid Sanitize Action")
    if sanact == SanitizeAction.EXIT_FAILURE_MODE and (args.ause or args.no_dealloc):
        raise CliError("SANACT is Exit Failure Mode")
    if sanact == SanitizeAction.OVERWRITE:
        if args.owpass > 16:
            raise CliError("OWPASS out of range [0-16]")
    elif args.owpass or args.oipbp or args.ovrpat:
        raise CliError("SANACT is not Overwrite")
    with _open(args, io_queues=0) as dev:
        if sanact != SanitizeAction.EXIT_FAILURE_MODE:
            label = device_label(args.device)
            confirm_destruction(args, "sanitize", [
                f"You are about to sanitize {label}: every namespace of its NVM subsystem.",
                "WARNING: Sanitize irrevocably deletes all user data of the NVM subsystem.",
                "You have 10 seconds to press Ctrl-C to cancel this operation.",
                "",
                "Use the force [--force] option to suppress this warning.",
            ], "Sending sanitize operation ... ")
        cmd = Sanitize(sanact=sanact, ause=args.ause, owpass=args.owpass & 0xF, oipbp=args.oipbp,
                       ndas=args.no_dealloc, ovrpat=args.ovrpat)
        status, _ = _admin(dev, cmd)
        show_status(status)
        if sanact != SanitizeAction.EXIT_FAILURE_MODE and (args.wait or dev.spec.transport == "pcie"):
            rc = _wait_sanitize(dev)
            settle(dev.ctrl)
            return rc
        settle(dev.ctrl)
    return 0


def _sanitize_log(dev: Device) -> SanitizeStatusLog:
    return SanitizeStatusLog.from_bytes(dev.ctrl.get_log_page(LogPageId.SANITIZE, SanitizeStatusLog.SIZE))


def _wait_sanitize(dev: Device) -> int:
    with Progress("sanitize", 0x10000) as bar:
        while True:
            log = _sanitize_log(dev)
            if log.status != SanitizeStatus.IN_PROGRESS:
                bar.update(0x10000)
                break
            if log.sprog != 0xFFFF:
                bar.update(log.sprog)
            time.sleep(_POLL)
    text = SSTAT_TEXT.get(log.status, "Unknown")
    if log.status == SanitizeStatus.FAILED:
        raise CliError(f"sanitize: {text}")
    print(text)
    return 0


# ---------------------------------------------------------------------------
# admin-passthru / io-passthru


def _build_passthru(admin: bool):
    def build(p: argparse.ArgumentParser) -> None:
        _add_device(p)
        p.add_argument("-o", "--opcode", type=byte, default=None, metavar="NUM", help="opcode (required)")
        p.add_argument("-f", "--flags", type=byte, default=0, metavar="NUM", help="command flags")
        p.add_argument("-p", "--prefill", type=byte, default=0, metavar="NUM",
                       help="prefill buffers with known byte-value, default 0")
        p.add_argument("-R", "--rsvd", type=word, default=0, metavar="NUM", help="value for reserved field")
        p.add_argument("-n", "--namespace-id", type=dword, default=None, metavar="NUM", help="desired namespace")
        p.add_argument("-l", "--data-len", type=dword, default=0, metavar="NUM", help="data I/O length (bytes)")
        p.add_argument("-m", "--metadata-len", type=dword, default=0, metavar="NUM",
                       help="metadata seg. length (bytes)")
        p.add_argument("-t", "--timeout", type=dword, default=0, metavar="NUM", help="timeout value, in milliseconds")
        for flag, name in (("2", "cdw2"), ("3", "cdw3"), ("4", "cdw10"), ("5", "cdw11"), ("6", "cdw12"),
                           ("7", "cdw13"), ("8", "cdw14"), ("9", "cdw15")):
            p.add_argument(f"-{flag}", f"--{name}", type=dword, default=0, metavar="NUM",
                           help=f"command dword {name[3:]} value")
        p.add_argument("-i", "--input-file", default="", metavar="FILE", help="data input or output file")
        p.add_argument("-M", "--metadata", default="", metavar="FILE", help="metadata input or output file")
        p.add_argument("-b", "--raw-binary", action="store_true", help="dump output in binary format")
        p.add_argument("-s", "--show-command", action="store_true", help="print command before sending")
        p.add_argument("-d", "--dry-run", action="store_true", help="show command instead of sending")
        p.add_argument("-r", "--read", action="store_true", help="set dataflow direction to receive")
        p.add_argument("-w", "--write", action="store_true", help="set dataflow direction to send")
        p.add_argument("-T", "--latency", action="store_true", help="output latency statistics")
        p.set_defaults(func=passthru, admin=admin)

    return build


command("admin-passthru", "Submit an arbitrary admin command, return results",
        description="Send a user-defined Admin command to the specified device via IOCTL passthrough, return "
                    "results.")(_build_passthru(True))
command("io-passthru", "Submit an arbitrary IO command, return results",
        description="Send a user-defined IO command to the specified device via IOCTL passthrough, return "
                    "results.")(_build_passthru(False))


def _address(buf: bytearray | None) -> int:
    if not buf:
        return 0
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def _open_user_file(path: str, output: bool) -> Any:
    """A data file of a command: written (created, not truncated, as
    nvme-cli opens it) when the command reads from the device, else read."""
    try:
        if output:
            return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT, 0o664), "wb")
        return open(path, "rb")
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None


def _read_input(fileobj: Any, size: int) -> bytes:
    chunks = []
    left = size
    while left > 0:
        data = fileobj.read(left)
        if not data:
            break
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def passthru(args: argparse.Namespace) -> int:
    admin = args.admin
    if args.opcode is None:
        raise CliError(f"{'admin' if admin else 'io'}-passthru: opcode (-o/--opcode) is required")
    if args.flags:
        raise CliError("passthru: Invalid argument (the command flags must be 0, as Linux requires)")
    opcode = args.opcode
    write = args.write or bool(opcode & 1)
    read = args.read or bool(opcode & 2)
    if read and write and args.data_len:
        raise CliError(f"{'admin' if admin else 'io'}-passthru: opcode {opcode:#04x} moves data both ways: "
                       "not supported (give a data length of 0)")
    files: list[Any] = []
    try:
        infile = _open_user_file(args.input_file, read) if args.input_file else None
        if infile is not None:
            files.append(infile)
        metafile = _open_user_file(args.metadata, read) if args.metadata else None
        if metafile is not None:
            files.append(metafile)
        meta = None
        if args.metadata_len:
            meta = bytearray([args.prefill]) * args.metadata_len
            if write:
                src = metafile if metafile is not None else sys.stdin.buffer
                got = _read_input(src, args.metadata_len)
                meta[:len(got)] = got
        data = None
        if args.data_len:
            data = bytearray([args.prefill]) * args.data_len
            if not read and not write:
                raise CliError("data direction not given")
            if write:
                src = infile if infile is not None else sys.stdin.buffer
                got = _read_input(src, args.data_len)
                data[:len(got)] = got
        if args.show_command or args.dry_run:
            nsid_shown = args.namespace_id or 0
            print("\n".join([
                f"opcode       : {opcode:02x}",
                f"flags        : {args.flags:02x}",
                f"rsvd1        : {args.rsvd:04x}",
                f"nsid         : {nsid_shown:08x}",
                f"cdw2         : {args.cdw2:08x}",
                f"cdw3         : {args.cdw3:08x}",
                f"data_len     : {args.data_len:08x}",
                f"metadata_len : {args.metadata_len:08x}",
                f"addr         : {_address(data):x}",
                f"metadata     : {_address(meta):x}",
                f"cdw10        : {args.cdw10:08x}",
                f"cdw11        : {args.cdw11:08x}",
                f"cdw12        : {args.cdw12:08x}",
                f"cdw13        : {args.cdw13:08x}",
                f"cdw14        : {args.cdw14:08x}",
                f"cdw15        : {args.cdw15:08x}",
                f"timeout_ms   : {args.timeout:08x}",
            ]))
            sys.stdout.flush()
        if args.dry_run:
            return 0
        with _open(args, io_queues=0 if admin else 1) as dev:
            nsid = args.namespace_id if args.namespace_id is not None else (dev.nsid or 0)
            cmd = Command()
            cmd.opcode = opcode
            cmd.nsid = nsid
            for name in ("cdw2", "cdw3", "cdw10", "cdw11", "cdw12", "cdw13", "cdw14", "cdw15"):
                setattr(cmd, name, getattr(args, name))
            if read and write:
                direction = 3
            elif write:
                direction = DIR_TO_DEVICE
            elif read:
                direction = DIR_FROM_DEVICE
            else:
                direction = DIR_NONE
            timeout = args.timeout / 1000 if args.timeout else None
            start = time.perf_counter()
            if admin:
                status, result = dev.ctrl.admin_passthru(cmd, data, meta, timeout=timeout,
                                                         direction=direction if data is not None else None)
            else:
                status, result = dev.ctrl.io_passthru(cmd, data, meta, timeout=timeout,
                                                      direction=direction if data is not None else None)
            elapsed = int((time.perf_counter() - start) * 1e6)
            name = command_name(admin, opcode)
            kind = "Admin" if admin else "IO"
            if args.latency:
                print(f"{kind} Command {name} latency: {elapsed} us")
                sys.stdout.flush()
            show_status(status)
            settle(dev.ctrl)
        sys.stdout.flush()
        print(f"{kind} Command {name} is Success and result: 0x{result:08x}", file=sys.stderr)
        if read and infile is not None:
            if data is not None:
                infile.write(data)
            if meta is not None and metafile is not None:
                metafile.write(meta)
        elif not args.raw_binary:
            if data is not None and read:
                sys.stdout.write(hexdump(data))
        elif data is not None and read:
            sys.stdout.flush()
            sys.stdout.buffer.write(bytes(data))
        sys.stdout.flush()
        return 0
    finally:
        for f in files:
            with contextlib.suppress(OSError):
                f.close()


# ---------------------------------------------------------------------------
# reset / subsystem-reset


def _build_reset(func):
    def build(p: argparse.ArgumentParser) -> None:
        _add_device(p)
        p.set_defaults(func=func)

    return build


def reset(args: argparse.Namespace) -> int:
    with _open(args, io_queues=0) as dev:
        ctrl = dev.ctrl
        try:
            ok = ctrl.reset(wait=True, timeout=max(30.0, ctrl.ready_timeout * 2 + 5))
        except Exception as exc:  # noqa: BLE001 - said in one line
            raise CliError(f"Reset: {exc}") from None
        FirmwareStash(dev).clear()  # a Controller Level Reset drops a download
        if not ok:
            raise CliError(f"Reset: {ctrl.dead_reason or 'the controller did not come back'}")
        settle(ctrl)
    return 0


def subsystem_reset(args: argparse.Namespace) -> int:
    with _open(args, io_queues=0) as dev:
        ctrl = dev.ctrl
        if not (ctrl.cap >> 36) & 1:  # CAP.NSSRS
            raise CliError("Subsystem-reset: NVM Subsystem Reset not supported.")
        try:
            ctrl.transport.reg_write32(Reg.NSSR, NSSR_SIGNATURE)
            FirmwareStash(dev).clear()
            ok = ctrl.reset(wait=True, timeout=max(30.0, ctrl.ready_timeout * 2 + 5))
        except Exception as exc:  # noqa: BLE001 - said in one line
            raise CliError(f"Subsystem-reset: {exc}") from None
        if not ok:
            raise CliError(f"Subsystem-reset: {ctrl.dead_reason or 'the controller did not come back'}")
        settle(ctrl)
    return 0


command("reset", "Resets the controller", description="Resets the NVMe controller")(_build_reset(reset))
command("subsystem-reset", "Resets the subsystem",
        description="Resets the NVMe subsystem")(_build_reset(subsystem_reset))

