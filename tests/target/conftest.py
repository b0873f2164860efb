"""Fixtures for the device core: a subsystem with a namespace and an
enabled controller, driven with ``ctrl.submit`` (plain Python buffers)."""

import pytest

from nvmestack.spec.registers import Reg
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
