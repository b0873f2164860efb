"""The host driver, in the shape of Linux's drivers/nvme/host: a core
(``core.py``: state machine, bring-up, namespaces, recovery, events,
passthrough), queues and tags (``queue.py``), requests (``request.py``),
transports behind one interface (``transport.py``; ``pci.py`` for a PCIe
function, ``tcp.py`` for NVMe/TCP with discovery), the block layer
(``block.py``) and tracing (``trace.py``).

Quick start over an in-process PCIe function::

    from nvmestack.host import NvmeController, PciTransport
    ctrl = NvmeController(PciTransport(function))     # probe: LIVE, namespaces scanned
    ns = ctrl.namespaces[1]
    buf = ctrl.alloc_buffer(4096)
    ctrl.execute(Read(nsid=1, slba=0, nlb=7), buf)
    ctrl.shutdown()
"""

from .core import (
    ALLOWED_TRANSITIONS,
    AsyncEvent,
    CtrlState,
    HostNamespace,
    InitError,
    NamespaceIds,
    NullTracer,
    NvmeController,
)
from .pci import PciTransport
from .queue import HostQueue, MemoryQueue, TagSet
from .request import ControllerDeadError, HostRequest, NvmeHostError, NvmeStatusError
from .tcp import TcpTransport
from .transport import Transport, TransportError

__all__ = [
    "ALLOWED_TRANSITIONS",
    "AsyncEvent",
    "ControllerDeadError",
    "CtrlState",
    "HostNamespace",
    "HostQueue",
    "HostRequest",
    "InitError",
    "MemoryQueue",
    "NamespaceIds",
    "NullTracer",
    "NvmeController",
    "NvmeHostError",
    "NvmeStatusError",
    "PciTransport",
    "TagSet",
    "TcpTransport",
    "Transport",
    "TransportError",
]
