"""Firmware slots of the subsystem (Firmware Image Download / Commit, the
Firmware Slot Information log).

The NVM subsystem has ``slots`` firmware slots (1..7); slot 1 holds the
image the device was made with and is read only by default (FRMW bit 0).
Images are downloaded in pieces by each controller (Firmware Image
Download: OFST and NUMD count dwords; pieces may come in any order but may
not overlap) and committed to a slot by Firmware Commit, which may also
activate an image now (commit action 3) or at the next reset.

Image format
------------
A firmware image is any byte string of at least 8 bytes whose first 8 bytes
are its firmware revision: printable ASCII, padded on the right with spaces
or NULs, not blank.  An image may carry an optional header right after the
revision, recognised by the magic ``b"NSFW"`` at bytes 8..11::

    bytes 0..7    firmware revision (becomes Identify Controller FR)
    bytes 8..11   b"NSFW" (optional header present)
    byte  12      reset needed to activate it (ResetRequired, 0..3)
    byte  13      security version: activating an image with a lower one
                  than the running image is prohibited (anti-rollback)
    bytes 14..15  activation time, 100 ms units (little endian): above
                  MTFA the image cannot be activated without a reset

Without the header an image activates without a reset, at security
version 0, instantly.  Anything else (shorter than 8 bytes, a revision that
is blank or not printable, a header with an unknown reset kind) is an
Invalid Firmware Image.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import IntEnum

from ..spec.admin import FirmwareCommitAction
from ..spec.log import FirmwareSlotLog
from ..spec.status import CommandSpecificStatus, GenericStatus
from .errors import NvmeError

__all__ = [
    "HEADER_MAGIC",
    "REVISION_SIZE",
    "SLOTS",
    "FirmwareImage",
    "FirmwareSlots",
    "InvalidImage",
    "ResetRequired",
]

SLOTS = 7
REVISION_SIZE = 8
HEADER_MAGIC = b"NSFW"
HEADER_SIZE = 16
MAX_IMAGE_SIZE = 16 * 1024 * 1024

# Firmware Commit CDW10 is SQE bytes 40..43.
_CDW10 = 40


class ResetRequired(IntEnum):
    """What it takes to activate an image (our image header, byte 12)."""

    NONE = 0  # activates without a reset (commit action 3) or at any reset
    CONTROLLER = 1  # a Controller Level Reset (commit action 3 -> status 11h)
    CONVENTIONAL = 2  # a conventional reset (status 0Bh)
    SUBSYSTEM = 3  # an NVM Subsystem Reset (status 10h)


class InvalidImage(ValueError):
    """The bytes are not a firmware image in our format."""


@dataclass(frozen=True)
class FirmwareImage:
    revision: str
    data: bytes = b""
    reset: ResetRequired = ResetRequired.NONE
    security_version: int = 0
    activation_time: int = 0  # 100 ms units

    @classmethod
    def parse(cls, data: bytes) -> FirmwareImage:
        data = bytes(data)
        if len(data) < REVISION_SIZE:
            raise InvalidImage(f"an image of {len(data)} bytes has no revision")
        raw = data[:REVISION_SIZE].rstrip(b" \0")
        if not raw or any(not 0x20 <= b <= 0x7E for b in raw):
            raise InvalidImage("the revision is blank or not printable ASCII")
        revision = raw.decode("ascii")
        reset, security, activation = ResetRequired.NONE, 0, 0
        if len(data) >= HEADER_SIZE and data[8:12] == HEADER_MAGIC:
            try:
                reset = ResetRequired(data[12])
            except ValueError:
                raise InvalidImage(f"unknown reset kind {data[12]}") from None
            security = data[13]
            activation = int.from_bytes(data[14:16], "little")
        return cls(revision, data, reset, security, activation)

    @staticmethod
    def build(
        revision: str,
        *,
        reset: int = ResetRequired.NONE,
        security_version: int = 0,
        activation_time: int = 0,
        payload: bytes = b"",
        header: bool | None = None,
    ) -> bytes:
        """An image in our format (padded to whole dwords)."""
        rev = revision.encode("ascii")
        if not 0 < len(rev) <= REVISION_SIZE:
            raise ValueError("a revision has 1 to 8 ASCII characters")
        out = bytearray(rev.ljust(REVISION_SIZE, b" "))
        if header or (header is None and (reset or security_version or activation_time)):
            out += HEADER_MAGIC + bytes([int(reset), security_version]) + activation_time.to_bytes(2, "little")
        out += payload
        out += bytes(-len(out) % 4)
        return bytes(out)


@dataclass
class _Download:
    """The pieces of an image one controller is downloading: byte offset -> bytes."""

    pieces: dict[int, bytes] = field(default_factory=dict)

    def overlaps(self, offset: int, length: int) -> bool:
        end = offset + length
        return any(offset < o + len(p) and o < end for o, p in self.pieces.items())

    def assemble(self) -> bytes | None:
        """The whole image, or None when pieces are missing (a hole, or no
        piece at offset 0)."""
        out = bytearray()
        for offset in sorted(self.pieces):
            if offset != len(out):
                return None
            out += self.pieces[offset]
        return bytes(out) if out else None


class FirmwareSlots:
    """Firmware slots, the running image and pending activations."""

    def __init__(
        self,
        revision: str,
        *,
        slots: int = SLOTS,
        slot1_read_only: bool = True,
        activation_without_reset: bool = True,
        fwug: int = 0xFF,
        mtfa: int = 10,
        max_image_size: int = MAX_IMAGE_SIZE,
    ):
        if not 1 <= slots <= SLOTS:
            raise ValueError("an NVM subsystem has 1 to 7 firmware slots")
        self.slots = slots
        self.slot1_read_only = slot1_read_only
        self.activation_without_reset = activation_without_reset  # FRMW bit 4
        self.fwug = fwug  # Firmware Update Granularity, 4 KiB units; 0 none reported, FFh no restriction
        self.mtfa = mtfa  # Maximum Time for Firmware Activation, 100 ms units
        self.max_image_size = max_image_size
        self.lock = threading.RLock()
        self.images: dict[int, FirmwareImage] = {1: FirmwareImage(revision[:REVISION_SIZE] or "1.0")}
        self.active = 1
        # A committed activation waiting for a reset: (slot, kind of reset).
        self.pending: tuple[int, ResetRequired] | None = None
        self.downloads: dict[int, _Download] = {}  # cntlid -> image being downloaded
        self._written: dict[int, int] = {1: 0}  # slot -> sequence of its last replacement
        self._sequence = 0

    # -- what Identify and the log report -----------------------------------

    @property
    def active_revision(self) -> str:
        return self.images[self.active].revision

    @property
    def revisions(self) -> dict[int, str]:
        return {slot: image.revision for slot, image in sorted(self.images.items())}

    @property
    def next_active(self) -> int | None:
        """The slot activated at the next Controller Level Reset (AFI bits 6:4)."""
        if self.pending is not None and self.pending[1] <= ResetRequired.CONTROLLER:
            return self.pending[0]
        return None

    @property
    def frmw(self) -> int:
        """Identify Controller FRMW."""
        return (
            int(self.slot1_read_only)
            | self.slots << 1
            | int(self.activation_without_reset) << 4
        )

    def log_page(self) -> bytes:
        """The Firmware Slot Information log page (03h)."""
        with self.lock:
            page = FirmwareSlotLog()
            page.active_slot = self.active
            page.next_slot = self.next_active or 0
            for slot, image in self.images.items():
                page.set_frs(slot, image.revision)
            return bytes(page)

    def pending_reset_status(self) -> CommandSpecificStatus | None:
        """The status that says which reset a pending activation waits for
        (a Sanitize command is aborted with it)."""
        if self.pending is None:
            return None
        return _RESET_STATUS.get(self.pending[1], CommandSpecificStatus.FW_ACTIVATION_REQUIRES_CONTROLLER_LEVEL_RESET)

    # -- Firmware Image Download ----------------------------------------------

    def download(self, cntlid: int, offset: int, data: bytes) -> None:
        """Keep one piece of the image ``cntlid`` is downloading.  Raises
        NvmeError for a piece outside the image limits, off the update
        granularity, or overlapping one already received."""
        length = len(data)
        if offset + length > self.max_image_size:
            raise NvmeError(GenericStatus.INVALID_FIELD, param=44, msg="piece beyond the largest image")
        if 0 < self.fwug < 0xFF:
            gran = self.fwug * 4096
            if offset % gran:
                raise NvmeError(GenericStatus.INVALID_FIELD, param=44, msg="OFST not a multiple of FWUG")
            if length % gran:
                raise NvmeError(GenericStatus.INVALID_FIELD, param=40, msg="NUMD not a multiple of FWUG")
        with self.lock:
            dl = self.downloads.setdefault(cntlid, _Download())
            if dl.overlaps(offset, length):
                raise NvmeError(CommandSpecificStatus.OVERLAPPING_RANGE, param=44)
            dl.pieces[offset] = bytes(data)

    def discard_download(self, cntlid: int) -> None:
        with self.lock:
            self.downloads.pop(cntlid, None)

    # -- Firmware Commit ----------------------------------------------------------

    def commit(self, cntlid: int, slot: int, action: int) -> bool:
        """Firmware Commit with Firmware Slot ``slot`` and Commit Action
        ``action``.  Returns True when an image was activated immediately
        (the caller reports Firmware Activation Starting).  Raises NvmeError
        for every failure, and for the statuses that say the activation
        waits for a reset (0Bh, 10h, 11h; the commit itself took effect)."""
        ca = action
        if ca in (4, 5) or ca > 7:
            raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10, bit=3, msg="reserved commit action")
        if ca in (FirmwareCommitAction.REPLACE_BOOT_PARTITION, FirmwareCommitAction.ACTIVATE_BOOT_PARTITION):
            raise NvmeError(GenericStatus.INVALID_FIELD, param=_CDW10, bit=3, msg="no boot partitions")
        if slot > self.slots:
            raise NvmeError(CommandSpecificStatus.INVALID_FIRMWARE_SLOT, param=_CDW10)
        with self.lock:
            dl = self.downloads.get(cntlid)
            replace = ca in (FirmwareCommitAction.REPLACE, FirmwareCommitAction.REPLACE_AND_ACTIVATE) or (
                ca == FirmwareCommitAction.REPLACE_AND_ACTIVATE_NOW and dl is not None and dl.pieces
            )
            if replace:
                if not slot:
                    slot = self._choose_slot_to_replace()
                if slot == 1 and self.slot1_read_only:
                    raise NvmeError(CommandSpecificStatus.INVALID_FIRMWARE_SLOT, param=_CDW10,
                                    msg="slot 1 is read only")
                data = dl.assemble() if dl is not None else None
                # The downloaded image is consumed by the commit, good or bad.
                self.downloads.pop(cntlid, None)
                if data is None:
                    raise NvmeError(CommandSpecificStatus.INVALID_FIRMWARE_IMAGE, msg="no complete image downloaded")
                try:
                    image = FirmwareImage.parse(data)
                except InvalidImage as exc:
                    raise NvmeError(CommandSpecificStatus.INVALID_FIRMWARE_IMAGE, msg=str(exc)) from None
                if ca != FirmwareCommitAction.REPLACE:
                    self._check_activation_allowed(image)
                self.images[slot] = image
                self._sequence += 1
                self._written[slot] = self._sequence
                if self.pending is not None and self.pending[0] == slot:
                    self.pending = None  # the image that was to be activated is gone
                if ca == FirmwareCommitAction.REPLACE:
                    return False
            else:
                if not slot:
                    slot = max(self._written, key=self._written.__getitem__)
                image = self.images.get(slot)
                if image is None:
                    raise NvmeError(CommandSpecificStatus.INVALID_FIRMWARE_IMAGE, msg=f"slot {slot} is empty")
                self._check_activation_allowed(image)
            if ca in (FirmwareCommitAction.REPLACE_AND_ACTIVATE, FirmwareCommitAction.ACTIVATE):
                self.pending = (slot, image.reset)
                status = _RESET_STATUS.get(image.reset) if image.reset >= ResetRequired.CONVENTIONAL else None
                if status is not None:
                    raise NvmeError(status, dnr=False)
                return False
            # Commit action 3: activate now if the image and the controller allow it.
            if not self.activation_without_reset or image.reset == ResetRequired.CONTROLLER:
                self.pending = (slot, ResetRequired.CONTROLLER)
                raise NvmeError(CommandSpecificStatus.FW_ACTIVATION_REQUIRES_CONTROLLER_LEVEL_RESET, dnr=False)
            if image.reset >= ResetRequired.CONVENTIONAL:
                self.pending = (slot, image.reset)
                raise NvmeError(_RESET_STATUS[image.reset], dnr=False)
            if image.activation_time > self.mtfa:
                raise NvmeError(CommandSpecificStatus.FW_ACTIVATION_REQUIRES_MAX_TIME_VIOLATION)
            self.active = slot
            self.pending = None
            return True

    def _choose_slot_to_replace(self) -> int:
        """FS = 0: an empty writable slot, else the least recently written
        writable slot that is not running."""
        first = 2 if self.slot1_read_only else 1
        writable = [s for s in range(first, self.slots + 1)]
        for slot in writable:
            if slot not in self.images:
                return slot
        candidates = [s for s in writable if s != self.active] or writable
        if not candidates:
            return 1  # slot 1 only, read only: the caller reports it
        return min(candidates, key=lambda s: self._written.get(s, -1))

    def _check_activation_allowed(self, image: FirmwareImage) -> None:
        if image.security_version < self.images[self.active].security_version:
            raise NvmeError(CommandSpecificStatus.FW_ACTIVATION_PROHIBITED,
                            msg="image security version below the running one")

    # -- resets ------------------------------------------------------------------

    def _activate_pending(self, up_to: ResetRequired) -> bool:
        with self.lock:
            if self.pending is None or self.pending[1] > up_to:
                return False
            slot = self.pending[0]
            self.pending = None
            if slot in self.images:
                self.active = slot
                return True
            return False

    def controller_reset(self, cntlid: int | None = None) -> bool:
        """A Controller Level Reset: activates an image waiting for one; the
        controller's unfinished download is dropped."""
        if cntlid is not None:
            self.discard_download(cntlid)
        return self._activate_pending(ResetRequired.CONTROLLER)

    def conventional_reset(self) -> bool:
        """A conventional reset (PCIe cold, warm or hot reset; a power cycle)."""
        with self.lock:
            self.downloads.clear()
        return self._activate_pending(ResetRequired.CONVENTIONAL)

    def subsystem_reset(self) -> bool:
        """An NVM subsystem reset activates any committed image."""
        with self.lock:
            self.downloads.clear()
        return self._activate_pending(ResetRequired.SUBSYSTEM)

    # -- persistence ---------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-able description of the slots (images as hex)."""
        with self.lock:
            return {
                "active": self.active,
                "pending": list(self.pending) if self.pending else None,
                "images": {str(s): img.data.hex() or img.revision for s, img in self.images.items()},
                "raw": {str(s): bool(img.data) for s, img in self.images.items()},
            }

    def load_dict(self, state: dict) -> None:
        """Restore :meth:`to_dict` output (a restart is a power cycle: a
        pending activation takes effect)."""
        with self.lock:
            images = {}
            for key, value in state.get("images", {}).items():
                slot = int(key)
                if state.get("raw", {}).get(key):
                    images[slot] = FirmwareImage.parse(bytes.fromhex(value))
                else:
                    images[slot] = FirmwareImage(value)
            if images:
                self.images = images
                self._written = {s: 0 for s in images}
            active = int(state.get("active", 1))
            self.active = active if active in self.images else min(self.images)
            pending = state.get("pending")
            self.pending = (int(pending[0]), ResetRequired(int(pending[1]))) if pending else None
        self.conventional_reset()


_RESET_STATUS = {
    ResetRequired.CONTROLLER: CommandSpecificStatus.FW_ACTIVATION_REQUIRES_CONTROLLER_LEVEL_RESET,
    ResetRequired.CONVENTIONAL: CommandSpecificStatus.FW_ACTIVATION_REQUIRES_CONVENTIONAL_RESET,
    ResetRequired.SUBSYSTEM: CommandSpecificStatus.FW_ACTIVATION_REQUIRES_NVM_SUBSYSTEM_RESET,
}
