"""Validated frames from a source: the reading half of the frame codec.

``FrameReader`` reads exactly one frame at a time and never past it, checks
every header before acting on its lengths, and verifies payloads. It knows
the source only through ``readinto``, ``remaining``, ``seek`` and, for a
memory map, ``view``.
"""

from __future__ import annotations

import collections
import struct
import warnings
from concurrent.futures import Future
from typing import Any

import numpy as np

from . import codecs, prefault
from . import format as fmt
from .errors import CorruptStreamError, TruncatedStreamError
from .format import Codec, Flag, FrameHeader, Kind
from .io import FileSource, MmapSource, SocketSource
from .segments import SegmentSource
from .writer import IN_FLIGHT_PER_THREAD

AnySource = FileSource | SocketSource | MmapSource | SegmentSource
#: Read per record, so kept as globals (``Codec.NONE`` costs ~70 ns on 3.11).
_HEADER_SIZE, _NO_CODEC = fmt.FRAME_HEADER.size, Codec.NONE


class FrameReader:
    """Validated frames from a source; never reads past the frame asked for."""

    #: Allocation step for payloads from inputs of unknown size.
    GROWTH_STEP = 1 << 20

    def __init__(self, source: AnySource, threads: int | None = None) -> None:
        self.source = source
        self.threads = codecs.CPUS if threads is None else threads
        self.warned_mmap = False

    def exact(self, n: int, what: str) -> bytes:
        """The next ``n`` bytes. Where the input's size is unknown (a socket),
        memory grows with the bytes that arrive, not with what a header claims."""
        known = self.source.remaining() is not None
        if known:  # the header's length was checked against the input's size
            data = self.source.read(n)
            if len(data) < n:
                raise TruncatedStreamError(
                    f"input ended at offset {self.source.position} inside {what}"
                )
            return data
        buf = bytearray(n if known else min(n, self.GROWTH_STEP))
        filled = 0
        while True:
            filled += self.source.readinto(memoryview(buf)[filled:])
            if filled < len(buf):
                raise TruncatedStreamError(
                    f"input ended at offset {self.source.position} inside {what}"
                )
            if filled == n:
                return bytes(buf)
            buf += bytes(min(len(buf), n - filled))

    def skip(self, n: int, what: str) -> None:
        """Consume ``n`` bytes without keeping them (seeking past them if we can)."""
        remaining = self.source.remaining()
        if isinstance(self.source, FileSource | MmapSource) and remaining is not None:
            if n > remaining:
                end = self.source.position + remaining
                raise TruncatedStreamError(f"input ended at offset {end} inside {what}")
            self.source.seek(self.source.position + n)
            return
        scratch = memoryview(bytearray(min(n, self.GROWTH_STEP)))
        while n:
            piece = scratch[: min(n, scratch.nbytes)]
            if self.source.readinto(piece) < piece.nbytes:
                raise TruncatedStreamError(
                    f"input ended at offset {self.source.position} inside {what}"
                )
            n -= piece.nbytes

    def stream_header(self, then: int = 0) -> tuple[int, bytes]:
        """The stream's version, and the ``then`` bytes after its header, read
        with it (fewer where the input ends): a frame header always follows,
        so a reader may ask for it without reading past the stream."""
        data = self.source.read(fmt.STREAM_HEADER.size + then)
        if not data:
            raise EOFError("empty input: no streampickle stream to read")
        if len(data) < fmt.STREAM_HEADER.size:
            if not fmt.MAGIC.startswith(data[: len(fmt.MAGIC)]):
                raise CorruptStreamError("not a streampickle stream: bad magic at offset 0")
            raise TruncatedStreamError(
                f"input ended at offset {len(data)} inside the stream header"
            )
        version = fmt.decode_stream_header(data[: fmt.STREAM_HEADER.size])
        return version, data[fmt.STREAM_HEADER.size :]

    def next_header(self, data: bytes | None = None) -> FrameHeader | None:
        """The next frame header, or None if the input ends cleanly before it.
        ``data``: its bytes, already read by the caller (with the stream
        header, after a PICKLE payload, or to try a faster reading first)."""
        if data is None:
            data = self.source.read(_HEADER_SIZE)
        offset = self.source.position - len(data)
        if not data:
            return None
        if len(data) < _HEADER_SIZE:
            raise TruncatedStreamError(
                f"input ended at offset {offset + len(data)} inside a frame header"
            )
        return fmt.decode_frame_header(data, offset, self.source.remaining())

    def payload(self, h: FrameHeader) -> bytes:
        """The stored payload, checked."""
        data = self.exact(h.stored_size, h.where())
        if h.checked and fmt.checksum(data) != h.payload_check:
            raise CorruptStreamError(f"payload check mismatch in {h.where()}")
        return data

    def pickle_and_after(self, h: FrameHeader) -> tuple[bytes, bytes]:
        """The decoded payload of PICKLE frame ``h`` and the (up to 32) bytes
        after it, read together: one ``recv`` per small record on a socket. A
        frame always follows a PICKLE frame (at least its RECORD_END), so this
        never reads past the stream; fewer bytes after it mean the input ended
        (``next_header`` given them says so). The caller keeps
        ``h.stored_size`` within GROWTH_STEP."""
        check = h.payload_check if h.checked else None
        data, after = self.payload_and_after(h.stored_size, check, h.offset)
        if h.codec is not _NO_CODEC:
            data = self._decoded(h, data)
        return data, after

    def payload_and_after(
        self, n: int, check: int | None, offset: int
    ) -> tuple[bytes, bytes]:
        """``pickle_and_after`` for the PICKLE frame whose header, at
        ``offset``, was just read: its ``n`` stored bytes, verified against
        ``check`` unless None, and the bytes after them."""
        return self.split_payload(self.source.read(n + _HEADER_SIZE), n, check, offset)

    def split_payload(
        self, both: bytes, n: int, check: int | None, offset: int
    ) -> tuple[bytes, bytes]:
        """``payload_and_after`` of ``both``, the bytes read after the header."""
        if len(both) < n:
            raise TruncatedStreamError(
                f"input ended at offset {self.source.position} "
                f"inside PICKLE frame at offset {offset}"
            )
        data = both[:n]
        if check is not None and fmt.checksum(data) != check:
            raise CorruptStreamError(
                f"payload check mismatch in PICKLE frame at offset {offset}"
            )
        return data, both[n:]

    def decoded_payload(self, h: FrameHeader) -> bytes:
        """The payload of a PICKLE frame, checked and decompressed."""
        return self._decoded(h, self.payload(h))

    @staticmethod
    def _decoded(h: FrameHeader, data: bytes) -> bytes:
        if h.codec is Codec.NONE:
            return data
        out = bytearray(h.raw_size)
        codecs.decompress_into(data, memoryview(out), h.where())
        return bytes(out)

    def buffer(self, h: FrameHeader, ordinal: int) -> Any:
        """The buffer of a BUFFER frame, the record's ``ordinal``-th: a verified
        uint8 array, or a view of the memory map (not verified, so its pages
        are not touched)."""
        n, chunk = h.raw_size, h.param
        if h.payload_check != fmt.buffer_ordinal_check(ordinal):
            raise CorruptStreamError(f"{h.where()} is not buffer {ordinal} of its record")
        if h.codec is Codec.NONE and isinstance(self.source, MmapSource | SegmentSource):
            # Mapped data stays unread; received data was checked on arrival.
            view = self.source.view(n)
            self.skip(h.check_table_size(), f"check table of {h.where()}")
            return view
        try:
            out = np.empty(n, dtype=np.uint8)
        except MemoryError:
            raise CorruptStreamError(
                f"{h.where()} claims {n} bytes, more than can be allocated"
            ) from None
        view = memoryview(out.data)
        if h.codec is not Codec.NONE:
            self._chunks(h, view)
            return out
        # From a file, chunks are checked in the pool while the next ones are
        # read (XXH3 releases the GIL): inline, checking cost 12% of a warm
        # load. Not from a socket: the sending process needs the other core.
        from_file = isinstance(self.source, FileSource)
        pooled = h.checked and self.threads and n > chunk and from_file
        pool = codecs.pool(self.threads) if pooled else None
        sums: list[Future[int] | int] = []
        fault = None
        try:
            # From a file the reader's copy keeps a core busy: one worker.
            workers = min(self.threads, 1) if from_file else self.threads
            fault = prefault.start(view, workers)
            for start in range(0, n, chunk):
                piece = view[start : start + chunk]
                if self._fill(piece, start, fault) < piece.nbytes:
                    raise TruncatedStreamError(
                        f"input ended at offset {self.source.position} inside {h.where()}"
                    )
                if h.checked:
                    sums.append(
                        fmt.checksum(piece)
                        if pool is None
                        else pool.submit(fmt.checksum, piece)
                    )
        finally:
            if fault is not None:
                fault.close()
        if h.checked:
            table = self.exact(h.check_table_size(), f"check table of {h.where()}")
            verify_chunks(h, [s if isinstance(s, int) else s.result() for s in sums], table)
        return out

    def _fill(self, piece: memoryview, at: int, fault: prefault.Prefault | None) -> int:
        """``readinto`` ``piece`` (at ``at`` in its buffer): in STEP slices
        while ``fault`` faults in the pages ahead, telling it how far."""
        if fault is None:
            return self.source.readinto(piece)
        got = 0
        for step in range(0, piece.nbytes, prefault.STEP):
            fault.reach(at + got)
            want = min(prefault.STEP, piece.nbytes - step)
            n = self.source.readinto(piece[step : step + want])
            got += n
            if n < want:
                break
        return got

    def _chunks(self, h: FrameHeader, out: memoryview) -> None:
        """Read a compressed BUFFER's CHUNK frames into ``out``, decompressing
        them in parallel, each straight into its slice of the final array."""
        if isinstance(self.source, MmapSource) and not self.warned_mmap:
            self.warned_mmap = True
            warnings.warn(
                "compressed buffers are decompressed into memory, not memory-mapped",
                stacklevel=6,
            )
        several = h.raw_size > h.param
        workers = codecs.pool(self.threads) if several and self.threads > 0 else None
        in_flight: collections.deque[Future[None]] = collections.deque()
        try:
            for i, start in enumerate(range(0, h.raw_size, h.param)):
                dest = out[start : start + h.param]
                what = f"chunk {i} ({dest.nbytes} bytes) of {h.where()}"
                c = self.next_header()
                if c is not None and c.kind is Kind.CHUNK and Flag.SHUFFLE in c.flags:
                    k, n = c.param, dest.nbytes  # one frame per byte lane follows
                    if n % k or c.raw_size != n // k:
                        raise CorruptStreamError(f"{c.where()}: bad lanes for {what}")
                    lanes = [(c, self.payload(c))]
                    for j in range(1, k):
                        lane = self._next_lane(f"lane {j} of {what}", k, n // k)
                        lanes.append((lane, self.payload(lane)))
                    task: tuple[Any, ...] = (decode_lanes, lanes, dest)
                elif c is None or c.kind is not Kind.CHUNK or c.raw_size != dest.nbytes:
                    found = "the end of the input" if c is None else c.where()
                    raise (TruncatedStreamError if c is None else CorruptStreamError)(
                        f"{found} where {what} was expected"
                    )
                elif c.codec is Codec.NONE:
                    self._read_into(c, dest)
                    continue
                else:
                    task = (_decode_chunk, c, self.payload(c), dest)
                if workers is None:
                    task[0](*task[1:])
                else:
                    in_flight.append(workers.submit(*task))
                    if len(in_flight) > IN_FLIGHT_PER_THREAD * self.threads:
                        in_flight.popleft().result()
        finally:
            for done in in_flight:  # let no task outlive the call, even on error
                done.exception()
        for done in in_flight:
            done.result()

    def _next_lane(self, what: str, k: int, size: int) -> FrameHeader:
        """The next frame: a lane of ``size`` raw bytes of a ``k``-lane chunk."""
        c = self.next_header()
        if c is None:
            raise TruncatedStreamError(
                f"input ended at offset {self.source.position} where {what} was expected"
            )
        if not (
            c.kind is Kind.CHUNK
            and Flag.SHUFFLE in c.flags
            and (c.param, c.raw_size) == (k, size)
        ):
            raise CorruptStreamError(f"{c.where()} where {what} was expected")
        return c

    def _read_into(self, c: FrameHeader, dest: memoryview) -> None:
        """A raw chunk, read straight into its place and checked there."""
        if self.source.readinto(dest) < dest.nbytes:
            raise TruncatedStreamError(
                f"input ended at offset {self.source.position} inside {c.where()}"
            )
        if c.checked and fmt.checksum(dest) != c.payload_check:
            raise CorruptStreamError(f"payload check mismatch in {c.where()}")


def verify_chunks(h: FrameHeader, sums: list[int], table: bytes) -> None:
    """Compare a BUFFER's chunk checks, computed as it arrived, with its table."""
    want = struct.unpack(f"<{len(sums)}I", table)
    for i, (got, expected) in enumerate(zip(sums, want, strict=True)):
        if got != expected:
            raise CorruptStreamError(
                f"check mismatch in chunk {i} (bytes {i * h.param}..) of {h.where()}"
            )


def _decode_chunk(c: FrameHeader, payload: bytes, dest: memoryview) -> None:
    """Decompress one chunk straight into ``dest`` (run in the pool)."""
    codecs.decompress_into(payload, dest, c.where())


def decode_lanes(lanes: list[tuple[FrameHeader, bytes]], dest: memoryview) -> None:
    """Decode the byte lanes of a shuffled chunk and put each byte of every
    item back in its place in ``dest`` (run in the pool)."""
    m = dest.nbytes // len(lanes)
    packed = codecs.scratch("lanes", dest.nbytes)  # compressed lanes, decoded
    rows: list[Any] = []
    for j, (c, payload) in enumerate(lanes):
        if c.codec is Codec.NONE:
            rows.append(payload)
        else:
            row = memoryview(packed.data)[j * m : (j + 1) * m]
            codecs.decompress_into(payload, row, c.where())
            rows.append(row)
    codecs.unshuffle_into(rows, dest)
