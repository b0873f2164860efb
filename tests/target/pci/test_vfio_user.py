"""The vfio-user server's message handling, without QEMU: every command,
malformed headers and sizes, unknown commands, DMA outside any window,
unmap of an unknown window, posted writes, interrupts through eventfds, a
host driving the controller through messages only, and the socket loop
(a client that goes away, the next one, DMA_READ/DMA_WRITE)."""

import array
import errno
import json
import os
import socket
import struct
import threading

import pytest

from nvmestack.memory import DmaError, PhysicalMemory
from nvmestack.spec.pci import Cfg
from nvmestack.spec.registers import Reg
from nvmestack.spec.vfio_user import (
    DEVICE_INFO,
    DMA_MAP,
    DMA_RW,
    DMA_UNMAP,
    HEADER,
    IRQ_INFO,
    IRQ_SET,
    REGION_ACCESS,
    REGION_INFO,
    VERSION,
    Command,
    IrqIndex,
    IrqInfoFlags,
    IrqSetFlags,
    MsgFlags,
    RegionIndex,
)
from nvmestack.target.pci.config import PCI_DEVICE_ID, PCI_VENDOR_ID
from nvmestack.target.pci.function import PciFunction
from nvmestack.target.pci.lowlevel import RawHost
from nvmestack.target.pci.vfio_user import DmaWindows, VfioUserDevice, VfioUserServer

from .conftest import ok

BASE = 0x1_0000_0000
MEM_SIZE = 8 << 20


def msg(command, payload=b"", *, msg_id=7, flags=0, size=None):
    payload = bytes(payload)
    return HEADER.pack(msg_id, command, 16 + len(payload) if size is None else size, flags, 0) + payload


def parse(reply):
    msg_id, command, size, flags, err = HEADER.unpack_from(reply)
    assert size == len(reply)
    return msg_id, command, flags, err, reply[16:]


def ok_reply(reply, command):
    msg_id, cmd, flags, err, payload = parse(reply)
    assert (cmd, flags & 0xF, flags & MsgFlags.ERROR, err) == (command, 1, 0, 0), (cmd, flags, err)
    return payload


def err_of(reply):
    _id, _cmd, flags, err, payload = parse(reply)
    assert flags & MsgFlags.ERROR and payload == b""
    return err


@pytest.fixture
def dev(subsystem):
    fn = PciFunction(subsystem, DmaWindows(), mode="inline")
    d = VfioUserDevice(fn)
    yield d
    d.close()
    fn.close()


@pytest.fixture
def shared(tmp_path):
    """Host memory in a file (as QEMU's memfd RAM): the host's PhysicalMemory
    and a way to open descriptors of it for DMA_MAP."""
    path = str(tmp_path / "ram")
    mem = PhysicalMemory(MEM_SIZE, base=BASE, path=path)
    mem.fd = lambda: os.open(path, os.O_RDWR)
    yield mem
    mem.close()


def dma_map(dev, mem, addr=BASE, size=MEM_SIZE, offset=0, prot=3):
    fd = mem.fd()
    return dev.handle(msg(Command.DMA_MAP, DMA_MAP.pack(32, prot, offset, addr, size)), [fd])


def fd_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


# -- VERSION, GET_INFO, regions, IRQ info --------------------------------------------


def test_version_answers_its_capabilities(dev):
    offer = {"capabilities": {"max_msg_fds": 16, "max_data_xfer_size": 1 << 20, "write_multiple": True}}
    reply = dev.handle(msg(Command.VERSION, VERSION.pack(0, 0) + json.dumps(offer).encode() + b"\0", msg_id=3))
    assert parse(reply)[0] == 3
    payload = ok_reply(reply, Command.VERSION)
    assert VERSION.unpack_from(payload) == (0, 0)
    caps = json.loads(payload[4:].rstrip(b"\0"))["capabilities"]
    assert caps["max_data_xfer_size"] == 1 << 20 and caps["pgsizes"] == 4096
    assert "write_multiple" not in caps and "migration" not in caps
    assert dev.client_version == offer


@pytest.mark.parametrize("payload, code", [
    (b"", errno.EINVAL),
    (VERSION.pack(1, 0) + b"{}\0", errno.ENOTSUP),
    (VERSION.pack(0, 0) + b"{not json\0", errno.EINVAL),
    (VERSION.pack(0, 0) + b"[1]\0", errno.EINVAL),
])
def test_version_refused(dev, payload, code):
    assert err_of(dev.handle(msg(Command.VERSION, payload))) == code


def test_get_info(dev):
    payload = ok_reply(dev.handle(msg(Command.DEVICE_GET_INFO, DEVICE_INFO.pack(16, 0, 0, 0))), Command.DEVICE_GET_INFO)
    assert DEVICE_INFO.unpack(payload) == (16, 3, 9, 5)
    assert err_of(dev.handle(msg(Command.DEVICE_GET_INFO, b"\x10\0\0\0"))) == errno.EINVAL


def region_info(dev, index):
    reply = dev.handle(msg(Command.DEVICE_GET_REGION_INFO, REGION_INFO.pack(32, 0, index, 0, 0, 0)))
    return REGION_INFO.unpack(ok_reply(reply, Command.DEVICE_GET_REGION_INFO))


def test_region_info_bar0_and_config(dev):
    _argsz, flags, index, _cap, size, _off = region_info(dev, RegionIndex.BAR0)
    assert (flags, index, size) == (3, 0, dev.function.bar0_size)
    assert region_info(dev, RegionIndex.CONFIG)[4] == 4096
    for index in (1, 2, 3, 4, 5, RegionIndex.ROM, RegionIndex.VGA):
        assert region_info(dev, index)[1::3] == (0, 0)
    assert err_of(dev.handle(msg(Command.DEVICE_GET_REGION_INFO, REGION_INFO.pack(32, 0, 9, 0, 0, 0)))) == errno.EINVAL
    assert err_of(dev.handle(msg(Command.DEVICE_GET_REGION_INFO, b"\0" * 8))) == errno.EINVAL


def cfg_read(dev, offset, count):
    reply = dev.handle(msg(Command.REGION_READ, REGION_ACCESS.pack(offset, RegionIndex.CONFIG, count)))
    payload = ok_reply(reply, Command.REGION_READ)
    assert REGION_ACCESS.unpack_from(payload) == (offset, RegionIndex.CONFIG, count)
    return payload[16:]


def cfg_write(dev, offset, data):
    reply = dev.handle(msg(Command.REGION_WRITE, REGION_ACCESS.pack(offset, RegionIndex.CONFIG, len(data)) + data))
    assert ok_reply(reply, Command.REGION_WRITE) == REGION_ACCESS.pack(offset, RegionIndex.CONFIG, len(data))


def test_config_space_reads_with_our_ids_and_bar_sizing(dev):
    head = cfg_read(dev, 0, 256)  # QEMU reads the whole header at once
    assert struct.unpack_from("<HH", head) == (PCI_VENDOR_ID, PCI_DEVICE_ID) != (0x1B36, 0x0010)
    assert head[9:12] == bytes([2, 8, 1])  # NVMe class code 010802h
    assert head[0x10] & 0x6 == 0x4  # BAR0: 64-bit memory
    cfg_write(dev, Cfg.BAR0, b"\xff\xff\xff\xff")
    cfg_write(dev, Cfg.BAR1, b"\xff\xff\xff\xff")
    lo, hi = struct.unpack("<II", cfg_read(dev, Cfg.BAR0, 8))
    mask = (hi << 32 | lo) & ~0xF
    assert (~mask + 1) & ((1 << 64) - 1) == dev.function.bar0_size
    assert cfg_read(dev, 0x30, 4) == bytes(4)  # no expansion ROM


def test_identify_vid_ssvid_equal_configuration_space(subsystem):
    fn = PciFunction(subsystem, PhysicalMemory(4 << 20), mode="inline", vendor_id=0x1234, device_id=0x5678,
                     subsystem_vendor_id=0xABCD, subsystem_id=0x0042)
    try:
        h = RawHost(fn)
        h.bring_up()
        cqe, data = h.identify(1)
        ok(cqe)
        vid, ssvid = struct.unpack_from("<HH", data)
        assert (vid, ssvid) == (h.cfg_read(Cfg.VENDOR_ID, 2), h.cfg_read(Cfg.SUBSYSTEM_VENDOR_ID, 2)) == (0x1234, 0xABCD)
    finally:
        fn.close()


def irq_info(dev, index):
    reply = dev.handle(msg(Command.DEVICE_GET_IRQ_INFO, IRQ_INFO.pack(16, 0, index, 0)))
    return IRQ_INFO.unpack(ok_reply(reply, Command.DEVICE_GET_IRQ_INFO))


def test_irq_info(dev):
    assert irq_info(dev, IrqIndex.INTX)[1:] == (IrqInfoFlags.EVENTFD | IrqInfoFlags.MASKABLE | IrqInfoFlags.AUTOMASKED, 0, 1)
    assert irq_info(dev, IrqIndex.MSIX)[3] == dev.function.msix_vectors
    assert irq_info(dev, IrqIndex.MSI)[3] == dev.function.config.msi_vectors_capable
    assert irq_info(dev, IrqIndex.ERR)[3] == 0
    assert err_of(dev.handle(msg(Command.DEVICE_GET_IRQ_INFO, IRQ_INFO.pack(16, 0, 5, 0)))) == errno.EINVAL


# -- malformed and unknown messages -----------------------------------------------------


def test_unknown_and_unsupported_commands(dev):
    for command in (0, 14, 99, Command.DMA_READ, Command.DMA_WRITE, Command.REGION_WRITE_MULTI,
                    Command.DEVICE_FEATURE, Command.DEVICE_GET_REGION_IO_FDS):
        reply = dev.handle(msg(command, b"abcd", msg_id=9))
        assert parse(reply)[:2] == (9, command) and err_of(reply) == errno.ENOTSUP


def test_malformed_headers(dev):
    assert err_of(dev.handle(b"\x01\x00\x01")) == errno.EINVAL  # not even a header
    assert err_of(dev.handle(msg(Command.DEVICE_GET_INFO, DEVICE_INFO.pack(16, 0, 0, 0), size=40))) == errno.EINVAL
    assert err_of(dev.handle(msg(Command.DEVICE_GET_INFO, DEVICE_INFO.pack(16, 0, 0, 0), flags=5))) == errno.EINVAL


def test_posted_messages_are_never_answered_even_when_bad(dev):
    assert dev.handle(msg(99, flags=MsgFlags.NO_REPLY)) is None
    assert dev.handle(msg(Command.REGION_WRITE, b"\0" * 3, flags=MsgFlags.NO_REPLY)) is None


def test_descriptors_of_refused_messages_are_closed(dev):
    fds = [os.eventfd(0) for _ in range(3)]
    dev.handle(msg(99), fds[:1])
    dev.handle(msg(Command.DEVICE_SET_IRQS, IRQ_SET.pack(20, 0x24, 9, 0, 1)), fds[1:2])
    dev.handle(msg(Command.DMA_MAP, b"short"), fds[2:])
    assert not any(fd_open(fd) for fd in fds)


def test_a_reply_to_nothing_we_asked_is_ignored(dev):
    assert dev.handle(msg(Command.DMA_READ, DMA_RW.pack(0, 4) + b"abcd", flags=MsgFlags.REPLY)) is None


# -- DMA windows ------------------------------------------------------------------------


def test_dma_map_maps_the_descriptor(dev, shared):
    assert ok_reply(dma_map(dev, shared), Command.DMA_MAP) == b""
    buf = shared.allocate(4096)
    buf.view[:5] = b"hello"
    assert dev.memory.read(buf.addr, 5) == b"hello"
    dev.memory.write(buf.addr + 100, b"device")
    assert bytes(buf.view[100:106]) == b"device"
    assert dev.memory.windows == [(BASE, MEM_SIZE, True)]


def test_dma_outside_every_window(dev, shared):
    dma_map(dev, shared, size=1 << 20)
    with pytest.raises(DmaError):
        dev.memory.view(BASE - 8, 16)
    with pytest.raises(DmaError):
        dev.memory.view(BASE + (1 << 20) - 8, 16)  # runs past the window's end
    with pytest.raises(DmaError):
        dev.memory.read(0x1000, 8)


def test_dma_map_refusals(dev, shared):
    dma_map(dev, shared, size=1 << 20)
    assert err_of(dma_map(dev, shared, addr=BASE + 4096, size=4096)) == errno.EEXIST  # overlap
    assert err_of(dma_map(dev, shared, addr=BASE + (2 << 20), size=0)) == errno.EINVAL
    assert err_of(dma_map(dev, shared, addr=BASE + (2 << 20), size=4096, prot=0)) == errno.EINVAL
    assert err_of(dma_map(dev, shared, addr=BASE + (2 << 20), size=4096, offset=17)) == errno.EINVAL  # unaligned


def test_dma_unmap(dev, shared):
    dma_map(dev, shared, size=1 << 20)
    body = DMA_UNMAP.pack(24, 0, BASE, 1 << 20)
    assert err_of(dev.handle(msg(Command.DMA_UNMAP, DMA_UNMAP.pack(24, 0, BASE, 4096)))) == errno.EINVAL  # not exact
    assert err_of(dev.handle(msg(Command.DMA_UNMAP, DMA_UNMAP.pack(24, 0, BASE + 8192, 4096)))) == errno.EINVAL
    assert err_of(dev.handle(msg(Command.DMA_UNMAP, b"\0" * 8))) == errno.EINVAL
    assert ok_reply(dev.handle(msg(Command.DMA_UNMAP, body)), Command.DMA_UNMAP) == body
    with pytest.raises(DmaError):  # no access after the unmap was answered
        dev.memory.read(BASE, 8)
    assert dev.memory.windows == []


def test_dma_unmap_waits_for_the_command_the_device_is_running(dev, shared):
    """The unmap is answered between two commands: while one runs (it holds
    the queues' gate, as _start does), the unmap waits for it."""
    dma_map(dev, shared, size=1 << 20)
    body = DMA_UNMAP.pack(24, 0, BASE, 1 << 20)
    gate = dev.function.queues.gate
    running = threading.Event()
    finish = threading.Event()

    def command():
        with gate:
            running.set()
            finish.wait(10)
            dev.memory.write(BASE, b"late")  # still its window while it runs

    worker = threading.Thread(target=command)
    worker.start()
    assert running.wait(10)
    replies = []
    unmapper = threading.Thread(target=lambda: replies.append(dev.handle(msg(Command.DMA_UNMAP, body))))
    unmapper.start()
    unmapper.join(0.3)
    assert unmapper.is_alive() and not replies  # not answered while the command runs
    finish.set()
    worker.join(10)
    unmapper.join(10)
    assert ok_reply(replies[0], Command.DMA_UNMAP) == body
    with pytest.raises(DmaError):
        dev.memory.read(BASE, 8)


def test_windows_without_a_descriptor_go_through_dma_read_and_write():
    guest = bytearray(8192)
    calls = []

    def transfer(command, addr, count, data):
        calls.append((Command(command).name, addr, count))
        off = addr - 0xC0000
        if command == Command.DMA_READ:
            return bytes(guest[off : off + count])
        guest[off : off + count] = data
        return b""

    mem = DmaWindows(transfer)
    mem.map(0xC0000, 8192, 3)
    guest[16:20] = b"rom!"
    assert mem.read(0xC0010, 4) == b"rom!"
    mem.write(0xC0100, b"direct")
    assert guest[0x100:0x106] == b"direct"
    view = mem.view(0xC0200, 8)
    view[:] = b"deferred"
    assert guest[0x200:0x208] == bytes(8)
    mem.flush()  # the device flushes before every interrupt
    assert guest[0x200:0x208] == b"deferred"
    assert ("DMA_WRITE", 0xC0200, 8) in calls
    mem.map(0xE0000, 4096, 1)  # read-only
    with pytest.raises(DmaError):
        mem.write(0xE0000, b"x")


# -- interrupts ---------------------------------------------------------------------------


def set_irqs(dev, index, flags, start, count, fds=(), extra=b""):
    return dev.handle(msg(Command.DEVICE_SET_IRQS, IRQ_SET.pack(20 + len(extra), flags, index, start, count) + extra),
                      list(fds))


def eventfd_count(fd):
    try:
        return int.from_bytes(os.read(fd, 8), "little")
    except BlockingIOError:
        return 0


@pytest.fixture
def client(subsystem, shared):
    """A host that reaches the function only through vfio-user messages."""
    fn = PciFunction(subsystem, DmaWindows(), mode="inline")
    dev = VfioUserDevice(fn)
    ok_reply(dma_map(dev, shared), Command.DMA_MAP)
    host = RawHost(MessageFunction(dev, shared))
    yield dev, host
    dev.close()
    fn.close()


class MessageFunction:
    """What RawHost needs of a function, through REGION_READ/REGION_WRITE."""

    def __init__(self, dev, memory):
        self.dev, self.memory = dev, memory
        fn = dev.function
        self.config, self.interrupts, self.msix_vectors, self.wait_idle = (
            fn.config, fn.interrupts, fn.msix_vectors, fn.wait_idle)

    def _read(self, region, offset, size):
        reply = self.dev.handle(msg(Command.REGION_READ, REGION_ACCESS.pack(offset, region, size)))
        return int.from_bytes(ok_reply(reply, Command.REGION_READ)[16:], "little")

    def _write(self, region, offset, size, value, posted):
        body = REGION_ACCESS.pack(offset, region, size) + value.to_bytes(size, "little")
        reply = self.dev.handle(msg(Command.REGION_WRITE, body, flags=MsgFlags.NO_REPLY if posted else 0))
        assert (reply is None) == posted

    def config_read(self, offset, size=4):
        return self._read(RegionIndex.CONFIG, offset, size)

    def config_write(self, offset, size, value):
        self._write(RegionIndex.CONFIG, offset, size, value, False)

    def mmio_read(self, offset, size=4):
        return self._read(RegionIndex.BAR0, offset, size)

    def mmio_write(self, offset, size, value):
        self._write(RegionIndex.BAR0, offset, size, value, True)  # BAR writes are posted


def test_a_host_drives_the_controller_through_messages_with_msix(client):
    dev, host = client
    fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
    host.enable_device()
    host.enable_msix(unmask=False)  # QEMU keeps the table: ours is never written
    ok_reply(set_irqs(dev, IrqIndex.MSIX, 0x24, 0, 2, [os.dup(fd) for fd in fds]), Command.DEVICE_SET_IRQS)
    host.enable()
    cqe, data = host.identify(1)
    ok(cqe)
    assert data[24:64].rstrip() == b"nvmestack test"
    assert eventfd_count(fds[0]) >= 1
    qp = host.create_io_queue_pair(1, 16, ien=True, iv=1)
    wbuf = host.alloc(4096)
    wbuf.view[:] = os.urandom(4096)
    from nvmestack.spec.nvm import Read, Write

    ok(qp.command(Write(nsid=1, slba=8, nlb=7, prp1=wbuf.addr)))
    rbuf = host.alloc(4096)
    ok(qp.command(Read(nsid=1, slba=8, nlb=7, prp1=rbuf.addr)))
    assert bytes(rbuf.view) == bytes(wbuf.view)
    assert eventfd_count(fds[1]) >= 2
    # A vector QEMU took its eventfd from holds its signal pending, then gets it.
    ok_reply(set_irqs(dev, IrqIndex.MSIX, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_TRIGGER, 0, 0),
             Command.DEVICE_SET_IRQS)
    assert dev.eventfds(IrqIndex.MSIX) == {}
    qp.submit(Read(nsid=1, slba=8, nlb=7, prp1=rbuf.addr))
    assert dev.function.interrupts.msix_pending(1)
    ok_reply(set_irqs(dev, IrqIndex.MSIX, 0x24, 0, 2, [os.dup(fd) for fd in fds]), Command.DEVICE_SET_IRQS)
    assert eventfd_count(fds[1]) == 1
    for fd in fds:
        os.close(fd)


def test_intx_is_automasked_until_unmask(client):
    dev, host = client
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    host.enable_device()
    ok_reply(set_irqs(dev, IrqIndex.INTX, 0x24, 0, 1, [os.dup(fd)]), Command.DEVICE_SET_IRQS)
    host.enable()
    ok(host.identify(1)[0])  # the CQ head doorbell deasserts the line
    assert eventfd_count(fd) == 1 and dev.intx_masked()
    # A completion the host has not consumed keeps the level: UNMASK signals again.
    from nvmestack.spec.admin import Identify

    host.admin.submit(Identify(cns=1, prp1=host.alloc(4096).addr))
    assert dev.function.interrupts.intx_asserted
    assert eventfd_count(fd) == 0  # masked: no new signal
    ok_reply(set_irqs(dev, IrqIndex.INTX, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_UNMASK, 0, 1),
             Command.DEVICE_SET_IRQS)
    assert eventfd_count(fd) == 1 and dev.intx_masked()
    host.admin.wait(1)
    assert not dev.function.interrupts.intx_asserted
    set_irqs(dev, IrqIndex.INTX, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_UNMASK, 0, 1)
    assert eventfd_count(fd) == 0 and not dev.intx_masked()
    # Disabled: the eventfd is given back.
    ok_reply(set_irqs(dev, IrqIndex.INTX, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_TRIGGER, 0, 0),
             Command.DEVICE_SET_IRQS)
    assert dev.eventfds(IrqIndex.INTX) == {}
    os.close(fd)


def test_set_irqs_refusals_and_loopback_trigger(dev):
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    msix = dev.function.msix_vectors
    assert err_of(set_irqs(dev, IrqIndex.MSIX, 0x24, msix - 1, 2, [os.dup(fd), os.dup(fd)])) == errno.EINVAL
    assert err_of(set_irqs(dev, IrqIndex.MSIX, 0x24, 0, 2, [os.dup(fd)])) == errno.EINVAL  # fds != count
    assert err_of(set_irqs(dev, IrqIndex.MSIX, 0x26, 0, 1)) == errno.EINVAL  # two data types
    assert err_of(set_irqs(dev, IrqIndex.MSIX, 0x04, 0, 1)) == errno.EINVAL  # no action
    assert err_of(set_irqs(dev, IrqIndex.INTX, 0x14, 0, 1, [os.dup(fd)])) == errno.ENOTSUP  # resample fd
    assert err_of(set_irqs(dev, IrqIndex.MSIX, 0x22, 0, 2)) == errno.EINVAL  # bools missing
    assert err_of(dev.handle(msg(Command.DEVICE_SET_IRQS, b"\0" * 12))) == errno.EINVAL
    ok_reply(set_irqs(dev, IrqIndex.MSIX, 0x24, 3, 1, [os.dup(fd)]), Command.DEVICE_SET_IRQS)
    ok_reply(set_irqs(dev, IrqIndex.MSIX, 0x21, 3, 1), Command.DEVICE_SET_IRQS)  # trigger, no data
    ok_reply(set_irqs(dev, IrqIndex.MSIX, 0x22, 3, 1, extra=b"\x01"), Command.DEVICE_SET_IRQS)
    assert eventfd_count(fd) == 2
    os.close(fd)


def test_device_reset_and_out_of_range_regions(client):
    dev, host = client
    host.bring_up()
    assert host.bar_read32(Reg.CSTS) & 1
    assert ok_reply(dev.handle(msg(Command.DEVICE_RESET)), Command.DEVICE_RESET) == b""
    assert dev.function.config.read(Cfg.COMMAND, 2) == 0
    assert dev.function.mmio_read(Reg.CC, 4) == 0xFFFFFFFF  # memory space disabled by the reset
    size = dev.function.bar0_size
    for region, offset, count in ((RegionIndex.BAR0, size - 4, 8), (RegionIndex.CONFIG, 4096, 4),
                                  (RegionIndex.BAR2, 0, 4), (12, 0, 4), (RegionIndex.BAR0, 0, 2 << 20)):
        assert err_of(dev.handle(msg(Command.REGION_READ, REGION_ACCESS.pack(offset, region, count)))) == errno.EINVAL
    # A write whose data is not as long as its count.
    assert err_of(dev.handle(msg(Command.REGION_WRITE, REGION_ACCESS.pack(0, RegionIndex.CONFIG, 4) + b"\0"))) == errno.EINVAL


# -- the socket loop -----------------------------------------------------------------------


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(10)

    def send(self, data, fds=()):
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([data], anc)

    def recv(self):
        head = self._exact(16)
        size = HEADER.unpack(head)[2]
        return head + self._exact(size - 16)

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            d = self.sock.recv(n - len(buf))
            if not d:
                raise EOFError
            buf += d
        return buf

    def close(self):
        self.sock.close()


@pytest.fixture
def served(subsystem, tmp_path):
    fn = PciFunction(subsystem, DmaWindows(), mode="thread")
    dev = VfioUserDevice(fn)
    server = VfioUserServer(dev, str(tmp_path / "dev.sock"))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.stop()
    t.join(10)
    assert not t.is_alive()
    dev.close()
    fn.close()


def test_socket_clients_come_and_go(served, shared, subsystem):
    for round_ in range(2):
        c = Client(served.path)
        c.send(msg(Command.VERSION, VERSION.pack(0, 0) + b"{}\0", msg_id=1))
        ok_reply(c.recv(), Command.VERSION)
        c.send(msg(Command.DMA_MAP, DMA_MAP.pack(32, 3, 0, BASE, MEM_SIZE), msg_id=2), [shared.fd()])
        ok_reply(c.recv(), Command.DMA_MAP)
        c.send(msg(Command.REGION_READ, REGION_ACCESS.pack(0, RegionIndex.CONFIG, 4), msg_id=3))
        assert ok_reply(c.recv(), Command.REGION_READ)[16:] == struct.pack("<HH", PCI_VENDOR_ID, PCI_DEVICE_ID)
        c.send(msg(Command.REGION_WRITE, REGION_ACCESS.pack(0x2000, RegionIndex.BAR0, 4) + b"\0" * 4,
                   flags=MsgFlags.NO_REPLY, msg_id=4))  # posted: no answer comes
        c.send(msg(Command.DEVICE_RESET, msg_id=5))
        assert parse(c.recv())[0] == 5
        c.close()
        deadline = 50
        while (served.device.memory.windows or served.clients <= round_) and deadline:
            threading.Event().wait(0.1)
            deadline -= 1
        assert served.device.memory.windows == []  # the client's windows went with it
    assert served.clients == 2
    assert 1 in subsystem.namespaces  # the device and its data stay


def test_socket_bad_size_gets_the_error_then_the_connection_ends(served):
    c = Client(served.path)
    c.send(HEADER.pack(4, Command.VERSION, 8, 0, 0))
    assert err_of(c.recv()) == errno.EINVAL
    with pytest.raises(EOFError):
        c.recv()
    c.close()
    c = Client(served.path)  # ready for the next client
    c.send(msg(Command.DEVICE_GET_INFO, DEVICE_INFO.pack(16, 0, 0, 0)))
    ok_reply(c.recv(), Command.DEVICE_GET_INFO)
    c.close()


def test_socket_dma_read_and_write_to_the_client(served):
    c = Client(served.path)
    c.send(msg(Command.DMA_MAP, DMA_MAP.pack(32, 3, 0, 0xC0000, 4096), msg_id=1))
    ok_reply(c.recv(), Command.DMA_MAP)
    guest = bytearray(b"R" * 4096)
    result = {}

    def device_side():
        result["read"] = served.device.memory.read(0xC0010, 4)
        served.device.memory.write(0xC0020, b"wxyz")

    t = threading.Thread(target=device_side)
    t.start()
    for _ in range(2):
        msg_id, command, flags, _err, payload = parse(c.recv())
        addr, count = DMA_RW.unpack_from(payload)
        off = addr - 0xC0000
        if command == Command.DMA_READ:
            c.send(msg(command, DMA_RW.pack(addr, count) + guest[off : off + count], msg_id=msg_id, flags=1))
        else:
            assert command == Command.DMA_WRITE
            guest[off : off + count] = payload[16 : 16 + count]
            c.send(msg(command, DMA_RW.pack(addr, count), msg_id=msg_id, flags=1))
    t.join(10)
    assert result["read"] == b"RRRR" and guest[0x20:0x24] == b"wxyz"
    c.close()


def test_socket_a_client_gone_before_its_reply_leaves_the_server_serving(served):
    """Regression: a reply that cannot be sent (the client closed after
    asking) ended serve_forever with _ClientGone; it ends that client only."""
    import selectors

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    b.sendall(msg(Command.DEVICE_GET_INFO, DEVICE_INFO.pack(16, 0, 0, 0), msg_id=7))
    b.close()
    sel = selectors.DefaultSelector()
    try:
        served._serve_client(a, sel)  # reads the request, its reply meets EPIPE: returns
    finally:
        sel.close()
        a.close()
    c = Client(served.path)  # and the running loop still serves the next client
    c.send(msg(Command.DEVICE_GET_INFO, DEVICE_INFO.pack(16, 0, 0, 0)))
    ok_reply(c.recv(), Command.DEVICE_GET_INFO)
    c.close()


def test_socket_a_burst_of_messages_in_one_read_keeps_order_and_descriptors(served, shared):
    """Messages that arrive together are handled in order, and descriptors
    go with the message they were sent with, not a neighbour."""
    c = Client(served.path)
    posted = msg(Command.REGION_WRITE, REGION_ACCESS.pack(0x2000, RegionIndex.BAR0, 4) + b"\0" * 4,
                 flags=MsgFlags.NO_REPLY, msg_id=1)
    c.send(posted * 20 + msg(Command.REGION_READ, REGION_ACCESS.pack(0, RegionIndex.CONFIG, 4), msg_id=2))
    reply = c.recv()
    assert parse(reply)[0] == 2 and ok_reply(reply, Command.REGION_READ)[16:] == struct.pack("<HH", PCI_VENDOR_ID, PCI_DEVICE_ID)
    c.send(posted * 3)
    c.send(msg(Command.DMA_MAP, DMA_MAP.pack(32, 3, 0, BASE, MEM_SIZE), msg_id=3), [shared.fd()])
    c.send(msg(Command.DEVICE_GET_INFO, DEVICE_INFO.pack(16, 0, 0, 0), msg_id=4))
    assert parse(c.recv())[0] == 3
    assert parse(c.recv())[0] == 4
    assert served.device.memory.windows == [(BASE, MEM_SIZE, True)]  # mapped with the descriptor
    assert served.device.stats["REGION_WRITE"] == 23
    c.close()
