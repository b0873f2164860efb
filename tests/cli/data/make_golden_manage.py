"""Regenerate ``nvme-cli-2.3/manage/`` from the real nvme-cli (not run by the tests).

What nvme-cli 2.3 prints for the passthrough commands: the hex dump of the
data it read (``d()``), ``--show-command``/``--dry-run`` and the success line.
``nvme_shim.c`` (LD_PRELOADed) answers Identify with ``id-<cns>.bin``::

    .venv/bin/python tests/cli/data/make_golden_manage.py
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "nvme-cli-2.3" / "manage"

#: The data Identify CNS 1 returns: every byte value, so that the dump's
#: text column shows which bytes it prints and which become dots.
PATTERN = bytes(range(256)) * 16

CASES = {
    # name: (args, stdin)
    "hexdump-4096": ["admin-passthru", "/dev/nvme0", "-o", "6", "-4", "1", "-l", "4096", "-r"],
    "hexdump-20": ["admin-passthru", "/dev/nvme0", "-o", "6", "-4", "1", "-l", "20", "-r"],
    "hexdump-3": ["admin-passthru", "/dev/nvme0", "-o", "6", "-4", "1", "-l", "3", "-r"],
    "hexdump-33": ["admin-passthru", "/dev/nvme0", "-o", "6", "-4", "1", "-l", "33", "-r"],
    "show-command": ["admin-passthru", "/dev/nvme0", "-o", "0xc0", "-n", "1", "-2", "2", "-3", "3", "-4", "4",
                     "-5", "5", "-6", "6", "-7", "7", "-8", "8", "-9", "0x90000009", "-R", "0x1234",
                     "-t", "1000", "-s"],
    "io-show-command": ["io-passthru", "/dev/nvme0", "-o", "0x80", "-n", "2", "-4", "0xffffffff", "-s"],
}


def main() -> None:
    version = subprocess.run(["nvme", "version"], capture_output=True, text=True, check=False).stdout
    if "nvme version 2.3" not in version:
        sys.exit(f"need nvme-cli 2.3, found: {version!r}")
    work = pathlib.Path(tempfile.mkdtemp())
    shim = work / "shim.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", shim, HERE / "nvme_shim.c", "-ldl"], check=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (work / "id-1.bin").write_bytes(PATTERN)
    env = dict(os.environ, SHIM_DIR=str(work), LD_PRELOAD=str(shim))
    for name, args in CASES.items():
        res = subprocess.run(["nvme", *args], env=env, capture_output=True, check=True)
        (OUT / f"{name}.out").write_bytes(res.stdout)
        (OUT / f"{name}.err").write_bytes(res.stderr)


if __name__ == "__main__":
    main()
