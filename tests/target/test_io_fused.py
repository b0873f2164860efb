"""Fused Compare and Write: the write happens only when the compare
matched, atomically with respect to every other command on the namespace."""

import sys
import threading

import pytest

from nvmestack.spec.nvm import Compare, Read, Write
from nvmestack.spec.pi import Prinfo
from nvmestack.spec.sqe import Fuse
from nvmestack.spec.status import GenericStatus, MediaStatus
from nvmestack.target import Namespace
from nvmestack.target.backend import MemoryBackend

from .test_io import assert_ok, assert_status, do_read, do_write, pattern

BS = 512


def compare_and_write(ctrl, slba, nblocks, expected, new, *, sqid=1, cid=0x100, nsid=1,
                      write_slba=None, write_nsid=None, meta=None, **write_fields):
    first = ctrl.submit(Compare(nsid=nsid, slba=slba, nblocks=nblocks, fuse=Fuse.FIRST, cid=cid),
                        sqid=sqid, data=bytearray(expected))
    assert not first.done  # held until its second half arrives
    second = ctrl.submit(Write(nsid=nsid if write_nsid is None else write_nsid,
                               slba=slba if write_slba is None else write_slba, nblocks=nblocks,
                               fuse=Fuse.SECOND, cid=cid + 1, **write_fields),
                         sqid=sqid, data=bytearray(new), meta=meta)
    assert first.done and second.done
    return first, second


def test_compare_and_write_success(ctrl, ns):
    old, new = pattern(4, 1), pattern(4, 2)
    assert_ok(do_write(ctrl, 16, old))
    first, second = compare_and_write(ctrl, 16, 4, old, new)
    assert_ok(first)
    assert_ok(second)
    assert do_read(ctrl, 16, 4)[1] == new


def test_compare_failure_aborts_the_write(ctrl, ns):
    old = pattern(4, 1)
    assert_ok(do_write(ctrl, 16, old))
    errors = ctrl.error_count
    first, second = compare_and_write(ctrl, 16, 4, pattern(4, 3), pattern(4, 2))
    assert_status(first, MediaStatus.COMPARE_FAILURE)
    assert_status(second, GenericStatus.ABORTED_FAILED_FUSED)
    assert do_read(ctrl, 16, 4)[1] == old
    assert ctrl.error_count == errors + 2


def test_fused_halves_must_address_the_same_blocks(subsystem, ctrl, ns):
    old = pattern(4, 1)
    assert_ok(do_write(ctrl, 16, old))
    first, second = compare_and_write(ctrl, 16, 4, old, pattern(4, 2), write_slba=17)
    assert_status(first, GenericStatus.INVALID_FIELD)
    assert_status(second, GenericStatus.ABORTED_FAILED_FUSED)
    subsystem.add_namespace(Namespace(2, 64))
    first, second = compare_and_write(ctrl, 16, 4, old, pattern(4, 2), write_nsid=2)
    assert_status(first, GenericStatus.INVALID_FIELD)
    assert_status(second, GenericStatus.ABORTED_FAILED_FUSED)
    assert do_read(ctrl, 16, 4)[1] == old


def test_failed_write_aborts_the_compare(subsystem, ctrl):
    subsystem.add_namespace(Namespace(2, 64, lba_format=1, pi_type=1))  # 512 + 8, separate, type 1
    old = pattern(2, 1)
    assert_ok(ctrl.submit(Write(nsid=2, slba=4, nblocks=2, prinfo=Prinfo.PRACT, reftag=4), sqid=1,
                          data=bytearray(old)))
    bad_pi = bytearray(16)  # guard 0 does not match the data
    first, second = compare_and_write(ctrl, 4, 2, old, pattern(2, 2), nsid=2, meta=bad_pi,
                                      prinfo=Prinfo.PRCHK_GUARD)
    assert_status(second, MediaStatus.GUARD_CHECK_ERROR)
    assert_status(first, GenericStatus.ABORTED_FAILED_FUSED)
    assert do_read(ctrl, 4, 2, nsid=2)[1] == old


def test_compare_without_its_write_is_aborted(ctrl, ns):
    first = ctrl.submit(Compare(nsid=1, slba=0, nblocks=1, fuse=Fuse.FIRST, cid=1), sqid=1)
    assert not first.done
    other = ctrl.submit(Read(nsid=1, slba=0, nblocks=1, cid=2), sqid=1)
    assert_status(first, GenericStatus.ABORTED_MISSING_FUSED, dnr=None)
    assert_ok(other)


# ---------------------------------------------------------------------------
# Concurrency

NBLOCKS = 8


def encode(value):
    return value.to_bytes(4, "little") * (NBLOCKS * BS // 4)


def decode(data):
    """The value a whole-range pattern carries; None if the blocks disagree."""
    value = data[:4]
    return int.from_bytes(value, "little") if data == value * (len(data) // 4) else None


@pytest.fixture
def fast_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # make the threads interleave as much as they can
    yield
    sys.setswitchinterval(old)


def read_range(ctrl, sqid, cid, nsid=1):
    req = ctrl.submit(Read(nsid=nsid, slba=0, nblocks=NBLOCKS, cid=cid), sqid=sqid)
    assert_ok(req)
    return bytes(req.data[0])


def run_threads(targets):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


def test_compare_and_write_is_a_compare_and_swap(ctrl, ns, fast_switching):
    """Threads increment a counter with compare-and-write: no increment is
    lost, so a write only happened when its compare matched, atomically."""
    assert_ok(do_write(ctrl, 0, encode(0)))
    threads, increments = 4, 25
    successes = [0] * threads

    def worker(k):
        def run():
            cid = 0
            while successes[k] < increments:
                cid = (cid + 3) % 0xFFF0
                current = read_range(ctrl, k + 1, cid + 2)
                value = decode(current)
                assert value is not None, "a read saw blocks of two different writes"
                first, second = compare_and_write(ctrl, 0, NBLOCKS, current, encode(value + 1),
                                                  sqid=k + 1, cid=cid)
                if first.status.ok:
                    assert_ok(second)
                    successes[k] += 1
                else:
                    assert_status(first, MediaStatus.COMPARE_FAILURE)
                    assert_status(second, GenericStatus.ABORTED_FAILED_FUSED)
        return run

    run_threads([worker(k) for k in range(threads)])
    assert decode(do_read(ctrl, 0, NBLOCKS)[1]) == threads * increments


class RecordingBackend(MemoryBackend):
    """Logs the value of every whole-range write, in the order the writes
    reach the storage."""

    def __init__(self, size):
        super().__init__(size)
        self.log = []

    def write(self, offset, bufs):
        super().write(offset, bufs)
        first = bytes(bufs[0][:4])
        self.log.append(int.from_bytes(first, "little"))


def test_fused_writes_never_interleave_with_other_writers(subsystem, ctrl, fast_switching):
    backends = {}

    def factory(role, size):
        backends[role] = RecordingBackend(size)
        return backends[role]

    subsystem.add_namespace(Namespace(2, 64, backends=factory))
    assert_ok(do_write(ctrl, 0, encode(1), nsid=2))
    fused_ops = []  # (compared value, written value, succeeded)
    lock = threading.Lock()
    rounds = 40

    def fused(k):
        def run():
            for i in range(rounds):
                current = read_range(ctrl, k + 1, 3 * i + 2, nsid=2)
                value = decode(current)
                assert value is not None
                new = (k + 1) << 24 | i + 1
                first, second = compare_and_write(ctrl, 0, NBLOCKS, current, encode(new), sqid=k + 1,
                                                  cid=3 * i, nsid=2)
                with lock:
                    fused_ops.append((value, new, first.status.ok))
                if first.status.ok:
                    assert_ok(second)
                else:
                    assert_status(second, GenericStatus.ABORTED_FAILED_FUSED)
        return run

    def plain(k):
        def run():
            for i in range(rounds):
                req = ctrl.submit(Write(nsid=2, slba=0, nblocks=NBLOCKS, cid=i), sqid=10 + k,
                                  data=bytearray(encode((0x40 + k) << 24 | i + 1)))
                assert_ok(req)
        return run

    def reader():
        for i in range(rounds):
            req = ctrl.submit(Read(nsid=2, slba=0, nblocks=NBLOCKS, cid=i), sqid=20)
            assert_ok(req)
            assert decode(bytes(req.data[0])) is not None, "a read saw a torn range"

    run_threads([fused(0), fused(1), fused(2), plain(0), plain(1), reader])

    log = backends["data"].log
    assert len(log) == len(set(log))  # every write carried its own value
    position = {value: i for i, value in enumerate(log)}
    succeeded = [op for op in fused_ops if op[2]]
    assert succeeded, "no compare-and-write succeeded: the test proved nothing"
    for compared, written, ok in fused_ops:
        if ok:
            # Nothing was written between the compare and the write.
            assert log[position[written] - 1] == compared
        else:
            assert written not in position
    final = decode(do_read(ctrl, 0, NBLOCKS, nsid=2)[1])
    assert final == log[-1]
