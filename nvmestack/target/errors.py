"""How command handlers fail: raise :class:`NvmeError` with the precise status."""

from __future__ import annotations

from ..spec.status import Status

__all__ = ["NvmeError"]


class NvmeError(Exception):
    """A command fails with ``status``.

    ``code`` is a status code enum member (``GenericStatus.INVALID_FIELD``,
    ``MediaStatus.UNRECOVERED_READ_ERROR`` ...) or a ready :class:`Status`.
    DNR is set unless ``dnr=False`` (the spec asks for DNR whenever the same
    command would fail again).  ``param`` is the byte offset in the SQE of
    the offending field (and ``bit`` its bit) for the error log's Parameter
    Error Location; ``lba`` the first failing block; ``dw0`` a command
    specific result to return with the error.
    """

    def __init__(
        self,
        code,
        *,
        dnr: bool = True,
        param: int | None = None,
        bit: int = 0,
        lba: int | None = None,
        dw0: int | None = None,
        msg: str = "",
    ):
        self.status = code if isinstance(code, Status) else code.status(dnr=dnr)
        self.param = param
        self.bit = bit
        self.lba = lba
        self.dw0 = dw0
        super().__init__(msg or str(self.status))
