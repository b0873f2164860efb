"""``get-feature`` / ``set-feature``.

Two kinds of tests:

* against nvme-cli 2.3 itself: every case of ``data/make_golden_features.py``
  runs our command against a stand-in controller that completes each Get /
  Set Features as the real nvme-cli's ioctls were completed; standard
  output, standard error, the exit status and the commands sent (NSID,
  CDW10-15, data length) must be what nvme-cli printed and sent;
* against our devices (``tcp_target`` and ``drive``): the values shown are
  those the device holds, set-feature changes them (``--save`` survives the
  command's association), errors are the device's NVMe status.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import pathlib
import re
import struct
import sys
import time

import pytest

from nvmestack.cli import features as features_cli
from nvmestack.cli import output_features as of
from nvmestack.cli.devices import host_identity
from nvmestack.cli.main import main
from nvmestack.spec.features import FeatureId
from nvmestack.spec.status import Status
from nvmestack.target import persist
from nvmestack.target.features import FEATURE_INFO, MAX_IO_QUEUES

DATA = pathlib.Path(__file__).parent / "data"
GOLDEN = DATA / "nvme-cli-2.3"


def _load_cases():
    spec = importlib.util.spec_from_file_location("make_golden_features", DATA / "make_golden_features.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_golden_features", mod)
    spec.loader.exec_module(mod)
    return mod


GOLDEN_MOD = _load_cases()
CASES = {case.name: case for case in GOLDEN_MOD.CASES}

# -- a controller answering as the shim did ------------------------------------------------------


class ShimController:
    """Completes Get / Set Features from a golden case's answers; records
    each command as the shim logged it."""

    def __init__(self, case):
        self.case = case
        self.sent: list[str] = []

    def admin_passthru(self, cmd, data=None, meta=None, **_):
        length = len(data) if data is not None else 0
        self.sent.append(f"{cmd.opcode:02x} {cmd.nsid:x} {cmd.cdw10:x} {cmd.cdw11:x} {cmd.cdw12:x} {cmd.cdw13:x} "
                         f"{cmd.cdw14:x} {cmd.cdw15:x} {length:x}")
        fid = cmd.cdw10 & 0xFF
        if cmd.opcode == 0x0A:
            answer = self.case.answers.get((0x0A, fid, cmd.cdw10 >> 8 & 7))
            if answer is None:
                return Status.from_value(self.case.status), 0
            dw0, status, payload = answer
            if data is not None:
                data[:] = payload[:length].ljust(length, b"\0")
            return Status.from_value(status), dw0
        dw0, status, _ = self.case.answers.get((0x09, fid, 0), (0, 0, b""))
        return Status.from_value(status), dw0


class ShimDevice:
    def __init__(self, ctrl, nsid):
        self.ctrl, self.nsid = ctrl, nsid


def _partial_line_garbage(stdout: bytes) -> bytes:
    """nvme-cli's d() prints, for a partial line, one character more than
    the line has: the one the line before left in its buffer (which we
    print too) or, on a first line, whatever its stack held.  Drop that
    one."""
    out = []
    for line in stdout.split(b"\n"):
        m = re.match(rb'^(0000:)((?: [0-9a-f]{2})+) +"(.*)"$', line, re.DOTALL)
        if m:
            count = len(m.group(2)) // 3
            if count < 16 and len(m.group(3)) > count:
                line = line[: m.start(3)] + m.group(3)[:count] + b'"'
        out.append(line)
    return b"\n".join(out)


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def run_raw(capsysbinary, *args: str) -> tuple[int, bytes, bytes]:
    """``nvmestack *args`` in process: (exit status, stdout bytes, stderr bytes)."""
    capsysbinary.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsysbinary.readouterr()
    return rc, out, err


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_nvme_cli(name, capsysbinary, monkeypatch, tmp_path, utc):
    case = CASES[name]
    rc, err_lines, sent, stdout = GOLDEN_MOD.parse((GOLDEN / f"{name}.txt").read_bytes())
    ctrl = ShimController(case)

    @contextlib.contextmanager
    def fake_open(device, **options):
        assert device == "/dev/nvme0"
        assert options.get("io_queues") == 0
        yield ShimDevice(ctrl, case.nsid)

    monkeypatch.setattr(features_cli, "open_device", fake_open)
    for fname, data in case.files.items():
        (tmp_path / fname).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    stdin = io.TextIOWrapper(io.BytesIO(case.stdin))
    monkeypatch.setattr(sys, "stdin", stdin)

    got_rc, got_out, got_err = run_raw(capsysbinary, *case.args)
    assert got_rc == rc
    assert _partial_line_garbage(got_out) == _partial_line_garbage(stdout)
    if case.exact_stderr:
        assert got_err.decode().splitlines() == err_lines
    else:
        assert len(got_err.decode().splitlines()) == 1 and len(err_lines) == 1
    assert ctrl.sent == sent


def test_every_feature_name_and_data_length_seen():
    """The walk over every FID (all answered) shows nvme-cli's name and the
    data length it asked for, for each of the 256 FIDs."""
    _, _, sent, stdout = GOLDEN_MOD.parse((GOLDEN / "get-feature-all.txt").read_bytes())
    names = dict(re.findall(rb"^get-feature:(?:0x)?([0-9a-f]+) \(([^)]*)\)", stdout, re.MULTILINE))
    assert len(names) == 256
    for fid in range(256):
        assert names[b"%02x" % fid].decode() == of.feature_name(fid)
    lengths = {int(line.split()[2], 16): int(line.split()[8], 16) for line in sent}
    assert lengths == {fid: features_cli.nvme_cli_data_length(fid) for fid in range(256)}


# -- against our devices -------------------------------------------------------------------------

INVALID_FIELD_LINE = ("NVMe status: Invalid Field in Command: A reserved coded value or an unsupported value in a "
                      "defined field(0x4002)")


class Device:
    """The device under test, and what it holds: ``saved()`` reads the NVM
    subsystem's saved feature values, ``save(key, dword, data)`` sets one."""

    def __init__(self, kind: str, arg: str, subsystem=None):
        self.kind, self.arg, self._sub = kind, arg, subsystem

    @contextlib.contextmanager
    def subsystem(self):
        if self._sub is not None:
            yield self._sub
            return
        sub = persist.load(self.arg)
        try:
            yield sub
            persist.save(sub, self.arg)
        finally:
            sub.close()

    def saved(self, key):
        with self.subsystem() as sub:
            return sub.saved_features.get(key)

    def save(self, key, dword: int, data: bytes = b"") -> None:
        with self.subsystem() as sub:
            sub.saved_features.set(key, dword, data)

    def nblocks(self, nsid: int) -> int:
        with self.subsystem() as sub:
            return sub.namespaces[nsid].nblocks

    def warning_temperature(self) -> int:
        with self.subsystem() as sub:
            return sub.health.warning_temperature


@pytest.fixture(params=["tcp", "drive"])
def dev(request):
    if request.param == "tcp":
        tgt = request.getfixturevalue("tcp_target")
        return Device("tcp", tgt.url, tgt.subsystem)
    return Device("drive", request.getfixturevalue("drive"))


def test_get_shows_the_devices_values(cli, dev):
    dev.save(FeatureId.ARBITRATION, 0x03020107)
    dev.save(FeatureId.VOLATILE_WC, 0)
    dev.save((FeatureId.ERR_RECOVERY, 1), 0x0001000A)

    r = cli("get-feature", dev.arg, "-f", "1")
    assert (r.rc, r.out, r.err) == (0, "get-feature:0x01 (Arbitration), Current value:0x03020107\n", "")
    assert cli("get-feature", dev.arg, "-f", "1", "-s", "1").out == \
        "get-feature:0x01 (Arbitration), Default value:0x00000007\n"
    assert cli("get-feature", dev.arg, "--feature-id=1", "--sel=2").out == \
        "get-feature:0x01 (Arbitration), Saved value:0x03020107\n"
    r = cli("get-feature", dev.arg, "-f", "1", "-H")
    assert r.out.splitlines()[1:] == ["\tHigh Priority Weight   (HPW): 4", "\tMedium Priority Weight (MPW): 3",
                                      "\tLow Priority Weight    (LPW): 2", "\tArbitration Burst       (AB): No limit"]
    assert cli("get-feature", dev.arg, "-f", "6").out == \
        "get-feature:0x06 (Volatile Write Cache), Current value:00000000\n"
    # changed: current (saved 0) differs from the default (1)
    assert cli("get-feature", dev.arg, "-f", "6", "-s", "8").out == \
        "get-feature:0x06 (Volatile Write Cache), Changed value:00000000\n"
    r = cli("get-feature", dev.arg, "-f", "5", "-n", "1", "-H")
    assert r.out.splitlines()[1:] == [
        "\tDeallocated or Unwritten Logical Block Error Enable (DULBE): Enabled",
        "\tTime Limited Error Recovery                          (TLER): 1000 ms"]
    assert cli("get-feature", dev.arg, "-f", "5", "-n", "2").out == \
        "get-feature:0x05 (Error Recovery), Current value:00000000\n"
    # never set by this command's host (admin queue only): the controller's maximum
    n = MAX_IO_QUEUES - 1
    assert cli("get-feature", dev.arg, "-f", "7").out == \
        f"get-feature:0x07 (Number of Queues), Current value:{n << 16 | n:#010x}\n"
    r = cli("get-feature", dev.arg, "-f", "4", "-H")
    kelvin = dev.warning_temperature()
    assert r.out.splitlines()[-1] == f"\tTemperature Threshold         (TMPTH): {kelvin - 273}°C ({kelvin} Kelvin)"


def test_supported_capabilities(cli, dev):
    for fid, info in sorted(FEATURE_INFO.items()):
        r = cli("get-feature", dev.arg, "-f", str(fid), "-s", "3", "-n", "1")
        if info.pcie_only and dev.kind == "tcp":
            assert (r.rc, r.out, r.err) == (1, "", INVALID_FIELD_LINE + "\n")
            continue
        caps = info.capabilities
        lines = r.out.splitlines()
        assert r.rc == 0
        assert lines[0].endswith(f"Supported capabilities value:{of.alt_hex(caps, 10 if caps else 8)}")
        assert ("  Feature is saveable" in lines) == info.saveable
        assert ("  Feature is per-namespace" in lines) == info.ns_specific
        assert ("  Feature is changeable" in lines) == info.changeable


def test_set_save_then_get(cli, dev):
    r = cli("set-feature", dev.arg, "-f", "6", "-v", "0", "-s")
    assert (r.rc, r.out, r.err) == (
        0, "set-feature:0x06 (Volatile Write Cache), value:00000000, cdw12:00000000, save:0x1\n", "")
    assert dev.saved(FeatureId.VOLATILE_WC) == (0, b"")
    assert cli("get-feature", dev.arg, "-f", "6").out.endswith("Current value:00000000\n")
    assert cli("get-feature", dev.arg, "-f", "6", "-s", "2").out.endswith("Saved value:00000000\n")
    assert cli("get-feature", dev.arg, "-f", "6", "-s", "1").out.endswith("Default value:0x00000001\n")

    r = cli("set-feature", dev.arg, "--feature-id=1", "--value=0x03020101", "--save")
    assert r.out == "set-feature:0x01 (Arbitration), value:0x03020101, cdw12:00000000, save:0x1\n"
    assert dev.saved(FeatureId.ARBITRATION) == (0x03020101, b"")
    assert cli("get-feature", dev.arg, "-f", "1").out.endswith("Current value:0x03020101\n")


def test_value_not_saved_lasts_one_association(cli, dev):
    """Each command has its own association (controller): a current value
    set without --save is the controller's, gone with it."""
    r = cli("set-feature", dev.arg, "-f", "1", "-v", "0x0101")
    assert (r.rc, r.out) == (0, "set-feature:0x01 (Arbitration), value:0x00000101, cdw12:00000000, save:0\n")
    assert dev.saved(FeatureId.ARBITRATION) is None
    assert cli("get-feature", dev.arg, "-f", "1").out.endswith("Current value:0x00000007\n")


def test_apst_table(cli, dev, tmp_path):
    table = bytearray(256)
    struct.pack_into("<Q", table, 0, 250 << 8)  # power state 0: ITPT 250 ms, ITPS 0
    path = tmp_path / "apst.bin"
    path.write_bytes(bytes(table))
    r = cli("set-feature", dev.arg, "-f", "0xc", "-v", "1", "-d", path, "-s")
    assert r.rc == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == ("set-feature:0x0c (Autonomous Power State Transition), value:0x00000001, cdw12:00000000, "
                        "save:0x1")
    assert lines[2] == '0000: 00 fa 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "................"'
    assert len(lines) == 2 + 16
    assert dev.saved(FeatureId.AUTO_PST) == (1, bytes(table))

    r = cli("get-feature", dev.arg, "-f", "0xc", "-H")
    lines = r.out.splitlines()
    assert lines[:2] == ["get-feature:0x0c (Autonomous Power State Transition), Current value:0x00000001",
                         "\tAutonomous Power State Transition Enable (APSTE): Enabled"]
    assert lines[5:7] == ["\tIdle Time Prior to Transition (ITPT): 250 ms", "\tIdle Transition Power State   (ITPS): 0"]
    rc, out, err = cli.raw("get-feature", dev.arg, "-f", "0xc", "--raw-binary")
    assert (rc, out, err) == (0, bytes(table), b"")


def test_lba_range(cli, dev):
    r = cli("get-feature", dev.arg, "-f", "3", "-n", "2", "-H")
    assert r.rc == 0
    assert r.out.splitlines() == [
        "get-feature:0x03 (LBA Range Type), Current value:00000000",
        "\tNumber of LBA Ranges (NUM): 1",
        "\ttype       : 0 - Reserved",
        "\tattributes : 0x1 - LBA range may be overwritten, LBA range should be visible from the OS/EFI/BIOS",
        "\tslba       : 0",
        f"\tnlb        : {dev.nblocks(2) - 1:#x}",
        "\tguid       : " + "0" * 32,
    ]
    # without -H: the 4096-byte buffer as a hex dump
    assert len(cli("get-feature", dev.arg, "-f", "3", "-n", "1").out.splitlines()) == 2 + 256


def test_namespace_from_the_device_name(cli, tcp_target):
    r = cli("get-feature", tcp_target.url + "?nsid=1", "-f", "5")
    assert (r.rc, r.out) == (0, "get-feature:0x05 (Error Recovery), Current value:00000000\n")
    # a controller (NSID FFFFFFFFh) has no error recovery setting of its own
    r = cli("get-feature", tcp_target.url, "-f", "5")
    assert r.rc == 1 and r.out == ""
    assert r.err == ("NVMe status: Invalid Namespace or Format: The namespace or the format of that namespace is "
                     "invalid(0x400b)\n")


def test_host_identifier(cli, tcp_target, state_dir):
    """A fabrics controller's Host Identifier is the host's (128-bit only)."""
    r = cli("get-feature", tcp_target.url, "-f", "0x81", "-c", "1")
    _, hostid = host_identity()
    raw = bytes.fromhex(hostid.replace("-", ""))
    assert r.rc == 0
    assert r.out.splitlines()[2].startswith("0000: " + " ".join(f"{b:02x}" for b in raw) + ' "')
    r = cli("get-feature", tcp_target.url, "-f", "0x81")
    assert (r.rc, r.out, r.err) == (1, "", INVALID_FIELD_LINE + "\n")


def test_errors(cli, dev, tmp_path):
    # a feature the controller does not have
    r = cli("get-feature", dev.arg, "-f", "0x10")
    assert (r.rc, r.out, r.err) == (1, "", INVALID_FIELD_LINE + "\n")
    r = cli("set-feature", dev.arg, "-f", "0x10", "-v", "1")
    assert (r.rc, r.out, r.err) == (1, "", INVALID_FIELD_LINE + "\n")
    # every feature: as nvme-cli 2.3, the walk ends at FID 00h, whose
    # Invalid Field has Do Not Retry set
    r = cli("get-feature", dev.arg)
    assert (r.rc, r.out, r.err) == (1, "", INVALID_FIELD_LINE + "\n")
    r = cli("set-feature", dev.arg, "-f", "7", "-v", "0", "-s")
    assert (r.rc, r.out) == (1, "")
    assert r.err == ("NVMe status: Feature Identifier Not Saveable: The Feature Identifier specified does not "
                     "support a saveable value(0x410d)\n")
    ranges = tmp_path / "ranges.bin"
    ranges.write_bytes(bytes(4096))
    r = cli("set-feature", dev.arg, "-f", "3", "-n", "1", "-d", ranges)
    assert (r.rc, r.out) == (1, "")
    assert r.err == "NVMe status: Feature Not Changeable: The Feature Identifier is not able to be changed(0x410e)\n"
    # the ranges did not change
    r = cli("get-feature", dev.arg, "-f", "3", "-n", "1", "-H")
    assert r.out.splitlines()[5] == f"\tnlb        : {dev.nblocks(1) - 1:#x}"


@pytest.mark.parametrize("args, message", [
    (("set-feature", "-v", "1"), "feature-id required param"),
    (("get-feature", "-f", "1", "-s", "9"), "invalid 'select' param:9"),
    (("get-feature", "-f", "1", "-U", "129"), "invalid uuid index param: 129"),
    (("set-feature", "-f", "1", "-U", "200"), "invalid uuid index param: 200"),
    (("set-feature", "-f", "0xc", "-d", "/nonexistent/apst.bin"),
     "Failed to open file /nonexistent/apst.bin: No such file or directory"),
])
def test_argument_errors(cli, tcp_target, args, message):
    r = cli(args[0], tcp_target.url, *args[1:])
    assert (r.rc, r.out, r.err) == (1, "", message + "\n")


@pytest.mark.parametrize("args", [("get-feature", "-f", "256"), ("set-feature", "-f", "1", "-v", "abc"),
                                  ("get-feature", "-s", "x"), ("set-feature", "-f", "1", "-v", "1" + "0" * 30)])
def test_bad_numbers(cli, tcp_target, args):
    r = cli(args[0], tcp_target.url, *args[1:])
    assert r.rc == 1 and r.out == "" and len(r.err.splitlines()) == 1


def test_unreachable_device(cli, state_dir):
    r = cli("get-feature", "tcp://127.0.0.1:1/nqn.2026-11.io.nvmestack:none", "-f", "1")
    assert r.rc == 1 and r.out == "" and len(r.err.splitlines()) == 1
    assert "failed to connect" in r.err
