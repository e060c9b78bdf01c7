"""Adapters between the frame codec and the places bytes live.

A sink takes bytes and memoryviews in stream order; a source fills caller
memory with exactly the bytes asked for and never reads ahead, so the next
message on a socket or pipe stays there for the next reader. Each adapter is a
few dozen lines; the format lives in ``format.py`` and the logic in the
pickler and unpickler.
"""

from __future__ import annotations

import _socket
import errno
import io
import mmap
import os
import socket
import sys
import tempfile
from typing import Any, BinaryIO, Protocol

from .pagecache import ReadBehind, WriteBehind
from .segments import SegmentSource

PathLike = str | os.PathLike[str]

# ---------------------------------------------------------------------------
# Sinks


class Sink(Protocol):
    position: int  # bytes written since the stream began
    base: int  # absolute offset of the stream's first byte (for alignment)
    seekable: bool  # an index at the end can be found by seeking

    def write(self, data: bytes | bytearray | memoryview) -> None: ...
    def flush(self) -> None:
        """Hand what was written to the reader: called at every record's end."""
        ...

    def send(self, data: bytes) -> None:
        """``write`` the end of a record, then ``flush``: in one step."""
        ...

    def finish(self) -> None: ...
    def abort(self) -> None: ...


class FileSink:
    """A binary file object the caller owns: flushed, never closed. Files we
    open ourselves also get a ``WriteBehind`` (their positions are offsets in
    the file)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        try:
            self.seekable = bool(file.seekable())
            self.base = file.tell() if self.seekable else 0
        except (AttributeError, OSError):
            self.seekable, self.base = False, 0
        self.position = 0
        self.behind: WriteBehind | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        written = self.file.write(data)
        # Raw files may write less than asked; buffered ones return n or None.
        if written is not None and written < n:
            view = memoryview(data).cast("B")
            while written < n:
                more = self.file.write(view[written:])
                written += more or 0
        self.position += n
        if self.behind is not None and self.behind.due(self.position):
            self.file.flush()
            self.behind.step(self.position)

    def flush(self) -> None:
        flush = getattr(self.file, "flush", None)
        if flush is not None:
            flush()

    def send(self, data: bytes) -> None:
        self.write(data)
        self.flush()

    def finish(self) -> None:
        self.flush()

    def abort(self) -> None:
        self.flush()


_AF_UNIX = getattr(socket, "AF_UNIX", None)  # not on Windows


class SocketSink:
    """A connected socket. Small writes (headers, small frames) are gathered
    and sent together, so a record costs few packets; large ones are sent
    straight from the caller's memory.

    TCP: Nagle's algorithm stays on for records of small writes only (as the
    kernel and multiprocessing.connection have it): a stream of small
    messages then shares packets, where one packet per message cost a third
    of the throughput. But after large data it would hold the last partial
    packet until the peer acknowledges what came before, while the peer,
    waiting for exactly those bytes, delays its acknowledgement: one stall per
    buffer chunk (1 GiB over loopback took 2.3 s instead of 0.33 s). So each
    large send, and the end of a record that sent 64 KiB or more, is pushed
    out at once: on Linux, setting TCP_NODELAY sends what Nagle holds, and it
    is cleared again. Elsewhere (macOS only flips a flag) a TCP socket gets
    TCP_NODELAY for good. A socket whose owner set TCP_NODELAY is left as it
    is.

    Unix sockets: the kernel's default send buffer (~208 KiB) makes the
    sender wait for the receiver every few hundred KiB. While a record's
    large writes go out it is raised to WIDE_SEND_BUFFER (the kernel caps it
    at net.core.wmem_max), and set back at the record's end (1 GiB over a
    socketpair: 1.6 GB/s at the default, 4.0 GB/s widened, medians of 5). TCP
    tunes its own, and setting it would stop that for good."""

    seekable = False
    base = 0
    #: Writes below this size are gathered; larger ones go out as they are.
    GATHER = 1 << 16
    WIDE_SEND_BUFFER = 4 << 20

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.position = 0
        self.pending = bytearray()
        self.gathers = hasattr(sock, "sendmsg")  # not on Windows
        self.nagle = False  # a TCP socket with Nagle on: push after large sends
        self.pushed = True  # nothing sent since the last push, or no need
        self.narrow = 0  # a Unix socket's own send buffer, while widened
        # The C socket's fields: socket.socket's family and type properties
        # make enums in Python, ~0.5 us each for every sp.dump of a message.
        # (gevent's socket class wraps a C socket instead of being one.)
        c_socket = isinstance(sock, _socket.socket)
        family = _socket.socket.family.__get__(sock) if c_socket else int(sock.family)
        kind = _socket.socket.type.__get__(sock) if c_socket else int(sock.type)
        if family in (socket.AF_INET, socket.AF_INET6) and kind == socket.SOCK_STREAM:
            try:
                if not sys.platform.startswith("linux"):
                    # Elsewhere setting TCP_NODELAY need not send what Nagle
                    # holds (XNU only flips a flag): turn Nagle off for good.
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                else:
                    self.nagle = not sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            except OSError:  # closed: writing will say
                pass
        self.unix = family == _AF_UNIX and kind == socket.SOCK_STREAM

    def write(self, data: bytes | bytearray | memoryview) -> None:
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        if n < self.GATHER:
            self.pending += data
            if len(self.pending) >= self.GATHER:
                self._send_pending()
                self.pushed = not self.nagle  # the record's end pushes
            self.position += n
            return
        if self.unix and not self.narrow:
            self._widen()
        if self.pending and self.gathers:
            # The gathered headers go out in one call with the data after
            # them: one system call and no packet of their own.
            try:
                self._send_together(memoryview(self.pending), memoryview(data).cast("B"))
            except NotImplementedError:  # ssl.SSLSocket's sendmsg, which sends nothing
                self.gathers = False
                self._send_pending()
                self.sock.sendall(data)
            self.pending = bytearray()
        else:
            self._send_pending()
            self.sock.sendall(data)
        self.position += n
        if self.nagle:
            self._push()
            self.pushed = False  # the small writes after it must be pushed too

    def _push(self) -> None:
        """Send what Nagle's algorithm holds back, unless the owner has since
        turned it off (then their setting stays, and no push is needed)."""
        try:
            if self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
                self.nagle = False
                return
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        except OSError:  # the connection is closed: nothing is held any more
            pass

    def _widen(self) -> None:
        try:
            own = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            if own < self.WIDE_SEND_BUFFER:
                wide = self.WIDE_SEND_BUFFER
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, wide)
                self.narrow = own
        except OSError:  # closed: sending will say
            self.unix = False

    def _set_back(self) -> None:
        """The socket's own send buffer again (Linux doubles what it is set
        to, and reports the doubled size)."""
        if self.narrow:
            own, self.narrow = self.narrow, 0
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, (own + 1) // 2)
            except OSError:
                pass

    def _send_together(self, first: memoryview, second: memoryview) -> None:
        parts = [first, second]
        while parts:
            sent = self.sock.sendmsg(parts)
            while parts and sent >= parts[0].nbytes:
                sent -= parts.pop(0).nbytes
            if parts:
                parts[0] = parts[0][sent:]

    # Rebinding, not clear(): after a failed send, views of the old buffer may
    # live on in the traceback, and clear() would raise BufferError over it.
    def _send_pending(self) -> None:
        if self.pending:
            self.sock.sendall(self.pending)
            self.pending = bytearray()

    def flush(self) -> None:
        self._send_pending()
        if not self.pushed:
            self.pushed = True
            self._push()
        self._set_back()

    def send(self, data: bytes) -> None:
        if self.pending or len(data) >= self.GATHER or self.narrow:
            self.write(data)
            self.flush()
            return
        self.sock.sendall(data)  # a small message: one send, no gathering copy
        self.position += len(data)
        if not self.pushed:
            self.pushed = True
            self._push()

    def finish(self) -> None:
        self.flush()

    def abort(self) -> None:
        self.pending = bytearray()
        self._set_back()


class AtomicPathSink(FileSink):
    """Writes a temp file beside ``path``; ``finish`` fsyncs and renames it
    over the target, so the name never holds a half-written stream. The page
    cache is handled as ``pagecache.WriteBehind`` says."""

    def __init__(self, path: PathLike, page_cache: str = "auto") -> None:
        self.path = os.fspath(path)
        folder, name = os.path.split(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        super().__init__(open(fd, "wb", buffering=1 << 20))
        self.behind = WriteBehind(fd, page_cache)

    def finish(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        _fsync_folder(os.path.dirname(os.path.abspath(self.path)))

    def abort(self) -> None:
        self.file.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


class AppendSink(FileSink):
    """Adds records to an existing stream file in place, from ``position``
    (where its INDEX, or END, or a crashed writer's partial record began)."""

    def __init__(self, path: PathLike, position: int, page_cache: str = "auto") -> None:
        file = open(path, "r+b", buffering=1 << 20)
        file.truncate(position)
        file.seek(position)
        super().__init__(file)
        self.base, self.position = 0, position
        self.behind = WriteBehind(file.fileno(), page_cache, start=position)

    def finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def abort(self) -> None:
        self.file.close()


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_sink(file: Any, page_cache: str = "auto") -> Sink:
    if isinstance(file, socket.socket):  # first: os.PathLike's check is slower
        return SocketSink(file)
    if isinstance(file, (str, os.PathLike)):
        return AtomicPathSink(file, page_cache)
    if callable(getattr(file, "write", None)):
        return FileSink(file)
    raise TypeError(
        f"cannot write to {type(file).__name__}: expected a path, a binary "
        "file object or a connected socket"
    )


# ---------------------------------------------------------------------------
# Sources


class FileSource:
    """A binary file object; closed only if we opened it."""

    def __init__(self, file: Any, owned: bool = False, page_cache: str = "auto") -> None:
        self.file = file
        self.owned = owned
        self.position = 0
        self.base = 0  # where the stream starts in the file, if seekable
        self._end: int | None = None
        self._fill: Any = getattr(file, "readinto", None)
        try:
            if file.seekable():
                self.base = file.tell()
                self._end = file.seek(0, io.SEEK_END) - self.base
                file.seek(self.base)
        except (AttributeError, OSError):
            self._end = None
        self.seekable = self._end is not None
        # Pages are dropped only where our positions are offsets in the file
        # behind the descriptor (not, say, a GzipFile's).
        raw = file if isinstance(file, io.FileIO) else getattr(file, "raw", None)
        fd = raw.fileno() if isinstance(raw, io.FileIO) else None
        self.behind = ReadBehind(fd, self.base, self._end, page_cache)

    def seek(self, position: int) -> None:
        """Move to ``position`` in the stream (seekable files only)."""
        self.file.seek(self.base + position)
        self.behind.seek(self.position, position)
        self.position = position

    def readinto(self, view: memoryview) -> int:
        got, want = 0, view.nbytes
        while got < want:
            if self._fill is not None:
                n = self._fill(view[got:])
            else:
                data = self.file.read(want - got)
                n = None if data is None else len(data)
                if n:
                    view[got : got + n] = data
            if n is None:  # a non-blocking file with nothing yet: not its end
                self.position += got
                raise _would_block(self.position)
            if not n:
                break
            got += n
        self.position += got
        if self.position >= self.behind.next_at:
            self.behind.step(self.position)
        return got

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes as one bytes object (fewer only at end of input):
        a single copy out of the file, where readinto needs a second."""
        data: bytes | None = self.file.read(n)
        got = 0 if data is None else len(data)
        if data is not None and 0 < got < n:  # a pipe or raw file may return less
            parts = [data]
            while got < n and (data := self.file.read(n - got)):
                parts.append(data)
                got += len(data)
            data = b"".join(parts) if data is not None else None
        self.position += got
        if data is None:  # a non-blocking file with nothing yet: not its end
            raise _would_block(self.position)
        if self.position >= self.behind.next_at:
            self.behind.step(self.position)
        return data

    def remaining(self) -> int | None:
        return None if self._end is None else self._end - self.position

    def close(self) -> None:
        if self.owned:
            self.file.close()


def _would_block(position: int) -> BlockingIOError:
    return BlockingIOError(
        errno.EAGAIN, f"no data ready at offset {position}: the file is non-blocking"
    )


def _timed_out(position: int) -> TimeoutError:
    return TimeoutError(f"timed out at offset {position} of the stream")


class SocketSource:
    """A connected socket, read with ``recv_into``: never past what we ask."""

    seekable = False

    def __init__(self, sock: socket.socket, prefix: bytes = b"") -> None:
        self.sock = sock
        self.position = 0
        self.prefix = prefix  # bytes already received from sock, read first

    def _take_prefix(self, n: int) -> bytes:
        taken, self.prefix = self.prefix[:n], self.prefix[n:]
        self.position += len(taken)
        return taken

    def readinto(self, view: memoryview) -> int:
        got, want = 0, view.nbytes
        if self.prefix:
            taken = self._take_prefix(want)
            got = len(taken)
            view[:got] = taken
        try:
            while got < want and (n := self.sock.recv_into(view[got:], want - got)):
                got += n
                self.position += n
        except TimeoutError as exc:
            raise _timed_out(self.position) from exc
        return got

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only where the peer closed) as one bytes:
        small reads skip readinto's buffer and copy."""
        if self.prefix:
            taken = self._take_prefix(n)
            return taken + self.read(n - len(taken)) if len(taken) < n else taken
        try:
            data = self.sock.recv(n)
            self.position += len(data)
            if len(data) == n or not data:  # most reads: one recv
                return data
            parts, got = [data], len(data)
            while got < n and (data := self.sock.recv(n - got)):
                parts.append(data)
                got += len(data)
                self.position += len(data)
        except TimeoutError as exc:
            raise _timed_out(self.position) from exc
        return b"".join(parts)

    def remaining(self) -> int | None:
        return None

    def close(self) -> None:
        pass


class MmapSource:
    """A file mapped into memory: frame headers and pickle bytes are copied
    out, buffers are handed out as views of the map (``view``)."""

    def __init__(self, file: Any, mode: str, owned: bool) -> None:
        access = mmap.ACCESS_READ if mode == "r" else mmap.ACCESS_COPY
        self.file = file
        self.owned = owned
        self.base: int = file.tell()
        size: int = os.fstat(file.fileno()).st_size
        self.map = mmap.mmap(file.fileno(), size, access=access) if size else None
        self.view_all = memoryview(self.map) if self.map is not None else memoryview(b"")
        self.end = size
        self.position = 0

    def readinto(self, view: memoryview) -> int:
        start = self.base + self.position
        n = max(0, min(view.nbytes, self.end - start))
        view[:n] = self.view_all[start : start + n]
        self.position += n
        return n

    def read(self, n: int) -> bytes:
        start = self.base + self.position
        data = bytes(self.view_all[start : start + max(0, n)])
        self.position += len(data)
        return data

    seekable = True

    def seek(self, position: int) -> None:
        self.position = position

    def view(self, n: int) -> memoryview:
        """The next ``n`` bytes as a view of the map (caller checked ``n``)."""
        start = self.base + self.position
        self.position += n
        return self.view_all[start : start + n]

    def remaining(self) -> int | None:
        return self.end - self.base - self.position

    def close(self) -> None:
        # The map stays open while arrays view it; it closes when they die.
        if self.owned:
            self.file.close()
        else:  # leave a caller's file just past what we read, as reads do
            self.file.seek(self.base + self.position)


def open_source(
    file: Any, mmap_mode: str | None, page_cache: str = "auto"
) -> FileSource | SocketSource | MmapSource | SegmentSource:
    if mmap_mode not in (None, "r", "c"):
        raise ValueError(f"mmap_mode must be None, 'r' or 'c', not {mmap_mode!r}")
    if isinstance(file, socket.socket):  # first: os.PathLike's check is slower
        if mmap_mode is not None:
            raise ValueError("mmap_mode needs a file, not a socket")
        return SocketSource(file)
    if isinstance(file, (str, os.PathLike)):
        f = open(file, "rb", buffering=0)
        if hasattr(os, "posix_fadvise"):  # we read front to back: ask for readahead
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        if mmap_mode is not None:
            return MmapSource(f, mmap_mode, owned=True)
        return FileSource(f, owned=True, page_cache=page_cache)
    if isinstance(file, SegmentSource | SocketSource):
        return file
    if not callable(getattr(file, "read", None)):
        raise TypeError(
            f"cannot read from {type(file).__name__}: expected a path, a binary "
            "file object or a connected socket"
        )
    if mmap_mode is not None:
        try:
            file.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            raise ValueError(
                "mmap_mode needs a path or a file with a file descriptor"
            ) from None
        return MmapSource(file, mmap_mode, owned=False)
    return FileSource(file, page_cache=page_cache)
