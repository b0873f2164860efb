"""A lean NVMe/TCP load generator, for measuring a target rather than a host.

Our host driver pays for its generality (tags, block requests, tracing) on
every command; to see what a *target* can do, the load must cost less than
the target.  This initiator does only what the wire needs: ICReq, an admin
Connect, CC.EN, Number of Queues, one I/O queue Connect, then Read (or Write,
in-capsule or through R2T/H2CData) capsules built from one template, at a
fixed queue depth, without checking more of each answer than its status.
Setup uses nvmestack's wire-format structures (``nvmestack.spec``); the hot
loop packs the same fields with ``struct``.

As a module: :func:`run` returns a dict of figures.  As a script::

    python bench/nvmf_load.py 127.0.0.1 4420 NQN [--rw randread] [--bs 4096] [--qd 32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import time
import uuid

from nvmestack.spec.fabrics import CONNECT_DATA_SIZE, Connect, ConnectData, PropertyGet, PropertySet
from nvmestack.spec.features import FeatureId
from nvmestack.spec.registers import Reg
from nvmestack.spec.sqe import Command
from nvmestack.spec.tcp import ICReq, PduType

_HDR = struct.Struct("<BBBBI")  # PDU common header
_CAPSULE = struct.Struct("<BBBBI64s")
_CQE_STATUS = struct.Struct("<H")
_H2C = struct.Struct("<BBBBIHHII4x")  # common header, CCCID, TTAG, DATAO, DATAL, reserved
_R2T = struct.Struct("<BBBBIHHII4x")  # common header, CCCID, TTAG, R2TO, R2TL

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0b4e57c6-6a2d-4f36-9d2e-6b0b0b0b0b0b"


class LoadError(RuntimeError):
    pass


class _Conn:
    """One NVMe/TCP connection, set up the slow, careful way."""

    def __init__(self, addr: str, port: int):
        self.sock = socket.create_connection((addr, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        ic = ICReq()
        ic.pfv = 0
        ic.hpda = 0
        ic.dgst = 0
        ic.maxr2t = 0
        self.sock.sendall(bytes(ic))
        resp = self._pdu()
        if resp[0] != PduType.ICRESP:
            raise LoadError(f"expected ICResp, got PDU type {resp[0]:#x}")
        self.maxh2cdata = struct.unpack_from("<I", resp, 12)[0]

    def _pdu(self) -> bytes:
        while True:
            if len(self.buf) >= 8:
                plen = struct.unpack_from("<I", self.buf, 4)[0]
                if len(self.buf) >= plen:
                    pdu, self.buf = bytes(self.buf[:plen]), self.buf[plen:]
                    return pdu
            chunk = self.sock.recv(65536)
            if not chunk:
                raise LoadError("the target closed the connection")
            self.buf += chunk

    def command(self, sqe: Command, data: bytes = b"") -> tuple[int, int]:
        """Send one command (data in-capsule); returns (status, dw0)."""
        raw = bytearray(bytes(sqe))
        if data:
            raw[24] = 0x01  # SGL: data block, offset
            struct.pack_into("<QIxxxB", raw, 24, 0, len(data), 0x01)
        plen = 72 + len(data)
        self.sock.sendall(_HDR.pack(PduType.CAPSULE_CMD, 0, 72, 72 if data else 0, plen) + bytes(raw) + data)
        while True:
            pdu = self._pdu()
            if pdu[0] == PduType.CAPSULE_RESP:
                return _CQE_STATUS.unpack_from(pdu, 22)[0] >> 1, struct.unpack_from("<I", pdu, 8)[0]
            if pdu[0] != PduType.C2H_DATA:
                raise LoadError(f"unexpected PDU type {pdu[0]:#x} during setup")


def _connect(conn: _Conn, nqn: str, qid: int, sqsize: int, cntlid: int, hostid: bytes,
             hostnqn: str = HOSTNQN) -> int:
    cmd = Connect()
    cmd.cid = 1
    cmd.qid = qid
    cmd.sqsize = sqsize
    cmd.kato = 0
    data = ConnectData()
    data.hostid = hostid
    data.cntlid = cntlid
    data.subsysnqn = nqn
    data.hostnqn = hostnqn
    raw = bytes(data)
    assert len(raw) == CONNECT_DATA_SIZE
    status, dw0 = conn.command(cmd, raw)
    if status:
        raise LoadError(f"Connect qid {qid} failed: status {status:#x}")
    return dw0 & 0xFFFF


def setup(addr: str, port: int, nqn: str, qsize: int) -> tuple[_Conn, _Conn, int]:
    """An association with one I/O queue of ``qsize`` entries: (admin, io, NSID 1 size in blocks is
    not asked; the caller names the range)."""
    hostid = uuid.UUID(HOSTNQN.rsplit(":", 1)[1]).bytes
    admin = _Conn(addr, port)
    cntlid = _connect(admin, nqn, 0, 31, 0xFFFF, hostid)
    cc = PropertySet()
    cc.cid = 3
    cc.attrib_size = 0
    cc.ofst = Reg.CC
    cc.value = 1 | (6 << 16) | (4 << 20)  # EN, IOSQES 64 bytes, IOCQES 16 bytes
    status, _ = admin.command(cc)
    if status:
        raise LoadError(f"Property Set CC failed: {status:#x}")
    csts = PropertyGet()
    csts.cid = 4
    csts.ofst = Reg.CSTS
    deadline = time.monotonic() + 10
    while True:
        status, dw0 = admin.command(csts)
        if dw0 & 1:
            break
        if time.monotonic() > deadline:
            raise LoadError("CSTS.RDY never set")
        time.sleep(0.01)
    nq = Command()
    nq.opcode = 0x09  # Set Features
    nq.cid = 5
    raw = bytearray(bytes(nq))
    struct.pack_into("<II", raw, 40, FeatureId.NUM_QUEUES, 0)  # CDW10 FID, CDW11: 1 SQ + 1 CQ
    status, _ = admin.command(Command.view(raw))
    if status:
        raise LoadError(f"Set Features Number of Queues failed: {status:#x}")
    io = _Conn(addr, port)
    _connect(io, nqn, 1, qsize - 1, cntlid, hostid)
    return admin, io, cntlid


def run(addr: str, port: int, nqn: str, *, rw: str = "randread", bs: int = 4096, qd: int = 32,
        seconds: float = 5.0, lba_size: int = 512, span: int = 1 << 28, nsid: int = 1,
        latencies: bool = True, limit: int | None = None) -> dict:
    """Keep ``qd`` commands in flight for ``seconds`` (or until ``limit``
    commands are done); returns IOPS, MB/s and latency percentiles
    (microseconds)."""
    admin, io, _ = setup(addr, port, nqn, max(qd + 1, 32))
    sock = io.sock
    nlb = bs // lba_size
    blocks = span // lba_size
    slots = blocks // nlb
    write = rw in ("randwrite", "write")
    seq = rw in ("read", "write")
    in_capsule = write and bs <= 16384 - 0  # the target's IOCCSZ default (16 KiB)
    opcode = 0x01 if write else 0x02
    payload = os.urandom(bs) if write else b""
    # Template SQE: opcode, CID, NSID, SGL, SLBA, NLB.
    template = bytearray(64)
    template[0] = opcode
    template[1] = 0x40  # PSDT 01b: SGL
    struct.pack_into("<I", template, 4, nsid)
    if in_capsule:
        struct.pack_into("<QIxxxB", template, 24, 0, bs, 0x01)
        head = _HDR.pack(PduType.CAPSULE_CMD, 0, 72, 72, 72 + bs)
    else:
        struct.pack_into("<QIxxxB", template, 24, 0, bs, 0x5A)
        head = _HDR.pack(PduType.CAPSULE_CMD, 0, 72, 0, 72)
    struct.pack_into("<H", template, 48, nlb - 1)
    rng = random.Random(1)
    pos = 0
    issued = [0.0] * (qd + 1)
    lat: list[int] = []
    pack_cid = struct.Struct("<H").pack_into
    pack_lba = struct.Struct("<Q").pack_into
    perf = time.perf_counter_ns
    done = errors = issued_count = 0
    limit = limit if limit is not None else 1 << 62

    def submit(cid: int, out: list) -> None:
        nonlocal pos, issued_count
        if issued_count >= limit:
            return
        issued_count += 1
        sqe = bytearray(template)
        pack_cid(sqe, 2, cid)
        if seq:
            slot = pos
            pos = (pos + 1) % slots
        else:
            slot = rng.randrange(slots)
        pack_lba(sqe, 40, slot * nlb)
        out.append(head)
        out.append(sqe)
        if in_capsule:
            out.append(payload)
        issued[cid] = perf()

    out: list = []
    for cid in range(1, qd + 1):
        submit(cid, out)
    sock.sendmsg(out)
    qd = min(qd, limit)
    buf = bytearray(1 << 20)
    mv = memoryview(buf)
    have = 0
    start = time.monotonic()
    stop = start + seconds
    now = start
    while now < stop and done < limit:
        n = sock.recv_into(mv[have:])
        if not n:
            raise LoadError("the target closed the I/O connection")
        have += n
        p = 0
        out = []
        while have - p >= 8:
            kind, flags, hlen, pdo, plen = _HDR.unpack_from(buf, p)
            if have - p < (plen if kind != PduType.C2H_DATA else hlen):
                break
            if kind == PduType.CAPSULE_RESP:
                if have - p < plen:
                    break
                cid = struct.unpack_from("<H", buf, p + 20)[0]
                if _CQE_STATUS.unpack_from(buf, p + 22)[0] >> 1:
                    errors += 1
                p += plen
            elif kind == PduType.C2H_DATA:
                if have - p < plen:
                    break
                p += plen
                if not flags & 0x08:  # no SUCCESS: a response capsule follows
                    continue
                cid = struct.unpack_from("<H", buf, p - plen + 8)[0]
            elif kind == PduType.R2T:
                _, _, _, _, _, cid, ttag, r2to, r2tl = _R2T.unpack_from(buf, p)
                p += plen
                out.append(_H2C.pack(PduType.H2C_DATA, 0x04, 24, 24, 24 + r2tl, cid, ttag, r2to, r2tl))
                out.append(payload[r2to:r2to + r2tl])
                continue
            else:
                raise LoadError(f"unexpected PDU type {kind:#x}")
            done += 1
            if latencies:
                lat.append(perf() - issued[cid])
            submit(cid, out)
        if p:
            buf[: have - p] = buf[p:have]
            have -= p
        if have > len(buf) // 2:
            buf.extend(bytearray(len(buf)))
            mv = memoryview(buf)
        if out:
            sock.sendmsg(out)
        now = time.monotonic()
    elapsed = now - start
    io.sock.close()
    admin.sock.close()
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1000 if lat else 0.0

    return {
        "rw": rw, "bs": bs, "qd": qd, "seconds": elapsed, "commands": done, "errors": errors,
        "iops": done / elapsed, "mb_s": done * bs / elapsed / 1e6,
        "p50_us": pct(0.5), "p99_us": pct(0.99), "p999_us": pct(0.999),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("addr")
    ap.add_argument("port", type=int)
    ap.add_argument("nqn")
    ap.add_argument("--rw", default="randread", choices=("randread", "read", "randwrite", "write"))
    ap.add_argument("--bs", type=int, default=4096)
    ap.add_argument("--qd", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--span", type=int, default=1 << 28, help="bytes of the namespace to address")
    ap.add_argument("--lba-size", type=int, default=512)
    opts = ap.parse_args()
    print(json.dumps(run(opts.addr, opts.port, opts.nqn, rw=opts.rw, bs=opts.bs, qd=opts.qd,
                         seconds=opts.seconds, span=opts.span, lba_size=opts.lba_size)))


if __name__ == "__main__":
    main()
