"""Interrupts of the NVMe PCIe function: MSI-X, MSI, pin-based (INTx),
INTMS/INTMC and interrupt coalescing.

Which mechanism is in use follows the configuration space, as on real
hardware: MSI-X when its Enable bit is set, otherwise MSI when MSI is
enabled, otherwise the INTA# pin (which Command.Interrupt Disable gates).

MSI-X (PCI 3.0 6.8.2)
    A table of N 16-byte entries (Message Address, Upper Address, Data,
    Vector Control whose bit 0 masks the vector) and a Pending Bit Array in
    BAR0 at the offsets :class:`ConfigSpace` advertises, reached with
    :meth:`Interrupts.msix_read` / :meth:`Interrupts.msix_write`.  Entries
    come out of reset masked.  A signalled vector is delivered when MSI-X is
    enabled, neither the Function Mask nor the vector's mask is set and Bus
    Master is enabled; otherwise its PBA bit is set and the message goes out
    (clearing the bit) as soon as nothing masks it any more.

MSI (PCI 3.0 6.8.1)
    Vector ``v`` uses message ``v mod (1 << MME)`` (the function owns only the
    low MME bits of Message Data).  A vector masked by the capability's Mask
    Bits or by INTMS has its Pending Bit set and is sent when unmasked.

INTx (NVMe over PCIe: pin-based interrupts are level-sensitive)
    Signalling vector ``v`` sets its interrupt status; INTA# is asserted
    while any vector with status set is not masked in INTMS, no MSI/MSI-X is
    enabled and Interrupt Disable is clear (Status.Interrupt Status shows the
    same without the Interrupt Disable gate).  The status stays set until
    the completions are consumed: the queues report that with
    :meth:`Interrupts.set_outstanding` (``False`` once the host moved the CQ
    head up to the tail), which deasserts the pin.

INTMS/INTMC (NVMe 0Ch/10h)
    Set/clear per-vector mask bits for MSI and INTx; both registers read the
    current mask.  With MSI-X enabled they are reserved: writes are ignored
    and reads return 0.

Delivery
    Every delivered interrupt calls ``sink(vector)`` (outside any lock) and
    is appended to :attr:`Interrupts.fired` as ``(vector, time)``.  For INTx
    ``sink`` is called when a signalled vector becomes visible on the
    asserted pin; read :attr:`Interrupts.intx_asserted` for the level.

Coalescing (NVMe features 08h and 09h)
    :meth:`Interrupts.cq_completion` is called by the queues for every
    completion posted to a CQ with interrupts enabled.  For a vector that is
    coalesced, an interrupt fires when THR+1 completions have been posted
    since the last interrupt of that vector, or when TIME x 100 us have
    passed since the first of them; THR = 0 or TIME = 0 thus mean no delay.
    Vector 0 (the admin completion queue's) is never coalesced ("interrupt
    coalescing is not supported for the Admin Completion Queue"; QEMU also
    reports CD=1 for it), nor is a vector with Coalescing Disable set.  Any
    interrupt of a vector ends its aggregation, and so does the host
    consuming all its completions.

    Time comes from ``clock`` (seconds, ``time.monotonic`` by default).  With
    the real clock a daemon timer thread fires expired aggregations.  With an
    injected clock (or ``timer=False``, the inline mode) nothing happens
    behind the caller's back: expired aggregations fire on the next
    :meth:`~Interrupts.cq_completion` or :meth:`~Interrupts.poll` call, and
    :meth:`~Interrupts.flush` fires them at once; tests advance their clock
    and call ``poll()``, which makes them deterministic.
"""

from __future__ import annotations

import logging
import threading
import time as _time
from collections import Counter
from collections.abc import Callable

from nvmestack.spec.pci import MSIX_TABLE_ENTRY_SIZE, MsixTableEntry

from .config import ConfigSpace

__all__ = ["INTERRUPT_MODES", "Interrupts"]

log = logging.getLogger(__name__)

INTERRUPT_MODES = ("msix", "msi", "intx")

_EPS = 1e-9  # slack for float deadlines (TIME * 100 us)
_TIME_UNIT = 100e-6
# Writable bits of one MSI-X table entry, per byte: Message Address bits 1:0
# are reserved, Vector Control has only the mask bit.
_ENTRY_WMASK = bytes([0xFC, 0xFF, 0xFF, 0xFF] + [0xFF] * 8 + [0x01, 0, 0, 0])
_VECTOR_CONTROL = 12


class Interrupts:
    """The interrupt logic of one function.  ``nvectors`` must equal the
    MSI-X table size of ``config``.  See the module documentation."""

    def __init__(
        self,
        config: ConfigSpace,
        nvectors: int,
        *,
        sink: Callable[[int], None] | None = None,
        clock: Callable[[], float] | None = None,
        timer: bool | None = None,
        fired_limit: int = 4096,
    ):
        if nvectors != config.msix_vectors:
            raise ValueError(f"{nvectors} vectors but the MSI-X table has {config.msix_vectors} entries")
        self.config = config
        self.nvectors = nvectors
        self.sink = sink
        self.clock = clock if clock is not None else _time.monotonic
        self._timer_enabled = (clock is None) if timer is None else timer
        self.fired: list[tuple[int, float]] = []
        """Delivered interrupts, oldest first: ``(vector, clock())``.  Trimmed
        to the newest ``fired_limit`` entries when it grows past twice that."""
        self.fired_limit = fired_limit
        self.delivered: Counter[int] = Counter()
        """Delivered interrupts per vector, never trimmed."""
        self.dropped = 0
        """Signals for vectors that do not exist in the mode in use."""

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._out: list[int] = []  # deliveries made under the lock, for the sink
        self._table = bytearray(nvectors * MSIX_TABLE_ENTRY_SIZE)
        self._pba = bytearray(config.msix_pba_size)
        self._intms = 0
        self._intx_status: set[int] = set()
        self._intx_notified: set[int] = set()
        self._msi_pending = 0
        self._outstanding: dict[int, set] = {}
        self._thr = 0
        self._time = 0
        self._cd: set[int] = set()
        self._agg: dict[int, list] = {}  # vector -> [completions, deadline, first completion time]
        self._thread: threading.Thread | None = None
        self._closed = False
        self._reset_table()
        config.add_listener(self._config_changed)
        config.add_reset_listener(self.function_reset)

    # ------------------------------------------------------------------
    # plumbing

    def _run(self, fn: Callable, *args):
        """Run ``fn`` under the lock, then hand its deliveries to the sink."""
        with self._lock:
            result = fn(*args)
            out, self._out = self._out, []
        sink = self.sink
        if sink is not None:
            for vector in out:
                try:
                    sink(vector)
                except Exception:  # the host's handler must not take the device down
                    log.exception("interrupt sink failed for vector %d", vector)
        return result

    def _deliver(self, vector: int) -> None:
        self.fired.append((vector, self.clock()))
        if len(self.fired) > 2 * self.fired_limit:
            del self.fired[: len(self.fired) - self.fired_limit]
        self.delivered[vector] += 1
        self._out.append(vector)

    @property
    def mode(self) -> str:
        """``"msix"``, ``"msi"`` or ``"intx"``: what a signal uses now."""
        if self.config.msix_enabled:
            return "msix"
        if self.config.msi_enabled:
            return "msi"
        return "intx"

    # ------------------------------------------------------------------
    # MSI-X table and PBA (BAR0)

    def _reset_table(self) -> None:
        self._table[:] = bytes(len(self._table))
        for v in range(self.nvectors):
            self._table[v * MSIX_TABLE_ENTRY_SIZE + _VECTOR_CONTROL] = 1  # masked out of reset
        self._pba[:] = bytes(len(self._pba))

    def _region(self, offset: int, size: int):
        """``(buffer, offset in it, writable)`` for a BAR0 access inside the
        table or the PBA, else None."""
        c = self.config
        if c.msix_table_offset <= offset and offset + size <= c.msix_table_offset + c.msix_table_size:
            return self._table, offset - c.msix_table_offset, True
        if c.msix_pba_offset <= offset and offset + size <= c.msix_pba_offset + c.msix_pba_size:
            return self._pba, offset - c.msix_pba_offset, False
        return None

    def claims(self, offset: int, size: int = 4) -> bool:
        """Whether a BAR0 access at ``offset`` falls in the MSI-X table or PBA."""
        c = self.config
        end = offset + max(size, 1)
        return (offset < c.msix_table_offset + c.msix_table_size and c.msix_table_offset < end) or (
            offset < c.msix_pba_offset + c.msix_pba_size and c.msix_pba_offset < end
        )

    def msix_read(self, offset: int, size: int) -> int:
        """Read the MSI-X table or PBA (``offset`` relative to BAR0).  Aligned
        1, 2, 4 and 8 byte accesses are served (the PCI spec only defines
        aligned dword and qword ones); anything else reads 0."""
        if size not in (1, 2, 4, 8) or offset % size:
            return 0
        with self._lock:
            region = self._region(offset, size)
            if region is None:
                return 0
            buf, off, _ = region
            return int.from_bytes(buf[off : off + size], "little")

    def msix_write(self, offset: int, size: int, value: int) -> None:
        """Write the MSI-X table (the PBA is read-only).  Message Address
        bits 1:0 and Vector Control bits 31:1 are reserved.  Unmasking a
        vector with its pending bit set delivers it."""
        if size not in (1, 2, 4, 8) or offset % size:
            return
        self._run(self._msix_write, offset, size, value & ((1 << (8 * size)) - 1))

    def _msix_write(self, offset: int, size: int, value: int) -> None:
        region = self._region(offset, size)
        if region is None or not region[2]:
            return
        buf, off, _ = region
        for k in range(size):
            pos = off + k
            wm = _ENTRY_WMASK[pos % MSIX_TABLE_ENTRY_SIZE]
            buf[pos] = (buf[pos] & ~wm) | ((value >> (8 * k)) & wm)
        self._reevaluate()

    def msix_entry(self, vector: int) -> MsixTableEntry:
        """A copy of table entry ``vector``."""
        with self._lock:
            start = vector * MSIX_TABLE_ENTRY_SIZE
            return MsixTableEntry.from_bytes(bytes(self._table[start : start + MSIX_TABLE_ENTRY_SIZE]))

    def msix_vector_masked(self, vector: int) -> bool:
        """The vector's own mask bit (Vector Control bit 0)."""
        return bool(self._table[vector * MSIX_TABLE_ENTRY_SIZE + _VECTOR_CONTROL] & 1)

    def msix_pending(self, vector: int) -> bool:
        """The vector's PBA bit."""
        return bool(self._pba[vector >> 3] >> (vector & 7) & 1)

    def _set_pba(self, vector: int, pending: bool) -> None:
        if pending:
            self._pba[vector >> 3] |= 1 << (vector & 7)
        else:
            self._pba[vector >> 3] &= ~(1 << (vector & 7)) & 0xFF

    def _msix_blocked(self, vector: int) -> bool:
        c = self.config
        return c.msix_function_mask or self.msix_vector_masked(vector) or not c.bus_master_enabled

    # ------------------------------------------------------------------
    # MSI

    def _msi_vector(self, vector: int) -> int:
        return vector % self.config.msi_vectors_enabled

    def _msi_blocked(self, msg: int) -> bool:
        c = self.config
        return bool((c.msi_mask_bits | self._intms) >> msg & 1) or not c.bus_master_enabled

    def _set_msi_pending(self, bits: int) -> None:
        self._msi_pending = bits
        self.config.set_msi_pending(bits)

    # ------------------------------------------------------------------
    # INTx

    def _intx_visible(self) -> list[int]:
        """Vectors whose status is set and not masked by INTMS."""
        return sorted(v for v in self._intx_status if not (v < 32 and self._intms >> v & 1))

    def _update_intx(self, mode: str) -> None:
        visible = self._intx_visible() if mode == "intx" else []
        self.config.set_interrupt_status(bool(visible))
        if not visible or self.config.intx_disabled:
            self._intx_notified.clear()
            return
        for v in visible:
            if v not in self._intx_notified:
                self._intx_notified.add(v)
                self._deliver(v)
        self._intx_notified.intersection_update(visible)

    @property
    def intx_asserted(self) -> bool:
        """The level of INTA#."""
        with self._lock:
            return self.mode == "intx" and not self.config.intx_disabled and bool(self._intx_visible())

    @property
    def intx_status(self) -> frozenset[int]:
        """Vectors with pin-based interrupt status set (masked or not)."""
        with self._lock:
            return frozenset(self._intx_status)

    # ------------------------------------------------------------------
    # INTMS / INTMC

    def intms_write(self, value: int) -> None:
        """INTMS: set mask bits (ignored while MSI-X is enabled)."""
        self._run(self._intm_write, value, True)

    def intmc_write(self, value: int) -> None:
        """INTMC: clear mask bits (ignored while MSI-X is enabled); a vector
        unmasked with an interrupt pending is delivered."""
        self._run(self._intm_write, value, False)

    def _intm_write(self, value: int, set_bits: bool) -> None:
        if self.config.msix_enabled:
            return
        value &= 0xFFFFFFFF
        self._intms = self._intms | value if set_bits else self._intms & ~value
        self._reevaluate()

    @property
    def intms_value(self) -> int:
        """What INTMS (and INTMC) read: the mask, or 0 with MSI-X enabled."""
        with self._lock:
            return 0 if self.config.msix_enabled else self._intms

    intmc_value = intms_value

    # ------------------------------------------------------------------
    # signalling

    def signal(self, vector: int) -> None:
        """Raise an interrupt on ``vector`` now (no coalescing)."""
        self._run(self._signal, vector)

    def _signal(self, vector: int) -> None:
        self._agg.pop(vector, None)
        mode = self.mode
        if vector < 0:
            self.dropped += 1
        elif mode == "msix":
            if vector >= self.nvectors:
                self.dropped += 1
            elif self._msix_blocked(vector):
                self._set_pba(vector, True)
            else:
                self._set_pba(vector, False)
                self._deliver(vector)
        elif mode == "msi":
            msg = self._msi_vector(vector)
            if self._msi_blocked(msg):
                self._set_msi_pending(self._msi_pending | 1 << msg)
            else:
                self._deliver(msg)
        else:
            self._intx_status.add(vector)
            visible = vector in self._intx_visible()
            if visible and not self.config.intx_disabled:
                # a new event on an asserted line: tell the host again
                self._intx_notified.discard(vector)
            self._update_intx(mode)

    def _reevaluate(self) -> None:
        """Deliver whatever became unmasked; recompute the pin."""
        mode = self.mode
        if mode == "msix":
            c = self.config
            if not c.msix_function_mask and c.bus_master_enabled:
                for byte_index, byte in enumerate(self._pba):
                    if not byte:
                        continue
                    for bit in range(8):
                        v = byte_index * 8 + bit
                        if byte >> bit & 1 and v < self.nvectors and not self.msix_vector_masked(v):
                            self._set_pba(v, False)
                            self._deliver(v)
        elif mode == "msi" and self._msi_pending:
            pending = self._msi_pending
            for msg in range(32):
                if pending >> msg & 1 and not self._msi_blocked(msg):
                    pending &= ~(1 << msg)
                    self._deliver(msg)
            self._set_msi_pending(pending)
        self._update_intx(mode)

    def _config_changed(self) -> None:
        self._run(self._reevaluate)

    def set_outstanding(self, vector: int, outstanding: bool, source=None) -> None:
        """The queues report whether completion queue ``source`` (any
        hashable, e.g. the CQ id) on ``vector`` holds completions the host
        has not consumed.  Once no source of a vector is outstanding, its
        interrupt condition is gone: the INTx status clears (deasserting the
        pin), and a pending MSI-X/MSI bit and any coalescing aggregation of
        the vector are dropped (PCI: the function clears a pending bit whose
        event has been serviced, so no stale message is sent on unmask)."""
        self._run(self._set_outstanding, vector, outstanding, source)

    set_intx_source = set_outstanding

    def _set_outstanding(self, vector: int, outstanding: bool, source) -> None:
        sources = self._outstanding.setdefault(vector, set())
        if outstanding:
            sources.add(source)
            return
        sources.discard(source)
        if sources:
            return
        del self._outstanding[vector]
        self._intx_status.discard(vector)
        self._agg.pop(vector, None)
        if 0 <= vector < self.nvectors:
            self._set_pba(vector, False)
        if self._msi_pending:
            n = self.config.msi_vectors_enabled
            msg = vector % n
            if not any(v % n == msg for v in self._outstanding):
                self._set_msi_pending(self._msi_pending & ~(1 << msg))
        self._update_intx(self.mode)

    # ------------------------------------------------------------------
    # coalescing

    def set_coalescing(self, threshold: int, time_100us: int) -> None:
        """Feature 08h: aggregation threshold (THR, 0's based) and time (TIME,
        100 us units)."""
        self._run(self._set_coalescing, threshold & 0xFF, time_100us & 0xFF)

    def _set_coalescing(self, threshold: int, time_100us: int) -> None:
        self._thr, self._time = threshold, time_100us
        for agg in self._agg.values():
            agg[1] = agg[2] + time_100us * _TIME_UNIT
        for v in sorted(v for v, agg in self._agg.items() if agg[0] >= threshold + 1):
            self._signal(v)
        self._check(self.clock())
        self._cond.notify_all()

    @property
    def coalescing(self) -> tuple[int, int]:
        """``(THR, TIME)`` in use."""
        return self._thr, self._time

    def set_vector_config(self, vector: int, coalescing_disabled: bool) -> None:
        """Feature 09h: Coalescing Disable for ``vector``.  Vector 0 is never
        coalesced whatever this says."""
        self._run(self._set_vector_config, vector, coalescing_disabled)

    def _set_vector_config(self, vector: int, coalescing_disabled: bool) -> None:
        if coalescing_disabled:
            self._cd.add(vector)
            if vector in self._agg:
                self._signal(vector)
        else:
            self._cd.discard(vector)

    def coalesced(self, vector: int) -> bool:
        """Whether completions on ``vector`` are subject to aggregation."""
        return vector != 0 and vector not in self._cd

    def cq_completion(self, vector: int, coalesce: bool = True) -> None:
        """A completion was posted to a CQ with interrupts enabled on
        ``vector``; ``coalesce=False`` signals at once."""
        self._run(self._cq_completion, vector, coalesce)

    def _cq_completion(self, vector: int, coalesce: bool) -> None:
        now = self.clock()
        self._check(now)
        if not coalesce or not self.coalesced(vector):
            self._signal(vector)
            return
        agg = self._agg.get(vector)
        if agg is None:
            agg = self._agg[vector] = [0, now + self._time * _TIME_UNIT, now]
        agg[0] += 1
        if agg[0] >= self._thr + 1 or now >= agg[1] - _EPS:
            self._signal(vector)
        elif self._timer_enabled:
            self._start_timer()
            self._cond.notify_all()

    def aggregated(self, vector: int) -> int:
        """Completions on ``vector`` waiting for a coalesced interrupt."""
        with self._lock:
            agg = self._agg.get(vector)
            return agg[0] if agg else 0

    def _check(self, now: float) -> int:
        expired = [v for v, agg in self._agg.items() if now >= agg[1] - _EPS]
        for v in sorted(expired):
            self._signal(v)
        return len(expired)

    def poll(self, now: float | None = None) -> int:
        """Fire every aggregation whose time has run out (at ``now``, default
        ``clock()``); returns how many vectors fired."""
        return self._run(lambda: self._check(self.clock() if now is None else now))

    def flush(self, vector: int | None = None) -> None:
        """Fire the aggregated completions of ``vector`` (all vectors if None) now."""
        self._run(self._flush, vector)

    def _flush(self, vector: int | None) -> None:
        vectors = sorted(self._agg) if vector is None else [vector] if vector in self._agg else []
        for v in vectors:
            self._signal(v)

    def _next_deadline(self) -> float | None:
        return min((agg[1] for agg in self._agg.values()), default=None)

    def _start_timer(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._timer_loop, name="nvme-irq-coalescing", daemon=True)
            self._thread.start()

    def _timer_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    deadline = self._next_deadline()
                    if deadline is None:
                        self._cond.wait()
                        continue
                    delay = deadline - self.clock()
                    if delay <= _EPS:
                        break
                    self._cond.wait(delay)
                if self._closed:
                    return
            self.poll()

    # ------------------------------------------------------------------
    # resets

    def controller_reset(self) -> None:
        """Controller reset (CC.EN 1 -> 0, NVM subsystem reset): INTMS
        clears, interrupt status, pending bits and aggregations of the
        deleted queues are dropped, coalescing settings return to their
        defaults (THR 0, TIME 0, no vector disabled: re-apply saved feature
        values afterwards).  The MSI-X table is PCI state and is kept."""
        self._run(self._controller_reset)

    def _controller_reset(self) -> None:
        self._intms = 0
        self._intx_status.clear()
        self._intx_notified.clear()
        self._outstanding.clear()
        self._agg.clear()
        self._thr = self._time = 0
        self._cd.clear()
        self._pba[:] = bytes(len(self._pba))
        self._set_msi_pending(0)
        self._update_intx(self.mode)

    def function_reset(self) -> None:
        """Function level or conventional reset: everything, including the
        MSI-X table (entries masked, addresses and data 0)."""
        self._run(self._function_reset)

    def _function_reset(self) -> None:
        self._controller_reset()
        self._reset_table()

    def close(self) -> None:
        """Stop the timer thread (pending aggregations are dropped)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
