"""End-to-end acceptance tests: the host driver (NvmeController over a
PciTransport, and BlockDevice on top) against the device (the target's
PciFunction), in the device's "inline" and "thread" modes.

1. Admin passthrough of every admin command the device implements
   (``nvmestack.target.commands.ADMIN_COMMANDS``), each through
   ``ctrl.admin_passthru``, checking the status and the content.  Every
   case declares the opcodes it covers; ``test_every_admin_command_has_a_case``
   fails when the device gains an admin command no case covers, and each
   case checks (with a recording tracer) that it really sent the opcodes it
   claims through passthrough.
2. A stress test: worker threads on several I/O queues doing mixed reads and
   writes of random sizes (some scattered or misaligned) through BlockDevice
   while faults are injected (dropped completions, a controller fatal
   status, delayed completions); every block is then checked against a
   shadow copy, and no request may have completed twice.
"""

from __future__ import annotations

import collections
import random
import threading
import time

import pytest

from nvmestack.host import CtrlState, HostRequest, PciTransport
from nvmestack.host.block import BlockDevice
from nvmestack.spec.admin import (
    Abort,
    AsyncEventRequest,
    Cns,
    CreateIoCq,
    CreateIoSq,
    DeleteIoCq,
    DeleteIoSq,
    DeviceSelfTest,
    FeatureSelect,
    FirmwareCommit,
    FirmwareCommitAction,
    FirmwareImageDownload,
    FormatNvm,
    GetFeatures,
    GetLogPage,
    Identify,
    KeepAlive,
    NamespaceAttachment,
    NamespaceManagement,
    NsAttachmentSelect,
    NsManagementSelect,
    Sanitize,
    SanitizeAction,
    SecureEraseSetting,
    SelfTestCode,
    SetFeatures,
)
from nvmestack.spec.cqe import Completion
from nvmestack.spec.features import (
    ApstData,
    FeatureCapabilities,
    FeatureId,
    InterruptVectorConfiguration,
    LbaRangeTypeData,
    NumberOfQueues,
    TemperatureThreshold,
    ThresholdType,
    TimestampData,
    TimestampOrigin,
)
from nvmestack.spec.identify import (
    ControllerList,
    IdentifyController,
    IdentifyControllerNvm,
    IdentifyIoCommandSet,
    IdentifyNamespace,
    IdentifyNamespaceIndependent,
    IoCommandSetVector,
    NamespaceList,
    NidType,
    iter_ns_id_descriptors,
)
from nvmestack.spec.log import (
    ChangedNamespaceList,
    CommandsSupportedAndEffects,
    DeviceSelfTestLog,
    ErrorInformationEntry,
    FirmwareSlotLog,
    LogPageId,
    SanitizeStatus,
    SanitizeStatusLog,
    SelfTestOperation,
    SelfTestResultCode,
    SmartLog,
    SupportedLogPages,
)
from nvmestack.spec.nvm import Read, Write
from nvmestack.spec.opcodes import AdminOpcode, NvmOpcode
from nvmestack.spec.registers import CcCss, cq_head_doorbell, sq_tail_doorbell
from nvmestack.spec.status import CommandSpecificStatus, GenericStatus
from nvmestack.target import Namespace
from nvmestack.target.commands import ADMIN_COMMANDS, IO_COMMANDS, LOG_PAGES
from nvmestack.target.controller import ERROR_LOG_ENTRIES
from nvmestack.target.features import FEATURE_INFO, MAX_IO_QUEUES
from nvmestack.target.firmware import FirmwareImage, ResetRequired
from nvmestack.target.namespace import DEFAULT_LBA_FORMATS

from .conftest import NS_BLOCK_SIZE, NS_BLOCKS, pattern, wait_for

BS = NS_BLOCK_SIZE
NSID_ALL = 0xFFFFFFFF
LONG = 30.0  # generous bound for anything we wait for (a loaded 2-core machine)


# ---------------------------------------------------------------------------
# helpers


class PassthruRecorder:
    """A tracer that remembers the opcodes of the admin passthrough commands
    submitted (the case table's honesty check)."""

    enabled = True

    def __init__(self):
        self.opcodes: set[int] = set()

    def setup(self, req: HostRequest) -> None:
        if req.passthru and req.qid == 0:
            self.opcodes.add(req.opcode)

    def complete(self, req: HostRequest) -> None:
        pass


def expect(status, code=None):
    """Assert a status: success when ``code`` is None, else exactly that code."""
    if code is None:
        assert status.ok, f"expected success, got {status}"
    else:
        assert status.code is code, f"expected {code!r}, got {status}"


def identify(ctrl, cns, nsid=0, **fields):
    buf = bytearray(4096)
    status, _ = ctrl.admin_passthru(Identify(cns=cns, nsid=nsid, **fields), buf)
    return status, buf


def get_log(ctrl, lid, length, *, nsid=NSID_ALL, offset=0, rae=False):
    cmd = GetLogPage(lid=lid, nsid=nsid, rae=rae)
    cmd.length = length
    cmd.offset = offset
    buf = bytearray(length)
    status, _ = ctrl.admin_passthru(cmd, buf)
    return status, buf


def get_feature(ctrl, fid, sel=FeatureSelect.CURRENT, *, nsid=0, cdw11=0, size=0):
    buf = bytearray(size) if size and sel != FeatureSelect.SUPPORTED else None
    status, result = ctrl.admin_passthru(GetFeatures(fid=fid, sel=sel, nsid=nsid, cdw11=cdw11), buf)
    return status, result, buf


def set_feature(ctrl, fid, cdw11=0, *, nsid=0, save=False, data=None):
    return ctrl.admin_passthru(SetFeatures(fid=fid, nsid=nsid, sv=save, cdw11=cdw11), data)


def ns_list(buf) -> list[int]:
    return NamespaceList.from_bytes(buf).nsids()


def ctrl_list(buf) -> list[int]:
    cl = ControllerList.from_bytes(buf)
    return list(cl.identifiers[: cl.num])


def controller_list(*cntlids) -> bytes:
    return bytes(ControllerList.from_ids(cntlids))


def device_ctrl(ctrl):
    """The device side controller behind the host's controller."""
    return ctrl.transport.function.controller


def io_write(ctrl, slba, data):
    status, _ = ctrl.io_passthru(Write(nsid=1, slba=slba, nlb=len(data) // BS - 1), data)
    return status


def io_read(ctrl, slba, nblocks):
    buf = bytearray(nblocks * BS)
    status, _ = ctrl.io_passthru(Read(nsid=1, slba=slba, nlb=nblocks - 1), buf)
    return status, bytes(buf)


# ---------------------------------------------------------------------------
# the case table

ADMIN_CASES: dict[int, str] = {}  # opcode -> the case covering it
CASES: dict[str, tuple] = {}  # case name -> (function, opcodes)


def covers(*opcodes):
    """Register an admin passthrough case for ``opcodes``."""

    def decorate(func):
        for op in opcodes:
            ADMIN_CASES[int(op)] = func.__name__
        CASES[func.__name__] = (func, tuple(int(op) for op in opcodes))
        return func

    return decorate


class Env:
    """What a case gets: the fixtures, and a controller made on demand."""

    def __init__(self, make_controller, make_function, host_subsystem, pci_mode, monkeypatch):
        self.make_controller = make_controller
        self.make_function = make_function
        self.subsystem = host_subsystem
        self.mode = pci_mode
        self.monkeypatch = monkeypatch
        self.recorders: list[PassthruRecorder] = []

    def controller(self, function=None, **options):
        ctrl = self.make_controller(function, **options)
        rec = PassthruRecorder()
        ctrl.tracer = rec
        self.recorders.append(rec)
        return ctrl

    @property
    def sent(self) -> set[int]:
        out: set[int] = set()
        for rec in self.recorders:
            out |= rec.opcodes
        return out


# -- Identify ---------------------------------------------------------------


def _id_ns(ctrl, env):
    status, buf = identify(ctrl, Cns.NS, 1)
    expect(status)
    idn = IdentifyNamespace.from_bytes(buf)
    assert idn.nsze == idn.ncap == NS_BLOCKS and idn.lba_format.block_size == BS
    status, buf = identify(ctrl, Cns.NS, NSID_ALL)  # the common capabilities
    expect(status)
    common = IdentifyNamespace.from_bytes(buf)
    assert common.nsze == 0 and common.nlbaf == len(DEFAULT_LBA_FORMATS) - 1
    assert [common.lbaf[i].lbads for i in range(len(DEFAULT_LBA_FORMATS))] == [
        f.lbads for f in DEFAULT_LBA_FORMATS]
    status, buf = identify(ctrl, Cns.NS, 2)  # allocated, not attached: zeroes
    expect(status)
    assert not any(buf)
    expect(identify(ctrl, Cns.NS, 0)[0], GenericStatus.INVALID_NAMESPACE_OR_FORMAT)


def _id_ctrl(ctrl, env):
    status, buf = identify(ctrl, Cns.CTRL)
    expect(status)
    idc = IdentifyController.from_bytes(buf)
    assert idc.sn == "HOST0001" and idc.mn == "nvmestack host test"
    assert idc.cntlid == device_ctrl(ctrl).cntlid == ctrl.identify.cntlid
    assert idc.oacs_format and idc.oacs_fw and idc.oacs_ns_mgmt and idc.oacs_self_test
    assert idc.nn == env.subsystem.max_namespaces


def _id_active_list(ctrl, env):
    status, buf = identify(ctrl, Cns.NS_ACTIVE_LIST, 0)
    expect(status)
    assert ns_list(buf) == [1]
    status, buf = identify(ctrl, Cns.NS_ACTIVE_LIST, 1)  # NSIDs above 1
    expect(status)
    assert ns_list(buf) == []
    expect(identify(ctrl, Cns.NS_ACTIVE_LIST, 0xFFFFFFFE)[0], GenericStatus.INVALID_NAMESPACE_OR_FORMAT)


def _id_desc_list(ctrl, env):
    status, buf = identify(ctrl, Cns.NS_DESC_LIST, 1)
    expect(status)
    found = {d.nidt: bytes(d.nid) for d in iter_ns_id_descriptors(buf)}
    assert found[NidType.CSI] == b"\x00"
    ids = ctrl.namespaces[1].ids
    assert ids.csi == 0
    for nidt, name in ((NidType.EUI64, "eui64"), (NidType.NGUID, "nguid"), (NidType.UUID, "uuid")):
        assert found.get(nidt) == getattr(ids, name)
    expect(identify(ctrl, Cns.NS_DESC_LIST, 2)[0], GenericStatus.INVALID_FIELD)  # not active


def _id_csi_ns(ctrl, env):
    status, buf = identify(ctrl, Cns.CSI_NS, 1, csi=0)
    expect(status)
    assert not any(buf)
    expect(identify(ctrl, Cns.CSI_NS, 1, csi=2)[0], GenericStatus.INVALID_FIELD)


def _id_csi_ctrl(ctrl, env):
    status, buf = identify(ctrl, Cns.CSI_CTRL, 0, csi=0)
    expect(status)
    assert bytes(buf) == bytes(IdentifyControllerNvm())
    expect(identify(ctrl, Cns.CSI_CTRL, 0, csi=1)[0], GenericStatus.INVALID_FIELD)


def _id_csi_active_list(ctrl, env):
    status, buf = identify(ctrl, Cns.CSI_NS_ACTIVE_LIST, 0, csi=0)
    expect(status)
    assert ns_list(buf) == [1]


def _id_independent(ctrl, env):
    status, buf = identify(ctrl, Cns.CSI_INDEPENDENT_NS, 1)
    expect(status)
    ind = IdentifyNamespaceIndependent.from_bytes(buf)
    assert ind.nstat_ready
    status, buf = identify(ctrl, Cns.CSI_INDEPENDENT_NS, 2)
    expect(status)
    assert not any(buf)


def _id_allocated_list(ctrl, env):
    status, buf = identify(ctrl, Cns.ALLOCATED_NS_LIST, 0)
    expect(status)
    assert ns_list(buf) == [1, 2]


def _id_allocated_ns(ctrl, env):
    status, buf = identify(ctrl, Cns.ALLOCATED_NS, 2)
    expect(status)
    assert IdentifyNamespace.from_bytes(buf).nsze == 64
    status, buf = identify(ctrl, Cns.ALLOCATED_NS, 3)  # not allocated
    expect(status)
    assert not any(buf)


def _id_ns_ctrl_list(ctrl, env):
    cntlid = ctrl.identify.cntlid
    status, buf = identify(ctrl, Cns.NS_CTRL_LIST, 1)
    expect(status)
    assert ctrl_list(buf) == [cntlid]
    status, buf = identify(ctrl, Cns.NS_CTRL_LIST, 2)
    expect(status)
    assert ctrl_list(buf) == []


def _id_ctrl_list(ctrl, env):
    status, buf = identify(ctrl, Cns.CTRL_LIST)
    expect(status)
    assert ctrl.identify.cntlid in ctrl_list(buf)
    status, buf = identify(ctrl, Cns.CTRL_LIST, cntid=ctrl.identify.cntlid + 1)
    expect(status)
    assert ctrl.identify.cntlid not in ctrl_list(buf)


def _id_csi_allocated_list(ctrl, env):
    status, buf = identify(ctrl, Cns.CSI_ALLOCATED_NS_LIST, 0, csi=0)
    expect(status)
    assert ns_list(buf) == [1, 2]
    expect(identify(ctrl, Cns.CSI_ALLOCATED_NS_LIST, 0, csi=2)[0], GenericStatus.INVALID_FIELD)


def _id_csi_allocated_ns(ctrl, env):
    status, buf = identify(ctrl, Cns.CSI_ALLOCATED_NS, 2, csi=0)
    expect(status)
    assert not any(buf)  # the NVM command set specific structure: all zeroes here
    expect(identify(ctrl, Cns.CSI_ALLOCATED_NS, 2, csi=2)[0], GenericStatus.INVALID_FIELD)


def _id_command_sets(ctrl, env):
    status, buf = identify(ctrl, Cns.COMMAND_SET_STRUCTURE, cntid=0xFFFF)
    expect(status)
    assert IdentifyIoCommandSet.from_bytes(buf).combinations() == [IoCommandSetVector.NVM]


IDENTIFY_CASES = {
    Cns.NS: _id_ns,
    Cns.CTRL: _id_ctrl,
    Cns.NS_ACTIVE_LIST: _id_active_list,
    Cns.NS_DESC_LIST: _id_desc_list,
    Cns.CSI_NS: _id_csi_ns,
    Cns.CSI_CTRL: _id_csi_ctrl,
    Cns.CSI_NS_ACTIVE_LIST: _id_csi_active_list,
    Cns.CSI_INDEPENDENT_NS: _id_independent,
    Cns.ALLOCATED_NS_LIST: _id_allocated_list,
    Cns.ALLOCATED_NS: _id_allocated_ns,
    Cns.NS_CTRL_LIST: _id_ns_ctrl_list,
    Cns.CTRL_LIST: _id_ctrl_list,
    Cns.CSI_ALLOCATED_NS_LIST: _id_csi_allocated_list,
    Cns.CSI_ALLOCATED_NS: _id_csi_allocated_ns,
    Cns.COMMAND_SET_STRUCTURE: _id_command_sets,
}


def _supported_cns() -> set[int]:
    from nvmestack.target import admin

    return {int(c) for c in admin._IDENTIFY}


@covers(AdminOpcode.IDENTIFY)
def case_identify(env):
    ctrl = env.controller()
    # An allocated namespace that is not attached to any controller.
    env.subsystem.add_namespace(Namespace(2, 64), attach=False)
    missing = _supported_cns() - {int(c) for c in IDENTIFY_CASES}
    assert not missing, f"Identify CNS without an e2e case: {sorted(hex(c) for c in missing)}"
    for cns in sorted(_supported_cns()):
        IDENTIFY_CASES[cns](ctrl, env)
    # A CNS the device does not implement.
    unsupported = next(c for c in Cns if int(c) not in _supported_cns())
    expect(identify(ctrl, unsupported)[0], GenericStatus.INVALID_FIELD)


# -- Get Log Page ------------------------------------------------------------


def _log_supported(ctrl, env):
    status, buf = get_log(ctrl, LogPageId.SUPPORTED_LOG_PAGES, SupportedLogPages.SIZE)
    expect(status)
    page = SupportedLogPages.from_bytes(buf)
    supported = {lid for lid in range(256) if page.is_supported(lid)}
    # Every page the device builds (the Discovery log page only matters to a
    # discovery controller: whether an I/O controller lists it is not checked).
    assert set(LOG_PAGES) - {LogPageId.DISCOVERY} <= supported <= set(LOG_PAGES)
    assert LogPageId.SUPPORTED_LOG_PAGES in supported and not page.is_supported(0x7E)


def _log_error(ctrl, env):
    expect(identify(ctrl, 0x04)[0], GenericStatus.INVALID_FIELD)  # leaves an error entry
    size = ErrorInformationEntry.SIZE * ERROR_LOG_ENTRIES
    assert ctrl.identify.elpe + 1 == ERROR_LOG_ENTRIES
    status, buf = get_log(ctrl, LogPageId.ERROR, size)
    expect(status)
    newest = ErrorInformationEntry.from_bytes(buf[: ErrorInformationEntry.SIZE])
    assert newest.error_count > 0
    assert newest.sqid == 0 and newest.sc == GenericStatus.INVALID_FIELD.value & 0xFF
    # A partial read at an offset: the second entry.
    status, part = get_log(ctrl, LogPageId.ERROR, ErrorInformationEntry.SIZE, offset=ErrorInformationEntry.SIZE)
    expect(status)
    assert bytes(part) == bytes(buf[ErrorInformationEntry.SIZE: 2 * ErrorInformationEntry.SIZE])
    expect(get_log(ctrl, LogPageId.ERROR, 64, offset=size)[0], GenericStatus.INVALID_FIELD)  # beyond the page


def _log_smart(ctrl, env):
    before_status, before = get_log(ctrl, LogPageId.SMART, SmartLog.SIZE)
    expect(before_status)
    expect(io_write(ctrl, 10, pattern(4 * BS, 1)))
    status, buf = get_log(ctrl, LogPageId.SMART, SmartLog.SIZE)
    expect(status)
    smart = SmartLog.from_bytes(buf)
    assert smart.avail_spare == 100 and smart.critical_warning == 0
    assert smart.temperature == env.subsystem.health.temperature
    assert smart.host_writes == SmartLog.from_bytes(before).host_writes + 1
    expect(get_log(ctrl, LogPageId.SMART, SmartLog.SIZE, nsid=1)[0], GenericStatus.INVALID_FIELD)


def _log_fw_slot(ctrl, env):
    status, buf = get_log(ctrl, LogPageId.FW_SLOT, FirmwareSlotLog.SIZE)
    expect(status)
    page = FirmwareSlotLog.from_bytes(buf)
    assert page.active_slot == 1 and page.next_slot == 0
    assert page.frs(1) == ctrl.identify.fr == "1.0"


def _log_changed_ns(ctrl, env):
    status, buf = get_log(ctrl, LogPageId.CHANGED_NS, ChangedNamespaceList.SIZE)
    expect(status)
    assert not ChangedNamespaceList.from_bytes(buf).overflow


def _log_effects(ctrl, env):
    status, buf = get_log(ctrl, LogPageId.CMD_EFFECTS, CommandsSupportedAndEffects.SIZE)
    expect(status)
    page = CommandsSupportedAndEffects.from_bytes(buf)
    for opcode, handler in ADMIN_COMMANDS.items():
        assert page.acs[opcode].csupp, f"admin opcode {opcode:#x}"
        assert page.acs[opcode].value == handler.effects | 1
    for opcode, handler in IO_COMMANDS.items():
        assert page.iocs[opcode].value == handler.effects | 1
    assert not page.acs[0xC5].csupp


def _log_self_test(ctrl, env):
    status, buf = get_log(ctrl, LogPageId.DEVICE_SELF_TEST, DeviceSelfTestLog.SIZE)
    expect(status)
    page = DeviceSelfTestLog.from_bytes(buf)
    assert page.current_operation == SelfTestOperation.NONE
    assert all(page.result[i].result == SelfTestResultCode.UNUSED for i in range(20))


def _log_sanitize(ctrl, env):
    status, buf = get_log(ctrl, LogPageId.SANITIZE, SanitizeStatusLog.SIZE)
    expect(status)
    page = SanitizeStatusLog.from_bytes(buf)
    assert page.sprog == 0xFFFF and page.status == SanitizeStatus.NEVER_SANITIZED


def _log_discovery(ctrl, env):
    # Only a discovery controller (NVMe over Fabrics) has it.
    expect(get_log(ctrl, LogPageId.DISCOVERY, 1024)[0], CommandSpecificStatus.INVALID_LOG_PAGE)


LOG_CASES = {
    LogPageId.SUPPORTED_LOG_PAGES: _log_supported,
    LogPageId.ERROR: _log_error,
    LogPageId.SMART: _log_smart,
    LogPageId.FW_SLOT: _log_fw_slot,
    LogPageId.CHANGED_NS: _log_changed_ns,
    LogPageId.CMD_EFFECTS: _log_effects,
    LogPageId.DEVICE_SELF_TEST: _log_self_test,
    LogPageId.SANITIZE: _log_sanitize,
    LogPageId.DISCOVERY: _log_discovery,
}


@covers(AdminOpcode.GET_LOG_PAGE)
def case_get_log_page(env):
    ctrl = env.controller()
    missing = set(LOG_PAGES) - {int(lid) for lid in LOG_CASES}
    assert not missing, f"log pages without an e2e case: {sorted(hex(lid) for lid in missing)}"
    for lid in sorted(LOG_PAGES):
        LOG_CASES[lid](ctrl, env)
    expect(get_log(ctrl, 0x7E, 512)[0], CommandSpecificStatus.INVALID_LOG_PAGE)


# -- Set / Get Features -------------------------------------------------------

_SELECTS = (FeatureSelect.CURRENT, FeatureSelect.DEFAULT, FeatureSelect.SAVED)


def _dword_feature(ctrl, fid, value, *, default, current=None, saved_value=None, nsid=0, cdw11=0):
    """Round trip of a plain dword feature through every select value:
    default reads ``default``, set changes current only, a save (if
    saveable) changes saved too; the value found at first is restored."""
    info = FEATURE_INFO[fid]
    st, original, _ = get_feature(ctrl, fid, FeatureSelect.CURRENT, nsid=nsid, cdw11=cdw11)
    expect(st)
    if current is not None:
        assert original == current
    st, dflt, _ = get_feature(ctrl, fid, FeatureSelect.DEFAULT, nsid=nsid, cdw11=cdw11)
    expect(st)
    assert dflt == default
    st, saved, _ = get_feature(ctrl, fid, FeatureSelect.SAVED, nsid=nsid, cdw11=cdw11)
    expect(st)
    assert saved == default  # nothing saved yet
    expect(set_feature(ctrl, fid, value, nsid=nsid)[0])
    st, now, _ = get_feature(ctrl, fid, FeatureSelect.CURRENT, nsid=nsid, cdw11=cdw11)
    expect(st)
    assert now == value
    assert get_feature(ctrl, fid, FeatureSelect.DEFAULT, nsid=nsid, cdw11=cdw11)[1] == default
    assert get_feature(ctrl, fid, FeatureSelect.SAVED, nsid=nsid, cdw11=cdw11)[1] == default
    if info.saveable:
        sv = value if saved_value is None else saved_value
        expect(set_feature(ctrl, fid, sv, nsid=nsid, save=True)[0])
        assert get_feature(ctrl, fid, FeatureSelect.SAVED, nsid=nsid, cdw11=cdw11)[1] == sv
        assert get_feature(ctrl, fid, FeatureSelect.CURRENT, nsid=nsid, cdw11=cdw11)[1] == sv
    else:
        expect(set_feature(ctrl, fid, value, nsid=nsid, save=True)[0],
               CommandSpecificStatus.FEATURE_ID_NOT_SAVEABLE)
    expect(set_feature(ctrl, fid, original if not cdw11 else (original & 0xFFFF) | (cdw11 & ~0xFFFF),
                       nsid=nsid)[0])


def _f_arbitration(ctrl, env):
    _dword_feature(ctrl, FeatureId.ARBITRATION, 0x01020303, default=0x7, saved_value=0x04050602)


def _f_power(ctrl, env):
    _dword_feature(ctrl, FeatureId.POWER_MGMT, 1 << 5, default=0)  # PS 0, workload hint 1
    expect(set_feature(ctrl, FeatureId.POWER_MGMT, 1)[0], GenericStatus.INVALID_FIELD)  # PS 1: none


def _f_lba_range(ctrl, env):
    st, result, buf = get_feature(ctrl, FeatureId.LBA_RANGE, nsid=1, size=LbaRangeTypeData.SIZE)
    expect(st)
    assert result == 0  # one range (0's based)
    entry = LbaRangeTypeData.from_bytes(buf).entry[0]
    assert entry.slba == 0 and entry.nlb == NS_BLOCKS - 1 and entry.overwrite
    for sel in (FeatureSelect.DEFAULT, FeatureSelect.SAVED):
        st, _, other = get_feature(ctrl, FeatureId.LBA_RANGE, sel, nsid=1, size=LbaRangeTypeData.SIZE)
        expect(st)
        assert other == buf
    expect(get_feature(ctrl, FeatureId.LBA_RANGE, nsid=0, size=LbaRangeTypeData.SIZE)[0],
           GenericStatus.INVALID_NAMESPACE_OR_FORMAT)
    expect(set_feature(ctrl, FeatureId.LBA_RANGE, 0, nsid=1, data=bytes(buf))[0],
           CommandSpecificStatus.FEATURE_NOT_CHANGEABLE)


def _f_temperature(ctrl, env):
    warning = env.subsystem.health.warning_temperature
    over = TemperatureThreshold(tmpsel=0, thsel=ThresholdType.OVER)
    under = TemperatureThreshold(tmpsel=0, thsel=ThresholdType.UNDER)
    # Thresholds that keep the current temperature (313 K) inside them: no warning.
    _dword_feature(ctrl, FeatureId.TEMP_THRESH, TemperatureThreshold(tmpth=360, tmpsel=0).dword,
                   default=TemperatureThreshold(tmpth=warning, tmpsel=0).dword, cdw11=over.dword,
                   saved_value=TemperatureThreshold(tmpth=355, tmpsel=0).dword)
    value = TemperatureThreshold(tmpth=250, tmpsel=0, thsel=ThresholdType.UNDER).dword
    expect(set_feature(ctrl, FeatureId.TEMP_THRESH, value)[0])
    assert get_feature(ctrl, FeatureId.TEMP_THRESH, cdw11=under.dword)[1] == value
    assert get_feature(ctrl, FeatureId.TEMP_THRESH, FeatureSelect.DEFAULT, cdw11=under.dword)[1] == under.dword
    expect(set_feature(ctrl, FeatureId.TEMP_THRESH, under.dword)[0])
    expect(get_feature(ctrl, FeatureId.TEMP_THRESH, cdw11=TemperatureThreshold(tmpsel=9).dword)[0],
           GenericStatus.INVALID_FIELD)
    status, buf = get_log(ctrl, LogPageId.SMART, SmartLog.SIZE)
    expect(status)
    assert SmartLog.from_bytes(buf).critical_warning == 0


def _f_error_recovery(ctrl, env):
    _dword_feature(ctrl, FeatureId.ERR_RECOVERY, 5, default=0, nsid=1, saved_value=7)
    expect(get_feature(ctrl, FeatureId.ERR_RECOVERY, nsid=0)[0], GenericStatus.INVALID_NAMESPACE_OR_FORMAT)


def _f_write_cache(ctrl, env):
    _dword_feature(ctrl, FeatureId.VOLATILE_WC, 0, default=1, current=1, saved_value=1)


def _f_num_queues(ctrl, env):
    st, result, _ = get_feature(ctrl, FeatureId.NUM_QUEUES)
    expect(st)
    granted = NumberOfQueues.from_dword(result)
    assert granted.sq_count == granted.cq_count == ctrl.queues_granted
    st, result, _ = get_feature(ctrl, FeatureId.NUM_QUEUES, FeatureSelect.DEFAULT)
    expect(st)
    assert NumberOfQueues.from_dword(result).sq_count == MAX_IO_QUEUES
    expect(get_feature(ctrl, FeatureId.NUM_QUEUES, FeatureSelect.SAVED)[0])
    # The I/O queues exist: too late to change the count.
    expect(set_feature(ctrl, FeatureId.NUM_QUEUES, 3 | 3 << 16)[0], GenericStatus.COMMAND_SEQUENCE_ERROR)
    expect(set_feature(ctrl, FeatureId.NUM_QUEUES, 3 | 3 << 16, save=True)[0],
           CommandSpecificStatus.FEATURE_ID_NOT_SAVEABLE)


def _f_irq_coalesce(ctrl, env):
    _dword_feature(ctrl, FeatureId.IRQ_COALESCE, 0x0100, default=0, current=0, saved_value=0)


def _f_irq_config(ctrl, env):
    iv1 = InterruptVectorConfiguration(iv=1).dword
    _dword_feature(ctrl, FeatureId.IRQ_CONFIG, InterruptVectorConfiguration(iv=1, cd=True).dword,
                   default=iv1, current=iv1, cdw11=iv1)
    st, result, _ = get_feature(ctrl, FeatureId.IRQ_CONFIG, FeatureSelect.DEFAULT, cdw11=0)
    expect(st)
    assert InterruptVectorConfiguration.from_dword(result).cd  # the admin vector is never coalesced
    expect(get_feature(ctrl, FeatureId.IRQ_CONFIG, cdw11=0xFFFF)[0], GenericStatus.INVALID_FIELD)


def _f_write_atomic(ctrl, env):
    _dword_feature(ctrl, FeatureId.WRITE_ATOMIC, 1, default=0, current=0, saved_value=0)


def _f_async_event(ctrl, env):
    # What the driver configured: the notices OAES names (namespace attribute,
    # firmware activation) and the SMART warnings the device defines (bits
    # 4:0; bit 5 only with a Persistent Memory Region, which it has not).
    _dword_feature(ctrl, FeatureId.ASYNC_EVENT, 1 << 8, default=0, current=(1 << 8) | (1 << 9) | 0x1F,
                   saved_value=(1 << 8) | (1 << 9) | 0x1F)


def _f_apst(ctrl, env):
    fid = FeatureId.AUTO_PST
    st, result, buf = get_feature(ctrl, fid, size=ApstData.SIZE)
    expect(st)
    assert result == 0 and not any(buf)
    table = ApstData()
    table.entry[0].itpt = 100
    table.entry[0].itps = 0
    expect(set_feature(ctrl, fid, 1, data=bytes(table))[0])
    st, result, buf = get_feature(ctrl, fid, size=ApstData.SIZE)
    expect(st)
    assert result == 1 and bytes(buf) == bytes(table)
    for sel in (FeatureSelect.DEFAULT, FeatureSelect.SAVED):
        st, result, other = get_feature(ctrl, fid, sel, size=ApstData.SIZE)
        expect(st)
        assert result == 0 and not any(other)
    expect(set_feature(ctrl, fid, 1, save=True, data=bytes(table))[0])
    st, result, other = get_feature(ctrl, fid, FeatureSelect.SAVED, size=ApstData.SIZE)
    assert result == 1 and bytes(other) == bytes(table)
    bad = ApstData()
    bad.entry[0].itps = 1  # no power state 1
    expect(set_feature(ctrl, fid, 1, data=bytes(bad))[0], GenericStatus.INVALID_FIELD)
    expect(set_feature(ctrl, fid, 0, data=bytes(ApstData()))[0])


def _f_timestamp(ctrl, env):
    fid = FeatureId.TIMESTAMP
    stamp = 1_700_000_000_000
    ts = TimestampData()
    ts.timestamp = stamp
    expect(set_feature(ctrl, fid, data=bytes(ts))[0])
    st, _, buf = get_feature(ctrl, fid, size=TimestampData.SIZE)
    expect(st)
    got = TimestampData.from_bytes(buf)
    assert stamp <= got.timestamp < stamp + 3_600_000 and got.origin == TimestampOrigin.SET_FEATURES
    for sel in (FeatureSelect.DEFAULT, FeatureSelect.SAVED):
        st, _, buf = get_feature(ctrl, fid, sel, size=TimestampData.SIZE)
        expect(st)
        assert not any(buf)
    expect(set_feature(ctrl, fid, save=True, data=bytes(ts))[0], CommandSpecificStatus.FEATURE_ID_NOT_SAVEABLE)


def _f_kato(ctrl, env):
    _dword_feature(ctrl, FeatureId.KATO, 60000, default=0, current=0)
    assert device_ctrl(ctrl).kato == 0


def _f_iocs_profile(ctrl, env):
    # The driver enabled with CC.CSS 110b (CAP.CSS.IOCSS): combination 0,
    # the NVM command set, is the only one; index 1 names a 0h combination.
    assert ctrl.css == CcCss.ALL_IOCS and device_ctrl(ctrl).regs.cc.css == CcCss.ALL_IOCS
    for sel in (FeatureSelect.CURRENT, FeatureSelect.DEFAULT, FeatureSelect.SAVED):
        st, result, _ = get_feature(ctrl, FeatureId.IOCS_PROFILE, sel)
        expect(st)
        assert result == 0
    expect(set_feature(ctrl, FeatureId.IOCS_PROFILE, 0)[0])
    expect(set_feature(ctrl, FeatureId.IOCS_PROFILE, 1)[0], CommandSpecificStatus.IOCS_COMBINATION_REJECTED)
    expect(set_feature(ctrl, FeatureId.IOCS_PROFILE, 0, save=True)[0], CommandSpecificStatus.FEATURE_ID_NOT_SAVEABLE)


def _f_host_id(ctrl, env):
    fid = FeatureId.HOST_ID
    for sel in _SELECTS:
        st, result, buf = get_feature(ctrl, fid, sel, cdw11=1, size=16)
        expect(st)
        assert result == 1 and not any(buf)
    # The I/O queues exist: the Host Identifier cannot change now.
    expect(set_feature(ctrl, fid, 1, data=bytes(range(1, 17)))[0], GenericStatus.COMMAND_SEQUENCE_ERROR)


FEATURE_CASES = {
    FeatureId.ARBITRATION: _f_arbitration,
    FeatureId.POWER_MGMT: _f_power,
    FeatureId.LBA_RANGE: _f_lba_range,
    FeatureId.TEMP_THRESH: _f_temperature,
    FeatureId.ERR_RECOVERY: _f_error_recovery,
    FeatureId.VOLATILE_WC: _f_write_cache,
    FeatureId.NUM_QUEUES: _f_num_queues,
    FeatureId.IRQ_COALESCE: _f_irq_coalesce,
    FeatureId.IRQ_CONFIG: _f_irq_config,
    FeatureId.WRITE_ATOMIC: _f_write_atomic,
    FeatureId.ASYNC_EVENT: _f_async_event,
    FeatureId.AUTO_PST: _f_apst,
    FeatureId.TIMESTAMP: _f_timestamp,
    FeatureId.KATO: _f_kato,
    FeatureId.HOST_ID: _f_host_id,
    FeatureId.IOCS_PROFILE: _f_iocs_profile,
}


@covers(AdminOpcode.SET_FEATURES, AdminOpcode.GET_FEATURES)
def case_features(env):
    ctrl = env.controller()
    missing = set(FEATURE_INFO) - {int(f) for f in FEATURE_CASES}
    assert not missing, f"features without an e2e case: {sorted(hex(f) for f in missing)}"
    for fid, info in sorted(FEATURE_INFO.items()):
        # Select 11b: the capabilities, for every feature.
        st, caps, _ = get_feature(ctrl, fid, FeatureSelect.SUPPORTED, nsid=1 if info.ns_specific else 0)
        expect(st)
        assert caps == info.capabilities
        c = FeatureCapabilities.from_dword(caps)
        assert (c.saveable, c.ns_specific, c.changeable) == (info.saveable, info.ns_specific, info.changeable)
    for fid in sorted(FEATURE_INFO):
        FEATURE_CASES[fid](ctrl, env)
    expect(get_feature(ctrl, 0x7D)[0], GenericStatus.INVALID_FIELD)  # not implemented
    expect(set_feature(ctrl, 0x7D)[0], GenericStatus.INVALID_FIELD)
    expect(get_feature(ctrl, FeatureId.ARBITRATION, 4)[0], GenericStatus.INVALID_FIELD)  # reserved select
    expect(set_feature(ctrl, FeatureId.ARBITRATION, 7, nsid=1)[0],
           CommandSpecificStatus.FEATURE_NOT_NAMESPACE_SPECIFIC)
    # The driver still works after all that.
    data = pattern(8 * BS, 3)
    expect(io_write(ctrl, 100, data))
    assert io_read(ctrl, 100, 8) == (io_read(ctrl, 100, 8)[0], data)


# -- Asynchronous Event Request, Abort, Keep Alive ----------------------------


def passthru_in_thread(ctrl, cmd, data=None):
    """admin_passthru on a thread (for a command that stays outstanding):
    (thread, dict whose "r" is the (status, result) once done)."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", ctrl.admin_passthru(cmd, data)), daemon=True)
    thread.start()
    return thread, out


def _aers(ctrl):
    return [r for r in ctrl.admin_queue.snapshot() if r.opcode == AdminOpcode.ASYNC_EVENT_REQUEST]


@covers(AdminOpcode.ASYNC_EVENT_REQUEST)
def case_async_event_request(env):
    ctrl = env.controller()
    dev = device_ctrl(ctrl)
    # The driver armed one on a reserved tag, and the device holds it.
    armed = _aers(ctrl)
    assert len(armed) == 1 and armed[0].reserved and armed[0].internal and not armed[0].passthru
    assert len(dev.aer_requests) == 1
    # One more by passthrough: it stays outstanding (no event to report).
    thread, out = passthru_in_thread(ctrl, AsyncEventRequest())
    assert wait_for(lambda: len(dev.aer_requests) == 2, LONG)
    mine = [r for r in _aers(ctrl) if r.passthru]
    assert len(mine) == 1 and not mine[0].done and thread.is_alive()
    # An event goes to the driver's request first (the oldest); ours stays.
    env.subsystem.add_namespace(Namespace(3, 128))
    assert wait_for(lambda: 3 in ctrl.namespaces, LONG)
    assert wait_for(lambda: any(e.type == 2 and 3 in e.nsids for e in ctrl.events), LONG)
    assert not mine[0].done
    # The driver re-armed its own: ours and the new one are outstanding.
    assert wait_for(lambda: len(dev.aer_requests) == 2, LONG)
    # The next event completes ours (the driver's re-armed one is younger).
    env.subsystem.remove_namespace(3)
    thread.join(LONG)
    assert not thread.is_alive()
    status, result = out["r"]
    expect(status)
    assert result & 0x7 == 2 and (result >> 8) & 0xFF == 0 and (result >> 16) & 0xFF == LogPageId.CHANGED_NS
    # The driver never saw that event; reading the log (clearing it) is ours
    # to do, then the driver's AER gets the next one again.
    status, buf = get_log(ctrl, LogPageId.CHANGED_NS, ChangedNamespaceList.SIZE)
    expect(status)
    assert 3 in ChangedNamespaceList.from_bytes(buf).nsids()
    ctrl.rescan()
    assert 3 not in ctrl.namespaces
    env.subsystem.add_namespace(Namespace(4, 128))
    assert wait_for(lambda: 4 in ctrl.namespaces, LONG)
    assert wait_for(lambda: len(dev.aer_requests) == 1, LONG)  # the driver's, re-armed
    # AERL + 1 outstanding at most: one more is refused.
    dev_limit = ctrl.identify.aerl + 1
    threads = [passthru_in_thread(ctrl, AsyncEventRequest()) for _ in range(dev_limit - 1)]
    assert wait_for(lambda: len(dev.aer_requests) == dev_limit, LONG)
    extra, result = passthru_in_thread(ctrl, AsyncEventRequest())
    extra.join(LONG)
    assert not extra.is_alive()
    expect(result["r"][0], CommandSpecificStatus.ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED)
    # Abort ours so the controller shuts down with none of them pending.
    mine = [r for r in _aers(ctrl) if r.passthru]
    assert len(mine) == dev_limit - 1
    for r in mine:
        status, result = ctrl.admin_passthru(Abort(sqid=0, abort_cid=r.cid))
        expect(status)
        assert result & 1 == 0
    for t, out in threads:
        t.join(LONG)
        assert not t.is_alive()
        expect(out["r"][0], GenericStatus.ABORT_REQUESTED)
    assert [r.passthru for r in _aers(ctrl)] == [False] and len(dev.aer_requests) == 1


@covers(AdminOpcode.ABORT)
def case_abort(env):
    ctrl = env.controller()  # default timeouts: the driver does not abort by itself here
    data = pattern(8 * BS, 5)
    expect(io_write(ctrl, 40, data))
    faults = env.subsystem.faults
    rule = faults.drop(opcode=NvmOpcode.READ, count=1)
    buf = bytearray(len(data))
    req = ctrl.submit(Read(nsid=1, slba=40, nlb=7), buf, qid=2, retry=False)
    assert wait_for(lambda: rule.hits == 1 and any(not r.done for r in faults.parked), LONG)
    assert not req.done
    sqid, cid = req.queue.qid, req.cid
    assert sqid == 2
    status, result = ctrl.admin_passthru(Abort(sqid=sqid, abort_cid=cid))
    expect(status)
    assert result & 1 == 0  # aborted
    req.wait(LONG)
    assert req.done
    assert req.status.code is GenericStatus.ABORT_REQUESTED and not req.status.dnr
    # An Abort of a command that is not outstanding: success, "not aborted".
    status, result = ctrl.admin_passthru(Abort(sqid=2, abort_cid=cid))
    expect(status)
    assert result & 1 == 1
    # The same read again (retried by the driver this time) works.
    req = ctrl.submit(Read(nsid=1, slba=40, nlb=7), buf, qid=2)
    assert req.wait(LONG).ok and bytes(buf) == data
    # An admin command held by the device (a passthrough one), aborted on the admin queue.
    rule = faults.drop(admin=True, opcode=AdminOpcode.GET_FEATURES, count=1)
    thread, out = passthru_in_thread(ctrl, GetFeatures(fid=FeatureId.ARBITRATION))
    assert wait_for(lambda: rule.hits == 1, LONG)
    held = [r for r in ctrl.admin_queue.snapshot() if r.opcode == AdminOpcode.GET_FEATURES]
    assert len(held) == 1 and held[0].passthru
    status, result = ctrl.admin_passthru(Abort(sqid=0, abort_cid=held[0].cid))
    expect(status)
    assert result & 1 == 0
    thread.join(LONG)
    assert not thread.is_alive()
    expect(out["r"][0], GenericStatus.ABORT_REQUESTED)
    expect(get_feature(ctrl, FeatureId.ARBITRATION)[0])
    assert ctrl.state is CtrlState.LIVE


@covers(AdminOpcode.KEEP_ALIVE)
def case_keep_alive(env):
    ctrl = env.controller()
    dev = device_ctrl(ctrl)
    before = dev.last_keep_alive
    assert wait_for(lambda: time.monotonic() > before, LONG)
    expect(ctrl.admin_passthru(KeepAlive())[0])
    assert dev.last_keep_alive > before
    # With a Keep Alive Timeout set, Keep Alive keeps the timer from expiring.
    expect(set_feature(ctrl, FeatureId.KATO, 60000)[0])
    expect(ctrl.admin_passthru(KeepAlive())[0])
    assert not dev.keep_alive_expired()
    expect(set_feature(ctrl, FeatureId.KATO, 0)[0])


# -- Namespace Management and Attachment ------------------------------------------


@covers(AdminOpcode.NAMESPACE_MANAGEMENT, AdminOpcode.NAMESPACE_ATTACHMENT)
def case_namespaces(env):
    ctrl = env.controller()
    seen = []
    ctrl.namespace_callbacks.append(lambda action, ns: seen.append((action, ns.nsid)))
    cntlid = ctrl.identify.cntlid
    unvmcap = IdentifyController.from_bytes(identify(ctrl, Cns.CTRL)[1]).unvmcap
    spec = IdentifyNamespace()
    spec.nsze = spec.ncap = 2048
    spec.flbas = 3  # 4096-byte blocks
    status, nsid = ctrl.admin_passthru(NamespaceManagement(sel=NsManagementSelect.CREATE), bytes(spec))
    expect(status)
    assert nsid == 2 and nsid not in ctrl.namespaces  # created, not attached
    assert ns_list(identify(ctrl, Cns.ALLOCATED_NS_LIST)[1]) == [1, 2]
    assert ns_list(identify(ctrl, Cns.NS_ACTIVE_LIST)[1]) == [1]
    idc = IdentifyController.from_bytes(identify(ctrl, Cns.CTRL)[1])
    assert idc.unvmcap == unvmcap - 2048 * 4096
    # Attach: the driver rescans (NIC effect) and the namespace appears.
    status, _ = ctrl.admin_passthru(NamespaceAttachment(nsid=nsid, sel=NsAttachmentSelect.ATTACH),
                                    controller_list(cntlid))
    expect(status)
    ns = ctrl.namespaces.get(nsid)
    assert ns is not None and (ns.block_size, ns.nblocks) == (4096, 2048)
    assert ("added", nsid) in seen
    data = pattern(2 * 4096, 11)
    status, _ = ctrl.io_passthru(Write(nsid=nsid, slba=5, nlb=1), data)
    expect(status)
    buf = bytearray(len(data))
    status, _ = ctrl.io_passthru(Read(nsid=nsid, slba=5, nlb=1), buf)
    expect(status)
    assert bytes(buf) == data
    expect(ctrl.admin_passthru(NamespaceAttachment(nsid=nsid, sel=NsAttachmentSelect.ATTACH),
                               controller_list(cntlid))[0], CommandSpecificStatus.NAMESPACE_ALREADY_ATTACHED)
    expect(ctrl.admin_passthru(NamespaceAttachment(nsid=nsid, sel=NsAttachmentSelect.ATTACH),
                               controller_list(cntlid + 100))[0], CommandSpecificStatus.CONTROLLER_LIST_INVALID)
    # Detach: it disappears.
    status, _ = ctrl.admin_passthru(NamespaceAttachment(nsid=nsid, sel=NsAttachmentSelect.DETACH),
                                    controller_list(cntlid))
    expect(status)
    assert nsid not in ctrl.namespaces and ns.removed and ("removed", nsid) in seen
    expect(ctrl.admin_passthru(NamespaceAttachment(nsid=nsid, sel=NsAttachmentSelect.DETACH),
                               controller_list(cntlid))[0], CommandSpecificStatus.NAMESPACE_NOT_ATTACHED)
    # Attached again, then deleted while attached: it disappears again.
    expect(ctrl.admin_passthru(NamespaceAttachment(nsid=nsid, sel=NsAttachmentSelect.ATTACH),
                               controller_list(cntlid))[0])
    assert nsid in ctrl.namespaces
    status, _ = ctrl.admin_passthru(NamespaceManagement(nsid=nsid, sel=NsManagementSelect.DELETE))
    expect(status)
    assert nsid not in ctrl.namespaces
    assert [a for a, n in seen if n == nsid] == ["added", "removed", "added", "removed"]
    assert ns_list(identify(ctrl, Cns.ALLOCATED_NS_LIST)[1]) == [1]
    expect(ctrl.admin_passthru(NamespaceManagement(nsid=nsid, sel=NsManagementSelect.DELETE))[0],
           GenericStatus.INVALID_FIELD)
    expect(ctrl.admin_passthru(NamespaceAttachment(nsid=nsid, sel=NsAttachmentSelect.ATTACH),
                               controller_list(cntlid))[0], GenericStatus.INVALID_FIELD)
    # Too big for the capacity left.
    huge = IdentifyNamespace()
    huge.nsze = huge.ncap = env.subsystem.unallocated_capacity() // BS + 1
    expect(ctrl.admin_passthru(NamespaceManagement(sel=NsManagementSelect.CREATE), bytes(huge))[0],
           CommandSpecificStatus.NAMESPACE_INSUFFICIENT_CAPACITY)
    assert list(ctrl.namespaces) == [1]


# -- Firmware ------------------------------------------------------------------


def download(ctrl, image: bytes, piece: int):
    """Firmware Image Download of ``image`` in pieces, last piece first."""
    offsets = list(range(0, len(image), piece))
    for off in reversed(offsets):
        chunk = image[off: off + piece]
        cmd = FirmwareImageDownload()
        cmd.length = len(chunk)
        cmd.offset = off
        status, _ = ctrl.admin_passthru(cmd, chunk)
        expect(status)
    return len(offsets)


def fw_log(ctrl) -> FirmwareSlotLog:
    status, buf = get_log(ctrl, LogPageId.FW_SLOT, FirmwareSlotLog.SIZE)
    expect(status)
    return FirmwareSlotLog.from_bytes(buf)


def current_fr(ctrl) -> str:
    return IdentifyController.from_bytes(identify(ctrl, Cns.CTRL)[1]).fr


@covers(AdminOpcode.FIRMWARE_IMAGE_DOWNLOAD, AdminOpcode.FIRMWARE_COMMIT)
def case_firmware(env):
    ctrl = env.controller()
    assert ctrl.identify.fr == "1.0"
    # An image that needs a Controller Level Reset, in five pieces, committed
    # with "replace and activate now" to slot 2.
    image = FirmwareImage.build("E2E-2.0", reset=ResetRequired.CONTROLLER, payload=pattern(4 * 4096 + 100, 21))
    assert download(ctrl, image, 4096) == 5
    status, _ = ctrl.admin_passthru(FirmwareCommit(fs=2, ca=FirmwareCommitAction.REPLACE_AND_ACTIVATE_NOW))
    expect(status, CommandSpecificStatus.FW_ACTIVATION_REQUIRES_CONTROLLER_LEVEL_RESET)
    page = fw_log(ctrl)
    assert page.frs(2) == "E2E-2.0" and page.active_slot == 1 and page.next_slot == 2
    assert current_fr(ctrl) == "1.0"
    # The reset the status asks for activates it.
    assert ctrl.reset(timeout=LONG) is True
    assert ctrl.state is CtrlState.LIVE
    assert ctrl.identify.fr == "E2E-2.0" == current_fr(ctrl)
    page = fw_log(ctrl)
    assert page.active_slot == 2 and page.next_slot == 0
    # The bring-up after the reset armed a new Asynchronous Event Request.
    assert wait_for(lambda: len(device_ctrl(ctrl).aer_requests) == 1, LONG)
    assert [r.internal for r in _aers(ctrl)] == [True]
    # Replace only (commit action 0): stored in slot 4, not activated; then
    # replace and activate at the next reset (commit action 1).
    download(ctrl, FirmwareImage.build("E2E-4.0"), 4)
    expect(ctrl.admin_passthru(FirmwareCommit(fs=4, ca=FirmwareCommitAction.REPLACE))[0])
    page = fw_log(ctrl)
    assert page.frs(4) == "E2E-4.0" and page.active_slot == 2 and page.next_slot == 0
    download(ctrl, FirmwareImage.build("E2E-5.0"), 8)
    expect(ctrl.admin_passthru(FirmwareCommit(fs=5, ca=FirmwareCommitAction.REPLACE_AND_ACTIVATE))[0])
    assert fw_log(ctrl).next_slot == 5 and current_fr(ctrl) == "E2E-2.0"
    assert ctrl.reset(timeout=LONG) is True
    assert ctrl.identify.fr == "E2E-5.0"
    # An image without a header activates at once ("replace and activate
    # now"): the driver hears Firmware Activation Starting.
    image = FirmwareImage.build("E2E-3.0", payload=pattern(3000, 22))
    download(ctrl, image, 1024)
    expect(ctrl.admin_passthru(FirmwareCommit(fs=3, ca=FirmwareCommitAction.REPLACE_AND_ACTIVATE_NOW))[0])
    assert current_fr(ctrl) == "E2E-3.0"
    assert wait_for(lambda: any(e.type == 2 and e.info == 1 and e.log_page == LogPageId.FW_SLOT
                                for e in ctrl.events), LONG)
    # Activate slot 2 again at the next reset (commit action 2).
    expect(ctrl.admin_passthru(FirmwareCommit(fs=2, ca=FirmwareCommitAction.ACTIVATE))[0])
    assert fw_log(ctrl).next_slot == 2
    assert ctrl.reset(timeout=LONG) is True
    assert ctrl.identify.fr == "E2E-2.0"
    # Errors: overlapping pieces, a read-only slot, no image, a bad image.
    cmd = FirmwareImageDownload()
    cmd.length, cmd.offset = 1024, 0
    expect(ctrl.admin_passthru(cmd, bytes(1024))[0])
    cmd.offset = 512
    expect(ctrl.admin_passthru(cmd, bytes(1024))[0], CommandSpecificStatus.OVERLAPPING_RANGE)
    expect(ctrl.admin_passthru(FirmwareCommit(fs=1, ca=FirmwareCommitAction.REPLACE))[0],
           CommandSpecificStatus.INVALID_FIRMWARE_SLOT)
    expect(ctrl.admin_passthru(FirmwareCommit(fs=4, ca=FirmwareCommitAction.REPLACE))[0],
           CommandSpecificStatus.INVALID_FIRMWARE_IMAGE)  # the commit consumed the download (zeroes)
    expect(ctrl.admin_passthru(FirmwareCommit(fs=4, ca=FirmwareCommitAction.REPLACE))[0],
           CommandSpecificStatus.INVALID_FIRMWARE_IMAGE)  # nothing downloaded
    expect(ctrl.admin_passthru(FirmwareCommit(fs=6, ca=FirmwareCommitAction.ACTIVATE))[0],
           CommandSpecificStatus.INVALID_FIRMWARE_IMAGE)  # empty slot
    # I/O works after the resets.
    data = pattern(4 * BS, 23)
    expect(io_write(ctrl, 0, data))
    assert io_read(ctrl, 0, 4)[1] == data


# -- Format NVM -------------------------------------------------------------------


@covers(AdminOpcode.FORMAT_NVM)
def case_format(env):
    ctrl = env.controller()
    ns = ctrl.namespaces[1]
    expect(io_write(ctrl, 0, pattern(8 * BS, 31)))
    seen = []
    ctrl.namespace_callbacks.append(lambda action, n: seen.append((action, n.nsid)))
    cmd = FormatNvm(nsid=1, ses=SecureEraseSetting.USER_DATA_ERASE)
    cmd.lbaf = 3  # 4096-byte blocks
    expect(ctrl.admin_passthru(cmd)[0])
    # The driver rescanned (NCC): same namespace object, new geometry.
    assert ctrl.namespaces[1] is ns and not ns.removed
    assert (ns.block_size, ns.nblocks) == (4096, NS_BLOCKS * BS // 4096)
    assert ("changed", 1) in seen
    dev = BlockDevice(ns)
    assert dev.block_size == 4096 and dev.read_blocks(0, 2) == bytes(8192)  # erased
    data = pattern(3 * 4096, 32)
    dev.write_blocks(ns.nblocks - 3, data)
    assert dev.read_blocks(ns.nblocks - 3, 3) == data
    # Back to 512-byte blocks.
    cmd = FormatNvm(nsid=NSID_ALL)
    cmd.lbaf = 0
    expect(ctrl.admin_passthru(cmd)[0])
    assert (ns.block_size, ns.nblocks) == (BS, NS_BLOCKS)
    expect(io_write(ctrl, 7, pattern(BS, 33)))
    assert io_read(ctrl, 7, 1)[1] == pattern(BS, 33)
    # Errors.
    bad = FormatNvm(nsid=1)
    bad.lbaf = len(DEFAULT_LBA_FORMATS)
    expect(ctrl.admin_passthru(bad)[0], CommandSpecificStatus.INVALID_FORMAT)
    expect(ctrl.admin_passthru(FormatNvm(nsid=1, ses=SecureEraseSetting.CRYPTOGRAPHIC_ERASE))[0],
           GenericStatus.INVALID_FIELD)
    expect(ctrl.admin_passthru(FormatNvm(nsid=9))[0], GenericStatus.INVALID_FIELD)  # valid, not active
    expect(ctrl.admin_passthru(FormatNvm(nsid=1, pi=1))[0], CommandSpecificStatus.INVALID_FORMAT)  # no metadata
    assert (ns.block_size, ns.nblocks) == (BS, NS_BLOCKS)


# -- Device Self-test ------------------------------------------------------------------


def self_test_log(ctrl) -> DeviceSelfTestLog:
    status, buf = get_log(ctrl, LogPageId.DEVICE_SELF_TEST, DeviceSelfTestLog.SIZE)
    expect(status)
    return DeviceSelfTestLog.from_bytes(buf)


@covers(AdminOpcode.DEVICE_SELF_TEST)
def case_self_test(env):
    ctrl = env.controller()
    ops = env.subsystem.operations
    ops.short_self_test_seconds = 600.0  # until we shorten it
    expect(ctrl.admin_passthru(DeviceSelfTest(nsid=1, stc=SelfTestCode.SHORT))[0])
    page = self_test_log(ctrl)
    assert page.current_operation == SelfTestOperation.SHORT
    expect(ctrl.admin_passthru(DeviceSelfTest(nsid=1, stc=SelfTestCode.SHORT))[0],
           CommandSpecificStatus.DEVICE_SELF_TEST_IN_PROGRESS)
    ops.short_self_test_seconds = 0.01  # now it finishes: poll the log until done
    assert wait_for(lambda: self_test_log(ctrl).current_operation == SelfTestOperation.NONE, LONG, 0.01)
    result = self_test_log(ctrl).result[0]
    assert result.code == SelfTestOperation.SHORT and result.result == SelfTestResultCode.NO_ERROR
    # An extended test aborted by the host.
    ops.extended_self_test_seconds = 600.0
    expect(ctrl.admin_passthru(DeviceSelfTest(nsid=NSID_ALL, stc=SelfTestCode.EXTENDED))[0])
    assert self_test_log(ctrl).current_operation == SelfTestOperation.EXTENDED
    expect(ctrl.admin_passthru(DeviceSelfTest(nsid=NSID_ALL, stc=SelfTestCode.ABORT))[0])
    assert wait_for(lambda: self_test_log(ctrl).current_operation == SelfTestOperation.NONE, LONG, 0.01)
    page = self_test_log(ctrl)
    assert page.result[0].code == SelfTestOperation.EXTENDED
    assert page.result[0].result == SelfTestResultCode.ABORTED_BY_COMMAND
    assert page.result[1].result == SelfTestResultCode.NO_ERROR  # the short one, older
    expect(ctrl.admin_passthru(DeviceSelfTest(nsid=1, stc=0x3))[0], GenericStatus.INVALID_FIELD)
    expect(ctrl.admin_passthru(DeviceSelfTest(nsid=9, stc=SelfTestCode.SHORT))[0],
           GenericStatus.INVALID_FIELD)  # valid, not active


# -- Sanitize ---------------------------------------------------------------------------


def sanitize_log(ctrl) -> SanitizeStatusLog:
    status, buf = get_log(ctrl, LogPageId.SANITIZE, SanitizeStatusLog.SIZE)
    expect(status)
    return SanitizeStatusLog.from_bytes(buf)


@covers(AdminOpcode.SANITIZE)
def case_sanitize(env):
    ctrl = env.controller()
    ops = env.subsystem.operations
    data = pattern(16 * BS, 41)
    expect(io_write(ctrl, 1000, data))
    ops.sanitize_seconds = 600.0  # until we shorten it
    cmd = Sanitize(sanact=SanitizeAction.BLOCK_ERASE, ause=True)
    expect(ctrl.admin_passthru(cmd)[0])
    page = sanitize_log(ctrl)
    assert page.status == SanitizeStatus.IN_PROGRESS and page.sprog != 0xFFFF
    assert page.scdw10 == cmd.cdw10
    # Meanwhile I/O and most admin commands are refused; Identify works.
    status, _ = io_read(ctrl, 1000, 1)
    expect(status, GenericStatus.SANITIZE_IN_PROGRESS)
    expect(get_log(ctrl, LogPageId.FW_SLOT, 512)[0], GenericStatus.SANITIZE_IN_PROGRESS)
    expect(identify(ctrl, Cns.CTRL)[0])
    expect(ctrl.admin_passthru(cmd)[0], GenericStatus.SANITIZE_IN_PROGRESS)
    ops.sanitize_seconds = 0.01  # now it finishes: poll the log until done
    assert wait_for(lambda: sanitize_log(ctrl).status == SanitizeStatus.COMPLETED, LONG, 0.01)
    page = sanitize_log(ctrl)
    assert page.sprog == 0xFFFF and page.global_data_erased
    status, got = io_read(ctrl, 1000, 16)
    expect(status)
    assert got == bytes(16 * BS)
    expect(io_write(ctrl, 1000, data))
    assert io_read(ctrl, 1000, 16)[1] == data
    assert not sanitize_log(ctrl).global_data_erased  # written since
    expect(ctrl.admin_passthru(Sanitize(sanact=SanitizeAction.CRYPTO_ERASE))[0], GenericStatus.INVALID_FIELD)
    assert ctrl.state is CtrlState.LIVE


# -- Create / Delete I/O queues -----------------------------------------------------------


@covers(AdminOpcode.CREATE_IO_CQ, AdminOpcode.CREATE_IO_SQ, AdminOpcode.DELETE_IO_SQ, AdminOpcode.DELETE_IO_CQ)
def case_io_queues(env):
    # The driver uses two I/O queues of a grant of four (the transport says it
    # can serve two): queues 3 and 4 are free for us.
    env.monkeypatch.setattr(PciTransport, "io_queue_limit", lambda self, wanted: min(wanted, 2))
    ctrl = env.controller(io_queues=4)
    assert ctrl.io_queue_count == 2 and ctrl.queues_granted == 4
    fn = ctrl.transport.function
    dstrd = ctrl.transport.dstrd
    entries = 8
    cq = ctrl.alloc_buffer(entries * 16)
    sq = ctrl.alloc_buffer(entries * 64)
    data = ctrl.alloc_buffer(4096)
    try:
        qid = 3
        cmd = CreateIoCq(qid=qid, prp1=cq.addr, pc=True, ien=False, iv=0)
        cmd.entries = entries
        expect(ctrl.admin_passthru(cmd)[0])
        expect(ctrl.admin_passthru(cmd)[0], CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)  # exists
        bad = CreateIoSq(qid=qid, prp1=sq.addr, pc=True, cqid=4)
        bad.entries = entries
        expect(ctrl.admin_passthru(bad)[0], CommandSpecificStatus.COMPLETION_QUEUE_INVALID)
        scmd = CreateIoSq(qid=qid, prp1=sq.addr, pc=True, cqid=qid)
        scmd.entries = entries
        expect(ctrl.admin_passthru(scmd)[0])
        # The new queue pair works: a Read of blocks the driver wrote.
        payload = pattern(8 * BS, 51)
        expect(io_write(ctrl, 300, payload))
        read = Read(nsid=1, slba=300, nlb=7, cid=0x1234, prp1=data.addr)
        sq.view[0:64] = read.raw
        fn.mmio_write(sq_tail_doorbell(qid, dstrd), 4, 1)
        entry = Completion.view(cq.view[0:16])
        assert wait_for(lambda: entry.phase, LONG)
        assert (entry.cid, entry.sqid, entry.status, entry.sqhd) == (0x1234, qid, 0, 1)
        fn.mmio_write(cq_head_doorbell(qid, dstrd), 4, 1)
        assert bytes(data.view[: len(payload)]) == payload
        # Beyond the grant, and a queue the driver uses.
        beyond = CreateIoCq(qid=5, prp1=cq.addr, pc=True)
        beyond.entries = entries
        expect(ctrl.admin_passthru(beyond)[0], CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
        used = CreateIoCq(qid=1, prp1=cq.addr, pc=True)
        used.entries = entries
        expect(ctrl.admin_passthru(used)[0], CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
        too_big = CreateIoCq(qid=4, prp1=cq.addr, pc=True)
        too_big.qsize = device_ctrl(ctrl).regs.cap.mqes + 1
        expect(ctrl.admin_passthru(too_big)[0], CommandSpecificStatus.INVALID_QUEUE_SIZE)
        # Delete: the CQ only once its SQ is gone.
        expect(ctrl.admin_passthru(DeleteIoCq(qid=qid))[0], CommandSpecificStatus.INVALID_QUEUE_DELETION)
        expect(ctrl.admin_passthru(DeleteIoSq(qid=qid))[0])
        expect(ctrl.admin_passthru(DeleteIoSq(qid=qid))[0], CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
        expect(ctrl.admin_passthru(DeleteIoCq(qid=qid))[0])
        expect(ctrl.admin_passthru(DeleteIoCq(qid=qid))[0], CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
        expect(ctrl.admin_passthru(DeleteIoSq(qid=0))[0], CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
        assert sorted(device_ctrl(ctrl).io_sqs) == [1, 2]
    finally:
        for buf in (cq, sq, data):
            ctrl.free_buffer(buf)
    # The driver's own queues are untouched.
    for q in (1, 2):
        buf = bytearray(8 * BS)
        status, _ = ctrl.io_passthru(Read(nsid=1, slba=300, nlb=7), buf, qid=q)
        expect(status)
        assert bytes(buf) == payload


# -- the table ---------------------------------------------------------------------


def test_every_admin_command_has_a_case():
    """Iterates the device's ADMIN_COMMANDS: a new admin command needs a case here."""
    missing = [f"{op:#04x} {AdminOpcode(op).name if op in AdminOpcode._value2member_map_ else '?'}"
               for op in sorted(ADMIN_COMMANDS) if op not in ADMIN_CASES]
    assert not missing, f"admin commands without an end-to-end passthrough case: {missing}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_admin_passthru(case, make_controller, make_function, host_subsystem, pci_mode, monkeypatch):
    func, opcodes = CASES[case]
    env = Env(make_controller, make_function, host_subsystem, pci_mode, monkeypatch)
    func(env)
    # The case really sent (by passthrough) every opcode it claims to cover.
    not_sent = [hex(op) for op in opcodes if op not in env.sent]
    assert not not_sent, f"{case} covers {not_sent} but did not send them"
    # (make_controller checks at teardown that no request completed twice.)


# ---------------------------------------------------------------------------
# stress: concurrent mixed I/O with faults injected mid-run


class QueueCounter:
    """A tracer counting the commands started per queue."""

    enabled = True

    def __init__(self):
        self.started = collections.Counter()
        self._lock = threading.Lock()

    def setup(self, req: HostRequest) -> None:
        with self._lock:
            self.started[req.qid] += 1

    def complete(self, req: HostRequest) -> None:
        pass


def _pieces(data: bytes | memoryview, rng: random.Random) -> list:
    """``data`` as a scatter list of odd sized pieces (views of bytearrays at
    odd offsets: misaligned, bounced or described by SGLs)."""
    out, pos = [], 0
    while pos < len(data):
        n = min(len(data) - pos, rng.choice([1, 3, 100, 511, 512, 513, 2000, 4096, 7000]))
        pad = rng.randrange(1, 32)
        backing = bytearray(pad + n + 8)
        backing[pad:pad + n] = data[pos:pos + n]
        out.append(memoryview(backing)[pad:pad + n])
        pos += n
    return out


def test_stress_mixed_io_with_faults(make_function, make_controller, pci_mode, host_subsystem):
    # MDTS 3: 32 KiB per command, so sizes up to 2 x MDTS split.
    fn = make_function(mode=pci_mode, controller_options={"mdts": 3})
    ctrl = make_controller(fn, io_queues=4, io_timeout=1.5, admin_timeout=20, watchdog_interval=0.02)
    assert ctrl.io_queue_count == 4 and ctrl.max_transfer == 32 * 1024
    per_queue = QueueCounter()
    ctrl.tracer = per_queue
    dev = BlockDevice(ctrl.namespaces[1])
    faults = host_subsystem.faults
    nworkers = 8
    region = NS_BLOCKS // nworkers
    max_blocks = 2 * ctrl.max_transfer // BS
    shadow = bytearray(dev.read_blocks(0, NS_BLOCKS))  # what the device holds now
    stop = threading.Event()
    faults_done = threading.Event()
    counts = [0] * nworkers
    errors: list[str] = []
    retried: list[str] = []
    min_ops, max_ops = 25, 2000

    def attempt(what, fn_, *args):
        """Run one I/O; a failure is retried by us (the driver has retried
        already); three failures in a row are an error."""
        for _ in range(3):
            try:
                return fn_(*args)
            except Exception as exc:  # noqa: BLE001 - recorded and retried
                retried.append(f"{what}: {exc!r}")
        raise AssertionError(f"{what} failed three times: {retried[-1]}")

    def worker(w: int) -> None:
        rng = random.Random(1000 * w + 7)
        base = w * region
        dma = ctrl.alloc_buffer(max_blocks * BS + 4096)
        try:
            while not stop.is_set() and counts[w] < max_ops and (counts[w] < min_ops or not faults_done.is_set()):
                n = rng.randint(1, 16) if rng.random() < 0.7 else rng.randint(17, max_blocks)
                lba = base + rng.randrange(0, region - n + 1)
                lo, hi = lba * BS, (lba + n) * BS
                style = rng.choice(["plain", "plain", "scatter", "dma"])
                if rng.random() < 0.55:
                    data = rng.randbytes(n * BS)
                    if style == "scatter":
                        attempt(f"writev {lba}+{n}", dev.writev_blocks, lba, _pieces(data, rng))
                    elif style == "dma":
                        off = rng.randrange(1, 4096)
                        view = dma.view[off: off + n * BS]
                        view[:] = data
                        attempt(f"write dma {lba}+{n}", dev.write_blocks, lba, view)
                    else:
                        attempt(f"write {lba}+{n}", dev.write_blocks, lba, data)
                    shadow[lo:hi] = data  # only once it completed
                else:
                    if style == "scatter":
                        sizes = _pieces(bytes(n * BS), rng)
                        bufs = [bytearray(len(p)) for p in sizes]
                        attempt(f"readv {lba}+{n}", dev.readv_blocks, lba, bufs)
                        got = b"".join(bufs)
                    elif style == "dma":
                        off = rng.randrange(1, 4096)
                        view = dma.view[off: off + n * BS]
                        attempt(f"read dma {lba}+{n}", dev.readinto_blocks, lba, view)
                        got = bytes(view)
                    else:
                        got = attempt(f"read {lba}+{n}", dev.read_blocks, lba, n)
                    if got != shadow[lo:hi]:
                        errors.append(f"worker {w}: read {lba}+{n} ({style}) returned other data")
                counts[w] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(f"worker {w}: {exc!r}")
            stop.set()
        finally:
            ctrl.free_buffer(dma)

    injected = {}

    def injector() -> None:
        try:
            ok = wait_for(lambda: sum(counts) >= 2 * nworkers or stop.is_set(), LONG)
            assert ok and not stop.is_set(), "the workers did not get going"
            # Dropped completions: the driver times out, aborts and retries.
            injected["drop"] = rule = faults.drop(admin=False, opcode=NvmOpcode.WRITE, count=2)
            assert wait_for(lambda: rule.hits >= 2 or stop.is_set(), LONG)
            # (ended by the driver's Abort after io_timeout, or by a reset)
            assert wait_for(lambda: all(r.done for r in rule.requests) or stop.is_set(), LONG)
            # Delayed completions: short ones complete late, a long one is aborted.
            injected["delay"] = rule = faults.delay(0.05, admin=False, opcode=NvmOpcode.READ, count=4)
            injected["long_delay"] = rule2 = faults.delay(5.0, admin=False, opcode=NvmOpcode.WRITE, count=1)
            assert wait_for(lambda: (rule.hits >= 4 and rule2.hits >= 1) or stop.is_set(), LONG)
            assert wait_for(lambda: all(r.done for r in [*rule.requests, *rule2.requests]) or stop.is_set(), LONG)
            # A controller fatal status, once: the driver resets the controller.
            injected["fatal"] = rule = faults.fatal(admin=False, opcode=NvmOpcode.WRITE, count=1)
            assert wait_for(lambda: rule.hits >= 1 or stop.is_set(), LONG)
            assert wait_for(lambda: ctrl.stats["resets"] >= 1 and ctrl.state is CtrlState.LIVE, LONG)
        except BaseException as exc:  # noqa: BLE001
            errors.append(f"injector: {exc!r}")
            stop.set()
        finally:
            faults_done.set()

    threads = [threading.Thread(target=worker, args=(w,), name=f"stress-{w}") for w in range(nworkers)]
    threads.append(threading.Thread(target=injector, name="stress-faults"))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 180
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    assert not any(t.is_alive() for t in threads), "stress threads hung"
    assert errors == [], errors[:10]
    assert all(c >= min_ops for c in counts), counts
    # Every fault fired and was recovered from.
    assert [injected[k].hits for k in ("drop", "delay", "long_delay", "fatal")] == [2, 4, 1, 1]
    assert ctrl.state is CtrlState.LIVE
    assert all(per_queue.started[q] > 0 for q in range(1, 5)), per_queue.started
    assert ctrl.stats["resets"] >= 1 and ctrl.stats["aborts"] >= 1 and ctrl.stats["timeouts"] >= 1
    # Every block of the namespace, through the driver and on the medium.
    assert dev.read_blocks(0, NS_BLOCKS) == shadow
    assert host_subsystem.namespaces[1].data.read_bytes(0, NS_BLOCKS * BS) == shadow
    assert dev.stats().in_flight == 0
    assert ctrl.double_completions == 0 and dev.double_completions == 0


# ---------------------------------------------------------------------------
# regression: a rescan whose Identify fails keeps the namespace (as Linux's
# nvme_scan_ns: only an Identify Namespace that succeeds with a zero size
# removes it).  Found by the stress test: a reset during the rescan that
# followed the previous reset cancelled its Identify Namespace, the
# namespace was removed and re-added as a new object, and the BlockDevice
# on the old one failed with ENXIO.


def test_rescan_interrupted_by_a_reset_keeps_the_namespace(make_controller, host_subsystem):
    ctrl = make_controller()
    ns = ctrl.namespaces[1]
    seen = []
    ctrl.namespace_callbacks.append(lambda action, n: seen.append((action, n.nsid)))
    faults = host_subsystem.faults
    # The rescan's first Identify with NSID 1 (the descriptor list) runs; the
    # second (Identify Namespace) is held by the device.
    faults.delay(0.0, admin=True, opcode=AdminOpcode.IDENTIFY, nsid=1, count=1)
    held = faults.drop(admin=True, opcode=AdminOpcode.IDENTIFY, nsid=1, count=1)
    scan = threading.Thread(target=ctrl.rescan)
    scan.start()
    assert wait_for(lambda: held.hits == 1, LONG)
    assert ctrl.reset(timeout=LONG) is True  # cancels the held Identify Namespace
    scan.join(LONG)
    assert not scan.is_alive()
    ctrl.rescan()
    assert ctrl.namespaces.get(1) is ns and not ns.removed
    assert ("removed", 1) not in seen
    dev = BlockDevice(ns)
    dev.write_blocks(9, pattern(2 * BS, 61))
    assert dev.read_blocks(9, 2) == pattern(2 * BS, 61)


def test_rescan_keeps_the_namespace_when_identify_fails(ctrl, host_subsystem):
    ns = ctrl.namespaces[1]
    rule = host_subsystem.faults.fail(GenericStatus.INTERNAL_ERROR, dnr=False, admin=True,
                                      opcode=AdminOpcode.IDENTIFY, nsid=1, count=2)
    ctrl.rescan()
    assert rule.hits == 2  # the descriptor list and Identify Namespace both failed
    assert ctrl.namespaces.get(1) is ns and not ns.removed
    # A fatal error (DNR) from the device removes it (Linux's nvme_validate_ns);
    # the next scan that identifies it brings it back.
    rule = host_subsystem.faults.fail(GenericStatus.INVALID_NAMESPACE_OR_FORMAT, dnr=True, admin=True,
                                      opcode=AdminOpcode.IDENTIFY, nsid=1, count=2)
    ctrl.rescan()
    assert rule.hits == 2 and ns.removed and 1 not in ctrl.namespaces
    ctrl.rescan()
    assert ctrl.namespaces[1].nblocks == NS_BLOCKS
    # A namespace that is really gone (Identify succeeds with a zero size) goes.
    host_subsystem.add_namespace(Namespace(2, 64))
    assert wait_for(lambda: 2 in ctrl.namespaces, LONG)
    gone = ctrl.namespaces[2]
    host_subsystem.remove_namespace(2)
    assert wait_for(lambda: gone.removed and 2 not in ctrl.namespaces, LONG)
