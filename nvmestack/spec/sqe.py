"""The 64-byte submission queue entry (NVMe 2.0 base spec 4.2 "Submission
Queue Entry", figure 88 "Common Command Format") and the registry of typed
command views built on it (``spec/admin.py``, ``spec/nvm.py``,
``spec/fabrics.py``)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar

from .dptr import SglDescriptor
from .layout import Bits, Field, Struct, Sub

__all__ = ["SQE_SIZE", "Fuse", "Command", "SubmissionQueueEntry", "command_class"]

SQE_SIZE = 64


class Fuse(IntEnum):
    """Fused Operation, bits 9:8 of command dword 0."""

    NORMAL = 0
    FIRST = 1
    SECOND = 2


class Command(Struct):
    """The common command format.  Typed views (``Identify``, ``Read``, ...)
    subclass it, set ``OPCODE`` (and ``ADMIN`` for admin commands, or
    ``FCTYPE`` for Fabrics commands) and name their command dwords."""

    SIZE = SQE_SIZE

    OPCODE: ClassVar[int | None] = None
    ADMIN: ClassVar[bool] = False
    FCTYPE: ClassVar[int | None] = None

    # Command Dword 0
    cdw0 = Field(0, 4, "Command Dword 0")
    opcode = Field(0, 1, "Opcode (OPC)")
    fuse = Bits(1, 1, 0, 2, "Fused Operation (FUSE)")
    psdt = Bits(1, 1, 6, 2, "PRP or SGL for Data Transfer (PSDT)")
    cid = Field(2, 2, "Command Identifier (CID)")
    nsid = Field(4, 4, "Namespace Identifier (NSID)")
    cdw2 = Field(8, 4, "Command Dword 2")
    cdw3 = Field(12, 4, "Command Dword 3")
    mptr = Field(16, 8, "Metadata Pointer (MPTR)")
    prp1 = Field(24, 8, "PRP Entry 1 (PRP1)")
    prp2 = Field(32, 8, "PRP Entry 2 (PRP2)")
    sgl1 = Sub(24, SglDescriptor, "SGL Entry 1 (SGL1), when PSDT selects SGLs")
    cdw10 = Field(40, 4, "Command Dword 10")
    cdw11 = Field(44, 4, "Command Dword 11")
    cdw12 = Field(48, 4, "Command Dword 12")
    cdw13 = Field(52, 4, "Command Dword 13")
    cdw14 = Field(56, 4, "Command Dword 14")
    cdw15 = Field(60, 4, "Command Dword 15")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        opcode = vars(cls).get("OPCODE")
        if opcode is not None:
            defaults = dict(vars(cls).get("DEFAULTS", {}))
            defaults.setdefault("opcode", opcode)
            cls.DEFAULTS = defaults
        super().__init_subclass__(**kwargs)
        if opcode is not None:
            key = (cls.ADMIN or cls.FCTYPE is not None, opcode, cls.FCTYPE)
            if key in _REGISTRY:
                raise TypeError(f"{cls.__name__}: {key} already registered by {_REGISTRY[key].__name__}")
            _REGISTRY[key] = cls


# The plain name the specification uses for the 64-byte entry.
SubmissionQueueEntry = Command

_REGISTRY: dict[tuple[bool, int, int | None], type[Command]] = {}


def command_class(admin: bool, opcode: int, fctype: int | None = None) -> type[Command]:
    """The typed view for an opcode (``Command`` itself when none is known).

    Fabrics commands (opcode 7Fh) are found by ``fctype`` whichever queue
    they arrive on."""
    if opcode == 0x7F:
        return _REGISTRY.get((True, opcode, fctype), Command)
    return _REGISTRY.get((admin, opcode, None), Command)
