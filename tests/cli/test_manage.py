"""Management, passthrough and reset commands against the NVMe/TCP target
served in the test and against a local drive: what each command changes is
checked through what the device then reports (a new controller's Identify
data and log pages) and on the device side (the subsystem object).  Output
layouts come from nvme-cli 2.3 (``data/nvme-cli-2.3/manage/``, made by
``data/make_golden_manage.py``; the other texts are nvme-cli 2.3's strings)."""

from __future__ import annotations

import contextlib
import pathlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from nvmestack.cli import manage
from nvmestack.cli.devices import open_device
from nvmestack.spec.admin import Cns
from nvmestack.spec.identify import IdentifyController, IdentifyNamespace, NamespaceList
from nvmestack.spec.log import (
    DeviceSelfTestLog,
    FirmwareSlotLog,
    LogPageId,
    SanitizeStatus,
    SanitizeStatusLog,
)
from nvmestack.target import admin_mgmt, persist
from nvmestack.target.firmware import FirmwareImage

GOLDEN = pathlib.Path(__file__).parent / "data" / "nvme-cli-2.3" / "manage"
NS_BYTES = 32 << 20


@dataclass
class Dev:
    kind: str
    arg: str
    live: Any = None  # the served subsystem (TCP)

    @contextlib.contextmanager
    def subsystem(self) -> Iterator[Any]:
        if self.live is not None:
            yield self.live
            return
        sub = persist.load(self.arg)
        try:
            yield sub
        finally:
            sub.close()

    @contextlib.contextmanager
    def host(self) -> Iterator[Any]:
        """A new controller of the device, through the host driver."""
        with open_device(self.arg, io_queues=0) as d:
            yield d.ctrl


@pytest.fixture(autouse=True)
def quick_operations(monkeypatch):
    """Short device self-tests and sanitize operations."""
    real = admin_mgmt.BackgroundOperations.__init__

    def init(self, subsystem):
        real(self, subsystem)
        self.short_self_test_seconds = 0.1
        self.extended_self_test_seconds = 5.0
        self.sanitize_seconds = 0.1

    monkeypatch.setattr(admin_mgmt.BackgroundOperations, "__init__", init)


@pytest.fixture(params=["tcp", "drive"])
def dev(request) -> Dev:
    if request.param == "tcp":
        tgt = request.getfixturevalue("tcp_target")
        ops = tgt.subsystem.operations
        ops.short_self_test_seconds = ops.sanitize_seconds = 0.1
        ops.extended_self_test_seconds = 5.0
        return Dev("tcp", tgt.url, tgt.subsystem)
    return Dev("drive", request.getfixturevalue("drive"))


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def allocated_nsids(ctrl) -> list[int]:
    return NamespaceList.from_bytes(ctrl.identify_raw(Cns.ALLOCATED_NS_LIST, 0)).nsids()


def active_nsids(ctrl) -> list[int]:
    return NamespaceList.from_bytes(ctrl.identify_raw(Cns.NS_ACTIVE_LIST, 0)).nsids()


# ---------------------------------------------------------------------------
# namespaces


def test_namespace_life_cycle_on_a_drive(cli, drive):
    with open_device(drive, io_queues=0) as d:
        unvmcap = d.ctrl.identify.unvmcap
    res = cli("create-ns", drive, "-s", "2048", "-c", "2048", "-f", "0")
    assert res.rc == 0 and res.out == "create-ns: Success, created nsid:3\n"
    with open_device(drive, io_queues=0) as d:
        assert allocated_nsids(d.ctrl) == [1, 2, 3]
        assert active_nsids(d.ctrl) == [1, 2]  # create-ns does not attach
        assert IdentifyController.from_bytes(d.ctrl.identify_raw(Cns.CTRL)).unvmcap == unvmcap - 2048 * 512
        cntlid = d.ctrl.identify.cntlid
    res = cli("attach-ns", drive, "-n", "3", "-c", str(cntlid))
    assert res.rc == 0 and res.out == "attach-ns: Success, nsid:3\n"
    with open_device(drive, io_queues=0) as d:
        assert active_nsids(d.ctrl) == [1, 2, 3]
        idns = IdentifyNamespace.from_bytes(d.ctrl.identify_raw(Cns.NS, 3))
        assert (idns.nsze, idns.ncap, idns.lba_format.block_size) == (2048, 2048, 512)
    res = cli("detach-ns", drive, "-n", "3", "-c", str(cntlid))
    assert res.rc == 0 and res.out == "detach-ns: Success, nsid:3\n"
    with open_device(drive, io_queues=0) as d:
        assert active_nsids(d.ctrl) == [1, 2] and allocated_nsids(d.ctrl) == [1, 2, 3]
    res = cli("delete-ns", drive, "-n", "3")
    assert res.rc == 0 and res.out == "delete-ns: Success, deleted nsid:3\n"
    with open_device(drive, io_queues=0) as d:
        assert allocated_nsids(d.ctrl) == [1, 2]
        assert IdentifyController.from_bytes(d.ctrl.identify_raw(Cns.CTRL)).unvmcap == unvmcap


def test_namespace_life_cycle_over_tcp(cli, tcp_target):
    sub = tcp_target.subsystem
    # -b picks the LBA format; -S/-C are sizes in bytes with SI suffixes.
    res = cli("create-ns", tcp_target.url, "-S", "1M", "-C", "1M", "-b", "4096", "-m", "1")
    assert res.rc == 0 and res.out == "create-ns: Success, created nsid:3\n"
    ns = sub.namespaces[3]
    assert (ns.block_size, ns.nblocks) == (4096, 10**6 // 4096) and not ns.attached
    # Every command has its own controller: attach the namespace to one the
    # test holds, which then sees it (Namespace Attribute Changed, rescan).
    with open_device(tcp_target.url, io_queues=0) as d:
        cntlid = d.ctrl.identify.cntlid
        res = cli("attach-ns", tcp_target.url, "-n", "3", "-c", str(cntlid))
        assert res.rc == 0 and res.out == "attach-ns: Success, nsid:3\n"
        assert ns.attached == {cntlid}
        wait_for(lambda: 3 in d.ctrl.namespaces)
        assert d.ctrl.namespaces[3].block_size == 4096
        res = cli("detach-ns", tcp_target.url, "-n", "3", "-c", str(cntlid))
        assert res.rc == 0 and cntlid not in ns.attached and not ns.attached_hosts
        # The command's own association (same host NQN) began with what the
        # host had attached; it ends with the command.
        wait_for(lambda: not ns.attached)
        wait_for(lambda: 3 not in d.ctrl.namespaces)
    res = cli("delete-ns", f"{tcp_target.url}?nsid=3")
    assert res.rc == 0 and res.out == "delete-ns: Success, deleted nsid:3\n"
    assert 3 not in sub.namespaces


def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_create_ns_sizes_and_errors(cli, tcp_target):
    sub = tcp_target.subsystem
    # 1.5M bytes of 512-byte blocks, as nvme-cli computes it (SI, rounded down).
    res = cli("create-ns", tcp_target.url, "-S", "1.5M", "-c", "100", "-f", "0")
    assert res.rc == 0
    assert sub.namespaces[3].nblocks == 1_500_000 // 512 and sub.namespaces[3].ncap == 100
    for args, message in [
        (["-s", "8", "-c", "8", "-f", "0", "-b", "512"],
         "Invalid specification of both FLBAS and Block Size, please specify only one"),
        (["-s", "8", "-c", "8", "-b", "1000"], "Invalid value for block size (1000). Block size must be a power of two"),
        (["-s", "8", "-c", "8", "-b", "2048"], "FLBAS corresponding to block size 2048 not found"),
        (["-s", "8", "-c", "8"], "FLBAS corresponding to block size 0 not found"),
        (["-s", "8", "-S", "1M", "-f", "0"],
         "Invalid specification of both nsze and its SI argument, please specify only one"),
        (["-S", "1g", "-f", "0"], "Expected long suffixed integer argument for 'nsze-si' but got '1g'!"),
        (["-s", "8", "-c", "9", "-f", "0"], "NVMe status: Invalid Field in Command"),
        (["-s", "1T", "-c", "1T", "-f", "0"], "NVMe status: Namespace Insufficient Capacity"),
        (["-s", "8", "-c", "8", "-f", "40"], "NVMe status: Invalid Format"),
        (["-s", "8", "-c", "8", "-f", "300"], "out of range"),
    ]:
        res = cli("create-ns", tcp_target.url, *args)
        assert res.rc == 1, args
        assert message in one_line(res.err), (args, res.err)
    assert sorted(sub.namespaces) == [1, 2, 3]


def test_attach_errors(cli, tcp_target):
    res = cli("attach-ns", tcp_target.url, "-c", "1")
    assert res.rc == 1 and one_line(res.err) == "attach-ns: namespace-id parameter required"
    res = cli("detach-ns", tcp_target.url, "-n", "1", "-c", "1,x")
    assert res.rc == 1 and one_line(res.err) == "detach-ns: controller id list is malformed"
    res = cli("attach-ns", tcp_target.url, "-n", "1", "-c", "70000")
    assert res.rc == 1 and one_line(res.err) == "attach-ns: controller id list is malformed"
    # An empty list is sent as nvme-cli sends it, after its warning.
    res = cli("attach-ns", tcp_target.url, "-n", "2")
    assert res.rc == 1
    assert res.err.splitlines() == [
        "warning: empty controller-id list will result in no actual change in namespace attachment",
        ("NVMe status: Controller List Invalid: The controller list provided contains invalid controller ids"
         "(0x411c)"),
    ]
    res = cli("delete-ns", tcp_target.url)
    assert res.rc == 1 and "-n/--namespace-id" in one_line(res.err)


# ---------------------------------------------------------------------------
# format


def test_format_changes_the_format(cli, dev):
    res = cli("format", dev.arg, "-n", "1", "-l", "3", "--force")
    assert res.rc == 0 and res.out == "Success formatting namespace:1\n" and res.err == ""
    with dev.host() as ctrl:  # a new controller (for a drive: the drive reopened)
        idns = IdentifyNamespace.from_bytes(ctrl.identify_raw(Cns.NS, 1))
        assert idns.lba_format_index == 3 and idns.lba_format.block_size == 4096
        assert idns.nsze == NS_BYTES // 4096
        assert ctrl.namespaces[2].block_size == 512  # only namespace 1
    # -b picks the format with that block size and no metadata; -f is --force.
    target = [f"{dev.arg}?nsid=2"] if dev.kind == "tcp" else [dev.arg, "-n", "2"]
    res = cli("format", *target, "-b", "4096", "-f", "-r")
    assert res.rc == 0 and res.out == "Success formatting namespace:2\n"
    with dev.subsystem() as sub:
        assert sub.namespaces[2].block_size == 4096 and sub.namespaces[1].block_size == 4096


def test_format_safety_and_errors(cli, dev):
    # Standard input is not a terminal: no format without --force.
    res = cli("format", dev.arg, "-n", "1", "-l", "3")
    assert res.rc == 1 and "--force" in one_line(res.err) and res.out == ""
    with dev.subsystem() as sub:
        assert sub.namespaces[1].block_size == 512
    for args, message in [
        (["-l", "3", "-b", "4096"], "Invalid specification of both LBAF and Block Size, please specify only one"),
        (["-b", "3000"], "Invalid value for block size (3000), must be a power of two"),
        (["-b", "2048"], "LBAF corresponding to given block size 2048 not found"),
        (["-l", "64"], "invalid lbaf:64"),
        (["-l", "0", "-s", "8"], "invalid secure erase settings:8"),
        (["-l", "0", "-i", "8"], "invalid pi:8"),
        (["-l", "0", "-p", "2"], "invalid pil:2"),
        (["-l", "0", "-m", "2"], "invalid ms:2"),
        (["-l", "9"], "NVMe status: Invalid Format"),
        (["-l", "0", "-i", "1"], "NVMe status: Invalid Format"),  # PI needs 8 bytes of metadata
    ]:
        res = cli("format", dev.arg, "-n", "1", "--force", *args)
        assert res.rc == 1, args
        assert message in one_line(res.err), (args, res.err)
    res = cli("format", dev.arg, "--force")
    assert res.rc == 1 and one_line(res.err).startswith("Invalid namespace ID, specify a namespace to format")


def test_format_confirmation_on_a_terminal(cli, tcp_target, monkeypatch):
    """Without --force on a terminal: nvme-cli's warning, 10 seconds for
    Ctrl-C (not waited here), then the format."""
    import sys

    slept = []
    monkeypatch.setattr(manage.time, "sleep", slept.append)
    monkeypatch.setattr(sys, "stdin", type("Tty", (), {"isatty": lambda self: True})())
    res = cli("format", f"{tcp_target.url}?nsid=2", "-l", "3")
    assert res.rc == 0 and slept == [10]
    assert res.err.splitlines() == [
        f"You are about to format {tcp_target.url}?nsid=2, namespace 0x2.",
        "WARNING: Format may irrevocably delete this device's data.",
        "You have 10 seconds to press Ctrl-C to cancel this operation.",
        "",
        "Use the force [--force] option to suppress this warning.",
        "Sending format operation ... ",
    ]
    assert res.out == "Success formatting namespace:2\n"
    assert tcp_target.subsystem.namespaces[2].block_size == 4096


# ---------------------------------------------------------------------------
# firmware


def fw_state(dev: Dev) -> tuple[str, FirmwareSlotLog]:
    with dev.host() as ctrl:
        fr = IdentifyController.from_bytes(ctrl.identify_raw(Cns.CTRL)).fr
        log = FirmwareSlotLog.from_bytes(ctrl.get_log_page(LogPageId.FW_SLOT, FirmwareSlotLog.SIZE))
    return fr, log


def test_fw_download_and_commit(cli, dev, tmp_path):
    image = tmp_path / "fw2.bin"
    image.write_bytes(FirmwareImage.build("2.0", payload=bytes(range(256)) * 40))
    res = cli("fw-download", dev.arg, "-f", image, "-x", "4096")
    assert res.rc == 0 and res.out == "Firmware download success\n"
    res = cli("fw-commit", dev.arg, "-s", "2", "-a", "3")
    assert res.rc == 0
    assert res.out == "Success committing firmware action:3 slot:2\nMultiple Update Detected (MUD) Value: 0\n"
    fr, log = fw_state(dev)
    assert fr == "2.0" and log.afi & 7 == 2 and log.frs(2) == "2.0"
    # An image that needs a conventional reset: nvme-cli's "requires" line.
    image3 = tmp_path / "fw3.bin"
    image3.write_bytes(FirmwareImage.build("3.0", reset=2))
    res = cli("fw-download", dev.arg, "-f", image3, "-p")
    assert res.rc == 0
    assert res.out == ("Firmware download: transferring 0x00000000/0x00000010 bytes: 000%\r\n"
                       "Firmware download success\n")
    res = cli("fw-commit", dev.arg, "-s", "3", "-a", "3")
    assert res.rc == 1
    assert res.out == ("Success activating firmware action:3 slot:3, but firmware requires conventional reset\n"
                       "Multiple Update Detected (MUD) Value: 0\n")
    fr, log = fw_state(dev)
    assert log.frs(3) == "3.0"
    # A drive reopened is a power cycle: a conventional reset.
    assert fr == ("3.0" if dev.kind == "drive" else "2.0")


def test_fw_errors(cli, dev, tmp_path):
    res = cli("fw-download", dev.arg, "-f", tmp_path / "missing.bin")
    assert res.rc == 1 and one_line(res.err).startswith(f"Failed to open firmware file {tmp_path}/missing.bin: ")
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"1234567")
    res = cli("fw-download", dev.arg, "-f", odd)
    assert res.rc == 1 and one_line(res.err) == "Invalid size:7 for f/w image"
    image = tmp_path / "fw.bin"
    image.write_bytes(FirmwareImage.build("4.0"))
    assert cli("fw-download", dev.arg, "-f", image).rc == 0
    # The same piece again overlaps what the controller holds.
    res = cli("fw-download", dev.arg, "-f", image)
    assert res.rc == 1
    assert res.err.splitlines() == [
        "fw-download: error on offset 0x00000000/0x00000008",
        "NVMe status: Overlapping Range: The downloaded firmware image has overlapping ranges(0x4114)",
        "Use --ignore-ovr to ignore overwrite errors",
    ]
    assert cli("fw-download", dev.arg, "-f", image, "--ignore-ovr").rc == 0
    res = cli("fw-commit", dev.arg, "-s", "1", "-a", "0")  # slot 1 is read only
    assert res.rc == 1
    assert one_line(res.err).startswith("NVMe status: Invalid Firmware Slot")
    assert res.out == "Multiple Update Detected (MUD) Value: 0\n"
    for args, message in [(["-s", "8"], "invalid slot:8"), (["-a", "4"], "invalid action:4"),
                          (["-b", "2"], "invalid boot partition id:2")]:
        res = cli("fw-commit", dev.arg, *args)
        assert res.rc == 1 and one_line(res.err) == message
    # A controller reset drops a download (the device would).
    assert cli("reset", dev.arg).rc == 0
    res = cli("fw-commit", dev.arg, "-s", "2", "-a", "0")
    assert res.rc == 1 and one_line(res.err).startswith("NVMe status: Invalid Firmware Image")


# ---------------------------------------------------------------------------
# device self-test


def self_test_log(dev: Dev) -> DeviceSelfTestLog:
    with dev.host() as ctrl:
        return DeviceSelfTestLog.from_bytes(ctrl.get_log_page(LogPageId.DEVICE_SELF_TEST, DeviceSelfTestLog.SIZE))


def test_device_self_test(cli, dev):
    res = cli("device-self-test", dev.arg)
    assert res.rc == 0 and res.out == "no self test running\n"
    res = cli("device-self-test", dev.arg, "-s", "1", "-w")
    assert res.rc == 0, res.err
    assert res.out == ("Short Device self-test started\nWaiting for self test completion...\n"
                       "\r[==================================================] 100%\n")
    log = self_test_log(dev)
    assert log.current_operation == 0
    newest = log.result[0]
    assert (newest.code, newest.result) == (1, 0)  # short, completed without error


def test_self_test_abort_and_errors(cli, tcp_target):
    url = tcp_target.url
    res = cli("device-self-test", url, "-s", "2")
    assert res.rc == 0 and res.out == "Extended Device self-test started\n"
    res = cli("device-self-test", url, "-s", "0")
    assert res.rc == 0 and res.out.startswith("progress ") and res.out.endswith("%\n")
    res = cli("device-self-test", url, "-s", "1")
    assert res.rc == 1 and one_line(res.err).startswith("NVMe status: Device Self-test In Progress")
    res = cli("device-self-test", url, "-s", "0xf")
    assert res.rc == 0 and res.out == "Aborting device self-test operation\n"
    newest = self_test_log(Dev("tcp", url)).result[0]
    assert (newest.code, newest.result) == (2, 1)  # extended, aborted by a Device Self-test command
    res = cli("device-self-test", url, "-s", "3")
    assert res.rc == 1 and one_line(res.err).startswith("NVMe status: Invalid Field in Command")
    res = cli("device-self-test", url, "-s", "256")
    assert res.rc == 1 and "out of range" in one_line(res.err)


# ---------------------------------------------------------------------------
# sanitize


def test_sanitize(cli, dev, tmp_path):
    data = tmp_path / "d.bin"
    data.write_bytes(b"\xa5" * 4096)
    assert cli("write", dev.arg, "-n", "1", "-s", "0", "-c", "7", "-d", data).rc == 0
    res = cli("sanitize", dev.arg, "-a", "start-block-erase", "--force", "-w")
    assert res.rc == 0, res.err
    assert res.out == "Most Recent Sanitize Command Completed Successfully.\n"
    with dev.host() as ctrl:
        log = SanitizeStatusLog.from_bytes(ctrl.get_log_page(LogPageId.SANITIZE, SanitizeStatusLog.SIZE))
    assert log.status == SanitizeStatus.COMPLETED and log.scdw10 == 2
    rc, raw, _ = cli.raw("read", dev.arg, "-n", "1", "-s", "0", "-c", "7")
    assert rc == 0 and raw == bytes(4096)


def test_sanitize_overwrite(cli, tcp_target):
    # nvme-cli's cdw10 layout (passes 7:4, OIPBP bit 8, NDAS bit 9), the pattern in cdw11.
    res = cli("sanitize", tcp_target.url, "-a", "3", "-n", "2", "-i", "-d", "-p", "0x5a5a5a5a", "--force", "-w")
    assert res.rc == 0, res.err
    assert res.out == "Most Recent Sanitize Command Completed Successfully.\n"
    with open_device(tcp_target.url, io_queues=0) as d:
        log = SanitizeStatusLog.from_bytes(d.ctrl.get_log_page(LogPageId.SANITIZE, SanitizeStatusLog.SIZE))
    assert log.status == SanitizeStatus.COMPLETED and log.scdw10 == 0x323 and log.passes == 2
    # No-Deallocate: the last pass's pattern (inverted on the second pass) stays.
    rc, raw, _ = cli.raw("read", f"{tcp_target.url}?nsid=1", "-s", "0")
    assert rc == 0 and raw == (0x5a5a5a5a ^ 0xFFFFFFFF).to_bytes(4, "little") * 128
    # Without -w the command returns at once; the operation goes on in the device.
    res = cli("sanitize", tcp_target.url, "-a", "2", "--force")
    assert res.rc == 0 and res.out == ""
    assert tcp_target.subsystem.operations.wait_sanitize(5)


@pytest.mark.parametrize("args, message", [
    ([], "Invalid Sanitize Action"),
    (["-a", "0"], "Invalid Sanitize Action"),
    (["-a", "5"], "Invalid Sanitize Action"),
    (["-a", "start"], "Expected byte argument for 'sanact' but got 'start'!"),
    (["-a", "300"], "Expected byte argument for 'sanact' but got '300'!"),
    (["-a", "exit", "-u"], "SANACT is Exit Failure Mode"),
    (["-a", "1", "-d"], "SANACT is Exit Failure Mode"),
    (["-a", "2", "-n", "3"], "SANACT is not Overwrite"),
    (["-a", "start-b", "-p", "1"], "SANACT is not Overwrite"),
    (["-a", "3", "-n", "17"], "OWPASS out of range [0-16]"),
    (["-a", "2"], "sanitize: refusing to run without --force"),
    (["-a", "4", "--force"], "NVMe status: Invalid Field in Command"),  # no crypto erase
])
def test_sanitize_errors(cli, tcp_target, args, message):
    res = cli("sanitize", tcp_target.url, *args)
    assert res.rc == 1
    assert one_line(res.err).startswith(message), res.err
    assert tcp_target.subsystem.operations.sanitize_status == SanitizeStatus.NEVER_SANITIZED


def test_parse_sanact():
    assert manage.parse_sanact("exit-failure") == 1
    assert manage.parse_sanact("e") == 1
    assert manage.parse_sanact("START-OVERWRITE") == 3
    assert manage.parse_sanact("start-c") == 4
    assert manage.parse_sanact("0x2") == 2
    with pytest.raises(manage.CliError):
        manage.parse_sanact("start")


def test_parse_si():
    assert manage.parse_si("nsze", "1000") == (1000, False)
    assert manage.parse_si("nsze", "1k") == (1000, True)
    assert manage.parse_si("nsze", "1.5M") == (1_500_000, True)
    assert manage.parse_si("nsze", "2T") == (2 * 10**12, True)
    assert manage.parse_si("nsze", "1GB") == (10**9, True)
    assert manage.parse_si("nsze", "0x10") == (16, False)
    for bad in ("1g", "1K", "1x", "abc", ""):
        with pytest.raises(manage.CliError):
            manage.parse_si("nsze", bad)


# ---------------------------------------------------------------------------
# passthrough


def hexdump_bytes(text: str) -> bytes:
    out = bytearray()
    for line in text.splitlines()[1:]:
        out += bytes.fromhex(line[5:line.index('"')].replace(" ", ""))
    return bytes(out)


def test_admin_passthru_identify(cli, dev):
    res = cli("admin-passthru", dev.arg, "-o", "6", "-4", "1", "-l", "4096", "-r")
    assert res.rc == 0, res.err
    assert res.err == "Admin Command Identify is Success and result: 0x00000000\n"
    lines = res.out.splitlines()
    assert lines[0] == "       0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f"
    assert len(lines) == 1 + 4096 // 16
    data = hexdump_bytes(res.out)
    with dev.host() as ctrl:
        expect = bytes(ctrl.identify_raw(Cns.CTRL))
    assert len(data) == 4096
    idc = IdentifyController.from_bytes(data)
    ref = IdentifyController.from_bytes(expect)
    assert (idc.sn, idc.mn, idc.vid, idc.nn) == (ref.sn, ref.mn, ref.vid, ref.nn)
    assert res.out == manage.hexdump(data)
    # -b: the bytes themselves.
    rc, raw, err = cli.raw("admin-passthru", dev.arg, "-o", "6", "-4", "1", "-l", "4096", "-r", "-b")
    assert rc == 0 and len(raw) == 4096 and raw[4:24] == expect[4:24]
    assert err == b"Admin Command Identify is Success and result: 0x00000000\n"
    # A result in completion dword 0: Get Features, Number of Queues.
    res = cli("admin-passthru", dev.arg, "-o", "0xa", "-4", "7")
    assert res.rc == 0 and res.out == ""
    assert res.err.startswith("Admin Command Get Features is Success and result: 0x")
    assert res.err != "Admin Command Get Features is Success and result: 0x00000000\n"


def test_io_passthru_round_trip(cli, dev, tmp_path):
    data = bytes(range(256)) * 4
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    # Write 2 blocks at LBA 0x30: cdw10 SLBA, cdw12 NLB (0's based).
    res = cli("io-passthru", dev.arg, "-n", "1", "-o", "1", "-4", "0x30", "-6", "1", "-l", "1024", "-w", "-i", src)
    assert res.rc == 0, res.err
    assert res.err == "IO Command Write is Success and result: 0x00000000\n" and res.out == ""
    with dev.subsystem() as sub:
        buf = bytearray(1024)
        sub.namespaces[1].data.readinto(0x30 * 512, [memoryview(buf)])
        assert bytes(buf) == data
    rc, raw, err = cli.raw("io-passthru", dev.arg, "-n", "1", "-o", "2", "-4", "0x30", "-6", "1", "-l", "1024",
                           "-r", "-b")
    assert rc == 0 and raw == data and err == b"IO Command Read is Success and result: 0x00000000\n"
    out = tmp_path / "out.bin"
    res = cli("io-passthru", dev.arg, "-n", "1", "-o", "2", "-4", "0x30", "-6", "1", "-l", "1024", "-r", "-i", out)
    assert res.rc == 0 and res.out == "" and out.read_bytes() == data
    # The namespace of the device name when -n is not given; -T latency.
    target = f"{dev.arg}?nsid=1" if dev.kind == "tcp" else None
    if target:
        res = cli("io-passthru", target, "-o", "2", "-4", "0x30", "-l", "512", "-r", "-T")
        assert res.rc == 0 and res.out.startswith("IO Command Read latency: ")
        assert hexdump_bytes(res.out.split("\n", 1)[1]) == data[:512]


def test_passthru_show_command_matches_nvme_cli(cli, dev):
    args = ["-o", "0xc0", "-n", "1", "-2", "2", "-3", "3", "-4", "4", "-5", "5", "-6", "6", "-7", "7", "-8", "8",
            "-9", "0x90000009", "-R", "0x1234", "-t", "1000"]
    res = cli("admin-passthru", dev.arg, *args, "-d")  # a dry run sends nothing
    assert res.rc == 0 and res.err == ""
    assert res.out == (GOLDEN / "show-command.out").read_text()
    res = cli("io-passthru", dev.arg, "-o", "0x80", "-n", "2", "-4", "0xffffffff", "-d")
    assert res.rc == 0 and res.out == (GOLDEN / "io-show-command.out").read_text()
    # Sent: the vendor specific opcode is refused by the device.
    res = cli("admin-passthru", dev.arg, *args, "-s")
    assert res.rc == 1 and res.out == (GOLDEN / "show-command.out").read_text()
    assert one_line(res.err).startswith("NVMe status: Invalid Command Opcode")


def test_passthru_errors(cli, tcp_target):
    url = tcp_target.url
    res = cli("admin-passthru", url, "-l", "16", "-r")
    assert res.rc == 1 and "opcode" in one_line(res.err)
    res = cli("admin-passthru", url, "-o", "0xc0", "-l", "16")
    assert res.rc == 1 and one_line(res.err) == "data direction not given"
    res = cli("admin-passthru", url, "-o", "6", "-f", "1")
    assert res.rc == 1 and one_line(res.err).startswith("passthru: Invalid argument")
    res = cli("admin-passthru", url, "-o", "0x1ff")
    assert res.rc == 1 and "out of range" in one_line(res.err)
    res = cli("io-passthru", url, "-o", "2", "-n", "1", "-4", "0x10000000", "-l", "512", "-r")
    assert res.rc == 1 and one_line(res.err).startswith("NVMe status: LBA Out of Range")


def test_hexdump_matches_nvme_cli():
    pattern = bytes(range(256)) * 16
    for n in (4096, 33, 20, 3):
        assert manage.hexdump(pattern[:n]) == (GOLDEN / f"hexdump-{n}.out").read_text("latin-1")


def test_command_names():
    assert manage.command_name(True, 0x06) == "Identify"
    assert manage.command_name(True, 0xC0) == "Vendor Specific"
    assert manage.command_name(False, 0x09) == "Dataset Management"
    assert (GOLDEN / "hexdump-20.err").read_text() == "Admin Command Identify is Success and result: 0x00000000\n"


# ---------------------------------------------------------------------------
# resets


def test_reset_keeps_the_device_usable(cli, dev, tmp_path):
    res = cli("reset", dev.arg)
    assert res.rc == 0 and res.out == "" and res.err == ""
    src = tmp_path / "d.bin"
    src.write_bytes(b"\x11" * 512)
    assert cli("write", dev.arg, "-n", "1", "-s", "3", "-d", src).rc == 0
    res = cli("subsystem-reset", dev.arg)
    if dev.kind == "drive":
        # PCIe: NSSR through the register, then the controller comes up again.
        assert res.rc == 0 and res.out == "" and res.err == ""
    else:
        # Our NVMe/TCP target has no NSSR (CAP.NSSRS = 0): nvme-cli's message.
        assert res.rc == 1 and one_line(res.err) == "Subsystem-reset: NVM Subsystem Reset not supported."
    rc, raw, _ = cli.raw("read", dev.arg, "-n", "1", "-s", "3")
    assert rc == 0 and raw == src.read_bytes()
    with dev.host() as ctrl:
        assert sorted(ctrl.namespaces) == [1, 2]


def test_subsystem_reset_activates_pending_firmware(cli, drive, tmp_path):
    image = tmp_path / "fw.bin"
    image.write_bytes(FirmwareImage.build("5.0", reset=3))  # needs an NVM Subsystem Reset
    assert cli("fw-download", drive, "-f", image).rc == 0
    res = cli("fw-commit", drive, "-s", "2", "-a", "1")
    assert res.rc == 1
    assert res.out.splitlines()[0] == "Success activating firmware action:1 slot:2, but firmware requires " \
                                      "subsystem reset"
    with open_device(drive, io_queues=0) as d:
        assert d.ctrl.identify.fr == "1.0"
    res = cli("subsystem-reset", drive)
    assert res.rc == 0 and res.err == ""
    fr, log = fw_state(Dev("drive", drive))
    assert fr == "5.0" and log.afi & 7 == 2
