"""Host memory: a physical address space with DMA-able buffers.

The model shared by the host driver (which allocates queues, PRP lists and
data buffers and hands their physical addresses to the device) and the PCIe
function (which reads and writes host memory by physical address, as bus
master DMA does).

All host memory lives in one arena (an ``mmap``) mapped at a physical base
address; a buffer is a range of the arena.  Accesses go through
:meth:`PhysicalMemory.view`, which checks that the whole range lies inside
one allocated buffer and returns a memoryview of it (no copy): a device
never reaches memory the host did not allocate, and an access outside is
a :class:`DmaError` (the device turns it into a Data Transfer Error).

The arena is anonymous memory for one process, or a file (for example in
``/dev/shm``) that a device in another process maps too
(:meth:`PhysicalMemory.attach`); allocation is done by the side that
created it.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
import os
import threading
from dataclasses import dataclass

__all__ = [
    "DmaError", "DmaBuffer", "PhysicalMemory", "DmaPool", "PAGE_SIZE",
    "sg_slice", "sg_scatter", "sg_gather",
]

PAGE_SIZE = 4096
DEFAULT_BASE = 0x1_0000_0000  # host memory above 4 GiB, so 64-bit addresses are exercised


class DmaError(Exception):
    """An access to host memory that is not allocated (unmapped), or that
    runs past the end of the buffer it starts in."""


@dataclass(frozen=True)
class DmaBuffer:
    """A DMA-able buffer: its physical address and a view of its bytes."""

    addr: int
    size: int
    view: memoryview

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item):
        return self.view[item]

    def __setitem__(self, item, value) -> None:
        self.view[item] = value


class PhysicalMemory:
    """A physical address space of ``size`` bytes at ``base``.

    ``allocate(size, align)`` hands out buffers (page aligned by default);
    ``free(buf)`` returns them.  ``view(addr, length)`` is the device's (and
    the driver's) access path.
    """

    def __init__(self, size: int = 256 << 20, *, base: int = DEFAULT_BASE, path: str | None = None,
                 _create: bool = True):
        if size <= 0 or size % PAGE_SIZE or base % PAGE_SIZE:
            raise ValueError("memory size and base must be positive multiples of 4 KiB")
        self.size = size
        self.base = base
        self.path = path
        if path is None:
            self._map = mmap.mmap(-1, size)
        else:
            flags = os.O_RDWR | (os.O_CREAT if _create else 0)
            fd = os.open(path, flags, 0o600)
            try:
                if _create:
                    os.ftruncate(fd, size)
                self._map = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        self._mv = memoryview(self._map)
        self._lock = threading.Lock()
        # Allocated ranges, sorted by start offset: starts[i] -> ends[i].
        self._starts: list[int] = []
        self._ends: list[int] = []
        # Free list as sorted (offset, size) pairs.
        self._free: list[tuple[int, int]] = [(0, size)]
        self.owner = _create
        # Whether accesses must fall inside allocated buffers (True where
        # the allocations are known: in the process that allocates).
        self.check_ranges = True
        # Process address of the arena's first byte (address_of), found on first use.
        self._host_base: int | None = None

    @classmethod
    def attach(cls, path: str, size: int, *, base: int = DEFAULT_BASE,
               ranges: list[tuple[int, int]] | None = None) -> "PhysicalMemory":
        """Map an arena another process created.  ``ranges`` are its
        allocated (addr, size) pairs, which make accesses valid here; the
        creator exports them with :meth:`allocated_ranges` (or the device
        runs with :attr:`check_ranges` off and relies on arena bounds)."""
        mem = cls(size, base=base, path=path, _create=False)
        mem._free = []
        mem.check_ranges = ranges is not None
        for addr, length in ranges or ():
            mem._mark(addr - base, length)
        return mem

    # -- allocation -----------------------------------------------------------

    def allocate(self, size: int, align: int = PAGE_SIZE, *, zero: bool = True) -> DmaBuffer:
        if size <= 0:
            raise ValueError("allocation size must be positive")
        if align <= 0 or align & (align - 1):
            raise ValueError("alignment must be a power of two")
        with self._lock:
            for i, (off, length) in enumerate(self._free):
                start = (off + align - 1) & ~(align - 1)
                if start + size <= off + length:
                    del self._free[i]
                    if start > off:
                        self._free.insert(i, (off, start - off))
                        i += 1
                    if start + size < off + length:
                        self._free.insert(i, (start + size, off + length - start - size))
                    self._mark(start, size)
                    break
            else:
                raise MemoryError(f"no {size} bytes (aligned to {align}) free in host memory")
        view = self._mv[start : start + size]
        if zero:
            view[:] = bytes(size)
        return DmaBuffer(self.base + start, size, view)

    def _mark(self, off: int, size: int) -> None:
        i = bisect.bisect_left(self._starts, off)
        self._starts.insert(i, off)
        self._ends.insert(i, off + size)

    def free(self, buf: DmaBuffer) -> None:
        off = buf.addr - self.base
        with self._lock:
            i = bisect.bisect_left(self._starts, off)
            if i == len(self._starts) or self._starts[i] != off:
                raise ValueError(f"{buf.addr:#x} is not an allocated buffer")
            end = self._ends[i]
            del self._starts[i], self._ends[i]
            self._release(off, end - off)

    def _release(self, off: int, size: int) -> None:
        free = self._free
        i = bisect.bisect_left(free, (off, 0))
        free.insert(i, (off, size))
        # Merge with neighbours.
        if i + 1 < len(free) and free[i][0] + free[i][1] == free[i + 1][0]:
            free[i] = (free[i][0], free[i][1] + free[i + 1][1])
            del free[i + 1]
        if i > 0 and free[i - 1][0] + free[i - 1][1] == free[i][0]:
            free[i - 1] = (free[i - 1][0], free[i - 1][1] + free[i][1])
            del free[i]

    def allocated_ranges(self) -> list[tuple[int, int]]:
        with self._lock:
            return [(self.base + s, e - s) for s, e in zip(self._starts, self._ends)]

    # -- access -------------------------------------------------------------------

    def view(self, addr: int, length: int) -> memoryview:
        """A view of ``length`` bytes at physical ``addr``, which must lie
        inside one allocated buffer."""
        off = addr - self.base
        if length < 0 or off < 0 or off + length > self.size:
            raise DmaError(f"host memory access {addr:#x}+{length:#x} is outside host memory")
        if not self.check_ranges:
            return self._mv[off : off + length]
        with self._lock:
            i = bisect.bisect_right(self._starts, off) - 1
            if i < 0 or off + length > self._ends[i] or (length == 0 and off >= self._ends[i]):
                raise DmaError(f"host memory access {addr:#x}+{length:#x} is not inside an allocated buffer")
        return self._mv[off : off + length]

    def address_of(self, view) -> int | None:
        """The physical address of a writable view into this memory (a
        DmaBuffer's ``view`` or a slice of it), or None when the view is of
        other memory (or read-only, or empty): what a driver needs to map a
        caller's buffer without copying it."""
        mv = view if isinstance(view, memoryview) else getattr(view, "view", None)
        if not isinstance(mv, memoryview) or mv.obj is not self._map:
            return None
        if mv.readonly or not mv.contiguous or mv.nbytes == 0:
            return None
        if self._host_base is None:
            self._host_base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        offset = ctypes.addressof(ctypes.c_char.from_buffer(mv)) - self._host_base
        if not 0 <= offset <= self.size - mv.nbytes:  # pragma: no cover - a view of the arena
            return None
        return self.base + offset

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.view(addr, length))

    def write(self, addr: int, data) -> None:
        data = memoryview(data).cast("B")
        self.view(addr, data.nbytes)[:] = data

    def read_u64(self, addr: int) -> int:
        return int.from_bytes(self.view(addr, 8), "little")

    def write_u64(self, addr: int, value: int) -> None:
        self.view(addr, 8)[:] = value.to_bytes(8, "little")

    def close(self) -> None:
        """Unmap the arena; while views of it are still alive the mapping
        stays until they go."""
        try:
            self._mv.release()
            self._map.close()
        except BufferError:
            pass


class DmaPool:
    """Fixed-size blocks carved from pages, like the kernel's dma_pool (the
    Linux driver keeps a 256-byte pool for small PRP lists and a page pool
    for large ones)."""

    def __init__(self, memory: PhysicalMemory, block_size: int, align: int | None = None):
        if block_size <= 0 or block_size > PAGE_SIZE:
            raise ValueError("pool blocks are between 1 byte and a page")
        self.memory = memory
        self.block_size = block_size
        self.align = align or block_size
        self.stride = (block_size + self.align - 1) // self.align * self.align
        self._free: list[DmaBuffer] = []
        self._pages: list[DmaBuffer] = []
        self._lock = threading.Lock()

    def alloc(self) -> DmaBuffer:
        with self._lock:
            if not self._free:
                page = self.memory.allocate(PAGE_SIZE)
                self._pages.append(page)
                for off in range(0, PAGE_SIZE - self.block_size + 1, self.stride):
                    self._free.append(DmaBuffer(page.addr + off, self.block_size,
                                                page.view[off : off + self.block_size]))
            return self._free.pop()

    def free(self, buf: DmaBuffer) -> None:
        with self._lock:
            self._free.append(buf)

    def destroy(self) -> None:
        with self._lock:
            for page in self._pages:
                self.memory.free(page)
            self._pages.clear()
            self._free.clear()


# Scatter lists: a list of memoryviews taken as one run of bytes (a command's
# data as the host's buffers or the device's DMA views describe it).


def sg_slice(bufs, offset: int, length: int) -> list[memoryview]:
    """Bytes ``offset``..``offset+length`` of a scatter list, as views;
    ValueError when the range runs past its end."""
    out = []
    for buf in bufs:
        n = buf.nbytes
        if offset >= n:
            offset -= n
            continue
        take = min(n - offset, length)
        out.append(buf.cast("B")[offset : offset + take])
        length -= take
        offset = 0
        if not length:
            break
    if length:
        raise ValueError("range beyond the scatter list")
    return out


def sg_scatter(bufs, src: memoryview, offset: int = 0) -> None:
    """Copy ``src`` into a scatter list from byte ``offset``."""
    pos = 0
    for view in sg_slice(bufs, offset, src.nbytes):
        view[:] = src[pos : pos + view.nbytes]
        pos += view.nbytes


def sg_gather(bufs, dst: memoryview, offset: int = 0) -> None:
    """Fill ``dst`` from a scatter list, starting at byte ``offset``."""
    pos = 0
    for view in sg_slice(bufs, offset, dst.nbytes):
        dst[pos : pos + view.nbytes] = view
        pos += view.nbytes
