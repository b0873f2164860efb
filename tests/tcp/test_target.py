"""The NVMe/TCP target on 127.0.0.1, driven by raw hosts: Connect and its
errors, properties, data in every shape, digests, SQ flow control, keep
alive, discovery, protocol errors and malformed input."""

from __future__ import annotations

import os
import random
import selectors
import socket
import struct
import threading
import time

import pytest

from nvmestack.spec.admin import AsyncEventRequest, GetLogPage, Identify, KeepAlive, SetFeatures
from nvmestack.spec.fabrics import DISCOVERY_NQN, Disconnect, PropertySet
from nvmestack.spec.identify import ControllerType, IdentifyController
from nvmestack.spec.log import DiscoveryLogHeader, SubsystemType, TransportType, discovery_log_entries
from nvmestack.spec.nvm import Flush, Read, Write
from nvmestack.spec.registers import Reg
from nvmestack.spec.sqe import Command
from nvmestack.spec.status import CommandSpecificStatus, FabricsStatus, GenericStatus
from nvmestack.spec.tcp import C2HData, CapsuleCmd, FatalErrorStatus as FES, H2CData, ICReq, PduType
from nvmestack.target.faults import FaultInjector
from nvmestack.target.tcp import TcpTarget
from nvmestack.tcp import ResponseReceived, TermReqReceived

from .conftest import HOSTNQN, NQN, TIMEOUT, RawHost, make_subsystem

OTHER_NQN = "nqn.2026-11.io.nvmestack:other"
OTHER_HOST = "nqn.2014-08.org.nvmexpress:uuid:99999999-2222-3333-4444-555555555555"


def wait_until(pred, timeout=TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def code(reply):
    return reply.status.sct, reply.status.sc


def nqn_queues(host, count=2):
    reply = host.command(SetFeatures(fid=7, cdw11=((count - 1) << 16) | (count - 1)))
    assert reply.ok


def io_pair(host_factory, **kw):
    admin = host_factory(**kw).setup_admin()
    nqn_queues(admin)
    io = host_factory(**kw).setup_io(admin.cntlid)
    return admin, io


# ---------------------------------------------------------------------------
# Connect, properties, enable and shutdown


def test_admin_connect_creates_a_controller_and_properties_work(target, host):
    h = host()
    h.ic()
    reply = h.connect(kato=0)
    assert reply.ok and reply.cqe.sqid == 0
    sub = target.subsystems[NQN]
    ctrl = sub.controllers[h.cntlid]
    assert ctrl.fabrics and ctrl.hostnqn == HOSTNQN and ctrl.hostid == h.hostid.bytes
    cap = h.prop_get(Reg.CAP, 8)
    assert cap.ok and cap.cqe.result64 == ctrl.regs.cap.value and cap.cqe.result64 & 0xFFFF == 1023
    assert h.prop_get(Reg.VS).cqe.dw0 == 0x00020000
    assert h.prop_get(Reg.CSTS).cqe.dw0 & 1 == 0
    # Not a property, a wrong size, a read-only property.
    assert code(h.prop_get(0x24)) == (0, GenericStatus.INVALID_FIELD)
    assert code(h.prop_get(Reg.CAP, 4)) == (0, GenericStatus.INVALID_FIELD)
    assert code(h.prop_set(Reg.CSTS, 1)) == (0, GenericStatus.INVALID_FIELD)
    # Commands other than Fabrics wait for CC.EN/CSTS.RDY.
    assert code(h.command(Identify(cns=1), length=4096)) == (0, GenericStatus.COMMAND_SEQUENCE_ERROR)
    h.enable()
    assert ctrl.enabled and h.prop_get(Reg.CC).cqe.dw0 & 1
    idc = IdentifyController.view(bytearray(h.command(Identify(cns=1), length=4096).data))
    assert idc.cntlid == h.cntlid and idc.ioccsz == (64 + 16384) // 16 and idc.iorcsz == 1
    assert idc.subnqn == NQN and idc.cntrltype == ControllerType.IO
    # Shutdown: CC.SHN normal, CSTS.SHST complete.
    cc = h.prop_get(Reg.CC).cqe.dw0
    assert h.prop_set(Reg.CC, cc | (1 << 14)).ok
    wait_until(lambda: (h.prop_get(Reg.CSTS).cqe.dw0 >> 2) & 3 == 2, what="shutdown complete")


def test_disable_by_property_set_is_answered(target, host):
    """CC.EN = 0 resets the controller; the Property Set that did it still
    gets its response capsule, and the controller can be enabled again."""
    h = host()
    h.ic()
    assert h.connect(kato=0).ok
    h.enable()
    ctrl = target.subsystems[NQN].controllers[h.cntlid]
    cc = h.prop_get(Reg.CC).cqe.dw0
    assert h.prop_set(Reg.CC, cc & ~1).ok
    assert not ctrl.enabled and h.prop_get(Reg.CSTS).cqe.dw0 & 1 == 0
    h.enable()
    assert ctrl.enabled


def test_connect_data_through_r2t(target, host):
    h = host()
    h.ic()
    assert h.connect(in_capsule=False).ok


def test_connect_errors_point_at_the_field(target, host):
    target.subsystems[NQN].allow_any_host = False
    h = host()
    h.ic()
    reply = h.connect(hostnqn=OTHER_HOST)
    # A forbidden subsystem answers as a missing one: it does not reveal that it exists.
    assert code(reply) == (1, FabricsStatus.CONNECT_INVALID_PARAMETERS) and reply.status.dnr
    assert reply.cqe.dw0 == (1 << 16) | 256  # IATTR 1 (Connect data), IPO 256 (SUBNQN)
    target.allow_host(NQN, OTHER_HOST)
    reply = h.connect("nqn.2026-11.io.nvmestack:nobody", hostnqn=OTHER_HOST)
    assert code(reply) == (1, FabricsStatus.CONNECT_INVALID_PARAMETERS)
    assert reply.cqe.dw0 == (1 << 16) | 256  # SUBNQN
    reply = h.connect(hostnqn=OTHER_HOST, sqsize=0)
    assert code(reply) == (1, FabricsStatus.CONNECT_INVALID_PARAMETERS) and reply.cqe.dw0 == 44  # SQSIZE in the SQE
    reply = h.connect(hostnqn=OTHER_HOST, cntlid=5)
    assert code(reply) == (1, FabricsStatus.CONNECT_INVALID_PARAMETERS) and reply.cqe.dw0 == (1 << 16) | 16
    cmd, data = h.connect_cmd(hostnqn=OTHER_HOST)
    cmd.recfmt = 1
    assert code(h.command(cmd, data, write=True)) == (1, FabricsStatus.INCOMPATIBLE_FORMAT)
    # Anything but Connect before Connect.
    assert code(h.prop_get(Reg.CAP, 8)) == (0, GenericStatus.COMMAND_SEQUENCE_ERROR)
    # The same host connects fine now; a second Connect on the queue is refused.
    h.hostnqn = OTHER_HOST
    assert h.connect().ok
    assert code(h.connect()) == (0, GenericStatus.COMMAND_SEQUENCE_ERROR)
    assert len(target.subsystems[NQN].controllers) == 1


def test_io_queue_connect_rules(target, host):
    admin = host().setup_admin()
    # Before the queues are granted only ... none beyond the default count exists; ask for 2.
    nqn_queues(admin, 2)
    io = host()
    io.ic()
    reply = io.connect(qid=1, cntlid=admin.cntlid + 1)  # no such controller
    assert code(reply) == (1, FabricsStatus.CONNECT_INVALID_PARAMETERS) and reply.cqe.dw0 == (1 << 16) | 16
    reply = io.connect(qid=1, cntlid=admin.cntlid, hostnqn=OTHER_HOST)  # another host's controller
    assert code(reply) == (1, FabricsStatus.CONNECT_INVALID_PARAMETERS)
    reply = io.connect(qid=3, cntlid=admin.cntlid)
    assert code(reply) == (1, CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER) and reply.cqe.dw0 == 42
    reply = io.connect(qid=1, cntlid=admin.cntlid, sqsize=1024)  # beyond CAP.MQES
    assert code(reply) == (1, FabricsStatus.CONNECT_INVALID_PARAMETERS) and reply.cqe.dw0 == 44
    reply = io.connect(qid=1, cntlid=admin.cntlid, sqsize=127)
    assert reply.ok and reply.cqe.sqid == 1
    other = host()
    other.ic()
    assert code(other.connect(qid=1, cntlid=admin.cntlid)) == (0, GenericStatus.COMMAND_SEQUENCE_ERROR)
    # Property Get is an admin-queue command.
    assert code(io.prop_get(Reg.CAP, 8)) == (0, GenericStatus.INVALID_OPCODE)


def test_io_queue_connect_before_enable_is_refused(target, host):
    admin = host()
    admin.ic()
    assert admin.connect().ok
    io = host()
    io.ic()
    assert code(io.connect(qid=1, cntlid=admin.cntlid)) == (0, GenericStatus.COMMAND_SEQUENCE_ERROR)


# ---------------------------------------------------------------------------
# Data


@pytest.mark.parametrize("digests", [False, True])
def test_writes_and_reads_in_every_shape(target, host, digests):
    admin, io = io_pair(host, hdgst=digests, ddgst=digests, hpda=3 if digests else 0)
    rng = random.Random(3)
    small = bytes(rng.randrange(256) for _ in range(4096))
    big = bytes(rng.randrange(256) for _ in range(128 * 1024))
    assert io.command(Write(nsid=1, slba=0, nblocks=8), small, write=True).ok  # in the capsule
    assert io.command(Write(nsid=1, slba=8, nblocks=256), big, write=True).ok  # through R2T
    assert io.command(Write(nsid=1, slba=300, nblocks=8), small, write=True, in_capsule=False).ok
    reply = io.command(Read(nsid=1, slba=0, nblocks=8 + 256), length=4096 + len(big))
    assert reply.ok and reply.data == small + big
    assert io.command(Read(nsid=1, slba=300, nblocks=8), length=4096).data == small
    assert io.command(Flush(nsid=1)).ok
    # A command failing in the core answers without data.
    reply = io.command(Read(nsid=1, slba=8190, nblocks=8), length=4096)
    assert code(reply) == (0, 0x80) and reply.data == bytes(4096)  # LBA Out of Range
    assert io.command(Write(nsid=1, slba=8190, nblocks=8), small, write=True, in_capsule=False).status.sc == 0x80


def test_data_pdus_honour_maxh2cdata_and_c2h_size(host):
    sub = make_subsystem()
    with TcpTarget([sub], maxh2cdata=4096, max_c2h_data=8192) as target:
        port = target.listen("127.0.0.1", 0)
        addr = ("127.0.0.1", int(port.trsvcid))
        admin = RawHost(addr).setup_admin()
        nqn_queues(admin)
        io = RawHost(addr).setup_io(admin.cntlid)
        assert io.icresp.maxh2cdata == 4096
        data = os.urandom(64 * 1024)
        assert io.command(Write(nsid=1, slba=0, nblocks=128), data, write=True, in_capsule=False).ok
        cid = io.submit(Read(nsid=1, slba=0, nblocks=128), length=len(data))
        pieces = []
        while True:
            ev = io.wait_for(lambda e: getattr(e, "cid", None) == cid)
            if isinstance(ev, ResponseReceived):
                break
            pieces.append((ev.offset, len(ev.data), ev.last))
        assert pieces == [(i * 8192, 8192, i == 7) for i in range(8)]
        admin.close()
        io.close()


def test_sq_flow_control_disabled_uses_success_and_sqhd_ffff(target, host):
    admin = host().setup_admin()
    nqn_queues(admin)
    io = host()
    io.ic()
    reply = io.connect(qid=1, cntlid=admin.cntlid, sqflow_disable=True)
    assert reply.ok and reply.cqe.sqhd == 0xFFFF
    data = os.urandom(8192)
    assert io.command(Write(nsid=1, slba=0, nblocks=16), data, write=True).cqe.sqhd == 0xFFFF
    reply = io.command(Read(nsid=1, slba=0, nblocks=16), length=8192)
    assert reply.success_flag and reply.data == data
    # With flow control, SQHD moves and a response capsule follows the data.
    admin2 = host().setup_admin()
    nqn_queues(admin2)
    io2 = host().setup_io(admin2.cntlid, sqsize=3)
    heads = [io2.command(Read(nsid=1, slba=0, nblocks=1), length=512).cqe.sqhd for _ in range(5)]
    assert heads == [2, 3, 0, 1, 2]
    assert not io2.command(Read(nsid=1, slba=0, nblocks=1), length=512).success_flag


def test_data_digest_error_fails_only_the_command(target, host):
    admin, io = io_pair(host, ddgst=True)
    good = os.urandom(4096)
    pdu = bytearray(b"".join(bytes(b) for b in io.stream.command(Write(nsid=1, slba=0, nblocks=8, cid=77), [good],
                                                                      write=True)))
    pdu[-1] ^= 1  # the data digest
    io.send(bytes(pdu))
    reply = io.result(77)
    assert code(reply) == (0, GenericStatus.TRANSIENT_TRANSPORT_ERROR) and not reply.status.dnr
    # The same through R2T/H2CData.
    cid = io.submit(Write(nsid=1, slba=0, nblocks=8), good, write=True, in_capsule=False)
    r2t = io.wait_for(lambda e: getattr(e, "cid", None) == cid)
    h2c = bytearray(b"".join(bytes(b) for b in io.stream.data_for_r2t(r2t, [good])))
    h2c[40] ^= 1
    io.send(bytes(h2c))
    assert code(io.result(cid)) == (0, GenericStatus.TRANSIENT_TRANSPORT_ERROR)
    # The queue goes on; nothing was written.
    assert io.command(Read(nsid=1, slba=0, nblocks=8), length=4096).data == bytes(4096)
    assert io.command(Write(nsid=1, slba=0, nblocks=8), good, write=True).ok


def test_protocol_error_terminates_one_connection_only(target, host):
    admin, io = io_pair(host, hdgst=True)
    admin2, io2 = io_pair(host)
    pdu = bytearray(b"".join(bytes(b) for b in io.stream.command(Read(nsid=1, slba=0, nblocks=1, cid=5), length=512)))
    pdu[73] ^= 0xFF  # the header digest
    io.send(bytes(pdu))
    ev = io.closed_or_terminated()
    assert isinstance(ev, TermReqReceived) and ev.pdu_type == PduType.C2H_TERM_REQ
    assert ev.fes == FES.HEADER_DIGEST_ERROR and ev.data == bytes(pdu[:72])
    wait_until(lambda: not io.pump(), what="the connection to close")
    # The admin queue of that controller and the other host go on.
    assert admin.prop_get(Reg.CSTS).ok
    assert io2.command(Read(nsid=1, slba=0, nblocks=1), length=512).ok
    # A new I/O queue 1 for the first controller can be connected again.
    io3 = host(hdgst=True).setup_io(admin.cntlid)
    assert io3.command(Read(nsid=1, slba=0, nblocks=1), length=512).ok


@pytest.mark.parametrize(
    "mutate,fes,fei",
    [
        (lambda p: p.__setitem__(0, 0x0B), FES.INVALID_HEADER_FIELD, 0),  # unknown PDU type
        (lambda p: p.__setitem__(2, 80), FES.INVALID_HEADER_FIELD, 2),  # HLEN
        (lambda p: p.__setitem__(3, 36), FES.INVALID_HEADER_FIELD, 3),  # PDO inside the header
        (lambda p: struct.pack_into("<I", p, 4, 100), FES.INVALID_HEADER_FIELD, 3),  # data but PDO 0
        (lambda p: p.__setitem__(1, 0x08), FES.INVALID_HEADER_FIELD, 1),  # reserved FLAGS bit
    ],
)
def test_bad_pdus_get_a_c2h_term_req(target, host, mutate, fes, fei):
    h = host()
    h.ic()
    pdu = bytearray(bytes(CapsuleCmd(plen=72)))
    mutate(pdu)
    sent = bytes(pdu) + bytes(64)
    h.send(sent)
    ev = h.closed_or_terminated()
    assert isinstance(ev, TermReqReceived) and (ev.fes, ev.fei) == (fes, fei)
    assert ev.data == sent[: pdu[2] if 8 <= pdu[2] <= 128 else 8]  # the offending header


def test_h2c_data_for_an_unknown_transfer_tag(target, host):
    admin, io = io_pair(host)
    h2c = H2CData(cccid=1, ttag=33, datao=0, datal=512, pdo=24, plen=24 + 512)
    h2c.last_pdu = True
    io.send(bytes(h2c) + bytes(512))
    ev = io.closed_or_terminated()
    assert isinstance(ev, TermReqReceived) and (ev.fes, ev.fei) == (FES.INVALID_HEADER_FIELD, 10)
    assert ev.data == bytes(h2c)


def test_disconnect_ends_the_io_queue(target, host):
    admin, io = io_pair(host)
    reply = io.command(Disconnect())
    assert reply.ok
    wait_until(lambda: not io.pump(), what="the queue to close")
    assert admin.prop_get(Reg.CSTS).ok
    assert host().setup_io(admin.cntlid).command(Read(nsid=1, slba=0, nblocks=1), length=512).ok


def test_losing_the_admin_queue_ends_the_association(target, host):
    admin, io = io_pair(host)
    sub = target.subsystems[NQN]
    assert admin.cntlid in sub.controllers
    admin.close()
    wait_until(lambda: not io.pump(), what="the I/O queue to close")
    wait_until(lambda: admin.cntlid not in sub.controllers, what="the controller to go")
    assert not target.controllers


def test_keep_alive_timeout_tears_the_controller_down(target, host):
    sub = target.subsystems[NQN]
    alive = host()
    alive.ic()
    assert alive.connect(kato=60000).ok
    alive.enable()
    ctrl = sub.controllers[alive.cntlid]
    before = ctrl.last_keep_alive
    assert alive.command(KeepAlive()).ok
    assert ctrl.last_keep_alive > before
    assert target.expire_keep_alive(now=ctrl.last_keep_alive + 59.0) == []
    # A host that connects with a short KATO and goes silent loses its controller.
    dead = host()
    dead.ic()
    assert dead.connect(kato=200).ok
    dead_id = dead.cntlid
    wait_until(lambda: dead_id not in sub.controllers, what="the keep alive timeout")
    wait_until(lambda: not dead.pump(), what="the connection to close")
    assert alive.cntlid in sub.controllers and alive.prop_get(Reg.CSTS).ok


# ---------------------------------------------------------------------------
# Many hosts and controllers


def test_many_hosts_and_queues_at_once(target, host):
    errors = []
    sub = target.subsystems[NQN]

    def worker(index):
        try:
            admin = RawHost(target.test_addr, hdgst=index % 2 == 1, ddgst=index % 2 == 1)
            admin.hostnqn = f"nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-{index:012d}"
            admin.setup_admin()
            nqn_queues(admin, 2)
            queues = []
            for qid in (1, 2):
                io = RawHost(target.test_addr, hdgst=index % 2 == 1, ddgst=index % 2 == 1)
                io.hostnqn = admin.hostnqn
                queues.append(io.setup_io(admin.cntlid, qid=qid))
            rng = random.Random(index)
            for n in range(20):
                io = queues[n % 2]
                slba = index * 512 + n * 16
                data = bytes(rng.randrange(256) for _ in range(8192))
                assert io.command(Write(nsid=1, slba=slba, nblocks=16), data, write=True, in_capsule=n % 3 == 0).ok
                assert io.command(Read(nsid=1, slba=slba, nblocks=16), length=8192).data == data
            for io in queues:
                io.close()
            admin.close()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    wait_until(lambda: not sub.controllers, what="every controller to go")


def test_pipelined_commands_on_one_queue(target, host):
    admin, io = io_pair(host)
    data = {}
    cids = []
    for i in range(32):
        payload = os.urandom(4096)
        data[i] = payload
        cids.append(io.submit(Write(nsid=1, slba=i * 8, nblocks=8), payload, write=True, in_capsule=i % 2 == 0))
    for i, cid in enumerate(cids):
        assert io.result(cid, data[i]).ok
    cids = [io.submit(Read(nsid=1, slba=i * 8, nblocks=8), length=4096) for i in range(32)]
    for i, cid in enumerate(cids):
        assert io.result(cid, length=4096).data == data[i]


# ---------------------------------------------------------------------------
# Discovery


def discovery_log(h):
    header = h.command(GetLogPage(lid=0x70, numdl=1024 // 4 - 1), length=1024)
    numrec = DiscoveryLogHeader.view(header.data).numrec
    size = 1024 * (numrec + 1)
    page = h.command(GetLogPage(lid=0x70, numdl=size // 4 - 1), length=size)
    assert page.ok
    return DiscoveryLogHeader.view(page.data), discovery_log_entries(page.data)


def test_discovery_controller_and_log_page(host):
    allowed = make_subsystem(OTHER_NQN, allow_any_host=False, allowed_hosts=[OTHER_HOST])
    with TcpTarget([make_subsystem(), allowed]) as target:
        io_port = target.listen("127.0.0.1", 0)
        disc_port = target.listen("127.0.0.1", 0, subsystems=())
        h = RawHost(("127.0.0.1", int(disc_port.trsvcid))).setup_admin(DISCOVERY_NQN)
        idc = IdentifyController.view(bytearray(h.command(Identify(cns=1), length=4096).data))
        assert idc.cntrltype == ControllerType.DISCOVERY and idc.subnqn == DISCOVERY_NQN
        ctrl = target.discovery.controllers[h.cntlid]
        assert ctrl.kato == 120_000  # the default for a discovery controller
        header, entries = discovery_log(h)
        assert header.genctr == target.genctr and header.numrec == len(entries) == 2
        current, nvm = entries
        assert current.subtype == SubsystemType.CURRENT_DISCOVERY and current.subnqn == DISCOVERY_NQN
        assert current.trsvcid.strip() == disc_port.trsvcid
        assert (nvm.trtype, nvm.adrfam, nvm.subtype) == (TransportType.TCP, 1, SubsystemType.NVM)
        assert nvm.subnqn == NQN and nvm.traddr.strip() == "127.0.0.1" and nvm.trsvcid.strip() == io_port.trsvcid
        assert nvm.secure_channel == 0 and nvm.disable_sqflow and nvm.cntlid == 0xFFFF and nvm.portid == io_port.portid
        # Only the discovery commands.
        assert code(h.command(Command(opcode=0x80, nsid=1))) == (0, GenericStatus.INVALID_OPCODE)  # Format NVM
        assert code(h.command(GetLogPage(lid=2, numdl=127), length=512)) == (0, GenericStatus.INVALID_FIELD)
        assert code(h.command(Identify(cns=0, nsid=1), length=4096)) == (0, GenericStatus.INVALID_FIELD)
        # No I/O queues on a discovery controller.
        io = RawHost(("127.0.0.1", int(disc_port.trsvcid)))
        io.ic()
        assert not io.connect(DISCOVERY_NQN, qid=1, cntlid=h.cntlid).ok
        # The host allowed on the other subsystem sees it too; a change raises a notice.
        h2 = RawHost(("127.0.0.1", int(io_port.trsvcid)))
        h2.hostnqn = OTHER_HOST
        h2.setup_admin(DISCOVERY_NQN)
        assert h2.command(SetFeatures(fid=0x0B, cdw11=1 << 31)).ok  # Discovery Log Page Change notices on
        aer = h2.submit(AsyncEventRequest())
        _, entries = discovery_log(h2)
        assert sorted(e.subnqn for e in entries[1:]) == sorted([NQN, OTHER_NQN])
        assert entries[0].trsvcid.strip() == io_port.trsvcid
        genctr = target.genctr
        target.add_subsystem(make_subsystem("nqn.2026-11.io.nvmestack:third"))
        reply = h2.result(aer)
        assert reply.ok and reply.cqe.dw0 == 0x2 | (0xF0 << 8) | (0x70 << 16)
        header, entries = discovery_log(h2)
        assert header.genctr > genctr and len(entries) == 4
        # NVM subsystems are not served on the discovery-only port.
        h3 = RawHost(("127.0.0.1", int(disc_port.trsvcid)))
        h3.ic()
        assert h3.connect(NQN).cqe.dw0 == (1 << 16) | 256
        for x in (h, h2, h3, io):
            x.close()


def test_pcie_controllers_have_no_fabrics_commands():
    sub = make_subsystem()
    ctrl = sub.add_controller()
    from nvmestack.spec.fabrics import PropertyGet

    req = ctrl.submit(PropertyGet(ofst=0))
    assert req.status.sc == GenericStatus.INVALID_OPCODE


# ---------------------------------------------------------------------------
# Malformed input


def test_malformed_input_never_stops_the_target(target, host):
    """Random and truncated PDUs on many raw connections while a well
    behaved host does I/O: it is served throughout, and afterwards."""
    admin, io = io_pair(host, hdgst=True, ddgst=True)
    good = os.urandom(8192)
    stop = threading.Event()
    errors = []
    ops = [0]

    def well_behaved():
        try:
            n = 0
            while not stop.is_set() or n < 20:
                slba = (n % 64) * 16
                assert io.command(Write(nsid=1, slba=slba, nblocks=16), good, write=True, in_capsule=n % 2 == 0).ok
                assert io.command(Read(nsid=1, slba=slba, nblocks=16), length=8192).data == good
                n += 1
                ops[0] = n
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    rng = random.Random(42)
    icreq = bytes(ICReq())
    capsule = bytes(CapsuleCmd(pdo=72, plen=72 + 512)) + bytes(512)

    def garbage() -> list[bytes]:
        kind = rng.randrange(6)
        if kind == 0:
            return [os.urandom(rng.randrange(1, 600))]
        if kind == 1:  # a truncated ICReq
            return [icreq[: rng.randrange(1, 128)]]
        if kind == 2:  # ICReq then a truncated capsule
            return [icreq, capsule[: rng.randrange(1, len(capsule))]]
        if kind == 3:  # ICReq then random PDU headers
            pdu = bytearray(os.urandom(rng.randrange(8, 200)))
            struct.pack_into("<I", pdu, 4, rng.choice([len(pdu), 8, 0xFFFFFFFF, rng.randrange(1 << 32)]))
            return [icreq, bytes(pdu)]
        if kind == 4:  # ICReq then bytes split into many writes
            data = icreq + os.urandom(300)
            return [data[i : i + 7] for i in range(0, len(data), 7)]
        return [icreq, bytes(C2HData(plen=24))]  # a PDU of the wrong direction

    worker = threading.Thread(target=well_behaved)
    worker.start()
    socks = []
    try:
        for round_ in range(8):
            batch = []
            for _ in range(12):
                s = socket.create_connection(target.test_addr, timeout=TIMEOUT)
                for piece in garbage():
                    try:
                        s.sendall(piece)
                    except OSError:
                        break
                batch.append(s)
            for s in batch:
                if rng.random() < 0.5:
                    s.close()  # vanish mid-PDU
                else:
                    socks.append(s)
        # Whatever the target answered, it was an ICResp, a C2HTermReq, or nothing.
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        answers: dict = {}
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.1):
                try:
                    data = key.fileobj.recv(1 << 16)
                except OSError:
                    data = b""
                answers[key.fileobj] = answers.get(key.fileobj, b"") + data
                if not data:
                    sel.unregister(key.fileobj)
        for data in answers.values():
            if len(data) >= 128 and data[0] == PduType.ICRESP:
                data = data[128:]
            if data:
                assert data[0] == PduType.C2H_TERM_REQ and len(data) >= 24, data[:8]
        assert any(answers.values())
    finally:
        stop.set()
        worker.join(120)
        for s in socks:
            s.close()
    assert not errors, errors
    assert ops[0] >= 20
    # The target still takes new hosts.
    admin2, io2 = io_pair(host)
    assert io2.command(Read(nsid=1, slba=0, nblocks=16), length=8192).data == good
    assert admin.prop_get(Reg.CSTS).ok


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_port_and_its_discovery_entry():
    with TcpTarget([make_subsystem()]) as target:
        port = target.listen("::1", 0)
        h = RawHost(("::1", int(port.trsvcid))).setup_admin(DISCOVERY_NQN)
        _, entries = discovery_log(h)
        assert [(e.adrfam, e.traddr.strip(), e.subnqn) for e in entries] == [
            (2, "::1", DISCOVERY_NQN), (2, "::1", NQN)]
        admin = RawHost(("::1", int(port.trsvcid))).setup_admin()
        assert admin.prop_get(Reg.VS).ok
        h.close()
        admin.close()


def test_removing_a_subsystem_or_a_port_ends_its_associations(host):
    with TcpTarget([make_subsystem(), make_subsystem(OTHER_NQN)]) as target:
        port = target.listen("127.0.0.1", 0)
        spare = target.listen("127.0.0.1", 0)
        addr = ("127.0.0.1", int(port.trsvcid))
        a = RawHost(addr).setup_admin()
        b = RawHost(addr).setup_admin(OTHER_NQN)
        c = RawHost(("127.0.0.1", int(spare.trsvcid))).setup_admin()
        genctr = target.genctr
        target.remove_subsystem(OTHER_NQN)
        wait_until(lambda: not b.pump(), what="the removed subsystem's queue to close")
        assert target.genctr > genctr and a.prop_get(Reg.CSTS).ok
        target.unlisten(spare)
        wait_until(lambda: not c.pump(), what="the removed port's queue to close")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(spare.trsvcid)), timeout=5).recv(1)
        assert a.prop_get(Reg.CSTS).ok and len(target.controllers) == 1
        for x in (a, b, c):
            x.close()


# ---------------------------------------------------------------------------
# Command identifiers


def test_spdk_detach_reuses_the_cid_of_an_outstanding_aer_and_shuts_down_cleanly(target, host):
    """SPDK's initiator on detach completes its AERs itself and reuses one of
    their command identifiers; the target drops the forgotten AER (no
    completion for it) and runs the new command, so CC.SHN succeeds."""
    sub = target.subsystems[NQN]
    h = host().setup_admin()
    ctrl = sub.controllers[h.cntlid]
    aer = AsyncEventRequest()
    aer.cid = 0x42
    h.submit(aer)
    wait_until(lambda: len(ctrl.aer_requests) == 1, what="the AER to be outstanding")
    h.stream.forget(0x42)  # the initiator completes its AER itself
    ident = Identify(cns=1)
    ident.cid = 0x42
    reply = h.command(ident, length=4096)
    assert reply.ok, reply.status
    assert IdentifyController.from_bytes(reply.data).cntlid == h.cntlid
    # Property Set CC.SHN (normal shutdown) with the same identifier.
    cmd = PropertySet(ofst=Reg.CC, value=1 | (6 << 16) | (4 << 20) | (1 << 14))
    cmd.cid = 0x42
    reply = h.command(cmd)
    assert reply.ok, reply.status
    assert (h.prop_get(Reg.CSTS).cqe.dw0 >> 2) & 3 == 2  # CSTS.SHST: shutdown complete
    assert not ctrl.aer_requests
    # Nothing else came back for identifier 42h (no completion of the AER).
    assert not [e for e in h.events if getattr(e, "cid", None) == 0x42]


def test_a_running_command_s_cid_is_still_a_conflict(target, host):
    sub = target.subsystems[NQN]
    h = host().setup_admin()
    ctrl = sub.controllers[h.cntlid]
    # A command still running (not an AER): a Keep Alive a fault holds.
    sub.faults = FaultInjector()
    sub.faults.drop(admin=True, opcode=0x18)
    held = KeepAlive()
    held.cid = 0x43
    h.submit(held)
    wait_until(lambda: (0, 0x43) in ctrl.outstanding, what="the Keep Alive to be outstanding")
    h.stream.forget(0x43)  # a host that loses track of its command
    again = Identify(cns=1)
    again.cid = 0x43
    reply = h.result(h.submit(again), length=4096)
    assert code(reply) == (0, GenericStatus.COMMAND_ID_CONFLICT) and reply.status.dnr


# ---------------------------------------------------------------------------
# PCI ids over fabrics


def test_identify_reports_the_subsystem_s_configured_vendor_ids(target, host):
    sub = target.subsystems[NQN]
    h = host().setup_admin()
    c = IdentifyController.from_bytes(h.command(Identify(cns=1), length=4096).data)
    assert (c.vid, c.ssvid) == (0, 0)  # none named: 0h, as Linux nvmet
    sub.vid, sub.ssvid = 0x1D0F, 0x1AF4
    c = IdentifyController.from_bytes(h.command(Identify(cns=1), length=4096).data)
    assert (c.vid, c.ssvid) == (0x1D0F, 0x1AF4)


def test_enable_with_all_io_command_sets_selected_over_tcp(target, host):
    h = host()
    h.ic()
    assert h.connect().ok
    cap = int.from_bytes(bytes(h.prop_get(Reg.CAP, 8).cqe.raw[:8]), "little")
    assert (cap >> 43) & 1  # CAP.CSS.IOCSS
    assert h.prop_set(Reg.CC, (6 << 4) | (6 << 16) | (4 << 20)).ok
    assert h.prop_set(Reg.CC, 1 | (6 << 4) | (6 << 16) | (4 << 20)).ok
    wait_until(lambda: h.prop_get(Reg.CSTS).cqe.dw0 & 3 == 1, what="CSTS.RDY without CFS")
    reply = h.command(Identify(cns=0x1C, cntid=0xFFFF), length=4096)
    assert reply.ok and reply.data[:8] == (1).to_bytes(8, "little")


# ---------------------------------------------------------------------------
# Namespace attachment across associations


def test_a_private_namespace_stays_attached_across_reconnects(target, host):
    from nvmestack.spec.admin import NamespaceAttachment
    from nvmestack.spec.identify import ControllerList, NamespaceList
    from nvmestack.target import Namespace

    sub = target.subsystems[NQN]
    sub.add_namespace(Namespace(2, 64, shared=False), attach=False)

    def active(h):
        return NamespaceList.from_bytes(h.command(Identify(cns=2), length=4096).data).nsids()

    def attachment(h, cntlid, sel):
        data = bytes(ControllerList.from_ids([cntlid]))
        return h.command(NamespaceAttachment(sel=sel, nsid=2), data, write=True)

    h = host().setup_admin()
    cntlid = h.cntlid  # as nvme-cli's tests: read once
    assert attachment(h, cntlid, 0).ok
    assert active(h) == [1, 2]
    h.close()  # nvme reset: the association ends, a new one begins
    wait_until(lambda: not sub.controllers, what="the controller to go")
    h = host().setup_admin()
    assert h.cntlid == cntlid and active(h) == [1, 2]
    assert attachment(h, cntlid, 1).ok and active(h) == [1]
    assert attachment(h, cntlid, 0).ok and active(h) == [1, 2]
