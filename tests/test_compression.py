"""compress="zstd": round trips through every option, what gets stored how,
and damaged or hostile compressed frames."""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import streampickle as sp
from streampickle import codecs
from streampickle import format as fmt
from streampickle.format import Codec, Flag, FrameHeader, Kind
from streampickle.safe_calls import DtypeTable
from streampickle.writer import FrameWriter

RNG = np.random.default_rng(42)
SMOOTH = np.cumsum(RNG.standard_normal(40_000))  # compresses far better shuffled
LOW_INT = RNG.integers(0, 100, 40_000)
NOISE = RNG.integers(0, 256, 100_000, dtype=np.uint8)  # does not compress


def frames(data: bytes) -> list[FrameHeader]:
    """Every frame header of a stream, in order."""
    out, pos = [], fmt.STREAM_HEADER.size
    while pos < len(data):
        h = fmt.decode_frame_header(data[pos : pos + 32], pos, None)
        out.append(h)
        pos += 32 + h.stored_size + h.check_table_size()
    return out


def roundtrip(obj: Any, **kw: Any) -> Any:
    return sp.loads(sp.dumps(obj, compress="zstd", **kw))


class TestRoundTrips:
    @pytest.mark.parametrize("level", [-5, 1, 3, 19])
    @pytest.mark.parametrize("threads", [0, 1, 3])
    @pytest.mark.parametrize("shuffle", [None, True, False])
    def test_every_option_round_trips(self, level: int, threads: int, shuffle: Any) -> None:
        obj = {
            "smooth": SMOOTH,
            "low": LOW_INT,
            "noise": NOISE,
            "rows": [{"i": i} for i in range(500)],
        }
        out = roundtrip(obj, level=level, threads=threads, shuffle=shuffle, frame_size=8192)
        for k in ("smooth", "low", "noise"):
            np.testing.assert_array_equal(out[k], obj[k])
        assert out["rows"] == obj["rows"]

    @pytest.mark.parametrize(
        "dtype",
        ["bool", "int8", "int16", "uint32", "int64", "float16", "float32", "float64",
         "longdouble", "complex64", "complex128", ">f8", "<M8[ms]", "U3", "V5"],
    )  # fmt: skip
    def test_every_dtype_round_trips(self, dtype: str) -> None:
        raw = np.arange(30_000, dtype=np.int64).astype(np.uint8).tobytes()
        a = np.frombuffer(
            raw[: len(raw) - len(raw) % np.dtype(dtype).itemsize], dtype=dtype
        )
        for shuffle in (None, True, False):
            b = roundtrip(a, shuffle=shuffle, frame_size=4096)
            assert b.dtype == a.dtype
            assert b.tobytes() == a.tobytes()

    def test_layouts_round_trip(self) -> None:
        obj = {
            "fortran": np.asfortranarray(SMOOTH.reshape(200, 200)),
            "strided": SMOOTH[::3],
            "structured": np.zeros(3000, dtype=[("a", "<i4"), ("b", "<f8")]),
            "zero_d": np.array(2.5),
            "empty": np.empty((0, 3)),
        }
        out = roundtrip(obj)
        for k, v in obj.items():
            np.testing.assert_array_equal(out[k], v)
            assert out[k].dtype == v.dtype
        assert out["fortran"].flags.f_contiguous

    @given(
        hnp.arrays(
            dtype=st.sampled_from(["<i2", "<u4", "<f4", "<f8", "<c16", "u1"]),
            shape=st.integers(0, 5000),
            elements={"allow_nan": False},
        ),
        st.sampled_from([None, True, False]),
        st.integers(0, 2),
    )
    @settings(max_examples=60, deadline=None)
    def test_random_arrays_round_trip(
        self, a: np.ndarray, shuffle: Any, threads: int
    ) -> None:
        np.testing.assert_array_equal(
            roundtrip(a, shuffle=shuffle, threads=threads, frame_size=4096), a
        )

    def test_many_records_round_trip_with_a_pool(self) -> None:
        bio = io.BytesIO()
        with sp.Pickler(bio, compress="zstd", threads=2, frame_size=4096) as p:
            for i in range(20):
                p.dump({"i": i, "a": SMOOTH[: 1000 * (i + 1)]})
        bio.seek(0)
        for i, rec in enumerate(sp.Unpickler(bio, threads=2)):
            np.testing.assert_array_equal(rec["a"], SMOOTH[: 1000 * (i + 1)])

    def test_compressed_streams_support_random_access(self, tmp_path: Any) -> None:
        path = tmp_path / "z.sp"
        with sp.Pickler(path, compress="zstd") as p:
            for i in range(5):
                p.dump(SMOOTH * i)
        with sp.Unpickler(path) as u:
            assert len(u) == 5
            np.testing.assert_array_equal(u[3], SMOOTH * 3)


class TestStorageChoices:
    def test_incompressible_buffer_is_stored_raw_and_aligned(self) -> None:
        data = sp.dumps(NOISE, compress="zstd")
        buffers = [h for h in frames(data) if h.kind is Kind.BUFFER]
        assert [b.codec for b in buffers] == [Codec.NONE]
        assert (buffers[0].offset + 32) % 64 == 0
        assert len(data) < NOISE.nbytes + 1024  # costs almost nothing extra

    def test_smooth_floats_are_shuffled_into_lanes(self) -> None:
        data = sp.dumps(SMOOTH, compress="zstd")
        lanes = [h for h in frames(data) if h.kind is Kind.CHUNK]
        assert len(lanes) == 8  # one chunk, eight byte lanes
        assert all(Flag.SHUFFLE in h.flags and h.param == 8 for h in lanes)
        assert all(h.raw_size == SMOOTH.nbytes // 8 for h in lanes)
        # the high bytes compress; the noisy low mantissa bytes are stored raw
        assert lanes[-1].codec is Codec.ZSTD and lanes[0].codec is Codec.NONE
        assert len(data) < 0.8 * SMOOTH.nbytes

    def test_random_float32_keeps_its_mantissa_lanes_raw(self) -> None:
        w = RNG.random(300_000, dtype=np.float32)
        data = sp.dumps(w, compress="zstd")
        lanes = [h for h in frames(data) if h.kind is Kind.CHUNK]
        assert [h.codec for h in lanes[:2]] == [Codec.NONE, Codec.NONE]  # low mantissa
        assert lanes[3].codec is Codec.ZSTD  # sign and exponent
        assert len(data) < 0.85 * w.nbytes
        np.testing.assert_array_equal(sp.loads(data), w)

    def test_small_random_ints_code_their_high_byte_lane_as_literals(self) -> None:
        """The high byte of ints in 0..999 holds 4 values in no repeating order:
        "entropy" (Huffman literals) codes it near its 2 bits, level 3 does not."""
        ints = RNG.integers(0, 1000, 1 << 20)
        plan = codecs.plan(memoryview(ints).cast("B"), 8, 3, None)
        assert plan is not None and plan.compress[1] == "entropy"
        lanes = codecs.shuffle(memoryview(ints[: 1 << 19]).cast("B"), 8).reshape(8, -1)
        lane = lanes[1]
        by_entropy, by_level = (len(codecs.compress(lane, k)) for k in ("entropy", 3))
        assert by_entropy < 0.9 * by_level
        np.testing.assert_array_equal(sp.loads(sp.dumps(ints, compress="zstd")), ints)

    def test_shuffle_false_is_obeyed(self) -> None:
        chunks = [h for h in frames(sp.dumps(SMOOTH, compress="zstd", shuffle=False))]
        assert not any(Flag.SHUFFLE in c.flags for c in chunks)

    def test_one_buffer_mixes_compressed_and_raw_chunks(self) -> None:
        mixed = np.concatenate([np.zeros(300_000, np.uint8), NOISE])
        data = sp.dumps(mixed, compress="zstd", frame_size=65536)
        codecs_seen = {h.codec for h in frames(data) if h.kind is Kind.CHUNK}
        assert codecs_seen == {Codec.NONE, Codec.ZSTD}
        np.testing.assert_array_equal(sp.loads(data), mixed)

    def test_pickle_frames_are_compressed(self) -> None:
        rows = [{"name": f"row {i}", "value": i} for i in range(20_000)]
        plain, packed = sp.dumps(rows), sp.dumps(rows, compress="zstd")
        assert len(packed) < 0.3 * len(plain)
        assert any(h.codec is Codec.ZSTD for h in frames(packed) if h.kind is Kind.PICKLE)
        assert sp.loads(packed) == rows

    def test_mmap_of_a_compressed_buffer_loads_into_memory_with_a_warning(
        self, tmp_path: Any
    ) -> None:
        path = tmp_path / "z.sp"
        sp.dump({"z": SMOOTH, "raw": NOISE}, path, compress="zstd")
        with pytest.warns(UserWarning, match="decompressed into memory"):
            out = sp.load(path, mmap_mode="r")
        np.testing.assert_array_equal(out["z"], SMOOTH)
        assert not out["raw"].flags.owndata and not out["raw"].flags.writeable  # mapped

    @pytest.mark.parametrize("bad", [{"compress": "gzip"}, {"level": 23}, {"level": "3"},
                                     {"shuffle": 1}, {"threads": -1}])  # fmt: skip
    def test_bad_options_are_refused(self, bad: dict[str, Any]) -> None:
        with pytest.raises((ValueError, TypeError)):
            sp.dumps(1, **{"compress": "zstd", **bad})


class TestShuffle:
    """codecs.shuffle takes words apart by shifts in cache-sized blocks for
    item sizes 2, 4 and 8 and copies byte columns otherwise; both must be the
    byte transpose, across block boundaries and for any number of items."""

    @pytest.mark.parametrize("itemsize", [2, 3, 4, 8, 16])
    @pytest.mark.parametrize("items", [0, 1, 7, (1 << 17) - 1, 1 << 17, (1 << 17) * 2 + 5])
    def test_shuffle_is_the_byte_transpose_and_unshuffle_undoes_it(
        self, itemsize: int, items: int
    ) -> None:
        data = RNG.integers(0, 256, items * itemsize, dtype=np.uint8)
        want = data.reshape(items, itemsize).T.reshape(-1)
        got = codecs.shuffle(memoryview(data), itemsize)
        np.testing.assert_array_equal(got, want)
        back = np.full(data.size, 0xAA, dtype=np.uint8)  # not zeros: every byte written
        codecs.unshuffle_into(list(got.reshape(itemsize, -1)), memoryview(back))
        np.testing.assert_array_equal(back, data)


class _KeepsViews:
    """A file that keeps what is written to it, uncopied (as aio's frame list
    does until the transport takes it)."""

    def __init__(self) -> None:
        self.pieces: list[Any] = []

    def write(self, data: Any) -> int:
        self.pieces.append(data)
        return memoryview(data).nbytes

    def getvalue(self) -> bytes:
        return b"".join(bytes(memoryview(p).cast("B")) for p in self.pieces)


class TestRecycledMemory:
    """Shuffled chunks go out in arrays each thread reuses, but only once
    nothing refers to them any more."""

    def test_an_array_still_referenced_is_never_handed_out_again(self) -> None:
        first = codecs.shuffle(bytes(range(64)) * 1024, 4)
        copy = bytes(first)
        others = [codecs.shuffle(bytes(64 * 1024), 4) for _ in range(10)]
        assert bytes(first) == copy
        assert all(o.base is not first.base for o in others)

    def test_a_released_array_is_reused(self) -> None:
        first = codecs.shuffle(bytes(64 * 1024), 4)
        kept = id(first.base)  # not the array itself: that would hold it
        del first
        assert id(codecs.shuffle(bytes(range(64)) * 1024, 4).base) == kept

    def test_a_sink_that_keeps_every_chunk_uncopied_gets_them_all_intact(self) -> None:
        arrays = {f"a{i}": RNG.random(1 << 20, dtype=np.float32) for i in range(6)}
        out = _KeepsViews()
        with sp.Pickler(out, compress="zstd", frame_size=1 << 20) as p:
            p.dump(arrays)
        got = sp.loads(out.getvalue())
        for k, a in arrays.items():
            np.testing.assert_array_equal(got[k], a)


def chunk_stream(payload: bytes, raw_size: int, *, codec: Codec = Codec.ZSTD) -> bytes:
    """A stream whose one record is a compressed BUFFER of one CHUNK."""
    pickled = pickle.dumps(
        pickle.PickleBuffer(bytearray(raw_size)),
        protocol=5,
        buffer_callback=lambda b: False,
    )
    return b"".join([
        fmt.encode_stream_header(),
        fmt.frame(Kind.BUFFER, codec=Codec.ZSTD, raw_size=raw_size, param=4096,
                  flags=Flag.CHECKED, payload_check=fmt.buffer_ordinal_check(0)),
        fmt.frame(Kind.CHUNK, codec=codec, stored_size=len(payload), raw_size=raw_size,
                  flags=Flag.CHECKED, payload_check=fmt.checksum(payload)),
        payload,
        fmt.frame(Kind.PICKLE, stored_size=len(pickled), raw_size=len(pickled),
                  flags=Flag.CHECKED, payload_check=fmt.checksum(pickled)),
        pickled,
        fmt.frame(Kind.RECORD_END, raw_size=len(pickled), param=1),
        fmt.frame(Kind.END),
    ])  # fmt: skip


class TestStreamedBuffers:
    """``FrameWriter.write_streamed_buffer``, which ``streampickle convert``
    feeds a buffer through one chunk at a time."""

    @staticmethod
    def streamed(arr: np.ndarray, piece: int, extra: int = 0, **options: Any) -> bytes:
        """``arr`` as one record, its buffer fed in ``piece``-byte pieces (and
        ``extra`` bytes too many, or too few if negative)."""
        buffers: list[pickle.PickleBuffer] = []
        pickled = io.BytesIO()
        pickler = pickle.Pickler(pickled, 5, buffer_callback=buffers.append)
        pickler.dispatch_table = DtypeTable().table  # (dtypes as sp.Pickler writes them)
        pickler.dump(arr)
        data = pickled.getvalue()
        raw = buffers[0].raw()
        fed = bytes(raw) + bytes(max(extra, 0))
        fed = fed[: len(fed) + min(extra, 0)]
        pieces = [fed[i : i + piece] for i in range(0, len(fed), piece)]

        def write(writer: FrameWriter) -> None:  # as the C pickler would
            writer.write_streamed_buffer(pieces, raw.nbytes, False, 8)
            writer.write(data)

        out = io.BytesIO()
        with sp.Pickler(out, **options) as p:
            p.write_record(write)
        return out.getvalue()

    @pytest.mark.parametrize("piece", [1000, 8191, 8192, 8193, 1 << 20])
    def test_pieces_of_any_size_write_what_dump_writes(self, piece: int) -> None:
        arr = SMOOTH[:20_000]
        assert self.streamed(arr, piece, frame_size=8192) == sp.dumps(arr, frame_size=8192)
        packed = self.streamed(arr, piece, frame_size=8192, compress="zstd")
        lanes = [h for h in frames(packed) if h.kind is Kind.CHUNK]
        assert len(lanes) == 8 * 20 and all(h.param == 8 for h in lanes)
        np.testing.assert_array_equal(sp.loads(packed), arr)

    @pytest.mark.parametrize("extra", [-1, 1])
    @pytest.mark.parametrize("compress", [None, "zstd"])
    def test_pieces_must_add_up_to_the_size(self, extra: int, compress: Any) -> None:
        with pytest.raises(ValueError, match="bytes (short|more than its size)"):
            self.streamed(SMOOTH[:5000], 4096, extra, compress=compress)


class TestBadCompressedFrames:
    def test_hand_built_chunk_stream_loads(self) -> None:
        payload = zstandard.ZstdCompressor().compress(b"\x07" * 4000)
        assert bytes(sp.loads(chunk_stream(payload, 4000))) == b"\x07" * 4000

    def test_zip_bomb_chunk_is_refused(self) -> None:
        bomb = zstandard.ZstdCompressor().compress(bytes(50 << 20))  # 50 MiB of zeros
        with pytest.raises(sp.CorruptStreamError, match="not the 4000"):
            sp.loads(chunk_stream(bomb, 4000))

    def test_short_chunk_is_refused(self) -> None:
        short = zstandard.ZstdCompressor().compress(bytes(1000))
        with pytest.raises(sp.CorruptStreamError, match="1000 bytes"):
            sp.loads(chunk_stream(short, 4000))

    def test_garbage_in_a_compressed_chunk_is_a_corrupt_stream_error(self) -> None:
        for garbage in (b"\x28\xb5\x2f\xfd" + bytes(200), b"not zstd at all" * 10):
            with pytest.raises(sp.CorruptStreamError, match="decompress"):
                sp.loads(chunk_stream(garbage, 4000))

    @pytest.mark.parametrize("threads", [0, 2])
    def test_damaged_compressed_data_without_checks_never_leaks_zstd_errors(
        self, threads: int
    ) -> None:
        data = bytearray(sp.dumps({"a": SMOOTH}, compress="zstd", checksum=False))
        chunk = next(h for h in frames(bytes(data)) if h.kind is Kind.CHUNK)
        for k in range(0, chunk.stored_size, 97):
            damaged = bytearray(data)
            damaged[chunk.offset + 32 + k] ^= 0x5A
            try:
                out = sp.Unpickler(io.BytesIO(bytes(damaged)), threads=threads).load()
            except sp.StreamError:
                continue
            assert out["a"].shape == SMOOTH.shape  # never a buffer of the wrong size

    def test_damaged_compressed_data_with_checks_is_caught(self) -> None:
        data = bytearray(sp.dumps({"a": SMOOTH}, compress="zstd"))
        chunk = next(h for h in frames(bytes(data)) if h.kind is Kind.CHUNK)
        data[chunk.offset + 40] ^= 1
        with pytest.raises(sp.CorruptStreamError, match="payload check mismatch"):
            sp.loads(bytes(data))

    def test_chunk_outside_a_buffer_is_corrupt(self) -> None:
        data = bytes(chunk_stream(zstandard.ZstdCompressor().compress(bytes(4000)), 4000))
        start = fmt.STREAM_HEADER.size
        without_buffer = data[:start] + data[start + 32 :]
        with pytest.raises(sp.CorruptStreamError, match="CHUNK frame"):
            sp.loads(without_buffer)


def test_scratch_memory_above_the_recycled_size_is_not_kept_by_the_thread() -> None:
    """A 256 MiB frame's scratch would otherwise stay for the thread's life
    (eleventh review: 256 MiB kept after an 8 KB record)."""
    from streampickle import codecs

    big = codecs.scratch("test-big", codecs.RECYCLED_MAX_BYTES + 1)
    small = codecs.scratch("test-small", 1 << 20)
    kept = codecs._local.__dict__.get("scratch", {})
    assert "test-big" not in kept and big.nbytes == codecs.RECYCLED_MAX_BYTES + 1
    assert kept["test-small"].nbytes >= small.nbytes
