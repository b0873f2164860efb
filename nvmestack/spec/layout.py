"""Declarative little machinery for NVMe wire structures.

Every structure in ``nvmestack.spec`` is a :class:`Struct` subclass that names
its fields once, with their byte offset and size (and bit position for bit
fields), exactly as the specification tables give them.  An instance is a
*view* over a buffer: reading a field decodes only that field, writing a
field encodes only that field, and no copy of the buffer is ever made::

    sqe = SubmissionQueueEntry.view(ring, offset=64 * slot)   # no copy
    sqe.opcode                                                # one unpack
    cmd = Identify(cns=1)                                     # new bytearray
    bytes(cmd)                                                # the wire bytes

Views over ``bytes`` are read-only (writing raises ``TypeError``); views over
``bytearray``/``memoryview``/``mmap`` are writable.

Everything is little-endian unless a field says ``endian="big"`` (the
protection information tuple is the only big-endian structure in NVMe).
"""

from __future__ import annotations

import struct as _struct
from enum import IntEnum
from typing import Any, ClassVar, Sequence

__all__ = [
    "Field",
    "Bits",
    "Flag",
    "Str",
    "Raw",
    "Sub",
    "Array",
    "IntArray",
    "Struct",
    "ItemView",
    "check_range",
    "TitledEnum",
]

_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


class Field:
    """An unsigned integer of ``size`` bytes at byte ``offset``.

    Sizes 1, 2, 4 and 8 use a precompiled :mod:`struct`; other sizes (3, 16,
    ...) go through :func:`int.from_bytes` on a memoryview slice.
    """

    __slots__ = ("name", "offset", "size", "doc", "endian", "_st", "_max", "_unpack")

    def __init__(self, offset: int, size: int, doc: str = "", *, endian: str = "little"):
        if offset < 0 or size <= 0:
            raise ValueError("field offset must be >= 0 and size > 0")
        self.name = "?"
        self.offset = offset
        self.size = size
        self.doc = doc
        self.endian = endian
        fmt = _FORMATS.get(size)
        self._st = _struct.Struct(("<" if endian == "little" else ">") + fmt) if fmt else None
        self._max = (1 << (8 * size)) - 1
        self._unpack = self._st.unpack_from if self._st is not None else None

    @property
    def end(self) -> int:
        return self.offset + self.size

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: "Struct | None", owner: type | None = None) -> Any:
        # The hot path of every command: one unpack, no further calls.
        if obj is None:
            return self
        unpack = self._unpack
        if unpack is not None and type(self) is Field:
            return unpack(obj._mv, obj._off + self.offset)[0]
        return self.get(obj._mv, obj._off)

    def __set__(self, obj: "Struct", value: Any) -> None:
        self.set(obj._mv, obj._off, value)

    def get(self, mv: memoryview, base: int) -> int:
        off = base + self.offset
        if self._st is not None:
            return self._st.unpack_from(mv, off)[0]
        return int.from_bytes(mv[off : off + self.size], self.endian)

    def set(self, mv: memoryview, base: int, value: int) -> None:
        value = int(value)
        if not 0 <= value <= self._max:
            raise ValueError(f"{self.name}: {value:#x} does not fit in {self.size} byte(s)")
        off = base + self.offset
        if self._st is not None:
            self._st.pack_into(mv, off, value)
        else:
            mv[off : off + self.size] = value.to_bytes(self.size, self.endian)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}@{self.offset}+{self.size})"


class Bits(Field):
    """Bits ``lsb`` .. ``lsb + width - 1`` of the ``size``-byte word at ``offset``.

    Bit numbers are those of the specification: bit 0 is the least
    significant bit of the (little-endian) word.
    """

    __slots__ = ("lsb", "width", "_mask")

    def __init__(self, offset: int, size: int, lsb: int, width: int = 1, doc: str = "", *, endian: str = "little"):
        super().__init__(offset, size, doc, endian=endian)
        if lsb < 0 or width <= 0 or lsb + width > 8 * size:
            raise ValueError(f"bits {lsb}+{width} do not fit a {size}-byte word")
        self.lsb = lsb
        self.width = width
        self._mask = (1 << width) - 1

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    def __get__(self, obj: "Struct | None", owner: type | None = None) -> Any:
        if obj is None:
            return self
        if self._unpack is not None and type(self) is Bits:
            return (self._unpack(obj._mv, obj._off + self.offset)[0] >> self.lsb) & self._mask
        return self.get(obj._mv, obj._off)

    def get(self, mv: memoryview, base: int) -> int:
        return (Field.get(self, mv, base) >> self.lsb) & self._mask

    def set(self, mv: memoryview, base: int, value: int) -> None:
        value = int(value)
        if not 0 <= value <= self._mask:
            raise ValueError(f"{self.name}: {value:#x} does not fit in {self.width} bit(s)")
        word = Field.get(self, mv, base)
        word = (word & ~(self._mask << self.lsb)) | (value << self.lsb)
        Field.set(self, mv, base, word)

    def __repr__(self) -> str:
        return f"Bits({self.name}@{self.offset}+{self.size}[{self.msb}:{self.lsb}])"


class Flag(Bits):
    """A single bit, read as ``bool``."""

    __slots__ = ()

    def __init__(self, offset: int, size: int, bit: int, doc: str = "", *, endian: str = "little"):
        super().__init__(offset, size, bit, 1, doc, endian=endian)

    def get(self, mv: memoryview, base: int) -> bool:  # type: ignore[override]
        return bool(Bits.get(self, mv, base))

    def set(self, mv: memoryview, base: int, value: Any) -> None:
        if value not in (0, 1, True, False):
            raise ValueError(f"{self.name}: a flag takes 0/1/True/False, not {value!r}")
        Bits.set(self, mv, base, int(value))


class Str(Field):
    """A fixed-size text field.

    ``pad=b" "`` for the ASCII, space-padded fields of Identify (SN, MN, FR);
    ``pad=b"\\0"`` for null-terminated/padded fields (NQNs, TRADDR, ...).
    Reading strips the padding (and, for null padding, anything after the
    first NUL); writing pads and refuses text that does not fit.
    """

    __slots__ = ("pad", "encoding")

    def __init__(self, offset: int, size: int, doc: str = "", *, pad: bytes = b" ", encoding: str = "ascii"):
        super().__init__(offset, size, doc)
        self._st = self._unpack = None
        self.pad = pad
        self.encoding = encoding

    def get(self, mv: memoryview, base: int) -> str:  # type: ignore[override]
        off = base + self.offset
        raw = bytes(mv[off : off + self.size])
        if self.pad == b"\0":
            raw = raw.split(b"\0", 1)[0]
        else:
            raw = raw.rstrip(self.pad + b"\0")
        return raw.decode(self.encoding, errors="replace")

    def set(self, mv: memoryview, base: int, value: Any) -> None:
        data = value.encode(self.encoding) if isinstance(value, str) else bytes(value)
        if len(data) > self.size:
            raise ValueError(f"{self.name}: {len(data)} bytes do not fit in {self.size}")
        off = base + self.offset
        mv[off : off + self.size] = data + self.pad * (self.size - len(data))


class Raw(Field):
    """Opaque bytes (EUI64, NGUID, UUID, vendor specific areas).

    Reading returns a read-only memoryview into the buffer (no copy); writing
    takes exactly ``size`` bytes.
    """

    __slots__ = ()

    def __init__(self, offset: int, size: int, doc: str = ""):
        super().__init__(offset, size, doc)
        self._st = self._unpack = None

    def get(self, mv: memoryview, base: int) -> memoryview:  # type: ignore[override]
        off = base + self.offset
        return mv[off : off + self.size].toreadonly()

    def set(self, mv: memoryview, base: int, value: Any) -> None:
        data = memoryview(value).cast("B")
        if len(data) != self.size:
            raise ValueError(f"{self.name}: needs exactly {self.size} bytes, got {len(data)}")
        off = base + self.offset
        mv[off : off + self.size] = data


class Sub(Field):
    """A nested structure at ``offset``: reading returns a view of it."""

    __slots__ = ("cls",)

    def __init__(self, offset: int, cls: "type[Struct]", doc: str = ""):
        super().__init__(offset, cls.SIZE, doc)
        self._st = self._unpack = None
        self.cls = cls

    def get(self, mv: memoryview, base: int) -> "Struct":  # type: ignore[override]
        return self.cls.view(mv, base + self.offset)

    def set(self, mv: memoryview, base: int, value: Any) -> None:
        data = value.raw if isinstance(value, Struct) else memoryview(value).cast("B")
        if len(data) != self.size:
            raise ValueError(f"{self.name}: needs exactly {self.size} bytes, got {len(data)}")
        off = base + self.offset
        mv[off : off + self.size] = data


class ItemView(Sequence):
    """Base of the sequences of fixed-size items held in a buffer (arrays of
    structures, integer lists, SGL segments, PRP lists): indexing reads or
    writes the buffer directly.  Subclasses provide ``__len__``,
    ``_item(i)`` and ``_set_item(i, value)``; ``ITEM`` names an item in
    error messages."""

    __slots__ = ()
    ITEM: ClassVar[str] = "item"

    def _index(self, i: int) -> int:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.ITEM} {i} out of range (0..{n - 1})")
        return i

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._item(j) for j in range(*i.indices(len(self)))]
        return self._item(self._index(i))

    def __setitem__(self, i: int, value: Any) -> None:
        self._set_item(self._index(i), value)

    def __repr__(self) -> str:
        return f"[{', '.join(repr(x) for x in self)}]"

    def __eq__(self, other: object) -> bool:
        try:
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))  # type: ignore[arg-type]
        except TypeError:
            return NotImplemented


class _ArrayView(ItemView):
    __slots__ = ("_field", "_mv", "_base")

    def __init__(self, field: "Array | IntArray", mv: memoryview, base: int):
        self._field = field
        self._mv = mv
        self._base = base

    @property
    def ITEM(self) -> str:  # type: ignore[override]
        return self._field.name

    def __len__(self) -> int:
        return self._field.count

    def _item(self, i: int) -> Any:
        return self._field.item(self._mv, self._base, i)

    def _set_item(self, i: int, value: Any) -> None:
        self._field.set_item(self._mv, self._base, i, value)


class Array(Field):
    """``count`` consecutive nested structures (power states, LBA formats, ...)."""

    __slots__ = ("cls", "count", "stride")

    def __init__(self, offset: int, cls: "type[Struct]", count: int, doc: str = "", *, stride: int | None = None):
        stride = cls.SIZE if stride is None else stride
        super().__init__(offset, stride * count, doc)
        self._st = self._unpack = None
        self.cls = cls
        self.count = count
        self.stride = stride

    def get(self, mv: memoryview, base: int) -> _ArrayView:  # type: ignore[override]
        return _ArrayView(self, mv, base)

    def item(self, mv: memoryview, base: int, i: int) -> "Struct":
        return self.cls.view(mv, base + self.offset + i * self.stride)

    def set_item(self, mv: memoryview, base: int, i: int, value: Any) -> None:
        data = value.raw if isinstance(value, Struct) else memoryview(value).cast("B")
        if len(data) != self.cls.SIZE:
            raise ValueError(f"{self.name}[{i}]: needs exactly {self.cls.SIZE} bytes")
        off = base + self.offset + i * self.stride
        mv[off : off + self.cls.SIZE] = data

    def set(self, mv: memoryview, base: int, value: Any) -> None:
        items = list(value)
        if len(items) > self.count:
            raise ValueError(f"{self.name}: at most {self.count} entries")
        for i, item in enumerate(items):
            self.set_item(mv, base, i, item)


class IntArray(Field):
    """``count`` consecutive unsigned integers of ``item_size`` bytes each
    (namespace lists, controller lists, source ranges of DSM ...)."""

    __slots__ = ("item_size", "count", "_ist", "_imax")

    def __init__(self, offset: int, item_size: int, count: int, doc: str = ""):
        super().__init__(offset, item_size * count, doc)
        self._st = self._unpack = None
        self.item_size = item_size
        self.count = count
        self._ist = _struct.Struct("<" + _FORMATS[item_size])
        self._imax = (1 << (8 * item_size)) - 1

    def get(self, mv: memoryview, base: int) -> _ArrayView:  # type: ignore[override]
        return _ArrayView(self, mv, base)

    def item(self, mv: memoryview, base: int, i: int) -> int:
        return self._ist.unpack_from(mv, base + self.offset + i * self.item_size)[0]

    def set_item(self, mv: memoryview, base: int, i: int, value: int) -> None:
        value = int(value)
        if not 0 <= value <= self._imax:
            raise ValueError(f"{self.name}[{i}]: {value:#x} does not fit in {self.item_size} byte(s)")
        self._ist.pack_into(mv, base + self.offset + i * self.item_size, value)

    def set(self, mv: memoryview, base: int, value: Any) -> None:
        items = list(value)
        if len(items) > self.count:
            raise ValueError(f"{self.name}: at most {self.count} entries")
        for i, item in enumerate(items):
            self.set_item(mv, base, i, item)
        for i in range(len(items), self.count):
            self.set_item(mv, base, i, 0)


class Struct:
    """Base of every wire structure: a view of ``SIZE`` bytes of a buffer.

    Subclasses set ``SIZE`` and declare fields as class attributes.  Keyword
    arguments to the constructor set fields on a fresh zeroed buffer::

        IdentifyCommand(cns=1, nsid=0)

    ``view(buf, offset)`` wraps existing memory without copying;
    ``decode(data)`` is the same for whole buffers; ``bytes(s)`` or
    ``s.encode()`` returns the wire bytes (a copy).
    """

    SIZE: ClassVar[int] = 0
    FIELDS: ClassVar[dict[str, Field]] = {}
    # Values a freshly built instance starts with (e.g. the opcode of a typed
    # command view, the PDU type of a PDU header).  Applied before keywords.
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    __slots__ = ("_mv", "_off")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: dict[str, Field] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Field):
                    fields[name] = value
        for name, f in fields.items():
            if cls.SIZE and f.end > cls.SIZE:
                raise TypeError(f"{cls.__name__}.{name} ends at {f.end}, beyond SIZE {cls.SIZE}")
        cls.FIELDS = dict(sorted(fields.items(), key=lambda kv: (kv[1].offset, getattr(kv[1], "lsb", 0))))
        defaults: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            defaults.update(vars(klass).get("DEFAULTS", {}))
        cls.DEFAULTS = defaults

    def __init__(self, **fields: Any) -> None:
        self._mv = memoryview(bytearray(self.SIZE))
        self._off = 0
        derived = {}
        cls = type(self)
        for name, value in {**self.DEFAULTS, **fields}.items():
            if name in self.FIELDS:
                setattr(self, name, value)
            elif isinstance(getattr(cls, name, None), property):
                derived[name] = value
            else:
                raise TypeError(f"{cls.__name__} has no field {name!r}")
        # Settable properties (a count stored 0-based, a value split over two
        # dwords, ...) go after the plain fields they are built on.
        for name, value in derived.items():
            setattr(self, name, value)

    @classmethod
    def view(cls, buf: Any, offset: int = 0):
        """A view of ``cls.SIZE`` bytes of ``buf`` at ``offset``; no copy."""
        obj = cls.__new__(cls)
        mv = buf if isinstance(buf, memoryview) else memoryview(buf)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if offset < 0 or offset + cls.SIZE > len(mv):
            raise ValueError(
                f"{cls.__name__} needs {cls.SIZE} bytes at offset {offset}, buffer has {len(mv)}"
            )
        obj._mv = mv
        obj._off = offset
        return obj

    @classmethod
    def adopt(cls, buf: bytearray):
        """A view of ``buf``, a bytearray of exactly ``cls.SIZE`` bytes made
        for it (a command built from a template): :meth:`view` without the
        checks, for the I/O fast path."""
        obj = cls.__new__(cls)
        obj._mv = memoryview(buf)
        obj._off = 0
        return obj

    @classmethod
    def decode(cls, data: Any):
        """A view of the first ``SIZE`` bytes of ``data`` (which must hold them)."""
        return cls.view(data, 0)

    @classmethod
    def from_bytes(cls, data: Any):
        """A writable, private copy of the first ``SIZE`` bytes of ``data``."""
        mv = memoryview(data).cast("B")
        if len(mv) < cls.SIZE:
            raise ValueError(f"{cls.__name__} needs {cls.SIZE} bytes, got {len(mv)}")
        return cls.view(bytearray(mv[: cls.SIZE]))

    @property
    def raw(self) -> memoryview:
        """The structure's own bytes, as a memoryview into the buffer (the
        view itself when the buffer is exactly the structure, as a
        command's own 64 bytes are)."""
        mv = self._mv
        off = self._off
        if not off and len(mv) == self.SIZE:
            return mv
        return mv[off : off + self.SIZE]

    def encode(self) -> bytes:
        return bytes(self.raw)

    def __bytes__(self) -> bytes:
        return self.encode()

    def __len__(self) -> int:
        return self.SIZE

    def copy(self):
        return type(self).from_bytes(self.raw)

    def clear(self) -> None:
        self.raw[:] = bytes(self.SIZE)

    def to_dict(self) -> dict[str, Any]:
        """Every named field with its decoded value (nested structures as dicts)."""
        out: dict[str, Any] = {}
        for name in self.FIELDS:
            value = getattr(self, name)
            if isinstance(value, Struct):
                value = value.to_dict()
            elif isinstance(value, _ArrayView):
                value = [v.to_dict() if isinstance(v, Struct) else v for v in value]
            elif isinstance(value, memoryview):
                value = value.hex()
            out[name] = value
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Struct):
            return type(self) is type(other) and self.raw == other.raw
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = []
        for name, f in self.FIELDS.items():
            if isinstance(f, (Array, IntArray, Raw, Sub)):
                continue
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value!r}" if isinstance(value, str) else f"{name}={value:#x}")
        return f"{type(self).__name__}({', '.join(parts)})"


def check_range(name: str, value: int, low: int, high: int) -> int:
    """``value`` as an int, or ValueError naming ``name`` when outside ``low..high``."""
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name}: {value:#x} is outside {low:#x}..{high:#x}")
    return value


class TitledEnum(IntEnum):
    """A coded value whose ``title`` is the name the specification gives it.

    Members are declared as ``NAME = value, "Specification Title"``."""

    title: str

    def __new__(cls, value: int, title: str):
        obj = int.__new__(cls, value)
        obj._value_ = value
        obj.title = title
        return obj
