"""The interface between the host core and a transport (Linux's
``struct nvme_ctrl_ops`` plus what ``blk_mq_ops`` does per queue).

The core (``core.py``) drives initialisation, recovery and the request
life cycle; a transport only moves things: register (property) accesses,
queues, command entries, data and completions.  Everything PCIe specific
-- BAR0, doorbells, rings in host memory, PRPs and SGLs, MSI-X -- stays in
``pci.py``; a TCP transport implements the same methods with Property
Get/Set, Connect and PDUs.

What the core calls, in the order of a controller's life::

    attach(ctrl)                      once, when the controller is made
    enable_device()                   PCIe: config space; TCP: connect the admin queue
    reg_read64(CAP) ...               registers / properties
    setup_admin_queue(entries, reserved) -> HostQueue   (then CC.EN through reg_write32)
    io_queue_limit(wanted)            queues the transport can serve (e.g. interrupt vectors)
    create_io_queue(qid, entries, polled=...) -> HostQueue
    submit(queue, reqs)  /  poll(queue)                 the data path
    map_data(req, queue) / unmap_data(req)              before submission / at completion
    delete_io_queue(queue)            orderly teardown (PCIe: Delete I/O SQ/CQ)
    disable(shutdown, timeout)        CC.SHN or CC.EN = 0, waiting as the spec says
    remove_queues()                   forget every queue (after a disable)
    reconnect_after(error)            a reset's bring-up failed: retry after this many s (None: give up)
    error_recovery(reason)            a command timed out and the core resets: stop counting on the path
    close()

Completions reach the core through ``queue.on_complete(req, entry)``
(the core sets it on every queue it gets), called by the queue's
completion path from the transport's interrupt thread or from whoever
polls; ``queue.on_start(req)`` runs as each request goes to the device.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

from .queue import HostQueue

if TYPE_CHECKING:
    from .core import NvmeController
    from .request import HostRequest

__all__ = ["Transport", "TransportError"]


class TransportError(Exception):
    """The transport cannot do what was asked (device gone, no memory, a
    queue the device refused)."""


class Transport(abc.ABC):
    """Base of the transports (see the module docstring)."""

    #: Transport name as nvme-cli prints it ("pcie", "tcp").
    name = "?"
    #: Keep Alive commands are needed (Fabrics); PCIe does not need them.
    needs_keep_alive = False
    #: Registers are properties reached by commands on the admin queue
    #: (Fabrics Property Get/Set, Linux's NVME_F_FABRICS): a read is a round
    #: trip that a silent path makes wait as long as the command timeout, so
    #: the core's watchdog never reads one itself.  PCIe: False (a register
    #: read is a memory read that answers at once, all ones when the device
    #: is gone).
    fabrics = False
    #: The largest transfer the transport maps for one command, in bytes.
    max_transfer_size = 8 << 20
    #: The most data segments one command should carry.
    max_segments = 128

    def __init__(self) -> None:
        self.ctrl: NvmeController | None = None

    def attach(self, ctrl: "NvmeController") -> None:
        """The controller that drives this transport."""
        self.ctrl = ctrl

    # -- registers / properties ---------------------------------------------------

    @abc.abstractmethod
    def reg_read32(self, offset: int) -> int: ...

    @abc.abstractmethod
    def reg_read64(self, offset: int) -> int: ...

    @abc.abstractmethod
    def reg_write32(self, offset: int, value: int) -> None: ...

    # -- bring-up -------------------------------------------------------------------

    @abc.abstractmethod
    def enable_device(self) -> None:
        """Make the device reachable (PCIe: memory space, bus master,
        interrupts); called before every controller enable."""

    @abc.abstractmethod
    def setup_admin_queue(self, entries: int, reserved: int) -> HostQueue:
        """The admin queue pair, ready to be used once the controller is
        enabled (PCIe: rings allocated, AQA/ASQ/ACQ written)."""

    def io_queue_limit(self, wanted: int) -> int:
        """How many I/O queues the transport can serve (interrupt vectors,
        connections); the core asks for no more."""
        return wanted

    @abc.abstractmethod
    def create_io_queue(self, qid: int, entries: int, *, polled: bool) -> HostQueue:
        """Create I/O queue pair ``qid`` on the controller (PCIe: Create I/O
        CQ then Create I/O SQ through the core's admin queue)."""

    @abc.abstractmethod
    def delete_io_queue(self, queue: HostQueue) -> None:
        """Delete an I/O queue pair on the controller (orderly shutdown)."""

    @abc.abstractmethod
    def disable(self, shutdown: bool, timeout: float) -> bool:
        """Stop the controller: a normal shutdown notification (CC.SHN) when
        ``shutdown``, else a reset (CC.EN = 0); wait at most ``timeout``
        seconds for it to take effect.  True when it did."""

    @abc.abstractmethod
    def remove_queues(self) -> None:
        """Forget every queue (the controller dropped them: reset or
        shutdown); their memory is released."""

    # -- data path --------------------------------------------------------------------

    def submit(self, queue: HostQueue, reqs: list["HostRequest"]) -> list["HostRequest"]:
        """Start a batch on ``queue`` (one doorbell); requests without a free
        tag wait in the queue.  Returns the requests refused because the
        queue is gone (a reset took it)."""
        return queue.submit(reqs)

    def poll(self, queue: HostQueue) -> int:
        """Process ``queue``'s completions now (``queue.on_complete`` gets
        each); returns how many."""
        return queue.process_completions()

    @abc.abstractmethod
    def map_data(self, req: "HostRequest", queue: HostQueue) -> None:
        """Describe ``req.data``/``req.meta`` in ``req.cmd`` for the device
        (PCIe: PRPs, SGLs, MPTR, bounce buffers); ``req.mapping`` keeps what
        unmap_data needs."""

    @abc.abstractmethod
    def unmap_data(self, req: "HostRequest") -> None:
        """Undo map_data at the final completion (copy bounced reads back,
        free lists and bounce buffers).  Idempotent."""

    def reconnect_after(self, error: Exception) -> float | None:
        """A reset's bring-up failed with ``error``: seconds to wait before
        the core tries again, or None to give up (the controller dies).
        PCIe gives up; a Fabrics transport retries every reconnect delay
        until its controller loss timeout (Linux's nvmf_should_reconnect)."""
        return None

    def error_recovery(self, reason: str) -> None:
        """A command timed out and the core resets the controller.  A
        transport whose registers are reached through the queues (Fabrics)
        cannot count on its connections any more (Linux's nvme_tcp_timeout
        starts error recovery): it tears them down now, so that the reset
        and every command waiting on them end at once instead of waiting
        for answers a silent path never brings.  PCIe: nothing (its
        registers still answer, and the reset disables the controller
        through them)."""

    def alloc(self, size: int) -> Any:
        """A buffer the transport maps without a copy (PCIe: DMA memory)."""
        return bytearray(size)

    def free(self, buf: Any) -> None:
        """Give back a buffer from :meth:`alloc`."""

    def close(self) -> None:
        """Release everything (after the controller was shut down)."""
