from nvmestack.spec.cqe import Completion
from nvmestack.spec.dptr import SglDescriptor, SglType
from nvmestack.spec.sqe import Command, Fuse, command_class


def test_sqe_size_and_offsets():
    assert Command.SIZE == 64
    c = Command(opcode=0x02, fuse=Fuse.SECOND, psdt=1, cid=0xABCD, nsid=7, mptr=0x1000,
                prp1=0x2000, prp2=0x3000, cdw10=0x10, cdw15=0xF0F0F0F0)
    raw = bytes(c)
    assert raw[0] == 0x02
    assert raw[1] == 0b0100_0010  # PSDT bits 7:6 = 01b, FUSE bits 1:0 = 10b
    assert raw[2:4] == b"\xcd\xab"
    assert raw[4:8] == (7).to_bytes(4, "little")
    assert raw[16:24] == (0x1000).to_bytes(8, "little")
    assert raw[24:32] == (0x2000).to_bytes(8, "little")
    assert raw[32:40] == (0x3000).to_bytes(8, "little")
    assert raw[40:44] == (0x10).to_bytes(4, "little")
    assert raw[60:64] == b"\xf0" * 4
    back = Command.decode(raw)
    assert (back.opcode, back.fuse, back.psdt, back.cid, back.nsid) == (2, 2, 1, 0xABCD, 7)


def test_sgl_in_dptr():
    c = Command(psdt=1)
    c.sgl1.address = 0xDEAD0000
    c.sgl1.length = 4096
    c.sgl1.sgl_type = SglType.LAST_SEGMENT
    raw = bytes(c)
    assert raw[24:32] == (0xDEAD0000).to_bytes(8, "little")
    assert raw[32:36] == (4096).to_bytes(4, "little")
    assert raw[39] == 0x30
    assert SglDescriptor.SIZE == 16


def test_keyed_sgl_descriptor():
    d = SglDescriptor(address=1, keyed_length=0x123456, key=0xAABBCCDD, sgl_type=SglType.KEYED_DATA_BLOCK)
    raw = bytes(d)
    assert raw[8:11] == bytes.fromhex("563412")
    assert raw[11:15] == bytes.fromhex("ddccbbaa")
    assert raw[15] == 0x40


def test_cqe_layout():
    assert Completion.SIZE == 16
    c = Completion(dw0=1, dw1=2, sqhd=3, sqid=4, cid=5, phase=1, sc=0x02, sct=0, dnr=1)
    raw = bytes(c)
    assert raw[8:10] == b"\x03\x00" and raw[10:12] == b"\x04\x00" and raw[12:14] == b"\x05\x00"
    # status word: P bit 0, SC bits 8:1, SCT 11:9, CRD 13:12, M 14, DNR 15
    assert int.from_bytes(raw[14:16], "little") == 0x8000 | (0x02 << 1) | 1
    assert c.status == 0x4002  # Linux: NVME_SC_DNR | NVME_SC_INVALID_FIELD
    c2 = Completion(sct=1, sc=0x0A, more=1, crd=2)
    assert c2.dw3_status == (1 << 14) | (2 << 12) | (1 << 9) | (0x0A << 1)
    assert Completion.decode(bytes(c2)).sct == 1


def test_registry_falls_back_to_common_format():
    assert command_class(True, 0x55) is Command


def test_opcode_names_and_command_sets():
    from nvmestack.spec.opcodes import AdminOpcode, CommandSet, NvmOpcode, opcode_name

    assert [int(o) for o in AdminOpcode if o != 0x7F] == [
        0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0C, 0x0D,
        0x10, 0x11, 0x14, 0x15, 0x18, 0x7C, 0x80, 0x84,
    ]
    assert [int(o) for o in NvmOpcode if o != 0x7F] == [0x00, 0x01, 0x02, 0x04, 0x05, 0x08, 0x09, 0x0C, 0x19]
    assert NvmOpcode.WRITE.data_transfer == 1 and NvmOpcode.READ.data_transfer == 2
    assert opcode_name(0x06, admin=True) == "Identify"
    assert opcode_name(0x7F, admin=True, fctype=0x04) == "Property Get"
    assert opcode_name(0x42, admin=True).startswith("Unknown admin opcode")
    assert (CommandSet.NVM, CommandSet.ZONED) == (0, 2)
