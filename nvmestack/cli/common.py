"""What every command of the command line shares: one-line errors and exit
statuses, the nvme-cli option conventions (``-o normal|json|binary``,
``-H``, numbers in decimal or ``0x`` hex), output and progress bars.

Exit statuses follow nvme-cli 2.3: 0 on success, 1 on any failure (an NVMe
status, a transport or I/O error, bad arguments).  Errors are one line on
standard error: ``NVMe status: <name>: <text>(0x<value>)`` as nvme-cli
prints it, or ``<command>: <what is wrong>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Iterable

from ..spec.status import Status

__all__ = [
    "CliError",
    "StatusError",
    "EXIT_OK",
    "EXIT_FAIL",
    "command",
    "COMMANDS",
    "number",
    "byte",
    "word",
    "dword",
    "number_list",
    "add_output_format",
    "add_human",
    "output_format",
    "print_json",
    "write_binary",
    "Progress",
    "show_status",
]

EXIT_OK = 0
EXIT_FAIL = 1


class CliError(Exception):
    """A user-visible failure, said in one line (no traceback)."""

    def __init__(self, message: str, status: int = EXIT_FAIL):
        super().__init__(message)
        self.exit_status = status


class StatusError(CliError):
    """A command completed with an NVMe error status: printed as nvme-cli
    prints it (``NVMe status: ...(0x4002)``)."""

    def __init__(self, status: Status, what: str | None = None):
        self.status = status
        text = f"NVMe status: {status}"
        super().__init__(f"{what}: {text}" if what else text)


def show_status(status: Status, what: str | None = None) -> None:
    """Raise :class:`StatusError` unless ``status`` is success."""
    if status.value != 0:
        raise StatusError(status, what)


# ---------------------------------------------------------------------------
# the command table

#: name -> (register function, help).  Filled by :func:`command`.
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str, *, description: str | None = None, aliases: Iterable[str] = ()):
    """Register ``func(parser)`` as the builder of subcommand ``name``.  The
    builder adds the command's options and sets ``func`` (the handler,
    called with the parsed arguments; it returns the exit status or None
    for 0)."""

    def wrap(builder: Callable[[argparse.ArgumentParser], None]):
        COMMANDS[name] = (builder, help, description or help, tuple(aliases))  # type: ignore[assignment]
        return builder

    return wrap


# ---------------------------------------------------------------------------
# numbers the way nvme-cli reads them (strtoul with base 0)


def _parse_int(text: str) -> int:
    t = text.strip()
    neg = t.startswith("-")
    if neg:
        t = t[1:]
    if t[:2].lower() == "0x":
        value = int(t[2:], 16)
    elif len(t) > 1 and t.startswith("0") and t.isdigit():
        value = int(t, 8)
    else:
        value = int(t, 10)
    return -value if neg else value


def _bounded(bits: int, name: str):
    hi = (1 << bits) - 1

    def parse(text: str) -> int:
        try:
            value = _parse_int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name} argument but got {text!r}") from None
        if not 0 <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} argument {text!r} is out of range (0-{hi:#x})")
        return value

    parse.__name__ = name
    return parse


byte = _bounded(8, "byte")
word = _bounded(16, "word")
dword = _bounded(32, "dword")
qword = _bounded(64, "qword")


def number(text: str) -> int:
    """A non-negative integer in decimal, ``0x`` hex or ``0`` octal; a
    ``K``/``M``/``G``/``T`` (powers of 1024) suffix is accepted too."""
    t = text.strip()
    mult = 1
    suffixes = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    low = t.lower()
    for suffix in ("kib", "mib", "gib", "tib", "ki", "mi", "gi", "ti", "k", "m", "g", "t"):
        if low.endswith(suffix) and not low.startswith("0x"):
            mult = suffixes[suffix[0]]
            t = t[: -len(suffix)]
            break
    try:
        value = _parse_int(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number but got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number but got {text!r}")
    return value


def number_list(text: str) -> list[int]:
    """A comma-separated list of numbers (nvme-cli's ``--controllers=1,2``)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if part:
            out.append(number(part))
    return out


# ---------------------------------------------------------------------------
# output


def add_output_format(p: argparse.ArgumentParser, *, binary: bool = True) -> None:
    choices = "normal|json|binary" if binary else "normal|json"
    p.add_argument("-o", "--output-format", default="normal", metavar="FMT",
                   help=f"output format: {choices}")


def add_human(p: argparse.ArgumentParser, help: str = "show in human-readable format") -> None:
    p.add_argument("-H", "--human-readable", action="store_true", help=help)


def output_format(args: argparse.Namespace, *, binary: bool = True) -> str:
    """The ``-o`` choice, checked ("normal", "json" or "binary"; ``-b``
    / ``--raw-binary`` means binary)."""
    fmt = getattr(args, "output_format", "normal") or "normal"
    if getattr(args, "raw_binary", False):
        fmt = "binary"
    allowed = ("normal", "json", "binary") if binary else ("normal", "json")
    if fmt not in allowed:
        raise CliError(f"Invalid output format: {fmt}")
    return fmt


def print_json(obj: Any) -> None:
    """nvme-cli's JSON (json-c pretty printing)."""
    from .output import dumps

    sys.stdout.write(dumps(obj))
    sys.stdout.flush()


def write_binary(data: bytes | bytearray | memoryview) -> None:
    sys.stdout.flush()
    out = sys.stdout.buffer
    out.write(bytes(data))
    out.flush()


# ---------------------------------------------------------------------------
# progress


class Progress:
    """A progress bar on standard error, drawn only when standard error is a
    terminal and ``enabled`` (callers pass False in JSON/binary modes and
    scripts get no bar).  ``update(done)`` with ``done`` out of ``total``
    (units are the caller's; ``unit="B"`` prints sizes)."""

    def __init__(self, label: str, total: int, *, enabled: bool = True, unit: str = "", stream: Any = None):
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(enabled and isatty is not None and isatty() and os.environ.get("TERM") != "dumb")
        self.label = label
        self.total = max(0, int(total))
        self.unit = unit
        self.done = 0
        self._last = 0.0
        self._start = time.monotonic()
        self._drawn = False

    def _fmt(self, n: float) -> str:
        if self.unit != "B":
            return f"{int(n)}{self.unit}"
        for suffix, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if n >= size:
                return f"{n / size:.1f} {suffix}"
        return f"{int(n)} B"

    def update(self, done: int, force: bool = False) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        width = 30
        frac = min(1.0, done / self.total) if self.total else 1.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = f"\r{self.label} [{bar}] {frac * 100:5.1f}% {self._fmt(done)}/{self._fmt(self.total)}"
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def advance(self, n: int) -> None:
        self.update(self.done + n)

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.update(self.done, force=True)
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def dump_json_file(path: str, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
