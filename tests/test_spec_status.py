import pickle

import pytest

from nvmestack.spec.cqe import Completion
from nvmestack.spec.status import (
    CRD_MASK,
    DNR,
    MORE,
    SUCCESS,
    CommandSpecificStatus,
    FabricsStatus,
    GenericStatus,
    MediaStatus,
    PathStatus,
    Status,
    StatusCodeType,
    nvme_cli_string,
)

# --- coded values against the specification ------------------------------


def test_status_code_types():
    assert [(t.name, int(t)) for t in StatusCodeType] == [
        ("GENERIC", 0), ("COMMAND_SPECIFIC", 1), ("MEDIA", 2), ("PATH", 3), ("VENDOR", 7)]
    assert StatusCodeType.MEDIA.title == "Media and Data Integrity Errors"


@pytest.mark.parametrize("code, value", [
    (GenericStatus.SUCCESS, 0x00),
    (GenericStatus.INVALID_OPCODE, 0x01),
    (GenericStatus.INVALID_FIELD, 0x02),
    (GenericStatus.COMMAND_ID_CONFLICT, 0x03),
    (GenericStatus.ABORT_REQUESTED, 0x07),
    (GenericStatus.INVALID_NAMESPACE_OR_FORMAT, 0x0B),
    (GenericStatus.SGL_OFFSET_INVALID, 0x16),
    (GenericStatus.HOST_ID_INCONSISTENT_FORMAT, 0x18),
    (GenericStatus.KEEP_ALIVE_TIMER_EXPIRED, 0x19),
    (GenericStatus.SANITIZE_IN_PROGRESS, 0x1D),
    (GenericStatus.NAMESPACE_WRITE_PROTECTED, 0x20),
    (GenericStatus.TRANSIENT_TRANSPORT_ERROR, 0x22),
    (GenericStatus.ADMIN_COMMAND_MEDIA_NOT_READY, 0x24),
    (GenericStatus.LBA_OUT_OF_RANGE, 0x80),
    (GenericStatus.CAPACITY_EXCEEDED, 0x81),
    (GenericStatus.NAMESPACE_NOT_READY, 0x82),
    (GenericStatus.RESERVATION_CONFLICT, 0x83),
    (GenericStatus.FORMAT_IN_PROGRESS, 0x84),
    (CommandSpecificStatus.COMPLETION_QUEUE_INVALID, 0x00),
    (CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER, 0x01),
    (CommandSpecificStatus.INVALID_QUEUE_SIZE, 0x02),
    (CommandSpecificStatus.ABORT_COMMAND_LIMIT_EXCEEDED, 0x03),
    (CommandSpecificStatus.ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED, 0x05),
    (CommandSpecificStatus.INVALID_FIRMWARE_SLOT, 0x06),
    (CommandSpecificStatus.INVALID_LOG_PAGE, 0x09),
    (CommandSpecificStatus.INVALID_FORMAT, 0x0A),
    (CommandSpecificStatus.FW_ACTIVATION_REQUIRES_CONVENTIONAL_RESET, 0x0B),
    (CommandSpecificStatus.INVALID_QUEUE_DELETION, 0x0C),
    (CommandSpecificStatus.FEATURE_ID_NOT_SAVEABLE, 0x0D),
    (CommandSpecificStatus.FW_ACTIVATION_REQUIRES_NVM_SUBSYSTEM_RESET, 0x10),
    (CommandSpecificStatus.FW_ACTIVATION_REQUIRES_CONTROLLER_LEVEL_RESET, 0x11),
    (CommandSpecificStatus.NAMESPACE_INSUFFICIENT_CAPACITY, 0x15),
    (CommandSpecificStatus.NAMESPACE_ID_UNAVAILABLE, 0x16),
    (CommandSpecificStatus.NAMESPACE_ALREADY_ATTACHED, 0x18),
    (CommandSpecificStatus.NAMESPACE_NOT_ATTACHED, 0x1A),
    (CommandSpecificStatus.CONTROLLER_LIST_INVALID, 0x1C),
    (CommandSpecificStatus.DEVICE_SELF_TEST_IN_PROGRESS, 0x1D),
    (CommandSpecificStatus.INVALID_CONTROLLER_ID, 0x1F),
    (CommandSpecificStatus.ANA_GROUP_ID_INVALID, 0x24),
    (CommandSpecificStatus.IOCS_NOT_SUPPORTED, 0x29),
    (CommandSpecificStatus.IDENTIFIER_UNAVAILABLE, 0x2D),
    (CommandSpecificStatus.CONFLICTING_ATTRIBUTES, 0x80),
    (CommandSpecificStatus.INVALID_PROTECTION_INFORMATION, 0x81),
    (CommandSpecificStatus.WRITE_TO_READ_ONLY_RANGE, 0x82),
    (CommandSpecificStatus.ZONE_BOUNDARY_ERROR, 0xB8),
    (CommandSpecificStatus.INVALID_ZONE_STATE_TRANSITION, 0xBF),
    (FabricsStatus.INCOMPATIBLE_FORMAT, 0x80),
    (FabricsStatus.CONTROLLER_BUSY, 0x81),
    (FabricsStatus.CONNECT_INVALID_PARAMETERS, 0x82),
    (FabricsStatus.CONNECT_RESTART_DISCOVERY, 0x83),
    (FabricsStatus.CONNECT_INVALID_HOST, 0x84),
    (FabricsStatus.INVALID_QUEUE_TYPE, 0x85),
    (FabricsStatus.DISCOVER_RESTART, 0x90),
    (FabricsStatus.AUTHENTICATION_REQUIRED, 0x91),
    (MediaStatus.WRITE_FAULT, 0x80),
    (MediaStatus.UNRECOVERED_READ_ERROR, 0x81),
    (MediaStatus.GUARD_CHECK_ERROR, 0x82),
    (MediaStatus.APPLICATION_TAG_CHECK_ERROR, 0x83),
    (MediaStatus.REFERENCE_TAG_CHECK_ERROR, 0x84),
    (MediaStatus.COMPARE_FAILURE, 0x85),
    (MediaStatus.ACCESS_DENIED, 0x86),
    (MediaStatus.DEALLOCATED_OR_UNWRITTEN_BLOCK, 0x87),
    (PathStatus.INTERNAL_PATH_ERROR, 0x00),
    (PathStatus.ANA_PERSISTENT_LOSS, 0x01),
    (PathStatus.ANA_INACCESSIBLE, 0x02),
    (PathStatus.ANA_TRANSITION, 0x03),
    (PathStatus.CONTROLLER_PATHING_ERROR, 0x60),
    (PathStatus.HOST_PATHING_ERROR, 0x70),
    (PathStatus.ABORTED_BY_HOST, 0x71),
])
def test_code_values(code, value):
    assert int(code) == value


def test_code_types_and_titles():
    assert GenericStatus.INVALID_FIELD.sct is StatusCodeType.GENERIC
    assert CommandSpecificStatus.INVALID_FORMAT.sct is StatusCodeType.COMMAND_SPECIFIC
    assert FabricsStatus.CONTROLLER_BUSY.sct is StatusCodeType.COMMAND_SPECIFIC
    assert MediaStatus.WRITE_FAULT.sct is StatusCodeType.MEDIA
    assert PathStatus.ANA_TRANSITION.sct is StatusCodeType.PATH
    assert GenericStatus.INVALID_FIELD.title == "Invalid Field in Command"
    assert CommandSpecificStatus.FW_ACTIVATION_REQUIRES_CONTROLLER_LEVEL_RESET.title == \
        "Firmware Activation Requires Controller Level Reset"
    assert FabricsStatus.AUTHENTICATION_REQUIRED.title == "Authentication Required"
    for enum in (GenericStatus, CommandSpecificStatus, FabricsStatus, MediaStatus, PathStatus):
        for member in enum:
            assert 0 <= member <= 0xFF and member.title
    # Fabrics codes share the NVM command specific range, never below 80h.
    assert all(m >= 0x80 for m in FabricsStatus)


@pytest.mark.parametrize("status, linux", [
    # include/linux/nvme.h NVME_SC_* values (SCT << 8 | SC).
    (GenericStatus.INVALID_FIELD.status(), 0x002),
    (GenericStatus.NAMESPACE_NOT_READY.status(), 0x082),
    (CommandSpecificStatus.FW_ACTIVATION_REQUIRES_NVM_SUBSYSTEM_RESET.status(), 0x110),
    (CommandSpecificStatus.NAMESPACE_IS_PRIVATE.status(), 0x119),
    (CommandSpecificStatus.INVALID_PROTECTION_INFORMATION.status(), 0x181),
    (FabricsStatus.CONNECT_INVALID_HOST.status(), 0x184),
    (FabricsStatus.AUTHENTICATION_REQUIRED.status(), 0x191),
    (MediaStatus.UNRECOVERED_READ_ERROR.status(), 0x281),
    (MediaStatus.DEALLOCATED_OR_UNWRITTEN_BLOCK.status(), 0x287),
    (PathStatus.ANA_TRANSITION.status(), 0x303),
    (PathStatus.HOST_PATHING_ERROR.status(), 0x370),
    (PathStatus.ABORTED_BY_HOST.status(), 0x371),
])
def test_value_matches_linux(status, linux):
    assert status.value == linux
    assert int(status) == linux


# --- value encoding ------------------------------------------------------


def test_flag_positions():
    assert (DNR, MORE, CRD_MASK) == (0x4000, 0x2000, 0x1800)  # NVME_SC_DNR/MORE/CRD
    assert Status(0, 0, dnr=True).value == 0x4000
    assert Status(0, 0, more=True).value == 0x2000
    assert Status(0, 0, crd=1).value == 0x0800
    assert Status(0, 0, crd=3).value == 0x1800
    assert Status(7, 0, ).value == 0x0700
    assert Status(0, 0xFF).value == 0x00FF
    s = Status(StatusCodeType.COMMAND_SPECIFIC, 0x0A, crd=2, more=True, dnr=True)
    assert s.value == 0x4000 | 0x2000 | (2 << 11) | (1 << 8) | 0x0A
    assert GenericStatus.INVALID_FIELD.status(dnr=True).value == 0x4002


def test_from_value_decodes_each_field():
    s = Status.from_value(0x4000 | 0x2000 | 0x1000 | 0x0200 | 0x85)
    assert (s.sct, s.sc, s.crd, s.more, s.dnr) == (2, 0x85, 2, True, True)
    assert s.sct is StatusCodeType.MEDIA
    assert s.code is MediaStatus.COMPARE_FAILURE
    s = Status.from_value(0x0801)
    assert (s.sct, s.sc, s.crd, s.more, s.dnr) == (0, 1, 1, False, False)
    for v in (0, 0x4002, 0x7FFF, 0x371, 0x1F0D):
        assert Status.from_value(v).value == v


def test_completion_round_trip():
    # A raw CQE: status word at byte 14 = DNR | M | CRD=1 | SCT=1 | SC=0x1A | P.
    word = (1 << 15) | (1 << 14) | (1 << 12) | (1 << 9) | (0x1A << 1) | 1
    raw = bytearray(16)
    raw[12:14] = b"\x34\x12"
    raw[14:16] = word.to_bytes(2, "little")
    s = Status.of(Completion.view(raw))
    assert (s.sct, s.sc, s.crd, s.more, s.dnr) == (1, 0x1A, 1, True, True)
    assert s.code is CommandSpecificStatus.NAMESPACE_NOT_ATTACHED
    assert s.value == word >> 1

    # Writing keeps the phase tag and every other field.
    for phase in (0, 1):
        cqe = Completion(cid=0x1234, sqhd=7, phase=phase)
        MediaStatus.GUARD_CHECK_ERROR.status(dnr=True).apply(cqe)
        out = bytes(cqe)
        assert int.from_bytes(out[14:16], "little") == (1 << 15) | (2 << 9) | (0x82 << 1) | phase
        assert out[12:14] == b"\x34\x12" and out[8:10] == b"\x07\x00"
        back = Status.of(Completion.decode(out))
        assert back == MediaStatus.GUARD_CHECK_ERROR.status(dnr=True)
    # apply() overwrites an earlier status completely.
    cqe = Completion(phase=1)
    Status.from_value(0x7FFF).apply(cqe)
    SUCCESS.apply(cqe)
    assert cqe.dw3_status == 1


def test_status_field_word():
    s = Status.from_field(0x8005)
    assert s == GenericStatus.INVALID_FIELD.status(dnr=True)
    assert Status.from_field(0x8004) == s  # phase ignored
    assert s.to_field() == 0x8004 and s.to_field(phase=True) == 0x8005


# --- nvme-cli text -------------------------------------------------------


def test_nvme_cli_strings():
    assert GenericStatus.INVALID_FIELD.status().string == (
        "Invalid Field in Command: A reserved coded value or an unsupported value in a defined field")
    assert str(GenericStatus.INVALID_FIELD.status(dnr=True)) == (
        "Invalid Field in Command: A reserved coded value or an unsupported value in a defined field(0x4002)")
    assert str(GenericStatus.INVALID_OPCODE.status(dnr=True)).endswith("opcode field(0x4001)")
    assert GenericStatus.LBA_OUT_OF_RANGE.status().string.startswith("LBA Out of Range: ")
    assert CommandSpecificStatus.INVALID_LOG_PAGE.status().string == (
        "Invalid Log Page: The log page indicated is invalid")
    assert MediaStatus.UNRECOVERED_READ_ERROR.status().string == (
        "Unrecovered Read Error: The read data could not be recovered from the media")
    assert str(PathStatus.ANA_INACCESSIBLE.status()) == (
        "Asymmetric Access Inaccessible: The controller is in an inaccessible state with the "
        "requested namespace(0x302)")
    # printf("%#x", 0) prints no 0x prefix.
    assert str(SUCCESS) == "Successful Completion: The command completed without error(0)"


def test_cli_short_names_agree_with_titles():
    # Where nvme-cli's text has "Name: explanation", the name is the spec title.
    checked = 0
    for enum in (GenericStatus, CommandSpecificStatus, MediaStatus, PathStatus, FabricsStatus):
        for member in enum:
            text = member.status().string
            if ": " in text and text != "unrecognized":
                short = text.split(": ", 1)[0]
                assert short.lower().replace("zoned", "zone") in (
                    member.title.lower(), member.title.lower().removeprefix("connect "),
                ), (member, short)
                checked += 1
    assert checked > 80


def test_fabrics_lookup_for_80h_and_up():
    nvm = Status.from_value(0x182)
    fab = Status.from_value(0x182, fabrics=True)
    assert nvm.code is CommandSpecificStatus.WRITE_TO_READ_ONLY_RANGE
    assert fab.code is FabricsStatus.CONNECT_INVALID_PARAMETERS
    assert nvm.name == "WRITE_TO_READ_ONLY_RANGE" and fab.name == "CONNECT_INVALID_PARAMETERS"
    assert nvm.string.startswith("Attempted Write to Read Only Range:")
    assert str(fab) == "Connect Invalid Parameters: One or more of the command parameters(0x182)"
    assert nvm == fab  # same wire value; the flag only changes the reading
    assert Status.from_value(0x4180, fabrics=True).string.startswith("Incompatible Format:")
    assert Status.from_value(0x191, fabrics=True).code is FabricsStatus.AUTHENTICATION_REQUIRED
    assert Status.from_value(0x191).string == "unrecognized"
    assert Status.from_value(0x1B9, fabrics=True).string == "unrecognized"
    # Below 80h the admin table is used either way.
    for fabrics in (False, True):
        s = Status.from_value(0x102, fabrics=fabrics)
        assert s.code is CommandSpecificStatus.INVALID_QUEUE_SIZE
        assert s.string.startswith("Invalid Queue Size:")
    # Generic 80h+ is never affected.
    assert Status.from_value(0x083, fabrics=True).code is GenericStatus.RESERVATION_CONFLICT
    # A FabricsStatus member makes a fabrics status.
    s = FabricsStatus.CONTROLLER_BUSY.status()
    assert s.fabrics and s.code is FabricsStatus.CONTROLLER_BUSY
    assert nvme_cli_string(0x4181, fabrics=True).startswith("Controller Busy:")
    assert nvme_cli_string(0x4181).startswith("Invalid Protection Information:")


def test_unknown_codes_do_not_raise():
    s = Status.from_value(0x03F)  # generic 3Fh: reserved
    assert s.code is None and s.string == "unrecognized"
    assert s.name.startswith("Unknown") and "0x3f" in s.name
    assert str(s) == "unrecognized(0x3f)"
    assert Status.from_value(0x117).string == "unrecognized"  # command specific 17h: reserved
    assert Status.from_value(0x2FF).string == "unrecognized"
    assert Status.from_value(0x3C0).code is None
    vendor = Status(StatusCodeType.VENDOR, 0xC1)
    assert vendor.string == "Vendor Specific Status" and vendor.code is None
    assert "vendor" in vendor.name.lower()
    for sct in (4, 5, 6):
        s = Status(sct, 0x10)
        assert s.string == "Unknown status" and s.code is None
        assert s.sct == sct and s.name.startswith("Unknown")
        repr(s)
    # Codes defined after what libnvme names print as "unrecognized".
    assert GenericStatus.FDP_DISABLED.status().string == "unrecognized"
    assert GenericStatus.FDP_DISABLED.status().name == "FDP_DISABLED"


def test_cli_string_ignores_flags():
    assert nvme_cli_string(0x6002) == nvme_cli_string(0x0002) == nvme_cli_string(0x1802)


# --- the value type ------------------------------------------------------


def test_ok_and_success():
    assert SUCCESS.ok and SUCCESS.value == 0 and SUCCESS.name == "SUCCESS"
    assert Status(0, 0, dnr=True).ok
    assert not GenericStatus.INVALID_FIELD.status().ok
    assert not Status(StatusCodeType.PATH, 0).ok
    assert not Status(StatusCodeType.COMMAND_SPECIFIC, 0).ok


def test_immutable_hashable_and_equal():
    a = GenericStatus.INTERNAL_ERROR.status(dnr=True)
    b = Status.from_value(0x4006)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Status.from_value(0x0006)
    with pytest.raises(AttributeError):
        a.dnr = False  # type: ignore[misc]
    assert a.replace(dnr=False).value == 0x0006 and a.dnr
    assert a.replace(sct=3, sc=0x71).code is PathStatus.ABORTED_BY_HOST
    with pytest.raises(TypeError):
        a.replace(phase=1)
    assert pickle.loads(pickle.dumps(a)) == a
    assert repr(a) == "Status(GENERIC, INTERNAL_ERROR, dnr=True)"


def test_bad_values_raise():
    with pytest.raises(ValueError):
        Status(8, 0)
    with pytest.raises(ValueError):
        Status(0, 0x100)
    with pytest.raises(ValueError):
        Status(0, -1)
    with pytest.raises(ValueError):
        Status(0, 0, crd=4)
    with pytest.raises(ValueError):
        Status(0, 0, dnr=2)
    with pytest.raises(ValueError, match="Media"):
        Status(StatusCodeType.GENERIC, MediaStatus.WRITE_FAULT)
    with pytest.raises(ValueError):
        Status.from_value(0x8000)
    with pytest.raises(ValueError):
        Status.from_value(-1)
    with pytest.raises(ValueError):
        Status.from_field(0x10000)
    with pytest.raises(ValueError):
        nvme_cli_string(-5)
