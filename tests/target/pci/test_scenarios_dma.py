"""Data pointer scenarios end to end through the low-level API alone.

Each test brings a function up with a RawHost, creates an I/O queue pair
with admin commands on the raw admin queue, builds Write and Read commands
with ``nvmestack.spec.nvm`` views, places them in the SQ by hand and reaps
the completions from the raw CQ.  Host data buffers live in an
:class:`Arena`: host memory filled with guard bytes, in which every byte the
device may change is known in advance -- after a read exactly the described
bytes hold the data, every other byte (between and around the pieces, PRP
lists and SGL segments included) still holds its guard.  Writes are checked
in the namespace's backend, and read back through the device.

Scenarios (each in the inline and the threaded device): PRP1 with an offset
crossing into PRP2's page; exactly two pages; PRP lists -- short, with the
first list at an offset that chains early, one filling its page exactly,
and a full 4 KiB list page chaining to the next (514 pages, MDTS lifted);
SGLs -- a data block in SGL1, a segment chained to a last segment, bit
buckets on a read; PRP errors through the queue (PRP Offset Invalid, Data
Transfer Error for unmapped memory); metadata through MPTR for a namespace
with separate metadata (PRPs, SGL data + contiguous MPTR, MPTR holding an
SGL descriptor).
"""

import random
import struct

import pytest

from nvmestack.spec.dptr import (
    sgl_bit_bucket,
    sgl_data_block,
    sgl_last_segment,
    sgl_segment,
)
from nvmestack.spec.nvm import Read, Write
from nvmestack.spec.status import GenericStatus as G
from nvmestack.target import Namespace

from .conftest import ok, status_is

PAGE = 4096
BS = 512
GUARD = 0xA5
PSDT_SGL = 1  # SGLs for data, MPTR the address of a contiguous buffer
PSDT_SGL_MPTR_SGL = 2  # SGLs for data, MPTR the address of an SGL segment


def pattern(n, seed):
    return random.Random(seed).randbytes(n)


class Arena:
    """``npages`` pages of host memory filled with guard bytes, and the
    bytes each of them should hold (``expected``)."""

    def __init__(self, host, npages):
        self.buf = host.alloc(npages * PAGE)
        self.addr = self.buf.addr
        self.size = npages * PAGE
        self.buf.view[:] = bytes([GUARD]) * self.size
        self.expected = bytearray(self.buf.view)

    def page(self, i):
        return self.addr + i * PAGE

    def _off(self, addr, n):
        off = addr - self.addr
        assert 0 <= off and off + n <= self.size, f"{addr:#x}+{n} is outside the arena"
        return off

    def put(self, addr, data):
        """Host data placed in memory (a source buffer, a list, a segment)."""
        off = self._off(addr, len(data))
        self.buf.view[off : off + len(data)] = data
        self.expected[off : off + len(data)] = data

    def expect(self, addr, data):
        """Bytes the device is to write at ``addr``."""
        off = self._off(addr, len(data))
        self.expected[off : off + len(data)] = data

    def scrub(self, segments):
        """Guard bytes again in the (address, length) ranges."""
        for addr, n in segments:
            self.put(addr, bytes([GUARD]) * n)

    def scatter(self, segments, data, *, expect=False):
        """Spread ``data`` over the (address, length) ranges: placed in
        memory, or (``expect``) only expected there."""
        pos = 0
        for addr, n in segments:
            (self.expect if expect else self.put)(addr, data[pos : pos + n])
            pos += n
        assert pos == len(data)

    def check(self):
        actual = bytes(self.buf.view)
        if actual != self.expected:
            first = next(i for i in range(self.size) if actual[i] != self.expected[i])
            last = max(i for i in range(self.size) if actual[i] != self.expected[i])
            raise AssertionError(
                f"host memory differs at arena offsets {first:#x}..{last:#x} "
                f"(byte {first:#x}: {actual[first]:#04x}, expected {self.expected[first]:#04x})")


def ns_data(host, nsid, slba, n):
    ns = host.function.subsystem.namespaces[nsid]
    return ns.data.read_bytes(slba * ns.block_size, n)


def ns_meta(host, nsid, slba, nblocks):
    ns = host.function.subsystem.namespaces[nsid]
    return ns.meta.read_bytes(slba * ns.metadata_size, nblocks * ns.metadata_size)


def prp_segments(prp1, pages, length):
    """The (address, length) ranges PRP1 (with its offset) and the following
    page addresses describe for ``length`` bytes."""
    first = min(length, PAGE - prp1 % PAGE)
    segs = [(prp1, first)]
    left = length - first
    for addr in pages:
        if not left:
            break
        segs.append((addr, min(PAGE, left)))
        left -= segs[-1][1]
    assert not left
    return segs


def write_read(host, io, arena, segments, make, *, slba, nblocks, seed, nsid=1):
    """Write ``nblocks`` from ``segments`` (``make(opcode_class)`` builds the
    command), check the namespace, scrub the ranges and read them back:
    exactly the ranges hold the data again.  Returns the data."""
    data = pattern(nblocks * BS, seed)
    arena.scatter(segments, data)
    ok(io.command(make(Write)))
    assert ns_data(host, nsid, slba, len(data)) == data
    arena.check()  # a write leaves host memory alone
    arena.scrub(segments)
    ok(io.command(make(Read)))
    arena.scatter(segments, data, expect=True)
    arena.check()
    return data


@pytest.fixture
def io(host):
    return host.create_io_queue_pair(1, 16)


# --- PRPs -------------------------------------------------------------------------------


def test_prp1_offset_crossing_into_prp2_page(host, io):
    arena = Arena(host, 4)
    # 8 blocks from 0x604 into page 3: 2556 bytes there, 1540 at the start
    # of page 1 (PRP2; the pages are not adjacent, and in reverse order).
    prp1, prp2 = arena.page(3) + 0x604, arena.page(1)
    segs = prp_segments(prp1, [prp2], 8 * BS)
    assert [n for _a, n in segs] == [2556, 1540]
    write_read(host, io, arena, segs, lambda cls: cls(nsid=1, slba=40, nlb=7, prp1=prp1, prp2=prp2),
               slba=40, nblocks=8, seed=1)
    # A shorter transfer at an offset that still crosses: 3 blocks from
    # 0xE00 (512 bytes, then 1024 in PRP2's page); the rest of both pages
    # keeps its guard.
    prp1, prp2 = arena.page(2) + 0xE00, arena.page(0)
    segs = prp_segments(prp1, [prp2], 3 * BS)
    assert [n for _a, n in segs] == [512, 1024]
    write_read(host, io, arena, segs, lambda cls: cls(nsid=1, slba=7, nlb=2, prp1=prp1, prp2=prp2),
               slba=7, nblocks=3, seed=2)


def test_prp_exactly_two_pages(host, io):
    arena = Arena(host, 5)
    prp1, prp2 = arena.page(3), arena.page(1)
    segs = prp_segments(prp1, [prp2], 2 * PAGE)
    assert segs == [(prp1, PAGE), (prp2, PAGE)]
    data = write_read(host, io, arena, segs, lambda cls: cls(nsid=1, slba=64, nlb=15, prp1=prp1, prp2=prp2),
                      slba=64, nblocks=16, seed=3)
    # And into a contiguous buffer: PRP2 is the page after PRP1's.
    out = Arena(host, 2)
    ok(io.command(Read(nsid=1, slba=64, nlb=15, prp1=out.page(0), prp2=out.page(1))))
    out.expect(out.addr, data)
    out.check()


def test_prp_list_short(host, io):
    # 16 KiB from offset 0x200: PRP1 and a list of four entries.
    arena = Arena(host, 12)
    lists = Arena(host, 1)
    pages = [arena.page(i) for i in (9, 2, 7, 4)]
    prp1 = arena.page(11) + 0x200
    lists.put(lists.addr + 0x48, struct.pack("<4Q", *pages))
    prp2 = lists.addr + 0x48  # a list pointer may have a qword aligned offset
    segs = prp_segments(prp1, pages, 32 * BS)
    assert len(segs) == 5 and segs[-1][1] == 0x200
    write_read(host, io, arena, segs, lambda cls: cls(nsid=1, slba=100, nlb=31, prp1=prp1, prp2=prp2),
               slba=100, nblocks=32, seed=4)
    lists.check()  # the list is only read


@pytest.mark.parametrize("entries", [3, 4, 6])
def test_prp_list_at_page_end(host, io, entries):
    """The first list starts three slots before the end of its page: with
    three entries it fills them (the last slot holds data, no chain); with
    more, the last slot points to the next list page."""
    arena = Arena(host, 2 * entries + 2)
    lists = Arena(host, 3)
    pages = [arena.page(2 * i + 1) for i in range(entries)]  # every other page
    prp1 = arena.page(2 * entries) + 0x100
    length = entries * PAGE  # from 0x100: PRP1's page and `entries` more
    first = lists.page(0) + PAGE - 24
    prp2 = first
    if entries == 3:
        lists.put(first, struct.pack("<3Q", *pages))
    else:
        nxt = lists.page(2)
        lists.put(first, struct.pack("<3Q", pages[0], pages[1], nxt))
        lists.put(nxt, struct.pack(f"<{entries - 2}Q", *pages[2:]))
        # Junk after the last entry the transfer needs: never looked at.
        lists.put(nxt + 8 * (entries - 2), struct.pack("<2Q", 0xDEAD_BEEF_0000_0007, 3))
    nblocks = length // BS
    segs = prp_segments(prp1, pages, length)
    assert len(segs) == entries + 1
    write_read(host, io, arena, segs,
               lambda cls: cls(nsid=1, slba=200, nlb=nblocks - 1, prp1=prp1, prp2=prp2),
               slba=200, nblocks=nblocks, seed=10 + entries)
    lists.check()


def test_prp_list_full_page_chains(make_function, mode):
    """514 pages (more than 511 list entries): PRP1, a full 4 KiB list page
    of 511 entries and a chain pointer, two entries in the next list page.
    MDTS is lifted (0: no limit) for this controller."""
    fn, host = make_function(mode=mode, controller_options={"mdts": 0})
    assert fn.controller.mdts == 0
    host.bring_up()  # CC.MPS 0: 4 KiB pages
    io = host.create_io_queue_pair(1, 4)
    n = 514
    arena = Arena(host, n)
    lists = Arena(host, 3)
    order = [arena.page(i * 3 % n) for i in range(n)]  # 3 is coprime to 514: every page, scattered
    assert len(set(order)) == n
    lists.put(lists.page(0), struct.pack("<512Q", *order[1:512], lists.page(2)))
    lists.put(lists.page(2), struct.pack("<2Q", *order[512:]))
    lists.put(lists.page(2) + 16, struct.pack("<Q", 0x13))  # junk past the end
    nblocks = n * PAGE // BS
    segs = [(addr, PAGE) for addr in order]
    write_read(host, io, arena, segs,
               lambda cls: cls(nsid=1, slba=1000, nlb=nblocks - 1, prp1=order[0], prp2=lists.page(0)),
               slba=1000, nblocks=nblocks, seed=5)
    lists.check()


# --- SGLs -------------------------------------------------------------------------------


def sgl_cmd(cls, *, slba, nblocks, sgl1, nsid=1, psdt=PSDT_SGL, **fields):
    cmd = cls(nsid=nsid, slba=slba, nlb=nblocks - 1, psdt=psdt, **fields)
    cmd.sgl1 = sgl1
    return cmd


def test_sgl_data_block_in_sgl1(host, io):
    arena = Arena(host, 3)
    # Byte aligned (SGLS 01b: no alignment requirement), crossing a page.
    addr = arena.page(0) + 0xF23
    segs = [(addr, 3 * BS)]
    write_read(host, io, arena, segs,
               lambda cls: sgl_cmd(cls, slba=300, nblocks=3, sgl1=sgl_data_block(addr, 3 * BS)),
               slba=300, nblocks=3, seed=6)
    # A data block longer than the transfer (SGLS.LLDTS): only the transfer
    # is written; the rest of the block keeps its guard.
    arena.scrub(segs)
    ok(io.command(sgl_cmd(Read, slba=300, nblocks=2, sgl1=sgl_data_block(addr, 3 * BS))))
    arena.expect(addr, ns_data(host, 1, 300, 2 * BS))
    arena.check()


def test_sgl_segment_then_last_segment(host, io):
    arena = Arena(host, 8)
    pieces = [(arena.page(0) + 0x10, 1000), (arena.page(3) + 0x7, 1100),
              (arena.page(1), 1500), (arena.page(5) + 0x801, 496)]
    assert sum(n for _a, n in pieces) == 8 * BS
    # Segment in page 6 (at a qword aligned offset), last segment in page 7.
    seg_a, seg_b = arena.page(6) + 0x88, arena.page(7) + 0xFE0
    arena.put(seg_a, b"".join(bytes(d) for d in (sgl_data_block(*pieces[0]), sgl_data_block(*pieces[1]),
                                                 sgl_last_segment(seg_b, 32))))
    arena.put(seg_b, b"".join(bytes(d) for d in (sgl_data_block(*pieces[2]), sgl_data_block(*pieces[3]))))
    write_read(host, io, arena, pieces,
               lambda cls: sgl_cmd(cls, slba=400, nblocks=8, sgl1=sgl_segment(seg_a, 48)),
               slba=400, nblocks=8, seed=7)  # check() includes the segments: unchanged


def test_sgl_bit_buckets_on_a_read(host, io):
    data = pattern(8 * BS, 8)
    src = Arena(host, 2)
    src.put(src.addr, data)
    ok(io.command(Write(nsid=1, slba=500, nlb=7, prp1=src.page(0), prp2=src.page(1))))
    arena = Arena(host, 4)
    a, b = arena.page(2) + 5, arena.page(0) + 0x300
    seg = arena.page(3) + 0x40
    descriptors = [sgl_data_block(a, 700), sgl_bit_bucket(1348), sgl_data_block(b, 1000), sgl_bit_bucket(1048)]
    arena.put(seg, b"".join(bytes(d) for d in descriptors))
    ok(io.command(sgl_cmd(Read, slba=500, nblocks=8, sgl1=sgl_last_segment(seg, 64))))
    # Only the data blocks received data; what the buckets covered is gone.
    arena.expect(a, data[:700])
    arena.expect(b, data[2048:3048])
    arena.check()
    # A bucket first in its segment: the first block is discarded.
    arena2 = Arena(host, 2)
    seg2 = arena2.page(1)
    arena2.put(seg2, bytes(sgl_bit_bucket(BS)) + bytes(sgl_data_block(arena2.page(0) + 1, 7 * BS)))
    ok(io.command(sgl_cmd(Read, slba=500, nblocks=8, sgl1=sgl_last_segment(seg2, 32))))
    arena2.expect(arena2.page(0) + 1, data[BS:])
    arena2.check()


# --- errors -----------------------------------------------------------------------------


def unmapped_page(host):
    """A page aligned address no buffer covers (allocated and freed: take
    it after every other allocation of the test)."""
    hole = host.memory.allocate(PAGE)
    host.memory.free(hole)
    return hole.addr


def test_prp_offset_invalid_through_the_queue(host, io):
    arena = Arena(host, 6)
    lists = Arena(host, 1)
    before = ns_data(host, 1, 600, 4 * PAGE)
    two = {"nsid": 1, "slba": 600, "nlb": 15}  # two pages
    cases = [
        # PRP1 offset not dword aligned.
        {"nsid": 1, "slba": 600, "nlb": 0, "prp1": arena.page(0) + 2},
        # PRP2 as the second data page with an offset.
        {**two, "prp1": arena.page(0), "prp2": arena.page(2) + 0x200},
        # PRP2 as a list pointer not qword aligned.
        {"nsid": 1, "slba": 600, "nlb": 23, "prp1": arena.page(0), "prp2": lists.addr + 4},
    ]
    # A list entry with an offset (the first one is fine, the second not).
    lists.put(lists.addr + 0x100, struct.pack("<2Q", arena.page(2), arena.page(4) + 0x10))
    cases.append({"nsid": 1, "slba": 600, "nlb": 23, "prp1": arena.page(0), "prp2": lists.addr + 0x100})
    for fields in cases:
        for cls in (Read, Write):
            status_is(io.command(cls(**fields)), G.PRP_OFFSET_INVALID)
            arena.check()
            lists.check()
    assert ns_data(host, 1, 600, 4 * PAGE) == before
    # The queue goes on.
    ok(io.command(Read(**two, prp1=arena.page(0), prp2=arena.page(2))))


def test_unmapped_memory_is_a_data_transfer_error(host, io):
    arena = Arena(host, 6)
    lists = Arena(host, 1)
    old = pattern(3 * PAGE, 9)
    ns = host.function.subsystem.namespaces[1]
    ns.data.write_bytes(700 * BS, old)
    beyond = host.memory.base + host.memory.size  # past the end of host memory
    hole = unmapped_page(host)
    lists.put(lists.addr, struct.pack("<2Q", arena.page(2), hole))
    cases = [
        {"nlb": 0, "prp1": hole},  # PRP1
        {"nlb": 0, "prp1": beyond + 0x40},
        {"nlb": 15, "prp1": arena.page(0), "prp2": hole},  # PRP2 as a data page
        {"nlb": 23, "prp1": arena.page(0), "prp2": hole + 0x18},  # PRP2 as a list pointer
        {"nlb": 23, "prp1": arena.page(0), "prp2": lists.addr},  # a list entry
        {"nlb": 15, "prp1": arena.page(5) + 0x800, "prp2": beyond},
    ]
    for fields in cases:
        for cls in (Read, Write):
            status_is(io.command(cls(nsid=1, slba=700, **fields)), G.DATA_TRANSFER_ERROR, dnr=False)
            arena.check()  # nothing written where the pointers were valid
            lists.check()
    assert ns_data(host, 1, 700, 3 * PAGE) == old  # no write reached the namespace
    # SGL data block in unmapped memory, after a mapped one in a segment.
    seg = lists.addr + 0x800
    lists.put(seg, bytes(sgl_data_block(arena.page(1), BS)) + bytes(sgl_data_block(hole + 8, BS)))
    for cls in (Read, Write):
        status_is(io.command(sgl_cmd(cls, slba=700, nblocks=2, sgl1=sgl_last_segment(seg, 32))),
                  G.DATA_TRANSFER_ERROR, dnr=False)
        arena.check()
    assert ns_data(host, 1, 700, 3 * PAGE) == old
    ok(io.command(Read(nsid=1, slba=700, nlb=0, prp1=arena.page(3))))
    arena.expect(arena.page(3), old[:BS])
    arena.check()


# --- metadata ---------------------------------------------------------------------------


@pytest.fixture
def meta_host(subsystem, make_function, mode):
    """A function whose subsystem has namespace 2 with 512 + 8 byte blocks
    (LBA format 1), the metadata in a separate buffer (MPTR)."""
    subsystem.add_namespace(Namespace(2, 1024, lba_format=1))
    _fn, h = make_function(mode=mode)
    h.bring_up()
    return h


def test_metadata_through_mptr_with_prps(meta_host):
    host = meta_host
    ns = host.function.subsystem.namespaces[2]
    assert (ns.block_size, ns.metadata_size, ns.extended) == (512, 8, False)
    io = host.create_io_queue_pair(1, 8)
    arena = Arena(host, 4)
    data, meta = pattern(12 * BS, 20), pattern(12 * 8, 21)
    prp1, prp2 = arena.page(2) + 0x400, arena.page(0)
    segs = prp_segments(prp1, [prp2], len(data))
    mptr = arena.page(3) + 0x3C  # dword aligned, not qword
    arena.scatter(segs, data)
    arena.put(mptr, meta)
    ok(io.command(Write(nsid=2, slba=33, nlb=11, prp1=prp1, prp2=prp2, mptr=mptr)))
    assert ns_data(host, 2, 33, len(data)) == data
    assert ns_meta(host, 2, 33, 12) == meta
    arena.check()
    arena.scrub(segs + [(mptr, len(meta))])
    ok(io.command(Read(nsid=2, slba=33, nlb=11, prp1=prp1, prp2=prp2, mptr=mptr)))
    arena.scatter(segs, data, expect=True)
    arena.expect(mptr, meta)
    arena.check()
    # Part of it, with the metadata elsewhere: 8 bytes per block exactly.
    arena.scrub(segs + [(mptr, len(meta))])
    mptr2 = arena.page(1) + 0x7F8
    ok(io.command(Read(nsid=2, slba=35, nlb=1, prp1=arena.page(1), mptr=mptr2)))
    arena.expect(arena.page(1), data[2 * BS : 4 * BS])
    arena.expect(mptr2, meta[16:32])
    arena.check()
    # MPTR in unmapped memory: Data Transfer Error, nothing written.
    status_is(io.command(Read(nsid=2, slba=35, nlb=1, prp1=arena.page(0), mptr=unmapped_page(host))),
              G.DATA_TRANSFER_ERROR, dnr=False)
    arena.check()


def test_metadata_with_sgls(meta_host):
    host = meta_host
    io = host.create_io_queue_pair(1, 8)
    arena = Arena(host, 4)
    data, meta = pattern(4 * BS, 30), pattern(4 * 8, 31)
    dptr = arena.page(0) + 0x11
    # SGL data, MPTR a contiguous buffer (PSDT 01b).
    mptr = arena.page(2) + 0x20
    arena.put(dptr, data)
    arena.put(mptr, meta)
    ok(io.command(sgl_cmd(Write, nsid=2, slba=60, nblocks=4, sgl1=sgl_data_block(dptr, len(data)), mptr=mptr)))
    assert ns_data(host, 2, 60, len(data)) == data
    assert ns_meta(host, 2, 60, 4) == meta
    arena.scrub([(dptr, len(data)), (mptr, len(meta))])
    ok(io.command(sgl_cmd(Read, nsid=2, slba=60, nblocks=4, sgl1=sgl_data_block(dptr, len(data)), mptr=mptr)))
    arena.expect(dptr, data)
    arena.expect(mptr, meta)
    arena.check()
    # PSDT 10b: MPTR holds a (qword aligned) SGL descriptor for the
    # metadata; here a last segment with a data block and a bit bucket on
    # a read.
    arena.scrub([(dptr, len(data)), (mptr, len(meta))])
    mdesc = arena.page(3) + 0x08
    mseg = arena.page(3) + 0x100
    arena.put(mdesc, bytes(sgl_last_segment(mseg, 32)))
    arena.put(mseg, bytes(sgl_data_block(mptr + 3, 16)) + bytes(sgl_bit_bucket(16)))
    ok(io.command(sgl_cmd(Read, nsid=2, slba=60, nblocks=4, sgl1=sgl_data_block(dptr, len(data)),
                          psdt=PSDT_SGL_MPTR_SGL, mptr=mdesc)))
    arena.expect(dptr, data)
    arena.expect(mptr + 3, meta[:16])
    arena.check()
