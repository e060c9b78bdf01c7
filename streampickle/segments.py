"""What an asynchronous reader (``streampickle.aio``) has received, served
to the blocking frame reader as a source: see ``SegmentSource``."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

from .errors import TruncatedStreamError


class SegmentSource:
    """Bytes received ahead by an asynchronous reader (``streampickle.aio``),
    served to the blocking frame reader. Buffer payloads arrive already in
    their final arrays and are handed over by ``view``, not copied again; an
    index, skipped, is a gap (``push_gap``); small pieces (frame headers) are
    joined, so a flood of them holds only their bytes. While ``feed`` is on,
    a reader in another thread waits for bytes still to come (``end`` says
    none will), and ``drained`` is called when what waits for it falls below
    ``low`` bytes."""

    seekable = False
    #: bytes objects smaller than this join the last one pushed
    JOINED = 1 << 12

    def __init__(self) -> None:
        self.segments: collections.deque[Any] = collections.deque()
        self.skip = 0  # bytes of the first segment read
        self.position = 0
        self.held = 0  # bytes pushed, not read
        self.run: bytearray | None = None  # the last segment, while pieces join it
        self.lock = threading.Condition()
        self.fed = False  # a reader may wait for what is still to come
        self.ended = False
        self.drained: Callable[[], None] | None = None
        self.low = 0

    def feed(self, drained: Callable[[], None], low: int) -> None:
        with self.lock:
            self.fed, self.ended, self.drained, self.low = True, False, drained, low

    def end(self) -> None:
        """No more bytes come for the reader waiting in ``feed`` mode."""
        with self.lock:
            self.fed, self.ended, self.drained = False, True, None
            self.lock.notify_all()

    def push(self, data: Any) -> None:
        with self.lock:
            if type(data) is bytes and len(data) < self.JOINED:
                if self.run is None:
                    self.run = bytearray()
                    self.segments.append(self.run)
                self.run += data
            else:
                self.run = None
                self.segments.append(data)
            self.held += memoryview(data).nbytes
            self.lock.notify_all()

    def push_gap(self, n: int) -> None:
        """``n`` bytes read past (an index the frame reader skips): served
        as zeros, never held."""
        with self.lock:
            self.run = None
            self.segments.append(n)
            self.held += n
            self.lock.notify_all()

    def _wait(self) -> bool:
        """Whether a segment is there, waiting for one while fed."""
        while not self.segments and self.fed and not self.ended:
            self.lock.wait()
        return bool(self.segments)

    def _taken(self, n: int) -> None:
        self.position += n
        self.held -= n
        if self.drained is not None and self.held < self.low <= self.held + n:
            self.drained()

    def readinto(self, view: memoryview) -> int:
        got = 0
        with self.lock:
            self.run = None  # what is being read grows no more
            while got < view.nbytes and self._wait():
                first = self.segments[0]
                size = first if type(first) is int else memoryview(first).nbytes
                take = min(size - self.skip, view.nbytes - got)
                if type(first) is int:
                    view[got : got + take] = bytes(take)
                else:
                    view[got : got + take] = memoryview(first).cast("B")[
                        self.skip : self.skip + take
                    ]
                got += take
                if take == size - self.skip:
                    self.segments.popleft()
                    self.skip = 0
                else:
                    self.skip += take
            self._taken(got)
        return got

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        return bytes(buf[: self.readinto(memoryview(buf))])

    def view(self, n: int) -> Any:
        """The next segment: the receiver pushes each buffer as one, or as a
        shorter one when the input ended inside it."""
        with self.lock:
            got = memoryview(self.segments[0]).nbytes - self.skip if self._wait() else 0
            if got < n or self.skip:
                raise TruncatedStreamError(
                    f"input ended at offset {self.position + got} inside a buffer"
                )
            self._taken(n)
            return self.segments.popleft()

    def remaining(self) -> int | None:
        return None

    def close(self) -> None:
        with self.lock:
            self.segments.clear()
            self.run, self.skip, self.held = None, 0, 0
