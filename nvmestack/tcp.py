"""NVMe/TCP connections without I/O: bytes in, events out; PDUs out as buffers.

One :class:`ControllerStream` (the target's end) or :class:`HostStream` (the
host's end) per TCP connection, in the manner of h11: the code around it
reads the socket and hands what it got to :meth:`receive_data` (or, without
a copy, fills :meth:`recv_buffer` and calls :meth:`received_into`), acts on
the events that come back, and sends what the builder methods return (lists
of buffers, for ``socket.sendmsg``; data is never copied into a PDU).

What the stream does itself (NVMe/TCP Transport Specification 1.0, NVMe-oF
1.1 section 7.4):

* the ICReq/ICResp exchange: PDU Format Version 0, HPDA/CPDA (the alignment
  of the data each side receives), header and data digests, MAXR2T and
  MAXH2CDATA;
* framing: a PDU split over any number of reads or many PDUs in one read;
  every common header checked in field order (PDU-Type, FLAGS, HLEN, PDO,
  PLEN) so a bad PDU is reported by its lowest wrong field, as FES 01h
  "Invalid PDU Header Field" with FEI = that field's byte offset;
* digests (CRC32C, C-accelerated through :mod:`nvmestack.spec.checksum`):
  a header digest error is fatal (FES 03h); a data digest error is not --
  the PDU's event says ``digest_error`` and the command is to complete with
  Transient Transport Error (what SPDK and FreeBSD do; Linux's nvmet closes
  the connection instead);
* the data of each command: a controller gives out transfer tags in R2Ts
  and checks every H2CData against its R2T (unknown TTAG or CCCID: FES 01h
  with FEI at that field; DATAL not the PDU's data: FES 01h FEI 16; data
  outside the R2T: FES 04h "Data Transfer Out of Range"; DATAO not where
  the previous PDU ended, or LAST_PDU on the wrong PDU: FES 02h "PDU
  Sequence Error"; more than MAXH2CDATA in one PDU: FES 05h "Data Transfer
  Limit Exceeded"); a host checks R2Ts and C2HData against the commands it
  sent (unknown CCCID: FES 01h FEI 8; beyond the transfer: 04h; offset not
  continuing the transfer: 02h; more R2Ts at once than MAXR2T + 1: 05h);
* SUCCESS in C2HData (only with LAST_PDU): the command completed and no
  response capsule follows (a controller uses it when SQ flow control is
  disabled);
* termination: a broken rule gives a :class:`ProtocolError` event carrying
  the TermReq to send (the header of the offending PDU as its data) and the
  stream stops reading; a received TermReq gives :class:`TermReqReceived`.
  A TermReq with an impossible length ends the connection without a reply
  (NVMe-oF 1.1 7.4.7).

A stream is safe to use from several threads (one lock inside), but the
events it returns are for the caller of ``receive_data`` alone.  Data in
events is a memoryview of the buffer the PDU arrived in: a whole PDU inside
the buffer given to ``receive_data`` stays a view of that buffer (give
buffers that are not reused while the events are alive, e.g. the ``bytes``
of ``socket.recv``), a PDU that spans reads gets a buffer of its own.
"""

from __future__ import annotations

import enum
import struct as _struct
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .spec.cqe import Completion
from .spec.dptr import Psdt, SglDescriptor, SglSubtype, SglType
from .spec.sqe import SQE_SIZE, Command
from .spec.tcp import (
    COMMON_HEADER_SIZE,
    DIGEST_LEN,
    HLEN,
    MIN_MAXH2CDATA,
    PDA_MAX,
    PFV_1_0,
    R2T,
    TERM_REQ_DATA_MAX,
    C2HData,
    C2HTermReq,
    CapsuleCmd,
    CapsuleResp,
    DigestType,
    FatalErrorStatus,
    H2CData,
    ICReq,
    ICResp,
    PduFlags,
    PduHeader,
    PduType,
    crc32c,
    term_req,
)

__all__ = [
    "StreamState",
    "Event",
    "ICReqReceived",
    "ICRespReceived",
    "CommandReceived",
    "ResponseReceived",
    "H2CDataReceived",
    "C2HDataReceived",
    "R2TReceived",
    "TermReqReceived",
    "ProtocolError",
    "ConnectionClosed",
    "ControllerStream",
    "HostStream",
    "SGL_IN_CAPSULE",
    "SGL_TRANSPORT",
    "DEFAULT_MAXH2CDATA",
    "DEFAULT_MAX_ICD",
    "ADMIN_MAX_ICD",
    "buffers_len",
    "FatalErrorStatus",
    "DigestType",
    "slice_buffers",
]

FES = FatalErrorStatus
_LE32 = _struct.Struct("<I")
_LE16 = _struct.Struct("<H")

SGL_IN_CAPSULE = (SglType.DATA_BLOCK << 4) | SglSubtype.OFFSET
"""SGL identifier of in-capsule data: Data Block, sub type Offset (01h)."""
SGL_TRANSPORT = (SglType.TRANSPORT_DATA_BLOCK << 4) | SglSubtype.TRANSPORT_SPECIFIC
"""SGL identifier of data moved by R2T/H2CData or C2HData: Transport SGL
Data Block, sub type Transport Specific (5Ah)."""

DEFAULT_MAXH2CDATA = 1 << 20
"""MAXH2CDATA a controller stream grants unless told otherwise (1 MiB:
more than an MDTS-sized write, so one H2CData PDU carries it)."""
DEFAULT_MAX_ICD = 16384
"""In-capsule data a controller stream accepts unless told otherwise (the
size Linux's nvmet-tcp uses by default: 4 pages)."""
ADMIN_MAX_ICD = 8192
"""In-capsule data a host may put in admin commands (Linux's
NVME_TCP_ADMIN_CCSZ); I/O queues use what IOCCSZ says."""

# Byte offsets of the fields a Fatal Error Information can point at, from
# the header structures (one source of truth for every offset).
_FEI_TYPE = PduHeader.pdu_type.offset
_FEI_FLAGS = PduHeader.flags.offset
_FEI_HLEN = PduHeader.hlen.offset
_FEI_PDO = PduHeader.pdo.offset
_FEI_PLEN = PduHeader.plen.offset
_FEI_CCCID = H2CData.cccid.offset
_FEI_TTAG = H2CData.ttag.offset
_FEI_DATAL = H2CData.datal.offset
_FEI_R2TL = R2T.r2tl.offset
_FEI_PFV = ICReq.pfv.offset
_FEI_PDA = ICReq.hpda.offset  # HPDA in ICReq, CPDA in ICResp: same byte
_FEI_DGST = ICReq.dgst.offset
_FEI_MAXH2CDATA = ICResp.maxh2cdata.offset

_DATA_CCCID = C2HData.cccid.offset  # the same in C2HData, H2CData and R2T
_DATA_TTAG = H2CData.ttag.offset
_DATA_OFFSET = C2HData.datao.offset  # DATAO, and R2TO in an R2T
_DATA_LENGTH = C2HData.datal.offset  # DATAL, and R2TL in an R2T
assert _DATA_LENGTH == _DATA_OFFSET + 4
assert (R2T.cccid.offset, R2T.ttag.offset, R2T.r2to.offset, R2T.r2tl.offset) == (
    _DATA_CCCID, _DATA_TTAG, _DATA_OFFSET, _DATA_LENGTH)
# A C2HData header's FLAGS, CCCID, DATAO and DATAL in one read (both lanes).
_C2H_FIELDS = _struct.Struct(f"<{_FEI_FLAGS}xB{_DATA_CCCID - _FEI_FLAGS - 1}xH{_DATA_OFFSET - _DATA_CCCID - 2}xII")
assert _C2H_FIELDS.size == _DATA_LENGTH + 4
_FES_OFF = C2HTermReq.fes.offset
_FEI_OFF = C2HTermReq.fei.offset
_SQE_OFF = CapsuleCmd.cmd.offset  # the SQE in a command capsule
_CQE_OFF = CapsuleResp.cqe.offset  # the CQE in a response capsule
_SQE_CID = _SQE_OFF + Command.cid.offset
_CQE_CID = _CQE_OFF + Completion.cid.offset
_SGL_OFF = _SQE_OFF + Command.sgl1.offset
# SGL1 written in one go: Address, Length, 3 reserved bytes, SGL Identifier.
_SGL_PACK = _struct.Struct("<QI3xB")
assert (SglDescriptor.address.offset, SglDescriptor.length.offset, SglDescriptor.sgl_identifier.offset) == (0, 8, 15)
_SQE_PSDT = _SQE_OFF + Command.psdt.offset
_PSDT_MASK = ((1 << Command.psdt.width) - 1) << Command.psdt.lsb
_PSDT_SGL = int(Psdt.SGL_MPTR_CONTIGUOUS) << Command.psdt.lsb

_TERM_REQS = frozenset({PduType.H2C_TERM_REQ, PduType.C2H_TERM_REQ})
_IC = frozenset({PduType.ICREQ, PduType.ICRESP})
_WITH_DATA = frozenset({PduType.CAPSULE_CMD, PduType.H2C_DATA, PduType.C2H_DATA})
_H, _D, _LAST, _SUCCESS = (int(PduFlags.HDGSTF), int(PduFlags.DDGSTF), int(PduFlags.LAST_PDU),
                           int(PduFlags.SUCCESS))
# FLAGS bits each PDU type may have.
_VALID_FLAGS = {
    PduType.ICREQ: 0,
    PduType.ICRESP: 0,
    PduType.H2C_TERM_REQ: 0,
    PduType.C2H_TERM_REQ: 0,
    PduType.CAPSULE_CMD: _H | _D,
    PduType.CAPSULE_RESP: _H,
    PduType.H2C_DATA: _H | _D | _LAST,
    PduType.C2H_DATA: _H | _D | _LAST | _SUCCESS,
    PduType.R2T: _H,
}
_TYPES = {int(t): t for t in PduType}
_LE64 = _struct.Struct("<Q")
_CAPSULE_CMD_LEN = HLEN[PduType.CAPSULE_CMD]
_SQE_END = _SQE_OFF + SQE_SIZE
_DIRECT_MIN = 16384  # recv_buffer hands out the rest of a PDU this large or larger


class StreamState(enum.Enum):
    AWAIT_IC = "awaiting ICReq/ICResp"
    LIVE = "live"
    CLOSED = "closed"  # a TermReq came in, or the peer closed
    ERROR = "error"  # we found a fatal error (and terminate)


_LIVE = StreamState.LIVE


# ---------------------------------------------------------------------------
# Events


class Event:
    """Base class of what :meth:`receive_data` returns."""

    __slots__ = ()


@dataclass(slots=True)
class ICReqReceived(Event):
    """The host's ICReq arrived (controller side); ``reply`` is the ICResp
    to send.  The stream is live from now on with the digests granted."""

    pfv: int
    hpda: int
    hdgst: bool  # header digests asked for
    ddgst: bool  # data digests asked for
    maxr2t: int  # 0's based outstanding R2Ts per command
    reply: list


@dataclass(slots=True)
class ICRespReceived(Event):
    """The controller's ICResp arrived (host side); the stream is live."""

    pfv: int
    cpda: int
    hdgst: bool  # header digests in use
    ddgst: bool  # data digests in use
    maxh2cdata: int


@dataclass(slots=True)
class CommandReceived(Event):
    """A command capsule (controller side): the 64-byte SQE and the
    in-capsule data (``None`` without).  ``data_digest_error``: the data
    arrived damaged; complete the command with Transient Transport Error."""

    cid: int
    sqe: memoryview
    data: memoryview | None
    data_digest_error: bool = False

    @property
    def command(self) -> Command:
        return Command.view(self.sqe)

    @property
    def sgl(self) -> SglDescriptor:
        return SglDescriptor.view(self.sqe, Command.sgl1.offset)


@dataclass(slots=True)
class ResponseReceived(Event):
    """A response capsule (host side).  ``known``: the CID belonged to a
    command this stream sent and had not finished."""

    cid: int
    cqe: memoryview
    known: bool = True

    @property
    def completion(self) -> Completion:
        return Completion.view(self.cqe)


@dataclass(slots=True)
class H2CDataReceived(Event):
    """Write data for command ``cid`` (controller side), at byte ``offset``
    of the command's data.  ``r2t_done``: the R2T ``ttag`` got all its data
    (the tag is free again); ``digest_error``: this PDU's data is damaged."""

    cid: int
    ttag: int
    offset: int
    data: memoryview
    last: bool
    r2t_done: bool
    digest_error: bool = False


@dataclass(slots=True)
class C2HDataReceived(Event):
    """Read data for command ``cid`` (host side).  ``success``: the command
    completed successfully and no response capsule follows."""

    cid: int
    offset: int
    data: memoryview
    last: bool
    success: bool
    digest_error: bool = False


@dataclass(slots=True)
class R2TReceived(Event):
    """The controller asks for ``length`` bytes of command ``cid``'s data
    from ``offset`` (host side); answer with :meth:`HostStream.data_for_r2t`."""

    cid: int
    ttag: int
    offset: int
    length: int


@dataclass(slots=True)
class TermReqReceived(Event):
    """The peer terminates the connection: close it."""

    pdu_type: int
    fes: int
    fei: int
    data: bytes


@dataclass(slots=True)
class ProtocolError(Event):
    """The peer broke a rule; send ``term`` (a TermReq, or ``None`` when the
    rule says to close at once) and close the connection."""

    fes: int
    fei: int
    message: str
    term: list | None


@dataclass(slots=True)
class ConnectionClosed(Event):
    """The peer closed its end; ``partial``: in the middle of a PDU."""

    partial: bool = False


# ---------------------------------------------------------------------------
# Buffers


def _view(buf: Any) -> memoryview:
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    return mv if mv.format == "B" and mv.ndim == 1 and mv.c_contiguous else mv.cast("B")


def buffers_len(bufs: Iterable[Any]) -> int:
    """Total bytes of a list of buffers."""
    return sum(_view(b).nbytes for b in bufs)


def slice_buffers(bufs: Sequence[Any], offset: int, length: int) -> list[memoryview]:
    """Views of bytes ``offset``..``offset+length`` of a list of buffers taken
    as one stream (no copy)."""
    out: list[memoryview] = []
    for buf in bufs:
        mv = _view(buf)
        n = mv.nbytes
        if offset >= n:
            offset -= n
            continue
        take = min(n - offset, length)
        out.append(mv[offset : offset + take])
        length -= take
        offset = 0
        if not length:
            break
    if length:
        raise ValueError("range beyond the buffers")
    return out


def _split(bufs: Sequence[memoryview], size: int) -> list[list[memoryview]]:
    """Cut a list of views into consecutive pieces of at most ``size`` bytes."""
    pieces: list[list[memoryview]] = []
    cur: list[memoryview] = []
    room = size
    for mv in bufs:
        while mv.nbytes:
            take = min(room, mv.nbytes)
            cur.append(mv[:take])
            mv = mv[take:]
            room -= take
            if not room:
                pieces.append(cur)
                cur, room = [], size
    if cur:
        pieces.append(cur)
    return pieces


# ---------------------------------------------------------------------------
# The common part of both ends


class _Fatal(Exception):
    def __init__(self, fes: int, fei: int, message: str, *, reply: bool = True):
        super().__init__(message)
        self.fes = int(fes)
        self.fei = fei
        self.reply = reply


class _Pdu:
    """What the common header of a received PDU says, once checked."""

    __slots__ = ("kind", "flags", "hlen", "plen", "header_end", "data_off", "data_len", "ddgst", "ref", "extra")

    def __init__(self, kind, flags, hlen, plen, header_end, data_off, data_len, ddgst):
        self.kind = kind
        self.flags = flags
        self.hlen = hlen
        self.plen = plen
        self.header_end = header_end
        self.data_off = data_off
        self.data_len = data_len
        self.ddgst = ddgst
        self.ref = None  # what the type-specific header check found (R2T, command)
        self.extra = None


class _Stream:
    """Framing, header checks, digests and termination for both ends."""

    _IS_CONTROLLER = False
    _RECEIVES: frozenset = frozenset()
    _PEER_TERM = PduType.H2C_TERM_REQ
    _OWN_TERM = PduType.C2H_TERM_REQ

    def __init__(self, *, max_data_pdu: int):
        self.state = StreamState.AWAIT_IC
        self.hdgst = False  # header digests in use
        self.ddgst = False  # data digests in use
        self.rx_pda = 0  # alignment we ask of the data we receive (our CPDA or HPDA)
        self.tx_pda = 0  # alignment the peer asks of the data we send
        self.max_data_pdu = max_data_pdu  # largest data a received PDU may carry
        self.lock = threading.RLock()
        self._pbuf: bytearray | None = None  # the PDU being assembled across reads
        self._have = 0
        self._info: _Pdu | None = None
        self._hdr_done = False
        self._small = bytearray(COMMON_HEADER_SIZE)
        self._direct = False
        self._fresh: bytearray | None = None
        self._kept: bytearray | None = None  # recv_buffer(keep=True)'s buffer
        self._hdr_ref: tuple[memoryview, int, int] | None = None
        # The common header of a command capsule without data and of one with
        # in-capsule data at the usual PDO (its first four bytes), as integers,
        # once the connection is live without digests; 0: no fast lane.
        self._plain_cmd = 0
        self._plain_icd = 0
        # More such headers (first four bytes) -> (type, HLEN, PDO), e.g. the
        # host's responses and C2HData; filled once the connection is live.
        # The last item: a function that checks such a PDU and makes its event
        # in one go (or None: the usual _Pdu path).
        self._fast_pdus: dict[int, tuple[PduType, int, int, Any]] = {}

    # -- state --------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.state is StreamState.LIVE

    @property
    def closed(self) -> bool:
        return self.state in (StreamState.CLOSED, StreamState.ERROR)

    # -- receiving ------------------------------------------------------------------

    def receive_data(self, data: Any) -> list[Event]:
        """Feed bytes received from the peer; returns the events they make.
        Empty ``data`` means the peer closed the connection."""
        with self.lock:
            if self.closed:
                return []
            if not len(data):
                return self._eof()
            events: list[Event] = []
            try:
                self._feed(_view(data), events)
            except _Fatal as fatal:
                events.append(self._fatal(fatal))
            finally:
                self._hdr_ref = None  # never keep a receive buffer alive past this call
            return events

    def recv_buffer(self, size: int = 65536, *, keep: bool = False) -> memoryview:
        """A buffer to receive into (``sock.recv_into``), then call
        :meth:`received_into` with the count.  While a large PDU is being
        assembled this is the rest of that PDU itself (no copy at all).
        ``keep``: the stream keeps the buffer and hands it out again once
        nothing holds a view of it any more (the events of the last receive
        were dropped) -- no new memory per receive, for a connection that
        is busy; without it (an idle connection holds nothing) a new one."""
        with self.lock:
            pbuf, info = self._pbuf, self._info
            if pbuf is not None and info is not None and info.plen - self._have >= _DIRECT_MIN:
                self._direct = True
                return memoryview(pbuf)[self._have : info.plen]
            self._direct = False
            buf = self._kept if keep else None
            if buf is not None:
                try:  # a resize is refused while a view of the buffer lives
                    buf.append(0)
                    buf.pop()
                except BufferError:
                    buf = None
            if buf is None or len(buf) != size:
                buf = bytearray(size)
            self._kept = buf if keep else None
            self._fresh = buf
            return memoryview(buf)

    def received_into(self, count: int) -> list[Event]:
        """``count`` bytes were received into the last :meth:`recv_buffer`."""
        with self.lock:
            if self._direct:
                self._direct = False
                if self.closed:
                    return []
                if not count:
                    return self._eof()
                self._have += count
                events: list[Event] = []
                try:
                    self._progress(events)
                except _Fatal as fatal:
                    events.append(self._fatal(fatal))
                finally:
                    self._hdr_ref = None
                return events
            fresh, self._fresh = self._fresh, None
        if fresh is None:
            raise RuntimeError("received_into without recv_buffer")
        return self.receive_data(memoryview(fresh)[:count])

    def _eof(self) -> list[Event]:
        partial = self._pbuf is not None
        self._pbuf = self._info = None
        self.state = StreamState.CLOSED
        return [ConnectionClosed(partial)]

    def _feed(self, mv: memoryview, events: list[Event]) -> None:
        pos, end = 0, mv.nbytes
        plain, plain_icd = self._plain_cmd, self._plain_icd
        fast_pdus = self._fast_pdus
        while pos < end:
            if plain and self._pbuf is None and end - pos >= _CAPSULE_CMD_LEN and self.state is _LIVE:
                # The common case, decided once at ICReq: a command capsule
                # without digests whose header is exactly what every
                # check of _check_common would accept.
                head = _LE64.unpack_from(mv, pos)[0]
                if head == plain:
                    events.append(CommandReceived(_LE16.unpack_from(mv, pos + _SQE_CID)[0],
                                                  mv[pos + _SQE_OFF : pos + _SQE_END], None, False))
                    pos += _CAPSULE_CMD_LEN
                    continue
                if head & 0xFFFFFFFF == plain_icd:
                    plen = head >> 32
                    pdo = mv[pos + 3]
                    if pdo < plen <= pdo + self.max_icd and plen <= end - pos:
                        events.append(CommandReceived(_LE16.unpack_from(mv, pos + _SQE_CID)[0],
                                                      mv[pos + _SQE_OFF : pos + _SQE_END], mv[pos + pdo : pos + plen],
                                                      False))
                        pos += plen
                        continue
            if fast_pdus and self._pbuf is None and end - pos >= COMMON_HEADER_SIZE and self.state is _LIVE:
                # Other PDUs without digests whose common header (type, flags,
                # HLEN, PDO) is one every check accepts: only the length and the
                # type's own checks are left.
                head = _LE64.unpack_from(mv, pos)[0]
                known = fast_pdus.get(head & 0xFFFFFFFF)
                if known is not None:
                    kind, hlen, pdo, lane = known
                    plen = head >> 32
                    if (plen == hlen if not pdo else pdo < plen <= pdo + self._data_limit(kind)) and plen <= end - pos:
                        if lane is not None:  # the type's own checks and event, without a _Pdu
                            lane(self, mv, pos, plen, pdo, events)
                            pos += plen
                            continue
                        pdu = mv[pos : pos + plen]
                        info = _Pdu(kind, mv[pos + 1], hlen, plen, hlen, pdo or hlen, plen - pdo if pdo else 0, False)
                        self._hdr_ref = (pdu, 0, hlen)
                        check = self._HEADER_CHECKS.get(kind)
                        if check is not None:
                            check(self, pdu, info)
                        self._COMPLETE[kind](self, pdu, info, events)
                        pos += plen
                        continue
            if self.closed:
                return
            if self._pbuf is None:
                avail = end - pos
                if avail < COMMON_HEADER_SIZE:
                    self._small[:avail] = mv[pos:end]
                    self._pbuf, self._have, self._info = self._small, avail, None
                    return
                info = self._check_common(mv, pos, avail)
                plen = info.plen
                if avail >= plen:
                    pdu = mv[pos : pos + plen]
                    pos += plen
                    self._check_header(pdu, info)
                    self._complete(pdu, info, events)
                    continue
                buf = bytearray(plen)
                buf[:avail] = mv[pos:end]
                self._pbuf, self._have, self._info, self._hdr_done = buf, avail, info, False
                self._progress(events)
                return
            if self._info is None:
                take = min(COMMON_HEADER_SIZE - self._have, end - pos)
                self._small[self._have : self._have + take] = mv[pos : pos + take]
                self._have += take
                pos += take
                if self._have < COMMON_HEADER_SIZE:
                    return
                info = self._check_common(memoryview(self._small), 0, COMMON_HEADER_SIZE)
                buf = bytearray(info.plen)
                buf[:COMMON_HEADER_SIZE] = self._small
                self._pbuf, self._info, self._hdr_done = buf, info, False
            info = self._info
            take = min(info.plen - self._have, end - pos)
            self._pbuf[self._have : self._have + take] = mv[pos : pos + take]
            self._have += take
            pos += take
            self._progress(events)

    def _progress(self, events: list[Event]) -> None:
        info = self._info
        if not self._hdr_done and self._have >= info.header_end:
            self._hdr_done = True
            self._check_header(memoryview(self._pbuf), info)
        if self._have == info.plen:
            buf = self._pbuf
            self._pbuf = self._info = None
            self._complete(memoryview(buf), info, events)

    def _check_common(self, mv: memoryview, pos: int, avail: int) -> _Pdu:
        """Check the 8-byte common header, field by field in order."""
        self._hdr_ref = (mv, pos, avail)
        value, flags, hlen, pdo = mv[pos], mv[pos + 1], mv[pos + 2], mv[pos + 3]
        plen = _LE32.unpack_from(mv, pos + 4)[0]
        # PDU-Type
        kind = _TYPES.get(value)
        if kind is None:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_TYPE, f"unknown PDU type {value:#04x}")
        if kind in _TERM_REQS:
            if kind is not self._PEER_TERM:
                raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_TYPE, f"{kind.name} sent to the wrong end")
            if not HLEN[kind] <= plen <= HLEN[kind] + TERM_REQ_DATA_MAX:
                raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_PLEN, f"{kind.name} with PLEN {plen}", reply=False)
        elif kind not in self._RECEIVES:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_TYPE, f"a {self._role} does not receive {kind.name} PDUs")
        elif kind in _IC:
            if self.state is not StreamState.AWAIT_IC:
                raise _Fatal(FES.PDU_SEQUENCE_ERROR, _FEI_TYPE, f"{kind.name} on an initialized connection")
        elif self.state is StreamState.AWAIT_IC:
            raise _Fatal(FES.PDU_SEQUENCE_ERROR, _FEI_TYPE, f"{kind.name} before the connection was initialized")
        # FLAGS
        if flags & ~_VALID_FLAGS[kind]:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_FLAGS, f"{kind.name}: FLAGS {flags:#04x} has reserved bits")
        has_h = bool(flags & _H)
        has_d = bool(flags & _D)
        if kind not in _IC and kind not in _TERM_REQS and has_h != self.hdgst:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_FLAGS,
                         f"{kind.name}: HDGSTF {int(has_h)} but header digests are {'on' if self.hdgst else 'off'}")
        if flags & _SUCCESS and not flags & _LAST:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_FLAGS, "C2HData: SUCCESS without LAST_PDU")
        # HLEN
        if hlen != HLEN[kind]:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_HLEN, f"{kind.name}: HLEN {hlen}, expected {HLEN[kind]}")
        header_end = hlen + (DIGEST_LEN if has_h else 0)
        # PDO and PLEN
        if kind in _TERM_REQS:
            if pdo:
                raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_PDO, f"{kind.name}: PDO {pdo}")
            return _Pdu(kind, flags, hlen, plen, hlen, hlen, plen - hlen, False)
        if kind in _WITH_DATA and not (pdo == 0 and plen == header_end):
            align = (self.rx_pda + 1) * 4
            if pdo < header_end or pdo > plen or pdo % align:
                raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_PDO,
                             f"{kind.name}: PDO {pdo} (header ends at {header_end}, alignment {align}, PLEN {plen})")
            data_len = plen - pdo
            if has_d:
                if data_len <= DIGEST_LEN:
                    raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_PLEN, f"{kind.name}: PLEN {plen} too short for data and digest")
                data_len -= DIGEST_LEN
            if data_len and has_d != self.ddgst:
                raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_FLAGS,
                             f"{kind.name}: DDGSTF {int(has_d)} but data digests are {'on' if self.ddgst else 'off'}")
            if data_len > self._data_limit(kind):
                if kind is PduType.H2C_DATA:
                    raise _Fatal(FES.DATA_TRANSFER_LIMIT_EXCEEDED, 0,
                                 f"H2CData with {data_len} bytes, MAXH2CDATA is {self._data_limit(kind)}")
                raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_PLEN,
                             f"{kind.name} with {data_len} bytes of data, at most {self._data_limit(kind)} accepted")
            return _Pdu(kind, flags, hlen, plen, header_end, pdo, data_len, has_d)
        if pdo:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_PDO, f"{kind.name}: PDO {pdo} in a PDU without data")
        if has_d:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_FLAGS, f"{kind.name}: DDGSTF without data")
        if plen != header_end:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_PLEN, f"{kind.name}: PLEN {plen}, expected {header_end}")
        return _Pdu(kind, flags, hlen, plen, header_end, header_end, 0, False)

    def _data_limit(self, kind: PduType) -> int:
        return self.max_data_pdu

    def _check_header(self, pdu: memoryview, info: _Pdu) -> None:
        """The whole header is here: its digest, then the type's own fields."""
        self._hdr_ref = (pdu, 0, min(pdu.nbytes, info.header_end))
        if info.header_end != info.hlen:
            hlen = info.hlen
            if crc32c(pdu[:hlen]) != _LE32.unpack_from(pdu, hlen)[0]:
                raise _Fatal(FES.HEADER_DIGEST_ERROR, 0, f"{info.kind.name}: header digest error")
        check = self._HEADER_CHECKS.get(info.kind)
        if check is not None:
            check(self, pdu, info)

    _HEADER_CHECKS: dict = {}

    def _data(self, pdu: memoryview, info: _Pdu) -> tuple[memoryview, bool]:
        """The PDU data and whether its digest is wrong."""
        start = info.data_off
        data = pdu[start : start + info.data_len]
        if info.ddgst and crc32c(data) != _LE32.unpack_from(pdu, start + info.data_len)[0]:
            return data, True
        return data, False

    def _complete(self, pdu: memoryview, info: _Pdu, events: list[Event]) -> None:
        kind = info.kind
        if kind in _TERM_REQS:
            self.state = StreamState.CLOSED
            events.append(TermReqReceived(int(kind), _LE16.unpack_from(pdu, _FES_OFF)[0],
                                          _LE32.unpack_from(pdu, _FEI_OFF)[0], bytes(pdu[info.hlen : info.plen])))
            return
        self._COMPLETE[kind](self, pdu, info, events)

    _COMPLETE: dict = {}

    def _fatal(self, fatal: _Fatal) -> ProtocolError:
        self.state = StreamState.ERROR
        self._pbuf = self._info = None
        term = None
        if fatal.reply:
            offending = b""
            if self._hdr_ref is not None:
                mv, pos, avail = self._hdr_ref
                hlen = mv[pos + 2] if avail > 2 else 0
                n = hlen if COMMON_HEADER_SIZE <= hlen <= TERM_REQ_DATA_MAX else COMMON_HEADER_SIZE
                offending = bytes(mv[pos : pos + min(n, avail)])
            term = [term_req(self._OWN_TERM, fatal.fes, fatal.fei, offending)]
        self._hdr_ref = None
        return ProtocolError(fatal.fes, fatal.fei, str(fatal), term)

    def terminate(self, fes: int, fei: int = 0, offending: Any = b"") -> list:
        """End the connection ourselves: the TermReq to send (the stream
        reads nothing more)."""
        with self.lock:
            self.state = StreamState.ERROR
            return [term_req(self._OWN_TERM, fes, fei, offending)]

    # -- sending --------------------------------------------------------------------

    def _header(self, kind: int, data_len: int, flags: int = 0) -> tuple[bytearray, tuple]:
        """The bytes before the data of a PDU we send (header, its digest
        and the pad) with PDU-Type, FLAGS, HLEN, PDO and PLEN filled in;
        the layout rules are :func:`~nvmestack.spec.tcp.pdu_layout`'s, for
        the PDU types that carry digests, computed inline (hot path)."""
        hlen = HLEN[kind]
        hd = self.hdgst
        header_end = hlen + DIGEST_LEN if hd else hlen
        if data_len:
            align = (self.tx_pda + 1) * 4
            pdo = -(-header_end // align) * align
            dd = self.ddgst
            plen = pdo + data_len + (DIGEST_LEN if dd else 0)
            head = bytearray(pdo)
        else:
            pdo = 0
            dd = False
            plen = header_end
            head = bytearray(header_end)
        head[_FEI_TYPE] = kind
        head[_FEI_FLAGS] = flags | (_H if hd else 0) | (_D if dd else 0)
        head[_FEI_HLEN] = hlen
        head[_FEI_PDO] = pdo
        _LE32.pack_into(head, _FEI_PLEN, plen)
        return head, (hlen, hd, dd)

    def _finish(self, head: bytearray, layout: tuple, data: Sequence[memoryview] = ()) -> list:
        """Header digest, and the data digest after the data."""
        hlen, hd, dd = layout
        if hd:
            _LE32.pack_into(head, hlen, crc32c(memoryview(head)[:hlen]))
        if not data:
            return [head]
        out: list = [head]
        out.extend(data)
        if dd:
            value = 0
            for chunk in data:
                value = crc32c(chunk, value)
            out.append(_LE32.pack(value))
        return out

    @property
    def _role(self) -> str:
        return "controller" if self._IS_CONTROLLER else "host"


# ---------------------------------------------------------------------------
# The controller's end


class _R2TState:
    __slots__ = ("cid", "ttag", "offset", "length", "done", "digest_error")

    def __init__(self, cid: int, ttag: int, offset: int, length: int):
        self.cid = cid
        self.ttag = ttag
        self.offset = offset
        self.length = length
        self.done = 0
        self.digest_error = False


class ControllerStream(_Stream):
    """The controller's (target's) end of an NVMe/TCP connection.

    ``cpda``: alignment asked of the host's data PDUs ((CPDA + 1) * 4 bytes);
    ``maxh2cdata``: most data one H2CData PDU may carry; ``max_icd``: most
    in-capsule data a command capsule may carry (PLEN beyond it is a fatal
    error); ``digests``: which of the digests the host asks for are granted;
    ``max_c2h_data``: split C2HData PDUs at this size (``None``: one PDU per
    call).
    """

    _IS_CONTROLLER = True
    _RECEIVES = frozenset({PduType.ICREQ, PduType.CAPSULE_CMD, PduType.H2C_DATA, PduType.H2C_TERM_REQ})
    _PEER_TERM = PduType.H2C_TERM_REQ
    _OWN_TERM = PduType.C2H_TERM_REQ

    def __init__(
        self,
        *,
        cpda: int = 0,
        maxh2cdata: int = DEFAULT_MAXH2CDATA,
        max_icd: int = DEFAULT_MAX_ICD,
        digests: DigestType = DigestType.HDGST_ENABLE | DigestType.DDGST_ENABLE,
        max_c2h_data: int | None = None,
    ):
        if not 0 <= cpda <= PDA_MAX:
            raise ValueError(f"CPDA {cpda} outside 0..{PDA_MAX}")
        if maxh2cdata < MIN_MAXH2CDATA or maxh2cdata % 4:
            raise ValueError(f"MAXH2CDATA {maxh2cdata} must be a multiple of 4, at least {MIN_MAXH2CDATA}")
        if max_c2h_data is not None and max_c2h_data <= 0:
            raise ValueError("max_c2h_data must be positive")
        super().__init__(max_data_pdu=max(maxh2cdata, max_icd))
        self.cpda = self.rx_pda = cpda
        self.maxh2cdata = maxh2cdata
        self.max_icd = max_icd
        self.digests = DigestType(digests)
        self.max_c2h_data = max_c2h_data
        self.maxr2t = 0  # from ICReq, 0's based
        self.hpda = 0
        self._r2ts: dict[int, _R2TState] = {}
        self._r2ts_per_cid: dict[int, int] = {}
        self._next_ttag = 0

    def _data_limit(self, kind: PduType) -> int:
        return self.maxh2cdata if kind is PduType.H2C_DATA else self.max_icd

    # -- receiving ------------------------------------------------------------------

    def _icreq(self, pdu: memoryview, info: _Pdu, events: list[Event]) -> None:
        req = ICReq.view(pdu)
        if req.pfv != PFV_1_0:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_PFV, f"ICReq PFV {req.pfv}, only 0 is defined")
        if req.hpda > PDA_MAX:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_PDA, f"ICReq HPDA {req.hpda} outside 0..{PDA_MAX}")
        asked = DigestType(req.dgst & 3)
        granted = asked & self.digests
        self.hdgst = bool(granted & DigestType.HDGST_ENABLE)
        self.ddgst = bool(granted & DigestType.DDGST_ENABLE)
        self.hpda = self.tx_pda = req.hpda
        self.maxr2t = req.maxr2t
        resp = ICResp()
        resp.pfv = PFV_1_0
        resp.cpda = self.cpda
        resp.dgst = int(granted)
        resp.maxh2cdata = self.maxh2cdata
        self.state = StreamState.LIVE
        if not self.hdgst and not self.ddgst:
            kind, hlen = int(PduType.CAPSULE_CMD), _CAPSULE_CMD_LEN
            self._plain_cmd = kind | hlen << 16 | hlen << 32
            align = (self.rx_pda + 1) * 4
            pdo = -(-hlen // align) * align
            if pdo <= 0xFF:
                self._plain_icd = kind | hlen << 16 | pdo << 24
        events.append(ICReqReceived(req.pfv, req.hpda, bool(asked & DigestType.HDGST_ENABLE),
                                    bool(asked & DigestType.DDGST_ENABLE), req.maxr2t, [bytes(resp)]))

    def _capsule(self, pdu: memoryview, info: _Pdu, events: list[Event]) -> None:
        sqe = pdu[_SQE_OFF : _SQE_OFF + SQE_SIZE]
        cid = _LE16.unpack_from(pdu, _SQE_CID)[0]
        if info.data_len:
            data, bad = self._data(pdu, info)
            events.append(CommandReceived(cid, sqe, data, bad))
        else:
            events.append(CommandReceived(cid, sqe, None, False))

    def _check_h2c(self, pdu: memoryview, info: _Pdu) -> None:
        hdr = H2CData.view(pdu)
        r2t = self._r2ts.get(hdr.ttag)
        if r2t is None:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_TTAG, f"H2CData for TTAG {hdr.ttag}, which no R2T gave out")
        if hdr.cccid != r2t.cid:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_CCCID,
                         f"H2CData for TTAG {r2t.ttag} names command {hdr.cccid:#x}, the R2T was for {r2t.cid:#x}")
        datal = hdr.datal
        if datal != info.data_len or not datal:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_DATAL, f"H2CData DATAL {datal}, the PDU carries {info.data_len}")
        datao = hdr.datao
        if datao < r2t.offset or datao + datal > r2t.offset + r2t.length:
            raise _Fatal(FES.DATA_TRANSFER_OUT_OF_RANGE, 0,
                         f"H2CData {datao}+{datal} outside the R2T's {r2t.offset}+{r2t.length}")
        if datao != r2t.offset + r2t.done:
            raise _Fatal(FES.PDU_SEQUENCE_ERROR, 0, f"H2CData at offset {datao}, expected {r2t.offset + r2t.done}")
        last = bool(info.flags & _LAST)
        if last != (r2t.done + datal == r2t.length):
            raise _Fatal(FES.PDU_SEQUENCE_ERROR, 0,
                         f"H2CData LAST_PDU {int(last)} at {datao}+{datal} of an R2T for {r2t.offset}+{r2t.length}")
        r2t.done += datal
        info.ref = r2t
        info.extra = datao

    def _h2c(self, pdu: memoryview, info: _Pdu, events: list[Event]) -> None:
        r2t: _R2TState = info.ref
        data, bad = self._data(pdu, info)
        if bad:
            r2t.digest_error = True
        done = r2t.done == r2t.length
        if done:
            self._release(r2t)
        events.append(H2CDataReceived(r2t.cid, r2t.ttag, info.extra, data, bool(info.flags & _LAST), done, bad))

    def _release(self, r2t: _R2TState) -> None:
        if self._r2ts.pop(r2t.ttag, None) is not None:
            left = self._r2ts_per_cid.get(r2t.cid, 1) - 1
            if left:
                self._r2ts_per_cid[r2t.cid] = left
            else:
                self._r2ts_per_cid.pop(r2t.cid, None)

    _HEADER_CHECKS = {PduType.H2C_DATA: _check_h2c}
    _COMPLETE = {PduType.ICREQ: _icreq, PduType.CAPSULE_CMD: _capsule, PduType.H2C_DATA: _h2c}

    # -- sending --------------------------------------------------------------------

    def r2t(self, cid: int, offset: int, length: int) -> list:
        """An R2T asking for ``length`` bytes of command ``cid``'s data from
        ``offset``; the H2CData that answers it is checked against it.  At
        most MAXR2T + 1 may be outstanding for one command."""
        if length <= 0 or offset < 0 or offset + length > 0xFFFFFFFF:
            raise ValueError(f"R2T range {offset}+{length} is invalid")
        with self.lock:
            if self._r2ts_per_cid.get(cid, 0) > self.maxr2t:
                raise ValueError(f"command {cid:#x} already has {self.maxr2t + 1} R2Ts outstanding (MAXR2T)")
            if len(self._r2ts) >= 0x10000:
                raise ValueError("no free transfer tag")
            ttag = self._next_ttag
            while ttag in self._r2ts:
                ttag = (ttag + 1) & 0xFFFF
            self._next_ttag = (ttag + 1) & 0xFFFF
            self._r2ts[ttag] = _R2TState(cid, ttag, offset, length)
            self._r2ts_per_cid[cid] = self._r2ts_per_cid.get(cid, 0) + 1
        head, layout = self._header(PduType.R2T, 0)
        _LE16.pack_into(head, _DATA_CCCID, cid)
        _LE16.pack_into(head, _DATA_TTAG, ttag)
        _LE32.pack_into(head, _DATA_OFFSET, offset)
        _LE32.pack_into(head, _DATA_LENGTH, length)
        return self._finish(head, layout)

    def cancel_transfers(self, cid: int) -> None:
        """Forget the R2Ts of command ``cid`` (it ended without its data)."""
        with self.lock:
            for r2t in [r for r in self._r2ts.values() if r.cid == cid]:
                self._release(r2t)

    @property
    def outstanding_r2ts(self) -> int:
        return len(self._r2ts)

    def c2h_data(self, cid: int, data: Sequence[Any], offset: int = 0, *, last: bool = True,
                 success: bool = False) -> list:
        """C2HData PDUs carrying ``data`` (a list of buffers) for command
        ``cid`` from byte ``offset``, cut at ``max_c2h_data``.  ``last``
        marks the final PDU LAST_PDU, ``success`` also SUCCESS (the command
        succeeded; send no response capsule then)."""
        if success and not last:
            raise ValueError("SUCCESS needs LAST_PDU")
        views = [v for v in (_view(b) for b in data) if v.nbytes]
        total = sum(v.nbytes for v in views)
        if not total:
            raise ValueError("C2HData needs data")
        pieces = [views] if self.max_c2h_data is None or total <= self.max_c2h_data else _split(views, self.max_c2h_data)
        out: list = []
        for i, piece in enumerate(pieces):
            n = total if len(pieces) == 1 else sum(v.nbytes for v in piece)
            final = last and i == len(pieces) - 1
            flags = (_LAST | (_SUCCESS if success else 0)) if final else 0
            head, layout = self._header(PduType.C2H_DATA, n, flags)
            _LE16.pack_into(head, _DATA_CCCID, cid)
            _LE32.pack_into(head, _DATA_OFFSET, offset)
            _LE32.pack_into(head, _DATA_LENGTH, n)
            out.extend(self._finish(head, layout, piece))
            offset += n
        return out

    def response(self, cqe: Any) -> list:
        """A response capsule carrying the 16-byte completion ``cqe``."""
        raw = cqe.raw if hasattr(cqe, "raw") else _view(cqe)
        head, layout = self._header(PduType.CAPSULE_RESP, 0)
        head[_CQE_OFF : _CQE_OFF + 16] = raw[:16]
        return self._finish(head, layout)


# ---------------------------------------------------------------------------
# The host's end


class _HostCmd:
    __slots__ = ("cid", "r2t_data", "c2h_data", "length", "done", "r2ts", "ended")

    def __init__(self, cid: int, r2t_data: bool, c2h_data: bool, length: int):
        self.cid = cid
        self.r2t_data = r2t_data  # write data the controller asks for with R2Ts
        self.c2h_data = c2h_data  # read data the controller sends
        self.length = length
        self.done = 0  # bytes asked for (writes) or received (reads)
        self.r2ts = 0  # R2Ts not answered yet
        self.ended = False  # read: LAST_PDU seen


class HostStream(_Stream):
    """The host's end of an NVMe/TCP connection.

    ``hpda``: alignment asked of the controller's data PDUs; ``hdgst`` /
    ``ddgst``: digests to ask for; ``maxr2t``: R2Ts per command allowed at
    once (0's based); ``max_icd``: most write data to put in a command capsule
    (:data:`ADMIN_MAX_ICD` for an admin queue; ``IOCCSZ * 16 - 64`` for an
    I/O queue); ``max_data_pdu``: largest C2HData accepted.
    """

    _IS_CONTROLLER = False
    _RECEIVES = frozenset({PduType.ICRESP, PduType.CAPSULE_RESP, PduType.C2H_DATA, PduType.R2T,
                           PduType.C2H_TERM_REQ})
    _PEER_TERM = PduType.C2H_TERM_REQ
    _OWN_TERM = PduType.H2C_TERM_REQ

    def __init__(
        self,
        *,
        hpda: int = 0,
        hdgst: bool = False,
        ddgst: bool = False,
        maxr2t: int = 0,
        max_icd: int = ADMIN_MAX_ICD,
        max_data_pdu: int = 1 << 24,
    ):
        if not 0 <= hpda <= PDA_MAX:
            raise ValueError(f"HPDA {hpda} outside 0..{PDA_MAX}")
        super().__init__(max_data_pdu=max_data_pdu)
        self.hpda = self.rx_pda = hpda
        self.want_hdgst = hdgst
        self.want_ddgst = ddgst
        self.maxr2t = maxr2t
        self.max_icd = max_icd
        self.cpda = 0
        self.maxh2cdata = MIN_MAXH2CDATA
        self._cmds: dict[int, _HostCmd] = {}
        self._sent_icreq = False
        # Without digests: the bytes before the SQE's end of a command capsule
        # with no data, and before the data of one with data in the capsule
        # (PLEN left to fill); set once the connection is live.
        self._plain_head: bytes | None = None
        self._plain_icd_head: bytes = b""

    # -- sending --------------------------------------------------------------------

    def initiate(self) -> list:
        """The ICReq that opens the connection."""
        with self.lock:
            if self._sent_icreq:
                raise RuntimeError("ICReq already sent")
            self._sent_icreq = True
        req = ICReq()
        req.pfv = PFV_1_0
        req.hpda = self.hpda
        req.hdgst_enable = self.want_hdgst
        req.ddgst_enable = self.want_ddgst
        req.maxr2t = self.maxr2t
        return [bytes(req)]

    def command(self, sqe: Any, data: Sequence[Any] = (), *, length: int | None = None, write: bool = False,
                in_capsule: bool | None = None) -> list:
        """A command capsule for the 64-byte ``sqe`` moving ``length`` bytes
        (default: the size of ``data``), host to controller when ``write``.
        The stream writes the SGL (in-capsule data or a transport data block)
        and PSDT; write data goes in the capsule when ``in_capsule`` (by
        default when it fits ``max_icd``), otherwise the controller asks for
        it with R2Ts."""
        views = [v for v in (_view(b) for b in data) if v.nbytes]
        size = sum(v.nbytes for v in views)
        if length is None:
            length = size
        if write and size < length:
            raise ValueError(f"write of {length} bytes with {size} bytes of data")
        raw = sqe.raw if hasattr(sqe, "raw") else _view(sqe)
        return self.command_views(raw, views, length, write, in_capsule)

    def command_views(self, raw: Any, views: list[memoryview], length: int, write: bool,
                      in_capsule: bool | None = None) -> list:
        """:meth:`command` for a caller whose data is checked already (the
        host transport's mapping): ``raw`` the 64-byte SQE, ``views`` byte
        memoryviews, none empty, holding at least ``length`` bytes when
        ``write``."""
        icd = bool(write and length and (in_capsule if in_capsule is not None else length <= self.max_icd))
        plain = self._plain_head
        if plain is not None and not icd:
            # No digests, no data in the capsule: the header is always the same.
            head = bytearray(plain)
            layout = None
        elif plain is not None:
            head = bytearray(self._plain_icd_head)
            _LE32.pack_into(head, _FEI_PLEN, len(head) + length)
            layout = None
        else:
            head, layout = self._header(PduType.CAPSULE_CMD, length if icd else 0)
        head[_SQE_OFF : _SQE_OFF + SQE_SIZE] = raw[:SQE_SIZE]
        head[_SQE_PSDT] = (head[_SQE_PSDT] & ~_PSDT_MASK & 0xFF) | _PSDT_SGL
        _SGL_PACK.pack_into(head, _SGL_OFF, 0, length, SGL_IN_CAPSULE if icd else SGL_TRANSPORT)
        cid = _LE16.unpack_from(head, _SQE_CID)[0]
        with self.lock:
            if cid in self._cmds:
                raise ValueError(f"command {cid:#x} is still outstanding on this connection")
            self._cmds[cid] = _HostCmd(cid, bool(write and length and not icd), bool(length and not write), length)
        if layout is None:
            if not icd:
                return [head]
            out: list = [head]
            out.extend(slice_buffers(views, 0, length))
            return out
        return self._finish(head, layout, slice_buffers(views, 0, length) if icd else ())

    def forget(self, cid: int) -> None:
        """Stop tracking command ``cid`` (aborted, timed out)."""
        with self.lock:
            self._cmds.pop(cid, None)

    @property
    def outstanding(self) -> int:
        return len(self._cmds)

    def h2c_data(self, cid: int, ttag: int, offset: int, data: Sequence[Any], *, last: bool) -> list:
        """One H2CData PDU (no checks; see :meth:`data_for_r2t`)."""
        views = [v for v in (_view(b) for b in data) if v.nbytes]
        n = sum(v.nbytes for v in views)
        head, layout = self._header(PduType.H2C_DATA, n, _LAST if last else 0)
        _LE16.pack_into(head, _DATA_CCCID, cid)
        _LE16.pack_into(head, _DATA_TTAG, ttag)
        _LE32.pack_into(head, _DATA_OFFSET, offset)
        _LE32.pack_into(head, _DATA_LENGTH, n)
        return self._finish(head, layout, views)

    def data_for_r2t(self, r2t: R2TReceived, data: Sequence[Any]) -> list:
        """The H2CData PDUs answering ``r2t``, cut at MAXH2CDATA, from the
        command's whole data ``data`` (a list of buffers)."""
        views = slice_buffers(data, r2t.offset, r2t.length)
        pieces = _split(views, self.maxh2cdata)
        out: list = []
        offset = r2t.offset
        for i, piece in enumerate(pieces):
            out.extend(self.h2c_data(r2t.cid, r2t.ttag, offset, piece, last=i == len(pieces) - 1))
            offset += sum(v.nbytes for v in piece)
        with self.lock:
            cmd = self._cmds.get(r2t.cid)
            if cmd is not None and cmd.r2ts:
                cmd.r2ts -= 1
        return out

    # -- receiving ------------------------------------------------------------------

    def _icresp(self, pdu: memoryview, info: _Pdu, events: list[Event]) -> None:
        resp = ICResp.view(pdu)
        if resp.pfv != PFV_1_0:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_PFV, f"ICResp PFV {resp.pfv}, only 0 is defined")
        if resp.cpda > PDA_MAX:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_PDA, f"ICResp CPDA {resp.cpda} outside 0..{PDA_MAX}")
        granted = resp.dgst
        asked = (DigestType.HDGST_ENABLE if self.want_hdgst else 0) | (DigestType.DDGST_ENABLE if self.want_ddgst else 0)
        if granted & ~int(asked):
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_DGST, f"ICResp enables digests {granted:#x}, asked {int(asked):#x}")
        maxh2cdata = resp.maxh2cdata
        if maxh2cdata < MIN_MAXH2CDATA or maxh2cdata % 4:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_MAXH2CDATA, f"ICResp MAXH2CDATA {maxh2cdata}")
        self.hdgst = bool(granted & DigestType.HDGST_ENABLE)
        self.ddgst = bool(granted & DigestType.DDGST_ENABLE)
        self.cpda = self.tx_pda = resp.cpda
        self.maxh2cdata = maxh2cdata
        self.state = StreamState.LIVE
        if not self.hdgst and not self.ddgst:
            self._plain_icd_head = bytes(self._header(PduType.CAPSULE_CMD, 1)[0])
            self._plain_head = bytes(self._header(PduType.CAPSULE_CMD, 0)[0])
            resp_kind, data_kind, r2t_kind = PduType.CAPSULE_RESP, PduType.C2H_DATA, PduType.R2T
            align = (self.rx_pda + 1) * 4
            pdo = -(-HLEN[data_kind] // align) * align
            fast = {int(resp_kind) | HLEN[resp_kind] << 16: (resp_kind, HLEN[resp_kind], 0, HostStream._lane_response),
                    int(r2t_kind) | HLEN[r2t_kind] << 16: (r2t_kind, HLEN[r2t_kind], 0, None)}
            if pdo <= 0xFF:
                for flags in (0, _LAST, _LAST | _SUCCESS):
                    fast[int(data_kind) | flags << 8 | HLEN[data_kind] << 16 | pdo << 24] = (
                        data_kind, HLEN[data_kind], pdo, HostStream._lane_c2h)
            self._fast_pdus = fast
        events.append(ICRespReceived(resp.pfv, resp.cpda, self.hdgst, self.ddgst, maxh2cdata))

    def _response(self, pdu: memoryview, info: _Pdu, events: list[Event]) -> None:
        self._lane_response(pdu, 0, info.plen, 0, events)

    # The fast lane's handlers (see _Stream._feed): a whole PDU without
    # digests at ``pos`` whose common header every check accepts.

    def _lane_response(self, mv: memoryview, pos: int, plen: int, pdo: int, events: list[Event]) -> None:
        cid = _LE16.unpack_from(mv, pos + _CQE_CID)[0]
        known = self._cmds.pop(cid, None) is not None
        events.append(ResponseReceived(cid, mv[pos + _CQE_OFF : pos + _CQE_OFF + 16], known))

    def _lane_c2h(self, mv: memoryview, pos: int, plen: int, pdo: int, events: list[Event]) -> None:
        flags, cccid, datao, datal = _C2H_FIELDS.unpack_from(mv, pos)
        try:
            self._c2h_fields(cccid, datao, datal, plen - pdo, flags)
        except _Fatal:
            self._hdr_ref = (mv[pos : pos + plen], 0, HLEN[PduType.C2H_DATA])  # the offending header
            raise
        events.append(C2HDataReceived(cccid, datao, mv[pos + pdo : pos + plen], bool(flags & _LAST),
                                      bool(flags & _SUCCESS), False))

    def _check_r2t(self, pdu: memoryview, info: _Pdu) -> None:
        hdr = R2T.view(pdu)
        cmd = self._cmds.get(hdr.cccid)
        if cmd is None or not cmd.r2t_data:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_CCCID,
                         f"R2T for command {hdr.cccid:#x}, which has no write data to ask for")
        r2to, r2tl = hdr.r2to, hdr.r2tl
        if not r2tl:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_R2TL, "R2T asks for 0 bytes")
        if r2to != cmd.done:
            raise _Fatal(FES.PDU_SEQUENCE_ERROR, 0, f"R2T for offset {r2to}, expected {cmd.done}")
        if r2to + r2tl > cmd.length:
            raise _Fatal(FES.DATA_TRANSFER_OUT_OF_RANGE, 0,
                         f"R2T for {r2to}+{r2tl} beyond the command's {cmd.length} bytes")
        if cmd.r2ts > self.maxr2t:
            raise _Fatal(FES.R2T_LIMIT_EXCEEDED, 0, f"more than MAXR2T + 1 = {self.maxr2t + 1} R2Ts outstanding")
        cmd.done += r2tl
        cmd.r2ts += 1
        info.ref = (hdr.cccid, hdr.ttag, r2to, r2tl)

    def _r2t(self, pdu: memoryview, info: _Pdu, events: list[Event]) -> None:
        events.append(R2TReceived(*info.ref))

    def _check_c2h(self, pdu: memoryview, info: _Pdu) -> None:
        _flags, cccid, datao, datal = _C2H_FIELDS.unpack_from(pdu, 0)
        self._c2h_fields(cccid, datao, datal, info.data_len, info.flags)
        info.ref = cccid
        info.extra = datao

    def _c2h_fields(self, cccid: int, datao: int, datal: int, data_len: int, flags: int) -> None:
        """A C2HData's header against the command it names (both lanes)."""
        cmd = self._cmds.get(cccid)
        if cmd is None or not cmd.c2h_data:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_CCCID, f"C2HData for command {cccid:#x}, which reads no data")
        if datal != data_len or not datal:
            raise _Fatal(FES.INVALID_HEADER_FIELD, _FEI_DATAL, f"C2HData DATAL {datal}, the PDU carries {data_len}")
        if cmd.ended:
            raise _Fatal(FES.PDU_SEQUENCE_ERROR, 0, f"C2HData for command {cmd.cid:#x} after its last data PDU")
        if datao + datal > cmd.length:
            raise _Fatal(FES.DATA_TRANSFER_OUT_OF_RANGE, 0,
                         f"C2HData {datao}+{datal} beyond the command's {cmd.length} bytes")
        if datao != cmd.done:
            raise _Fatal(FES.PDU_SEQUENCE_ERROR, 0, f"C2HData at offset {datao}, expected {cmd.done}")
        cmd.done += datal
        if flags & _LAST:
            cmd.ended = True
        if flags & _SUCCESS:
            self._cmds.pop(cmd.cid, None)

    def _c2h(self, pdu: memoryview, info: _Pdu, events: list[Event]) -> None:
        data, bad = self._data(pdu, info)
        flags = info.flags
        events.append(C2HDataReceived(info.ref, info.extra, data, bool(flags & _LAST), bool(flags & _SUCCESS), bad))

    _HEADER_CHECKS = {PduType.R2T: _check_r2t, PduType.C2H_DATA: _check_c2h}
    _COMPLETE = {PduType.ICRESP: _icresp, PduType.CAPSULE_RESP: _response, PduType.R2T: _r2t, PduType.C2H_DATA: _c2h}
