"""A QEMU with ``vfio-user-pci`` (10.1 or newer), from Debian's archive.

Debian 12 ships QEMU 7.2, which has no vfio-user client.  This fetches
trixie-backports' ``qemu-system-x86`` and its whole library closure with a
private apt state (its own sources list, lists, cache and an *empty* dpkg
status, so apt resolves every dependency), unpacks the .debs with
``dpkg-deb -x`` -- never installed, no root needed -- and writes a wrapper
that runs the binary with its own dynamic loader, libraries, modules and
firmware::

    <cache_dir()>/qemu-vfio-user/
        apt/        the private apt state (lists; the .debs are removed)
        root/       the unpacked packages
        bin/qemu-system-x86_64   the wrapper
        stamp       the suite it came from; present once the wrapper works

About 40 MB to download and 190 MB on disk, once; later calls only check
that the wrapper is there.  ``NVMESTACK_QEMU`` names another binary with
vfio-user-pci instead (nothing is fetched then).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .build import BuildError, _locked, _log, cache_dir, which

__all__ = ["QemuFetchError", "ensure_qemu", "has_vfio_user"]

SUITE = "trixie-backports"
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"  # Debian 12's keyring holds trixie's keys


class QemuFetchError(BuildError):
    """No QEMU with vfio-user-pci could be had (offline, no apt, a broken download)."""


def has_vfio_user(qemu: str) -> bool:
    """Whether ``qemu`` runs and knows ``-device vfio-user-pci``.  (The
    unpacked QEMU's plain ``-device help`` aborts on the host's modules;
    asking for the one device's properties works.)"""
    try:
        res = subprocess.run([qemu, "-device", "vfio-user-pci,help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and "socket" in res.stdout


def _apt(adir: Path, tool: str, *args: str) -> list[str]:
    return [
        tool, "-o", f"Dir::Etc={adir}/etc", "-o", f"Dir::Etc::sourcelist={adir}/etc/sources.list",
        "-o", f"Dir::Etc::sourceparts={adir}/etc/sources.list.d", "-o", f"Dir::Etc::preferencesparts={adir}/etc/preferences.d",
        "-o", f"Dir::State={adir}/state", "-o", f"Dir::State::Lists={adir}/lists",
        "-o", f"Dir::Cache={adir}/cache", "-o", f"Dir::State::status={adir}/state/status",
        "-o", "APT::Architecture=amd64", "-o", "Debug::NoLocking=1",
        "-o", f"APT::Sandbox::User={_user()}", *args,
    ]


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _run(argv: list[str], what: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise QemuFetchError(f"{what} failed ({res.returncode}): {(res.stderr or res.stdout).strip()[-1500:]}")


def _wrapper(root: Path) -> str:
    lib = root / "usr/lib/x86_64-linux-gnu"
    return (
        "#!/bin/sh\n"
        f"# Debian {SUITE}'s QEMU unpacked in {root} (not installed); see nvmestack/testing/vm/qemu.py.\n"
        f"export QEMU_MODULE_DIR={lib}/qemu\n"
        f'exec "{lib}/ld-linux-x86-64.so.2" --library-path "{lib}" "{root}/usr/bin/qemu-system-x86_64" '
        f'-L "{root}/usr/share/qemu" -L "{root}/usr/share/seabios" -L "{root}/usr/lib/ipxe/qemu" "$@"\n'
    )


def ensure_qemu(log=None) -> str:
    """The path of a qemu-system-x86_64 with vfio-user-pci, fetched and
    cached on first use (see the module docstring); QemuFetchError when it
    cannot be had."""
    log = log or _log
    env = os.environ.get("NVMESTACK_QEMU")
    if env:
        if not has_vfio_user(env):
            raise QemuFetchError(f"NVMESTACK_QEMU={env} does not run or has no vfio-user-pci")
        return env
    cache = cache_dir()
    dest = cache / "qemu-vfio-user"
    binary = dest / "bin" / "qemu-system-x86_64"
    stamp = dest / "stamp"
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == SUITE:
        return str(binary)
    for tool in ("apt-get", "dpkg-deb"):
        if not which(tool):
            raise QemuFetchError(f"{tool} is missing: the QEMU with vfio-user-pci comes from Debian's archive")
    if not os.path.exists(KEYRING):
        raise QemuFetchError(f"{KEYRING} is missing (Debian's archive keyring)")
    with _locked(cache):
        if binary.exists() and stamp.exists() and stamp.read_text().strip() == SUITE:
            return str(binary)
        log(f"fetching QEMU from Debian {SUITE} into {dest} (unpacked, not installed; ~40 MB)")
        adir = dest / "apt"
        for d in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d", "lists/partial",
                  "cache/archives/partial", "state"):
            (adir / d).mkdir(parents=True, exist_ok=True)
        (adir / "state/status").write_text("")  # empty: apt resolves the whole closure
        (adir / "etc/sources.list").write_text("".join(
            f"deb [signed-by={KEYRING}] {MIRROR} {suite} main\n" for suite in ("trixie", "trixie-updates", SUITE)))
        _run(_apt(adir, "apt-get", "update", "-q"), "apt-get update (private state)")
        _run(_apt(adir, "apt-get", "install", "-y", "-q", "--download-only", "--no-install-recommends",
                  "-t", SUITE, "qemu-system-x86"), f"downloading qemu-system-x86 from {SUITE}")
        root = dest / "root"
        staging = dest / "root.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        debs = sorted((adir / "cache/archives").glob("*.deb"))
        if not debs:
            raise QemuFetchError("apt downloaded no packages")
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(staging)], f"unpacking {deb.name}")
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
        for deb in debs:
            deb.unlink()
        (dest / "bin").mkdir(exist_ok=True)
        binary.write_text(_wrapper(root))
        binary.chmod(0o755)
        if not has_vfio_user(str(binary)):
            raise QemuFetchError(f"the unpacked QEMU ({binary}) does not run or has no vfio-user-pci")
        stamp.write_text(SUITE + "\n")
        log(f"QEMU with vfio-user-pci ready: {binary}")
    return str(binary)
