"""End-to-end data protection information, 16b guard format (NVM Command
Set spec 5.2 "End-to-end Data Protection", 5.2.1.1 "16b Guard Protection
Information").

Each protected logical block carries an 8-byte tuple in its metadata (the
last 8 bytes, or the first 8 when the namespace's DPS.PIP bit says so):

    bytes 0-1  Guard            CRC-16 T10-DIF of the logical block data
    bytes 2-3  Application Tag  opaque to the controller, checked under a mask
    bytes 4-7  Reference Tag    ties the block to its LBA (type 1) or to an
                                initial tag from the command (type 2)

Unlike everything else in NVMe, the tuple is big-endian on the wire (as in
SCSI T10 DIF; Linux ``struct t10_pi_tuple``).  The I/O commands carry the
checking controls in PRINFO (CDW12 bits 29:26) and the expected tags in
CDW14 (ILBRT / EILBRT) and CDW15 (LBAT, LBATM).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

from .checksum import crc16_t10dif
from .layout import Field, Struct

__all__ = [
    "PI_TUPLE_SIZE",
    "APP_TAG_ESCAPE",
    "REF_TAG_ESCAPE",
    "PRINFO_SHIFT",
    "PiType",
    "Prinfo",
    "PiTuple",
    "crc16_t10dif",
    "pi_guard",
    "pi_checks_disabled",
    "expected_ref_tag",
    "app_tag_matches",
    "pi_offset_in_metadata",
]

PI_TUPLE_SIZE = 8

APP_TAG_ESCAPE = 0xFFFF
"""Application tag that turns checking off (types 1 and 2; with the
reference tag escape, type 3)."""
REF_TAG_ESCAPE = 0xFFFFFFFF
"""Reference tag that, together with APP_TAG_ESCAPE, turns checking off for type 3."""

PRINFO_SHIFT = 26
"""PRINFO is bits 29:26 of CDW12 in Read, Write, Compare, Write Zeroes, Verify ..."""


class PiType(IntEnum):
    """Protection information type (Identify Namespace DPS bits 2:0; Format
    NVM PI field)."""

    NONE = 0
    TYPE1 = 1
    TYPE2 = 2
    TYPE3 = 3


class Prinfo(IntFlag):
    """Protection Information field (PRINFO) of an I/O command, as the
    4-bit value (shift by PRINFO_SHIFT for its place in CDW12)."""

    PRCHK_REF = 1 << 0  # check the reference tag
    PRCHK_APP = 1 << 1  # check the application tag
    PRCHK_GUARD = 1 << 2  # check the guard
    PRACT = 1 << 3  # Protection Information Action: controller inserts / strips PI

    PRCHK_ALL = PRCHK_REF | PRCHK_APP | PRCHK_GUARD


class PiTuple(Struct):
    """The 8-byte protection information tuple (16b guard), big-endian."""

    SIZE = PI_TUPLE_SIZE

    guard_tag = Field(0, 2, "Guard: CRC-16 T10-DIF of the logical block data", endian="big")
    app_tag = Field(2, 2, "Application Tag", endian="big")
    ref_tag = Field(4, 4, "Reference Tag", endian="big")

    def checks_disabled(self, pi_type: int) -> bool:
        """True when this tuple's tags are the escape values for ``pi_type``."""
        return pi_checks_disabled(pi_type, self.app_tag, self.ref_tag)


def pi_guard(data) -> int:
    """The guard for a logical block's data: CRC-16 T10-DIF with initial value 0."""
    return crc16_t10dif(data)


def pi_checks_disabled(pi_type: int, app_tag: int, ref_tag: int) -> bool:
    """Whether protection checks of a block are disabled by its tags: for
    types 1 and 2 an application tag of FFFFh; for type 3 an application
    tag of FFFFh together with a reference tag of FFFFFFFFh.  A namespace
    without protection (type 0) has nothing to check: True."""
    pi_type = PiType(pi_type)
    if pi_type == PiType.NONE:
        return True
    if pi_type == PiType.TYPE3:
        return app_tag == APP_TAG_ESCAPE and ref_tag == REF_TAG_ESCAPE
    return app_tag == APP_TAG_ESCAPE


def expected_ref_tag(pi_type: int, index: int, *, slba: int = 0, ilbrt: int = 0) -> int | None:
    """The reference tag block ``index`` of a command must carry.

    - type 1: the low 32 bits of that block's LBA (``slba + index``);
    - type 2: the command's initial logical block reference tag (ILBRT,
      CDW14) plus ``index``, modulo 2**32;
    - type 3 (and no protection): not checked, None.
    """
    pi_type = PiType(pi_type)
    if index < 0:
        raise ValueError(f"block index {index} is negative")
    if pi_type == PiType.TYPE1:
        return (slba + index) & REF_TAG_ESCAPE
    if pi_type == PiType.TYPE2:
        return (ilbrt + index) & REF_TAG_ESCAPE
    return None


def app_tag_matches(app_tag: int, expected: int, mask: int) -> bool:
    """The application tag check: the bits set in the command's mask
    (LBATM) must equal those of the expected tag (LBAT)."""
    return (app_tag ^ expected) & mask == 0


def pi_offset_in_metadata(metadata_size: int, pi_first: bool = False) -> int:
    """Byte offset of the tuple in a block's metadata: the first 8 bytes
    when DPS.PIP (PI first) is set, else the last 8 bytes."""
    if metadata_size < PI_TUPLE_SIZE:
        raise ValueError(f"metadata of {metadata_size} bytes cannot hold an {PI_TUPLE_SIZE}-byte PI tuple")
    return 0 if pi_first else metadata_size - PI_TUPLE_SIZE
