"""NVMe wire formats, and nothing else: structures, field offsets, opcodes,
status codes.  No behaviour and no I/O; nothing here imports from the rest
of the package.

Modules: ``layout`` (field machinery), ``sqe``/``cqe``, ``opcodes``,
``status``, ``admin``/``nvm`` (typed command views), ``identify``, ``log``,
``features``, ``registers``, ``pci``, ``dptr`` (PRP/SGL), ``pi`` and
``checksum``, ``fabrics``, ``tcp``.
"""
