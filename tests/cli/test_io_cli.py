"""read, write, compare, flush, dsm, write-zeroes, write-uncor and verify
against the NVMe/TCP target served in the test and against a local drive;
what the commands did is checked on the device side too (the namespace's
backend)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from nvmestack.target import persist

BLOCK = 512


@dataclass
class Dev:
    """The device under test: ``arg`` names its controller on the command
    line; ``subsystem()`` gives the device side to look at."""

    kind: str
    arg: str
    live: Any = None  # the served subsystem (TCP)

    def ns_arg(self, nsid: int = 1) -> list[str]:
        return [self.arg, "-n", str(nsid)]

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

    def blocks(self, nsid: int, lba: int, count: int) -> bytes:
        with self.subsystem() as sub:
            ns = sub.namespaces[nsid]
            buf = bytearray(count * ns.block_size)
            ns.data.readinto(lba * ns.block_size, [memoryview(buf)])
            return bytes(buf)


@pytest.fixture(params=["tcp", "drive"])
def dev(request) -> Dev:
    if request.param == "tcp":
        tgt = request.getfixturevalue("tcp_target")
        return Dev("tcp", tgt.url, tgt.subsystem)
    return Dev("drive", request.getfixturevalue("drive"))


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def pattern(n: int, seed: int = 7) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


# ---------------------------------------------------------------------------
# write, read, compare


def test_write_then_read_back(cli, dev, tmp_path):
    data = pattern(16 * BLOCK)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    res = cli("write", *dev.ns_arg(), "-s", "100", "-c", "15", "-z", len(data), "-d", src)
    assert res.rc == 0, res.err
    assert res.err == "write: Success\n" and res.out == ""
    assert dev.blocks(1, 100, 16) == data  # the device has the bytes
    out = tmp_path / "out.bin"
    res = cli("read", *dev.ns_arg(), "-s", "100", "-c", "15", "-z", len(data), "-d", out)
    assert res.rc == 0 and res.err == "read: Success\n"
    assert out.read_bytes() == data
    # Without -d the data goes to standard output.
    rc, raw, err = cli.raw("read", *dev.ns_arg(), "-s", "100", "-c", "15")
    assert rc == 0 and raw == data and err == b"read: Success\n"


def test_namespace_from_the_device_name(cli, tcp_target):
    data = pattern(BLOCK, seed=3)
    with open_stdin(data):
        res = cli("write", f"{tcp_target.url}?nsid=2", "-s", "5", "-z", BLOCK)
    assert res.rc == 0, res.err
    ns = tcp_target.subsystem.namespaces[2]
    buf = bytearray(BLOCK)
    ns.data.readinto(5 * BLOCK, [memoryview(buf)])
    assert bytes(buf) == data
    rc, raw, _ = cli.raw("read", f"{tcp_target.url}?nsid=2", "-s", "5")
    assert rc == 0 and raw == data
    # A controller without -n: one line saying what is missing.
    res = cli("read", tcp_target.url, "-s", "5")
    assert res.rc == 1 and "-n/--namespace-id" in one_line(res.err)


def test_kernel_style_names(cli, dev, tmp_path):
    """nvme0n1 and /dev/nvme0n1 once the controller is registered (connect /
    drive attach do that)."""
    from nvmestack.cli.devices import Registry, parse_tcp_url

    entry = {"transport": "pcie", "drive": dev.arg} if dev.kind == "drive" else parse_tcp_url(dev.arg)[0]
    with Registry() as reg:
        name = reg.add(entry)
    assert name == "nvme0"
    data = pattern(BLOCK, seed=21)
    (tmp_path / "d").write_bytes(data)
    assert cli("write", "nvme0n2", "-s", "9", "-d", tmp_path / "d").rc == 0
    assert dev.blocks(2, 9, 1) == data
    rc, raw, _ = cli.raw("read", "/dev/nvme0n2", "-s", "9")
    assert rc == 0 and raw == data
    rc, raw, _ = cli.raw("read", "/dev/nvme0", "-n", "2", "-s", "9")
    assert rc == 0 and raw == data
    res = cli("flush", "nvme0")
    assert res.rc == 1 and one_line(res.err) == ("flush: no namespace: give -n/--namespace-id or a namespace "
                                                 "device (nvme0n1, tcp://...?nsid=N)")
    res = cli("read", "nvme1n1")
    assert res.rc == 1 and "No such file or directory" in one_line(res.err)


@contextlib.contextmanager
def open_stdin(data: bytes) -> Iterator[None]:
    class Stdin(io.TextIOWrapper):
        pass

    old = sys.stdin
    sys.stdin = Stdin(io.BytesIO(data))
    try:
        yield
    finally:
        sys.stdin = old


def test_write_from_stdin_and_data_size_rounding(cli, dev):
    data = pattern(BLOCK, seed=11)
    with open_stdin(data + b"ignored beyond -z"):
        res = cli("write", *dev.ns_arg(), "-s", "7", "-z", BLOCK)
    assert res.rc == 0 and res.err == "write: Success\n"
    assert dev.blocks(1, 7, 1) == data
    # -z smaller than the blocks: nvme-cli's rounding note, and -z bytes out.
    rc, raw, err = cli.raw("read", *dev.ns_arg(), "-s", "7", "-c", "1", "-z", 100)
    assert rc == 0
    assert err == b"Rounding data size to fit block count (1024 bytes)\nread: Success\n"
    assert raw == data[:100]
    # -z larger than the blocks: the blocks, then zeroes up to -z.
    rc, raw, _ = cli.raw("read", *dev.ns_arg(), "-s", "7", "-z", 2 * BLOCK)
    assert rc == 0 and raw == data + bytes(BLOCK)


def test_large_transfer_is_split_by_mdts(cli, dev, tmp_path):
    # 8 MiB: twice the controllers' MDTS (4 MiB); the device refuses a
    # command above MDTS, so success means the transfer was split.
    count = 16384
    data = pattern(count * BLOCK, seed=5)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    res = cli("write", *dev.ns_arg(2), "-s", "0", "-c", count - 1, "-d", src)
    assert res.rc == 0, res.err
    assert dev.blocks(2, 0, count) == data
    rc, raw, _ = cli.raw("read", *dev.ns_arg(2), "-s", "0", "-c", count - 1)
    assert rc == 0 and raw == data
    res = cli("compare", *dev.ns_arg(2), "-s", "0", "-c", count - 1, "-d", src)
    assert res.rc == 0 and res.err == "compare: Success\n"


def test_progress_bar_on_a_terminal(cli, tcp_target, monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    count = 16384  # 8 MiB: two commands of MDTS (4 MiB)
    rc, raw, err = cli.raw("read", f"{tcp_target.url}?nsid=1", "-c", count - 1)
    assert rc == 0 and raw == bytes(count * BLOCK)  # the bar is on standard error only
    text = err.decode()
    assert text.startswith("\rread [") and "100.0% 8.0 MiB/8.0 MiB" in text
    assert text.endswith("\nread: Success\n")
    # One command: no bar.
    rc, raw, err = cli.raw("read", f"{tcp_target.url}?nsid=1", "-c", "7")
    assert rc == 0 and err == b"read: Success\n"


def test_compare_success_and_miscompare(cli, dev, tmp_path):
    data = pattern(4 * BLOCK, seed=9)
    src = tmp_path / "d.bin"
    src.write_bytes(data)
    assert cli("write", *dev.ns_arg(), "-s", "40", "-c", "3", "-d", src).rc == 0
    res = cli("compare", *dev.ns_arg(), "-s", "40", "-c", "3", "-d", src)
    assert res.rc == 0 and res.err == "compare: Success\n"
    res = cli("compare", *dev.ns_arg(), "-s", "41", "-c", "3", "-d", src)
    assert res.rc == 1
    assert one_line(res.err).startswith("NVMe status: Compare Failure: ")
    assert res.err.rstrip().endswith("(0x4285)")


def test_show_command_dry_run_and_latency(cli, dev, tmp_path):
    src = tmp_path / "d.bin"
    src.write_bytes(pattern(BLOCK, seed=1))
    res = cli("write", *dev.ns_arg(), "-s", "0x20", "-c", "0", "-v", "-w", "-l", "-f", "-p", "1", "-r", "5",
              "-a", "2", "-m", "3", "-D", "7", "-d", src)
    assert res.rc == 0 and res.err == ""  # a dry run sends nothing
    lines = res.out.splitlines()
    assert lines[0] == "opcode       : 01"
    assert lines[1] == "nsid         : 01"
    assert lines[3] == "control      : c400"  # LR | FUA | PRINFO 1
    assert lines[4] == "nblocks      : 0000"
    assert lines[7] == "slba         : 20"
    assert lines[8] == "dsmgmt       : 00000007"
    assert lines[9:12] == ["reftag       : 5", "apptag       : 0002", "appmask      : 0003"]
    assert lines[-2:] == ["pif             : 00", "sts             : 00"]
    assert dev.blocks(1, 0x20, 1) == bytes(BLOCK)
    res = cli("write", *dev.ns_arg(), "-s", "0x20", "-d", src, "-t")
    assert res.rc == 0
    assert res.out.startswith(" latency: write: ") and res.out.endswith(" us\n")
    assert dev.blocks(1, 0x20, 1) == src.read_bytes()


def test_separate_metadata(cli, dev, tmp_path):
    # LBA format 1: 512 bytes of data and 8 of metadata, in a separate buffer.
    assert cli("format", dev.arg, "-n", "2", "-l", "1", "--force").rc == 0
    data, meta = pattern(2 * BLOCK, seed=12), pattern(16, seed=13)
    (tmp_path / "d").write_bytes(data)
    (tmp_path / "m").write_bytes(meta)
    res = cli("write", *dev.ns_arg(2), "-s", "9", "-c", "1", "-d", tmp_path / "d", "-y", "16", "-M", tmp_path / "m")
    if dev.kind == "tcp":
        # NVMe/TCP carries metadata only inside the blocks (extended LBA formats).
        assert res.rc == 1 and one_line(res.err) == ("write: NVMe/TCP has no separate metadata buffer "
                                                     "(use extended LBA formats)")
        return
    assert res.rc == 0, res.err
    with dev.subsystem() as sub:
        ns = sub.namespaces[2]
        buf = bytearray(16)
        ns.meta.readinto(9 * 8, [memoryview(buf)])
        assert bytes(buf) == meta
    res = cli("read", *dev.ns_arg(2), "-s", "9", "-c", "1", "-d", tmp_path / "d2", "-y", "4", "-M", tmp_path / "m2")
    assert res.rc == 0
    assert res.err == "Rounding metadata size to fit block count (16 bytes)\nread: Success\n"
    assert (tmp_path / "d2").read_bytes() == data and (tmp_path / "m2").read_bytes() == meta


def test_extended_lba_format(cli, tcp_target, tmp_path):
    # Extended: each block carries its 8 bytes of metadata after its data.
    assert cli("format", tcp_target.url, "-n", "2", "-l", "1", "-m", "1", "--force").rc == 0
    data = pattern(2 * (BLOCK + 8), seed=14)
    (tmp_path / "d").write_bytes(data)
    res = cli("write", f"{tcp_target.url}?nsid=2", "-s", "3", "-c", "1", "-d", tmp_path / "d")
    assert res.rc == 0, res.err
    rc, raw, _ = cli.raw("read", f"{tcp_target.url}?nsid=2", "-s", "3", "-c", "1")
    assert rc == 0 and raw == data
    ns = tcp_target.subsystem.namespaces[2]
    buf = bytearray(BLOCK)
    ns.data.readinto(4 * BLOCK, [memoryview(buf)])
    assert bytes(buf) == data[BLOCK + 8: 2 * BLOCK + 8]


# ---------------------------------------------------------------------------
# write-zeroes, write-uncor, dsm, verify, flush


def test_write_zeroes(cli, dev, tmp_path):
    data = pattern(8 * BLOCK, seed=2)
    src = tmp_path / "d.bin"
    src.write_bytes(data)
    assert cli("write", *dev.ns_arg(), "-s", "200", "-c", "7", "-d", src).rc == 0
    res = cli("write-zeroes", *dev.ns_arg(), "-s", "202", "-c", "3")
    assert res.rc == 0 and res.out == "NVME Write Zeroes Success\n"
    expect = data[: 2 * BLOCK] + bytes(4 * BLOCK) + data[6 * BLOCK:]
    assert dev.blocks(1, 200, 8) == expect
    rc, raw, _ = cli.raw("read", *dev.ns_arg(), "-s", "200", "-c", "7")
    assert rc == 0 and raw == expect
    # DEAC: deallocated blocks read as zeroes too.
    res = cli("write-zeroes", *dev.ns_arg(), "-s", "200", "-c", "1", "-d")
    assert res.rc == 0
    assert dev.blocks(1, 200, 2) == bytes(2 * BLOCK)


def test_write_uncorrectable_then_read_fails(cli, dev, tmp_path):
    res = cli("write-uncor", *dev.ns_arg(), "-s", "300", "-c", "1")
    assert res.rc == 0 and res.out == "NVME Write Uncorrectable Success\n"
    with dev.subsystem() as sub:
        assert {300, 301} <= set(sub.namespaces[1].uncorrectable)
    res = cli("read", *dev.ns_arg(), "-s", "301")
    assert res.rc == 1 and res.out == ""
    assert one_line(res.err).startswith("NVMe status: Unrecovered Read Error: ")
    res = cli("verify", *dev.ns_arg(), "-s", "299", "-c", "3")
    assert res.rc == 1 and "Unrecovered Read Error" in one_line(res.err)
    # A write makes the block readable again.
    src = tmp_path / "d.bin"
    src.write_bytes(pattern(BLOCK))
    assert cli("write", *dev.ns_arg(), "-s", "301", "-d", src).rc == 0
    rc, raw, _ = cli.raw("read", *dev.ns_arg(), "-s", "301")
    assert rc == 0 and raw == src.read_bytes()


def test_dsm_deallocate(cli, dev, tmp_path):
    data = pattern(32 * BLOCK, seed=4)
    src = tmp_path / "d.bin"
    src.write_bytes(data)
    assert cli("write", *dev.ns_arg(), "-s", "500", "-c", "31", "-d", src).rc == 0
    res = cli("dsm", *dev.ns_arg(), "-s", "500,520", "-b", "8,4", "-d")
    assert res.rc == 0 and res.out == "NVMe DSM: success\n"
    expect = bytes(8 * BLOCK) + data[8 * BLOCK: 20 * BLOCK] + bytes(4 * BLOCK) + data[24 * BLOCK:]
    assert dev.blocks(1, 500, 32) == expect
    rc, raw, _ = cli.raw("read", *dev.ns_arg(), "-s", "500", "-c", "31")
    assert rc == 0 and raw == expect
    # No range: nvme-cli's message.
    res = cli("dsm", *dev.ns_arg(), "-d")
    assert res.rc == 1 and one_line(res.err) == "No range definition provided"
    res = cli("dsm", *dev.ns_arg(), "-s", "1,x", "-b", "1")
    assert res.rc == 1 and "--slbs" in one_line(res.err)


def test_verify_and_flush(cli, dev):
    res = cli("verify", *dev.ns_arg(), "-s", "0", "-c", "63", "-l", "-f")
    assert res.rc == 0 and res.out == "NVME Verify Success\n"
    res = cli("flush", *dev.ns_arg())
    assert res.rc == 0 and res.out == "NVMe Flush: success\n"
    res = cli("flush", dev.arg, "-n", "9")
    assert res.rc == 1 and one_line(res.err).startswith("NVMe status: Invalid Field in Command")  # inactive NSID


# ---------------------------------------------------------------------------
# errors


def test_out_of_range_lba(cli, dev):
    nblocks = 32 * 1024 * 1024 // BLOCK
    for args in (("read", "-s", nblocks), ("read", "-s", nblocks - 1, "-c", "1"),
                 ("write-zeroes", "-s", nblocks), ("verify", "-s", nblocks - 2, "-c", "5"),
                 ("write-uncor", "-s", nblocks)):
        res = cli(args[0], *dev.ns_arg(), *args[1:])
        assert res.rc == 1, args
        line = one_line(res.err)
        assert line.startswith("NVMe status: LBA Out of Range: The command references an LBA that exceeds the "
                               "size of the namespace("), line
        assert res.out == ""


@pytest.mark.parametrize("args, message", [
    (["read", "-p", "16"], "read: invalid prinfo:16 (0-15)"),
    (["verify", "-p", "99"], "verify: invalid prinfo:99 (0-15)"),
    (["write-zeroes", "-r", "0x100000000"], "Reference tag larger than allowed by PIF"),
    (["write", "-g", "1"], "Storage tag larger than storage tag size"),
    (["write", "-T", "17"], "Invalid directive type, 11"),
    (["read", "-c", "70000"], "out of range"),
    (["read", "-s", "abc"], "expected a number"),
    (["read", "-d", "/nonexistent/dir/x"], "No such file or directory"),
    (["write", "-d", "/nonexistent/file"], "No such file or directory"),
])
def test_bad_values_are_one_line(cli, tcp_target, args, message):
    res = cli(args[0], tcp_target.url, "-n", "1", *args[1:])
    assert res.rc == 1
    assert message in one_line(res.err)
    assert res.out == ""


def test_inactive_or_invalid_namespace(cli, dev):
    res = cli("read", *dev.ns_arg(7))
    assert res.rc == 1 and one_line(res.err) == f"read: namespace 7 is not attached to {dev.arg}"
    res = cli("read", *dev.ns_arg(0x7FFFFFFF))
    assert res.rc == 1
    assert one_line(res.err).startswith("NVMe status: Invalid Namespace or Format: ")


def test_unknown_device(cli, tmp_path):
    res = cli("read", str(tmp_path / "nothing"), "-n", "1")
    assert res.rc == 1 and "No such file or directory" in one_line(res.err)
    os.makedirs(tmp_path / "empty")
    res = cli("flush", str(tmp_path / "empty"), "-n", "1")
    assert res.rc == 1 and "not an NVMe device" in one_line(res.err)
