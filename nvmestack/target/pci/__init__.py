"""The PCIe function: configuration space, BAR0 registers, queues in host memory,
DMA through PRPs and SGLs, interrupts."""
