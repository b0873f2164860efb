"""Namespaces: a range of logical blocks in some LBA format, on a backend.

The namespace knows its geometry (LBA formats, the current one, metadata
placement, protection information), its identifiers (NGUID, EUI64, UUID),
which controllers it is attached to, and which blocks are marked
uncorrectable.  The NVM command handlers (``io.py``) move blocks through the
block helpers below; the data path (metadata interleaving, protection
information) is in ``datapath.py``.
"""

from __future__ import annotations

import os
import threading
import uuid as _uuid
from dataclasses import dataclass
from typing import Callable, NamedTuple

from ..spec.identify import IdentifyNamespace
from .backend import Backend, MemoryBackend, shared_memory_backend

__all__ = ["LbaFormatSpec", "DEFAULT_LBA_FORMATS", "Namespace", "BackendFactory", "FastGeometry"]


@dataclass(frozen=True)
class LbaFormatSpec:
    """One supported LBA format: data bytes per block, metadata bytes per
    block, relative performance (0 best .. 3 degraded)."""

    data_size: int
    metadata_size: int = 0
    rp: int = 0

    @property
    def lbads(self) -> int:
        return self.data_size.bit_length() - 1


# 512 and 4096 bytes, each with 0, 8 and 16 bytes of metadata.
DEFAULT_LBA_FORMATS: tuple[LbaFormatSpec, ...] = (
    LbaFormatSpec(512, 0, 2),
    LbaFormatSpec(512, 8, 2),
    LbaFormatSpec(512, 16, 2),
    LbaFormatSpec(4096, 0, 0),
    LbaFormatSpec(4096, 8, 0),
    LbaFormatSpec(4096, 16, 0),
)

# Makes the storage of a namespace: (role, size in bytes) -> Backend, where
# role is "data" or "meta".  Memory by default.
BackendFactory = Callable[[str, int], Backend]


def memory_backends(role: str, size: int) -> Backend:
    return MemoryBackend(size)


def shared_memory_backends(role: str, size: int) -> Backend:
    """Memory that worker processes share (``backend.shared_memory_backend``)."""
    return shared_memory_backend(size, f"nvmestack-{role}")


class FastGeometry(NamedTuple):
    """A plain format as the I/O fast path uses it: blocks of ``1 << shift``
    bytes, ``nblocks`` of them, on ``backend``."""

    shift: int
    nblocks: int
    backend: Backend


class Namespace:
    """An NVM namespace.

    ``nblocks`` is the size in logical blocks of the current format.  The
    metadata of every block (``metadata_size`` bytes) is kept in a separate
    backend whether the host sees it as extended LBAs or as a separate
    buffer, so a format change of the metadata setting moves nothing.
    """

    # Copy command limits, in logical blocks (Identify Namespace MSSRL, MCL
    # and MSRC, which is 0's based); an instance may set its own.
    copy_mssrl = 0xFFFF  # Maximum Single Source Range Length
    copy_mcl = 0x100000  # Maximum Copy Length (all source ranges together)
    copy_msrc = 127  # Maximum Source Range Count - 1 (128 ranges)

    def __init__(
        self,
        nsid: int,
        nblocks: int,
        *,
        lba_format: int = 0,
        formats: tuple[LbaFormatSpec, ...] = DEFAULT_LBA_FORMATS,
        extended: bool = False,
        pi_type: int = 0,
        pi_first: bool = False,
        backends: BackendFactory = memory_backends,
        nguid: bytes | None = None,
        eui64: bytes | None = None,
        uuid: bytes | None = None,
        thin: bool = True,
        shared: bool = True,
    ):
        if not 1 <= nsid <= 0xFFFFFFFE:
            raise ValueError(f"NSID {nsid:#x} is not a valid namespace identifier")
        if not 0 <= lba_format < len(formats):
            raise ValueError(f"LBA format {lba_format} is not one of the {len(formats)} supported")
        self.nsid = nsid
        self.formats = tuple(formats)
        self.lba_format = lba_format
        self.extended = extended
        self.pi_type = pi_type
        self.pi_first = pi_first
        self.nblocks = nblocks
        self.thin = thin
        # NVM capacity reserved for a thin namespace created with NCAP below
        # NSZE (Namespace Management), in bytes; None: NCAP = NSZE.
        self.ncap_bytes: int | None = None
        self.shared = shared
        self.nguid = nguid if nguid is not None else os.urandom(16)
        self.eui64 = eui64 if eui64 is not None else os.urandom(8)
        self.uuid = uuid if uuid is not None else _uuid.uuid4().bytes
        self._backends = backends
        self.attached: set[int] = set()  # cntlids of the live controllers it is attached to
        # Attach to controllers created later (the subsystem sets this).
        self.auto_attach = True
        # The dynamic (fabrics) controller model: what Namespace Attachment did
        # for a host's controller holds for every later association of that
        # host (Host NQN), as a reconnect gets a new controller.
        self.attached_hosts: set[str] = set()
        self.detached_hosts: set[str] = set()  # auto_attach, but this host detached it
        self.uncorrectable: set[int] = set()  # LBAs that fail reads until rewritten
        # Held by commands that must be atomic with respect to others on the
        # namespace (fused Compare and Write, Format, Sanitize).
        self.lock = threading.RLock()
        self.data: Backend = backends("data", nblocks * self.block_size)
        self.meta: Backend | None = backends("meta", nblocks * self.metadata_size) if self.metadata_size else None
        self.fast: FastGeometry | None = None
        self._update_fast()
        # Run when the geometry changes (the subsystem's io_state_changed, set
        # when it is added to one: worker processes look again).
        self.io_state_changed: Callable[[], None] = lambda: None

    def _update_fast(self) -> None:
        """What the I/O fast path needs of the current format, or None when
        the format asks for more than moving blocks (metadata, protection
        information, extended LBAs): those commands take the general path."""
        fmt = self.format
        bs = fmt.data_size
        if self.metadata_size or self.pi_type or self.extended or bs & (bs - 1):
            self.fast = None
        else:
            self.fast = FastGeometry(bs.bit_length() - 1, self.nblocks, self.data)

    # -- geometry ---------------------------------------------------------

    @property
    def format(self) -> LbaFormatSpec:
        return self.formats[self.lba_format]

    @property
    def block_size(self) -> int:
        return self.format.data_size

    @property
    def metadata_size(self) -> int:
        return self.format.metadata_size

    @property
    def size_bytes(self) -> int:
        return self.nblocks * self.block_size

    def blocks_in_range(self, slba: int, nlb: int) -> bool:
        return 0 <= slba and nlb >= 0 and slba + nlb <= self.nblocks

    @property
    def ncap(self) -> int:
        """Namespace Capacity (NCAP), logical blocks."""
        if self.ncap_bytes is None:
            return self.nblocks
        return min(self.nblocks, self.ncap_bytes // self.block_size)

    def nuse(self) -> int:
        """Blocks in use (allocated), for thin provisioning; NSZE otherwise."""
        if not self.thin:
            return self.nblocks
        return min(self.nblocks, -(-self.data.allocated() // self.block_size))

    # -- Identify Namespace -----------------------------------------------

    def identify(self) -> IdentifyNamespace:
        """The Identify Namespace structure (CNS 00h) for this namespace."""
        idns = IdentifyNamespace()
        idns.nsze = self.nblocks
        idns.ncap = self.ncap
        idns.nuse = self.nuse()
        idns.nsfeat_thin = self.thin
        idns.nlbaf = len(self.formats) - 1
        idns.lba_format_index = self.lba_format
        idns.flbas_extended = self.extended
        idns.mc_extended = True
        idns.mc_separate = True
        # PI types 1-3, first or last eight bytes of metadata.
        idns.dpc = 0x1F
        idns.dps_pi_type = self.pi_type
        idns.dps_pi_first = self.pi_first
        idns.nmic_shared = self.shared
        # Deallocated blocks read as zeroes; Write Zeroes may deallocate.
        idns.dlfeat_read = 1
        idns.dlfeat_write_zeroes = True
        idns.nvmcap = self.nblocks * self.block_size
        idns.mssrl = self.copy_mssrl
        idns.mcl = self.copy_mcl
        idns.msrc = self.copy_msrc
        idns.nguid = self.nguid
        idns.eui64 = self.eui64
        for i, fmt in enumerate(self.formats):
            entry = idns.lbaf[i]
            entry.ms = fmt.metadata_size
            entry.lbads = fmt.lbads
            entry.rp = fmt.rp
        return idns

    # -- format -------------------------------------------------------------

    def reformat(self, lba_format: int, *, extended: bool, pi_type: int, pi_first: bool) -> None:
        """Switch to another LBA format; every block is erased (reads zero)."""
        with self.lock:
            self.fast = None  # the fast path stops using the old geometry first
            self.io_state_changed()
            old_bytes = self.size_bytes
            fmt = self.formats[lba_format]
            self.lba_format = lba_format
            self.extended = extended
            self.pi_type = pi_type
            self.pi_first = pi_first
            self.nblocks = old_bytes // fmt.data_size
            self.data.deallocate(0, self.data.size)
            self.data.resize(self.nblocks * fmt.data_size)
            if self.meta is not None:
                self.meta.close()
                self.meta = None
            if fmt.metadata_size:
                self.meta = self._backends("meta", self.nblocks * fmt.metadata_size)
                self.meta.deallocate(0, self.meta.size)
            self.uncorrectable.clear()
            self._update_fast()
        self.io_state_changed()

    def flush(self) -> None:
        """Make every completed write durable (Flush, FUA, shutdown)."""
        self.data.flush()
        if self.meta is not None:
            self.meta.flush()

    def close(self) -> None:
        self.data.close()
        if self.meta is not None:
            self.meta.close()

    def __repr__(self) -> str:
        return f"<Namespace {self.nsid} {self.nblocks} x {self.block_size}+{self.metadata_size}>"
