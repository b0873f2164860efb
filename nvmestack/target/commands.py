"""The command table: which handler runs each admin and I/O opcode.

Handlers live beside this module (``admin_*.py`` for admin commands, ``io.py``
for the NVM command set) and register themselves with :func:`admin_command`
or :func:`io_command`::

    @admin_command(AdminOpcode.IDENTIFY, transfer=lambda ctrl, req: 4096)
    def identify(ctrl, req):
        ...
        req.write_data(structure)

A handler returns ``None`` (success; the dispatcher completes the request),
or :data:`DEFERRED` when it keeps the request to complete it later itself
(Asynchronous Event Request, background work).  It fails by raising
:class:`~nvmestack.target.errors.NvmeError`.

``transfer(ctrl, req)`` returns the number of data bytes the command moves
(and may raise NvmeError for fields that make the length invalid); the
direction comes from the opcode's bits 1:0 unless ``direction`` says
otherwise.  ``meta_transfer`` does the same for a separate metadata buffer.
``ns`` says how the NSID is checked before the handler runs: "active" (an
active namespace of this controller), "any" (the handler checks), or None
(must be 0 or FFFFFFFFh is not checked: the handler decides).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..spec.sqe import Command, command_class
from .request import DataDirection

if TYPE_CHECKING:
    from .controller import Controller
    from .request import Request

__all__ = [
    "Handler", "DEFERRED", "admin_command", "io_command", "fused_command",
    "ADMIN_COMMANDS", "IO_COMMANDS", "FUSED_COMMANDS", "LOG_PAGES", "log_page",
    "FABRICS_COMMANDS", "fabrics_command",
]


class _Deferred:
    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED = _Deferred()

Execute = Callable[["Controller", "Request"], object]
Length = Callable[["Controller", "Request"], int]


@dataclass(frozen=True)
class Handler:
    opcode: int
    admin: bool
    execute: Execute
    view: type[Command]
    transfer: Length | None = None
    meta_transfer: Length | None = None
    direction: DataDirection | None = None
    ns: str | None = "active"
    # Commands Supported and Effects log bits for this opcode (LBCC, NCC,
    # NIC, CCC, CSE ...), as the spec's CommandEffects flags.
    effects: int = 0
    fused_first: bool = False  # may be the first command of a fused pair
    fused_second: bool = False  # may be the second command of a fused pair

    def data_direction(self) -> DataDirection:
        if self.direction is not None:
            return self.direction
        return DataDirection(self.opcode & 0x3) if self.opcode & 0x3 != 3 else DataDirection.NONE


ADMIN_COMMANDS: dict[int, Handler] = {}
IO_COMMANDS: dict[int, Handler] = {}
# (first opcode, second opcode) -> execute(ctrl, first, second); both
# requests are prepared (data mapped) before it runs, and it runs once.
FUSED_COMMANDS: dict[tuple[int, int], Callable[["Controller", "Request", "Request"], object]] = {}


def _register(table: dict[int, Handler], admin: bool, opcode: int, **options):
    def decorate(func: Execute) -> Execute:
        if opcode in table:
            raise TypeError(f"opcode {opcode:#04x} registered twice")
        table[opcode] = Handler(
            opcode=int(opcode), admin=admin, execute=func, view=command_class(admin, int(opcode)), **options
        )
        return func

    return decorate


def admin_command(opcode: int, **options):
    """Register an admin command handler (see the module docstring)."""
    return _register(ADMIN_COMMANDS, True, opcode, **options)


def io_command(opcode: int, **options):
    """Register an NVM command set handler (see the module docstring)."""
    return _register(IO_COMMANDS, False, opcode, **options)


# Fabrics commands (opcode 7Fh on a fabrics controller), by (admin queue,
# FCTYPE): Property Get/Set on the admin queue, Disconnect on I/O queues
# (target/fabrics.py).  Connect itself runs in the transport, before a
# controller exists.
FABRICS_COMMANDS: dict[tuple[bool, int], Handler] = {}


def fabrics_command(fctype: int, *, admin: bool, **options):
    """Register the handler of a Fabrics command type on the admin queue
    (``admin``) or on I/O queues; NSID is not checked (byte 4 is FCTYPE)."""

    def decorate(func: Execute) -> Execute:
        key = (admin, int(fctype))
        if key in FABRICS_COMMANDS:
            raise TypeError(f"Fabrics command type {int(fctype):#04x} registered twice")
        options.setdefault("ns", None)
        FABRICS_COMMANDS[key] = Handler(
            opcode=0x7F, admin=admin, execute=func, view=command_class(True, 0x7F, int(fctype)), **options
        )
        return func

    return decorate


def fused_command(first: int, second: int):
    """Register the handler of a fused pair (Compare and Write)."""

    def decorate(func):
        FUSED_COMMANDS[(int(first), int(second))] = func
        return func

    return decorate


# Log page identifier -> build(ctrl, req) returning the whole page as bytes
# (Get Log Page takes the part the host asked for: offset, length).  A
# builder may raise NvmeError (an LSP or NSID it does not support).
LOG_PAGES: dict[int, Callable[["Controller", "Request"], bytes]] = {}


# Log pages that only some controllers have (the discovery log on discovery
# controllers): lid -> predicate(ctrl).  Pages not listed apply to all.
LOG_PAGE_APPLIES: dict[int, Callable[["Controller"], bool]] = {}


def log_page(lid: int, applies: Callable[["Controller"], bool] | None = None):
    """Register the builder of a log page; ``applies`` limits it to the
    controllers for which it returns True (Supported Log Pages follows)."""

    def decorate(func):
        if int(lid) in LOG_PAGES:
            raise TypeError(f"log page {int(lid):#04x} registered twice")
        LOG_PAGES[int(lid)] = func
        if applies is not None:
            LOG_PAGE_APPLIES[int(lid)] = applies
        return func

    return decorate


def log_pages_of(ctrl: "Controller") -> list[int]:
    """The log page identifiers ``ctrl`` supports."""
    return sorted(lid for lid in LOG_PAGES if LOG_PAGE_APPLIES.get(lid, lambda c: True)(ctrl))
