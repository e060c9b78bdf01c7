"""What safe mode (``safe=True``) takes of numpy dtypes: a dtype's state
only if numpy rebuilds the same dtype from its description (flags, byte
order and offsets are otherwise the pickle's to forge), and no dtype whose
items unfold into many more objects than their bytes; the counts of field
dtypes that hashing and printing a dtype visit; the dtypes a record has
checked, each once (``Checked``); and what numpy's calls may be given
(shapes, orders, buffers, a scalar's bytes). ``safe.py`` calls these;
their refusals are ``ForbiddenGlobalError``s.
"""

from __future__ import annotations

import math
import reprlib
import sys
from typing import Any

import numpy as np

from .errors import ForbiddenGlobalError

#: dtype flags numpy takes from a pickled dtype's state and trusts: items that
#: hold references (decref'd when freed), are pickled as lists, or are
#: pointers (NPY_ITEM_REFCOUNT, NPY_LIST_PICKLE, NPY_ITEM_IS_POINTER). No
#: dtype of plain values has them.
_OBJECT_FLAGS = 0x07
_OBJECT = np.dtype(object)
#: The dtype flag of a struct laid out as a C compiler would (align=True).
_ALIGNED_STRUCT = 0x80
_DATETIME_UNITS = frozenset(b"Y M W D h m s ms us ns ps fs as generic".split())
_make_dtype: Any = np.dtype  # built from what a pickle gave: no static type


#: Dtypes of plain items a record has used, by id, with what an item of each
#: unfolds into (see plain_dtype).
Checked = dict[int, tuple[Any, int, Any]]


def refuse(what: str) -> ForbiddenGlobalError:
    return ForbiddenGlobalError(f"safe mode {what}")


class _ShortRepr(reprlib.Repr):
    """Builtin containers, strings and numbers cut short; anything else by
    its type's name alone: reprlib would take its whole repr first, and that
    of a slice of a tuple that shares its items, or of a dtype that shares a
    field's dtype, is of any length (review)."""

    def repr_int(self, obj: int, level: int) -> str:
        # repr() of an int of more than 4300 digits raises ValueError
        if obj.bit_length() > 4 * self.maxlong:
            return f"<int of {obj.bit_length()} bits>"
        return super().repr_int(obj, level)

    def repr_instance(self, obj: Any, level: int) -> str:
        if obj is None or type(obj) in (bool, float, complex):
            return repr(obj)
        return f"<{type(obj).__name__}>"


_SHORT = _ShortRepr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxlong = 3, 60, 60


def short(obj: Any) -> str:
    """A repr of bounded cost."""
    return _SHORT.repr(obj)


def check_dtype_state(dtype: np.dtype[Any], state: Any) -> np.dtype[Any]:
    """The dtype numpy makes from the description in ``state`` (on ``dtype``,
    what ``numpy.dtype`` made from a type string), refused unless numpy's own
    state of it is ``state``: numpy's ``__setstate__`` is only ever given
    states numpy wrote (it trusts flags, offsets and the datetime unit; a
    datetime dtype's state without its unit crashed numpy 2.4: review)."""
    if not _plain_dtype_state(state):
        # numpy hashes the names and titles it is given, whatever they are
        # (review: a shared tuple as a field name hashed 2**80 items)
        raise refuse(f"takes only numpy's dtype states, not {short(state)}")
    try:
        described: np.dtype[Any] = _described(dtype, state)
    except Exception as exc:
        raise refuse(f"takes only numpy's dtype states: {exc}") from None
    if described.__reduce__()[1:] != (dtype.__reduce__()[1], state):
        raise refuse(f"takes only dtype states numpy writes, not {short(state)}")
    check_expansion(described)
    return described


def _described(dtype: np.dtype[Any], state: tuple[Any, ...]) -> Any:
    byteorder, subarray, names, fields, itemsize, _, flags = state[1:8]
    metadata = state[8] if len(state) == 9 else None
    unit = ""
    if dtype.kind in "Mm":  # numpy keeps the unit beside the metadata
        if not (type(metadata) is tuple and len(metadata) == 2):
            raise ValueError("a datetime dtype's state without its unit")
        metadata, unit = metadata[0], _datetime_unit(metadata[1])
    if metadata is not None and type(metadata) is not dict:
        raise ValueError("metadata that is not a dict")
    extra = {"metadata": metadata} if metadata else {}
    if subarray is not None:
        return _make_dtype(subarray, **extra)
    if names is not None:  # numpy checks that each field fits in the item
        taken = [fields[name] for name in names]
        layout = {
            "names": names,
            "formats": [field[0] for field in taken],
            "offsets": [field[1] for field in taken],
            "titles": [field[2] if len(field) > 2 else None for field in taken],
            "itemsize": itemsize,
        }
        return _make_dtype(layout, align=bool(flags & _ALIGNED_STRUCT), **extra)
    if unit:
        return _make_dtype(f"{byteorder}{dtype.char}8{unit}", **extra)
    return _make_dtype(dtype.newbyteorder(byteorder), **extra)


def _datetime_unit(unit: Any) -> str:
    """numpy's (unit, multiple, 1, 1) of a datetime dtype, as its type string
    writes them."""
    if not (
        type(unit) is tuple
        and len(unit) == 4
        and type(unit[0]) is bytes
        and unit[0] in _DATETIME_UNITS
        and all(type(n) is int for n in unit[1:])
        and 0 < unit[1] < 2**31
        and unit[2:] == (1, 1)
    ):
        raise ValueError("a datetime unit numpy does not write")
    return "" if unit[0] == b"generic" else f"[{unit[1]}{unit[0].decode()}]"


def _plain_dtype_state(state: Any) -> bool:
    """Shaped as numpy's: names, field names and titles are strings, fields
    and a subarray's base dtypes, offsets ints (numpy's own messages repr
    whatever else it is given, at any length: review)."""
    if not (
        isinstance(state, tuple)
        and len(state) in (8, 9)
        and all(type(n) is int for n in state[0:1] + state[5:8])
        and state[0] in (3, 4)
        and type(state[1]) is str
        and state[1] in ("<", ">", "|", "=")
    ):
        return False
    subarray, names, fields = state[2:5]
    if subarray is not None and not (
        type(subarray) is tuple
        and len(subarray) == 2
        and isinstance(subarray[0], np.dtype)
        and type(subarray[1]) is tuple
        and all(type(n) is int for n in subarray[1])
    ):
        return False
    if names is not None and not (
        type(names) is tuple and all(type(n) is str for n in names)
    ):
        return False
    return fields is None or (
        type(fields) is dict
        and all(
            type(name) is str
            and type(field) is tuple
            and 2 <= len(field) <= 3
            and isinstance(field[0], np.dtype)
            and type(field[1]) is int
            and (len(field) == 2 or field[2] is None or type(field[2]) is str)
            for name, field in fields.items()
        )
    )


#: Bytes of text compared, hashed or walked for a unit of the budget.
TEXT_UNIT = 64


def dtype_nodes(dtype: np.dtype[Any], limit: int) -> int:
    """The dtypes numpy visits to hash, compare or print ``dtype``, counted
    up to just past ``limit``: its fields' and subarray's, each time they
    appear (a dtype whose two fields share one dtype, forty times over, is
    2**40), and its names' and titles' text (compared byte by byte when
    equal but not one object: review, 28 s from 703 KB)."""
    nodes, todo = 0, [dtype]
    while todo and nodes <= limit:
        d = todo.pop()
        nodes += 1
        fields = d.fields
        if fields:
            nodes += sum(map(len, fields)) // TEXT_UNIT
            todo.extend(fields[name][0] for name in d.names or ())
        if d.subdtype is not None:
            todo.append(d.subdtype[0])
    return nodes


def plain_object_dtype(dtype: np.dtype[Any]) -> bool:
    """numpy's object dtype, with or without metadata (h5py's vlen str)."""
    own, plain = dtype.__reduce__(), _OBJECT.__reduce__()
    return bool(own[1] == plain[1] and own[2][1:8] == plain[2][1:8])


def plain_items(dtype: Any) -> bool:
    """Items of bytes only. Not a subarray dtype: numpy makes an array of
    one into a deeper array of its base, and never writes one (review: one
    loaded printed raw bytes, and astype dropped half its items)."""
    return (
        isinstance(dtype, np.dtype) and dtype.subdtype is None and not holds_objects(dtype)
    )


def holds_objects(dtype: Any) -> bool:
    """Whether ``dtype``, or any field of it at any depth, holds Python
    objects, by its kind or by its flags (a pickle sets those: not trusted)."""
    seen: set[int] = set()
    todo = [dtype]
    while todo:
        d = todo.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        if (
            getattr(d, "hasobject", False)
            or getattr(d, "kind", "") == "O"
            or getattr(d, "flags", 0) & _OBJECT_FLAGS
        ):
            return True
        todo.extend(field[0] for field in (getattr(d, "fields", None) or {}).values())
        sub = getattr(d, "subdtype", None)
        if sub is not None:
            todo.append(sub[0])
    return False


def check_expansion(dtype: Any) -> int:
    """The objects an item of ``dtype`` unfolds into, in ``tolist`` or
    ``repr``; refused if many more than it has bytes (UNFOLDING): fields
    that overlap or share one dtype (two fields of one dtype at offset 0,
    sixteen levels deep, are 2**16 floats an item from 8 bytes), or empty
    subarrays of many rows (a ``(10**9, 0)`` field prints 10**9 empty lists).
    numpy writes none from its own dtypes."""
    if not isinstance(dtype, np.dtype) or (dtype.fields is None and dtype.subdtype is None):
        return 1  # not a dtype (refused elsewhere), or one item, one object
    limit = UNFOLDING * dtype.itemsize + _UNFOLDING_FLOOR
    try:
        unfolded = _unfolded(dtype, limit, {})
    except RecursionError:
        unfolded = limit + 1
    if unfolded > limit:
        raise refuse(
            f"loads no dtype whose items unfold into more than {UNFOLDING} objects a byte "
            f"({short(dtype)})"
        )
    return unfolded


#: Objects a dtype's item may unfold into: this many a byte, and
#: _UNFOLDING_FLOOR more (a field nested twenty structs deep; a (100, 1, 1)
#: subarray of bytes: 301 lists and ints from 100 bytes). What the items of
#: a record's arrays and scalars unfold into counts against its budget too.
UNFOLDING = 4
_UNFOLDING_FLOOR = 32


def _unfolded(dtype: np.dtype[Any], limit: int, seen: dict[int, int]) -> int:
    """Objects an item of ``dtype`` unfolds into, or one past ``limit``."""
    if id(dtype) in seen:
        return seen[id(dtype)]
    count = 1
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        rows = 1  # the item is a list; then the lists in it, then its items
        for extent in shape[:-1]:
            rows *= extent
            count += rows
            if rows == 0 or count > limit:
                break
        else:
            count += rows * shape[-1] * _unfolded(base, limit, seen)
    elif dtype.fields:
        for name in dtype.names or ():
            count += _unfolded(dtype.fields[name][0], limit, seen)
            if count > limit:
                break
    seen[id(dtype)] = count = min(count, limit + 1)
    return count


def state_nodes(state: tuple[Any, ...], limit: int) -> int:
    """dtype_nodes of the dtype a (checked) dtype state makes."""
    subarray, names, fields = state[2:5]
    nodes = 1
    for d in [subarray[0]] if subarray else [fields[n][0] for n in names or ()]:
        nodes += dtype_nodes(d, limit - nodes)
        if nodes > limit:
            break
    return nodes


def plain_dtype(dtype: Any, checked: Checked) -> int:
    """What an item of ``dtype`` unfolds into, if it is a dtype of plain
    items (refused if it unfolds too far), else 0. Kept in ``checked``: a
    dtype another object took gets no later state (the scan refuses it), so
    each is walked once a record (review: a 100-field dtype checked 52,000
    times took 13 s from 948 KB)."""
    hit = seen(checked, dtype)
    if hit is not None:
        return hit
    unfolded = check_expansion(dtype)
    text = _text_parts(dtype, 0)  # (a walk as long as the unfolding, bounded)
    if not plain_items(dtype) or text is None:
        return 0
    checked[id(dtype)] = (dtype, unfolded, text)
    return unfolded


def valid_text(dtype: np.dtype[Any], data: Any, checked: Checked) -> bool:
    """Whether every UCS4 unit of the str parts (kind U) of ``dtype``'s items,
    one after another in ``data``, is at most U+10FFFF: numpy makes a str of
    whatever units it is given (0xFFFFFFFF: indexing it raised SystemError,
    a debug build would abort; review for scalars, 45th for arrays and
    fields). ``dtype`` is one plain_dtype took."""
    parts = checked[id(dtype)][2]
    if not parts or not dtype.itemsize:
        return True
    rows = np.frombuffer(data, np.uint8).reshape(-1, dtype.itemsize)
    for offset, size, order in parts:
        units = np.ascontiguousarray(rows[:, offset : offset + size])
        units = units.view(np.dtype("u4").newbyteorder(order))
        if units.size and int(units.max()) > sys.maxunicode:
            return False
    return True


def _text_parts(dtype: np.dtype[Any], offset: int) -> list[tuple[int, int, str]] | None:
    """Where the str parts of an item of ``dtype`` are: (offset, bytes, byte
    order) each; None where one is in a subarray of structs (not walked:
    safe mode refuses such a dtype)."""
    if dtype.kind == "U":
        return [(offset, dtype.itemsize, dtype.byteorder)]
    if dtype.subdtype is not None:
        base = dtype.subdtype[0]
        if base.kind == "U":
            return [(offset, dtype.itemsize, base.byteorder)]
        return [] if _text_parts(base, 0) == [] else None
    parts: list[tuple[int, int, str]] = []
    for field in (dtype.fields or {}).values():
        found = _text_parts(field[0], offset + field[1])
        if found is None:
            return None
        parts += found
    return parts


def seen(checked: Checked, dtype: Any) -> int | None:
    """What an item of ``dtype`` unfolds into, if ``checked`` holds it."""
    hit = checked.get(id(dtype))
    return int(hit[1]) if hit is not None and hit[0] is dtype else None


#: An empty array has no data to bound its other dimensions by: list() of one
#: shaped (10**6, 0) is a million arrays. No more than this many rows, then.
_MAX_EMPTY_EXTENT = 1 << 16
_MAX_DIMS = 64  # numpy 2's NPY_MAXDIMS


def known_array(args: Any, checked: Checked) -> bool:
    """Whether check_call takes numpy's ``_frombuffer(*args)`` as numpy
    writes a C- or F-ordered array of a dtype found plain before (held in
    ``checked``) with no str parts: a shape of ints above 0, and its bytes,
    exactly its items'. (Such an item unfolds into one object.)"""
    if type(args) is not tuple or len(args) != 4:
        return False
    buffer, dtype, shape, order = args
    hit = checked.get(id(dtype))
    if hit is None or hit[0] is not dtype or hit[1] != 1 or hit[2] or not dtype.itemsize:
        return False
    if type(order) is not str or order not in ("C", "F"):
        return False
    if type(shape) is not tuple or not 0 < len(shape) <= _MAX_DIMS:
        return False
    n = dtype.itemsize
    for extent in shape:
        if type(extent) is not int or not 0 < extent < 2**63:
            return False
        n *= extent
    return bytes_of(buffer, n)


def known_scalar(args: Any, checked: Checked) -> bool:
    """Whether check_call takes numpy's ``scalar(*args)`` for a dtype it
    found plain before (held in ``checked``) with no str parts: its bytes,
    exactly an item's. (Such an item unfolds into one object: nothing more
    to spend.)"""
    if type(args) is not tuple or len(args) != 2 or type(args[1]) is not bytes:
        return False
    dtype = args[0]
    hit = checked.get(id(dtype))
    return (
        hit is not None
        and hit[0] is dtype
        and hit[1] == 1
        and not hit[2]
        and len(args[1]) == dtype.itemsize
    )


def array_order(order: tuple[Any, ...], dims: int) -> bool:
    """Whether ``order`` is how numpy 2 writes an array's order: "C" or
    "F", or, neither (a transposed array), "K" and the order of its
    ``dims`` axes."""
    if not order or type(order[0]) is not str:
        return False
    if len(order) == 1:
        return order[0] in ("C", "F")
    axes = order[1]
    return (
        order[0] == "K"
        and type(axes) is tuple
        and len(axes) == dims
        and all(type(axis) is int for axis in axes)
        and sorted(axes) == list(range(dims))
    )


def fits_empty(shape: Any) -> bool:
    """A shape of ints >= 0; if it has no elements, at most _MAX_EMPTY_EXTENT
    rows of nothing before its first empty extent (an empty array has no
    data to bound them by; those after it make no objects)."""
    n = shape_size(shape) if isinstance(shape, tuple) else -1
    if n != 0:
        return n > 0
    return bool(math.prod(shape[: shape.index(0)]) <= _MAX_EMPTY_EXTENT)


def bytes_of(buffer: Any, n: int) -> bool:
    """Whether ``buffer`` is ``n`` contiguous bytes (what pickle gives an
    array's buffer, in band or out of band)."""
    if isinstance(buffer, np.ndarray):
        buffer = buffer.data
    if not isinstance(buffer, bytes | bytearray | memoryview):
        return False
    view = memoryview(buffer)
    return view.format in ("B", "b", "c") and view.contiguous and view.nbytes == n


def shape_size(shape: tuple[Any, ...]) -> int:
    """Elements of ``shape``, -1 if it is not numpy's (at most 64 extents,
    each below 2**63: a huge int multiplied a hundred times over took a
    minute, review)."""
    if len(shape) > _MAX_DIMS or shape and set(map(type, shape)) != {int}:
        return -1
    return math.prod(shape) if not shape or 0 <= min(shape) <= max(shape) < 2**63 else -1
