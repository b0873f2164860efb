"""The PCIe function: configuration space, BAR0 registers, queues in host memory,
DMA through PRPs and SGLs, interrupts."""

from .function import PciFunction
from .lowlevel import RawHost

__all__ = ["PciFunction", "RawHost"]
