"""NVM command set handlers (NVM Command Set Specification 1.0, section 3
"I/O Commands for the NVM Command Set"): Flush, Write, Read, Write
Uncorrectable, Compare, fused Compare and Write, Write Zeroes, Dataset
Management, Verify and Copy.

The handlers check the command (LBA range, protection information fields,
limits) and leave the bytes to :mod:`datapath`.  The range and PRINFO checks
also run from ``transfer`` when the controller prepares a command, so a
command that is going to fail does so before the transport moves its data;
the handler checks again (the namespace may have been formatted since).

Health: Read, Compare and Verify count as host reads, Write and Copy as host
writes with their data units; Write Zeroes and Write Uncorrectable count as
write commands without data units.  Unrecovered read errors and PI check
errors count as media and data integrity errors.  The time each command
runs counts as controller busy time.

Durability: with the volatile write cache (feature 06h) enabled a write is
acknowledged from the cache (the page cache of a file backend) and Flush or
FUA make it durable; with it disabled every write is made durable before it
completes.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from ..spec.features import FeatureId
from ..spec.log import Effects
from ..spec.nvm import (
    COPY_RANGE_SIZE,
    DSM_RANGE_SIZE,
    CopyDescriptorFormat,
    copy_ranges,
    dsm_ranges,
)
from ..spec.opcodes import NvmOpcode
from ..spec.pi import PiType, Prinfo
from ..spec.status import (
    CommandSpecificStatus,
    GenericStatus,
    MediaStatus,
    StatusCodeType,
)
from . import datapath
from .commands import fused_command, io_command
from .datapath import Protection
from .errors import NvmeError

if TYPE_CHECKING:
    from .controller import Controller
    from .namespace import Namespace
    from .request import Request

__all__ = ["write_cache_enabled", "NSID_BROADCAST"]

NSID_BROADCAST = 0xFFFFFFFF

# Byte offsets in the SQE, for the error log's Parameter Error Location.
_NSID = 4
_CDW10 = 40  # SLBA / SDLBA / NR
_CDW11 = 44
_CDW12 = 48  # NLB, PRINFO (bits 29:26 = byte 51 bits 5:2), FUA, LR
_PRINFO_BYTE = 51
_CDW14 = 56  # ILBRT / EILBRT

# Media and data integrity errors the SMART log counts.
_INTEGRITY_ERRORS = {
    MediaStatus.UNRECOVERED_READ_ERROR,
    MediaStatus.GUARD_CHECK_ERROR,
    MediaStatus.APPLICATION_TAG_CHECK_ERROR,
    MediaStatus.REFERENCE_TAG_CHECK_ERROR,
}


# ---------------------------------------------------------------------------
# Shared pieces


def write_cache_enabled(ctrl: "Controller") -> bool:
    """Volatile Write Cache feature (06h) bit WCE; enabled when the feature
    store does not know the feature."""
    try:
        value = ctrl.features.value(FeatureId.VOLATILE_WC)
    except (KeyError, LookupError, NvmeError):
        return True
    return bool(int(value) & 1)


def _nvm(opcode: int, **options):
    """Register an NVM command handler with health accounting around it."""

    def decorate(func):
        @functools.wraps(func)
        def run(ctrl: "Controller", req: "Request"):
            return _accounted(ctrl, lambda: func(ctrl, req))

        io_command(opcode, **options)(run)
        return run

    return decorate


def _accounted(ctrl: "Controller", call):
    health = ctrl.subsystem.health
    start = time.monotonic()
    try:
        return call()
    except NvmeError as err:
        st = err.status
        if st.sct == StatusCodeType.MEDIA and st.sc in _INTEGRITY_ERRORS:
            health.media_error()
        raise
    finally:
        health.busy(time.monotonic() - start)


def _pi_enabled(ns: "Namespace") -> bool:
    return bool(ns.pi_type) and ns.metadata_size >= 8


def _check_range(ns: "Namespace", slba: int, nlb: int, param: int = _CDW10, **extra) -> None:
    if not ns.blocks_in_range(slba, nlb):
        raise NvmeError(GenericStatus.LBA_OUT_OF_RANGE, param=param, lba=slba, **extra)


def _check_prinfo(ns: "Namespace", prinfo: int, slba: int, reftag: int, *, pract: bool = True,
                  prchk: bool = True, **extra) -> None:
    """The PRINFO combinations a command may not use on a namespace with
    protection information (Invalid Protection Information): PRACT where the
    command has nothing to insert or strip (Compare, Verify), PRCHK where it
    has nothing to check (Write Zeroes), and for Type 1 a reference tag
    check whose initial tag is not the low 32 bits of the starting LBA.
    PRINFO is ignored on a namespace without protection information."""
    if not _pi_enabled(ns):
        return
    status = CommandSpecificStatus.INVALID_PROTECTION_INFORMATION
    if prinfo & Prinfo.PRACT and not pract:
        raise NvmeError(status, param=_PRINFO_BYTE, bit=5, **extra)
    if prinfo & Prinfo.PRCHK_ALL and not prchk:
        raise NvmeError(status, param=_PRINFO_BYTE, bit=2, **extra)
    if ns.pi_type == PiType.TYPE1 and prinfo & Prinfo.PRCHK_REF and reftag != slba & 0xFFFFFFFF:
        raise NvmeError(status, param=_CDW14, **extra)


def _protection(cmd) -> Protection:
    return Protection(cmd.prinfo, cmd.reftag, cmd.apptag, cmd.appmask)


# PRINFO rules per opcode: (PRACT allowed, PRCHK allowed).
_PI_RULES = {
    NvmOpcode.COMPARE: (False, True),
    NvmOpcode.VERIFY: (False, True),
    NvmOpcode.WRITE_ZEROES: (True, False),
}


def _check_blocks(req: "Request") -> tuple[int, int]:
    """Check a block command's range and PRINFO; return the (data, separate
    metadata) lengths the host transfers for it."""
    cmd, ns = req.cmd, req.ns
    _check_range(ns, cmd.slba, cmd.nblocks)
    pract, prchk = _PI_RULES.get(req.opcode, (True, True))
    _check_prinfo(ns, cmd.prinfo, cmd.slba, cmd.reftag, pract=pract, prchk=prchk)
    return datapath.host_lengths(ns, cmd.nblocks, cmd.prinfo)


def _lengths(req: "Request") -> tuple[int, int]:
    lengths = req.context.get("nvm_lengths")
    if lengths is None:
        lengths = req.context["nvm_lengths"] = _check_blocks(req)
    return lengths


def _data_len(ctrl: "Controller", req: "Request") -> int:
    return _lengths(req)[0]


def _meta_len(ctrl: "Controller", req: "Request") -> int:
    return _lengths(req)[1]


def _blocks(req: "Request"):
    """The command and namespace of a data-moving block command, checked
    again at execution: a format between prepare and execute changes the
    geometry, and the buffers mapped for the old one no longer fit."""
    if _check_blocks(req) != (req.data_len, req.meta_len):
        raise NvmeError(GenericStatus.INVALID_NAMESPACE_OR_FORMAT, param=_NSID,
                        msg="the namespace format changed under the command")
    return req.cmd, req.ns


def _flush_namespace(ns: "Namespace") -> None:
    try:
        ns.flush()
    except OSError as exc:
        raise NvmeError(MediaStatus.WRITE_FAULT, dnr=False, msg=str(exc)) from exc


def _durable(ctrl: "Controller", ns: "Namespace", fua: bool) -> None:
    """FUA, or the volatile write cache off: the write is durable before
    the command completes."""
    if fua or not write_cache_enabled(ctrl):
        _flush_namespace(ns)


# ---------------------------------------------------------------------------
# Flush


@_nvm(NvmOpcode.FLUSH, ns=None)
def flush(ctrl, req):
    """Flush: commit the volatile data of namespace NSID, or of every active
    namespace for NSID FFFFFFFFh (Identify Controller VWC bits 2:1 = 11b)."""
    nsid = req.sqe.nsid
    if nsid == NSID_BROADCAST:
        targets = ctrl.active_namespaces()
    else:
        ns = ctrl.namespace(nsid)
        if ns is None:
            raise ctrl.nsid_error(nsid)
        req.ns = ns
        targets = [ns]
    for ns in targets:
        _flush_namespace(ns)


# ---------------------------------------------------------------------------
# Write, Read, Compare (and fused Compare and Write)


def _do_write(ctrl, req) -> None:
    cmd, ns = _blocks(req)
    datapath.write(ns, req, cmd.slba, cmd.nblocks, _protection(cmd))
    _durable(ctrl, ns, cmd.fua)
    ctrl.subsystem.health.host_write(cmd.nblocks * ns.block_size)


def _do_compare(ctrl, req) -> None:
    cmd, ns = _blocks(req)
    if cmd.fua:
        _flush_namespace(ns)
    datapath.compare(ns, req, cmd.slba, cmd.nblocks, _protection(cmd))
    ctrl.subsystem.health.host_read(cmd.nblocks * ns.block_size)


@_nvm(NvmOpcode.WRITE, transfer=_data_len, meta_transfer=_meta_len, fused_second=True, effects=Effects.LBCC)
def write(ctrl, req):
    """Write: PI checked as PRCHK asks, or generated for PRACT; FUA makes
    the blocks durable before completion.  Clears Write Uncorrectable marks."""
    _do_write(ctrl, req)


@_nvm(NvmOpcode.READ, transfer=_data_len, meta_transfer=_meta_len)
def read(ctrl, req):
    """Read: blocks marked uncorrectable fail with Unrecovered Read Error;
    PI checked as PRCHK asks (and stripped for PRACT with 8-byte metadata).
    FUA reads from non-volatile media: the cache is committed first."""
    cmd, ns = _blocks(req)
    if cmd.fua:
        _flush_namespace(ns)
    datapath.read(ns, req, cmd.slba, cmd.nblocks, _protection(cmd))
    ctrl.subsystem.health.host_read(cmd.nblocks * ns.block_size)


@_nvm(NvmOpcode.COMPARE, transfer=_data_len, meta_transfer=_meta_len, fused_first=True)
def compare(ctrl, req):
    """Compare: Compare Failure when the data or metadata differ from the
    stored blocks (the PI tuple itself is checked, not compared)."""
    _do_compare(ctrl, req)


@fused_command(NvmOpcode.COMPARE, NvmOpcode.WRITE)
def compare_and_write(ctrl, first, second):
    """Fused Compare and Write: the write happens only if the compare
    matched, and nothing else on the namespace runs between the two (both
    hold the namespace lock).  A failed compare completes with its own
    status and the write with Command Aborted due to Failed Fused Command."""

    def run():
        ns = first.ns
        try:
            if second.ns is not ns:
                raise NvmeError(GenericStatus.INVALID_FIELD, param=_NSID, msg="fused commands on two namespaces")
            if (first.cmd.slba, first.cmd.nblocks) != (second.cmd.slba, second.cmd.nblocks):
                raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10,
                                msg="Compare and Write address different blocks")
            _blocks(first)
        except NvmeError as err:
            ctrl._fail(first, err)
            raise NvmeError(GenericStatus.ABORTED_FAILED_FUSED) from err
        _blocks(second)  # a bad write fails it and aborts the compare
        with ns.lock:
            try:
                _do_compare(ctrl, first)
            except NvmeError as err:
                if err.status.sct == StatusCodeType.MEDIA and err.status.sc in _INTEGRITY_ERRORS:
                    ctrl.subsystem.health.media_error()
                ctrl._fail(first, err)
                raise NvmeError(GenericStatus.ABORTED_FAILED_FUSED) from err
            _do_write(ctrl, second)

    return _accounted(ctrl, run)


# ---------------------------------------------------------------------------
# Write Uncorrectable, Write Zeroes, Verify


@_nvm(NvmOpcode.WRITE_UNCORRECTABLE, effects=Effects.LBCC)
def write_uncorrectable(ctrl, req):
    """Write Uncorrectable: reads of the blocks fail until they are written
    (Write, Write Zeroes, deallocation, Copy destination)."""
    cmd, ns = req.cmd, req.ns
    _check_range(ns, cmd.slba, cmd.nblocks)
    datapath.write_uncorrectable(ns, cmd.slba, cmd.nblocks)
    ctrl.subsystem.health.host_write(0)


@_nvm(NvmOpcode.WRITE_ZEROES, effects=Effects.LBCC)
def write_zeroes(ctrl, req):
    """Write Zeroes: the blocks read as zeroes; DEAC deallocates them
    (DLFEAT bit 3); PI generated for PRACT, zeroes otherwise; PRCHK is not
    allowed (nothing to check)."""
    cmd, ns = req.cmd, req.ns
    _check_blocks(req)
    datapath.write_zeroes(ns, cmd.slba, cmd.nblocks, deallocate=cmd.deac, prot=_protection(cmd))
    _durable(ctrl, ns, cmd.fua)
    ctrl.subsystem.health.host_write(0)


@_nvm(NvmOpcode.VERIFY)
def verify(ctrl, req):
    """Verify: read and check the blocks (uncorrectable marks, PI as PRCHK
    asks) with no data transfer; PRACT is not allowed."""
    cmd, ns = req.cmd, req.ns
    _check_blocks(req)
    if cmd.fua:
        _flush_namespace(ns)
    datapath.verify(ns, cmd.slba, cmd.nblocks, _protection(cmd))
    ctrl.subsystem.health.host_read(cmd.nblocks * ns.block_size)


# ---------------------------------------------------------------------------
# Dataset Management


@_nvm(NvmOpcode.DATASET_MANAGEMENT, transfer=lambda ctrl, req: req.cmd.nranges * DSM_RANGE_SIZE, effects=Effects.LBCC)
def dataset_management(ctrl, req):
    """Dataset Management: with AD every range is deallocated (reads then
    return zeroes, DLFEAT 001b); IDR, IDW and the context attributes are
    hints and are accepted.  A range beyond the namespace fails the command
    with LBA Out of Range before any range is deallocated."""
    cmd, ns = req.cmd, req.ns
    if not cmd.ad:
        return
    count = cmd.nranges
    buf = req.read_data(count * DSM_RANGE_SIZE)
    ranges = []
    for entry in dsm_ranges(buf, count):
        slba, nlb = entry.slba, entry.nlb
        if nlb and not ns.blocks_in_range(slba, nlb):
            raise NvmeError(GenericStatus.LBA_OUT_OF_RANGE, lba=slba)
        ranges.append((slba, nlb))
    datapath.deallocate(ns, ranges)
    _durable(ctrl, ns, False)


# ---------------------------------------------------------------------------
# Copy


def _copy_len(ctrl, req) -> int:
    cmd, ns = req.cmd, req.ns
    if cmd.desfmt != CopyDescriptorFormat.FORMAT_0:
        # Only format 0 (16b Guard) is supported (Identify Controller OCFS bit 0).
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW12 + 1)
    if cmd.nranges > ns.copy_msrc + 1:
        raise NvmeError(CommandSpecificStatus.COMMAND_SIZE_LIMIT_EXCEEDED, param=_CDW12)
    return cmd.nranges * COPY_RANGE_SIZE


@_nvm(NvmOpcode.COPY, transfer=_copy_len, effects=Effects.LBCC)
def copy(ctrl, req):
    """Copy (source range format 0) to consecutive blocks from SDLBA.

    Limits (Identify Namespace): NR + 1 <= MSRC + 1, each range <= MSSRL
    blocks, all ranges together <= MCL blocks, else Command Size Limit
    Exceeded.  The source PI is checked per range (PRINFOR with the range's
    EILBRT/ELBAT/ELBATM); the destination PI is regenerated for PRINFOW
    PRACT (ILBRT, LBAT from CDW14-15) or checked as PRINFOW's PRCHK asks.
    PRACT must be the same in PRINFOR and PRINFOW.  On failure, completion
    Dword 0 holds the number of the lowest source range not copied: every
    range is checked before any is copied, so that is 0 unless the storage
    fails midway."""
    cmd, ns = req.cmd, req.ns
    _copy_len(ctrl, req)
    pi = _pi_enabled(ns)
    prinfor, prinfow = cmd.prinfor, cmd.prinfow
    if pi and (prinfor ^ prinfow) & Prinfo.PRACT:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_PRINFO_BYTE, bit=5)
    count = cmd.nranges
    entries = copy_ranges(req.read_data(count * COPY_RANGE_SIZE), count)
    sources = []
    total = 0
    for entry in entries:
        slba, nlb = entry.slba, entry.nblocks
        if nlb > ns.copy_mssrl:
            raise NvmeError(CommandSpecificStatus.COMMAND_SIZE_LIMIT_EXCEEDED, lba=slba)
        total += nlb
        sources.append((slba, nlb, Protection(prinfor, entry.eilbrt, entry.elbat, entry.elbatm)))
    if total > ns.copy_mcl:
        raise NvmeError(CommandSpecificStatus.COMMAND_SIZE_LIMIT_EXCEEDED)
    for slba, nlb, prot in sources:
        _check_range(ns, slba, nlb, param=None)
        _check_prinfo(ns, prinfor, slba, prot.reftag)
    _check_range(ns, cmd.sdlba, total)
    _check_prinfo(ns, prinfow, cmd.sdlba, cmd.ilbrt)
    write_prot = Protection(prinfow, cmd.ilbrt, cmd.lbat, cmd.lbatm)
    with ns.lock:
        # Every check that can be made before copying is made on every
        # range first: a command that fails them copies nothing (Dword 0
        # is then 0, the lowest range not copied).
        dlba = cmd.sdlba
        for slba, nlb, prot in sources:
            datapath.check_copy_range(ns, slba, nlb, prot, write_prot, cmd.sdlba, dlba - cmd.sdlba)
            dlba += nlb
        dlba = cmd.sdlba
        for i, (slba, nlb, prot) in enumerate(sources):
            try:
                datapath.copy_range(ns, slba, nlb, prot, dlba, write_prot, cmd.sdlba, dlba - cmd.sdlba)
            except NvmeError as err:
                err.dw0 = i  # ranges 0 .. i-1 were copied
                raise
            dlba += nlb
    _durable(ctrl, ns, cmd.fua)
    ctrl.subsystem.health.host_write(total * ns.block_size)
