import pytest

from nvmestack.spec import tcp
from nvmestack.spec.cqe import Completion
from nvmestack.spec.fabrics import Connect, FabricsCommand
from nvmestack.spec.sqe import Command, command_class
from nvmestack.spec.tcp import (
    R2T,
    C2HData,
    C2HTermReq,
    CapsuleCmd,
    CapsuleResp,
    DigestType,
    FatalErrorStatus,
    H2CData,
    H2CTermReq,
    ICReq,
    ICResp,
    PduFlags,
    PduFormatError,
    PduHeader,
    PduType,
)


def le(value, size):
    return value.to_bytes(size, "little")


def ref_crc32c(data):
    """Bit-at-a-time CRC32C (reflected polynomial 82F63B78h), independent of
    the C library the module uses."""
    crc = 0xFFFFFFFF
    for byte in bytes(data):
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


# --- coded values ------------------------------------------------------------


def test_pdu_type_values():
    assert [int(t) for t in PduType] == [0, 1, 2, 3, 4, 5, 6, 7, 9]
    assert PduType.R2T == 0x09 and PduType.C2H_DATA == 0x07 and PduType.CAPSULE_CMD == 0x04


def test_flag_and_digest_bits():
    assert (PduFlags.HDGSTF, PduFlags.DDGSTF, PduFlags.LAST_PDU, PduFlags.SUCCESS) == (1, 2, 4, 8)
    assert (DigestType.HDGST_ENABLE, DigestType.DDGST_ENABLE) == (1, 2)


def test_fatal_error_status_values():
    # Linux include/linux/nvme-tcp.h enum nvme_tcp_fatal_error_status
    assert FatalErrorStatus.INVALID_HEADER_FIELD == 0x01
    assert FatalErrorStatus.PDU_SEQUENCE_ERROR == 0x02
    assert FatalErrorStatus.HEADER_DIGEST_ERROR == 0x03
    assert FatalErrorStatus.DATA_TRANSFER_OUT_OF_RANGE == 0x04
    assert FatalErrorStatus.R2T_LIMIT_EXCEEDED == FatalErrorStatus.DATA_TRANSFER_LIMIT_EXCEEDED == 0x05
    assert FatalErrorStatus.UNSUPPORTED_PARAMETER == 0x06


def test_facts():
    assert tcp.PFV_1_0 == 0
    assert tcp.HPDA_MAX == tcp.CPDA_MAX == 31
    assert tcp.DIGEST_LEN == 4
    assert tcp.TERM_REQ_PLEN_MAX == 152
    assert tcp.MAX_HLEN == max(tcp.HLEN.values()) == 128
    assert tcp.HOST_TO_CONTROLLER | tcp.CONTROLLER_TO_HOST == set(PduType)
    assert not tcp.HOST_TO_CONTROLLER & tcp.CONTROLLER_TO_HOST
    assert PduType.R2T in tcp.CONTROLLER_TO_HOST and PduType.H2C_DATA in tcp.HOST_TO_CONTROLLER


# --- header sizes and offsets --------------------------------------------------


@pytest.mark.parametrize(
    "cls, pdu_type, size",
    [(ICReq, 0, 128), (ICResp, 1, 128), (H2CTermReq, 2, 24), (C2HTermReq, 3, 24), (CapsuleCmd, 4, 72),
     (CapsuleResp, 5, 24), (H2CData, 6, 24), (C2HData, 7, 24), (R2T, 9, 24)],
)
def test_header_sizes_and_defaults(cls, pdu_type, size):
    assert cls.SIZE == size == tcp.HLEN[pdu_type]
    raw = bytes(cls())
    assert len(raw) == size
    assert raw[0] == pdu_type
    assert raw[2] == size  # HLEN
    assert tcp.header_class(pdu_type) is cls


def test_common_header_offsets():
    assert PduHeader.SIZE == 8
    h = PduHeader(pdu_type=4, flags=0x03, hlen=72, pdo=76, plen=0x01020304)
    assert bytes(h) == bytes([4, 0x03, 72, 76]) + bytes.fromhex("04030201")
    h = PduHeader.decode(bytes([7, 0x0C, 24, 24]) + le(536, 4))
    assert (h.pdu_type, h.hdgstf, h.ddgstf, h.hlen, h.pdo, h.plen) == (7, False, False, 24, 24, 536)
    h2 = PduHeader(hdgstf=True)
    assert bytes(h2)[1] == 0x01
    h2.ddgstf = True
    assert bytes(h2)[1] == 0x03


def test_icreq_offsets():
    r = ICReq(pfv=0, hpda=3, hdgst_enable=True, ddgst_enable=True, maxr2t=0x00FFFFFF)
    raw = bytes(r)
    assert raw[:8] == bytes([0, 0, 128, 0]) + le(128, 4)  # PLEN 128 by default
    assert raw[8:10] == b"\0\0"
    assert raw[10] == 3
    assert raw[11] == 0x03
    assert raw[12:16] == le(0x00FFFFFF, 4)
    assert raw[16:] == bytes(112)
    buf = bytearray(128)
    buf[0], buf[2], buf[4:8] = 0, 128, le(128, 4)
    buf[10], buf[11], buf[12:16] = 31, 0x02, le(7, 4)
    back = ICReq.decode(buf)
    assert (back.hpda, back.dgst, back.hdgst_enable, back.ddgst_enable, back.maxr2t) == (31, 2, False, True, 7)


def test_icresp_offsets():
    r = ICResp(cpda=1, dgst=DigestType.HDGST_ENABLE, maxh2cdata=131072)
    raw = bytes(r)
    assert raw[0] == 1 and raw[2] == 128 and raw[4:8] == le(128, 4)
    assert raw[10] == 1 and raw[11] == 1 and raw[12:16] == le(131072, 4)
    back = ICResp.from_bytes(raw)
    assert back == r and back.maxh2cdata == 131072 and back.hdgst_enable and not back.ddgst_enable


def test_term_req_offsets():
    t = C2HTermReq(fes=FatalErrorStatus.INVALID_HEADER_FIELD, fei=0x11223344)
    raw = bytes(t)
    assert raw[0] == 3 and raw[2] == 24
    assert raw[8:10] == le(1, 2)
    assert raw[10:14] == le(0x11223344, 4)
    assert raw[14:24] == bytes(10)
    back = H2CTermReq.decode(bytes([2, 0, 24, 0]) + le(24, 4) + le(6, 2) + le(9, 4) + bytes(10))
    assert (back.fes, back.fei) == (FatalErrorStatus.UNSUPPORTED_PARAMETER, 9)


def test_capsule_cmd_carries_sqe():
    sqe = Connect(cid=0x55, qid=1, sqsize=31)
    cap = CapsuleCmd(cmd=sqe)
    raw = bytes(cap)
    assert raw[8:72] == bytes(sqe)
    assert raw[0] == 4 and raw[2] == 72
    view = cap.cmd
    assert isinstance(view, Command) and view.cid == 0x55
    fctype = FabricsCommand.view(cap.raw, 8).fctype
    typed = command_class(True, view.opcode, fctype).view(cap.raw, 8)
    assert isinstance(typed, Connect) and typed.sqsize == 31
    typed.kato = 1000  # writes into the PDU buffer
    assert bytes(cap)[8 + 48 : 8 + 52] == le(1000, 4)


def test_capsule_resp_carries_cqe():
    cqe = Completion(dw0=0xABCD, sqhd=3, cid=0x55, sc=2, dnr=1)
    r = CapsuleResp(cqe=cqe)
    raw = bytes(r)
    assert raw[8:24] == bytes(cqe)
    back = CapsuleResp.decode(raw)
    assert (back.cqe.cid, back.cqe.sc, back.cqe.dnr, back.cqe.dw0) == (0x55, 2, True, 0xABCD)


def test_h2c_data_offsets():
    d = H2CData(cccid=0x1234, ttag=0x5678, datao=0x1000, datal=0x200, last_pdu=True)
    raw = bytes(d)
    assert raw[0] == 6 and raw[1] == 0x04 and raw[2] == 24
    assert raw[8:10] == le(0x1234, 2)
    assert raw[10:12] == le(0x5678, 2)
    assert raw[12:16] == le(0x1000, 4)
    assert raw[16:20] == le(0x200, 4)
    assert raw[20:24] == bytes(4)


def test_c2h_data_offsets_and_flags():
    raw = bytes([7, 0x0C | 0x01, 24, 28]) + le(28 + 512, 4) + le(9, 2) + b"\0\0" + le(4096, 4) + le(512, 4) + bytes(4)
    d = C2HData.decode(raw)
    assert (d.cccid, d.datao, d.datal) == (9, 4096, 512)
    assert d.last_pdu and d.success and d.hdgstf and not d.ddgstf
    assert not hasattr(C2HData, "ttag")
    assert bytes(C2HData(success=True, last_pdu=True))[1] == 0x0C


def test_r2t_offsets():
    r = R2T(cccid=1, ttag=2, r2to=0x3000, r2tl=0x4000)
    raw = bytes(r)
    assert raw[0] == 9
    assert raw[8:10] == le(1, 2) and raw[10:12] == le(2, 2)
    assert raw[12:16] == le(0x3000, 4) and raw[16:20] == le(0x4000, 4)
    assert R2T.from_bytes(raw) == r


def test_decode_header_dispatch():
    raw = bytearray(bytes(R2T(cccid=5)) + b"trailing")
    h = tcp.decode_header(raw)
    assert isinstance(h, R2T) and h.cccid == 5
    h.r2tl = 64
    assert raw[16:20] == le(64, 4)  # a view, no copy
    raw[0] = 0x08
    with pytest.raises(ValueError, match="unknown"):
        tcp.decode_header(raw)
    with pytest.raises(ValueError):
        tcp.decode_header(bytes(4))


def test_field_range_errors():
    with pytest.raises(ValueError):
        H2CData(cccid=0x10000)
    with pytest.raises(ValueError):
        ICReq(hpda=256)
    with pytest.raises(TypeError):
        C2HData(ttag=1)


# --- layout ---------------------------------------------------------------------


def test_layout_command_without_data():
    lay = tcp.pdu_layout(PduType.CAPSULE_CMD)
    assert (lay.hlen, lay.pdo, lay.plen, lay.hdgst, lay.ddgst, lay.data_len) == (72, 0, 72, False, False, 0)
    lay = tcp.pdu_layout(PduType.CAPSULE_CMD, hdgst=True, ddgst=True)
    assert (lay.pdo, lay.plen, lay.hdgst, lay.ddgst) == (0, 76, True, False)  # no data, no data digest
    assert lay.hdgst_offset == 72 and lay.ddgst_offset is None
    assert lay.flags == PduFlags.HDGSTF


def test_layout_in_capsule_data_cpda_zero():
    lay = tcp.pdu_layout(PduType.CAPSULE_CMD, 4096)
    assert (lay.pdo, lay.data_offset, lay.plen, lay.pad) == (72, 72, 72 + 4096, 0)
    lay = tcp.pdu_layout(PduType.CAPSULE_CMD, 4096, hdgst=True, ddgst=True)
    assert (lay.pdo, lay.plen, lay.pad) == (76, 76 + 4096 + 4, 0)
    assert lay.ddgst_offset == 76 + 4096
    assert lay.flags == PduFlags.HDGSTF | PduFlags.DDGSTF


def test_layout_in_capsule_data_cpda_nonzero():
    # CPDA 7: data at multiples of 32 bytes; 72 + 4 = 76 rounds up to 96.
    lay = tcp.pdu_layout(PduType.CAPSULE_CMD, 4096, hdgst=True, ddgst=True, pda=7)
    assert (lay.pdo, lay.pad, lay.plen) == (96, 20, 96 + 4096 + 4)
    # Without the header digest: 72 rounds up to 96 as well.
    lay = tcp.pdu_layout(PduType.CAPSULE_CMD, 100, pda=7)
    assert (lay.pdo, lay.pad, lay.plen) == (96, 24, 196)
    # CPDA 1 (8 bytes): 72 is already aligned, 76 is not.
    assert tcp.pdu_layout(PduType.H2C_DATA, 8, pda=1).pdo == 24
    assert tcp.pdu_layout(PduType.H2C_DATA, 8, hdgst=True, pda=1).pdo == 32


def test_layout_data_pdus():
    lay = tcp.pdu_layout(PduType.C2H_DATA, 512)
    assert (lay.pdo, lay.plen) == (24, 536)
    lay = tcp.pdu_layout(PduType.C2H_DATA, 512, hdgst=True, ddgst=True, pda=31)
    assert (lay.pdo, lay.plen, lay.pad) == (128, 128 + 512 + 4, 100)
    lay = tcp.pdu_layout(PduType.H2C_DATA, 1, ddgst=True)
    assert (lay.pdo, lay.plen, lay.ddgst_offset) == (24, 29, 25)


def test_layout_fixed_pdus_ignore_digests():
    for kind in (PduType.ICREQ, PduType.ICRESP):
        lay = tcp.pdu_layout(kind, hdgst=True, ddgst=True)
        assert (lay.hlen, lay.pdo, lay.plen, lay.hdgst, lay.ddgst) == (128, 0, 128, False, False)
    for kind in (PduType.CAPSULE_RESP, PduType.R2T):
        assert tcp.pdu_layout(kind).plen == 24
        assert tcp.pdu_layout(kind, hdgst=True).plen == 28


def test_layout_term_req():
    lay = tcp.pdu_layout(PduType.C2H_TERM_REQ, 72, hdgst=True, ddgst=True, pda=31)
    assert (lay.hdgst, lay.ddgst, lay.pdo, lay.data_offset, lay.plen) == (False, False, 0, 24, 96)


def test_layout_errors():
    with pytest.raises(ValueError, match="no data"):
        tcp.pdu_layout(PduType.R2T, 4)
    with pytest.raises(ValueError, match="no data"):
        tcp.pdu_layout(PduType.ICREQ, 1)
    with pytest.raises(ValueError, match="at most 128"):
        tcp.pdu_layout(PduType.H2C_TERM_REQ, 129)
    with pytest.raises(ValueError, match="alignment"):
        tcp.pdu_layout(PduType.H2C_DATA, 8, pda=32)
    with pytest.raises(ValueError):
        tcp.pdu_layout(PduType.H2C_DATA, -1)
    with pytest.raises(ValueError):
        tcp.pdu_layout(0x08, 0)


@pytest.mark.parametrize("kind", [PduType.CAPSULE_CMD, PduType.H2C_DATA, PduType.C2H_DATA])
@pytest.mark.parametrize("data_len", [0, 1, 4096])
@pytest.mark.parametrize("hdgst", [False, True])
@pytest.mark.parametrize("ddgst", [False, True])
@pytest.mark.parametrize("pda", [0, 3, 31])
def test_layout_round_trip_through_header(kind, data_len, hdgst, ddgst, pda):
    lay = tcp.pdu_layout(kind, data_len, hdgst=hdgst, ddgst=ddgst, pda=pda)
    hdr = tcp.header_class(kind)()
    hdr.set_layout(lay)
    assert tcp.parse_layout(bytes(hdr), pda=pda, hdgst=hdgst, ddgst=ddgst if data_len else None) == lay


def test_set_layout_keeps_other_flags():
    d = C2HData(last_pdu=True, success=True)
    d.set_layout(tcp.pdu_layout(PduType.C2H_DATA, 16, hdgst=True, ddgst=True))
    assert bytes(d)[1] == 0x0F and d.plen == 28 + 16 + 4 and d.pdo == 28


def _hdr(kind, flags=0, hlen=None, pdo=0, plen=None):
    hlen = tcp.HLEN[kind] if hlen is None else hlen
    return bytes([kind, flags, hlen, pdo]) + le(hlen if plen is None else plen, 4)


@pytest.mark.parametrize(
    "raw, fei",
    [
        (_hdr(0x08, hlen=24), 0),  # unknown PDU type
        (_hdr(PduType.R2T, hlen=28), 2),  # HLEN wrong for the type
        (_hdr(PduType.ICREQ, flags=1), 1),  # ICReq never has digests
        (_hdr(PduType.R2T, flags=2, plen=28), 1),  # DDGSTF on a PDU type without data
        (_hdr(PduType.R2T, pdo=24, plen=24), 3),  # PDO on a PDU type without data
        (_hdr(PduType.R2T, plen=30), 4),  # PLEN not the header length
        (_hdr(PduType.C2H_DATA, pdo=20, plen=100), 3),  # data inside the header
        (_hdr(PduType.C2H_DATA, flags=1, pdo=24, plen=100), 3),  # data over the header digest
        (_hdr(PduType.C2H_DATA, flags=2, pdo=24, plen=26), 4),  # PLEN too short for the data digest
        (_hdr(PduType.C2H_TERM_REQ, plen=24 + 129), 4),  # too much TermReq data
        (_hdr(PduType.H2C_TERM_REQ, plen=20), 4),
    ],
)
def test_parse_layout_errors(raw, fei):
    with pytest.raises(PduFormatError) as err:
        tcp.parse_layout(raw)
    assert err.value.fes == FatalErrorStatus.INVALID_HEADER_FIELD
    assert err.value.fei == fei


def test_parse_layout_checks_negotiated_values():
    raw = _hdr(PduType.H2C_DATA, pdo=28, plen=28 + 64)
    lay = tcp.parse_layout(raw)  # 4 pad bytes after the 24-byte header, then 64 data bytes
    assert (lay.data_offset, lay.data_len, lay.pad) == (28, 64, 4)
    with pytest.raises(PduFormatError) as err:
        tcp.parse_layout(raw, pda=3)  # 28 is not a multiple of 16
    assert err.value.fei == 3
    with pytest.raises(PduFormatError) as err:
        tcp.parse_layout(raw, hdgst=True)  # header digests negotiated but HDGSTF clear
    assert err.value.fei == 1
    with pytest.raises(PduFormatError):
        tcp.parse_layout(raw, ddgst=True)
    with pytest.raises(ValueError):
        tcp.parse_layout(raw[:7])


def test_parse_layout_term_req_data():
    pdu = tcp.term_req(PduType.H2C_TERM_REQ, FatalErrorStatus.HEADER_DIGEST_ERROR, 0, bytes(R2T()))
    lay = tcp.parse_layout(pdu)
    assert (lay.data_offset, lay.data_len, lay.plen) == (24, 24, 48)


# --- framing ---------------------------------------------------------------------


def _stream():
    resp = CapsuleResp(cqe=Completion(cid=1))
    resp.set_layout(tcp.pdu_layout(PduType.CAPSULE_RESP))
    data = C2HData(cccid=2, datal=10, last_pdu=True)
    data.set_layout(tcp.pdu_layout(PduType.C2H_DATA, 10))
    r2t = R2T(cccid=3, r2tl=512)
    r2t.set_layout(tcp.pdu_layout(PduType.R2T))
    return [bytes(resp), bytes(data) + b"0123456789", bytes(r2t)]


def test_pdu_needed_grows_from_header_to_plen():
    pdus = _stream()
    stream = b"".join(pdus)
    assert tcp.pdu_needed(b"") == 8
    assert tcp.pdu_needed(stream[:7]) == 8
    assert tcp.pdu_needed(stream[:8]) == 24
    assert tcp.pdu_needed(stream, 24) == 34
    assert tcp.pdu_needed(stream[: 24 + 34 + 3], 24 + 34) == 8
    assert tcp.pdu_needed(stream[: 24 + 34 + 8], 24 + 34) == 24


def test_next_pdu_reframes_without_copies():
    pdus = _stream()
    buf = bytearray(b"".join(pdus))
    offset, found = 0, []
    while (pdu := tcp.next_pdu(buf, offset)) is not None:
        found.append(pdu)
        offset += len(pdu)
    assert [bytes(p) for p in found] == pdus
    assert offset == len(buf)
    found[1][24] = ord("X")  # a view into buf
    assert buf[24 + 24] == ord("X")
    # Byte by byte, a PDU appears only when its last byte has arrived.
    for cut in range(len(pdus[0]) + 1):
        got = tcp.next_pdu(bytes(buf[:cut]))
        assert (got is not None) == (cut >= 24)


def test_framing_rejects_impossible_plen():
    with pytest.raises(PduFormatError) as err:
        tcp.pdu_needed(_hdr(PduType.CAPSULE_CMD, plen=40))  # shorter than HLEN 72
    assert err.value.fei == 4
    with pytest.raises(PduFormatError):
        tcp.pdu_needed(_hdr(PduType.R2T, hlen=0, plen=4))
    with pytest.raises(PduFormatError):
        tcp.next_pdu(_hdr(PduType.C2H_DATA, pdo=24, plen=1 << 20), max_plen=65536)


# --- digests -----------------------------------------------------------------------


def test_crc32c_check_value_and_wire_order():
    assert tcp.crc32c(b"123456789") == 0xE3069283 == ref_crc32c(b"123456789")
    assert tcp.crc32c(b"56789", tcp.crc32c(b"1234")) == 0xE3069283
    assert tcp.digest_bytes(0xE3069283) == bytes.fromhex("839206e3")  # little-endian on the wire


def test_header_digest_of_known_header():
    cmd = CapsuleCmd(cmd=Command(opcode=0x02, cid=0x0102, nsid=1, cdw10=0x10, cdw12=7))
    cmd.set_layout(tcp.pdu_layout(PduType.CAPSULE_CMD, hdgst=True))
    raw = bytes(cmd)
    assert raw[1] == 0x01 and raw[4:8] == le(76, 4)
    assert tcp.header_digest(raw) == ref_crc32c(raw[:72])
    pdu = bytearray(raw + bytes(4))
    tcp.put_digest(pdu, 72, tcp.header_digest(pdu))
    assert pdu[72:76] == ref_crc32c(raw).to_bytes(4, "little")
    assert tcp.get_digest(pdu, 72) == ref_crc32c(raw)
    assert tcp.header_digest_ok(pdu)
    pdu[40] ^= 0x01
    assert not tcp.header_digest_ok(pdu)
    with pytest.raises(ValueError):
        tcp.header_digest_ok(pdu[:74])


def test_header_digest_at_offset():
    resp = bytes(CapsuleResp(cqe=Completion(cid=9)))
    buf = bytes(10) + resp
    assert tcp.header_digest(buf, 10) == ref_crc32c(resp)


def test_data_digest_scatter_and_check():
    data = bytes(range(256)) * 5
    value = ref_crc32c(data)
    assert tcp.data_digest(data) == value
    assert tcp.data_digest([data[:100], memoryview(data)[100:700], bytearray(data[700:])]) == value
    wire = tcp.digest_bytes(value)
    assert tcp.data_digest_ok(data, wire)
    assert not tcp.data_digest_ok(data[:-1] + b"\0", wire)


# --- termination ------------------------------------------------------------------------


def test_term_req_builder():
    offending = bytes(H2CData(cccid=4, datal=8))
    pdu = tcp.term_req(PduType.C2H_TERM_REQ, FatalErrorStatus.INVALID_HEADER_FIELD, 16, offending)
    assert len(pdu) == 48
    hdr = C2HTermReq.view(pdu)
    assert (hdr.pdu_type, hdr.hlen, hdr.pdo, hdr.plen, hdr.flags) == (3, 24, 0, 48, 0)
    assert (hdr.fes, hdr.fei) == (1, 16)
    assert pdu[24:] == offending
    long = tcp.term_req(PduType.H2C_TERM_REQ, 2, 0, bytes(range(200)))
    assert len(long) == 152 and long[24:] == bytes(range(128))
    with pytest.raises(ValueError):
        tcp.term_req(PduType.R2T, 1)
