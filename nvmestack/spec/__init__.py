"""NVMe wire formats, and nothing else: structures, field offsets, opcodes,
status codes.  No behaviour and no I/O; nothing here imports from the rest
of the package."""
