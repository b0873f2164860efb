"""Management admin commands (NVMe 2.0 base specification, section 5):
Namespace Management, Namespace Attachment, Firmware Image Download,
Firmware Commit, Format NVM, Device Self-test and Sanitize, with the
Firmware Slot Information (03h), Device Self-test (06h) and Sanitize Status
(81h) log pages.

Device self-tests and sanitize operations run in the background, on a
thread per operation, driven by :class:`BackgroundOperations` (one per
subsystem: ``subsystem.operations``).  Their durations are attributes of it
(seconds) so tests can make them short.

While a sanitize operation runs, or after one failed until the failure is
cleared, ``subsystem.command_gate`` is set: ``Controller.prepare`` calls it
for every command and it aborts the commands that are not allowed
(:data:`SANITIZE_ALLOWED_ADMIN`, :data:`SANITIZE_ALLOWED_LOGS`) with
Sanitize In Progress or Sanitize Failed.

What the Identify Controller helper reports for these commands (OACS bits,
FRMW, FWUG, MTFA, TNVMCAP, UNVMCAP, EDSTT, DSTO, SANICAP, FNA) is filled in
by :func:`fill_identify_controller`.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from typing import TYPE_CHECKING

from ..spec.admin import (
    NsAttachmentSelect,
    NsManagementSelect,
    SanitizeAction,
    SecureEraseSetting,
    SelfTestCode,
)
from ..spec.identify import CTRL_LIST_MAX, ControllerList, IdentifyNamespace
from ..spec.log import (
    DeviceSelfTestLog,
    Effects,
    LogPageId,
    SanitizeStatus,
    SanitizeStatusLog,
    SelfTestResult,
    SelfTestResultCode,
)
from ..spec.opcodes import FABRICS_OPCODE, AdminOpcode
from ..spec.status import (
    CommandSpecificStatus,
    GenericStatus,
    MediaStatus,
    StatusCodeType,
)
from .backend import BackendError
from .commands import admin_command, log_page
from .controller import AsyncEventType
from .errors import NvmeError
from .namespace import DEFAULT_LBA_FORMATS, Namespace

if TYPE_CHECKING:
    from ..spec.identify import IdentifyController
    from .controller import Controller
    from .request import Request
    from .subsystem import Subsystem

__all__ = [
    "SANITIZE_ALLOWED_ADMIN",
    "SANITIZE_ALLOWED_LOGS",
    "SELF_TEST_MEDIA_SEGMENT",
    "BackgroundOperations",
    "fill_identify_controller",
]

log = logging.getLogger(__name__)

NSID_ALL = 0xFFFFFFFF

# Command Effects log bits.
_LBCC, _NCC, _NIC, _CCC = Effects.LBCC, Effects.NCC, Effects.NIC, Effects.CCC
_CSE_NS, _CSE_CTRL = Effects.CSE_NS, Effects.CSE_CTRL

# Byte offsets in the SQE of the fields errors point at.
_NSID, _CDW10, _CDW11 = 4, 40, 44

# Asynchronous event information for the I/O command set specific event
# type (6h): Sanitize Operation Completed.
SANITIZE_COMPLETED = 0x01

# While a sanitize operation is in progress (or failed), the only admin
# commands processed (NVMe 1.4 figure 287 / 2.0 "Sanitize Operation
# Restrictions"); Get Log Page only for these pages.  Every I/O command is
# aborted.  A Sanitize command is processed in failure mode (to exit it or
# start a new sanitize operation).
SANITIZE_ALLOWED_ADMIN = frozenset({
    AdminOpcode.DELETE_IO_SQ,
    AdminOpcode.CREATE_IO_SQ,
    AdminOpcode.DELETE_IO_CQ,
    AdminOpcode.CREATE_IO_CQ,
    AdminOpcode.IDENTIFY,
    AdminOpcode.ABORT,
    AdminOpcode.SET_FEATURES,
    AdminOpcode.GET_FEATURES,
    AdminOpcode.ASYNC_EVENT_REQUEST,
    AdminOpcode.KEEP_ALIVE,
    FABRICS_OPCODE,
})
SANITIZE_ALLOWED_LOGS = frozenset({
    LogPageId.ERROR,
    LogPageId.SMART,
    LogPageId.CHANGED_NS,
    LogPageId.RESERVATION,
    LogPageId.SANITIZE,
})

# The device self-test segment that reads the media (informative segment
# list of the specification: 7 = Media Check).
SELF_TEST_MEDIA_SEGMENT = 7
SELF_TEST_RESULTS = DeviceSelfTestLog.MAX_RESULTS


def _nsid_valid(subsys: Subsystem, nsid: int) -> bool:
    return 1 <= nsid <= subsys.max_namespaces


# ----------------------------------------------------------------------------
# Background operations: device self-test and sanitize


class _SelfTestRun:
    def __init__(self, code: int, nsids: list[int], cntlid: int):
        self.code = code
        self.nsids = nsids
        self.cntlid = cntlid
        self.percent = 0
        self.abort = threading.Event()
        self.abort_reason = SelfTestResultCode.ABORTED_UNKNOWN
        self.thread: threading.Thread | None = None


class BackgroundOperations:
    """Device self-test and sanitize operations of one NVM subsystem."""

    def __init__(self, subsystem: Subsystem):
        self.subsystem = subsystem
        self.lock = threading.RLock()
        # Durations in seconds (EDSTT is reported from the extended one).
        self.short_self_test_seconds = 1.0
        self.extended_self_test_seconds = 10.0
        self.sanitize_seconds = 2.0
        # The short test reads at most this much of each namespace.
        self.short_self_test_bytes = 64 * 1024 * 1024
        # Device self-test.
        self.self_test: _SelfTestRun | None = None
        self.self_test_results: collections.deque[bytes] = collections.deque(maxlen=SELF_TEST_RESULTS)
        # Sanitize.
        self.sanitize_running = False
        self.sanitize_failed = False  # failure mode
        self.sanitize_restricted = False  # the failed operation had AUSE = 0
        self.sanitize_status = SanitizeStatus.NEVER_SANITIZED
        self.sanitize_progress = 0.0
        self.sanitize_passes = 0
        self.sanitize_cdw10 = 0
        self.sanitize_fault = False  # test hook: the next sanitize operation fails
        self._erased_snapshot: dict[int, int] | None = None  # allocation after the last sanitize
        self._sanitize_thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- device self-test --------------------------------------------------

    def start_self_test(self, ctrl: Controller, code: int, nsids: list[int]) -> None:
        with self.lock:
            if self.self_test is not None:
                raise NvmeError(CommandSpecificStatus.DEVICE_SELF_TEST_IN_PROGRESS)
            run = _SelfTestRun(code, nsids, ctrl.cntlid)
            self.self_test = run
        run.thread = threading.Thread(target=self._self_test_main, args=(run,), name="nvme-self-test", daemon=True)
        run.thread.start()

    def abort_self_test(self, reason: SelfTestResultCode, *, cntlid: int | None = None,
                        nsid: int | None = None, short_only: bool = False) -> None:
        """Abort the running self-test (if it matches) with ``reason``."""
        with self.lock:
            run = self.self_test
            if run is None:
                return
            if cntlid is not None and run.cntlid != cntlid:
                return
            if nsid is not None and nsid != NSID_ALL and nsid not in run.nsids:
                return
            if short_only and run.code != SelfTestCode.SHORT:
                return
            run.abort_reason = reason
            run.abort.set()
        if run.thread is not None and run.thread is not threading.current_thread():
            run.thread.join(5)

    def wait_self_test(self, timeout: float = 10.0) -> bool:
        run = self.self_test
        if run is not None and run.thread is not None:
            run.thread.join(timeout)
        return self.self_test is None

    def _self_test_main(self, run: _SelfTestRun) -> None:
        result = SelfTestResult()
        result.result = SelfTestResultCode.NO_ERROR
        try:
            failure = self._self_test_work(run)
            if run.abort.is_set():
                result.result = run.abort_reason
            elif failure is not None:
                nsid, lba = failure
                result.result = SelfTestResultCode.KNOWN_SEGMENT_FAILED
                result.seg = SELF_TEST_MEDIA_SEGMENT
                result.nsid_valid = result.flba_valid = result.sct_valid = result.sc_valid = True
                result.nsid = nsid
                result.flba = lba
                result.sct = StatusCodeType.MEDIA
                result.sc = MediaStatus.UNRECOVERED_READ_ERROR
        except Exception:  # the device must survive a bug here
            log.exception("device self-test failed")
            result.result = SelfTestResultCode.FATAL_ERROR
        result.code = run.code
        result.poh = int(self.subsystem.health.power_on_seconds // 3600)
        with self.lock:
            self.self_test_results.appendleft(bytes(result))
            if self.self_test is run:
                self.self_test = None

    def _self_test_work(self, run: _SelfTestRun) -> tuple[int, int] | None:
        """Read the namespaces; the first unreadable block (nsid, lba) or None."""
        chunk = 1 << 20
        work: list[tuple[int, int, int]] = []  # (nsid, byte offset, length)
        for nsid in run.nsids:
            ns = self.subsystem.namespaces.get(nsid)
            if ns is None:
                continue
            size = ns.size_bytes
            if run.code == SelfTestCode.SHORT:
                size = min(size, self.short_self_test_bytes)
            work.extend((nsid, off, min(chunk, size - off)) for off in range(0, size, chunk))
        steps = max(1, len(work))
        start = time.monotonic()
        failure: tuple[int, int] | None = None
        # The media's own map of unreadable blocks is checked whole.
        for nsid in run.nsids:
            ns = self.subsystem.namespaces.get(nsid)
            if ns is not None and ns.uncorrectable:
                lba = min(ns.uncorrectable)
                if failure is None:
                    failure = (nsid, lba)
        buf = bytearray(chunk)
        for i in range(steps):
            if i < len(work):
                nsid, off, length = work[i]
                ns = self.subsystem.namespaces.get(nsid)
                if ns is None:
                    run.abort_reason = SelfTestResultCode.ABORTED_NS_REMOVED
                    run.abort.set()
                    return failure
                try:
                    view = memoryview(buf)[:length]
                    if off + length <= ns.data.size:
                        ns.data.readinto(off, [view])
                except (BackendError, OSError, ValueError):
                    if failure is None:
                        failure = (nsid, off // ns.block_size)
            duration_of = (lambda: self.short_self_test_seconds) if run.code == SelfTestCode.SHORT \
                else (lambda: self.extended_self_test_seconds)

            def progress(fraction: float) -> None:
                run.percent = max(run.percent, min(99, int(fraction * 100)))

            if self._pace(start, (i + 1) / steps, duration_of, run.abort, progress):
                if self._stop.is_set() and not run.abort.is_set():
                    run.abort_reason = SelfTestResultCode.ABORTED_UNKNOWN
                    run.abort.set()
                return failure
        return failure

    def _pace(self, start: float, fraction: float, duration_of, event: threading.Event, progress) -> bool:
        """Wait until ``fraction`` of the operation's duration has passed
        since ``start``, reporting progress as time goes; True when
        ``event`` (or the subsystem's stop) ends the wait early."""
        while True:
            duration = duration_of()
            elapsed = time.monotonic() - start
            target = duration * fraction
            progress(min(fraction, elapsed / duration) if duration > 0 else fraction)
            if elapsed >= target:
                return event.is_set() or self._stop.is_set()
            if event.wait(min(0.02, target - elapsed)) or self._stop.is_set():
                return True

    def self_test_log(self) -> bytes:
        page = DeviceSelfTestLog()
        with self.lock:
            run = self.self_test
            if run is not None:
                page.current_operation = run.code
                page.completion = run.percent
            results = list(self.self_test_results)
        for i in range(SELF_TEST_RESULTS):
            if i < len(results):
                page.result[i].raw[:] = results[i]
            else:
                page.result[i].result = SelfTestResultCode.UNUSED
        return bytes(page)

    # -- sanitize -------------------------------------------------------------

    @property
    def sanitize_active(self) -> bool:
        return self.sanitize_running or self.sanitize_failed

    def gate(self, ctrl: Controller, req: Request) -> None:
        """``subsystem.command_gate`` while a sanitize runs or failed."""
        running = self.sanitize_running
        if not running and not self.sanitize_failed:
            return
        if req.admin:
            op = req.opcode
            if op in SANITIZE_ALLOWED_ADMIN:
                return
            if op == AdminOpcode.GET_LOG_PAGE and req.cmd.lid in SANITIZE_ALLOWED_LOGS:
                return
            if op == AdminOpcode.SANITIZE and not running:
                return
        if running:
            raise NvmeError(GenericStatus.SANITIZE_IN_PROGRESS, dnr=False)
        raise NvmeError(GenericStatus.SANITIZE_FAILED)

    def _set_gate(self) -> None:
        self.subsystem.command_gate = self.gate if self.sanitize_active else None
        self.subsystem.io_state_changed()

    def exit_failure_mode(self) -> None:
        with self.lock:
            if not self.sanitize_failed:
                return
            if self.sanitize_restricted:
                # Restricted completion mode: only a successful sanitize
                # operation ends the failure mode.
                raise NvmeError(GenericStatus.SANITIZE_FAILED)
            self.sanitize_failed = False
            self._set_gate()

    def start_sanitize(self, action: int, cdw10: int, *, ause: bool, passes: int,
                       pattern: int, invert: bool, ndas: bool) -> None:
        with self.lock:
            if self.sanitize_running:
                raise NvmeError(GenericStatus.SANITIZE_IN_PROGRESS, dnr=False)
            if self.sanitize_failed and self.sanitize_restricted and ause:
                raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10, bit=3,
                                msg="AUSE after a failure in restricted completion mode")
            self.sanitize_running = True
            self.sanitize_failed = False
            self.sanitize_restricted = not ause
            self.sanitize_status = SanitizeStatus.IN_PROGRESS
            self.sanitize_progress = 0.0
            self.sanitize_passes = 0
            self.sanitize_cdw10 = cdw10
            self._erased_snapshot = None
            self._set_gate()
        self.abort_self_test(SelfTestResultCode.ABORTED_SANITIZE)
        # A new operation clears the Sanitize Operation Completed events not yet reported.
        for ctrl in list(self.subsystem.controllers.values()):
            with ctrl.lock:
                for event in [e for e in ctrl.pending_events
                              if e[0] == AsyncEventType.IO_COMMAND_SET and e[2] == LogPageId.SANITIZE]:
                    ctrl.pending_events.remove(event)
        args = (action, passes, pattern, invert, ndas)
        self._sanitize_thread = threading.Thread(target=self._sanitize_main, args=args,
                                                 name="nvme-sanitize", daemon=True)
        self._sanitize_thread.start()

    def wait_sanitize(self, timeout: float = 10.0) -> bool:
        thread = self._sanitize_thread
        if thread is not None:
            thread.join(timeout)
        return not self.sanitize_running

    def _sanitize_main(self, action: int, passes: int, pattern: int, invert: bool, ndas: bool) -> None:
        ok = True
        try:
            ok = self._sanitize_work(action, passes, pattern, invert, ndas)
        except Exception:
            log.exception("sanitize operation failed")
            ok = False
        if self.sanitize_fault:
            self.sanitize_fault = False
            ok = False
        with self.lock:
            self.sanitize_running = False
            self.sanitize_progress = 0.0
            if ok:
                self.sanitize_status = SanitizeStatus.COMPLETED
                self.sanitize_failed = False
                self._erased_snapshot = {
                    nsid: ns.data.allocated() for nsid, ns in self.subsystem.namespaces.items()
                }
            else:
                self.sanitize_status = SanitizeStatus.FAILED
                self.sanitize_failed = True
            self._set_gate()
        if ok:
            for ctrl in list(self.subsystem.controllers.values()):
                ctrl.post_event(AsyncEventType.IO_COMMAND_SET, SANITIZE_COMPLETED, LogPageId.SANITIZE)

    def _sanitize_work(self, action: int, passes: int, pattern: int, invert: bool, ndas: bool) -> bool:
        namespaces = [ns for _, ns in sorted(self.subsystem.namespaces.items())]
        chunk = 1 << 20
        overwrite = action == SanitizeAction.OVERWRITE
        rounds = passes if overwrite else 1
        units: list[tuple[Namespace, int]] = [(ns, p) for p in range(rounds) for ns in namespaces]
        steps = max(1, len(units))
        start = time.monotonic()
        for i in range(steps):
            if i < len(units):
                ns, p = units[i]
                with ns.lock:
                    if overwrite:
                        word = pattern ^ 0xFFFFFFFF if invert and p % 2 else pattern
                        fill = memoryview(word.to_bytes(4, "little") * (chunk // 4))
                        for backend in (ns.data, ns.meta):
                            if backend is None:
                                continue
                            for off in range(0, backend.size, chunk):
                                n = min(chunk, backend.size - off)
                                backend.write(off, [fill[:n]])
                        if p == rounds - 1 and not ndas:
                            # No-Deallocate After Sanitize clear: the blocks
                            # are deallocated once overwritten (read as zeroes).
                            _erase(ns, deallocate=True)
                    else:
                        _erase(ns, deallocate=not ndas)
                    ns.uncorrectable.clear()
                if overwrite and (i + 1) % max(1, len(namespaces)) == 0:
                    self.sanitize_passes = min(31, (i + 1) // max(1, len(namespaces)))

            def progress(fraction: float) -> None:
                self.sanitize_progress = max(self.sanitize_progress, fraction)

            if self._pace(start, (i + 1) / steps, lambda: self.sanitize_seconds, self._stop, progress):
                return False
        if overwrite:
            self.sanitize_passes = min(31, passes)
        return True

    def global_data_erased(self) -> bool:
        """SSTAT Global Data Erased: nothing written since the last sanitize
        operation (judged by the storage allocated since it completed)."""
        snap = self._erased_snapshot
        if snap is None or self.sanitize_status != SanitizeStatus.COMPLETED:
            return False
        current = {nsid: ns.data.allocated() for nsid, ns in self.subsystem.namespaces.items()}
        return all(current.get(nsid, 0) <= size for nsid, size in snap.items()) and set(current) <= set(snap)

    def sanitize_log(self) -> bytes:
        page = SanitizeStatusLog()
        with self.lock:
            if self.sanitize_running:
                page.sprog = min(0xFFFE, int(self.sanitize_progress * 0x10000))
            else:
                page.sprog = 0xFFFF
            page.status = self.sanitize_status
            page.passes = self.sanitize_passes
            page.global_data_erased = self.global_data_erased()
            page.scdw10 = self.sanitize_cdw10
        seconds = max(1, math.ceil(self.sanitize_seconds))
        page.eto = page.etond = seconds * 16  # the worst case: 16 passes
        page.etbe = page.etbend = seconds
        page.etce = page.etcend = SanitizeStatusLog.NO_ESTIMATE  # crypto erase is not supported
        return bytes(page)

    # -- resets and teardown ---------------------------------------------------

    def controller_reset(self, ctrl: Controller) -> None:
        """A Controller Level Reset aborts a short self-test that controller
        started; an extended one and a sanitize operation carry on."""
        self.abort_self_test(SelfTestResultCode.ABORTED_BY_RESET, cntlid=ctrl.cntlid, short_only=True)

    def namespace_removed(self, nsid: int) -> None:
        self.abort_self_test(SelfTestResultCode.ABORTED_NS_REMOVED, nsid=nsid)

    def stop(self) -> None:
        """Stop the background threads (subsystem close)."""
        self._stop.set()
        for thread in (self._sanitize_thread, self.self_test.thread if self.self_test else None):
            if thread is not None and thread is not threading.current_thread():
                thread.join(5)


def _erase(ns: Namespace, *, deallocate: bool) -> None:
    for backend in (ns.data, ns.meta):
        if backend is not None:
            if deallocate:
                backend.deallocate(0, backend.size)
            else:
                backend.write_zeroes(0, backend.size)


def operations(subsys: Subsystem) -> BackgroundOperations:
    ops = getattr(subsys, "operations", None)
    if ops is None:
        ops = subsys.operations = BackgroundOperations(subsys)
    return ops


# ----------------------------------------------------------------------------
# Identify Controller fields


def fill_identify_controller(ctrl: Controller, idc: IdentifyController) -> None:
    """The Identify Controller fields that describe these commands."""
    subsys = ctrl.subsystem
    fw = subsys.firmware
    ops = operations(subsys)
    idc.oacs_format = True
    idc.oacs_fw = True
    idc.oacs_ns_mgmt = True
    idc.oacs_self_test = True
    idc.frmw = fw.frmw
    idc.fwug = fw.fwug
    idc.mtfa = fw.mtfa
    idc.tnvmcap = subsys.capacity
    idc.unvmcap = subsys.unallocated_capacity()
    idc.edstt = max(1, math.ceil(ops.extended_self_test_seconds / 60))
    idc.dsto = 1  # one device self-test operation at a time in the NVM subsystem
    idc.sanicap_bes = True
    idc.sanicap_ows = True
    idc.sanicap_ces = False
    idc.sanicap_nodmmas = 1  # media not additionally modified after sanitize with NDAS
    idc.fna_format_all = False
    idc.fna_sec_erase_all = False
    idc.fna_crypto_erase = False


# ----------------------------------------------------------------------------
# Namespace Management


def _ns_mgmt_transfer(ctrl: Controller, req: Request) -> int:
    """Checked before any data moves: SEL, and for a create NSID and CSI."""
    sel = req.cmd.sel
    if sel == NsManagementSelect.DELETE:
        return 0
    if sel != NsManagementSelect.CREATE:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10, msg="reserved SEL")
    if req.sqe.nsid != 0:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_NSID, msg="NSID must be 0 for create")
    if req.cmd.csi != 0:
        raise NvmeError(CommandSpecificStatus.IOCS_NOT_SUPPORTED, param=_CDW11 + 3)
    return IdentifyNamespace.SIZE


@admin_command(AdminOpcode.NAMESPACE_MANAGEMENT, transfer=_ns_mgmt_transfer, ns=None, effects=_NIC | _CSE_CTRL)
def namespace_management(ctrl: Controller, req: Request):
    sel = req.cmd.sel
    if sel == NsManagementSelect.CREATE:
        return _ns_create(ctrl, req)
    if sel == NsManagementSelect.DELETE:
        return _ns_delete(ctrl, req)
    raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10, msg="reserved SEL")


def _ns_create(ctrl: Controller, req: Request) -> None:
    subsys = ctrl.subsystem  # NSID and CSI were checked by _ns_mgmt_transfer
    spec = IdentifyNamespace.view(req.read_data(IdentifyNamespace.SIZE))
    nsze, ncap = spec.nsze, spec.ncap
    if nsze == 0 or ncap == 0 or ncap > nsze:
        raise NvmeError(GenericStatus.INVALID_FIELD, msg="NSZE/NCAP")
    if ncap < nsze and not getattr(subsys, "thin_provisioning", True):
        raise NvmeError(CommandSpecificStatus.THIN_PROVISIONING_NOT_SUPPORTED)
    formats = DEFAULT_LBA_FORMATS
    index = spec.lba_format_index
    if index >= len(formats):
        raise NvmeError(CommandSpecificStatus.INVALID_FORMAT, msg="FLBAS names no supported LBA format")
    fmt = formats[index]
    pi_type = spec.dps_pi_type
    if pi_type > 3 or (pi_type and fmt.metadata_size < 8):
        raise NvmeError(CommandSpecificStatus.INVALID_FORMAT, msg="DPS not supported with this format")
    if nsze * fmt.data_size >= 1 << 63:
        raise NvmeError(GenericStatus.INVALID_FIELD, msg="NSZE too large")
    with subsys.lock:
        if ncap * fmt.data_size > subsys.unallocated_capacity():
            raise NvmeError(CommandSpecificStatus.NAMESPACE_INSUFFICIENT_CAPACITY)
        nsid = subsys.free_nsid()
        if nsid is None:
            raise NvmeError(CommandSpecificStatus.NAMESPACE_ID_UNAVAILABLE)
        ns = Namespace(
            nsid,
            nsze,
            lba_format=index,
            formats=formats,
            extended=spec.flbas_extended,
            pi_type=pi_type,
            pi_first=spec.dps_pi_first if pi_type else False,
            backends=subsys.namespace_backends(nsid),
            shared=spec.nmic_shared,
        )
        if ncap < nsze:
            ns.ncap_bytes = ncap * fmt.data_size
        # Namespace Management does not attach: Namespace Attachment does.
        subsys.add_namespace(ns, attach=False)
    req.cqe.dw0 = nsid


def _ns_delete(ctrl: Controller, req: Request) -> None:
    subsys = ctrl.subsystem
    nsid = req.sqe.nsid
    if nsid == NSID_ALL:
        nsids = sorted(subsys.namespaces)
    elif not _nsid_valid(subsys, nsid):
        raise NvmeError(GenericStatus.INVALID_NAMESPACE_OR_FORMAT, param=_NSID)
    elif nsid not in subsys.namespaces:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_NSID, msg="no such namespace")
    else:
        nsids = [nsid]
    ops = operations(subsys)
    for n in nsids:
        ops.namespace_removed(n)
        try:
            subsys.remove_namespace(n)
        except KeyError:
            pass  # deleted meanwhile


# ----------------------------------------------------------------------------
# Namespace Attachment


def _ns_attach_transfer(ctrl: Controller, req: Request) -> int:
    """Checked before any data moves: SEL and NSID."""
    if req.cmd.sel not in (NsAttachmentSelect.ATTACH, NsAttachmentSelect.DETACH):
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10, msg="reserved SEL")
    nsid = req.sqe.nsid
    if nsid == NSID_ALL:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_NSID)
    if not _nsid_valid(ctrl.subsystem, nsid):
        raise NvmeError(GenericStatus.INVALID_NAMESPACE_OR_FORMAT, param=_NSID)
    return ControllerList.SIZE


@admin_command(AdminOpcode.NAMESPACE_ATTACHMENT, transfer=_ns_attach_transfer, ns=None,
               effects=_NIC | _CSE_CTRL)
def namespace_attachment(ctrl: Controller, req: Request) -> None:
    subsys = ctrl.subsystem
    sel = req.cmd.sel
    nsid = req.sqe.nsid
    clist = ControllerList.view(req.read_data(ControllerList.SIZE))
    count = clist.num
    if count == 0 or count > CTRL_LIST_MAX:
        raise NvmeError(CommandSpecificStatus.CONTROLLER_LIST_INVALID)
    ids = list(clist.identifiers[:count])
    if len(set(ids)) != len(ids):
        raise NvmeError(CommandSpecificStatus.CONTROLLER_LIST_INVALID, msg="duplicate identifiers")
    with subsys.lock:
        ns = subsys.namespaces.get(nsid)
        if ns is None:
            raise NvmeError(GenericStatus.INVALID_FIELD, param=_NSID, msg="no such namespace")
        # Each identifier names a live controller, or the controller ID of a
        # host without an association now (subsystem.py: the dynamic model
        # keeps attachments per host).  (cntlid, live controller, host).
        targets: list[tuple[int, Controller | None, str | None]] = []
        for cntlid in ids:
            target = subsys.controllers.get(cntlid)
            host = subsys.controller_host(target) if target is not None else subsys.offline_host(cntlid)
            if target is None and host is None:
                raise NvmeError(CommandSpecificStatus.CONTROLLER_LIST_INVALID, msg=f"no controller {cntlid}")
            targets.append((cntlid, target, host))
        if sel == NsAttachmentSelect.ATTACH:
            for cntlid, target, host in targets:
                if (cntlid in ns.attached) if target is not None else (host in ns.attached_hosts):
                    raise NvmeError(CommandSpecificStatus.NAMESPACE_ALREADY_ATTACHED)
            hosts = {host for _, _, host in targets}
            if not ns.shared and (ns.attached or len(ids) > 1 or ns.attached_hosts - hosts):
                raise NvmeError(CommandSpecificStatus.NAMESPACE_IS_PRIVATE)
            for cntlid, target, host in targets:
                if target is not None:
                    ns.attached.add(cntlid)
                if host is not None:
                    ns.attached_hosts.add(host)
                    ns.detached_hosts.discard(host)
        else:
            for cntlid, target, host in targets:
                if (cntlid not in ns.attached) if target is not None else (host not in ns.attached_hosts):
                    raise NvmeError(CommandSpecificStatus.NAMESPACE_NOT_ATTACHED)
            for cntlid, target, host in targets:
                ns.attached.discard(cntlid)
                if host is not None:
                    ns.attached_hosts.discard(host)
                    if ns.auto_attach:
                        ns.detached_hosts.add(host)
    subsys.namespace_changed([nsid], [target for _, target, _ in targets if target is not None])


# ----------------------------------------------------------------------------
# Firmware Image Download and Commit


def _fw_transfer(ctrl: Controller, req: Request) -> int:
    length = req.cmd.length
    if ctrl.max_transfer and length > ctrl.max_transfer:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10, msg="piece larger than MDTS")
    if req.cmd.offset + length > ctrl.subsystem.firmware.max_image_size:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW11, msg="piece beyond the largest image")
    return length


@admin_command(AdminOpcode.FIRMWARE_IMAGE_DOWNLOAD, transfer=_fw_transfer, ns=None)
def firmware_image_download(ctrl: Controller, req: Request) -> None:
    ctrl.subsystem.firmware.download(ctrl.cntlid, req.cmd.offset, req.read_data(req.data_len))


@admin_command(AdminOpcode.FIRMWARE_COMMIT, ns=None, effects=_CCC | _CSE_CTRL)
def firmware_commit(ctrl: Controller, req: Request) -> None:
    subsys = ctrl.subsystem
    cmd = req.cmd
    if subsys.firmware.commit(ctrl.cntlid, cmd.fs, cmd.ca):
        from .subsystem import NoticeInfo

        for each in list(subsys.controllers.values()):
            each.post_event(AsyncEventType.NOTICE, NoticeInfo.FIRMWARE_ACTIVATION_STARTING, LogPageId.FW_SLOT)


@log_page(LogPageId.FW_SLOT)
def firmware_slot_log(ctrl: Controller, req: Request) -> bytes:
    return ctrl.subsystem.firmware.log_page()


# ----------------------------------------------------------------------------
# Format NVM


@admin_command(AdminOpcode.FORMAT_NVM, ns=None, effects=_LBCC | _NCC | _NIC | _CSE_NS)
def format_nvm(ctrl: Controller, req: Request) -> None:
    subsys = ctrl.subsystem
    cmd = req.cmd
    nsid = req.sqe.nsid
    if nsid == NSID_ALL:
        targets = ctrl.active_namespaces()
    else:
        ns = ctrl.namespace(nsid)
        if ns is None:
            raise ctrl.nsid_error(nsid)
        targets = [ns]
    ses = cmd.ses
    if ses > SecureEraseSetting.CRYPTOGRAPHIC_ERASE:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10 + 1, bit=1, msg="reserved SES")
    if ses == SecureEraseSetting.CRYPTOGRAPHIC_ERASE:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10 + 1, bit=1,
                        msg="cryptographic erase is not supported (FNA bit 2)")
    pi = cmd.pi
    if pi > 3:
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10, bit=5, msg="reserved PI type")
    lbaf = cmd.lbaf
    for ns in targets:
        if lbaf >= len(ns.formats):
            raise NvmeError(CommandSpecificStatus.INVALID_FORMAT, param=_CDW10)
        if pi and ns.formats[lbaf].metadata_size < 8:
            raise NvmeError(CommandSpecificStatus.INVALID_FORMAT, msg="PI needs 8 bytes of metadata")
    ops = operations(subsys)
    for ns in targets:
        ops.abort_self_test(SelfTestResultCode.ABORTED_FORMAT, nsid=ns.nsid)
        with ns.lock:
            ns.reformat(lbaf, extended=cmd.mset, pi_type=pi, pi_first=cmd.pil if pi else False)
    for ns in targets:
        attached = [subsys.controllers[c] for c in sorted(ns.attached) if c in subsys.controllers]
        subsys.namespace_changed([ns.nsid], attached)


# ----------------------------------------------------------------------------
# Device Self-test


@admin_command(AdminOpcode.DEVICE_SELF_TEST, ns=None)
def device_self_test(ctrl: Controller, req: Request) -> None:
    ops = operations(ctrl.subsystem)
    stc = req.cmd.stc
    if stc == SelfTestCode.ABORT:
        ops.abort_self_test(SelfTestResultCode.ABORTED_BY_COMMAND)
        return
    if stc not in (SelfTestCode.SHORT, SelfTestCode.EXTENDED):
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10, msg="unsupported self-test code")
    nsid = req.sqe.nsid
    if nsid == 0:
        nsids: list[int] = []
    elif nsid == NSID_ALL:
        nsids = [ns.nsid for ns in ctrl.active_namespaces()]
    else:
        if ctrl.namespace(nsid) is None:
            raise ctrl.nsid_error(nsid)
        nsids = [nsid]
    ops.start_self_test(ctrl, stc, nsids)


@log_page(LogPageId.DEVICE_SELF_TEST)
def device_self_test_log(ctrl: Controller, req: Request) -> bytes:
    return operations(ctrl.subsystem).self_test_log()


# ----------------------------------------------------------------------------
# Sanitize


@admin_command(AdminOpcode.SANITIZE, ns=None, effects=_LBCC | _NCC | _CSE_CTRL)
def sanitize(ctrl: Controller, req: Request) -> None:
    subsys = ctrl.subsystem
    ops = operations(subsys)
    cmd = req.cmd
    action = cmd.sanact
    if action == SanitizeAction.EXIT_FAILURE_MODE:
        ops.exit_failure_mode()
        return
    if action not in (SanitizeAction.BLOCK_ERASE, SanitizeAction.OVERWRITE):
        # 0 and 5-7 are reserved; crypto erase is not supported (SANICAP bit 0).
        raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10, msg="sanitize action not supported")
    pending = subsys.firmware.pending_reset_status()
    if pending is not None:
        raise NvmeError(pending)
    ops.start_sanitize(
        action,
        cmd.cdw10,
        ause=cmd.ause,
        passes=cmd.owpass or 16,
        pattern=cmd.ovrpat,
        invert=cmd.oipbp,
        ndas=cmd.ndas,
    )


@log_page(LogPageId.SANITIZE)
def sanitize_status_log(ctrl: Controller, req: Request) -> bytes:
    return operations(ctrl.subsystem).sanitize_log()
