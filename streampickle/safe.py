"""Safe mode (``safe=True``): what a record from an untrusted peer may do.

A record may name only the globals in ``SAFE_GLOBALS``: builtins' plain data
types and what numpy needs to rebuild arrays, dtypes and scalars. Naming them
is not enough to be harmless: called with the right arguments they allocate
without bound (``bytearray(2**40)``, ``list(range(2**40))``, an ndarray of any
shape), and numpy's ``__setstate__`` trusts what it is given (an object array
whose list is shorter than its shape, or a dtype whose flags a pickle set to
"holds objects", crash the process on numpy 2.4). So a record that names
globals is run by ``SafeRecordUnpickler``, Python's own unpickler with every
call (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST) and every BUILD checked first,
and what calls copy and hashing visits counted against a budget of the
record's size. Records of plain data name no global, call nothing and take
the C path, unless their hashing could visit beyond a bounded factor of
their size (shared tuples: see ``dag_bits`` in ``_pickle_opcodes.h``) or
meet many keys of one hash (``_pickle_scan_hash.h``), and a count in C of
the keys they hash cannot bound that (``_pickle_scan_keys.c``). What is
taken of numpy dtypes is in ``safe_dtypes.py``; what work costs, ``safe_budget.py``.
"""

from __future__ import annotations

import pickle
import re
import struct
from typing import Any

import numpy as np

from .errors import ForbiddenGlobalError
from .safe_budget import (
    ARRAY_CALL,
    DTYPE_FIELD,
    DTYPE_NODE,
    DTYPE_STATE,
    EXTENT,
    PROBES_A_UNIT,
    SPEND_FACTOR,
    SPEND_FLOOR,
    Compared,
    HashedKeys,
    ProbedTables,
    copied,
    range_work,
)
from .safe_dtypes import (
    TEXT_UNIT,
    UNFOLDING,
    Checked,
    array_order,
    bytes_of,
    check_dtype_state,
    check_expansion,
    dtype_nodes,
    fits_empty,
    known_array,
    known_scalar,
    plain_dtype,
    plain_object_dtype,
    refuse,
    seen,
    shape_size,
    short,
    state_nodes,
    valid_text,
)

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
            "Ellipsis",
            "float",
            "frozenset",
            "int",
            "list",
            "NotImplemented",
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
_MATERIALIZING_IDS = frozenset(map(id, _MATERIALIZING))
#: Codecs bytes() and str() may be given: linear, and what data is written in.
_CODECS = frozenset({"ascii", "latin-1", "latin1", "utf-8", "utf8"})
_CORE = getattr(np, "_core", None) or np.core  # numpy 2's name, else numpy 1's
_RECONSTRUCT = _CORE.multiarray._reconstruct
_SCALAR = _CORE.multiarray.scalar
_FROMBUFFER = _CORE.numeric._frombuffer
#: What SAFE_GLOBALS name, by id (a dtype compares equal to types and strings):
#: the builtins, and with numpy's, all of them.
_BUILTIN_IDS = frozenset(
    id(f)
    for f in (bool, bytearray, bytes, complex, dict, float, frozenset, int, list)
    + (range, set, slice, str, tuple)
)
_OWN_IDS = _BUILTIN_IDS | frozenset(
    id(f)
    for f in (np.dtype, np.ndarray, Ellipsis, NotImplemented, _RECONSTRUCT, _SCALAR)
    + (_FROMBUFFER,)
)
#: The type strings numpy pickles dtypes with: "f8", "U7", "V16", "M8";
#: streampickle's, of numbers, with their byte order: "<f8" (safe_calls.py).
_TYPE_STRING = re.compile(r"[<>|=]?[a-zA-Z][0-9]{0,12}")


def check_call(
    func: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None, checked: Checked
) -> None:
    """Refuse a call unless its arguments are of the kinds numpy and pickle
    write: every call safe mode allows is then made with what the pickle
    holds, not with a count of it, and numpy is given nothing it trusts."""
    if type(args) is not tuple or kwargs is not None and type(kwargs) is not dict:
        # pickle.py calls func(*args): a range of 10**8 would be a tuple first
        raise refuse(f"calls only with a tuple of arguments ({short(func)})")
    if kwargs:
        raise refuse(f"calls nothing with keyword arguments ({short(func)})")
    if isinstance(func, type) and issubclass(func, np.ndarray):
        raise refuse("does not call numpy.ndarray: it would allocate any shape")
    if func in (bytes, bytearray, str) and not (
        len(args) < 2
        or (len(args) == 2 and isinstance(args[1], str) and args[1].lower() in _CODECS)
    ):
        # any registered codec is reachable by name; punycode is quadratic
        raise refuse(f"calls {func.__name__} with no codec but {sorted(_CODECS)}")
    if func in (bytes, bytearray) and not (
        not args or isinstance(args[0], str | bytes | bytearray | list | tuple)
    ):
        raise refuse(f"calls {func.__name__} on bytes, a str, a list or a tuple only")
    if func is str and not all(isinstance(a, str | bytes | bytearray) for a in args):
        # str() of a list writes each item's repr: a list of ten references to
        # the last result, ten times over, is a string of 10**10 (review)
        raise refuse("calls str on strings and bytes only (with their encoding)")
    if (
        id(func) in _BUILTIN_IDS
        and func is not slice  # a slice keeps what it is given: numpy ints, often
        and any(isinstance(a, np.ndarray | np.generic) for a in args)
    ):
        # (by id: a lookup in a set hashes func, which may be any tuple: review)
        # pickle writes none; numpy's conversions cost what no byte shows: bool
        # of an array reads all its bytes, of a structured scalar each field
        # (4,030 in 1 KB), int of a longdouble makes 16,400 bits (120 µs)
        raise refuse(f"does not call {func.__name__} on a numpy array or scalar")
    if id(func) in _MATERIALIZING_IDS and any(isinstance(a, range) for a in args):
        raise refuse(f"does not call {func.__name__} on a range")
    if (
        func is dict
        and args
        and not (
            isinstance(args[0], dict)
            or (
                isinstance(args[0], list | tuple)
                and all(type(pair) is tuple and len(pair) == 2 for pair in args[0])
            )
        )
    ):
        # its pairs' first items are hashed: counted only where they are
        # tuples (a list pair's key went uncounted: review)
        raise refuse("calls dict of a dict or of (key, value) tuples only")
    if func is np.dtype and not (
        len(args) == 3
        and isinstance(args[0], str)
        and _TYPE_STRING.fullmatch(args[0])
        and isinstance(args[1], bool)
        and args[2] is True
    ):
        # numpy's parser of other strings ("f8," a million times) is slow
        # and makes a field of each (review); fields come with a BUILD. A
        # copy, as numpy asks: else a BUILD would go to numpy's own float64
        raise refuse("makes a numpy dtype from a type string only, as numpy pickles one")
    if func is _SCALAR and not (
        len(args) == 2
        and plain_dtype(args[0], checked)
        and isinstance(args[1], bytes)
        and len(args[1]) == args[0].itemsize
    ):
        raise refuse("makes a numpy scalar from a plain dtype and its bytes only")
    if func is _SCALAR and not valid_text(args[0], args[1], checked):
        # numpy makes a str of whatever units it is given (review: 0xFFFFFFFF;
        # indexing it raised SystemError, a debug build would abort)
        raise refuse("makes a numpy str scalar of Unicode code points only")
    if func is _FROMBUFFER and not (
        len(args) in (4, 5)
        and plain_dtype(args[1], checked)
        and args[1].itemsize > 0
        and isinstance(args[2], tuple)
        and array_order(args[3:], len(args[2]))
        # the rows of the array made: "K" transposes the shape (review)
        and fits_empty(args[2] if len(args) == 4 else tuple(args[2][a] for a in args[4]))
        and bytes_of(args[0], shape_size(args[2]) * args[1].itemsize)
    ):
        # an array of Python objects from raw bytes would hold whatever
        # pointers the bytes spell (numpy pickles those otherwise); nor may
        # the bytes be an object array's pointers (review)
        raise refuse(
            "reads numpy arrays of plain dtypes only from raw bytes, exactly theirs"
        )
    if func is _FROMBUFFER and not valid_text(args[1], _bytes(args[0]), checked):
        raise refuse("reads numpy str arrays of Unicode code points only")  # (45th review)
    if func is _RECONSTRUCT and not (
        len(args) == 3 and args[1] == (0,) and args[2] in (b"b", "b")
    ):
        raise refuse(
            "calls numpy's _reconstruct only as numpy pickles arrays: empty, their "
            "data coming with their state"
        )


def _bytes(buffer: Any) -> Any:
    """What bytes_of found a buffer to be: its memory, bytes-like."""
    return buffer.data if isinstance(buffer, np.ndarray) else buffer


def check_build(inst: Any, state: Any, checked: Checked) -> Any:
    """Refuse a BUILD whose state numpy would trust: only arrays and dtypes
    get one. A dtype's state must make a dtype numpy itself makes from its
    description (flags, byte order and layout are otherwise the pickle's to
    forge); an array's must hold exactly its data: bytes for its elements,
    or one item per element for Python objects (numpy checks neither).
    Returns the state to apply: for a dtype, that of numpy's own rebuilt one,
    since numpy keeps the state's fields dict, which the pickle could still
    reach through its memo and change after this check (review)."""
    if isinstance(inst, np.dtype):
        return check_dtype_state(inst, state).__reduce__()[2]
    if not isinstance(inst, np.ndarray):
        raise refuse(
            f"gives a state (BUILD) to numpy arrays and dtypes only, not to "
            f"{type(inst).__name__}"
        )
    if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[3], bool)):
        raise refuse(f"takes only numpy's array states, not {short(state)}")
    shape, dtype, data = state[1], state[2], state[4]
    if (
        not isinstance(shape, tuple)
        or shape_size(shape) < 0
        or not isinstance(dtype, np.dtype)
    ):
        raise refuse(f"takes only numpy's array states, not {short(state)}")
    n = shape_size(shape)
    if not fits_empty(shape):
        raise refuse(f"does not load an empty array of shape {shape}: its rows alone")
    if dtype.itemsize == 0:
        raise refuse("does not load arrays of items of no bytes (any shape fits no data)")
    if plain_object_dtype(dtype):
        fits = isinstance(data, list) and len(data) == n
    else:
        fits = (
            plain_dtype(dtype, checked) > 0
            and isinstance(data, bytes)
            and len(data) == n * dtype.itemsize
        )
    if not fits:
        raise refuse(
            f"loads a numpy array only with its data: {n} elements of {short(dtype)}, "
            f"not {type(data).__name__}"
        )
    if isinstance(data, bytes) and not valid_text(dtype, data, checked):
        raise refuse("loads numpy str arrays of Unicode code points only")  # (45th review)
    return state


_PythonUnpickler: Any = pickle._Unpickler  # typeshed calls it the C one


class Budget:
    """What a record's calls copy and its hashing visits, counted against a
    budget of its pickle bytes (SafeRecordUnpickler; safe_calls.py's
    CallsUnpickler, for numpy's calls)."""

    def __init__(self, record: Any) -> None:
        self._record: Any = record  # its pickle_bytes: read so far
        self._spent = 0
        self._checked: Checked = {}

    def check_numpy_call(self, func: Any, args: Any, kwargs: Any) -> None:
        """check_call, and what a call of numpy's scalar or _frombuffer costs
        spent (a dtype walked where first used, the items' unfolding, each
        extent of a shape: fifteenth review, 5.6 s from 1 MB)."""
        if func is _SCALAR and kwargs is None and known_scalar(args, self._checked):
            # check_call's verdict, ~6x faster (numpy scalars come by the thousand)
            self._spend(args[0].itemsize)
            return
        if func is _FROMBUFFER and kwargs is None and known_array(args, self._checked):
            self._spend(ARRAY_CALL + EXTENT * len(args[2]))  # (as below, unfolding 0)
            return
        if (func is _SCALAR or func is _FROMBUFFER) and type(args) is tuple:
            self._spend_dtype(args[0 if func is _SCALAR else 1] if len(args) > 1 else None)
        check_call(func, args, kwargs, self._checked)
        if func is _SCALAR:
            self._spend(args[0].itemsize + self._unfolding(args[0], ()))
        elif func is _FROMBUFFER:
            extents = EXTENT * len(args[2])
            self._spend(ARRAY_CALL + self._unfolding(args[1], args[2]) + extents)

    def _spend(self, work: int) -> None:
        """Count ``work`` (bytes or items copied, objects a hash visits): a
        record may not build, by copies of what it holds (``list`` of a
        memo's megabyte string, a thousand times) or by hashing tuples that
        share items (T = (T, T), eighty times: 2**80 visits), more than
        SPEND_FACTOR times its pickle bytes (review)."""
        self._spent += work
        if self._left() < 0:
            raise refuse(
                f"builds or hashes no more than {SPEND_FACTOR} times a record's pickle "
                f"bytes ({self._spent} items or bytes)"
            )

    def _spend_dtype(self, dtype: Any) -> None:
        """A dtype is checked, field by field, where a record first uses it
        (a dtype of 100,000 fields used a thousand times: review)."""
        if isinstance(dtype, np.dtype) and seen(self._checked, dtype) is None:
            self._spend(dtype_nodes(dtype, self._left()))

    def _unfolding(self, dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
        """The objects the items of ``dtype`` (checked) in ``shape`` unfold
        into beyond UNFOLDING a byte of theirs (a million items of a byte,
        thirty structs deep: 1.4 GB of objects in tolist from a record of
        1 MB, review; a table of two float32 columns, three objects in 8
        bytes: none)."""
        unfolded = seen(self._checked, dtype) or 1  # an object dtype's: one
        beyond = unfolded - UNFOLDING * dtype.itemsize
        return beyond * shape_size(shape) if beyond > 0 else 0

    def _left(self) -> int:
        return int(SPEND_FACTOR * self._record.pickle_bytes + SPEND_FLOOR - self._spent)


class SafeRecordUnpickler(Budget, _PythonUnpickler):  # type: ignore[misc]
    """Python's unpickler, for a record in safe mode that names globals (or
    hashes tuples it shares): each call and each BUILD checked before it
    runs, and what calls copy and hashing visits counted (Budget; slower per
    opcode than the C unpickler; arrays' bytes are not opcodes)."""

    dispatch = dict(_PythonUnpickler.dispatch)

    def __init__(self, file: Any, **options: Any) -> None:
        _PythonUnpickler.__init__(self, file, **options)
        Budget.__init__(self, file)
        # by id, held: arrays _reconstruct made and no BUILD has yet given a
        # state, and the record's out-of-band buffers
        self._unbuilt: dict[int, Any] = {}
        self._out_of_band: dict[int, Any] = {}
        self._hashed = HashedKeys()
        self._tables = ProbedTables()

    def _call(self, func: Any, args: Any, kwargs: Any, step: Any, *step_args: Any) -> None:
        self.check_numpy_call(func, args, kwargs)
        compared = None
        if (func is set or func is frozenset or func is dict) and args:
            if isinstance(args[0], str):  # its characters become objects
                self._spend(copied(args[0]))
            pairs = func is dict and not isinstance(args[0], dict)
            keys = [p[0] for p in args[0]] if pairs else args[0]
            is_set, frozen = func is not dict, func is frozenset
            compared = self._spend_hashing(keys, is_set=is_set, frozen=frozen)
        elif (func is str or id(func) in _MATERIALIZING_IDS) and args:
            self._spend(copied(args[0]))
        elif (func is int or func is float or func is complex or func is bool) and args:
            self._spend(copied(args[0]))  # parsed, or read
        elif func is range:
            self._spend(range_work(args))
        elif func is _RECONSTRUCT:
            self._spend(ARRAY_CALL)
        _run(id(func) in _OWN_IDS, step, *step_args)
        made = self.stack[-1]
        self._hashed.note(made, compared)
        self._tables.made(made)
        if func is np.dtype:
            check_expansion(made)  # made from a string
        elif func is _RECONSTRUCT:
            self._unbuilt[id(made)] = made

    def _spend_hashing(
        self, items: Any, target: Any = None, is_set: bool = False, frozen: bool = False
    ) -> Compared | None:
        """Hashing ``items`` into ``target`` (None: a new container, a set
        or frozenset if ``is_set``, which the caller notes once made;
        ``frozen``: a frozenset): see HashedKeys and ProbedTables. What it
        then holds."""
        work, compared = self._hashed.work(items, target, self._left())
        self._spend(work)
        limit = self._left() * PROBES_A_UNIT
        self._spend(self._tables.passed(items, target, is_set, limit) // PROBES_A_UNIT)
        if frozen and self._hashed.met > len(items):
            # two equal ones compare each item with those of its hash in the
            # other: each time, as often as a key set meets them (26th review)
            raise refuse("makes no frozenset of items of one hash (more than one an item)")
        if target is not None:
            self._hashed.note(target, compared)
        return compared

    def load_reduce(self) -> None:
        func, args = self.stack[-2], self.stack[-1]
        self._call(func, args, None, _PythonUnpickler.load_reduce, self)

    def load_newobj(self) -> None:
        func, args = self.stack[-2], self.stack[-1]
        self._call(func, args, None, _PythonUnpickler.load_newobj, self)

    def load_newobj_ex(self) -> None:
        func, args, kwargs = self.stack[-3:]
        self._call(func, args, kwargs, _PythonUnpickler.load_newobj_ex, self)

    def _instantiate(self, klass: Any, args: tuple[Any, ...]) -> None:  # OBJ, INST
        self._call(klass, args, None, _PythonUnpickler._instantiate, self, klass, args)

    def load_build(self) -> None:
        inst, given = self.stack[-2:]
        if isinstance(inst, np.ndarray):
            # numpy's __setstate__ frees an array's data whatever views of it
            # there are (review: a second BUILD left a memoryview dangling)
            if self._unbuilt.pop(id(inst), None) is not inst:
                raise refuse("gives a state only to an array _reconstruct made, once")
            if isinstance(given, tuple) and len(given) > 2:
                self._spend_dtype(given[2])
        self.stack[-1] = state = check_build(inst, given, self._checked)
        if isinstance(inst, np.ndarray):
            shape = state[1]
            unfolding = self._unfolding(state[2], shape)
            self._spend(len(state[4]) + unfolding + EXTENT * len(shape))
        else:
            self._spend(self._dtype_state_work(given, state))
        _run(True, _PythonUnpickler.load_build, self)  # numpy's, on an array or dtype

    def _dtype_state_work(self, given: tuple[Any, ...], state: tuple[Any, ...]) -> int:
        """What checking a dtype's state ``given`` costs: making the dtype
        again, each of its fields and their names, each dtype in it (walked
        as numpy hashes and prints it, and for what it unfolds into) and its
        metadata's entries (copied and compared). A state's containers may come from
        the memo for a few bytes each (one state given to new dtypes again:
        9 s from 1 MB; one metadata dict: 29 s from 975 KB: reviews)."""
        metadata = given[8] if len(given) == 9 else None
        if type(metadata) is tuple:  # a datetime's: (dict, unit)
            metadata = metadata[0]
        # names and titles are looked up and compared: byte by byte where a
        # key is equal to a name but not it (review: 34 s from 8 MB)
        keys = sum(map(len, given[4] or ())) // TEXT_UNIT
        work = DTYPE_FIELD * len(given[3] or ()) + keys + len(metadata or ())
        return DTYPE_STATE + work + DTYPE_NODE * state_nodes(state, self._left())

    # Opcodes that hash keys or items: each visit counted (a tuple hashes its
    # items every time, however often it is shared).
    def load_frozenset(self) -> None:
        compared = self._spend_hashing(self.stack, is_set=True, frozen=True)
        _PythonUnpickler.load_frozenset(self)
        self._hashed.note(self.stack[-1], compared)
        self._tables.made(self.stack[-1])

    def load_dict(self) -> None:
        compared = self._spend_hashing(self.stack[0::2])
        _PythonUnpickler.load_dict(self)
        self._hashed.note(self.stack[-1], compared)
        self._tables.made(self.stack[-1])

    def load_next_buffer(self) -> None:
        _PythonUnpickler.load_next_buffer(self)
        self._out_of_band[id(self.stack[-1])] = self.stack[-1]

    def load_readonly_buffer(self) -> None:
        # pickle.py takes a memoryview of whatever is on the stack (review:
        # of an array whose data a BUILD then freed)
        if self._out_of_band.get(id(self.stack[-1])) is not self.stack[-1]:
            raise refuse("runs READONLY_BUFFER on an out-of-band buffer only")
        _PythonUnpickler.load_readonly_buffer(self)

    def load_bytearray8(self) -> None:
        # pickle.py zero-fills the length it is told before reading (review:
        # 2 GB of memory touched for a record of 155 bytes cut short)
        (n,) = struct.unpack("<Q", self.read(8))
        data = self.read(n)
        if len(data) != n:
            raise pickle.UnpicklingError("BYTEARRAY8 cut short by the end of the pickle")
        self.append(bytearray(data))

    def get_extension(self, code: int) -> None:  # EXT1, EXT2, EXT4
        # pickle.py takes a registered code's global from copyreg's cache,
        # never asking find_class (review: os.getcwd, had one been registered)
        raise refuse(f"loads no extension codes (EXT {code})")

    # What containers get is added by their own methods, run on whatever the
    # stack holds: only the containers the opcodes are for (a list's slice
    # assignment from a range would expand it; an array's, loop over it).
    def load_setitem(self) -> None:
        target = self.stack[-3]
        _check_target(target, dict, "SETITEM")
        self._spend_hashing(self.stack[-2:-1], target)
        _PythonUnpickler.load_setitem(self)

    def load_setitems(self) -> None:
        target = self._below_mark()
        _check_target(target, dict, "SETITEMS")
        self._spend_hashing(self.stack[0::2], target)
        _PythonUnpickler.load_setitems(self)

    def load_append(self) -> None:
        _check_target(self.stack[-2], list, "APPEND")
        _PythonUnpickler.load_append(self)

    def load_appends(self) -> None:
        _check_target(self._below_mark(), list, "APPENDS")
        _PythonUnpickler.load_appends(self)

    def load_additems(self) -> None:
        target = self._below_mark()
        _check_target(target, set, "ADDITEMS")
        self._spend_hashing(self.stack, target, is_set=True)
        _PythonUnpickler.load_additems(self)

    def _below_mark(self) -> Any:
        """What the items after the last MARK are added to (pickle.py keeps
        the stack below a mark in its metastack)."""
        below = self.metastack[-1] if self.metastack else None
        return below[-1] if below else None

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.ADDITEMS[0]] = load_additems
    dispatch[pickle.FROZENSET[0]] = load_frozenset
    dispatch[pickle.DICT[0]] = load_dict
    dispatch[pickle.NEXT_BUFFER[0]] = load_next_buffer
    dispatch[pickle.READONLY_BUFFER[0]] = load_readonly_buffer
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


def _run(own: bool, step: Any, *args: Any) -> None:
    """``step(*args)``: where what it calls is one of safe mode's own
    (builtins, numpy), an error it raises (but MemoryError) is the pickle's,
    raised as pickle's own error so that the reader calls the record
    corrupt; the errors of a global a caller allowed are theirs."""
    if not own:
        step(*args)
        return
    try:
        step(*args)
    except (MemoryError, ForbiddenGlobalError):
        raise
    except Exception as exc:
        raise pickle.UnpicklingError(f"{type(exc).__name__}: {exc}") from exc


def _check_target(target: Any, kind: type, opcode: str) -> None:
    if not isinstance(target, kind):
        raise refuse(
            f"runs {opcode} on a {kind.__name__} only, not {type(target).__name__}"
        )
