#!/bin/sh
# Install nvmestack into ./.venv on a Debian machine, with the system packages it needs.
#   ./install.sh          the package and its runtime dependencies
#   ./install.sh --test   the same plus what the test suite needs (incl. the Debian packages of
#                         the interoperability tests: QEMU, busybox, nvme-cli, fio, e2fsprogs ...)
#   ./install.sh --bench  the package plus the native tools bench/io_path.py compares with
#                         (sockperf, iperf3, fio) and py-spy for profiles
set -eu
cd "$(dirname "$0")"

extra=""
debs=""
case "${1:-}" in
    "") ;;
    --test) extra="[test]"
            debs="qemu-system-x86 busybox-static nvme-cli fio e2fsprogs kmod cpio socat" ;;
    --bench) extra="[bench]"
             debs="sockperf iperf3 fio util-linux" ;;
    *) echo "usage: $0 [--test|--bench]" >&2; exit 2 ;;
esac

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "nvmestack needs Python 3.11 or newer as python3 (Debian 12 has it)" >&2
    exit 1
fi

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

# Debian splits venv/ensurepip out of python3; install it when missing.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq python3-venv
fi

# The interoperability tests boot a QEMU guest with the real Linux NVMe/TCP drivers
# (tests/interop); without these packages they are skipped, the rest of the suite runs.
missing=""
for p in $debs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    { $sudo apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null; } ||
        echo "install.sh: could not install$missing; the tests or benchmarks that need them will say so" >&2
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra"
