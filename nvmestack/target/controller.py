"""The controller: register (property) semantics, command dispatch, async
events, the error log, keep alive, and the hooks a transport provides.

Command semantics live here and in the handler modules, once, for every
transport.  A transport (PCIe function, NVMe/TCP) makes requests with
:meth:`Controller.new_request`, calls :meth:`prepare`, maps the data, calls
:meth:`execute`, and posts the completion when ``req.on_complete`` fires.
For tests and in-process use :meth:`Controller.submit` does all of it with
plain Python buffers.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from ..spec.log import ErrorInformationEntry, LogPageId
from ..spec.registers import (
    Ams,
    CcCss,
    ControllerRegisters,
    Reg,
    Shn,
    Shst,
    nvme_version,
)
from ..spec.sqe import Fuse
from ..spec.status import (
    CommandSpecificStatus,
    GenericStatus,
)
from .commands import (
    ADMIN_COMMANDS,
    DEFERRED,
    FABRICS_COMMANDS,
    FUSED_COMMANDS,
    IO_COMMANDS,
    Handler,
)
from .errors import NvmeError
from .request import DataDirection, Request

if TYPE_CHECKING:
    from .namespace import Namespace
    from .subsystem import Subsystem

__all__ = ["Controller", "QueueOps", "AsyncEventType", "DEFAULT_MDTS", "NSSR_SIGNATURE"]

log = logging.getLogger(__name__)

NSSR_SIGNATURE = 0x4E564D65  # "NVMe"
ERROR_LOG_ENTRIES = 64  # ELPE + 1
AERL = 3  # 0's based: four outstanding Asynchronous Event Requests


class AsyncEventType:
    """Asynchronous Event Type, completion DW0 bits 2:0."""

    ERROR = 0
    SMART = 1
    NOTICE = 2
    IMMEDIATE = 3
    ONE_SHOT = 4
    IO_COMMAND_SET = 6
    VENDOR = 7


class QueueOps(Protocol):
    """What a memory-based transport (the PCIe function) does when the admin
    commands create or delete I/O queues.  The controller validates every
    field first; these only build or tear down the rings.  A Fabrics
    controller has none (its I/O queues come from Connect)."""

    max_vectors: int

    def create_cq(self, qid: int, size: int, prp1: int, contiguous: bool, ien: bool, iv: int) -> None: ...
    def create_sq(self, qid: int, size: int, prp1: int, contiguous: bool, cqid: int, qprio: int) -> None: ...
    def delete_sq(self, qid: int) -> None: ...
    def delete_cq(self, qid: int) -> None: ...


DEFAULT_MDTS = 10
"""MDTS unless told otherwise: 2**10 pages of 4 KiB, 4 MiB per command.  A
software target has no DMA engine to size for; 512 KiB made Linux's
max_hw_sectors_kb 512, so nvme-cli refused a 1025-block write (blktests
nvme/029) that the kernel target (MDTS 0, no limit) takes.  4 MiB is what
Linux's PCIe driver allows at most (NVME_MAX_KB_SZ) and keeps a command's
buffer bounded; ``mdts=0`` lifts the limit, serve's ``--mdts`` and
configuration ``"mdts"`` choose another."""

class Controller:
    """One controller of an NVM subsystem."""

    def __init__(
        self,
        subsystem: "Subsystem",
        cntlid: int,
        *,
        hostnqn: str = "",
        hostid: bytes = bytes(16),
        fabrics: bool = False,
        queue_ops: QueueOps | None = None,
        mqes: int = 1023,
        mdts: int | None = None,
        timeout_units: int = 20,
    ):
        self.subsystem = subsystem
        self.cntlid = cntlid
        self.hostnqn = hostnqn
        self.hostid = hostid
        self.fabrics = fabrics
        self.queue_ops = queue_ops
        self.mdts = DEFAULT_MDTS if mdts is None else mdts  # 2**mdts pages of CAP.MPSMIN (4 KiB)
        self.lock = threading.RLock()

        self._regs_buf = bytearray(ControllerRegisters.SIZE)
        self.regs = ControllerRegisters.view(self._regs_buf)
        cap = self.regs.cap
        cap.mqes = mqes
        cap.cqr = True
        cap.ams = 0 if fabrics else 1  # weighted round robin with urgent priority class
        cap.to = timeout_units
        cap.dstrd = 0
        cap.nssrs = not fabrics
        cap.css_nvm = True
        # I/O Command Set selection (CC.CSS 110b, feature 19h, Identify CNS
        # 1Ch); a discovery controller reports only the NVM bit.
        cap.css_iocs = not getattr(subsystem, "discovery", False)
        cap.mpsmin = 0
        cap.mpsmax = 4
        self.regs.vs.value = nvme_version(2, 0, 0)

        # Outstanding requests by (sqid, cid), for Abort and reset.
        self.outstanding: dict[tuple[int, int], Request] = {}
        self._fused_first: dict[int, Request] = {}

        # Asynchronous events.
        self.aer_requests: collections.deque[Request] = collections.deque()
        self.pending_events: collections.deque[tuple[int, int, int]] = collections.deque()
        self.masked_event_types: set[int] = set()

        # Error information log, most recent first.
        self.error_count = 0
        self.error_log: collections.deque[bytes] = collections.deque(maxlen=ERROR_LOG_ENTRIES)

        # Changed namespace list (log 04h), cleared when read with RAE=0.
        self.changed_namespaces: set[int] = set()

        # Keep alive (milliseconds; 0 = disabled).
        self.kato = 0
        self.last_keep_alive = time.monotonic()

        # I/O queues the admin commands created (PCIe): qid -> attributes.
        self.io_cqs: dict[int, dict[str, Any]] = {}
        self.io_sqs: dict[int, dict[str, Any]] = {}
        # Number of I/O queues granted by Set Features (0's based), None until set.
        self.queues_granted: tuple[int, int] | None = None

        # Called after a controller level reset (transports drop their queues).
        self.reset_hooks: list[Callable[["Controller"], None]] = []

        from .features import FeatureStore  # late: features imports controller types

        self.features = FeatureStore(self)

    # ------------------------------------------------------------------
    # identity and state

    @property
    def enabled(self) -> bool:
        return bool(self.regs.csts.rdy)

    @property
    def page_size(self) -> int:
        return 1 << (12 + self.regs.cc.mps)

    @property
    def max_transfer(self) -> int:
        """MDTS in bytes (0 = no limit)."""
        return (1 << self.mdts) * (1 << (12 + self.regs.cap.mpsmin)) if self.mdts else 0

    def active_namespaces(self) -> list["Namespace"]:
        return [ns for nsid, ns in sorted(self.subsystem.namespaces.items()) if self.cntlid in ns.attached]

    def nsid_error(self, nsid: int) -> NvmeError:
        """The error for a command naming ``nsid`` that is not active here:
        Invalid Field for a valid NSID (1..NN) that is not active,
        Invalid Namespace or Format for any other value."""
        if 1 <= nsid <= self.subsystem.max_namespaces:
            return NvmeError(GenericStatus.INVALID_FIELD, param=4, msg=f"namespace {nsid} is not active")
        return NvmeError(GenericStatus.INVALID_NAMESPACE_OR_FORMAT, param=4, msg=f"NSID {nsid:#x} is not valid")

    def namespace(self, nsid: int) -> "Namespace | None":
        """The namespace if it is active (attached) on this controller."""
        ns = self.subsystem.namespaces.get(nsid)
        return ns if ns is not None and self.cntlid in ns.attached else None

    # ------------------------------------------------------------------
    # properties (BAR0 registers on PCIe, Property Get/Set on Fabrics)

    _WRITABLE = {Reg.CC: 4, Reg.NSSR: 4, Reg.AQA: 4, Reg.ASQ: 8, Reg.ACQ: 8, Reg.INTMS: 4, Reg.INTMC: 4}

    def get_property(self, offset: int, size: int) -> int:
        """Read a register; offsets outside the register file read zero."""
        if offset < 0 or offset + size > ControllerRegisters.SIZE:
            return 0
        with self.lock:
            return self.regs.read(offset, size)

    def set_property(self, offset: int, size: int, value: int) -> None:
        """Write a register with the specification's side effects.  Writes to
        read-only or reserved registers are ignored; the caller (Property
        Set) reports Invalid Field for offsets that are not properties."""
        with self.lock:
            if offset == Reg.CC and size == 4:
                self._write_cc(value)
            elif offset == Reg.NSSR and size == 4:
                if value == NSSR_SIGNATURE and self.regs.cap.nssrs:
                    self.regs.nssr.value = value
                    self.subsystem.nvm_subsystem_reset()
            elif offset == Reg.CSTS and size == 4:
                if value & (1 << 4):  # NSSRO is RW1C; the rest is read-only
                    self.regs.csts.nssro = False
            elif offset == Reg.AQA and size == 4:
                self.regs.aqa.value = value & 0x0FFF0FFF
            elif offset in (Reg.ASQ, Reg.ACQ) and size in (4, 8):
                sub = self.regs.asq if offset == Reg.ASQ else self.regs.acq
                sub.value = (sub.value & ~((1 << (8 * size)) - 1)) | value
                sub.value &= ~0xFFF
            elif offset == Reg.ASQ + 4 or offset == Reg.ACQ + 4:
                sub = self.regs.asq if offset == Reg.ASQ + 4 else self.regs.acq
                sub.value = (sub.value & 0xFFFFFFFF) | ((value & 0xFFFFFFFF) << 32)
            # INTMS/INTMC belong to the PCIe function (interrupts); it
            # handles them itself.  Everything else is read-only.

    def _write_cc(self, value: int) -> None:
        cc, csts = self.regs.cc, self.regs.csts
        was_enabled = cc.en
        old_shn = cc.shn
        cc.value = value & 0x01FFFFF1  # EN, CSS, MPS, AMS, SHN, IOSQES, IOCQES, CRIME
        if cc.shn != Shn.NONE and old_shn == Shn.NONE:
            self.shutdown(abrupt=cc.shn == Shn.ABRUPT)
        elif cc.shn == Shn.NONE and old_shn != Shn.NONE:
            csts.shst = Shst.NORMAL
        if cc.en and not was_enabled:
            if not self._configuration_valid():
                csts.cfs = True
                return
            csts.rdy = True
            csts.shst = Shst.NORMAL
        elif was_enabled and not cc.en:
            self.controller_reset()

    def _configuration_valid(self) -> bool:
        cc, cap = self.regs.cc, self.regs.cap
        if not cap.mpsmin <= cc.mps <= cap.mpsmax:
            return False
        supported = {CcCss.NVM: cap.css_nvm, CcCss.ALL_IOCS: cap.css_iocs, CcCss.ADMIN_ONLY: cap.css_noiocs}
        if not supported.get(cc.css, False):
            return False
        if cc.ams == Ams.WRRU:
            return bool(cap.ams & 1)
        return cc.ams == Ams.ROUND_ROBIN

    def shutdown(self, abrupt: bool = False) -> None:
        """CC.SHN: make the data durable (normal) and report shutdown complete."""
        self.regs.csts.shst = Shst.OCCURRING
        if not abrupt:
            self.subsystem.flush_all()
        self.regs.csts.shst = Shst.COMPLETE
        self.subsystem.controller_shut_down(self, abrupt)

    def controller_reset(self) -> None:
        """Controller level reset (CC.EN 1 -> 0): outstanding commands end,
        I/O queues are deleted, volatile state returns to its defaults."""
        with self.lock:
            for req in list(self.outstanding.values()):
                req.cancel()
            self.outstanding.clear()
            self._fused_first.clear()
            self.aer_requests.clear()
            self.pending_events.clear()
            self.masked_event_types.clear()
            self.io_cqs.clear()
            self.io_sqs.clear()
            self.queues_granted = None
            self.features.reset()
            csts = self.regs.csts
            csts.rdy = False
            csts.cfs = False
            self.regs.cc.value = 0
        for hook in list(self.reset_hooks):
            hook(self)

    def fatal(self) -> None:
        """Controller Fatal Status: the host must reset the controller."""
        with self.lock:
            self.regs.csts.cfs = True

    # ------------------------------------------------------------------
    # commands

    def new_request(self, sqe: Any, sqid: int, on_complete: Callable[[Request], None] | None = None) -> Request:
        req = Request(sqe, sqid, on_complete)
        req.ctrl = self
        return req

    def handler_for(self, req: Request) -> Handler | None:
        if req.opcode == 0x7F and self.fabrics:
            # A Fabrics command: FCTYPE (byte 4) says which, on either queue.
            return FABRICS_COMMANDS.get((req.admin, req.sqe.nsid & 0xFF))
        table = ADMIN_COMMANDS if req.admin else IO_COMMANDS
        return table.get(req.opcode)

    def prepare(self, req: Request) -> bool:
        """Parse the command and work out its data transfer.  Returns False
        when the command already failed (and was completed)."""
        req.ctrl = self
        with self.lock:
            key = (req.sqid, req.cid)
            earlier = self.outstanding.get(key)
            if earlier is not None and not self._forget_aer(earlier):
                # A second command with the same identifier on the same queue.
                self._fail(req, NvmeError(GenericStatus.COMMAND_ID_CONFLICT))
                return False
            self.outstanding[key] = req
        try:
            handler = self.handler_for(req)
            if handler is None:
                raise NvmeError(GenericStatus.INVALID_OPCODE, param=0)
            req.handler = handler
            req.cmd = handler.view.view(req.sqe._mv)
            gate = getattr(self.subsystem, "command_gate", None)
            if gate is not None:  # a sanitize operation restricts commands
                gate(self, req)
            if req.sqe.fuse == Fuse.FIRST and not handler.fused_first:
                raise NvmeError(GenericStatus.INVALID_FIELD, param=1)
            if req.sqe.fuse == Fuse.SECOND and not handler.fused_second:
                raise NvmeError(GenericStatus.INVALID_FIELD, param=1)
            if req.sqe.fuse == 3:
                raise NvmeError(GenericStatus.INVALID_FIELD, param=1)
            if handler.ns == "active":
                nsid = req.sqe.nsid
                ns = self.namespace(nsid)
                if ns is None:
                    raise self.nsid_error(nsid)
                req.ns = ns
            if handler.transfer is not None:
                req.data_len = handler.transfer(self, req)
                req.data_dir = handler.data_direction() if req.data_len else DataDirection.NONE
            if handler.meta_transfer is not None:
                req.meta_len = handler.meta_transfer(self, req)
            if self.max_transfer and req.data_len > self.max_transfer and handler.data_direction() != 0:
                if not req.admin:
                    raise NvmeError(GenericStatus.INVALID_FIELD, msg="transfer larger than MDTS")
        except NvmeError as err:
            self._fail(req, err)
            return False
        return True

    def _forget_aer(self, earlier: Request) -> bool:
        """A new admin command reuses the identifier of ``earlier``: if that
        is an Asynchronous Event Request still waiting for an event, the host
        has given it up and the new command is accepted (lock held).

        The specification lets a controller answer Command ID Conflict, and
        we do for any other command still running: its completion is still
        to come, and two completions with one identifier are ambiguous.  An
        outstanding AER is different: hosts complete their AERs themselves
        when they tear a controller down (SPDK does on detach, then sends
        Property Set CC.SHN with one of their identifiers), and Linux nvmet
        does not track identifiers at all.  Refusing would leave the
        controller never shut down; so the forgotten AER ends without a
        completion (one now would carry the new command's identifier) and
        any event it would have reported waits for the next AER."""
        if not earlier.admin or earlier not in self.aer_requests:
            return False
        self.aer_requests.remove(earlier)
        del self.outstanding[(earlier.sqid, earlier.cid)]
        earlier.cancel()
        log.info("controller %d: command %#x reuses the identifier of an outstanding AER; the AER is dropped",
                 self.cntlid, earlier.cid)
        return True

    def execute(self, req: Request) -> None:
        """Run a prepared command (its data mapped by the transport)."""
        if req.done:
            return
        fuse = req.sqe.fuse
        with self.lock:
            pending_first = self._fused_first.pop(req.sqid, None)
        if pending_first is not None and fuse != Fuse.SECOND:
            # The first half of a fused pair without its second half.
            self._fail(pending_first, NvmeError(GenericStatus.ABORTED_MISSING_FUSED))
        if fuse == Fuse.FIRST:
            with self.lock:
                self._fused_first[req.sqid] = req
            return
        if fuse == Fuse.SECOND:
            if pending_first is None:
                self._fail(req, NvmeError(GenericStatus.ABORTED_MISSING_FUSED))
                return
            fused = FUSED_COMMANDS.get((pending_first.opcode, req.opcode))
            if fused is None:
                err = NvmeError(GenericStatus.INVALID_FIELD, param=1)
                self._fail(pending_first, err)
                self._fail(req, err)
                return
            self._run(req, lambda: fused(self, pending_first, req), partner=pending_first)
            return
        self._run(req, lambda: req.handler.execute(self, req))

    def _run(self, req: Request, call: Callable[[], object], partner: Request | None = None) -> None:
        faults = self.subsystem.faults
        if faults is not None:
            # What to run if a delay fault resumes the command later.
            req.context["fault_resume"] = (call, partner)
            if faults.intercept(self, req):
                return
        try:
            result = call()
        except NvmeError as err:
            if partner is not None and not partner.done:
                self._fail(partner, NvmeError(GenericStatus.ABORTED_FAILED_FUSED))
            self._fail(req, err)
            return
        except Exception as exc:  # a bug must not take the device down
            log.exception("internal error executing %r", req)
            err = NvmeError(GenericStatus.INTERNAL_ERROR, dnr=False, msg=str(exc))
            if partner is not None and not partner.done:
                self._fail(partner, err)
            self._fail(req, err)
            return
        if result is DEFERRED:
            return
        if partner is not None and not partner.done:
            partner.complete()
        req.complete()

    def submit(
        self,
        sqe: Any,
        sqid: int = 0,
        data: Any = None,
        meta: Any = None,
    ) -> Request:
        """Prepare and execute a command with plain buffers (tests, in-process
        use).  ``data``/``meta`` are writable buffers of at least the
        command's transfer length (they are sliced to it); ``None`` makes a
        zeroed buffer of the right size.  Returns the request (``req.cqe``,
        ``req.status``, and ``req.data`` holding what a read returned)."""
        req = self.new_request(sqe, sqid)
        if self.prepare(req):
            req.data = [_buffer(data, req.data_len)] if req.data_len else []
            req.meta = [_buffer(meta, req.meta_len)] if req.meta_len else []
            self.execute(req)
        return req

    def _request_done(self, req: Request) -> None:
        with self.lock:
            key = (req.sqid, req.cid)
            if self.outstanding.get(key) is req:
                del self.outstanding[key]
        if req.status.value & 0x7FF and not req.context.get("no_error_log"):
            self._record_error(req, req.context.get("error"))

    def _fail(self, req: Request, err: NvmeError) -> None:
        req.context["error"] = err
        if err.dw0 is not None:
            req.cqe.dw0 = err.dw0
        req.complete(err.status)

    def _record_error(self, req: Request, err: NvmeError | None) -> None:
        entry = ErrorInformationEntry()
        with self.lock:
            self.error_count += 1
            entry.error_count = self.error_count
            entry.sqid = req.sqid
            entry.cmdid = req.cid
            entry.status = req.status.value
            if err is not None and err.param is not None:
                entry.pel_byte = err.param
                entry.pel_bit = err.bit
            else:
                entry.parm_error_location = 0xFFFF
            entry.lba = err.lba if err is not None and err.lba is not None else 0
            # A Fabrics command has no NSID (bytes 4-7 hold FCTYPE): "not
            # specific to a namespace" is FFFFFFFFh.
            entry.nsid = 0xFFFFFFFF if req.opcode == 0x7F and self.fabrics else req.sqe.nsid
            self.error_log.appendleft(bytes(entry))

    # ------------------------------------------------------------------
    # asynchronous events

    def add_aer(self, req: Request) -> object:
        """Keep an Asynchronous Event Request until an event needs it."""
        with self.lock:
            if len(self.aer_requests) > AERL:
                raise NvmeError(CommandSpecificStatus.ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED)
            self.aer_requests.append(req)
        self._deliver_events()
        return DEFERRED

    def post_event(self, event_type: int, info: int, log_page: int) -> None:
        """Report an asynchronous event (if enabled by feature 0Bh for SMART
        and notice events).  Events of a type stay masked once reported until
        the host reads the log page that clears them."""
        if not self.features.event_enabled(event_type, info):
            return
        with self.lock:
            if (event_type, info, log_page) not in self.pending_events:
                self.pending_events.append((event_type, info, log_page))
        self._deliver_events()

    def _deliver_events(self) -> None:
        while True:
            with self.lock:
                event = next((e for e in self.pending_events if e[0] not in self.masked_event_types), None)
                if event is None or not self.aer_requests:
                    return
                self.pending_events.remove(event)
                req = self.aer_requests.popleft()
                self.masked_event_types.add(event[0])
            event_type, info, log_page = event
            req.complete(dw0=event_type | (info << 8) | (log_page << 16))

    def log_page_read(self, lid: int, retain: bool) -> None:
        """A Get Log Page finished: unmask the event type the page clears
        (unless RAE asked to retain it)."""
        if retain:
            return
        clears = {
            LogPageId.ERROR: AsyncEventType.ERROR,
            LogPageId.SMART: AsyncEventType.SMART,
            LogPageId.CHANGED_NS: AsyncEventType.NOTICE,
            LogPageId.FW_SLOT: AsyncEventType.NOTICE,
            LogPageId.DISCOVERY: AsyncEventType.NOTICE,
            LogPageId.RESERVATION: AsyncEventType.IO_COMMAND_SET,
            LogPageId.SANITIZE: AsyncEventType.IO_COMMAND_SET,
        }
        event_type = clears.get(lid)
        if event_type is None:
            return
        with self.lock:
            self.masked_event_types.discard(event_type)
        self._deliver_events()

    # ------------------------------------------------------------------
    # keep alive

    def keep_alive(self) -> None:
        self.last_keep_alive = time.monotonic()

    def keep_alive_expired(self, now: float | None = None) -> bool:
        if not self.kato:
            return False
        now = time.monotonic() if now is None else now
        return (now - self.last_keep_alive) * 1000 > self.kato

    def __repr__(self) -> str:
        return f"<Controller {self.cntlid} of {self.subsystem.nqn}>"


def _buffer(buf: Any, length: int) -> memoryview:
    if buf is None:
        return memoryview(bytearray(length))
    mv = memoryview(buf).cast("B")
    if mv.nbytes < length:
        raise ValueError(f"buffer of {mv.nbytes} bytes for a {length}-byte transfer")
    return mv[:length]


Buffers = Sequence[memoryview]
