"""Namespace Management (create, delete) and Namespace Attachment (attach,
detach): success paths, every named error status, capacity accounting, the
changed namespace list and the Namespace Attribute Changed notice."""

import pytest

from nvmestack.spec.admin import NamespaceAttachment, NamespaceManagement
from nvmestack.spec.features import FeatureId
from nvmestack.spec.identify import (
    ControllerList,
    IdentifyController,
    IdentifyNamespace,
)
from nvmestack.spec.log import LogPageId
from nvmestack.spec.status import CommandSpecificStatus as CS
from nvmestack.spec.status import GenericStatus as GS
from nvmestack.target import Namespace, Subsystem
from nvmestack.target.admin_mgmt import fill_identify_controller
from nvmestack.target.commands import ADMIN_COMMANDS

from .conftest import assert_status, enable, status

NSID_ALL = 0xFFFFFFFF
# (event type Notice, Namespace Attribute Changed, Changed Namespace List log)
NOTICE_NS_CHANGED = (2, 0x00, LogPageId.CHANGED_NS)


def ns_data(nsze, ncap=None, lbaf=0, extended=False, pi=0, pi_first=False, shared=True):
    idns = IdentifyNamespace()
    idns.nsze = nsze
    idns.ncap = nsze if ncap is None else ncap
    idns.lba_format_index = lbaf
    idns.flbas_extended = extended
    idns.dps_pi_type = pi
    idns.dps_pi_first = pi_first
    idns.nmic_shared = shared
    return bytearray(bytes(idns))


def create(ctrl, data, nsid=0, csi=0):
    return ctrl.submit(NamespaceManagement(sel=0, nsid=nsid, csi=csi), data=data)


def delete(ctrl, nsid):
    return ctrl.submit(NamespaceManagement(sel=1, nsid=nsid))


def attach(ctrl, nsid, ids, sel=0):
    return ctrl.submit(NamespaceAttachment(sel=sel, nsid=nsid), data=bytearray(bytes(ControllerList.from_ids(ids))))


def detach(ctrl, nsid, ids):
    return attach(ctrl, nsid, ids, sel=1)


def enable_ns_notices(ctrl):
    # Asynchronous Event Configuration: Namespace Attribute Notices (bit 8).
    ctrl.features.current[FeatureId.ASYNC_EVENT] = 1 << 8


@pytest.fixture
def small():
    """A subsystem with 1 MiB of NVM capacity and two controllers, no namespaces."""
    subsys = Subsystem("nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000aa",
                       serial="SNMGMT", capacity=1 << 20, max_namespaces=4)
    a = enable(subsys.add_controller())
    b = enable(subsys.add_controller())
    yield subsys, a, b
    subsys.close()


# -- create ---------------------------------------------------------------------


def test_create_returns_nsid_and_does_not_attach(small):
    subsys, a, b = small
    req = create(a, ns_data(256, lbaf=3))  # 256 x 4 KiB = 1 MiB, the whole capacity
    assert status(req).ok
    nsid = req.cqe.dw0
    assert nsid == 1
    ns = subsys.namespaces[1]
    assert ns.nblocks == 256 and ns.block_size == 4096 and ns.lba_format == 3
    assert ns.attached == set()
    assert a.namespace(1) is None and b.namespace(1) is None
    assert subsys.unallocated_capacity() == 0
    # A controller created later does not see it either.
    c = subsys.add_controller()
    assert c.namespace(1) is None


def test_create_fields_carry_into_the_namespace(small):
    subsys, a, _ = small
    req = create(a, ns_data(64, lbaf=4, extended=True, pi=1, pi_first=True, shared=False))
    assert status(req).ok
    ns = subsys.namespaces[req.cqe.dw0]
    assert ns.metadata_size == 8 and ns.extended and ns.pi_type == 1 and ns.pi_first
    assert not ns.shared
    idns = ns.identify()
    assert idns.nsze == 64 and idns.ncap == 64 and idns.lba_format_index == 4
    assert idns.flbas_extended and idns.dps_pi_type == 1 and idns.dps_pi_first and not idns.nmic_shared


def test_create_thin_namespace_reports_ncap(small):
    subsys, a, _ = small
    req = create(a, ns_data(1024, ncap=128))  # 512 KiB visible, 64 KiB reserved
    assert status(req).ok
    ns = subsys.namespaces[req.cqe.dw0]
    assert ns.nblocks == 1024 and ns.ncap == 128
    assert ns.identify().ncap == 128 and ns.identify().nsze == 1024
    assert subsys.unallocated_capacity() == (1 << 20) - 128 * 512


def test_create_capacity_exhausted_is_insufficient_capacity(small):
    subsys, a, _ = small
    assert status(create(a, ns_data(1536))).ok  # 768 KiB
    req = create(a, ns_data(1024))  # 512 KiB more than the 256 KiB left
    assert_status(req, CS.NAMESPACE_INSUFFICIENT_CAPACITY)
    assert len(subsys.namespaces) == 1
    assert status(create(a, ns_data(512))).ok  # exactly what is left


def test_create_ncap_above_nsze_or_zero_is_invalid_field(small):
    _, a, _ = small
    assert_status(create(a, ns_data(16, ncap=17)), GS.INVALID_FIELD)
    assert_status(create(a, ns_data(0, ncap=0)), GS.INVALID_FIELD)
    assert_status(create(a, ns_data(16, ncap=0)), GS.INVALID_FIELD)


def test_create_thin_without_thin_provisioning(small):
    subsys, a, _ = small
    subsys.thin_provisioning = False
    assert_status(create(a, ns_data(16, ncap=8)), CS.THIN_PROVISIONING_NOT_SUPPORTED)
    assert status(create(a, ns_data(16))).ok


def test_create_invalid_format(small):
    subsys, a, _ = small
    assert_status(create(a, ns_data(16, lbaf=6)), CS.INVALID_FORMAT)  # only 0..5
    assert_status(create(a, ns_data(16, lbaf=0, pi=1)), CS.INVALID_FORMAT)  # PI without metadata
    assert_status(create(a, ns_data(16, lbaf=1, pi=5)), CS.INVALID_FORMAT)  # no PI type 5
    assert not subsys.namespaces


def test_create_with_nsid_or_other_command_set(small):
    _, a, _ = small
    assert_status(create(a, ns_data(16), nsid=1), GS.INVALID_FIELD)
    assert_status(create(a, ns_data(16), csi=2), CS.IOCS_NOT_SUPPORTED)


def test_create_when_every_nsid_is_taken(small):
    _subsys, a, _ = small
    for _ in range(4):
        assert status(create(a, ns_data(8))).ok
    assert_status(create(a, ns_data(8)), CS.NAMESPACE_ID_UNAVAILABLE)
    assert status(delete(a, 2)).ok
    req = create(a, ns_data(8))
    assert status(req).ok and req.cqe.dw0 == 2  # the freed identifier


def test_reserved_select_is_invalid_field(small):
    _, a, _ = small
    assert_status(a.submit(NamespaceManagement(sel=2, nsid=1)), GS.INVALID_FIELD)
    assert_status(a.submit(NamespaceAttachment(sel=3, nsid=1), data=bytearray(4096)), GS.INVALID_FIELD)


def test_create_uses_the_subsystem_backend_factory(small):
    subsys, a, _ = small
    made = []

    def factory(nsid):
        def backends(role, size):
            from nvmestack.target.backend import MemoryBackend

            made.append((nsid, role, size))
            return MemoryBackend(size)

        return backends

    subsys.backend_factory = factory
    req = create(a, ns_data(32, lbaf=1))
    assert status(req).ok
    assert made == [(1, "data", 32 * 512), (1, "meta", 32 * 8)]


# -- delete ---------------------------------------------------------------------


def test_delete_detaches_and_notifies(small):
    subsys, a, b = small
    nsid = create(a, ns_data(16)).cqe.dw0
    assert status(attach(a, nsid, [a.cntlid, b.cntlid])).ok
    a.changed_namespaces.clear()
    b.changed_namespaces.clear()
    enable_ns_notices(b)
    b.pending_events.clear()
    assert status(delete(a, nsid)).ok
    assert nsid not in subsys.namespaces
    assert a.namespace(nsid) is None and b.namespace(nsid) is None
    assert b.changed_namespaces == {nsid} and a.changed_namespaces == {nsid}
    assert NOTICE_NS_CHANGED in b.pending_events
    assert NOTICE_NS_CHANGED not in a.pending_events  # notices not enabled on a
    assert subsys.unallocated_capacity() == 1 << 20


def test_delete_all(small):
    subsys, a, _ = small
    for _ in range(3):
        create(a, ns_data(8))
    assert status(delete(a, NSID_ALL)).ok
    assert not subsys.namespaces


def test_delete_errors(small):
    subsys, a, _ = small
    create(a, ns_data(8))
    assert_status(delete(a, 3), GS.INVALID_FIELD)  # valid but not allocated
    assert_status(delete(a, 0), GS.INVALID_NAMESPACE_OR_FORMAT)
    assert_status(delete(a, 5), GS.INVALID_NAMESPACE_OR_FORMAT)  # above NN (4)
    assert 1 in subsys.namespaces


# -- attach / detach ---------------------------------------------------------------


def test_attach_makes_namespace_active_with_changed_list_and_event(small):
    subsys, a, b = small
    nsid = create(a, ns_data(16)).cqe.dw0
    enable_ns_notices(a)
    enable_ns_notices(b)
    a.pending_events.clear()
    b.pending_events.clear()
    req = attach(a, nsid, [b.cntlid])
    assert status(req).ok
    assert b.namespace(nsid) is subsys.namespaces[nsid]
    assert a.namespace(nsid) is None
    assert b.changed_namespaces == {nsid}
    assert a.changed_namespaces == set()
    assert list(b.pending_events) == [NOTICE_NS_CHANGED]
    assert not a.pending_events
    # Now attach to a as well: a shared namespace may have both.
    assert status(attach(a, nsid, [a.cntlid])).ok
    assert a.namespace(nsid) is not None and a.changed_namespaces == {nsid}


def test_attach_already_attached(small):
    subsys, a, b = small
    nsid = create(a, ns_data(16)).cqe.dw0
    assert status(attach(a, nsid, [a.cntlid])).ok
    req = attach(a, nsid, [b.cntlid, a.cntlid])
    assert_status(req, CS.NAMESPACE_ALREADY_ATTACHED)
    assert subsys.namespaces[nsid].attached == {a.cntlid}  # nothing half done


def test_private_namespace_attaches_to_one_controller(small):
    subsys, a, b = small
    nsid = create(a, ns_data(16, shared=False)).cqe.dw0
    assert_status(attach(a, nsid, [a.cntlid, b.cntlid]), CS.NAMESPACE_IS_PRIVATE)
    assert status(attach(a, nsid, [a.cntlid])).ok
    assert_status(attach(a, nsid, [b.cntlid]), CS.NAMESPACE_IS_PRIVATE)
    assert subsys.namespaces[nsid].attached == {a.cntlid}


def test_detach_and_not_attached(small):
    subsys, a, b = small
    nsid = create(a, ns_data(16)).cqe.dw0
    assert_status(detach(a, nsid, [a.cntlid]), CS.NAMESPACE_NOT_ATTACHED)
    attach(a, nsid, [a.cntlid, b.cntlid])
    a.changed_namespaces.clear()
    b.changed_namespaces.clear()
    assert status(detach(a, nsid, [b.cntlid])).ok
    assert b.namespace(nsid) is None and a.namespace(nsid) is not None
    assert b.changed_namespaces == {nsid} and a.changed_namespaces == set()
    assert_status(detach(a, nsid, [a.cntlid, b.cntlid]), CS.NAMESPACE_NOT_ATTACHED)
    assert subsys.namespaces[nsid].attached == {a.cntlid}


def test_controller_list_invalid(small):
    _, a, _b = small
    nsid = create(a, ns_data(16)).cqe.dw0
    assert_status(attach(a, nsid, []), CS.CONTROLLER_LIST_INVALID)  # empty
    assert_status(attach(a, nsid, [0x77]), CS.CONTROLLER_LIST_INVALID)  # no such controller
    assert_status(attach(a, nsid, [a.cntlid, a.cntlid]), CS.CONTROLLER_LIST_INVALID)  # duplicate
    bad = bytearray(4096)
    bad[0:2] = (2048).to_bytes(2, "little")  # more than 2047 identifiers
    assert_status(a.submit(NamespaceAttachment(sel=0, nsid=nsid), data=bad), CS.CONTROLLER_LIST_INVALID)


def test_attachment_namespace_errors(small):
    _, a, _ = small
    assert_status(attach(a, 2, [a.cntlid]), GS.INVALID_FIELD)  # not allocated
    assert_status(attach(a, NSID_ALL, [a.cntlid]), GS.INVALID_FIELD)
    assert_status(attach(a, 0, [a.cntlid]), GS.INVALID_NAMESPACE_OR_FORMAT)
    assert_status(attach(a, 9, [a.cntlid]), GS.INVALID_NAMESPACE_OR_FORMAT)


def test_identify_controller_capacity_fields(small):
    _subsys, a, _ = small
    create(a, ns_data(512))  # 256 KiB
    idc = IdentifyController()
    fill_identify_controller(a, idc)
    assert idc.tnvmcap == 1 << 20 and idc.unvmcap == (1 << 20) - 256 * 1024
    assert idc.oacs_ns_mgmt and idc.oacs_format and idc.oacs_fw and idc.oacs_self_test


def test_existing_namespaces_count_against_capacity(subsystem, ctrl):
    subsystem.capacity = 8192 * 512 + 4096
    assert subsystem.unallocated_capacity() == 4096
    assert_status(create(ctrl, ns_data(16)), CS.NAMESPACE_INSUFFICIENT_CAPACITY)
    assert status(create(ctrl, ns_data(8))).ok


def test_commands_are_registered_with_effects():
    from nvmestack.spec.opcodes import AdminOpcode

    for op in (AdminOpcode.NAMESPACE_MANAGEMENT, AdminOpcode.NAMESPACE_ATTACHMENT):
        assert ADMIN_COMMANDS[op].effects & (1 << 3)  # NIC


def test_fixture_namespace_survives(subsystem, ctrl):
    # The default namespace is unaffected by the management commands' presence.
    assert isinstance(subsystem.namespaces[1], Namespace) and ctrl.namespace(1) is not None
