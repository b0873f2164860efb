import os

import pytest

from nvmestack.spec.checksum import crc16_t10dif, crc32c
from nvmestack.spec.pi import (
    APP_TAG_ESCAPE,
    PI_TUPLE_SIZE,
    PRINFO_SHIFT,
    REF_TAG_ESCAPE,
    PiTuple,
    PiType,
    Prinfo,
    app_tag_matches,
    expected_ref_tag,
    pi_checks_disabled,
    pi_guard,
    pi_offset_in_metadata,
)


def test_check_values():
    assert crc16_t10dif(b"123456789") == 0xD0DB
    assert crc32c(b"123456789") == 0xE3069283
    assert crc16_t10dif(b"") == 0 and crc32c(b"") == 0


def test_incremental_equals_one_shot():
    data = os.urandom(4096 + 77)
    for cut in (0, 1, 511, 4096, len(data)):
        assert crc16_t10dif(data[cut:], crc16_t10dif(data[:cut])) == crc16_t10dif(data)
        assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)


def test_checksums_take_buffers_without_copy():
    data = bytearray(b"xx123456789yy")
    mv = memoryview(data)[2:11]
    assert crc16_t10dif(mv) == 0xD0DB
    assert crc32c(mv) == 0xE3069283
    with pytest.raises(ValueError):
        crc16_t10dif(b"a", 0x10000)
    with pytest.raises(ValueError):
        crc32c(b"a", -1)


def test_guard_of_a_zero_block():
    # CRC-16 T10-DIF with init 0 and no final XOR: zeros checksum to zero.
    assert pi_guard(bytes(512)) == 0
    assert pi_guard(b"\x01" + bytes(511)) != 0


def test_pi_tuple_is_big_endian():
    assert PiTuple.SIZE == PI_TUPLE_SIZE == 8
    t = PiTuple(guard_tag=0xD0DB, app_tag=0x1234, ref_tag=0x0A0B0C0D)
    assert bytes(t) == bytes.fromhex("d0db12340a0b0c0d")
    back = PiTuple.decode(bytes.fromhex("beef00ff01020304"))
    assert (back.guard_tag, back.app_tag, back.ref_tag) == (0xBEEF, 0x00FF, 0x01020304)
    # a view inside a block's metadata, no copy
    md = bytearray(16)
    PiTuple.view(md, pi_offset_in_metadata(16)).ref_tag = 7
    assert md[8:16] == bytes.fromhex("0000000000000007")
    with pytest.raises(ValueError):
        t.app_tag = 0x10000


def test_types_and_prinfo():
    assert [int(t) for t in PiType] == [0, 1, 2, 3]
    assert Prinfo.PRCHK_REF == 1 and Prinfo.PRCHK_APP == 2 and Prinfo.PRCHK_GUARD == 4 and Prinfo.PRACT == 8
    # Linux: NVME_RW_PRINFO_PRCHK_REF (1 << 10) .. PRACT (1 << 13) of the control word, i.e. CDW12 bits 26..29
    assert Prinfo.PRCHK_REF << PRINFO_SHIFT == 1 << 26
    assert Prinfo.PRACT << PRINFO_SHIFT == 1 << 29
    assert Prinfo.PRCHK_ALL == 7


def test_escape_rules():
    assert APP_TAG_ESCAPE == 0xFFFF and REF_TAG_ESCAPE == 0xFFFFFFFF
    for t in (PiType.TYPE1, PiType.TYPE2):
        assert pi_checks_disabled(t, 0xFFFF, 0)
        assert not pi_checks_disabled(t, 0xFFFE, 0xFFFFFFFF)
    assert not pi_checks_disabled(PiType.TYPE3, 0xFFFF, 0)
    assert not pi_checks_disabled(PiType.TYPE3, 0, 0xFFFFFFFF)
    assert pi_checks_disabled(PiType.TYPE3, 0xFFFF, 0xFFFFFFFF)
    assert PiTuple(app_tag=0xFFFF, ref_tag=5).checks_disabled(1)
    with pytest.raises(ValueError):
        pi_checks_disabled(4, 0, 0)


def test_expected_reference_tags():
    assert expected_ref_tag(PiType.TYPE1, 0, slba=0x1_0000_0005) == 5
    assert expected_ref_tag(PiType.TYPE1, 3, slba=0xFFFFFFFE) == 1
    assert expected_ref_tag(PiType.TYPE2, 0, slba=99, ilbrt=0x100) == 0x100
    assert expected_ref_tag(PiType.TYPE2, 2, ilbrt=0xFFFFFFFF) == 1
    assert expected_ref_tag(PiType.TYPE3, 4, slba=9, ilbrt=9) is None
    assert expected_ref_tag(PiType.NONE, 0) is None
    with pytest.raises(ValueError):
        expected_ref_tag(PiType.TYPE1, -1)


def test_app_tag_mask_and_position():
    assert app_tag_matches(0x12FF, 0x1200, 0xFF00)
    assert not app_tag_matches(0x13FF, 0x1200, 0xFF00)
    assert app_tag_matches(0xABCD, 0, 0)
    assert pi_offset_in_metadata(8) == 0
    assert pi_offset_in_metadata(64) == 56
    assert pi_offset_in_metadata(64, pi_first=True) == 0
    with pytest.raises(ValueError):
        pi_offset_in_metadata(4)
