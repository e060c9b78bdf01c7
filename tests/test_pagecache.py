"""page_cache: which pages of a stream we leave in the kernel's page cache.

The calls we make are recorded (fakes of posix_fadvise and sync_file_range);
one test per direction asks the real kernel, through mincore(2), which pages
of the file stayed resident."""

from __future__ import annotations

import ctypes
import errno
import io
import mmap
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streampickle as sp
from streampickle import pagecache

STEP = 4 << 20  # smaller steps than the library's, for small test files
# 10 steps of buffer: enough for several drops behind the writer.
OBJ = {"w": np.arange(10 * STEP // 8, dtype=np.int64), "meta": {"step": 3}}


@pytest.fixture(autouse=True)
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pagecache, "STEP", STEP)


def same(a: Any, b: Any) -> None:
    assert a["meta"] == b["meta"]
    np.testing.assert_array_equal(a["w"], b["w"])


class Calls:
    """Stands in for posix_fadvise and sync_file_range, recording calls."""

    def __init__(self) -> None:
        self.dropped: list[tuple[int, int]] = []
        self.waited: list[tuple[int, int]] = []
        self.started: list[tuple[int, int]] = []

    def fadvise(self, fd: int, start: int, n: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_DONTNEED
        self.dropped.append((start, n))

    def covered(self, size: int) -> np.ndarray:
        """Which of ``size`` bytes the drops covered."""
        covered = np.zeros(size, dtype=bool)
        for start, n in self.dropped:
            covered[start : start + n] = True
        return covered

    def sync_file_range(self, fd: int, start: int, n: int, flags: int) -> int:
        (self.waited if flags & 4 else self.started).append((start, n))
        return 0


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    c = Calls()
    monkeypatch.setattr(pagecache, "_FADVISE", c.fadvise)
    monkeypatch.setattr(pagecache, "_SYNC_FILE_RANGE", c.sync_file_range)
    yield c


def contiguous_from_zero(ranges: list[tuple[int, int]]) -> int:
    """The end of ``ranges``, which must tile [0, end) in order."""
    end = 0
    for start, n in ranges:
        assert start == end and n > 0
        end += n
    return end


class TestWriting:
    def test_drop_drops_each_step_behind_the_writer_once_written_back(
        self, tmp_path: Path, calls: Calls
    ) -> None:
        path = tmp_path / "ckpt.sp"
        sp.dump(OBJ, path, page_cache="drop")
        size = path.stat().st_size
        dropped = contiguous_from_zero(calls.dropped)
        # Everything but the last step or two is dropped, each range after
        # waiting for its writeback.
        assert size - 2 * STEP <= dropped < size
        assert calls.waited == calls.dropped
        assert contiguous_from_zero(calls.started) >= dropped
        # On 2 MiB boundaries: a page under writeback stalls the next write into
        # it; a partly covered large folio is not dropped.
        assert all((start + n) % pagecache.ALIGN == 0 for start, n in calls.started)
        assert all((start + n) % pagecache.ALIGN == 0 for start, n in calls.dropped)
        same(sp.load(path), OBJ)

    def test_keep_only_starts_writeback(self, tmp_path: Path, calls: Calls) -> None:
        sp.dump(OBJ, tmp_path / "ckpt.sp", page_cache="keep")
        assert calls.dropped == [] and calls.waited == []
        assert contiguous_from_zero(calls.started) >= 8 * STEP

    def test_auto_drops_once_the_stream_passes_the_threshold(
        self, tmp_path: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sp.dump(OBJ, tmp_path / "small.sp")  # far below a quarter of RAM
        assert calls.dropped == []
        monkeypatch.setattr(pagecache, "threshold", lambda policy: 3 * STEP)
        sp.dump(OBJ, tmp_path / "big.sp")
        # The first drop, past the threshold, takes everything behind at once.
        assert calls.dropped and calls.dropped[0][0] == 0
        assert calls.dropped[0][1] >= 2 * STEP

    def test_a_failed_writeback_fails_the_dump_and_keeps_the_old_file(
        self, tmp_path: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """sync_file_range reports a writeback error once: after it, fsync
        would succeed. So its error must fail the dump."""

        def failing(fd: int, start: int, n: int, flags: int) -> int:
            if flags & 4:  # the waiting call, which reports the error
                ctypes.set_errno(errno.EIO)
                return -1
            return 0

        monkeypatch.setattr(pagecache, "_SYNC_FILE_RANGE", failing)
        path = tmp_path / "ckpt.sp"
        path.write_bytes(b"old")
        with pytest.raises(OSError, match="writing the file back failed") as caught:
            sp.dump(OBJ, path, page_cache="drop")
        assert caught.value.errno == errno.EIO
        assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["ckpt.sp"]

    def test_without_sync_file_range_nothing_is_flushed_early(
        self, tmp_path: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(pagecache, "_SYNC_FILE_RANGE", None)
        steps: list[int] = []
        monkeypatch.setattr(pagecache.WriteBehind, "step", lambda self, n: steps.append(n))
        path = tmp_path / "ckpt.sp"
        sp.dump(OBJ, path, page_cache="drop")
        assert steps == [] and calls.dropped == []
        same(sp.load(path), OBJ)

    def test_append_drops_behind_from_where_it_starts(
        self, tmp_path: Path, calls: Calls
    ) -> None:
        path = tmp_path / "ckpt.sp"
        sp.dump(OBJ, path, page_cache="keep")
        end = path.stat().st_size
        with sp.Pickler(path, append=True, page_cache="drop") as p:
            p.dump(OBJ)
        assert calls.dropped and calls.dropped[0][0] >= end - 64 * 1024
        with sp.Unpickler(path) as u:
            same(u[0], OBJ)
            same(u[1], OBJ)

    def test_sockets_and_file_objects_are_left_alone(self, calls: Calls) -> None:
        out = io.BytesIO()
        sp.dump(OBJ, out, page_cache="drop")
        assert calls.dropped == [] and calls.started == []
        same(sp.load(io.BytesIO(out.getvalue())), OBJ)


class TestReading:
    def test_drop_drops_behind_the_reader(self, tmp_path: Path, calls: Calls) -> None:
        path = tmp_path / "ckpt.sp"
        sp.dump(OBJ, path, page_cache="keep")
        calls.dropped.clear()
        same(sp.load(path, page_cache="drop"), OBJ)
        size = path.stat().st_size
        assert size - STEP <= contiguous_from_zero(calls.dropped) <= size

    def test_drop_on_a_file_object_uses_its_offsets(
        self, tmp_path: Path, calls: Calls
    ) -> None:
        """A stream after other bytes in the file: ranges are file offsets."""
        path = tmp_path / "ckpt.sp"
        with open(path, "wb") as f:
            f.write(b"x" * 1000)
            sp.dump(OBJ, f)
        with open(path, "rb") as f:
            f.seek(1000)
            same(sp.load(f, page_cache="drop"), OBJ)
        assert calls.dropped[0][0] == 1000
        # Each range ends on a 2 MiB boundary of the file, not of the stream.
        assert all((start + n) % pagecache.ALIGN == 0 for start, n in calls.dropped)

    @pytest.mark.parametrize("policy", ["keep", "auto"])
    def test_keep_and_auto_below_the_threshold_drop_nothing(
        self, tmp_path: Path, calls: Calls, policy: str
    ) -> None:
        path = tmp_path / "ckpt.sp"
        sp.dump(OBJ, path, page_cache="keep")
        same(sp.load(path, page_cache=policy), OBJ)
        with sp.Unpickler(path, page_cache=policy) as u:
            same(u[0], OBJ)
        assert calls.dropped == []

    def test_reads_between_seeks_are_dropped(self, tmp_path: Path, calls: Calls) -> None:
        """Iterating with a look at record 0 after each record (seeks away and
        back) still drops what was read, though no record spans a step."""
        path = tmp_path / "ckpt.sp"
        small = {"w": np.arange(STEP // 4 // 8), "meta": {}}
        with sp.Pickler(path, page_cache="keep") as p:
            for _ in range(12):
                p.dump(small)
        with sp.Unpickler(path, page_cache="drop") as u:
            for record in u:
                np.testing.assert_array_equal(record["w"], small["w"])
                u[0]
        covered = calls.covered(path.stat().st_size)
        assert covered.sum() >= covered.size - STEP

    def test_random_access_drops_from_where_it_reads(
        self, tmp_path: Path, calls: Calls
    ) -> None:
        path = tmp_path / "ckpt.sp"
        with sp.Pickler(path, page_cache="keep") as p:
            p.dump(OBJ)
            p.dump(OBJ)
        calls.dropped.clear()
        with sp.Unpickler(path, page_cache="drop") as u:
            same(u[1], OBJ)
            first, second = (r.offset for r in u._index().records)
        end = path.stat().st_size
        # Record 1 (read) is dropped but for its last step; record 0 (not read)
        # is not touched, but for the 2 MiB folio record 1 starts in.
        covered = calls.covered(end)
        assert covered[second : end - 2 * STEP].all()
        assert not covered[first + 4096 : second - pagecache.ALIGN].any()


def test_bad_policy_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="page_cache"):
        sp.dump(OBJ, tmp_path / "x.sp", page_cache="never")
    with pytest.raises(ValueError, match="page_cache"):
        sp.Unpickler(io.BytesIO(b""), page_cache=None)  # type: ignore[arg-type]


# -- the kernel's view ----------------------------------------------------------


def resident_fraction(path: Path) -> float:
    """The fraction of ``path``'s pages in the page cache, as mincore(2) sees
    them through a fresh read-only mapping (which touches no page)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size, page = path.stat().st_size, mmap.PAGESIZE
    pages = (ctypes.c_ubyte * ((size + page - 1) // page))()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        try:
            assert libc.mincore(addr, size, pages) == 0, ctypes.get_errno()
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in pages) / len(pages)


needs_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux") or pagecache._SYNC_FILE_RANGE is None,
    reason="sync_file_range, posix_fadvise and mincore are Linux calls",
)


def drops_pages_here(folder: Path) -> bool:
    """Whether this filesystem lets written pages go (tmpfs keeps them all)."""
    probe = folder / "probe"
    with open(probe, "wb") as f:
        f.write(b"x" * (1 << 20))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    try:
        return resident_fraction(probe) < 0.5
    finally:
        probe.unlink()


@needs_linux
class TestTheKernel:
    """Ten steps, so that what is left cached shows."""

    @pytest.fixture(autouse=True)
    def a_disk(self, tmp_path: Path) -> None:
        if not drops_pages_here(tmp_path):
            pytest.skip("this filesystem keeps every page in memory (tmpfs?)")

    def test_a_dump_with_drop_leaves_at_most_two_steps_cached(self, tmp_path: Path) -> None:
        kept, dropped = tmp_path / "kept.sp", tmp_path / "dropped.sp"
        sp.dump(OBJ, kept, page_cache="keep")
        sp.dump(OBJ, dropped, page_cache="drop")
        assert resident_fraction(kept) > 0.9
        assert resident_fraction(dropped) <= 2 * STEP / dropped.stat().st_size + 0.01

    def test_a_load_with_drop_leaves_at_most_one_step_cached(self, tmp_path: Path) -> None:
        path = tmp_path / "ckpt.sp"
        sp.dump(OBJ, path, page_cache="drop")
        same(sp.load(path, page_cache="drop"), OBJ)
        assert resident_fraction(path) <= STEP / path.stat().st_size + 0.01
        same(sp.load(path, page_cache="keep"), OBJ)
        assert resident_fraction(path) > 0.9
