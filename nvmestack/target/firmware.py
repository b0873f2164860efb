"""Firmware slots of the subsystem (Firmware Image Download / Commit, the
Firmware Slot Information log)."""

from __future__ import annotations

__all__ = ["FirmwareSlots"]

SLOTS = 7


class FirmwareSlots:
    def __init__(self, revision: str):
        # Slot 1 holds the revision the device was made with.
        self.revisions: dict[int, str] = {1: revision}
        self.active = 1
        self.next_active: int | None = None

    @property
    def active_revision(self) -> str:
        return self.revisions[self.active]

    def subsystem_reset(self) -> None:
        """An NVM subsystem reset activates a committed image."""
        if self.next_active is not None:
            self.active = self.next_active
            self.next_active = None
