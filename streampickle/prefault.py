"""Faulting in a new buffer's pages on a spare core while it is being filled.

The first write to each page of new memory is a page fault: the kernel finds a
page and zeroes it (and on a VM whose host takes freed memory back, the host
faults too: 0.4-2.5 s a GiB on our machines, several times the copy). A reader
filling a new array from a socket or a file takes these faults inside
``recv_into``/``readinto``, one after another with the copy, while the sender
waits. A ``Prefault`` has worker threads fault in the array's pages ahead of
the reader with ``madvise(MADV_POPULATE_WRITE)``, which writes no byte: the
faults run beside the copy instead of inside it.

Only on Linux 5.14 or later, with more than one CPU, for buffers of at least
``MIN_BYTES``; elsewhere ``start`` returns None and readers fill as before.
"""

from __future__ import annotations

import os
import threading

from ._pages import populate

#: Smaller buffers fault in little time; the hand-off would cost more.
MIN_BYTES = 8 << 20
#: Bytes faulted in per call: between calls a worker moves past what the
#: reader has filled, and ``close`` waits for at most one call.
STEP = 2 << 20
#: How far ahead of the reader the workers may go: a peer that declares a
#: large buffer and stalls makes us hold at most this much it has not sent.
AHEAD = 32 << 20
#: Worker threads faulting in one buffer: two fault in new memory at about
#: twice the rate of one on our VMs (the host's share of each fault is slow).
WORKERS = 2

_usable = (os.cpu_count() or 1) > 1


class Prefault:
    """Faults in ``view``'s pages in order, from where the reader is to at
    most AHEAD bytes past it, until the end or ``close``."""

    def __init__(self, view: memoryview) -> None:
        self.view: memoryview | None = view
        self.size = view.nbytes
        self.reached = 0  # where the reader is filling
        self.next = 0  # the next byte a worker faults in
        self.busy = 0  # workers faulting in now
        self.changed = threading.Condition()

    def reach(self, offset: int) -> None:
        """The reader is filling from ``offset`` on."""
        with self.changed:
            self.reached = offset
            self.changed.notify_all()

    def close(self) -> None:
        """Stop; once this returns no worker holds a reference to the view."""
        with self.changed:
            self.view = None
            self.changed.notify_all()
            while self.busy:
                self.changed.wait()

    def run(self) -> None:
        """A worker's part, STEP bytes at a time, until the end or close."""
        global _usable
        while True:
            with self.changed:
                while (
                    self.view is not None and self.size > self.next >= self.reached + AHEAD
                ):
                    self.changed.wait()
                view = self.view
                start = max(self.next, self.reached)
                end = min(start + STEP, self.size, self.reached + AHEAD)
                if view is None or start >= end:
                    return
                self.next = end
                self.busy += 1
            done = False
            try:
                done = populate(view, start, end)
            finally:
                del view  # hold nothing of the buffer after close
                with self.changed:
                    self.busy -= 1
                    if not done:  # the system cannot: stop asking
                        _usable = False
                        self.view = None
                    self.changed.notify_all()


def start(view: memoryview) -> Prefault | None:
    """A Prefault of ``view``, a new writable buffer about to be filled from
    its start, with its own workers (shared ones could all be held waiting
    by a reader whose peer stalls); None where it would not pay."""
    if not _usable or view.nbytes < MIN_BYTES:
        return None
    job = Prefault(view)
    try:
        for _ in range(WORKERS):
            threading.Thread(
                target=job.run, name="streampickle prefault", daemon=True
            ).start()
    except RuntimeError:  # no more threads here: the reader faults the rest itself
        pass
    return job
