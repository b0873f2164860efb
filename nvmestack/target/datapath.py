"""The data path of the NVM commands: logical block data, metadata and
end-to-end protection information between the host's buffers (a request's
``data``/``meta`` scatter lists) and a namespace's backends.

Storage (see ``namespace.py``): the data backend holds ``nblocks *
block_size`` bytes, the metadata backend ``nblocks * metadata_size`` bytes,
whether the host sees the metadata interleaved with the data (extended LBAs)
or in a separate buffer.

Protection information at rest.  The 8-byte tuple of each block is stored
with every bit inverted (XOR FFh).  A block that was never written, or was
deallocated, reads back from the backend as zeroes, so its tuple reads as
FFFFh / FFFFh / FFFFFFFFh: the escape values that turn checking off for
every PI type, and the Guard of FFFFh that DLFEAT bit 4 cleared promises for
deallocated blocks (the rest of the metadata reads as zeroes, DLFEAT 001b).
Every tuple the host or the controller writes round-trips unchanged.

How the bytes move:

- Read and Write with no metadata, or with a separate metadata buffer: the
  backend reads into / writes from the host's views directly
  (``readinto``/``write`` with ``req.data_views``), no intermediate copy;
  with protection information the metadata (at most 16 bytes a block) goes
  through a small buffer where the PI is decoded, checked or generated,
  and the Guard is computed over the host's own views;
- extended LBAs, and the commands that only look at the data (Compare,
  Verify, Copy): per chunk of blocks through a bounce buffer, split per
  block (interleaving, PI generation and checks, PRACT stripping), at most
  :data:`CHUNK_BYTES` of data at a time.

Every function here expects the caller (``io.py``) to have checked the LBA
range and the command's fields; each takes ``ns.lock`` itself for the whole
operation, so commands on one namespace never interleave (a fused Compare
and Write holds the lock across both halves: the lock is re-entrant).
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

from ..spec.checksum import crc16_t10dif
from ..spec.pi import (
    APP_TAG_ESCAPE,
    PI_TUPLE_SIZE,
    REF_TAG_ESCAPE,
    PiTuple,
    PiType,
    Prinfo,
    app_tag_matches,
    expected_ref_tag,
    pi_offset_in_metadata,
)
from ..spec.status import GenericStatus, MediaStatus
from .errors import NvmeError

if TYPE_CHECKING:
    from .namespace import Namespace
    from .request import Request

__all__ = [
    "CHUNK_BYTES",
    "Protection",
    "Geometry",
    "host_lengths",
    "strips_pi",
    "first_uncorrectable",
    "read",
    "write",
    "compare",
    "verify",
    "write_zeroes",
    "deallocate",
    "write_uncorrectable",
    "copy_range",
    "check_copy_range",
    "read_stored",
]

CHUNK_BYTES = 1 << 20  # data bytes per bounce chunk

# The whole 8-byte tuple in one go, built from PiTuple's own fields.
_TUPLE = struct.Struct(">" + "".join({2: "H", 4: "I"}[f.size] for f in
                                      (PiTuple.guard_tag, PiTuple.app_tag, PiTuple.ref_tag)))
assert [f.offset for f in (PiTuple.guard_tag, PiTuple.app_tag, PiTuple.ref_tag)] == [0, 2, 4]
assert all(f.endian == "big" for f in (PiTuple.guard_tag, PiTuple.app_tag, PiTuple.ref_tag))
assert _TUPLE.size == PI_TUPLE_SIZE


@dataclass(frozen=True)
class Protection:
    """The protection information controls of one command (or of one Copy
    source range): PRINFO (PRACT and PRCHK) and the tags of CDW14-15
    (ILBRT/EILBRT, LBAT/ELBAT, LBATM/ELBATM)."""

    prinfo: int = 0
    reftag: int = 0
    apptag: int = 0
    appmask: int = 0

    @property
    def pract(self) -> bool:
        return bool(self.prinfo & Prinfo.PRACT)

    @property
    def prchk(self) -> int:
        return self.prinfo & Prinfo.PRCHK_ALL


NO_PROTECTION = Protection()


class Geometry:
    """A namespace's block format, read once per command (under its lock)."""

    __slots__ = ("bs", "ms", "extended", "pi_type", "pi_off", "guard_meta", "nblocks")

    def __init__(self, ns: "Namespace"):
        self.bs = ns.block_size
        self.ms = ns.metadata_size
        self.nblocks = ns.nblocks
        self.extended = bool(ns.extended and self.ms)
        self.pi_type = int(ns.pi_type) if self.ms >= PI_TUPLE_SIZE else 0
        self.pi_off = pi_offset_in_metadata(self.ms, ns.pi_first) if self.pi_type else 0
        # The Guard covers the metadata bytes before the tuple (PI last) as
        # well as the data; with the tuple first it covers the data only.
        self.guard_meta = self.pi_off

    def chunk(self) -> int:
        """Blocks per bounce chunk."""
        return max(1, CHUNK_BYTES // self.bs)


def strips_pi(g: Geometry, prinfo: int) -> bool:
    """PRACT with 8 bytes of metadata: the host transfers no metadata (the
    controller inserts the PI on writes and strips it on reads)."""
    return bool(g.pi_type and prinfo & Prinfo.PRACT and g.ms == PI_TUPLE_SIZE)


def host_lengths(ns: "Namespace", nlb: int, prinfo: int = 0) -> tuple[int, int]:
    """(data bytes, separate metadata bytes) the host transfers for ``nlb``
    blocks of ``ns`` under ``prinfo``."""
    g = Geometry(ns)
    data = nlb * g.bs
    if not g.ms or strips_pi(g, prinfo):
        return data, 0
    if g.extended:
        return data + nlb * g.ms, 0
    return data, nlb * g.ms


# ---------------------------------------------------------------------------
# Host buffers


class _Cursor:
    """Walks a scatter list (a request's ``data`` or ``meta``) in order."""

    __slots__ = ("_bufs", "_i", "_pos")

    def __init__(self, bufs: Sequence[memoryview]):
        self._bufs = [b if (b.format == "B" and b.ndim == 1) else b.cast("B") for b in bufs]
        self._i = 0
        self._pos = 0

    def views(self, n: int) -> list[memoryview]:
        out = []
        while n:
            if self._i >= len(self._bufs):
                raise ValueError("range beyond the request's buffers")
            buf = self._bufs[self._i]
            take = min(buf.nbytes - self._pos, n)
            if take:
                out.append(buf[self._pos : self._pos + take])
            self._pos += take
            n -= take
            if self._pos >= buf.nbytes:
                self._i += 1
                self._pos = 0
        return out

    def gather(self, dst: memoryview) -> None:
        """Copy the next ``len(dst)`` host bytes into ``dst``."""
        pos = 0
        for v in self.views(dst.nbytes):
            dst[pos : pos + v.nbytes] = v
            pos += v.nbytes

    def scatter(self, src: memoryview) -> None:
        """Copy ``src`` into the next ``len(src)`` host bytes."""
        pos = 0
        for v in self.views(src.nbytes):
            v[:] = src[pos : pos + v.nbytes]
            pos += v.nbytes


class _Host:
    """The host side of a block transfer, as chunks of (data, metadata)."""

    def __init__(self, req: "Request", g: Geometry, prinfo: int):
        self.g = g
        self.strip = strips_pi(g, prinfo)
        self.data = _Cursor(req.data)
        self.meta = _Cursor(req.meta) if g.ms and not g.extended and not self.strip else None

    def gather(self, n: int, data: memoryview, meta: memoryview) -> None:
        """The next ``n`` blocks from the host into the bounce buffers (the
        metadata is zeroes when the host sends none)."""
        g = self.g
        bs, ms = g.bs, g.ms
        if g.extended and not self.strip:
            for i in range(n):
                self.data.gather(data[i * bs : (i + 1) * bs])
                self.data.gather(meta[i * ms : (i + 1) * ms])
            return
        self.data.gather(data[: n * bs])
        if self.meta is not None:
            self.meta.gather(meta[: n * ms])
        elif ms:
            meta[: n * ms] = bytes(n * ms)

    def scatter(self, n: int, data: memoryview, meta: memoryview) -> None:
        """``n`` blocks from the bounce buffers out to the host."""
        g = self.g
        bs, ms = g.bs, g.ms
        if g.extended and not self.strip:
            for i in range(n):
                self.data.scatter(data[i * bs : (i + 1) * bs])
                self.data.scatter(meta[i * ms : (i + 1) * ms])
            return
        self.data.scatter(data[: n * bs])
        if self.meta is not None:
            self.meta.scatter(meta[: n * ms])


# ---------------------------------------------------------------------------
# Storage


def _read_error(exc: OSError, lba: int) -> NvmeError:
    return NvmeError(MediaStatus.UNRECOVERED_READ_ERROR, dnr=False, lba=lba, msg=str(exc))


def _write_error(exc: OSError, lba: int) -> NvmeError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NvmeError(GenericStatus.CAPACITY_EXCEEDED, lba=lba, msg=str(exc))
    return NvmeError(MediaStatus.WRITE_FAULT, dnr=False, lba=lba, msg=str(exc))


_FLIP_BLOCKS = 256
_MASKS: dict[tuple[int, int], int] = {}


def _flip_pi(g: Geometry, meta: memoryview, n: int) -> None:
    """Invert the PI tuples of ``n`` blocks of metadata in place (the
    encoding at rest, and its inverse), :data:`_FLIP_BLOCKS` at a time as
    one big integer XOR."""
    key = (g.ms, g.pi_off)
    full = _MASKS.get(key)
    if full is None:
        pattern = bytearray(g.ms)
        pattern[g.pi_off : g.pi_off + PI_TUPLE_SIZE] = b"\xff" * PI_TUPLE_SIZE
        full = _MASKS[key] = int.from_bytes(bytes(pattern) * _FLIP_BLOCKS, "little")
    for first in range(0, n, _FLIP_BLOCKS):
        lo, hi = first * g.ms, min(n, first + _FLIP_BLOCKS) * g.ms
        mask = full if hi - lo == _FLIP_BLOCKS * g.ms else full & ((1 << (8 * (hi - lo))) - 1)
        meta[lo:hi] = (int.from_bytes(meta[lo:hi], "little") ^ mask).to_bytes(hi - lo, "little")


def _load(ns: "Namespace", g: Geometry, lba: int, n: int, data: memoryview, meta: memoryview) -> None:
    """Blocks ``lba``..``lba+n`` from storage into the bounce buffers, PI decoded."""
    try:
        ns.data.readinto(lba * g.bs, [data[: n * g.bs]])
        if g.ms:
            ns.meta.readinto(lba * g.ms, [meta[: n * g.ms]])
    except OSError as exc:
        raise _read_error(exc, lba) from exc
    if g.pi_type:
        _flip_pi(g, meta, n)


def _store(ns: "Namespace", g: Geometry, lba: int, n: int, data: memoryview, meta: memoryview) -> None:
    """Bounce buffers to storage (the metadata bounce is PI-encoded in place)."""
    if g.pi_type:
        _flip_pi(g, meta, n)
    try:
        ns.data.write(lba * g.bs, [data[: n * g.bs]])
        if g.ms:
            ns.meta.write(lba * g.ms, [meta[: n * g.ms]])
    except OSError as exc:
        raise _write_error(exc, lba) from exc


def _bounces(g: Geometry, n: int) -> tuple[memoryview, memoryview]:
    return memoryview(bytearray(n * g.bs)), memoryview(bytearray(n * g.ms))


def _chunks(g: Geometry, nlb: int) -> Iterable[tuple[int, int]]:
    """(index of the first block, number of blocks) of each chunk."""
    step = g.chunk()
    for index in range(0, nlb, step):
        yield index, min(step, nlb - index)


# ---------------------------------------------------------------------------
# Protection information


# The data of the blocks a PI function works on is either a bounce buffer
# (block i at i * block_size) or, straight from the host's scatter list, a
# list with the views of each block.
BlockData = "memoryview | list[list[memoryview]]"


def _host_blocks(bufs: Sequence[memoryview], g: Geometry, nlb: int) -> list[list[memoryview]]:
    cursor = _Cursor(bufs)
    return [cursor.views(g.bs) for _ in range(nlb)]


def _guard(g: Geometry, data: BlockData, meta: memoryview, i: int) -> int:
    if isinstance(data, list):
        crc = 0
        for view in data[i]:
            crc = crc16_t10dif(view, crc)
    else:
        crc = crc16_t10dif(data[i * g.bs : (i + 1) * g.bs])
    if g.guard_meta:
        mo = i * g.ms
        crc = crc16_t10dif(meta[mo : mo + g.guard_meta], crc)
    return crc


def _ref_tags(pi_type: int, prot: Protection, slba: int, index0: int) -> tuple[int | None, int]:
    """(reference tag of block ``index0``, increment per block), as
    :func:`~nvmestack.spec.pi.expected_ref_tag` defines them; the tag is
    None for type 3, whose reference tag is not checked (PRACT writes ILBRT
    unchanged into every block)."""
    first = expected_ref_tag(pi_type, index0, slba=slba, ilbrt=prot.reftag)
    return first, (0 if first is None else 1)


def check_pi(g: Geometry, data: BlockData, meta: memoryview, n: int, prot: Protection,
             slba: int, index0: int) -> None:
    """Check the PI of ``n`` blocks as ``prot.prchk`` asks.  Block ``i`` is
    block ``index0 + i`` of a command that starts at ``slba``.  Raises the
    check error of the first failing block."""
    prchk = prot.prchk
    if not g.pi_type or not prchk:
        return
    type3 = g.pi_type == PiType.TYPE3
    check_guard = prchk & Prinfo.PRCHK_GUARD
    check_app = prchk & Prinfo.PRCHK_APP
    ref_first, ref_step = _ref_tags(g.pi_type, prot, slba, index0)
    check_ref = prchk & Prinfo.PRCHK_REF and ref_first is not None
    for i in range(n):
        guard, app, ref = _TUPLE.unpack_from(meta, i * g.ms + g.pi_off)
        # Escape values (pi_checks_disabled): FFFFh application tag, and for
        # type 3 the FFFFFFFFh reference tag as well.
        if app == APP_TAG_ESCAPE and (not type3 or ref == REF_TAG_ESCAPE):
            continue
        if check_guard and guard != _guard(g, data, meta, i):
            raise NvmeError(MediaStatus.GUARD_CHECK_ERROR, lba=slba + index0 + i)
        if check_app and not app_tag_matches(app, prot.apptag, prot.appmask):
            raise NvmeError(MediaStatus.APPLICATION_TAG_CHECK_ERROR, lba=slba + index0 + i)
        if check_ref and ref != (ref_first + i * ref_step) & REF_TAG_ESCAPE:
            raise NvmeError(MediaStatus.REFERENCE_TAG_CHECK_ERROR, lba=slba + index0 + i)


def generate_pi(g: Geometry, data: BlockData, meta: memoryview, n: int, prot: Protection,
                slba: int, index0: int) -> None:
    """PRACT: the controller computes the tuples of ``n`` blocks (Guard over
    the data and the metadata before the tuple, LBAT, the reference tag of
    the PI type: the LBA for type 1, ILBRT + index for type 2, ILBRT for type 3)."""
    ref_first, ref_step = _ref_tags(g.pi_type, prot, slba, index0)
    if ref_first is None:
        ref_first = prot.reftag & REF_TAG_ESCAPE
    for i in range(n):
        _TUPLE.pack_into(meta, i * g.ms + g.pi_off, _guard(g, data, meta, i), prot.apptag,
                         (ref_first + i * ref_step) & REF_TAG_ESCAPE)


# ---------------------------------------------------------------------------
# Uncorrectable blocks


def first_uncorrectable(ns: "Namespace", slba: int, nlb: int) -> int | None:
    """The lowest LBA of ``slba``..``slba+nlb`` marked by Write Uncorrectable."""
    marked = ns.uncorrectable
    if not marked:
        return None
    if len(marked) < nlb:
        hits = [lba for lba in marked if slba <= lba < slba + nlb]
        return min(hits) if hits else None
    for lba in range(slba, slba + nlb):
        if lba in marked:
            return lba
    return None


def _clear_uncorrectable(ns: "Namespace", slba: int, nlb: int) -> None:
    marked = ns.uncorrectable
    if not marked:
        return
    if len(marked) < nlb:
        for lba in [lba for lba in marked if slba <= lba < slba + nlb]:
            marked.discard(lba)
    else:
        for lba in range(slba, slba + nlb):
            marked.discard(lba)


def _check_readable(ns: "Namespace", slba: int, nlb: int) -> None:
    lba = first_uncorrectable(ns, slba, nlb)
    if lba is not None:
        raise NvmeError(MediaStatus.UNRECOVERED_READ_ERROR, lba=lba)


def write_uncorrectable(ns: "Namespace", slba: int, nlb: int) -> None:
    """Mark blocks invalid: reads fail until the blocks are written again."""
    with ns.lock:
        ns.uncorrectable.update(range(slba, slba + nlb))


# ---------------------------------------------------------------------------
# Commands


def read(ns: "Namespace", req: "Request", slba: int, nlb: int, prot: Protection = NO_PROTECTION) -> None:
    """Read: blocks to the host's buffers, PI checked (and stripped for PRACT
    with 8 bytes of metadata)."""
    with ns.lock:
        g = Geometry(ns)
        _check_readable(ns, slba, nlb)
        if not g.extended:
            # The data goes straight into the host's buffers; so does the
            # metadata without PI.  PI is decoded and checked on the way.
            try:
                ns.data.readinto(slba * g.bs, req.data_views(0, nlb * g.bs))
                if g.ms and not g.pi_type:
                    ns.meta.readinto(slba * g.ms, req.meta_views(0, nlb * g.ms))
            except OSError as exc:
                raise _read_error(exc, slba) from exc
            if g.pi_type:
                meta = _load_meta(ns, g, slba, nlb)
                if prot.prchk:
                    check_pi(g, _host_blocks(req.data, g, nlb), meta, nlb, prot, slba, 0)
                if not strips_pi(g, prot.prinfo):
                    _Cursor(req.meta).scatter(meta)
            return
        host = _Host(req, g, prot.prinfo)
        data, meta = _bounces(g, min(nlb, g.chunk()))
        for index, n in _chunks(g, nlb):
            _load(ns, g, slba + index, n, data, meta)
            check_pi(g, data, meta, n, prot, slba, index)
            host.scatter(n, data, meta)


def _load_meta(ns: "Namespace", g: Geometry, slba: int, nlb: int) -> memoryview:
    """The metadata of blocks (at most 16 bytes each), PI decoded."""
    meta = memoryview(bytearray(nlb * g.ms))
    try:
        ns.meta.readinto(slba * g.ms, [meta])
    except OSError as exc:
        raise _read_error(exc, slba) from exc
    if g.pi_type:
        _flip_pi(g, meta, nlb)
    return meta


def _prepare_writes(g: Geometry, host: _Host, data: memoryview, meta: memoryview, n: int,
                    prot: Protection, slba: int, index: int) -> None:
    host.gather(n, data, meta)
    if g.pi_type:
        if prot.pract:
            generate_pi(g, data, meta, n, prot, slba, index)
        else:
            check_pi(g, data, meta, n, prot, slba, index)


def write(ns: "Namespace", req: "Request", slba: int, nlb: int, prot: Protection = NO_PROTECTION) -> None:
    """Write: the host's blocks to storage, PI checked or generated.  A PI
    check error fails the command before any block is written."""
    with ns.lock:
        g = Geometry(ns)
        if not g.extended:
            # The data goes to storage straight from the host's buffers; the
            # metadata too when it has no PI, else through a small buffer
            # where the PI is checked or generated and encoded.
            meta = None
            if g.pi_type:
                meta = memoryview(bytearray(nlb * g.ms))
                if not strips_pi(g, prot.prinfo):
                    _Cursor(req.meta).gather(meta)
                if prot.pract:
                    generate_pi(g, _host_blocks(req.data, g, nlb), meta, nlb, prot, slba, 0)
                elif prot.prchk:
                    check_pi(g, _host_blocks(req.data, g, nlb), meta, nlb, prot, slba, 0)
                _flip_pi(g, meta, nlb)
            try:
                ns.data.write(slba * g.bs, req.data_views(0, nlb * g.bs))
                if meta is not None:
                    ns.meta.write(slba * g.ms, [meta])
                elif g.ms:
                    ns.meta.write(slba * g.ms, req.meta_views(0, nlb * g.ms))
            except OSError as exc:
                raise _write_error(exc, slba) from exc
        else:
            data, meta = _bounces(g, min(nlb, g.chunk()))
            if g.pi_type and not prot.pract and prot.prchk and nlb > g.chunk():
                # Check everything first, so a bad tuple writes nothing.
                host = _Host(req, g, prot.prinfo)
                for index, n in _chunks(g, nlb):
                    _prepare_writes(g, host, data, meta, n, prot, slba, index)
            host = _Host(req, g, prot.prinfo)
            for index, n in _chunks(g, nlb):
                _prepare_writes(g, host, data, meta, n, prot, slba, index)
                _store(ns, g, slba + index, n, data, meta)
        _clear_uncorrectable(ns, slba, nlb)


def compare(ns: "Namespace", req: "Request", slba: int, nlb: int, prot: Protection = NO_PROTECTION) -> None:
    """Compare: the stored blocks (PI checked as a read) against the host's
    data and metadata; the PI tuple itself is not compared.  Raises Compare
    Failure on the first difference."""
    with ns.lock:
        g = Geometry(ns)
        _check_readable(ns, slba, nlb)
        host = _Host(req, g, prot.prinfo)
        data, meta = _bounces(g, min(nlb, g.chunk()))
        hdata, hmeta = _bounces(g, min(nlb, g.chunk()))
        for index, n in _chunks(g, nlb):
            _load(ns, g, slba + index, n, data, meta)
            check_pi(g, data, meta, n, prot, slba, index)
            host.gather(n, hdata, hmeta)
            if bytes(data[: n * g.bs]) != bytes(hdata[: n * g.bs]):
                raise NvmeError(MediaStatus.COMPARE_FAILURE, lba=slba + index + _first_diff(g.bs, data, hdata, n))
            if not g.ms or host.strip:
                continue
            if not g.pi_type:
                if bytes(meta[: n * g.ms]) != bytes(hmeta[: n * g.ms]):
                    raise NvmeError(MediaStatus.COMPARE_FAILURE,
                                    lba=slba + index + _first_diff(g.ms, meta, hmeta, n))
                continue
            lo, hi = g.pi_off, g.pi_off + PI_TUPLE_SIZE
            for i in range(n):
                mo = i * g.ms
                if (bytes(meta[mo : mo + lo]) != bytes(hmeta[mo : mo + lo])
                        or bytes(meta[mo + hi : mo + g.ms]) != bytes(hmeta[mo + hi : mo + g.ms])):
                    raise NvmeError(MediaStatus.COMPARE_FAILURE, lba=slba + index + i)


def _first_diff(size: int, a: memoryview, b: memoryview, n: int) -> int:
    for i in range(n):
        if bytes(a[i * size : (i + 1) * size]) != bytes(b[i * size : (i + 1) * size]):
            return i
    return 0


def verify(ns: "Namespace", slba: int, nlb: int, prot: Protection = NO_PROTECTION) -> None:
    """Verify: read the blocks and check their integrity (uncorrectable
    blocks, PI as PRCHK asks); nothing goes to the host."""
    with ns.lock:
        g = Geometry(ns)
        _check_readable(ns, slba, nlb)
        data, meta = _bounces(g, min(nlb, g.chunk()))
        for index, n in _chunks(g, nlb):
            _load(ns, g, slba + index, n, data, meta)
            check_pi(g, data, meta, n, prot, slba, index)


def write_zeroes(ns: "Namespace", slba: int, nlb: int, *, deallocate: bool = False,
                 prot: Protection = NO_PROTECTION) -> None:
    """Write Zeroes: the blocks read back as zeroes (deallocated when
    ``deallocate``), the metadata other than PI as zeroes, the PI as PRINFO
    says: generated for PRACT, all zeroes otherwise."""
    with ns.lock:
        g = Geometry(ns)
        try:
            if deallocate:
                ns.data.deallocate(slba * g.bs, nlb * g.bs)
            else:
                ns.data.write_zeroes(slba * g.bs, nlb * g.bs)
            if g.ms and not g.pi_type:
                if deallocate:
                    ns.meta.deallocate(slba * g.ms, nlb * g.ms)
                else:
                    ns.meta.write_zeroes(slba * g.ms, nlb * g.ms)
        except OSError as exc:
            raise _write_error(exc, slba) from exc
        if g.pi_type:
            data, meta = _bounces(g, min(nlb, g.chunk()))
            for index, n in _chunks(g, nlb):
                meta[: n * g.ms] = bytes(n * g.ms)
                if prot.pract:
                    generate_pi(g, data, meta, n, prot, slba, index)
                _flip_pi(g, meta, n)
                try:
                    ns.meta.write((slba + index) * g.ms, [meta[: n * g.ms]])
                except OSError as exc:
                    raise _write_error(exc, slba + index) from exc
        _clear_uncorrectable(ns, slba, nlb)


def deallocate(ns: "Namespace", ranges: Iterable[tuple[int, int]]) -> None:
    """Dataset Management deallocate: the blocks of each (slba, nlb) range
    read back as zeroes (their PI as the escape values)."""
    with ns.lock:
        g = Geometry(ns)
        for slba, nlb in ranges:
            if not nlb:
                continue
            try:
                ns.data.deallocate(slba * g.bs, nlb * g.bs)
                if g.ms:
                    ns.meta.deallocate(slba * g.ms, nlb * g.ms)
            except OSError as exc:
                raise _write_error(exc, slba) from exc
            _clear_uncorrectable(ns, slba, nlb)


def copy_range(ns: "Namespace", slba: int, nlb: int, read_prot: Protection, dlba: int,
               write_prot: Protection, dslba: int, dindex: int) -> None:
    """Copy one source range to ``dlba``: the source PI is checked as the
    range's PRINFOR and tags ask; the destination PI is generated (PRINFOW
    PRACT) or checked against the command's tags.  Destination block
    ``dlba + i`` is block ``dindex + i`` of a destination that starts at
    ``dslba`` (for the reference tags)."""
    with ns.lock:
        g = Geometry(ns)
        _check_readable(ns, slba, nlb)
        data, meta = _bounces(g, min(nlb, g.chunk()))
        chunks = list(_chunks(g, nlb))
        if slba < dlba < slba + nlb:
            # The destination overlaps the end of the source: copy the last
            # chunk first, as memmove does, so no source block is
            # overwritten before it is read.
            chunks.reverse()
        for index, n in chunks:
            _load(ns, g, slba + index, n, data, meta)
            check_pi(g, data, meta, n, read_prot, slba, index)
            if g.pi_type:
                if write_prot.pract:
                    generate_pi(g, data, meta, n, write_prot, dslba, dindex + index)
                else:
                    check_pi(g, data, meta, n, write_prot, dslba, dindex + index)
            _store(ns, g, dlba + index, n, data, meta)
            _clear_uncorrectable(ns, dlba + index, n)


def check_copy_range(ns: "Namespace", slba: int, nlb: int, read_prot: Protection,
                     write_prot: Protection, dslba: int, dindex: int) -> None:
    """The checks :func:`copy_range` makes, without writing anything: a
    Copy runs them on every range first, so a bad range copies nothing."""
    with ns.lock:
        g = Geometry(ns)
        _check_readable(ns, slba, nlb)
        if not g.pi_type:
            return
        write_checks = not write_prot.pract and write_prot.prchk
        if not read_prot.prchk and not write_checks:
            return
        data, meta = _bounces(g, min(nlb, g.chunk()))
        for index, n in _chunks(g, nlb):
            _load(ns, g, slba + index, n, data, meta)
            check_pi(g, data, meta, n, read_prot, slba, index)
            if write_checks:
                check_pi(g, data, meta, n, write_prot, dslba, dindex + index)


def read_stored(ns: "Namespace", slba: int, nlb: int) -> tuple[bytes, bytes]:
    """The stored data and metadata of blocks (PI decoded), for tests and
    tools: what a PRACT=0 read with no checks returns, split."""
    with ns.lock:
        g = Geometry(ns)
        data, meta = _bounces(g, nlb)
        _load(ns, g, slba, nlb, data, meta)
        return bytes(data), bytes(meta)
