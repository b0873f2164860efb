"""Feature values of a controller (Set Features / Get Features, NVMe 2.0
base spec 5.27 and 5.15): current, default and saved values, per feature
(per namespace for namespace-specific features, per sensor and threshold
type for the Temperature Threshold, per interrupt vector for Interrupt
Vector Configuration), and the capabilities Get Features reports for Select
= 11b.

Values are kept as the feature's dword (command dword 11 of Set Features,
dword 0 of the Get Features completion) plus, for the features that carry
one, the data buffer.  A value the host never set reads as the saved value
(Set Features with SV) or else the default; a Controller Level Reset drops
the current values (:meth:`FeatureStore.reset`).

Saved values belong to the NVM subsystem (they persist through power cycles
and are what a controller created later starts with): they live in
``subsystem.saved_features``, a :class:`SavedFeatures`, which the
persistence code saves and restores as plain JSON data.

What other parts read:

* ``ctrl.features.value(FeatureId.VOLATILE_WC) & 1``: the write cache is on;
* ``ctrl.features.event_enabled(type, info)``: Asynchronous Event
  Configuration (the controller's ``post_event`` asks);
* ``ctrl.features.temperature_threshold(sensor, under)``: the health code's
  thresholds (it re-checks the critical warning after each Set Features of
  the Temperature Threshold through ``subsystem.health.check(ctrl)``).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from ..spec.admin import FeatureSelect
from ..spec.features import (
    TMPSEL_ALL,
    ApstData,
    ErrorRecovery,
    FeatureCapabilities,
    FeatureId,
    HostIdentifier64,
    HostIdentifier128,
    InterruptVectorConfiguration,
    IoCommandSetProfile,
    LbaRangeTypeData,
    NumberOfQueues,
    PowerManagement,
    TemperatureThreshold,
    ThresholdType,
    TimestampData,
    TimestampOrigin,
)
from ..spec.identify import NSID_BROADCAST, IoCommandSetVector
from ..spec.registers import CcCss
from ..spec.status import CommandSpecificStatus, GenericStatus
from .errors import NvmeError

if TYPE_CHECKING:
    from .controller import Controller
    from .namespace import Namespace
    from .request import Request

__all__ = [
    "FeatureStore",
    "FeatureInfo",
    "FEATURE_INFO",
    "SavedFeatures",
    "MAX_IO_QUEUES",
    "NPSS",
    "feature_transfer_length",
    "IOCS_COMBINATIONS",
    "enabled_command_sets",
]

# The I/O Command Set Combinations this controller supports (Identify CNS
# 1Ch, in order; feature 19h selects one by index): the NVM command set.
IOCS_COMBINATIONS: tuple[int, ...] = (IoCommandSetVector.NVM,)

# I/O submission (and completion) queues a controller grants at most.
MAX_IO_QUEUES = 64
# Number of Power States Support (0's based): one power state, PS 0.
NPSS = 0
# Interrupt vectors when the transport does not say (no queue_ops): the
# admin vector plus one per I/O queue.
DEFAULT_VECTORS = MAX_IO_QUEUES + 1
# Temperature threshold defaults when the health code has none (kelvins).
WARNING_TEMPERATURE = 343

_FID = FeatureId


class FeatureInfo(NamedTuple):
    """What this controller supports of a feature (Get Features SEL = 11b)."""

    saveable: bool
    changeable: bool = True
    ns_specific: bool = False
    pcie_only: bool = False  # not used by NVMe over Fabrics controllers

    @property
    def capabilities(self) -> int:
        caps = FeatureCapabilities(saveable=self.saveable, ns_specific=self.ns_specific,
                                   changeable=self.changeable)
        return caps.dword


# The features this controller implements; any other FID is Invalid Field.
FEATURE_INFO: dict[int, FeatureInfo] = {
    _FID.ARBITRATION: FeatureInfo(saveable=True),
    _FID.POWER_MGMT: FeatureInfo(saveable=True),
    # One General Purpose range over the whole namespace; not changeable.
    _FID.LBA_RANGE: FeatureInfo(saveable=False, changeable=False, ns_specific=True),
    _FID.TEMP_THRESH: FeatureInfo(saveable=True),
    _FID.ERR_RECOVERY: FeatureInfo(saveable=True, ns_specific=True),
    _FID.VOLATILE_WC: FeatureInfo(saveable=True),
    _FID.NUM_QUEUES: FeatureInfo(saveable=False),
    _FID.IRQ_COALESCE: FeatureInfo(saveable=True, pcie_only=True),
    _FID.IRQ_CONFIG: FeatureInfo(saveable=False, pcie_only=True),
    _FID.WRITE_ATOMIC: FeatureInfo(saveable=True),
    _FID.ASYNC_EVENT: FeatureInfo(saveable=True),
    _FID.AUTO_PST: FeatureInfo(saveable=True),
    _FID.TIMESTAMP: FeatureInfo(saveable=False),
    _FID.KATO: FeatureInfo(saveable=False),
    _FID.HOST_ID: FeatureInfo(saveable=False),
    # Only with CAP.CSS.IOCSS (not on discovery controllers); its one valid
    # value is index 0, so "persists across reset" holds with no storage.
    _FID.IOCS_PROFILE: FeatureInfo(saveable=False),
}

# Feature -> bytes of its data buffer (Host Identifier: see CDW11.EXHID).
_DATA_SIZE = {
    _FID.LBA_RANGE: LbaRangeTypeData.SIZE,
    _FID.AUTO_PST: ApstData.SIZE,
    _FID.TIMESTAMP: TimestampData.SIZE,
    _FID.HOST_ID: HostIdentifier128.SIZE,
}

# Asynchronous Event Configuration bits this controller can report: the six
# critical warnings, namespace attribute and firmware activation notices.
_AEC_SUPPORTED = 0x3F | (1 << 8) | (1 << 9)
_AEC_DISCOVERY = 1 << 31  # discovery log page change (discovery controllers)

# SMART / Health Status event information -> the Critical Warning bits of
# the Asynchronous Event Configuration that enable it.
_SMART_EVENT_BITS = {0x00: 0x3C, 0x01: 0x02, 0x02: 0x01}
# Notice event information -> Asynchronous Event Configuration bit.
_NOTICE_EVENT_BIT = {0x00: 8, 0x01: 9, 0x02: 10, 0x03: 11, 0xF0: 31}

Key = Any  # fid, or (fid, sub) when sub != 0


def _key(fid: int, sub: int = 0) -> Key:
    return int(fid) if not sub else (int(fid), int(sub))


def _threshold_sub(tmpsel: int, thsel: int) -> int:
    return (tmpsel << 2) | thsel


def _invalid(msg: str, param: int = 40, bit: int = 0) -> NvmeError:
    return NvmeError(GenericStatus.INVALID_FIELD, param=param, bit=bit, msg=msg)


class SavedFeatures:
    """The saved values of the NVM subsystem's features: key -> (dword, data).

    The key is the FID, or (FID, sub) where sub is the NSID of a
    namespace-specific feature, ``TMPSEL << 2 | THSEL`` of a temperature
    threshold.  :meth:`saved_state` and :meth:`restore_saved` turn it into
    JSON data and back (the persistence code calls them)."""

    def __init__(self):
        self.values: dict[Key, tuple[int, bytes]] = {}
        self.lock = threading.Lock()
        self.version = 0  # bumped by every change (the I/O fast path caches what it reads)

    def get(self, key: Key) -> tuple[int, bytes] | None:
        with self.lock:
            return self.values.get(key)

    def set(self, key: Key, dword: int, data: bytes = b"") -> None:
        with self.lock:
            self.values[key] = (int(dword), bytes(data))
            self.version += 1

    def clear(self) -> None:
        with self.lock:
            self.values.clear()
            self.version += 1

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, key: Key) -> bool:
        return key in self.values

    def saved_state(self) -> list[dict[str, Any]]:
        """JSON-able: a list of {fid, sub, dword, data (hex)}."""
        out = []
        with self.lock:
            for key, (dword, data) in sorted(self.values.items(), key=lambda kv: str(kv[0])):
                fid, sub = (key, 0) if isinstance(key, int) else key
                out.append({"fid": fid, "sub": sub, "dword": dword, "data": data.hex()})
        return out

    def restore_saved(self, state: Any) -> None:
        """Replace the saved values with those of :meth:`saved_state`;
        entries that do not parse are skipped."""
        values: dict[Key, tuple[int, bytes]] = {}
        for item in state or ():
            try:
                fid, sub = int(item["fid"]), int(item.get("sub", 0))
                dword = int(item.get("dword", 0)) & 0xFFFFFFFF
                data = bytes.fromhex(item.get("data", ""))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            if fid in FEATURE_INFO and FEATURE_INFO[fid].saveable:
                values[_key(fid, sub)] = (dword, data)
        with self.lock:
            self.values = values
            self.version += 1

    def __repr__(self) -> str:
        return f"<SavedFeatures {len(self.values)} values>"


def feature_transfer_length(ctrl: "Controller", fid: int, cdw11: int, *, sel: int = 0, setting: bool) -> int:
    """Bytes of data a Get Features (or, with ``setting``, a Set Features)
    command for ``fid`` moves; 0 for a feature without data, an unsupported
    feature, and Get Features with Select = 11b (capabilities in dword 0).
    A reserved Select (100b-111b) moves nothing: Invalid Field."""
    if not setting and sel > FeatureSelect.SUPPORTED:
        raise _invalid(f"Select {sel} is reserved", param=41)
    size = _DATA_SIZE.get(fid)
    if size is None or fid not in FEATURE_INFO:
        return 0
    if not setting and sel == FeatureSelect.SUPPORTED:
        return 0
    if fid == _FID.HOST_ID:
        return HostIdentifier128.SIZE if cdw11 & 1 else HostIdentifier64.SIZE
    return size


def enabled_command_sets(ctrl: "Controller") -> int:
    """The I/O Command Set Vector of the command sets ``ctrl`` uses: CC.CSS
    000b the NVM command set, 110b the combination feature 19h selects, 111b
    (admin only) none."""
    css = ctrl.regs.cc.css
    if css == CcCss.NVM:
        return IoCommandSetVector.NVM
    if css == CcCss.ALL_IOCS:
        index = ctrl.features.value(_FID.IOCS_PROFILE) & 0x1FF
        return IOCS_COMBINATIONS[index] if index < len(IOCS_COMBINATIONS) else 0
    return 0


class FeatureStore:
    """The features of one controller."""

    def __init__(self, ctrl: "Controller"):
        self.ctrl = ctrl
        saved = getattr(ctrl.subsystem, "saved_features", None)
        if not isinstance(saved, SavedFeatures):  # a subsystem stand-in
            saved = SavedFeatures()
            ctrl.subsystem.saved_features = saved
        self.saved: SavedFeatures = saved
        self.lock = threading.RLock()
        self.current: dict[Key, int] = {}
        self.data: dict[Key, bytes] = {}
        self.version = 0  # bumped by every change of a current value (see write_cache_state)
        # Host Identifier set by Set Features (PCIe); b"" = never set.
        self.host_id = b""
        self._timestamp = 0
        self._timestamp_at = time.monotonic()
        self._timestamp_origin = TimestampOrigin.RESET
        self.reset()

    # ------------------------------------------------------------------
    # life cycle

    def reset(self) -> None:
        """Controller Level Reset: current values return to saved or default."""
        with self.lock:
            self.version += 1
            self.current.clear()
            self.data.clear()
            self._timestamp = 0
            self._timestamp_at = time.monotonic()
            self._timestamp_origin = TimestampOrigin.RESET
            if not self.ctrl.fabrics:
                # Fabrics controllers take KATO and the Host Identifier from
                # Connect; PCIe ones return to "disabled" / "not specified".
                self.ctrl.kato = 0
                if self.host_id:
                    self.ctrl.hostid = bytes(16)
                self.host_id = b""

    # ------------------------------------------------------------------
    # what other parts read

    def value(self, fid: int, nsid: int = 0) -> int:
        """The current dword of a feature (of namespace ``nsid`` for a
        namespace-specific one)."""
        fid = int(fid)
        info = FEATURE_INFO.get(fid)
        sub = nsid if info is not None and info.ns_specific else 0
        return self._dword(fid, sub, FeatureSelect.CURRENT)

    def event_enabled(self, event_type: int, info: int) -> bool:
        """Whether Asynchronous Event Configuration (feature 0Bh) lets an
        event be reported.  Error events are always reported."""
        from .controller import AsyncEventType

        aec = self.value(_FID.ASYNC_EVENT)
        if event_type == AsyncEventType.SMART:
            return bool(aec & _SMART_EVENT_BITS.get(info, 0xFF))
        if event_type == AsyncEventType.NOTICE:
            bit = _NOTICE_EVENT_BIT.get(info)
            return bit is not None and bool(aec >> bit & 1)
        return True

    def implemented_sensors(self) -> list[int]:
        """Temperature sensors with a threshold: 0 (the Composite
        Temperature) and each of sensors 1-8 the health code reports."""
        health = self.ctrl.subsystem.health
        reading = getattr(health, "sensor_temperature", None)
        sensors = [0]
        if callable(reading):
            sensors += [i for i in range(1, 9) if reading(i)]
        return sensors

    def temperature_threshold(self, sensor: int, under: bool) -> int:
        """The current over (``under`` False) or under temperature
        threshold of ``sensor`` (0 composite, 1-8), in kelvins."""
        thsel = ThresholdType.UNDER if under else ThresholdType.OVER
        return self._dword(_FID.TEMP_THRESH, _threshold_sub(sensor, thsel), FeatureSelect.CURRENT) & 0xFFFF

    def granted_queues(self) -> tuple[int, int]:
        """(NSQA, NCQA), 0's based: what Set Features Number of Queues
        granted, or the controller's maximum before it was set."""
        granted = self.ctrl.queues_granted
        if granted is None:
            return self.max_io_queues - 1, self.max_io_queues - 1
        return granted

    @property
    def max_io_queues(self) -> int:
        return int(getattr(self.ctrl, "max_io_queues", MAX_IO_QUEUES))

    def max_vectors(self) -> int:
        ops = self.ctrl.queue_ops
        return int(ops.max_vectors) if ops is not None else DEFAULT_VECTORS

    def timestamp(self) -> TimestampData:
        """The Timestamp feature's current value: the last value set (or 0
        at the last Controller Level Reset) plus the milliseconds since."""
        with self.lock:
            elapsed = int((time.monotonic() - self._timestamp_at) * 1000)
            ts = TimestampData()
            ts.timestamp = (self._timestamp + elapsed) & TimestampData.MAX
            ts.origin = self._timestamp_origin
            return ts

    # ------------------------------------------------------------------
    # values: current / default / saved

    def default(self, fid: int, sub: int = 0) -> int:
        if fid == _FID.ARBITRATION:
            return 0x7  # Arbitration Burst 111b: no limit
        if fid == _FID.TEMP_THRESH:
            sensor, thsel = sub >> 2, sub & 3
            if thsel == ThresholdType.UNDER:
                return 0
            if sensor == 0:
                return int(getattr(self.ctrl.subsystem.health, "warning_temperature", WARNING_TEMPERATURE))
            return 0xFFFF
        if fid == _FID.VOLATILE_WC:
            return 1  # the volatile write cache is enabled
        if fid == _FID.NUM_QUEUES:
            n = self.max_io_queues - 1
            return n | n << 16
        if fid == _FID.IRQ_CONFIG:
            # The admin queue's vector is never coalesced.
            return sub | (1 << 16 if sub == 0 else 0)
        return 0

    def default_data(self, fid: int, sub: int = 0) -> bytes:
        if fid == _FID.LBA_RANGE:
            ns = self.ctrl.subsystem.namespaces.get(sub)
            page = LbaRangeTypeData()
            if ns is not None:
                entry = page.entry[0]
                entry.overwrite = True
                entry.nlb = max(ns.nblocks - 1, 0)
            return bytes(page)
        return bytes(_DATA_SIZE.get(fid, 0))

    def _dword(self, fid: int, sub: int, sel: int) -> int:
        key = _key(fid, sub)
        with self.lock:
            if sel == FeatureSelect.CURRENT:
                if fid == _FID.KATO:
                    return self.ctrl.kato
                if fid == _FID.NUM_QUEUES:
                    nsqa, ncqa = self.granted_queues()
                    return nsqa | ncqa << 16
                if key in self.current:
                    return self.current[key]
            if sel in (FeatureSelect.CURRENT, FeatureSelect.SAVED):
                saved = self.saved.get(key)
                if saved is not None:
                    return saved[0]
        return self.default(fid, sub)

    def _data(self, fid: int, sub: int, sel: int) -> bytes:
        key = _key(fid, sub)
        with self.lock:
            if sel == FeatureSelect.CURRENT and key in self.data:
                return self.data[key]
            if sel in (FeatureSelect.CURRENT, FeatureSelect.SAVED):
                saved = self.saved.get(key)
                if saved is not None and saved[1]:
                    return saved[1]
        return self.default_data(fid, sub)

    def _store(self, fid: int, sub: int, dword: int, data: bytes | None, save: bool) -> None:
        key = _key(fid, sub)
        with self.lock:
            self.current[key] = dword
            self.version += 1
            if data is not None:
                self.data[key] = bytes(data)
        if save:
            self.saved.set(key, dword, data or b"")

    # ------------------------------------------------------------------
    # namespaces

    def _nsid_valid(self, nsid: int) -> bool:
        return 1 <= nsid <= self.ctrl.subsystem.max_namespaces

    def _get_namespace(self, nsid: int) -> "Namespace":
        """The active namespace a namespace-specific Get Features names."""
        if not self._nsid_valid(nsid):
            raise NvmeError(GenericStatus.INVALID_NAMESPACE_OR_FORMAT, param=4)
        ns = self.ctrl.namespace(nsid)
        if ns is None:
            raise _invalid(f"namespace {nsid} is not active", param=4)
        return ns

    def _set_namespaces(self, nsid: int) -> list["Namespace"]:
        """The namespaces a namespace-specific Set Features applies to."""
        if nsid == NSID_BROADCAST:
            return self.ctrl.active_namespaces()
        return [self._get_namespace(nsid)]

    # ------------------------------------------------------------------
    # Get Features

    def _supported(self, fid: int) -> FeatureInfo:
        info = FEATURE_INFO.get(fid)
        if info is None or (info.pcie_only and self.ctrl.fabrics):
            raise _invalid(f"feature {fid:#04x} is not supported")
        if fid == _FID.IOCS_PROFILE and not self.ctrl.regs.cap.css_iocs:
            raise _invalid("no I/O Command Set selection (CAP.CSS.IOCSS is 0)")
        return info

    def check_get(self, req: "Request") -> None:
        """The fields of a Get Features command that do not need its data:
        run when the command is prepared, before any data moves."""
        cmd = req.cmd
        if cmd.sel > FeatureSelect.SUPPORTED:
            raise _invalid(f"Select {cmd.sel} is reserved", param=41)
        info = self._supported(cmd.fid)
        if info.ns_specific:
            self._get_namespace(cmd.nsid)

    def get_features(self, req: "Request") -> None:
        """Execute Get Features (its fields checked by :meth:`check_get`):
        the value in dword 0 of the completion, and the data buffer for the
        features that have one."""
        cmd = req.cmd
        fid, sel, cdw11 = cmd.fid, cmd.sel, cmd.cdw11
        info = self._supported(fid)
        ns = self._get_namespace(cmd.nsid) if info.ns_specific else None
        if sel == FeatureSelect.SUPPORTED:
            req.cqe.dw0 = info.capabilities
            return
        sub = ns.nsid if ns is not None else 0
        dw0, data = 0, None
        if fid == _FID.TEMP_THRESH:
            request = TemperatureThreshold.from_dword(cdw11)
            self._check_threshold_select(request.tmpsel, request.thsel, getting=True)
            tmpth = self._dword(fid, _threshold_sub(request.tmpsel, request.thsel), sel) & 0xFFFF
            dw0 = TemperatureThreshold(tmpth=tmpth, tmpsel=request.tmpsel, thsel=request.thsel).dword
        elif fid == _FID.IRQ_CONFIG:
            iv = InterruptVectorConfiguration.from_dword(cdw11).iv
            if iv >= self.max_vectors():
                raise _invalid(f"interrupt vector {iv} does not exist", param=44)
            dw0 = self._dword(fid, iv, sel)
        elif fid == _FID.TIMESTAMP:
            data = bytes(self.timestamp()) if sel == FeatureSelect.CURRENT else bytes(TimestampData.SIZE)
        elif fid == _FID.HOST_ID:
            data = self._get_host_id(cdw11 & 1, sel)
            dw0 = cdw11 & 1
        elif fid == _FID.LBA_RANGE:
            data = self._data(fid, sub, sel)
            dw0 = 0  # NUM: one range (0's based)
        else:
            dw0 = self._dword(fid, sub, sel)
            if fid in _DATA_SIZE:
                data = self._data(fid, sub, sel)
        req.cqe.dw0 = dw0
        if data is not None and req.data_len:
            req.write_data(data[: req.data_len])

    def _get_host_id(self, exhid: int, sel: int) -> bytes:
        size = HostIdentifier128.SIZE if exhid else HostIdentifier64.SIZE
        if self.ctrl.fabrics:
            if not exhid:
                raise _invalid("a fabrics controller has a 128-bit Host Identifier", param=44)
            return bytes(self.ctrl.hostid[:16]) if sel == FeatureSelect.CURRENT else bytes(size)
        if sel != FeatureSelect.CURRENT or not self.host_id:
            return bytes(size)
        if len(self.host_id) != size:
            raise _invalid("EXHID does not match the Host Identifier's size", param=44)
        return self.host_id

    # ------------------------------------------------------------------
    # Set Features

    def check_set(self, req: "Request") -> list["Namespace"]:
        """The fields of a Set Features command that do not need its data
        (run when the command is prepared, before any data moves); the
        namespaces a namespace-specific feature applies to."""
        cmd = req.cmd
        fid, save, nsid = cmd.fid, cmd.sv, cmd.nsid
        info = self._supported(fid)
        namespaces: list["Namespace"] = []
        if info.ns_specific:
            namespaces = self._set_namespaces(nsid)
        elif nsid not in (0, NSID_BROADCAST):
            if not self._nsid_valid(nsid):
                raise NvmeError(GenericStatus.INVALID_NAMESPACE_OR_FORMAT, param=4)
            raise NvmeError(CommandSpecificStatus.FEATURE_NOT_NAMESPACE_SPECIFIC, param=4)
        if not info.changeable:
            raise NvmeError(CommandSpecificStatus.FEATURE_NOT_CHANGEABLE, param=40)
        if save and not info.saveable:
            raise NvmeError(CommandSpecificStatus.FEATURE_ID_NOT_SAVEABLE, param=43, bit=7)
        if fid == _FID.HOST_ID:
            self._check_host_id_settable()
        return namespaces

    def set_features(self, req: "Request") -> None:
        """Execute Set Features (its fields checked by :meth:`check_set`)."""
        cmd = req.cmd
        fid, save, cdw11 = cmd.fid, cmd.sv, cmd.cdw11
        namespaces = self.check_set(req)  # again: namespaces may have changed since
        setter = getattr(self, f"_set_{FeatureId(fid).name.lower()}")
        setter(req, cdw11, save, namespaces)
        if save:
            changed = getattr(self.ctrl.subsystem, "_changed", None)
            if callable(changed):
                changed()  # the persistence code saves the configuration

    def _set_arbitration(self, req, cdw11, save, namespaces) -> None:
        self._store(_FID.ARBITRATION, 0, cdw11 & 0xFFFFFF07, None, save)

    def _set_power_mgmt(self, req, cdw11, save, namespaces) -> None:
        pm = PowerManagement.from_dword(cdw11)
        if pm.ps > NPSS:
            raise _invalid(f"power state {pm.ps} is not supported", param=44)
        if pm.wh > 2:
            raise _invalid(f"workload hint {pm.wh} is reserved", param=44, bit=5)
        self._store(_FID.POWER_MGMT, 0, cdw11 & 0xFF, None, save)

    def _check_threshold_select(self, tmpsel: int, thsel: int, getting: bool) -> list[int]:
        if thsel > ThresholdType.UNDER:
            raise _invalid(f"THSEL {thsel} is reserved", param=46, bit=4)
        sensors = self.implemented_sensors()
        if tmpsel == TMPSEL_ALL and not getting:
            return sensors
        if tmpsel not in sensors:
            raise _invalid(f"temperature sensor {tmpsel} is not implemented", param=46)
        return [tmpsel]

    def _set_temp_thresh(self, req, cdw11, save, namespaces) -> None:
        th = TemperatureThreshold.from_dword(cdw11)
        for sensor in self._check_threshold_select(th.tmpsel, th.thsel, getting=False):
            self._store(_FID.TEMP_THRESH, _threshold_sub(sensor, th.thsel), th.tmpth, None, save)
        check = getattr(self.ctrl.subsystem.health, "check", None)
        if callable(check):
            check(self.ctrl)  # a crossing sets the critical warning and raises an event

    def _set_err_recovery(self, req, cdw11, save, namespaces) -> None:
        er = ErrorRecovery.from_dword(cdw11)
        if er.dulbe:
            for ns in namespaces:
                if not ns.identify().nsfeat_dulbe:
                    raise _invalid(f"namespace {ns.nsid} does not support DULBE", param=46)
        for ns in namespaces:
            self._store(_FID.ERR_RECOVERY, ns.nsid, cdw11 & 0x1FFFF, None, save)

    def _set_volatile_wc(self, req, cdw11, save, namespaces) -> None:
        was = self.value(_FID.VOLATILE_WC) & 1
        self._store(_FID.VOLATILE_WC, 0, cdw11 & 1, None, save)
        if was and not cdw11 & 1:
            # Disabling the cache makes everything it held durable.
            for ns in self.ctrl.active_namespaces():
                ns.flush()

    def _set_num_queues(self, req, cdw11, save, namespaces) -> None:
        ctrl = self.ctrl
        with ctrl.lock:
            if ctrl.io_sqs or ctrl.io_cqs:
                raise NvmeError(GenericStatus.COMMAND_SEQUENCE_ERROR,
                                msg="Number of Queues after I/O queues were created")
            request = NumberOfQueues.from_dword(cdw11)
            if request.nsqr == 0xFFFF:
                raise _invalid("NSQR FFFFh", param=44)
            if request.ncqr == 0xFFFF:
                raise _invalid("NCQR FFFFh", param=46)
            most = self.max_io_queues
            granted = (min(request.nsqr + 1, most) - 1, min(request.ncqr + 1, most) - 1)
            ctrl.queues_granted = granted
        req.cqe.dw0 = NumberOfQueues(nsqa=granted[0], ncqa=granted[1]).dword

    def _set_irq_coalesce(self, req, cdw11, save, namespaces) -> None:
        self._store(_FID.IRQ_COALESCE, 0, cdw11 & 0xFFFF, None, save)

    def _set_irq_config(self, req, cdw11, save, namespaces) -> None:
        iv = InterruptVectorConfiguration.from_dword(cdw11).iv
        if iv >= self.max_vectors():
            raise _invalid(f"interrupt vector {iv} does not exist", param=44)
        self._store(_FID.IRQ_CONFIG, iv, cdw11 & 0x1FFFF, None, save)

    def _set_write_atomic(self, req, cdw11, save, namespaces) -> None:
        self._store(_FID.WRITE_ATOMIC, 0, cdw11 & 1, None, save)

    def _set_async_event(self, req, cdw11, save, namespaces) -> None:
        supported = _AEC_SUPPORTED | (_AEC_DISCOVERY if self.ctrl.subsystem.discovery else 0)
        self._store(_FID.ASYNC_EVENT, 0, cdw11 & supported, None, save)

    def _set_auto_pst(self, req, cdw11, save, namespaces) -> None:
        data = req.read_data(ApstData.SIZE)
        table = ApstData.from_bytes(data)
        for ps in range(NPSS + 1):
            if table.entry[ps].itps > NPSS:
                raise _invalid(f"APST entry {ps}: power state {table.entry[ps].itps} is not supported", param=24)
        self._store(_FID.AUTO_PST, 0, cdw11 & 1, bytes(data), save)

    def _set_timestamp(self, req, cdw11, save, namespaces) -> None:
        ts = TimestampData.from_bytes(req.read_data(TimestampData.SIZE))
        with self.lock:
            self._timestamp = ts.timestamp
            self._timestamp_at = time.monotonic()
            self._timestamp_origin = TimestampOrigin.SET_FEATURES

    def _set_iocs_profile(self, req, cdw11, save, namespaces) -> None:
        if self.ctrl.regs.cc.css != CcCss.ALL_IOCS:
            return  # no effect unless CC.CSS selects all supported I/O command sets
        index = IoCommandSetProfile.from_dword(cdw11).iocsci
        if index >= len(IOCS_COMBINATIONS):
            raise NvmeError(CommandSpecificStatus.IOCS_COMBINATION_REJECTED, param=44,
                            msg=f"I/O Command Set Combination {index} is 0h")
        self._store(_FID.IOCS_PROFILE, 0, index, None, save)

    def _set_kato(self, req, cdw11, save, namespaces) -> None:
        self.ctrl.kato = cdw11
        self.ctrl.keep_alive()

    def _check_host_id_settable(self) -> None:
        ctrl = self.ctrl
        if ctrl.fabrics:
            raise NvmeError(GenericStatus.COMMAND_SEQUENCE_ERROR,
                            msg="a fabrics host gives its Host Identifier in Connect")
        if ctrl.io_sqs or ctrl.io_cqs:
            raise NvmeError(GenericStatus.COMMAND_SEQUENCE_ERROR,
                            msg="Host Identifier set while I/O queues exist")

    def _set_host_id(self, req, cdw11, save, namespaces) -> None:
        ctrl = self.ctrl
        size = HostIdentifier128.SIZE if cdw11 & 1 else HostIdentifier64.SIZE
        hostid = bytes(req.read_data(size))
        for other in list(ctrl.subsystem.controllers.values()):
            if other is ctrl:
                continue
            other_size = other.features.host_id_size()
            if other_size and any(hostid) and other_size != size:
                raise NvmeError(GenericStatus.HOST_ID_INCONSISTENT_FORMAT, param=44)
        with self.lock:
            self.host_id = hostid
            ctrl.hostid = hostid

    def host_id_size(self) -> int:
        """8 or 16 when this controller's host has a (non-zero) Host
        Identifier, 0 when it has none."""
        if self.ctrl.fabrics:
            return 16 if any(self.ctrl.hostid) else 0
        return len(self.host_id) if any(self.host_id) else 0
