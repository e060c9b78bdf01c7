"""asyncio adapters: streams over ``asyncio.StreamWriter``/``StreamReader``.

Both sides reuse the blocking machinery rather than a second implementation
of the format. ``Pickler.dump`` pickles into a sink that collects the frames
(pickle bytes, and views of each buffer's own memory, not copies), then writes
them to the transport, draining as it goes. ``Unpickler.load`` receives one
record's frames, reading each buffer straight into its final array and
checking it on arrival, then decodes them with the blocking ``Unpickler``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import format as fmt
from . import prefault
from .errors import CorruptStreamError, StreamError
from .format import Codec, Kind
from .frames import verify_chunks
from .pickler import Pickler as _BlockingPickler
from .records import charge
from .segments import SegmentSource
from .unpickler import Unpickler as _BlockingUnpickler


class _FrameList:
    """A sink for the blocking Pickler: keeps what it writes, in order."""

    def __init__(self) -> None:
        self.chunks: list[Any] = []

    def write(self, data: Any) -> int:
        self.chunks.append(data)
        return len(data) if not isinstance(data, memoryview) else data.nbytes

    def take(self) -> list[Any]:
        chunks, self.chunks = self.chunks, []
        return chunks


class Pickler:
    """Writes records to an ``asyncio.StreamWriter``; options as
    ``streampickle.Pickler``. ``await close()`` ends the stream."""

    #: Wait for the transport to drain after writing this many bytes.
    DRAIN_EVERY = 4 << 20

    def __init__(self, writer: asyncio.StreamWriter, **options: Any) -> None:
        self._writer = writer
        self._frames = _FrameList()
        self._pickler = _BlockingPickler(self._frames, **options)

    async def dump(self, obj: Any) -> None:
        self._pickler.dump(obj)  # the frames refer to obj's buffers: send them now
        await self._send()

    async def close(self) -> None:
        self._pickler.close()
        await self._send()

    async def _send(self) -> None:
        unsent = 0
        for chunk in self._frames.take():
            self._writer.write(chunk)
            unsent += chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
            if unsent >= self.DRAIN_EVERY:
                await self._writer.drain()
                unsent = 0
        await self._writer.drain()

    async def __aenter__(self) -> Pickler:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            await self.close()


class Unpickler:
    """Reads records from an ``asyncio.StreamReader``; options as
    ``streampickle.Unpickler`` (no ``mmap_mode``)."""

    #: A record still coming past this many bytes is decoded as it comes, by
    #: the blocking decoder in a thread, so that it is never held whole (a
    #: large in-band ``bytes``: 39th review, 1.1 GiB over a 384 MiB object).
    STREAM_FROM = 8 << 20
    #: ... and receiving waits while this many bytes wait for that thread.
    STREAM_AHEAD = 16 << 20
    #: A buffer of this many bytes is received straight into its array.
    DIRECT_FROM = 256 << 10

    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        safe: bool = False,
        allow: Iterable[str] = (),
        max_size: int | None = None,
    ) -> None:
        self._reader = reader
        self._max_size = max_size
        self._received = SegmentSource()
        self._offset = 0
        self._started = False
        self._mark = 0  # an offset between frames, all pushed: where a load may resume
        self._state = "open"  # or "ended", "broken": nothing more is received
        # while a thread decodes the record coming: its outcome, and the task
        # receiving the rest, which an error of the thread's cancels (the
        # peer may be quiet: 42nd review)
        self._decoding: asyncio.Future[Any] | None = None
        self._receiving: asyncio.Task[bool] | None = None
        self._decoder = _BlockingUnpickler(
            self._received, safe=safe, allow=allow, max_size=max_size
        )

    async def load(self) -> Any:
        """The next record; EOFError at the clean end of the stream. A load
        cancelled (say by ``asyncio.wait_for``) before any byte of its record
        came may be tried again; one cancelled or failed within a record
        leaves the stream's place lost, and later loads raise StreamError."""
        if self._state == "broken":
            raise StreamError("stream unreadable after an earlier error or cancelled load")
        decoding = None
        if self._state == "open":
            try:
                decoding = await self._receive_record()
            except BaseException:
                if self._offset != self._mark:
                    self._state = "broken"
                raise
        try:
            if decoding is not None:
                return await decoding
            return self._decoder.load()  # (which says why, once ended or broken)
        except EOFError:
            self._state = "ended"
            raise
        except BaseException:
            self._state = "broken"
            raise

    def __aiter__(self) -> Unpickler:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.load()
        except EOFError:
            raise StopAsyncIteration from None

    async def _read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only if the peer closed the stream."""
        try:
            data = await self._reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            data = exc.partial
        self._offset += len(data)
        return data

    async def _receive_record(self, tail: bool = False) -> asyncio.Future[Any] | None:
        """Receive the frames of the next record, or of the stream's tail, so
        that the blocking decoder finds them; past STREAM_FROM bytes, it
        decodes them in a thread as they come (that decoding, to await). If
        the input ends early, or a frame is one the record cannot hold there,
        it stops: the decoder then reports the truncation or the frame, at
        its offset. What it holds is bounded by max_size, which charges each
        frame its header as the decoder does (a flood of empty frames: 39th
        review)."""
        if not self._started:
            head = await self._read(fmt.STREAM_HEADER.size)
            self._received.push(head)
            self._started = True
            if len(head) < fmt.STREAM_HEADER.size:
                return None
        self._mark = self._offset
        progress = _Progress()
        try:
            if await self._receive_frames(tail, progress):
                await self._receive_rest(progress)
        finally:  # the thread, if any, finds what came, and no more
            self._received.end()
            decoding, self._decoding = self._decoding, None
        return decoding

    async def _receive_rest(self, progress: _Progress) -> None:
        """The rest of a record a thread decodes, received in a task of its
        own, which an error of the thread's cancels: the caller's own task
        is never cancelled but by the caller (43rd review)."""
        receiving = asyncio.get_running_loop().create_task(
            self._receive_frames(False, progress)
        )
        receiving.add_done_callback(_retrieve)  # (a caller's cancel may come after it)
        self._receiving = receiving
        try:
            await asyncio.wait((receiving,))
        except asyncio.CancelledError:  # the caller's: it ends once the rest has
            receiving.cancel()  # (the transport back: 44th review)
            await asyncio.wait((receiving,))
            raise
        finally:
            self._receiving = None
        if not receiving.cancelled():  # (else the thread failed: the load says why)
            receiving.result()

    async def _receive_frames(self, tail: bool, progress: _Progress) -> bool:
        """Whether it started a thread decoding the record, leaving the rest
        to ``_receive_rest``. ``tail``: what should be the stream's end
        (INDEX, END), which the caller reads itself: no thread (42nd review:
        a second record there, decoded by one, raced the caller's read)."""
        received = self._received
        push = received.push
        room = progress.room
        while (decoding := self._decoding) is None or not decoding.done():
            if decoding is None and progress.size > self.STREAM_FROM and not tail:
                self._decoding = self._decode_in_thread(room)
                return True
            while decoding is not None and received.held > self.STREAM_AHEAD:
                room.clear()
                if received.held > self.STREAM_AHEAD and not decoding.done():
                    await room.wait()
                else:
                    break
            offset = self._offset
            raw = await self._read(fmt.FRAME_HEADER.size)
            push(raw)
            if len(raw) < fmt.FRAME_HEADER.size:
                return False
            h = fmt.decode_frame_header(raw, offset, None)
            if not _may_follow(progress.after, h, progress.chunks_owed) or (
                tail and progress.after is None and h.kind not in (Kind.INDEX, Kind.END)
            ):
                return False  # (a record where the tail should be: refused unread)
            progress.after = h.kind
            progress.size += charge(h)
            if self._max_size is not None and progress.size > self._max_size:
                raise StreamError(
                    f"record exceeds max_size={self._max_size} bytes at {h.where()}"
                )
            progress.chunks_owed -= h.raw_size if h.kind is Kind.CHUNK else 0
            if h.kind is Kind.BUFFER and h.codec is not Codec.NONE:
                progress.chunks_owed = h.raw_size
            if h.kind is Kind.BUFFER and h.codec is Codec.NONE:
                if not await self._receive_buffer(h):
                    return False
                continue
            if h.kind is Kind.INDEX:  # up to 4 GiB the decoder skips: not held
                skipped = await self._skip(h.stored_size)
                received.push_gap(skipped)
                if skipped < h.stored_size:
                    return False
                continue
            payload = await self._read(h.stored_size)
            push(payload)
            if len(payload) < h.stored_size or h.kind in (Kind.RECORD_END, Kind.END):
                return False
        return False

    def _decode_in_thread(self, room: asyncio.Event) -> asyncio.Future[Any]:
        """The blocking decoder, in a thread of its own (a peer that goes
        quiet holds it: in the loop's shared pool a few would starve it,
        42nd review), reading what comes as it comes; ``room`` is set when
        what waits for it falls below STREAM_AHEAD, and when it is done."""
        loop = asyncio.get_running_loop()
        decoding: asyncio.Future[Any] = loop.create_future()

        def drained() -> None:
            loop.call_soon_threadsafe(room.set)

        def settle(result: Any, error: BaseException | None) -> None:
            room.set()
            if decoding.done():  # cancelled: the load raised already
                return
            if error is None:
                decoding.set_result(result)
                return
            decoding.set_exception(error)
            decoding.exception()  # (seen: the load raises it, or failed first)
            if self._receiving is not None:  # waiting for a peer, maybe quiet
                self._receiving.cancel()

        def decode() -> None:
            try:
                result, error = self._decoder.load(), None
            except BaseException as exc:  # handed to the loop, raised by the load
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:  # the loop is closed: nobody waits for it
                pass

        self._received.feed(drained, self.STREAM_AHEAD)
        threading.Thread(target=decode, name="streampickle decoder", daemon=True).start()
        return decoding

    async def _skip(self, n: int) -> int:
        """Read past ``n`` bytes as they come: how many (fewer at the end)."""
        done = 0
        while done < n and (piece := await self._reader.read(min(n - done, 1 << 20))):
            done += len(piece)
        self._offset += done
        return done

    async def _receive_buffer(self, h: fmt.FrameHeader) -> bool:
        """Read a BUFFER's payload into its final array, then check it: from
        DIRECT_FROM bytes, once the StreamReader holds none, straight from the
        transport (``_ReceiveInto``); else in pieces as the stream buffers
        them (``read``, not a ``readexactly`` of a whole chunk, which first
        grows the StreamReader's buffer to the chunk's size, pausing and
        resuming the transport all the while)."""
        try:
            out = np.empty(h.raw_size, dtype=np.uint8)
        except MemoryError:
            raise CorruptStreamError(
                f"{h.where()} claims {h.raw_size} bytes, more than can be allocated"
            ) from None
        view = memoryview(out.data)
        got = 0
        direct = h.raw_size >= self.DIRECT_FROM
        fault = None
        try:
            fault = prefault.start(view)  # (the peer sends while we fault)
            while got < h.raw_size:
                if fault is not None:
                    fault.reach(got)
                into = direct and _ReceiveInto.take_over(self._reader, view, got, fault)
                if into:
                    try:
                        await into.done
                    finally:
                        into.give_back()
                    got += into.got
                    self._offset += into.got
                    direct = False  # (cut short: the peer ended or failed, the reader says)
                    continue
                piece = await self._reader.read(h.raw_size - got)
                if not piece:
                    self._received.push(out[:got])
                    return False
                view[got : got + len(piece)] = piece
                got += len(piece)
                self._offset += len(piece)
        finally:
            if fault is not None:
                fault.close()
        table = await self._read(h.check_table_size())
        if len(table) < h.check_table_size():
            self._received.push(out)
            self._received.push(table)
            return False
        if h.checked:
            starts = range(0, h.raw_size, h.param)
            verify_chunks(h, [fmt.checksum(view[s : s + h.param]) for s in starts], table)
        self._received.push(out)
        self._received.push(table)
        return True


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Marks a task's error seen, by whoever raised it."""
    if not task.cancelled():
        task.exception()


@dataclass
class _Progress:
    """How far receiving a record has come: bytes charged against max_size,
    the raw bytes a compressed BUFFER still owes in CHUNKs, the last frame's
    kind; ``room`` is set when a thread decoding the record wants more."""

    size: int = 0
    chunks_owed: int = 0
    after: Kind | None = None
    room: asyncio.Event = field(default_factory=asyncio.Event)


class _ReceiveInto(asyncio.BufferedProtocol):
    """Stands in for a StreamReader's protocol while a buffer arrives: the
    transport receives straight into the buffer's memory (a socket's
    ``recv_into``), never past its end, where the StreamReader would copy
    each piece twice (into its own buffer, then out as bytes). Flow control
    and the connection's end go on to the stream's protocol. ``got`` counts
    the bytes received from ``start``; ``fault`` learns how far they reach."""

    def __init__(
        self,
        transport: Any,
        stream: Any,
        view: memoryview,
        start: int,
        fault: prefault.Prefault | None,
    ) -> None:
        self._transport = transport
        self._stream = stream
        self._view = view[start:]
        self._start = start
        self._fault = fault
        self._spill: bytearray | None = None
        self.got = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    def take_over(
        cls,
        reader: asyncio.StreamReader,
        view: memoryview,
        start: int,
        fault: prefault.Prefault | None = None,
    ) -> _ReceiveInto | None:
        """Put one receiving into ``view`` from ``start`` in place of
        ``reader``'s protocol, if that is asyncio's own, the reader holds
        nothing yet, and its transport can switch protocols."""
        transport = getattr(reader, "_transport", None)
        held = getattr(reader, "_buffer", None)
        if transport is None or held is None or len(held) or reader.at_eof():
            return None
        try:
            stream = transport.get_protocol()
            # asyncio's own, feeding this reader what it receives, as it does:
            # not a subprocess's pipe, which feeds it a loop turn later, nor a
            # protocol that changes what it feeds (44th review)
            if (
                type(stream) is not asyncio.StreamReaderProtocol
                or getattr(stream, "_stream_reader", None) is not reader
                or transport.is_closing()
                or not transport.is_reading()
            ):
                return None
            into = cls(transport, stream, view, start, fault)
            transport.set_protocol(into)
        except (AttributeError, NotImplementedError):  # a transport of another kind
            return None
        return into

    def give_back(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self._transport.get_protocol() is self:
            self._transport.set_protocol(self._stream)

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        if self.got < len(self._view):
            return self._view[self.got :]
        # (a transport feeding what it already read, after the end: the stream's)
        self._spill = bytearray(max(sizehint, 1 << 16))
        return self._spill

    def buffer_updated(self, nbytes: int) -> None:
        if self._spill is not None:
            spill, self._spill = self._spill, None
            self._stream.data_received(bytes(spill[:nbytes]))
            return
        self._advance(nbytes)

    def data_received(self, data: bytes) -> None:  # a transport that gives bytes
        n = min(len(data), len(self._view) - self.got)
        self._view[self.got : self.got + n] = data[:n]
        self._advance(n)
        if n < len(data):
            self._stream.data_received(data[n:])

    def _advance(self, n: int) -> None:
        self.got += n
        if self._fault is not None:
            self._fault.reach(self._start + self.got)
        if self.got == len(self._view):
            self.give_back()

    def eof_received(self) -> bool | None:
        self.give_back()
        return self._stream.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self.give_back()
        self._stream.connection_lost(exc)

    def pause_writing(self) -> None:  # the same connection's writer: its flow
        self._stream.pause_writing()

    def resume_writing(self) -> None:
        self._stream.resume_writing()


def _may_follow(after: Kind | None, h: fmt.FrameHeader, chunks_owed: int) -> bool:
    """Whether frame ``h`` may come in a record after a frame of kind
    ``after`` (None: first), as the decoder reads them: the stream's end
    (INDEX, END) first only, CHUNKs while a compressed BUFFER owes them, an
    uncompressed BUFFER after PAD."""
    if h.kind is Kind.CHUNK:  # (41st review: not past what its BUFFER owes, read whole)
        return 0 < h.raw_size <= chunks_owed
    if chunks_owed > 0:
        return False
    if after is Kind.PAD:
        return h.kind is Kind.BUFFER and h.codec is Codec.NONE
    if after is Kind.INDEX:
        return h.kind is Kind.END
    return after is None or h.kind not in (Kind.END, Kind.INDEX)


async def dump(obj: Any, writer: asyncio.StreamWriter, **options: Any) -> None:
    """Write ``obj`` to ``writer`` as a one-record stream."""
    pickler = Pickler(writer, **options)
    await pickler.dump(obj)
    await pickler.close()


async def load(
    reader: asyncio.StreamReader,
    *,
    safe: bool = False,
    allow: Iterable[str] = (),
    max_size: int | None = None,
) -> Any:
    """Read a one-record stream from ``reader``, and nothing after it."""
    unpickler = Unpickler(reader, safe=safe, allow=allow, max_size=max_size)
    obj = await unpickler.load()
    await unpickler._receive_record(tail=True)  # the stream's tail: INDEX or END
    unpickler._decoder._expect_end()
    return obj
