"""Our command line against Debian's nvme-cli, on the same target.

The Linux kernel in the guest connects to an NVMe/TCP target served from
this test process (our target code: ``nvmestack.target.tcp``, on the host's
127.0.0.1, which the guest reaches as 10.0.2.100); Debian's nvme-cli 2.3
reads it through the kernel (``nvme <cmd> /dev/nvmeX``), ``nvmestack <cmd>
tcp://127.0.0.1:P/NQN`` reads it through our host driver, and the values
must be the same.

They are two hosts with two controllers (two associations) of one NVM
subsystem, so some values differ by right; each such exception is listed
where it is compared, with why.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import time

import pytest

from nvmestack.cli.devices import host_identity
from nvmestack.cli.main import build_parser, main
from nvmestack.cli.output import error_log_json
from nvmestack.spec.features import FeatureId
from nvmestack.spec.log import ErrorInformationEntry
from nvmestack.target.features import MAX_IO_QUEUES
from nvmestack.target.namespace import Namespace
from nvmestack.target.subsystem import Subsystem
from nvmestack.target.tcp import TcpTarget
from nvmestack.testing.vm import HOST_ADDR

NQN = "nqn.2026-11.io.nvmestack:cli-compare"
CONNECT_OPTIONS = "--ctrl-loss-tmo=30 --reconnect-delay=2"


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(interop_ports):
    """Our target: one subsystem, two namespaces, on the host port the guest reaches."""
    sub = Subsystem(NQN, serial="CLICOMPARE01", model="nvmestack cli compare")
    for nsid in (1, 2):
        sub.add_namespace(Namespace(nsid, 1 << 16))
    tgt = TcpTarget([sub])
    tgt.listen("127.0.0.1", interop_ports["target"])
    tgt.start()
    tgt.subsystem = sub
    tgt.port = interop_ports["target"]
    tgt.url = f"tcp://127.0.0.1:{interop_ports['target']}/{NQN}"
    yield tgt
    tgt.stop()
    sub.close()


class Kernel:
    """The kernel connected to our subsystem: ``ctrl`` /dev/nvmeX, ``ns`` /dev/nvmeXn1."""

    def __init__(self, vm, ctrl: str, ns: str):
        self.vm, self.ctrl, self.ns = vm, ctrl, ns

    @property
    def sysfs(self) -> str:
        return f"/sys/class/nvme/{self.ctrl.removeprefix('/dev/')}"

    def run_all(self, commands: dict[str, str]) -> dict[str, tuple[int, bytes, bytes]]:
        """Run nvme-cli commands in one guest call: key -> (exit status,
        stdout, stderr)."""
        script = [("r() { k=$1; shift; \"$@\" >/tmp/o 2>/tmp/e; rc=$?; "
                   "echo \"@@ $k $rc $(base64 -w0 </tmp/o) $(base64 -w0 </tmp/e)\"; }")]
        for key, cmd in commands.items():
            script.append(f"r {shlex.quote(key)} {cmd}")
        out = self.vm.check("\n".join(script), 300)
        results = {}
        for line in out.splitlines():
            if line.startswith("@@ "):
                parts = line.split(" ")
                key, rc = parts[1], int(parts[2])
                stdout = base64.b64decode(parts[3]) if len(parts) > 3 else b""
                stderr = base64.b64decode(parts[4]) if len(parts) > 4 else b""
                results[key] = (rc, stdout, stderr)
        assert set(results) == set(commands), out[-2000:]
        return results


@pytest.fixture(scope="module")
def kernel(vm, target):
    vm.check("modprobe nvme-tcp", 60)
    vm.check(f"nvme connect -t tcp -a {HOST_ADDR} -s {target.port} -n {NQN} {CONNECT_OPTIONS}", 120)
    try:
        ctrl = vm.check(f"nvme-dev -c {NQN} 60", 90).strip()
        ns = vm.check(f"nvme-dev {NQN} 60", 90).strip()
        yield Kernel(vm, ctrl, ns)
    finally:
        vm.run(f"nvme disconnect -n {NQN}", 120)


@pytest.fixture
def ours(capsysbinary, tmp_path, monkeypatch):
    """``ours(*args)``: ``nvmestack *args`` in this process -> (exit status, stdout, stderr)."""
    monkeypatch.setenv("NVMESTACK_STATE_DIR", str(tmp_path / "state"))

    def run(*args: str) -> tuple[int, bytes, bytes]:
        capsysbinary.readouterr()
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        out, err = capsysbinary.readouterr()
        return rc, out, err

    return run


def _has_command(name: str) -> bool:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return name in sub.choices


# -- get-feature -----------------------------------------------------------------------------------

#: get-feature arguments compared.  The namespace-specific features are read
#: with -n 1, and once without (NSID FFFFFFFFh: both must fail alike).
FEATURE_ARGS = {
    "arb": "-f 1", "arb-H": "-f 1 -H", "arb-default": "-f 1 -s 1", "arb-saved": "-f 1 -s 2",
    "arb-caps": "-f 1 -s 3", "arb-changed": "-f 1 -s 8",
    "pm-H": "-f 2 -H",
    "lba-range": "-f 3 -n 1", "lba-range-H": "-f 3 -n 2 -H", "lba-range-caps": "-f 3 -s 3 -n 1",
    "lba-range-all-ns": "-f 3",
    "temp-H": "-f 4 -H", "temp-under-H": "-f 4 -c 0x100000 -H",
    "err-recovery-H": "-f 5 -n 1 -H", "err-recovery-all-ns": "-f 5",
    "vwc-H": "-f 6 -H", "vwc-saved": "-f 6 -s 2",
    "queues-H": "-f 7 -H",
    "irq-coalesce": "-f 8", "irq-config": "-f 9",
    "write-atomic-H": "-f 0xa -H",
    "aec-H": "-f 0xb -H",
    "apst": "-f 0xc", "apst-H": "-f 0xc -H", "apst-caps": "-f 0xc -s 3",
    "hmb": "-f 0xd",
    "timestamp": "-f 0xe", "timestamp-H": "-f 0xe -H",
    "kato-H": "-f 0xf -H",
    "hctm": "-f 0x10", "host-behavior": "-f 0x16",
    "hostid": "-f 0x81", "hostid-ext": "-f 0x81 -c 1",
    "resv-mask": "-f 0x82 -n 1",
    "vendor": "-f 0xc0",
    "walk": "",
    "bad-select": "-f 1 -s 9",
}


def _timestamp(out: bytes) -> tuple[int, int]:
    """(milliseconds, attributes) from get-feature -f 0xe's hex dump."""
    line = out.splitlines()[2]
    data = bytes.fromhex(line[6:6 + 8 * 3].decode())
    return int.from_bytes(data[:6], "little"), data[6]


def test_get_feature(kernel, target, ours):
    """Each feature through both command lines: exit status, standard output
    and standard error the same, except for the values listed below."""
    saved = target.subsystem.saved_features
    saved.set(FeatureId.ARBITRATION, 0x03020107)
    saved.set(FeatureId.VOLATILE_WC, 0)
    saved.set((FeatureId.ERR_RECOVERY, 1), 0x00000032)
    saved.set((FeatureId.TEMP_THRESH, 1), 0x110)  # under-temperature threshold, composite (THSEL=1)

    theirs = kernel.run_all({key: f"nvme get-feature {kernel.ctrl} {args}" for key, args in FEATURE_ARGS.items()}
                            | {"queue_count": f"cat {kernel.sysfs}/queue_count",
                               "hostid_sysfs": f"cat {kernel.sysfs}/hostid"})
    mine = {key: ours("get-feature", target.url, *args.split()) for key, args in FEATURE_ARGS.items()}

    # Number of Queues is what each host asked for with Set Features: the
    # kernel one I/O queue per guest CPU (sysfs queue_count counts the
    # admin queue too); our command asked for none (admin queue only), so
    # the controller reports its maximum.
    io_queues = int(theirs["queue_count"][1]) - 1
    assert theirs["queues-H"][1].splitlines()[0] == (
        b"get-feature:0x07 (Number of Queues), Current value:%#010x" % ((io_queues - 1) * 0x10001))
    n = MAX_IO_QUEUES - 1
    assert mine["queues-H"][1].splitlines()[0] == (
        b"get-feature:0x07 (Number of Queues), Current value:%#010x" % (n << 16 | n))

    # Asynchronous Event Configuration: each host enables the events it
    # handles.  Both ask for the notices the controller supports (namespace
    # attribute, firmware activation); our host also for the SMART critical
    # warnings (Linux leaves them off and polls the SMART log instead).
    their_aec = theirs["aec-H"][1].splitlines()
    my_aec = mine["aec-H"][1].splitlines()
    assert their_aec[1:-1] == my_aec[1:-1]
    assert their_aec[-1] == b"\tSMART / Health Critical Warnings                          : Do not send async event"
    assert my_aec[-1] == b"\tSMART / Health Critical Warnings                          : Send async event"

    # Timestamp: Linux sets it (wall-clock milliseconds, Set Features at
    # controller initialisation, so its origin attribute says "Set
    # Features"); our host does not, so ours counts from the controller's
    # creation (origin "Controller Level Reset").  The layout is the same.
    now_ms = time.time() * 1000
    (their_ms, their_attr), (my_ms, my_attr) = (_timestamp(r[1]) for r in (theirs["timestamp"], mine["timestamp"]))
    assert abs(their_ms - now_ms) < 86400_000 and their_attr == 0x02  # the guest clock is the host's
    assert my_ms < 600_000 and my_attr == 0x00
    their_h, my_h = theirs["timestamp-H"][1].splitlines(), mine["timestamp-H"][1].splitlines()
    assert their_h[0] == my_h[0] == b"get-feature:0x0e (Timestamp), Current value:00000000"
    their_shown, my_shown = (re.fullmatch(rb"\tThe timestamp is : (\d+) \(.*\)", h[1]) for h in (their_h, my_h))
    assert their_shown and 0 <= int(their_shown.group(1)) - their_ms < 60_000  # the kernel's clock, read again
    assert my_shown and int(my_shown.group(1)) < 600_000  # another new association of ours
    assert their_h[2] == b"\tThe Timestamp field was initialized with a Timestamp value using a Set Features command."
    assert my_h[2] == "\tThe Timestamp field was initialized to \u20180\u2019 by a Controller Level Reset.".encode()
    assert their_h[3:] == my_h[3:]

    # Autonomous Power State Transition: Linux turns APST on (APSTE=1) for a
    # controller that supports it, with a table of no transitions here since
    # the controller has no non-operational power state; our host leaves
    # the controller's default (off).  The tables are the same.
    their_apst, my_apst = theirs["apst"][1].splitlines(), mine["apst"][1].splitlines()
    assert their_apst[0] == b"get-feature:0x0c (Autonomous Power State Transition), Current value:0x00000001"
    assert my_apst[0] == b"get-feature:0x0c (Autonomous Power State Transition), Current value:00000000"
    assert their_apst[1:] == my_apst[1:]
    their_apst, my_apst = theirs["apst-H"][1].splitlines(), mine["apst-H"][1].splitlines()
    assert their_apst[1] == b"\tAutonomous Power State Transition Enable (APSTE): Enabled"
    assert my_apst[1] == b"\tAutonomous Power State Transition Enable (APSTE): Disabled"
    assert their_apst[2:] == my_apst[2:]

    # Host Identifier: each controller reports its own host's 128-bit ID.
    their_id = bytes.fromhex(theirs["hostid_sysfs"][1].decode().strip().replace("-", ""))
    my_id = bytes.fromhex(host_identity()[1].replace("-", ""))
    assert theirs["hostid-ext"][1].splitlines()[2].startswith(
        b"0000: " + b" ".join(b"%02x" % b for b in their_id))
    assert mine["hostid-ext"][1].splitlines()[2].startswith(b"0000: " + b" ".join(b"%02x" % b for b in my_id))
    assert theirs["hostid-ext"][1].splitlines()[0] == mine["hostid-ext"][1].splitlines()[0]

    exceptions = {"queues-H", "aec-H", "timestamp", "timestamp-H", "apst", "apst-H", "hostid-ext"}
    for key, args in FEATURE_ARGS.items():
        if key not in exceptions:
            assert mine[key] == theirs[key], (key, args)

    # What the features showed is what the target holds.
    assert mine["arb"][1] == b"get-feature:0x01 (Arbitration), Current value:0x03020107\n"
    assert mine["err-recovery-H"][1].splitlines()[-1].endswith(b"(TLER): 5000 ms")
    # The walk over every feature ends at FID 00h for both: Invalid Field
    # with Do Not Retry is not the status nvme-cli 2.3 skips.
    assert mine["walk"][0] == 1 and mine["walk"][1] == b""


def test_set_feature_seen_by_the_other_host(kernel, target, ours):
    """A value saved through one command line is the one the other reads."""
    rc, out = kernel.vm.run(f"nvme set-feature {kernel.ctrl} -f 1 -v 0x01010106 -s", 60)
    assert rc == 0, out
    assert out == "set-feature:0x01 (Arbitration), value:0x01010106, cdw12:00000000, save:0x1\n"
    assert target.subsystem.saved_features.get(FeatureId.ARBITRATION) == (0x01010106, b"")
    assert ours("get-feature", target.url, "-f", "1", "-s", "2")[1] == \
        b"get-feature:0x01 (Arbitration), Saved value:0x01010106\n"

    rc, out, err = ours("set-feature", target.url, "-f", "6", "-v", "1", "-s")
    line = b"set-feature:0x06 (Volatile Write Cache), value:0x00000001, cdw12:00000000, save:0x1\n"
    assert (rc, out, err) == (0, line, b"")
    # the kernel's controller never set it: its current value is the saved one
    assert kernel.vm.check(f"nvme get-feature {kernel.ctrl} -f 6", 60) == \
        "get-feature:0x06 (Volatile Write Cache), Current value:0x00000001\n"


# -- id-ctrl, id-ns, smart-log, error-log, fw-log -----------------------------------------------

needs_info = pytest.mark.skipif(not _has_command("id-ctrl"),
                                reason="nvmestack id-ctrl and the other information commands are not there yet")


def _json(result: tuple[int, bytes, bytes]):
    rc, out, err = result
    assert rc == 0, err
    return json.loads(out)


def _their_json(kernel: Kernel, cmd: str):
    return json.loads(kernel.vm.check(f"nvme {cmd} -o json", 120))


@needs_info
def test_id_ctrl(kernel, target, ours):
    mine = _json(ours("id-ctrl", target.url, "-o", "json"))
    theirs = _their_json(kernel, f"id-ctrl {kernel.ctrl}")
    # cntlid: each association has a controller of its own, the kernel's and
    # this command's, both alive at once, so their identifiers differ.
    assert mine.pop("cntlid") != theirs.pop("cntlid")
    assert mine == theirs


@needs_info
@pytest.mark.parametrize("nsid", [1, 2])
def test_id_ns(kernel, target, ours, nsid):
    mine = _json(ours("id-ns", target.url, "-n", str(nsid), "-o", "json"))
    theirs = _their_json(kernel, f"id-ns {kernel.ctrl} -n {nsid}")
    assert mine == theirs


@needs_info
def test_smart_log(kernel, target, ours):
    # Ours first: the command's own association is then over (anything it
    # added to the subsystem's counters is in) when the kernel's is read.
    mine = _json(ours("smart-log", target.url, "-o", "json"))
    theirs = _their_json(kernel, f"smart-log {kernel.ctrl}")
    # Reads move with the kernel's own block I/O (partition scan, udev
    # probing the namespaces), which the test does not control; the busy
    # time moves with any command.  Writes do not happen during the test.
    for key in ("data_units_read", "host_read_commands", "controller_busy_time"):
        assert int(theirs.pop(key)) >= 0 and int(mine.pop(key)) >= 0
    assert mine == theirs


@needs_info
def test_error_log(kernel, target, ours):
    # The Error Information log belongs to a controller: the kernel's holds
    # the errors of its own commands (one made here: a feature the target
    # does not have), ours those of this command's association (none).
    kernel.vm.run(f"nvme get-feature {kernel.ctrl} -f 0x10", 60)
    mine = _json(ours("error-log", target.url, "-o", "json"))["errors"]
    theirs = _their_json(kernel, f"error-log {kernel.ctrl}")["errors"]
    assert len(mine) == len(theirs)
    assert all(e["error_count"] == 0 for e in mine)
    # the entries past the kernel controller's errors are the same (empty)
    blank = [e for e in theirs if e["error_count"] == 0]
    assert blank == mine[len(mine) - len(blank):]
    # The kernel controller's newest entry, as the target recorded it and as
    # our output shows such an entry, is what nvme-cli showed.
    newest = theirs[0]
    assert (newest["sqid"], newest["status_field"]) == (0, 0x4002)
    (ctrl,) = [c for c in list(target.subsystem.controllers.values()) if c.error_log]
    entry = ErrorInformationEntry.from_bytes(ctrl.error_log[0])
    assert entry.error_count == newest["error_count"]
    assert error_log_json([entry])["errors"][0] == newest


@needs_info
def test_fw_log(kernel, target, ours):
    mine = _json(ours("fw-log", target.url, "-o", "json"))
    theirs = _their_json(kernel, f"fw-log {kernel.ctrl}")
    # The one object is named after the device: nvme0 for nvme-cli, the
    # device argument for us.
    assert len(mine) == len(theirs) == 1
    assert next(iter(mine.values())) == next(iter(theirs.values()))
