"""The host driver's fixtures (a live NvmeController over an in-process PCIe
function, inline and thread modes): see tests/host/conftest.py."""

from ..host.conftest import (  # noqa: F401 - fixtures
    NS_BLOCK_SIZE,
    NS_BLOCKS,
    ctrl,
    host_memory,
    host_subsystem,
    make_controller,
    make_function,
    pci_mode,
)
