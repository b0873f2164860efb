"""A subsystem that survives a restart: a JSON configuration in the spirit of
nvmetcli's saved configuration, a state file, and file-backed namespaces,
all in one directory.  Every file is made mode 0600 and the directory 0700:
the data and the state are the owner's alone.

::

    save(subsystem, "/var/lib/nvmestack/sub1")      # snapshot, data included
    subsystem = load("/var/lib/nvmestack/sub1")     # FileBackend namespaces
    ...
    subsystem.close()                               # orderly: state saved, "clean"

The directory holds:

``config.json``
    what the device is (nvmetcli's layout: ``subsystems`` -> ``nqn``,
    ``allowed_hosts``, ``attr`` with ``allow_any_host``, ``serial``,
    ``model``, ``firmware``, ``ieee_oui``, ``vid``, ``ssvid`` (PCI
    Vendor ID and Subsystem Vendor ID), ``max_namespaces``,
    ``capacity``, and ``namespaces`` with ``nsid``, ``device`` (``path``,
    ``meta_path``, ``nguid``, ``eui64``, ``uuid``), ``format``
    (``lba_format``, ``formats``, ``extended``, ``pi_type``, ``pi_first``),
    ``nblocks``, ``ncap_bytes``, ``thin``, ``shared``, ``attach``
    ("all", "none" or a list of controller ids) and, when there are any,
    ``attach_hosts``/``detach_hosts`` (the host NQNs whose fabrics
    controllers it is attached to, or detached from)).  Paths are relative to the directory unless absolute.
``state.json``
    what the device went through: firmware slots, SMART / health counters
    (power cycles, unsafe shutdowns, power-on time ...), uncorrectable LBAs
    per namespace, saved feature values when the feature store has them,
    the Device Self-test results and the last sanitize operation's status.
``ns<N>.data``, ``ns<N>.meta``
    the namespaces' blocks and metadata, sparse files.
``clean``
    present while the subsystem is shut down in an orderly way.

Loading is a power cycle: Power Cycles goes up by one, a pending firmware
activation takes effect, and when ``clean`` is missing the previous run
ended without an orderly close and Unsafe Shutdowns goes up by one.  The
loaded subsystem is bound to its directory: the configuration is saved
whenever the namespace inventory changes, the state when a controller shuts
down (CC.SHN), and both, with the ``clean`` marker, by ``Subsystem.close``.
Data written to a namespace is in its file as soon as the write completes
(and on stable storage after Flush, FUA, or a write with the volatile write
cache disabled).

A missing or corrupt configuration or state file raises ValueError naming
the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import uuid as _uuid
from typing import Any

from .backend import Backend, FileBackend, MemoryBackend
from .namespace import DEFAULT_LBA_FORMATS, LbaFormatSpec, Namespace
from .subsystem import Subsystem

__all__ = ["CLEAN_MARKER", "CONFIG_FILE", "FORMAT_VERSION", "STATE_FILE", "Persistence", "load", "save"]

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
CLEAN_MARKER = "clean"
FORMAT_VERSION = 1

_OWN_FILE = re.compile(r"^ns\d+(-\d+)?\.(data|meta)$")
_COPY_CHUNK = 1 << 20


# ---------------------------------------------------------------------------
# public entry points


def save(subsystem: Subsystem, directory: str | os.PathLike) -> None:
    """Write ``subsystem`` to ``directory``: configuration, state, and the
    namespaces' data and metadata as sparse files.

    For the subsystem :func:`load` returned from the same directory this is
    a checkpoint (the files are already there; the ``clean`` marker is left
    for ``close``).  Otherwise it is a snapshot: every namespace's blocks
    are copied into the directory and the snapshot is marked clean."""
    directory = os.path.abspath(os.fspath(directory))
    bound = getattr(subsystem, "persistence", None)
    if isinstance(bound, Persistence) and bound.directory == directory:
        bound.checkpoint()
        return
    os.makedirs(directory, mode=0o700, exist_ok=True)
    paths: dict[int, tuple[str, str | None]] = {}
    for nsid, ns in sorted(subsystem.namespaces.items()):
        with ns.lock:
            ns.flush()
            data_path = os.path.join(directory, f"ns{nsid}.data")
            _copy_sparse(ns.data, data_path)
            meta_path = None
            if ns.meta is not None:
                meta_path = os.path.join(directory, f"ns{nsid}.meta")
                _copy_sparse(ns.meta, meta_path)
        paths[nsid] = (data_path, meta_path)
    _write_json(os.path.join(directory, CONFIG_FILE), _config(subsystem, directory, paths))
    _write_json(os.path.join(directory, STATE_FILE), _state(subsystem))
    _write_marker(directory)


def load(directory: str | os.PathLike) -> Subsystem:
    """The subsystem saved in ``directory``, its namespaces on the files
    there, after one power cycle (see the module docstring)."""
    directory = os.path.abspath(os.fspath(directory))
    config_path = os.path.join(directory, CONFIG_FILE)
    config = _read_json(config_path)
    state_path = os.path.join(directory, STATE_FILE)
    state = _read_json(state_path) if os.path.exists(state_path) else None
    spec = _parse_config(config, config_path, directory)
    if state is not None:
        _check_state(state, state_path)

    options = {} if spec["capacity"] is None else {"capacity": spec["capacity"]}
    subsystem = Subsystem(
        spec["nqn"],
        serial=spec["serial"],
        model=spec["model"],
        firmware_revision=spec["firmware"],
        ieee_oui=spec["ieee_oui"],
        vid=spec["vid"],
        ssvid=spec["ssvid"],
        max_namespaces=spec["max_namespaces"],
        allow_any_host=spec["allow_any_host"],
        allowed_hosts=spec["allowed_hosts"],
        **options,
    )
    opened: list[Namespace] = []
    try:
        for nsd in spec["namespaces"]:
            ns = _open_namespace(nsd, directory, config_path)
            opened.append(ns)
            if nsd["ncap_bytes"] is not None:
                ns.ncap_bytes = nsd["ncap_bytes"]
            attach = nsd["attach"]
            subsystem.add_namespace(ns, attach=attach == "all")
            if isinstance(attach, list):
                ns.attached.update(attach)
            ns.attached_hosts.update(nsd["attach_hosts"])
            ns.detached_hosts.update(nsd["detach_hosts"])
        if state is not None:
            _apply_state(subsystem, state, state_path)
    except BaseException:
        for ns in opened:
            ns.close()
        raise

    health = subsystem.health
    if state is not None:
        health.power_cycles += 1
        if not os.path.exists(os.path.join(directory, CLEAN_MARKER)):
            health.unsafe_shutdowns += 1
    persistence = Persistence(subsystem, directory)
    persistence.attach()
    return subsystem


# ---------------------------------------------------------------------------
# a subsystem bound to its directory


class Persistence:
    """Keeps a loaded subsystem's directory up to date."""

    def __init__(self, subsystem: Subsystem, directory: str):
        self.subsystem = subsystem
        self.directory = directory
        self.lock = threading.RLock()
        self.closed = False
        self._serial = 0
        # Files of namespaces being created (not in the configuration yet).
        self._reserved: set[str] = set()

    def attach(self) -> None:
        """Bind to the subsystem: save on namespace changes, shutdowns and
        close; namespaces created at run time become files here.  The run
        is not clean until it is closed."""
        sub = self.subsystem
        sub.persistence = self
        sub.backend_factory = self.new_namespace_files
        sub.change_hooks.append(self.save_config)
        sub.close_hooks.append(self.close)
        sub.health.checkpoint_hooks.append(self.checkpoint)
        _remove(os.path.join(self.directory, CLEAN_MARKER))
        _fsync_dir(self.directory)
        self.checkpoint()

    def paths(self) -> dict[int, tuple[str, str | None]]:
        """Where each namespace's data and metadata live (copying the blocks
        of a namespace that is not file-backed into the directory)."""
        out = {}
        for nsid, ns in sorted(self.subsystem.namespaces.items()):
            data = ns.data.path if isinstance(ns.data, FileBackend) else None
            meta = ns.meta.path if isinstance(ns.meta, FileBackend) else None
            if data is None:
                data = os.path.join(self.directory, f"ns{nsid}.data")
                with ns.lock:
                    _copy_sparse(ns.data, data)
            if ns.meta is not None and meta is None:
                meta = os.path.join(self.directory, f"ns{nsid}.meta")
                with ns.lock:
                    _copy_sparse(ns.meta, meta)
            out[nsid] = (data, meta if ns.meta is not None else None)
        return out

    def save_config(self) -> None:
        with self.lock:
            if self.closed:
                return
            paths = self.paths()
            _write_json(os.path.join(self.directory, CONFIG_FILE), _config(self.subsystem, self.directory, paths))
            self._remove_orphans(paths)

    def checkpoint(self) -> None:
        """Save configuration and state (not the clean marker)."""
        with self.lock:
            if self.closed:
                return
            self.save_config()
            _write_json(os.path.join(self.directory, STATE_FILE), _state(self.subsystem))

    def close(self) -> None:
        """Orderly power off: data flushed, everything saved, marked clean."""
        with self.lock:
            if self.closed:
                return
            self.subsystem.flush_all()
            self.checkpoint()
            self.closed = True
            _write_marker(self.directory)

    def reserve(self, paths) -> None:
        """Keep files of the directory that no namespace uses yet (a
        namespace about to be added on them) until one does."""
        with self.lock:
            self._reserved.update(os.path.abspath(p) for p in paths)

    def new_namespace_files(self, nsid: int):
        """The backend factory of a namespace created at run time: fresh
        sparse files (never the file of a namespace deleted earlier)."""
        directory = self.directory
        with self.lock:
            stem = f"ns{nsid}"
            while any(os.path.exists(os.path.join(directory, f"{stem}.{ext}")) for ext in ("data", "meta")):
                self._serial += 1
                stem = f"ns{nsid}-{self._serial}"
            data = os.path.join(directory, f"{stem}.data")
            meta = os.path.join(directory, f"{stem}.meta")
            # Reserve the names until the namespace is in the configuration.
            os.close(os.open(data, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            self._reserved.update((data, meta))
        return _file_factory(data, meta)

    def _remove_orphans(self, paths: dict[int, tuple[str, str | None]]) -> None:
        used = {os.path.abspath(p) for pair in paths.values() for p in pair if p}
        self._reserved -= used
        used |= self._reserved
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            path = os.path.join(self.directory, name)
            if _OWN_FILE.match(name) and path not in used:
                _remove(path)

    def __repr__(self) -> str:
        return f"<Persistence {self.directory}{' closed' if self.closed else ''}>"


# ---------------------------------------------------------------------------
# configuration: writing


def _hex(data: bytes) -> str:
    return data.hex()


def _uuid_str(data: bytes) -> str:
    return str(_uuid.UUID(bytes=bytes(data)))


def _relative(path: str, directory: str) -> str:
    path = os.path.abspath(path)
    if os.path.dirname(path) == directory:
        return os.path.basename(path)
    return path


def _attach_policy(subsystem: Subsystem, ns: Namespace) -> Any:
    # Fabrics controllers that detached an auto-attached namespace are in
    # detach_hosts: "all" is about the static (PCIe) controllers.
    static_ctrls = [c for c, ctrl in subsystem.controllers.items() if not subsystem.controller_host(ctrl)]
    if ns.auto_attach and all(c in ns.attached for c in static_ctrls):
        return "all"
    # The IDs of fabrics (dynamic) controllers die with their association:
    # what their hosts attached is kept by host (_host_attachments).
    static = [c for c in ns.attached
              if not (c in subsystem.controllers and subsystem.controller_host(subsystem.controllers[c]))
              and subsystem.offline_host(c) is None]
    if not static:
        return "none"
    return sorted(static)


def _host_attachments(ns: Namespace) -> dict:
    """The hosts a namespace is attached to (or, attached to every
    controller, detached from) through their fabrics controllers."""
    out = {}
    if ns.attached_hosts:
        out["attach_hosts"] = sorted(ns.attached_hosts)
    if ns.detached_hosts:
        out["detach_hosts"] = sorted(ns.detached_hosts)
    return out


def _config(subsystem: Subsystem, directory: str, paths: dict[int, tuple[str, str | None]]) -> dict:
    namespaces = []
    for nsid, ns in sorted(subsystem.namespaces.items()):
        data, meta = paths[nsid]
        namespaces.append(
            {
                "nsid": nsid,
                "device": {
                    "path": _relative(data, directory),
                    "meta_path": _relative(meta, directory) if meta else None,
                    "nguid": _uuid_str(ns.nguid),
                    "eui64": _hex(ns.eui64),
                    "uuid": _uuid_str(ns.uuid),
                },
                "format": {
                    "lba_format": ns.lba_format,
                    "formats": [[f.data_size, f.metadata_size, f.rp] for f in ns.formats],
                    "extended": bool(ns.extended),
                    "pi_type": int(ns.pi_type),
                    "pi_first": bool(ns.pi_first),
                },
                "nblocks": ns.nblocks,
                "ncap_bytes": getattr(ns, "ncap_bytes", None),
                "thin": bool(ns.thin),
                "shared": bool(ns.shared),
                "attach": _attach_policy(subsystem, ns),
                **_host_attachments(ns),
            }
        )
    return {
        "version": FORMAT_VERSION,
        "subsystems": [
            {
                "nqn": subsystem.nqn,
                "allowed_hosts": sorted(subsystem.allowed_hosts),
                "attr": {
                    "allow_any_host": bool(subsystem.allow_any_host),
                    "serial": subsystem.serial,
                    "model": subsystem.model,
                    "firmware": _initial_revision(subsystem),
                    "ieee_oui": f"0x{subsystem.ieee_oui:06x}",
                    "vid": None if subsystem.vid is None else f"0x{subsystem.vid:04x}",
                    "ssvid": None if subsystem.ssvid is None else f"0x{subsystem.ssvid:04x}",
                    "max_namespaces": subsystem.max_namespaces,
                    "capacity": getattr(subsystem, "capacity", None),
                },
                "namespaces": namespaces,
            }
        ],
    }


def _initial_revision(subsystem: Subsystem) -> str:
    firmware = subsystem.firmware
    images = getattr(firmware, "images", None)
    if isinstance(images, dict) and 1 in images:
        return images[1].revision
    revisions = getattr(firmware, "revisions", None)
    if isinstance(revisions, dict) and 1 in revisions:
        return revisions[1]
    return subsystem.firmware_revision


# ---------------------------------------------------------------------------
# configuration: reading


class _Where:
    """Error messages that name the file and the place in it."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, where: str, what: str):
        raise ValueError(f"{self.path}: {where}: {what}")

    def get(self, obj: dict, key: str, types, where: str, default: Any = ...) -> Any:
        if key not in obj:
            if default is ...:
                self.fail(where, f"missing {key!r}")
            return default
        value = obj[key]
        if types is int and (isinstance(value, bool) or not isinstance(value, int)):
            self.fail(f"{where}.{key}", f"expected an integer, got {value!r}")
        if types is bool and isinstance(value, str) and value in ("0", "1"):
            return value == "1"  # nvmetcli writes attributes as strings
        if types is not int and not isinstance(value, types):
            names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
            self.fail(f"{where}.{key}", f"expected {names}, got {value!r}")
        return value

    def integer(self, obj: dict, key: str, where: str, lo: int, hi: int, default: Any = ...) -> int:
        value = self.get(obj, key, (int, str), where, default)
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                self.fail(f"{where}.{key}", f"expected an integer, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{where}.{key}", f"expected an integer, got {value!r}")
        if not lo <= value <= hi:
            self.fail(f"{where}.{key}", f"{value} is outside {lo}..{hi}")
        return value

    def identifier(self, obj: dict, key: str, where: str, size: int) -> bytes | None:
        value = self.get(obj, key, (str, type(None)), where, None)
        if value is None:
            return None
        digits = re.sub(r"[-:\s]", "", value)
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            raw = b""
        if len(raw) != size:
            self.fail(f"{where}.{key}", f"expected {size} bytes in hexadecimal, got {value!r}")
        return raw


def _read_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        raise ValueError(f"{path}: missing (no saved subsystem here)") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None


def _parse_config(config: Any, path: str, directory: str) -> dict:
    w = _Where(path)
    if not isinstance(config, dict):
        w.fail("top level", "expected a JSON object")
    version = config.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        w.fail("version", f"unsupported version {version!r} (expected {FORMAT_VERSION})")
    subsystems = w.get(config, "subsystems", list, "top level")
    if len(subsystems) != 1:
        w.fail("subsystems", f"expected exactly one subsystem, found {len(subsystems)}")
    sub = subsystems[0]
    where = "subsystems[0]"
    if not isinstance(sub, dict):
        w.fail(where, "expected a JSON object")
    nqn = w.get(sub, "nqn", str, where)
    if not nqn or len(nqn.encode()) > 223:
        w.fail(f"{where}.nqn", f"not a valid NQN: {nqn!r}")
    hosts = w.get(sub, "allowed_hosts", list, where, [])
    for i, host in enumerate(hosts):
        if not isinstance(host, str) or not host:
            w.fail(f"{where}.allowed_hosts[{i}]", f"expected a host NQN, got {host!r}")
    attr = w.get(sub, "attr", dict, where, {})
    awhere = f"{where}.attr"
    spec = {
        "nqn": nqn,
        "allowed_hosts": list(hosts),
        "allow_any_host": w.get(attr, "allow_any_host", bool, awhere, not hosts),
        "serial": w.get(attr, "serial", str, awhere, None),
        "model": w.get(attr, "model", str, awhere, "nvmestack"),
        "firmware": w.get(attr, "firmware", str, awhere, "1.0"),
        "ieee_oui": w.integer(attr, "ieee_oui", awhere, 0, 0xFFFFFF, 0),
        "vid": None if attr.get("vid") is None else w.integer(attr, "vid", awhere, 0, 0xFFFF),
        "ssvid": None if attr.get("ssvid") is None else w.integer(attr, "ssvid", awhere, 0, 0xFFFF),
        "max_namespaces": w.integer(attr, "max_namespaces", awhere, 1, 0xFFFFFFFE, 1024),
        "capacity": None if attr.get("capacity") is None else w.integer(attr, "capacity", awhere, 0, (1 << 128) - 1),
    }
    if spec["serial"] is not None and len(spec["serial"].encode()) > 20:
        w.fail(f"{awhere}.serial", "longer than the 20 bytes of Identify Controller SN")
    if len(spec["model"].encode()) > 40:
        w.fail(f"{awhere}.model", "longer than the 40 bytes of Identify Controller MN")
    namespaces = []
    seen = set()
    files: dict[Any, int] = {}  # no two namespaces on one file (links included)
    for i, nsd in enumerate(w.get(sub, "namespaces", list, where, [])):
        nwhere = f"{where}.namespaces[{i}]"
        if not isinstance(nsd, dict):
            w.fail(nwhere, "expected a JSON object")
        ns = _parse_namespace(w, nsd, nwhere, directory, spec["max_namespaces"])
        if ns["nsid"] in seen:
            w.fail(f"{nwhere}.nsid", f"namespace {ns['nsid']} appears twice")
        seen.add(ns["nsid"])
        for path in _namespace_paths(ns, directory):
            key = _file_key(path)
            if key in files:
                w.fail(nwhere, f"{path} is already the file of namespace {files[key]}")
            files[key] = ns["nsid"]
        namespaces.append(ns)
    spec["namespaces"] = namespaces
    return spec


def _parse_namespace(w: _Where, nsd: dict, where: str, directory: str, max_namespaces: int) -> dict:
    nsid = w.integer(nsd, "nsid", where, 1, max_namespaces)
    device = w.get(nsd, "device", dict, where, {})
    dwhere = f"{where}.device"
    fmt = w.get(nsd, "format", dict, where, {})
    fwhere = f"{where}.format"
    formats = DEFAULT_LBA_FORMATS
    if "formats" in fmt:
        raw = w.get(fmt, "formats", list, fwhere)
        if not 1 <= len(raw) <= 64:
            w.fail(f"{fwhere}.formats", "expected 1 to 64 LBA formats")
        parsed = []
        for j, item in enumerate(raw):
            if (
                not isinstance(item, list)
                or not 2 <= len(item) <= 3
                or any(isinstance(x, bool) or not isinstance(x, int) for x in item)
            ):
                w.fail(f"{fwhere}.formats[{j}]", f"expected [data size, metadata size(, rp)], got {item!r}")
            data_size, ms = item[0], item[1]
            rp = item[2] if len(item) > 2 else 0
            if data_size < 512 or data_size & (data_size - 1) or data_size > 1 << 16:
                w.fail(f"{fwhere}.formats[{j}]", f"data size {data_size} is not a power of two from 512")
            if not 0 <= ms <= 0xFFFF or not 0 <= rp <= 3:
                w.fail(f"{fwhere}.formats[{j}]", f"metadata size {ms} or relative performance {rp} invalid")
            parsed.append(LbaFormatSpec(data_size, ms, rp))
        formats = tuple(parsed)
    lba_format = w.integer(fmt, "lba_format", fwhere, 0, len(formats) - 1, 0)
    pi_type = w.integer(fmt, "pi_type", fwhere, 0, 3, 0)
    if pi_type and formats[lba_format].metadata_size < 8:
        w.fail(f"{fwhere}.pi_type", f"protection information needs 8 bytes of metadata; LBA format {lba_format} has "
               f"{formats[lba_format].metadata_size}")
    nblocks = w.integer(nsd, "nblocks", where, 1, (1 << 63) // formats[lba_format].data_size)
    attach = nsd.get("attach", "all")
    if attach not in ("all", "none") and not (
        isinstance(attach, list) and all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 0xFFEF
                                         for c in attach)
    ):
        w.fail(f"{where}.attach", f'expected "all", "none" or a list of controller ids, got {attach!r}')
    hosts = {}
    for key in ("attach_hosts", "detach_hosts"):
        hosts[key] = w.get(nsd, key, list, where, [])
        if not all(isinstance(h, str) and h for h in hosts[key]):
            w.fail(f"{where}.{key}", f"expected a list of host NQNs, got {hosts[key]!r}")
    data_path = w.get(device, "path", str, dwhere, f"ns{nsid}.data")
    meta_path = w.get(device, "meta_path", (str, type(None)), dwhere, None)
    uuid = device.get("uuid")
    if uuid is not None:
        try:
            uuid = _uuid.UUID(str(uuid)).bytes
        except ValueError:
            w.fail(f"{dwhere}.uuid", f"not a UUID: {uuid!r}")
    return {
        "nsid": nsid,
        "formats": formats,
        "lba_format": lba_format,
        "extended": w.get(fmt, "extended", bool, fwhere, False),
        "pi_type": pi_type,
        "pi_first": w.get(fmt, "pi_first", bool, fwhere, False),
        "nblocks": nblocks,
        "ncap_bytes": None if nsd.get("ncap_bytes") is None else w.integer(nsd, "ncap_bytes", where, 0, 1 << 63),
        "thin": w.get(nsd, "thin", bool, where, True),
        "shared": w.get(nsd, "shared", bool, where, True),
        "attach": attach,
        "attach_hosts": hosts["attach_hosts"],
        "detach_hosts": hosts["detach_hosts"],
        "data_path": os.path.join(directory, data_path),
        "meta_path": os.path.join(directory, meta_path) if meta_path else None,
        "nguid": w.identifier(device, "nguid", dwhere, 16),
        "eui64": w.identifier(device, "eui64", dwhere, 8),
        "uuid": uuid,
        "where": where,
    }


def _file_key(path: str) -> Any:
    """What names one file however it is reached: (device, inode) when it
    exists (symbolic and hard links alike), else its real path."""
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.realpath(path)


def _namespace_paths(ns: dict, directory: str) -> list[str]:
    paths = [ns["data_path"]]
    if ns["formats"][ns["lba_format"]].metadata_size:
        paths.append(ns["meta_path"] or os.path.join(directory, f"ns{ns['nsid']}.meta"))
    return paths


def _file_factory(data_path: str, meta_path: str):
    def factory(role: str, size: int) -> Backend:
        return FileBackend(data_path if role == "data" else meta_path, size)

    return factory


def _open_namespace(nsd: dict, directory: str, config_path: str) -> Namespace:
    fmt = nsd["formats"][nsd["lba_format"]]
    expected = {"data": nsd["nblocks"] * fmt.data_size, "meta": nsd["nblocks"] * fmt.metadata_size}
    meta_path = nsd["meta_path"] or os.path.join(directory, f"ns{nsd['nsid']}.meta")
    for role, path in (("data", nsd["data_path"]), ("meta", meta_path)):
        if role == "meta" and not fmt.metadata_size:
            continue
        if os.path.exists(path):
            if not os.path.isfile(path):
                raise ValueError(f"{config_path}: {nsd['where']}: {path} is not a regular file")
            size = os.path.getsize(path)
            if size != expected[role]:
                raise ValueError(
                    f"{config_path}: {nsd['where']}: {path} has {size} bytes, but {nsd['nblocks']} blocks "
                    f"of LBA format {nsd['lba_format']} need {expected[role]}"
                )
    try:
        return Namespace(
            nsd["nsid"],
            nsd["nblocks"],
            lba_format=nsd["lba_format"],
            formats=nsd["formats"],
            extended=nsd["extended"],
            pi_type=nsd["pi_type"],
            pi_first=nsd["pi_first"],
            backends=_file_factory(nsd["data_path"], meta_path),
            nguid=nsd["nguid"],
            eui64=nsd["eui64"],
            uuid=nsd["uuid"],
            thin=nsd["thin"],
            shared=nsd["shared"],
        )
    except OSError as exc:
        raise ValueError(f"{config_path}: {nsd['where']}: cannot open its files: {exc}") from None


# ---------------------------------------------------------------------------
# state


def _intervals(lbas) -> list[list[int]]:
    out: list[list[int]] = []
    for lba in sorted(lbas):
        if out and out[-1][1] == lba:
            out[-1][1] = lba + 1
        else:
            out.append([lba, lba + 1])
    return out


def _state(subsystem: Subsystem) -> dict:
    firmware = subsystem.firmware
    if hasattr(firmware, "to_dict"):
        fw = firmware.to_dict()
    else:
        fw = {
            "revisions": {str(k): v for k, v in getattr(firmware, "revisions", {}).items()},
            "active": getattr(firmware, "active", 1),
            "next_active": getattr(firmware, "next_active", None),
        }
    state: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "health": subsystem.health.state(),
        "firmware": fw,
        "namespaces": {
            str(nsid): {"uncorrectable": _intervals(ns.uncorrectable)}
            for nsid, ns in sorted(subsystem.namespaces.items())
        },
    }
    features = _saved_features(subsystem)
    if features is not None:
        state["features"] = features
    ops = getattr(subsystem, "operations", None)
    if ops is not None:
        # The Device Self-test and Sanitize Status logs outlive a power cycle.
        with ops.lock:
            state["self_test"] = [bytes(r).hex() for r in ops.self_test_results]
            state["sanitize"] = {"status": int(ops.sanitize_status), "passes": ops.sanitize_passes,
                                 "cdw10": ops.sanitize_cdw10}
    return state


def _saved_features(subsystem: Subsystem) -> Any:
    """Saved feature values, when the feature store keeps them subsystem-wide
    (``subsystem.saved_features``, JSON-able, or a store with
    ``saved_state()``/``restore_saved()``)."""
    saved = getattr(subsystem, "saved_features", None)
    if saved is None:
        return None
    if hasattr(saved, "saved_state"):
        return saved.saved_state()
    if isinstance(saved, dict):
        return {str(k): v for k, v in saved.items()}
    return None


def _check_state(state: Any, path: str) -> None:
    w = _Where(path)
    if not isinstance(state, dict):
        w.fail("top level", "expected a JSON object")
    if state.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        w.fail("version", f"unsupported version {state.get('version')!r}")
    health = w.get(state, "health", dict, "top level", {})
    for key, value in health.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            w.fail(f"health.{key}", f"expected a non-negative number, got {value!r}")
    w.get(state, "firmware", dict, "top level", {})
    namespaces = w.get(state, "namespaces", dict, "top level", {})
    for key, value in namespaces.items():
        if not key.isdigit() or not isinstance(value, dict):
            w.fail(f"namespaces.{key}", "expected an NSID and an object")
        for i, item in enumerate(w.get(value, "uncorrectable", list, f"namespaces.{key}", [])):
            if (
                not isinstance(item, list)
                or len(item) != 2
                or any(isinstance(x, bool) or not isinstance(x, int) for x in item)
                or not 0 <= item[0] < item[1]
            ):
                w.fail(f"namespaces.{key}.uncorrectable[{i}]", f"expected [first, end) LBAs, got {item!r}")


def _apply_state(subsystem: Subsystem, state: dict, path: str) -> None:
    health = subsystem.health
    health.restore({k: v for k, v in state.get("health", {}).items() if k in health.COUNTERS})
    fw = state.get("firmware") or {}
    firmware = subsystem.firmware
    try:
        if hasattr(firmware, "load_dict"):
            if fw:
                firmware.load_dict(fw)  # includes the power cycle's activation
        elif fw:
            firmware.revisions.clear()
            firmware.revisions.update({int(k): str(v) for k, v in fw.get("revisions", {}).items()})
            firmware.active = int(fw.get("active", 1))
            nxt = fw.get("next_active")
            if nxt:  # a power cycle activates a committed image
                firmware.active = int(nxt)
            firmware.next_active = None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: firmware: {exc}") from None
    for key, value in state.get("namespaces", {}).items():
        ns = subsystem.namespaces.get(int(key))
        if ns is None:
            continue
        for first, end in value.get("uncorrectable", []):
            if end > ns.nblocks:
                raise ValueError(f"{path}: namespaces.{key}.uncorrectable: LBA {end - 1} beyond the namespace")
            ns.uncorrectable.update(range(first, end))
    _apply_operations(subsystem, state, path)
    features = state.get("features")
    saved = getattr(subsystem, "saved_features", None)
    if features is not None and saved is None:
        try:  # controllers share the subsystem's saved values; none exist yet
            from .features import SavedFeatures
        except ImportError:
            SavedFeatures = None
        if SavedFeatures is not None:
            saved = subsystem.saved_features = SavedFeatures()
    if features is not None and saved is not None:
        if hasattr(saved, "restore_saved"):
            saved.restore_saved(features)
        elif isinstance(saved, dict):
            saved.update({int(k) if k.isdigit() else k: v for k, v in features.items()})


def _apply_operations(subsystem: Subsystem, state: dict, path: str) -> None:
    """The Device Self-test results and the last sanitize operation's status
    (a sanitize operation still running when the device stopped did not
    finish: it is reported failed)."""
    ops = getattr(subsystem, "operations", None)
    if ops is None:
        return
    from ..spec.log import SanitizeStatus, SelfTestResult

    try:
        results = [bytes.fromhex(r) for r in state.get("self_test", [])]
        if any(len(r) != SelfTestResult.SIZE for r in results):
            raise ValueError("a self-test result is not 28 bytes")
        sanitize = state.get("sanitize") or {}
        status = SanitizeStatus(int(sanitize.get("status", SanitizeStatus.NEVER_SANITIZED)))
        passes = int(sanitize.get("passes", 0)) & 0x1F
        cdw10 = int(sanitize.get("cdw10", 0)) & 0xFFFFFFFF
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: self_test/sanitize: {exc}") from None
    with ops.lock:
        ops.self_test_results.clear()
        ops.self_test_results.extend(results[: ops.self_test_results.maxlen])
        if status == SanitizeStatus.IN_PROGRESS:
            status = SanitizeStatus.FAILED
        ops.sanitize_status = status
        ops.sanitize_passes = passes
        ops.sanitize_cdw10 = cdw10


# ---------------------------------------------------------------------------
# files


def _write_json(path: str, obj: Any) -> None:
    """Write atomically: a temporary file, fsync, rename, fsync the directory."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(directory)


def _write_marker(directory: str) -> None:
    path = os.path.join(directory, CLEAN_MARKER)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as f:
        f.write("clean\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _copy_sparse(backend: Backend, path: str) -> None:
    """Copy a backend's bytes into a new sparse file at ``path`` (written
    aside and renamed over, so a file being copied onto itself is safe)."""
    if isinstance(backend, FileBackend) and os.path.abspath(backend.path) == os.path.abspath(path):
        backend.flush()
        return
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.ftruncate(fd, backend.size)
        if isinstance(backend, MemoryBackend):
            offsets = sorted(index * backend.CHUNK for index in list(backend._chunks))
            step = backend.CHUNK
        else:
            step = _COPY_CHUNK
            offsets = range(0, backend.size, step)
        buf = bytearray(step)
        zeros = bytes(step)
        for offset in offsets:
            n = min(step, backend.size - offset)
            if n <= 0:
                continue
            view = memoryview(buf)[:n]
            backend.readinto(offset, [view])
            if view != zeros[:n]:
                os.pwrite(fd, view, offset)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        _remove(tmp)
        raise
