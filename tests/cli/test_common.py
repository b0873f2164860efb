"""The command line's shared pieces: numbers as nvme-cli reads them, the
progress bar's TTY rule, one-line errors and exit statuses."""

from __future__ import annotations

import argparse
import io

import pytest

from nvmestack.cli.common import Progress, byte, dword, number, number_list


def test_numbers():
    assert number("4096") == 4096 and number("0x1000") == 4096 and number("010") == 8
    assert number("4k") == 4096 and number("1G") == 1 << 30 and number("2MiB") == 2 << 20
    assert number_list("1,0x2, 3") == [1, 2, 3]
    assert byte("0xff") == 255 and dword("0xffffffff") == 0xFFFFFFFF
    for bad in ("x", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            number(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        byte("256")


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_only_on_a_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    tty = _Tty()
    with Progress("fw-download", 1 << 20, unit="B", stream=tty) as bar:
        bar.update(512 << 10, force=True)
        bar.update(1 << 20, force=True)
    text = tty.getvalue()
    assert "50.0%" in text and "100.0%" in text and "1.0 MiB/1.0 MiB" in text and text.endswith("\n")
    pipe = io.StringIO()  # not a terminal: nothing
    with Progress("x", 10, stream=pipe) as bar:
        bar.update(10, force=True)
    assert pipe.getvalue() == ""
    quiet = _Tty()  # JSON mode: disabled even on a terminal
    with Progress("x", 10, enabled=False, stream=quiet) as bar:
        bar.update(10, force=True)
    assert quiet.getvalue() == ""


def test_argument_errors_are_one_line_exit_1(cli):
    r = cli("list-ns")  # missing device
    assert r.rc == 1 and len(r.err.strip().splitlines()) == 1 and "required" in r.err
    r = cli("nosuchcommand")
    assert r.rc == 1 and "invalid choice" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("id-ctrl", "/nonexistent/dev")
    assert r.rc == 1 and r.err.strip() == "/nonexistent/dev: No such file or directory"
