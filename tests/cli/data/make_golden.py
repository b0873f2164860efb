"""Regenerate ``nvme-cli-2.3/`` from the real nvme-cli (not run by the tests).

Needs Debian 12's nvme-cli 2.3 and a C compiler.  ``nvme_shim.c`` is
LD_PRELOADed so that nvme-cli opens /dev/null for /dev/nvme0 and gets the
fixture structures back from its Identify, Get Log Page and Property Get
ioctls, and (for show-regs over PCIe) finds the register file where it maps
the BAR from sysfs::

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

    def run(out: str, files: dict[str, bytes], *args: str, env: dict[str, str] | None = None,
            bar: bytes | None = None, rc_ok: tuple[int, ...] = (0,)) -> None:
        d = work / out
        d.mkdir()
        for name, data in files.items():
            (d / name).write_bytes(data)
        extra = dict(env or {})
        if bar is not None:  # show-regs / effects-log over PCIe: the BAR through sysfs
            (d / "sysfs" / "device").mkdir(parents=True)
            (d / "sysfs" / "device" / "resource0").write_bytes(bar)
            extra["SHIM_PCI"] = "1"
        environ = dict(os.environ, SHIM_DIR=str(d), LD_PRELOAD=str(shim), **extra)
        res = subprocess.run(["nvme", *args], env=environ, capture_output=True)
        if res.returncode not in rc_ok:
            sys.exit(f"{out}: nvme {' '.join(args)} exited {res.returncode}: {res.stderr!r}")
        (OUT / out).write_bytes(res.stdout)

    fixed = {
        "id-1.bin": bytes(f.id_ctrl()),
        "id-0.bin": bytes(f.id_ns()),
        "id-3.bin": f.ns_descs(),
        "log-2.bin": bytes(f.smart_log()),
        "log-1.bin": b"".join(bytes(e) for e in f.error_log()),
        "log-3.bin": bytes(f.fw_log()),
        "log-4.bin": bytes(f.changed_ns_list()),
        "log-5.bin": bytes(f.effects_log()),
        "log-6.bin": bytes(f.self_test_log()),
        "log-129.bin": bytes(f.sanitize_log()),
        "log-192.bin": f.log_bytes(),
    }
    dev = "/dev/nvme0"
    run("id-ctrl.txt", fixed, "id-ctrl", dev)
    run("id-ctrl.json", fixed, "id-ctrl", dev, "-o", "json")
    run("id-ctrl-H.txt", fixed, "id-ctrl", dev, "-H")
    run("id-ctrl-v.txt", fixed, "id-ctrl", dev, "-v")
    run("id-ns.txt", fixed, "id-ns", dev, "-n", "1")
    run("id-ns.json", fixed, "id-ns", dev, "-n", "1", "-o", "json")
    run("id-ns-H.txt", fixed, "id-ns", dev, "-n", "1", "-H")
    run("id-ns-v.txt", fixed, "id-ns", dev, "-n", "1", "-v")
    run("ns-descs.txt", fixed, "ns-descs", dev, "-n", "1")
    run("ns-descs.json", fixed, "ns-descs", dev, "-n", "1", "-o", "json")
    run("smart-log.txt", fixed, "smart-log", dev)
    run("smart-log.json", fixed, "smart-log", dev, "-o", "json")
    run("smart-log-H.txt", fixed, "smart-log", dev, "-H")
    run("smart-log-H.json", fixed, "smart-log", dev, "-H", "-o", "json")
    run("error-log.txt", fixed, "error-log", dev, "-e", "4")
    run("error-log.json", fixed, "error-log", dev, "-e", "4", "-o", "json")
    run("fw-log.txt", fixed, "fw-log", dev)
    run("fw-log.json", fixed, "fw-log", dev, "-o", "json")
    run("get-log.txt", fixed, "get-log", dev, "-i", "0xc0", "-l", "512")
    run("get-log-nsid0.txt", fixed, "get-log", dev, "-i", "192", "-l", "32", "-n", "0")
    run("get-log-lpo.txt", fixed, "get-log", dev, "-i", "192", "-l", "37", "--lpo=16", "-n", "1")
    run("changed-ns-list-log.txt", fixed, "changed-ns-list-log", dev)
    run("changed-ns-list-log.json", fixed, "changed-ns-list-log", dev, "-o", "json")
    empty = {"log-4.bin": bytes(f.changed_ns_list(()))}
    run("changed-ns-list-log-empty.txt", empty, "changed-ns-list-log", dev)
    run("changed-ns-list-log-empty.json", empty, "changed-ns-list-log", dev, "-o", "json")
    over = {"log-4.bin": bytes(f.changed_ns_list(range(1, 1100)))}
    run("changed-ns-list-log-overflow.txt", over, "changed-ns-list-log", dev)
    run("changed-ns-list-log-overflow.json", over, "changed-ns-list-log", dev, "-o", "json")
    run("self-test-log.txt", fixed, "self-test-log", dev)
    run("self-test-log-v.txt", fixed, "self-test-log", dev, "-v")
    run("self-test-log.json", fixed, "self-test-log", dev, "-o", "json")
    run("self-test-log-e2.txt", fixed, "self-test-log", dev, "-e", "2")
    run("self-test-log-e2.json", fixed, "self-test-log", dev, "-e", "2", "-o", "json")
    run("self-test-log-e0.json", fixed, "self-test-log", dev, "-e", "0", "-o", "json")
    run("sanitize-log.txt", fixed, "sanitize-log", dev)
    run("sanitize-log-H.txt", fixed, "sanitize-log", dev, "-H")
    run("sanitize-log.json", fixed, "sanitize-log", dev, "-o", "json")
    for status in (0, 4, 5):
        files = {"log-129.bin": bytes(f.sanitize_log(status))}
        run(f"sanitize-log-status{status}-H.txt", files, "sanitize-log", dev, "-H")
        run(f"sanitize-log-status{status}.json", files, "sanitize-log", dev, "-o", "json")
    for byte in (0x00, 0xFF):
        files = {"id-1.bin": bytes(f.id_ctrl_filled(byte))}
        run(f"id-ctrl-{byte:02x}-H.txt", files, "id-ctrl", dev, "-H")
    # effects-log reads CAP.CSS from the BAR (without --csi): only the PCIe path
    # prints anything in nvme-cli 2.3.
    bar = bytes(f.registers())
    run("effects-log.txt", fixed, "effects-log", dev, bar=bar)
    run("effects-log-H.txt", fixed, "effects-log", dev, "-H", bar=bar)
    run("effects-log.json", fixed, "effects-log", dev, "-o", "json", bar=bar)
    run("effects-log-csi2.txt", fixed, "effects-log", dev, "--csi=2")
    run("effects-log-csi1.txt", {"log-5-csi1.bin": bytes(f.effects_log())}, "effects-log", dev, "--csi=1")
    # show-regs over PCIe maps BAR0; nvme-cli exits 1 after json (a 2.3 quirk).
    run("show-regs.txt", {}, "show-regs", dev, bar=bar)
    run("show-regs-H.txt", {}, "show-regs", dev, "-H", bar=bar)
    run("show-regs.json", {}, "show-regs", dev, "-o", "json", bar=bar, rc_ok=(0, 1))
    # ... and over Fabrics uses Property Get from CAP to CMBSZ.  nvme-cli 2.3
    # treats only Invalid Field *without* DNR as "no such property" (a target
    # sets DNR, which 2.3 reports as an error): SHIM_NODNR shows what it means.
    props = {"regs.bin": bar, "props": "".join(f"{o:x}\n" for o in f.FABRICS_PROPERTIES).encode()}
    run("show-regs-fabrics.txt", props, "show-regs", dev, env={"SHIM_NODNR": "1"})
    run("show-regs-fabrics-H.txt", props, "show-regs", dev, "-H", env={"SHIM_NODNR": "1"})
    run("show-regs-fabrics.json", props, "show-regs", dev, "-o", "json", env={"SHIM_NODNR": "1"})
    for seed in f.DENSE_SEEDS:
        files = {
            "id-1.bin": bytes(f.dense_id_ctrl(seed)),
            "id-0.bin": bytes(f.dense_id_ns(seed)),
            "log-2.bin": bytes(f.dense_smart_log(seed)),
            "log-5.bin": bytes(f.dense_effects_log(seed)),
            "log-6.bin": bytes(f.dense_self_test_log(seed)),
            "log-129.bin": bytes(f.dense_sanitize_log(seed)),
        }
        run(f"dense{seed}-id-ctrl.txt", files, "id-ctrl", dev)
        run(f"dense{seed}-id-ctrl-H.txt", files, "id-ctrl", dev, "-H")
        run(f"dense{seed}-id-ctrl.json", files, "id-ctrl", dev, "-o", "json")
        run(f"dense{seed}-id-ns.txt", files, "id-ns", dev, "-n", "1")
        run(f"dense{seed}-id-ns-H.txt", files, "id-ns", dev, "-n", "1", "-H")
        run(f"dense{seed}-id-ns.json", files, "id-ns", dev, "-n", "1", "-o", "json")
        run(f"dense{seed}-smart-log-H.txt", files, "smart-log", dev, "-H")
        run(f"dense{seed}-smart-log.json", files, "smart-log", dev, "-o", "json")
        run(f"dense{seed}-effects-log-H.txt", files, "effects-log", dev, "-H", "--csi=0")
        run(f"dense{seed}-effects-log.json", files, "effects-log", dev, "-o", "json", "--csi=0")
        run(f"dense{seed}-self-test-log-v.txt", files, "self-test-log", dev, "-v")
        run(f"dense{seed}-self-test-log.json", files, "self-test-log", dev, "-o", "json")
        run(f"dense{seed}-sanitize-log-H.txt", files, "sanitize-log", dev, "-H")
        run(f"dense{seed}-sanitize-log.json", files, "sanitize-log", dev, "-o", "json")
        regs = bytes(f.dense_registers(seed))
        run(f"dense{seed}-show-regs-H.txt", {}, "show-regs", dev, "-H", bar=regs)
        run(f"dense{seed}-show-regs.json", {}, "show-regs", dev, "-o", "json", bar=regs, rc_ok=(0, 1))


if __name__ == "__main__":
    main()
