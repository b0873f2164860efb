"""Property-based test of the command layer: random submission queue
entries, fully random and structured (valid opcodes, random fields), go
through ``Controller.prepare``/``execute`` with data buffers of the length
each command asks for.

For every command:

* nothing raises out of the controller, and no handler fails with an
  exception (the controller would turn it into Internal Error);
* the command completes (except an Asynchronous Event Request, which waits
  for an event, and the first half of a fused pair, which waits for its
  second half) with its own command identifier and a status the
  specification defines;
* it reads and writes the namespaces' storage only inside the blocks it
  addresses (SLBA..SLBA+NLB of its namespace; the DSM ranges; the Copy
  source ranges and destination), a read-only command writes nothing, and a
  command that fails modifies nothing.

The namespaces sit on backends that record every byte range touched.
Format NVM, Sanitize, Device Self-test and Namespace Management work on
whole namespaces and are exempt from the range check.
"""

from __future__ import annotations

import logging
import random
import struct
import threading

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nvmestack.spec.nvm import COPY_RANGE_SIZE, DSM_RANGE_SIZE, copy_ranges, dsm_ranges
from nvmestack.spec.opcodes import AdminOpcode, NvmOpcode
from nvmestack.spec.registers import Reg
from nvmestack.spec.sqe import Fuse
from nvmestack.spec.status import GenericStatus, Status
from nvmestack.target import Namespace, Subsystem
from nvmestack.target.backend import MemoryBackend
from nvmestack.target.commands import ADMIN_COMMANDS, IO_COMMANDS

MAX_BUFFER = 1 << 20  # transfers above this are not mapped (see run_one)
NSID_ALL = 0xFFFFFFFF

# Opcodes that act on whole namespaces (exempt from the range check).
WHOLE_NAMESPACE = {
    AdminOpcode.FORMAT_NVM,
    AdminOpcode.SANITIZE,
    AdminOpcode.DEVICE_SELF_TEST,
    AdminOpcode.NAMESPACE_MANAGEMENT,
}
BLOCK_COMMANDS = {
    NvmOpcode.READ,
    NvmOpcode.WRITE,
    NvmOpcode.COMPARE,
    NvmOpcode.VERIFY,
    NvmOpcode.WRITE_ZEROES,
    NvmOpcode.WRITE_UNCORRECTABLE,
}
READ_ONLY = {NvmOpcode.READ, NvmOpcode.COMPARE, NvmOpcode.VERIFY}
MODIFY = {"write", "deallocate", "write_zeroes", "resize"}
# Vendor specific statuses (SCT 7h) the device documents: none.
VENDOR_STATUSES: set[int] = set()


# ---------------------------------------------------------------------------
# storage that records what is touched


class Touches:
    """Every range of a backend touched from the test's thread."""

    def __init__(self):
        self.log: list[tuple[int, str, str, int, int]] = []  # nsid, role, op, offset, length
        self.thread = threading.get_ident()

    def add(self, nsid, role, op, offset, length):
        # Background work (self-test, sanitize) runs on other threads.
        if threading.get_ident() == self.thread:
            self.log.append((nsid, role, op, offset, length))


class RecordingBackend(MemoryBackend):
    def __init__(self, size, touches, nsid, role):
        super().__init__(size)
        self.touches, self.nsid, self.role = touches, nsid, role

    def _note(self, op, offset, length):
        self.touches.add(self.nsid, self.role, op, offset, length)

    def readinto(self, offset, bufs):
        self._note("read", offset, sum(b.nbytes for b in bufs))
        super().readinto(offset, bufs)

    def write(self, offset, bufs):
        self._note("write", offset, sum(b.nbytes for b in bufs))
        super().write(offset, bufs)

    def deallocate(self, offset, length):
        self._note("deallocate", offset, length)
        super().deallocate(offset, length)

    def write_zeroes(self, offset, length):
        self._note("write_zeroes", offset, length)
        MemoryBackend.deallocate(self, offset, length)

    def resize(self, size):
        self._note("resize", 0, size)
        super().resize(size)


def recording(touches, nsid):
    return lambda role, size: RecordingBackend(size, touches, nsid, role)


class InternalErrors(logging.Handler):
    """Exceptions a handler raised (the controller logs and hides them)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(self.format(record))


def make_device(touches):
    sub = Subsystem("nqn.2014-08.org.nvmexpress:uuid:0000000f-0000-0000-0000-00000000f022", serial="FUZZ")
    # 512-byte blocks; 512 + 8 with PI type 1 (last 8 bytes), separate
    # metadata; 4096 + 16 extended with PI type 3 in the first 8 bytes.
    sub.add_namespace(Namespace(1, 64, backends=recording(touches, 1)))
    sub.add_namespace(Namespace(2, 32, lba_format=1, pi_type=1, backends=recording(touches, 2)))
    sub.add_namespace(Namespace(3, 16, lba_format=5, extended=True, pi_type=3, pi_first=True,
                                backends=recording(touches, 3)))
    ctrl = sub.add_controller()
    ctrl.set_property(Reg.CC, 4, 1 | (6 << 16) | (4 << 20))
    assert ctrl.regs.csts.rdy
    return sub, ctrl


# ---------------------------------------------------------------------------
# what a command may touch


def _intervals_of(cmd_words, opcode, data):
    """(read intervals, write intervals) in logical blocks of the command's
    namespace, from the SQE's dwords and the data buffer it carried."""
    cdw10, cdw11, cdw12 = cmd_words[10], cmd_words[11], cmd_words[12]
    if opcode in BLOCK_COMMANDS:
        slba = cdw10 | (cdw11 << 32)
        blocks = [(slba, slba + (cdw12 & 0xFFFF) + 1)]
        return blocks, ([] if opcode in READ_ONLY else blocks)
    if opcode == NvmOpcode.DATASET_MANAGEMENT:
        count = (cdw10 & 0xFF) + 1
        if data is None or len(data) < count * DSM_RANGE_SIZE:
            return [], []
        ranges = [(r.slba, r.slba + r.nlb) for r in dsm_ranges(data, count)]
        return ranges, ranges
    if opcode == NvmOpcode.COPY:
        count = (cdw12 & 0xFF) + 1
        if (cdw12 >> 8) & 0xF != 0 or data is None or len(data) < count * COPY_RANGE_SIZE:
            return [], []
        sources = [(r.slba, r.slba + r.nlb + 1) for r in copy_ranges(data, count)]
        sdlba = cdw10 | (cdw11 << 32)
        dest = [(sdlba, sdlba + sum(b - a for a, b in sources))]
        return sources + dest, dest
    return [], []


def _inside(offset, length, intervals, unit):
    if length == 0:
        return True
    return any(a * unit <= offset and offset + length <= b * unit for a, b in intervals)


def check_touches(touches, geometry, nsid, reads, writes, ok, what):
    for t_nsid, role, op, offset, length in touches:
        modifies = op in MODIFY
        assert not (modifies and not ok), f"{what}: failed but did {op} {role} {offset}+{length} of ns {t_nsid}"
        assert t_nsid == nsid, f"{what}: touched namespace {t_nsid} ({op} {role} {offset}+{length})"
        bs, ms = geometry[t_nsid]
        unit = bs if role == "data" else ms
        allowed = writes if modifies else reads + writes
        assert _inside(offset, length, allowed, unit), (
            f"{what}: {op} {role} bytes {offset}+{length} outside blocks {allowed} (unit {unit})"
        )


# ---------------------------------------------------------------------------
# running commands


def fill(draw, opcode, admin, length):
    """A data buffer of ``length`` bytes: zeros, pseudo-random, or (for DSM
    and Copy) ranges near the namespaces."""
    kind = draw(st.sampled_from(["zero", "random", "ranges"]))
    buf = bytearray(length)
    if kind == "random":
        seed = draw(st.integers(0, 2**32 - 1))
        buf[:] = random.Random(seed).randbytes(length)
    elif kind == "ranges" and not admin and opcode in (NvmOpcode.DATASET_MANAGEMENT, NvmOpcode.COPY):
        size = DSM_RANGE_SIZE if opcode == NvmOpcode.DATASET_MANAGEMENT else COPY_RANGE_SIZE
        for i in range(min(length // size, 4)):
            slba = draw(st.integers(0, 80))
            nlb = draw(st.integers(0, 20))
            if opcode == NvmOpcode.DATASET_MANAGEMENT:
                struct.pack_into("<IIQ", buf, i * size, 0, nlb, slba)
            else:
                struct.pack_into("<QQH", buf, i * size, 0, slba, nlb)
    return buf


def run_sequence(draw, entries):
    touches = Touches()
    sub, ctrl = make_device(touches)
    errors = InternalErrors()
    logger = logging.getLogger("nvmestack.target")
    logger.addHandler(errors)
    pending_first = None  # (request, words, data, what) of a fused first half
    try:
        for index, (raw, sqid) in enumerate(entries):
            what = f"command {index} sqid {sqid} sqe {raw.hex()}"
            words = struct.unpack("<16I", raw)
            opcode, cid, nsid = raw[0], words[0] >> 16, words[1]
            fuse = raw[1] & 0x3
            geometry = {n: (ns.block_size, ns.metadata_size) for n, ns in sub.namespaces.items()}
            touches.log.clear()

            req = ctrl.new_request(raw, sqid)
            prepared = ctrl.prepare(req)
            data = None
            if prepared:
                assert req.data_len >= 0 and req.meta_len >= 0
                if req.data_len > MAX_BUFFER or req.meta_len > MAX_BUFFER:
                    # Not mapped: every I/O transfer is within MDTS; an
                    # admin command this large is left unexecuted.
                    assert req.admin, f"{what}: I/O transfer of {req.data_len} bytes passed MDTS"
                    event("admin transfer above 1 MiB not executed")
                    req.cancel()
                    ctrl.outstanding.pop((req.sqid, req.cid), None)
                    continue
                data = fill(draw, opcode, req.admin, req.data_len)
                req.data = [memoryview(data)] if req.data_len else []
                meta = fill(draw, opcode, True, req.meta_len)
                req.meta = [memoryview(meta)] if req.meta_len else []
                ctrl.execute(req)

            assert not errors.records, f"{what}: handler raised:\n" + "\n".join(errors.records)
            waiting_aer = req.admin and opcode == AdminOpcode.ASYNC_EVENT_REQUEST and req in ctrl.aer_requests
            waiting_fused = fuse == Fuse.FIRST and prepared and not req.done
            if not req.done:
                assert waiting_aer or waiting_fused, f"{what}: not completed"
            else:
                status = Status.of(req.cqe)
                assert req.cqe.cid == cid and req.cqe.sqid == sqid, f"{what}: completion names another command"
                if status.sct == 7:
                    assert status.value & 0x7FF in VENDOR_STATUSES, f"{what}: undocumented vendor status {status!r}"
                else:
                    assert status.code is not None, f"{what}: undefined status {status.value:#x}"
                assert status.sc != GenericStatus.INTERNAL_ERROR or status.sct != 0, f"{what}: internal error"
                event(f"{'admin' if req.admin else 'io'} {opcode:#04x} -> {status.name}")

            # Range check.
            if req.admin:
                if opcode not in WHOLE_NAMESPACE:
                    check_touches(touches.log, geometry, None, [], [], False, what)
                continue
            first, pending_first = pending_first, None
            if waiting_fused:
                pending_first = (req, words, data, what)
                check_touches(touches.log, geometry, None, [], [], False, what)
                continue
            reads, writes = _intervals_of(words, opcode, data)
            ok = req.done and Status.of(req.cqe).ok
            if first is not None and fuse == Fuse.SECOND:
                f_req, f_words, f_data, _ = first
                f_reads, f_writes = _intervals_of(f_words, f_req.opcode, f_data)
                reads, writes = reads + f_reads + f_writes, writes + f_writes
                ok = ok and f_req.done and Status.of(f_req.cqe).ok
                if f_req.done:
                    f_status = Status.of(f_req.cqe)
                    assert f_status.code is not None and f_req.cqe.cid == f_words[0] >> 16
                else:
                    pending_first = first  # still waiting (the second failed early)
            elif first is not None:
                # The first half lost its partner: it is aborted.
                f_req = first[0]
                assert f_req.done, f"{first[3]}: a fused first half stayed pending"
                assert Status.of(f_req.cqe).sc == GenericStatus.ABORTED_MISSING_FUSED
            target = nsid if nsid in geometry else None
            check_touches(touches.log, geometry, target, reads, writes, ok, what)
    finally:
        logger.removeHandler(errors)
        sub.close()


# ---------------------------------------------------------------------------
# strategies

ADMIN_OPCODES = sorted({int(op) for op in AdminOpcode} | set(ADMIN_COMMANDS))
IO_OPCODES = sorted({int(op) for op in NvmOpcode} | set(IO_COMMANDS))

nsids = st.one_of(st.sampled_from([0, 1, 2, 3, 4, NSID_ALL]), st.integers(0, 2**32 - 1))
dwords = st.one_of(st.integers(0, 64), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1))


@st.composite
def structured_entry(draw):
    admin = draw(st.booleans())
    # Two commands in three are "clean": a namespace that exists, no fused
    # operation, PRPs, small fields; the rest have random fields.
    clean = draw(st.sampled_from([True, True, False]))
    known = draw(st.sampled_from([True, True, True, False]))
    opcode = draw(st.sampled_from(ADMIN_OPCODES if admin else IO_OPCODES) if known else st.integers(0, 255))
    fuse = 0 if clean else draw(st.sampled_from([0, 0, 1, 2, 3]))
    psdt = 0 if clean else draw(st.sampled_from([0, 1, 2, 3]))
    cid = draw(st.integers(0, 0xFFFF))
    words = [0] * 16
    words[0] = opcode | (fuse | psdt << 6) << 8 | cid << 16
    words[1] = draw(st.sampled_from([1, 2, 3, NSID_ALL, 0]) if clean else nsids)
    for i in (2, 3, 4, 5, 6, 7, 8, 9):  # CDW2-3, MPTR, DPTR
        words[i] = 0 if clean or draw(st.booleans()) else draw(dwords)
    if not admin and opcode in BLOCK_COMMANDS | {NvmOpcode.COPY}:
        words[10] = draw(st.integers(0, 70) if clean else st.one_of(st.integers(0, 80), st.integers(0, 2**32 - 1)))
        words[11] = 0 if clean else draw(st.sampled_from([0, 0, 1, 0xFFFFFFFF]))
        low = draw(st.integers(0, 16) if clean else st.one_of(st.integers(0, 40), st.integers(0, 0xFFFF)))
        # PRINFO (PRACT, PRCHK), FUA, LR, DEAC ... in CDW12 31:16.
        high = draw(st.sampled_from([0, 0x4000, 0x8000, 0x2000, 0x3C00, 0x0200]) if clean
                    else st.one_of(st.just(0), st.integers(0, 0xFFFF)))
        words[12] = low | high << 16
        words[13] = 0 if clean else draw(dwords)
        words[14] = draw(st.sampled_from([0, words[10] & 0xFFFFFFFF]) if clean else dwords)  # reference tag
        words[15] = 0 if clean else draw(dwords)
        return struct.pack("<16I", *words), 1
    small = st.integers(0, 0x20)
    for i in range(10, 16):
        words[i] = draw(small if clean and i == 10 else dwords)
    if not admin and opcode == NvmOpcode.DATASET_MANAGEMENT and clean:
        words[10] = draw(st.integers(0, 3))
        words[11] = draw(st.sampled_from([0, 4, 1, 2, 7]))
    return struct.pack("<16I", *words), 0 if admin else 1


random_entry = st.tuples(st.binary(min_size=64, max_size=64), st.sampled_from([0, 1]))


def _unique_cids(entries):
    """Command identifiers unique per queue among the outstanding ones would
    be the host's job; a clash is a valid test too, but keep most apart."""
    out = []
    for i, (raw, sqid) in enumerate(entries):
        raw = bytearray(raw)
        if i % 4 != 3:
            raw[2:4] = ((int.from_bytes(raw[2:4], "little") & 0xFF00) | i).to_bytes(2, "little")
        out.append((bytes(raw), sqid))
    return out


SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


@settings(max_examples=300, **SETTINGS)
@given(st.lists(random_entry, min_size=1, max_size=4), st.data())
def test_random_entries(entries, data):
    run_sequence(data.draw, _unique_cids(entries))


@settings(max_examples=600, **SETTINGS)
@given(st.lists(structured_entry(), min_size=1, max_size=5), st.data())
def test_structured_entries(entries, data):
    run_sequence(data.draw, _unique_cids(entries))


@settings(max_examples=150, **SETTINGS)
@given(st.data())
def test_fused_compare_and_write_pairs(data):
    """Fused Compare + Write on the same blocks, with random fields."""
    nsid = data.draw(st.sampled_from([1, 2, 3, 5]))
    slba = data.draw(st.integers(0, 70))
    nlb = data.draw(st.integers(0, 8))
    high = data.draw(st.one_of(st.just(0), st.integers(0, 0xFFFF)))
    second_opcode = data.draw(st.sampled_from([NvmOpcode.WRITE, NvmOpcode.WRITE, NvmOpcode.READ]))
    second_slba = data.draw(st.one_of(st.just(slba), st.integers(0, 70)))

    def sqe(opcode, fuse, cid, lba):
        words = [0] * 16
        words[0] = opcode | fuse << 8 | cid << 16
        words[1] = nsid
        words[10] = lba
        words[12] = nlb | high << 16
        return struct.pack("<16I", *words)

    entries = [(sqe(NvmOpcode.COMPARE, Fuse.FIRST, 1, slba), 1), (sqe(second_opcode, Fuse.SECOND, 2, second_slba), 1)]
    run_sequence(data.draw, entries)


def test_the_range_check_catches_strays():
    """The checker itself: a write one byte past the blocks, a write by a
    failed command, a read-only command that writes, another namespace."""
    import pytest

    geometry = {1: (512, 0), 2: (512, 8)}
    blocks = [(4, 6)]
    check_touches([(1, "data", "read", 2048, 1024)], geometry, 1, blocks, [], True, "ok read")
    check_touches([(2, "meta", "write", 32, 16)], geometry, 2, blocks, blocks, True, "ok write")
    bad = [
        ([(1, "data", "write", 2048, 1025)], blocks, blocks, True),
        ([(1, "data", "write", 2048, 512)], blocks, blocks, False),
        ([(1, "data", "write", 2048, 512)], blocks, [], True),
        ([(2, "data", "read", 2048, 512)], blocks, [], True),
        ([(2, "meta", "read", 31, 8)], blocks, [], True),
    ]
    for log, reads, writes, ok in bad:
        nsid = log[0][0] if log[0][1] == "meta" else 1
        with pytest.raises(AssertionError):
            check_touches(log, geometry, nsid, reads, writes, ok, "stray")
