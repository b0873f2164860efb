"""The I/O fast path: Read, Write and Flush of one I/O queue when nothing
unusual is armed.

The general path (``Controller.new_request`` / ``prepare`` / ``execute`` and
the handlers of ``io.py``) is the reference: a :class:`Request` per command,
typed views, the handler tables, fused commands, faults, protection
information, the error log.  Most commands on an I/O queue need none of it:
a Read or Write of whole blocks on a plain format, or a Flush of one
namespace.  A transport that owns an I/O queue keeps one :class:`FastIo`
and offers it each command first; it answers in one decode of the 64 bytes
and one call to the backend, or declines *before doing anything*, and the
transport then runs the command on the general path as before.  So every
error, every unusual field and every special state keeps the general
path's exact semantics; the fast path only ever produces the successful
outcome the general path would have produced.

What makes a command fast (anything else is declined):

* per batch of commands (:meth:`FastIo.ready`; on PCIe per command): the controller is ready
  (CSTS.RDY), no fault rule is armed, no sanitize gate restricts commands;
* per command: FUSE 00b; an active namespace of a plain format
  (:attr:`Namespace.fast`: no metadata, no protection information) with no
  block marked uncorrectable; the range inside the namespace and no larger
  than MDTS; for Read and Write no FUA, and for Write the volatile write
  cache enabled (a write-through write takes the general path, which makes
  it durable); no command with the same identifier outstanding on the
  general path of the queue.

Nothing is allocated per command but the read data itself (one ``bytes``
from one ``pread``), no lock is taken but the backend's in-flight count,
and the SMART counters are the queue's own (:class:`~.health.IoCounters`,
summed by :class:`~.health.Health` when read).

A Format NVM clears ``Namespace.fast`` before it changes the geometry; the
fast path reads the geometry once per command, so a command admitted before
the format uses the old geometry throughout, as on the general path.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from ..memory import sg_slice
from ..spec.nvm import Read
from ..spec.opcodes import NvmOpcode
from ..spec.sqe import Command
from .backend import FileBackend
from .errors import NvmeError
from .health import IoCounters
from .io import write_cache_enabled

if TYPE_CHECKING:  # pragma: no cover
    from .controller import Controller

__all__ = ["FastIo"]

# One decode of the fields a block command uses (offsets from spec/).
_HEAD = struct.Struct("<BBHI")  # opcode, flags (FUSE, PSDT), CID, NSID
_RANGE = struct.Struct("<QI")  # SLBA (CDW10-11), CDW12 (NLB 15:0, FUA bit 30 ...)
assert Command.opcode.offset == 0 and Command.cid.offset == 2 and Command.nsid.offset == 4
_RANGE_OFF = Read.slba.offset
assert Read.nlb.offset == _RANGE_OFF + 8 and Read.fua.offset == _RANGE_OFF + 8
_FUA = 1 << Read.fua.lsb
_NLB_MASK = (1 << Read.nlb.width) - 1
_FUSE_MASK = 0x03  # FUSE, byte 1 bits 1:0

ZERO_COPY_MIN = 32768
"""Reads at least this large go from the file to the socket by sendfile
(smaller ones cost less as one pread into a buffer)."""

ENABLED = os.environ.get("NVMESTACK_FAST_PATH", "1") != "0"
"""Whether transports use the fast path unless told (``NVMESTACK_FAST_PATH=0``:
every command on the general path, to compare the two)."""

READ = int(NvmOpcode.READ)
WRITE = int(NvmOpcode.WRITE)
FLUSH = int(NvmOpcode.FLUSH)


class FastIo:
    """The fast path of I/O queue ``qid`` of ``ctrl`` (see the module
    docstring).  Used by one thread at a time: the queue's."""

    __slots__ = ("ctrl", "qid", "subsystem", "namespaces", "cntlid", "max_transfer", "counters",
                 "_features", "_saved", "_wce_key", "_wce", "_outstanding", "_closed")

    def __init__(self, ctrl: "Controller", qid: int):
        self.ctrl = ctrl
        self.qid = qid
        self.subsystem = ctrl.subsystem
        self.namespaces = ctrl.subsystem.namespaces  # the subsystem's own dict, always current
        self.cntlid = ctrl.cntlid
        self.max_transfer = ctrl.max_transfer or (1 << 62)
        self.counters = IoCounters()
        self.subsystem.health.attach_counters(self.counters)
        self._features = ctrl.features
        self._saved = ctrl.features.saved
        self._wce_key = None
        self._wce = True
        self._outstanding = ctrl.outstanding
        self._closed = False

    def close(self) -> None:
        """The queue is gone: its counters move to the subsystem."""
        if not self._closed:
            self._closed = True
            self.subsystem.health.retire_counters(self.counters)

    # -- per batch ------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether commands may take the fast path now (checked once per
        batch of received commands)."""
        sub = self.subsystem
        faults = sub.faults
        return ((faults is None or not faults.rules) and getattr(sub, "command_gate", None) is None
                and bool(self.ctrl.regs.csts.rdy) and not self._closed)

    def busy(self, seconds: float) -> None:
        """Time spent executing a batch (SMART Controller Busy Time)."""
        self.counters.busy_seconds += seconds

    # -- per command ----------------------------------------------------------------

    def _geometry(self, sqe, opcode_expected: int):
        """(geometry, SLBA, bytes) of a fast Read/Write, or None (a Write
        also needs the volatile write cache on)."""
        ns = self._command_namespace(sqe, opcode_expected)
        if ns is None:
            return None
        geo = ns.fast
        if geo is None or ns.uncorrectable:
            return None
        slba, cdw12 = _RANGE.unpack_from(sqe, _RANGE_OFF)
        if cdw12 & _FUA:
            return None
        nlb = (cdw12 & _NLB_MASK) + 1
        if slba + nlb > geo.nblocks:
            return None
        length = nlb << geo.shift
        if length > self.max_transfer or (opcode_expected == WRITE and not self._write_cache()):
            return None
        return geo, slba, length

    def _command_namespace(self, sqe, opcode_expected: int):
        """The namespace of a command with opcode ``opcode_expected`` and
        FUSE 0 that the fast path may run (see :meth:`_namespace`), else None."""
        opcode, flags, cid, nsid = _HEAD.unpack_from(sqe, 0)
        if opcode != opcode_expected or flags & _FUSE_MASK:
            return None
        return self._namespace(nsid, cid)

    def _namespace(self, nsid: int, cid: int):
        """The namespace NSID if it is active here and no general-path
        command with this CID is outstanding on the queue (the general path
        reports that conflict), else None."""
        ns = self.namespaces.get(nsid)
        if ns is None or self.cntlid not in ns.attached:
            return None
        if self._outstanding and (self.qid, cid) in self._outstanding:
            return None
        return ns

    def read(self, sqe, limit: int, *, zero_copy: bool = False):
        """Execute a Read whose data buffer holds ``limit`` bytes: the data
        read, or None (declined; nothing was done).  With ``zero_copy`` a
        large read of a file backend is a :class:`~.backend.FileSlice` for
        the transport to ``sendfile``."""
        found = self._geometry(sqe, READ)
        if found is None:
            return None
        geo, slba, length = found
        if length > limit:
            return None
        backend = geo.backend
        try:
            if zero_copy and length >= ZERO_COPY_MIN and type(backend) is FileBackend:
                data = backend.file_slice(slba << geo.shift, length)
            else:
                data = backend.pread(slba << geo.shift, length)
        except (OSError, ValueError):
            return None  # the general path reports it (a read has no side effect)
        c = self.counters
        c.bytes_read += length
        c.host_read_commands += 1
        return data

    def write_length(self, sqe) -> int | None:
        """The byte count of a Write the fast path will take (to size its
        data transfer), or None."""
        found = self._geometry(sqe, WRITE)
        return None if found is None else found[2]

    def write(self, sqe, data: memoryview | list[memoryview]) -> bool:
        """Execute a Write with ``data`` (one buffer, or the scatter list an
        R2T brought in; at least the command's length).  False: declined,
        nothing was written."""
        found = self._geometry(sqe, WRITE)
        if found is None:
            return False
        geo, slba, length = found
        try:
            if type(data) is list:
                if sum(v.nbytes for v in data) < length:
                    return False
                geo.backend.write(slba << geo.shift, sg_slice(data, 0, length))
            elif data.nbytes < length:
                return False
            else:
                geo.backend.pwrite(slba << geo.shift, data if data.nbytes == length else data[:length])
        except (OSError, ValueError):
            # Maybe partly written: the general path writes it again and
            # reports what it finds (a rewrite of the same blocks is harmless).
            return False
        c = self.counters
        c.bytes_written += length
        c.host_write_commands += 1
        return True

    def transfer(self, sqe, map_data) -> bool:
        """Execute a Read or Write whose data buffers the transport maps:
        ``map_data(length)`` returns the views of the host's buffer (on
        PCIe, what PRP1/PRP2 describe; raising NvmeError declines).  False:
        declined, no block was read or written."""
        opcode = sqe[0]
        found = self._geometry(sqe, opcode) if opcode == READ or opcode == WRITE else None
        if found is None:
            return False
        geo, slba, length = found
        try:
            views = map_data(length)
        except NvmeError:
            return False  # the general path maps it again and reports the error
        c = self.counters
        try:
            if opcode == READ:
                geo.backend.readinto(slba << geo.shift, views)
                c.bytes_read += length
                c.host_read_commands += 1
            else:
                geo.backend.write(slba << geo.shift, views)
                c.bytes_written += length
                c.host_write_commands += 1
        except (OSError, ValueError):
            return False
        return True

    def flush(self, sqe) -> bool:
        """Execute a Flush of one namespace.  False: declined."""
        ns = self._command_namespace(sqe, FLUSH)
        if ns is None:
            return False
        try:
            ns.flush()
        except (OSError, NvmeError):
            return False  # the general path flushes again and reports the failure
        return True

    def _write_cache(self) -> bool:
        """Volatile Write Cache enabled (feature 06h), read again only when
        the controller's features changed."""
        key = (self._features.version, self._saved.version)
        if key != self._wce_key:
            self._wce = write_cache_enabled(self.ctrl)
            self._wce_key = key
        return self._wce

    def __repr__(self) -> str:
        return f"<FastIo ctrl {self.cntlid} qid {self.qid}>"

