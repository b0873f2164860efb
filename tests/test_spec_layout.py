import pytest

from nvmestack.spec.layout import (
    Array,
    Bits,
    Field,
    Flag,
    IntArray,
    Raw,
    Str,
    Struct,
    Sub,
)


class Inner(Struct):
    SIZE = 4
    a = Field(0, 2)
    b = Field(2, 2)


class Sample(Struct):
    SIZE = 48
    DEFAULTS = {"u8": 0x5A}
    u8 = Field(0, 1)
    u16 = Field(2, 2)
    u32 = Field(4, 4)
    u64 = Field(8, 8)
    u24 = Field(16, 3)
    word = Field(20, 4)
    low = Bits(20, 4, 0, 4)
    mid = Bits(20, 4, 4, 12)
    top = Flag(20, 4, 31)
    text = Str(24, 8)
    blob = Raw(32, 4)
    inner = Sub(36, Inner)
    ints = IntArray(40, 2, 2)
    inners = Array(44, Inner, 1)


def test_defaults_and_keywords():
    s = Sample(u16=0x1234)
    assert s.u8 == 0x5A and s.u16 == 0x1234
    assert bytes(s)[2:4] == b"\x34\x12"
    with pytest.raises(TypeError):
        Sample(nope=1)


def test_little_endian_offsets():
    s = Sample(u32=0x11223344, u64=0x0102030405060708, u24=0xABCDEF)
    raw = bytes(s)
    assert raw[4:8] == bytes.fromhex("44332211")
    assert raw[8:16] == bytes.fromhex("0807060504030201")
    assert raw[16:19] == bytes.fromhex("efcdab")
    assert Sample.decode(raw).u24 == 0xABCDEF


def test_bits_read_modify_write():
    s = Sample()
    s.mid = 0xFFF
    s.low = 0x3
    s.top = True
    assert s.word == 0x8000FFF3
    s.mid = 0
    assert s.word == 0x80000003 and s.top is True and s.low == 3
    with pytest.raises(ValueError):
        s.low = 16
    with pytest.raises(ValueError):
        s.u8 = 256
    with pytest.raises(ValueError):
        s.u16 = -1


def test_view_shares_memory_without_copy():
    buf = bytearray(100)
    s = Sample.view(buf, 10)
    s.u16 = 0xBEEF
    assert buf[12:14] == b"\xef\xbe"
    buf[14] = 7
    assert s.u32 == 7
    with pytest.raises(ValueError):
        Sample.view(buf, 60)


def test_view_of_bytes_is_read_only():
    s = Sample.decode(bytes(48))
    with pytest.raises(TypeError):
        s.u8 = 1


def test_strings_raw_nested_arrays():
    s = Sample(text="AB", blob=b"wxyz", ints=[1, 0xFFFF])
    assert bytes(s)[24:32] == b"AB      "
    assert s.text == "AB"
    with pytest.raises(ValueError):
        s.text = "too long text"
    assert bytes(s.blob) == b"wxyz"
    with pytest.raises(ValueError):
        s.blob = b"abc"
    s.inner.b = 0x0102
    assert bytes(s)[38:40] == b"\x02\x01"
    s.inners[0].a = 9
    assert bytes(s)[44] == 9
    assert list(s.ints) == [1, 0xFFFF]
    with pytest.raises(IndexError):
        s.ints[2]


def test_round_trip_and_copy():
    s = Sample(u16=3, text="X", mid=5)
    t = Sample.from_bytes(bytes(s))
    assert t == s and t.to_dict() == s.to_dict()
    t.u16 = 4
    assert s.u16 == 3


def test_field_beyond_size_is_rejected():
    with pytest.raises(TypeError):

        class Bad(Struct):
            SIZE = 4
            x = Field(2, 4)


class WithProperty(Struct):
    SIZE = 4
    n0 = Field(0, 2)

    @property
    def count(self):
        return self.n0 + 1

    @count.setter
    def count(self, value):
        self.n0 = value - 1


def test_keywords_may_name_settable_properties():
    assert WithProperty(count=5).n0 == 4
    with pytest.raises(TypeError):
        WithProperty(size=1)
