"""SeaBIOS's own NVMe driver (src/hw/nvme.c) boots from our PCIe function.

QEMU's firmware probes every NVMe function before any operating system
runs: it enables the controller, identifies it and its namespaces, makes an
I/O queue pair and offers each namespace as a hard disk.  Here it is the
only disk of a machine without a kernel: SeaBIOS reads our namespace's
sector 0 and runs it.  That boot sector (``bootsector.S`` beside this file)
reads LBA 1-2 and writes itself to LBA 3 through INT 13h -- SeaBIOS's NVMe
read and write paths -- prints what it read to SeaBIOS's debug port, and
ends QEMU through isa-debug-exit.  The debug log shows SeaBIOS's probe
(the drive's size in sectors) and every step; the drive read back afterwards
holds the firmware's write.  About 3 s under TCG; skips like the other
vfio-user interoperability tests when that QEMU cannot be had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

from nvmestack.cli.drive import create_drive
from nvmestack.cli.vfio_user import DriveServer
from nvmestack.target.pci.vfio_user import qemu_arguments
from nvmestack.testing.vm.qemu import QemuFetchError, ensure_qemu

HERE = os.path.dirname(__file__)
# bootsector.S assembled (the bytes before the 55AAh signature; the rest is zero).
BOOT_CODE = bytes.fromhex(
    "fa31c08ed88ec08ed0bc007cfbbe787ce83700be587cb442cd137220be0080e82800be0082e82200be687cb80043cd13720abe9a7c"
    "e81200b010eb08bec57ce80800b011e6f4faf4ebfc52ba0204ac84c07403eeebf85ac31000020000800000010000000000000010"
    "000100007c000003000000000000006e766d65737461636b2d626f6f743a20736563746f7220302072756e6e696e670a006e766d"
    "65737461636b2d626f6f743a20736563746f722030207772697474656e20746f204c424120330a006e766d65737461636b2d626f"
    "6f743a20494e5420313368206661696c65640a"
)
BOOT_SECTOR = BOOT_CODE.ljust(510, b"\0") + b"\x55\xaa"
SUCCESS, FAILURE = 0x10, 0x11  # the boot sector's isa-debug-exit codes
NS_SIZE = 8 << 20


def test_boot_sector_matches_its_source(tmp_path):
    if not (shutil.which("as") and shutil.which("objcopy")):
        pytest.skip("no GNU as/objcopy to assemble bootsector.S")
    obj, out = tmp_path / "boot.o", tmp_path / "boot.bin"
    subprocess.run(["as", "--32", "-o", str(obj), os.path.join(HERE, "bootsector.S")], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(out)], check=True)
    assert out.read_bytes() == BOOT_SECTOR


def test_seabios_boots_from_our_namespace(tmp_path):
    try:
        qemu = ensure_qemu()
    except QemuFetchError as exc:
        pytest.skip(f"no QEMU with vfio-user-pci: {exc}")
    drive = create_drive(str(tmp_path / "boot"), size=NS_SIZE, serial="SEABIOS0001", capacity=1 << 30)
    sector1 = b"nvmestack-boot: LBA 1 read through SeaBIOS's NVMe driver\n"
    sector2 = b"nvmestack-boot: LBA 2 came in the same read\n"
    with open(os.path.join(drive, "ns1.data"), "r+b") as f:
        f.write(BOOT_SECTOR + sector1.ljust(512, b"\0") + sector2.ljust(512, b"\0"))
    sock, log = str(tmp_path / "boot.sock"), tmp_path / "seabios.log"
    server = DriveServer(drive, sock)
    thread = threading.Thread(target=server.serve_forever, name="vfio-user", daemon=True)
    thread.start()
    try:
        cmd = [str(qemu), "-M", "pc", *qemu_arguments(sock, mem_mib=128), "-nodefaults", "-display", "none",
               "-accel", "tcg", "-no-reboot",
               "-chardev", f"file,id=dbg,path={log}", "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the machine did not end; SeaBIOS said:\n{log.read_text(errors='replace')[-3000:]}")
        text = log.read_text(errors="replace") if log.exists() else ""
        if res.returncode not in ((SUCCESS << 1) | 1, (FAILURE << 1) | 1) and "SeaBIOS" not in text:
            pytest.skip(f"QEMU with vfio-user-pci cannot run here: {res.stderr.strip()[-500:]}")
    finally:
        server.stop()
        thread.join(30)
        server.close()
    # SeaBIOS found the NVMe function, our namespace as a drive of NS_SIZE/512 sectors, and booted it.
    assert "id=4e56:0001" in text, text
    assert f"s={NS_SIZE // 512}\n" in text, text
    assert "Booting from Hard Disk..." in text
    steps = text[text.index("Booting from 0000:7c00"):]
    assert "nvmestack-boot: sector 0 running\n" + sector1.decode() + sector2.decode() + \
        "nvmestack-boot: sector 0 written to LBA 3\n" in steps, steps
    assert res.returncode == (SUCCESS << 1) | 1, (res.returncode, steps)
    # The firmware's write is on the drive.
    with open(os.path.join(drive, "ns1.data"), "rb") as f:
        f.seek(3 * 512)
        assert f.read(512) == BOOT_SECTOR
