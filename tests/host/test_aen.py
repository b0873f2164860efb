"""Asynchronous Event Configuration by the host (issue 12, item 7): the
host enables only what the controller supports, as Linux's
nvme_enable_aen -- the notices Identify Controller's OAES names (among
those the driver handles) and the SMART / Health critical warnings an I/O
controller defines -- so a controller that refuses every other bit (Linux
nvmet answers Invalid Field) accepts it; a refusal is one warning per
controller, not one per bring-up.

The device here refuses bits outside a mask, as nvmet's
nvmet_set_feat_async_event does (our target otherwise ignores them)."""

from __future__ import annotations

import logging

import pytest

from nvmestack.host.tcp import discover_log
from nvmestack.spec.features import FeatureId
from nvmestack.spec.identify import Oaes
from nvmestack.spec.log import CriticalWarning
from nvmestack.target import Subsystem
from nvmestack.target.features import FeatureStore, _invalid
from nvmestack.target.tcp import TcpTarget

#: The SMART / Health critical warnings of NVMe 1.0 on (bit 5, the
#: Persistent Memory Region, only where there is one).
SMART_1_0 = (CriticalWarning.SPARE | CriticalWarning.TEMPERATURE | CriticalWarning.RELIABILITY
             | CriticalWarning.READ_ONLY | CriticalWarning.VOLATILE_BACKUP)
AEC_FAILED = "failed to configure asynchronous events"


@pytest.fixture
def strict_aec(monkeypatch):
    """Make the device refuse Asynchronous Event Configuration bits outside
    ``accepted`` with Invalid Field (as Linux nvmet); returns the setter of
    ``accepted`` and the list of values the host asked for."""
    state = {"accepted": 0}
    asked: list[int] = []

    def set_async_event(self, req, cdw11, save, namespaces):
        asked.append(cdw11)
        if cdw11 & ~state["accepted"]:
            raise _invalid(f"asynchronous events {cdw11 & ~state['accepted']:#x} are not supported", param=44)
        self._store(FeatureId.ASYNC_EVENT, 0, cdw11, None, save)

    monkeypatch.setattr(FeatureStore, "_set_async_event", set_async_event)

    def accept(mask: int) -> list[int]:
        state["accepted"] = int(mask)
        return asked

    return accept


def _aec_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if AEC_FAILED in r.getMessage() and r.levelno >= logging.WARNING]


def _device_aec(ctrl) -> int:
    return ctrl.transport.function.controller.features.value(FeatureId.ASYNC_EVENT)


def test_aec_is_what_the_controller_supports(make_controller, strict_aec, caplog):
    """OAES of our device: namespace attribute and firmware activation
    notices; with the SMART critical warnings of NVMe 1.0 that is all it
    accepts, and the host asks for exactly that, once."""
    asked = strict_aec(Oaes.NS_ATTR | Oaes.FW_ACTIVATION | SMART_1_0)
    caplog.set_level(logging.INFO, logger="nvmestack.host")
    ctrl = make_controller()
    oaes = ctrl.identify.oaes
    assert oaes & (Oaes.NS_ATTR | Oaes.FW_ACTIVATION) == Oaes.NS_ATTR | Oaes.FW_ACTIVATION
    expected = Oaes.NS_ATTR | Oaes.FW_ACTIVATION | SMART_1_0
    assert asked == [expected]
    assert _device_aec(ctrl) == expected == ctrl.aec
    assert not _aec_warnings(caplog)


def test_smart_events_off_leaves_the_notices(make_controller, strict_aec, caplog):
    asked = strict_aec(Oaes.NS_ATTR | Oaes.FW_ACTIVATION | SMART_1_0)
    ctrl = make_controller(smart_events=False)
    assert asked == [Oaes.NS_ATTR | Oaes.FW_ACTIVATION]
    assert _device_aec(ctrl) == Oaes.NS_ATTR | Oaes.FW_ACTIVATION == ctrl.aec
    assert not _aec_warnings(caplog)


def test_refused_smart_warnings_fall_back_to_the_notices(make_controller, strict_aec, caplog):
    """A controller that reports no SMART events as such: the host keeps
    the notices OAES promised, without a warning, and does not ask again
    at the next bring-up."""
    asked = strict_aec(Oaes.NS_ATTR | Oaes.FW_ACTIVATION)
    ctrl = make_controller()
    assert asked[-1] == Oaes.NS_ATTR | Oaes.FW_ACTIVATION
    assert _device_aec(ctrl) == Oaes.NS_ATTR | Oaes.FW_ACTIVATION == ctrl.aec
    assert not _aec_warnings(caplog)
    del asked[:]
    assert ctrl.reset(timeout=20)
    assert asked == [Oaes.NS_ATTR | Oaes.FW_ACTIVATION]
    assert not _aec_warnings(caplog)


def test_refused_configuration_warns_once_per_controller(make_controller, strict_aec, caplog):
    """Nothing is accepted: one warning, however many times the controller
    is brought up (each reset configures the events again)."""
    strict_aec(0)
    ctrl = make_controller()
    assert ctrl.reset(timeout=20)
    assert ctrl.reset(timeout=20)
    assert len(_aec_warnings(caplog)) == 1
    assert ctrl.aec == 0


def test_discovery_controller_gets_no_smart_bits(strict_aec, caplog):
    """A discovery controller has no SMART / Health log: only the discovery
    log change notice its OAES names (Linux nvmet's discovery controller
    refuses anything else)."""
    asked = strict_aec(Oaes.DISCOVERY_LOG_CHANGE)
    subsystem = Subsystem("nqn.2026-11.io.nvmestack:aen", serial="AEN1", model="nvmestack aen test")
    target = TcpTarget([subsystem])
    port = int(target.listen("127.0.0.1", 0).trsvcid)
    target.start()
    try:
        discover_log("127.0.0.1", port)
    finally:
        target.stop()
        subsystem.close()
    assert asked == [Oaes.DISCOVERY_LOG_CHANGE]
    assert not _aec_warnings(caplog)
