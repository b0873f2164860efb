"""The guest itself and the paths between it and the host, checked with the
kernel's own drivers and nvmestack's PDU formats (nvmestack.spec.tcp):

- the guest has the drivers and tools the other interop tests use;
- the kernel's host against the kernel's target inside the guest (the
  reference the other tests compare with);
- host -> guest: an ICReq built by nvmestack.spec.tcp through QEMU's hostfwd
  gets nvmet-tcp's ICResp, which nvmestack.spec.tcp decodes;
- guest -> host: the kernel host's ``nvme discover`` to 10.0.2.100:P arrives
  at a listener on the host's 127.0.0.1:P as an ICReq.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

from nvmestack.spec.tcp import ICReq, ICResp, PduType, decode_header
from nvmestack.testing.vm import GUEST_HOSTNQN, HOST_ADDR

from .conftest import KERNEL_TARGET_PORT

NQN = "nqn.2024-01.io.nvmestack.interop:harness"
PORT = 4421  # in the guest only


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_guest_has_the_drivers_and_tools(vm):
    out = vm.check("uname -r; nvme version; fio --version; cat /etc/nvme/hostnqn", 60)
    assert "-amd64" in out and "nvme version 2." in out and "fio-3" in out
    assert GUEST_HOSTNQN in out
    vm.check("modprobe -a nvme-tcp nvmet-tcp null_blk loop ext4 && lsmod | grep -q nvmet_tcp", 120)


def test_kernel_host_against_kernel_target_in_the_guest(vm):
    vm.check(f"nvmet-export -n {NQN} -p {PORT} -s 32 /tmp/harness.img && modprobe nvme-tcp", 120)
    try:
        out = vm.check(f"nvme discover -t tcp -a 127.0.0.1 -s {PORT}", 60)
        assert NQN in out
        vm.check(f"nvme connect -t tcp -a 127.0.0.1 -s {PORT} -n {NQN} -g -G", 60)
        dev = vm.check(f"nvme-dev {NQN}", 60).strip()
        out = vm.check(f"fio --name=h --filename={dev} --rw=randwrite --bs=4k --size=1M --iodepth=32 "
                       "--ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 --output-format=json", 300)
        job = json.loads(out[out.index("{"):])["jobs"][0]
        assert job["error"] == 0 and job["read"]["io_bytes"] == 1 << 20
    finally:
        vm.run(f"nvme disconnect -n {NQN}", 60)
        cfg = "/sys/kernel/config/nvmet"
        vm.run(f"rm -f {cfg}/ports/{PORT}/subsystems/{NQN}; rmdir {cfg}/ports/{PORT}; "
               f"rmdir {cfg}/subsystems/{NQN}/namespaces/1 {cfg}/subsystems/{NQN}; rm -f /tmp/harness.img", 60)


def test_host_reaches_the_kernel_target_through_hostfwd(vm):
    vm.check(f"nvmet-export -n {NQN}-fwd -p {KERNEL_TARGET_PORT} -s 8 /tmp/harness-fwd.img", 120)
    try:
        icreq = ICReq()
        icreq.maxr2t = 0
        icreq.hdgst_enable = True
        with socket.create_connection(("127.0.0.1", vm.hostfwd_port(KERNEL_TARGET_PORT)), timeout=60) as s:
            s.sendall(bytes(icreq))
            answer = recv_exact(s, 128)
        resp = decode_header(answer)
        assert isinstance(resp, ICResp)
        assert resp.pdu_type == PduType.ICRESP and resp.hlen == 128 and resp.plen == 128
        assert resp.pfv == 0
        assert resp.hdgst_enable  # nvmet grants the header digest it was asked for
        assert resp.maxh2cdata >= 4096
    finally:
        cfg = "/sys/kernel/config/nvmet"
        vm.run(f"rm -f {cfg}/ports/{KERNEL_TARGET_PORT}/subsystems/{NQN}-fwd; "
               f"rmdir {cfg}/subsystems/{NQN}-fwd/namespaces/1 {cfg}/subsystems/{NQN}-fwd; "
               "rm -f /tmp/harness-fwd.img", 60)


def test_guest_reaches_the_host_through_guestfwd(vm, interop_ports):
    port = interop_ports["discovery"]
    first = []
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(4)
        listener.settimeout(120)

        def accept() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(60)
                first.append(recv_exact(conn, 128))

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        vm.check("modprobe nvme-tcp", 60)
        rc, out = vm.run(f"nvme discover -t tcp -a {HOST_ADDR} -s {port}", 120)
        t.join(120)
    assert rc != 0  # nobody answered the ICReq
    if not first:
        pytest.fail("no connection from the guest arrived; nvme discover said:\n" + out)
    icreq = decode_header(first[0])
    assert isinstance(icreq, ICReq)
    assert icreq.hlen == 128 and icreq.plen == 128 and icreq.pfv == 0
