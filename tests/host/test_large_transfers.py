"""Transfers above 512 KiB through the PCIe function (issue 12, item 13):
the default MDTS is 4 MiB, and one command of that size moves through
chained PRP lists and through SGLs (blktests nvme/029's 1025-block write,
524,800 bytes, among them)."""

from __future__ import annotations

import os

import pytest

from nvmestack.spec.nvm import Read, Write
from nvmestack.target.controller import DEFAULT_MDTS

BS = 512


@pytest.mark.parametrize("nblocks, offset", [(1025, 0), (1025, 512), (8192, 0), (8191, 2048)])
@pytest.mark.parametrize("sgl_threshold", [0, 1])  # 0: PRPs only; 1: SGLs for every transfer
def test_one_command_moves_more_than_512_kib(make_controller, nblocks, offset, sgl_threshold):
    ctrl = make_controller(transport_options={"sgl_threshold": sgl_threshold})
    assert DEFAULT_MDTS == 10 and ctrl.identify.mdts == DEFAULT_MDTS
    assert ctrl.max_transfer == 4 << 20
    length = nblocks * BS
    data = os.urandom(length)
    buf = ctrl.alloc_buffer(length + offset)
    view = buf.view[offset: offset + length]  # not page aligned when offset: PRP1 has an offset
    view[:] = data
    stats = dict(ctrl.transport.stats)
    ctrl.execute(Write(nsid=1, slba=3, nlb=nblocks - 1), view, qid=1)
    view[:] = bytes(length)
    ctrl.execute(Read(nsid=1, slba=3, nlb=nblocks - 1), view, qid=1)
    assert bytes(view) == data
    after = ctrl.transport.stats
    if sgl_threshold:
        assert after["sgl"] - stats["sgl"] == 2
    else:
        assert after["prp_list"] - stats["prp_list"] == 2  # one command each, its pages in PRP lists
    assert after["bounce"] == stats["bounce"]
    ctrl.free_buffer(buf)


def test_a_transfer_above_mdts_is_refused(make_controller):
    ctrl = make_controller()
    nblocks = (4 << 20) // BS + 1
    buf = ctrl.alloc_buffer(nblocks * BS)
    from nvmestack.host import NvmeStatusError

    with pytest.raises(NvmeStatusError, match="Invalid Field"):
        ctrl.execute(Read(nsid=1, slba=0, nlb=nblocks - 1), buf.view, qid=1)
    ctrl.free_buffer(buf)
