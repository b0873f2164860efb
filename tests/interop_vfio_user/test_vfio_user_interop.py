"""The guest kernel's own NVMe PCI driver (drivers/nvme/host/pci.c) against
our PCIe function, through QEMU's vfio-user-pci and our vfio-user server.

One guest serves the module: QEMU 10.1+ with vfio-user-pci fetched from
Debian's archive (``nvmestack.testing.vm.qemu``, cached beside the guest
image), guest RAM in a shared memfd backend, and a drive directory served
from this test process by the same code as ``nvmestack vfio-user``.  The
tests run in order: probe and ``nvme list``; fio write+verify; a file
system; a timeout ended by the driver's abort/reset; then the guest powers
off, the server stops (the drive saved) and our own command line reads the
same drive: Identify equal, data checksums equal, the file system clean.

They skip, saying why, only when that QEMU cannot be had or run, or the
guest image cannot be built (no kernel).  This lives in its own package so
that its guest and the NVMe/TCP interoperability guest never run at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from nvmestack.cli.drive import create_drive
from nvmestack.cli.main import main
from nvmestack.cli.vfio_user import DriveServer
from nvmestack.spec.opcodes import NvmOpcode
from nvmestack.spec.vfio_user import IrqIndex
from nvmestack.target.pci.config import PCI_DEVICE_ID, PCI_VENDOR_ID
from nvmestack.testing.vm import VM, KernelUnavailable, QemuUnavailable, ToolsMissing, ensure_image
from nvmestack.testing.vm.qemu import QemuFetchError, ensure_qemu

MEM_MIB = 1024
NS_SIZE = 128 << 20


class Served:
    """The drive served on a socket from a thread of this process."""

    def __init__(self, drive: str, sock: str):
        self.drive, self.sock = drive, sock
        self.server: DriveServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.server = DriveServer(self.drive, self.sock)
        self.thread = threading.Thread(target=self.server.serve_forever, name="vfio-user", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is None:
            return
        self.server.stop()
        self.thread.join(30)
        self.server.close()
        self.server = None


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    try:
        qemu = ensure_qemu()
    except QemuFetchError as exc:
        pytest.skip(f"no QEMU with vfio-user-pci: {exc}")
    try:
        image = ensure_image(install=True)
    except (ToolsMissing, KernelUnavailable) as exc:
        pytest.skip(f"no guest image: {exc}")
    tmp = tmp_path_factory.mktemp("vfio-user")
    drive = create_drive(str(tmp / "drive"), size=NS_SIZE, serial="VFIOUSER0001", model="nvmestack vfio-user test",
                         capacity=4 * NS_SIZE)
    served = Served(drive, str(tmp / "drive.sock"))
    served.start()
    dev = {"driver": "vfio-user-pci", "id": "nvmestack0", "socket": {"type": "unix", "path": served.sock}}
    extra = ["-object", f"memory-backend-memfd,id=mem,size={MEM_MIB}M,share=on", "-device", json.dumps(dev)]
    guest = VM(image, mem=MEM_MIB, cpus=2, qemu=qemu, machine="pc,memory-backend=mem", extra=extra,
               boot_timeout=float(os.environ.get("NVMESTACK_VM_BOOT_TIMEOUT", "300")))
    try:
        guest.boot()
    except QemuUnavailable as exc:
        served.stop()
        pytest.skip(f"QEMU with vfio-user-pci cannot run here: {exc}")
    state = {"vm": guest, "served": served, "drive": drive}
    try:
        yield state
    finally:
        guest.shutdown()
        served.stop()


@pytest.fixture
def vm(setup):
    return setup["vm"]


def test_probe_and_nvme_list(vm, setup):
    # A short I/O timeout (read when the namespaces' queues are made) keeps
    # the timeout tests short.
    vm.check("modprobe nvme_core io_timeout=5 && modprobe nvme && for i in $(seq 100); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done; "
             "[ -b /dev/nvme0n1 ]", 120)
    ids = vm.check("for d in /sys/bus/pci/devices/*; do [ \"$(cat $d/class)\" = 0x010802 ] && "
                   "cat $d/vendor $d/device; done").split()
    assert ids == [f"0x{PCI_VENDOR_ID:04x}", f"0x{PCI_DEVICE_ID:04x}"]
    listing = json.loads(vm.check("nvme list -o json"))
    (dev,) = listing["Devices"]
    assert dev["DevicePath"] == "/dev/nvme0n1"
    assert dev["SerialNumber"].strip() == "VFIOUSER0001" and dev["ModelNumber"].strip() == "nvmestack vfio-user test"
    assert dev["PhysicalSize"] == NS_SIZE
    # The driver runs on MSI-X: one vector for the admin queue and more for I/O.
    irqs = vm.check("grep nvme0q /proc/interrupts")
    assert "PCI-MSI" in irqs and "nvme0q1" in irqs
    setup["probed"] = True


@pytest.mark.parametrize("job", [
    "--rw=randwrite --bs=4k --size=16M",
    "--rw=write --bs=128k --size=32M --offset=64M",
])
def test_fio_write_verify(vm, job):
    out = vm.check(f"fio --name=v --filename=/dev/nvme0n1 --ioengine=libaio --direct=1 --iodepth=32 {job} "
                   "--verify=crc32c --do_verify=1 --verify_fatal=1 --output-format=json", 300)
    result = json.loads(out[out.index("{"):])
    (j,) = result["jobs"]
    assert j["error"] == 0
    assert j["write"]["io_bytes"] > 0 and j["read"]["io_bytes"] == j["write"]["io_bytes"]  # all verified


def test_filesystem(vm, setup):
    vm.check("mkfs.ext4 -q -F /dev/nvme0n1 64M && mount /dev/nvme0n1 /mnt && "
             "head -c 3000000 /dev/urandom > /mnt/a && dd if=/dev/urandom of=/mnt/b bs=64k count=40 2>/dev/null && "
             "mkdir /mnt/d && echo hello > /mnt/d/c && sync", 300)
    sums = vm.check("cd /mnt && sha256sum a b d/c")
    vm.check("umount /mnt && e2fsck -fn /dev/nvme0n1", 120)
    setup["sums"] = {line.split()[1]: line.split()[0] for line in sums.splitlines()}


def test_timeout_ends_in_abort_or_reset_then_io_works(vm, setup):
    """A Read whose completion fault injection drops: the driver's timeout
    handler aborts it (or resets the controller), the read is retried and
    returns the data; nothing is lost."""
    expected = vm.check("dd if=/dev/nvme0n1 bs=4k count=1 skip=100 iflag=direct 2>/dev/null | sha256sum").split()[0]
    faults = setup["served"].server.subsystem
    from nvmestack.target.faults import FaultInjector

    rule = FaultInjector.install(faults).drop(opcode=NvmOpcode.READ, admin=False, count=1)
    try:
        t0 = time.monotonic()
        got = vm.check("dd if=/dev/nvme0n1 bs=4k count=1 skip=100 iflag=direct 2>/dev/null | sha256sum", 120).split()[0]
        took = time.monotonic() - t0
    finally:
        FaultInjector.install(faults).remove(rule)
    assert rule.hits == 1
    assert got == expected
    assert took >= 2.5  # it waited for the timeout
    log = vm.check("dmesg | grep -i nvme | tail -20")
    assert "timeout" in log.lower() and ("abort" in log.lower() or "reset" in log.lower()), log
    vm.check("dd if=/dev/urandom of=/tmp/w bs=4k count=16 2>/dev/null && "
             "dd if=/tmp/w of=/dev/nvme0n1 bs=4k seek=25000 oflag=direct 2>/dev/null && "
             "dd if=/dev/nvme0n1 bs=4k skip=25000 count=16 iflag=direct 2>/dev/null | cmp - /tmp/w", 120)


def _io_works(vm, seek):
    vm.check("dd if=/dev/urandom of=/tmp/w bs=4k count=16 2>/dev/null && "
             f"dd if=/tmp/w of=/dev/nvme0n1 bs=4k seek={seek} oflag=direct 2>/dev/null && "
             f"dd if=/dev/nvme0n1 bs=4k skip={seek} count=16 iflag=direct 2>/dev/null | cmp - /tmp/w", 120)


def test_controller_resets(vm):
    """``nvme reset`` and a reset through sysfs: the driver disables and
    re-enables the controller, the queues come back, I/O goes on."""
    vm.check("nvme reset /dev/nvme0", 120)
    _io_works(vm, 26000)
    vm.check("echo 1 > /sys/class/nvme/nvme0/reset_controller; sleep 1; "
             "for i in $(seq 100); do [ \"$(cat /sys/class/nvme/nvme0/state)\" = live ] && break; sleep 0.1; done", 120)
    _io_works(vm, 26100)
    assert "live" in vm.check("cat /sys/class/nvme/nvme0/state")


def test_fatal_status_is_reset_by_the_driver(vm, setup):
    """A Read makes the controller report CSTS.CFS (fault injection): the
    driver's timeout handler sees it, resets the controller, and the read
    is retried with success."""
    from nvmestack.target.faults import FaultInjector

    faults = FaultInjector.install(setup["served"].server.subsystem)
    rule = faults.fatal(opcode=NvmOpcode.READ, admin=False, count=1)
    try:
        vm.check("dd if=/dev/nvme0n1 of=/dev/null bs=4k count=1 skip=300 iflag=direct", 120)
    finally:
        faults.remove(rule)
    assert rule.hits == 1
    log = vm.check("dmesg | grep -i nvme | tail -20").lower()
    assert "reset" in log, log
    _io_works(vm, 26200)


def test_namespace_management_and_firmware_from_the_guest(vm, setup):
    """Namespaces created, attached, formatted, detached and deleted and a
    firmware image downloaded and committed from the guest; our command line
    sees them after the server stops (test_after_the_server_restarts)."""
    cntlid = json.loads(vm.check("nvme id-ctrl /dev/nvme0 -o json"))["cntlid"]
    for _ in (2, 3):
        out = vm.check("nvme create-ns /dev/nvme0 --nsze=16384 --ncap=16384 --flbas=0", 60)
        assert "Success" in out, out
    for nsid in (2, 3):
        vm.check(f"nvme attach-ns /dev/nvme0 -n {nsid} -c {cntlid}", 60)
    vm.check("nvme ns-rescan /dev/nvme0; for i in $(seq 100); do [ -b /dev/nvme0n3 ] && break; sleep 0.1; done; "
             "[ -b /dev/nvme0n2 ] && [ -b /dev/nvme0n3 ]", 60)
    # Format NVM from the guest: namespace 2 to 4096-byte blocks (LBA format 3).
    out = vm.check("nvme format /dev/nvme0n2 --lbaf=3 --force", 120)
    assert "Success" in out, out
    vm.check("for i in $(seq 100); do [ \"$(cat /sys/block/nvme0n2/queue/logical_block_size)\" = 4096 ] && exit 0; "
             "sleep 0.1; done; exit 1", 60)
    vm.check("echo namespace-two | dd of=/dev/nvme0n2 bs=4096 conv=sync oflag=direct 2>/dev/null", 60)
    vm.check(f"nvme detach-ns /dev/nvme0 -n 3 -c {cntlid} && nvme delete-ns /dev/nvme0 -n 3", 60)
    vm.check("nvme ns-rescan /dev/nvme0; for i in $(seq 100); do [ -b /dev/nvme0n3 ] || break; sleep 0.1; done; "
             "! [ -b /dev/nvme0n3 ]", 60)
    vm.check("printf '2.0vfio ' > /tmp/fw && head -c 4088 /dev/zero >> /tmp/fw && "
             "nvme fw-download /dev/nvme0 --fw=/tmp/fw && nvme fw-commit /dev/nvme0 --slot=2 --action=0", 60)
    setup["guest_admin"] = True


def _guest_disk(vm, nsid: int, timeout: float = 120) -> str:
    """The guest's block device of namespace ``nsid`` once the driver has it
    (its name carries an instance number, not the NSID)."""
    return vm.check(f"for i in $(seq 600); do for d in /sys/block/nvme0n*; do [ \"$(cat $d/nsid 2>/dev/null)\" = {nsid} ] "
                    "&& basename $d && exit 0; done; sleep 0.1; done; exit 1", timeout).strip()


def test_namespace_added_by_our_command_line_appears_in_the_guest(vm, setup):
    """``nvmestack drive namespace add`` on the drive the guest is using: the
    server adds it, the controller's Namespace Attribute Changed notice makes
    the driver rescan (no ns-rescan here), the disk appears with its size
    and takes I/O; the drive's configuration names it (checked after the
    restart)."""
    res = subprocess.run([sys.executable, "-m", "nvmestack", "drive", "namespace", "add", setup["drive"],
                          "--size", "32M"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "its host was notified" in res.stdout
    nsid = int(re.search(r"added namespace (\d+)", res.stdout).group(1))
    disk = _guest_disk(vm, nsid)
    assert int(vm.check(f"cat /sys/block/{disk}/size")) * 512 == 32 << 20
    listing = json.loads(vm.check("nvme list -o json"))
    assert f"/dev/{disk}" in [d["DevicePath"] for d in listing["Devices"]]
    vm.check(f"echo added-by-the-cli | dd of=/dev/{disk} bs=512 conv=sync oflag=direct 2>/dev/null", 60)
    setup["cli_ns"] = nsid


def _rebind(vm, *, msi: bool) -> None:
    """Unbind the driver, allow or forbid MSI/MSI-X for the function's next
    driver (``msi_bus``: the kernel's per-device switch), bind it again and
    wait for the namespace."""
    vm.check("d=$(basename $(readlink -f /sys/class/nvme/nvme0/device)) && "
             "echo $d > /sys/bus/pci/drivers/nvme/unbind && "
             f"echo {int(msi)} > /sys/bus/pci/devices/$d/msi_bus && "
             "echo $d > /sys/bus/pci/drivers/nvme/bind && "
             "for i in $(seq 300); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done; [ -b /dev/nvme0n1 ]", 180)


def test_legacy_intx(vm, setup):
    """The driver bound again with MSI and MSI-X forbidden for the function
    runs on the INTx line (QEMU's eventfd, masked after each signal until
    its unmask): the queues' interrupt is the IO-APIC pin, and fio
    write+verify passes; then MSI-X again."""
    _rebind(vm, msi=False)
    try:
        irqs = vm.check("grep nvme0q /proc/interrupts")
        assert "PCI-MSI" not in irqs and "IO-APIC" in irqs, irqs
        before = int(vm.check("awk '/nvme0q/ {for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i} END {print n}' "
                              "/proc/interrupts"))
        served = setup["served"].server.device
        signals = served.stats["interrupts"]
        out = vm.check("fio --name=v --filename=/dev/nvme0n1 --ioengine=libaio --direct=1 --iodepth=16 "
                       "--rw=randwrite --bs=4k --offset=112M --size=4M --verify=crc32c --do_verify=1 --verify_fatal=1 "
                       "--output-format=json", 300)
        (j,) = json.loads(out[out.index("{"):])["jobs"]
        assert j["error"] == 0 and j["read"]["io_bytes"] == j["write"]["io_bytes"] == 4 << 20
        after = int(vm.check("awk '/nvme0q/ {for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i} END {print n}' "
                             "/proc/interrupts"))
        assert after > before and served.stats["interrupts"] > signals
        assert served.eventfds(IrqIndex.INTX) and not served.eventfds(IrqIndex.MSIX)
    finally:
        _rebind(vm, msi=True)
    assert "PCI-MSI" in vm.check("grep nvme0q /proc/interrupts")


def _ours(capsysbinary, *args):
    capsysbinary.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsysbinary.readouterr()
    assert rc == 0, err
    return out


def test_after_the_server_restarts(setup, capsysbinary, monkeypatch, tmp_path):
    """Guest off, server stopped (the drive saved): our command line reads
    the same drive.  Identify as the guest read it, the file system's files
    and the whole namespace with the checksums the guest computed, fsck clean."""
    if "sums" not in setup or "probed" not in setup:
        pytest.skip("the guest part did not run")
    vm = setup["vm"]
    # Identify as the guest reads it last (NUSE follows what was written).
    setup["id_ctrl"] = json.loads(vm.check("nvme id-ctrl /dev/nvme0 -o json"))
    setup["id_ns"] = json.loads(vm.check("nvme id-ns /dev/nvme0n1 -o json"))
    # The whole namespace as the guest sees it last.
    setup["device_sum"] = vm.check(f"head -c {NS_SIZE} /dev/nvme0n1 | sha256sum", 300).split()[0]
    vm.shutdown()
    setup["served"].stop()
    monkeypatch.setenv("NVMESTACK_STATE_DIR", str(tmp_path / "state"))
    drive = setup["drive"]
    mine = json.loads(_ours(capsysbinary, "id-ctrl", drive, "-o", "json"))
    theirs = dict(setup["id_ctrl"])
    assert mine == theirs
    assert json.loads(_ours(capsysbinary, "id-ns", drive, "-n", "1", "-o", "json")) == setup["id_ns"]
    # What the guest wrote and saw acknowledged is on disk: the namespace's file.
    image = os.path.join(drive, "ns1.data")
    with open(image, "rb") as f:
        assert hashlib.sha256(f.read(NS_SIZE)).hexdigest() == setup["device_sum"]
    # And read back through the device (our host driver), a 64 KiB sample.
    sample = tmp_path / "sample"
    _ours(capsysbinary, "read", drive, "-n", "1", "-s", "2048", "-c", "127", "-z", str(65536), "-d", str(sample))
    with open(image, "rb") as f:
        f.seek(2048 * 512)
        assert sample.read_bytes() == f.read(65536)
    if setup.get("guest_admin"):
        assert [line.split(":")[-1] for line in _ours(capsysbinary, "list-ns", drive).decode().splitlines()] == \
            ["0x1", "0x2"] + ([f"0x{setup['cli_ns']:x}"] if "cli_ns" in setup else [])
        ns2 = json.loads(_ours(capsysbinary, "id-ns", drive, "-n", "2", "-o", "json"))
        assert ns2["nsze"] == 16384 * 512 // 4096 and ns2["flbas"] & 0xF == 3  # the guest's format
        two = tmp_path / "two"
        _ours(capsysbinary, "read", drive, "-n", "2", "-s", "0", "-c", "0", "-z", "4096", "-d", str(two))
        assert two.read_bytes().startswith(b"namespace-two\n")
        fw = json.loads(_ours(capsysbinary, "fw-log", drive, "-o", "json"))
        assert "2.0vfio" in json.dumps(fw)
    if "cli_ns" in setup:
        nsid = setup["cli_ns"]
        assert json.loads(_ours(capsysbinary, "id-ns", drive, "-n", nsid, "-o", "json"))["nsze"] == 65536
        added = tmp_path / "added"
        _ours(capsysbinary, "read", drive, "-n", nsid, "-s", "0", "-c", "0", "-z", "512", "-d", str(added))
        assert added.read_bytes().startswith(b"added-by-the-cli\n")
    res = subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    for name, digest in setup["sums"].items():
        res = subprocess.run(["debugfs", "-R", f"cat /{name}", image], capture_output=True)
        assert hashlib.sha256(res.stdout).hexdigest() == digest, name
