"""Fixtures for the device core: a subsystem with a namespace and an
enabled controller, driven with ``ctrl.submit`` (plain Python buffers)."""

import pytest

from nvmestack.spec.registers import Reg
from nvmestack.spec.status import Status
from nvmestack.target import Namespace, Subsystem


def enable(ctrl):
    """CC.EN = 1 with 4 KiB pages, 64-byte SQEs, 16-byte CQEs; wait for RDY."""
    ctrl.set_property(Reg.CC, 4, 1 | (6 << 16) | (4 << 20))
    assert ctrl.regs.csts.rdy
    return ctrl


@pytest.fixture
def subsystem():
    subsys = Subsystem("nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001",
                       serial="SN0001", model="nvmestack test")
    subsys.add_namespace(Namespace(1, 8192))  # 4 MiB of 512-byte blocks
    yield subsys
    subsys.close()


@pytest.fixture
def ctrl(subsystem):
    return enable(subsystem.add_controller())


@pytest.fixture
def ns(subsystem):
    return subsystem.namespaces[1]


def status(req):
    """The completion status of a request."""
    return Status.of(req.cqe)


def assert_ok(req):
    s = status(req)
    assert s.ok, f"expected success, got {s}"


def assert_status(req, code, dnr=True):
    """The request failed with ``code`` (a status code enum member); DNR as
    given (None: either)."""
    s = status(req)
    assert (s.sct, s.sc) == (code.sct, code), f"expected {code.name}, got {s}"
    if dnr is not None:
        assert s.dnr == dnr
