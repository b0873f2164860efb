"""SMART / Health Information log (02h): counters, temperature, spare,
critical warnings and the SMART / health asynchronous events."""

import pytest

from nvmestack.spec.admin import AsyncEventRequest, GetLogPage, SetFeatures
from nvmestack.spec.features import FeatureId
from nvmestack.spec.log import (
    CriticalWarning,
    ErrorInformationEntry,
    LogPageId,
    SmartLog,
)
from nvmestack.spec.nvm import Read, Write
from nvmestack.spec.opcodes import AdminOpcode, NvmOpcode
from nvmestack.spec.registers import Reg, Shn
from nvmestack.spec.sqe import Command
from nvmestack.spec.status import GenericStatus, Status
from nvmestack.target.commands import ADMIN_COMMANDS, IO_COMMANDS, LOG_PAGES
from nvmestack.target.controller import AsyncEventType
from nvmestack.target.errors import NvmeError
from nvmestack.target.health import (
    CRITICAL_TEMPERATURE,
    DEFAULT_TEMPERATURE,
    WARNING_TEMPERATURE,
    SmartInfo,
    data_units,
)

from .conftest import enable


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def smart(ctrl, nsid=0xFFFFFFFF) -> SmartLog:
    """The SMART log as the builder registered for LID 02h makes it."""
    req = ctrl.new_request(GetLogPage(lid=LogPageId.SMART, nsid=nsid, numdl=127), 0)
    page = LOG_PAGES[LogPageId.SMART](ctrl, req)
    assert len(page) == SmartLog.SIZE
    return SmartLog.decode(page)


def enable_smart_events(ctrl, mask=0xFF):
    """Asynchronous Event Configuration: report SMART critical warnings."""
    if AdminOpcode.SET_FEATURES in ADMIN_COMMANDS:
        req = ctrl.submit(SetFeatures(fid=FeatureId.ASYNC_EVENT, cdw11=mask))
        if Status.of(req.cqe).ok:
            return
    ctrl.features.current[FeatureId.ASYNC_EVENT] = mask


def arm_aer(ctrl):
    """An outstanding Asynchronous Event Request."""
    req = ctrl.new_request(AsyncEventRequest(cid=0x700 + len(ctrl.aer_requests)), 0)
    ctrl.add_aer(req)
    return req


def test_defaults_field_by_field(ctrl, subsystem):
    log = smart(ctrl)
    assert log.critical_warning == 0
    assert log.temperature == DEFAULT_TEMPERATURE == 313
    assert log.avail_spare == 100 and log.spare_thresh == 10 and log.percent_used == 0
    assert log.endu_grp_crit_warn_sumry == 0
    assert log.data_units_read == log.data_units_written == 0
    assert log.host_reads == log.host_writes == 0
    assert log.ctrl_busy_time == 0
    assert log.power_cycles == 1
    assert log.power_on_hours == 0
    assert log.unsafe_shutdowns == 0
    assert log.media_errors == 0
    assert log.num_err_log_entries == 0
    assert log.warning_temp_time == log.critical_comp_time == 0
    assert list(log.temp_sensor) == [313, 0, 0, 0, 0, 0, 0, 0]
    # Reserved bytes are zero.
    raw = bytes(log)
    assert raw[7:32] == bytes(25) and raw[232:] == bytes(280)
    health = subsystem.health
    assert health.warning_temperature == WARNING_TEMPERATURE == 343
    assert health.critical_temperature == CRITICAL_TEMPERATURE == 353


def test_data_units_are_thousands_of_512_byte_units_rounded_up():
    assert data_units(0) == 0
    assert data_units(1) == 1
    assert data_units(512) == 1
    assert data_units(512 * 1000) == 1
    assert data_units(512 * 1000 + 1) == 2
    assert data_units(4096 * 1000) == 8


def test_counters_reach_the_log(ctrl, subsystem):
    health = subsystem.health
    health.host_read(512 * 1000)
    health.host_read(512)
    health.host_write(4096)
    health.busy(119.0)
    health.media_error()
    log = smart(ctrl)
    assert log.data_units_read == 2  # 1001 units of 512 bytes
    assert log.data_units_written == 1
    assert log.host_reads == 2 and log.host_writes == 1
    assert log.ctrl_busy_time == 1  # 119 s: one whole minute
    assert log.media_errors == 1
    health.busy(1.0)
    assert smart(ctrl).ctrl_busy_time == 2


def test_power_on_hours_follow_the_clock(ctrl, subsystem):
    clock = FakeClock()
    subsystem.health.set_clock(clock)
    clock.now += 2 * 3600 - 1
    assert smart(ctrl).power_on_hours == 1
    clock.now += 1
    assert smart(ctrl).power_on_hours == 2


def test_nsid_other_than_zero_or_all_is_invalid_field(ctrl):
    assert smart(ctrl, nsid=0).temperature == 313
    assert smart(ctrl, nsid=0xFFFFFFFF).temperature == 313
    req = ctrl.new_request(GetLogPage(lid=LogPageId.SMART, nsid=1, numdl=127), 0)
    with pytest.raises(NvmeError) as exc:
        LOG_PAGES[LogPageId.SMART](ctrl, req)
    assert exc.value.status.sc == GenericStatus.INVALID_FIELD and exc.value.status.dnr
    assert exc.value.param == 4


def test_temperature_over_threshold_sets_warning_and_raises_event(ctrl, subsystem):
    enable_smart_events(ctrl)
    aer = arm_aer(ctrl)
    subsystem.health.temperature = WARNING_TEMPERATURE - 1
    assert not aer.done and smart(ctrl).critical_warning == 0
    subsystem.health.temperature = WARNING_TEMPERATURE  # >= the over threshold
    assert aer.done
    dw0 = aer.cqe.dw0
    assert dw0 & 0x7 == AsyncEventType.SMART
    assert (dw0 >> 8) & 0xFF == SmartInfo.TEMPERATURE_THRESHOLD == 0x01
    assert (dw0 >> 16) & 0xFF == LogPageId.SMART
    log = smart(ctrl)
    assert log.critical_warning == CriticalWarning.TEMPERATURE
    assert log.temperature == WARNING_TEMPERATURE and log.temp_sensor[0] == WARNING_TEMPERATURE
    # Staying above raises nothing new; going back clears the bit.
    ctrl.log_page_read(LogPageId.SMART, retain=False)
    second = arm_aer(ctrl)
    subsystem.health.temperature = WARNING_TEMPERATURE + 5
    assert not second.done
    subsystem.health.temperature = DEFAULT_TEMPERATURE
    assert smart(ctrl).critical_warning == 0 and not second.done
    # Crossing again is a new event.
    subsystem.health.temperature = 400
    assert second.done and (second.cqe.dw0 >> 8) & 0xFF == 0x01


def test_temperature_event_on_every_controller(subsystem):
    controllers = [enable(subsystem.add_controller()) for _ in range(2)]
    for c in controllers:
        enable_smart_events(c)
    subsystem.health.temperature = 360
    for c in controllers:
        assert (AsyncEventType.SMART, SmartInfo.TEMPERATURE_THRESHOLD, LogPageId.SMART) in c.pending_events
        assert smart(c).cw_temperature


def test_smart_events_disabled_by_async_event_configuration(ctrl, subsystem):
    enable_smart_events(ctrl, mask=0)
    aer = arm_aer(ctrl)
    subsystem.health.temperature = 360
    assert not aer.done
    assert smart(ctrl).cw_temperature  # the warning is there all the same


def test_spare_below_threshold(ctrl, subsystem):
    enable_smart_events(ctrl)
    aer = arm_aer(ctrl)
    subsystem.health.available_spare = 10  # equal: not below
    assert not aer.done and smart(ctrl).critical_warning == 0
    subsystem.health.available_spare = 9
    assert aer.done and (aer.cqe.dw0 >> 8) & 0xFF == SmartInfo.SPARE_BELOW_THRESHOLD == 0x02
    log = smart(ctrl)
    assert log.avail_spare == 9 and log.critical_warning == CriticalWarning.SPARE
    with pytest.raises(ValueError):
        subsystem.health.available_spare = 101


def test_temperature_sensor_one_and_its_default_threshold(ctrl, subsystem):
    health = subsystem.health
    health.set_temperature(330, sensor=1)
    log = smart(ctrl)
    assert log.temperature == 313 and log.temp_sensor[0] == 330
    assert log.critical_warning == 0  # a sensor's default over threshold is FFFFh
    health.set_temperature(None, sensor=1)
    assert smart(ctrl).temp_sensor[0] == 313


def test_warning_and_critical_temperature_time(ctrl, subsystem):
    clock = FakeClock()
    health = subsystem.health
    health.set_clock(clock)
    health.temperature = WARNING_TEMPERATURE  # WCTEMP <= T < CCTEMP
    clock.now += 150
    health.temperature = CRITICAL_TEMPERATURE  # T >= CCTEMP
    clock.now += 61
    health.temperature = DEFAULT_TEMPERATURE
    clock.now += 600
    log = smart(ctrl)
    assert log.warning_temp_time == 2
    assert log.critical_comp_time == 1
    # Time keeps counting while the temperature stays in a band.
    health.temperature = 350
    clock.now += 60
    assert smart(ctrl).warning_temp_time == 3


def test_threshold_feature_drives_the_warning(ctrl, subsystem):
    """With the Temperature Threshold feature (04h): an under threshold
    above the current temperature is a threshold condition; Set Features
    re-checks the warning and raises the event."""
    if AdminOpcode.SET_FEATURES not in ADMIN_COMMANDS or not hasattr(ctrl.features, "temperature_threshold"):
        pytest.skip("Set Features / Temperature Threshold not implemented")
    enable_smart_events(ctrl)
    aer = arm_aer(ctrl)
    # TMPTH = 320 K, TMPSEL = 0 (composite), THSEL = 1 (under).
    req = ctrl.submit(SetFeatures(fid=FeatureId.TEMP_THRESH, cdw11=320 | (1 << 20)))
    assert Status.of(req.cqe).ok
    assert smart(ctrl).cw_temperature
    assert aer.done and (aer.cqe.dw0 >> 8) & 0xFF == 0x01
    # An over threshold lowered below the temperature.
    req = ctrl.submit(SetFeatures(fid=FeatureId.TEMP_THRESH, cdw11=0 | (1 << 20)))  # under back to 0 K
    assert Status.of(req.cqe).ok
    assert not smart(ctrl).cw_temperature
    req = ctrl.submit(SetFeatures(fid=FeatureId.TEMP_THRESH, cdw11=300))
    assert Status.of(req.cqe).ok
    assert smart(ctrl).cw_temperature
    ctrl.submit(SetFeatures(fid=FeatureId.TEMP_THRESH, cdw11=WARNING_TEMPERATURE))
    assert not smart(ctrl).cw_temperature


def test_error_entries_match_the_error_log(subsystem):
    a = enable(subsystem.add_controller())
    b = enable(subsystem.add_controller())
    a.submit(Command(opcode=0x3E, cid=1))
    a.submit(Command(opcode=0x3D, cid=2))
    b.submit(Command(opcode=0x3E, cid=3))
    assert ErrorInformationEntry.decode(a.error_log[0]).error_count == 2
    assert smart(a).num_err_log_entries == 3 == a.error_count + b.error_count
    # A controller that goes away keeps its entries in the count.
    subsystem.remove_controller(b)
    assert smart(a).num_err_log_entries == 3


def test_forced_warnings_raise_reliability_event(ctrl, subsystem):
    enable_smart_events(ctrl)
    aer = arm_aer(ctrl)
    subsystem.health.set_warning(CriticalWarning.READ_ONLY)
    assert smart(ctrl).cw_read_only
    assert aer.done and (aer.cqe.dw0 >> 8) & 0xFF == SmartInfo.RELIABILITY
    subsystem.health.set_warning(CriticalWarning.READ_ONLY, False)
    assert smart(ctrl).critical_warning == 0


def test_shutdown_is_not_an_unsafe_shutdown(ctrl, subsystem):
    """CC.SHN (normal or abrupt) is a shutdown notification; unsafe
    shutdowns are counted at power on (persistence) when none came."""
    calls = []
    subsystem.health.checkpoint_hooks.append(lambda: calls.append(1))
    ctrl.set_property(Reg.CC, 4, ctrl.regs.cc.value | (Shn.ABRUPT << 14))
    assert smart(ctrl).unsafe_shutdowns == 0
    assert subsystem.health.last_shutdown == "abrupt" and calls == [1]


def test_state_round_trip(subsystem, ctrl):
    health = subsystem.health
    health.host_read(4096)
    health.host_write(8192)
    health.media_error()
    health.unsafe_shutdowns = 3
    health.power_on_seconds = 7200
    state = health.state()
    from nvmestack.target import Subsystem

    other = Subsystem(serial="X")
    other.health.restore(state)
    assert other.health.state()["bytes_written"] == 8192
    assert other.health.unsafe_shutdowns == 3 and other.health.media_errors == 1
    assert other.health.power_on_seconds >= 7200
    assert other.health.error_entries == 0
    other.health.restore({"error_entries": 5})
    assert other.health.error_entries == 5


def test_smart_log_through_get_log_page(ctrl, subsystem):
    if AdminOpcode.GET_LOG_PAGE not in ADMIN_COMMANDS:
        pytest.skip("Get Log Page not implemented yet")
    subsystem.health.host_write(512 * 1000 * 3)
    req = ctrl.submit(GetLogPage(lid=LogPageId.SMART, nsid=0xFFFFFFFF, numdl=127))
    assert Status.of(req.cqe).ok
    log = SmartLog.decode(bytes(req.data[0]))
    assert log.data_units_written == 3 and log.temperature == 313
    req = ctrl.submit(GetLogPage(lid=LogPageId.SMART, nsid=1, numdl=127))
    assert Status.of(req.cqe).sc == GenericStatus.INVALID_FIELD


def test_io_commands_feed_the_counters(ctrl, subsystem):
    if NvmOpcode.READ not in IO_COMMANDS or NvmOpcode.WRITE not in IO_COMMANDS:
        pytest.skip("Read/Write not implemented yet")
    for i in range(3):
        req = ctrl.submit(Write(nsid=1, slba=i * 8, nlb=7, cid=i), sqid=1, data=bytes(4096))
        assert Status.of(req.cqe).ok
    req = ctrl.submit(Read(nsid=1, slba=0, nlb=0, cid=9), sqid=1)
    assert Status.of(req.cqe).ok
    log = smart(ctrl)
    assert log.host_writes == 3 and log.host_reads == 1
    assert log.data_units_written == 1 and log.data_units_read == 1
