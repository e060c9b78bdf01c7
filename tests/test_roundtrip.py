"""Round trips: what goes in comes out, with pickle's semantics intact."""

from __future__ import annotations

import copyreg
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import streampickle as sp


def roundtrip(obj: Any, **kw: Any) -> Any:
    return sp.loads(sp.dumps(obj, **kw))


def assert_same_array(a: np.ndarray, b: np.ndarray) -> None:
    assert type(b) is np.ndarray
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# Python data

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.complex_numbers(allow_nan=False),
    lambda inner: (
        st.lists(inner)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text() | st.integers(), inner)
        | st.frozensets(st.integers() | st.text())
    ),
    max_leaves=30,
)


class TestPythonData:
    @given(plain)
    @settings(max_examples=200, deadline=None)
    def test_nested_python_data_round_trips(self, obj: Any) -> None:
        assert roundtrip(obj) == obj

    @given(st.binary(min_size=0, max_size=20000), st.integers(4096, 8192))
    @settings(max_examples=50, deadline=None)
    def test_bytes_and_bytearray_of_any_size_round_trip(self, data: bytes, fs: int) -> None:
        out = roundtrip({"b": data, "ba": bytearray(data)}, frame_size=fs)
        assert out["b"] == data and type(out["b"]) is bytes
        assert out["ba"] == bytearray(data) and type(out["ba"]) is bytearray

    def test_large_bytes_span_several_frames(self) -> None:
        data = np.random.default_rng(1).bytes(50_000)
        assert roundtrip(data, frame_size=4096) == data

    def test_shared_references_come_back_shared(self) -> None:
        shared = [1, 2]
        arr = np.arange(1000.0)
        out = roundtrip({"a": shared, "b": shared, "x": arr, "y": arr})
        assert out["a"] is out["b"]
        assert out["x"] is out["y"]

    def test_recursive_structures_round_trip(self) -> None:
        lst: list[Any] = [1]
        lst.append(lst)
        d: dict[str, Any] = {}
        d["self"] = d
        out = roundtrip((lst, d))
        assert out[0][1] is out[0]
        assert out[1]["self"] is out[1]


# ---------------------------------------------------------------------------
# numpy arrays of every dtype and layout

DTYPES = [
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
    "longdouble",
    "complex64",
    "complex128",
    "clongdouble",
    "<M8[ns]",
    "<m8[s]",
    ">i4",
    ">f8",
    "U7",
    "S5",
    "V3",
]


class TestArrays:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("n", [0, 1, 1000, 5000])
    def test_every_dtype_round_trips(self, dtype: str, n: int) -> None:
        rng = np.random.default_rng(0)
        a = np.frombuffer(rng.bytes(n * np.dtype(dtype).itemsize), dtype=dtype).copy()
        assert_same_array(a, roundtrip(a, frame_size=4096))

    @pytest.mark.parametrize(
        "make",
        [
            lambda: np.array(3.5),  # 0-d
            lambda: np.empty((0, 7)),  # empty
            lambda: np.arange(6000.0).reshape(60, 100).T,  # Fortran-ordered view
            lambda: np.asfortranarray(np.arange(6000).reshape(60, 100)),
            lambda: np.arange(20000)[::3],  # strided view
            lambda: np.arange(24000.0).reshape(20, 30, 40)[:, ::2, 1:],
            lambda: np.zeros(500, dtype=[("a", "<i4"), ("b", "<f8", (3,))]),
            lambda: np.array([1, "two", None, [3]], dtype=object),
        ],
        ids=[
            "0d",
            "empty",
            "F-view",
            "F-order",
            "strided",
            "3d-view",
            "structured",
            "object",
        ],
    )
    def test_every_layout_round_trips(self, make: Any) -> None:
        a = make()
        b = roundtrip(a)
        assert b.dtype == a.dtype and b.shape == a.shape
        if a.dtype == object:
            assert b.tolist() == a.tolist()
        else:
            np.testing.assert_array_equal(a, b)
        assert b.flags.f_contiguous == a.flags.f_contiguous or not a.flags.contiguous

    @given(
        hnp.arrays(
            dtype=hnp.scalar_dtypes(),
            shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=40),
        )
    )
    @settings(max_examples=150, deadline=None)
    def test_random_arrays_round_trip(self, a: np.ndarray) -> None:
        b = roundtrip({"a": a, "t": a.T})
        np.testing.assert_array_equal(a, b["a"])
        np.testing.assert_array_equal(a.T, b["t"])
        # numpy itself drops the byte order of big-endian datetimes: match pickle
        assert b["a"].dtype == pickle.loads(pickle.dumps(a, protocol=5)).dtype

    def test_loaded_arrays_are_writable_and_aligned(self) -> None:
        b = roundtrip(np.arange(100_000, dtype=np.float64))
        assert b.flags.writeable and b.flags.aligned
        b[0] = 7  # memory of its own

    def test_readonly_arrays_stay_readonly(self) -> None:
        a = np.arange(10_000)
        a.flags.writeable = False
        assert not roundtrip(a).flags.writeable

    def test_numpy_scalars_and_dtypes_round_trip(self) -> None:
        obj = [np.float32(1.5), np.int64(-3), np.dtype("f8"), np.dtype([("x", "u1")])]
        assert roundtrip(obj) == obj


# ---------------------------------------------------------------------------
# Pickle semantics: hooks and protocols a user relies on


class Slots:
    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Slots) and (self.a, self.b) == (other.a, other.b)


class WithState:
    def __init__(self, v: Any) -> None:
        self.v = v
        self.cache = "not pickled"

    def __getstate__(self) -> Any:
        return {"v": self.v}

    def __setstate__(self, state: Any) -> None:
        self.v = state["v"]
        self.cache = "rebuilt"


class Reduced:
    def __init__(self, x: int) -> None:
        self.x = x

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (Reduced, (self.x * 1,))


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


def rebuild_point(x: int) -> Point:
    return Point(x + 100)


class TestPickleSemantics:
    def test_slots_round_trip(self) -> None:
        assert roundtrip(Slots(1, [2])) == Slots(1, [2])

    def test_getstate_and_setstate_are_used(self) -> None:
        out = roundtrip(WithState(np.arange(5000)))
        assert out.cache == "rebuilt"
        np.testing.assert_array_equal(out.v, np.arange(5000))

    def test_reduce_ex_is_used(self) -> None:
        assert roundtrip(Reduced(4)).x == 4

    def test_persistent_ids_round_trip(self) -> None:
        store = {"db-1": "resolved object"}

        class P(sp.Pickler):
            def persistent_id(self, obj: Any) -> Any:
                return "db-1" if obj == "handle" else None

        class U(sp.Unpickler):
            def persistent_load(self, pid: Any) -> Any:
                return store[pid]

        bio = io.BytesIO()
        with P(bio) as p:
            p.dump(["handle", 2])
        bio.seek(0)
        with U(bio) as u:
            assert u.load() == ["resolved object", 2]

    def test_hooks_set_on_the_instance_are_used_for_every_record(self) -> None:
        """As with pickle.Unpickler, persistent_load may be set on the instance;
        a missing module raises its own error. Small records (one frame) and
        records with buffers take different read paths: both must agree."""

        class P(sp.Pickler):
            def persistent_id(self, obj: Any) -> Any:
                return "db-1" if isinstance(obj, str) and obj == "handle" else None

        bio = io.BytesIO()
        with P(bio) as p:
            p.dump(["handle", 1])  # one PICKLE frame
            p.dump(["handle", np.arange(1000)])  # with a buffer
        bio.seek(0)
        u = sp.Unpickler(bio)
        u.persistent_load = lambda pid: f"<{pid}>"
        assert u.load() == ["<db-1>", 1]
        got = u.load()
        assert got[0] == "<db-1>" and got[1][-1] == 999
        # Unchecked streams, so that renaming the module (same length) keeps them valid.
        for obj in ([Point(1)], [Point(1), np.arange(1000)]):
            data = sp.dumps(obj, checksum=False)
            assert Point.__module__.encode() in data
            renamed = data.replace(Point.__module__.encode(), b"x" * len(Point.__module__))
            with pytest.raises(ModuleNotFoundError):
                sp.loads(renamed)

    @pytest.mark.parametrize("reach", ["load", "index"])
    @pytest.mark.parametrize("second", [["handle", 1], ["handle", np.arange(1000)]])
    def test_a_hook_that_reads_the_same_unpickler_mid_load_is_refused(
        self, tmp_path: Path, reach: str, second: list[Any]
    ) -> None:
        """Reading another record from inside a load would move the stream
        under the record being read: a clear error, and the records stay
        readable by another Unpickler."""

        class P(sp.Pickler):
            def persistent_id(self, obj: Any) -> Any:
                return "db-1" if isinstance(obj, str) and obj == "handle" else None

        path = tmp_path / "s.sp"
        with P(path) as p:
            p.dump(["first"])
            p.dump(second)
        u = sp.Unpickler(path)
        assert u.load() == ["first"]
        u.persistent_load = lambda pid: u.load() if reach == "load" else u[0]
        with pytest.raises(RuntimeError, match="record 1 is being loaded"):
            u.load()
        u.close()
        fresh = sp.Unpickler(path)
        fresh.persistent_load = lambda pid: pid
        assert [r[0] for r in fresh] == ["first", "db-1"]

    def test_dispatch_table_is_used(self) -> None:
        class P(sp.Pickler):
            dispatch_table = copyreg.dispatch_table.copy()
            dispatch_table[Point] = lambda p: (rebuild_point, (p.x,))

        bio = io.BytesIO()
        with P(bio) as p:
            p.dump(Point(1))
        bio.seek(0)
        assert sp.load(bio).x == 101

    def test_reducer_override_is_used(self) -> None:
        class P(sp.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                if isinstance(obj, Point):
                    return (rebuild_point, (obj.x,))
                return NotImplemented

        bio = io.BytesIO()
        with P(bio) as p:
            p.dump([Point(2), np.arange(3000)])
        bio.seek(0)
        out = sp.load(bio)
        assert out[0].x == 102 and out[1].sum() == np.arange(3000).sum()

    def test_find_class_can_be_overridden(self) -> None:
        class Renamed:
            pass

        class U(sp.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if name == "Point":
                    return Renamed
                return super().find_class(module, name)

        with U(io.BytesIO(sp.dumps(Point(1)))) as u:
            out = u.load()
        assert isinstance(out, Renamed) and out.x == 1

    def test_find_class_replaced_on_the_class_or_the_instance_is_used(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every way of replacing find_class counts, not only a subclass's
        method: patching Unpickler itself, or an attribute set on the instance
        before Unpickler.__init__ (on every record, the first and later ones)."""

        def deny(module: str, name: str) -> Any:
            raise sp.ForbiddenGlobalError(f"denied {module}.{name}")

        data = io.BytesIO()
        with sp.Pickler(data) as p:
            p.dump(None)
            p.dump(Point(1))

        class SetsItFirst(sp.Unpickler):
            def __init__(self, file: Any) -> None:
                self.find_class = deny  # type: ignore[method-assign]
                super().__init__(file)

        with SetsItFirst(io.BytesIO(data.getvalue())) as u:
            assert u.load() is None
            with pytest.raises(sp.ForbiddenGlobalError, match="denied"):
                u.load()

        monkeypatch.setattr(sp.Unpickler, "find_class", lambda self, m, n: deny(m, n))
        with sp.Unpickler(io.BytesIO(data.getvalue())) as u:
            assert u.load() is None
            with pytest.raises(sp.ForbiddenGlobalError, match="denied"):
                u.load()

    def test_unpicklable_object_raises_picklings_error(self) -> None:
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
            sp.dumps(lambda: None)

    @pytest.mark.parametrize("protocol", [0, 2, 4, "5"])
    def test_protocol_other_than_5_is_a_value_error(self, protocol: Any) -> None:
        with pytest.raises(ValueError, match="protocol 5"):
            sp.Pickler(io.BytesIO(), protocol)

    def test_protocol_5_and_none_are_accepted(self) -> None:
        sp.Pickler(io.BytesIO(), 5).close()
        sp.Pickler(io.BytesIO(), None).close()


# ---------------------------------------------------------------------------
# Many records


class TestRecords:
    def test_many_records_load_in_order_and_end_with_eof(self) -> None:
        bio = io.BytesIO()
        with sp.Pickler(bio, frame_size=4096) as p:
            for i in range(50):
                p.dump({"i": i, "a": np.full(300 + i, i), "s": "x" * i})
        bio.seek(0)
        u = sp.Unpickler(bio)
        for i in range(50):
            rec = u.load()
            assert rec["i"] == i and rec["a"].shape == (300 + i,) and (rec["a"] == i).all()
        with pytest.raises(EOFError):
            u.load()
        with pytest.raises(EOFError):
            u.load()

    def test_each_record_decodes_on_its_own(self) -> None:
        shared = {"big": "value" * 10}
        bio = io.BytesIO()
        with sp.Pickler(bio) as p:
            p.dump(shared)
            p.dump(shared)  # memo cleared: a full copy, not a back-reference
        index = sp.read_index(io.BytesIO(bio.getvalue()))
        assert index is not None and len(index.records) == 2
        bio.seek(0)
        first, second = list(sp.Unpickler(bio))
        assert first == second == shared and first is not second

    def test_memo_references_are_numbered_afresh_in_every_record(self) -> None:
        bio = io.BytesIO()
        with sp.Pickler(bio) as p:
            p.dump(["first", "record", ("with", "memo", "entries")])
            x = "shared"
            p.dump([x, x, {"k": x}])
        bio.seek(0)
        first, second = sp.Unpickler(bio)
        assert second == ["shared", "shared", {"k": "shared"}]
        assert second[0] is second[1] is second[2]["k"]

    def test_iteration_yields_every_record(self) -> None:
        bio = io.BytesIO()
        with sp.Pickler(bio) as p:
            for i in range(10):
                p.dump(i)
        bio.seek(0)
        assert list(sp.Unpickler(bio)) == list(range(10))

    def test_empty_stream_has_no_records(self) -> None:
        bio = io.BytesIO()
        sp.Pickler(bio).close()
        bio.seek(0)
        assert list(sp.Unpickler(bio)) == []

    def test_index_lists_records_and_buffers(self) -> None:
        bio = io.BytesIO()
        with sp.Pickler(bio) as p:
            p.dump([np.zeros(4096), np.ones(4096)])
            p.dump("no buffers")
            p.dump(np.arange(2048))
        index = sp.read_index(io.BytesIO(bio.getvalue()))
        assert index is not None
        assert [(r.first_buffer, r.buffer_count) for r in index.records] == [
            (0, 2),
            (2, 0),
            (2, 1),
        ]
        data = bio.getvalue()
        for off in index.buffers:  # every BUFFER payload starts 64-byte aligned
            assert data[off] == sp.format.Kind.BUFFER
            assert (off + 32) % 64 == 0

    def test_dump_without_checksums_round_trips(self) -> None:
        obj = {"a": np.arange(100_000), "b": list(range(100))}
        out = roundtrip(obj, checksum=False)
        np.testing.assert_array_equal(out["a"], obj["a"])
        assert out["b"] == obj["b"]
