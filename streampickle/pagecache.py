"""What a stream read or written front to back leaves in the page cache.

The kernel keeps every page of a file we write or read cached until memory
runs short. For a stream larger than memory that is wasted work: the pages
are never read again before they are evicted, and making room for them (or
allocating them fresh) evicts everything else and costs more than the disk
itself. On our 2-core test VM (``python benchmarks/pagecache.py``), writing
12 GiB took 8.1-20 s through the cache and 4.4-4.7 s when the pages written
were dropped behind the writer; reading it back took 7.3-21 s against
4.8-7.4 s. A file that fits is worth keeping cached: loading it again costs
nothing.

``page_cache`` decides, for paths we write and files we read:
``"auto"`` drops pages behind us once the stream is larger than a quarter of
physical memory, ``"drop"`` always does, ``"keep"`` never does. Dropping uses
``posix_fadvise(POSIX_FADV_DONTNEED)``; written pages must be clean first, so
each step waits for the writeback (Linux ``sync_file_range``) of the steps
before it, which also keeps the dirty data in flight bounded. Where these calls
do not exist, nothing is dropped.
"""

from __future__ import annotations

import os
from typing import Any

#: Page cache work is done every this many bytes of stream.
STEP = 64 << 20
#: Writeback is started, and pages dropped, up to multiples of this in the
#: file: whole pages, and whole large folios (the page cache's up-to-2 MiB
#: units), which a partly covered range leaves in place.
ALIGN = 1 << 21
#: The policies ``page_cache`` accepts.
POLICIES = ("auto", "keep", "drop")

# sync_file_range flags: wait for writeback already under way, start it, and
# wait for it to finish.
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


def _sync_file_range() -> Any:
    """libc's ``sync_file_range`` (Linux), or None where there is none."""
    try:
        import ctypes  # absent from some Python builds

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (ImportError, OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return fn


_SYNC_FILE_RANGE = _sync_file_range()
_FADVISE = getattr(os, "posix_fadvise", None)


def check_policy(page_cache: str) -> None:
    if page_cache not in POLICIES:
        raise ValueError(f"page_cache must be one of {POLICIES}, not {page_cache!r}")


#: A stream size no file reaches.
NEVER = 1 << 62


def threshold(policy: str) -> int:
    """Stream size beyond which pages are dropped: for ``"auto"`` a quarter of
    physical memory."""
    if policy == "drop":
        return 0
    if policy == "keep":
        return NEVER
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return NEVER  # unknown memory: keep the kernel's default


def _drop(fd: int, start: int, n: int) -> None:
    """Advice only: a failure costs speed, never data."""
    if _FADVISE is not None and n > 0:
        try:
            _FADVISE(fd, start, n, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _sync(fd: int, start: int, n: int, flags: int) -> None:
    """``sync_file_range``, whose errors are the file's: a write that failed
    in writeback is reported here, and then no longer by ``fsync``."""
    assert _SYNC_FILE_RANGE is not None
    if _SYNC_FILE_RANGE(fd, start, n, flags) != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"writing the file back failed: {os.strerror(errno)}")


class WriteBehind:
    """For a file we write front to back from offset ``start``: every STEP
    bytes, start the writeback of the new bytes without waiting (left to
    itself the kernel writes nothing back below ``vm.dirty_background_ratio``,
    10% of RAM, so the final fsync would write the whole file while we wait);
    and, as the policy says, drop the pages of the steps before, once written
    back. Without ``sync_file_range`` it does nothing (``due`` is never true)."""

    def __init__(self, fd: int, policy: str, start: int = 0) -> None:
        self.fd = fd
        self.threshold = threshold(policy)
        self.started = start  # writeback started for bytes before this offset
        self.dropped = start  # pages before this offset were dropped
        self.next_at = start + STEP if _SYNC_FILE_RANGE is not None else NEVER

    def due(self, position: int) -> bool:
        return position >= self.next_at

    def step(self, position: int) -> None:
        """The file holds ``position`` bytes (flushed from Python's buffer)."""
        # Whole pages only: a page under writeback blocks the next write into
        # it until its I/O is done, a stall per step (1 s per 4 GiB here).
        self.next_at = position + STEP
        position -= position % ALIGN
        if position <= self.started:
            return
        _sync(self.fd, self.started, position - self.started, _WRITE)
        if position > self.threshold and self.started > self.dropped:
            n = self.started - self.dropped
            _sync(self.fd, self.dropped, n, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
            _drop(self.fd, self.dropped, n)
            self.dropped = self.started
        self.started = position


class ReadBehind:
    """For a file of ``size`` bytes from offset ``base`` that we read front to
    back: drop the pages behind us every STEP bytes, if the policy says so
    (never without a descriptor ``fd``, or a size). The reader calls ``step``
    once its position reaches ``next_at``."""

    def __init__(self, fd: int | None, base: int, size: int | None, policy: str) -> None:
        self.fd = -1 if fd is None else fd
        self.base = base
        self.dropping = (
            fd is not None
            and size is not None
            and size > threshold(policy)
            and _FADVISE is not None
        )
        self.dropped = 0  # stream offset up to which pages were dropped
        self.next_at = STEP if self.dropping else NEVER

    def step(self, position: int) -> None:
        """We have read the stream up to ``position``."""
        self._drop_upto(position)
        self.next_at = position + STEP

    def _drop_upto(self, position: int) -> None:
        # To a multiple of ALIGN in the file: the kernel keeps a large folio
        # (up to 2 MiB) that the range covers only in part.
        end = self.base + position
        end -= end % ALIGN
        start = self.base + self.dropped
        if end > start:
            _drop(self.fd, start, end - start)
            self.dropped = end - self.base

    def seek(self, old: int, new: int) -> None:
        """The reader moved from ``old`` to ``new``: what it read before the
        move is dropped now, and it drops behind itself from ``new`` on."""
        if self.dropping and new != old:
            folio = max(0, new - (self.base + new) % ALIGN)  # where ``new`` is
            # Moving past the folio ``old`` is in, that folio is done with too;
            # pages skipped and never read are left alone.
            past_old = old + (-(self.base + old)) % ALIGN
            self._drop_upto(max(old, min(past_old, folio)))
            self.dropped = folio
            self.next_at = new + STEP
