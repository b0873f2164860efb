"""Properties every wire structure in nvmestack.spec must have."""

import importlib
import inspect
import pkgutil
import random

import pytest

import nvmestack.spec as spec
from nvmestack.spec.layout import Str, Struct


def _structs():
    found = {}
    for info in pkgutil.iter_modules(spec.__path__):
        module = importlib.import_module(f"nvmestack.spec.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Struct) and obj is not Struct and obj.__module__ == module.__name__:
                found[f"{info.name}.{obj.__name__}"] = obj
    return found


STRUCTS = _structs()


def test_every_module_is_found():
    modules = {name.split(".")[0] for name in STRUCTS}
    assert {"admin", "cqe", "dptr", "fabrics", "features", "identify", "log", "nvm", "pci", "pi",
            "registers", "sqe", "tcp"} <= modules


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_fields_fit_and_round_trip_random_bytes(name):
    cls = STRUCTS[name]
    assert cls.SIZE > 0
    assert all(f.end <= cls.SIZE for f in cls.FIELDS.values())
    rng = random.Random(name)
    raw = bytes(rng.getrandbits(8) for _ in range(cls.SIZE))
    view = cls.from_bytes(raw)
    # Writing every numeric field back with the value it decodes to changes
    # nothing: decode and encode agree bit for bit, whatever the bytes.
    for fname, field in cls.FIELDS.items():
        if isinstance(field, Str):
            continue
        value = getattr(view, fname)
        if isinstance(value, (int, memoryview)):
            setattr(view, fname, bytes(value) if isinstance(value, memoryview) else value)
    assert bytes(view) == raw
    assert isinstance(view.to_dict(), dict)
    # A view over a larger buffer at an offset sees the same values.
    big = bytearray(7) + bytearray(raw) + bytearray(5)
    shifted = cls.view(big, 7)
    for fname, field in cls.FIELDS.items():
        value = getattr(view, fname)
        if isinstance(value, (int, str)):
            assert getattr(shifted, fname) == value, fname
