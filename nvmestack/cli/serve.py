"""``nvmestack serve``: the NVMe/TCP target from a configuration file that it
watches, edited with ``nvmestack target ...`` (or by hand) while it runs.

Where the configuration is: ``--config FILE``, else ``target.json`` in the
data directory.  The data directory is ``--data-dir``, else
``$XDG_DATA_HOME/nvmestack`` (``~/.local/share/nvmestack``).  On the first
start without ``--config`` the embedded default is written there: one
subsystem, ``nqn.2026-11.io.nvmestack:default``, with one 1 GiB namespace
(512-byte blocks) in a sparse file, on 127.0.0.1:4420 with discovery on 8009.
``nvmestack target ...`` with the same ``--data-dir`` / ``--config`` edits the
file a running ``serve`` uses.

The configuration is JSON in the layout of nvmetcli's saved configuration
(and of ``nvmestack.target.persist``): ``subsystems`` as persist writes them
(``nqn``, ``allowed_hosts``, ``attr`` with ``allow_any_host``, ``serial``,
``model`` ..., ``namespaces`` with ``nsid``, ``nblocks``, ``format``,
``device`` with ``path`` ...), ``ports`` and, optionally, ``mdts``
(Maximum Data Transfer Size: 2**mdts pages of 4 KiB per command; default
10, 4 MiB; 0: no limit) and ``workers`` (worker processes serving the I/O
queues, ``target/workers.py``; default 0: one process; read at start)::

    {
      "ports": [
        {"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": "4420"},
         "subsystems": ["nqn.2026-11.io.nvmestack:disk1"]},
        {"portid": 2, "addr": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "8009"}, "subsystems": []}
      ],
      "subsystems": [
        {"nqn": "nqn.2026-11.io.nvmestack:disk1", "allowed_hosts": [],
         "namespaces": [{"nsid": 1, "nblocks": 2097152}]}
      ]
    }

Every port also serves the discovery subsystem; a port with ``"subsystems":
[]`` serves discovery only; one without ``subsystems`` serves them all.  A
``trsvcid`` of ``"0"`` takes any free port.  Without ``ports`` the target
listens on 127.0.0.1:4420 for every subsystem and on 127.0.0.1:8009 for
discovery.  ``--addr``/``--port``/``--discovery-port`` on the command line
replace the configuration's ports (changes of ports in the file are then
ignored).  What nvmetcli writes and we do not use is accepted and ignored
(``hosts``, ``referrals``, ``treq``); a namespace with ``"enable": 0`` is
not served.

Each subsystem lives in its own directory of the data directory (named after
its NQN): its namespaces' sparse files (unless a ``device.path`` says
otherwise; relative paths are relative to the configuration file; no two
namespaces may be on one file, whatever links lead to it), its
persisted configuration and its state (SMART counters, firmware slots ...),
kept across restarts.  When the configuration file's entry for a subsystem
changes while ``serve`` is stopped, the file wins at the next start;
otherwise what the host changed at run time (namespace management, format)
is kept.  Removing a subsystem from the configuration deletes its directory
(a ``device.path`` file stays), so a later subsystem of the same name starts
afresh.

While it runs, ``serve`` looks at the file every half second (and at once on
SIGHUP) and applies what changed: namespaces added (connected hosts get the
Namespace Attribute Changed event and see it) or removed (its data flushed;
a namespace in a file of its own in the subsystem's directory goes with its
file, as with delete-ns; a ``device.path`` file stays); subsystems added or
removed (the controllers of a removed one lose their connections; its
directory, with its own namespace files and state, is deleted);
ports added, removed or exposing other subsystems; allowed hosts (the
discovery log's GENCTR changes; a host no longer allowed loses its
connections at once); a namespace whose definition changed (its UUID,
NGUID or EUI-64, its file) is replaced: removed and added again, and
hosts see both through Namespace Attribute Changed events.  Subsystem
attributes (serial, model, firmware, IEEE OUI, max_namespaces, capacity)
take effect at the next start; ``nvmestack target`` refuses to change
them while serve runs.  A configuration that cannot be applied is logged
and the running one stays.

SIGINT and SIGTERM stop it cleanly: the connections close, every controller
goes, the namespaces are flushed to stable storage and the state is saved
(marked clean).  Nothing a host saw completed is lost.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Callable, Iterator

from ..spec.fabrics import DISCOVERY_NQN, nqn_problem, nqn_unusable
from ..spec.tcp import DISCOVERY_PORT, IO_PORT
from ..target import persist
from ..target.controller import DEFAULT_MDTS
from ..target.fabrics import Port
from ..target.subsystem import Subsystem
from ..target.tcp import TcpTarget

__all__ = [
    "DEFAULT_NQN",
    "DEFAULT_SIZE",
    "CONFIG_NAME",
    "default_data_dir",
    "default_config",
    "config_location",
    "config_lock",
    "ensure_config",
    "read_config",
    "write_config",
    "check_config",
    "ParsedConfig",
    "PortSpec",
    "add_arguments",
    "run",
    "ServeError",
    "Server",
]

DEFAULT_NQN = "nqn.2026-11.io.nvmestack:default"
DEFAULT_SIZE = 1 << 30
DEFAULT_ADDR = "127.0.0.1"
CONFIG_NAME = "target.json"  # the configuration in the data directory
POLL_INTERVAL = 0.5
_APPLIED = "serve-config.json"  # the configuration entry last applied to a subsystem directory

log = logging.getLogger("nvmestack.serve")


class ServeError(Exception):
    """A configuration or start-up problem, said in one line."""


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "nvmestack")


MAX_MDTS = 16  # 256 MiB per command


def _mdts(text: str) -> int:
    """argparse type of --mdts."""
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_MDTS:
        raise argparse.ArgumentTypeError(f"{text!r}: 0 (no limit) or 1..{MAX_MDTS} (2**MDTS pages of 4 KiB)")
    return value


MAX_WORKERS = 256


def _workers(text: str) -> int:
    """argparse type of --workers."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of worker processes") from None
    if not 0 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{value} worker processes: 0..{MAX_WORKERS}")
    return value


def _tcp_port(text: str) -> int:
    """argparse type of --port/--discovery-port: a TCP port number."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (0..65535)")
    return value


def _ip_address(text: str) -> str:
    """argparse type of --addr: an IPv4 or IPv6 address (never a name for
    the resolver)."""
    try:
        return str(ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help=f"JSON configuration: subsystems (namespaces, allowed hosts) and ports; without it, "
                        f"DATA-DIR/{CONFIG_NAME}, written with the embedded default (one subsystem, one 1 GiB "
                        f"namespace) on the first start.  Changes to it are applied while serve runs")
    p.add_argument("--addr", metavar="ADDR", type=_ip_address, default=None,
                   help=f"address to listen on (default {DEFAULT_ADDR}); with --port/--discovery-port it "
                        f"replaces the configuration's ports")
    p.add_argument("--port", metavar="PORT", type=_tcp_port, default=None,
                   help=f"TCP port of the NVM subsystems (default {IO_PORT}; 0: any free port)")
    p.add_argument("--discovery-port", metavar="PORT", type=_tcp_port, default=None,
                   help=f"TCP port of the discovery service (default {DISCOVERY_PORT}; 0: any free port)")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="where namespaces and state are kept (default $XDG_DATA_HOME/nvmestack, "
                        "i.e. ~/.local/share/nvmestack)")
    p.add_argument("--mdts", metavar="N", type=_mdts, default=None,
                   help=f"Maximum Data Transfer Size: 2**N pages of 4 KiB per command (default {DEFAULT_MDTS}, "
                        f"{(4096 << DEFAULT_MDTS) >> 20} MiB; 0: no limit); replaces the configuration's \"mdts\"")
    p.add_argument("--workers", metavar="N", type=_workers, default=None,
                   help="serve the I/O queues in N worker processes, an event loop each (default 0: everything "
                        "in one process); replaces the configuration's \"workers\"")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log connections (-v) and more (-vv)")


# ---------------------------------------------------------------------------
# the configuration file


def _safe_name(nqn: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", nqn).strip("_") or "subsystem"


def default_config() -> dict:
    """The embedded default: one subsystem with one 1 GiB namespace, on
    127.0.0.1:4420, discovery on 127.0.0.1:8009."""
    return {
        "ports": [
            {"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": DEFAULT_ADDR,
                                   "trsvcid": str(IO_PORT)}},
            {"portid": 2, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": DEFAULT_ADDR,
                                   "trsvcid": str(DISCOVERY_PORT)}, "subsystems": []},
        ],
        "subsystems": [
            {
                "nqn": DEFAULT_NQN,
                "allowed_hosts": [],
                "attr": {"allow_any_host": True, "model": "nvmestack"},
                "namespaces": [{"nsid": 1, "nblocks": DEFAULT_SIZE // 512}],
            }
        ],
    }


_default_config = default_config  # the name earlier code used


def config_location(config: str | None, data_dir: str | None) -> tuple[str, str]:
    """(configuration file, data directory), both absolute: ``config``, else
    ``target.json`` in ``data_dir`` (default :func:`default_data_dir`)."""
    data_dir = os.path.abspath(data_dir or default_data_dir())
    if config:
        return os.path.abspath(config), data_dir
    return os.path.join(data_dir, CONFIG_NAME), data_dir


@contextlib.contextmanager
def config_lock(path: str) -> Iterator[None]:
    """Hold the editing lock of configuration ``path`` (an ``fcntl`` lock on
    ``.NAME.lock`` beside it; the file itself is replaced by rename)."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        fd = os.open(os.path.join(directory, f".{name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ServeError(f"{path}: cannot lock: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _running_marker(path: str) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.serve")


def hold_running_marker(path: str, data_dir: str) -> int | None:
    """Say that a serve runs configuration ``path`` with ``data_dir`` (a
    shared ``fcntl`` lock on ``.NAME.serve`` beside it, held until the
    descriptor closes; the file names the data directory, for
    ``nvmestack target --config`` without ``--data-dir``); the descriptor,
    or None when it cannot be made."""
    try:
        fd = os.open(_running_marker(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    fcntl.flock(fd, fcntl.LOCK_SH)
    text = json.dumps({"data_dir": data_dir}).encode()
    try:
        if os.pread(fd, len(text) + 1, 0) != text:
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)
    except OSError:
        pass
    return fd


def served_data_dir(path: str) -> str | None:
    """The data directory the last serve of configuration ``path`` used."""
    try:
        with open(_running_marker(path)) as f:
            value = json.load(f).get("data_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and os.path.isabs(value) else None


def serve_running(path: str) -> bool:
    """Whether a serve runs configuration ``path`` now."""
    try:
        fd = os.open(_running_marker(path), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases a lock it got
    return False


def read_config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            config = json.loads(f.read())
    except FileNotFoundError:
        raise ServeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ServeError(f"{path}: is a directory") from None
    except OSError as exc:
        raise ServeError(f"{path}: cannot be read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServeError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ServeError(f"{path}: expected a JSON object")
    return config


_read_config = read_config


def write_config(path: str, config: dict) -> None:
    """Write atomically (temporary file, fsync, rename): a reader sees the
    old file or the new one."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    tmp = None
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        persist._fsync_dir(directory)
    except OSError as exc:
        raise ServeError(f"{path}: cannot be written: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def ensure_config(path: str) -> bool:
    """Write the embedded default to ``path`` unless a file is there;
    returns whether it did."""
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", mode=0o700, exist_ok=True)
    with config_lock(path):
        if os.path.lexists(path):
            return False
        write_config(path, default_config())
        return True


# ---------------------------------------------------------------------------
# checking a configuration


@dataclass(frozen=True)
class PortSpec:
    """One port to listen on: NQNs it exposes (``None``: all, ``()``:
    discovery only)."""

    portid: int
    traddr: str
    trsvcid: int
    subsystems: tuple[str, ...] | None

    @property
    def address(self) -> tuple[str, int]:
        return self.traddr, self.trsvcid


@dataclass
class ParsedConfig:
    """A checked configuration: per NQN the subsystem's entry (paths made
    absolute, disabled namespaces left out) and persist's reading of it, and
    the ports (``None`` when the configuration has no ``ports``)."""

    entries: dict[str, dict]
    specs: dict[str, dict]
    ports: list[PortSpec] | None
    mdts: int | None = None  # None: the controllers' default (DEFAULT_MDTS)
    workers: int | None = None  # worker processes for the I/O queues (read at start; None: TcpTarget's default)


def _normalize_entry(entry: dict, base: str) -> dict:
    """A subsystem entry as served: a copy with the namespace file paths
    relative to the configuration file made absolute, without the
    namespaces nvmetcli marks ``"enable": 0``."""
    entry = copy.deepcopy(entry)
    namespaces = entry.get("namespaces")
    if isinstance(namespaces, list):
        kept = []
        for ns in namespaces:
            if isinstance(ns, dict) and str(ns.get("enable", 1)) in ("0", "False", "false"):
                continue
            device = ns.get("device") if isinstance(ns, dict) else None
            if isinstance(device, dict):
                for key in ("path", "meta_path"):
                    value = device.get(key)
                    if isinstance(value, str) and value and not os.path.isabs(value):
                        device[key] = os.path.abspath(os.path.join(base, value))
            kept.append(ns)
        entry["namespaces"] = kept
    return entry


def _parse_entry(entry: dict, where: str, directory: str) -> dict:
    """persist's reading of one subsystem entry (ValueError -> ServeError)."""
    try:
        return persist._parse_config({"subsystems": [entry]}, "\0", directory)
    except ValueError as exc:
        text = str(exc)
        for prefix in ("\0: subsystems[0].", "\0: subsystems[0]: ", "\0: "):
            if text.startswith(prefix):
                text = text[len(prefix):]
                break
        raise ServeError(f"{where}: {text}") from None


def _port_number(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ServeError(f"{where}: trsvcid must be a TCP port number, got {value!r}") from None
    if isinstance(value, bool) or not 0 <= number <= 65535:
        raise ServeError(f"{where}: trsvcid {value!r} is not a TCP port")
    return number


def _parse_ports(ports: Any, where: str, known: set[str]) -> list[PortSpec]:
    if not isinstance(ports, list):
        raise ServeError(f"{where}: \"ports\" must be a list")
    raw = []
    for i, p in enumerate(ports):
        pw = f"{where}: ports[{i}]"
        if not isinstance(p, dict):
            raise ServeError(f"{pw}: expected a JSON object")
        addr_obj = p.get("addr")
        if not isinstance(addr_obj, dict):
            raise ServeError(f"{pw}: needs an \"addr\" object")
        trtype = str(addr_obj.get("trtype", "tcp")).lower()
        if trtype != "tcp":
            raise ServeError(f"{pw}: transport {trtype!r} is not served (only tcp)")
        traddr = addr_obj.get("traddr", DEFAULT_ADDR)
        try:
            ip_address(str(traddr))
        except ValueError:
            raise ServeError(f"{pw}: traddr {traddr!r} is not an IPv4 or IPv6 address") from None
        trsvcid = _port_number(addr_obj.get("trsvcid", IO_PORT), pw)
        subs = p.get("subsystems")
        if subs is not None:
            if not isinstance(subs, list) or not all(isinstance(s, str) for s in subs):
                raise ServeError(f"{pw}: \"subsystems\" must be a list of NQNs")
            unknown = [n for n in subs if n not in known]
            if unknown:
                raise ServeError(f"{pw}: exposes unknown subsystems {', '.join(unknown)}")
            subs = tuple(dict.fromkeys(subs))
        portid = p.get("portid")
        if portid is not None:
            try:
                portid = int(portid)
            except (TypeError, ValueError):
                portid = -1
            if isinstance(p.get("portid"), bool) or not 1 <= portid <= 0xFFFF:
                raise ServeError(f"{pw}: portid {p.get('portid')!r} is not a number in 1..65535")
        raw.append((pw, portid, str(traddr), trsvcid, subs))
    used = [r[1] for r in raw if r[1] is not None]
    dup = sorted({x for x in used if used.count(x) > 1})
    if dup:
        raise ServeError(f"{where}: portid {dup[0]} is used twice")
    out = []
    next_id = max(used, default=0)
    seen: dict[tuple[str, int], str] = {}
    for pw, portid, traddr, trsvcid, subs in raw:
        if portid is None:
            next_id += 1
            portid = next_id
        if trsvcid:
            key = (str(ip_address(traddr)), trsvcid)
            if key in seen:
                raise ServeError(f"{pw}: {traddr}:{trsvcid} is taken by {seen[key]}")
            seen[key] = pw.rsplit(": ", 1)[-1]
        out.append(PortSpec(portid, traddr, trsvcid, subs))
    return out


def namespace_files(nss: dict, directory: str) -> list[str]:
    """The files a namespace (persist's reading of its entry) keeps its
    blocks in, ``directory`` being its subsystem's directory (where the
    default ``nsN.data``/``nsN.meta`` are)."""
    fmt = nss["formats"][nss["lba_format"]]
    own = not nss.get("explicit_path")
    data = os.path.join(directory, f"ns{nss['nsid']}.data") if own else nss["data_path"]
    files = [data]
    if fmt.metadata_size:
        files.append(nss["meta_path"] or os.path.join(directory, f"ns{nss['nsid']}.meta"))
    return files


def subsystem_name_warning(nqn: str) -> str | None:
    """What to warn about a subsystem's name (``None``: nothing); raises
    :class:`ServeError` for a name no subsystem can have.  A name outside
    the NQN syntax is served, as Linux's nvmet serves it (blktests names
    its subsystem ``blktests-subsystem-1``)."""
    problem = nqn_unusable(nqn)
    if problem is not None or nqn == DISCOVERY_NQN:
        raise ServeError(f"{nqn!r} is not a usable subsystem NQN: {problem or 'the discovery NQN'}")
    problem = nqn_problem(nqn)
    if problem is not None:
        return f"{nqn!r} is not in NQN form ({problem}); served anyway, as Linux's nvmet does"
    return None


def _warn_names(nqns) -> None:
    for nqn in nqns:
        warning = subsystem_name_warning(nqn)
        if warning:
            log.warning("subsystem %s", warning)


def check_config(config: Any, where: str, base: str, data_dir: str | None = None) -> ParsedConfig:
    """Check a whole configuration (``where`` names it in messages; ``base``
    is the directory relative namespace paths are relative to; ``data_dir``,
    when given, is the data directory, whose subsystem directories hold the
    namespaces' default files).  Two namespaces on one file (through a
    symbolic or hard link, or a default file) are refused.  Raises
    :class:`ServeError` with one line saying what is wrong."""
    if not isinstance(config, dict):
        raise ServeError(f"{where}: expected a JSON object")
    entries_in = config.get("subsystems", [])
    if not isinstance(entries_in, list):
        raise ServeError(f"{where}: \"subsystems\" must be a list")
    entries: dict[str, dict] = {}
    specs: dict[str, dict] = {}
    dirs: dict[str, str] = {}
    files: dict[Any, str] = {}  # (device, inode) or real path -> which namespace
    real_data_dir = os.path.realpath(data_dir) if data_dir else None
    for i, entry in enumerate(entries_in):
        sw = f"{where}: subsystems[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("nqn"), str):
            raise ServeError(f"{sw}: a subsystem needs an \"nqn\"")
        nqn = entry["nqn"]
        try:
            subsystem_name_warning(nqn)
        except ServeError as exc:
            raise ServeError(f"{sw}: {exc}") from None
        if nqn in entries:
            raise ServeError(f"{sw}: subsystem {nqn} appears twice")
        name = _safe_name(nqn)
        if name in dirs:
            raise ServeError(f"{sw}: {nqn} and {dirs[name]} would share the directory {name}")
        dirs[name] = nqn
        normalized = _normalize_entry(entry, base)
        spec = _parse_entry(normalized, sw, base)
        for k, (nsd, nss) in enumerate(zip(normalized.get("namespaces") or [], spec["namespaces"])):
            device = nsd.get("device") or {}
            nw = f"{sw}: namespaces[{k}]"
            explicit = bool(device.get("path"))
            if explicit and real_data_dir is not None:
                _check_not_served_file(nss["data_path"], real_data_dir, nw)
            if explicit or data_dir is not None:
                directory = os.path.join(data_dir, name) if data_dir else base
                for path in namespace_files(dict(nss, explicit_path=explicit), directory):
                    key = persist._file_key(path)
                    if key in files:
                        raise ServeError(f"{nw}: {path} is already the file of {files[key]}")
                    files[key] = f"namespace {nss['nsid']} of {nqn}"
            if explicit:
                _check_namespace_file(nss, nw)
        entries[nqn] = normalized
        specs[nqn] = spec
    ports = None
    if config.get("ports") is not None:
        ports = _parse_ports(config["ports"], where, set(entries))
    hosts = config.get("hosts", [])
    if not isinstance(hosts, list):
        raise ServeError(f"{where}: \"hosts\" must be a list")
    mdts = config.get("mdts")
    if mdts is not None and (isinstance(mdts, bool) or not isinstance(mdts, int) or not 0 <= mdts <= MAX_MDTS):
        raise ServeError(f"{where}: \"mdts\" must be 0 (no limit) or 1..{MAX_MDTS} (2**mdts pages of 4 KiB), "
                         f"got {mdts!r}")
    workers = config.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or not 0 <= workers <= MAX_WORKERS):
        raise ServeError(f"{where}: \"workers\" must be 0..{MAX_WORKERS} (worker processes), got {workers!r}")
    return ParsedConfig(entries, specs, ports, mdts, workers)


def _check_not_served_file(path: str, real_data_dir: str, where: str) -> None:
    """A namespace's ``device.path`` may not be a file serve keeps in its
    data directory (another namespace's blocks, a subsystem's state)."""
    real = os.path.realpath(path)
    parent, name = os.path.split(real)
    if os.path.dirname(parent) == real_data_dir and (
            persist._OWN_FILE.match(name) or name in (persist.CONFIG_FILE, persist.STATE_FILE, _APPLIED)):
        raise ServeError(f"{where}: {path} is a file serve keeps for the subsystem in {parent}")


def _check_namespace_file(nss: dict, where: str) -> None:
    fmt = nss["formats"][nss["lba_format"]]
    path = nss["data_path"]
    if not os.path.exists(path):
        if not os.path.isdir(os.path.dirname(path)):
            raise ServeError(f"{where}: {path}: its directory does not exist")
        return
    if not os.path.isfile(path):
        raise ServeError(f"{where}: {path} is not a regular file")
    size = os.path.getsize(path)
    if size != nss["nblocks"] * fmt.data_size:
        raise ServeError(f"{where}: {path} has {size} bytes, but {nss['nblocks']} blocks of {fmt.data_size} bytes "
                         f"need {nss['nblocks'] * fmt.data_size}")


def implicit_ports(args: argparse.Namespace | None = None) -> list[PortSpec]:
    """The ports of a configuration without ``ports``, or the ones
    ``--addr``/``--port``/``--discovery-port`` give."""
    addr = getattr(args, "addr", None) or DEFAULT_ADDR
    port = getattr(args, "port", None)
    disc = getattr(args, "discovery_port", None)
    io_port = IO_PORT if port is None else port
    disc_port = DISCOVERY_PORT if disc is None else disc
    out = [PortSpec(1, addr, io_port, None)]
    if disc_port != io_port or disc_port == 0:
        out.append(PortSpec(2, addr, disc_port, ()))
    return out


def _ports_from_args(args: argparse.Namespace | None) -> bool:
    return args is not None and any(getattr(args, k, None) is not None for k in ("addr", "port", "discovery_port"))


# ---------------------------------------------------------------------------
# subsystems and namespaces


def _applied_path(directory: str) -> str:
    return os.path.join(directory, _APPLIED)


def _open_subsystem(entry: dict, data_dir: str, where: str) -> Subsystem:
    """The subsystem of a (normalized) entry from its directory: the entry
    wins when it differs from the one last applied there."""
    directory = os.path.join(data_dir, _safe_name(entry["nqn"]))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ServeError(f"{where}: cannot create {directory}: {exc.strerror}") from None
    applied_path = _applied_path(directory)
    try:
        with open(applied_path) as f:
            applied = json.load(f)
    except (OSError, ValueError):
        applied = None
    config_path = os.path.join(directory, persist.CONFIG_FILE)
    if applied != entry or not os.path.exists(config_path):
        written = _keep_identity(entry, config_path, directory)
        persist._write_json(config_path, {"version": persist.FORMAT_VERSION, "subsystems": [written]})
        persist._write_json(applied_path, entry)
    try:
        return persist.load(directory)
    except (ValueError, OSError) as exc:
        raise ServeError(f"{where}: {exc}") from None


def _keep_identity(entry: dict, config_path: str, directory: str) -> dict:
    """``entry`` with what it leaves to chance taken from the subsystem's
    saved configuration: the serial number, and the identifiers (NGUID,
    EUI64, UUID) of namespaces kept on the same file, so that hosts see the
    same subsystem and namespaces after the entry changed."""
    try:
        with open(config_path) as f:
            saved = json.load(f)["subsystems"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return entry
    if not isinstance(saved, dict) or saved.get("nqn") != entry.get("nqn"):
        return entry
    entry = copy.deepcopy(entry)
    attr = entry.get("attr")
    saved_attr = saved.get("attr") if isinstance(saved.get("attr"), dict) else {}
    if saved_attr.get("serial") and (not isinstance(attr, dict) or attr.get("serial") is None):
        entry["attr"] = dict(attr or {}, serial=saved_attr["serial"])

    def data_file(ns: dict) -> str | None:
        device = ns.get("device") if isinstance(ns.get("device"), dict) else {}
        path = device.get("path") or f"ns{ns.get('nsid')}.data"
        return os.path.abspath(os.path.join(directory, path)) if isinstance(path, str) else None

    old = {(ns.get("nsid"), data_file(ns)): ns for ns in saved.get("namespaces") or [] if isinstance(ns, dict)}
    for ns in entry.get("namespaces") or []:
        if not isinstance(ns, dict):
            continue
        before = old.get((ns.get("nsid"), data_file(ns)))
        if before is None or not isinstance(before.get("device"), dict):
            continue
        device = ns.setdefault("device", {})
        if not isinstance(device, dict):
            continue
        for key in ("nguid", "eui64", "uuid"):
            if device.get(key) is None and before["device"].get(key) is not None:
                device[key] = before["device"][key]
    return entry


def _size_text(nbytes: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:.4g} {unit}"
    return f"{nbytes} B"


_DEFERRED_ATTRS = ("serial", "model", "firmware", "ieee_oui", "vid", "ssvid", "max_namespaces", "capacity")


def deferred_attributes(old_spec: dict, new_spec: dict) -> list[str]:
    """The changes of a subsystem's attributes a running serve cannot take
    (hosts have read them in Identify Controller): applied at the next start."""
    return [f"{key} changed" for key in _DEFERRED_ATTRS if old_spec[key] != new_spec[key]]


def changes_serve_cannot_take(old: ParsedConfig, new: ParsedConfig) -> list[str]:
    """What a running serve would only apply at its next start."""
    out = []
    for nqn, spec in new.specs.items():
        if nqn in old.specs:
            out += [f"{nqn}: {text}" for text in deferred_attributes(old.specs[nqn], spec)]
    return out


class _SubsystemPlan:
    """What a changed entry does to a running subsystem."""

    def __init__(self, server: "Server", nqn: str, old: dict, new: dict, old_spec: dict, where: str):
        self.sub = server._subs[nqn]
        self.nqn = nqn
        self.new = new
        self.directory = os.path.join(server.data_dir, _safe_name(nqn))
        self.spec = _parse_entry(new, where, self.directory)
        self.where = where
        old_ns = {s["nsid"]: raw for raw, s in zip(old.get("namespaces") or [], old_spec["namespaces"])}
        new_ns = {s["nsid"]: raw for raw, s in zip(new.get("namespaces") or [], self.spec["namespaces"])}
        self.remove = sorted(n for n in old_ns if n not in new_ns)
        self.add = [s for s in self.spec["namespaces"] if s["nsid"] not in old_ns]
        # A namespace whose definition changed is replaced (identifiers, file ...).
        self.replace = [s for s in self.spec["namespaces"]
                        if s["nsid"] in old_ns and old_ns[s["nsid"]] != new_ns[s["nsid"]]]
        self.deferred = deferred_attributes(old_spec, self.spec)
        self.hosts = (old_spec["allowed_hosts"], old_spec["allow_any_host"]) != (
            self.spec["allowed_hosts"], self.spec["allow_any_host"])
        self.opened: list[tuple[dict, Any]] = []
        for nsd in self.add:
            if nsd["nsid"] in self.sub.namespaces:
                raise ServeError(f"{where}: namespace {nsd['nsid']} exists already (created by a host?)")

    def prepare(self) -> None:
        for i, nsd in enumerate(self.replace):
            # What the entry leaves to chance stays as it was on the same file.
            old = self.sub.namespaces.get(nsd["nsid"])
            same = old is not None and getattr(old.data, "path", None) == nsd["data_path"]
            if same:
                self.replace[i] = dict(nsd, **{key: nsd[key] if nsd[key] is not None else bytes(getattr(old, key))
                                               for key in ("nguid", "eui64", "uuid")})
        for nsd in self.add + self.replace:
            try:
                ns = persist._open_namespace(nsd, self.directory, self.where)
            except ValueError as exc:
                raise ServeError(str(exc)) from None
            if nsd["ncap_bytes"] is not None:
                ns.ncap_bytes = nsd["ncap_bytes"]
            self.opened.append((nsd, ns))

    def rollback(self) -> None:
        for _, ns in self.opened:
            ns.close()
        self.opened = []

    def commit(self, target: TcpTarget) -> list[str]:
        sub = self.sub
        done = []
        replaced = {nsd["nsid"] for nsd in self.replace}
        bound = getattr(sub, "persistence", None)
        if bound is not None and replaced:
            # The new namespaces' files are kept while the old ones go (same files, maybe).
            bound.reserve(path for nsd, ns in self.opened if nsd["nsid"] in replaced
                          for path in (ns.data.path, getattr(ns.meta, "path", None)) if path)
        for nsid in self.remove + sorted(replaced):
            ns = sub.namespaces.get(nsid)
            if ns is None:
                continue  # deleted by a host meanwhile
            ns.flush()
            sub.remove_namespace(nsid)
            if nsid not in replaced:
                done.append(f"namespace {nsid} of {self.nqn} removed")
        for nsd, ns in self.opened:
            attach = nsd["attach"]
            ns.attached_hosts.update(nsd.get("attach_hosts", ()))
            ns.detached_hosts.update(nsd.get("detach_hosts", ()))
            sub.add_namespace(ns, attach=attach == "all")
            if isinstance(attach, list):
                with sub.lock:
                    ns.attached.update(c for c in attach)
                    ctrls = [sub.controllers[c] for c in attach if c in sub.controllers]
                sub.namespace_changed([ns.nsid], ctrls)
            if ns.nsid in replaced:
                done.append(f"namespace {ns.nsid} of {self.nqn} replaced ({_size_text(ns.size_bytes)})")
            else:
                done.append(f"namespace {ns.nsid} of {self.nqn} added ({_size_text(ns.size_bytes)})")
        self.opened = []
        if self.hosts:
            with sub.lock:
                sub.allowed_hosts = set(self.spec["allowed_hosts"])
                sub.allow_any_host = self.spec["allow_any_host"]
            cut = target.cut_disallowed(sub)  # a revoked host keeps no association
            target.discovery_changed()
            bound = getattr(sub, "persistence", None)
            if bound is not None:
                bound.save_config()
            who = "any host" if sub.allow_any_host else ", ".join(sorted(sub.allowed_hosts)) or "no host"
            done.append(f"hosts of {self.nqn}: {who}")
            for host in sorted({c.hostnqn for c in cut}):
                done.append(f"host {host} may no longer use {self.nqn}: its connections closed")
        if self.deferred:
            done.append(f"{self.nqn}: {', '.join(self.deferred)}: takes effect when serve restarts")
        else:
            persist._write_json(_applied_path(self.directory), self.new)
        return done


# ---------------------------------------------------------------------------
# running


class Server:
    """The target built from a configuration (for ``serve`` and for tests).

    ``config`` (None: the embedded default) was read from ``config_path``
    (None: not from a file); :meth:`reload` applies a changed
    configuration, :meth:`poll` applies the file's when it changed,
    :meth:`watch` polls in a thread (:meth:`request_reload` wakes it)."""

    def __init__(self, config: dict | None, data_dir: str, args: argparse.Namespace | None = None, *,
                 config_path: str | None = None):
        self.data_dir = os.path.abspath(data_dir)
        self.config_path = os.path.abspath(config_path) if config_path else None
        self.where = config_path or "the embedded default"
        self.base = os.path.dirname(self.config_path) if self.config_path else self.data_dir
        self.on_change: Callable[[str], None] = lambda text: log.info("%s", text)
        # How ``nvmestack target`` names this configuration (for describe()).
        self.edit_options = f" --config {shlex.quote(self.config_path)}" if self.config_path else ""
        if config is None:
            config = default_config()
        parsed = check_config(config, self.where, self.base, self.data_dir)
        _warn_names(parsed.entries)
        self.ports_from_args = _ports_from_args(args)
        port_specs = implicit_ports(args) if self.ports_from_args or parsed.ports is None else parsed.ports
        try:
            os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ServeError(f"cannot create {self.data_dir}: {exc.strerror}") from None
        self._subs: dict[str, Subsystem] = {}
        self._ports: dict[int, tuple[PortSpec, Port]] = {}
        self._lock = threading.RLock()
        self._signature = _signature(self.config_path) if self.config_path else None
        self._watcher: threading.Thread | None = None
        self._stop_watching = threading.Event()
        self._reload_now = threading.Event()
        self.mdts_from_args = getattr(args, "mdts", None)
        mdts = self.mdts_from_args if self.mdts_from_args is not None else parsed.mdts
        workers = getattr(args, "workers", None)
        self.target = TcpTarget(workers=parsed.workers if workers is None else workers,
                                **({} if mdts is None else {"mdts": mdts}))
        self.workers = self.target.workers
        self._running_fd: int | None = None
        created: list[str] = []  # subsystem directories this start made
        try:
            # The ports first: a port in use fails before any file is made.
            for spec in port_specs:
                self._ports[spec.portid] = (spec, self._listen(spec))
            for i, (nqn, entry) in enumerate(parsed.entries.items()):
                directory = os.path.join(self.data_dir, _safe_name(nqn))
                if not os.path.lexists(directory):
                    created.append(directory)
                sub = _open_subsystem(entry, self.data_dir, f"{self.where}: subsystems[{i}]")
                self._subs[nqn] = sub
                try:
                    self.target.add_subsystem(sub)
                except ValueError as exc:
                    raise ServeError(f"{self.where}: subsystems[{i}]: {exc}") from None
        except BaseException:
            self.close()
            for directory in created:  # a failed start leaves nothing behind
                shutil.rmtree(directory, ignore_errors=True)
            raise
        if self.config_path:  # 'nvmestack target' refuses what a running serve cannot take
            self._running_fd = hold_running_marker(self.config_path, self.data_dir)
        self.config = config
        self.parsed = parsed

    @property
    def subsystems(self) -> list[Subsystem]:
        return list(self._subs.values())

    def _listen(self, spec: PortSpec) -> Port:
        try:
            return self.target.listen(spec.traddr, spec.trsvcid, subsystems=spec.subsystems, portid=spec.portid)
        except OSError as exc:
            raise ServeError(f"cannot listen on {spec.traddr}:{spec.trsvcid}: {exc.strerror or exc}") from None

    def start(self) -> None:
        self.target.start()

    def close(self) -> None:
        """Stop watching, stop the target, then flush and save every subsystem."""
        self._stop_watching.set()
        self._reload_now.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(30)
        with self._lock:
            self.target.stop()
            for sub in self._subs.values():
                sub.close()
            self._subs = {}
            fd, self._running_fd = getattr(self, "_running_fd", None), None
            if fd is not None:
                os.close(fd)

    # -- live changes -----------------------------------------------------------------

    def watch(self, interval: float = POLL_INTERVAL) -> None:
        """Look at the configuration file every ``interval`` seconds (and at
        once after :meth:`request_reload`) in a thread until :meth:`close`."""
        if self.config_path is None or self._watcher is not None:
            return

        def loop() -> None:
            forced = True  # first: whatever changed since the configuration was read
            while not self._stop_watching.is_set():
                if not forced:
                    self._reload_now.wait(interval)
                    forced = self._reload_now.is_set()
                self._reload_now.clear()
                if self._stop_watching.is_set():
                    break
                try:
                    self.poll(force=forced)
                except Exception:  # a bug must not stop the target
                    log.exception("reloading %s", self.config_path)
                forced = False

        self._watcher = threading.Thread(target=loop, name="nvmestack serve: config", daemon=True)
        self._watcher.start()

    def request_reload(self) -> None:
        """Re-read the configuration now (SIGHUP)."""
        self._reload_now.set()

    def poll(self, *, force: bool = False) -> list[str] | None:
        """Apply the configuration file if it changed since it was last
        looked at: the changes made ([] for none), or None when it could not
        be applied (logged; the running configuration stays)."""
        if self.config_path is None:
            return []
        with self._lock:
            signature = _signature(self.config_path)
            if signature == self._signature and not force:
                return []
            self._signature = signature
            try:
                config = read_config(self.config_path)
                if config == self.config:
                    return []
                changes = self.reload(config)
            except ServeError as exc:
                log.error("configuration not applied, the running one stays: %s", exc)
                return None
        for text in changes:
            self.on_change(text)
        if changes:
            for text in self.security_warnings():
                log.warning("%s", text)
        return changes

    def reload(self, config: dict | None = None) -> list[str]:
        """Apply ``config`` (default: the file's) to the running target;
        returns what changed.  ServeError, with nothing changed, when it
        cannot be applied."""
        with self._lock:
            if config is None:
                if self.config_path is None:
                    return []
                config = read_config(self.config_path)
            parsed = check_config(config, self.where, self.base, self.data_dir)
            _warn_names([n for n in parsed.entries if n not in self.parsed.entries])
            changes = self._apply(parsed)
            self.config = config
            self.parsed = parsed
            return changes

    def _apply(self, parsed: ParsedConfig) -> list[str]:
        old, new = self.parsed.entries, parsed.entries
        added = [n for n in new if n not in old]
        removed = [n for n in old if n not in new]
        plans = [
            _SubsystemPlan(self, nqn, old[nqn], new[nqn], self.parsed.specs[nqn],
                           f"{self.where}: subsystems[{list(new).index(nqn)}]")
            for nqn in new if nqn in old and old[nqn] != new[nqn]
        ]
        # Ports, by portid (ignored when the command line gave them).
        port_add: list[PortSpec] = []
        port_remove: list[int] = []
        port_relink: list[PortSpec] = []
        if not self.ports_from_args:
            wanted = {p.portid: p for p in (parsed.ports if parsed.ports is not None else implicit_ports())}
            for portid, (spec, _) in self._ports.items():
                if portid not in wanted:
                    port_remove.append(portid)
                elif wanted[portid].address != spec.address:
                    port_remove.append(portid)
                    port_add.append(wanted[portid])
                elif wanted[portid] != spec:
                    port_relink.append(wanted[portid])
            port_add += [p for portid, p in wanted.items() if portid not in self._ports]
        # Everything that can fail, undone when something does.
        opened: dict[str, Subsystem] = {}
        bound: list[tuple[PortSpec, Port]] = []
        freed: list[int] = []
        try:
            for nqn in added:
                opened[nqn] = _open_subsystem(new[nqn], self.data_dir,
                                              f"{self.where}: subsystems[{list(new).index(nqn)}]")
            for plan in plans:
                plan.prepare()
            for spec in port_add:
                busy = [pid for pid in port_remove if pid not in freed and spec.trsvcid
                        and self._ports[pid][0].address == spec.address]
                for pid in busy:  # the same address under another portid: free it first
                    self.target.unlisten(self._ports[pid][1])
                    freed.append(pid)
                bound.append((spec, self._listen(spec)))
        except BaseException:
            for _, port in bound:
                self.target.unlisten(port)
            for sub in opened.values():
                sub.close()
            for plan in plans:
                plan.rollback()
            for pid in freed:  # best effort: listen again where we were
                spec = self._ports[pid][0]
                try:
                    self._ports[pid] = (spec, self._listen(spec))
                except ServeError as exc:
                    log.error("port %d: %s", pid, exc)
                    del self._ports[pid]
            raise
        changes: list[str] = []
        if parsed.workers != self.parsed.workers:
            changes.append(f"workers {parsed.workers or 0} at the next start (now {self.workers})")
        if parsed.mdts != self.parsed.mdts and self.mdts_from_args is None:
            mdts = DEFAULT_MDTS if parsed.mdts is None else parsed.mdts
            with self.target.lock:  # controllers made from now on; a connected host keeps what it read
                self.target.controller_options["mdts"] = mdts
            changes.append(f"mdts {mdts} for new connections ({_size_text(4096 << mdts) if mdts else 'no limit'})")
        for nqn, sub in opened.items():
            self.target.add_subsystem(sub)
            self._subs[nqn] = sub
            changes.append(f"subsystem {nqn} added")
        for plan in plans:
            changes += plan.commit(self.target)
        for spec in port_relink:
            port = self._ports[spec.portid][1]
            with self.target.lock:
                port.subsystems = None if spec.subsystems is None else set(spec.subsystems)
            for ctrl in self.target.controllers:
                if getattr(ctrl, "fabrics_port", None) is port and not ctrl.subsystem.discovery \
                        and not port.exposes(ctrl.subsystem.nqn):
                    self.target.teardown(ctrl, f"port {spec.portid} no longer exposes {ctrl.subsystem.nqn}")
            self.target.discovery_changed()
            self._ports[spec.portid] = (spec, port)
            changes.append(f"port {spec.portid}: {_exposes(spec)}")
        for pid in port_remove:
            spec, port = self._ports.pop(pid)
            if pid not in freed:
                self.target.unlisten(port)
            changes.append(f"port {pid} removed ({spec.traddr}:{port.trsvcid})")
        for spec, port in bound:
            self._ports[spec.portid] = (spec, port)
            changes.append(f"port {spec.portid} added: {port.traddr}:{port.trsvcid} ({_exposes(spec)})")
        for nqn in removed:
            sub = self._subs.pop(nqn)
            conns = [c for c in self.target.connections if c.ctrl is not None and c.ctrl.subsystem is sub]
            self.target.remove_subsystem(nqn)  # its controllers' connections close
            for conn in conns:  # no command of theirs still running when the namespaces close
                conn.wait_closed(10.0)
            sub.close()  # flushed and saved
            # Its directory goes with it: a later subsystem of that name starts afresh.
            shutil.rmtree(os.path.join(self.data_dir, _safe_name(nqn)), ignore_errors=True)
            changes.append(f"subsystem {nqn} removed (its data directory deleted)")
        return changes

    # -- what to tell the user ------------------------------------------------------------

    def security_warnings(self) -> list[str]:
        """One line per port on an address other hosts can reach that lets
        any host use a subsystem (there is no authentication)."""
        out = []
        with self._lock:
            ports = list(self._ports.values())
            subs = list(self._subs.values())
        for spec, port in sorted(ports, key=lambda p: p[0].portid):
            if ip_address(spec.traddr).is_loopback:
                continue
            open_to_all = [sub.nqn for sub in subs if sub.allow_any_host
                           and (spec.subsystems is None or sub.nqn in spec.subsystems)]
            if open_to_all:
                out.append(f"port {spec.portid} listens on {spec.traddr}:{port.trsvcid} and lets any host use "
                           f"{', '.join(open_to_all)} without authentication; allow only known hosts with "
                           f"'nvmestack target host add HOSTNQN'")
        return out

    def describe(self) -> list[str]:
        lines = ["nvmestack serve: NVMe/TCP target running"]
        for sub in self.subsystems:
            sizes = ", ".join(f"ns {ns.nsid} {_size_text(ns.size_bytes)}" for ns in sub.namespaces.values())
            lines.append(f"  subsystem {sub.nqn} ({sizes or 'no namespaces'})")
        if self.config_path:
            lines.append(f"  configuration {self.config_path}, applied while running; change it with e.g.")
            lines.append(f"    nvmestack target namespace add --size 1G{self.edit_options}")
        lines.append(f"  data in {self.data_dir}")
        if self.workers:
            pids = ", ".join(str(p) for p in self.target.worker_pids)
            lines.append(f"  I/O queues served by {self.workers} worker processes ({pids})")
        io_ports = []
        disc_ports = []
        for port in self.target.ports:
            kind = "discovery only" if port.subsystems == set() else "subsystems and discovery"
            lines.append(f"  port {port.portid}: {port.traddr}:{port.trsvcid} ({kind})")
            (disc_ports if port.subsystems == set() else io_ports).append(port)
        disc = (disc_ports or io_ports)[:1]
        pairs = [(port, sub) for port in io_ports for sub in self.subsystems if port.exposes(sub.nqn)]
        lines.append("Linux hosts (nvme-cli):")
        for port in disc:
            lines.append(f"  nvme discover -t tcp -a {_reach(port.traddr)} -s {port.trsvcid}")
        for port, sub in pairs:
            lines.append(f"  nvme connect -t tcp -a {_reach(port.traddr)} -s {port.trsvcid} -n {sub.nqn}")
        lines.append("nvmestack:")
        for port in disc:
            lines.append(f"  nvmestack discover -t tcp -a {_reach(port.traddr)} -s {port.trsvcid}")
        for port, sub in pairs:
            lines.append(f"  nvmestack connect -t tcp -a {_reach(port.traddr)} -s {port.trsvcid} -n {sub.nqn}")
        for port, sub in pairs:
            lines.append(f"  nvmestack id-ctrl {_url(port.traddr, port.trsvcid, sub.nqn)}")
        lines.append("Stop with Ctrl-C (SIGINT) or SIGTERM.")
        return lines


def _exposes(spec: PortSpec) -> str:
    if spec.subsystems is None:
        return "all subsystems"
    if not spec.subsystems:
        return "discovery only"
    return ", ".join(spec.subsystems)


def _reach(traddr: str) -> str:
    """The address a local host uses for a port on ``traddr``."""
    try:
        ip = ip_address(traddr)
    except ValueError:
        return traddr
    if ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return traddr


def _url(traddr: str, trsvcid: str, nqn: str) -> str:
    host = _reach(traddr)
    if ":" in host:
        host = f"[{host}]"
    return f"tcp://{host}:{trsvcid}/{nqn}"


def _signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns


def _missing_ancestor(path: str) -> str | None:
    """The outermost directory of ``path`` (itself included) that does not
    exist yet, or None when ``path`` exists."""
    path = os.path.abspath(path)
    missing = None
    while not os.path.lexists(path):
        missing = path
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def run(args: argparse.Namespace) -> int:
    level = logging.WARNING if not args.verbose else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    path, data_dir = config_location(args.config, args.data_dir)
    made_dir = _missing_ancestor(data_dir)  # what a failed start removes again
    wrote_default = False
    try:
        if not args.config:
            try:
                wrote_default = ensure_config(path)
            except OSError as exc:
                raise ServeError(f"{path}: cannot be written: {exc.strerror or exc}") from None
        server = Server(read_config(path), data_dir, args, config_path=path)
    except BaseException:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
        elif wrote_default:
            for leftover in (path, os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
        raise
    if wrote_default:
        print(f"nvmestack serve: wrote the embedded default configuration to {path}", flush=True)
    server.on_change = lambda text: print(f"nvmestack serve: {text}", flush=True)
    if not args.config:
        default_dir = os.path.abspath(default_data_dir())
        server.edit_options = "" if data_dir == default_dir else f" --data-dir {shlex.quote(data_dir)}"
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        stop.set()

    def on_hup(signum, frame):
        server.request_reload()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    try:
        server.start()
        print("\n".join(server.describe()), flush=True)
        for text in server.security_warnings():
            print(f"nvmestack serve: warning: {text}", file=sys.stderr, flush=True)
        server.watch()
        while not stop.wait(1.0):
            pass
        name = signal.Signals(received[0]).name if received else "stop"
        print(f"nvmestack serve: {name}: stopping", flush=True)
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("nvmestack serve: stopped; data flushed and state saved", flush=True)
    return 0
