"""tcp:// device arguments: the subsystem, the namespace and the connection
options nvme connect takes, in the query."""

from __future__ import annotations

import pytest

from nvmestack.cli.devices import parse_tcp_url
from nvmestack.cli.common import CliError

NQN = "nqn.2026-11.io.nvmestack:default"


def test_plain_url():
    entry, nsid = parse_tcp_url(f"tcp://127.0.0.1:4430/{NQN}")
    assert entry == {"transport": "tcp", "traddr": "127.0.0.1", "trsvcid": "4430", "subnqn": NQN}
    assert nsid is None


def test_options_in_the_query():
    entry, nsid = parse_tcp_url(f"tcp://127.0.0.1/{NQN}?nsid=2&disable_sqflow&hdr_digest=1&data_digest=0"
                                f"&queue_size=64")
    assert nsid == 2
    assert entry["trsvcid"] == "4420"
    assert entry["disable_sqflow"] is True and entry["hdr_digest"] is True and entry["data_digest"] is False
    assert entry["queue_size"] == 64


@pytest.mark.parametrize("query,message", [
    ("bogus=1", "unknown option 'bogus'"),
    ("disable_sqflow=maybe", "is not a switch"),
    ("queue_size=many", "is not a number"),
    ("nsid=x", "invalid nsid"),
])
def test_bad_options_are_one_clear_error(query, message):
    with pytest.raises(CliError, match=message):
        parse_tcp_url(f"tcp://127.0.0.1/{NQN}?{query}")
