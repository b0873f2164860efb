"""Security defaults of the target (issue 12, item 9): a host taken off a
subsystem loses its live associations, and a Connect does not reveal
whether a subsystem the host may not use exists."""

from __future__ import annotations

import time

from .conftest import NQN, RawHost
from .test_target import OTHER_HOST

MISSING = "nqn.2026-11.io.nvmestack:nobody"


def answer(reply):
    return reply.status.value, reply.status.dnr, reply.cqe.dw0


def test_a_forbidden_subsystem_answers_connect_as_a_missing_one(target, host):
    target.subsystems[NQN].allow_any_host = False
    for kw in ({}, {"cntlid": 5}, {"sqsize": 0}, {"qid": 1, "cntlid": 1}):
        h = host()
        h.ic()
        forbidden = h.connect(NQN, hostnqn=OTHER_HOST, **kw)
        h2 = host()
        h2.ic()
        missing = h2.connect(MISSING, hostnqn=OTHER_HOST, **kw)
        assert not forbidden.ok
        assert answer(forbidden) == answer(missing), kw
    assert not target.controllers


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_disallowing_a_host_ends_its_associations(target, host):
    sub = target.subsystems[NQN]
    sub.allow_any_host = False
    target.allow_host(NQN, OTHER_HOST)
    h = host()
    h.hostnqn = OTHER_HOST
    h.setup_admin()
    io = host()
    io.hostnqn = OTHER_HOST
    io.setup_io(h.cntlid)
    assert len(target.controllers) == 1
    target.disallow_host(NQN, OTHER_HOST)
    assert not target.controllers
    assert h.closed_or_terminated() and io.closed_or_terminated()


def test_cut_disallowed_after_allow_any_host_goes_off(target, host):
    from .conftest import HOSTNQN

    sub = target.subsystems[NQN]
    kept, cut = host(), host()
    kept.hostnqn, cut.hostnqn = OTHER_HOST, HOSTNQN
    kept.setup_admin()
    cut.setup_admin()
    assert len(target.controllers) == 2
    with sub.lock:
        sub.allowed_hosts = {OTHER_HOST}
        sub.allow_any_host = False
    gone = target.cut_disallowed(sub)
    assert [c.hostnqn for c in gone] == [HOSTNQN]
    assert [c.hostnqn for c in target.controllers] == [OTHER_HOST]
    assert cut.closed_or_terminated()
    assert kept.prop_get(0x1C).ok  # CSTS: the allowed host's association still works
