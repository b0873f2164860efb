"""Boot the test guest under QEMU and run commands in it.

::

    from nvmestack.testing.vm import VM
    with VM(hostfwd=[4420], host_ports=[8009]) as vm:       # builds if needed, boots
        rc, out = vm.run("nvme list")                       # (exit status, output)
        vm.check("nvmet-export -s 64 /tmp/ns.img")          # output; VMError on rc != 0
        port = vm.hostfwd_port(4420)    # host 127.0.0.1:port -> the guest's port 4420
        # the guest reaches host 127.0.0.1:8009 as 10.0.2.100:8009 (vm.host_addr)
    # leaving the block powers the guest off

Acceleration: KVM only where ``/dev/kvm`` is usable *and* the CPU has
hardware virtualisation (``vmx``/``svm``); otherwise TCG
(``-accel tcg,thread=multi -cpu max``), booting the PVH ``vmlinux`` in about
6 s on two cores.  ``NVMESTACK_VM_ACCEL`` (auto, kvm, tcg) overrides.

Network: QEMU user networking, ``restrict=on``; the guest is 10.0.2.15/24
without a default route.  ``hostfwd`` ports are bound to the host's
127.0.0.1 (a free port each, see :meth:`VM.hostfwd_port`); ``host_ports``
become ``guestfwd`` rules: the guest's connection to ``10.0.2.100:PORT``
reaches host ``127.0.0.1:PORT`` through one ``socat`` per connection.
Nothing else is reachable from the guest.

Commands go through a shell agent on a virtio-serial port (``guest/
nvmestack-agent``).  QEMU dies with the process that started it
(``PR_SET_PDEATHSIG``), and :meth:`VM.shutdown` also runs at exit.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from .build import Image, ensure_image, which

__all__ = ["GUEST_ADDR", "HOST_ADDR", "VM", "QemuUnavailable", "VMError", "die_with_parent", "kvm_usable"]

GUEST_ADDR = "10.0.2.15"
#: The address in the guest that the ``host_ports`` forwards answer on.
HOST_ADDR = "10.0.2.100"
AGENT_PORT = "org.nvmestack.agent"


class VMError(RuntimeError):
    """The guest failed: boot, a command with ``check``, the agent."""


class QemuUnavailable(VMError):
    """QEMU is not installed or cannot run on this machine."""


def kvm_usable() -> bool:
    """KVM that runs a stock kernel at speed: /dev/kvm and vmx/svm."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^flags\s*:(.*)$", f.read(), re.MULTILINE)
    except OSError:
        return False
    return bool(m) and bool({"vmx", "svm"} & set(m.group(1).split()))


try:  # resolved here: a child between fork and exec must not load libraries
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def die_with_parent(sig: int = signal.SIGKILL):
    """A ``preexec_fn`` for subprocess.Popen: the child gets ``sig`` when the
    thread that started it ends (Linux's PR_SET_PDEATHSIG), so nothing is
    left running when the test process dies."""

    def preexec() -> None:  # pragma: no cover - runs in the child
        if _prctl is not None:
            _prctl(1, int(sig))  # PR_SET_PDEATHSIG

    return preexec


class _Agent:
    """Client of the guest agent's line protocol over QEMU's unix socket."""

    def __init__(self, path: str, deadline: float, alive):
        self.alive = alive
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if not alive():
                    raise VMError("qemu exited before its agent socket appeared")
                if time.monotonic() > deadline:
                    raise VMError(f"the agent socket {path} did not appear")
                time.sleep(0.02)
        self.buf = b""
        self.ids = itertools.count(1 + int(time.time()) % 100000 * 1000)

    def close(self) -> None:
        self.sock.close()

    def _line(self, deadline: float) -> str:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the guest agent did not answer in time")
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                if not self.alive():
                    raise VMError("qemu exited")
                continue
            if not data:
                raise VMError("the agent connection closed (the guest is down)")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("ascii", "replace").strip()

    def send(self, script: bytes, timeout: int) -> int:
        cid = next(self.ids)
        self.sock.sendall(b"%d %d %s\n" % (cid, timeout, base64.b64encode(script)))
        return cid

    def call(self, script: bytes, timeout: int, grace: float = 60.0) -> tuple[int, bytes]:
        cid = self.send(script, timeout)
        deadline = time.monotonic() + (timeout + grace if timeout else 1e9)
        begin = f"={cid} begin"
        while self._line(deadline) != begin:
            pass  # "=0 ready" banners, replies of commands abandoned earlier
        end = f"={cid} end "
        chunks = []
        while True:
            line = self._line(deadline)
            if line.startswith(end):
                return int(line[len(end):]), base64.b64decode("".join(chunks))
            chunks.append(line)


class VM:
    """One guest.  ``image``: an :class:`~nvmestack.testing.vm.build.Image`
    (default: :func:`ensure_image`, building it if needed); ``mem`` MiB;
    ``cpus``; ``accel`` "auto", "kvm" or "tcg"; ``hostfwd`` guest ports to
    reach from the host; ``host_ports`` host ports the guest may reach (as
    ``10.0.2.100:PORT``); ``append`` extra kernel arguments;
    ``boot_timeout`` seconds; ``qemu`` another emulator binary (e.g. the
    one with vfio-user-pci, :func:`~nvmestack.testing.vm.qemu.ensure_qemu`),
    ``machine`` the ``-M`` value, ``extra`` more QEMU arguments."""

    def __init__(self, image: Image | None = None, *, mem: int = 1024, cpus: int = 2, accel: str | None = None,
                 hostfwd=(), host_ports=(), append: str = "", boot_timeout: float = 300.0,
                 qemu: str | None = None, machine: str = "pc", extra=()):
        self.image = image
        self.qemu = qemu
        self.machine = machine
        self.extra = list(extra)
        self.mem, self.cpus = int(mem), int(cpus)
        self.accel = accel or os.environ.get("NVMESTACK_VM_ACCEL", "auto")
        self.hostfwd = [int(p) for p in hostfwd]
        self.host_ports = [int(p) for p in host_ports]
        self.append = append
        self.boot_timeout = boot_timeout
        self.dir: str | None = None
        self.proc: subprocess.Popen | None = None
        self.agent: _Agent | None = None
        self.ports: dict[int, int] = {}
        self.boot_seconds: float | None = None
        self.accel_used: str | None = None
        self.host_addr = HOST_ADDR
        #: Why the agent cannot take commands any more (a command outlived
        #: its timeout, e.g. stuck in the kernel): later calls fail at once.
        self.wedged: str | None = None

    # -------------------------------------------------------------- boot

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def qemu_argv(self) -> list[str]:
        qemu = self.qemu or which("qemu-system-x86_64")
        if qemu is None:
            raise QemuUnavailable("qemu-system-x86_64 is not installed (./install.sh --test installs it)")
        accel = self.accel
        if accel == "auto":
            accel = "kvm" if kvm_usable() else "tcg"
        self.accel_used = accel
        acc = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]
        net = ["user", "id=net0", "ipv6=off", "restrict=on"]
        net += [f"hostfwd=tcp:127.0.0.1:0-:{p}" for p in self.hostfwd]
        socat = which("socat") or "socat"
        net += [f"guestfwd=tcp:{HOST_ADDR}:{p}-cmd:{socat} - TCP:127.0.0.1:{p}" for p in self.host_ports]
        cmdline = "console=ttyS0 quiet panic=-1 rdinit=/sbin/init " + self.append
        return [
            qemu, "-name", "nvmestack-vm", "-M", self.machine, *acc, "-smp", str(self.cpus), "-m", str(self.mem),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd), "-append", cmdline.strip(),
            "-chardev", "socket,id=ser0,path={},server=on,wait=off,logfile={}".format(self._path("serial.sock"), self._path("console.log")),
            "-serial", "chardev:ser0",
            "-device", "virtio-serial-pci",
            "-chardev", "socket,id=agent0,path={},server=on,wait=off".format(self._path("agent.sock")),
            "-device", "virtserialport,chardev=agent0,name=" + AGENT_PORT,
            "-netdev", ",".join(net),
            "-device", "virtio-net-pci,netdev=net0,romfile=",
            "-qmp", "unix:{},server=on,wait=off".format(self._path("qmp.sock")),
            *self.extra,
        ]

    def boot(self) -> float:
        """Start QEMU and wait for the guest's agent; returns the seconds it took."""
        if self.proc is not None:
            raise VMError("already booted")
        if self.image is None:
            self.image = ensure_image()
        self.dir = tempfile.mkdtemp(prefix="nvmestack-vm-")
        argv = self.qemu_argv()
        t0 = time.monotonic()
        with open(self._path("qemu.log"), "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=die_with_parent())
        atexit.register(self.shutdown)
        try:
            deadline = t0 + self.boot_timeout
            self.agent = _Agent(self._path("agent.sock"), deadline, self.alive)
            self.agent.call(b"true", 10, grace=max(1.0, deadline - time.monotonic()))
            self.boot_seconds = time.monotonic() - t0
            self._read_forwards()
        except Exception as exc:
            qemu_log, console = self.log("qemu.log"), self.log("console.log")
            early = self.proc.poll() is not None and not console.strip()
            self.shutdown()
            cls = QemuUnavailable if early else VMError
            raise cls(f"the guest did not boot: {exc}\n--- qemu ---\n{qemu_log[-3000:]}\n--- console (end) ---\n{console[-3000:]}") from exc
        return self.boot_seconds

    def log(self, name: str = "console.log") -> str:
        """The text of ``console.log`` (the guest's serial console) or ``qemu.log``."""
        try:
            with open(self._path(name), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --------------------------------------------------------------- QMP

    def qmp(self, command: str, **arguments):
        """One QMP command on a fresh connection; returns its "return"."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        try:
            s.connect(self._path("qmp.sock"))
            f = s.makefile("rwb")
            f.readline()  # greeting
            for cmd in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments}):
                f.write(json.dumps(cmd).encode() + b"\n")
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        raise VMError("QMP connection closed")
                    reply = json.loads(line)
                    if "return" in reply or "error" in reply:
                        break  # else an event
            if "error" in reply:
                raise VMError("QMP {}: {}".format(command, reply["error"]))
            return reply["return"]
        finally:
            s.close()

    def _read_forwards(self) -> None:
        text = self.qmp("human-monitor-command", **{"command-line": "info usernet"})
        for m in re.finditer(r"TCP\[HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+\S+\s+(\d+)", text):
            self.ports[int(m.group(2))] = int(m.group(1))
        missing = set(self.hostfwd) - set(self.ports)
        if missing:
            raise VMError(f"no host port for guest ports {sorted(missing)} in:\n{text}")

    def hostfwd_port(self, guest_port: int) -> int:
        """The host port (on 127.0.0.1) forwarded to ``guest_port``."""
        return self.ports[int(guest_port)]

    # --------------------------------------------------------------- run

    def run(self, cmd: str, timeout: float = 300, *, check: bool = False, binary: bool = False):
        """Run ``cmd`` with a new ``sh`` in the guest; returns (exit status,
        output: stdout and stderr together, str unless ``binary``).  The
        guest kills it after ``timeout`` seconds (status 137); ``check``
        raises VMError on a non-zero status."""
        if self.agent is None:
            raise VMError("the guest is not running")
        if self.wedged:
            raise VMError("the guest agent is stuck: " + self.wedged)
        try:
            rc, out = self.agent.call(cmd.encode() if isinstance(cmd, str) else cmd, max(1, int(timeout)))
        except TimeoutError as exc:
            # The guest could not even kill the command (a process in
            # uninterruptible sleep); the agent answers nothing until it ends.
            shown = cmd if len(cmd) < 200 else cmd[:200] + "..."
            self.wedged = f"{shown!r} did not end within {timeout} s"
            raise VMError("the guest agent is stuck: " + self.wedged) from exc
        text = out if binary else out.decode("utf-8", "replace")
        if check and rc != 0:
            raise VMError(f"guest command failed (exit status {rc}): {cmd}\n"
                          + out.decode("utf-8", "replace")[-4000:])
        return rc, text

    def check(self, cmd: str, timeout: float = 300) -> str:
        """Run ``cmd``, raise VMError unless it succeeds; returns its output."""
        return self.run(cmd, timeout, check=True)[1]

    def put(self, data: bytes | str, path: str, mode: int = 0o644) -> None:
        """Write a (small) file in the guest."""
        if isinstance(data, str):
            data = data.encode()
        b64 = base64.encodebytes(data).decode()
        self.check(f"base64 -d > '{path}' <<'EOF'\n{b64}EOF\nchmod {mode:o} '{path}'", 60)

    # ---------------------------------------------------------- shutdown

    def shutdown(self, timeout: float = 20.0) -> None:
        """Power the guest off; QEMU is killed if it does not go in time.
        Safe to call more than once."""
        proc, self.proc = self.proc, None
        agent, self.agent = self.agent, None
        if proc is not None:
            if agent is not None and proc.poll() is None:
                try:
                    agent.send(b"sync; poweroff -f", 0)
                except OSError:
                    pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        if agent is not None:
            agent.close()
        atexit.unregister(self.shutdown)
        if self.dir is not None:
            if os.environ.get("NVMESTACK_VM_KEEP_LOGS"):
                for f in ("agent.sock", "serial.sock", "qmp.sock"):
                    _unlink(self._path(f))
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> VM:
        if self.proc is None:
            self.boot()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
