"""Record what Debian 12's nvme-cli 2.3 prints, through the Linux kernel's
NVMe/TCP host in the test guest, for the fabrics and listing commands against
``nvmestack serve`` (not run by the tests; needs QEMU, see
``nvmestack.testing.vm``)::

    .venv/bin/python tests/cli/data/make_golden_fabrics.py

Writes ``nvme-cli-2.3/fabrics/<command>.txt`` (standard output; the exit
status on the first line as ``# rc=N``).  The guest reaches the host's
127.0.0.1 as 10.0.2.100.
"""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "nvme-cli-2.3" / "fabrics"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0e8c3a5e-1d31-4f4e-9a3c-5b2f0d6e7a11"
HOSTID = "0e8c3a5e-1d31-4f4e-9a3c-5b2f0d6e7a11"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    sys.path.insert(0, str(HERE.parents[2]))
    from nvmestack.cli.serve import DEFAULT_NQN
    from nvmestack.testing.vm import VM, ensure_image

    port, dport = free_port(), free_port()
    data = pathlib.Path(tempfile.mkdtemp()) / "data"
    serve = subprocess.Popen([sys.executable, "-m", "nvmestack", "serve", "--port", str(port), "--discovery-port",
                              str(dport), "--data-dir", str(data)], stdout=subprocess.DEVNULL)
    guest = VM(ensure_image(install=True), mem=1024, cpus=2, host_ports=[port, dport])
    guest.boot()
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        guest.run("modprobe nvme-tcp", 60, check=True)
        guest.run(f"mkdir -p /etc/nvme && echo {HOSTNQN} > /etc/nvme/hostnqn && echo {HOSTID} > /etc/nvme/hostid",
                  30, check=True)
        addr = "10.0.2.100"

        def rec(name: str, cmd: str) -> None:
            rc, out = guest.run(cmd + " 2>/dev/null", 120)
            (OUT / f"{name}.txt").write_text(f"# rc={rc} {cmd}\n{out}")
            print(name, rc)

        rec("discover", f"nvme discover -t tcp -a {addr} -s {dport}")
        rec("discover-json", f"nvme discover -t tcp -a {addr} -s {dport} -o json")
        rec("connect", f"nvme connect -t tcp -a {addr} -s {port} -n {DEFAULT_NQN}")
        time.sleep(1)
        rec("connect-again", f"nvme connect -t tcp -a {addr} -s {port} -n {DEFAULT_NQN}")
        rec("list", "nvme list")
        rec("list-json", "nvme list -o json")
        rec("list-v", "nvme list -v")
        rec("list-v-json", "nvme list -v -o json")
        rec("list-subsys", "nvme list-subsys")
        rec("list-subsys-json", "nvme list-subsys -o json")
        rec("list-subsys-dev", "nvme list-subsys /dev/nvme0n1")
        rec("list-ns", "nvme list-ns /dev/nvme0")
        rec("list-ns-json", "nvme list-ns /dev/nvme0 -o json")
        rec("list-ns-all", "nvme list-ns /dev/nvme0 --all")
        rec("list-ctrl", "nvme list-ctrl /dev/nvme0")
        rec("list-ctrl-json", "nvme list-ctrl /dev/nvme0 -o json")
        rec("disconnect", f"nvme disconnect -n {DEFAULT_NQN}")
        rec("disconnect-none", "nvme disconnect -n nqn.2026-11.io.nvmestack:nothing")
        rec("connect-all", f"nvme connect-all -t tcp -a {addr} -s {dport}")
        rec("connect-all-json", f"nvme connect-all -t tcp -a {addr} -s {dport} -o json")
        rec("disconnect-d", "nvme disconnect -d /dev/nvme0")
        rec("connect-json", f"nvme connect -t tcp -a {addr} -s {port} -n {DEFAULT_NQN} -o json")
        rec("disconnect-all", "nvme disconnect-all")
        rec("connect-bad-nqn", f"nvme connect -t tcp -a {addr} -s {port} -n nqn.2026-11.io.nvmestack:nothing")
        rec("gen-hostnqn", "nvme gen-hostnqn")
        rec("show-hostnqn", "nvme show-hostnqn")
    finally:
        guest.shutdown()
        serve.terminate()
        serve.wait(60)


if __name__ == "__main__":
    main()
