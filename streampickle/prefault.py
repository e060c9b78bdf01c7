"""Faulting in a new buffer's pages on a spare core while it is being filled.

The first write to each page of new memory is a page fault: the kernel finds a
page and zeroes it (and on a VM whose host takes freed memory back, the host
faults too: 0.4-2.5 s a GiB on our machines, several times the copy). A reader
filling a new array from a socket or a file takes these faults inside
``recv_into``/``readinto``, one after another with the copy, while the sender
waits. A ``Prefault`` has worker threads fault in the array's pages ahead of
the reader with ``madvise(MADV_POPULATE_WRITE)``, which writes no byte: the
faults run beside the copy instead of inside it.

The workers go no further past the reader than the reader has come (and never
more than AHEAD), and leave when it stops: memory a peer makes us fault in
beyond what it sent is at most what it sent (and the 2 MiB huge page the
limit falls in), however many connections stall.

Only on Linux, with more than one CPU to run on, for buffers of at least
``MIN_BYTES``; on a kernel before 5.14 the first buffer's workers find that
madvise cannot, and it turns itself off.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time

from ._pages import populate

#: Smaller buffers fault in little time; starting workers would cost more.
MIN_BYTES = 8 << 20
#: Bytes faulted in per call: between calls a worker moves past what the
#: reader has filled, and ``close`` waits for at most one call per worker.
STEP = 2 << 20
#: How far ahead of the reader the workers may go, at most.
AHEAD = 32 << 20
#: Worker threads faulting in one buffer arriving from a peer: two fault in
#: new memory at about twice the rate of one on our VMs (the host's share of
#: each fault is slow), while the sender has the other core mostly waiting.
WORKERS = 2
#: A worker at its limit that the reader has not moved for this long leaves
#: (a stalled peer, or a reader interrupted before ``close``): the reader
#: faults in the rest itself.
IDLE_SECONDS = 1.0

_usable = sys.platform == "linux" and len(os.sched_getaffinity(0)) > 1


class Prefault:
    """Faults in ``view``'s pages in order, from where the reader is to as
    far past it as it has come (at most AHEAD), until the end or ``close``.

    The reader's side (``reach``, ``close``) takes no lock a signal could
    leave held: a KeyboardInterrupt in the reader (the main thread, where
    Python runs signal handlers) must not strand the workers."""

    def __init__(self, view: memoryview, workers: int) -> None:
        self.view: memoryview | None = view
        self.size = view.nbytes
        self.workers = workers
        self.reached = 0  # the reader has filled this far
        self.told = 0  # ``reached`` when the workers were last woken
        self.next = 0  # the next byte a worker faults in
        self.busy = 0  # workers faulting in now
        self.claim = threading.Lock()  # taken among workers, and by close
        self.wake: queue.SimpleQueue[None] = queue.SimpleQueue()  # put from C

    def limit(self) -> int:
        """How far the workers may fault in now."""
        return min(self.size, self.reached + min(self.reached, AHEAD))

    def reach(self, offset: int) -> None:
        """The reader has filled ``offset`` bytes; the workers are woken once
        it has come STEP bytes further (they wait only at their limit)."""
        self.reached = offset
        if offset - self.told >= STEP:
            self.told = offset
            self._wake()

    def close(self) -> None:
        """Stop; once this returns no worker holds a reference to the view."""
        self.view = None  # first: whatever interrupts us, the workers leave
        self._wake()
        with self.claim:  # a worker claiming a step now has counted itself busy
            pass
        while self.busy:  # one call of populate per worker at most
            time.sleep(0.0002)

    def _wake(self) -> None:
        for _ in range(self.workers):
            self.wake.put(None)

    def run(self) -> None:
        """A worker's part, STEP bytes at a time, until the end or close."""
        global _usable
        while True:
            with self.claim:
                view, begin = self.view, max(self.next, self.reached)
                end = min(begin + STEP, self.limit())
                if view is None or begin >= self.size:
                    return
                if begin < end:
                    self.next = end
                    self.busy += 1
            if begin >= end:  # at the limit: wait for the reader, holding nothing
                del view
                reached = self.reached
                try:
                    self.wake.get(timeout=IDLE_SECONDS)
                except queue.Empty:
                    if self.reached == reached:
                        return
                continue
            try:
                if not populate(view, begin, end):  # the system cannot: stop asking
                    _usable = False
                    self.view = None
            except OSError:  # this buffer, now (ENOMEM under a cgroup's limit...)
                self.view = None  # the reader faults in the rest itself
            finally:
                del view  # hold nothing of the buffer after close
                with self.claim:
                    self.busy -= 1


def start(view: memoryview, workers: int = WORKERS) -> Prefault | None:
    """A Prefault of ``view``, a new writable buffer about to be filled from
    its start, with its own ``workers`` (at most WORKERS; shared ones could
    all be held waiting by a reader whose peer stalls); None where it would
    not pay."""
    workers = min(workers, WORKERS)
    if not _usable or view.nbytes < MIN_BYTES or workers < 1:
        return None
    job = Prefault(view, workers)
    try:
        for _ in range(workers):
            threading.Thread(
                target=job.run, name="streampickle prefault", daemon=True
            ).start()
    except RuntimeError:  # no more threads here: the reader faults the rest alone
        pass
    except BaseException:  # interrupted: leave nothing working on the buffer
        job.close()
        raise
    return job
