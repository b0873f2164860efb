"""Structures with known field values, shared by the output tests.

The files under ``data/nvme-cli-2.3/`` are what Debian 12's nvme-cli 2.3
(libnvme 1.3) printed for exactly these structures (``data/make_golden.py``).
"""

from __future__ import annotations

import random

from nvmestack.spec.identify import IdentifyController, IdentifyNamespace, encode_ns_id_descriptors
from nvmestack.spec.log import (
    ChangedNamespaceList,
    CommandsSupportedAndEffects,
    DeviceSelfTestLog,
    ErrorInformationEntry,
    FirmwareSlotLog,
    SanitizeStatusLog,
    SmartLog,
)
from nvmestack.spec.registers import ControllerRegisters


def id_ctrl() -> IdentifyController:
    c = IdentifyController()
    c.vid = 0x1B36
    c.ssvid = 0x1AF4
    c.sn = "NVMESTACK0001"
    c.mn = "nvmestack Controller"
    c.fr = "1.0"
    c.rab = 6
    c.ieee = 0x525400
    c.cmic = 0x0B
    c.mdts = 7
    c.cntlid = 0x21
    c.ver = 0x00020000
    c.rtd3r = 0x3D0900
    c.rtd3e = 0x1E8480
    c.oaes = 0x900
    c.ctratt = 0x8010
    c.cntrltype = 1
    c.fguid = bytes(range(0x10, 0x20))
    c.crdt1 = 1
    c.oacs = 0x10E
    c.acl = 3
    c.aerl = 3
    c.frmw = 0x03
    c.lpa = 0x07
    c.elpe = 63
    c.npss = 1
    c.apsta = 0
    c.wctemp = 343
    c.cctemp = 373
    c.mtfa = 0
    c.tnvmcap = 1 << 40
    c.unvmcap = 12345678901
    c.edstt = 10
    c.dsto = 1
    c.kas = 10
    c.sanicap = 0x3
    c.anatt = 10
    c.anacap = 0x4F
    c.anagrpmax = 128
    c.nanagrpid = 128
    c.sqes = 0x66
    c.cqes = 0x44
    c.maxcmd = 128
    c.nn = 1024
    c.oncs = 0x15D
    c.fuses = 1
    c.fna = 0x4
    c.vwc = 0x7
    c.awun = 0
    c.awupf = 0
    c.sgls = 0x100005
    c.mnan = 0
    c.subnqn = "nqn.2014-08.org.nvmexpress:uuid:nvmestack-test"
    c.ioccsz = 260
    c.iorcsz = 1
    c.icdoff = 0
    c.fcatt = 0
    c.msdbd = 1
    c.ofcs = 1
    p0 = c.psd[0]
    p0.mp = 2500
    p0.enlat = 16
    p0.exlat = 4
    p1 = c.psd[1]
    p1.mp = 1200
    p1.mxps = True
    p1.nops = True
    p1.enlat = 5000
    p1.exlat = 10000
    p1.rrt = 1
    p1.rrl = 1
    p1.rwt = 1
    p1.rwl = 1
    p1.idlp = 50
    p1.ips = 2
    p1.actp = 300
    p1.apw = 2
    p1.aps = 1
    raw = c.raw
    raw[3072:3112] = bytes(range(0x30, 0x58))  # vendor specific (id-ctrl -v)
    return c


def id_ns() -> IdentifyNamespace:
    n = IdentifyNamespace()
    n.nsze = 0x200000
    n.ncap = 0x200000
    n.nuse = 0x1000
    n.nsfeat = 0x14
    n.nlbaf = 2
    n.flbas = 0x1
    n.mc = 0x3
    n.dpc = 0x1F
    n.dps = 0
    n.nmic = 1
    n.rescap = 0xFF
    n.fpi = 0x80
    n.dlfeat = 0x9
    n.noiob = 0
    n.nvmcap = 0x200000 * 4096
    n.npwg = 7
    n.npwa = 7
    n.npdg = 7
    n.npda = 7
    n.nows = 31
    n.mssrl = 128
    n.mcl = 1024
    n.msrc = 127
    n.anagrpid = 1
    n.nvmsetid = 0
    n.endgid = 1
    n.nguid = bytes.fromhex("0123456789abcdef0011223344556677")
    n.eui64 = bytes.fromhex("525400deadbeef01")
    n.lbaf[0].ms = 0
    n.lbaf[0].lbads = 9
    n.lbaf[0].rp = 2
    n.lbaf[1].ms = 0
    n.lbaf[1].lbads = 12
    n.lbaf[1].rp = 0
    n.lbaf[2].ms = 8
    n.lbaf[2].lbads = 12
    n.lbaf[2].rp = 1
    raw = n.raw
    raw[384:404] = b"vendor-specific-data"  # LBSTM, then vendor specific from 392 (id-ns -v)
    return n


def smart_log() -> SmartLog:
    s = SmartLog()
    s.critical_warning = 0x05
    s.temperature = 310
    s.avail_spare = 100
    s.spare_thresh = 10
    s.percent_used = 3
    s.endu_grp_crit_warn_sumry = 0
    s.data_units_read = 123456789
    s.data_units_written = (1 << 70) + 5
    s.host_reads = 987654321
    s.host_writes = 55555
    s.ctrl_busy_time = 42
    s.power_cycles = 7
    s.power_on_hours = 1234
    s.unsafe_shutdowns = 2
    s.media_errors = 0
    s.num_err_log_entries = 9
    s.warning_temp_time = 3
    s.critical_comp_time = 1
    s.temp_sensor[0] = 305
    s.temp_sensor[2] = 320
    s.thm_temp1_trans_count = 4
    s.thm_temp2_trans_count = 0
    s.thm_temp1_total_time = 600
    s.thm_temp2_total_time = 0
    return s


def error_log(entries: int = 4) -> list[ErrorInformationEntry]:
    out = []
    for i in range(entries):
        e = ErrorInformationEntry()
        if i < 2:
            e.error_count = 10 - i
            e.sqid = i
            e.cmdid = 0x1234 + i
            e.status_field = (0x4002 << 1) | 1 if i == 0 else (0x0281 << 1)
            e.parm_error_location = 0x0428 if i == 0 else 0xFFFF
            e.lba = 0x1000 * (i + 1)
            e.nsid = 1
            e.vs = 0
            e.trtype = 3 if i == 0 else 0
            e.cs = 0xDEAD
            e.trtype_spec_info = 0x55
        out.append(e)
    return out


def fw_log() -> FirmwareSlotLog:
    f = FirmwareSlotLog()
    f.afi = 0x21
    f.frs1 = "1.0"
    f.frs2 = "2.0-rc1"
    return f


# Dense structures: every byte random (seeded), so that each field's format
# (``%d`` or ``%#x``, signed or not, whole byte or bits) shows in the output.


def dense_id_ctrl(seed: int) -> IdentifyController:
    r = random.Random(seed)
    c = IdentifyController.view(bytearray(r.randbytes(IdentifyController.SIZE)))
    c.sn = f"SN{seed}"
    c.mn = f"Model {seed}"
    c.fr = f"FW{seed}"
    c.subnqn = f"nqn.2026-01.test:{seed}"
    c.npss %= 32  # nvme-cli would read past the structure
    return c


def dense_id_ns(seed: int) -> IdentifyNamespace:
    r = random.Random(1000 + seed)
    n = IdentifyNamespace.view(bytearray(r.randbytes(IdentifyNamespace.SIZE)))
    n.nlbaf %= 64
    return n


def dense_smart_log(seed: int) -> SmartLog:
    r = random.Random(2000 + seed)
    s = SmartLog.view(bytearray(r.randbytes(SmartLog.SIZE)))
    # nvme-cli sizes data units as a long double; keep them where a decimal
    # computation rounds the same way.
    s.data_units_read %= 1 << 64
    s.data_units_written %= 1 << 64
    return s


DENSE_SEEDS = range(4)


def id_ctrl_filled(byte: int) -> IdentifyController:
    """Every byte ``byte`` (0 or FFh: all -H branches one way), readable strings."""
    c = IdentifyController.view(bytearray([byte]) * IdentifyController.SIZE)
    c.sn = "FILLED"
    c.mn = "Filled"
    c.fr = "F"
    c.subnqn = "nqn.2026-01.test:filled"
    c.npss = 0
    return c


def ns_descs() -> bytes:
    """A Namespace Identification Descriptor list: EUI64, NGUID, UUID, CSI."""
    return bytes(encode_ns_id_descriptors([
        (1, bytes.fromhex("525400deadbeef01")),
        (2, bytes.fromhex("0123456789abcdef0011223344556677")),
        (3, bytes(range(0x20, 0x30))),
        (4, 0),
    ]))


def log_bytes(size: int = 512) -> bytes:
    """Any log page bytes (get-log's hex dump): printable and not."""
    return bytes((i * 7 + 0x1B) & 0xFF for i in range(size))


def effects_log() -> CommandsSupportedAndEffects:
    e = CommandsSupportedAndEffects()
    for opcode in (0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0C):
        e.acs[opcode].value = 0x1
    e.acs[0x0D].value = 0x1 | 0x4 | 0x8 | (1 << 16) | (1 << 20)
    e.acs[0x10].value = 0x1 | 0x10 | (2 << 16)
    e.acs[0x80].value = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | (2 << 16)
    e.acs[0xC4].value = 0x1 | (1 << 19)
    e.iocs[0x00].value = 0x1
    e.iocs[0x01].value = 0x3
    e.iocs[0x02].value = 0x1
    e.iocs[0x08].value = 0x3
    e.iocs[0x09].value = 0x3 | (3 << 16)
    e.iocs[0x81].value = 0x1
    return e


def dense_effects_log(seed: int) -> CommandsSupportedAndEffects:
    r = random.Random(3000 + seed)
    return CommandsSupportedAndEffects.view(bytearray(r.randbytes(CommandsSupportedAndEffects.SIZE)))


def changed_ns_list(nsids=(1, 2, 7)) -> ChangedNamespaceList:
    return ChangedNamespaceList.build(nsids)


def self_test_log() -> DeviceSelfTestLog:
    s = DeviceSelfTestLog()
    s.current_operation = 1
    s.completion = 42
    for i in range(DeviceSelfTestLog.MAX_RESULTS):
        s.result[i].dsts = 0xF
    r = s.result[0]
    r.dsts = 0x17  # short, failed segment
    r.seg = 3
    r.vdi = 0xF
    r.poh = 1234
    r.nsid = 1
    r.flba = 0x1000
    r.sct = 2
    r.sc = 0x81
    r.vs = b"\x12\x34"
    r = s.result[1]
    r.dsts = 0x20  # extended, no error
    r.vdi = 0x1
    r.poh = 99
    r.nsid = 5
    r = s.result[2]
    r.dsts = 0x12
    r.poh = 7
    return s


def dense_self_test_log(seed: int) -> DeviceSelfTestLog:
    r = random.Random(4000 + seed)
    return DeviceSelfTestLog.view(bytearray(r.randbytes(DeviceSelfTestLog.SIZE)))


def sanitize_log(status: int = 2) -> SanitizeStatusLog:
    s = SanitizeStatusLog()
    s.sprog = 0x8000
    s.sstat = status | (3 << 3) | (1 << 8)
    s.scdw10 = 0x22
    s.eto = 100
    s.etbe = 0xFFFFFFFF
    s.etce = 0
    s.etond = 5
    s.etbend = 6
    s.etcend = 0xFFFFFFFF
    return s


def dense_sanitize_log(seed: int) -> SanitizeStatusLog:
    r = random.Random(5000 + seed)
    s = SanitizeStatusLog.view(bytearray(r.randbytes(SanitizeStatusLog.SIZE)))
    if seed == 0:
        s.eto = 0xFFFFFFFF
    return s


def registers() -> ControllerRegisters:
    """A register file as a PCIe function shows it, enabled and ready."""
    g = ControllerRegisters()
    g.cap.value = 0x0000_0020_1801_0FFF | (1 << 37)
    g.vs.value = 0x00020000
    g.cc.value = 0x00460001
    g.csts.value = 0x1
    g.aqa.value = 0x001F001F
    g.asq.value = 0x12340000
    g.acq.value = 0x12350000
    g.crto.value = 0x00140014
    return g


def dense_registers(seed: int) -> ControllerRegisters:
    r = random.Random(6000 + seed)
    return ControllerRegisters.view(bytearray(r.randbytes(ControllerRegisters.SIZE)))


#: Offsets a Fabrics controller answers Property Get for (nvmestack's target):
#: CAP, VS, CC, CSTS, NSSR, CRTO.
FABRICS_PROPERTIES = (0x00, 0x08, 0x14, 0x1C, 0x20, 0x68)
