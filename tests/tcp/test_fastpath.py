"""The I/O fast path (target/fastpath.py) beside the general path: every test
here runs with both (the ``io_path`` fixture of conftest.py) and expects
the same answers; the fast path may only ever be quicker, never different.
The tests also show which commands the fast path took (its per-queue
counters) and which it declined."""

from __future__ import annotations

import os
import struct

from nvmestack.spec.admin import FormatNvm, GetLogPage, SetFeatures
from nvmestack.spec.log import SmartLog
from nvmestack.spec.nvm import Flush, Read, Write, WriteUncorrectable
from nvmestack.spec.opcodes import NvmOpcode
from nvmestack.spec.status import GenericStatus, MediaStatus, Status
from nvmestack.spec.tcp import PduType
from nvmestack.target.faults import FaultInjector
from nvmestack.target.workers import WorkerQueue
from nvmestack.tcp import SGL_TRANSPORT, R2TReceived, ResponseReceived

from .conftest import NQN
from .test_target import code, io_pair, wait_until

BS = 512


def io_connection(target):
    """The I/O queue's connection, or with worker processes its WorkerQueue."""
    if target._pool is not None:
        (queue,) = [q for q in target._pool.queues.values() if q.qid == 1]
        return queue
    (conn,) = [c for c in target.connections if c.qid == 1]
    return conn


def fast_commands(target) -> tuple[int, int]:
    """(reads, writes) the I/O queue's fast path executed (0, 0 on the general path)."""
    queue = io_connection(target)
    if isinstance(queue, WorkerQueue):
        counters = queue.counters  # what its worker's fast path counted
    elif queue.fast is None:
        return 0, 0
    else:
        counters = queue.fast.counters
    return counters.host_read_commands, counters.host_write_commands


def smart(admin) -> SmartLog:
    reply = admin.command(GetLogPage(lid=0x02, numd=512 // 4 - 1, nsid=0xFFFFFFFF), length=512)
    assert reply.ok, reply.status
    return SmartLog.view(bytearray(reply.data))


def test_read_write_flush_and_the_smart_counters(target, host, io_path):
    admin, io = io_pair(host)
    before = smart(admin)
    data = os.urandom(8 * BS)
    assert io.command(Write(nsid=1, slba=16, nblocks=8), data, write=True).ok  # in the capsule
    assert io.command(Read(nsid=1, slba=16, nblocks=8), length=len(data)).data == data
    assert io.command(Flush(nsid=1)).ok
    # the fast path took them when it is on, and the log counts them either way
    assert fast_commands(target) == ((1, 1) if io_path == "fast" else (0, 0))
    after = smart(admin)
    assert after.host_reads - before.host_reads == 1
    assert after.host_writes - before.host_writes == 1
    assert after.data_units_written - before.data_units_written == 1  # 4 KiB: one started 512,000-byte unit
    health = target.subsystems[NQN].health
    reads = health.host_read_commands
    # a queue that goes away hands its counts to the subsystem
    io.close()
    wait_until(lambda: not [c for c in target.connections if c.qid == 1], what="the I/O queue to close")
    assert health.host_read_commands == reads
    assert not health._queue_counters


def test_declined_commands_answer_as_the_general_path(target, host, io_path):
    target.controller_options["mdts"] = 7  # 512 KiB, below the 4 MiB namespace: a command over MDTS fits in it
    admin, io = io_pair(host)
    data = os.urandom(4 * BS)
    nblocks = 8192
    # outside the namespace, inactive namespace, over MDTS, short SGL
    assert code(io.command(Read(nsid=1, slba=nblocks - 2, nblocks=4), length=4 * BS)) == (
        0, GenericStatus.LBA_OUT_OF_RANGE)
    assert code(io.command(Read(nsid=2, slba=0, nblocks=1), length=BS)) == (0, GenericStatus.INVALID_FIELD)
    mdts_blocks = io_connection(target).ctrl.max_transfer // BS
    assert 0 < mdts_blocks < nblocks
    assert code(io.command(Read(nsid=1, slba=0, nblocks=mdts_blocks + 1), length=(mdts_blocks + 1) * BS)) == (
        0, GenericStatus.INVALID_FIELD)
    cid = io.submit(Read(nsid=1, slba=0, nblocks=8), length=4 * BS)
    assert code(io.result(cid)) == (0, GenericStatus.DATA_SGL_LENGTH_INVALID)
    # FUA: durable before completion, through the general path
    assert io.command(Write(nsid=1, slba=0, nblocks=4, fua=True), data, write=True).ok
    assert io.command(Read(nsid=1, slba=0, nblocks=4, fua=True), length=len(data)).data == data
    assert fast_commands(target) == (0, 0)
    # a block marked uncorrectable fails reads until rewritten
    assert io.command(WriteUncorrectable(nsid=1, slba=100, nblocks=1)).ok
    assert code(io.command(Read(nsid=1, slba=96, nblocks=8), length=8 * BS)) == (
        2, MediaStatus.UNRECOVERED_READ_ERROR)
    assert io.command(Write(nsid=1, slba=100, nblocks=1), data[:BS], write=True).ok
    assert fast_commands(target) == (0, 0)
    # no mark left: fast again
    assert io.command(Read(nsid=1, slba=100, nblocks=1), length=BS).data == data[:BS]
    assert io.command(Read(nsid=1, slba=0, nblocks=4), length=len(data)).data == data
    assert fast_commands(target) == ((2, 0) if io_path == "fast" else (0, 0))


def test_a_fault_rule_applies_on_either_path(target, host, io_path):
    admin, io = io_pair(host)
    faults = FaultInjector.install(target.subsystems[NQN])
    rule = faults.fail(MediaStatus.WRITE_FAULT, opcode=NvmOpcode.WRITE, count=1)
    assert code(io.command(Write(nsid=1, slba=0, nblocks=1), bytes(BS), write=True)) == (2, MediaStatus.WRITE_FAULT)
    assert rule.hits == 1
    faults.remove(rule)
    assert io.command(Write(nsid=1, slba=0, nblocks=1), bytes(BS), write=True).ok
    assert fast_commands(target) == ((0, 1) if io_path == "fast" else (0, 0))


def test_command_id_conflict_with_a_write_waiting_for_its_data(target, host, io_path):
    admin, io = io_pair(host)
    big = os.urandom(64 * BS)  # beyond the in-capsule size: an R2T, whose data we hold back
    cid = io.submit(Write(nsid=1, slba=0, nblocks=64), big, length=len(big), write=True, in_capsule=False)
    r2t = io.wait_for(lambda e: isinstance(e, R2TReceived) and e.cid == cid)
    # A Read with the same CID, by hand (our HostStream refuses to reuse a CID).
    read = Read(nsid=1, slba=0, nblocks=1)
    read.cid = cid
    read.psdt = 1
    read.sgl1.length = BS
    read.sgl1.sgl_identifier = SGL_TRANSPORT
    io.send(struct.pack("<BBBBI", PduType.CAPSULE_CMD, 0, 72, 0, 72) + bytes(read))
    reply = io.wait_for(lambda e: isinstance(e, ResponseReceived) and e.cid == cid)
    assert (Status.of(reply.completion).sct, Status.of(reply.completion).sc) == (0, GenericStatus.COMMAND_ID_CONFLICT)
    # the write still gets its data and completes
    io.send(struct.pack("<BBBBIHHII4x", PduType.H2C_DATA, 0x04, 24, 24, 24 + len(big), cid, r2t.ttag, 0, len(big))
            + big)
    done = io.wait_for(lambda e: isinstance(e, ResponseReceived) and e.cid == cid)
    assert Status.of(done.completion).ok
    assert io.command(Read(nsid=1, slba=0, nblocks=64), length=len(big)).data == big


def test_format_and_write_cache_changes_are_seen_at_once(target, host, io_path):
    admin, io = io_pair(host)
    data = os.urandom(8 * BS)
    assert io.command(Write(nsid=1, slba=0, nblocks=8), data, write=True).ok
    # 512 + 8 bytes of metadata, extended LBAs: block commands take the general path
    assert admin.command(FormatNvm(nsid=1, lbafl=1, mset=True)).ok
    assert io.command(Read(nsid=1, slba=0, nblocks=8), length=8 * 520).data == bytes(8 * 520)
    writes = fast_commands(target)[1]
    extended = os.urandom(8 * 520)
    assert io.command(Write(nsid=1, slba=0, nblocks=8), extended, write=True).ok
    assert io.command(Read(nsid=1, slba=0, nblocks=8), length=8 * 520).data == extended
    assert fast_commands(target)[1] == writes
    # back to a plain 4 KiB format: fast again, with the new block size
    assert admin.command(FormatNvm(nsid=1, lbafl=3)).ok
    assert io.command(Read(nsid=1, slba=0, nblocks=1), length=4096).data == bytes(4096)
    assert code(io.command(Read(nsid=1, slba=8192 // 8, nblocks=1), length=4096)) == (
        0, GenericStatus.LBA_OUT_OF_RANGE)
    # volatile write cache off: writes are made durable on the general path
    assert admin.command(SetFeatures(fid=0x06, cdw11=0)).ok
    writes = fast_commands(target)[1]
    page = os.urandom(4096)
    assert io.command(Write(nsid=1, slba=1, nblocks=1), page, write=True).ok
    assert fast_commands(target)[1] == writes
    assert admin.command(SetFeatures(fid=0x06, cdw11=1)).ok
    assert io.command(Write(nsid=1, slba=2, nblocks=1), page, write=True).ok
    assert fast_commands(target)[1] == writes + (1 if io_path == "fast" else 0)
    assert io.command(Read(nsid=1, slba=1, nblocks=2), length=8192).data == page * 2


def test_writes_through_r2t_and_a_change_before_their_data(target, host, io_path):
    admin, io = io_pair(host)
    big = os.urandom(64 * BS)  # beyond the in-capsule size: R2T and H2CData
    assert io.command(Write(nsid=1, slba=0, nblocks=64), big, write=True, in_capsule=False).ok
    assert io.command(Read(nsid=1, slba=0, nblocks=64), length=len(big)).data == big
    assert fast_commands(target) == ((1, 1) if io_path == "fast" else (0, 0))
    # A fault armed between the R2T and the data: the write runs on the general path and fails as the fault says.
    cid = io.submit(Write(nsid=1, slba=64, nblocks=64), big, length=len(big), write=True, in_capsule=False)
    r2t = io.wait_for(lambda e: isinstance(e, R2TReceived) and e.cid == cid)
    faults = FaultInjector.install(target.subsystems[NQN])
    faults.fail(MediaStatus.WRITE_FAULT, opcode=NvmOpcode.WRITE, count=1)
    io.send(io.stream.data_for_r2t(r2t, [big]))
    assert code(io.result(cid)) == (2, MediaStatus.WRITE_FAULT)
    faults.clear()
    assert fast_commands(target)[1] == (1 if io_path == "fast" else 0)
    assert io.command(Read(nsid=1, slba=64, nblocks=64), length=len(big)).data == bytes(len(big))
