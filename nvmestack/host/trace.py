"""Command tracing for the host driver, after Linux's NVMe tracepoints
(``drivers/nvme/host/trace.h`` and ``trace.c``: ``nvme_setup_cmd`` when a
command is handed to the queue, ``nvme_complete_rq`` when it completes).

The core calls :meth:`Tracer.setup` when it submits a request and
:meth:`Tracer.complete` when the request completes.  Each call makes a
:class:`TraceEvent`; its :attr:`~TraceEvent.text` is the line Linux's
tracepoint prints, in the same format, because that is what people grep::

    nvme0: qid=1, cmdid=12, nsid=1, flags=0x0, meta=0x0, cmd=(nvme_cmd_read slba=0, len=7, ctrl=0x0, dsmgmt=0, reftag=0)
    nvme0: qid=1, cmdid=12, res=0x0, retries=0, flags=0x0, status=0x0

and its other attributes are the same facts as Python values: queue id,
command id, opcode with its Linux symbol and its specification name, the
command's decoded fields (through the typed views of ``spec/``), the status
(:class:`~nvmestack.spec.status.Status`, with the text nvme-cli prints), the
64-bit result and the latency.

Switching: ``tracer.enabled = False`` makes :meth:`~Tracer.setup` and
:meth:`~Tracer.complete` return at their first line (one attribute test;
``bench/trace_overhead.py`` prints the cost).  Switching on again at run
time is safe: a request set up while tracing was off still gets its
completion event and its latency (the latency comes from the request, not
from a remembered setup event).

Consumers: listeners (callables taking the event, called in the completing
thread; an exception in one is counted and logged, never raised into the
I/O path), a bounded ring of recent events (:attr:`Tracer.recent`), an
optional text sink (a path or a text stream; one line per event), and
latency histograms per queue and per opcode (:class:`LatencyHistogram`:
log2 microsecond buckets, count, min, max, mean, p50/p99/p99.9) with a text
table (:meth:`Tracer.latency_table`).

What the tracer reads from a request (nothing else; it never writes to it):

``setup(req)``
    ``req.qid`` (0 = admin queue: the opcode is an admin opcode, as in
    Linux's ``show_opcode_name``), ``req.cmd`` (a spec ``Command`` view; its
    64 bytes are copied into the event), ``req.cid`` (``req.cmd.cid`` when
    absent or None), ``req.meta`` (truthy = a metadata buffer: ``meta=0x1``),
    and optionally ``req.ctrl_name`` (e.g. ``"nvme0"``; else
    ``req.ctrl.name``; else :attr:`Tracer.name`) and ``req.disk`` (e.g.
    ``"nvme0n1"``; Linux prints ``disk=nvme0n1, `` before ``qid=`` for
    namespace I/O).
``complete(req)``
    ``req.qid``, ``req.cmd`` (opcode; FCTYPE for Fabrics), ``req.cid``,
    ``req.status`` (a spec ``Status``, or None when the host completed the
    request without a device status), ``req.result`` (CQE DW0), and
    optionally ``req.dw1`` (CQE DW1: Linux's result is the 64-bit DW1:DW0),
    ``req.retries`` (default 0), ``req.flags`` (Linux's ``nvme_req`` flags;
    when absent, ``NVME_REQ_USERCMD`` (0x2) if ``req.passthru`` is true),
    ``req.error`` (kept in the event), ``req.submitted_at`` (when the
    command was submitted, in the tracer's clock: seconds of
    ``time.perf_counter()`` by default, as HostRequest records them, or an
    ``int`` of nanoseconds of ``time.perf_counter_ns()``; None or 0 = no
    latency), ``req.completed_at`` (same clock; None or 0 = read the clock
    in ``complete``), and the names as for setup.

Fidelity notes.  The argument text follows trace.c for the commands it
decodes and prints Linux's raw ``cdw10=<24 bytes>`` (``specific=`` for
Fabrics) for the others; ``Tracer(args="decoded")`` prints the typed view's
fields there instead.  One deliberate difference: for Set Features Linux
prints ``sv=`` as ``cdw10 byte 3 & 0x8`` (bit 27, which is reserved); we
print the SV bit itself (CDW10 bit 31) as 0x1/0x0.  Numbers use the
kernel's ``%#x`` (``0x0`` for zero, unlike C's printf).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from ..spec import admin as _admin
from ..spec import fabrics as _fabrics
from ..spec import nvm as _nvm
from ..spec.layout import Array, Raw, Sub
from ..spec.opcodes import FABRICS_OPCODE, opcode_name
from ..spec.sqe import SQE_SIZE, Command, command_class
from ..spec.status import Status

__all__ = [
    "Tracer",
    "TraceEvent",
    "LatencyHistogram",
    "SETUP",
    "COMPLETE",
    "linux_opcode_name",
    "decode_fields",
    "command_args",
    "format_events",
    "DECODED_FIELDS",
]

log = logging.getLogger(__name__)

_thread_ids = threading.local()


def _tid() -> int:
    """The native id of the calling thread (ftrace's pid), cached per thread."""
    try:
        return _thread_ids.tid
    except AttributeError:
        tid = _thread_ids.tid = threading.get_native_id()
        return tid

SETUP = "nvme_setup_cmd"
COMPLETE = "nvme_complete_rq"

# ---------------------------------------------------------------------------
# Opcode symbols, as Linux's show_admin_opcode_name / show_nvm_opcode_name /
# show_fabrics_type_name print them (include/linux/nvme.h).  A value not in
# the table prints as 0x%lx, as __print_symbolic does.

_ADMIN_SYMBOLS = {
    0x00: "nvme_admin_delete_sq",
    0x01: "nvme_admin_create_sq",
    0x02: "nvme_admin_get_log_page",
    0x04: "nvme_admin_delete_cq",
    0x05: "nvme_admin_create_cq",
    0x06: "nvme_admin_identify",
    0x08: "nvme_admin_abort_cmd",
    0x09: "nvme_admin_set_features",
    0x0A: "nvme_admin_get_features",
    0x0C: "nvme_admin_async_event",
    0x0D: "nvme_admin_ns_mgmt",
    0x10: "nvme_admin_activate_fw",
    0x11: "nvme_admin_download_fw",
    0x14: "nvme_admin_dev_self_test",
    0x15: "nvme_admin_ns_attach",
    0x18: "nvme_admin_keep_alive",
    0x19: "nvme_admin_directive_send",
    0x1A: "nvme_admin_directive_recv",
    0x1C: "nvme_admin_virtual_mgmt",
    0x1D: "nvme_admin_nvme_mi_send",
    0x1E: "nvme_admin_nvme_mi_recv",
    0x7C: "nvme_admin_dbbuf",
    0x80: "nvme_admin_format_nvm",
    0x81: "nvme_admin_security_send",
    0x82: "nvme_admin_security_recv",
    0x84: "nvme_admin_sanitize_nvm",
    0x86: "nvme_admin_get_lba_status",
}

_IO_SYMBOLS = {
    0x00: "nvme_cmd_flush",
    0x01: "nvme_cmd_write",
    0x02: "nvme_cmd_read",
    0x04: "nvme_cmd_write_uncor",
    0x05: "nvme_cmd_compare",
    0x08: "nvme_cmd_write_zeroes",
    0x09: "nvme_cmd_dsm",
    0x0C: "nvme_cmd_verify",
    0x0D: "nvme_cmd_resv_register",
    0x0E: "nvme_cmd_resv_report",
    0x11: "nvme_cmd_resv_acquire",
    0x12: "nvme_cmd_io_mgmt_recv",
    0x15: "nvme_cmd_resv_release",
    0x79: "nvme_cmd_zone_mgmt_send",
    0x7A: "nvme_cmd_zone_mgmt_recv",
    0x7D: "nvme_cmd_zone_append",
}

_FABRICS_SYMBOLS = {
    0x00: "nvme_fabrics_type_property_set",
    0x01: "nvme_fabrics_type_connect",
    0x04: "nvme_fabrics_type_property_get",
    0x05: "nvme_fabrics_type_auth_send",
    0x06: "nvme_fabrics_type_auth_receive",
}


# Linux's nvme_req(req)->flags bits (drivers/nvme/host/nvme.h).
NVME_REQ_CANCELLED = 1 << 0
NVME_REQ_USERCMD = 1 << 1


def linux_opcode_name(qid: int, opcode: int, fctype: int | None = None) -> str:
    """The symbol Linux's trace prints for a command: Fabrics by FCTYPE,
    else admin when ``qid`` is 0 and I/O otherwise; ``0x..`` when unknown."""
    if opcode == FABRICS_OPCODE:
        value = fctype or 0
        return _FABRICS_SYMBOLS.get(value) or f"{value:#x}"
    return (_IO_SYMBOLS if qid else _ADMIN_SYMBOLS).get(opcode) or f"{opcode:#x}"


def _opcode_key(qid: int, opcode: int, fctype: int | None) -> str:
    """The key of a per-opcode histogram: the Linux symbol, or, for a code
    Linux does not name, ``"admin 0xc1"`` / ``"io 0xc1"`` / ``"fabrics 0x8"``
    (the bare ``0x..`` would not say which set it belongs to)."""
    if opcode == FABRICS_OPCODE:
        value = fctype or 0
        return _FABRICS_SYMBOLS.get(value) or f"fabrics {value:#x}"
    if qid:
        return _IO_SYMBOLS.get(opcode) or f"io {opcode:#x}"
    return _ADMIN_SYMBOLS.get(opcode) or f"admin {opcode:#x}"


# ---------------------------------------------------------------------------
# Decoded fields: which fields of each typed view matter in a trace.  Names
# are the view's fields or its derived properties (numd, offset, lbaf...).

_RW_PI = ("prinfo", "fua", "lr", "stc", "reftag", "apptag", "appmask")

DECODED_FIELDS: dict[type[Command], tuple[str, ...]] = {
    # NVM command set
    _nvm.Flush: ("nsid",),
    _nvm.Write: ("nsid", "slba", "nlb", *_RW_PI, "dsm", "dtype", "dspec"),
    _nvm.Read: ("nsid", "slba", "nlb", *_RW_PI, "dsm"),
    _nvm.WriteUncorrectable: ("nsid", "slba", "nlb"),
    _nvm.Compare: ("nsid", "slba", "nlb", *_RW_PI),
    _nvm.WriteZeroes: ("nsid", "slba", "nlb", "deac", *_RW_PI),
    _nvm.DatasetManagement: ("nsid", "nr", "attributes"),
    _nvm.Verify: ("nsid", "slba", "nlb", *_RW_PI),
    _nvm.Copy: ("nsid", "sdlba", "nr", "desfmt", "prinfor", "prinfow", "stcw", "fua", "lr", "dtype", "dspec"),
    # Admin
    _admin.DeleteIoSq: ("qid",),
    _admin.CreateIoSq: ("qid", "qsize", "pc", "qprio", "cqid", "nvmsetid"),
    _admin.GetLogPage: ("nsid", "lid", "lsp", "rae", "numd", "lsi", "offset", "ot", "csi", "uuidx"),
    _admin.DeleteIoCq: ("qid",),
    _admin.CreateIoCq: ("qid", "qsize", "pc", "ien", "iv"),
    _admin.Identify: ("nsid", "cns", "cntid", "cnssid", "csi", "uuidx"),
    _admin.Abort: ("sqid", "abort_cid"),
    _admin.SetFeatures: ("nsid", "fid", "sv", "cdw11", "uuidx"),
    _admin.GetFeatures: ("nsid", "fid", "sel", "cdw11", "uuidx"),
    _admin.AsyncEventRequest: (),
    _admin.NamespaceManagement: ("nsid", "sel", "csi"),
    _admin.FirmwareCommit: ("fs", "ca", "bpid"),
    _admin.FirmwareImageDownload: ("numd", "ofst"),
    _admin.DeviceSelfTest: ("nsid", "stc"),
    _admin.NamespaceAttachment: ("nsid", "sel"),
    _admin.KeepAlive: (),
    _admin.DoorbellBufferConfig: ("dbbuf_dbs", "dbbuf_eis"),
    _admin.FormatNvm: ("nsid", "lbaf", "mset", "pi", "pil", "ses"),
    _admin.Sanitize: ("sanact", "ause", "owpass", "oipbp", "ndas", "ovrpat"),
    # Fabrics
    _fabrics.PropertySet: ("attrib", "ofst", "value"),
    _fabrics.PropertyGet: ("attrib", "ofst"),
    _fabrics.Connect: ("recfmt", "qid", "sqsize", "cattr", "kato"),
    _fabrics.Disconnect: ("recfmt",),
    _fabrics.AuthenticationSend: ("spsp0", "spsp1", "secp", "tl"),
    _fabrics.AuthenticationReceive: ("spsp0", "spsp1", "secp", "al"),
}

_RAW_FIELDS = ("nsid", "cdw10", "cdw11", "cdw12", "cdw13", "cdw14", "cdw15")

_fallback_cache: dict[type[Command], tuple[str, ...]] = {}


def _fallback_fields(cls: type[Command]) -> tuple[str, ...]:
    """For a view not in DECODED_FIELDS: its own fields (not the common
    command format's), one name per bit range, leaving out a field that
    merely contains other named fields (CDW12's ``control`` when ``fua``,
    ``prinfo``... are named)."""
    names = _fallback_cache.get(cls)
    if names is not None:
        return names
    own = [(n, f) for n, f in cls.FIELDS.items()
           if n not in Command.FIELDS and not isinstance(f, (Raw, Sub, Array))]

    def span(f: Any) -> tuple[int, int]:
        lsb = getattr(f, "lsb", 0)
        width = getattr(f, "width", 8 * f.size)
        return 8 * f.offset + lsb, 8 * f.offset + lsb + width

    seen: set[tuple[int, int]] = set()
    unique = []
    for name, f in own:
        s = span(f)
        if s not in seen:
            seen.add(s)
            unique.append((name, s))
    keep = tuple(name for name, (lo, hi) in unique
                 if not any((lo <= lo2 and hi2 <= hi) and (lo2, hi2) != (lo, hi) for _, (lo2, hi2) in unique))
    _fallback_cache[cls] = keep
    return keep


def decode_fields(sqe: Any, qid: int) -> dict[str, Any]:
    """The fields that matter of the 64-byte command ``sqe`` (bytes or a
    Command view) on queue ``qid``, decoded through its typed view
    (``command_class``): ``{"nsid": 1, "slba": 0, "nlb": 7, ...}``.  An
    opcode without a typed view gives ``{"nsid": ..., "cdw10": ...,
    ..., "cdw15": ...}``."""
    raw = sqe.raw if isinstance(sqe, Command) else memoryview(sqe)
    opcode = raw[0]
    fctype = raw[4] if opcode == FABRICS_OPCODE else None
    cls = command_class(qid == 0, opcode, fctype)
    view = cls.view(raw)
    if cls is Command:
        names = _RAW_FIELDS
    else:
        names = DECODED_FIELDS.get(cls)
        if names is None:
            names = _fallback_fields(cls)
    return {name: getattr(view, name) for name in names}


# ---------------------------------------------------------------------------
# The argument text of Linux's trace.c, one formatter per decoded command.
# Each takes the typed view (or the plain Command for commands spec/ has no
# view for) and returns the text after the opcode symbol.


def _hex_bytes(view: Command) -> str:
    """Linux's ``%*ph`` of the 24 bytes from CDW10: two hex digits per
    byte, separated by spaces."""
    return view.raw[40:SQE_SIZE].hex(" ")


def _common(view: Command) -> str:
    return "cdw10=" + _hex_bytes(view)


def _fabrics_common(view: Command) -> str:
    return "specific=" + _hex_bytes(view)


def _x(value: int) -> str:
    """The kernel's ``%#x``: ``0x0`` for zero too."""
    return f"{value:#x}"


def _lba(view: Command) -> int:
    return view.cdw10 | view.cdw11 << 32


def _rw(v: Any) -> str:
    # struct nvme_rw_command: slba, length (NLB), control (CDW12 31:16), dsmgmt (CDW13), reftag (CDW14)
    return f"slba={_lba(v)}, len={v.cdw12 & 0xFFFF}, ctrl={_x(v.cdw12 >> 16)}, dsmgmt={v.cdw13}, reftag={v.cdw14}"


def _dsm(v: Any) -> str:
    return f"nr={v.cdw10}, attributes={v.cdw11}"


_ZSA = {0x01: "close zone", 0x02: "finish zone", 0x03: "open zone", 0x04: "reset zone",
        0x05: "offline zone", 0x10: "set zone descriptor extension"}
_ZRASF = {0x00: "list all zones", 0x01: "list the zones in the ZSE: Empty state",
          0x02: "list the zones in the ZSIO: Implicitly Opened state",
          0x03: "list the zones in the ZSEO: Explicitly Opened state",
          0x04: "list the zones in the ZSC: Closed state", 0x05: "list the zones in the ZSF: Full state",
          0x06: "list the zones in the ZSRO: Read Only state", 0x07: "list the zones in the ZSO: Offline state",
          0x09: "list the zones that have the zone attribute"}
_RREGA = {0: "register", 1: "unregister", 2: "replace"}
_RACQA = {0: "acquire", 1: "preempt", 2: "preempt and abort"}
_RRELA = {0: "release", 1: "clear"}
_RTYPE = {0: "reserved", 1: "write exclusive", 2: "exclusive access", 3: "write exclusive registrants only",
          4: "exclusive access registrants only", 5: "write exclusive all registrants",
          6: "exclusive access all registrants"}


def _zone_send(v: Command) -> str:
    zsa = v.cdw13 & 0xFF
    return f"slba={_lba(v)}, zsa={zsa}:{_ZSA.get(zsa, 'reserved')}, all={(v.cdw13 >> 8) & 0xFF}"


def _zone_recv(v: Command) -> str:
    zrasf = (v.cdw13 >> 8) & 0xFF
    return (f"slba={_lba(v)}, numd={v.cdw12}, zra={v.cdw13 & 0xFF}, "
            f"zrasf={zrasf}:{_ZRASF.get(zrasf, 'reserved')}, pr={(v.cdw13 >> 16) & 0xFF}")


def _resv_register(v: Command) -> str:
    rrega = v.cdw10 & 0x7
    return (f"rrega={rrega}:{_RREGA.get(rrega, 'reserved')}, iekey={(v.cdw10 >> 3) & 1}, "
            f"ptpl={(v.cdw10 >> 30) & 0x3}")


def _resv_acquire_release(actions: dict[int, str], label: str) -> Callable[[Command], str]:
    def fmt(v: Command) -> str:
        action = v.cdw10 & 0x7
        rtype = (v.cdw10 >> 8) & 0xFF
        return (f"{label}={action}:{actions.get(action, 'reserved')}, iekey={(v.cdw10 >> 3) & 1}, "
                f"rtype={rtype}:{_RTYPE.get(rtype, 'reserved')}")
    return fmt


def _resv_report(v: Command) -> str:
    return f"numd={v.cdw10}, eds={v.cdw11 & 1}"


_IO_ARGS: dict[int, Callable[[Any], str]] = {
    0x01: _rw, 0x02: _rw, 0x08: _rw, 0x7D: _rw,
    0x09: _dsm,
    0x79: _zone_send, 0x7A: _zone_recv,
    0x0D: _resv_register,
    0x11: _resv_acquire_release(_RACQA, "racqa"),
    0x15: _resv_acquire_release(_RRELA, "rrela"),
    0x0E: _resv_report,
}

_ADMIN_ARGS: dict[int, Callable[[Any], str]] = {
    0x00: lambda v: f"sqid={v.cdw10 & 0xFFFF}",
    0x01: lambda v: f"sqid={v.qid}, qsize={v.qsize}, sq_flags={_x(v.cdw11 & 0xFFFF)}, cqid={v.cqid}",
    0x04: lambda v: f"cqid={v.cdw10 & 0xFFFF}",
    0x05: lambda v: f"cqid={v.qid}, qsize={v.qsize}, cq_flags={_x(v.cdw11 & 0xFFFF)}, irq_vector={v.iv}",
    0x06: lambda v: f"cns={v.cns}, ctrlid={v.cntid}",
    0x09: lambda v: f"fid={_x(v.fid)}, sv={_x(v.sv)}, cdw11={_x(v.cdw11)}",
    0x0A: lambda v: f"fid={_x(v.fid)}, sel={_x(v.sel)}, cdw11={_x(v.cdw11)}",
    0x80: lambda v: f"lbaf={v.lbaf}, mset={int(v.mset)}, pi={v.pi}, pil={int(v.pil)}, ses={v.ses}",
    # Get LBA Status (no typed view in spec/ yet): SLBA, MNDW, RL, ATYPE
    0x86: lambda v: (f"slba={_x(_lba(v))}, mndw={_x(v.cdw12)}, rl={_x(v.cdw13 & 0xFFFF)}, "
                     f"atype={v.cdw13 >> 24}"),
}

_FABRICS_ARGS: dict[int, Callable[[Any], str]] = {
    0x00: lambda v: f"attrib={v.attrib}, ofst={_x(v.ofst)}, value={_x(v.value)}",
    0x01: lambda v: f"recfmt={v.recfmt}, qid={v.qid}, sqsize={v.sqsize}, cattr={v.cattr}, kato={v.kato}",
    0x04: lambda v: f"attrib={v.attrib}, ofst={_x(v.ofst)}",
    0x05: lambda v: f"spsp0={v.spsp0:02x}, spsp1={v.spsp1:02x}, secp={v.secp:02x}, tl={v.tl}",
    0x06: lambda v: f"spsp0={v.spsp0:02x}, spsp1={v.spsp1:02x}, secp={v.secp:02x}, al={v.al}",
}


def _format_value(value: Any) -> str:
    return str(int(value)) if isinstance(value, (bool, int)) else str(value)


def command_args(sqe: Any, qid: int, *, style: str = "linux") -> str:
    """The argument text of a setup line for the 64-byte command ``sqe``
    on queue ``qid``.  ``style="linux"`` is exactly trace.c (raw
    ``cdw10=``/``specific=`` bytes for commands it does not decode);
    ``"decoded"`` prints :func:`decode_fields` in their place."""
    raw = sqe.raw if isinstance(sqe, Command) else memoryview(sqe)
    opcode = raw[0]
    if opcode == FABRICS_OPCODE:
        fctype = raw[4]
        table, fallback = _FABRICS_ARGS, _fabrics_common
        key = fctype
    else:
        fctype = None
        table, fallback = (_IO_ARGS if qid else _ADMIN_ARGS), _common
        key = opcode
    fmt = table.get(key)
    cls = command_class(qid == 0, opcode, fctype)
    view = cls.view(raw)
    if fmt is not None:
        return fmt(view)
    if style == "decoded" and cls is not Command:
        fields = decode_fields(raw, qid)
        if fields:
            return ", ".join(f"{k}={_format_value(v)}" for k, v in fields.items())
    return fallback(view)


# ---------------------------------------------------------------------------
# Events


class TraceEvent:
    """One trace event: :data:`SETUP` (``nvme_setup_cmd``) or
    :data:`COMPLETE` (``nvme_complete_rq``).

    Filled at once (cheap): ``name``, ``time`` (tracer clock, seconds),
    ``tid`` (native thread id), ``ctrl``, ``disk``, ``qid``, ``cid``,
    ``opcode``, ``fctype`` (None unless opcode 7Fh), ``flags`` (setup: the
    SQE's flags byte, FUSE and PSDT; complete: the request's flags, as
    Linux), and for setup ``meta`` (0/1) and ``sqe`` (a copy of the 64
    bytes), for complete ``status``, ``result`` (64-bit DW1:DW0),
    ``retries``, ``latency`` (seconds, or None) and ``error`` (the
    request's exception, e.g. a dead controller's, or None).

    Derived when read: :attr:`fields`, :attr:`text`, the names and the
    status text."""

    __slots__ = ("name", "time", "tid", "ctrl", "disk", "qid", "cid", "opcode", "fctype", "flags",
                 "meta", "sqe", "status", "result", "retries", "latency", "error", "_args_style", "_text",
                 "_fields")

    def __init__(self, name: str, time: float, ctrl: str, qid: int, cid: int, opcode: int,
                 fctype: int | None, flags: int, *, disk: str | None = None, tid: int = 0,
                 meta: int = 0, sqe: bytes | None = None, status: Status | None = None,
                 result: int = 0, retries: int = 0, latency: float | None = None,
                 error: BaseException | None = None, args_style: str = "linux") -> None:
        self.name = name
        self.time = time
        self.tid = tid
        self.ctrl = ctrl
        self.disk = disk
        self.qid = qid
        self.cid = cid
        self.opcode = opcode
        self.fctype = fctype
        self.flags = flags
        self.meta = meta
        self.sqe = sqe
        self.status = status
        self.result = result
        self.retries = retries
        self.latency = latency
        self.error = error
        self._args_style = args_style
        self._text: str | None = None
        self._fields: dict[str, Any] | None = None

    # -- names ---------------------------------------------------------------

    @property
    def admin(self) -> bool:
        """An admin command: queue 0 (Fabrics commands are Fabrics on any queue)."""
        return self.qid == 0

    @property
    def fabrics(self) -> bool:
        return self.opcode == FABRICS_OPCODE

    @property
    def opcode_name(self) -> str:
        """Linux's symbol: ``nvme_cmd_read``, ``nvme_admin_identify``,
        ``nvme_fabrics_type_connect``, or ``0x..``."""
        return linux_opcode_name(self.qid, self.opcode, self.fctype)

    @property
    def command_name(self) -> str:
        """The specification's name: ``Read``, ``Identify``, ``Connect``..."""
        return opcode_name(self.opcode, self.qid == 0, self.fctype)

    @property
    def command_class(self) -> type[Command]:
        """The typed view of this opcode (``Command`` when spec/ has none)."""
        return command_class(self.qid == 0, self.opcode, self.fctype)

    @property
    def nsid(self) -> int | None:
        """The command's NSID (setup events; None on completion events and
        for Fabrics commands, whose byte 4 is FCTYPE)."""
        if self.sqe is None or self.opcode == FABRICS_OPCODE:
            return None
        return int.from_bytes(self.sqe[4:8], "little")

    @property
    def fields(self) -> dict[str, Any]:
        """The decoded fields that matter (setup events; ``{}`` on
        completion events, which carry no copy of the command)."""
        if self._fields is None:
            self._fields = decode_fields(self.sqe, self.qid) if self.sqe is not None else {}
        return self._fields

    # -- status --------------------------------------------------------------

    @property
    def status_value(self) -> int | None:
        """Linux's 15-bit status (SC | SCT << 8 | CRD | More | DNR), or None."""
        return None if self.status is None else self.status.value

    @property
    def status_text(self) -> str | None:
        """What nvme-cli prints after ``NVMe status: ``, e.g.
        ``Invalid Field in Command: A reserved coded value ...(0x4002)``."""
        return None if self.status is None else str(self.status)

    @property
    def ok(self) -> bool | None:
        return None if self.status is None else self.status.ok

    # -- text ----------------------------------------------------------------

    @property
    def text(self) -> str:
        """The line Linux's tracepoint prints (without ftrace's prefix)."""
        if self._text is None:
            disk = f"disk={self.disk}, " if self.disk else ""
            if self.name == SETUP:
                args = command_args(self.sqe, self.qid, style=self._args_style)
                # Linux prints the dword at bytes 4-7 whatever the command (FCTYPE is its low byte).
                nsid = int.from_bytes(self.sqe[4:8], "little")
                self._text = (f"{self.ctrl}: {disk}qid={self.qid}, cmdid={self.cid}, nsid={nsid}, "
                              f"flags={_x(self.flags)}, meta={_x(self.meta)}, "
                              f"cmd=({self.opcode_name} {args})")
            else:
                status = "none" if self.status is None else _x(self.status.value)
                self._text = (f"{self.ctrl}: {disk}qid={self.qid}, cmdid={self.cid}, res={_x(self.result)}, "
                              f"retries={self.retries}, flags={_x(self.flags)}, status={status}")
        return self._text

    def line(self) -> str:
        """The sink's line: ``<time> <tid>: <event name>: <text>``, like the
        tail of an ftrace line (``1234.567890: nvme_setup_cmd: nvme0: ...``)."""
        return f"{self.time:.6f} {self.tid}: {self.name}: {self.text}"

    def to_dict(self) -> dict[str, Any]:
        """The event as plain values (for JSON)."""
        out: dict[str, Any] = {
            "event": self.name, "time": self.time, "tid": self.tid, "ctrl": self.ctrl,
            "qid": self.qid, "cid": self.cid, "opcode": self.opcode, "opcode_name": self.opcode_name,
            "command": self.command_name, "flags": self.flags,
        }
        if self.disk:
            out["disk"] = self.disk
        if self.fctype is not None:
            out["fctype"] = self.fctype
        if self.name == SETUP:
            out["nsid"] = self.nsid
            out["meta"] = self.meta
            out["fields"] = {k: (int(v) if isinstance(v, (bool, int)) else v) for k, v in self.fields.items()}
        else:
            out.update(status=self.status_value, status_text=self.status_text, result=self.result,
                       retries=self.retries, latency=self.latency)
            if self.error is not None:
                out["error"] = repr(self.error)
        out["text"] = self.text
        return out

    def __repr__(self) -> str:
        return f"<TraceEvent {self.name} {self.text}>"


# ---------------------------------------------------------------------------
# Latency histograms


class LatencyHistogram:
    """Latencies in log2 buckets of microseconds, as bcc's ``biolatency``:
    bucket 0 holds [0, 1) us, bucket ``i`` holds [2^(i-1), 2^i) us; the last
    bucket also takes everything longer.  Exact count, sum, min and max;
    percentiles are estimated inside their bucket (linear interpolation,
    clipped to min/max), so they are good to a factor of two at worst.

    Not locked: :class:`Tracer` records under its lock; use :meth:`copy`
    for a consistent snapshot."""

    NBUCKETS = 40  # the last bucket starts at 2^38 us, about three days

    __slots__ = ("counts", "count", "total", "min", "max")

    def __init__(self) -> None:
        self.counts = [0] * self.NBUCKETS
        self.count = 0
        self.total = 0.0
        self.min: float | None = None
        self.max: float | None = None

    @staticmethod
    def bucket_of(seconds: float) -> int:
        """The bucket index of a latency."""
        us = int(seconds * 1e6) if seconds > 0 else 0
        i = us.bit_length()
        return i if i < LatencyHistogram.NBUCKETS else LatencyHistogram.NBUCKETS - 1

    @staticmethod
    def bucket_bounds(i: int) -> tuple[int, int]:
        """Bucket ``i``'s range in microseconds, [low, high)."""
        return (0 if i == 0 else 1 << (i - 1)), 1 << i

    def record(self, seconds: float) -> None:
        if seconds < 0:
            seconds = 0.0
        self.counts[self.bucket_of(seconds)] += 1
        self.count += 1
        self.total += seconds
        if self.min is None or seconds < self.min:
            self.min = seconds
        if self.max is None or seconds > self.max:
            self.max = seconds

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        """Add ``other``'s counts to this one; returns self."""
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.count += other.count
        self.total += other.total
        for bound in (other.min, other.max):
            if bound is not None:
                if self.min is None or bound < self.min:
                    self.min = bound
                if self.max is None or bound > self.max:
                    self.max = bound
        return self

    def copy(self) -> "LatencyHistogram":
        return LatencyHistogram().merge(self)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (0 < p <= 100) in seconds, estimated from
        the buckets; None when empty."""
        if not 0 < p <= 100:
            raise ValueError(f"percentile {p} outside (0, 100]")
        if not self.count:
            return None
        rank = p / 100 * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                lo, hi = self.bucket_bounds(i)
                if i == self.NBUCKETS - 1:
                    hi = max(hi, self.max * 1e6)
                value = (lo + (hi - lo) * max(rank - seen, 0) / n) / 1e6
                return min(max(value, self.min), self.max)
            seen += n
        return self.max

    def summary(self) -> dict[str, float | int | None]:
        """count, min, mean, p50, p99, p99.9, max (seconds)."""
        empty = not self.count
        return {"count": self.count, "min": self.min, "mean": self.mean,
                "p50": None if empty else self.percentile(50),
                "p99": None if empty else self.percentile(99),
                "p99.9": None if empty else self.percentile(99.9), "max": self.max}

    def render(self, width: int = 40) -> str:
        """The buckets as bcc's log2 histogram, from the first non-empty
        bucket to the last (``render(width=8)``)::

                               usecs : count     distribution
                     2 -> 3          : 4         |********|
                     4 -> 7          : 0         |        |
                     8 -> 15         : 0         |        |
                    16 -> 31         : 1         |**      |
        """
        used = [i for i, n in enumerate(self.counts) if n]
        lines = [f"{'usecs':>24} : {'count':<9} distribution"]
        if not used:
            return lines[0] + "\n"
        top = max(self.counts)
        for i in range(used[0], used[-1] + 1):
            lo, hi = self.bucket_bounds(i)
            n = self.counts[i]
            bar = "*" * (round(n * width / top) if n else 0)
            hi_text = f"{hi - 1}" if i < self.NBUCKETS - 1 else "inf"
            lines.append(f"{lo:>10} -> {hi_text:<10} : {n:<9} |{bar:<{width}}|")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        if not self.count:
            return "<LatencyHistogram empty>"
        return (f"<LatencyHistogram n={self.count} min={self.min * 1e6:.1f}us "
                f"p50={self.percentile(50) * 1e6:.1f}us max={self.max * 1e6:.1f}us>")


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e6:.1f}"


# ---------------------------------------------------------------------------
# The tracer


class Tracer:
    """Records setup and completion events of one or more controllers.

    ``Tracer(name="nvme0", enabled=True, ring_size=1024, sink=None,
    clock=time.perf_counter, args="linux")``: ``name`` is the controller
    name used when a request names none (``ctrl_name``, ``ctrl.name``);
    ``clock`` must be the clock of ``req.submitted_at``; ``sink`` is a path or a text
    stream for event lines (see :meth:`open_sink`); ``args`` chooses the
    argument text of setup lines (see :func:`command_args`).

    Thread-safe: ``setup``/``complete`` may run in any number of threads.
    """

    def __init__(self, name: str = "nvme0", *, enabled: bool = True, ring_size: int = 1024,
                 sink: str | os.PathLike | TextIO | None = None, clock: Callable[[], float] = time.perf_counter,
                 args: str = "linux") -> None:
        if args not in ("linux", "decoded"):
            raise ValueError(f"args must be 'linux' or 'decoded', not {args!r}")
        if ring_size < 0:
            raise ValueError("ring_size must be >= 0")
        #: Switch at run time; when False, setup() and complete() return at once.
        self.enabled = bool(enabled)
        self.name = name
        self.clock = clock
        self.args = args
        #: The most recent events, oldest first (a bounded deque).
        self.recent: deque[TraceEvent] = deque(maxlen=ring_size)
        self.queue_histograms: dict[int, LatencyHistogram] = {}
        self.opcode_histograms: dict[str, LatencyHistogram] = {}
        self.setups = 0
        self.completions = 0
        self.listener_errors = 0
        self._listeners: tuple[Callable[[TraceEvent], Any], ...] = ()
        self._lock = threading.Lock()
        self._sink: TextIO | None = None
        self._sink_owned = False
        if sink is not None:
            self.open_sink(sink)

    # -- the two hooks -------------------------------------------------------

    def setup(self, req: Any) -> None:
        """A command is submitted: record ``nvme_setup_cmd``."""
        if not self.enabled:
            return
        cmd = req.cmd
        sqe = bytes(cmd.raw)
        opcode = sqe[0]
        cid = getattr(req, "cid", None)
        if cid is None:
            cid = cmd.cid
        event = TraceEvent(
            SETUP, self.clock(), self._ctrl_name(req), req.qid, cid, opcode,
            sqe[4] if opcode == FABRICS_OPCODE else None, sqe[1],
            disk=getattr(req, "disk", None), tid=_tid(),
            meta=1 if req.meta else 0, sqe=sqe, args_style=self.args)
        with self._lock:
            self.setups += 1
        self._emit(event)

    def complete(self, req: Any) -> None:
        """A command completed: record ``nvme_complete_rq`` and its latency."""
        if not self.enabled:
            return
        cmd = req.cmd
        qid = req.qid
        opcode = cmd.opcode
        fctype = cmd.raw[4] if opcode == FABRICS_OPCODE else None
        cid = getattr(req, "cid", None)
        if cid is None:
            cid = cmd.cid
        now = getattr(req, "completed_at", None)
        submitted = getattr(req, "submitted_at", None)
        if not submitted:
            latency = None
            if not now or isinstance(now, int):
                now = self.clock()
        elif isinstance(submitted, int):
            end = now if now and isinstance(now, int) else time.perf_counter_ns()
            latency = (end - submitted) / 1e9
            now = self.clock()
        else:
            if not now:
                now = self.clock()
            latency = now - submitted
        result = (req.result or 0) | (getattr(req, "dw1", 0) or 0) << 32
        flags = getattr(req, "flags", None)
        if not isinstance(flags, int):
            flags = NVME_REQ_USERCMD if getattr(req, "passthru", False) else 0
        event = TraceEvent(
            COMPLETE, now, self._ctrl_name(req), qid, cid, opcode, fctype, flags,
            disk=getattr(req, "disk", None), tid=_tid(), status=req.status, result=result,
            retries=getattr(req, "retries", 0) or 0, latency=latency, error=getattr(req, "error", None),
            args_style=self.args)
        with self._lock:
            self.completions += 1
            if latency is not None:
                h = self.queue_histograms.get(qid)
                if h is None:
                    h = self.queue_histograms[qid] = LatencyHistogram()
                h.record(latency)
                key = _opcode_key(qid, opcode, fctype)
                h = self.opcode_histograms.get(key)
                if h is None:
                    h = self.opcode_histograms[key] = LatencyHistogram()
                h.record(latency)
        self._emit(event)

    def _ctrl_name(self, req: Any) -> str:
        name = getattr(req, "ctrl_name", None)
        if name:
            return name
        ctrl = getattr(req, "ctrl", None)
        if ctrl is not None:
            name = getattr(ctrl, "name", None)
            if isinstance(name, str) and name:
                return name
        return self.name

    def _emit(self, event: TraceEvent) -> None:
        self.recent.append(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                with self._lock:
                    self.listener_errors += 1
                    first = self.listener_errors == 1
                if first:
                    log.exception("trace listener %r failed (further failures are only counted)", listener)
        sink = self._sink
        if sink is not None:
            line = event.line() + "\n"
            with self._lock:
                if self._sink is sink:
                    sink.write(line)

    # -- listeners -----------------------------------------------------------

    def add_listener(self, fn: Callable[[TraceEvent], Any]) -> Callable[[TraceEvent], Any]:
        """Call ``fn(event)`` for every event (in the thread that produced
        it; keep it short).  Returns ``fn`` (usable as a decorator)."""
        with self._lock:
            self._listeners = self._listeners + (fn,)
        return fn

    def remove_listener(self, fn: Callable[[TraceEvent], Any]) -> None:
        with self._lock:
            listeners = list(self._listeners)
            listeners.remove(fn)
            self._listeners = tuple(listeners)

    @property
    def listeners(self) -> tuple[Callable[[TraceEvent], Any], ...]:
        return self._listeners

    # -- the ring ------------------------------------------------------------

    def events(self, name: str | None = None, *, qid: int | None = None) -> list[TraceEvent]:
        """A snapshot of the ring, oldest first, optionally only ``name``
        (:data:`SETUP` / :data:`COMPLETE`) events or one queue's."""
        while True:
            try:
                events = list(self.recent)
                break
            except RuntimeError:  # the deque changed while being copied
                continue
        if name is not None:
            events = [e for e in events if e.name == name]
        if qid is not None:
            events = [e for e in events if e.qid == qid]
        return events

    def lines(self) -> list[str]:
        """The text of the events in the ring, oldest first."""
        return [e.text for e in self.events()]

    def clear(self) -> None:
        """Empty the ring."""
        self.recent.clear()

    # -- the sink ------------------------------------------------------------

    def open_sink(self, target: str | os.PathLike | TextIO, *, line_buffered: bool = True) -> None:
        """Write one line per event to ``target``: a path (opened for
        appending, closed by :meth:`close_sink`) or an open text stream
        (left open).  Replaces a previous sink."""
        if isinstance(target, (str, os.PathLike)):
            stream: TextIO = open(target, "a", buffering=1 if line_buffered else -1, encoding="utf-8")
            owned = True
        else:
            stream, owned = target, False
        self.close_sink()
        with self._lock:
            self._sink, self._sink_owned = stream, owned

    def close_sink(self) -> None:
        with self._lock:
            sink, owned = self._sink, self._sink_owned
            self._sink, self._sink_owned = None, False
        if sink is not None:
            if owned:
                sink.close()
            else:
                sink.flush()

    # -- histograms ----------------------------------------------------------

    def histogram(self, *, qid: int | None = None, opcode: str | None = None) -> LatencyHistogram:
        """A snapshot of one queue's or one opcode's histogram (by Linux
        symbol, e.g. ``"nvme_cmd_read"``), or of all completions when
        neither is given.  An unknown key gives an empty histogram."""
        with self._lock:
            if qid is not None:
                h = self.queue_histograms.get(qid)
                return h.copy() if h else LatencyHistogram()
            if opcode is not None:
                h = self.opcode_histograms.get(opcode)
                return h.copy() if h else LatencyHistogram()
            total = LatencyHistogram()
            for h in self.queue_histograms.values():
                total.merge(h)
            return total

    def latency_table(self) -> str:
        """One row per queue and per opcode, in microseconds::

            latency (usecs)           count      min     mean      p50      p99    p99.9      max
            qid 0                         6     12.0     40.2     31.5     95.0     95.0     96.1
            qid 1                      1000      3.1      9.9      8.7     30.0     61.0     64.2
            nvme_cmd_read               800      3.1      9.0      8.2     28.0     60.0     62.5
        """
        with self._lock:
            rows = [(f"qid {qid}", h.copy()) for qid, h in sorted(self.queue_histograms.items())]
            rows += [(key, h.copy()) for key, h in sorted(self.opcode_histograms.items())]
        header = (f"{'latency (usecs)':<28}{'count':>8}{'min':>10}{'mean':>10}{'p50':>10}"
                  f"{'p99':>10}{'p99.9':>10}{'max':>10}")
        out = [header]
        for label, h in rows:
            s = h.summary()
            out.append(f"{label:<28}{h.count:>8}{_us(s['min']):>10}{_us(s['mean']):>10}{_us(s['p50']):>10}"
                       f"{_us(s['p99']):>10}{_us(s['p99.9']):>10}{_us(s['max']):>10}")
        return "\n".join(out) + "\n"

    def reset_stats(self) -> None:
        """Forget the histograms and counters (the ring stays)."""
        with self._lock:
            self.queue_histograms = {}
            self.opcode_histograms = {}
            self.setups = self.completions = self.listener_errors = 0

    # -- plumbing ------------------------------------------------------------

    def attach(self, ctrl: Any) -> "Tracer":
        """Install on a controller (``ctrl.tracer = self``); its ``name``,
        when it has one, becomes the default controller name."""
        name = getattr(ctrl, "name", None)
        if isinstance(name, str) and name:
            self.name = name
        ctrl.tracer = self
        return self

    def close(self) -> None:
        """Stop tracing and close the sink."""
        self.enabled = False
        self.close_sink()

    def __enter__(self) -> "Tracer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"<Tracer {self.name} {state} setups={self.setups} completions={self.completions}>"


def format_events(events: Iterable[TraceEvent]) -> str:
    """The sink lines of ``events``, newline-terminated."""
    return "".join(e.line() + "\n" for e in events)
