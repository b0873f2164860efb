"""The two checksums NVMe puts on the wire.

- CRC-16 T10-DIF: the 16-bit guard of end-to-end protection information
  (NVM Command Set spec 5.2.1.1 "16b Guard Protection Information":
  polynomial 8BB7h, initial value 0, not reflected, no final XOR).
- CRC32C (Castagnoli, polynomial 1EDC6F41h, reflected, initial and final
  XOR FFFFFFFFh): the NVMe/TCP header and data digests (NVMe/TCP transport
  spec 3.6.2 "PDU Digests").

Both take any bytes-like object (``bytes``, ``bytearray``, ``memoryview``)
without copying it, and both can be computed piecewise: passing the result
of one call as ``initial`` of the next gives the checksum of the
concatenation, so scattered buffers need no joining.
"""

from __future__ import annotations

import crc32c as _crc32c
from fastcrc import crc16 as _crc16

__all__ = ["crc16_t10dif", "crc32c"]


def crc16_t10dif(data, initial: int = 0) -> int:
    """CRC-16 T10-DIF of ``data``; ``initial`` continues an earlier result."""
    if not 0 <= initial <= 0xFFFF:
        raise ValueError(f"CRC-16 initial value {initial:#x} does not fit in 16 bits")
    return _crc16.t10_dif(data, initial)


def crc32c(data, initial: int = 0) -> int:
    """CRC32C of ``data``; ``initial`` continues an earlier result."""
    if not 0 <= initial <= 0xFFFFFFFF:
        raise ValueError(f"CRC32C initial value {initial:#x} does not fit in 32 bits")
    return _crc32c.crc32c(data, initial)
