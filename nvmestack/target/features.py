"""Feature values of a controller: current, default and saved, per feature
(and per namespace for namespace-specific features), with the capabilities
Get Features reports for Select = 11b."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..spec.features import FeatureId

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["FeatureStore"]


class FeatureStore:
    def __init__(self, ctrl: "Controller"):
        self.ctrl = ctrl
        self.defaults: dict[int, int] = {FeatureId.ASYNC_EVENT: 0}
        self.saved: dict[int, int] = {}
        self.current: dict[int, int] = {}
        self.reset()

    def reset(self) -> None:
        """Controller level reset: current values return to saved or default."""
        self.current = {fid: self.saved.get(fid, value) for fid, value in self.defaults.items()}

    def value(self, fid: int, nsid: int = 0) -> int:
        return self.current[fid]

    def event_enabled(self, event_type: int, info: int) -> bool:
        """Whether Asynchronous Event Configuration (feature 0Bh) lets an
        event be reported.  Error events are always reported."""
        from .controller import AsyncEventType

        aec = self.current.get(FeatureId.ASYNC_EVENT, 0)
        if event_type == AsyncEventType.SMART:
            return bool(aec & 0xFF)
        if event_type == AsyncEventType.NOTICE:
            bit = {0x00: 8, 0x01: 9, 0x02: 10, 0x03: 11, 0xF0: 31}.get(info)
            return bit is not None and bool(aec >> bit & 1)
        return True
