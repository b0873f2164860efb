"""The block layer (host/block.py): splitting, merging, the synchronous,
asyncio and submit APIs, argument checks, errors and statistics.

Most tests run over a small fake controller that keeps the core's contract
(``submit()`` returning real HostRequests, ``max_transfer``, ``identify``)
and executes the NVM commands on a bytearray, so every command the block
layer sends can be checked; the end-to-end tests at the bottom run a
BlockDevice over a live NvmeController and PciFunction in both device
modes."""

from __future__ import annotations

import asyncio
import io as _io
import random
import threading

import pytest

from nvmestack.host.block import (
    MAX_BLOCKS_PER_COMMAND,
    NVME_MAX_SEGS,
    PLUG_MAX_REQUESTS,
    BlockDevice,
    BlockIO,
    IoStats,
    iostat,
    plug,
    queue_limits,
)
from nvmestack.host.request import ControllerDeadError, HostRequest, NvmeStatusError
from nvmestack.spec.identify import IdentifyController, IdentifyNamespace
from nvmestack.spec.nvm import dsm_ranges
from nvmestack.spec.opcodes import NvmOpcode
from nvmestack.spec.status import SUCCESS, GenericStatus, MediaStatus
from nvmestack.target import Namespace

from .conftest import NS_BLOCK_SIZE, NS_BLOCKS

BS = 512
MS = 1_000_000  # ns per ms


# ---------------------------------------------------------------------------
# A fake controller and namespace with the core's contract


class FakeController:
    """Executes NVM commands on ``media`` and completes the HostRequests:
    at once (``mode="inline"``), from a worker thread (``"thread"``), or when
    the test says so (``"manual"``: ``complete()``/``complete_all()``)."""

    def __init__(self, nblocks=4096, block_size=BS, max_transfer=8 * BS, mode="inline", *,
                 oncs=True, vwc=True):
        self.block_size = block_size
        self.media = bytearray(nblocks * block_size)
        self.max_transfer = max_transfer
        self.mode = mode
        self.name = "nvme0"
        self.identify = IdentifyController()
        self.identify.vwc_present = vwc
        self.identify.oncs_dsm = oncs
        self.identify.oncs_write_zeroes = oncs
        self.identify.oncs_verify = oncs
        self.log: list[HostRequest] = []  # every submitted request, in order
        self.pending: list[HostRequest] = []
        self.fail_lbas: dict[int, object] = {}  # a command touching this LBA fails with the status
        self.dead = False
        self.flushes = 0
        self._lock = threading.Lock()
        self._work = None
        if mode == "thread":
            import queue

            self._work = queue.Queue()
            self._thread = threading.Thread(target=self._worker, daemon=True)
            self._thread.start()

    def close(self):
        if self._work is not None:
            self._work.put(None)
            self._thread.join(5)

    def _worker(self):
        while True:
            req = self._work.get()
            if req is None:
                return
            self.complete(req)

    def submit(self, cmd, data=None, meta=None, *, qid=None, timeout=None, direction=None):
        if self.dead:
            raise ControllerDeadError("nvme0: controller is dead")
        req = HostRequest(cmd, data, meta, direction=direction)
        req.qid = 1
        with self._lock:
            self.log.append(req)
        if self.mode == "inline":
            self.complete(req)
        elif self.mode == "thread":
            self._work.put(req)
        else:
            with self._lock:
                self.pending.append(req)
        return req

    def execute(self, cmd, data=None, meta=None, **kw):
        return self.submit(cmd, data, meta, **kw).wait().raise_for_status()

    # -- the device side

    def complete(self, req):
        status = self._execute(req)
        assert req._begin_completion()
        req.status = status
        req._finish()

    def complete_all(self):
        with self._lock:
            todo, self.pending = self.pending, []
        for req in todo:
            self.complete(req)
        return len(todo)

    def _touches_failed(self, ranges):
        for lba, st in self.fail_lbas.items():
            if any(s <= lba < s + n for s, n in ranges):
                return st
        return None

    def _execute(self, req):
        cmd = req.cmd
        bs = self.block_size
        op = cmd.opcode
        if op == NvmOpcode.FLUSH:
            self.flushes += 1
            return SUCCESS
        if op == NvmOpcode.DATASET_MANAGEMENT:
            raw = b"".join(bytes(mv) for mv in req.data)
            ranges = [(r.slba, r.nlb) for r in dsm_ranges(raw, cmd.nranges)]
        else:
            ranges = [(cmd.slba, cmd.nblocks)]
        for s, n in ranges:
            if (s + n) * bs > len(self.media):
                return GenericStatus.LBA_OUT_OF_RANGE.status(dnr=True)
        failed = self._touches_failed(ranges)
        if failed is not None:
            return failed
        s, n = ranges[0]
        if op in (NvmOpcode.READ, NvmOpcode.WRITE):
            assert req.nbytes == n * bs, "data length must match NLB"
            pos = s * bs
            for mv in req.data:
                if op == NvmOpcode.READ:
                    mv[:] = self.media[pos:pos + mv.nbytes]
                else:
                    self.media[pos:pos + mv.nbytes] = mv
                pos += mv.nbytes
        elif op == NvmOpcode.WRITE_ZEROES or op == NvmOpcode.DATASET_MANAGEMENT:
            for s, n in ranges:
                self.media[s * bs:(s + n) * bs] = bytes(n * bs)
        elif op == NvmOpcode.VERIFY:
            pass
        else:
            return GenericStatus.INVALID_OPCODE.status(dnr=True)
        return SUCCESS

    # -- what the block layer sent

    def ops(self, opcode):
        return [r for r in self.log if r.cmd.opcode == opcode]


class FakeNamespace:
    def __init__(self, ctrl, nsid=1, noiob=0):
        self.ctrl = ctrl
        self.nsid = nsid
        self.block_size = ctrl.block_size
        self.nblocks = len(ctrl.media) // ctrl.block_size
        self.metadata_size = 0
        self.identify = IdentifyNamespace()
        self.identify.nsze = self.nblocks
        self.identify.noiob = noiob


class Clock:
    """Nanoseconds the test moves by hand."""

    def __init__(self):
        self.now = 1_000 * MS

    def __call__(self):
        return self.now

    def advance(self, ms):
        self.now += int(ms * MS)


@pytest.fixture
def make_dev():
    made = []

    def factory(mode="inline", *, noiob=0, ctrl_kw=None, **dev_kw):
        ctrl = FakeController(mode=mode, **(ctrl_kw or {}))
        made.append(ctrl)
        ns = FakeNamespace(ctrl, noiob=noiob)
        return BlockDevice(ns, timeout=10, **dev_kw), ctrl

    yield factory
    for ctrl in made:
        ctrl.close()


def pattern(nbytes, seed=1):
    return random.Random(seed).randbytes(nbytes)


def rw_pieces(ctrl, opcode):
    return [(r.cmd.slba, r.cmd.nblocks, len(r.data), r.nbytes) for r in ctrl.ops(opcode)]


# ---------------------------------------------------------------------------
# Limits


def test_limits_from_the_controller():
    ctrl = FakeController(max_transfer=128 * 1024)
    lim = queue_limits(FakeNamespace(ctrl, noiob=64))
    assert lim.max_transfer == 128 * 1024 and lim.max_blocks == 256
    assert lim.max_segments == NVME_MAX_SEGS == 127
    assert lim.chunk_blocks == 64
    assert lim.max_discard_ranges == 256 and lim.max_write_zeroes_blocks == 65536
    assert lim.write_cache and lim.discard and lim.write_zeroes and lim.verify
    # MDTS 0 (unlimited) takes Linux's NVME_MAX_KB_SZ; a NOIOB that is not a
    # power of two is ignored (nvme_set_chunk_sectors); a transport's segment
    # limit wins over the default.
    ctrl.max_transfer = 0
    ctrl.max_segments = 33
    lim = queue_limits(FakeNamespace(ctrl, noiob=48))
    assert lim.max_transfer == 4096 * 1024 and lim.chunk_blocks == 0 and lim.max_segments == 33
    # An MDTS that is not a multiple of the block size is rounded down.
    ctrl.max_transfer = 3 * BS + 100
    assert queue_limits(FakeNamespace(ctrl)).max_transfer == 3 * BS


def test_limits_from_identify_controller_nvm():
    from nvmestack.spec.identify import IdentifyControllerNvm

    ctrl = FakeController()
    nvm = IdentifyControllerNvm()
    nvm.dmrl, nvm.dmrsl, nvm.wzsl, nvm.vsl = 16, 1000, 1, 2  # WZSL/VSL in 4 KiB pages, 2**n
    ctrl.identify_nvm = nvm
    lim = queue_limits(FakeNamespace(ctrl))
    assert (lim.max_discard_ranges, lim.max_discard_range_blocks) == (16, 1000)
    assert (lim.max_write_zeroes_blocks, lim.max_verify_blocks) == (2 * 4096 // BS, 4 * 4096 // BS)


def test_bad_limit_overrides(make_dev):
    with pytest.raises(ValueError):
        make_dev(max_segments=0)
    with pytest.raises(ValueError):
        make_dev(max_discard_ranges=257)
    with pytest.raises(ValueError):
        make_dev(max_write_zeroes_blocks=65537)


# ---------------------------------------------------------------------------
# Splitting


@pytest.mark.parametrize("mode", ["inline", "thread"])
def test_split_at_mdts(make_dev, mode):
    dev, ctrl = make_dev(mode)  # MDTS 4 KiB = 8 blocks
    data = pattern(45 * BS)  # 5.6 x MDTS from LBA 3
    assert dev.write(3 * BS, data) == len(data)
    assert rw_pieces(ctrl, NvmOpcode.WRITE) == [
        (3, 8, 1, 4096), (11, 8, 1, 4096), (19, 8, 1, 4096), (27, 8, 1, 4096), (35, 8, 1, 4096),
        (43, 5, 1, 5 * BS)]
    # Every piece landed at its LBA (and nothing else was touched).
    assert ctrl.media[3 * BS:48 * BS] == data
    assert ctrl.media[:3 * BS] == bytes(3 * BS) and ctrl.media[48 * BS:49 * BS] == bytes(BS)
    for req in ctrl.ops(NvmOpcode.WRITE):
        off = (req.cmd.slba - 3) * BS
        assert bytes(req.data[0]) == data[off:off + req.nbytes]
    out = dev.read(3 * BS, len(data))
    assert out == data
    assert [p[:2] for p in rw_pieces(ctrl, NvmOpcode.READ)] == [(3, 8), (11, 8), (19, 8), (27, 8), (35, 8), (43, 5)]
    st = dev.stats()
    assert (st.write_ios, st.read_ios, st.write_sectors, st.read_sectors) == (6, 6, 45, 45)
    assert st.write_merges == st.read_merges == 0


def test_split_by_segments_and_odd_buffers(make_dev):
    dev, ctrl = make_dev(max_segments=4)
    # 11 buffers of 300 bytes and one of 44: 3344 bytes?  Not whole blocks;
    # use sizes adding up to 8 blocks.
    sizes = [300] * 12 + [496]
    assert sum(sizes) == 8 * BS
    data = pattern(sum(sizes), seed=7)
    bufs, pos = [], 0
    for n in sizes:
        bufs.append(data[pos:pos + n])
        pos += n
    dev.writev(0, bufs)
    pieces = rw_pieces(ctrl, NvmOpcode.WRITE)
    assert all(nseg <= 4 for _, _, nseg, _ in pieces)
    assert all(nbytes % BS == 0 for *_, nbytes in pieces)
    # contiguous and complete
    lba = 0
    for slba, n, _, nbytes in pieces:
        assert slba == lba and nbytes == n * BS
        lba += n
    assert lba == 8
    assert ctrl.media[:8 * BS] == data
    # Read back into the same odd scatter list.
    outs = [bytearray(n) for n in sizes]
    assert dev.readv(0, outs) == 8 * BS
    assert b"".join(outs) == data
    assert all(nseg <= 4 for _, _, nseg, _ in rw_pieces(ctrl, NvmOpcode.READ))


def test_split_at_default_segment_limit(make_dev):
    dev, ctrl = make_dev(ctrl_kw={"max_transfer": 1 << 20})
    data = pattern(300 * BS, seed=3)
    bufs = [data[i:i + BS] for i in range(0, len(data), BS)]
    dev.writev(10 * BS, bufs)
    assert [(s, n, k) for s, n, k, _ in rw_pieces(ctrl, NvmOpcode.WRITE)] == [
        (10, 127, 127), (137, 127, 127), (264, 46, 46)]
    assert ctrl.media[10 * BS:310 * BS] == data


def test_fragmented_block_rejected(make_dev):
    dev, ctrl = make_dev(max_segments=2)
    with pytest.raises(ValueError, match="fragmented"):
        dev.writev(0, [bytes(100)] * 5 + [bytes(12)])
    assert ctrl.log == []


def test_split_at_chunk_boundary(make_dev):
    dev, ctrl = make_dev(noiob=16, ctrl_kw={"max_transfer": 64 * BS})
    dev.write(10 * BS, pattern(40 * BS))
    assert [p[:2] for p in rw_pieces(ctrl, NvmOpcode.WRITE)] == [(10, 6), (16, 16), (32, 16), (48, 2)]


def test_write_zeroes_verify_split_at_16_bit_nlb(make_dev):
    dev, ctrl = make_dev(ctrl_kw={"nblocks": 65536 + 64})
    ctrl.media[:] = b"\xff" * len(ctrl.media)
    dev.write_zeroes_blocks(5, 65536 + 10, deallocate=True)
    wz = ctrl.ops(NvmOpcode.WRITE_ZEROES)
    assert [(r.cmd.slba, r.cmd.nblocks, r.cmd.deac) for r in wz] == [(5, 65536, 1), (65541, 10, 1)]
    assert all(r.direction == 0 and r.data == [] for r in wz)
    assert ctrl.media[5 * BS:(65536 + 15) * BS].count(0) == (65536 + 10) * BS
    assert ctrl.media[4 * BS:5 * BS] == b"\xff" * BS
    dev.verify(0, (65536 + 1) * BS)
    assert [(r.cmd.slba, r.cmd.nblocks) for r in ctrl.ops(NvmOpcode.VERIFY)] == [(0, 65536), (65536, 1)]
    st = dev.stats()
    # Write Zeroes counts as writes, Verify as reads (op_stat_group()).
    assert (st.write_ios, st.write_sectors) == (2, 65536 + 10)
    assert (st.read_ios, st.read_sectors) == (2, 65537)
    assert MAX_BLOCKS_PER_COMMAND == 65536


def test_discard_ranges_split(make_dev):
    dev, ctrl = make_dev(max_discard_range_blocks=3, max_discard_ranges=4)
    ctrl.media[:] = b"\xaa" * len(ctrl.media)
    dev.discard(2 * BS, 20 * BS)
    cmds = ctrl.ops(NvmOpcode.DATASET_MANAGEMENT)
    got = []
    for r in cmds:
        assert r.cmd.ad and r.direction == 1
        raw = bytes(r.data[0])
        got.append([(x.slba, x.nlb) for x in dsm_ranges(raw, r.cmd.nranges)])
    assert got == [[(2, 3), (5, 3), (8, 3), (11, 3)], [(14, 3), (17, 3), (20, 2)]]
    assert ctrl.media[2 * BS:22 * BS] == bytes(20 * BS)
    assert ctrl.media[22 * BS:23 * BS] == b"\xaa" * BS
    st = dev.stats()
    assert (st.discard_ios, st.discard_sectors, st.discard_merges) == (2, 20, 0)


# ---------------------------------------------------------------------------
# Merging


def test_plug_merges_contiguous_writes(make_dev):
    dev, ctrl = make_dev(ctrl_kw={"max_transfer": 16 * BS})
    data = pattern(24 * BS, seed=9)
    with dev.plug():
        ios = [dev.submit.write(i * 2 * BS, data[i * 2 * BS:(i + 1) * 2 * BS]) for i in range(12)]
        assert ctrl.log == []  # nothing dispatched while plugged
        assert dev.stats().in_flight == 2  # two requests: 8 pieces + 4 pieces
    assert [io.result() for io in ios] == [2 * BS] * 12
    # 16 blocks per command: pieces 0-7 merged, 8-11 merged.
    assert [(s, n, k) for s, n, k, _ in rw_pieces(ctrl, NvmOpcode.WRITE)] == [(0, 16, 8), (16, 8, 4)]
    assert ctrl.media[:24 * BS] == data
    st = dev.stats()
    assert (st.write_ios, st.write_merges, st.write_sectors, st.in_flight) == (2, 10, 24, 0)


def test_plug_front_merge_and_reads(make_dev):
    dev, ctrl = make_dev()
    data = pattern(8 * BS, seed=11)
    ctrl.media[40 * BS:48 * BS] = data
    bufs = [bytearray(BS) for _ in range(8)]
    with plug():
        ios = [dev.submit.readinto((40 + i) * BS, bufs[i]) for i in reversed(range(8))]
    for io in ios:
        io.result()
    assert b"".join(bufs) == data
    assert [(s, n, k) for s, n, k, _ in rw_pieces(ctrl, NvmOpcode.READ)] == [(40, 8, 8)]
    assert (dev.stats().read_ios, dev.stats().read_merges) == (1, 7)


def test_plug_does_not_merge_across_limits_or_gaps(make_dev):
    dev, ctrl = make_dev(max_segments=3)
    with dev.plug():
        for lba in (0, 1, 2, 3, 10, 11):  # gap at 4..9; 3 segments per command
            dev.submit.write(lba * BS, bytes(BS))
        dev.submit.write(20 * BS, bytes(BS), fua=True)
        dev.submit.write(21 * BS, bytes(BS))  # FUA differs: no merge
        dev.submit.read(22 * BS, BS)  # direction differs: no merge
    assert [(s, n) for s, n, *_ in rw_pieces(ctrl, NvmOpcode.WRITE)] == [(0, 3), (3, 1), (10, 2), (20, 1), (21, 1)]
    assert [r.cmd.fua for r in ctrl.ops(NvmOpcode.WRITE)] == [0, 0, 0, 1, 0]
    assert dev.stats().write_merges == 3


def test_plug_keeps_order_of_overlapping_writes(make_dev):
    dev, ctrl = make_dev()
    with dev.plug():
        dev.submit.write(0, b"1" * (8 * BS))
        dev.submit.write(8 * BS, b"a" * (8 * BS))
        # Contiguous with the first write, but the second one (same blocks)
        # sits between: merging would reorder them.
        dev.submit.write(8 * BS, b"b" * (8 * BS))
    assert ctrl.media[8 * BS:16 * BS] == b"b" * (8 * BS)
    assert len(ctrl.ops(NvmOpcode.WRITE)) == 3


def test_plug_flush_is_a_barrier(make_dev):
    dev, ctrl = make_dev()
    with dev.plug():
        dev.submit.write(0, bytes(BS))
        dev.submit.flush()
        dev.submit.write(BS, bytes(BS))
    assert [r.cmd.opcode for r in ctrl.log] == [NvmOpcode.WRITE, NvmOpcode.FLUSH, NvmOpcode.WRITE]
    st = dev.stats()
    assert (st.write_merges, st.flush_ios, st.write_ios) == (0, 1, 2)


def test_plug_merges_discards_into_one_dsm(make_dev):
    dev, ctrl = make_dev()
    with dev.plug():
        for lba in (100, 7, 300, 8):
            dev.submit.discard_blocks(lba, 1)
    (cmd,) = ctrl.ops(NvmOpcode.DATASET_MANAGEMENT)
    ranges = [(r.slba, r.nlb) for r in dsm_ranges(bytes(cmd.data[0]), cmd.cmd.nranges)]
    assert ranges == [(100, 1), (7, 1), (300, 1), (8, 1)]
    st = dev.stats()
    assert (st.discard_ios, st.discard_merges, st.discard_sectors) == (1, 3, 4)


def test_plug_dispatches_when_full(make_dev):
    dev, ctrl = make_dev()
    with dev.plug():
        for i in range(PLUG_MAX_REQUESTS):
            dev.submit.write(2 * i * BS, bytes(BS))  # gaps: no merging
        assert len(ctrl.log) == PLUG_MAX_REQUESTS  # the 32nd request dispatched the lot
        dev.submit.write(200 * BS, bytes(BS))
        assert len(ctrl.log) == PLUG_MAX_REQUESTS
    assert len(ctrl.log) == PLUG_MAX_REQUESTS + 1


def test_waiting_inside_a_plug_dispatches_it(make_dev):
    dev, ctrl = make_dev("thread")
    with dev.plug():
        first = dev.submit.write(0, b"x" * BS)
        assert dev.read(0, BS) == b"x" * BS  # synchronous: unplugs, then waits
        assert first.done
        io = dev.submit.write(BS, b"y" * BS)
        assert io.wait(5) and io.result() == BS
    assert ctrl.media[:2 * BS] == b"x" * BS + b"y" * BS


def test_plug_is_per_context(make_dev):
    dev, ctrl = make_dev()
    seen = []
    with dev.plug():
        dev.submit.write(0, bytes(BS))

        def other():  # another thread has no plug: dispatched at once
            dev.write(BS, bytes(BS))
            seen.append(len(ctrl.log))

        t = threading.Thread(target=other)
        t.start()
        t.join(5)
        assert seen == [1]
        with plug():  # nested: joins the outer plug
            dev.submit.write(5 * BS, bytes(BS))
        assert len(ctrl.log) == 1
    assert len(ctrl.log) == 3


# ---------------------------------------------------------------------------
# APIs


def test_submit_api_and_callbacks(make_dev):
    dev, ctrl = make_dev("manual")
    io = dev.submit.write(0, pattern(20 * BS))
    assert isinstance(io, BlockIO) and not io.done
    assert len(io.requests) == 3
    seen = []
    io.add_done_callback(seen.append)
    ctrl.complete(ctrl.pending.pop(0))
    assert not io.done and seen == []
    ctrl.complete_all()
    assert io.done and seen == [io] and io.result() == 20 * BS
    later = []
    io.add_done_callback(later.append)
    assert later == [io]
    with pytest.raises(TimeoutError):
        dev.submit.read(0, BS).result(timeout=0.01)


def test_zero_length_is_done_at_once(make_dev):
    dev, ctrl = make_dev()
    assert dev.read(0, 0) == bytearray()
    assert dev.write(dev.size, b"") == 0
    assert dev.readv(BS, []) == 0
    dev.discard(0, 0)
    dev.write_zeroes(0, 0)
    dev.verify(0, 0)
    assert ctrl.log == [] and dev.stat() == (0,) * 17


def test_lba_forms(make_dev):
    dev, ctrl = make_dev()
    data = pattern(10 * BS, seed=5)
    assert dev.write_blocks(20, data) == len(data)
    assert dev.read_blocks(20, 10) == data
    buf = bytearray(3 * BS)
    assert dev.readinto_blocks(22, buf) == 3 * BS and buf == data[2 * BS:5 * BS]
    a, b = bytearray(BS), bytearray(2 * BS)
    dev.readv_blocks(20, [a, b])
    assert a + b == data[:3 * BS]
    dev.writev_blocks(0, [b"p" * BS, b"q" * BS])
    assert ctrl.media[:2 * BS] == b"p" * BS + b"q" * BS
    dev.discard_blocks(20, 2)
    dev.write_zeroes_blocks(22, 2)
    dev.verify_blocks(20, 10)
    assert dev.read_blocks(20, 4) == bytes(4 * BS)


def test_fua_and_flush(make_dev):
    dev, ctrl = make_dev()
    dev.write(0, bytes(BS), fua=True)
    dev.write_zeroes(BS, BS, fua=True)
    dev.flush()
    assert ctrl.ops(NvmOpcode.WRITE)[0].cmd.fua == 1
    assert ctrl.ops(NvmOpcode.WRITE_ZEROES)[0].cmd.fua == 1
    (fl,) = ctrl.ops(NvmOpcode.FLUSH)
    assert fl.cmd.nsid == 1 and fl.direction == 0
    st = dev.stats()
    assert (st.flush_ios, st.write_ios) == (1, 2)


def test_no_write_cache_drops_flush_and_fua(make_dev):
    # As submit_bio_noacct(): nothing to flush without a volatile cache.
    dev, ctrl = make_dev(ctrl_kw={"vwc": False})
    dev.flush()
    dev.write(0, bytes(BS), fua=True)
    assert ctrl.ops(NvmOpcode.FLUSH) == []
    assert ctrl.ops(NvmOpcode.WRITE)[0].cmd.fua == 0
    assert dev.stats().flush_ios == 0


def test_unsupported_optional_commands(make_dev):
    dev, ctrl = make_dev(ctrl_kw={"oncs": False})
    for call in (lambda: dev.discard(0, BS), lambda: dev.write_zeroes(0, BS), lambda: dev.verify(0, BS)):
        with pytest.raises(_io.UnsupportedOperation, match="ONCS"):
            call()
    assert ctrl.log == []


@pytest.mark.parametrize("mode", ["inline", "thread", "manual"])
def test_asyncio_api(make_dev, mode):
    dev, ctrl = make_dev(mode)
    data = pattern(30 * BS, seed=2)

    async def completer():
        while True:
            ctrl.complete_all()
            await asyncio.sleep(0.001)

    async def main():
        helper = asyncio.create_task(completer()) if mode == "manual" else None
        try:
            assert await dev.aio.write(4 * BS, data) == len(data)
            got = await dev.aio.read(4 * BS, len(data))
            assert got == data
            # many at once
            results = await asyncio.gather(*(dev.aio.read_blocks(4 + i, 1) for i in range(30)))
            assert b"".join(results) == data
            # a BlockIO is awaitable too
            io = dev.submit.write_blocks(100, b"z" * BS)
            assert await io == BS
            await dev.aio.flush()
            await dev.aio.discard(4 * BS, 2 * BS)
            await dev.aio.write_zeroes_blocks(6, 2)
            await dev.aio.verify(0, BS)
            assert await dev.aio.read(4 * BS, 4 * BS) == bytes(4 * BS)
            ctrl.fail_lbas[200] = MediaStatus.UNRECOVERED_READ_ERROR.status(dnr=True)
            with pytest.raises(NvmeStatusError, match="Unrecovered Read Error"):
                await dev.aio.read_blocks(199, 4)
        finally:
            if helper:
                helper.cancel()

    asyncio.run(main())
    assert dev.stats().in_flight == 0


def test_asyncio_with_plug(make_dev):
    dev, ctrl = make_dev("thread")

    async def main():
        with dev.plug():
            aws = [dev.aio.write_blocks(i, bytes([i]) * BS) for i in range(8)]
        await asyncio.gather(*aws)

    asyncio.run(main())
    assert rw_pieces(ctrl, NvmOpcode.WRITE) == [(0, 8, 8, 8 * BS)]
    assert ctrl.media[:8 * BS] == b"".join(bytes([i]) * BS for i in range(8))


def test_concurrent_threads(make_dev):
    dev, ctrl = make_dev("thread", ctrl_kw={"nblocks": 64 * 16})
    errors = []

    def worker(w):
        try:
            rng = random.Random(w)
            for i in range(20):
                lba = w * 64 + rng.randrange(0, 48)
                data = rng.randbytes(rng.randrange(1, 17) * BS)
                dev.write_blocks(lba, data)
                assert dev.read_blocks(lba, len(data) // BS) == data
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    st = dev.stats()
    assert st.read_ios == len(ctrl.ops(NvmOpcode.READ)) and st.write_ios == len(ctrl.ops(NvmOpcode.WRITE))
    assert st.in_flight == 0


# ---------------------------------------------------------------------------
# Arguments


def test_misaligned_and_invalid_arguments(make_dev):
    dev, ctrl = make_dev()
    cases = [
        (lambda: dev.read(100, BS), "offset 100 is not a multiple of the block size 512"),
        (lambda: dev.read(0, 100), "size 100 is not a multiple"),
        (lambda: dev.write(BS + 1, bytes(BS)), "offset .* not a multiple"),
        (lambda: dev.write(0, bytes(BS + 3)), "size .* not a multiple"),
        (lambda: dev.writev(0, [bytes(100), bytes(100)]), "size 200"),
        (lambda: dev.discard(0, 10), "not a multiple"),
        (lambda: dev.write_zeroes(7, BS), "not a multiple"),
        (lambda: dev.verify(0, 3), "not a multiple"),
        (lambda: dev.read(-BS, BS), "negative"),
        (lambda: dev.read_blocks(0, -1), "negative"),
        (lambda: dev.read(dev.size, BS), "beyond the end"),
        (lambda: dev.write_blocks(dev.nblocks - 1, bytes(2 * BS)), "beyond the end"),
        (lambda: dev.discard_blocks(dev.nblocks, 1), "beyond the end"),
        (lambda: dev.readinto_blocks(0, bytearray(BS + 1)), "buffer size"),
    ]
    for call, msg in cases:
        with pytest.raises(ValueError, match=msg):
            call()
    with pytest.raises(TypeError, match="writable"):
        dev.readinto(0, bytes(BS))
    with pytest.raises(TypeError):
        dev.read(0.0, BS)
    with pytest.raises(TypeError, match="bytes-like"):
        dev.write(0, "text" * 128)
    with pytest.raises(TypeError, match="list of buffers"):
        dev.writev(0, bytes(BS))
    assert ctrl.log == []


def test_typed_buffers_are_flat_bytes(make_dev):
    import array

    dev, _ctrl = make_dev()
    words = array.array("I", range(BS // 2))  # 1024 bytes of 4-byte items
    assert dev.write(0, words) == 2 * BS
    back = array.array("I", bytes(2 * BS))
    dev.readinto(0, back)
    assert back == words


# ---------------------------------------------------------------------------
# Errors


def test_failed_piece_fails_the_whole_request(make_dev):
    dev, ctrl = make_dev()
    ctrl.fail_lbas[20] = MediaStatus.WRITE_FAULT.status(dnr=True)
    with pytest.raises(NvmeStatusError) as err:
        dev.write(0, pattern(40 * BS))  # 5 commands; the third fails
    assert "Write Fault" in str(err.value)
    assert err.value.status.sc == MediaStatus.WRITE_FAULT
    # the other pieces ran; the request still failed as a whole
    assert len(ctrl.ops(NvmOpcode.WRITE)) == 5
    assert dev.stats().write_ios == 5  # failed requests are accounted too (as Linux)


def test_first_failure_by_lba_is_reported(make_dev):
    dev, ctrl = make_dev("manual")
    ctrl.fail_lbas[30] = MediaStatus.WRITE_FAULT.status(dnr=True)
    ctrl.fail_lbas[5] = GenericStatus.INTERNAL_ERROR.status(dnr=True)
    io = dev.submit.write(0, bytes(40 * BS))
    for req in reversed(ctrl.pending):  # the LBA 30 failure completes first
        ctrl.complete(req)
    ctrl.pending.clear()
    with pytest.raises(NvmeStatusError, match="Internal Error"):
        io.result()


def test_merged_request_failure_fails_every_io(make_dev):
    dev, ctrl = make_dev()
    ctrl.fail_lbas[3] = MediaStatus.UNRECOVERED_READ_ERROR.status(dnr=True)
    with dev.plug():
        ios = [dev.submit.read_blocks(i, 1) for i in range(6)]
    assert len(ctrl.ops(NvmOpcode.READ)) == 1
    for io in ios:
        with pytest.raises(NvmeStatusError):
            io.result()


def test_dead_controller(make_dev):
    dev, ctrl = make_dev()
    ctrl.dead = True
    with pytest.raises(ControllerDeadError):
        dev.write(0, bytes(20 * BS))
    st = dev.stats()
    assert st.in_flight == 0 and st.write_ios == 3


def test_raising_done_callback_does_not_break_completion(make_dev, caplog):
    dev, ctrl = make_dev("manual")
    io = dev.submit.write(0, bytes(BS))
    io.add_done_callback(lambda _io: 1 / 0)
    ctrl.complete_all()
    assert io.result() == BS
    assert "failed" in caplog.text


# ---------------------------------------------------------------------------
# Statistics


def test_stats_fields_and_ticks():
    clock = Clock()
    ctrl = FakeController(mode="manual", block_size=4096, nblocks=256, max_transfer=8 * 4096)
    dev = BlockDevice(FakeNamespace(ctrl), clock=clock)
    assert dev.stat() == (0,) * 17

    r = dev.submit.read_blocks(0, 2)  # 2 blocks of 4 KiB = 16 sectors
    clock.advance(5)
    w = dev.submit.write_blocks(10, bytes(3 * 4096))
    st = dev.stats()
    assert st.in_flight == 2 and dev.inflight() == (1, 1)
    clock.advance(10)
    ctrl.complete(ctrl.pending.pop(0))  # the read: 15 ms
    clock.advance(5)
    ctrl.complete(ctrl.pending.pop(0))  # the write: 15 ms
    r.result(), w.result()
    clock.advance(100)  # idle: no io_ticks
    d = dev.submit.discard_blocks(100, 4)
    f = dev.submit.flush()
    clock.advance(2)
    ctrl.complete_all()
    d.result(), f.result()
    with dev.plug():
        ios = [dev.submit.write_blocks(50 + i, bytes(4096)) for i in range(4)]
    clock.advance(1)
    ctrl.complete_all()
    for io in ios:
        io.result()

    st = dev.stats()
    assert st.fields() == (
        1, 0, 16, 15,          # read ios, merges, sectors, ticks
        2, 3, 24 + 32, 15 + 1,  # write: the 3-block write and the merged 4 x 1 block
        0, 15 + 5 + 2 + 1,     # in_flight; io_ticks: busy 0..20, 120..122, 122..123 ms
        15 + 15 + 2 + 2 + 1,   # time_in_queue: sum of the request times
        1, 0, 32, 2,           # discard
        1, 2,                  # flush
    )
    assert st.as_dict()["write_merges"] == 3
    assert IoStats.FIELDS[8] == "in_flight" and len(IoStats.FIELDS) == 17
    # The line as the kernel prints it: each value %8u, one space between.
    line = str(st)
    assert line.split() == [str(v) for v in st.fields()]
    assert line.startswith("       1        0       16       15")


def test_io_ticks_while_in_flight():
    clock = Clock()
    ctrl = FakeController(mode="manual")
    dev = BlockDevice(FakeNamespace(ctrl), clock=clock)
    before = dev.stats()
    dev.submit.read_blocks(0, 1)
    clock.advance(7)
    mid = dev.stats()  # a snapshot counts the busy time up to now
    assert (mid.in_flight, mid.io_ticks, mid.read_ios) == (1, 7, 0)
    clock.advance(3)
    ctrl.complete_all()
    after = dev.stats()
    assert (after.in_flight, after.io_ticks, after.read_ios, after.read_ticks) == (0, 10, 1, 10)
    assert before.io_ticks == 0


def test_iostat_between_snapshots():
    clock = Clock()
    ctrl = FakeController(mode="manual", nblocks=4096, max_transfer=16 * BS)
    dev = BlockDevice(FakeNamespace(ctrl), clock=clock)
    before = dev.stats()
    # 1 s interval: 4 reads of 8 blocks (4 KiB) taking 2 ms each, 2 writes of
    # 16 blocks taking 10 ms each (one made of two merged pieces), busy 24 ms.
    for i in range(4):
        io = dev.submit.read_blocks(i * 8, 8)
        clock.advance(2)
        ctrl.complete_all()
        io.result()
    for i in range(2):
        with dev.plug():
            a = dev.submit.write_blocks(100 + i * 16, bytes(8 * BS))
            b = dev.submit.write_blocks(108 + i * 16, bytes(8 * BS))
        clock.advance(10)
        ctrl.complete_all()
        a.result(), b.result()
    clock.now = before.timestamp_ns + 1000 * MS
    s = dev.iostat(before)
    assert s.interval == pytest.approx(1.0)
    assert (s.r_s, s.w_s) == (4.0, 2.0)
    assert (s.rkB_s, s.wkB_s) == (16.0, 16.0)
    assert (s.rrqm_s, s.wrqm_s) == (0.0, 2.0)
    assert (s.r_await, s.w_await) == (2.0, 10.0)
    assert s.await_ == pytest.approx(28 / 6)
    assert (s.rareq_sz, s.wareq_sz) == (4.0, 8.0)
    assert s.util == pytest.approx(2.8)
    assert s.aqu_sz == pytest.approx(0.028)
    assert "%util" in str(s)
    with pytest.raises(ValueError):
        iostat(dev.stats(), before)


def test_double_completion_guard(make_dev):
    dev, ctrl = make_dev("manual")
    io = dev.submit.write(0, bytes(BS))
    req = ctrl.pending[0]
    ctrl.complete_all()
    # A second completion of the same block request is refused and counted.
    from nvmestack.host import block

    rq = block._Request(dev, block.Op.WRITE, 0, 1)
    rq.completed = True
    dev._complete(rq, None)
    assert dev.double_completions == 1
    assert io.result() == BS and req.done
    assert HostRequest.double_completions == 0


# ---------------------------------------------------------------------------
# End to end: a BlockDevice over a live NvmeController over a PciFunction,
# in the device's inline and threaded modes (fixtures in conftest.py).


def media(subsys, nsid, lba, nblocks, bs=NS_BLOCK_SIZE):
    """The blocks as the device stores them (not through the host)."""
    return subsys.namespaces[nsid].data.read_bytes(lba * bs, nblocks * bs)


def scattered(data, rng, misalign=True):
    """``data`` cut into buffers of random sizes, each a view at an odd
    offset inside a larger bytearray (misaligned for DMA)."""
    out, pos = [], 0
    while pos < len(data):
        n = min(len(data) - pos, rng.choice([1, 7, 100, 512, 513, 1000, 4096, 5000, 20000]))
        pad = rng.randrange(1, 64) if misalign else 0
        backing = bytearray(pad + n + 16)
        backing[pad:pad + n] = data[pos:pos + n]
        out.append(memoryview(backing)[pad:pad + n])
        pos += n
    return out


@pytest.fixture
def mdts_ctrl(make_function, make_controller, pci_mode):
    """A controller whose MDTS is 16 KiB (32 blocks of 512 bytes)."""
    fn = make_function(mode=pci_mode, controller_options={"mdts": 2})
    return make_controller(fn)


def test_e2e_probe_limits(mdts_ctrl):
    dev = BlockDevice(mdts_ctrl.namespaces[1])
    lim = dev.limits
    assert (dev.block_size, dev.nblocks, dev.size) == (NS_BLOCK_SIZE, NS_BLOCKS, NS_BLOCKS * NS_BLOCK_SIZE)
    assert lim.max_transfer == 16384 and lim.max_blocks == 32
    assert lim.max_segments == mdts_ctrl.max_segments
    assert lim.write_cache and lim.discard and lim.write_zeroes and lim.verify
    assert dev.name == f"{mdts_ctrl.name}n1"


@pytest.mark.parametrize("sgl_threshold", [0, 1], ids=["prp", "sgl"])
def test_e2e_write_read_verify_split(make_controller, make_function, pci_mode, host_subsystem, sgl_threshold):
    fn = make_function(mode=pci_mode, controller_options={"mdts": 2})
    ctrl = make_controller(fn, transport_options={"sgl_threshold": sgl_threshold})
    dev = BlockDevice(ctrl.namespaces[1])
    rng = random.Random(sgl_threshold)
    lba = 0
    for nblocks in (1, 2, 31, 32, 33, 64, 100, 129):  # up to 4 x MDTS
        data = pattern(nblocks * BS, seed=nblocks)
        before = dev.stats()
        assert dev.writev_blocks(lba, scattered(data, rng)) == len(data)
        assert media(host_subsystem, 1, lba, nblocks) == data
        outs = scattered(bytes(len(data)), rng)
        assert dev.readv_blocks(lba, outs) == len(data)
        assert b"".join(bytes(o) for o in outs) == data
        assert dev.read_blocks(lba, nblocks) == data
        after = dev.stats()
        pieces = -(-nblocks // 32)
        assert after.write_ios - before.write_ios >= pieces
        assert after.write_sectors - before.write_sectors == nblocks
        lba += nblocks + 3
    used = ctrl.transport.stats
    if sgl_threshold:
        assert used["sgl"] > 0
    else:
        assert used["sgl"] == 0 and used["prp"] > 0


def test_e2e_pieces_land_at_their_lbas(mdts_ctrl, host_subsystem):
    dev = BlockDevice(mdts_ctrl.namespaces[1])
    # Each block carries its own LBA: a piece written at the wrong place shows.
    nblocks = 5 * 32 + 7
    data = b"".join(i.to_bytes(4, "little") * (BS // 4) for i in range(1000, 1000 + nblocks))
    dev.write_blocks(1000, data)
    stored = media(host_subsystem, 1, 1000, nblocks)
    for i in range(nblocks):
        assert stored[i * BS:i * BS + 4] == (1000 + i).to_bytes(4, "little")
    assert dev.read(1000 * BS, len(data)) == data
    st = dev.stats()
    assert (st.write_ios, st.read_ios) == (6, 6)


def test_e2e_flush_discard_write_zeroes_verify(ctrl, host_subsystem):
    dev = BlockDevice(ctrl.namespaces[1])
    data = pattern(64 * BS, seed=4)
    dev.write(0, data)
    dev.flush()
    dev.discard(8 * BS, 8 * BS)
    dev.write_zeroes(24 * BS, 8 * BS)
    dev.write_zeroes_blocks(40, 4, deallocate=True)
    dev.verify(0, 64 * BS)
    expect = bytearray(data)
    for lba, n in ((8, 8), (24, 8), (40, 4)):
        expect[lba * BS:(lba + n) * BS] = bytes(n * BS)
    assert dev.read(0, 64 * BS) == expect
    assert media(host_subsystem, 1, 0, 64) == expect
    st = dev.stats()
    assert (st.flush_ios, st.discard_ios, st.discard_sectors) == (1, 1, 8)
    assert (st.write_ios, st.write_sectors) == (1 + 2, 64 + 12)
    assert st.in_flight == 0


def test_e2e_plug_merges(ctrl, host_subsystem):
    dev = BlockDevice(ctrl.namespaces[1])
    data = pattern(16 * BS, seed=6)
    queues = ctrl.io_queues
    doorbells = sum(q.doorbells for q in queues)
    with dev.plug():
        ios = [dev.submit.write_blocks(200 + i, data[i * BS:(i + 1) * BS]) for i in range(16)]
        ios += [dev.submit.discard_blocks(lba, 1) for lba in (500, 600, 700)]
    for io in ios:
        io.result()
    assert media(host_subsystem, 1, 200, 16) == data
    st = dev.stats()
    assert (st.write_ios, st.write_merges, st.discard_ios, st.discard_merges) == (1, 15, 1, 2)
    assert sum(q.doorbells for q in queues) - doorbells == 1  # one submission batch


def test_e2e_asyncio(ctrl):
    dev = BlockDevice(ctrl.namespaces[1])
    blocks = [pattern(BS * (1 + i % 5), seed=i) for i in range(40)]

    async def main():
        lbas = [i * 8 for i in range(40)]
        await asyncio.gather(*(dev.aio.write_blocks(lba, b) for lba, b in zip(lbas, blocks)))
        back = await asyncio.gather(*(dev.aio.read_blocks(lba, len(b) // BS) for lba, b in zip(lbas, blocks)))
        assert back == blocks
        await dev.aio.flush()
        with dev.plug():
            ios = [dev.submit.write_blocks(1000 + i, bytes([i]) * BS) for i in range(8)]
        for io in ios:
            assert await io == BS
        assert await dev.aio.read_blocks(1000, 8) == b"".join(bytes([i]) * BS for i in range(8))

    asyncio.run(main())


def test_e2e_errors_fail_the_whole_request(mdts_ctrl, host_subsystem):
    from nvmestack.spec.opcodes import NvmOpcode as Opc

    dev = BlockDevice(mdts_ctrl.namespaces[1])
    dev.write_blocks(0, pattern(100 * BS))
    host_subsystem.faults.media_error(range(70, 71), nsid=1)
    with pytest.raises(NvmeStatusError, match="Unrecovered Read Error") as err:
        dev.read_blocks(0, 100)  # 4 commands; the third fails
    assert err.value.status.sc == MediaStatus.UNRECOVERED_READ_ERROR
    assert dev.read_blocks(0, 64) == pattern(100 * BS)[:64 * BS]  # the other pieces are fine
    host_subsystem.faults.fail(MediaStatus.WRITE_FAULT, opcode=Opc.WRITE, nsid=1, count=1)

    async def main():
        with pytest.raises(NvmeStatusError, match="Write Fault"):
            await dev.aio.write_blocks(0, bytes(BS))

    asyncio.run(main())
    assert dev.stats().in_flight == 0


def test_e2e_protection_information(make_function, make_controller, pci_mode, host_subsystem):
    # Namespace 2: 512 + 8 bytes of PI (type 1): the block layer lets the
    # controller insert and strip the PI (PRACT), as Linux without an
    # integrity buffer.  Namespace 3: 16 bytes of metadata without PI:
    # reads and writes cannot go through the block layer.
    host_subsystem.add_namespace(Namespace(2, 1024, lba_format=1, pi_type=1))
    host_subsystem.add_namespace(Namespace(3, 1024, lba_format=2))
    ctrl = make_controller(make_function(mode=pci_mode))
    dev = BlockDevice(ctrl.namespaces[2])
    data = pattern(40 * BS, seed=8)
    dev.write_blocks(3, data)
    assert dev.read_blocks(3, 40) == data
    # The controller generated the PI: reference tag = LBA (type 1).  (The
    # device keeps metadata with every bit inverted: see target/datapath.py.)
    pi = bytes(b ^ 0xFF for b in host_subsystem.namespaces[2].meta.read_bytes(5 * 8, 8))
    assert int.from_bytes(pi[4:8], "big") == 5 and pi[:2] != b"\0\0"
    dev.write_zeroes_blocks(3, 2)
    dev.verify_blocks(0, 100)
    assert dev.read_blocks(3, 2) == bytes(2 * BS)
    raw = BlockDevice(ctrl.namespaces[3])
    with pytest.raises(_io.UnsupportedOperation, match="metadata"):
        raw.write_blocks(0, bytes(BS))
    with pytest.raises(_io.UnsupportedOperation, match="metadata"):
        raw.read_blocks(0, 1)
    raw.write_zeroes_blocks(0, 4)
    raw.discard_blocks(0, 4)


@pytest.mark.parametrize("interrupts", ["msix", "none"])
def test_e2e_polled_queues(make_controller, interrupts):
    # Completions found only by polling: the synchronous wait and the
    # asyncio await both drive it through the HostRequests.
    ctrl = make_controller(io_queues=1, poll_queues=1, transport_options={"interrupts": interrupts})
    dev = BlockDevice(ctrl.namespaces[1], polled=True)
    data = pattern(50 * BS, seed=12)
    io = dev.submit.write_blocks(7, data)
    assert io.result(10) == len(data)
    polled = {q.qid for q in ctrl.io_queues if q.polled}
    assert polled and all(h.qid in polled for h in io.requests)
    assert dev.read_blocks(7, 50) == data

    async def main():
        assert await dev.aio.read_blocks(7, 50) == data
        await dev.aio.write_blocks(7, bytes(BS))

    asyncio.run(main())
    assert dev.read_blocks(7, 1) == bytes(BS)


def test_e2e_concurrent_workers(make_controller, host_subsystem):
    ctrl = make_controller(io_queues=4)
    dev = BlockDevice(ctrl.namespaces[1])
    region = 256
    errors = []

    def worker(w):
        rng = random.Random(100 + w)
        base = w * region
        shadow = bytearray(region * BS)
        try:
            for _ in range(40):
                lba = rng.randrange(0, region - 16)
                n = rng.randrange(1, 17)
                if rng.random() < 0.6:
                    data = rng.randbytes(n * BS)
                    dev.write_blocks(base + lba, data)
                    shadow[lba * BS:(lba + n) * BS] = data
                else:
                    assert dev.read_blocks(base + lba, n) == shadow[lba * BS:(lba + n) * BS]
            assert dev.read_blocks(base, region) == shadow
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    st = dev.stats()
    assert st.in_flight == 0
    assert st.read_ios >= 6 and st.write_ios >= 6
