"""What safe mode's work costs against a record's budget (``safe.py``): the
budget itself, the cost of each kind of work in one table, and what hashing,
copying and ranges take. A unit is a byte copied, ~0.05 µs: the costs below
were measured so, and a record's own bytes pay for what numpy and pickle
write of it (a dtype state takes 36 bytes or more, an array 23), while a
hostile record may take the parts from the memo for 2 bytes each.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import numpy as np

from .safe_dtypes import TEXT_UNIT, dtype_nodes

#: The budget: what a record in safe mode may copy, hash and have checked, in
#: units of a byte copied (~0.05 µs): this many a pickle byte, and the floor.
SPEND_FACTOR = 8
SPEND_FLOOR = 1 << 20
#: What things cost, in those units (a dtype state numpy writes takes 36 bytes
#: or more, an array 23; their parts may come from the memo for 2 bytes each):
STR_ITEM = 10  # a character of a str copied or parsed: it may become an object
DTYPE_STATE = 256  # checking a dtype's state: making the dtype again, ~15 µs
DTYPE_FIELD = 16  # each of its fields, ~1 µs
DTYPE_NODE = 8  # each dtype in it, walked, ~0.4 µs
HASHED = 8  # an item whose hashing _spend_hashing counts in Python, ~0.4 µs
WALKED = 6  # an item inside it that hash_visits walks, ~0.3 µs
ARRAY_CALL = 128  # _frombuffer or _reconstruct and its BUILD checked, ~10 µs
EXTENT = 8  # each extent of an array's shape
#: What counted_in_c takes: sequences, and kinds of item whose hash does not
#: grow with them.
SEQUENCES = frozenset({list, tuple, str, bytes, bytearray})
UNSIZED = frozenset({float, bool, type(None)})


def counted_in_c(items: Any) -> int | None:
    """What hashing the items of a sequence visits, counted in one pass in C
    where they are all of one plain kind (an int by its 30-bit digits, a
    string by its length, compared when equal but not the same); else None."""
    kinds = set(map(type, items))
    if kinds <= UNSIZED:
        return len(items)
    if kinds == {int}:
        return len(items) + sum(map(int.bit_length, items)) // 30
    if kinds == {str} or kinds == {bytes}:
        return len(items) + sum(map(len, items)) // TEXT_UNIT
    return None


def hash_visits(obj: Any, limit: int) -> int:
    """Steps hashing ``obj`` takes, or comparing it with an equal object of
    the same hash, counted up to just past ``limit``: a tuple hashes its
    items each time (no cache), equal frozensets compare item by item, a
    range hashes its ints, an int's hash reads each of its 30-bit digits.
    Strings and bytes cache their hashes, but an equal one that is not the
    same object is compared byte by byte (review: a 1.5 MB string added to
    a set a million times), as are numpy's string scalars; a memoryview of
    a buffer hashes its bytes (each READONLY_BUFFER makes a new one)."""
    visits, todo = 1, [obj]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is tuple or kind is frozenset:
            plain = counted_in_c(item) if len(item) > 8 else None  # worth its set
            if plain is not None:
                visits += plain
                continue
            visits += WALKED * len(item)  # each walked here, in Python (review)
            if visits > limit:
                break
            todo.extend(item)
        elif kind is range:
            todo += (item.start, item.stop, item.step)
        elif isinstance(item, np.dtype):
            visits += dtype_nodes(item, limit - visits)
        elif kind is int:
            visits += item.bit_length() // 30
        elif kind is str or kind is bytes:
            visits += len(item) // TEXT_UNIT  # compared when equal but not the same
        elif isinstance(item, memoryview | np.generic):
            visits += item.nbytes // TEXT_UNIT  # hashed or compared byte by byte
    return visits


def copied(arg: Any) -> int:
    """What a call copying, parsing or reading ``arg`` costs: its length, a
    numpy scalar's bytes; a str's characters may each become an object of
    ~80 bytes (``list`` or ``set`` of one beyond Latin-1)."""
    if isinstance(arg, str):
        return STR_ITEM * len(arg)
    if isinstance(arg, np.generic):
        return max(arg.nbytes, 1)
    return len(arg) if isinstance(arg, Sized) else 1


def range_work(args: tuple[Any, ...]) -> int:
    """What making a range takes: its length is a division of its ints (of
    30-bit digits: 50,000 by 25,000 took 3 s, review)."""
    digits = [a.bit_length() // 30 + 1 if type(a) is int else 1 for a in args]
    return max(digits, default=1) * (digits[2] if len(digits) > 2 else 1)
