"""Set Features / Get Features (NVMe 2.0 base spec 5.27, 5.15): every
supported feature round trips with each Select value (current, default,
saved, supported capabilities), Save, and every named error status."""

import time

import pytest

from nvmestack.spec.admin import (
    AsyncEventRequest,
    FeatureSelect,
    GetFeatures,
    SetFeatures,
)
from nvmestack.spec.features import (
    ApstData,
    FeatureCapabilities,
    FeatureId,
    LbaRangeTypeData,
    NumberOfQueues,
    TemperatureThreshold,
    TimestampData,
    TimestampOrigin,
)
from nvmestack.spec.log import LogPageId
from nvmestack.spec.registers import Reg
from nvmestack.spec.status import CommandSpecificStatus, GenericStatus, Status
from nvmestack.target import Namespace
from nvmestack.target.controller import AsyncEventType
from nvmestack.target.features import FEATURE_INFO, SavedFeatures

from .conftest import enable

NSID_ALL = 0xFFFFFFFF
F = FeatureId


def set_feature(ctrl, fid, cdw11=0, data=None, sv=False, nsid=0):
    req = ctrl.submit(SetFeatures(fid=fid, cdw11=cdw11, sv=sv, nsid=nsid), data=data)
    return Status.of(req.cqe), req.cqe.dw0


def get_feature(ctrl, fid, sel=0, cdw11=0, nsid=0):
    req = ctrl.submit(GetFeatures(fid=fid, sel=sel, cdw11=cdw11, nsid=nsid))
    return Status.of(req.cqe), req.cqe.dw0, (bytes(req.data[0]) if req.data else b"")


def set_ok(ctrl, fid, cdw11=0, **kw):
    st, dw0 = set_feature(ctrl, fid, cdw11, **kw)
    assert st.ok, st
    return dw0


def get_ok(ctrl, fid, sel=0, cdw11=0, nsid=0):
    st, dw0, data = get_feature(ctrl, fid, sel, cdw11, nsid)
    assert st.ok, st
    return dw0, data


def expect(st, code, dnr=True):
    assert (st.sct, st.sc, st.dnr) == (code.sct, code, dnr), st


def reset(ctrl):
    """Controller Level Reset (CC.EN 1 -> 0 -> 1)."""
    ctrl.set_property(Reg.CC, 4, 0)
    enable(ctrl)


# ---------------------------------------------------------------- capabilities and selects


@pytest.mark.parametrize("fid", sorted(FEATURE_INFO))
def test_supported_capabilities(ctrl, fid):
    info = FEATURE_INFO[fid]
    nsid = 1 if info.ns_specific else 0
    dw0, data = get_ok(ctrl, fid, sel=FeatureSelect.SUPPORTED, nsid=nsid)
    caps = FeatureCapabilities.from_dword(dw0)
    assert (caps.saveable, caps.ns_specific, caps.changeable) == (info.saveable, info.ns_specific, info.changeable)
    assert data == b""  # capabilities come in dword 0 only


def test_capabilities_of_some_features(ctrl):
    assert get_ok(ctrl, F.ARBITRATION, sel=3)[0] == 0b101  # saveable, changeable
    assert get_ok(ctrl, F.ERR_RECOVERY, sel=3, nsid=1)[0] == 0b111
    assert get_ok(ctrl, F.NUM_QUEUES, sel=3)[0] == 0b100
    assert get_ok(ctrl, F.LBA_RANGE, sel=3, nsid=1)[0] == 0b010


def test_current_default_saved_round_trip(ctrl):
    assert [get_ok(ctrl, F.ARBITRATION, sel)[0] for sel in (0, 1, 2)] == [7, 7, 7]
    set_ok(ctrl, F.ARBITRATION, 0x03020103)
    assert [get_ok(ctrl, F.ARBITRATION, sel)[0] for sel in (0, 1, 2)] == [0x03020103, 7, 7]
    set_ok(ctrl, F.ARBITRATION, 0x04030202, sv=True)
    assert [get_ok(ctrl, F.ARBITRATION, sel)[0] for sel in (0, 1, 2)] == [0x04030202, 7, 0x04030202]
    set_ok(ctrl, F.ARBITRATION, 0x01)
    reset(ctrl)  # the current value returns to the saved one
    assert get_ok(ctrl, F.ARBITRATION)[0] == 0x04030202


def test_reset_without_saved_value_returns_to_default(ctrl):
    set_ok(ctrl, F.WRITE_ATOMIC, 1)
    assert get_ok(ctrl, F.WRITE_ATOMIC)[0] == 1
    reset(ctrl)
    assert get_ok(ctrl, F.WRITE_ATOMIC)[0] == 0


def test_saved_values_are_shared_by_the_subsystem(subsystem, ctrl):
    set_ok(ctrl, F.IRQ_COALESCE, 0x0A05, sv=True)
    later = enable(subsystem.add_controller())
    assert get_ok(later, F.IRQ_COALESCE)[0] == 0x0A05
    state = subsystem.saved_features.saved_state()
    assert {"fid": F.IRQ_COALESCE, "sub": 0, "dword": 0x0A05, "data": ""} in state
    other = SavedFeatures()
    other.restore_saved(state + [{"fid": "junk"}, {"fid": F.TIMESTAMP, "dword": 1}])
    assert other.saved_state() == state  # junk and not-saveable entries skipped


def test_save_tells_the_persistence_code(subsystem, ctrl):
    calls = []
    subsystem.change_hooks.append(lambda: calls.append(1))
    set_ok(ctrl, F.WRITE_ATOMIC, 1)
    assert calls == []
    set_ok(ctrl, F.WRITE_ATOMIC, 1, sv=True)
    assert calls == [1]


def test_reserved_select_is_invalid_field(ctrl):
    for sel in (4, 7):
        st, _, _ = get_feature(ctrl, F.ARBITRATION, sel=sel)
        expect(st, GenericStatus.INVALID_FIELD)


@pytest.mark.parametrize("fid", [0x00, F.HOST_MEM_BUF, F.HCTM, F.SW_PROGRESS, F.RESV_MASK, 0x7C, 0xC0, 0xFF])
def test_unsupported_feature_is_invalid_field(ctrl, fid):
    expect(set_feature(ctrl, fid, 1)[0], GenericStatus.INVALID_FIELD)
    expect(get_feature(ctrl, fid)[0], GenericStatus.INVALID_FIELD)


@pytest.mark.parametrize("fid", [F.NUM_QUEUES, F.TIMESTAMP, F.KATO, F.HOST_ID, F.IRQ_CONFIG])
def test_save_of_a_feature_without_saved_value(ctrl, fid):
    data = bytes(8) if fid in (F.TIMESTAMP, F.HOST_ID) else None
    st, _ = set_feature(ctrl, fid, 0, data=data, sv=True)
    expect(st, CommandSpecificStatus.FEATURE_ID_NOT_SAVEABLE)


def test_lba_range_type_is_read_only(ctrl, ns):
    dw0, data = get_ok(ctrl, F.LBA_RANGE, nsid=1)
    assert dw0 == 0  # one range (0's based)
    entry = LbaRangeTypeData.decode(data).entry[0]
    assert (entry.type, entry.overwrite, entry.slba, entry.nlb) == (0, True, 0, ns.nblocks - 1)
    st, _ = set_feature(ctrl, F.LBA_RANGE, 0, data=bytes(4096), nsid=1)
    expect(st, CommandSpecificStatus.FEATURE_NOT_CHANGEABLE)


# ---------------------------------------------------------------- namespace scope


def test_namespace_specific_feature(subsystem, ctrl):
    subsystem.add_namespace(Namespace(2, 16))
    set_ok(ctrl, F.ERR_RECOVERY, 0x0005, nsid=1)
    assert get_ok(ctrl, F.ERR_RECOVERY, nsid=1)[0] == 5
    assert get_ok(ctrl, F.ERR_RECOVERY, nsid=2)[0] == 0
    set_ok(ctrl, F.ERR_RECOVERY, 0x0009, nsid=NSID_ALL)
    assert get_ok(ctrl, F.ERR_RECOVERY, nsid=1)[0] == get_ok(ctrl, F.ERR_RECOVERY, nsid=2)[0] == 9
    assert ctrl.features.value(F.ERR_RECOVERY, 2) == 9


def test_namespace_specific_feature_nsid_errors(subsystem, ctrl):
    subsystem.add_namespace(Namespace(2, 16), attach=False)
    for nsid in (0, NSID_ALL, subsystem.max_namespaces + 1):
        expect(get_feature(ctrl, F.ERR_RECOVERY, nsid=nsid)[0], GenericStatus.INVALID_NAMESPACE_OR_FORMAT)
    expect(get_feature(ctrl, F.ERR_RECOVERY, nsid=2)[0], GenericStatus.INVALID_FIELD)  # inactive
    expect(set_feature(ctrl, F.ERR_RECOVERY, 1, nsid=0)[0], GenericStatus.INVALID_NAMESPACE_OR_FORMAT)
    expect(set_feature(ctrl, F.ERR_RECOVERY, 1, nsid=2)[0], GenericStatus.INVALID_FIELD)


def test_dulbe_needs_namespace_support(ctrl):
    st, _ = set_feature(ctrl, F.ERR_RECOVERY, 1 << 16, nsid=1)
    expect(st, GenericStatus.INVALID_FIELD)
    assert get_ok(ctrl, F.ERR_RECOVERY, nsid=1)[0] == 0


def test_controller_feature_with_a_namespace(subsystem, ctrl):
    expect(set_feature(ctrl, F.ARBITRATION, 1, nsid=1)[0], CommandSpecificStatus.FEATURE_NOT_NAMESPACE_SPECIFIC)
    expect(set_feature(ctrl, F.ARBITRATION, 1, nsid=subsystem.max_namespaces + 1)[0],
           GenericStatus.INVALID_NAMESPACE_OR_FORMAT)
    set_ok(ctrl, F.ARBITRATION, 1, nsid=NSID_ALL)
    assert get_ok(ctrl, F.ARBITRATION, nsid=1)[0] == 1  # Get ignores NSID here


# ---------------------------------------------------------------- the features


def test_power_management(ctrl):
    set_ok(ctrl, F.POWER_MGMT, 0x20)  # PS 0, workload hint 1
    assert get_ok(ctrl, F.POWER_MGMT)[0] == 0x20
    expect(set_feature(ctrl, F.POWER_MGMT, 1)[0], GenericStatus.INVALID_FIELD)  # PS 1 does not exist
    expect(set_feature(ctrl, F.POWER_MGMT, 3 << 5)[0], GenericStatus.INVALID_FIELD)  # reserved hint
    assert get_ok(ctrl, F.POWER_MGMT)[0] == 0x20


def threshold(tmpth=0, tmpsel=0, thsel=0):
    return TemperatureThreshold(tmpth=tmpth, tmpsel=tmpsel, thsel=thsel).dword


def test_temperature_threshold_defaults_and_round_trip(subsystem, ctrl):
    wctemp = subsystem.health.warning_temperature
    assert get_ok(ctrl, F.TEMP_THRESH, cdw11=threshold())[0] == threshold(wctemp)
    assert get_ok(ctrl, F.TEMP_THRESH, cdw11=threshold(thsel=1))[0] == threshold(0, 0, 1)
    assert get_ok(ctrl, F.TEMP_THRESH, cdw11=threshold(tmpsel=1))[0] == threshold(0xFFFF, 1)
    set_ok(ctrl, F.TEMP_THRESH, threshold(360))
    set_ok(ctrl, F.TEMP_THRESH, threshold(250, thsel=1))
    assert get_ok(ctrl, F.TEMP_THRESH, cdw11=threshold())[0] == threshold(360)
    assert get_ok(ctrl, F.TEMP_THRESH, sel=1, cdw11=threshold())[0] == threshold(wctemp)
    assert ctrl.features.temperature_threshold(0, False) == 360
    assert ctrl.features.temperature_threshold(0, True) == 250
    assert ctrl.features.temperature_threshold(1, False) == 0xFFFF


def test_temperature_threshold_for_every_sensor(ctrl):
    set_ok(ctrl, F.TEMP_THRESH, threshold(400, tmpsel=0xF))
    for sensor in ctrl.features.implemented_sensors():
        assert ctrl.features.temperature_threshold(sensor, False) == 400
    assert ctrl.features.implemented_sensors()[0] == 0


def test_temperature_threshold_errors(ctrl):
    for cdw11 in (threshold(300, thsel=2), threshold(300, tmpsel=9), threshold(300, tmpsel=8)):
        expect(set_feature(ctrl, F.TEMP_THRESH, cdw11)[0], GenericStatus.INVALID_FIELD)
    expect(get_feature(ctrl, F.TEMP_THRESH, cdw11=threshold(tmpsel=0xF))[0], GenericStatus.INVALID_FIELD)
    expect(get_feature(ctrl, F.TEMP_THRESH, cdw11=threshold(thsel=3))[0], GenericStatus.INVALID_FIELD)


def test_crossing_a_threshold_raises_a_smart_event(subsystem, ctrl):
    set_ok(ctrl, F.ASYNC_EVENT, 0x02)  # temperature critical warning events
    req = ctrl.submit(AsyncEventRequest(cid=0x99))
    assert not req.done
    set_ok(ctrl, F.TEMP_THRESH, threshold(subsystem.health.temperature - 1))
    assert req.done
    assert req.cqe.dw0 == AsyncEventType.SMART | 0x01 << 8 | LogPageId.SMART << 16


def test_volatile_write_cache(ctrl, ns, monkeypatch):
    flushed = []
    monkeypatch.setattr(ns, "flush", lambda: flushed.append(1))
    assert get_ok(ctrl, F.VOLATILE_WC)[0] == 1  # enabled by default
    assert ctrl.features.value(F.VOLATILE_WC) & 1
    set_ok(ctrl, F.VOLATILE_WC, 0)
    assert ctrl.features.value(F.VOLATILE_WC) == 0 and flushed == [1]
    set_ok(ctrl, F.VOLATILE_WC, 0)
    assert flushed == [1]  # nothing cached any more
    set_ok(ctrl, F.VOLATILE_WC, 1, sv=True)
    assert get_ok(ctrl, F.VOLATILE_WC, sel=2)[0] == 1


def test_number_of_queues(ctrl):
    dw0 = set_ok(ctrl, F.NUM_QUEUES, NumberOfQueues.for_counts(8, 4).dword)
    nq = NumberOfQueues.from_dword(dw0)
    assert (nq.sq_count, nq.cq_count) == (8, 4)
    assert ctrl.queues_granted == (7, 3)
    assert get_ok(ctrl, F.NUM_QUEUES)[0] == dw0
    dw0 = set_ok(ctrl, F.NUM_QUEUES, NumberOfQueues.for_counts(1000, 65535).dword)
    assert NumberOfQueues.from_dword(dw0).sq_count == 64 == NumberOfQueues.from_dword(dw0).cq_count
    assert get_ok(ctrl, F.NUM_QUEUES, sel=1)[0] == 63 | 63 << 16
    reset(ctrl)
    assert ctrl.queues_granted is None
    assert get_ok(ctrl, F.NUM_QUEUES)[0] == 63 | 63 << 16


@pytest.mark.parametrize("cdw11", [0x0000FFFF, 0xFFFF0000, 0xFFFFFFFF])
def test_number_of_queues_ffffh_is_invalid(ctrl, cdw11):
    expect(set_feature(ctrl, F.NUM_QUEUES, cdw11)[0], GenericStatus.INVALID_FIELD)
    assert ctrl.queues_granted is None


def test_number_of_queues_after_queues_exist(ctrl):
    ctrl.io_cqs[1] = {"size": 16}
    expect(set_feature(ctrl, F.NUM_QUEUES, 0)[0], GenericStatus.COMMAND_SEQUENCE_ERROR)


def test_interrupt_coalescing(ctrl):
    set_ok(ctrl, F.IRQ_COALESCE, 0x0A04)
    assert get_ok(ctrl, F.IRQ_COALESCE)[0] == 0x0A04


def test_interrupt_vector_configuration(subsystem):
    class Ops:
        max_vectors = 4

    ctrl = enable(subsystem.add_controller(queue_ops=Ops()))
    assert get_ok(ctrl, F.IRQ_CONFIG, cdw11=0)[0] == 1 << 16  # the admin vector is never coalesced
    assert get_ok(ctrl, F.IRQ_CONFIG, cdw11=3)[0] == 3
    set_ok(ctrl, F.IRQ_CONFIG, 3 | 1 << 16)
    assert get_ok(ctrl, F.IRQ_CONFIG, cdw11=3)[0] == 3 | 1 << 16
    assert get_ok(ctrl, F.IRQ_CONFIG, cdw11=2)[0] == 2
    expect(set_feature(ctrl, F.IRQ_CONFIG, 4)[0], GenericStatus.INVALID_FIELD)
    expect(get_feature(ctrl, F.IRQ_CONFIG, cdw11=4)[0], GenericStatus.INVALID_FIELD)


def test_pcie_only_features_on_fabrics(subsystem):
    ctrl = enable(subsystem.add_controller(fabrics=True))
    for fid in (F.IRQ_COALESCE, F.IRQ_CONFIG):
        expect(get_feature(ctrl, fid)[0], GenericStatus.INVALID_FIELD)
        expect(set_feature(ctrl, fid, 0)[0], GenericStatus.INVALID_FIELD)


def test_write_atomicity(ctrl):
    set_ok(ctrl, F.WRITE_ATOMIC, 1)
    assert get_ok(ctrl, F.WRITE_ATOMIC)[0] == 1


def test_async_event_configuration(subsystem, ctrl):
    set_ok(ctrl, F.ASYNC_EVENT, 0xFFFFFFFF)
    assert get_ok(ctrl, F.ASYNC_EVENT)[0] == 0x33F  # only the events this controller reports
    set_ok(ctrl, F.ASYNC_EVENT, 0)
    req = ctrl.submit(AsyncEventRequest(cid=1))
    subsystem.add_namespace(Namespace(2, 16))
    assert not req.done  # namespace attribute notices disabled
    set_ok(ctrl, F.ASYNC_EVENT, 1 << 8)
    subsystem.add_namespace(Namespace(3, 16))
    assert req.done and req.cqe.dw0 & 0x7 == AsyncEventType.NOTICE


def test_event_enabled_by_smart_event_information(ctrl):
    features = ctrl.features
    set_ok(ctrl, F.ASYNC_EVENT, 0x01)  # available spare only
    assert features.event_enabled(AsyncEventType.SMART, 0x02)
    assert not features.event_enabled(AsyncEventType.SMART, 0x01)
    set_ok(ctrl, F.ASYNC_EVENT, 0x04)  # reliability
    assert features.event_enabled(AsyncEventType.SMART, 0x00)
    assert features.event_enabled(AsyncEventType.ERROR, 0x00)  # error events are always reported


def test_autonomous_power_state_transition(ctrl):
    table = ApstData()
    table.entry[0].itpt = 100
    dw0_set = set_ok(ctrl, F.AUTO_PST, 1, data=bytes(table))
    assert dw0_set == 0
    dw0, data = get_ok(ctrl, F.AUTO_PST)
    assert dw0 == 1 and data == bytes(table)
    assert get_ok(ctrl, F.AUTO_PST, sel=1) == (0, bytes(256))
    table.entry[0].itps = 1  # no such power state
    expect(set_feature(ctrl, F.AUTO_PST, 1, data=bytes(table))[0], GenericStatus.INVALID_FIELD)


def test_timestamp(ctrl):
    start = TimestampData.decode(get_ok(ctrl, F.TIMESTAMP)[1])
    assert start.origin == TimestampOrigin.RESET and start.timestamp < 60_000
    now_ms = int(time.time() * 1000)
    set_ok(ctrl, F.TIMESTAMP, data=bytes(TimestampData(timestamp=now_ms)))
    time.sleep(0.02)
    ts = TimestampData.decode(get_ok(ctrl, F.TIMESTAMP)[1])
    assert ts.origin == TimestampOrigin.SET_FEATURES and not ts.synch
    assert now_ms + 15 <= ts.timestamp < now_ms + 10_000  # it advances from the set value
    assert get_ok(ctrl, F.TIMESTAMP, sel=1)[1] == bytes(8)
    reset(ctrl)
    after = TimestampData.decode(get_ok(ctrl, F.TIMESTAMP)[1])
    assert after.origin == TimestampOrigin.RESET and after.timestamp < 60_000


def test_keep_alive_timer(ctrl):
    set_ok(ctrl, F.KATO, 5000)
    assert ctrl.kato == 5000 and not ctrl.keep_alive_expired()
    assert get_ok(ctrl, F.KATO)[0] == 5000
    assert get_ok(ctrl, F.KATO, sel=1)[0] == 0
    reset(ctrl)
    assert ctrl.kato == 0


def test_host_identifier_64_and_128_bit(subsystem, ctrl):
    set_ok(ctrl, F.HOST_ID, 0, data=b"HOSTID64")
    assert get_ok(ctrl, F.HOST_ID, cdw11=0)[1] == b"HOSTID64"
    assert ctrl.hostid == b"HOSTID64"
    expect(get_feature(ctrl, F.HOST_ID, cdw11=1)[0], GenericStatus.INVALID_FIELD)  # not 128-bit
    set_ok(ctrl, F.HOST_ID, 1, data=b"H" * 16)
    assert get_ok(ctrl, F.HOST_ID, cdw11=1) == (1, b"H" * 16)
    reset(ctrl)
    assert get_ok(ctrl, F.HOST_ID, cdw11=1)[1] == bytes(16)


def test_host_identifier_inconsistent_format(subsystem, ctrl):
    other = enable(subsystem.add_controller())
    set_ok(ctrl, F.HOST_ID, 0, data=b"12345678")
    st, _ = set_feature(other, F.HOST_ID, 1, data=b"x" * 16)
    expect(st, GenericStatus.HOST_ID_INCONSISTENT_FORMAT)
    set_ok(other, F.HOST_ID, 0, data=b"87654321")


def test_host_identifier_after_io_queues(ctrl):
    ctrl.io_sqs[1] = {"cqid": 1}
    expect(set_feature(ctrl, F.HOST_ID, 0, data=b"12345678")[0], GenericStatus.COMMAND_SEQUENCE_ERROR)


def test_host_identifier_on_fabrics(subsystem):
    hostid = bytes(range(16))
    ctrl = enable(subsystem.add_controller(fabrics=True, hostid=hostid))
    expect(set_feature(ctrl, F.HOST_ID, 1, data=bytes(16))[0], GenericStatus.COMMAND_SEQUENCE_ERROR)
    assert get_ok(ctrl, F.HOST_ID, cdw11=1)[1] == hostid
    expect(get_feature(ctrl, F.HOST_ID, cdw11=0)[0], GenericStatus.INVALID_FIELD)
    reset(ctrl)
    assert ctrl.hostid == hostid  # Connect's, not a feature's


def test_features_of_two_controllers_are_separate(subsystem, ctrl):
    other = enable(subsystem.add_controller())
    set_ok(ctrl, F.WRITE_ATOMIC, 1)
    assert get_ok(other, F.WRITE_ATOMIC)[0] == 0


def test_saved_values_survive_a_restart(tmp_path):
    from nvmestack.target import Subsystem
    from nvmestack.target.persist import load, save

    subsys = Subsystem("nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-00000000f00d", serial="F1")
    subsys.add_namespace(Namespace(1, 64))
    ctrl = enable(subsys.add_controller())
    set_ok(ctrl, F.IRQ_COALESCE, 0x0A05, sv=True)
    set_ok(ctrl, F.ERR_RECOVERY, 7, sv=True, nsid=1)
    set_ok(ctrl, F.WRITE_ATOMIC, 1)  # current only: not kept
    save(subsys, tmp_path)
    subsys.close()
    again = load(tmp_path)
    try:
        ctrl = enable(again.add_controller())
        assert get_ok(ctrl, F.IRQ_COALESCE)[0] == 0x0A05
        assert get_ok(ctrl, F.ERR_RECOVERY, nsid=1)[0] == 7
        assert get_ok(ctrl, F.WRITE_ATOMIC)[0] == 0
    finally:
        again.close()
