"""Command opcodes: admin, NVM command set and Fabrics (NVMe 2.0 base spec
figure 28 "Opcodes for Admin Commands", NVM command set spec figure 18,
Fabrics figure "Fabrics Command Types")."""

from __future__ import annotations

from .layout import TitledEnum

__all__ = ["AdminOpcode", "NvmOpcode", "FabricsType", "CommandSet", "FABRICS_OPCODE", "opcode_name"]


class _Named(TitledEnum):
    """An opcode with the specification's name as its ``title``."""

    @property
    def data_transfer(self) -> int:
        """Bits 1:0 of the opcode: 00b none, 01b host to controller, 10b
        controller to host, 11b bidirectional."""
        return self.value & 0x3


class AdminOpcode(_Named):
    DELETE_IO_SQ = 0x00, "Delete I/O Submission Queue"
    CREATE_IO_SQ = 0x01, "Create I/O Submission Queue"
    GET_LOG_PAGE = 0x02, "Get Log Page"
    DELETE_IO_CQ = 0x04, "Delete I/O Completion Queue"
    CREATE_IO_CQ = 0x05, "Create I/O Completion Queue"
    IDENTIFY = 0x06, "Identify"
    ABORT = 0x08, "Abort"
    SET_FEATURES = 0x09, "Set Features"
    GET_FEATURES = 0x0A, "Get Features"
    ASYNC_EVENT_REQUEST = 0x0C, "Asynchronous Event Request"
    NAMESPACE_MANAGEMENT = 0x0D, "Namespace Management"
    FIRMWARE_COMMIT = 0x10, "Firmware Commit"
    FIRMWARE_IMAGE_DOWNLOAD = 0x11, "Firmware Image Download"
    DEVICE_SELF_TEST = 0x14, "Device Self-test"
    NAMESPACE_ATTACHMENT = 0x15, "Namespace Attachment"
    KEEP_ALIVE = 0x18, "Keep Alive"
    DOORBELL_BUFFER_CONFIG = 0x7C, "Doorbell Buffer Config"
    FABRICS = 0x7F, "Fabrics Commands"
    FORMAT_NVM = 0x80, "Format NVM"
    SANITIZE = 0x84, "Sanitize"


class NvmOpcode(_Named):
    FLUSH = 0x00, "Flush"
    WRITE = 0x01, "Write"
    READ = 0x02, "Read"
    WRITE_UNCORRECTABLE = 0x04, "Write Uncorrectable"
    COMPARE = 0x05, "Compare"
    WRITE_ZEROES = 0x08, "Write Zeroes"
    DATASET_MANAGEMENT = 0x09, "Dataset Management"
    VERIFY = 0x0C, "Verify"
    COPY = 0x19, "Copy"
    FABRICS = 0x7F, "Fabrics Commands"


FABRICS_OPCODE = 0x7F


class CommandSet(TitledEnum):
    """Command Set Identifier (CSI): which I/O command set an opcode,
    an Identify structure or a namespace belongs to."""

    NVM = 0x00, "NVM Command Set"
    KEY_VALUE = 0x01, "Key Value Command Set"
    ZONED = 0x02, "Zoned Namespace Command Set"


class FabricsType(_Named):
    """FCTYPE, byte 04 of a Fabrics command."""

    PROPERTY_SET = 0x00, "Property Set"
    CONNECT = 0x01, "Connect"
    PROPERTY_GET = 0x04, "Property Get"
    AUTHENTICATION_SEND = 0x05, "Authentication Send"
    AUTHENTICATION_RECEIVE = 0x06, "Authentication Receive"
    DISCONNECT = 0x08, "Disconnect"


def opcode_name(opcode: int, admin: bool, fctype: int | None = None) -> str:
    """The specification's name for an opcode, or ``"Unknown (0xNN)"``."""
    try:
        if opcode == FABRICS_OPCODE and fctype is not None:
            return FabricsType(fctype).title
        return (AdminOpcode if admin else NvmOpcode)(opcode).title
    except ValueError:
        kind = "Fabrics type" if opcode == FABRICS_OPCODE else ("admin opcode" if admin else "I/O opcode")
        value = fctype if opcode == FABRICS_OPCODE else opcode
        return f"Unknown {kind} ({value:#04x})"
