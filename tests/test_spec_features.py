import pytest

from nvmestack.spec.features import (
    FEATURES,
    ApstData,
    ApstEntry,
    Arbitration,
    AsyncEventConfiguration,
    AutonomousPowerStateTransition,
    ErrorRecovery,
    FeatureCapabilities,
    FeatureCapability,
    FeatureDword,
    FeatureId,
    FeatureSelect,
    HostBehaviorSupport,
    HostControlledThermalManagement,
    HostIdentifier,
    HostIdentifier64,
    HostIdentifier128,
    HostMemoryBuffer,
    HostMemoryBufferAttributes,
    InterruptCoalescing,
    InterruptVectorConfiguration,
    IoCommandSetProfile,
    KeepAliveTimer,
    LbaRangeTypeData,
    LbaRangeTypeDword,
    LbaRangeTypeEntry,
    NamespaceWriteProtectionConfig,
    NumberOfQueues,
    PowerManagement,
    ReservationNotificationMask,
    ReservationPersistence,
    SoftwareProgressMarker,
    TemperatureThreshold,
    ThresholdType,
    TimestampData,
    TimestampOrigin,
    VolatileWriteCache,
    WriteAtomicity,
    WriteProtectState,
    feature_data_length,
    feature_dword_class,
    feature_name,
)
from nvmestack.spec.log import CriticalWarning


def dw(s) -> int:
    raw = bytes(s)
    assert len(raw) == 4
    return int.from_bytes(raw, "little")


def test_feature_ids():
    expected = {
        "ARBITRATION": 0x01, "POWER_MGMT": 0x02, "LBA_RANGE": 0x03, "TEMP_THRESH": 0x04,
        "ERR_RECOVERY": 0x05, "VOLATILE_WC": 0x06, "NUM_QUEUES": 0x07, "IRQ_COALESCE": 0x08,
        "IRQ_CONFIG": 0x09, "WRITE_ATOMIC": 0x0A, "ASYNC_EVENT": 0x0B, "AUTO_PST": 0x0C,
        "HOST_MEM_BUF": 0x0D, "TIMESTAMP": 0x0E, "KATO": 0x0F, "HCTM": 0x10,
        "HOST_ID": 0x81, "RESV_MASK": 0x82, "RESV_PERSIST": 0x83, "WRITE_PROTECT": 0x84,
    }
    for name, value in expected.items():
        assert FeatureId[name] == value, name
    assert feature_name(0x07) == "Number of Queues"
    assert feature_name(0xC1).startswith("Vendor Specific")
    assert feature_name(0x60).startswith("Unknown")
    assert [s.value for s in FeatureSelect] == [0, 1, 2, 3]


def test_supported_capabilities():
    caps = FeatureCapabilities.from_dword(0b101)
    assert caps.saveable and not caps.ns_specific and caps.changeable
    assert dw(FeatureCapabilities(ns_specific=1)) == FeatureCapability.NS_SPECIFIC == 2
    assert FeatureCapability.CHANGEABLE == 4


def test_registry():
    assert feature_dword_class(FeatureId.NUM_QUEUES) is NumberOfQueues
    assert feature_dword_class(0x0B) is AsyncEventConfiguration
    assert feature_dword_class(0xC0) is FeatureDword
    with pytest.raises(TypeError):
        class Twice(FeatureDword):
            FID = FeatureId.KATO


def test_arbitration():
    a = Arbitration(ab=0b111, lpw=0x11, mpw=0x22, hpw=0x33)
    assert dw(a) == 0x33221107 and int(a) == 0x33221107
    back = Arbitration.from_dword(0xAABBCC03)
    assert (back.ab, back.lpw, back.mpw, back.hpw) == (3, 0xCC, 0xBB, 0xAA)
    with pytest.raises(ValueError):
        a.ab = 8


def test_power_management():
    assert dw(PowerManagement(ps=31, wh=5)) == (5 << 5) | 31
    p = PowerManagement.from_dword(0x47)
    assert (p.ps, p.wh) == (7, 2)
    with pytest.raises(ValueError):
        PowerManagement(ps=32)


def test_temperature_threshold():
    t = TemperatureThreshold(tmpth=343, tmpsel=0xF, thsel=ThresholdType.UNDER)
    assert dw(t) == 343 | (0xF << 16) | (1 << 20)
    back = TemperatureThreshold.from_dword((2 << 16) | 0x0150)
    assert (back.tmpth, back.tmpsel, back.thsel) == (0x150, 2, ThresholdType.OVER)
    with pytest.raises(ValueError):
        t.thsel = 4


def test_small_dwords():
    assert dw(ErrorRecovery(tler=0x1234, dulbe=1)) == 0x0001_1234
    assert dw(VolatileWriteCache(wce=True)) == 1
    assert dw(InterruptCoalescing(thr=0x0A, time=0x10)) == 0x100A
    ivc = InterruptVectorConfiguration.from_dword(0x0001_0005)
    assert ivc.iv == 5 and ivc.cd is True
    assert dw(WriteAtomicity(dn=1)) == 1
    assert dw(AutonomousPowerStateTransition(apste=1)) == 1
    assert dw(HostMemoryBuffer(ehm=1, mr=1)) == 3
    assert dw(KeepAliveTimer(kato=120000)) == 120000
    assert dw(HostControlledThermalManagement(tmt1=0x0155, tmt2=0x0160)) == 0x0155_0160
    assert dw(SoftwareProgressMarker(pbslc=9)) == 9
    assert dw(HostIdentifier(exhid=1)) == 1
    assert dw(ReservationNotificationMask(regpre=1, resrel=1, respre=1)) == 0b1110
    assert dw(ReservationPersistence(ptpl=1)) == 1
    assert dw(NamespaceWriteProtectionConfig(wps=WriteProtectState.WRITE_PROTECT_UNTIL_POWER_CYCLE)) == 2
    assert dw(LbaRangeTypeDword(num=63)) == 63
    with pytest.raises(ValueError):
        KeepAliveTimer(kato=1 << 32)
    with pytest.raises(ValueError):
        LbaRangeTypeDword(num=64)


def test_io_command_set_profile():
    # IOCSCI is CDW11 bits 8:0; bits 31:9 are reserved.
    assert dw(IoCommandSetProfile(iocsci=0x1FF)) == 0x1FF
    assert IoCommandSetProfile.from_dword(0xFFFF_FE05).iocsci == 5
    assert feature_dword_class(0x19) is IoCommandSetProfile
    with pytest.raises(ValueError):
        IoCommandSetProfile(iocsci=512)


def test_number_of_queues():
    req = NumberOfQueues.for_counts(sq=8, cq=4)
    assert dw(req) == (3 << 16) | 7 and (req.nsqr, req.ncqr) == (7, 3)
    res = NumberOfQueues.from_dword(0x003F_001F)  # 32 SQs, 64 CQs allocated
    assert (res.nsqa, res.ncqa) == (0x1F, 0x3F)
    assert (res.sq_count, res.cq_count) == (32, 64)
    assert dw(NumberOfQueues.for_counts(65535, 1)) == 0xFFFE
    for bad in ((0, 1), (1, 0), (65536, 1)):
        with pytest.raises(ValueError):
            NumberOfQueues.for_counts(*bad)


def test_async_event_configuration():
    aec = AsyncEventConfiguration(smart=CriticalWarning.SPARE | CriticalWarning.TEMPERATURE, nan=1, fw=1, dlpcn=1)
    assert dw(aec) == 0x8000_0303
    bits = {"nan": 8, "fw": 9, "telem": 10, "ana": 11, "pla": 12, "lbas": 13, "ega": 14,
            "nnsshdn": 15, "zdcn": 27, "dlpcn": 31}
    for name, bit in bits.items():
        one = AsyncEventConfiguration.from_dword(1 << bit)
        assert getattr(one, name) is True, name
        assert all(getattr(one, other) is False for other in bits if other != name)
        assert dw(AsyncEventConfiguration(**{name: 1})) == 1 << bit
    back = AsyncEventConfiguration.from_dword(0x3F)
    assert back.critical_warnings == CriticalWarning(0x3F) and not back.nan


def test_apst_data():
    assert ApstEntry.SIZE == 8 and ApstData.SIZE == 256
    raw = bytearray(256)
    # power state 1: go to state 3 after 100 ms idle
    raw[8:16] = ((100 << 8) | (3 << 3)).to_bytes(8, "little")
    table = ApstData.decode(raw)
    assert (table.entry[1].itps, table.entry[1].itpt) == (3, 100)
    assert table.entry[0].value == 0
    fresh = ApstData()
    fresh.entry[31].itps = 4
    fresh.entry[31].itpt = 0xFFFFFF
    assert bytes(fresh)[248:256] == ((0xFFFFFF << 8) | (4 << 3)).to_bytes(8, "little")
    with pytest.raises(ValueError):
        fresh.entry[0].itpt = 1 << 24
    assert bytes(ApstData.decode(bytes(fresh))) == bytes(fresh)


def test_timestamp():
    assert TimestampData.SIZE == 8
    ts = TimestampData(timestamp=1_700_000_000_123, synch=1, origin=TimestampOrigin.SET_FEATURES)
    raw = bytes(ts)
    assert raw[:6] == (1_700_000_000_123).to_bytes(6, "little")
    assert raw[6] == 0b0011 and raw[7] == 0
    back = TimestampData.decode(raw)
    assert back.timestamp == 1_700_000_000_123 and back.synch and back.origin == TimestampOrigin.SET_FEATURES
    with pytest.raises(ValueError):
        ts.timestamp = 1 << 48
    with pytest.raises(ValueError):
        ts.origin = 8


def test_host_identifier_data():
    assert HostIdentifier64.SIZE == 8 and HostIdentifier128.SIZE == 16
    hid = HostIdentifier128(hostid=bytes(range(16)))
    assert bytes(hid) == bytes(range(16))
    assert bytes(HostIdentifier64.decode(bytes(range(8))).hostid) == bytes(range(8))
    with pytest.raises(ValueError):
        HostIdentifier128(hostid=bytes(8))


def test_lba_range_type_and_hmb_and_host_behavior():
    assert LbaRangeTypeEntry.SIZE == 64 and LbaRangeTypeData.SIZE == 4096
    data = LbaRangeTypeData()
    e = data.entry[2]
    e.type, e.overwrite, e.hidden, e.slba, e.nlb = 1, 1, 1, 0x1000, 0x7FF
    raw = bytes(data)
    base = 2 * 64
    assert raw[base] == 1 and raw[base + 1] == 0b11
    assert raw[base + 16 : base + 24] == (0x1000).to_bytes(8, "little")
    assert raw[base + 24 : base + 32] == (0x7FF).to_bytes(8, "little")
    attrs = HostMemoryBufferAttributes(hsize=256, hmdlal=0x1000, hmdlau=1, hmdlec=4)
    assert bytes(attrs)[:16] == bytes.fromhex("00010000 00100000 01000000 04000000")
    hbs = HostBehaviorSupport(acre=1, lbafee=1)
    assert bytes(hbs)[:3] == b"\x01\x00\x01" and len(bytes(hbs)) == 512


def test_feature_table_and_data_length():
    assert set(FEATURES) == set(FeatureId)
    for fid in (FeatureId.ARBITRATION, FeatureId.NUM_QUEUES, FeatureId.ASYNC_EVENT, FeatureId.KATO):
        assert FEATURES[fid].data_size == 0 and feature_data_length(fid) == 0
    assert feature_data_length(FeatureId.AUTO_PST) == 256
    assert feature_data_length(FeatureId.TIMESTAMP) == 8
    assert feature_data_length(FeatureId.LBA_RANGE) == 4096
    assert feature_data_length(FeatureId.HOST_BEHAVIOR) == 512
    assert feature_data_length(FeatureId.HOST_ID, cdw11=0) == 8
    assert feature_data_length(FeatureId.HOST_ID, cdw11=1) == 16
    assert feature_data_length(FeatureId.HOST_MEM_BUF) == 4096
    assert feature_data_length(FeatureId.HOST_MEM_BUF, host_to_controller=True) == 0
    assert FEATURES[FeatureId.ERR_RECOVERY].ns_specific and FEATURES[FeatureId.RESV_PERSIST].ns_specific
    assert not FEATURES[FeatureId.NUM_QUEUES].ns_specific
    with pytest.raises(ValueError):
        feature_data_length(0xC0)
