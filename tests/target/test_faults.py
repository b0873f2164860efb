"""Fault injection, each action through ctrl.submit: complete with a
status, delay (and abort or reset meanwhile), never complete, media errors
at given LBAs, controller fatal."""

import time

import pytest

from nvmestack.spec.admin import Abort, KeepAlive
from nvmestack.spec.log import ErrorInformationEntry
from nvmestack.spec.nvm import Compare, Read, Verify, Write, pack_copy_ranges
from nvmestack.spec.nvm import Copy as CopyCommand
from nvmestack.spec.opcodes import AdminOpcode, NvmOpcode
from nvmestack.spec.sqe import Fuse
from nvmestack.spec.status import GenericStatus, MediaStatus, Status, StatusCodeType
from nvmestack.target import Namespace
from nvmestack.target.commands import ADMIN_COMMANDS, FUSED_COMMANDS, IO_COMMANDS
from nvmestack.target.faults import FaultAction, FaultInjector, FaultRule, LbaSet

from .conftest import enable

BS = 512


@pytest.fixture
def faults(subsystem):
    injector = FaultInjector.install(subsystem)
    yield injector
    injector.close()


@pytest.fixture(autouse=True)
def _need_read_write():
    if NvmOpcode.READ not in IO_COMMANDS or NvmOpcode.WRITE not in IO_COMMANDS:
        pytest.skip("Read/Write not implemented yet")


_cid = iter(range(1, 1 << 16))


def write(ctrl, slba, nblocks=1, fill=0xAB, nsid=1):
    return ctrl.submit(Write(nsid=nsid, slba=slba, nlb=nblocks - 1, cid=next(_cid)), sqid=1,
                       data=bytes([fill]) * (nblocks * BS))


def read(ctrl, slba, nblocks=1, nsid=1):
    return ctrl.submit(Read(nsid=nsid, slba=slba, nlb=nblocks - 1, cid=next(_cid)), sqid=1)


def status(req):
    return Status.of(req.cqe)


def wait_done(req, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not req.done and time.monotonic() < deadline:
        time.sleep(0.005)
    return req.done


def test_not_installed_by_default(subsystem):
    assert subsystem.faults is None
    assert FaultInjector.install(subsystem) is FaultInjector.install(subsystem)


def test_status_fault_once(ctrl, ns, faults):
    rule = faults.fail(MediaStatus.WRITE_FAULT, opcode=NvmOpcode.WRITE, nsid=1, count=1)
    req = write(ctrl, 4, fill=0x11)
    st = status(req)
    assert req.done and (st.sct, st.sc, st.dnr) == (StatusCodeType.MEDIA, MediaStatus.WRITE_FAULT, True)
    assert ns.data.read_bytes(4 * BS, BS) == bytes(BS)  # the write never ran
    entry = ErrorInformationEntry.decode(ctrl.error_log[0])
    assert entry.cmdid == req.cid and entry.sc == MediaStatus.WRITE_FAULT and entry.nsid == 1
    assert rule.hits == 1 and rule not in faults.rules
    req = write(ctrl, 4, fill=0x22)
    assert status(req).ok and ns.data.read_bytes(4 * BS, 1) == b"\x22"


def test_status_fault_without_dnr_and_count(ctrl, faults):
    faults.fail(GenericStatus.NAMESPACE_NOT_READY, dnr=False, opcode=NvmOpcode.READ, count=2)
    for _ in range(2):
        st = status(read(ctrl, 0))
        assert st.sc == GenericStatus.NAMESPACE_NOT_READY and not st.dnr
    assert status(read(ctrl, 0)).ok


def test_count_none_is_always(ctrl, faults):
    rule = faults.fail(GenericStatus.INTERNAL_ERROR, opcode=NvmOpcode.READ)
    for _ in range(5):
        assert status(read(ctrl, 0)).sc == GenericStatus.INTERNAL_ERROR
    assert rule.hits == 5 and rule in faults.rules
    faults.remove(rule)
    assert status(read(ctrl, 0)).ok


def test_admin_and_io_are_told_apart(ctrl, faults):
    # Opcode 02h is Read on an I/O queue and Get Log Page on the admin queue;
    # 18h is Keep Alive only on the admin queue.
    faults.fail(GenericStatus.INTERNAL_ERROR, admin=True, opcode=AdminOpcode.KEEP_ALIVE)
    faults.fail(GenericStatus.DATA_TRANSFER_ERROR, admin=True, opcode=0x02)
    assert status(ctrl.submit(KeepAlive(cid=5))).sc == GenericStatus.INTERNAL_ERROR
    assert status(read(ctrl, 0)).ok


def test_match_by_namespace(subsystem, ctrl, faults):
    subsystem.add_namespace(Namespace(2, 64))
    faults.fail(MediaStatus.WRITE_FAULT, nsid=2)
    assert status(write(ctrl, 0, nsid=1)).ok
    assert status(write(ctrl, 0, nsid=2)).sc == MediaStatus.WRITE_FAULT


def test_match_by_lba_range(ctrl, faults):
    faults.fail(MediaStatus.WRITE_FAULT, opcode=NvmOpcode.WRITE, lbas=range(10, 20))
    assert status(write(ctrl, 5, 5)).ok  # 5..9
    assert status(write(ctrl, 20, 4)).ok  # 20..23
    assert status(write(ctrl, 8, 3)).sc == MediaStatus.WRITE_FAULT  # 8..10
    assert status(write(ctrl, 19)).sc == MediaStatus.WRITE_FAULT
    # A rule with LBAs never matches commands without SLBA/NLB.
    assert status(ctrl.submit(bytes([NvmOpcode.FLUSH, 0, 9, 9, 1]) + bytes(59), sqid=1)).ok


def test_match_by_controller(subsystem, faults):
    a = enable(subsystem.add_controller())
    b = enable(subsystem.add_controller())
    faults.fail(GenericStatus.INTERNAL_ERROR, cntlid=b.cntlid)
    assert status(read(a, 0)).ok
    assert status(read(b, 0)).sc == GenericStatus.INTERNAL_ERROR


def test_delay_completes_later(ctrl, ns, faults):
    ns.data.write_bytes(0, b"\x5A" * BS)
    faults.delay(0.15, opcode=NvmOpcode.READ, count=1)
    start = time.monotonic()
    req = read(ctrl, 0)
    assert not req.done and ctrl.outstanding[(1, req.cid)] is req
    assert wait_done(req)
    assert time.monotonic() - start >= 0.14
    assert status(req).ok and bytes(req.data[0]) == b"\x5A" * BS
    assert (1, req.cid) not in ctrl.outstanding


def test_delayed_request_aborted_meanwhile_completes_once(ctrl, ns, faults):
    faults.delay(0.1, opcode=NvmOpcode.WRITE)
    completions = []
    req = ctrl.new_request(Write(nsid=1, slba=3, nlb=0, cid=77), 1, on_complete=completions.append)
    assert ctrl.prepare(req)
    req.data = [memoryview(bytearray(b"\x33" * BS))]
    ctrl.execute(req)
    assert not req.done
    # What Abort does: the outstanding request completes with Abort Requested.
    victim = ctrl.outstanding[(1, 77)]
    victim.complete(GenericStatus.ABORT_REQUESTED.status())
    time.sleep(0.2)
    assert completions == [req]
    assert status(req).sc == GenericStatus.ABORT_REQUESTED
    assert ns.data.read_bytes(3 * BS, BS) == bytes(BS)  # the write never ran


def test_abort_command_finds_a_delayed_request(ctrl, faults):
    if AdminOpcode.ABORT not in ADMIN_COMMANDS:
        pytest.skip("Abort not implemented yet")
    faults.delay(0.2, opcode=NvmOpcode.READ)
    req = read(ctrl, 0)
    assert not req.done
    abort = ctrl.submit(Abort(sqid=1, abort_cid=req.cid, cid=900))
    assert status(abort).ok
    assert req.done and status(req).sc == GenericStatus.ABORT_REQUESTED
    time.sleep(0.3)
    assert status(req).sc == GenericStatus.ABORT_REQUESTED


def test_delayed_request_dropped_by_reset(ctrl, ns, faults):
    faults.delay(0.1, opcode=NvmOpcode.WRITE)
    req = write(ctrl, 6, fill=0x44)
    ctrl.controller_reset()
    time.sleep(0.2)
    assert req.done and status(req).ok  # cancelled: no completion was filled in
    assert ns.data.read_bytes(6 * BS, BS) == bytes(BS)


def test_drop_never_completes_until_reset(ctrl, faults):
    faults.drop(opcode=NvmOpcode.READ, count=1)
    req = read(ctrl, 0)
    time.sleep(0.05)
    assert not req.done and req in faults.parked
    assert ctrl.outstanding[(1, req.cid)] is req
    assert status(read(ctrl, 1)).ok  # later commands are fine
    ctrl.controller_reset()
    assert req.done and (1, req.cid) not in ctrl.outstanding


def test_media_error_on_reads_of_given_lbas(ctrl, ns, subsystem, faults):
    faults.media_error(range(100, 104), nsid=1)
    faults.media_error(200, nsid=1)
    before = subsystem.health.media_errors
    req = read(ctrl, 96, 6)  # 96..101
    st = status(req)
    assert (st.sct, st.sc, st.dnr) == (StatusCodeType.MEDIA, MediaStatus.UNRECOVERED_READ_ERROR, True)
    entry = ErrorInformationEntry.decode(ctrl.error_log[0])
    assert entry.lba == 100 and entry.nsid == 1 and entry.cmdid == req.cid
    assert subsystem.health.media_errors == before + 1
    assert status(read(ctrl, 0, 8)).ok
    assert status(read(ctrl, 104, 8)).ok
    assert status(read(ctrl, 200)).sc == MediaStatus.UNRECOVERED_READ_ERROR
    # Writes and other commands of those blocks pass.
    assert status(write(ctrl, 100, 4)).ok
    if NvmOpcode.VERIFY in IO_COMMANDS:
        assert status(ctrl.submit(Verify(nsid=1, slba=103, nlb=0, cid=901), sqid=1)).sc == \
            MediaStatus.UNRECOVERED_READ_ERROR
    if NvmOpcode.COMPARE in IO_COMMANDS:
        cmp = ctrl.submit(Compare(nsid=1, slba=101, nlb=0, cid=902), sqid=1)
        assert status(cmp).sc == MediaStatus.UNRECOVERED_READ_ERROR


def test_media_error_on_copy_source(ctrl, faults):
    if NvmOpcode.COPY not in IO_COMMANDS:
        pytest.skip("Copy not implemented yet")
    faults.media_error(50, nsid=1)
    ranges = pack_copy_ranges([(10, 4), (48, 4)])
    req = ctrl.submit(CopyCommand(nsid=1, sdlba=300, nr=1, cid=903), sqid=1, data=ranges)
    assert status(req).sc == MediaStatus.UNRECOVERED_READ_ERROR
    assert ErrorInformationEntry.decode(ctrl.error_log[0]).lba == 50
    ranges = pack_copy_ranges([(10, 4)])
    assert status(ctrl.submit(CopyCommand(nsid=1, sdlba=300, nr=0, cid=904), sqid=1, data=ranges)).ok


def test_fatal_sets_cfs_and_keeps_the_command(ctrl, faults):
    faults.fatal(opcode=NvmOpcode.WRITE, count=1)
    assert not ctrl.regs.csts.cfs
    req = write(ctrl, 0)
    assert ctrl.regs.csts.cfs and not req.done
    ctrl.controller_reset()
    assert not ctrl.regs.csts.cfs and req.done
    enable(ctrl)
    assert status(write(ctrl, 0)).ok


def test_fault_on_fused_second_aborts_the_first(ctrl, ns, faults):
    if (NvmOpcode.COMPARE, NvmOpcode.WRITE) not in FUSED_COMMANDS:
        pytest.skip("fused Compare and Write not implemented yet")
    faults.fail(MediaStatus.WRITE_FAULT, opcode=NvmOpcode.WRITE)
    first = ctrl.submit(Compare(nsid=1, slba=0, nlb=0, cid=910, fuse=Fuse.FIRST), sqid=1)
    assert not first.done
    second = ctrl.submit(Write(nsid=1, slba=0, nlb=0, cid=911, fuse=Fuse.SECOND), sqid=1,
                         data=b"\x99" * BS)
    assert status(second).sc == MediaStatus.WRITE_FAULT
    assert first.done and status(first).sc == GenericStatus.ABORTED_FAILED_FUSED
    assert ns.data.read_bytes(0, BS) == bytes(BS)


def test_lba_set():
    lbas = LbaSet([range(10, 20), 5, range(18, 25), 30])
    assert lbas.intervals == [(5, 6), (10, 25), (30, 31)]
    assert lbas.first_in(0, 5) is None
    assert lbas.first_in(0, 6) == 5
    assert lbas.first_in(12, 100) == 12
    assert lbas.first_in(25, 5) is None
    assert 30 in lbas and 29 not in lbas
    with pytest.raises(ValueError):
        LbaSet(range(0, 10, 2))
    with pytest.raises(TypeError):
        LbaSet(["1"])


def test_rule_validation():
    with pytest.raises(ValueError):
        FaultRule(FaultAction.STATUS)  # no status
    with pytest.raises(ValueError):
        FaultRule(FaultAction.MEDIA)  # no LBAs
    with pytest.raises(ValueError):
        FaultRule("delay", seconds=-1)
    with pytest.raises(ValueError):
        FaultRule("explode")
