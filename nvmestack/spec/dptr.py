"""Data pointers: PRP entries and lists, SGL descriptors (NVMe 2.0 base spec
4.1.1 "Physical Region Page Entry and List", 4.1.2 "Scatter Gather List").

PRPs (4.1.1).  A PRP entry is a 64-bit memory address whose bits 1:0 are
reserved (dword aligned).  The low ``log2(page size)`` bits are the offset
into a memory page (page size from CC.MPS).  Only the first entry of a data
transfer (PRP1) may have a non-zero offset; every later entry addresses the
start of a page.  PRP2 then is, depending on how many pages the transfer
touches from PRP1's offset:

- one page: unused;
- two pages: the address of the second page;
- more: a PRP List pointer.  A list fills the rest of its page (PRP2 may
  point into the middle of a page, qword aligned); when more entries remain
  than the page has room for, its last slot points to the next list page
  (page aligned) instead of holding data.

The functions here are pure arithmetic on those rules; reading and writing
host memory belongs to the memory model.

SGLs (4.1.2).  A 16-byte descriptor whose last byte names its type and
subtype; see the ``sgl_*`` builders and :class:`SglSegment`.
"""

from __future__ import annotations

import struct as _struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

from .layout import Bits, Field, ItemView, Raw, Struct

__all__ = [
    "Psdt",
    "SglType",
    "SglSubtype",
    "SglDescriptor",
    "SGL_DESCRIPTOR_SIZE",
    "SglSegment",
    "sgl_data_block",
    "sgl_bit_bucket",
    "sgl_segment",
    "sgl_last_segment",
    "sgl_keyed_data_block",
    "sgl_transport_data_block",
    "sgl_segment_count",
    "PRP_ENTRY_SIZE",
    "PRP_RESERVED_MASK",
    "Prp2Use",
    "PrpError",
    "check_page_size",
    "prp_offset",
    "prp_page_base",
    "check_prp_entry",
    "prp_page_count",
    "prp2_use",
    "prp_list_entry_count",
    "prp_list_capacity",
    "prp_list_layout",
    "prp_list_page_count",
    "PrpList",
    "PrpListPage",
    "PrpPlan",
    "build_prps",
    "prp_data_segments",
]

SGL_DESCRIPTOR_SIZE = 16


class Psdt(IntEnum):
    """PRP or SGL for Data Transfer, bits 7:6 of command dword 0."""

    PRP = 0
    SGL_MPTR_CONTIGUOUS = 1  # MPTR holds the address of a contiguous metadata buffer
    SGL_MPTR_SGL = 2  # MPTR holds the address of an SGL segment with one descriptor


class SglType(IntEnum):
    """SGL Descriptor Type, bits 7:4 of the SGL Identifier (byte 15)."""

    DATA_BLOCK = 0x0
    BIT_BUCKET = 0x1
    SEGMENT = 0x2
    LAST_SEGMENT = 0x3
    KEYED_DATA_BLOCK = 0x4
    TRANSPORT_DATA_BLOCK = 0x5
    VENDOR_SPECIFIC = 0xF


class SglSubtype(IntEnum):
    """SGL Descriptor Sub Type, bits 3:0 of the SGL Identifier."""

    ADDRESS = 0x0
    OFFSET = 0x1
    TRANSPORT_SPECIFIC = 0xA  # NVMe/TCP and RDMA use 0Ah for "Transport specific"
    INVALIDATE_KEY = 0xF  # keyed data block: invalidate the key after the transfer


class SglDescriptor(Struct):
    """A 16-byte SGL descriptor.  Which fields mean something depends on
    ``sgl_type``: data block / bit bucket / segment / last segment use
    ``address`` and ``length``; keyed data block uses ``address``,
    ``keyed_length`` (3 bytes) and ``key``; a transport data block uses
    ``length`` only."""

    SIZE = SGL_DESCRIPTOR_SIZE

    address = Field(0, 8, "Address (or offset for subtype Offset)")
    length = Field(8, 4, "Length in bytes")
    keyed_length = Field(8, 3, "Length of a keyed data block (24 bits)")
    key = Field(11, 4, "Key of a keyed data block")
    sgl_identifier = Field(15, 1, "SGL Identifier: type 7:4, subtype 3:0")
    sgl_type = Bits(15, 1, 4, 4, "SGL Descriptor Type")
    sgl_subtype = Bits(15, 1, 0, 4, "SGL Descriptor Sub Type")
    reserved = Raw(12, 3, "Reserved bytes of a non-keyed descriptor")

    @property
    def data_length(self) -> int:
        """The byte count the descriptor describes, whichever length field
        its type uses (24-bit for keyed data blocks)."""
        if self.sgl_type == SglType.KEYED_DATA_BLOCK:
            return self.keyed_length
        return self.length

    @property
    def is_segment_pointer(self) -> bool:
        """True for Segment and Last Segment descriptors (pointers to the
        next segment of the list)."""
        return self.sgl_type in (SglType.SEGMENT, SglType.LAST_SEGMENT)


# --- SGL builders -------------------------------------------------------------


def _sgl(sgl_type: SglType, subtype: int, address: int, length: int) -> SglDescriptor:
    if not 0 <= length <= 0xFFFFFFFF:
        raise ValueError(f"SGL length {length} does not fit in 32 bits")
    if not 0 <= address < 1 << 64:
        raise ValueError(f"SGL address {address:#x} does not fit in 64 bits")
    return SglDescriptor(address=address, length=length, sgl_type=sgl_type, sgl_subtype=subtype)


def sgl_data_block(address: int, length: int, *, subtype: int = SglSubtype.ADDRESS) -> SglDescriptor:
    """Data Block descriptor: ``length`` bytes at ``address`` (or at an
    offset into in-capsule data with ``subtype=SglSubtype.OFFSET``)."""
    return _sgl(SglType.DATA_BLOCK, subtype, address, length)


def sgl_bit_bucket(length: int) -> SglDescriptor:
    """Bit Bucket descriptor: on a read, ``length`` bytes the host discards."""
    return _sgl(SglType.BIT_BUCKET, SglSubtype.ADDRESS, 0, length)


def _check_segment_length(length: int) -> None:
    if length <= 0 or length % SGL_DESCRIPTOR_SIZE:
        raise ValueError(f"SGL segment length {length} is not a positive multiple of {SGL_DESCRIPTOR_SIZE}")


def sgl_segment(address: int, length: int, *, subtype: int = SglSubtype.ADDRESS) -> SglDescriptor:
    """Segment descriptor: the next segment, ``length`` bytes of descriptors
    at ``address``, itself ending in a Segment or Last Segment descriptor."""
    _check_segment_length(length)
    return _sgl(SglType.SEGMENT, subtype, address, length)


def sgl_last_segment(address: int, length: int, *, subtype: int = SglSubtype.ADDRESS) -> SglDescriptor:
    """Last Segment descriptor: the final segment of the list."""
    _check_segment_length(length)
    return _sgl(SglType.LAST_SEGMENT, subtype, address, length)


def sgl_keyed_data_block(address: int, length: int, key: int, *, invalidate: bool = False) -> SglDescriptor:
    """Keyed SGL Data Block descriptor (RDMA): 24-bit length and 32-bit key;
    ``invalidate`` asks for the key to be invalidated after the transfer."""
    if not 0 <= length <= 0xFFFFFF:
        raise ValueError(f"keyed SGL length {length} does not fit in 24 bits")
    if not 0 <= key <= 0xFFFFFFFF:
        raise ValueError(f"SGL key {key:#x} does not fit in 32 bits")
    subtype = SglSubtype.INVALIDATE_KEY if invalidate else SglSubtype.ADDRESS
    return SglDescriptor(
        address=address, keyed_length=length, key=key, sgl_type=SglType.KEYED_DATA_BLOCK, sgl_subtype=subtype
    )


def sgl_transport_data_block(length: int, *, subtype: int = SglSubtype.TRANSPORT_SPECIFIC) -> SglDescriptor:
    """Transport SGL Data Block descriptor: ``length`` bytes the transport
    moves by its own means (NVMe/TCP: H2CData / C2HData PDUs)."""
    return _sgl(SglType.TRANSPORT_DATA_BLOCK, subtype, 0, length)


def sgl_segment_count(length: int) -> int:
    """Number of descriptors in a segment of ``length`` bytes."""
    _check_segment_length(length)
    return length // SGL_DESCRIPTOR_SIZE


class SglSegment(ItemView):
    """A view of an SGL segment (consecutive descriptors) in a buffer;
    indexing returns descriptor views, nothing is copied."""

    __slots__ = ("_mv", "_off", "_count")
    ITEM = "SGL descriptor"

    def __init__(self, buf, offset: int = 0, count: int | None = None):
        mv = _byte_view(buf)
        if count is None:
            count = (len(mv) - offset) // SGL_DESCRIPTOR_SIZE
        if offset < 0 or count < 0 or offset + count * SGL_DESCRIPTOR_SIZE > len(mv):
            raise ValueError(f"{count} SGL descriptors at offset {offset} do not fit a {len(mv)}-byte buffer")
        self._mv = mv
        self._off = offset
        self._count = count

    def __len__(self) -> int:
        return self._count

    def _item(self, i: int) -> SglDescriptor:
        return SglDescriptor.view(self._mv, self._off + i * SGL_DESCRIPTOR_SIZE)

    def _set_item(self, i: int, value) -> None:
        data = value.raw if isinstance(value, Struct) else _byte_view(value)
        if len(data) != SGL_DESCRIPTOR_SIZE:
            raise ValueError(f"an SGL descriptor is {SGL_DESCRIPTOR_SIZE} bytes, got {len(data)}")
        off = self._off + i * SGL_DESCRIPTOR_SIZE
        self._mv[off : off + SGL_DESCRIPTOR_SIZE] = data

    def fill(self, descriptors: Iterable[SglDescriptor]) -> int:
        """Write ``descriptors`` from the start; returns how many."""
        n = 0
        for n, d in enumerate(descriptors, 1):
            if n > self._count:
                raise ValueError(f"more than {self._count} descriptors for this segment")
            self[n - 1] = d
        return n

    @property
    def raw(self) -> memoryview:
        return self._mv[self._off : self._off + self._count * SGL_DESCRIPTOR_SIZE]


# --- PRP rules ------------------------------------------------------------------

PRP_ENTRY_SIZE = 8
PRP_RESERVED_MASK = 0x3
"""Bits 1:0 of every PRP entry are reserved: entries are dword aligned."""
_PRP_LIST_ALIGN_MASK = 0x7  # a PRP List pointer addresses qword entries


class Prp2Use(IntEnum):
    """What PRP Entry 2 holds for a transfer."""

    UNUSED = 0  # the transfer stays in PRP1's page
    DATA_PAGE = 1  # the transfer ends in the next page: PRP2 is that page
    LIST_POINTER = 2  # three or more pages: PRP2 points to a PRP List


class PrpError(ValueError):
    """A PRP entry or list breaks the rules of 4.1.1 (a device reports it
    as PRP Offset Invalid)."""


def check_page_size(page_size: int) -> None:
    """Raise ``ValueError`` unless ``page_size`` is a memory page size
    (power of two, 4 KiB .. 128 MiB)."""
    if page_size < 4096 or page_size & (page_size - 1) or page_size > 1 << 27:
        raise ValueError(f"{page_size} is not a memory page size (power of two, 4 KiB .. 128 MiB)")


def prp_offset(addr: int, page_size: int) -> int:
    """The offset portion of a PRP entry."""
    return addr & (page_size - 1)


def prp_page_base(addr: int, page_size: int) -> int:
    """The page base address portion of a PRP entry."""
    return addr & ~(page_size - 1)


def check_prp_entry(addr: int, page_size: int, *, first: bool = False) -> None:
    """Raise :class:`PrpError` unless ``addr`` is a valid PRP entry: a 64-bit
    address with bits 1:0 clear and, unless it is the ``first`` entry of
    the transfer (PRP1), no page offset."""
    if not 0 <= addr < 1 << 64:
        raise PrpError(f"PRP entry {addr:#x} does not fit in 64 bits")
    if addr & PRP_RESERVED_MASK:
        raise PrpError(f"PRP entry {addr:#x} has reserved bits 1:0 set")
    if not first and prp_offset(addr, page_size):
        raise PrpError(f"PRP entry {addr:#x} is not page aligned ({page_size} bytes)")


def prp_page_count(prp1: int, length: int, page_size: int) -> int:
    """Number of memory pages a transfer of ``length`` bytes starting at
    PRP1 touches (0 for an empty transfer)."""
    check_page_size(page_size)
    if length < 0:
        raise ValueError(f"transfer length {length} is negative")
    if length == 0:
        return 0
    return (prp_offset(prp1, page_size) + length + page_size - 1) // page_size


def prp2_use(prp1: int, length: int, page_size: int) -> Prp2Use:
    """What PRP2 must hold for this transfer."""
    pages = prp_page_count(prp1, length, page_size)
    if pages <= 1:
        return Prp2Use.UNUSED
    if pages == 2:
        return Prp2Use.DATA_PAGE
    return Prp2Use.LIST_POINTER


def prp_list_entry_count(prp1: int, length: int, page_size: int) -> int:
    """Number of data page entries held in PRP Lists (not counting chain
    pointers): every page after the first when PRP2 is a list pointer."""
    pages = prp_page_count(prp1, length, page_size)
    return pages - 1 if pages > 2 else 0


def prp_list_capacity(page_size: int, list_offset: int = 0) -> int:
    """Entry slots from ``list_offset`` to the end of a list page."""
    check_page_size(page_size)
    if list_offset & _PRP_LIST_ALIGN_MASK or not 0 <= list_offset < page_size:
        raise PrpError(f"PRP List offset {list_offset:#x} is not a qword offset inside a {page_size}-byte page")
    return (page_size - list_offset) // PRP_ENTRY_SIZE


def prp_list_layout(entries: int, page_size: int, first_list_offset: int = 0) -> list[int]:
    """How ``entries`` data entries spread over chained list pages: the
    number of data entries in each list page, in chain order.  Every page
    but the last also holds a chain pointer in its last slot."""
    if entries < 0:
        raise ValueError(f"entry count {entries} is negative")
    capacity = prp_list_capacity(page_size, first_list_offset)
    full = page_size // PRP_ENTRY_SIZE
    counts: list[int] = []
    while entries > 0:
        if entries <= capacity:
            counts.append(entries)
            break
        counts.append(capacity - 1)
        entries -= capacity - 1
        capacity = full
    return counts


def prp_list_page_count(entries: int, page_size: int, first_list_offset: int = 0) -> int:
    """Number of list pages ``entries`` data entries need."""
    return len(prp_list_layout(entries, page_size, first_list_offset))


def _byte_view(buf) -> memoryview:
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


class PrpList(ItemView):
    """A view of PRP entries (64-bit little-endian) in a buffer, typically
    one list page; reading and writing go straight to the buffer."""

    __slots__ = ("_mv", "_off", "_count")
    ITEM = "PRP entry"

    _ENTRY = _struct.Struct("<Q")

    def __init__(self, buf, offset: int = 0, count: int | None = None):
        mv = _byte_view(buf)
        if count is None:
            count = (len(mv) - offset) // PRP_ENTRY_SIZE
        if offset < 0 or count < 0 or offset + count * PRP_ENTRY_SIZE > len(mv):
            raise ValueError(f"{count} PRP entries at offset {offset} do not fit a {len(mv)}-byte buffer")
        self._mv = mv
        self._off = offset
        self._count = count

    @classmethod
    def page(cls, buf, page_size: int, list_offset: int = 0) -> PrpList:
        """The entries of a list page held in ``buf`` (``page_size`` bytes),
        from ``list_offset`` (the offset of the list pointer) to the end."""
        return cls(buf, list_offset, prp_list_capacity(page_size, list_offset))

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            start, stop, step = i.indices(self._count)
            if step == 1:
                return self.read(start, max(0, stop - start))
        return super().__getitem__(i)

    def _item(self, i: int) -> int:
        return self._ENTRY.unpack_from(self._mv, self._off + i * PRP_ENTRY_SIZE)[0]

    def _set_item(self, i: int, value: int) -> None:
        if not 0 <= value < 1 << 64:
            raise ValueError(f"PRP entry {value:#x} does not fit in 64 bits")
        self._ENTRY.pack_into(self._mv, self._off + i * PRP_ENTRY_SIZE, value)

    def __iter__(self) -> Iterator[int]:
        return iter(self.read(0, self._count))

    def read(self, start: int, count: int) -> list[int]:
        """``count`` entries from ``start``, decoded in one call."""
        if start < 0 or count < 0 or start + count > self._count:
            raise IndexError(f"PRP entries {start}..{start + count - 1} out of range (0..{self._count - 1})")
        return list(_struct.unpack_from(f"<{count}Q", self._mv, self._off + start * PRP_ENTRY_SIZE))

    def fill(self, entries: Sequence[int]) -> None:
        """Write ``entries`` from the start of the list in one call."""
        n = len(entries)
        if n > self._count:
            raise ValueError(f"{n} PRP entries do not fit a list of {self._count}")
        try:
            _struct.pack_into(f"<{n}Q", self._mv, self._off, *entries)
        except _struct.error as exc:
            raise ValueError(f"PRP entries must be 64-bit unsigned integers: {exc}") from None

    @property
    def raw(self) -> memoryview:
        return self._mv[self._off : self._off + self._count * PRP_ENTRY_SIZE]

    def __repr__(self) -> str:
        return f"PrpList([{', '.join(hex(x) for x in self)}])"


@dataclass(frozen=True)
class PrpListPage:
    """One list page to write: its address and its entries in order (the
    last one is the chain pointer when another list page follows)."""

    address: int
    entries: list[int]

    def encode(self) -> bytes:
        """The entries as wire bytes (8 bytes each, little-endian)."""
        return _struct.pack(f"<{len(self.entries)}Q", *self.entries)


@dataclass(frozen=True)
class PrpPlan:
    """The data pointer of a PRP transfer: PRP1, PRP2 and the list pages
    the host must write before it rings the doorbell."""

    prp1: int
    prp2: int
    lists: tuple[PrpListPage, ...] = ()


ListPages = Iterable[int] | Callable[[], int]


def build_prps(pages: Sequence[int], length: int, page_size: int, list_pages: ListPages = ()) -> PrpPlan:
    """Lay out a transfer of ``length`` bytes as PRP1, PRP2 and PRP Lists.

    ``pages`` are the addresses of the buffer's memory pages in order: the
    first (PRP1) may carry an offset, the others must be page aligned;
    entries beyond what ``length`` needs are ignored.  ``list_pages``
    supplies the addresses of list pages when the transfer needs any,
    either as an iterable or as a callable returning one address per call;
    the first may carry a qword-aligned offset, the next must be page
    aligned.  Nothing is written: the result says what to write where.
    """
    check_page_size(page_size)
    if not pages:
        raise ValueError("a PRP transfer needs at least one page address")
    prp1 = pages[0]
    check_prp_entry(prp1, page_size, first=True)
    count = prp_page_count(prp1, length, page_size)
    if len(pages) < count:
        raise ValueError(f"{length} bytes from offset {prp_offset(prp1, page_size)} span {count} pages, got {len(pages)}")
    data = list(pages[1:count])
    for addr in data:
        check_prp_entry(addr, page_size)
    if count <= 1:
        return PrpPlan(prp1, 0)
    if count == 2:
        return PrpPlan(prp1, data[0])

    next_list = list_pages if callable(list_pages) else iter(list_pages).__next__

    def take(first: bool) -> int:
        try:
            addr = next_list()
        except StopIteration:
            raise ValueError("not enough PRP list pages supplied") from None
        if not 0 <= addr < 1 << 64:
            raise PrpError(f"PRP List pointer {addr:#x} does not fit in 64 bits")
        if first and addr & _PRP_LIST_ALIGN_MASK:
            raise PrpError(f"PRP List pointer {addr:#x} is not qword aligned")
        if not first and prp_offset(addr, page_size):
            raise PrpError(f"chained PRP List page {addr:#x} is not page aligned")
        return addr

    prp2 = take(True)
    layout = prp_list_layout(len(data), page_size, prp_offset(prp2, page_size))
    lists: list[PrpListPage] = []
    addr, pos = prp2, 0
    for i, n in enumerate(layout):
        entries = data[pos : pos + n]
        pos += n
        if i + 1 < len(layout):
            nxt = take(False)
            entries.append(nxt)
            lists.append(PrpListPage(addr, entries))
            addr = nxt
        else:
            lists.append(PrpListPage(addr, entries))
    return PrpPlan(prp1, prp2, tuple(lists))


def prp_data_segments(
    prp1: int, prp2: int, length: int, page_size: int, read_list: Callable[[int, int], Sequence[int]] | None = None
) -> list[tuple[int, int]]:
    """The ``(address, nbytes)`` pieces of host memory a PRP data pointer
    describes, one per memory page, checking every entry on the way.

    When PRP2 is a list pointer, ``read_list(address, count)`` must return
    the ``count`` 64-bit entries stored at ``address`` (the caller's memory
    access; this function only applies the rules).  Raises
    :class:`PrpError` for a misaligned entry or list pointer."""
    check_page_size(page_size)
    check_prp_entry(prp1, page_size, first=True)
    count = prp_page_count(prp1, length, page_size)
    if count == 0:
        return []
    first_len = min(length, page_size - prp_offset(prp1, page_size))
    segments = [(prp1, first_len)]
    remaining = length - first_len
    if count == 1:
        return segments
    if count == 2:
        check_prp_entry(prp2, page_size)
        return segments + [(prp2, remaining)]
    if read_list is None:
        raise ValueError("PRP2 is a list pointer: read_list is needed to follow it")
    if prp2 & _PRP_LIST_ALIGN_MASK:
        raise PrpError(f"PRP List pointer {prp2:#x} is not qword aligned")
    addr = prp2
    layout = prp_list_layout(count - 1, page_size, prp_offset(prp2, page_size))
    for i, n in enumerate(layout):
        chained = i + 1 < len(layout)
        entries = list(read_list(addr, n + 1 if chained else n))
        for entry in entries[:n]:
            check_prp_entry(entry, page_size)
            nbytes = min(remaining, page_size)
            segments.append((entry, nbytes))
            remaining -= nbytes
        if chained:
            addr = entries[n]
            if not 0 <= addr < 1 << 64 or prp_offset(addr, page_size):
                raise PrpError(f"chained PRP List pointer {addr:#x} is not page aligned")
    return segments
