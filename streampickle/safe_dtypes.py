"""What safe mode (``safe=True``) takes of numpy dtypes: a dtype's state
only if numpy rebuilds the same dtype from its description (flags, byte
order and offsets are otherwise the pickle's to forge), and no dtype whose
items unfold into many more objects than their bytes; the counts of field
dtypes that hashing and printing a dtype visit. ``safe.py`` calls these;
their refusals are ``ForbiddenGlobalError``s.
"""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np

from .errors import ForbiddenGlobalError

#: dtype flags numpy takes from a pickled dtype's state and trusts: items that
#: hold references (decref'd when freed), are pickled as lists, or are
#: pointers (NPY_ITEM_REFCOUNT, NPY_LIST_PICKLE, NPY_ITEM_IS_POINTER). No
#: dtype of plain values has them.
_OBJECT_FLAGS = 0x07
_OBJECT = np.dtype(object)
_make_dtype: Any = np.dtype  # built from what a pickle gave: no static type


def refuse(what: str) -> ForbiddenGlobalError:
    return ForbiddenGlobalError(f"safe mode {what}")


class _ShortRepr(reprlib.Repr):
    """Builtin containers, strings and numbers cut short; anything else by
    its type's name alone: reprlib would take its whole repr first, and that
    of a slice of a tuple that shares its items, or of a dtype that shares a
    field's dtype, is of any length (review)."""

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
    """Apply ``state`` to a copy of ``dtype`` first: it must come out a dtype
    that numpy makes from its own description, which is returned."""
    if not _plain_dtype_state(state):
        # numpy hashes the names and titles it is given, whatever they are
        # (review: a shared tuple as a field name hashed 2**80 items)
        raise refuse(f"takes only numpy's dtype states, not {short(state)}")
    rebuilt: np.dtype[Any]
    try:
        scratch: Any = np.dtype(dtype, copy=True)
        scratch.__setstate__(state)
        extra = {"metadata": dict(scratch.metadata)} if scratch.metadata else {}
        if scratch.subdtype is not None:  # its base was checked when it was built
            rebuilt = _make_dtype(scratch.subdtype, **extra)
        elif scratch.fields:  # numpy checks that each field fits in the item
            fields = [scratch.fields[n] for n in scratch.names]
            layout = {
                "names": scratch.names,
                "formats": [f[0] for f in fields],
                "offsets": [f[1] for f in fields],
                "titles": [f[2] if len(f) > 2 else None for f in fields],
                "itemsize": scratch.itemsize,
            }
            rebuilt = _make_dtype(layout, align=scratch.isalignedstruct, **extra)
        else:
            rebuilt = _make_dtype(scratch.str, **extra)
    except Exception as exc:
        raise refuse(f"takes only numpy's dtype states: {exc}") from None
    if not _same_dtype(scratch, rebuilt):
        raise refuse(f"takes only dtype states numpy writes, not {short(state)}")
    check_expansion(rebuilt)
    return rebuilt


def _plain_dtype_state(state: Any) -> bool:
    """Shaped as numpy's: names, field names and titles are strings, fields
    and a subarray's base dtypes, offsets ints (numpy's own messages repr
    whatever else it is given, at any length: review)."""
    if not (isinstance(state, tuple) and len(state) in (8, 9)):
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


def dtype_nodes(dtype: np.dtype[Any], limit: int) -> int:
    """The dtypes numpy visits to hash or print ``dtype``, counted up to just
    past ``limit``: its fields' and subarray's, each time they appear (a
    dtype whose two fields share one dtype, forty times over, is 2**40)."""
    nodes, todo = 0, [dtype]
    while todo and nodes <= limit:
        d = todo.pop()
        nodes += 1
        fields = d.fields
        if fields:
            todo.extend(fields[name][0] for name in d.names or ())
        if d.subdtype is not None:
            todo.append(d.subdtype[0])
    return nodes


def _same_dtype(a: np.dtype[Any], b: np.dtype[Any]) -> bool:
    """Equal in every field a pickle carries. Not ``a == b``: it ignores
    byte order and flags where numpy deems them irrelevant, and comparing an
    object dtype of byte order ">" crashes numpy 2.4 (review). (A field's
    dtype compares equal to its str: the caller applies the rebuilt one.)"""
    return bool(a.__reduce__()[1:] == b.__reduce__()[1:])


def plain_object_dtype(dtype: np.dtype[Any]) -> bool:
    """numpy's object dtype, with or without metadata (h5py's vlen str)."""
    own, plain = dtype.__reduce__(), _OBJECT.__reduce__()
    return bool(own[1] == plain[1] and own[2][1:8] == plain[2][1:8])


def plain_items(dtype: Any) -> bool:
    return isinstance(dtype, np.dtype) and dtype.itemsize > 0 and not holds_objects(dtype)


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


def check_expansion(dtype: Any) -> None:
    """Refuse a dtype whose items unfold, in ``tolist`` or ``repr``, into
    many more objects than they have bytes: fields that overlap or share one
    dtype (two fields of one dtype at offset 0, sixteen levels deep, are 2**16
    floats an item from 8 bytes), or empty subarrays of many rows (a
    ``(10**9, 0)`` field prints 10**9 empty lists). numpy writes none."""
    if not isinstance(dtype, np.dtype) or (dtype.fields is None and dtype.subdtype is None):
        return  # not a dtype (refused elsewhere), or one item, one object
    limit = 2 * dtype.itemsize + 16
    try:
        unfolded = _unfolded(dtype, limit, {})
    except RecursionError:
        unfolded = limit + 1
    if unfolded > limit:
        raise refuse(
            f"loads no dtype whose items unfold into more than twice their bytes "
            f"({short(dtype)})"
        )


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
