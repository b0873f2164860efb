"""Test support that ships with the package: ``nvmestack.testing.vm`` boots
a QEMU guest with the real Linux NVMe/TCP drivers (the interoperability
tests in ``tests/interop`` use it)."""
