"""Storage behind a namespace: a flat array of bytes with scatter/gather I/O.

A backend knows nothing of blocks, formats or metadata; the namespace maps
logical blocks (and their metadata) to byte ranges of one or two backends.
Reads and writes take lists of buffers (the transport's scatter list: views
of host memory for the PCIe function, a socket buffer for NVMe/TCP) and move
the bytes straight between them and the storage, with no intermediate copy.

- :class:`MemoryBackend`: sparse, in memory, for tests and scratch devices.
- :class:`FileBackend`: a sparse file, persistent; ``os.preadv``/``os.pwritev``
  into and out of the caller's buffers; deallocation punches holes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from typing import Any, Iterable, Sequence

__all__ = ["Backend", "MemoryBackend", "FileBackend", "BackendError"]

Buffers = Sequence[memoryview]


class BackendError(OSError):
    """The storage failed (I/O error, no space): the device reports a media
    or internal error, never a crash."""


def _lengths(bufs: Iterable[memoryview]) -> int:
    return sum(b.nbytes for b in bufs)


class Backend:
    """Interface of a namespace's storage.  ``size`` is in bytes."""

    size: int

    def readinto(self, offset: int, bufs: Buffers) -> None:
        """Fill ``bufs`` (in order) from ``offset``."""
        raise NotImplementedError

    def write(self, offset: int, bufs: Buffers) -> None:
        """Store ``bufs`` (in order) at ``offset``."""
        raise NotImplementedError

    def deallocate(self, offset: int, length: int) -> None:
        """Forget ``length`` bytes at ``offset``: they read back as zeroes
        and no longer count as allocated."""
        raise NotImplementedError

    # The I/O fast path (fastpath.py): one contiguous range, one buffer.
    def pread(self, offset: int, length: int) -> bytes | bytearray:
        """``length`` bytes from ``offset`` in a new buffer."""
        buf = bytearray(length)
        self.readinto(offset, [memoryview(buf)])
        return buf

    def pwrite(self, offset: int, data: memoryview) -> None:
        """Store ``data`` (one buffer) at ``offset``."""
        self.write(offset, [data])

    def write_zeroes(self, offset: int, length: int) -> None:
        """Zero ``length`` bytes at ``offset`` (they stay allocated where the
        backend can tell the difference)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make every completed write durable."""

    def allocated(self) -> int:
        """Bytes currently backed by storage (for NUSE and thin provisioning)."""
        raise NotImplementedError

    def resize(self, size: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"bytes {offset}..{offset + length} outside a backend of {self.size}")

    # Conveniences for tests and for small internal structures.
    def read_bytes(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        self.readinto(offset, [memoryview(buf)])
        return bytes(buf)

    def write_bytes(self, offset: int, data: bytes) -> None:
        self.write(offset, [memoryview(data)])


class FileSlice:
    """``count`` bytes of a file backend from ``offset``, to be sent to a
    socket by the kernel (``sendfile``) instead of read into a buffer.  It
    holds the backend open (as an operation in flight) until it is sent or
    released; ``len()`` is what is left to send."""

    __slots__ = ("backend", "fd", "offset", "count")

    def __init__(self, backend: "FileBackend", fd: int, offset: int, count: int):
        self.backend = backend
        self.fd = fd
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count

    def send(self, sock: Any) -> None:
        """Send what the socket takes now (raises BlockingIOError when it
        takes nothing); released once all is sent."""
        while self.count:
            n = os.sendfile(sock.fileno(), self.fd, self.offset, self.count)
            if n == 0:  # the file ends early (shorter than the namespace): zeroes
                sent = sock.send(bytes(min(self.count, 1 << 16)))
                n = sent
            self.offset += n
            self.count -= n
        self.release()

    def read(self) -> bytes:
        """The bytes themselves (for a path that needs them); released."""
        try:
            data = os.pread(self.fd, self.count, self.offset)
            return data + bytes(self.count - len(data))
        finally:
            self.count = 0
            self.release()

    def release(self) -> None:
        backend, self.backend = self.backend, None
        if backend is not None:
            backend._leave()


def shared_memory_backend(size: int, name: str = "nvmestack") -> "FileBackend":
    """Sparse memory a worker process can share (workers.py): a
    :class:`FileBackend` over an anonymous memory file (``memfd_create``);
    it is gone when the last descriptor of it closes."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
    except OSError:
        os.close(fd)
        raise
    return FileBackend.adopt(fd, size, f"/proc/self/fd/{fd}")


class MemoryBackend(Backend):
    """Sparse memory: chunks are allocated on first write and freed when a
    deallocation covers them whole."""

    CHUNK = 64 * 1024

    def __init__(self, size: int):
        self.size = size
        self._chunks: dict[int, bytearray] = {}
        self._lock = threading.Lock()

    def _pieces(self, offset: int, length: int):
        """(chunk index, offset in chunk, length) covering the range."""
        while length > 0:
            index, within = divmod(offset, self.CHUNK)
            n = min(length, self.CHUNK - within)
            yield index, within, n
            offset += n
            length -= n

    def _move(self, offset: int, bufs: Buffers, store: bool) -> None:
        """Copy between the chunks and ``bufs``: into the chunks when
        ``store`` (allocating them), out of them otherwise (zeroes where
        none was allocated)."""
        self._check(offset, _lengths(bufs))
        with self._lock:
            for buf in bufs:
                buf = buf.cast("B") if buf.format != "B" else buf
                pos = 0
                for index, within, n in self._pieces(offset, buf.nbytes):
                    chunk = self._chunks.get(index)
                    if store:
                        if chunk is None:
                            chunk = self._chunks[index] = bytearray(self.CHUNK)
                        chunk[within : within + n] = buf[pos : pos + n]
                    elif chunk is None:
                        buf[pos : pos + n] = bytes(n)
                    else:
                        buf[pos : pos + n] = chunk[within : within + n]
                    pos += n
                offset += buf.nbytes

    def readinto(self, offset: int, bufs: Buffers) -> None:
        self._move(offset, bufs, store=False)

    def write(self, offset: int, bufs: Buffers) -> None:
        self._move(offset, bufs, store=True)

    def deallocate(self, offset: int, length: int) -> None:
        self._check(offset, length)
        with self._lock:
            for index, within, n in self._pieces(offset, length):
                if n == self.CHUNK:
                    self._chunks.pop(index, None)
                elif index in self._chunks:
                    self._chunks[index][within : within + n] = bytes(n)

    def write_zeroes(self, offset: int, length: int) -> None:
        self.deallocate(offset, length)

    def allocated(self) -> int:
        return len(self._chunks) * self.CHUNK

    def resize(self, size: int) -> None:
        with self._lock:
            if size < self.size:
                last = (size + self.CHUNK - 1) // self.CHUNK
                for index in [i for i in self._chunks if i >= last]:
                    del self._chunks[index]
                if size % self.CHUNK and (size // self.CHUNK) in self._chunks:
                    within = size % self.CHUNK
                    self._chunks[size // self.CHUNK][within:] = bytes(self.CHUNK - within)
            self.size = size


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = None


def _fallocate():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return _libc.fallocate


class FileBackend(Backend):
    """A sparse file.  Created (sparse, mode 0600) at ``size`` when missing; an
    existing file keeps its contents.  ``sync=True`` opens it O_DSYNC so
    every write is durable when it returns (volatile write cache off)."""

    def __init__(self, path: str | os.PathLike, size: int | None = None, *, sync: bool = False):
        self.path = os.fspath(path)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.path, flags, 0o600)  # a namespace's data is nobody else's
        self._sync_fd = os.open(self.path, os.O_RDWR | os.O_DSYNC | getattr(os, "O_CLOEXEC", 0)) if sync else None
        current = os.fstat(self._fd).st_size
        if size is None:
            size = current
        elif current != size:
            os.ftruncate(self._fd, size)
        self.size = size
        # Operations in flight: close() waits for them, so a namespace removed
        # while another connection still reads or writes it never has a
        # descriptor closed (and maybe reused for another file) under it.
        self._users = 0
        self._closing = False
        self._idle = threading.Condition(threading.Lock())

    @classmethod
    def adopt(cls, fd: int, size: int, path: str = "") -> "FileBackend":
        """A backend over an open descriptor (a worker process's copy of a
        namespace's file, workers.py); close() closes it."""
        self = cls.__new__(cls)
        self.path = path
        self._fd = fd
        self._sync_fd = None
        self.size = size
        self._users = 0
        self._closing = False
        self._idle = threading.Condition(threading.Lock())
        return self

    def _enter(self) -> None:
        with self._idle:
            if self._closing:
                raise BackendError(errno.EBADF, f"{self.path}: the namespace was closed")
            self._users += 1

    def _leave(self) -> None:
        with self._idle:
            self._users -= 1
            if not self._users and self._closing:
                self._idle.notify_all()

    def set_sync(self, sync: bool) -> None:
        """Switch write-through (O_DSYNC) on or off."""
        if sync and self._sync_fd is None:
            self._sync_fd = os.open(self.path, os.O_RDWR | os.O_DSYNC | getattr(os, "O_CLOEXEC", 0))
        elif not sync and self._sync_fd is not None:
            os.close(self._sync_fd)
            self._sync_fd = None

    def readinto(self, offset: int, bufs: Buffers) -> None:
        self._enter()
        try:
            self._readinto(offset, bufs)
        finally:
            self._leave()

    def _readinto(self, offset: int, bufs: Buffers) -> None:
        total = _lengths(bufs)
        self._check(offset, total)
        bufs = list(bufs)
        while bufs:
            try:
                n = os.preadv(self._fd, bufs, offset)
            except OSError as exc:
                raise BackendError(exc.errno, f"read of {self.path} at {offset}: {exc.strerror}") from exc
            if n == 0:  # beyond the end of a file shorter than size: zeroes
                for buf in bufs:
                    buf.cast("B")[:] = bytes(buf.nbytes)
                return
            offset += n
            bufs = _advance(bufs, n)

    def write(self, offset: int, bufs: Buffers) -> None:
        self._enter()
        try:
            self._write(offset, bufs)
        finally:
            self._leave()

    def pread(self, offset: int, length: int) -> bytes:
        # One pread(2) into a new bytes object: no zeroed buffer, no iovec.
        self._enter()
        try:
            self._check(offset, length)
            try:
                data = os.pread(self._fd, length, offset)
                while len(data) < length:
                    more = os.pread(self._fd, length - len(data), offset + len(data))
                    if not more:  # beyond the end of a file shorter than size: zeroes
                        return data + bytes(length - len(data))
                    data += more
            except OSError as exc:
                raise BackendError(exc.errno, f"read of {self.path} at {offset}: {exc.strerror}") from exc
            return data
        finally:
            self._leave()

    def file_slice(self, offset: int, length: int) -> FileSlice:
        """``length`` bytes from ``offset`` for ``sendfile`` (see FileSlice)."""
        self._enter()
        try:
            self._check(offset, length)
        except ValueError:
            self._leave()
            raise
        return FileSlice(self, self._fd, offset, length)

    def pwrite(self, offset: int, data: memoryview) -> None:
        self._enter()
        try:
            length = data.nbytes
            self._check(offset, length)
            fd = self._sync_fd if self._sync_fd is not None else self._fd
            try:
                n = os.pwrite(fd, data, offset)
                while n < length:
                    n += os.pwrite(fd, data[n:], offset + n)
            except OSError as exc:
                raise BackendError(exc.errno, f"write of {self.path} at {offset}: {exc.strerror}") from exc
        finally:
            self._leave()

    def _write(self, offset: int, bufs: Buffers) -> None:
        total = _lengths(bufs)
        self._check(offset, total)
        fd = self._sync_fd if self._sync_fd is not None else self._fd
        bufs = list(bufs)
        while bufs:
            try:
                n = os.pwritev(fd, bufs, offset)
            except OSError as exc:
                raise BackendError(exc.errno, f"write of {self.path} at {offset}: {exc.strerror}") from exc
            offset += n
            bufs = _advance(bufs, n)

    def deallocate(self, offset: int, length: int) -> None:
        self._enter()
        try:
            self._deallocate(offset, length)
        finally:
            self._leave()

    def _deallocate(self, offset: int, length: int) -> None:
        self._check(offset, length)
        if length == 0:
            return
        rc = _fallocate()(self._fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)
        if rc != 0:
            err = ctypes.get_errno()
            if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise BackendError(err, f"punching a hole in {self.path}: {os.strerror(err)}")
            self._write_zero_range(offset, length)
        if self._sync_fd is not None:
            os.fdatasync(self._fd)

    def write_zeroes(self, offset: int, length: int) -> None:
        self.deallocate(offset, length)

    def _write_zero_range(self, offset: int, length: int) -> None:
        zeros = memoryview(bytes(min(length, 1 << 20)))
        while length:
            n = min(length, zeros.nbytes)
            self._write(offset, [zeros[:n]])
            offset += n
            length -= n

    def flush(self) -> None:
        self._enter()
        try:
            self._flush()
        finally:
            self._leave()

    def _flush(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise BackendError(exc.errno, f"flush of {self.path}: {exc.strerror}") from exc

    def allocated(self) -> int:
        return os.fstat(self._fd).st_blocks * 512

    def resize(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self.size = size

    def close(self) -> None:
        with self._idle:
            self._closing = True
            while self._users:
                self._idle.wait()
        for fd in (self._sync_fd, self._fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._sync_fd = None
        self._fd = -1


def _advance(bufs: list[memoryview], n: int) -> list[memoryview]:
    """Drop the first ``n`` bytes of a scatter list (after a short read/write)."""
    out = []
    for buf in bufs:
        if n >= buf.nbytes:
            n -= buf.nbytes
            continue
        out.append(buf.cast("B")[n:] if n else buf)
        n = 0
    return out
