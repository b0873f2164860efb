"""The device side: NVM subsystem, controllers, namespaces and command
execution, shared by every transport (PCIe function, NVMe/TCP)."""

from . import admin, admin_mgmt, fabrics, io  # noqa: F401  (register the command handlers)
from .controller import Controller
from .namespace import Namespace
from .subsystem import Subsystem

__all__ = ["Subsystem", "Controller", "Namespace"]
