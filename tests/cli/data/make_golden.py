"""Regenerate ``nvme-cli-2.3/`` from the real nvme-cli (not run by the tests).

Needs Debian 12's nvme-cli 2.3 and a C compiler.  ``nvme_shim.c`` is
LD_PRELOADed so that nvme-cli opens /dev/null for /dev/nvme0 and gets the
fixture structures back from its Identify and Get Log Page ioctls::

    .venv/bin/python tests/cli/data/make_golden.py
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.cli import fixtures as f  # noqa: E402

OUT = HERE / "nvme-cli-2.3"


def main() -> None:
    version = subprocess.run(["nvme", "version"], capture_output=True, text=True).stdout
    if "nvme version 2.3" not in version:
        sys.exit(f"need nvme-cli 2.3, found: {version!r}")
    work = pathlib.Path(tempfile.mkdtemp())
    shim = work / "shim.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", shim, HERE / "nvme_shim.c", "-ldl"], check=True)
    OUT.mkdir(exist_ok=True)

    def run(out: str, files: dict[str, bytes], *args: str) -> None:
        d = work / out
        d.mkdir()
        for name, data in files.items():
            (d / name).write_bytes(data)
        env = dict(os.environ, SHIM_DIR=str(d), LD_PRELOAD=str(shim))
        res = subprocess.run(["nvme", *args], env=env, capture_output=True, check=True)
        (OUT / out).write_bytes(res.stdout)

    fixed = {
        "id-1.bin": bytes(f.id_ctrl()),
        "id-0.bin": bytes(f.id_ns()),
        "log-2.bin": bytes(f.smart_log()),
        "log-1.bin": b"".join(bytes(e) for e in f.error_log()),
        "log-3.bin": bytes(f.fw_log()),
    }
    dev = "/dev/nvme0"
    run("id-ctrl.txt", fixed, "id-ctrl", dev)
    run("id-ctrl.json", fixed, "id-ctrl", dev, "-o", "json")
    run("id-ctrl-H.txt", fixed, "id-ctrl", dev, "-H")
    run("id-ns.txt", fixed, "id-ns", dev, "-n", "1")
    run("id-ns.json", fixed, "id-ns", dev, "-n", "1", "-o", "json")
    run("id-ns-H.txt", fixed, "id-ns", dev, "-n", "1", "-H")
    run("smart-log.txt", fixed, "smart-log", dev)
    run("smart-log.json", fixed, "smart-log", dev, "-o", "json")
    run("smart-log-H.txt", fixed, "smart-log", dev, "-H")
    run("error-log.txt", fixed, "error-log", dev, "-e", "4")
    run("error-log.json", fixed, "error-log", dev, "-e", "4", "-o", "json")
    run("fw-log.txt", fixed, "fw-log", dev)
    run("fw-log.json", fixed, "fw-log", dev, "-o", "json")
    for seed in f.DENSE_SEEDS:
        files = {
            "id-1.bin": bytes(f.dense_id_ctrl(seed)),
            "id-0.bin": bytes(f.dense_id_ns(seed)),
            "log-2.bin": bytes(f.dense_smart_log(seed)),
        }
        run(f"dense{seed}-id-ctrl.txt", files, "id-ctrl", dev)
        run(f"dense{seed}-id-ctrl.json", files, "id-ctrl", dev, "-o", "json")
        run(f"dense{seed}-id-ns.txt", files, "id-ns", dev, "-n", "1")
        run(f"dense{seed}-id-ns-H.txt", files, "id-ns", dev, "-n", "1", "-H")
        run(f"dense{seed}-id-ns.json", files, "id-ns", dev, "-n", "1", "-o", "json")
        run(f"dense{seed}-smart-log-H.txt", files, "smart-log", dev, "-H")
        run(f"dense{seed}-smart-log.json", files, "smart-log", dev, "-o", "json")


if __name__ == "__main__":
    main()
