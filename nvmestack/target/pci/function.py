"""The NVMe controller as a PCIe function: configuration space, BAR0
(controller registers, doorbells, MSI-X table and PBA), the queues in host
memory and the interrupts around the target core's controller.

BAR0 layout (NVMe over PCIe; offsets of the MSI-X structures come from the
configuration space)::

    0000h-0FFFh  controller registers (CAP, VS, INTMS, INTMC, CC, CSTS, NSSR,
                 AQA, ASQ, ACQ; everything else reads 0 and ignores writes)
    1000h-       doorbells: SQyTDBL at 1000h + (2y) * (4 << CAP.DSTRD),
                 CQyHDBL at 1000h + (2y + 1) * (4 << CAP.DSTRD)
    table, PBA   MSI-X (the interrupt logic)

Register semantics are the core's (``Controller.get_property`` /
``set_property``): this module adds what belongs to the PCIe function --
the delay between CC.EN and CSTS.RDY (``ready_delay``, within CAP.TO; the
host sees RDY change only when the delay has passed, in both directions),
the admin queues set up from AQA/ASQ/ACQ at enable (an invalid size or a
misaligned base address: CSTS.CFS), shutdown with the submitted commands
processed first (normal) or not (abrupt), the controller reset deleting
every queue and ending outstanding commands without completions, NVM
Subsystem Reset, and Function Level Reset from configuration space.

Accesses: 4- and 8-byte, naturally aligned (an 8-byte access to two 4-byte
registers is two 4-byte accesses; a 4-byte access to half of CAP, ASQ or
ACQ reads or writes that half); 1- and 2-byte reads return the bytes of the
dword; smaller or misaligned writes are dropped.  Doorbells take 4-byte
writes and read 0.  With Memory Space Enable clear BAR0 reads all ones and
writes are dropped; with Bus Master Enable clear the device neither fetches
nor posts (it resumes when the bit is set again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ...spec.features import FeatureId
from ...spec.registers import (
    DOORBELL_BASE,
    REGISTER_FILE_SIZE,
    Reg,
    Shn,
    Shst,
    doorbell_decode,
)
from ..errors import NvmeError
from ..fastpath import ENABLED as FAST_PATH_ENABLED
from ..features import MAX_IO_QUEUES
from .config import MSIX_TABLE_OFFSET, ConfigSpace
from .dma import map_request
from .interrupts import Interrupts
from .queues import QueueManager

__all__ = ["DEFAULT_READY_DELAY", "PciFunction"]

log = logging.getLogger(__name__)

DEFAULT_READY_DELAY = 0.002  # seconds between CC.EN and CSTS.RDY following it
_CSTS_RDY = 1 << 0
_CSTS_SHST_MASK = 0x3 << 2
_CSTS_NSSRO = 1 << 4


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def _pow2_at_least(value: int) -> int:
    size = 1
    while size < value:
        size <<= 1
    return size


FAST_PATH = FAST_PATH_ENABLED
"""Whether functions use the I/O fast path unless told (``NVMESTACK_FAST_PATH=0``)."""

class PciFunction:
    """One NVMe controller of ``subsystem`` behind a PCIe function, over host
    ``memory`` (a :class:`~nvmestack.memory.PhysicalMemory`).

    ``mode``: "thread" (the device runs on its own thread, woken by
    doorbells) or "inline" (a doorbell write processes what it made
    available before it returns).  ``msix_vectors``: MSI-X table entries
    (default one per queue: the admin queue and 64 I/O queues).  ``sgl``:
    SGLs supported for I/O commands.  ``ready_delay``: seconds between a
    change of CC.EN (or CC.SHN) and CSTS following it, at most CAP.TO.
    ``clock``: the time source for that delay (tests pass a fake one);
    ``interrupt_clock`` the one of interrupt coalescing (see interrupts.py:
    in inline mode, or with a clock given, expired aggregations fire on the
    next completion or ``interrupts.poll()``, not from a timer thread).
    ``contiguous_queues``: CAP.CQR (False allows queues described by PRP
    lists).  ``sink``: called with the vector of every interrupt message
    the function sends (more with :meth:`add_sink`).
    """

    def __init__(
        self,
        subsystem: Any,
        memory: Any,
        *,
        mode: str = "thread",
        msix_vectors: int = MAX_IO_QUEUES + 1,
        sgl: bool = True,
        ready_delay: float = DEFAULT_READY_DELAY,
        clock: Callable[[], float] = time.monotonic,
        contiguous_queues: bool = True,
        dstrd: int = 0,
        cntlid: int | None = None,
        sink: Callable[[int], None] | None = None,
        interrupt_clock: Callable[[], float] | None = None,
        controller_options: dict[str, Any] | None = None,
        fast_path: bool | None = None,
        **config_options: Any,
    ):
        if mode not in ("thread", "inline"):
            raise ValueError(f"mode must be 'thread' or 'inline', not {mode!r}")
        if not 0 <= dstrd <= 15:
            raise ValueError(f"DSTRD {dstrd} out of range 0..15")
        self.subsystem = subsystem
        self.memory = memory
        self.mode = mode
        self.sgl = sgl
        # Read/Write/Flush with PRPs on I/O queues take the fast path when they
        # can (fastpath.py); False runs every command on the general path.
        self.fast_path = FAST_PATH if fast_path is None else fast_path
        self.msix_vectors = msix_vectors
        self.clock = clock
        self.dstrd = dstrd
        self._sinks: list[Callable[[int], None]] = [sink] if sink is not None else []
        self._closed = False
        self._tls = threading.local()
        # Serialises register writes (CC, NSSR) and FLR with each other.
        self._reg_lock = threading.RLock()

        # BAR0: registers, the doorbells of queues 0..MAX_IO_QUEUES, then
        # the MSI-X table and PBA on their own pages.
        stride = 4 << dstrd
        doorbells_end = DOORBELL_BASE + 2 * (MAX_IO_QUEUES + 1) * stride
        table = max(MSIX_TABLE_OFFSET, _align_up(doorbells_end, 0x1000))
        pba = _align_up(table + 16 * msix_vectors, 0x1000)
        bar0_size = max(0x4000, _pow2_at_least(pba + _align_up(-(-msix_vectors // 64) * 8, 0x1000)))
        self.queues = QueueManager(self, mode=mode)
        # The subsystem's PCI ids, when it names them, are the function's.
        for option, attr in (("vendor_id", "vid"), ("subsystem_vendor_id", "ssvid")):
            if getattr(subsystem, attr, None) is not None:
                config_options.setdefault(option, getattr(subsystem, attr))
        self.config = ConfigSpace(msix_vectors, bar0_size, on_flr=self._function_level_reset,
                                  msix_table_offset=table, **config_options)
        self.bar0_size = bar0_size
        self.doorbells_end = min(self.config.msix_table_offset, self.config.msix_pba_offset)
        self.interrupts = Interrupts(self.config, msix_vectors, sink=self._deliver, clock=interrupt_clock,
                                     timer=False if mode == "inline" else None)
        self._bus_master = self.config.bus_master_enabled
        self.config.add_listener(self._config_changed)

        # controller_options go to the core's Controller (mqes, mdts, timeout_units).
        self.controller = subsystem.add_controller(
            cntlid=cntlid, queue_ops=self.queues, fabrics=False, **(controller_options or {})
        )
        ctrl = self.controller
        with ctrl.lock:
            ctrl.regs.cap.cqr = bool(contiguous_queues)
            ctrl.regs.cap.dstrd = dstrd
        ctrl.sgl_supported = bool(sgl)
        # Identify Controller VID/SSVID are the configuration space's ids.
        ctrl.pci_ids = (self.config.vendor_id, self.config.subsystem_vendor_id)
        timeout = ctrl.regs.cap.to * 0.5
        if not 0 <= ready_delay <= timeout:
            subsystem.remove_controller(ctrl)
            self.queues.close()
            raise ValueError(f"ready_delay {ready_delay} s is not within CAP.TO ({timeout} s)")
        self.ready_delay = ready_delay
        # CSTS.RDY as the host sees it: `_rdy` from `_rdy_at` on, `_rdy_before` until then.
        self._rdy = False
        self._rdy_before = False
        self._rdy_at = 0.0
        # CSTS.SHST reads "occurring" until this time after a shutdown notification.
        self._shst_done_at = 0.0
        ctrl.reset_hooks.append(self._controller_reset)

    # ------------------------------------------------------------------
    # configuration space

    def config_read(self, offset: int, size: int = 4) -> int:
        return self.config.read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.config.write(offset, size, value)

    def _config_changed(self) -> None:
        """After each configuration write: Bus Master Enable set again lets
        the device post what waited and fetch again."""
        enabled = self.config.bus_master_enabled
        was, self._bus_master = self._bus_master, enabled
        if enabled and not was and not self._closed:
            self.queues.resume()

    # ------------------------------------------------------------------
    # interrupts

    def add_sink(self, sink: Callable[[int], None]) -> None:
        """Call ``sink(vector)`` for every interrupt message delivered."""
        self._sinks.append(sink)

    def remove_sink(self, sink: Callable[[int], None]) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def _defer_sinks(self, delta: int) -> None:
        """While this thread posts completions (post lock held), interrupt
        deliveries wait; :meth:`_flush_sinks` makes them afterwards."""
        self._tls.defer = getattr(self._tls, "defer", 0) + delta

    def _flush_sinks(self) -> None:
        if getattr(self._tls, "defer", 0):
            return
        pending = getattr(self._tls, "pending", None)
        while pending:
            self._call_sinks(pending.pop(0))

    def _deliver(self, vector: int) -> None:
        """The interrupt logic delivered ``vector``: tell the host's sinks
        (later when this thread holds the post lock)."""
        if getattr(self._tls, "defer", 0):
            pending = getattr(self._tls, "pending", None)
            if pending is None:
                pending = self._tls.pending = []
            pending.append(vector)
            return
        self._call_sinks(vector)

    def _call_sinks(self, vector: int) -> None:
        for sink in list(self._sinks):
            try:
                sink(vector)
            except Exception:  # the host's handler must not break the device
                log.exception("interrupt sink failed")

    def _interrupt(self, vector: int, coalesce: bool) -> None:
        """A completion was posted to a queue with interrupts enabled."""
        try:
            self.interrupts.cq_completion(vector, coalesce)
        except Exception:
            log.exception("interrupt for vector %d", vector)

    def _irq_outstanding(self, vector: int, qid: int, outstanding: bool) -> None:
        """Completion queue ``qid`` on ``vector`` has (or no longer has)
        entries the host has not consumed: the pin-based level and pending
        bits follow."""
        try:
            self.interrupts.set_outstanding(vector, outstanding, qid)
        except Exception:
            log.exception("interrupt state of vector %d", vector)

    def _apply_coalescing(self) -> None:
        """Push features 08h (Interrupt Coalescing) and 09h (Interrupt Vector
        Configuration) to the interrupt logic."""
        features = self.controller.features
        value = features.value(FeatureId.IRQ_COALESCE)
        try:
            self.interrupts.set_coalescing(value & 0xFF, (value >> 8) & 0xFF)
            for vector in range(self.msix_vectors):
                config = features._dword(FeatureId.IRQ_CONFIG, vector, 0)
                self.interrupts.set_vector_config(vector, bool(config >> 16 & 1))
        except Exception:
            log.exception("interrupt coalescing configuration")

    def _admin_completed(self, req) -> None:
        """An admin command completed: a successful Set Features of 08h/09h
        reconfigures coalescing."""
        if req.opcode == 0x09 and not req.status.value & 0x7FF:
            fid = req.sqe.cdw10 & 0xFF
            if fid == FeatureId.IRQ_COALESCE:
                value = self.controller.features.value(FeatureId.IRQ_COALESCE)
                self.interrupts.set_coalescing(value & 0xFF, (value >> 8) & 0xFF)
            elif fid == FeatureId.IRQ_CONFIG:
                vector = req.sqe.cdw11 & 0xFFFF
                config = self.controller.features._dword(FeatureId.IRQ_CONFIG, vector, 0)
                self.interrupts.set_vector_config(vector, bool(config >> 16 & 1))

    # ------------------------------------------------------------------
    # DMA

    def map_request(self, req) -> None:
        """Map a prepared request's data pointers (NvmeError when invalid)."""
        try:
            map_request(self.memory, req, page_size=self.queues.page_size, sgl_supported=self.sgl)
        except NvmeError:
            raise
        except Exception as exc:  # a walker bug is an internal error, not a crash
            log.exception("mapping %r", req)
            from ...spec.status import GenericStatus

            raise NvmeError(GenericStatus.INTERNAL_ERROR, dnr=False, msg=str(exc)) from None


    # ------------------------------------------------------------------
    # BAR0

    def mmio_read(self, offset: int, size: int = 4) -> int:
        """Read ``size`` (1, 2, 4 or 8) bytes of BAR0 at ``offset``."""
        if size not in (1, 2, 4, 8):
            return 0
        ones = (1 << (8 * size)) - 1
        if self._closed or not self.config.memory_space_enabled:
            return ones
        if offset < 0 or offset + size > self.bar0_size:
            return ones
        if self._in_msix(offset):
            if size in (4, 8) and offset % size == 0:
                return self.interrupts.msix_read(offset, size)
            dword = self.interrupts.msix_read(offset & ~3, 4)
            return (dword >> (8 * (offset & 3))) & ones
        if size == 8:
            if offset & 3:
                return 0
            return self._read_dword(offset) | self._read_dword(offset + 4) << 32
        dword = self._read_dword(offset & ~3)
        shift = 8 * (offset & 3)
        if shift + 8 * size > 32:
            return 0  # a misaligned access crossing a dword
        return (dword >> shift) & ones

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """Write ``size`` (4 or 8) bytes of BAR0 at ``offset``."""
        if size not in (1, 2, 4, 8) or self._closed or not self.config.memory_space_enabled:
            return
        if offset < 0 or offset + size > self.bar0_size:
            return
        value = int(value) & ((1 << (8 * size)) - 1)
        if self._in_msix(offset):
            self.interrupts.msix_write(offset, size, value)
            return
        if size < 4 or offset % 4:
            return  # registers and doorbells take dword (or qword) writes
        if offset >= REGISTER_FILE_SIZE:
            if size == 4:
                self._write_doorbell(offset, value)
            return
        if size == 8:
            if offset in (Reg.ASQ, Reg.ACQ):
                self.controller.set_property(offset, 8, value)
                return
            self._write_dword(offset, value & 0xFFFFFFFF)
            self._write_dword(offset + 4, value >> 32)
            return
        self._write_dword(offset, value)

    def _in_msix(self, offset: int) -> bool:
        cfg = self.config
        return (cfg.msix_table_offset <= offset < cfg.msix_table_offset + cfg.msix_table_size
                or cfg.msix_pba_offset <= offset < cfg.msix_pba_offset + cfg.msix_pba_size)

    # registers

    def _read_dword(self, offset: int) -> int:
        if offset >= REGISTER_FILE_SIZE:
            return 0  # doorbells (write-only) and the unused rest of BAR0
        if offset == Reg.CSTS:
            return self._csts()
        if offset in (Reg.INTMS, Reg.INTMC):
            if self.config.msix_enabled:
                return 0  # reserved with MSI-X
            return int(self.interrupts.intms_value) & 0xFFFFFFFF
        if offset == Reg.NSSR:
            return 0
        return self.controller.get_property(offset, 4)

    def _csts(self) -> int:
        value = self.controller.get_property(Reg.CSTS, 4) & ~(_CSTS_RDY | _CSTS_SHST_MASK)
        now = self.clock()
        if self._rdy if now >= self._rdy_at else self._rdy_before:
            value |= _CSTS_RDY
        shst = (self.controller.get_property(Reg.CSTS, 4) >> 2) & 3
        if shst == Shst.COMPLETE and now < self._shst_done_at:
            shst = Shst.OCCURRING
        return value | shst << 2

    def host_ready(self) -> bool:
        """CSTS.RDY as the host reads it now."""
        return bool(self._csts() & _CSTS_RDY)

    def _visible_rdy(self) -> bool:
        return self._rdy if self.clock() >= self._rdy_at else self._rdy_before

    def _set_rdy(self, ready: bool, delay: float, before: bool | None = None) -> None:
        """The host sees RDY = ``ready`` from ``delay`` seconds on, and until
        then what it saw (``before``, default: what it sees now)."""
        now = self.clock()
        self._rdy_before = self._visible_rdy() if before is None else before
        self._rdy = ready
        self._rdy_at = now + delay

    def _write_dword(self, offset: int, value: int) -> None:
        ctrl = self.controller
        if offset == Reg.CC:
            self._write_cc(value)
        elif offset == Reg.CSTS:
            if value & _CSTS_NSSRO:
                ctrl.set_property(Reg.CSTS, 4, _CSTS_NSSRO)  # RW1C
        elif offset == Reg.NSSR:
            self._write_nssr(value)
        elif offset == Reg.INTMS:
            if not self.config.msix_enabled:
                self.interrupts.intms_write(value)
        elif offset == Reg.INTMC:
            if not self.config.msix_enabled:
                self.interrupts.intmc_write(value)
        elif offset in (Reg.AQA, Reg.ASQ, Reg.ASQ + 4, Reg.ACQ, Reg.ACQ + 4):
            ctrl.set_property(offset, 4, value)
        # Everything else is read-only or reserved: the write is ignored.

    def _admin_queue_config(self, mps: int) -> tuple[int, int, int, int] | None:
        """(ASQ entries, ACQ entries, ASQ, ACQ) from AQA/ASQ/ACQ, or None when
        they cannot make admin queues: a size below 2 entries (ASQS/ACQS are
        0's based: 0 is invalid) or a base not aligned to the memory page
        size CC.MPS is enabling."""
        regs = self.controller.regs
        cc_mps_page = 1 << (12 + mps)
        asqs, acqs = regs.aqa.asqs, regs.aqa.acqs
        asq, acq = regs.asq.value, regs.acq.value
        if asqs < 1 or acqs < 1:
            return None
        if asq & (cc_mps_page - 1) or acq & (cc_mps_page - 1):
            return None
        return asqs + 1, acqs + 1, asq, acq

    def _write_cc(self, value: int) -> None:
        ctrl = self.controller
        with self._reg_lock:
            old = ctrl.regs.cc.value
            was_enabled, enable = bool(old & 1), bool(value & 1)
            old_shn, shn = (old >> 14) & 3, (value >> 14) & 3
            if shn in (Shn.NORMAL, Shn.ABRUPT) and old_shn == Shn.NONE:
                # Shutdown: a normal one lets the device finish what was
                # submitted (completions posted), an abrupt one stops now.
                if shn == Shn.NORMAL and was_enabled:
                    self.queues.drain(timeout=max(self.ready_delay, 1.0) + ctrl.regs.cap.to * 0.5)
                self.queues.stop()
                self._shst_done_at = self.clock() + self.ready_delay
            if was_enabled and not enable:
                seen = self._visible_rdy()
                with self.queues.gate:
                    ctrl.set_property(Reg.CC, 4, value)  # reset: hooks tear the queues down
                self._set_rdy(False, self.ready_delay, before=seen)
                return
            if enable and not was_enabled:
                with self.queues.gate:
                    admin = self._admin_queue_config((value >> 7) & 0xF)
                    ctrl.set_property(Reg.CC, 4, value)
                    with ctrl.lock:
                        started = bool(ctrl.regs.csts.rdy)
                        if started and admin is None:
                            ctrl.regs.csts.rdy = False
                            ctrl.regs.csts.cfs = True
                            started = False
                    if started:
                        asqs, acqs, asq, acq = admin
                        self.queues.setup_admin(asqs, acqs, asq, acq, page_size=ctrl.page_size,
                                                ams=ctrl.regs.cc.ams)
                if started:
                    self._apply_coalescing()
                    self._set_rdy(True, self.ready_delay)
                return
            ctrl.set_property(Reg.CC, 4, value)
            if shn == Shn.NONE and old_shn != Shn.NONE:
                self._shst_done_at = 0.0

    def _write_nssr(self, value: int) -> None:
        with self._reg_lock, self.queues.gate:
            self.controller.set_property(Reg.NSSR, 4, value)

    # doorbells

    def _write_doorbell(self, offset: int, value: int) -> None:
        if offset >= self.doorbells_end:
            return  # past the doorbells: nothing there
        decoded = doorbell_decode(offset, self.dstrd)
        if decoded is None:
            return  # between two doorbells (DSTRD > 0)
        qid, is_cq = decoded
        self.queues.doorbell(qid, is_cq, value & 0xFFFF)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until the device has fetched and started everything it may
        (tests: "nothing more will happen without the host").  Commands
        held by fault injection or waiting for events do not count."""
        return self.queues.drain(timeout)

    # ------------------------------------------------------------------
    # resets

    def _controller_reset(self, ctrl) -> None:
        """The core's controller level reset hook (CC.EN 1 -> 0, NSSR,
        FLR, controller removal): every queue goes, the host sees RDY 0."""
        self.queues.reset()
        try:
            self.interrupts.controller_reset()
        except Exception:
            log.exception("interrupt reset")
        self._rdy = self._rdy_before = False
        self._rdy_at = 0.0
        self._shst_done_at = 0.0

    def _function_level_reset(self) -> None:
        """FLR (configuration space has reset itself and the interrupt
        logic): the controller returns to its power-on state -- disabled,
        no queues, AQA/ASQ/ACQ and CSTS (but NSSRO) cleared."""
        ctrl = self.controller
        with self._reg_lock, self.queues.gate:
            ctrl.controller_reset()
            with ctrl.lock:
                # Unlike CC.EN 1 -> 0, this reset clears the admin queue
                # registers too.  CSTS.NSSRO keeps reporting an earlier
                # NVM Subsystem Reset (it is not a controller reset field).
                ctrl.regs.aqa.value = 0
                ctrl.regs.asq.value = 0
                ctrl.regs.acq.value = 0
                nssro = ctrl.regs.csts.nssro
                ctrl.regs.csts.value = 0
                ctrl.regs.csts.nssro = nssro
                ctrl.regs.nssr.nssrc = 0
        self._bus_master = self.config.bus_master_enabled

    def reset(self) -> None:
        """Conventional reset of the function (configuration space and
        controller), as at power-on."""
        self.config.reset()
        self._function_level_reset()

    def close(self) -> None:
        """Stop the device thread and remove the controller from the subsystem."""
        if self._closed:
            return
        self._closed = True
        self.queues.close()
        self.interrupts.close()
        try:
            self.subsystem.remove_controller(self.controller)
        except Exception:  # pragma: no cover
            log.exception("removing the controller")

    def __enter__(self) -> PciFunction:  # noqa: PYI034 - a plain class
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PciFunction {self.mode} cntlid={self.controller.cntlid}>"
