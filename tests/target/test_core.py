"""The dispatch core: unknown opcodes, namespaces, command ids, async
events, the error log, controller registers."""

from nvmestack.spec.admin import KeepAlive
from nvmestack.spec.log import ErrorInformationEntry
from nvmestack.spec.registers import Reg, Shn, Shst
from nvmestack.spec.sqe import Command
from nvmestack.spec.status import GenericStatus, Status

from .conftest import enable


def test_unknown_admin_opcode_is_invalid_opcode_with_dnr(ctrl):
    req = ctrl.submit(Command(opcode=0x3E, cid=9))
    assert req.done
    st = Status.of(req.cqe)
    assert (st.sct, st.sc, st.dnr) == (0, GenericStatus.INVALID_OPCODE, True)
    assert req.cqe.cid == 9


def test_failed_command_goes_to_the_error_log(ctrl):
    ctrl.submit(Command(opcode=0x3E, cid=0x55, nsid=0))
    assert ctrl.error_count == 1
    entry = ErrorInformationEntry.decode(ctrl.error_log[0])
    assert entry.error_count == 1 and entry.cmdid == 0x55 and entry.sqid == 0
    assert entry.sc == GenericStatus.INVALID_OPCODE and entry.pel_byte == 0


def test_io_command_namespace_checks(ctrl, subsystem):
    # NSID 7 is valid (1..NN) but not active: Invalid Field.
    st = Status.of(ctrl.submit(Command(opcode=0x02, nsid=7), sqid=1).cqe)  # Read
    assert (st.sc, st.dnr) == (GenericStatus.INVALID_FIELD, True)
    # Beyond NN, or 0: Invalid Namespace or Format.
    for nsid in (0, subsystem.max_namespaces + 1, 0xFFFFFFFE):
        st = Status.of(ctrl.submit(Command(opcode=0x02, nsid=nsid), sqid=1).cqe)
        assert (st.sc, st.dnr) == (GenericStatus.INVALID_NAMESPACE_OR_FORMAT, True), nsid


def test_keep_alive_resets_timer(ctrl):
    ctrl.kato = 100
    ctrl.last_keep_alive -= 1
    assert ctrl.keep_alive_expired()
    req = ctrl.submit(KeepAlive())
    assert Status.of(req.cqe).ok
    assert not ctrl.keep_alive_expired()


def test_cc_enable_disable_and_shutdown(subsystem):
    ctrl = subsystem.add_controller()
    assert not ctrl.regs.csts.rdy
    enable(ctrl)
    ctrl.set_property(Reg.CC, 4, ctrl.regs.cc.value | (Shn.NORMAL << 14))
    assert ctrl.regs.csts.shst == Shst.COMPLETE
    ctrl.set_property(Reg.CC, 4, 0)
    assert not ctrl.regs.csts.rdy
    # Read-only registers ignore writes.
    cap = ctrl.get_property(Reg.CAP, 8)
    ctrl.set_property(Reg.CAP, 8, 0)
    assert ctrl.get_property(Reg.CAP, 8) == cap


def test_invalid_page_size_sets_cfs(subsystem):
    ctrl = subsystem.add_controller()
    ctrl.set_property(Reg.CC, 4, 1 | (15 << 7))  # MPS beyond CAP.MPSMAX
    assert ctrl.regs.csts.cfs and not ctrl.regs.csts.rdy


def test_a_command_reusing_an_outstanding_aer_s_cid_is_accepted(subsystem):
    """SPDK's detach: AER outstanding with CID x, another admin command with
    CID x, then Property Set CC.SHN (CID x): every one succeeds and the
    controller reports shutdown complete; the AER is dropped without a
    completion, and a later event goes to the next AER."""
    from nvmestack.spec.admin import AsyncEventRequest, Identify
    from nvmestack.spec.fabrics import PropertySet

    ctrl = enable(subsystem.add_controller(fabrics=True, hostnqn="nqn.2014-08.io.spdk:host"))
    completions = []
    aer = AsyncEventRequest()
    aer.cid = 7
    req = ctrl.new_request(aer, 0, completions.append)
    assert ctrl.prepare(req)
    ctrl.execute(req)
    assert not req.done and list(ctrl.aer_requests) == [req]
    ident = Identify(cns=1)
    ident.cid = 7
    assert Status.of(ctrl.submit(ident).cqe).ok
    shutdown = PropertySet(ofst=Reg.CC, value=ctrl.regs.cc.value | (Shn.NORMAL << 14))
    shutdown.cid = 7
    assert Status.of(ctrl.submit(shutdown).cqe).ok
    assert ctrl.regs.csts.shst == Shst.COMPLETE
    assert not completions and not ctrl.aer_requests and (0, 7) not in ctrl.outstanding
    assert ctrl.error_count == 0


def test_a_cid_still_running_is_a_command_id_conflict(ctrl):
    from nvmestack.spec.admin import Identify

    held = ctrl.new_request(KeepAlive(cid=9), 0)
    assert ctrl.prepare(held)  # prepared, not yet executed: still outstanding
    req = ctrl.submit(Identify(cns=1, cid=9))
    st = Status.of(req.cqe)
    assert (st.sct, st.sc, st.dnr) == (0, GenericStatus.COMMAND_ID_CONFLICT, True)
    # The running command is untouched.
    assert ctrl.outstanding[(0, 9)] is held
