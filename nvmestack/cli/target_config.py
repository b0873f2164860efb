"""``nvmestack target ...``: the configuration of the NVMe/TCP target, in the
spirit of nvmetcli, edited from the command line.

The file is the one ``nvmestack serve`` uses (see :mod:`nvmestack.cli.serve`
for its format): ``--config FILE``, else ``target.json`` in the data
directory (``--data-dir``, default ``~/.local/share/nvmestack``); a running
``serve`` applies every change within half a second.  A data directory
without the file starts from the embedded default (as ``serve`` does); a
``--config`` file that does not exist starts empty.

Every edit holds the file's lock (``fcntl``), checks the whole new
configuration, and replaces the file atomically; a bad change is refused
with one line and the file stays as it was.

::

    nvmestack target show [-o json]
    nvmestack target save FILE          nvmestack target restore FILE       nvmestack target clear
    nvmestack target subsystem add NQN [--serial S] [--model M] [--allow-any-host|--no-allow-any-host] [--host H]...
    nvmestack target subsystem set NQN [--serial S] [--model M] [--allow-any-host|--no-allow-any-host]
    nvmestack target subsystem remove NQN
    nvmestack target namespace add [--nqn NQN] [-n NSID] (--size SIZE | --path FILE [--existing]) [-b 512|4096]
                                   [--uuid UUID] [--nguid NGUID] [--eui64 EUI64]
    nvmestack target namespace remove [--nqn NQN] -n NSID
    nvmestack target port add -s PORT [-a ADDR] [-t tcp] [--portid N] [--nqn NQN]... [--discovery-only]
    nvmestack target port remove PORTID
    nvmestack target port link|unlink PORTID NQN
    nvmestack target host add|remove [--nqn NQN] HOSTNQN

``--nqn`` may be left out when the configuration has one subsystem.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import uuid as _uuid
from ipaddress import ip_address
from typing import Any, Callable

from ..spec.fabrics import DISCOVERY_NQN, nqn_problem
from ..target import persist
from ..target.namespace import DEFAULT_LBA_FORMATS
from .common import CliError, add_output_format, command, number, output_format, print_json
from .serve import (
    CONFIG_NAME,
    ServeError,
    _safe_name,
    check_config,
    config_location,
    config_lock,
    default_config,
    implicit_ports,
    changes_serve_cannot_take,
    read_config,
    serve_running,
    served_data_dir,
    subsystem_name_warning,
    write_config,
)

__all__ = ["load", "edit"]

_BLOCK_SIZES = {f.data_size: i for i, f in reversed(list(enumerate(DEFAULT_LBA_FORMATS))) if not f.metadata_size}


# ---------------------------------------------------------------------------
# the file


def _where(args: argparse.Namespace) -> tuple[str, str]:
    config, data_dir = getattr(args, "config", None), getattr(args, "data_dir", None)
    if config and not data_dir:  # the data directory serve uses with this file
        data_dir = served_data_dir(os.path.abspath(config))
    return config_location(config, data_dir)


def _initial(args: argparse.Namespace) -> dict:
    """What a missing file starts as: the embedded default in a data
    directory (what serve writes there), nothing for an explicit --config."""
    return {"subsystems": []} if getattr(args, "config", None) else default_config()


def load(args: argparse.Namespace) -> tuple[str, str, dict]:
    """(path, data directory, configuration) without changing anything."""
    path, data_dir = _where(args)
    if not os.path.lexists(path):
        return path, data_dir, _initial(args)
    try:
        return path, data_dir, read_config(path)
    except ServeError as exc:
        raise CliError(str(exc)) from None


def edit(args: argparse.Namespace, change: Callable[[dict, str, str], str]) -> None:
    """Change the configuration under its lock: ``change(config, path,
    data_dir)`` edits the dict in place and returns what it did (one line,
    printed); the result is checked, then written atomically."""
    path, data_dir = _where(args)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with config_lock(path):
            config = read_config(path) if os.path.lexists(path) else _initial(args)
            new = copy.deepcopy(config)
            message = change(new, path, data_dir)
            parsed = check_config(new, path, os.path.dirname(path), data_dir)
            running = serve_running(path)
            try:
                before = check_config(config, path, os.path.dirname(path), data_dir)
            except ServeError:
                before = None
            if running and before is not None:
                refused = changes_serve_cannot_take(before, parsed)
                if refused:
                    raise CliError(f"{path}: a running serve cannot change {'; '.join(refused)} (hosts have read "
                                   f"it): stop serve, change it, start serve again")
            if new != config or not os.path.lexists(path):
                write_config(path, new)
            if before is not None and not running:  # a running serve deletes them itself
                _delete_removed(before, parsed, data_dir)
    except ServeError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None
    if message:
        print(message)


def _delete_removed(before, after, data_dir: str) -> None:
    """Delete the directories of subsystems the change removed: a later
    subsystem of the same name starts afresh (``device.path`` files stay)."""
    keep = {_safe_name(n) for n in after.entries}
    for nqn in before.entries:
        name = _safe_name(nqn)
        if nqn not in after.entries and name not in keep:
            directory = os.path.join(data_dir, name)
            if os.path.isdir(directory) and not os.path.islink(directory):
                shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------
# helpers


def _subsystems(config: dict) -> list[dict]:
    subs = config.setdefault("subsystems", [])
    if not isinstance(subs, list):
        raise CliError("the configuration's \"subsystems\" is not a list")
    return subs


def _find(config: dict, nqn: str | None, path: str) -> dict:
    """The subsystem entry ``nqn`` (None: the only one)."""
    subs = [s for s in _subsystems(config) if isinstance(s, dict)]
    if nqn is None:
        if len(subs) == 1:
            return subs[0]
        if not subs:
            raise CliError(f"{path}: there is no subsystem (add one with 'nvmestack target subsystem add NQN')")
        names = ", ".join(str(s.get("nqn")) for s in subs)
        raise CliError(f"{path}: several subsystems ({names}): say which with --nqn")
    for s in subs:
        if s.get("nqn") == nqn:
            return s
    raise CliError(f"{path}: no subsystem {nqn}")


def _check_nqn(nqn: str, what: str = "subsystem NQN") -> None:
    if what == "subsystem NQN":
        try:
            warning = subsystem_name_warning(nqn)
        except ServeError as exc:
            raise CliError(str(exc)) from None
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        return
    problem = nqn_problem(nqn)
    if problem is not None:
        raise CliError(f"{nqn!r} is not a valid {what}: {problem}")


def _ports(config: dict) -> list[dict]:
    """The ``ports`` list, written out from the implicit default ports when
    the configuration has none (so adding one keeps those)."""
    ports = config.get("ports")
    if ports is None:
        ports = [
            {"portid": p.portid, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": p.traddr,
                                          "trsvcid": str(p.trsvcid)},
             **({} if p.subsystems is None else {"subsystems": list(p.subsystems)})}
            for p in implicit_ports()
        ]
        config["ports"] = ports
    if not isinstance(ports, list):
        raise CliError("the configuration's \"ports\" is not a list")
    return ports


def _port(config: dict, portid: int, path: str) -> dict:
    for i, p in enumerate(_ports(config)):
        if isinstance(p, dict) and _portid(p, i, config) == portid:
            return p
    raise CliError(f"{path}: no port {portid}")


def _portid(p: dict, index: int, config: dict) -> int | None:
    """The portid serve gives port ``p`` (configured, else assigned in order)."""
    ports = config.get("ports") or []
    try:
        configured = [int(q["portid"]) for q in ports if isinstance(q, dict) and q.get("portid") is not None]
    except (TypeError, ValueError):
        configured = []
    if p.get("portid") is not None:
        try:
            return int(p["portid"])
        except (TypeError, ValueError):
            return None
    next_id = max(configured, default=0)
    for q in ports[: index + 1]:
        if isinstance(q, dict) and q.get("portid") is None:
            next_id += 1
    return next_id


def _persisted_nsids(data_dir: str, nqn: str) -> set[int]:
    """Namespaces the subsystem's directory holds (hosts may have created
    some with Namespace Management while serve ran)."""
    try:
        with open(os.path.join(data_dir, _safe_name(nqn), persist.CONFIG_FILE)) as f:
            saved = json.load(f)
        return {int(ns["nsid"]) for ns in saved["subsystems"][0].get("namespaces") or []}
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return set()


def _entry_nsids(entry: dict) -> set[int]:
    out = set()
    for ns in entry.get("namespaces") or []:
        try:
            out.add(int(ns["nsid"]) if not isinstance(ns["nsid"], str) else int(ns["nsid"], 0))
        except (TypeError, ValueError, KeyError):
            pass
    return out


def _max_namespaces(entry: dict) -> int:
    try:
        value = (entry.get("attr") or {}).get("max_namespaces", 1024)
        return int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        return 1024


def _size_text(nbytes: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size and nbytes % (size // 1024 or 1) == 0:
            return f"{nbytes / size:.4g} {unit}"
    return f"{nbytes} bytes"


def _bool_attr(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value == "1"
    return bool(value)


def _exposed_anywhere(config: dict, nqn: str) -> bool:
    ports = config.get("ports")
    if ports is None:
        return True
    return any(isinstance(p, dict) and (p.get("subsystems") is None or nqn in p.get("subsystems", []))
               for p in ports)


# ---------------------------------------------------------------------------
# show, save, restore, clear


def _block_size(nsd: dict) -> int:
    fmt = nsd.get("format") or {}
    formats = fmt.get("formats")
    try:
        index = int(fmt.get("lba_format", 0))
        if formats:
            return int(formats[index][0])
        return DEFAULT_LBA_FORMATS[index].data_size
    except (TypeError, ValueError, IndexError):
        return 512


def _show_text(config: dict, path: str, data_dir: str, exists: bool) -> list[str]:
    lines = [f"o- / {path}{'' if exists else ' (not written yet)'}"]
    ports = config.get("ports")
    implicit = ports is None
    if implicit:
        ports = [{"portid": p.portid, "addr": {"trtype": "tcp", "traddr": p.traddr, "trsvcid": str(p.trsvcid)},
                  **({} if p.subsystems is None else {"subsystems": list(p.subsystems)})} for p in implicit_ports()]
    lines.append(f"  o- ports{' (default)' if implicit else ''}")
    for i, p in enumerate(ports):
        addr = p.get("addr") or {}
        subs = p.get("subsystems")
        what = "all subsystems" if subs is None else "discovery only" if not subs else ", ".join(subs)
        lines.append(f"  | o- {_portid(p, i, {'ports': ports})}: {addr.get('trtype', 'tcp')} "
                     f"{addr.get('traddr', '127.0.0.1')}:{addr.get('trsvcid', '4420')} [{what}]")
    lines.append("  o- subsystems")
    for s in config.get("subsystems") or []:
        attr = s.get("attr") or {}
        hosts = s.get("allowed_hosts") or []
        any_host = _bool_attr(attr.get("allow_any_host"), not hosts)
        shown = [f"allow_any_host={int(any_host)}"]
        for key in ("serial", "model", "firmware"):
            if attr.get(key) is not None:
                shown.append(f"{key}={attr[key]}")
        lines.append(f"    o- {s.get('nqn')} [{', '.join(shown)}]")
        lines.append(f"      o- allowed_hosts{'' if hosts else ' (none)'}")
        for h in hosts:
            lines.append(f"      | o- {h}")
        namespaces = s.get("namespaces") or []
        lines.append(f"      o- namespaces{'' if namespaces else ' (none)'}")
        for nsd in namespaces:
            bs = _block_size(nsd)
            try:
                nblocks = int(nsd.get("nblocks", 0))
            except (TypeError, ValueError):
                nblocks = 0
            device = nsd.get("device") or {}
            where = device.get("path") or os.path.join(data_dir, _safe_name(str(s.get("nqn"))),
                                                       f"ns{nsd.get('nsid')}.data")
            state = "" if str(nsd.get("enable", 1)) not in ("0", "False", "false") else ", disabled"
            lines.append(f"        o- {nsd.get('nsid')} [{_size_text(nblocks * bs)}, {nblocks} blocks of {bs} bytes, "
                         f"{where}{state}]")
    return lines


def _show(args: argparse.Namespace) -> int:
    fmt = output_format(args, binary=False)
    path, data_dir, config = load(args)
    try:
        check_config(config, path, os.path.dirname(path))
    except ServeError as exc:
        raise CliError(str(exc)) from None
    if fmt == "json":
        print_json(config)
    else:
        print("\n".join(_show_text(config, path, data_dir, os.path.lexists(path))))
    return 0


def _absolute_paths(config: dict, base: str) -> dict:
    """A copy whose relative namespace paths are made absolute against ``base``."""
    config = copy.deepcopy(config)
    for s in config.get("subsystems") or []:
        for nsd in (s.get("namespaces") or []) if isinstance(s, dict) else []:
            device = nsd.get("device") if isinstance(nsd, dict) else None
            if isinstance(device, dict):
                for key in ("path", "meta_path"):
                    value = device.get(key)
                    if isinstance(value, str) and value and not os.path.isabs(value):
                        device[key] = os.path.abspath(os.path.join(base, value))
    return config


def _save(args: argparse.Namespace) -> int:
    path, _, config = load(args)
    try:
        check_config(config, path, os.path.dirname(path))
    except ServeError as exc:
        raise CliError(str(exc)) from None
    config = _absolute_paths(config, os.path.dirname(path))
    if args.file == "-":
        sys.stdout.write(json.dumps(config, indent=2) + "\n")
        return 0
    try:
        write_config(args.file, config)
    except ServeError as exc:
        raise CliError(str(exc)) from None
    print(f"configuration saved to {args.file}", file=sys.stderr)
    return 0


def _restore(args: argparse.Namespace) -> int:
    source = os.path.abspath(args.file)
    try:
        restored = read_config(source)
        check_config(restored, source, os.path.dirname(source))
    except ServeError as exc:
        raise CliError(str(exc)) from None
    restored = _absolute_paths(restored, os.path.dirname(source))

    def change(config: dict, path: str, data_dir: str) -> str:
        config.clear()
        config.update(restored)
        return f"configuration restored from {args.file} into {path}"

    edit(args, change)
    return 0


def _clear(args: argparse.Namespace) -> int:
    def change(config: dict, path: str, data_dir: str) -> str:
        config.clear()
        config.update({"ports": [], "subsystems": []})
        return f"configuration cleared: {path}"

    edit(args, change)
    return 0


# ---------------------------------------------------------------------------
# subsystems


def _subsystem_attrs(args: argparse.Namespace, attr: dict) -> None:
    if args.serial is not None:
        if not args.serial or len(args.serial.encode()) > 20 or not args.serial.isascii():
            raise CliError(f"serial {args.serial!r}: 1 to 20 ASCII characters")
        attr["serial"] = args.serial
    if args.model is not None:
        if not args.model or len(args.model.encode()) > 40 or not args.model.isascii():
            raise CliError(f"model {args.model!r}: 1 to 40 ASCII characters")
        attr["model"] = args.model
    if args.allow_any_host is not None:
        attr["allow_any_host"] = args.allow_any_host


def _subsystem_add(args: argparse.Namespace) -> int:
    _check_nqn(args.nqn)
    for host in args.host or ():
        _check_nqn(host, "host NQN")

    def change(config: dict, path: str, data_dir: str) -> str:
        subs = _subsystems(config)
        if any(isinstance(s, dict) and s.get("nqn") == args.nqn for s in subs):
            raise CliError(f"{path}: subsystem {args.nqn} exists")
        hosts = list(dict.fromkeys(args.host or ()))
        attr: dict[str, Any] = {"allow_any_host": not hosts}
        _subsystem_attrs(args, attr)
        subs.append({"nqn": args.nqn, "allowed_hosts": hosts, "attr": attr, "namespaces": []})
        note = "" if _exposed_anywhere(config, args.nqn) else \
            " (no port exposes it yet: 'nvmestack target port link PORTID NQN')"
        return f"subsystem {args.nqn} added{note}"

    edit(args, change)
    return 0


def _subsystem_set(args: argparse.Namespace) -> int:
    if args.serial is None and args.model is None and args.allow_any_host is None:
        raise CliError("nothing to set: give --serial, --model, --allow-any-host or --no-allow-any-host")

    def change(config: dict, path: str, data_dir: str) -> str:
        entry = _find(config, args.nqn, path)
        attr = entry.setdefault("attr", {})
        _subsystem_attrs(args, attr)
        return f"subsystem {entry['nqn']}: " + ", ".join(
            f"{k}={attr[k] if not isinstance(attr[k], bool) else int(attr[k])}"
            for k in ("serial", "model", "allow_any_host") if k in attr)

    edit(args, change)
    return 0


def _subsystem_remove(args: argparse.Namespace) -> int:
    def change(config: dict, path: str, data_dir: str) -> str:
        entry = _find(config, args.nqn, path)
        _subsystems(config).remove(entry)
        for p in config.get("ports") or []:
            if isinstance(p, dict) and isinstance(p.get("subsystems"), list) and args.nqn in p["subsystems"]:
                p["subsystems"] = [n for n in p["subsystems"] if n != args.nqn]
        return f"subsystem {args.nqn} removed (its data in {os.path.join(data_dir, _safe_name(args.nqn))} is deleted)"

    edit(args, change)
    return 0


# ---------------------------------------------------------------------------
# namespaces


def _namespace_add(args: argparse.Namespace) -> int:
    bs = args.block_size
    if bs not in _BLOCK_SIZES:
        raise CliError(f"block size {bs}: supported are {', '.join(str(b) for b in sorted(_BLOCK_SIZES))}")
    file_path = os.path.abspath(args.path) if args.path else None
    size = args.size
    if file_path is not None and os.path.isdir(file_path):
        raise CliError(f"{args.path}: is a directory")
    exists = file_path is not None and os.path.lexists(file_path)
    if exists and not args.existing:
        raise CliError(f"{args.path} exists: give --existing to serve its contents as the namespace "
                       f"(hosts may overwrite them), or a --path that does not exist yet")
    if args.existing and not exists:
        raise CliError(f"{args.path or '--existing'}: no such file (--existing serves a file that exists)")
    if exists and not os.path.isfile(file_path):
        raise CliError(f"{args.path}: not a regular file")
    if size is None:
        if file_path is None:
            raise CliError("give the namespace's --size, or the --path of its file")
        if not os.path.exists(file_path):
            raise CliError(f"{args.path}: no such file (give --size to create it)")
        size = os.path.getsize(file_path)
    if size <= 0 or size % bs:
        raise CliError(f"size {size}: must be a positive multiple of the {bs}-byte block size")
    if file_path is not None and os.path.exists(file_path) and os.path.getsize(file_path) != size:
        raise CliError(f"{args.path} has {os.path.getsize(file_path)} bytes, not {size}")

    ids = _identifiers(args)

    def change(config: dict, path: str, data_dir: str) -> str:
        entry = _find(config, args.nqn, path)
        namespaces = entry.setdefault("namespaces", [])
        used = _entry_nsids(entry)
        persisted = _persisted_nsids(data_dir, entry["nqn"])
        limit = _max_namespaces(entry)
        nsid = args.namespace_id
        if nsid is None:
            nsid = next((n for n in range(1, limit + 1) if n not in used and n not in persisted), None)
            if nsid is None:
                raise CliError(f"{path}: {entry['nqn']} has no free namespace ID (max_namespaces {limit})")
        elif nsid in used:
            raise CliError(f"{path}: {entry['nqn']} has a namespace {nsid} already")
        elif nsid in persisted:
            raise CliError(f"{path}: {entry['nqn']} has a namespace {nsid} a host created (delete-ns it first)")
        elif not 1 <= nsid <= limit:
            raise CliError(f"namespace ID {nsid}: must be 1..{limit}")
        nsd: dict[str, Any] = {"nsid": nsid, "nblocks": size // bs}
        if bs != 512:
            nsd["format"] = {"lba_format": _BLOCK_SIZES[bs]}
        device: dict[str, Any] = {}
        if file_path is not None:
            device["path"] = file_path
        # Fixed identifiers (given, else random), so hosts see the same namespace after any restart.
        device["nguid"] = ids.get("nguid") or str(_uuid.UUID(bytes=os.urandom(16)))
        device["eui64"] = ids.get("eui64") or os.urandom(8).hex()
        device["uuid"] = ids.get("uuid") or str(_uuid.uuid4())
        _check_unique_ids(config, device, path)
        nsd["device"] = device
        namespaces.append(nsd)
        where = file_path or os.path.join(data_dir, _safe_name(entry["nqn"]), f"ns{nsid}.data")
        return f"namespace {nsid} added to {entry['nqn']}: {_size_text(size)} ({size // bs} blocks of {bs} bytes) " \
               f"in {where}"

    edit(args, change)
    return 0


def _identifiers(args: argparse.Namespace) -> dict[str, str]:
    """--uuid, --nguid, --eui64 checked and written as the configuration
    keeps them."""
    out = {}
    if args.uuid is not None:
        try:
            out["uuid"] = str(_uuid.UUID(args.uuid))
        except ValueError:
            raise CliError(f"--uuid {args.uuid!r}: not a UUID") from None
    for key, size in (("nguid", 16), ("eui64", 8)):
        value = getattr(args, key)
        if value is None:
            continue
        try:
            raw = bytes.fromhex(value.replace("-", "").replace(":", ""))
        except ValueError:
            raw = b""
        if len(raw) != size:
            raise CliError(f"--{key} {value!r}: {size} bytes in hexadecimal")
        out[key] = str(_uuid.UUID(bytes=raw)) if key == "nguid" else raw.hex()
    for key, value in out.items():
        if not value.replace("-", "").strip("0"):
            raise CliError(f"--{key}: all zeroes means no {key.upper()}; leave it out instead")
    return out


def _check_unique_ids(config: dict, device: dict, path: str) -> None:
    """No identifier of a new namespace may be another namespace's."""
    def norm(key, value):
        return str(value).replace("-", "").replace(":", "").lower()

    for s in _subsystems(config):
        for nsd in (s.get("namespaces") or []) if isinstance(s, dict) else []:
            other = nsd.get("device") if isinstance(nsd, dict) else None
            if not isinstance(other, dict) or other is device:
                continue
            for key in ("uuid", "nguid", "eui64"):
                if other.get(key) and norm(key, other[key]) == norm(key, device[key]):
                    raise CliError(f"{path}: {key.upper()} {device[key]} is namespace {nsd.get('nsid')} of "
                                   f"{s.get('nqn')}'s already")


def _namespace_remove(args: argparse.Namespace) -> int:
    def change(config: dict, path: str, data_dir: str) -> str:
        entry = _find(config, args.nqn, path)
        namespaces = entry.get("namespaces") or []
        for nsd in namespaces:
            if isinstance(nsd, dict) and args.namespace_id in _entry_nsids({"namespaces": [nsd]}):
                namespaces.remove(nsd)
                device = nsd.get("device") or {}
                fate = f"its file {device['path']} stays" if device.get("path") else "its data goes with it"
                return f"namespace {args.namespace_id} removed from {entry['nqn']} ({fate})"
        raise CliError(f"{path}: {entry['nqn']} has no namespace {args.namespace_id}")

    edit(args, change)
    return 0


# ---------------------------------------------------------------------------
# ports


def _port_add(args: argparse.Namespace) -> int:
    if args.transport.lower() != "tcp":
        raise CliError(f"transport {args.transport!r}: only tcp is served")
    try:
        ip_address(args.traddr)
    except ValueError:
        raise CliError(f"traddr {args.traddr!r} is not an IPv4 or IPv6 address") from None
    if not 0 <= args.trsvcid <= 65535:
        raise CliError(f"trsvcid {args.trsvcid} is not a TCP port")
    if args.discovery_only and args.nqn:
        raise CliError("--discovery-only exposes no subsystem: leave out --nqn")

    def change(config: dict, path: str, data_dir: str) -> str:
        ports = _ports(config)
        ids = [_portid(p, i, config) for i, p in enumerate(ports) if isinstance(p, dict)]
        portid = args.portid if args.portid is not None else max([i for i in ids if i], default=0) + 1
        if portid in ids:
            raise CliError(f"{path}: port {portid} exists")
        known = {s.get("nqn") for s in _subsystems(config) if isinstance(s, dict)}
        for nqn in args.nqn or ():
            if nqn not in known:
                raise CliError(f"{path}: no subsystem {nqn}")
        adrfam = "ipv6" if ip_address(args.traddr).version == 6 else "ipv4"
        port: dict[str, Any] = {"portid": portid, "addr": {"trtype": "tcp", "adrfam": adrfam,
                                                           "traddr": args.traddr, "trsvcid": str(args.trsvcid)}}
        if args.discovery_only:
            port["subsystems"] = []
        elif args.nqn:
            port["subsystems"] = list(dict.fromkeys(args.nqn))
        ports.append(port)
        what = "discovery only" if args.discovery_only else ", ".join(port.get("subsystems", ["all subsystems"]))
        return f"port {portid} added: tcp {args.traddr}:{args.trsvcid} ({what})"

    edit(args, change)
    return 0


def _port_remove(args: argparse.Namespace) -> int:
    def change(config: dict, path: str, data_dir: str) -> str:
        port = _port(config, args.portid, path)
        _ports(config).remove(port)
        return f"port {args.portid} removed"

    edit(args, change)
    return 0


def _port_link(args: argparse.Namespace, link: bool) -> int:
    def change(config: dict, path: str, data_dir: str) -> str:
        port = _port(config, args.portid, path)
        known = [s.get("nqn") for s in _subsystems(config) if isinstance(s, dict)]
        if args.nqn not in known:
            raise CliError(f"{path}: no subsystem {args.nqn}")
        subs = port.get("subsystems")
        if link:
            if subs is None:
                return f"port {args.portid} exposes every subsystem already"
            if args.nqn in subs:
                return f"port {args.portid} exposes {args.nqn} already"
            port["subsystems"] = list(subs) + [args.nqn]
            return f"port {args.portid} exposes {args.nqn}"
        if subs is None:
            subs = list(known)
        if args.nqn not in subs:
            raise CliError(f"{path}: port {args.portid} does not expose {args.nqn}")
        port["subsystems"] = [n for n in subs if n != args.nqn]
        return f"port {args.portid} no longer exposes {args.nqn}"

    edit(args, change)
    return 0


# ---------------------------------------------------------------------------
# hosts


def _host(args: argparse.Namespace, add: bool) -> int:
    _check_nqn(args.hostnqn, "host NQN")

    def change(config: dict, path: str, data_dir: str) -> str:
        entry = _find(config, args.nqn, path)
        hosts = entry.setdefault("allowed_hosts", [])
        attr = entry.setdefault("attr", {})
        any_host = _bool_attr(attr.get("allow_any_host"), not hosts)
        if add:
            if args.hostnqn in hosts and not any_host:
                return f"{args.hostnqn} may use {entry['nqn']} already"
            if args.hostnqn not in hosts:
                hosts.append(args.hostnqn)
            note = ""
            if any_host:
                note = " (allow_any_host is now off: only the allowed hosts may connect)"
            attr["allow_any_host"] = False
            return f"host {args.hostnqn} may use {entry['nqn']}{note}"
        if args.hostnqn not in hosts:
            raise CliError(f"{path}: {args.hostnqn} is not an allowed host of {entry['nqn']}")
        hosts.remove(args.hostnqn)
        attr["allow_any_host"] = any_host
        note = "" if hosts or any_host else " (no host may connect now)"
        return f"host {args.hostnqn} may no longer use {entry['nqn']}{note}"

    edit(args, change)
    return 0


# ---------------------------------------------------------------------------
# the parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help=f"the configuration file (default DATA-DIR/{CONFIG_NAME}, the one 'nvmestack serve' uses)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="serve's data directory (default $XDG_DATA_HOME/nvmestack, i.e. ~/.local/share/nvmestack)")


def _nqn_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nqn", metavar="NQN", default=None,
                   help="the subsystem (may be left out when there is only one)")


def _attr_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--serial", metavar="SN", help="serial number (Identify Controller SN, up to 20 characters)")
    p.add_argument("--model", metavar="MN", help="model number (Identify Controller MN, up to 40 characters)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--allow-any-host", dest="allow_any_host", action="store_const", const=True, default=None,
                       help="any host may connect")
    group.add_argument("--no-allow-any-host", dest="allow_any_host", action="store_const", const=False,
                       help="only the allowed hosts may connect")


def _help_of(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 1

    return show


def _group(sub, name: str, help_text: str):
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(func=_help_of(p))
    return p, p.add_subparsers(dest=f"target_{name}", metavar="ACTION")


@command("target", "configure the NVMe/TCP target (subsystems, namespaces, ports, hosts) that 'serve' runs",
         description="Edit the configuration 'nvmestack serve' uses (DATA-DIR/target.json or --config FILE), in "
         "the spirit of nvmetcli; a running serve applies each change within half a second (hosts see added "
         "and removed namespaces through asynchronous events).  Every change is checked first: a bad one is "
         "refused and the file stays as it was.")
def _target_parser(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=_help_of(p))
    sub = p.add_subparsers(dest="target_command", metavar="OBJECT")

    q = sub.add_parser("show", help="print the configuration",
                       description="Print the configuration (-o json: the file).")
    add_output_format(q, binary=False)
    _common(q)
    q.set_defaults(func=_show)

    q = sub.add_parser("save", help="save the whole configuration to a JSON file",
                       description="Save the whole configuration as JSON to FILE ('-': standard output); namespace "
                       "paths are made absolute so the file can be restored anywhere.")
    q.add_argument("file", metavar="FILE")
    _common(q)
    q.set_defaults(func=_save)

    q = sub.add_parser("restore", help="replace the configuration with a saved one",
                       description="Replace the whole configuration with FILE (ours or nvmetcli's JSON), after "
                       "checking it.")
    q.add_argument("file", metavar="FILE")
    _common(q)
    q.set_defaults(func=_restore)

    q = sub.add_parser("clear", help="remove every subsystem and port", description="Remove every subsystem and port.")
    _common(q)
    q.set_defaults(func=_clear)

    _, actions = _group(sub, "subsystem", "add, change or remove NVM subsystems")
    q = actions.add_parser("add", help="add a subsystem", description="Add an NVM subsystem (no namespaces yet). "
                           "Any host may connect unless --no-allow-any-host or --host is given.")
    q.add_argument("nqn", metavar="NQN")
    _attr_options(q)
    q.add_argument("--host", metavar="HOSTNQN", action="append", help="an allowed host (repeatable)")
    _common(q)
    q.set_defaults(func=_subsystem_add)
    q = actions.add_parser("set", help="change a subsystem's attributes",
                           description="Change attributes (serial and model take effect when serve restarts).")
    q.add_argument("nqn", metavar="NQN")
    _attr_options(q)
    _common(q)
    q.set_defaults(func=_subsystem_set)
    q = actions.add_parser("remove", help="remove a subsystem",
                           description="Remove a subsystem (hosts connected to it are disconnected; its data "
                           "directory is deleted: its own namespace files and state; a --path file stays).")
    q.add_argument("nqn", metavar="NQN")
    _common(q)
    q.set_defaults(func=_subsystem_remove)

    _, actions = _group(sub, "namespace", "add or remove namespaces")
    q = actions.add_parser("add", help="add a namespace",
                           description="Add a namespace: a sparse file of --size in the subsystem's directory, or "
                           "the file --path (created at --size; a file that exists is taken over only with "
                           "--existing).  A file that is already another namespace's is refused.  Connected hosts "
                           "get a Namespace Attribute Changed event.")
    _nqn_option(q)
    q.add_argument("-n", "--namespace-id", metavar="NSID", type=number, default=None,
                   help="namespace ID (default: the lowest free one)")
    q.add_argument("--size", metavar="SIZE", type=number, default=None,
                   help="size in bytes (K, M, G, T suffixes: powers of 1024)")
    q.add_argument("--path", metavar="FILE", default=None,
                   help="the file holding the namespace's blocks (created at --size; one that exists needs "
                        "--existing)")
    q.add_argument("--existing", action="store_true",
                   help="--path names a file that exists: serve its contents as the namespace (hosts may "
                        "overwrite them)")
    q.add_argument("-b", "--block-size", metavar="BS", type=number, default=512, help="logical block size: 512 or 4096")
    q.add_argument("--uuid", metavar="UUID", default=None, help="the namespace's UUID (default: a random one)")
    q.add_argument("--nguid", metavar="NGUID", default=None,
                   help="the namespace's NGUID, 16 bytes in hexadecimal (default: random)")
    q.add_argument("--eui64", metavar="EUI64", default=None,
                   help="the namespace's IEEE EUI-64, 8 bytes in hexadecimal (default: random)")
    _common(q)
    q.set_defaults(func=_namespace_add)
    q = actions.add_parser("remove", help="remove a namespace",
                           description="Remove a namespace (its data is flushed; a file of its own in the "
                           "subsystem's directory is deleted with it, a --path file stays).")
    _nqn_option(q)
    q.add_argument("-n", "--namespace-id", metavar="NSID", type=number, required=True, help="namespace ID")
    _common(q)
    q.set_defaults(func=_namespace_remove)

    _, actions = _group(sub, "port", "add or remove ports, choose what they expose")
    q = actions.add_parser("add", help="add a port",
                           description="Add a port (every port serves discovery too).  It exposes every subsystem "
                           "unless --nqn (repeatable) or --discovery-only says otherwise.")
    q.add_argument("-t", "--transport", metavar="TRTYPE", default="tcp", help="transport type (tcp)")
    q.add_argument("-a", "--traddr", metavar="ADDR", default="127.0.0.1", help="address (default 127.0.0.1)")
    q.add_argument("-s", "--trsvcid", metavar="PORT", type=number, required=True, help="TCP port (0: any free one)")
    q.add_argument("--portid", metavar="N", type=number, default=None, help="port ID (default: the next free one)")
    q.add_argument("--nqn", metavar="NQN", action="append", help="a subsystem this port exposes (repeatable)")
    q.add_argument("--discovery-only", action="store_true", help="expose no subsystem, serve discovery only")
    _common(q)
    q.set_defaults(func=_port_add)
    q = actions.add_parser("remove", help="remove a port",
                           description="Remove a port (the connections through it close).")
    q.add_argument("portid", metavar="PORTID", type=number)
    _common(q)
    q.set_defaults(func=_port_remove)
    for name, link, text in (("link", True, "expose a subsystem on a port"),
                             ("unlink", False, "stop exposing a subsystem on a port")):
        q = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        q.add_argument("portid", metavar="PORTID", type=number)
        q.add_argument("nqn", metavar="NQN")
        _common(q)
        q.set_defaults(func=lambda a, link=link: _port_link(a, link))

    _, actions = _group(sub, "host", "allow or disallow hosts")
    for name, add, text in (("add", True, "allow a host to use a subsystem (allow_any_host goes off)"),
                            ("remove", False, "take a host off a subsystem's allowed hosts")):
        q = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        _nqn_option(q)
        q.add_argument("hostnqn", metavar="HOSTNQN")
        _common(q)
        q.set_defaults(func=lambda a, add=add: _host(a, add))
