"""The PCIe transport: the host driver's side of an NVMe PCIe function
(Linux drivers/nvme/host/pci.c).

:class:`PciTransport` drives a function (``nvmestack.target.pci.PciFunction``
or anything with the same ``config_read/config_write``, ``mmio_read/
mmio_write`` and ``add_sink``) over a :class:`~nvmestack.memory.PhysicalMemory`
that plays the host's RAM:

* device enable: Memory Space and Bus Master in the Command register; MSI-X
  found in the capability list, enabled, its table programmed and unmasked
  (``interrupts="msix"``); pin-based interrupts (``"intx"``) or none at all
  (``"none"``: every queue is polled);
* BAR0: registers through ``mmio_read``/``mmio_write``, doorbells at
  ``1000h + (2y [+1]) * (4 << CAP.DSTRD)``;
* queues: rings in host memory (physically contiguous), the admin queue
  through AQA/ASQ/ACQ, I/O queues with Create I/O Completion Queue (IEN and
  IV for interrupt driven ones) and Create I/O Submission Queue sent
  through the core's admin queue, deleted with Delete I/O SQ then CQ;
* interrupts: the function calls :meth:`PciTransport._sink` with the
  vector (possibly on the device's thread, possibly inside a doorbell write
  of ours): it only sets an event; one thread per vector (a threaded
  interrupt handler) then processes the completion queues of that vector;
* data (as pci.c): PRPs -- PRP1, PRP2 as the second page or as a PRP list
  from a 256-byte pool (up to 32 entries) or from page sized blocks chained
  through their last entry; SGLs when Identify Controller SGLS says they are
  supported, on I/O queues, when the average segment is at least
  ``sgl_threshold`` bytes (32 KiB by default, Linux's ``sgl_threshold``; 0
  turns SGLs off): one Data Block descriptor in SGL1, or a Last Segment
  pointing to up to 16 descriptors from the small pool, or segments of page
  sized lists chained through their last descriptor; metadata through MPTR.
  Buffers in host memory (``alloc``/``ctrl.alloc_buffer`` and views of them)
  are mapped where they are; any other buffer is bounced through a DMA buffer
  (copied in for writes, copied out at completion for reads), as is a
  scatter list PRPs cannot describe when SGLs cannot be used.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..memory import PAGE_SIZE, DmaBuffer, DmaPool, PhysicalMemory
from ..spec.admin import CreateIoCq, CreateIoSq, DeleteIoCq, DeleteIoSq
from ..spec.cqe import CQE_SIZE
from ..spec.dptr import (
    SGL_DESCRIPTOR_SIZE,
    Psdt,
    build_prps,
    prp_list_entry_count,
    sgl_data_block,
    sgl_last_segment,
    sgl_segment,
)
from ..spec.pci import CapId, Cfg, PciCommand, find_capability
from ..spec.registers import Reg, Shn, Shst, cq_head_doorbell, sq_tail_doorbell
from ..spec.sqe import SQE_SIZE, Command
from .queue import HostQueue, MemoryQueue
from .request import DIR_BIDIRECTIONAL, DIR_FROM_DEVICE, DIR_TO_DEVICE
from .transport import Transport, TransportError

if TYPE_CHECKING:
    from .request import HostRequest

__all__ = ["PciTransport", "PciQueue", "DEFAULT_SGL_THRESHOLD", "prp_compatible"]

log = logging.getLogger(__name__)

DEFAULT_SGL_THRESHOLD = 32 * 1024  # Linux's sgl_threshold module parameter
SMALL_POOL_SIZE = 256  # Linux's prp_small_pool / sgl small pool block
MSI_ADDRESS = 0xFEE0_0000  # an x86-style message address; the function only needs one
_READY_POLL = 0.0005
_PSDT_BITS = ((1 << Command.psdt.width) - 1) << Command.psdt.lsb  # in byte 1 (FUSE, PSDT)
_PRP1_OFF = Command.prp1.offset
_PRP_PAIR = struct.Struct("<QQ")  # PRP1 and PRP2
assert Command.prp2.offset == _PRP1_OFF + 8 and Command.psdt.offset == 1
_MSIX_ENABLE = 1 << 15
_MSIX_FUNCTION_MASK = 1 << 14


def prp_compatible(segments: list[tuple[int, int]], page_size: int) -> bool:
    """Whether PRPs can describe a scatter list of (address, length): the
    first address dword aligned, every segment but the first starting on a
    page boundary and every segment but the last ending on one."""
    if not segments or segments[0][0] & 3:
        return False
    mask = page_size - 1
    last = len(segments) - 1
    for i, (addr, length) in enumerate(segments):
        if i > 0 and addr & mask:
            return False
        if i < last and (addr + length) & mask:
            return False
    return True


def _prp_pages(segments: list[tuple[int, int]], page_size: int) -> list[int]:
    """PRP entries of a PRP compatible scatter list: the first address, then
    the start of every further memory page the data touches."""
    first, length = segments[0]
    pages = [first]
    page = (first & ~(page_size - 1)) + page_size
    end = first + length
    while page < end:
        pages.append(page)
        page += page_size
    for addr, length in segments[1:]:
        end = addr + length
        while addr < end:
            pages.append(addr)
            addr += page_size
    return pages


@dataclass
class _Mapping:
    """What a request's data mapping holds until the completion."""

    pool_blocks: list[tuple[DmaPool, DmaBuffer]] = field(default_factory=list)
    bounce: list[DmaBuffer] = field(default_factory=list)
    copy_out: list[tuple[DmaBuffer, list[memoryview]]] = field(default_factory=list)
    sgl: bool = False
    bounced: bool = False


class PciQueue(MemoryQueue):
    """A queue pair of the PCIe transport: rings in host memory (``sq_buf``,
    ``cq_buf``) and BAR0 doorbells."""

    def __init__(self, transport: "PciTransport", qid: int, entries: int, sq_buf: DmaBuffer,
                 cq_buf: DmaBuffer, *, reserved: int = 0, polled: bool = False, vector: int | None = None):
        fn = transport.function
        sq_db = sq_tail_doorbell(qid, transport.dstrd)
        cq_db = cq_head_doorbell(qid, transport.dstrd)
        super().__init__(
            qid, entries, sq_buf.view, cq_buf.view,
            lambda tail: fn.mmio_write(sq_db, 4, tail),
            lambda head: fn.mmio_write(cq_db, 4, head),
            reserved=reserved, polled=polled, vector=vector,
        )
        self.sq_buf = sq_buf
        self.cq_buf = cq_buf


class _IrqThread:
    """A threaded interrupt handler for one vector: the sink sets ``event``,
    the thread processes the completion queues on the vector."""

    def __init__(self, transport: "PciTransport", vector: int):
        self.transport = transport
        self.vector = vector
        self.event = threading.Event()
        self.stopping = False
        self.count = 0  # interrupts handled
        self.thread = threading.Thread(target=self._run, name=f"nvme-irq-{vector}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        transport = self.transport
        # Requests waited for from here poll (see HostRequest.wait).
        threading.current_thread().nvme_completion_context = True
        while True:
            self.event.wait()
            if self.stopping:
                return
            self.event.clear()
            self.count += 1
            for queue in transport.queues_on_vector(self.vector):
                if queue.polled:
                    continue
                try:
                    transport.poll(queue)
                except Exception:  # the handler must survive anything
                    log.exception("interrupt vector %d, queue %d", self.vector, queue.qid)

    def stop(self) -> None:
        self.stopping = True
        self.event.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=5)


class PciTransport(Transport):
    """The PCIe transport over ``function`` and host ``memory`` (default:
    the function's).  ``interrupts``: "msix" (default), "intx" or "none"
    (everything polled).  ``sgl_threshold``: average segment size from
    which SGLs are used (0: never)."""

    name = "pcie"
    needs_keep_alive = False
    max_transfer_size = 8 << 20  # Linux's NVME_MAX_KB_SZ (8 MiB)
    max_segments = 128  # Linux's NVME_MAX_SEGS

    def __init__(self, function: Any, memory: PhysicalMemory | None = None, *, interrupts: str = "msix",
                 sgl_threshold: int = DEFAULT_SGL_THRESHOLD):
        super().__init__()
        if interrupts not in ("msix", "intx", "none"):
            raise ValueError(f"interrupts must be 'msix', 'intx' or 'none', not {interrupts!r}")
        self.function = function
        self.memory: PhysicalMemory = memory if memory is not None else function.memory
        self.interrupts = interrupts
        self.sgl_threshold = int(sgl_threshold)
        self.page_size = PAGE_SIZE  # the host's page size; CC.MPS follows it
        self.small_pool = DmaPool(self.memory, SMALL_POOL_SIZE)
        self.page_pool = DmaPool(self.memory, PAGE_SIZE)
        self.dstrd = 0
        self.msix_vectors = 0  # MSI-X table entries in use (0: none)
        self._msix_cap: int | None = None
        self._msix_table = 0
        self.queues: dict[int, PciQueue] = {}
        self._by_vector: dict[int, list[PciQueue]] = {}
        self._irq: dict[int, _IrqThread] = {}
        self._lock = threading.RLock()
        self._closed = False
        # Statistics the tests look at.
        self.stats = {"prp": 0, "prp_list": 0, "sgl": 0, "sgl_list": 0, "bounce": 0, "direct": 0}
        function.add_sink(self._sink)

    # ------------------------------------------------------------------
    # registers

    def reg_read32(self, offset: int) -> int:
        return self.function.mmio_read(offset, 4)

    def reg_read64(self, offset: int) -> int:
        return self.function.mmio_read(offset, 8)

    def reg_write32(self, offset: int, value: int) -> None:
        self.function.mmio_write(offset, 4, value)

    def reg_write64(self, offset: int, value: int) -> None:
        self.function.mmio_write(offset, 8, value)

    # ------------------------------------------------------------------
    # device enable and interrupts

    def enable_device(self) -> None:
        fn = self.function
        command = fn.config_read(Cfg.COMMAND, 2)
        command |= PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER
        if self.interrupts == "intx":
            command &= ~PciCommand.INTX_DISABLE
        fn.config_write(Cfg.COMMAND, 2, command)
        if self.interrupts == "msix":
            self._enable_msix()
        if self.reg_read32(Reg.CSTS) == 0xFFFFFFFF:
            raise TransportError("BAR0 reads all ones: the device is not there")
        self.dstrd = (self.reg_read64(Reg.CAP) >> 32) & 0xF

    def _config_bytes(self, length: int = 256) -> bytes:
        fn = self.function
        return b"".join(fn.config_read(off, 4).to_bytes(4, "little") for off in range(0, length, 4))

    def _enable_msix(self) -> None:
        fn = self.function
        if self._msix_cap is None:
            cap = find_capability(self._config_bytes(), CapId.MSIX)
            if cap is None:
                log.warning("no MSI-X capability: all queues are polled")
                self.interrupts = "none"
                return
            table = fn.config_read(cap + 4, 4)
            if table & 0x7:
                log.warning("MSI-X table is not in BAR0: all queues are polled")
                self.interrupts = "none"
                return
            self._msix_cap = cap
            self._msix_table = table & ~0x7
            self.msix_vectors = (fn.config_read(cap + 2, 2) & 0x7FF) + 1
        cap = self._msix_cap
        control = fn.config_read(cap + 2, 2)
        fn.config_write(cap + 2, 2, (control | _MSIX_ENABLE) & ~_MSIX_FUNCTION_MASK)
        for vector in range(self.msix_vectors):
            entry = self._msix_table + 16 * vector
            fn.mmio_write(entry, 4, MSI_ADDRESS)
            fn.mmio_write(entry + 4, 4, 0)
            fn.mmio_write(entry + 8, 4, vector)
            fn.mmio_write(entry + 12, 4, 0)  # unmasked

    def vector_for(self, qid: int) -> int:
        """The interrupt vector of queue ``qid``: its own MSI-X vector while
        there are enough (the admin queue has vector 0), shared beyond."""
        if self.interrupts != "msix" or self.msix_vectors <= 1:
            return 0
        if qid < self.msix_vectors:
            return qid
        return 1 + (qid - 1) % (self.msix_vectors - 1)

    def _sink(self, vector: int) -> None:
        """Interrupt delivery (any thread, possibly the device's, possibly
        inside one of our doorbell writes): wake the vector's handler only."""
        handler = self._irq.get(vector)
        if handler is not None:
            handler.event.set()

    def queues_on_vector(self, vector: int) -> list[PciQueue]:
        return list(self._by_vector.get(vector, ()))

    def _register(self, queue: PciQueue) -> None:
        with self._lock:
            self.queues[queue.qid] = queue
            if queue.polled or queue.vector is None:
                return
            self._by_vector.setdefault(queue.vector, []).append(queue)
            if queue.vector not in self._irq and not self._closed:
                self._irq[queue.vector] = _IrqThread(self, queue.vector)

    def _unregister(self, queue: PciQueue) -> None:
        with self._lock:
            if self.queues.get(queue.qid) is queue:
                del self.queues[queue.qid]
            if queue.vector is not None:
                members = self._by_vector.get(queue.vector, [])
                if queue in members:
                    members.remove(queue)

    def interrupt_count(self, vector: int) -> int:
        """Interrupts the handler of ``vector`` processed."""
        handler = self._irq.get(vector)
        return handler.count if handler is not None else 0

    # ------------------------------------------------------------------
    # queues

    def _alloc_rings(self, entries: int) -> tuple[DmaBuffer, DmaBuffer]:
        sq = self.memory.allocate(entries * SQE_SIZE)
        try:
            cq = self.memory.allocate(entries * CQE_SIZE)
        except Exception:
            self.memory.free(sq)
            raise
        return sq, cq

    def _free_rings(self, queue: PciQueue) -> None:
        for buf in (queue.sq_buf, queue.cq_buf):
            try:
                self.memory.free(buf)
            except ValueError:  # pragma: no cover - freed already
                pass

    def setup_admin_queue(self, entries: int, reserved: int) -> HostQueue:
        old = self.queues.get(0)
        if old is not None:
            old.drain()
            self._unregister(old)
            self._free_rings(old)
        sq, cq = self._alloc_rings(entries)
        polled = self.interrupts == "none"
        queue = PciQueue(self, 0, entries, sq, cq, reserved=reserved, polled=polled,
                         vector=None if polled else 0)
        self.reg_write32(Reg.AQA, (entries - 1) | (entries - 1) << 16)
        self.reg_write64(Reg.ASQ, sq.addr)
        self.reg_write64(Reg.ACQ, cq.addr)
        self._register(queue)
        return queue

    def create_io_queue(self, qid: int, entries: int, *, polled: bool) -> HostQueue:
        ctrl = self.ctrl
        polled = polled or self.interrupts == "none"
        vector = None if polled else self.vector_for(qid)
        sq, cq = self._alloc_rings(entries)
        queue = PciQueue(self, qid, entries, sq, cq, polled=polled, vector=vector)
        cmd = CreateIoCq(qid=qid, prp1=cq.addr, pc=True, ien=not polled, iv=vector or 0)
        cmd.entries = entries
        status = ctrl._admin_internal(cmd)
        if not status.ok:
            self._free_rings(queue)
            raise TransportError(f"Create I/O Completion Queue {qid}: {status}")
        cmd = CreateIoSq(qid=qid, prp1=sq.addr, pc=True, cqid=qid)
        cmd.entries = entries
        status = ctrl._admin_internal(cmd)
        if not status.ok:
            ctrl._admin_internal(DeleteIoCq(qid=qid))
            self._free_rings(queue)
            raise TransportError(f"Create I/O Submission Queue {qid}: {status}")
        self._register(queue)
        return queue

    def delete_io_queue(self, queue: HostQueue) -> None:
        ctrl = self.ctrl
        for cmd in (DeleteIoSq(qid=queue.qid), DeleteIoCq(qid=queue.qid)):
            status = ctrl._admin_internal(cmd)
            if not status.ok:
                log.warning("%s of queue %d: %s", type(cmd).__name__, queue.qid, status)
        queue.drain()
        self._unregister(queue)
        self._free_rings(queue)

    def remove_queues(self) -> None:
        with self._lock:
            queues = list(self.queues.values())
        for queue in queues:
            queue.drain()
            self._unregister(queue)
            self._free_rings(queue)

    def disable(self, shutdown: bool, timeout: float) -> bool:
        cc = self.reg_read32(Reg.CC)
        if cc == 0xFFFFFFFF:
            return False
        if shutdown:
            self.reg_write32(Reg.CC, (cc & ~(3 << 14)) | Shn.NORMAL << 14)
            done = lambda csts: (csts >> 2) & 3 == Shst.COMPLETE  # noqa: E731
        else:
            self.reg_write32(Reg.CC, cc & ~(1 | 3 << 14))
            done = lambda csts: not csts & 1  # noqa: E731
        deadline = time.monotonic() + timeout
        while True:
            csts = self.reg_read32(Reg.CSTS)
            if csts == 0xFFFFFFFF:
                return False
            if done(csts):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_READY_POLL)

    # ------------------------------------------------------------------
    # data mapping

    def alloc(self, size: int) -> DmaBuffer:
        """A zeroed, page aligned buffer in host memory: requests map it (and
        views of it) without a copy."""
        return self.memory.allocate(max(1, int(size)))

    def free(self, buf: Any) -> None:
        self.memory.free(buf)

    def _sgl_usable(self, queue: HostQueue, segments: list[tuple[int, int]]) -> bool:
        """SGLs may carry this data: supported (Identify SGLS), an I/O queue
        (PRPs for all admin commands on PCIe), and dword alignment when the
        controller asks for it."""
        support = getattr(self.ctrl, "sgls", 0)
        if not support or support == 3 or queue.qid == 0:
            return False
        if support == 2:
            return all(not addr & 3 and not length & 3 for addr, length in segments)
        return True

    def _bounce(self, views: list[memoryview], total: int, direction: int, mapping: _Mapping) -> DmaBuffer:
        buf = self.memory.allocate(total, zero=False)
        mapping.bounce.append(buf)
        if direction in (DIR_TO_DEVICE, DIR_BIDIRECTIONAL):
            pos = 0
            for mv in views:
                n = mv.nbytes
                buf.view[pos : pos + n] = mv
                pos += n
        if direction in (DIR_FROM_DEVICE, DIR_BIDIRECTIONAL):
            mapping.copy_out.append((buf, views))
        self.stats["bounce"] += 1
        return buf

    def map_data(self, req: "HostRequest", queue: HostQueue) -> None:
        cmd = req.cmd
        if req.mapping is not None:  # mapped already (a retry): keep it
            return
        data = req.data
        if len(data) == 1 and not req.meta:
            # The common case: one buffer in host memory reached by PRP1 (and
            # PRP2 when it crosses one page boundary) -- what _map_data decides
            # for it, without a plan, a PRP list or anything to undo.
            mv = data[0]
            total = mv.nbytes
            addr = self.memory.address_of(mv) if total else None
            page = self.page_size
            if (addr is not None and not addr & 3 and (addr % page) + total <= 2 * page
                    and not (self.sgl_threshold > 0 and total >= self.sgl_threshold
                             and self._sgl_usable(queue, [(addr, total)]))):
                second = (addr // page + 1) * page if (addr % page) + total > page else 0
                raw = cmd.raw
                raw[1] &= ~_PSDT_BITS & 0xFF  # PSDT 00b: PRPs
                _PRP_PAIR.pack_into(raw, _PRP1_OFF, addr, second)
                self.stats["direct"] += 1
                self.stats["prp"] += 1
                return
        cmd.psdt = Psdt.PRP  # the driver decides PRP or SGL (Linux clears the user's flags)
        mapping = _Mapping()
        try:
            views = [mv for mv in req.data if mv.nbytes]
            if views:
                self._map_data(req, queue, views, mapping)
            metas = [mv for mv in req.meta if mv.nbytes]
            if metas:
                self._map_meta(req, metas, mapping)
        except Exception:
            self._release(mapping)
            raise
        if views or metas:
            req.mapping = mapping

    def _map_data(self, req: "HostRequest", queue: HostQueue, views: list[memoryview], mapping: _Mapping) -> None:
        total = sum(mv.nbytes for mv in views)
        addrs = [self.memory.address_of(mv) for mv in views]
        if all(addr is not None for addr in addrs):
            segments = [(addr, mv.nbytes) for addr, mv in zip(addrs, views, strict=True)]
        else:
            buf = self._bounce(views, total, req.direction, mapping)
            mapping.bounced = True
            segments = [(buf.addr, total)]
        page = self.page_size
        sgl_ok = self._sgl_usable(queue, segments)
        avg = -(-total // len(segments))
        use_sgl = sgl_ok and self.sgl_threshold > 0 and avg >= self.sgl_threshold
        if not use_sgl and not prp_compatible(segments, page):
            if sgl_ok:
                use_sgl = True  # a scatter list PRPs cannot describe: SGLs avoid a copy
            else:
                buf = self._bounce(views, total, req.direction, mapping)
                mapping.bounced = True
                segments = [(buf.addr, total)]
        if not mapping.bounced:
            self.stats["direct"] += 1
        if use_sgl:
            self._setup_sgl(req, segments, mapping)
        else:
            self._setup_prps(req, segments, total, mapping)

    def _pool_alloc(self, pool: DmaPool, mapping: _Mapping) -> DmaBuffer:
        block = pool.alloc()
        mapping.pool_blocks.append((pool, block))
        return block

    def _setup_prps(self, req: "HostRequest", segments: list[tuple[int, int]], total: int,
                    mapping: _Mapping) -> None:
        page = self.page_size
        pages = _prp_pages(segments, page)
        entries = prp_list_entry_count(segments[0][0], total, page)
        cmd = req.cmd
        if not entries:
            plan = build_prps(pages, total, page)
        else:
            pool = self.small_pool if entries <= SMALL_POOL_SIZE // 8 else self.page_pool
            blocks: dict[int, DmaBuffer] = {}

            def next_list() -> int:
                block = self._pool_alloc(pool, mapping)
                blocks[block.addr] = block
                return block.addr

            plan = build_prps(pages, total, page, next_list)
            for lp in plan.lists:
                struct.pack_into(f"<{len(lp.entries)}Q", blocks[lp.address].view, 0, *lp.entries)
            self.stats["prp_list"] += 1
        cmd.psdt = Psdt.PRP
        cmd.prp1 = plan.prp1
        cmd.prp2 = plan.prp2
        self.stats["prp"] += 1

    def _setup_sgl(self, req: "HostRequest", segments: list[tuple[int, int]], mapping: _Mapping) -> None:
        cmd = req.cmd
        cmd.psdt = Psdt.SGL_MPTR_CONTIGUOUS
        mapping.sgl = True
        self.stats["sgl"] += 1
        if len(segments) == 1:
            cmd.sgl1 = sgl_data_block(*segments[0])
            return
        self.stats["sgl_list"] += 1
        small = SMALL_POOL_SIZE // SGL_DESCRIPTOR_SIZE
        if len(segments) <= small:
            block = self._pool_alloc(self.small_pool, mapping)
            self._write_descriptors(block, segments, None)
            cmd.sgl1 = sgl_last_segment(block.addr, len(segments) * SGL_DESCRIPTOR_SIZE)
            return
        per_page = self.page_size // SGL_DESCRIPTOR_SIZE
        chunks: list[list[tuple[int, int]]] = []
        rest = segments
        while len(rest) > per_page:
            chunks.append(rest[: per_page - 1])
            rest = rest[per_page - 1 :]
        chunks.append(rest)
        blocks = [self._pool_alloc(self.page_pool, mapping) for _ in chunks]
        for i, (chunk, block) in enumerate(zip(chunks, blocks, strict=True)):
            link = None
            if i + 1 < len(chunks):
                link = self._segment_pointer(blocks[i + 1], chunks[i + 1], i + 1 == len(chunks) - 1)
            self._write_descriptors(block, chunk, link)
        cmd.sgl1 = self._segment_pointer(blocks[0], chunks[0], len(chunks) == 1)

    @staticmethod
    def _segment_pointer(block: DmaBuffer, chunk: list, last: bool):
        if last:
            return sgl_last_segment(block.addr, len(chunk) * SGL_DESCRIPTOR_SIZE)
        return sgl_segment(block.addr, (len(chunk) + 1) * SGL_DESCRIPTOR_SIZE)

    @staticmethod
    def _write_descriptors(block: DmaBuffer, segments: list[tuple[int, int]], link) -> None:
        view = block.view
        pos = 0
        for addr, length in segments:
            view[pos : pos + SGL_DESCRIPTOR_SIZE] = sgl_data_block(addr, length).raw
            pos += SGL_DESCRIPTOR_SIZE
        if link is not None:
            view[pos : pos + SGL_DESCRIPTOR_SIZE] = link.raw

    def _map_meta(self, req: "HostRequest", views: list[memoryview], mapping: _Mapping) -> None:
        addr = self.memory.address_of(views[0]) if len(views) == 1 else None
        if addr is None or addr & 3:
            total = sum(mv.nbytes for mv in views)
            addr = self._bounce(views, total, req.direction, mapping).addr
        req.cmd.mptr = addr

    def unmap_data(self, req: "HostRequest") -> None:
        mapping = req.mapping
        if mapping is None:
            return
        req.mapping = None
        try:
            for buf, views in mapping.copy_out:
                pos = 0
                src = buf.view
                for mv in views:
                    n = mv.nbytes
                    mv[:] = src[pos : pos + n]
                    pos += n
        finally:
            self._release(mapping)

    def _release(self, mapping: _Mapping) -> None:
        for pool, block in mapping.pool_blocks:
            pool.free(block)
        mapping.pool_blocks.clear()
        for buf in mapping.bounce:
            try:
                self.memory.free(buf)
            except ValueError:  # pragma: no cover
                pass
        mapping.bounce.clear()

    # ------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.function.remove_sink(self._sink)
        except Exception:  # pragma: no cover
            pass
        with self._lock:
            handlers, self._irq = list(self._irq.values()), {}
        for handler in handlers:
            handler.stop()
        self.remove_queues()
        self.small_pool.destroy()
        self.page_pool.destroy()
        # Buffers from alloc() that were not given back stay allocated: the
        # caller may still hold views of them.

    def __repr__(self) -> str:
        return f"<PciTransport {self.function!r} irq={self.interrupts}>"
