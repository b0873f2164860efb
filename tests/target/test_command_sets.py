"""I/O Command Set selection (NVMe 2.0, issue 12 item 5): CAP.CSS.IOCSS,
CC.CSS 110b, the I/O Command Set Profile feature (19h), the Identify I/O
Command Set data structure (CNS 1Ch) and the command-set-specific CNS
values with CSI.  Only the NVM command set (CSI 00h) is implemented."""

import pytest

from nvmestack.spec.admin import Cns, GetFeatures, GetLogPage, Identify, SetFeatures
from nvmestack.spec.fabrics import DISCOVERY_NQN
from nvmestack.spec.features import FeatureId, FeatureSelect
from nvmestack.spec.identify import IdentifyIoCommandSet, IoCommandSetVector, NamespaceList
from nvmestack.spec.log import CommandsSupportedAndEffects, LogPageId
from nvmestack.spec.registers import CcCss, Reg
from nvmestack.spec.status import CommandSpecificStatus, GenericStatus, Status
from nvmestack.target import Subsystem

from .conftest import assert_ok, assert_status

CC_BASE = (6 << 16) | (4 << 20)  # 64-byte SQEs, 16-byte CQEs, 4 KiB pages, RR


def enable_with(ctrl, css):
    ctrl.set_property(Reg.CC, 4, CC_BASE | css << 4)
    ctrl.set_property(Reg.CC, 4, CC_BASE | css << 4 | 1)
    return ctrl.regs.csts


@pytest.fixture
def fresh(subsystem):
    return subsystem.add_controller()


def test_cap_css_advertises_io_command_set_selection(fresh):
    cap = fresh.regs.cap
    assert cap.css_nvm and cap.css_iocs and not cap.css_noiocs
    # CAP bits 37 (NCSS) and 43 (IOCSS).
    assert (fresh.get_property(Reg.CAP, 8) >> 37) & 0xFF == 0b0100_0001


def test_cc_css_110b_enables(fresh):
    csts = enable_with(fresh, CcCss.ALL_IOCS)
    assert csts.rdy and not csts.cfs
    assert fresh.regs.cc.css == CcCss.ALL_IOCS


@pytest.mark.parametrize("css", [1, 2, 5, CcCss.ADMIN_ONLY])
def test_reserved_or_unsupported_cc_css_is_a_configuration_failure(fresh, css):
    csts = enable_with(fresh, css)
    assert csts.cfs and not csts.rdy


def test_a_discovery_controller_reports_only_the_nvm_bit():
    sub = Subsystem(DISCOVERY_NQN, discovery=True)
    ctrl = sub.add_controller(fabrics=True)
    assert ctrl.regs.cap.css_nvm and not ctrl.regs.cap.css_iocs
    assert enable_with(ctrl, CcCss.ALL_IOCS).cfs
    other = sub.add_controller(fabrics=True)  # a fresh one enables with NVM
    assert enable_with(other, CcCss.NVM).rdy
    assert_status(other.submit(Identify(cns=Cns.COMMAND_SET_STRUCTURE)), GenericStatus.INVALID_FIELD)
    assert_status(other.submit(GetFeatures(fid=FeatureId.IOCS_PROFILE)), GenericStatus.INVALID_FIELD)


@pytest.mark.parametrize("css", [CcCss.NVM, CcCss.ALL_IOCS])
@pytest.mark.parametrize("cntid", [0xFFFF, 1, 0])
def test_identify_io_command_set_data_structure(fresh, css, cntid):
    enable_with(fresh, css)
    req = fresh.submit(Identify(cns=Cns.COMMAND_SET_STRUCTURE, cntid=cntid))
    assert_ok(req)
    ids = IdentifyIoCommandSet.from_bytes(bytes(req.data[0]))
    assert ids.combinations() == [IoCommandSetVector.NVM]
    assert bytes(req.data[0])[8:] == bytes(4088)


def test_io_command_set_profile_with_all_io_command_sets(fresh):
    enable_with(fresh, CcCss.ALL_IOCS)
    for sel in (FeatureSelect.CURRENT, FeatureSelect.DEFAULT, FeatureSelect.SAVED):
        req = fresh.submit(GetFeatures(fid=FeatureId.IOCS_PROFILE, sel=sel))
        assert_ok(req)
        assert req.cqe.dw0 == 0
    assert_ok(fresh.submit(SetFeatures(fid=FeatureId.IOCS_PROFILE, cdw11=0)))
    # Index 1 names a combination of 0h.
    req = fresh.submit(SetFeatures(fid=FeatureId.IOCS_PROFILE, cdw11=1))
    assert_status(req, CommandSpecificStatus.IOCS_COMBINATION_REJECTED)
    req = fresh.submit(SetFeatures(fid=FeatureId.IOCS_PROFILE, cdw11=0x1FF))
    assert_status(req, CommandSpecificStatus.IOCS_COMBINATION_REJECTED)
    # Capabilities: changeable, not saveable, controller scope.
    req = fresh.submit(GetFeatures(fid=FeatureId.IOCS_PROFILE, sel=FeatureSelect.SUPPORTED))
    assert_ok(req)
    assert req.cqe.dw0 == 0b100


def test_io_command_set_profile_has_no_effect_unless_cc_css_is_110b(fresh):
    enable_with(fresh, CcCss.NVM)
    assert_ok(fresh.submit(SetFeatures(fid=FeatureId.IOCS_PROFILE, cdw11=5)))
    req = fresh.submit(GetFeatures(fid=FeatureId.IOCS_PROFILE))
    assert_ok(req)
    assert req.cqe.dw0 == 0


@pytest.mark.parametrize("css", [CcCss.NVM, CcCss.ALL_IOCS])
def test_command_set_specific_cns_with_the_nvm_csi(fresh, css):
    enable_with(fresh, css)
    for cns, nsid in ((Cns.CSI_NS, 1), (Cns.CSI_NS, 0xFFFFFFFF), (Cns.CSI_NS, 7), (Cns.CSI_CTRL, 0),
                      (Cns.CSI_NS_ACTIVE_LIST, 0), (Cns.CSI_ALLOCATED_NS_LIST, 0), (Cns.CSI_ALLOCATED_NS, 1)):
        req = fresh.submit(Identify(cns=cns, nsid=nsid, csi=0))
        assert_ok(req)
    req = fresh.submit(Identify(cns=Cns.CSI_NS_ACTIVE_LIST, csi=0))
    assert NamespaceList.from_bytes(bytes(req.data[0])).nsids() == [1]
    assert_status(fresh.submit(Identify(cns=Cns.CSI_NS_ACTIVE_LIST, nsid=0xFFFFFFFE, csi=0)),
                  GenericStatus.INVALID_NAMESPACE_OR_FORMAT)


@pytest.mark.parametrize("cns", [Cns.CSI_NS, Cns.CSI_CTRL, Cns.CSI_NS_ACTIVE_LIST, Cns.CSI_ALLOCATED_NS_LIST,
                                 Cns.CSI_ALLOCATED_NS])
@pytest.mark.parametrize("csi", [1, 2, 3, 0xFF])
def test_command_set_specific_cns_with_another_csi_is_invalid_field(fresh, cns, csi):
    enable_with(fresh, CcCss.ALL_IOCS)
    req = fresh.submit(Identify(cns=cns, nsid=1, csi=csi))
    assert_status(req, GenericStatus.INVALID_FIELD)
    assert not req.data_len  # refused before any data moved


def _effects(ctrl, csi):
    req = ctrl.submit(GetLogPage(lid=LogPageId.CMD_EFFECTS, numdl=1023, csi=csi))
    assert_ok(req)
    return CommandsSupportedAndEffects.from_bytes(bytes(req.data[0]))


def test_the_effects_log_follows_csi_with_all_io_command_sets_selected(fresh):
    enable_with(fresh, CcCss.ALL_IOCS)
    nvm = _effects(fresh, 0)
    assert nvm.acs[0x06].csupp and nvm.iocs[0x01].csupp  # Identify; Write
    # Another command set (nvme-cli asks for the Zoned one when CAP.CSS.IOCSS
    # is set): the admin commands, and no I/O command.
    zoned = _effects(fresh, 2)
    assert bytes(zoned)[:1024] == bytes(nvm)[:1024]
    assert not any(bytes(zoned)[1024:2048])


def test_the_effects_log_ignores_csi_with_the_nvm_command_set_selected(fresh):
    enable_with(fresh, CcCss.NVM)
    assert bytes(_effects(fresh, 2)) == bytes(_effects(fresh, 0))
    assert _effects(fresh, 2).iocs[0x02].csupp  # Read


def test_nvm_io_runs_with_all_io_command_sets_selected(fresh):
    from nvmestack.spec.nvm import Read, Write

    enable_with(fresh, CcCss.ALL_IOCS)
    data = bytes(range(256)) * 2
    assert Status.of(fresh.submit(Write(nsid=1, slba=3, nlb=0), sqid=1, data=bytearray(data)).cqe).ok
    req = fresh.submit(Read(nsid=1, slba=3, nlb=0), sqid=1)
    assert Status.of(req.cqe).ok and bytes(req.data[0]) == data
