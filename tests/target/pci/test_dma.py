"""DMA of the PCIe function: PRPs and SGLs turned into views of host memory
(target/pci/dma.py), with the statuses of NVMe 2.0 4.1.1 / 4.1.2."""

import itertools
import struct

import pytest

from nvmestack.memory import PhysicalMemory
from nvmestack.spec.admin import Identify
from nvmestack.spec.dptr import (
    SglDescriptor,
    sgl_bit_bucket,
    sgl_data_block,
    sgl_keyed_data_block,
    sgl_last_segment,
    sgl_segment,
    sgl_transport_data_block,
)
from nvmestack.spec.identify import IdentifyController
from nvmestack.spec.nvm import Flush, Read, Write
from nvmestack.spec.status import GenericStatus as G
from nvmestack.spec.status import Status
from nvmestack.target import Namespace
from nvmestack.target.errors import NvmeError
from nvmestack.target.pci.dma import map_request

from ..conftest import assert_ok, enable

PAGE = 4096
BS = 512


@pytest.fixture
def mem():
    m = PhysicalMemory(16 << 20)
    yield m
    m.close()


_cids = itertools.count(1)


def prepared(ctrl, cmd, sqid=1):
    """A request the controller has parsed (``data_len``/``meta_len`` set);
    each gets its own command identifier, as they stay outstanding."""
    cmd.cid = next(_cids) & 0xFFFF
    req = ctrl.new_request(cmd, sqid)
    assert ctrl.prepare(req), Status.of(req.cqe)
    return req


def pages(mem, n, size=PAGE):
    """``n`` separately allocated pages with a gap between each two."""
    out = []
    for _ in range(n):
        out.append(mem.allocate(size))
        mem.allocate(size)  # keeps the next page away
    return out


def fill(mem, addr, n, seed):
    data = bytes((seed * 7 + i * 13 + (i >> 8)) & 0xFF for i in range(n))
    mem.write(addr, data)
    return data


def gather(views):
    return b"".join(bytes(v) for v in views)


def mapped(mem, req, **kw):
    map_request(mem, req, page_size=kw.pop("page_size", PAGE), **kw)
    assert sum(v.nbytes for v in req.data) == req.data_len
    assert sum(v.nbytes for v in req.meta) == req.meta_len
    return req


def fails(mem, req, code, dnr=True, **kw):
    before = (req.data, req.meta)
    with pytest.raises(NvmeError) as info:
        map_request(mem, req, page_size=kw.pop("page_size", PAGE), **kw)
    s = info.value.status
    assert (s.sct, s.sc) == (code.sct, code), f"expected {code.name}, got {s}"
    assert s.dnr == dnr
    assert (req.data, req.meta) == before  # nothing mapped on failure
    return info.value


def segment(mem, descriptors, offset=0):
    """An SGL segment in host memory; returns its address and length."""
    raw = b"".join(bytes(d) for d in descriptors)
    buf = mem.allocate(offset + len(raw) + 16)
    mem.write(buf.addr + offset, raw)
    return buf.addr + offset, len(raw)


def write_blocks(ctrl, slba, data, nsid=1):
    req = ctrl.submit(Write(nsid=nsid, slba=slba, nblocks=len(data) // BS), sqid=1, data=bytearray(data))
    assert_ok(req)


# --- PSDT -------------------------------------------------------------------------


def test_psdt_rules(ctrl, mem):
    page = mem.allocate(PAGE)
    sgl = sgl_data_block(page.addr, PAGE)
    # SGLs are not for admin commands on PCIe.
    req = prepared(ctrl, Identify(cns=1, psdt=1, sgl1=sgl), sqid=0)
    err = fails(mem, req, G.INVALID_FIELD)
    assert (err.param, err.bit) == (1, 6)
    fails(mem, prepared(ctrl, Identify(cns=1, psdt=2, sgl1=sgl), sqid=0), G.INVALID_FIELD)
    # ... but PRPs are.
    req = mapped(mem, prepared(ctrl, Identify(cns=1, prp1=page.addr), sqid=0))
    assert req.data[0].nbytes == PAGE
    # 11b is reserved, on any queue, even without data.
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=3, sgl1=sgl)), G.INVALID_FIELD)
    fails(mem, prepared(ctrl, Flush(nsid=1, psdt=3)), G.INVALID_FIELD)
    # A function without SGL support refuses 01b and 10b.
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl)), G.INVALID_FIELD, sgl_supported=False)
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl)))
    assert req.data[0].nbytes == BS


def test_pcie_identify_reports_the_sgl_features_dma_implements(ctrl):
    req = ctrl.submit(Identify(cns=1))
    assert_ok(req)
    idc = IdentifyController.view(req.data[0])
    assert idc.sgls_support == 1 and idc.sgls_bit_bucket
    assert idc.sgls_mptr_sgl and idc.sgls_oversize
    assert not (idc.sgls_keyed or idc.sgls_transport or idc.sgls_offset or idc.sgls_mptr_contig)


def test_zero_length_maps_nothing(ctrl, mem):
    # Flush moves no data: whatever the pointers hold is not looked at.
    req = prepared(ctrl, Flush(nsid=1, prp1=0xDEAD_BEE3, prp2=0x5, mptr=0x3))
    mapped(mem, req)
    assert req.data == [] and req.meta == []
    req = prepared(ctrl, Flush(nsid=1, psdt=1, sgl1=sgl_keyed_data_block(1, 1, 1)))
    mapped(mem, req)
    assert req.data == []


# --- PRPs -----------------------------------------------------------------------------


def test_prp1_with_offset_inside_one_page(ctrl, mem):
    page = mem.allocate(PAGE)
    data = fill(mem, page.addr, PAGE, 1)
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=2, prp1=page.addr + 0x204, prp2=0xFFFF_FFFF_0000_0001)))
    assert gather(req.data) == data[0x204 : 0x204 + 2 * BS]
    # The views are host memory itself, not copies.
    req.data[0][:4] = b"abcd"
    assert mem.read(page.addr + 0x204, 4) == b"abcd"


def test_prp1_offset_spills_into_prp2_page(ctrl, mem):
    a, b = pages(mem, 2)
    da, db = fill(mem, a.addr, PAGE, 2), fill(mem, b.addr, PAGE, 3)
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=8, prp1=a.addr + 0xE00, prp2=b.addr)))
    assert [v.nbytes for v in req.data] == [0x200, PAGE - 0x200]
    assert gather(req.data) == da[0xE00:] + db[: PAGE - 0x200]


def test_exactly_two_pages(ctrl, mem):
    a, b = pages(mem, 2)
    da, db = fill(mem, a.addr, PAGE, 4), fill(mem, b.addr, PAGE, 5)
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=16, prp1=a.addr, prp2=b.addr)))
    assert gather(req.data) == da + db


def test_adjacent_pages_of_one_buffer_become_one_view(ctrl, mem):
    buf = mem.allocate(4 * PAGE)
    data = fill(mem, buf.addr, 4 * PAGE, 6)
    lst = mem.allocate(PAGE)
    mem.write(lst.addr, struct.pack("<3Q", buf.addr + PAGE, buf.addr + 2 * PAGE, buf.addr + 3 * PAGE))
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=32, prp1=buf.addr, prp2=lst.addr)))
    assert len(req.data) == 1 and bytes(req.data[0]) == data
    # Adjacent pages of two different buffers stay apart (each is checked).
    x, y = mem.allocate(PAGE), mem.allocate(PAGE)
    assert y.addr == x.addr + PAGE
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=16, prp1=x.addr, prp2=y.addr)))
    assert [v.nbytes for v in req.data] == [PAGE, PAGE]


def test_prp_list_with_offset_pointer_and_offset_prp1(ctrl, mem):
    data_pages = pages(mem, 5)
    expected = b"".join(fill(mem, p.addr, PAGE, 10 + i) for i, p in enumerate(data_pages))
    lst = mem.allocate(PAGE)
    mem.write(lst.addr + 0x100, struct.pack("<4Q", *(p.addr for p in data_pages[1:])))
    # 0x800 into the first page, then four more pages: the last one partly.
    length = 4 * PAGE
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=length // BS, prp1=data_pages[0].addr + 0x800,
                                          prp2=lst.addr + 0x100)))
    assert gather(req.data) == expected[0x800 : 0x800 + length]


def test_prp_list_chains_from_its_last_slot(ctrl, mem):
    # The list starts two slots before the end of its page: one data entry,
    # then the pointer to the next list page, which holds the other two.
    data_pages = pages(mem, 4)
    expected = b"".join(fill(mem, p.addr, PAGE, 20 + i) for i, p in enumerate(data_pages))
    first, second = pages(mem, 2)
    mem.write(first.addr + PAGE - 16, struct.pack("<2Q", data_pages[1].addr, second.addr))
    mem.write(second.addr, struct.pack("<2Q", data_pages[2].addr, data_pages[3].addr))
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=32, prp1=data_pages[0].addr,
                                          prp2=first.addr + PAGE - 16)))
    assert gather(req.data) == expected


def test_full_prp_list_page_chains(subsystem, mem):
    # 514 pages: PRP1, 511 entries and a chain pointer in the first list
    # page, two entries in the second.  End to end: the read lands in the
    # host pages the chained list names.
    ctrl = enable(subsystem.add_controller(mdts=0))
    n = 514
    store = mem.allocate(n * PAGE)  # data pages, used in reverse order
    order = [store.addr + (n - 1 - i) * PAGE for i in range(n)]
    first, second = pages(mem, 2)
    mem.write(first.addr, struct.pack("<512Q", *order[1:512], second.addr))
    mem.write(second.addr, struct.pack("<2Q", *order[512:]))
    data = bytes((i * 5 + (i >> 9)) & 0xFF for i in range(n * PAGE))
    write_blocks(ctrl, 0, data)
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=n * PAGE // BS, prp1=order[0], prp2=first.addr)))
    ctrl.execute(req)
    assert_ok(req)
    for i, addr in enumerate(order):
        assert mem.read(addr, PAGE) == data[i * PAGE : (i + 1) * PAGE]


def test_page_size_is_ccmps(ctrl, mem):
    big = mem.allocate(2 * 8192, align=8192)
    data = fill(mem, big.addr, 8192, 30)
    # 8 KiB in one 8 KiB memory page: PRP2 is not used.
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=16, prp1=big.addr, prp2=0x7)), page_size=8192)
    assert gather(req.data) == data
    # With 4 KiB pages the same command needs PRP2, and 0x7 is no page.
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=16, prp1=big.addr, prp2=0x7)), G.PRP_OFFSET_INVALID)


@pytest.mark.parametrize("case", ["prp1_bits", "prp2_data_offset", "list_pointer_dword", "list_entry_offset",
                                  "chain_offset"])
def test_prp_offset_invalid(ctrl, mem, case):
    data_pages = pages(mem, 4)
    lst, nxt = pages(mem, 2)
    prp1, prp2, nblocks = data_pages[0].addr, data_pages[1].addr, 16
    if case == "prp1_bits":
        prp1 += 0x202
        nblocks = 1
    elif case == "prp2_data_offset":
        prp2 += 0x200
    elif case == "list_pointer_dword":
        mem.write(lst.addr + 8, struct.pack("<2Q", *(p.addr for p in data_pages[1:3])))
        prp2, nblocks = lst.addr + 4, 24
    elif case == "list_entry_offset":
        mem.write(lst.addr, struct.pack("<2Q", data_pages[1].addr, data_pages[2].addr + 0x800))
        prp2, nblocks = lst.addr, 24
    else:
        mem.write(lst.addr + PAGE - 16, struct.pack("<2Q", data_pages[1].addr, nxt.addr + 8))
        mem.write(nxt.addr, struct.pack("<2Q", data_pages[2].addr, data_pages[3].addr))
        prp2, nblocks = lst.addr + PAGE - 16, 32
    err = fails(mem, prepared(ctrl, Read(nsid=1, nblocks=nblocks, prp1=prp1, prp2=prp2)), G.PRP_OFFSET_INVALID)
    assert err.param == (24 if case == "prp1_bits" else 32)


@pytest.mark.parametrize("case", ["prp1", "prp2_page", "list_page", "list_entry", "tail_past_buffer"])
def test_unmapped_memory_is_a_data_transfer_error(ctrl, mem, case):
    a, b, lst = pages(mem, 3)
    hole = mem.base + mem.size - PAGE  # never allocated
    prp1, prp2, nblocks = a.addr, b.addr, 16
    if case == "prp1":
        prp1 = hole
    elif case == "prp2_page":
        prp2 = hole
    elif case == "list_page":
        prp2, nblocks = hole, 24
    elif case == "list_entry":
        mem.write(lst.addr, struct.pack("<2Q", b.addr, hole))
        prp2, nblocks = lst.addr, 24
    else:
        small = mem.allocate(1024)  # PRP1 is fine, the transfer runs past the buffer
        prp1, nblocks = small.addr, 4
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=nblocks, prp1=prp1, prp2=prp2)), G.DATA_TRANSFER_ERROR, dnr=False)


def test_prp_read_end_to_end(ctrl, mem):
    data = bytes(range(256)) * 48  # 24 blocks
    write_blocks(ctrl, 100, data)
    data_pages = pages(mem, 4)
    lst = mem.allocate(PAGE)
    mem.write(lst.addr, struct.pack("<3Q", *(p.addr for p in data_pages[1:])))
    req = mapped(mem, prepared(ctrl, Read(nsid=1, slba=100, nblocks=24, prp1=data_pages[0].addr + 0x400,
                                          prp2=lst.addr)))
    ctrl.execute(req)
    assert_ok(req)
    got = mem.read(data_pages[0].addr + 0x400, PAGE - 0x400)
    got += b"".join(mem.read(p.addr, PAGE) for p in data_pages[1:3]) + mem.read(data_pages[3].addr, 0x400)
    assert got == data


# --- SGLs -----------------------------------------------------------------------------


def test_sgl1_data_block(ctrl, mem):
    buf = mem.allocate(PAGE)
    data = fill(mem, buf.addr, PAGE, 40)
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=2, psdt=1, sgl1=sgl_data_block(buf.addr + 3, 2 * BS))))
    assert gather(req.data) == data[3 : 3 + 2 * BS]  # byte aligned data blocks are fine
    # A longer SGL is allowed (SGLS.LLDTS): the views stop at the transfer.
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=2, psdt=1, sgl1=sgl_data_block(buf.addr, PAGE))))
    assert gather(req.data) == data[: 2 * BS]


def test_sgl_segments_chain_to_last_segment(ctrl, mem):
    bufs = pages(mem, 5)
    datas = [fill(mem, b.addr, PAGE, 50 + i) for i, b in enumerate(bufs)]
    last_addr, last_len = segment(mem, [sgl_data_block(bufs[3].addr, 1024), sgl_data_block(bufs[4].addr, 1024)])
    mid_addr, mid_len = segment(mem, [sgl_data_block(bufs[2].addr + 100, 512), sgl_data_block(0, 0),
                                      sgl_last_segment(last_addr, last_len)])
    first_addr, first_len = segment(mem, [sgl_data_block(bufs[0].addr, 1024), sgl_data_block(bufs[1].addr, 512),
                                          sgl_segment(mid_addr, mid_len)], offset=8)
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=8, psdt=1, sgl1=sgl_segment(first_addr, first_len))))
    expect = datas[0][:1024] + datas[1][:512] + datas[2][100:612] + datas[3][:1024] + datas[4][:1024]
    assert gather(req.data) == expect
    # SGL1 may point straight at the last segment.
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=4, psdt=1, sgl1=sgl_last_segment(last_addr, last_len))))
    assert gather(req.data) == datas[3][:1024] + datas[4][:1024]


def test_descriptors_past_the_transfer_are_not_examined(ctrl, mem):
    buf = mem.allocate(PAGE)
    seg = segment(mem, [sgl_data_block(buf.addr, BS), sgl_keyed_data_block(1, 2, 3),
                        _raw_descriptor(0x2, 0, 0x1, 5)])
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_last_segment(*seg))))
    assert [v.nbytes for v in req.data] == [BS]


def test_bit_bucket_on_read_discards_into_scratch(ctrl, mem):
    data = bytes(range(256)) * 8  # 4 blocks
    write_blocks(ctrl, 10, data)
    a, b = pages(mem, 2)
    seg = segment(mem, [sgl_data_block(a.addr, BS), sgl_bit_bucket(2 * BS), sgl_data_block(b.addr, BS)])
    req = mapped(mem, prepared(ctrl, Read(nsid=1, slba=10, nblocks=4, psdt=1, sgl1=sgl_last_segment(*seg))))
    assert [v.nbytes for v in req.data] == [BS, 2 * BS, BS]
    ctrl.execute(req)
    assert_ok(req)
    assert mem.read(a.addr, BS) == data[:BS]
    assert mem.read(b.addr, BS) == data[3 * BS :]
    assert mem.read(a.addr + BS, PAGE - BS) == bytes(PAGE - BS)  # nothing else written
    # A bit bucket alone in SGL1 discards the whole read.
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_bit_bucket(BS))))
    assert req.data[0].obj is not None and not any(req.data[0])


def test_bit_bucket_on_write_has_no_effect(ctrl, mem):
    a, b = pages(mem, 2)
    da, db = fill(mem, a.addr, BS, 60), fill(mem, b.addr, BS, 61)
    seg = segment(mem, [sgl_data_block(a.addr, BS), sgl_bit_bucket(3000), sgl_data_block(b.addr, BS)])
    req = mapped(mem, prepared(ctrl, Write(nsid=1, slba=20, nblocks=2, psdt=1, sgl1=sgl_last_segment(*seg))))
    assert gather(req.data) == da + db
    ctrl.execute(req)
    assert_ok(req)
    check = ctrl.submit(Read(nsid=1, slba=20, nblocks=2), sqid=1)
    assert gather(check.data) == da + db
    # Its length does not count toward a write's transfer.
    seg = segment(mem, [sgl_data_block(a.addr, BS), sgl_bit_bucket(BS)])
    fails(mem, prepared(ctrl, Write(nsid=1, slba=20, nblocks=2, psdt=1, sgl1=sgl_last_segment(*seg))),
          G.DATA_SGL_LENGTH_INVALID)


def _raw_descriptor(sgl_type, subtype, address=0, length=0):
    return SglDescriptor(address=address, length=length, sgl_type=sgl_type, sgl_subtype=subtype)


@pytest.mark.parametrize("desc", [
    sgl_keyed_data_block(0x1000, 512, 0x1234),
    sgl_transport_data_block(512),
    _raw_descriptor(0x6, 0, 0x1000, 512),  # reserved type
    _raw_descriptor(0xF, 0, 0x1000, 512),  # vendor specific
    _raw_descriptor(0x0, 0x1, 0, 512),  # data block, Offset sub type: reserved on PCIe
    _raw_descriptor(0x0, 0xA, 0x1000, 512),  # transport specific sub type
    _raw_descriptor(0x1, 0x1, 0, 512),  # bit bucket with sub type 1h
], ids=["keyed", "transport", "reserved", "vendor", "offset", "transport_subtype", "bit_bucket_subtype"])
def test_sgl_descriptor_type_invalid(ctrl, mem, desc):
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=desc)), G.SGL_DESCRIPTOR_TYPE_INVALID)
    # ... also inside a segment.
    seg = segment(mem, [desc])
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_last_segment(*seg))),
          G.SGL_DESCRIPTOR_TYPE_INVALID)


def test_segment_with_offset_subtype(ctrl, mem):
    seg = segment(mem, [sgl_data_block(mem.allocate(PAGE).addr, BS)])
    desc = _raw_descriptor(0x3, 0x1, *seg)
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=desc)), G.SGL_DESCRIPTOR_TYPE_INVALID)


def test_segment_descriptor_not_last_in_segment(ctrl, mem):
    buf = mem.allocate(PAGE)
    inner = segment(mem, [sgl_data_block(buf.addr, BS)])
    seg = segment(mem, [sgl_last_segment(*inner), sgl_data_block(buf.addr, BS)])
    err = fails(mem, prepared(ctrl, Read(nsid=1, nblocks=2, psdt=1, sgl1=sgl_segment(*seg))),
                G.INVALID_SGL_DESCRIPTOR_COUNT)
    assert err.param == 24


def test_last_segment_holding_a_segment_descriptor(ctrl, mem):
    buf = mem.allocate(PAGE)
    inner = segment(mem, [sgl_data_block(buf.addr, BS)])
    for pointer in (sgl_segment, sgl_last_segment):
        seg = segment(mem, [sgl_data_block(buf.addr, BS), pointer(*inner)])
        fails(mem, prepared(ctrl, Read(nsid=1, nblocks=2, psdt=1, sgl1=sgl_last_segment(*seg))),
              G.INVALID_SGL_SEGMENT_DESCRIPTOR)
    # The same chain under a Segment descriptor is fine.
    seg = segment(mem, [sgl_data_block(buf.addr, BS), sgl_last_segment(*inner)])
    mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=2, psdt=1, sgl1=sgl_segment(*seg))))


@pytest.mark.parametrize("kind", [0x2, 0x3])
@pytest.mark.parametrize("shift,length", [(0, 0), (0, 24), (0, 17), (4, 16)])
def test_invalid_segment_descriptor(ctrl, mem, kind, shift, length):
    seg_addr, _ = segment(mem, [sgl_data_block(mem.allocate(PAGE).addr, BS)] * 2, offset=8)
    desc = _raw_descriptor(kind, 0, seg_addr + shift, length)
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=desc)), G.INVALID_SGL_SEGMENT_DESCRIPTOR)


def test_data_sgl_length_invalid(ctrl, mem):
    buf = mem.allocate(PAGE)
    # Too short, in SGL1 and through segments.
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=2, psdt=1, sgl1=sgl_data_block(buf.addr, BS))),
          G.DATA_SGL_LENGTH_INVALID)
    seg = segment(mem, [sgl_data_block(buf.addr, BS), sgl_data_block(buf.addr, 100)])
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=2, psdt=1, sgl1=sgl_last_segment(*seg))),
          G.DATA_SGL_LENGTH_INVALID)
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_data_block(0, 0))), G.DATA_SGL_LENGTH_INVALID)
    # A data block or segment running past 2^64.
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_data_block((1 << 64) - 256, BS))),
          G.DATA_SGL_LENGTH_INVALID)
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_segment((1 << 64) - 16, 32))),
          G.DATA_SGL_LENGTH_INVALID)


def test_sgl_unmapped_memory(ctrl, mem):
    hole = mem.base + mem.size - PAGE
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_data_block(hole, BS))),
          G.DATA_TRANSFER_ERROR, dnr=False)
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_segment(hole, 32))),
          G.DATA_TRANSFER_ERROR, dnr=False)
    seg = segment(mem, [sgl_data_block(hole, BS)])
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_last_segment(*seg))),
          G.DATA_TRANSFER_ERROR, dnr=False)


def test_sgl_loops_are_bounded(ctrl, mem):
    buf = mem.allocate(4 * PAGE)
    # A segment whose last descriptor points back at itself with nothing
    # mapped in between.
    loop = mem.allocate(PAGE)
    mem.write(loop.addr, bytes(sgl_data_block(0, 0)) + bytes(sgl_segment(loop.addr, 32)))
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_segment(loop.addr, 32))),
          G.INVALID_SGL_DESCRIPTOR_COUNT)
    # Two segments pointing at each other.
    a, b = pages(mem, 2)
    mem.write(a.addr, bytes(sgl_segment(b.addr, 16)))
    mem.write(b.addr, bytes(sgl_segment(a.addr, 16)))
    fails(mem, prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_segment(a.addr, 16))),
          G.INVALID_SGL_DESCRIPTOR_COUNT)
    # A loop that maps data each time round ends with the transfer.
    mem.write(loop.addr, bytes(sgl_data_block(buf.addr, BS)) + bytes(sgl_segment(loop.addr, 32)))
    req = mapped(mem, prepared(ctrl, Read(nsid=1, nblocks=3, psdt=1, sgl1=sgl_segment(loop.addr, 32))))
    assert len(req.data) == 3


def test_too_many_descriptors(ctrl, mem):
    buf = mem.allocate(PAGE)
    descs = [sgl_data_block(buf.addr + i * 16, 16) for i in range(32)]  # 512 bytes in 32 pieces
    seg = segment(mem, descs)
    req = prepared(ctrl, Read(nsid=1, nblocks=1, psdt=1, sgl1=sgl_last_segment(*seg)))
    fails(mem, req, G.INVALID_SGL_DESCRIPTOR_COUNT, max_sgl_descriptors=32)  # SGL1 counts too
    mapped(mem, req, max_sgl_descriptors=33)
    assert gather(req.data) == mem.read(buf.addr, BS)


# --- metadata -------------------------------------------------------------------------


@pytest.fixture
def meta_ns(subsystem, ctrl):
    """Namespace 2: 512-byte blocks with 8 bytes of separate metadata."""
    subsystem.add_namespace(Namespace(2, 256, lba_format=1))
    return 2


def test_metadata_contiguous_with_prps_and_sgls(ctrl, mem, meta_ns):
    data_buf, meta_buf = mem.allocate(PAGE), mem.allocate(PAGE)
    md = fill(mem, meta_buf.addr, 64, 70)
    req = mapped(mem, prepared(ctrl, Read(nsid=2, nblocks=4, prp1=data_buf.addr, mptr=meta_buf.addr + 4)))
    assert req.meta_len == 32 and gather(req.meta) == md[4:36]
    req = mapped(mem, prepared(ctrl, Read(nsid=2, nblocks=4, psdt=1, sgl1=sgl_data_block(data_buf.addr, 2048),
                                          mptr=meta_buf.addr + 8)))
    assert gather(req.meta) == md[8:40]
    for psdt, sgl in ((0, None), (1, sgl_data_block(data_buf.addr, 2048))):
        fields = {"psdt": psdt, "sgl1": sgl} if sgl else {"prp1": data_buf.addr}
        err = fails(mem, prepared(ctrl, Read(nsid=2, nblocks=4, mptr=meta_buf.addr + 2, **fields)),
                    G.INVALID_FIELD)
        assert err.param == 16
        fails(mem, prepared(ctrl, Read(nsid=2, nblocks=4, mptr=meta_buf.addr + PAGE - 16, **fields)),
              G.DATA_TRANSFER_ERROR, dnr=False)


def test_metadata_sgl(ctrl, mem, meta_ns):
    data_buf, meta_a, meta_b = pages(mem, 3)
    ma, mb = fill(mem, meta_a.addr, 64, 80), fill(mem, meta_b.addr, 64, 81)
    sgl1 = sgl_data_block(data_buf.addr, 2048)
    # MPTR -> one data block describing all of the metadata.
    ptr, _ = segment(mem, [sgl_data_block(meta_a.addr + 1, 32)])
    req = mapped(mem, prepared(ctrl, Read(nsid=2, nblocks=4, psdt=2, sgl1=sgl1, mptr=ptr)))
    assert gather(req.meta) == ma[1:33]
    # MPTR -> a last segment descriptor -> two data blocks.
    last = segment(mem, [sgl_data_block(meta_a.addr, 16), sgl_data_block(meta_b.addr, 16)])
    ptr, _ = segment(mem, [sgl_last_segment(*last)])
    req = mapped(mem, prepared(ctrl, Read(nsid=2, nblocks=4, psdt=2, sgl1=sgl1, mptr=ptr)))
    assert gather(req.meta) == ma[:16] + mb[:16]
    # Too short: Metadata SGL Length Invalid (not the data status).
    ptr, _ = segment(mem, [sgl_data_block(meta_a.addr, 24)])
    err = fails(mem, prepared(ctrl, Read(nsid=2, nblocks=4, psdt=2, sgl1=sgl1, mptr=ptr)),
                G.METADATA_SGL_LENGTH_INVALID)
    assert err.param == 16
    # Bad descriptors get the same statuses as in a data SGL.
    ptr, _ = segment(mem, [sgl_keyed_data_block(meta_a.addr, 32, 1)])
    fails(mem, prepared(ctrl, Read(nsid=2, nblocks=4, psdt=2, sgl1=sgl1, mptr=ptr)), G.SGL_DESCRIPTOR_TYPE_INVALID)
    # MPTR is the address of a qword aligned segment in host memory.
    fails(mem, prepared(ctrl, Read(nsid=2, nblocks=4, psdt=2, sgl1=sgl1, mptr=ptr + 4)), G.INVALID_FIELD)
    fails(mem, prepared(ctrl, Read(nsid=2, nblocks=4, psdt=2, sgl1=sgl1, mptr=mem.base + mem.size - 8)),
          G.DATA_TRANSFER_ERROR, dnr=False)


def test_metadata_read_end_to_end(subsystem, ctrl, mem, meta_ns):
    data = bytes(range(256)) * 8
    md = bytes(range(100, 132))
    req = ctrl.submit(Write(nsid=2, slba=5, nblocks=4), sqid=1, data=bytearray(data), meta=bytearray(md))
    assert_ok(req)
    data_buf, meta_buf = pages(mem, 2)
    ptr, _ = segment(mem, [sgl_data_block(meta_buf.addr, 32)])
    req = mapped(mem, prepared(ctrl, Read(nsid=2, slba=5, nblocks=4, psdt=2,
                                          sgl1=sgl_data_block(data_buf.addr, 2048), mptr=ptr)))
    ctrl.execute(req)
    assert_ok(req)
    assert mem.read(data_buf.addr, 2048) == data and mem.read(meta_buf.addr, 32) == md
