"""The README stays true: its two commands, its example, the console script."""

import doctest
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands():
    return re.findall(r"```sh\n(.+?)\n```", README)


def test_readme_gives_exactly_two_commands_first():
    commands = _commands()
    assert len(commands) == 2
    install_and_serve, install_and_test = commands
    assert install_and_serve.startswith("./install.sh") and install_and_serve.endswith("nvmestack serve")
    assert "--test" in install_and_test and "pytest" in install_and_test


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _commands()[1] in ci


def test_readme_example_runs():
    parser = doctest.DocTestParser()
    test = parser.get_doctest(README, {}, "README.md", "README.md", 0)
    assert test.examples, "the README's tour has no example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0


def test_console_script_help():
    script = Path(sys.executable).parent / "nvmestack"
    assert script.exists(), "install.sh did not install the nvmestack console script"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "serve" in out and "usage: nvmestack" in out


def test_serve_documents_its_options():
    # The target itself is tested in tests/tcp/test_serve.py (a plain
    # `nvmestack serve` would listen on 4420 until stopped).
    out = subprocess.run([sys.executable, "-m", "nvmestack", "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for option in ("--config", "--addr", "--port", "--discovery-port", "--data-dir"):
        assert option in out.stdout
    assert "not built yet" not in out.stdout + out.stderr
