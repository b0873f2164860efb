"""NVM command set: Flush, Write, Read, Write Uncorrectable, Compare,
Dataset Management, Write Zeroes, Verify and Copy, with their error
statuses, FUA and the volatile write cache, metadata layouts and health."""

import os

import pytest

from nvmestack.spec.admin import SetFeatures
from nvmestack.spec.features import FeatureId
from nvmestack.spec.log import ErrorInformationEntry
from nvmestack.spec.nvm import (
    Compare,
    Copy,
    DatasetManagement,
    Flush,
    Read,
    Verify,
    Write,
    WriteUncorrectable,
    WriteZeroes,
    pack_copy_ranges,
    pack_dsm_ranges,
)
from nvmestack.spec.status import (
    CommandSpecificStatus,
    GenericStatus,
    MediaStatus,
    Status,
)
from nvmestack.target import Namespace, datapath
from nvmestack.target.backend import FileBackend, MemoryBackend
from nvmestack.target.io import write_cache_enabled

from .conftest import assert_ok, assert_status

BS = 512


# ---------------------------------------------------------------------------
# helpers shared with test_io_pi.py and test_io_fused.py


def st(req):
    return Status.of(req.cqe)


def pattern(nblocks, seed, bs=BS):
    """Blocks whose every byte tells the block and the seed apart."""
    out = bytearray()
    for i in range(nblocks):
        out += bytes([(seed * 31 + i * 7 + j) & 0xFF for j in range(16)]) * (bs // 16)
    return bytes(out)


def do_write(ctrl, slba, data, nsid=1, bs=BS, meta=None, **fields):
    nblocks = len(data) // bs if "nblocks" not in fields else fields.pop("nblocks")
    return ctrl.submit(Write(nsid=nsid, slba=slba, nblocks=nblocks, **fields), sqid=1,
                       data=bytearray(data), meta=None if meta is None else bytearray(meta))


def do_read(ctrl, slba, nblocks, nsid=1, **fields):
    req = ctrl.submit(Read(nsid=nsid, slba=slba, nblocks=nblocks, **fields), sqid=1)
    return req, (bytes(req.data[0]) if req.data else b""), (bytes(req.meta[0]) if req.meta else b"")


def last_error(ctrl):
    return ErrorInformationEntry.decode(ctrl.error_log[0])


class CountingBackend(MemoryBackend):
    """A memory backend that counts flushes (what a file backend would fsync)."""

    def __init__(self, size):
        super().__init__(size)
        self.flushes = 0

    def flush(self):
        self.flushes += 1


def add_ns(subsystem, nsid, nblocks=256, **options):
    return subsystem.add_namespace(Namespace(nsid, nblocks, **options))


# ---------------------------------------------------------------------------
# Write and Read


@pytest.mark.parametrize("fmt,bs", [(0, 512), (3, 4096)])
def test_write_read_round_trip(subsystem, ctrl, fmt, bs):
    add_ns(subsystem, 2, 64, lba_format=fmt)
    data = pattern(5, 1, bs)
    assert_ok(do_write(ctrl, 7, data, nsid=2, bs=bs))
    req, got, _ = do_read(ctrl, 7, 5, nsid=2)
    assert_ok(req)
    assert req.data_len == 5 * bs and got == data
    # Neighbours untouched, unwritten blocks read as zeroes.
    _, before, _ = do_read(ctrl, 6, 1, nsid=2)
    _, after, _ = do_read(ctrl, 12, 1, nsid=2)
    assert before == after == bytes(bs)


def test_read_goes_straight_into_the_host_buffers(ctrl, ns):
    """No intermediate copy: the backend fills the request's own views."""
    assert_ok(do_write(ctrl, 3, pattern(4, 9)))
    req = ctrl.new_request(Read(nsid=1, slba=3, nblocks=4), 1)
    assert ctrl.prepare(req)
    host = [bytearray(1000), bytearray(1048)]  # a scatter list split mid-block
    req.data = [memoryview(b) for b in host]
    ctrl.execute(req)
    assert_ok(req)
    assert bytes(host[0] + host[1]) == pattern(4, 9)


def test_write_from_a_scatter_list(ctrl, ns):
    data = pattern(3, 4)
    req = ctrl.new_request(Write(nsid=1, slba=100, nblocks=3), 1)
    assert ctrl.prepare(req)
    req.data = [memoryview(data)[:10], memoryview(data)[10:700], memoryview(data)[700:]]
    ctrl.execute(req)
    assert_ok(req)
    assert ns.data.read_bytes(100 * BS, 3 * BS) == data


@pytest.mark.parametrize("opcode_cls", [Read, Write, Compare])
def test_lba_out_of_range(ctrl, ns, opcode_cls):
    req = ctrl.submit(opcode_cls(nsid=1, slba=ns.nblocks - 2, nblocks=3), sqid=1)
    assert_status(req, GenericStatus.LBA_OUT_OF_RANGE)
    entry = last_error(ctrl)
    assert entry.lba == ns.nblocks - 2 and entry.nsid == 1 and entry.sqid == 1
    # SLBA beyond the end, and the 64-bit SLBA overflow case.
    assert_status(ctrl.submit(opcode_cls(nsid=1, slba=ns.nblocks, nblocks=1), sqid=1),
                  GenericStatus.LBA_OUT_OF_RANGE)
    assert_status(ctrl.submit(opcode_cls(nsid=1, slba=(1 << 64) - 1, nblocks=2), sqid=1),
                  GenericStatus.LBA_OUT_OF_RANGE)
    # The last block itself is fine.
    assert_ok(ctrl.submit(opcode_cls(nsid=1, slba=ns.nblocks - 1, nblocks=1), sqid=1))


def test_transfer_beyond_mdts_is_invalid_field(subsystem, ctrl):
    blocks = ctrl.max_transfer // BS
    add_ns(subsystem, 2, 2 * blocks)
    assert_ok(ctrl.submit(Read(nsid=2, slba=0, nblocks=blocks), sqid=1))
    req = ctrl.submit(Read(nsid=2, slba=0, nblocks=blocks + 1), sqid=1)
    assert_status(req, GenericStatus.INVALID_FIELD)
    assert req.data == ()  # failed before any data was mapped


def test_mdts_counts_interleaved_metadata(subsystem, ctrl):
    add_ns(subsystem, 2, 16384, lba_format=1, extended=True)  # 512 + 8
    blocks = ctrl.max_transfer // (BS + 8)
    assert_ok(ctrl.submit(Read(nsid=2, slba=0, nblocks=blocks), sqid=1))
    assert_status(ctrl.submit(Read(nsid=2, slba=0, nblocks=blocks + 1), sqid=1), GenericStatus.INVALID_FIELD)
    # A separate metadata buffer does not count.
    add_ns(subsystem, 3, 16384, lba_format=1, extended=False)
    blocks = ctrl.max_transfer // BS
    assert_ok(ctrl.submit(Read(nsid=3, slba=0, nblocks=blocks), sqid=1))


def test_invalid_namespace(ctrl, subsystem):
    for opcode_cls in (Read, Write, WriteZeroes, Verify, WriteUncorrectable):
        # NSID 9 is valid but not active: Invalid Field; beyond NN: Invalid Namespace.
        assert_status(ctrl.submit(opcode_cls(nsid=9, slba=0, nblocks=1), sqid=1), GenericStatus.INVALID_FIELD)
        req = ctrl.submit(opcode_cls(nsid=subsystem.max_namespaces + 1, slba=0, nblocks=1), sqid=1)
        assert_status(req, GenericStatus.INVALID_NAMESPACE_OR_FORMAT)
    assert_status(ctrl.submit(Read(nsid=0xFFFFFFFF, slba=0, nblocks=1), sqid=1),
                  GenericStatus.INVALID_NAMESPACE_OR_FORMAT)


def test_format_change_between_prepare_and_execute(ctrl, ns):
    req = ctrl.new_request(Read(nsid=1, slba=0, nblocks=2), 1)
    assert ctrl.prepare(req)
    req.data = [memoryview(bytearray(req.data_len))]
    ns.reformat(3, extended=False, pi_type=0, pi_first=False)  # now 4096-byte blocks
    ctrl.execute(req)
    assert_status(req, GenericStatus.INVALID_NAMESPACE_OR_FORMAT)


def test_limited_retry_is_accepted(ctrl, ns):
    assert_ok(do_write(ctrl, 0, pattern(1, 2), lr=True))
    req, got, _ = do_read(ctrl, 0, 1, lr=True)
    assert_ok(req)
    assert got == pattern(1, 2)


# ---------------------------------------------------------------------------
# Flush, FUA, volatile write cache


@pytest.fixture
def counting(subsystem):
    backends = {}

    def factory(role, size):
        backends[role] = CountingBackend(size)
        return backends[role]

    ns = subsystem.add_namespace(Namespace(2, 64, lba_format=1, backends=factory))
    return ns, backends


def test_flush(ctrl, counting):
    _, backends = counting
    assert_ok(ctrl.submit(Flush(nsid=2), sqid=1))
    assert backends["data"].flushes == 1 and backends["meta"].flushes == 1
    # FFFFFFFFh: every active namespace.
    assert_ok(ctrl.submit(Flush(nsid=0xFFFFFFFF), sqid=1))
    assert backends["data"].flushes == 2


def test_flush_namespace_errors(ctrl):
    assert_status(ctrl.submit(Flush(nsid=0), sqid=1), GenericStatus.INVALID_NAMESPACE_OR_FORMAT)
    # Valid but inactive NSID: Invalid Field in Command.
    assert_status(ctrl.submit(Flush(nsid=5), sqid=1), GenericStatus.INVALID_FIELD)
    # Beyond the number of namespaces: an invalid NSID.
    assert_status(ctrl.submit(Flush(nsid=0x10000), sqid=1), GenericStatus.INVALID_NAMESPACE_OR_FORMAT)


def test_fua_and_write_cache(ctrl, counting):
    _, backends = counting
    data = pattern(2, 3)
    meta = bytes(16)
    assert_ok(do_write(ctrl, 0, data, nsid=2, meta=meta))
    assert backends["data"].flushes == 0  # acknowledged from the cache
    assert_ok(do_write(ctrl, 0, data, nsid=2, meta=meta, fua=True))
    assert backends["data"].flushes == 1 and backends["meta"].flushes == 1
    # Write cache disabled: every write is durable before it completes.
    assert_ok(ctrl.submit(SetFeatures(fid=FeatureId.VOLATILE_WC, cdw11=0)))
    assert not write_cache_enabled(ctrl)
    flushes = backends["data"].flushes
    assert_ok(do_write(ctrl, 2, data, nsid=2, meta=meta))
    assert backends["data"].flushes == flushes + 1 and backends["meta"].flushes == flushes + 1
    assert_ok(ctrl.submit(WriteZeroes(nsid=2, slba=0, nblocks=1), sqid=1))
    assert backends["data"].flushes == flushes + 2
    dsm = pack_dsm_ranges([(0, 1)])
    assert_ok(ctrl.submit(DatasetManagement(nsid=2, nranges=1, ad=True), sqid=1, data=dsm))
    assert backends["data"].flushes == flushes + 3
    # Enabled again: writes are acknowledged from the cache.
    assert_ok(ctrl.submit(SetFeatures(fid=FeatureId.VOLATILE_WC, cdw11=1)))
    assert_ok(do_write(ctrl, 2, data, nsid=2, meta=meta))
    assert backends["data"].flushes == flushes + 3


def test_fua_write_is_on_disk(tmp_path, subsystem, ctrl):
    path = tmp_path / "ns.img"
    ns = subsystem.add_namespace(Namespace(2, 64, backends=lambda role, size: FileBackend(path, size)))
    data = pattern(4, 5)
    assert_ok(do_write(ctrl, 10, data, nsid=2, fua=True))
    with open(path, "rb") as f:
        f.seek(10 * BS)
        assert f.read(4 * BS) == data
    req, got, _ = do_read(ctrl, 10, 4, nsid=2, fua=True)
    assert_ok(req)
    assert got == data
    assert ns.data.allocated() > 0


# ---------------------------------------------------------------------------
# Write Uncorrectable


def test_write_uncorrectable_until_rewritten(subsystem, ctrl, ns):
    assert_ok(do_write(ctrl, 20, pattern(8, 1)))
    assert_ok(ctrl.submit(WriteUncorrectable(nsid=1, slba=22, nblocks=3), sqid=1))
    errors = subsystem.health.media_errors
    req, _, _ = do_read(ctrl, 20, 8)
    assert_status(req, MediaStatus.UNRECOVERED_READ_ERROR)
    assert last_error(ctrl).lba == 22
    assert subsystem.health.media_errors == errors + 1
    # Blocks outside the marked range still read.
    req, got, _ = do_read(ctrl, 20, 2)
    assert_ok(req)
    assert got == pattern(8, 1)[: 2 * BS]
    # Compare and Verify fail the same way.
    assert_status(ctrl.submit(Verify(nsid=1, slba=24, nblocks=1), sqid=1), MediaStatus.UNRECOVERED_READ_ERROR)
    assert_status(ctrl.submit(Compare(nsid=1, slba=21, nblocks=2), sqid=1), MediaStatus.UNRECOVERED_READ_ERROR)
    assert last_error(ctrl).lba == 22
    # Rewriting one block clears only that block.
    assert_ok(do_write(ctrl, 22, pattern(1, 7)))
    req, _, _ = do_read(ctrl, 22, 3)
    assert_status(req, MediaStatus.UNRECOVERED_READ_ERROR)
    assert last_error(ctrl).lba == 23
    # Write Zeroes and deallocation clear the rest.
    assert_ok(ctrl.submit(WriteZeroes(nsid=1, slba=23, nblocks=1), sqid=1))
    dsm = pack_dsm_ranges([(24, 1)])
    assert_ok(ctrl.submit(DatasetManagement(nsid=1, nranges=1, ad=True), sqid=1, data=dsm))
    req, got, _ = do_read(ctrl, 22, 3)
    assert_ok(req)
    assert got == pattern(1, 7) + bytes(2 * BS)


def test_write_uncorrectable_range_check(ctrl, ns):
    req = ctrl.submit(WriteUncorrectable(nsid=1, slba=ns.nblocks - 1, nblocks=2), sqid=1)
    assert_status(req, GenericStatus.LBA_OUT_OF_RANGE)
    assert not ns.uncorrectable


# ---------------------------------------------------------------------------
# Compare


def test_compare(ctrl, ns):
    data = pattern(4, 11)
    assert_ok(do_write(ctrl, 30, data))
    assert_ok(ctrl.submit(Compare(nsid=1, slba=30, nblocks=4), sqid=1, data=bytearray(data)))
    bad = bytearray(data)
    bad[3 * BS + 100] ^= 1
    req = ctrl.submit(Compare(nsid=1, slba=30, nblocks=4), sqid=1, data=bad)
    assert_status(req, MediaStatus.COMPARE_FAILURE)
    assert last_error(ctrl).lba == 33


def test_compare_metadata(subsystem, ctrl):
    for nsid, extended in ((2, False), (3, True)):
        add_ns(subsystem, nsid, 64, lba_format=2, extended=extended)  # 512 + 16
        data, meta = pattern(2, 5), bytes(range(32))
        if extended:
            buf = data[:BS] + meta[:16] + data[BS:] + meta[16:]
            assert_ok(do_write(ctrl, 4, buf, nsid=nsid, nblocks=2))
            good, bad_meta = bytearray(buf), bytearray(buf)
            bad_meta[BS + 16 + BS + 3] ^= 0x80
            assert_ok(ctrl.submit(Compare(nsid=nsid, slba=4, nblocks=2), sqid=1, data=good))
            req = ctrl.submit(Compare(nsid=nsid, slba=4, nblocks=2), sqid=1, data=bad_meta)
        else:
            assert_ok(do_write(ctrl, 4, data, nsid=nsid, meta=meta))
            assert_ok(ctrl.submit(Compare(nsid=nsid, slba=4, nblocks=2), sqid=1, data=bytearray(data),
                                  meta=bytearray(meta)))
            bad = bytearray(meta)
            bad[20] ^= 1
            req = ctrl.submit(Compare(nsid=nsid, slba=4, nblocks=2), sqid=1, data=bytearray(data), meta=bad)
        assert_status(req, MediaStatus.COMPARE_FAILURE)
        assert last_error(ctrl).lba == 5


# ---------------------------------------------------------------------------
# Metadata layouts


def test_extended_lba_interleaves_metadata(subsystem, ctrl):
    ns = add_ns(subsystem, 2, 64, lba_format=1, extended=True)  # 512 + 8
    blocks = [(pattern(1, i), bytes([0xA0 + i]) * 8) for i in range(3)]
    buf = b"".join(d + m for d, m in blocks)
    req = do_write(ctrl, 9, buf, nsid=2, nblocks=3)
    assert_ok(req)
    assert req.data_len == 3 * 520 and req.meta_len == 0
    data, meta = datapath.read_stored(ns, 9, 3)
    assert data == b"".join(d for d, _ in blocks) and meta == b"".join(m for _, m in blocks)
    req, got, _ = do_read(ctrl, 9, 3, nsid=2)
    assert_ok(req)
    assert got == buf


def test_separate_metadata(subsystem, ctrl):
    ns = add_ns(subsystem, 2, 64, lba_format=5, extended=False)  # 4096 + 16
    data, meta = pattern(2, 3, 4096), bytes(range(32))
    req = do_write(ctrl, 1, data, nsid=2, bs=4096, meta=meta)
    assert_ok(req)
    assert (req.data_len, req.meta_len) == (8192, 32)
    assert ns.meta.read_bytes(16, 32) == meta
    req, got, got_meta = do_read(ctrl, 1, 2, nsid=2)
    assert_ok(req)
    assert (got, got_meta) == (data, meta)


# ---------------------------------------------------------------------------
# Dataset Management


def test_dsm_deallocate_reads_zeroes(ctrl, ns):
    assert_ok(do_write(ctrl, 0, pattern(200, 1)))
    ranges = pack_dsm_ranges([(0, 128), (150, 10), (199, 0)])
    req = ctrl.submit(DatasetManagement(nsid=1, nranges=3, ad=True), sqid=1, data=ranges)
    assert_ok(req)
    assert req.data_len == 48
    _, got, _ = do_read(ctrl, 0, 200)
    expected = bytearray(pattern(200, 1))
    expected[0 : 128 * BS] = bytes(128 * BS)
    expected[150 * BS : 160 * BS] = bytes(10 * BS)
    assert got == bytes(expected)
    assert ns.identify().dlfeat_read == 1


def test_dsm_other_attributes_are_accepted(ctrl, ns):
    assert_ok(do_write(ctrl, 0, pattern(4, 1)))
    ranges = pack_dsm_ranges([(0, 4, 0x0301)])
    assert_ok(ctrl.submit(DatasetManagement(nsid=1, nranges=1, idr=True, idw=True), sqid=1, data=ranges))
    _, got, _ = do_read(ctrl, 0, 4)
    assert got == pattern(4, 1)


def test_dsm_range_out_of_range(ctrl, ns):
    assert_ok(do_write(ctrl, 0, pattern(4, 1)))
    ranges = pack_dsm_ranges([(0, 4), (ns.nblocks - 1, 2)])
    req = ctrl.submit(DatasetManagement(nsid=1, nranges=2, ad=True), sqid=1, data=ranges)
    assert_status(req, GenericStatus.LBA_OUT_OF_RANGE)
    assert last_error(ctrl).lba == ns.nblocks - 1
    _, got, _ = do_read(ctrl, 0, 4)
    assert got == pattern(4, 1)  # nothing was deallocated


def test_dsm_256_ranges(ctrl, ns):
    assert_ok(do_write(ctrl, 0, pattern(256, 2)))
    ranges = pack_dsm_ranges([(i, 1) for i in range(256)])
    assert_ok(ctrl.submit(DatasetManagement(nsid=1, nranges=256, ad=True), sqid=1, data=ranges))
    _, got, _ = do_read(ctrl, 0, 256)
    assert got == bytes(256 * BS)


# ---------------------------------------------------------------------------
# Write Zeroes


@pytest.mark.parametrize("deac", [False, True])
def test_write_zeroes(subsystem, ctrl, deac):
    ns = add_ns(subsystem, 2, 512, lba_format=2)  # 512 + 16 separate
    data, meta = pattern(300, 4), bytes([0x5A]) * (300 * 16)
    assert_ok(do_write(ctrl, 0, data[: 200 * BS], nsid=2, meta=meta[: 200 * 16]))
    assert_ok(do_write(ctrl, 200, data[200 * BS :], nsid=2, meta=meta[200 * 16 :]))
    req = ctrl.submit(WriteZeroes(nsid=2, slba=10, nblocks=256, deac=deac), sqid=1)
    assert_ok(req)
    assert req.data_len == 0
    _, got, got_meta = do_read(ctrl, 9, 258, nsid=2)
    assert got[:BS] == data[9 * BS : 10 * BS] and got[-BS:] == data[266 * BS : 267 * BS]
    assert got[BS:-BS] == bytes(256 * BS)
    assert got_meta[16:-16] == bytes(256 * 16) and got_meta[:16] == bytes([0x5A]) * 16
    assert ns.identify().dlfeat_write_zeroes


def test_write_zeroes_out_of_range(ctrl, ns):
    assert_status(ctrl.submit(WriteZeroes(nsid=1, slba=ns.nblocks - 1, nblocks=2), sqid=1),
                  GenericStatus.LBA_OUT_OF_RANGE)


# ---------------------------------------------------------------------------
# Verify


def test_verify(ctrl, ns):
    assert_ok(do_write(ctrl, 0, pattern(8, 1)))
    req = ctrl.submit(Verify(nsid=1, slba=0, nblocks=8), sqid=1)
    assert_ok(req)
    assert req.data_len == 0
    # Larger than MDTS is fine: Verify moves no data.
    assert_ok(ctrl.submit(Verify(nsid=1, slba=0, nblocks=ns.nblocks), sqid=1))
    assert_status(ctrl.submit(Verify(nsid=1, slba=ns.nblocks, nblocks=1), sqid=1), GenericStatus.LBA_OUT_OF_RANGE)


# ---------------------------------------------------------------------------
# Copy


def test_copy(ctrl, ns):
    assert_ok(do_write(ctrl, 0, pattern(40, 6)))
    ranges = pack_copy_ranges([(0, 4), (20, 8), (10, 1)])
    req = ctrl.submit(Copy(nsid=1, sdlba=1000, nranges=3), sqid=1, data=ranges)
    assert_ok(req)
    assert req.data_len == 96
    src = pattern(40, 6)
    _, got, _ = do_read(ctrl, 1000, 13)
    assert got == src[: 4 * BS] + src[20 * BS : 28 * BS] + src[10 * BS : 11 * BS]


def test_copy_overlapping_destination(ctrl, ns):
    """Source and destination overlap: the result is the source as it was."""
    size = datapath.CHUNK_BYTES // BS + 100  # more than one bounce chunk
    src = pattern(size, 8)
    for start in range(0, size, 1000):
        n = min(1000, size - start)
        assert_ok(do_write(ctrl, start, src[start * BS : (start + n) * BS]))
    ranges = pack_copy_ranges([(0, size)])
    assert_ok(ctrl.submit(Copy(nsid=1, sdlba=50, nranges=1), sqid=1, data=ranges))
    assert ns.data.read_bytes(50 * BS, size * BS) == src
    ranges = pack_copy_ranges([(50, size)])
    assert_ok(ctrl.submit(Copy(nsid=1, sdlba=0, nranges=1), sqid=1, data=ranges))
    assert ns.data.read_bytes(0, size * BS) == src


def test_copy_limits(ctrl, ns):
    idns = ns.identify()
    assert (idns.mssrl, idns.mcl, idns.msrc) == (ns.copy_mssrl, ns.copy_mcl, ns.copy_msrc)
    ns.copy_mssrl, ns.copy_mcl, ns.copy_msrc = 8, 12, 1
    assert (ns.identify().mssrl, ns.identify().mcl, ns.identify().msrc) == (8, 12, 1)
    # Three ranges with MSRC = 1 (two ranges).
    req = ctrl.submit(Copy(nsid=1, sdlba=100, nranges=3), sqid=1, data=pack_copy_ranges([(0, 1)] * 3))
    assert_status(req, CommandSpecificStatus.COMMAND_SIZE_LIMIT_EXCEEDED)
    # A range longer than MSSRL.
    req = ctrl.submit(Copy(nsid=1, sdlba=100, nranges=2), sqid=1, data=pack_copy_ranges([(0, 1), (0, 9)]))
    assert_status(req, CommandSpecificStatus.COMMAND_SIZE_LIMIT_EXCEEDED)
    assert req.cqe.dw0 == 0  # nothing was copied
    # More than MCL in all.
    req = ctrl.submit(Copy(nsid=1, sdlba=100, nranges=2), sqid=1, data=pack_copy_ranges([(0, 8), (8, 5)]))
    assert_status(req, CommandSpecificStatus.COMMAND_SIZE_LIMIT_EXCEEDED)
    assert_ok(ctrl.submit(Copy(nsid=1, sdlba=100, nranges=2), sqid=1, data=pack_copy_ranges([(0, 8), (8, 4)])))


def test_copy_errors(ctrl, ns):
    assert_ok(do_write(ctrl, 0, pattern(8, 2)))
    # Descriptor format 1 is not supported.
    cmd = Copy(nsid=1, sdlba=100, nranges=1, desfmt=1)
    assert_status(ctrl.submit(cmd, sqid=1, data=bytearray(40)), GenericStatus.INVALID_FIELD)
    # A source range beyond the namespace: nothing is copied, Dword 0 (the
    # lowest range not copied) is 0, the error log names the block.
    ranges = pack_copy_ranges([(0, 1), (ns.nblocks - 1, 2)])
    req = ctrl.submit(Copy(nsid=1, sdlba=100, nranges=2), sqid=1, data=ranges)
    assert_status(req, GenericStatus.LBA_OUT_OF_RANGE)
    assert req.cqe.dw0 == 0 and last_error(ctrl).lba == ns.nblocks - 1
    assert do_read(ctrl, 100, 1)[1] == bytes(BS)
    # The destination beyond the namespace.
    ranges = pack_copy_ranges([(0, 4)])
    req = ctrl.submit(Copy(nsid=1, sdlba=ns.nblocks - 3, nranges=1), sqid=1, data=ranges)
    assert_status(req, GenericStatus.LBA_OUT_OF_RANGE)
    # An uncorrectable source block fails the command before anything is copied.
    assert_ok(ctrl.submit(WriteUncorrectable(nsid=1, slba=5, nblocks=1), sqid=1))
    ranges = pack_copy_ranges([(0, 2), (4, 2)])
    req = ctrl.submit(Copy(nsid=1, sdlba=100, nranges=2), sqid=1, data=ranges)
    assert_status(req, MediaStatus.UNRECOVERED_READ_ERROR)
    assert req.cqe.dw0 == 0 and last_error(ctrl).lba == 5
    assert do_read(ctrl, 100, 1)[1] == bytes(BS)


def test_copy_storage_failure_midway_reports_the_range(ctrl, ns, monkeypatch):
    assert_ok(do_write(ctrl, 0, pattern(8, 2)))
    real = ns.data.readinto

    def failing(offset, bufs):
        if offset == 6 * BS:
            raise OSError(5, "injected read error")
        return real(offset, bufs)

    monkeypatch.setattr(ns.data, "readinto", failing)
    ranges = pack_copy_ranges([(0, 2), (2, 2), (6, 2)])
    req = ctrl.submit(Copy(nsid=1, sdlba=100, nranges=3), sqid=1, data=ranges)
    assert_status(req, MediaStatus.UNRECOVERED_READ_ERROR, dnr=False)
    assert req.cqe.dw0 == 2  # ranges 0 and 1 were copied
    assert ns.data.read_bytes(100 * BS, 4 * BS) == pattern(8, 2)[: 4 * BS]


def test_copy_clears_uncorrectable_destination(ctrl, ns):
    assert_ok(do_write(ctrl, 0, pattern(2, 3)))
    assert_ok(ctrl.submit(WriteUncorrectable(nsid=1, slba=50, nblocks=2), sqid=1))
    assert_ok(ctrl.submit(Copy(nsid=1, sdlba=50, nranges=1), sqid=1, data=pack_copy_ranges([(0, 2)])))
    req, got, _ = do_read(ctrl, 50, 2)
    assert_ok(req)
    assert got == pattern(2, 3)


# ---------------------------------------------------------------------------
# Health


def test_health_counters(subsystem, ctrl, ns):
    health = subsystem.health
    r0, w0 = health.host_read_commands, health.host_write_commands
    br0, bw0, busy0 = health.bytes_read, health.bytes_written, health.busy_seconds
    assert_ok(do_write(ctrl, 0, pattern(4, 1)))
    do_read(ctrl, 0, 2)
    assert_ok(ctrl.submit(Compare(nsid=1, slba=0, nblocks=1), sqid=1, data=bytearray(pattern(1, 1))))
    assert_ok(ctrl.submit(Verify(nsid=1, slba=0, nblocks=4), sqid=1))
    assert_ok(ctrl.submit(WriteZeroes(nsid=1, slba=0, nblocks=8), sqid=1))
    assert_ok(ctrl.submit(Copy(nsid=1, sdlba=64, nranges=1), sqid=1, data=pack_copy_ranges([(0, 3)])))
    assert health.host_read_commands - r0 == 3
    assert health.bytes_read - br0 == (2 + 1 + 4) * BS
    assert health.host_write_commands - w0 == 3
    assert health.bytes_written - bw0 == (4 + 3) * BS
    assert health.busy_seconds > busy0
    # Failed commands are not counted as host reads.
    do_read(ctrl, ns.nblocks, 1)
    assert health.host_read_commands - r0 == 3


def test_random_io_never_touches_other_blocks(ctrl, ns):
    """Writes land exactly on their blocks; a model of the namespace agrees."""
    import random

    rng = random.Random(7)
    model = bytearray(ns.nblocks * BS)
    for step in range(60):
        slba = rng.randrange(ns.nblocks)
        nlb = rng.randint(1, min(64, ns.nblocks - slba))
        op = rng.choice("wzd")
        if op == "w":
            data = os.urandom(nlb * BS)
            assert_ok(do_write(ctrl, slba, data))
            model[slba * BS : (slba + nlb) * BS] = data
        elif op == "z":
            assert_ok(ctrl.submit(WriteZeroes(nsid=1, slba=slba, nblocks=nlb, deac=bool(step & 1)), sqid=1))
            model[slba * BS : (slba + nlb) * BS] = bytes(nlb * BS)
        else:
            ranges = pack_dsm_ranges([(slba, nlb)])
            assert_ok(ctrl.submit(DatasetManagement(nsid=1, nranges=1, ad=True), sqid=1, data=ranges))
            model[slba * BS : (slba + nlb) * BS] = bytes(nlb * BS)
    assert ns.data.read_bytes(0, ns.nblocks * BS) == bytes(model)
