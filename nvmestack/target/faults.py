"""Fault injection for testing hosts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .controller import Controller
    from .request import Request

__all__ = ["FaultInjector"]


class FaultInjector:
    def __init__(self):
        self.rules: list = []

    def intercept(self, ctrl: "Controller", req: "Request") -> bool:
        """True when a fault took the request over (it completes it itself)."""
        return False
