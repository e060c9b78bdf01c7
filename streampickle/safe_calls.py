"""Safe mode's C path for records whose only code is numpy's calls.

In safe mode a record that names a global runs in Python's unpickler, each
call and BUILD checked (safe.py): several times slower than the C unpickler
(a dict of 1000 small arrays 6.8x, of numpy scalars 19.7x). Most such records
name only numpy's ``dtype``, ``_frombuffer`` and ``scalar``. Where the scan
finds a record's code is calls alone, whose results are given nothing and
hashed as no key (``check_whole``'s 2: no BUILD, no object made but by a
call, no extension code or persistent ID; _pickle_scan.h), the C unpickler
runs it: ``find_class`` gives it those three, each call checked first by
``check_call`` as on the Python path, and any other global sends the record
back to Python (``NotCalls``).

numpy pickles a dtype as a call and then a BUILD of its state (byte order,
flags), which a scan of opcodes cannot judge. So streampickle's picklers
write a dtype of numbers (kinds b, i, u, f, c, with no metadata) as one call,
its byte order in its type string: ``numpy.dtype('<f8', False, True)``, which
``pickle.loads`` reads as well.
"""

from __future__ import annotations

import copyreg
import pickle
from types import SimpleNamespace
from typing import Any

import numpy as np

from .safe import _FROMBUFFER, _SCALAR, Budget
from .safe_dtypes import check_expansion

#: The calls the C path gives a record, by (module, name) as pickled.
_CALLS: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype}
for _core in ("core", "_core"):  # numpy 1's names and numpy 2's
    _CALLS[(f"numpy.{_core}.numeric", "_frombuffer")] = _FROMBUFFER
    _CALLS[(f"numpy.{_core}.multiarray", "scalar")] = _SCALAR


class NotCalls(Exception):
    """A record of calls names another global: Python's unpickler runs it."""


class CallsUnpickler(pickle.Unpickler):
    """The C unpickler for a whole record of calls, of ``pickle_bytes``
    (see the top); what the calls cost counted as on the Python path
    (Budget)."""

    def __init__(self, file: Any, buffers: Any, pickle_bytes: int) -> None:
        super().__init__(file, buffers=buffers)
        self._budget = Budget(SimpleNamespace(pickle_bytes=pickle_bytes))

    def find_class(self, module: str, name: str) -> Any:
        func = _CALLS.get((module, name))
        if func is None:
            raise NotCalls(f"{module}.{name}")
        # (the budget, not the unpickler: its memo holds this, and a cycle
        # would keep the memo, and what the record made, until a GC pass)
        budget = self._budget

        def checked_call(*args: Any) -> Any:
            budget.check_numpy_call(func, args, None)
            try:
                made = func(*args)
            except MemoryError:
                raise
            except Exception as exc:  # numpy's: the record's fault (safe._run)
                raise pickle.UnpicklingError(f"{type(exc).__name__}: {exc}") from exc
            if func is np.dtype:
                check_expansion(made)
            return made

        return checked_call


def _reduce_dtype(dtype: np.dtype[Any]) -> Any:
    if dtype.kind in "biufc" and dtype.metadata is None:
        return np.dtype, (dtype.str, False, True)
    return dtype.__reduce__()  # numpy's own: a call and a BUILD


#: The dtype classes of numbers (numpy 2: one a type; byte orders share it).
_NUMBER_DTYPES = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"}


class DtypeTable:
    """A pickler's ``dispatch_table`` (which replaces copyreg's): copyreg's
    reductions, kept current, and ``_reduce_dtype`` for dtypes of numbers."""

    def __init__(self) -> None:
        self._copyreg: dict[Any, Any] = {}
        self.table: dict[Any, Any] = {}
        self.renew()

    def renew(self) -> bool:
        """Whether copyreg's changed since it was last read (then ``table``
        is made anew; a comparison of a dozen entries a record)."""
        if self._copyreg == copyreg.dispatch_table:
            return False
        self._copyreg = dict(copyreg.dispatch_table)
        self.table = dict(self._copyreg)
        for kind in _NUMBER_DTYPES:
            self.table.setdefault(kind, _reduce_dtype)
        return True
