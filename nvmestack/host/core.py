"""The host core: controller state machine, initialisation, namespace scan,
the request life cycle, passthrough, timeouts, abort, reset and recovery,
asynchronous events (Linux drivers/nvme/host/core.c with the recovery of
pci.c's nvme_timeout / nvme_reset_work, transport-neutral).

States (Linux's ``nvme_ctrl_state``) and the only transitions allowed
(``nvme_change_ctrl_state``)::

    CONNECTING     <- NEW, RESETTING
    LIVE           <- CONNECTING
    RESETTING      <- NEW, LIVE
    DELETING       <- LIVE, RESETTING, CONNECTING
    DELETING_NOIO  <- DELETING, DEAD
    DEAD           <- DELETING

Bring-up (``connect``, also the second half of every reset): the
transport enables the device, CC.EN is cleared and CSTS.RDY = 0 awaited
(at most CAP.TO), the admin queue is set up, CC is written (MPS from the
host page size, NVM command set, round robin, 64-byte SQEs, 16-byte CQEs)
and then CC.EN, CSTS.RDY = 1 awaited (at most CAP.TO); Identify
Controller; the Commands Supported and Effects log; Set Features Number of
Queues (as many I/O queues as granted, up to the number asked for);
the I/O queues (interrupt driven ones, then polled ones); Asynchronous
Event Configuration; Asynchronous Event Requests armed on reserved tags;
LIVE; the namespace scan (Identify active namespace list, then for each
namespace the identification descriptors and Identify Namespace).

Requests: :meth:`NvmeController.submit` returns a
:class:`~nvmestack.host.request.HostRequest` at once.  While the
controller is not LIVE (reset in progress) requests wait in a pending list
and go out once it is LIVE again; a dead controller fails them with
:class:`ControllerDeadError`.  Each request in flight has a deadline
(``admin_timeout`` 60 s, ``io_timeout`` 30 s by default, or the ``timeout``
given); the watchdog thread handles an expired one as Linux's nvme_timeout
does: a controller with CSTS.CFS is reset; otherwise the queue is polled for
a completion the interrupt missed; then an I/O command gets an Abort (at
most ACL + 1 outstanding), and a command that times out again, or any
admin command, resets the controller (and a Fabrics transport tears its
connections down first, as Linux's error recovery: the path may be
silent).  The watchdog also sends Keep Alive every KATO / 2 when the
transport needs it (one at a time, on a reserved tag, with a deadline of
KATO / 2: a silent path is noticed within KATO) and starts the health
check, which reads CSTS on a thread of its own and resets the controller
as soon as it sees CSTS.CFS or all ones.  Nothing the watchdog does waits
for the controller (over Fabrics a register read is a Property Get that a
silent path makes wait), so keep alive, timeouts and the health check
never wait on each other.

Reset (``nvme_reset_work``): the controller is disabled (CC.EN = 0), the
completions already posted are reaped, every request still in flight is
cancelled -- I/O requests are requeued (counting a retry) and resubmitted
once the controller is LIVE again, the others complete with Command
Aborted By Host -- and the bring-up runs again.  If it fails, a transport
may ask for another attempt after a delay (``Transport.reconnect_after``:
NVMe/TCP reconnects every reconnect delay until its controller loss
timeout, staying CONNECTING meanwhile, as Linux's fabrics drivers);
otherwise the controller goes DELETING then DEAD and every request fails
with :class:`ControllerDeadError`.  A request completes exactly once
(``HostRequest.double_completions`` counts refusals).

Errors: a failed I/O command without DNR is retried up to ``max_retries``
times (Linux's nvme_max_retries, 5), after the Command Retry Delay the
controller asks for (CRDT); admin and passthrough commands are not retried.

Asynchronous events: Namespace Attribute Changed reads the Changed
Namespace List (which clears the event) and rescans; SMART / health and
error events read their log page, log it and call ``event_callbacks``; the
request is re-armed afterwards.

Passthrough (``admin_passthru``/``io_passthru``, like NVME_IOCTL_ADMIN_CMD
and NVME_IOCTL_IO_CMD) returns ``(status, result)`` and follows the
Commands Supported and Effects log: I/O is frozen around a command whose
effects say it must run alone (CSE), namespaces are rescanned after one
that changes them (NIC, NCC), and ``content_callbacks`` hear about
logical block content changes (LBCC).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import enum
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..spec.admin import (
    Abort,
    AsyncEventRequest,
    Cns,
    GetFeatures,
    GetLogPage,
    Identify,
    KeepAlive,
    SetFeatures,
)
from ..spec.features import FeatureId
from ..spec.fabrics import DISCOVERY_NQN
from ..spec.identify import (
    IDENTIFY_DATA_SIZE,
    NS_LIST_MAX,
    ControllerType,
    IdentifyController,
    IdentifyControllerNvm,
    IdentifyNamespace,
    NamespaceList,
    NidType,
    Oaes,
    iter_ns_id_descriptors,
)
from ..spec.log import (
    ChangedNamespaceList,
    CommandsSupportedAndEffects,
    CriticalWarning,
    Effects,
    LogPageId,
    SmartLog,
)
from ..spec.opcodes import AdminOpcode, NvmOpcode
from ..spec.registers import Cap, CapCss, CcCss, Reg, mps_for_page_size
from ..spec.status import PathStatus, Status
from .queue import CqEntry, HostQueue
from .request import ControllerDeadError, HostRequest, NvmeHostError, NvmeStatusError
from .transport import Transport

__all__ = [
    "CtrlState",
    "ALLOWED_TRANSITIONS",
    "NvmeController",
    "HostNamespace",
    "NamespaceIds",
    "AsyncEvent",
    "NullTracer",
    "ControllerDeadError",
    "NvmeStatusError",
    "NvmeHostError",
    "InitError",
]

log = logging.getLogger(__name__)

ADMIN_QUEUE_ENTRIES = 32  # Linux's NVME_AQ_DEPTH
DEFAULT_IO_QUEUE_DEPTH = 1024  # Linux's io_queue_depth
DEFAULT_ADMIN_TIMEOUT = 60.0
DEFAULT_IO_TIMEOUT = 30.0
DEFAULT_SHUTDOWN_TIMEOUT = 5.0  # Linux's shutdown_timeout
DEFAULT_MAX_RETRIES = 5  # Linux's nvme_max_retries
DEFAULT_MAX_IO_QUEUES = 8  # the default queue count is one per CPU, at most this
_READY_POLL = 0.0005

_CSTS_RDY = 1 << 0
_CSTS_CFS = 1 << 1
_CSTS_NSSRO = 1 << 4
_CC_EN = 1
_CSE_MASK = 0x7 << 16
_CSER_MASK = 0x3 << 14
#: The notices this driver handles, enabled when OAES names them (Linux's
#: NVME_AEN_SUPPORTED): namespace attribute, firmware activation, ANA
#: change, discovery log change.
_AEN_NOTICES = Oaes.NS_ATTR | Oaes.FW_ACTIVATION | Oaes.ANA_CHANGE | Oaes.DISCOVERY_LOG_CHANGE
#: The SMART / Health critical warnings every NVMe version defines (1.0 on);
#: bit 5 (Persistent Memory Region) came with 1.4, bits 7:6 are reserved.
_AEC_SMART_WARNINGS = (CriticalWarning.SPARE | CriticalWarning.TEMPERATURE | CriticalWarning.RELIABILITY
                       | CriticalWarning.READ_ONLY | CriticalWarning.VOLATILE_BACKUP)
_instances = itertools.count()


class CtrlState(enum.Enum):
    """Controller states (Linux's ``enum nvme_ctrl_state``)."""

    NEW = "new"
    CONNECTING = "connecting"
    LIVE = "live"
    RESETTING = "resetting"
    DELETING = "deleting"
    DELETING_NOIO = "deleting (no IO)"
    DEAD = "dead"


#: new state -> the states it may be entered from (core.c nvme_change_ctrl_state).
ALLOWED_TRANSITIONS: dict[CtrlState, frozenset[CtrlState]] = {
    CtrlState.LIVE: frozenset({CtrlState.CONNECTING}),
    CtrlState.RESETTING: frozenset({CtrlState.NEW, CtrlState.LIVE}),
    CtrlState.CONNECTING: frozenset({CtrlState.NEW, CtrlState.RESETTING}),
    CtrlState.DELETING: frozenset({CtrlState.LIVE, CtrlState.RESETTING, CtrlState.CONNECTING}),
    CtrlState.DELETING_NOIO: frozenset({CtrlState.DELETING, CtrlState.DEAD}),
    CtrlState.DEAD: frozenset({CtrlState.DELETING}),
}

_TERMINAL = frozenset({CtrlState.DELETING, CtrlState.DELETING_NOIO, CtrlState.DEAD})


class InitError(NvmeHostError):
    """A step of the controller bring-up failed."""


class NullTracer:
    """The tracer used when none is installed: does nothing."""

    enabled = False

    def setup(self, req: HostRequest) -> None:
        pass

    def complete(self, req: HostRequest) -> None:
        pass


@dataclass(frozen=True)
class NamespaceIds:
    """Namespace identifiers (from the Identification Descriptor list, or
    Identify Namespace when the controller has no list)."""

    eui64: bytes | None = None
    nguid: bytes | None = None
    uuid: bytes | None = None
    csi: int | None = None


class HostNamespace:
    """A namespace as the host sees it (Linux's ``nvme_ns``): geometry from
    Identify Namespace, identifiers from the descriptor list.  The object
    stays the same across rescans while the namespace does (its fields are
    updated); ``removed`` is set when it goes away."""

    def __init__(self, ctrl: "NvmeController", nsid: int, identify: IdentifyNamespace, ids: NamespaceIds):
        self.ctrl = ctrl
        self.nsid = nsid
        self.removed = False
        self.identify = identify
        self.ids = ids
        self._apply()

    def _apply(self) -> None:
        idn = self.identify
        fmt = idn.lba_format
        self.block_size = fmt.block_size
        self.lba_shift = fmt.lbads
        self.metadata_size = fmt.ms
        self.nblocks = idn.nsze
        self.capacity_blocks = idn.ncap
        self.extended = bool(idn.flbas_extended)  # metadata at the end of each block
        self.pi_type = idn.dps_pi_type
        self.pi_first = bool(idn.dps_pi_first)

    def update(self, identify: IdentifyNamespace, ids: NamespaceIds) -> bool:
        """Take new Identify data; True when something the block layer uses changed."""
        before = (self.block_size, self.nblocks, self.metadata_size, self.extended, self.pi_type)
        self.identify = identify
        self.ids = ids
        self._apply()
        return before != (self.block_size, self.nblocks, self.metadata_size, self.extended, self.pi_type)

    @property
    def size(self) -> int:
        """Bytes of logical block data."""
        return self.nblocks * self.block_size

    def __repr__(self) -> str:
        gone = " removed" if self.removed else ""
        return f"<HostNamespace {self.nsid} {self.nblocks}x{self.block_size}{gone}>"


@dataclass
class AsyncEvent:
    """An asynchronous event the controller reported (completion dword 0 of
    an Asynchronous Event Request) and the log page read for it."""

    type: int
    info: int
    log_page: int
    result: int
    data: bytes | None = None
    nsids: list[int] = field(default_factory=list)
    time: float = field(default_factory=time.monotonic)

    TYPE_NAMES = {0: "error", 1: "smart", 2: "notice", 3: "immediate", 4: "one-shot", 6: "io-command-set",
                  7: "vendor"}

    @property
    def type_name(self) -> str:
        return self.TYPE_NAMES.get(self.type, f"type {self.type}")


def _status_of(code, dnr: bool = False) -> Status:
    return code.status(dnr=dnr)


class NvmeController:
    """An NVMe controller driven through ``transport`` (see the module
    docstring).

    Options: ``io_queues`` interrupt driven (default) I/O queues wanted
    (default: one per CPU, at most 8, never more than the controller grants);
    ``poll_queues`` polled I/O queues on top (used by ``submit(...,
    polled=True)``); ``io_queue_depth`` entries per I/O queue (at most
    CAP.MQES + 1); ``admin_timeout`` / ``io_timeout`` seconds;
    ``max_retries``; ``shutdown_timeout``; ``aen_commands`` Asynchronous
    Event Requests kept outstanding (at most AERL + 1); ``smart_events``
    enable SMART / health critical warning events; ``watchdog_interval``
    how often the watchdog looks (default from the timeouts);
    ``connect`` bring the controller up now (else call :meth:`connect`).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        io_queues: int | None = None,
        poll_queues: int = 0,
        io_queue_depth: int = DEFAULT_IO_QUEUE_DEPTH,
        admin_timeout: float = DEFAULT_ADMIN_TIMEOUT,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        aen_commands: int = 1,
        smart_events: bool = True,
        watchdog_interval: float | None = None,
        tracer: Any = None,
        connect: bool = True,
        name: str | None = None,
    ):
        if io_queues is not None and io_queues < 0:
            raise ValueError("io_queues cannot be negative")
        if poll_queues < 0:
            raise ValueError("poll_queues cannot be negative")
        if io_queue_depth < 2:
            raise ValueError("io_queue_depth must be at least 2")
        self.transport = transport
        self.name = name or f"nvme{next(_instances)}"
        self.io_queues_wanted = (min(os.cpu_count() or 1, DEFAULT_MAX_IO_QUEUES)
                                 if io_queues is None else io_queues)
        self.poll_queues_wanted = poll_queues
        self.io_queue_depth = io_queue_depth
        self.admin_timeout = float(admin_timeout)
        self.io_timeout = float(io_timeout)
        self.max_retries = int(max_retries)
        self.shutdown_timeout = float(shutdown_timeout)
        self.shutdown_wait = self.shutdown_timeout  # from RTD3E once identified
        self.aen_commands = max(0, int(aen_commands))
        self.smart_events = smart_events
        self.tracer = tracer if tracer is not None else NullTracer()

        self._state = CtrlState.NEW
        self._lock = threading.RLock()
        self._state_cv = threading.Condition(self._lock)
        self.state_history: list[tuple[CtrlState, CtrlState]] = []
        #: Called as fn(old, new) after every state change (any thread; keep it quick).
        self.state_callbacks: list[Callable[[CtrlState, CtrlState], Any]] = []
        self.dead_reason: str | None = None

        # What the controller told us.
        self.cap = 0
        self.vs = 0
        self.css = CcCss.NVM  # CC.CSS the controller was enabled with
        self.identify: IdentifyController | None = None
        self.identify_nvm: IdentifyControllerNvm | None = None  # CNS 06h, CSI NVM (WZSL, DMRL, VSL ...)
        self.effects = CommandsSupportedAndEffects()
        self.page_size = transport_page_size(transport)
        self.max_transfer = 0
        self.max_segments = getattr(transport, "max_segments", 128)
        self.sgls = 0
        self.abort_limit = 1
        self.kato = 0.0
        self.crdt = (0, 0, 0)
        self.queues_granted = 0
        self.aec = 0  # the Asynchronous Event Configuration in effect
        self._aec_smart_refused = False
        self._aec_warned = False

        # Queues.
        self.admin_queue: HostQueue | None = None
        self.io_queues: list[HostQueue] = []  # every I/O queue, by qid - 1
        self._default_queues: list[HostQueue] = []
        self._poll_queues: list[HostQueue] = []
        self._tls = threading.local()
        self._next_slot = 0
        self._pending: deque[HostRequest] = deque()
        self._frozen = 0
        self._aborts_outstanding = 0

        # Namespaces and events.
        self.namespaces: dict[int, HostNamespace] = {}
        self._scan_lock = threading.Lock()
        self._ns_changed = False
        self.events: deque[AsyncEvent] = deque(maxlen=256)
        self.event_callbacks: list[Callable[[AsyncEvent], Any]] = []
        self.namespace_callbacks: list[Callable[[str, HostNamespace], Any]] = []
        self.content_callbacks: list[Callable[[int, int], Any]] = []  # (nsid, opcode) after LBCC passthrough

        # Counters the tests (and curious users) read.
        self.double_completions = 0
        self.stats = {"timeouts": 0, "polled_after_timeout": 0, "aborts": 0, "resets": 0, "retries": 0,
                      "requeued": 0, "spurious": 0, "completed": 0, "failed": 0}

        # Threads: the watchdog, the reset worker, the event worker and the
        # health check.
        self._stop = threading.Event()
        self._reset_wq = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-reset")
        self._wq = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-wq")
        self._reset_future: concurrent.futures.Future | None = None
        # The health check reads CSTS on a thread of its own (over Fabrics
        # a Property Get, which a silent path makes wait): the watchdog never
        # waits for it.
        self._health_wq = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-health")
        self._health_busy = False
        self._last_csts = 0  # the health check's latest reading of this association
        #: Times the controller went LIVE: a reading or a decision taken in
        #: an earlier association does not apply to the current one.
        self.generation = 0
        self._last_keep_alive = time.monotonic()
        self._keep_alive_req: HostRequest | None = None
        self._keep_alive_tag = False  # a reserved admin tag for Keep Alive
        self._closed = False

        transport.attach(self)  # a Fabrics transport sets kato
        # Fine enough for the shortest deadline it watches (Keep Alive's is KATO / 2).
        tick = min([self.admin_timeout, self.io_timeout] + ([self.kato] if self.kato else [])) / 10
        self.watchdog_interval = watchdog_interval or max(0.01, min(0.5, tick))
        self._watchdog = threading.Thread(target=self._watchdog_loop, name=f"{self.name}-watchdog", daemon=True)
        self._watchdog.start()
        if connect:
            try:
                self.connect()
            except BaseException:
                # The caller gets no object to shut down: release it all here.
                self.shutdown()
                raise

    # ==================================================================
    # state machine

    @property
    def state(self) -> CtrlState:
        return self._state

    def change_state(self, new: CtrlState, *, generation: int | None = None) -> bool:
        """Move to ``new`` if Linux allows it from the current state (and,
        with ``generation``, only while the controller is still in that
        association); False (and nothing changes) otherwise."""
        with self._lock:
            old = self._state
            if old not in ALLOWED_TRANSITIONS.get(new, ()):
                return False
            if generation is not None and generation != self.generation:
                return False
            self._state = new
            if new == CtrlState.LIVE:
                self.generation += 1
                self._last_csts = 0
                self._last_keep_alive = time.monotonic()
            self.state_history.append((old, new))
            self._state_cv.notify_all()
        log.debug("%s: %s -> %s", self.name, old.value, new.value)
        for fn in list(self.state_callbacks):
            try:
                fn(old, new)
            except Exception:
                log.exception("state callback")
        return True

    def wait_state(self, *states: CtrlState, timeout: float | None = None) -> bool:
        """Wait until the state is one of ``states``; True if it is."""
        with self._state_cv:
            return self._state_cv.wait_for(lambda: self._state in states, timeout)

    def wait_live(self, timeout: float | None = None) -> bool:
        """Wait until LIVE (or a state it cannot come back from)."""
        self.wait_state(CtrlState.LIVE, CtrlState.DEAD, CtrlState.DELETING, CtrlState.DELETING_NOIO,
                        timeout=timeout)
        return self._state == CtrlState.LIVE

    # ==================================================================
    # bring-up

    def connect(self) -> None:
        """Bring the controller from NEW to LIVE; on failure it ends DEAD and
        ControllerDeadError says why."""
        if not self.change_state(CtrlState.CONNECTING):
            raise NvmeHostError(f"cannot connect in state {self._state.value}")
        try:
            self._setup()
        except Exception as exc:
            reason = f"initialisation failed: {exc}"
            self._remove_dead(reason)
            raise ControllerDeadError(f"{self.name}: {reason}") from exc
        if not self.change_state(CtrlState.LIVE):
            raise ControllerDeadError(f"{self.name}: could not go live from {self._state.value}")
        self._kick_pending()
        try:
            self.rescan()
        except ControllerDeadError:
            raise
        except Exception:
            log.exception("%s: namespace scan failed", self.name)

    @property
    def ready_timeout(self) -> float:
        """CAP.TO in seconds (at least 0.5)."""
        return max(1, (self.cap >> 24) & 0xFF) * 0.5

    def _wait_ready(self, ready: bool, what: str) -> None:
        """Wait (at most CAP.TO) for CSTS.RDY to read ``ready``."""
        timeout = self.ready_timeout
        deadline = time.monotonic() + timeout
        transport = self.transport
        while True:
            csts = transport.reg_read32(Reg.CSTS)
            if csts == 0xFFFFFFFF:
                raise InitError(f"{what}: the device is gone (CSTS reads all ones)")
            if bool(csts & _CSTS_RDY) == ready:
                return
            if ready and csts & _CSTS_CFS:
                raise InitError(f"{what}: controller fatal status (CSTS {csts:#x})")
            if time.monotonic() >= deadline:
                raise InitError(f"{what}: CSTS.RDY did not become {int(ready)} within CAP.TO "
                                f"({timeout:g} s; CSTS {csts:#x})")
            time.sleep(_READY_POLL)

    def _setup(self) -> None:
        """The bring-up of the module docstring (state CONNECTING)."""
        transport = self.transport
        transport.enable_device()
        self.cap = cap = transport.reg_read64(Reg.CAP)
        self.vs = transport.reg_read32(Reg.VS)
        mpsmin, mpsmax = (cap >> 48) & 0xF, (cap >> 52) & 0xF
        mps = mps_for_page_size(self.page_size)
        if not mpsmin <= mps <= mpsmax:
            raise InitError(f"host page size {self.page_size} is outside the controller's "
                            f"{1 << (12 + mpsmin)}..{1 << (12 + mpsmax)}")
        # Disable first (and clear a shutdown notification), as Linux does
        # before it programs the admin queue.
        transport.reg_write32(Reg.CC, 0)
        self._wait_ready(False, "disable")
        csts = transport.reg_read32(Reg.CSTS)
        if csts & _CSTS_NSSRO:
            transport.reg_write32(Reg.CSTS, _CSTS_NSSRO)
        mqes = (cap & 0xFFFF) + 1
        entries = min(ADMIN_QUEUE_ENTRIES, mqes)
        aer_tags = min(self.aen_commands, entries - 2)
        # Keep Alive gets a reserved tag of its own, as Linux's, so that it
        # never waits behind other admin commands for one.
        self._keep_alive_tag = bool(getattr(transport, "needs_keep_alive", False)) and aer_tags < entries - 2
        reserved = aer_tags + self._keep_alive_tag
        self.admin_queue = self._setup_queue(transport.setup_admin_queue(entries, reserved))
        # I/O Command Set selection as Linux's nvme_enable_ctrl: all supported
        # I/O command sets (110b) when CAP.CSS.IOCSS is set, else NVM (000b).
        self.css = CcCss.ALL_IOCS if (cap >> 37) & CapCss.IOCS else CcCss.NVM
        cc = (mps << 7) | (self.css << 4) | (0 << 11) | (6 << 16) | (4 << 20)  # AMS RR, IOSQES 6, IOCQES 4
        transport.reg_write32(Reg.CC, cc)
        transport.reg_read32(Reg.CC)  # flush the write (Linux does, for PCI)
        transport.reg_write32(Reg.CC, cc | _CC_EN)
        self._wait_ready(True, "enable")

        data = self._admin_data(Identify(cns=Cns.CTRL), IDENTIFY_DATA_SIZE, "Identify Controller")
        idc = IdentifyController.from_bytes(data)
        self._take_identify(idc)
        self._identify_nvm()
        self._read_effects()
        self._setup_io_queues()
        self._configure_aen()
        for _ in range(min(self.aen_commands, idc.aerl + 1, aer_tags)):
            self._submit_aer()

    def _setup_queue(self, queue: HostQueue) -> HostQueue:
        queue.on_start = self._on_start
        queue.on_complete = self._complete_cqe
        return queue

    def _take_identify(self, idc: IdentifyController) -> None:
        self.identify = idc
        mpsmin_page = 1 << (12 + ((self.cap >> 48) & 0xF))
        limit = int(getattr(self.transport, "max_transfer_size", 8 << 20))
        mdts = (1 << idc.mdts) * mpsmin_page if idc.mdts else 0
        self.max_transfer = min(mdts, limit) if mdts else limit
        self.sgls = idc.sgls_support
        self.abort_limit = idc.acl + 1
        self.crdt = (idc.crdt1, idc.crdt2, idc.crdt3)
        # Linux: the shutdown wait follows RTD3E, within shutdown_timeout .. 60 s.
        self.shutdown_wait = min(max(idc.rtd3e / 1e6, self.shutdown_timeout), max(60.0, self.shutdown_timeout))
        if getattr(self.transport, "needs_keep_alive", False) and idc.kas:
            self.kato = max(self.kato, idc.kas * 0.1)

    def _identify_nvm(self) -> None:
        """The NVM command set specific Identify Controller (non-MDTS limits,
        as Linux's nvme_init_non_mdts_limits); optional."""
        self.identify_nvm = None
        if self.vs < 0x10400:
            return
        buf = bytearray(IDENTIFY_DATA_SIZE)
        status, _ = self._admin_result(Identify(cns=Cns.CSI_CTRL, csi=0), buf)
        if status.ok:
            self.identify_nvm = IdentifyControllerNvm.from_bytes(buf)

    def _read_effects(self) -> None:
        """The Commands Supported and Effects log (Linux's known NVM effects
        when the controller has none)."""
        idc = self.identify
        page = CommandsSupportedAndEffects()
        if idc is not None and idc.lpa_cmd_effects:
            status, data = self._get_log(LogPageId.CMD_EFFECTS, CommandsSupportedAndEffects.SIZE)
            if status.ok:
                page = CommandsSupportedAndEffects.from_bytes(data)
            else:
                log.warning("%s: Commands Supported and Effects log: %s", self.name, status)
        if not page.acs[AdminOpcode.FORMAT_NVM].csupp:
            # Linux's nvme_init_known_nvm_effects.
            page.acs[AdminOpcode.FORMAT_NVM].value |= Effects.LBCC | Effects.NCC | _CSE_MASK
            page.acs[AdminOpcode.SANITIZE].value |= Effects.LBCC | _CSE_MASK
            for opcode in (NvmOpcode.WRITE, NvmOpcode.WRITE_ZEROES, NvmOpcode.WRITE_UNCORRECTABLE):
                page.iocs[opcode].value |= Effects.LBCC
        self.effects = page

    def _setup_io_queues(self) -> None:
        """Set Features Number of Queues, then create the I/O queues."""
        want = self.io_queues_wanted + self.poll_queues_wanted
        for queue in self.io_queues:
            queue.drain()
        self.io_queues, self._default_queues, self._poll_queues = [], [], []
        self.queues_granted = 0
        if want == 0:
            return
        want = min(want, 0xFFFF)
        status, result = self._set_features(FeatureId.NUM_QUEUES, (want - 1) | (want - 1) << 16)
        if not status.ok:
            # A degraded controller may refuse; it stays usable through the admin queue.
            log.error("%s: could not set the queue count: %s", self.name, status)
            return
        self.queues_granted = min(result & 0xFFFF, result >> 16) + 1
        count = self.transport.io_queue_limit(min(want, self.queues_granted))
        polled = min(self.poll_queues_wanted, count - 1 if self.io_queues_wanted else count)
        polled = max(0, polled)
        default = count - polled
        depth = min(self.io_queue_depth, (self.cap & 0xFFFF) + 1, 4096)
        queues = []
        for qid in range(1, count + 1):
            try:
                queue = self.transport.create_io_queue(qid, depth, polled=qid > default)
            except ControllerDeadError:
                raise
            except Exception as exc:
                # As Linux: continue with the queues there are (even none:
                # the admin queue still works).
                log.warning("%s: I/O queue %d: %s; continuing with %d I/O queues", self.name, qid, exc,
                            len(queues))
                break
            queues.append(self._setup_queue(queue))
        default = min(default, len(queues))
        self.io_queues = queues
        self._default_queues = [q for q in queues[:default]]
        self._poll_queues = [q for q in queues[default:]]

    def _smart_warnings(self) -> int:
        """The SMART / Health critical warnings the controller defines, as
        Asynchronous Event Configuration bits: none for a discovery
        controller (it has no SMART / Health log), bits 4:0 otherwise, and
        bit 5 from NVMe 1.4 on when the controller has a Persistent Memory
        Region (CAP.PMRS)."""
        idc = self.identify
        if idc.cntrltype == ControllerType.DISCOVERY or idc.subnqn == DISCOVERY_NQN:
            return 0
        warnings = int(_AEC_SMART_WARNINGS)
        if self.vs >= 0x10400 and Cap.from_bytes(self.cap.to_bytes(8, "little")).pmrs:
            warnings |= CriticalWarning.PMR_READ_ONLY
        return warnings

    def _configure_aen(self) -> None:
        """Asynchronous Event Configuration (Linux's nvme_enable_aen): the
        notices OAES names among those this driver handles and, with
        ``smart_events``, the SMART / Health critical warnings the
        controller defines -- never a bit it does not report (Linux nvmet
        refuses the whole value for one).  A controller that still refuses
        the warnings gets the notices alone (remembered for the next
        bring-up); a refusal of those is a warning once per controller.
        ``aec`` is the value in effect."""
        idc = self.identify
        notices = idc.oaes & _AEN_NOTICES
        smart = self._smart_warnings() if self.smart_events and not self._aec_smart_refused else 0
        self.aec = 0
        value = notices | smart
        if not value:
            return
        status, _ = self._set_features(FeatureId.ASYNC_EVENT, value)
        if not status.ok and smart:
            log.info("%s: the controller refused SMART / health events (%#x: %s); enabling %#x", self.name,
                     value, status, notices)
            self._aec_smart_refused = True
            value = notices
            if not value:
                return
            status, _ = self._set_features(FeatureId.ASYNC_EVENT, value)
        if status.ok:
            self.aec = value
        elif not self._aec_warned:
            self._aec_warned = True
            log.warning("%s: failed to configure asynchronous events (%#x): %s", self.name, value, status)
        else:
            log.debug("%s: failed to configure asynchronous events (%#x): %s", self.name, value, status)

    @property
    def io_queue_count(self) -> int:
        """Number of I/O queues (interrupt driven and polled)."""
        return len(self.io_queues)

    @property
    def poll_queue_count(self) -> int:
        return len(self._poll_queues)

    # ==================================================================
    # requests

    def _new_request(self, cmd: Any, data: Any, meta: Any, qid: int | None, timeout: float | None,
                     direction: int | None, polled: bool | None = None) -> HostRequest:
        if qid is not None and qid != 0 and not 1 <= qid <= 0xFFFF:
            raise ValueError(f"queue id {qid} is not valid")
        admin = qid == 0 or (qid is None and bool(getattr(type(cmd), "ADMIN", False)))
        req = HostRequest(cmd, data, meta, admin=admin, direction=direction)
        req.ctrl = self
        req.qid = 0 if admin else qid
        if qid:
            req.context["qid"] = qid
        req.timeout = float(timeout) if timeout is not None else (self.admin_timeout if admin else self.io_timeout)
        req.noretry = admin
        req.polled = bool(polled)
        return req

    def submit(self, cmd: Any, data: Any = None, meta: Any = None, *, qid: int | None = None,
               timeout: float | None = None, direction: int | None = None, polled: bool | None = None,
               retry: bool | None = None) -> HostRequest:
        """Start a command and return its request at once.

        ``qid``: 0 the admin queue, None an I/O queue picked for the calling
        thread (the admin queue for typed admin commands), or an I/O queue
        id.  ``data``/``meta``: a buffer or a list of buffers (scattered);
        buffers from :meth:`alloc_buffer` are mapped without a copy.
        ``timeout`` seconds (default ``admin_timeout``/``io_timeout``; 0 =
        none).  ``direction`` of the data (default from the opcode).
        ``polled``: use a polled I/O queue if there is one.  ``retry``:
        retry failures without DNR (default: I/O commands yes, admin no)."""
        req = self._new_request(cmd, data, meta, qid, timeout, direction, polled)
        if retry is not None:
            req.noretry = not retry
        plug = getattr(self._tls, "plug", None)
        if plug is not None:
            plug.append(req)
        else:
            self._dispatch([req])
        return req

    def execute(self, cmd: Any, data: Any = None, meta: Any = None, **options: Any) -> HostRequest:
        """:meth:`submit`, wait for the completion and raise its error
        (NvmeStatusError, ControllerDeadError); returns the request.  On an
        interrupt driven queue the caller looks at the completion queue once
        before it sleeps: a completion already posted is taken at once (the
        interrupt handler then finds nothing), which saves a thread switch."""
        self._flush_plug()
        req = self.submit(cmd, data, meta, **options)
        queue = req.queue
        if not req.done and queue is not None and not queue.polled and queue.cq_ready():
            # The completion is there already (a fast device): take it now
            # rather than wait for the interrupt thread to be scheduled.
            self.transport.poll(queue)
        req.wait()
        return req.raise_for_status()

    @contextlib.contextmanager
    def plug(self):
        """Hold this thread's submissions and start them together at the end
        of the block (one doorbell per queue; Linux's blk_start_plug)."""
        if getattr(self._tls, "plug", None) is not None:
            yield
            return
        self._tls.plug = []
        try:
            yield
        finally:
            self._flush_plug()

    def _flush_plug(self) -> None:
        reqs = getattr(self._tls, "plug", None)
        self._tls.plug = None
        if reqs:
            self._dispatch(reqs)

    def submit_batch(self, reqs: list[HostRequest]) -> None:
        """Start requests made with :meth:`make_request` together."""
        self._dispatch(list(reqs))

    def make_request(self, cmd: Any, data: Any = None, meta: Any = None, *, qid: int | None = None,
                     timeout: float | None = None, direction: int | None = None,
                     polled: bool | None = None) -> HostRequest:
        """A request not started yet (see :meth:`submit_batch`)."""
        return self._new_request(cmd, data, meta, qid, timeout, direction, polled)

    def make_io(self, cmd: Any, data: list[memoryview], direction: int, polled: bool = False,
                kind: type[HostRequest] = HostRequest) -> HostRequest:
        """:meth:`make_request` for the block layer's fast path: ``cmd`` a
        typed view of an I/O command's own 64 bytes, ``data`` byte
        memoryviews (see :meth:`HostRequest.prepared`); nothing is checked
        or copied.  ``kind``: HostRequest or a subclass of it.  Start it
        with :meth:`submit_io`."""
        req = kind.prepared(cmd, data, direction)
        req.ctrl = self
        req.timeout = self.io_timeout
        req.polled = polled
        return req

    def submit_io(self, reqs: list[HostRequest], polled: bool = False) -> None:
        """Start I/O requests of one thread (from :meth:`make_io`) together.
        The common case -- the controller LIVE, I/O not frozen -- goes to
        the calling thread's queue in one batch without routing each
        request under the controller lock; anything else, and requests
        with a queue id, take :meth:`_dispatch` (the reference).  A state
        read here that is stale by the time the queue takes the batch is
        the same race the general path has between routing and
        submission: a queue that was reset refuses the batch, which then
        waits for the next queue."""
        queue = None
        if self._state is CtrlState.LIVE and not self._frozen and not self._closed:
            queue = self._worker_queue(polled)
        if queue is None:
            self._dispatch(reqs)
            return
        transport = self.transport
        map_data = transport.map_data
        poll, poll_wait = self._poll_fns(queue)
        started = []
        for req in reqs:
            try:
                map_data(req, queue)
            except Exception as exc:
                log.warning("%s: mapping the data of %r failed: %s", self.name, req, exc)
                self._fail(req, exc)
                continue
            req._poll = poll
            req._poll_wait = poll_wait
            started.append(req)
        if started:
            rejected = transport.submit(queue, started)
            if rejected:
                self._requeue(rejected)

    def _poll_fns(self, queue: HostQueue) -> tuple[Any, Any]:
        """What a request waiting on ``queue`` polls with: (poll, wait for
        readiness), both None for an interrupt driven queue; made once per
        queue."""
        fns = queue.poll_fns
        if fns is None:
            transport = self.transport
            fns = queue.poll_fns = ((lambda q=queue: transport.poll(q)), queue.wait_ready) if queue.polled \
                else (None, None)
        return fns

    # -- routing ----------------------------------------------------------------

    def _worker_queue(self, polled: bool) -> HostQueue | None:
        queues = self._poll_queues if polled and self._poll_queues else self._default_queues
        if not queues:
            queues = self._poll_queues
        if not queues:
            return None
        slot = getattr(self._tls, "slot", None)
        if slot is None:
            with self._lock:
                slot = self._next_slot
                self._next_slot += 1
            self._tls.slot = slot
        return queues[slot % len(queues)]

    def _route(self, req: HostRequest) -> HostQueue | BaseException | None:
        """The queue a request goes to now; None when it must wait (held in
        the pending list); an exception to fail it with."""
        with self._lock:
            state = self._state
            if state in (CtrlState.DEAD, CtrlState.DELETING_NOIO) or (
                    (state == CtrlState.DELETING or self._closed) and not req.internal):
                return ControllerDeadError(self._dead_message())
            if not req.internal:
                if state != CtrlState.LIVE or (self._frozen and not req.admin):
                    self._pending.append(req)
                    return None
            if req.admin:
                queue = self.admin_queue
            else:
                qid = req._context.get("qid") if req._context else None
                if qid:
                    queue = self.io_queues[qid - 1] if qid <= len(self.io_queues) else None
                    if queue is None:
                        return NvmeHostError(f"there is no I/O queue {qid} "
                                             f"({len(self.io_queues)} I/O queues)")
                else:
                    queue = self._worker_queue(req.polled)
                if queue is None:
                    return NvmeHostError("the controller has no I/O queue")
            if queue is None:
                return NvmeHostError("the controller has no admin queue")
            return queue

    def _dead_message(self) -> str:
        if self.dead_reason is None and (self._closed or self._state in (CtrlState.DELETING,
                                                                          CtrlState.DELETING_NOIO)):
            return f"{self.name}: the controller is being removed"
        return f"{self.name}: the controller is dead ({self.dead_reason or 'unrecoverable'})"

    def _dispatch(self, reqs: list[HostRequest]) -> None:
        """Route, map and start requests, one batch (doorbell) per queue."""
        batches: dict[int, tuple[HostQueue, list[HostRequest]]] = {}
        for req in reqs:
            target = self._route(req)
            if target is None:
                continue
            if isinstance(target, BaseException):
                self._fail(req, target)
                continue
            try:
                self.transport.map_data(req, target)
            except Exception as exc:
                log.warning("%s: mapping the data of %r failed: %s", self.name, req, exc)
                self._fail(req, exc)
                continue
            req._poll, req._poll_wait = self._poll_fns(target)
            batches.setdefault(id(target), (target, []))[1].append(req)
        for queue, batch in batches.values():
            rejected = self.transport.submit(queue, batch)
            if rejected:  # the queue went away under us (reset): wait for the next one
                self._requeue(rejected)

    def _requeue(self, reqs: list[HostRequest]) -> None:
        with self._lock:
            for req in reqs:
                req._poll = None
                self._pending.append(req)
            live = self._state == CtrlState.LIVE
        if live:
            self._kick_pending()

    def _kick_pending(self) -> None:
        """Start the requests held while the controller was not LIVE (or I/O
        was frozen)."""
        with self._lock:
            if self._state != CtrlState.LIVE or not self._pending:
                return
            if self._frozen:
                go = [r for r in self._pending if r.admin]
                self._pending = deque(r for r in self._pending if not r.admin)
            else:
                go = list(self._pending)
                self._pending.clear()
        if go:
            self._dispatch(go)

    def _on_start(self, req: HostRequest) -> None:
        """A request got its command identifier and goes to the device (queue
        lock held): time stamp, deadline, trace."""
        now = time.perf_counter()
        req.submitted_at = now
        req.deadline = now + req.timeout if req.timeout else 0.0
        req.aborted = False
        req.status = None
        req.traced = True
        tracer = self.tracer
        if tracer.enabled:  # both tracers return at once when not
            tracer.setup(req)

    # -- completion ---------------------------------------------------------------

    def _complete_cqe(self, req: HostRequest, entry: CqEntry) -> None:
        """A completion queue entry for ``req`` (from any queue's completion path)."""
        self._end_attempt(req, Status.from_field(entry[5]), entry[0], entry[1])

    def _end_attempt(self, req: HostRequest, status: Status, dw0: int = 0, dw1: int = 0,
                     requeue_only: bool = False) -> None:
        """One attempt of ``req`` ended with ``status``: retry it or complete it."""
        if not req._begin_completion():
            return
        req.status = status
        req.result = dw0
        req.dw1 = dw1
        req.completed_at = time.perf_counter()
        if req.traced:
            self._trace_complete(req)
        if not status.ok and self._should_retry(req, status):
            req.retries += 1
            req.status = None
            req._reopen()
            self.stats["retries"] += 1
            delay = 0.0
            if status.crd and not requeue_only:
                delay = self.crdt[status.crd - 1] * 0.1
            if requeue_only:
                self.stats["requeued"] += 1
                self._requeue([req])
            elif delay:
                timer = threading.Timer(delay, self._dispatch, ([req],))
                timer.daemon = True
                timer.start()
            else:
                self._dispatch([req])
            return
        self._finalize(req, None)

    def _should_retry(self, req: HostRequest, status: Status) -> bool:
        if req.noretry or status.dnr or req.retries >= self.max_retries:
            return False
        return self._state not in _TERMINAL

    def _finalize(self, req: HostRequest, error: BaseException | None) -> None:
        try:
            self.transport.unmap_data(req)
        except Exception as exc:  # pragma: no cover - a copy-out failure
            log.exception("unmapping %r", req)
            error = error or exc
        req.error = error
        if error is not None or (req.status is not None and not req.status.ok):
            self.stats["failed"] += 1
        else:
            self.stats["completed"] += 1
        req._finish()

    def _fail(self, req: HostRequest, error: BaseException) -> None:
        """Complete ``req`` without the device: dead controller, no queue,
        mapping failure."""
        if not req._begin_completion():
            return
        req.status = _status_of(PathStatus.ABORTED_BY_HOST, dnr=True)
        req.completed_at = time.perf_counter()
        self._trace_complete(req)
        self._finalize(req, error)

    def _trace_complete(self, req: HostRequest) -> None:
        """The tracer's completion event, once per attempt it saw start."""
        if not req.traced:
            return
        req.traced = False
        tracer = self.tracer
        if not tracer.enabled:
            return
        try:
            tracer.complete(req)
        except Exception:
            log.exception("tracer failed on %r", req)

    def _cancel(self, req: HostRequest) -> None:
        """A request taken out of flight without a completion (reset,
        timeout while connecting): requeued if it may be retried, else it
        completes with Command Aborted By Host (ControllerDeadError when the
        controller is going away)."""
        status = _status_of(PathStatus.ABORTED_BY_HOST)
        if self._state in _TERMINAL:
            self._fail(req, ControllerDeadError(self._dead_message()))
            return
        if not req.traced:  # it waited for a tag: it never reached the device
            self._requeue([req])
            return
        self._end_attempt(req, status, requeue_only=True)

    # ==================================================================
    # internal admin commands

    def _admin_internal(self, cmd: Any, data: Any = None, *, timeout: float | None = None) -> Status:
        """Run an admin command for the driver itself (also while
        connecting); returns its status.  ControllerDeadError when the
        controller is gone."""
        req = self._new_request(cmd, data, None, 0, timeout, None)
        req.internal = True
        req.noretry = True
        self._dispatch([req])
        req.wait()
        if req.error is not None:
            raise req.error
        return req.status

    def _admin_result(self, cmd: Any, data: Any = None) -> tuple[Status, HostRequest]:
        req = self._new_request(cmd, data, None, 0, None, None)
        req.internal = self._state in (CtrlState.CONNECTING, CtrlState.DELETING)
        req.noretry = True
        self._dispatch([req])
        req.wait()
        if req.error is not None:
            raise req.error
        return req.status, req

    def _admin_data(self, cmd: Any, length: int, what: str) -> bytearray:
        buf = bytearray(length)
        status, _ = self._admin_result(cmd, buf)
        if not status.ok:
            raise InitError(f"{what}: {status}")
        return buf

    def _set_features(self, fid: int, cdw11: int) -> tuple[Status, int]:
        status, req = self._admin_result(SetFeatures(fid=fid, cdw11=cdw11))
        return status, req.result

    def _get_log(self, lid: int, length: int, *, nsid: int = 0xFFFFFFFF, rae: bool = False,
                 lsp: int = 0, offset: int = 0) -> tuple[Status, bytearray]:
        buf = bytearray(length)
        cmd = GetLogPage(lid=lid, nsid=nsid, rae=rae, lsp=lsp)
        cmd.length = length
        cmd.offset = offset
        status, _ = self._admin_result(cmd, buf)
        return status, buf

    # Conveniences on the admin queue (not retried; statuses raise).

    def identify_raw(self, cns: int, nsid: int = 0, **fields: Any) -> bytearray:
        """Identify data structure ``cns`` (4096 bytes)."""
        buf = bytearray(IDENTIFY_DATA_SIZE)
        self.execute(Identify(cns=cns, nsid=nsid, **fields), buf, qid=0)
        return buf

    def get_log_page(self, lid: int, length: int, *, nsid: int = 0xFFFFFFFF, rae: bool = False,
                     lsp: int = 0, offset: int = 0) -> bytearray:
        cmd = GetLogPage(lid=lid, nsid=nsid, rae=rae, lsp=lsp)
        cmd.length = length
        cmd.offset = offset
        buf = bytearray(length)
        self.execute(cmd, buf, qid=0)
        return buf

    def get_features(self, fid: int, *, nsid: int = 0, sel: int = 0, cdw11: int = 0, data: Any = None) -> int:
        return self.execute(GetFeatures(fid=fid, nsid=nsid, sel=sel, cdw11=cdw11), data, qid=0).result

    def set_features(self, fid: int, cdw11: int, *, nsid: int = 0, save: bool = False, data: Any = None) -> int:
        return self.execute(SetFeatures(fid=fid, nsid=nsid, sv=save, cdw11=cdw11), data, qid=0).result

    # ==================================================================
    # passthrough (NVME_IOCTL_ADMIN_CMD / NVME_IOCTL_IO_CMD)

    def command_effects(self, opcode: int, *, admin: bool) -> int:
        """Effects of an opcode from the Commands Supported and Effects log,
        as Linux's nvme_command_effects reads them."""
        if admin:
            effects = self.effects.acs[opcode].value
            if effects & _CSER_MASK:
                effects &= ~_CSE_MASK
        else:
            effects = self.effects.iocs[opcode].value & ~_CSE_MASK  # never freeze I/O for an I/O command
        return effects

    def admin_passthru(self, cmd: Any, data: Any = None, meta: Any = None, *, timeout: float | None = None,
                       direction: int | None = None) -> tuple[Status, int]:
        """Any admin command; returns (status, completion dword 0).  NVMe
        statuses are returned, not raised; ControllerDeadError is raised."""
        return self._passthru(cmd, data, meta, 0, timeout, direction, admin=True)

    def io_passthru(self, cmd: Any, data: Any = None, meta: Any = None, *, qid: int | None = None,
                    timeout: float | None = None, direction: int | None = None) -> tuple[Status, int]:
        """Any I/O command (on ``qid``, or the calling thread's I/O queue);
        returns (status, completion dword 0)."""
        if qid == 0:
            raise ValueError("I/O passthrough goes to an I/O queue")
        return self._passthru(cmd, data, meta, qid, timeout, direction, admin=False)

    def _passthru(self, cmd: Any, data: Any, meta: Any, qid: int | None, timeout: float | None,
                  direction: int | None, *, admin: bool) -> tuple[Status, int]:
        req = self._new_request(cmd, data, meta, 0 if admin else qid, timeout, direction)
        if not admin:
            req.qid = qid
        req.passthru = True
        req.noretry = True
        opcode = req.opcode
        effects = self.command_effects(opcode, admin=admin)
        frozen = bool(effects & _CSE_MASK)
        if frozen:
            self._freeze()
        try:
            self._dispatch([req])
            req.wait()
        finally:
            if frozen:
                self._unfreeze()
        if req.error is not None:
            raise req.error
        self._passthru_end(req, effects)
        return req.status, req.result

    def _passthru_end(self, req: HostRequest, effects: int) -> None:
        if effects & Effects.CCC:
            log.info("%s: controller capabilities changed; a reset may be needed for them to take effect",
                     self.name)
        if effects & (Effects.NIC | Effects.NCC):
            try:
                self.rescan()
            except Exception:
                log.exception("%s: rescan after %s", self.name, req.opcode_name)
        if effects & Effects.LBCC and req.status is not None and req.status.ok:
            for fn in list(self.content_callbacks):
                try:
                    fn(req.cmd.nsid, req.opcode)
                except Exception:
                    log.exception("content callback")

    def _freeze(self, timeout: float | None = None) -> None:
        """Hold new I/O and wait for the I/O in flight to finish (a command
        that must run alone)."""
        with self._lock:
            self._frozen += 1
        deadline = time.monotonic() + (self.io_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            if not any(q.inflight for q in list(self.io_queues)):
                return
            for q in list(self._poll_queues):
                self.transport.poll(q)
            time.sleep(_READY_POLL)

    def _unfreeze(self) -> None:
        with self._lock:
            self._frozen = max(0, self._frozen - 1)
        self._kick_pending()

    # ==================================================================
    # namespaces

    def rescan(self) -> None:
        """Scan the namespaces (Linux's nvme_scan_work): the active
        namespace list, then each namespace; removed ones go."""
        with self._scan_lock:
            if self._state != CtrlState.LIVE:
                return
            if self._ns_changed:
                self._ns_changed = False
            active = self._active_nsids()
            for nsid in active:
                self._scan_ns(nsid)
            for nsid in [n for n in list(self.namespaces) if n not in set(active)]:
                self._remove_ns(nsid)

    def _active_nsids(self) -> list[int]:
        nsids: list[int] = []
        prev = 0
        while True:
            buf = bytearray(IDENTIFY_DATA_SIZE)
            status, _ = self._admin_result(Identify(cns=Cns.NS_ACTIVE_LIST, nsid=prev), buf)
            if not status.ok:
                if nsids:
                    break
                log.info("%s: no active namespace list (%s): scanning 1..NN", self.name, status)
                nn = self.identify.nn if self.identify is not None else 0
                return list(range(1, min(nn, 1024) + 1))
            page = NamespaceList.from_bytes(buf).nsids()
            nsids.extend(page)
            if len(page) < NS_LIST_MAX:
                break
            prev = page[-1]
        return nsids

    def _scan_ns(self, nsid: int) -> None:
        ids = self._ns_ids(nsid)
        buf = bytearray(IDENTIFY_DATA_SIZE)
        status, _ = self._admin_result(Identify(cns=Cns.NS, nsid=nsid), buf)
        idn = IdentifyNamespace.from_bytes(buf)
        if not status.ok:
            # As Linux (nvme_scan_ns, nvme_validate_ns): a failed Identify
            # leaves the namespace alone -- a reset may have cancelled it, or
            # the error is transient -- unless the device said DNR.
            log.info("%s: Identify Namespace %d: %s", self.name, nsid, status)
            if status.dnr:
                self._remove_ns(nsid)
            return
        if idn.nsze == 0:
            self._remove_ns(nsid)
            return
        if ids is None:
            ids = NamespaceIds(eui64=_nonzero(idn.eui64), nguid=_nonzero(idn.nguid))
        old = self.namespaces.get(nsid)
        if old is not None and _ids_differ(old.ids, ids):
            log.warning("%s: identifiers of namespace %d changed: re-adding it", self.name, nsid)
            self._remove_ns(nsid)
            old = None
        if old is None:
            ns = HostNamespace(self, nsid, idn, ids)
            self.namespaces[nsid] = ns
            log.info("%s: namespace %d: %d blocks of %d bytes", self.name, nsid, ns.nblocks, ns.block_size)
            self._ns_event("added", ns)
        elif old.update(idn, ids):
            self._ns_event("changed", old)

    def _ns_ids(self, nsid: int) -> NamespaceIds | None:
        if self.vs < 0x10300:
            return None
        buf = bytearray(IDENTIFY_DATA_SIZE)
        status, _ = self._admin_result(Identify(cns=Cns.NS_DESC_LIST, nsid=nsid), buf)
        if not status.ok:
            return None
        found: dict[int, Any] = {}
        try:
            for entry in iter_ns_id_descriptors(buf):
                found.setdefault(entry.nidt, bytes(entry.nid))
        except ValueError as exc:
            log.warning("%s: namespace %d descriptor list: %s", self.name, nsid, exc)
        csi = found.get(NidType.CSI)
        return NamespaceIds(eui64=found.get(NidType.EUI64), nguid=found.get(NidType.NGUID),
                            uuid=found.get(NidType.UUID), csi=csi[0] if csi else None)

    def _remove_ns(self, nsid: int) -> None:
        ns = self.namespaces.pop(nsid, None)
        if ns is not None:
            ns.removed = True
            log.info("%s: namespace %d removed", self.name, nsid)
            self._ns_event("removed", ns)

    def _ns_event(self, action: str, ns: HostNamespace) -> None:
        for fn in list(self.namespace_callbacks):
            try:
                fn(action, ns)
            except Exception:
                log.exception("namespace callback")

    def namespace(self, nsid: int) -> HostNamespace:
        try:
            return self.namespaces[nsid]
        except KeyError:
            raise KeyError(f"{self.name} has no namespace {nsid}") from None

    # ==================================================================
    # asynchronous events

    def _submit_aer(self) -> None:
        req = self._new_request(AsyncEventRequest(), None, None, 0, 0, None)
        req.internal = True
        req.noretry = True
        req.reserved = True
        req.add_done_callback(self._aer_done)
        self._dispatch([req])

    def _aer_done(self, req: HostRequest) -> None:
        if req.error is not None or req.status is None or not req.status.ok:
            return  # cancelled by a reset (re-armed by the bring-up), or refused
        if self._state in _TERMINAL or self._closed:
            return
        try:
            self._wq.submit(self._handle_event, req.result)
        except RuntimeError:  # the worker is shut down
            pass

    def _handle_event(self, result: int) -> None:
        event = AsyncEvent(result & 0x7, (result >> 8) & 0xFF, (result >> 16) & 0xFF, result)
        try:
            self._read_event_log(event)
        except ControllerDeadError:
            return
        except Exception:
            log.exception("%s: reading the log page of %s", self.name, event)
        self.events.append(event)
        for fn in list(self.event_callbacks):
            try:
                fn(event)
            except Exception:
                log.exception("event callback")
        if event.type == 2 and event.info == 0:
            try:
                self.rescan()
            except Exception:
                log.exception("%s: rescan after a namespace change", self.name)
        if self._state == CtrlState.LIVE:
            self._submit_aer()

    def _read_event_log(self, event: AsyncEvent) -> None:
        """Read (and so clear) the log page an event names."""
        lid = event.log_page
        if event.type == 2 and event.info == 0:  # Namespace Attribute Changed
            self._ns_changed = True
            status, data = self._get_log(LogPageId.CHANGED_NS, ChangedNamespaceList.SIZE)
            if status.ok:
                event.data = bytes(data)
                event.nsids = ChangedNamespaceList.from_bytes(data).nsids()
            log.info("%s: namespace attribute changed %s", self.name, event.nsids)
            return
        sizes = {LogPageId.SMART: SmartLog.SIZE, LogPageId.FW_SLOT: 512}
        if lid == LogPageId.ERROR:
            elpe = self.identify.elpe if self.identify is not None else 0
            length = min(64 * (elpe + 1), 4096)
        else:
            length = sizes.get(lid, 512)
        status, data = self._get_log(lid, length)
        if status.ok:
            event.data = bytes(data)
        if event.type == 1:
            warning = data[0] if status.ok else None
            log.warning("%s: SMART / health event (info %#x), critical warning %s", self.name, event.info,
                        f"{warning:#x}" if warning is not None else "unknown")
        elif event.type == 0:
            log.warning("%s: error event (info %#x)", self.name, event.info)
        else:
            log.info("%s: asynchronous event %s info %#x log %#x", self.name, event.type_name, event.info, lid)

    # ==================================================================
    # timeouts, abort, reset

    def _all_queues(self) -> list[HostQueue]:
        queues = [self.admin_queue] if self.admin_queue is not None else []
        return queues + list(self.io_queues)

    def poll(self, qid: int | None = None) -> int:
        """Process the completions of polled queues now (``qid``: one queue);
        returns how many were found."""
        count = 0
        for queue in self._all_queues():
            if (qid is None and queue.polled) or queue.qid == qid:
                count += self.transport.poll(queue)
        return count

    def _watchdog_loop(self) -> None:
        while not self._stop.wait(self.watchdog_interval):
            try:
                self._watchdog_tick()
            except Exception:
                log.exception("%s: watchdog", self.name)

    def _watchdog_tick(self) -> None:
        """One look of the watchdog: start a health check, handle the
        requests past their deadline, send Keep Alive.  None of the three
        waits for the controller -- the health check runs on its own thread,
        expired requests are judged on what is known, Keep Alive is sent and
        not awaited (its own deadline catches a silent path) -- so none of
        them waits on another."""
        state = self._state
        if state in (CtrlState.NEW, CtrlState.DEAD, CtrlState.DELETING_NOIO):
            return
        transport = self.transport
        if state == CtrlState.LIVE:
            self._start_health_check()
        for queue in self._all_queues():
            if queue.polled:
                transport.poll(queue)
        now = time.perf_counter()
        for queue in self._all_queues():
            for req in queue.snapshot():
                if req.deadline and now >= req.deadline:
                    self._timeout(req, queue)
        self._send_keep_alive()

    def _start_health_check(self) -> None:
        """Start a health check unless one is still under way."""
        with self._lock:
            if self._health_busy or self._closed:
                return
            self._health_busy = True
            generation = self.generation
        try:
            self._health_wq.submit(self._health_check, generation)
        except RuntimeError:  # shutting down
            self._health_busy = False

    def _health_check(self, generation: int) -> None:
        """Read CSTS and reset a controller that reports a fatal status or
        reads all ones (gone).  Over Fabrics the read is a Property Get that
        a silent path makes wait up to the command timeout: it waits here,
        alone; a reading from an association that ended meanwhile is
        dropped."""
        try:
            csts = self.transport.reg_read32(Reg.CSTS)
        except Exception as exc:  # a transport failure is the recovery's business, not ours
            log.debug("%s: health check: %s", self.name, exc)
            return
        finally:
            self._health_busy = False
        with self._lock:
            if generation != self.generation or self._state != CtrlState.LIVE:
                return
            self._last_csts = csts
        if csts == 0xFFFFFFFF or csts & _CSTS_CFS:
            if self._schedule_reset("controller fatal status", generation=generation):
                log.error("%s: controller fatal status (CSTS %#x): resetting", self.name, csts)

    def _csts_now(self) -> int:
        """CSTS as the watchdog may read it: the register itself where a
        read answers at once (PCIe, as Linux's nvme_timeout reads it), the
        health check's latest reading where a read is a round trip through
        the admin queue (Fabrics, whose timeout handlers read no register)."""
        if getattr(self.transport, "fabrics", False):
            return self._last_csts
        return self.transport.reg_read32(Reg.CSTS)

    def _send_keep_alive(self) -> None:
        """Keep Alive every KATO / 2 (Linux's nvme_keep_alive_work), one at
        a time, on a reserved tag, and not waited for: it times out KATO / 2
        after it went out, like any request, and its timeout resets the
        controller -- so a path that went silent is noticed at most KATO
        after the last answer."""
        if not self.kato:
            return
        now = time.monotonic()
        with self._lock:
            if (self._state != CtrlState.LIVE or self._closed or self._keep_alive_req is not None
                    or now - self._last_keep_alive < self.kato / 2):
                return
            self._last_keep_alive = now
            ka = self._new_request(KeepAlive(), None, None, 0, self.kato / 2, None)
            ka.noretry = True
            ka.reserved = self._keep_alive_tag
            self._keep_alive_req = ka
        ka.add_done_callback(self._keep_alive_done)
        self._dispatch([ka])

    def _keep_alive_done(self, req: HostRequest) -> None:
        with self._lock:
            if self._keep_alive_req is req:
                self._keep_alive_req = None
        status = req.status
        if req.error is None and status is not None and not status.ok and status.code != PathStatus.ABORTED_BY_HOST:
            log.error("%s: Keep Alive failed: %s", self.name, status)

    def _timeout(self, req: HostRequest, queue: HostQueue) -> None:
        """An expired request (Linux's nvme_timeout).  Never waits for the
        controller: it runs in the watchdog."""
        if not queue.owns(req):
            return
        self.stats["timeouts"] += 1
        state = self._state
        csts = self._csts_now()
        if state in _TERMINAL:
            if queue.release(req):
                self._fail(req, ControllerDeadError(self._dead_message()))
            return
        if state != CtrlState.RESETTING and (csts == 0xFFFFFFFF or csts & _CSTS_CFS):
            log.warning("%s: timeout with CSTS %#x: resetting", self.name, csts)
            self._schedule_reset("controller fatal status")
            return
        # A completion the interrupt did not bring?
        self.transport.poll(queue)
        if not queue.owns(req):
            self.stats["polled_after_timeout"] += 1
            log.warning("%s: I/O tag %d (%#06x) QID %d timeout, completion polled", self.name, req.tag,
                        req.cid, queue.qid)
            return
        now = time.perf_counter()
        if state == CtrlState.CONNECTING:
            log.warning("%s: %s (qid %d, cid %#x) timed out while connecting: cancelled", self.name,
                        req.opcode_name, queue.qid, req.cid)
            if queue.release(req):
                req.noretry = True
                self._cancel(req)
            return
        if state == CtrlState.RESETTING:
            req.deadline = now + req.timeout
            return
        if queue.qid == 0 or req.aborted:
            log.warning("%s: %s (qid %d, cid %#x) timeout, reset controller", self.name, req.opcode_name,
                        queue.qid, req.cid)
            req.deadline = now + req.timeout  # the reset takes it from here
            reason = f"{req.opcode_name} timed out"
            if self._schedule_reset(reason):
                # The controller does not answer: a transport that reaches
                # it only through these queues stops counting on them, so
                # the reset does not wait on a silent path.
                self.transport.error_recovery(reason)
            return
        if self._aborts_outstanding >= self.abort_limit:
            req.deadline = now + req.timeout
            return
        with queue.lock:  # decide on this attempt only (it may complete meanwhile)
            if not queue.owns(req):
                return
            req.aborted = True
            req.deadline = now + req.timeout
            cid = req.cid
        with self._lock:
            self._aborts_outstanding += 1
        self.stats["aborts"] += 1
        log.warning("%s: I/O tag %d (%#06x) opcode %#x (%s) QID %d timeout, aborting", self.name, req.tag,
                    cid, req.opcode, req.opcode_name, queue.qid)
        abort = self._new_request(Abort(sqid=queue.qid, abort_cid=cid), None, None, 0, None, None)
        abort.noretry = True
        abort.context["aborting"] = req
        abort.add_done_callback(self._abort_done)
        self._dispatch([abort])

    def _abort_done(self, abort: HostRequest) -> None:
        with self._lock:
            self._aborts_outstanding = max(0, self._aborts_outstanding - 1)
        abort.context.pop("aborting", None)
        if abort.error is None and abort.status is not None and abort.status.ok:
            log.info("%s: Abort of cid %#x: %s", self.name, abort.cmd.abort_cid,
                     "aborted" if not abort.result & 1 else "not aborted")
        elif abort.error is None:
            log.info("%s: Abort of cid %#x: %s", self.name, abort.cmd.abort_cid, abort.status)

    def _schedule_reset(self, reason: str, *, generation: int | None = None) -> bool:
        """Start a reset in the background (LIVE or NEW -> RESETTING; with
        ``generation``, only if the controller is still in that
        association)."""
        if not self.change_state(CtrlState.RESETTING, generation=generation):
            return False
        self.stats["resets"] += 1
        log.warning("%s: resetting the controller: %s", self.name, reason)
        try:
            self._reset_future = self._reset_wq.submit(self._reset_work)
        except RuntimeError:  # shutting down
            return False
        return True

    def reset(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Reset the controller (nvme_reset_ctrl); with ``wait``, until it is
        LIVE again (True) or dead (False).  NvmeHostError when a reset
        cannot start from the current state."""
        if not self._schedule_reset("requested"):
            raise NvmeHostError(f"{self.name}: cannot reset in state {self._state.value}")
        if not wait:
            return True
        future = self._reset_future
        if future is not None:
            future.result(timeout)
        return self._state == CtrlState.LIVE

    def _reset_work(self) -> None:
        if self._state != CtrlState.RESETTING:
            return
        try:
            self._disable(shutdown=False)
            if not self.change_state(CtrlState.CONNECTING):
                return  # deleted meanwhile
            while True:
                try:
                    self._setup()
                    break
                except Exception as exc:
                    if not self._reconnect_later(exc):
                        raise
                if self._state != CtrlState.CONNECTING:
                    return  # deleted while waiting
            if not self.change_state(CtrlState.LIVE):
                raise InitError(f"could not go live from {self._state.value}")
        except Exception as exc:
            log.error("%s: reset failed: %s", self.name, exc)
            self._remove_dead(f"reset failed: {exc}")
            return
        log.info("%s: reset complete", self.name)
        self._kick_pending()
        try:
            self._wq.submit(self._rescan_quietly)
        except RuntimeError:
            pass

    def _reconnect_later(self, exc: Exception) -> bool:
        """A bring-up attempt of a reset failed: when the transport wants
        another attempt (Fabrics: every reconnect delay until the controller
        loss timeout, Linux's nvme_tcp_reconnect_or_remove), tear the attempt
        down (its requests are requeued), wait and return True; False to give
        up (the controller then dies)."""
        delay = None if self._closed else self.transport.reconnect_after(exc)
        if delay is None:
            return False
        log.warning("%s: reconnect failed (%s); reconnecting in %g s", self.name, exc, delay)
        try:
            self._disable(shutdown=False)
        except Exception:  # pragma: no cover - the attempt is torn down anyway
            log.exception("%s: tearing down a failed reconnect", self.name)
        deadline = time.monotonic() + delay
        while not self._closed and self._state == CtrlState.CONNECTING:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            time.sleep(min(remaining, 0.05))
        return not self._closed

    def _rescan_quietly(self) -> None:
        try:
            self.rescan()
        except ControllerDeadError as exc:  # shut down or removed meanwhile: nothing to scan
            log.debug("%s: rescan: %s", self.name, exc)
        except Exception:
            log.exception("%s: rescan", self.name)

    def _disable(self, shutdown: bool) -> bool:
        """Stop the controller and take every request out of flight
        (nvme_dev_disable).  With ``shutdown`` and a healthy controller: the
        I/O queues are deleted and a normal shutdown is notified first.
        Returns whether the controller acknowledged the disable/shutdown."""
        transport = self.transport
        csts = transport.reg_read32(Reg.CSTS)
        dead = csts == 0xFFFFFFFF or not csts & _CSTS_RDY or bool(csts & _CSTS_CFS)
        if not dead and shutdown and self.admin_queue is not None:
            for queue in list(self.io_queues):
                try:
                    transport.delete_io_queue(queue)
                except Exception as exc:
                    log.warning("%s: deleting I/O queue %d: %s", self.name, queue.qid, exc)
        timeout = self.shutdown_wait if shutdown and not dead else self.ready_timeout
        acked = False
        if csts != 0xFFFFFFFF:
            acked = transport.disable(shutdown and not dead, timeout)
            if not acked:
                log.warning("%s: the controller did not %s within %g s", self.name,
                            "complete the shutdown" if shutdown else "become not-ready", timeout)
        # Completions posted before the controller stopped, then the rest is cancelled.
        cancelled: list[HostRequest] = []
        for queue in self._all_queues():
            try:
                transport.poll(queue)
            except Exception:  # pragma: no cover
                log.exception("reaping queue %d", queue.qid)
            cancelled.extend(queue.drain())
        transport.remove_queues()
        with self._lock:
            self.admin_queue = None
            self.io_queues, self._default_queues, self._poll_queues = [], [], []
            self._aborts_outstanding = 0
        for req in cancelled:
            self._cancel(req)
        return acked

    def _remove_dead(self, reason: str) -> None:
        """The controller cannot be recovered: DELETING, disabled, DEAD; every
        request fails with ControllerDeadError."""
        self.dead_reason = reason
        self.change_state(CtrlState.DELETING)
        try:
            self._disable(shutdown=False)
        except Exception:
            log.exception("%s: disabling a dead controller", self.name)
        self.change_state(CtrlState.DEAD)
        log.error("%s: controller is dead: %s", self.name, reason)
        self._fail_pending()

    def _fail_pending(self) -> None:
        with self._lock:
            pending = list(self._pending)
            self._pending.clear()
        for req in pending:
            self._fail(req, ControllerDeadError(self._dead_message()))

    # ==================================================================
    # shutdown

    def shutdown(self) -> bool:
        """Orderly removal (nvme_remove): wait for the I/O in flight, delete
        the I/O queues, notify a normal shutdown (CC.SHN) and wait for
        CSTS.SHST = complete; then release everything.  Returns whether the
        shutdown completed.  Idempotent."""
        if self._closed:
            return bool(getattr(self, "_shutdown_ok", False))
        self._closed = True
        future = self._reset_future
        if future is not None and self._state in (CtrlState.RESETTING, CtrlState.CONNECTING):
            with contextlib.suppress(Exception):
                future.result(self.admin_timeout)
        ok = False
        was_live = self._state == CtrlState.LIVE
        if self.change_state(CtrlState.DELETING):
            self._fail_pending()
            if was_live:
                self._drain_io(self.shutdown_timeout)
            try:
                ok = self._disable(shutdown=True)
            except Exception:
                log.exception("%s: shutdown", self.name)
            self.change_state(CtrlState.DELETING_NOIO)
        else:
            self.change_state(CtrlState.DELETING_NOIO)
        for nsid in list(self.namespaces):
            self._remove_ns(nsid)
        self._shutdown_ok = ok
        self._stop.set()
        if self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=5)
        self._wq.shutdown(wait=False, cancel_futures=True)
        self._reset_wq.shutdown(wait=False, cancel_futures=True)
        self._health_wq.shutdown(wait=False, cancel_futures=True)
        self._fail_pending()
        try:
            self.transport.close()
        except Exception:  # pragma: no cover
            log.exception("%s: closing the transport", self.name)
        return ok

    close = shutdown

    def _drain_io(self, timeout: float) -> None:
        """Wait (bounded) for the requests in flight on the I/O queues."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [q for q in list(self.io_queues) if q.inflight]
            if not busy:
                return
            for q in busy:
                if q.polled:
                    self.transport.poll(q)
            time.sleep(_READY_POLL)

    def __enter__(self) -> "NvmeController":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # ==================================================================
    # buffers

    def alloc_buffer(self, size: int) -> Any:
        """A buffer the transport maps without copying (PCIe: host DMA
        memory, a DmaBuffer whose ``view`` is the bytes)."""
        return self.transport.alloc(size)

    def free_buffer(self, buf: Any) -> None:
        self.transport.free(buf)

    def __repr__(self) -> str:
        return f"<NvmeController {self.name} {self._state.value} {self.transport.name}>"


def transport_page_size(transport: Transport) -> int:
    return int(getattr(transport, "page_size", 4096))


def _nonzero(raw: Any) -> bytes | None:
    data = bytes(raw)
    return data if any(data) else None


def _ids_differ(a: NamespaceIds, b: NamespaceIds) -> bool:
    for name in ("eui64", "nguid", "uuid"):
        x, y = getattr(a, name), getattr(b, name)
        if x is not None and y is not None and x != y:
            return True
    return False

