"""Fixtures for the PCIe function tests driven through the low-level API
(target/pci/lowlevel.py): functions in the inline and the threaded mode
over a fresh host memory, and completion status assertions."""

import pytest

from nvmestack.memory import PhysicalMemory
from nvmestack.spec.status import Status
from nvmestack.target.pci import function as pci_function_module
from nvmestack.target.pci.function import PciFunction
from nvmestack.target.pci.lowlevel import RawHost

from ...io_paths import both_io_paths

MODES = ["inline", "thread"]


io_path = both_io_paths(pci_function_module)


class FakeClock:
    """A clock tests move by hand (CSTS.RDY delay, coalescing time)."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def host_memory():
    mem = PhysicalMemory(16 << 20)
    yield mem
    mem.close()


@pytest.fixture
def make_function(subsystem, host_memory):
    """make_function(**options) -> (function, RawHost); inline mode unless
    ``mode`` says otherwise; closed after the test."""
    made = []

    def factory(**options):
        options.setdefault("mode", "inline")
        fn = PciFunction(subsystem, host_memory, **options)
        made.append(fn)
        return fn, RawHost(fn)

    yield factory
    for fn in made:
        fn.close()


@pytest.fixture(params=MODES)
def mode(request):
    """Each scenario runs on the inline and the threaded device."""
    return request.param


@pytest.fixture
def host(make_function, mode):
    """A RawHost with the controller enabled (32-entry admin queue), in each mode."""
    _fn, h = make_function(mode=mode)
    h.bring_up()
    return h


def ok(cqe):
    st = Status.of(cqe)
    assert st.value & 0x7FF == 0, f"expected success, got {st}"


def status_is(cqe, code, dnr=True):
    """The completion failed with ``code``; DNR as given (None: either)."""
    st = Status.of(cqe)
    assert (st.sct, st.sc) == (code.sct, code), f"expected {code.name}, got {st}"
    if dnr is not None:
        assert st.dnr == dnr
