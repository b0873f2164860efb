import pytest

from nvmestack.spec.registers import (
    DOORBELL_BASE,
    NSSR_SIGNATURE,
    NVME_VS_1_0,
    NVME_VS_1_2,
    NVME_VS_1_3,
    NVME_VS_1_4,
    NVME_VS_2_0,
    Acq,
    Ams,
    Aqa,
    Asq,
    Bpinfo,
    Bprsel,
    Cap,
    CapCss,
    Cc,
    CcCss,
    Cmbloc,
    Cmbmsc,
    Cmbsz,
    ControllerRegisters,
    Crto,
    Csts,
    Pmrcap,
    Reg,
    Shn,
    Shst,
    Vs,
    cq_head_doorbell,
    doorbell_decode,
    doorbell_region_size,
    mps_for_page_size,
    nvme_version,
    page_size,
    sq_tail_doorbell,
    timeout_ms,
)


def u32(raw, off=0):
    return int.from_bytes(bytes(raw)[off : off + 4], "little")


def u64(raw, off=0):
    return int.from_bytes(bytes(raw)[off : off + 8], "little")


def test_register_offsets_and_sizes():
    expected = {
        "CAP": (0x00, 8), "VS": (0x08, 4), "INTMS": (0x0C, 4), "INTMC": (0x10, 4), "CC": (0x14, 4),
        "CSTS": (0x1C, 4), "NSSR": (0x20, 4), "AQA": (0x24, 4), "ASQ": (0x28, 8), "ACQ": (0x30, 8),
        "CMBLOC": (0x38, 4), "CMBSZ": (0x3C, 4), "BPINFO": (0x40, 4), "BPRSEL": (0x44, 4),
        "BPMBL": (0x48, 8), "CMBMSC": (0x50, 8), "CMBSTS": (0x58, 4), "CMBEBS": (0x5C, 4),
        "CMBSWTP": (0x60, 4), "NSSD": (0x64, 4), "CRTO": (0x68, 4), "PMRCAP": (0xE00, 4),
        "PMRCTL": (0xE04, 4), "PMRSTS": (0xE08, 4), "PMREBS": (0xE0C, 4), "PMRSWTP": (0xE10, 4),
        "PMRMSCL": (0xE14, 4), "PMRMSCU": (0xE18, 4),
    }
    for name, (offset, size) in expected.items():
        assert Reg[name] == offset and Reg[name].size == size, name
    assert Reg.at(0x14) is Reg.CC and Reg.at(0x18) is None
    assert DOORBELL_BASE == 0x1000


def test_cap_bit_positions_decode():
    raw = bytearray(8)
    value = (
        0x03FF  # MQES
        | 1 << 16  # CQR
        | 0b11 << 17  # AMS: WRRU + vendor
        | 0x28 << 24  # TO = 40 -> 20 s
        | 0x2 << 32  # DSTRD
        | 1 << 36  # NSSRS
        | 1 << 37  # CSS.NVM
        | 1 << 43  # CSS.IOCS
        | 1 << 45  # BPS
        | 0b10 << 46  # CPS domain
        | 0x1 << 48  # MPSMIN
        | 0x4 << 52  # MPSMAX
        | 1 << 57  # CMBS
        | 0b10 << 59  # CRMS: CRIMS
    )
    raw[:] = value.to_bytes(8, "little")
    cap = Cap.decode(raw)
    assert cap.mqes == 0x3FF and cap.max_queue_entries == 1024
    assert cap.cqr is True and cap.ams == 3
    assert cap.to == 0x28 and cap.timeout_ms == 20000
    assert cap.dstrd == 2 and cap.doorbell_stride == 16
    assert cap.nssrs and cap.bps and cap.cmbs and not cap.pmrs and not cap.nsss
    assert cap.css == CapCss.NVM | CapCss.IOCS
    assert cap.css_nvm and cap.css_iocs and not cap.css_noiocs
    assert cap.cps == 2
    assert cap.mpsmin == 1 and cap.page_size_min == 8192
    assert cap.mpsmax == 4 and cap.page_size_max == 65536
    assert cap.crms == 2 and cap.crims and not cap.crwms


def test_cap_encode_single_fields():
    assert Cap(to=1).value == 1 << 24
    assert Cap(css_noiocs=True).value == 1 << 44
    assert Cap(nsss=True).value == 1 << 58
    assert Cap(pmrs=True).value == 1 << 56
    assert Cap(mpsmax=0xF).value == 0xF << 52
    raw = bytes(Cap(dstrd=0xF))
    assert raw[4] == 0x0F and raw[:4] == b"\0\0\0\0"
    with pytest.raises(ValueError):
        Cap(mqes=0x10000)


def test_version():
    assert NVME_VS_1_0 == 0x00010000
    assert NVME_VS_1_2 == 0x00010200
    assert NVME_VS_1_3 == 0x00010300
    assert NVME_VS_1_4 == 0x00010400
    assert NVME_VS_2_0 == 0x00020000
    assert nvme_version(1, 2, 1) == 0x00010201
    vs = Vs.decode(NVME_VS_1_4.to_bytes(4, "little"))
    assert (vs.mjr, vs.mnr, vs.ter) == (1, 4, 0)
    assert u32(Vs(mjr=2, mnr=1, ter=3)) == 0x00020103
    with pytest.raises(ValueError):
        nvme_version(1, 256)


def test_cc_fields():
    cc = Cc(en=1, css=CcCss.ALL_IOCS, mps=0, ams=Ams.WRRU, shn=Shn.NORMAL, iosqes=6, iocqes=4, crime=1)
    assert u32(cc) == 1 | 6 << 4 | 1 << 11 | 1 << 14 | 6 << 16 | 4 << 20 | 1 << 24
    back = Cc.decode((2 << 14 | 3 << 7 | 7 << 11).to_bytes(4, "little"))
    assert back.shn == Shn.ABRUPT and back.mps == 3 and back.page_size == 32768 and back.ams == Ams.VENDOR
    assert back.en is False
    assert (CcCss.NVM, CcCss.ADMIN_ONLY) == (0, 7)
    with pytest.raises(ValueError):
        cc.css = 8


def test_csts_fields():
    assert u32(Csts(rdy=1)) == 1
    assert u32(Csts(cfs=1)) == 2
    assert u32(Csts(shst=Shst.COMPLETE)) == 0b1000
    assert u32(Csts(nssro=1)) == 1 << 4
    assert u32(Csts(pp=1)) == 1 << 5
    assert u32(Csts(st=1)) == 1 << 6
    csts = Csts.decode((1 | Shst.OCCURRING << 2).to_bytes(4, "little"))
    assert csts.rdy and csts.shst == Shst.OCCURRING


def test_aqa_and_queue_bases():
    aqa = Aqa(asqs=31, acqs=0xFFF)
    assert u32(aqa) == 31 | 0xFFF << 16
    with pytest.raises(ValueError):
        aqa.asqs = 0x1000
    asq = Asq()
    asq.address = 0x1_2345_6000
    assert u64(asq) == 0x1_2345_6000 and asq.asqb == 0x123456
    with pytest.raises(ValueError):
        asq.address = 0x1000_0800
    assert u64(Asq(address=0x7000)) == 0x7000  # settable property as a keyword
    acq = Acq.decode((0xABC000 | 0xFFF).to_bytes(8, "little"))
    assert acq.address == 0xABC000 and acq.acqb == 0xABC


def test_cmb_registers():
    loc = Cmbloc(bir=2, cqda=1, ofst=0x12345)
    assert u32(loc) == 2 | 1 << 8 | 0x12345 << 12
    assert u32(Cmbloc(cqmms=1)) == 1 << 3 and u32(Cmbloc(cdmmms=1)) == 1 << 7
    sz = Cmbsz.decode((0b11111 | 1 << 8 | 3 << 12).to_bytes(4, "little"))
    assert sz.sqs and sz.cqs and sz.lists and sz.rds and sz.wds
    assert sz.szu == 1 and sz.sz == 3
    assert sz.unit == 64 * 1024 and sz.size_bytes == 3 * 64 * 1024
    msc = Cmbmsc(cre=1, cmse=1, cba=0xFEDCB)
    assert u64(msc) == 0b11 | 0xFEDCB << 12


def test_other_registers():
    assert u32(Bpinfo(bpsz=0x7FFF, brs=3, abpid=1)) == 0x7FFF | 3 << 24 | 1 << 31
    assert u32(Bprsel(bprsz=0x3FF, bprof=1, bpid=1)) == 0x3FF | 1 << 10 | 1 << 31
    assert u32(Crto(crwmt=0x10, crimt=0x20)) == 0x10 | 0x20 << 16
    assert u32(Pmrcap(rds=1, wds=1, bir=5, pmrtu=1, pmrwbm=0xF, pmrto=0xAA, cmss=1)) == (
        1 << 3 | 1 << 4 | 5 << 5 | 1 << 8 | 0xF << 10 | 0xAA << 16 | 1 << 24
    )
    assert NSSR_SIGNATURE.to_bytes(4, "big") == b"NVMe"


def test_register_file_view_shares_bar0():
    bar0 = bytearray(doorbell_region_size(4))
    assert len(bar0) == 0x1000 + 4 * 2 * 4
    regs = ControllerRegisters.view(bar0)
    assert ControllerRegisters.SIZE == 0x1000
    regs.cc.en = 1
    assert bar0[0x14] == 1
    regs.asq.address = 0x8000
    assert u64(bar0, 0x28) == 0x8000
    regs.pmrctl.en = 1
    assert bar0[0xE04] == 1
    bar0[0x1C] = 0x09  # RDY (bit 0), SHST = 10b (bits 3:2)
    assert regs.csts.rdy and regs.csts.shst == Shst.COMPLETE
    regs.write(Reg.AQA, 4, 0x001F001F)
    assert regs.aqa.asqs == 31 and regs.aqa.acqs == 31
    assert regs.read(Reg.CAP, 8) == regs.cap.value
    with pytest.raises(ValueError):
        regs.read(0xFFE, 4)
    with pytest.raises(ValueError):
        regs.write(0x14, 3, 0)
    # round trip of the whole file
    copy = ControllerRegisters.from_bytes(bytes(regs))
    assert copy == regs and copy.cc.en


def test_doorbells():
    assert sq_tail_doorbell(0) == 0x1000
    assert cq_head_doorbell(0) == 0x1004
    assert sq_tail_doorbell(1) == 0x1008
    assert cq_head_doorbell(1) == 0x100C
    # DSTRD = 1: 8-byte stride
    assert cq_head_doorbell(0, 1) == 0x1008
    assert sq_tail_doorbell(3, 1) == 0x1000 + 6 * 8
    assert cq_head_doorbell(3, 2) == 0x1000 + 7 * 16
    for dstrd in (0, 1, 4):
        for qid in (0, 1, 7, 65535):
            assert doorbell_decode(sq_tail_doorbell(qid, dstrd), dstrd) == (qid, False)
            assert doorbell_decode(cq_head_doorbell(qid, dstrd), dstrd) == (qid, True)
    assert doorbell_decode(0xFFC) is None
    assert doorbell_decode(0x1002) is None
    assert doorbell_decode(0x1004, 1) is None  # between two 8-byte doorbells
    with pytest.raises(ValueError):
        sq_tail_doorbell(65536)
    with pytest.raises(ValueError):
        cq_head_doorbell(0, 16)


def test_page_size_and_timeouts():
    assert page_size(0) == 4096
    assert page_size(4) == 65536
    assert page_size(15) == 1 << 27
    for mps in range(16):
        assert mps_for_page_size(page_size(mps)) == mps
    with pytest.raises(ValueError):
        page_size(16)
    with pytest.raises(ValueError):
        mps_for_page_size(6000)
    with pytest.raises(ValueError):
        mps_for_page_size(2048)
    assert timeout_ms(0) == 0 and timeout_ms(1) == 500 and timeout_ms(255) == 127500
