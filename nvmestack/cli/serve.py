"""``nvmestack serve``: the NVMe/TCP target from a configuration, or from the
embedded default.

The configuration is JSON in the layout of nvmetcli's saved configuration
(and of ``nvmestack.target.persist``): ``subsystems`` as persist writes them
(``nqn``, ``allowed_hosts``, ``attr``, ``namespaces`` with ``device``,
``format``, ``nblocks`` ...) and ``ports``::

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
[]`` serves discovery only; one without ``subsystems`` serves them all.  Without
``ports`` (or with ``--addr``/``--port``/``--discovery-port`` given) the target
listens on ADDR:PORT for every subsystem and on ADDR:DISCOVERY-PORT for
discovery.

Each subsystem lives in its own directory of the data directory (named after
its NQN): its namespaces' sparse files (unless a ``device.path`` says
otherwise; relative paths are relative to the configuration file), its
persisted configuration and its state (SMART counters, firmware slots ...),
kept across restarts.  When the configuration file's entry for a subsystem
changes, the file wins; otherwise what the host changed at run time
(namespace management) is kept.

The data directory is ``--data-dir``, else ``$XDG_DATA_HOME/nvmestack``
(``~/.local/share/nvmestack``).  The embedded default is one subsystem,
``nqn.2026-11.io.nvmestack:default``, with one 1 GiB namespace (512-byte
blocks) in a sparse file, on 127.0.0.1:4420 with discovery on 8009.

SIGINT and SIGTERM stop it cleanly: the connections close, every controller
goes, the namespaces are flushed to stable storage and the state is saved
(marked clean).  Nothing a host saw completed is lost.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading

from ..spec.fabrics import DISCOVERY_NQN, nqn_problem
from ..spec.tcp import DISCOVERY_PORT, IO_PORT
from ..target import persist
from ..target.subsystem import Subsystem
from ..target.tcp import TcpTarget

__all__ = ["DEFAULT_NQN", "DEFAULT_SIZE", "default_data_dir", "add_arguments", "run", "ServeError", "Server"]

DEFAULT_NQN = "nqn.2026-11.io.nvmestack:default"
DEFAULT_SIZE = 1 << 30
DEFAULT_ADDR = "127.0.0.1"
_APPLIED = "serve-config.json"  # the configuration entry last applied to a subsystem directory

log = logging.getLogger("nvmestack.serve")


class ServeError(Exception):
    """A configuration or start-up problem, said in one line."""


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "nvmestack")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="JSON configuration: subsystems (namespaces, allowed hosts) and ports; "
                        "without it, the embedded default (one subsystem, one 1 GiB namespace)")
    p.add_argument("--addr", metavar="ADDR", default=None,
                   help=f"address to listen on (default {DEFAULT_ADDR})")
    p.add_argument("--port", metavar="PORT", type=int, default=None,
                   help=f"TCP port of the NVM subsystems (default {IO_PORT}; 0: any free port)")
    p.add_argument("--discovery-port", metavar="PORT", type=int, default=None,
                   help=f"TCP port of the discovery service (default {DISCOVERY_PORT}; 0: any free port)")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="where namespaces and state are kept (default $XDG_DATA_HOME/nvmestack, "
                        "i.e. ~/.local/share/nvmestack)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log connections (-v) and more (-vv)")


# ---------------------------------------------------------------------------
# configuration


def _safe_name(nqn: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", nqn).strip("_") or "subsystem"


def _default_config() -> dict:
    return {
        "subsystems": [
            {
                "nqn": DEFAULT_NQN,
                "allowed_hosts": [],
                "attr": {"allow_any_host": True, "model": "nvmestack"},
                "namespaces": [{"nsid": 1, "nblocks": DEFAULT_SIZE // 512}],
            }
        ]
    }


def _read_config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            config = json.loads(f.read())
    except FileNotFoundError:
        raise ServeError(f"{path}: no such file") from None
    except OSError as exc:
        raise ServeError(f"{path}: cannot be read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServeError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ServeError(f"{path}: expected a JSON object")
    return config


def _resolve_paths(entry: dict, base: str) -> dict:
    """Namespace file paths relative to the configuration file made absolute."""
    entry = json.loads(json.dumps(entry))
    for ns in entry.get("namespaces") or []:
        device = ns.get("device") if isinstance(ns, dict) else None
        if isinstance(device, dict):
            for key in ("path", "meta_path"):
                value = device.get(key)
                if isinstance(value, str) and value and not os.path.isabs(value):
                    device[key] = os.path.abspath(os.path.join(base, value))
    return entry


def _open_subsystem(entry: dict, data_dir: str, base: str, where: str) -> Subsystem:
    if not isinstance(entry, dict) or not isinstance(entry.get("nqn"), str):
        raise ServeError(f"{where}: a subsystem needs an \"nqn\"")
    nqn = entry["nqn"]
    problem = nqn_problem(nqn)
    if problem is not None or nqn == DISCOVERY_NQN:
        raise ServeError(f"{where}: {nqn!r} is not a usable subsystem NQN: {problem or 'the discovery NQN'}")
    directory = os.path.join(data_dir, _safe_name(nqn))
    os.makedirs(directory, exist_ok=True)
    entry = _resolve_paths(entry, base)
    applied_path = os.path.join(directory, _APPLIED)
    try:
        with open(applied_path) as f:
            applied = json.load(f)
    except (OSError, ValueError):
        applied = None
    config_path = os.path.join(directory, persist.CONFIG_FILE)
    if applied != entry or not os.path.exists(config_path):
        persist._write_json(config_path, {"version": persist.FORMAT_VERSION, "subsystems": [entry]})
        persist._write_json(applied_path, entry)
    try:
        return persist.load(directory)
    except (ValueError, OSError) as exc:
        raise ServeError(f"{where}: {exc}") from None


def _ports(config: dict, args: argparse.Namespace, where: str) -> list[tuple[str, int, list[str] | None]]:
    explicit = args.addr is not None or args.port is not None or args.discovery_port is not None
    addr = args.addr or DEFAULT_ADDR
    if explicit or not config.get("ports"):
        io_port = IO_PORT if args.port is None else args.port
        disc_port = DISCOVERY_PORT if args.discovery_port is None else args.discovery_port
        out: list[tuple[str, int, list[str] | None]] = [(addr, io_port, None)]
        if disc_port != io_port or disc_port == 0:
            out.append((addr, disc_port, []))
        return out
    ports = config["ports"]
    if not isinstance(ports, list):
        raise ServeError(f"{where}: \"ports\" must be a list")
    out = []
    for i, p in enumerate(ports):
        pw = f"{where}: ports[{i}]"
        addr_obj = p.get("addr") if isinstance(p, dict) else None
        if not isinstance(addr_obj, dict):
            raise ServeError(f"{pw}: needs an \"addr\" object")
        trtype = str(addr_obj.get("trtype", "tcp")).lower()
        if trtype != "tcp":
            raise ServeError(f"{pw}: transport {trtype!r} is not served (only tcp)")
        traddr = addr_obj.get("traddr", DEFAULT_ADDR)
        try:
            trsvcid = int(addr_obj.get("trsvcid", IO_PORT))
        except (TypeError, ValueError):
            raise ServeError(f"{pw}: trsvcid must be a TCP port number") from None
        if not 0 <= trsvcid <= 65535:
            raise ServeError(f"{pw}: trsvcid {trsvcid} is not a TCP port")
        subs = p.get("subsystems")
        if subs is not None and (not isinstance(subs, list) or not all(isinstance(s, str) for s in subs)):
            raise ServeError(f"{pw}: \"subsystems\" must be a list of NQNs")
        out.append((str(traddr), trsvcid, subs))
    return out


# ---------------------------------------------------------------------------
# running


class Server:
    """The target built from a configuration (for ``serve`` and for tests)."""

    def __init__(self, config: dict | None, data_dir: str, args: argparse.Namespace, *, config_path: str | None = None):
        self.data_dir = os.path.abspath(data_dir)
        where = config_path or "the embedded default"
        base = os.path.dirname(os.path.abspath(config_path)) if config_path else self.data_dir
        if config is None:
            config = _default_config()
        entries = config.get("subsystems")
        if not isinstance(entries, list) or not entries:
            raise ServeError(f"{where}: \"subsystems\" must list at least one subsystem")
        ports = _ports(config, args, where)
        os.makedirs(self.data_dir, exist_ok=True)
        self.subsystems: list[Subsystem] = []
        self.target = TcpTarget()
        try:
            for i, entry in enumerate(entries):
                sub = _open_subsystem(entry, self.data_dir, base, f"{where}: subsystems[{i}]")
                self.subsystems.append(sub)
                try:
                    self.target.add_subsystem(sub)
                except ValueError as exc:
                    raise ServeError(f"{where}: subsystems[{i}]: {exc}") from None
            known = {s.nqn for s in self.subsystems}
            for addr, port, subs in ports:
                unknown = [n for n in subs or () if n not in known]
                if unknown:
                    raise ServeError(f"{where}: a port exposes unknown subsystems {', '.join(unknown)}")
                try:
                    self.target.listen(addr, port, subsystems=subs)
                except OSError as exc:
                    raise ServeError(f"cannot listen on {addr}:{port}: {exc.strerror or exc}") from None
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        self.target.start()

    def close(self) -> None:
        """Stop the target, then flush and save every subsystem."""
        self.target.stop()
        for sub in self.subsystems:
            sub.close()
        self.subsystems = []

    def describe(self) -> list[str]:
        lines = ["nvmestack serve: NVMe/TCP target running"]
        for sub in self.subsystems:
            sizes = ", ".join(f"ns {ns.nsid} {ns.size_bytes / (1 << 30):.3g} GiB" for ns in sub.namespaces.values())
            lines.append(f"  subsystem {sub.nqn} ({sizes or 'no namespaces'})")
        lines.append(f"  data in {self.data_dir}")
        io_ports = []
        disc_ports = []
        for port in self.target.ports:
            kind = "discovery only" if port.subsystems == set() else "subsystems and discovery"
            lines.append(f"  port {port.portid}: {port.traddr}:{port.trsvcid} ({kind})")
            (disc_ports if port.subsystems == set() else io_ports).append(port)
        lines.append("Linux hosts (nvme-cli):")
        disc = (disc_ports or io_ports)[:1]
        for port in disc:
            lines.append(f"  nvme discover -t tcp -a {port.traddr} -s {port.trsvcid}")
        for port in io_ports:
            for sub in self.subsystems:
                if port.exposes(sub.nqn):
                    lines.append(f"  nvme connect -t tcp -a {port.traddr} -s {port.trsvcid} -n {sub.nqn}")
        lines.append("Stop with Ctrl-C (SIGINT) or SIGTERM.")
        return lines


def run(args: argparse.Namespace) -> int:
    level = logging.WARNING if not args.verbose else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    data_dir = args.data_dir or default_data_dir()
    config = _read_config(args.config) if args.config else None
    server = Server(config, data_dir, args, config_path=args.config)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print("\n".join(server.describe()), flush=True)
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
