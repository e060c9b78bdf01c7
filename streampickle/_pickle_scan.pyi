from collections.abc import Callable
from typing import Literal

class PickleScan:
    """Checks a record's pickle bytes, fed in any pieces, before they are
    unpickled; ``feed`` raises ValueError(what, pickle_offset)."""

    def __init__(self, *, strict: bool = False) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def reset(self) -> None: ...
    @property
    def plain(self) -> bool: ...
    @property
    def calls_only(self) -> bool: ...
    @property
    def stopped(self) -> bool: ...
    @property
    def owed(self) -> int: ...

def check_whole(
    data: bytes | bytearray | memoryview,
    /,
    *,
    strict: bool = False,
    count_keys: bool = True,
) -> bool | Literal[2]: ...
def key_hashes(data: bytes | bytearray | memoryview, /) -> list[int] | None: ...

class ProbeTable:
    """Where CPython's dict (or set) table puts keys, and the slots each
    passes on its way (see streampickle/_pickle_probes.h)."""

    def __init__(self, is_set: bool) -> None: ...
    def add(self, keys: object, limit: int = ..., others: int = ..., /) -> int: ...
    def merge(
        self,
        keys: object,
        source: ProbeTable | None,
        limit: int = ...,
        others: int = ...,
        /,
    ) -> int: ...
    @property
    def size(self) -> int: ...
    def slots(self) -> list[int]: ...
    def __len__(self) -> int: ...

class SmallRecords:
    """Records of one PICKLE frame: encoded for the writer, checked and
    loaded for the reader's fast path."""

    def __init__(
        self,
        pickle_word: int,
        end_word: int,
        max_size: int,
        checksum: Callable[[bytes], int],
        loads: Callable[[bytes], object],
        stream_header: bytes,
        stream_end: bytes,
    ) -> None: ...
    def frame(self, pickle: bytes | bytearray | memoryview, /) -> bytes: ...
    def receive_record(
        self, sock: object, source: object, limit: int, strict: bool, parts: list[bytes], /
    ) -> object: ...
    def receive_stream(
        self, sock: object, limit: int, strict: bool, parts: list[bytes], /
    ) -> object: ...
    def size(self, header: bytes, /) -> int: ...
    def load(self, header: bytes, after: bytes, strict: bool, /) -> object: ...
