"""Regenerate ``nvme-cli-2.3/get-feature-*.txt`` and ``set-feature-*.txt`` from
the real nvme-cli (not run by the tests; they import :data:`CASES` from here).

Needs Debian 12's nvme-cli 2.3 and a C compiler.  ``nvme_shim_admin.c`` is
LD_PRELOADed so that nvme-cli opens /dev/null for /dev/nvme0 and gets each
case's completions (dword 0, status, data) back from its Get / Set Features
ioctls; the shim logs every command nvme-cli sent::

    .venv/bin/python tests/cli/data/make_golden_features.py

Each golden file is a header of ``# `` lines -- the exit status, each line
nvme-cli wrote on standard error, each admin command it sent (opcode, NSID,
CDW10..CDW15, data length, in hex as the shim logs them) -- then ``# ---``
and standard output byte for byte.  nvme-cli runs with ``LC_ALL=C TZ=UTC``.
"""

from __future__ import annotations

import os
import pathlib
import random
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "nvme-cli-2.3"

INVALID_FIELD_DNR = 0x4002  # what Linux returns for a controller's Invalid Field (DNR set)
INVALID_FIELD = 0x0002  # the same without DNR: the only status nvme-cli's feature walk skips


@dataclass
class Case:
    """One nvme-cli run: ``args`` after ``nvme`` (the device is /dev/nvme0);
    ``answers`` maps (opcode, fid, sel) -- opcode 0x0a Get Features, 0x09 Set
    Features (sel 0) -- to (dw0, status, data); a Get Features without an
    answer completes with ``status``.  ``nsid`` makes the device a namespace
    block device (NVME_IOCTL_ID answers it); ``files`` are written to the
    working directory; ``stdin`` is fed to nvme-cli; ``exact_stderr`` False
    for argument errors whose wording is the argument parser's own."""

    name: str
    args: list[str]
    answers: dict[tuple[int, int, int], tuple[int, int, bytes]] = field(default_factory=dict)
    status: int = INVALID_FIELD_DNR
    nsid: int | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    stdin: bytes = b""
    exact_stderr: bool = True


def gf(fid: int, dw0: int, data: bytes = b"", sel: int = 0, status: int = 0):
    return (0x0A, fid, sel), (dw0, status, data)


def sf(fid: int, dw0: int = 0, status: int = 0):
    return (0x09, fid, 0), (dw0, status, b"")


# -- feature data --------------------------------------------------------------------------------


def lba_ranges() -> bytes:
    out = bytearray(4096)
    # type, attributes, slba, nlb (0's based), guid
    struct.pack_into("<BB14xQQ", out, 0, 1, 0x01, 0, 0x3FFF)
    out[32:48] = bytes(range(0xA0, 0xB0))
    struct.pack_into("<BB14xQQ", out, 64, 0x80, 0x03, 0x4000, 0xFFFF)
    out[96:112] = bytes(range(16))
    return bytes(out)


def apst_table() -> bytes:
    out = bytearray(256)
    for ps in range(32):
        itpt, itps = (ps + 1) * 100 if ps < 4 else 0, ps % 5
        struct.pack_into("<Q", out, ps * 8, itpt << 8 | itps << 3)
    return bytes(out)


def hmb_attributes() -> bytes:
    out = bytearray(4096)
    struct.pack_into("<IIII", out, 0, 0x1000, 0x12345000, 0x1, 4)
    return bytes(out)


def timestamp(ms: int = 1700000000123, attr: int = 0x02) -> bytes:
    return ms.to_bytes(6, "little") + bytes([attr, 0])


def plm_config() -> bytes:
    out = bytearray(512)
    struct.pack_into("<H30xQQQ", out, 0, 0x0007, 1000, 2000, 3000)
    return bytes(out)


def host_behavior() -> bytes:
    out = bytearray(512)
    out[0:3] = b"\x01\x00\x01"
    return bytes(out)


def host_metadata(fid: int) -> bytes:
    """Host metadata with NUL-terminated values (nvme-cli copies each value
    with strncpy into a buffer it never clears)."""
    elements = [(0x01, 0, b"nvme0\0"), (0x02, 1, b"nvme\0"), (0x03, 2, b"6.1.0-13-amd64\0")]
    if fid == 0x7E:  # every controller metadata type, and one past them
        elements = [(t, t & 3, b"v%d\0" % t) for t in range(0x01, 0x12)]
    if fid == 0x7F:
        elements = [(t, 0, b"ns%d\0" % t) for t in range(0x01, 0x06)]
    out = bytearray(4096)
    out[0] = len(elements)
    pos = 2
    for etype, rev, value in elements:
        struct.pack_into("<BBH", out, pos, etype, rev, len(value))
        out[pos + 4:pos + 4 + len(value)] = value
        pos += 4 + len(value)
    return bytes(out)


def host_id() -> bytes:
    return bytes.fromhex("0123456789abcdef")


#: A controller like ours: the features it implements, with values set.
SPARSE = dict([
    gf(0x01, 0x03020107),
    gf(0x02, 0x00000042),
    gf(0x03, 0x00000001, lba_ranges()),
    gf(0x04, 0x0001015B),
    gf(0x05, 0x0001000A),
    gf(0x06, 0x00000001),
    gf(0x07, 0x003F003F),
    gf(0x08, 0x00000A05),
    gf(0x09, 0x00010003),
    gf(0x0A, 0x00000001),
    gf(0x0B, 0x80000B1F),
    gf(0x0C, 0x00000001, apst_table()),
    gf(0x0D, 0x00000003, hmb_attributes()),
    gf(0x0E, 0x00000000, timestamp()),
    gf(0x0F, 5000),
    gf(0x10, 343 << 16 | 353),
    gf(0x11, 0x00000001),
    gf(0x12, 0x00000005),
    gf(0x13, 0x00000001, plm_config()),
    gf(0x14, 0x00000002),
    gf(0x15, 0x0064000A),
    gf(0x16, 0x00000000, host_behavior()),
    gf(0x17, 0x00000001),
    gf(0x18, 0x00A50002),
    gf(0x19, 0x00000001),
    gf(0x1A, 0x00000001),
    gf(0x7D, 0x00000000, host_metadata(0x7D)),
    gf(0x7E, 0x00000000, host_metadata(0x7E)),
    gf(0x7F, 0x00000000, host_metadata(0x7F)),
    gf(0x80, 0x00000007),
    gf(0x81, 0x00000000, host_id()),
    gf(0x82, 0x0000000E),
    gf(0x83, 0x00000001),
    gf(0x84, 0x00000002),
    gf(0xC0, 0xDEADBEEF),
])


def structured_data(fid: int, rng: random.Random) -> bytes:
    """Data nvme-cli can decode safely (host metadata must stay within its
    buffer, timestamps within what localtime() handles), random otherwise."""
    if fid in (0x7D, 0x7E, 0x7F):
        return host_metadata(fid)
    if fid == 0x0E:
        return timestamp(rng.randrange(1 << 41), rng.randrange(256))
    if fid == 0x1E:
        return fdp_events(rng)
    return rng.randbytes(4096)


def fdp_events(rng: random.Random) -> bytes:
    """FDP event descriptors (type, attributes): the defined types, then random ones."""
    types = [0x00, 0x01, 0x02, 0x03, 0x80, 0x81]
    out = bytearray()
    for i in range(255):
        out += bytes([types[i] if i < len(types) else rng.randrange(256), rng.randrange(256)])
    return bytes(out)


def every_feature(dword: int | None, seed: int) -> dict:
    """Every FID answered: dword 0 is ``dword``, or random when None."""
    rng = random.Random(seed)
    answers = {}
    for fid in range(256):
        dw0 = rng.randrange(1 << 32) if dword is None else dword
        if fid == 0x1E:
            # nvme-cli reads dword 0 descriptors from a 255-descriptor buffer
            dw0 = min(dw0 & 0xFF if dword is None else dword, 255)
        key, value = gf(fid, dw0, structured_data(fid, rng))
        answers[key] = value
    return answers


def _changed() -> dict:
    answers = dict(SPARSE)
    answers.update([gf(0x01, 0x00000007, sel=1), gf(0x06, 0x00000001, sel=1), gf(0x07, 0x003F003F, sel=1),
                    gf(0x0B, 0, sel=1), gf(0x0C, 0, apst_table(), sel=1), gf(0x0E, 0, timestamp(5, 0), sel=1)])
    return answers


DEV = "/dev/nvme0"


def _cases() -> list[Case]:
    cases = [
        # one feature
        Case("get-feature-arbitration", ["get-feature", DEV, "-f", "1"], SPARSE),
        Case("get-feature-arbitration-H", ["get-feature", DEV, "-f", "1", "-H"], SPARSE),
        Case("get-feature-zero", ["get-feature", DEV, "-f", "0x0e"], SPARSE),
        Case("get-feature-lba-range-H", ["get-feature", DEV, "-f", "3", "-H", "-n", "1"], SPARSE),
        Case("get-feature-lba-range", ["get-feature", DEV, "--feature-id=3", "--namespace-id=1"], SPARSE),
        Case("get-feature-apst-H", ["get-feature", DEV, "-f", "0xc", "-H"], SPARSE),
        Case("get-feature-timestamp-H", ["get-feature", DEV, "-f", "0xe", "-H"], SPARSE),
        Case("get-feature-hostid-H", ["get-feature", DEV, "-f", "0x81", "-H"], SPARSE),
        Case("get-feature-hostid-exhid", ["get-feature", DEV, "-f", "0x81", "-c", "1"], SPARSE),
        Case("get-feature-window-H", ["get-feature", DEV, "-f", "0x14", "-H"], SPARSE),
        Case("get-feature-raw", ["get-feature", DEV, "-f", "0xc", "-b"], SPARSE),
        Case("get-feature-raw-dword", ["get-feature", DEV, "-f", "1", "--raw-binary"], SPARSE),
        Case("get-feature-options", ["get-feature", DEV, "-f", "1", "-l", "16", "-c", "0x1234", "-U", "3", "-n", "5"],
             SPARSE),
        Case("get-feature-blockdev", ["get-feature", DEV, "-f", "5", "-H"], SPARSE, nsid=1),
        # select
        Case("get-feature-default", ["get-feature", DEV, "-f", "6", "-s", "1"],
             {**SPARSE, **dict([gf(6, 1, sel=1)])}),
        Case("get-feature-saved-H", ["get-feature", DEV, "-f", "0xc", "--sel=2", "-H"],
             {**SPARSE, **dict([gf(0xC, 1, apst_table(), sel=2)])}),
        Case("get-feature-supported", ["get-feature", DEV, "-f", "0xc", "-s", "3"],
             {**SPARSE, **dict([gf(0xC, 0x5, sel=3)])}),
        Case("get-feature-supported-all", ["get-feature", DEV, "-s", "3", "-H"],
             dict(gf(fid, fid & 7, sel=3) for fid in range(256)), status=INVALID_FIELD),
        Case("get-feature-changed", ["get-feature", DEV, "-s", "8", "-H"], _changed(), status=INVALID_FIELD),
        Case("get-feature-changed-one", ["get-feature", DEV, "-f", "6", "-s", "8"], _changed()),
        Case("get-feature-sel-reserved", ["get-feature", DEV, "-f", "1", "-s", "5"], SPARSE),
        # walking every feature
        Case("get-feature-walk", ["get-feature", DEV], SPARSE, status=INVALID_FIELD),
        Case("get-feature-walk-H", ["get-feature", DEV, "-H"], SPARSE, status=INVALID_FIELD),
        Case("get-feature-walk-dnr", ["get-feature", DEV], SPARSE),
        Case("get-feature-walk-last", ["get-feature", DEV, "-H"], {**SPARSE, **dict([gf(0xFF, 9)])},
             status=INVALID_FIELD),
        Case("get-feature-walk-error", ["get-feature", DEV, "-H"], {**SPARSE, **dict([gf(0x05, 0, status=0x0006)])},
             status=INVALID_FIELD),
        Case("get-feature-all", ["get-feature", DEV], every_feature(None, 1)),
        Case("get-feature-all-H-zero", ["get-feature", DEV, "-H"], every_feature(0, 2)),
        Case("get-feature-all-H-ones", ["get-feature", DEV, "-H"], every_feature(0xFFFFFFFF, 3)),
        Case("get-feature-all-H-random", ["get-feature", DEV, "-H"], every_feature(None, 4)),
        Case("get-feature-all-H-random2", ["get-feature", DEV, "-H"], every_feature(None, 5)),
        # errors
        Case("get-feature-invalid-field", ["get-feature", DEV, "-f", "2"], {}),
        Case("get-feature-invalid-field-nodnr", ["get-feature", DEV, "-f", "2"], {}, status=INVALID_FIELD),
        Case("get-feature-invalid-ns", ["get-feature", DEV, "-f", "3"], {**dict([gf(3, 0, status=0x400B)])}),
        Case("get-feature-bad-select", ["get-feature", DEV, "-f", "1", "-s", "9"], SPARSE),
        Case("get-feature-bad-uuid", ["get-feature", DEV, "-f", "1", "-U", "129"], SPARSE),
        Case("get-feature-bad-fid", ["get-feature", DEV, "-f", "256"], SPARSE, exact_stderr=False),
        # set-feature
        Case("set-feature-arbitration", ["set-feature", DEV, "-f", "1", "-v", "0x03020107"], dict([sf(1)])),
        Case("set-feature-save-zero", ["set-feature", DEV, "-f", "6", "-v", "0", "-s"], dict([sf(6)])),
        Case("set-feature-suffix", ["set-feature", DEV, "--feature-id=6", "--value=1k", "--cdw12=7"], dict([sf(6)])),
        Case("set-feature-octal-wide", ["set-feature", DEV, "-f", "0x80", "-v", "010", "-c", "0x1ffffff"],
             dict([sf(0x80)])),
        Case("set-feature-value64", ["set-feature", DEV, "-f", "6", "-v", "0x1ffffffff", "-n", "7", "-U", "2"],
             dict([sf(6)])),
        Case("set-feature-timestamp", ["set-feature", DEV, "-f", "0xe", "-v", "0x123456789abc"], dict([sf(0xE)])),
        Case("set-feature-apst-file", ["set-feature", DEV, "-f", "0xc", "-v", "1", "-d", "apst.bin"], dict([sf(0xC)]),
             files={"apst.bin": apst_table()}),
        Case("set-feature-apst-short", ["set-feature", DEV, "-f", "0xc", "-v", "1", "--data=short.bin"],
             dict([sf(0xC)]), files={"short.bin": b"abc"}),
        Case("set-feature-apst-stdin", ["set-feature", DEV, "-f", "0xc", "-v", "1"], dict([sf(0xC)]),
             stdin=apst_table()[:64]),
        Case("set-feature-lba-range", ["set-feature", DEV, "-f", "3", "-n", "1", "-d", "ranges.bin"],
             dict([sf(3, 1)]), files={"ranges.bin": lba_ranges()}),
        Case("set-feature-hostid", ["set-feature", DEV, "-f", "0x81", "-v", "1", "-d", "hostid.bin"],
             dict([sf(0x81)]), files={"hostid.bin": bytes(range(16))}),
        Case("set-feature-interval", ["set-feature", DEV, "-f", "0x15", "-v", "0x0064000a"],
             dict([sf(0x15, 0x0064000A)])),
        Case("set-feature-fdp-events", ["set-feature", DEV, "-f", "0x1e", "-v", "0x10000", "-d", "events.bin"],
             dict([sf(0x1E)]), files={"events.bin": bytes(range(256)) * 2}),
        Case("set-feature-hmb", ["set-feature", DEV, "-f", "0xd", "-v", "1", "-c", "16"], dict([sf(0xD)])),
        Case("set-feature-data-len", ["set-feature", DEV, "-f", "1", "-v", "1", "-l", "4", "-d", "four.bin"],
             dict([sf(1)]), files={"four.bin": b"\x01\x02\x03\x04"}),
        Case("set-feature-no-fid", ["set-feature", DEV, "-v", "1"], {}),
        Case("set-feature-bad-uuid", ["set-feature", DEV, "-f", "1", "-v", "1", "-U", "200"], {}),
        Case("set-feature-missing-file", ["set-feature", DEV, "-f", "0xc", "-v", "1", "-d", "nonexistent.bin"], {}),
        Case("set-feature-not-changeable", ["set-feature", DEV, "-f", "3", "-n", "1", "-d", "ranges.bin"],
             dict([sf(3, status=0x410E)]), files={"ranges.bin": lba_ranges()}),
        Case("set-feature-not-saveable", ["set-feature", DEV, "-f", "7", "-v", "0", "-s"],
             dict([sf(7, status=0x410D)])),
        Case("set-feature-invalid-field", ["set-feature", DEV, "-f", "0x42", "-v", "1"],
             dict([sf(0x42, status=0x4002)])),
        Case("set-feature-bad-value", ["set-feature", DEV, "-f", "6", "-v", "abc"], {}, exact_stderr=False),
    ]
    return cases


CASES = _cases()


# -- golden files --------------------------------------------------------------------------------


def render(rc: int, stderr: str, sent: list[str], stdout: bytes) -> bytes:
    head = [f"# rc={rc}"]
    head += [f"# stderr: {line}" for line in stderr.splitlines()]
    head += [f"# sent: {line}" for line in sent]
    return ("\n".join(head) + "\n# ---\n").encode() + stdout


def parse(data: bytes) -> tuple[int, list[str], list[str], bytes]:
    """(rc, stderr lines, commands sent, stdout) of a golden file."""
    head, _, stdout = data.partition(b"# ---\n")
    rc, err, sent = 0, [], []
    for line in head.decode().splitlines():
        if line.startswith("# rc="):
            rc = int(line[5:])
        elif line.startswith("# stderr: "):
            err.append(line[len("# stderr: "):])
        elif line.startswith("# sent: "):
            sent.append(line[len("# sent: "):])
    return rc, err, sent, stdout


def main() -> None:
    version = subprocess.run(["nvme", "version"], capture_output=True, text=True, check=False).stdout
    if "nvme version 2.3" not in version:
        sys.exit(f"need nvme-cli 2.3, found: {version!r}")
    work = pathlib.Path(tempfile.mkdtemp())
    shim = work / "shim.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", shim, HERE / "nvme_shim_admin.c", "-ldl"], check=True)
    OUT.mkdir(exist_ok=True)
    for case in CASES:
        d = work / case.name
        d.mkdir()
        for (opcode, fid, sel), (dw0, status, data) in case.answers.items():
            name = f"gf-{fid}-{sel}" if opcode == 0x0A else f"sf-{fid}"
            (d / name).write_bytes(struct.pack("<II", dw0, status) + data)
        for name, data in case.files.items():
            (d / name).write_bytes(data)
        env = dict(os.environ, SHIM_DIR=str(d), LD_PRELOAD=str(shim), SHIM_STATUS=str(case.status), LC_ALL="C",
                   TZ="UTC")
        env.pop("SHIM_NSID", None)
        if case.nsid is not None:
            env["SHIM_NSID"] = str(case.nsid)
        res = subprocess.run(["nvme", *case.args], env=env, cwd=d, input=case.stdin, capture_output=True, check=False)
        log = d / "log"
        sent = log.read_text().splitlines() if log.exists() else []
        (OUT / f"{case.name}.txt").write_bytes(render(res.returncode, res.stderr.decode(errors="replace"), sent,
                                                      res.stdout))
        print(case.name, res.returncode)


if __name__ == "__main__":
    main()
