"""nvmestack: a complete NVMe stack in Python."""

__version__ = "0.1.0"
