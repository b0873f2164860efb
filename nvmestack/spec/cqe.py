"""The 16-byte completion queue entry (NVMe 2.0 base spec 4.6 "Completion
Queue Entry", figures 89-93)."""

from __future__ import annotations

from .layout import Bits, Field, Flag, Struct

__all__ = ["CQE_SIZE", "Completion", "CompletionQueueEntry"]

CQE_SIZE = 16


class Completion(Struct):
    SIZE = CQE_SIZE

    dw0 = Field(0, 4, "Dword 0: command specific result")
    dw1 = Field(4, 4, "Dword 1: command specific result")
    result64 = Field(0, 8, "Dwords 0-1 as one 64-bit result (Property Get of 8-byte properties)")
    sqhd = Field(8, 2, "SQ Head Pointer (SQHD)")
    sqid = Field(10, 2, "SQ Identifier (SQID)")
    cid = Field(12, 2, "Command Identifier (CID)")
    dw3_status = Field(14, 2, "Phase tag and Status field, as on the wire")
    phase = Flag(14, 2, 0, "Phase Tag (P)")
    status = Bits(14, 2, 1, 15, "Status field without the phase tag (Linux's 15-bit status)")
    sc = Bits(14, 2, 1, 8, "Status Code (SC)")
    sct = Bits(14, 2, 9, 3, "Status Code Type (SCT)")
    crd = Bits(14, 2, 12, 2, "Command Retry Delay (CRD)")
    more = Flag(14, 2, 14, "More (M)")
    dnr = Flag(14, 2, 15, "Do Not Retry (DNR)")


CompletionQueueEntry = Completion
