import uuid

import pytest

from nvmestack.spec.cqe import Completion
from nvmestack.spec.dptr import SglSubtype, SglType
from nvmestack.spec.fabrics import (
    CNTLID_DYNAMIC,
    CNTLID_STATIC_ANY,
    DISCOVERY_NQN,
    NQN_MAX_LEN,
    UUID_NQN_PREFIX,
    AuthenticationReceive,
    AuthenticationSend,
    Connect,
    ConnectData,
    ConnectInvalidParameters,
    ConnectResult,
    Disconnect,
    FabricsCommand,
    PropertyGet,
    PropertyGetResult,
    PropertySet,
    PropertySize,
    QueuePriority,
    is_valid_nqn,
    nqn_problem,
    uuid_nqn,
    validate_nqn,
)
from nvmestack.spec.sqe import Command, command_class


def le(value, size):
    return value.to_bytes(size, "little")


# --- the common Fabrics format and the registry ------------------------------


@pytest.mark.parametrize(
    "cls, fctype",
    [(PropertySet, 0x00), (Connect, 0x01), (PropertyGet, 0x04), (AuthenticationSend, 0x05),
     (AuthenticationReceive, 0x06), (Disconnect, 0x08)],
)
def test_fabrics_types_register_and_default(cls, fctype):
    assert cls.SIZE == 64
    raw = bytes(cls(cid=0x1234))
    assert raw[0] == 0x7F  # opcode
    assert raw[4] == fctype  # FCTYPE at byte 4
    assert raw[2:4] == b"\x34\x12"
    # Found by FCTYPE whichever queue the command came in on.
    assert command_class(True, 0x7F, fctype) is cls
    assert command_class(False, 0x7F, fctype) is cls
    assert issubclass(cls, FabricsCommand)


def test_fabrics_lookup_misses_fall_back():
    assert command_class(True, 0x7F, 0x02) is Command  # reserved FCTYPE
    assert command_class(True, 0x7F, None) is Command


def test_fabrics_common_decode():
    raw = bytearray(64)
    raw[0], raw[2:4], raw[4] = 0x7F, le(7, 2), 0x04
    c = FabricsCommand.decode(raw)
    assert (c.opcode, c.cid, c.fctype) == (0x7F, 7, 4)
    assert command_class(True, c.opcode, c.fctype) is PropertyGet
    assert PropertyGet.view(raw).fctype == 4


def test_fabrics_sgl1_at_24():
    c = Connect()
    c.sgl1.sgl_type = SglType.DATA_BLOCK
    c.sgl1.sgl_subtype = SglSubtype.OFFSET
    c.sgl1.length = 1024
    raw = bytes(c)
    assert raw[32:36] == le(1024, 4)
    assert raw[39] == 0x01


# --- Property Set / Get --------------------------------------------------------


def test_property_set_layout():
    c = PropertySet(attrib_size=PropertySize.EIGHT_BYTES, ofst=0x14, value=0x0123456789ABCDEF)
    raw = bytes(c)
    assert raw[40] == 0x01
    assert raw[41:44] == b"\0\0\0"
    assert raw[44:48] == le(0x14, 4)
    assert raw[48:56] == le(0x0123456789ABCDEF, 8)
    assert raw[56:64] == bytes(8)
    assert c.value_size == 8


def test_property_set_decode_from_raw():
    raw = bytearray(64)
    raw[0], raw[4] = 0x7F, 0x00
    raw[40] = 0x00
    raw[44:48] = le(0x1C, 4)
    raw[48:56] = le(0xAABBCCDD, 8)
    c = PropertySet.decode(raw)
    assert (c.attrib_size, c.ofst, c.value, c.value_size) == (0, 0x1C, 0xAABBCCDD, 4)
    c.value = 1  # writes land in the caller's buffer
    assert raw[48] == 1


def test_property_attrib_size_is_three_bits():
    c = PropertyGet(attrib=0xF8)  # reserved upper bits set
    assert c.attrib_size == 0
    c.attrib_size = 7
    assert bytes(c)[40] == 0xFF
    with pytest.raises(ValueError):
        c.attrib_size = 8
    with pytest.raises(ValueError, match="reserved"):
        c.value_size


def test_property_get_layout():
    raw = bytes(PropertyGet(attrib_size=1, ofst=0x08))
    assert raw[4] == 0x04 and raw[40] == 1 and raw[44:48] == le(8, 4)
    assert raw[48:64] == bytes(16)
    assert not hasattr(PropertyGet, "value")


def test_property_get_result_in_completion():
    cqe = Completion(dw0=0x89ABCDEF, dw1=0x01234567)
    res = PropertyGetResult.view(cqe.raw)
    assert res.SIZE == 8
    assert res.value == 0x0123456789ABCDEF
    assert (res.value_lo, res.value_hi) == (0x89ABCDEF, 0x01234567)
    res.value = 0x1122334455667788
    assert (cqe.dw0, cqe.dw1) == (0x55667788, 0x11223344)


# --- Connect / Disconnect ----------------------------------------------------------


def test_connect_layout():
    c = Connect(recfmt=0, qid=3, sqsize=127, priority=QueuePriority.MEDIUM, disable_sqflow=True, kato=120000)
    raw = bytes(c)
    assert raw[40:42] == le(0, 2)
    assert raw[42:44] == le(3, 2)
    assert raw[44:46] == le(127, 2)
    assert raw[46] == 0b110  # priority bits 1:0 = 10b, SQ flow control disable bit 2
    assert raw[47] == 0
    assert raw[48:52] == le(120000, 4)
    assert raw[52:64] == bytes(12)
    assert c.queue_entries == 128


def test_connect_decode_and_cattr_bits():
    raw = bytearray(64)
    raw[0], raw[4] = 0x7F, 0x01
    raw[40:42] = le(0, 2)
    raw[42:44] = le(0, 2)
    raw[44:46] = le(31, 2)
    raw[46] = 0b1011
    raw[48:52] = le(5000, 4)
    c = Connect.view(raw)
    assert (c.qid, c.sqsize, c.queue_entries, c.kato) == (0, 31, 32, 5000)
    assert c.priority == QueuePriority.LOW
    assert c.disable_sqflow is False
    assert c.io_queue_deletion is True


def test_connect_queue_entries_is_zero_based():
    c = Connect()
    c.queue_entries = 32
    assert bytes(c)[44:46] == le(31, 2)
    c.queue_entries = 65536
    assert c.sqsize == 0xFFFF
    with pytest.raises(ValueError):
        c.queue_entries = 0
    with pytest.raises(ValueError):
        c.sqsize = 0x10000


def test_disconnect_layout():
    raw = bytes(Disconnect(recfmt=0, cid=9))
    assert raw[0] == 0x7F and raw[4] == 0x08 and raw[40:64] == bytes(24)
    d = Disconnect.decode(bytes(raw[:40]) + le(1, 2) + bytes(22))
    assert d.recfmt == 1


def test_authentication_commands():
    s = AuthenticationSend(spsp0=0x01, spsp1=0x02, secp=0xE9, tl=256)
    raw = bytes(s)
    assert raw[40] == 0 and raw[41] == 0x01 and raw[42] == 0x02 and raw[43] == 0xE9
    assert raw[44:48] == le(256, 4)
    r = AuthenticationReceive.decode(raw[:4] + b"\x06" + raw[5:])
    assert (r.fctype, r.secp, r.al) == (0x06, 0xE9, 256)


# --- Connect data ---------------------------------------------------------------


def test_connect_data_offsets():
    assert ConnectData.SIZE == 1024
    host = uuid.UUID("f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
    d = ConnectData(hostid=host.bytes, cntlid=CNTLID_DYNAMIC,
                    subsysnqn="nqn.2016-06.io.spdk:cnode1", hostnqn=uuid_nqn(host))
    raw = bytes(d)
    assert raw[0:16] == host.bytes
    assert raw[16:18] == b"\xff\xff"
    assert raw[18:256] == bytes(238)
    sub = b"nqn.2016-06.io.spdk:cnode1"
    assert raw[256 : 256 + len(sub)] == sub and raw[256 + len(sub) : 512] == bytes(256 - len(sub))
    hostnqn = ("nqn.2014-08.org.nvmexpress:uuid:" + str(host)).encode()
    assert raw[512 : 512 + len(hostnqn)] == hostnqn and raw[512 + len(hostnqn) : 768] == bytes(256 - len(hostnqn))
    assert raw[768:1024] == bytes(256)
    assert d.host_uuid == host


def test_connect_data_decode_from_raw():
    raw = bytearray(1024)
    raw[0:16] = bytes(range(16))
    raw[16:18] = le(CNTLID_STATIC_ANY, 2)
    raw[256 : 256 + len(DISCOVERY_NQN)] = DISCOVERY_NQN.encode()
    raw[512:520] = b"nqn.host"
    d = ConnectData.decode(raw)
    assert bytes(d.hostid) == bytes(range(16))
    assert d.cntlid == 0xFFFE
    assert d.subsysnqn == DISCOVERY_NQN
    assert d.hostnqn == "nqn.host"
    d.host_uuid = "00112233-4455-6677-8899-aabbccddeeff"
    assert raw[0:16] == bytes.fromhex("00112233445566778899aabbccddeeff")


def test_connect_data_rejects_bad_values():
    d = ConnectData()
    with pytest.raises(ValueError):
        d.subsysnqn = "n" * 257
    with pytest.raises(ValueError):
        d.hostid = b"short"
    with pytest.raises(ValueError):
        d.cntlid = 0x10000


def test_connect_data_round_trip():
    d = ConnectData(hostid=bytes(range(16, 32)), cntlid=5, subsysnqn="nqn.2014-08.org.example:sub",
                    hostnqn="nqn.2014-08.org.example:host")
    back = ConnectData.from_bytes(bytes(d))
    assert back == d
    assert back.to_dict()["cntlid"] == 5
    assert back.hostnqn == "nqn.2014-08.org.example:host"


# --- Connect completion results ----------------------------------------------------


def test_connect_result_in_dw0():
    cqe = Completion(dw0=(1 << 18) | (1 << 17) | 0x0042)
    r = ConnectResult.view(cqe.raw)
    assert r.SIZE == 4
    assert r.cntlid == 0x42
    assert r.authreq == 0b110
    assert r.atr and r.ascr  # Linux NVME_CONNECT_AUTHREQ_ATR = 1 << 17, ASCR = 1 << 18
    r2 = ConnectResult(cntlid=7, atr=True)
    assert int.from_bytes(bytes(r2), "little") == (1 << 17) | 7


def test_connect_invalid_parameters_in_dw0():
    r = ConnectInvalidParameters(ipo=512, in_data=True)
    assert bytes(r) == le(512, 2) + b"\x01\x00"
    cqe = Completion(dw0=int.from_bytes(bytes(r), "little"), sct=1, sc=0x82)
    back = ConnectInvalidParameters.view(cqe.raw)
    assert (back.ipo, back.iattr, back.in_data) == (512, 1, True)
    assert ConnectInvalidParameters.decode(le(42, 2) + b"\x00\x00").in_data is False


# --- NQNs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nqn",
    [
        DISCOVERY_NQN,
        "nqn.2014-08.com.example:nvme:nvm-subsystem-sn-d78432",
        "nqn.2016-06.io.spdk:cnode1",
        "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "nqn.1992-05.com.emc:ckm00190300716",
        "nqn.2014-08.org.example:" + "x" * (NQN_MAX_LEN - len("nqn.2014-08.org.example:")),
    ],
)
def test_valid_nqns(nqn):
    assert nqn_problem(nqn) is None
    assert is_valid_nqn(nqn)
    assert is_valid_nqn(nqn.encode())
    validate_nqn(nqn)


@pytest.mark.parametrize(
    "nqn, why",
    [
        ("iqn.2014-08.org.example:x", "nqn.yyyy-mm"),
        ("nqn.14-08.org.example", "nqn.yyyy-mm"),
        ("nqn.2014-13.org.example:x", "month"),
        ("nqn.2014-08.:x", "reverse domain"),
        ("nqn.2014-08.org.ex_ample:x", "label"),
        ("nqn.2014-08.org.-example:x", "label"),
        ("nqn.2014-08.org..example:x", "label"),
        ("nqn.2014-08.org.example:" + "x" * (NQN_MAX_LEN - len("nqn.2014-08.org.example:") + 1), "224 bytes"),
        ("nqn.2014-08.org.example:a\0b", "NUL"),
        (UUID_NQN_PREFIX + "not-a-uuid", "UUID"),
        (UUID_NQN_PREFIX + "f81d4fae7dec11d0a76500a0c91e6bf6", "UUID"),
    ],
)
def test_invalid_nqns(nqn, why):
    problem = nqn_problem(nqn)
    assert problem is not None and why in problem
    assert not is_valid_nqn(nqn)
    with pytest.raises(ValueError, match="invalid NQN"):
        validate_nqn(nqn)


def test_nqn_length_counts_utf8_bytes():
    base = "nqn.2014-08.org.example:"
    ok = base + "é" * ((NQN_MAX_LEN - len(base)) // 2)
    assert is_valid_nqn(ok)
    assert not is_valid_nqn(ok + "é")
    assert not is_valid_nqn(b"nqn.2014-08.org.example:\xff")


def test_uuid_nqn():
    u = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    assert uuid_nqn(u) == "nqn.2014-08.org.nvmexpress:uuid:00112233-4455-6677-8899-aabbccddeeff"
    assert uuid_nqn(str(u)) == uuid_nqn(u)
    fresh = uuid_nqn()
    assert fresh.startswith(UUID_NQN_PREFIX) and is_valid_nqn(fresh) and fresh != uuid_nqn()
