"""Running a directory's tests on both I/O paths."""

from __future__ import annotations

from types import ModuleType

import pytest


def both_io_paths(*modules: ModuleType):
    """An autouse fixture ``io_path`` for a conftest: every test runs with
    the I/O fast paths (target/fastpath.py, the host block layer's) and
    with every command on the general path (``module.FAST_PATH`` of each
    module: the default of the transport the tests build, the host's block
    layer), with the same expectations; the fixture's value says which."""

    @pytest.fixture(autouse=True, params=["fast", "general"])
    def io_path(request, monkeypatch):
        for module in modules:
            monkeypatch.setattr(module, "FAST_PATH", request.param == "fast")
        return request.param

    return io_path
