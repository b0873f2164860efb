"""NVMe/TCP PDUs (NVMe/TCP Transport Specification 1.0, section 3.6 "PDU
Definitions"; 3.3 "PDU Format"; 3.6.2 digests).

Every PDU starts with the 8-byte common header (PDU-type, FLAGS, HLEN, PDO,
PLEN), followed by the rest of its type's fixed header (HLEN bytes in all),
then, in this order and each only when present:

* HDGST: CRC32C of the HLEN header bytes, 4 bytes little-endian;
* PAD: zero bytes up to PDO, which a receiver's PDU data alignment requires
  to be a multiple of ``(PDA + 1) * 4`` (CPDA for host to controller PDUs,
  HPDA for controller to host PDUs);
* DATA: the PDU data;
* DDGST: CRC32C of DATA (not of the padding), 4 bytes little-endian.

PLEN counts all of it.  Besides the header structures, this module has the
pure rules around them: :func:`pdu_layout` (where everything goes, for a
sender), :func:`parse_layout` (the same from a received common header, with
the Fatal Error Status a receiver answers a bad one with),
:func:`pdu_needed` / :func:`next_pdu` (reframing a byte stream without
copies) and the digest helpers.
"""

from __future__ import annotations

import struct as _struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any, ClassVar, Iterable

from .checksum import crc32c
from .cqe import Completion
from .layout import Field, Flag, Struct, Sub
from .sqe import Command

__all__ = [
    "PduType",
    "PduFlags",
    "DigestType",
    "FatalErrorStatus",
    "PduFormatError",
    "PFV_1_0",
    "COMMON_HEADER_SIZE",
    "DIGEST_LEN",
    "PDA_MAX",
    "HPDA_MAX",
    "CPDA_MAX",
    "MAX_HLEN",
    "TERM_REQ_DATA_MAX",
    "TERM_REQ_PLEN_MAX",
    "MIN_MAXH2CDATA",
    "DISCOVERY_PORT",
    "IO_PORT",
    "HLEN",
    "HOST_TO_CONTROLLER",
    "CONTROLLER_TO_HOST",
    "PduHeader",
    "ICReq",
    "ICResp",
    "H2CTermReq",
    "C2HTermReq",
    "CapsuleCmd",
    "CapsuleResp",
    "H2CData",
    "C2HData",
    "R2T",
    "header_class",
    "decode_header",
    "PduLayout",
    "pdu_layout",
    "parse_layout",
    "pdu_needed",
    "next_pdu",
    "crc32c",  # re-exported from spec.checksum
    "header_digest",
    "data_digest",
    "digest_bytes",
    "get_digest",
    "put_digest",
    "header_digest_ok",
    "data_digest_ok",
    "term_req",
]


# ---------------------------------------------------------------------------
# Coded values and facts


class PduType(IntEnum):
    """PDU-Type, byte 0 of the common header."""

    ICREQ = 0x00  # Initialize Connection Request (host to controller)
    ICRESP = 0x01  # Initialize Connection Response
    H2C_TERM_REQ = 0x02  # Host to Controller Terminate Connection Request
    C2H_TERM_REQ = 0x03  # Controller to Host Terminate Connection Request
    CAPSULE_CMD = 0x04  # Command Capsule
    CAPSULE_RESP = 0x05  # Response Capsule
    H2C_DATA = 0x06  # Host to Controller Data
    C2H_DATA = 0x07  # Controller to Host Data
    R2T = 0x09  # Ready to Transfer


class PduFlags(IntFlag):
    """FLAGS, byte 1 of the common header.  Bits 1:0 exist in every PDU type
    that may carry digests; bits 3:2 only in data PDUs."""

    HDGSTF = 1 << 0  # a header digest follows the header
    DDGSTF = 1 << 1  # a data digest follows the data
    LAST_PDU = 1 << 2  # H2CData/C2HData: last data PDU of the transfer
    SUCCESS = 1 << 3  # C2HData: command succeeded, no CapsuleResp follows (needs LAST_PDU)


class DigestType(IntFlag):
    """DGST, byte 11 of ICReq/ICResp: the digests asked for / granted."""

    HDGST_ENABLE = 1 << 0
    DDGST_ENABLE = 1 << 1


class FatalErrorStatus(IntEnum):
    """FES, bytes 9:8 of H2CTermReq/C2HTermReq.  05h is "R2T Limit Exceeded"
    when the host terminates (too many R2Ts) and "Data Transfer Limit
    Exceeded" when the controller does (more data than MAXH2CDATA)."""

    INVALID_HEADER_FIELD = 0x01  # FEI: byte offset of the field in the header
    PDU_SEQUENCE_ERROR = 0x02
    HEADER_DIGEST_ERROR = 0x03
    DATA_TRANSFER_OUT_OF_RANGE = 0x04
    DATA_TRANSFER_LIMIT_EXCEEDED = 0x05
    R2T_LIMIT_EXCEEDED = 0x05
    UNSUPPORTED_PARAMETER = 0x06  # "Invalid Data / Unsupported Parameter"; FEI: offset


PFV_1_0 = 0
"""PDU Format Version 0 is NVMe/TCP 1.0, the only version defined."""

COMMON_HEADER_SIZE = 8
DIGEST_LEN = 4
PDA_MAX = 31
"""Largest HPDA/CPDA: PDU data aligned to (31 + 1) * 4 = 128 bytes."""
HPDA_MAX = CPDA_MAX = PDA_MAX
MAX_HLEN = 128
"""The longest PDU header (ICReq/ICResp)."""
TERM_REQ_DATA_MAX = 128
"""A TermReq carries at most this much of the offending PDU header."""
TERM_REQ_PLEN_MAX = 24 + TERM_REQ_DATA_MAX
MIN_MAXH2CDATA = 4096
"""ICResp MAXH2CDATA is at least 4 KiB."""
DISCOVERY_PORT = 8009
"""TCP port of the NVMe/TCP discovery service."""
IO_PORT = 4420
"""IANA-assigned TCP port for NVMe over Fabrics."""

HLEN: dict[PduType, int] = {
    PduType.ICREQ: 128,
    PduType.ICRESP: 128,
    PduType.H2C_TERM_REQ: 24,
    PduType.C2H_TERM_REQ: 24,
    PduType.CAPSULE_CMD: 72,
    PduType.CAPSULE_RESP: 24,
    PduType.H2C_DATA: 24,
    PduType.C2H_DATA: 24,
    PduType.R2T: 24,
}
"""The fixed header length (HLEN) of each PDU type."""

HOST_TO_CONTROLLER = frozenset(
    {PduType.ICREQ, PduType.H2C_TERM_REQ, PduType.CAPSULE_CMD, PduType.H2C_DATA}
)
"""PDU types a host sends; their data is aligned by the controller's CPDA."""
CONTROLLER_TO_HOST = frozenset(set(PduType) - HOST_TO_CONTROLLER)
"""PDU types a controller sends; their data is aligned by the host's HPDA."""

_NO_DIGESTS = frozenset({PduType.ICREQ, PduType.ICRESP, PduType.H2C_TERM_REQ, PduType.C2H_TERM_REQ})
_TERM_REQS = frozenset({PduType.H2C_TERM_REQ, PduType.C2H_TERM_REQ})
_WITH_DATA = frozenset({PduType.CAPSULE_CMD, PduType.H2C_DATA, PduType.C2H_DATA}) | _TERM_REQS

_LE32 = _struct.Struct("<I")


def _bytes_view(buf: Any) -> memoryview:
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


# Byte offsets of the common header fields, for the FEI of a TermReq.
_FEI_TYPE, _FEI_FLAGS, _FEI_HLEN, _FEI_PDO, _FEI_PLEN = 0, 1, 2, 3, 4


class PduFormatError(ValueError):
    """A PDU that breaks the wire rules.  ``fes`` and ``fei`` are what the
    receiver puts in the TermReq it answers with before closing."""

    def __init__(self, message: str, fes: FatalErrorStatus = FatalErrorStatus.INVALID_HEADER_FIELD, fei: int = 0):
        super().__init__(message)
        self.fes = fes
        self.fei = fei


# ---------------------------------------------------------------------------
# Headers


_HEADERS: dict[int, type["PduHeader"]] = {}


class PduHeader(Struct):
    """The 8-byte common header.  Typed PDU headers subclass it, set
    ``PDU_TYPE`` and a ``SIZE`` equal to their HLEN; a fresh instance starts
    with PDU-type and HLEN (and, when fixed, PLEN) filled in."""

    SIZE = COMMON_HEADER_SIZE
    PDU_TYPE: ClassVar[PduType | None] = None

    pdu_type = Field(0, 1, "PDU-Type")
    flags = Field(1, 1, "FLAGS (PDU type specific bits, see PduFlags)")
    hdgstf = Flag(1, 1, 0, "FLAGS.HDGSTF: header digest present")
    ddgstf = Flag(1, 1, 1, "FLAGS.DDGSTF: data digest present")
    hlen = Field(2, 1, "Header Length (HLEN), without the header digest")
    pdo = Field(3, 1, "PDU Data Offset (PDO) from the start of the PDU; 0 without data")
    plen = Field(4, 4, "PDU Length (PLEN): header, digests, padding and data")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        pdu_type = vars(cls).get("PDU_TYPE")
        if pdu_type is not None:
            defaults = dict(vars(cls).get("DEFAULTS", {}))
            defaults.setdefault("pdu_type", int(pdu_type))
            defaults.setdefault("hlen", cls.SIZE)
            cls.DEFAULTS = defaults
        super().__init_subclass__(**kwargs)
        if pdu_type is not None:
            if cls.SIZE != HLEN[pdu_type]:
                raise TypeError(f"{cls.__name__}: SIZE {cls.SIZE} is not HLEN {HLEN[pdu_type]}")
            if pdu_type in _HEADERS:
                raise TypeError(f"{cls.__name__}: PDU type {pdu_type!r} already has {_HEADERS[pdu_type].__name__}")
            _HEADERS[pdu_type] = cls

    def set_layout(self, layout: "PduLayout") -> None:
        """Write HDGSTF, DDGSTF, HLEN, PDO and PLEN from ``layout``
        (other FLAGS bits are kept)."""
        self.hdgstf = layout.hdgst
        self.ddgstf = layout.ddgst
        self.hlen = layout.hlen
        self.pdo = layout.pdo
        self.plen = layout.plen


class _InitializeConnection(PduHeader):
    """Fields ICReq and ICResp share."""

    SIZE = 128
    DEFAULTS = {"plen": 128}

    pfv = Field(8, 2, "PDU Format Version (PFV): 0 = NVMe/TCP 1.0")
    dgst = Field(11, 1, "Digest types enabled (DGST), see DigestType")
    hdgst_enable = Flag(11, 1, 0, "DGST.HDGST_ENABLE: header digests")
    ddgst_enable = Flag(11, 1, 1, "DGST.DDGST_ENABLE: data digests")


class ICReq(_InitializeConnection):
    """Initialize Connection Request: the first PDU a host sends."""

    PDU_TYPE = PduType.ICREQ

    hpda = Field(10, 1, "Host PDU Data Alignment (HPDA): C2H data at multiples of (HPDA+1)*4 bytes")
    maxr2t = Field(12, 4, "Maximum outstanding R2Ts per command (MAXR2T), 0's based")


class ICResp(_InitializeConnection):
    """Initialize Connection Response."""

    PDU_TYPE = PduType.ICRESP

    cpda = Field(10, 1, "Controller PDU Data Alignment (CPDA): H2C data at multiples of (CPDA+1)*4 bytes")
    maxh2cdata = Field(12, 4, "Maximum data bytes per H2CData PDU (MAXH2CDATA), at least 4096")


class _TermReq(PduHeader):
    """Fields both Terminate Connection Requests share.  The PDU data, right
    after the 24-byte header (no digests, no padding), is up to 128 bytes
    of the PDU header that caused the error."""

    SIZE = 24

    fes = Field(8, 2, "Fatal Error Status (FES), see FatalErrorStatus")
    fei = Field(10, 4, "Fatal Error Information (FEI): field offset for FES 01h/06h")


class H2CTermReq(_TermReq):
    """Host to Controller Terminate Connection Request."""

    PDU_TYPE = PduType.H2C_TERM_REQ


class C2HTermReq(_TermReq):
    """Controller to Host Terminate Connection Request."""

    PDU_TYPE = PduType.C2H_TERM_REQ


class CapsuleCmd(PduHeader):
    """Command Capsule: the 64-byte SQE; in-capsule data may follow."""

    PDU_TYPE = PduType.CAPSULE_CMD
    SIZE = 72

    cmd = Sub(8, Command, "Command capsule SQE (CCSQE)")


class CapsuleResp(PduHeader):
    """Response Capsule: the 16-byte CQE."""

    PDU_TYPE = PduType.CAPSULE_RESP
    SIZE = 24

    cqe = Sub(8, Completion, "Response capsule CQE (RCCQE)")


class _CommandPdu(PduHeader):
    SIZE = 24

    cccid = Field(8, 2, "Command Capsule CID (CCCID) the PDU belongs to")


_TTAG = Field(10, 2, "Transfer Tag (TTAG), chosen by the controller in R2T")


class _DataPdu(_CommandPdu):
    datao = Field(12, 4, "Data Offset (DATAO) from the start of the command's data")
    datal = Field(16, 4, "Data Length (DATAL) in this PDU")
    last_pdu = Flag(1, 1, 2, "FLAGS.LAST_PDU: last data PDU of the transfer")


class H2CData(_DataPdu):
    """Host to Controller Data, sent in answer to an R2T."""

    PDU_TYPE = PduType.H2C_DATA

    ttag = _TTAG


class C2HData(_DataPdu):
    """Controller to Host Data."""

    PDU_TYPE = PduType.C2H_DATA

    success = Flag(1, 1, 3, "FLAGS.SUCCESS: the command succeeded and no CapsuleResp follows")


class R2T(_CommandPdu):
    """Ready to Transfer: the controller asks for a range of write data."""

    PDU_TYPE = PduType.R2T

    ttag = _TTAG
    r2to = Field(12, 4, "R2T Offset (R2TO) from the start of the command's data")
    r2tl = Field(16, 4, "R2T Length (R2TL) in bytes")


def header_class(pdu_type: int) -> type[PduHeader]:
    """The header structure of a PDU type (``ValueError`` for an unknown one)."""
    try:
        return _HEADERS[pdu_type]
    except KeyError:
        raise ValueError(f"unknown NVMe/TCP PDU type {pdu_type:#04x}") from None


def decode_header(buf: Any, offset: int = 0) -> PduHeader:
    """A typed view (no copy) of the PDU header at ``offset``, chosen by its
    PDU-type; the buffer must hold the whole fixed header."""
    mv = _bytes_view(buf)
    if len(mv) - offset < COMMON_HEADER_SIZE:
        raise ValueError(f"need {COMMON_HEADER_SIZE} bytes for a PDU common header, have {len(mv) - offset}")
    return header_class(mv[offset]).view(mv, offset)


# ---------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class PduLayout:
    """Where each part of one PDU lies, in bytes from the start of the PDU."""

    pdu_type: PduType
    hlen: int
    hdgst: bool  # a header digest follows the header (HDGSTF)
    ddgst: bool  # a data digest follows the data (DDGSTF)
    pdo: int  # the PDO field: where the data starts, 0 when there is none (and in TermReqs)
    data_offset: int  # where the data starts (== pdo, or hlen for TermReqs)
    data_len: int
    plen: int

    @property
    def header_end(self) -> int:
        """End of the header and its digest."""
        return self.hlen + (DIGEST_LEN if self.hdgst else 0)

    @property
    def hdgst_offset(self) -> int | None:
        return self.hlen if self.hdgst else None

    @property
    def pad(self) -> int:
        """Zero bytes between the header digest and the data."""
        return self.data_offset - self.header_end if self.data_len else 0

    @property
    def ddgst_offset(self) -> int | None:
        return self.data_offset + self.data_len if self.ddgst else None

    @property
    def flags(self) -> PduFlags:
        """The digest bits of FLAGS."""
        return (PduFlags.HDGSTF if self.hdgst else PduFlags(0)) | (PduFlags.DDGSTF if self.ddgst else PduFlags(0))


def _alignment(pda: int) -> int:
    if not 0 <= pda <= PDA_MAX:
        raise ValueError(f"PDU data alignment {pda} outside 0..{PDA_MAX}")
    return (pda + 1) * 4


def _pdu_type(value: int) -> PduType:
    try:
        return PduType(value)
    except ValueError:
        raise PduFormatError(f"unknown PDU type {value:#04x}", fei=_FEI_TYPE) from None


def pdu_layout(pdu_type: int, data_len: int = 0, *, hdgst: bool = False, ddgst: bool = False, pda: int = 0) -> PduLayout:
    """The layout of a PDU to send.

    ``hdgst``/``ddgst`` are the digests negotiated for the connection; they
    apply only to PDU types that carry digests (not ICReq, ICResp or the
    TermReqs), and the data digest only when there is data.  ``pda`` is the
    receiver's alignment: the controller's CPDA for host to controller PDUs,
    the host's HPDA for controller to host PDUs.
    """
    kind = PduType(pdu_type)
    align = _alignment(pda)
    if data_len < 0:
        raise ValueError(f"data length {data_len} is negative")
    if data_len and kind not in _WITH_DATA:
        raise ValueError(f"{kind.name} PDUs carry no data")
    hlen = HLEN[kind]
    if kind in _NO_DIGESTS:
        hdgst = ddgst = False
    ddgst = bool(ddgst and data_len)
    if kind in _TERM_REQS:
        if data_len > TERM_REQ_DATA_MAX:
            raise ValueError(f"a TermReq carries at most {TERM_REQ_DATA_MAX} bytes, not {data_len}")
        return PduLayout(kind, hlen, False, False, 0, hlen, data_len, hlen + data_len)
    header_end = hlen + (DIGEST_LEN if hdgst else 0)
    if not data_len:
        return PduLayout(kind, hlen, bool(hdgst), False, 0, header_end, 0, header_end)
    pdo = -(-header_end // align) * align
    plen = pdo + data_len + (DIGEST_LEN if ddgst else 0)
    if plen > 0xFFFFFFFF:
        raise ValueError(f"PLEN {plen} does not fit in 32 bits")
    return PduLayout(kind, hlen, bool(hdgst), ddgst, pdo, pdo, data_len, plen)


def parse_layout(
    buf: Any,
    offset: int = 0,
    *,
    pda: int | None = None,
    hdgst: bool | None = None,
    ddgst: bool | None = None,
) -> PduLayout:
    """The layout of a received PDU from its common header (8 bytes at
    ``offset``), checked against the wire rules.

    ``pda`` (the receiver's own CPDA/HPDA), ``hdgst`` and ``ddgst`` (the
    digests negotiated) are checked when given.  A broken rule raises
    :class:`PduFormatError` carrying the FES/FEI to terminate with.
    """
    mv = _bytes_view(buf)
    if len(mv) - offset < COMMON_HEADER_SIZE:
        raise ValueError(f"need {COMMON_HEADER_SIZE} bytes for a PDU common header, have {len(mv) - offset}")
    kind = _pdu_type(mv[offset])
    flags, hlen, pdo = mv[offset + 1], mv[offset + 2], mv[offset + 3]
    plen = _LE32.unpack_from(mv, offset + 4)[0]
    name = kind.name
    if hlen != HLEN[kind]:
        raise PduFormatError(f"{name}: HLEN {hlen}, expected {HLEN[kind]}", fei=_FEI_HLEN)
    has_hdgst = bool(flags & PduFlags.HDGSTF)
    has_ddgst = bool(flags & PduFlags.DDGSTF)
    if kind in _NO_DIGESTS:
        if has_hdgst or has_ddgst:
            raise PduFormatError(f"{name}: digest flags set in a PDU type without digests", fei=_FEI_FLAGS)
    else:
        if hdgst is not None and has_hdgst != hdgst:
            raise PduFormatError(f"{name}: HDGSTF {int(has_hdgst)} but header digests are {'on' if hdgst else 'off'}", fei=_FEI_FLAGS)
        if has_ddgst and kind not in _WITH_DATA:
            raise PduFormatError(f"{name}: DDGSTF set in a PDU type without data", fei=_FEI_FLAGS)
    header_end = hlen + (DIGEST_LEN if has_hdgst else 0)

    if kind in _TERM_REQS:
        if plen < hlen or plen - hlen > TERM_REQ_DATA_MAX:
            raise PduFormatError(f"{name}: PLEN {plen} outside {hlen}..{hlen + TERM_REQ_DATA_MAX}", fei=_FEI_PLEN)
        return PduLayout(kind, hlen, False, False, pdo, hlen, plen - hlen, plen)
    if kind not in _WITH_DATA or pdo == 0:
        if pdo != 0:
            raise PduFormatError(f"{name}: PDO {pdo} in a PDU type without data", fei=_FEI_PDO)
        if plen != header_end:
            raise PduFormatError(f"{name}: PLEN {plen}, expected {header_end}", fei=_FEI_PLEN)
        if has_ddgst:
            raise PduFormatError(f"{name}: DDGSTF set without data", fei=_FEI_FLAGS)
        return PduLayout(kind, hlen, has_hdgst, False, 0, header_end, 0, plen)
    if ddgst is not None and has_ddgst != ddgst:
        raise PduFormatError(f"{name}: DDGSTF {int(has_ddgst)} but data digests are {'on' if ddgst else 'off'}", fei=_FEI_FLAGS)
    if pdo < header_end:
        raise PduFormatError(f"{name}: PDO {pdo} inside the header (ends at {header_end})", fei=_FEI_PDO)
    if pda is not None and pdo % _alignment(pda):
        raise PduFormatError(f"{name}: PDO {pdo} not a multiple of {_alignment(pda)}", fei=_FEI_PDO)
    data_end = plen - (DIGEST_LEN if has_ddgst else 0)
    if data_end < pdo:
        raise PduFormatError(f"{name}: PLEN {plen} ends before the data starts at {pdo}", fei=_FEI_PLEN)
    return PduLayout(kind, hlen, has_hdgst, has_ddgst, pdo, pdo, data_end - pdo, plen)


# ---------------------------------------------------------------------------
# Framing


def pdu_needed(buf: Any, offset: int = 0, *, max_plen: int | None = None) -> int:
    """How many bytes, from ``offset``, the next PDU in ``buf`` occupies:
    :data:`COMMON_HEADER_SIZE` while fewer are buffered, then its PLEN.  The
    PDU is complete when ``len(buf) - offset`` reaches the answer.

    A PLEN shorter than the header it announces (or than 8 bytes), or
    longer than ``max_plen``, raises :class:`PduFormatError` (FEI 4)."""
    mv = _bytes_view(buf)
    if len(mv) - offset < COMMON_HEADER_SIZE:
        return COMMON_HEADER_SIZE
    plen = _LE32.unpack_from(mv, offset + 4)[0]
    if plen < max(COMMON_HEADER_SIZE, mv[offset + 2]):
        raise PduFormatError(f"PLEN {plen} is shorter than the header (HLEN {mv[offset + 2]})", fei=_FEI_PLEN)
    if max_plen is not None and plen > max_plen:
        raise PduFormatError(f"PLEN {plen} exceeds the limit of {max_plen}", fei=_FEI_PLEN)
    return plen


def next_pdu(buf: Any, offset: int = 0, *, max_plen: int | None = None) -> memoryview | None:
    """The whole PDU at ``offset`` as a memoryview into ``buf`` (no copy), or
    ``None`` while it is incomplete."""
    mv = _bytes_view(buf)
    need = pdu_needed(mv, offset, max_plen=max_plen)
    if len(mv) - offset < need:
        return None
    return mv[offset : offset + need]


# ---------------------------------------------------------------------------
# Digests


def header_digest(pdu: Any, offset: int = 0) -> int:
    """HDGST: the CRC32C of the HLEN header bytes of the PDU at ``offset``."""
    mv = _bytes_view(pdu)
    hlen = mv[offset + 2]
    if len(mv) - offset < hlen:
        raise ValueError(f"header of {hlen} bytes, only {len(mv) - offset} present")
    return crc32c(mv[offset : offset + hlen])


def data_digest(data: Any | Iterable[Any]) -> int:
    """DDGST: the CRC32C of the PDU data, given as one buffer or as a list of
    buffers (a scatter list) in order."""
    if isinstance(data, (list, tuple)):
        value = 0
        for chunk in data:
            value = crc32c(chunk, value)
        return value
    return crc32c(data)


def digest_bytes(value: int) -> bytes:
    """A digest as it goes on the wire: 4 bytes, little-endian."""
    return _LE32.pack(value)


def put_digest(buf: Any, offset: int, value: int) -> None:
    _LE32.pack_into(buf, offset, value)


def get_digest(buf: Any, offset: int) -> int:
    return _LE32.unpack_from(buf, offset)[0]


def header_digest_ok(pdu: Any, offset: int = 0) -> bool:
    """Whether the header digest right after the PDU header at ``offset``
    matches the header."""
    mv = _bytes_view(pdu)
    hlen = mv[offset + 2]
    if len(mv) - offset < hlen + DIGEST_LEN:
        raise ValueError(f"need {hlen + DIGEST_LEN} bytes for the header and its digest, have {len(mv) - offset}")
    return header_digest(mv, offset) == _LE32.unpack_from(mv, offset + hlen)[0]


def data_digest_ok(data: Any | Iterable[Any], wire: Any) -> bool:
    """Whether the 4 digest bytes ``wire`` match ``data`` (one buffer or a list)."""
    return data_digest(data) == _LE32.unpack_from(wire, 0)[0]


# ---------------------------------------------------------------------------
# Termination


def term_req(
    pdu_type: int,
    fes: int,
    fei: int = 0,
    offending: Any = b"",
) -> bytearray:
    """A whole H2CTermReq or C2HTermReq PDU: the header with FES/FEI and, as
    data, the first (at most 128) bytes of the offending PDU header."""
    kind = PduType(pdu_type)
    if kind not in _TERM_REQS:
        raise ValueError(f"{kind.name} is not a Terminate Connection Request")
    data = _bytes_view(offending)[:TERM_REQ_DATA_MAX]
    layout = pdu_layout(kind, len(data))
    out = bytearray(layout.plen)
    hdr = header_class(kind).view(out)
    hdr.pdu_type = kind
    hdr.set_layout(layout)
    hdr.fes = fes
    hdr.fei = fei
    out[layout.data_offset :] = data
    return out
