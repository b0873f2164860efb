"""A low-level test API for the PCIe function: a host without a driver.

Everything a driver does is a separate, explicit step, so a test can do it
by hand, skip it or do it wrong::

    fn = PciFunction(subsystem, PhysicalMemory(), mode="inline")
    host = RawHost(fn)
    host.enable_device()                   # PCI command: memory space, bus master
    asq, acq = host.make_queue(8, 64), host.make_queue(8, 16)
    host.set_admin_queues(asq, acq)        # AQA, ASQ, ACQ
    host.write_cc(en=True)                 # CC with EN=1
    host.wait_ready()                      # CSTS.RDY, bounded by CAP.TO
    host.write_sqe(asq, 0, Identify(cid=1, cns=1, prp1=buf.addr))
    host.ring_sq(0, 1)                     # SQ0TDBL = 1
    cqe = host.read_cqe(acq, 0)            # a Completion (copy)
    host.ring_cq(0, 1)                     # CQ0HDBL = 1

or, with the conveniences on top of the same steps::

    admin = host.enable()                  # the handshake above: a QueuePair
    cqe, data = host.identify(cns=1)
    io = host.create_io_queue_pair(1, entries=16)
    cqe = io.command(Read(nsid=1, slba=0, nblocks=8, prp1=buf.addr))

A :class:`QueuePair` keeps the host's side of a pair of rings -- SQ tail,
CQ head and the expected phase -- and never rings a doorbell unless asked
(``post`` writes an entry, ``ring`` rings; ``reap`` consumes completions,
``release`` rings the CQ head doorbell).  ``fired()`` lists the interrupt
vectors the function delivered.

Waiting (``wait_ready``, ``QueuePair.wait``) polls with a deadline, so the
same test runs against the inline and the threaded device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ...memory import DmaBuffer
from ...spec.admin import CreateIoCq, CreateIoSq, DeleteIoCq, DeleteIoSq, Identify
from ...spec.cqe import CQE_SIZE, Completion
from ...spec.layout import Struct
from ...spec.pci import Cfg, PciCommand
from ...spec.registers import (
    Cap,
    Cc,
    Csts,
    Reg,
    Shn,
    Shst,
    cq_head_doorbell,
    sq_tail_doorbell,
)
from ...spec.sqe import SQE_SIZE
from ...spec.status import Status

__all__ = ["DEFAULT_TIMEOUT", "HostCq", "PagedQueue", "QueuePair", "RawHost", "RawQueue"]

DEFAULT_TIMEOUT = 5.0  # seconds of real time any wait gives up after
_POLL = 0.0002


def _wait_for(predicate: Callable[[], Any], timeout: float) -> Any:
    """Poll ``predicate`` until it returns something true or ``timeout``
    seconds (real time) pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(_POLL)


class RawQueue:
    """A ring of ``entries`` entries of ``entry_size`` bytes in host memory,
    physically contiguous: ``addr`` is its base (PRP1 of Create I/O queue
    with PC=1)."""

    contiguous = True

    def __init__(self, buf: DmaBuffer, entries: int, entry_size: int):
        self.buf = buf
        self.entries = entries
        self.entry_size = entry_size

    @property
    def addr(self) -> int:
        return self.buf.addr

    def entry(self, index: int) -> memoryview:
        start = index * self.entry_size
        return self.buf.view[start : start + self.entry_size]

    def __repr__(self) -> str:
        return f"<RawQueue {self.entries}x{self.entry_size} at {self.addr:#x}>"


class PagedQueue(RawQueue):
    """A ring spread over separate memory pages described by a PRP list
    (Create I/O queue with PC=0): ``addr`` is the PRP list's address."""

    contiguous = False

    def __init__(self, pages: list[DmaBuffer], prp_list: DmaBuffer, entries: int, entry_size: int,
                 page_size: int = 4096):
        super().__init__(prp_list, entries, entry_size)
        self.pages = pages
        self.page_size = page_size

    def entry(self, index: int) -> memoryview:
        start = index * self.entry_size
        page = self.pages[start // self.page_size]
        off = start % self.page_size
        return page.view[off : off + self.entry_size]

    def __repr__(self) -> str:
        return f"<PagedQueue {self.entries}x{self.entry_size} in {len(self.pages)} pages>"


class HostCq:
    """The host side of a completion queue: its head and the phase tag it
    expects (shared by every pair whose SQ posts to it)."""

    def __init__(self, host: RawHost, qid: int, queue: RawQueue):
        self.host = host
        self.qid = qid
        self.queue = queue
        self.head = 0
        self.phase = 1
        # Completions reaped while waiting for another command's.
        self.unclaimed: list[Completion] = []

    def peek(self) -> Completion | None:
        """The completion at the head if the device posted it (phase tag
        matches), else None."""
        cqe = self.host.read_cqe(self.queue, self.head)
        return cqe if cqe.phase == self.phase else None

    def reap(self, limit: int | None = None) -> list[Completion]:
        """Consume the posted completions (the host's head moves; no doorbell)."""
        out = []
        while limit is None or len(out) < limit:
            cqe = self.peek()
            if cqe is None:
                break
            out.append(cqe)
            self.head = (self.head + 1) % self.queue.entries
            if self.head == 0:
                self.phase ^= 1
        return out

    def release(self) -> None:
        """CQ head doorbell with the host's head."""
        self.host.ring_cq(self.qid, self.head)

    def wait(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT, *, release: bool = True) -> list[Completion]:
        """Reap until ``count`` completions arrived (fewer on timeout), then
        ring the CQ head doorbell (unless ``release`` is False)."""
        got: list[Completion] = []

        def more() -> bool:
            got.extend(self.reap(count - len(got)))
            return len(got) >= count

        _wait_for(more, timeout)
        if got and release:
            self.release()
        return got

    def claim(self, sqid: int, cid: int, timeout: float = DEFAULT_TIMEOUT) -> Completion | None:
        """Wait for the completion of (``sqid``, ``cid``), keeping the others
        in ``unclaimed``; releases what it reaps."""

        def find() -> Completion | None:
            for cqe in self.unclaimed:
                if cqe.cid == cid and cqe.sqid == sqid:
                    self.unclaimed.remove(cqe)
                    return cqe
            return None

        def mine() -> Completion | None:
            found = find()
            if found is None:
                reaped = self.reap()
                if reaped:
                    self.release()
                    self.unclaimed.extend(reaped)
                    found = find()
            return found

        return _wait_for(mine, timeout)

    def __repr__(self) -> str:
        return f"<HostCq {self.qid} head={self.head} phase={self.phase}>"


class QueuePair:
    """The host side of a submission queue and the completion queue it uses."""

    def __init__(self, host: RawHost, qid: int, sq: RawQueue, cq: HostCq):
        self.host = host
        self.qid = qid
        self.sq = sq
        self.cq = cq
        self.sq_tail = 0
        self.next_cid = 1

    # -- submission ----------------------------------------------------------

    def post(self, sqe: Any, *, cid: int | None = None) -> int:
        """Write ``sqe`` at the SQ tail and move the host's tail (no
        doorbell); ``cid`` replaces the entry's command identifier.  Returns
        the command identifier."""
        raw = bytearray(bytes(sqe.raw if isinstance(sqe, Struct) else sqe)[:SQE_SIZE])
        if cid is not None:
            raw[2:4] = (cid & 0xFFFF).to_bytes(2, "little")
        self.host.write_sqe(self.sq, self.sq_tail, raw)
        self.sq_tail = (self.sq_tail + 1) % self.sq.entries
        return int.from_bytes(raw[2:4], "little")

    def ring(self) -> None:
        """SQ tail doorbell with the host's tail."""
        self.host.ring_sq(self.qid, self.sq_tail)

    def submit(self, sqe: Any, *, cid: int | None = None) -> int:
        cid = self.post(sqe, cid=cid)
        self.ring()
        return cid

    def new_cid(self) -> int:
        cid = self.next_cid
        self.next_cid = cid % 0xFFFF + 1
        return cid

    # -- completion (the CQ's) --------------------------------------------------

    def peek(self) -> Completion | None:
        return self.cq.peek()

    def reap(self, limit: int | None = None) -> list[Completion]:
        return self.cq.reap(limit)

    def release(self) -> None:
        self.cq.release()

    def wait(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT, *, release: bool = True) -> list[Completion]:
        return self.cq.wait(count, timeout, release=release)

    def command(self, sqe: Any, timeout: float = DEFAULT_TIMEOUT) -> Completion:
        """Submit ``sqe`` with a fresh command identifier and wait for its
        completion (others that arrive meanwhile stay in ``cq.unclaimed``).
        Raises TimeoutError when none comes."""
        cid = self.submit(sqe, cid=self.new_cid())
        cqe = self.cq.claim(self.qid, cid, timeout)
        if cqe is None:
            raise TimeoutError(f"no completion for command {cid:#x} on queue {self.qid}")
        return cqe

    def __repr__(self) -> str:
        return f"<QueuePair {self.qid} sq_tail={self.sq_tail} cq={self.cq!r}>"


class RawHost:
    """Drives a :class:`~nvmestack.target.pci.function.PciFunction` through
    configuration space, BAR0 and host memory only."""

    def __init__(self, function: Any):
        self.function = function
        self.memory = function.memory
        self.admin: QueuePair | None = None
        # Host side of the I/O completion queues created through this host.
        self.io_cqs: dict[int, HostCq] = {}
        self.buffers: list[DmaBuffer] = []

    # -- configuration space ---------------------------------------------------

    def cfg_read(self, offset: int, size: int = 4) -> int:
        return self.function.config_read(offset, size)

    def cfg_write(self, offset: int, size: int, value: int) -> None:
        self.function.config_write(offset, size, value)

    def set_command_bits(self, bits: int, on: bool = True) -> None:
        command = self.cfg_read(Cfg.COMMAND, 2)
        self.cfg_write(Cfg.COMMAND, 2, command | bits if on else command & ~bits)

    def enable_device(self, *, memory_space: bool = True, bus_master: bool = True) -> None:
        """PCI Command register: Memory Space and Bus Master Enable."""
        self.set_command_bits(PciCommand.MEMORY_SPACE, memory_space)
        self.set_command_bits(PciCommand.BUS_MASTER, bus_master)

    def set_bus_master(self, on: bool) -> None:
        self.set_command_bits(PciCommand.BUS_MASTER, on)

    def function_level_reset(self) -> None:
        """Device Control: Initiate Function Level Reset."""
        off = self.function.config.pcie_offset + 8
        self.cfg_write(off, 2, self.cfg_read(off, 2) | 1 << 15)

    def enable_msix(self, *, unmask: bool = True) -> None:
        """MSI-X Enable (Function Mask clear) and, with ``unmask``, every table
        entry unmasked."""
        off = self.function.config.msix_offset + 2
        self.cfg_write(off, 2, (self.cfg_read(off, 2) | 1 << 15) & ~(1 << 14))
        if unmask:
            for vector in range(self.function.msix_vectors):
                self.msix_mask(vector, False)

    def msix_mask(self, vector: int, masked: bool) -> None:
        """Vector Control of MSI-X table entry ``vector``."""
        base = self.function.config.msix_table_offset + 16 * vector
        self.bar_write32(base + 12, 1 if masked else 0)

    # -- BAR0 ---------------------------------------------------------------------

    def bar_read32(self, offset: int) -> int:
        return self.function.mmio_read(offset, 4)

    def bar_write32(self, offset: int, value: int) -> None:
        self.function.mmio_write(offset, 4, value)

    def bar_read64(self, offset: int) -> int:
        return self.function.mmio_read(offset, 8)

    def bar_write64(self, offset: int, value: int) -> None:
        self.function.mmio_write(offset, 8, value)

    @property
    def cap(self) -> Cap:
        return Cap.view(bytearray(self.bar_read64(Reg.CAP).to_bytes(8, "little")))

    @property
    def csts(self) -> Csts:
        return Csts.view(bytearray(self.bar_read32(Reg.CSTS).to_bytes(4, "little")))

    @property
    def cc(self) -> Cc:
        return Cc.view(bytearray(self.bar_read32(Reg.CC).to_bytes(4, "little")))

    def sq_doorbell(self, qid: int) -> int:
        return sq_tail_doorbell(qid, self.cap.dstrd)

    def cq_doorbell(self, qid: int) -> int:
        return cq_head_doorbell(qid, self.cap.dstrd)

    def ring_sq(self, qid: int, tail: int) -> None:
        self.bar_write32(self.sq_doorbell(qid), tail)

    def ring_cq(self, qid: int, head: int) -> None:
        self.bar_write32(self.cq_doorbell(qid), head)

    # -- host memory -----------------------------------------------------------

    def alloc(self, size: int, align: int = 4096) -> DmaBuffer:
        buf = self.memory.allocate(size, align)
        self.buffers.append(buf)
        return buf

    def make_queue(self, entries: int, entry_size: int) -> RawQueue:
        """A zeroed, page aligned ring (physically contiguous)."""
        return RawQueue(self.alloc(entries * entry_size), entries, entry_size)

    def make_paged_queue(self, entries: int, entry_size: int, page_size: int = 4096) -> PagedQueue:
        """A ring in separately allocated pages (not adjacent, in reverse
        address order) and the PRP list that describes it."""
        count = -(-entries * entry_size // page_size)
        pages = []
        for _ in range(count):
            pages.append(self.alloc(page_size, page_size))
            self.alloc(page_size, page_size)  # a gap: the pages are not contiguous
        pages.reverse()
        prp_list = self.alloc(max(8 * count, 8), page_size)
        for i, page in enumerate(pages):
            prp_list.view[8 * i : 8 * i + 8] = page.addr.to_bytes(8, "little")
        return PagedQueue(pages, prp_list, entries, entry_size, page_size)

    def write_sqe(self, queue: RawQueue, index: int, sqe: Any) -> None:
        raw = bytes(sqe.raw if isinstance(sqe, Struct) else sqe)[:SQE_SIZE]
        queue.entry(index)[:] = raw.ljust(queue.entry_size, b"\0")[: queue.entry_size]

    def read_cqe(self, queue: RawQueue, index: int) -> Completion:
        return Completion.from_bytes(bytes(queue.entry(index)[:CQE_SIZE]))

    # -- interrupts ---------------------------------------------------------------

    def fired(self) -> list[int]:
        """Vectors of the interrupts delivered so far (oldest first)."""
        return [vector for vector, _t in list(self.function.interrupts.fired)]

    def clear_fired(self) -> None:
        self.function.interrupts.fired.clear()

    def settle(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Wait until the device has processed every doorbell so far (a
        no-op for the inline device)."""
        return self.function.wait_idle(timeout)

    # -- the controller handshake, step by step -------------------------------------

    @property
    def timeout(self) -> float:
        """CAP.TO in seconds."""
        return self.cap.to * 0.5

    def wait_ready(self, ready: bool = True, timeout: float | None = None) -> bool:
        """Wait (at most CAP.TO) for CSTS.RDY to read ``ready``; True if it did."""
        limit = self.timeout if timeout is None else timeout
        return bool(_wait_for(lambda: bool(self.bar_read32(Reg.CSTS) & 1) == ready, limit))

    def set_admin_queues(self, asq: RawQueue, acq: RawQueue) -> None:
        """AQA (0's based sizes), ASQ and ACQ (as two 64-bit writes)."""
        self.bar_write32(Reg.AQA, (asq.entries - 1) | (acq.entries - 1) << 16)
        self.bar_write64(Reg.ASQ, asq.addr)
        self.bar_write64(Reg.ACQ, acq.addr)

    def write_cc(self, *, en: bool = True, mps: int = 0, ams: int = 0, shn: int = 0, css: int = 0,
                 iosqes: int = 6, iocqes: int = 4) -> int:
        """Write CC from its fields; returns the value written."""
        value = (int(en) | css << 4 | mps << 7 | ams << 11 | shn << 14 | iosqes << 16 | iocqes << 20)
        self.bar_write32(Reg.CC, value)
        return value

    def enable(self, *, admin_entries: int = 32, mps: int = 0, ams: int = 0, css: int = 0,
               timeout: float | None = None) -> QueuePair:
        """The initialisation handshake: disable if enabled and wait for
        RDY=0, admin queues (AQA/ASQ/ACQ), CC with EN=1, wait for RDY=1.
        Returns (and keeps as ``admin``) the admin queue pair."""
        if not self.cfg_read(Cfg.COMMAND, 2) & PciCommand.MEMORY_SPACE:
            raise RuntimeError("memory space is disabled: BAR0 is not decoded (call enable_device())")
        if self.bar_read32(Reg.CC) & 1:
            self.write_cc(en=False)
        if not self.wait_ready(False, timeout):
            raise TimeoutError("CSTS.RDY did not clear")
        asq = self.make_queue(admin_entries, SQE_SIZE)
        acq = self.make_queue(admin_entries, CQE_SIZE)
        self.set_admin_queues(asq, acq)
        self.write_cc(en=True, mps=mps, ams=ams, css=css)
        if not self.wait_ready(True, timeout):
            raise TimeoutError(f"CSTS.RDY did not set (CSTS {self.bar_read32(Reg.CSTS):#x})")
        self.admin = QueuePair(self, 0, asq, HostCq(self, 0, acq))
        self.io_cqs.clear()
        return self.admin

    def bring_up(self, **options: Any) -> QueuePair:
        """enable_device() then enable()."""
        self.enable_device()
        return self.enable(**options)

    def disable(self, timeout: float | None = None) -> bool:
        """CC.EN = 0 (keeping the other fields) and wait for RDY=0."""
        self.bar_write32(Reg.CC, self.bar_read32(Reg.CC) & ~1)
        self.admin = None
        self.io_cqs.clear()
        return self.wait_ready(False, timeout)

    def shutdown(self, abrupt: bool = False, timeout: float | None = None) -> bool:
        """CC.SHN normal (or abrupt) and wait for CSTS.SHST = complete."""
        cc = self.bar_read32(Reg.CC) & ~(3 << 14)
        self.bar_write32(Reg.CC, cc | (Shn.ABRUPT if abrupt else Shn.NORMAL) << 14)
        limit = self.timeout if timeout is None else timeout
        return bool(_wait_for(lambda: (self.bar_read32(Reg.CSTS) >> 2) & 3 == Shst.COMPLETE, limit))

    # -- admin conveniences (on the raw rings) --------------------------------------

    def _admin(self) -> QueuePair:
        if self.admin is None:
            raise RuntimeError("the controller is not enabled (call enable())")
        return self.admin

    def admin_command(self, sqe: Any, data: int | bytes = 0,
                      timeout: float = DEFAULT_TIMEOUT) -> tuple[Completion, DmaBuffer | None]:
        """Run an admin command: ``data`` is a transfer length (a zeroed
        buffer) or bytes to send; the buffer (page aligned, at most two
        pages) goes in PRP1/PRP2.  Returns (completion, buffer)."""
        buf = None
        if data:
            length = data if isinstance(data, int) else len(data)
            buf = self.alloc(max(length, 1))
            if not isinstance(data, int):
                buf.view[: len(data)] = data
            sqe.prp1 = buf.addr
            if length > 4096:
                sqe.prp2 = buf.addr + 4096
        return self._admin().command(sqe, timeout), buf

    def identify(self, cns: int, nsid: int = 0, **fields: Any) -> tuple[Completion, bytes]:
        cqe, buf = self.admin_command(Identify(cns=cns, nsid=nsid, **fields), 4096)
        return cqe, bytes(buf.view[:4096])

    def create_io_cq(self, qid: int, entries: int, *, ien: bool = False, iv: int = 0,
                     queue: RawQueue | None = None) -> tuple[Completion, RawQueue]:
        queue = queue or self.make_queue(entries, CQE_SIZE)
        cmd = CreateIoCq(qid=qid, prp1=queue.addr, pc=queue.contiguous, ien=ien, iv=iv)
        cmd.entries = entries
        cqe, _ = self.admin_command(cmd)
        return cqe, queue

    def create_io_sq(self, qid: int, entries: int, cqid: int, *, qprio: int = 0,
                     queue: RawQueue | None = None) -> tuple[Completion, RawQueue]:
        queue = queue or self.make_queue(entries, SQE_SIZE)
        cmd = CreateIoSq(qid=qid, prp1=queue.addr, pc=queue.contiguous, cqid=cqid, qprio=qprio)
        cmd.entries = entries
        cqe, _ = self.admin_command(cmd)
        return cqe, queue

    def create_io_queue_pair(self, qid: int, entries: int = 16, *, cq_entries: int | None = None,
                             ien: bool = False, iv: int = 0, qprio: int = 0,
                             cqid: int | None = None, paged: bool = False) -> QueuePair:
        """Create I/O CQ ``cqid`` (default ``qid``; not again when this host
        created it already) and I/O SQ ``qid`` on it (``paged``: rings in
        PRP-list-described pages); raises RuntimeError with the status if
        the device refused."""
        cqid = qid if cqid is None else cqid
        make = self.make_paged_queue if paged else self.make_queue
        if cqid not in self.io_cqs:
            n = cq_entries or entries
            cqe, cq = self.create_io_cq(cqid, n, ien=ien, iv=iv, queue=make(n, CQE_SIZE))
            if Status.of(cqe).value & 0x7FF:
                raise RuntimeError(f"Create I/O CQ {cqid}: {Status.of(cqe)}")
            self.io_cqs[cqid] = HostCq(self, cqid, cq)
        cqe, sq = self.create_io_sq(qid, entries, cqid, qprio=qprio, queue=make(entries, SQE_SIZE))
        if Status.of(cqe).value & 0x7FF:
            raise RuntimeError(f"Create I/O SQ {qid}: {Status.of(cqe)}")
        return QueuePair(self, qid, sq, self.io_cqs[cqid])

    def delete_io_sq(self, qid: int) -> Completion:
        return self.admin_command(DeleteIoSq(qid=qid))[0]

    def delete_io_cq(self, qid: int) -> Completion:
        cqe = self.admin_command(DeleteIoCq(qid=qid))[0]
        if not Status.of(cqe).value & 0x7FF:
            self.io_cqs.pop(qid, None)
        return cqe
