"""Backends: scatter/gather I/O, sparseness, deallocation, persistence."""

import os

import pytest

from nvmestack.target.backend import FileBackend, MemoryBackend


@pytest.fixture(params=["memory", "file"])
def backend(request, tmp_path):
    size = 1 << 20
    if request.param == "memory":
        b = MemoryBackend(size)
    else:
        b = FileBackend(tmp_path / "ns1.img", size)
    yield b
    b.close()


def test_scatter_gather_round_trip(backend):
    a, b = bytearray(b"A" * 1000), bytearray(b"B" * 3096)
    backend.write(70_000, [memoryview(a), memoryview(b)])  # crosses a 64 KiB chunk
    x, y = bytearray(3000), bytearray(1096)
    backend.readinto(70_000, [memoryview(x), memoryview(y)])
    assert bytes(x + y) == bytes(a + b)


def test_unwritten_reads_zero_and_bounds(backend):
    assert backend.read_bytes(12345, 100) == bytes(100)
    with pytest.raises(ValueError):
        backend.write_bytes(backend.size - 1, b"xy")
    with pytest.raises(ValueError):
        backend.read_bytes(-1, 1)


def test_deallocate_reads_zero_and_frees(backend):
    backend.write_bytes(0, b"\xff" * (256 * 1024))
    before = backend.allocated()
    backend.deallocate(64 * 1024, 128 * 1024)
    assert backend.read_bytes(64 * 1024, 128 * 1024) == bytes(128 * 1024)
    assert backend.read_bytes(0, 64 * 1024) == b"\xff" * (64 * 1024)
    assert backend.read_bytes(192 * 1024, 64 * 1024) == b"\xff" * (64 * 1024)
    assert backend.allocated() < before
    # A partial deallocation zeroes exactly the range.
    backend.deallocate(10, 5)
    assert backend.read_bytes(8, 9) == b"\xff\xff" + bytes(5) + b"\xff\xff"


def test_file_backend_is_sparse_and_persistent(tmp_path):
    path = tmp_path / "disk.img"
    b = FileBackend(path, 1 << 30)
    assert os.stat(path).st_size == 1 << 30
    assert os.stat(path).st_blocks * 512 < (1 << 20)  # sparse
    b.write_bytes(4096, b"hello")
    b.flush()
    b.close()
    again = FileBackend(path)
    assert again.size == 1 << 30
    assert again.read_bytes(4096, 5) == b"hello"
    again.close()


def test_memory_backend_resize_drops_tail():
    b = MemoryBackend(200_000)
    b.write_bytes(150_000, b"x" * 100)
    b.resize(150_050)
    b.resize(200_000)
    assert b.read_bytes(150_000, 100) == b"x" * 50 + bytes(50)


def test_file_backend_close_waits_for_operations_in_flight(tmp_path):
    """A namespace removed while another connection uses it: close() waits
    for the operation in flight, later ones fail cleanly (never a closed,
    maybe reused, descriptor)."""
    import threading

    from nvmestack.target.backend import BackendError, FileBackend

    be = FileBackend(tmp_path / "ns.data", 1 << 20)
    started, release = threading.Event(), threading.Event()
    real = be._write

    def slow_write(offset, bufs):
        started.set()
        release.wait(5)
        real(offset, bufs)

    be._write = slow_write
    writer = threading.Thread(target=be.write, args=(0, [memoryview(b"a" * 512)]))
    writer.start()
    assert started.wait(5)
    closer = threading.Thread(target=be.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # still waiting for the write
    release.set()
    writer.join(5)
    closer.join(5)
    assert not closer.is_alive()
    assert (tmp_path / "ns.data").read_bytes()[:512] == b"a" * 512
    with pytest.raises(BackendError):
        be.readinto(0, [memoryview(bytearray(512))])
