"""SMART / health counters of the subsystem (log page 02h)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .subsystem import Subsystem

__all__ = ["Health"]


class Health:
    """Counters the NVM command handlers feed; the SMART log is built from
    them.  Data units are counted in bytes here and reported in the log in
    units of 1000 512-byte blocks, rounded up."""

    def __init__(self, subsystem: "Subsystem"):
        self.subsystem = subsystem
        self.lock = threading.Lock()
        self.bytes_read = 0
        self.bytes_written = 0
        self.host_read_commands = 0
        self.host_write_commands = 0
        self.busy_seconds = 0.0
        self.power_cycles = 1
        self.power_on_seconds = 0.0
        self.unsafe_shutdowns = 0
        self.media_errors = 0

    def host_read(self, nbytes: int) -> None:
        """A read-like command (Read, Compare, Verify) moved ``nbytes`` of data."""
        with self.lock:
            self.bytes_read += nbytes
            self.host_read_commands += 1

    def host_write(self, nbytes: int) -> None:
        """A write-like command (Write, Write Zeroes, Write Uncorrectable, Copy)."""
        with self.lock:
            self.bytes_written += nbytes
            self.host_write_commands += 1

    def busy(self, seconds: float) -> None:
        """Time the controller spent with I/O outstanding."""
        with self.lock:
            self.busy_seconds += seconds

    def media_error(self) -> None:
        """An unrecovered data integrity error was reported."""
        with self.lock:
            self.media_errors += 1

    def shutdown(self, abrupt: bool) -> None:
        if abrupt:
            with self.lock:
                self.unsafe_shutdowns += 1
