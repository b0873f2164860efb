"""Interoperability with the real Linux NVMe/TCP drivers, which run in a QEMU
guest (``nvmestack.testing.vm``: Debian's kernel, nvme-cli, fio, e2fsprogs).

One guest serves all the interoperability tests (about 6 s to boot under
TCG; the image is built once and cached, see
``nvmestack/testing/vm/build.py``); it is powered off as soon as the last of
them is done (package scope), not at the end of the whole session:

- ``vm``: the booted guest.  Its kernel target's port 4420 is forwarded to a
  free host port (``vm.hostfwd_port(4420)``), and the guest reaches the
  host's ``127.0.0.1:P`` as ``10.0.2.100:P`` for the two ports of
  ``interop_ports`` (where the tests run ``nvmestack serve``).
- ``interop_ports``: ``{"target": P, "discovery": D, "tap": T}``, free host
  ports chosen before the guest boots (the guest's forwards are fixed at
  boot); ``pdu_tap(upstream_port)`` puts a recording proxy on T.

The tests are skipped, saying why, only when QEMU cannot be had: its Debian
packages are missing and cannot be installed, the guest kernel cannot be
fetched (offline, no cached copy), or QEMU does not start.  Anything else --
a build or boot that goes wrong, a guest command that fails -- fails.
"""

from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from nvmestack.testing.vm import (
    VM,
    KernelUnavailable,
    QemuUnavailable,
    ToolsMissing,
    ensure_image,
)

#: The guest port of the kernel's own target (nvmet-tcp).
KERNEL_TARGET_PORT = 4420


def free_port() -> int:
    """A TCP port free on the host's 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def interop_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(set(ports.values())) < 3:
        ports = {"target": free_port(), "discovery": free_port(), "tap": free_port()}
    return ports


@pytest.fixture(scope="package")
def vm(interop_ports):
    try:
        image = ensure_image(install=True)
    except (ToolsMissing, KernelUnavailable) as exc:
        pytest.skip(f"no QEMU guest with the Linux NVMe/TCP drivers: {exc}")
    guest = VM(image, mem=1024, cpus=2, hostfwd=[KERNEL_TARGET_PORT], host_ports=list(interop_ports.values()),
               boot_timeout=float(os.environ.get("NVMESTACK_VM_BOOT_TIMEOUT", "300")))
    try:
        guest.boot()
    except QemuUnavailable as exc:
        pytest.skip(f"QEMU cannot run here: {exc}")
    try:
        yield guest
    finally:
        guest.shutdown()


class PduTap:
    """A TCP proxy on 127.0.0.1:``port`` to 127.0.0.1:``upstream`` that
    records, per connection and direction, the common header of every
    NVMe/TCP PDU that passed: ``connections`` is a list of
    ``{"h2c": [(type, flags, hlen, pdo, plen, header bytes)], "c2h": [...]}``."""

    def __init__(self, port: int, upstream: int):
        self.upstream = upstream
        self.connections: list[dict[str, list]] = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(16)
        self.sockets: list[socket.socket] = []
        self._spawn(self._accept)

    @staticmethod
    def _spawn(fn, *args) -> None:
        threading.Thread(target=fn, args=args, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=30)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            self.sockets += [down, up]
            record = {"h2c": [], "c2h": []}
            self.connections.append(record)
            self._spawn(self._pump, down, up, record["h2c"])
            self._spawn(self._pump, up, down, record["c2h"])

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, pdus: list) -> None:
        buf = b""
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
                buf += data
                while len(buf) >= 8:
                    ptype, flags, hlen, pdo, plen = struct.unpack_from("<BBBBI", buf)
                    if plen < 8 or len(buf) < plen:
                        break
                    pdus.append((ptype, flags, hlen, pdo, plen, buf[:hlen]))
                    buf = buf[plen:]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        for s in [self.listener, *self.sockets]:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on them
            except OSError:
                pass
            s.close()


@pytest.fixture
def pdu_tap(interop_ports):
    """``pdu_tap(upstream)``: a :class:`PduTap` on ``interop_ports["tap"]``
    (the guest reaches it as 10.0.2.100:T), closed after the test."""
    taps = []

    def make(upstream: int) -> PduTap:
        taps.append(PduTap(interop_ports["tap"], upstream))
        return taps[-1]

    yield make
    for tap in taps:
        tap.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed interoperability test shows the end of the guest's kernel log."""
    outcome = yield
    report = outcome.get_result()
    guest = item.funcargs.get("vm") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(guest, VM) and guest.alive():
        try:
            _, dmesg = guest.run("dmesg | tail -n 40", timeout=20)
        except Exception as exc:  # the guest may be what broke
            dmesg = f"(no dmesg: {exc})"
        report.sections.append(("guest dmesg (last lines)", dmesg))
