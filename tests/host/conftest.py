"""Fixtures for the host driver tests, reusable by every host test file:

- ``host_subsystem``: a subsystem with namespace 1 (16384 blocks of 512
  bytes, 8 MiB) and a fault injector installed (``host_subsystem.faults``);
- ``host_memory``: the host's RAM (a 64 MiB PhysicalMemory);
- ``pci_mode``: "inline" and "thread" (each test using it runs twice);
- ``make_function(**options)``: a PciFunction over that memory (options go
  to PciFunction; ``mode`` defaults to "inline"), closed after the test;
- ``pci_function``: a function in each mode;
- ``make_controller(function=None, *, transport_options=None, **options)``:
  a live NvmeController over a PciTransport (a new function in each mode
  when none is given); shut down after the test, which also checks that no
  request was completed twice;
- ``ctrl``: a live controller in each mode (2 I/O queues);
- ``io_path``: "fast" and "general" (autouse: every test runs on both I/O
  paths of the PCIe function's queues).

Helpers: ``wait_for(predicate, timeout)`` and ``pattern(n, seed)``.
"""

from __future__ import annotations

import random
import time

import pytest

from nvmestack.host import block as host_block_module
from nvmestack.host import HostRequest, NvmeController, PciTransport
from nvmestack.memory import PhysicalMemory
from nvmestack.target import Namespace, Subsystem
from nvmestack.target.faults import FaultInjector
from nvmestack.target.pci import function as pci_function_module
from nvmestack.target.pci.function import PciFunction

from ..io_paths import both_io_paths

PCI_MODES = ["inline", "thread"]
NS_BLOCKS = 16384
NS_BLOCK_SIZE = 512


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.001):
    """Poll ``predicate`` until it returns something true or ``timeout``
    seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` pseudo-random bytes (reproducible)."""
    return random.Random(seed).randbytes(n)


io_path = both_io_paths(pci_function_module, host_block_module)


@pytest.fixture
def host_subsystem():
    subsys = Subsystem("nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000f1",
                       serial="HOST0001", model="nvmestack host test")
    subsys.add_namespace(Namespace(1, NS_BLOCKS))
    FaultInjector.install(subsys)
    yield subsys
    subsys.faults.close()
    subsys.close()


@pytest.fixture
def host_memory():
    mem = PhysicalMemory(64 << 20)
    yield mem
    mem.close()


@pytest.fixture(params=PCI_MODES)
def pci_mode(request):
    return request.param


@pytest.fixture
def make_function(host_subsystem, host_memory):
    made = []

    def factory(**options):
        options.setdefault("mode", "inline")
        fn = PciFunction(host_subsystem, host_memory, **options)
        made.append(fn)
        return fn

    yield factory
    for fn in made:
        fn.close()


@pytest.fixture
def pci_function(make_function, pci_mode):
    return make_function(mode=pci_mode)


@pytest.fixture
def make_controller(make_function, pci_mode):
    made = []
    before = HostRequest.double_completions

    def factory(function=None, *, transport_options=None, **options):
        if function is None:
            function = make_function(mode=pci_mode)
        options.setdefault("io_queues", 2)
        transport = PciTransport(function, **(transport_options or {}))
        try:
            ctrl = NvmeController(transport, **options)
        except Exception:
            transport.close()
            raise
        made.append(ctrl)
        return ctrl

    yield factory
    for ctrl in made:
        ctrl.shutdown()
    for ctrl in made:
        assert ctrl.double_completions == 0
    assert HostRequest.double_completions == before


@pytest.fixture
def ctrl(make_controller):
    return make_controller()
