"""Registers ``serve`` (see :mod:`nvmestack.cli.serve`) and ``version``."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from .common import command


def _serve(args: argparse.Namespace) -> int:
    from .serve import ServeError, run

    try:
        return run(args)
    except ServeError as exc:
        print(f"nvmestack serve: {exc}", file=sys.stderr)
        return 1  # as every other command (nvme-cli's convention)


@command("serve", "run the NVMe/TCP target (from --config FILE, or DATA-DIR/target.json)",
         description="Run the NVMe/TCP target: the subsystems and ports of --config FILE, else of "
         "DATA-DIR/target.json, which the first start writes with the embedded default (one subsystem with "
         "one 1 GiB sparse file-backed namespace, 127.0.0.1:4420, discovery on 8009).  Changes to the file "
         "('nvmestack target ...') are applied while it runs (SIGHUP: at once).  SIGINT/SIGTERM stop it "
         "cleanly (data flushed, state saved).")
def _serve_parser(p: argparse.ArgumentParser) -> None:
    from .serve import add_arguments

    add_arguments(p)
    p.set_defaults(func=_serve)


def _version(args: argparse.Namespace) -> int:
    print(f"nvmestack version {__version__}")
    return 0


@command("version", "show the program version")
def _version_parser(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=_version)
