import struct

import pytest

from nvmestack.spec.dptr import (
    PRP_ENTRY_SIZE,
    Prp2Use,
    PrpError,
    PrpList,
    Psdt,
    SglDescriptor,
    SglSegment,
    SglSubtype,
    SglType,
    build_prps,
    check_prp_entry,
    prp2_use,
    prp_data_segments,
    prp_list_capacity,
    prp_list_entry_count,
    prp_list_layout,
    prp_list_page_count,
    prp_offset,
    prp_page_base,
    prp_page_count,
    sgl_bit_bucket,
    sgl_data_block,
    sgl_keyed_data_block,
    sgl_last_segment,
    sgl_segment,
    sgl_segment_count,
    sgl_transport_data_block,
)

PAGE = 4096


# --- SGL ----------------------------------------------------------------------


def test_sgl_coded_values():
    assert (Psdt.PRP, Psdt.SGL_MPTR_CONTIGUOUS, Psdt.SGL_MPTR_SGL) == (0, 1, 2)
    assert [SglType[n] for n in ("DATA_BLOCK", "BIT_BUCKET", "SEGMENT", "LAST_SEGMENT",
                                 "KEYED_DATA_BLOCK", "TRANSPORT_DATA_BLOCK")] == [0, 1, 2, 3, 4, 5]
    assert (SglSubtype.ADDRESS, SglSubtype.OFFSET, SglSubtype.TRANSPORT_SPECIFIC) == (0, 1, 0xA)


def test_sgl_builders_identifier_byte():
    cases = [
        (sgl_data_block(0x1000, 512), 0x00),
        (sgl_data_block(0x40, 512, subtype=SglSubtype.OFFSET), 0x01),
        (sgl_bit_bucket(4096), 0x10),
        (sgl_segment(0x2000, 64), 0x20),
        (sgl_last_segment(0x3000, 32), 0x30),
        (sgl_keyed_data_block(0x4000, 8192, 0x1234), 0x40),
        (sgl_keyed_data_block(0x4000, 8192, 0x1234, invalidate=True), 0x4F),
        (sgl_transport_data_block(8192), 0x5A),
    ]
    for desc, ident in cases:
        assert bytes(desc)[15] == ident, desc


def test_sgl_builders_layout():
    raw = bytes(sgl_data_block(0x1122334455667788, 0x0A0B0C0D))
    assert raw[0:8] == (0x1122334455667788).to_bytes(8, "little")
    assert raw[8:12] == bytes.fromhex("0d0c0b0a") and raw[12:15] == b"\0\0\0"
    bb = SglDescriptor.decode(bytes(sgl_bit_bucket(100)))
    assert bb.address == 0 and bb.length == 100 and bb.sgl_type == SglType.BIT_BUCKET
    k = sgl_keyed_data_block(0xAB, 0xFFFFFF, 0xDEADBEEF)
    raw = bytes(k)
    assert raw[8:11] == b"\xff\xff\xff" and raw[11:15] == bytes.fromhex("efbeadde")
    assert k.data_length == 0xFFFFFF and not k.is_segment_pointer
    t = sgl_transport_data_block(0x10000)
    assert t.address == 0 and t.data_length == 0x10000
    assert sgl_segment(0, 16).is_segment_pointer and sgl_last_segment(0, 16).is_segment_pointer


def test_sgl_builders_reject_bad_values():
    with pytest.raises(ValueError):
        sgl_segment(0x1000, 24)
    with pytest.raises(ValueError):
        sgl_last_segment(0x1000, 0)
    with pytest.raises(ValueError):
        sgl_keyed_data_block(0, 1 << 24, 0)
    with pytest.raises(ValueError):
        sgl_data_block(0, 1 << 32)
    with pytest.raises(ValueError):
        sgl_data_block(-1, 1)
    assert sgl_segment_count(48) == 3
    with pytest.raises(ValueError):
        sgl_segment_count(40)


def test_sgl_segment_view():
    buf = bytearray(8 + 3 * 16)
    seg = SglSegment(buf, 8)
    assert len(seg) == 3
    n = seg.fill([sgl_data_block(0x1000, 512), sgl_data_block(0x3000, 512), sgl_last_segment(0x9000, 32)])
    assert n == 3
    assert buf[8:16] == (0x1000).to_bytes(8, "little")
    assert buf[8 + 16 + 15] == 0x00 and buf[8 + 32 + 15] == 0x30
    assert [d.address for d in seg] == [0x1000, 0x3000, 0x9000]
    assert seg[-1].is_segment_pointer
    # views, not copies
    seg[0].length = 4096
    assert buf[16:20] == (4096).to_bytes(4, "little")
    buf[8 + 16] = 0x42
    assert seg[1].address == 0x3042
    assert bytes(seg.raw) == bytes(buf[8:])
    with pytest.raises(IndexError):
        seg[3]
    with pytest.raises(ValueError):
        seg.fill([sgl_bit_bucket(1)] * 4)
    with pytest.raises(ValueError):
        SglSegment(buf, 8, 4)
    with pytest.raises(ValueError):
        seg[0] = b"short"


# --- PRP rules ------------------------------------------------------------------


def test_prp_entry_rules():
    assert PRP_ENTRY_SIZE == 8
    assert prp_offset(0x12345, PAGE) == 0x345 and prp_page_base(0x12345, PAGE) == 0x12000
    assert prp_offset(0x12345, 8192) == 0x345 and prp_offset(0x13345, 8192) == 0x1345
    check_prp_entry(0x1004, PAGE, first=True)
    check_prp_entry(0x2000, PAGE)
    with pytest.raises(PrpError):
        check_prp_entry(0x1002, PAGE, first=True)  # bits 1:0 reserved
    with pytest.raises(PrpError):
        check_prp_entry(0x1004, PAGE)  # offset only in the first entry
    assert issubclass(PrpError, ValueError)


def test_page_counts_and_prp2_use():
    assert prp_page_count(0x1000, 0, PAGE) == 0
    assert prp_page_count(0x1000, 4096, PAGE) == 1
    assert prp_page_count(0x1800, 2048, PAGE) == 1
    assert prp_page_count(0x1800, 2049, PAGE) == 2
    assert prp_page_count(0x1000, 8192, PAGE) == 2
    assert prp_page_count(0x1004, 8192, PAGE) == 3
    assert prp_page_count(0x2000, 8192, 8192) == 1
    assert prp_page_count(0x1000, 8192, 8192) == 2  # 0x1000 is mid-page with 8 KiB pages
    assert prp2_use(0x1000, 4096, PAGE) == Prp2Use.UNUSED
    assert prp2_use(0x1000, 0, PAGE) == Prp2Use.UNUSED
    assert prp2_use(0x1200, 4096, PAGE) == Prp2Use.DATA_PAGE
    assert prp2_use(0x1000, 8193, PAGE) == Prp2Use.LIST_POINTER
    assert prp_list_entry_count(0x1000, 8192, PAGE) == 0
    assert prp_list_entry_count(0x1000, 3 * 4096, PAGE) == 2
    assert prp_list_entry_count(0x1010, 3 * 4096, PAGE) == 3
    with pytest.raises(ValueError):
        prp_page_count(0, -1, PAGE)
    with pytest.raises(ValueError):
        prp_page_count(0, 1, 2048)
    with pytest.raises(ValueError):
        prp_page_count(0, 1, 6144)


def test_list_layout_and_chaining():
    assert prp_list_capacity(PAGE) == 512
    assert prp_list_capacity(PAGE, 4088) == 1
    with pytest.raises(PrpError):
        prp_list_capacity(PAGE, 4)  # list pointers are qword aligned
    assert prp_list_layout(0, PAGE) == []
    assert prp_list_layout(1, PAGE) == [1]
    assert prp_list_layout(512, PAGE) == [512]  # exactly full: no chain pointer
    assert prp_list_layout(513, PAGE) == [511, 2]
    assert prp_list_layout(511 + 511 + 512, PAGE) == [511, 511, 512]
    assert prp_list_layout(511 + 511 + 513, PAGE) == [511, 511, 511, 2]
    assert prp_list_layout(10, PAGE, 4096 - 32) == [3, 7]  # 4 slots left in the first page
    assert prp_list_layout(3, PAGE, 4088) == [0, 3]
    assert prp_list_page_count(513, PAGE) == 2
    # 2 MiB aligned transfer with 4 KiB pages: 511 list entries, one list page
    assert prp_list_page_count(prp_list_entry_count(0, 2 << 20, PAGE), PAGE) == 1


def test_prp_list_view():
    page = bytearray(PAGE)
    lst = PrpList.page(page, PAGE)
    assert len(lst) == 512
    lst[0] = 0x1_0000_1000
    lst[511] = 0xFFFF_F000
    assert page[0:8] == (0x1_0000_1000).to_bytes(8, "little")
    assert page[4088:4096] == (0xFFFF_F000).to_bytes(8, "little")
    page[8:16] = (0x5000).to_bytes(8, "little")
    assert lst[1] == 0x5000 and lst[-1] == 0xFFFF_F000
    assert lst[0:3] == [0x1_0000_1000, 0x5000, 0]
    lst.fill([1 << 12, 2 << 12, 3 << 12])
    assert lst.read(0, 3) == [0x1000, 0x2000, 0x3000]
    tail = PrpList.page(page, PAGE, 4096 - 16)
    assert len(tail) == 2 and tail[1] == 0xFFFF_F000
    assert bytes(tail.raw) == bytes(page[4080:])
    with pytest.raises(IndexError):
        lst[512]
    with pytest.raises(ValueError):
        lst[0] = 1 << 64
    with pytest.raises(ValueError):
        lst.fill([0] * 513)
    with pytest.raises(ValueError):
        PrpList(page, 8, 512)


# --- PRP packing and walking -------------------------------------------------------


def pages_for(prp1, length):
    n = prp_page_count(prp1, length, PAGE)
    return [prp1] + [0x100_0000 + i * PAGE for i in range(1, n)]


def test_build_prps_small():
    plan = build_prps([0x1234_5000], 4096, PAGE)
    assert (plan.prp1, plan.prp2, plan.lists) == (0x1234_5000, 0, ())
    plan = build_prps([0x1800, 0x7000], 4096, PAGE)
    assert (plan.prp1, plan.prp2, plan.lists) == (0x1800, 0x7000, ())
    # extra pages beyond the length are ignored, list pages are not touched
    plan = build_prps([0x1000, 0x2000, 0x3000], 4096, PAGE, list_pages=lambda: pytest.fail("no list needed"))
    assert plan.prp2 == 0


def test_build_prps_with_chained_lists():
    length = 600 * PAGE
    pages = pages_for(0x10_0000, length)
    assert len(pages) == 600
    plan = build_prps(pages, length, PAGE, [0xA000, 0xB000])
    assert plan.prp1 == 0x10_0000 and plan.prp2 == 0xA000
    assert [p.address for p in plan.lists] == [0xA000, 0xB000]
    first, second = plan.lists
    assert len(first.entries) == 512 and first.entries[:511] == pages[1:512]
    assert first.entries[511] == 0xB000  # chain pointer in the last slot
    assert second.entries == pages[512:]
    enc = first.encode()
    assert len(enc) == PAGE and struct.unpack_from("<Q", enc, 8)[0] == pages[2]


def test_build_prps_list_with_offset_and_callable():
    alloc = iter([0xA000 + 4096 - 16, 0xC000]).__next__
    length = 4 * PAGE
    plan = build_prps(pages_for(0x2000, length), length, PAGE, alloc)
    assert plan.prp2 == 0xAFF0
    assert [len(p.entries) for p in plan.lists] == [2, 2]
    assert plan.lists[0].entries[1] == 0xC000


def test_build_prps_rejects_bad_input():
    with pytest.raises(PrpError):
        build_prps([0x1002], 512, PAGE)
    with pytest.raises(PrpError):
        build_prps([0x1000, 0x2800], 8192, PAGE)
    with pytest.raises(ValueError, match="span 3 pages"):
        build_prps([0x1004, 0x2000], 8192, PAGE, [0x9000])
    with pytest.raises(ValueError, match="list pages"):
        build_prps(pages_for(0, 600 * PAGE), 600 * PAGE, PAGE, [0x9000])
    with pytest.raises(PrpError):
        build_prps(pages_for(0, 3 * PAGE), 3 * PAGE, PAGE, [0x9004])
    with pytest.raises(PrpError):
        build_prps(pages_for(0, 600 * PAGE), 600 * PAGE, PAGE, [0x9008, 0xA008])
    with pytest.raises(ValueError):
        build_prps([], 1, PAGE)


class FakeMemory:
    """Just enough memory for list pages: page base -> bytearray."""

    def __init__(self):
        self.pages = {}

    def write(self, addr, data):
        base, off = addr & ~(PAGE - 1), addr & (PAGE - 1)
        page = self.pages.setdefault(base, bytearray(PAGE))
        page[off : off + len(data)] = data

    def read_list(self, addr, count):
        base, off = addr & ~(PAGE - 1), addr & (PAGE - 1)
        assert off + count * 8 <= PAGE, "a list read must not cross its page"
        return PrpList(self.pages[base], off, count)


@pytest.mark.parametrize(
    "prp1,length,lists",
    [
        (0x1000, 512, [0x9000]),
        (0x1FFC, 8, [0x9000]),
        (0x1800, 4096, [0x9000]),
        (0x1000, 3 * PAGE, [0x9000]),
        (0x1200, 513 * PAGE, [0x9000, 0xA000]),
        (0x1000, 1100 * PAGE, [0x9000, 0xA000, 0xB000]),
        (0x1000, 9 * PAGE, [0x9FE0, 0xA000, 0xB000]),
    ],
)
def test_build_then_walk_round_trip(prp1, length, lists):
    pages = pages_for(prp1, length)
    plan = build_prps(pages, length, PAGE, lists)
    mem = FakeMemory()
    for lp in plan.lists:
        mem.write(lp.address, lp.encode())
    segs = prp_data_segments(plan.prp1, plan.prp2, length, PAGE, mem.read_list)
    assert [a for a, _ in segs] == pages
    assert sum(n for _, n in segs) == length
    assert all(0 < n <= PAGE for _, n in segs)


def test_walk_rejects_bad_entries():
    assert prp_data_segments(0x1000, 0xDEAD, 0, PAGE) == []
    assert prp_data_segments(0x1F00, 0xDEAD, 0x100, PAGE) == [(0x1F00, 0x100)]
    with pytest.raises(PrpError):
        prp_data_segments(0x1000, 0x2004, 8192, PAGE)  # second data page with an offset
    with pytest.raises(PrpError):
        prp_data_segments(0x1001, 0, 16, PAGE)
    with pytest.raises(ValueError, match="read_list"):
        prp_data_segments(0x1000, 0x9000, 3 * PAGE, PAGE)
    mem = FakeMemory()
    mem.write(0x9000, struct.pack("<2Q", 0x2000, 0x3010))
    with pytest.raises(PrpError):
        prp_data_segments(0x1000, 0x9000, 3 * PAGE, PAGE, mem.read_list)
    with pytest.raises(PrpError):
        prp_data_segments(0x1000, 0x9004, 3 * PAGE, PAGE, mem.read_list)
    # a chain pointer with an offset
    entries = [0x10_0000 + i * PAGE for i in range(511)] + [0xA010]
    mem.write(0x9000, struct.pack("<512Q", *entries))
    with pytest.raises(PrpError, match="chained"):
        prp_data_segments(0x1000, 0x9000, 600 * PAGE, PAGE, mem.read_list)
