"""NVM Command Set I/O command views (NVM Command Set 1.0 section 3) and the
Dataset Management / Copy range structures."""

import struct

import pytest

from nvmestack.spec import nvm
from nvmestack.spec.nvm import (
    COPY_RANGE_SIZE,
    DSM_RANGE_SIZE,
    AccessFrequency,
    AccessLatency,
    Compare,
    Copy,
    CopyDescriptorFormat,
    CopySourceRange,
    DatasetManagement,
    DsmAttributes,
    DsmRange,
    Flush,
    Prinfo,
    ProtectedReadWriteBase,
    Read,
    ReadWriteBase,
    Verify,
    Write,
    WriteUncorrectable,
    WriteZeroes,
    copy_ranges,
    dsm_ranges,
    pack_copy_ranges,
    pack_dsm_ranges,
)
from nvmestack.spec.sqe import Command, command_class

SPEC_OPCODES = [
    (Flush, 0x00),
    (Write, 0x01),
    (Read, 0x02),
    (WriteUncorrectable, 0x04),
    (Compare, 0x05),
    (WriteZeroes, 0x08),
    (DatasetManagement, 0x09),
    (Verify, 0x0C),
    (Copy, 0x19),
]
IDS = [c.__name__ for c, _ in SPEC_OPCODES]


def cdw(raw, n):
    return struct.unpack_from("<I", raw, 4 * n)[0]


def sqe_with(opcode, **dwords):
    raw = bytearray(64)
    raw[0] = opcode
    for name, value in dwords.items():
        struct.pack_into("<I", raw, 4 * int(name[3:]), value)
    return raw


@pytest.mark.parametrize("cls,opcode", SPEC_OPCODES, ids=IDS)
def test_size_opcode_and_lookup(cls, opcode):
    assert cls.SIZE == 64 and len(cls()) == 64
    assert issubclass(cls, Command) and cls.ADMIN is False
    assert cls.OPCODE == opcode
    assert bytes(cls()) == bytes([opcode]) + bytes(63)
    assert command_class(False, opcode) is cls


def test_every_io_class_is_registered():
    found = {
        obj for obj in vars(nvm).values()
        if isinstance(obj, type) and issubclass(obj, Command) and getattr(obj, "OPCODE", None) is not None
    }
    assert found == {cls for cls, _ in SPEC_OPCODES}


def test_io_opcodes_do_not_shadow_admin_ones():
    # 01h on the admin queue is Create I/O SQ, 19h is Directive Send (no view here).
    assert command_class(True, 0x01) is not Write
    assert command_class(True, 0x19) is not Copy
    assert command_class(False, 0x03) is Command


def test_shared_base_classes():
    for cls in (Read, Write, Compare, Verify, WriteZeroes, WriteUncorrectable):
        assert issubclass(cls, ReadWriteBase)
    for cls in (Read, Write, Compare, Verify, WriteZeroes):
        assert issubclass(cls, ProtectedReadWriteBase)
    assert not issubclass(WriteUncorrectable, ProtectedReadWriteBase)
    # the shared fields are one and the same object: one offset, written once
    assert Read.FIELDS["slba"] is Write.FIELDS["slba"] is WriteUncorrectable.FIELDS["slba"]
    assert Read.FIELDS["prinfo"] is Compare.FIELDS["prinfo"]


# ---------------------------------------------------------------------------
# Read / Write and friends


def test_read_write_cdw10_to_cdw15_encode():
    w = Write(nsid=1, slba=0x0123_4567_89AB_CDEF, nblocks=8, dtype=2, stc=True,
              prinfo=Prinfo.PRACT | Prinfo.PRCHK_GUARD | Prinfo.PRCHK_REF, fua=True, lr=True,
              dspec=0xBEEF, dsm_af=AccessFrequency.ONE_TIME_READ, dsm_al=AccessLatency.LOW,
              dsm_seqreq=True, dsm_incprs=True, ilbrt=0x11223344, lbat=0x5566, lbatm=0x7788)
    raw = bytes(w)
    assert raw[4:8] == b"\x01\x00\x00\x00"
    assert raw[40:48] == (0x0123_4567_89AB_CDEF).to_bytes(8, "little")  # SLBA in CDW10-11
    assert cdw(raw, 10) == 0x89AB_CDEF and cdw(raw, 11) == 0x0123_4567
    # NLB 15:0 = 7 (0-based), DTYPE 23:20, STC 24, PRACT 29, GUARD 28, REF 26, FUA 30, LR 31
    assert cdw(raw, 12) == (1 << 31) | (1 << 30) | (1 << 29) | (1 << 28) | (1 << 26) | (1 << 24) | (2 << 20) | 7
    # DSPEC 31:16, DSM 7:0 = AF 6 | AL 3 << 4 | SEQREQ 6 | INCPRS 7
    assert cdw(raw, 13) == (0xBEEF << 16) | 0x80 | 0x40 | (3 << 4) | 6
    assert cdw(raw, 14) == 0x11223344
    assert cdw(raw, 15) == (0x7788 << 16) | 0x5566
    # Linux's 16-bit view of CDW12 31:16: LR 15, FUA 14, PRINFO 13:10
    assert w.control == cdw(raw, 12) >> 16
    assert w.control & (1 << 15) and w.control & (1 << 14) and w.control & (1 << 13)
    assert (w.reftag, w.apptag, w.appmask) == (0x11223344, 0x5566, 0x7788)


def test_read_decodes_from_raw_dwords():
    raw = sqe_with(0x02, cdw10=0xDEADBEEF, cdw11=0x1, cdw12=(1 << 29) | (1 << 27) | 0xFFFF,
                   cdw13=0x02, cdw14=0xA0B0C0D0, cdw15=0xFFFF0001)
    r = command_class(False, raw[0]).view(raw)
    assert type(r) is Read
    assert r.slba == 0x1_DEAD_BEEF
    assert (r.nlb, r.nblocks) == (0xFFFF, 0x10000)
    assert r.prinfo == Prinfo.PRACT | Prinfo.PRCHK_APP
    assert (r.pract, r.prchk, r.prchk_app, r.prchk_guard, r.prchk_ref) == (True, 0b010, True, False, False)
    assert (r.fua, r.lr, r.stc) == (False, False, False)
    assert (r.dsm, r.dsm_af) == (0x02, AccessFrequency.INFREQUENT)
    assert (r.eilbrt, r.elbat, r.elbatm) == (0xA0B0C0D0, 0x0001, 0xFFFF)
    assert r.reftag == r.eilbrt


def test_nblocks_bounds():
    with pytest.raises(ValueError):
        Read(nblocks=0)
    with pytest.raises(ValueError):
        Read(nblocks=0x10001)
    with pytest.raises(ValueError):
        Read(nlb=0x10000)
    with pytest.raises(ValueError):
        Write(prinfo=16)
    with pytest.raises(TypeError):
        Read(dtype=1)  # directives are for writes


def test_compare_verify_write_uncorrectable():
    for cls in (Compare, Verify):
        c = cls(slba=10, nlb=3, prchk_guard=True, fua=True, eilbrt=7, elbat=8, elbatm=9)
        raw = bytes(c)
        assert cdw(raw, 10) == 10 and cdw(raw, 12) == (1 << 30) | (1 << 28) | 3
        assert (cdw(raw, 14), cdw(raw, 15)) == (7, (9 << 16) | 8)
        assert cdw(raw, 13) == 0
        assert "dsm" not in cls.FIELDS and "dtype" not in cls.FIELDS
    u = WriteUncorrectable(slba=1 << 40, nblocks=16)
    assert bytes(u)[40:48] == (1 << 40).to_bytes(8, "little") and cdw(bytes(u), 12) == 15
    assert "prinfo" not in WriteUncorrectable.FIELDS


def test_write_zeroes_deac():
    z = WriteZeroes(slba=100, nblocks=1, deac=True, prinfo=Prinfo.PRACT, lr=True, ilbrt=100)
    raw = bytes(z)
    assert cdw(raw, 12) == (1 << 31) | (1 << 29) | (1 << 25)
    assert cdw(raw, 14) == 100
    v = WriteZeroes.view(sqe_with(0x08, cdw12=1 << 25))
    assert v.deac and not v.stc


def test_flush_has_only_nsid():
    f = Flush(nsid=0xFFFFFFFF, cid=3)
    assert bytes(f)[4:8] == b"\xff" * 4 and bytes(f)[40:] == bytes(24)


# ---------------------------------------------------------------------------
# Dataset Management


def test_dataset_management_command():
    d = DatasetManagement(nsid=1, nranges=3, ad=True, idw=True, prp1=0x3000)
    raw = bytes(d)
    assert cdw(raw, 10) == 2  # NR 0-based
    assert cdw(raw, 11) == 0b110  # IDR 0, IDW 1, AD 2
    assert d.attributes == DsmAttributes.AD | DsmAttributes.IDW
    v = DatasetManagement.view(sqe_with(0x09, cdw10=0xFF, cdw11=1))
    assert (v.nr, v.nranges, v.idr, v.idw, v.ad) == (0xFF, 256, True, False, False)
    with pytest.raises(ValueError):
        DatasetManagement(nranges=257)


def test_dsm_range_layout():
    assert DsmRange.SIZE == DSM_RANGE_SIZE == 16
    raw = bytearray(16)
    struct.pack_into("<IIQ", raw, 0, (4 << 24) | (1 << 10) | (1 << 8) | (2 << 4) | 5, 4096, 0xAABBCCDD00)
    r = DsmRange.view(raw)
    assert (r.af, r.al, r.sr, r.sw, r.wp, r.cas) == (5, 2, True, False, True, 4)
    assert (r.nlb, r.slba) == (4096, 0xAABBCCDD00)
    built = DsmRange(af=5, al=2, sr=True, wp=True, cas=4, nlb=4096, slba=0xAABBCCDD00)
    assert bytes(built) == bytes(raw)


def test_pack_and_view_dsm_ranges_without_copies():
    buf = pack_dsm_ranges([(0, 8), (1000, 16, 0x3), DsmRange(slba=5, nlb=1), {"slba": 7, "nlb": 2, "af": 1}])
    assert isinstance(buf, bytearray) and len(buf) == 4 * 16
    assert buf[16:32] == struct.pack("<IIQ", 3, 16, 1000)
    ranges = dsm_ranges(buf, 4)
    assert [(r.slba, r.nlb) for r in ranges] == [(0, 8), (1000, 16), (5, 1), (7, 2)]
    assert ranges[3].cattr == 1
    buf[48 + 8] = 9  # the views look at the buffer itself
    assert ranges[3].slba == 9
    # into a caller's buffer at an offset
    page = bytearray(4096)
    assert pack_dsm_ranges([(42, 1)], page, offset=32) is page
    assert dsm_ranges(page, 1, offset=32)[0].slba == 42 and page[:32] == bytes(32)
    # bad input
    with pytest.raises(ValueError):
        pack_dsm_ranges([])
    with pytest.raises(ValueError):
        pack_dsm_ranges([(0, 1)] * 257)
    with pytest.raises(ValueError):
        pack_dsm_ranges([(0,)])
    with pytest.raises(TypeError):
        pack_dsm_ranges([{"lba": 1}])
    with pytest.raises(TypeError):
        pack_dsm_ranges([CopySourceRange()])
    with pytest.raises(ValueError):
        pack_dsm_ranges([(0, 1), (0, 1)], bytearray(20))  # too small


# ---------------------------------------------------------------------------
# Copy


def test_copy_command_fields():
    c = Copy(nsid=1, sdlba=0x1_0000_0000, nranges=2, desfmt=CopyDescriptorFormat.FORMAT_0,
             prinfor=Prinfo.PRCHK_GUARD, dtype=2, stcw=True, prinfow=Prinfo.PRACT, fua=True, lr=True,
             dspec=0x1234, ilbrt=0xCAFEF00D, lbat=0x00AA, lbatm=0x00FF)
    raw = bytes(c)
    assert cdw(raw, 10) == 0 and cdw(raw, 11) == 1  # SDLBA
    # NR 7:0, DESFMT 11:8, PRINFOR 15:12, DTYPE 23:20, STCW 24, PRINFOW 29:26, FUA 30, LR 31
    assert cdw(raw, 12) == (1 << 31) | (1 << 30) | (0x8 << 26) | (1 << 24) | (2 << 20) | (0x4 << 12) | (0 << 8) | 1
    assert cdw(raw, 13) == 0x1234 << 16
    assert cdw(raw, 14) == 0xCAFEF00D
    assert cdw(raw, 15) == (0x00FF << 16) | 0x00AA
    v = Copy.view(sqe_with(0x19, cdw12=(1 << 8) | 0xFF))
    assert (v.nr, v.nranges, v.desfmt) == (0xFF, 256, CopyDescriptorFormat.FORMAT_1)
    with pytest.raises(ValueError):
        Copy(nranges=0)
    with pytest.raises(ValueError):
        Copy(desfmt=16)


def test_copy_source_range_format_0_layout():
    assert CopySourceRange.SIZE == COPY_RANGE_SIZE == 32
    raw = bytearray(b"\xee" * 8 + bytes(24))  # bytes 7:0 are reserved
    struct.pack_into("<QH", raw, 8, 0x1122334455667788, 0x00FF)
    struct.pack_into("<IHH", raw, 24, 0xA1B2C3D4, 0x0102, 0x0304)
    r = CopySourceRange.view(raw)
    assert (r.slba, r.nlb, r.nblocks) == (0x1122334455667788, 0xFF, 0x100)
    assert (r.eilbrt, r.elbat, r.elbatm) == (0xA1B2C3D4, 0x0102, 0x0304)
    built = CopySourceRange(slba=0x1122334455667788, nblocks=0x100, eilbrt=0xA1B2C3D4, elbat=0x0102,
                            elbatm=0x0304)
    assert bytes(built)[8:] == bytes(raw)[8:] and bytes(built)[:8] == bytes(8)


def test_pack_and_view_copy_ranges():
    buf = pack_copy_ranges([(100, 8), (200, 1, 1, 2, 3), {"slba": 300, "nlb": 0}])
    assert len(buf) == 3 * 32
    assert buf[8:16] == (100).to_bytes(8, "little") and buf[16:18] == (7).to_bytes(2, "little")
    assert buf[32 + 24:32 + 32] == struct.pack("<IHH", 1, 2, 3)
    ranges = copy_ranges(buf, Copy(nranges=3).nranges)
    assert [(r.slba, r.nblocks) for r in ranges] == [(100, 8), (200, 1), (300, 1)]
    ranges[0].nblocks = 4  # writes through to the buffer
    assert buf[16] == 3
    with pytest.raises(ValueError):
        pack_copy_ranges([(0, 0)])  # zero blocks cannot be expressed
    with pytest.raises(ValueError):
        pack_copy_ranges([(0, 0x10001)])


# ---------------------------------------------------------------------------
# Round trip for every command

SAMPLES = {
    Flush: dict(nsid=1),
    Write: dict(slba=77, nlb=15, dtype=1, stc=False, prinfo=0x3, fua=True, lr=False, dsm=0x11, dspec=9,
                ilbrt=4, lbat=5, lbatm=6, nsid=1, prp1=0x1000, prp2=0x2000, mptr=0x3000),
    Read: dict(slba=77, nlb=15, prinfo=0x9, fua=False, lr=True, dsm=0x22, eilbrt=4, elbat=5, elbatm=6,
               nsid=1, prp1=0x1000),
    WriteUncorrectable: dict(slba=1, nlb=2, nsid=1),
    Compare: dict(slba=3, nlb=4, stc=True, eilbrt=1, nsid=1, prp1=0x1000),
    WriteZeroes: dict(slba=5, nlb=6, deac=True, nsid=1),
    DatasetManagement: dict(nr=3, idr=True, ad=True, nsid=1, prp1=0x4000),
    Verify: dict(slba=7, nlb=8, prchk=0b111, nsid=1),
    Copy: dict(sdlba=9, nr=1, desfmt=0, prinfor=1, prinfow=2, stcw=True, fua=True, dspec=3, ilbrt=4,
               nsid=1, prp1=0x5000),
}


def test_samples_cover_every_command():
    assert set(SAMPLES) == {cls for cls, _ in SPEC_OPCODES}


@pytest.mark.parametrize("cls", [c for c, _ in SPEC_OPCODES], ids=IDS)
def test_round_trip(cls):
    values = SAMPLES[cls]
    cmd = cls(cid=0xABCD, **values)
    raw = bytes(cmd)
    back = command_class(False, raw[0]).decode(raw)
    assert type(back) is cls and back == cmd and back.cid == 0xABCD
    for name, value in values.items():
        assert getattr(back, name) == value, name
    assert cls.from_bytes(bytearray(raw)) == cmd
    ring = bytearray(64 * 8)
    ring[64 * 5:64 * 6] = raw
    assert cls.view(ring, 64 * 5).to_dict() == cmd.to_dict()
