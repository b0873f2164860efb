"""Devices of the command line: naming, the connection registry, and opening a
controller for one command.

The kernel keeps a connected controller alive between two ``nvme`` commands;
a userspace command line cannot, so ``nvmestack connect`` (and ``drive
attach``) *registers* the controller under the kernel's name (``nvme0``,
``nvme1`` ... the lowest free instance) after bringing it up once to check
it, and every later command that names it (``nvme0``, ``/dev/nvme0``,
``nvme0n1``, ``/dev/nvme0n1``) opens its own association to it for the
length of the command (Fabrics Connect, or the PCIe function's
initialisation, then an orderly shutdown).  ``disconnect`` removes the
registration.

The registry lives in the state directory: ``$NVMESTACK_STATE_DIR``, else
``$XDG_RUNTIME_DIR/nvmestack``, else ``~/.local/state/nvmestack``
(``devices.json``, updated under a file lock).

A controller can also be given directly, without registering it:

* ``tcp://ADDR[:PORT]/NQN`` (IPv6 as ``tcp://[::1]:4420/NQN``; PORT defaults
  to 4420, or 8009 for the discovery NQN), with ``?nsid=N`` for a namespace
  and nvme connect's options ``disable_sqflow``, ``hdr_digest``,
  ``data_digest`` (switches: bare or ``=1``/``=0``) and ``queue_size=N``
  joined with ``&``;
* the path of an emulated PCIe drive directory (``nvmestack drive create``),
  opened through the PCIe function and the host driver.

Host NQN and Host ID: ``--hostnqn``/``--hostid``, else ``/etc/nvme/hostnqn``
and ``/etc/nvme/hostid`` (as nvme-cli), else ``hostnqn``/``hostid`` files in
the state directory, created on first use.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..spec.fabrics import DISCOVERY_NQN, nqn_problem, nqn_unusable, uuid_nqn
from ..spec.tcp import DISCOVERY_PORT, IO_PORT
from .common import CliError

__all__ = [
    "state_dir",
    "Registry",
    "DeviceSpec",
    "parse_device",
    "Device",
    "open_device",
    "host_identity",
    "is_drive",
    "DRIVE_MEMORY",
    "SESSION_OPTIONS",
]

#: Options every controller opened by this process gets (``nvmestack trace``
#: sets ``tracer`` here before running the traced command).
SESSION_OPTIONS: dict = {}

NVME_ETC = "/etc/nvme"
#: Host memory (the PCIe function's physical address space) for a drive.
DRIVE_MEMORY = 64 << 20
_NAME = re.compile(r"(?:/dev/)?(?:nvme|ng)(\d+)(?:[nc](\d+))?(?:n(\d+))?\Z")


def state_dir() -> str:
    path = os.environ.get("NVMESTACK_STATE_DIR")
    if not path:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime:
            path = os.path.join(runtime, "nvmestack")
        else:
            base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
            path = os.path.join(base, "nvmestack")
    return path


# ---------------------------------------------------------------------------
# host identity


def _read_first_line(path: str) -> str | None:
    try:
        with open(path) as f:
            text = f.readline().strip()
    except OSError:
        return None
    return text or None


def generate_hostnqn() -> str:
    """``nvme gen-hostnqn``: the UUID-format NQN of the machine's DMI product
    UUID when it can be read, else of a random UUID."""
    text = _read_first_line("/sys/class/dmi/id/product_uuid")
    try:
        value = uuid.UUID(text) if text else uuid.uuid4()
    except ValueError:
        value = uuid.uuid4()
    return uuid_nqn(value)


def host_identity(hostnqn: str | None = None, hostid: str | None = None, *, create: bool = True) -> tuple[str, str]:
    """(Host NQN, Host ID) for fabrics commands (see the module docstring)."""
    if hostnqn is None:
        hostnqn = _read_first_line(os.path.join(NVME_ETC, "hostnqn"))
    if hostid is None:
        hostid = _read_first_line(os.path.join(NVME_ETC, "hostid"))
    sdir = state_dir()
    if hostnqn is None:
        path = os.path.join(sdir, "hostnqn")
        hostnqn = _read_first_line(path)
        if hostnqn is None:
            hostnqn = uuid_nqn(hostid) if hostid else generate_hostnqn()
            if create:
                os.makedirs(sdir, exist_ok=True)
                with open(path, "w") as f:
                    f.write(hostnqn + "\n")
    if hostid is None:
        m = re.search(r":uuid:([0-9a-fA-F-]{36})$", hostnqn)
        if m:
            hostid = m.group(1)
        else:
            path = os.path.join(sdir, "hostid")
            hostid = _read_first_line(path)
            if hostid is None:
                hostid = str(uuid.uuid4())
                if create:
                    os.makedirs(sdir, exist_ok=True)
                    with open(path, "w") as f:
                        f.write(hostid + "\n")
    problem = nqn_problem(hostnqn)
    if problem:
        raise CliError(f"invalid host NQN {hostnqn!r}: {problem}")
    try:
        hostid = str(uuid.UUID(hostid))
    except ValueError:
        raise CliError(f"invalid host ID {hostid!r}: not a UUID") from None
    return hostnqn, hostid


# ---------------------------------------------------------------------------
# the registry


class Registry:
    """The registered controllers: ``with Registry() as reg`` holds the lock
    (``reg.entries`` is name -> entry dict) and writes changes back."""

    FILE = "devices.json"

    def __init__(self, directory: str | None = None, *, write: bool = True):
        self.directory = directory or state_dir()
        self.write = write
        self.entries: dict[str, dict] = {}
        self._lock_file = None

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.FILE)

    def __enter__(self) -> "Registry":
        if self.write:
            os.makedirs(self.directory, exist_ok=True)
            self._lock_file = open(os.path.join(self.directory, "devices.lock"), "a")
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            self._unlock()
            raise CliError(f"cannot read {self.path}: {exc}") from None
        self.entries = {k: v for k, v in (data.get("controllers") or {}).items() if isinstance(v, dict)}
        self._read = json.dumps(self.entries, sort_keys=True)
        return self

    def _unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.write and exc_type is None and json.dumps(self.entries, sort_keys=True) != self._read:
                tmp = self.path + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"controllers": self.entries}, f, indent=2, sort_keys=True)
                    f.write("\n")
                os.replace(tmp, self.path)
        finally:
            self._unlock()

    def names(self) -> list[str]:
        return sorted(self.entries, key=lambda n: int(n[4:]) if n[4:].isdigit() else 1 << 30)

    def add(self, entry: dict) -> str:
        """Register ``entry`` under the lowest free ``nvmeN``."""
        used = {int(n[4:]) for n in self.entries if n[4:].isdigit()}
        instance = 0
        while instance in used:
            instance += 1
        name = f"nvme{instance}"
        self.entries[name] = dict(entry)
        return name

    def find(self, **match: Any) -> list[str]:
        return [n for n in self.names() if all(self.entries[n].get(k) == v for k, v in match.items())]


def registered() -> dict[str, dict]:
    """The registry's entries without taking the write lock."""
    with Registry(write=False) as reg:
        return {n: reg.entries[n] for n in reg.names()}


# ---------------------------------------------------------------------------
# naming a device


@dataclass
class DeviceSpec:
    """What a command line argument names: a controller entry (``entry``: the
    registry's form) and maybe a namespace (``nsid``)."""

    name: str  # how to print it (nvme0, or the address / path given)
    entry: dict
    nsid: int | None = None
    registered: bool = False
    path: str = ""  # /dev/nvme0 or /dev/nvme0n1 style, or the argument

    @property
    def transport(self) -> str:
        return self.entry.get("transport", "?")


def is_drive(path: str) -> bool:
    from ..target.persist import CONFIG_FILE

    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def parse_tcp_url(text: str) -> tuple[dict, int | None]:
    url = urllib.parse.urlsplit(text)
    if url.scheme != "tcp":
        raise CliError(f"{text}: only tcp:// addresses are supported")
    host = url.hostname
    if not host:
        raise CliError(f"{text}: no address (tcp://ADDR[:PORT]/NQN)")
    nqn = urllib.parse.unquote(url.path.lstrip("/"))
    if not nqn:
        raise CliError(f"{text}: no subsystem NQN (tcp://ADDR[:PORT]/NQN)")
    try:
        port = url.port
    except ValueError:
        raise CliError(f"{text}: invalid port") from None
    if port is None:
        port = DISCOVERY_PORT if nqn == DISCOVERY_NQN else IO_PORT
    query: dict[str, list[str]] = {}
    for part in filter(None, url.query.split("&")):
        key, _, value = part.partition("=")
        query.setdefault(urllib.parse.unquote(key), []).append(urllib.parse.unquote(value))
    unknown = sorted(set(query) - {"nsid", *_URL_FLAGS, *_URL_NUMBERS})
    if unknown:
        raise CliError(f"{text}: unknown option {unknown[0]!r} (known: nsid, "
                       f"{', '.join(sorted(_URL_FLAGS + _URL_NUMBERS))})")
    nsid = None
    if "nsid" in query:
        try:
            nsid = int(query["nsid"][-1], 0)
        except ValueError:
            raise CliError(f"{text}: invalid nsid") from None
    problem = nqn_unusable(nqn)  # any name a target may serve (Linux's nvmet serves any)
    if problem:
        raise CliError(f"{text}: invalid NQN: {problem}")
    entry: dict = {"transport": "tcp", "traddr": host, "trsvcid": str(port), "subnqn": nqn}
    for key in _URL_FLAGS:  # nvme connect's switches: ?disable_sqflow or ?disable_sqflow=1
        if key in query:
            value = query[key][-1].lower()
            if value not in ("", "1", "0", "true", "false", "yes", "no"):
                raise CliError(f"{text}: {key}={value!r} is not a switch (1 or 0)")
            entry[key] = value in ("", "1", "true", "yes")
    for key in _URL_NUMBERS:
        if key in query:
            try:
                entry[key] = int(query[key][-1], 0)
            except ValueError:
                raise CliError(f"{text}: {key}={query[key][-1]!r} is not a number") from None
    return entry, nsid


# Connection options a tcp:// device argument may carry in its query, named
# as the registry (and nvme connect's options) name them.
_URL_FLAGS = ("disable_sqflow", "hdr_digest", "data_digest")
_URL_NUMBERS = ("queue_size",)


def parse_device(text: str) -> DeviceSpec:
    """Resolve a device argument (see the module docstring)."""
    if not text:
        raise CliError("no device given")
    m = _NAME.match(text)
    if m and not os.path.isdir(text):
        instance = int(m.group(1))
        name = f"nvme{instance}"
        nsid = m.group(3) or m.group(2)
        entries = registered()
        if name not in entries:
            raise CliError(f"{text}: No such file or directory (no controller {name} is connected or attached; "
                           f"see 'nvmestack list')")
        ns = int(nsid) if nsid is not None else None
        path = text if text.startswith("/dev/") else f"/dev/{text}"
        return DeviceSpec(name, entries[name], ns, True, path)
    if text.startswith("tcp://"):
        entry, nsid = parse_tcp_url(text)
        return DeviceSpec(text, entry, nsid, False, text)
    if "://" in text:
        raise CliError(f"{text}: only tcp:// addresses are supported")
    if is_drive(text):
        path = os.path.abspath(text)
        return DeviceSpec(text, {"transport": "pcie", "drive": path}, None, False, text)
    if os.path.exists(text):
        raise CliError(f"{text}: not an NVMe device (not a drive directory made by 'nvmestack drive create')")
    raise CliError(f"{text}: No such file or directory")


# ---------------------------------------------------------------------------
# opening


@dataclass
class Device:
    """An open controller for the length of a command."""

    spec: DeviceSpec
    ctrl: Any  # NvmeController
    closers: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def nsid(self) -> int | None:
        return self.spec.nsid

    def close(self) -> None:
        while self.closers:
            closer = self.closers.pop()
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing must go on
                pass


class DriveInUse(CliError):
    """Another process holds the drive's lock (a command, or a server such as ``nvmestack vfio-user``)."""


class DriveLock:
    """One process at a time uses a drive directory."""

    def __init__(self, path: str):
        self.path = path
        self.file = open(os.path.join(path, ".lock"), "a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise DriveInUse(f"{path}: drive is in use by another process") from None

    def release(self) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _open_tcp(entry: dict, options: dict) -> tuple[Any, list]:
    from ..host.core import ControllerDeadError, NvmeController
    from ..host.tcp import TcpTransport
    from ..host.transport import TransportError

    hostnqn, hostid = host_identity(entry.get("hostnqn"), entry.get("hostid"))
    topts = {}
    for key in ("hdr_digest", "data_digest", "kato", "queue_size", "reconnect_delay", "ctrl_loss_tmo",
                "disable_sqflow"):
        if entry.get(key) is not None:
            topts[key] = entry[key]
    # One command: no reconnection attempts if the target goes away.
    topts["ctrl_loss_tmo"] = 0
    topts.setdefault("reconnect_delay", 1)
    try:
        transport = TcpTransport(entry["traddr"], int(entry["trsvcid"]), subnqn=entry["subnqn"], hostnqn=hostnqn,
                                 hostid=hostid, **topts)
        with _init_failure_said_once():
            ctrl = NvmeController(transport, name=options.pop("name", None), **options)
    except (ControllerDeadError, TransportError, OSError, ValueError) as exc:
        raise CliError(f"failed to connect to {entry['traddr']}:{entry['trsvcid']} {entry['subnqn']}: "
                       f"{_reason(exc)}") from None
    return ctrl, [ctrl.shutdown]


class _DeadAtInit(logging.Filter):
    """Drops the host core's "controller is dead" record: when a controller
    dies while it is brought up, the command's one error line says why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("%s: controller is dead")


@contextlib.contextmanager
def _init_failure_said_once() -> Iterator[None]:
    core_log = logging.getLogger("nvmestack.host.core")
    flt = _DeadAtInit()
    core_log.addFilter(flt)
    try:
        yield
    finally:
        core_log.removeFilter(flt)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text


def _open_drive(entry: dict, options: dict) -> tuple[Any, list]:
    from ..host.core import ControllerDeadError, NvmeController
    from ..host.pci import PciTransport
    from ..memory import PhysicalMemory
    from ..target import persist
    from ..target.pci import PciFunction

    path = entry["drive"]
    if not is_drive(path):
        raise CliError(f"{path}: not a drive directory (was it removed?)")
    lock = DriveLock(path)
    closers: list = [lock.release]
    try:
        try:
            subsys = persist.load(path)
        except (OSError, ValueError) as exc:
            raise CliError(str(exc)) from None
        closers.append(subsys.close)
        memory = PhysicalMemory(DRIVE_MEMORY)
        closers.append(memory.close)
        fn = PciFunction(subsys, memory, mode=entry.get("mode", "thread"))
        closers.append(fn.close)
        try:
            with _init_failure_said_once():
                ctrl = NvmeController(PciTransport(fn, memory), name=options.pop("name", None), **options)
        except (ControllerDeadError, OSError, ValueError) as exc:
            raise CliError(f"{path}: the drive did not come up: {_reason(exc)}") from None
        closers.append(ctrl.shutdown)
    except BaseException:
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                closer()
        raise
    return ctrl, closers


def open_spec(spec: DeviceSpec, **options: Any) -> Device:
    """Bring the controller of ``spec`` up.  ``options`` go to
    :class:`~nvmestack.host.core.NvmeController` (``io_queues=0`` for a
    command that only needs the admin queue, ``tracer``, timeouts), but
    ``drive_mode``: how a drive's PCIe function runs ("thread", the
    default, or "inline": in the thread that rings its doorbells)."""
    options = {**SESSION_OPTIONS, **options}
    drive_mode = options.pop("drive_mode", None)
    if "io_queues" not in options and spec.entry.get("nr_io_queues"):
        options["io_queues"] = spec.entry["nr_io_queues"]
    options.setdefault("name", spec.name if spec.registered else None)
    if options["name"] is None:
        options.pop("name")
    if spec.transport == "tcp":
        ctrl, closers = _open_tcp(spec.entry, options)
    elif spec.transport == "pcie":
        entry = dict(spec.entry, mode=drive_mode) if drive_mode else spec.entry
        ctrl, closers = _open_drive(entry, options)
    else:
        raise CliError(f"{spec.name}: unknown transport {spec.transport!r}")
    return Device(spec, ctrl, closers)


@contextlib.contextmanager
def open_device(text: str | DeviceSpec, **options: Any) -> Iterator[Device]:
    """``with open_device("nvme0") as dev:`` -- parse, open, and close at the end."""
    spec = text if isinstance(text, DeviceSpec) else parse_device(text)
    dev = open_spec(spec, **options)
    try:
        yield dev
    finally:
        dev.close()
