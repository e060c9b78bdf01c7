"""A reader written from docs/FORMAT.md alone, sharing no code with streampickle: if it
reads the committed vectors, the document is enough to read them."""

from __future__ import annotations

import bisect
import itertools
import pickle
import pickletools
import re
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
import zstandard  # a zstd decoder (RFC 8878), as xxhash is an XXH3: no streampickle code

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "vectors"))
from make_vectors import NAMES, expected  # noqa: E402

MAGIC = b"\x89SPK\r\n\x1a\n"
HDR = struct.Struct("<BBBBIQQII")
PICKLE, BUFFER, RECORD_END, CHUNK, PAD, INDEX, END = 1, 2, 3, 4, 5, 6, 7
CHECKED, READONLY, SHUFFLE = 0x01, 0x02, 0x04
NONE, ZSTD = 0, 1
#: "flags allowed" column of the kinds table (INDEX: CHECKED, always set).
ALLOWED_FLAGS = {PICKLE: CHECKED, BUFFER: CHECKED | READONLY, RECORD_END: 0,
                 CHUNK: CHECKED | SHUFFLE, PAD: 0, INDEX: CHECKED, END: 0}
#: "PICKLE, BUFFER and CHUNK frames may have codec ZSTD".
MAY_COMPRESS = {PICKLE, BUFFER, CHUNK}
MiB = 1 << 20

IndexEntries = tuple[list[tuple[int, int, int]], list[int]]
Buf = bytes | bytearray


class SpecError(Exception):
    """The bytes break a rule of the document."""


class Truncated(SpecError):
    """The input ended early; `records` are the complete ones read before that."""

    def __init__(self, msg: str, records: list[Any]) -> None:
        super().__init__(msg)
        self.records = records


def check(b: bytes) -> int:
    """check(bytes): the low 32 bits of XXH3-64, seed 0."""
    return xxhash.xxh3_64_intdigest(b) & 0xFFFFFFFF


def ordinal_check(i: int) -> int:
    """A BUFFER's payload_check: check(its ordinal in its record, as a u64)."""
    return check(struct.pack("<Q", i))


def require(ok: bool, msg: str, off: int) -> None:
    if not ok:
        raise SpecError(f"offset {off}: {msg}")


@dataclass
class Frame:
    offset: int
    kind: int
    codec: int
    flags: int
    param: int
    stored: int
    raw: int
    payload_check: int

    @property
    def end(self) -> int:
        table = 0
        if self.kind == BUFFER and self.codec == NONE and self.flags & CHECKED:
            table = 4 * -(-self.stored // self.param)  # ceil(N / C) entries
        return self.offset + 32 + self.stored + table

    def payload(self, data: bytes) -> bytes:
        return data[self.offset + 32 : self.offset + 32 + self.stored]


def read_frame(data: bytes, off: int, records: list[Any]) -> Frame:
    """The frame header at `off`, checked before any field is used. The
    payload_check of PICKLE, BUFFER and INDEX depends on more than the header
    (payload, ordinal); the caller checks it."""
    if off + 32 > len(data):
        raise Truncated(f"offset {off}: input ends inside a frame header", records)
    kind, codec, flags, res, param, stored, raw, pcheck, hcheck = HDR.unpack_from(data, off)
    require(check(data[off : off + 28]) == hcheck, "bad frame header check", off)
    require(kind in ALLOWED_FLAGS, f"unknown kind {kind}", off)
    require(codec in (NONE, ZSTD), f"unknown codec {codec}", off)
    require(codec == NONE or kind in MAY_COMPRESS, f"codec {codec} in kind {kind}", off)
    require(res == 0, "reserved byte is not 0", off)
    require(flags & ~ALLOWED_FLAGS[kind] == 0, f"bad flags {flags:#x} for kind {kind}", off)
    require(kind != INDEX or bool(flags & CHECKED), "INDEX without CHECKED", off)
    if kind in (PICKLE, CHUNK) and not flags & CHECKED or kind in (RECORD_END, PAD, END):
        require(pcheck == 0, "payload_check must be 0", off)
    # NONE: stored bytes are the raw bytes; ZSTD: n <= raw_size bytes decompress to them.
    fits = raw == stored if codec == NONE else stored <= raw
    # CHUNK: a lane (SHUFFLE) names the item size k; its raw_size is L / k, so
    # whether k divides the chunk's length L is checked with the chunk, not here.
    chunk_param = 2 <= param <= 256 if kind == CHUNK and flags & SHUFFLE else param == 0
    sizes_ok = {
        # The table bounds n; for ZSTD we hold raw_size to the same 256 MiB.
        PICKLE: param == 0 and stored <= 256 * MiB and raw <= 256 * MiB and fits,
        BUFFER: 4096 <= param <= 256 * MiB and raw <= 2**48
        and stored == (raw if codec == NONE else 0),
        RECORD_END: stored == 0 and raw <= 2**48,
        CHUNK: 1 <= raw <= 256 * MiB and fits and chunk_param,
        PAD: param == 0 and 0 <= stored < 64 and raw == stored,
        INDEX: param == 0 and stored <= 2**32 and raw == stored,
        END: param == 0 and stored == 0,
    }[kind]
    require(sizes_ok, f"sizes/param break the table for kind {kind}", off)
    frame = Frame(off, kind, codec, flags, param, stored, raw, pcheck)
    if frame.end > len(data):
        raise Truncated(f"offset {off}: kind {kind} claims more bytes than remain", records)
    return frame


def verify_table(data: bytes, f: Frame) -> None:
    start, n, c = f.offset + 32, f.stored, f.param
    for i, (entry,) in enumerate(struct.iter_unpack("<I", data[start + n : f.end])):
        chunk = data[start + i * c : start + min((i + 1) * c, n)]
        require(check(chunk) == entry, f"BUFFER chunk {i} fails its check", f.offset)


def unzstd(payload: bytes, raw: int, off: int) -> bytes:
    """One zstd frame, the whole payload, decompressing to exactly `raw` bytes.
    Fed in small pieces, so no more than a block past `raw` is produced."""
    d = zstandard.ZstdDecompressor().decompressobj()
    out, pos = bytearray(), 0
    try:
        while pos < len(payload) and not d.eof and len(out) <= raw:
            out += d.decompress(payload[pos : pos + 256])
            pos += 256
    except zstandard.ZstdError as e:
        raise SpecError(f"offset {off}: zstd error: {e}") from e
    require(len(out) == raw, f"zstd frame yields {len(out)}+ bytes, not {raw}", off)
    require(d.eof, "zstd frame does not end", off)
    require(not d.unused_data and pos >= len(payload), "bytes after the zstd frame", off)
    return bytes(out)


def unshuffle(lanes: list[bytes], k: int) -> bytes:
    """A chunk from its k byte lanes of m bytes: lane j's byte [i] is chunk byte
    [i·k + j], for item i in [0, m)."""
    m = len(lanes[0])
    return np.frombuffer(b"".join(lanes), np.uint8).reshape(k, m).T.tobytes()


def chunk_bytes(data: bytes, f: Frame) -> bytes:
    """The raw_size bytes a CHUNK frame (a whole chunk or one lane) stores, its
    payload check verified: verbatim for codec NONE, one zstd frame for ZSTD.
    read_frame has already held a NONE frame's stored_size to its raw_size."""
    payload = f.payload(data)
    ok = not f.flags & CHECKED or check(payload) == f.payload_check
    require(ok, "CHUNK payload check", f.offset)
    return payload if f.codec == NONE else unzstd(payload, f.raw, f.offset)


def read_chunk(data: bytes, off: int, i: int, length: int,
               records: list[Any]) -> tuple[bytes, int]:
    """Chunk i (`length` bytes) from the frames at `off`: one CHUNK frame without
    SHUFFLE (whole), or k with SHUFFLE, param k and raw_size length / k (byte
    lanes); the first frame says which. Returns its bytes and the offset past it."""
    first = read_frame(data, off, records)
    require(first.kind == CHUNK, f"chunk {i} is missing", off)
    if not first.flags & SHUFFLE:  # whole: param 0 (read_frame), raw_size L
        require(first.raw == length, f"chunk {i} holds {first.raw} bytes, not {length}",
                off)
        return chunk_bytes(data, first), first.end
    k = first.param
    require(length % k == 0, f"item size {k} does not divide chunk {i} of {length}", off)
    lanes = []
    for j in range(k):
        f = first if j == 0 else read_frame(data, off, records)
        require(f.kind == CHUNK, f"lane {j} of {k} of chunk {i} is missing", off)
        require(bool(f.flags & SHUFFLE) and f.param == k,
                f"lane {j} of chunk {i} has param {f.param}, not {k}", off)
        require(f.raw == length // k,
                f"lane {j} of chunk {i} holds {f.raw} bytes, not {length // k}", off)
        lanes.append(chunk_bytes(data, f))
        off = f.end
    return unshuffle(lanes, k), off


def read_chunks(data: bytes, f: Frame, records: list[Any]) -> tuple[bytes, int]:
    """A compressed BUFFER's bytes from the frames of its ceil(N / C) chunks right
    after it (chunk i holds bytes [i·C, min((i+1)·C, N))), and the offset past them."""
    out, off = bytearray(), f.end
    for i, start in enumerate(range(0, f.raw, f.param)):
        got, off = read_chunk(data, off, i, min(start + f.param, f.raw) - start, records)
        out += got
    return bytes(out), off


def decode(parts: list[tuple[int, bytes]], buffers: list[Buf], off: int) -> Any:
    """One record: `parts` are (BUFFER frames seen so far, payload) per PICKLE frame."""
    pickled = b"".join(p for _, p in parts)
    try:
        ops = list(pickletools.genops(pickled))
    except ValueError as e:
        raise SpecError(f"offset {off}: malformed pickle: {e}") from e
    op, _, stop = ops[-1]
    require(op.name == "STOP" and stop == len(pickled) - 1, "bytes after STOP", off)
    takes = [pos for op, _, pos in ops if op.name == "NEXT_BUFFER" and pos is not None]
    require(len(takes) == len(buffers), "record does not use every BUFFER frame", off)
    starts = [0, *itertools.accumulate(len(p) for _, p in parts)]
    for i, pos in enumerate(takes):
        seen = parts[bisect.bisect_right(starts, pos) - 1][0]
        require(i < seen, f"NEXT_BUFFER #{i} comes before its BUFFER frame", off)
    return pickle.loads(pickled, buffers=buffers)


@dataclass
class Scan:
    records: list[Any] = field(default_factory=list)
    record_entries: list[tuple[int, int, int]] = field(default_factory=list)
    buffer_offsets: list[int] = field(default_factory=list)
    index_offset: int = 0
    end: int = 0  # offset just past END


def scan(data: bytes) -> Scan:
    """Read a whole stream front to back, checking every MUST."""
    if not data:
        raise EOFError("zero-byte input")
    if len(data) < 16:
        raise Truncated("input ends inside the stream header", [])
    require(data[:8] == MAGIC, "bad magic", 0)
    version, flags, hcheck = struct.unpack_from("<HHI", data, 8)
    require(check(data[:12]) == hcheck, "bad stream header check", 0)
    require(version == 1, f"unsupported format version {version}", 0)
    require(flags == 0, "stream flags are not 0", 0)
    s, off, prev = Scan(), 16, 0
    parts: list[tuple[int, bytes]] = []
    buffers: list[Buf] = []
    rec_start: int | None = None
    while True:
        f = read_frame(data, off, s.records)
        payload, next_off = f.payload(data), f.end
        ok = prev != PAD or f.kind == BUFFER and f.codec == NONE
        require(ok, "PAD not followed by an uncompressed BUFFER", off)
        require(f.kind != CHUNK, "CHUNK outside a compressed BUFFER", off)
        require(prev != INDEX or f.kind == END, "INDEX not followed by END", off)
        if rec_start is None and f.kind in (PICKLE, BUFFER, PAD, RECORD_END):
            rec_start = off
        closed = rec_start is None or f.kind not in (INDEX, END)
        require(closed, "record not closed by RECORD_END", off)
        if f.kind == PICKLE:
            ok = not f.flags & CHECKED or check(payload) == f.payload_check
            require(ok, "PICKLE payload check", off)
            if f.codec == ZSTD:  # the check covers the stored bytes
                payload = unzstd(payload, f.raw, off)
            parts.append((len(buffers), payload))
        elif f.kind == PAD:
            require(payload == bytes(len(payload)), "nonzero padding", off)
        elif f.kind == BUFFER:
            # Alignment is the writer's duty; readers MUST NOT refuse a misaligned one.
            ordinal = len(buffers)
            require(f.payload_check == ordinal_check(ordinal),
                    f"BUFFER payload_check is not check(u64 {ordinal})", off)
            if f.codec == ZSTD:
                payload, next_off = read_chunks(data, f, s.records)
            elif f.flags & CHECKED:
                verify_table(data, f)
            s.buffer_offsets.append(off)
            # Writable: the pickle's READONLY_BUFFER opcode makes it read-only.
            buffers.append(bytearray(payload))
        elif f.kind == RECORD_END:
            assert rec_start is not None
            n_pickle = sum(len(p) for _, p in parts)
            require(n_pickle >= 1, "record without PICKLE bytes", off)
            require(f.raw == n_pickle, "RECORD_END raw_size != pickle bytes", off)
            require(f.param == len(buffers), "RECORD_END param != BUFFER frames", off)
            s.records.append(decode(parts, buffers, rec_start))
            first = len(s.buffer_offsets) - len(buffers)
            s.record_entries.append((rec_start, first, len(buffers)))
            parts, buffers, rec_start = [], [], None
        elif f.kind == INDEX:
            require(check(payload) == f.payload_check, "INDEX payload check", off)
            s.index_offset = off
        else:  # END
            require(f.raw == s.index_offset, "END raw_size is not the INDEX offset", off)
            s.end = f.end
            return s
        off, prev = next_off, f.kind


def index_from_end(data: bytes) -> IndexEntries | None:
    """Random access: END is the last 32 bytes, INDEX runs from its raw_size to END."""
    require(len(data) >= 16 + 32, "too short to hold END", 0)
    end = read_frame(data, len(data) - 32, [])
    require(end.kind == END, "last 32 bytes are not an END header", end.offset)
    if end.raw == 0:
        return None
    require(16 <= end.raw <= end.offset - 32, "END raw_size outside the stream", end.offset)
    idx = read_frame(data, end.raw, [])
    ok = idx.kind == INDEX and idx.end == end.offset
    require(ok, "no INDEX ending where END begins", end.raw)
    payload = idx.payload(data)
    require(check(payload) == idx.payload_check, "INDEX payload check", idx.offset)
    r, b = struct.unpack_from("<QQ", payload)
    require(len(payload) == 16 + 24 * r + 8 * b, "INDEX size != 16 + 24R + 8B", idx.offset)
    recs = list(struct.iter_unpack("<QQQ", payload[16 : 16 + 24 * r]))
    bufs = [o for (o,) in struct.iter_unpack("<Q", payload[16 + 24 * r :])]
    below = all(o < idx.offset for o in [*bufs, *(e[0] for e in recs)])
    require(below, "INDEX offset not below the INDEX frame", idx.offset)
    return recs, bufs


def assert_same(got: Any, exp: Any) -> None:
    if isinstance(exp, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype.str == exp.dtype.str
        assert got.dtype == exp.dtype and got.shape == exp.shape
        for flag in ("C_CONTIGUOUS", "F_CONTIGUOUS", "WRITEABLE"):
            assert got.flags[flag] == exp.flags[flag], flag
        np.testing.assert_array_equal(got, exp)
    elif isinstance(exp, dict):
        assert isinstance(got, dict) and got.keys() == exp.keys()
        for k in exp:
            assert_same(got[k], exp[k])
    else:
        assert type(got) is type(exp) and got == exp


@pytest.mark.parametrize("name", NAMES)
def test_vector(name: str) -> None:
    data = (HERE / "vectors" / f"{name}.sp").read_bytes()
    s = scan(data)
    assert s.end == len(data)
    for got, want in zip(s.records, expected(name), strict=True):
        assert_same(got, want)
    index = index_from_end(data)
    if name == "v1_no_index":
        assert index is None and s.index_offset == 0
    else:
        assert index is not None and s.index_offset != 0
        assert index == (s.record_entries, s.buffer_offsets)


def all_frames(data: bytes) -> list[Frame]:
    """Every frame of a well-formed stream, CHUNK frames included."""
    out, off = [], 16
    while off < len(data):
        out.append(read_frame(data, off, []))
        off = out[-1].end
    return out


@pytest.mark.parametrize("name", NAMES)
def test_vector_writer_aligned_every_buffer(name: str) -> None:
    """A writer duty, not a reader check: each vector was written from offset 0
    of its file (or to a socket), so every uncompressed BUFFER payload starts at
    a multiple of 64 in the stream, and a PAD precedes a BUFFER header only when
    needed (and never a compressed one, which is not aligned)."""
    frames = all_frames((HERE / "vectors" / f"{name}.sp").read_bytes())
    raw = [f for f in frames if f.kind == BUFFER and f.codec == NONE]
    assert raw or name == "v1_plain"
    for f in raw:
        assert (f.offset + 32) % 64 == 0, f"BUFFER payload at {f.offset + 32}"
    for f, after in itertools.pairwise(frames):
        if f.kind == PAD:
            assert after.kind == BUFFER and after.codec == NONE
            assert after.offset % 64 == 32 and f.offset % 64 != 32
    if name == "v1_zstd":  # what the vector is there for
        kinds = {(f.kind, f.codec, f.flags & SHUFFLE) for f in frames}
        assert {(PICKLE, ZSTD, 0), (BUFFER, ZSTD, 0), (CHUNK, NONE, 0), (CHUNK, ZSTD, 0),
                (CHUNK, NONE, SHUFFLE), (CHUNK, ZSTD, SHUFFLE)} <= kinds


def test_worked_example() -> None:
    """The first hex dump in the document is a complete stream holding None."""
    text = (HERE.parent / "docs" / "FORMAT.md").read_text()
    dump = text.split("## Worked example")[1].split("```")[1]
    data = bytearray()
    for line in dump.splitlines():
        if m := re.match(r"([0-9a-f]{3})  (.*)", line):
            assert int(m[1], 16) == len(data)
            data += bytes.fromhex(re.split(r"\s{3,}", m[2])[0])
    assert len(data) == 188
    s = scan(bytes(data))
    assert s.records == [None] and index_from_end(bytes(data)) == ([(16, 0, 0)], [])


def test_worked_buffer_example() -> None:
    """The second hex dump: a PAD to 0x60, then a BUFFER frame whose header is
    printed whole and whose data is np.arange(256, dtype="<i4")."""
    text = (HERE.parent / "docs" / "FORMAT.md").read_text()
    dump = text.split("## Worked example")[1].split("```")[3]
    known: dict[int, bytes] = {}
    for line in dump.splitlines():
        if m := re.match(r"([0-9a-f]{3})  (.*)", line):
            shown = re.split(r"\s{3,}", m[2])[0].split("...")[0]  # the bytes before "..."
            known[int(m[1], 16)] = bytes.fromhex(shown)
    pad_head = known[0x010]  # kind .. param, then the low bytes of stored_size
    assert pad_head[:8] == bytes([PAD, 0, 0, 0, 0, 0, 0, 0])
    assert 0x10 + 32 + pad_head[8] == 0x60 and pad_head[9:] == bytes(3)
    data = bytearray(0x60)
    for at in (0x60, 0x68, 0x78):  # the BUFFER frame header, all 32 bytes
        assert at == len(data)
        data += known[at]
    payload = np.arange(256, dtype="<i4").tobytes()
    assert payload.startswith(known[0x080]) and payload.endswith(bytes.fromhex("ff000000"))
    data += payload + known[0x480]
    f = read_frame(bytes(data), 0x60, [])
    assert (f.kind, f.flags, f.param, f.stored) == (BUFFER, CHECKED, 0x400000, 1024)
    assert f.payload_check == ordinal_check(0) and f.end == 0x484 == len(data)
    assert (f.offset + 32) % 64 == 0
    verify_table(bytes(data), f)
    assert known[0x484][:4] == bytes([PICKLE, 0, CHECKED, 0])


def test_documented_check_values() -> None:
    text = (HERE.parent / "docs" / "FORMAT.md").read_text()
    m = re.search(r"For\s+the empty input, check = `0x([0-9a-f]{8})`", text)
    assert m is not None and int(m[1], 16) == check(b"") == 0x38D394C2
    assert ordinal_check(0).to_bytes(4, "little") == bytes.fromhex("d9ac876f")


# ---------------------------------------------------------------------------
# Streams built here, byte by byte, to pin the rules the vectors do not reach.


def header(kind: int, *, flags: int = 0, param: int = 0, stored: int = 0,
           raw: int | None = None, pcheck: int = 0, codec: int = NONE) -> bytes:
    raw = stored if raw is None else raw
    head = HDR.pack(kind, codec, flags, 0, param, stored, raw, pcheck, 0)[:28]
    return head + struct.pack("<I", check(head))


def reheader(data: bytes, off: int, **fields: int) -> bytes:
    """`data` with fields of the frame header at `off` replaced, header check redone."""
    names = ["kind", "codec", "flags", "res", "param", "stored", "raw", "pcheck"]
    values = dict(zip(names, HDR.unpack_from(data, off), strict=False))
    values.update(fields)
    head = HDR.pack(*(values[n] for n in names), 0)[:28]
    return data[:off] + head + struct.pack("<I", check(head)) + data[off + 32 :]


STREAM_HEADER = MAGIC + struct.pack("<HH", 1, 0)
STREAM_HEADER += struct.pack("<I", check(STREAM_HEADER))
#: Two 4196-byte buffers: two check chunks of C = 4096 each, the last partial.
A = bytes((7 * i) % 251 for i in range(4196))
B = bytes((11 * i + 3) % 253 for i in range(4196))
TWO = pickle.dumps([pickle.PickleBuffer(bytearray(A)), pickle.PickleBuffer(bytearray(B))],
                   protocol=5, buffer_callback=lambda _: False)


def buffer_frame(data: bytes, ordinal: int, *, checked: bool = True) -> bytes:
    table = b"".join(struct.pack("<I", check(data[i : i + 4096]))
                     for i in range(0, len(data), 4096))
    h = header(BUFFER, flags=CHECKED if checked else 0, param=4096, stored=len(data),
               pcheck=ordinal_check(ordinal))
    return h + data + (table if checked else b"")


def built(*, pad: int | None = 0, ordinals: tuple[int, int] = (0, 1),
          checked: bool = True, index: bool = True) -> bytes:
    """One record taking A and B: [PAD] BUFFER BUFFER PICKLE (an empty one, then
    TWO) RECORD_END, [INDEX] END. Nothing is aligned: BUFFERs start anywhere."""
    out = bytearray(STREAM_HEADER)
    if pad is not None:
        out += header(PAD, stored=pad) + bytes(pad)
    bufs = []
    for data, ordinal in zip((A, B), ordinals, strict=True):
        bufs.append(len(out))
        out += buffer_frame(data, ordinal, checked=checked)
    out += header(PICKLE, flags=CHECKED, pcheck=check(b""))
    out += header(PICKLE, flags=CHECKED, stored=len(TWO), pcheck=check(TWO)) + TWO
    out += header(RECORD_END, param=2, raw=len(TWO))
    at = 0
    if index:
        at = len(out)
        body = struct.pack("<QQQQQQQ", 1, 2, 16, 0, 2, *bufs)
        out += header(INDEX, flags=CHECKED, stored=len(body), pcheck=check(body)) + body
    return bytes(out + header(END, raw=at))


def frames(data: bytes) -> dict[int, int]:
    """kind -> offset of its last frame, in a well-formed stream."""
    out, off = {}, 16
    while off < len(data):
        f = read_frame(data, off, [])
        out[f.kind], off = off, f.end
    return out


@pytest.mark.parametrize("pad", [None, 0, 63])
@pytest.mark.parametrize("checked", [True, False])
def test_misaligned_buffers_and_empty_pads_are_read(pad: int | None, checked: bool) -> None:
    data = built(pad=pad, checked=checked)
    s = scan(data)
    assert s.end == len(data) and s.records == [[bytearray(A), bytearray(B)]]
    assert any((o + 32) % 64 for o in s.buffer_offsets)  # misaligned, and accepted
    assert index_from_end(data) == (s.record_entries, s.buffer_offsets)
    assert s.record_entries == [(16, 0, 2)]
    assert scan(built(pad=pad, checked=checked, index=False)).records == s.records


@pytest.mark.parametrize("ordinals", [(1, 0), (0, 0), (1, 1), (0, 2)])
@pytest.mark.parametrize("checked", [True, False])
def test_buffer_payload_check_binds_its_ordinal(ordinals: tuple[int, int],
                                                checked: bool) -> None:
    with pytest.raises(SpecError, match="BUFFER payload_check"):
        scan(built(ordinals=ordinals, checked=checked))


def test_swapped_buffer_frames_of_equal_size_are_refused() -> None:
    data = built()
    first = frames(data)[PAD] + 32
    size = len(buffer_frame(A, 0))
    a, b = data[first : first + size], data[first + size : first + 2 * size]
    with pytest.raises(SpecError, match="BUFFER payload_check"):
        scan(data[:first] + b + a + data[first + 2 * size :])


# kind, header fields to set: each breaks the flags or payload_check column.
BAD_HEADERS = {
    "pickle-readonly": (PICKLE, {"flags": CHECKED | READONLY}),
    "pickle-bit-2": (PICKLE, {"flags": CHECKED | 0x04}),
    "pickle-unchecked-nonzero-check": (PICKLE, {"flags": 0}),
    "buffer-bit-7": (BUFFER, {"flags": CHECKED | 0x80}),
    "record-end-checked": (RECORD_END, {"flags": CHECKED}),
    "record-end-check": (RECORD_END, {"pcheck": 1}),
    "pad-checked": (PAD, {"flags": CHECKED}),
    "pad-check": (PAD, {"pcheck": check(b"")}),
    "index-unchecked": (INDEX, {"flags": 0}),
    "index-readonly": (INDEX, {"flags": CHECKED | READONLY}),
    "end-checked": (END, {"flags": CHECKED}),
    "end-check": (END, {"pcheck": 1}),
    "reserved": (PICKLE, {"res": 1}),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_flags_and_payload_checks_per_kind(case: str) -> None:
    kind, fields = BAD_HEADERS[case]
    data = built(pad=0)
    at = frames(data)[kind]
    bad = reheader(data, at, **fields)
    with pytest.raises(SpecError) as info:
        scan(bad)
    assert not isinstance(info.value, Truncated) and f"offset {at}:" in str(info.value)


@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize("delta", [-1, 1, None])
def test_end_must_point_to_the_index_just_before_it(index: bool, delta: int | None) -> None:
    data = built(index=index)
    at = frames(data)[END]
    points = HDR.unpack_from(data, at)[6]
    assert points == (frames(data)[INDEX] if index else 0)
    wrong = 0 if delta is None else points + delta
    if wrong == points or wrong < 0:
        wrong = 16
    with pytest.raises(SpecError, match="END raw_size"):
        scan(reheader(data, at, raw=wrong))


def test_a_record_holds_at_least_one_pickle_byte() -> None:
    empty = header(PICKLE, flags=CHECKED, pcheck=check(b"")) + header(RECORD_END)
    with pytest.raises(SpecError, match="without PICKLE bytes"):
        scan(STREAM_HEADER + empty + header(END))


def zstd(b: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(b)


def lanes_of(b: bytes, k: int) -> list[bytes]:
    """The doc's layout, built by its formula: lane j's byte [i] is b[i·k + j]."""
    m = len(b) // k
    return [bytes(b[i * k + j] for i in range(m)) for j in range(k)]


def chunk(payload: bytes, raw: int, *, codec: int = ZSTD, k: int = 0,
          checked: bool = True, shuffle: bool | None = None) -> bytes:
    """One CHUNK frame; param k, with SHUFFLE when k (unless `shuffle` says)."""
    shuffle = bool(k) if shuffle is None else shuffle
    flags = (CHECKED if checked else 0) | (SHUFFLE if shuffle else 0)
    return header(CHUNK, codec=codec, flags=flags, param=k, stored=len(payload), raw=raw,
                  pcheck=check(payload) if checked else 0) + payload


def laned(b: bytes, k: int, *, raw: Iterable[int] = (),
          unchecked: Iterable[int] = ()) -> list[bytes]:
    """Chunk `b` as its k lane frames: codec NONE for the lanes in `raw`, ZSTD for
    the others; without CHECKED for those in `unchecked`."""
    raw, unchecked = set(raw), set(unchecked)
    return [chunk(lane if j in raw else zstd(lane), len(lane), k=k,
                  codec=NONE if j in raw else ZSTD, checked=j not in unchecked)
            for j, lane in enumerate(lanes_of(b, k))]


def test_lanes_put_every_byte_back() -> None:
    """Items of k = 4 bytes: lane j holds byte j of every item."""
    b = bytes(range(12))
    assert lanes_of(b, 4) == [b"\x00\x04\x08", b"\x01\x05\x09", b"\x02\x06\x0a",
                              b"\x03\x07\x0b"]
    assert unshuffle(lanes_of(b, 4), 4) == b and unshuffle(lanes_of(b, 2), 2) == b


#: A 10000-byte buffer in C = 4096 chunks: 4096 + 4096 + 1808 (= 8 · 226 = 16 · 113).
ITEMS = np.arange(1250, dtype="<u8") * 1000003
RAW = ITEMS.tobytes()
A0, A1, A2 = RAW[:4096], RAW[4096:8192], RAW[8192:]
TEXT = "compressible " * 50
ONE_BUF = pickle.dumps([pickle.PickleBuffer(bytearray(RAW)), TEXT], protocol=5,
                       buffer_callback=lambda _: False)


def compressed(chunks: list[bytes], *, n: int = len(RAW), pad: bool = False,
               pickled: bytes = ONE_BUF, pickle_codec: int = NONE) -> bytes:
    """One record: a BUFFER of codec ZSTD and these CHUNK frames, then the
    pickle that takes it (compressed if `pickle_codec`), RECORD_END, END."""
    out = STREAM_HEADER + (header(PAD, stored=0) if pad else b"")
    out += header(BUFFER, codec=ZSTD, flags=CHECKED, param=4096, raw=n,
                  pcheck=ordinal_check(0)) + b"".join(chunks)
    stored = zstd(pickled) if pickle_codec == ZSTD else pickled
    out += header(PICKLE, codec=pickle_codec, flags=CHECKED, stored=len(stored),
                  raw=len(pickled), pcheck=check(stored)) + stored
    return out + header(RECORD_END, param=1, raw=len(pickled)) + header(END)


def good_chunks() -> list[bytes]:
    """One of each: whole verbatim, whole zstd, then 8 lanes, the three low (noisy)
    ones verbatim and the rest zstd, one of them unchecked."""
    return [chunk(A0, 4096, codec=NONE), chunk(zstd(A1), 4096, checked=False),
            *laned(A2, 8, raw=(0, 1, 2), unchecked=(5,))]


GOOD_CHUNKS = {
    "one-of-each": good_chunks(),
    "lanes-all-raw": [f for c in (A0, A1, A2) for f in laned(c, 8, raw=range(8))],
    # Bytes 0-2 of the items are noise that zstd cannot shrink (stored ≤ raw_size).
    "lanes-zstd-but-noise": [f for c in (A0, A1, A2) for f in laned(c, 8, raw=(0, 1, 2))],
    "lanes-k-2": [f for c in (A0, A1, A2) for f in laned(c, 2, raw=(0,))],
    "lanes-k-16-between-whole": [chunk(zstd(A0), 4096),
                                 *laned(A1, 16, raw=(0, 1, 2, 8, 9, 10)),
                                 chunk(A2, len(A2), codec=NONE)],
}


@pytest.mark.parametrize("case", list(GOOD_CHUNKS))
@pytest.mark.parametrize("pickle_codec", [NONE, ZSTD])
def test_compressed_buffer_of_every_chunk_kind_is_read(case: str,
                                                       pickle_codec: int) -> None:
    s = scan(compressed(GOOD_CHUNKS[case], pickle_codec=pickle_codec))
    assert s.records == [[bytearray(RAW), TEXT]] and s.buffer_offsets == [16]


def replace(frames: list[bytes], j: int, frame: bytes) -> list[bytes]:
    return [*frames[:j], frame, *frames[j + 1 :]]


def bad_chunks(case: str) -> tuple[list[bytes], str]:
    """A compressed buffer's chunk frames, broken, and the reader's complaint."""
    b, c = A1, A2
    good = good_chunks()
    whole = good[:2]  # chunks 0 and 1, then the 8 lanes of chunk 2
    lanes = laned(c, 8, raw=(0, 1, 2))
    lane = lanes_of(c, 8)
    every = [laned(x, 8, raw=(0, 1)) for x in (A0, A1, A2)]
    return {
        "one-chunk-missing": (whole, "chunk 2 is missing"),
        "chunk-too-long": ([good[0], chunk(zstd(b + c[:8]), 4104), *lanes],
                           "chunk 1 holds 4104 bytes, not 4096"),
        "zstd-yields-less": ([good[0], chunk(zstd(b[:-1]), 4096), *lanes], "zstd frame"),
        "zstd-yields-more": ([good[0], chunk(zstd(b + b"x"), 4096), *lanes], "zstd frame"),
        "bytes-after-the-zstd-frame": ([good[0], chunk(zstd(b) + b"\0", 4096), *lanes],
                                       "bytes after the zstd frame"),
        "not-zstd": ([good[0], chunk(b"not a zstd frame", 4096), *lanes], "zstd error"),
        "stored-over-raw": ([*whole, chunk(c + b"x", len(c), codec=NONE)],
                            "sizes/param break the table for kind 4"),
        "bad-chunk-check": ([good[0][:-1] + bytes([good[0][-1] ^ 1]), *good[1:]],
                            "CHUNK payload check"),
        "pickle-frame-instead": ([*whole, header(PICKLE, stored=0)], "chunk 2 is missing"),
        # Byte lanes.
        "last-lane-missing": ([*whole, *lanes[:-1]], "lane 7 of 8 of chunk 2 is missing"),
        "first-lane-missing": ([*whole, *lanes[1:]], "lane 7 of 8 of chunk 2 is missing"),
        "lane-missing-mid-buffer": ([*every[0], *every[1][:-1], *every[2]],
                                    "lane 7 of chunk 1 holds 226 bytes, not 512"),
        "lane-extra": ([*whole, *lanes, lanes[-1]], "CHUNK outside a compressed BUFFER"),
        "lane-other-param": (whole + replace(lanes, 3, chunk(zstd(lane[3]), 226, k=4)),
                             "lane 3 of chunk 2 has param 4, not 8"),
        "lane-without-shuffle": (whole + replace(lanes, 5, chunk(lane[5], 226, codec=NONE)),
                                 "lane 5 of chunk 2 has param 0, not 8"),
        "lane-param-without-shuffle": (
            whole + replace(lanes, 5, chunk(lane[5], 226, codec=NONE, k=8, shuffle=False)),
            "sizes/param break the table for kind 4"),
        "lane-other-size": (whole + replace(lanes, 2, chunk(lane[2] + b"x", 227, codec=NONE,
                                                            k=8)),
                            "lane 2 of chunk 2 holds 227 bytes, not 226"),
        "lane-zstd-other-size": (
            whole + replace(lanes, 4, chunk(zstd(lane[4][:-1]), 225, k=8)),
            "lane 4 of chunk 2 holds 225 bytes, not 226"),
        "lane-zstd-yields-less": (whole + replace(lanes, 4, chunk(zstd(lane[4][:-1]), 226,
                                                                  k=8)), "zstd frame"),
        "lane-bad-check": (
            whole + replace(lanes, 1, lanes[1][:-1] + bytes([lanes[1][-1] ^ 1])),
            "CHUNK payload check"),
        "lanes-of-the-chunk-size": ([*whole, *[chunk(c, len(c), codec=NONE, k=8)] * 8],
                                    "lane 0 of chunk 2 holds 1808 bytes, not 226"),
        # The previous layout: one frame holding the whole chunk, shuffled.
        "one-frame-shuffled-zstd": ([*whole, chunk(zstd(b"".join(lane)), len(c), k=8)],
                                    "lane 0 of chunk 2 holds 1808 bytes, not 226"),
        "one-frame-shuffled-raw": ([*whole, chunk(b"".join(lane), len(c), codec=NONE, k=8)],
                                   "lane 0 of chunk 2 holds 1808 bytes, not 226"),
        "item-size-not-dividing": ([*whole, *laned(c, 7, raw=range(7))],  # 7 · 258 + 2
                                   "item size 7 does not divide chunk 2 of 1808"),
        "item-size-1": ([*whole, chunk(zstd(c), len(c), k=1)],
                        "sizes/param break the table for kind 4"),
        "item-size-257": ([*whole, chunk(c[:7], 7, codec=NONE, k=257)],
                          "sizes/param break the table for kind 4"),
    }[case]


BAD_CHUNKS = [
    "one-chunk-missing", "chunk-too-long", "zstd-yields-less", "zstd-yields-more",
    "bytes-after-the-zstd-frame", "not-zstd", "stored-over-raw", "bad-chunk-check",
    "pickle-frame-instead", "last-lane-missing", "first-lane-missing",
    "lane-missing-mid-buffer", "lane-extra", "lane-other-param", "lane-without-shuffle",
    "lane-param-without-shuffle", "lane-other-size", "lane-zstd-other-size",
    "lane-zstd-yields-less", "lane-bad-check", "lanes-of-the-chunk-size",
    "one-frame-shuffled-zstd", "one-frame-shuffled-raw", "item-size-not-dividing",
    "item-size-1", "item-size-257",
]


@pytest.mark.parametrize("case", BAD_CHUNKS)
def test_bad_chunks_are_refused(case: str) -> None:
    chunks, complaint = bad_chunks(case)
    with pytest.raises(SpecError, match=re.escape(complaint)) as info:
        scan(compressed(chunks))
    assert not isinstance(info.value, Truncated)


def test_compressed_buffer_rules() -> None:
    with pytest.raises(SpecError, match="PAD not followed"):
        scan(compressed(good_chunks(), pad=True))
    with pytest.raises(SpecError, match="CHUNK outside"):
        scan(STREAM_HEADER + good_chunks()[0] + header(END))
    for kind in (RECORD_END, PAD, INDEX, END):
        fields = {"flags": CHECKED, "pcheck": check(b"")} if kind == INDEX else {}
        with pytest.raises(SpecError, match=f"codec 1 in kind {kind}"):
            scan(STREAM_HEADER + header(kind, codec=ZSTD, **fields))
    unaligned = compressed(good_chunks())  # BUFFER header at 16: payload-less, unaligned
    assert scan(unaligned).records == [[bytearray(RAW), TEXT]]


@pytest.mark.parametrize("name", ["v1_records", "v1_zstd"])
def test_truncation_keeps_complete_records(name: str) -> None:
    data = (HERE / "vectors" / f"{name}.sp").read_bytes()
    with pytest.raises(EOFError):
        scan(b"")
    full = scan(data)
    record_ends = [e[0] for e in full.record_entries[1:]] + [full.index_offset]
    for cut in range(1, len(data), 61):
        with pytest.raises(Truncated) as info:
            scan(data[:cut])
        got = info.value.records
        assert len(got) == sum(end <= cut for end in record_ends)
        for a, b in zip(got, full.records[: len(got)], strict=True):
            assert_same(a, b)


@pytest.mark.parametrize("name", ["v1_records", "v1_arrays", "v1_zstd"])
def test_every_bit_flip_is_caught(name: str) -> None:
    data = (HERE / "vectors" / f"{name}.sp").read_bytes()
    for pos in range(0, len(data), 13):
        bad = bytearray(data)
        bad[pos] ^= 1 << (pos % 8)
        with pytest.raises(SpecError):
            scan(bytes(bad))
