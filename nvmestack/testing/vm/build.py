"""Build the test guest: Debian's kernel and a busybox initramfs holding the
real Linux NVMe/TCP drivers and tools.

What goes in:

- the kernel of Debian's ``linux-image-amd64`` (``linux-image-6.1.0-N-amd64``
  on Debian 12), fetched with ``apt-get download`` and unpacked with
  ``dpkg-deb -x`` -- never installed on the host;
- its uncompressed ELF ``vmlinux`` (the bzImage's xz payload), which QEMU
  boots through the PVH entry, skipping the in-guest decompression that is
  slow under TCG;
- an uncompressed newc initramfs: static busybox, kmod, ``nvme`` (nvme-cli),
  ``fio``, ``mke2fs``/``e2fsck`` with the libraries ``ldd`` lists, the modules
  in :data:`MODULES` and their dependencies (``modprobe --show-depends``), and
  the files in ``guest/`` (start-up, the command agent, helpers).

Everything is kept in :func:`cache_dir` (``$NVMESTACK_VM_CACHE``, else
``$XDG_CACHE_HOME/nvmestack-vm``, else ``~/.cache/nvmestack-vm``)::

    kernel-<version>/   the unpacked kernel package (modules come from here)
    vmlinux             the kernel, ELF (PVH entry)
    vmlinuz             the kernel, bzImage (booted when no vmlinux could be made)
    initramfs.cpio      the root file system
    image.json          what went in; its "stamp" says when to build again

:func:`ensure_image` builds what is missing or stale (a changed guest file,
a new kernel package or tool version) and returns the :class:`Image`; a
second call costs a few subprocess look-ups.  The Debian packages themselves
are installed by ``./install.sh --test``; :func:`install_packages` is the
fallback for a machine where that was not run.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MODULES",
    "PACKAGES",
    "BuildError",
    "Image",
    "KernelUnavailable",
    "ToolsMissing",
    "cache_dir",
    "ensure_image",
    "install_packages",
    "missing_packages",
]

GUEST_DIR = Path(__file__).resolve().parent / "guest"

#: Debian packages on the host: the emulator and what the guest is made of.
PACKAGES = ("qemu-system-x86", "busybox-static", "nvme-cli", "fio", "e2fsprogs", "kmod", "cpio", "socat")

#: Host programs the build and the launcher use, and the package of each.
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "socat": "socat",
    "busybox": "busybox-static",
    "nvme": "nvme-cli",
    "fio": "fio",
    "mke2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "kmod": "kmod",
    "depmod": "kmod",
    "modprobe": "kmod",
}

#: Kernel modules in the guest (with their dependencies).
MODULES = (
    "virtio_pci", "virtio_console", "virtio_net",
    "configfs", "nvme-core", "nvme", "nvme-fabrics", "nvme-tcp", "nvmet", "nvmet-tcp",
    "null_blk", "loop", "ext4", "crc32c_generic", "crc32c-intel",
)

#: Dynamically linked programs copied into the guest: host path -> guest path.
PROGRAMS = {
    "nvme": "/usr/sbin/nvme",
    "fio": "/usr/bin/fio",
    "mke2fs": "/usr/sbin/mke2fs",
    "e2fsck": "/usr/sbin/e2fsck",
    "kmod": "/usr/bin/kmod",
}

#: The guest's fixed host NQN and host id (stable across boots and builds).
GUEST_HOSTID = "4e564d45-5354-4143-4b00-000000000001"
GUEST_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:" + GUEST_HOSTID

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin",
                                "/usr/bin", "/bin"])


class BuildError(RuntimeError):
    """The guest image could not be built."""


class ToolsMissing(BuildError):
    """Host programs (QEMU, busybox ...) are missing; ``packages`` lists the
    Debian packages that would bring them."""

    def __init__(self, message: str, packages: list[str]):
        super().__init__(message)
        self.packages = packages


class KernelUnavailable(BuildError):
    """The kernel package could not be fetched (no network, no apt lists)
    and none is cached."""


@dataclass(frozen=True)
class Image:
    """A built guest: boot ``kernel`` with ``initrd``."""

    kernel: Path
    initrd: Path
    kernel_version: str
    directory: Path


def cache_dir() -> Path:
    """Where the guest image is kept (see the module docstring)."""
    env = os.environ.get("NVMESTACK_VM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nvmestack-vm"


def which(name: str) -> str | None:
    """A program on PATH or in the sbin directories."""
    return shutil.which(name, path=_SEARCH_PATH)


def missing_tools() -> dict[str, str]:
    """Programs that are not there: name -> Debian package."""
    missing = {name: pkg for name, pkg in TOOLS.items() if not which(name)}
    if not os.path.exists("/bin/busybox") and "busybox" not in missing:
        missing["busybox"] = "busybox-static"
    return missing


def missing_packages() -> list[str]:
    """The Debian packages of :data:`PACKAGES` that are not installed."""
    out = []
    for pkg in PACKAGES:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if "ok installed" not in res.stdout:
            out.append(pkg)
    return out


def _privileged(argv: list[str]) -> list[str] | None:
    """``argv`` as root: as it is for root, through ``sudo -n`` otherwise
    (None when neither works)."""
    if os.geteuid() == 0:
        return argv
    if which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n", *argv]
    return None


def install_packages(packages: list[str], log=None) -> str | None:
    """Install Debian packages with apt-get (as root or through password-less
    sudo).  Returns None on success, else why it did not work."""
    if not packages:
        return None
    log = log or _log
    update = _privileged(["apt-get", "update", "-qq"])
    install = _privileged(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages])
    if update is None or install is None or not which("apt-get"):
        return "installing {} needs root or password-less sudo and apt-get".format(" ".join(packages))
    log("installing Debian packages: " + " ".join(packages))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (update, install):
        res = subprocess.run(argv, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            return "{} failed: {}".format(" ".join(argv), (res.stderr or res.stdout).strip()[-2000:])
    return None


def _log(msg: str) -> None:
    print("[nvmestack-vm] " + msg, file=sys.stderr, flush=True)


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        why = (res.stderr or res.stdout).strip()[-2000:]
        raise BuildError(f"{' '.join(argv)} failed ({res.returncode}): {why}")
    return res


# ---------------------------------------------------------------------- kernel


def _kernel_package_from_apt() -> str | None:
    res = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True)
    m = re.search(r"Depends:\s*(linux-image-\d\S*-amd64)\b", res.stdout)
    return m.group(1) if m else None


def _apt_update(log, why: str) -> bool:
    update = _privileged(["apt-get", "update", "-qq"])
    if update is None:
        return False
    log(f"apt-get update ({why})")
    return subprocess.run(update, capture_output=True).returncode == 0


def kernel_package(log=None) -> str | None:
    """The versioned kernel package Debian's ``linux-image-amd64`` points to
    (e.g. ``linux-image-6.1.0-28-amd64``); None when apt knows none."""
    pkg = _kernel_package_from_apt()
    if pkg is None and _apt_update(log or _log, "no kernel package known yet"):
        pkg = _kernel_package_from_apt()
    return pkg


def _cached_kernels(cache: Path) -> list[Path]:
    return sorted((d for d in cache.glob("kernel-*") if (d / ".done").exists()),
                  key=lambda d: d.stat().st_mtime, reverse=True)


def fetch_kernel(cache: Path, log=None) -> Path:
    """The unpacked kernel package (downloaded when not cached yet)."""
    log = log or _log
    pkg = kernel_package(log)
    if pkg is not None:
        kdir = cache / ("kernel-" + pkg.removeprefix("linux-image-"))
        if (kdir / ".done").exists():
            return kdir
        try:
            return _download_kernel(cache, pkg, kdir, log)
        except BuildError as exc:
            error = str(exc)
        # Stale package lists name a kernel the archive no longer has: refresh them once.
        if _apt_update(log, "the kernel download failed"):
            pkg = _kernel_package_from_apt() or pkg
            kdir = cache / ("kernel-" + pkg.removeprefix("linux-image-"))
            if (kdir / ".done").exists():
                return kdir
            try:
                return _download_kernel(cache, pkg, kdir, log)
            except BuildError as exc:
                error = str(exc)
    else:
        error = "apt-cache knows no linux-image-amd64 (no package lists? run apt-get update)"
    cached = _cached_kernels(cache)
    if cached:
        log(f"using the cached {cached[0].name} ({error})")
        return cached[0]
    raise KernelUnavailable("cannot fetch the guest kernel: " + error)


def _download_kernel(cache: Path, pkg: str, kdir: Path, log) -> Path:
    log(f"downloading {pkg} (only unpacked, not installed)")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        res = subprocess.run(["apt-get", "download", "-q", pkg], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if res.returncode != 0 or not debs:
            raise BuildError(f"apt-get download {pkg} failed: {(res.stderr or res.stdout).strip()[-1000:]}")
        staging = Path(tmp) / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(staging)])
        version = _run(["dpkg-deb", "-f", str(debs[0]), "Version"]).stdout.strip()
        kver = pkg.removeprefix("linux-image-")
        _run([which("depmod") or "depmod", "-b", str(staging), kver])
        (staging / ".version").write_text(f"{pkg} {version}\n")
        shutil.rmtree(kdir, ignore_errors=True)
        staging.rename(kdir)
    (kdir / ".done").touch()
    return kdir


def _kernel_version(kdir: Path) -> str:
    return kdir.name.removeprefix("kernel-")


def extract_vmlinux(bzimage: Path, out: Path) -> bool:
    """Write the ELF kernel inside a bzImage (xz or gzip payload) to ``out``;
    False when there is none."""
    data = bzimage.read_bytes()
    for magic, unpack in ((b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(b)),
                          (b"\x1f\x8b\x08", lambda b: gzip.GzipFile(fileobj=io.BytesIO(b)).read())):
        pos = data.find(magic)
        while pos >= 0:
            try:
                elf = unpack(data[pos:])
            except (lzma.LZMAError, OSError, EOFError):
                elf = b""
            if elf[:4] == b"\x7fELF":
                tmp = out.with_suffix(".new")
                tmp.write_bytes(elf)
                tmp.replace(out)
                return True
            pos = data.find(magic, pos + 1)
    return False


# ------------------------------------------------------------------- initramfs


def _ldd_libraries(program: str) -> list[str]:
    res = _run(["ldd", program])
    libs = []
    for line in res.stdout.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def _install(src: str, root: Path, dest: str, mode: int = 0o755) -> None:
    target = root / dest.lstrip("/")
    if target.exists() or target.is_symlink():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(os.path.realpath(src), target)
    target.chmod(mode)


def _symlink(root: Path, path: str, to: str) -> None:
    link = root / path.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(to)


def _module_files(kdir: Path, kver: str) -> list[Path]:
    files: set[str] = set()
    modprobe = which("modprobe") or "modprobe"
    for mod in MODULES:
        res = _run([modprobe, "-d", str(kdir), "-S", kver, "--show-depends", mod])
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                files.add(parts[1])
    return [Path(f) for f in sorted(files)]


def make_rootfs(root: Path, kdir: Path, kver: str) -> None:
    """Lay out the guest's root file system in ``root``."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/sbin", "etc/nvme", "proc", "sys", "dev",
              "tmp", "run", "root", "mnt", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)

    # busybox (static): the shell and the small tools.
    busybox = "/bin/busybox" if os.path.exists("/bin/busybox") else which("busybox")
    _install(busybox, root, "/bin/busybox")
    applets = _run([busybox, "--list"]).stdout.split()
    for app in applets:
        if app != "busybox":
            _symlink(root, "/bin/" + app, "busybox")
    for app in ("init", "poweroff", "reboot", "halt"):
        _symlink(root, "/sbin/" + app, "../bin/busybox")

    # Dynamically linked programs and every library they load.
    for name, dest in PROGRAMS.items():
        src = which(name)
        _install(src, root, dest)
        for lib in _ldd_libraries(src):
            _install(lib, root, lib)
    for name in ("mkfs.ext4", "mkfs.ext2"):
        _symlink(root, "/usr/sbin/" + name, "mke2fs")
    for name in ("fsck.ext4", "fsck.ext2"):
        _symlink(root, "/usr/sbin/" + name, "e2fsck")
    # kmod reads Debian's module tree; busybox's modprobe would not do.
    for name in ("modprobe", "insmod", "rmmod", "lsmod", "modinfo", "depmod"):
        for d in ("/bin/", "/sbin/"):
            p = root / d.lstrip("/") / name
            if p.is_symlink() or p.exists():
                p.unlink()
        _symlink(root, "/sbin/" + name, "../usr/bin/kmod")

    # Modules: the listed ones and their dependencies, then modules.dep.
    mdir = "lib/modules/" + kver
    (root / mdir).mkdir(parents=True, exist_ok=True)
    for f in (kdir / mdir).glob("modules.builtin*"):
        shutil.copyfile(f, root / mdir / f.name)
    shutil.copyfile(kdir / mdir / "modules.order", root / mdir / "modules.order")
    for ko in _module_files(kdir, kver):
        rel = ko.resolve().relative_to(kdir.resolve())
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ko, root / rel)
    _run([which("depmod") or "depmod", "-b", str(root), kver])

    # Configuration.
    etc = root / "etc"
    if os.path.exists("/etc/mke2fs.conf"):
        shutil.copyfile("/etc/mke2fs.conf", etc / "mke2fs.conf")
    _symlink(root, "/etc/mtab", "/proc/mounts")
    (etc / "filesystems").write_text("ext4\n")  # busybox mount without -t tries these
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "hostname").write_text("nvmestack-vm\n")
    (etc / "hosts").write_text("127.0.0.1 localhost nvmestack-vm\n")
    (etc / "nvme" / "hostnqn").write_text(GUEST_HOSTNQN + "\n")
    (etc / "nvme" / "hostid").write_text(GUEST_HOSTID + "\n")

    # Our guest files.
    _install(str(GUEST_DIR / "rcS"), root, "/etc/rcS")
    _install(str(GUEST_DIR / "inittab"), root, "/etc/inittab", 0o644)
    for name in ("nvmestack-agent", "nvmet-export", "nvme-dev"):
        _install(str(GUEST_DIR / name), root, "/usr/local/sbin/" + name)
    _symlink(root, "/init", "sbin/init")


def write_cpio(root: Path, out, extra_nodes=()) -> None:
    """Write the tree ``root`` as a newc cpio archive to the binary file
    ``out``, everything owned by root; ``extra_nodes`` are (path, mode,
    major, minor) device nodes added without mknod (no root needed)."""
    ino = 1

    def entry(name: str, mode: int, data: bytes = b"", nlink: int = 1, rmajor: int = 0, rminor: int = 0,
              mtime: int = 0) -> None:
        nonlocal ino
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rmajor, rminor, len(raw), 0)
        head = b"070701" + b"".join(b"%08X" % f for f in fields)
        out.write(head + raw + b"\0" * (-(len(head) + len(raw)) % 4))
        out.write(data + b"\0" * (-len(data) % 4))
        ino += 1

    paths = sorted(root.rglob("*"), key=lambda p: str(p.relative_to(root)))
    for p in paths:
        name = str(p.relative_to(root))
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            entry(name, stat.S_IFLNK | 0o777, os.readlink(p).encode())
        elif stat.S_ISDIR(st.st_mode):
            entry(name, stat.S_IFDIR | stat.S_IMODE(st.st_mode), nlink=2)
        elif stat.S_ISREG(st.st_mode):
            entry(name, stat.S_IFREG | stat.S_IMODE(st.st_mode), p.read_bytes())
    for name, mode, major, minor in extra_nodes:
        entry(name.lstrip("/"), stat.S_IFCHR | mode, rmajor=major, rminor=minor)
    entry("TRAILER!!!", 0)


# ----------------------------------------------------------------------- image


def _tool_versions() -> dict[str, str]:
    pkgs = ("nvme-cli", "libnvme1", "fio", "e2fsprogs", "busybox-static", "kmod", "qemu-system-x86")
    res = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version}\\n", *pkgs], capture_output=True, text=True)
    return dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)


def _stamp(kdir: Path, versions: dict[str, str]) -> str:
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    for f in sorted(GUEST_DIR.iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(kdir.name.encode())
    h.update(json.dumps(versions, sort_keys=True).encode())
    return h.hexdigest()


@contextlib.contextmanager
def _locked(cache: Path):
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_image(*, force: bool = False, install: bool = False, log=None) -> Image:
    """The guest image, built first if missing or stale (``force``: always).

    ``install``: install missing Debian packages first (as root or with
    password-less sudo).  Raises :class:`ToolsMissing` when programs are
    still missing, :class:`KernelUnavailable` when no kernel can be had,
    :class:`BuildError` for anything else."""
    log = log or _log
    missing = missing_tools()
    if missing and install:
        why = install_packages(sorted(set(missing.values())), log)
        missing = missing_tools()
        if missing and why:
            raise ToolsMissing("missing {}; {}".format(", ".join(sorted(missing)), why), sorted(set(missing.values())))
    if missing:
        pkgs = sorted(set(missing.values()))
        raise ToolsMissing("missing {} (Debian packages: {}; ./install.sh --test installs them)".format(", ".join(sorted(missing)), " ".join(pkgs)), pkgs)
    cache = cache_dir()
    with _locked(cache):
        kdir = fetch_kernel(cache, log)
        kver = _kernel_version(kdir)
        versions = _tool_versions()
        stamp = _stamp(kdir, versions)
        info_file = cache / "image.json"
        try:
            info = json.loads(info_file.read_text())
        except (OSError, ValueError):
            info = {}
        kernel = cache / info.get("kernel", "vmlinux")
        initrd = cache / "initramfs.cpio"
        if not force and info.get("stamp") == stamp and kernel.exists() and initrd.exists():
            return Image(kernel, initrd, kver, cache)

        log(f"building the guest image in {cache} (kernel {kver})")
        shutil.copyfile(kdir / "boot" / ("vmlinuz-" + kver), cache / "vmlinuz")
        kernel_name = "vmlinux" if extract_vmlinux(cache / "vmlinuz", cache / "vmlinux") else "vmlinuz"
        with tempfile.TemporaryDirectory(dir=cache, prefix=".rootfs-") as tmp:
            root = Path(tmp) / "root"
            make_rootfs(root, kdir, kver)
            with open(cache / "initramfs.cpio.new", "wb") as out:
                write_cpio(root, out, extra_nodes=[("/dev/console", 0o600, 5, 1), ("/dev/null", 0o666, 1, 3)])
        (cache / "initramfs.cpio.new").replace(initrd)
        for old in _cached_kernels(cache):
            if old != kdir:
                shutil.rmtree(old, ignore_errors=True)
        info = {"stamp": stamp, "kernel": kernel_name, "kernel_version": kver,
                "kernel_package": (kdir / ".version").read_text().strip(), "packages": versions,
                "modules": list(MODULES)}
        info_file.write_text(json.dumps(info, indent=1) + "\n")
        log(f"guest image ready: {kernel_name} ({(cache / kernel_name).stat().st_size >> 20} MiB), "
            f"{initrd.name} ({initrd.stat().st_size >> 20} MiB)")
        return Image(cache / kernel_name, initrd, kver, cache)
