"""A bounded-memory walk of a stream for the ``streampickle`` command: every
frame header, each record's pickle opcodes (read with ``pickletools``' opcode
table, long arguments skipped rather than held) on a small symbolic stack that
resolves NEXT_BUFFER and array shapes, and, for ``verify``, every payload
checked in 1 MiB blocks. It never unpickles.
"""

from __future__ import annotations

import io
import pickletools
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import IO, Any, NamedTuple, cast

import numpy as np
import xxhash
import zstandard

from . import codecs as spcodecs
from . import format as fmt
from .errors import StreamError, TruncatedStreamError
from .format import Codec, Flag, FrameHeader, Kind
from .frames import FrameReader
from .index import index_from_end, scan_index
from .io import FileSource

BLOCK = 1 << 20  # verify reads payloads in blocks of this size
INLINE = 1 << 12  # longer pickle string and bytes arguments are skipped, not held
HEADER = fmt.FRAME_HEADER.size
OpInfo = pickletools.OpcodeInfo


class UsageError(Exception):
    """Bad arguments: exit status 2."""


class CliError(Exception):
    """A bad file or a failed command: exit status 1."""


class Bad(CliError):
    def __init__(self, offset: int, what: str) -> None:
        super().__init__(f"bad at offset {offset}: {what}")


def size_text(n: float) -> str:
    """A byte count for people.

    >>> size_text(400000), size_text(12), size_text(3 << 30)
    ('390.6 KiB', '12 B', '3.0 GiB')
    """
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{int(n)} B" if i == 0 else f"{n:.1f} {units[i]}"


def count(n: int, noun: str) -> str:
    """
    >>> count(1, "record"), count(2, "buffer")
    ('1 record', '2 buffers')
    """
    return f"{n} {noun}{'s' * (n != 1)}"


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.drawn = max(total, 1), label, 0.0
        self.on = sys.stderr.isatty()

    def __call__(self, done: int) -> None:
        if self.on and time.monotonic() - self.drawn >= 0.1:
            self.drawn = time.monotonic()
            frac = min(done / self.total, 1.0)
            sys.stderr.write(f"\r{self.label} [{'#' * int(frac * 40):<40}] {frac:4.0%}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


# ---------------------------------------------------------------------------
# Following a record's pickle without unpickling it.


def short(obj: Any) -> str:
    """``repr(obj)``, but a summary for ints too long for ``repr``."""
    big = isinstance(obj, int) and obj.bit_length() > 4096
    return f"<int of {obj.bit_length()} bits>" if big else repr(obj)


@dataclass
class Buf:
    """One out-of-band buffer, as its frames and the pickle describe it."""

    number: int  # in its record
    offset: int  # of its BUFFER frame header
    size: int
    stored: int
    codec: str
    dtype: str | None = None
    shape: tuple[int, ...] | None = None


@dataclass
class Rec:
    number: int
    offset: int
    first_buffer: int
    pickle_raw: int = 0
    pickle_stored: int = 0
    buffers: list[Buf] = field(default_factory=list)


class Global(NamedTuple):
    module: Any
    name: Any


class DType:
    """A ``numpy.dtype(code, ...)`` call; BUILD later sets its byte order."""

    def __init__(self, code: Any) -> None:
        self.code, self.order = code, "|"

    def text(self) -> str:
        try:
            dt = np.dtype(self.code)
            if self.order in "<>" and dt.itemsize > 1:
                dt = dt.newbyteorder(cast(Any, self.order))
            return str(dt.str if dt.byteorder == ">" else dt.name)
        except Exception:  # whatever the stream says, this is only a label
            return str(self.code)


OPAQUE: Any = object()  # a value the stack machine does not follow
CONSTANTS: dict[str, Any] = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
CONSTANTS["EMPTY_TUPLE"] = ()


class Stack:
    """Just enough of an unpickler to follow the stack depth and the memo, and to
    see which dtype and shape each buffer becomes. Values it does not model are
    OPAQUE; the memo keeps only modelled ones (strings, globals, dtypes, tuples)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.marks: list[tuple[int, int]] = []  # (stack length, pickle position)
        self.memo: dict[int, Any] = {}
        self.memo_len = 0

    def depth(self) -> int:
        return len(self.items) + len(self.marks)  # marks count, as in pickletools

    def step(self, op: OpInfo, arg: Any, pos: int, buffer: Buf | None) -> str:
        """Apply the opcode at ``pos``; a note for ``dis``."""
        name, items, before, note = op.name, self.items, op.stack_before, ""
        if name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            idx = self.memo_len if name == "MEMOIZE" else int(arg)
            self.memo_len = max(self.memo_len, idx + 1)
            if items and isinstance(items[-1], str | tuple | DType | Buf):
                self.memo[idx] = items[-1]
            return f"(as {idx})" if name == "MEMOIZE" else ""
        if name == "MARK":
            self.marks.append((len(items), pos))
            return ""
        at = len(items) - len(before)
        if pickletools.markobject in before:  # the values above the mark, and below
            top, mark_pos = self.marks.pop() if self.marks else (0, -1)
            at, note = top - before.index(pickletools.markobject), f"(MARK at {mark_pos})"
        args = [OPAQUE] * -min(at, 0) + items[max(at, 0) :]
        del items[max(at, 0) :]
        value = OPAQUE
        if name in ("GET", "BINGET", "LONG_BINGET"):
            value = self.memo.get(int(arg), OPAQUE)
        elif name in CONSTANTS:
            value = CONSTANTS[name]
        elif name.startswith("TUPLE"):
            value = tuple(args)
        elif name == "STACK_GLOBAL":
            value = Global(*args)
        elif name == "NEXT_BUFFER":
            value = buffer
        elif name == "READONLY_BUFFER":
            value = args[0]
        elif name == "REDUCE":
            value, note = self.reduce(*args)
        elif name == "BUILD":
            value, state = args
            if isinstance(value, DType) and isinstance(state, tuple) and len(state) > 1:
                value.order = state[1] if isinstance(state[1], str) else "|"
        elif not before and op.arg is not None:
            value = arg  # a constant: int, float, str or bytes
        items.extend([value] * len(op.stack_after))
        return note

    @staticmethod
    def reduce(func: Any, args: Any) -> tuple[Any, str]:
        if not isinstance(func, Global) or not isinstance(args, tuple) or not args:
            return OPAQUE, ""
        if func == ("numpy", "dtype"):
            return DType(args[0]), ""
        buf = args[0]
        if func.name == "_frombuffer" and isinstance(buf, Buf) and len(args) == 4:
            buf.dtype = args[1].text() if isinstance(args[1], DType) else None
            if isinstance(args[2], tuple) and all(type(d) is int for d in args[2]):
                buf.shape = args[2]
            return OPAQUE, f"-> ndarray {buf.dtype} {buf.shape} from buffer {buf.number}"
        return OPAQUE, ""


_OPS = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
_LENGTH = {
    pickletools.TAKEN_FROM_ARGUMENT4: struct.Struct("<i"),
    pickletools.TAKEN_FROM_ARGUMENT4U: struct.Struct("<I"),
    pickletools.TAKEN_FROM_ARGUMENT8U: struct.Struct("<Q"),
}


def opcodes(stream: RecordStream) -> Iterator[tuple[int, OpInfo, Any]]:
    """(position, opcode, argument) of a record's pickle through STOP, as
    ``pickletools.genops`` gives them, except that string and bytes arguments
    longer than INLINE are skipped (and shown as their size): memory stays bounded."""
    while True:
        pos = stream.tell()
        code = stream.read(1)
        op = _OPS.get(code)
        if op is None:
            raise stream.bad(pos, f"unknown opcode {code!r}" if code else "no STOP")
        arg: Any = None
        try:
            if op.arg is not None and op.arg.n in _LENGTH:
                length = _LENGTH[op.arg.n]
                head = stream.read(length.size)
                n = length.unpack(head)[0] if len(head) == length.size else 0
                if n <= INLINE:
                    arg = op.arg.reader(io.BytesIO(head + stream.read(max(n, 0))))
                elif stream.skip(n) == n:
                    arg = f"<{n} bytes, not shown>"
                else:
                    raise ValueError(f"the pickle ends inside its {n}-byte argument")
            elif op.arg is not None:
                arg = op.arg.reader(cast(IO[bytes], stream))
        except ValueError as exc:
            raise stream.bad(pos, f"bad argument of {op.name}: {exc}") from None
        yield pos, op, arg
        if op.name == "STOP":
            return


class RecordStream:
    """One record's pickle bytes, decoded from its PICKLE frames only as they
    are asked for; the other frames met on the way go to the walker."""

    def __init__(self, walker: Walker, first: FrameHeader) -> None:
        self.walker, self.first = walker, cast(FrameHeader | None, first)
        self.chunk, self.pos, self.done = b"", 0, 0
        self.end: FrameHeader | None = None
        self.frame_at = first.offset  # of the PICKLE frame being read

    def bad(self, pos: int, what: str) -> Bad:
        return Bad(
            self.frame_at,
            f"record {self.walker.rec.number}, pickle byte {pos}: "
            f"{what} (PICKLE frame at offset {self.frame_at})",
        )

    def _more(self) -> bool:
        while self.end is None:
            h, self.first = self.first or self.walker.header(), None
            data = self.walker.in_record(h)
            if h.kind is Kind.RECORD_END:
                self.end = h
            elif data:
                self.done += len(self.chunk)
                self.chunk, self.pos, self.frame_at = data, 0, h.offset
                return True
        return False

    def _take(self, n: int, out: bytearray | None) -> int:
        done = 0
        while done < n and (self.pos < len(self.chunk) or self._more()):
            take = min(n - done, len(self.chunk) - self.pos)
            if out is not None:
                out += self.chunk[self.pos : self.pos + take]
            done, self.pos = done + take, self.pos + take
        return done

    def tell(self) -> int:
        return self.done + self.pos

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        self._take(n, out)
        return bytes(out)

    def skip(self, n: int) -> int:
        return self._take(n, None)

    def readline(self) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n") and (self.pos < len(self.chunk) or self._more()):
            stop = self.chunk.find(b"\n", self.pos)
            stop = len(self.chunk) if stop < 0 else stop + 1
            line += self.chunk[self.pos : stop]
            self.pos = stop
        return bytes(line)


class Payload:
    """The next ``n`` bytes of the source, read in blocks and hashed on the way:
    the file zstd's ``stream_reader`` reads a chunk from."""

    def __init__(self, walker: Walker, n: int, what: str) -> None:
        self.walker, self.left, self.what = walker, n, what
        self.hasher = xxhash.xxh3_64()

    def read(self, size: int = -1) -> bytes:
        want = min(BLOCK, self.left, BLOCK if size < 0 else size)
        buf = bytearray(want)
        if self.walker.source.readinto(memoryview(buf)) < want:
            at = self.walker.source.position
            raise TruncatedStreamError(f"input ended at offset {at} inside {self.what}")
        self.left -= want
        self.hasher.update(buf)
        return bytes(buf)

    def check(self) -> int:
        """Read the rest; the check of all the bytes."""
        while self.left:
            self.read()
        self.walker.progress(self.walker.source.position)
        return self.hasher.intdigest() & 0xFFFFFFFF


def unzstd_problem(payload: Payload, raw: int) -> str:
    """Why the zstd frame in ``payload`` does not decode to ``raw`` bytes, or ''."""
    got = 0
    try:
        src = cast(IO[bytes], payload)
        with zstandard.ZstdDecompressor().stream_reader(src, closefd=False) as z:
            while got <= raw and (piece := z.read(BLOCK)):
                got += len(piece)
    except zstandard.ZstdError as exc:
        return f"does not decompress: {exc}"
    more = "more than " * (got > raw)
    return "" if got == raw else f"decompresses to {more}{min(got, raw)} bytes, not {raw}"


# ---------------------------------------------------------------------------
# Walking a stream file, frame by frame.


class Walker:
    """Walks a stream file front to back: every frame header (checked), each
    record's pickle opcodes and the record structure. ``mode`` is the command:
    "dis" prints what it meets and reports a bad PICKLE check instead of
    stopping, "info" keeps the records, "verify" reads and checks every payload
    in blocks (the others seek past buffer payloads)."""

    def __init__(self, path: str, mode: str) -> None:
        self.source = FileSource(open(path, "rb"), owned=True)
        self.frames = FrameReader(self.source, threads=0)
        self.size, self.mode = self.source.remaining() or 0, mode
        self.progress: Callable[[int], None] = lambda done: None
        self.version = self.count = self.buffers = self.at = self.index_at = 0
        self.totals = {"PICKLE": [0, 0], "BUFFER": [0, 0]}  # raw, stored
        self.records: list[Rec] = []
        self.rec, self.after_pad, self.trailing, self.unchecked = Rec(0, 0, 0), False, 0, 0

    def show(self, h: FrameHeader, check: str, note: str = "") -> None:
        self.unchecked += check == "unchecked"
        if self.mode == "dis":
            flags = "|".join(str(f.name) for f in Flag if f & h.flags) or "-"
            print(
                f"{h.offset:>12}  {h.kind.name:<10} {h.codec.name.lower():<4} "
                f"{flags:<15} {h.stored_size:>11} {h.raw_size:>11}  {check:<9} "
                f"{note}".rstrip()
            )

    def header(self) -> FrameHeader:
        self.at = self.source.position
        h = self.frames.next_header()
        if h is None:
            raise TruncatedStreamError(f"input ended at offset {self.at} inside a record")
        return h

    def run(self, only: int | None = None) -> None:
        """Walk the whole stream, or only record ``only``."""
        self.version, _ = self.frames.stream_header()
        self.at = self.source.position
        if only is not None:
            try:
                index = index_from_end(self.source)
            except StreamError:
                index = None
            entries = (index or scan_index(self.source).index).records
            if not -len(entries) <= only < len(entries):
                raise UsageError(f"no record {only}: the stream has {len(entries)}")
            self.source.seek(entries[only].offset)
            self.buffers = entries[only].first_buffer
            return self.record(self.header(), only % len(entries))
        while (h := self.frames.next_header()) is not None:
            if h.kind in (Kind.INDEX, Kind.END):
                return self.tail(h)
            self.record(h, self.count)
            self.at = self.source.position
        done = count(self.count, "record")
        raise TruncatedStreamError(
            f"input ended at offset {self.source.position} after "
            f"{done}, without the stream's END frame"
        )

    def record(self, first: FrameHeader, number: int) -> None:
        rec = self.rec = Rec(number, first.offset, self.buffers)
        stream, stack, taken = RecordStream(self, first), Stack(), 0
        for pos, op, arg in opcodes(stream):
            note, buf = "", None
            if op.name == "NEXT_BUFFER":
                if taken == len(rec.buffers):
                    raise stream.bad(pos, f"NEXT_BUFFER takes buffer {taken}, not yet read")
                buf, taken = rec.buffers[taken], taken + 1
                note = f"-> buffer {buf.number} ({buf.size} bytes, BUFFER frame at offset "
                note += f"{buf.offset})"
            note = stack.step(op, arg, pos, buf) or note
            if self.mode == "dis":
                text = "" if arg is None else short(arg)
                text = " ".join(filter(None, [text[:60] + "..." * (len(text) > 60), note]))
                print(f"{pos:>24}  {stack.depth():>5}  {op.name:<16} {text}".rstrip())
        if stream.skip(1):
            raise stream.bad(stream.tell() - 1, "pickle bytes after STOP")
        end, n = cast(FrameHeader, stream.end), len(rec.buffers)
        if taken != n:
            raise Bad(end.offset, f"record {number} has {n} buffers, its pickle {taken}")
        if (end.raw_size, end.param) != (rec.pickle_raw, n):
            raise Bad(
                end.offset,
                f"{end.where()} counts {end.raw_size} pickle bytes and "
                f"{end.param} buffers; the record has {rec.pickle_raw} and {n}",
            )
        self.count, self.buffers = self.count + 1, self.buffers + n
        self.totals["PICKLE"][0] += rec.pickle_raw
        self.totals["PICKLE"][1] += rec.pickle_stored
        self.totals["BUFFER"][0] += sum(b.size for b in rec.buffers)
        self.totals["BUFFER"][1] += sum(b.stored for b in rec.buffers)
        if self.mode == "info":
            self.records.append(rec)

    def in_record(self, h: FrameHeader) -> bytes:
        """Handle a frame of the current record; the pickle bytes it holds."""
        if self.after_pad and (h.kind is not Kind.BUFFER or h.codec is not Codec.NONE):
            raise Bad(h.offset, f"{h.where()} follows a PAD frame, where a BUFFER must")
        self.after_pad = h.kind is Kind.PAD
        if h.kind is Kind.PICKLE:
            return self.pickle(h)
        if h.kind is Kind.PAD:
            if any(self.frames.payload(h)):
                raise Bad(h.offset + HEADER, f"nonzero padding in {h.where()}")
            self.show(h, "-")
        elif h.kind is Kind.BUFFER:
            self.buffer(h)
        elif h.kind is Kind.RECORD_END:
            self.show(h, "-", f"end of record {self.rec.number}")
        else:
            raise Bad(h.offset, f"{h.where()} inside record {self.rec.number}")
        return b""

    def pickle(self, h: FrameHeader) -> bytes:
        data = self.frames.exact(h.stored_size, h.where())
        ok = not h.checked or fmt.checksum(data) == h.payload_check
        if not ok and self.mode != "dis":
            raise Bad(h.offset + HEADER, f"payload check mismatch in {h.where()}")
        rec = self.rec
        rec.pickle_raw += h.raw_size
        rec.pickle_stored += len(data)
        if h.codec is Codec.ZSTD:
            out = bytearray(h.raw_size)
            spcodecs.decompress_into(data, memoryview(out), h.where())
            data = bytes(out)
        check = ("ok" if ok else "BAD") if h.checked else "unchecked"
        self.show(h, check, f"record {rec.number}, pickle bytes ..{rec.pickle_raw}")
        return data

    def buffer(self, h: FrameHeader) -> None:
        rec, number = self.rec, len(self.rec.buffers)
        if h.payload_check != fmt.buffer_ordinal_check(number):
            raise Bad(h.offset, f"{h.where()} is not buffer {number} of its record")
        buf = Buf(number, h.offset, h.raw_size, h.stored_size, h.codec.name.lower())
        rec.buffers.append(buf)
        note = f"record {rec.number}, buffer {number}"
        if h.codec is Codec.NONE:
            return self.show(h, self.payload(h), note)
        self.show(h, "-", f"{note}, {-(-h.raw_size // h.param)} chunks follow")
        for i, start in enumerate(range(0, h.raw_size, h.param)):
            want, lanes, j = min(h.param, h.raw_size - start), 1, 0
            while j < lanes:  # one CHUNK frame, or k byte lanes (SHUFFLE, param k)
                c = self.header()
                if j == 0 and c.kind is Kind.CHUNK and Flag.SHUFFLE in c.flags:
                    lanes = c.param
                what = f"chunk {i}" + f", lane {j}" * (lanes > 1)
                if (
                    c.kind is not Kind.CHUNK
                    or c.raw_size * lanes != want
                    or (
                        (Flag.SHUFFLE in c.flags) != (lanes > 1)
                        or c.param not in (0, lanes)
                    )
                ):
                    raise Bad(
                        c.offset,
                        f"{c.where()} where {what} ({want // lanes} bytes) "
                        f"of {h.where()} was expected",
                    )
                buf.stored += c.stored_size
                self.show(c, self.payload(c), what)
                j += 1

    def payload(self, h: FrameHeader) -> str:
        """Skip the payload of a BUFFER, CHUNK or INDEX frame, or (verify) check it
        and decompress it in blocks: the state for the check column."""
        size = h.stored_size + h.check_table_size()
        if self.mode != "verify" or (h.kind is Kind.BUFFER and not h.checked):
            self.frames.skip(size, h.where())
            return "not read" if self.mode != "verify" else "unchecked"
        if h.kind is not Kind.BUFFER:
            payload = Payload(self, h.stored_size, h.where())
            problem = unzstd_problem(payload, h.raw_size) if h.codec is Codec.ZSTD else ""
            if h.checked and payload.check() != h.payload_check:
                raise Bad(h.offset + HEADER, f"payload check mismatch in {h.where()}")
            if problem:
                raise Bad(h.offset + HEADER, f"{h.where()} {problem}")
            payload.check()  # the rest of an unchecked payload
        else:
            starts = range(0, h.raw_size, h.param)
            sizes = [min(h.param, h.raw_size - s) for s in starts]
            sums = [Payload(self, n, h.where()).check() for n in sizes]  # in order
            table = self.frames.exact(h.check_table_size(), f"check table of {h.where()}")
            checks = struct.iter_unpack("<I", table)
            for i, (got, (want,)) in enumerate(zip(sums, checks, strict=True)):
                if got != want:
                    at = i * h.param
                    end = min(at + h.param, h.raw_size)
                    raise Bad(
                        h.offset + HEADER + at,
                        f"check mismatch in chunk {i} "
                        f"(buffer bytes {at}..{end}) of {h.where()}",
                    )
        return "ok" if h.checked else "unchecked"

    def tail(self, h: FrameHeader) -> None:
        """The stream's INDEX (if any) and END."""
        if h.kind is Kind.INDEX:
            self.index_at = h.offset
            self.show(h, self.payload(h), "the index")
            h = self.header()
            if h.kind is not Kind.END:
                raise Bad(h.offset, f"{h.where()} where END was expected")
        if h.raw_size != self.index_at:
            raise Bad(
                h.offset,
                f"{h.where()} points to an index at {h.raw_size}, not {self.index_at}",
            )
        self.show(h, "-", f"index at offset {h.raw_size}" if h.raw_size else "no index")
        self.trailing = self.source.remaining() or 0


def index_problem(source: FileSource) -> tuple[bool, str]:
    """(present, problem): whether the stream has an index, and what is wrong
    with it ('' if it agrees with a scan of the frame headers)."""
    try:
        index = index_from_end(source)
    except StreamError as exc:
        return True, str(exc)
    if index is None:
        return False, ""
    scan = scan_index(source)
    if scan.problem is not None:
        return True, f"the frames do not scan: {scan.problem}"
    for what, mine, real in (
        ("record", index.records, scan.index.records),
        ("buffer", index.buffers, scan.index.buffers),
    ):
        if mine != real:
            i = next(i for i, (a, b) in enumerate(zip_longest(mine, real)) if a != b)
            has = [x[i] if i < len(x) else "nothing" for x in (mine, real)]
            return True, f"{what} {i}: the index has {has[0]}, the frames {has[1]}"
    return True, ""
