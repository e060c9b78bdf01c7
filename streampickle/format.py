"""The streampickle stream format: every constant, field and limit in one place.

This module is the executable form of ``docs/FORMAT.md``. It knows bytes, not
files: it packs and unpacks the stream header and frame headers, validates
them against the limits below, computes checksums and lays out the index. The
pickler, the unpickler and the I/O adapters take every number they need from
here.

All integers are little-endian. Offsets are counted from the first byte of the
stream header (offset 0), not from the start of the file that holds it.
"""

from __future__ import annotations

import enum
import functools
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import xxhash

from ._pickle_scan import SmallRecords
from .errors import CorruptStreamError, TruncatedStreamError

# ---------------------------------------------------------------------------
# Stream header: 16 bytes at offset 0.

#: PNG-style magic: a non-ASCII first byte catches 7-bit channels, CR LF and
#: the lone LF catch newline translation, 0x1A stops a DOS ``type``.
MAGIC = b"\x89SPK\r\n\x1a\n"
#: Format version written by this library; readers accept 1..VERSION.
VERSION = 1
#: magic (8s), version (u16), flags (u16, must be 0), header check (u32).
STREAM_HEADER = struct.Struct("<8sHHI")
assert STREAM_HEADER.size == 16

# ---------------------------------------------------------------------------
# Frame header: 32 bytes before every frame.


class Field(NamedTuple):
    """One field of the frame header, as documented in docs/FORMAT.md."""

    name: str
    fmt: str
    doc: str


FRAME_FIELDS = (
    Field("kind", "B", "what the frame holds: a Kind value"),
    Field("codec", "B", "how the payload is stored: a Codec value"),
    Field("flags", "B", "Flag bits; unknown bits must be 0"),
    Field("reserved", "B", "must be 0"),
    Field("param", "I", "kind-specific: chunk size, buffer count (see Kind)"),
    Field("stored_size", "Q", "bytes of payload that follow the header"),
    Field("raw_size", "Q", "bytes the payload decodes to; kind-specific otherwise"),
    Field("payload_check", "I", "low 32 bits of XXH3-64 of the payload, or 0"),
    Field("header_check", "I", "low 32 bits of XXH3-64 of header bytes 0..27"),
)
FRAME_HEADER = struct.Struct("<" + "".join(f.fmt for f in FRAME_FIELDS))
assert FRAME_HEADER.size == 32
#: The same 32 bytes with kind, codec, flags and reserved read as one u32.
_HEADER_WORDS = struct.Struct("<IIQQII")
#: Bytes of the frame header covered by ``header_check``.
HEADER_CHECKED = FRAME_HEADER.size - 4
#: Those bytes alone: what ``frame`` packs before it appends their check.
_HEADER_CHECKED_PART = struct.Struct(FRAME_HEADER.format[:-1])
assert _HEADER_CHECKED_PART.size == HEADER_CHECKED


class Kind(enum.IntEnum):
    """Frame kinds. A record is PICKLE and BUFFER frames, then RECORD_END."""

    #: Pickle bytes of the current record; they concatenate across frames.
    PICKLE = 1
    #: One out-of-band buffer; ``raw_size`` is its length, ``param`` the check
    #: chunk size. Uncompressed, the payload is the buffer itself, starting at
    #: a 64-byte aligned offset and followed by the chunk check table.
    BUFFER = 2
    #: One chunk of a compressed BUFFER (``raw_size`` bytes of it, stored as
    #: the codec says), or with SHUFFLE one byte lane of such a chunk, whose
    #: items are ``param`` bytes wide.
    CHUNK = 4
    #: Ends a record; ``raw_size`` is its pickle byte count, ``param`` its
    #: number of buffers. No payload.
    RECORD_END = 3
    #: Zero bytes that align the payload of the following BUFFER frame.
    PAD = 5
    #: The record and buffer offsets of the stream (seekable outputs only).
    INDEX = 6
    #: Ends the stream; ``raw_size`` is the offset of the INDEX frame or 0.
    END = 7


class Codec(enum.IntEnum):
    """How a frame's payload is stored."""

    NONE = 0
    #: One zstd frame, which decompresses to exactly ``raw_size`` bytes.
    ZSTD = 1


class Flag(enum.IntFlag):
    """Frame flag bits."""

    #: The frame carries payload checks (``payload_check`` or a check table).
    CHECKED = 0x01
    #: BUFFER only: the pickler marked the buffer read-only.
    READONLY = 0x02
    #: CHUNK only: the frame is one byte lane of a chunk of ``param``-byte items.
    SHUFFLE = 0x04


NO_FLAGS = Flag(0)
# Decoding a header looks these up rather than calling the enums (a frame each).
_KINDS = {int(k): k for k in Kind}
_CODECS = {int(c): c for c in Codec}
_FLAGS = {i: Flag(i) for i in range(int(Flag.CHECKED | Flag.READONLY | Flag.SHUFFLE) + 1)}
#: The flags each kind may carry; the others carry none and a zero payload_check.
ALLOWED_FLAGS = {
    Kind.PICKLE: Flag.CHECKED,
    Kind.BUFFER: Flag.CHECKED | Flag.READONLY,
    Kind.CHUNK: Flag.CHECKED | Flag.SHUFFLE,
    Kind.INDEX: Flag.CHECKED,  # always set: the index is always checked
}
#: The kinds whose payload may be compressed.
COMPRESSIBLE = frozenset({Kind.PICKLE, Kind.BUFFER, Kind.CHUNK})
#: Flag values with CHECKED set (a set lookup is cheaper than ``&``).
_CHECKED_FLAGS = frozenset(f for f in _FLAGS.values() if int(f) & Flag.CHECKED)
#: Kinds without a payload check: their ``payload_check`` must be 0.
_UNCHECKED_KINDS = frozenset({Kind.PAD, Kind.RECORD_END, Kind.END})

# ---------------------------------------------------------------------------
# Layout rules and limits. A reader refuses anything beyond them before it
# allocates, so a hostile length costs nothing.

#: Out-of-band buffer data starts at offsets that are multiples of this.
ALIGNMENT = 64
#: Default size of pickle frames and of buffer check chunks.
DEFAULT_FRAME_SIZE = 4 << 20
MIN_FRAME_SIZE = 4 << 10
#: Largest pickle frame payload and largest check chunk.
MAX_FRAME_SIZE = 256 << 20
#: Largest single out-of-band buffer (256 TiB).
MAX_BUFFER_SIZE = 1 << 48
#: Buffers smaller than this are written in-band: a frame costs ~100 bytes.
MIN_OUT_OF_BAND = 1024
#: Largest item size of the shuffle filter.
MAX_SHUFFLE_ITEMSIZE = 256
#: Largest INDEX payload.
MAX_INDEX_SIZE = 1 << 32
#: Size of one entry of a BUFFER frame's check table.
CHECK = struct.Struct("<I")
#: A BUFFER's ordinal in its record, as its ``payload_check`` covers it.
ORDINAL = struct.Struct("<Q")


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The 32-bit check of ``data``: the low half of its XXH3-64 (seed 0).

    >>> hex(checksum(b""))
    '0x38d394c2'
    """
    return xxh3_64(data) & 0xFFFFFFFF


#: XXH3-64 itself, for code that takes the low half on its own (the reader's
#: C fast path).
xxh3_64 = xxhash.xxh3_64_intdigest


# ---------------------------------------------------------------------------
# Stream header.


def encode_stream_header() -> bytes:
    """The 16 bytes every stream starts with."""
    return _STREAM_HEADER_BYTES


def _encode_stream_header() -> bytes:
    head = STREAM_HEADER.pack(MAGIC, VERSION, 0, 0)[:12]
    return head + CHECK.pack(checksum(head))


def decode_stream_header(data: bytes) -> int:
    """Validate a stream header and return its version."""
    if data == _STREAM_HEADER_BYTES:  # what this writer writes (one per sp.dump)
        return VERSION
    magic, version, flags, check = STREAM_HEADER.unpack(data)
    if magic != MAGIC:
        raise CorruptStreamError(
            f"not a streampickle stream: bad magic {magic!r} at offset 0"
        )
    if check != checksum(data[:12]):
        raise CorruptStreamError("stream header check mismatch at offset 0")
    if not 1 <= version <= VERSION:
        raise CorruptStreamError(
            f"unsupported format version {version} at offset 0 "
            f"(this reader knows 1..{VERSION})"
        )
    if flags:
        raise CorruptStreamError(f"unknown stream flags {flags:#x} at offset 0")
    return int(version)


# ---------------------------------------------------------------------------
# Frame headers.


class FrameHeader(NamedTuple):
    """A decoded, validated frame header (a tuple: one is made per frame)."""

    kind: Kind
    codec: Codec
    flags: Flag
    param: int
    stored_size: int
    raw_size: int
    payload_check: int
    offset: int = 0  # where the header starts in the stream

    def encode(self) -> bytes:
        return frame(
            self.kind,
            codec=self.codec,
            flags=self.flags,
            param=self.param,
            stored_size=self.stored_size,
            raw_size=self.raw_size,
            payload_check=self.payload_check,
        )

    @property
    def checked(self) -> bool:
        return self.flags in _CHECKED_FLAGS

    def where(self) -> str:
        return f"{self.kind.name} frame at offset {self.offset}"

    def check_table_size(self) -> int:
        """Bytes of the check table that follow an uncompressed BUFFER payload."""
        if self.kind is not Kind.BUFFER or self.codec or not self.checked:
            return 0
        return -(-self.raw_size // self.param) * CHECK.size


_new_tuple = tuple.__new__
#: Reading ``Kind.BUFFER`` costs ~70 ns on CPython 3.11 (a metaclass lookup), a global ~15.
_BUFFER = Kind.BUFFER


def frame(
    kind: Kind,
    *,
    stored_size: int = 0,
    raw_size: int = 0,
    param: int = 0,
    flags: Flag = NO_FLAGS,
    payload_check: int = 0,
    codec: Codec = Codec.NONE,
) -> bytes:
    """Encode one frame header."""
    head = _HEADER_CHECKED_PART.pack(
        kind, codec, flags, 0, param, stored_size, raw_size, payload_check
    )
    return head + CHECK.pack(xxh3_64(head) & 0xFFFFFFFF)


#: The first four header bytes, read as ``_HEADER_TYPES`` keys them, of a
#: checked, uncompressed PICKLE frame: the frame most records start with.
_PLAIN_PICKLE = int(Kind.PICKLE) | int(Flag.CHECKED) << 16
#: The checked part of a header, its first four bytes as one word.
_PLAIN_PICKLE_HEAD = struct.Struct(_HEADER_WORDS.format[:-1])


def plain_pickle_header(size: int, check: int) -> bytes:
    """The header of a checked, uncompressed PICKLE frame of ``size`` bytes
    whose payload check is ``check``: ``frame(Kind.PICKLE, ...)``'s bytes,
    made in half its time (one per small message)."""
    head = _PLAIN_PICKLE_HEAD.pack(_PLAIN_PICKLE, 0, size, size, check)
    return head + CHECK.pack(xxh3_64(head) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=1024)
def whole_record_end(pickle_bytes: int) -> bytes:
    """The RECORD_END header that closes a record of ``pickle_bytes`` pickle
    bytes and no buffers, as writers encode it. A reader that finds exactly
    these bytes after a record's first PICKLE frame knows the record ends
    there, valid, without decoding them (small messages: the same few sizes
    recur, hence the cache)."""
    return frame(Kind.RECORD_END, raw_size=pickle_bytes)


def decode_frame_header(data: bytes, offset: int, limit: int | None) -> FrameHeader:
    """Validate a 32-byte frame header found at ``offset``.

    ``limit`` is how many bytes the source still holds after the header, when
    known (a file); lengths beyond it are refused here, before any allocation.
    """
    first4, param, stored, raw, pcheck, hcheck = _HEADER_WORDS.unpack(data)
    if hcheck != xxh3_64(data[:HEADER_CHECKED]) & 0xFFFFFFFF:
        raise CorruptStreamError(f"frame header check mismatch at offset {offset}")
    entry = _HEADER_TYPES.get(first4)
    if entry is None:
        _refuse_fields(first4, offset)
    kind, codec, flags, sizes_ok = entry  # type: ignore[misc]
    # tuple.__new__ directly: NamedTuple's own __new__ is Python code.
    fields = (kind, codec, flags, param, stored, raw, pcheck, offset)
    header: FrameHeader = _new_tuple(FrameHeader, fields)
    if pcheck and kind in _UNCHECKED_KINDS:
        raise CorruptStreamError(f"nonzero payload check in {header.where()}")
    if not sizes_ok(param, stored, raw):
        raise CorruptStreamError(
            f"invalid sizes in {header.where()}: stored {stored}, raw {raw}, param {param}"
        )
    if limit is not None:
        need = stored + header.check_table_size() if kind is _BUFFER else stored
        if need > limit:  # the header checked out, so the input was cut
            raise TruncatedStreamError(
                f"{header.where()} claims {need} bytes but only {limit} remain"
            )
    return header


def _refuse_fields(first4: int, offset: int) -> None:
    """Raise the error that names what is wrong in a header's first four bytes."""
    kind_, codec_, flags_, reserved = first4.to_bytes(4, "little")
    kind = _KINDS.get(kind_)
    if kind is None:
        raise CorruptStreamError(f"unknown frame kind {kind_} at offset {offset}")
    where = f"{kind.name} frame at offset {offset}"
    codec = _CODECS.get(codec_)
    if codec is None:
        raise CorruptStreamError(f"unknown codec {codec_} in {where}")
    if codec is not Codec.NONE and kind not in COMPRESSIBLE:
        raise CorruptStreamError(f"codec {codec.name} not allowed in {where}")
    if first4 & 0xFFFFFF not in _HEADER_TYPES:
        raise CorruptStreamError(f"flag bits {flags_:#x} not allowed in {where}")
    raise CorruptStreamError(f"nonzero reserved byte {reserved:#x} in {where}")


SizeRule = Callable[[int, int, int], bool]


def _size_rule(kind: Kind, codec: Codec, flags: Flag) -> SizeRule:
    """Whether ``(param, stored, raw)`` are sizes the format allows for a frame
    of this kind, codec and flags: uncompressed payloads are their raw bytes,
    compressed ones are smaller. Made once per valid header type, so decoding
    a header compares ints, not enums."""
    plain = codec is Codec.NONE
    if kind is Kind.PICKLE:
        if plain:
            return lambda param, stored, raw: stored == raw <= MAX_FRAME_SIZE and not param
        return lambda param, stored, raw: stored <= raw <= MAX_FRAME_SIZE and not param
    if kind in (Kind.RECORD_END, Kind.END):
        # END's param is 0; RECORD_END's counts the record's buffers.
        any_param = kind is Kind.RECORD_END
        return lambda param, stored, raw: (
            not stored and raw <= MAX_BUFFER_SIZE and (any_param or not param)
        )
    if kind is Kind.BUFFER:
        # Compressed, the buffer follows as CHUNK frames; the BUFFER has no payload.
        return lambda param, stored, raw: (
            raw <= MAX_BUFFER_SIZE
            and stored == (raw if plain else 0)
            and MIN_FRAME_SIZE <= param <= MAX_FRAME_SIZE
        )
    if kind is Kind.CHUNK:
        shuffled = Flag.SHUFFLE in flags
        return lambda param, stored, raw: (
            (stored == raw if plain else stored <= raw)
            and 0 < raw <= MAX_FRAME_SIZE
            and (1 < param <= MAX_SHUFFLE_ITEMSIZE if shuffled else not param)
        )
    if kind is Kind.PAD:
        return lambda param, stored, raw: stored == raw < ALIGNMENT and not param
    assert kind is Kind.INDEX
    return lambda param, stored, raw: stored == raw <= MAX_INDEX_SIZE and not param


#: Every valid header type, keyed by the header's first four bytes (kind,
#: codec, flags, a zero reserved byte) read as one little-endian u32: one dict
#: lookup per header gives its enums and its size rule (small messages decode
#: two headers per record).
_HEADER_TYPES: dict[int, tuple[Kind, Codec, Flag, SizeRule]] = {
    int(k) | int(c) << 8 | i << 16: (k, c, f, _size_rule(k, c, f))
    for k in Kind
    for c in Codec
    for i, f in _FLAGS.items()
    if (c is Codec.NONE or k in COMPRESSIBLE)
    and not i & ~int(ALLOWED_FLAGS.get(k, NO_FLAGS))
    and (k is not Kind.INDEX or i)
}


def buffer_ordinal_check(ordinal: int) -> int:
    """The ``payload_check`` of a BUFFER frame: the check of its ordinal in
    its record (u64), so a reader notices buffers swapped or spliced in.

    >>> hex(buffer_ordinal_check(0))
    '0x6f87acd9'
    """
    return checksum(ORDINAL.pack(ordinal))


def pad_before_buffer(position: int) -> int:
    """Payload length of the PAD frame to write at ``position`` so that the
    BUFFER header after it ends on an ALIGNMENT boundary; -1 for no PAD.

    >>> pad_before_buffer(32), pad_before_buffer(16), pad_before_buffer(0)
    (-1, 48, 0)
    """
    gap = (ALIGNMENT - FRAME_HEADER.size - position) % ALIGNMENT
    if gap == 0:
        return -1
    return (gap - FRAME_HEADER.size) % ALIGNMENT


# ---------------------------------------------------------------------------
# The index: where each record and buffer starts.

INDEX_COUNTS = struct.Struct("<QQ")  # records, buffers
INDEX_RECORD = struct.Struct("<QQQ")  # record offset, first buffer, buffer count
INDEX_BUFFER = struct.Struct("<Q")  # offset of the BUFFER frame header


class RecordEntry(NamedTuple):
    offset: int
    first_buffer: int
    buffer_count: int


@dataclass(frozen=True)
class Index:
    """Offsets of every record and every BUFFER frame header."""

    records: tuple[RecordEntry, ...]
    buffers: tuple[int, ...]

    def encode(self) -> bytes:
        parts = [INDEX_COUNTS.pack(len(self.records), len(self.buffers))]
        parts += [INDEX_RECORD.pack(*r) for r in self.records]
        parts += [INDEX_BUFFER.pack(b) for b in self.buffers]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes, where: str) -> Index:
        if len(data) < INDEX_COUNTS.size:
            raise CorruptStreamError(f"index too short in {where}")
        n_rec, n_buf = INDEX_COUNTS.unpack_from(data)
        want = INDEX_COUNTS.size + n_rec * INDEX_RECORD.size + n_buf * INDEX_BUFFER.size
        if want != len(data):
            raise CorruptStreamError(
                f"index of {n_rec} records and {n_buf} buffers needs {want} "
                f"bytes, {where} holds {len(data)}"
            )
        pos = INDEX_COUNTS.size
        records = tuple(
            RecordEntry(*INDEX_RECORD.unpack_from(data, pos + i * INDEX_RECORD.size))
            for i in range(n_rec)
        )
        pos += n_rec * INDEX_RECORD.size
        buffers = tuple(
            INDEX_BUFFER.unpack_from(data, pos + i * INDEX_BUFFER.size)[0]
            for i in range(n_buf)
        )
        if any(r.first_buffer + r.buffer_count > n_buf for r in records):
            raise CorruptStreamError(f"index buffer range out of bounds in {where}")
        return cls(records, buffers)


def encode_tail(index: Index | None, at: int) -> bytes:
    """The frames that end a stream whose tail starts at offset ``at``: the
    INDEX (when given) and END, which points to it."""
    if index is None:
        return NO_INDEX_END
    body = index.encode()
    return (
        frame(
            Kind.INDEX,
            stored_size=len(body),
            raw_size=len(body),
            flags=Flag.CHECKED,
            payload_check=checksum(body),
        )
        + body
        + frame(Kind.END, raw_size=at)
    )


#: Made once (sp.dump and sp.load handle one of each per message).
_STREAM_HEADER_BYTES = _encode_stream_header()
#: The END frame of a stream without an index (written to pipes and sockets).
NO_INDEX_END = frame(Kind.END)


#: Most small messages are records of one checked PICKLE frame and their
#: RECORD_END. In C, told by the encoders above what those headers start with:
#: ``frame(pickle)`` encodes such a record for the writer; ``size`` and
#: ``load`` check one and load it for the reader (``_small_records.c``).
#: Records larger than ``max_size`` go the general way.
SMALL_RECORDS = SmallRecords(
    pickle_word=int.from_bytes(plain_pickle_header(0, 0)[:4], "little"),
    end_word=int.from_bytes(whole_record_end(0)[:4], "little"),
    max_size=1 << 20,
    checksum=xxh3_64,
    loads=pickle.loads,
    stream_header=_STREAM_HEADER_BYTES,
    stream_end=NO_INDEX_END,
)
