"""Identify and log page commands, as nvme-cli 2.3 has them: ``id-ctrl``,
``id-ns``, ``ns-descs``, ``get-log``, ``smart-log``, ``error-log``,
``fw-log``, ``effects-log``, ``changed-ns-list-log``, ``self-test-log``,
``sanitize-log`` and ``show-regs``.

Same options (long and short, as ``nvme <cmd> --help`` of 2.3 lists them:
``id-ns --force`` has no short form), the same commands on the wire (NSIDs,
log lengths, RAE, CSI, 4 KiB chunks for ``get-log``) and the same output
(:mod:`.output`, checked byte for byte against the real nvme-cli).

Namespaces: ``id-ns`` and ``ns-descs`` take ``-n``, else the namespace of
the device (``nvme0n1``, ``tcp://...?nsid=N``); on a controller device
without ``-n`` they fail as nvme-cli does (its NVME_IOCTL_ID on a character
device).  ``smart-log`` and ``get-log`` default to FFFFFFFFh whatever the
device names, as nvme-cli 2.3 does.

Where nvme-cli 2.3 misbehaves we do what it means to do, and say so here:

* ``show-regs`` over NVMe/TCP reads CAP through CMBSZ with Property Get, as
  nvme-cli does for a Fabrics controller, and leaves out the registers the
  controller has no property for (Invalid Field in Command).  nvme-cli 2.3
  only recognises that status without DNR, so against a real target (which
  sets DNR) it prints garbage and fails.  Over PCIe the registers are read
  from BAR0 through the PCIe transport, as nvme-cli maps BAR0.
* ``effects-log`` without ``--csi`` takes CAP.CSS from the host driver (read
  at initialisation, from BAR0 or by Property Get); nvme-cli 2.3 prints
  nothing for a Fabrics controller, whose BAR it cannot map.
* ``sanitize-log -b`` writes the log page only (2.3 adds the text after it);
  ``self-test-log -o binary`` writes the log page (2.3 writes nothing).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..spec.admin import GetLogPage, Identify
from ..spec.fabrics import PropertyGet
from ..spec.identify import IdentifyController, IdentifyNamespace
from ..spec.log import (
    ChangedNamespaceList,
    CommandsSupportedAndEffects,
    DeviceSelfTestLog,
    ErrorInformationEntry,
    FirmwareSlotLog,
    LogPageId,
    SanitizeStatusLog,
    SmartLog,
)
from ..spec.registers import REGISTER_FILE_SIZE, Reg
from ..spec.status import GenericStatus, StatusCodeType
from . import output as out
from .common import (
    CliError,
    StatusError,
    add_human,
    add_output_format,
    byte,
    command,
    dword,
    number,
    output_format,
    print_json,
    show_status,
    word,
    write_binary,
)
from .devices import Device, open_device, parse_device

__all__ = ["NSID_ALL", "LOG_CHUNK"]

NSID_ALL = 0xFFFFFFFF
#: get-log reads a log in pieces of this many bytes (libnvme's
#: nvme_get_log_page with NVME_LOG_PAGE_PDU_SIZE), RAE set on all but the last.
LOG_CHUNK = 4096
CNS_NS = 0x00
CNS_CTRL = 0x01
CNS_NS_DESCS = 0x03
CNS_ALLOCATED_NS = 0x11
#: nvme-cli's message for a namespace command on a controller device without
#: -n (NVME_IOCTL_ID fails with ENOTTY on /dev/nvme0).
NO_NSID = "get-namespace-id: Inappropriate ioctl for device"

_DEVICE_HELP = "nvme0, /dev/nvme0, nvme0n1, tcp://ADDR[:PORT]/NQN[?nsid=N] or a drive directory"


# ---------------------------------------------------------------------------
# helpers


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", metavar="DEVICE", help=_DEVICE_HELP)


def _device_name(text: str) -> str:
    """The device as nvme-cli names it in its output (the basename of a
    /dev path); an address or a drive directory as given."""
    return os.path.basename(text.rstrip("/")) if text.startswith("/dev/") else text


def _open(args: argparse.Namespace) -> Any:
    """The device of the command, brought up with the admin queue only."""
    return open_device(args.device, io_queues=0)


def _namespace(args: argparse.Namespace) -> int:
    """``-n`` when given (non-zero), else the namespace the device names,
    else nvme-cli's failure on a controller device."""
    if args.namespace_id:
        return args.namespace_id
    nsid = parse_device(args.device).nsid
    if not nsid:
        raise CliError(NO_NSID)
    return nsid


def _admin(dev: Device, cmd: Any, data: Any = None) -> None:
    """Run an admin command; an error status is the command's failure."""
    status, _ = dev.ctrl.admin_passthru(cmd, data)
    show_status(status)


def _identify(dev: Device, cns: int, nsid: int = 0) -> bytearray:
    buf = bytearray(4096)
    _admin(dev, Identify(cns=cns, nsid=nsid), buf)
    return buf


def _log_command(lid: int, length: int, *, nsid: int = NSID_ALL, rae: bool = False, lsp: int = 0, lsi: int = 0,
                 offset: int = 0, csi: int = 0, ot: bool = False, uuidx: int = 0) -> GetLogPage:
    """Get Log Page as libnvme builds it: NUMD = length / 4 - 1, LSP and
    the UUID index cut to their 7 bits, the offset as given (not checked
    for alignment: that is the controller's to refuse)."""
    cmd = GetLogPage(lid=lid, nsid=nsid, rae=rae, lsp=lsp & 0x7F, lsi=lsi, ot=ot, csi=csi)
    cmd.uuidx = uuidx & 0x7F
    cmd.numd = (length >> 2) - 1
    cmd.lpol = offset & 0xFFFFFFFF
    cmd.lpou = offset >> 32
    return cmd


def _get_log(dev: Device, lid: int, length: int, **fields: Any) -> bytearray:
    """One Get Log Page of ``length`` bytes (a whole number of dwords)."""
    buf = bytearray(length)
    _admin(dev, _log_command(lid, length, **fields), buf)
    return buf


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _is_fabrics(dev: Device) -> bool:
    return getattr(dev.ctrl.transport, "name", "") == "tcp"


# ---------------------------------------------------------------------------
# id-ctrl


@command("id-ctrl", "Send NVMe Identify Controller",
         description="Send an Identify Controller command to the given device and report information about the "
                     "specified controller in human-readable or binary format. May also return vendor-specific "
                     "controller attributes in hex-dump if requested.")
def _build_id_ctrl(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-v", "--vendor-specific", action="store_true", help="dump binary vendor field")
    add_output_format(p)
    p.add_argument("-b", "--raw-binary", action="store_true", help="show identify in binary format")
    add_human(p, "show identify in readable format")
    p.set_defaults(func=id_ctrl)


def id_ctrl(args: argparse.Namespace) -> None:
    fmt = output_format(args)
    with _open(args) as dev:
        data = _identify(dev, CNS_CTRL)
    ctrl = IdentifyController.view(data)
    if fmt == "binary":
        write_binary(data)
    elif fmt == "json":
        print_json(out.id_ctrl_json(ctrl))
    else:
        _emit(out.id_ctrl_text(ctrl, human=args.human_readable, vendor=args.vendor_specific))


# ---------------------------------------------------------------------------
# id-ns


@command("id-ns", "Send NVMe Identify Namespace, display structure",
         description="Send an Identify Namespace command to the given device, returns properties of the specified "
                     "namespace in either human-readable or binary format. Can also return binary vendor-specific "
                     "namespace attributes.")
def _build_id_ns(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-n", "--namespace-id", type=dword, default=0, metavar="NUM",
                   help="identifier of desired namespace")
    p.add_argument("--force", action="store_true",
                   help="Return this namespace, even if not attached (1.2 devices only)")
    p.add_argument("-v", "--vendor-specific", action="store_true", help="dump binary vendor fields")
    p.add_argument("-b", "--raw-binary", action="store_true", help="show identify in binary format")
    add_output_format(p)
    add_human(p, "show identify in readable format")
    p.set_defaults(func=id_ns)


def id_ns(args: argparse.Namespace) -> None:
    fmt = output_format(args)
    nsid = _namespace(args)
    with _open(args) as dev:
        data = _identify(dev, CNS_ALLOCATED_NS if args.force else CNS_NS, nsid)
    ns = IdentifyNamespace.view(data)
    if fmt == "binary":
        write_binary(data)
    elif fmt == "json":
        print_json(out.id_ns_json(ns))
    else:
        _emit(out.id_ns_text(ns, out.s32(nsid), human=args.human_readable, vendor=args.vendor_specific))


# ---------------------------------------------------------------------------
# ns-descs


@command("ns-descs", "Send NVMe Namespace Descriptor List, display structure",
         description="Send Namespace Identification Descriptors command to the given device, returns the namespace "
                     "identification descriptors of the specific namespace in either human-readable or binary "
                     "format.")
def _build_ns_descs(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-n", "--namespace-id", type=dword, default=0, metavar="NUM",
                   help="identifier of desired namespace")
    add_output_format(p)
    p.add_argument("-b", "--raw-binary", action="store_true", help="show descriptors in binary format")
    p.set_defaults(func=ns_descs)


def ns_descs(args: argparse.Namespace) -> None:
    fmt = output_format(args)
    nsid = _namespace(args)
    with _open(args) as dev:
        data = _identify(dev, CNS_NS_DESCS, nsid)
    if fmt == "binary":
        write_binary(data)
    elif fmt == "json":
        print_json(out.ns_descs_json(data))
    else:
        _emit(out.ns_descs_text(data, out.s32(nsid)))


# ---------------------------------------------------------------------------
# get-log


@command("get-log", "Generic NVMe get log, returns log in raw format",
         description="Retrieve desired number of bytes from a given log on a specified device in either hex-dump "
                     "(default) or binary format")
def _build_get_log(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-n", "--namespace-id", type=dword, default=NSID_ALL, metavar="NUM", help="desired namespace")
    p.add_argument("-i", "--log-id", type=byte, default=0xFF, metavar="NUM", help="identifier of log to retrieve")
    p.add_argument("-l", "--log-len", type=dword, default=0, metavar="NUM", help="how many bytes to retrieve")
    p.add_argument("-a", "--aen", type=dword, default=0, metavar="NUM",
                   help="result of the aen, use to override log id")
    p.add_argument("-o", "--lpo", type=number, default=0, metavar="IONUM",
                   help="log page offset specifies the location within a log page from where to start returning "
                        "data")
    p.add_argument("-s", "--lsp", type=byte, default=0, metavar="NUM", help="log specific field")
    p.add_argument("-S", "--lsi", type=word, default=0, metavar="NUM",
                   help="log specific identifier specifies an identifier that is required for a particular log "
                        "page")
    p.add_argument("-r", "--rae", action="store_true", help="Retain an Asynchronous Event")
    p.add_argument("-U", "--uuid-index", type=byte, default=0, metavar="NUM", help="UUID index")
    p.add_argument("-b", "--raw-binary", action="store_true", help="output in raw format")
    p.add_argument("-y", "--csi", type=byte, default=0, metavar="NUM", help="command set identifier")
    p.add_argument("-O", "--ot", action="store_true", help="offset type")
    p.set_defaults(func=get_log)


def get_log(args: argparse.Namespace) -> None:
    lid, length = args.log_id, args.log_len
    if args.aen:
        length = 4096
        lid = (args.aen >> 16) & 0xFF
    if not length:
        raise CliError("non-zero log-len is required param")
    if args.lsp > 128:
        raise CliError("invalid lsp param")
    if args.uuid_index > 128:
        raise CliError("invalid uuid index param")
    if args.lpo >= 1 << 64:
        raise CliError(f"invalid log page offset {args.lpo}")
    data = bytearray(length)
    with _open(args) as dev:
        done = 0
        while done < length:
            piece = min(LOG_CHUNK, length - done)
            words = piece & ~3
            if words == 0:
                raise CliError(f"get-log: log-len {length} leaves a piece of {piece} bytes, less than a dword")
            buf = bytearray(words)
            cmd = _log_command(lid, words, nsid=args.namespace_id, rae=args.rae or done + piece < length,
                               lsp=args.lsp, lsi=args.lsi, offset=(args.lpo + done) & ((1 << 64) - 1),
                               csi=args.csi, ot=args.ot, uuidx=args.uuid_index)
            _admin(dev, cmd, buf)
            # A length that is not a whole number of dwords: the last bytes
            # are not transferred (libnvme's NUMD); they read as zero.
            data[done : done + words] = buf
            done += piece
    if args.raw_binary:
        write_binary(data)
    else:
        _emit(out.get_log_text(data, _device_name(args.device), lid, args.namespace_id))


# ---------------------------------------------------------------------------
# smart-log


@command("smart-log", "Retrieve SMART Log, show it",
         description="Retrieve SMART log for the given device (or optionally a namespace) in either decoded format "
                     "(default) or binary.")
def _build_smart_log(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-n", "--namespace-id", type=dword, default=NSID_ALL, metavar="NUM",
                   help="(optional) desired namespace")
    add_output_format(p)
    p.add_argument("-b", "--raw-binary", action="store_true", help="output in binary format")
    add_human(p, "show info in readable format")
    p.set_defaults(func=smart_log)


def smart_log(args: argparse.Namespace) -> None:
    fmt = output_format(args)
    with _open(args) as dev:
        data = _get_log(dev, LogPageId.SMART, SmartLog.SIZE, nsid=args.namespace_id)
    log = SmartLog.view(data)
    if fmt == "binary":
        write_binary(data)
    elif fmt == "json":
        print_json(out.smart_log_json(log, human=args.human_readable))
    else:
        _emit(out.smart_log_text(log, _device_name(args.device), args.namespace_id, human=args.human_readable))


# ---------------------------------------------------------------------------
# error-log


@command("error-log", "Retrieve Error Log, show it",
         description="Retrieve specified number of error log entries from a given device in either decoded format "
                     "(default) or binary.")
def _build_error_log(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-e", "--log-entries", type=dword, default=64, metavar="NUM",
                   help="number of entries to retrieve")
    add_output_format(p)
    p.add_argument("-b", "--raw-binary", action="store_true", help="dump in binary format")
    p.set_defaults(func=error_log)


def error_log(args: argparse.Namespace) -> None:
    fmt = output_format(args)
    if not args.log_entries:
        raise CliError("non-zero log-entries is required param")
    with _open(args) as dev:
        # nvme-cli asks for no more entries than the controller keeps (ELPE + 1).
        entries = min(args.log_entries, dev.ctrl.identify.elpe + 1)
        data = _get_log(dev, LogPageId.ERROR, entries * ErrorInformationEntry.SIZE)
        fabrics = _is_fabrics(dev)
    log = [ErrorInformationEntry.view(data, i * ErrorInformationEntry.SIZE) for i in range(entries)]
    if fmt == "binary":
        write_binary(data)
    elif fmt == "json":
        print_json(out.error_log_json(log))
    else:
        _emit(out.error_log_text(log, _device_name(args.device), fabrics=fabrics))


# ---------------------------------------------------------------------------
# fw-log


@command("fw-log", "Retrieve FW Log, show it",
         description="Retrieve the firmware log for the specified device in either decoded format (default) or "
                     "binary.")
def _build_fw_log(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    add_output_format(p)
    p.add_argument("-b", "--raw-binary", action="store_true", help="use binary output")
    p.set_defaults(func=fw_log)


def fw_log(args: argparse.Namespace) -> None:
    fmt = output_format(args)
    with _open(args) as dev:
        data = _get_log(dev, LogPageId.FW_SLOT, FirmwareSlotLog.SIZE)
    log = FirmwareSlotLog.view(data)
    name = _device_name(args.device)
    if fmt == "binary":
        write_binary(data)
    elif fmt == "json":
        print_json(out.fw_log_json(log, name))
    else:
        _emit(out.fw_log_text(log, name))


# ---------------------------------------------------------------------------
# effects-log


@command("effects-log", "Retrieve Command Effects Log, show it",
         description="Retrieve command effects log page and print the table.")
def _build_effects_log(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    add_output_format(p)
    add_human(p, "show log in readable format")
    p.add_argument("-b", "--raw-binary", action="store_true", help="show log in binary format")
    p.add_argument("-c", "--csi", type=_csi, default=-1, metavar="NUM",
                   help="command set identifier (default, or negative: every command set CAP.CSS lists)")
    p.set_defaults(func=effects_log)


def _csi(text: str) -> int:
    """nvme-cli's ``--csi`` is an int: negative means "from CAP.CSS"."""
    t = text.strip()
    if t.startswith("-"):
        number(t[1:])
        return -1
    value = number(t)
    if value > 0xFF:
        raise argparse.ArgumentTypeError(f"command set identifier {text!r} is out of range (0-255)")
    return value


CSI_NVM = 0x00
CSI_ZNS = 0x02
_CAP_CSS_NVM = 1 << 0  # CAP.CSS bit 0
_CAP_CSS_IOCS = 1 << 6  # CAP.CSS bit 6: one or more I/O command sets (nvme-cli then asks for ZNS)


def effects_log(args: argparse.Namespace) -> None:
    fmt = output_format(args)
    pages: list[tuple[int, CommandsSupportedAndEffects]] = []
    with _open(args) as dev:
        if args.csi < 0:
            css = (dev.ctrl.cap >> 37) & 0xFF
            wanted = ([CSI_NVM] if css & _CAP_CSS_NVM else []) + ([CSI_ZNS] if css & _CAP_CSS_IOCS else [])
        else:
            wanted = [args.csi]
        for csi in wanted:
            data = _get_log(dev, LogPageId.CMD_EFFECTS, CommandsSupportedAndEffects.SIZE, csi=csi)
            pages.append((csi, CommandsSupportedAndEffects.view(data)))
    pages.reverse()  # nvme-cli lists the last page read first
    if fmt == "binary":
        write_binary(b"".join(bytes(page) for _, page in pages))
    elif fmt == "json":
        print_json(out.effects_log_json(pages))
    else:
        _emit(out.effects_log_text(pages, human=args.human_readable))


# ---------------------------------------------------------------------------
# changed-ns-list-log


@command("changed-ns-list-log", "Retrieve Changed Namespace List, show it",
         description="Retrieve Changed Namespaces log for the given device in either decoded format (default) or "
                     "binary.")
def _build_changed_ns(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    add_output_format(p)
    p.add_argument("-b", "--raw-binary", action="store_true", help="output in binary format")
    p.set_defaults(func=changed_ns_list_log)


def changed_ns_list_log(args: argparse.Namespace) -> None:
    fmt = output_format(args)
    with _open(args) as dev:
        # nvme-cli retains the Namespace Attribute Changed event (RAE).
        data = _get_log(dev, LogPageId.CHANGED_NS, ChangedNamespaceList.SIZE, rae=True)
    log = ChangedNamespaceList.view(data)
    if fmt == "binary":
        write_binary(data)
    elif fmt == "json":
        obj = out.changed_ns_list_json(log, _device_name(args.device))
        if obj is not None:  # nvme-cli 2.3 prints nothing after an overflow
            print_json(obj)
    else:
        _emit(out.changed_ns_list_text(log))


# ---------------------------------------------------------------------------
# self-test-log


@command("self-test-log", "Retrieve the SELF-TEST Log, show it",
         description="Retrieve the self-test log for the given device and given test (or optionally a namespace) "
                     "in either decoded format (default) or binary.")
def _build_self_test_log(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-e", "--dst-entries", type=byte, default=DeviceSelfTestLog.MAX_RESULTS, metavar="NUM",
                   help="Indicate how many DST log entries to be retrieved, by default all the 20 entries will be "
                        "retrieved")
    add_output_format(p)
    p.add_argument("-v", "--verbose", action="store_true", help="Increase output verbosity")
    p.set_defaults(func=self_test_log)


def self_test_log(args: argparse.Namespace) -> None:
    fmt = output_format(args)
    with _open(args) as dev:
        data = _get_log(dev, LogPageId.DEVICE_SELF_TEST, DeviceSelfTestLog.SIZE)
    log = DeviceSelfTestLog.view(data)
    if fmt == "binary":
        write_binary(data)
    elif fmt == "json":
        print_json(out.self_test_log_json(log, args.dst_entries))
    else:
        _emit(out.self_test_log_text(log, args.dst_entries, _device_name(args.device), verbose=args.verbose))


# ---------------------------------------------------------------------------
# sanitize-log


@command("sanitize-log", "Retrieve sanitize log, show it",
         description="Retrieve sanitize log and show it.")
def _build_sanitize_log(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-r", "--rae", action="store_true", help="Retain an Asynchronous Event")
    add_output_format(p)
    add_human(p, "show log in readable format")
    p.add_argument("-b", "--raw-binary", action="store_true", help="show log in binary format")
    p.set_defaults(func=sanitize_log)


def sanitize_log(args: argparse.Namespace) -> None:
    fmt = output_format(args)
    with _open(args) as dev:
        data = _get_log(dev, LogPageId.SANITIZE, SanitizeStatusLog.SIZE, rae=args.rae)
    log = SanitizeStatusLog.view(data)
    if fmt == "binary":
        write_binary(data)
    elif fmt == "json":
        print_json(out.sanitize_log_json(log, _device_name(args.device)))
    else:
        _emit(out.sanitize_log_text(log, human=args.human_readable))


# ---------------------------------------------------------------------------
# show-regs

#: The registers nvme-cli reads with Property Get from a Fabrics controller:
#: CAP through CMBSZ, 8 bytes at a time for the 64-bit ones.
FABRICS_RANGE_END = Reg.CMBSZ + 4
_WIDE = frozenset({Reg.CAP, Reg.ASQ, Reg.ACQ})


def _read_bar(dev: Device) -> bytearray:
    """The register file image over PCIe: BAR0 from 0 to the end of PMRMSCU,
    one dword at a time through the PCIe transport."""
    image = bytearray(REGISTER_FILE_SIZE)
    transport = dev.ctrl.transport
    for offset in range(0, out.REGS_SIZE, 4):
        image[offset : offset + 4] = (transport.reg_read32(offset) & 0xFFFFFFFF).to_bytes(4, "little")
    return image


def _read_properties(dev: Device) -> bytearray:
    """The register file image over Fabrics: Property Get for each register
    from CAP to CMBSZ; a register the controller has no property for (Invalid
    Field in Command, with or without DNR) reads as all ones."""
    image = bytearray(b"\xff" * REGISTER_FILE_SIZE)
    offset = Reg.CAP
    while offset < FABRICS_RANGE_END:
        size = 8 if offset in _WIDE else 4
        cmd = PropertyGet(ofst=offset, attrib_size=1 if size == 8 else 0)
        req = dev.ctrl.submit(cmd, qid=0, retry=False)
        req.wait()
        if req.error is not None:
            raise req.error
        status = req.status
        if status.ok:
            value = (req.result | req.dw1 << 32) if size == 8 else req.result
            image[offset : offset + size] = value.to_bytes(size, "little")
        elif not (status.sct == StatusCodeType.GENERIC and status.sc == GenericStatus.INVALID_FIELD):
            raise StatusError(status)
        offset += size
    return image


@command("show-regs", "Shows the controller registers or properties. Requires character device",
         description="Reads and shows the defined NVMe controller registers in binary or human-readable format")
def _build_show_regs(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    add_output_format(p)
    add_human(p, "show info in readable format in case of output_format == normal")
    p.set_defaults(func=show_regs)


def show_regs(args: argparse.Namespace) -> None:
    fmt = output_format(args)
    with _open(args) as dev:
        fabrics = _is_fabrics(dev)
        image = _read_properties(dev) if fabrics else _read_bar(dev)
    if fmt == "binary":
        write_binary(image[: out.REGS_SIZE])
    elif fmt == "json":
        print_json(out.show_regs_json(image))
    else:
        _emit(out.show_regs_text(image, fabrics=fabrics, human=args.human_readable))
