"""What the reader does with bad input: truncated, bit-flipped, garbage, hostile
and malformed streams.

The contract under test (streampickle/errors.py, streampickle/format.py):

* an empty source raises EOFError;
* a source that ends early raises TruncatedStreamError, whose message names the
  offset where the input ended;
* anything else that is wrong raises CorruptStreamError, whose message names
  what is wrong (and, for damage the frame checks catch, the offset);
* nothing else escapes, nothing hangs, no claimed length is allocated before
  the bytes behind it exist, and damage never yields a different object. The
  one damage a sequential reader may ignore is in the INDEX payload, which it
  skips; ``read_index`` must then report it.

Every sweep below collects all its failures and reports them grouped by the
region of the stream they were found in, so a failing test says where.
"""

from __future__ import annotations

import copy
import copyreg
import io
import itertools
import math
import os
import pickle
import pickletools
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tuple_hash import last_item_hash

import streampickle as sp
from streampickle import format as fmt
from streampickle import safe
from streampickle.format import Flag, Kind

# ---------------------------------------------------------------------------
# Sample streams

FRAME_SIZE = fmt.MIN_FRAME_SIZE  # 4096: the smallest frames, so several of them
HEADER_SIZE = fmt.FRAME_HEADER.size  # 32

#: One record: two arrays large enough to go out of band, one small enough to
#: stay in band, a bytes object larger than a frame, and nested Python data.
ONE_OBJ = {
    "ints": np.arange(160, dtype=np.int64),  # 1280 bytes: out of band
    "grid": np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20),  # 1600 bytes
    "small": np.arange(10, dtype=np.int16),  # in band
    "blob": bytes(range(256)) * 18,  # 4608 bytes: spans two PICKLE frames
    "nested": [1, 2.5, "x", (None, True, -(2**70)), {"k": [b"y", frozenset({3})]}],
}
ONE = sp.dumps(ONE_OBJ, frame_size=FRAME_SIZE)


def _write_records(records: list[Any]) -> bytes:
    bio = io.BytesIO()
    with sp.Pickler(bio, frame_size=FRAME_SIZE) as pickler:
        for record in records:
            pickler.dump(record)
    return bio.getvalue()


_TAGS = ["a", "b"]
_SEVENS = np.full(130, 7, dtype=np.int64)  # 1040 bytes: out of band
#: Later records hold objects twice (memo references), which they decode on
#: their own: see TestMultiRecordStreamsRoundTrip.
MULTI_RECORDS: list[Any] = [
    {"id": 0, "tags": _TAGS, "nested": ((1, 2.5), {"k": None})},
    np.arange(200, dtype=np.float64),  # 1600 bytes: out of band
    bytes(range(256)) * 20,  # 5120 bytes: several PICKLE frames
    {"ints": _SEVENS, "same": _SEVENS, "tags": _TAGS, "again": _TAGS, "tail": ("x", 3)},
    ["last", _TAGS, "last", _TAGS],
]
MULTI = _write_records(MULTI_RECORDS)


class Frame(NamedTuple):
    offset: int  # of the frame header
    header: fmt.FrameHeader
    end: int  # just past the payload and check table

    @property
    def payload(self) -> range:
        return range(self.offset + HEADER_SIZE, self.end)

    @property
    def buffer_data(self) -> range:
        start = self.offset + HEADER_SIZE
        return range(start, start + self.header.raw_size)


def walk(data: bytes) -> list[Frame]:
    """The frames of a well-formed stream, decoded by the format module alone."""
    frames, pos = [], fmt.STREAM_HEADER.size
    while pos < len(data):
        h = fmt.decode_frame_header(data[pos : pos + HEADER_SIZE], pos, None)
        end = pos + HEADER_SIZE + h.stored_size + h.check_table_size()
        frames.append(Frame(pos, h, end))
        pos = end
    assert pos == len(data)
    return frames


def record_ends(data: bytes) -> list[int]:
    """Offset just past each record (its RECORD_END frame)."""
    return [f.end for f in walk(data) if f.header.kind is Kind.RECORD_END]


def frames_of(data: bytes, kind: Kind) -> list[Frame]:
    return [f for f in walk(data) if f.header.kind is kind]


def index_payload(data: bytes) -> range:
    (index,) = frames_of(data, Kind.INDEX)
    return index.payload


def region(data: bytes, offset: int) -> str:
    """Where ``offset`` falls, for failure reports."""
    if offset < fmt.STREAM_HEADER.size:
        return "stream header"
    for f in walk(data):
        if f.offset <= offset < f.end:
            part = "header" if offset < f.offset + HEADER_SIZE else "payload"
            if f.header.kind is Kind.BUFFER and offset >= f.buffer_data.stop:
                part = "check table"
            return f"{f.header.kind.name} {part} (frame at {f.offset})"
    return "end of stream"


def same(a: Any, b: Any) -> bool:
    """Deep equality that understands arrays and insists on equal types."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b)
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


class NonSeekable:
    """A source with only read and readinto, like a pipe: its size is unknown."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._file.read(n)

    def readinto(self, buf: Any) -> int:
        return self._file.readinto(buf)


@contextmanager
def pipe_holding(data: bytes) -> Iterator[Any]:
    """The read end of a real pipe that holds ``data`` (then EOF)."""
    assert len(data) < 60_000  # fits in the pipe buffer: no writer thread needed
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    with open(r, "rb", buffering=0) as f:
        yield f


def summarize(problems: list[tuple[str, str]], total: int, what: str) -> str:
    """``problems`` is [(region, description)]: one example per region."""
    by_region: dict[str, list[str]] = {}
    for where, desc in problems:
        by_region.setdefault(where.split(" (")[0], []).append(desc)
    lines = [f"{len(problems)} of {total} {what} misbehaved:"]
    for where, descs in by_region.items():
        lines.append(f"  {where}: {len(descs)}, e.g. {descs[0]}")
    return "\n".join(lines)


def describe(exc: BaseException | None) -> str:
    return "no error" if exc is None else f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------
# The readers every sweep runs through


def load_loads(data: bytes, path: Path) -> Any:
    return sp.loads(data)


def load_bytesio(data: bytes, path: Path) -> Any:
    return sp.load(io.BytesIO(data))


def load_nonseekable(data: bytes, path: Path) -> Any:
    return sp.load(NonSeekable(data))


#: Readers of the file already at ``path``.
FILE_READERS: dict[str, Callable[[Path], Any]] = {
    "load_path": lambda path: sp.load(path),
    "load_mmap": lambda path: sp.load(path, mmap_mode="r"),
}


def load_path(data: bytes, path: Path) -> Any:
    path.write_bytes(data)
    return FILE_READERS["load_path"](path)


def load_mmap(data: bytes, path: Path) -> Any:
    path.write_bytes(data)
    return FILE_READERS["load_mmap"](path)


def load_unpickler(data: bytes, path: Path) -> Any:
    """Every record through Unpickler iteration; the one record it must hold."""
    with sp.Unpickler(io.BytesIO(data)) as unpickler:
        records = list(unpickler)
    assert len(records) == 1, f"expected one record, got {len(records)}"
    return records[0]


ONE_RECORD_READERS = {
    "loads": load_loads,
    "load_bytesio": load_bytesio,
    "load_nonseekable": load_nonseekable,
    "load_path": load_path,
    "load_mmap": load_mmap,
    "unpickler": load_unpickler,
}


@pytest.fixture(params=list(ONE_RECORD_READERS))
def read(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[bytes], Any]:
    """Reads a one-record stream from bytes, through one of the readers."""
    reader = ONE_RECORD_READERS[request.param]
    path = tmp_path / "stream.spk"
    return lambda data: reader(data, path)


Outcomes = tuple[list[Any], Exception | None]


def iterate(source: Any, mmap_mode: str | None = None) -> Outcomes:
    """The records an Unpickler yields before it stops, and the error it stops on."""
    got: list[Any] = []
    try:
        with sp.Unpickler(source, mmap_mode=mmap_mode) as unpickler:
            for obj in unpickler:
                got.append(obj)
    except Exception as exc:
        return got, exc
    return got, None


#: Iterate over the records of bytes, or (FILE_ITERATORS) of the file at a path.
BYTES_ITERATORS: dict[str, Callable[[bytes], Outcomes]] = {
    "bytesio": lambda data: iterate(io.BytesIO(data)),
    "nonseekable": lambda data: iterate(NonSeekable(data)),
}
FILE_ITERATORS: dict[str, Callable[[Path], Outcomes]] = {
    "path": lambda path: iterate(path),
    "mmap": lambda path: iterate(path, "r"),
}


def truncations(data: bytes, path: Path, in_file: bool) -> Iterator[tuple[int, bytes]]:
    """Every cut 1..len-1, longest first, with the prefix it leaves. If
    ``in_file``, the file at ``path`` holds the prefix: it is written once,
    then truncated in place for each cut."""
    if in_file:
        path.write_bytes(data)
    for cut in range(len(data) - 1, 0, -1):
        if in_file:
            os.truncate(path, cut)
        yield cut, data[:cut]


# ---------------------------------------------------------------------------
# Measuring time and memory of one call


class Hung(BaseException):
    """Raised by the watchdog: the call under test did not return in time."""


@dataclass
class Outcome:
    value: Any
    error: BaseException | None
    seconds: float
    traced_peak: int  # bytes, tracemalloc (numpy reports its data allocations)
    rss_growth: int  # bytes of resident memory above the level before the call


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux)
    except OSError:
        return False
    return True


def _peak_rss_kib() -> int:
    hwm = _rss_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measured(fn: Callable[[], Any], timeout: float = 20.0) -> Outcome:
    """Run ``fn`` under a watchdog, recording its error, time and peak memory."""
    if _reset_rss_peak() and _rss_kib("VmHWM") is not None:
        before = _rss_kib("VmRSS") or 0
    else:  # the peak since the process started: growth only if it is a new peak
        before = _peak_rss_kib()
    tracing = tracemalloc.is_tracing()
    if tracing:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    else:
        tracemalloc.start()
        base = 0
    watchdog = threading.current_thread() is threading.main_thread()

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hung(f"no answer after {timeout} s")

    if watchdog:
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    value, error = None, None
    start = time.perf_counter()
    try:
        value = fn()
    except Exception as exc:  # includes MemoryError
        error = exc
    except Hung as exc:
        error = exc
    finally:
        seconds = time.perf_counter() - start
        if watchdog:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        traced = tracemalloc.get_traced_memory()[1] - base
        if not tracing:
            tracemalloc.stop()
    if error is not None:  # do not keep a failed call's frames (and arrays) alive
        error.__traceback__ = None
        error.__context__ = error.__cause__ = None
    return Outcome(value, error, seconds, traced, (_peak_rss_kib() - before) * 1024)


MIB = 1 << 20
MEMORY_LIMIT = 64 * MIB
TIME_LIMIT = 2.0


def assert_refused_cheaply(outcome: Outcome, *classes: type[BaseException]) -> None:
    assert outcome.error is not None, f"accepted, returned {outcome.value!r:.200}"
    assert isinstance(outcome.error, classes), describe(outcome.error)
    assert outcome.seconds < TIME_LIMIT, f"took {outcome.seconds:.2f} s"
    assert outcome.traced_peak < MEMORY_LIMIT, (
        f"allocated {outcome.traced_peak / MIB:.0f} MiB (tracemalloc) before refusing: "
        + describe(outcome.error)
    )
    assert outcome.rss_growth < MEMORY_LIMIT, (
        f"resident memory grew {outcome.rss_growth / MIB:.0f} MiB before refusing"
    )


# ---------------------------------------------------------------------------
# Crafting streams by hand


STREAM_HEADER = fmt.encode_stream_header()
END = fmt.frame(Kind.END)
HEADER_CHECK_AT_16 = "frame header check mismatch at offset 16"
AFTER_STOP = "record 0 is not a valid pickle: pickle bytes after STOP"


def raw_header(
    kind: int,
    *,
    codec: int = 0,
    flags: int = 0,
    reserved: int = 0,
    param: int = 0,
    stored: int = 0,
    raw: int = 0,
    payload_check: int = 0,
) -> bytes:
    """A frame header with any field values and a VALID header check."""
    head = fmt.FRAME_HEADER.pack(
        kind, codec, flags, reserved, param, stored, raw, payload_check, 0
    )[: fmt.HEADER_CHECKED]
    return head + fmt.CHECK.pack(fmt.checksum(head))


def stream_header(magic: bytes = fmt.MAGIC, version: int = 1, flags: int = 0) -> bytes:
    """A stream header with any field values and a VALID check."""
    head = fmt.STREAM_HEADER.pack(magic, version, flags, 0)[:12]
    return head + fmt.CHECK.pack(fmt.checksum(head))


def pickle_frame(payload: bytes, *, checked: bool = True) -> bytes:
    return (
        fmt.frame(
            Kind.PICKLE,
            stored_size=len(payload),
            raw_size=len(payload),
            flags=Flag.CHECKED if checked else Flag(0),
            payload_check=fmt.checksum(payload) if checked else 0,
        )
        + payload
    )


def record_end(pickle_bytes: int, buffers: int = 0) -> bytes:
    return fmt.frame(Kind.RECORD_END, raw_size=pickle_bytes, param=buffers)


def in_frames(pickled: bytes) -> bytes:
    """One record holding ``pickled`` in PICKLE frames of FRAME_SIZE bytes (in
    two if it is smaller: cut after 4 bytes, inside the opcode after PROTO)."""
    pieces = [pickled[i : i + FRAME_SIZE] for i in range(0, len(pickled), FRAME_SIZE)]
    if len(pieces) == 1:
        pieces = [pickled[:4], pickled[4:]]
    return b"".join(map(pickle_frame, pieces)) + record_end(len(pickled))


def pad_frame(payload: bytes) -> bytes:
    return fmt.frame(Kind.PAD, stored_size=len(payload), raw_size=len(payload)) + payload


def buffer_frame(
    data: bytes, chunk: int = FRAME_SIZE, *, ordinal: int = 0, checked: bool = True
) -> bytes:
    """A BUFFER frame, the record's ``ordinal``-th (its payload_check says so)."""
    starts = range(0, len(data), chunk)
    table = b"".join(fmt.CHECK.pack(fmt.checksum(data[i : i + chunk])) for i in starts)
    header = fmt.frame(
        Kind.BUFFER, stored_size=len(data), raw_size=len(data), param=chunk,
        flags=Flag.CHECKED if checked else Flag(0),
        payload_check=fmt.buffer_ordinal_check(ordinal),
    )
    return header + data + (table if checked else b"")


def record(pickled: bytes, *, split: int | None = None) -> bytes:
    """One record holding ``pickled`` (in two PICKLE frames if ``split``)."""
    parts = [pickled] if split is None else [pickled[:split], pickled[split:]]
    return b"".join(map(pickle_frame, parts)) + record_end(len(pickled))


def stream(*parts: bytes) -> bytes:
    return STREAM_HEADER + b"".join(parts)


#: A list pickled with protocol 5: PROTO, FRAME (length in bytes 3..10), ...
LIST = list(range(100))
LIST_PICKLE = pickle.dumps(LIST, protocol=5)
REDUCED_CALLS: list[str] = []


def _note_call(what: str) -> str:
    REDUCED_CALLS.append(what)
    return what


class _Reduced:
    """Unpickles by calling ``_note_call``: shows whether a pickle ran."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_note_call, ("ran",))


#: A split point inside the pickle's FRAME body, so the C unpickler is in the
#: middle of one read when the reader meets the frame that follows the split.
MID_READ = 20

#: A pickle that takes one out-of-band buffer (NEXT_BUFFER, READONLY_BUFFER),
#: late enough in its FRAME that the buffer can sit at MID_READ.
OOB_DATA = bytes(range(250)) * 8  # 2000 bytes
OOB_PICKLE = pickle.dumps(
    (LIST, pickle.PickleBuffer(OOB_DATA)), protocol=5, buffer_callback=lambda b: False
)


def is_oob_obj(obj: Any) -> bool:
    return obj[0] == LIST and bytes(obj[1]) == OOB_DATA


#: A pickle that takes two out-of-band buffers of EQUAL size, in this order.
OOB_OTHER = bytes(reversed(OOB_DATA))
TWO_OOB_PICKLE = pickle.dumps(
    [pickle.PickleBuffer(OOB_DATA), pickle.PickleBuffer(OOB_OTHER)],
    protocol=5,
    buffer_callback=lambda b: False,
)


def two_buffer_stream(first: bytes, second: bytes) -> bytes:
    """A record of TWO_OOB_PICKLE whose BUFFER frames are ``first``, ``second``."""
    return stream(first, second, pickle_frame(TWO_OOB_PICKLE),
                  record_end(len(TWO_OOB_PICKLE), 2), END)


def is_two_oob_obj(obj: Any) -> bool:
    return [bytes(b) for b in obj] == [OOB_DATA, OOB_OTHER]


class TestTheSampleStreams:
    """The fixtures really have the shapes the sweeps below rely on."""

    def test_one_record_stream_has_buffers_pads_and_several_pickle_frames(self) -> None:
        kinds = [f.header.kind for f in walk(ONE)]
        assert kinds.count(Kind.BUFFER) == 2
        assert kinds.count(Kind.PAD) >= 1
        assert kinds.count(Kind.PICKLE) >= 2
        assert kinds[-3:] == [Kind.RECORD_END, Kind.INDEX, Kind.END]
        assert 4096 <= len(ONE) <= 16384
        assert same(sp.loads(ONE), ONE_OBJ)

    def test_multi_record_stream_loads_record_by_record(self) -> None:
        got, error = iterate(io.BytesIO(MULTI))
        assert error is None
        assert same(got, MULTI_RECORDS)
        assert len(record_ends(MULTI)) == len(MULTI_RECORDS)
        assert len(frames_of(MULTI, Kind.BUFFER)) == 2
        assert len(frames_of(MULTI, Kind.PICKLE)) > len(MULTI_RECORDS)

    def test_the_index_is_where_the_frames_say(self) -> None:
        for data in (ONE, MULTI):
            index = sp.read_index(io.BytesIO(data))
            assert index is not None
            starts = [fmt.STREAM_HEADER.size, *record_ends(data)[:-1]]
            assert [r.offset for r in index.records] == starts
            assert list(index.buffers) == [f.offset for f in frames_of(data, Kind.BUFFER)]
            (end,) = frames_of(data, Kind.END)
            assert end.header.raw_size == index_payload(data).start - HEADER_SIZE

    def test_hand_crafted_streams_load(self) -> None:
        assert sp.loads(stream(record(LIST_PICKLE), END)) == LIST
        assert sp.loads(stream(record(LIST_PICKLE, split=MID_READ), END)) == LIST
        oob = stream(buffer_frame(OOB_DATA), pickle_frame(OOB_PICKLE),
                     record_end(len(OOB_PICKLE), 1), END)
        assert is_oob_obj(sp.loads(oob))
        mid_pad = stream(pickle_frame(OOB_PICKLE[:MID_READ]), pad_frame(bytes(40)),
                         buffer_frame(OOB_DATA), pickle_frame(OOB_PICKLE[MID_READ:]),
                         record_end(len(OOB_PICKLE), 1), END)
        assert is_oob_obj(sp.loads(mid_pad))
        # A PAD may be empty; readers do not insist on aligned buffers.
        empty_pad = stream(pad_frame(b""), buffer_frame(OOB_DATA, checked=False),
                           pickle_frame(OOB_PICKLE), record_end(len(OOB_PICKLE), 1), END)
        assert is_oob_obj(sp.loads(empty_pad))
        two = two_buffer_stream(buffer_frame(OOB_DATA, ordinal=0),
                                buffer_frame(OOB_OTHER, ordinal=1, checked=False))
        assert is_two_oob_obj(sp.loads(two))


class TestMultiRecordStreamsRoundTrip:
    """What the sweeps over MULTI assume: a later record loads as written.

    Pinned because it once failed: clearing a reused C unpickler's memo does
    not reset its MEMOIZE counter, so a later record memoized its objects at
    the wrong indexes and its BINGET opcodes found nothing, or another object
    of the same record. Each record now gets a fresh unpickler."""

    def test_later_records_of_the_sample_keep_their_shared_objects(self) -> None:
        got, error = iterate(io.BytesIO(MULTI))
        assert error is None, describe(error)
        assert got[3]["ints"] is got[3]["same"] and got[3]["tags"] is got[3]["again"]
        assert got[4][1] is got[4][3] and got[4][0] is got[4][2]

    def test_a_later_record_holding_one_object_twice_loads_intact(self) -> None:
        shared = "shared"
        got, error = iterate(io.BytesIO(_write_records(["first", [shared, shared]])))
        assert error is None, describe(error)
        assert got == ["first", ["shared", "shared"]]

    def test_a_later_record_holding_two_arrays_loads_intact(self) -> None:
        later = [np.full(130, 7, dtype=np.int64), np.zeros(3)]
        got, error = iterate(io.BytesIO(_write_records(["first", later])))
        assert error is None, describe(error)
        assert same(got, ["first", later])


# ---------------------------------------------------------------------------
# 1. Truncation


class TestEmptyInput:
    """A source of zero bytes is end of input, not a damaged stream."""

    @pytest.mark.parametrize("name", ["loads", "load_bytesio", "load_nonseekable",
                                      "load_path", "load_mmap"])
    def test_empty_source_raises_eof_error(self, name: str, tmp_path: Path) -> None:
        with pytest.raises(EOFError) as info:
            ONE_RECORD_READERS[name](b"", tmp_path / "empty.spk")
        assert not isinstance(info.value, sp.StreamError)

    @pytest.mark.parametrize("mmap_mode", [None, "r"])
    def test_unpickler_load_of_empty_file_raises_eof_error(
        self, mmap_mode: str | None, tmp_path: Path
    ) -> None:
        path = tmp_path / "empty.spk"
        path.write_bytes(b"")
        with sp.Unpickler(path, mmap_mode=mmap_mode) as unpickler:
            with pytest.raises(EOFError):
                unpickler.load()

    def test_unpickler_load_of_empty_bytesio_raises_eof_error(self) -> None:
        with pytest.raises(EOFError):
            sp.Unpickler(io.BytesIO(b"")).load()


class TestTruncatedOneRecordStream:
    """Cutting a one-record stream anywhere gives TruncatedStreamError naming
    the offset: in the header, a frame header, a payload, a buffer, its check
    table, the index or the END frame, and whatever the source."""

    @pytest.mark.parametrize("name", list(ONE_RECORD_READERS))
    def test_every_cut_raises_truncated_stream_error_naming_the_offset(
        self, name: str, tmp_path: Path
    ) -> None:
        path = tmp_path / "cut.spk"
        in_file = name in FILE_READERS

        def read_prefix(prefix: bytes) -> Any:
            if in_file:
                return FILE_READERS[name](path)
            return ONE_RECORD_READERS[name](prefix, path)

        problems = []
        for cut, prefix in truncations(ONE, path, in_file):
            try:
                read_prefix(prefix)
                error: Exception | None = None
            except Exception as exc:
                error = exc
            if type(error) is not sp.TruncatedStreamError or "offset" not in str(error):
                problems.append((region(ONE, cut), f"cut {cut}: {describe(error)}"))
        assert not problems, summarize(problems, len(ONE) - 1, "cuts")


class TestTruncatedMultiRecordStream:
    """Unpickler iteration yields every record that ends before the cut, then
    raises TruncatedStreamError naming the offset. A cut in the INDEX or END
    frame leaves every record readable, and still raises."""

    @pytest.mark.parametrize("source", [*BYTES_ITERATORS, *FILE_ITERATORS])
    def test_records_before_the_cut_load_then_truncated_stream_error(
        self, source: str, tmp_path: Path
    ) -> None:
        path = tmp_path / "cut.spk"
        in_file = source in FILE_ITERATORS

        def run(prefix: bytes) -> Outcomes:
            if in_file:
                return FILE_ITERATORS[source](path)
            return BYTES_ITERATORS[source](prefix)

        ends = record_ends(MULTI)
        problems = []
        for cut, prefix in truncations(MULTI, path, in_file):
            got, error = run(prefix)
            complete = sum(end <= cut for end in ends)
            if not same(got, MULTI_RECORDS[:complete]):
                problems.append((region(MULTI, cut),
                                 f"cut {cut}: {len(got)} records, want {complete}"))
            elif type(error) is not sp.TruncatedStreamError or "offset" not in str(error):
                problems.append((region(MULTI, cut), f"cut {cut}: {describe(error)}"))
            del got
        assert not problems, summarize(problems, len(MULTI) - 1, "cuts")

    def test_a_cut_between_records_names_how_many_records_were_read(self) -> None:
        cut = record_ends(MULTI)[1]
        got, error = iterate(io.BytesIO(MULTI[:cut]))
        assert same(got, MULTI_RECORDS[:2])
        assert type(error) is sp.TruncatedStreamError
        assert f"offset {cut}" in str(error) and "2 records" in str(error)

    def test_after_a_truncation_error_further_loads_refuse(self) -> None:
        cut = record_ends(MULTI)[0] + HEADER_SIZE // 2  # inside a frame header
        unpickler = sp.Unpickler(io.BytesIO(MULTI[:cut]))
        assert same(unpickler.load(), MULTI_RECORDS[0])
        with pytest.raises(sp.TruncatedStreamError):
            unpickler.load()
        with pytest.raises(sp.StreamError, match="earlier error"):
            unpickler.load()


# ---------------------------------------------------------------------------
# 2. Bit flips


@dataclass
class Flip:
    offset: int
    bit: int
    loaded_original: bool  # loaded, and the object equals ONE_OBJ
    error: type[Exception] | None
    message: str = ""

    def describe(self) -> str:
        if self.error is None:
            return "loaded " + ("the original" if self.loaded_original else "ANOTHER")
        return f"{self.error.__name__}: {self.message}"


def flip(data: bytes, offset: int, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 1 << bit
    return bytes(damaged)


@pytest.fixture(scope="module")
def every_bit_flip() -> list[Flip]:
    """sp.loads of ONE with each of its bits flipped in turn."""
    flips = []
    for offset in range(len(ONE)):
        for bit in range(8):
            try:
                obj = sp.loads(flip(ONE, offset, bit))
            except Exception as exc:
                flips.append(Flip(offset, bit, False, type(exc), str(exc)))
            else:
                flips.append(Flip(offset, bit, same(obj, ONE_OBJ), None))
    return flips


class TestBitFlips:
    """A flipped bit anywhere is caught by a check and raises CorruptStreamError;
    only a flip in the INDEX payload, which sequential readers skip, loads, and
    then loads the original object."""

    def test_every_flip_outside_the_index_payload_raises_corrupt_stream_error(
        self, every_bit_flip: list[Flip]
    ) -> None:
        skipped = index_payload(ONE)
        problems = [
            (region(ONE, f.offset), f"byte {f.offset} bit {f.bit}: {f.describe()}")
            for f in every_bit_flip
            if f.offset not in skipped and f.error is not sp.CorruptStreamError
        ]
        assert not problems, summarize(problems, len(every_bit_flip), "bit flips")

    def test_every_flip_in_the_index_payload_loads_the_original_object(
        self, every_bit_flip: list[Flip]
    ) -> None:
        skipped = index_payload(ONE)
        flips = [f for f in every_bit_flip if f.offset in skipped]
        assert len(flips) == 8 * len(skipped)
        for f in flips:
            assert f.loaded_original, f"byte {f.offset} bit {f.bit}: {f.describe()}"

    def test_read_index_reports_every_flip_in_the_index_payload(self) -> None:
        for offset in index_payload(ONE):
            for bit in range(8):
                with pytest.raises(sp.CorruptStreamError, match="INDEX"):
                    sp.read_index(io.BytesIO(flip(ONE, offset, bit)))

    def test_every_corrupt_stream_error_from_a_flip_names_the_offset(
        self, every_bit_flip: list[Flip]
    ) -> None:
        problems = [
            (region(ONE, f.offset), f"byte {f.offset} bit {f.bit}: {f.describe()}")
            for f in every_bit_flip
            if f.error is sp.CorruptStreamError and "offset" not in f.message
        ]
        assert not problems, summarize(problems, len(every_bit_flip), "bit flips")

    @pytest.mark.parametrize("mmap_mode", [None, "r"])
    def test_flips_in_a_file_raise_corrupt_stream_error(
        self, mmap_mode: str | None, tmp_path: Path
    ) -> None:
        """One bit per byte, in place in a file. A memory map hands out views
        of buffer data without reading them ("not verified, so its pages are
        not touched"), so under mmap flips in buffer data and check tables are
        not detected: buffer data is left out, and a flip in a check table
        must still load the original object."""
        path = tmp_path / "flip.spk"
        path.write_bytes(ONE)
        loads_anyway = set(index_payload(ONE))
        unverified: set[int] = set()
        if mmap_mode:
            for f in frames_of(ONE, Kind.BUFFER):
                unverified.update(f.buffer_data)
                loads_anyway.update(range(f.buffer_data.stop, f.end))
        problems = []
        fd = os.open(path, os.O_RDWR)
        try:
            for offset in range(len(ONE)):
                if offset in unverified:
                    continue
                damaged = flip(ONE, offset, offset % 8)
                os.pwrite(fd, damaged[offset : offset + 1], offset)
                try:
                    value, error = sp.load(path, mmap_mode=mmap_mode), None
                except Exception as exc:
                    value, error = None, exc
                os.pwrite(fd, ONE[offset : offset + 1], offset)
                if offset in loads_anyway:
                    ok = error is None and same(value, ONE_OBJ)
                else:
                    ok = type(error) is sp.CorruptStreamError
                if not ok:
                    where = region(ONE, offset)
                    problems.append((where, f"byte {offset}: {describe(error)}"))
                del value
        finally:
            os.close(fd)
        assert not problems, summarize(problems, len(ONE), "bit flips")

    def test_unpickler_yields_the_records_before_a_flip_then_raises(self) -> None:
        """One bit per byte of the multi-record stream."""
        ends = record_ends(MULTI)
        skipped = index_payload(MULTI)
        problems = []
        for offset in range(len(MULTI)):
            got, error = iterate(io.BytesIO(flip(MULTI, offset, offset % 8)))
            if offset < fmt.STREAM_HEADER.size:
                intact = 0
            else:
                intact = sum(end <= offset for end in ends)
            want_error = offset not in skipped
            where = region(MULTI, offset)
            if not same(got, MULTI_RECORDS[:intact]):
                problems.append((where, f"byte {offset}: {len(got)} records, not {intact}"))
            elif want_error and type(error) is not sp.CorruptStreamError:
                problems.append((where, f"byte {offset}: {describe(error)}"))
            elif not want_error and error is not None:
                problems.append((where, f"byte {offset}: {describe(error)}"))
        assert not problems, summarize(problems, len(MULTI), "bit flips")


# ---------------------------------------------------------------------------
# 3. Garbage


def garbage_cases() -> list[tuple[str, bytes]]:
    rng = random.Random(1234)
    cases = []
    for n in (1, 3, 8, 15, 16, 17, 31, 32, 33, 100, 1000, 5000):
        for i in range(3):
            data = bytes(rng.randrange(256) for _ in range(n))
            if fmt.MAGIC.startswith(data[:8]):  # 1 in 256: not garbage enough
                data = b"\x00" + data[1:]
            cases.append((f"random-{n}-{i}", data))
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        cases.append((f"pickle-protocol-{protocol}", pickle.dumps(ONE_OBJ, protocol)))
        cases.append((f"small-pickle-protocol-{protocol}", pickle.dumps(1, protocol)))
    npy = io.BytesIO()
    np.save(npy, np.arange(10))
    cases += [
        ("npy", npy.getvalue()),
        ("png-header", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(17)),
        ("text", b"hello, world\n" * 10),
        ("newline-translated", ONE.replace(b"\r\n", b"\n")),
        ("zeros", bytes(64)),
    ]
    return cases


class TestBitFlipsInALargeBuffer:
    """A buffer of many check chunks, whose checks run in the thread pool while
    later chunks are read: a flip in any chunk names that chunk, on every
    source and with checks inline (threads=0) too."""

    ARRAY = np.arange(16 * FRAME_SIZE // 8, dtype=np.int64)  # 16 check chunks

    @pytest.mark.parametrize("threads", [None, 0])
    @pytest.mark.parametrize("source", ["bytes", "nonseekable"])
    def test_a_flip_in_any_chunk_raises_corrupt_stream_error_naming_it(
        self, threads: int | None, source: str
    ) -> None:
        data = sp.dumps({"a": self.ARRAY}, frame_size=FRAME_SIZE)
        start = data.index(self.ARRAY.tobytes())
        for chunk in range(16):
            damaged = bytearray(data)
            damaged[start + chunk * FRAME_SIZE + 100] ^= 0x08
            file: Any = io.BytesIO(damaged) if source == "bytes" else NonSeekable(damaged)
            message = f"check mismatch in chunk {chunk} "
            with pytest.raises(sp.CorruptStreamError, match=message):
                sp.load(file, threads=threads)
        got = sp.load(io.BytesIO(data), threads=threads)
        np.testing.assert_array_equal(got["a"], self.ARRAY)


class TestGarbage:
    """Bytes that are not a streampickle stream raise CorruptStreamError."""

    @pytest.mark.parametrize("data", [d for _, d in garbage_cases()],
                             ids=[n for n, _ in garbage_cases()])
    def test_garbage_raises_corrupt_stream_error(
        self, data: bytes, read: Callable[[bytes], Any]
    ) -> None:
        with pytest.raises(sp.CorruptStreamError, match="not a streampickle stream"):
            read(data)

    @pytest.mark.parametrize("n", [32, 33, 100, 5000])
    def test_valid_stream_header_then_garbage_raises_corrupt_stream_error(
        self, n: int, read: Callable[[bytes], Any]
    ) -> None:
        rng = random.Random(n)
        data = STREAM_HEADER + bytes(rng.randrange(256) for _ in range(n))
        with pytest.raises(sp.CorruptStreamError, match=HEADER_CHECK_AT_16):
            read(data)

    @pytest.mark.parametrize("n", [1, 16, 31])
    def test_valid_stream_header_then_a_short_tail_raises_truncated_stream_error(
        self, n: int, read: Callable[[bytes], Any]
    ) -> None:
        """Fewer bytes than a frame header: the input ended inside one."""
        with pytest.raises(sp.TruncatedStreamError, match="offset"):
            read(STREAM_HEADER + b"\xa5" * n)

    @pytest.mark.parametrize("n", range(1, fmt.STREAM_HEADER.size + 1))
    def test_prefix_of_a_valid_stream_header_raises_truncated_stream_error(
        self, n: int, read: Callable[[bytes], Any]
    ) -> None:
        with pytest.raises(sp.TruncatedStreamError, match="offset"):
            read(STREAM_HEADER[:n])

    def test_a_stream_of_pickle_frames_holding_a_plain_pickle_is_still_checked(
        self,
    ) -> None:
        """A plain pickle is only accepted inside frames and a RECORD_END."""
        with pytest.raises(sp.CorruptStreamError):
            sp.loads(STREAM_HEADER + LIST_PICKLE)


# ---------------------------------------------------------------------------
# 4. Hostile lengths


SEEKABLE_SOURCES: dict[str, Callable[[bytes, Path], Any]] = {
    "loads": load_loads,
    "load_bytesio": load_bytesio,
    "load_path": load_path,
    "load_mmap": load_mmap,
}
ALL_SOURCES = {**SEEKABLE_SOURCES, "load_nonseekable": load_nonseekable}

TAIL = bytes(100)  # a little data after the hostile header


class TestHostileLengths:
    """Lengths beyond the format's limits are refused from the header alone,
    on any source: quickly and before anything is allocated."""

    CASES = {
        "pickle-stored-2**60": raw_header(Kind.PICKLE, stored=2**60, raw=2**60),
        "pickle-over-max-frame-size": raw_header(
            Kind.PICKLE, stored=fmt.MAX_FRAME_SIZE + 1, raw=fmt.MAX_FRAME_SIZE + 1
        ),
        "pickle-stored-differs-from-raw": raw_header(Kind.PICKLE, stored=10, raw=2**40),
        "buffer-stored-2**60": raw_header(
            Kind.BUFFER, stored=2**60, raw=2**60, param=FRAME_SIZE, flags=Flag.CHECKED
        ),
        "buffer-over-max-buffer-size": raw_header(
            Kind.BUFFER, stored=fmt.MAX_BUFFER_SIZE + 1, raw=fmt.MAX_BUFFER_SIZE + 1,
            param=FRAME_SIZE,
        ),
        "buffer-raw-2**47-stored-small": raw_header(
            Kind.BUFFER, stored=100, raw=2**47, param=FRAME_SIZE
        ),
        "buffer-param-0": raw_header(Kind.BUFFER, stored=100, raw=100, param=0),
        "buffer-param-below-min": raw_header(
            Kind.BUFFER, stored=100, raw=100, param=fmt.MIN_FRAME_SIZE - 1
        ),
        "buffer-param-over-max": raw_header(
            Kind.BUFFER, stored=100, raw=100, param=fmt.MAX_FRAME_SIZE + 1
        ),
        "pad-of-64": raw_header(Kind.PAD, stored=64, raw=64),
        "index-over-max-index-size": raw_header(
            Kind.INDEX, stored=fmt.MAX_INDEX_SIZE + 1, raw=fmt.MAX_INDEX_SIZE + 1,
            flags=Flag.CHECKED,
        ),
        "record-end-with-payload": raw_header(Kind.RECORD_END, stored=2**40),
        "end-with-payload": raw_header(Kind.END, stored=2**40),
    }

    @pytest.mark.parametrize("source", list(ALL_SOURCES))
    @pytest.mark.parametrize("case", list(CASES))
    def test_length_beyond_the_format_limits_raises_corrupt_stream_error(
        self, case: str, source: str, tmp_path: Path
    ) -> None:
        data = stream(self.CASES[case], TAIL)
        outcome = measured(lambda: ALL_SOURCES[source](data, tmp_path / "s.spk"))
        assert_refused_cheaply(outcome, sp.CorruptStreamError)
        assert "invalid sizes" in str(outcome.error)

    @pytest.mark.parametrize("source", list(SEEKABLE_SOURCES))
    @pytest.mark.parametrize("size", [2**47, 2**40, fmt.MAX_BUFFER_SIZE])
    def test_buffer_larger_than_the_file_is_refused_before_allocating(
        self, size: int, source: str, tmp_path: Path
    ) -> None:
        """A BUFFER within the format's limits but beyond the file's end: the
        header is intact, so the input was cut (FORMAT.md, Limits)."""
        header = fmt.frame(Kind.BUFFER, stored_size=size, raw_size=size,
                           param=FRAME_SIZE, flags=Flag.CHECKED,
                           payload_check=fmt.buffer_ordinal_check(0))
        data = stream(header, TAIL)
        outcome = measured(lambda: SEEKABLE_SOURCES[source](data, tmp_path / "s.spk"))
        assert_refused_cheaply(outcome, sp.TruncatedStreamError)
        assert "BUFFER frame at offset 16" in str(outcome.error)

    @pytest.mark.parametrize("source", list(SEEKABLE_SOURCES))
    def test_pickle_frame_larger_than_the_file_is_refused_before_allocating(
        self, source: str, tmp_path: Path
    ) -> None:
        size = fmt.MAX_FRAME_SIZE
        data = stream(fmt.frame(Kind.PICKLE, stored_size=size, raw_size=size), TAIL)
        outcome = measured(lambda: SEEKABLE_SOURCES[source](data, tmp_path / "s.spk"))
        assert_refused_cheaply(outcome, sp.TruncatedStreamError)
        assert "PICKLE frame at offset 16" in str(outcome.error)

    @pytest.mark.parametrize("source", list(SEEKABLE_SOURCES))
    def test_index_larger_than_the_file_is_refused_before_allocating(
        self, source: str, tmp_path: Path
    ) -> None:
        size = fmt.MAX_INDEX_SIZE
        first = record(LIST_PICKLE)
        data = stream(first, fmt.frame(Kind.INDEX, stored_size=size, raw_size=size,
                                       flags=Flag.CHECKED), END)
        outcome = measured(lambda: SEEKABLE_SOURCES[source](data, tmp_path / "s.spk"))
        assert_refused_cheaply(outcome, sp.TruncatedStreamError)
        assert f"INDEX frame at offset {16 + len(first)}" in str(outcome.error)

    def test_read_index_refuses_an_index_larger_than_the_file(self) -> None:
        at = len(ONE) - HEADER_SIZE - HEADER_SIZE - len(index_payload(ONE))
        size = 2**30
        damaged = (
            ONE[:at]
            + fmt.frame(Kind.INDEX, stored_size=size, raw_size=size, flags=Flag.CHECKED)
            + ONE[at + HEADER_SIZE :]
        )
        # From the END frame, an INDEX that does not end where END begins is
        # not the index END points to: the file is whole, its index is damaged.
        outcome = measured(lambda: sp.read_index(io.BytesIO(damaged)))
        assert_refused_cheaply(outcome, sp.CorruptStreamError)
        assert f"offset {at}" in str(outcome.error)
        # A sequential reader skips the index, but not past the end of the file.
        outcome = measured(lambda: sp.loads(damaged))
        assert_refused_cheaply(outcome, sp.TruncatedStreamError)

    @pytest.mark.parametrize("where", ["past-the-end", "before-the-header", "not-an-index"])
    def test_read_index_refuses_an_end_frame_pointing_anywhere_else(
        self, where: str
    ) -> None:
        at = {"past-the-end": 2**40, "before-the-header": 8,
              "not-an-index": fmt.STREAM_HEADER.size}[where]
        damaged = ONE[:-HEADER_SIZE] + fmt.frame(Kind.END, raw_size=at)
        with pytest.raises(sp.CorruptStreamError):
            sp.read_index(io.BytesIO(damaged))


class TestHostileLengthsOnSourcesOfUnknownSize:
    """On a pipe or socket the reader cannot compare a length with the file
    size. A frame that claims more than arrives must still end in a StreamError,
    quickly, and the claim alone must not make the reader allocate it."""

    SOURCES: dict[str, Callable[[bytes], Any]] = {
        "nonseekable": lambda data: sp.load(NonSeekable(data)),
        "unpickler-nonseekable": lambda data: list(sp.Unpickler(NonSeekable(data))),
    }

    @staticmethod
    def _via_pipe(data: bytes) -> Any:
        with pipe_holding(data) as f:
            return sp.load(f)

    def _run(self, source: str) -> Callable[[bytes], Any]:
        return self._via_pipe if source == "pipe" else self.SOURCES[source]

    @pytest.mark.parametrize("size", [fmt.MAX_BUFFER_SIZE, 2**47, 2**40])
    @pytest.mark.parametrize("source", ["nonseekable", "unpickler-nonseekable", "pipe"])
    def test_buffer_claiming_terabytes_raises_stream_error_quickly(
        self, size: int, source: str
    ) -> None:
        """The claim may be allocated (as untouched address space) and the
        input then found cut, or refused as more than can be allocated; never
        MemoryError. 2**47 bytes and more exceed a 47-bit address space."""
        header = fmt.frame(Kind.BUFFER, stored_size=size, raw_size=size,
                           param=FRAME_SIZE, flags=Flag.CHECKED,
                           payload_check=fmt.buffer_ordinal_check(0))
        data = stream(header, TAIL)
        outcome = measured(lambda: self._run(source)(data))
        if size >= 2**47:
            assert type(outcome.error) is sp.CorruptStreamError, describe(outcome.error)
        classes = (sp.TruncatedStreamError, sp.CorruptStreamError)
        assert isinstance(outcome.error, classes), describe(outcome.error)
        if isinstance(outcome.error, sp.CorruptStreamError):
            assert "more than can be allocated" in str(outcome.error)
        assert "BUFFER frame at offset 16" in str(outcome.error)
        assert outcome.seconds < TIME_LIMIT
        assert outcome.rss_growth < MEMORY_LIMIT

    @pytest.mark.parametrize("source", ["nonseekable", "unpickler-nonseekable", "pipe"])
    def test_pickle_frame_claim_is_not_allocated_before_the_bytes_arrive(
        self, source: str
    ) -> None:
        """32 bytes of header claiming a legal 256 MiB frame."""
        size = fmt.MAX_FRAME_SIZE
        data = stream(fmt.frame(Kind.PICKLE, stored_size=size, raw_size=size), TAIL)
        outcome = measured(lambda: self._run(source)(data))
        assert_refused_cheaply(outcome, sp.TruncatedStreamError)
        assert "offset" in str(outcome.error)

    @pytest.mark.parametrize("size", [1 << 28, fmt.MAX_INDEX_SIZE])
    @pytest.mark.parametrize("source", ["nonseekable", "unpickler-nonseekable", "pipe"])
    def test_index_claim_is_not_allocated_before_the_bytes_arrive(
        self, size: int, source: str
    ) -> None:
        """Sequential readers skip the index; a claimed size (up to the legal
        4 GiB) must not become one allocation, nor be held in memory."""
        data = stream(record(LIST_PICKLE), fmt.frame(Kind.INDEX, stored_size=size,
                                                     raw_size=size, flags=Flag.CHECKED),
                      TAIL)
        outcome = measured(lambda: self._run(source)(data))
        assert_refused_cheaply(outcome, sp.TruncatedStreamError)
        assert "offset" in str(outcome.error)

    def test_a_long_index_on_a_pipe_is_skipped_not_held(self) -> None:
        """An INDEX that does arrive, 48 MiB of it, through a reader of unknown
        size: memory stays far below its size while it is skipped."""
        body = bytes(48 * MIB)
        first = record(LIST_PICKLE)
        index = fmt.frame(Kind.INDEX, stored_size=len(body), raw_size=len(body),
                          flags=Flag.CHECKED, payload_check=fmt.checksum(body))
        data = stream(first, index, body, fmt.frame(Kind.END, raw_size=16 + len(first)))
        del body
        outcome = measured(lambda: sp.load(NonSeekable(data)))
        assert outcome.error is None and outcome.value == LIST, describe(outcome.error)
        assert outcome.traced_peak < 8 * MIB, f"{outcome.traced_peak / MIB:.0f} MiB"


class TestHostileLengthsInsideThePickle:
    """The pickle bytes of a record are data too: a pickle opcode that claims
    a huge length (the protocol 4+ FRAME opcode) inside valid frames must end in
    CorruptStreamError without the reader allocating the claim. (Plain
    ``pickle.load`` of the same bytes from a BytesIO raises UnpicklingError.)"""

    @staticmethod
    def frame_opcode_stream(length: int) -> bytes:
        pickled = b"\x80\x05\x95" + struct.pack("<Q", length) + b"N."
        return stream(record(pickled), END)

    def test_stdlib_pickle_refuses_the_same_bytes_with_unpickling_error(self) -> None:
        pickled = b"\x80\x05\x95" + struct.pack("<Q", 2**62) + b"N."
        with pytest.raises(pickle.UnpicklingError):
            pickle.load(io.BytesIO(pickled))

    @pytest.mark.parametrize("length", [2**62, 2**40])
    @pytest.mark.parametrize("source", ["loads", "nonseekable"])
    def test_frame_opcode_claiming_exabytes_raises_corrupt_stream_error(
        self, length: int, source: str
    ) -> None:
        data = self.frame_opcode_stream(length)
        load = sp.loads if source == "loads" else lambda d: sp.load(NonSeekable(d))
        outcome = measured(lambda: load(data))
        assert_refused_cheaply(outcome, sp.CorruptStreamError)
        assert "record 0 is not a valid pickle" in str(outcome.error)

    @pytest.mark.parametrize("source", ["loads", "nonseekable"])
    def test_frame_opcode_claiming_256_mib_is_not_allocated(self, source: str) -> None:
        data = self.frame_opcode_stream(1 << 28)
        load = sp.loads if source == "loads" else lambda d: sp.load(NonSeekable(d))
        outcome = measured(lambda: load(data))
        assert_refused_cheaply(outcome, sp.CorruptStreamError)
        assert "record 0 is not a valid pickle" in str(outcome.error)

    # Three things CPython's unpickler trusts, abused by a record of a few
    # bytes; streampickle's scan of the pickle bytes refuses each before the
    # unpickler runs it, whether the record is one frame or many (then the
    # scan sees it in pieces cut inside opcodes). Each runs in a child process
    # with 256 MiB more address space than it has: a crash or a large
    # allocation shows.
    HOSTILE = {
        # LONG_BINPUT 2**26: the unpickler would size its memo to 2**27 slots
        # (1 GiB, zeroed).
        "memo-slot-2**26": b"\x80\x04Nr" + struct.pack("<I", 1 << 26) + b".",
        # Hashing the key recurses in C without a guard: the stack overflows
        # (from ~130,000 levels with an 8 MiB stack).
        "dict-key-of-tuples-500k-deep": b"\x80\x04})" + b"\x85" * 500_000 + b"Ns.",
        "frozenset-of-tuples-500k-deep": b"\x80\x04(N" + b"\x85" * 500_000 + b"\x91.",
        # BINBYTES8: allocated at its claimed length before it is read.
        "bytes-claiming-1-tib": b"\x80\x05\x8e" + struct.pack("<Q", 1 << 40) + b"xx.",
        # A BININT cut by the end of a pickle FRAME longer than the record's
        # frames: CPython's C unpickler drops the cut bytes and reads on
        # after the FRAME, so what it runs (a set of tuples 300,000 deep)
        # is not what a scan that ignores FRAMEs sees (a STRING's text).
        "opcodes-hidden-past-a-frame": (
            b"\x80\x04\x95" + struct.pack("<Q", 5000) + b"N0" * 2499 + b"J\xaa" + b"KKKS"
            + b"\x8f()" + b"\x85" * 300_000 + b"\x90" + b"0" + b"I0\n0."
        ),
    }

    @staticmethod
    def laundered_tuples(levels: int) -> bytes:
        """X = tuple(*T) with T = (L,) built while L was empty, and L given the
        X before only then: each level a tuple deeper than heights say
        (safe mode allows builtins.tuple)."""
        def get(slot: int) -> bytes:
            return b"j" + struct.pack("<I", slot)

        setup = b"".join(get(0) + b"]\x94\x85" + get(i + 1) for i in range(levels))
        return (
            b"\x80\x04cbuiltins\ntuple\n\x940" + setup + b")" + b"a0R" * levels
            + b"\x940\x8f(" + get(levels + 1) + b"\x90."
        )

    @staticmethod
    def load_in_a_child(
        data: bytes, max_size: int | None = None, safe: bool = True, use: str = "obj"
    ) -> str:
        """What ``sp.load`` of ``data`` from a pipe-like file ends in, in a
        child allowed 256 MiB of address space more than it has: an
        exception's name and message, the repr of ``use`` (an expression of
        the loaded ``obj``), or the signal that killed it."""
        code = (
            "import io, re, resource, sys\n"
            "import streampickle as sp\n"
            "data = sys.stdin.buffer.read()\n"
            "status = open('/proc/self/status').read()\n"
            "vm = int(re.search(r'VmSize:\\s+(\\d+)', status)[1])\n"
            "limit = vm * 1024 + (256 << 20)\n"
            "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
            "pipe = io.BufferedReader(io.BytesIO(data))\n"
            "pipe.seekable = lambda: False\n"
            "try:\n"
            f"    obj = sp.load(pipe, safe={safe}, max_size={max_size})\n"
            f"    print(repr({use}))\n"
            "except BaseException as exc:\n"
            "    print(f'{type(exc).__name__}: {exc}')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], input=data, capture_output=True, timeout=60
        )
        if done.returncode < 0:
            return f"killed by signal {-done.returncode}"
        return done.stdout.decode().strip() or done.stderr.decode()[-200:]

    @staticmethod
    def numpy_chain(levels: int) -> bytes:
        """numpy object arrays, each set as item 0 of the next (SETITEM):
        freeing them recurses ~2 KB of C stack a level."""
        dtype_o = b"cnumpy\ndtype\nX\x01\x00\x00\x00O\x89\x88\x87R"
        return (
            b"\x80\x04cnumpy\nndarray\nq\x000K\x01\x85" + dtype_o + b"\x86q\x010Nq\x020"
            + b"h\x00h\x01RK\x00h\x02sq\x020" * levels + b"Nq\x02."
        )

    @staticmethod
    def objects_from_bytes() -> bytes:
        """numpy _frombuffer of raw bytes for a dtype whose field holds Python
        objects (its flags, which the pickle sets, say it does not): the
        array would hold the pointers the bytes spell."""
        def s(text: bytes) -> bytes:
            return b"X" + len(text).to_bytes(4, "little") + text

        dtype_o = b"cnumpy\ndtype\n" + s(b"O") + b"\x89\x88\x87R"
        dtype = (
            b"cnumpy\ndtype\n" + s(b"V8") + b"\x89\x88\x87R" + b"(K\x03" + s(b"|") + b"N"
            + s(b"a") + b"\x85}" + s(b"a") + dtype_o + b"K\x00\x86sK\x08K\x01K\x00tb"
        )
        return (
            b"\x80\x04cbuiltins\nstr\ncnumpy._core.numeric\n_frombuffer\n(C\x10"
            + b"A" * 16 + dtype + b"K\x02\x85" + s(b"C") + b"tR\x85R."
        )

    @staticmethod
    def dtype_of_itself() -> bytes:
        """A numpy dtype whose BUILD state gives it a field that is itself:
        numpy takes it, and hashing it (into a set) never ends."""
        def s(text: bytes) -> bytes:
            return b"X" + len(text).to_bytes(4, "little") + text

        return (
            b"\x80\x04\x8f(cnumpy\ndtype\n" + s(b"V8") + b"\x89\x88\x87Rq\x00(K\x03"
            + s(b"|") + b"N" + s(b"a") + b"\x85}" + s(b"a")
            + b"h\x00K\x00\x86sK\x08K\x01K\x00tb\x90."
        )

    @pytest.mark.parametrize("frames", ["one-frame", "frames-of-4-kib"])
    @pytest.mark.parametrize(
        "case", [*HOSTILE, "tuples-laundered-200k-deep", "numpy-object-arrays-5000-deep",
                 "numpy-objects-from-raw-bytes", "numpy-dtype-of-itself"]
    )
    def test_a_hostile_pickle_is_refused_before_the_unpickler_runs_it(
        self, case: str, frames: str
    ) -> None:
        built = {
            "tuples-laundered-200k-deep": lambda: self.laundered_tuples(200_000),
            "numpy-object-arrays-5000-deep": lambda: self.numpy_chain(5000),
            "numpy-objects-from-raw-bytes": self.objects_from_bytes,
            "numpy-dtype-of-itself": self.dtype_of_itself,
        }
        pickled = built[case]() if case in built else self.HOSTILE[case]
        framed = record(pickled) if frames == "one-frame" else in_frames(pickled)
        outcome = self.load_in_a_child(stream(framed, END))
        assert outcome.startswith(
            ("CorruptStreamError: record 0", "ForbiddenGlobalError: safe mode")
        ), outcome

    @pytest.mark.parametrize("safe", [True, False])
    @pytest.mark.parametrize("max_size", [None, 1 << 20])
    def test_bytes_claimed_past_what_has_arrived_are_refused_not_allocated(
        self, max_size: int | None, safe: bool
    ) -> None:
        """A record of several frames whose first claims 1 TiB of bytes: with
        max_size, refused as too large from the claim; without, the C
        unpickler's failed allocation is reported as the claim it was, never
        MemoryError, and safe mode's unpickler (Python's) reads the claim as
        it comes, until the input ends."""
        pickled = b"\x80\x05\x8e" + struct.pack("<Q", 1 << 40) + b"x" * 5000
        data = stream(pickle_frame(pickled[:4096]), pickle_frame(pickled[4096:]))
        outcome = self.load_in_a_child(data, max_size, safe)
        owed = (1 << 40) - (4096 - 11)  # what the first frame does not hold
        expected = (
            "StreamError: record 0 exceeds max_size=1048576 bytes: its pickle "
            f"claims {owed} bytes more" if max_size is not None
            else "TruncatedStreamError: input ended at offset 5091 inside record 0"
            if safe else f"CorruptStreamError: record 0 claims {owed} more"
        )  # fmt: skip
        assert outcome.startswith(expected), outcome


class Reduces:
    """Pickles as ``func(*args)`` then, if given, ``state`` (BUILD)."""

    def __init__(self, func: Any, args: tuple[Any, ...], state: Any = None) -> None:
        self.reduced = (func, args) if state is None else (func, args, state)

    def __reduce__(self) -> Any:
        return self.reduced


def as_newobj(reduces: Reduces) -> bytes:
    """The pickle of ``reduces`` with its call made by NEWOBJ
    (``cls.__new__(cls, *args)``), which a pickler writes only for the
    object's own class."""
    pickled = pickle.dumps(reduces, 5)
    at = pickled.rindex(pickle.REDUCE)
    return pickled[:at] + pickle.NEWOBJ + pickled[at + 1 :]


def _forged_void() -> np.dtype[Any]:
    d = np.dtype("V8")
    d.__setstate__((3, "|", None, None, None, 8, 1, 63))  # flags: "holds objects"
    return d


_RECONSTRUCT = np._core.multiarray._reconstruct


def array(shape: tuple[int, ...], dtype: Any, items: Any) -> Reduces:
    """An array as numpy pickles one in-band, with the state given."""
    return Reduces(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, items))


def _op_global(module: str, name: str) -> bytes:
    return b"c%s\n%s\n" % (module.encode(), name.encode())


def _op_str(text: str) -> bytes:
    return b"X" + struct.pack("<I", len(text.encode())) + text.encode()


def _op_bytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def _op_int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n) if 0 <= n < 2**31 else b"L%dL\n" % n


def _op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _op_call(func: bytes, *args: bytes) -> bytes:
    return func + _op_tuple(*args) + b"R"


def _op_dtype(spec: Any, state: bytes = b"") -> bytes:
    """numpy.dtype(spec) as numpy pickles it: from its type string ("<f8" is
    "f8"), given ``state``, or numpy's own where the type string's differs."""
    _, (typestr, _, _), own = np.dtype(spec).__reduce__()
    made = _op_call(_op_global("numpy", "dtype"), _op_str(typestr), b"\x89", b"\x88")
    if not state and own != np.dtype(typestr).__reduce__()[2]:
        state = _op_plain(own)
    return made + (state + b"b" if state else b"")


def _op_plain(obj: object) -> bytes:
    """A dtype state's items: None, ints, strings, bytes, tuples, dicts and
    dtypes (each made as numpy pickles it)."""
    if isinstance(obj, np.dtype):
        return _op_dtype(obj)
    if isinstance(obj, dict):
        return b"}(" + b"".join(_op_plain(k) + _op_plain(v) for k, v in obj.items()) + b"u"
    if obj is None:
        return b"N"
    if isinstance(obj, int):
        return _op_int(obj)
    if isinstance(obj, str):
        return _op_str(obj)
    if isinstance(obj, bytes):
        return _op_bytes(obj)
    assert isinstance(obj, tuple), obj
    return _op_tuple(*map(_op_plain, obj))


_OP_RECONSTRUCT = _op_global("numpy._core.multiarray", "_reconstruct")
_FROMBUFFER_OP = _op_global("numpy._core.numeric", "_frombuffer")


#: An empty array as numpy's pickle makes one, before its state (BUILD).
_OP_EMPTY_ARRAY = _op_call(
    _OP_RECONSTRUCT, _op_global("numpy", "ndarray"), _op_tuple(_op_int(0)), _op_str("b")
)


def _op_array(shape: tuple[int, ...], dtype: bytes, data: bytes) -> bytes:
    state = _op_tuple(_op_int(1), _op_tuple(*map(_op_int, shape)), dtype, b"\x89", data)
    return _OP_EMPTY_ARRAY + state + b"b"


#: Second review's cases, as raw pickles (protocol 4 opcodes, STOP added).
_RAW_SAFE_CASES = {
    "structured-dtype-field-past-its-item": _op_call(
        _op_global("builtins", "str"),
        _op_array(
            (1,),
            _op_dtype("V8", _op_tuple(
                _op_int(3), _op_str("|"), b"N", _op_tuple(_op_str("a")),
                b"}" + _op_str("a") + _op_tuple(_op_dtype("<f8"), _op_int(2**40)) + b"s",
                _op_int(8), _op_int(1), _op_int(16),
            )),  # fmt: skip
            _op_bytes(b"\0" * 8),
        ),
    ),
    "zero-size-dtype-reshaped-by-scalar": b"(" + _op_dtype("V0") + b"q\x00"
    + _op_array((2**30,), b"h\x00", _op_bytes(b"")) + b"q\x01"
    + _op_call(_op_global("numpy._core.multiarray", "scalar"), b"h\x00") + b"0"
    + _op_call(_op_global("builtins", "bytes"), b"h\x01") + b"t",
    "object-dtype-byte-order-forged": _op_array(
        (2,),
        _op_dtype("O8", _op_tuple(_op_int(3), _op_str(">"), b"N", b"N", b"N",
                                  _op_int(-1), _op_int(-1), _op_int(63))),
        b"](" + _op_int(12345) + _op_str("x") + b"e",
    ),  # fmt: skip
    "list-of-an-empty-array-of-many-rows": _op_call(
        _op_global("builtins", "list"),
        _op_call(_OP_RECONSTRUCT, _op_global("numpy", "ndarray"),
                 _op_tuple(_op_int(10**6), _op_int(0)), _op_str("b")),
    ),  # fmt: skip
    "scalar-of-a-huge-dtype-alone": _op_call(
        _op_global("numpy._core.multiarray", "scalar"), _op_dtype("V2000000000")
    ),
    "bytearray-of-a-numpy-int": _op_call(
        _op_global("builtins", "bytearray"),
        _op_call(_op_global("numpy._core.multiarray", "scalar"), _op_dtype("<i8"),
                 _op_bytes(struct.pack("<q", 2**28))),
    ),  # fmt: skip
    # each round, str() of a list of ten references to the last result: x10
    "str-of-a-list-of-its-last-result": _op_str("A" * 100) + b"q\x00"
    + (b"0" + _op_call(_op_global("builtins", "str"), b"(" + b"h\x00" * 10 + b"l")
       + b"q\x00") * 9,
    "bytes-of-a-count-by-keyword": _op_global("builtins", "bytes")
    + b")}" + _op_str("source") + _op_int(2**28) + b"s\x92",
    "list-slice-assigned-a-range": b"]"
    + _op_call(_op_global("builtins", "slice"), _op_int(0), _op_int(0))
    + _op_call(_op_global("builtins", "range"), _op_int(2**27)) + b"s",
    "zero-size-items-of-a-huge-shape-set": _op_array(
        (2**62,), _op_dtype("V0"), _op_bytes(b"")
    ) + b")" + _op_bytes(b"") + b"s",
    # third review: an object array's pointers read as uint64 (then written)
    "frombuffer-of-an-object-array": _op_array(
        (2,), _op_dtype("|O"), b"](" + _op_str("x") + _op_int(12345) + b"e"
    ) + b"q\x000" + _op_call(_FROMBUFFER_OP, b"h\x00", _op_dtype("<u8"),
                             _op_tuple(_op_int(2)), _op_str("C")),  # fmt: skip
    "frombuffer-of-too-few-bytes": _op_call(
        _FROMBUFFER_OP, _op_bytes(b"abc"), _op_dtype("<i4"), _op_tuple(_op_int(1)),
        _op_str("C"),
    ),  # fmt: skip
    # any registered codec by name: punycode decodes in quadratic time
    "bytes-by-the-punycode-codec": _op_call(
        _op_global("builtins", "bytes"), _op_str("\U00010000" * 10), _op_str("punycode")
    ),
    # a str for a field's dtype compared equal to the dtype numpy rebuilt
    "field-dtype-given-as-a-str": _op_array((2,), _op_dtype("V12", _op_tuple(
        _op_int(3), _op_str("|"), b"N", _op_tuple(_op_str("a"), _op_str("b")),
        b"}(" + _op_str("a") + _op_tuple(_op_str("<f8"), _op_int(0)) + _op_str("b")
        + _op_tuple(_op_dtype("<i4"), _op_int(8)) + b"u",
        _op_int(12), _op_int(1), _op_int(16),
    )), _op_bytes(bytes(24))),  # fmt: skip
    "str-by-the-punycode-codec": _op_call(
        _op_global("builtins", "str"), _op_bytes(b"abc-"), _op_str("punycode")
    ),
    # T = (T, T) eighty times (DUP), hashed: 2**80 visits from 170 bytes
    "tuples-sharing-items-hashed-in-a-frozenset": b"(K\x00\x85" + b"2\x86" * 80 + b"\x91",
    "tuples-sharing-items-as-a-dict-key": b"}K\x00\x85"  # shared through the memo
    + b"".join(b"\x940h%ch%c\x86" % (i, i) for i in range(80)) + b"Ns",
    "a-large-int-hashed-as-often-as-shared": b"(\x8b" + struct.pack("<I", 100_000)
    + b"\x01" * 100_000 + b"\x94" + b"h\x00" * 30_000 + b"\x91",
    # list() of a memo's 100 KB string, 2000 times: 1.6 GB of lists
    "copies-of-a-shared-string": _op_str("a" * 100_000) + b"\x940("
    + _op_call(_op_global("builtins", "list"), b"h\x00") * 2000 + b"l",
}

def _shared_tuple(levels: int) -> bytes:
    """T = (T, T), ``levels`` times over (DUP): hashing or printing it whole
    visits 2**levels items."""
    return b")" + b"2\x86" * levels


def _frozenset_chain(levels: int, first: int) -> bytes:
    """F = frozenset({F, frozenset({F, 0})}), ``levels`` times, memo slots
    from ``first``: two built alike are equal, compared item by item."""
    get = b"j%s" % struct.pack("<I", first)
    out = b"(\x91\x94"
    for i in range(levels):
        get = b"j" + struct.pack("<I", first + i)
        out += b"(" + get + b"(" + get + b"K\x00\x91\x91\x94"
    return out


_HUGE_INT = b"\x8b" + struct.pack("<I", 20_001) + b"\xff" * 20_000 + b"\x00"
#: Fifth review: hashing, comparing or printing what a record shares,
#: through paths the budget did not count: each hung or grew quadratically.
_SHARED_AND_HASHED = {
    "a-shared-tuple-as-the-callable": (
        _shared_tuple(80) + b")R", "CorruptStreamError: record 0 is not a valid pickle"
    ),
    "a-shared-tuple-called-with-keywords": (
        _shared_tuple(80) + b")}" + _op_str("k") + b"K\x01s\x92",
        "ForbiddenGlobalError: safe mode calls nothing",
    ),
    "a-shared-tuple-as-an-array-state": (
        _OP_EMPTY_ARRAY + _shared_tuple(80) + b"b",
        "ForbiddenGlobalError: safe mode takes only numpy's array states",
    ),  # fmt: skip
    "dict-of-list-pairs-keyed-by-a-shared-tuple": (
        _op_call(_op_global("builtins", "dict"), b"](](" + _shared_tuple(80) + b"K\x00ee"),
        "ForbiddenGlobalError: safe mode calls dict of a dict or of (key, value) tuples",
    ),
    "a-dtype-field-named-by-a-shared-tuple": (
        _op_dtype("V8", b"(K\x03" + _op_str("|") + b"N(" + _shared_tuple(80)
                  + b"t}K\x08K\x01K\x00t"),
        "ForbiddenGlobalError: safe mode takes only numpy's dtype states",
    ),  # fmt: skip
    "a-range-of-a-huge-int-as-a-key-many-times": (
        _op_call(_op_global("builtins", "range"), _op_int(0), _HUGE_INT) + b"\x940}("
        + b"h\x00K\x00" * 50_000 + b"u",
        "ForbiddenGlobalError: safe mode builds or hashes",
    ),  # fmt: skip
    "equal-frozensets-built-alike-in-one-set": (
        _frozenset_chain(80, 0) + b"0" + _frozenset_chain(80, 81) + b"0\x8f("
        + b"j" + struct.pack("<I", 80) + b"j" + struct.pack("<I", 161) + b"\x90",
        "ForbiddenGlobalError: safe mode builds or hashes",
    ),  # fmt: skip
}

def _dtype_sharing_its_fields(levels: int) -> bytes:
    """A dtype of two fields of one dtype at offset 0, ``levels`` times over:
    numpy hashes and prints it as a tree of 2**levels dtypes."""
    d = np.dtype("f8")
    for _ in range(levels):
        d = np.dtype({"names": ["a", "b"], "formats": [d, d], "offsets": [0, 0],
                      "itemsize": 8})  # fmt: skip
    return pickle.dumps(d, protocol=4)[11:-1]  # its opcodes: no PROTO, FRAME, STOP


def _slice_of_a_shared_tuple(levels: int) -> bytes:
    """slice(T), T = (T, T) ``levels`` times through the memo: its repr is
    2**levels long, and so are messages that repr it whole."""
    made = b"K\x00r\x00\x00\x00\x000"
    for i in range(levels):
        get = b"j" + struct.pack("<I", i)
        made += get + get + b"\x86r" + struct.pack("<I", i + 1) + b"0"
    last = b"j" + struct.pack("<I", levels)
    return made + _op_call(_op_global("builtins", "slice"), last)


#: Sixth review: numpy's hash and repr of a dtype, and repr in messages.
_SHARED_AND_HASHED.update({
    "a-dtype-sharing-its-fields-as-a-dict-key": (
        b"}" + _dtype_sharing_its_fields(40) + b"K\x01s",
        "ForbiddenGlobalError: safe mode loads no dtype whose items unfold",
    ),
    "a-dtype-sharing-its-fields-in-a-bad-array-state": (
        _OP_EMPTY_ARRAY
        + _op_tuple(b"K\x01K\x01\x85", _dtype_sharing_its_fields(40), b"\x89C\x00") + b"b",
        "ForbiddenGlobalError: safe mode loads no dtype whose items unfold",
    ),  # fmt: skip
    "a-slice-of-a-shared-tuple-in-a-refused-state": (
        _OP_EMPTY_ARRAY + b"(" + _slice_of_a_shared_tuple(60) + b"tb",
        "ForbiddenGlobalError: safe mode takes only numpy's array states, not (<slice>,)",
    ),  # fmt: skip
    "a-slice-of-a-shared-tuple-as-a-field-dtype": (
        b"(" + _slice_of_a_shared_tuple(60) + b"\x940"  # the slice: memo slot 61
        + _op_dtype("V8", b"(K\x03" + _op_str("|") + b"N" + _op_str("a") + b"\x85}"
                    + _op_str("a") + b"h\x3dK\x00\x86sK\x08K\x01K\x10t") + b"t",
        "ForbiddenGlobalError: safe mode takes only numpy's dtype states, not (3, '|'",
    ),  # fmt: skip
})

#: Seventh review: dtypes whose items unfold, in the caller's tolist() or
#: repr(), into far more objects than their bytes (SIGSEGV in numpy's tolist
#: under the child's limit; a repr of gigabytes from 319 bytes).
_RAW_SAFE_CASES.update({
    "an-array-of-fields-sharing-a-dtype": _OP_EMPTY_ARRAY + _op_tuple(
        _op_int(1), _op_tuple(_op_int(100)), _dtype_sharing_its_fields(16), b"\x89",
        _op_bytes(bytes(800)),
    ) + b"b",
    "an-empty-subarray-of-many-rows": _op_array(
        (1,), _op_dtype("f8,(1000000000,0)f8"), _op_bytes(bytes(8))
    ),
    "many-fields-at-one-offset": pickle.dumps(
        np.dtype({"names": [f"f{i}" for i in range(900)], "formats": ["f8"] * 900,
                  "offsets": [0] * 900, "itemsize": 8}), protocol=4,
    )[11:-1],  # fmt: skip
})

#: Third review: a dtype's fields dict, kept by numpy, reached through the
#: memo and changed after its BUILD was checked. Each crashed numpy (loading,
#: or repr or field access of what loaded).
_FIELDS = b"}q\x00(" + _op_str("a") + _op_tuple(_op_dtype("<f8"), _op_int(0)) + _op_str(
    "b"
) + _op_tuple(_op_dtype("<i4"), _op_int(8)) + b"u"
_V12 = _op_dtype("V12", _op_tuple(
    _op_int(3), _op_str("|"), b"N", _op_tuple(_op_str("a"), _op_str("b")), _FIELDS,
    _op_int(12), _op_int(1), _op_int(16),
)) + b"q\x01"  # fmt: skip
_AFTER_THE_CHECK = {
    "field-set-to-its-own-dtype-then-hashed": (
        _V12 + b"0h\x00" + _op_str("b") + _op_tuple(b"h\x01", _op_int(0)) + b"s0(h\x01\x91",
        "obj",
    ),
    "field-moved-past-the-item": (
        _V12 + b"0" + _op_array((1,), b"h\x01", _op_bytes(bytes(12))) + b"q\x020h\x00"
        + _op_str("b") + _op_tuple(_op_dtype("<i4"), _op_int(1 << 40)) + b"s0h\x02",
        "obj",
    ),  # fmt: skip
    "field-made-an-object-pointer": (
        _V12 + b"0" + _op_array((1,), b"h\x01", _op_bytes(b"A" * 12)) + b"q\x020h\x00"
        + _op_str("a") + _op_tuple(_op_dtype("|O"), _op_int(0)) + b"s0h\x02",
        "obj['a'][0]",
    ),  # fmt: skip
}


def _frombuffer_op(data: bytes, dtype: bytes, rows: int) -> bytes:
    return _op_call(_FROMBUFFER_OP, data, dtype, _op_tuple(_op_int(rows)), _op_str("C"))


def _memo_get(slot: int) -> bytes:
    return b"j" + struct.pack("<I", slot)


def _adds_again(item: bytes, times: int) -> bytes:
    """A set of ``item`` (memo slot 0), then the same object added ``times``
    more times: each add compares it with the one in the set."""
    return item + b"\x94\x8f(" + _memo_get(0) + b"\x90(" + _memo_get(0) * times + b"\x90"


def _called_on(func: bytes, arg: bytes, extra: bytes, times: int) -> bytes:
    """A list of ``func(arg, *extra)`` ``times`` over, ``arg`` made once."""
    call = func + b"(" + _memo_get(0) + extra + b"tR"
    return arg + b"\x940](" + call * times + b"e"


def _wide_dtype(fields: int) -> tuple[bytes, int]:
    """A structured dtype of ``fields`` float fields, as numpy pickles it,
    and its memo slot once memoized after."""
    d = np.dtype({"names": [f"f{i}" for i in range(fields)], "formats": ["f8"] * fields})
    pickled = pickle.dumps(d, protocol=4)[11:-1]
    ops = pickletools.genops(pickled + b".")
    stores = sum(op.name in ("MEMOIZE", "BINPUT") for op, _, _ in ops)
    return pickled + b"\x94", stores


#: Eighth review: a datetime state numpy crashed on, buffers over an array a
#: second BUILD frees, arguments that are not a tuple, calls charged nothing.
_RAW_SAFE_CASES.update({
    "a-datetime-dtype-state-without-its-unit": _op_dtype("M8", _op_tuple(
        _op_int(3), _op_str("<"), b"NNN", _op_int(-1), _op_int(-1), _op_int(0)
    )),
    "a-readonly-buffer-of-an-in-band-array": _op_array(
        (4,), _op_dtype("u1"), _op_bytes(b"AAAA")
    ) + b"\x98",
    "a-second-build-of-an-array": _op_array((4,), _op_dtype("u1"), _op_bytes(b"AAAA"))
    + _op_tuple(_op_int(1), _op_tuple(_op_int(1)), _op_dtype("u1"), b"\x89",
                _op_bytes(b"B")) + b"b",
    "a-call-given-a-range-for-its-arguments": _op_global("builtins", "bool")
    + _op_call(_op_global("builtins", "range"), _op_int(10**8)) + b"R",
    "an-array-shape-of-a-huge-extent": _op_array(
        (2**64, 0), _op_dtype("u1"), _op_bytes(b"")
    ),
    "a-dtype-from-a-string-of-fields": _op_call(
        _op_global("numpy", "dtype"), _op_str("f8,f8"), b"\x89", b"\x88"
    ),
    "an-array-of-a-subarray-dtype": _frombuffer_op(
        _op_bytes(bytes(16)), _op_dtype(np.dtype(("f8", (2,)))), 1
    ),
})  # fmt: skip
_BUDGET = "ForbiddenGlobalError: safe mode builds or hashes no more than"


def _keys_of_one_hash(n: int) -> list[bytes]:
    """Pickles of ``n`` tuples of twelve of '', b'' and () and an int in
    [-2**60, 2**60) solved from CPython's tuple hash (tuple_hash.py) so
    that each hashes to one value."""
    target = 0x123456789ABCDEF
    atoms = [("", b"\x8c\x00"), (b"", b"C\x00"), ((), b")")]
    keys = []
    for combo in itertools.product(atoms, repeat=12):
        x = last_item_hash(target, [hash(obj) for obj, _ in combo], 13)
        if -(2**60) <= x < 2**60 and x != -1:
            assert hash((*(obj for obj, _ in combo), x)) == target
            atom_bytes = b"".join(pickled for _, pickled in combo)
            number = b"\x8a\x08" + x.to_bytes(8, "little", signed=True)  # LONG1
            keys.append(b"(" + atom_bytes + number + b"t")
            if len(keys) == n:
                return keys
    raise AssertionError(f"fewer than {n} keys")


def _wrapped_keys_of_one_hash(n: int) -> list[bytes]:
    """Pickles of ``n`` keys of one hash, each an int in [-2**60, 2**60)
    wrapped in its own chain of 1-tuples and 1-frozensets (31st review): the
    hash of (x,) and of frozenset({x}) are each a function of x's that can be
    inverted (tupleobject.c's xxHash lanes; setobject.c's shuffle, XOR and
    multiply), so each chain is solved from the outside in for its int."""
    mask = 2**64 - 1

    def signed(x: int) -> int:
        return x - 2**64 if x >> 63 else x

    def tuple_inverse(h: int) -> int:  # the hash of x, (x,) hashing to h
        return last_item_hash(h, [], 1)

    def frozenset_inverse(h: int) -> int:  # frozenset({x}) hashing to h
        y = ((h & mask) - 907133923) * pow(69069, -1, 2**64) & mask
        x = y
        for _ in range(8):  # undo x ^= (x >> 11) ^ (x >> 25)
            x = y ^ (x >> 11) ^ (x >> 25)
        z = ((x ^ 2 * 1927868237) * pow(3644798167, -1, 2**64) & mask) ^ 89869747
        x = z
        for _ in range(4):  # undo x ^ (x << 16)
            x = z ^ (x << 16) & mask
        return signed(x)

    target, keys = 12345, []
    chains: list[tuple[bytes, bytes, int]] = [(b"", b"", target)]  # before, after, hash
    while chains:
        grown = []
        for before, after, h in chains:
            if -(2**60) <= h < 2**60 and h != -1:
                number = b"\x8a\x08" + h.to_bytes(8, "little", signed=True)  # LONG1
                keys.append(before + number + after)
                if len(keys) == n:
                    return keys
            for inverse, opens, closes in (
                (tuple_inverse, b"", b"\x85"),
                (frozenset_inverse, b"(", b"\x91"),
            ):
                inner = inverse(h)
                if inner != -1 and len(before) + len(after) < 40:  # (-1: no hash is)
                    grown.append((before + opens, closes + after, inner))
        chains = grown
    raise AssertionError(f"fewer than {n} keys")


def _keys_record(keys: list[bytes], form: str) -> bytes:
    """Pickle bytes adding the pickled ``keys`` to a dict, a frozenset or a
    set (``global``: a set after a global, so the counting unpickler's)."""
    if form == "dict":
        return b"}(" + b"N".join(keys) + b"Nu"
    if form == "frozenset":
        return b"(" + b"".join(keys) + b"\x91"
    body = b"\x8f(" + b"".join(keys) + b"\x90"
    return _op_global("builtins", "int") + b"0" + body if form == "global" else body


def _floats_of_one_hash() -> list[float]:
    """The floats m * 2**e (m odd, below 2**53) of hash h = 2**0 + 2**9 +
    ... + 2**45: m = h * 2**-r modulo 2**61 - 1, e = r modulo 61."""
    prime, h = 2**61 - 1, sum(1 << (9 * k) for k in range(6))
    found = set()
    for r in range(61):
        m = h * pow(2, -r, prime) % prime
        if m % 2 == 0 or m >= 1 << 53:
            continue
        for e in range(r - 61 * 18, 971, 61):
            f = math.ldexp(m, e)
            if f and math.isfinite(f) and math.ldexp(f, -e) == m and hash(f) == h:
                found.add(f)
    return sorted(found)
_HUGE = (1 << 400_000) - 1
_WIDE = _wide_dtype(5000)
_SHARED_AND_HASHED.update({
    "a-hex-int-of-plain-data-hashed-again": (
        b"L" + hex(_HUGE).encode() + b"L\n" + b"\x94\x8f(" + b"h\x00" * 100_000 + b"\x90",
        _BUDGET,
    ),
    "equal-long-strings-added-again": (
        _op_str("x" * 200_000) + b"0" + _adds_again(_op_str("x" * 200_000), 50_000),
        _BUDGET,
    ),
    "an-int-parsed-from-one-string-again": (
        _called_on(_op_global("builtins", "int"), _op_str("f" * 100_000), _op_int(16), 20),
        _BUDGET,
    ),
    "a-list-of-a-string-beyond-latin-1": (
        _called_on(_op_global("builtins", "list"), _op_str("\u0101" * 50_000), b"", 10),
        _BUDGET,
    ),
    "a-shape-of-one-huge-int-repeated": (
        b"L" + hex(_HUGE).encode() + b"L\n\x940" + _OP_EMPTY_ARRAY + _op_tuple(
            _op_int(1), b"(" + b"h\x00" * 100 + b"t", _op_dtype("u1"), b"\x89", b"C\x00"
        ) + b"b",
        "ForbiddenGlobalError: safe mode takes only numpy's array states",
    ),
})  # fmt: skip


def _nested_struct(depth: int) -> np.dtype[Any]:
    d = np.dtype("i1")
    for _ in range(depth):
        d = np.dtype([("x", d)])
    return d


_OP_SCALAR = _op_global("numpy._core.multiarray", "scalar")


def _two_equal_scalars(n: int) -> bytes:
    """Two equal numpy bytes scalars of ``n`` bytes that are not one object:
    memo slots 2 and 3."""
    made = _op_call(_OP_SCALAR, _memo_get(0), _memo_get(1)) + b"\x940"
    return _op_dtype(f"S{n}") + b"\x940" + _op_bytes(b"a" * n) + b"\x940" + made * 2


def _state_given_again(fields: int, times: int) -> bytes:
    """numpy.dtype("V<fields>") given one memo'd state of that many one-byte
    fields, ``times`` times, each a new dtype: 9 pickle bytes a check that
    makes a dtype of ``fields`` fields again (fourteenth review: 9 s from
    1 MB, charged only its fields)."""
    names = [f"f{i}" for i in range(fields)]
    made = np.dtype({"names": names, "formats": ["u1"] * fields, "itemsize": fields})
    head = _op_plain(made.__reduce__()[2]) + b"\x940" + _op_global("numpy", "dtype")
    head += b"\x940" + _op_tuple(_op_str(f"V{fields}"), b"\x89", b"\x88") + b"\x940"
    return head + b"h\x01h\x02Rh\x00b0" * times + b"N"


def _metadata_given_again(entries: int, times: int) -> bytes:
    """numpy.dtype("f8") given a state whose metadata dict of ``entries``
    entries is memo'd, ``times`` times, each a new dtype (fifteenth review:
    numpy copies the dict and the check compares it, each time; 29 s from
    975 KB)."""
    metadata = b"}\x94(" + b"".join(_op_int(i) + b"N" for i in range(entries)) + b"u"
    state = b"(K\x04" + _op_str("<") + b"NNN" + _op_int(-1) * 2 + b"K\x00h\x00t\x94"
    head = metadata + state + b"0" + _op_global("numpy", "dtype") + b"\x940"
    head += _op_tuple(_op_str("f8"), b"\x89", b"\x88") + b"\x940"
    return head + b"h\x02h\x03Rh\x01b0" * times + b"N"


def _datetime_metadata_again(entries: int, times: int) -> bytes:
    """A new numpy.dtype("M8") given a fresh state whose (metadata, unit)
    holds one memo'd dict of ``entries`` entries, ``times`` times (sixteenth
    review: a datetime's metadata went uncharged; 18.9 s from 951 KB)."""
    metadata = b"}\x94(" + b"".join(_op_int(i) + b"N" for i in range(entries)) + b"u0"
    unit = _op_tuple(_op_bytes(b"s"), b"K\x01", b"K\x01", b"K\x01")
    head = metadata + _op_str("<") + b"\x940" + unit + b"\x940"  # memo 1, 2
    head += _op_global("numpy", "dtype") + b"\x940"  # memo 3
    head += _op_tuple(_op_str("M8"), b"\x89", b"\x88") + b"\x940"  # memo 4
    state = b"(K\x04h\x01NNN" + _op_int(-1) * 2 + b"K\x00h\x00h\x02\x86t"
    return head + (b"h\x03h\x04R" + state + b"b0") * times + b"N"


def _subarrays_of_one_struct(fields: int, times: int) -> bytes:
    """A new numpy.dtype("V<fields>") given a fresh subarray state over one
    memo'd struct of ``fields`` one-byte fields, ``times`` times: each check
    walks the struct (sixteenth review: 3.45 s from 1 MB)."""
    struct_ = np.dtype([(f"f{i}", "u1") for i in range(fields)])
    head = _op_dtype(struct_) + b"\x940" + _op_global("numpy", "dtype") + b"\x940"
    head += _op_tuple(_op_str(f"V{fields}"), b"\x89", b"\x88") + b"\x940"
    head += _op_str("|") + b"\x940" + _op_tuple(_op_int(1)) + b"\x940"  # memo 3, 4
    state = b"(K\x03h\x03h\x00h\x04\x86NN" + _op_int(fields) + b"K\x01K\x10t"
    return head + (b"h\x01h\x02R" + state + b"b0") * times + b"N"


def _equal_names_given_again(length: int, times: int) -> bytes:
    """A new numpy.dtype("V1") given one memo'd state of a field named A
    whose fields dict's key is B, equal to A but not it (both ``length``
    characters), ``times`` times: each check compares A and B byte by byte
    (seventeenth review: 34 s from 8 MB)."""
    name = _op_str("a" * length)
    fields = b"}" + _memo_get(1) + _op_tuple(_op_dtype("u1"), _op_int(0)) + b"s"
    state = _op_tuple(_op_int(3), _op_str("|"), b"N", _op_tuple(_memo_get(0)), fields)
    state = state[:-1] + _op_int(1) + _op_int(1) + _op_int(16) + b"t"
    head = name + b"\x940" + name + b"\x940" + state + b"\x940"  # memo 0, 1, 2
    head += _op_global("numpy", "dtype") + b"\x940"  # memo 3
    head += _op_tuple(_op_str("V1"), b"\x89", b"\x88") + b"\x940"  # memo 4
    return head + b"h\x03h\x04Rh\x02b0" * times + b"N"


def _array_read_again(times: int) -> bytes:
    """_frombuffer of one byte, its arguments memo'd: 6 pickle bytes a call
    of ~10 µs of checks (seventeenth review: 2-3 s from 1 MB)."""
    args = _op_tuple(_op_bytes(b"\0"), _op_dtype("u1"), _op_tuple(_op_int(1)), _op_str("C"))
    head = _FROMBUFFER_OP + b"\x940" + args + b"\x940"
    return head + b"h\x00h\x01R0" * times + b"N"


def _equal_named_dtypes_added_again(length: int, times: int) -> bytes:
    """A set of a dtype whose field is named A, then ``times`` adds of one
    whose field is named B, equal to A but not it (``length`` characters):
    each add compares the two dtypes, names byte by byte (eighteenth review:
    28.6 s from 703 KB, nested)."""
    named = np.dtype([("a" * length, "u1")])
    dtypes = _op_dtype(named) + b"\x940" + _op_dtype(named) + b"\x940"  # memo 0, 1
    return dtypes + b"\x8f(h\x00\x90(" + b"h\x01" * times + b"\x90"


def _extents_read_again(times: int) -> bytes:
    """_frombuffer of a byte in a shape of 64 extents, "K" order, its
    arguments memo'd: 6 pickle bytes a call whose checks walk 64 extents
    (fifteenth review: 5.6 s from 1 MB)."""
    shape = _op_tuple(*[_op_int(1)] * 64)
    axes = _op_tuple(*[_op_int(i) for i in range(63, -1, -1)])
    args = _op_tuple(_op_bytes(b"\0"), _op_dtype("u1"), shape, _op_str("K"), axes)
    head = _FROMBUFFER_OP + b"\x940" + args + b"\x940"
    return head + b"h\x00h\x01R0" * times + b"N"


#: Ninth review: numpy scalars and strings whose costs went uncounted.
_SHARED_AND_HASHED.update({
    "one-dtype-state-given-to-new-dtypes-again": (_state_given_again(70, 110_000), _BUDGET),
    "one-metadata-dict-given-to-new-dtypes-again": (
        _metadata_given_again(100_000, 11_000), _BUDGET
    ),
    "a-shape-of-64-extents-read-again": (_extents_read_again(170_000), _BUDGET),
    "a-datetime-metadata-dict-given-again": (
        _datetime_metadata_again(100_000, 13_000), _BUDGET
    ),
    "subarrays-of-one-struct-given-again": (_subarrays_of_one_struct(345, 8000), _BUDGET),
    "equal-names-given-again": (_equal_names_given_again(450_000, 30_000), _BUDGET),
    "an-array-read-again": (_array_read_again(166_000), _BUDGET),
    "equal-named-dtypes-added-again": (
        _equal_named_dtypes_added_again(100_000, 100_000), _BUDGET
    ),
    "equal-numpy-bytes-scalars-added-again": (
        _two_equal_scalars(200_000) + b"\x8f(" + _memo_get(2) + b"\x90("
        + _memo_get(3) * 20_000 + b"\x90",
        _BUDGET,
    ),
    "bool-of-a-large-void-again": (
        _op_dtype("V100000") + b"\x940" + _op_call(
            _OP_SCALAR, _memo_get(0), _op_bytes(bytes(100_000))
        ) + b"\x940](" + _op_call(_op_global("builtins", "bool"), _memo_get(1)) * 2000
        + b"e",
        "ForbiddenGlobalError: safe mode does not call bool on a numpy array or scalar",
    ),
    "a-set-of-a-string-beyond-latin-1": (
        _called_on(_op_global("builtins", "set"),
                   _op_str("".join(map(chr, range(0x100, 0x100 + 50_000)))), b"", 10),
        _BUDGET,
    ),
})  # fmt: skip
_RAW_SAFE_CASES["a-list-of-a-structured-scalar"] = _op_call(
    _op_global("builtins", "list"),
    _op_call(_OP_SCALAR, _op_dtype(np.dtype([("a", "u1"), ("b", "u1")])), _op_bytes(b"ab")),
)

def _long4(n: int) -> bytes:
    raw = n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)
    return b"\x8b" + struct.pack("<i", len(raw)) + raw


#: Tenth review: a range's length is a division of its ints; bool() of an
#: array reads all of it; what a record's arrays unfold into in tolist().
_SHARED_AND_HASHED.update({
    "a-range-of-huge-ints": (
        _op_call(_op_global("builtins", "range"), _op_int(0), _long4(2 ** (60 * 20_000)),
                 _long4(2 ** (30 * 20_000) + 12345)),
        _BUDGET,
    ),
    "many-items-of-a-byte-nested-thirty-structs-deep": (
        pickle.dumps(np.zeros(300_000, _nested_struct(30)), protocol=3)[2:-1], _BUDGET
    ),
})  # fmt: skip
#: Thirteenth review: numpy's "K" order transposes the shape it is given.
_NO_ROWS_BY_MANY = _op_tuple(_op_int(0), _op_int(1 << 24))
_RAW_SAFE_CASES["an-empty-array-of-many-rows-transposed"] = _op_call(
    _FROMBUFFER_OP, _op_bytes(b""), _op_dtype("u1"), _NO_ROWS_BY_MANY, _op_str("K"),
    _op_tuple(_op_int(1), _op_int(0)),
)
_RAW_SAFE_CASES["bool-of-an-array"] = _op_call(
    _op_global("builtins", "bool"), _op_array((1,), _op_dtype("V8"), _op_bytes(bytes(8)))
)



class TestSafeModeChecksEachCallAndState:
    """Safe mode's globals are harmless only with the arguments and states
    numpy and pickle write: each is checked before it runs (safe.py). Each
    case in a child with 256 MiB of address space to spare: before, they
    allocated without bound or crashed the process."""

    CASES = {
        "object-array-shorter-than-its-shape": lambda: array((3,), np.dtype("O"), [1]),
        "dtype-flags-forged-to-hold-objects": lambda: array((1,), _forged_void(), [1]),
        "object-array-from-raw-bytes": lambda: array((1,), np.dtype("O"), b"A" * 8),
        "scalar-of-forged-dtype-from-bytes": lambda: Reduces(
            np._core.multiarray.scalar, (_forged_void(), b"A" * 8)
        ),
        "bytearray-of-a-count": lambda: Reduces(bytearray, (1 << 40,)),
        "bytes-of-a-count": lambda: Reduces(bytes, (1 << 40,)),
        "list-of-a-range": lambda: Reduces(list, (range(1 << 40),)),
        "frozenset-of-a-range": lambda: Reduces(frozenset, (range(1 << 40),)),
        "ndarray-called": lambda: Reduces(np.ndarray, ((1 << 40,), "u1")),
        "ndarray-new": lambda: as_newobj(Reduces(np.ndarray, ((1 << 40,),))),
        "reconstruct-of-a-shape": lambda: Reduces(
            _RECONSTRUCT, (np.ndarray, (1 << 40,), b"b")
        ),
        "state-given-to-a-list": lambda: Reduces(list, ([1],), {"a": 1}),
    }

    @pytest.mark.parametrize("case", sorted([*CASES, *_RAW_SAFE_CASES]))
    def test_a_call_or_state_numpy_or_builtins_would_trust_is_refused(
        self, case: str
    ) -> None:
        if case in _RAW_SAFE_CASES:
            pickled = b"\x80\x04" + _RAW_SAFE_CASES[case] + b"."
        else:
            made = self.CASES[case]()
            pickled = made if isinstance(made, bytes) else pickle.dumps(made, 5)
        outcome = TestHostileLengthsInsideThePickle.load_in_a_child(
            stream(record(pickled), END)
        )
        assert outcome.startswith("ForbiddenGlobalError: safe mode"), outcome

    @pytest.mark.parametrize("case", sorted(_AFTER_THE_CHECK))
    def test_a_dtype_gets_the_state_numpy_rebuilt_not_the_pickles(self, case: str) -> None:
        body, use = _AFTER_THE_CHECK[case]
        outcome = TestHostileLengthsInsideThePickle.load_in_a_child(
            stream(record(b"\x80\x04" + body + b"."), END), use=use
        )
        assert "signal" not in outcome and "Error" not in outcome, outcome
        assert "1099511627776" not in outcome  # the offset set after the check

    @pytest.mark.parametrize("frames", ["one-frame", "frames-of-4-kib"])
    @pytest.mark.parametrize("case", sorted(_SHARED_AND_HASHED))
    def test_what_a_record_shares_is_hashed_compared_and_named_in_bounded_time(
        self, case: str, frames: str
    ) -> None:
        """In one frame or several (which safe mode gathers and judges whole)."""
        body, expected = _SHARED_AND_HASHED[case]
        pickled = b"\x80\x04" + body + b"."
        framed = record(pickled) if frames == "one-frame" else in_frames(pickled)
        outcome = TestHostileLengthsInsideThePickle.load_in_a_child(stream(framed, END))
        assert outcome.startswith(expected), outcome

    def test_an_error_of_numpys_own_is_a_corrupt_record(self) -> None:
        """Raised in numpy (a type string it does not know): not a caller's
        error to pass on."""
        made = _op_call(_op_global("numpy", "dtype"), _op_str("f3"), b"\x89", b"\x88")
        pickled = b"\x80\x04" + made + b"."
        with pytest.raises(sp.CorruptStreamError, match="not a valid pickle: .*TypeError"):
            sp.loads(stream(record(pickled), END), safe=True)

    def test_an_extension_code_never_names_a_global(self) -> None:
        """pickle.py takes a registered code's global from copyreg's cache,
        without find_class: refused in safe mode, registered or not."""
        pickled = b"\x80\x02\x82\xf0)R."
        copyreg.add_extension("os", "getcwd", 240)
        try:
            with pytest.raises(sp.ForbiddenGlobalError, match="no extension codes"):
                sp.loads(stream(record(pickled), END), safe=True)
        finally:
            copyreg.remove_extension("os", "getcwd", 240)

    def test_a_bytearray_claim_allocates_nothing_before_its_bytes_arrive(self) -> None:
        """pickle.py zero-fills the length BYTEARRAY8 claims, then reads: in
        safe mode, without max_size, a record cut short after a claim of
        1 GB is only truncated (was a MemoryError in the child's limit)."""
        claim = b"\x80\x05\x96" + struct.pack("<Q", 1 << 30)
        outcome = TestHostileLengthsInsideThePickle.load_in_a_child(
            stream(pickle_frame(claim[:3]), pickle_frame(claim[3:]))
        )
        assert outcome.startswith("TruncatedStreamError"), outcome

    def test_a_wide_dtype_is_checked_once_however_often_it_is_used(self) -> None:
        """A 5000-field dtype used by 1000 arrays: walked at each use (the
        budget refused this record; a 100-field dtype used 52,000 times took
        13 s from 948 KB: twelfth review). A dtype cannot change once taken,
        so it is checked once."""
        body = _WIDE[0] + b"0](" + _frombuffer_op(
            _op_bytes(b""), _memo_get(_WIDE[1]), 0
        ) * 1000 + b"e"
        data = stream(record(b"\x80\x04" + body + b"."), END)
        started = time.perf_counter()
        outcome = TestHostileLengthsInsideThePickle.load_in_a_child(data, use="len(obj)")
        assert outcome == "1000", outcome
        assert time.perf_counter() - started < 20  # ~1 s

    def test_what_hashing_a_memod_container_visits_is_counted_at_c_speed(self) -> None:
        """frozenset() of one memo'd 4 MB bytes, again and again for 6 bytes
        each: counted item by item in Python it took 0.7 µs an item, 23 s
        before the budget ran out (eighteenth review); counted in one pass
        in C: refused in about a second."""
        head = _op_bytes(bytes(4 << 20)) + b"\x940" + _op_global("builtins", "frozenset")
        body = head + b"\x940](" + b"h\x01h\x00\x85R" * 20 + b"e"
        self.refused_by_the_budget_within(body, 10)  # ~1 s

    def test_what_hashing_a_wide_shared_tuple_visits_is_counted_at_c_speed(self) -> None:
        """frozenset() of a memo'd list of 1000 references to one tuple of
        1000 ints, again and again: each visit inside the tuple was counted
        in Python at ~0.3 µs for a unit of ~0.05 (nineteenth review: 10 s
        from 4 MB); now in one pass in C, refused in about a second."""
        wide = _op_tuple(*[_op_int(i) for i in range(1000)]) + b"\x94"
        listed = b"0](" + b"h\x00" * 1000 + b"e\x940" + _op_global("builtins", "frozenset")
        pad = b"\x8e" + struct.pack("<Q", 8 << 20) + bytes(8 << 20) + b"0"  # budget
        body = wide + listed + b"\x940" + pad + b"](" + b"h\x02h\x01\x85R" * 100 + b"e"
        self.refused_by_the_budget_within(body, 8)  # ~2 s

    def test_what_is_compared_with_a_numpy_scalar_is_charged_at_numpys_cost(self) -> None:
        """A memo'd tuple of 10,000 floats added again and again to a set
        holding an equal tuple of np.True_: each add compares the items
        through numpy (~0.9 µs each) and was charged 1 unit (~0.05) an item;
        the record loaded after ~13 s (twentieth review: 29.5 s from 4 MB).
        Now charged as compared: refused in about a second."""
        true = _op_call(_OP_SCALAR, _op_dtype("?"), _op_bytes(b"\x01")) + b"\x94"
        numpys = b"(" + _memo_get(0) + b"2" * 9999 + b"t\x940"  # slot 1
        floats = b"(G" + struct.pack(">d", 1.0) + b"2" * 9999 + b"t\x940"  # slot 2
        pad = b"\x8e" + struct.pack("<Q", 2 << 20) + bytes(2 << 20) + b"0"  # budget
        held = b"\x8f(" + _memo_get(1) + b"\x90"
        body = true + numpys + floats + pad + held + (b"(" + _memo_get(2) + b"\x90") * 1500
        self.refused_by_the_budget_within(body, 8)

    @pytest.mark.parametrize(
        "call",
        ["bool-of-a-wide-void", "int-of-a-longdouble", "int-of-a-clongdouble",
         "int-of-a-complex64", "int-of-an-x87-pseudo-infinity", "str-of-a-numpy-str",
         "range-of-a-numpy-int", "float-of-a-numpy-float"],
    )  # fmt: skip
    def test_a_builtin_given_a_numpy_scalar_is_refused(self, call: str) -> None:
        """Pickle writes no such call, and numpy's conversions cost what no
        byte of the record shows: bool() of a void of 4,030 overlapping
        fields reads each (190 µs; twentieth review), int() of a longdouble
        or of a complex one makes 16,400 bits from 16 bytes (120 µs; 22nd,
        23rd), int() of a complex64 warns each time, and pricing int() by
        np.frexp took longer than the call and printed numpy's warning for
        an x87 pseudo-infinity (24th, 25th). Refused at the call, quietly."""
        fields = 4030
        void = np.dtype({
            "names": [f"f{i}" for i in range(fields)], "formats": ["u1"] * fields,
            "offsets": [i % 1000 for i in range(fields)], "itemsize": 1000,
        })  # fmt: skip
        pseudo_infinity = struct.pack("<QH", 0, 0x7FFF).ljust(np.dtype("g").itemsize, b"\0")
        func, dtype, raw = {
            "bool-of-a-wide-void": ("bool", void, bytes(1000)),
            "int-of-a-longdouble": ("int", "g", np.longdouble("1e4930").tobytes()),
            "int-of-a-clongdouble": ("int", "G", np.clongdouble("1e4930").tobytes()),
            "int-of-a-complex64": ("int", "<c8", np.complex64(1.5).tobytes()),
            "int-of-an-x87-pseudo-infinity": ("int", "g", pseudo_infinity),
            "str-of-a-numpy-str": ("str", "<U2", "ab".encode("utf-32-le")),
            "range-of-a-numpy-int": ("range", "<i8", np.int64(5).tobytes()),
            "float-of-a-numpy-float": ("float", "<f8", np.float64(1.5).tobytes()),
        }[call]
        made = _op_call(_OP_SCALAR, _op_dtype(dtype), _op_bytes(raw))
        body = _op_call(_op_global("builtins", func), made)
        data = stream(record(b"\x80\x04" + body + b"."), END)
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            with pytest.raises(sp.ForbiddenGlobalError, match=f"call {func} on a numpy"):
                sp.loads(data, safe=True)
        assert [str(w.message) for w in shown] == []

    @pytest.mark.parametrize("order", ["<", ">"])
    def test_a_numpy_str_of_units_beyond_unicode_is_refused(self, order: str) -> None:
        """numpy made a str of any UCS4 units it was given: 0xFFFFFFFF in
        two characters loaded, and indexing the str raised SystemError
        (twenty-fourth review). Code points up to U+10FFFF still load."""
        for units, loads in (([0xFFFFFFFF, 0x41], False), ([0x110000, 0x41], False),
                             ([0x10FFFF, 0x1F600], True)):  # fmt: skip
            raw = np.array(units, order + "u4").tobytes()
            made = _op_call(_OP_SCALAR, _op_dtype(order + "U2"), _op_bytes(raw))
            data = stream(record(b"\x80\x04" + made + b"."), END)
            if loads:
                assert sp.loads(data, safe=True) == "".join(map(chr, units))
            else:
                with pytest.raises(sp.ForbiddenGlobalError, match="code points only"):
                    sp.loads(data, safe=True)

    def test_a_slice_of_numpy_ints_loads(self) -> None:
        """A slice keeps what it is given, and pickles it so: numpy ints."""
        obj = [slice(np.int64(1), np.int32(9), np.int8(2)), slice(None, np.uint64(3))]
        assert sp.loads(sp.dumps(obj), safe=True) == obj

    @pytest.mark.parametrize("first", ["scalar", "range"])
    def test_a_range_compared_with_a_numpy_scalar_is_charged_as_numpys_array(
        self, first: str
    ) -> None:
        """np.int64(h) and range(10**8), whose hash is h (a range's hash is
        the same in every process), in one set: numpy compares them by
        making an array of the range, 800 MB from 100 bytes (twenty-first
        review, 138 bytes: 7.9 s, then a MemoryError). Refused at once."""
        n = 10**8
        while hash(np.int64(hash(range(n)))) != hash(range(n)):
            n += 1
        h = struct.pack("<q", hash(range(n)))
        scalar = _op_call(_OP_SCALAR, _op_dtype("<i8"), _op_bytes(h))
        made = _op_call(_op_global("builtins", "range"), _op_int(0), _op_int(n))
        items = scalar + made if first == "scalar" else made + scalar
        self.refused_by_the_budget_within(b"\x8f(" + items + b"\x90", 5)

    def test_a_dict_of_numpy_keys_copied_into_sets_is_charged_its_comparisons(
        self,
    ) -> None:
        """A dict keyed by 10 pairs of np.int64(h) and a tuple 63 deep of
        hash h (numpy compares them, ~15 µs, and keeps both), given to set()
        again and again for 14 bytes: each copy compares the pairs again,
        and was charged 1 a key (twenty-first review: 16.5 s from 1 MB)."""
        pairs, inner = [], 1000  # (hash, the int 63 tuples deep)
        while len(pairs) < 10:
            nested: Any = inner
            for _ in range(63):
                nested = (nested,)
            if hash(np.int64(hash(nested))) == hash(nested):
                pairs.append((hash(nested), inner))
            inner += 1
        keys = b"".join(
            _op_call(_OP_SCALAR, _op_dtype("<i8"), _op_bytes(struct.pack("<q", h)))
            + b"N" + b"(" * 63 + _op_int(i) + b"t" * 63 + b"N"
            for h, i in pairs
        )
        head = b"}(" + keys + b"u\x940" + _op_global("builtins", "set") + b"\x940"
        call = _memo_get(1) + b"(" + _memo_get(0) + b"tR0"
        self.refused_by_the_budget_within(head + call * 40_000 + b"N", 5)

    def test_a_wide_int_compared_with_a_longdouble_is_charged_its_printing(self) -> None:
        """np.longdouble(5) in a set, and an int of 14,211 bits whose hash is
        5 added again and again (2 bytes each): numpy prints the int in
        decimal to compare it, in time quadratic in its digits (244 µs),
        charged by its digits (twenty-second review: 4.6 s a MB). The adds
        that loaded within the budget are refused now."""
        longdouble = _op_bytes(np.longdouble(5).tobytes())
        held = b"\x8f(" + _op_call(_OP_SCALAR, _op_dtype("g"), longdouble) + b"\x90"
        wide = _op_int(5 + (2**61 - 1) * 2**14150) + b"\x940"
        self.refused_by_the_budget_within(
            held + wide + (b"(" + b"h\x00" * 1000 + b"\x90") * 2, 5
        )

    @pytest.mark.parametrize("form", ["set", "dict"])
    def test_a_numpy_key_added_again_past_keys_of_its_hash_is_charged_each_compare(
        self, form: str
    ) -> None:
        """1,000 ints of one hash (free to make: an int's hash is itself
        modulo 2**61 - 1), then np.float16 of that hash, added again and
        again: CPython compares it, through numpy, with each of the ints on
        its way (1.3 ms an add), charged as meeting one (twenty-fifth
        review: 49 KB took 26.8 s and loaded). Refused at once now."""
        ints = [_op_int(60 + j * (2**61 - 1)) for j in range(1, 1001)]
        half = np.float16(60).tobytes()
        key = _op_call(_OP_SCALAR, _op_dtype("<f2"), _op_bytes(half)) + b"\x94"
        if form == "set":
            body = b"\x8f(" + b"".join(ints) + b"\x90(" + key + b"\x90"
            body += (b"(" + b"h\x00" * 1000 + b"\x90") * 4
        else:
            body = b"}(" + b"N".join(ints) + b"Nu(" + key + b"Nu"
            body += (b"(" + b"h\x00N" * 1000 + b"u") * 4
        self.refused_by_the_budget_within(body, 5)

    @pytest.mark.parametrize("form", ["set", "dict", "tuples", "batches", "global"])
    def test_plain_keys_of_one_hash_are_charged_each_compare(self, form: str) -> None:
        """45,000 ints of one hash (x + j*(2**61 - 1), 11 bytes each), or
        1-tuples of them: CPython compares each with every one before it
        (26th review: 544 KB of plain data, 15.9 s, with no budget at all on
        the C unpickler's path). The scan sends it to the counting unpickler,
        which charges each key the distinct keys of its hash met: refused."""
        ints = [_op_int(60 + j * (2**61 - 1)) for j in range(1, 45_001)]
        if form == "dict":
            body = b"}(" + b"N".join(ints) + b"Nu"
        elif form == "tuples":
            body = b"\x8f(" + b"\x85".join(ints) + b"\x85\x90"
        elif form == "batches":  # as a pickler batches them
            batches = [ints[i : i + 1000] for i in range(0, len(ints), 1000)]
            body = b"\x8f" + b"".join(b"(" + b"".join(b) + b"\x90" for b in batches)
        else:
            body = b"\x8f(" + b"".join(ints) + b"\x90"
            if form == "global":  # the counting unpickler's path anyway
                body = _op_global("builtins", "int") + b"0" + body
        self.refused_by_the_budget_within(body, 5)

    def test_a_key_added_again_past_plain_keys_of_its_hash_is_charged_each_compare(
        self,
    ) -> None:
        """A set of 20,000 ints of one hash, the last memo'd and added again
        380,000 times (2 bytes each): each add compares it with those before
        it (26th review: 1 MB, past 60 s). Charged: refused."""
        ints = b"".join(_op_int(60 + j * (2**61 - 1)) for j in range(1, 20_001))
        body = b"\x8f(" + ints + b"\x94\x90" + (b"(" + b"h\x00" * 1000 + b"\x90") * 380
        self.refused_by_the_budget_within(body, 5)

    @pytest.mark.parametrize("copy", ["set", "frozenset"])
    def test_a_dict_of_plain_keys_of_one_hash_copied_is_charged_its_compares_again(
        self, copy: str
    ) -> None:
        """A dict of 3,000 ints of one hash (charged its compares once), then
        set(d) again and again for 8 bytes: each copy compares each key with
        those of its hash before it, 4.5 million compares (100 KB: 29 s).
        Each copy is charged them again: refused."""
        ints = b"".join(_op_int(60 + j * (2**61 - 1)) + b"N" for j in range(1, 3001))
        head = b"}(" + ints + b"u\x940" + _op_global("builtins", copy) + b"\x940"
        call = _memo_get(1) + _memo_get(0) + b"\x85R0"
        self.refused_by_the_budget_within(head + call * 10_000 + b"N", 5)

    @pytest.mark.parametrize("small", ["int", "float"])
    def test_a_small_number_added_again_past_wide_ints_of_its_hash_is_charged_each_compare(
        self, small: str
    ) -> None:
        """2,000 ints of one hash (charged their compares once), then the int
        60 or the float 60.0 of that hash, neither of a chosen hash itself,
        added again and again (DUP, a byte each): each add compares it with
        the 2,000 (28th review: 1 MB took 17.8 s, the float 54 s, and loaded).
        A key meets the keys held of its hash, chosen or not: refused."""
        ints = b"".join(_op_int(60 + j * (2**61 - 1)) for j in range(1, 2001))
        key = _op_int(60) if small == "int" else b"G" + struct.pack(">d", 60.0)
        adds = (b"(" + key + b"2" * 999 + b"\x90") * 1000
        self.refused_by_the_budget_within(b"\x8f(" + ints + b"\x90" + adds, 5)

    @pytest.mark.parametrize("form", ["set", "dict", "global"])
    def test_keys_of_one_number_among_items_of_known_hash_are_counted(
        self, form: str
    ) -> None:
        """'' and b'' hash to 0 and () to a constant in every process: 16,000
        tuples of twelve of them and one int below 2**60, solved so that all
        share a hash (29th review: 524 KB of plain data took 4.6 s on the C
        unpickler, with no budget; 10 s a MB counted). Such items count as
        numbers, and two numbers make a tuple's hash one a pickle chose."""
        self.refused_by_the_budget_within(_keys_record(_keys_of_one_hash(16_000), form), 5)

    @pytest.mark.parametrize("form", ["set", "dict", "frozenset", "global"])
    def test_keys_of_one_number_wrapped_each_its_own_way_are_counted(
        self, form: str
    ) -> None:
        """An int below 2**60 in a 1-tuple or 1-frozenset hashes by a
        function of its hash that can be inverted, another for each way of
        wrapping it: 8,000 keys of one hash, each its own chain of them
        ((x,), frozenset({(y,)}), ...) around an int solved for it (31st
        review: 1 MB of plain data, 100 s on the C unpickler, 16 s a MB
        counted). A number in a container in a key makes its hash one a
        pickle chose: counted, refused."""
        body = _keys_record(_wrapped_keys_of_one_hash(8000), form)
        # keys sharing their outer wrapping share the hashes of what they
        # wrap: a 1-frozenset of one of those is refused first
        self.refused_by_the_budget_within(body, 5, "ForbiddenGlobalError: safe mode")

    @pytest.mark.parametrize("form", ["frozensets", "tuples", "global"])
    def test_keys_of_str_and_bytes_of_the_same_data_are_counted(self, form: str) -> None:
        """A str and bytes of the same data bytes hash alike: frozenset({s,
        s.encode()}) hashes as no item were there (XOR), whatever s, and a
        tuple of 16 items each 'a' or b'a' has 2**16 variants of one hash
        (30th review: 448 KB of plain data took 18.4 s, 1 MB of tuples 14.7
        s, on the C unpickler). Two strings in a frozenset, three in a tuple,
        make a hash a pickle chose: counted, refused."""
        if form == "tuples":
            variants = itertools.product([b"\x8c\x01a", b"C\x01a"], repeat=16)
            keys = [b"(" + b"".join(v) + b"t" for v in itertools.islice(variants, 20_000)]
        else:
            text = [b"%x" % i for i in range(32_000)]
            keys = [b"(\x8c%c%sC%c%s\x91" % (len(t), t, len(t), t) for t in text]
        body = b"\x8f(" + b"".join(keys) + b"\x90"
        if form == "global":
            body = _op_global("builtins", "int") + b"0" + body
        self.refused_by_the_budget_within(body, 5)

    def test_floats_of_one_hash_added_again_are_charged_each_compare(self) -> None:
        """~200 floats m * 2**e share a hash (m = h * 2**-r modulo 2**61 - 1
        odd and below 2**53, e = r modulo 61), and the last of them added
        again compares with each: plain data, 1 MB took 2.3 s on the C
        unpickler, and loaded (28th review). A float beyond 2**-60 to 2**61
        in size has a hash a pickle may choose: counted, refused."""
        floats = _floats_of_one_hash()
        assert len(floats) > 150
        items = b"".join(b"G" + struct.pack(">d", f) for f in floats)
        adds = (b"(" + b"h\x00" * 1000 + b"\x90") * 500
        self.refused_by_the_budget_within(b"\x8f(" + items + b"\x94\x90" + adds, 5)

    def test_keys_of_chosen_hashes_a_record_drops_are_let_go(self) -> None:
        """Sets of 1,000 distinct frozensets {a, b} (7 bytes each), each set
        dropped once made: the keys' counting held every frozenset to the end
        of the load (28th review: 53 times the record's bytes; here 13 MB).
        What only it holds is let go now."""
        def frozensets(k: int) -> bytes:  # {i, k}, i of two bytes
            pairs = ((struct.pack("<H", i), k) for i in range(1000, 2000))
            return b"".join(b"(M%sK%c\x91" % pair for pair in pairs)

        sets = b"".join(b"\x8f(" + frozensets(k) + b"\x900" for k in range(40))
        data = stream(record(b"\x80\x04" + sets + b"N."), END)
        outcome = measured(lambda: sp.loads(data, safe=True))
        assert outcome.error is None
        assert outcome.traced_peak < 8 << 20, outcome.traced_peak

    def test_dicts_sharing_their_tuple_keys_load(self) -> None:
        """pickle writes a tuple key shared by many dicts once, then each
        dict refers to it (2 bytes): the same object added again compares
        with nothing, and was charged one compare (28th review: 20,000 dicts
        sharing 100 keys refused)."""
        keys = [(i, i + 1) for i in range(100)]
        obj = [dict.fromkeys(keys, 0) for _ in range(4000)]
        assert sp.loads(sp.dumps(obj), safe=True) == obj

    def test_a_frozenset_of_items_of_one_hash_is_refused(self) -> None:
        """Two equal frozensets compare each item with those of its hash in
        the other, as often as a set meets them (26th review: quadratic,
        19-30 s a MB): one whose items met more than one key of their hash
        each is refused, whatever its size."""
        ints = b"".join(_op_int(60 + j * (2**61 - 1)) for j in range(1, 101))
        data = stream(record(b"\x80\x04(" + ints + b"\x91."), END)
        with pytest.raises(sp.ForbiddenGlobalError, match="frozenset of items of one hash"):
            sp.loads(data, safe=True)
        small = frozenset({-1, -2, (-1, 0), (-2, 0)})  # hash(-1) == hash(-2)
        assert sp.loads(sp.dumps([small, {small: 1}]), safe=True) == [small, {small: 1}]

    def test_plain_records_of_tuple_and_wide_int_keys_load(self) -> None:
        """Keys whose hash a pickle may choose are counted, and a legit
        record's meet at most one other of their hash: ids past 60 bits,
        grids, (-1, i) beside (-2, i) (hash(-1) == hash(-2)), frozensets,
        one key in many dicts; each loads in safe mode."""
        records = [
            {(i, j): None for i in range(300) for j in range(300)},
            {(s, i): None for i in range(50_000) for s in (-1, -2)},
            {(2**63 - 1) - 7 * i: i for i in range(50_000)},
            {-(2**61) - i for i in range(50_000)},
            {frozenset({i, i + 1}): i for i in range(20_000)},
            [{("a", 1): i, (2.5, None): i} for i in range(20_000)],
            {(i, str(i)): (i, i) for i in range(20_000)},
        ]
        for obj in records:
            assert sp.loads(sp.dumps(obj), safe=True) == obj

    def test_containers_a_record_drops_are_not_held_by_the_accounting(self) -> None:
        """Sets of a numpy key, each dropped as soon as made: the accounting
        held each, with its table, to the end of the load (26th review:
        1.8 GB from a 4 MB record, a raw MemoryError under a limit). What
        only it holds is let go now."""
        key = _op_call(_OP_SCALAR, _op_dtype("<i8"), _op_bytes(bytes(8))) + b"\x940"
        pad = b"\x8e" + struct.pack("<Q", 2 << 20) + bytes(2 << 20) + b"0"  # budget
        body = key + pad + b"\x8f(h\x00\x900" * 100_000 + b"N"
        data = stream(record(b"\x80\x04" + body + b"."), END)
        outcome = measured(lambda: sp.loads(data, safe=True))
        assert outcome.error is None
        assert outcome.traced_peak < 16 << 20, outcome.traced_peak  # held: 67 MB

    def test_a_float_compared_with_a_timedelta_is_charged_numpys_failed_compare(
        self,
    ) -> None:
        """np.float64(12 s) and np.timedelta64(s, "Y") hash alike (a year
        timedelta hashes as its months); numpy finds no loop to compare
        them (~5 µs) and the timedelta, added again for 4 bytes, was
        charged 24 units (twenty-fifth review: 3.3 s a MB, and it loaded).
        Each compare is charged NUMPY_PAIR now: refused."""
        years = np.timedelta64(5, "Y")
        assert hash(years) == hash(np.float64(60))
        f8 = _op_call(_OP_SCALAR, _op_dtype("<f8"), _op_bytes(np.float64(60).tobytes()))
        m8 = _op_call(_OP_SCALAR, _op_dtype("<m8[Y]"), _op_bytes(years.tobytes()))
        body = b"\x8f(" + f8 + m8 + b"\x94\x90" + b"(h\x00\x90" * 100_000
        self.refused_by_the_budget_within(body, 5)

    @staticmethod
    def refused_by_the_budget_within(
        body: bytes, seconds: float, refusal: str = _BUDGET
    ) -> None:
        """The record of pickle ``body`` is refused by the budget (or as
        ``refusal`` says), in a child, within ``seconds`` (generous: the bugs
        took ten times as long)."""
        data = stream(record(b"\x80\x04" + body + b"."), END)
        started = time.perf_counter()
        outcome = TestHostileLengthsInsideThePickle.load_in_a_child(data)
        assert outcome.startswith(refusal), outcome
        assert time.perf_counter() - started < seconds

    def test_records_of_many_distinct_dtypes_load(self) -> None:
        """Each dtype object its own state, checked once: a dtype's check is
        charged its full cost only where its state comes back (fifteenth
        review: from ~4,400 dtypes on, each was charged more than its state's
        pickle bytes bring)."""
        struct_ = np.dtype([("a", "u1"), ("b", "<f4"), ("c", "S3")])
        records = [
            [np.dtype(">f8") for _ in range(10_000)],
            [np.dtype([("a", "u1")]) for _ in range(10_000)],
            {f"column_{i}": np.dtype(">i4") for i in range(10_000)},
            [np.zeros(1, [("a", "u1")])[0] for _ in range(10_000)],
            # derived, sharing numpy's names and fields (sixteenth review)
            [copy.copy(struct_) for _ in range(5000)],
            [np.dtype(struct_, metadata={"h5py": i}) for i in range(10_000)],
        ]
        for obj in records:
            got = sp.loads(sp.dumps(obj), safe=True)
            assert got == obj

    def test_sets_and_dicts_holding_numpy_keys_load(self) -> None:
        """What is added beside a numpy key is charged as compared through
        numpy (twentieth review), at less than what its bytes bring: keys of
        shared numpy scalars, and a dict mixing one numpy key with 300,000
        tuples of two small ints and None (8 bytes a key) load."""
        xs, ys = np.arange(300), np.arange(100)
        records = [
            {np.int64(i): float(i) for i in range(20_000)},
            set(np.arange(30_000)),
            {(a, b): a * b for a, b in itertools.product(xs, ys)},
            {np.int64(0): 1, **{(i, j): None for i in range(600) for j in range(500)}},
            {np.float64(0.5), *map(float, range(200_000))},
            [frozenset(np.arange(100, dtype=np.float32) + k) for k in range(200)],
            # hash(-1) == hash(-2): one compare through numpy
            {np.int64(-1): 1, -2: 2, **{np.int64(i): i for i in range(20_000)}},
            {(np.float32(i), i) for i in range(20_000)},
            # 100,000 plain keys of one hash in pairs, beside a numpy key (26th review)
            {np.int64(0): 0, **{(s, i): None for i in range(50_000) for s in (-1, -2)}},
            # a frozenset of more than 8 items, hashed (26th review: refused)
            [np.float64(1.5), {frozenset(range(10)), ("a", frozenset("abcdefghi"))}],
            # small sets sharing one numpy key, 6 bytes each (27th review: refused)
            [{shared} for shared in [np.int64(7)] * 60_000],
            [frozenset({np.dtype("f8"), i}) for i in range(60_000)],
        ]
        for obj in records:
            assert sp.loads(sp.dumps(obj), safe=True) == obj

    @pytest.mark.parametrize("compress", [None, "zstd"])
    def test_a_transposed_array_out_of_band_loads(self, compress: str | None) -> None:
        """Neither C nor F contiguous: numpy 2 writes its bytes in the order
        of its strides and the axes that make it again ("K"; twelfth review:
        refused, and on a socket the stream stopped)."""
        for obj in (
            np.arange(24_000.0).reshape(20, 30, 40).transpose(2, 0, 1),
            np.zeros((300, 20), [("a", "f4"), ("b", "i2")]).T,
        ):
            got = sp.loads(sp.dumps(obj, compress=compress), safe=True)
            assert got.dtype == obj.dtype and got.strides == obj.strides
            np.testing.assert_array_equal(got, obj)

    @pytest.mark.parametrize("compress", [None, "zstd"])
    def test_a_large_table_out_of_band_loads(self, compress: str | None) -> None:
        """Its bytes come beside the pickle, not in it: what its rows unfold
        into (three objects in 8 bytes) is bounded by those bytes, not by
        the pickle's budget (eleventh review: refused from 4 MB)."""
        table = np.arange(2_000_000, dtype=np.float32).view([("a", "f4"), ("b", "f4")])
        got = sp.loads(sp.dumps(table, compress=compress), safe=True)
        assert got.dtype == table.dtype
        np.testing.assert_array_equal(got, table)

    def test_each_safe_global_is_one_whose_errors_are_the_records(self) -> None:
        for name in safe.SAFE_GLOBALS:
            module, _, attr = name.rpartition(".")
            with warnings.catch_warnings():  # numpy 2 on numpy.core's names
                warnings.simplefilter("ignore", DeprecationWarning)
                found = pickle.Unpickler(io.BytesIO()).find_class(module, attr)
            assert id(found) in safe._OWN_IDS, name

    def test_what_numpy_and_pickle_write_still_loads(self) -> None:
        obj = [
            np.array([1, "x", None], dtype=object),
            np.array([[1, 2], [3, 4]], dtype=object),
            np.zeros(3, dtype=[("a", "i4"), ("b", "f8", (2,))]),
            np.zeros(2, dtype=np.dtype([("a", [("x", "u1"), ("y", "f8")]), ("b", "u1")],
                                       align=True)),
            np.zeros(2, dtype=np.dtype({"names": ["a"], "formats": ["i4"], "offsets": [4],
                                        "itemsize": 12})),
            np.zeros(2, dtype=np.dtype("f8", metadata={"k": 1})),
            np.asfortranarray(np.arange(12.0).reshape(3, 4)),
            np.array(5.0),
            np.zeros((0, 100)),
            np.array(["ab", "c"]),
            np.arange(3).astype("M8[D]"),
            np.zeros(1, dtype=[("a", "i4")])[0],
            np.arange(10, dtype=">i2"),
            np.float32(1.5),
            np.datetime64("2026-11-26"),
            bytearray(b"abc"),
            range(5),
            np.zeros(2, dtype=[(("title", "a"), "i4"), ("b", "f8")]),  # third review:
            np.array(["x", None], dtype=np.dtype("O", metadata={"vlen": str})),
            np.zeros((0, 70000)),  # refused, as were these two
            b"\xc3\xa9".decode("utf-8"),
            {("a", 1): 1, ("a", 2): frozenset({("a", 3)})},  # shares "a", hashes tuples
            # eighth: numpy's BUILDs in a record of more than 1000 tuples
            {i: np.zeros(1, dtype=[("a", "i4"), ("b", "f8")]) for i in range(1100)},
            np.zeros(2, dtype=[(f"f{i}", "f4") for i in range(1500)]),
            [Ellipsis, NotImplemented, np.str_(""), np.bytes_(b""), np.void(b"")],
            np.zeros(2, dtype=[("a", "u1", (100, 1, 1))]),
            np.zeros(2, dtype=_nested_struct(20)),
            np.dtype([]),
        ]
        for protocol in (3, 4, 5):  # 2 writes bytes with _codecs.encode: not allowed
            pickled = pickle.dumps(obj, protocol)
            out = sp.loads(stream(record(pickled), END), safe=True)
            assert repr(out) == repr(pickle.loads(pickled)), protocol


# ---------------------------------------------------------------------------
# 5. Malformed streams: each error names what is wrong


#: Plain data in several PICKLE frames (FRAME_SIZE): safe mode gathers them and
#: judges the whole pickle before any of it runs.
PLAIN_IN_FRAMES = ["x" * 5000, list(range(1000)), {"k": b"y" * 3000, "t": (1, 2.5)}]
PLAIN_STREAM = sp.dumps(PLAIN_IN_FRAMES, frame_size=FRAME_SIZE)


class TestSafeModeGathersPickleFrames:
    """Safe mode reads a record's PICKLE frames of plain data (up to
    SAFE_WHOLE_MAX bytes) before it runs any: each failure on the way is
    still the stream's."""

    def test_the_sample_is_plain_data_in_several_pickle_frames(self) -> None:
        assert len(frames_of(PLAIN_STREAM, Kind.PICKLE)) >= 3
        assert sp.loads(PLAIN_STREAM, safe=True) == PLAIN_IN_FRAMES

    @pytest.mark.parametrize("source", [io.BytesIO, NonSeekable])
    def test_every_cut_raises_truncated_stream_error_naming_the_offset(
        self, source: Callable[[bytes], Any]
    ) -> None:
        problems = []
        for cut in range(1, len(PLAIN_STREAM)):
            try:
                sp.load(source(PLAIN_STREAM[:cut]), safe=True)
                error: Exception | None = None
            except Exception as exc:
                error = exc
            if type(error) is not sp.TruncatedStreamError or "offset" not in str(error):
                where = region(PLAIN_STREAM, cut)
                problems.append((where, f"cut {cut}: {describe(error)}"))
        assert not problems, summarize(problems, len(PLAIN_STREAM) - 1, "cuts")

    def test_every_flipped_byte_is_a_stream_error_or_the_same_object(self) -> None:
        problems = []
        for at in range(len(PLAIN_STREAM)):
            damaged = bytearray(PLAIN_STREAM)
            damaged[at] ^= 0x10
            try:
                got = sp.loads(bytes(damaged), safe=True)
                if got != PLAIN_IN_FRAMES:
                    problems.append((region(PLAIN_STREAM, at), f"byte {at}: {got!r:.60}"))
            except sp.StreamError:
                pass
            except Exception as exc:
                problems.append((region(PLAIN_STREAM, at), f"byte {at}: {describe(exc)}"))
        assert not problems, summarize(problems, len(PLAIN_STREAM), "flips")

    @pytest.mark.parametrize("counts", [(-1, 0), (1, 0), (0, 1)])
    def test_a_record_end_whose_counts_differ_is_refused(
        self, counts: tuple[int, int]
    ) -> None:
        pickled = pickle.dumps(PLAIN_IN_FRAMES, protocol=5)
        end = record_end(len(pickled) + counts[0], counts[1])
        framed = in_frames(pickled)[: -len(end)] + end
        with pytest.raises(sp.CorruptStreamError, match="counts"):
            sp.loads(stream(framed, END), safe=True)

    def test_max_size_refuses_the_record_before_its_pickle_is_all_read(self) -> None:
        with pytest.raises(sp.StreamError, match=r"exceeds max_size=9000 bytes"):
            sp.loads(PLAIN_STREAM, safe=True, max_size=9000)
        enough = len(PLAIN_STREAM)
        assert sp.loads(PLAIN_STREAM, safe=True, max_size=enough) == PLAIN_IN_FRAMES


class TestMalformedStreamHeader:
    def test_wrong_magic_raises_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        data = stream_header(magic=b"\x89SPK\r\n\x1a\r") + ONE[16:]
        with pytest.raises(sp.CorruptStreamError, match="bad magic"):
            read(data)

    @pytest.mark.parametrize("version", [0, 2, 0xFFFF])
    def test_unsupported_version_raises_corrupt_stream_error(
        self, version: int, read: Callable[[bytes], Any]
    ) -> None:
        data = stream_header(version=version) + ONE[16:]
        with pytest.raises(sp.CorruptStreamError,
                           match=f"unsupported format version {version} at offset 0"):
            read(data)

    def test_unknown_stream_flags_raise_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        data = stream_header(flags=0x8000) + ONE[16:]
        with pytest.raises(sp.CorruptStreamError, match="unknown stream flags 0x8000"):
            read(data)

    def test_stream_header_check_mismatch_raises_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        data = ONE[:12] + bytes(4) + ONE[16:]
        with pytest.raises(sp.CorruptStreamError, match="stream header check mismatch"):
            read(data)


class TestMalformedFrameHeaders:
    """Header fields a version-1 reader does not know, under a valid check.
    (Kind 4 is CHUNK and codec 1 ZSTD: see the tests after these.)"""

    @pytest.mark.parametrize("kind", [0, 8, 0x7F, 0xFF])
    def test_unknown_frame_kind_raises_corrupt_stream_error(
        self, kind: int, read: Callable[[bytes], Any]
    ) -> None:
        data = stream(raw_header(kind), record(LIST_PICKLE), END)
        with pytest.raises(sp.CorruptStreamError,
                           match=f"unknown frame kind {kind} at offset 16"):
            read(data)

    @pytest.mark.parametrize("codec", [2, 3, 0xFF])
    def test_unknown_codec_raises_corrupt_stream_error(
        self, codec: int, read: Callable[[bytes], Any]
    ) -> None:
        header = raw_header(Kind.PICKLE, codec=codec, stored=len(LIST_PICKLE),
                            raw=len(LIST_PICKLE))
        data = stream(header, LIST_PICKLE, record_end(len(LIST_PICKLE)), END)
        with pytest.raises(sp.CorruptStreamError,
                           match=f"unknown codec {codec} in PICKLE frame at offset 16"):
            read(data)

    @pytest.mark.parametrize(
        "kind", [Kind.RECORD_END, Kind.PAD, Kind.INDEX, Kind.END]
    )
    def test_codec_zstd_where_the_kind_must_be_none_raises_corrupt_stream_error(
        self, kind: Kind, read: Callable[[bytes], Any]
    ) -> None:
        """Only PICKLE, BUFFER and CHUNK frames may be compressed."""
        flags = Flag.CHECKED if kind is Kind.INDEX else Flag(0)
        header = raw_header(kind, codec=fmt.Codec.ZSTD, flags=flags)
        data = stream(header, record(LIST_PICKLE), END)
        message = f"codec ZSTD not allowed in {kind.name} frame at offset 16"
        with pytest.raises(sp.CorruptStreamError, match=message):
            read(data)

    def test_chunk_frame_outside_a_compressed_buffer_raises_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        chunk = raw_header(Kind.CHUNK, stored=len(OOB_DATA), raw=len(OOB_DATA))
        data = stream(chunk, OOB_DATA, record(LIST_PICKLE), END)
        with pytest.raises(sp.CorruptStreamError,
                           match="CHUNK frame at offset 16 inside record 0"):
            read(data)

    def test_pickle_frame_of_codec_zstd_holding_no_zstd_raises_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        header = raw_header(Kind.PICKLE, codec=fmt.Codec.ZSTD, flags=Flag.CHECKED,
                            stored=len(LIST_PICKLE), raw=len(LIST_PICKLE),
                            payload_check=fmt.checksum(LIST_PICKLE))
        data = stream(header, LIST_PICKLE, record_end(len(LIST_PICKLE)), END)
        with pytest.raises(sp.CorruptStreamError,
                           match="cannot decompress PICKLE frame at offset 16"):
            read(data)

    @pytest.mark.parametrize("flags", [0x02, 0x03, 0x04, 0x80, 0xFF])
    def test_flag_bits_a_pickle_frame_may_not_carry_raise_corrupt_stream_error(
        self, flags: int, read: Callable[[bytes], Any]
    ) -> None:
        """PICKLE may carry CHECKED only: READONLY is for BUFFER frames."""
        header = raw_header(Kind.PICKLE, flags=flags, stored=len(LIST_PICKLE),
                            raw=len(LIST_PICKLE), payload_check=fmt.checksum(LIST_PICKLE))
        data = stream(header, LIST_PICKLE, record_end(len(LIST_PICKLE)), END)
        message = f"flag bits {flags:#x} not allowed in PICKLE frame at offset 16"
        with pytest.raises(sp.CorruptStreamError, match=message):
            read(data)

    #: (kind, flags, the other header fields) for flags the kind may not carry,
    #: with sizes the kind allows: the flags alone are wrong.
    FLAG_CASES = {
        "buffer-0x04": (Kind.BUFFER, 0x05, {"param": FRAME_SIZE}),
        "buffer-0x80": (Kind.BUFFER, 0x80, {"param": FRAME_SIZE}),
        "record-end-checked": (Kind.RECORD_END, 0x01, {"raw": 4}),
        "record-end-readonly": (Kind.RECORD_END, 0x02, {"raw": 4}),
        "pad-checked": (Kind.PAD, 0x01, {}),
        "index-without-checked": (Kind.INDEX, 0x00, {"stored": 16, "raw": 16}),
        "index-readonly": (Kind.INDEX, 0x03, {"stored": 16, "raw": 16}),
        "end-checked": (Kind.END, 0x01, {}),
        "end-0x40": (Kind.END, 0x40, {}),
    }

    @pytest.mark.parametrize("case", list(FLAG_CASES))
    def test_flag_bits_each_kind_may_not_carry_raise_corrupt_stream_error(
        self, case: str, read: Callable[[bytes], Any]
    ) -> None:
        """BUFFER: CHECKED and READONLY; INDEX: CHECKED, which it must carry;
        RECORD_END, PAD and END: none."""
        kind, flags, fields = self.FLAG_CASES[case]
        data = stream(raw_header(kind, flags=flags, **fields), record(LIST_PICKLE), END)
        message = f"flag bits {flags:#x} not allowed in {kind.name} frame at offset 16"
        with pytest.raises(sp.CorruptStreamError, match=message):
            read(data)

    @pytest.mark.parametrize("kind", [Kind.RECORD_END, Kind.PAD, Kind.END])
    def test_nonzero_payload_check_where_the_table_says_0_raises_corrupt_stream_error(
        self, kind: Kind, read: Callable[[bytes], Any]
    ) -> None:
        header = raw_header(kind, payload_check=fmt.checksum(b""))
        data = stream(header, record(LIST_PICKLE), END)
        message = f"nonzero payload check in {kind.name} frame at offset 16"
        with pytest.raises(sp.CorruptStreamError, match=message):
            read(data)

    @pytest.mark.parametrize("reserved", [1, 0x80])
    def test_nonzero_reserved_byte_raises_corrupt_stream_error_naming_it(
        self, reserved: int, read: Callable[[bytes], Any]
    ) -> None:
        header = raw_header(Kind.PICKLE, reserved=reserved, flags=Flag.CHECKED,
                            stored=len(LIST_PICKLE), raw=len(LIST_PICKLE),
                            payload_check=fmt.checksum(LIST_PICKLE))
        data = stream(header, LIST_PICKLE, record_end(len(LIST_PICKLE)), END)
        message = f"nonzero reserved byte {reserved:#x} in PICKLE frame at offset 16"
        with pytest.raises(sp.CorruptStreamError, match=message):
            read(data)

    def test_frame_header_check_mismatch_raises_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        frames = record(LIST_PICKLE)
        data = stream(frames[:28] + bytes(4) + frames[32:], END)
        with pytest.raises(sp.CorruptStreamError, match=HEADER_CHECK_AT_16):
            read(data)


class TestMalformedRecords:
    """Frames that are each valid but do not make a valid record."""

    def test_payload_check_mismatch_raises_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        frames = record(LIST_PICKLE, split=MID_READ)
        second = HEADER_SIZE + MID_READ  # the second PICKLE frame
        damaged = bytearray(frames)
        damaged[second + HEADER_SIZE + 5] ^= 0x10
        with pytest.raises(sp.CorruptStreamError,
                           match=f"payload check mismatch in PICKLE frame at offset "
                                 f"{16 + second}"):
            read(stream(bytes(damaged), END))

    @pytest.mark.parametrize("pickle_bytes, buffers", [(1, 0), (10**6, 0), (None, 1)])
    def test_record_end_whose_counts_disagree_raises_corrupt_stream_error(
        self, pickle_bytes: int | None, buffers: int, read: Callable[[bytes], Any]
    ) -> None:
        n = len(LIST_PICKLE) if pickle_bytes is None else pickle_bytes
        data = stream(pickle_frame(LIST_PICKLE), record_end(n, buffers), END)
        with pytest.raises(sp.CorruptStreamError,
                           match=f"RECORD_END frame at offset \\d+ counts {n} pickle bytes "
                                 f"and {buffers} buffers"):
            read(data)

    @pytest.mark.parametrize("pickle_bytes, buffers", [(1, 0), (None, 1)])
    def test_record_end_whose_counts_disagree_is_refused_before_the_pickle_runs(
        self, pickle_bytes: int | None, buffers: int, read: Callable[[bytes], Any]
    ) -> None:
        """A record of one PICKLE frame is checked against its RECORD_END
        before it is unpickled: its REDUCEs (here, a call that records itself)
        never run, and the error is the stream's, not the pickle's."""
        pickled = pickle.dumps(_Reduced(), protocol=5)
        n = len(pickled) if pickle_bytes is None else pickle_bytes
        REDUCED_CALLS.clear()
        data = stream(pickle_frame(pickled), record_end(n, buffers), END)
        with pytest.raises(sp.CorruptStreamError, match=f"counts {n} pickle bytes"):
            read(data)
        assert REDUCED_CALLS == []

    @pytest.mark.parametrize("source", ["bytesio", "nonseekable", "socket"])
    def test_a_later_record_whose_counts_disagree_is_refused_before_it_runs(
        self, source: str
    ) -> None:
        """The same for a record after the first (read without decoding its
        first header into a FrameHeader)."""
        pickled = pickle.dumps(_Reduced(), protocol=5)
        REDUCED_CALLS.clear()
        data = stream(record(b"\x80\x05N."), pickle_frame(pickled), record_end(0), END)
        a, b = socket.socketpair()
        try:
            a.sendall(data)
            a.close()
            files = {"bytesio": io.BytesIO(data), "nonseekable": NonSeekable(data)}
            u = sp.Unpickler(files.get(source, b))
            assert u.load() is None
            with pytest.raises(sp.CorruptStreamError, match="counts 0 pickle bytes"):
                u.load()
        finally:
            b.close()
        assert REDUCED_CALLS == []

    def test_a_later_record_cut_in_a_file_is_refused_before_it_is_read(self) -> None:
        """Where the input's size is known, a PICKLE frame longer than what
        remains is refused from its header, for later records as for the first."""
        data = stream(record(b"\x80\x05N."), record(LIST_PICKLE))
        cut = data[: len(data) - 40]
        u = sp.Unpickler(io.BytesIO(cut))
        assert u.load() is None
        with pytest.raises(sp.TruncatedStreamError, match="claims .* but only .* remain"):
            u.load()

    @pytest.mark.parametrize("kind", [Kind.END, Kind.INDEX])
    def test_end_or_index_frame_inside_a_record_raises_corrupt_stream_error(
        self, kind: Kind, read: Callable[[bytes], Any]
    ) -> None:
        first = pickle_frame(LIST_PICKLE[:MID_READ])
        if kind is Kind.END:
            intruder = END
        else:
            body = fmt.Index((), ()).encode()
            intruder = fmt.frame(
                Kind.INDEX, stored_size=len(body), raw_size=len(body),
                flags=Flag.CHECKED, payload_check=fmt.checksum(body),
            ) + body
        at = 16 + len(first)
        data = stream(first, intruder, pickle_frame(LIST_PICKLE[MID_READ:]),
                      record_end(len(LIST_PICKLE)), END)
        with pytest.raises(sp.CorruptStreamError,
                           match=f"{kind.name} frame at offset {at} inside record 0"):
            read(data)

    def test_nonzero_padding_raises_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        """The PAD frame sits between two PICKLE frames, in mid-read."""
        first = pickle_frame(OOB_PICKLE[:MID_READ])
        data = stream(first, pad_frame(bytes(39) + b"\x01"), buffer_frame(OOB_DATA),
                      pickle_frame(OOB_PICKLE[MID_READ:]), record_end(len(OOB_PICKLE), 1),
                      END)
        message = f"nonzero padding in PAD frame at offset {16 + len(first)}"
        with pytest.raises(sp.CorruptStreamError, match=message):
            read(data)

    @pytest.mark.parametrize("after", [b"N.", b"\x00", b"." * 5000])
    def test_pickle_bytes_after_stop_raise_corrupt_stream_error(
        self, after: bytes, read: Callable[[bytes], Any]
    ) -> None:
        pickled = LIST_PICKLE + after
        with pytest.raises(sp.CorruptStreamError, match=AFTER_STOP):
            read(stream(record(pickled), END))

    def test_pickle_bytes_after_stop_inside_a_pickle_frame_opcode_are_refused(
        self, read: Callable[[bytes], Any]
    ) -> None:
        """A protocol-5 FRAME opcode makes the C unpickler take the frame's bytes
        at once; STOP inside it must still be the last byte of the record."""
        body = b"K\x01." + b"GARBAGE"
        pickled = b"\x80\x05\x95" + len(body).to_bytes(8, "little") + body
        with pytest.raises(sp.CorruptStreamError, match=AFTER_STOP):
            read(stream(record(pickled), END))

    def test_pickle_bytes_after_stop_in_a_later_frame_raise_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        data = stream(pickle_frame(LIST_PICKLE), pickle_frame(b"N."),
                      record_end(len(LIST_PICKLE) + 2), END)
        with pytest.raises(sp.CorruptStreamError, match=AFTER_STOP):
            read(data)

    def test_next_buffer_with_no_buffer_frame_raises_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        assert pickle.NEXT_BUFFER in OOB_PICKLE
        data = stream(record(OOB_PICKLE), END)
        with pytest.raises(sp.CorruptStreamError, match="out-of-band buffer"):
            read(data)

    def test_buffer_frame_the_pickle_never_uses_raises_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        data = stream(buffer_frame(OOB_DATA), pickle_frame(LIST_PICKLE),
                      record_end(len(LIST_PICKLE), 1), END)
        with pytest.raises(sp.CorruptStreamError, match="1 unused buffers"):
            read(data)

    @pytest.mark.parametrize("name", [n for n in ONE_RECORD_READERS if n != "load_mmap"])
    def test_buffer_check_table_mismatch_raises_corrupt_stream_error(
        self, name: str, tmp_path: Path
    ) -> None:
        """Not under mmap, which does not verify buffers (see TestBitFlips)."""
        first = pickle_frame(OOB_PICKLE[:MID_READ])
        buf = bytearray(buffer_frame(OOB_DATA))
        buf[-1] ^= 0x01
        data = stream(first, bytes(buf), pickle_frame(OOB_PICKLE[MID_READ:]),
                      record_end(len(OOB_PICKLE), 1), END)
        with pytest.raises(sp.CorruptStreamError,
                           match=f"check mismatch in chunk 0 .* BUFFER frame at offset "
                                 f"{16 + len(first)}"):
            ONE_RECORD_READERS[name](data, tmp_path / "s.spk")

    def test_buffer_check_table_mismatch_under_mmap_loads_the_data_unverified(
        self, tmp_path: Path
    ) -> None:
        """The documented mmap trade-off, pinned so a change to it is seen."""
        buf = bytearray(buffer_frame(OOB_DATA))
        buf[-1] ^= 0x01
        data = stream(bytes(buf), pickle_frame(OOB_PICKLE),
                      record_end(len(OOB_PICKLE), 1), END)
        assert is_oob_obj(load_mmap(data, tmp_path / "s.spk"))

    @pytest.mark.parametrize("second", [np.ones(200), np.ones(160)],
                             ids=["unequal-size", "equal-size"])
    def test_buffer_frames_swapped_between_arrays_raise_corrupt_stream_error(
        self, second: np.ndarray, read: Callable[[bytes], Any]
    ) -> None:
        """Every frame is valid, but each array would get the other's buffer.
        A BUFFER's payload_check binds it to its ordinal in the record, so the
        swap is caught even between buffers of equal size."""
        data = sp.dumps({"a": np.arange(160, dtype=np.int64), "b": second})
        frames = walk(data)
        parts = [data[f.offset : f.end] for f in frames]
        first, other = (i for i, f in enumerate(frames) if f.header.kind is Kind.BUFFER)
        parts[first], parts[other] = parts[other], parts[first]
        swapped = data[: fmt.STREAM_HEADER.size] + b"".join(parts)
        at = frames[first].offset
        message = f"BUFFER frame at offset {at} is not buffer 0 of its record"
        with pytest.raises(sp.CorruptStreamError, match=message):
            read(swapped)

    @pytest.mark.parametrize("checked", [True, False], ids=["checked", "unchecked"])
    @pytest.mark.parametrize("ordinals", [(1, 0), (0, 0), (1, 1), (0, 2)])
    def test_buffer_frame_out_of_its_place_raises_corrupt_stream_error(
        self, ordinals: tuple[int, int], checked: bool, read: Callable[[bytes], Any]
    ) -> None:
        """Hand-made frames that are each valid: a buffer carries the ordinal
        of another (swapped, dropped, spliced in), with or without CHECKED."""
        first = buffer_frame(OOB_DATA, ordinal=ordinals[0], checked=checked)
        second = buffer_frame(OOB_OTHER, ordinal=ordinals[1], checked=checked)
        bad, at = (0, 16) if ordinals[0] != 0 else (1, 16 + len(first))
        message = f"BUFFER frame at offset {at} is not buffer {bad} of its record"
        with pytest.raises(sp.CorruptStreamError, match=message):
            read(two_buffer_stream(first, second))

    def test_unchecked_buffer_without_its_ordinal_check_raises_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        """payload_check is written whether or not CHECKED is set; 0 is wrong."""
        header = fmt.frame(Kind.BUFFER, stored_size=len(OOB_DATA), raw_size=len(OOB_DATA),
                           param=FRAME_SIZE)
        data = stream(header, OOB_DATA, pickle_frame(OOB_PICKLE),
                      record_end(len(OOB_PICKLE), 1), END)
        with pytest.raises(sp.CorruptStreamError,
                           match="BUFFER frame at offset 16 is not buffer 0 of its record"):
            read(data)

    @pytest.mark.parametrize(
        "pickled",
        [b"\x80\x05garbage", b"\x80\x05", b"", b"\x80\x09N.", b"\x80\x05N\x85R.",
         b"\x80\x05(.", b"\x80\x05h\x00."],
        ids=["garbage", "no-stop", "empty", "protocol-9", "call-none", "mark-stop",
             "memo-miss"],
    )
    def test_malformed_pickle_inside_valid_frames_raises_corrupt_stream_error(
        self, pickled: bytes, read: Callable[[bytes], Any]
    ) -> None:
        with pytest.raises(sp.CorruptStreamError, match="record 0 is not a valid pickle"):
            read(stream(record(pickled), END))

    @pytest.mark.parametrize("points_to", ["zero", "before", "after", "stream-start"])
    def test_end_not_pointing_to_the_index_before_it_raises_corrupt_stream_error(
        self, points_to: str, read: Callable[[bytes], Any]
    ) -> None:
        (index,) = frames_of(ONE, Kind.INDEX)
        at = {"zero": 0, "before": index.offset - 1, "after": index.offset + 1,
              "stream-start": 16}[points_to]
        data = ONE[:index.end] + fmt.frame(Kind.END, raw_size=at)
        message = (f"END frame at offset {index.end} points to an index at {at}, "
                   f"not {index.offset}")
        with pytest.raises(sp.CorruptStreamError, match=message):
            read(data)

    @pytest.mark.parametrize("at", [16, 2**40])
    def test_end_pointing_to_an_index_that_is_not_there_raises_corrupt_stream_error(
        self, at: int, read: Callable[[bytes], Any]
    ) -> None:
        first = record(LIST_PICKLE)
        data = stream(first, fmt.frame(Kind.END, raw_size=at))
        message = f"END frame at offset {16 + len(first)} points to an index at {at}, not 0"
        with pytest.raises(sp.CorruptStreamError, match=message):
            read(data)

    def test_unpickler_yields_every_record_before_an_end_that_points_wrong(self) -> None:
        (index,) = frames_of(MULTI, Kind.INDEX)
        data = MULTI[: index.end] + fmt.frame(Kind.END, raw_size=index.offset + 32)
        got, error = iterate(io.BytesIO(data))
        assert same(got, MULTI_RECORDS)
        assert type(error) is sp.CorruptStreamError and "points to an index" in str(error)

    def test_index_followed_by_something_other_than_end_raises_corrupt_stream_error(
        self, read: Callable[[bytes], Any]
    ) -> None:
        (index,) = frames_of(ONE, Kind.INDEX)
        data = ONE[: index.end] + record_end(0)
        with pytest.raises(sp.CorruptStreamError,
                           match=f"RECORD_END frame at offset {index.end} where END was "
                                 "expected"):
            read(data)


class TestErrorsAtPickleOpcodeBoundaries:
    """The C unpickler turns an UnpicklingError raised while it reads an
    opcode byte into EOFError("Ran out of input"), and StreamError is an
    UnpicklingError. Frames the reader meets at that moment (the PAD and BUFFER
    frames a writer puts first in every record, the first PICKLE frame) must
    still report their own error, with its class and offset."""

    def test_truncation_inside_a_leading_buffer_on_a_pipe_is_truncation(self) -> None:
        (buffer,) = frames_of(ONE, Kind.BUFFER)[:1]
        cut = buffer.buffer_data.start + 100
        with pytest.raises(sp.TruncatedStreamError, match=f"offset {cut}"):
            sp.load(NonSeekable(ONE[:cut]))

    def test_nonzero_leading_padding_is_reported_as_padding(self) -> None:
        (pad, *_) = frames_of(ONE, Kind.PAD)
        damaged = bytearray(ONE)
        damaged[pad.payload.start] = 1
        with pytest.raises(sp.CorruptStreamError,
                           match=f"nonzero padding in PAD frame at offset {pad.offset}"):
            sp.loads(bytes(damaged))

    def test_damaged_leading_buffer_is_reported_as_a_check_mismatch(self) -> None:
        (buffer, *_) = frames_of(ONE, Kind.BUFFER)
        with pytest.raises(sp.CorruptStreamError,
                           match=f"check mismatch in chunk 0 .* BUFFER frame at offset "
                                 f"{buffer.offset}"):
            sp.loads(flip(ONE, buffer.buffer_data.start + 7, 3))

    def test_end_frame_at_an_opcode_boundary_is_reported_as_such(self) -> None:
        """A PICKLE frame holding the first opcodes only, then END."""
        pickled = pickle.dumps(None, protocol=2)  # PROTO 2, NONE, STOP: no FRAME
        first = pickle_frame(pickled[:2])
        with pytest.raises(sp.CorruptStreamError,
                           match=f"END frame at offset {16 + len(first)} inside record 0"):
            sp.loads(stream(first, END))


# ---------------------------------------------------------------------------
# 6. Random mutations


def _small_stream() -> tuple[Any, bytes]:
    obj = {"a": np.arange(150, dtype=np.int64), "b": [b"x" * 300, "y", (1, 2.5)]}
    return obj, sp.dumps(obj, frame_size=FRAME_SIZE)


SMALL_OBJ, SMALL = _small_stream()

position = st.integers(min_value=0, max_value=1 << 20)
mutation = st.one_of(
    st.tuples(st.just("replace"), position, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("delete"), position, st.integers(min_value=1, max_value=64)),
    st.tuples(st.just("duplicate"), position, st.integers(min_value=1, max_value=64)),
    st.tuples(st.just("truncate"), position, st.just(0)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, Any]]) -> bytes:
    out = bytearray(data)
    for op, pos, arg in mutations:
        pos %= len(out) + 1
        if op == "replace":
            out[pos : pos + len(arg)] = arg
        elif op == "insert":
            out[pos:pos] = arg
        elif op == "delete":
            del out[pos : pos + arg]
        elif op == "duplicate":
            out[pos:pos] = out[pos : pos + arg]
        else:
            del out[pos:]
    return bytes(out)


MUTATION_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TestRandomMutations:
    """Whatever is done to the bytes, only StreamError or EOFError escapes,
    and whatever loads equals what was written."""

    @MUTATION_SETTINGS
    @given(st.lists(mutation, min_size=1, max_size=4))
    def test_loads_of_a_mutated_stream_raises_stream_error_or_loads_the_original(
        self, mutations: list[tuple[str, int, Any]]
    ) -> None:
        data = mutate(SMALL, mutations)
        try:
            obj = sp.loads(data)
        except (sp.StreamError, EOFError):
            return
        assert same(obj, SMALL_OBJ)

    @MUTATION_SETTINGS
    @given(st.lists(mutation, min_size=1, max_size=3))
    def test_unpickler_of_a_mutated_stream_yields_a_prefix_of_the_records(
        self, mutations: list[tuple[str, int, Any]]
    ) -> None:
        data = mutate(MULTI, mutations)
        got, error = iterate(io.BytesIO(data))
        assert error is None or isinstance(error, sp.StreamError), describe(error)
        assert same(got, MULTI_RECORDS[: len(got)])
        if error is None and data:  # iteration over an empty source yields nothing
            assert len(got) == len(MULTI_RECORDS)


# ---------------------------------------------------------------------------
# 7. More than one record where one is expected


class TestMoreThanOneRecord:
    @pytest.mark.parametrize("name", list(ONE_RECORD_READERS)[:5])
    def test_load_of_a_two_record_stream_raises_stream_error(
        self, name: str, tmp_path: Path
    ) -> None:
        data = _write_records([ONE_OBJ, "second"])
        with pytest.raises(sp.StreamError, match="more than one record"):
            ONE_RECORD_READERS[name](data, tmp_path / "two.spk")

    def test_unpickler_reads_both_records_of_the_same_stream(self) -> None:
        got, error = iterate(io.BytesIO(_write_records([ONE_OBJ, "second"])))
        assert error is None
        assert same(got, [ONE_OBJ, "second"])


# ---------------------------------------------------------------------------
# 8. Compressed streams: the same sweeps through CHUNK frames


def _zstd_stream() -> tuple[Any, bytes]:
    rng = np.random.default_rng(3)
    obj = {
        "smooth": np.cumsum(rng.standard_normal(1200)),  # shuffled, compressed
        "noise": rng.integers(0, 256, 3000, dtype=np.uint8),  # stored raw, aligned
        "mixed": np.concatenate(  # a compressed chunk, then a raw one
            [np.zeros(FRAME_SIZE, np.uint8), rng.integers(0, 256, FRAME_SIZE, np.uint8)]
        ),
        "text": "streampickle " * 400,  # a compressed PICKLE frame
    }
    return obj, sp.dumps(obj, compress="zstd", frame_size=FRAME_SIZE, threads=0)


ZSTD_OBJ, ZSTD_ONE = _zstd_stream()


def sampled_offsets(data: bytes, stride: int) -> list[int]:
    """Every offset of the stream header and of each frame header, and every
    ``stride``-th offset of payloads."""
    heads = set(range(fmt.STREAM_HEADER.size))
    for f in walk(data):
        heads.update(range(f.offset, f.offset + HEADER_SIZE))
    return sorted(heads | set(range(0, len(data), stride)))


class TestCompressedStream:
    """A stream with every storage the writer chooses: compressed PICKLE frames,
    BUFFERs of CHUNK frames (zstd, shuffled zstd, raw) and a raw BUFFER, cut
    and flipped at every offset. Readers run serially (``threads=0``: a pool
    per load would cost ~4 ms each) except in the sampled sweep of the pool."""

    READERS: dict[str, Callable[[bytes], Any]] = {
        "bytesio": lambda data: sp.load(io.BytesIO(data), threads=0),
        "nonseekable": lambda data: sp.load(NonSeekable(data), threads=0),
    }

    def test_the_sample_holds_every_kind_of_storage(self) -> None:
        shapes = {(f.header.kind, f.header.codec, Flag.SHUFFLE in f.header.flags)
                  for f in walk(ZSTD_ONE)}
        assert {(Kind.PICKLE, fmt.Codec.ZSTD, False), (Kind.BUFFER, fmt.Codec.ZSTD, False),
                (Kind.BUFFER, fmt.Codec.NONE, False), (Kind.CHUNK, fmt.Codec.ZSTD, True),
                (Kind.CHUNK, fmt.Codec.ZSTD, False), (Kind.CHUNK, fmt.Codec.NONE, False),
                } <= shapes
        assert same(sp.loads(ZSTD_ONE), ZSTD_OBJ)

    @pytest.mark.parametrize("reader", list(READERS))
    def test_every_cut_raises_truncated_stream_error(self, reader: str) -> None:
        problems = []
        for cut in range(1, len(ZSTD_ONE)):
            try:
                self.READERS[reader](ZSTD_ONE[:cut])
                error: Exception | None = None
            except Exception as exc:
                error = exc
            if type(error) is not sp.TruncatedStreamError or "offset" not in str(error):
                problems.append((region(ZSTD_ONE, cut), f"cut {cut}: {describe(error)}"))
        assert not problems, summarize(problems, len(ZSTD_ONE), "cuts")

    @pytest.mark.parametrize("threads", [0, 2])
    def test_every_flip_raises_corrupt_stream_error(self, threads: int) -> None:
        """Outside the INDEX payload, which a sequential reader skips. With a
        pool (threads=2), what it runs is swept: CHUNK frames, every header
        byte and every 7th payload byte of them."""
        skipped = index_payload(ZSTD_ONE)
        offsets = list(range(len(ZSTD_ONE)))
        if threads:
            offsets = sampled_offsets(ZSTD_ONE, 7)
            chunks = [range(f.offset, f.end) for f in walk(ZSTD_ONE)
                      if f.header.kind is Kind.CHUNK]
            offsets = [o for o in offsets if any(o in c for c in chunks)]
        problems = []
        for offset in offsets:
            damaged = flip(ZSTD_ONE, offset, offset % 8)
            try:
                value = sp.load(io.BytesIO(damaged), threads=threads)
                error: Exception | None = None
            except Exception as exc:
                value, error = None, exc
            if offset in skipped:
                ok = error is None and same(value, ZSTD_OBJ)
            else:
                ok = type(error) is sp.CorruptStreamError and "offset" in str(error)
            if not ok:
                what = describe(error) if error else "loaded " + (
                    "the original" if same(value, ZSTD_OBJ) else "ANOTHER object")
                problems.append((region(ZSTD_ONE, offset), f"byte {offset}: {what}"))
        assert not problems, summarize(problems, len(offsets), "bit flips")
