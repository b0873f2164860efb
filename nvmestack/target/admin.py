"""Admin command handlers (NVMe 2.0 base specification, section 5): Identify,
Get Log Page, Set/Get Features, Asynchronous Event Request, Abort, Keep
Alive, and Create/Delete I/O Submission/Completion Queue.

The management commands (Namespace Management and Attachment, Firmware,
Format NVM, Device Self-test, Sanitize) are in ``admin_mgmt.py``; the
feature values in ``features.py``.

Log pages are built by functions registered with
:func:`~nvmestack.target.commands.log_page`; Get Log Page here does what is
common to all of them: the page size, offset and length (partial reads),
dword alignment, NSID scope, the unsupported-LID status, and clearing the
asynchronous event the page reports (RAE).  The pages built here are the
Supported Log Pages (00h), Error Information (01h), Changed Namespace List
(04h) and Commands Supported and Effects (05h).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..spec.admin import Cns
from ..spec.identify import (
    CTRL_LIST_MAX,
    IDENTIFY_DATA_SIZE,
    NS_LIST_MAX,
    NSID_BROADCAST,
    Cmic,
    ControllerList,
    ControllerType,
    Ctratt,
    IdentifyController,
    IdentifyControllerNvm,
    IdentifyIoCommandSet,
    IdentifyNamespace,
    IoCommandSetVector,
    IdentifyNamespaceIndependent,
    Lpa,
    NamespaceList,
    NidType,
    Oaes,
    Oncs,
    SglSupport,
    encode_ns_id_descriptors,
)
from ..spec.log import (
    CHANGED_NS_LIST_OVERFLOW,
    ChangedNamespaceList,
    CommandsSupportedAndEffects,
    ErrorInformationEntry,
    LogPageId,
    SupportedLogPages,
)
from ..spec.opcodes import AdminOpcode, CommandSet
from ..spec.registers import CcCss
from ..spec.status import CommandSpecificStatus, GenericStatus
from .commands import (
    ADMIN_COMMANDS,
    IO_COMMANDS,
    LOG_PAGES,
    admin_command,
    log_page,
    log_pages_of,
)
from .controller import AERL, ERROR_LOG_ENTRIES
from .errors import NvmeError
from .features import IOCS_COMBINATIONS, NPSS, enabled_command_sets, feature_transfer_length
from .namespace import DEFAULT_LBA_FORMATS

if TYPE_CHECKING:
    from .controller import Controller
    from .request import Request

__all__ = [
    "identify_controller",
    "common_namespace",
    "ACL",
    "NSID_SCOPED_LOG_PAGES",
    "SQES",
    "CQES",
]

# Abort Command Limit, 0's based: four Abort commands outstanding at once.
ACL = 3
# Required (and maximum) queue entry sizes, as powers of two.
SQES = 6  # 64-byte submission queue entries
CQES = 4  # 16-byte completion queue entries
# Maximum power of power state 0, in 0.01 W.
PS0_MAX_POWER = 900
# Keep Alive Support: 100 ms granularity.
KAS = 1

# Log pages whose builder checks the NSID itself (namespace-scoped pages).
# Every other page is controller (or subsystem) wide: NSID must be 0h or
# FFFFFFFFh, else Invalid Field in Command (LPA bit 0 is cleared: the SMART
# log is not kept per namespace).
NSID_SCOPED_LOG_PAGES: set[int] = set()

# Byte offsets in the SQE of the fields errors point at (error log PEL).
_NSID = 4
_PRP1 = 24
_CDW10 = 40
_CDW10_HI = 42
_CDW11 = 44
_CDW11_HI = 46
_CSI = 47
_LPOL = 48


def _nsid_valid(ctrl: "Controller", nsid: int) -> bool:
    """A valid NSID of the subsystem (1..NN), allocated or not."""
    return 1 <= nsid <= ctrl.subsystem.max_namespaces


def _invalid_ns(msg: str = "") -> NvmeError:
    return NvmeError(GenericStatus.INVALID_NAMESPACE_OR_FORMAT, param=_NSID, msg=msg)


def _invalid_field(param: int, msg: str = "", bit: int = 0) -> NvmeError:
    return NvmeError(GenericStatus.INVALID_FIELD, param=param, bit=bit, msg=msg)


def _ascii(text: str, size: int) -> bytes:
    """An ASCII text field (SN, MN, FR): printable characters only, cut to fit."""
    raw = str(text).encode("ascii", "replace")
    return bytes(b if 0x20 <= b < 0x7F else 0x3F for b in raw)[:size]


# ============================================================================
# Identify


def identify_controller(ctrl: "Controller") -> IdentifyController:
    """The Identify Controller data structure (CNS 01h) of ``ctrl``."""
    sub = ctrl.subsystem
    idc = IdentifyController()
    # PCI Vendor ID and PCI Subsystem Vendor ID: a PCIe function's are the
    # ids of its configuration space (the spec wants the same values in
    # both); over fabrics the subsystem's configured ones, else 0h.
    pci_ids = getattr(ctrl, "pci_ids", None)
    vid, ssvid = pci_ids if pci_ids is not None else (getattr(sub, "vid", None), getattr(sub, "ssvid", None))
    idc.vid = int(vid or 0) & 0xFFFF
    idc.ssvid = int(ssvid or 0) & 0xFFFF
    idc.sn = _ascii(sub.serial, 20)
    idc.mn = _ascii(sub.model, 40)
    idc.fr = _ascii(sub.firmware_revision, 8)
    idc.rab = 6  # Recommended Arbitration Burst: 64 commands
    idc.ieee = sub.ieee_oui & 0xFFFFFF
    idc.cmic = Cmic.MULTI_CTRL  # a subsystem may have two or more controllers
    idc.mdts = ctrl.mdts
    idc.cntlid = ctrl.cntlid
    idc.ver = ctrl.regs.vs.value
    # The notices this controller reports: a discovery controller has no
    # namespaces or firmware, only its log page changes (as Linux nvmet's).
    idc.oaes = Oaes.DISCOVERY_LOG_CHANGE if sub.discovery else Oaes.NS_ATTR | Oaes.FW_ACTIVATION
    idc.ctratt = Ctratt.HOST_ID_128  # 128-bit Host Identifier (EXHID)
    idc.cntrltype = ControllerType.DISCOVERY if sub.discovery else ControllerType.IO
    # Optional admin commands: Format NVM, firmware, namespace management,
    # device self-test (admin_mgmt.py fills these in below); Doorbell Buffer
    # Config only if a transport provides it.
    idc.oacs = 0
    idc.acl = ACL
    idc.aerl = AERL
    idc.frmw_slot1_ro = True
    idc.frmw_slots = 7
    idc.frmw_no_reset = True
    idc.lpa = Lpa.CMD_EFFECTS | Lpa.EXTENDED_DATA
    idc.elpe = ERROR_LOG_ENTRIES - 1
    idc.npss = NPSS
    idc.apsta_apst = True  # the Autonomous Power State Transition feature is there
    health = sub.health
    idc.wctemp = int(getattr(health, "warning_temperature", 343) or 0) & 0xFFFF
    idc.cctemp = int(getattr(health, "critical_temperature", 353) or 0) & 0xFFFF
    idc.kas = KAS
    idc.sanicap_bes = True
    idc.sanicap_ows = True
    idc.sqes_min = idc.sqes_max = SQES
    idc.cqes_min = idc.cqes_max = CQES
    idc.maxcmd = min(ctrl.regs.cap.mqes + 1, 0xFFFF)
    idc.nn = sub.max_namespaces
    idc.oncs = (Oncs.COMPARE | Oncs.WRITE_UNCORRECTABLE | Oncs.DSM | Oncs.WRITE_ZEROES
                | Oncs.SAVE_SELECT | Oncs.TIMESTAMP | Oncs.VERIFY | Oncs.COPY)
    idc.fuses_compare_write = True
    idc.vwc_present = True
    idc.vwc_flush = 3  # Flush with NSID FFFFFFFFh is supported
    idc.awun = 0
    idc.awupf = 0
    idc.acwu = 0
    idc.ocfs = 1  # Copy Format 0h
    if ctrl.fabrics:
        # Byte aligned SGL data blocks, offsets for in-capsule data, the
        # transport's own data block descriptor (NVMe/TCP).
        idc.sgls_support = SglSupport.SUPPORTED
        idc.sgls_offset = True
        idc.sgls_transport = True
    elif getattr(ctrl, "sgl_supported", True):  # a PCIe function may have no SGLs: SGLS 0h
        # SGL data block, segment, last segment and bit bucket descriptors;
        # MPTR holding an SGL descriptor (PSDT 10b) and SGLs longer than the
        # transfer are accepted (target/pci/dma.py).
        idc.sgls_support = SglSupport.SUPPORTED
        idc.sgls_bit_bucket = True
        idc.sgls_mptr_sgl = True
        idc.sgls_oversize = True
    idc.mnan = sub.max_namespaces
    idc.subnqn = sub.nqn.encode("utf-8")[:255]
    if ctrl.fabrics:
        icd = int(getattr(ctrl, "in_capsule_data_size", 0) or 0)
        idc.ioccsz = (64 + icd) // 16
        idc.iorcsz = 1
        idc.icdoff = 0
        idc.fcatt_static = False
        idc.msdbd = 1
    psd = idc.psd[0]
    psd.mp = PS0_MAX_POWER
    try:  # the management commands' own fields (OACS, FRMW, capacities, ...)
        from .admin_mgmt import fill_identify_controller
    except ImportError:  # pragma: no cover - admin_mgmt is part of the package
        pass
    else:
        fill_identify_controller(ctrl, idc)
    if sub.discovery:
        _discovery_identify(idc)
    return idc


def _discovery_identify(idc: IdentifyController) -> None:
    """A discovery controller has no namespaces, no NVM commands, no
    management and no power management: what it does not have is not
    advertised (as Linux nvmet's discovery Identify), so a host does not
    read an effects log or set APST/Timestamp it does not accept."""
    idc.lpa = Lpa.EXTENDED_DATA
    idc.apsta_apst = False
    idc.oncs = 0
    idc.oacs = 0
    idc.fuses_compare_write = False
    idc.vwc_present = False
    idc.vwc_flush = 0
    idc.ocfs = 0
    idc.nn = 0
    idc.mnan = 0
    idc.sanicap_bes = idc.sanicap_ows = False
    idc.frmw = 0
    idc.npss = 0


def common_namespace(ctrl: "Controller") -> IdentifyNamespace:
    """Identify Namespace with NSID FFFFFFFFh: the capabilities common to
    every namespace (LBA formats, metadata, protection, deallocation)."""
    formats = getattr(ctrl.subsystem, "lba_formats", None) or DEFAULT_LBA_FORMATS
    idns = IdentifyNamespace()
    idns.nlbaf = len(formats) - 1
    for i, fmt in enumerate(formats):
        entry = idns.lbaf[i]
        entry.ms = fmt.metadata_size
        entry.lbads = fmt.lbads
        entry.rp = fmt.rp
    idns.mc_extended = True
    idns.mc_separate = True
    idns.dpc = 0x1F  # PI types 1-3, first or last eight bytes
    idns.dlfeat_read = 1
    idns.dlfeat_write_zeroes = True
    return idns


def _check_nsid(ctrl: "Controller", nsid: int) -> None:
    """An NSID that names one namespace: 1..NN (FFFFFFFFh and 0 are not)."""
    if not _nsid_valid(ctrl, nsid):
        raise _invalid_ns(f"NSID {nsid:#x} is not a valid namespace identifier")


def _check_csi(ctrl: "Controller", req: "Request") -> None:
    """A command-set-specific CNS (05h, 06h, 07h, 1Ah, 1Bh): CSI must name an
    I/O command set this controller supports and has enabled (CC.CSS and
    the I/O Command Set Profile); only the NVM command set is implemented.
    Anything else is Invalid Field in Command."""
    csi = req.cmd.csi
    if csi >= 64 or not enabled_command_sets(ctrl) >> csi & 1:
        raise _invalid_field(_CSI, f"command set {csi} is not supported or not enabled")


def _id_namespace(ctrl: "Controller", req: "Request") -> bytes:
    nsid = req.cmd.nsid
    if nsid == NSID_BROADCAST:
        return bytes(common_namespace(ctrl))
    _check_nsid(ctrl, nsid)
    ns = ctrl.namespace(nsid)
    return bytes(ns.identify()) if ns is not None else bytes(IDENTIFY_DATA_SIZE)


def _id_controller(ctrl: "Controller", req: "Request") -> bytes:
    return bytes(identify_controller(ctrl))


def _ns_list(nsids, above: int) -> bytes:
    if above >= NSID_BROADCAST - 1:
        raise _invalid_ns("a namespace list starts below FFFFFFFEh")
    ids = sorted(n for n in nsids if n > above)[:NS_LIST_MAX]
    return bytes(NamespaceList.from_nsids(ids))


def _id_active_list(ctrl: "Controller", req: "Request") -> bytes:
    return _ns_list([ns.nsid for ns in ctrl.active_namespaces()], req.cmd.nsid)


def _id_descriptors(ctrl: "Controller", req: "Request") -> bytes:
    nsid = req.cmd.nsid
    _check_nsid(ctrl, nsid)
    ns = ctrl.namespace(nsid)
    if ns is None:
        raise _invalid_field(_NSID, f"namespace {nsid} is not active")
    descriptors = []
    if any(ns.eui64):
        descriptors.append((NidType.EUI64, ns.eui64))
    if any(ns.nguid):
        descriptors.append((NidType.NGUID, ns.nguid))
    if any(ns.uuid):
        descriptors.append((NidType.UUID, ns.uuid))
    descriptors.append((NidType.CSI, int(CommandSet.NVM)))
    return bytes(encode_ns_id_descriptors(descriptors))


def _id_csi_namespace(ctrl: "Controller", req: "Request") -> bytes:
    # The NVM Command Set specific Identify Namespace (CNS 05h, CSI 00h):
    # LBSTM 0 (no storage tags), PIC 0, every extended LBA format with the
    # 16-bit guard protection information format: all zeroes, for an active
    # or an inactive NSID alike, and for FFFFFFFFh (the capabilities common
    # to all namespaces; namespace management is supported).
    if req.cmd.nsid != NSID_BROADCAST:
        _check_nsid(ctrl, req.cmd.nsid)
    return bytes(IDENTIFY_DATA_SIZE)


def _id_csi_controller(ctrl: "Controller", req: "Request") -> bytes:
    # No Verify, Write Zeroes, Write Uncorrectable or Dataset Management
    # limits beyond MDTS and the command formats: every field 0h.
    return bytes(IdentifyControllerNvm())


def _id_csi_active_list(ctrl: "Controller", req: "Request") -> bytes:
    # Every namespace is an NVM namespace: the active list.
    return _id_active_list(ctrl, req)


def _id_csi_allocated_list(ctrl: "Controller", req: "Request") -> bytes:
    return _id_allocated_list(ctrl, req)


def _id_csi_allocated_namespace(ctrl: "Controller", req: "Request") -> bytes:
    # As CNS 05h, for an allocated NSID (zero filled when unallocated).
    _check_nsid(ctrl, req.cmd.nsid)
    return bytes(IDENTIFY_DATA_SIZE)


def _id_command_sets(ctrl: "Controller", req: "Request") -> bytes:
    """Identify I/O Command Set data structure (CNS 1Ch): the combinations
    the controller supports.  CNTID FFFFh means this controller; every
    controller of the subsystem supports the same combinations, so the
    structure is the same whichever one CNTID names."""
    ids = IdentifyIoCommandSet()
    ids.iocsc = [int(vector) for vector in IOCS_COMBINATIONS]
    return bytes(ids)


def _id_independent_namespace(ctrl: "Controller", req: "Request") -> bytes:
    nsid = req.cmd.nsid
    _check_nsid(ctrl, nsid)
    ns = ctrl.namespace(nsid)
    if ns is None:
        return bytes(IDENTIFY_DATA_SIZE)
    ind = IdentifyNamespaceIndependent()
    ind.nmic_shared = ns.shared
    ind.nstat_ready = True
    return bytes(ind)


def _id_allocated_list(ctrl: "Controller", req: "Request") -> bytes:
    return _ns_list(list(ctrl.subsystem.namespaces), req.cmd.nsid)


def _id_allocated_namespace(ctrl: "Controller", req: "Request") -> bytes:
    nsid = req.cmd.nsid
    _check_nsid(ctrl, nsid)
    ns = ctrl.subsystem.namespaces.get(nsid)
    return bytes(ns.identify()) if ns is not None else bytes(IDENTIFY_DATA_SIZE)


def _ctrl_list(cntlids, first: int) -> bytes:
    ids = sorted(c for c in cntlids if c >= first)[:CTRL_LIST_MAX]
    return bytes(ControllerList.from_ids(ids))


def _id_ns_controllers(ctrl: "Controller", req: "Request") -> bytes:
    nsid = req.cmd.nsid
    _check_nsid(ctrl, nsid)
    ns = ctrl.subsystem.namespaces.get(nsid)
    attached = ctrl.subsystem.attached_controller_ids(ns) if ns is not None else ()
    return _ctrl_list(attached, req.cmd.cntid)


def _id_controllers(ctrl: "Controller", req: "Request") -> bytes:
    return _ctrl_list(list(ctrl.subsystem.controllers), req.cmd.cntid)


_IDENTIFY: dict[int, Callable[["Controller", "Request"], bytes]] = {
    Cns.NS: _id_namespace,
    Cns.CTRL: _id_controller,
    Cns.NS_ACTIVE_LIST: _id_active_list,
    Cns.NS_DESC_LIST: _id_descriptors,
    Cns.CSI_NS: _id_csi_namespace,
    Cns.CSI_CTRL: _id_csi_controller,
    Cns.CSI_NS_ACTIVE_LIST: _id_csi_active_list,
    Cns.CSI_INDEPENDENT_NS: _id_independent_namespace,
    Cns.ALLOCATED_NS_LIST: _id_allocated_list,
    Cns.ALLOCATED_NS: _id_allocated_namespace,
    Cns.NS_CTRL_LIST: _id_ns_controllers,
    Cns.CTRL_LIST: _id_controllers,
    Cns.CSI_ALLOCATED_NS_LIST: _id_csi_allocated_list,
    Cns.CSI_ALLOCATED_NS: _id_csi_allocated_namespace,
    Cns.COMMAND_SET_STRUCTURE: _id_command_sets,
}

# The CNS values whose structure depends on CSI (CDW11 31:24).
_CSI_SPECIFIC_CNS = frozenset({
    Cns.CSI_NS, Cns.CSI_CTRL, Cns.CSI_NS_ACTIVE_LIST, Cns.CSI_ALLOCATED_NS_LIST, Cns.CSI_ALLOCATED_NS,
})


def _identify_transfer(ctrl: "Controller", req: "Request") -> int:
    cns = req.cmd.cns
    if cns not in _IDENTIFY or (cns == Cns.COMMAND_SET_STRUCTURE and not ctrl.regs.cap.css_iocs):
        raise _invalid_field(_CDW10, f"CNS {cns:#04x} is not supported")
    if cns in _CSI_SPECIFIC_CNS:
        _check_csi(ctrl, req)
    return IDENTIFY_DATA_SIZE


@admin_command(AdminOpcode.IDENTIFY, transfer=_identify_transfer, ns=None)
def identify(ctrl: "Controller", req: "Request"):
    """Identify: the 4096-byte data structure CNS selects."""
    data = _IDENTIFY[req.cmd.cns](ctrl, req)
    req.write_data(data[: req.data_len])


# ============================================================================
# Get Log Page


def _log_transfer(ctrl: "Controller", req: "Request") -> int:
    """The common fields of Get Log Page, checked before any data moves."""
    cmd = req.cmd
    lid = cmd.lid
    if lid not in LOG_PAGES:
        raise NvmeError(CommandSpecificStatus.INVALID_LOG_PAGE, param=_CDW10,
                        msg=f"log page {lid:#04x} is not supported")
    if cmd.ot:
        raise _invalid_field(58, "index offsets are not supported for this log page", bit=7)
    if cmd.offset & 3:
        raise _invalid_field(_LPOL, "the log page offset is not dword aligned")
    if lid not in NSID_SCOPED_LOG_PAGES and cmd.nsid not in (0, NSID_BROADCAST):
        raise _invalid_field(_NSID, f"log page {lid:#04x} is not kept per namespace")
    length = cmd.length
    if ctrl.max_transfer and length > ctrl.max_transfer:
        raise _invalid_field(_CDW10_HI, "the transfer exceeds MDTS")
    return length


@admin_command(AdminOpcode.GET_LOG_PAGE, transfer=_log_transfer, ns=None)
def get_log_page(ctrl: "Controller", req: "Request"):
    """Get Log Page (its common fields checked by ``_log_transfer``): the
    part of the page at the offset the host asked for; bytes past the end of
    the page read as zero."""
    cmd = req.cmd
    lid = cmd.lid
    offset = cmd.offset
    page = bytes(LOG_PAGES[lid](ctrl, req))
    if offset >= len(page):
        raise _invalid_field(_LPOL, f"offset {offset} is beyond the {len(page)}-byte log page")
    chunk = page[offset : offset + req.data_len]
    if req.data_len:
        req.write_data(chunk)
        if len(chunk) < req.data_len:
            req.write_data(bytes(req.data_len - len(chunk)), len(chunk))
    commit = req.context.pop("log_commit", None)
    if commit is not None:
        commit()
    ctrl.log_page_read(lid, cmd.rae)


@log_page(LogPageId.SUPPORTED_LOG_PAGES)
def supported_log_pages(ctrl: "Controller", req: "Request") -> bytes:
    """Supported Log Pages (00h): LSUPP for every page this device builds."""
    page = SupportedLogPages()
    for lid in log_pages_of(ctrl):
        if 0 <= lid <= 0xFF:
            page.lid_support[lid].lsupp = True
    return bytes(page)


@log_page(LogPageId.ERROR)
def error_information(ctrl: "Controller", req: "Request") -> bytes:
    """Error Information (01h): ELPE + 1 entries, most recent first; the
    entries no error filled are zero."""
    with ctrl.lock:
        entries = list(ctrl.error_log)
    page = bytearray(ErrorInformationEntry.SIZE * ERROR_LOG_ENTRIES)
    for i, entry in enumerate(entries[:ERROR_LOG_ENTRIES]):
        page[i * ErrorInformationEntry.SIZE : (i + 1) * ErrorInformationEntry.SIZE] = entry
    return bytes(page)


@log_page(LogPageId.CHANGED_NS)
def changed_namespace_list(ctrl: "Controller", req: "Request") -> bytes:
    """Changed Namespace List (04h): the namespaces changed since the page
    was last read (reading it empties it; RAE only keeps the event), or
    FFFFFFFFh alone when more than 1024 changed."""
    with ctrl.lock:
        reported = set(ctrl.changed_namespaces)
    valid = [n for n in reported if 1 <= n <= 0xFFFFFFFE]
    if len(valid) != len(reported) or len(valid) > ChangedNamespaceList.MAX_ENTRIES:
        page = ChangedNamespaceList()
        page.nsid = [CHANGED_NS_LIST_OVERFLOW]
    else:
        page = ChangedNamespaceList.build(valid)

    def commit() -> None:
        with ctrl.lock:
            ctrl.changed_namespaces.difference_update(reported)

    req.context["log_commit"] = commit
    return bytes(page)


# Create/Delete I/O queue commands exist only where queue_ops does.
_QUEUE_OPCODES = frozenset({
    AdminOpcode.DELETE_IO_SQ, AdminOpcode.CREATE_IO_SQ, AdminOpcode.DELETE_IO_CQ, AdminOpcode.CREATE_IO_CQ,
})


@log_page(LogPageId.CMD_EFFECTS)
def commands_supported_and_effects(ctrl: "Controller", req: "Request") -> bytes:
    """Commands Supported and Effects (05h): every admin opcode this
    controller runs, and the I/O opcodes of the NVM command set when it is
    the command set CC.CSS selects (000b), or with CC.CSS 110b the one CSI
    (CDW14) names and the selected combination enables.  For any other
    command set (the Zoned Namespace one nvme-cli asks for when CAP.CSS.IOCSS
    is set, say) no I/O command is supported: the I/O part is empty."""
    page = CommandsSupportedAndEffects()
    for opcode, handler in sorted(ADMIN_COMMANDS.items()):
        if opcode in _QUEUE_OPCODES and ctrl.queue_ops is None:
            continue
        page.acs[opcode].value = handler.effects | 1
    css = ctrl.regs.cc.css
    csi = req.cmd.csi if css == CcCss.ALL_IOCS else CommandSet.NVM  # CSI is ignored otherwise
    if csi == CommandSet.NVM and enabled_command_sets(ctrl) & IoCommandSetVector.NVM:
        for opcode, handler in sorted(IO_COMMANDS.items()):
            if 0 <= opcode <= 0xFF:
                page.iocs[opcode].value = handler.effects | 1
    return bytes(page)


# ============================================================================
# Set Features / Get Features


# The transfer step runs when the command is prepared: every field that can
# be checked without the data is checked there, so a command that fails sets
# up no transfer (no PRP is followed, no R2T is sent).


def _get_features_transfer(ctrl: "Controller", req: "Request") -> int:
    cmd = req.cmd
    ctrl.features.check_get(req)
    return feature_transfer_length(ctrl, cmd.fid, cmd.cdw11, sel=cmd.sel, setting=False)


def _set_features_transfer(ctrl: "Controller", req: "Request") -> int:
    cmd = req.cmd
    ctrl.features.check_set(req)
    return feature_transfer_length(ctrl, cmd.fid, cmd.cdw11, setting=True)


@admin_command(AdminOpcode.SET_FEATURES, transfer=_set_features_transfer, ns=None)
def set_features(ctrl: "Controller", req: "Request"):
    """Set Features (features.py)."""
    ctrl.features.set_features(req)


@admin_command(AdminOpcode.GET_FEATURES, transfer=_get_features_transfer, ns=None)
def get_features(ctrl: "Controller", req: "Request"):
    """Get Features (features.py)."""
    ctrl.features.get_features(req)


# ============================================================================
# Asynchronous Event Request, Abort, Keep Alive


@admin_command(AdminOpcode.ASYNC_EVENT_REQUEST, ns=None)
def async_event_request(ctrl: "Controller", req: "Request"):
    """Asynchronous Event Request: kept until an event completes it (at most
    AERL + 1 outstanding: Asynchronous Event Request Limit Exceeded)."""
    return ctrl.add_aer(req)


def _abortable(ctrl: "Controller", target: "Request") -> bool:
    """Whether a command can still be aborted: an Asynchronous Event Request
    waiting for an event, a command a fault holds back (delayed or never
    completed), or one whose owner marked it ``abortable``."""
    if target in ctrl.aer_requests:
        return True
    faults = ctrl.subsystem.faults
    parked = getattr(faults, "parked", None) if faults is not None else None
    if parked is not None and any(r is target for r in list(parked)):
        return True
    return bool(target.context.get("abortable"))


@admin_command(AdminOpcode.ABORT, ns=None)
def abort(ctrl: "Controller", req: "Request"):
    """Abort: end the command (SQID, CID) with Command Abort Requested if it
    has not started; completion dword 0 bit 0 is 0 when it was aborted, 1
    when not.  More than ACL + 1 outstanding Abort commands: Abort Command
    Limit Exceeded."""
    cmd = req.cmd
    sqid, cid = cmd.sqid, cmd.abort_cid
    target = None
    with ctrl.lock:
        others = sum(
            1 for r in ctrl.outstanding.values()
            if r is not req and r.admin and r.opcode == AdminOpcode.ABORT and not r.done
        )
        if others > ACL:
            raise NvmeError(CommandSpecificStatus.ABORT_COMMAND_LIMIT_EXCEEDED, dnr=False)
        candidate = ctrl.outstanding.get((sqid, cid))
        if candidate is not None and candidate is not req and not candidate.done and _abortable(ctrl, candidate):
            target = candidate
            if target in ctrl.aer_requests:
                ctrl.aer_requests.remove(target)
    aborted = False
    if target is not None:
        hook = target.context.get("on_abort")
        if callable(hook):
            hook(target)
        err = NvmeError(GenericStatus.ABORT_REQUESTED, dnr=False)
        target.context["error"] = err
        aborted = target.complete(err.status)
        resume = target.context.get("fault_resume")
        partner = resume[1] if isinstance(resume, tuple) and len(resume) == 2 else None
        if aborted and partner is not None and not partner.done:
            failed = NvmeError(GenericStatus.ABORTED_FAILED_FUSED, dnr=False)
            partner.context["error"] = failed
            partner.complete(failed.status)
    req.cqe.dw0 = 0 if aborted else 1


@admin_command(AdminOpcode.KEEP_ALIVE, ns=None)
def keep_alive(ctrl, req):
    """Keep Alive: restart the Keep Alive Timer."""
    ctrl.keep_alive()


# ============================================================================
# Create / Delete I/O Submission and Completion Queues


def _queue_ops(ctrl: "Controller"):
    if ctrl.queue_ops is None:
        # A Fabrics controller: I/O queues come from Connect.
        raise NvmeError(GenericStatus.INVALID_OPCODE, param=0)
    return ctrl.queue_ops


def _max_qid(ctrl: "Controller", submission: bool) -> int:
    nsqa, ncqa = ctrl.features.granted_queues()
    return (nsqa if submission else ncqa) + 1


def _check_new_queue(ctrl: "Controller", req: "Request", submission: bool, entry_size: int) -> None:
    cmd = req.cmd
    cap = ctrl.regs.cap
    if entry_size != (SQES if submission else CQES):
        raise NvmeError(CommandSpecificStatus.INVALID_QUEUE_SIZE, param=_CDW10_HI,
                        msg="CC.IOSQES/IOCQES do not give the supported entry size")
    existing = ctrl.io_sqs if submission else ctrl.io_cqs
    qid = cmd.qid
    if qid == 0 or qid > _max_qid(ctrl, submission) or qid in existing:
        raise NvmeError(CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER, param=_CDW10,
                        msg=f"queue {qid} is out of range or in use")
    if cmd.qsize == 0 or cmd.qsize > cap.mqes:
        raise NvmeError(CommandSpecificStatus.INVALID_QUEUE_SIZE, param=_CDW10_HI,
                        msg=f"QSIZE {cmd.qsize} (0's based) is not 1..{cap.mqes}")
    if not cmd.pc and cap.cqr:
        raise _invalid_field(_CDW11, "CAP.CQR: queues must be physically contiguous")
    if cmd.prp1 & (ctrl.page_size - 1):
        raise NvmeError(GenericStatus.PRP_OFFSET_INVALID, param=_PRP1,
                        msg="the queue base address is not memory page aligned")


@admin_command(AdminOpcode.CREATE_IO_CQ, ns=None)
def create_io_cq(ctrl: "Controller", req: "Request"):
    """Create I/O Completion Queue."""
    ops = _queue_ops(ctrl)
    cmd = req.cmd
    with ctrl.lock:
        _check_new_queue(ctrl, req, False, ctrl.regs.cc.iocqes)
        if cmd.iv >= int(ops.max_vectors):
            raise NvmeError(CommandSpecificStatus.INVALID_INTERRUPT_VECTOR, param=_CDW11_HI,
                            msg=f"interrupt vector {cmd.iv} does not exist")
        attrs = {"size": cmd.entries, "prp1": cmd.prp1, "contiguous": cmd.pc, "ien": cmd.ien, "iv": cmd.iv}
        ctrl.io_cqs[cmd.qid] = attrs  # reserved while the transport builds it
    _build_queue(ctrl, ctrl.io_cqs, cmd.qid, attrs,
                 lambda: ops.create_cq(cmd.qid, cmd.entries, cmd.prp1, cmd.pc, cmd.ien, cmd.iv))


def _build_queue(ctrl: "Controller", table: dict, qid: int, attrs: dict, create) -> None:
    """Let the transport build a queue reserved in ``table``; if it fails,
    the reservation goes."""
    try:
        create()
    except BaseException:
        with ctrl.lock:
            if table.get(qid) is attrs:
                del table[qid]
        raise


@admin_command(AdminOpcode.CREATE_IO_SQ, ns=None)
def create_io_sq(ctrl: "Controller", req: "Request"):
    """Create I/O Submission Queue."""
    ops = _queue_ops(ctrl)
    cmd = req.cmd
    with ctrl.lock:
        if cmd.cqid == 0 or cmd.cqid not in ctrl.io_cqs:
            raise NvmeError(CommandSpecificStatus.COMPLETION_QUEUE_INVALID, param=_CDW11_HI,
                            msg=f"completion queue {cmd.cqid} does not exist")
        _check_new_queue(ctrl, req, True, ctrl.regs.cc.iosqes)
        attrs = {"size": cmd.entries, "prp1": cmd.prp1, "contiguous": cmd.pc, "cqid": cmd.cqid,
                 "qprio": cmd.qprio}
        ctrl.io_sqs[cmd.qid] = attrs
    _build_queue(ctrl, ctrl.io_sqs, cmd.qid, attrs,
                 lambda: ops.create_sq(cmd.qid, cmd.entries, cmd.prp1, cmd.pc, cmd.cqid, cmd.qprio))


@admin_command(AdminOpcode.DELETE_IO_SQ, ns=None)
def delete_io_sq(ctrl: "Controller", req: "Request"):
    """Delete I/O Submission Queue: the commands still outstanding on it
    end with Command Aborted due to SQ Deletion."""
    ops = _queue_ops(ctrl)
    qid = req.cmd.qid
    with ctrl.lock:
        if qid == 0 or qid not in ctrl.io_sqs:
            raise NvmeError(CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER, param=_CDW10,
                            msg=f"submission queue {qid} does not exist")
        victims = [r for (sq, _cid), r in ctrl.outstanding.items() if sq == qid and not r.done]
    for victim in victims:
        err = NvmeError(GenericStatus.ABORTED_SQ_DELETION, dnr=False)
        victim.context["error"] = err
        victim.complete(err.status)
    ops.delete_sq(qid)
    with ctrl.lock:
        ctrl.io_sqs.pop(qid, None)


@admin_command(AdminOpcode.DELETE_IO_CQ, ns=None)
def delete_io_cq(ctrl: "Controller", req: "Request"):
    """Delete I/O Completion Queue: only once no submission queue uses it
    (else Invalid Queue Deletion)."""
    ops = _queue_ops(ctrl)
    qid = req.cmd.qid
    with ctrl.lock:
        if qid == 0 or qid not in ctrl.io_cqs:
            raise NvmeError(CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER, param=_CDW10,
                            msg=f"completion queue {qid} does not exist")
        if any(sq.get("cqid") == qid for sq in ctrl.io_sqs.values()):
            raise NvmeError(CommandSpecificStatus.INVALID_QUEUE_DELETION, param=_CDW10,
                            msg=f"submission queues still use completion queue {qid}")
    ops.delete_cq(qid)
    with ctrl.lock:
        ctrl.io_cqs.pop(qid, None)
