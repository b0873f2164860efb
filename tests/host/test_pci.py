"""The PCIe transport: data mapping (PRPs from the small and the page pool,
chained PRP lists, SGLs by threshold and for scatter lists PRPs cannot
describe, chained SGL segments, metadata, bounce buffers), interrupts and
doorbell batching.

Mapping tests check the host's data pointer twice: structurally, by
walking it with the device's own PRP/SGL code (target/pci/dma.py) and
comparing the memory it describes with the caller's buffers, and end to
end, by writing and reading the data through the device."""

from __future__ import annotations

import pytest

from nvmestack.host import HostRequest
from nvmestack.host import pci as pci_mod
from nvmestack.host.pci import SMALL_POOL_SIZE, prp_compatible
from nvmestack.memory import PhysicalMemory
from nvmestack.spec.admin import Cns, Identify
from nvmestack.spec.dptr import PrpList, Psdt, SglType
from nvmestack.spec.nvm import Read, Write
from nvmestack.spec.opcodes import NvmOpcode
from nvmestack.spec.registers import cq_head_doorbell, sq_tail_doorbell
from nvmestack.spec.status import GenericStatus
from nvmestack.target import Namespace
from nvmestack.target.pci.dma import map_prps, map_sgl

from .conftest import pattern

BS = 512
PAGE = 4096


def coalesce(pieces):
    out = []
    for addr, n in pieces:
        if out and out[-1][0] + out[-1][1] == addr:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((addr, n))
    return out


def described(memory, req, length):
    """(address, length) runs of host memory the request's data pointer
    describes, as the device walks it."""
    cmd = req.cmd
    if cmd.psdt == Psdt.PRP:
        views = map_prps(memory, cmd.prp1, cmd.prp2, length, PAGE)
    else:
        views = map_sgl(memory, cmd.sgl1, length, to_host=False)
    return coalesce([(memory.address_of(v), v.nbytes) for v in views])


def segments_of(memory, views):
    return coalesce([(memory.address_of(v), v.nbytes) for v in views])


def mapped(ctrl, data, *, qid=1, opcode_cls=Write):
    """A request for ``data`` mapped on queue ``qid`` (not submitted)."""
    nbytes = sum(memoryview(d).nbytes if not hasattr(d, "view") else d.size for d in data)
    req = HostRequest(opcode_cls(nsid=1, slba=0, nlb=max(1, nbytes // BS) - 1), data)
    req.ctrl = ctrl
    queue = ctrl.admin_queue if qid == 0 else ctrl.io_queues[qid - 1]
    ctrl.transport.map_data(req, queue)
    return req


def in_pool(pool, addr):
    return any(page.addr <= addr < page.addr + PAGE for page in pool._pages)


def round_trip(ctrl, write_bufs, read_bufs, slba=0):
    nbytes = sum(memoryview(b.view if hasattr(b, "view") else b).nbytes for b in write_bufs)
    nlb = nbytes // BS - 1
    ctrl.execute(Write(nsid=1, slba=slba, nlb=nlb), write_bufs)
    ctrl.execute(Read(nsid=1, slba=slba, nlb=nlb), read_bufs)


def fill(view, seed):
    view[:] = pattern(view.nbytes, seed)
    return view


# ---------------------------------------------------------------------------
# rules


def test_prp_compatible():
    assert prp_compatible([(0x1000, 512)], PAGE)
    assert prp_compatible([(0x1200, 0xE00), (0x3000, 0x2000), (0x8000, 10)], PAGE)
    assert not prp_compatible([(0x1002, 512)], PAGE)  # PRP1 must be dword aligned
    assert not prp_compatible([(0x1000, 512), (0x3000, 512)], PAGE)  # a hole in the middle of a page
    assert not prp_compatible([(0x1000, 0x1000), (0x3200, 512)], PAGE)  # later segment not page aligned
    assert not prp_compatible([], PAGE)


def test_address_of_host_memory():
    mem = PhysicalMemory(1 << 20)
    try:
        buf = mem.allocate(8192)
        assert mem.address_of(buf.view) == buf.addr
        assert mem.address_of(buf.view[5:10]) == buf.addr + 5
        assert mem.address_of(memoryview(buf.view)[100:]) == buf.addr + 100
        assert mem.address_of(buf) == buf.addr
        assert mem.address_of(buf.view.toreadonly()) is None
        assert mem.address_of(memoryview(bytearray(10))) is None
        assert mem.address_of(buf.view[0:0]) is None
    finally:
        mem.close()


# ---------------------------------------------------------------------------
# PRPs


@pytest.fixture
def prp_ctrl(make_controller):
    """A controller whose transport never picks SGLs by size."""
    return make_controller(transport_options={"sgl_threshold": 0})


def test_prp_one_page(prp_ctrl):
    ctrl = prp_ctrl
    buf = ctrl.alloc_buffer(PAGE)
    req = mapped(ctrl, [buf.view[:512]])
    assert req.cmd.psdt == Psdt.PRP and req.cmd.prp1 == buf.addr and req.cmd.prp2 == 0
    assert described(ctrl.transport.memory, req, 512) == [(buf.addr, 512)]
    ctrl.transport.unmap_data(req)


def test_prp_exactly_two_pages(prp_ctrl):
    ctrl = prp_ctrl
    buf = ctrl.alloc_buffer(2 * PAGE)
    req = mapped(ctrl, [buf.view])
    assert (req.cmd.prp1, req.cmd.prp2) == (buf.addr, buf.addr + PAGE)
    ctrl.transport.unmap_data(req)
    # One page's worth from an offset also touches two pages.
    req = mapped(ctrl, [buf.view[512 : 512 + PAGE]])
    assert (req.cmd.prp1, req.cmd.prp2) == (buf.addr + 512, buf.addr + PAGE)
    assert described(ctrl.transport.memory, req, PAGE) == [(buf.addr + 512, PAGE)]
    ctrl.transport.unmap_data(req)


@pytest.mark.parametrize("threshold", [0, 4096])
@pytest.mark.parametrize("offset,length", [(0, 512), (0, PAGE), (512, PAGE), (PAGE - 4, 8), (0, 2 * PAGE),
                                           (4, 2 * PAGE - 4), (8, 2 * PAGE), (0, 3 * PAGE), (2, 512)])
def test_one_buffer_maps_as_the_general_mapping_does(make_controller, threshold, offset, length):
    """map_data's shortcut for one buffer (PRP1, PRP2 without a plan) gives
    the entry _map_data's general mapping gives: PSDT, PRP1, PRP2 or SGL,
    and a copy where the buffer is not dword aligned."""
    ctrl = make_controller(transport_options={"sgl_threshold": threshold})
    t = ctrl.transport
    buf = ctrl.alloc_buffer(4 * PAGE)
    buf.view[:] = bytes(range(256)) * (4 * PAGE // 256)
    view = buf.view[offset : offset + length]
    fast = mapped(ctrl, [view])
    general = HostRequest(Write(nsid=1, slba=0, nlb=max(1, length // BS) - 1), [view])
    general.ctrl = ctrl
    mapping = pci_mod._Mapping()
    general.cmd.psdt = Psdt.PRP
    t._map_data(general, ctrl.io_queues[0], [view], mapping)
    if offset % PAGE + length <= 2 * PAGE:
        assert bytes(fast.cmd.raw) == bytes(general.cmd.raw)
    else:  # both use a PRP list (each its own): PRP2 names different pages
        assert bytes(fast.cmd.raw[:32]) == bytes(general.cmd.raw[:32])
        assert bytes(fast.cmd.raw[40:]) == bytes(general.cmd.raw[40:])
    assert described(t.memory, fast, length) == described(t.memory, general, length)
    t.unmap_data(fast)
    general.mapping = mapping
    t.unmap_data(general)


def test_prp_list_from_the_small_pool(prp_ctrl):
    ctrl = prp_ctrl
    t = ctrl.transport
    buf = ctrl.alloc_buffer(16 * PAGE)
    req = mapped(ctrl, [buf.view])
    assert in_pool(t.small_pool, req.cmd.prp2)
    entries = PrpList(t.memory.view(req.cmd.prp2, 15 * 8)).read(0, 15)
    assert entries == [buf.addr + PAGE * i for i in range(1, 16)]
    assert described(t.memory, req, buf.size) == [(buf.addr, buf.size)]
    blocks = len(req.mapping.pool_blocks)
    t.unmap_data(req)
    assert blocks == 1 and req.mapping is None


def test_prp_list_from_the_page_pool(prp_ctrl):
    ctrl = prp_ctrl
    t = ctrl.transport
    buf = ctrl.alloc_buffer(64 * PAGE)  # 63 entries: more than 256 bytes of list
    req = mapped(ctrl, [buf.view])
    assert in_pool(t.page_pool, req.cmd.prp2) and req.cmd.prp2 % PAGE == 0
    assert described(t.memory, req, buf.size) == [(buf.addr, buf.size)]
    t.unmap_data(req)


def test_chained_prp_list(make_function, make_controller):
    ctrl = make_controller(make_function(controller_options={"mdts": 0}), transport_options={"sgl_threshold": 0})
    assert ctrl.max_transfer == 8 << 20  # no MDTS: the transport's cap
    t = ctrl.transport
    buf = ctrl.alloc_buffer(4 << 20)  # 1024 pages: 1023 entries over two list pages
    req = mapped(ctrl, [buf.view])
    first = PrpList(t.memory.view(req.cmd.prp2, PAGE)).read(0, 512)
    assert first[:511] == [buf.addr + PAGE * i for i in range(1, 512)]
    assert in_pool(t.page_pool, first[511])  # the last slot chains to the next list page
    assert described(t.memory, req, buf.size) == [(buf.addr, buf.size)]
    assert len(req.mapping.pool_blocks) == 2
    t.unmap_data(req)
    fill(buf.view, 77)
    back = ctrl.alloc_buffer(4 << 20)
    round_trip(ctrl, [buf], [back])
    assert bytes(back.view) == bytes(buf.view)


def test_prp_scatter_of_several_buffers(prp_ctrl):
    ctrl = prp_ctrl
    a, b, c = ctrl.alloc_buffer(PAGE), ctrl.alloc_buffer(2 * PAGE), ctrl.alloc_buffer(PAGE)
    views = [fill(a.view[1024:], 1), fill(b.view, 2), fill(c.view[:1024], 3)]
    req = mapped(ctrl, views)
    t = ctrl.transport
    assert req.cmd.psdt == Psdt.PRP and not req.mapping.bounced
    assert described(t.memory, req, 3072 + 2 * PAGE + 1024) == segments_of(t.memory, views)
    t.unmap_data(req)
    outs = [ctrl.alloc_buffer(PAGE).view[1024:], ctrl.alloc_buffer(2 * PAGE).view,
            ctrl.alloc_buffer(PAGE).view[:1024]]
    round_trip(ctrl, views, outs)
    assert b"".join(bytes(v) for v in outs) == b"".join(bytes(v) for v in views)


# ---------------------------------------------------------------------------
# SGLs


def test_sgl_by_threshold(ctrl):
    t = ctrl.transport
    buf = ctrl.alloc_buffer(64 * 1024)
    req = mapped(ctrl, [buf.view])  # one 64 KiB segment >= the 32 KiB threshold
    assert req.cmd.psdt == Psdt.SGL_MPTR_CONTIGUOUS
    assert req.cmd.sgl1.sgl_type == SglType.DATA_BLOCK
    assert (req.cmd.sgl1.address, req.cmd.sgl1.length) == (buf.addr, buf.size)
    t.unmap_data(req)
    small = ctrl.alloc_buffer(4 * PAGE)
    req = mapped(ctrl, [small.view])  # below the threshold: PRPs
    assert req.cmd.psdt == Psdt.PRP
    t.unmap_data(req)


def test_sgl_threshold_zero_turns_sgls_off(make_controller):
    ctrl = make_controller(transport_options={"sgl_threshold": 0})
    buf = ctrl.alloc_buffer(64 * 1024)
    req = mapped(ctrl, [buf.view])
    assert req.cmd.psdt == Psdt.PRP
    ctrl.transport.unmap_data(req)


def test_no_sgls_on_the_admin_queue(make_controller):
    ctrl = make_controller(transport_options={"sgl_threshold": 1})
    buf = ctrl.alloc_buffer(PAGE)
    req = ctrl.execute(Identify(cns=Cns.CTRL), buf, qid=0)
    assert req.cmd.psdt == Psdt.PRP and bytes(buf.view[4:12]) == b"HOST0001"


def test_sgl_for_a_scatter_list_prps_cannot_describe(ctrl):
    t = ctrl.transport
    a, b = ctrl.alloc_buffer(PAGE), ctrl.alloc_buffer(PAGE)
    views = [fill(a.view[:1024], 4), fill(b.view[512:2560], 5), fill(a.view[2048:3072], 6)]
    req = mapped(ctrl, views)
    assert req.cmd.psdt == Psdt.SGL_MPTR_CONTIGUOUS and not req.mapping.bounced
    assert req.cmd.sgl1.sgl_type == SglType.LAST_SEGMENT
    assert req.cmd.sgl1.length == 3 * 16 and in_pool(t.small_pool, req.cmd.sgl1.address)
    assert described(t.memory, req, 4096) == segments_of(t.memory, views)
    t.unmap_data(req)
    outs = [ctrl.alloc_buffer(PAGE).view[8:1032], ctrl.alloc_buffer(PAGE).view[100:2148],
            ctrl.alloc_buffer(PAGE).view[3072:]]
    round_trip(ctrl, views, outs, slba=64)
    assert b"".join(bytes(v) for v in outs) == b"".join(bytes(v) for v in views)


def test_chained_sgl_segments(ctrl):
    t = ctrl.transport
    big = ctrl.alloc_buffer(300 * 1024)
    views = [fill(big.view[1024 * i : 1024 * i + 512], i) for i in range(300)]  # 300 separate pieces
    req = mapped(ctrl, views)
    sgl1 = req.cmd.sgl1
    assert sgl1.sgl_type == SglType.SEGMENT and in_pool(t.page_pool, sgl1.address)
    assert len(req.mapping.pool_blocks) == 2
    assert described(t.memory, req, 300 * 512) == segments_of(t.memory, views)
    t.unmap_data(req)
    back_big = ctrl.alloc_buffer(300 * 1024)
    outs = [back_big.view[1024 * i + 512 : 1024 * i + 1024] for i in range(300)]
    round_trip(ctrl, views, outs, slba=1000)
    assert all(bytes(o) == bytes(v) for o, v in zip(outs, views))


def test_misaligned_buffers(make_function, make_controller):
    for sgl in (True, False):
        ctrl = make_controller(make_function(sgl=sgl))
        buf = ctrl.alloc_buffer(4 * PAGE)
        view = fill(buf.view[3 : 3 + 8 * BS], 9)  # not even dword aligned
        req = mapped(ctrl, [view])
        assert req.mapping.bounced == (not sgl)
        assert req.cmd.psdt == (Psdt.SGL_MPTR_CONTIGUOUS if sgl else Psdt.PRP)
        ctrl.transport.unmap_data(req)
        out = ctrl.alloc_buffer(4 * PAGE).view[1 : 1 + 8 * BS]
        round_trip(ctrl, [view], [out], slba=40)
        assert bytes(out) == bytes(view)
        ctrl.shutdown()


# ---------------------------------------------------------------------------
# bounce buffers


def test_plain_python_buffers_are_bounced(ctrl):
    t = ctrl.transport
    before = t.stats["bounce"]
    data = pattern(24 * BS, 21)
    parts = [bytearray(data[:5000]), memoryview(bytearray(data[5000:9000])), bytearray(data[9000:])]
    round_trip(ctrl, [bytes(data)], parts, slba=2000)
    assert b"".join(bytes(p) for p in parts) == data
    assert t.stats["bounce"] == before + 2
    # Bounce buffers are freed at completion.
    allocated = len(t.memory.allocated_ranges())
    round_trip(ctrl, [bytes(data)], parts, slba=2000)
    assert len(t.memory.allocated_ranges()) == allocated


def test_mixed_host_and_python_buffers_are_bounced_together(ctrl):
    dma = ctrl.alloc_buffer(PAGE)
    fill(dma.view, 31)
    plain = bytearray(pattern(PAGE, 32))
    out_dma, out_plain = ctrl.alloc_buffer(PAGE), bytearray(PAGE)
    round_trip(ctrl, [dma.view, plain], [out_dma.view, out_plain], slba=3000)
    assert bytes(out_dma.view) == bytes(dma.view) and out_plain == plain


def test_read_only_buffer_cannot_receive(ctrl):
    with pytest.raises(ValueError, match="read-only"):
        ctrl.submit(Read(nsid=1, slba=0, nlb=0), bytes(BS))


def test_bounced_write_is_retried_with_its_data(ctrl, host_subsystem):
    host_subsystem.faults.fail(GenericStatus.INTERNAL_ERROR, dnr=False, opcode=NvmOpcode.WRITE, count=1)
    data = pattern(8 * BS, 41)
    req = ctrl.execute(Write(nsid=1, slba=4000, nlb=7), data)
    assert req.retries == 1
    out = bytearray(8 * BS)
    ctrl.execute(Read(nsid=1, slba=4000, nlb=7), out)
    assert bytes(out) == data


# ---------------------------------------------------------------------------
# metadata


@pytest.fixture
def meta_ctrl(host_subsystem, make_controller):
    host_subsystem.add_namespace(Namespace(2, 1024, lba_format=1))  # 512 + 8 bytes, separate buffer
    ctrl = make_controller()
    assert ctrl.namespaces[2].metadata_size == 8 and not ctrl.namespaces[2].extended
    return ctrl


def test_metadata_bounced(meta_ctrl):
    ctrl = meta_ctrl
    data, meta = pattern(8 * BS, 51), pattern(8 * 8, 52)
    ctrl.execute(Write(nsid=2, slba=0, nlb=7), data, meta)
    out, out_meta = bytearray(8 * BS), bytearray(64)
    ctrl.execute(Read(nsid=2, slba=0, nlb=7), out, out_meta)
    assert bytes(out) == data and bytes(out_meta) == meta


def test_metadata_in_host_memory_is_mapped_directly(meta_ctrl):
    ctrl = meta_ctrl
    mbuf = ctrl.alloc_buffer(PAGE)
    meta = fill(mbuf.view[64:128], 53)
    data = ctrl.alloc_buffer(8 * BS)
    fill(data.view, 54)
    req = ctrl.execute(Write(nsid=2, slba=16, nlb=7), data, meta)
    assert req.cmd.mptr == mbuf.addr + 64
    out_meta = ctrl.alloc_buffer(PAGE).view[8:72]
    out = bytearray(8 * BS)
    req = ctrl.execute(Read(nsid=2, slba=16, nlb=7), out, out_meta)
    assert bytes(out_meta) == bytes(meta) and bytes(out) == bytes(data.view)
    odd = ctrl.alloc_buffer(PAGE).view[1:65]  # not dword aligned: bounced
    req = ctrl.execute(Read(nsid=2, slba=16, nlb=7), out, odd)
    assert bytes(odd) == bytes(meta) and req.cmd.mptr % 4 == 0


# ---------------------------------------------------------------------------
# interrupts and doorbells


def test_msix_enabled_and_vectors_unmasked(ctrl):
    fn = ctrl.transport.function
    assert fn.config.msix_enabled and not fn.config.msix_function_mask
    for queue in [ctrl.admin_queue, *ctrl.io_queues]:
        assert not fn.interrupts.msix_vector_masked(queue.vector)


def test_one_doorbell_per_batch_each_way(make_function, make_controller):
    fn = make_function(mode="inline")
    ctrl = make_controller(fn, io_queues=1, poll_queues=1)
    qid = ctrl.io_queues[1].qid
    writes = []
    original = fn.mmio_write

    def counting(offset, size, value):
        writes.append(offset)
        original(offset, size, value)

    fn.mmio_write = counting
    try:
        with ctrl.plug():
            reqs = [ctrl.submit(Write(nsid=1, slba=8 * i, nlb=7), pattern(8 * BS, i), polled=True)
                    for i in range(10)]
        # The inline device ran all ten at the one doorbell; nothing polled yet.
        assert writes.count(sq_tail_doorbell(qid)) == 1
        assert not any(r.done for r in reqs)
        assert ctrl.poll(qid) == 10
        assert writes.count(cq_head_doorbell(qid)) == 1
        assert all(r.ok for r in reqs)
    finally:
        fn.mmio_write = original


def test_small_pool_is_the_linux_size():
    assert SMALL_POOL_SIZE == 256


def test_io_queues_share_vectors_when_msix_has_few(make_function, make_controller):
    ctrl = make_controller(make_function(msix_vectors=2), io_queues=3)
    assert ctrl.transport.msix_vectors == 2
    assert [q.vector for q in ctrl.io_queues] == [1, 1, 1]
    for qid in (1, 2, 3):
        data = pattern(2 * BS, qid)
        ctrl.execute(Write(nsid=1, slba=8 * qid, nlb=1), data, qid=qid)
        out = bytearray(2 * BS)
        ctrl.execute(Read(nsid=1, slba=8 * qid, nlb=1), out, qid=qid)
        assert bytes(out) == data
