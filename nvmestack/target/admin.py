"""Admin command handlers (NVMe 2.0 base specification, section 5)."""

from __future__ import annotations

from ..spec.opcodes import AdminOpcode
from .commands import admin_command


@admin_command(AdminOpcode.KEEP_ALIVE, ns=None)
def keep_alive(ctrl, req):
    """Keep Alive: restart the Keep Alive Timer."""
    ctrl.keep_alive()
