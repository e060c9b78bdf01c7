"""The files the C ``pickle.Unpickler`` reads for one record.

``RecordReader`` serves a record's pickle bytes frame by frame and, when it
meets a BUFFER frame on the way, reads the buffer straight into freshly
allocated memory (or takes a view of the memory map) and queues it for the
unpickler's NEXT_BUFFER opcode. The writer emits a buffer before the pickle
bytes that refer to it, so the queue is never empty when it is needed.
``WholeRecord`` serves a record that is one PICKLE frame, already in memory.
Every pickle byte is checked by ``_pickle_scan`` before the unpickler can
read it (``refused`` names what it refuses).
"""

from __future__ import annotations

import collections
from typing import Any

from . import format as fmt
from ._pickle_scan import PickleScan
from .errors import (
    CorruptStreamError,
    ForbiddenGlobalError,
    StreamError,
    TruncatedStreamError,
)
from .format import Codec, FrameHeader, Kind
from .frames import FrameReader


def refused(number: int, exc: ValueError) -> StreamError:
    """The scan's ValueError(what, pickle_offset) as the reader's error: what
    only safe mode refuses (``what`` says "safe mode") is forbidden, not
    corrupt."""
    what, at = exc.args
    if what.startswith("safe mode"):
        return ForbiddenGlobalError(f"{what} (record {number}, pickle byte {at})")
    return CorruptStreamError(f"record {number} is not a valid pickle: {what} at byte {at}")


class WholeRecord:
    """The file the C unpickler reads for a record that is one PICKLE frame:
    its pickle bytes, all in memory. The unpickler takes them with one
    ``peek`` and consumes what it used with one ``read``, so ``pos`` ends
    where STOP fell, even inside a pickle FRAME opcode's bytes. One per
    Unpickler, reset for each such record."""

    __slots__ = ("chunk", "pos", "number")
    chunk: bytes
    pos: int
    number: int

    @property
    def pickle_bytes(self) -> int:
        return len(self.chunk)

    def finish(self) -> None:
        """After STOP: it must be the last pickle byte."""
        if self.pos != len(self.chunk):
            raise CorruptStreamError(
                f"record {self.number} is not a valid pickle: pickle bytes after STOP"
            )

    def read(self, n: int = -1) -> bytes:
        start = self.pos
        self.pos = len(self.chunk) if n < 0 else min(start + n, len(self.chunk))
        return self.chunk[start : self.pos]

    def peek(self, n: int = 0) -> bytes:
        return self.chunk[self.pos :]

    def readline(self) -> bytes:
        end = self.chunk.find(b"\n", self.pos) + 1 or len(self.chunk)
        return self.read(end - self.pos)


def bad_counts(end: FrameHeader, pickle_bytes: int, buffers: int) -> CorruptStreamError:
    return CorruptStreamError(
        f"{end.where()} counts {end.raw_size} pickle bytes and {end.param} "
        f"buffers; the record has {pickle_bytes} and {buffers}"
    )


#: What max_size charges a PICKLE, BUFFER or PAD frame of a record besides
#: its bytes: its header (empty frames cost the reader time, and an empty
#: buffer an array held to the record's end: 39th review).
FRAME_COST = fmt.FRAME_HEADER.size
_CHARGED = frozenset({Kind.PICKLE, Kind.BUFFER, Kind.PAD})


def charge(h: FrameHeader) -> int:
    """What frame ``h`` counts against max_size: its raw bytes and header,
    or nothing (a CHUNK's bytes are its BUFFER's; RECORD_END)."""
    return h.raw_size + FRAME_COST if h.kind in _CHARGED else 0


def too_large(number: int, max_size: int, h: FrameHeader) -> StreamError:
    return StreamError(f"record {number} exceeds max_size={max_size} bytes at {h.where()}")


class RecordReader:
    """The file the C unpickler reads for one record, and its buffer iterator."""

    def __init__(self, frames: FrameReader, max_size: int | None, strict: bool) -> None:
        self.frames = frames
        self.max_size = max_size
        self.size = 0  # pickle and buffer bytes of the record so far
        self.buffers: collections.deque[Any] = collections.deque()
        self.chunk = b""
        self.pos = 0
        self.first: FrameHeader | None = None
        self.end: FrameHeader | None = None
        self.pickle_bytes = 0
        self.buffer_count = 0
        self.number = 0
        self.failure: StreamError | None = None
        self.scan = PickleScan(strict=strict)

    def begin(
        self, first: FrameHeader | None, number: int, chunk: bytes = b"", read: bool = False
    ) -> None:
        """Start record ``number`` at frame ``first``, after the pickle bytes
        ``chunk`` already read (those of the record's first frame, if
        ``read``)."""
        self.first, self.end, self.number = first, None, number
        self.chunk, self.pos = chunk, 0
        self.pickle_bytes = len(chunk)
        self.size = len(chunk) + (FRAME_COST if read else 0)
        self.buffer_count = 0
        self.buffers.clear()
        self.failure = None
        self.scan.reset()
        self._check(chunk)

    def _check(self, chunk: bytes) -> None:
        """Scan the next pickle bytes before the unpickler may read them; a
        length they claim past them counts against max_size already."""
        try:
            self.scan.feed(chunk)
        except ValueError as exc:
            raise refused(self.number, exc) from None
        if self.scan.next_buffers > self.buffer_count:  # (46th review: gathered late)
            raise CorruptStreamError(
                f"record {self.number} uses an out-of-band buffer that precedes none"
            )
        owed = self.scan.owed
        if self.max_size is not None and self.size + owed > self.max_size:
            raise StreamError(
                f"record {self.number} exceeds max_size={self.max_size} bytes: "
                f"its pickle claims {owed} bytes more at pickle byte {self.pickle_bytes}"
            )

    def gather(self, limit: int, calls: bool = False) -> bytes | bytearray | None:
        """Safe mode: read on while the record's frames are PICKLE frames of
        plain data, up to ``limit`` pickle bytes; with ``calls``, also while
        its only code is calls (safe_calls.py), and its buffers, which then
        wait in ``buffers``. The record's whole pickle if it ends there (its
        RECORD_END checked; with buffers, left for ``finish``: then it is
        also ``chunk``, to read); else None, and what was read is served
        first. A pickle that names a global stops it at once, but calls."""
        gathered: bytes | bytearray = self.chunk  # copied once a frame joins it
        while self.scan.plain or calls and self.scan.calls_only:
            h, self.first = self.first or self.frames.next_header(), None
            if h is not None and h.kind is Kind.RECORD_END:
                self.end, self.chunk = h, b""
                if self.buffer_count:
                    self.chunk = bytes(gathered)
                elif (h.raw_size, h.param) != (self.pickle_bytes, 0):
                    raise bad_counts(h, self.pickle_bytes, 0)
                return gathered
            if h is not None and calls and h.kind in (Kind.BUFFER, Kind.PAD):
                self.first = h
                self._next_buffer()
                continue
            if (
                h is None
                or h.kind is not Kind.PICKLE
                or self.pickle_bytes + h.raw_size > limit
            ):
                self.first = h  # for the unpickler's reads
                break
            self.size += charge(h)
            if self.max_size is not None and self.size > self.max_size:
                raise too_large(self.number, self.max_size, h)
            payload = self.frames.decoded_payload(h)
            self.pickle_bytes += len(payload)
            self._check(payload)
            if type(gathered) is bytes:
                gathered = bytearray(gathered)
            gathered += payload
        self.chunk = bytes(gathered)  # the same object if nothing joined it
        return None

    def _advance(self) -> bool:
        """Load the next non-empty PICKLE payload; False at RECORD_END."""
        try:
            return self._next_pickle_frame()
        except StreamError as exc:
            # The C unpickler may replace this error with EOFError("Ran out of
            # input") without chaining it; keep it so load() can raise it.
            self.failure = exc
            raise

    def take_failure(self) -> StreamError:
        """The error ``_advance`` kept, no longer kept: its traceback holds
        this reader, which would hold it in a cycle (and the record's arrays
        until a GC pass)."""
        failure, self.failure = self.failure, None
        assert failure is not None
        return failure

    def _next_pickle_frame(self) -> bool:
        while self.end is None:
            h, self.first = self.first or self.frames.next_header(), None
            if h is None:
                raise TruncatedStreamError(
                    f"input ended at offset {self.frames.source.position} "
                    f"inside record {self.number}"
                )
            self.size += charge(h)
            if self.max_size is not None and self.size > self.max_size:
                raise too_large(self.number, self.max_size, h)
            if h.kind is Kind.PICKLE:
                self.chunk, self.pos = self.frames.decoded_payload(h), 0
                self.pickle_bytes += len(self.chunk)
                self._check(self.chunk)
                if self.chunk:
                    return True
            elif h.kind is Kind.BUFFER or h.kind is Kind.PAD:
                self._take_buffer(h)
            elif h.kind is Kind.RECORD_END:
                self.end = h
            else:
                raise CorruptStreamError(f"{h.where()} inside record {self.number}")
        return False

    def _next_buffer(self) -> None:
        """Take the BUFFER or PAD frame ``first``, charged (``gather``)."""
        h, self.first = self.first, None
        assert h is not None
        self.size += charge(h)
        if self.max_size is not None and self.size > self.max_size:
            raise too_large(self.number, self.max_size, h)
        self._take_buffer(h)

    def _take_buffer(self, h: FrameHeader) -> None:
        """A BUFFER frame's buffer, kept for the unpickler; a PAD frame's
        zeros, and the BUFFER that must follow it, next."""
        if h.kind is Kind.BUFFER:
            self.buffers.append(self.frames.buffer(h, self.buffer_count))
            self.buffer_count += 1
            return
        if any(self.frames.payload(h)):
            raise CorruptStreamError(f"nonzero padding in {h.where()}")
        self.first = self.frames.next_header()  # only an aligned BUFFER may follow
        if self.first is not None and not (
            self.first.kind is Kind.BUFFER and self.first.codec is Codec.NONE
        ):
            raise CorruptStreamError(f"{self.first.where()} after {h.where()}")

    # -- the file interface the C unpickler uses --------------------------

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise CorruptStreamError("unbounded read of pickle bytes")
        if self.pos + n <= len(self.chunk):
            self.pos += n
            return self.chunk[self.pos - n : self.pos]
        # Gather what the record holds; a pickle FRAME opcode's length alone
        # must not size an allocation.
        out = bytearray()
        while len(out) < n and (self.pos < len(self.chunk) or self._advance()):
            take = min(n - len(out), len(self.chunk) - self.pos)
            out += self.chunk[self.pos : self.pos + take]
            self.pos += take
        return bytes(out)

    def peek(self, n: int = 0) -> bytes:
        """Bytes ahead, not consumed: the C unpickler prefetches with this and
        then parses a small record from memory instead of calling read() for
        every opcode."""
        if self.pos == len(self.chunk) and not self._advance():
            return b""
        return self.chunk[self.pos :]  # peek may give more than asked

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        got = 0
        while got < view.nbytes:
            if self.pos == len(self.chunk) and not self._advance():
                break
            take = min(view.nbytes - got, len(self.chunk) - self.pos)
            view[got : got + take] = memoryview(self.chunk)[self.pos : self.pos + take]
            got += take
            self.pos += take
        return got

    def readline(self) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n"):
            if self.pos == len(self.chunk) and not self._advance():
                break
            stop = self.chunk.find(b"\n", self.pos)
            stop = len(self.chunk) if stop < 0 else stop + 1
            line += self.chunk[self.pos : stop]
            self.pos = stop
        return bytes(line)

    # -- the buffers iterable ----------------------------------------------

    def __iter__(self) -> RecordReader:
        return self

    def __next__(self) -> Any:
        if not self.buffers:
            raise CorruptStreamError(
                f"record {self.number} uses an out-of-band buffer that precedes none"
            )
        return self.buffers.popleft()

    def finish(self) -> None:
        """After STOP: the record must end here, with every buffer used."""
        if self.pos != len(self.chunk) or (self.end is None and self._advance()):
            raise CorruptStreamError(
                f"record {self.number} is not a valid pickle: pickle bytes after STOP"
            )
        assert self.end is not None
        if self.buffers:
            raise CorruptStreamError(
                f"record {self.number} has {len(self.buffers)} unused buffers"
            )
        end = self.end
        if (end.raw_size, end.param) != (self.pickle_bytes, self.buffer_count):
            raise bad_counts(end, self.pickle_bytes, self.buffer_count)
