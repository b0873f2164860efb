"""DMA for the PCIe function: a command's data pointer turned into views of
host memory (NVMe 2.0 base spec 4.1.1 "Physical Region Page Entry and
List", 4.1.2 "Scatter Gather List"; figure 91 PSDT and figure 92 MPTR of
the common command format).

:func:`map_request` runs between ``Controller.prepare`` (which sets
``req.data_len``/``req.meta_len``) and ``Controller.execute``.  It walks the
PRPs or SGLs of the submission queue entry and sets ``req.data`` and
``req.meta`` to lists of memoryviews straight into host memory (nothing is
copied) covering exactly the transfer, or raises :class:`NvmeError` with
the status the specification names for what is wrong:

- PSDT 11b (reserved), SGLs on the admin queue ("PRPs shall be used for
  all Admin commands for NVMe over PCIe implementations"), or SGLs when the
  function does not support them: Invalid Field in Command.
- PRPs (4.1.1): PRP1 may carry a dword aligned offset; PRP2 is unused,
  the second data page, or a qword aligned PRP List pointer whose list
  entries are page aligned and whose last slot in a page chains to the next
  list page when more entries follow.  Any other offset: PRP Offset
  Invalid.  The arithmetic is :func:`nvmestack.spec.dptr.prp_data_segments`.
- SGLs (4.1.2): SGL1 is the first segment (one descriptor); Data Block
  descriptors map memory; Bit Bucket descriptors discard data on reads
  (scratch buffers stand in for them) and have no effect on writes (their
  length then does not count, as the spec says); Segment and Last Segment
  descriptors chain segments and may only be a segment's last descriptor
  (else Invalid Number of SGL Descriptors); a last segment holds no further
  segment pointer (Invalid SGL Segment Descriptor), a segment's length is a
  non-zero multiple of 16 and its address qword aligned (Invalid SGL
  Segment Descriptor); Keyed and Transport Data Blocks, the Offset sub type
  (reserved on PCIe), other sub types and reserved types: SGL Descriptor
  Type Invalid; an SGL shorter than the transfer or a descriptor running
  past 2^64: Data (Metadata) SGL Length Invalid.  A longer SGL is fine (the
  controller reports SGLS.LLDTS): descriptors past the end of the transfer
  are not examined, as 4.1.2 allows.  Loops are bounded: a segment reached
  again without data mapped since, or more than ``max_sgl_descriptors``
  descriptors examined, is Invalid Number of SGL Descriptors.
- Metadata (MPTR): with PSDT 00b or 01b the address of one contiguous
  buffer (dword aligned: SGLS.MBA is clear); with PSDT 10b the address of
  an SGL segment holding exactly one descriptor (qword aligned), walked
  like the data SGL.  A misaligned MPTR is Invalid Field in Command.
- Memory the host did not allocate (:class:`DmaError`): Data Transfer
  Error (DNR clear, as QEMU does).

A zero-length transfer maps nothing and looks at no pointer.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...memory import DmaError
from ...spec.dptr import (
    PRP_ENTRY_SIZE,
    SGL_DESCRIPTOR_SIZE,
    PrpError,
    PrpList,
    Psdt,
    SglDescriptor,
    SglSegment,
    SglSubtype,
    SglType,
    check_prp_entry,
    prp_data_segments,
)
from ...spec.status import GenericStatus
from ..errors import NvmeError
from ..request import DataDirection

__all__ = ["MAX_SGL_DESCRIPTORS", "map_prps", "map_request", "map_sgl"]

MAX_SGL_DESCRIPTORS = 16384
"""The most SGL descriptors one data (or metadata) SGL may make the device
examine: enough for 64 MiB in 4 KiB pieces, and a bound on SGLs that loop."""

# Byte offsets in the SQE for the error log's Parameter Error Location.
_CDW0_PSDT = 1  # bits 7:6 of byte 1 (CDW0 bits 15:14)
_MPTR = 16
_DPTR = 24  # PRP1 / SGL1
_PRP2 = 32

_ADDRESS_LIMIT = 1 << 64
_SEGMENT_ALIGN = 0x7  # SGL segments are qword aligned
_MPTR_DWORD = 0x3
_MPTR_QWORD = 0x7

Segments = list[tuple[int | None, int]]  # (address, length); address None: a bit bucket


def map_request(memory, req, *, page_size: int, sgl_supported: bool = True,
                max_sgl_descriptors: int = MAX_SGL_DESCRIPTORS) -> None:
    """Map the data and metadata of a prepared request.

    ``memory`` is the host memory (``PhysicalMemory``: ``view(addr, len)``
    raising ``DmaError``); ``page_size`` the memory page size of CC.MPS in
    bytes; ``sgl_supported`` whether the function supports SGLs for I/O
    commands.  On success ``req.data``/``req.meta`` hold the views; on
    failure they are left as they were and :class:`NvmeError` is raised."""
    sqe = req.sqe
    psdt = sqe.psdt
    if psdt != Psdt.PRP:
        if psdt not in (Psdt.SGL_MPTR_CONTIGUOUS, Psdt.SGL_MPTR_SGL):
            raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW0_PSDT, bit=6, msg="PSDT 11b is reserved")
        if req.admin:
            raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW0_PSDT, bit=6,
                            msg="admin commands use PRPs on PCIe")
        if not sgl_supported:
            raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW0_PSDT, bit=6, msg="SGLs are not supported")
    to_host = _controller_to_host(req)
    data: list[memoryview] = []
    meta: list[memoryview] = []
    if req.data_len:
        if psdt == Psdt.PRP:
            data = map_prps(memory, sqe.prp1, sqe.prp2, req.data_len, page_size)
        else:
            data = map_sgl(memory, sqe.sgl1, req.data_len, to_host=to_host,
                           max_descriptors=max_sgl_descriptors)
    if req.meta_len:
        meta = _map_metadata(memory, sqe.mptr, psdt, req.meta_len, to_host, max_sgl_descriptors)
    req.data = data
    req.meta = meta


def _controller_to_host(req) -> bool:
    """Whether the data flows from the controller to host memory (a read):
    only then do bit buckets discard anything."""
    if req.data_dir != DataDirection.NONE:
        return req.data_dir == DataDirection.CTRL_TO_HOST
    return req.opcode & 0x3 == 0x2  # the opcode's Data Transfer Direction bits


def _transfer_error(exc: DmaError) -> NvmeError:
    return NvmeError(GenericStatus.DATA_TRANSFER_ERROR, dnr=False, msg=str(exc))


# --- PRPs ---------------------------------------------------------------------


def map_prps(memory, prp1: int, prp2: int, length: int, page_size: int) -> list[memoryview]:
    """Views of the ``length`` bytes PRP1/PRP2 describe (4.1.1)."""
    if not length:
        return []
    try:
        check_prp_entry(prp1, page_size, first=True)
    except PrpError as exc:
        raise NvmeError(GenericStatus.PRP_OFFSET_INVALID, param=_DPTR, msg=str(exc)) from None

    def read_list(addr: int, count: int) -> list[int]:
        return PrpList(memory.view(addr, count * PRP_ENTRY_SIZE)).read(0, count)

    try:
        segments = prp_data_segments(prp1, prp2, length, page_size, read_list)
        return _views(memory, segments)
    except PrpError as exc:
        raise NvmeError(GenericStatus.PRP_OFFSET_INVALID, param=_PRP2, msg=str(exc)) from None
    except DmaError as exc:
        raise _transfer_error(exc) from None


# --- SGLs ---------------------------------------------------------------------


def map_sgl(memory, first: SglDescriptor, length: int, *, to_host: bool, metadata: bool = False,
            max_descriptors: int = MAX_SGL_DESCRIPTORS) -> list[memoryview]:
    """Views of the ``length`` bytes the SGL starting with descriptor
    ``first`` describes (4.1.2); bit buckets of a read become scratch
    buffers.  ``metadata`` selects the Metadata SGL Length Invalid status."""
    if not length:
        return []
    try:
        return _views(memory, _walk_sgl(memory, first, length, to_host, metadata, max_descriptors))
    except DmaError as exc:
        raise _transfer_error(exc) from None


def _walk_sgl(memory, first: SglDescriptor, length: int, to_host: bool, metadata: bool,
              max_descriptors: int) -> Segments:
    length_invalid = (GenericStatus.METADATA_SGL_LENGTH_INVALID if metadata
                      else GenericStatus.DATA_SGL_LENGTH_INVALID)
    param = _MPTR if metadata else _DPTR
    segments: Segments = []
    remaining = length
    current: Sequence[SglDescriptor] = (first,)  # SGL1: the first segment, one descriptor
    in_last = False
    examined = 0
    visited: dict[tuple[int, int], int] = {}
    while True:
        following: tuple[int, int, bool] | None = None
        count = len(current)
        for i in range(count):
            if not remaining:
                break  # descriptors past the transfer are not examined
            examined += 1
            if examined > max_descriptors:
                raise NvmeError(GenericStatus.INVALID_SGL_DESCRIPTOR_COUNT, param=param,
                                msg=f"more than {max_descriptors} SGL descriptors")
            desc = current[i]
            kind = desc.sgl_type
            subtype = desc.sgl_subtype
            if kind == SglType.DATA_BLOCK or kind == SglType.BIT_BUCKET:
                if subtype != SglSubtype.ADDRESS:
                    raise NvmeError(GenericStatus.SGL_DESCRIPTOR_TYPE_INVALID, param=param,
                                    msg=f"SGL descriptor type {kind:#x} with sub type {subtype:#x}")
                dlen = desc.length
                if not dlen:
                    continue  # a NULL descriptor
                take = min(dlen, remaining)
                if kind == SglType.BIT_BUCKET:
                    if not to_host:
                        continue  # a bit bucket in a source buffer has no effect
                    segments.append((None, take))
                else:
                    addr = desc.address
                    if addr + dlen > _ADDRESS_LIMIT:
                        raise NvmeError(length_invalid, param=param, msg=f"data block {addr:#x}+{dlen:#x} wraps")
                    segments.append((addr, take))
                remaining -= take
            elif kind == SglType.SEGMENT or kind == SglType.LAST_SEGMENT:
                if in_last:
                    raise NvmeError(GenericStatus.INVALID_SGL_SEGMENT_DESCRIPTOR, param=param,
                                    msg="segment descriptor inside the last segment")
                if i != count - 1:
                    raise NvmeError(GenericStatus.INVALID_SGL_DESCRIPTOR_COUNT, param=param,
                                    msg=f"segment descriptor at {i} of a {count}-descriptor segment")
                if subtype != SglSubtype.ADDRESS:
                    raise NvmeError(GenericStatus.SGL_DESCRIPTOR_TYPE_INVALID, param=param,
                                    msg=f"SGL descriptor type {kind:#x} with sub type {subtype:#x}")
                seg_addr, seg_len = desc.address, desc.length
                if not seg_len or seg_len % SGL_DESCRIPTOR_SIZE or seg_addr & _SEGMENT_ALIGN:
                    raise NvmeError(GenericStatus.INVALID_SGL_SEGMENT_DESCRIPTOR, param=param,
                                    msg=f"SGL segment {seg_addr:#x}+{seg_len:#x}")
                if seg_addr + seg_len > _ADDRESS_LIMIT:
                    raise NvmeError(length_invalid, param=param, msg=f"segment {seg_addr:#x}+{seg_len:#x} wraps")
                following = (seg_addr, seg_len, kind == SglType.LAST_SEGMENT)
            else:
                # Keyed and Transport SGL Data Blocks (RDMA, NVMe/TCP), reserved
                # and vendor specific types: not supported on PCIe.
                raise NvmeError(GenericStatus.SGL_DESCRIPTOR_TYPE_INVALID, param=param,
                                msg=f"SGL descriptor type {kind:#x}")
        if not remaining:
            return segments
        if following is None:
            raise NvmeError(length_invalid, param=param,
                            msg=f"the SGL describes {length - remaining} of {length} bytes")
        seg_addr, seg_len, in_last = following
        key = (seg_addr, seg_len)
        if visited.get(key) == remaining:
            raise NvmeError(GenericStatus.INVALID_SGL_DESCRIPTOR_COUNT, param=param,
                            msg=f"SGL segment {seg_addr:#x} reached again without progress")
        visited[key] = remaining
        current = SglSegment(memory.view(seg_addr, seg_len))


# --- metadata -----------------------------------------------------------------


def _map_metadata(memory, mptr: int, psdt: int, length: int, to_host: bool,
                  max_descriptors: int) -> list[memoryview]:
    if psdt == Psdt.SGL_MPTR_SGL:
        if mptr & _MPTR_QWORD:
            raise NvmeError(GenericStatus.INVALID_FIELD, param=_MPTR, msg=f"MPTR {mptr:#x} is not qword aligned")
        try:
            first = SglDescriptor.view(memory.view(mptr, SGL_DESCRIPTOR_SIZE))
        except DmaError as exc:
            raise _transfer_error(exc) from None
        return map_sgl(memory, first, length, to_host=to_host, metadata=True, max_descriptors=max_descriptors)
    if mptr & _MPTR_DWORD:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_MPTR, msg=f"MPTR {mptr:#x} is not dword aligned")
    try:
        return [memory.view(mptr, length)]
    except DmaError as exc:
        raise _transfer_error(exc) from None


# --- views --------------------------------------------------------------------


def _views(memory, segments: Segments) -> list[memoryview]:
    """One view per run of physically adjacent segments when the run lies
    in one buffer (fewer, larger pieces for the backend), else one view per
    segment; a scratch buffer for each bit bucket."""
    views: list[memoryview] = []
    i, n = 0, len(segments)
    while i < n:
        addr, length = segments[i]
        if addr is None:
            views.append(memoryview(bytearray(length)))
            i += 1
            continue
        j, end = i + 1, addr + length
        while j < n and segments[j][0] == end:
            end += segments[j][1]
            j += 1
        try:
            views.append(memory.view(addr, end - addr))
        except DmaError:
            if j == i + 1:
                raise
            views.extend(memory.view(a, m) for a, m in segments[i:j])
        i = j
    return views
