"""Persistence: a subsystem saved as JSON plus sparse files survives a
restart with its data, namespaces, firmware slots and health counters;
power cycles and unsafe shutdowns are counted."""

import json
import os

import pytest

from nvmestack.spec.features import FeatureId
from nvmestack.spec.log import SmartLog
from nvmestack.spec.nvm import Read, Write
from nvmestack.spec.opcodes import NvmOpcode
from nvmestack.spec.registers import Reg, Shn
from nvmestack.spec.status import Status
from nvmestack.target import Namespace, Subsystem
from nvmestack.target.backend import FileBackend
from nvmestack.target.commands import IO_COMMANDS
from nvmestack.target.firmware import FirmwareImage
from nvmestack.target.persist import CLEAN_MARKER, CONFIG_FILE, STATE_FILE, load, save

from .conftest import enable

NQN = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"
HOST = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-0000-0000-000000000001"


@pytest.fixture
def opened():
    """Close every subsystem a test loads, even when it fails."""
    subs = []
    yield subs
    for sub in subs:
        sub.close()


def reload(directory, opened):
    sub = load(directory)
    opened.append(sub)
    return sub


def crash(sub):
    """The process dies: nothing is closed or saved (the files stay open in
    this process, as they would be gone with it)."""
    sub.close_hooks.clear()


def make_subsystem():
    sub = Subsystem(NQN, serial="SN-PERSIST", model="persist model", ieee_oui=0x0A1B2C,
                    max_namespaces=16, allow_any_host=False, allowed_hosts=[HOST])
    sub.add_namespace(Namespace(1, 256, nguid=bytes(range(16)), eui64=bytes(range(8)),
                                uuid=bytes(range(16, 32))))
    # 4096 + 16 bytes of metadata, extended LBAs, PI type 2 in the first bytes.
    sub.add_namespace(Namespace(3, 32, lba_format=5, extended=True, pi_type=2, pi_first=True, shared=False),
                      attach=False)
    return sub


def test_save_and_load_round_trip(tmp_path, opened):
    sub = make_subsystem()
    sub.namespaces[1].data.write_bytes(512 * 200, b"block 200")
    sub.namespaces[3].data.write_bytes(4096 * 31, b"last block")
    sub.namespaces[3].meta.write_bytes(16 * 31, b"M" * 16)
    sub.namespaces[3].attached.update({5, 7})
    sub.namespaces[1].uncorrectable.update({10, 11, 12, 40})
    sub.namespaces[3].ncap_bytes = 16 * 4096  # thin: NCAP 16 of NSZE 32
    sub.capacity = 1 << 30
    save(sub, tmp_path)
    sub.close()
    assert {CONFIG_FILE, STATE_FILE, CLEAN_MARKER, "ns1.data", "ns3.data", "ns3.meta"} <= set(os.listdir(tmp_path))

    back = reload(tmp_path, opened)
    assert back.nqn == NQN and back.serial == "SN-PERSIST" and back.model == "persist model"
    assert back.ieee_oui == 0x0A1B2C and back.max_namespaces == 16
    assert not back.allow_any_host and back.allowed_hosts == {HOST}
    assert sorted(back.namespaces) == [1, 3]
    ns1, ns3 = back.namespaces[1], back.namespaces[3]
    assert isinstance(ns1.data, FileBackend) and os.path.dirname(ns1.data.path) == str(tmp_path)
    assert ns1.nguid == bytes(range(16)) and ns1.eui64 == bytes(range(8)) and ns1.uuid == bytes(range(16, 32))
    assert ns1.nblocks == 256 and ns1.block_size == 512 and ns1.lba_format == 0 and ns1.auto_attach
    assert ns1.data.read_bytes(512 * 200, 9) == b"block 200"
    assert ns1.uncorrectable == {10, 11, 12, 40}
    assert (ns3.lba_format, ns3.extended, ns3.pi_type, ns3.pi_first, ns3.shared) == (5, True, 2, True, False)
    assert ns3.nblocks == 32 and ns3.metadata_size == 16 and ns3.ncap == 16 and ns1.ncap == 256
    assert back.capacity == 1 << 30
    assert ns3.data.read_bytes(4096 * 31, 10) == b"last block"
    assert ns3.meta.read_bytes(16 * 31, 16) == b"M" * 16
    assert ns3.attached == {5, 7} and not ns3.auto_attach
    # A controller created after the restart sees the "attach all" namespace.
    ctrl = back.add_controller()
    assert [ns.nsid for ns in ctrl.active_namespaces()] == [1]


def test_files_are_sparse(tmp_path, opened):
    sub = Subsystem(NQN, serial="S")
    sub.add_namespace(Namespace(1, 1 << 17))  # 64 MiB
    sub.namespaces[1].data.write_bytes(512 * 5000, b"x" * 512)
    save(sub, tmp_path)
    st = os.stat(tmp_path / "ns1.data")
    assert st.st_size == 64 << 20
    assert st.st_blocks * 512 < 1 << 20
    assert reload(tmp_path, opened).namespaces[1].data.read_bytes(512 * 5000, 512) == b"x" * 512


def test_load_counts_a_power_cycle_and_unsafe_shutdowns(tmp_path, opened):
    sub = make_subsystem()
    save(sub, tmp_path)
    sub.close()
    first = reload(tmp_path, opened)
    assert first.health.power_cycles == 2 and first.health.unsafe_shutdowns == 0
    assert not (tmp_path / CLEAN_MARKER).exists()  # running: not clean
    first.close()
    assert (tmp_path / CLEAN_MARKER).exists()
    second = reload(tmp_path, opened)
    assert second.health.power_cycles == 3 and second.health.unsafe_shutdowns == 0
    crash(second)
    third = reload(tmp_path, opened)
    assert third.health.power_cycles == 4 and third.health.unsafe_shutdowns == 1
    crash(third)
    fourth = reload(tmp_path, opened)
    assert fourth.health.unsafe_shutdowns == 2
    fourth.close()
    assert reload(tmp_path, opened).health.unsafe_shutdowns == 2


def test_shutdown_notification_checkpoints_the_counters(tmp_path, opened):
    save(make_subsystem(), tmp_path)
    sub = reload(tmp_path, opened)
    ctrl = enable(sub.add_controller())
    sub.health.host_write(512 * 1000 * 5)
    ctrl.set_property(Reg.CC, 4, ctrl.regs.cc.value | (Shn.NORMAL << 14))
    crash(sub)  # power lost after the shutdown notification
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["health"]["bytes_written"] == 512 * 1000 * 5
    back = reload(tmp_path, opened)
    log = back.health.smart_log()
    assert log.data_units_written == 5


def test_health_counters_survive(tmp_path, opened):
    sub = make_subsystem()
    h = sub.health
    h.host_read(512 * 1000 * 7)
    h.host_write(512 * 1000 * 2 + 1)
    h.busy(600)
    h.media_error()
    h.power_on_seconds = 3 * 3600 + 10
    ctrl = enable(sub.add_controller())
    ctrl.submit(bytes([0x3E]) + bytes(63))  # one error log entry
    save(sub, tmp_path)
    sub.close()
    back = reload(tmp_path, opened)
    log: SmartLog = back.health.smart_log()
    assert log.data_units_read == 7 and log.data_units_written == 3
    assert log.host_reads == 1 and log.host_writes == 1
    assert log.ctrl_busy_time == 10 and log.media_errors == 1
    assert log.power_on_hours == 3 and log.power_cycles == 2
    assert log.num_err_log_entries == 1


def test_firmware_slots_survive_and_pending_activation_happens(tmp_path, opened):
    sub = make_subsystem()
    fw = sub.firmware
    fw.download(1, 0, FirmwareImage.build("2.0"))
    fw.commit(1, 2, 0)  # replace slot 2, no activation
    fw.download(1, 0, FirmwareImage.build("3.0"))
    fw.commit(1, 3, 1)  # replace slot 3, activate at the next reset
    assert sub.firmware_revision == "1.0"
    save(sub, tmp_path)
    sub.close()
    back = reload(tmp_path, opened)
    assert back.firmware.revisions == {1: "1.0", 2: "2.0", 3: "3.0"}
    assert back.firmware.active == 3 and back.firmware_revision == "3.0"
    back.close()
    again = reload(tmp_path, opened)
    assert again.firmware_revision == "3.0"
    # The configuration keeps the revision the device was made with.
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["subsystems"][0]["attr"]["firmware"] == "1.0"


def test_saved_features_survive(tmp_path, opened):
    sub = make_subsystem()
    ctrl = enable(sub.add_controller())
    saved = getattr(sub, "saved_features", None)
    if saved is None or not hasattr(saved, "saved_state"):
        pytest.skip("the feature store keeps no subsystem-wide saved values")
    saved.set(int(FeatureId.VOLATILE_WC), 1)
    save(sub, tmp_path)
    sub.close()
    back = reload(tmp_path, opened)
    assert back.saved_features.get(int(FeatureId.VOLATILE_WC)) == (1, b"")
    ctrl = back.add_controller()
    assert ctrl.features.value(FeatureId.VOLATILE_WC) == 1


def test_written_data_survives_a_crash(tmp_path, opened):
    if NvmOpcode.WRITE not in IO_COMMANDS or NvmOpcode.READ not in IO_COMMANDS:
        pytest.skip("Read/Write not implemented yet")
    save(make_subsystem(), tmp_path)
    sub = reload(tmp_path, opened)
    ctrl = enable(sub.add_controller())
    payload = bytes(range(256)) * 8  # 4 blocks
    req = ctrl.submit(Write(nsid=1, slba=17, nlb=3, cid=1), sqid=1, data=payload)
    assert Status.of(req.cqe).ok
    ctrl.submit(bytes([NvmOpcode.FLUSH, 0, 2, 0, 1, 0, 0, 0]) + bytes(56), sqid=1)
    crash(sub)
    back = reload(tmp_path, opened)
    assert back.health.unsafe_shutdowns == 1
    ctrl = enable(back.add_controller())
    req = ctrl.submit(Read(nsid=1, slba=17, nlb=3, cid=3), sqid=1)
    assert Status.of(req.cqe).ok and bytes(req.data[0]) == payload


def test_namespace_created_at_run_time_is_a_file_and_survives(tmp_path, opened):
    save(make_subsystem(), tmp_path)
    sub = reload(tmp_path, opened)
    ns = Namespace(2, 64, backends=sub.namespace_backends(2))
    assert isinstance(ns.data, FileBackend) and os.path.dirname(ns.data.path) == str(tmp_path)
    sub.add_namespace(ns)
    ns.data.write_bytes(0, b"new namespace")
    crash(sub)  # the configuration was saved when the namespace was added
    back = reload(tmp_path, opened)
    assert sorted(back.namespaces) == [1, 2, 3]
    assert back.namespaces[2].data.read_bytes(0, 13) == b"new namespace"


def test_deleted_namespace_leaves_no_file_and_a_new_one_starts_empty(tmp_path, opened):
    save(make_subsystem(), tmp_path)
    sub = reload(tmp_path, opened)
    sub.namespaces[1].data.write_bytes(0, b"old data")
    sub.remove_namespace(1)
    assert not (tmp_path / "ns1.data").exists()
    fresh = Namespace(1, 256, backends=sub.namespace_backends(1))
    sub.add_namespace(fresh)
    assert fresh.data.read_bytes(0, 8) == bytes(8)
    sub.close()
    back = reload(tmp_path, opened)
    assert back.namespaces[1].data.read_bytes(0, 8) == bytes(8)
    assert back.namespaces[1].nguid == fresh.nguid


def test_reformat_is_persisted(tmp_path, opened):
    save(make_subsystem(), tmp_path)
    sub = reload(tmp_path, opened)
    sub.namespaces[1].reformat(4, extended=False, pi_type=1, pi_first=False)  # 4096 + 8
    sub.close()
    back = reload(tmp_path, opened)
    ns = back.namespaces[1]
    assert (ns.lba_format, ns.block_size, ns.metadata_size, ns.pi_type, ns.nblocks) == (4, 4096, 8, 1, 32)
    assert ns.meta is not None and ns.meta.size == 32 * 8


def test_hand_written_minimal_config(tmp_path, opened):
    (tmp_path / CONFIG_FILE).write_text(json.dumps({
        "subsystems": [{
            "nqn": NQN,
            "allowed_hosts": [HOST],
            "attr": {"allow_any_host": "0", "serial": "HAND", "ieee_oui": "0x001122"},
            "namespaces": [{"nsid": 1, "nblocks": 128,
                            "device": {"path": "disk.img", "nguid": "00112233-4455-6677-8899-aabbccddeeff"}}],
        }]
    }))
    sub = reload(tmp_path, opened)
    assert sub.serial == "HAND" and sub.ieee_oui == 0x1122 and not sub.allow_any_host
    assert sub.health.power_cycles == 1 and sub.health.unsafe_shutdowns == 0  # first power on
    ns = sub.namespaces[1]
    assert ns.nguid == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert os.path.getsize(tmp_path / "disk.img") == 128 * 512
    uuid = ns.uuid
    sub.close()
    # Generated identifiers were saved: they stay the same.
    assert reload(tmp_path, opened).namespaces[1].uuid == uuid


def test_file_outside_the_directory_is_referenced(tmp_path, opened):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    image = outside / "big.img"
    image.write_bytes(b"A" * 512 + bytes(512 * 7))
    d = tmp_path / "sub"
    d.mkdir()
    (d / CONFIG_FILE).write_text(json.dumps({"subsystems": [{"nqn": NQN, "namespaces": [
        {"nsid": 1, "nblocks": 8, "device": {"path": str(image)}}]}]}))
    sub = reload(d, opened)
    assert sub.namespaces[1].data.read_bytes(0, 4) == b"AAAA"
    sub.close()
    config = json.loads((d / CONFIG_FILE).read_text())
    assert config["subsystems"][0]["namespaces"][0]["device"]["path"] == str(image)
    assert image.exists()


def write_config(directory, text):
    (directory / CONFIG_FILE).write_text(text)


@pytest.mark.parametrize(
    "config, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"subsystems": []}', "exactly one subsystem"),
        ('{"subsystems": [{}]}', "missing 'nqn'"),
        ('{"version": 9, "subsystems": []}', "unsupported version"),
        ('{"subsystems": [{"nqn": "n", "attr": {"ieee_oui": "0x1000000"}}]}', "ieee_oui"),
        ('{"subsystems": [{"nqn": "n", "attr": {"serial": "%s"}}]}' % ("S" * 21), "serial"),
        ('{"subsystems": [{"nqn": "n", "namespaces": [{"nsid": 0, "nblocks": 8}]}]}', "nsid"),
        ('{"subsystems": [{"nqn": "n", "namespaces": [{"nsid": 1}]}]}', "missing 'nblocks'"),
        ('{"subsystems": [{"nqn": "n", "namespaces": [{"nsid": 1, "nblocks": 8}, {"nsid": 1, "nblocks": 8}]}]}',
         "appears twice"),
        ('{"subsystems": [{"nqn": "n", "namespaces": [{"nsid": 1, "nblocks": 8, "format": {"lba_format": 6}}]}]}',
         "lba_format"),
        ('{"subsystems": [{"nqn": "n", "namespaces": [{"nsid": 1, "nblocks": 8, "format": {"pi_type": 1}}]}]}',
         "protection information needs"),
        ('{"subsystems": [{"nqn": "n", "namespaces": [{"nsid": 1, "nblocks": 8, "device": {"nguid": "12"}}]}]}',
         "nguid"),
        ('{"subsystems": [{"nqn": "n", "namespaces": [{"nsid": 1, "nblocks": 8, "attach": "some"}]}]}', "attach"),
        ('{"subsystems": [{"nqn": "n", "namespaces": [{"nsid": 1, "nblocks": 8, "thin": "yes"}]}]}', "thin"),
    ],
)
def test_corrupt_config_is_a_clear_error(tmp_path, config, message):
    write_config(tmp_path, config)
    with pytest.raises(ValueError) as exc:
        load(tmp_path)
    assert str(tmp_path / CONFIG_FILE) in str(exc.value)
    assert message in str(exc.value)


def test_missing_config(tmp_path):
    with pytest.raises(ValueError, match="config.json: missing"):
        load(tmp_path / "nothing-here")


def test_data_file_of_the_wrong_size(tmp_path):
    (tmp_path / "ns1.data").write_bytes(bytes(1000))
    write_config(tmp_path, json.dumps({"subsystems": [{"nqn": "n", "namespaces": [{"nsid": 1, "nblocks": 8}]}]}))
    with pytest.raises(ValueError, match="has 1000 bytes"):
        load(tmp_path)
    assert os.path.getsize(tmp_path / "ns1.data") == 1000  # not truncated


def test_corrupt_state_is_a_clear_error(tmp_path):
    save(make_subsystem(), tmp_path)
    (tmp_path / STATE_FILE).write_text('{"health": {"power_cycles": "many"}}')
    with pytest.raises(ValueError) as exc:
        load(tmp_path)
    assert str(tmp_path / STATE_FILE) in str(exc.value) and "power_cycles" in str(exc.value)
    (tmp_path / STATE_FILE).write_text("\x00garbage")
    with pytest.raises(ValueError, match="state.json: not valid JSON"):
        load(tmp_path)


def test_pci_vendor_ids_are_configuration(tmp_path, opened):
    sub = make_subsystem()
    assert (sub.vid, sub.ssvid) == (None, None)  # not named
    sub.vid, sub.ssvid = 0x1D0F, 0x1AF4
    save(sub, tmp_path)
    sub.close()
    with open(tmp_path / CONFIG_FILE) as f:
        attr = json.load(f)["subsystems"][0]["attr"]
    assert (attr["vid"], attr["ssvid"]) == ("0x1d0f", "0x1af4")
    back = reload(tmp_path, opened)
    assert (back.vid, back.ssvid) == (0x1D0F, 0x1AF4)
