"""End-to-end protection information: PI types 1-3, PI first or last in 8
or 16 bytes of metadata, extended LBAs or a separate buffer; PRACT insert
and strip, PRCHK guard / application tag / reference tag checks with their
own statuses, escape values, and the PRINFO combinations the spec forbids."""

import pytest

from nvmestack.spec.checksum import crc16_t10dif
from nvmestack.spec.nvm import (
    Compare,
    Copy,
    DatasetManagement,
    Read,
    Verify,
    Write,
    WriteZeroes,
    pack_copy_ranges,
    pack_dsm_ranges,
)
from nvmestack.spec.pi import Prinfo
from nvmestack.spec.status import CommandSpecificStatus, GenericStatus, MediaStatus
from nvmestack.target import Namespace

from .test_io import assert_ok, assert_status, last_error, pattern

BS = 512
ALL = int(Prinfo.PRCHK_ALL)
PRACT = int(Prinfo.PRACT)
GUARD, APP, REF = int(Prinfo.PRCHK_GUARD), int(Prinfo.PRCHK_APP), int(Prinfo.PRCHK_REF)


class Fmt:
    """A protected namespace as the host sees it, with a host-side PI
    generator independent of the device's."""

    def __init__(self, subsystem, pi_type, ms, pi_first, extended, nblocks=64):
        self.pi_type, self.ms, self.pi_first, self.extended = pi_type, ms, pi_first, extended
        self.ns = subsystem.add_namespace(Namespace(
            2, nblocks, lba_format={8: 1, 16: 2}[ms], extended=extended, pi_type=pi_type, pi_first=pi_first))
        self.ilbrt = 0x1000  # type 2 initial tag; type 3 any tag

    def __repr__(self):
        return f"<type {self.pi_type} ms {self.ms} {'first' if self.pi_first else 'last'} " \
               f"{'ext' if self.extended else 'sep'}>"

    def reftag(self, slba):
        """The ILBRT a host uses for a command at slba."""
        return slba & 0xFFFFFFFF if self.pi_type == 1 else self.ilbrt

    def ref_of(self, slba, i):
        if self.pi_type == 1:
            return (slba + i) & 0xFFFFFFFF
        if self.pi_type == 2:
            return (self.ilbrt + i) & 0xFFFFFFFF
        return self.ilbrt

    def meta(self, data, slba, *, apptag=0x1234, user=None, guard_delta=0, ref_delta=0, refs=None, apps=None):
        """Metadata with correct PI for data (or deliberately wrong)."""
        n = len(data) // BS
        out = bytearray()
        for i in range(n):
            u = user[i] if user is not None else bytes([0xC0 + i % 16]) * (self.ms - 8)
            blk = data[i * BS : (i + 1) * BS]
            guard = crc16_t10dif(blk) if self.pi_first else crc16_t10dif(u, crc16_t10dif(blk))
            ref = refs[i] if refs is not None else (self.ref_of(slba, i) + ref_delta) & 0xFFFFFFFF
            app = apps[i] if apps is not None else apptag
            pi = ((guard + guard_delta) & 0xFFFF).to_bytes(2, "big") + app.to_bytes(2, "big") + ref.to_bytes(4, "big")
            out += (pi + u) if self.pi_first else (u + pi)
        return bytes(out)

    def layout(self, data, meta):
        """(data buffer, metadata buffer) as the host transfers them."""
        if meta is None:
            return bytearray(data), None
        if not self.extended:
            return bytearray(data), bytearray(meta)
        n = len(data) // BS
        buf = bytearray()
        for i in range(n):
            buf += data[i * BS : (i + 1) * BS] + meta[i * self.ms : (i + 1) * self.ms]
        return buf, None

    def split(self, req):
        """(data, metadata) of a completed read."""
        buf = bytes(req.data[0]) if req.data else b""
        if req.meta:
            return buf, bytes(req.meta[0])
        n = req.cmd.nblocks
        if req.data_len == n * BS:
            return buf, b""
        rec = BS + self.ms
        assert req.data_len == n * rec
        return (b"".join(buf[i * rec : i * rec + BS] for i in range(n)),
                b"".join(buf[i * rec + BS : (i + 1) * rec] for i in range(n)))

    def pi(self, meta, i):
        m = meta[i * self.ms : (i + 1) * self.ms]
        return m[:8] if self.pi_first else m[-8:]

    def user(self, meta, i):
        m = meta[i * self.ms : (i + 1) * self.ms]
        return m[8:] if self.pi_first else m[:-8]

    # commands -------------------------------------------------------------

    def write(self, ctrl, slba, data, meta, prinfo=0, **fields):
        fields.setdefault("reftag", self.reftag(slba))
        fields.setdefault("apptag", 0x1234)
        fields.setdefault("appmask", 0xFFFF)
        buf, mbuf = self.layout(data, meta)
        return ctrl.submit(Write(nsid=2, slba=slba, nblocks=len(data) // BS, prinfo=prinfo, **fields),
                           sqid=1, data=buf, meta=mbuf)

    def read(self, ctrl, slba, nblocks, prinfo=0, opcode=Read, **fields):
        fields.setdefault("reftag", self.reftag(slba))
        fields.setdefault("apptag", 0x1234)
        fields.setdefault("appmask", 0xFFFF)
        return ctrl.submit(opcode(nsid=2, slba=slba, nblocks=nblocks, prinfo=prinfo, **fields), sqid=1)


CASES = [(t, ms, first, ext) for t in (1, 2, 3) for ms in (8, 16) for first in (False, True)
         for ext in (False, True) if not (ms == 8 and first)]


def _case_id(c):
    return f"t{c[0]}-ms{c[1]}-{'first' if c[2] else 'last'}-{'ext' if c[3] else 'sep'}"


def only(predicate):
    """Run a test on the formats for which it means something (no skips)."""
    return pytest.mark.parametrize("fmt", [c for c in CASES if predicate(c)], ids=_case_id, indirect=True)


@pytest.fixture(params=CASES, ids=_case_id)
def fmt(request, subsystem):
    return Fmt(subsystem, *request.param)


def written(fmt, ctrl, slba=8, n=4, seed=1, **meta_opts):
    data = pattern(n, seed)
    meta = fmt.meta(data, slba, **meta_opts)
    assert_ok(fmt.write(ctrl, slba, data, meta, prinfo=ALL))
    return data, meta


# ---------------------------------------------------------------------------


def test_round_trip_with_all_checks(fmt, ctrl):
    data, meta = written(fmt, ctrl)
    req = fmt.read(ctrl, 8, 4, prinfo=ALL)
    assert_ok(req)
    assert fmt.split(req) == (data, meta)
    assert_ok(fmt.read(ctrl, 8, 4, prinfo=ALL, opcode=Verify))


def test_guard_check_error(fmt, ctrl, subsystem):
    written(fmt, ctrl)
    fmt.ns.data.write_bytes(10 * BS + 77, b"\xee")  # the medium changed under block 10
    errors = subsystem.health.media_errors
    req = fmt.read(ctrl, 8, 4, prinfo=ALL)
    assert_status(req, MediaStatus.GUARD_CHECK_ERROR)
    assert last_error(ctrl).lba == 10
    assert subsystem.health.media_errors == errors + 1
    assert_status(fmt.read(ctrl, 8, 4, prinfo=GUARD, opcode=Verify), MediaStatus.GUARD_CHECK_ERROR)
    # Without the guard check the read succeeds.
    assert_ok(fmt.read(ctrl, 8, 4, prinfo=APP | REF))


@only(lambda c: c[1] > 8)  # metadata besides the tuple
def test_guard_covers_metadata_before_the_tuple(fmt, ctrl):
    written(fmt, ctrl)
    # Tamper with the user metadata of block 9 (stored as is).
    offset = 9 * fmt.ms + (8 if fmt.pi_first else 0)
    old = fmt.ns.meta.read_bytes(offset, 1)
    fmt.ns.meta.write_bytes(offset, bytes([old[0] ^ 1]))
    req = fmt.read(ctrl, 8, 4, prinfo=ALL)
    if fmt.pi_first:
        assert_ok(req)  # PI first: the guard covers the data only
    else:
        assert_status(req, MediaStatus.GUARD_CHECK_ERROR)
        assert last_error(ctrl).lba == 9


def test_stored_tuple_tampered(fmt, ctrl):
    written(fmt, ctrl)
    pi_at = 11 * fmt.ms + (0 if fmt.pi_first else fmt.ms - 8)
    old = fmt.ns.meta.read_bytes(pi_at, 1)
    fmt.ns.meta.write_bytes(pi_at, bytes([old[0] ^ 4]))  # a guard bit
    assert_status(fmt.read(ctrl, 8, 4, prinfo=GUARD), MediaStatus.GUARD_CHECK_ERROR)
    assert last_error(ctrl).lba == 11


def test_application_tag_check_error(fmt, ctrl):
    written(fmt, ctrl, apptag=0x1234)
    req = fmt.read(ctrl, 8, 4, prinfo=APP, apptag=0x1235, appmask=0xFFFF)
    assert_status(req, MediaStatus.APPLICATION_TAG_CHECK_ERROR)
    assert last_error(ctrl).lba == 8
    # The mask (ELBATM) selects the bits that are checked.
    assert_ok(fmt.read(ctrl, 8, 4, prinfo=APP, apptag=0x1235, appmask=0xFFF0))
    assert_ok(fmt.read(ctrl, 8, 4, prinfo=APP, apptag=0xABCD, appmask=0))
    # Not checked without PRCHK's application tag bit.
    assert_ok(fmt.read(ctrl, 8, 4, prinfo=GUARD | REF, apptag=0x1235))


def test_reference_tag_check_error(fmt, ctrl):
    # The host's tuple for block 9 carries another block's reference tag.
    data = pattern(4, 3)
    refs = [fmt.ref_of(8, i) for i in range(4)]
    refs[1] = (refs[1] + 5) & 0xFFFFFFFF
    meta = fmt.meta(data, 8, refs=refs)
    assert_ok(fmt.write(ctrl, 8, data, meta, prinfo=GUARD | APP))
    req = fmt.read(ctrl, 8, 4, prinfo=REF)
    if fmt.pi_type == 3:
        assert_ok(req)  # type 3: the reference tag is not checked
    else:
        assert_status(req, MediaStatus.REFERENCE_TAG_CHECK_ERROR)
        assert last_error(ctrl).lba == 9
    # The write itself fails when it checks the reference tag.
    req = fmt.write(ctrl, 8, data, meta, prinfo=REF)
    if fmt.pi_type == 3:
        assert_ok(req)
    else:
        assert_status(req, MediaStatus.REFERENCE_TAG_CHECK_ERROR)


@only(lambda c: c[0] == 2)
def test_type2_reference_tags_follow_eilbrt(fmt, ctrl):
    written(fmt, ctrl)
    assert_ok(fmt.read(ctrl, 9, 2, prinfo=REF, reftag=fmt.ilbrt + 1))
    assert_status(fmt.read(ctrl, 9, 2, prinfo=REF, reftag=fmt.ilbrt), MediaStatus.REFERENCE_TAG_CHECK_ERROR)


def test_bad_write_stores_nothing(fmt, ctrl):
    old, old_meta = written(fmt, ctrl)
    data = pattern(4, 9)
    meta = fmt.meta(data, 8, guard_delta=1)
    req = fmt.write(ctrl, 8, data, meta, prinfo=GUARD)
    assert_status(req, MediaStatus.GUARD_CHECK_ERROR)
    assert last_error(ctrl).lba == 8
    assert fmt.split(fmt.read(ctrl, 8, 4)) == (old, old_meta)


def test_escape_values_disable_checks(fmt, ctrl):
    data = pattern(2, 5)
    if fmt.pi_type == 3:
        apps, refs = [0xFFFF, 0xFFFF], [0x12, 0xFFFFFFFF]
    else:
        apps, refs = [0xFFFF, 0xFFFF], [0x99, 0x98]
    meta = fmt.meta(data, 20, apps=apps, refs=refs, guard_delta=3)
    assert_ok(fmt.write(ctrl, 20, data, meta))
    req = fmt.read(ctrl, 20, 2, prinfo=ALL, apptag=0x1)
    if fmt.pi_type == 3:
        # Type 3 needs both escapes: block 20 has only the application tag one.
        assert_status(req, MediaStatus.GUARD_CHECK_ERROR)
        assert last_error(ctrl).lba == 20
        assert_ok(fmt.read(ctrl, 21, 1, prinfo=ALL, apptag=0x1))
    else:
        assert_ok(req)


def test_pract_write_generates_pi(fmt, ctrl):
    data = pattern(3, 7)
    if fmt.ms == 8:
        meta = None  # the host transfers no metadata
    else:
        meta = fmt.meta(data, 30, guard_delta=1, ref_delta=7, apptag=0x0BAD)  # PI part ignored
    req = fmt.write(ctrl, 30, data, meta, prinfo=PRACT | ALL, apptag=0x4321)
    assert_ok(req)
    assert req.meta_len == (0 if fmt.ms == 8 or fmt.extended else 3 * fmt.ms)
    assert req.data_len == 3 * BS + (3 * fmt.ms if fmt.extended and fmt.ms == 16 else 0)
    got = fmt.read(ctrl, 30, 3, prinfo=ALL, apptag=0x4321)
    assert_ok(got)
    got_data, got_meta = fmt.split(got)
    assert got_data == data
    user = [fmt.user(meta, i) for i in range(3)] if meta else None
    assert got_meta == fmt.meta(data, 30, apptag=0x4321, user=user)


def test_pract_read_strips_or_passes_pi(fmt, ctrl):
    data, meta = written(fmt, ctrl)
    req = fmt.read(ctrl, 8, 4, prinfo=PRACT | ALL)
    assert_ok(req)
    if fmt.ms == 8:
        assert (req.data_len, req.meta_len) == (4 * BS, 0)
        assert bytes(req.data[0]) == data
    else:
        assert fmt.split(req) == (data, meta)
    # The checks still run.
    fmt.ns.data.write_bytes(8 * BS, b"\x00\x01")
    assert_status(fmt.read(ctrl, 8, 4, prinfo=PRACT | GUARD), MediaStatus.GUARD_CHECK_ERROR)


def test_type1_initial_tag_must_match_slba(fmt, ctrl):
    data = pattern(1, 1)
    meta = fmt.meta(data, 8)
    if fmt.pi_type != 1:
        assert_ok(fmt.write(ctrl, 8, data, meta, prinfo=ALL, reftag=fmt.reftag(8)))
        return
    for req in (fmt.write(ctrl, 8, data, meta, prinfo=REF, reftag=9),
                fmt.read(ctrl, 8, 1, prinfo=REF, reftag=7),
                fmt.read(ctrl, 8, 1, prinfo=REF, reftag=7, opcode=Verify)):
        assert_status(req, CommandSpecificStatus.INVALID_PROTECTION_INFORMATION)
    # Without the reference tag check the initial tag is not looked at.
    assert_ok(fmt.read(ctrl, 8, 1, prinfo=GUARD, reftag=7))


def test_unwritten_and_deallocated_blocks_pass_checks(fmt, ctrl):
    req = fmt.read(ctrl, 40, 2, prinfo=ALL)
    assert_ok(req)
    data, meta = fmt.split(req)
    assert data == bytes(2 * BS)
    assert fmt.pi(meta, 0) == b"\xff" * 8 and fmt.user(meta, 1) == bytes(fmt.ms - 8)
    written(fmt, ctrl, slba=40, n=2)
    dsm = pack_dsm_ranges([(40, 2)])
    assert_ok(ctrl.submit(DatasetManagement(nsid=2, nranges=1, ad=True), sqid=1, data=dsm))
    req = fmt.read(ctrl, 40, 2, prinfo=ALL)
    assert_ok(req)
    assert fmt.split(req) == (data, meta)


@pytest.mark.parametrize("deac", [False, True])
def test_write_zeroes_pi(fmt, ctrl, deac):
    written(fmt, ctrl, slba=8, n=4)
    req = ctrl.submit(WriteZeroes(nsid=2, slba=8, nblocks=2, deac=deac, prinfo=PRACT,
                                  reftag=fmt.reftag(8), apptag=0x77), sqid=1)
    assert_ok(req)
    got = fmt.read(ctrl, 8, 2, prinfo=ALL, apptag=0x77)
    assert_ok(got)
    data, meta = fmt.split(got)
    assert data == bytes(2 * BS)
    assert meta == fmt.meta(bytes(2 * BS), 8, apptag=0x77, user=[bytes(fmt.ms - 8)] * 2)
    # PRACT cleared: the tuple is all zeroes.
    assert_ok(ctrl.submit(WriteZeroes(nsid=2, slba=10, nblocks=2, deac=deac), sqid=1))
    _, meta = fmt.split(fmt.read(ctrl, 10, 2))
    assert meta == bytes(2 * fmt.ms)
    req = fmt.read(ctrl, 10, 2, prinfo=REF)
    if fmt.pi_type == 3:
        assert_ok(req)
    else:
        assert_status(req, MediaStatus.REFERENCE_TAG_CHECK_ERROR)
    # PRCHK has nothing to check on Write Zeroes.
    req = ctrl.submit(WriteZeroes(nsid=2, slba=8, nblocks=1, prinfo=GUARD), sqid=1)
    assert_status(req, CommandSpecificStatus.INVALID_PROTECTION_INFORMATION)


def test_compare_with_pi(fmt, ctrl):
    data, meta = written(fmt, ctrl)
    buf, mbuf = fmt.layout(data, meta)
    assert_ok(ctrl.submit(Compare(nsid=2, slba=8, nblocks=4, prinfo=ALL, reftag=fmt.reftag(8),
                                  apptag=0x1234, appmask=0xFFFF), sqid=1, data=buf, meta=mbuf))
    # The tuple itself is not compared...
    other = fmt.meta(data, 8, apptag=0x9999, ref_delta=3)
    buf, mbuf = fmt.layout(data, other)
    assert_ok(ctrl.submit(Compare(nsid=2, slba=8, nblocks=4), sqid=1, data=buf, meta=mbuf))
    # ...the rest of the metadata is.
    if fmt.ms == 16:
        user = [bytes(8)] * 4
        buf, mbuf = fmt.layout(data, fmt.meta(data, 8, user=user))
        req = ctrl.submit(Compare(nsid=2, slba=8, nblocks=4), sqid=1, data=buf, meta=mbuf)
        assert_status(req, MediaStatus.COMPARE_FAILURE)
    # PRACT has nothing to insert or strip on Compare.
    req = ctrl.submit(Compare(nsid=2, slba=8, nblocks=1, prinfo=PRACT), sqid=1)
    assert_status(req, CommandSpecificStatus.INVALID_PROTECTION_INFORMATION)
    # The stored PI is checked as PRCHK asks.
    fmt.ns.data.write_bytes(8 * BS, b"\x42")
    buf, mbuf = fmt.layout(data, meta)
    req = ctrl.submit(Compare(nsid=2, slba=8, nblocks=4, prinfo=GUARD), sqid=1, data=buf, meta=mbuf)
    assert_status(req, MediaStatus.GUARD_CHECK_ERROR)


def test_verify_pract_is_invalid(fmt, ctrl):
    req = ctrl.submit(Verify(nsid=2, slba=0, nblocks=1, prinfo=PRACT), sqid=1)
    assert_status(req, CommandSpecificStatus.INVALID_PROTECTION_INFORMATION)


def test_copy_regenerates_pi(fmt, ctrl):
    data, meta = written(fmt, ctrl, slba=8, n=4)
    src = pack_copy_ranges([{"slba": 8, "nblocks": 4, "eilbrt": fmt.reftag(8), "elbat": 0x1234, "elbatm": 0xFFFF}])
    cmd = Copy(nsid=2, sdlba=50, nranges=1, prinfor=PRACT | ALL, prinfow=PRACT,
               ilbrt=fmt.reftag(50), lbat=0x5555)
    assert_ok(ctrl.submit(cmd, sqid=1, data=src))
    got = fmt.read(ctrl, 50, 4, prinfo=ALL, apptag=0x5555)
    assert_ok(got)
    got_data, got_meta = fmt.split(got)
    assert got_data == data
    assert got_meta == fmt.meta(data, 50, apptag=0x5555, user=[fmt.user(meta, i) for i in range(4)])


def test_copy_keeps_source_pi_without_pract(fmt, ctrl):
    data, meta = written(fmt, ctrl, slba=8, n=2)
    src = pack_copy_ranges([(8, 2)])
    assert_ok(ctrl.submit(Copy(nsid=2, sdlba=50, nranges=1), sqid=1, data=src))
    assert fmt.split(fmt.read(ctrl, 50, 2)) == (data, meta)
    # Checking the destination reference tags fails for type 1 (they are
    # the source's) and type 2 with another initial tag.
    req = ctrl.submit(Copy(nsid=2, sdlba=52, nranges=1, prinfow=REF, ilbrt=fmt.reftag(52) + 1
                           if fmt.pi_type == 2 else fmt.reftag(52)), sqid=1, data=src)
    if fmt.pi_type == 3:
        assert_ok(req)
    else:
        assert_status(req, MediaStatus.REFERENCE_TAG_CHECK_ERROR)
        assert req.cqe.dw0 == 0
        assert fmt.split(fmt.read(ctrl, 52, 2))[0] == bytes(2 * BS)
    # The source checks use each range's own tags.
    bad = pack_copy_ranges([(8, 1), {"slba": 9, "nblocks": 1, "elbat": 0x1, "elbatm": 0xFFFF}])
    req = ctrl.submit(Copy(nsid=2, sdlba=54, nranges=2, prinfor=APP), sqid=1, data=bad)
    assert_status(req, MediaStatus.APPLICATION_TAG_CHECK_ERROR)
    assert last_error(ctrl).lba == 9
    assert req.cqe.dw0 == 0  # checked before copying: nothing was copied
    assert fmt.split(fmt.read(ctrl, 54, 1))[0] == bytes(BS)


def test_copy_pract_must_agree(fmt, ctrl):
    src = pack_copy_ranges([(8, 1)])
    req = ctrl.submit(Copy(nsid=2, sdlba=50, nranges=1, prinfor=PRACT), sqid=1, data=src)
    assert_status(req, GenericStatus.INVALID_FIELD)


def test_prinfo_ignored_without_pi(subsystem, ctrl):
    ns = subsystem.add_namespace(Namespace(3, 64, lba_format=1))  # 8 bytes of metadata, no PI
    data, meta = pattern(2, 1), bytes(range(16))
    req = ctrl.submit(Write(nsid=3, slba=0, nblocks=2, prinfo=PRACT | ALL, reftag=77), sqid=1,
                      data=bytearray(data), meta=bytearray(meta))
    assert_ok(req)
    assert req.meta_len == 16  # PRACT does not drop the metadata without PI
    assert ns.meta.read_bytes(0, 16) == meta
    req = ctrl.submit(Read(nsid=3, slba=0, nblocks=2, prinfo=PRACT | ALL, reftag=5), sqid=1)
    assert_ok(req)
    assert bytes(req.meta[0]) == meta


@pytest.mark.parametrize("extended", [False, True])
def test_large_transfers_and_chunks(subsystem, ctrl, extended):
    """Hundreds of blocks in one command (the PI encoding works 256 blocks
    at a time) and Verify / Copy across several bounce chunks."""
    fmt = Fmt(subsystem, 1, 16, False, extended, nblocks=6000)
    n = 900
    data = pattern(n, 3)
    user = [bytes([i & 0xFF]) * 8 for i in range(n)]
    buf, mbuf = fmt.layout(data, fmt.meta(data, 100, user=user, guard_delta=1))  # bad PI: PRACT replaces it
    req = ctrl.submit(Write(nsid=2, slba=100, nblocks=n, prinfo=PRACT, reftag=100, apptag=0x42), sqid=1,
                      data=buf, meta=mbuf)
    assert_ok(req)
    got = fmt.read(ctrl, 100, n, prinfo=ALL, apptag=0x42)
    assert_ok(got)
    assert fmt.split(got) == (data, fmt.meta(data, 100, apptag=0x42, user=user))
    # Verify and Copy move more than one bounce chunk (2048 blocks of 512).
    assert_ok(ctrl.submit(Verify(nsid=2, slba=0, nblocks=5000, prinfo=ALL, reftag=0, apptag=0x42), sqid=1))
    src = pack_copy_ranges([(0, 5000)])
    assert_ok(ctrl.submit(Copy(nsid=2, sdlba=1000, nranges=1, prinfor=PRACT | ALL, prinfow=PRACT,
                               ilbrt=1000, lbat=0x42), sqid=1, data=src))
    # The copy ran backwards (destination over the source's end): the data
    # that was at 100.. is now at 1100.., with tags for its new place.
    got = fmt.read(ctrl, 1100, n, prinfo=ALL, apptag=0x42, reftag=1100)
    assert_ok(got)
    assert fmt.split(got) == (data, fmt.meta(data, 1100, apptag=0x42, user=user))
    fmt.ns.data.write_bytes(4500 * BS + 9, b"\x01")
    req = ctrl.submit(Verify(nsid=2, slba=1000, nblocks=5000, prinfo=GUARD), sqid=1)
    assert_status(req, MediaStatus.GUARD_CHECK_ERROR)
    assert last_error(ctrl).lba == 4500
