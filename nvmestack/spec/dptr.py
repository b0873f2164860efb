"""Data pointers: PRP entries and lists, SGL descriptors (NVMe 2.0 base spec
4.1.1 "Physical Region Page Entry and List", 4.1.2 "Scatter Gather List")."""

from __future__ import annotations

from enum import IntEnum

from .layout import Bits, Field, Raw, Struct

__all__ = ["Psdt", "SglType", "SglSubtype", "SglDescriptor", "SGL_DESCRIPTOR_SIZE"]

SGL_DESCRIPTOR_SIZE = 16


class Psdt(IntEnum):
    """PRP or SGL for Data Transfer, bits 7:6 of command dword 0."""

    PRP = 0
    SGL_MPTR_CONTIGUOUS = 1  # MPTR holds the address of a contiguous metadata buffer
    SGL_MPTR_SGL = 2  # MPTR holds the address of an SGL segment with one descriptor


class SglType(IntEnum):
    """SGL Descriptor Type, bits 7:4 of the SGL Identifier (byte 15)."""

    DATA_BLOCK = 0x0
    BIT_BUCKET = 0x1
    SEGMENT = 0x2
    LAST_SEGMENT = 0x3
    KEYED_DATA_BLOCK = 0x4
    TRANSPORT_DATA_BLOCK = 0x5
    VENDOR_SPECIFIC = 0xF


class SglSubtype(IntEnum):
    """SGL Descriptor Sub Type, bits 3:0 of the SGL Identifier."""

    ADDRESS = 0x0
    OFFSET = 0x1
    TRANSPORT_SPECIFIC = 0xA  # NVMe/TCP and RDMA use 0Ah for "Transport specific"
    INVALIDATE_KEY = 0xF  # keyed data block: invalidate the key after the transfer


class SglDescriptor(Struct):
    """A 16-byte SGL descriptor.  Which fields mean something depends on
    ``sgl_type``: data block / bit bucket / segment / last segment use
    ``address`` and ``length``; keyed data block uses ``address``,
    ``keyed_length`` (3 bytes) and ``key``; a transport data block uses
    ``length`` only."""

    SIZE = SGL_DESCRIPTOR_SIZE

    address = Field(0, 8, "Address (or offset for subtype Offset)")
    length = Field(8, 4, "Length in bytes")
    keyed_length = Field(8, 3, "Length of a keyed data block (24 bits)")
    key = Field(11, 4, "Key of a keyed data block")
    sgl_identifier = Field(15, 1, "SGL Identifier: type 7:4, subtype 3:0")
    sgl_type = Bits(15, 1, 4, 4, "SGL Descriptor Type")
    sgl_subtype = Bits(15, 1, 0, 4, "SGL Descriptor Sub Type")
    reserved = Raw(12, 3, "Reserved bytes of a non-keyed descriptor")
