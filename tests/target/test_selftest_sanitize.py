"""Device Self-test (short, extended, abort, the log) and Sanitize (block
erase, overwrite, failure mode, command restrictions, the status log)."""

import threading
import time

import pytest

from nvmestack.spec.admin import (
    DeviceSelfTest,
    FirmwareCommit,
    FirmwareImageDownload,
    GetLogPage,
    Identify,
    NamespaceManagement,
    Sanitize,
)
from nvmestack.spec.identify import IdentifyController
from nvmestack.spec.log import (
    DeviceSelfTestLog,
    LogPageId,
    SanitizeStatus,
    SanitizeStatusLog,
)
from nvmestack.spec.log import SelfTestResultCode as R
from nvmestack.spec.registers import Reg
from nvmestack.spec.sqe import Command
from nvmestack.spec.status import CommandSpecificStatus as CS
from nvmestack.spec.status import GenericStatus as GS
from nvmestack.spec.status import MediaStatus
from nvmestack.target import Namespace
from nvmestack.target.admin_mgmt import fill_identify_controller
from nvmestack.target.backend import BackendError, MemoryBackend
from nvmestack.target.commands import LOG_PAGES
from nvmestack.target.errors import NvmeError
from nvmestack.target.firmware import FirmwareImage, ResetRequired

from .conftest import assert_status, enable, status

NSID_ALL = 0xFFFFFFFF
SANITIZE_DONE_EVENT = (6, 0x01, LogPageId.SANITIZE)


@pytest.fixture
def ops(subsystem):
    ops = subsystem.operations
    ops.short_self_test_seconds = 0.0
    ops.extended_self_test_seconds = 0.0
    ops.sanitize_seconds = 0.0
    return ops


def self_test(ctrl, stc, nsid=1):
    return ctrl.submit(DeviceSelfTest(stc=stc, nsid=nsid))


def dst_log(ctrl):
    return DeviceSelfTestLog.decode(LOG_PAGES[LogPageId.DEVICE_SELF_TEST](ctrl, None))


def san_log(ctrl):
    return SanitizeStatusLog.decode(LOG_PAGES[LogPageId.SANITIZE](ctrl, None))


def reset(ctrl):
    ctrl.set_property(Reg.CC, 4, 0)
    enable(ctrl)


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return False


# -- Device Self-test ------------------------------------------------------------------


@pytest.mark.parametrize("stc", [1, 2])
def test_self_test_passes_and_is_logged(ctrl, ns, ops, stc):
    ns.data.write_bytes(0, b"data" * 128)
    assert status(self_test(ctrl, stc)).ok
    assert ops.wait_self_test()
    page = dst_log(ctrl)
    assert page.current_operation == 0 and page.completion == 0
    first = page.result[0]
    assert (first.result, first.code) == (R.NO_ERROR, stc)
    assert first.vdi == 0 and first.seg == 0
    assert first.poh == int(ctrl.subsystem.health.power_on_seconds // 3600)
    assert all(page.result[i].result == R.UNUSED for i in range(1, 20))


def test_self_test_reports_an_uncorrectable_block(ctrl, ns, ops):
    ns.uncorrectable.update({77, 900})
    assert status(self_test(ctrl, 2, nsid=NSID_ALL)).ok
    assert ops.wait_self_test()
    r = dst_log(ctrl).result[0]
    assert r.result == R.KNOWN_SEGMENT_FAILED and r.code == 2 and r.seg == 7
    assert r.nsid_valid and r.flba_valid and r.sct_valid and r.sc_valid
    assert (r.nsid, r.flba, r.sct, r.sc) == (1, 77, 2, MediaStatus.UNRECOVERED_READ_ERROR)


def test_self_test_reports_a_media_read_failure(subsystem, ctrl, ops):
    class Failing(MemoryBackend):
        def readinto(self, offset, bufs):
            if offset <= 3 * 1024 * 1024 < offset + sum(b.nbytes for b in bufs):
                raise BackendError(5, "media")
            super().readinto(offset, bufs)

    subsystem.add_namespace(Namespace(2, 16384, backends=lambda role, size: Failing(size)))
    assert status(self_test(ctrl, 2, nsid=2)).ok
    assert ops.wait_self_test()
    r = dst_log(ctrl).result[0]
    assert r.result == R.KNOWN_SEGMENT_FAILED and (r.nsid, r.flba) == (2, 3 * 1024 * 1024 // 512)


def test_self_test_without_namespaces(ctrl, ns, ops):
    ns.uncorrectable.add(5)
    assert status(self_test(ctrl, 1, nsid=0)).ok  # controller only
    assert ops.wait_self_test()
    assert dst_log(ctrl).result[0].result == R.NO_ERROR


def test_in_progress_current_operation_and_abort(ctrl, ns, ops):
    ops.extended_self_test_seconds = 30
    assert status(self_test(ctrl, 2)).ok
    assert wait_for(lambda: dst_log(ctrl).completion > 0)
    page = dst_log(ctrl)
    assert page.current_operation == 2 and 0 < page.completion < 100
    assert_status(self_test(ctrl, 1), CS.DEVICE_SELF_TEST_IN_PROGRESS)
    assert_status(self_test(ctrl, 2), CS.DEVICE_SELF_TEST_IN_PROGRESS)
    assert status(self_test(ctrl, 0xF)).ok
    assert ops.wait_self_test(1)
    page = dst_log(ctrl)
    assert page.current_operation == 0
    assert (page.result[0].result, page.result[0].code) == (R.ABORTED_BY_COMMAND, 2)
    assert status(self_test(ctrl, 0xF)).ok  # nothing to abort: no effect


def test_invalid_self_test_code_and_namespace(subsystem, ctrl, ops):
    for stc in (0, 3, 0xE):
        assert_status(self_test(ctrl, stc), GS.INVALID_FIELD)
    # Valid but not active: Invalid Field; not a valid NSID: Invalid Namespace or Format.
    assert_status(self_test(ctrl, 1, nsid=5), GS.INVALID_FIELD)
    assert_status(self_test(ctrl, 1, nsid=subsystem.max_namespaces + 1), GS.INVALID_NAMESPACE_OR_FORMAT)
    subsystem.add_namespace(Namespace(2, 8), attach=False)
    assert_status(self_test(ctrl, 1, nsid=2), GS.INVALID_FIELD)


def test_log_keeps_the_20_newest_newest_first(ctrl, ops):
    for _ in range(21):
        assert status(self_test(ctrl, 1, nsid=0)).ok
        assert ops.wait_self_test()
    assert status(self_test(ctrl, 2, nsid=0)).ok
    assert ops.wait_self_test()
    page = dst_log(ctrl)
    codes = [page.result[i].code for i in range(20)]
    assert codes == [2] + [1] * 19
    assert all(page.result[i].result == R.NO_ERROR for i in range(20))


def test_reset_aborts_a_short_test_of_that_controller(subsystem, ctrl, ops):
    ops.short_self_test_seconds = 30
    other = enable(subsystem.add_controller())
    assert status(self_test(ctrl, 1)).ok
    reset(other)  # another controller's reset does not matter
    assert ops.self_test is not None
    reset(ctrl)
    assert ops.wait_self_test(2)
    assert dst_log(ctrl).result[0].result == R.ABORTED_BY_RESET


def test_extended_test_survives_a_controller_reset(ctrl, ops):
    ops.extended_self_test_seconds = 0.3
    assert status(self_test(ctrl, 2)).ok
    reset(ctrl)
    assert ops.self_test is not None
    assert ops.wait_self_test(5)
    assert dst_log(ctrl).result[0].result == R.NO_ERROR


def test_format_aborts_the_test(ctrl, ops):
    from nvmestack.spec.admin import FormatNvm

    ops.extended_self_test_seconds = 30
    assert status(self_test(ctrl, 2)).ok
    assert status(ctrl.submit(FormatNvm(nsid=1, lbaf=3))).ok
    assert ops.wait_self_test(2)
    assert dst_log(ctrl).result[0].result == R.ABORTED_FORMAT


def test_namespace_deletion_aborts_the_test(subsystem, ctrl, ops):
    ops.extended_self_test_seconds = 30
    assert status(self_test(ctrl, 2)).ok
    assert status(ctrl.submit(NamespaceManagement(sel=1, nsid=1))).ok
    assert ops.wait_self_test(2)
    assert dst_log(ctrl).result[0].result == R.ABORTED_NS_REMOVED


def test_identify_self_test_fields(ctrl, ops):
    ops.extended_self_test_seconds = 150
    idc = IdentifyController()
    fill_identify_controller(ctrl, idc)
    assert idc.edstt == 3 and idc.dsto == 1 and idc.oacs_self_test


# -- Sanitize --------------------------------------------------------------------------


def sanitize(ctrl, **fields):
    return ctrl.submit(Sanitize(**fields))


def test_block_erase(subsystem, ctrl, ns, ops):
    meta_ns = subsystem.add_namespace(Namespace(2, 64, lba_format=1))
    hidden = Namespace(3, 64)
    subsystem.add_namespace(hidden, attach=False)
    ns.data.write_bytes(4096, b"\x5A" * 512)
    meta_ns.meta.write_bytes(0, b"\x77" * 8)
    hidden.data.write_bytes(0, b"\x01" * 512)
    ns.uncorrectable.add(9)
    ctrl.pending_events.clear()
    req = sanitize(ctrl, sanact=2, ause=True)
    assert status(req).ok
    assert ops.wait_sanitize()
    assert ns.data.read_bytes(4096, 512) == bytes(512)
    assert meta_ns.meta.read_bytes(0, 8) == bytes(8)
    assert hidden.data.read_bytes(0, 512) == bytes(512)  # the whole NVM subsystem
    assert not ns.uncorrectable
    page = san_log(ctrl)
    assert page.sprog == 0xFFFF and page.status == SanitizeStatus.COMPLETED
    assert page.scdw10 == req.sqe.cdw10 and page.global_data_erased
    assert page.etbe >= 1 and page.etce == 0xFFFFFFFF
    assert SANITIZE_DONE_EVENT in ctrl.pending_events
    assert subsystem.command_gate is None
    # Writing clears Global Data Erased.
    ns.data.write_bytes(0, b"new")
    assert not san_log(ctrl).global_data_erased


@pytest.mark.parametrize("passes,invert,expect", [
    (1, False, 0x11223344),
    (2, False, 0x11223344),
    (2, True, 0x11223344 ^ 0xFFFFFFFF),
    (3, True, 0x11223344),
])
def test_overwrite_leaves_the_pattern_with_ndas(ctrl, ns, ops, passes, invert, expect):
    ns.data.write_bytes(0, b"\xEE" * 1024)
    req = sanitize(ctrl, sanact=3, owpass=passes, oipbp=invert, ovrpat=0x11223344, ndas=True)
    assert status(req).ok
    assert ops.wait_sanitize()
    word = expect.to_bytes(4, "little")
    assert ns.data.read_bytes(0, 1024) == word * 256
    assert ns.data.read_bytes(ns.data.size - 8, 8) == word * 2
    page = san_log(ctrl)
    assert page.status == SanitizeStatus.COMPLETED and page.passes == passes


def test_overwrite_without_ndas_deallocates(ctrl, ns, ops):
    ns.data.write_bytes(0, b"\xEE" * 1024)
    assert status(sanitize(ctrl, sanact=3, owpass=1, ovrpat=0xA5A5A5A5)).ok
    assert ops.wait_sanitize()
    assert ns.data.read_bytes(0, 1024) == bytes(1024)
    assert ns.data.allocated() == 0


def test_owpass_zero_means_16(ctrl, ops):
    assert status(sanitize(ctrl, sanact=3, owpass=0, ovrpat=1)).ok
    assert ops.wait_sanitize()
    assert san_log(ctrl).passes == 16


def test_crypto_erase_and_reserved_actions(ctrl, ops):
    for action in (0, 4, 5, 6, 7):
        assert_status(sanitize(ctrl, sanact=action), GS.INVALID_FIELD)
    assert san_log(ctrl).status == SanitizeStatus.NEVER_SANITIZED
    idc = IdentifyController()
    fill_identify_controller(ctrl, idc)
    assert idc.sanicap_bes and idc.sanicap_ows and not idc.sanicap_ces


def test_commands_during_sanitize(subsystem, ctrl, ns, ops):
    ops.sanitize_seconds = 30
    assert status(sanitize(ctrl, sanact=2)).ok
    assert wait_for(lambda: san_log(ctrl).sprog not in (0, 0xFFFF))
    page = san_log(ctrl)
    assert page.status == SanitizeStatus.IN_PROGRESS and 0 < page.sprog < 0xFFFF
    # Commands the sanitize operation does not allow.
    for sqe in (
        NamespaceManagement(sel=1, nsid=1),
        FirmwareCommit(fs=2, ca=0),
        FirmwareImageDownload(length=4),
        DeviceSelfTest(stc=1, nsid=1),
        Sanitize(sanact=2),
        Sanitize(sanact=1),
    ):
        assert_status(ctrl.submit(sqe), GS.SANITIZE_IN_PROGRESS, dnr=False)
    gate = subsystem.command_gate
    assert gate is not None

    def gated(sqe, sqid=0):
        req = ctrl.new_request(sqe, sqid)
        from nvmestack.spec.sqe import command_class

        req.cmd = command_class(req.admin, req.opcode).view(req.sqe._mv) if req.admin else req.sqe
        try:
            gate(ctrl, req)
        except NvmeError as err:
            return err.status.sc
        return None

    # I/O commands are all refused; the allowed admin commands and log pages pass.
    for opcode in (0x00, 0x01, 0x02, 0x08, 0x09):
        assert gated(Command(opcode=opcode, nsid=1), sqid=1) == GS.SANITIZE_IN_PROGRESS
    assert gated(Identify(cns=1)) is None
    assert gated(Command(opcode=0x18)) is None  # Keep Alive
    for lid in (1, 2, 4, 0x81):
        assert gated(GetLogPage(lid=lid, numd=0)) is None
    for lid in (3, 5, 6):
        assert gated(GetLogPage(lid=lid, numd=0)) == GS.SANITIZE_IN_PROGRESS
    assert gated(Command(opcode=0x80)) == GS.SANITIZE_IN_PROGRESS  # Format NVM
    # Through the dispatcher as well, for the registered commands.
    assert_status(ctrl.submit(Command(opcode=0x80, nsid=1)), GS.SANITIZE_IN_PROGRESS, dnr=False)
    # The operation continues across a controller reset.
    reset(ctrl)
    assert ops.sanitize_running
    ops.sanitize_seconds = 0
    assert ops.wait_sanitize()
    assert san_log(ctrl).status == SanitizeStatus.COMPLETED
    assert subsystem.command_gate is None
    assert status(self_test(ctrl, 1, nsid=0)).ok


def test_sanitize_aborts_a_self_test(ctrl, ops):
    ops.extended_self_test_seconds = 30
    assert status(self_test(ctrl, 2)).ok
    assert status(sanitize(ctrl, sanact=2)).ok
    assert ops.wait_sanitize() and ops.wait_self_test()
    assert dst_log(ctrl).result[0].result == R.ABORTED_SANITIZE


def test_unrestricted_failure_and_exit_failure_mode(subsystem, ctrl, ops):
    ops.sanitize_fault = True
    ctrl.pending_events.clear()
    assert status(sanitize(ctrl, sanact=2, ause=True)).ok
    assert ops.wait_sanitize()
    assert san_log(ctrl).status == SanitizeStatus.FAILED
    assert SANITIZE_DONE_EVENT not in ctrl.pending_events
    # Failure mode: refused commands fail with Sanitize Failed.
    assert_status(self_test(ctrl, 1), GS.SANITIZE_FAILED)
    assert status(sanitize(ctrl, sanact=1)).ok  # Exit Failure Mode
    assert subsystem.command_gate is None
    assert status(self_test(ctrl, 1, nsid=0)).ok
    assert status(sanitize(ctrl, sanact=1)).ok  # not in failure mode: no effect


def test_restricted_failure_needs_a_successful_sanitize(subsystem, ctrl, ops):
    ops.sanitize_fault = True
    assert status(sanitize(ctrl, sanact=2, ause=False)).ok
    assert ops.wait_sanitize()
    assert_status(sanitize(ctrl, sanact=1), GS.SANITIZE_FAILED)
    assert_status(sanitize(ctrl, sanact=2, ause=True), GS.INVALID_FIELD)
    assert_status(ctrl.submit(NamespaceManagement(sel=1, nsid=1)), GS.SANITIZE_FAILED)
    assert status(sanitize(ctrl, sanact=2, ause=False)).ok
    assert ops.wait_sanitize()
    assert san_log(ctrl).status == SanitizeStatus.COMPLETED
    assert subsystem.command_gate is None


@pytest.mark.parametrize("kind,code", [
    (ResetRequired.NONE, CS.FW_ACTIVATION_REQUIRES_CONTROLLER_LEVEL_RESET),
    (ResetRequired.CONVENTIONAL, CS.FW_ACTIVATION_REQUIRES_CONVENTIONAL_RESET),
    (ResetRequired.SUBSYSTEM, CS.FW_ACTIVATION_REQUIRES_NVM_SUBSYSTEM_RESET),
])
def test_pending_firmware_activation_blocks_sanitize(subsystem, ctrl, ops, kind, code):
    image = FirmwareImage.build("2.0", reset=kind, header=True)
    subsystem.firmware.download(ctrl.cntlid, 0, image)
    try:
        subsystem.firmware.commit(ctrl.cntlid, 2, 1)
    except NvmeError:
        pass
    assert_status(sanitize(ctrl, sanact=2), code)
    assert not ops.sanitize_running


def test_sanitize_completion_event_reaches_every_controller(subsystem, ctrl, ops):
    other = enable(subsystem.add_controller())
    other.pending_events.clear()
    ctrl.pending_events.clear()
    assert status(sanitize(ctrl, sanact=2)).ok
    assert ops.wait_sanitize()
    assert wait_for(lambda: SANITIZE_DONE_EVENT in other.pending_events)
    assert SANITIZE_DONE_EVENT in ctrl.pending_events


def test_completion_event_is_unmasked_by_reading_the_log(ctrl, ops):
    from nvmestack.spec.admin import AsyncEventRequest

    aer = ctrl.new_request(AsyncEventRequest(cid=1), 0)
    ctrl.add_aer(aer)
    assert status(sanitize(ctrl, sanact=2)).ok
    assert ops.wait_sanitize()
    assert aer.done and aer.cqe.dw0 == 6 | 1 << 8 | LogPageId.SANITIZE << 16
    ctrl.log_page_read(LogPageId.SANITIZE, retain=False)
    assert 6 not in ctrl.masked_event_types


def test_concurrent_io_never_sees_partial_state(subsystem, ctrl, ns, ops):
    # The sanitize thread and a writer racing: after completion every block is erased
    # or was written after completion (the gate stops commands meanwhile).
    ns.data.write_bytes(0, b"\x11" * 4096)
    ops.sanitize_seconds = 0.05
    stop = threading.Event()
    seen = []

    def reader():
        while not stop.is_set():
            seen.append(san_log(ctrl).sprog)

    t = threading.Thread(target=reader)
    t.start()
    assert status(sanitize(ctrl, sanact=2)).ok
    assert ops.wait_sanitize()
    stop.set()
    t.join()
    assert all(0 <= s <= 0xFFFF for s in seen)
    assert ns.data.read_bytes(0, 4096) == bytes(4096)


def _needs(opcode, admin=True):
    from nvmestack.target.commands import ADMIN_COMMANDS, IO_COMMANDS

    if opcode not in (ADMIN_COMMANDS if admin else IO_COMMANDS):
        pytest.skip(f"opcode {opcode:#x} not implemented")


def test_through_get_log_page_and_io_during_sanitize(ctrl, ns, ops):
    from nvmestack.spec.nvm import Read

    _needs(0x02)
    _needs(0x02, admin=False)
    ops.sanitize_seconds = 30
    assert status(sanitize(ctrl, sanact=2)).ok
    req = ctrl.submit(GetLogPage(lid=LogPageId.SANITIZE, length=512, nsid=NSID_ALL))
    assert status(req).ok
    assert SanitizeStatusLog.decode(bytes(req.data[0])).status == SanitizeStatus.IN_PROGRESS
    req = ctrl.submit(GetLogPage(lid=LogPageId.FW_SLOT, length=512, nsid=NSID_ALL))
    assert_status(req, GS.SANITIZE_IN_PROGRESS, dnr=False)
    req = ctrl.submit(Read(nsid=1, slba=0, nlb=0), sqid=1)
    assert_status(req, GS.SANITIZE_IN_PROGRESS, dnr=False)
    ops.sanitize_seconds = 0
    assert ops.wait_sanitize()
    req = ctrl.submit(Read(nsid=1, slba=0, nlb=0), sqid=1)
    assert status(req).ok and bytes(req.data[0]) == bytes(512)


def test_self_test_log_through_get_log_page(ctrl, ops):
    _needs(0x02)
    assert status(self_test(ctrl, 1, nsid=0)).ok
    assert ops.wait_self_test()
    req = ctrl.submit(GetLogPage(lid=LogPageId.DEVICE_SELF_TEST, length=DeviceSelfTestLog.SIZE, nsid=NSID_ALL))
    assert status(req).ok
    page = DeviceSelfTestLog.decode(bytes(req.data[0]))
    assert page.result[0].code == 1 and page.result[0].result == R.NO_ERROR
