"""The launcher's parts that need no guest: the cpio writer, the vmlinux
extraction, the cache location, and the errors the interop tests turn into
skips (missing programs, no kernel to be had)."""

from __future__ import annotations

import io
import lzma
import shutil
import stat
import subprocess

import pytest

from nvmestack.testing.vm import build
from nvmestack.testing.vm.build import KernelUnavailable, ToolsMissing


def read_newc(data: bytes) -> dict[str, tuple[int, int, int, bytes]]:
    """name -> (mode, rdevmajor, rdevminor, data) of a newc archive."""
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        assert f[2] == f[3] == 0  # uid, gid: root
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out[name] = (mode, rmaj, rmin, body)


def test_cpio_holds_files_links_dirs_and_device_nodes(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "motd").write_bytes(b"hello\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "init").symlink_to("bin/tool")
    buf = io.BytesIO()
    build.write_cpio(root, buf, extra_nodes=[("/dev/console", 0o600, 5, 1)])
    entries = read_newc(buf.getvalue())
    assert set(entries) == {"etc", "etc/motd", "bin", "bin/tool", "init", "dev/console"}
    assert entries["etc/motd"][3] == b"hello\n" and stat.S_ISREG(entries["etc/motd"][0])
    assert stat.S_IMODE(entries["bin/tool"][0]) == 0o755
    assert stat.S_ISLNK(entries["init"][0]) and entries["init"][3] == b"bin/tool"
    assert stat.S_ISDIR(entries["etc"][0])
    mode, major, minor, _ = entries["dev/console"]
    assert stat.S_ISCHR(mode) and (major, minor) == (5, 1) and stat.S_IMODE(mode) == 0o600
    if shutil.which("cpio"):  # and GNU cpio reads it the same
        listed = subprocess.run(["cpio", "-t", "--quiet"], input=buf.getvalue(), capture_output=True, check=True)
        assert set(listed.stdout.decode().split()) == set(entries)


def test_vmlinux_is_taken_from_the_xz_payload(tmp_path):
    elf = b"\x7fELF" + bytes(range(256)) * 64
    bz = tmp_path / "vmlinuz"
    bz.write_bytes(b"MZ boot sector \xfd7zXZ\x00 not a stream " + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"tail")
    assert build.extract_vmlinux(bz, tmp_path / "vmlinux")
    assert (tmp_path / "vmlinux").read_bytes() == elf
    bz.write_bytes(b"MZ no payload at all")
    assert not build.extract_vmlinux(bz, tmp_path / "other")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NVMESTACK_VM_CACHE", str(tmp_path / "explicit"))
    assert build.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("NVMESTACK_VM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.cache_dir() == tmp_path / "xdg" / "nvmestack-vm"


def test_missing_programs_name_their_packages(monkeypatch):
    monkeypatch.setattr(build, "TOOLS", {"no-such-program-for-nvmestack": "no-such-package"})
    with pytest.raises(ToolsMissing) as err:
        build.ensure_image(install=False)
    assert err.value.packages == ["no-such-package"]
    assert "install.sh --test" in str(err.value)


def test_no_kernel_without_network_or_cache(monkeypatch, tmp_path):
    updates = []

    def offline(*args, **kwargs):
        raise build.BuildError("apt-get download failed: temporary failure resolving")

    monkeypatch.setattr(build, "kernel_package", lambda log=None: "linux-image-6.1.0-99-amd64")
    monkeypatch.setattr(build, "_kernel_package_from_apt", lambda: "linux-image-6.1.0-99-amd64")
    monkeypatch.setattr(build, "_apt_update", lambda log, why: updates.append(why) or True)
    monkeypatch.setattr(build, "_download_kernel", offline)
    with pytest.raises(KernelUnavailable, match="temporary failure"):
        build.fetch_kernel(tmp_path, log=lambda msg: None)
    assert len(updates) == 1  # the package lists were refreshed once before giving up
    # A kernel fetched earlier is used instead.
    cached = tmp_path / "kernel-6.1.0-98-amd64"
    cached.mkdir()
    (cached / ".done").touch()
    assert build.fetch_kernel(tmp_path, log=lambda msg: None) == cached


def test_stale_package_lists_are_refreshed(monkeypatch, tmp_path):
    """The lists name a kernel the archive dropped; after apt-get update the
    current one is fetched."""
    lists = ["linux-image-6.1.0-98-amd64"]
    fetched = []

    def download(cache, pkg, kdir, log):
        if pkg.endswith("-98-amd64"):
            raise build.BuildError("404 Not Found")
        fetched.append(pkg)
        return kdir

    monkeypatch.setattr(build, "kernel_package", lambda log=None: lists[0])
    monkeypatch.setattr(build, "_kernel_package_from_apt", lambda: lists[0])
    monkeypatch.setattr(build, "_apt_update", lambda log, why: lists.insert(0, "linux-image-6.1.0-99-amd64") or True)
    monkeypatch.setattr(build, "_download_kernel", download)
    assert build.fetch_kernel(tmp_path, log=lambda msg: None) == tmp_path / "kernel-6.1.0-99-amd64"
    assert fetched == ["linux-image-6.1.0-99-amd64"]
