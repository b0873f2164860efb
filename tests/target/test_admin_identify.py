"""Identify (NVMe 2.0 base spec 5.17): every CNS value the device supports,
the data structures field by field, and the error statuses."""

import pytest

from nvmestack.spec.admin import Cns, Identify
from nvmestack.spec.identify import (
    ControllerList,
    ControllerType,
    IdentifyController,
    IdentifyControllerNvm,
    IdentifyNamespace,
    IdentifyNamespaceIndependent,
    NamespaceList,
    NidType,
    Oncs,
    SglSupport,
    decode_ns_id_descriptors,
)
from nvmestack.spec.log import ErrorInformationEntry
from nvmestack.spec.status import GenericStatus, Status, StatusCodeType
from nvmestack.target import Namespace, Subsystem
from nvmestack.target.admin import identify_controller

from .conftest import enable

NSID_ALL = 0xFFFFFFFF
ZERO = bytes(4096)


def run(ctrl, **fields):
    req = ctrl.submit(Identify(**fields))
    return Status.of(req.cqe), bytes(req.data[0]) if req.data else b""


def ok(ctrl, **fields):
    st, data = run(ctrl, **fields)
    assert st.ok, st
    assert len(data) == 4096
    return data


def fails(ctrl, code, **fields):
    st, _ = run(ctrl, **fields)
    assert (st.sct, st.sc, st.dnr) == (code.sct, code, True), st
    return st


# ---------------------------------------------------------------- CNS 01h


def test_identify_controller_fields(subsystem, ctrl):
    subsystem.ieee_oui = 0x5CD2E4
    subsystem.health.warning_temperature = 350
    subsystem.health.critical_temperature = 360
    c = IdentifyController.decode(ok(ctrl, cns=Cns.CTRL))
    assert (c.vid, c.ssvid) == (0, 0)
    assert (c.sn, c.mn, c.fr) == ("SN0001", "nvmestack test", subsystem.firmware_revision)
    assert c.ieee == 0x5CD2E4
    assert c.cmic_multi_ctrl and not c.cmic_sriov
    assert c.mdts == ctrl.mdts == 10  # 4 MiB (DEFAULT_MDTS)
    assert c.cntlid == ctrl.cntlid
    assert c.ver == 0x00020000
    assert c.oaes == (1 << 8) | (1 << 9)  # namespace attribute, firmware activation notices
    assert c.ctratt & 1  # 128-bit host identifier
    assert c.cntrltype == ControllerType.IO
    assert c.oacs_format and c.oacs_fw and c.oacs_ns_mgmt and c.oacs_self_test
    assert not c.oacs_dbbuf and not c.oacs_security and not c.oacs_directives
    assert (c.acl, c.aerl) == (3, 3)
    assert c.frmw_slot1_ro and c.frmw_slots == 7 and c.frmw_no_reset
    assert c.lpa_cmd_effects and c.lpa_extended
    assert not c.lpa_smart_per_ns and not c.lpa_persistent_event
    assert c.elpe == 63
    assert c.npss == 0
    assert c.psd[0].mp > 0 and not c.psd[0].nops
    assert (c.wctemp, c.cctemp) == (350, 360)
    assert c.kas > 0
    assert c.sanicap_bes and c.sanicap_ows and not c.sanicap_ces
    assert (c.sqes, c.cqes) == (0x66, 0x44)
    assert c.maxcmd == ctrl.regs.cap.mqes + 1
    assert c.nn == subsystem.max_namespaces and c.mnan == subsystem.max_namespaces
    want = (Oncs.COMPARE | Oncs.WRITE_UNCORRECTABLE | Oncs.DSM | Oncs.WRITE_ZEROES | Oncs.SAVE_SELECT
            | Oncs.VERIFY | Oncs.COPY | Oncs.TIMESTAMP)
    assert c.oncs == want
    assert c.fuses_compare_write
    assert c.vwc_present and c.vwc_flush == 3  # Flush with NSID FFFFFFFFh supported
    assert (c.awun, c.awupf) == (0, 0)
    assert c.sgls_support == SglSupport.SUPPORTED and c.sgls_bit_bucket and not c.sgls_keyed
    assert c.subnqn == subsystem.nqn
    # No fabrics attributes on a PCIe controller.
    assert (c.ioccsz, c.iorcsz, c.msdbd) == (0, 0, 0)


def test_identify_controller_defaults_and_vendor_ids():
    subsys = Subsystem("nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000002",
                       serial="S" * 30, model="m\u00e9" * 30)
    subsys.vid, subsys.ssvid = 0x1B36, 0x1AF4
    ctrl = enable(subsys.add_controller())
    c = IdentifyController.decode(ok(ctrl, cns=Cns.CTRL))
    assert (c.vid, c.ssvid) == (0x1B36, 0x1AF4)
    assert c.sn == "S" * 20  # cut to the field
    assert len(c.mn) == 40 and c.mn.isascii()
    assert (c.wctemp, c.cctemp) == (subsys.health.warning_temperature, subsys.health.critical_temperature)


def test_identify_controller_of_a_fabrics_controller(subsystem):
    ctrl = subsystem.add_controller(fabrics=True)
    ctrl.in_capsule_data_size = 8192
    enable(ctrl)
    c = identify_controller(ctrl)
    assert c.ioccsz == (64 + 8192) // 16
    assert c.iorcsz == 1 and c.icdoff == 0 and c.msdbd == 1 and not c.fcatt_static
    assert c.sgls_support and c.sgls_offset and c.sgls_transport and not c.sgls_bit_bucket


def test_identify_ignores_nsid_for_the_controller(ctrl):
    assert ok(ctrl, cns=Cns.CTRL, nsid=12345) == ok(ctrl, cns=Cns.CTRL)


# ---------------------------------------------------------------- CNS 00h / 11h


def test_identify_namespace_active(ctrl, ns):
    data = ok(ctrl, cns=Cns.NS, nsid=1)
    assert data == bytes(ns.identify())
    idns = IdentifyNamespace.decode(data)
    assert idns.nsze == 8192 and idns.block_size == 512


def test_identify_namespace_inactive_and_unallocated_are_zero(subsystem, ctrl):
    subsystem.add_namespace(Namespace(2, 64), attach=False)
    assert ok(ctrl, cns=Cns.NS, nsid=2) == ZERO  # allocated, not attached
    assert ok(ctrl, cns=Cns.NS, nsid=3) == ZERO  # valid, not allocated


def test_identify_namespace_invalid_nsid(subsystem, ctrl):
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.NS, nsid=0)
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.NS, nsid=subsystem.max_namespaces + 1)
    entry = ErrorInformationEntry.decode(ctrl.error_log[0])
    assert entry.pel_byte == 4 and entry.nsid == subsystem.max_namespaces + 1


def test_identify_namespace_broadcast_gives_common_capabilities(ctrl):
    idns = IdentifyNamespace.decode(ok(ctrl, cns=Cns.NS, nsid=NSID_ALL))
    assert idns.nsze == 0 and idns.ncap == 0
    assert idns.nlbaf == 5
    assert [(f.lbads, f.ms) for f in idns.lba_formats()] == [(9, 0), (9, 8), (9, 16), (12, 0), (12, 8), (12, 16)]
    assert idns.mc_extended and idns.mc_separate and idns.dpc == 0x1F
    assert idns.dlfeat_read == 1


def test_identify_allocated_namespace(subsystem, ctrl):
    ns2 = subsystem.add_namespace(Namespace(2, 64), attach=False)
    assert ok(ctrl, cns=Cns.ALLOCATED_NS, nsid=2) == bytes(ns2.identify())
    assert IdentifyNamespace.decode(ok(ctrl, cns=Cns.ALLOCATED_NS, nsid=2)).nsze == 64
    assert ok(ctrl, cns=Cns.ALLOCATED_NS, nsid=5) == ZERO
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.ALLOCATED_NS, nsid=NSID_ALL)
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.ALLOCATED_NS, nsid=0)


# ---------------------------------------------------------------- lists


@pytest.fixture
def several(subsystem, ctrl):
    """Namespaces 1, 3, 7 active; 5 allocated but not attached."""
    for nsid in (7, 3):
        subsystem.add_namespace(Namespace(nsid, 16))
    subsystem.add_namespace(Namespace(5, 16), attach=False)
    return ctrl


def test_active_namespace_list(several):
    ctrl = several
    assert NamespaceList.decode(ok(ctrl, cns=Cns.NS_ACTIVE_LIST, nsid=0)).nsids() == [1, 3, 7]
    assert NamespaceList.decode(ok(ctrl, cns=Cns.NS_ACTIVE_LIST, nsid=3)).nsids() == [7]
    assert ok(ctrl, cns=Cns.NS_ACTIVE_LIST, nsid=7) == ZERO
    for nsid in (0xFFFFFFFE, NSID_ALL):
        fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.NS_ACTIVE_LIST, nsid=nsid)


def test_allocated_namespace_list(several):
    ctrl = several
    assert NamespaceList.decode(ok(ctrl, cns=Cns.ALLOCATED_NS_LIST, nsid=0)).nsids() == [1, 3, 5, 7]
    assert NamespaceList.decode(ok(ctrl, cns=Cns.ALLOCATED_NS_LIST, nsid=4)).nsids() == [5, 7]
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.ALLOCATED_NS_LIST, nsid=0xFFFFFFFE)


def test_namespace_list_holds_at_most_1024():
    subsys = Subsystem(serial="x", max_namespaces=1100)
    for nsid in range(1, 1031):
        subsys.add_namespace(Namespace(nsid, 1))
    ctrl = enable(subsys.add_controller())
    ids = NamespaceList.decode(ok(ctrl, cns=Cns.NS_ACTIVE_LIST, nsid=0)).nsids()
    assert ids == list(range(1, 1025))
    assert NamespaceList.decode(ok(ctrl, cns=Cns.NS_ACTIVE_LIST, nsid=1024)).nsids() == list(range(1025, 1031))


def test_csi_active_namespace_list(several):
    ctrl = several
    assert NamespaceList.decode(ok(ctrl, cns=Cns.CSI_NS_ACTIVE_LIST, nsid=1, csi=0)).nsids() == [3, 7]
    fails(ctrl, GenericStatus.INVALID_FIELD, cns=Cns.CSI_NS_ACTIVE_LIST, nsid=0, csi=2)
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.CSI_NS_ACTIVE_LIST, nsid=NSID_ALL, csi=0)


def test_controller_lists(subsystem, ctrl):
    ctrl2 = enable(subsystem.add_controller())
    ctrl3 = enable(subsystem.add_controller())
    private = Namespace(2, 16, shared=False)
    subsystem.add_namespace(private, attach=False)
    private.attached.add(ctrl2.cntlid)
    ids = ControllerList.decode(ok(ctrl, cns=Cns.CTRL_LIST)).ids()
    assert ids == sorted([ctrl.cntlid, ctrl2.cntlid, ctrl3.cntlid])
    assert ControllerList.decode(ok(ctrl, cns=Cns.CTRL_LIST, cntid=ctrl2.cntlid)).ids() == [ctrl2.cntlid, ctrl3.cntlid]
    assert ControllerList.decode(ok(ctrl, cns=Cns.NS_CTRL_LIST, nsid=2)).ids() == [ctrl2.cntlid]
    assert ControllerList.decode(ok(ctrl, cns=Cns.NS_CTRL_LIST, nsid=1)).ids() == sorted(
        [ctrl.cntlid, ctrl2.cntlid, ctrl3.cntlid])
    assert ControllerList.decode(ok(ctrl, cns=Cns.NS_CTRL_LIST, nsid=1, cntid=ctrl3.cntlid)).ids() == [ctrl3.cntlid]
    assert ControllerList.decode(ok(ctrl, cns=Cns.NS_CTRL_LIST, nsid=9)).ids() == []  # not allocated
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.NS_CTRL_LIST, nsid=NSID_ALL)
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.NS_CTRL_LIST, nsid=0)


# ---------------------------------------------------------------- CNS 03h


def test_namespace_identification_descriptors(ctrl, ns):
    descs = dict(decode_ns_id_descriptors(ok(ctrl, cns=Cns.NS_DESC_LIST, nsid=1)))
    assert descs == {NidType.EUI64: bytes(ns.eui64), NidType.NGUID: bytes(ns.nguid),
                     NidType.UUID: bytes(ns.uuid), NidType.CSI: b"\x00"}


def test_descriptors_leave_out_identifiers_that_are_zero(subsystem, ctrl):
    subsystem.add_namespace(Namespace(2, 16, eui64=bytes(8), uuid=bytes(16), nguid=b"\x11" * 16))
    descs = decode_ns_id_descriptors(ok(ctrl, cns=Cns.NS_DESC_LIST, nsid=2))
    assert descs == [(NidType.NGUID, b"\x11" * 16), (NidType.CSI, b"\x00")]


def test_descriptors_errors(subsystem, ctrl):
    subsystem.add_namespace(Namespace(2, 16), attach=False)
    fails(ctrl, GenericStatus.INVALID_FIELD, cns=Cns.NS_DESC_LIST, nsid=2)  # inactive
    fails(ctrl, GenericStatus.INVALID_FIELD, cns=Cns.NS_DESC_LIST, nsid=3)  # not allocated
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.NS_DESC_LIST, nsid=0)
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.NS_DESC_LIST, nsid=NSID_ALL)


# ---------------------------------------------------------------- CNS 05h-08h


def test_csi_specific_structures(subsystem, ctrl):
    assert ok(ctrl, cns=Cns.CSI_NS, nsid=1, csi=0) == ZERO  # 16-bit guard formats, no storage tags
    fails(ctrl, GenericStatus.INVALID_FIELD, cns=Cns.CSI_NS, nsid=1, csi=1)
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.CSI_NS, nsid=0, csi=0)
    nvm = IdentifyControllerNvm.decode(ok(ctrl, cns=Cns.CSI_CTRL, csi=0))
    assert bytes(nvm) == ZERO
    fails(ctrl, GenericStatus.INVALID_FIELD, cns=Cns.CSI_CTRL, csi=2)


def test_io_command_set_independent_namespace(subsystem, ctrl):
    ind = IdentifyNamespaceIndependent.decode(ok(ctrl, cns=Cns.CSI_INDEPENDENT_NS, nsid=1))
    assert ind.nmic_shared and ind.nstat_ready
    subsystem.add_namespace(Namespace(2, 16), attach=False)
    assert ok(ctrl, cns=Cns.CSI_INDEPENDENT_NS, nsid=2) == ZERO
    fails(ctrl, GenericStatus.INVALID_NAMESPACE_OR_FORMAT, cns=Cns.CSI_INDEPENDENT_NS, nsid=NSID_ALL)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("cns", [0x04, 0x09, 0x14, 0x15, 0x16, 0x17, 0xFF])
def test_unsupported_cns_is_invalid_field(ctrl, cns):
    st = fails(ctrl, GenericStatus.INVALID_FIELD, cns=cns)
    assert st.sct == StatusCodeType.GENERIC
    entry = ErrorInformationEntry.decode(ctrl.error_log[0])
    assert entry.pel_byte == 40


def test_identify_of_an_unattached_controller_namespace_keeps_others_data(subsystem, ctrl):
    # The buffer is written whole: stale bytes in the host buffer are replaced.
    buf = bytearray(b"\xAA" * 4096)
    req = ctrl.submit(Identify(cns=Cns.NS, nsid=9), data=buf)
    assert Status.of(req.cqe).ok and bytes(buf) == ZERO
