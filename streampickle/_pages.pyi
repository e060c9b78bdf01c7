def populate(buffer: memoryview | bytearray, start: int, end: int, /) -> bool:
    """Fault in bytes [start, end) of a writable buffer without writing
    them; False where the system cannot (not Linux, or before 5.14);
    OSError for a failure of this call."""
