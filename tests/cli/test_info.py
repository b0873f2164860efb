"""The identify and log page commands (nvmestack/cli/info.py) against a device:
an NVMe/TCP target served in the test and a local drive (PCIe function).

The output formats themselves are checked byte for byte against nvme-cli 2.3
in test_output.py; here the values must be what the device reports, the
commands must reach the device the way nvme-cli sends them, and failures
must be one line and exit status 1.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest

from nvmestack.cli.devices import open_device
from nvmestack.spec.admin import DeviceSelfTest
from nvmestack.spec.identify import IdentifyController, IdentifyNamespace
from nvmestack.spec.log import DeviceSelfTestLog, LogPageId, SmartLog
from nvmestack.spec.nvm import Write
from nvmestack.spec.opcodes import AdminOpcode
from nvmestack.spec.status import GenericStatus
from nvmestack.target import persist
from nvmestack.target.faults import FaultInjector
from nvmestack.target.health import data_units
from nvmestack.target.subsystem import Subsystem


@dataclass
class Dev:
    """A device under test: ``arg`` names the controller, ``ns(n)`` namespace
    ``n``; ``truth()`` gives the device side (the Subsystem) to compare with."""

    kind: str
    arg: str
    ns: Callable[[int], str]
    truth: Callable[[], Any]
    name: str  # how nvme-cli's text names the device
    path: str = ""

    @property
    def fabrics(self) -> bool:
        return self.kind == "tcp"


@pytest.fixture(params=["tcp", "drive"])
def dev(request, cli) -> Dev:
    if request.param == "tcp":
        tgt = request.getfixturevalue("tcp_target")

        @contextlib.contextmanager
        def truth() -> Iterator[Subsystem]:
            yield tgt.subsystem

        return Dev("tcp", tgt.url, lambda n: f"{tgt.url}?nsid={n}", truth, tgt.url)
    path = request.getfixturevalue("drive")
    res = cli("drive", "attach", path)
    assert res.rc == 0, res.err
    name = res.out.strip().rsplit("/", 1)[-1]

    @contextlib.contextmanager
    def truth() -> Iterator[Subsystem]:
        sub = persist.load(path)
        try:
            yield sub
        finally:
            sub.close()

    return Dev("drive", name, lambda n: f"{name}n{n}", truth, name, path)


@pytest.fixture
def cntlids(monkeypatch) -> list[int]:
    """The controller identifiers the device gave, in order."""
    seen: list[int] = []
    orig = Subsystem.add_controller

    def add_controller(self, *args, **kwargs):
        ctrl = orig(self, *args, **kwargs)
        seen.append(ctrl.cntlid)
        return ctrl

    monkeypatch.setattr(Subsystem, "add_controller", add_controller)
    return seen


@pytest.fixture
def faults(dev, monkeypatch) -> Callable[[], FaultInjector]:
    """Fault rules on the device: ``faults()`` is the injector (the drive's
    subsystem is made per command, so the rules are put on each one)."""
    if dev.fabrics:
        with dev.truth() as sub:
            injector = FaultInjector.install(sub)
        return lambda: injector
    injector = FaultInjector()
    orig = persist.load

    def load(path):
        sub = orig(path)
        sub.faults = injector
        return sub

    monkeypatch.setattr(persist, "load", load)
    return lambda: injector


def _one_line_error(res) -> None:
    assert res.rc == 1
    assert res.out == ""
    assert res.err.endswith("\n") and res.err.count("\n") == 1, res.err


# ---------------------------------------------------------------------------
# id-ctrl


def test_id_ctrl_json_is_the_device(cli, dev, cntlids):
    res = cli("id-ctrl", dev.arg, "-o", "json")
    assert res.rc == 0, res.err
    j = res.json()
    with dev.truth() as sub:
        assert j["sn"] == sub.serial.ljust(20)
        assert j["mn"] == sub.model.ljust(40)
        assert j["fr"].rstrip() == sub.firmware_revision
        assert j["nn"] == sub.max_namespaces
        assert j["subnqn"] == sub.nqn
        assert j["tnvmcap"] == str(sub.capacity)
    assert j["cntlid"] == cntlids[-1]
    assert j["ver"] == 0x20000
    assert [p["max_power"] for p in j["psds"]]  # at least power state 0


def test_id_ctrl_text_and_human(cli, dev):
    lines = cli("id-ctrl", dev.arg).out.splitlines()
    with dev.truth() as sub:
        assert lines[0] == "NVME Identify Controller:"
        assert lines[3] == f"sn        : {sub.serial.ljust(20)}"
        assert f"nn        : {sub.max_namespaces}" in lines
        assert f"subnqn    : {sub.nqn}" in lines
    human = cli("id-ctrl", dev.arg, "-H").out.splitlines()
    i = human.index(next(x for x in human if x.startswith("oacs      : ")))
    assert human[i + 1].startswith("  [10:10] : ") and "Lockdown Command and Feature" in human[i + 1]
    assert "  [7:0] : 63 (0's based)\tError Log Page Entries (ELPE)" in human
    vendor = cli("id-ctrl", dev.arg, "--vendor-specific").out.splitlines()
    start = vendor.index("vs[]:")
    assert vendor[start + 1].split() == [format(i, "x") for i in range(16)]
    assert len(vendor) - start - 2 == 1024 // 16


def test_id_ctrl_binary_is_the_structure(cli, dev):
    rc, raw, err = cli.raw("id-ctrl", dev.arg, "-b")
    assert rc == 0 and err == b"" and len(raw) == IdentifyController.SIZE
    with open_device(dev.arg, io_queues=0) as d:
        mine = d.ctrl.identify_raw(1)
    ours, theirs = bytearray(raw), bytearray(mine)
    ours[78:80] = theirs[78:80] = b"\0\0"  # CNTLID: each association has its own controller
    assert ours == theirs
    rc2, raw2, _ = cli.raw("id-ctrl", dev.arg, "-o", "binary", "-H")
    assert rc2 == 0 and raw2[:78] == raw[:78]


# ---------------------------------------------------------------------------
# id-ns, ns-descs


def test_id_ns_values_and_default_namespace(cli, dev):
    res = cli("id-ns", dev.ns(2), "-o", "json")  # the namespace the device names
    assert res.rc == 0, res.err
    j = res.json()
    with dev.truth() as sub:
        ns = sub.namespaces[2]
        assert j["nsze"] == ns.nblocks
        assert j["ncap"] == ns.nblocks
        assert j["nguid"] == ns.nguid.hex()
        assert j["eui64"] == ns.eui64.hex()
        assert j["lbafs"][j["flbas"] & 0xF]["ds"] == ns.block_size.bit_length() - 1
    text = cli("id-ns", dev.arg, "-n", "2").out.splitlines()
    assert text[0] == "NVME Identify Namespace 2:"
    assert text[1] == f"nsze    : {j['nsze']:#x}"
    human = cli("id-ns", dev.arg, "-n", "1", "-H").out
    assert "LBA Format  0 : Metadata Size: 0   bytes - Data Size: 512 bytes" in human
    rc, raw, _ = cli.raw("id-ns", dev.ns(1), "-b")
    assert rc == 0 and len(raw) == IdentifyNamespace.SIZE
    assert IdentifyNamespace.view(bytearray(raw)).nsze == j["nsze"]


def test_id_ns_force_reads_allocated_namespace(cli, dev):
    res = cli("id-ns", dev.arg, "-n", "1", "--force", "-o", "json")
    assert res.rc == 0, res.err
    with dev.truth() as sub:
        assert res.json()["nsze"] == sub.namespaces[1].nblocks


def test_namespace_commands_need_a_namespace(cli, dev):
    for cmd in ("id-ns", "ns-descs"):
        res = cli(cmd, dev.arg)
        _one_line_error(res)
        assert res.err == "get-namespace-id: Inappropriate ioctl for device\n"


def test_bad_nsid_is_the_nvme_status(cli, dev):
    res = cli("id-ns", dev.arg, "-n", "0xfffffff0")
    _one_line_error(res)
    assert res.err.startswith("NVMe status: Invalid Namespace or Format")
    assert res.err.rstrip().endswith("(0x400b)")
    res = cli("smart-log", dev.arg, "-n", "0xfffffff0")
    _one_line_error(res)
    assert res.err.startswith("NVMe status: ")


def test_unknown_device_is_one_line(cli):
    for cmd in ("id-ctrl", "smart-log", "show-regs"):
        res = cli(cmd, "nvme7")
        _one_line_error(res)
        assert res.err.startswith("nvme7: No such file or directory")
    res = cli("id-ctrl", "/nonexistent/drive")
    _one_line_error(res)


def test_ns_descs(cli, dev):
    res = cli("ns-descs", dev.ns(1), "-o", "json")
    assert res.rc == 0, res.err
    descs = {d["type"]: d for d in res.json()["ns-descs"]}
    with dev.truth() as sub:
        ns = sub.namespaces[1]
        assert descs["eui64"]["eui64"] == ns.eui64.hex()
        assert descs["nguid"]["nguid"] == ns.nguid.hex()
        assert descs["uuid"]["uuid"].replace("-", "") == ns.uuid.hex()
    assert descs["csi"]["csi"] == "0"
    text = cli("ns-descs", dev.arg, "-n", "1").out.splitlines()
    assert text[0] == "NVME Namespace Identification Descriptors NS 1:"
    assert text[1] == f"eui64   : {descs['eui64']['eui64']}"
    rc, raw, _ = cli.raw("ns-descs", dev.arg, "-n", "1", "-b")
    assert rc == 0 and len(raw) == 4096 and raw[0] == 1 and raw[1] == 8


# ---------------------------------------------------------------------------
# get-log


def test_get_log_hex_dump_and_binary(cli, dev):
    res = cli("get-log", dev.arg, "--log-id=3", "--log-len=512")
    assert res.rc == 0, res.err
    lines = res.out.splitlines()
    assert lines[0] == f"Device:{dev.name} log-id:3 namespace-id:0xffffffff"
    assert lines[1] == "     " + "".join(f"{i:3x}" for i in range(16))
    assert len(lines) == 2 + 512 // 16
    rc, raw, _ = cli.raw("get-log", dev.arg, "-i", "3", "-l", "512", "-b")
    rc2, fw, _ = cli.raw("fw-log", dev.arg, "-b")
    assert rc == rc2 == 0 and raw == fw
    assert lines[2].startswith("0000: " + " ".join(f"{b:02x}" for b in raw[:16]))
    # --lpo: from byte 8 (the first slot)
    rc, part, _ = cli.raw("get-log", dev.arg, "-i", "3", "-l", "16", "--lpo=8", "-b")
    assert rc == 0 and part == raw[8:24]


def test_get_log_options_like_nvme_cli(cli, dev):
    res = cli("get-log", dev.arg, "-i", "2")
    _one_line_error(res)
    assert res.err == "non-zero log-len is required param\n"
    assert cli("get-log", dev.arg, "-i", "2", "-l", "4", "-s", "129").err == "invalid lsp param\n"
    assert cli("get-log", dev.arg, "-i", "2", "-l", "4", "-U", "129").err == "invalid uuid index param\n"
    # --aen takes the log id from an async event result and reads 4 KiB.
    rc, raw, err = cli.raw("get-log", dev.arg, "--aen=0x40302", "-b")
    assert rc == 0, err
    assert len(raw) == 4096 and raw[0] == 0  # changed namespace list (LID 04h), empty
    bad = cli("get-log", dev.arg, "-i", "0x7f", "-l", "16")
    _one_line_error(bad)
    assert bad.err.startswith("NVMe status: ")


# ---------------------------------------------------------------------------
# smart-log


def _write(dev: Dev, nsid: int, blocks: int) -> None:
    with open_device(dev.arg, io_queues=1) as d:
        for slba in range(0, blocks, 8):
            cmd = Write(nsid=nsid, slba=slba)
            cmd.nlb = 7
            d.ctrl.execute(cmd, bytes([slba & 0xFF]) * 4096)


def test_smart_log_counts_what_was_written(cli, dev):
    _write(dev, 1, 64)  # 8 writes of 4 KiB
    res = cli("smart-log", dev.arg, "-o", "json")
    assert res.rc == 0, res.err
    j = res.json()
    with dev.truth() as sub:
        page = sub.health.smart_log()
        assert sub.health.host_write_commands >= 8
        assert j["host_write_commands"] == str(page.host_writes)
        assert j["data_units_written"] == str(data_units(sub.health.bytes_written))
        assert j["avail_spare"] == page.avail_spare
        assert j["spare_thresh"] == page.spare_thresh
        assert j["critical_warning"] == page.critical_warning
    text = cli("smart-log", dev.arg).out.splitlines()
    assert text[0] == f"Smart Log for NVME device:{dev.name} namespace-id:ffffffff"
    assert text[10] == f"host_write_commands\t\t\t: {j['host_write_commands']}"
    per_ns = cli("smart-log", dev.arg, "-n", "1")
    if cli("id-ctrl", dev.arg, "-o", "json").json()["lpa"] & 1:  # SMART per namespace
        assert per_ns.out.splitlines()[0].endswith("namespace-id:1")
    else:
        _one_line_error(per_ns)
        assert per_ns.err.startswith("NVMe status: Invalid Field in Command")
    human = cli("smart-log", dev.arg, "-H", "-o", "json").json()
    assert human["critical_warning"]["value"] == j["critical_warning"]
    rc, raw, _ = cli.raw("smart-log", dev.arg, "-b")
    assert rc == 0 and len(raw) == SmartLog.SIZE
    assert SmartLog.view(bytearray(raw)).host_writes == int(j["host_write_commands"])


# ---------------------------------------------------------------------------
# error-log


def test_error_log_shows_the_failed_command(cli, dev, faults):
    # The host's Set Features (Asynchronous Event Configuration) while it
    # brings the controller up fails; the controller logs it; error-log on
    # that same association reads it back.
    faults().fail(GenericStatus.INVALID_FIELD, admin=True, opcode=AdminOpcode.SET_FEATURES, count=1)
    res = cli("error-log", dev.arg, "-o", "json")
    assert res.rc == 0, res.err
    errors = res.json()["errors"]
    with open_device(dev.arg, io_queues=0) as d:
        elpe = d.ctrl.identify.elpe
    assert len(errors) == elpe + 1  # the default 64 entries, at most ELPE + 1
    first = errors[0]
    assert first["error_count"] == 1
    assert first["sqid"] == 0
    assert first["status_field"] == 0x4002  # Invalid Field in Command, DNR
    assert first["parm_error_location"] == 0xFFFF
    assert all(e["error_count"] == 0 for e in errors[1:])
    faults().fail(GenericStatus.INVALID_FIELD, admin=True, opcode=AdminOpcode.SET_FEATURES, count=1)
    text = cli("error-log", dev.arg, "-e", "2").out.splitlines()
    assert text[0] == f"Error Log Entries for device:{dev.name} entries:2"
    assert text[4] == "error_count\t: 1"
    assert text[7].startswith("status_field\t: 0x4002(Invalid Field in Command")
    rc, raw, _ = cli.raw("error-log", dev.arg, "-e", "3", "-b")
    assert rc == 0 and len(raw) == 3 * 64
    res = cli("error-log", dev.arg, "-e", "0")
    _one_line_error(res)
    assert res.err == "non-zero log-entries is required param\n"


def test_smart_log_counts_errors(cli, dev):
    before = int(cli("smart-log", dev.arg, "-o", "json").json()["num_err_log_entries"])
    assert cli("id-ns", dev.arg, "-n", "0xfffffff0").rc == 1
    after = int(cli("smart-log", dev.arg, "-o", "json").json()["num_err_log_entries"])
    assert after == before + 1


# ---------------------------------------------------------------------------
# fw-log, effects-log, changed-ns-list-log


def test_fw_log(cli, dev):
    res = cli("fw-log", dev.arg, "-o", "json")
    assert res.rc == 0, res.err
    slots = res.json()[dev.name]
    with dev.truth() as sub:
        assert slots["Active Firmware Slot (afi)"] & 7 == sub.firmware.active
        rev = sub.firmware_revision
    value = slots[f"Firmware Rev Slot {sub.firmware.active}"].split(" ", 1)[0]
    assert int(value).to_bytes(8, "little").rstrip(b" ").decode() == rev
    out = cli("fw-log", dev.arg).out.splitlines()
    assert out[0] == f"Firmware Log for device:{dev.name}"
    assert out[1].startswith("afi  : ")


def test_effects_log(cli, dev):
    res = cli("effects-log", dev.arg, "-o", "json")
    assert res.rc == 0, res.err
    pages = res.json()
    # CAP.CSS.IOCSS is set: as nvme-cli, the NVM page and the Zoned one (listed
    # first), which has the admin commands and no I/O command.
    assert [p["command_set_identifier"] for p in pages] == [2, 0]
    assert pages[0]["admin_cmd_set"] == pages[1]["admin_cmd_set"] and not pages[0]["io_cmd_set"]
    assert cli("effects-log", dev.arg, "--csi=-1", "-o", "json").json() == pages
    pages = pages[1:]
    with open_device(dev.arg, io_queues=0) as d:
        mine = d.ctrl.get_log_page(LogPageId.CMD_EFFECTS, 4096)
    from nvmestack.spec.log import CommandsSupportedAndEffects

    page = CommandsSupportedAndEffects.view(mine)
    admin = pages[0]["admin_cmd_set"]
    assert admin["ACS_6 (Identify)"] == page.acs[6].value
    assert admin["ACS_2 (Get Log Page)"] == page.acs[2].value
    assert len(admin) == sum(1 for op in range(0xBF) if page.acs[op].value & 1) + \
        sum(1 for op in range(0xC0, 0xFF) if page.acs[op].value & 1)
    assert pages[0]["io_cmd_set"]["IOCS_1 (Write)"] == page.iocs[1].value
    text = cli("effects-log", dev.arg, "-H").out.splitlines()
    assert text[:3] == ["ZNS Command Set Log Page", "-" * 80, "Admin Commands"]
    text = text[text.index("NVM Command Set Log Page"):]
    assert text[1:3] == ["-" * 80, "Admin Commands"]
    line = next(x for x in text if x.startswith("IOCS1 "))
    assert line.startswith("IOCS1    [Write                           ] ") and "CSUPP+  LBCC+" in line
    rc, raw, _ = cli.raw("effects-log", dev.arg, "-b", "--csi=0")
    assert rc == 0 and raw == bytes(mine)


def test_changed_ns_list_log(cli, dev):
    # Each command has its own controller: nothing changed for it.
    res = cli("changed-ns-list-log", dev.arg)
    assert res.rc == 0 and res.out == ""
    j = cli("changed-ns-list-log", dev.arg, "-o", "json").json()
    assert j == {"Changed Namespace List Log": dev.name, dev.name: {}}
    rc, raw, _ = cli.raw("changed-ns-list-log", dev.arg, "-b")
    assert rc == 0 and raw == bytes(4096)


# ---------------------------------------------------------------------------
# self-test-log, sanitize-log


def test_self_test_log(cli, dev):
    if dev.fabrics:
        # Run a short self-test on the target, then read the log back.
        with dev.truth() as sub:
            sub.operations.short_self_test_seconds = 0.05
        with open_device(dev.arg, io_queues=0) as d:
            d.ctrl.execute(DeviceSelfTest(nsid=0xFFFFFFFF, stc=1), qid=0)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                log = DeviceSelfTestLog.view(d.ctrl.get_log_page(LogPageId.DEVICE_SELF_TEST, 564))
                if log.current_operation == 0:
                    break
                time.sleep(0.02)
    with open_device(dev.arg, io_queues=0) as d:
        mine = bytes(d.ctrl.get_log_page(LogPageId.DEVICE_SELF_TEST, DeviceSelfTestLog.SIZE))
    res = cli("self-test-log", dev.arg, "-o", "json")
    assert res.rc == 0, res.err
    j = res.json()
    assert j["Current Device Self-Test Operation"] == mine[0]
    assert j["Current Device Self-Test Completion"] == mine[1]
    reports = j["List of Valid Reports"]
    assert len(reports) == 20
    assert [r["Self test result"] for r in reports] == [mine[4 + 28 * i] & 0xF for i in range(20)]
    if dev.fabrics:
        assert reports[0]["Self test code"] == 1
        assert reports[0]["Self test result"] == 0
    text = cli("self-test-log", dev.arg, "-e", "1", "-v").out.splitlines()
    assert text[0] == f"Device Self Test Log for NVME device:{dev.name}"
    assert text[3] == "Self Test Result[0]:"
    assert len(cli("self-test-log", dev.arg, "--dst-entries=2", "-o", "json").json()["List of Valid Reports"]) == 2
    rc, raw, _ = cli.raw("self-test-log", dev.arg, "-o", "binary")
    assert rc == 0 and raw == mine


def test_sanitize_log(cli, dev):
    res = cli("sanitize-log", dev.arg, "-o", "json")
    assert res.rc == 0, res.err
    j = res.json()[dev.name]
    with open_device(dev.arg, io_queues=0) as d:
        from nvmestack.spec.log import SanitizeStatusLog

        mine = SanitizeStatusLog.view(d.ctrl.get_log_page(LogPageId.SANITIZE, 512))
    assert j["sprog"] == mine.sprog
    assert j["sstat"]["status"].startswith(f"({mine.status}) ")
    assert j["time_over_write"] == (mine.eto if mine.eto < 1 << 31 else mine.eto - (1 << 32))
    text = cli("sanitize-log", dev.arg, "-H", "--rae").out.splitlines()
    assert text[0].startswith("Sanitize Progress                      (SPROG) :  ")
    assert text[2].startswith("\t[2:0]\t")
    rc, raw, _ = cli.raw("sanitize-log", dev.arg, "-b")
    assert rc == 0 and raw == bytes(mine)  # the log page only (nvme-cli 2.3 adds its text)


# ---------------------------------------------------------------------------
# show-regs


def test_show_regs(cli, dev):
    with open_device(dev.arg, io_queues=0) as d:
        cap, vs = d.ctrl.cap, d.ctrl.vs
    res = cli("show-regs", dev.arg)
    assert res.rc == 0, res.err
    lines = res.out.splitlines()
    assert lines[:2] == [f"cap     : {cap:x}", f"version : {vs:x}"]
    # CC: enabled, CSS 110b (all supported I/O command sets), IOSQES 6, IOCQES 4.
    assert lines[2] == "cc      : 460061" and lines[3] == "csts    : 1"
    j = cli("show-regs", dev.arg, "-o", "json").json()
    assert j["cap"] == cap and j["vs"] == vs and j["csts"] == 1
    rc, raw, _ = cli.raw("show-regs", dev.arg, "-o", "binary")
    assert rc == 0 and len(raw) == 0xE1C
    assert int.from_bytes(raw[0:8], "little") == cap
    human = cli("show-regs", dev.arg, "-H").out
    assert f"\tMaximum Queue Entries Supported    (MQES): {(cap & 0xFFFF) + 1}\n" in human
    if dev.fabrics:
        # Property Get from CAP to CMBSZ: the target has CAP, VS, CC, CSTS, NSSR.
        assert [line.split(":")[0].strip() for line in lines] == ["cap", "version", "cc", "csts", "nssr"]
        assert j["intms"] == -1 and j["asq"] == (1 << 64) - 1 and j["crto"] == -1
        assert raw[0x0C:0x14] == b"\xff" * 8
    else:
        assert [line.split(":")[0].strip() for line in lines][-2:] == ["pmrmscl", "pmrmscu"]
        assert len(lines) == 25
        assert j["aqa"] == int.from_bytes(raw[0x24:0x28], "little") != 0


# ---------------------------------------------------------------------------
# options


def test_output_format_errors(cli, dev):
    res = cli("smart-log", dev.arg, "-o", "xml")
    _one_line_error(res)
    res = cli("self-test-log", dev.arg, "--dst-entries", "300")
    assert res.rc == 1 and res.out == ""


def test_unregistered_device_argument(cli, dev):
    """A controller named directly: the drive directory, or tcp://ADDR:PORT/NQN."""
    where = dev.path or dev.arg
    res = cli("id-ctrl", where, "-o", "json")
    assert res.rc == 0, res.err
    with dev.truth() as sub:
        assert res.json()["sn"].rstrip() == sub.serial
    assert cli("smart-log", where).out.startswith(f"Smart Log for NVME device:{where} ")
    assert json.loads(cli("fw-log", where, "-o", "json").out).keys() == {where}
