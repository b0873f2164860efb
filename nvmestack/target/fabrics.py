"""The Fabrics side of the device, for every fabrics transport (NVMe/TCP
today): associations between hosts and controllers, Connect, Property
Get/Set, Disconnect, keep alive, and the discovery controller.

Command semantics stay in the core: Property Get/Set and Disconnect are
handlers in the core's command table (``fabrics_command``: opcode 7Fh,
found by FCTYPE), the discovery log page is a ``log_page`` builder, and a
discovery controller is an ordinary core :class:`Controller` of a discovery
:class:`Subsystem` whose command gate lets only the discovery commands
through.  Connect is the one command that runs before a controller exists,
so :meth:`FabricsTarget.connect` is called by the transport with the
command and its 1024 bytes of data (as Linux's nvmet does,
``nvmet_execute_admin_connect``/``nvmet_execute_io_connect``).

Facts (NVMe over Fabrics 1.1, NVMe 2.0 base spec 6.3 "Connect", Linux
``drivers/nvme/target/fabrics-cmd.c`` and ``discovery.c``):

* Connect on the admin queue (QID 0) creates a controller; in the dynamic
  model CNTLID must be FFFFh.  An unknown SUBNQN is Connect Invalid
  Parameters with IATTR=1 and IPO = 256 (SUBNQN in the Connect data); a
  host that may not use the subsystem gets the very same answer, before any
  other field is looked at, so that a Connect does not tell a stranger
  which subsystems exist (Linux answers Connect Invalid Host there; the
  target's log says which it was); a wrong CNTLID on an I/O queue Connect gets Invalid
  Parameters pointing at CNTLID (16).  SQSIZE 0, or above CAP.MQES on an
  I/O queue, is Invalid Parameters with IATTR=0, IPO = 44 (SQSIZE in the
  SQE); a QID beyond the queues granted is Invalid Queue Identifier; a QID
  connected twice is Command Sequence Error; RECFMT other than 0 is Connect
  Incompatible Format.  Completion dword 0 of a success holds the CNTLID.
* CATTR bit 2 asks to disable SQ flow control; the transport then puts
  FFFFh in SQHD (Linux does so from the Connect response on).
* KATO (milliseconds) from the admin Connect; a discovery controller
  connected without one gets 120 s (Linux's NVMET_DISC_KATO_MS), so a
  vanished discovery host does not keep its controller forever.  The
  transport counts every command as a sign of life (Linux's nvmet does the
  same: traffic based keep alive), and when a Keep Alive Timer runs out the
  controller gets CSTS.CFS and its association ends.
* Before CC.EN = 1 and CSTS.RDY = 1 only Fabrics commands run; others end
  with Command Sequence Error (Linux ``nvmet_check_ctrl_status``).
* Property Get: CAP (8 bytes), VS, CC, CSTS, NSSR, CRTO (4 bytes); Property
  Set: CC and NSSR; anything else is Invalid Field in Command.
* A discovery controller accepts Identify (controller), Get Log Page 70h,
  Get/Set Features (KATO, Asynchronous Event Configuration), Asynchronous
  Event Request, Keep Alive and Fabrics commands; other opcodes are
  Invalid Opcode.
* The discovery log page lists, for every port and every NVM subsystem
  that port exposes and the host may use, one entry (TRTYPE, ADRFAM,
  SUBTYPE 2, TREQ: secure channel not specified and SQ flow control disable
  supported (as Linux nvmet without TLS: nvme-cli 2.3 prints "not required"
  together with the SQ flow control bit as "unrecognized"), PORTID, CNTLID FFFFh, ASQSZ 32, TRSVCID, SUBNQN, TRADDR), and
  first an entry for the discovery subsystem the host is talking to
  (SUBTYPE 3 "current discovery subsystem", EFLAGS DUPRETINFO|EPCSD).  A
  port listening on the wildcard address shows the address the host
  reached.  GENCTR changes whenever the set of entries may have changed,
  and discovery controllers get a Discovery Log Page Change notice.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, Protocol

from ..spec.fabrics import (
    CNTLID_DYNAMIC,
    CONNECT_DATA_SIZE,
    CONNECT_RECFMT,
    DISCOVERY_NQN,
    Connect,
    ConnectData,
    ConnectInvalidParameters,
    PropertyGet,
)
from ..spec.features import FeatureId
from ..spec.log import (
    AddressFamily,
    DiscoveryEntryFlags,
    DiscoveryLogEntry,
    LogPageId,
    SecureChannel,
    SubsystemType,
    TcpSecurityType,
    TransportType,
    build_discovery_log,
)
from ..spec.opcodes import FABRICS_OPCODE, AdminOpcode, FabricsType
from ..spec.registers import Reg
from ..spec.status import (
    SUCCESS,
    CommandSpecificStatus,
    FabricsStatus,
    GenericStatus,
    Status,
)
from .commands import fabrics_command, log_page
from .controller import AsyncEventType, Controller
from .errors import NvmeError
from .request import DataDirection
from .subsystem import NoticeInfo, Subsystem

__all__ = [
    "Port",
    "QueueHandle",
    "ConnectOutcome",
    "FabricsTarget",
    "admit",
    "fail_request",
    "DISCOVERY_KATO_MS",
    "DISCOVERY_ASQSZ",
]

log = logging.getLogger(__name__)

DISCOVERY_KATO_MS = 120_000
"""KATO of a discovery controller connected with KATO 0 (Linux's value)."""
DISCOVERY_ASQSZ = 32
"""ASQSZ the discovery log reports (Linux's NVME_AQ_DEPTH)."""

# Where things are, for IPO/IATTR and the error log (offsets from spec/).
_IPO_RECFMT = Connect.recfmt.offset
_IPO_QID = Connect.qid.offset
_IPO_SQSIZE = Connect.sqsize.offset
_IPO_CNTLID = ConnectData.cntlid.offset
_IPO_SUBNQN = ConnectData.subsysnqn.offset
_IPO_HOSTNQN = ConnectData.hostnqn.offset
_NQN_SIZE = ConnectData.subsysnqn.size
_ATTRIB = PropertyGet.attrib.offset
_OFST = PropertyGet.ofst.offset


@dataclass(eq=False)
class Port:
    """A place hosts connect to (nvmet's ``port``): transport address and
    service id, and which NVM subsystems it exposes (``None``: all of them).
    Every port also serves the discovery subsystem."""

    traddr: str
    trsvcid: str
    portid: int = 0
    trtype: int = TransportType.TCP
    subsystems: set[str] | None = None

    @property
    def adrfam(self) -> AddressFamily:
        try:
            return AddressFamily.IPV6 if ip_address(self.traddr).version == 6 else AddressFamily.IPV4
        except ValueError:
            return AddressFamily.IPV4

    @property
    def wildcard(self) -> bool:
        try:
            return ip_address(self.traddr).is_unspecified
        except ValueError:
            return False

    def exposes(self, nqn: str) -> bool:
        return self.subsystems is None or nqn in self.subsystems


class QueueHandle(Protocol):
    """What the target needs of a transport's queue (one connection)."""

    def abort(self) -> None:
        """Close the queue's connection now (the association ends)."""


@dataclass
class _Association:
    ctrl: Controller
    port: Port
    local_addr: str
    queues: dict[int, QueueHandle] = field(default_factory=dict)


@dataclass
class ConnectOutcome:
    """What a Connect did: the completion to return and, on success, the
    controller and queue the connection now serves."""

    status: Status
    dw0: int = 0
    ctrl: Controller | None = None
    qid: int = 0
    sqsize: int = 0  # 0's based
    sqflow_disabled: bool = False
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status.ok


def _invalid_parameter(offset: int, in_data: bool, message: str) -> ConnectOutcome:
    where = ConnectInvalidParameters()
    where.ipo = offset
    where.in_data = in_data
    return ConnectOutcome(FabricsStatus.CONNECT_INVALID_PARAMETERS.status(dnr=True),
                          int.from_bytes(bytes(where), "little"), message=message)


def _nqn(data: memoryview, offset: int) -> str:
    raw = bytes(data[offset : offset + _NQN_SIZE - 1])
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


DEFAULT_MAX_CONTROLLERS_PER_HOST = 128
"""Controllers one host NQN may hold with one NVM subsystem at once."""


class FabricsTarget:
    """Subsystems, ports and the associations of hosts with controllers.

    ``controller_options`` go to every controller made for an NVM subsystem
    (``mqes``, ``mdts``); ``in_capsule_data_size`` is what the transport
    accepts in a command capsule, reported as IOCCSZ."""

    def __init__(self, *, in_capsule_data_size: int = 16384,
                 max_controllers_per_host: int = DEFAULT_MAX_CONTROLLERS_PER_HOST, **controller_options: Any):
        self.lock = threading.RLock()
        self.in_capsule_data_size = in_capsule_data_size
        # Associations one host NQN may hold with one NVM subsystem at once
        # (a further Connect gets Controller Busy).
        self.max_controllers_per_host = max_controllers_per_host
        self.controller_options = controller_options
        self.subsystems: dict[str, Subsystem] = {}
        self.ports: list[Port] = []
        self.discovery = Subsystem(DISCOVERY_NQN, discovery=True, model="nvmestack discovery",
                                   serial="discovery", max_namespaces=1)
        self.discovery.command_gate = _discovery_gate
        self.genctr = 0
        self._assocs: dict[Controller, _Association] = {}

    # -- configuration ----------------------------------------------------------------

    def add_subsystem(self, subsystem: Subsystem) -> Subsystem:
        with self.lock:
            if subsystem.nqn == DISCOVERY_NQN or subsystem.nqn in self.subsystems:
                raise ValueError(f"subsystem {subsystem.nqn} exists")
            self.subsystems[subsystem.nqn] = subsystem
        self.discovery_changed()
        return subsystem

    def remove_subsystem(self, nqn: str) -> Subsystem:
        with self.lock:
            subsystem = self.subsystems.pop(nqn)
        for ctrl in list(subsystem.controllers.values()):
            self.teardown(ctrl, "subsystem removed")
        self.discovery_changed()
        return subsystem

    def add_port(self, port: Port) -> Port:
        with self.lock:
            if not port.portid:
                port.portid = max((p.portid for p in self.ports), default=0) + 1
            self.ports.append(port)
        self.discovery_changed()
        return port

    def remove_port(self, port: Port) -> None:
        with self.lock:
            self.ports.remove(port)
            victims = [a.ctrl for a in self._assocs.values() if a.port is port]
        for ctrl in victims:
            self.teardown(ctrl, "port removed")
        self.discovery_changed()

    def allow_host(self, nqn: str, hostnqn: str) -> None:
        """Let ``hostnqn`` use subsystem ``nqn`` (and see it in discovery)."""
        sub = self.subsystems[nqn]
        with sub.lock:
            sub.allowed_hosts.add(hostnqn)
        self.discovery_changed()

    def disallow_host(self, nqn: str, hostnqn: str) -> None:
        """Take ``hostnqn`` off subsystem ``nqn``: its associations end."""
        sub = self.subsystems[nqn]
        with sub.lock:
            sub.allowed_hosts.discard(hostnqn)
        self.cut_disallowed(sub)
        self.discovery_changed()

    def cut_disallowed(self, subsystem: Subsystem) -> list[Controller]:
        """End every association with ``subsystem`` of a host it no longer
        allows (after its allowed hosts or allow_any_host changed); returns
        the controllers that went."""
        with self.lock:
            victims = [c for c in self._assocs if c.subsystem is subsystem and not subsystem.discovery
                       and not subsystem.host_allowed(c.hostnqn)]
        for ctrl in victims:
            self.teardown(ctrl, f"host {ctrl.hostnqn} may no longer use {subsystem.nqn}")
        return victims

    def discovery_changed(self) -> None:
        """The discovery log may have changed: a new GENCTR and a Discovery
        Log Page Change notice to every discovery controller."""
        with self.lock:
            self.genctr += 1
            controllers = list(self.discovery.controllers.values())
        for ctrl in controllers:
            ctrl.post_event(AsyncEventType.NOTICE, NoticeInfo.DISCOVERY_LOG_CHANGED, LogPageId.DISCOVERY)

    def find_subsystem(self, nqn: str, port: Port) -> Subsystem | None:
        if nqn == DISCOVERY_NQN:
            return self.discovery
        with self.lock:
            sub = self.subsystems.get(nqn)
        return sub if sub is not None and port.exposes(nqn) else None

    # -- associations -------------------------------------------------------------------

    @property
    def controllers(self) -> list[Controller]:
        with self.lock:
            return list(self._assocs)

    def queues_of(self, ctrl: Controller) -> dict[int, QueueHandle]:
        with self.lock:
            assoc = self._assocs.get(ctrl)
            return dict(assoc.queues) if assoc is not None else {}

    def connect(self, port: Port, sqe: Any, data: Any, queue: QueueHandle, *, local_addr: str = "") -> ConnectOutcome:
        """Run a Connect command that arrived on ``queue`` (a connection
        that serves no queue yet) through ``port``; ``data`` is its 1024
        bytes."""
        cmd = Connect.view(bytearray(sqe.raw if hasattr(sqe, "raw") else bytes(sqe)[:64]))
        mv = memoryview(data).cast("B")
        if mv.nbytes < CONNECT_DATA_SIZE:
            return ConnectOutcome(GenericStatus.DATA_SGL_LENGTH_INVALID.status(dnr=True),
                                  message=f"Connect data of {mv.nbytes} bytes")
        if cmd.recfmt != CONNECT_RECFMT:
            return ConnectOutcome(FabricsStatus.INCOMPATIBLE_FORMAT.status(dnr=True),
                                  message=f"Connect record format {cmd.recfmt}")
        cd = ConnectData.view(mv)
        subnqn = _nqn(mv, _IPO_SUBNQN)
        hostnqn = _nqn(mv, _IPO_HOSTNQN)
        hostid = bytes(cd.hostid)
        cntlid = cd.cntlid
        qid = cmd.qid
        sub = self.find_subsystem(subnqn, port)
        if sub is None:
            return _invalid_parameter(_IPO_SUBNQN, True, f"no subsystem {subnqn!r} on port {port.portid}")
        if not sub.discovery and not sub.host_allowed(hostnqn):
            # Answered as a missing subsystem: a forbidden one must not reveal that it exists.
            return _invalid_parameter(_IPO_SUBNQN, True, f"host {hostnqn!r} may not use {sub.nqn}")
        if qid == 0:
            return self._connect_admin(port, cmd, sub, cntlid, hostnqn, hostid, queue, local_addr)
        return self._connect_io(cmd, sub, cntlid, hostnqn, queue)

    def _connect_admin(self, port, cmd, sub, cntlid, hostnqn, hostid, queue, local_addr) -> ConnectOutcome:
        if cntlid != CNTLID_DYNAMIC:
            return _invalid_parameter(_IPO_CNTLID, True, f"CNTLID {cntlid:#x}: only the dynamic controller model")
        if cmd.sqsize == 0:
            return _invalid_parameter(_IPO_SQSIZE, False, "SQSIZE 0")
        if not sub.discovery:
            with self.lock:
                held = sum(1 for c in self._assocs if c.subsystem is sub and c.hostnqn == hostnqn)
            if held >= self.max_controllers_per_host:
                return ConnectOutcome(FabricsStatus.CONTROLLER_BUSY.status(),
                                      message=f"host {hostnqn!r} holds {held} controllers of {sub.nqn}")
        options = {} if sub.discovery else dict(self.controller_options)
        try:
            ctrl = sub.add_controller(fabrics=True, hostnqn=hostnqn, hostid=hostid, **options)
        except RuntimeError as exc:  # no free controller id
            return ConnectOutcome(FabricsStatus.CONTROLLER_BUSY.status(), message=str(exc))
        if cmd.sqsize > ctrl.regs.cap.mqes:
            # The admin queue is bounded by MQES as the I/O queues are.
            sub.remove_controller(ctrl)
            return _invalid_parameter(_IPO_SQSIZE, False, f"SQSIZE {cmd.sqsize} beyond MQES {ctrl.regs.cap.mqes}")
        ctrl.in_capsule_data_size = self.in_capsule_data_size
        ctrl.kato = cmd.kato or (DISCOVERY_KATO_MS if sub.discovery else 0)
        ctrl.fabrics_target = self
        ctrl.fabrics_port = port
        ctrl.keep_alive()
        with self.lock:
            self._assocs[ctrl] = _Association(ctrl, port, local_addr, {0: queue})
        log.info("controller %d of %s for host %s (KATO %d ms)", ctrl.cntlid, sub.nqn, hostnqn, ctrl.kato)
        return ConnectOutcome(SUCCESS, ctrl.cntlid, ctrl, 0, cmd.sqsize, bool(cmd.disable_sqflow))

    def _connect_io(self, cmd, sub, cntlid, hostnqn, queue) -> ConnectOutcome:
        qid = cmd.qid
        ctrl = sub.controllers.get(cntlid)
        if ctrl is None or ctrl.hostnqn != hostnqn or ctrl not in self._assocs:
            return _invalid_parameter(_IPO_CNTLID, True, f"no controller {cntlid} of {sub.nqn} for {hostnqn!r}")
        if not ctrl.enabled:
            return ConnectOutcome(GenericStatus.COMMAND_SEQUENCE_ERROR.status(dnr=True),
                                  message="I/O queue Connect before the controller is ready")
        nsqa, _ = ctrl.features.granted_queues() if not sub.discovery else (-1, -1)
        if qid > nsqa + 1:
            return ConnectOutcome(CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER.status(dnr=True),
                                  _ipo(_IPO_QID, False), message=f"QID {qid} beyond the {nsqa + 1} queues granted")
        if cmd.sqsize == 0 or cmd.sqsize > ctrl.regs.cap.mqes:
            return _invalid_parameter(_IPO_SQSIZE, False, f"SQSIZE {cmd.sqsize} not in 1..{ctrl.regs.cap.mqes}")
        with self.lock:
            assoc = self._assocs.get(ctrl)
            if assoc is None:
                return _invalid_parameter(_IPO_CNTLID, True, f"controller {cntlid} is gone")
            if qid in assoc.queues:
                return ConnectOutcome(GenericStatus.COMMAND_SEQUENCE_ERROR.status(dnr=True),
                                      message=f"queue {qid} is already connected")
            assoc.queues[qid] = queue
        return ConnectOutcome(SUCCESS, 0, ctrl, qid, cmd.sqsize, bool(cmd.disable_sqflow))

    def replace_queue(self, ctrl: Controller, qid: int, old: QueueHandle, new: QueueHandle) -> bool:
        """Queue ``qid`` of ``ctrl`` is served by ``new`` from now on (a
        connection handed to a worker process); False when ``old`` no longer
        serves it (the association or the queue went meanwhile)."""
        with self.lock:
            assoc = self._assocs.get(ctrl)
            if assoc is None or assoc.queues.get(qid) is not old:
                return False
            assoc.queues[qid] = new
            return True

    def queue_closed(self, ctrl: Controller, qid: int, queue: QueueHandle) -> None:
        """A queue's connection ended.  Losing the admin queue ends the
        association: the other queues are closed and the controller goes."""
        with self.lock:
            assoc = self._assocs.get(ctrl)
            if assoc is None or assoc.queues.get(qid) is not queue:
                return
            del assoc.queues[qid]
        if qid == 0:
            self.teardown(ctrl, "admin queue closed")
        else:
            with ctrl.lock:
                for key, req in list(ctrl.outstanding.items()):
                    if key[0] == qid:
                        req.cancel()
                        del ctrl.outstanding[key]

    def teardown(self, ctrl: Controller, reason: str = "") -> None:
        """End an association: close every queue, remove the controller."""
        with self.lock:
            assoc = self._assocs.pop(ctrl, None)
        if assoc is None:
            return
        log.info("controller %d of %s goes: %s", ctrl.cntlid, ctrl.subsystem.nqn, reason)
        for queue in assoc.queues.values():
            try:
                queue.abort()
            except Exception:  # pragma: no cover - a queue that cannot even close
                log.exception("closing a queue of controller %d", ctrl.cntlid)
        ctrl.subsystem.remove_controller(ctrl)

    def expire_keep_alive(self, now: float | None = None) -> list[Controller]:
        """Tear down every controller whose Keep Alive Timer ran out (CFS is
        set first, as Linux's nvmet does); returns them."""
        now = time.monotonic() if now is None else now
        expired = [c for c in self.controllers if c.keep_alive_expired(now)]
        for ctrl in expired:
            ctrl.fatal()
            self.teardown(ctrl, f"keep alive timeout ({ctrl.kato} ms)")
        return expired

    def next_keep_alive_deadline(self) -> float | None:
        """When the next Keep Alive Timer runs out (monotonic seconds)."""
        deadlines = [c.last_keep_alive + c.kato / 1000 for c in self.controllers if c.kato]
        return min(deadlines) if deadlines else None

    def close(self) -> None:
        for ctrl in self.controllers:
            self.teardown(ctrl, "target stopped")

    # -- discovery -----------------------------------------------------------------------

    def discovery_entries(self, ctrl: Controller) -> tuple[int, list[DiscoveryLogEntry]]:
        """GENCTR and the entries the host of discovery controller ``ctrl``
        may see."""
        with self.lock:
            genctr = self.genctr
            ports = list(self.ports)
            subsystems = list(self.subsystems.values())
            assoc = self._assocs.get(ctrl)
        here = assoc.port if assoc is not None else getattr(ctrl, "fabrics_port", None)
        local = assoc.local_addr if assoc is not None else ""
        entries = []
        if here is not None:
            entries.append(_entry(here, DISCOVERY_NQN, SubsystemType.CURRENT_DISCOVERY, local,
                                  DiscoveryEntryFlags.DUPRETINFO | DiscoveryEntryFlags.EPCSD))
        for port in ports:
            for sub in subsystems:
                if port.exposes(sub.nqn) and sub.host_allowed(ctrl.hostnqn):
                    entries.append(_entry(port, sub.nqn, SubsystemType.NVM, local))
        return genctr, entries


def _ipo(offset: int, in_data: bool) -> int:
    where = ConnectInvalidParameters()
    where.ipo = offset
    where.in_data = in_data
    return int.from_bytes(bytes(where), "little")


def _entry(port: Port, nqn: str, subtype: int, local_addr: str, eflags: int = 0) -> DiscoveryLogEntry:
    entry = DiscoveryLogEntry()
    entry.trtype = port.trtype
    traddr = local_addr if port.wildcard and local_addr else port.traddr
    entry.adrfam = Port(traddr, port.trsvcid).adrfam
    entry.subtype = subtype
    entry.secure_channel = SecureChannel.NOT_SPECIFIED
    entry.disable_sqflow = True
    entry.portid = port.portid
    entry.cntlid = CNTLID_DYNAMIC
    entry.asqsz = DISCOVERY_ASQSZ
    entry.eflags = int(eflags)
    entry.trsvcid = str(port.trsvcid)
    entry.subnqn = nqn
    entry.traddr = traddr
    if port.trtype == TransportType.TCP:
        entry.tcp_sectype = TcpSecurityType.NONE
    return entry


# ---------------------------------------------------------------------------
# Commands


def fail_request(req: Any, err: NvmeError) -> None:
    """Complete ``req`` with ``err`` without running it (the transport's
    own checks); the error log records it as for any failed command."""
    req.context["error"] = err
    if err.dw0 is not None:
        req.cqe.dw0 = err.dw0
    req.complete(err.status)


def admit(ctrl: Controller, req: Any) -> NvmeError | None:
    """The Fabrics rules a command meets before the core sees it: until the
    controller is enabled and ready only Fabrics commands run."""
    if req.opcode != FABRICS_OPCODE and not ctrl.enabled:  # CSTS.RDY (the core clears it with CC.EN)
        return NvmeError(GenericStatus.COMMAND_SEQUENCE_ERROR, param=0,
                         msg="the controller is not enabled (CC.EN/CSTS.RDY)")
    return None


_DISCOVERY_ADMIN = frozenset({
    AdminOpcode.IDENTIFY,
    AdminOpcode.GET_LOG_PAGE,
    AdminOpcode.SET_FEATURES,
    AdminOpcode.GET_FEATURES,
    AdminOpcode.ASYNC_EVENT_REQUEST,
    AdminOpcode.KEEP_ALIVE,
    FABRICS_OPCODE,
})
_DISCOVERY_FEATURES = frozenset({FeatureId.KATO, FeatureId.ASYNC_EVENT})


def _discovery_gate(ctrl: Controller, req: Any) -> None:
    """The command gate of the discovery subsystem."""
    opcode = req.opcode
    if not req.admin or opcode not in _DISCOVERY_ADMIN:
        raise NvmeError(GenericStatus.INVALID_OPCODE, param=0, msg="not a discovery controller command")
    if opcode == AdminOpcode.IDENTIFY and req.sqe.cdw10 & 0xFF != 0x01:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=40, msg="a discovery controller identifies itself only")
    if opcode == AdminOpcode.GET_LOG_PAGE and req.sqe.cdw10 & 0xFF != LogPageId.DISCOVERY:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=40, msg="a discovery controller has the discovery log only")
    if opcode in (AdminOpcode.SET_FEATURES, AdminOpcode.GET_FEATURES) and req.sqe.cdw10 & 0xFF not in _DISCOVERY_FEATURES:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=40, msg="feature not kept by a discovery controller")


def _property(req: Any, writable: bool) -> tuple[int, int]:
    cmd = req.cmd
    try:
        size = cmd.value_size
    except ValueError:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_ATTRIB, msg="reserved ATTRIB.SIZE") from None
    offset = cmd.ofst
    if writable:
        known = {Reg.CC: 4, Reg.NSSR: 4}
    else:
        known = {Reg.CAP: 8, Reg.VS: 4, Reg.CC: 4, Reg.CSTS: 4, Reg.NSSR: 4, Reg.CRTO: 4}
    if known.get(offset) is None:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_OFST, msg=f"no property at {offset:#x}")
    if known[offset] != size:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_ATTRIB, msg=f"property {offset:#x} is {known[offset]} bytes")
    return offset, size


@fabrics_command(FabricsType.PROPERTY_GET, admin=True)
def property_get(ctrl: Controller, req: Any) -> None:
    """Property Get: the register as the PCIe function would show it."""
    offset, size = _property(req, writable=False)
    req.cqe.result64 = ctrl.get_property(offset, size)


@fabrics_command(FabricsType.PROPERTY_SET, admin=True)
def property_set(ctrl: Controller, req: Any) -> None:
    """Property Set: CC (enable, shutdown) with the register semantics of
    the core, and NSSR."""
    offset, size = _property(req, writable=True)
    # A write of CC.EN = 0 resets the controller, which ends the commands
    # outstanding on it; this one is not among them: it completes (as in
    # Linux's nvmet), over the admin connection that stays.
    with ctrl.lock:
        if ctrl.outstanding.get((req.sqid, req.cid)) is req:
            del ctrl.outstanding[(req.sqid, req.cid)]
    ctrl.set_property(offset, size, req.cmd.value & 0xFFFFFFFF)


def _connected_already(ctrl: Controller, req: Any) -> None:
    raise NvmeError(GenericStatus.COMMAND_SEQUENCE_ERROR, param=0, msg="the queue is already connected")


def _connect_data(ctrl: Controller, req: Any) -> int:
    return CONNECT_DATA_SIZE


for _admin in (True, False):
    fabrics_command(FabricsType.CONNECT, admin=_admin, transfer=_connect_data,
                    direction=DataDirection.HOST_TO_CTRL)(_connected_already)


@fabrics_command(FabricsType.DISCONNECT, admin=False)
def disconnect(ctrl: Controller, req: Any) -> None:
    """Disconnect: the I/O queue the command came on ends after the
    completion (the transport closes its connection)."""
    if req.cmd.recfmt != CONNECT_RECFMT:
        raise NvmeError(FabricsStatus.INCOMPATIBLE_FORMAT, param=_IPO_RECFMT)
    req.context["disconnect"] = True


@log_page(LogPageId.DISCOVERY, applies=lambda ctrl: ctrl.subsystem.discovery)
def discovery_log(ctrl: Controller, req: Any) -> bytes:
    """Discovery (70h), on a discovery controller of a fabrics target."""
    target = getattr(ctrl, "fabrics_target", None)
    if target is None or not ctrl.subsystem.discovery:
        raise NvmeError(CommandSpecificStatus.INVALID_LOG_PAGE, param=40, msg="not a discovery controller")
    genctr, entries = target.discovery_entries(ctrl)
    return bytes(build_discovery_log(entries, genctr))
