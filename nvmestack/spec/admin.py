"""Typed views of the admin commands (NVMe Base Specification 2.0, section 5
"Admin Command Set").

Each class is a :class:`~nvmestack.spec.sqe.Command` (the 64-byte SQE) that
names the command dwords of one admin command at the byte offset and bit
position the specification gives them.  Command Dword 10 is bytes 40-43 of
the SQE, Dword 11 bytes 44-47, ... Dword 15 bytes 60-63; the Namespace
Identifier is bytes 4-7.  Classes register by ``OPCODE`` with ``ADMIN =
True``, so ``command_class(True, opcode)`` finds them::

    cmd = Identify(cns=Cns.CTRL, cid=7)          # a fresh 64-byte SQE
    sqe = command_class(True, ring[0]).view(ring) # decode in place, no copy

Derived conveniences (``GetLogPage.length``, ``FormatNvm.lbaf``, ...) are
plain properties; the constructor accepts them as keywords too.

The Identify data structures themselves live in ``identify.py``; feature
identifiers and log page identifiers live with their data structures.
"""

from __future__ import annotations

from enum import IntEnum

from .layout import Bits, Field, Flag, check_range
from .opcodes import AdminOpcode
from .sqe import Command

__all__ = [
    "Cns",
    "QueuePriority",
    "FeatureSelect",
    "NsManagementSelect",
    "NsAttachmentSelect",
    "FirmwareCommitAction",
    "SelfTestCode",
    "SanitizeAction",
    "SecureEraseSetting",
    "AdminCommand",
    "QueueCommandBase",
    "CreateQueueBase",
    "FeaturesBase",
    "DeleteIoSq",
    "CreateIoSq",
    "GetLogPage",
    "DeleteIoCq",
    "CreateIoCq",
    "Identify",
    "Abort",
    "SetFeatures",
    "GetFeatures",
    "AsyncEventRequest",
    "NamespaceManagement",
    "FirmwareCommit",
    "FirmwareImageDownload",
    "DeviceSelfTest",
    "NamespaceAttachment",
    "KeepAlive",
    "DoorbellBufferConfig",
    "FormatNvm",
    "Sanitize",
]


# ---------------------------------------------------------------------------
# Coded values


class Cns(IntEnum):
    """Controller or Namespace Structure, Identify CDW10 bits 7:0."""

    NS = 0x00  # Identify Namespace (NVM Command Set) for NSID
    CTRL = 0x01  # Identify Controller
    NS_ACTIVE_LIST = 0x02  # active NSIDs greater than NSID
    NS_DESC_LIST = 0x03  # Namespace Identification Descriptor list for NSID
    NVMSET_LIST = 0x04  # NVM Set List
    CSI_NS = 0x05  # I/O Command Set specific Identify Namespace (CDW11.CSI)
    CSI_CTRL = 0x06  # I/O Command Set specific Identify Controller
    CSI_NS_ACTIVE_LIST = 0x07  # active NSIDs attached to the I/O Command Set
    CSI_INDEPENDENT_NS = 0x08  # I/O Command Set Independent Identify Namespace
    ALLOCATED_NS_LIST = 0x10  # allocated NSIDs greater than NSID
    ALLOCATED_NS = 0x11  # Identify Namespace for an allocated NSID
    NS_CTRL_LIST = 0x12  # controllers attached to NSID, from CNTID up
    CTRL_LIST = 0x13  # controllers in the NVM subsystem, from CNTID up
    PRIMARY_CTRL_CAP = 0x14  # Primary Controller Capabilities
    SECONDARY_CTRL_LIST = 0x15  # Secondary Controller List
    NS_GRANULARITY = 0x16  # Namespace Granularity List
    UUID_LIST = 0x17  # UUID List
    DOMAIN_LIST = 0x18  # Domain List
    ENDURANCE_GROUP_LIST = 0x19  # Endurance Group List
    CSI_ALLOCATED_NS_LIST = 0x1A  # allocated NSIDs of an I/O Command Set
    CSI_ALLOCATED_NS = 0x1B  # I/O Command Set specific Identify Namespace, allocated NSID
    COMMAND_SET_STRUCTURE = 0x1C  # Identify I/O Command Set data structure


class QueuePriority(IntEnum):
    """Queue Priority (QPRIO), Create I/O Submission Queue CDW11 bits 2:1;
    used only with weighted round robin arbitration."""

    URGENT = 0
    HIGH = 1
    MEDIUM = 2
    LOW = 3


class FeatureSelect(IntEnum):
    """Select (SEL), Get Features CDW10 bits 10:8."""

    CURRENT = 0
    DEFAULT = 1
    SAVED = 2
    SUPPORTED = 3  # supported capabilities of the feature, returned in Dword 0


class NsManagementSelect(IntEnum):
    """Select (SEL), Namespace Management CDW10 bits 3:0."""

    CREATE = 0
    DELETE = 1


class NsAttachmentSelect(IntEnum):
    """Select (SEL), Namespace Attachment CDW10 bits 3:0."""

    ATTACH = 0
    DETACH = 1


class FirmwareCommitAction(IntEnum):
    """Commit Action (CA), Firmware Commit CDW10 bits 5:3 (values 4 and 5
    are reserved)."""

    REPLACE = 0  # replace the image in the slot; do not activate it
    REPLACE_AND_ACTIVATE = 1  # replace; activate at the next Controller Level Reset
    ACTIVATE = 2  # activate the image already in the slot at the next reset
    REPLACE_AND_ACTIVATE_NOW = 3  # replace (if downloaded) and activate immediately
    REPLACE_BOOT_PARTITION = 6  # the image replaces the Boot Partition named by BPID
    ACTIVATE_BOOT_PARTITION = 7  # mark the Boot Partition named by BPID active


class SelfTestCode(IntEnum):
    """Self-test Code (STC), Device Self-test CDW10 bits 3:0."""

    SHORT = 0x1
    EXTENDED = 0x2
    VENDOR_SPECIFIC = 0xE
    ABORT = 0xF


class SanitizeAction(IntEnum):
    """Sanitize Action (SANACT), Sanitize CDW10 bits 2:0."""

    EXIT_FAILURE_MODE = 1
    BLOCK_ERASE = 2
    OVERWRITE = 3
    CRYPTO_ERASE = 4


class SecureEraseSetting(IntEnum):
    """Secure Erase Settings (SES), Format NVM CDW10 bits 11:9."""

    NONE = 0
    USER_DATA_ERASE = 1
    CRYPTOGRAPHIC_ERASE = 2


# ---------------------------------------------------------------------------
# Bases


class AdminCommand(Command):
    """Base of the admin command views (``ADMIN = True``)."""

    ADMIN = True


class _DwordCount:
    """``length`` in bytes for commands that count dwords 0-based in NUMD
    (Get Log Page, Firmware Image Download)."""

    @property
    def length(self) -> int:
        """Bytes to transfer: (NUMD + 1) * 4."""
        return (self.numd + 1) * 4

    @length.setter
    def length(self, value: int) -> None:
        value = check_range("length", value, 4, 1 << 34)
        if value % 4:
            raise ValueError(f"length: {value} is not a whole number of dwords")
        self.numd = value // 4 - 1


class _UuidIndex:
    """UUID Index, Command Dword 14 bits 6:0 (Identify, Get Log Page,
    Set/Get Features): selects a vendor UUID from the UUID List; 0 = none."""

    __slots__ = ()
    uuidx = Bits(56, 4, 0, 7, "UUID Index (CDW14 6:0)")


class QueueCommandBase(AdminCommand):
    """Commands naming an I/O queue by its identifier in CDW10 bits 15:0."""

    qid = Field(40, 2, "Queue Identifier (QID, CDW10 15:0)")


class CreateQueueBase(QueueCommandBase):
    """Create I/O Submission/Completion Queue: PRP1 is the queue's base
    address (or its PRP list when not physically contiguous)."""

    qsize = Field(42, 2, "Queue Size (QSIZE, CDW10 31:16), 0-based entries")
    pc = Flag(44, 4, 0, "Physically Contiguous (PC, CDW11 bit 0)")

    @property
    def entries(self) -> int:
        """Number of queue entries (QSIZE + 1)."""
        return self.qsize + 1

    @entries.setter
    def entries(self, value: int) -> None:
        self.qsize = check_range("entries", value, 1, 0x10000) - 1


class FeaturesBase(_UuidIndex, AdminCommand):
    """Set Features and Get Features share the Feature Identifier."""

    fid = Field(40, 1, "Feature Identifier (FID, CDW10 7:0)")


# ---------------------------------------------------------------------------
# Commands, in opcode order


class DeleteIoSq(QueueCommandBase):
    """Delete I/O Submission Queue."""

    OPCODE = AdminOpcode.DELETE_IO_SQ


class CreateIoSq(CreateQueueBase):
    """Create I/O Submission Queue."""

    OPCODE = AdminOpcode.CREATE_IO_SQ

    qprio = Bits(44, 4, 1, 2, "Queue Priority (QPRIO, CDW11 2:1), see QueuePriority")
    cqid = Field(46, 2, "Completion Queue Identifier (CQID, CDW11 31:16)")
    nvmsetid = Field(48, 2, "NVM Set Identifier (NVMSETID, CDW12 15:0)")


class GetLogPage(_DwordCount, _UuidIndex, AdminCommand):
    """Get Log Page.  The transfer length is a 0-based dword count
    split over NUMDL (CDW10) and NUMDU (CDW11); the offset is 64 bits split
    over LPOL (CDW12) and LPOU (CDW13)."""

    OPCODE = AdminOpcode.GET_LOG_PAGE

    lid = Field(40, 1, "Log Page Identifier (LID, CDW10 7:0)")
    lsp = Bits(40, 4, 8, 7, "Log Specific Field (LSP, CDW10 14:8)")
    rae = Flag(40, 4, 15, "Retain Asynchronous Event (RAE, CDW10 bit 15)")
    numdl = Field(42, 2, "Number of Dwords Lower (NUMDL, CDW10 31:16)")
    numdu = Field(44, 2, "Number of Dwords Upper (NUMDU, CDW11 15:0)")
    lsi = Field(46, 2, "Log Specific Identifier (LSI, CDW11 31:16)")
    lpol = Field(48, 4, "Log Page Offset Lower (LPOL, CDW12)")
    lpou = Field(52, 4, "Log Page Offset Upper (LPOU, CDW13)")
    ot = Flag(56, 4, 23, "Offset Type (OT, CDW14 bit 23): 1 = LPOL/LPOU is an index")
    csi = Field(59, 1, "Command Set Identifier (CSI, CDW14 31:24)")

    @property
    def numd(self) -> int:
        """Number of Dwords, 0-based, 32 bits over NUMDU:NUMDL."""
        return (self.numdu << 16) | self.numdl

    @numd.setter
    def numd(self, value: int) -> None:
        value = check_range("numd", value, 0, 0xFFFFFFFF)
        self.numdl = value & 0xFFFF
        self.numdu = value >> 16

    @property
    def offset(self) -> int:
        """Log Page Offset, 64 bits over LPOU:LPOL (bytes, or an index when OT is set)."""
        return (self.lpou << 32) | self.lpol

    @offset.setter
    def offset(self, value: int) -> None:
        value = check_range("offset", value, 0, (1 << 64) - 1)
        if not self.ot and value % 4:
            raise ValueError(f"offset: a byte offset must be dword aligned, got {value}")
        self.lpol = value & 0xFFFFFFFF
        self.lpou = value >> 32


class DeleteIoCq(QueueCommandBase):
    """Delete I/O Completion Queue."""

    OPCODE = AdminOpcode.DELETE_IO_CQ


class CreateIoCq(CreateQueueBase):
    """Create I/O Completion Queue."""

    OPCODE = AdminOpcode.CREATE_IO_CQ

    ien = Flag(44, 4, 1, "Interrupts Enabled (IEN, CDW11 bit 1)")
    iv = Field(46, 2, "Interrupt Vector (IV, CDW11 31:16)")


class Identify(_UuidIndex, AdminCommand):
    """Identify.  The 4096-byte data structure selected by CNS goes
    to PRP1/PRP2 (or SGL1)."""

    OPCODE = AdminOpcode.IDENTIFY

    cns = Field(40, 1, "Controller or Namespace Structure (CNS, CDW10 7:0), see Cns")
    cntid = Field(42, 2, "Controller Identifier (CNTID, CDW10 31:16)")
    cnssid = Field(44, 2, "CNS Specific Identifier (CNSSID, CDW11 15:0): NVM Set, Domain, Endurance Group...")
    csi = Field(47, 1, "Command Set Identifier (CSI, CDW11 31:24)")


class Abort(AdminCommand):
    """Abort.  The Command Identifier of the command to abort is
    ``abort_cid``; ``cid`` stays the identifier of the Abort itself."""

    OPCODE = AdminOpcode.ABORT

    sqid = Field(40, 2, "Submission Queue Identifier (SQID, CDW10 15:0)")
    abort_cid = Field(42, 2, "Command Identifier to abort (CID, CDW10 31:16)")


class SetFeatures(FeaturesBase):
    """Set Features.  Feature-specific values go in ``cdw11`` ..
    ``cdw14`` (or in the data buffer for features that carry one)."""

    OPCODE = AdminOpcode.SET_FEATURES

    sv = Flag(40, 4, 31, "Save (SV, CDW10 bit 31)")


class GetFeatures(FeaturesBase):
    """Get Features.  Some features take an argument in ``cdw11``."""

    OPCODE = AdminOpcode.GET_FEATURES

    sel = Bits(40, 4, 8, 3, "Select (SEL, CDW10 10:8), see FeatureSelect")


class AsyncEventRequest(AdminCommand):
    """Asynchronous Event Request: no command specific fields."""

    OPCODE = AdminOpcode.ASYNC_EVENT_REQUEST


class _NamespaceSelect(AdminCommand):
    sel = Bits(40, 4, 0, 4, "Select (SEL, CDW10 3:0)")


class NamespaceManagement(_NamespaceSelect):
    """Namespace Management.  ``sel`` is a NsManagementSelect; a
    create carries the host software specified fields in the data buffer."""

    OPCODE = AdminOpcode.NAMESPACE_MANAGEMENT

    csi = Field(47, 1, "Command Set Identifier (CSI, CDW11 31:24), for create")


class FirmwareCommit(AdminCommand):
    """Firmware Commit."""

    OPCODE = AdminOpcode.FIRMWARE_COMMIT

    fs = Bits(40, 4, 0, 3, "Firmware Slot (FS, CDW10 2:0)")
    ca = Bits(40, 4, 3, 3, "Commit Action (CA, CDW10 5:3), see FirmwareCommitAction")
    bpid = Flag(40, 4, 31, "Boot Partition ID (BPID, CDW10 bit 31)")


class FirmwareImageDownload(_DwordCount, AdminCommand):
    """Firmware Image Download.  Sizes and offsets count dwords."""

    OPCODE = AdminOpcode.FIRMWARE_IMAGE_DOWNLOAD

    numd = Field(40, 4, "Number of Dwords (NUMD, CDW10), 0-based")
    ofst = Field(44, 4, "Offset (OFST, CDW11), in dwords from the image start")

    @property
    def offset(self) -> int:
        """Byte offset of this piece in the image: OFST * 4."""
        return self.ofst * 4

    @offset.setter
    def offset(self, value: int) -> None:
        value = check_range("offset", value, 0, 0xFFFFFFFF * 4)
        if value % 4:
            raise ValueError(f"offset: {value} is not dword aligned")
        self.ofst = value // 4


class DeviceSelfTest(AdminCommand):
    """Device Self-test.  NSID selects the namespaces tested."""

    OPCODE = AdminOpcode.DEVICE_SELF_TEST

    stc = Bits(40, 4, 0, 4, "Self-test Code (STC, CDW10 3:0), see SelfTestCode")


class NamespaceAttachment(_NamespaceSelect):
    """Namespace Attachment.  ``sel`` is a NsAttachmentSelect; the
    data buffer holds a Controller List."""

    OPCODE = AdminOpcode.NAMESPACE_ATTACHMENT


class KeepAlive(AdminCommand):
    """Keep Alive: no command specific fields."""

    OPCODE = AdminOpcode.KEEP_ALIVE


class DoorbellBufferConfig(AdminCommand):
    """Doorbell Buffer Config: the two page-aligned buffers ride in
    the data pointer, PRP1 and PRP2."""

    OPCODE = AdminOpcode.DOORBELL_BUFFER_CONFIG

    dbbuf_dbs = Field(Command.prp1.offset, 8, "Shadow Doorbell buffer address (PRP1)")
    dbbuf_eis = Field(Command.prp2.offset, 8, "EventIdx buffer address (PRP2)")


class FormatNvm(AdminCommand):
    """Format NVM.  The LBA Format index is 6 bits: the lower four
    in CDW10 3:0 and, since 2.0, the upper two in CDW10 13:12 (``lbaf``
    combines them)."""

    OPCODE = AdminOpcode.FORMAT_NVM

    lbafl = Bits(40, 4, 0, 4, "LBA Format, lower bits (LBAFL, CDW10 3:0)")
    mset = Flag(40, 4, 4, "Metadata Settings (MSET, CDW10 bit 4): 1 = extended LBA")
    pi = Bits(40, 4, 5, 3, "Protection Information (PI, CDW10 7:5): 0 none, 1-3 type")
    pil = Flag(40, 4, 8, "Protection Information Location (PIL, CDW10 bit 8): 1 = first bytes")
    ses = Bits(40, 4, 9, 3, "Secure Erase Settings (SES, CDW10 11:9), see SecureEraseSetting")
    lbafu = Bits(40, 4, 12, 2, "LBA Format, upper bits (LBAFU, CDW10 13:12)")

    @property
    def lbaf(self) -> int:
        """The LBA Format index, 0..63: LBAFU:LBAFL."""
        return (self.lbafu << 4) | self.lbafl

    @lbaf.setter
    def lbaf(self, value: int) -> None:
        value = check_range("lbaf", value, 0, 63)
        self.lbafl = value & 0xF
        self.lbafu = value >> 4


class Sanitize(AdminCommand):
    """Sanitize."""

    OPCODE = AdminOpcode.SANITIZE

    sanact = Bits(40, 4, 0, 3, "Sanitize Action (SANACT, CDW10 2:0), see SanitizeAction")
    ause = Flag(40, 4, 3, "Allow Unrestricted Sanitize Exit (AUSE, CDW10 bit 3)")
    owpass = Bits(40, 4, 4, 4, "Overwrite Pass Count (OWPASS, CDW10 7:4); 0 means 16")
    oipbp = Flag(40, 4, 8, "Overwrite Invert Pattern Between Passes (OIPBP, CDW10 bit 8)")
    ndas = Flag(40, 4, 9, "No-Deallocate After Sanitize (NDAS, CDW10 bit 9)")
    ovrpat = Field(44, 4, "Overwrite Pattern (OVRPAT, CDW11)")
