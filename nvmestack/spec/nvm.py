"""Typed views of the NVM Command Set I/O commands (NVM Command Set
Specification 1.0, section 3 "I/O Commands for the NVM Command Set"), with
the data structures they carry: Dataset Management ranges and Copy source
range entries.

Command Dword 10 is bytes 40-43 of the SQE, ... Dword 15 bytes 60-63.  The
commands that name a range of logical blocks share their fields through
:class:`ReadWriteBase` (SLBA, NLB) and :class:`ProtectedReadWriteBase`
(PRINFO, STC, FUA, LR and the protection tags), so each offset is written
once; Read, Write, Compare, Verify and Write Zeroes add only what is theirs.

The tag fields keep the Linux names (``reftag``, ``apptag``, ``appmask``:
``struct nvme_rw_command``) and each command also has them under the
specification's names: EILBRT/ELBAT/ELBATM for commands that check
(Read, Compare, Verify), ILBRT/LBAT/LBATM for commands that write.
These are the 16b Guard protection information names; the 32b/64b Guard
formats widen the reference/storage tag into Command Dwords 2-3.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from enum import IntEnum, IntFlag
from typing import Any

from .layout import Bits, Field, Flag, Struct, check_range
from .opcodes import NvmOpcode
from .sqe import Command

__all__ = [
    "Prinfo",
    "DsmAttributes",
    "AccessFrequency",
    "AccessLatency",
    "CopyDescriptorFormat",
    "NvmCommand",
    "ReadWriteBase",
    "ProtectedReadWriteBase",
    "Flush",
    "Write",
    "Read",
    "WriteUncorrectable",
    "Compare",
    "WriteZeroes",
    "DatasetManagement",
    "Verify",
    "Copy",
    "DsmRange",
    "CopySourceRange",
    "DSM_RANGE_SIZE",
    "COPY_RANGE_SIZE",
    "MAX_DSM_RANGES",
    "MAX_COPY_RANGES",
    "pack_dsm_ranges",
    "dsm_ranges",
    "pack_copy_ranges",
    "copy_ranges",
]

DSM_RANGE_SIZE = 16
COPY_RANGE_SIZE = 32
MAX_DSM_RANGES = 256  # NR is an 8-bit, 0-based count
MAX_COPY_RANGES = 256  # likewise; the controller's MSRC may allow fewer


# ---------------------------------------------------------------------------
# Coded values


class Prinfo(IntFlag):
    """Protection Information field (PRINFO), the 4 bits at Command Dword 12
    bits 29:26: PRACT (bit 29) and PRCHK (bits 28:26)."""

    PRCHK_REF = 0x1  # check the reference tag (CDW12 bit 26)
    PRCHK_APP = 0x2  # check the application tag (bit 27)
    PRCHK_GUARD = 0x4  # check the guard (bit 28)
    PRACT = 0x8  # Protection Information Action (bit 29)


class DsmAttributes(IntFlag):
    """Dataset Management attributes, Command Dword 11 bits 2:0."""

    IDR = 0x1  # Integral Dataset for Read
    IDW = 0x2  # Integral Dataset for Write
    AD = 0x4  # Deallocate


class AccessFrequency(IntEnum):
    """Access Frequency (AF), bits 3:0 of the DSM field (CDW13 of Read and
    Write) and of a DSM range's context attributes."""

    NONE = 0
    TYPICAL = 1
    INFREQUENT = 2  # infrequent writes and infrequent reads
    INFREQUENT_WRITES = 3  # infrequent writes, frequent reads
    INFREQUENT_READS = 4  # frequent writes, infrequent reads
    FREQUENT = 5  # frequent writes and frequent reads
    ONE_TIME_READ = 6
    SPECULATIVE_READ = 7
    OVERWRITTEN = 8  # the range is about to be overwritten


class AccessLatency(IntEnum):
    """Access Latency (AL), bits 5:4 of the DSM field."""

    NONE = 0
    IDLE = 1
    NORMAL = 2
    LOW = 3


class CopyDescriptorFormat(IntEnum):
    """Descriptor Format of the Copy source ranges, CDW12 bits 11:8."""

    FORMAT_0 = 0  # 32-byte entries, 16b Guard protection information
    FORMAT_1 = 1  # 40-byte entries, 32b/64b Guard protection information


# ---------------------------------------------------------------------------
# Shared pieces


def _alias(field: Field, doc: str) -> Field:
    """The same bits as ``field`` under another name (the offset stays
    written once, in ``field``)."""
    twin = copy.copy(field)
    twin.doc = doc
    return twin


class NvmCommand(Command):
    """Base of the NVM Command Set views (I/O queue commands)."""


class _AccessFlags:
    """Command Dword 12 bits 31:30, common to every data command."""

    __slots__ = ()
    control = Field(50, 2, "CDW12 31:16 as one word (Linux's 'control')")
    fua = Flag(48, 4, 30, "Force Unit Access (FUA, CDW12 bit 30)")
    lr = Flag(48, 4, 31, "Limited Retry (LR, CDW12 bit 31)")


class _ProtectionControl:
    """Protection information controls in Command Dword 12."""

    __slots__ = ()
    stc = Flag(48, 4, 24, "Storage Tag Check (STC, CDW12 bit 24)")
    prinfo = Bits(48, 4, 26, 4, "Protection Information field (PRINFO, CDW12 29:26), see Prinfo")
    prchk = Bits(48, 4, 26, 3, "Protection Information Check (PRCHK, CDW12 28:26)")
    prchk_ref = Flag(48, 4, 26, "PRCHK: check the reference tag (CDW12 bit 26)")
    prchk_app = Flag(48, 4, 27, "PRCHK: check the application tag (CDW12 bit 27)")
    prchk_guard = Flag(48, 4, 28, "PRCHK: check the guard (CDW12 bit 28)")
    pract = Flag(48, 4, 29, "Protection Information Action (PRACT, CDW12 bit 29)")


class _Tags:
    """Protection information tags in Command Dwords 14-15 (16b Guard)."""

    __slots__ = ()
    reftag = Field(56, 4, "Initial / Expected Initial Logical Block Reference Tag (ILBRT/EILBRT, CDW14)")
    apptag = Field(60, 2, "Logical Block Application Tag / Expected (LBAT/ELBAT, CDW15 15:0)")
    appmask = Field(62, 2, "Logical Block Application Tag Mask / Expected (LBATM/ELBATM, CDW15 31:16)")


class _InitialTags:
    """The tag names of commands that write protection information."""

    __slots__ = ()
    ilbrt = _alias(_Tags.reftag, "Initial Logical Block Reference Tag (ILBRT, CDW14)")
    lbat = _alias(_Tags.apptag, "Logical Block Application Tag (LBAT, CDW15 15:0)")
    lbatm = _alias(_Tags.appmask, "Logical Block Application Tag Mask (LBATM, CDW15 31:16)")


class _ExpectedTags:
    """The tag names of commands that check protection information."""

    __slots__ = ()
    eilbrt = _alias(_Tags.reftag, "Expected Initial Logical Block Reference Tag (EILBRT, CDW14)")
    elbat = _alias(_Tags.apptag, "Expected Logical Block Application Tag (ELBAT, CDW15 15:0)")
    elbatm = _alias(_Tags.appmask, "Expected Logical Block Application Tag Mask (ELBATM, CDW15 31:16)")


class _AccessHints:
    """The Dataset Management field of Read and Write, CDW13 bits 7:0."""

    __slots__ = ()
    dsm = Field(52, 1, "Dataset Management (DSM, CDW13 7:0)")
    dsm_af = Bits(52, 1, 0, 4, "DSM Access Frequency (CDW13 3:0), see AccessFrequency")
    dsm_al = Bits(52, 1, 4, 2, "DSM Access Latency (CDW13 5:4), see AccessLatency")
    dsm_seqreq = Flag(52, 1, 6, "DSM Sequential Request (CDW13 bit 6)")
    dsm_incprs = Flag(52, 1, 7, "DSM Incompressible (CDW13 bit 7)")


class _Directives:
    """Directive fields of Write and Copy."""

    __slots__ = ()
    dtype = Bits(48, 4, 20, 4, "Directive Type (DTYPE, CDW12 23:20)")
    dspec = Field(54, 2, "Directive Specific (DSPEC, CDW13 31:16)")


class ReadWriteBase(NvmCommand):
    """A range of logical blocks: Starting LBA in CDW10-11 and Number of
    Logical Blocks (0-based) in CDW12 15:0."""

    slba = Field(40, 8, "Starting LBA (SLBA, CDW10-11)")
    nlb = Bits(48, 4, 0, 16, "Number of Logical Blocks (NLB, CDW12 15:0), 0-based")

    @property
    def nblocks(self) -> int:
        """Number of logical blocks (NLB + 1)."""
        return self.nlb + 1

    @nblocks.setter
    def nblocks(self, value: int) -> None:
        self.nlb = check_range("nblocks", value, 1, 0x10000) - 1


class ProtectedReadWriteBase(_ProtectionControl, _AccessFlags, _Tags, ReadWriteBase):
    """A range of logical blocks with end-to-end protection information
    controls: STC, PRINFO, FUA, LR (CDW12) and the tags (CDW14-15)."""


# ---------------------------------------------------------------------------
# Commands, in opcode order


class Flush(NvmCommand):
    """Flush: commit volatile data of namespace NSID (FFFFFFFFh: all)."""

    OPCODE = NvmOpcode.FLUSH


class Write(_AccessHints, _Directives, _InitialTags, ProtectedReadWriteBase):
    """Write."""

    OPCODE = NvmOpcode.WRITE


class Read(_AccessHints, _ExpectedTags, ProtectedReadWriteBase):
    """Read."""

    OPCODE = NvmOpcode.READ


class WriteUncorrectable(ReadWriteBase):
    """Write Uncorrectable: mark a range invalid (reads then fail)."""

    OPCODE = NvmOpcode.WRITE_UNCORRECTABLE


class Compare(_ExpectedTags, ProtectedReadWriteBase):
    """Compare: compare the data buffer with the range."""

    OPCODE = NvmOpcode.COMPARE


class WriteZeroes(_InitialTags, ProtectedReadWriteBase):
    """Write Zeroes: no data buffer; DEAC asks to deallocate instead."""

    OPCODE = NvmOpcode.WRITE_ZEROES

    deac = Flag(48, 4, 25, "Deallocate (DEAC, CDW12 bit 25)")


class DatasetManagement(NvmCommand):
    """Dataset Management: the data buffer holds NR + 1 16-byte ranges
    (:class:`DsmRange`)."""

    OPCODE = NvmOpcode.DATASET_MANAGEMENT

    nr = Field(40, 1, "Number of Ranges (NR, CDW10 7:0), 0-based")
    attributes = Field(44, 4, "Attributes (CDW11), see DsmAttributes")
    idr = Flag(44, 4, 0, "Integral Dataset for Read (IDR, CDW11 bit 0)")
    idw = Flag(44, 4, 1, "Integral Dataset for Write (IDW, CDW11 bit 1)")
    ad = Flag(44, 4, 2, "Deallocate (AD, CDW11 bit 2)")

    @property
    def nranges(self) -> int:
        """Number of ranges in the data buffer (NR + 1)."""
        return self.nr + 1

    @nranges.setter
    def nranges(self, value: int) -> None:
        self.nr = check_range("nranges", value, 1, MAX_DSM_RANGES) - 1


class Verify(_ExpectedTags, ProtectedReadWriteBase):
    """Verify: check the range's integrity without transferring data."""

    OPCODE = NvmOpcode.VERIFY


class Copy(_Directives, _AccessFlags, _InitialTags, _Tags, NvmCommand):
    """Copy: the data buffer holds NR + 1 source range entries (format 0:
    :class:`CopySourceRange`); they are copied to consecutive LBAs from
    SDLBA.  CDW12 bits 31:16 read as on a Write (STCW and PRINFOW apply to
    the destination); CDW14 (LBTL, the ILBRT for 16b Guard) and CDW15 hold
    the tags for the written blocks."""

    OPCODE = NvmOpcode.COPY

    sdlba = Field(40, 8, "Starting Destination LBA (SDLBA, CDW10-11)")
    nr = Bits(48, 4, 0, 8, "Number of Ranges (NR, CDW12 7:0), 0-based")
    desfmt = Bits(48, 4, 8, 4, "Descriptor Format (CDW12 11:8), see CopyDescriptorFormat")
    prinfor = Bits(48, 4, 12, 4, "Protection Information Field Read (PRINFOR, CDW12 15:12), see Prinfo")
    stcw = _alias(_ProtectionControl.stc, "Storage Tag Check Write (STCW, CDW12 bit 24)")
    prinfow = _alias(_ProtectionControl.prinfo, "Protection Information Field Write (PRINFOW, CDW12 29:26)")

    @property
    def nranges(self) -> int:
        """Number of source ranges (NR + 1)."""
        return self.nr + 1

    @nranges.setter
    def nranges(self, value: int) -> None:
        self.nr = check_range("nranges", value, 1, MAX_COPY_RANGES) - 1


# ---------------------------------------------------------------------------
# Data structures carried by Dataset Management and Copy


class DsmRange(Struct):
    """A Dataset Management range (figure "Dataset Management - Range
    Definition"): 16 bytes.  Unlike a command's NLB, the length here is a
    plain count of logical blocks."""

    SIZE = DSM_RANGE_SIZE

    cattr = Field(0, 4, "Context Attributes")
    af = Bits(0, 4, 0, 4, "Context Attributes: Access Frequency (3:0), see AccessFrequency")
    al = Bits(0, 4, 4, 2, "Context Attributes: Access Latency (5:4), see AccessLatency")
    sr = Flag(0, 4, 8, "Context Attributes: Sequential Read Range (bit 8)")
    sw = Flag(0, 4, 9, "Context Attributes: Sequential Write Range (bit 9)")
    wp = Flag(0, 4, 10, "Context Attributes: Write Prepare (bit 10)")
    cas = Field(3, 1, "Context Attributes: Command Access Size in blocks (31:24)")
    nlb = Field(4, 4, "Length in logical blocks (not 0-based)")
    slba = Field(8, 8, "Starting LBA")


class CopySourceRange(Struct):
    """A Copy Source Range Entry, descriptor format 0h: 32 bytes."""

    SIZE = COPY_RANGE_SIZE

    slba = Field(8, 8, "Starting LBA (SLBA, bytes 15:8)")
    nlb = Field(16, 2, "Number of Logical Blocks (NLB, bytes 17:16), 0-based")
    eilbrt = Field(24, 4, "Expected Initial Logical Block Reference Tag (EILBRT, bytes 27:24)")
    elbat = Field(28, 2, "Expected Logical Block Application Tag (ELBAT, bytes 29:28)")
    elbatm = Field(30, 2, "Expected Logical Block Application Tag Mask (ELBATM, bytes 31:30)")

    @property
    def nblocks(self) -> int:
        """Number of logical blocks (NLB + 1)."""
        return self.nlb + 1

    @nblocks.setter
    def nblocks(self, value: int) -> None:
        self.nlb = check_range("nblocks", value, 1, 0x10000) - 1


def _pack(cls: type[Struct], ranges: Iterable[Any], buf: Any, offset: int, limit: int,
          tuple_fields: tuple[str, ...]) -> Any:
    items = list(ranges)
    if not 1 <= len(items) <= limit:
        raise ValueError(f"{cls.__name__}: between 1 and {limit} ranges, got {len(items)}")
    if buf is None:
        buf = bytearray(offset + cls.SIZE * len(items))
    for i, item in enumerate(items):
        view = cls.view(buf, offset + i * cls.SIZE)
        if isinstance(item, Struct):
            if not isinstance(item, cls):
                raise TypeError(f"expected {cls.__name__}, got {type(item).__name__}")
            view.raw[:] = item.raw
            continue
        if isinstance(item, Mapping):
            values = dict(item)
        else:
            fields = tuple(item)
            if not 2 <= len(fields) <= len(tuple_fields):
                raise ValueError(f"range {i}: expected a tuple {tuple_fields}, got {fields!r}")
            values = dict(zip(tuple_fields, fields))
        view.clear()
        for name, value in values.items():
            if name not in cls.FIELDS and not isinstance(getattr(cls, name, None), property):
                raise TypeError(f"{cls.__name__} has no field {name!r}")
            setattr(view, name, value)
    return buf


def _views(cls: type[Struct], buf: Any, count: int, offset: int) -> list:
    if count < 0:
        raise ValueError("count must be >= 0")
    return [cls.view(buf, offset + i * cls.SIZE) for i in range(count)]


def pack_dsm_ranges(ranges: Iterable[Any], buf: Any = None, offset: int = 0) -> Any:
    """Write Dataset Management ranges into ``buf`` at ``offset`` (a new
    bytearray when ``buf`` is None) and return the buffer.

    Each range is a :class:`DsmRange`, a mapping of its field names, or a
    tuple ``(slba, nlb)`` / ``(slba, nlb, cattr)`` with ``nlb`` a plain
    block count, as in the range itself."""
    return _pack(DsmRange, ranges, buf, offset, MAX_DSM_RANGES, ("slba", "nlb", "cattr"))


def dsm_ranges(buf: Any, count: int, offset: int = 0) -> list[DsmRange]:
    """Views of ``count`` consecutive DSM ranges in ``buf`` (no copy); for a
    command, ``count`` is ``cmd.nranges``."""
    return _views(DsmRange, buf, count, offset)


def pack_copy_ranges(ranges: Iterable[Any], buf: Any = None, offset: int = 0) -> Any:
    """Write Copy source range entries (format 0) into ``buf`` at ``offset``
    (a new bytearray when ``buf`` is None) and return the buffer.

    Each range is a :class:`CopySourceRange`, a mapping of its field (or
    ``nblocks``) names, or a tuple ``(slba, nblocks)`` /
    ``(slba, nblocks, eilbrt, elbat, elbatm)`` where ``nblocks`` is a plain
    block count (the entry stores it 0-based)."""
    return _pack(CopySourceRange, ranges, buf, offset, MAX_COPY_RANGES,
                 ("slba", "nblocks", "eilbrt", "elbat", "elbatm"))


def copy_ranges(buf: Any, count: int, offset: int = 0) -> list[CopySourceRange]:
    """Views of ``count`` consecutive format 0 source range entries in
    ``buf`` (no copy); for a command, ``count`` is ``cmd.nranges``."""
    return _views(CopySourceRange, buf, count, offset)
