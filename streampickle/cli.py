"""The ``streampickle`` command (also ``python -m streampickle``).

    streampickle info FILE [--json]      what the stream holds, record by record
    streampickle dis FILE [--record N]   its frames and pickle opcodes, as laid out
    streampickle verify FILE             check every byte; exit 1 at the first bad one
    streampickle convert IN OUT [...]    rewrite with other options, or import a
                                         plain pickle or joblib file
    streampickle cat FILE [--record N]   print records, arrays summarised

``info``, ``dis`` and ``verify`` never unpickle: they walk the frames, and each
record's pickle opcode by opcode (with ``pickletools``' opcode table), in bounded
memory. ``info`` and ``dis`` seek past buffer payloads; ``verify`` reads them in
1 MiB blocks. ``convert`` and ``cat`` load records, which runs their pickles: use
them on files you trust. Errors are one line on stderr, exit status 1 for a bad
file and 2 for bad usage.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import pickletools
import pprint
import re
import struct
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, NoReturn, cast

import numpy as np
import xxhash
import zstandard

from . import __version__
from . import codecs as spcodecs
from . import format as fmt
from .errors import StreamError, TruncatedStreamError
from .format import Codec, Flag, FrameHeader, Kind
from .frames import FrameReader
from .index import index_from_end, scan_index
from .io import FileSource
from .pickler import Pickler, check_options
from .unpickler import Unpickler

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


def parse_size(text: str) -> int:
    """A size with an optional K, M or G (KiB, MiB, GiB) suffix.

    >>> parse_size("4M"), parse_size("64KiB"), parse_size("4096")
    (4194304, 65536, 4096)
    """
    m = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size: {text!r}")
    return int(m[1]) << (10 * " kmg".index(m[2].lower() or " "))


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


class Elided(int):
    """A long string or bytes argument, skipped instead of read."""

    def __repr__(self) -> str:
        return f"<{int(self)} bytes>"


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
    longer than INLINE are skipped (``Elided``), so memory stays bounded."""
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
                    arg = Elided(n)
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
        return Bad(self.frame_at, f"record {self.walker.rec.number}, pickle byte {pos}: "
                   f"{what} (PICKLE frame at offset {self.frame_at})")

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
    return "" if got == raw else f"decompresses to {'more than ' * (got > raw)}{min(got, raw)}"


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
        self.rec, self.after_pad, self.trailing = Rec(0, 0, 0), False, 0

    def show(self, h: FrameHeader, check: str, note: str = "") -> None:
        if self.mode == "dis":
            flags = "|".join(str(f.name) for f in Flag if f & h.flags) or "-"
            print(f"{h.offset:>12}  {h.kind.name:<10} {h.codec.name.lower():<4} {flags:<16} "
                  f"{h.stored_size:>11} {h.raw_size:>11}  {check:<9} {note}".rstrip())

    def header(self) -> FrameHeader:
        self.at = self.source.position
        h = self.frames.next_header()
        if h is None:
            raise TruncatedStreamError(f"input ended at offset {self.at} inside a record")
        return h

    def run(self, only: int | None = None) -> None:
        """Walk the whole stream, or only record ``only``."""
        self.version = self.frames.stream_header()
        if only is not None:
            try:
                index = index_from_end(self.source)
            except StreamError:
                index = None
            entries = (index or scan_index(self.source).index).records
            if not -len(entries) <= only < len(entries):
                raise UsageError(f"record {only} out of range: the stream has {len(entries)}")
            self.source.seek(entries[only].offset)
            self.buffers = entries[only].first_buffer
            return self.record(self.header(), only % len(entries))
        while (h := self.frames.next_header()) is not None:
            if h.kind in (Kind.INDEX, Kind.END):
                return self.tail(h)
            self.record(h, self.count)
            self.at = self.source.position
        raise TruncatedStreamError(f"input ended at offset {self.source.position} after "
                                   f"{self.count} records, without the stream's END frame")

    def record(self, first: FrameHeader, number: int) -> None:
        rec = self.rec = Rec(number, first.offset, self.buffers)
        stream, stack, taken = RecordStream(self, first), Stack(), 0
        for pos, op, arg in opcodes(stream):
            note, buf = "", None
            if op.name == "NEXT_BUFFER":
                if taken == len(rec.buffers):
                    raise stream.bad(pos, f"NEXT_BUFFER takes buffer {taken}, not before it")
                buf, taken = rec.buffers[taken], taken + 1
                note = f"-> buffer {buf.number} ({buf.size} bytes, BUFFER frame at offset "
                note += f"{buf.offset})"
            note = stack.step(op, arg, pos, buf) or note
            if self.mode == "dis":
                text = "" if arg is None else repr(arg)
                text = text if len(text) <= 60 else text[:56] + "...'"
                print(f"{pos:>24}  {stack.depth():>4}  {op.name:<16} {text} {note}".rstrip())
        if stream.skip(1):
            raise stream.bad(stream.tell() - 1, "pickle bytes after STOP")
        end, n = cast(FrameHeader, stream.end), len(rec.buffers)
        if taken != n:
            raise Bad(end.offset, f"record {number} has {n} buffers; its pickle takes {taken}")
        if (end.raw_size, end.param) != (rec.pickle_raw, n):
            raise Bad(end.offset, f"{end.where()} counts {end.raw_size} pickle bytes and "
                      f"{end.param} buffers; the record has {rec.pickle_raw} and {n}")
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
        rec.pickle_raw, rec.pickle_stored = rec.pickle_raw + h.raw_size, rec.pickle_stored + len(data)
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
            raise Bad(h.offset, f"{h.where()} is not buffer {number} of record {rec.number}")
        buf = Buf(number, h.offset, h.raw_size, h.stored_size, h.codec.name.lower())
        rec.buffers.append(buf)
        note = f"record {rec.number}, buffer {number}"
        if h.codec is Codec.NONE:
            return self.show(h, self.payload(h), note)
        self.show(h, "-", f"{note}, {-(-h.raw_size // h.param)} chunks follow")
        for i, start in enumerate(range(0, h.raw_size, h.param)):
            c, want = self.header(), min(h.param, h.raw_size - start)
            if c.kind is not Kind.CHUNK or c.raw_size != want:
                raise Bad(c.offset, f"{c.where()} where chunk {i} ({want} bytes) of "
                          f"{h.where()} was expected")
            buf.stored += c.stored_size
            self.show(c, self.payload(c), f"chunk {i}")

    def payload(self, h: FrameHeader) -> str:
        """Skip the payload of a BUFFER, CHUNK or INDEX frame, or (verify) check it
        and decompress it in blocks: the state for the check column."""
        size = h.stored_size + h.check_table_size()
        if self.mode != "verify":
            self.frames.skip(size, h.where())
            return "not read"
        if h.kind is not Kind.BUFFER:
            payload = Payload(self, h.stored_size, h.where())
            problem = unzstd_problem(payload, h.raw_size) if h.codec is Codec.ZSTD else ""
            if h.checked and payload.check() != h.payload_check:
                raise Bad(h.offset + HEADER, f"payload check mismatch in {h.where()}")
            if problem:
                raise Bad(h.offset + HEADER, f"{h.where()} {problem} bytes, not {h.raw_size}")
            payload.check()  # the rest of an unchecked payload
        else:
            starts = range(0, h.raw_size, h.param)
            sums = [Payload(self, min(h.param, h.raw_size - s), h.where()).check() for s in starts]
            table = self.frames.exact(h.check_table_size(), f"check table of {h.where()}")
            for i, (got, (want,)) in enumerate(zip(sums, struct.iter_unpack("<I", table))):
                if got != want:
                    at = i * h.param
                    raise Bad(h.offset + HEADER + at, f"check mismatch in chunk {i} (buffer "
                              f"bytes {at}..{min(at + h.param, h.raw_size)}) of {h.where()}")
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
            raise Bad(h.offset, f"{h.where()} points to an index at {h.raw_size}, "
                      f"not {self.index_at}")
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
    for what, mine, real in (("record", index.records, scan.index.records),
                             ("buffer", index.buffers, scan.index.buffers)):
        if mine != real:
            i = next((i for i, (a, b) in enumerate(zip(mine, real)) if a != b),
                     min(len(mine), len(real)))
            said = [tuple(x[i:i + 1]) for x in (mine, real)]
            return True, f"{what} {i}: the index has {said[0]}, the frames {said[1]}"
    return True, ""


# ---------------------------------------------------------------------------
# The commands.


def cmd_dis(args: argparse.Namespace) -> int:
    walker = Walker(args.file, "dis")
    try:
        print(f"{args.file}: {walker.size} bytes")
        print(f"{'offset':>12}  {'kind':<10} {'code':<4} {'flags':<16} {'stored':>11} "
              f"{'raw':>11}  check     note\n{'pickle byte':>24}  depth  opcode")
        walker.run(args.record)
        shown = walker.buffers - walker.rec.first_buffer * (args.record is not None)
        print(f"# format version {walker.version}: {walker.count} records, {shown} buffers "
              "shown; buffer payloads not read (verify reads them)")
    finally:
        walker.source.close()
    return 0


def ratio(raw: int, stored: int) -> dict[str, Any]:
    return {"raw": raw, "stored": stored, "ratio": round(stored / raw, 4) if raw else None}


def cmd_info(args: argparse.Namespace) -> int:
    walker = Walker(args.file, "info")
    try:
        walker.run()
        present, problem = index_problem(walker.source)
    finally:
        walker.source.close()
    recs = [{"record": r.number, "offset": r.offset, "pickle": ratio(r.pickle_raw,
             r.pickle_stored), "buffers": {"count": len(r.buffers), **ratio(
             sum(b.size for b in r.buffers), sum(b.stored for b in r.buffers)),
             "list": [vars(b) for b in r.buffers]}} for r in walker.records]
    info = {"file": args.file, "size": walker.size, "version": walker.version,
            "record_count": walker.count, "buffer_count": walker.buffers,
            "index": {"present": present, "valid": present and not problem,
                      "problem": problem or None},
            "compression": {k: ratio(*v) for k, v in walker.totals.items()},
            "trailing_bytes": walker.trailing, "records": recs}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.file}: streampickle format version {walker.version}, "
          f"{size_text(walker.size)}, {walker.count} records, {walker.buffers} buffers")
    state = ("valid" if not problem else f"INVALID: {problem}") if present else "none"
    print(f"index: {'present, ' * present}{state}")
    for kind, (raw, stored) in walker.totals.items():
        print(f"{kind} compression (stored/raw): {stored / raw if raw else 1:.3f} "
              f"({size_text(stored)} / {size_text(raw)})")
    for r in walker.records:
        size = sum(b.size for b in r.buffers)
        print(f"record {r.number} at offset {r.offset}: pickle {size_text(r.pickle_raw)} "
              f"(stored {size_text(r.pickle_stored)}), {len(r.buffers)} buffers "
              f"({size_text(size)})")
        for b in r.buffers:
            what = f": {b.dtype} {b.shape}" if b.dtype else ""
            print(f"  buffer {b.number} at offset {b.offset}, {size_text(b.size)}, {b.codec}, "
                  f"stored {size_text(b.stored)}{what}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    walker = Walker(args.file, "verify")
    progress = walker.progress = Progress(walker.size, "verify")
    try:
        walker.run()
        if walker.trailing:
            at = walker.size - walker.trailing
            raise Bad(at, f"{walker.trailing} bytes after the END frame")
        present, problem = index_problem(walker.source)
        if problem:
            raise Bad(walker.index_at, f"the index is damaged: {problem}")
    except StreamError as exc:  # where it says, else at the frame being read
        m = re.search(r"offset (\d+)", str(exc))
        raise Bad(int(m[1]) if m else walker.at, str(exc)) from None
    finally:
        progress.close()
        walker.source.close()
    print(f"{args.file}: ok: format version {walker.version}, {walker.count} records, "
          f"{walker.buffers} buffers ({size_text(walker.totals['BUFFER'][0])}), "
          f"{'index ok' if present else 'no index'}")
    return 0


JOBLIB_MAGIC = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x1f\x8b", b"BZh",
                b"\xfd7zXZ", b"\x5d\x00\x00", b"\x04\x22\x4d\x18", b"ZF")


def sniff(path: str) -> str:
    """'streampickle', 'pickle' or 'joblib': what the file at ``path`` holds."""
    with open(path, "rb") as f:
        head = f.read(len(fmt.MAGIC))
        if head and fmt.MAGIC.startswith(head):
            return "streampickle"
        if head.startswith(JOBLIB_MAGIC):
            return "joblib"
        if head.startswith(b"\x80"):  # a pickle; joblib's name its array wrapper
            needle, tail = b"joblib.numpy_pickle", head
            while block := f.read(BLOCK):
                if needle in tail + block:
                    return "joblib"
                tail = block[-len(needle) :]
            return "pickle"
    raise CliError("not a streampickle stream, a pickle or a joblib file" if head else
                   "empty file")


def load_records(path: str, kind: str, progress: Progress) -> Iterator[Any]:
    if kind == "streampickle":
        with Unpickler(path, mmap_mode="r") as unpickler:
            progress.total = max(len(unpickler), 1)
            for i, obj in enumerate(unpickler):
                yield obj
                progress(i + 1)
    elif kind == "joblib":
        try:
            import joblib
        except ImportError:
            raise CliError("a joblib file: install joblib to convert it") from None
        yield joblib.load(path)
    else:
        with open(path, "rb") as f:
            while f.peek(1):
                yield pickle.load(f)
                progress(f.tell())


def cmd_convert(args: argparse.Namespace) -> int:
    compress = None if args.compress == "none" else "zstd"
    try:
        check_options(None, compress, args.level, None, args.frame_size)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    kind, count = sniff(args.input), 0
    progress = Progress(os.path.getsize(args.input), "convert")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "compressed buffers are not mapped"
            with Pickler(args.output, compress=compress, level=args.level,
                         frame_size=args.frame_size) as out:
                for obj in load_records(args.input, kind, progress):
                    out.dump(obj)
                    count += 1
    finally:
        progress.close()
    print(f"{args.output}: {count} records from {kind} file {args.input} "
          f"({size_text(os.path.getsize(args.input))} -> "
          f"{size_text(os.path.getsize(args.output))})")
    return 0


class Summary:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def summarize(obj: Any, seen: dict[int, Any]) -> Any:
    """A copy of ``obj`` to print: arrays and long bytes become one-line
    summaries, through dicts, lists and tuples."""
    if isinstance(obj, np.ndarray):
        return Summary(f"<{type(obj).__name__} {obj.dtype} {obj.shape}, "
                       f"{size_text(obj.nbytes)}>")
    if isinstance(obj, bytes | bytearray) and len(obj) > 256:
        return Summary(f"<{type(obj).__name__}, {size_text(len(obj))}>")
    if id(obj) in seen:
        return seen[id(obj)]
    if isinstance(obj, dict):
        out: Any = seen.setdefault(id(obj), {})
        out.update((k, summarize(v, seen)) for k, v in obj.items())
    elif isinstance(obj, list):
        out = seen.setdefault(id(obj), [])
        out.extend(summarize(v, seen) for v in obj)
    elif isinstance(obj, tuple):
        items = [summarize(v, seen) for v in obj]
        out = obj._make(items) if hasattr(obj, "_make") else tuple(items)
    else:
        return obj
    return out


def cmd_cat(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "compressed buffers are not mapped"
        with Unpickler(args.file, mmap_mode="r") as unpickler:
            records: Iterator[tuple[int, Any]] = enumerate(unpickler)
            if args.record is not None:
                n = len(unpickler)
                if not -n <= args.record < n:
                    raise UsageError(f"record {args.record} out of range: the stream has {n}")
                records = iter([(args.record % n, unpickler[args.record])])
            for i, obj in records:
                print(f"# record {i}")
                pprint.pprint(summarize(obj, {}), width=92, sort_dicts=False)
    return 0


# ---------------------------------------------------------------------------
# Arguments.


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"streampickle: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


CONVERT_HELP = """Rewrite a stream with other options, or import a plain pickle file
(every pickle in it becomes a record) or a joblib file (needs joblib).

How: records are loaded one at a time with Unpickler(IN, mmap_mode="r") and written
with Pickler(OUT, ...). Uncompressed buffers stay memory-mapped views of IN (read page
by page as they are written), so memory is bounded by the largest record's pickle and
compressed buffers (decompressed), not by the file. A pickle or joblib file is loaded
one object at a time, whole. OUT is written atomically (temp file, then rename).
Loading runs the pickles: convert only files you trust."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="streampickle", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(run: Callable[[argparse.Namespace], int], text: str, description: str = "",
                files: tuple[str, ...] = ("FILE",)) -> argparse.ArgumentParser:
        p = sub.add_parser(run.__name__[4:], help=text, description=description or text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        for name in files:
            p.add_argument(name.lower().replace("in", "input").replace("out", "output"),
                           metavar=name)
        p.set_defaults(run=run)
        return p

    p = command(cmd_info, "version, records, buffers (dtype and shape), index and "
                "compression; reads no buffer payload")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = command(cmd_dis, "every frame and each record's pickle opcodes (memo, buffers, "
                "stack depth); checks PICKLE payloads, reads no buffer payload")
    p.add_argument("--record", type=int, metavar="N", help="only record N (-1: the last)")
    command(cmd_verify, "check every header, payload, chunk, record and the index, "
            "reading buffers in 1 MiB blocks; exit 1 at the first bad byte")
    p = command(cmd_convert, "rewrite a stream with other options, or convert a pickle "
                "or joblib file", CONVERT_HELP, ("IN", "OUT"))
    p.add_argument("--compress", choices=["zstd", "none"], default="none",
                   help="compress buffers and pickle frames with zstd (default: none)")
    p.add_argument("--level", type=int, default=3, help="zstd level (default 3)")
    p.add_argument("--frame-size", type=parse_size, metavar="N", default=None,
                   help="pickle frame and buffer chunk size, e.g. 4M (default 4 MiB)")
    p = command(cmd_cat, "print records with pprint, arrays summarised")
    p.add_argument("--record", type=int, metavar="N", help="only record N (-1: the last)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; its exit status."""
    args = build_parser().parse_args(argv)
    name = getattr(args, "file", None) or getattr(args, "input", "")

    def fail(message: str, status: int) -> int:
        sys.stderr.write(f"streampickle: error: {' '.join(message.split())}\n")
        return status

    try:
        status = int(args.run(args))
        sys.stdout.flush()
        return status
    except UsageError as exc:
        return fail(str(exc), 2)
    except BrokenPipeError:  # a reader such as `head` stopped early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except OSError as exc:
        return fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc), 1)
    except (CliError, StreamError, EOFError) as exc:
        return fail(f"{name}: {exc}", 1)
    except Exception as exc:  # an unpickled object's own error (cat, convert)
        return fail(f"{name}: {type(exc).__name__}: {exc}", 1)
