"""Fabrics and listing commands, as nvme-cli 2.3: discover, connect,
connect-all, disconnect, disconnect-all, gen-hostnqn, show-hostnqn, list,
list-subsys, list-ns, list-ctrl.

``connect`` brings the controller up once (Fabrics Connect, initialisation,
one I/O queue) to check it, then registers it as ``nvmeN`` (see
:mod:`nvmestack.cli.devices`); like nvme-cli it prints nothing unless ``-o
json`` (``{"device":"nvme0"}``).  ``list`` and ``list-subsys`` open every
registered controller to read what the kernel would have cached (identify
data, namespaces, state).

The layouts follow what Debian's nvme-cli 2.3 printed through the kernel for
our target (``tests/cli/data/nvme-cli-2.3/fabrics``, recorded by
``tests/cli/data/make_golden_fabrics.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..spec.fabrics import DISCOVERY_NQN, nqn_problem, nqn_unusable
from ..spec.log import (
    DISCOVERY_LOG_ENTRY_SIZE,
    DISCOVERY_LOG_HEADER_SIZE,
    AddressFamily,
    DiscoveryLogEntry,
    SubsystemType,
    TransportType,
)
from ..spec.tcp import DISCOVERY_PORT, IO_PORT
from .common import CliError, EXIT_FAIL, command, number, output_format, write_binary
from .devices import (
    DeviceSpec,
    Registry,
    generate_hostnqn,
    host_identity,
    open_spec,
    parse_device,
    registered,
)

__all__ = ["discovery_text", "discovery_json", "jsonc_dumps", "list_text", "list_json"]


# ---------------------------------------------------------------------------
# json-c's pretty printing (an empty array is "[\n<indent>]")


def jsonc_dumps(obj: Any) -> str:
    def enc(value: Any, level: int) -> str:
        pad = "  " * (level + 1)
        end = "  " * level
        if isinstance(value, dict):
            if not value:
                return "{\n" + end + "}"
            items = [f"{pad}{json.dumps(k, ensure_ascii=False)}:{enc(v, level + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + end + "}"
        if isinstance(value, list):
            if not value:
                return "[\n" + end + "]"
            return "[\n" + ",\n".join(pad + enc(v, level + 1) for v in value) + "\n" + end + "]"
        return json.dumps(value, ensure_ascii=False)

    return enc(obj, 0) + "\n"


def _print_json(obj: Any) -> None:
    sys.stdout.write(jsonc_dumps(obj))
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# discovery log text (libnvme 1.3's strings)

_TRTYPE = {TransportType.RDMA: "rdma", TransportType.FC: "fc", TransportType.TCP: "tcp", TransportType.LOOP: "loop"}
_ADRFAM = {AddressFamily.PCI: "pci", AddressFamily.IPV4: "ipv4", AddressFamily.IPV6: "ipv6",
           AddressFamily.IB: "infiniband", AddressFamily.FC: "fibre-channel", AddressFamily.LOOP: "intra-host"}
_SUBTYPE = {SubsystemType.REFERRAL: "discovery subsystem referral", SubsystemType.NVM: "nvme subsystem",
            SubsystemType.CURRENT_DISCOVERY: "current discovery subsystem"}
_TREQ = {0: "not specified", 1: "required", 2: "not required", 4: "not specified, sq flow control disable supported"}
_EFLAGS = {0: "none", 1: "duplicate discovery information", 2: "explicit discovery connections",
           3: "explicit discovery connections, duplicate discovery information"}
_SECTYPE = {0: "none", 1: "tls", 2: "tls13"}


def _s(table: dict, value: int) -> str:
    return table.get(value, "unrecognized")


def _entry_fields(e: DiscoveryLogEntry) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [
        ("trtype", _s(_TRTYPE, e.trtype)),
        ("adrfam", _s(_ADRFAM, e.adrfam)),
        ("subtype", _s(_SUBTYPE, e.subtype)),
        ("treq", _s(_TREQ, e.treq)),
        ("portid", e.portid),
        ("trsvcid", e.trsvcid.strip()),
        ("subnqn", e.subnqn),
        ("traddr", e.traddr.strip()),
        ("eflags", _s(_EFLAGS, e.eflags)),
    ]
    if e.trtype == TransportType.TCP:
        fields.append(("sectype", _s(_SECTYPE, e.tcp_sectype)))
    return fields


def discovery_text(genctr: int, entries: list[DiscoveryLogEntry]) -> str:
    lines = ["", f"Discovery Log Number of Records {len(entries)}, Generation counter {genctr}"]
    for i, e in enumerate(entries):
        lines.append(f"=====Discovery Log Entry {i}======")
        for key, value in _entry_fields(e):
            lines.append(f"{key + ':':<8} {value}")
    return "\n".join(lines) + "\n"


def discovery_json(genctr: int, entries: list[DiscoveryLogEntry]) -> dict:
    return {"genctr": genctr, "records": [dict(_entry_fields(e)) for e in entries]}


def _discovery_raw(genctr: int, entries: list[DiscoveryLogEntry]) -> bytes:
    from ..spec.log import DiscoveryLogHeader

    header = DiscoveryLogHeader()
    header.genctr = genctr
    header.numrec = len(entries)
    out = bytearray(bytes(header))
    for e in entries:
        out += bytes(e)
    assert len(out) == DISCOVERY_LOG_HEADER_SIZE + len(entries) * DISCOVERY_LOG_ENTRY_SIZE
    return bytes(out)


# ---------------------------------------------------------------------------
# connect options shared by discover / connect / connect-all


def _fabrics_options(p: argparse.ArgumentParser, *, discover: bool) -> None:
    if discover:
        p.add_argument("-d", "--device", help="use existing discovery controller device")
    p.add_argument("-t", "--transport", help="transport type (tcp)")
    p.add_argument("-a", "--traddr", help="transport address")
    p.add_argument("-s", "--trsvcid", help="transport service id (e.g. IP port)")
    p.add_argument("-w", "--host-traddr", help="host traddr (source address; not supported, must be empty)")
    p.add_argument("-f", "--host-iface", help="host interface (not supported)")
    p.add_argument("-q", "--hostnqn", help="user-defined hostnqn")
    p.add_argument("-I", "--hostid", help="user-defined hostid (if default not used)")
    p.add_argument("-n", "--nqn", help="subsystem nqn")
    if discover:  # nvme-cli 2.3 gives -S to both --dhchap-secret and --quiet of discover; -S is --quiet here
        p.add_argument("--dhchap-secret", help="DH-HMAC-CHAP secret (authentication is not supported)")
    else:
        p.add_argument("-S", "--dhchap-secret", help="DH-HMAC-CHAP secret (authentication is not supported)")
    p.add_argument("-i", "--nr-io-queues", type=int, help="number of io queues to use (default is core count)")
    p.add_argument("-W", "--nr-write-queues", type=int, help="number of write queues to use (default 0)")
    p.add_argument("-P", "--nr-poll-queues", type=int, help="number of poll queues to use (default 0)")
    p.add_argument("-Q", "--queue-size", type=int, help="number of io queue elements to use (default 128)")
    p.add_argument("-k", "--keep-alive-tmo", type=int, help="keep alive timeout period in seconds")
    p.add_argument("-c", "--reconnect-delay", type=int, help="reconnect timeout period in seconds")
    p.add_argument("-l", "--ctrl-loss-tmo", type=int, help="controller loss timeout period in seconds")
    p.add_argument("-T", "--tos", type=int, help="type of service (not supported)")
    p.add_argument("-D", "--duplicate-connect", action="store_true",
                   help="allow duplicate connections between same transport host and subsystem port")
    if not discover:
        p.add_argument("-d", "--disable-sqflow", action="store_true",
                       help="disable controller sq flow control (default false)")
    else:
        p.add_argument("--disable-sqflow", action="store_true", help="disable controller sq flow control")
    p.add_argument("-g", "--hdr-digest", action="store_true", help="enable transport protocol header digest")
    p.add_argument("-G", "--data-digest", action="store_true", help="enable transport protocol data digest")
    p.add_argument("-J", "--config", help="JSON configuration file (only 'none' is accepted)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="increase logging verbosity")
    p.add_argument("-o", "--output-format", default="normal", metavar="FMT",
                   help="output format: normal|json" + ("|binary" if discover else ""))
    if discover:
        p.add_argument("-r", "--raw", metavar="FILE", help="save raw output to file")
        p.add_argument("-p", "--persistent", action="store_true", help="persistent discovery connection")
        p.add_argument("-S", "--quiet", action="store_true", help="suppress already connected errors")
        p.add_argument("--force", action="store_true", help="force persistent discovery controller creation")


def _check_unsupported(args: argparse.Namespace) -> None:
    if args.transport is None:
        raise CliError("required argument [--transport | -t] not specified")
    if args.transport != "tcp":
        if args.transport in ("pcie", "pci"):
            raise CliError("transport pcie is not a fabric: attach a drive with 'nvmestack drive attach DIR'")
        raise CliError(f"transport {args.transport}: not supported (only tcp)")
    if args.traddr is None:
        raise CliError("required argument [--traddr | -a] not specified")
    if args.host_traddr or args.host_iface:
        raise CliError("--host-traddr/--host-iface: choosing the source address or interface is not supported")
    if args.dhchap_secret or getattr(args, "dhchap_ctrl_secret", None):
        raise CliError("DH-HMAC-CHAP authentication is not supported")
    if args.tos not in (None, -1):
        raise CliError("--tos: not supported")
    if args.config not in (None, "none"):
        raise CliError("--config: JSON configuration files are not supported (use 'none')")
    if args.nr_write_queues or args.nr_poll_queues:
        raise CliError("--nr-write-queues/--nr-poll-queues: separate write and poll queues are not supported")
    if args.hostnqn is not None and nqn_problem(args.hostnqn):
        raise CliError(f"invalid hostnqn {args.hostnqn!r}: {nqn_problem(args.hostnqn)}")


def _entry(args: argparse.Namespace, subnqn: str, traddr: str, trsvcid: str) -> dict:
    entry: dict[str, Any] = {"transport": "tcp", "traddr": traddr, "trsvcid": str(trsvcid), "subnqn": subnqn}
    hostnqn, hostid = host_identity(args.hostnqn, args.hostid)
    entry["hostnqn"], entry["hostid"] = hostnqn, hostid
    if args.hdr_digest:
        entry["hdr_digest"] = True
    if args.data_digest:
        entry["data_digest"] = True
    if args.disable_sqflow:
        entry["disable_sqflow"] = True
    if args.nr_io_queues is not None:
        if args.nr_io_queues < 1:
            raise CliError("--nr-io-queues: at least 1")
        entry["nr_io_queues"] = args.nr_io_queues
    if args.queue_size is not None:
        if not 16 <= args.queue_size <= 1024:
            raise CliError(f"--queue-size {args.queue_size}: expected 16 to 1024")
        entry["queue_size"] = args.queue_size
    if args.keep_alive_tmo is not None:
        entry["kato"] = args.keep_alive_tmo
    if args.reconnect_delay is not None:
        entry["reconnect_delay"] = args.reconnect_delay
    if args.ctrl_loss_tmo is not None:
        entry["ctrl_loss_tmo"] = args.ctrl_loss_tmo
    return entry


def _same_path(a: dict, b: dict) -> bool:
    keys = ("transport", "traddr", "trsvcid", "subnqn", "hostnqn")
    return all(a.get(k) == b.get(k) for k in keys)


def _probe(entry: dict, io_queues: int) -> None:
    """Bring the controller up once and shut it down (the kernel's connect)."""
    dev = open_spec(DeviceSpec(entry["subnqn"], entry), io_queues=io_queues)
    dev.close()


def _connect_entry(entry: dict, duplicate: bool, io_queues: int = 1) -> str:
    with Registry(write=False) as reg:  # a failed connect leaves no registry behind
        for name in reg.names():
            if _same_path(reg.entries[name], entry) and not duplicate:
                raise CliError(f"already connected to {entry['subnqn']} at {entry['traddr']}:{entry['trsvcid']} "
                               f"as {name} (use --duplicate-connect for another)")
    _probe(entry, io_queues)
    with Registry() as reg:
        return reg.add(entry)


# ---------------------------------------------------------------------------
# discover / connect / connect-all


def _discovery_entry(args: argparse.Namespace) -> dict:
    if args.device:
        spec = parse_device(args.device)
        if spec.entry.get("subnqn") != DISCOVERY_NQN:
            raise CliError(f"{args.device}: not a discovery controller")
        return dict(spec.entry)
    _check_unsupported(args)
    nqn = args.nqn or DISCOVERY_NQN
    return _entry(args, nqn, args.traddr, args.trsvcid or str(DISCOVERY_PORT))


def _read_discovery(entry: dict) -> tuple[int, list[DiscoveryLogEntry]]:
    from ..host.tcp import get_discovery_log

    dev = open_spec(DeviceSpec(entry["subnqn"], entry), io_queues=0, aen_commands=0)
    try:
        log = get_discovery_log(dev.ctrl)
    finally:
        dev.close()
    return log.genctr, log.entries


def _discover(args: argparse.Namespace) -> int:
    fmt = output_format(args)
    entry = _discovery_entry(args)
    genctr, entries = _read_discovery(entry)
    if args.raw:
        with open(args.raw, "wb") as f:
            f.write(_discovery_raw(genctr, entries))
        print(f"Discovery log is saved to {args.raw}")
    elif fmt == "binary":
        write_binary(_discovery_raw(genctr, entries))
    elif fmt == "json":
        _print_json(discovery_json(genctr, entries))
    else:
        sys.stdout.write(discovery_text(genctr, entries))
    if args.persistent and not args.device:
        with Registry() as reg:
            if not any(_same_path(reg.entries[n], entry) for n in reg.names()) or args.force:
                reg.add(entry)
    return 0


def _connect(args: argparse.Namespace) -> int:
    fmt = output_format(args, binary=False)
    _check_unsupported(args)
    if not args.nqn:
        raise CliError("required argument [--nqn | -n] not specified")
    problem = nqn_unusable(args.nqn)  # as nvme-cli: any name a target may serve
    if problem:
        raise CliError(f"invalid subsystem NQN {args.nqn!r}: {problem}")
    default_port = DISCOVERY_PORT if args.nqn == DISCOVERY_NQN else IO_PORT
    entry = _entry(args, args.nqn, args.traddr, args.trsvcid or str(default_port))
    name = _connect_entry(entry, args.duplicate_connect, 0 if args.nqn == DISCOVERY_NQN else 1)
    if fmt == "json":
        _print_json({"device": name})
    return 0


def _connect_all(args: argparse.Namespace) -> int:
    fmt = output_format(args)
    entry = _discovery_entry(args)
    genctr, entries = _read_discovery(entry)
    if args.raw:
        with open(args.raw, "wb") as f:
            f.write(_discovery_raw(genctr, entries))
    failed = 0
    connected = []
    for e in entries:
        if e.trtype != TransportType.TCP or e.subtype != SubsystemType.NVM:
            continue
        if e.adrfam not in (AddressFamily.IPV4, AddressFamily.IPV6):
            continue
        new = dict(entry)
        new.update(traddr=e.traddr.strip(), trsvcid=e.trsvcid.strip(), subnqn=e.subnqn)
        try:
            connected.append(_connect_entry(new, args.duplicate_connect))
        except CliError as exc:
            if "already connected" in str(exc):
                if not args.quiet:
                    print(str(exc), file=sys.stderr)
                continue
            print(str(exc), file=sys.stderr)
            failed += 1
    del fmt, connected  # nvme-cli 2.3 prints nothing on success, in either format
    return EXIT_FAIL if failed else 0


# ---------------------------------------------------------------------------
# disconnect


def _disconnect(args: argparse.Namespace) -> int:
    if not args.nqn and not args.device:
        raise CliError("need a subsystem NQN (-n) or a device (-d)")
    if args.nqn and args.device:
        raise CliError("give either a subsystem NQN (-n) or a device (-d), not both")
    with Registry() as reg:
        if args.nqn:
            lines = []
            for nqn in [n for n in args.nqn.split(",") if n]:
                names = [n for n in reg.names() if reg.entries[n].get("transport") == "tcp"
                         and reg.entries[n].get("subnqn") == nqn]
                for name in names:
                    del reg.entries[name]
                lines.append(f"NQN:{nqn} disconnected {len(names)} controller(s)")
            print("\n".join(lines))
            return 0
        for dev in [d for d in args.device.split(",") if d]:
            name = os.path.basename(dev)
            if name.startswith("nvme") and "n" in name[4:]:
                name = "nvme" + name[4:].split("n", 1)[0]
            entry = reg.entries.get(name)
            if entry is None:
                raise CliError(f"Did not find device {dev}")
            if entry.get("transport") != "tcp":
                raise CliError(f"{dev}: not a fabrics controller (use 'nvmestack drive detach')")
            del reg.entries[name]
    return 0


def _disconnect_all(args: argparse.Namespace) -> int:
    if args.transport not in (None, "tcp", "pcie"):
        raise CliError(f"transport {args.transport}: not supported")
    with Registry() as reg:
        for name in reg.names():
            entry = reg.entries[name]
            if entry.get("transport") == "pcie":
                continue  # disconnect-all leaves PCIe devices alone, as nvme-cli
            if args.transport in (None, entry.get("transport")):
                del reg.entries[name]
    return 0


# ---------------------------------------------------------------------------
# host NQN


def _gen_hostnqn(args: argparse.Namespace) -> int:
    print(generate_hostnqn())
    return 0


def _show_hostnqn(args: argparse.Namespace) -> int:
    hostnqn, _ = host_identity()
    print(hostnqn)
    return 0


# ---------------------------------------------------------------------------
# list / list-subsys


def _si(value: float) -> tuple[float, str]:
    for magnitude, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1e0, ""),
                              (1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f")):
        if value >= magnitude:
            return value / magnitude, suffix
    return value, ""


def _binary(value: int) -> tuple[int, str]:
    for shift, suffix in ((50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")):
        if abs(value) >= 1 << shift:
            return (value + (1 << (shift - 1))) >> shift, suffix
    return value, ""


class _Ns:
    """What list needs of one namespace."""

    def __init__(self, ctrl_name: str, nsid: int, identify: Any):
        self.ctrl_name = ctrl_name
        self.nsid = nsid
        self.nsze = identify.nsze
        self.nuse = identify.nuse
        fmt = (identify.flbas & 0xF) | ((identify.flbas >> 1) & 0x30)
        lbaf = identify.lbaf[fmt]
        self.lba = 1 << lbaf.lbads
        self.ms = lbaf.ms

    @property
    def path(self) -> str:
        return f"/dev/{self.ctrl_name}n{self.nsid}"

    @property
    def generic(self) -> str:
        return f"/dev/ng{self.ctrl_name[4:]}n{self.nsid}"

    def usage(self) -> str:
        nuse, us = _si(float(self.nuse * self.lba))
        nsze, ss = _si(float(self.nsze * self.lba))
        return f"{nuse:6.2f} {us:>2}B / {nsze:6.2f} {ss:>2}B"

    def format(self) -> str:
        lba, suffix = _binary(self.lba)
        return f"{float(lba):3.0f} {suffix:>2}B + {self.ms:2d} B"


class _Ctrl:
    """One registered controller as list sees it."""

    def __init__(self, name: str, entry: dict):
        self.name = name
        self.entry = entry
        self.state = "dead"
        self.error: str | None = None
        self.sn = self.mn = self.fr = ""
        self.namespaces: list[_Ns] = []
        self.address = ""
        self.subsys = ""

    @property
    def transport(self) -> str:
        return self.entry.get("transport", "?")

    @property
    def nqn(self) -> str:
        return self.entry.get("subnqn") or self._subnqn or ""

    _subnqn: str | None = None

    def load(self) -> None:
        spec = DeviceSpec(self.name, self.entry, None, True, f"/dev/{self.name}")
        discovery = self.entry.get("subnqn") == DISCOVERY_NQN
        try:
            dev = open_spec(spec, io_queues=0, aen_commands=0)
        except CliError as exc:
            self.error = str(exc)
            self._address(None)
            return
        try:
            ctrl = dev.ctrl
            idc = ctrl.identify
            self.sn, self.mn, self.fr = idc.sn.rstrip(), idc.mn.rstrip(), idc.fr.rstrip()
            self._subnqn = idc.subnqn.rstrip("\0 ") or None
            if not discovery:
                for nsid in sorted(ctrl.namespaces):
                    self.namespaces.append(_Ns(self.name, nsid, ctrl.namespaces[nsid].identify))
            self.state = "live"
            self._address(ctrl)
        finally:
            dev.close()

    def _address(self, ctrl: Any) -> None:
        if self.transport == "pcie":
            self.address = self.entry.get("drive", "")
            return
        addr = f"traddr={self.entry.get('traddr')},trsvcid={self.entry.get('trsvcid')}"
        src = None
        if ctrl is not None:
            src = getattr(ctrl.transport, "src_addr", None)
            if src is None:
                for q in getattr(ctrl.transport, "queues", {}).values():
                    try:
                        src = q.sock.getsockname()[0]
                        break
                    except (OSError, AttributeError):
                        continue
        if src:
            addr += f",src_addr={src}"
        self.address = addr


def _load_all() -> list[_Ctrl]:
    ctrls = [_Ctrl(name, entry) for name, entry in registered().items()]
    for c in ctrls:
        c.load()
    subsystems: dict[str, str] = {}
    for c in ctrls:
        if c.nqn not in subsystems:
            subsystems[c.nqn] = f"nvme-subsys{len(subsystems)}"
        c.subsys = subsystems[c.nqn]
    return ctrls


def list_text(ctrls: list[_Ctrl]) -> str:
    widths = (21, 21, 20, 40, 9, 26, 16, 8)
    names = ("Node", "Generic", "SN", "Model", "Namespace", "Usage", "Format", "FW Rev")
    lines = [" ".join(f"{n:<{w}}" for n, w in zip(names, widths)), " ".join("-" * w for w in widths)]
    for c in ctrls:
        for ns in c.namespaces:
            cols = (ns.path, ns.generic, f"{c.sn:<20.20}", f"{c.mn:<40.40}", f"{ns.nsid:<9d}", f"{ns.usage():<26}",
                    f"{ns.format():<16}", f"{c.fr:<8.8}")
            lines.append(" ".join(f"{v:<{w}}" for v, w in zip(cols, widths)))
    return "\n".join(lines) + "\n"


def list_json(ctrls: list[_Ctrl]) -> dict:
    devices = []
    for c in ctrls:
        for ns in c.namespaces:
            devices.append({
                "NameSpace": ns.nsid,
                "DevicePath": ns.path,
                "Firmware": c.fr,
                "ModelNumber": c.mn,
                "SerialNumber": c.sn,
                "UsedBytes": ns.nuse * ns.lba,
                "MaximumLBA": ns.nsze,
                "PhysicalSize": ns.nsze * ns.lba,
                "SectorSize": ns.lba,
            })
    return {"Devices": devices}


def _by_subsystem(ctrls: list[_Ctrl]) -> dict[str, list[_Ctrl]]:
    out: dict[str, list[_Ctrl]] = {}
    for c in ctrls:
        out.setdefault(c.subsys, []).append(c)
    return out


def list_verbose_text(ctrls: list[_Ctrl]) -> str:
    subs = _by_subsystem(ctrls)
    lines = [f"{'Subsystem':<16} {'Subsystem-NQN':<96} {'Controllers':<16}".rstrip(),
             f"{'-' * 16} {'-' * 96} {'-' * 16}"]
    for sname, members in subs.items():
        lines.append(f"{sname:<16} {members[0].nqn:<96} {', '.join(c.name for c in members)}")
    lines.append("")
    lines.append(f"{'Device':<8} {'SN':<20} {'MN':<40} {'FR':<8} {'TxPort':<6} {'Address':<14} {'Subsystem':<12} "
                 f"{'Namespaces':<16}")
    lines.append(" ".join("-" * w for w in (8, 20, 40, 8, 6, 14, 12, 16)))
    for c in ctrls:
        nss = ", ".join(f"{c.name}n{ns.nsid}" for ns in c.namespaces)
        lines.append(f"{c.name:<8} {c.sn:<20} {c.mn:<40} {c.fr:<8} {c.transport:<6} {c.address:<14} {c.subsys:<12} "
                     f"{nss}")
    lines.append("")
    lines.append(f"{'Device':<12} {'Generic':<12} {'NSID':<8} {'Usage':<26} {'Format':<16} {'Controllers':<16}")
    lines.append(" ".join("-" * w for w in (12, 12, 8, 26, 16, 16)))
    for c in ctrls:
        for ns in c.namespaces:
            lines.append(f"{ns.path:<12} {ns.generic:<12} {ns.nsid:<8} {ns.usage():<26} {ns.format():<16} {c.name}")
    return "\n".join(lines) + "\n"


def _hosts(ctrls: list[_Ctrl]) -> dict[tuple[str, str], list[_Ctrl]]:
    out: dict[tuple[str, str], list[_Ctrl]] = {}
    for c in ctrls:
        if c.transport == "tcp":
            key = host_identity(c.entry.get("hostnqn"), c.entry.get("hostid"))
        else:
            key = host_identity()
        out.setdefault(key, []).append(c)
    return out


def list_verbose_json(ctrls: list[_Ctrl]) -> dict:
    devices = []
    for (hostnqn, hostid), members in _hosts(ctrls).items():
        subsystems = []
        for sname, group in _by_subsystem(members).items():
            controllers = []
            namespaces = []
            for c in group:
                controllers.append({
                    "Controller": c.name,
                    "SerialNumber": c.sn,
                    "ModelNumber": c.mn,
                    "Firmware": c.fr,
                    "Transport": c.transport,
                    "Address": c.address,
                    "Namespaces": [],
                    "Paths": [{"Path": f"nvme{sname[11:]}c{c.name[4:]}n{ns.nsid}", "ANAState": "optimized"}
                              for ns in c.namespaces],
                })
                for ns in c.namespaces:
                    namespaces.append({
                        "NameSpace": f"{c.name}n{ns.nsid}",
                        "NSID": ns.nsid,
                        "UsedBytes": ns.nuse * ns.lba,
                        "MaximumLBA": ns.nsze,
                        "PhysicalSize": ns.nsze * ns.lba,
                        "SectorSize": ns.lba,
                    })
            subsystems.append({"Subsystem": sname, "SubsystemNQN": group[0].nqn, "Controllers": controllers,
                               "Namespaces": namespaces})
        devices.append({"HostNQN": hostnqn, "HostID": hostid, "Subsystems": subsystems})
    return {"Devices": devices}


def _list(args: argparse.Namespace) -> int:
    fmt = output_format(args, binary=False)
    ctrls = _load_all()
    for c in ctrls:
        if c.error:
            print(f"{c.name}: {c.error}", file=sys.stderr)
    if args.verbose:
        if fmt == "json":
            _print_json(list_verbose_json(ctrls))
        else:
            sys.stdout.write(list_verbose_text(ctrls))
    elif fmt == "json":
        _print_json(list_json(ctrls))
    else:
        sys.stdout.write(list_text(ctrls))
    return 0


def list_subsys_text(ctrls: list[_Ctrl], ana: bool) -> str:
    blocks = []
    for sname, group in _by_subsystem(ctrls).items():
        lines = [f"{sname} - NQN={group[0].nqn}", "\\"]
        for c in group:
            lines.append(f" +- {c.name} {c.transport} {c.address} {c.state} {'optimized' if ana else ''}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def list_subsys_json(ctrls: list[_Ctrl], ana: bool) -> list:
    out = []
    for (hostnqn, hostid), members in _hosts(ctrls).items():
        subsystems = []
        for sname, group in _by_subsystem(members).items():
            paths = []
            for c in group:
                path = {"Name": c.name, "Transport": c.transport, "Address": c.address, "State": c.state}
                if ana:
                    path["ANAState"] = "optimized"
                paths.append(path)
            subsystems.append({"Name": sname, "NQN": group[0].nqn, "Paths": paths})
        out.append({"HostNQN": hostnqn, "HostID": hostid, "Subsystems": subsystems})
    return out


def _list_subsys(args: argparse.Namespace) -> int:
    fmt = output_format(args, binary=False)
    ctrls = _load_all()
    ana = False
    if args.device:
        spec = parse_device(args.device)
        if not spec.registered:
            raise CliError(f"{args.device}: list-subsys takes a connected device (nvme0, nvme0n1)")
        wanted = next((c.subsys for c in ctrls if c.name == spec.name), None)
        ctrls = [c for c in ctrls if c.subsys == wanted]
        ana = spec.nsid is not None
    if fmt == "json":
        _print_json(list_subsys_json(ctrls, ana))
    else:
        sys.stdout.write(list_subsys_text(ctrls, ana))
    return 0


# ---------------------------------------------------------------------------
# list-ns / list-ctrl (Identify lists through the device)


def _identify_list(device: str, cns: int, nsid: int = 0, cntid: int = 0, csi: int = 0) -> bytearray:
    from ..host.request import NvmeStatusError
    from .common import StatusError

    spec = parse_device(device)
    dev = open_spec(spec, io_queues=0, aen_commands=0)
    try:
        fields = {}
        if cntid:
            fields["cntid"] = cntid
        if csi:
            fields["csi"] = csi
        try:
            return dev.ctrl.identify_raw(cns, nsid, **fields)
        except NvmeStatusError as exc:
            raise StatusError(exc.status) from None
    finally:
        dev.close()


def _list_ns(args: argparse.Namespace) -> int:
    from ..spec.admin import Cns

    fmt = output_format(args, binary=False)
    if args.namespace_id < 1 and args.namespace_id != 0:
        raise CliError("invalid namespace id")
    start = max(0, args.namespace_id - 1)
    if args.csi is not None:
        cns = Cns.CSI_ALLOCATED_NS_LIST if args.all else Cns.CSI_NS_ACTIVE_LIST
    else:
        cns = Cns.ALLOCATED_NS_LIST if args.all else Cns.NS_ACTIVE_LIST
    data = _identify_list(args.device, cns, start, csi=args.csi or 0)
    ids = [int.from_bytes(data[i : i + 4], "little") for i in range(0, 4096, 4)]
    ids = [i for i in ids if i]
    if fmt == "json":
        _print_json({"nsid_list": [{"nsid": i} for i in ids]})
    else:
        sys.stdout.write("".join(f"[{i:4d}]:{n:#x}\n" for i, n in enumerate(ids)))
    return 0


def _list_ctrl(args: argparse.Namespace) -> int:
    from ..spec.admin import Cns

    fmt = output_format(args)
    if args.namespace_id:
        data = _identify_list(args.device, Cns.NS_CTRL_LIST, args.namespace_id, cntid=args.cntid)
    else:
        data = _identify_list(args.device, Cns.CTRL_LIST, 0, cntid=args.cntid)
    if fmt == "binary":
        write_binary(data)
        return 0
    count = min(int.from_bytes(data[0:2], "little"), 2047)
    ids = [int.from_bytes(data[2 + 2 * i : 4 + 2 * i], "little") for i in range(count)]
    if fmt == "json":
        _print_json({"num_ctrl": count, "ctrl_list": [{"ctrl_id": i} for i in ids]})
    else:
        sys.stdout.write(f"num of ctrls present: {count}\n" + "".join(f"[{i:4d}]:{c:#x}\n" for i, c in enumerate(ids)))
    return 0


# ---------------------------------------------------------------------------
# the command table


@command("list", "list all NVMe devices and namespaces on the machine")
def _list_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output-format", default="normal", metavar="FMT", help="output format: normal|json")
    p.add_argument("-v", "--verbose", action="store_true", help="increase output verbosity")
    p.set_defaults(func=_list)


@command("list-subsys", "list nvme subsystems")
def _list_subsys_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", nargs="?", help="only the subsystem of this device")
    p.add_argument("-o", "--output-format", default="normal", metavar="FMT", help="output format: normal|json")
    p.add_argument("-v", "--verbose", action="store_true", help="increase output verbosity")
    p.set_defaults(func=_list_subsys)


@command("list-ns", "send NVMe Identify List, display structure")
def _list_ns_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("device")
    p.add_argument("-n", "--namespace-id", type=number, default=1,
                   help="first nsid returned list should start from")
    p.add_argument("-y", "--csi", type=number, help="I/O command set identifier")
    p.add_argument("-a", "--all", action="store_true",
                   help="show all namespaces in the subsystem, whether attached or inactive")
    p.add_argument("-o", "--output-format", default="normal", metavar="FMT", help="output format: normal|json")
    p.set_defaults(func=_list_ns)


@command("list-ctrl", "send NVMe Identify Controller List, display structure")
def _list_ctrl_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("device")
    p.add_argument("-c", "--cntid", type=number, default=0, help="controller to display")
    p.add_argument("-n", "--namespace-id", type=number, default=0,
                   help="optional namespace attached to controller")
    p.add_argument("-o", "--output-format", default="normal", metavar="FMT", help="output format: normal|json|binary")
    p.set_defaults(func=_list_ctrl)


@command("discover", "discover NVMeoF subsystems")
def _discover_parser(p: argparse.ArgumentParser) -> None:
    _fabrics_options(p, discover=True)
    p.set_defaults(func=_discover)


@command("connect-all", "discover and connect to NVMeoF subsystems")
def _connect_all_parser(p: argparse.ArgumentParser) -> None:
    _fabrics_options(p, discover=True)
    p.set_defaults(func=_connect_all)


@command("connect", "connect to NVMeoF subsystem")
def _connect_parser(p: argparse.ArgumentParser) -> None:
    _fabrics_options(p, discover=False)
    p.add_argument("-C", "--dhchap-ctrl-secret", help="DH-HMAC-CHAP controller secret (not supported)")
    p.set_defaults(func=_connect)


@command("disconnect", "disconnect from NVMeoF subsystem")
def _disconnect_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--nqn", help="subsystem nqn")
    p.add_argument("-d", "--device", help="nvme device handle")
    p.add_argument("-v", "--verbose", action="count", default=0, help="increase logging verbosity")
    p.set_defaults(func=_disconnect)


@command("disconnect-all", "disconnect from all connected NVMeoF subsystems")
def _disconnect_all_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--transport", help="transport type")
    p.add_argument("-v", "--verbose", action="count", default=0, help="increase logging verbosity")
    p.set_defaults(func=_disconnect_all)


@command("gen-hostnqn", "generate NVMeoF host NQN")
def _gen_parser(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=_gen_hostnqn)


@command("show-hostnqn", "show NVMeoF host NQN")
def _show_parser(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=_show_hostnqn)
