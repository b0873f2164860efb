"""``nvmestack trace``: a live, decoded trace of the commands the host driver
sends, and their latency histograms.

The command line opens one controller per command, so ``trace`` runs
another nvmestack command in the same process with a
:class:`~nvmestack.host.trace.Tracer` installed on every controller it opens
(``devices.SESSION_OPTIONS["tracer"]``)::

    nvmestack trace [--output FILE] [--histogram] [--filter WHAT] -- COMMAND ARGS...

Every command set up and completed is printed as it happens, one line each,
in the format of Linux's ``nvme_setup_cmd`` / ``nvme_complete_rq``
tracepoints (``host/trace.py``), to standard error or FILE (the traced
command keeps standard output to itself, so ``-o json`` output stays
parseable); at the end a latency table per queue and per opcode, and with
``--histogram`` a log2 distribution per opcode, like bcc's biolatency.

``NVMESTACK_TRACE=FILE`` (``-`` for standard error) traces any command the
same way, appending to FILE; ``NVMESTACK_TRACE_FILTER`` takes the
``--filter`` words.  ``main()`` calls :func:`install_from_env`.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import textwrap
import threading
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from .common import CliError, command

__all__ = ["ENV_FILTER", "ENV_VAR", "EventFilter", "TraceSession", "install_from_env"]

ENV_VAR = "NVMESTACK_TRACE"
ENV_FILTER = "NVMESTACK_TRACE_FILTER"

_CLASSES = ("admin", "io", "fabrics")


def _norm(text: str) -> str:
    return text.strip().lower().replace("-", "_").replace(" ", "_")


def _short(symbol: str) -> str:
    for prefix in ("nvme_admin_", "nvme_cmd_", "nvme_fabrics_type_"):
        if symbol.startswith(prefix):
            return symbol[len(prefix):]
    return symbol


def _event_names(qid: int, opcode: int, fctype: int | None) -> frozenset[str]:
    """Every name a filter may use for a command: the Linux symbol
    (``nvme_cmd_read``), its tail (``read``) and the specification's name
    (``get_log_page``)."""
    return _names(qid == 0, opcode, fctype)


@functools.lru_cache(maxsize=1024)
def _names(admin: bool, opcode: int, fctype: int | None) -> frozenset[str]:
    from ..host.trace import linux_opcode_name
    from ..spec.opcodes import opcode_name

    symbol = linux_opcode_name(0 if admin else 1, opcode, fctype)
    return frozenset({symbol, _short(symbol), _norm(opcode_name(opcode, admin, fctype))})


_KNOWN: set[str] | None = None


def _known_names() -> set[str]:
    global _KNOWN
    if _KNOWN is None:
        from ..spec.opcodes import FABRICS_OPCODE

        known: set[str] = set()
        for op in range(256):
            if op == FABRICS_OPCODE:
                continue
            for qid in (0, 1):
                known |= {n for n in _event_names(qid, op, None) if not n.startswith("0x") and "unknown" not in n}
        for fctype in range(256):
            known |= {n for n in _event_names(0, FABRICS_OPCODE, fctype)
                      if not n.startswith("0x") and "unknown" not in n}
        _KNOWN = known
    return _KNOWN


class EventFilter:
    """Which events to keep: any of ``admin`` (admin commands), ``io`` (NVM
    commands on the I/O queues), ``fabrics`` (Fabrics commands), ``qid=N``,
    an opcode by name (``nvme_cmd_read``, ``read``, ``identify``,
    ``get_log_page``, ``property_get``) or by number (``0x06``: that opcode in
    any command set; ``admin:0x06``, ``io:0x02`` for one).  No words: keep
    everything."""

    def __init__(self, words: Iterable[str] = (), *, what: str = "trace: --filter"):
        self.what = what
        self.classes: set[str] = set()
        self.qids: set[int] = set()
        self.names: set[str] = set()
        self.opcodes: set[tuple[str | None, int]] = set()
        for word in words:
            for part in word.split(","):
                if part.strip():
                    self._add(part.strip())

    def _add(self, word: str) -> None:
        w = _norm(word)
        if w in _CLASSES:
            self.classes.add(w)
            return
        if w.startswith(("qid=", "qid:")):
            try:
                self.qids.add(int(w[4:], 0))
            except ValueError:
                raise CliError(f"{self.what} {word!r}: expected qid=N") from None
            return
        scope, _, rest = w.rpartition(":")
        if scope and scope not in _CLASSES:
            raise CliError(f"{self.what} {word!r}: expected admin:, io: or fabrics: before the opcode")
        try:
            value = int(rest, 0)
        except ValueError:
            value = None
        if value is not None:
            if not 0 <= value <= 0xFF:
                raise CliError(f"{self.what} {word!r}: an opcode is 0 to 0xff")
            self.opcodes.add((scope or None, value))
            return
        if scope:
            raise CliError(f"{self.what} {word!r}: expected a number after {scope}:")
        if w not in _known_names():
            raise CliError(f"{self.what} {word!r}: not a command class (admin, io, fabrics), qid=N or a "
                           f"known opcode name (e.g. nvme_cmd_read, read, identify, get_log_page)")
        self.names.add(w)

    def __bool__(self) -> bool:
        return bool(self.classes or self.qids or self.names or self.opcodes)

    def __call__(self, ev: Any) -> bool:
        if not self:
            return True
        cls = "fabrics" if ev.fabrics else "admin" if ev.qid == 0 else "io"
        if cls in self.classes or ev.qid in self.qids:
            return True
        code = ev.fctype if ev.fabrics else ev.opcode
        for scope, value in self.opcodes:
            if value == code and (scope is None or scope == cls):
                return True
        return bool(self.names) and not self.names.isdisjoint(_event_names(ev.qid, ev.opcode, ev.fctype))


def _histogram_key(ev: Any) -> str:
    name = ev.opcode_name
    if name.startswith("0x"):
        cls = "fabrics" if ev.fabrics else "admin" if ev.qid == 0 else "io"
        return f"{cls} {name}"
    return name


class TraceSession:
    """A tracer installed for every controller this process opens, from
    ``start()`` to ``stop()``: events kept by ``event_filter`` are written
    to ``stream`` as they happen (unless ``events`` is False), and their
    latencies go into histograms per queue and per opcode, printed by
    ``stop()`` (with the log2 distributions when ``histogram``)."""

    def __init__(self, stream: TextIO, *, event_filter: Callable[[Any], bool] | None = None,
                 histogram: bool = False, events: bool = True, decoded: bool = False,
                 close_stream: bool = False):
        from ..host.trace import Tracer

        self.stream = stream
        self.close_stream = close_stream
        self.filter = event_filter or (lambda ev: True)
        self.histogram = histogram
        self.events = events
        self.tracer = Tracer(ring_size=0, args="decoded" if decoded else "linux")
        self.tracer.add_listener(self._on_event)
        self.queue_histograms: dict[int, Any] = {}
        self.opcode_histograms: dict[str, Any] = {}
        self.setups = 0
        self.completions = 0
        self._lock = threading.Lock()
        self._previous: Any = None
        self._installed = False

    def _on_event(self, ev: Any) -> None:
        from ..host.trace import SETUP, LatencyHistogram

        if not self.filter(ev):
            return
        with self._lock:
            if ev.name == SETUP:
                self.setups += 1
            else:
                self.completions += 1
                if ev.latency is not None:
                    for table, key in ((self.queue_histograms, ev.qid), (self.opcode_histograms, _histogram_key(ev))):
                        h = table.get(key)
                        if h is None:
                            h = table[key] = LatencyHistogram()
                        h.record(ev.latency)
            if self.events:
                self.stream.write(ev.line() + "\n")
                self.stream.flush()

    def start(self) -> TraceSession:
        from .devices import SESSION_OPTIONS

        self._previous = SESSION_OPTIONS.get("tracer")
        SESSION_OPTIONS["tracer"] = self.tracer
        self._installed = True
        return self

    def summary(self) -> str:
        """The latency table (and distributions), in microseconds."""
        from ..host.trace import LatencyHistogram

        def us(value: float | None) -> str:
            return "-" if value is None else f"{value * 1e6:.1f}"

        with self._lock:
            rows = [(f"qid {qid}", h.copy()) for qid, h in sorted(self.queue_histograms.items())]
            ops = [(key, h.copy()) for key, h in sorted(self.opcode_histograms.items())]
        lines = [f"{self.setups} commands set up, {self.completions} completed",
                 f"{'latency (usecs)':<32}{'count':>8}{'min':>10}{'mean':>10}{'p50':>10}"
                 f"{'p99':>10}{'p99.9':>10}{'max':>10}"]
        for label, h in rows + ops:
            s = h.summary()
            lines.append(f"{label:<32}{h.count:>8}{us(s['min']):>10}{us(s['mean']):>10}{us(s['p50']):>10}"
                         f"{us(s['p99']):>10}{us(s['p99.9']):>10}{us(s['max']):>10}")
        text = "\n".join(lines) + "\n"
        if self.histogram:
            for label, h in ops:
                if isinstance(h, LatencyHistogram) and h.count:
                    text += f"\n{label}:\n" + h.render()
        return text

    def stop(self) -> None:
        from .devices import SESSION_OPTIONS

        if self._installed:
            if self._previous is None:
                SESSION_OPTIONS.pop("tracer", None)
            else:
                SESSION_OPTIONS["tracer"] = self._previous
            self._installed = False
        self.tracer.enabled = False
        try:
            self.stream.write("\n" + self.summary())
            self.stream.flush()
        finally:
            if self.close_stream:
                self.stream.close()

    def __enter__(self) -> TraceSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _open_stream(path: str | None, mode: str, what: str) -> tuple[TextIO, bool]:
    if path is None or path == "-":
        return sys.stderr, False
    try:
        return open(path, mode, buffering=1, encoding="utf-8"), True
    except OSError as exc:
        raise CliError(f"{what}: {path}: {exc.strerror or exc}") from None


def _wrap(text: str) -> str:
    """Fill each paragraph to 79 columns (the help keeps the paragraphs)."""
    return "\n\n".join(par if par.startswith(" ") else textwrap.fill(" ".join(par.split()), 79)
                         for par in text.split("\n\n"))


# ---------------------------------------------------------------------------
# the command


_DESCRIPTION = """\
Run another nvmestack command with every NVMe command the host driver sends traced: one line when a \
command is set up and one when it completes, in the format of Linux's nvme_setup_cmd and \
nvme_complete_rq tracepoints, printed as they happen to standard error (or --output FILE); at the end, \
the latency of the traced commands per queue and per opcode (count, min, mean, p50, p99, p99.9, max in \
microseconds), and with --histogram their log2 distributions.  The traced command's own output and exit \
status are unchanged.

--filter takes admin, io (NVM commands on I/O queues), fabrics, qid=N, an opcode name (nvme_cmd_read, \
read, identify, get_log_page, property_get ...) or number (0x06, admin:0x06, io:0x02); repeat it or \
separate words with commas to keep any of them.

Example:

  nvmestack trace --histogram --filter io -- bench nvme0n1 --rw randread --runtime 2

NVMESTACK_TRACE=FILE (or - for standard error) traces any nvmestack command the same way, appending to \
FILE; NVMESTACK_TRACE_FILTER holds --filter words."""


@command("trace", "run a command with the host driver's NVMe commands traced, and latency histograms",
         description=_wrap(_DESCRIPTION))
def _trace_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--output", metavar="FILE", help="write the trace and the histograms to FILE (default: stderr)")
    p.add_argument("--histogram", action="store_true", help="also print each opcode's log2 latency distribution")
    p.add_argument("--filter", action="append", default=[], metavar="WHAT",
                   help="trace only these commands (admin, io, fabrics, qid=N, an opcode name or number)")
    p.add_argument("-q", "--quiet", action="store_true", help="no event lines: the histograms only")
    p.add_argument("--decoded", action="store_true",
                   help="print every command's decoded fields where Linux prints raw cdw10 bytes")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS", help="the command to trace")
    p.set_defaults(func=run_trace)


def run_trace(args: argparse.Namespace) -> int:
    from .main import build_parser, run_handler

    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise CliError("trace: no command to trace (nvmestack trace [OPTIONS] -- COMMAND ARGS...)")
    if argv[0] == "trace":
        raise CliError("trace: cannot trace 'trace'")
    event_filter = EventFilter(args.filter)
    inner = build_parser().parse_args(argv)  # argument errors exit here, before anything is opened
    if not getattr(inner, "func", None):
        raise CliError(f"trace: {argv[0]}: not a command")
    stream, owned = _open_stream(args.output, "w", "trace")
    session = TraceSession(stream, event_filter=event_filter, histogram=args.histogram, events=not args.quiet,
                           decoded=args.decoded, close_stream=owned)
    with session:
        return run_handler(inner)


def install_from_env(args: argparse.Namespace) -> None:
    """When ``NVMESTACK_TRACE`` is set, make ``args.func`` (the command about
    to run) run under a :class:`TraceSession` writing to that file (``-``:
    standard error), appending, filtered by ``NVMESTACK_TRACE_FILTER``.
    Nothing for ``trace`` itself, or when a tracer is installed already."""
    from .devices import SESSION_OPTIONS

    path = os.environ.get(ENV_VAR)
    func = getattr(args, "func", None)
    if not path or func is None or getattr(args, "command", None) == "trace":
        return

    def traced(a: argparse.Namespace) -> Any:
        if SESSION_OPTIONS.get("tracer") is not None:
            return func(a)
        event_filter = EventFilter([os.environ.get(ENV_FILTER, "")], what=ENV_FILTER)
        stream, owned = _open_stream(path, "a", ENV_VAR)
        with TraceSession(stream, event_filter=event_filter, close_stream=owned):
            return func(a)

    args.func = traced
