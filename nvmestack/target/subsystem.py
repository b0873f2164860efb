"""The NVM subsystem: identity, namespaces, controllers, allowed hosts.

One subsystem has one or more controllers (each with its own cntlid,
features, logs, queues and async events) sharing its namespaces.  The
subsystem also owns what the specification makes subsystem-wide: firmware
slots, the SMART / health counters, and fault injection for testing hosts.

Controllers and namespace attachment.  A PCIe function's controller is
static: its controller ID and the namespaces attached to it last as long as
the function.  Fabrics controllers follow the dynamic controller model
(Identify FCATT bit 0 clear, Connect with CNTLID FFFFh, as Linux nvmet): each
association gets a new controller, and "all controllers allocated to a host
have the same state when the association is established, including the
attached namespaces", while a change made to one controller does not
affect the other live ones.  So an attachment made through a host's
controller belongs to the host (its Host NQN): Linux's reset, reconnect or
keep-alive recovery, which all make a new association, find the host's
namespaces attached again.  A private namespace follows its host to the
newest association (the older one, if still alive, loses it and gets the
Namespace Attribute Changed notice).

Each host also keeps its controller ID from one association to the next
whenever it is free (hosts' IDs are not handed to other hosts while others
are free), so an ID a tool stored (nvme-cli's tests read it once, then
reset the controller) still names the host's controller.  Namespace
Attachment accepts such an ID of a host that has no association at the
moment (attach and detach then change what its next association sees), so
a namespace can always be detached and attached again; Identify CNS 12h
lists it for the namespaces attached to that host.
"""

from __future__ import annotations

import os
import threading
import uuid as _uuid
from typing import Any, Callable, Iterable

from ..spec.fabrics import DISCOVERY_NQN
from ..spec.log import LogPageId
from .controller import AsyncEventType, Controller
from .namespace import BackendFactory, Namespace, memory_backends

__all__ = ["Subsystem", "NoticeInfo", "MAX_CNTLID"]

MAX_CNTLID = 0xFFEF  # 1..FFEFh are valid controller identifiers
HOST_CNTLIDS_KEPT = 8  # controller IDs remembered per host (its concurrent associations)
DEFAULT_CAPACITY = 1 << 40  # TNVMCAP when none is given: 1 TiB


class NoticeInfo:
    """Asynchronous Event Information for Notice events (type 2)."""

    NAMESPACE_ATTRIBUTE_CHANGED = 0x00
    FIRMWARE_ACTIVATION_STARTING = 0x01
    TELEMETRY_LOG_CHANGED = 0x02
    ANA_CHANGE = 0x03
    DISCOVERY_LOG_CHANGED = 0xF0


def default_nqn() -> str:
    return f"nqn.2014-08.org.nvmexpress:uuid:{_uuid.uuid4()}"


class Subsystem:
    def __init__(
        self,
        nqn: str | None = None,
        *,
        serial: str | None = None,
        model: str = "nvmestack",
        firmware_revision: str = "1.0",
        ieee_oui: int = 0,
        vid: int | None = None,
        ssvid: int | None = None,
        max_namespaces: int = 1024,
        allow_any_host: bool = True,
        allowed_hosts: Iterable[str] = (),
        discovery: bool = False,
        capacity: int | None = None,
    ):
        self.nqn = nqn or default_nqn()
        self.serial = serial or os.urandom(10).hex()
        self.model = model
        self.ieee_oui = ieee_oui
        # PCI Vendor ID and PCI Subsystem Vendor ID (Identify Controller VID,
        # SSVID) when configured: what fabrics controllers report, and the
        # ids a PCIe function of this subsystem takes; None: 0h over fabrics,
        # the function's own ids (target/pci/config.py) over PCIe.
        for name, value in (("vid", vid), ("ssvid", ssvid)):
            if value is not None and not 0 <= value <= 0xFFFF:
                raise ValueError(f"{name} {value:#x} is not a 16-bit PCI id")
        self.vid = vid
        self.ssvid = ssvid
        self.max_namespaces = max_namespaces
        self.allow_any_host = allow_any_host
        self.allowed_hosts: set[str] = set(allowed_hosts)
        self.discovery = discovery or self.nqn == DISCOVERY_NQN
        self.namespaces: dict[int, Namespace] = {}
        self.controllers: dict[int, Controller] = {}
        self.lock = threading.RLock()
        self._next_cntlid = 1
        # Controller IDs of the dynamic model, by host: host NQN -> IDs its
        # associations had (first preferred), and ID -> host NQN.
        self._host_cntlids: dict[str, list[int]] = {}
        self._cntlid_host: dict[int, str] = {}

        from .faults import FaultInjector
        from .firmware import FirmwareSlots
        from .health import Health

        self.firmware = FirmwareSlots(firmware_revision)
        self.health = Health(self)
        # Run after anything that decides what an I/O fast path may do
        # changed (namespaces, attachments, fault rules, the sanitize gate):
        # a target with worker processes tells them (workers.py).
        self.io_state_hooks: list[Callable[[], None]] = []
        self._faults: FaultInjector | None = None
        # Storage of namespaces created at run time (Namespace Management):
        # nsid -> BackendFactory, None for memory.  persist.load sets it so
        # that new namespaces are files in the subsystem's directory.
        self.backend_factory: Callable[[int], BackendFactory] | None = None
        # Run by close() before the namespaces close (persistence saves).
        self.close_hooks: list[Callable[[], None]] = []
        # Run after the namespace inventory or attachments changed
        # (persistence saves the configuration).
        self.change_hooks: list[Callable[[], None]] = []
        from .features import SavedFeatures

        # Saved feature values (Set Features with SV), shared by every
        # controller and kept across power cycles (features.py, persist.py).
        self.saved_features = SavedFeatures()
        # Total NVM capacity in bytes (Identify Controller TNVMCAP); what
        # namespaces do not take is UNVMCAP (unallocated_capacity()).
        self.capacity = capacity if capacity is not None else DEFAULT_CAPACITY
        self.thin_provisioning = True  # Namespace Management accepts NCAP < NSZE
        # Called by Controller.prepare for every command when set (a running
        # or failed sanitize operation aborts what it does not allow).
        self.command_gate: Callable[[Controller, Any], None] | None = None
        from .admin_mgmt import BackgroundOperations

        # Device self-test and sanitize operations (admin_mgmt.py).
        self.operations = BackgroundOperations(self)

    def namespace_backends(self, nsid: int) -> BackendFactory:
        """How to make the storage of namespace ``nsid`` created at run time."""
        if self.backend_factory is None:
            return memory_backends
        return self.backend_factory(nsid)

    def allocated_capacity(self) -> int:
        """Bytes of NVM capacity the namespaces take (NCAP of each)."""
        return sum(ns.ncap * ns.block_size for ns in list(self.namespaces.values()))

    def unallocated_capacity(self) -> int:
        """Identify Controller UNVMCAP."""
        return max(0, self.capacity - self.allocated_capacity())

    def _controller_reset(self, ctrl: Controller) -> None:
        """After a Controller Level Reset of ``ctrl`` (a reset hook): a
        firmware image waiting for one is activated, a short device
        self-test that controller started is aborted."""
        if self.controllers.get(ctrl.cntlid) is not ctrl:
            return  # removed, not reset
        self.firmware.controller_reset(ctrl.cntlid)
        self.operations.controller_reset(ctrl)

    @property
    def firmware_revision(self) -> str:
        return self.firmware.active_revision

    # -- hosts --------------------------------------------------------------

    def host_allowed(self, hostnqn: str) -> bool:
        return self.allow_any_host or hostnqn in self.allowed_hosts

    # -- controllers ----------------------------------------------------------

    def _dynamic_host(self, options: dict) -> str | None:
        """The host NQN a new controller belongs to under the dynamic model
        (a fabrics controller of an NVM subsystem), else None."""
        hostnqn = options.get("hostnqn") or ""
        return hostnqn if options.get("fabrics") and hostnqn and not self.discovery else None

    def controller_host(self, ctrl: Controller) -> str | None:
        """The host a dynamic controller's attachments belong to."""
        return ctrl.hostnqn if ctrl.fabrics and ctrl.hostnqn and not self.discovery else None

    def add_controller(self, *, cntlid: int | None = None, **options) -> Controller:
        """A new controller (dynamic cntlid unless one is given).  Every
        namespace that is shared, or not yet attached anywhere, is attached
        to it, as a freshly created controller of a simple device sees them;
        a fabrics controller also gets what its host attached (and not what
        its host detached) through its earlier controllers."""
        moved: list[tuple[int, list[int]]] = []
        with self.lock:
            host = self._dynamic_host(options)
            if cntlid is None:
                cntlid = self._host_cntlid(host) if host is not None else self._allocate_cntlid()
            elif cntlid in self.controllers or not 1 <= cntlid <= MAX_CNTLID:
                raise ValueError(f"controller id {cntlid} is in use or invalid")
            ctrl = Controller(self, cntlid, **options)
            ctrl.reset_hooks.append(self._controller_reset)
            self.controllers[cntlid] = ctrl
            for ns in self.namespaces.values():
                if host is not None and host in ns.attached_hosts:
                    if not ns.shared and ns.attached:
                        # A private namespace follows its host to this association.
                        moved.append((ns.nsid, sorted(ns.attached)))
                        ns.attached.clear()
                    ns.attached.add(cntlid)
                elif ns.auto_attach and (host is None or host not in ns.detached_hosts) and (
                        ns.shared or not (ns.attached or ns.attached_hosts)):
                    ns.attached.add(cntlid)
                    if host is not None and not ns.shared:
                        ns.attached_hosts.add(host)
        for nsid, before in moved:
            self.namespace_changed([nsid], [self.controllers[c] for c in before if c in self.controllers])
        return ctrl

    def _allocate_cntlid(self, avoid: dict[int, str] | None = None) -> int:
        for _ in range(MAX_CNTLID):
            cntlid = self._next_cntlid
            self._next_cntlid = cntlid % MAX_CNTLID + 1
            if cntlid not in self.controllers and (avoid is None or cntlid not in avoid):
                return cntlid
        raise RuntimeError("no free controller identifier")

    def _host_cntlid(self, host: str) -> int:
        """A controller ID for a new association of ``host`` (lock held): the
        first of its earlier IDs that is free, else a new one that no other
        host had (or, when every ID was some host's, one of them that is
        free now)."""
        kept = self._host_cntlids.setdefault(host, [])
        for cntlid in kept:
            if cntlid not in self.controllers:
                return cntlid
        try:
            cntlid = self._allocate_cntlid(avoid=self._cntlid_host)
        except RuntimeError:
            cntlid = self._allocate_cntlid()
            other = self._cntlid_host.pop(cntlid, None)
            if other is not None:
                self._host_cntlids[other].remove(cntlid)
                if not self._host_cntlids[other]:
                    del self._host_cntlids[other]
        if len(kept) >= HOST_CNTLIDS_KEPT:
            # Forget the latest free one beyond the limit (the first stays).
            spare = next((c for c in reversed(kept[1:]) if c not in self.controllers), None)
            if spare is not None:
                kept.remove(spare)
                del self._cntlid_host[spare]
        kept.append(cntlid)
        self._cntlid_host[cntlid] = host
        return cntlid

    def offline_host(self, cntlid: int) -> str | None:
        """The host whose (earlier) controller ID ``cntlid`` is, when that
        host has no association with that ID now: Namespace Attachment
        accepts it and changes what the host's next association sees."""
        with self.lock:
            if cntlid in self.controllers:
                return None
            return self._cntlid_host.get(cntlid)

    def host_cntlid(self, host: str) -> int | None:
        """The controller ID a host's next association gets, if it has one."""
        with self.lock:
            kept = self._host_cntlids.get(host)
            return kept[0] if kept else None

    def attached_controller_ids(self, ns: Namespace) -> set[int]:
        """Identify CNS 12h: the live controllers a namespace is attached
        to, and for each host it is attached to with none of them live, the
        host's controller ID."""
        with self.lock:
            ids = {c for c in ns.attached if c in self.controllers}
            live_hosts = {self.controller_host(self.controllers[c]) for c in ids}
            for host in ns.attached_hosts - live_hosts:
                cntlid = self.host_cntlid(host)
                if cntlid is not None:
                    ids.add(cntlid)
            return ids

    def remove_controller(self, ctrl: Controller) -> None:
        with self.lock:
            self.controllers.pop(ctrl.cntlid, None)
            dynamic = self.controller_host(ctrl) is not None
            for ns in self.namespaces.values():
                if not ns.shared and not dynamic:
                    continue  # a static controller's private namespace stays its
                ns.attached.discard(ctrl.cntlid)
        self.health.controller_removed(ctrl)
        ctrl.controller_reset()

    # -- namespaces -------------------------------------------------------------

    def free_nsid(self) -> int | None:
        for nsid in range(1, self.max_namespaces + 1):
            if nsid not in self.namespaces:
                return nsid
        return None

    def add_namespace(self, ns: Namespace, *, attach: bool = True) -> Namespace:
        """Add a namespace, attached to every controller when ``attach``."""
        with self.lock:
            if ns.nsid in self.namespaces:
                raise ValueError(f"namespace {ns.nsid} exists")
            if ns.nsid > self.max_namespaces:
                raise ValueError(f"NSID {ns.nsid} is above the subsystem's {self.max_namespaces}")
            ns.auto_attach = attach
            ns.io_state_changed = self.io_state_changed  # a Format NVM tells the worker processes
            self.namespaces[ns.nsid] = ns
            if attach:
                ns.attached.update(self.controllers)
        if attach:
            self.namespace_changed([ns.nsid], self.controllers.values())
        else:
            self._changed()
        return ns

    def remove_namespace(self, nsid: int) -> Namespace:
        with self.lock:
            ns = self.namespaces.pop(nsid)
            attached = [self.controllers[c] for c in ns.attached if c in self.controllers]
            ns.attached.clear()
        ns.close()
        self.namespace_changed([nsid], attached)
        return ns

    def namespace_changed(self, nsids: Iterable[int], controllers: Iterable[Controller]) -> None:
        """Record changed namespaces in each controller's Changed Namespace
        List log and raise the Namespace Attribute Changed notice."""
        nsids = list(nsids)
        for ctrl in list(controllers):
            with ctrl.lock:
                ctrl.changed_namespaces.update(nsids)
            ctrl.post_event(AsyncEventType.NOTICE, NoticeInfo.NAMESPACE_ATTRIBUTE_CHANGED, LogPageId.CHANGED_NS)
        self._changed()

    def _changed(self) -> None:
        self.io_state_changed()
        for hook in list(self.change_hooks):
            hook()

    def io_state_changed(self) -> None:
        """What an I/O fast path may do may have changed (see io_state_hooks)."""
        for hook in list(self.io_state_hooks):
            hook()

    @property
    def faults(self):
        """The fault injector (faults.py), None when none is installed."""
        return self._faults

    @faults.setter
    def faults(self, injector) -> None:
        self._faults = injector
        if injector is not None and self.io_state_changed not in injector.hooks:
            injector.hooks.append(self.io_state_changed)
        self.io_state_changed()

    # -- whole-subsystem operations ------------------------------------------------

    def flush_all(self) -> None:
        for ns in list(self.namespaces.values()):
            ns.flush()

    def controller_shut_down(self, ctrl: Controller, abrupt: bool) -> None:
        """A controller completed a shutdown (CC.SHN)."""
        self.health.shutdown(abrupt)

    def nvm_subsystem_reset(self) -> None:
        """NSSR: every controller resets and reports NSSRO."""
        for ctrl in list(self.controllers.values()):
            ctrl.controller_reset()
            ctrl.regs.csts.nssro = True
        self.firmware.subsystem_reset()

    def close(self) -> None:
        self.operations.stop()
        hooks, self.close_hooks = self.close_hooks, []
        for hook in hooks:
            hook()
        for ns in self.namespaces.values():
            ns.close()

    def __repr__(self) -> str:
        return f"<Subsystem {self.nqn} {len(self.namespaces)} ns {len(self.controllers)} ctrl>"
