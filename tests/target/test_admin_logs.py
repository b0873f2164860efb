"""Get Log Page (NVMe 2.0 base spec 5.16): length, offset and partial
reads, NSID scope, RAE, the unsupported-page status, and the pages built by
admin.py: Supported Log Pages (00h), Error Information (01h), Changed
Namespace List (04h), Commands Supported and Effects (05h)."""

import pytest

from nvmestack.spec.admin import AsyncEventRequest, GetLogPage, Identify, SetFeatures
from nvmestack.spec.features import FeatureId
from nvmestack.spec.log import (
    ChangedNamespaceList,
    CommandEffects,
    CommandsSupportedAndEffects,
    ErrorInformationEntry,
    LogPageId,
    SupportedLogPages,
)
from nvmestack.spec.opcodes import AdminOpcode, NvmOpcode
from nvmestack.spec.sqe import Command
from nvmestack.spec.status import CommandSpecificStatus, GenericStatus, Status
from nvmestack.target import Namespace
from nvmestack.target.commands import ADMIN_COMMANDS, IO_COMMANDS, LOG_PAGES
from nvmestack.target.controller import AsyncEventType

from .conftest import enable

NSID_ALL = 0xFFFFFFFF


def get_log(ctrl, lid, length=4096, offset=0, nsid=NSID_ALL, data=None, **fields):
    cmd = GetLogPage(lid=lid, length=length, nsid=nsid, **fields)
    cmd.lpol, cmd.lpou = offset & 0xFFFFFFFF, offset >> 32
    req = ctrl.submit(cmd, data=data)
    return Status.of(req.cqe), (bytes(req.data[0]) if req.data else b"")


def ok(ctrl, lid, **kw):
    st, data = get_log(ctrl, lid, **kw)
    assert st.ok, st
    return data


def fails(ctrl, code, lid, **kw):
    st, _ = get_log(ctrl, lid, **kw)
    assert (st.sct, st.sc, st.dnr) == (code.sct, code, True), st
    return st


def fail_command(ctrl, cid):
    ctrl.submit(Command(opcode=0x3E, cid=cid))  # Invalid Command Opcode


def aer(ctrl, cid):
    return ctrl.submit(AsyncEventRequest(cid=cid))


# ---------------------------------------------------------------- common rules


def test_unsupported_log_page_is_invalid_log_page(ctrl):
    st = fails(ctrl, CommandSpecificStatus.INVALID_LOG_PAGE, 0x7F)
    assert st.sct == 1 and st.sc == 0x09
    assert ErrorInformationEntry.decode(ctrl.error_log[0]).pel_byte == 40


@pytest.mark.parametrize("offset", [2, 4097, 4099])
def test_offset_not_dword_aligned_is_invalid_field(ctrl, offset):
    fails(ctrl, GenericStatus.INVALID_FIELD, LogPageId.ERROR, offset=offset, length=4)


@pytest.mark.parametrize("offset", [4096, 8192, 1 << 40])
def test_offset_beyond_the_page_is_invalid_field(ctrl, offset):
    fails(ctrl, GenericStatus.INVALID_FIELD, LogPageId.ERROR, offset=offset, length=4)
    fails(ctrl, GenericStatus.INVALID_FIELD, LogPageId.CMD_EFFECTS, offset=offset, length=4)


def test_index_offset_type_is_not_supported(ctrl):
    fails(ctrl, GenericStatus.INVALID_FIELD, LogPageId.ERROR, ot=True)


@pytest.mark.parametrize("lid", [LogPageId.ERROR, LogPageId.CHANGED_NS, LogPageId.CMD_EFFECTS,
                                 LogPageId.SUPPORTED_LOG_PAGES, LogPageId.SMART])
def test_controller_wide_pages_take_nsid_zero_or_all_only(ctrl, lid):
    ok(ctrl, lid, nsid=0)
    ok(ctrl, lid, nsid=NSID_ALL)
    fails(ctrl, GenericStatus.INVALID_FIELD, lid, nsid=1)


def test_transfer_larger_than_mdts_is_invalid_field(ctrl):
    fails(ctrl, GenericStatus.INVALID_FIELD, LogPageId.ERROR, length=ctrl.max_transfer + 4)


def test_partial_reads_and_zeroes_past_the_end(ctrl):
    fail_command(ctrl, 0x10)
    fail_command(ctrl, 0x20)
    whole = ok(ctrl, LogPageId.ERROR)
    assert len(whole) == 64 * 64
    # Any dword-aligned window of the page reads the same bytes.
    assert ok(ctrl, LogPageId.ERROR, offset=64, length=64) == whole[64:128]
    assert ok(ctrl, LogPageId.ERROR, offset=12, length=8) == whole[12:20]
    # A read running past the end of the page gets zeroes there.
    buf = bytearray(b"\xEE" * 256)
    tail = ok(ctrl, LogPageId.ERROR, offset=4096 - 128, length=256, data=buf)
    assert tail == whole[-128:] + bytes(128) and bytes(buf) == tail


def test_extended_length_uses_numdu(ctrl):
    fail_command(ctrl, 0x30)
    length = 4 * (0x10000 + 1)  # NUMD = 10000h: NUMDU = 1
    cmd = GetLogPage(lid=LogPageId.ERROR, length=length, nsid=NSID_ALL)
    assert cmd.numdu == 1 and cmd.numdl == 0
    data = ok(ctrl, LogPageId.ERROR, length=length)
    assert len(data) == length
    assert ErrorInformationEntry.decode(data).cmdid == 0x30
    assert data[4096:] == bytes(length - 4096)


def test_offset_upper_dword(ctrl):
    fails(ctrl, GenericStatus.INVALID_FIELD, LogPageId.ERROR, offset=(1 << 32) + 64, length=64)


# ---------------------------------------------------------------- 00h


def test_supported_log_pages(ctrl):
    page = SupportedLogPages.decode(ok(ctrl, LogPageId.SUPPORTED_LOG_PAGES, length=1024))
    for lid in (0x00, 0x01, 0x04, 0x05):
        assert page.is_supported(lid), lid
    # Every page the device builds, except the discovery log: that one is
    # only on discovery controllers.
    assert {lid for lid in range(256) if page.is_supported(lid)} == set(LOG_PAGES) - {LogPageId.DISCOVERY}
    assert not page.is_supported(0x07) and not page.is_supported(0x7F)
    assert not page.lid_support[1].ios  # no index offsets


# ---------------------------------------------------------------- 01h


def test_error_information_most_recent_first(ctrl):
    fail_command(ctrl, 0x11)
    fail_command(ctrl, 0x22)
    data = ok(ctrl, LogPageId.ERROR)
    first, second = ErrorInformationEntry.decode(data), ErrorInformationEntry.decode(data[64:])
    assert (first.cmdid, first.error_count) == (0x22, 2)
    assert (second.cmdid, second.error_count) == (0x11, 1)
    assert first.sc == GenericStatus.INVALID_OPCODE and first.sqid == 0 and first.dnr
    assert data[128:] == bytes(4096 - 128)  # entries no error filled are zero


def test_error_information_keeps_the_latest_64(ctrl):
    for cid in range(70):
        fail_command(ctrl, cid)
    data = ok(ctrl, LogPageId.ERROR)
    counts = [ErrorInformationEntry.decode(data[i * 64:]).error_count for i in range(64)]
    assert counts == list(range(70, 6, -1))


def test_error_event_is_cleared_by_reading_the_log(ctrl):
    first, second = aer(ctrl, 1), aer(ctrl, 2)
    ctrl.post_event(AsyncEventType.ERROR, 0x01, LogPageId.ERROR)
    assert first.done and first.cqe.dw0 == AsyncEventType.ERROR | 0x01 << 8 | LogPageId.ERROR << 16
    ctrl.post_event(AsyncEventType.ERROR, 0x02, LogPageId.ERROR)
    assert not second.done  # masked until the host reads the log
    ok(ctrl, LogPageId.ERROR, rae=True)
    assert not second.done  # RAE: the event stays
    ok(ctrl, LogPageId.ERROR, length=64)
    assert second.done and (second.cqe.dw0 >> 8) & 0xFF == 0x02


# ---------------------------------------------------------------- 04h


def test_changed_namespace_list_is_emptied_by_reading(subsystem, ctrl):
    subsystem.add_namespace(Namespace(5, 16))
    subsystem.add_namespace(Namespace(3, 16))
    page = ChangedNamespaceList.decode(ok(ctrl, LogPageId.CHANGED_NS))
    assert page.nsids() == [3, 5]
    assert ok(ctrl, LogPageId.CHANGED_NS) == bytes(4096)
    assert not ctrl.changed_namespaces


def test_changed_namespace_list_with_rae_keeps_the_event(subsystem, ctrl):
    assert Status.of(ctrl.submit(SetFeatures(fid=FeatureId.ASYNC_EVENT, cdw11=1 << 8)).cqe).ok
    first, second = aer(ctrl, 1), aer(ctrl, 2)
    subsystem.add_namespace(Namespace(2, 16))
    assert first.done and first.cqe.dw0 == AsyncEventType.NOTICE | LogPageId.CHANGED_NS << 16
    assert ChangedNamespaceList.decode(ok(ctrl, LogPageId.CHANGED_NS, rae=True)).nsids() == [2]
    subsystem.add_namespace(Namespace(4, 16))
    assert not second.done  # the notice is still masked: RAE retained it
    assert ChangedNamespaceList.decode(ok(ctrl, LogPageId.CHANGED_NS)).nsids() == [4]
    subsystem.add_namespace(Namespace(6, 16))
    assert second.done  # read with RAE cleared: the next notice comes


def test_changed_namespace_list_overflow(ctrl):
    ctrl.changed_namespaces.update(range(1, 1026))
    page = ChangedNamespaceList.decode(ok(ctrl, LogPageId.CHANGED_NS))
    assert page.overflow and list(page.nsid)[1:] == [0] * 1023
    assert not ctrl.changed_namespaces
    ctrl.changed_namespaces.update(range(1, 1025))  # exactly 1024 fit
    assert ChangedNamespaceList.decode(ok(ctrl, LogPageId.CHANGED_NS)).nsids() == list(range(1, 1025))


def test_changed_namespace_list_failed_read_keeps_the_list(ctrl):
    ctrl.changed_namespaces.add(9)
    fails(ctrl, GenericStatus.INVALID_FIELD, LogPageId.CHANGED_NS, offset=4096, length=4)
    assert ctrl.changed_namespaces == {9}


# ---------------------------------------------------------------- 05h


def test_commands_supported_and_effects(ctrl):
    page = CommandsSupportedAndEffects.decode(ok(ctrl, LogPageId.CMD_EFFECTS))
    for opcode, handler in ADMIN_COMMANDS.items():
        if opcode in (AdminOpcode.CREATE_IO_SQ, AdminOpcode.CREATE_IO_CQ,
                      AdminOpcode.DELETE_IO_SQ, AdminOpcode.DELETE_IO_CQ):
            continue
        assert page.acs[opcode].value == handler.effects | 1, hex(opcode)
    for opcode, handler in IO_COMMANDS.items():
        assert page.iocs[opcode].value == handler.effects | 1, hex(opcode)
    assert page.acs[AdminOpcode.IDENTIFY].csupp and not page.acs[AdminOpcode.IDENTIFY].lbcc
    assert page.acs[AdminOpcode.KEEP_ALIVE].value == 1
    assert not page.acs[0x3E].csupp and not page.iocs[0x7E].csupp
    # Without queue_ops there are no Create/Delete I/O queue commands.
    assert not page.acs[AdminOpcode.CREATE_IO_SQ].csupp
    # Commands that change logical block content say so; reads do not.
    for opcode in (NvmOpcode.WRITE, NvmOpcode.WRITE_UNCORRECTABLE, NvmOpcode.WRITE_ZEROES,
                   NvmOpcode.DATASET_MANAGEMENT, NvmOpcode.COPY):
        assert page.iocs[opcode].csupp and page.iocs[opcode].lbcc, hex(opcode)
    for opcode in (NvmOpcode.READ, NvmOpcode.COMPARE, NvmOpcode.VERIFY, NvmOpcode.FLUSH):
        assert page.iocs[opcode].csupp and not page.iocs[opcode].lbcc, hex(opcode)
    assert page.acs[AdminOpcode.FORMAT_NVM].lbcc and page.acs[AdminOpcode.NAMESPACE_MANAGEMENT].nic
    assert CommandEffects.decode(bytes(page)[4 * AdminOpcode.GET_LOG_PAGE:]).value == 1


def test_effects_of_admin_commands_in_admin_py():
    for opcode in (AdminOpcode.IDENTIFY, AdminOpcode.GET_LOG_PAGE, AdminOpcode.SET_FEATURES,
                   AdminOpcode.GET_FEATURES, AdminOpcode.ABORT, AdminOpcode.ASYNC_EVENT_REQUEST,
                   AdminOpcode.KEEP_ALIVE, AdminOpcode.CREATE_IO_SQ, AdminOpcode.CREATE_IO_CQ,
                   AdminOpcode.DELETE_IO_SQ, AdminOpcode.DELETE_IO_CQ):
        # None of them changes logical blocks, namespaces or capabilities,
        # nor needs the controller or a namespace to itself.
        assert ADMIN_COMMANDS[opcode].effects == 0


def test_effects_list_queue_commands_with_queue_ops(subsystem):
    class Ops:
        max_vectors = 4

    ctrl = enable(subsystem.add_controller(queue_ops=Ops()))
    page = CommandsSupportedAndEffects.decode(ok(ctrl, LogPageId.CMD_EFFECTS))
    for opcode in (AdminOpcode.CREATE_IO_SQ, AdminOpcode.CREATE_IO_CQ,
                   AdminOpcode.DELETE_IO_SQ, AdminOpcode.DELETE_IO_CQ):
        assert page.acs[opcode].value == 1


def test_no_io_commands_with_admin_only_command_set(ctrl):
    ctrl.regs.cc.css = 0x7
    page = ok(ctrl, LogPageId.CMD_EFFECTS)
    assert page[1024:2048] == bytes(1024)
    assert CommandsSupportedAndEffects.decode(page).acs[AdminOpcode.IDENTIFY].csupp


def test_get_log_page_does_not_disturb_other_commands(ctrl):
    ok(ctrl, LogPageId.ERROR)
    req = ctrl.submit(Identify(cns=1))
    assert Status.of(req.cqe).ok
