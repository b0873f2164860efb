"""``nvmestack``: the command line.

``serve`` (the NVMe/TCP target), the nvme-cli compatible commands (same
names, options, text and JSON output, exit statuses), target configuration
(``target ...``), emulated PCIe drives (``drive ...``), ``bench`` and
``trace``.  Each group of commands lives in its own module, which registers
its subcommands with :func:`nvmestack.cli.common.command`; this module builds
the parser from them and turns every user-facing failure into one line on
standard error and exit status 1 (nvme-cli's convention), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from .. import __version__
from .common import COMMANDS, EXIT_FAIL, CliError

PROG = "nvmestack"

#: Modules that register commands, in the order of the help listing.
COMMAND_MODULES = (
    "serve_cmd",
    "fabrics",
    "info",
    "features",
    "manage",
    "io",
    "drive",
    "vfio_user",
    "target_config",
    "bench",
    "trace",
)


class _Parser(argparse.ArgumentParser):
    """argparse with nvme-cli's exit status for bad arguments (1) and the
    error said in one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_FAIL, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _load_modules() -> None:
    for name in COMMAND_MODULES:
        full = f"{__package__}.{name}"
        if importlib.util.find_spec(full) is not None:
            importlib.import_module(full)


def build_parser() -> argparse.ArgumentParser:
    _load_modules()
    parser = _Parser(
        prog=PROG,
        description="A complete NVMe stack in Python: device, host driver and nvme-cli compatible tools.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (builder, help_text, description, aliases) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=description, aliases=list(aliases))
        builder(p)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines())


def run_handler(args: argparse.Namespace) -> int:
    """Call the command's handler and map failures to one line + status."""
    from ..host.request import ControllerDeadError, NvmeStatusError
    from ..host.transport import TransportError

    try:
        result = args.func(args)
    except CliError as exc:
        print(_one_line(exc), file=sys.stderr)
        return exc.exit_status
    except NvmeStatusError as exc:
        print(f"NVMe status: {exc.status}", file=sys.stderr)
        return EXIT_FAIL
    except (ControllerDeadError, TransportError) as exc:
        print(f"{args.command}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:
        return EXIT_FAIL
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{args.command}:{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    return 0 if result is None else int(result)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_FAIL
    from .trace import install_from_env  # NVMESTACK_TRACE=FILE traces any command

    install_from_env(args)
    try:
        return run_handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
