"""``get-feature`` and ``set-feature``, as nvme-cli 2.3 has them.

Same options (``-n -f -s -l -b -c -U -H``; ``-n -f -v -c -U -l -d -s``),
the same text (:mod:`.output_features`), the same commands on the wire
(NSID FFFFFFFFh unless a namespace is named, the data length libnvme gives
each feature) and the same exit statuses.  Two behaviours of nvme-cli that
look odd are kept on purpose, since scripts see them:

* ``get-feature`` without ``-f`` walks FIDs 00h..FFh and skips a feature
  whose status is exactly Invalid Field in Command (0002h).  A controller
  that sets Do Not Retry (4002h, as ours and most do) ends the walk at FID
  00h with that status, exit 1.  The exit status of a full walk is that of
  its last FID.
* ``-s 8`` ("changed") reads the current and the default value and prints
  the feature when they differ -- or when both have a data buffer and the
  buffers compare equal as C strings (nvme-cli's ``!strcmp``).

Feature values belong to a controller.  Each command here brings up its own
association (``nvmestack`` keeps no controller between commands, see
:mod:`.devices`), so a value set without ``--save`` is gone when
``set-feature`` ends; a saved value (``-s``) is what the next controller
starts with.
"""

from __future__ import annotations

import argparse
import sys

from ..spec.admin import GetFeatures, SetFeatures
from ..spec.features import FeatureId, feature_data_length
from ..spec.status import Status
from . import output_features as out
from .common import CliError, byte, command, dword, number, show_status, write_binary
from .devices import open_device

__all__ = ["nvme_cli_data_length"]

NSID_ALL = 0xFFFFFFFF
SEL_CHANGED = 8  # nvme-cli's pseudo-select: current differs from default
INVALID_FIELD = 0x0002  # the one status the walk skips (DNR clear)
FID_FDP_EVENTS = 0x1E
FDP_EVENTS_DATA = 510  # libnvme, Get Features only: 255 two-byte FDP event descriptors


def nvme_cli_data_length(fid: int, cdw11: int = 0, *, host_to_controller: bool = False) -> int:
    """The data length libnvme 1.3 gives a Get (or Set) Features of ``fid``
    when ``--data-len`` is not given (``nvme_get_feature_length2``)."""
    if fid == FID_FDP_EVENTS:
        return 0 if host_to_controller else FDP_EVENTS_DATA
    try:
        return feature_data_length(fid, cdw11, host_to_controller=host_to_controller)
    except ValueError:
        return 0


def _value(text: str) -> int:
    """``--value``: nvme-cli's 64-bit suffixed integer (``1k`` is 1024,
    ``0x``/``0`` prefixes; a negative number wraps as strtoull does)."""
    t = text.strip()
    neg = t.startswith("-")
    try:
        value = number(t[1:] if neg else t)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a 64-bit number but got {text!r}") from None
    if value >> 64:
        raise argparse.ArgumentTypeError(f"{text!r} does not fit in 64 bits")
    return (-value) & ((1 << 64) - 1) if neg else value


def _nsid(args: argparse.Namespace, dev) -> int:
    if args.namespace_id:
        return args.namespace_id
    return dev.nsid if dev.nsid else NSID_ALL


def _uuid_check(uuid_index: int) -> None:
    if uuid_index > 128:
        raise CliError(f"invalid uuid index param: {uuid_index}")


# -- get-feature ---------------------------------------------------------------------------------


def _get_one(ctrl, fid: int, sel: int, nsid: int, cdw11: int, uuid_index: int, data_len: int):
    """One Get Features as nvme-cli's get_feature_id: (status, dw0, data)."""
    if not data_len:
        data_len = nvme_cli_data_length(fid, cdw11)
    if fid == FID_FDP_EVENTS:
        # nvme-cli asks for all 255 event types (CDW11 bits 23:16)
        data_len = FDP_EVENTS_DATA
        cdw11 |= 0xFF << 16
    if fid == FeatureId.HOST_ID and cdw11 & 1:
        data_len = 16
    if sel == 3:
        data_len = 0
    buf = bytearray(data_len) if data_len else None
    cmd = GetFeatures(fid=fid, nsid=nsid, sel=sel & 7, cdw11=cdw11, uuidx=uuid_index & 0x7F)
    status, dw0 = ctrl.admin_passthru(cmd, buf)
    return status, dw0 & 0xFFFFFFFF, buf


def _is_invalid_field(status: Status | None) -> bool:
    return status is not None and status.value == INVALID_FIELD


def _print_feature(args, fid: int, sel: int, status: Status, result: int, buf) -> None:
    if status.value:
        if not _is_invalid_field(status):
            sys.stdout.flush()
            print(f"NVMe status: {status}", file=sys.stderr)
        return
    if args.raw_binary and buf is not None:
        write_binary(buf)
        return
    text = out.feature_line(fid, sel, result)
    if sel == 3:
        text += out.select_result_text(result)
    elif args.human_readable:
        text += out.feature_fields_text(fid, result, buf)
    elif buf is not None:
        text += out.hexdump(buf)
    sys.stdout.write(text)


def _c_string(buf) -> bytes:
    return bytes(buf).split(b"\0", 1)[0]


def _get_feature_changed(args, ctrl, fid: int, nsid: int) -> Status:
    changed = args.sel == SEL_CHANGED
    sel = 0 if changed else args.sel
    status, result, buf = _get_one(ctrl, fid, sel, nsid, args.cdw11, args.uuid_index, args.data_len)
    show = True
    if not status.value and changed:
        status_def, result_def, buf_def = _get_one(ctrl, fid, 1, nsid, args.cdw11, args.uuid_index, args.data_len)
        both = buf is not None and buf_def is not None
        show = bool(status_def.value) or result != result_def or (both and _c_string(buf) == _c_string(buf_def))
    if status.value or show:
        _print_feature(args, fid, SEL_CHANGED if changed else sel, status, result, buf)
    return status


def _get_feature(args: argparse.Namespace) -> int:
    if args.sel > SEL_CHANGED:
        raise CliError(f"invalid 'select' param:{args.sel}")
    _uuid_check(args.uuid_index)
    with open_device(args.device, io_queues=0) as dev:
        nsid = _nsid(args, dev)
        fids = [args.feature_id] if args.feature_id else range(0x100)
        status = None
        count = 0
        for fid in fids:
            status = _get_feature_changed(args, dev.ctrl, fid, nsid)
            if status.value and not _is_invalid_field(status):
                break
            count += 1
        sys.stdout.flush()
        if count == 1 and _is_invalid_field(status):
            print(f"NVMe status: {status}", file=sys.stderr)
    return 1 if status is not None and status.value else 0


@command("get-feature", "get a feature and show its value",
         description="Read operating parameters of the specified controller. Operating parameters are grouped "
                     "and identified by Feature Identifiers; each Feature Identifier contains one or more "
                     "attributes that may affect behavior of the feature. Each Feature has three possible "
                     "settings: default, saveable, and current. If a Feature is saveable, it may be modified by "
                     "set-feature. Default values are vendor-specific and not changeable. Use set-feature to "
                     "change saveable Features.  Without --feature-id, every feature (00h-FFh) is read.")
def _get_feature_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", help="controller or namespace: nvme0, nvme0n1, tcp://ADDR[:PORT]/NQN, drive directory")
    p.add_argument("-f", "--feature-id", type=byte, default=0, metavar="NUM", help="feature identifier")
    p.add_argument("-n", "--namespace-id", type=dword, default=0, metavar="NUM",
                   help="identifier of desired namespace")
    p.add_argument("-s", "--sel", type=byte, default=0, metavar="NUM",
                   help="[0-3,8]: current/default/saved/supported/changed")
    p.add_argument("-l", "--data-len", type=dword, default=0, metavar="NUM",
                   help="buffer len (if) data is sent or received")
    p.add_argument("-b", "--raw-binary", action="store_true", help="show feature in binary format")
    p.add_argument("-c", "--cdw11", type=dword, default=0, metavar="NUM", help="feature specific dword 11")
    p.add_argument("-U", "--uuid-index", type=byte, default=0, metavar="NUM", help="specify uuid index")
    p.add_argument("-H", "--human-readable", action="store_true", help="show feature in readable format")
    p.set_defaults(func=_get_feature)


# -- set-feature ---------------------------------------------------------------------------------


def _read_data(args: argparse.Namespace, length: int) -> bytearray:
    """The data of a Set Features: ``length`` bytes (zero filled past what
    the file or standard input has), or the timestamp given as ``-v``."""
    buf = bytearray(length)
    if args.feature_id == FeatureId.TIMESTAMP and args.value:
        # nvme-cli's convenience: -v holds the 6-byte timestamp
        buf[:6] = args.value.to_bytes(8, "little")[:6]
        return buf
    if args.data:
        try:
            with open(args.data, "rb") as f:
                data = f.read(length)
        except OSError as exc:
            raise CliError(f"Failed to open file {args.data}: {exc.strerror or exc}") from None
    else:
        try:
            data = getattr(sys.stdin, "buffer", sys.stdin).read(length)
        except (OSError, ValueError, AttributeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise CliError(f"failed to read data buffer from input file: {reason}") from None
    if isinstance(data, str):
        data = data.encode()
    data = data or b""
    buf[:len(data)] = data[:length]
    return buf


def _set_feature(args: argparse.Namespace) -> int:
    if not args.feature_id:
        raise CliError("feature-id required param")
    _uuid_check(args.uuid_index)
    cdw11 = args.value & 0xFFFFFFFF
    length = args.data_len or nvme_cli_data_length(args.feature_id, cdw11, host_to_controller=True)
    buf = _read_data(args, length) if length else None
    with open_device(args.device, io_queues=0) as dev:
        cmd = SetFeatures(fid=args.feature_id, nsid=_nsid(args, dev), sv=args.save, cdw11=cdw11, cdw12=args.cdw12,
                          uuidx=args.uuid_index & 0x7F)
        status, result = dev.ctrl.admin_passthru(cmd, buf)
    show_status(status)
    text = out.set_feature_line(args.feature_id, args.value, args.cdw12, args.save)
    if args.feature_id == FeatureId.LBA_STS_INTERVAL:
        text += out.lba_status_interval_text(result)
    if buf is not None:
        if args.feature_id == FeatureId.LBA_RANGE:
            text += out.lba_range_text(buf, result)
        else:
            text += out.hexdump(buf)
    sys.stdout.write(text)
    return 0


@command("set-feature", "set a feature and show the resulting value",
         description="Modify the saveable or changeable current operating parameters of the controller. "
                     "Operating parameters are grouped and identified by Feature Identifiers. Feature settings "
                     "can be applied to the entire controller and all associated namespaces, or to only a few "
                     "namespace(s) associated with the controller. Default values for each Feature are "
                     "vendor-specific and may not be modified. Use get-feature to determine which Features are "
                     "supported by the controller and are saveable/changeable.  Each nvmestack command has its "
                     "own association with the controller: use --save for a value that outlives the command.")
def _set_feature_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", help="controller or namespace: nvme0, nvme0n1, tcp://ADDR[:PORT]/NQN, drive directory")
    p.add_argument("-n", "--namespace-id", type=dword, default=0, metavar="NUM", help="desired namespace")
    p.add_argument("-f", "--feature-id", type=byte, default=0, metavar="NUM", help="feature identifier (required)")
    p.add_argument("-v", "--value", type=_value, default=0, metavar="IONUM", help="new value of feature (required)")
    p.add_argument("-c", "--cdw12", type=dword, default=0, metavar="NUM", help="feature cdw12, if used")
    p.add_argument("-U", "--uuid-index", type=byte, default=0, metavar="NUM", help="specify uuid index")
    p.add_argument("-l", "--data-len", type=dword, default=0, metavar="NUM",
                   help="buffer len (if) data is sent or received")
    p.add_argument("-d", "--data", default="", metavar="FILE",
                   help="optional file for feature data (default stdin)")
    p.add_argument("-s", "--save", action="store_true", help="specifies that the controller shall save the attribute")
    p.set_defaults(func=_set_feature)

