"""Safe mode's C path for records whose only code is numpy's calls
(safe_calls.py): what the scan sends there, what it leaves to Python's
counting unpickler, and that both paths judge a record alike."""

from __future__ import annotations

import copyreg
import gc
import io
import pickle
import pickletools
import struct
import weakref
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streampickle as sp
from streampickle import format as fmt
from streampickle import unpickler
from streampickle._pickle_scan import check_whole
from streampickle.safe_calls import CallsUnpickler, DtypeTable

NUMBER_CODES = "?bhilqBHILQefdgFDG"


def stream_of(pickled: bytes) -> bytes:
    """A one-record stream whose record's pickle bytes are ``pickled``."""
    data = io.BytesIO()
    with sp.Pickler(data) as p:
        p.write_record(lambda writer: writer.write(pickled))
    return data.getvalue()


def pickled(obj: Any) -> bytes:
    """The pickle bytes streampickle's Pickler writes for ``obj``'s record."""
    stream = sp.dumps(obj)
    at, found = fmt.STREAM_HEADER.size, b""
    while True:
        h = fmt.decode_frame_header(stream[at : at + 32], at, None)
        if h.kind is fmt.Kind.RECORD_END:
            return found
        if h.kind is fmt.Kind.PICKLE:
            found += stream[at + 32 : at + 32 + h.stored_size]
        table = h.check_table_size() if h.kind is fmt.Kind.BUFFER else 0
        at += 32 + h.stored_size + table


def opcodes(data: bytes) -> set[str]:
    return {op.name for op, _, _ in pickletools.genops(data)}


def python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send records of calls to the counting unpickler, as before."""
    original = unpickler.Unpickler.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._calls = False

    monkeypatch.setattr(unpickler.Unpickler, "__init__", init)


def counted_c_path(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets a 1 each time the C path of calls is taken."""
    made: list[int] = []

    class Counted(CallsUnpickler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(unpickler, "CallsUnpickler", Counted)
    return made


def outcome(data: bytes) -> Any:
    try:
        return ("loaded", repr(sp.loads(data, safe=True)))
    except sp.StreamError as exc:
        return (type(exc).__name__,)


class TestWriting:
    # (numpy pickles arrays of long doubles by _reconstruct and a BUILD)
    @pytest.mark.parametrize("code", NUMBER_CODES.replace("g", "").replace("G", ""))
    @pytest.mark.parametrize("order", "<>")
    def test_dtypes_of_numbers_are_written_as_one_call(self, code: str, order: str) -> None:
        dtype = np.dtype(code).newbyteorder(order)
        obj = {"a": np.arange(4).astype(dtype), "s": dtype.type(3), "d": dtype}
        data = pickled(obj)
        assert "BUILD" not in opcodes(data)
        for safe in (False, True):
            got = sp.loads(sp.dumps(obj), safe=safe)
            assert got["a"].dtype == dtype and got["a"].dtype.str == dtype.str
            np.testing.assert_array_equal(got["a"], obj["a"])
            assert got["s"] == obj["s"] and got["s"].dtype.str == np.dtype(dtype.type).str
            assert got["d"] == dtype and got["d"].str == dtype.str

    @pytest.mark.parametrize(
        "dtype",
        [
            np.dtype([("x", "<f4"), ("y", ">i2")]),
            np.dtype("datetime64[ns]"),
            np.dtype("U5"),
            np.dtype("S3"),
            np.dtype("V8"),
            np.dtype("f8", metadata={"unit": "m"}),
        ],
        ids=str,
    )
    def test_other_dtypes_are_written_as_numpy_does(self, dtype: np.dtype[Any]) -> None:
        obj = {"a": np.zeros(3, dtype), "d": dtype}
        assert "BUILD" in opcodes(pickled(obj))
        for safe in (False, True):
            got = sp.loads(sp.dumps(obj), safe=safe)
            assert got["d"] == dtype and got["a"].dtype == dtype

    def test_a_reduction_registered_with_copyreg_later_is_used(self) -> None:
        class Later:
            pass

        out = io.BytesIO()
        p = sp.Pickler(out)
        copyreg.pickle(Later, lambda obj: (complex, (1, 2)))
        try:
            p.dump(Later())
            p.close()
        finally:
            del copyreg.dispatch_table[Later]
        assert sp.loads(out.getvalue()) == 1 + 2j

    def test_a_subclass_table_is_kept(self) -> None:
        class Own(sp.Pickler):
            dispatch_table = {type(np.dtype("f8")): lambda d: (str, ("own",))}

        out = io.BytesIO()
        with Own(out) as p:
            p.dump(np.dtype("f8"))
        assert sp.loads(out.getvalue()) == "own"

    def test_dtypes_over_a_socket_are_written_as_one_call(self) -> None:
        import socket

        a, b = socket.socketpair()
        with a, b:
            sp.dump({"s": np.float32(1), "a": np.arange(3)}, a)
            got = sp.load(b, safe=True)
        assert got["s"] == 1 and list(got["a"]) == [0, 1, 2]


class TestScan:
    @pytest.mark.parametrize(
        "obj",
        [
            {"a": np.arange(10.0), "b": np.ones((2, 3), "f4", order="F")},
            [np.float64(1.5), np.int8(-3), np.complex64(1j)],
            {"d": np.dtype("i4"), "n": 7, "x": [np.bool_(True)] * 3},
        ],
    )
    def test_records_of_numpy_calls_take_the_c_path(
        self, obj: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = pickled(obj)
        assert check_whole(data, strict=True) == 2
        assert check_whole(data) is False  # (not strict: not plain, as before)
        made = counted_c_path(monkeypatch)
        monkeypatch.setattr(unpickler, "SafeRecordUnpickler", None)  # not used
        got = sp.loads(stream_of(data), safe=True)
        assert made and repr(got) == repr(pickle.loads(data))

    @pytest.mark.parametrize("extra", [None, 1 + 2j], ids=["calls alone", "and a complex"])
    def test_records_with_buffers_out_of_band_take_the_c_path(
        self, extra: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
    ) -> None:
        """Their buffers (BUFFER frames, from 1 KiB) gathered with the pickle;
        a global not of numpy's calls (complex) sends the record, and its
        buffers, to the counting unpickler."""
        obj = {"w": np.arange(10_000.0), "m": np.ones((64, 64), ">f4", order="F")}
        obj.update(s=np.float32(1), x=extra, small=np.arange(3))
        data = sp.dumps(obj, frame_size=4096)  # (several pickle frames too)
        made = counted_c_path(monkeypatch)
        path = tmp_path / "record.sp"
        path.write_bytes(data)
        for got in (sp.loads(data, safe=True), sp.load(path, mmap_mode="r", safe=True)):
            assert repr(got) == repr(obj)
        assert made == [1, 1]
        with open(path, "rb") as f:  # read back in order, buffer by buffer
            assert repr(sp.load(f, safe=True)) == repr(obj)

    def test_a_buffer_no_call_takes_is_refused(self) -> None:
        """A record of calls whose RECORD_END counts a buffer its pickle never
        takes: refused, as on the Python path."""
        out = io.BytesIO()
        with sp.Pickler(out) as p:

            def write(writer: Any) -> None:
                writer.write_buffer(pickle.PickleBuffer(bytes(4096)))
                writer.write(pickled({"s": np.float32(1)}))

            p.write_record(write)
        with pytest.raises(sp.CorruptStreamError, match="unused buffers"):
            sp.loads(out.getvalue(), safe=True)

    @pytest.mark.parametrize(
        "case",
        [
            "numpy's own pickle (a BUILD)",
            "a scalar as a key",
            "a tuple key holding a scalar",
            "items given to a call's result",
            "NEWOBJ",
        ],
    )
    def test_what_the_scan_leaves_to_the_counting_unpickler(self, case: str) -> None:
        data = {
            "numpy's own pickle (a BUILD)": pickle.dumps(np.arange(3), 5),
            "a scalar as a key": pickled({np.float64(1.0): 1}),
            "a tuple key holding a scalar": pickled({(np.float64(1.0), "a"): 1}),
            "items given to a call's result": b"\x80\x05" + _call_of_dtype() + b"(K\x01e.",
            "NEWOBJ": b"\x80\x05\x8c\x08builtins\x8c\x03int\x93)\x81.",
        }[case]
        assert check_whole(data, strict=True) in (False, 0)


def _call_of_dtype() -> bytes:
    """Pickle bytes that push numpy.dtype('<f8', False, True)."""
    return b"\x8c\x05numpy\x8c\x05dtype\x93\x8c\x03<f8\x89\x88\x87R"


def _frombuffer(buffer: bytes, type_string: str, shape: tuple[int, ...], order: str) -> Any:
    """Pickle bytes of a record calling numpy's _frombuffer as numpy does."""
    dims = b"".join(b"J" + struct.pack("<i", n) for n in shape)
    ts = type_string.encode()
    return (
        b"\x80\x05\x8c\x13numpy._core.numeric\x8c\x0b_frombuffer\x93("
        + b"C" + bytes([len(buffer)]) + buffer
        + b"\x8c\x05numpy\x8c\x05dtype\x93\x8c" + bytes([len(ts)]) + ts + b"\x89\x88\x87R"
        + b"(" + dims + b"t\x8c\x01" + order.encode() + b"tR."
    )  # fmt: skip


def _scalar(type_string: str, data: bytes) -> bytes:
    ts = type_string.encode()
    return (
        b"\x80\x05\x8c\x16numpy._core.multiarray\x8c\x06scalar\x93"
        + b"\x8c\x05numpy\x8c\x05dtype\x93\x8c" + bytes([len(ts)]) + ts + b"\x89\x88\x87R"
        + b"C" + bytes([len(data)]) + data + b"\x86R."
    )  # fmt: skip


def _two_scalars(type_string: str, first: bytes, second: bytes) -> bytes:
    """Two scalars of one dtype (memo'd): the second's checked with the
    dtype already found plain."""
    ts = type_string.encode()
    return (
        b"\x80\x05\x8c\x16numpy._core.multiarray\x8c\x06scalar\x93\x94"
        + b"\x8c\x05numpy\x8c\x05dtype\x93\x8c" + bytes([len(ts)]) + ts
        + b"\x89\x88\x87R\x94"
        + b"C" + bytes([len(first)]) + first + b"\x86R"
        + b"h\x00h\x01C" + bytes([len(second)]) + second + b"\x86R\x86."
    )  # fmt: skip


def _two_arrays(ts: str, first: bytes, second: bytes, shape: bytes, order: str) -> Any:
    """Two _frombuffer calls of one dtype (memo'd): the second, of ``shape``
    (pickle bytes of a tuple) and ``order``, checked with the dtype already
    found plain; ``ts``: the dtype's type string."""
    return (
        b"\x80\x05\x8c\x13numpy._core.numeric\x8c\x0b_frombuffer\x93\x94"
        + b"\x8c\x05numpy\x8c\x05dtype\x93\x8c" + bytes([len(ts)]) + ts.encode()
        + b"\x89\x88\x87R\x940"
        + b"(C" + bytes([len(first)]) + first + b"h\x01K\x01\x85\x8c\x01CtR"
        + b"h\x00(C" + bytes([len(second)]) + second + b"h\x01" + shape
        + b"\x8c\x01" + order.encode() + b"tR\x86."
    )  # fmt: skip


HOSTILE = {
    "too few bytes for the shape": _frombuffer(bytes(8), "<f8", (2,), "C"),
    "too many bytes for the shape": _frombuffer(bytes(24), "<f8", (2,), "C"),
    "an object dtype": _frombuffer(bytes(16), "O", (2,), "C"),
    "a negative extent": _frombuffer(bytes(16), "<f8", (-2,), "C"),
    "an order numpy never writes": _frombuffer(bytes(16), "<f8", (2,), "Z"),
    "a structured type string": _frombuffer(bytes(12), "f8,i4", (1,), "C"),
    "a scalar of the wrong size": _scalar("<f8", bytes(7)),
    "a str scalar past U+10FFFF": _scalar("<U1", b"\xff\xff\xff\xff"),
    "an object scalar": _scalar("O", bytes(8)),
    "a good array": _frombuffer(bytes(range(16)), "<f8", (2,), "C"),
    "a good F-order array": _frombuffer(bytes(range(48)), ">i2", (4, 6), "F"),
    "a good scalar": _scalar(">i4", b"\0\0\1\0"),
    "a good scalar twice": _two_scalars("<f8", bytes(8), bytes(8)),
    "a good array twice": _two_arrays("<f8", bytes(8), bytes(16), b"K\x02\x85", "C"),
    "an array too short after a good one": _two_arrays(
        "<f8", bytes(8), bytes(8), b"K\x02\x85", "C"
    ),
    "a good empty array after a good one": _two_arrays(
        "<f8", bytes(8), b"", b"J\x00\x00\x01\x00K\x00\x86", "C"
    ),
    "an empty array of too many rows after a good one": _two_arrays(
        "<f8", bytes(8), b"", b"J\x01\x00\x01\x00K\x00\x86", "C"
    ),
    "an array of a bool extent after a good one": _two_arrays(
        "<f8", bytes(8), bytes(8), b"\x88\x85", "C"
    ),
    "an array of 2**63 rows after a good one": _two_arrays(
        "|u1", b"\0", bytes(1), b"\x8a\x09" + bytes(8) + b"\x80\x85", "C"
    ),
    "an array in K order without axes after a good one": _two_arrays(
        "<f8", bytes(8), bytes(16), b"K\x02\x85", "K"
    ),
    "a str array past U+10FFFF after a good one": _two_arrays(
        "<U1", b"a\0\0\0", b"\xff\xff\xff\xff", b"K\x01\x85", "C"
    ),
    "a scalar too short after a good one": _two_scalars("<f8", bytes(8), bytes(7)),
    "a scalar too long after a good one": _two_scalars("<f8", bytes(8), bytes(9)),
    "a str scalar past U+10FFFF after a good one": _two_scalars(
        "<U1", b"a\0\0\0", b"\xff\xff\xff\xff"
    ),
    "a str array past U+10FFFF": _frombuffer(b"\xff\xff\xff\xff", "<U1", (1,), "C"),
    "a good str array": _frombuffer(b"a\0\0\0b\0\0\0", "<U1", (2,), "C"),
    # 47th review: no items given to a call's result (the Python path refuses)
    "nothing appended to a call's result": b"\x80\x05" + _call_of_dtype() + b"(e.",
    "nothing set in a call's result": b"\x80\x05" + _call_of_dtype() + b"(u.",
    "nothing added to a call's result": b"\x80\x05" + _call_of_dtype() + b"(\x90.",
    # 45th review: READONLY_BUFFER on what is not an out-of-band buffer
    "a read-only view of in-band bytes": b"\x80\x05\x96\x03" + bytes(7) + b"abc\x98.",
    "a global not of numpy's calls": b"\x80\x05\x8c\x08builtins\x8c\x04list\x93)R.",
    "a global safe mode refuses": b"\x80\x05\x8c\x02os\x8c\x06getcwd\x93)R.",
}


class TestFoundByReview:
    """The 45th review of the C path."""

    @pytest.mark.parametrize(
        "value", [np.dtype, np.float64, (np.dtype,)], ids=["dtype", "float64", "tuple"]
    )
    def test_a_global_named_but_not_called_is_itself(self, value: Any) -> None:
        """The C path gave a record its checking stand-in for the global; one
        that holds a global, not called, goes to the counting unpickler."""
        data = sp.dumps({"t": value, "a": np.arange(3)})
        if value is np.float64:  # a type as a value: not loaded in safe mode
            with pytest.raises(sp.ForbiddenGlobalError):
                sp.loads(data, safe=True)
            return
        assert sp.loads(data, safe=True)["t"] == value

    def test_a_table_set_on_the_pickler_is_kept(self) -> None:
        class Foo:
            pass

        out = io.BytesIO()
        p = sp.Pickler(out)
        p.dispatch_table = {Foo: lambda obj: (str, ("via the table",))}
        p.dump(Foo())

        class Bar:
            pass

        copyreg.pickle(Bar, lambda obj: (str, ("bar",)))  # (streampickle's table renews)
        try:
            p.dump(Foo())
        finally:
            del copyreg.dispatch_table[Bar]
        p.close()
        with sp.Unpickler(io.BytesIO(out.getvalue())) as u:
            assert [u.load(), u.load()] == ["via the table"] * 2

    @pytest.mark.parametrize("path", ["calls", "counting"])
    def test_what_a_record_made_is_freed_when_dropped(self, path: str) -> None:
        """Without a GC pass: the C path's checking stand-ins referred to the
        unpickler whose memo holds them, a cycle that kept the arrays alive
        (found by benchmarks/safe.py: the next load took fresh memory)."""
        obj = {"a": np.ones(1 << 20), "s": np.float32(1)}
        if path == "counting":
            obj["t"] = np.zeros(2, [("x", "<f8")])  # a BUILD: Python's unpickler
        data = sp.dumps(obj)
        gc.disable()
        try:
            got = sp.loads(data, safe=True)
            freed = weakref.ref(got["a"])
            del got
            assert freed() is None
        finally:
            gc.enable()

    @pytest.mark.parametrize("extra", [None, 1 + 2j], ids=["calls alone", "and a complex"])
    def test_a_buffer_after_the_pickle_bytes_that_take_it_is_refused(
        self, extra: Any
    ) -> None:
        """46th review: gathered with the record, a buffer written after the
        NEXT_BUFFER that takes it loaded in safe mode (refused without)."""
        buffers: list[pickle.PickleBuffer] = []
        pickled_bytes = io.BytesIO()
        pickler = pickle.Pickler(pickled_bytes, 5, buffer_callback=buffers.append)
        pickler.dispatch_table = DtypeTable().table
        pickler.dump((np.full(200, 1.5), extra))
        out = io.BytesIO()

        def write(writer: Any) -> None:
            writer.write(pickled_bytes.getvalue())
            writer.flush()  # the pickle bytes first, then the buffer they take
            for buffer in buffers:
                view = buffer.raw()
                writer.write_streamed_buffer((view,), view.nbytes, False, 0, view)

        with sp.Pickler(out) as p:
            p.write_record(write)
        for safe in (True, False):
            with pytest.raises(sp.CorruptStreamError, match="precedes none"):
                sp.loads(out.getvalue(), safe=safe)

    @pytest.mark.parametrize(
        "case", ["an array by BUILD", "a struct scalar", "a struct array by BUILD"]
    )
    def test_str_data_past_u10ffff_is_refused_on_every_path(self, case: str) -> None:
        """numpy makes a str of any units: indexing one raised SystemError."""
        obj = {
            "an array by BUILD": np.array(["a"]),
            "a struct scalar": np.array([("a",)], dtype=[("f", "<U1")])[0],
            "a struct array by BUILD": np.array([("a", 1)], [("f", "<U1"), ("i", "i4")]),
        }[case]
        good = pickle.dumps(obj, 4)
        assert repr(sp.loads(stream_of(good), safe=True)) == repr(obj)
        bad = good.replace(b"a\0\0\0", b"\xff\xff\xff\xff")
        with pytest.raises(sp.ForbiddenGlobalError, match="Unicode code points only"):
            sp.loads(stream_of(bad), safe=True)


class TestBothPathsAgree:
    @pytest.mark.parametrize("case", list(HOSTILE))
    def test_a_record_of_calls_is_judged_as_the_counting_unpickler_judges_it(
        self, case: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = stream_of(HOSTILE[case])
        got = outcome(data)
        python_path(monkeypatch)
        assert got == outcome(data)
        assert (got[0] == "loaded") == case.startswith(("a good", "a global not"))

    def test_a_cut_at_every_offset_fails_cleanly(self) -> None:
        data = sp.dumps({"a": np.arange(5, dtype="<i2"), "s": np.float32(2)})
        for cut in range(1, len(data)):  # (no byte at all: EOFError)
            with pytest.raises(sp.StreamError):
                sp.loads(data[:cut], safe=True)

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_mutated_records_of_calls_load_alike_on_both_paths(self, data: Any) -> None:
        base = pickled({"a": np.arange(6, dtype=">i2").reshape(2, 3), "s": np.float32(2)})
        mutated = bytearray(base)
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.integers(0, len(base) - 1))
            mutated[at] = data.draw(st.integers(0, 255))
        stream = stream_of(bytes(mutated))
        got = outcome(stream)
        with pytest.MonkeyPatch.context() as m:
            python_path(m)
            assert got == outcome(stream)


def _array(code: str, order: str, shape: tuple[int, ...], fortran: bool) -> Any:
    dtype = np.dtype(code).newbyteorder(order)
    a = np.arange(int(np.prod(shape))).astype(dtype).reshape(shape)
    return np.asfortranarray(a) if fortran else a


arrays = st.builds(
    _array,
    st.sampled_from(NUMBER_CODES),
    st.sampled_from("<>"),
    st.lists(st.integers(0, 4), max_size=3).map(tuple),
    st.booleans(),
)
scalars = st.builds(
    lambda code, n: np.dtype(code).type(n),
    st.sampled_from(NUMBER_CODES),
    st.integers(0, 100),
)
records = st.recursive(
    st.one_of(st.integers(), st.text(max_size=5), arrays, scalars),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_records_of_arrays_and_scalars_load_safe_as_they_do_unsafe(obj: Any) -> None:
    data = sp.dumps(obj)
    assert repr(sp.loads(data, safe=True)) == repr(sp.loads(data))
