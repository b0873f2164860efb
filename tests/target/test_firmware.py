"""Firmware Image Download (pieces, order, overlap) and Firmware Commit
(every commit action, slots, the statuses that ask for a reset), the
Firmware Slot Information log, and activation at the following resets."""

import pytest

from nvmestack.spec.admin import (
    AsyncEventRequest,
    FirmwareCommit,
    FirmwareImageDownload,
)
from nvmestack.spec.features import FeatureId
from nvmestack.spec.identify import IdentifyController
from nvmestack.spec.log import FirmwareSlotLog, LogPageId
from nvmestack.spec.registers import Reg
from nvmestack.spec.status import CommandSpecificStatus as CS
from nvmestack.spec.status import GenericStatus as GS
from nvmestack.target.admin_mgmt import fill_identify_controller
from nvmestack.target.commands import LOG_PAGES
from nvmestack.target.firmware import FirmwareImage, FirmwareSlots, ResetRequired

from .conftest import assert_status, enable, status

NSSR = 0x4E564D65


def download(ctrl, data, offset=0):
    return ctrl.submit(FirmwareImageDownload(length=len(data), offset=offset), data=bytearray(data))


def download_all(ctrl, image, piece=8):
    for off in range(0, len(image), piece):
        assert status(download(ctrl, image[off : off + piece], off)).ok


def commit(ctrl, slot, action):
    return ctrl.submit(FirmwareCommit(fs=slot, ca=action))


def slot_log(ctrl):
    return FirmwareSlotLog.decode(LOG_PAGES[LogPageId.FW_SLOT](ctrl, None))


def reset(ctrl):
    """Controller Level Reset (CC.EN 1 -> 0) and enable again."""
    ctrl.set_property(Reg.CC, 4, 0)
    enable(ctrl)


def test_initial_slots_and_identify(subsystem, ctrl):
    page = slot_log(ctrl)
    assert page.active_slot == 1 and page.next_slot == 0
    assert page.frs1 == "1.0" and page.frs2 == ""
    idc = IdentifyController()
    fill_identify_controller(ctrl, idc)
    assert idc.frmw_slot1_ro and idc.frmw_slots == 7 and idc.frmw_no_reset
    assert idc.fwug == 0xFF and idc.mtfa == subsystem.firmware.mtfa


def test_download_in_pieces_out_of_order_then_replace_and_activate_at_reset(subsystem, ctrl):
    image = FirmwareImage.build("2.0", payload=bytes(range(40)))
    # Pieces may arrive in any order.
    assert status(download(ctrl, image[24:], 24)).ok
    assert status(download(ctrl, image[:8], 0)).ok
    assert status(download(ctrl, image[8:24], 8)).ok
    req = commit(ctrl, 2, 1)  # replace and activate at the next reset
    assert status(req).ok
    page = slot_log(ctrl)
    assert page.frs2 == "2.0" and page.active_slot == 1 and page.next_slot == 2
    assert subsystem.firmware_revision == "1.0"
    reset(ctrl)
    assert subsystem.firmware_revision == "2.0"
    page = slot_log(ctrl)
    assert page.active_slot == 2 and page.next_slot == 0


def test_overlapping_piece(ctrl):
    assert status(download(ctrl, bytes(16), 0)).ok
    assert_status(download(ctrl, bytes(8), 8), CS.OVERLAPPING_RANGE)
    assert_status(download(ctrl, bytes(16), 12), CS.OVERLAPPING_RANGE)
    assert status(download(ctrl, bytes(8), 16)).ok  # adjacent is fine


def test_commit_action_0_replaces_without_activation(subsystem, ctrl):
    download_all(ctrl, FirmwareImage.build("3.1"))
    assert status(commit(ctrl, 3, 0)).ok
    page = slot_log(ctrl)
    assert page.frs3 == "3.1" and page.active_slot == 1 and page.next_slot == 0
    reset(ctrl)
    assert subsystem.firmware_revision == "1.0"


def test_commit_action_2_activates_existing_slot(subsystem, ctrl):
    download_all(ctrl, FirmwareImage.build("4.0"))
    assert status(commit(ctrl, 4, 0)).ok
    assert status(commit(ctrl, 4, 2)).ok
    assert slot_log(ctrl).next_slot == 4
    reset(ctrl)
    assert subsystem.firmware_revision == "4.0"
    # And back to slot 1 (read only, but activation is allowed).
    assert status(commit(ctrl, 1, 2)).ok
    reset(ctrl)
    assert subsystem.firmware_revision == "1.0"


def test_commit_action_2_on_empty_slot_is_invalid_image(ctrl):
    assert_status(commit(ctrl, 5, 2), CS.INVALID_FIRMWARE_IMAGE)


def test_commit_action_3_activates_now_with_notice(subsystem, ctrl):
    ctrl.features.current[FeatureId.ASYNC_EVENT] = 1 << 9  # firmware activation notices
    ctrl.pending_events.clear()
    download_all(ctrl, FirmwareImage.build("5.0"))
    assert status(commit(ctrl, 2, 3)).ok
    assert subsystem.firmware_revision == "5.0"
    page = slot_log(ctrl)
    assert page.active_slot == 2 and page.frs2 == "5.0"
    assert (2, 0x01, LogPageId.FW_SLOT) in ctrl.pending_events


def test_commit_action_3_delivers_the_notice_to_a_waiting_aer(subsystem, ctrl):
    ctrl.features.current[FeatureId.ASYNC_EVENT] = 1 << 9
    aer = ctrl.new_request(AsyncEventRequest(cid=0x42), 0)
    ctrl.add_aer(aer)
    download_all(ctrl, FirmwareImage.build("5.1"))
    assert status(commit(ctrl, 0, 3)).ok
    assert aer.done and aer.cqe.dw0 == 0x2 | 0x01 << 8 | LogPageId.FW_SLOT << 16


def test_commit_action_3_without_download_activates_existing(subsystem, ctrl):
    download_all(ctrl, FirmwareImage.build("6.0"))
    assert status(commit(ctrl, 6, 0)).ok
    assert status(commit(ctrl, 6, 3)).ok
    assert subsystem.firmware_revision == "6.0"


def test_commit_action_3_needing_controller_reset(subsystem, ctrl):
    download_all(ctrl, FirmwareImage.build("7.0", reset=ResetRequired.CONTROLLER))
    req = commit(ctrl, 2, 3)
    assert_status(req, CS.FW_ACTIVATION_REQUIRES_CONTROLLER_LEVEL_RESET, dnr=False)
    assert subsystem.firmware_revision == "1.0" and slot_log(ctrl).next_slot == 2
    reset(ctrl)
    assert subsystem.firmware_revision == "7.0"


def test_no_immediate_activation_support_asks_for_controller_reset(subsystem, ctrl):
    subsystem.firmware.activation_without_reset = False
    download_all(ctrl, FirmwareImage.build("7.1"))
    assert_status(commit(ctrl, 2, 3), CS.FW_ACTIVATION_REQUIRES_CONTROLLER_LEVEL_RESET, dnr=False)
    reset(ctrl)
    assert subsystem.firmware_revision == "7.1"


@pytest.mark.parametrize("action", [1, 3])
def test_image_needing_conventional_reset(subsystem, ctrl, action):
    download_all(ctrl, FirmwareImage.build("8.0", reset=ResetRequired.CONVENTIONAL))
    assert_status(commit(ctrl, 2, action), CS.FW_ACTIVATION_REQUIRES_CONVENTIONAL_RESET, dnr=False)
    reset(ctrl)  # a controller reset is not enough
    assert subsystem.firmware_revision == "1.0"
    assert slot_log(ctrl).next_slot == 0
    subsystem.firmware.conventional_reset()
    assert subsystem.firmware_revision == "8.0"


@pytest.mark.parametrize("action", [1, 3])
def test_image_needing_nvm_subsystem_reset(subsystem, ctrl, action):
    download_all(ctrl, FirmwareImage.build("9.0", reset=ResetRequired.SUBSYSTEM))
    assert_status(commit(ctrl, 2, action), CS.FW_ACTIVATION_REQUIRES_NVM_SUBSYSTEM_RESET, dnr=False)
    reset(ctrl)
    assert subsystem.firmware_revision == "1.0"
    ctrl.set_property(Reg.NSSR, 4, NSSR)
    assert ctrl.regs.csts.nssro
    assert subsystem.firmware_revision == "9.0"


def test_activation_time_above_mtfa(subsystem, ctrl):
    download_all(ctrl, FirmwareImage.build("9.5", activation_time=subsystem.firmware.mtfa + 1))
    assert_status(commit(ctrl, 2, 3), CS.FW_ACTIVATION_REQUIRES_MAX_TIME_VIOLATION)
    assert subsystem.firmware_revision == "1.0"
    # Activating it with a reset works.
    assert status(commit(ctrl, 2, 2)).ok
    reset(ctrl)
    assert subsystem.firmware_revision == "9.5"


def test_rollback_is_prohibited(subsystem, ctrl):
    download_all(ctrl, FirmwareImage.build("10.0", security_version=3))
    assert status(commit(ctrl, 2, 3)).ok
    download_all(ctrl, FirmwareImage.build("9.9", security_version=2))
    assert_status(commit(ctrl, 3, 1), CS.FW_ACTIVATION_PROHIBITED)
    assert slot_log(ctrl).frs3 == ""  # not stored
    download_all(ctrl, FirmwareImage.build("9.9", security_version=2))
    assert status(commit(ctrl, 3, 0)).ok  # storing alone is allowed
    assert_status(commit(ctrl, 3, 2), CS.FW_ACTIVATION_PROHIBITED)
    assert subsystem.firmware_revision == "10.0"


def test_slot_1_is_read_only(subsystem, ctrl):
    download_all(ctrl, FirmwareImage.build("2.0"))
    assert_status(commit(ctrl, 1, 0), CS.INVALID_FIRMWARE_SLOT)
    assert slot_log(ctrl).frs1 == "1.0"


def test_invalid_slot_when_fewer_slots():
    slots = FirmwareSlots("1.0", slots=2)
    slots.download(1, 0, FirmwareImage.build("2.0"))
    from nvmestack.target.errors import NvmeError

    with pytest.raises(NvmeError) as info:
        slots.commit(1, 3, 0)
    assert info.value.status.sc == CS.INVALID_FIRMWARE_SLOT


def test_commit_without_image_is_invalid_image(ctrl):
    assert_status(commit(ctrl, 2, 0), CS.INVALID_FIRMWARE_IMAGE)
    assert_status(commit(ctrl, 2, 1), CS.INVALID_FIRMWARE_IMAGE)


def test_incomplete_or_bad_image_is_invalid_image(ctrl):
    image = FirmwareImage.build("2.0", payload=bytes(16))
    assert status(download(ctrl, image[8:], 8)).ok  # no piece at offset 0
    assert_status(commit(ctrl, 2, 0), CS.INVALID_FIRMWARE_IMAGE)
    assert status(download(ctrl, b"\x01\x02\x03\x04\x05\x06\x07\x08")).ok  # not a revision
    assert_status(commit(ctrl, 2, 0), CS.INVALID_FIRMWARE_IMAGE)
    assert status(download(ctrl, b"    ")).ok  # too short
    assert_status(commit(ctrl, 2, 0), CS.INVALID_FIRMWARE_IMAGE)
    assert status(download(ctrl, b"3.0     NSFW\x07\x00\x00\x00")).ok  # unknown reset kind
    assert_status(commit(ctrl, 2, 1), CS.INVALID_FIRMWARE_IMAGE)
    assert slot_log(ctrl).frs2 == ""


def test_reserved_and_boot_partition_actions(ctrl):
    for action in (4, 5, 6, 7):
        assert_status(commit(ctrl, 2, action), GS.INVALID_FIELD)


def test_slot_zero_lets_the_controller_choose(subsystem, ctrl):
    for n in range(8):
        download_all(ctrl, FirmwareImage.build(f"R{n}"))
        assert status(commit(ctrl, 0, 0)).ok
    page = slot_log(ctrl)
    # Slots 2..7 filled in order, then the oldest (slot 2) reused.
    assert [page.frs(s) for s in range(1, 8)] == ["1.0", "R6", "R7", "R2", "R3", "R4", "R5"]


def test_piece_larger_than_mdts_or_image_limit(subsystem, ctrl):
    too_big = ctrl.max_transfer + 4
    req = ctrl.submit(FirmwareImageDownload(length=too_big, offset=0))
    assert_status(req, GS.INVALID_FIELD)
    req = ctrl.submit(FirmwareImageDownload(length=4, offset=subsystem.firmware.max_image_size))
    assert_status(req, GS.INVALID_FIELD)


def test_update_granularity(subsystem, ctrl):
    subsystem.firmware.fwug = 1  # 4 KiB
    assert_status(download(ctrl, bytes(4096), 8), GS.INVALID_FIELD)
    assert_status(download(ctrl, bytes(100)), GS.INVALID_FIELD)
    assert status(download(ctrl, FirmwareImage.build("G", payload=bytes(4096 - 8)))).ok


def test_reset_discards_a_partial_download(subsystem, ctrl):
    image = FirmwareImage.build("2.2", payload=bytes(8))
    assert status(download(ctrl, image[:8])).ok
    reset(ctrl)
    # The same range again is not an overlap after the reset.
    assert status(download(ctrl, image[:8])).ok
    assert status(download(ctrl, image[8:], 8)).ok
    assert status(commit(ctrl, 2, 0)).ok


def test_downloads_are_per_controller(subsystem, ctrl):
    other = enable(subsystem.add_controller())
    assert status(download(ctrl, FirmwareImage.build("A"))).ok
    assert status(download(other, FirmwareImage.build("B"))).ok
    assert status(commit(other, 2, 0)).ok
    assert status(commit(ctrl, 3, 0)).ok
    page = slot_log(ctrl)
    assert (page.frs2, page.frs3) == ("B", "A")


def test_identify_revision_follows_activation(subsystem, ctrl):
    download_all(ctrl, FirmwareImage.build("NEWREV"))
    commit(ctrl, 2, 3)
    assert subsystem.firmware_revision == "NEWREV"


def test_state_round_trip():
    slots = FirmwareSlots("1.0")
    slots.download(1, 0, FirmwareImage.build("2.0"))
    slots.commit(1, 2, 1)
    restored = FirmwareSlots("1.0")
    restored.load_dict(slots.to_dict())
    # A restart is a power cycle: the pending image is now running.
    assert restored.active == 2 and restored.active_revision == "2.0"
    assert restored.revisions == {1: "1.0", 2: "2.0"}


def test_image_format_parse():
    img = FirmwareImage.parse(FirmwareImage.build("AB12", reset=2, security_version=5, activation_time=7))
    assert (img.revision, img.reset, img.security_version, img.activation_time) == ("AB12", 2, 5, 7)
    plain = FirmwareImage.parse(b"1.2.3\0\0\0" + bytes(24))
    assert plain.revision == "1.2.3" and plain.reset == ResetRequired.NONE


def test_slot_log_through_get_log_page(subsystem, ctrl):
    from nvmestack.spec.admin import GetLogPage
    from nvmestack.target.commands import ADMIN_COMMANDS

    if 0x02 not in ADMIN_COMMANDS:
        pytest.skip("Get Log Page not implemented")
    ctrl.features.current[FeatureId.ASYNC_EVENT] = 1 << 9
    aer = ctrl.new_request(AsyncEventRequest(cid=7), 0)
    ctrl.add_aer(aer)
    download_all(ctrl, FirmwareImage.build("3.3"))
    assert status(commit(ctrl, 4, 3)).ok
    assert aer.done and 2 in ctrl.masked_event_types
    req = ctrl.submit(GetLogPage(lid=LogPageId.FW_SLOT, length=512, nsid=0xFFFFFFFF))
    assert status(req).ok
    page = FirmwareSlotLog.decode(bytes(req.data[0]))
    assert page.active_slot == 4 and page.frs4 == "3.3" and page.frs1 == "1.0"
    assert 2 not in ctrl.masked_event_types  # reading the log unmasks notices
