"""Our host (``NvmeController`` over ``TcpTransport``) against the Linux
kernel's NVMe/TCP target (nvmet-tcp) in the guest, reached on the host's
127.0.0.1 through QEMU's forward of the guest's port 4420.

The namespace is a file in the guest's RAM served with buffered I/O, so what
our host writes can be read back from that file in the guest, and what the
guest writes into the file our host must read: both directions are checked
against data neither side chose alone.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time

import pytest

from .conftest import KERNEL_TARGET_PORT

NQN = "nqn.2024-01.io.nvmestack.interop:kernel-target"
RESTRICTED_NQN = "nqn.2024-01.io.nvmestack.interop:restricted"
BACKING = "/tmp/kernel-target.img"
SIZE_MIB = 64
#: Our host's identity (a fixed one, so the restricted subsystem can allow it).
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:6e766d65-7374-6163-6b00-000000000042"
OTHER_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:6e766d65-7374-6163-6b00-0000000000ff"


# -- the host TCP transport's interface, in one place -------------------------------------------


def tcp_controller(addr: str, port: int, subnqn: str, *, io_queues: int | None = None, **options):
    """A live NvmeController over NVMe/TCP (``options`` go to TcpTransport)."""
    from nvmestack.host import NvmeController
    from nvmestack.host.tcp import TcpTransport

    options.setdefault("hostnqn", HOSTNQN)
    return NvmeController(TcpTransport(addr, port, subnqn=subnqn, **options), io_queues=io_queues)


def discover(addr: str, port: int) -> list:
    """The discovery log page's entries, as (subnqn, trsvcid, subtype) tuples."""
    from nvmestack.host.tcp import discover

    return [(e.subnqn, str(e.trsvcid).strip(), int(e.subtype)) for e in discover(addr, port, HOSTNQN)]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_target(vm):
    """The guest's nvmet-tcp serving a 64 MiB file as NQN's namespace 1 on
    port 4420 (any host), and RESTRICTED_NQN to HOSTNQN only; yields the
    host port that reaches it."""
    vm.check(f"nvmet-export -n {NQN} -p {KERNEL_TARGET_PORT} -s {SIZE_MIB} {BACKING}", 120)
    vm.check(f"nvmet-export -n {RESTRICTED_NQN} -p {KERNEL_TARGET_PORT} -s 8 /tmp/restricted.img", 60)
    cfg = "/sys/kernel/config/nvmet"
    vm.check(f"echo 0 > {cfg}/subsystems/{RESTRICTED_NQN}/attr_allow_any_host && "
             f"mkdir -p {cfg}/hosts/{HOSTNQN} && "
             f"ln -s {cfg}/hosts/{HOSTNQN} {cfg}/subsystems/{RESTRICTED_NQN}/allowed_hosts/{HOSTNQN}", 30)
    yield vm.hostfwd_port(KERNEL_TARGET_PORT)
    vm.run(f"rm -f {cfg}/ports/{KERNEL_TARGET_PORT}/subsystems/*; "
           f"rm -f {cfg}/subsystems/{RESTRICTED_NQN}/allowed_hosts/*; "
           f"for s in {NQN} {RESTRICTED_NQN}; do rmdir {cfg}/subsystems/$s/namespaces/*; rmdir {cfg}/subsystems/$s; done; "
           f"rmdir {cfg}/ports/{KERNEL_TARGET_PORT} {cfg}/hosts/*; rm -f {BACKING} /tmp/restricted.img", 60)


def guest_sha256(vm, offset: int, length: int) -> str:
    """SHA-256 of ``length`` bytes at ``offset`` of the namespace's backing file."""
    assert offset % 4096 == 0 and length % 4096 == 0
    out = vm.check(f"sync; dd if={BACKING} bs=4096 skip={offset // 4096} count={length // 4096} 2>/dev/null"
                   " | sha256sum", 60)
    return out.split()[0]


# -- tests ---------------------------------------------------------------------------------------


def test_discovery_lists_the_kernel_targets_subsystems(kernel_target):
    entries = discover("127.0.0.1", kernel_target)
    nqns = {nqn for nqn, _, _ in entries}
    assert NQN in nqns
    for nqn, trsvcid, subtype in entries:
        if nqn == NQN:
            assert trsvcid == str(KERNEL_TARGET_PORT)  # the guest's port; we reach it through the forward
            assert subtype == 2  # NVM subsystem


def test_connect_identify_write_read_flush_disconnect(vm, kernel_target):
    from nvmestack.host import CtrlState
    from nvmestack.spec.nvm import Flush, Read, Write

    ctrl = tcp_controller("127.0.0.1", kernel_target, NQN, io_queues=2)
    try:
        assert ctrl.state is CtrlState.LIVE
        idc = ctrl.identify
        assert idc.subnqn == NQN
        assert idc.mn.strip() == "Linux"  # nvmet's model number
        assert ctrl.io_queues  # at least one I/O queue connected
        _, dmesg = vm.run("dmesg | grep 'creating nvm controller' | tail -n 3", 30)
        assert HOSTNQN in dmesg  # the kernel target saw our host NQN in the Connect data

        ns = ctrl.namespaces[1]
        assert ns.size == SIZE_MIB << 20
        bs = ns.block_size

        # A write that fits in a capsule or needs R2T, and one far larger
        # than any MAXH2CDATA (several H2CData PDUs), each read back.
        rng = random.Random(7)
        for slba, nbytes in ((0, bs), (256, 256 << 10)):
            data = rng.randbytes(nbytes)
            buf = ctrl.alloc_buffer(nbytes)
            buf[:] = data
            ctrl.execute(Write(nsid=1, slba=slba, nblocks=nbytes // bs), buf)
            back = ctrl.alloc_buffer(nbytes)
            ctrl.execute(Read(nsid=1, slba=slba, nblocks=nbytes // bs), back)
            assert bytes(back) == data
            ctrl.execute(Flush(nsid=1))
            # The kernel target put exactly these bytes into its backing file.
            assert guest_sha256(vm, slba * bs, nbytes) == hashlib.sha256(data).hexdigest()

        # The other way: the guest writes the file, our host reads what it wrote.
        offset = 8 << 20
        out = vm.check(f"dd if=/dev/urandom of=/tmp/pattern bs=4096 count=64 2>/dev/null && "
                       f"dd if=/tmp/pattern of={BACKING} bs=4096 seek={offset // 4096} conv=notrunc 2>/dev/null && "
                       f"sync && sha256sum < /tmp/pattern", 60)
        back = ctrl.alloc_buffer(64 * 4096)
        ctrl.execute(Read(nsid=1, slba=offset // bs, nblocks=64 * 4096 // bs), back)
        assert hashlib.sha256(bytes(back)).hexdigest() == out.split()[0]
    finally:
        acked = ctrl.shutdown()  # CC.SHN through Property Set, then the connections close
    assert acked
    assert ctrl.state is not CtrlState.LIVE


def test_asynchronous_events_as_the_kernel_target_accepts(kernel_target, caplog):
    """nvmet refuses an Asynchronous Event Configuration with any bit it
    does not support (Invalid Field): our host enables what OAES names and
    the SMART / Health warnings nvmet reports, which it takes, and says
    nothing -- for the I/O controller and for the discovery controller."""
    import logging

    from nvmestack.spec.features import FeatureId

    caplog.set_level(logging.INFO, logger="nvmestack.host")
    ctrl = tcp_controller("127.0.0.1", kernel_target, NQN, io_queues=1)
    try:
        oaes = ctrl.identify.oaes
        assert ctrl.aec == (oaes & ((1 << 8) | (1 << 9) | (1 << 11) | (1 << 31))) | 0x1F
        assert ctrl.get_features(FeatureId.ASYNC_EVENT) == ctrl.aec  # what nvmet has in effect
    finally:
        ctrl.shutdown()
    discover("127.0.0.1", kernel_target)
    failed = [r.getMessage() for r in caplog.records if "asynchronous events" in r.getMessage()]
    assert not failed, failed


@pytest.mark.parametrize("hdr_digest,data_digest", [(True, False), (False, True), (True, True)],
                         ids=["header-digest", "data-digest", "both-digests"])
def test_digests(vm, kernel_target, hdr_digest, data_digest):
    from nvmestack.spec.nvm import Read, Write

    ctrl = tcp_controller("127.0.0.1", kernel_target, NQN, io_queues=1,
                          hdr_digest=hdr_digest, data_digest=data_digest)
    try:
        bs = ctrl.namespaces[1].block_size
        data = random.Random(hdr_digest * 2 + data_digest).randbytes(128 << 10)
        slba = (16 << 20) // bs
        buf = ctrl.alloc_buffer(len(data))
        buf[:] = data
        ctrl.execute(Write(nsid=1, slba=slba, nblocks=len(data) // bs), buf)
        back = ctrl.alloc_buffer(len(data))
        ctrl.execute(Read(nsid=1, slba=slba, nblocks=len(data) // bs), back)
        assert bytes(back) == data
        assert guest_sha256(vm, slba * bs, len(data)) == hashlib.sha256(data).hexdigest()
    finally:
        ctrl.shutdown()


def test_block_device_over_tcp(kernel_target):
    """The block layer on top: requests split by MDTS, several threads and
    queues at once, each checked against a shadow copy."""
    from nvmestack.host.block import BlockDevice

    ctrl = tcp_controller("127.0.0.1", kernel_target, NQN, io_queues=2)
    try:
        dev = BlockDevice(ctrl.namespaces[1], timeout=60)
        bs = dev.block_size
        base = 32 << 20
        region = 2 << 20
        shadows = {}

        def worker(i: int) -> None:
            rng = random.Random(100 + i)
            start = base + i * region
            shadow = bytearray(rng.randbytes(region))
            dev.write(start, bytes(shadow))  # larger than MDTS: split
            for _ in range(10):
                off = rng.randrange(0, region // bs - 64) * bs
                chunk = rng.randbytes(rng.randrange(1, 64) * bs)
                dev.write(start + off, chunk)
                shadow[off:off + len(chunk)] = chunk
            shadows[i] = shadow

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert sorted(shadows) == [0, 1, 2, 3]
        dev.flush()
        for i, shadow in shadows.items():
            assert bytes(dev.read(base + i * region, region)) == bytes(shadow)
    finally:
        ctrl.shutdown()


def test_allowed_hosts_are_enforced_by_the_kernel_target(kernel_target):
    from nvmestack.host import NvmeHostError

    ctrl = tcp_controller("127.0.0.1", kernel_target, RESTRICTED_NQN, io_queues=1)
    try:
        assert ctrl.identify.subnqn == RESTRICTED_NQN
    finally:
        ctrl.shutdown()
    with pytest.raises(NvmeHostError):
        tcp_controller("127.0.0.1", kernel_target, RESTRICTED_NQN, io_queues=1, hostnqn=OTHER_HOSTNQN)


def test_host_reconnects_when_the_kernel_target_comes_back(vm, kernel_target):
    """The kernel target's port goes away (its controllers are deleted, the
    connections close) and comes back: our host reconnects every
    reconnect_delay, a write issued during the outage waits and completes
    once, and the data written before and during the outage is there."""
    from nvmestack.host import CtrlState
    from nvmestack.spec.nvm import Read, Write

    cfg = "/sys/kernel/config/nvmet"
    ctrl = tcp_controller("127.0.0.1", kernel_target, NQN, io_queues=1, reconnect_delay=1, ctrl_loss_tmo=120)
    try:
        bs = ctrl.namespaces[1].block_size
        rng = random.Random(23)
        before, during = rng.randbytes(64 << 10), rng.randbytes(64 << 10)
        slba = (48 << 20) // bs
        nblocks = len(before) // bs
        ctrl.execute(Write(nsid=1, slba=slba, nblocks=nblocks), bytearray(before))

        vm.check(f"rm -f {cfg}/ports/{KERNEL_TARGET_PORT}/subsystems/* && rmdir {cfg}/ports/{KERNEL_TARGET_PORT}", 60)
        assert ctrl.wait_state(CtrlState.RESETTING, CtrlState.CONNECTING, timeout=60), ctrl.state
        req = ctrl.submit(Write(nsid=1, slba=slba + nblocks, nblocks=nblocks), bytearray(during), timeout=0)
        time.sleep(3)  # a few reconnect attempts fail meanwhile
        assert not req.done
        vm.check(f"nvmet-export -n {NQN} -p {KERNEL_TARGET_PORT} {BACKING} && "
                 f"nvmet-export -n {RESTRICTED_NQN} -p {KERNEL_TARGET_PORT} /tmp/restricted.img", 60)
        assert ctrl.wait_live(timeout=120), ctrl.state
        req.wait(120)
        req.raise_for_status()
        back = ctrl.alloc_buffer(2 * len(before))
        ctrl.execute(Read(nsid=1, slba=slba, nblocks=2 * nblocks), back)
        assert bytes(back) == before + during
        assert ctrl.stats["resets"] >= 1
        assert ctrl.double_completions == 0
    finally:
        ctrl.shutdown()
