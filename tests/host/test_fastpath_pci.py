"""The PCIe function's I/O fast path (target/fastpath.py through
target/pci/queues.py) seen from our host: which commands it takes, and
that the ones it declines answer exactly as the general path (every test
runs with both, see conftest.io_path)."""

from __future__ import annotations

from nvmestack.host.block import BlockDevice
from nvmestack.spec.opcodes import NvmOpcode
from nvmestack.spec.status import MediaStatus

from .conftest import pattern


def fast_counts(function) -> tuple[int, int]:
    """(reads, writes) the fast paths of the function's I/O queues ran."""
    reads = writes = 0
    for qid, sq in function.queues.sqs.items():
        if qid and sq.fast is not None:
            reads += sq.fast.counters.host_read_commands
            writes += sq.fast.counters.host_write_commands
    return reads, writes


def test_reads_and_writes_through_prps(make_function, make_controller, io_path, host_subsystem):
    fn = make_function(mode="thread")
    ctrl = make_controller(fn)
    dev = BlockDevice(ctrl.namespaces[1])
    data = pattern(3 * 4096 + 512, 7)  # PRP1 + PRP2, and a PRP list
    before = host_subsystem.health.host_read_commands
    assert dev.write(4096, data) == len(data)
    assert bytes(dev.read(4096, len(data))) == data
    reads, writes = fast_counts(fn)
    assert (reads > 0 and writes > 0) if io_path == "fast" else (reads, writes) == (0, 0)
    assert host_subsystem.health.host_read_commands > before  # counted on either path
    dev.flush()


def test_a_fault_rule_takes_the_commands_to_the_general_path(make_function, make_controller, io_path,
                                                            host_subsystem):
    fn = make_function(mode="thread")
    ctrl = make_controller(fn)
    dev = BlockDevice(ctrl.namespaces[1])
    data = pattern(4096, 3)
    dev.write(0, data)
    rule = host_subsystem.faults.fail(MediaStatus.UNRECOVERED_READ_ERROR, opcode=NvmOpcode.READ, count=1)
    reads = fast_counts(fn)[0]
    io = dev.submit.read(0, 4096)
    assert io.exception(10) is not None  # the fault answered, on the general path
    assert rule.hits == 1
    host_subsystem.faults.remove(rule)
    assert bytes(dev.read(0, 4096)) == data
    assert fast_counts(fn)[0] == reads + (1 if io_path == "fast" else 0)


def test_the_block_layer_fast_path_is_one_request_per_command(make_function, make_controller, io_path):
    """On the fast path a read or write of one buffer is a single _IoRequest
    (the HostRequest is the block request); on the general path a plain
    HostRequest behind a _Request.  The data and the statistics are the
    same; a scatter list and a merging plug take the general path on both."""
    from nvmestack.host.block import _IoRequest

    fn = make_function(mode="thread")
    ctrl = make_controller(fn)
    dev = BlockDevice(ctrl.namespaces[1])
    data = pattern(8192, 5)
    io = dev.submit.write(0, data)
    io.result(10)
    (req,) = io.requests
    assert isinstance(req, _IoRequest) == (io_path == "fast")
    buf = bytearray(8192)
    io = dev.submit.readinto(0, buf)
    assert io.result(10) == 8192 and buf == data
    assert isinstance(io.requests[0], _IoRequest) == (io_path == "fast")
    io = dev.submit.readv(0, [bytearray(4096), bytearray(4096)])
    assert io.result(10) == 8192
    assert not any(isinstance(r, _IoRequest) for r in io.requests)
    with dev.plug():  # a merging plug: the two pieces become one command
        a = dev.submit.read(0, 4096)
        b = dev.submit.read(4096, 4096)
    assert bytes(a.result(10)) + bytes(b.result(10)) == data
    assert not isinstance(a.requests[0], _IoRequest) and a.requests == b.requests
    stats = dev.stats()
    assert stats.ios[0] == 3 and stats.ios[1] == 1 and stats.in_flight == 0
