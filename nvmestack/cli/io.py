"""NVM command set I/O commands: ``read``, ``write``, ``compare``, ``flush``,
``dsm``, ``write-zeroes``, ``write-uncor`` and ``verify``, as nvme-cli 2.3
has them: same names, long and short options, messages and exit statuses.

The namespace is ``-n``, else the one the device names (``nvme0n1``,
``tcp://...?nsid=N``); with a controller (``nvme0``, a drive path, a
``tcp://`` address without ``?nsid=``) ``-n`` is needed.

Where we differ from nvme-cli 2.3, and why:

* ``read``/``write``/``compare`` without ``-z/--data-size`` move the blocks
  ``-c`` names (nvme-cli stops with "data size not provided").
* A transfer larger than the controller's MDTS is split into commands of at
  most MDTS (the kernel refuses a larger passthrough), sent a few at a time,
  with a progress bar on a terminal.  Only the blocks ``-c`` names are
  transferred; with ``-z`` larger than them, a read still writes ``-z``
  bytes (zeroes after the data) as nvme-cli does.
* ``--prinfo`` above 15 is said in a line (nvme-cli exits silently).
* Separate metadata (``-y``/``-M``) goes with the blocks over PCIe; NVMe/TCP
  has no metadata buffer (extended LBA formats carry it inside the blocks).

As nvme-cli, a ``read`` into ``--data FILE`` creates the file when missing
and does not truncate it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from typing import Any

from ..host.request import NvmeStatusError
from ..spec.admin import Cns
from ..spec.identify import IdentifyNamespace
from ..spec.nvm import (
    Compare,
    DatasetManagement,
    Flush,
    Read,
    Verify,
    Write,
    WriteUncorrectable,
    WriteZeroes,
    pack_dsm_ranges,
)
from ..spec.opcodes import NvmOpcode
from .common import CliError, Progress, byte, command, dword, number, show_status, word
from .devices import Device
from .manage import _open_user_file as _open_data
from .manage import _read_input as _read_all
from .manage import open_quietly, resolve_nsid, settle

__all__ = ["submit_io"]

# cdw12 bits 31:16 ("control" in nvme-cli and the kernel).
_LR = 1 << 15
_FUA = 1 << 14
_DEAC = 1 << 9
_STC = 1 << 8
_PRINFO_SHIFT = 10

#: Commands of one read/write kept in flight at once.
WINDOW = 8


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", metavar="DEVICE",
                   help="nvme0n1, /dev/nvme0n1, tcp://ADDR[:PORT]/NQN?nsid=N, or a controller with -n")


def _check_prinfo(what: str, prinfo: int) -> None:
    if prinfo > 0xF:
        raise CliError(f"{what}: invalid prinfo:{prinfo} (0-15)")


def _check_tags(storage_tag: int, ref_tag: int) -> None:
    """nvme-cli's invalid_tags() for the formats we have (no storage tag,
    16-bit guard protection information: 32-bit reference tags)."""
    if storage_tag:
        raise CliError("Storage tag larger than storage tag size")
    if ref_tag >= 1 << 32:
        raise CliError("Reference tag larger than allowed by PIF")


def _namespace(dev: Device, nsid: int, what: str) -> Any:
    """The host's view of namespace ``nsid`` (its geometry)."""
    ns = dev.ctrl.namespaces.get(nsid)
    if ns is not None:
        return ns
    # Let the device say what is wrong with the NSID (Invalid Namespace or Format ...).
    data = dev.ctrl.identify_raw(Cns.NS, nsid)
    if not IdentifyNamespace.from_bytes(data).nsze:
        raise CliError(f"{what}: namespace {nsid} is not attached to {dev.name}")
    dev.ctrl.rescan()
    ns = dev.ctrl.namespaces.get(nsid)
    if ns is None:
        raise CliError(f"{what}: namespace {nsid} is not attached to {dev.name}")
    return ns


# ---------------------------------------------------------------------------
# read / write / compare


def _build_rw(name: str, opcode: int):
    def build(p: argparse.ArgumentParser) -> None:
        _add_device(p)
        p.add_argument("-n", "--namespace-id", type=dword, default=0, metavar="NUM",
                       help="identifier of desired namespace")
        p.add_argument("-s", "--start-block", type=number, default=0, metavar="IONUM",
                       help="64-bit addr of first block to access")
        p.add_argument("-c", "--block-count", type=word, default=0, metavar="NUM",
                       help="number of blocks (zeroes based) on device to access")
        p.add_argument("-z", "--data-size", type=number, default=0, metavar="IONUM", help="size of data in bytes")
        p.add_argument("-y", "--metadata-size", type=number, default=0, metavar="IONUM",
                       help="size of metadata in bytes")
        p.add_argument("-r", "--ref-tag", type=number, default=0, metavar="IONUM",
                       help="reference tag for end-to-end PI")
        p.add_argument("-d", "--data", default="", metavar="FILE", help="data file")
        p.add_argument("-M", "--metadata", default="", metavar="FILE", help="metadata file")
        p.add_argument("-p", "--prinfo", type=byte, default=0, metavar="NUM", help="PI and check field")
        p.add_argument("-m", "--app-tag-mask", type=word, default=0, metavar="NUM",
                       help="app tag mask for end-to-end PI")
        p.add_argument("-a", "--app-tag", type=word, default=0, metavar="NUM", help="app tag for end-to-end PI")
        p.add_argument("-g", "--storage-tag", type=number, default=0, metavar="IONUM",
                       help="storage tag for end-to-end PI")
        p.add_argument("-l", "--limited-retry", action="store_true", help="limit num. media access attempts")
        p.add_argument("-f", "--force-unit-access", action="store_true",
                       help="force device to commit data before command completes")
        p.add_argument("-C", "--storage-tag-check", action="store_true",
                       help="This bit specifies the Storage Tag field shall be checked as part of end-to-end "
                            "data protection processing")
        p.add_argument("-T", "--dir-type", type=byte, default=0, metavar="NUM",
                       help="directive type (for write-only)")
        p.add_argument("-S", "--dir-spec", type=word, default=0, metavar="NUM",
                       help="directive specific (for write-only)")
        p.add_argument("-D", "--dsm", type=byte, default=0, metavar="NUM",
                       help="dataset management attributes (lower 8 bits)")
        p.add_argument("-v", "--show-command", action="store_true", help="show command before sending")
        p.add_argument("-w", "--dry-run", action="store_true", help="show command instead of sending")
        p.add_argument("-t", "--latency", action="store_true", help="output latency statistics")
        p.add_argument("--force", action="store_true",
                       help="The \"I know what I'm doing\" flag, do not enforce exclusive access for write")
        p.set_defaults(func=lambda args: submit_io(args, opcode, name))

    return build


command("compare", "Submit a Compare command, return results",
        description="Compare specified logical blocks on device with specified data buffer; return failure if "
                    "buffer and block(s) are dissimilar")(_build_rw("compare", NvmOpcode.COMPARE))
command("read", "Submit a read command, return results",
        description="Copy specified logical blocks on the given device to specified data buffer (default buffer "
                    "is stdout).")(_build_rw("read", NvmOpcode.READ))
command("write", "Submit a write command, return results",
        description="Copy from provided data buffer (default buffer is stdin) to specified logical blocks on the "
                    "given device.")(_build_rw("write", NvmOpcode.WRITE))

_RW_CLASSES = {NvmOpcode.READ: Read, NvmOpcode.WRITE: Write, NvmOpcode.COMPARE: Compare}


def submit_io(args: argparse.Namespace, opcode: int, name: str) -> int:
    reading = opcode == NvmOpcode.READ
    _check_prinfo(name, args.prinfo)
    control = args.prinfo << _PRINFO_SHIFT
    if args.limited_retry:
        control |= _LR
    if args.force_unit_access:
        control |= _FUA
    if args.storage_tag_check:
        control |= _STC
    dsmgmt = args.dsm
    if args.dir_type:
        if args.dir_type > 0xF:
            raise CliError(f"Invalid directive type, {args.dir_type:x}")
        control |= args.dir_type << 4
        dsmgmt |= args.dir_spec << 16
    files: list[Any] = []
    try:
        dfile = _open_data(args.data, reading) if args.data else None
        if dfile is not None:
            files.append(dfile)
        mfile = _open_data(args.metadata, reading) if args.metadata else None
        if mfile is not None:
            files.append(mfile)
        with open_quietly(args.device, io_queues=1) as dev:
            return _submit_io(args, dev, opcode, name, control, dsmgmt, dfile, mfile)
    finally:
        for f in files:
            try:
                f.close()
            except OSError:
                pass


def _submit_io(args: argparse.Namespace, dev: Device, opcode: int, name: str, control: int, dsmgmt: int,
               dfile: Any, mfile: Any) -> int:
    reading = opcode == NvmOpcode.READ
    nsid = resolve_nsid(args, dev, name)
    ns = _namespace(dev, nsid, name)
    blocks = args.block_count + 1
    lba_bytes = ns.block_size + (ns.metadata_size if ns.extended else 0)
    buffer_size = blocks * lba_bytes
    data_size = args.data_size or buffer_size
    if data_size < buffer_size:
        print(f"Rounding data size to fit block count ({buffer_size} bytes)", file=sys.stderr)
    data = bytearray(max(data_size, buffer_size))
    meta = None
    separate_meta = ns.metadata_size and not ns.extended
    meta_size = 0
    if args.metadata_size:
        meta_size = blocks * ns.metadata_size if separate_meta else 0
        if separate_meta and args.metadata_size < meta_size:
            print(f"Rounding metadata size to fit block count ({meta_size} bytes)", file=sys.stderr)
        else:
            meta_size = args.metadata_size
        meta = bytearray(meta_size)
    _check_tags(args.storage_tag, args.ref_tag)
    if not reading:
        src = dfile if dfile is not None else sys.stdin.buffer
        got = _read_all(src, data_size)
        data[:len(got)] = got
        if meta is not None:
            msrc = mfile if mfile is not None else sys.stdin.buffer
            got = _read_all(msrc, meta_size)
            meta[:len(got)] = got
    if args.show_command or args.dry_run:
        print("\n".join([
            f"opcode       : {opcode:02x}",
            f"nsid         : {nsid:02x}",
            f"flags        : {0:02x}",
            f"control      : {control:04x}",
            f"nblocks      : {args.block_count:04x}",
            f"metadata     : {_address(meta):x}",
            f"addr         : {_address(data):x}",
            f"slba         : {args.start_block:x}",
            f"dsmgmt       : {dsmgmt:08x}",
            f"reftag       : {args.ref_tag:x}",
            f"apptag       : {args.app_tag:04x}",
            f"appmask      : {args.app_tag_mask:04x}",
            f"storagetagcheck : {int(args.storage_tag_check):04x}",
            f"storagetag      : {args.storage_tag:x}",
            f"pif             : {0:02x}",
            f"sts             : {0:02x}",
        ]))
        sys.stdout.flush()
    if args.dry_run:
        return 0
    if args.start_block + blocks > 1 << 64:
        raise CliError(f"{name}: the blocks end beyond LBA 2^64")
    start = time.perf_counter()
    _transfer(dev, ns, opcode, name, nsid, args, blocks, lba_bytes, control, dsmgmt, data,
              meta if separate_meta else None)
    elapsed = int((time.perf_counter() - start) * 1e6)
    if args.latency:
        print(f" latency: {name}: {elapsed} us")
        sys.stdout.flush()
    if reading:
        out = dfile if dfile is not None else sys.stdout.buffer
        sys.stdout.flush()
        out.write(memoryview(data)[:data_size])
        out.flush()
        if meta is not None:
            mout = mfile if mfile is not None else sys.stdout.buffer
            mout.write(meta)
            mout.flush()
    print(f"{name}: Success", file=sys.stderr)
    settle(dev.ctrl)
    return 0


def _address(buf: bytearray | None) -> int:
    import ctypes

    if not buf:
        return 0
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def _transfer(dev: Device, ns: Any, opcode: int, name: str, nsid: int, args: argparse.Namespace, blocks: int,
              lba_bytes: int, control: int, dsmgmt: int, data: bytearray, meta: bytearray | None) -> None:
    """Send the blocks in commands of at most MDTS, WINDOW at a time."""
    ctrl = dev.ctrl
    limit = ctrl.max_transfer or (1 << 20)
    per_cmd = max(1, min(0x10000, limit // lba_bytes))
    if meta is not None and ns.metadata_size:
        per_cmd = max(1, min(per_cmd, limit // ns.metadata_size))
    cls = _RW_CLASSES[opcode]
    pi_increments = ns.pi_type in (1, 2)
    dview = memoryview(data)
    mview = memoryview(meta) if meta is not None else None
    chunks = -(-blocks // per_cmd)
    pending: deque = deque()
    first_error: NvmeStatusError | None = None
    with Progress(name, blocks * lba_bytes, enabled=chunks > 1, unit="B") as bar:
        done_bytes = 0

        def reap() -> None:
            nonlocal first_error, done_bytes
            req, size = pending.popleft()
            req.wait()
            try:
                req.raise_for_status()
            except NvmeStatusError as exc:
                if first_error is None:
                    first_error = exc
                return
            done_bytes += size
            bar.update(done_bytes)

        done = 0
        while done < blocks and first_error is None:
            n = min(per_cmd, blocks - done)
            cmd = cls(nsid=nsid, slba=args.start_block + done, nblocks=n)
            cmd.control = control
            cmd.cdw13 = dsmgmt
            ref = args.ref_tag + done if pi_increments else args.ref_tag
            cmd.cdw14 = ref & 0xFFFFFFFF
            cmd.cdw15 = args.app_tag | args.app_tag_mask << 16
            dpart = dview[done * lba_bytes:(done + n) * lba_bytes]
            mpart = None
            if mview is not None:
                mpart = mview[done * ns.metadata_size:(done + n) * ns.metadata_size]
            pending.append((ctrl.submit(cmd, dpart, mpart, retry=False), n * lba_bytes))
            done += n
            if len(pending) >= WINDOW:
                reap()
        while pending:
            reap()
    if first_error is not None:
        show_status(first_error.status)


# ---------------------------------------------------------------------------
# flush


def _build_flush(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-n", "--namespace-id", type=dword, default=0, metavar="NUM",
                   help="identifier of desired namespace")
    p.set_defaults(func=flush)


command("flush", "Submit a Flush command, return results",
        description="Commit data and metadata associated with given namespaces to nonvolatile media. Applies to "
                    "all commands finished before the flush was submitted. Additional data may also be flushed by "
                    "the controller, from any namespace, depending on controller and associated namespace "
                    "status.")(_build_flush)


def _io(dev: Device, cmd: Any, data: Any = None) -> None:
    status, _ = dev.ctrl.io_passthru(cmd, data)
    show_status(status)


def flush(args: argparse.Namespace) -> int:
    with open_quietly(args.device, io_queues=1) as dev:
        nsid = resolve_nsid(args, dev, "flush")
        _io(dev, Flush(nsid=nsid))
        print("NVMe Flush: success")
    return 0


# ---------------------------------------------------------------------------
# dsm


def _build_dsm(p: argparse.ArgumentParser) -> None:
    _add_device(p)
    p.add_argument("-n", "--namespace-id", type=dword, default=0, metavar="NUM",
                   help="identifier of desired namespace")
    p.add_argument("-a", "--ctx-attrs", default="", metavar="LIST",
                   help="Comma separated list of the context attributes in each range")
    p.add_argument("-b", "--blocks", default="", metavar="LIST",
                   help="Comma separated list of the number of blocks in each range")
    p.add_argument("-s", "--slbs", default="", metavar="LIST",
                   help="Comma separated list of the starting block in each range")
    p.add_argument("-d", "--ad", action="store_true", help="Attribute Deallocate")
    p.add_argument("-w", "--idw", action="store_true", help="Attribute Integral Dataset for Write")
    p.add_argument("-r", "--idr", action="store_true", help="Attribute Integral Dataset for Read")
    p.add_argument("-c", "--cdw11", type=dword, default=0, metavar="NUM",
                   help="All the command DWORD 11 attributes. Use instead of specifying individual attributes")
    p.set_defaults(func=dsm)


command("dsm", "Submit a Data Set Management command, return results",
        description="The Dataset Management command is used by the host to indicate attributes for ranges of "
                    "logical blocks. This includes attributes for discarding unused blocks, data read and write "
                    "frequency, access size, and other information that may be used to optimize performance and "
                    "reliability.")(_build_dsm)


def _list(text: str, what: str, bits: int) -> list[int]:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = number(part)
        except argparse.ArgumentTypeError:
            raise CliError(f"dsm: --{what}: {part!r} is not a number") from None
        if value >= 1 << bits:
            raise CliError(f"dsm: --{what}: {value} does not fit in {bits} bits")
        values.append(value)
    return values


def dsm(args: argparse.Namespace) -> int:
    attrs = _list(args.ctx_attrs, "ctx-attrs", 32)
    nlbs = _list(args.blocks, "blocks", 32)
    slbas = _list(args.slbs, "slbs", 64)
    nr = max(len(attrs), len(nlbs), len(slbas))
    if not nr or nr > 256:
        raise CliError("No range definition provided")

    def at(values: list[int], i: int) -> int:
        return values[i] if i < len(values) else 0

    ranges = [{"slba": at(slbas, i), "nlb": at(nlbs, i), "cattr": at(attrs, i)} for i in range(nr)]
    cdw11 = args.cdw11 or (args.ad << 2 | args.idw << 1 | args.idr)
    with open_quietly(args.device, io_queues=1) as dev:
        nsid = resolve_nsid(args, dev, "dsm")
        cmd = DatasetManagement(nsid=nsid, nranges=nr, attributes=cdw11)
        _io(dev, cmd, pack_dsm_ranges(ranges))
        print("NVMe DSM: success")
    return 0


# ---------------------------------------------------------------------------
# write-zeroes / write-uncor / verify


def _range_options(p: argparse.ArgumentParser, lba_help: str = "64-bit LBA of first block to access") -> None:
    _add_device(p)
    p.add_argument("-n", "--namespace-id", type=dword, default=0, metavar="NUM", help="desired namespace")
    p.add_argument("-s", "--start-block", type=number, default=0, metavar="IONUM", help=lba_help)
    p.add_argument("-c", "--block-count", type=word, default=0, metavar="NUM",
                   help="number of blocks (zeroes based) on device to access")


def _pi_options(p: argparse.ArgumentParser, stc_help: str) -> None:
    p.add_argument("-p", "--prinfo", type=byte, default=0, metavar="NUM", help="PI and check field")
    p.add_argument("-r", "--ref-tag", type=number, default=0, metavar="IONUM", help="reference tag for end-to-end PI")
    p.add_argument("-m", "--app-tag-mask", type=word, default=0, metavar="NUM", help="app tag mask for end-to-end PI")
    p.add_argument("-a", "--app-tag", type=word, default=0, metavar="NUM", help="app tag for end-to-end PI")
    p.add_argument("-S", "--storage-tag", type=number, default=0, metavar="IONUM",
                   help="storage tag for end-to-end PI")
    p.add_argument("-C", "--storage-tag-check", action="store_true", help=stc_help)


def _build_write_zeroes(p: argparse.ArgumentParser) -> None:
    _range_options(p)
    p.add_argument("-d", "--deac", action="store_true",
                   help="Set DEAC bit, requesting controller to deallocate specified logical blocks")
    p.add_argument("-l", "--limited-retry", action="store_true", help="limit media access attempts")
    p.add_argument("-f", "--force-unit-access", action="store_true",
                   help="force device to commit data before command completes")
    _pi_options(p, "This bit specifies the Storage Tag field shall be checked as part of end-to-end data "
                   "protection processing")
    p.set_defaults(func=write_zeroes)


def _build_write_uncor(p: argparse.ArgumentParser) -> None:
    _range_options(p)
    p.set_defaults(func=write_uncor)


def _build_verify(p: argparse.ArgumentParser) -> None:
    _range_options(p)
    p.add_argument("-l", "--limited-retry", action="store_true", help="limit media access attempts")
    p.add_argument("-f", "--force-unit-access", action="store_true",
                   help="force device to commit cached data before performing the verify operation")
    _pi_options(p, "This bit specifies the Storage Tag field shall be checked as part of Verify operation")
    p.set_defaults(func=verify)


command("write-zeroes", "Submit a write zeroes command, return results",
        description="The Write Zeroes command is used to set a range of logical blocks to zero.")(
    _build_write_zeroes)
command("write-uncor", "Submit a write uncorrectable command, return results",
        description="The Write Uncorrectable command is used to set a range of logical blocks to invalid.")(
    _build_write_uncor)
command("verify", "Submit a verify command, return results",
        description="Verify specified logical blocks on the given device.")(_build_verify)


def _protected(args: argparse.Namespace, cls: type, what: str, extra: int = 0) -> int:
    _check_prinfo(what, args.prinfo)
    control = args.prinfo << _PRINFO_SHIFT | extra
    if args.limited_retry:
        control |= _LR
    if args.force_unit_access:
        control |= _FUA
    if args.storage_tag_check:
        control |= _STC
    _check_tags(args.storage_tag, args.ref_tag)
    with open_quietly(args.device, io_queues=1) as dev:
        nsid = resolve_nsid(args, dev, what)
        cmd = cls(nsid=nsid, slba=args.start_block, nblocks=args.block_count + 1)
        cmd.control = control
        cmd.cdw14 = args.ref_tag & 0xFFFFFFFF
        cmd.cdw15 = args.app_tag | args.app_tag_mask << 16
        _io(dev, cmd)
        settle(dev.ctrl)
    return 0


def write_zeroes(args: argparse.Namespace) -> int:
    _protected(args, WriteZeroes, "write-zeroes", _DEAC if args.deac else 0)
    print("NVME Write Zeroes Success")
    return 0


def verify(args: argparse.Namespace) -> int:
    _protected(args, Verify, "verify")
    print("NVME Verify Success")
    return 0


def write_uncor(args: argparse.Namespace) -> int:
    with open_quietly(args.device, io_queues=1) as dev:
        nsid = resolve_nsid(args, dev, "write-uncor")
        _io(dev, WriteUncorrectable(nsid=nsid, slba=args.start_block, nblocks=args.block_count + 1))
        settle(dev.ctrl)
    print("NVME Write Uncorrectable Success")
    return 0
