"""The sans-I/O NVMe/TCP streams, without sockets: every PDU type, any
split of the byte stream, digests, and the specified reaction to each kind
of bad input."""

from __future__ import annotations

import random
import struct

import pytest

from nvmestack.spec.admin import Identify
from nvmestack.spec.cqe import Completion
from nvmestack.spec.nvm import Read, Write
from nvmestack.spec.tcp import (
    C2HData,
    C2HTermReq,
    CapsuleCmd,
    CapsuleResp,
    FatalErrorStatus as FES,
    H2CData,
    H2CTermReq,
    ICReq,
    ICResp,
    PduType,
    crc32c,
    decode_header,
    term_req,
)
from nvmestack.tcp import (
    SGL_IN_CAPSULE,
    SGL_TRANSPORT,
    C2HDataReceived,
    CommandReceived,
    ConnectionClosed,
    ControllerStream,
    H2CDataReceived,
    HostStream,
    ICReqReceived,
    ICRespReceived,
    ProtocolError,
    R2TReceived,
    ResponseReceived,
    StreamState,
    TermReqReceived,
)


@pytest.fixture(autouse=True)
def io_path():
    """The sans-I/O stream has no target and no I/O path to choose between
    (conftest.io_path runs the rest of tests/tcp with both): once."""
    return None


def wire(bufs) -> bytes:
    return b"".join(bytes(b) for b in bufs)


def pair(*, hdgst=False, ddgst=False, hpda=0, cpda=0, maxh2cdata=1 << 20, max_icd=16384, maxr2t=0,
         max_c2h_data=None):
    """A connected host/controller pair (ICReq/ICResp exchanged)."""
    ctrl = ControllerStream(cpda=cpda, maxh2cdata=maxh2cdata, max_icd=max_icd, max_c2h_data=max_c2h_data)
    host = HostStream(hdgst=hdgst, ddgst=ddgst, hpda=hpda, maxr2t=maxr2t)
    (ic,) = ctrl.receive_data(wire(host.initiate()))
    assert isinstance(ic, ICReqReceived)
    (resp,) = host.receive_data(wire(ic.reply))
    assert isinstance(resp, ICRespReceived)
    return host, ctrl


def norm(events):
    """Events with their memoryviews as bytes, for comparison."""
    out = []
    for ev in events:
        fields = {}
        for name in ev.__dataclass_fields__:
            value = getattr(ev, name)
            if isinstance(value, memoryview):
                value = bytes(value)
            elif isinstance(value, list):
                value = wire(value)
            fields[name] = value
        out.append((type(ev).__name__, fields))
    return out


def error_of(events) -> ProtocolError:
    assert events and isinstance(events[-1], ProtocolError), events
    return events[-1]


def check_term(err: ProtocolError, pdu_type, fes, fei, offending: bytes | None = None):
    assert err.fes == fes and err.fei == fei, (err.fes, err.fei, err.message)
    term = wire(err.term)
    hdr = decode_header(term)
    assert hdr.pdu_type == pdu_type
    assert hdr.fes == fes and hdr.fei == fei
    assert hdr.hlen == 24 and hdr.plen == len(term) <= 24 + 128
    if offending is not None:
        assert term[24:] == offending


# ---------------------------------------------------------------------------
# Initialization


@pytest.mark.parametrize("hdgst,ddgst", [(False, False), (True, False), (False, True), (True, True)])
def test_icreq_icresp_negotiate_digests_and_alignment(hdgst, ddgst):
    ctrl = ControllerStream(cpda=3, maxh2cdata=65536)
    host = HostStream(hdgst=hdgst, ddgst=ddgst, hpda=7, maxr2t=3)
    assert host.state is ctrl.state is StreamState.AWAIT_IC
    req = wire(host.initiate())
    assert len(req) == 128 and ICReq.view(req).hpda == 7 and ICReq.view(req).maxr2t == 3
    (ev,) = ctrl.receive_data(req)
    assert (ev.pfv, ev.hpda, ev.hdgst, ev.ddgst, ev.maxr2t) == (0, 7, hdgst, ddgst, 3)
    resp = ICResp.view(wire(ev.reply))
    assert (resp.pfv, resp.cpda, resp.maxh2cdata, resp.hdgst_enable, resp.ddgst_enable) == (0, 3, 65536, hdgst, ddgst)
    (ev2,) = host.receive_data(wire(ev.reply))
    assert (ev2.cpda, ev2.hdgst, ev2.ddgst, ev2.maxh2cdata) == (3, hdgst, ddgst, 65536)
    assert host.live and ctrl.live
    assert (ctrl.hdgst, ctrl.ddgst, ctrl.tx_pda, ctrl.maxr2t) == (hdgst, ddgst, 7, 3)
    assert (host.hdgst, host.ddgst, host.tx_pda, host.maxh2cdata) == (hdgst, ddgst, 3, 65536)


def test_controller_grants_only_the_digests_it_allows():
    from nvmestack.spec.tcp import DigestType

    ctrl = ControllerStream(digests=DigestType.HDGST_ENABLE)
    host = HostStream(hdgst=True, ddgst=True)
    (ev,) = ctrl.receive_data(wire(host.initiate()))
    (ev2,) = host.receive_data(wire(ev.reply))
    assert (ev2.hdgst, ev2.ddgst) == (True, False)
    assert (ctrl.hdgst, ctrl.ddgst) == (True, False)


def test_icreq_with_other_pfv_or_hpda_is_refused():
    req = ICReq()
    req.pfv = 1
    check_term(error_of(ControllerStream().receive_data(bytes(req))), PduType.C2H_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 8, bytes(req))
    req = ICReq()
    req.hpda = 32
    check_term(error_of(ControllerStream().receive_data(bytes(req))), PduType.C2H_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 10)


@pytest.mark.parametrize("field,value,fei", [("pfv", 1, 8), ("cpda", 40, 10), ("dgst", 1, 11), ("maxh2cdata", 1000, 12),
                                             ("maxh2cdata", 4098, 12)])
def test_bad_icresp_is_refused(field, value, fei):
    host = HostStream()
    host.initiate()
    resp = ICResp(maxh2cdata=8192)
    setattr(resp, field, value)
    check_term(error_of(host.receive_data(bytes(resp))), PduType.H2C_TERM_REQ, FES.INVALID_HEADER_FIELD, fei)


def test_pdus_out_of_sequence():
    # A command before ICReq.
    host, _ = pair()
    capsule = wire(host.command(Identify(cns=1, cid=1), length=4096))
    check_term(error_of(ControllerStream().receive_data(capsule)), PduType.C2H_TERM_REQ, FES.PDU_SEQUENCE_ERROR, 0)
    # A second ICReq.
    host, ctrl = pair()
    check_term(error_of(ctrl.receive_data(bytes(ICReq()))), PduType.C2H_TERM_REQ, FES.PDU_SEQUENCE_ERROR, 0)
    # A second ICResp.
    check_term(error_of(host.receive_data(bytes(ICResp(maxh2cdata=4096)))), PduType.H2C_TERM_REQ,
               FES.PDU_SEQUENCE_ERROR, 0)


# ---------------------------------------------------------------------------
# Every PDU type, both directions


def conversation(*, hdgst, ddgst, hpda, cpda, max_c2h_data, small=False):
    """A scripted exchange with every PDU type; returns the two byte streams
    and the events each end saw when they arrived whole.  ``small`` keeps
    the data short (for the tests that try every split of the streams)."""
    W, R, FIRST = (1500, 1200, 1000) if small else (10000, 9000, 6000)
    host = HostStream(hdgst=hdgst, ddgst=ddgst, hpda=hpda, maxr2t=1)
    ctrl = ControllerStream(cpda=cpda, maxh2cdata=4096, max_icd=8192, max_c2h_data=max_c2h_data)
    h2c, c2h = bytearray(), bytearray()
    h_events, c_events = [], []

    def to_ctrl(bufs):
        data = wire(bufs)
        h2c.extend(data)
        c_events.extend(ctrl.receive_data(data))

    def to_host(bufs):
        data = wire(bufs)
        c2h.extend(data)
        h_events.extend(host.receive_data(data))

    to_ctrl(host.initiate())
    to_host(c_events[-1].reply)
    rng = random.Random(7)
    wdata = bytes(rng.randrange(256) for _ in range(W))
    rdata = bytes(rng.randrange(256) for _ in range(R))
    # A read: C2HData (maybe several) and a response capsule.
    to_ctrl(host.command(Read(nsid=1, slba=0, nblocks=18, cid=1), length=R))
    to_host(ctrl.c2h_data(1, [rdata[: R // 2], rdata[R // 2 :]]) + ctrl.response(Completion(cid=1)))
    # A write in the capsule.
    to_ctrl(host.command(Write(nsid=1, slba=0, nblocks=8, cid=2), [wdata[: W // 3]], write=True))
    to_host(ctrl.response(Completion(cid=2)))
    # A write through two R2Ts, each answered by H2CData cut at MAXH2CDATA.
    to_ctrl(host.command(Write(nsid=1, slba=0, nblocks=20, cid=3), [wdata], write=True, in_capsule=False))
    to_host(ctrl.r2t(3, 0, FIRST) + ctrl.r2t(3, FIRST, W - FIRST))
    r2ts = [e for e in h_events if isinstance(e, R2TReceived)]
    for r2t in r2ts:
        to_ctrl(host.data_for_r2t(r2t, [wdata]))
    to_host(ctrl.response(Completion(cid=3)))
    # A read completed by SUCCESS (no response capsule).
    to_ctrl(host.command(Read(nsid=1, slba=0, nblocks=1, cid=4), length=512))
    to_host(ctrl.c2h_data(4, [rdata[:512]], success=True))
    # A no-data command.
    to_ctrl(host.command(Identify(cns=1, cid=5)))
    to_host(ctrl.response(Completion(cid=5, dw0=9)))
    # Terminations both ways.
    to_ctrl([term_req(PduType.H2C_TERM_REQ, FES.PDU_SEQUENCE_ERROR, 0, b"x" * 24)])
    to_host([term_req(PduType.C2H_TERM_REQ, FES.INVALID_HEADER_FIELD, 3, b"y" * 72)])
    return bytes(h2c), bytes(c2h), h_events, c_events, wdata, rdata


CONFIGS = [
    dict(hdgst=False, ddgst=False, hpda=0, cpda=0, max_c2h_data=None),
    dict(hdgst=True, ddgst=True, hpda=0, cpda=0, max_c2h_data=3000),
    dict(hdgst=True, ddgst=False, hpda=3, cpda=7, max_c2h_data=None),
    dict(hdgst=False, ddgst=True, hpda=31, cpda=31, max_c2h_data=4096),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_every_pdu_type(config):
    h2c, c2h, h_events, c_events, wdata, rdata = conversation(**config)
    kinds = [type(e).__name__ for e in c_events]
    assert kinds[0] == "ICReqReceived" and kinds[-1] == "TermReqReceived"
    cmds = [e for e in c_events if isinstance(e, CommandReceived)]
    assert [c.cid for c in cmds] == [1, 2, 3, 4, 5]
    assert not any(c.data_digest_error for c in cmds)
    assert cmds[0].data is None and cmds[0].sgl.sgl_identifier == SGL_TRANSPORT and cmds[0].sgl.length == 9000
    assert bytes(cmds[1].data) == wdata[: len(wdata) // 3] and cmds[1].sgl.sgl_identifier == SGL_IN_CAPSULE
    assert cmds[2].data is None and cmds[2].sgl.length == len(wdata)
    assert cmds[2].command.psdt == 1
    h2cs = [e for e in c_events if isinstance(e, H2CDataReceived)]
    assert b"".join(bytes(e.data) for e in h2cs) == wdata
    assert all(len(e.data) <= 4096 for e in h2cs)
    assert [e.r2t_done for e in h2cs].count(True) == 2 and all(e.last == e.r2t_done for e in h2cs)
    term = c_events[-1]
    assert (term.pdu_type, term.fes, term.fei, term.data) == (PduType.H2C_TERM_REQ, 2, 0, b"x" * 24)

    c2hs = [e for e in h_events if isinstance(e, C2HDataReceived)]
    assert b"".join(bytes(e.data) for e in c2hs if e.cid == 1) == rdata
    last4 = [e for e in c2hs if e.cid == 4][-1]
    assert last4.success and last4.last and bytes(last4.data) == rdata[:512]
    resps = [e for e in h_events if isinstance(e, ResponseReceived)]
    assert [r.cid for r in resps] == [1, 2, 3, 5] and all(r.known for r in resps)
    assert resps[-1].completion.dw0 == 9
    assert [(e.offset, e.length) for e in h_events if isinstance(e, R2TReceived)] == [(0, 6000), (6000, len(wdata) - 6000)]
    assert isinstance(h_events[-1], TermReqReceived) and h_events[-1].data == b"y" * 72
    if config["max_c2h_data"]:
        assert all(len(e.data) <= config["max_c2h_data"] for e in c2hs)
    # The data of every PDU starts at an aligned PDO.
    if config["hpda"]:
        pos = 0
        while pos < len(c2h):
            hdr = decode_header(c2h, pos)
            if hdr.pdu_type == PduType.C2H_DATA:
                assert hdr.pdo % ((config["hpda"] + 1) * 4) == 0
            pos += hdr.plen
    assert host_digests_ok(c2h) and host_digests_ok(h2c)


def host_digests_ok(stream: bytes) -> bool:
    """Walk a byte stream and check every digest present."""
    pos = 0
    while pos < len(stream):
        hdr = decode_header(stream, pos)
        if hdr.hdgstf:
            assert crc32c(stream[pos : pos + hdr.hlen]) == struct.unpack_from("<I", stream, pos + hdr.hlen)[0]
        if hdr.ddgstf:
            end = pos + hdr.plen - 4
            assert crc32c(stream[pos + hdr.pdo : end]) == struct.unpack_from("<I", stream, end)[0]
        pos += hdr.plen
    return pos == len(stream)


def replay(stream_bytes: bytes, make, chunks) -> list:
    """Feed a byte stream to a fresh end in the given pieces."""
    end = make()
    events = []
    pos = 0
    for size in chunks:
        events.extend(end.receive_data(stream_bytes[pos : pos + size]))
        pos += size
    assert pos == len(stream_bytes)
    return events


def ends_for(config, small=False):
    """Fresh ends that expect what the conversation did (commands sent,
    R2Ts given out), to replay a recorded stream into."""
    W, R, FIRST = (1500, 1200, 1000) if small else (10000, 9000, 6000)

    def make_ctrl():
        ctrl = ControllerStream(cpda=config["cpda"], maxh2cdata=4096, max_icd=8192)
        # The R2Ts the recorded controller gave out (before their data can come).
        ctrl.maxr2t = 1
        ctrl.r2t(3, 0, FIRST)
        ctrl.r2t(3, FIRST, W - FIRST)
        return ctrl

    def make_host():
        host = HostStream(hdgst=config["hdgst"], ddgst=config["ddgst"], hpda=config["hpda"], maxr2t=1)
        host.initiate()
        host.command(Read(nsid=1, slba=0, nblocks=18, cid=1), length=R)
        host.command(Write(nsid=1, slba=0, nblocks=8, cid=2), [bytes(W // 3)], write=True)
        host.command(Write(nsid=1, slba=0, nblocks=20, cid=3), [bytes(W)], write=True, in_capsule=False)
        host.command(Read(nsid=1, slba=0, nblocks=1, cid=4), length=512)
        host.command(Identify(cns=1, cid=5))
        real_receive = host.receive_data

        def receive(data):
            events = real_receive(data)
            for ev in events:
                if isinstance(ev, R2TReceived):
                    host.data_for_r2t(ev, [bytes(W)])
            return events

        host.receive_data = receive
        return host

    return make_ctrl, make_host


@pytest.mark.parametrize("config", CONFIGS)
def test_split_and_coalesced_reads_at_every_byte_boundary(config):
    h2c, c2h, h_events, c_events, _, _ = conversation(**config, small=True)
    make_ctrl, make_host = ends_for(config, small=True)
    for data, make, expected in ((h2c, make_ctrl, c_events), (c2h, make_host, h_events)):
        want = norm(expected)
        assert norm(replay(data, make, [len(data)])) == want  # all at once
        assert norm(replay(data, make, [1] * len(data))) == want  # a byte at a time
        for split in range(1, len(data)):  # every split point
            assert norm(replay(data, make, [split, len(data) - split])) == want, split
        rng = random.Random(1)
        for _ in range(20):  # random pieces
            chunks = []
            left = len(data)
            while left:
                chunks.append(min(left, rng.choice([1, 2, 3, 7, 8, 23, 24, 25, 100, 1000, 5000])))
                left -= chunks[-1]
            assert norm(replay(data, make, chunks)) == want


@pytest.mark.parametrize("config", CONFIGS)
def test_receive_into_the_streams_own_buffers(config):
    """recv_buffer/received_into: large PDUs are received in place."""
    h2c, c2h, h_events, c_events, _, _ = conversation(**config)
    make_ctrl, make_host = ends_for(config)
    for data, make, expected in ((h2c, make_ctrl, c_events), (c2h, make_host, h_events)):
        for size in (1, 100, 4096, 1 << 16):
            end = make()
            events = []
            pos = 0
            while pos < len(data):
                buf = end.recv_buffer(size)
                n = min(len(buf), len(data) - pos)
                buf[:n] = data[pos : pos + n]
                pos += n
                events.extend(end.received_into(n))
            assert norm(events) == norm(expected)


def test_end_of_stream():
    host, ctrl = pair()
    capsule = wire(host.command(Write(nsid=1, slba=0, nblocks=1, cid=1), [bytes(512)], write=True))
    assert ctrl.receive_data(capsule[:30]) == []
    assert ctrl.receive_data(b"") == [ConnectionClosed(partial=True)]
    assert ctrl.closed and ctrl.receive_data(capsule) == []
    host, ctrl = pair()
    assert ctrl.receive_data(b"") == [ConnectionClosed(partial=False)]


# ---------------------------------------------------------------------------
# Digests


def corrupt(pdu: bytes, offset: int) -> bytes:
    out = bytearray(pdu)
    out[offset] ^= 0x40
    return bytes(out)


def test_header_digest_error_terminates_with_fes_03h():
    host, ctrl = pair(hdgst=True)
    capsule = wire(host.command(Identify(cns=1, cid=1), length=4096))
    bad = corrupt(capsule, 72)  # a byte of the header digest
    err = error_of(ctrl.receive_data(bad))
    check_term(err, PduType.C2H_TERM_REQ, FES.HEADER_DIGEST_ERROR, 0, bad[:72])
    assert ctrl.state is StreamState.ERROR
    assert ctrl.receive_data(capsule) == []
    # The same for a header byte, and on the host side.
    host, ctrl = pair(hdgst=True)
    host.command(Identify(cns=1, cid=1), length=4096)
    resp = corrupt(wire(ctrl.response(Completion(cid=1))), 12)
    check_term(error_of(host.receive_data(resp)), PduType.H2C_TERM_REQ, FES.HEADER_DIGEST_ERROR, 0)


def test_data_digest_error_in_a_capsule_fails_only_that_command():
    host, ctrl = pair(ddgst=True)
    capsule = wire(host.command(Write(nsid=1, slba=0, nblocks=1, cid=1), [b"a" * 512], write=True))
    good = wire(host.command(Write(nsid=1, slba=0, nblocks=1, cid=2), [b"b" * 512], write=True))
    events = ctrl.receive_data(corrupt(capsule, len(capsule) - 1) + good)
    assert [(e.cid, e.data_digest_error) for e in events] == [(1, True), (2, False)]
    assert ctrl.live


def test_data_digest_error_in_h2c_and_c2h_data():
    host, ctrl = pair(ddgst=True, hdgst=True)
    data = bytes(range(256)) * 8
    ctrl.receive_data(wire(host.command(Write(nsid=1, slba=0, nblocks=4, cid=1), [data], write=True,
                                        in_capsule=False)))
    (r2t,) = host.receive_data(wire(ctrl.r2t(1, 0, len(data))))
    pdu = wire(host.data_for_r2t(r2t, [data]))
    (ev,) = ctrl.receive_data(corrupt(pdu, 100))
    assert ev.digest_error and ev.r2t_done and ctrl.live
    host.command(Read(nsid=1, slba=0, nblocks=4, cid=2), length=len(data))
    c2h = wire(ctrl.c2h_data(2, [data]))
    (ev,) = host.receive_data(corrupt(c2h, 50))
    assert isinstance(ev, C2HDataReceived) and ev.digest_error and host.live


# ---------------------------------------------------------------------------
# Header fields


def raw_capsule(ctrl_stream=None, **fields) -> bytes:
    hdr = CapsuleCmd()
    hdr.cmd.cid = 1
    hdr.plen = 72
    for k, v in fields.items():
        setattr(hdr, k, v)
    return bytes(hdr)


@pytest.mark.parametrize(
    "fields,fes,fei",
    [
        (dict(pdu_type=0x0A), FES.INVALID_HEADER_FIELD, 0),  # unknown type
        (dict(pdu_type=PduType.CAPSULE_RESP, hlen=24, plen=24), FES.INVALID_HEADER_FIELD, 0),  # wrong direction
        (dict(pdu_type=PduType.R2T, hlen=24, plen=24), FES.INVALID_HEADER_FIELD, 0),
        (dict(flags=0x04), FES.INVALID_HEADER_FIELD, 1),  # LAST_PDU is not a capsule flag
        (dict(flags=0x01), FES.INVALID_HEADER_FIELD, 1),  # HDGSTF without header digests
        (dict(hlen=70), FES.INVALID_HEADER_FIELD, 2),
        (dict(pdo=72, plen=72 + 4), FES.INVALID_HEADER_FIELD, 3),  # fine alone ...
        (dict(pdo=40, plen=100), FES.INVALID_HEADER_FIELD, 3),  # PDO inside the header
        (dict(pdo=80, plen=70), FES.INVALID_HEADER_FIELD, 3),  # PDO beyond PLEN
        (dict(plen=80), FES.INVALID_HEADER_FIELD, 3),  # data after the header, PDO 0 says none
        (dict(pdo=72, plen=72 + 20000), FES.INVALID_HEADER_FIELD, 4),  # more in-capsule data than accepted
    ],
)
def test_bad_common_header_fields(fields, fes, fei):
    host, ctrl = pair(cpda=1)  # data aligned to 8 bytes: PDO 72 is fine
    pdu = raw_capsule(**fields)
    if fields == dict(pdo=72, plen=72 + 4):
        events = ctrl.receive_data(pdu + bytes(4))
        assert isinstance(events[0], CommandReceived) and bytes(events[0].data) == bytes(4)
        return
    err = error_of(ctrl.receive_data(pdu + bytes(max(0, fields.get("plen", 72) - 72))))
    check_term(err, PduType.C2H_TERM_REQ, fes, fei)
    hlen = pdu[2] if 8 <= pdu[2] <= 128 else 8
    assert wire(err.term)[24:] == pdu[:hlen]  # the offending header


def test_wrong_pdo_alignment():
    host, ctrl = pair(cpda=3)  # 16-byte alignment: PDO must be 80
    hdr = CapsuleCmd(pdo=76, plen=76 + 512)
    check_term(error_of(ctrl.receive_data(bytes(hdr) + bytes(4 + 512))), PduType.C2H_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 3)
    host, ctrl = pair(cpda=3)
    events = ctrl.receive_data(wire(host.command(Write(nsid=1, slba=0, nblocks=1, cid=1), [bytes(512)], write=True)))
    assert isinstance(events[0], CommandReceived) and len(events[0].data) == 512
    # PDO in a PDU type without data.
    host, ctrl = pair()
    host.command(Identify(cns=1, cid=1), length=4096)
    resp = bytearray(wire(ctrl.response(Completion(cid=1))))
    resp[3] = 24
    check_term(error_of(host.receive_data(bytes(resp))), PduType.H2C_TERM_REQ, FES.INVALID_HEADER_FIELD, 3)
    # A misaligned C2HData for a host asking for 8-byte alignment.
    host, ctrl = pair(hpda=1)
    host.command(Read(nsid=1, slba=0, nblocks=1, cid=1), length=512)
    c2h = C2HData(pdo=28, plen=28 + 512, cccid=1, datal=512)
    c2h.last_pdu = True
    check_term(error_of(host.receive_data(bytes(c2h) + bytes(4 + 512))), PduType.H2C_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 3)


def test_wrong_hlen_and_plen_on_the_host_side():
    host, ctrl = pair()
    host.command(Identify(cns=1, cid=1), length=4096)
    resp = bytearray(wire(ctrl.response(Completion(cid=1))))
    bad = bytearray(resp)
    bad[2] = 28
    check_term(error_of(host.receive_data(bytes(bad))), PduType.H2C_TERM_REQ, FES.INVALID_HEADER_FIELD, 2)
    host, ctrl = pair()
    host.command(Identify(cns=1, cid=1), length=4096)
    bad = bytearray(resp)
    struct.pack_into("<I", bad, 4, 30)
    check_term(error_of(host.receive_data(bytes(bad) + bytes(6))), PduType.H2C_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 4)


def test_digest_flags_must_match_the_negotiation():
    host, ctrl = pair(hdgst=True, ddgst=True)
    plain_host, _ = pair()
    pdu = wire(plain_host.command(Write(nsid=1, slba=0, nblocks=1, cid=1), [bytes(512)], write=True))
    check_term(error_of(ctrl.receive_data(pdu)), PduType.C2H_TERM_REQ, FES.INVALID_HEADER_FIELD, 1)
    host, ctrl = pair(ddgst=True)
    hdr = CapsuleCmd(pdo=72, plen=72 + 512)  # data without DDGSTF
    check_term(error_of(ctrl.receive_data(bytes(hdr) + bytes(512))), PduType.C2H_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 1)


def test_success_needs_last_pdu():
    host, ctrl = pair()
    host.command(Read(nsid=1, slba=0, nblocks=1, cid=1), length=512)
    c2h = bytearray(wire(ctrl.c2h_data(1, [bytes(512)], last=True, success=True)))
    c2h[1] &= ~0x04  # SUCCESS without LAST_PDU
    check_term(error_of(host.receive_data(bytes(c2h))), PduType.H2C_TERM_REQ, FES.INVALID_HEADER_FIELD, 1)


def test_term_req_with_impossible_length_closes_without_reply():
    host, ctrl = pair()
    hdr = H2CTermReq(fes=1)
    hdr.plen = 200
    err = error_of(ctrl.receive_data(bytes(hdr) + bytes(176)))
    assert err.term is None and ctrl.closed
    # A C2HTermReq sent to a controller is a PDU of the wrong direction.
    host, ctrl = pair()
    check_term(error_of(ctrl.receive_data(bytes(C2HTermReq(plen=24)))), PduType.C2H_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 0)


def test_term_req_before_initialization_is_accepted():
    ctrl = ControllerStream()
    (ev,) = ctrl.receive_data(wire([term_req(PduType.H2C_TERM_REQ, 2, 0)]))
    assert isinstance(ev, TermReqReceived) and ctrl.closed


# ---------------------------------------------------------------------------
# Data of commands (controller side)


def write_with_r2t(host, ctrl, length=8192, cid=1, **kw):
    ctrl.receive_data(wire(host.command(Write(nsid=1, slba=0, nblocks=length // 512, cid=cid), [bytes(length)],
                                        write=True, in_capsule=False)))
    (r2t,) = host.receive_data(wire(ctrl.r2t(cid, 0, length)))
    return r2t


def h2c(cid, ttag, datao, data, *, last=True, datal=None, pdo=24):
    hdr = H2CData(cccid=cid, ttag=ttag, datao=datao, datal=len(data) if datal is None else datal, pdo=pdo,
                  plen=pdo + len(data))
    hdr.last_pdu = last
    return bytes(hdr) + bytes(pdo - 24) + data


def test_h2c_data_is_checked_against_its_r2t():
    host, ctrl = pair()
    r2t = write_with_r2t(host, ctrl)
    # Unknown transfer tag.
    check_term(error_of(ctrl.receive_data(h2c(1, r2t.ttag + 1, 0, bytes(4096)))), PduType.C2H_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 10)
    # The tag of another command.
    host, ctrl = pair()
    r2t = write_with_r2t(host, ctrl)
    check_term(error_of(ctrl.receive_data(h2c(9, r2t.ttag, 0, bytes(4096)))), PduType.C2H_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 8)
    # DATAL not what the PDU carries.
    host, ctrl = pair()
    r2t = write_with_r2t(host, ctrl)
    check_term(error_of(ctrl.receive_data(h2c(1, r2t.ttag, 0, bytes(4096), datal=4000, last=False))),
               PduType.C2H_TERM_REQ, FES.INVALID_HEADER_FIELD, 16)
    # Data beyond the transfer length (and the R2T).
    host, ctrl = pair()
    r2t = write_with_r2t(host, ctrl)
    check_term(error_of(ctrl.receive_data(h2c(1, r2t.ttag, 4096, bytes(8192)))), PduType.C2H_TERM_REQ,
               FES.DATA_TRANSFER_OUT_OF_RANGE, 0)
    # A gap: DATAO not where the last PDU ended.
    host, ctrl = pair()
    r2t = write_with_r2t(host, ctrl)
    assert not ctrl.receive_data(h2c(1, r2t.ttag, 0, bytes(2048), last=False))[0].r2t_done
    check_term(error_of(ctrl.receive_data(h2c(1, r2t.ttag, 4096, bytes(4096)))), PduType.C2H_TERM_REQ,
               FES.PDU_SEQUENCE_ERROR, 0)
    # LAST_PDU too early, or missing at the end.
    host, ctrl = pair()
    r2t = write_with_r2t(host, ctrl)
    check_term(error_of(ctrl.receive_data(h2c(1, r2t.ttag, 0, bytes(4096), last=True))), PduType.C2H_TERM_REQ,
               FES.PDU_SEQUENCE_ERROR, 0)
    host, ctrl = pair()
    r2t = write_with_r2t(host, ctrl)
    check_term(error_of(ctrl.receive_data(h2c(1, r2t.ttag, 0, bytes(8192), last=False))), PduType.C2H_TERM_REQ,
               FES.PDU_SEQUENCE_ERROR, 0)
    # After the R2T got its data, its tag is no longer valid.
    host, ctrl = pair()
    r2t = write_with_r2t(host, ctrl)
    assert ctrl.receive_data(h2c(1, r2t.ttag, 0, bytes(8192)))[0].r2t_done
    assert ctrl.outstanding_r2ts == 0
    check_term(error_of(ctrl.receive_data(h2c(1, r2t.ttag, 0, bytes(8192)))), PduType.C2H_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 10)


def test_h2c_data_beyond_maxh2cdata_is_a_data_transfer_limit_error():
    host, ctrl = pair(maxh2cdata=4096)
    r2t = write_with_r2t(host, ctrl)
    check_term(error_of(ctrl.receive_data(h2c(1, r2t.ttag, 0, bytes(8192)))), PduType.C2H_TERM_REQ,
               FES.DATA_TRANSFER_LIMIT_EXCEEDED, 0)
    # The host cuts its data at MAXH2CDATA.
    host, ctrl = pair(maxh2cdata=4096)
    r2t = write_with_r2t(host, ctrl, length=10000 // 512 * 512)
    events = ctrl.receive_data(wire(host.data_for_r2t(r2t, [bytes(r2t.length)])))
    assert [len(e.data) for e in events] == [4096, 4096, r2t.length - 8192]
    assert [e.last for e in events] == [False, False, True]


def test_r2ts_per_command_are_limited_by_maxr2t():
    host, ctrl = pair(maxr2t=0)
    ctrl.receive_data(wire(host.command(Write(nsid=1, slba=0, nblocks=16, cid=1), [bytes(8192)], write=True,
                                        in_capsule=False)))
    ctrl.r2t(1, 0, 4096)
    with pytest.raises(ValueError):
        ctrl.r2t(1, 4096, 4096)
    # A controller that sends too many anyway: the host answers FES 05h.
    host, ctrl = pair(maxr2t=0)
    host.command(Write(nsid=1, slba=0, nblocks=16, cid=1), [bytes(8192)], write=True, in_capsule=False)
    ctrl.maxr2t = 1
    (first,) = host.receive_data(wire(ctrl.r2t(1, 0, 4096)))
    check_term(error_of(host.receive_data(wire(ctrl.r2t(1, 4096, 4096)))), PduType.H2C_TERM_REQ,
               FES.R2T_LIMIT_EXCEEDED, 0)


# ---------------------------------------------------------------------------
# Data of commands (host side)


def test_r2t_for_an_unknown_command():
    host, ctrl = pair()
    check_term(error_of(host.receive_data(wire(ctrl.r2t(7, 0, 512)))), PduType.H2C_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 8)
    # Nor for a read, or a write whose data went in the capsule.
    host, ctrl = pair()
    host.command(Read(nsid=1, slba=0, nblocks=1, cid=1), length=512)
    check_term(error_of(host.receive_data(wire(ctrl.r2t(1, 0, 512)))), PduType.H2C_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 8)
    host, ctrl = pair()
    host.command(Write(nsid=1, slba=0, nblocks=1, cid=1), [bytes(512)], write=True)
    check_term(error_of(host.receive_data(wire(ctrl.r2t(1, 0, 512)))), PduType.H2C_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 8)


def test_r2t_beyond_the_transfer_or_out_of_order():
    host, ctrl = pair()
    host.command(Write(nsid=1, slba=0, nblocks=1, cid=1), [bytes(512)], write=True, in_capsule=False)
    check_term(error_of(host.receive_data(wire(ctrl.r2t(1, 0, 1024)))), PduType.H2C_TERM_REQ,
               FES.DATA_TRANSFER_OUT_OF_RANGE, 0)
    host, ctrl = pair()
    host.command(Write(nsid=1, slba=0, nblocks=2, cid=1), [bytes(1024)], write=True, in_capsule=False)
    check_term(error_of(host.receive_data(wire(ctrl.r2t(1, 512, 512)))), PduType.H2C_TERM_REQ,
               FES.PDU_SEQUENCE_ERROR, 0)
    host, ctrl = pair()
    host.command(Write(nsid=1, slba=0, nblocks=2, cid=1), [bytes(1024)], write=True, in_capsule=False)
    r2t = bytearray(wire(ctrl.r2t(1, 0, 512)))
    struct.pack_into("<I", r2t, 16, 0)  # R2TL 0
    check_term(error_of(host.receive_data(bytes(r2t))), PduType.H2C_TERM_REQ, FES.INVALID_HEADER_FIELD, 16)


def test_c2h_data_is_checked_against_the_command():
    host, ctrl = pair()
    check_term(error_of(host.receive_data(wire(ctrl.c2h_data(3, [bytes(512)])))), PduType.H2C_TERM_REQ,
               FES.INVALID_HEADER_FIELD, 8)
    host, ctrl = pair()
    host.command(Read(nsid=1, slba=0, nblocks=1, cid=1), length=512)
    check_term(error_of(host.receive_data(wire(ctrl.c2h_data(1, [bytes(1024)])))), PduType.H2C_TERM_REQ,
               FES.DATA_TRANSFER_OUT_OF_RANGE, 0)
    host, ctrl = pair()
    host.command(Read(nsid=1, slba=0, nblocks=2, cid=1), length=1024)
    check_term(error_of(host.receive_data(wire(ctrl.c2h_data(1, [bytes(512)], offset=512)))), PduType.H2C_TERM_REQ,
               FES.PDU_SEQUENCE_ERROR, 0)
    host, ctrl = pair()
    host.command(Read(nsid=1, slba=0, nblocks=2, cid=1), length=1024)
    host.receive_data(wire(ctrl.c2h_data(1, [bytes(512)], last=True)))
    check_term(error_of(host.receive_data(wire(ctrl.c2h_data(1, [bytes(512)], offset=512)))), PduType.H2C_TERM_REQ,
               FES.PDU_SEQUENCE_ERROR, 0)
    host, ctrl = pair()
    host.command(Read(nsid=1, slba=0, nblocks=1, cid=1), length=512)
    bad = bytearray(wire(ctrl.c2h_data(1, [bytes(512)])))
    struct.pack_into("<I", bad, 16, 500)
    check_term(error_of(host.receive_data(bytes(bad))), PduType.H2C_TERM_REQ, FES.INVALID_HEADER_FIELD, 16)


def test_success_ends_the_command_and_responses_are_matched():
    host, ctrl = pair()
    host.command(Read(nsid=1, slba=0, nblocks=1, cid=1), length=512)
    assert host.outstanding == 1
    (ev,) = host.receive_data(wire(ctrl.c2h_data(1, [bytes(512)], success=True)))
    assert ev.success and host.outstanding == 0
    (resp,) = host.receive_data(wire(ctrl.response(Completion(cid=1))))
    assert not resp.known  # a response after SUCCESS belongs to nothing


def test_command_capsule_layout():
    host, ctrl = pair(hdgst=True, ddgst=True, cpda=3)
    sqe = Write(nsid=1, slba=5, nblocks=1, cid=0x1234)
    sqe.prp2 = 0xFFFF_FFFF_FFFF_FFFF  # SGL1 overlaps PRP2: the stream writes the whole descriptor
    bufs = host.command(sqe, [b"q" * 512], write=True)
    pdu = wire(bufs)
    hdr = CapsuleCmd.view(pdu)
    assert hdr.hdgstf and hdr.ddgstf and hdr.pdo == 80 and hdr.plen == 80 + 512 + 4
    assert hdr.cmd.cid == 0x1234 and hdr.cmd.psdt == 1
    sgl = hdr.cmd.sgl1
    assert (sgl.sgl_identifier, sgl.address, sgl.length, bytes(sgl.reserved)) == (SGL_IN_CAPSULE, 0, 512, bytes(3))
    assert any(b is not None and bytes(b) == b"q" * 512 for b in bufs)  # the data is not copied into the header
    with pytest.raises(ValueError):
        host.command(sqe, [b"q" * 512], write=True)  # CID 1234h is outstanding
    host.forget(0x1234)
    pdu = wire(host.command(sqe, length=512, write=False))
    assert CapsuleCmd.view(pdu).cmd.sgl1.sgl_identifier == SGL_TRANSPORT and len(pdu) == 76


def test_events_after_an_error_are_not_produced():
    host, ctrl = pair()
    events = ctrl.receive_data(raw_capsule(pdu_type=0x0A) + wire(host.command(Identify(cns=1, cid=1))))
    assert len(events) == 1 and isinstance(events[0], ProtocolError)
    assert ctrl.receive_data(b"anything") == []


# ---------------------------------------------------------------------------
# C2HData checks on the host: the same on the fast lane (a whole PDU without
# digests in one receive) and on the general path (the PDU in pieces)


def c2h(cid, datao, data, *, last=True, success=False, datal=None, pdo=24):
    hdr = C2HData(cccid=cid, datao=datao, datal=len(data) if datal is None else datal, pdo=pdo,
                  plen=pdo + len(data))
    hdr.last_pdu = last
    hdr.success = success
    return bytes(hdr) + bytes(pdo - 24) + data


def reading_host(length=8192, cid=1):
    host, _ctrl = pair()
    host.command(Read(nsid=1, slba=0, nblocks=length // 512, cid=cid), length=length)
    return host


def feed(host, data: bytes, whole: bool):
    if whole:
        return host.receive_data(data)
    events = []
    for i in range(len(data)):
        events.extend(host.receive_data(data[i : i + 1]))
        if events and isinstance(events[-1], ProtocolError):
            break
    return events


@pytest.mark.parametrize("whole", [True, False], ids=["fast-lane", "in-pieces"])
@pytest.mark.parametrize("before,bad,fes,fei", [
    ([], c2h(9, 0, bytes(4096)), FES.INVALID_HEADER_FIELD, 8),  # a command that is not there
    ([], c2h(1, 0, bytes(4096), datal=4000, last=False), FES.INVALID_HEADER_FIELD, 16),  # DATAL
    ([], c2h(1, 4096, bytes(8192)), FES.DATA_TRANSFER_OUT_OF_RANGE, 0),  # beyond the command
    ([c2h(1, 0, bytes(2048), last=False)], c2h(1, 4096, bytes(4096)), FES.PDU_SEQUENCE_ERROR, 0),  # a gap
    ([c2h(1, 0, bytes(8192))], c2h(1, 0, bytes(4096)), FES.PDU_SEQUENCE_ERROR, 0),  # after its last PDU
    ([c2h(1, 0, bytes(8192), success=True)], c2h(1, 0, bytes(4096)), FES.INVALID_HEADER_FIELD, 8),  # done
])
def test_c2h_data_is_checked_against_its_command(whole, before, bad, fes, fei):
    host = reading_host()
    for pdu in before:
        events = feed(host, pdu, whole)
        assert events and all(isinstance(e, C2HDataReceived) for e in events)
    check_term(error_of(feed(host, bad, whole)), PduType.H2C_TERM_REQ, fes, fei, offending=bad[:24])


@pytest.mark.parametrize("whole", [True, False], ids=["fast-lane", "in-pieces"])
def test_c2h_data_and_response_events_are_the_same_on_both_lanes(whole):
    host = reading_host()
    data = bytes(range(256)) * 32
    events = feed(host, c2h(1, 0, data[:4096], last=False), whole)
    events += feed(host, c2h(1, 4096, data[4096:]), whole)
    resp = CapsuleResp(plen=24)
    resp.cqe.cid = 1
    events += feed(host, bytes(resp), whole)
    assert [type(e) for e in events] == [C2HDataReceived, C2HDataReceived, ResponseReceived]
    assert b"".join(bytes(e.data) for e in events[:2]) == data
    assert [(e.offset, e.last, e.success) for e in events[:2]] == [(0, False, False), (4096, True, False)]
    assert events[2].cid == 1 and events[2].known and bytes(events[2].cqe) == bytes(resp)[8:24]
    assert host.outstanding == 0


def test_a_kept_receive_buffer_is_reused_only_when_nothing_holds_a_view_of_it():
    host = reading_host(length=8192)
    buf = host.recv_buffer(65536, keep=True)
    pdu = c2h(1, 0, b"a" * 4096, last=False)
    buf[: len(pdu)] = pdu
    (ev,) = host.received_into(len(pdu))
    first = buf.obj
    del buf
    # The event's data is a view of the buffer: the next one is another buffer.
    again = host.recv_buffer(65536, keep=True)
    assert again.obj is not first
    pdu = c2h(1, 4096, b"b" * 4096)
    again[: len(pdu)] = pdu
    (ev2,) = host.received_into(len(pdu))
    assert bytes(ev.data) == b"a" * 4096 and bytes(ev2.data) == b"b" * 4096  # nothing overwritten
    kept = again.obj
    del ev2, again
    assert host.recv_buffer(65536, keep=True).obj is kept  # no view left: the same buffer again
    assert host.recv_buffer(4096).obj is not kept  # without keep: a new one
