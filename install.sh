#!/bin/sh
# Install nvmestack into ./.venv on a Debian machine, with the system packages it needs.
#   ./install.sh          the package and its runtime dependencies
#   ./install.sh --test   the same plus what the test suite needs
set -eu
cd "$(dirname "$0")"

extra=""
case "${1:-}" in
    "") ;;
    --test) extra="[test]" ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
esac

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "nvmestack needs Python 3.11 or newer as python3 (Debian 12 has it)" >&2
    exit 1
fi

# Debian splits venv/ensurepip out of python3; install it when missing.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq python3-venv
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra"
