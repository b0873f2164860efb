import pytest

from nvmestack.spec.layout import Struct
from nvmestack.spec.log import (
    CHANGED_NS_LIST_OVERFLOW,
    NVME_DISC_SUBSYS_NAME,
    AddressFamily,
    ChangedNamespaceList,
    CommandEffects,
    CommandsSupportedAndEffects,
    CommandSubmissionExecution,
    CriticalWarning,
    DeviceSelfTestLog,
    DiscoveryLogEntry,
    DiscoveryLogHeader,
    ErrorInformationEntry,
    FirmwareSlotLog,
    LidSupportedAndEffects,
    LogPageId,
    ReservationNotificationLog,
    SanitizeStatus,
    SanitizeStatusLog,
    SecureChannel,
    SelfTestOperation,
    SelfTestResult,
    SelfTestResultCode,
    SmartLog,
    SubsystemType,
    SupportedLogPages,
    TcpSecurityType,
    TransportType,
    build_discovery_log,
    discovery_log_entries,
    discovery_log_size,
    log_page_name,
)


def put(buf: bytearray, offset: int, value: int, size: int) -> None:
    buf[offset : offset + size] = value.to_bytes(size, "little")


def roundtrip(s: Struct) -> None:
    """Encoding, decoding a copy and re-encoding gives the same bytes."""
    raw = bytes(s)
    assert len(raw) == type(s).SIZE
    back = type(s).decode(bytearray(raw))
    assert bytes(back) == raw
    assert back.to_dict() == s.to_dict()


def test_log_page_ids():
    assert LogPageId.SUPPORTED_LOG_PAGES == 0x00
    assert LogPageId.ERROR == 0x01 and LogPageId.SMART == 0x02 and LogPageId.FW_SLOT == 0x03
    assert LogPageId.CHANGED_NS == 0x04 and LogPageId.CMD_EFFECTS == 0x05
    assert LogPageId.DEVICE_SELF_TEST == 0x06 and LogPageId.TELEMETRY_HOST == 0x07
    assert LogPageId.DISCOVERY == 0x70 and LogPageId.RESERVATION == 0x80 and LogPageId.SANITIZE == 0x81
    assert log_page_name(0x02) == "SMART / Health Information"
    assert log_page_name(0xC3).startswith("Vendor Specific")
    assert log_page_name(0x6F).startswith("Unknown")


def test_supported_log_pages():
    assert SupportedLogPages.SIZE == 1024 and LidSupportedAndEffects.SIZE == 4
    raw = bytearray(1024)
    put(raw, 4 * 0x02, 0b01, 4)  # SMART: LSUPP
    put(raw, 4 * 0x0D, 0x0001_0003, 4)  # persistent event: LSUPP, IOS, LIDSP=1
    page = SupportedLogPages.decode(raw)
    assert page.is_supported(0x02) and not page.is_supported(0x03)
    pel = page.lid_support[0x0D]
    assert (pel.lsupp, pel.ios, pel.lidsp) == (True, True, 1)
    page.lid_support[0x81].lsupp = True  # writes through the view
    assert raw[4 * 0x81] == 1
    roundtrip(page)


def test_error_information_entry_offsets():
    assert ErrorInformationEntry.SIZE == 64
    raw = bytearray(64)
    put(raw, 0, 0x1122334455667788, 8)
    put(raw, 8, 0x0003, 2)
    put(raw, 10, 0xBEEF, 2)
    # status field: phase 1, SC 02h, SCT 0, DNR
    put(raw, 12, 0x8000 | (0x02 << 1) | 1, 2)
    put(raw, 14, (5 << 8) | 44, 2)  # bit 5 of byte 44
    put(raw, 16, 0xDEADBEEF00, 8)
    put(raw, 24, 7, 4)
    raw[28] = 0xC1
    raw[29] = TransportType.TCP
    put(raw, 32, 0xFEDCBA9876543210, 8)
    put(raw, 40, 0x1234, 2)
    raw[63] = 1
    e = ErrorInformationEntry.decode(raw)
    assert e.error_count == 0x1122334455667788
    assert e.sqid == 3 and e.cmdid == 0xBEEF
    assert e.phase_tag is True and e.sc == 0x02 and e.sct == 0 and e.dnr is True and e.more is False
    assert e.status == 0x4002
    assert (e.pel_byte, e.pel_bit) == (44, 5)
    assert e.lba == 0xDEADBEEF00 and e.nsid == 7
    assert e.vs == 0xC1 and e.trtype == 3
    assert e.cs == 0xFEDCBA9876543210 and e.trtype_spec_info == 0x1234
    assert e.log_page_version == 1


def test_error_information_entry_encode():
    e = ErrorInformationEntry(error_count=1, sqid=0xFFFF, cmdid=0xFFFF, sct=1, sc=0x09, more=1,
                              pel_byte=40, pel_bit=7, nsid=1)
    raw = bytes(e)
    assert raw[0:8] == (1).to_bytes(8, "little")
    assert raw[8:12] == b"\xff\xff\xff\xff"
    assert int.from_bytes(raw[12:14], "little") == (1 << 14) | (1 << 9) | (0x09 << 1)
    assert raw[14] == 40 and raw[15] == 7
    assert raw[24:28] == b"\x01\x00\x00\x00"
    with pytest.raises(ValueError):
        e.pel_bit = 8
    roundtrip(e)


def test_smart_log_offsets():
    assert SmartLog.SIZE == 512
    raw = bytearray(512)
    raw[0] = 0b100011  # spare, temperature, PMR read-only
    put(raw, 1, 310, 2)  # composite temperature, kelvins
    raw[3], raw[4], raw[5], raw[6] = 95, 10, 3, 0b1001
    put(raw, 32, 12345678901234567890123, 16)  # data units read
    put(raw, 48, 2, 16)
    put(raw, 64, 3, 16)
    put(raw, 80, 4, 16)
    put(raw, 96, 5, 16)
    put(raw, 112, 77, 16)  # power cycles
    put(raw, 128, 1 << 100, 16)  # power on hours, beyond 64 bits
    put(raw, 144, 8, 16)
    put(raw, 160, 9, 16)
    put(raw, 176, 10, 16)
    put(raw, 192, 11, 4)
    put(raw, 196, 12, 4)
    put(raw, 200, 300, 2)  # temperature sensor 1
    put(raw, 214, 308, 2)  # temperature sensor 8
    put(raw, 216, 13, 4)
    put(raw, 220, 14, 4)
    put(raw, 224, 15, 4)
    put(raw, 228, 16, 4)
    s = SmartLog.decode(raw)
    assert s.warnings == CriticalWarning.SPARE | CriticalWarning.TEMPERATURE | CriticalWarning.PMR_READ_ONLY
    assert s.cw_spare and s.cw_temperature and s.cw_pmr_read_only and not s.cw_read_only
    assert s.temperature == 310 and s.temperature_celsius == 37
    assert (s.avail_spare, s.spare_thresh, s.percent_used, s.endu_grp_crit_warn_sumry) == (95, 10, 3, 9)
    assert s.data_units_read == 12345678901234567890123
    assert (s.data_units_written, s.host_reads, s.host_writes, s.ctrl_busy_time) == (2, 3, 4, 5)
    assert s.power_cycles == 77 and s.power_on_hours == 1 << 100
    assert (s.unsafe_shutdowns, s.media_errors, s.num_err_log_entries) == (8, 9, 10)
    assert (s.warning_temp_time, s.critical_comp_time) == (11, 12)
    assert s.temp_sensor[0] == 300 and s.temp_sensor[7] == 308 and s.temp_sensor[3] == 0
    assert (s.thm_temp1_trans_count, s.thm_temp2_trans_count) == (13, 14)
    assert (s.thm_temp1_total_time, s.thm_temp2_total_time) == (15, 16)


def test_smart_log_encode():
    s = SmartLog(temperature=0x0142, cw_volatile_backup=1, power_cycles=0x0102, media_errors=(1 << 127))
    s.temp_sensor[1] = 0x0155
    raw = bytes(s)
    assert raw[0] == 0x10
    assert raw[1:3] == b"\x42\x01"
    assert raw[112:128] == (0x0102).to_bytes(16, "little")
    assert raw[175] == 0x80  # most significant byte of the 128-bit media errors
    assert raw[202:204] == b"\x55\x01"
    assert SmartLog().temperature_celsius is None
    with pytest.raises(ValueError):
        s.power_cycles = 1 << 128
    roundtrip(s)


def test_firmware_slot_log():
    assert FirmwareSlotLog.SIZE == 512
    raw = bytearray(512)
    raw[0] = (3 << 4) | 2  # active slot 2, slot 3 at next reset
    raw[8:16] = b"1.0.0   "
    raw[16:24] = b"2.0.1a  "
    raw[56:64] = b"SEVEN\0\0\0"
    log = FirmwareSlotLog.decode(raw)
    assert log.active_slot == 2 and log.next_slot == 3
    assert log.frs1 == "1.0.0" and log.frs(2) == "2.0.1a" and log.frs(7) == "SEVEN"
    assert log.frs(4) == ""
    fresh = FirmwareSlotLog(active_slot=1, frs1="VER1")
    fresh.set_frs(5, "ABCDEFGH")
    out = bytes(fresh)
    assert out[0] == 1 and out[8:16] == b"VER1    " and out[40:48] == b"ABCDEFGH"
    fresh.set_frs(5, bytes(8))
    assert bytes(fresh)[40:48] == bytes(8)
    with pytest.raises(ValueError):
        fresh.frs(0)
    with pytest.raises(ValueError):
        fresh.set_frs(1, "TOO-LONG-REV")
    with pytest.raises(ValueError):
        fresh.active_slot = 8
    roundtrip(fresh)


def test_changed_namespace_list():
    assert ChangedNamespaceList.SIZE == 4096
    raw = bytearray(4096)
    put(raw, 0, 1, 4)
    put(raw, 4, 5, 4)
    put(raw, 8, 0x10, 4)
    page = ChangedNamespaceList.decode(raw)
    assert page.nsids() == [1, 5, 16] and not page.overflow
    built = ChangedNamespaceList.build([9, 2, 2])
    assert bytes(built)[:12] == bytes.fromhex("02000000 09000000 00000000")
    over = ChangedNamespaceList.build(range(1, 1026))
    assert over.overflow and over.nsids() == []
    assert bytes(over)[:8] == b"\xff\xff\xff\xff\x00\x00\x00\x00"
    assert ChangedNamespaceList.build(range(1, 1025)).nsid[1023] == 1024
    with pytest.raises(ValueError):
        ChangedNamespaceList.build([0])
    with pytest.raises(ValueError):
        ChangedNamespaceList.build([CHANGED_NS_LIST_OVERFLOW])
    roundtrip(built)


def test_commands_supported_and_effects():
    assert CommandsSupportedAndEffects.SIZE == 4096 and CommandEffects.SIZE == 4
    raw = bytearray(4096)
    # admin Format NVM (80h): CSUPP, LBCC, NCC, NIC, CSE=2, scope namespace
    put(raw, 4 * 0x80, 0b0_1111 | (2 << 16) | (1 << 20), 4)
    # I/O Write (01h): CSUPP, LBCC, UUID selection
    put(raw, 1024 + 4 * 0x01, 0b11 | (1 << 19), 4)
    log = CommandsSupportedAndEffects.decode(raw)
    fmt = log.acs[0x80]
    assert (fmt.csupp, fmt.lbcc, fmt.ncc, fmt.nic, fmt.ccc) == (True, True, True, True, False)
    assert fmt.cse == CommandSubmissionExecution.SINGLE_PER_CONTROLLER and fmt.csp == 1
    write = log.iocs[0x01]
    assert write.csupp and write.lbcc and write.uuid_sel and not write.ncc and write.cse == 0
    assert not log.acs[0x01].csupp and not log.iocs[0x80].csupp
    log.acs[0x06] = CommandEffects(csupp=1, ccc=1, cser=1)
    assert raw[24:28] == ((1 << 14) | (1 << 4) | 1).to_bytes(4, "little")
    bits = {"csupp": 0, "lbcc": 1, "ncc": 2, "nic": 3, "ccc": 4, "uuid_sel": 19}
    for name, bit in bits.items():
        one = CommandEffects.decode((1 << bit).to_bytes(4, "little"))
        assert [getattr(one, n) for n in bits] == [n == name for n in bits], name
    wide = CommandEffects.decode((0xFFF << 20 | 0b11 << 14).to_bytes(4, "little"))
    assert (wide.csp, wide.cser, wide.cse, wide.uuid_sel) == (0xFFF, 3, 0, False)
    with pytest.raises(ValueError):
        CommandEffects(cse=8)
    roundtrip(log)


def test_device_self_test_log():
    assert DeviceSelfTestLog.SIZE == 564 and SelfTestResult.SIZE == 28
    raw = bytearray(564)
    raw[0] = SelfTestOperation.EXTENDED
    raw[1] = 42
    r1 = 4 + 28  # second result
    raw[r1] = (SelfTestOperation.SHORT << 4) | SelfTestResultCode.KNOWN_SEGMENT_FAILED
    raw[r1 + 1] = 3
    raw[r1 + 2] = 0b1111
    put(raw, r1 + 4, 9999, 8)
    put(raw, r1 + 12, 1, 4)
    put(raw, r1 + 16, 0x123456789, 8)
    raw[r1 + 24] = 2
    raw[r1 + 25] = 0x81
    raw[r1 + 26 : r1 + 28] = b"VS"
    log = DeviceSelfTestLog.decode(raw)
    assert log.current_operation == SelfTestOperation.EXTENDED and log.completion == 42
    r = log.result[1]
    assert r.result == SelfTestResultCode.KNOWN_SEGMENT_FAILED and r.code == SelfTestOperation.SHORT
    assert r.seg == 3 and r.nsid_valid and r.flba_valid and r.sct_valid and r.sc_valid
    assert r.poh == 9999 and r.nsid == 1 and r.flba == 0x123456789
    assert r.sct == 2 and r.sc == 0x81 and bytes(r.vs) == b"VS"
    assert log.result[19].dsts == 0 and len(log.result) == 20
    fresh = DeviceSelfTestLog(current_operation=SelfTestOperation.SHORT, completion=100)
    fresh.result[0].dsts = SelfTestResultCode.UNUSED
    fresh.result[19].flba = 5
    out = bytes(fresh)
    assert out[0] == 1 and out[1] == 100 and out[4] == 0x0F
    assert out[4 + 19 * 28 + 16] == 5
    with pytest.raises(ValueError):
        fresh.completion = 128
    roundtrip(fresh)


def test_sanitize_status_log():
    assert SanitizeStatusLog.SIZE == 512
    raw = bytearray(512)
    put(raw, 0, 0x8000, 2)
    put(raw, 2, (1 << 8) | (5 << 3) | SanitizeStatus.IN_PROGRESS, 2)
    put(raw, 4, 0x00000203, 4)
    for i, off in enumerate(range(8, 32, 4)):
        put(raw, off, 100 + i, 4)
    s = SanitizeStatusLog.decode(raw)
    assert s.sprog == 0x8000 and s.status == SanitizeStatus.IN_PROGRESS
    assert s.passes == 5 and s.global_data_erased is True and s.scdw10 == 0x203
    assert (s.eto, s.etbe, s.etce, s.etond, s.etbend, s.etcend) == (100, 101, 102, 103, 104, 105)
    fresh = SanitizeStatusLog(sprog=0xFFFF, status=SanitizeStatus.COMPLETED, eto=SanitizeStatusLog.NO_ESTIMATE)
    assert bytes(fresh)[:4] == b"\xff\xff\x01\x00" and bytes(fresh)[8:12] == b"\xff" * 4
    with pytest.raises(ValueError):
        fresh.passes = 32
    roundtrip(fresh)


def test_reservation_notification_log():
    assert ReservationNotificationLog.SIZE == 64
    log = ReservationNotificationLog(lpc=3, rnlpt=2, nalp=1, nsid=9)
    raw = bytes(log)
    assert raw[0] == 3 and raw[8] == 2 and raw[9] == 1 and raw[12:16] == b"\x09\x00\x00\x00"
    roundtrip(log)


def make_entry(n: int) -> DiscoveryLogEntry:
    return DiscoveryLogEntry(
        trtype=TransportType.TCP,
        adrfam=AddressFamily.IPV4,
        subtype=SubsystemType.NVM,
        secure_channel=SecureChannel.NOT_REQUIRED,
        portid=n,
        cntlid=0xFFFF,
        asqsz=32,
        trsvcid="4420",
        subnqn=f"nqn.2014-08.org.example:sub{n}",
        traddr=f"192.168.0.{n}",
        tcp_sectype=TcpSecurityType.NONE,
    )


def test_discovery_entry_offsets():
    assert DiscoveryLogEntry.SIZE == 1024 and DiscoveryLogHeader.SIZE == 1024
    raw = bytearray(1024)
    raw[0:4] = bytes([1, 2, 3, 0b110])
    put(raw, 4, 0x0102, 2)
    put(raw, 6, 0xFFFE, 2)
    put(raw, 8, 128, 2)
    put(raw, 10, 0b11, 2)
    raw[32:36] = b"8009"
    raw[256 : 256 + len(NVME_DISC_SUBSYS_NAME)] = NVME_DISC_SUBSYS_NAME.encode()
    raw[512:521] = b"10.0.0.42"
    raw[768] = TcpSecurityType.TLS13
    put(raw, 776, 0xABCD, 2)
    e = DiscoveryLogEntry.decode(raw)
    assert (e.trtype, e.adrfam, e.subtype) == (TransportType.RDMA, AddressFamily.IPV6, SubsystemType.CURRENT_DISCOVERY)
    assert e.secure_channel == SecureChannel.NOT_REQUIRED and e.disable_sqflow is True
    assert e.portid == 0x0102 and e.cntlid == 0xFFFE and e.asqsz == 128 and e.eflags == 3
    assert e.trsvcid == "8009" and e.subnqn == NVME_DISC_SUBSYS_NAME and e.traddr == "10.0.0.42"
    assert e.tcp_sectype == TcpSecurityType.TLS13 and e.rdma_pkey == 0xABCD
    assert bytes(e.tsas)[0] == 2


def test_discovery_entry_encode():
    e = make_entry(7)
    raw = bytes(e)
    assert raw[0] == 3 and raw[1] == 1 and raw[2] == 2 and raw[3] == 2
    assert raw[4:6] == b"\x07\x00" and raw[6:8] == b"\xff\xff" and raw[8:10] == b"\x20\x00"
    assert raw[32:64] == b"4420".ljust(32)
    assert raw[256:512] == b"nqn.2014-08.org.example:sub7".ljust(256, b"\0")
    assert raw[512:768].rstrip(b" ") == b"192.168.0.7"
    with pytest.raises(ValueError):
        e.subnqn = "n" * 257
    with pytest.raises(ValueError):
        e.secure_channel = 4
    roundtrip(e)


def test_discovery_log_build_and_view():
    log = build_discovery_log([make_entry(1), bytes(make_entry(2))], genctr=5)
    assert len(log) == discovery_log_size(2) == 3 * 1024
    assert log[0:8] == (5).to_bytes(8, "little") and log[8:16] == (2).to_bytes(8, "little")
    assert log[16:18] == b"\x00\x00"
    header = DiscoveryLogHeader.decode(log)
    assert (header.genctr, header.numrec, header.recfmt) == (5, 2, 0)
    entries = discovery_log_entries(log)
    assert [e.traddr for e in entries] == ["192.168.0.1", "192.168.0.2"]
    # views, not copies: a write through an entry lands in the log buffer
    entries[1].portid = 0x4321
    assert log[2048 + 4 : 2048 + 6] == b"\x21\x43"
    # a partial read (header + one entry) yields only the entries it holds
    assert len(discovery_log_entries(memoryview(log)[:2048])) == 1
    assert len(discovery_log_entries(log, numrec=1)) == 1
    assert discovery_log_entries(build_discovery_log([])) == []
    with pytest.raises(ValueError):
        build_discovery_log([b"short"])
    with pytest.raises(ValueError):
        discovery_log_size(-1)
    with pytest.raises(ValueError):
        DiscoveryLogHeader.decode(bytes(100))
