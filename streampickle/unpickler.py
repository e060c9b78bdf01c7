"""Reading: frames in, records out, one at a time.

``frames.FrameReader`` pulls validated frames from a source; the files in
``records`` serve one record's pickle bytes (and buffers) to the C
``pickle.Unpickler``, or, for a small record of plain data, ``pickle.loads``
reads them once the C walk in ``_pickle_scan`` has found STOP last.
"""

from __future__ import annotations

import io
import operator
import pickle
import socket
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, NoReturn

from . import format as fmt
from . import safe, safe_budget, safe_calls, safe_dtypes
from ._pickle_scan import check_whole
from .errors import (
    CorruptStreamError,
    ForbiddenGlobalError,
    StreamError,
    TruncatedStreamError,
)
from .format import FrameHeader, Kind
from .frames import FrameReader
from .index import index_from_end, scan_index
from .io import FileSource, MmapSource, SocketSource, open_source
from .pagecache import check_policy
from .pickler import check_threads
from .records import FRAME_COST, RecordReader, WholeRecord, bad_counts, refused, too_large
from .safe import SAFE_GLOBALS, SafeRecordUnpickler
from .safe_calls import CallsUnpickler, NotCalls

# Enum members read per record, as module globals: ``Kind.PICKLE`` costs ~70 ns
# on CPython 3.11 (a metaclass attribute lookup), a global ~15.
_PICKLE, _RECORD_END = Kind.PICKLE, Kind.RECORD_END
_STREAM_ENDS = frozenset({Kind.INDEX, Kind.END})
_SMALL_FRAME = FrameReader.GROWTH_STEP
_HEADER_SIZE = fmt.FRAME_HEADER.size
_SMALL = fmt.SMALL_RECORDS  # records of one checked PICKLE frame: most small messages
#: Safe mode reads a record's PICKLE frames up to this many bytes before any
#: runs (see Unpickler._read_frames).
SAFE_WHOLE_MAX = 64 << 20


def _check_max_size(max_size: int | None) -> None:
    if max_size is not None and (not isinstance(max_size, int) or max_size < 0):
        raise ValueError(f"max_size must be None or an int >= 0, not {max_size!r}")


def _plain_limit(max_size: int | None) -> int:
    """Records that start with a checked PICKLE frame up to this size are
    read without decoding its header into a FrameHeader; larger ones go the
    general way, which also refuses those over max_size (which charges the
    frame its header too)."""
    return _SMALL_FRAME if max_size is None else min(max_size - FRAME_COST, _SMALL_FRAME)


def _not_a_pickle(number: int, exc: Exception) -> CorruptStreamError:
    return CorruptStreamError(
        f"record {number} is not a valid pickle: {type(exc).__name__}: {exc}"
    )


def _raise_from_loads(number: int, exc: Exception) -> NoReturn:
    """Raise what an error of ``pickle.loads`` on a plain record becomes: the
    unpickler's own, a corrupt record; MemoryError, and the error of a
    caller's warnings hook (CPython warns on a bad escape in a protocol-0
    string), stay as they are."""
    if isinstance(exc, MemoryError) or not _raised_by_unpickler(exc):
        raise exc
    raise _not_a_pickle(number, exc) from exc


def _raised_by_unpickler(exc: BaseException) -> bool:
    """True if ``exc`` came from the unpickler itself (or a C function it
    called), not from Python code the stream ran: a user's hook or class.
    The C unpickler leaves no frame below its caller's; safe mode's runs in
    pickle.py and safe*.py."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while (tb := tb.tb_next) is not None:
        if tb.tb_frame.f_code.co_filename not in _UNPICKLER_FILES:
            return False
    return True


_UNPICKLER_FILES = frozenset(
    module.__file__ for module in (pickle, safe, safe_budget, safe_calls, safe_dtypes)
)


class _RecordUnpickler(pickle.Unpickler):
    """The C unpickler for one record. Each record gets a fresh one: the C
    memo's next index survives ``memo.clear()``, so a reused unpickler would
    number the next record's memo entries wrongly. A subclass only so that
    hooks can be set on the instance (C looks them up there; no ``__slots__``:
    on Python 3.13 ``persistent_load`` is a method, set in the instance dict);
    without a Python ``__init__``, making one per small message costs what the
    C one does."""

    def find_class(self, module: str, name: str) -> Any:
        # A Python frame, so a missing module's error reaches the caller as is
        # (errors raised straight from the C unpickler mean a corrupt record).
        return pickle.Unpickler.find_class(self, module, name)


class Unpickler:
    """Reads the records of a streampickle stream, one per ``load``.

    Subclasses may define ``persistent_load(pid)`` and override
    ``find_class(module, name)`` as with ``pickle.Unpickler``.
    """

    #: Loads a persistent ID: define it in a subclass or set it on an instance.
    persistent_load: Callable[[Any], Any] | None = None

    def __init__(
        self,
        file: Any,
        *,
        mmap_mode: str | None = None,
        safe: bool = False,
        allow: Iterable[str] = (),
        threads: int | None = None,
        max_size: int | None = None,
        page_cache: str = "auto",
    ) -> None:
        check_threads(threads)
        check_policy(page_cache)
        _check_max_size(max_size)
        self._source = open_source(file, mmap_mode, page_cache)
        self._frames = FrameReader(self._source, threads)
        self._record = RecordReader(self._frames, max_size, strict=safe)
        self._safe = safe
        self._whole = WholeRecord()
        self._inner: Any = None
        self._random_index: fmt.Index | None = None
        self._plain_limit = _plain_limit(max_size)
        # Where the input's size is known, a payload past its end is refused
        # before it is read, as ``decode_frame_header`` does.
        self._unsized = self._source.remaining() is None
        # A plain socket's reads of a small record are one C call (see load).
        source = self._source
        self._socket = (
            source.sock
            if isinstance(source, SocketSource)
            and type(source.sock) is socket.socket
            and not source.prefix
            else None
        )
        self._state = "new"
        self._count = 0
        # Set on each record's unpickler, and dropped with it (held here, a
        # bound method would keep this Unpickler alive until a GC cycle): a
        # subclass's override, behind the safe-mode check if asked.
        self._overridden = getattr(self.find_class, "__func__", None) is not _OWN_FIND_CLASS
        self._allowed = SAFE_GLOBALS | frozenset(allow) if safe else None
        # safe mode's C path for records of numpy's calls (safe_calls.py)
        self._calls = self._allowed == SAFE_GLOBALS and not self._overridden

    def _checked_find_class(self, module: str, name: str) -> Any:
        """find_class in safe mode: only the globals allowed reach it."""
        assert self._allowed is not None
        if f"{module}.{name}" not in self._allowed:
            raise ForbiddenGlobalError(
                f"global {module}.{name} is forbidden in safe mode "
                f"(record {self._count}); pass allow=[...] to permit it"
            )
        return self.find_class(module, name)

    def find_class(self, module: str, name: str) -> Any:
        """The global ``module.name``, as ``pickle.Unpickler.find_class``."""
        assert self._inner is not None, "find_class is called while loading"
        return type(self._inner).find_class(self._inner, module, name)

    def _refuse_reentry(self) -> None:
        """A hook or a class's ``__setstate__`` that reads from this Unpickler
        while it loads a record would move the stream under it."""
        if self._inner is not None:
            raise RuntimeError(
                f"record {self._count} is being loaded: this Unpickler cannot read "
                "another record until it is done (use a second Unpickler)"
            )

    def load(self) -> Any:
        """The next record; EOFError at the clean end of the stream."""
        state = self._state
        if state != "open" or self._inner is not None:
            self._refuse_reentry()
            if state == "ended":
                raise EOFError("end of streampickle stream")
            if state == "closed":
                raise ValueError("cannot load from a closed Unpickler")
            if state == "broken":
                raise StreamError("stream unreadable after an earlier error")
        try:
            both = b""  # what is read of the payload and the header after it
            if state != "open":  # new: the first header comes with the stream's
                _, data = self._frames.stream_header(then=_HEADER_SIZE)
                self._state = "open"
            elif self._socket is None:
                data = self._source.read(_HEADER_SIZE)
            else:  # most small records: read, checked and loaded in one C call
                parts: list[bytes] = []
                try:
                    obj = _SMALL.receive_record(
                        self._socket, self._source, self._plain_limit, self._safe, parts
                    )
                except OSError:  # of reading: a plain pickle calls nothing
                    raise
                except Exception as exc:
                    _raise_from_loads(self._count, exc)
                if obj is Ellipsis:  # checked, whole, not plain
                    record = parts[1]
                    n = len(record) - _HEADER_SIZE
                    obj = self._unpickle_whole(record[:n], self._count)
                if obj is not NotImplemented:
                    self._count += 1
                    return obj
                data, both = parts[0], b"".join(parts[1:])
                if len(data) < _HEADER_SIZE:  # a timeout is set, or the peer closed
                    data += self._source.read(_HEADER_SIZE - len(data))
            n = _SMALL.size(data)  # -1 unless a checked, uncompressed PICKLE frame
            if 0 <= n <= self._plain_limit and (
                self._unsized or n <= (self._source.remaining() or 0)
            ):
                if len(both) < n + _HEADER_SIZE:
                    both += self._source.read(n + _HEADER_SIZE - len(both))
                try:
                    obj = _SMALL.load(data, both, self._safe)
                except Exception as exc:
                    _raise_from_loads(self._count, exc)
                if obj is Ellipsis:  # checked, whole, not plain
                    obj = self._unpickle_whole(both[:n], self._count)
                elif obj is NotImplemented:  # the general way says what is wrong
                    offset = self._source.position - len(both) - _HEADER_SIZE
                    check = fmt.decode_frame_header(data, offset, None).payload_check
                    chunk, after = self._frames.split_payload(both, n, check, offset)
                    obj = self._read_first_frame(chunk, after, self._count)
                self._count += 1
                return obj
            h = self._frames.next_header(data)
            if h is None:
                raise TruncatedStreamError(
                    f"input ended at offset {self._source.position} after "
                    f"{self._count} records, without the stream's END frame"
                )
            if h.kind in _STREAM_ENDS:
                self._read_end(h)
                raise EOFError("end of streampickle stream")
            obj = self._read_record(h, self._count)
        except EOFError:
            raise
        except BaseException:
            # Mid-record, the stream position is lost: refuse further loads.
            self._state = "broken"
            raise
        self._count += 1
        return obj

    def _read_record(self, first: FrameHeader, number: int) -> Any:
        """Unpickle the record whose first frame header is ``first``."""
        if first.kind is _PICKLE and first.stored_size <= _SMALL_FRAME:
            max_size = self._record.max_size
            if max_size is not None and first.raw_size + FRAME_COST > max_size:
                raise too_large(number, max_size, first)
            chunk, after = self._frames.pickle_and_after(first)
            return self._read_first_frame(chunk, after, number)
        return self._read_frames(first, number, b"", read=False)

    def _read_first_frame(self, chunk: bytes, after: bytes, number: int) -> Any:
        """Unpickle the record whose first PICKLE frame's bytes, just read, are
        ``chunk``, followed by ``after``: the general way for what the C fast
        path (``_SMALL``) did not take, which says what is wrong, and for a
        record whose first header was decoded (random access)."""
        if after == fmt.whole_record_end(len(chunk)):
            return self._read_whole(chunk, number)
        nxt = self._frames.next_header(after)
        if nxt is not None and nxt.kind is _RECORD_END:
            # Its counts are wrong (right ones make whole_record_end's bytes):
            # refused before the pickle runs its REDUCEs.
            raise bad_counts(nxt, len(chunk), 0)
        return self._read_frames(nxt, number, chunk, read=True)

    def _read_frames(
        self, h: FrameHeader | None, number: int, chunk: bytes, read: bool
    ) -> Any:
        """Unpickle the record whose pickle bytes so far are ``chunk`` (those
        of its first frame, if ``read``) and whose next frame header is ``h``
        (None: the input ended). In safe mode
        its PICKLE frames of plain data are read ahead, up to SAFE_WHOLE_MAX
        bytes: the scan can tell plain data only of a whole pickle, and a
        whole record of it is read by the C unpickler, not the counted Python
        one (~20x slower a pickle byte)."""
        record = self._record
        record.begin(h, number, chunk, read)
        if self._safe:
            calls = self._calls and self.persistent_load is None
            whole = record.gather(SAFE_WHOLE_MAX, calls)
            if whole is not None and not record.buffer_count:
                return self._read_whole(whole, number)
            if whole is not None:  # a record of calls and its buffers, gathered
                try:
                    verdict = check_whole(whole, strict=True)
                except ValueError as exc:
                    raise refused(number, exc) from None
                if verdict == 2:
                    chunk, waiting = record.chunk, list(record.buffers)
                    try:
                        return self._unpickle(record, number, calls=True)
                    except NotCalls:  # another global: the counting unpickler's
                        record.chunk, record.pos = chunk, 0
                        record.buffers.clear()
                        record.buffers.extend(waiting)
        return self._unpickle(record, number)

    def _read_whole(self, chunk: bytes | bytearray, number: int) -> Any:
        """Unpickle a whole record's pickle bytes, all in memory."""
        try:
            verdict = check_whole(chunk, strict=self._safe)
        except ValueError as exc:
            raise refused(number, exc) from None
        if verdict is True:
            # It calls nothing of its own, so no hook applies; pickle.loads
            # needs no unpickler of ours.
            try:
                return pickle.loads(chunk)
            except Exception as exc:
                _raise_from_loads(number, exc)
        whole = bytes(chunk)
        if isinstance(chunk, bytearray):  # gathered: not held twice while it runs
            chunk.clear()
        return self._unpickle_whole(whole, number, verdict == 2)

    def _unpickle_whole(self, chunk: bytes, number: int, calls: bool | None = None) -> Any:
        """``calls``: whether check_whole found the record's code calls alone
        (None: not asked yet; safe mode only)."""
        whole = self._whole
        if self._calls and self.persistent_load is None:
            if calls is None:
                calls = check_whole(chunk, strict=True) == 2
            if calls:
                whole.chunk, whole.pos, whole.number = chunk, 0, number
                try:
                    return self._unpickle(whole, number, calls=True)
                except NotCalls:  # another global: the counting unpickler's
                    pass
        whole.chunk, whole.pos, whole.number = chunk, 0, number
        return self._unpickle(whole, number)

    def _unpickle(
        self, file: RecordReader | WholeRecord, number: int, calls: bool = False
    ) -> Any:
        """Unpickle record ``number`` from ``file`` (the record reader, begun,
        or a whole record): through an unpickler of ours, which applies the
        hooks and refuses pickle bytes after STOP; ``calls``: a record of
        numpy's calls in safe mode (safe_calls.py), NotCalls if it names
        another global."""
        record = self._record
        buffers = record if file is record else ()  # (a whole record has none)
        try:
            if calls:
                inner: Any = CallsUnpickler(file, buffers, file.pickle_bytes)
            else:
                # Safe mode runs what names globals with Python's unpickler,
                # which checks each call and BUILD (safe.py); plain data needs
                # neither.
                unpickler = SafeRecordUnpickler if self._safe else _RecordUnpickler
                inner = unpickler(file, buffers=buffers)
                if self._allowed is not None:
                    inner.find_class = self._checked_find_class
                elif self._overridden:
                    inner.find_class = self.find_class
                if self.persistent_load is not None:
                    inner.persistent_load = self.persistent_load
            self._inner = inner
            obj = inner.load()
            file.finish()
            return obj
        except (StreamError, NotCalls):
            raise
        except MemoryError:
            owed = record.scan.owed if file is record else 0
            if owed:  # the unpickler allocates an argument before reading it
                raise CorruptStreamError(
                    f"record {number} claims {owed} more pickle bytes than have "
                    "arrived, more than can be allocated"
                ) from None
            raise
        except Exception as exc:
            if file is record and record.failure is not None:
                raise record.take_failure() from None
            if not _raised_by_unpickler(exc):
                raise  # the user's hook or class failed: their error, as is
            raise _not_a_pickle(number, exc) from exc
        finally:
            self._inner = None  # drop the memo and its references
            self._whole.chunk = record.chunk = b""  # and the pickle bytes read

    # -- random access ------------------------------------------------------

    def _index(self) -> fmt.Index:
        """The stream's index: read from its tail, or rebuilt by one scan of
        frame headers if the tail is missing or damaged (a crashed writer)."""
        if self._random_index is None:
            source = self._source
            if not isinstance(source, FileSource | MmapSource) or not source.seekable:
                raise TypeError("random access needs a path or a seekable file")
            here = source.position
            try:
                source.seek(0)
                self._frames.stream_header()
                try:
                    index = index_from_end(source)
                except StreamError:
                    index = None
                if index is None:
                    index = scan_index(source).index
            finally:
                source.seek(here)
            self._random_index = index
        return self._random_index

    def __len__(self) -> int:
        """The number of complete records (seekable inputs only)."""
        return len(self._index().records)

    def __getitem__(self, i: int) -> Any:
        """Record ``i`` (negative counts from the end), read through the index
        without reading the records before it."""
        self._refuse_reentry()
        records = self._index().records
        n = operator.index(i)
        if n < 0:
            n += len(records)
        if not 0 <= n < len(records):
            raise IndexError(f"record {i} out of range: the stream has {len(records)}")
        source = self._source
        assert isinstance(source, FileSource | MmapSource)
        here = source.position
        try:
            source.seek(records[n].offset)
            first = self._frames.next_header()
            if first is None:
                raise TruncatedStreamError(f"no frame at the offset of record {n}")
            return self._read_record(first, n)
        finally:
            source.seek(here)

    def _read_end(self, h: FrameHeader) -> None:
        """Consume the stream's tail: an optional INDEX, then END."""
        index_at = h.offset if h.kind is Kind.INDEX else 0
        if h.kind is Kind.INDEX:
            # Sequential readers skip the index: a damaged one must not stop them.
            self._frames.skip(h.stored_size, h.where())
            nxt = self._frames.next_header()
            if nxt is None:
                raise TruncatedStreamError(
                    f"input ended at offset {self._source.position} before the END frame"
                )
            h = nxt
        if h.kind is not Kind.END:
            raise CorruptStreamError(f"{h.where()} where END was expected")
        if h.raw_size != index_at:
            raise CorruptStreamError(
                f"{h.where()} points to an index at {h.raw_size}, not {index_at}"
            )
        self._state = "ended"

    def _expect_end(self) -> None:
        """Consume the END of a one-record stream (what ``load()`` reads)."""
        data = self._source.read(_HEADER_SIZE)
        if data == fmt.NO_INDEX_END:  # what a pipe or socket gets: nothing to check
            self._state = "ended"
            return
        h = self._frames.next_header(data)
        if h is None:
            raise TruncatedStreamError(
                f"input ended at offset {self._source.position} before the END frame"
            )
        if h.kind not in (Kind.INDEX, Kind.END):
            raise StreamError(
                f"stream holds more than one record ({h.where()}); "
                "read it with streampickle.Unpickler"
            )
        self._read_end(h)

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.load()
            except EOFError:
                return

    def close(self) -> None:
        if self._state != "closed":
            self._state = "closed"
            self._source.close()

    def __del__(self) -> None:
        # ``for r in Unpickler(path)`` opens the file: close it with the reader.
        if hasattr(self, "_state"):
            self.close()

    def __enter__(self) -> Unpickler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


#: Ours, to tell a find_class replaced in a subclass, on the class or on an
#: instance (then set on each record's unpickler) from the default.
_OWN_FIND_CLASS = Unpickler.find_class


def load(
    file: Any,
    *,
    mmap_mode: str | None = None,
    safe: bool = False,
    allow: Iterable[str] = (),
    threads: int | None = None,
    max_size: int | None = None,
    page_cache: str = "auto",
) -> Any:
    """Read a one-record stream (as ``dump`` writes) through its END frame.

    ``max_size`` refuses a record of more pickle and buffer bytes (and 32 a
    frame, its header) before they are allocated: with ``safe=True``, the
    guard for untrusted peers."""
    if type(file) is socket.socket and mmap_mode is None and not allow:
        # A small message, as dump sends it: read, checked and loaded in one C
        # call; else the general way reads on from the bytes that call read.
        limit = _SMALL_FRAME
        if threads is not None or page_cache != "auto" or max_size is not None:
            # not called for the defaults: a call costs a small message ~1.5%
            check_threads(threads)
            check_policy(page_cache)
            _check_max_size(max_size)
            limit = _plain_limit(max_size)
        parts: list[bytes] = []
        try:
            obj = _SMALL.receive_stream(file, limit, safe, parts)
        except OSError:  # of reading: a plain pickle calls nothing
            raise
        except Exception as exc:
            _raise_from_loads(0, exc)
        if obj is not NotImplemented:
            return obj
        file = SocketSource(file, b"".join(parts))
    with Unpickler(
        file,
        mmap_mode=mmap_mode,
        safe=safe,
        allow=allow,
        threads=threads,
        max_size=max_size,
        page_cache=page_cache,
    ) as unpickler:
        obj = unpickler.load()
        unpickler._expect_end()
    return obj


def loads(
    data: Any, *, safe: bool = False, allow: Iterable[str] = (), max_size: int | None = None
) -> Any:
    """Read a one-record stream from a bytes-like object."""
    return load(io.BytesIO(data), safe=safe, allow=allow, max_size=max_size)
