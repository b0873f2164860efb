"""The host memory model: allocation, physical addresses, checked access, pools."""

import pytest

from nvmestack.memory import PAGE_SIZE, DmaError, DmaPool, PhysicalMemory


@pytest.fixture
def mem():
    m = PhysicalMemory(1 << 20)
    yield m
    m.close()


def test_allocations_are_aligned_disjoint_and_zeroed(mem):
    a = mem.allocate(100)
    b = mem.allocate(5000)
    c = mem.allocate(64, align=64)
    assert a.addr % PAGE_SIZE == 0 and b.addr % PAGE_SIZE == 0 and c.addr % 64 == 0
    spans = sorted((x.addr, x.addr + x.size) for x in (a, b, c))
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(2))
    assert a.addr >= mem.base and bytes(b.view) == bytes(5000)


def test_access_by_physical_address_shares_memory(mem):
    buf = mem.allocate(PAGE_SIZE)
    mem.write(buf.addr + 10, b"hello")
    assert bytes(buf.view[10:15]) == b"hello"
    buf.view[0:2] = b"hi"
    assert mem.read(buf.addr, 2) == b"hi"
    mem.write_u64(buf.addr + 64, 0x1122334455667788)
    assert mem.read_u64(buf.addr + 64) == 0x1122334455667788


def test_unmapped_and_out_of_buffer_accesses_are_errors(mem):
    buf = mem.allocate(PAGE_SIZE)
    with pytest.raises(DmaError):
        mem.view(buf.addr + PAGE_SIZE - 4, 8)  # runs past the buffer
    with pytest.raises(DmaError):
        mem.view(buf.addr + 2 * PAGE_SIZE, 4)  # never allocated
    with pytest.raises(DmaError):
        mem.view(0x1000, 4)  # below the base
    with pytest.raises(DmaError):
        mem.view(mem.base + mem.size, 1)
    mem.free(buf)
    with pytest.raises(DmaError):
        mem.view(buf.addr, 4)  # freed


def test_free_merges_and_memory_can_be_reused(mem):
    bufs = [mem.allocate(PAGE_SIZE) for _ in range(256)]  # the whole 1 MiB
    with pytest.raises(MemoryError):
        mem.allocate(PAGE_SIZE)
    for b in bufs:
        mem.free(b)
    big = mem.allocate(1 << 20)
    assert big.addr == mem.base
    with pytest.raises(ValueError):
        mem.free(bufs[3])


def test_pool_blocks(mem):
    pool = DmaPool(mem, 256)
    blocks = [pool.alloc() for _ in range(17)]  # 16 per page: two pages
    addrs = {b.addr for b in blocks}
    assert len(addrs) == 17 and all(a % 256 == 0 for a in addrs)
    pool.free(blocks[0])
    assert pool.alloc().addr == blocks[0].addr
    pool.destroy()


def test_shared_arena_between_mappings(tmp_path):
    path = str(tmp_path / "hostmem")
    host = PhysicalMemory(1 << 20, path=path)
    buf = host.allocate(PAGE_SIZE)
    device = PhysicalMemory.attach(path, 1 << 20, ranges=host.allocated_ranges())
    host.write(buf.addr, b"shared!")
    assert device.read(buf.addr, 7) == b"shared!"
    with pytest.raises(DmaError):
        device.view(buf.addr + PAGE_SIZE, 1)
    device.close()
    host.close()


def test_scatter_lists():
    from nvmestack.memory import sg_gather, sg_scatter, sg_slice

    a, b, c = bytearray(3), bytearray(5), bytearray(2)
    bufs = [memoryview(a), memoryview(b), memoryview(c)]
    sg_scatter(bufs, memoryview(b"0123456789"))
    assert (bytes(a), bytes(b), bytes(c)) == (b"012", b"34567", b"89")
    out = bytearray(6)
    sg_gather(bufs, memoryview(out), 2)
    assert out == b"234567"
    assert [bytes(v) for v in sg_slice(bufs, 2, 3)] == [b"2", b"34"]
    with pytest.raises(ValueError):
        sg_scatter(bufs, memoryview(b"xyz"), 8)  # runs past the end: nothing silently dropped
