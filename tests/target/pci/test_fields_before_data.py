"""Every field is checked before any data moves (issue 12, item 12): a
command with an invalid field fails with its precise status even when its
data pointer leads nowhere, because the prepare step that computes the
transfer rejects it and no transfer is set up (no PRP is followed)."""

import pytest

from nvmestack.spec.admin import (
    GetFeatures,
    GetLogPage,
    Identify,
    NamespaceAttachment,
    NamespaceManagement,
    SetFeatures,
)
from nvmestack.spec.features import FeatureId
from nvmestack.spec.status import CommandSpecificStatus as CS
from nvmestack.spec.status import GenericStatus as G
from nvmestack.target.request import DataDirection

from .conftest import ok, status_is

# A data pointer outside the host's memory: following it is a Data
# Transfer Error, so any other status shows that it was not followed.
NOWHERE = 0x7FFF_0000_0000

DATA_FEATURES = [FeatureId.LBA_RANGE, FeatureId.AUTO_PST, FeatureId.TIMESTAMP, FeatureId.HOST_ID]


@pytest.mark.parametrize("fid", DATA_FEATURES)
@pytest.mark.parametrize("sel", [4, 5, 6, 7])
def test_get_features_reserved_select_is_invalid_field_before_any_transfer(host, fid, sel):
    cmd = GetFeatures(fid=fid, sel=sel, nsid=1, prp1=NOWHERE)
    cmd.cdw11 = 1  # EXHID for the Host Identifier
    status_is(host.admin.command(cmd), G.INVALID_FIELD)
    # The same command with a valid Select does move data (and fails there).
    cmd = GetFeatures(fid=fid, sel=0, nsid=1, prp1=NOWHERE)
    cmd.cdw11 = 1
    status_is(host.admin.command(cmd), G.DATA_TRANSFER_ERROR, dnr=None)


def test_get_features_reserved_select_fails_in_prepare(ctrl):
    # The core: prepare completes the command; no data length is set up.
    req = ctrl.new_request(GetFeatures(fid=FeatureId.AUTO_PST, sel=4), 0)
    assert not ctrl.prepare(req)
    assert req.done and req.data_len == 0 and req.data_dir == DataDirection.NONE
    assert (req.status.sct, req.status.sc) == (G.INVALID_FIELD.sct, G.INVALID_FIELD)


@pytest.mark.parametrize(
    "cmd, code",
    [
        (Identify(cns=0xFE, prp1=NOWHERE), G.INVALID_FIELD),
        (GetLogPage(lid=0x7F, numdl=127, prp1=NOWHERE), CS.INVALID_LOG_PAGE),
        (GetLogPage(lid=0x02, numdl=127, lpol=2, prp1=NOWHERE), G.INVALID_FIELD),
        (GetLogPage(lid=0x02, numdl=127, nsid=5, prp1=NOWHERE), G.INVALID_FIELD),
        (SetFeatures(fid=FeatureId.LBA_RANGE, nsid=1, prp1=NOWHERE), CS.FEATURE_NOT_CHANGEABLE),
        (SetFeatures(fid=FeatureId.TIMESTAMP, sv=True, prp1=NOWHERE), CS.FEATURE_ID_NOT_SAVEABLE),
        (NamespaceAttachment(sel=5, nsid=1, prp1=NOWHERE), G.INVALID_FIELD),
        (NamespaceAttachment(sel=0, nsid=0xFFFFFFFF, prp1=NOWHERE), G.INVALID_FIELD),
        (NamespaceManagement(sel=0, nsid=1, prp1=NOWHERE), G.INVALID_FIELD),
        (NamespaceManagement(sel=0, csi=2, prp1=NOWHERE), CS.IOCS_NOT_SUPPORTED),
    ],
    ids=["identify-cns", "log-lid", "log-offset", "log-nsid", "set-lba-range", "set-sv",
         "attach-sel", "attach-nsid", "create-nsid", "create-csi"],
)
def test_admin_fields_are_checked_before_any_transfer(host, cmd, code):
    status_is(host.admin.command(cmd), code)


def test_valid_commands_still_move_their_data(host):
    buf = host.alloc(4096)
    ok(host.admin.command(GetFeatures(fid=FeatureId.AUTO_PST, sel=0, prp1=buf.addr)))
    ok(host.admin.command(Identify(cns=1, prp1=buf.addr)))
    assert any(bytes(buf.view))
