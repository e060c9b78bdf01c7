"""The C walk of pickle opcodes (streampickle/_pickle_scan.c) and the reader's
fast path for small records of plain data that it allows.

The walk is held to a reference written here from ``pickletools``' opcode
table (not from the C table), on pickles of plain data at every protocol, on
those pickles damaged, and on garbage; the reader must give the same objects
and the same errors with and without it.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import shutil
import sysconfig
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streampickle as sp
from streampickle import format as fmt
from streampickle import unpickler

try:
    from streampickle._pickle_scan import plain_pickle_end
except ImportError:  # not built (no C compiler at install): the walk's own tests skip

    def plain_pickle_end(data: bytes | bytearray | memoryview, /) -> int:
        pytest.skip("streampickle._pickle_scan is not built")


#: Opcodes that reach code, a hook or an out-of-band buffer: the walk refuses them.
REACHES_CODE = {
    "GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "REDUCE",
    "BUILD", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID", "NEXT_BUFFER",
    "READONLY_BUFFER",
}  # fmt: skip
OPCODES = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}
LENGTH_WIDTH = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}


def reference_end(data: bytes) -> int:
    """What ``plain_pickle_end`` must answer, from pickletools' argument kinds."""
    i = 0
    while i < len(data):
        op = OPCODES.get(data[i])
        i += 1
        if op is None or op.name in REACHES_CODE:
            return -1
        if op.name == "STOP":
            return i
        n = op.arg.n if op.arg is not None else 0
        if n == pickletools.UP_TO_NEWLINE:
            newline = data.find(b"\n", i)
            if newline < 0:
                return -1
            i = newline + 1
        elif n >= 0:
            if len(data) - i < n:
                return -1
            if op.name == "FRAME" and int.from_bytes(data[i : i + n], "little") > len(
                data
            ) - (i + n):
                return -1  # CPython's unpickler takes a frame's bytes at once
            i += n
        else:
            width, signed = LENGTH_WIDTH[n]
            if len(data) - i < width:
                return -1
            size = int.from_bytes(data[i : i + width], "little", signed=signed)
            i += width
            if not 0 <= size <= len(data) - i:
                return -1
            i += size
    return -1


hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
plain = st.recursive(
    hashable | st.floats() | st.binary(min_size=200, max_size=600).map(bytearray)
    | st.integers(min_value=-(2**600), max_value=2**600),
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner, inner)
    | st.dictionaries(hashable, inner, max_size=4) | st.sets(hashable, max_size=4),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(plain, st.integers(0, 5))
def test_the_walk_ends_where_pickletools_does_on_pickles_of_plain_data(
    obj: Any, protocol: int
) -> None:
    pickled = pickle.dumps(obj, protocol=protocol)
    assert plain_pickle_end(pickled) == reference_end(pickled)
    if protocol == 5:  # what our writer makes of plain data: all of it, STOP last
        assert plain_pickle_end(pickled) == len(pickled)


@settings(max_examples=400, deadline=None)
@given(plain, st.data())
def test_the_walk_agrees_with_pickletools_on_damaged_pickles(obj: Any, data: Any) -> None:
    pickled = bytearray(pickle.dumps(obj, protocol=data.draw(st.integers(0, 5))))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(pickled)))
        edit = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if edit == "flip" and at < len(pickled):
            pickled[at] ^= 1 << data.draw(st.integers(0, 7))
        elif edit == "cut":
            del pickled[at:]
        elif edit == "insert":
            pickled[at:at] = data.draw(st.binary(min_size=1, max_size=9))
        elif at < len(pickled):
            del pickled[at]
    got = plain_pickle_end(bytes(pickled))
    assert got == reference_end(bytes(pickled))
    assert got == plain_pickle_end(pickled) == plain_pickle_end(memoryview(pickled))


def shortest_argument(op: pickletools.OpcodeInfo) -> bytes:
    """A well-formed argument of ``op``: zeros, an empty length, or a line."""
    n = op.arg.n if op.arg is not None else 0
    if n == pickletools.UP_TO_NEWLINE:
        return b"1\n"
    return bytes(n if n >= 0 else LENGTH_WIDTH[n][0])


@pytest.mark.parametrize("code", range(256))
def test_the_walk_takes_or_refuses_each_opcode_as_pickletools_says(code: int) -> None:
    op = OPCODES.get(code)
    pickled = bytes([code]) + (shortest_argument(op) if op else b"") + b"."
    assert plain_pickle_end(pickled) == reference_end(pickled)
    expected = -1 if op is None or op.name in REACHES_CODE else len(pickled)
    if op is not None and op.name == "STOP":
        expected = 1
    assert plain_pickle_end(pickled) == expected


def test_the_walk_refuses_a_negative_length_past_two_gib_of_input() -> None:
    """BINSTRING's and LONG4's lengths are signed: ``T`` of 2**31 bytes is an
    error to CPython's unpickler even where that many bytes follow. (Pages of
    zeros that are never touched: nothing is allocated for real.)"""
    np = pytest.importorskip("numpy")
    size = 2**31
    try:
        data = np.zeros(5 + size + 1, dtype=np.uint8)
    except MemoryError:  # no overcommit: the pages would be reserved for real
        pytest.skip("cannot map 2 GiB of zeros here")
    data[:5] = list(b"T\x00\x00\x00\x80")
    data[-1] = ord(".")
    assert plain_pickle_end(data) == -1
    data[4] = 0x7F  # 2**31 - 2**24: a length that fits, then STOP after it
    data[5 + 0x7F000000] = ord(".")
    assert plain_pickle_end(data) == 5 + 0x7F000000 + 1


opcode_soup = st.lists(
    st.sampled_from(sorted(OPCODES)).map(lambda b: bytes([b])) | st.binary(max_size=9),
    max_size=40,
).map(b"".join)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300) | opcode_soup)
def test_the_walk_agrees_with_pickletools_on_garbage(data: bytes) -> None:
    assert plain_pickle_end(data) == reference_end(data)


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


@pytest.mark.parametrize(
    "obj",
    [Point(1), [1, Point(2)], complex(1, 2), {"f": len}, pickle.PickleBuffer(b"x" * 9)],
    ids=["instance", "nested-instance", "reduce", "function", "buffer"],
)
def test_the_walk_refuses_pickles_that_reach_code_or_buffers(obj: Any) -> None:
    pickled = pickle.dumps(obj, protocol=5, buffer_callback=lambda b: False)
    assert plain_pickle_end(pickled) == -1


@pytest.mark.parametrize(
    "pickled",
    [
        b"\x8d" + (1 << 63).to_bytes(8, "little") + b".",  # BINUNICODE8 of 2**63 bytes
        b"\x8b\xff\xff\xff\xff.",  # LONG4 of a negative length
        b"T\x00\x00\x00\x80.",  # BINSTRING of -2**31 bytes
        b"X\xff\xff\xff\xffab.",  # BINUNICODE past the end
        b"\x95" + (10).to_bytes(8, "little") + b"N.",  # FRAME longer than the rest
        b"\x95" + (2**64 - 1).to_bytes(8, "little") + b"N.",
        b"I12",  # a text argument without its newline
        b"N",  # no STOP
        b"",
    ],
)
def test_the_walk_refuses_hostile_and_short_lengths(pickled: bytes) -> None:
    assert plain_pickle_end(pickled) == -1 == reference_end(pickled)


def test_the_walk_ends_at_the_first_stop_even_inside_a_frame() -> None:
    body = b"K\x01.GARBAGE"
    pickled = b"\x80\x05\x95" + len(body).to_bytes(8, "little") + body
    assert plain_pickle_end(pickled) == 14 == reference_end(pickled)


def test_the_walk_refuses_what_is_not_a_buffer() -> None:
    with pytest.raises(TypeError):
        plain_pickle_end("N.")  # type: ignore[arg-type]


def test_the_extension_is_built_where_a_c_compiler_and_python_headers_are() -> None:
    """setup.py builds it as optional; CI's machines have both, so a failed
    build must not pass unnoticed (the walk's own tests would skip)."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler})")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("no Python headers")
    assert unpickler._plain_end is not None, "streampickle._pickle_scan was not built"


# ---------------------------------------------------------------------------
# The reader with and without the walk


FRAME_SIZE = fmt.MIN_FRAME_SIZE
RECORDS = [
    {"id": 7, "kind": "tick", "values": [0.5, 1.5, float("inf")], "tags": {"a", "b"}},
    [b"x" * 300, bytearray(b"y" * 10), (1, 2**80), frozenset({3})],
    Point(5),  # a global: read through an unpickler of ours either way
    "x" * 10_000,  # three PICKLE frames (FRAME_SIZE): the general way either way
]


@pytest.fixture(params=["walk", "no-walk"])
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "no-walk":
        monkeypatch.setattr(unpickler, "_plain_end", None)
    elif unpickler._plain_end is None:
        pytest.skip("streampickle._pickle_scan is not built")
    return str(request.param)


def test_records_read_the_same_with_and_without_the_walk(walk: str) -> None:
    out = io.BytesIO()
    with sp.Pickler(out, frame_size=FRAME_SIZE) as p:
        for r in RECORDS:
            p.dump(r)
    assert list(sp.Unpickler(io.BytesIO(out.getvalue()))) == RECORDS
    assert [sp.loads(sp.dumps(r)) for r in RECORDS] == RECORDS


def test_small_records_of_plain_data_skip_the_per_record_unpickler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if unpickler._plain_end is None:
        pytest.skip("streampickle._pickle_scan is not built")
    made = []

    class Counting(unpickler._RecordUnpickler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(unpickler, "_RecordUnpickler", Counting)
    out = io.BytesIO()
    with sp.Pickler(out, frame_size=FRAME_SIZE) as p:
        for r in RECORDS:
            p.dump(r)
    assert list(sp.Unpickler(io.BytesIO(out.getvalue()))) == RECORDS
    assert len(made) == 2  # the instance and the two-frame record, not the plain two


def stream_of(pickled: bytes) -> bytes:
    """A one-record stream whose record's pickle bytes are ``pickled``."""

    def write(writer: Any) -> None:
        writer.write(pickled)

    data = io.BytesIO()
    with sp.Pickler(data) as p:
        p.write_record(write)
    return data.getvalue()


@pytest.mark.parametrize(
    "pickled",
    [
        pickle.dumps([1, 2], protocol=5) + b"N.",
        b"\x80\x05\x95\x0a\x00\x00\x00\x00\x00\x00\x00K\x01.GARBAGE",
    ],
    ids=["after-the-frame", "inside-the-frame"],
)
def test_pickle_bytes_after_stop_are_refused_with_and_without_the_walk(
    walk: str, pickled: bytes
) -> None:
    with pytest.raises(sp.CorruptStreamError, match="pickle bytes after STOP in record 0"):
        sp.loads(stream_of(pickled))


def test_a_malformed_plain_pickle_is_a_corrupt_stream_with_and_without_the_walk(
    walk: str,
) -> None:
    with pytest.raises(sp.CorruptStreamError, match="record 0 is not a valid pickle"):
        sp.loads(stream_of(b"\x80\x05a."))  # APPEND on an empty stack


def test_an_error_from_the_callers_warning_hook_reaches_the_caller_as_is(
    walk: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A protocol-0 string with a bad escape makes CPython warn while a plain
    record loads: a failing ``showwarning`` is the caller's error, not ours."""

    def showwarning(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the caller's showwarning")

    monkeypatch.setattr(warnings, "showwarning", showwarning)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="the caller's showwarning"):
            sp.loads(stream_of(b"S'a\\qb'\n."))


def test_safe_mode_and_hooks_still_see_the_globals_of_small_records(walk: str) -> None:
    data = sp.dumps(Point(1))
    with pytest.raises(sp.ForbiddenGlobalError):
        sp.loads(data, safe=True)
    assert sp.loads(sp.dumps([1, "a"]), safe=True) == [1, "a"]
