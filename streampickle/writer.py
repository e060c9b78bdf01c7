"""The writing half of the frame codec: what the C pickler writes becomes
frames, in stream order, on a sink.

Pickle bytes are gathered up to ``frame_size`` into PICKLE frames; a large
payload the pickler hands over whole (a big ``bytes``) is framed in slices of
itself. Each out-of-band buffer is written from the object's own memory, or
from pieces fed one at a time (``streampickle convert`` copies buffers chunk by
chunk from another stream): uncompressed as one aligned BUFFER frame, or
compressed as a BUFFER header and CHUNK frames that a pool of threads
compresses while the writer writes, at most a few chunks per thread in flight.
"""

from __future__ import annotations

import collections
import itertools
import pickle
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import xxhash

from . import codecs
from . import format as fmt
from .format import Codec, Flag, Kind
from .io import Sink

Pieces = Sequence[Any]  # bytes-likes written one after another
#: Compressed chunks in flight per thread; bounds the writer's memory.
IN_FLIGHT_PER_THREAD = 2
#: Pickle frames smaller than this are not worth compressing.
MIN_COMPRESSED_PICKLE = 256
# Written per record, so kept as globals (``Kind.PICKLE`` costs ~70 ns on 3.11).
_PICKLE, _RECORD_END = Kind.PICKLE, Kind.RECORD_END
_SMALL_RECORDS = fmt.SMALL_RECORDS
_CHECKED, _NO_FLAGS = Flag.CHECKED, Flag(0)


class Compression:
    """The options of ``compress="zstd"``."""

    def __init__(self, level: int, threads: int | None, shuffle: bool | None) -> None:
        self.level = level
        self.threads = codecs.CPUS if threads is None else threads
        self.shuffle = shuffle


def _encode_pickle(payload: Any, flags: Flag, level: int | None) -> Pieces:
    """A PICKLE frame: compressed when that makes it smaller."""
    n = len(payload)
    codec, stored = Codec.NONE, payload
    if level is not None and n >= MIN_COMPRESSED_PICKLE:
        packed = codecs.compress(payload, level)
        if len(packed) < n:
            codec, stored = Codec.ZSTD, packed
    check = fmt.checksum(stored) if flags is Flag.CHECKED else 0
    header = fmt.frame(
        Kind.PICKLE,
        codec=codec,
        stored_size=len(stored),
        raw_size=n,
        flags=flags,
        payload_check=check,
    )
    if len(stored) <= 1 << 16:  # one write (one packet) for small frames
        return (header + stored,)
    return (header, stored)


def _chunk_frame(
    data: Any, raw: int, flags: Flag, param: int, level: int | str | None
) -> Pieces:
    """One CHUNK frame of ``raw`` bytes: zstd if asked and smaller, else raw."""
    codec, stored = Codec.NONE, data
    if level is not None:
        packed = codecs.compress(data, level)
        if len(packed) < raw:
            codec, stored = Codec.ZSTD, packed
    header = fmt.frame(
        Kind.CHUNK,
        codec=codec,
        stored_size=memoryview(stored).nbytes,
        raw_size=raw,
        param=param,
        flags=flags,
        payload_check=fmt.checksum(stored) if Flag.CHECKED in flags else 0,
    )
    return (header, stored)


def _encode_chunk(piece: memoryview, plan: codecs.Plan, flags: Flag) -> Pieces:
    """One chunk of a compressed buffer: a CHUNK frame, or, shuffled, one
    CHUNK frame per byte lane, each compressed as the plan says."""
    if not plan.itemsize:
        return _chunk_frame(piece, piece.nbytes, flags, 0, plan.compress[0])
    lanes = codecs.shuffle(piece, plan.itemsize).reshape(plan.itemsize, -1)
    frames: list[Any] = []
    for lane, setting in zip(lanes, plan.compress, strict=True):
        # A memoryview: a lane stored raw goes to sinks that take bytes-likes
        # (an array would be added to a socket's pending bytes as numbers).
        frames += _chunk_frame(
            lane.data, lane.nbytes, flags | Flag.SHUFFLE, plan.itemsize, setting
        )
    return frames


def _chunk_size(frame_size: int, itemsize: int) -> int:
    """A compressed buffer's chunk size: whole items, for the shuffle."""
    if not itemsize:
        return frame_size
    chunk = -(-frame_size // itemsize) * itemsize
    return chunk - itemsize if chunk > fmt.MAX_FRAME_SIZE else chunk


class Feed:
    """A buffer's bytes, fed as pieces of any sizes and taken out in the sizes
    the frames need: a view of the piece at hand where it holds them all, else
    a copy gathered from several. Pieces are sliced, not copied, so a caller
    must not change one after feeding it."""

    def __init__(self, pieces: Iterable[Any], n: int) -> None:
        self.pieces = iter(pieces)
        self.head = memoryview(b"")  # what is left of the piece at hand
        self.left = n  # bytes not yet taken

    def upto(self, size: int) -> memoryview:
        """The next bytes, at most ``size`` of them, from the piece at hand."""
        while size and not self.head.nbytes:
            piece = next(self.pieces, None)
            if piece is None:
                raise ValueError(f"the buffer's pieces ended {self.left} bytes short")
            self.head = memoryview(piece).cast("B")
        out, self.head = self.head[:size], self.head[size:]
        self.left -= out.nbytes
        return out

    def take(self, size: int) -> memoryview:
        """The next ``size`` bytes."""
        first = self.upto(size)
        if first.nbytes == size:
            return first
        gathered = bytearray(size)
        gathered[: first.nbytes] = first
        filled = first.nbytes
        while filled < size:
            piece = self.upto(size - filled)
            gathered[filled : filled + piece.nbytes] = piece
            filled += piece.nbytes
        return memoryview(gathered)

    def unread(self, view: memoryview) -> None:
        """Put back ``view``, the bytes last taken."""
        self.pieces = itertools.chain((view, self.head), self.pieces)
        self.head = memoryview(b"")
        self.left += view.nbytes

    def finish(self) -> None:
        """Run the pieces to their end (a generator's checks after its last
        piece run now); they must hold nothing more."""
        extra = self.head.nbytes + sum(memoryview(p).nbytes for p in self.pieces)
        if extra:
            raise ValueError(f"the buffer's pieces hold {extra} bytes more than its size")


class FrameWriter:
    """The file object the C pickler writes to, and its buffer callback."""

    def __init__(
        self, sink: Sink, frame_size: int, checked: bool, compression: Compression | None
    ) -> None:
        self.sink = sink
        self.frame_size = frame_size
        self.checked = checked
        self.flags = _CHECKED if checked else _NO_FLAGS
        self.compression = compression
        self.pending = bytearray()
        self.pickle_bytes = 0  # in the current record
        self.record_first_buffer = 0  # index in buffer_offsets of its first buffer
        self.buffer_offsets: list[int] = []  # every BUFFER header, stream-relative
        # Frames still being compressed, in stream order, ahead of the sink.
        self.queue: collections.deque[Future[Pieces] | Pieces] = collections.deque()
        self.pool: ThreadPoolExecutor | None = None
        if compression is not None and compression.threads > 0:
            self.pool = codecs.pool(compression.threads)

    # -- ordered output ----------------------------------------------------

    def _emit(self, encode: Callable[..., Pieces], *args: Any) -> None:
        """Encode a frame (in the pool if there is one) and write it after
        every frame emitted before it."""
        if self.pool is None:
            if self.queue:
                self.queue.append(encode(*args))
            else:
                for piece in encode(*args):
                    self.sink.write(piece)
            return
        self.queue.append(self.pool.submit(encode, *args))
        assert self.compression is not None
        self.drain(IN_FLIGHT_PER_THREAD * self.compression.threads)

    def drain(self, keep: int = 0) -> None:
        """Write queued frames until at most ``keep`` remain in flight."""
        while len(self.queue) > keep:
            head = self.queue.popleft()
            for piece in head.result() if isinstance(head, Future) else head:
                self.sink.write(piece)

    def close(self) -> None:
        """Forget frames still in flight (after a failure): the pool is shared."""
        for task in self.queue:
            if isinstance(task, Future):
                task.cancel()
        self.queue.clear()

    # -- pickle bytes ------------------------------------------------------

    def write(self, data: Any) -> int:
        # The C pickler mostly writes bytes; anything else is viewed as bytes.
        view = data if type(data) is bytes else memoryview(data).cast("B")
        n = len(view)  # a 1-D view of bytes: its length is its size
        if len(self.pending) + n > self.frame_size:
            self.flush()
        if n >= self.frame_size:
            for start in range(0, n, self.frame_size):
                self._pickle_frame(view[start : start + self.frame_size])
        else:
            self.pending += view
        return n

    def flush(self) -> None:
        if self.pending:
            self._pickle_frame(self.pending)
            self.pending = bytearray()  # the frame keeps the old one

    # -- records -------------------------------------------------------------

    def end_record(self, flush: bool) -> None:
        """Write the record's last pickle bytes and its RECORD_END: when they
        are few and uncompressed, as one write (a small message without
        buffers: one write, or one send, per message). ``flush``: hand the
        record to the reader now (a pipe or socket)."""
        buffers = len(self.buffer_offsets) - self.record_first_buffer
        last = self.pending  # the last PICKLE frame, if it goes out with the RECORD_END
        n = len(last)
        if self.compression is not None or n > 1 << 16:
            self.flush()
            self.drain()
            n = 0
        self.pending = bytearray()
        if n and self.checked and not buffers and not self.pickle_bytes:
            self.pickle_bytes = n
            record = _SMALL_RECORDS.frame(last)  # the whole record: one C call
        else:
            self.pickle_bytes += n
            end = (
                fmt.frame(_RECORD_END, raw_size=self.pickle_bytes, param=buffers)
                if buffers
                else fmt.whole_record_end(self.pickle_bytes)  # cached: sizes recur
            )
            if not n:
                record = end
            elif self.checked:
                record = fmt.plain_pickle_header(n, fmt.checksum(last)) + last + end
            else:
                head = fmt.frame(_PICKLE, stored_size=n, raw_size=n, flags=self.flags)
                record = b"".join((head, last, end))
        if flush:
            self.sink.send(record)
        else:
            self.sink.write(record)

    def _pickle_frame(self, payload: bytes | bytearray | memoryview) -> None:
        self.pickle_bytes += len(payload)
        level = self.compression.level if self.compression else None
        self._emit(_encode_pickle, payload, self.flags, level)

    # -- out-of-band buffers -----------------------------------------------

    def write_buffer(self, buffer: pickle.PickleBuffer) -> bool:
        """``buffer_callback``: write ``buffer`` out of band; False means done."""
        typed = memoryview(buffer)
        # Not a context manager: a sink or a chunk in flight may keep slices.
        view = buffer.raw()
        if view.nbytes < fmt.MIN_OUT_OF_BAND:
            return True  # in-band: cheaper than a frame
        itemsize = 0
        if self.compression is not None:
            itemsize = codecs.shuffle_itemsize(typed, self.compression.shuffle)
        self.write_streamed_buffer((view,), view.nbytes, view.readonly, itemsize, view)
        return False

    def write_streamed_buffer(
        self,
        pieces: Iterable[Any],
        n: int,
        readonly: bool,
        itemsize: int,
        sample: memoryview | None = None,
    ) -> None:
        """Write an out-of-band buffer of ``n`` bytes, fed as ``pieces``:
        bytes-likes of any sizes, in order, that add up to ``n``. At most one
        chunk and one piece are held (and the chunks in flight), so a buffer can
        be copied from a stream without ever being whole in memory. The pieces
        are run to their end, so a generator's checks after its last piece run
        before the buffer counts as written.

        Compressed, the chunks are byte-shuffled by ``itemsize`` where that
        pays (0: never; it must divide ``n``), and whether and how to compress
        is planned from ``sample``: the whole buffer when the caller has it in
        memory, else (None) the buffer's first chunk, all a stream has at hand.
        """
        self.drain()  # the BUFFER header's offset goes in the index
        ordinal = len(self.buffer_offsets) - self.record_first_buffer
        flags = self.flags | (Flag.READONLY if readonly else _NO_FLAGS)
        feed = Feed(pieces, n)
        plan = None
        if self.compression is not None:
            c = self.compression
            if sample is None:
                sample = feed.take(min(n, _chunk_size(self.frame_size, itemsize)))
                feed.unread(sample)
            plan = codecs.plan(sample, itemsize, c.level, c.shuffle)
        if plan is None:
            self._write_raw_buffer(feed, n, flags, ordinal)
        else:
            self._write_compressed_buffer(feed, n, flags, ordinal, plan)
        feed.finish()

    def _write_raw_buffer(self, feed: Feed, n: int, flags: Flag, ordinal: int) -> None:
        """One BUFFER frame: the bytes as they are, 64-byte aligned in the file
        (so a memory map gives aligned arrays), then their chunk checks."""
        chunk = self.frame_size
        pad = fmt.pad_before_buffer(self.sink.base + self.sink.position)
        if pad >= 0:
            self.sink.write(fmt.frame(Kind.PAD, stored_size=pad, raw_size=pad) + bytes(pad))
        self.buffer_offsets.append(self.sink.position)
        self.sink.write(
            fmt.frame(
                Kind.BUFFER,
                stored_size=n,
                raw_size=n,
                param=chunk,
                flags=flags,
                payload_check=fmt.buffer_ordinal_check(ordinal),
            )
        )
        checks = bytearray()
        for start in range(0, n, chunk):
            left, check = min(chunk, n - start), xxhash.xxh3_64()
            while left:  # a chunk may arrive in several pieces
                piece = feed.upto(left)
                left -= piece.nbytes
                if self.checked:
                    check.update(piece)
                self.sink.write(piece)
            if self.checked:
                checks += fmt.CHECK.pack(check.intdigest() & 0xFFFFFFFF)  # = fmt.checksum
        if checks:
            self.sink.write(checks)

    def _write_compressed_buffer(
        self, feed: Feed, n: int, flags: Flag, ordinal: int, plan: codecs.Plan
    ) -> None:
        """A BUFFER header, then one CHUNK frame per ``chunk`` bytes, each
        compressed on its own (in parallel) so each decodes on its own."""
        assert self.compression is not None
        chunk = _chunk_size(self.frame_size, plan.itemsize)
        self.buffer_offsets.append(self.sink.position)
        self.sink.write(
            fmt.frame(
                Kind.BUFFER,
                codec=Codec.ZSTD,
                raw_size=n,
                param=chunk,
                flags=flags,
                payload_check=fmt.buffer_ordinal_check(ordinal),
            )
        )
        for start in range(0, n, chunk):
            piece = feed.take(min(chunk, n - start))
            self._emit(_encode_chunk, piece, plan, self.flags)
