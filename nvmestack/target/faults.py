"""Fault injection for testing hosts.

Install a :class:`FaultInjector` on a subsystem (``Subsystem.faults`` is
``None`` by default) and add rules; the controller asks it about every
command just before the command runs (``Controller._run`` calls
:meth:`FaultInjector.intercept`), after the command was parsed and its data
mapped::

    faults = FaultInjector.install(subsystem)
    faults.fail(MediaStatus.WRITE_FAULT, opcode=NvmOpcode.WRITE, nsid=1, count=1)
    faults.delay(2.0, admin=False, opcode=NvmOpcode.READ)
    faults.drop(opcode=NvmOpcode.FLUSH)               # never completes
    faults.media_error(range(100, 108), nsid=1)       # reads of them fail
    faults.fatal(opcode=NvmOpcode.WRITE, count=1)     # CSTS.CFS

A rule matches by queue kind (``admin``: True for the admin queue, False for
I/O queues, None for both), ``opcode``, ``nsid``, ``cntlid``, ``sqid`` and
``lbas`` (block commands -- those with SLBA/NLB: Read, Write, Compare, Write
Uncorrectable, Write Zeroes, Verify -- whose blocks overlap the given LBAs;
a rule with ``lbas`` never matches other commands).  ``count`` is how many
times it fires (None: always).  The first rule that matches fires.

Actions:

``status``
    complete the command with the given status without running it (an
    error is recorded in the error log like any failed command).
``delay``
    run the command ``seconds`` later on a timer thread.  Meanwhile the
    request stays outstanding and is marked ``context["abortable"]``:
    Abort finds it, a reset cancels it, and in both cases the timer does
    nothing (``Request.complete`` runs once).
``drop``
    never complete the command: it stays outstanding (in
    :attr:`FaultInjector.parked`) until Abort or a controller reset ends it.
``media``
    reads (Read, Compare, Verify, and the source ranges of Copy) of any of
    the rule's LBAs fail with Unrecovered Read Error, the first failing LBA
    in the error log entry, and count as media and data integrity errors;
    other commands pass.
``fatal``
    the controller reports Controller Fatal Status (CSTS.CFS) and the
    command is never completed; the host must reset the controller.

The first command of a fused pair waits in the controller for its second
half; rules see the pair when the second command runs, and when a fault ends
the second command the first one is aborted (Command Aborted due to Failed
Fused Command).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..spec.nvm import COPY_RANGE_SIZE, CopyDescriptorFormat, ReadWriteBase, copy_ranges
from ..spec.opcodes import NvmOpcode
from ..spec.status import GenericStatus, MediaStatus, Status
from .errors import NvmeError

if TYPE_CHECKING:
    from .controller import Controller
    from .request import Request
    from .subsystem import Subsystem

__all__ = ["FaultAction", "FaultInjector", "FaultRule", "LbaSet"]

log = logging.getLogger(__name__)

# Commands that read logical blocks from the medium.
READ_LIKE = frozenset({NvmOpcode.READ, NvmOpcode.COMPARE, NvmOpcode.VERIFY})


class FaultAction(str, Enum):
    STATUS = "status"
    DELAY = "delay"
    DROP = "drop"
    MEDIA = "media"
    FATAL = "fatal"


class LbaSet:
    """A set of logical block addresses kept as sorted, merged half-open
    intervals.  Built from an int, a ``range`` (step 1), or an iterable of
    those."""

    __slots__ = ("intervals",)

    def __init__(self, lbas: Any):
        pieces: list[tuple[int, int]] = []
        items = [lbas] if isinstance(lbas, (int, range)) else list(lbas)
        for item in items:
            if isinstance(item, bool):
                raise TypeError("an LBA is an int, not a bool")
            if isinstance(item, int):
                if item < 0:
                    raise ValueError(f"negative LBA {item}")
                pieces.append((item, item + 1))
            elif isinstance(item, range):
                if item.step != 1:
                    raise ValueError("LBA ranges must have step 1")
                if item.start < 0:
                    raise ValueError(f"negative LBA {item.start}")
                if len(item):
                    pieces.append((item.start, item.stop))
            else:
                raise TypeError(f"an LBA or range of LBAs, not {item!r}")
        pieces.sort()
        merged: list[tuple[int, int]] = []
        for start, stop in pieces:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
            else:
                merged.append((start, stop))
        self.intervals = merged

    def first_in(self, slba: int, nblocks: int) -> int | None:
        """The lowest LBA of the set in ``slba``..``slba+nblocks-1``, or None."""
        end = slba + nblocks
        for start, stop in self.intervals:
            if start >= end:
                break
            if stop > slba:
                return max(start, slba)
        return None

    def __contains__(self, lba: int) -> bool:
        return self.first_in(lba, 1) is not None

    def __repr__(self) -> str:
        return "LbaSet(" + ", ".join(f"{a}..{b - 1}" for a, b in self.intervals) + ")"


@dataclass(eq=False)
class FaultRule:
    """One fault: what it matches, what it does, how many times."""

    action: FaultAction
    admin: bool | None = None
    opcode: int | None = None
    nsid: int | None = None
    lbas: LbaSet | None = None
    count: int | None = None
    cntlid: int | None = None
    sqid: int | None = None
    status: Status | None = None  # action "status"
    seconds: float = 0.0  # action "delay"
    dnr: bool = True  # action "media": DNR of the Unrecovered Read Error
    hits: int = 0  # how many times the rule fired
    # The latest requests it took (for tests and tracing).
    requests: collections.deque = field(default_factory=lambda: collections.deque(maxlen=16), repr=False)

    def __post_init__(self):
        self.action = FaultAction(self.action)
        if self.lbas is not None and not isinstance(self.lbas, LbaSet):
            self.lbas = LbaSet(self.lbas)
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0 or None")
        if self.action is FaultAction.STATUS and self.status is None:
            raise ValueError("a status fault needs a status")
        if self.action is FaultAction.MEDIA and self.lbas is None:
            raise ValueError("a media fault needs the failing LBAs")
        if self.seconds < 0:
            raise ValueError("a delay cannot be negative")

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.hits >= self.count

    def matches(self, ctrl: Controller, req: Request) -> int | bool:
        """Whether the rule applies to ``req`` (for a media rule, the first
        failing LBA, which may be 0: compare with ``is not False``)."""
        if self.admin is not None and req.admin != self.admin:
            return False
        if self.opcode is not None and req.opcode != self.opcode:
            return False
        if self.nsid is not None and req.sqe.nsid != self.nsid:
            return False
        if self.cntlid is not None and ctrl.cntlid != self.cntlid:
            return False
        if self.sqid is not None and req.sqid != self.sqid:
            return False
        if self.action is FaultAction.MEDIA:
            lba = _failing_read(self.lbas, req)
            return False if lba is None else lba
        if self.lbas is not None:
            blocks = block_range(req)
            if blocks is None or self.lbas.first_in(*blocks) is None:
                return False
        return True


def block_range(req: Request) -> tuple[int, int] | None:
    """(SLBA, number of blocks) of an I/O command that has SLBA/NLB."""
    if req.admin or not isinstance(req.cmd, ReadWriteBase):
        return None
    return req.cmd.slba, req.cmd.nlb + 1


def _failing_read(lbas: LbaSet, req: Request) -> int | None:
    """The first LBA of ``lbas`` that ``req`` reads from the medium."""
    if req.admin:
        return None
    if req.opcode in READ_LIKE:
        blocks = block_range(req)
        return None if blocks is None else lbas.first_in(*blocks)
    if req.opcode == NvmOpcode.COPY:
        cmd = req.cmd
        try:
            if cmd.desfmt != CopyDescriptorFormat.FORMAT_0:
                return None
            count = cmd.nr + 1
            if req.data_len < count * COPY_RANGE_SIZE:
                return None
            raw = req.read_data(count * COPY_RANGE_SIZE)
        except (ValueError, AttributeError):
            return None
        for entry in copy_ranges(raw, count):
            lba = lbas.first_in(entry.slba, entry.nlb + 1)
            if lba is not None:
                return lba
    return None


def _status(code: Any, dnr: bool) -> Status:
    if isinstance(code, Status):
        return code
    return code.status(dnr=dnr)


class FaultInjector:
    """The rules of a subsystem's fault injection (see the module docstring)."""

    def __init__(self):
        self.rules: list[FaultRule] = []
        self.hooks: list = []  # run after a rule was added (the subsystem's io_state_changed)
        self.parked: list[Request] = []
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()

    @classmethod
    def install(cls, subsystem: Subsystem) -> FaultInjector:
        """The subsystem's injector, installing a new one if it has none."""
        if subsystem.faults is None:
            subsystem.faults = cls()
        return subsystem.faults

    # -- rules ------------------------------------------------------------

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        for hook in list(self.hooks):
            hook()
        return rule

    def remove(self, rule: FaultRule) -> None:
        with self._lock:
            if rule in self.rules:
                self.rules.remove(rule)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def fail(self, status: Any, *, dnr: bool = True, **match) -> FaultRule:
        """Complete matching commands with ``status`` (a Status, or a status
        code enum member made into one with ``dnr``) without running them."""
        return self.add(FaultRule(FaultAction.STATUS, status=_status(status, dnr), **match))

    def delay(self, seconds: float, **match) -> FaultRule:
        """Run matching commands ``seconds`` late."""
        return self.add(FaultRule(FaultAction.DELAY, seconds=float(seconds), **match))

    def drop(self, **match) -> FaultRule:
        """Never complete matching commands (until Abort or reset)."""
        return self.add(FaultRule(FaultAction.DROP, **match))

    def media_error(self, lbas: Any, *, dnr: bool = True, **match) -> FaultRule:
        """Reads of ``lbas`` (an LBA, a range, or an iterable of them) fail
        with Unrecovered Read Error."""
        return self.add(FaultRule(FaultAction.MEDIA, lbas=LbaSet(lbas), dnr=dnr, **match))

    def fatal(self, **match) -> FaultRule:
        """A matching command makes the controller fatal (CSTS.CFS)."""
        return self.add(FaultRule(FaultAction.FATAL, **match))

    # -- the hook -----------------------------------------------------------

    def _take(self, ctrl: Controller, req: Request) -> tuple[FaultRule, Any] | None:
        with self._lock:
            for rule in self.rules:
                if rule.exhausted:
                    continue
                hit = rule.matches(ctrl, req)
                if hit is False:
                    continue
                rule.hits += 1
                rule.requests.append(req)
                if rule.exhausted:
                    self.rules.remove(rule)
                return rule, hit
        return None

    def intercept(self, ctrl: Controller, req: Request) -> bool:
        """True when a fault took the request over (it completes it, or not,
        itself); False to let the command run."""
        if not self.rules or req.context.get("fault_passed"):
            return False
        taken = self._take(ctrl, req)
        if taken is None:
            return False
        rule, hit = taken
        req.context["fault_passed"] = True
        req.context["fault_rule"] = rule
        partner = _partner(req)
        action = rule.action
        log.debug("fault %s on %r", action.value, req)
        if action is FaultAction.STATUS:
            self._end(ctrl, req, partner, rule.status)
        elif action is FaultAction.MEDIA:
            ctrl.subsystem.health.media_error()
            err = NvmeError(MediaStatus.UNRECOVERED_READ_ERROR, dnr=rule.dnr, lba=hit)
            self._end(ctrl, req, partner, err)
        elif action is FaultAction.DELAY:
            # Abort may end it until it starts running (admin.py's Abort
            # looks at this flag, or at ``parked``).
            req.context["abortable"] = True
            timer = threading.Timer(rule.seconds, self._resume, (ctrl, req))
            timer.daemon = True
            with self._lock:
                self._timers.add(timer)
            timer.start()
        elif action is FaultAction.FATAL:
            ctrl.fatal()
            self._park(req)
        else:  # DROP
            self._park(req)
        return True

    def _end(self, ctrl: Controller, req: Request, partner, outcome) -> None:
        if isinstance(outcome, Status) and outcome.value & 0x7FF == 0:
            if partner is not None and not partner.done:
                partner.complete(outcome)
            req.complete(outcome)
            return
        err = outcome if isinstance(outcome, NvmeError) else NvmeError(outcome)
        if partner is not None and not partner.done:
            ctrl._fail(partner, NvmeError(GenericStatus.ABORTED_FAILED_FUSED))
        ctrl._fail(req, err)

    def _park(self, req: Request) -> None:
        with self._lock:
            self.parked = [r for r in self.parked if not r.done]
            self.parked.append(req)

    def _resume(self, ctrl: Controller, req: Request) -> None:
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive() and t is not threading.current_thread()}
        with ctrl.lock:  # Abort decides under the same lock
            if req.done:  # aborted, or its queue went away, meanwhile
                return
            req.context["abortable"] = False
        call, partner = _resumption(ctrl, req)
        ctrl._run(req, call, partner=partner)

    def close(self) -> None:
        """Cancel pending delays (their requests stay outstanding)."""
        with self._lock:
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()

    def __repr__(self) -> str:
        return f"<FaultInjector {len(self.rules)} rules, {len(self.parked)} parked>"


def _partner(req: Request):
    resume = req.context.get("fault_resume")
    return resume[1] if resume else None


def _resumption(ctrl: Controller, req: Request) -> tuple[Callable[[], object], Any]:
    """What ``Controller._run`` was about to run for ``req``."""
    resume = req.context.get("fault_resume")
    if resume:
        return resume
    return (lambda: req.handler.execute(ctrl, req)), None
