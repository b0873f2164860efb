"""SMART / health of the subsystem and the SMART / Health Information log
page (02h; NVMe 2.0 base specification 5.16.1.3).

The counters are subsystem-wide: every controller reports the same log page
(it is not kept per namespace: Identify Controller LPA bit 0 is clear, and a
Get Log Page for NSID other than 0h or FFFFFFFFh fails with Invalid Field in
Command).  The NVM command handlers feed the counters (:meth:`Health.host_read`,
:meth:`Health.host_write`, :meth:`Health.busy`, :meth:`Health.media_error`);
the controller reports shutdowns (:meth:`Health.shutdown`); persistence
(``persist.py``) saves and restores them with :meth:`Health.state` and
:meth:`Health.restore`.

The temperature is simulated: set :attr:`Health.temperature` (kelvins) and
the critical warning, the warning/critical composite temperature times and
the SMART / health asynchronous events follow, as a real device's sensor
would drive them.  Likewise :attr:`Health.available_spare`.

Thresholds: the over and under temperature thresholds are the Temperature
Threshold feature (04h) of each controller (``FeatureStore.temperature_threshold``
when the feature store provides it; otherwise over = WCTEMP for the
composite temperature and FFFFh for a sensor, under = 0h, the specification's
defaults).  Critical Warning bit 1 is set while a temperature is greater than
or equal to its over threshold or less than or equal to its under threshold;
bit 0 while Available Spare is below Available Spare Threshold.  When a
condition starts, every controller gets an asynchronous event of type
SMART / Health Status (1h) with information 01h (temperature threshold) or
02h (spare below threshold) and log page 02h.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..spec.log import CriticalWarning, LogPageId, SmartLog
from ..spec.status import GenericStatus
from .commands import log_page
from .errors import NvmeError

if TYPE_CHECKING:
    from .controller import Controller
    from .subsystem import Subsystem

__all__ = [
    "CRITICAL_TEMPERATURE",
    "DEFAULT_TEMPERATURE",
    "WARNING_TEMPERATURE",
    "Health",
    "IoCounters",
    "SmartInfo",
    "data_units",
]

DEFAULT_TEMPERATURE = 313  # 40 degrees Celsius
WARNING_TEMPERATURE = 343  # WCTEMP, 70 degrees Celsius
CRITICAL_TEMPERATURE = 353  # CCTEMP, 80 degrees Celsius
NSID_ALL = 0xFFFFFFFF
COUNTER_MAX = (1 << 128) - 1  # the log's counters are 128-bit
TIME_MAX = 0xFFFFFFFF  # the temperature times are 32-bit


class SmartInfo:
    """Asynchronous Event Information for SMART / Health Status events (type 1h)."""

    RELIABILITY = 0x00  # NVM subsystem reliability
    TEMPERATURE_THRESHOLD = 0x01
    SPARE_BELOW_THRESHOLD = 0x02


# Critical Warning bit -> the event information that reports it.
_EVENT_INFO = {
    CriticalWarning.SPARE: SmartInfo.SPARE_BELOW_THRESHOLD,
    CriticalWarning.TEMPERATURE: SmartInfo.TEMPERATURE_THRESHOLD,
    CriticalWarning.RELIABILITY: SmartInfo.RELIABILITY,
    CriticalWarning.READ_ONLY: SmartInfo.RELIABILITY,
    CriticalWarning.VOLATILE_BACKUP: SmartInfo.RELIABILITY,
    CriticalWarning.PMR_READ_ONLY: SmartInfo.RELIABILITY,
}


def data_units(nbytes: int) -> int:
    """Data Units Read/Written: thousands of 512-byte units, rounded up
    (1 means 1 to 1,000 units of 512 bytes)."""
    return -(-nbytes // (512 * 1000))


class IoCounters:
    """The SMART counters of one I/O queue's fast path (``fastpath.py``).

    Only the queue's own thread adds to them, without a lock; the
    :class:`Health` counters of the same names are the subsystem's base
    plus every live queue's, summed when read (as nvmet keeps per-queue
    statistics and sums them for the log page).  A queue that goes away
    hands its counts to the base (:meth:`Health.retire_counters`)."""

    __slots__ = ("bytes_read", "bytes_written", "host_read_commands", "host_write_commands", "busy_seconds")

    def __init__(self) -> None:
        self.bytes_read = 0
        self.bytes_written = 0
        self.host_read_commands = 0
        self.host_write_commands = 0
        self.busy_seconds = 0.0


def _summed(name: str) -> property:
    base = "_" + name

    def get(self: "Health"):
        total = getattr(self, base)
        for counters in self._queue_counters:
            total += getattr(counters, name)
        return total

    def put(self: "Health", value) -> None:
        with self.lock:
            live = sum(getattr(c, name) for c in self._queue_counters)
            setattr(self, base, value - live)

    return property(get, put, doc=f"{name}: the subsystem's count plus every live I/O queue's")


class Health:
    """The subsystem's SMART / health state."""

    bytes_read = _summed("bytes_read")
    bytes_written = _summed("bytes_written")
    host_read_commands = _summed("host_read_commands")
    host_write_commands = _summed("host_write_commands")
    busy_seconds = _summed("busy_seconds")

    # Counters saved by persistence, in the order of the log page.
    COUNTERS = (
        "bytes_read",
        "bytes_written",
        "host_read_commands",
        "host_write_commands",
        "busy_seconds",
        "power_cycles",
        "power_on_seconds",
        "unsafe_shutdowns",
        "media_errors",
        "error_entries",
        "warning_temperature_seconds",
        "critical_temperature_seconds",
    )

    def __init__(self, subsystem: Subsystem, clock: Callable[[], float] = time.monotonic):
        self.subsystem = subsystem
        self.lock = threading.RLock()
        self.clock = clock
        self._queue_counters: tuple[IoCounters, ...] = ()  # replaced, never changed in place
        self._bytes_read = 0
        self._bytes_written = 0
        self._host_read_commands = 0
        self._host_write_commands = 0
        self._busy_seconds = 0.0
        self.power_cycles = 1
        self.unsafe_shutdowns = 0
        self.media_errors = 0
        # Error information log entries of earlier power cycles and removed
        # controllers; the live controllers' error_count is added to it.
        self.error_entries_base = 0
        # Identify Controller WCTEMP / CCTEMP, kelvins.
        self.warning_temperature = WARNING_TEMPERATURE
        self.critical_temperature = CRITICAL_TEMPERATURE
        self.spare_threshold = 10
        self.percentage_used = 0
        # Critical warnings that no simulated quantity drives (tests set them).
        self.forced_warnings = CriticalWarning(0)
        self._temperature = DEFAULT_TEMPERATURE
        self._sensor1: int | None = None  # None: follows the composite temperature
        self._available_spare = 100
        # Time accounting: power on time and time in the temperature bands.
        now = clock()
        self._power_on_base = 0.0
        self._power_on_since = now
        self._warning_seconds = 0.0
        self._critical_seconds = 0.0
        self._band_since = now
        # Critical warning bits already reported per controller (cntlid),
        # so an event is raised when a condition starts, not while it lasts.
        self._reported: dict[int, int] = {}
        # Called after a controller shut down (persistence saves the state).
        self.checkpoint_hooks: list[Callable[[], None]] = []
        self.last_shutdown: str | None = None

    # ------------------------------------------------------------------
    # counters fed by the command handlers

    def host_read(self, nbytes: int) -> None:
        """A read-like command (Read, Compare, Verify) moved ``nbytes`` of data."""
        with self.lock:
            self._bytes_read += nbytes
            self._host_read_commands += 1

    def host_write(self, nbytes: int) -> None:
        """A write-like command (Write, Write Zeroes, Write Uncorrectable, Copy)."""
        with self.lock:
            self._bytes_written += nbytes
            self._host_write_commands += 1

    def busy(self, seconds: float) -> None:
        """Time the controller spent with I/O outstanding."""
        with self.lock:
            self._busy_seconds += seconds

    def attach_counters(self, counters: IoCounters) -> None:
        """Count a fast-path queue's :class:`IoCounters` in the totals."""
        with self.lock:
            self._queue_counters = self._queue_counters + (counters,)

    def retire_counters(self, counters: IoCounters) -> None:
        """The queue is gone: its counts move to the subsystem's base."""
        with self.lock:
            if counters not in self._queue_counters:
                return
            self._queue_counters = tuple(c for c in self._queue_counters if c is not counters)
            for name in IoCounters.__slots__:
                setattr(self, "_" + name, getattr(self, "_" + name) + getattr(counters, name))

    def media_error(self) -> None:
        """An unrecovered data integrity error was reported."""
        with self.lock:
            self.media_errors += 1

    def shutdown(self, abrupt: bool) -> None:
        """A controller completed a shutdown (CC.SHN normal or abrupt).

        A shutdown notification of either kind makes the following loss of
        power a safe one (the Unsafe Shutdowns count is "incremented when a
        shutdown notification (CC.SHN) is not received prior to loss of
        power"): unsafe shutdowns are counted at the next power on, by
        persistence, when the previous run ended without an orderly close.
        Here the state is checkpointed so the counters survive."""
        with self.lock:
            self.last_shutdown = "abrupt" if abrupt else "normal"
        for hook in list(self.checkpoint_hooks):
            hook()

    # ------------------------------------------------------------------
    # simulated environment

    @property
    def temperature(self) -> int:
        """Composite Temperature, kelvins."""
        return self._temperature

    @temperature.setter
    def temperature(self, kelvin: int) -> None:
        self.set_temperature(kelvin)

    def set_temperature(self, kelvin: int, sensor: int | None = None) -> None:
        """Set the composite temperature (``sensor`` None) or temperature
        sensor 1 (``sensor=1``; ``kelvin=None`` makes it follow the composite
        temperature again) and raise the events a threshold crossing calls for."""
        if kelvin is not None and not 0 <= int(kelvin) <= 0xFFFF:
            raise ValueError(f"temperature {kelvin} K does not fit the 16-bit field")
        if sensor not in (None, 0, 1):
            raise ValueError(f"temperature sensor {sensor}: only sensor 1 is simulated")
        with self.lock:
            self._account_temperature()
            if sensor:
                self._sensor1 = None if kelvin is None else int(kelvin)
            else:
                self._temperature = int(kelvin)
        self.check()

    def sensor_temperature(self, sensor: int) -> int:
        """Temperature Sensor ``sensor`` (1-8) in kelvins; 0 = not implemented."""
        if sensor == 1:
            return self._temperature if self._sensor1 is None else self._sensor1
        return 0

    @property
    def available_spare(self) -> int:
        """Available Spare, percent."""
        return self._available_spare

    @available_spare.setter
    def available_spare(self, percent: int) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"available spare {percent}% is outside 0-100")
        with self.lock:
            self._available_spare = int(percent)
        self.check()

    def set_warning(self, warning: CriticalWarning, on: bool = True) -> None:
        """Force a critical warning that no simulated quantity drives
        (reliability degraded, read only, volatile backup failed)."""
        with self.lock:
            if on:
                self.forced_warnings |= warning
            else:
                self.forced_warnings &= ~warning
        self.check()

    # ------------------------------------------------------------------
    # time

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Use another clock (tests); time counted so far is kept."""
        with self.lock:
            self._account_temperature()
            self._power_on_base = self.power_on_seconds
            self.clock = clock
            now = clock()
            self._power_on_since = now
            self._band_since = now

    @property
    def power_on_seconds(self) -> float:
        """Seconds powered on, over the life of the device."""
        return self._power_on_base + max(0.0, self.clock() - self._power_on_since)

    @power_on_seconds.setter
    def power_on_seconds(self, seconds: float) -> None:
        with self.lock:
            self._power_on_base = float(seconds)
            self._power_on_since = self.clock()

    def _band(self) -> int:
        """0 below WCTEMP, 1 warning (WCTEMP <= T < CCTEMP), 2 critical (T >= CCTEMP)."""
        t = self._temperature
        if self.critical_temperature and t >= self.critical_temperature:
            return 2
        if self.warning_temperature and t >= self.warning_temperature:
            return 1
        return 0

    def _account_temperature(self) -> None:
        now = self.clock()
        elapsed = max(0.0, now - self._band_since)
        self._band_since = now
        band = self._band()
        if band == 1:
            self._warning_seconds += elapsed
        elif band == 2:
            self._critical_seconds += elapsed

    @property
    def warning_temperature_seconds(self) -> float:
        with self.lock:
            self._account_temperature()
            return self._warning_seconds

    @warning_temperature_seconds.setter
    def warning_temperature_seconds(self, seconds: float) -> None:
        with self.lock:
            self._account_temperature()
            self._warning_seconds = float(seconds)

    @property
    def critical_temperature_seconds(self) -> float:
        with self.lock:
            self._account_temperature()
            return self._critical_seconds

    @critical_temperature_seconds.setter
    def critical_temperature_seconds(self, seconds: float) -> None:
        with self.lock:
            self._account_temperature()
            self._critical_seconds = float(seconds)

    # ------------------------------------------------------------------
    # error log entries

    @property
    def error_entries(self) -> int:
        """Number of Error Information Log Entries: those of earlier power
        cycles plus every live controller's error count (each failed
        command makes one entry, see ``Controller._record_error``)."""
        total = self.error_entries_base
        for ctrl in list(self.subsystem.controllers.values()):
            total += ctrl.error_count
        return total

    @error_entries.setter
    def error_entries(self, count: int) -> None:
        """Restore the count of earlier power cycles."""
        live = sum(ctrl.error_count for ctrl in list(self.subsystem.controllers.values()))
        self.error_entries_base = max(0, int(count) - live)

    def controller_removed(self, ctrl: Controller) -> None:
        """Keep the error entries of a controller that goes away."""
        with self.lock:
            self.error_entries_base += ctrl.error_count
            self._reported.pop(ctrl.cntlid, None)

    # ------------------------------------------------------------------
    # thresholds, critical warnings, events

    def thresholds(self, ctrl: Controller | None, sensor: int) -> tuple[int, int]:
        """(over, under) temperature thresholds of ``sensor`` (0 composite,
        1-8 sensors) on ``ctrl``: the Temperature Threshold feature when the
        feature store has one, else the specification's defaults."""
        getter = getattr(getattr(ctrl, "features", None), "temperature_threshold", None)
        if callable(getter):
            try:
                return int(getter(sensor, False)), int(getter(sensor, True))
            except (LookupError, ValueError, TypeError, NvmeError):
                pass  # a feature store without this sensor: the defaults
        return (self.warning_temperature if sensor == 0 else 0xFFFF), 0

    def critical_warning(self, ctrl: Controller | None = None) -> CriticalWarning:
        """The Critical Warning field as ``ctrl`` reports it (thresholds are
        per controller; the other conditions are subsystem-wide)."""
        warning = CriticalWarning(self.forced_warnings)
        if self._available_spare < self.spare_threshold:
            warning |= CriticalWarning.SPARE
        readings = [(0, self._temperature), (1, self.sensor_temperature(1))]
        for sensor, kelvin in readings:
            if not kelvin:
                continue  # not reported
            over, under = self.thresholds(ctrl, sensor)
            if kelvin >= over or kelvin <= under:
                warning |= CriticalWarning.TEMPERATURE
                break
        return warning

    def check(self, ctrl: Controller | None = None) -> None:
        """Re-evaluate the critical warnings (after the temperature, the
        spare or a threshold changed) and post a SMART / Health Status event
        on each controller (or only ``ctrl``) for every condition that began.
        The Temperature Threshold feature calls this after Set Features."""
        from .controller import AsyncEventType

        controllers = [ctrl] if ctrl is not None else list(self.subsystem.controllers.values())
        for c in controllers:
            now = int(self.critical_warning(c))
            with self.lock:
                before = self._reported.get(c.cntlid, 0)
                self._reported[c.cntlid] = now
            began = now & ~before
            infos = []
            for bit, info in _EVENT_INFO.items():
                if began & bit and info not in infos:
                    infos.append(info)
            for info in infos:
                c.post_event(AsyncEventType.SMART, info, LogPageId.SMART)

    # ------------------------------------------------------------------
    # the log page

    def smart_log(self, ctrl: Controller | None = None) -> SmartLog:
        """The SMART / Health Information log page as ``ctrl`` reports it."""
        page = SmartLog()
        # Outside the lock: the thresholds come from the controller's features.
        page.critical_warning = int(self.critical_warning(ctrl))
        with self.lock:
            page.temperature = self._temperature
            page.avail_spare = self._available_spare
            page.spare_thresh = self.spare_threshold
            page.percent_used = min(255, self.percentage_used)
            page.data_units_read = min(COUNTER_MAX, data_units(self.bytes_read))
            page.data_units_written = min(COUNTER_MAX, data_units(self.bytes_written))
            page.host_reads = min(COUNTER_MAX, self.host_read_commands)
            page.host_writes = min(COUNTER_MAX, self.host_write_commands)
            page.ctrl_busy_time = min(COUNTER_MAX, int(self.busy_seconds // 60))
            page.power_cycles = min(COUNTER_MAX, self.power_cycles)
            page.power_on_hours = min(COUNTER_MAX, int(self.power_on_seconds // 3600))
            page.unsafe_shutdowns = min(COUNTER_MAX, self.unsafe_shutdowns)
            page.media_errors = min(COUNTER_MAX, self.media_errors)
            page.num_err_log_entries = min(COUNTER_MAX, self.error_entries)
            page.warning_temp_time = min(TIME_MAX, int(self.warning_temperature_seconds // 60))
            page.critical_comp_time = min(TIME_MAX, int(self.critical_temperature_seconds // 60))
            sensors = [self.sensor_temperature(i) for i in range(1, 9)]
        page.temp_sensor = sensors
        return page

    # ------------------------------------------------------------------
    # persistence

    def state(self) -> dict[str, Any]:
        """The counters that survive a power cycle (JSON-able)."""
        with self.lock:
            return {name: getattr(self, name) for name in self.COUNTERS}

    def restore(self, state: dict[str, Any]) -> None:
        """Set the counters from :meth:`state` (unknown keys are ignored,
        missing ones keep their value)."""
        with self.lock:
            for name in self.COUNTERS:
                if name in state:
                    setattr(self, name, state[name])

    def __repr__(self) -> str:
        return (
            f"<Health {self.temperature} K spare {self.available_spare}% "
            f"power cycles {self.power_cycles} unsafe {self.unsafe_shutdowns}>"
        )


@log_page(LogPageId.SMART)
def smart_log_page(ctrl: Controller, req) -> bytes:
    """Get Log Page 02h: controller-wide; NSID must be 0h or FFFFFFFFh."""
    nsid = req.sqe.nsid
    if nsid not in (0, NSID_ALL):
        raise NvmeError(GenericStatus.INVALID_FIELD, param=4, msg="SMART log is not kept per namespace")
    return bytes(ctrl.subsystem.health.smart_log(ctrl))
