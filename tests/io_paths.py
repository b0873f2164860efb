"""Running a directory's tests on both I/O paths."""

from __future__ import annotations

from types import ModuleType

import pytest


def both_io_paths(module: ModuleType):
    """An autouse fixture ``io_path`` for a conftest: every test runs with
    the I/O fast path (target/fastpath.py) and with every command on the
    general path (``module.FAST_PATH``, the default of the transport the
    tests build), with the same expectations; the fixture's value says which."""

    @pytest.fixture(autouse=True, params=["fast", "general"])
    def io_path(request, monkeypatch):
        monkeypatch.setattr(module, "FAST_PATH", request.param == "fast")
        return request.param

    return io_path
