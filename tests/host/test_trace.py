"""The host tracer (nvmestack/host/trace.py): Linux's nvme_setup_cmd /
nvme_complete_rq lines, decoded fields, status, latency, switching,
listeners, ring, sink and latency histograms.  Driven by a minimal
request-like object carrying exactly the attributes the tracer documents."""

from __future__ import annotations

import io
import threading

import pytest

from nvmestack.host.trace import (
    COMPLETE,
    DECODED_FIELDS,
    SETUP,
    LatencyHistogram,
    Tracer,
    _fallback_fields,
    command_args,
    decode_fields,
    linux_opcode_name,
)
from nvmestack.spec import admin, fabrics, nvm
from nvmestack.spec.sqe import _REGISTRY as COMMAND_REGISTRY
from nvmestack.spec.sqe import Command
from nvmestack.spec.status import (
    SUCCESS,
    CommandSpecificStatus,
    GenericStatus,
    PathStatus,
)


class Req:
    """The request attributes the tracer reads."""

    def __init__(self, cmd, qid=1, cid=None, *, meta=None, status=None, result=0, submitted_at=None, **extra):
        self.cmd = cmd
        self.qid = qid
        self.cid = cid if cid is not None else cmd.cid
        self.meta = meta
        self.status = status
        self.result = result
        self.submitted_at = submitted_at
        for name, value in extra.items():
            setattr(self, name, value)


class SlottedReq:
    """A request type with only the mandatory attributes (no __dict__)."""

    __slots__ = ("cmd", "qid", "cid", "meta", "status", "result", "submitted_at")

    def __init__(self, cmd, qid, status=None, submitted_at=None):
        self.cmd, self.qid, self.cid, self.meta = cmd, qid, None, None
        self.status, self.result, self.submitted_at = status, 0, submitted_at


class FakeClock:
    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now


def run(tracer, req, *, latency=None, clock=None):
    """setup + complete, the completion ``latency`` seconds after submission."""
    if clock is not None and latency is not None:
        req.submitted_at = clock.now
    tracer.setup(req)
    if clock is not None and latency is not None:
        clock.now += latency
    tracer.complete(req)


# ---------------------------------------------------------------------------
# The lines, as Linux prints them


def test_read_lines_are_linux_format():
    tracer = Tracer("nvme0")
    run(tracer, Req(nvm.Read(nsid=1, slba=0, nlb=7), qid=1, cid=12, status=SUCCESS))
    setup, complete = tracer.events()
    assert setup.name == SETUP and complete.name == COMPLETE
    assert setup.text == ("nvme0: qid=1, cmdid=12, nsid=1, flags=0x0, meta=0x0, "
                          "cmd=(nvme_cmd_read slba=0, len=7, ctrl=0x0, dsmgmt=0, reftag=0)")
    assert complete.text == "nvme0: qid=1, cmdid=12, res=0x0, retries=0, flags=0x0, status=0x0"


def test_write_line_carries_control_dsm_and_reftag_words():
    cmd = nvm.Write(nsid=3, slba=0x12345678_9A, nlb=255, fua=1, prinfo=0xF, dsm=0x21, dspec=2, reftag=77)
    tracer = Tracer("nvme4")
    run(tracer, Req(cmd, qid=2, cid=0x1F, meta=[memoryview(bytearray(8))]))
    text = tracer.events(SETUP)[0].text
    # CDW12 31:16: FUA is bit 14 (0x4000), PRINFO bits 13:10 (0x3c00); CDW13 = DSPEC << 16 | DSM.
    assert text == (f"nvme4: qid=2, cmdid=31, nsid=3, flags=0x0, meta=0x1, cmd=(nvme_cmd_write "
                    f"slba={0x12345678_9A}, len=255, ctrl=0x7c00, dsmgmt={2 << 16 | 0x21}, reftag=77)")


def test_flags_byte_is_fuse_and_psdt():
    cmd = nvm.Compare(nsid=1, fuse=1, psdt=1)
    tracer = Tracer()
    tracer.setup(Req(cmd, qid=1, cid=5))
    assert tracer.events()[0].flags == 0x41
    assert ", flags=0x41, " in tracer.events()[0].text


def test_disk_name_prefix_like_linux():
    tracer = Tracer()
    run(tracer, Req(nvm.Flush(nsid=1), qid=3, cid=1, status=SUCCESS, disk="nvme0n1"))
    setup, complete = tracer.lines()
    assert setup.startswith("nvme0: disk=nvme0n1, qid=3, cmdid=1, nsid=1, ")
    assert complete.startswith("nvme0: disk=nvme0n1, qid=3, cmdid=1, res=")


def test_controller_name_from_request_or_tracer():
    tracer = Tracer("nvme7")
    tracer.setup(Req(nvm.Flush(nsid=1), cid=1))
    tracer.setup(Req(nvm.Flush(nsid=1), cid=2, ctrl_name="nvme9"))
    a, b = tracer.lines()
    assert a.startswith("nvme7: ") and b.startswith("nvme9: ")


def test_cid_falls_back_to_the_command():
    tracer = Tracer()
    tracer.setup(SlottedReq(nvm.Read(nsid=1, cid=0x321), qid=1))
    assert tracer.events()[0].cid == 0x321
    assert "cmdid=801," in tracer.events()[0].text


def test_admin_versus_io_is_decided_by_qid():
    # Opcode 01h is Create I/O Submission Queue on the admin queue and Write on an I/O queue.
    raw = bytearray(64)
    raw[0] = 0x01
    tracer = Tracer()
    tracer.setup(Req(Command.from_bytes(raw), qid=0, cid=1))
    tracer.setup(Req(Command.from_bytes(raw), qid=1, cid=1))
    admin_ev, io_ev = tracer.events()
    assert admin_ev.opcode_name == "nvme_admin_create_sq" and admin_ev.command_name == "Create I/O Submission Queue"
    assert io_ev.opcode_name == "nvme_cmd_write" and io_ev.command_name == "Write"
    assert admin_ev.command_class is admin.CreateIoSq and io_ev.command_class is nvm.Write
    assert "cmd=(nvme_admin_create_sq sqid=0, qsize=0, sq_flags=0x0, cqid=0)" in admin_ev.text


@pytest.mark.parametrize("cmd, qid, args", [
    (admin.Identify(cns=1, cntid=5), 0, "nvme_admin_identify cns=1, ctrlid=5"),
    (admin.CreateIoCq(qid=3, qsize=127, pc=1, ien=1, iv=2), 0,
     "nvme_admin_create_cq cqid=3, qsize=127, cq_flags=0x3, irq_vector=2"),
    (admin.CreateIoSq(qid=3, qsize=63, pc=1, qprio=2, cqid=3), 0,
     "nvme_admin_create_sq sqid=3, qsize=63, sq_flags=0x5, cqid=3"),
    (admin.DeleteIoSq(qid=4), 0, "nvme_admin_delete_sq sqid=4"),
    (admin.DeleteIoCq(qid=4), 0, "nvme_admin_delete_cq cqid=4"),
    (admin.GetFeatures(fid=7, sel=3, cdw11=0x10), 0, "nvme_admin_get_features fid=0x7, sel=0x3, cdw11=0x10"),
    (admin.SetFeatures(fid=7, sv=1, cdw11=0x30003), 0, "nvme_admin_set_features fid=0x7, sv=0x1, cdw11=0x30003"),
    (admin.FormatNvm(lbaf=0x12, mset=1, pi=3, pil=1, ses=2), 0,
     "nvme_admin_format_nvm lbaf=18, mset=1, pi=3, pil=1, ses=2"),
    (nvm.WriteZeroes(nsid=1, slba=9, nlb=3, deac=1), 1,
     "nvme_cmd_write_zeroes slba=9, len=3, ctrl=0x200, dsmgmt=0, reftag=0"),
    (nvm.DatasetManagement(nsid=1, nr=3, ad=1), 1, "nvme_cmd_dsm nr=3, attributes=4"),
    (fabrics.Connect(qid=1, sqsize=127, kato=0), 1,
     "nvme_fabrics_type_connect recfmt=0, qid=1, sqsize=127, cattr=0, kato=0"),
    (fabrics.Connect(qid=0, sqsize=31, kato=120000, cattr=4), 0,
     "nvme_fabrics_type_connect recfmt=0, qid=0, sqsize=31, cattr=4, kato=120000"),
    (fabrics.PropertyGet(attrib=1, ofst=0), 0, "nvme_fabrics_type_property_get attrib=1, ofst=0x0"),
    (fabrics.PropertySet(attrib=0, ofst=0x14, value=0x460001), 0,
     "nvme_fabrics_type_property_set attrib=0, ofst=0x14, value=0x460001"),
    (fabrics.AuthenticationSend(secp=0xE9, spsp0=1, spsp1=0xA, tl=96), 0,
     "nvme_fabrics_type_auth_send spsp0=01, spsp1=0a, secp=e9, tl=96"),
    (fabrics.AuthenticationReceive(secp=0xE9, al=512), 0,
     "nvme_fabrics_type_auth_receive spsp0=00, spsp1=00, secp=e9, al=512"),
])
def test_command_arguments_as_trace_c(cmd, qid, args):
    tracer = Tracer()
    tracer.setup(Req(cmd, qid=qid, cid=9))
    assert tracer.events()[0].text.endswith(f"cmd=({args})")


def test_commands_trace_c_does_not_decode_print_raw_cdw10_bytes():
    cmd = admin.GetLogPage(lid=2, numd=127, offset=4096, nsid=0xFFFFFFFF)
    tracer = Tracer()
    tracer.setup(Req(cmd, qid=0, cid=3))
    text = tracer.events()[0].text
    # CDW10 = NUMDL << 16 | LID; LPOL (CDW12, byte 48) = 4096.
    raw = "02 00 7f 00" + " 00" * 4 + " 00 10 00 00" + " 00" * 12
    assert text == (f"nvme0: qid=0, cmdid=3, nsid=4294967295, flags=0x0, meta=0x0, "
                    f"cmd=(nvme_admin_get_log_page cdw10={raw})")


def test_decoded_style_prints_fields_where_linux_prints_bytes():
    cmd = admin.GetLogPage(lid=2, numd=127, offset=4096)
    assert command_args(cmd, 0, style="decoded").startswith("nsid=0, lid=2, lsp=0, rae=0, numd=127, lsi=0, offset=4096")
    # Commands trace.c decodes keep its text in both styles.
    assert command_args(admin.Identify(cns=1), 0, style="decoded") == "cns=1, ctrlid=0"
    tracer = Tracer(args="decoded")
    tracer.setup(Req(admin.Abort(sqid=1, abort_cid=0x44), qid=0, cid=2))
    assert tracer.events()[0].text.endswith("cmd=(nvme_admin_abort_cmd sqid=1, abort_cid=68)")
    with pytest.raises(ValueError):
        Tracer(args="fancy")


def test_fabrics_command_on_an_io_queue_and_unknown_fctype():
    tracer = Tracer()
    tracer.setup(Req(fabrics.Disconnect(), qid=2, cid=1))
    ev = tracer.events()[0]
    assert ev.fabrics and ev.fctype == 8
    assert ev.opcode_name == "0x8"  # not in Linux's show_fabrics_type_name
    assert ev.command_name == "Disconnect"
    assert ev.nsid is None
    assert "cmd=(0x8 specific=" + " ".join(["00"] * 24) + ")" in ev.text


def test_unknown_opcodes_print_in_hex():
    raw = bytearray(64)
    raw[0] = 0xC1
    raw[40] = 0xAB
    tracer = Tracer()
    tracer.setup(Req(Command.from_bytes(raw), qid=1, cid=1))
    ev = tracer.events()[0]
    assert ev.opcode_name == "0xc1"
    assert ev.command_name == "Unknown I/O opcode (0xc1)"
    assert ev.text.endswith("cmd=(0xc1 cdw10=ab" + " 00" * 23 + ")")
    assert ev.fields == {"nsid": 0, "cdw10": 0xAB, "cdw11": 0, "cdw12": 0, "cdw13": 0, "cdw14": 0, "cdw15": 0}


def test_linux_opcode_names():
    assert linux_opcode_name(0, 0x06) == "nvme_admin_identify"
    assert linux_opcode_name(1, 0x06) == "0x6"
    assert linux_opcode_name(1, 0x0C) == "nvme_cmd_verify"
    assert linux_opcode_name(0, 0x84) == "nvme_admin_sanitize_nvm"
    assert linux_opcode_name(0, 0x7F, 0x01) == "nvme_fabrics_type_connect"
    assert linux_opcode_name(5, 0x7F, 0x04) == "nvme_fabrics_type_property_get"


# ---------------------------------------------------------------------------
# Structured events


def test_read_fields_through_the_typed_view():
    cmd = nvm.Read(nsid=1, slba=4096, nblocks=16, prinfo=0x5, fua=1, reftag=4096)
    tracer = Tracer()
    tracer.setup(Req(cmd, qid=1, cid=3))
    f = tracer.events()[0].fields
    assert f["nsid"] == 1 and f["slba"] == 4096 and f["nlb"] == 15
    assert f["prinfo"] == 0x5 and f["fua"] is True and f["lr"] is False and f["reftag"] == 4096
    assert "control" not in f  # the container word is not repeated next to its bits


def test_identify_and_get_log_page_fields():
    ident = decode_fields(admin.Identify(cns=0x13, cntid=7, nsid=0), 0)
    assert ident["cns"] == 0x13 and ident["cntid"] == 7
    glp = decode_fields(admin.GetLogPage(lid=0x05, numd=(1 << 20) - 1, offset=8, rae=1), 0)
    assert glp["lid"] == 5 and glp["numd"] == (1 << 20) - 1 and glp["offset"] == 8 and glp["rae"] is True


def test_event_keeps_a_copy_of_the_command():
    cmd = nvm.Read(nsid=1, slba=10, nlb=0)
    tracer = Tracer()
    tracer.setup(Req(cmd, qid=1, cid=1))
    cmd.slba = 999  # the request's buffer is reused
    ev = tracer.events()[0]
    assert ev.fields["slba"] == 10 and "slba=10," in ev.text


def test_every_registered_view_has_its_decoded_names():
    for cls in set(COMMAND_REGISTRY.values()):
        assert cls in DECODED_FIELDS, f"{cls.__name__} has no DECODED_FIELDS entry"
    for cls, names in DECODED_FIELDS.items():
        for name in names:
            assert name in cls.FIELDS or isinstance(getattr(cls, name, None), property), (cls.__name__, name)


def test_fallback_for_a_view_without_an_entry():
    class Probe(nvm.ProtectedReadWriteBase):  # no OPCODE: not registered
        pass

    names = _fallback_fields(Probe)
    assert {"slba", "nlb", "fua", "lr", "stc", "pract", "reftag", "apptag", "appmask"} <= set(names)
    assert "control" not in names and "prinfo" not in names  # containers of named bits
    assert "opcode" not in names and "cdw10" not in names  # the common format is not repeated


def test_completion_status_result_and_latency():
    clock = FakeClock()
    tracer = Tracer(clock=clock)
    bad = GenericStatus.INVALID_FIELD.status(dnr=True)
    req = Req(admin.Identify(cns=1), qid=0, cid=4, status=bad, result=0x1234, dw1=0x1, retries=2, flags=0x2)
    run(tracer, req, latency=250e-6, clock=clock)
    ev = tracer.events(COMPLETE)[0]
    assert ev.status == bad and ev.status_value == 0x4002 and ev.ok is False
    assert ev.status_text.startswith("Invalid Field in Command") and ev.status_text.endswith("(0x4002)")
    assert ev.result == 0x1_0000_1234
    assert ev.latency == pytest.approx(250e-6)
    assert ev.text == "nvme0: qid=0, cmdid=4, res=0x100001234, retries=2, flags=0x2, status=0x4002"
    assert ev.opcode_name == "nvme_admin_identify" and ev.fields == {}
    d = ev.to_dict()
    assert d["status"] == 0x4002 and d["latency"] == pytest.approx(250e-6) and d["command"] == "Identify"


def test_command_specific_and_path_statuses():
    tracer = Tracer()
    tracer.complete(Req(admin.CreateIoSq(qid=9), qid=0, cid=1,
                        status=CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER.status(dnr=True)))
    tracer.complete(Req(nvm.Read(nsid=1), qid=1, cid=2, status=PathStatus.ABORTED_BY_HOST.status()))
    tracer.complete(Req(nvm.Read(nsid=1), qid=1, cid=3, status=None))
    a, b, c = tracer.events()
    assert a.text.endswith("status=0x4101") and a.status_text.startswith("Invalid Queue Identifier")
    assert b.text.endswith("status=0x371")
    assert c.text.endswith("status=none") and c.status_text is None and c.latency is None


def test_latency_from_nanosecond_timestamps_and_completed_at():
    import time

    tracer = Tracer()
    req = Req(nvm.Flush(nsid=1), qid=1, cid=1, status=SUCCESS, submitted_at=time.perf_counter_ns())
    tracer.complete(req)
    assert tracer.events()[0].latency >= 0
    req = Req(nvm.Flush(nsid=1), qid=1, cid=2, status=SUCCESS, submitted_at=10.0, completed_at=10.5)
    tracer.complete(req)
    ev = tracer.events()[1]
    assert ev.latency == pytest.approx(0.5) and ev.time == 10.5


def test_controller_name_passthrough_flag_error_and_zero_timestamps():
    class Ctrl:
        name = "nvme5"

    dead = RuntimeError("controller is dead")
    req = Req(admin.GetFeatures(fid=7), qid=0, cid=6, status=None, ctrl=Ctrl(), passthru=True, error=dead,
              submitted_at=0.0, completed_at=0.0)
    tracer = Tracer()
    tracer.setup(req)
    tracer.complete(req)
    setup, complete = tracer.events()
    assert setup.ctrl == complete.ctrl == "nvme5"
    assert complete.flags == 0x2  # NVME_REQ_USERCMD: a passthrough command
    assert complete.latency is None and complete.error is dead  # 0.0 means "not recorded"
    assert complete.text == "nvme5: qid=0, cmdid=6, res=0x0, retries=0, flags=0x2, status=none"
    assert "controller is dead" in complete.to_dict()["error"]


def test_with_the_drivers_host_request():
    from nvmestack.host.request import HostRequest

    req = HostRequest(nvm.Read(nsid=1, slba=64, nlb=7), data=bytearray(4096))
    req.qid = 3
    req.cmd.cid = 0x2A
    tracer = Tracer("nvme1")
    req.submitted_at = tracer.clock()
    tracer.setup(req)
    req.status, req.result = SUCCESS, 0
    req.completed_at = req.submitted_at + 40e-6
    tracer.complete(req)
    setup, complete = tracer.lines()
    assert setup == ("nvme1: qid=3, cmdid=42, nsid=1, flags=0x0, meta=0x0, "
                     "cmd=(nvme_cmd_read slba=64, len=7, ctrl=0x0, dsmgmt=0, reftag=0)")
    assert complete == "nvme1: qid=3, cmdid=42, res=0x0, retries=0, flags=0x0, status=0x0"
    assert tracer.events()[1].latency == pytest.approx(40e-6)
    assert tracer.histogram(qid=3).count == 1


# ---------------------------------------------------------------------------
# Switching, listeners, ring, sink


def test_disabled_records_nothing_and_can_be_switched_at_run_time():
    clock = FakeClock()
    tracer = Tracer(enabled=False, clock=clock)
    seen = []
    tracer.add_listener(seen.append)
    req = Req(nvm.Read(nsid=1), qid=1, cid=1, status=SUCCESS)
    run(tracer, req, latency=1e-3, clock=clock)
    assert seen == [] and tracer.events() == [] and tracer.histogram().count == 0
    # On between setup and completion: the completion still has its latency.
    req.submitted_at = clock.now
    tracer.setup(req)
    tracer.enabled = True
    clock.now += 2e-3
    tracer.complete(req)
    assert [e.name for e in seen] == [COMPLETE]
    assert seen[0].latency == pytest.approx(2e-3)
    tracer.enabled = False
    run(tracer, req, latency=1e-3, clock=clock)
    assert len(seen) == 1 and tracer.completions == 1 and tracer.setups == 0


def test_listeners_see_both_events_and_cannot_break_the_io_path(caplog):
    tracer = Tracer()
    seen = []

    @tracer.add_listener
    def broken(event):
        raise RuntimeError("listener bug")

    tracer.add_listener(seen.append)
    run(tracer, Req(nvm.Read(nsid=1), qid=1, cid=1, status=SUCCESS))
    run(tracer, Req(nvm.Read(nsid=1), qid=1, cid=2, status=SUCCESS))
    assert [(e.name, e.cid) for e in seen] == [(SETUP, 1), (COMPLETE, 1), (SETUP, 2), (COMPLETE, 2)]
    assert tracer.listener_errors == 4
    assert sum("listener" in r.getMessage() for r in caplog.records) == 1  # logged once, then counted
    tracer.remove_listener(broken)
    tracer.remove_listener(seen.append)
    run(tracer, Req(nvm.Read(nsid=1), qid=1, cid=3, status=SUCCESS))
    assert len(seen) == 4 and tracer.listener_errors == 4 and tracer.listeners == ()


def test_ring_is_bounded_and_keeps_the_newest():
    tracer = Tracer(ring_size=5)
    for cid in range(10):
        run(tracer, Req(nvm.Read(nsid=1), qid=1 + cid % 2, cid=cid, status=SUCCESS))
    events = tracer.events()
    assert len(events) == 5
    assert [(e.name, e.cid) for e in events] == [(COMPLETE, 7), (SETUP, 8), (COMPLETE, 8), (SETUP, 9), (COMPLETE, 9)]
    assert [e.cid for e in tracer.events(qid=2)] == [7, 9, 9]
    tracer.clear()
    assert tracer.events() == [] and tracer.completions == 10


def test_stream_sink_gets_one_line_per_event():
    stream = io.StringIO()
    tracer = Tracer(sink=stream)
    run(tracer, Req(nvm.Read(nsid=1, nlb=7), qid=1, cid=12, status=SUCCESS))
    tracer.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(": nvme_setup_cmd: nvme0: qid=1, cmdid=12, nsid=1, flags=0x0, meta=0x0, "
                             "cmd=(nvme_cmd_read slba=0, len=7, ctrl=0x0, dsmgmt=0, reftag=0)")
    assert lines[1].endswith(": nvme_complete_rq: nvme0: qid=1, cmdid=12, res=0x0, retries=0, flags=0x0, status=0x0")
    assert not stream.closed  # a caller's stream stays open
    assert tracer.enabled is False


def test_path_sink_appends_and_is_closed(tmp_path):
    path = tmp_path / "trace.txt"
    with Tracer(sink=path) as tracer:
        tracer.setup(Req(nvm.Flush(nsid=1), qid=1, cid=1))
        tracer.open_sink(str(path))  # replacing the sink closes the first file
        tracer.setup(Req(nvm.Flush(nsid=1), qid=1, cid=2))
    text = path.read_text().splitlines()
    assert [line.split("cmdid=")[1].split(",")[0] for line in text] == ["1", "2"]
    assert all("nvme_setup_cmd: nvme0: qid=1" in line for line in text)


def test_attach_sets_the_controller_hook_and_name():
    class Ctrl:
        name = "nvme3"
        tracer = None

    ctrl = Ctrl()
    tracer = Tracer().attach(ctrl)
    assert ctrl.tracer is tracer and tracer.name == "nvme3"


# ---------------------------------------------------------------------------
# Histograms


def test_histogram_buckets_are_log2_microseconds():
    h = LatencyHistogram()
    for seconds, bucket in ((0.4e-6, 0), (1e-6, 1), (1.9e-6, 1), (2e-6, 2), (3.9e-6, 2), (1000e-6, 10), (1023e-6, 10),
                            (1024e-6, 11), (-1.0, 0), (1e9, LatencyHistogram.NBUCKETS - 1)):
        assert LatencyHistogram.bucket_of(seconds) == bucket, seconds
    assert LatencyHistogram.bucket_bounds(0) == (0, 1)
    assert LatencyHistogram.bucket_bounds(11) == (1024, 2048)
    for us in (3, 5, 6, 7, 100):
        h.record(us * 1e-6)
    assert h.counts[2] == 1 and h.counts[3] == 3 and h.counts[7] == 1 and h.count == 5
    assert h.min == pytest.approx(3e-6) and h.max == pytest.approx(100e-6)
    assert h.mean == pytest.approx(121e-6 / 5)


def test_percentiles_land_in_the_right_bucket():
    h = LatencyHistogram()
    for _ in range(900):
        h.record(10e-6)  # bucket [8, 16)
    for _ in range(99):
        h.record(300e-6)  # bucket [256, 512)
    h.record(5000e-6)  # bucket [4096, 8192)
    p50, p99, p999 = h.percentile(50), h.percentile(99), h.percentile(99.9)
    assert 8e-6 <= p50 < 16e-6
    assert 256e-6 <= p99 < 512e-6
    assert p999 <= 5000e-6 and p999 >= 256e-6
    assert h.min <= p50 <= p99 <= p999 <= h.percentile(100) == h.max
    with pytest.raises(ValueError):
        h.percentile(0)
    assert LatencyHistogram().percentile(50) is None


def test_single_sample_percentiles_are_exact():
    h = LatencyHistogram()
    h.record(37e-6)
    assert h.percentile(50) == h.percentile(99.9) == pytest.approx(37e-6)


def test_merge_and_copy():
    a, b = LatencyHistogram(), LatencyHistogram()
    a.record(1e-6)
    b.record(1e-3)
    b.record(2e-3)
    c = a.copy().merge(b)
    assert c.count == 3 and c.min == pytest.approx(1e-6) and c.max == pytest.approx(2e-3)
    assert a.count == 1  # copy() left the original alone


def test_histograms_per_queue_and_per_opcode():
    clock = FakeClock()
    tracer = Tracer(clock=clock)
    for i in range(20):
        run(tracer, Req(nvm.Read(nsid=1), qid=1, cid=i, status=SUCCESS), latency=10e-6, clock=clock)
    for i in range(5):
        run(tracer, Req(nvm.Write(nsid=1), qid=2, cid=i, status=SUCCESS), latency=1e-3, clock=clock)
    run(tracer, Req(admin.Identify(cns=1), qid=0, cid=1, status=SUCCESS), latency=50e-6, clock=clock)
    raw = bytearray(64)
    raw[0] = 0xC1
    run(tracer, Req(Command.from_bytes(raw), qid=0, cid=2, status=SUCCESS), latency=5e-6, clock=clock)
    assert tracer.histogram(qid=1).count == 20 and tracer.histogram(qid=2).count == 5
    assert tracer.histogram(qid=0).count == 2
    assert tracer.histogram(opcode="nvme_cmd_read").count == 20
    assert tracer.histogram(opcode="nvme_cmd_write").max == pytest.approx(1e-3)
    assert tracer.histogram(opcode="nvme_admin_identify").count == 1
    assert tracer.histogram(opcode="admin 0xc1").count == 1
    assert tracer.histogram(opcode="nvme_cmd_flush").count == 0
    assert tracer.histogram().count == 27
    table = tracer.latency_table()
    lines = table.splitlines()
    assert lines[0].split() == ["latency", "(usecs)", "count", "min", "mean", "p50", "p99", "p99.9", "max"]
    rows = {line[:28].strip(): line[28:].split() for line in lines[1:]}
    assert set(rows) == {"qid 0", "qid 1", "qid 2", "nvme_cmd_read", "nvme_cmd_write", "nvme_admin_identify",
                         "admin 0xc1"}
    assert rows["qid 1"][0] == "20" and float(rows["qid 1"][1]) == pytest.approx(10.0)
    assert rows["nvme_cmd_write"][0] == "5" and float(rows["nvme_cmd_write"][-1]) == pytest.approx(1000.0)
    tracer.reset_stats()
    assert tracer.histogram().count == 0 and tracer.latency_table().count("\n") == 1


def test_requests_without_submission_time_have_no_latency():
    tracer = Tracer()
    tracer.complete(Req(nvm.Read(nsid=1), qid=1, cid=1, status=SUCCESS))
    assert tracer.events()[0].latency is None and tracer.histogram().count == 0 and tracer.completions == 1


def test_render_is_a_log2_histogram():
    h = LatencyHistogram()
    for us in (3, 3, 3, 3, 20):
        h.record(us * 1e-6)
    lines = h.render(width=8).splitlines()
    assert lines[0].split() == ["usecs", ":", "count", "distribution"]
    assert [line.split(":")[0].split() for line in lines[1:]] == [
        ["2", "->", "3"], ["4", "->", "7"], ["8", "->", "15"], ["16", "->", "31"]]
    assert lines[1].endswith("|********|") and lines[4].endswith("|**      |")
    assert [int(line.split(":")[1].split()[0]) for line in lines[1:]] == [4, 0, 0, 1]
    assert all(line.index(":") == lines[0].index(":") for line in lines)
    assert LatencyHistogram().render().count("\n") == 1


# ---------------------------------------------------------------------------
# Threads


def test_concurrent_completions_are_all_counted():
    tracer = Tracer(ring_size=100)
    seen = []
    lock = threading.Lock()

    def listener(event):
        with lock:
            seen.append(event.cid)

    tracer.add_listener(listener)
    threads_n, per_thread = 8, 300
    start = threading.Barrier(threads_n)

    def worker(qid):
        start.wait(timeout=10)
        for cid in range(per_thread):
            req = Req(nvm.Read(nsid=1, slba=cid), qid=qid, cid=cid, status=SUCCESS, submitted_at=tracer.clock())
            tracer.setup(req)
            tracer.complete(req)

    threads = [threading.Thread(target=worker, args=(q + 1,)) for q in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    total = threads_n * per_thread
    assert tracer.setups == total and tracer.completions == total and len(seen) == 2 * total
    assert tracer.histogram().count == total
    assert all(tracer.histogram(qid=q + 1).count == per_thread for q in range(threads_n))
    assert len(tracer.events()) == 100
    assert len({e.tid for e in tracer.events()}) >= 1


# ---------------------------------------------------------------------------
# Cost (printed, never asserted)


def test_print_per_call_cost(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "trace_overhead.py"
    spec = importlib.util.spec_from_file_location("trace_overhead", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.measure(2000)
    with capsys.disabled():
        print()
        for name, ns in rows:
            print(f"    trace cost: {name:<42} {ns:>10,.0f} ns per command")
    assert [name for name, _ in rows][1] == "tracer off"
