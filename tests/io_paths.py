"""Running a directory's tests on both I/O paths (and, for NVMe/TCP, with
worker processes too)."""

from __future__ import annotations

from types import ModuleType

import pytest


def both_io_paths(*modules: ModuleType, workers: int = 0):
    """An autouse fixture ``io_path`` for a conftest: every test runs with
    the I/O fast paths (target/fastpath.py, the host block layer's) and
    with every command on the general path (``module.FAST_PATH`` of each
    module: the default of the transport the tests build, the host's block
    layer), with the same expectations; the fixture's value says which.
    With ``workers``, both run once more with that many worker processes
    serving the I/O queues (``module.WORKERS`` of the modules that have it:
    target/tcp.py, see target/workers.py)."""

    params = [("fast", 0), ("general", 0)]
    if workers:
        params += [("fast", workers), ("general", workers)]

    @pytest.fixture(autouse=True, params=params, ids=[f"{p}-workers" if n else p for p, n in params])
    def io_path(request, monkeypatch):
        path, count = request.param
        for module in modules:
            monkeypatch.setattr(module, "FAST_PATH", path == "fast")
            if hasattr(module, "WORKERS"):
                monkeypatch.setattr(module, "WORKERS", count)
        return path

    return io_path
