"""Completion status: Status Code Type, Status Code and the flags around them
(NVMe 2.0 base spec 4.6.1 "Status Field Definition": figure 94 "Status Field",
figure 95 "Status Code Type Values", figure 96 "Generic Command Status Values",
figure 97 "Command Specific Status Values", figure 98 "Media and Data Integrity
Errors", figure 99 "Path Related Status"; NVM Command Set spec 1.0 4.1.1
(generic and command specific values 80h+); Zoned Namespace Command Set 1.1;
the Fabrics command status values of the base spec's Fabrics chapter (Connect,
Discovery, Authentication); Key Value Command Set 1.0 (generic 85h-89h).
Later additions that Linux tools already decode (NVMe 2.1 generic 25h-2Ah and
command specific 37h-3Bh, NVM copy codes 85h-89h) are included and marked.

A completion carries its status in Dword 3 bits 31:17 (the 16-bit word at byte
14, bits 15:1; bit 0 is the phase tag).  Linux returns the same 15 bits from
the NVMe passthrough ioctls, shifted down by one::

    bits  7:0   SC    Status Code
    bits 10:8   SCT   Status Code Type
    bits 12:11  CRD   Command Retry Delay
    bit  13     M     More
    bit  14     DNR   Do Not Retry

That 15-bit number is :attr:`Status.value` (``NVME_SC_DNR`` = 4000h,
``NVME_SC_MORE`` = 2000h, ``NVME_SC_CRD`` = 1800h in include/linux/nvme.h and
libnvme).

Every code has an :class:`~enum.IntEnum` member whose ``title`` is the name the
specification gives it.  :attr:`Status.string` is the text nvme-cli prints for
a status (libnvme's ``nvme_status_to_string()``): ``str(status)`` gives what
follows ``"NVMe status: "`` on nvme-cli's standard error, e.g.
``"Invalid Field in Command: A reserved coded value or an unsupported value in
a defined field(0x4002)"``.

Command specific codes 80h and up mean different things for NVM command set
commands and for Fabrics commands (80h is Conflicting Attributes for one and
Incompatible Format for the other); a :class:`Status` therefore carries a
``fabrics`` flag that chooses between :class:`CommandSpecificStatus` and
:class:`FabricsStatus`, as libnvme's ``fabrics`` argument does.
"""

from __future__ import annotations

from typing import Any

from .layout import TitledEnum

__all__ = [
    "StatusCodeType",
    "GenericStatus",
    "CommandSpecificStatus",
    "FabricsStatus",
    "MediaStatus",
    "PathStatus",
    "Status",
    "SUCCESS",
    "SC_MASK",
    "SCT_SHIFT",
    "SCT_MASK",
    "CRD_SHIFT",
    "CRD_MASK",
    "MORE",
    "DNR",
    "STATUS_MASK",
    "nvme_cli_string",
]

# Positions inside the 15-bit status value (CQE status field >> 1).
SC_MASK = 0x00FF
SCT_SHIFT = 8
SCT_MASK = 0x0700
CRD_SHIFT = 11
CRD_MASK = 0x1800
MORE = 0x2000
DNR = 0x4000
STATUS_MASK = 0x7FFF


class StatusCodeType(TitledEnum):
    """Status Code Type (SCT), status field bits 10:8 (figure 95)."""

    GENERIC = 0x0, "Generic Command Status"
    COMMAND_SPECIFIC = 0x1, "Command Specific Status"
    MEDIA = 0x2, "Media and Data Integrity Errors"
    PATH = 0x3, "Path Related Status"
    VENDOR = 0x7, "Vendor Specific"


class _Code(TitledEnum):
    """A Status Code (SC) value whose ``title`` is the specification's name."""

    @property
    def sct(self) -> StatusCodeType:
        """The Status Code Type this code belongs to."""
        return _SCT_OF[type(self)]

    def status(self, *, crd: int = 0, more: bool = False, dnr: bool = False) -> "Status":
        """A :class:`Status` with this code, e.g. ``GenericStatus.INVALID_FIELD.status(dnr=True)``."""
        return Status(self.sct, self, crd=crd, more=more, dnr=dnr, fabrics=type(self) is FabricsStatus)


class GenericStatus(_Code):
    """SCT 0h: Generic Command Status (base figure 96; 80h-84h from the NVM
    Command Set; 85h-89h from the Key Value Command Set)."""

    SUCCESS = 0x00, "Successful Completion"
    INVALID_OPCODE = 0x01, "Invalid Command Opcode"
    INVALID_FIELD = 0x02, "Invalid Field in Command"
    COMMAND_ID_CONFLICT = 0x03, "Command ID Conflict"
    DATA_TRANSFER_ERROR = 0x04, "Data Transfer Error"
    ABORTED_POWER_LOSS = 0x05, "Commands Aborted due to Power Loss Notification"
    INTERNAL_ERROR = 0x06, "Internal Error"
    ABORT_REQUESTED = 0x07, "Command Abort Requested"
    ABORTED_SQ_DELETION = 0x08, "Command Aborted due to SQ Deletion"
    ABORTED_FAILED_FUSED = 0x09, "Command Aborted due to Failed Fused Command"
    ABORTED_MISSING_FUSED = 0x0A, "Command Aborted due to Missing Fused Command"
    INVALID_NAMESPACE_OR_FORMAT = 0x0B, "Invalid Namespace or Format"
    COMMAND_SEQUENCE_ERROR = 0x0C, "Command Sequence Error"
    INVALID_SGL_SEGMENT_DESCRIPTOR = 0x0D, "Invalid SGL Segment Descriptor"
    INVALID_SGL_DESCRIPTOR_COUNT = 0x0E, "Invalid Number of SGL Descriptors"
    DATA_SGL_LENGTH_INVALID = 0x0F, "Data SGL Length Invalid"
    METADATA_SGL_LENGTH_INVALID = 0x10, "Metadata SGL Length Invalid"
    SGL_DESCRIPTOR_TYPE_INVALID = 0x11, "SGL Descriptor Type Invalid"
    INVALID_CMB_USE = 0x12, "Invalid Use of Controller Memory Buffer"
    PRP_OFFSET_INVALID = 0x13, "PRP Offset Invalid"
    ATOMIC_WRITE_UNIT_EXCEEDED = 0x14, "Atomic Write Unit Exceeded"
    OPERATION_DENIED = 0x15, "Operation Denied"
    SGL_OFFSET_INVALID = 0x16, "SGL Offset Invalid"
    # NVMe 1.3 only (reserved since 1.4); Linux still has NVME_SC_SGL_INVALID_SUBTYPE.
    SGL_SUBTYPE_INVALID = 0x17, "SGL Sub Type Invalid"
    HOST_ID_INCONSISTENT_FORMAT = 0x18, "Host Identifier Inconsistent Format"
    KEEP_ALIVE_TIMER_EXPIRED = 0x19, "Keep Alive Timer Expired"
    KEEP_ALIVE_TIMEOUT_INVALID = 0x1A, "Keep Alive Timeout Invalid"
    ABORTED_PREEMPT_AND_ABORT = 0x1B, "Command Aborted due to Preempt and Abort"
    SANITIZE_FAILED = 0x1C, "Sanitize Failed"
    SANITIZE_IN_PROGRESS = 0x1D, "Sanitize In Progress"
    SGL_DATA_BLOCK_GRANULARITY_INVALID = 0x1E, "SGL Data Block Granularity Invalid"
    NOT_SUPPORTED_FOR_CMB_QUEUE = 0x1F, "Command Not Supported for Queue in CMB"
    NAMESPACE_WRITE_PROTECTED = 0x20, "Namespace is Write Protected"
    COMMAND_INTERRUPTED = 0x21, "Command Interrupted"
    TRANSIENT_TRANSPORT_ERROR = 0x22, "Transient Transport Error"
    PROHIBITED_BY_LOCKDOWN = 0x23, "Command Prohibited by Command and Feature Lockdown"
    ADMIN_COMMAND_MEDIA_NOT_READY = 0x24, "Admin Command Media Not Ready"
    # NVMe 2.1 additions.
    INVALID_KEY_TAG = 0x25, "Invalid Key Tag"
    HOST_DISPERSED_NS_NOT_ENABLED = 0x26, "Host Dispersed Namespace Support Not Enabled"
    HOST_ID_NOT_INITIALIZED = 0x27, "Host Identifier Not Initialized"
    INCORRECT_KEY = 0x28, "Incorrect Key"
    FDP_DISABLED = 0x29, "FDP Disabled"
    INVALID_PLACEMENT_HANDLE_LIST = 0x2A, "Invalid Placement Handle List"
    # NVM Command Set generic values.
    LBA_OUT_OF_RANGE = 0x80, "LBA Out of Range"
    CAPACITY_EXCEEDED = 0x81, "Capacity Exceeded"
    NAMESPACE_NOT_READY = 0x82, "Namespace Not Ready"
    RESERVATION_CONFLICT = 0x83, "Reservation Conflict"
    FORMAT_IN_PROGRESS = 0x84, "Format In Progress"
    # Key Value Command Set generic values.
    KV_INVALID_VALUE_SIZE = 0x85, "Invalid Value Size"
    KV_INVALID_KEY_SIZE = 0x86, "Invalid Key Size"
    KV_KEY_DOES_NOT_EXIST = 0x87, "KV Key Does Not Exist"
    KV_UNRECOVERED_ERROR = 0x88, "Unrecovered Error"
    KV_KEY_EXISTS = 0x89, "Key Exists"


class CommandSpecificStatus(_Code):
    """SCT 1h: Command Specific Status for admin commands (base figure 97)
    and, from 80h, for NVM and Zoned Namespace I/O commands.  Fabrics
    commands use :class:`FabricsStatus` for 80h and up."""

    COMPLETION_QUEUE_INVALID = 0x00, "Completion Queue Invalid"
    INVALID_QUEUE_IDENTIFIER = 0x01, "Invalid Queue Identifier"
    INVALID_QUEUE_SIZE = 0x02, "Invalid Queue Size"
    ABORT_COMMAND_LIMIT_EXCEEDED = 0x03, "Abort Command Limit Exceeded"
    # NVMe 1.0 only (reserved since); libnvme still names it.
    ABORT_COMMAND_IS_MISSING = 0x04, "Abort Command Is Missing"
    ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED = 0x05, "Asynchronous Event Request Limit Exceeded"
    INVALID_FIRMWARE_SLOT = 0x06, "Invalid Firmware Slot"
    INVALID_FIRMWARE_IMAGE = 0x07, "Invalid Firmware Image"
    INVALID_INTERRUPT_VECTOR = 0x08, "Invalid Interrupt Vector"
    INVALID_LOG_PAGE = 0x09, "Invalid Log Page"
    INVALID_FORMAT = 0x0A, "Invalid Format"
    FW_ACTIVATION_REQUIRES_CONVENTIONAL_RESET = 0x0B, "Firmware Activation Requires Conventional Reset"
    INVALID_QUEUE_DELETION = 0x0C, "Invalid Queue Deletion"
    FEATURE_ID_NOT_SAVEABLE = 0x0D, "Feature Identifier Not Saveable"
    FEATURE_NOT_CHANGEABLE = 0x0E, "Feature Not Changeable"
    FEATURE_NOT_NAMESPACE_SPECIFIC = 0x0F, "Feature Not Namespace Specific"
    FW_ACTIVATION_REQUIRES_NVM_SUBSYSTEM_RESET = 0x10, "Firmware Activation Requires NVM Subsystem Reset"
    FW_ACTIVATION_REQUIRES_CONTROLLER_LEVEL_RESET = 0x11, "Firmware Activation Requires Controller Level Reset"
    FW_ACTIVATION_REQUIRES_MAX_TIME_VIOLATION = 0x12, "Firmware Activation Requires Maximum Time Violation"
    FW_ACTIVATION_PROHIBITED = 0x13, "Firmware Activation Prohibited"
    OVERLAPPING_RANGE = 0x14, "Overlapping Range"
    NAMESPACE_INSUFFICIENT_CAPACITY = 0x15, "Namespace Insufficient Capacity"
    NAMESPACE_ID_UNAVAILABLE = 0x16, "Namespace Identifier Unavailable"
    NAMESPACE_ALREADY_ATTACHED = 0x18, "Namespace Already Attached"
    NAMESPACE_IS_PRIVATE = 0x19, "Namespace Is Private"
    NAMESPACE_NOT_ATTACHED = 0x1A, "Namespace Not Attached"
    THIN_PROVISIONING_NOT_SUPPORTED = 0x1B, "Thin Provisioning Not Supported"
    CONTROLLER_LIST_INVALID = 0x1C, "Controller List Invalid"
    DEVICE_SELF_TEST_IN_PROGRESS = 0x1D, "Device Self-test In Progress"
    BOOT_PARTITION_WRITE_PROHIBITED = 0x1E, "Boot Partition Write Prohibited"
    INVALID_CONTROLLER_ID = 0x1F, "Invalid Controller Identifier"
    INVALID_SECONDARY_CONTROLLER_STATE = 0x20, "Invalid Secondary Controller State"
    INVALID_CONTROLLER_RESOURCES = 0x21, "Invalid Number of Controller Resources"
    INVALID_RESOURCE_ID = 0x22, "Invalid Resource Identifier"
    SANITIZE_PROHIBITED_PMR_ENABLED = 0x23, "Sanitize Prohibited While Persistent Memory Region is Enabled"
    ANA_GROUP_ID_INVALID = 0x24, "ANA Group Identifier Invalid"
    ANA_ATTACH_FAILED = 0x25, "ANA Attach Failed"
    INSUFFICIENT_CAPACITY = 0x26, "Insufficient Capacity"
    NAMESPACE_ATTACHMENT_LIMIT_EXCEEDED = 0x27, "Namespace Attachment Limit Exceeded"
    PROHIBITION_NOT_SUPPORTED = 0x28, "Prohibition of Command Execution Not Supported"
    IOCS_NOT_SUPPORTED = 0x29, "I/O Command Set Not Supported"
    IOCS_NOT_ENABLED = 0x2A, "I/O Command Set Not Enabled"
    IOCS_COMBINATION_REJECTED = 0x2B, "I/O Command Set Combination Rejected"
    INVALID_IOCS = 0x2C, "Invalid I/O Command Set"
    IDENTIFIER_UNAVAILABLE = 0x2D, "Identifier Unavailable"
    # Discovery Information Management and fabric zoning (NVMe 2.0, TP 8010).
    INVALID_DISCOVERY_INFORMATION = 0x2F, "Invalid Discovery Information"
    ZONING_DATA_STRUCTURE_LOCKED = 0x30, "Zoning Data Structure Locked"
    ZONING_DATA_STRUCTURE_NOT_FOUND = 0x31, "Zoning Data Structure Not Found"
    INSUFFICIENT_DISCOVERY_RESOURCES = 0x32, "Insufficient Discovery Resources"
    REQUESTED_FUNCTION_DISABLED = 0x33, "Requested Function Disabled"
    ZONEGROUP_ORIGINATOR_INVALID = 0x34, "ZoneGroup Originator Invalid"
    # Live migration (NVMe 2.1).
    INVALID_CONTROLLER_DATA_QUEUE = 0x37, "Invalid Controller Data Queue"
    NOT_ENOUGH_RESOURCES = 0x38, "Not Enough Resources"
    CONTROLLER_SUSPENDED = 0x39, "Controller Suspended"
    CONTROLLER_NOT_SUSPENDED = 0x3A, "Controller Not Suspended"
    CONTROLLER_DATA_QUEUE_FULL = 0x3B, "Controller Data Queue Full"
    # NVM Command Set command specific values.
    CONFLICTING_ATTRIBUTES = 0x80, "Conflicting Attributes"
    INVALID_PROTECTION_INFORMATION = 0x81, "Invalid Protection Information"
    WRITE_TO_READ_ONLY_RANGE = 0x82, "Attempted Write to Read Only Range"
    COMMAND_SIZE_LIMIT_EXCEEDED = 0x83, "Command Size Limit Exceeded"
    INCOMPATIBLE_NAMESPACE_OR_FORMAT = 0x85, "Incompatible Namespace or Format"
    FAST_COPY_NOT_POSSIBLE = 0x86, "Fast Copy Not Possible"
    OVERLAPPING_IO_RANGE = 0x87, "Overlapping I/O Range"
    INSUFFICIENT_RESOURCES = 0x89, "Insufficient Resources"
    # Zoned Namespace Command Set command specific values.
    INVALID_ZONE_OPERATION_REQUEST = 0xB6, "Invalid Zone Operation Request"
    ZRWA_RESOURCES_UNAVAILABLE = 0xB7, "ZRWA Resources Unavailable"
    ZONE_BOUNDARY_ERROR = 0xB8, "Zone Boundary Error"
    ZONE_IS_FULL = 0xB9, "Zone Is Full"
    ZONE_IS_READ_ONLY = 0xBA, "Zone Is Read Only"
    ZONE_IS_OFFLINE = 0xBB, "Zone Is Offline"
    ZONE_INVALID_WRITE = 0xBC, "Zone Invalid Write"
    TOO_MANY_ACTIVE_ZONES = 0xBD, "Too Many Active Zones"
    TOO_MANY_OPEN_ZONES = 0xBE, "Too Many Open Zones"
    INVALID_ZONE_STATE_TRANSITION = 0xBF, "Invalid Zone State Transition"


class FabricsStatus(_Code):
    """SCT 1h, 80h and up, for Fabrics commands (Connect, Property Get/Set,
    Authentication, Disconnect) and the Discovery log: the Fabrics command
    status values of the base spec."""

    INCOMPATIBLE_FORMAT = 0x80, "Connect Incompatible Format"
    CONTROLLER_BUSY = 0x81, "Connect Controller Busy"
    CONNECT_INVALID_PARAMETERS = 0x82, "Connect Invalid Parameters"
    CONNECT_RESTART_DISCOVERY = 0x83, "Connect Restart Discovery"
    CONNECT_INVALID_HOST = 0x84, "Connect Invalid Host"
    INVALID_QUEUE_TYPE = 0x85, "Invalid Queue Type"
    DISCOVER_RESTART = 0x90, "Discover Restart"
    AUTHENTICATION_REQUIRED = 0x91, "Authentication Required"


class MediaStatus(_Code):
    """SCT 2h: Media and Data Integrity Errors (base figure 98, NVM Command
    Set 80h-88h)."""

    WRITE_FAULT = 0x80, "Write Fault"
    UNRECOVERED_READ_ERROR = 0x81, "Unrecovered Read Error"
    GUARD_CHECK_ERROR = 0x82, "End-to-end Guard Check Error"
    APPLICATION_TAG_CHECK_ERROR = 0x83, "End-to-end Application Tag Check Error"
    REFERENCE_TAG_CHECK_ERROR = 0x84, "End-to-end Reference Tag Check Error"
    COMPARE_FAILURE = 0x85, "Compare Failure"
    ACCESS_DENIED = 0x86, "Access Denied"
    DEALLOCATED_OR_UNWRITTEN_BLOCK = 0x87, "Deallocated or Unwritten Logical Block"
    STORAGE_TAG_CHECK_ERROR = 0x88, "End-to-End Storage Tag Check Error"


class PathStatus(_Code):
    """SCT 3h: Path Related Status (base figure 99).  60h-6Fh are controller
    detected pathing errors, 70h-7Fh host detected ones (Linux completes
    commands it cancels with 371h, Command Aborted By Host)."""

    INTERNAL_PATH_ERROR = 0x00, "Internal Path Error"
    ANA_PERSISTENT_LOSS = 0x01, "Asymmetric Access Persistent Loss"
    ANA_INACCESSIBLE = 0x02, "Asymmetric Access Inaccessible"
    ANA_TRANSITION = 0x03, "Asymmetric Access Transition"
    CONTROLLER_PATHING_ERROR = 0x60, "Controller Pathing Error"
    HOST_PATHING_ERROR = 0x70, "Host Pathing Error"
    ABORTED_BY_HOST = 0x71, "Command Aborted By Host"


_SCT_OF: dict[type, StatusCodeType] = {
    GenericStatus: StatusCodeType.GENERIC,
    CommandSpecificStatus: StatusCodeType.COMMAND_SPECIFIC,
    FabricsStatus: StatusCodeType.COMMAND_SPECIFIC,
    MediaStatus: StatusCodeType.MEDIA,
    PathStatus: StatusCodeType.PATH,
}


def _lookup_code(sct: int, sc: int, fabrics: bool) -> _Code | None:
    """The enum member for (SCT, SC), or None."""
    if sct == StatusCodeType.GENERIC:
        table: type[_Code] = GenericStatus
    elif sct == StatusCodeType.COMMAND_SPECIFIC:
        table = FabricsStatus if (fabrics and sc >= 0x80) else CommandSpecificStatus
    elif sct == StatusCodeType.MEDIA:
        table = MediaStatus
    elif sct == StatusCodeType.PATH:
        table = PathStatus
    else:
        return None
    return table._value2member_map_.get(sc)  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# What nvme-cli prints.  libnvme's nvme_status_to_string() (src/nvme/util.c)
# has one table per kind of code; a code missing from its table prints as
# "unrecognized".  These strings are reproduced exactly (typos included)
# because scripts match nvme-cli's output.

_CLI_GENERIC: dict[int, str] = {
    0x00: "Successful Completion: The command completed without error",
    0x01: "Invalid Command Opcode: A reserved coded value or an unsupported value in the command opcode field",
    0x02: "Invalid Field in Command: A reserved coded value or an unsupported value in a defined field",
    0x03: "Command ID Conflict: The command identifier is already in use",
    0x04: "Data Transfer Error: Transferring the data or metadata associated with a command experienced an error",
    0x05: "Commands Aborted due to Power Loss Notification: Indicates that the command was aborted due to a power loss notification",
    0x06: "Internal Error: The command was not completed successfully due to an internal error",
    0x07: "Command Abort Requested: The command was aborted due to an Abort command",
    0x08: "Command Aborted due to SQ Deletion: The command was aborted due to a Delete I/O Submission Queue",
    0x09: "Command Aborted due to Failed Fused Command: The command was aborted due to the other command in a fused operation failing",
    0x0A: "Command Aborted due to Missing Fused Command: The fused command was aborted due to the adjacent submission queue entry not containing a fused command",
    0x0B: "Invalid Namespace or Format: The namespace or the format of that namespace is invalid",
    0x0C: "Command Sequence Error: The command was aborted due to a protocol violation in a multi- command sequence",
    0x0D: "Invalid SGL Segment Descriptor: The command includes an invalid SGL Last Segment or SGL Segment descriptor",
    0x0E: "Invalid Number of SGL Descriptors: There is an SGL Last Segment descriptor or an SGL Segment descriptor in a location other than the last descriptor of a segment based on the length indicated",
    0x0F: "Data SGL Length Invalid: The length of a Data SGL is too short or too long and the controller does not support SGL transfers longer than the amount of data to be transferred",
    0x10: "Metadata SGL Length Invalid: The length of a Metadata SGL is too short or too long and the controller does not support SGL transfers longer than the amount of data to be transferred",
    0x11: "SGL Descriptor Type Invalid: The type of an SGL Descriptor is a type that is not supported by the controller",
    0x12: "Invalid Use of Controller Memory Buffer: The attempted use of the Controller Memory Buffer is not supported by the controller",
    0x13: "PRP Offset Invalid: The Offset field for a PRP entry is invalid",
    0x14: "Atomic Write Unit Exceeded: The length specified exceeds the atomic write unit size",
    0x15: "Operation Denied: The command was denied due to lack of access rights",
    0x16: "SGL Offset Invalid: The offset specified in a descriptor is invalid",
    0x18: "Host Identifier Inconsistent Format: The NVM subsystem detected the simultaneous use of 64- bit and 128-bit Host Identifier values on different controllers",
    0x19: "Keep Alive Timer Expired: The Keep Alive Timer expired",
    0x1A: "Keep Alive Timeout Invalid: The Keep Alive Timeout value specified is invalid",
    0x1B: "Command Aborted due to Preempt and Abort: The command was aborted due to a Reservation Acquire command",
    0x1C: "Sanitize Failed: The most recent sanitize operation failed and no recovery action has been successfully completed",
    0x1D: "Sanitize In Progress: The requested function is prohibited while a sanitize operation is in progress",
    0x1E: "SGL Data Block Granularity Invalid: The Address alignment or Length granularity for an SGL Data Block descriptor is invalid",
    0x1F: "Command Not Supported for Queue in CMB: The controller does not support Submission Queue in the Controller Memory Buffer or Completion Queue in the Controller Memory Buffer",
    0x20: "Namespace is Write Protected: The command is prohibited while the namespace is write protected",
    0x21: "Command Interrupted: Command processing was interrupted and the controller is unable to successfully complete the command",
    0x22: "Transient Transport Error: A transient transport error was detected",
    0x23: "Command Prohibited by Command and Feature Lockdown: The command was aborted due to command execution being prohibited by the Command and Feature Lockdown",
    0x24: "Admin Command Media Not Ready: The Admin command requires access to media and the media is not ready",
    0x25: "The command was aborted due to an invalid KEYTAG field value",
    0x26: "The command is prohibited while the Host Disperesed Namespace Support (HDISNS) field is not set to 1h in the Host Behavior Support feature",
    0x27: "Host Identifier Not Initialized",
    0x28: "The command was aborted due to the key associated with the KEYTAG field being incorrect",
    0x80: "LBA Out of Range: The command references an LBA that exceeds the size of the namespace",
    0x81: "Capacity Exceeded: Execution of the command has caused the capacity of the namespace to be exceeded",
    0x82: "Namespace Not Ready: The namespace is not ready to be accessed",
    0x83: "Reservation Conflict: The command was aborted due to a conflict with a reservation held on the accessed namespace",
    0x84: "Format In Progress: A Format NVM command is in progress on the namespace",
    0x85: "The value size is not valid",
    0x86: "The KV key size is not valid",
    0x87: "The Store If Key Exists (SIKE) bit is set to '1' in the Store Option field and the KV key does not exists",
    0x88: "There was an unrecovered error when reading from the medium",
    0x89: "The Store If No Key Exists (SINKE) bit is set to '1' in the Store Option field and the KV key exists",
}

_CLI_CMD_SPECIFIC: dict[int, str] = {
    0x00: "Completion Queue Invalid: The Completion Queue identifier specified in the command does not exist",
    0x01: "Invalid Queue Identifier: The creation of the I/O Completion Queue failed due to an invalid queue identifier specified as part of the command",
    0x02: "Invalid Queue Size: The host attempted to create an I/O Completion Queue with an invalid number of entries",
    0x03: "Abort Command Limit Exceeded: The number of concurrently outstanding Abort commands has exceeded the limit indicated in the Identify Controller data structure",
    0x04: "Abort Command Is Missing: The abort command is missing",
    0x05: "Asynchronous Event Request Limit Exceeded: The number of concurrently outstanding Asynchronous Event Request commands has been exceeded",
    0x06: "Invalid Firmware Slot: The firmware slot indicated is invalid or read only",
    0x07: "Invalid Firmware Image: The firmware image specified for activation is invalid and not loaded by the controller",
    0x08: "Invalid Interrupt Vector: The creation of the I/O Completion Queue failed due to an invalid interrupt vector specified as part of the command",
    0x09: "Invalid Log Page: The log page indicated is invalid",
    0x0A: "Invalid Format: The LBA Format specified is not supported",
    0x0B: "Firmware Activation Requires Conventional Reset: The firmware commit was successful, however, activation of the firmware image requires a conventional reset",
    0x0C: "Invalid Queue Deletion: Invalid I/O Completion Queue specified to delete",
    0x0D: "Feature Identifier Not Saveable: The Feature Identifier specified does not support a saveable value",
    0x0E: "Feature Not Changeable: The Feature Identifier is not able to be changed",
    0x0F: "Feature Not Namespace Specific: The Feature Identifier specified is not namespace specific",
    0x10: "Firmware Activation Requires NVM Subsystem Reset: The firmware commit was successful, however, activation of the firmware image requires an NVM Subsystem",
    0x11: "Firmware Activation Requires Controller Level Reset: The firmware commit was successful; however, the image specified does not support being activated without a reset",
    0x12: "Firmware Activation Requires Maximum Time Violation: The image specified if activated immediately would exceed the Maximum Time for Firmware Activation (MTFA) value reported in Identify Controller",
    0x13: "Firmware Activation Prohibited: The image specified is being prohibited from activation by the controller for vendor specific reasons",
    0x14: "Overlapping Range: The downloaded firmware image has overlapping ranges",
    0x15: "Namespace Insufficient Capacity: Creating the namespace requires more free space than is currently available",
    0x16: "Namespace Identifier Unavailable: The number of namespaces supported has been exceeded",
    0x18: "Namespace Already Attached: The controller is already attached to the namespace specified",
    0x19: "Namespace Is Private: The namespace is private and is already attached to one controller",
    0x1A: "Namespace Not Attached: The request to detach the controller could not be completed because the controller is not attached to the namespace",
    0x1B: "Thin Provisioning Not Supported: Thin provisioning is not supported by the controller",
    0x1C: "Controller List Invalid: The controller list provided contains invalid controller ids",
    0x1D: "Device Self-test In Progress: The controller or NVM subsystem already has a device self-test operation in process",
    0x1E: "Boot Partition Write Prohibited: The command tried to modify a locked Boot Partition",
    0x1F: "Invalid Controller Identifier: An invalid controller id was specified",
    0x20: "Invalid Secondary Controller State: The requested secondary controller action is invalid based on the secondary and primary controllers current states",
    0x21: "Invalid Number of Controller Resources: The specified number of Flexible Resources is invalid",
    0x22: "Invalid Resource Identifier: At least one of the specified resource identifiers was invalid",
    0x23: "Sanitize Prohibited While Persistent Memory Region is Enabled",
    0x24: "ANA Group Identifier Invalid: The specified ANA Group Identifier (ANAGRPID) is not supported in the submitted command",
    0x25: "ANA Attach Failed: The controller is not attached to the namespace as a result of an ANA condition",
    0x26: "Insufficient Capacity: Requested operation requires more free space than is currently available",
    0x27: "Namespace Attachment Limit Exceeded: Attaching the ns to a controller causes max number of ns attachments allowed to be exceeded",
    0x28: "Prohibition of Command Execution Not Supported",
    0x29: "The I/O command set is not supported",
    0x2A: "The I/O command set is not enabled",
    0x2B: "The I/O command set combination is rejected",
    0x2C: "The I/O command set is invalid",
    0x2D: "Identifier Unavailable: The number of Endurance Groups or NVM Sets supported has been exceeded",
    0x2F: "Discovery Info Entry not applicable to selected entity",
    0x30: "The requested Zoning data structure is locked on the CDC",
    0x31: "The requested Zoning data structure does not exist on the CDC",
    0x32: "Discovery Info entries exceed Discovery Controller's capacity",
    0x33: "Fabric Zoning is not enabled on the CDC",
    0x34: "The NQN contained in the ZoneGroup Originator field does not match the Host NQN used by the DDC to connect to the CDC",
    0x37: "Invalid Controller Data Queue",
    0x38: "Not Enough Resources",
    0x39: "Controller Suspended: Operation failed because the controller is currently in a suspended state",
    0x3A: "Controller Not Suspended: Operation failed because the controller is not in a suspended state",
    0x3B: "Controller Data Queue Full",
}

_CLI_NVM: dict[int, str] = {
    0x80: "Conflicting Attributes: The attributes specified in the command are conflicting",
    0x81: "Invalid Protection Information: The command's Protection Information Field settings are invalid for the namespace's Protection Information format",
    0x82: "Attempted Write to Read Only Range: The LBA range specified contains read-only blocks",
    0x83: "Command Size Limit Exceeded",
    0x85: "Incompatible Namespace or Format",
    0x86: "Fast Copy Not Possible",
    0x87: "Overlapping I/O Range",
    0x89: "Insufficient Resources",
    0xB6: "Invalid Zone Operation Request: The operation requested is invalid",
    0xB7: "ZRWA Resources Unavailable: No ZRWAs are available",
    0xB8: "Zoned Boundary Error: Invalid Zone Boundary crossing",
    0xB9: "Zone Is Full: The accessed zone is in ZSF:Full state",
    0xBA: "Zone Is Read Only: The accessed zone is in ZSRO:Read Only state",
    0xBB: "Zone Is Offline: The access zone is in ZSO:Offline state",
    0xBC: "Zone Invalid Write: The write to zone was not at the write pointer offset",
    0xBD: "Too Many Active Zones: The controller does not allow additional active zones",
    0xBE: "Too Many Open Zones: The controller does not allow additional open zones",
    0xBF: "Invalid Zone State Transition: The request is not a valid zone state transition",
}

_CLI_FABRICS: dict[int, str] = {
    0x80: "Incompatible Format: The NVM subsystem does not support the record format specified by the host",
    0x81: "Controller Busy: The controller is already associated with a host",
    0x82: "Connect Invalid Parameters: One or more of the command parameters",
    0x83: "Connect Restart Discovery: The NVM subsystem requested is not available",
    0x84: "Connect Invalid Host: The host is not allowed to establish an association to either any controller in the NVM subsystem or the specified controller",
    0x85: "Invalid Queue Type: The command was sent on the wrong queue type",
    0x90: "Discover Restart: The snapshot of the records is now invalid or out of date",
    0x91: "Authentication Required: NVMe in-band authentication is required and the queue has not yet been authenticated",
}

_CLI_MEDIA: dict[int, str] = {
    0x80: "Write Fault: The write data could not be committed to the media",
    0x81: "Unrecovered Read Error: The read data could not be recovered from the media",
    0x82: "End-to-end Guard Check Error: The command was aborted due to an end-to-end guard check failure",
    0x83: "End-to-end Application Tag Check Error: The command was aborted due to an end-to-end application tag check failure",
    0x84: "End-to-end Reference Tag Check Error: The command was aborted due to an end-to-end reference tag check failure",
    0x85: "Compare Failure: The command failed due to a miscompare during a Compare command",
    0x86: "Access Denied: Access to the namespace and/or LBA range is denied due to lack of access rights",
    0x87: "Deallocated or Unwritten Logical Block: The command failed due to an attempt to read from or verify an LBA range containing a deallocated or unwritten logical block",
    0x88: "End-to-End Storage Tag Check Error: The command was aborted due to an end-to-end storage tag check failure",
}

_CLI_PATH: dict[int, str] = {
    0x00: "Internal Path Error: An internal error specific to the controller processing the command prevented completion",
    0x01: "Asymmetric Access Persistent Loss: The controller is in a persistent loss state with the requested namespace",
    0x02: "Asymmetric Access Inaccessible: The controller is in an inaccessible state with the requested namespace",
    0x03: "Asymmetric Access Transition: The controller is currently transitioning states with the requested namespace",
    0x60: "Controller Pathing Error: A pathing error was detected by the controller",
    0x70: "Host Pathing Error: A pathing error was detected by the host",
    0x71: "Command Aborted By Host: The command was aborted as a result of host action",
}

_CLI_UNRECOGNIZED = "unrecognized"
_CLI_UNKNOWN = "Unknown status"
_CLI_VENDOR = "Vendor Specific Status"


def nvme_cli_string(value: int, fabrics: bool = False) -> str:
    """The text nvme-cli prints for a 15-bit status value (libnvme's
    ``nvme_status_to_string(value, fabrics)``); CRD, More and DNR are ignored.

    Command specific codes below 80h always use the admin table; from 80h the
    Fabrics table is used when ``fabrics`` is true, the NVM/ZNS one otherwise.
    """
    value = int(value)
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"status value {value:#x} is not a 16-bit number")
    sc = value & SC_MASK
    sct = (value & SCT_MASK) >> SCT_SHIFT
    if sct == StatusCodeType.GENERIC:
        return _CLI_GENERIC.get(sc, _CLI_UNRECOGNIZED)
    if sct == StatusCodeType.COMMAND_SPECIFIC:
        if sc < 0x80:
            return _CLI_CMD_SPECIFIC.get(sc, _CLI_UNRECOGNIZED)
        return (_CLI_FABRICS if fabrics else _CLI_NVM).get(sc, _CLI_UNRECOGNIZED)
    if sct == StatusCodeType.MEDIA:
        return _CLI_MEDIA.get(sc, _CLI_UNRECOGNIZED)
    if sct == StatusCodeType.PATH:
        return _CLI_PATH.get(sc, _CLI_UNRECOGNIZED)
    if sct == StatusCodeType.VENDOR:
        return _CLI_VENDOR
    return _CLI_UNKNOWN


def _c_hex(value: int) -> str:
    """C's ``printf("%#x")``: no prefix for zero."""
    return f"{value:#x}" if value else "0"


def _flag(name: str, value: Any) -> bool:
    if value not in (0, 1, True, False):
        raise ValueError(f"{name}: a flag takes 0/1/True/False, not {value!r}")
    return bool(value)


_MADE: dict = {}  # Status._make's objects (at most 2 x 32768 per class)


class Status:
    """An immutable NVMe completion status: SCT, SC, CRD, More and DNR.

    ``Status(sct, sc, crd=0, more=False, dnr=False, fabrics=False)``; ``sc``
    may be an enum member (its type must match ``sct``; a
    :class:`FabricsStatus` member sets ``fabrics``).  ``fabrics`` says the
    command was a Fabrics command, which only changes how command specific
    codes 80h and up are named; it is not part of the wire value nor of
    equality.
    """

    __slots__ = ("_value", "_fabrics", "ok")

    _value: int
    _fabrics: bool
    #: Successful Completion (SCT 0h, SC 0h), whatever CRD/More/DNR say: an
    #: attribute set once (every completion asks).
    ok: bool

    def __init__(self, sct: int, sc: int, *, crd: int = 0, more: bool = False, dnr: bool = False,
                 fabrics: bool = False) -> None:
        sct_i, sc_i, crd_i = int(sct), int(sc), int(crd)
        if not 0 <= sct_i <= 7:
            raise ValueError(f"SCT {sct_i:#x} does not fit in 3 bits")
        if not 0 <= sc_i <= 0xFF:
            raise ValueError(f"SC {sc_i:#x} does not fit in 8 bits")
        if not 0 <= crd_i <= 3:
            raise ValueError(f"CRD {crd_i} does not fit in 2 bits (0-3)")
        fabrics = _flag("fabrics", fabrics)
        if isinstance(sc, _Code):
            if sc.sct != sct_i:
                raise ValueError(f"{type(sc).__name__}.{sc.name} is a {sc.sct.title} code, "
                                 f"not SCT {sct_i:#x}")
            if isinstance(sc, FabricsStatus):
                fabrics = True
        value = sc_i | sct_i << SCT_SHIFT | crd_i << CRD_SHIFT
        if _flag("more", more):
            value |= MORE
        if _flag("dnr", dnr):
            value |= DNR
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_fabrics", fabrics)
        object.__setattr__(self, "ok", not value & (SCT_MASK | SC_MASK))

    @classmethod
    def _make(cls, value: int, fabrics: bool) -> "Status":
        # Immutable: one object per (value, fabrics) of this class, made once
        # (a completion's status is decoded on every command).
        key = (cls, value, bool(fabrics))
        obj = _MADE.get(key)
        if obj is None:
            obj = object.__new__(cls)
            object.__setattr__(obj, "_value", value)
            object.__setattr__(obj, "_fabrics", bool(fabrics))
            object.__setattr__(obj, "ok", not value & (SCT_MASK | SC_MASK))
            _MADE[key] = obj
        return obj

    # -- decoding ----------------------------------------------------------

    @classmethod
    def from_value(cls, value: int, *, fabrics: bool = False) -> "Status":
        """From Linux's 15-bit status (ioctl result, ``Completion.status``)."""
        value = int(value)
        if not 0 <= value <= STATUS_MASK:
            raise ValueError(f"status value {value:#x} does not fit in 15 bits")
        return cls._make(value, fabrics)

    @classmethod
    def from_field(cls, field: int, *, fabrics: bool = False) -> "Status":
        """From the 16-bit word at CQE byte 14 (phase tag in bit 0, ignored)."""
        if field <= 1 and field >= 0 and cls is Status and not fabrics:  # success: the usual completion
            return _SUCCESS
        field = int(field)
        if not 0 <= field <= 0xFFFF:
            raise ValueError(f"status field {field:#x} does not fit in 16 bits")
        return cls._make(field >> 1, fabrics)

    @classmethod
    def of(cls, cqe: Any, *, fabrics: bool = False) -> "Status":
        """The status of a :class:`~nvmestack.spec.cqe.Completion`."""
        return cls._make(cqe.status, fabrics)

    # -- encoding ----------------------------------------------------------

    def apply(self, cqe: Any) -> None:
        """Write this status into a Completion (the phase tag is untouched)."""
        cqe.status = self._value

    def to_field(self, phase: bool = False) -> int:
        """The 16-bit word at CQE byte 14, with the given phase tag."""
        return self._value << 1 | _flag("phase", phase)

    def replace(self, **changes: Any) -> "Status":
        """A copy with some of sct, sc, crd, more, dnr, fabrics changed."""
        fields = dict(sct=self.sct, sc=self.sc, crd=self.crd, more=self.more, dnr=self.dnr,
                      fabrics=self._fabrics)
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"Status has no field(s) {', '.join(sorted(unknown))}")
        fields.update(changes)
        return Status(fields.pop("sct"), fields.pop("sc"), **fields)

    # -- fields ------------------------------------------------------------

    @property
    def value(self) -> int:
        """Linux's 15-bit status: SC | SCT << 8 | CRD << 11 | M << 13 | DNR << 14."""
        return self._value

    @property
    def sct(self) -> int:
        """Status Code Type; a :class:`StatusCodeType` when it is a defined one."""
        sct = (self._value & SCT_MASK) >> SCT_SHIFT
        return StatusCodeType._value2member_map_.get(sct, sct)  # type: ignore[return-value]

    @property
    def sc(self) -> int:
        """Status Code (the raw 8-bit number)."""
        return self._value & SC_MASK

    @property
    def crd(self) -> int:
        """Command Retry Delay: 0, or which of CRDT1-3 to wait before a retry."""
        return (self._value & CRD_MASK) >> CRD_SHIFT

    @property
    def more(self) -> bool:
        """More: the Error Information log page has more about this command."""
        return bool(self._value & MORE)

    @property
    def dnr(self) -> bool:
        """Do Not Retry: the same command is expected to fail again."""
        return bool(self._value & DNR)

    @property
    def fabrics(self) -> bool:
        """Whether command specific codes 80h+ are read as Fabrics statuses."""
        return self._fabrics

    # -- meaning -----------------------------------------------------------

    @property
    def code(self) -> _Code | None:
        """The enum member for this SCT/SC, or None for an undefined code."""
        return _lookup_code((self._value & SCT_MASK) >> SCT_SHIFT, self._value & SC_MASK, self._fabrics)

    @property
    def name(self) -> str:
        """The enum member name (``"INVALID_FIELD"``), or an ``"Unknown ..."`` text."""
        code = self.code
        return code.name if code is not None else self._unknown()

    @property
    def title(self) -> str:
        """The specification's name for the code, or an ``"Unknown ..."`` text."""
        code = self.code
        return code.title if code is not None else self._unknown()

    def _unknown(self) -> str:
        sct = self.sct
        if sct == StatusCodeType.VENDOR:
            return f"Unknown vendor specific status {self.sc:#04x}"
        if isinstance(sct, StatusCodeType):
            return f"Unknown {sct.title} code {self.sc:#04x}"
        return f"Unknown status code type {int(sct)}, status code {self.sc:#04x}"

    @property
    def string(self) -> str:
        """The text nvme-cli prints for this status (without the value)."""
        return nvme_cli_string(self._value, self._fabrics)

    def __str__(self) -> str:
        """What nvme-cli prints after ``"NVMe status: "``: ``text(0x4002)``."""
        return f"{self.string}({_c_hex(self._value)})"

    def __repr__(self) -> str:
        sct = self.sct
        sct_s = sct.name if isinstance(sct, StatusCodeType) else str(int(sct))
        code = self.code
        parts = [sct_s, code.name if code is not None else f"{self.sc:#04x}"]
        if self.crd:
            parts.append(f"crd={self.crd}")
        if self.more:
            parts.append("more=True")
        if self.dnr:
            parts.append("dnr=True")
        if self._fabrics:
            parts.append("fabrics=True")
        return f"Status({', '.join(parts)})"

    def __int__(self) -> int:
        return self._value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Status):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("nvme-status", self._value))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Status is immutable; use replace()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Status is immutable")

    def __reduce__(self):
        return (Status._make, (self._value, self._fabrics))


_SUCCESS = Status._make(0, False)


SUCCESS = Status(StatusCodeType.GENERIC, GenericStatus.SUCCESS)
