"""Safe mode (``safe=True``): what a record from an untrusted peer may do.

A record may name only the globals in ``SAFE_GLOBALS``: builtins' plain data
types and what numpy needs to rebuild arrays, dtypes and scalars. Naming them
is not enough to be harmless: called with the right arguments they allocate
without bound (``bytearray(2**40)``, ``list(range(2**40))``, an ndarray of any
shape), and numpy's ``__setstate__`` trusts what it is given (an object array
whose list is shorter than its shape, or a dtype whose flags a pickle set to
"holds objects", crash the process on numpy 2.4). So a record that names
globals is run by ``SafeRecordUnpickler``, Python's own unpickler with every
call (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST) and every BUILD checked first.
Records of plain data name no global, call nothing and take the C path.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np

from .errors import ForbiddenGlobalError

#: Globals ``safe=True`` allows (under numpy 1 and 2 names).
SAFE_GLOBALS = frozenset(
    [
        f"builtins.{n}"
        for n in (
            "bool",
            "bytearray",
            "bytes",
            "complex",
            "dict",
            "float",
            "frozenset",
            "int",
            "list",
            "range",
            "set",
            "slice",
            "str",
            "tuple",
        )
    ]
    + [
        f"numpy.{core}.{n}"
        for core in ("core", "_core")
        for n in (
            "multiarray._reconstruct",
            "multiarray.scalar",
            "numeric._frombuffer",
        )
    ]
    + ["numpy.dtype", "numpy.ndarray"]
)

#: Builtins that turn an iterable into as many items as it yields: given a
#: range, a few bytes of pickle become any number of objects.
_MATERIALIZING = frozenset({bytearray, bytes, dict, frozenset, list, set, tuple})
_CORE = getattr(np, "_core", None) or np.core  # numpy 2's name, else numpy 1's
_RECONSTRUCT = _CORE.multiarray._reconstruct
_SCALAR = _CORE.multiarray.scalar
_FROMBUFFER = _CORE.numeric._frombuffer
#: dtype flags numpy takes from a pickled dtype's state and trusts: items that
#: hold references (decref'd when freed), are pickled as lists, or are
#: pointers (NPY_ITEM_REFCOUNT, NPY_LIST_PICKLE, NPY_ITEM_IS_POINTER). No
#: dtype of plain values has them.
_OBJECT_FLAGS = 0x07
_OBJECT = np.dtype(object)


def check_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> None:
    """Refuse a call that makes more than the record holds: every call safe
    mode allows is made with what the pickle gives, so the pickle must hold
    the data, not a count of it."""
    every = (*args, *(kwargs or {}).values())
    if isinstance(func, type) and issubclass(func, np.ndarray):
        raise ForbiddenGlobalError(
            "safe mode does not call numpy.ndarray (numpy pickles arrays with "
            "_reconstruct or _frombuffer): it would allocate any shape"
        )
    if func in (bytes, bytearray) and args and isinstance(args[0], int):
        raise ForbiddenGlobalError(
            f"safe mode does not call {func.__name__}(n): n zero bytes from nothing"
        )
    if func in _MATERIALIZING and any(isinstance(a, range) for a in every):
        raise ForbiddenGlobalError(
            f"safe mode does not call {func.__name__} on a range: it would make "
            "as many items as the range is long"
        )
    if func in (_SCALAR, _FROMBUFFER) and len(args) >= 2:
        dtype = args[0] if func is _SCALAR else args[1]
        if holds_objects(dtype):
            # A scalar or array of Python objects read from raw bytes would
            # hold whatever pointers the bytes spell (numpy pickles those
            # otherwise, never through these).
            raise ForbiddenGlobalError(
                f"safe mode does not read numpy values of dtype {dtype!r}, which "
                "holds Python objects, from raw bytes"
            )
    if func is _RECONSTRUCT and (
        len(args) < 2 or not isinstance(args[1], tuple) or _size(args[1]) != 0
    ):
        raise ForbiddenGlobalError(
            "safe mode calls numpy's _reconstruct with an empty shape only (as "
            "numpy pickles arrays: their data comes with their state)"
        )


def check_build(inst: Any, state: Any) -> None:
    """Refuse a BUILD whose state numpy would trust: an array (or dtype)
    whose items hold Python objects. Plain dtypes' arrays check their bytes
    against their shape themselves."""
    if isinstance(inst, np.dtype):
        return  # its flags are checked where an array or scalar takes it
    if not isinstance(inst, np.ndarray):
        raise ForbiddenGlobalError(
            f"safe mode gives a state (BUILD) to numpy arrays and dtypes only, "
            f"not to {type(inst).__name__}"
        )
    if not (isinstance(state, tuple) and len(state) == 5):
        raise ForbiddenGlobalError(f"safe mode: not a numpy array's state: {state!r:.80}")
    shape, dtype, items = state[1], state[2], state[4]
    if not isinstance(dtype, np.dtype) or not isinstance(shape, tuple) or _size(shape) < 0:
        raise ForbiddenGlobalError(f"safe mode: not a numpy array's state: {state!r:.80}")
    if holds_objects(dtype) and not (
        dtype == _OBJECT
        and dtype.flags == _OBJECT.flags
        and isinstance(items, list)
        and len(items) == _size(shape)
    ):
        # numpy fills an object array from its list without checking that
        # the list is as long as the shape (a short one crashes numpy 2.4),
        # and takes raw bytes for pointers where the flags say so.
        raise ForbiddenGlobalError(
            f"safe mode loads numpy arrays of Python objects only as numpy pickles "
            f"them: dtype object and one item per element, not {dtype!r} and "
            f"{type(items).__name__}"
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


def _size(shape: tuple[Any, ...]) -> int:
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        return -1
    return math.prod(shape)


_PythonUnpickler: Any = pickle._Unpickler  # typeshed calls it the C one


class SafeRecordUnpickler(_PythonUnpickler):  # type: ignore[misc]
    """Python's unpickler, for a record in safe mode that names globals:
    each call and each BUILD checked before it runs (slower per opcode than
    the C unpickler; arrays' bytes are not opcodes)."""

    dispatch = dict(_PythonUnpickler.dispatch)

    def load_reduce(self) -> None:
        check_call(self.stack[-2], self.stack[-1], None)
        _PythonUnpickler.load_reduce(self)

    def load_newobj(self) -> None:
        check_call(self.stack[-2], self.stack[-1], None)
        _PythonUnpickler.load_newobj(self)

    def load_newobj_ex(self) -> None:
        check_call(self.stack[-3], self.stack[-2], self.stack[-1])
        _PythonUnpickler.load_newobj_ex(self)

    def _instantiate(self, klass: Any, args: tuple[Any, ...]) -> None:  # OBJ, INST
        check_call(klass, args, None)
        _PythonUnpickler._instantiate(self, klass, args)

    def load_build(self) -> None:
        check_build(self.stack[-2], self.stack[-1])
        _PythonUnpickler.load_build(self)

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
