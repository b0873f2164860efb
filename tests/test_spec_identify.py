"""Identify data structures: sizes, offsets and bits against NVMe 2.0 base
spec 5.17.2 / NVM Command Set 1.0 4.1.5, plus list helpers."""

import struct
import uuid

import pytest

from nvmestack.spec.identify import (
    CTRL_LIST_MAX,
    IDENTIFY_DATA_SIZE,
    NS_LIST_MAX,
    Cmic,
    ControllerList,
    ControllerType,
    IdentifyController,
    IdentifyControllerNvm,
    IdentifyNamespace,
    IdentifyIoCommandSet,
    IdentifyNamespaceIndependent,
    IoCommandSetVector,
    LbaFormat,
    NamespaceList,
    NidType,
    NsIdDescriptor,
    Oacs,
    Oncs,
    PowerScale,
    PowerStateDescriptor,
    SglSupport,
    VwcFlush,
    decode_ns_id_descriptors,
    encode_ns_id_descriptors,
    iter_ns_id_descriptors,
)
from nvmestack.spec.layout import Bits

ALL = [
    PowerStateDescriptor,
    IdentifyController,
    LbaFormat,
    IdentifyNamespace,
    IdentifyControllerNvm,
    IdentifyNamespaceIndependent,
    NamespaceList,
    ControllerList,
    NsIdDescriptor,
]


def le(value, size):
    return value.to_bytes(size, "little")


# ---------------------------------------------------------------- layout


def test_sizes():
    assert IDENTIFY_DATA_SIZE == 4096
    for cls in (IdentifyController, IdentifyNamespace, IdentifyControllerNvm, NamespaceList, ControllerList):
        assert cls.SIZE == 4096
        assert len(bytes(cls())) == 4096
    assert PowerStateDescriptor.SIZE == 32
    assert LbaFormat.SIZE == 4
    assert NsIdDescriptor.SIZE == 4
    assert NS_LIST_MAX == 1024 and CTRL_LIST_MAX == 2047


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_fields_and_reserved_tile_the_structure(cls):
    """Whole fields never overlap, every bit field lies inside a whole field
    of the same word, and whole fields plus RESERVED cover every byte once."""
    owner = [None] * cls.SIZE
    whole = {n: f for n, f in cls.FIELDS.items() if not isinstance(f, Bits)}
    for name, f in whole.items():
        for b in range(f.offset, f.end):
            assert owner[b] is None, f"{name} overlaps {owner[b]} at byte {b}"
            owner[b] = name
    for off, length in cls.RESERVED:
        for b in range(off, off + length):
            assert owner[b] is None, f"reserved {off}+{length} overlaps {owner[b]} at byte {b}"
            owner[b] = "reserved"
    bits_only = {n: f for n, f in cls.FIELDS.items() if isinstance(f, Bits)}
    for name, f in bits_only.items():
        covering = {owner[b] for b in range(f.offset, f.end)}
        if covering == {None}:  # a bit field standing alone for its word
            for b in range(f.offset, f.end):
                owner[b] = name
        else:
            parent = whole[owner[f.offset]]
            assert (parent.offset, parent.size) == (f.offset, f.size), f"{name} not aligned with {parent.name}"
    missing = [b for b, o in enumerate(owner) if o is None]
    assert not missing, f"bytes not described: {missing[:10]}..."


# ---------------------------------------------------------------- Identify Controller

CTRL_OFFSETS = {
    # name: (offset, size) per NVMe 2.0 figure 275 / libnvme struct nvme_id_ctrl
    "vid": (0, 2), "ssvid": (2, 2), "rab": (72, 1), "ieee": (73, 3), "cmic": (76, 1),
    "mdts": (77, 1), "cntlid": (78, 2), "ver": (80, 4), "rtd3r": (84, 4), "rtd3e": (88, 4),
    "oaes": (92, 4), "ctratt": (96, 4), "rrls": (100, 2), "cntrltype": (111, 1),
    "crdt1": (128, 2), "crdt2": (130, 2), "crdt3": (132, 2), "nvmsr": (253, 1), "vwci": (254, 1),
    "mec": (255, 1), "oacs": (256, 2), "acl": (258, 1), "aerl": (259, 1), "frmw": (260, 1),
    "lpa": (261, 1), "elpe": (262, 1), "npss": (263, 1), "avscc": (264, 1), "apsta": (265, 1),
    "wctemp": (266, 2), "cctemp": (268, 2), "mtfa": (270, 2), "hmpre": (272, 4), "hmmin": (276, 4),
    "tnvmcap": (280, 16), "unvmcap": (296, 16), "rpmbs": (312, 4), "edstt": (316, 2),
    "dsto": (318, 1), "fwug": (319, 1), "kas": (320, 2), "hctma": (322, 2), "mntmt": (324, 2),
    "mxtmt": (326, 2), "sanicap": (328, 4), "hmminds": (332, 4), "hmmaxd": (336, 2),
    "nsetidmax": (338, 2), "endgidmax": (340, 2), "anatt": (342, 1), "anacap": (343, 1),
    "anagrpmax": (344, 4), "nanagrpid": (348, 4), "pels": (352, 4), "domainid": (356, 2),
    "megcap": (368, 16), "sqes": (512, 1), "cqes": (513, 1), "maxcmd": (514, 2), "nn": (516, 4),
    "oncs": (520, 2), "fuses": (522, 2), "fna": (524, 1), "vwc": (525, 1), "awun": (526, 2),
    "awupf": (528, 2), "icsvscc": (530, 1), "nwpc": (531, 1), "acwu": (532, 2), "ocfs": (534, 2),
    "sgls": (536, 4), "mnan": (540, 4), "maxdna": (544, 16), "maxcna": (560, 4),
    "ioccsz": (1792, 4), "iorcsz": (1796, 4), "icdoff": (1800, 2), "fcatt": (1802, 1),
    "msdbd": (1803, 1), "ofcs": (1804, 2),
}


@pytest.mark.parametrize("name", sorted(CTRL_OFFSETS))
def test_ctrl_integer_field_offsets(name):
    off, size = CTRL_OFFSETS[name]
    value = int.from_bytes(bytes(range(0x81, 0x81 + size)), "little")  # distinct non-zero bytes
    raw = bytearray(4096)
    raw[off : off + size] = le(value, size)
    assert getattr(IdentifyController.decode(raw), name) == value
    # encode writes exactly those bytes and nothing else
    out = bytes(IdentifyController(**{name: value}))
    assert out[off : off + size] == le(value, size)
    assert out[:off] == bytes(off) and out[off + size :] == bytes(4096 - off - size)


def test_ctrl_text_fields():
    raw = bytearray(4096)
    raw[4:24] = b"SN123".ljust(20, b" ")
    raw[24:64] = b"nvmestack model".ljust(40, b" ")
    raw[64:72] = b"1.0".ljust(8, b" ")
    raw[768:1024] = b"nqn.2014-08.org.example:sub1".ljust(256, b"\0")
    c = IdentifyController.decode(raw)
    assert (c.sn, c.mn, c.fr) == ("SN123", "nvmestack model", "1.0")
    assert c.subnqn == "nqn.2014-08.org.example:sub1"
    assert bytes(IdentifyController(sn="SN123", mn="nvmestack model", fr="1.0",
                                    subnqn="nqn.2014-08.org.example:sub1")) == bytes(raw)


def test_ctrl_text_too_long_and_utf8_nqn():
    with pytest.raises(ValueError, match="sn"):
        IdentifyController(sn="x" * 21)
    with pytest.raises(ValueError, match="fr"):
        IdentifyController(fr="123456789")
    c = IdentifyController(subnqn="nqn.2014-08.org.example:é")
    assert bytes(c)[768:768 + 26] == "nqn.2014-08.org.example:é".encode()
    assert c.subnqn.endswith("é")


def test_ctrl_raw_fields_and_vs():
    raw = bytearray(4096)
    raw[112:128] = bytes(range(16))
    raw[3072:4096] = b"\xa5" * 1024
    c = IdentifyController.decode(raw)
    assert bytes(c.fguid) == bytes(range(16))
    assert bytes(c.vs) == b"\xa5" * 1024
    c.fguid = b"\xff" * 16  # decode over bytearray is writable
    assert raw[112:128] == b"\xff" * 16
    with pytest.raises(ValueError):
        c.fguid = b"\x00" * 15


def test_ctrl_ieee_oui_byte_order():
    raw = bytearray(4096)
    raw[73:76] = bytes([0xE4, 0xD2, 0x5C])  # Intel OUI 5CD2E4h, least significant byte first
    assert IdentifyController.decode(raw).ieee == 0x5CD2E4


def test_ctrl_version_and_128_bit_capacity():
    c = IdentifyController(ver=0x00020000, tnvmcap=(1 << 64) + 5, unvmcap=3)
    assert (c.ver_mjr, c.ver_mnr, c.ver_ter) == (2, 0, 0)
    raw = bytes(c)
    assert raw[80:84] == b"\x00\x00\x02\x00"
    assert raw[280:296] == le((1 << 64) + 5, 16)
    assert raw[296:312] == le(3, 16)
    c.ver_mnr = 1
    assert c.ver == 0x00020100


def test_ctrl_queue_entry_sizes():
    raw = bytearray(4096)
    raw[512] = 0x66
    raw[513] = 0x44
    c = IdentifyController.decode(raw)
    assert (c.sqes_min, c.sqes_max, c.cqes_min, c.cqes_max) == (6, 6, 4, 4)
    c2 = IdentifyController(sqes_min=6, sqes_max=7, cqes_min=4, cqes_max=5)
    assert bytes(c2)[512:514] == bytes([0x76, 0x54])
    with pytest.raises(ValueError):
        c2.sqes_min = 16


def test_ctrl_oacs_oncs_bits():
    c = IdentifyController(oacs_format=True, oacs_fw=True, oacs_ns_mgmt=True, oacs_dbbuf=True)
    assert bytes(c)[256:258] == le((1 << 1) | (1 << 2) | (1 << 3) | (1 << 8), 2)
    assert Oacs(c.oacs) == Oacs.FORMAT | Oacs.FW | Oacs.NS_MGMT | Oacs.DBBUF_CONFIG
    raw = bytearray(4096)
    raw[520:522] = le(Oncs.DSM | Oncs.WRITE_ZEROES | Oncs.COPY, 2)
    d = IdentifyController.decode(raw)
    assert d.oncs_dsm and d.oncs_write_zeroes and d.oncs_copy
    assert not (d.oncs_compare or d.oncs_verify or d.oncs_reservations)
    assert raw[521] == 0x01  # COPY is bit 8, in the second byte
    e = IdentifyController(oncs_timestamp=1, oncs_save_select=1)
    assert bytes(e)[520] == (1 << 6) | (1 << 4)


def test_ctrl_sgls_bits():
    raw = bytearray(4096)
    raw[536:540] = le(0b10 | (1 << 2) | (1 << 16) | (1 << 20), 4)
    c = IdentifyController.decode(raw)
    assert c.sgls_support == SglSupport.DWORD_ALIGNED
    assert c.sgls_keyed and c.sgls_bit_bucket and c.sgls_offset
    assert not (c.sgls_mptr_contig or c.sgls_oversize or c.sgls_mptr_sgl or c.sgls_transport)
    t = IdentifyController(sgls_support=SglSupport.SUPPORTED, sgls_transport=True)
    assert bytes(t)[536:540] == le(1 | (1 << 21), 4)


def test_ctrl_frmw_lpa_fna_vwc_cmic_fuses_sanicap_bits():
    c = IdentifyController(frmw_slot1_ro=1, frmw_slots=7, frmw_no_reset=1)
    assert bytes(c)[260] == 0b0001_1111
    c = IdentifyController(frmw_slots=3)
    assert bytes(c)[260] == 0b0000_0110
    raw = bytearray(4096)
    raw[261] = 0b0001_0110
    d = IdentifyController.decode(raw)
    assert (d.lpa_smart_per_ns, d.lpa_cmd_effects, d.lpa_extended, d.lpa_telemetry,
            d.lpa_persistent_event) == (False, True, True, False, True)
    assert bytes(IdentifyController(fna_crypto_erase=1, fna_format_all=1))[524] == 0b101
    v = IdentifyController(vwc_present=1, vwc_flush=VwcFlush.BROADCAST_SUPPORTED)
    assert bytes(v)[525] == 0b111
    m = IdentifyController(cmic_multi_ctrl=1, cmic_ana=1)
    assert bytes(m)[76] == 0b1010
    assert Cmic(m.cmic) == Cmic.MULTI_CTRL | Cmic.ANA_REPORTING
    assert bytes(IdentifyController(fuses_compare_write=1))[522:524] == b"\x01\x00"
    s = IdentifyController(sanicap_bes=1, sanicap_ndi=1, sanicap_nodmmas=2)
    assert bytes(s)[328:332] == le((1 << 1) | (1 << 29) | (2 << 30), 4)


def test_ctrl_fabrics_bits_and_type():
    c = IdentifyController(fcatt_static=1, ofcs_disconnect=1, cntrltype=ControllerType.IO)
    raw = bytes(c)
    assert raw[1802] == 1 and raw[1804:1806] == b"\x01\x00" and raw[111] == 1


def test_ctrl_power_state_array():
    raw = bytearray(4096)
    # PSD2 at 2048 + 2 * 32: MP = 2500 (25.00 W), NOPS set, ENLAT 5, EXLAT 7
    base = 2048 + 2 * 32
    raw[base : base + 2] = le(2500, 2)
    raw[base + 3] = 0b10
    raw[base + 4 : base + 8] = le(5, 4)
    raw[base + 8 : base + 12] = le(7, 4)
    raw[263] = 2  # NPSS: three power states
    c = IdentifyController.decode(raw)
    assert len(c.psd) == 32
    ps = c.psd[2]
    assert (ps.mp, ps.nops, ps.mxps, ps.enlat, ps.exlat) == (2500, True, False, 5, 7)
    assert ps.max_power_watts == pytest.approx(25.0)
    assert len(c.power_states()) == 3
    # writing through the array view lands at the right place
    c.psd[31].actp = 0xBEEF
    assert raw[2048 + 31 * 32 + 20 : 2048 + 31 * 32 + 22] == b"\xef\xbe"
    c.psd[0] = PowerStateDescriptor(mp=900, enlat=1)
    assert raw[2048:2050] == le(900, 2) and raw[2052:2056] == le(1, 4)
    with pytest.raises(IndexError):
        c.psd[32]


def test_ctrl_round_trip():
    c = IdentifyController(vid=0x1B36, ssvid=0x1AF4, sn="deadbeef", mn="nvmestack", fr="0.1",
                           rab=6, ieee=0x525400, mdts=5, cntlid=1, ver=0x20000, oacs=0x1F,
                           sqes=0x66, cqes=0x44, nn=256, oncs=0x1FF, sgls=0x30001,
                           subnqn="nqn.2019-08.org.qemu:x", kas=100, npss=1)
    c.psd[1] = PowerStateDescriptor(mp=10, nops=1)
    back = IdentifyController.from_bytes(bytes(c))
    assert back == c
    assert back.to_dict()["sn"] == "deadbeef"
    assert back.to_dict()["psd"][1]["mp"] == 10


# ---------------------------------------------------------------- Power State Descriptor


def test_power_state_descriptor_layout():
    raw = bytearray(32)
    raw[0:2] = le(0x1234, 2)
    raw[3] = 0b01  # MXPS
    raw[4:8] = le(0x11223344, 4)
    raw[8:12] = le(0x55667788, 4)
    raw[12], raw[13], raw[14], raw[15] = 1, 2, 3, 4
    raw[16:18] = le(500, 2)
    raw[18] = PowerScale.WATT_0_01 << 6
    raw[20:22] = le(800, 2)
    raw[22] = (PowerScale.WATT_0_0001 << 6) | 2  # APS, APW
    p = PowerStateDescriptor.decode(raw)
    assert (p.mp, p.mxps, p.nops) == (0x1234, True, False)
    assert (p.enlat, p.exlat) == (0x11223344, 0x55667788)
    assert (p.rrt, p.rrl, p.rwt, p.rwl) == (1, 2, 3, 4)
    assert (p.idlp, p.ips, p.actp, p.aps, p.apw) == (500, 2, 800, 1, 2)
    assert p.max_power_watts == pytest.approx(0x1234 * 0.0001)
    assert p.idle_power_watts == pytest.approx(5.0)
    assert p.active_power_watts == pytest.approx(0.08)
    assert bytes(PowerStateDescriptor(mp=0x1234, mxps=1, enlat=0x11223344, exlat=0x55667788, rrt=1,
                                      rrl=2, rwt=3, rwl=4, idlp=500, ips=2, actp=800, aps=1,
                                      apw=2)) == bytes(raw)


def test_power_state_bad_values():
    with pytest.raises(ValueError):
        PowerStateDescriptor(rrt=32)  # 5 bits
    with pytest.raises(ValueError):
        PowerStateDescriptor(apw=8)  # 3 bits
    assert PowerStateDescriptor(ips=0).idle_power_watts is None


# ---------------------------------------------------------------- Identify Namespace

NS_OFFSETS = {
    "nsze": (0, 8), "ncap": (8, 8), "nuse": (16, 8), "nsfeat": (24, 1), "nlbaf": (25, 1),
    "flbas": (26, 1), "mc": (27, 1), "dpc": (28, 1), "dps": (29, 1), "nmic": (30, 1),
    "rescap": (31, 1), "fpi": (32, 1), "dlfeat": (33, 1), "nawun": (34, 2), "nawupf": (36, 2),
    "nacwu": (38, 2), "nabsn": (40, 2), "nabo": (42, 2), "nabspf": (44, 2), "noiob": (46, 2),
    "nvmcap": (48, 16), "npwg": (64, 2), "npwa": (66, 2), "npdg": (68, 2), "npda": (70, 2),
    "nows": (72, 2), "mssrl": (74, 2), "mcl": (76, 4), "msrc": (80, 1), "nulbaf": (82, 1),
    "anagrpid": (92, 4), "nsattr": (99, 1), "nvmsetid": (100, 2), "endgid": (102, 2),
}


@pytest.mark.parametrize("name", sorted(NS_OFFSETS))
def test_ns_integer_field_offsets(name):
    off, size = NS_OFFSETS[name]
    value = int.from_bytes(bytes(range(0x91, 0x91 + size)), "little")
    raw = bytearray(4096)
    raw[off : off + size] = le(value, size)
    assert getattr(IdentifyNamespace.decode(raw), name) == value
    out = bytes(IdentifyNamespace(**{name: value}))
    assert out[off : off + size] == le(value, size)
    assert out.count(0) == 4096 - size


def test_ns_identifiers():
    raw = bytearray(4096)
    raw[104:120] = bytes(range(1, 17))
    raw[120:128] = bytes(range(0xA0, 0xA8))
    raw[3712:4096] = b"\x5a" * 384
    ns = IdentifyNamespace.decode(bytes(raw))
    assert bytes(ns.nguid) == bytes(range(1, 17))
    assert bytes(ns.eui64) == bytes(range(0xA0, 0xA8))
    assert bytes(ns.vs) == b"\x5a" * 384
    with pytest.raises(TypeError):  # a view over bytes is read-only
        ns.nsze = 1


def test_ns_lba_formats_and_flbas():
    raw = bytearray(4096)
    raw[0:8] = le(1 << 21, 8)
    raw[25] = 1  # two formats
    raw[128:132] = struct.pack("<HBB", 0, 9, 2)  # LBAF0: 512 bytes, no metadata, Good
    raw[132:136] = struct.pack("<HBB", 8, 12, 0)  # LBAF1: 4096 + 8, Best
    raw[26] = 0x11  # format 1, extended
    ns = IdentifyNamespace.decode(raw)
    assert ns.flbas_index_lo == 1 and ns.flbas_extended and ns.flbas_index_hi == 0
    assert ns.lba_format_index == 1
    assert (ns.block_size, ns.metadata_size) == (4096, 8)
    assert ns.lbaf[0].block_size == 512 and ns.lbaf[0].rp == 2
    assert [f.lbads for f in ns.lba_formats()] == [9, 12]
    assert ns.lbaf[2].block_size == 0  # not an available format
    assert len(ns.lbaf) == 64


def test_ns_flbas_upper_index_bits():
    raw = bytearray(4096)
    raw[26] = 0b0100_0011  # bits 6:5 = 10b, bits 3:0 = 3 -> index 0x23 = 35
    raw[128 + 35 * 4 + 2] = 13
    ns = IdentifyNamespace.decode(raw)
    assert ns.lba_format_index == 35
    assert ns.block_size == 8192
    n2 = IdentifyNamespace()
    n2.lba_format_index = 63
    assert bytes(n2)[26] == 0b0110_1111
    n2.flbas_extended = True
    n2.lba_format_index = 16
    assert bytes(n2)[26] == 0b0011_0000  # extended bit kept
    with pytest.raises(ValueError):
        n2.lba_format_index = 64


def test_ns_dps_and_flags():
    ns = IdentifyNamespace(dps_pi_type=3, dps_pi_first=1, nmic_shared=1, mc_separate=1,
                           nsfeat_thin=1, nsfeat_opt_perf=1, dlfeat_read=1, dlfeat_write_zeroes=1,
                           fpi_supported=1, fpi_remaining=40, nsattr_write_protected=1)
    raw = bytes(ns)
    assert raw[29] == 0b1011
    assert raw[30] == 1 and raw[27] == 0b10
    assert raw[24] == 0b1_0001
    assert raw[33] == 0b1001
    assert raw[32] == 0x80 | 40
    assert raw[99] == 1
    with pytest.raises(ValueError):
        IdentifyNamespace(dps_pi_type=8)


def test_lba_format_struct():
    f = LbaFormat(ms=16, lbads=12, rp=3)
    assert bytes(f) == b"\x10\x00\x0c\x03"
    assert LbaFormat.decode(b"\x08\x00\x09\x01").block_size == 512
    with pytest.raises(ValueError):
        LbaFormat(rp=4)


def test_ns_round_trip():
    ns = IdentifyNamespace(nsze=1000, ncap=1000, nuse=10, nlbaf=1, nvmcap=512000, anagrpid=1)
    ns.lbaf[0] = LbaFormat(lbads=9)
    ns.lbaf[1] = LbaFormat(ms=8, lbads=12)
    ns.lba_format_index = 1
    ns.nguid = uuid.UUID(int=0x0123456789ABCDEF).bytes
    back = IdentifyNamespace.from_bytes(ns.encode())
    assert back == ns and back.block_size == 4096
    assert back.to_dict()["lbaf"][1] == {"ms": 8, "lbads": 12, "rp": 0}


# ---------------------------------------------------------------- I/O command set specific controller


def test_identify_controller_nvm():
    raw = bytearray(4096)
    raw[0:4] = bytes([1, 2, 3, 4])
    raw[4:8] = le(0xAABBCCDD, 4)
    raw[8:16] = le(0x1122334455667788, 8)
    c = IdentifyControllerNvm.decode(raw)
    assert (c.vsl, c.wzsl, c.wusl, c.dmrl, c.dmrsl, c.dmsl) == (1, 2, 3, 4, 0xAABBCCDD, 0x1122334455667788)
    assert bytes(IdentifyControllerNvm(vsl=1, wzsl=2, wusl=3, dmrl=4, dmrsl=0xAABBCCDD,
                                       dmsl=0x1122334455667788)) == bytes(raw)


# ---------------------------------------------------------------- I/O command set data structure (CNS 1Ch)


def test_identify_io_command_set():
    assert IdentifyIoCommandSet.SIZE == 4096
    ids = IdentifyIoCommandSet()
    ids.iocsc = [IoCommandSetVector.NVM, IoCommandSetVector.NVM | IoCommandSetVector.ZONED]
    raw = bytes(ids)
    # IOCCS0 at bytes 7:0, IOCCS1 at 15:8, IOCCS511 at 4095:4088; little endian.
    assert raw[0:8] == le(1, 8) and raw[8:16] == le(0b101, 8) and raw[16:] == bytes(4080)
    raw = bytearray(raw)
    raw[4088:4096] = le(1 << 1, 8)
    back = IdentifyIoCommandSet.decode(raw)
    assert back.iocsc[511] == IoCommandSetVector.KEY_VALUE
    assert back.combinations() == [1, 5]
    assert (IoCommandSetVector.SUBSYSTEM_LOCAL_MEMORY, IoCommandSetVector.COMPUTATIONAL_PROGRAMS) == (8, 16)


# ---------------------------------------------------------------- namespace list


def test_namespace_list():
    nl = NamespaceList.from_nsids([1, 2, 7, 0xFFFFFFFE])
    raw = bytes(nl)
    assert raw[0:4] == le(1, 4) and raw[8:12] == le(7, 4) and raw[12:16] == le(0xFFFFFFFE, 4)
    assert raw[16:] == bytes(4096 - 16)
    assert NamespaceList.decode(raw).nsids() == [1, 2, 7, 0xFFFFFFFE]
    full = list(range(1, 1025))
    assert NamespaceList.from_nsids(full).nsids() == full
    assert NamespaceList().nsids() == []
    # reading stops at the first zero entry
    raw2 = bytearray(4096)
    raw2[0:4] = le(5, 4)
    raw2[8:12] = le(9, 4)
    assert NamespaceList.decode(raw2).nsids() == [5]


def test_namespace_list_rejects_bad_lists():
    with pytest.raises(ValueError, match="at most 1024"):
        NamespaceList.from_nsids(range(1, 1026))
    with pytest.raises(ValueError, match="increase"):
        NamespaceList.from_nsids([3, 2])
    with pytest.raises(ValueError, match="increase"):
        NamespaceList.from_nsids([3, 3])
    with pytest.raises(ValueError, match="valid"):
        NamespaceList.from_nsids([0])
    with pytest.raises(ValueError, match="valid"):
        NamespaceList.from_nsids([0xFFFFFFFF])


def test_namespace_list_set_clears_old_entries():
    buf = bytearray(b"\xff" * 4096)
    nl = NamespaceList.view(buf)
    nl.set_nsids([4])
    assert buf[0:4] == le(4, 4) and buf[4:] == bytes(4092)


# ---------------------------------------------------------------- controller list


def test_controller_list():
    cl = ControllerList.from_ids([1, 2, 0x10])
    raw = bytes(cl)
    assert raw[0:2] == le(3, 2)
    assert raw[2:4] == le(1, 2) and raw[4:6] == le(2, 2) and raw[6:8] == le(0x10, 2)
    assert raw[8:] == bytes(4096 - 8)
    assert ControllerList.decode(raw).ids() == [1, 2, 0x10]
    full = list(range(2047))
    big = ControllerList.from_ids(full)
    assert bytes(big)[4094:4096] == le(2046, 2)
    assert ControllerList.decode(bytes(big)).ids() == full
    assert ControllerList().ids() == []


def test_controller_list_bad_values():
    with pytest.raises(ValueError, match="at most 2047"):
        ControllerList.from_ids(range(2048))
    buf = bytearray(4096)
    cl = ControllerList.view(buf)
    with pytest.raises(ValueError, match="16 bits"):
        cl.set_ids([1, 0x10000])
    assert buf == bytearray(4096)  # nothing written
    raw = bytearray(4096)
    raw[0:2] = le(2048, 2)
    with pytest.raises(ValueError, match="exceeds 2047"):
        ControllerList.decode(raw).ids()


# ---------------------------------------------------------------- NS identification descriptors

EUI = bytes(range(0x10, 0x18))
NGUID = bytes(range(0x20, 0x30))
UUID = uuid.UUID("12345678-1234-5678-1234-567812345678").bytes


def test_ns_descriptor_layout():
    buf = encode_ns_id_descriptors([(NidType.EUI64, EUI), (NidType.NGUID, NGUID),
                                    (NidType.UUID, UUID), (NidType.CSI, 0)])
    assert len(buf) == 4096
    assert buf[0:4] == bytes([1, 8, 0, 0]) and buf[4:12] == EUI
    assert buf[12:16] == bytes([2, 16, 0, 0]) and buf[16:32] == NGUID
    assert buf[32:36] == bytes([3, 16, 0, 0]) and buf[36:52] == UUID
    assert buf[52:56] == bytes([4, 1, 0, 0]) and buf[56] == 0
    assert buf[57:] == bytes(4096 - 57)
    hdr = NsIdDescriptor.decode(buf[12:])
    assert (hdr.nidt, hdr.nidl) == (2, 16)


def test_ns_descriptor_round_trip():
    descs = [(NidType.NGUID, NGUID), (NidType.CSI, b"\x02"), (0x80, b"vendor")]
    buf = encode_ns_id_descriptors(descs)
    out = decode_ns_id_descriptors(buf)
    assert out == [(NidType.NGUID, NGUID), (NidType.CSI, b"\x02"), (0x80, b"vendor")]
    assert isinstance(out[0][0], NidType) and not isinstance(out[2][0], NidType)
    entries = list(iter_ns_id_descriptors(buf))
    assert isinstance(entries[0].nid, memoryview)  # no copy
    assert decode_ns_id_descriptors(bytes(4096)) == []


def test_ns_descriptor_encode_into_existing_buffer():
    target = bytearray(b"\xee" * 4096)
    encode_ns_id_descriptors([(NidType.EUI64, EUI)], into=target)
    assert target[:12] == bytes([1, 8, 0, 0]) + EUI and target[12:] == bytes(4084)


def test_ns_descriptor_encode_errors():
    with pytest.raises(ValueError, match="EUI64.*8 bytes"):
        encode_ns_id_descriptors([(NidType.EUI64, b"\x01" * 16)])
    with pytest.raises(ValueError, match="UUID"):
        encode_ns_id_descriptors([(NidType.UUID, b"\x01" * 8)])
    with pytest.raises(ValueError, match="not 1..255"):
        encode_ns_id_descriptors([(0, b"x")])
    with pytest.raises(ValueError, match="not 1..255"):
        encode_ns_id_descriptors([(0x80, b"")])
    with pytest.raises(ValueError, match="do not fit"):
        encode_ns_id_descriptors([(0x80, b"x" * 255)] * 17)
    with pytest.raises(ValueError, match="integer"):
        encode_ns_id_descriptors([(NidType.UUID, 3)])
    target = bytearray(b"\xee" * 4096)
    with pytest.raises(ValueError):
        encode_ns_id_descriptors([(NidType.EUI64, EUI), (NidType.CSI, b"xx")], into=target)
    assert target == bytearray(b"\xee" * 4096)  # untouched on error


def test_ns_descriptor_list_filling_the_buffer_exactly():
    descs = [(0x80, b"y" * 252)] * 16  # 16 * 256 = 4096
    buf = encode_ns_id_descriptors(descs)
    assert len(decode_ns_id_descriptors(buf)) == 16


def test_ns_descriptor_iter_errors():
    # NIDL running past the end of the buffer
    short = bytes([1, 8, 0, 0]) + EUI[:4]
    with pytest.raises(ValueError, match="past the end"):
        list(iter_ns_id_descriptors(short))
    tail = bytearray(encode_ns_id_descriptors([(0x80, b"y" * 252)] * 15))
    tail[3840:3844] = bytes([0x80, 255, 0, 0])  # last descriptor needs 259 bytes, 256 left
    with pytest.raises(ValueError, match="byte 3840"):
        list(iter_ns_id_descriptors(tail))
    # a known type with the wrong length
    bad = bytearray(4096)
    bad[0:4] = bytes([NidType.NGUID, 8, 0, 0])
    with pytest.raises(ValueError, match="NGUID needs NIDL 16"):
        list(iter_ns_id_descriptors(bad))
    # a truncated header with something in it
    with pytest.raises(ValueError, match="truncated header"):
        list(iter_ns_id_descriptors(bytes([1, 8, 0, 0]) + EUI + b"\x02\x10"))
    # zero padding shorter than a header just ends the list
    assert decode_ns_id_descriptors(bytes([1, 8, 0, 0]) + EUI + b"\x00\x00") == [(NidType.EUI64, EUI)]
    # an entry after a NIDL 0 terminator is not read
    stop = bytearray(4096)
    stop[0:4] = bytes([1, 0, 0, 0])
    stop[4:8] = bytes([1, 8, 0, 0])
    assert decode_ns_id_descriptors(stop) == []


def test_identify_namespace_independent_layout():
    """CNS 08h (NVMe 2.0 figure 280): NSFEAT 0, NMIC 1, RESCAP 2, FPI 3,
    ANAGRPID 7:4, NSATTR 8, NVMSETID 11:10, ENDGID 13:12, NSTAT 14."""
    raw = bytearray(4096)
    raw[0:15] = bytes([0x08, 0x01, 0x02, 0x83]) + le(0x11223344, 4) + bytes([0x01, 0]) + le(7, 2) + le(9, 2) + b"\x01"
    ind = IdentifyNamespaceIndependent.decode(raw)
    assert (ind.nsfeat, ind.nmic_shared, ind.rescap, ind.fpi) == (0x08, True, 0x02, 0x83)
    assert (ind.anagrpid, ind.nsattr_write_protected, ind.nvmsetid, ind.endgid) == (0x11223344, True, 7, 9)
    assert ind.nstat_ready and IdentifyNamespaceIndependent.SIZE == 4096
    assert bytes(IdentifyNamespaceIndependent(nsfeat=0x08, nmic=1, rescap=2, fpi=0x83, anagrpid=0x11223344,
                                              nsattr=1, nvmsetid=7, endgid=9, nstat_ready=True)) == bytes(raw)
