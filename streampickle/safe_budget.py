"""What safe mode's work costs against a record's budget (``safe.py``): the
budget itself, the cost of each kind of work in one table, and what hashing,
copying and ranges take. A unit is a byte copied, ~0.05 µs: the costs below
were measured so, and a record's own bytes pay for what numpy and pickle
write of it (a dtype state takes 36 bytes or more, an array 23), while a
hostile record may take the parts from the memo for 2 bytes each.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, NamedTuple

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
VIEW_BYTES = 16  # bytes of memoryviews compared a unit: item by item, ~2 ns a byte
#: an item that, in a set or dict holding a numpy scalar or dtype or as one,
#: may meet an equal one of the same hash: compared through numpy, ~1 µs
#: (review: np.True_ == 1.0, 0.86 µs; 0.66-1.05 for every pair of kinds).
#: Charged in place of its visits where more, at ~0.8 µs: then a tuple of
#: two small ints added beside a numpy key (8 bytes) still fits its bytes.
NUMPY_COMPARED = 16
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


class Hashing(NamedTuple):
    """What hashing an object visits (``visits``), the items a comparison
    with an equal object may compare through numpy, at ~1 µs, where it is or
    meets a numpy object (``items``: numbers and numpy's, as ``compared``
    counts them), and whether one is a numpy scalar or dtype (``numpy``)."""

    visits: int
    items: int
    numpy: bool


def hash_visits(obj: Any, limit: int) -> Hashing:
    """Steps hashing ``obj`` takes, or comparing it with an equal object of
    the same hash, counted up to just past ``limit``: a tuple hashes its
    items each time (no cache), equal frozensets compare item by item, a
    range hashes its ints, an int's hash reads each of its 30-bit digits.
    Strings and bytes cache their hashes, but an equal one that is not the
    same object is compared byte by byte (review: a 1.5 MB string added to
    a set a million times), as are numpy's string scalars; a memoryview of
    a buffer hashes its bytes (each READONLY_BUFFER makes a new one)."""
    visits, items, numpy, todo = 1, 0, False, [obj]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is tuple or kind is frozenset:
            plain = counted_in_c(item) if len(item) > 8 else None  # worth its set
            if plain is not None:
                visits += plain
                items += compared(item)
                continue
            visits += WALKED * len(item)  # each walked here, in Python (review)
            if visits > limit:
                break
            todo.extend(item)
            continue
        if kind is range:
            todo += (item.start, item.stop, item.step)
        elif kind is str or kind is bytes:
            visits += len(item) // TEXT_UNIT  # compared when equal but not the same
        elif isinstance(item, np.dtype):
            visits += dtype_nodes(item, limit - visits)
            items, numpy = items + 1, True
        elif isinstance(item, np.generic):
            visits += item.nbytes // TEXT_UNIT  # hashed or compared byte by byte
            items, numpy = items + 1, True
        elif isinstance(item, memoryview):
            visits += item.nbytes // VIEW_BYTES
        else:  # a number: compared through numpy with a numpy scalar
            visits += item.bit_length() // 30 if kind is int else 0
            items += 1
    return Hashing(visits, items, numpy)


def compared(items: Any) -> int:
    """The items of a sequence of one plain kind that compare through numpy
    with equal numpy scalars: numbers (strings compare with numpy's at the
    speed of their bytes, counted by their length)."""
    return 0 if not items or isinstance(items[0], str | bytes) else len(items)


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
