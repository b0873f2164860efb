"""A vfio-user server for the PCIe function: a VM's own kernel drives it.

QEMU's ``-device vfio-user-pci`` (10.1 and newer) puts a PCI function into
the guest whose configuration space, BARs, DMA and interrupts are served by
another process over a UNIX socket.  This module is that process's side for
:class:`~nvmestack.target.pci.PciFunction`, so the guest's ``nvme`` driver
(Linux drivers/nvme/host/pci.c, SeaBIOS's nvme.c) probes and drives our
controller.  Wire format: :mod:`nvmestack.spec.vfio_user`.

Three pieces:

:class:`DmaWindows`
    Guest memory as the client maps it (DMA_MAP/DMA_UNMAP): windows that
    arrive with a file descriptor (guest RAM from a ``share=on`` memfd
    backend) are ``mmap``-ed; windows without one (ROM, firmware) are
    reached through DMA_READ/DMA_WRITE messages to the client.  The PCIe
    function uses it as it uses :class:`~nvmestack.memory.PhysicalMemory`
    (``view``, ``read``, ``write``); an access outside every window is a
    :class:`~nvmestack.memory.DmaError` (the command ends with Data Transfer
    Error).  A removed window is gone from the lookup before the unmap is
    answered, so no access *starts* in it afterwards, and the unmap waits
    for the command the device is running (the queues' gate) to end, so
    none that took its views before is still moving data; only a command a
    fault injection delays on purpose may outlive it (its views keep the
    mmap alive, never another window).

:class:`VfioUserDevice` (sans-I/O)
    ``handle(message, fds)`` takes one whole message and the descriptors
    that came with it and returns the reply's bytes, or None for a posted
    message (flag NO_REPLY: BAR writes; answering one stalls QEMU) and for
    replies to our own DMA_READ/DMA_WRITE.  A bad message -- short or
    inconsistent sizes, unknown commands, out-of-range indexes -- gets the
    error reply (header only, ERROR flag, errno); nothing a client sends
    raises out of ``handle``.  Descriptors a message does not keep are
    closed.  Interrupts: the function's interrupt sink writes the eventfd
    SET_IRQS gave for the vector -- MSI-X (QEMU emulates the table and its
    masking itself, so a vector with an eventfd is unmasked in ours and one
    without is masked, its signals kept pending), MSI, or INTx with its
    automask protocol (after a signal the line is masked until the client's
    UNMASK; a level still asserted then is signalled again).

:class:`VfioUserServer`
    The thin socket loop: listens on a UNIX socket, serves one client at a
    time, frames messages (header, then payload; descriptors by
    SCM_RIGHTS), sends replies, and carries the device's DMA_READ/DMA_WRITE
    requests.  When a client goes away the function is reset (its queues
    and interrupts go; the namespaces and their data stay), the windows
    are unmapped and the eventfds closed; the next client starts afresh.

Start-up as QEMU 11 does it: VERSION, DMA_MAP of every RAM section,
GET_INFO, GET_REGION_INFO, GET_IRQ_INFO, the configuration space read,
SET_IRQS for INTx, DEVICE_RESET, then SeaBIOS and the guest kernel.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import errno
import json
import logging
import mmap
import os
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...memory import DmaError
from ...spec.vfio_user import (
    DEVICE_INFO,
    DMA_MAP,
    DMA_RW,
    DMA_UNMAP,
    HEADER,
    HEADER_SIZE,
    IRQ_INFO,
    IRQ_SET,
    MAX_MESSAGE_SIZE,
    REGION_ACCESS,
    REGION_INFO,
    VERSION,
    Command,
    DeviceFlags,
    DmaFlags,
    IrqIndex,
    IrqInfoFlags,
    IrqSetFlags,
    MsgFlags,
    RegionFlags,
    RegionIndex,
)

__all__ = ["DmaWindows", "VfioUserDevice", "VfioUserError", "VfioUserServer", "qemu_arguments"]

log = logging.getLogger(__name__)

MAX_DATA_XFER = 1 << 20
"""Largest REGION_READ/REGION_WRITE/DMA_READ/DMA_WRITE data we accept or send."""
QUIESCE_TIMEOUT = 1.0
"""Seconds a DMA_UNMAP waits for the command the device is running to end."""
MAX_MSG_FDS = 16
PAGE_SIZE = 4096
DMA_TIMEOUT = 4.0
"""Seconds we wait for the client's answer to DMA_READ/DMA_WRITE (QEMU's own
message timeout is 5 s; a stall past it ends the connection)."""
_EVENTFD_ONE = (1).to_bytes(8, "little")
# Plain ints and names for the per-message path (enum arithmetic costs
# microseconds per message; a doorbell write is one message).
_COMMAND_NAMES = {int(c): c.name for c in Command}
_TYPE_MASK = int(MsgFlags.TYPE_MASK)
_TYPE_REPLY = int(MsgFlags.REPLY)
_NO_REPLY = int(MsgFlags.NO_REPLY)
_BAR0 = int(RegionIndex.BAR0)
_RECV_SIZE = 256 << 10
_ANCILLARY_SIZE = socket.CMSG_SPACE(MAX_MSG_FDS * 4)
_CONFIG = int(RegionIndex.CONFIG)
_UNMAP_ALL = 0x2  # VFIO_DMA_UNMAP_FLAG_ALL


class VfioUserError(Exception):
    """A message that gets the error reply with ``errno``."""

    def __init__(self, err: int, msg: str = ""):
        super().__init__(msg or os.strerror(err))
        self.errno = err


def error_reply(msg_id: int, command: int, err: int) -> bytes:
    return HEADER.pack(msg_id, command, HEADER_SIZE, MsgFlags.REPLY | MsgFlags.ERROR, err)


def _reply(msg_id: int, command: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(msg_id, command, HEADER_SIZE + len(payload), MsgFlags.REPLY, 0) + payload


def _close_fds(fds) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# ---------------------------------------------------------------------------
# guest memory


@dataclass(eq=False)
class _Window:
    addr: int
    size: int
    prot: int
    map: mmap.mmap | None = None
    view: memoryview | None = None

    @property
    def end(self) -> int:
        return self.addr + self.size

    def close(self) -> None:
        if self.view is not None:
            with contextlib.suppress(BufferError):
                self.view.release()
            self.view = None
        if self.map is not None:
            with contextlib.suppress(BufferError):
                self.map.close()  # views still in use keep it until they go
            self.map = None


class DmaWindows:
    """The client's DMA windows as a memory object for the PCIe function.

    ``transfer(command, addr, count, data)`` reaches windows that came
    without a file descriptor (the socket loop provides it): DMA_READ
    returns ``count`` bytes, DMA_WRITE sends ``data``.  A view of such a
    window is a copy read through DMA_READ; what the device writes into it
    goes back with DMA_WRITE on :meth:`flush` (before every interrupt and
    on unmap), so such windows hold descriptors and data as well as
    anything else, only slower."""

    def __init__(self, transfer: Callable[[int, int, int, bytes], bytes] | None = None):
        self.transfer = transfer
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._windows: list[_Window] = []
        self._writeback: list[tuple[_Window, int, bytearray]] = []

    # -- the client's map ---------------------------------------------------

    def map(self, addr: int, size: int, prot: int, fd: int | None = None, offset: int = 0) -> None:
        """Add a window (``fd`` is consumed: mapped and closed)."""
        try:
            if size <= 0 or addr < 0 or addr + size > 1 << 64:
                raise VfioUserError(errno.EINVAL, f"DMA window {addr:#x}+{size:#x} is empty or wraps")
            if not prot & (DmaFlags.READ | DmaFlags.WRITE):
                raise VfioUserError(errno.EINVAL, "DMA window neither readable nor writable")
            window = _Window(addr, size, prot)
            if fd is not None:
                mprot = mmap.PROT_READ | (mmap.PROT_WRITE if prot & DmaFlags.WRITE else 0)
                try:
                    window.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mprot, offset=offset)
                except (OSError, ValueError, OverflowError) as exc:
                    raise VfioUserError(errno.EINVAL, f"cannot map DMA window {addr:#x}+{size:#x}: {exc}") from None
                window.view = memoryview(window.map)
                if not prot & DmaFlags.WRITE:
                    window.view = window.view.toreadonly()
            with self._lock:
                i = bisect.bisect_right(self._starts, addr)
                if (i > 0 and self._windows[i - 1].end > addr) or (i < len(self._starts) and self._starts[i] < addr + size):
                    window.close()
                    raise VfioUserError(errno.EEXIST, f"DMA window {addr:#x}+{size:#x} overlaps another")
                self._starts.insert(i, addr)
                self._windows.insert(i, window)
        finally:
            if fd is not None:
                _close_fds([fd])

    def unmap(self, addr: int, size: int) -> None:
        """Remove the window mapped exactly as ``addr``+``size``."""
        with self._lock:
            i = bisect.bisect_left(self._starts, addr)
            if i == len(self._starts) or self._starts[i] != addr or self._windows[i].size != size:
                raise VfioUserError(errno.EINVAL, f"no DMA window {addr:#x}+{size:#x}")
            window = self._windows.pop(i)
            del self._starts[i]
        self._flush(window)
        window.close()

    def clear(self) -> None:
        """Remove every window (the client went away: nothing is written back)."""
        with self._lock:
            windows, self._windows, self._starts = self._windows, [], []
            self._writeback = []
        for window in windows:
            window.close()

    @property
    def windows(self) -> list[tuple[int, int, bool]]:
        """``(addr, size, has a mapping)`` of every window, by address."""
        with self._lock:
            return [(w.addr, w.size, w.map is not None) for w in self._windows]

    # -- the device's access path -----------------------------------------

    def _find(self, addr: int, length: int) -> _Window:
        with self._lock:
            i = bisect.bisect_right(self._starts, addr) - 1
            if i < 0 or length < 0 or addr + length > self._windows[i].end:
                raise DmaError(f"guest memory access {addr:#x}+{length:#x} is outside every DMA window")
            return self._windows[i]

    def view(self, addr: int, length: int) -> memoryview:
        window = self._find(addr, length)
        if window.view is not None:
            off = addr - window.addr
            return window.view[off : off + length]
        data = bytearray(self._transfer(Command.DMA_READ, addr, length))
        if window.prot & DmaFlags.WRITE:
            with self._lock:
                self._writeback.append((window, addr, data))
        return memoryview(data)

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.view(addr, length))

    def write(self, addr: int, data) -> None:
        data = memoryview(data).cast("B")
        window = self._find(addr, data.nbytes)
        if window.view is not None:
            off = addr - window.addr
            window.view[off : off + data.nbytes] = data
        elif not window.prot & DmaFlags.WRITE:
            raise DmaError(f"guest memory {addr:#x} is read-only")
        else:
            self._transfer(Command.DMA_WRITE, addr, data.nbytes, bytes(data))

    def read_u64(self, addr: int) -> int:
        return int.from_bytes(self.view(addr, 8), "little")

    def write_u64(self, addr: int, value: int) -> None:
        self.write(addr, value.to_bytes(8, "little"))

    def _transfer(self, command: int, addr: int, count: int, data: bytes = b"") -> bytes:
        if self.transfer is None:
            raise DmaError(f"guest memory {addr:#x} has no mapping and no client to ask")
        out = b""
        for pos in range(0, max(count, 1), MAX_DATA_XFER):
            n = min(MAX_DATA_XFER, count - pos)
            try:
                got = self.transfer(command, addr + pos, n, data[pos : pos + n])
            except VfioUserError as exc:
                raise DmaError(f"{Command(command).name} {addr + pos:#x}+{n:#x}: {exc}") from None
            if command == Command.DMA_READ:
                if len(got) != n:
                    raise DmaError(f"DMA_READ {addr + pos:#x}+{n:#x} returned {len(got)} bytes")
                out += got
        return out

    def flush(self) -> None:
        """Write back what the device wrote into copies of windows without
        a mapping (in the order the copies were taken)."""
        self._flush(None)

    def _flush(self, only: _Window | None) -> None:
        with self._lock:
            if not self._writeback:
                return
            if only is None:
                todo, self._writeback = self._writeback, []
            else:
                todo = [w for w in self._writeback if w[0] is only]
                self._writeback = [w for w in self._writeback if w[0] is not only]
        for _window, addr, data in todo:
            try:
                self._transfer(Command.DMA_WRITE, addr, len(data), bytes(data))
            except DmaError as exc:
                log.warning("write-back to guest memory failed: %s", exc)

    def close(self) -> None:
        self.clear()


# ---------------------------------------------------------------------------
# the protocol


@dataclass
class _Pending:
    """One DMA_READ/DMA_WRITE of ours waiting for the client's reply."""

    event: threading.Event = field(default_factory=threading.Event)
    error: int = 0
    payload: bytes = b""


def _split(offset: int, count: int, widest: int):
    """Naturally aligned accesses of at most ``widest`` bytes covering
    ``offset``..``offset+count``."""
    end = offset + count
    while offset < end:
        size = widest
        while size > 1 and (offset % size or offset + size > end):
            size >>= 1
        yield offset, size
        offset += size


class VfioUserDevice:
    """The vfio-user protocol for one :class:`PciFunction` whose ``memory``
    is a :class:`DmaWindows` (see the module documentation).

    ``handle(message, fds)`` returns the reply (bytes) or None.  The socket
    loop sets ``memory.transfer`` and sends what :meth:`dma_request`
    returns; tests call both directly."""

    def __init__(self, function: Any):
        if not isinstance(function.memory, DmaWindows):
            raise TypeError("the function's memory must be a DmaWindows")
        self.function = function
        self.memory: DmaWindows = function.memory
        self.stats: Counter[str] = Counter()
        self.client_version: dict | None = None
        self._irq_lock = threading.Lock()
        self._irqs: dict[int, dict[int, int]] = {i: {} for i in range(IrqIndex.NUM)}
        self._intx_masked = False
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._next_id = 0
        self.trace: Callable[[str], None] | None = None
        self._handlers = {
            Command.VERSION: self._version,
            Command.DMA_MAP: self._dma_map,
            Command.DMA_UNMAP: self._dma_unmap,
            Command.DEVICE_GET_INFO: self._get_info,
            Command.DEVICE_GET_REGION_INFO: self._get_region_info,
            Command.DEVICE_GET_IRQ_INFO: self._get_irq_info,
            Command.DEVICE_SET_IRQS: self._set_irqs,
            Command.REGION_READ: self._region_read,
            Command.REGION_WRITE: self._region_write,
            Command.DEVICE_RESET: self._device_reset,
        }
        function.add_sink(self._interrupt)

    # -- messages -----------------------------------------------------------

    def handle(self, message: bytes, fds=()) -> bytes | None:
        """One whole message (header and payload) and its descriptors."""
        fds = list(fds)
        if len(message) < HEADER_SIZE:
            _close_fds(fds)
            self.stats["bad"] += 1
            # Not even a header: echo what can be read of it.
            head = bytes(message) + bytes(HEADER_SIZE)
            msg_id, command = struct.unpack_from("<HH", head)
            return error_reply(msg_id, command, errno.EINVAL)
        msg_id, command, size, flags, err = HEADER.unpack_from(message)
        payload = memoryview(message)[HEADER_SIZE:]
        if flags & _TYPE_MASK == _TYPE_REPLY:
            _close_fds(fds)
            self._client_reply(msg_id, command, flags, err, bytes(payload))
            return None
        posted = flags & _NO_REPLY
        self.stats[_COMMAND_NAMES.get(command, "unknown")] += 1
        try:
            if flags & _TYPE_MASK != 0:
                raise VfioUserError(errno.EINVAL, f"message type {flags & _TYPE_MASK}")
            if size != len(message):
                raise VfioUserError(errno.EINVAL, f"header says {size} bytes, message has {len(message)}")
            handler = self._handlers.get(command)
            if handler is None:
                raise VfioUserError(errno.ENOTSUP, f"command {command} not supported")
            out = handler(payload, fds)
            fds = []  # the handler took what it keeps and closed the rest
            if self.trace is not None:
                self.trace(f"{_COMMAND_NAMES[command]} id={msg_id} {bytes(payload[:32]).hex()}")
            return None if posted else _reply(msg_id, command, out or b"")
        except VfioUserError as exc:
            self.stats["errors"] += 1
            log.debug("vfio-user command %d: %s", command, exc)
            if self.trace is not None:
                self.trace(f"command {command} id={msg_id}: error {exc.errno} ({exc})")
            return None if posted else error_reply(msg_id, command, exc.errno)
        except Exception:  # a bug of ours must not end the device
            self.stats["errors"] += 1
            log.exception("vfio-user command %d", command)
            return None if posted else error_reply(msg_id, command, errno.EIO)
        finally:
            _close_fds(fds)

    @staticmethod
    def _args(payload, st: struct.Struct, what: str) -> tuple:
        if len(payload) < st.size:
            raise VfioUserError(errno.EINVAL, f"{what}: {len(payload)} bytes, {st.size} expected")
        return st.unpack_from(payload)

    def _version(self, payload, fds) -> bytes:
        _close_fds(fds)
        major, minor = self._args(payload, VERSION, "VERSION")
        if major != 0:
            raise VfioUserError(errno.ENOTSUP, f"protocol version {major}.{minor}")
        text = bytes(payload[VERSION.size :]).split(b"\0", 1)[0]
        try:
            self.client_version = json.loads(text) if text else {}
        except ValueError:
            raise VfioUserError(errno.EINVAL, "VERSION capabilities are not JSON") from None
        if not isinstance(self.client_version, dict):
            raise VfioUserError(errno.EINVAL, "VERSION capabilities are not an object")
        caps = {"capabilities": {"max_msg_fds": MAX_MSG_FDS, "max_data_xfer_size": MAX_DATA_XFER,
                                 "pgsizes": PAGE_SIZE, "max_dma_maps": 65535}}
        return VERSION.pack(0, 0) + json.dumps(caps).encode() + b"\0"

    def _dma_map(self, payload, fds) -> bytes:
        try:
            _argsz, flags, offset, addr, size = self._args(payload, DMA_MAP, "DMA_MAP")
            if len(fds) > 1:
                raise VfioUserError(errno.EINVAL, "DMA_MAP with more than one descriptor")
        except VfioUserError:
            _close_fds(fds)
            raise
        self.memory.map(addr, size, flags, fds[0] if fds else None, offset)
        return b""

    def _dma_unmap(self, payload, fds) -> bytes:
        _close_fds(fds)
        _argsz, flags, addr, size = self._args(payload, DMA_UNMAP, "DMA_UNMAP")
        if flags & ~_UNMAP_ALL:
            raise VfioUserError(errno.ENOTSUP, f"DMA_UNMAP flags {flags:#x}")
        with self._quiesced():
            if flags & _UNMAP_ALL:
                self.memory.clear()
            else:
                self.memory.unmap(addr, size)
        return bytes(payload[: DMA_UNMAP.size])

    @contextlib.contextmanager
    def _quiesced(self):
        """Between two commands of the device (libvfio-user's quiesce): the
        queues' gate is held while a command is fetched and run, so a command
        that took views of a window ends before its unmap is answered.  A
        command the device itself waits on us for (a DMA_READ of a window
        without a descriptor, answered by this thread) would wait forever:
        after QUIESCE_TIMEOUT we unmap anyway (such windows are copies)."""
        gate = getattr(getattr(self.function, "queues", None), "gate", None)
        held = gate is not None and gate.acquire(timeout=QUIESCE_TIMEOUT)
        try:
            yield
        finally:
            if held:
                gate.release()

    def _get_info(self, payload, fds) -> bytes:
        _close_fds(fds)
        self._args(payload, DEVICE_INFO, "DEVICE_GET_INFO")
        return DEVICE_INFO.pack(DEVICE_INFO.size, DeviceFlags.RESET | DeviceFlags.PCI, RegionIndex.NUM, IrqIndex.NUM)

    def _region_size(self, index: int) -> int:
        if index == RegionIndex.BAR0:
            return self.function.bar0_size
        if index == RegionIndex.CONFIG:
            return self.function.config.SIZE
        return 0

    def _get_region_info(self, payload, fds) -> bytes:
        _close_fds(fds)
        _argsz, _flags, index, _cap, _size, _offset = self._args(payload, REGION_INFO, "DEVICE_GET_REGION_INFO")
        if index >= RegionIndex.NUM:
            raise VfioUserError(errno.EINVAL, f"region {index}")
        size = self._region_size(index)
        flags = RegionFlags.READ | RegionFlags.WRITE if size else 0
        return REGION_INFO.pack(REGION_INFO.size, flags, index, 0, size, 0)

    def _irq_count(self, index: int) -> int:
        if index == IrqIndex.INTX:
            return 1
        if index == IrqIndex.MSI:
            return self.function.config.msi_vectors_capable
        if index == IrqIndex.MSIX:
            return self.function.msix_vectors
        return 0

    def _get_irq_info(self, payload, fds) -> bytes:
        _close_fds(fds)
        _argsz, _flags, index, _count = self._args(payload, IRQ_INFO, "DEVICE_GET_IRQ_INFO")
        if index >= IrqIndex.NUM:
            raise VfioUserError(errno.EINVAL, f"IRQ index {index}")
        flags = IrqInfoFlags.EVENTFD
        if index == IrqIndex.INTX:
            flags |= IrqInfoFlags.MASKABLE | IrqInfoFlags.AUTOMASKED
        elif index in (IrqIndex.MSI, IrqIndex.MSIX):
            flags |= IrqInfoFlags.NORESIZE
        return IRQ_INFO.pack(IRQ_INFO.size, flags, index, self._irq_count(index))

    # -- interrupts -------------------------------------------------------

    def _set_irqs(self, payload, fds) -> bytes:
        try:
            _argsz, flags, index, start, count = self._args(payload, IRQ_SET, "DEVICE_SET_IRQS")
            data, action = flags & IrqSetFlags.DATA_TYPE_MASK, flags & IrqSetFlags.ACTION_TYPE_MASK
            if flags & ~(IrqSetFlags.DATA_TYPE_MASK | IrqSetFlags.ACTION_TYPE_MASK):
                raise VfioUserError(errno.EINVAL, f"SET_IRQS flags {flags:#x}")
            if data not in (IrqSetFlags.DATA_NONE, IrqSetFlags.DATA_BOOL, IrqSetFlags.DATA_EVENTFD) or action not in (
                    IrqSetFlags.ACTION_MASK, IrqSetFlags.ACTION_UNMASK, IrqSetFlags.ACTION_TRIGGER):
                raise VfioUserError(errno.EINVAL, f"SET_IRQS flags {flags:#x}: one data type and one action")
            if index >= IrqIndex.NUM:
                raise VfioUserError(errno.EINVAL, f"IRQ index {index}")
            total = self._irq_count(index)
            if count and (start >= total or start + count > total):
                raise VfioUserError(errno.EINVAL, f"IRQs {start}+{count} of index {index} (has {total})")
            if data == IrqSetFlags.DATA_EVENTFD:
                if action != IrqSetFlags.ACTION_TRIGGER:
                    raise VfioUserError(errno.ENOTSUP, "eventfds for mask/unmask are not supported")
                if fds and len(fds) != count:
                    raise VfioUserError(errno.EINVAL, f"{len(fds)} descriptors for {count} IRQs")
            elif fds:
                raise VfioUserError(errno.EINVAL, "descriptors without DATA_EVENTFD")
            bools = None
            if data == IrqSetFlags.DATA_BOOL:
                if len(payload) < IRQ_SET.size + count:
                    raise VfioUserError(errno.EINVAL, "SET_IRQS DATA_BOOL without its bytes")
                bools = bytes(payload[IRQ_SET.size : IRQ_SET.size + count])
        except VfioUserError:
            _close_fds(fds)
            raise
        if action == IrqSetFlags.ACTION_TRIGGER:
            if data == IrqSetFlags.DATA_EVENTFD:
                self._assign(index, start, count, fds)
            elif data == IrqSetFlags.DATA_NONE and count == 0:
                self._assign(index, 0, self._irq_count(index), [])
            else:
                for i in range(count):
                    if bools is None or bools[i]:
                        self._write_eventfd(index, start + i)
        elif index == IrqIndex.INTX and count:
            if action == IrqSetFlags.ACTION_MASK:
                with self._irq_lock:
                    self._intx_masked = True
            else:
                self._intx_unmask()
        return b""

    def _assign(self, index: int, start: int, count: int, fds: list[int]) -> None:
        """Give IRQs ``start``..``start+count`` of ``index`` the eventfds
        ``fds`` (none: take them away)."""
        with self._irq_lock:
            table = self._irqs[index]
            for i in range(count):
                old = table.pop(start + i, None)
                if old is not None:
                    _close_fds([old])
                if fds:
                    table[start + i] = fds[i]
            if index == IrqIndex.INTX:
                self._intx_masked = False
        if index == IrqIndex.MSIX:
            # QEMU keeps the MSI-X table (and its masking) itself: a vector it
            # gave an eventfd is open in ours, one without holds its signals
            # pending until it gets one again.
            interrupts, table_offset = self.function.interrupts, self.function.config.msix_table_offset
            for i in range(start, start + count):
                interrupts.msix_write(table_offset + 16 * i + 12, 4, 0 if fds else 1)
        elif index == IrqIndex.INTX and fds:
            self._intx_unmask()

    def _write_eventfd(self, index: int, sub: int) -> bool:
        with self._irq_lock:
            fd = self._irqs[index].get(sub)
            if fd is None:
                return False
            try:
                os.write(fd, _EVENTFD_ONE)
            except OSError as exc:
                log.warning("interrupt eventfd (index %d, %d): %s", index, sub, exc)
                return False
        self.stats["interrupts"] += 1
        return True

    def _intx_unmask(self) -> None:
        with self._irq_lock:
            self._intx_masked = False
        if self.function.interrupts.intx_asserted:
            self._signal_intx()

    def _signal_intx(self) -> None:
        with self._irq_lock:
            if self._intx_masked or 0 not in self._irqs[IrqIndex.INTX]:
                return
            self._intx_masked = True  # automasked until the client's UNMASK
        self.memory.flush()
        if not self._write_eventfd(IrqIndex.INTX, 0):
            with self._irq_lock:
                self._intx_masked = False

    def _interrupt(self, vector: int) -> None:
        """The function's interrupt sink."""
        mode = self.function.interrupts.mode
        if mode == "intx":
            self._signal_intx()
            return
        self.memory.flush()
        self._write_eventfd(IrqIndex.MSIX if mode == "msix" else IrqIndex.MSI, vector)

    def intx_masked(self) -> bool:
        with self._irq_lock:
            return self._intx_masked

    def eventfds(self, index: int) -> dict[int, int]:
        with self._irq_lock:
            return dict(self._irqs[index])

    # -- regions ------------------------------------------------------------

    def _region_args(self, payload) -> tuple[int, int, int]:
        offset, region, count = self._args(payload, REGION_ACCESS, "region access")
        size = self._region_size(region) if region < RegionIndex.NUM else 0
        if not size:
            raise VfioUserError(errno.EINVAL, f"region {region} does not exist")
        if count > MAX_DATA_XFER or offset + count > size:
            raise VfioUserError(errno.EINVAL, f"region {region} access {offset:#x}+{count:#x} (size {size:#x})")
        return offset, region, count

    def _region_read(self, payload, fds) -> bytes:
        _close_fds(fds)
        offset, region, count = self._region_args(payload)
        out = bytearray()
        fn = self.function
        if region == RegionIndex.CONFIG:
            for off, size in _split(offset, count, 4):
                out += fn.config_read(off, size).to_bytes(size, "little")
        else:
            for off, size in _split(offset, count, 8):
                out += fn.mmio_read(off, size).to_bytes(size, "little")
        return REGION_ACCESS.pack(offset, region, count) + bytes(out)

    def _region_write(self, payload, fds) -> bytes:
        _close_fds(fds)
        offset, region, count = self._region_args(payload)
        data = payload[REGION_ACCESS.size :]
        if len(data) != count:
            raise VfioUserError(errno.EINVAL, f"REGION_WRITE of {count} bytes carries {len(data)}")
        fn = self.function
        if region == _BAR0 and (count == 4 or count == 8) and not offset % count:
            # A register or doorbell write (nearly every message while I/O runs).
            fn.mmio_write(offset, count, int.from_bytes(data, "little"))
            return REGION_ACCESS.pack(offset, region, count)
        pos = 0
        for off, size in _split(offset, count, 4 if region == _CONFIG else 8):
            value = int.from_bytes(data[pos : pos + size], "little")
            pos += size
            if region == _CONFIG:
                fn.config_write(off, size, value)
            else:
                fn.mmio_write(off, size, value)
        return REGION_ACCESS.pack(offset, region, count)

    def _device_reset(self, payload, fds) -> bytes:
        _close_fds(fds)
        self.function.reset()
        with self._irq_lock:
            self._intx_masked = False
        return b""

    # -- our requests to the client -------------------------------------------

    def dma_request(self, command: int, addr: int, count: int, data: bytes = b"") -> tuple[bytes, _Pending]:
        """A DMA_READ or DMA_WRITE message and the record its reply fills."""
        if command not in (Command.DMA_READ, Command.DMA_WRITE):
            raise ValueError("only DMA_READ and DMA_WRITE go to the client")
        body = DMA_RW.pack(addr, count) + (data if command == Command.DMA_WRITE else b"")
        pending = _Pending()
        with self._pending_lock:
            msg_id = self._next_id
            self._next_id = (self._next_id + 1) & 0xFFFF
            self._pending[msg_id] = pending
        return HEADER.pack(msg_id, command, HEADER_SIZE + len(body), 0, 0) + body, pending

    def _client_reply(self, msg_id: int, command: int, flags: int, err: int, payload: bytes) -> None:
        with self._pending_lock:
            pending = self._pending.pop(msg_id, None)
        if pending is None:
            log.warning("vfio-user reply %d to nothing we asked (command %d)", msg_id, command)
            return
        if flags & MsgFlags.ERROR:
            pending.error = err or errno.EIO
        elif command == Command.DMA_READ:
            pending.payload = payload[DMA_RW.size :]
        pending.event.set()

    def abandon_requests(self) -> None:
        """The client went away: every request of ours fails."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for p in pending.values():
            p.error = errno.ECONNRESET
            p.event.set()

    # -- the client's life ------------------------------------------------

    def disconnected(self) -> None:
        """The client went away: reset the function (queues and interrupts
        go, the namespaces stay), unmap every window, close the eventfds."""
        self.abandon_requests()
        try:
            self.function.reset()
        except Exception:
            log.exception("resetting the function after the client left")
        self.memory.clear()
        with self._irq_lock:
            for table in self._irqs.values():
                _close_fds(table.values())
                table.clear()
            self._intx_masked = False
        self.client_version = None

    def close(self) -> None:
        self.function.remove_sink(self._interrupt)
        self.disconnected()


# ---------------------------------------------------------------------------
# the socket loop


class _ClientGone(Exception):
    pass


class VfioUserServer:
    """Serve ``device`` on the UNIX socket ``path``, one client at a time,
    until :meth:`stop`.  ``serve_forever`` runs on the calling thread."""

    def __init__(self, device: VfioUserDevice, path: str):
        self.device = device
        self.path = path
        self.clients = 0
        self._stop_r, self._stop_w = os.pipe()
        self._sock: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._loop_thread: threading.Thread | None = None
        self._backlog: list[tuple[bytes, list[int]]] = []
        # Received, not yet taken: bytes from _rpos on, and descriptors as
        # (index of the last byte that came with them, descriptors).
        self._rbuf = bytearray()
        self._rpos = 0
        self._rchunk = memoryview(bytearray(_RECV_SIZE))
        self._rfds: list[tuple[int, list[int]]] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._listener.bind(path)
        self._listener.listen(1)
        device.memory.transfer = self._transfer

    def stop(self) -> None:
        """Make :meth:`serve_forever` return (callable from any thread or a signal handler)."""
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")

    def serve_forever(self) -> None:
        self._loop_thread = threading.current_thread()
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "listen")
        sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        try:
            while True:
                events = [key.data for key, _ in sel.select()]
                if "stop" in events:
                    return
                conn, _ = self._listener.accept()
                self.clients += 1
                log.info("vfio-user client connected")
                try:
                    self._serve_client(conn, sel)
                except _StopServing:
                    return
                finally:
                    self._conn = None
                    conn.close()
                    self.device.disconnected()
                    log.info("vfio-user client gone; the device is ready for the next one")
        finally:
            sel.close()
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            for fd in (self._stop_r, self._stop_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _serve_client(self, conn: socket.socket, sel: selectors.BaseSelector) -> None:
        self._conn = conn
        self._rbuf, self._rpos, self._rfds = bytearray(), 0, []
        sel.register(conn, selectors.EVENT_READ, "client")
        try:
            while True:
                # Everything already received first (a burst of doorbell
                # writes comes in one recvmsg), in order: messages a DMA
                # request of ours read past its answer wait in the backlog.
                while True:
                    if self._backlog:
                        self._dispatch(*self._backlog.pop(0))
                        continue
                    taken = self._take()
                    if taken is None:
                        break
                    self._dispatch(*taken)
                events = [key.data for key, _ in sel.select()]
                if "stop" in events:
                    raise _StopServing
                if "client" in events:
                    self._fill(conn)
        except _ClientGone:
            return  # gone, or framing lost, or a reply it did not stay for
        finally:
            sel.unregister(conn)
            _close_fds([fd for _, fds in self._rfds for fd in fds])
            self._rbuf, self._rpos, self._rfds = bytearray(), 0, []

    def _dispatch(self, message: bytes, fds: list[int]) -> None:
        reply = self.device.handle(message, fds)
        if reply is not None:
            self._send(reply)

    def _send(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            raise _ClientGone
        try:
            with self._send_lock:
                conn.sendall(data)
        except OSError:
            raise _ClientGone from None

    def _fill(self, conn: socket.socket) -> None:
        """One recvmsg into the receive buffer.  Descriptors belong to the
        message holding the last byte received with them: the kernel ends a
        read after the segment that carried descriptors, and a client sends
        a message's descriptors with that message."""
        try:
            # Into one buffer kept for the connection: recvmsg(n) would make a
            # new n-byte object per call (an mmap at this size).
            n, anc, _flags, _addr = conn.recvmsg_into([self._rchunk], _ANCILLARY_SIZE)
        except (ConnectionResetError, OSError):
            raise _ClientGone from None
        fds: list[int] = []
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(cdata[: len(cdata) - len(cdata) % a.itemsize])
                fds.extend(a)
        if not n:
            _close_fds(fds)
            raise _ClientGone
        if self._rpos:
            del self._rbuf[: self._rpos]
            self._rfds = [(at - self._rpos, f) for at, f in self._rfds]
            self._rpos = 0
        self._rbuf += self._rchunk[:n]
        if fds:
            self._rfds.append((len(self._rbuf) - 1, fds))

    def _take(self) -> tuple[bytes, list[int]] | None:
        """The next whole message in the receive buffer and its descriptors,
        or None until more comes.  A size that cannot be framed gets the
        error reply (when the message wants one) and ends the connection."""
        buf, pos = self._rbuf, self._rpos
        if len(buf) - pos < HEADER_SIZE:
            return None
        msg_id, command, size, flags, _err = HEADER.unpack_from(buf, pos)
        if size < HEADER_SIZE or size > MAX_MESSAGE_SIZE:
            log.warning("vfio-user message of %d bytes: closing the connection", size)
            if flags & _TYPE_MASK == 0 and not flags & _NO_REPLY:
                with contextlib.suppress(_ClientGone):
                    self._send(error_reply(msg_id, command, errno.EINVAL))
            raise _ClientGone
        end = pos + size
        if len(buf) < end:
            return None
        fds: list[int] = []
        while self._rfds and self._rfds[0][0] < end:
            fds.extend(self._rfds.pop(0)[1])
        self._rpos = end
        return bytes(buf[pos:end]), fds

    def _receive(self, conn: socket.socket) -> tuple[bytes, list[int]]:
        """The next whole message (reading as much as that takes)."""
        while True:
            taken = self._take()
            if taken is not None:
                return taken
            self._fill(conn)

    def _transfer(self, command: int, addr: int, count: int, data: bytes) -> bytes:
        """DMA_READ/DMA_WRITE through the client (DmaWindows.transfer)."""
        message, pending = self.device.dma_request(command, addr, count, data)
        try:
            self._send(message)
        except _ClientGone:
            raise VfioUserError(errno.ECONNRESET, "the client is gone") from None
        deadline = time.monotonic() + DMA_TIMEOUT
        if threading.current_thread() is self._loop_thread and self._conn is not None:
            # The loop itself asks (a register write that touched memory):
            # read on until the answer comes, keeping other messages for later.
            while not pending.event.is_set() and time.monotonic() < deadline:
                try:
                    msg, fds = self._receive(self._conn)
                except _ClientGone:
                    break
                if HEADER.unpack_from(msg)[3] & MsgFlags.TYPE_MASK == MsgFlags.REPLY:
                    self.device.handle(msg, fds)
                else:
                    self._backlog.append((msg, fds))
        elif not pending.event.wait(DMA_TIMEOUT):
            pass
        if not pending.event.is_set():
            raise VfioUserError(errno.ETIMEDOUT, f"{Command(command).name} {addr:#x}+{count:#x}: no answer")
        if pending.error:
            raise VfioUserError(pending.error)
        return pending.payload

    def close(self) -> None:
        self.stop()


class _StopServing(Exception):
    pass


def qemu_arguments(socket_path: str, *, mem_mib: int = 1024, device_id: str = "nvmestack0") -> list[str]:
    """The QEMU options that put the function at ``socket_path`` into a
    guest: guest RAM from a shared memfd backend (so every RAM window
    arrives with its descriptor; ``-M ...,memory-backend=mem`` goes with it)
    and the vfio-user-pci device (JSON form only)."""
    dev = {"driver": "vfio-user-pci", "id": device_id, "socket": {"type": "unix", "path": os.path.abspath(socket_path)}}
    return [
        "-m", str(mem_mib),
        "-object", f"memory-backend-memfd,id=mem,size={mem_mib}M,share=on",
        "-machine", "memory-backend=mem",
        "-device", json.dumps(dev, separators=(",", ":")),
    ]
