"""nvmestack.cli.output against what nvme-cli 2.3 printed for the same bytes.

The expected files were produced by Debian 12's nvme-cli 2.3 / libnvme 1.3
(``data/make_golden.py``); the comparisons are byte for byte.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from nvmestack.cli import output as o

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
}


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


def test_hex_like_c():
    assert o.hx(0) == "0" and o.hx(0x1F) == "0x1f"
    assert o.s32(0xFFFFFFFF) == -1 and o.s32(5) == 5
