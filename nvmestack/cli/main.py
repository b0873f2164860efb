"""``nvmestack``: the command line.

Subcommands are added here as the stack grows (the nvme-cli compatible
commands, target configuration, bench, trace).  Errors are one line on
stderr and a non-zero exit status, never a traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__

PROG = "nvmestack"


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"{PROG} version {__version__}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServeError, run

    try:
        return run(args)
    except ServeError as exc:
        print(f"{PROG} serve: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A complete NVMe stack in Python: device, host driver and nvme-cli compatible tools.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "serve",
        help="run the NVMe/TCP target (from --config FILE, or the embedded default)",
        description="Run the NVMe/TCP target: the subsystems and ports of --config FILE, or the embedded "
        "default (one subsystem with one 1 GiB sparse file-backed namespace, 127.0.0.1:4420, discovery "
        "on 8009).  SIGINT/SIGTERM stop it cleanly (data flushed, state saved).",
    )
    from .serve import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("version", help="show the program version")
    p.set_defaults(func=_cmd_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
