"""Writing: the C pickler does the pickling; we frame what it writes.

``Pickler`` subclasses the C ``pickle.Pickler`` (as cloudpickle does), so
``persistent_id``, ``reducer_override`` and ``dispatch_table`` keep working.
Its ``file`` is a ``writer.FrameWriter`` that gathers pickle bytes into
PICKLE frames; its ``buffer_callback`` writes each out-of-band buffer straight
from the object's memory, in chunks, without copying it.
"""

from __future__ import annotations

import io
import os
import pickle
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from . import format as fmt
from .errors import TruncatedStreamError
from .index import Scan, scan_index
from .io import AppendSink, FileSource, Sink, SocketSink, open_sink
from .pagecache import check_policy
from .safe_calls import DtypeTable
from .writer import Compression, FrameWriter

_pickle_dump = pickle.Pickler.dump  # the C pickler's, without super() per record

CompressOption = str | None


def check_options(
    protocol: int | None,
    compress: CompressOption,
    level: int,
    threads: int | None,
    frame_size: int | None,
) -> int:
    """Validate the writer's options; return the frame size to use."""
    if protocol not in (None, 5):
        raise ValueError(f"streampickle writes pickle protocol 5, not {protocol!r}")
    if compress not in (None, "zstd"):
        raise ValueError(f"compress must be None or 'zstd', not {compress!r}")
    if not isinstance(level, int) or isinstance(level, bool):
        raise TypeError(f"level must be an int, not {type(level).__name__}")
    if not -(1 << 17) <= level <= 22:
        raise ValueError(f"level must be in [-131072, 22] (zstd's range), not {level}")
    check_threads(threads)
    if frame_size is None:
        return fmt.DEFAULT_FRAME_SIZE
    if not isinstance(frame_size, int) or not (
        fmt.MIN_FRAME_SIZE <= frame_size <= fmt.MAX_FRAME_SIZE
    ):
        raise ValueError(
            f"frame_size must be an int in [{fmt.MIN_FRAME_SIZE}, "
            f"{fmt.MAX_FRAME_SIZE}], not {frame_size!r}"
        )
    return frame_size


def check_threads(threads: int | None) -> None:
    if threads is not None and (not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads must be None or an int >= 0, not {threads!r}")


class Pickler(pickle.Pickler):
    """Writes records, each one pickled object, to a streampickle stream.

    ``file`` is a path (written atomically: a temp file beside it is renamed
    over it by ``close``), a binary file object or a connected socket. With
    ``append=True`` (a path only) the records go after those already in the
    file, in place.
    """

    def __init__(
        self,
        file: Any,
        protocol: int | None = None,
        *,
        compress: CompressOption = None,
        level: int = 3,
        threads: int | None = None,
        frame_size: int | None = None,
        checksum: bool = True,
        shuffle: bool | None = None,
        append: bool = False,
        page_cache: str = "auto",
    ) -> None:
        size = check_options(protocol, compress, level, threads, frame_size)
        check_policy(page_cache)
        if shuffle is not None and not isinstance(shuffle, bool):
            raise ValueError(f"shuffle must be None, True or False, not {shuffle!r}")
        compression = Compression(level, threads, shuffle) if compress else None
        existing = _existing_records(file) if append else None
        self._sink: Sink
        if existing is None:
            self._sink = open_sink(file, page_cache)
        else:
            self._sink = AppendSink(file, existing.end, page_cache)
        self._writer = FrameWriter(self._sink, size, bool(checksum), compression)
        self._records: list[fmt.RecordEntry] = []
        self._state = "open"
        # Hand each record to the reader as it ends; ``dump``, whose one record
        # the END frame follows at once, sends both together instead.
        self._flush_records = True
        try:
            super().__init__(self._writer, 5, buffer_callback=self._writer.write_buffer)
            # dtypes of numbers as one call each, which safe mode reads in C
            # (safe_calls.py), unless a subclass brings its own table
            self._dtypes = None
            if getattr(self, "dispatch_table", None) is None:
                self._dtypes = DtypeTable()
                self.dispatch_table = self._dtypes.table
            if existing is None:
                self._sink.write(fmt.encode_stream_header())
            else:
                self._records = list(existing.index.records)
                self._writer.buffer_offsets = list(existing.index.buffers)
        except BaseException:
            self._fail()
            raise

    def dump(self, obj: Any) -> None:
        """Write ``obj`` as the next record; each record decodes on its own."""
        if self._dtypes is not None:
            if self.dispatch_table is not self._dtypes.table:  # the caller's own
                self._dtypes = None  # (45th review: it was replaced)
            elif self._dtypes.renew():
                self.dispatch_table = self._dtypes.table
        self._write_record(_pickle_dump, self, obj)

    def write_record(self, write: Callable[[FrameWriter], None]) -> None:
        """Write the next record: ``write`` hands the frame writer the record's
        pickle bytes and buffers, in stream order (as the C pickler does for
        ``dump``); then the record ends as every record does. ``streampickle
        convert`` copies records this way, without unpickling them."""
        self._write_record(write, self._writer)

    def _write_record(self, write: Callable[..., None], *args: Any) -> None:
        """``write(*args)`` makes the record (inline, not in helpers: a small
        message over a socket costs about as much here as in the pickling)."""
        if self._state != "open":
            raise ValueError(f"cannot dump to a {self._state} Pickler")
        writer, sink = self._writer, self._sink
        seekable = sink.seekable
        if not seekable:  # no index: keep nothing per record
            writer.buffer_offsets.clear()
        start, first_buffer = sink.position, len(writer.buffer_offsets)
        writer.pickle_bytes, writer.record_first_buffer = 0, first_buffer
        self.clear_memo()
        try:
            write(*args)
            # A reader on a pipe or socket gets each record as it ends.
            writer.end_record(self._flush_records)
        except BaseException:
            self._fail()
            raise
        if seekable:
            count = len(writer.buffer_offsets) - first_buffer
            self._records.append(fmt.RecordEntry(start, first_buffer, count))

    def close(self) -> None:
        """End the stream (index and END frame) and, for a path, commit it."""
        if self._state != "open":
            return
        try:
            index = None
            if self._sink.seekable:
                index = fmt.Index(tuple(self._records), tuple(self._writer.buffer_offsets))
            self._sink.write(fmt.encode_tail(index, self._sink.position))
            self._sink.finish()
        except BaseException:
            self._fail()
            raise
        self._writer.close()
        self._state = "closed"

    def _fail(self) -> None:
        """A failed write leaves no END frame, so readers see a truncated
        stream after the complete records; a path keeps its old content."""
        if self._state == "open":
            self._state = "failed"
            self._writer.close()
            self._sink.abort()

    def __enter__(self) -> Pickler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fail()


def _existing_records(path: Any) -> Scan | None:
    """The complete records of the stream file ``path`` that ``append`` adds
    to, and where they end; None if there is no stream yet."""
    if not isinstance(path, str | os.PathLike):
        raise ValueError("append=True needs a path")
    try:
        if os.path.getsize(path) == 0:
            return None
    except FileNotFoundError:
        return None
    with open(path, "rb") as f:
        scan = scan_index(FileSource(f))
    # A writer that crashed leaves a cut record: it is dropped. Damage before
    # the end is not ours to cut away.
    if scan.problem is not None and not isinstance(scan.problem, TruncatedStreamError):
        raise scan.problem
    return scan


class _SocketMessage:
    """``dump(obj, sock)`` with the default options, for a plain socket. Most
    such messages are small, and a Pickler, its frame writer and its sink made
    per message cost more than the pickling. So the C pickler writes here: a
    pickle of at most ``LIMIT`` bytes without out-of-band buffers goes out as
    the whole stream, in one send. Past that, or at the first out-of-band
    buffer, what was written goes to a Pickler on the socket and the rest
    follows it there: nothing is pickled twice, and memory stays bounded. One
    per thread (the C pickler is reused: clearing its memo costs less than
    making one)."""

    LIMIT = SocketSink.GATHER

    def __init__(self) -> None:
        self.pickler = pickle.Pickler(self, 5, buffer_callback=self.write_buffer)
        self.dtypes = DtypeTable()  # as Pickler's
        self.pickler.dispatch_table = self.dtypes.table
        self.parts: list[bytes] = []
        self.size = 0
        self.sock: socket.socket | None = None
        self.stream: Pickler | None = None  # once the message is streamed

    def dump(self, obj: Any, sock: socket.socket) -> None:
        if self.dtypes.renew():
            self.pickler.dispatch_table = self.dtypes.table
        self.sock = sock
        try:
            _pickle_dump(self.pickler, obj)
            if self.stream is None:
                pickled = b"".join(self.parts)
                sock.sendall(_STREAM_HEAD + fmt.SMALL_RECORDS.frame(pickled) + _END)
            else:
                self.stream._writer.end_record(False)
                self.stream.close()
        except BaseException:
            if self.stream is not None:
                self.stream._fail()
            raise
        finally:
            self.pickler.clear_memo()
            self.parts.clear()
            self.size, self.sock, self.stream = 0, None, None

    def write(self, data: Any) -> int:
        if self.stream is None:
            n = len(data) if type(data) is bytes else memoryview(data).nbytes
            if self.size + n <= self.LIMIT:
                self.parts.append(bytes(data))  # bytes(bytes) is the same object
                self.size += n
                return n
            self._start_stream()
        assert self.stream is not None
        return self.stream._writer.write(data)

    def write_buffer(self, buffer: pickle.PickleBuffer) -> bool:
        if self.stream is None:
            if buffer.raw().nbytes < fmt.MIN_OUT_OF_BAND:
                return True  # in-band, as FrameWriter.write_buffer has it
            self._start_stream()
        assert self.stream is not None
        return self.stream._writer.write_buffer(buffer)

    def _start_stream(self) -> None:
        stream = Pickler(self.sock)
        stream._flush_records = False  # the END frame follows at once
        self.stream = stream
        for part in self.parts:
            stream._writer.write(part)
        self.parts.clear()


_STREAM_HEAD, _END = fmt.encode_stream_header(), fmt.NO_INDEX_END
_socket_messages = threading.local()


def _dump_socket_message(obj: Any, sock: socket.socket) -> None:
    """``_SocketMessage.dump`` with this thread's, or a new one when a
    ``__reduce__`` dumps to a socket while this thread's is in use."""
    message = getattr(_socket_messages, "free", None)
    _socket_messages.free = None
    if message is None:
        message = _SocketMessage()
    try:
        message.dump(obj, sock)
    finally:
        _socket_messages.free = message


def dump(
    obj: Any,
    file: Any,
    *,
    compress: CompressOption = None,
    level: int = 3,
    threads: int | None = None,
    frame_size: int | None = None,
    checksum: bool = True,
    shuffle: bool | None = None,
    page_cache: str = "auto",
) -> None:
    """Write ``obj`` to ``file`` as a one-record stream."""
    if (
        type(file) is socket.socket
        and compress is None
        and level == 3
        and threads is None
        and frame_size is None
        and checksum is True
        and shuffle is None
        and page_cache == "auto"
    ):
        _dump_socket_message(obj, file)
        return
    with Pickler(
        file,
        compress=compress,
        level=level,
        threads=threads,
        frame_size=frame_size,
        checksum=checksum,
        shuffle=shuffle,
        page_cache=page_cache,
    ) as pickler:
        pickler._flush_records = False
        pickler.dump(obj)


def dumps(obj: Any, **options: Any) -> bytes:
    """``obj`` as a one-record stream, in memory; options as for ``dump``."""
    out = io.BytesIO()
    dump(obj, out, **options)
    return out.getvalue()
