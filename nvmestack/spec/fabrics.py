"""The Fabrics command set (NVMe 2.0 base spec section 6 "Fabrics Command Set";
NVMe over Fabrics 1.1 section 3): the common Fabrics command format, Property
Set/Get, Connect with its 1024-byte data and its completion results,
Disconnect, Authentication Send/Receive, and NVMe Qualified Names (base spec
4.7 "NVMe Qualified Names").

A Fabrics command has opcode 7Fh on every queue; the Fabrics Command Type
(FCTYPE, byte 4) says which one it is.  Bytes 5..23 are reserved, bytes 24..39
hold SGL1 and bytes 40..63 are Fabrics command type specific.  The typed views
register with ``OPCODE = 0x7F`` and ``FCTYPE``, so
``command_class(True, 0x7F, fctype)`` finds them whichever queue the command
arrived on.
"""

from __future__ import annotations

import re
import uuid as _uuid
from enum import IntEnum
from typing import Any

from .layout import Bits, Field, Flag, Raw, Str, Struct
from .opcodes import FABRICS_OPCODE, FabricsType
from .sqe import Command

__all__ = [
    "nqn_unusable",
    "FabricsCommand",
    "PropertySize",
    "PropertySet",
    "PropertyGet",
    "QueuePriority",
    "Connect",
    "Disconnect",
    "AuthenticationSend",
    "AuthenticationReceive",
    "ConnectData",
    "ConnectResult",
    "ConnectInvalidParameters",
    "PropertyGetResult",
    "CONNECT_DATA_SIZE",
    "CONNECT_RECFMT",
    "CNTLID_MIN",
    "CNTLID_MAX",
    "CNTLID_STATIC_ANY",
    "CNTLID_DYNAMIC",
    "NQN_MAX_LEN",
    "NQN_FIELD_SIZE",
    "NQN_MIN_LEN",
    "DISCOVERY_NQN",
    "UUID_NQN_PREFIX",
    "nqn_problem",
    "is_valid_nqn",
    "validate_nqn",
    "uuid_nqn",
]

# ---------------------------------------------------------------------------
# Facts

CONNECT_DATA_SIZE = 1024
"""Size of the data a Connect command transfers (host to controller)."""

CONNECT_RECFMT = 0
"""Record Format 0: the only Connect/Disconnect record format defined."""

CNTLID_MIN = 0x0001
"""Lowest controller ID a fabrics NVM subsystem assigns (0 is not used)."""

CNTLID_MAX = 0xFFEF
"""Highest assignable controller ID; FFF0h..FFFFh are reserved or special."""

CNTLID_STATIC_ANY = 0xFFFE
"""Connect data CNTLID: any static controller (static controller model)."""

CNTLID_DYNAMIC = 0xFFFF
"""Connect data CNTLID for the admin queue in the dynamic controller model:
the NVM subsystem allocates a controller."""

NQN_MAX_LEN = 223
"""Maximum length of an NQN in bytes (UTF-8), not counting the NUL."""

NQN_FIELD_SIZE = 256
"""Size of the NUL-padded NQN fields in commands and data structures."""

NQN_MIN_LEN = 11
"""Length of the shortest possible prefix, ``nqn.yyyy-mm``."""

DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
"""The well-known NQN of a discovery subsystem."""

UUID_NQN_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"
"""Prefix of the second NQN format, followed by a UUID in string form."""


# ---------------------------------------------------------------------------
# Commands


class FabricsCommand(Command):
    """The common Fabrics command format (opcode 7Fh).

    Typed views subclass it with ``OPCODE = FABRICS_OPCODE`` and ``FCTYPE``;
    a fresh instance then starts with both ``opcode`` and ``fctype`` set."""

    DEFAULTS = {"opcode": FABRICS_OPCODE}

    fctype = Field(4, 1, "Fabrics Command Type (FCTYPE)")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        fctype = vars(cls).get("FCTYPE")
        if fctype is not None:
            defaults = dict(vars(cls).get("DEFAULTS", {}))
            defaults.setdefault("fctype", int(fctype))
            cls.DEFAULTS = defaults
        super().__init_subclass__(**kwargs)


class PropertySize(IntEnum):
    """ATTRIB bits 2:0 of Property Set/Get: the size of the property."""

    FOUR_BYTES = 0
    EIGHT_BYTES = 1


class _PropertyCommand(FabricsCommand):
    """Fields shared by Property Set and Property Get."""

    attrib = Field(40, 1, "Attributes (ATTRIB)")
    attrib_size = Bits(40, 1, 0, 3, "ATTRIB.SIZE: 0 = 4-byte property, 1 = 8-byte property")
    ofst = Field(44, 4, "Offset (OFST): offset of the property in the property map")

    @property
    def value_size(self) -> int:
        """The property's size in bytes, 4 or 8 (``ValueError`` for a reserved ATTRIB.SIZE)."""
        try:
            return 8 if PropertySize(self.attrib_size) is PropertySize.EIGHT_BYTES else 4
        except ValueError:
            raise ValueError(f"ATTRIB.SIZE {self.attrib_size} is reserved") from None


class PropertySet(_PropertyCommand):
    """Property Set (FCTYPE 00h): write a controller property."""

    OPCODE = FABRICS_OPCODE
    FCTYPE = FabricsType.PROPERTY_SET

    value = Field(48, 8, "Value (VALUE): for a 4-byte property only bits 31:0 are used")


class PropertyGet(_PropertyCommand):
    """Property Get (FCTYPE 04h): read a controller property.  The value is
    returned in completion dwords 0 and 1 (see :class:`PropertyGetResult`)."""

    OPCODE = FABRICS_OPCODE
    FCTYPE = FabricsType.PROPERTY_GET


class QueuePriority(IntEnum):
    """Connect CATTR bits 1:0, the priority class of an I/O queue under
    weighted round robin with urgent priority class arbitration (same
    coding as QPRIO of Create I/O Submission Queue)."""

    URGENT = 0
    HIGH = 1
    MEDIUM = 2
    LOW = 3


class _RecordFormatCommand(FabricsCommand):
    recfmt = Field(40, 2, "Record Format (RECFMT): 0 is the only format defined")


class Connect(_RecordFormatCommand):
    """Connect (FCTYPE 01h): create the admin queue (QID 0, which also creates
    the association with a controller) or an I/O queue.  Transfers a
    1024-byte :class:`ConnectData`."""

    OPCODE = FABRICS_OPCODE
    FCTYPE = FabricsType.CONNECT

    qid = Field(42, 2, "Queue ID (QID): 0 for the admin queue")
    sqsize = Field(44, 2, "Submission Queue Size (SQSIZE), 0's based")
    cattr = Field(46, 1, "Connect Attributes (CATTR)")
    priority = Bits(46, 1, 0, 2, "CATTR bits 1:0: priority class of an I/O queue")
    disable_sqflow = Flag(46, 1, 2, "CATTR bit 2: SQ flow control disable requested")
    io_queue_deletion = Flag(46, 1, 3, "CATTR bit 3: I/O queue deletion (later revisions)")
    kato = Field(48, 4, "Keep Alive Timeout (KATO) in milliseconds, admin queue only; 0 disables")

    @property
    def queue_entries(self) -> int:
        """SQSIZE as a number of entries (SQSIZE is 0's based)."""
        return self.sqsize + 1

    @queue_entries.setter
    def queue_entries(self, entries: int) -> None:
        if not 1 <= entries <= 0x10000:
            raise ValueError(f"queue_entries: {entries} outside 1..65536")
        self.sqsize = entries - 1


class Disconnect(_RecordFormatCommand):
    """Disconnect (FCTYPE 08h): delete the I/O queue the command is submitted
    on.  Not allowed on the admin queue."""

    OPCODE = FABRICS_OPCODE
    FCTYPE = FabricsType.DISCONNECT


class _AuthenticationCommand(FabricsCommand):
    spsp0 = Field(41, 1, "SP Specific 0 (SPSP0)")
    spsp1 = Field(42, 1, "SP Specific 1 (SPSP1)")
    secp = Field(43, 1, "Security Protocol (SECP)")


class AuthenticationSend(_AuthenticationCommand):
    """Authentication Send (FCTYPE 05h): send a security protocol message."""

    OPCODE = FABRICS_OPCODE
    FCTYPE = FabricsType.AUTHENTICATION_SEND

    tl = Field(44, 4, "Transfer Length (TL) in bytes")


class AuthenticationReceive(_AuthenticationCommand):
    """Authentication Receive (FCTYPE 06h): receive a security protocol message."""

    OPCODE = FABRICS_OPCODE
    FCTYPE = FabricsType.AUTHENTICATION_RECEIVE

    al = Field(44, 4, "Allocation Length (AL) in bytes")


# ---------------------------------------------------------------------------
# Connect data and completion results


class ConnectData(Struct):
    """The 1024 bytes a Connect command transfers (NVMe-oF 1.1 figure 20)."""

    SIZE = CONNECT_DATA_SIZE

    hostid = Raw(0, 16, "Host Identifier (HOSTID), a 128-bit UUID")
    cntlid = Field(16, 2, "Controller ID (CNTLID): FFFFh dynamic, FFFEh any static, else a static ID")
    subsysnqn = Str(256, NQN_FIELD_SIZE, "NVM Subsystem NQN (SUBNQN), NUL terminated", pad=b"\0", encoding="utf-8")
    hostnqn = Str(512, NQN_FIELD_SIZE, "Host NQN (HOSTNQN), NUL terminated", pad=b"\0", encoding="utf-8")

    @property
    def host_uuid(self) -> _uuid.UUID:
        """HOSTID as a :class:`uuid.UUID` (bytes in wire order)."""
        return _uuid.UUID(bytes=bytes(self.hostid))

    @host_uuid.setter
    def host_uuid(self, value: _uuid.UUID | str) -> None:
        self.hostid = (value if isinstance(value, _uuid.UUID) else _uuid.UUID(str(value))).bytes


class ConnectResult(Struct):
    """Completion dword 0 of a successful Connect."""

    SIZE = 4

    cntlid = Field(0, 2, "Controller ID (CNTLID) allocated or used")
    authreq = Field(2, 2, "Authentication Requirements (AUTHREQ)")
    atr = Flag(2, 2, 1, "AUTHREQ.ATR: authentication transaction required")
    ascr = Flag(2, 2, 2, "AUTHREQ.ASCR: authentication secure channel required")


class ConnectInvalidParameters(Struct):
    """Completion dword 0 of a Connect that failed with Connect Invalid
    Parameters: where the offending parameter is."""

    SIZE = 4

    ipo = Field(0, 2, "Invalid Parameter Offset (IPO): byte offset of the invalid parameter")
    iattr = Field(2, 1, "Invalid Attributes (IATTR)")
    in_data = Flag(2, 1, 0, "IATTR bit 0: 1 = the parameter is in the Connect data, 0 = in the SQE")


class PropertyGetResult(Struct):
    """Completion dwords 0 and 1 of Property Get: the property value (a
    4-byte property uses dword 0 only)."""

    SIZE = 8

    value = Field(0, 8, "Value: the property (dwords 0-1)")
    value_lo = Field(0, 4, "Dword 0: bits 31:0 of the value")
    value_hi = Field(4, 4, "Dword 1: bits 63:32 of the value")


# ---------------------------------------------------------------------------
# NVMe Qualified Names

_NQN_DATE = re.compile(r"nqn\.(\d{4})-(\d{2})\.")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_UUID_TEXT = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\Z")


def nqn_problem(nqn: str | bytes) -> str | None:
    """Why ``nqn`` is not a well-formed NVMe Qualified Name, or ``None``.

    The two formats of base spec 4.7: ``nqn.yyyy-mm.<reverse domain>`` with
    an optional ``:<anything>`` suffix chosen by the owner of the domain
    (e.g. ``nqn.2014-08.com.example:nvme:nvm-subsystem-sn-d78432``), and
    ``nqn.2014-08.org.nvmexpress:uuid:<UUID>``.  At most 223 bytes of UTF-8.
    """
    text = _nqn_text(nqn)
    if text is None:
        return "not valid UTF-8"
    size = len(text.encode("utf-8"))
    if size > NQN_MAX_LEN:
        return f"{size} bytes long, the maximum is {NQN_MAX_LEN}"
    if "\0" in text:
        return "contains a NUL character"
    if text.startswith(UUID_NQN_PREFIX):
        if not _UUID_TEXT.match(text[len(UUID_NQN_PREFIX):]):
            return "the UUID format needs a UUID like 01234567-89ab-cdef-0123-456789abcdef after the prefix"
        return None
    m = _NQN_DATE.match(text)
    if m is None:
        return "does not start with 'nqn.yyyy-mm.'"
    month = int(m.group(2))
    if not 1 <= month <= 12:
        return f"month {m.group(2)} is not 01..12"
    domain = text[m.end():].split(":", 1)[0]
    if not domain:
        return "no reverse domain name after the date"
    for label in domain.split("."):
        if not _DOMAIN_LABEL.match(label):
            return f"domain label {label!r} is not 1..63 letters, digits or inner hyphens"
    return None


def _nqn_text(nqn: str | bytes) -> str | None:
    """An NQN as text (bytes decoded as UTF-8), or None when it is not UTF-8."""
    if isinstance(nqn, (bytes, bytearray, memoryview)):
        try:
            return bytes(nqn).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return nqn


def nqn_unusable(nqn: str | bytes) -> str | None:
    """Why ``nqn`` cannot name a subsystem on the wire at all (empty, longer
    than the 223 bytes of SUBNQN, a NUL or control character, not UTF-8),
    or ``None``.  A name that is carried but breaks the NQN syntax (Linux's
    nvmet accepts any name, e.g. blktests' ``blktests-subsystem-1``) is
    :func:`nqn_problem`'s business."""
    text = _nqn_text(nqn)
    if text is None:
        return "not valid UTF-8"
    if not text:
        return "empty"
    size = len(text.encode("utf-8"))
    if size > NQN_MAX_LEN:
        return f"{size} bytes long, the maximum is {NQN_MAX_LEN}"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "contains a control character"
    return None


def is_valid_nqn(nqn: str | bytes) -> bool:
    """``True`` when ``nqn`` follows the NQN syntax (see :func:`nqn_problem`)."""
    return nqn_problem(nqn) is None


def validate_nqn(nqn: str | bytes) -> None:
    """Raise ``ValueError`` naming the rule ``nqn`` breaks, if any."""
    problem = nqn_problem(nqn)
    if problem is not None:
        raise ValueError(f"invalid NQN {nqn!r}: {problem}")


def uuid_nqn(value: _uuid.UUID | str | None = None) -> str:
    """The UUID-format NQN for ``value`` (a fresh random UUID when omitted)."""
    if value is None:
        value = _uuid.uuid4()
    elif not isinstance(value, _uuid.UUID):
        value = _uuid.UUID(str(value))
    return UUID_NQN_PREFIX + str(value)
