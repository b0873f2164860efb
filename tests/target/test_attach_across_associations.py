"""Namespace attachment across fabrics associations (issue 12, item 4).

Over NVMe/TCP every association is a new (dynamic) controller.  What a host
attached through one of its controllers holds for its later associations
(reset, reconnect, keep-alive recovery), the host keeps its controller ID
while it is free, and a namespace can always be detached and attached again,
also while its host has no association."""

from nvmestack.spec.admin import Cns, Identify, NamespaceAttachment
from nvmestack.spec.identify import ControllerList, NamespaceList
from nvmestack.spec.status import CommandSpecificStatus as CS
from nvmestack.spec.status import Status
from nvmestack.target import Namespace, Subsystem
from nvmestack.target.persist import load, save

from .conftest import enable

HOST_A = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-0000-0000-000000000001"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-0000-0000-000000000002"


def make():
    sub = Subsystem("nqn.2026-11.io.nvmestack:attach")
    sub.add_namespace(Namespace(1, 64))  # shared, attached to every controller
    sub.add_namespace(Namespace(2, 64, shared=False), attach=False)  # private, attached to none
    return sub


def connect(sub, host):
    return enable(sub.add_controller(fabrics=True, hostnqn=host))


def disconnect(sub, ctrl):
    sub.remove_controller(ctrl)


def attach(ctrl, nsid, *ids, detach=False):
    req = ctrl.submit(NamespaceAttachment(sel=1 if detach else 0, nsid=nsid),
                      data=bytearray(bytes(ControllerList.from_ids(ids))))
    return Status.of(req.cqe)


def active(ctrl):
    req = ctrl.submit(Identify(cns=Cns.NS_ACTIVE_LIST))
    return NamespaceList.from_bytes(bytes(req.data[0])).nsids()


def attached_to(ctrl, nsid):
    req = ctrl.submit(Identify(cns=Cns.NS_CTRL_LIST, nsid=nsid))
    return ControllerList.from_bytes(bytes(req.data[0])).ids()


def code(st):
    return (st.sct, st.sc)


def test_a_private_namespace_survives_a_reset_and_can_be_detached_with_the_stored_id():
    # nvme-cli's attach/detach test: read the controller ID once, attach,
    # reset (a new association), detach with the ID read at the start.
    sub = make()
    a = connect(sub, HOST_A)
    cntlid = a.cntlid
    assert attach(a, 2, cntlid).ok
    assert active(a) == [1, 2]
    disconnect(sub, a)  # nvme reset: the association ends ...
    a = connect(sub, HOST_A)  # ... and a new one begins
    assert a.cntlid == cntlid  # the host keeps its controller ID
    assert active(a) == [1, 2]
    assert attached_to(a, 2) == [cntlid]
    assert attach(a, 2, cntlid, detach=True).ok
    assert active(a) == [1]
    disconnect(sub, a)
    a = connect(sub, HOST_A)
    assert active(a) == [1]  # the detach holds too
    assert attach(a, 2, cntlid).ok and active(a) == [1, 2]


def test_other_hosts_get_other_ids_and_a_host_can_hold_two_associations():
    sub = make()
    a = connect(sub, HOST_A)
    b = connect(sub, HOST_B)
    assert a.cntlid != b.cntlid
    first = a.cntlid
    disconnect(sub, a)
    c = connect(sub, HOST_B)  # host B's second association does not take A's ID
    assert c.cntlid not in (first, b.cntlid)
    a = connect(sub, HOST_A)
    assert a.cntlid == first


def test_a_private_namespace_follows_its_host_to_the_new_association():
    # Keep-alive loss: the host reconnects while its old controller is still
    # alive on the target; the namespace moves to the new association.
    sub = make()
    old = connect(sub, HOST_A)
    assert attach(old, 2, old.cntlid).ok
    new = connect(sub, HOST_A)
    assert new.cntlid != old.cntlid
    assert active(new) == [1, 2] and active(old) == [1]
    assert 2 in old.changed_namespaces  # the old one was told
    disconnect(sub, old)
    assert active(new) == [1, 2]
    assert attach(new, 2, new.cntlid, detach=True).ok


def test_a_namespace_of_a_host_without_an_association_can_be_detached_and_given_to_another():
    sub = make()
    a = connect(sub, HOST_A)
    a_id = a.cntlid
    assert attach(a, 2, a_id).ok
    disconnect(sub, a)
    b = connect(sub, HOST_B)
    # Still host A's: private, listed with A's controller ID.
    assert code(attach(b, 2, b.cntlid)) == code(CS.NAMESPACE_IS_PRIVATE.status())
    assert attached_to(b, 2) == [a_id]
    # A's ID names A's controller while A has no association: detach, then attach to B.
    assert attach(b, 2, a_id, detach=True).ok
    assert code(attach(b, 2, a_id, detach=True)) == code(CS.NAMESPACE_NOT_ATTACHED.status())
    assert attach(b, 2, b.cntlid).ok and active(b) == [1, 2]
    a = connect(sub, HOST_A)
    assert active(a) == [1]
    # An ID no controller ever had is still Controller List Invalid.
    assert code(attach(b, 2, 0x1234, detach=True)) == code(CS.CONTROLLER_LIST_INVALID.status())


def test_attachments_of_shared_namespaces_also_hold_per_host():
    sub = make()
    sub.add_namespace(Namespace(3, 64), attach=False)  # shared, created by Namespace Management
    a = connect(sub, HOST_A)
    assert attach(a, 3, a.cntlid).ok
    assert attach(a, 1, a.cntlid, detach=True).ok  # an auto-attached one, detached
    disconnect(sub, a)
    a = connect(sub, HOST_A)
    assert active(a) == [3]
    b = connect(sub, HOST_B)
    assert active(b) == [1]


def test_host_attachments_are_saved(tmp_path):
    sub = make()
    a = connect(sub, HOST_A)
    assert attach(a, 2, a.cntlid).ok
    assert attach(a, 1, a.cntlid, detach=True).ok
    save(sub, tmp_path)
    sub.close()
    back = load(tmp_path)
    try:
        assert back.namespaces[2].attached_hosts == {HOST_A} and not back.namespaces[2].attached
        a = connect(back, HOST_A)
        assert active(a) == [2]
        assert active(connect(back, HOST_B)) == [1]
    finally:
        back.close()


def test_a_pcie_controller_keeps_its_private_namespace():
    sub = make()
    ctrl = enable(sub.add_controller())
    assert attach(ctrl, 2, ctrl.cntlid).ok
    fabric = connect(sub, HOST_A)
    assert code(attach(fabric, 2, fabric.cntlid)) == code(CS.NAMESPACE_IS_PRIVATE.status())
    assert active(ctrl) == [1, 2]
