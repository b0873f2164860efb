"""nvmestack.cli.output against what nvme-cli 2.3 printed for the same bytes.

The expected files were produced by Debian 12's nvme-cli 2.3 / libnvme 1.3
(``data/make_golden.py``); the comparisons are byte for byte.

``show-regs`` over PCIe: nvme-cli maps BAR0 through sysfs; the shim answers
libnvme's sysfs lookup so that it maps the fixture register file instead (see
``data/nvme_shim.c``).  Over Fabrics it reads the registers with Property Get,
which the shim answers from the same file.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from nvmestack.cli import output as o
from nvmestack.spec.log import CommandsSupportedAndEffects

from . import fixtures as f

GOLDEN = pathlib.Path(__file__).parent / "data" / "nvme-cli-2.3"


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


FIXED = {
    "id-ctrl.txt": lambda: o.id_ctrl_text(f.id_ctrl()),
    "id-ctrl.json": lambda: o.dumps(o.id_ctrl_json(f.id_ctrl())),
    "id-ns.txt": lambda: o.id_ns_text(f.id_ns(), 1),
    "id-ns-H.txt": lambda: o.id_ns_text(f.id_ns(), 1, human=True),
    "id-ns.json": lambda: o.dumps(o.id_ns_json(f.id_ns())),
    "smart-log.txt": lambda: o.smart_log_text(f.smart_log(), "nvme0"),
    "smart-log-H.txt": lambda: o.smart_log_text(f.smart_log(), "nvme0", human=True),
    "smart-log.json": lambda: o.dumps(o.smart_log_json(f.smart_log())),
    "error-log.json": lambda: o.dumps(o.error_log_json(f.error_log())),
    "fw-log.txt": lambda: o.fw_log_text(f.fw_log(), "nvme0"),
    "fw-log.json": lambda: o.dumps(o.fw_log_json(f.fw_log(), "nvme0")),
    "id-ctrl-H.txt": lambda: o.id_ctrl_text(f.id_ctrl(), human=True),
    "id-ctrl-00-H.txt": lambda: o.id_ctrl_text(f.id_ctrl_filled(0x00), human=True),
    "id-ctrl-ff-H.txt": lambda: o.id_ctrl_text(f.id_ctrl_filled(0xFF), human=True),
    "id-ctrl-v.txt": lambda: o.id_ctrl_text(f.id_ctrl(), vendor=True),
    "id-ns-v.txt": lambda: o.id_ns_text(f.id_ns(), 1, vendor=True),
    "smart-log-H.json": lambda: o.dumps(o.smart_log_json(f.smart_log(), human=True)),
    "ns-descs.txt": lambda: o.ns_descs_text(f.ns_descs(), 1),
    "ns-descs.json": lambda: o.dumps(o.ns_descs_json(f.ns_descs())),
    "get-log.txt": lambda: o.get_log_text(f.log_bytes(), "nvme0", 0xC0, 0xFFFFFFFF),
    "get-log-nsid0.txt": lambda: o.get_log_text(f.log_bytes(32), "nvme0", 0xC0, 0),
    "get-log-lpo.txt": lambda: o.get_log_text(f.log_bytes()[16 : 16 + 37], "nvme0", 0xC0, 1),
    "changed-ns-list-log.txt": lambda: o.changed_ns_list_text(f.changed_ns_list()),
    "changed-ns-list-log.json": lambda: o.dumps(o.changed_ns_list_json(f.changed_ns_list(), "nvme0")),
    "changed-ns-list-log-empty.txt": lambda: o.changed_ns_list_text(f.changed_ns_list(())),
    "changed-ns-list-log-empty.json": lambda: o.dumps(o.changed_ns_list_json(f.changed_ns_list(()), "nvme0")),
    "changed-ns-list-log-overflow.txt": lambda: o.changed_ns_list_text(f.changed_ns_list(range(1, 1100))),
    "self-test-log.txt": lambda: o.self_test_log_text(f.self_test_log(), 20, "nvme0"),
    "self-test-log-v.txt": lambda: o.self_test_log_text(f.self_test_log(), 20, "nvme0", verbose=True),
    "self-test-log.json": lambda: o.dumps(o.self_test_log_json(f.self_test_log(), 20)),
    "self-test-log-e2.txt": lambda: o.self_test_log_text(f.self_test_log(), 2, "nvme0"),
    "self-test-log-e2.json": lambda: o.dumps(o.self_test_log_json(f.self_test_log(), 2)),
    "self-test-log-e0.json": lambda: o.dumps(o.self_test_log_json(f.self_test_log(), 0)),
    "sanitize-log.txt": lambda: o.sanitize_log_text(f.sanitize_log()),
    "sanitize-log-H.txt": lambda: o.sanitize_log_text(f.sanitize_log(), human=True),
    "sanitize-log.json": lambda: o.dumps(o.sanitize_log_json(f.sanitize_log(), "nvme0")),
    "sanitize-log-status0-H.txt": lambda: o.sanitize_log_text(f.sanitize_log(0), human=True),
    "sanitize-log-status0.json": lambda: o.dumps(o.sanitize_log_json(f.sanitize_log(0), "nvme0")),
    "sanitize-log-status4-H.txt": lambda: o.sanitize_log_text(f.sanitize_log(4), human=True),
    "sanitize-log-status4.json": lambda: o.dumps(o.sanitize_log_json(f.sanitize_log(4), "nvme0")),
    "sanitize-log-status5-H.txt": lambda: o.sanitize_log_text(f.sanitize_log(5), human=True),
    "sanitize-log-status5.json": lambda: o.dumps(o.sanitize_log_json(f.sanitize_log(5), "nvme0")),
    "effects-log.txt": lambda: o.effects_log_text([(0, f.effects_log())]),
    "effects-log-H.txt": lambda: o.effects_log_text([(0, f.effects_log())], human=True),
    "effects-log.json": lambda: o.dumps(o.effects_log_json([(0, f.effects_log())])),
    "effects-log-csi1.txt": lambda: o.effects_log_text([(1, f.effects_log())]),
    "effects-log-csi2.txt": lambda: o.effects_log_text([(2, CommandsSupportedAndEffects())]),
    "show-regs.txt": lambda: o.show_regs_text(bytes(f.registers())),
    "show-regs-H.txt": lambda: o.show_regs_text(bytes(f.registers()), human=True),
    "show-regs.json": lambda: o.dumps(o.show_regs_json(bytes(f.registers()))),
    "show-regs-fabrics.txt": lambda: o.show_regs_text(fabrics_image(), fabrics=True),
    "show-regs-fabrics-H.txt": lambda: o.show_regs_text(fabrics_image(), fabrics=True, human=True),
    "show-regs-fabrics.json": lambda: o.dumps(o.show_regs_json(fabrics_image())),
}


def fabrics_image() -> bytes:
    """What Property Get from CAP to CMBSZ leaves of the fixture registers
    (nvme-cli reads no further; absent properties stay all ones)."""
    image = bytearray(b"\xff" * 4096)
    regs = bytes(f.registers())
    for offset in f.FABRICS_PROPERTIES:
        if offset <= 0x3C:
            size = 8 if offset == 0 else 4
            image[offset : offset + size] = regs[offset : offset + size]
    return bytes(image)


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_structures_match_nvme_cli(name):
    assert FIXED[name]() == golden(name)


DENSE = {
    "id-ctrl.txt": lambda s: o.id_ctrl_text(f.dense_id_ctrl(s)),
    "id-ctrl.json": lambda s: o.dumps(o.id_ctrl_json(f.dense_id_ctrl(s))),
    "id-ns.txt": lambda s: o.id_ns_text(f.dense_id_ns(s), 1),
    "id-ns-H.txt": lambda s: o.id_ns_text(f.dense_id_ns(s), 1, human=True),
    "id-ns.json": lambda s: o.dumps(o.id_ns_json(f.dense_id_ns(s))),
    "smart-log-H.txt": lambda s: o.smart_log_text(f.dense_smart_log(s), "nvme0", human=True),
    "smart-log.json": lambda s: o.dumps(o.smart_log_json(f.dense_smart_log(s))),
    "id-ctrl-H.txt": lambda s: o.id_ctrl_text(f.dense_id_ctrl(s), human=True),
    "effects-log-H.txt": lambda s: o.effects_log_text([(0, f.dense_effects_log(s))], human=True),
    "effects-log.json": lambda s: o.dumps(o.effects_log_json([(0, f.dense_effects_log(s))])),
    "self-test-log-v.txt": lambda s: o.self_test_log_text(f.dense_self_test_log(s), 20, "nvme0", verbose=True),
    "self-test-log.json": lambda s: o.dumps(o.self_test_log_json(f.dense_self_test_log(s), 20)),
    "sanitize-log-H.txt": lambda s: o.sanitize_log_text(f.dense_sanitize_log(s), human=True),
    "sanitize-log.json": lambda s: o.dumps(o.sanitize_log_json(f.dense_sanitize_log(s), "nvme0")),
    "show-regs-H.txt": lambda s: o.show_regs_text(bytes(f.dense_registers(s)), human=True),
    "show-regs.json": lambda s: o.dumps(o.show_regs_json(bytes(f.dense_registers(s)))),
}


@pytest.mark.parametrize("seed", list(f.DENSE_SEEDS))
@pytest.mark.parametrize("name", sorted(DENSE))
def test_random_structures_match_nvme_cli(name, seed):
    """Every byte set: formats (%d / %#x, signed, whole bytes) all show."""
    assert DENSE[name](seed) == golden(f"dense{seed}-{name}")


def test_error_log_text():
    assert o.error_log_text(f.error_log(), "nvme0") == golden("error-log.txt")


def test_id_ctrl_text_layout():
    lines = o.id_ctrl_text(f.id_ctrl()).splitlines()
    assert lines[0] == "NVME Identify Controller:"
    assert lines[1] == "vid       : 0x1b36"
    assert lines[3] == "sn        : NVMESTACK0001       "  # padding kept
    assert "ps      1 : mp:0.1200W non-operational enlat:5000 exlat:10000 rrt:1 rrl:1" in lines


def test_json_types_and_keys():
    ctrl = o.id_ctrl_json(f.id_ctrl())
    assert ctrl["vid"] == 0x1B36 and ctrl["sn"] == "NVMESTACK0001       "
    assert ctrl["tnvmcap"] == str(1 << 40)  # 128-bit values are strings
    assert ctrl["ieee"] == 0x525400
    assert list(ctrl["psds"][0]) == [
        "max_power", "flags", "entry_lat", "exit_lat", "read_tput", "read_lat", "write_tput",
        "write_lat", "idle_power", "idle_scale", "active_power", "active_power_work", "active_scale",
    ]
    smart = o.smart_log_json(f.smart_log())
    assert smart["temperature"] == 310 and smart["data_units_read"] == "123456789"
    assert smart["temperature_sensor_1"] == 305 and "temperature_sensor_2" not in smart
    assert json.loads(o.dumps(smart)) == smart


def test_changed_ns_overflow_json_prints_nothing():
    # nvme-cli 2.3 writes nothing at all (the golden file is empty).
    assert o.changed_ns_list_json(f.changed_ns_list(range(1, 1100)), "nvme0") is None
    assert golden("changed-ns-list-log-overflow.json") == ""


def test_json_empty_containers_like_json_c():
    assert o.dumps({"a": {}, "b": []}) == '{\n  "a":{\n  },\n  "b":[\n  ]\n}\n'


def test_hexdump_partial_first_line():
    # nvme-cli's text column reads one byte past a short first line (a blank).
    # (nvme-cli 2.3 printed exactly this for a 5-byte get-log.)
    assert o.hexdump(b"ABCDE").splitlines()[1] == "0000: 41 42 43 44 45" + " " * 35 + "\"ABCDE \""


def test_hex_like_c():
    assert o.hx(0) == "0" and o.hx(0x1F) == "0x1f"
    assert o.s32(0xFFFFFFFF) == -1 and o.s32(5) == 5
