"""vfio-user wire format (QEMU docs/devel/vfio-user.rst, libvfio-user's
``vfio-user.h``; the VFIO structures it reuses from Linux
``include/uapi/linux/vfio.h``).

A message is a 16-byte little-endian header -- message id, command, size
(header included), flags, errno -- and a command-specific payload; file
descriptors travel beside it as SCM_RIGHTS.  Only the layouts and values
live here; the server is :mod:`nvmestack.target.pci.vfio_user`.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

__all__ = [
    "DMA_MAP", "DMA_RW", "DMA_UNMAP", "HEADER", "HEADER_SIZE", "IRQ_INFO", "IRQ_SET", "MAX_MESSAGE_SIZE",
    "REGION_ACCESS", "REGION_INFO", "DEVICE_INFO", "VERSION",
    "Command", "DeviceFlags", "DmaFlags", "IrqIndex", "IrqInfoFlags", "IrqSetFlags", "MsgFlags",
    "RegionFlags", "RegionIndex",
]


class Command(IntEnum):
    VERSION = 1
    DMA_MAP = 2
    DMA_UNMAP = 3
    DEVICE_GET_INFO = 4
    DEVICE_GET_REGION_INFO = 5
    DEVICE_GET_REGION_IO_FDS = 6
    DEVICE_GET_IRQ_INFO = 7
    DEVICE_SET_IRQS = 8
    REGION_READ = 9
    REGION_WRITE = 10
    DMA_READ = 11
    DMA_WRITE = 12
    DEVICE_RESET = 13
    REGION_WRITE_MULTI = 15
    DEVICE_FEATURE = 16
    MIG_DATA_READ = 17
    MIG_DATA_WRITE = 18


class MsgFlags(IntFlag):
    TYPE_MASK = 0xF  # 0 command, 1 reply
    REPLY = 0x1
    NO_REPLY = 0x10
    ERROR = 0x20


HEADER = struct.Struct("<HHIII")
"""msg_id, command, message_size (header included), flags, error_no."""
HEADER_SIZE = HEADER.size

MAX_MESSAGE_SIZE = 1 << 21
"""Largest message accepted: max_data_xfer_size (1 MiB) plus headroom."""

VERSION = struct.Struct("<HH")
"""major, minor; a NUL-terminated JSON capabilities object follows."""

DMA_MAP = struct.Struct("<IIQQQ")
"""argsz, flags, offset (in the fd), address, size."""
DMA_UNMAP = struct.Struct("<IIQQ")
"""argsz, flags, address, size."""
DMA_RW = struct.Struct("<QQ")
"""DMA_READ/DMA_WRITE: address, count; DMA_WRITE's data (and DMA_READ's reply data) follow."""


class DmaFlags(IntFlag):
    READ = 0x1
    WRITE = 0x2


DEVICE_INFO = struct.Struct("<IIII")
"""argsz, flags, num_regions, num_irqs."""


class DeviceFlags(IntFlag):
    RESET = 0x1
    PCI = 0x2


REGION_INFO = struct.Struct("<IIIIQQ")
"""argsz, flags, index, cap_offset, size, offset."""


class RegionFlags(IntFlag):
    READ = 0x1
    WRITE = 0x2
    MMAP = 0x4
    CAPS = 0x8


class RegionIndex(IntEnum):
    """VFIO_PCI_*_REGION_INDEX."""

    BAR0 = 0
    BAR1 = 1
    BAR2 = 2
    BAR3 = 3
    BAR4 = 4
    BAR5 = 5
    ROM = 6
    CONFIG = 7
    VGA = 8
    NUM = 9


REGION_ACCESS = struct.Struct("<QII")
"""REGION_READ/REGION_WRITE: offset, region, count; data follows (write request, read reply)."""

IRQ_INFO = struct.Struct("<IIII")
"""argsz, flags, index, count."""


class IrqIndex(IntEnum):
    """VFIO_PCI_*_IRQ_INDEX."""

    INTX = 0
    MSI = 1
    MSIX = 2
    ERR = 3
    REQ = 4
    NUM = 5


class IrqInfoFlags(IntFlag):
    EVENTFD = 0x1
    MASKABLE = 0x2
    AUTOMASKED = 0x4
    NORESIZE = 0x8


IRQ_SET = struct.Struct("<IIIII")
"""argsz, flags, index, start, count; with DATA_BOOL a byte per IRQ follows,
with DATA_EVENTFD the fds come as SCM_RIGHTS."""


class IrqSetFlags(IntFlag):
    DATA_NONE = 0x1
    DATA_BOOL = 0x2
    DATA_EVENTFD = 0x4
    DATA_TYPE_MASK = 0x7
    ACTION_MASK = 0x8
    ACTION_UNMASK = 0x10
    ACTION_TRIGGER = 0x20
    ACTION_TYPE_MASK = 0x38
