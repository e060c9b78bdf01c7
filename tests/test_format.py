"""The format is a contract: pinned constants, exact bytes, committed vectors."""

from __future__ import annotations

import io
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streampickle as sp
from streampickle import format as fmt
from streampickle import unpickler
from streampickle.format import Flag, FrameHeader, Kind

sys.path.insert(0, str(Path(__file__).parent / "vectors"))
import make_vectors  # noqa: E402

VECTORS = Path(__file__).parent / "vectors"


class TestConstants:
    def test_magic_and_version_are_pinned(self) -> None:
        assert fmt.MAGIC == b"\x89SPK\r\n\x1a\n"
        assert fmt.VERSION == 1

    def test_header_sizes_are_pinned(self) -> None:
        assert fmt.STREAM_HEADER.size == 16
        assert fmt.FRAME_HEADER.size == 32
        assert fmt.ALIGNMENT == 64

    def test_kind_codec_and_flag_values_are_pinned(self) -> None:
        kinds = {k.name: int(k) for k in Kind}
        assert kinds == {
            "PICKLE": 1, "BUFFER": 2, "RECORD_END": 3, "CHUNK": 4, "PAD": 5, "INDEX": 6,
            "END": 7,
        }  # fmt: skip
        assert {c.name: int(c) for c in fmt.Codec} == {"NONE": 0, "ZSTD": 1}
        flags = (int(Flag.CHECKED), int(Flag.READONLY), int(Flag.SHUFFLE))
        assert flags == (1, 2, 4)

    def test_field_table_matches_the_header_struct(self) -> None:
        offsets, pos = {}, 0
        for field in fmt.FRAME_FIELDS:
            offsets[field.name] = pos
            pos += struct.calcsize("<" + field.fmt)
        assert pos == fmt.FRAME_HEADER.size
        assert offsets["stored_size"] == 8 and offsets["header_check"] == fmt.HEADER_CHECKED

    def test_checksum_is_low_half_of_xxh3_64(self) -> None:
        import xxhash

        data = b"streampickle"
        assert fmt.checksum(data) == xxhash.xxh3_64_intdigest(data) & 0xFFFFFFFF


# One table drives both directions: each header encodes to exactly these bytes
# and these bytes decode to the header.
FRAME_CASES = [
    (
        FrameHeader(
            Kind.PICKLE, fmt.Codec.NONE, Flag.CHECKED, 0, 5, 5, fmt.checksum(b"hello")
        ),
        "010001000000000005000000000000000500000000000000fddc625ce5b98b17",
    ),
    (
        FrameHeader(
            Kind.BUFFER, fmt.Codec.NONE, Flag.CHECKED | Flag.READONLY, 4096, 4096, 4096, 0
        ),
        "0200030000100000001000000000000000100000000000000000000002b131df",
    ),
    (
        FrameHeader(Kind.RECORD_END, fmt.Codec.NONE, Flag(0), 1, 0, 20, 0),
        "030000000100000000000000000000001400000000000000000000000662a558",
    ),
    (
        FrameHeader(Kind.PAD, fmt.Codec.NONE, Flag(0), 0, 16, 16, 0),
        "05000000000000001000000000000000100000000000000000000000319cc0de",
    ),
    (
        FrameHeader(Kind.END, fmt.Codec.NONE, Flag(0), 0, 0, 0, 0),
        "07000000000000000000000000000000000000000000000000000000f9c4e0a0",
    ),
]


class TestFrameCodec:
    @pytest.mark.parametrize(
        "header,hexbytes", FRAME_CASES, ids=lambda c: getattr(c, "kind", "")
    )
    def test_header_encodes_to_exact_bytes(
        self, header: FrameHeader, hexbytes: str
    ) -> None:
        assert header.encode().hex() == hexbytes

    @pytest.mark.parametrize(
        "header,hexbytes", FRAME_CASES, ids=lambda c: getattr(c, "kind", "")
    )
    def test_exact_bytes_decode_to_header(self, header: FrameHeader, hexbytes: str) -> None:
        assert fmt.decode_frame_header(bytes.fromhex(hexbytes), 0, None) == header

    def test_stream_header_is_exact(self) -> None:
        assert fmt.encode_stream_header().hex() == "8953504b0d0a1a0a010000000a76e700"
        assert fmt.decode_stream_header(fmt.encode_stream_header()) == 1

    def test_smallest_stream_is_exact(self) -> None:
        # sp.dumps(None), frame by frame (see the worked example in FORMAT.md)
        expected = [
            "8953504b0d0a1a0a010000000a76e700",  # stream header
            # PICKLE frame header, then PROTO 5, NONE, STOP
            "010001000000000004000000000000000400000000000000b0e36afaf26c8838",
            "80054e2e",
            # RECORD_END: 4 pickle bytes, 0 buffers
            "03000000000000000000000000000000040000000000000000000000dd45be93",
            # INDEX frame header, then 1 record, 0 buffers; record at 16, 0, 0
            "060001000000000028000000000000002800000000000000907bb8ef4d40cd10",
            "0100000000000000000000000000000010000000000000000000000000000000"
            "0000000000000000",
            # END: the index is at 0x54
            "070000000000000000000000000000005400000000000000000000003f12b041",
        ]
        assert sp.dumps(None).hex() == "".join(expected)

    @pytest.mark.parametrize(
        "obj",
        [None, {"id": 7, "values": [0.5] * 100}, "x" * 200_000],
        ids=["none", "dict", "str"],
    )
    def test_whole_record_end_is_what_the_writer_puts_after_a_one_frame_record(
        self, obj: Any
    ) -> None:
        """Readers take a record of one PICKLE frame whose RECORD_END has exactly
        these bytes without decoding it; were they to differ from the writer's,
        every small message would silently take the slower path."""
        data = sp.dumps(obj)
        first = fmt.decode_frame_header(data[16:48], 16, None)
        assert first.kind is Kind.PICKLE
        end = 48 + first.stored_size
        assert data[end : end + 32] == fmt.whole_record_end(first.raw_size)

    @given(
        size=st.sampled_from([0, fmt.MAX_FRAME_SIZE, fmt.MAX_FRAME_SIZE + 1, 2**64 - 1])
        | st.integers(0, 2**64 - 1),
        check=st.integers(0, 2**32 - 1),
        flips=st.lists(st.tuples(st.integers(0, 31), st.integers(1, 255)), max_size=3),
        recheck=st.booleans(),
    )
    def test_the_readers_fast_header_check_agrees_with_the_general_decoder(
        self, size: int, check: int, flips: list[tuple[int, int]], recheck: bool
    ) -> None:
        """The reader's C reading of the header most records start with
        (``_pickle_scan.SmallRecords.size``) accepts exactly the checked,
        uncompressed PICKLE headers up to 1 MiB the general decoder accepts,
        with the same sizes: damaged fields, with a valid header check or not,
        send it to the general decoder."""
        data = bytearray(
            fmt.frame(
                Kind.PICKLE,
                stored_size=size,
                raw_size=size,
                flags=Flag.CHECKED,
                payload_check=check,
            )
        )
        for at, xor in flips:
            data[at] ^= xor
        if recheck:
            data[28:] = fmt.CHECK.pack(fmt.checksum(bytes(data[:28])))
        try:
            h = fmt.decode_frame_header(bytes(data), 0, None)
        except sp.CorruptStreamError:
            h = None
        plain_pickle = h is not None and (h.kind, h.codec, h.flags) == (
            Kind.PICKLE,
            fmt.Codec.NONE,
            Flag.CHECKED,
        )
        small = h is not None and plain_pickle and h.stored_size <= unpickler._SMALL_FRAME
        expected = h.stored_size if small and h is not None else -1
        assert unpickler._SMALL.size(bytes(data)) == expected

    @given(
        payload=st.binary(max_size=3000),
        kind=st.sampled_from([bytes, bytearray, memoryview]),
    )
    def test_a_one_frame_record_from_c_is_the_general_encoders_bytes(
        self, payload: bytes, kind: type
    ) -> None:
        """The writer's small records (``SMALL_RECORDS.frame``, in C) are the
        bytes the Python encoders give, which the reader's fast path takes."""
        record = fmt.SMALL_RECORDS.frame(kind(payload))
        n = len(payload)
        assert record == (
            fmt.frame(
                Kind.PICKLE,
                stored_size=n,
                raw_size=n,
                flags=Flag.CHECKED,
                payload_check=fmt.checksum(payload),
            )
            + payload
            + fmt.frame(Kind.RECORD_END, raw_size=n)
        )
        assert fmt.SMALL_RECORDS.size(record[:32]) == n

    @given(size=st.integers(0, fmt.MAX_FRAME_SIZE), check=st.integers(0, 2**32 - 1))
    def test_plain_pickle_header_is_the_general_encoders_bytes(
        self, size: int, check: int
    ) -> None:
        header = fmt.plain_pickle_header(size, check)
        assert header == fmt.frame(
            Kind.PICKLE,
            stored_size=size,
            raw_size=size,
            flags=Flag.CHECKED,
            payload_check=check,
        )
        h = fmt.decode_frame_header(header, 0, None)
        assert (h.stored_size, h.payload_check) == (size, check)

    @pytest.mark.parametrize("position", range(0, 256, 7))
    def test_buffer_payload_after_pad_is_aligned(self, position: int) -> None:
        pad = fmt.pad_before_buffer(position)
        after = position if pad < 0 else position + fmt.FRAME_HEADER.size + pad
        assert (after + fmt.FRAME_HEADER.size) % fmt.ALIGNMENT == 0
        assert pad < fmt.ALIGNMENT


class TestVectors:
    @pytest.mark.parametrize("name", make_vectors.NAMES)
    def test_committed_vectors_still_load(self, name: str) -> None:
        with sp.Unpickler(VECTORS / f"{name}.sp") as u:
            got = list(u)
        assert_equal(got, make_vectors.expected(name))

    @pytest.mark.parametrize("name", make_vectors.NAMES)
    def test_committed_vectors_load_memory_mapped(self, name: str) -> None:
        with sp.Unpickler(VECTORS / f"{name}.sp", mmap_mode="r") as u:
            if name == "v1_zstd":
                with pytest.warns(UserWarning, match="decompressed into memory"):
                    got = list(u)
            else:
                got = list(u)
        assert_equal(got, make_vectors.expected(name))

    def test_plain_vector_is_what_the_writer_still_writes(self) -> None:
        # Plain Python data pickles identically across numpy versions.
        assert make_vectors.write("v1_plain") == (VECTORS / "v1_plain.sp").read_bytes()

    def test_vector_written_to_a_socket_has_no_index(self) -> None:
        assert sp.read_index(VECTORS / "v1_no_index.sp") is None
        index = sp.read_index(VECTORS / "v1_records.sp")
        assert index is not None and len(index.records) == 4


def assert_equal(got: Any, want: Any) -> None:
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype
        assert got.flags.f_contiguous == want.flags.f_contiguous
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, dict):
        assert got.keys() == want.keys()
        for k in want:
            assert_equal(got[k], want[k])
    elif isinstance(want, list | tuple):
        assert type(got) is type(want) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_equal(g, w)
    else:
        assert got == want and type(got) is type(want)


def test_read_index_of_bytesio_matches_records() -> None:
    data = (VECTORS / "v1_records.sp").read_bytes()
    index = sp.read_index(io.BytesIO(data))
    assert index is not None
    assert [r.buffer_count for r in index.records] == [1, 1, 1, 1]
