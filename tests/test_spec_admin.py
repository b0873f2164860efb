"""Admin command views (NVMe 2.0 base spec section 5): sizes, opcodes,
dword fields at their spec offsets and bit positions, round trips."""

import struct

import pytest

from nvmestack.spec import admin
from nvmestack.spec.admin import (
    Abort,
    AsyncEventRequest,
    Cns,
    CreateIoCq,
    CreateIoSq,
    DeleteIoCq,
    DeleteIoSq,
    DeviceSelfTest,
    DoorbellBufferConfig,
    FeatureSelect,
    FirmwareCommit,
    FirmwareCommitAction,
    FirmwareImageDownload,
    FormatNvm,
    GetFeatures,
    GetLogPage,
    Identify,
    KeepAlive,
    NamespaceAttachment,
    NamespaceManagement,
    NsAttachmentSelect,
    NsManagementSelect,
    QueuePriority,
    Sanitize,
    SanitizeAction,
    SecureEraseSetting,
    SelfTestCode,
    SetFeatures,
)
from nvmestack.spec.sqe import Command, command_class

# Opcodes as the specification's figure "Opcodes for Admin Commands" lists them.
SPEC_OPCODES = [
    (DeleteIoSq, 0x00),
    (CreateIoSq, 0x01),
    (GetLogPage, 0x02),
    (DeleteIoCq, 0x04),
    (CreateIoCq, 0x05),
    (Identify, 0x06),
    (Abort, 0x08),
    (SetFeatures, 0x09),
    (GetFeatures, 0x0A),
    (AsyncEventRequest, 0x0C),
    (NamespaceManagement, 0x0D),
    (FirmwareCommit, 0x10),
    (FirmwareImageDownload, 0x11),
    (DeviceSelfTest, 0x14),
    (NamespaceAttachment, 0x15),
    (KeepAlive, 0x18),
    (DoorbellBufferConfig, 0x7C),
    (FormatNvm, 0x80),
    (Sanitize, 0x84),
]


def cdw(raw, n):
    """Command Dword n of a raw SQE (dword n is bytes 4n..4n+3)."""
    return struct.unpack_from("<I", raw, 4 * n)[0]


def sqe_with(**dwords):
    """A raw 64-byte SQE with the given command dwords (cdw10=..., ...)."""
    raw = bytearray(64)
    for name, value in dwords.items():
        struct.pack_into("<I", raw, 4 * int(name[3:]), value)
    return raw


@pytest.mark.parametrize("cls,opcode", SPEC_OPCODES, ids=[c.__name__ for c, _ in SPEC_OPCODES])
def test_size_opcode_and_lookup(cls, opcode):
    assert cls.SIZE == 64 and len(cls()) == 64
    assert issubclass(cls, Command) and cls.ADMIN is True
    assert cls.OPCODE == opcode
    assert cls().opcode == opcode and bytes(cls())[0] == opcode
    assert command_class(True, opcode) is cls
    assert bytes(cls())[1:] == bytes(63)  # nothing but the opcode by default


def test_admin_opcodes_do_not_leak_to_io_lookup():
    # Opcode 01h on an I/O queue is Write, not Create I/O SQ.
    assert command_class(False, 0x01) is not CreateIoSq
    assert command_class(True, 0x03) is Command  # reserved


def test_every_admin_class_is_registered():
    classes = {cls for cls, _ in SPEC_OPCODES}
    module_classes = {
        obj for obj in vars(admin).values()
        if isinstance(obj, type) and issubclass(obj, Command) and getattr(obj, "OPCODE", None) is not None
    }
    assert module_classes == classes


# Typed values for every command: built, encoded, decoded through the
# registry, every field reads back.
SAMPLES = {
    DeleteIoSq: dict(qid=5),
    CreateIoSq: dict(qid=5, qsize=63, pc=True, qprio=QueuePriority.HIGH, cqid=4, nvmsetid=1, prp1=0x9000),
    GetLogPage: dict(lid=0x0C, lsp=1, rae=True, numdl=0x3FF, numdu=1, lsi=2, lpol=0x200, lpou=1,
                     ot=False, csi=0, uuidx=0, nsid=0xFFFFFFFF),
    DeleteIoCq: dict(qid=5),
    CreateIoCq: dict(qid=5, qsize=63, pc=True, ien=True, iv=3, prp1=0xA000),
    Identify: dict(cns=Cns.NS, nsid=1, cntid=0, cnssid=0, csi=0, uuidx=0, prp1=0x1000),
    Abort: dict(sqid=1, abort_cid=0x22),
    SetFeatures: dict(fid=0x06, sv=False, cdw11=1),
    GetFeatures: dict(fid=0x07, sel=FeatureSelect.DEFAULT),
    AsyncEventRequest: dict(cid=0x33),
    NamespaceManagement: dict(sel=NsManagementSelect.CREATE, csi=0, prp1=0x4000),
    FirmwareCommit: dict(fs=1, ca=FirmwareCommitAction.ACTIVATE, bpid=False),
    FirmwareImageDownload: dict(numd=0xFF, ofst=0x100),
    DeviceSelfTest: dict(stc=SelfTestCode.SHORT, nsid=0),
    NamespaceAttachment: dict(sel=NsAttachmentSelect.ATTACH, nsid=2),
    KeepAlive: dict(cid=0x44),
    DoorbellBufferConfig: dict(dbbuf_dbs=0x7000, dbbuf_eis=0x8000),
    FormatNvm: dict(lbafl=2, lbafu=1, mset=False, pi=1, pil=False, ses=SecureEraseSetting.USER_DATA_ERASE),
    Sanitize: dict(sanact=SanitizeAction.BLOCK_ERASE, ause=False, owpass=0, oipbp=False, ndas=True, ovrpat=0),
}


def test_samples_cover_every_command():
    assert set(SAMPLES) == {cls for cls, _ in SPEC_OPCODES}


@pytest.mark.parametrize("cls", [c for c, _ in SPEC_OPCODES], ids=lambda c: c.__name__)
def test_round_trip_through_bytes(cls):
    values = SAMPLES[cls]
    cmd = cls(**{"cid": 0x1234, **values})
    raw = bytes(cmd)
    back = command_class(True, raw[0]).decode(raw)
    assert type(back) is cls and back == cmd
    for name, value in values.items():
        assert getattr(back, name) == value, name
    assert back.cid == values.get("cid", 0x1234)
    # A private writable copy, then a view over a bigger buffer at an offset.
    assert cls.from_bytes(raw) == cmd
    big = bytearray(200)
    big[100:164] = raw
    assert cls.view(big, 100) == cmd


def test_queue_management_fields():
    c = CreateIoSq(qid=3, qsize=1023, pc=1, qprio=QueuePriority.LOW, cqid=2, nvmsetid=5, prp1=0x10000)
    raw = bytes(c)
    assert cdw(raw, 10) == (1023 << 16) | 3  # QID 15:0, QSIZE 31:16
    assert cdw(raw, 11) == (2 << 16) | (3 << 1) | 1  # CQID 31:16, QPRIO 2:1, PC 0
    assert cdw(raw, 12) == 5  # NVMSETID 15:0
    assert raw[24:32] == (0x10000).to_bytes(8, "little")
    assert c.entries == 1024

    q = CreateIoCq.view(sqe_with(cdw10=(63 << 16) | 7, cdw11=(9 << 16) | 0b11))
    assert (q.qid, q.qsize, q.pc, q.ien, q.iv) == (7, 63, True, True, 9)
    q2 = CreateIoCq(qid=1, entries=256, ien=True, iv=4)
    assert cdw(bytes(q2), 10) == (255 << 16) | 1 and cdw(bytes(q2), 11) == (4 << 16) | 2

    for cls in (DeleteIoSq, DeleteIoCq):
        d = cls(qid=0xBEEF)
        assert cdw(bytes(d), 10) == 0xBEEF
        assert cls.view(sqe_with(cdw10=0x1234_0042)).qid == 0x42

    with pytest.raises(ValueError):
        CreateIoSq(entries=0)
    with pytest.raises(ValueError):
        CreateIoSq(qprio=4)


def test_get_log_page_fields():
    raw = sqe_with(cdw10=(0xABCD << 16) | (1 << 15) | (0x55 << 8) | 0x02,
                   cdw11=(0x7777 << 16) | 0x0003,
                   cdw12=0x1000, cdw13=0x2,
                   cdw14=(0x01 << 24) | (1 << 23) | 0x45)
    g = GetLogPage.view(raw)
    assert (g.lid, g.lsp, g.rae, g.numdl) == (0x02, 0x55, True, 0xABCD)
    assert (g.numdu, g.lsi) == (0x0003, 0x7777)
    assert (g.lpol, g.lpou, g.offset) == (0x1000, 0x2, 0x2_0000_1000)
    assert (g.ot, g.csi, g.uuidx) == (True, 0x01, 0x45)
    assert g.numd == 0x3ABCD and g.length == (0x3ABCD + 1) * 4


def test_get_log_page_derived_set_both_halves():
    g = GetLogPage(lid=0x02, nsid=0xFFFFFFFF, rae=True, length=0x40000 + 512, offset=(5 << 32) | 8)
    raw = bytes(g)
    numd = (0x40000 + 512) // 4 - 1
    assert cdw(raw, 10) == ((numd & 0xFFFF) << 16) | (1 << 15) | 0x02
    assert cdw(raw, 11) == numd >> 16
    assert (cdw(raw, 12), cdw(raw, 13)) == (8, 5)
    assert raw[4:8] == b"\xff\xff\xff\xff"
    g.numd = 0
    assert g.length == 4 and (g.numdl, g.numdu) == (0, 0)
    with pytest.raises(ValueError):
        g.length = 6  # not whole dwords
    with pytest.raises(ValueError):
        g.length = 0
    with pytest.raises(ValueError):
        g.offset = 2  # byte offsets are dword aligned
    g.ot = True
    g.offset = 3  # an index offset need not be
    assert g.lpol == 3
    with pytest.raises(ValueError):
        g.lsp = 0x80  # 7 bits


def test_identify_fields():
    i = Identify(cns=Cns.CTRL_LIST, cntid=0x1234, cnssid=0x0042, csi=2, uuidx=3, nsid=1)
    raw = bytes(i)
    assert cdw(raw, 10) == (0x1234 << 16) | 0x13
    assert cdw(raw, 11) == (2 << 24) | 0x42
    assert cdw(raw, 14) == 3
    back = Identify.view(raw)
    assert (back.cns, back.cntid, back.cnssid, back.csi, back.uuidx) == (0x13, 0x1234, 0x42, 2, 3)
    with pytest.raises(ValueError):
        Identify(uuidx=0x80)  # UUID index is 7 bits


def test_cns_values():
    expected = {
        "NS": 0x00, "CTRL": 0x01, "NS_ACTIVE_LIST": 0x02, "NS_DESC_LIST": 0x03, "NVMSET_LIST": 0x04,
        "CSI_NS": 0x05, "CSI_CTRL": 0x06, "CSI_NS_ACTIVE_LIST": 0x07, "CSI_INDEPENDENT_NS": 0x08,
        "ALLOCATED_NS_LIST": 0x10, "ALLOCATED_NS": 0x11, "NS_CTRL_LIST": 0x12, "CTRL_LIST": 0x13,
        "PRIMARY_CTRL_CAP": 0x14, "SECONDARY_CTRL_LIST": 0x15, "NS_GRANULARITY": 0x16,
        "UUID_LIST": 0x17, "DOMAIN_LIST": 0x18, "ENDURANCE_GROUP_LIST": 0x19,
        "CSI_ALLOCATED_NS_LIST": 0x1A, "CSI_ALLOCATED_NS": 0x1B, "COMMAND_SET_STRUCTURE": 0x1C,
    }
    assert {c.name: c.value for c in Cns} == expected


def test_abort_keeps_its_own_cid():
    a = Abort(cid=0x0007, sqid=3, abort_cid=0xCAFE)
    raw = bytes(a)
    assert raw[2:4] == b"\x07\x00"  # the Abort's own command identifier
    assert cdw(raw, 10) == (0xCAFE << 16) | 3  # SQID 15:0, CID 31:16
    assert Abort.view(raw).abort_cid == 0xCAFE and Abort.view(raw).cid == 7


def test_features_fields():
    s = SetFeatures(fid=0x07, sv=True, cdw11=(15 << 16) | 15, uuidx=1)
    raw = bytes(s)
    assert cdw(raw, 10) == (1 << 31) | 0x07
    assert cdw(raw, 11) == 0x000F000F
    assert cdw(raw, 14) == 1
    g = GetFeatures(fid=0x0B, sel=FeatureSelect.SUPPORTED)
    assert cdw(bytes(g), 10) == (3 << 8) | 0x0B
    v = GetFeatures.view(sqe_with(cdw10=(2 << 8) | 0x06))
    assert (v.fid, v.sel) == (0x06, FeatureSelect.SAVED)
    assert [s.value for s in FeatureSelect] == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        GetFeatures(sel=8)  # 3 bits


def test_namespace_management_and_attachment():
    m = NamespaceManagement(sel=NsManagementSelect.DELETE, csi=2, nsid=4)
    assert cdw(bytes(m), 10) == 1 and cdw(bytes(m), 11) == 2 << 24
    a = NamespaceAttachment(sel=NsAttachmentSelect.DETACH, nsid=4)
    assert cdw(bytes(a), 10) == 1
    assert NamespaceAttachment.view(sqe_with(cdw10=0xFFFFFFF0)).sel == NsAttachmentSelect.ATTACH
    assert (NsManagementSelect.CREATE, NsAttachmentSelect.ATTACH) == (0, 0)
    with pytest.raises(ValueError):
        NamespaceManagement(sel=16)


def test_firmware_commands():
    c = FirmwareCommit(fs=2, ca=FirmwareCommitAction.REPLACE_AND_ACTIVATE_NOW, bpid=True)
    assert cdw(bytes(c), 10) == (1 << 31) | (3 << 3) | 2
    v = FirmwareCommit.view(sqe_with(cdw10=(7 << 3) | 7))
    assert (v.fs, v.ca) == (7, FirmwareCommitAction.ACTIVATE_BOOT_PARTITION)
    assert sorted(a.value for a in FirmwareCommitAction) == [0, 1, 2, 3, 6, 7]
    with pytest.raises(ValueError):
        FirmwareCommit(fs=8)

    d = FirmwareImageDownload(length=4096, offset=8192, prp1=0x5000)
    raw = bytes(d)
    assert cdw(raw, 10) == 1023  # NUMD, 0-based dwords
    assert cdw(raw, 11) == 2048  # OFST, dwords
    assert (d.numd, d.ofst) == (1023, 2048)
    with pytest.raises(ValueError):
        FirmwareImageDownload(offset=6)
    with pytest.raises(ValueError):
        FirmwareImageDownload(length=2)


def test_device_self_test():
    t = DeviceSelfTest(stc=SelfTestCode.EXTENDED, nsid=0xFFFFFFFF)
    assert cdw(bytes(t), 10) == 2
    assert DeviceSelfTest.view(sqe_with(cdw10=0xF)).stc == SelfTestCode.ABORT
    assert (SelfTestCode.SHORT, SelfTestCode.VENDOR_SPECIFIC) == (1, 0xE)


def test_doorbell_buffer_config_uses_data_pointer():
    d = DoorbellBufferConfig(dbbuf_dbs=0x1000, dbbuf_eis=0x2000)
    raw = bytes(d)
    assert raw[24:32] == (0x1000).to_bytes(8, "little")
    assert raw[32:40] == (0x2000).to_bytes(8, "little")
    assert (d.prp1, d.prp2) == (0x1000, 0x2000)


def test_format_nvm_fields_and_lbaf():
    f = FormatNvm(lbaf=0x15, mset=True, pi=3, pil=True, ses=SecureEraseSetting.CRYPTOGRAPHIC_ERASE, nsid=1)
    raw = bytes(f)
    # LBAFL 3:0 = 5, MSET 4, PI 7:5 = 3, PIL 8, SES 11:9 = 2, LBAFU 13:12 = 1
    assert cdw(raw, 10) == (1 << 12) | (2 << 9) | (1 << 8) | (3 << 5) | (1 << 4) | 5
    assert (f.lbafl, f.lbafu) == (5, 1)
    v = FormatNvm.view(sqe_with(cdw10=(3 << 12) | 0xF))
    assert v.lbaf == 63
    with pytest.raises(ValueError):
        f.lbaf = 64
    with pytest.raises(ValueError):
        FormatNvm(ses=8)
    assert [s.value for s in SecureEraseSetting] == [0, 1, 2]


def test_sanitize_fields():
    s = Sanitize(sanact=SanitizeAction.OVERWRITE, ause=True, owpass=15, oipbp=True, ndas=True,
                 ovrpat=0xA5A5A5A5)
    raw = bytes(s)
    assert cdw(raw, 10) == (1 << 9) | (1 << 8) | (15 << 4) | (1 << 3) | 3
    assert cdw(raw, 11) == 0xA5A5A5A5
    v = Sanitize.view(sqe_with(cdw10=(1 << 9) | 4))
    assert (v.sanact, v.ndas, v.ause) == (SanitizeAction.CRYPTO_ERASE, True, False)
    assert [a.value for a in SanitizeAction] == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        Sanitize(sanact=8)


def test_views_share_memory_with_a_ring():
    ring = bytearray(64 * 4)
    slot = Identify.view(ring, 64 * 2)
    slot.opcode = Identify.OPCODE
    slot.cns = Cns.NS_ACTIVE_LIST
    assert ring[128] == 0x06 and ring[128 + 40] == 0x02
    ring[128 + 42] = 0x11
    assert slot.cntid == 0x11


def test_unknown_keyword_and_read_only_views():
    with pytest.raises(TypeError):
        Identify(nope=1)
    v = Identify.decode(bytes(Identify(cns=1)))
    with pytest.raises(TypeError):
        v.cns = 2
