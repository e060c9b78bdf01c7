"""Where CPython 3.11 put a dict's or set's keys, read from the objects
themselves (ctypes), for checking the probe tables' model against."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

#: the layouts read below are CPython 3.11's (Include/cpython/dictobject.h,
#: Objects/dict-common.h, Include/cpython/setobject.h)
READABLE = sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)


def _word(address: int) -> int:
    return ctypes.c_ssize_t.from_address(address).value


def dict_slots(d: dict[Any, Any]) -> list[int]:
    """By slot of ``d``'s index table, the index of the key there in
    insertion order (-1: empty)."""
    keys = _word(id(d) + 32)  # ma_keys
    log2_size = ctypes.c_uint8.from_address(keys + 8).value
    log2_index_bytes = ctypes.c_uint8.from_address(keys + 9).value
    width = 1 << (log2_index_bytes - log2_size)
    kinds = {1: ctypes.c_int8, 2: ctypes.c_int16, 4: ctypes.c_int32, 8: ctypes.c_int64}
    kind = kinds[width]
    indices = (kind * (1 << log2_size)).from_address(keys + 32)
    return [max(int(i), -1) for i in indices]


def set_slots(s: set[Any] | frozenset[Any]) -> list[int | None]:
    """By slot of ``s``'s table, the id of the key there (None: empty)."""
    mask = _word(id(s) + 32)
    table = _word(id(s) + 40)
    return [_word(table + 16 * i) or None for i in range(mask + 1)]
