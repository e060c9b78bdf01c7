"""Faulting in a new buffer's pages beside the reader (streampickle.prefault):
how far ahead the workers go, what close waits for, when it turns itself
off, and that every load closes what it starts. Memory: test_memory.py."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import streampickle as sp
from streampickle import _pages, aio, prefault

MiB = 1 << 20
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="madvise is Linux's")


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.001)


class Recorder:
    """Stands in for populate: records each range, optionally holding each
    call until ``go`` is set."""

    def __init__(self, hold: bool = False) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.go = threading.Event()
        if not hold:
            self.go.set()
        self.entered = threading.Event()

    def __call__(self, view: memoryview, start: int, end: int) -> bool:
        self.entered.set()
        self.go.wait(10)
        self.ranges.append((start, end))
        return True

    @property
    def furthest(self) -> int:
        return max((end for _, end in self.ranges), default=0)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    r = Recorder()
    monkeypatch.setattr(prefault, "populate", r)
    monkeypatch.setattr(prefault, "_usable", True)  # (where it would be off)
    return r


def run_in_thread(job: prefault.Prefault) -> threading.Thread:
    t = threading.Thread(target=job.run, daemon=True)
    t.start()
    return t


class TestPopulate:
    @linux_only
    def test_leaves_the_bytes_as_they_were(self) -> None:
        a = np.arange(8 * MiB, dtype=np.uint8)
        assert _pages.populate(memoryview(a), 0, a.nbytes)
        np.testing.assert_array_equal(a, np.arange(8 * MiB, dtype=np.uint8))

    def test_refuses_a_range_outside_the_buffer(self) -> None:
        view = memoryview(bytearray(100))
        for start, end in [(-1, 10), (0, 101), (60, 50)]:
            with pytest.raises(ValueError, match="outside the buffer"):
                _pages.populate(view, start, end)

    def test_refuses_a_read_only_buffer(self) -> None:
        with pytest.raises((TypeError, BufferError)):
            _pages.populate(b"x" * 100, 0, 100)  # type: ignore[arg-type]

    def test_an_empty_range_is_nothing_to_do(self) -> None:
        assert _pages.populate(memoryview(bytearray(10)), 5, 5) is (sys.platform == "linux")

    @linux_only
    def test_a_failure_of_the_call_is_an_os_error(self, tmp_path: Any) -> None:
        import mmap

        if not _pages.populate(memoryview(bytearray(4096)), 0, 4096):
            pytest.skip("this kernel cannot populate (before 5.14)")

        with open(tmp_path / "f", "w+b") as f:
            f.truncate(1 << 20)
            with mmap.mmap(f.fileno(), 1 << 20) as m:
                f.truncate(4096)  # pages past the file's end: a fault would be SIGBUS
                view = memoryview(m)
                try:
                    with pytest.raises(OSError):
                        _pages.populate(view, 0, 1 << 20)
                finally:
                    view.release()


class TestWorkers:
    def test_small_buffers_are_not_worth_a_worker(self) -> None:
        assert prefault.start(memoryview(bytearray(prefault.MIN_BYTES - 1))) is None

    def test_goes_no_further_past_the_reader_than_it_has_come(
        self, recorder: Recorder
    ) -> None:
        """Nothing before the first bytes arrive; then as far again as the
        reader has come; never more than AHEAD."""
        job = prefault.Prefault(memoryview(bytearray(4 * prefault.AHEAD)), 1)
        t = run_in_thread(job)
        time.sleep(0.05)
        assert recorder.ranges == [], "faulted in before any byte arrived"
        for reached, limit in [
            (4 * MiB, 8 * MiB),
            (prefault.AHEAD + 3 * MiB, 2 * prefault.AHEAD + 3 * MiB),
        ]:
            job.reach(reached)
            wait_until(lambda at=limit: recorder.furthest == at, f"faulted in to {limit}")
            time.sleep(0.05)  # and it waits there
            assert recorder.furthest == limit
        job.close()
        t.join(5)
        assert not t.is_alive()

    def test_skips_what_the_reader_has_filled(self, recorder: Recorder) -> None:
        job = prefault.Prefault(memoryview(bytearray(64 * MiB)), 1)
        job.reach(60 * MiB + 5)
        job.run()  # to the end
        assert recorder.ranges == [(60 * MiB + 5, 62 * MiB + 5), (62 * MiB + 5, 64 * MiB)]

    def test_two_workers_share_a_buffer_without_overlap(self, recorder: Recorder) -> None:
        job = prefault.Prefault(memoryview(bytearray(2 * prefault.AHEAD)), 2)
        job.reach(prefault.AHEAD)
        threads = [run_in_thread(job) for _ in range(2)]
        for t in threads:  # and both leave at the end, without waiting for close
            t.join(5)
            assert not t.is_alive()
        ranges = sorted(recorder.ranges)
        assert ranges[0][0] == prefault.AHEAD and ranges[-1][1] == 2 * prefault.AHEAD
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))

    def test_close_waits_for_the_call_in_progress_then_holds_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        held = Recorder(hold=True)
        monkeypatch.setattr(prefault, "populate", held)
        arr = np.empty(64 * MiB, dtype=np.uint8)
        gone = weakref.ref(arr)
        job = prefault.Prefault(memoryview(arr), 1)
        job.reach(prefault.STEP)
        t = run_in_thread(job)
        assert held.entered.wait(5)
        closed = threading.Event()
        threading.Thread(target=lambda: (job.close(), closed.set()), daemon=True).start()
        time.sleep(0.05)
        assert not closed.is_set(), "close returned while a worker faulted the buffer in"
        held.go.set()
        assert closed.wait(5)
        del arr
        assert gone() is None, "the buffer outlived close"
        t.join(5)

    def test_a_system_that_cannot_turns_it_off(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(prefault, "populate", lambda *_: False)
        monkeypatch.setattr(prefault, "_usable", True)
        job = prefault.Prefault(memoryview(bytearray(16 * MiB)), 1)
        job.reach(8 * MiB)
        job.run()
        assert job.view is None
        assert prefault.start(memoryview(bytearray(16 * MiB))) is None

    def test_a_failed_call_stops_that_buffer_only(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def fails(*_: Any) -> bool:
            raise OSError(12, "Cannot allocate memory")

        monkeypatch.setattr(prefault, "populate", fails)
        monkeypatch.setattr(prefault, "_usable", True)
        job = prefault.Prefault(memoryview(bytearray(16 * MiB)), 1)
        job.reach(8 * MiB)
        job.run()
        assert job.view is None and job.busy == 0
        assert prefault._usable

    def test_an_interrupt_while_starting_leaves_no_worker_on_the_buffer(
        self, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        made: list[prefault.Prefault] = []
        real_init, real_start = prefault.Prefault.__init__, threading.Thread.start
        started = []

        def init(job: prefault.Prefault, view: memoryview, workers: int) -> None:
            real_init(job, view, workers)
            made.append(job)

        def start(thread: threading.Thread) -> None:
            if started:  # the second worker: Ctrl-C
                raise KeyboardInterrupt
            started.append(thread)
            real_start(thread)

        monkeypatch.setattr(prefault.Prefault, "__init__", init)
        monkeypatch.setattr(threading.Thread, "start", start)
        with pytest.raises(KeyboardInterrupt):
            prefault.start(memoryview(bytearray(prefault.MIN_BYTES)))
        monkeypatch.undo()
        assert made[0].view is None
        started[0].join(5)
        assert not started[0].is_alive()

    def test_a_worker_the_reader_leaves_waiting_leaves_too(
        self, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A stalled peer, or a reader interrupted before close: the workers
        go, and hold nothing of the buffer meanwhile."""
        monkeypatch.setattr(prefault, "IDLE_SECONDS", 0.05)
        arr = np.empty(4 * prefault.AHEAD, dtype=np.uint8)
        gone = weakref.ref(arr)
        before = set(threading.enumerate())
        job = prefault.start(memoryview(arr))
        assert job is not None
        workers = set(threading.enumerate()) - before
        job.reach(4 * MiB)
        wait_until(lambda j=job: j.next == 8 * MiB, "the window")
        del arr, job  # never closed
        wait_until(lambda: gone() is None, "the workers to let the buffer go")
        wait_until(lambda: not any(t.is_alive() for t in workers), "the workers to leave")

    def test_a_reader_whose_peer_stalls_holds_up_no_other_load(
        self, recorder: Recorder
    ) -> None:
        stalled = prefault.start(memoryview(bytearray(4 * prefault.AHEAD)))
        assert stalled is not None
        stalled.reach(4 * MiB)
        wait_until(lambda: stalled.next == 8 * MiB, "the stalled one's window")
        other = prefault.start(memoryview(bytearray(prefault.AHEAD)))
        assert other is not None
        other.reach(prefault.AHEAD // 2)
        wait_until(lambda: other.next == other.size, "the other buffer, to its end")
        for job in (stalled, other):
            job.close()


# -- every load closes what it starts ----------------------------------------


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[prefault.Prefault]]:
    jobs: list[prefault.Prefault] = []
    real = prefault.start

    def recording(
        view: memoryview, workers: int = prefault.WORKERS
    ) -> prefault.Prefault | None:
        job = real(view, workers)
        if job is not None:
            jobs.append(job)
        return job

    monkeypatch.setattr(prefault, "start", recording)
    monkeypatch.setattr(prefault, "_usable", True)
    yield jobs


BIG = {"a": np.arange(6 * MiB, dtype=np.float32), "b": np.arange(9, dtype=np.int64)}


def stream() -> bytes:
    return sp.dumps(BIG)


def check(obj: Any) -> None:
    np.testing.assert_array_equal(obj["a"], BIG["a"])
    np.testing.assert_array_equal(obj["b"], BIG["b"])


def over_socket(data: bytes) -> Any:
    a, b = socket.socketpair()
    t = threading.Thread(target=lambda: (a.sendall(data), a.close()))
    t.start()
    try:
        return sp.load(b)
    finally:
        t.join()
        b.close()


def over_asyncio(data: bytes) -> Any:
    async def main() -> Any:
        a, b = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=b)
        sender = threading.Thread(target=lambda: (a.sendall(data), a.close()))
        sender.start()
        try:
            return await aio.load(reader)
        finally:
            sender.join()
            writer.close()

    return asyncio.run(main())


def from_file(data: bytes, tmp: Any) -> Any:
    (tmp / "s.sp").write_bytes(data)
    return sp.load(tmp / "s.sp")


LOADERS: dict[str, Callable[[bytes, Any], Any]] = {
    "file": from_file,
    "socket": lambda data, _: over_socket(data),
    "asyncio": lambda data, _: over_asyncio(data),
}


@pytest.mark.parametrize("how", LOADERS)
def test_a_load_closes_every_prefault_it_starts(
    how: str, started: list[prefault.Prefault], tmp_path: Any
) -> None:
    check(LOADERS[how](stream(), tmp_path))
    assert started, "the 24 MiB buffer was not prefaulted"
    assert all(job.view is None for job in started)


@pytest.mark.parametrize("how", ["socket", "asyncio"])  # (a cut file is refused first)
def test_a_load_cut_inside_the_buffer_closes_its_prefault(
    how: str, started: list[prefault.Prefault], tmp_path: Any
) -> None:
    data = stream()
    with pytest.raises(sp.TruncatedStreamError):
        LOADERS[how](data[: len(data) // 2], tmp_path)
    assert started and all(job.view is None for job in started)


def test_threads_0_starts_no_prefault(
    started: list[prefault.Prefault], tmp_path: Any
) -> None:
    (tmp_path / "s.sp").write_bytes(stream())
    check(sp.load(tmp_path / "s.sp", threads=0))
    assert started == []
