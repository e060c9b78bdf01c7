"""What safe mode costs: ``sp.loads(data, safe=True)`` against
``safe=False`` of the same bytes, in one process, for the kinds of records
safe mode treats differently.

Run from the repository root (writes its section of benchmarks/RESULTS.md)::

    python benchmarks/safe.py [--quick] [--repeat N] [--output PATH]

Records: a checkpoint of 16 arrays of 4 MiB (the arrays' bytes dominate); 1000
arrays of 100 floats (in band), of 1000 floats (out of band) and 10,000 numpy
scalars (calls alone: the C unpickler, checking each call, safe_calls.py);
1000 small structured arrays (Python's unpickler: a dtype's state checked
each time); a dict of 1000 tuple keys sharing one string (plain data,
but shared, costly to hash and hashed: counted in Python); dicts of 90,000
keys of two ints and of wide ints (plain data whose keys' hashes a pickle may
choose: counted in C, then the C unpickler), a list of 100,000 pairs and a set
of the same tuples (shared and hashed: counted in C) and a dict of a string
and an int (the C unpickler); 1000 dicts with a text each, 10,000 dicts of
plain data in one frame and 100,000 in two (the C unpickler in both modes:
safe mode gathers a record's frames to judge it).
Each load is timed alone; the two modes alternate, and the table gives
medians of ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness as h  # noqa: E402

import streampickle as sp  # noqa: E402


def pairs_and_set(n: int) -> tuple[list[tuple[int, int]], set[tuple[int, int]]]:
    pairs = [(i, i + 1) for i in range(n)]
    return pairs, set(pairs)  # the set's items: the list's tuples, from the memo


def records(scale: int) -> dict[str, Callable[[], Any]]:
    """Each record's maker, by its label; ``scale`` divides the counts."""
    rng = np.random.default_rng(0)
    shared = "a key prefix shared by every tuple"
    struct = np.dtype([("id", "i4"), ("pos", "f8", (3,))])
    return {
        "checkpoint: 16 arrays of 4 MiB": lambda: {
            f"layer{i}": rng.random(1 << 19) for i in range(16 // scale)
        },
        "1000 arrays of 100 floats": lambda: [
            rng.random(100) for _ in range(1000 // scale)
        ],
        "1000 arrays of 1000 floats (out of band)": lambda: [
            rng.random(1000) for _ in range(1000 // scale)
        ],
        "10,000 numpy scalars": lambda: [np.float64(i) for i in range(10_000 // scale)],
        "1000 structured arrays of 4 items": lambda: [
            np.zeros(4, struct) for _ in range(1000 // scale)
        ],
        "dict of 1000 tuple keys sharing a string": lambda: {
            (shared, i): i for i in range(1000 // scale)
        },
        "dict of 90,000 (i, j) keys (plain data)": lambda: {
            (i, j): None for i in range(300 // scale) for j in range(300)
        },
        "dict of 90,000 (text, i) keys (plain data)": lambda: {
            (str(i % 100), i): None for i in range(90_000 // scale)
        },
        "dict of 90,000 (text, text, text) keys (plain data)": lambda: {
            (f"layer{i % 300}", f"w{i // 300}", "kernel"): None
            for i in range(90_000 // scale)
        },
        "dict of 90,000 (text, text, i) keys (plain data)": lambda: {
            (f"layer{i % 300}", "w", i): None for i in range(90_000 // scale)
        },
        "dict of 90,000 keys past 60 bits (plain data)": lambda: {
            2**63 - 1 - 7 * i: None for i in range(90_000 // scale)
        },
        "100,000 (i, j) pairs and a set of them (plain data)": lambda: pairs_and_set(
            100_000 // scale
        ),
        "1000 dicts with a text of 360 characters": lambda: [
            {"id": i, "text": "lorem ipsum " * 30 + str(i), "tags": ["a", "b"]}
            for i in range(1000 // scale)
        ],
        "10,000 dicts of plain data": lambda: [
            {"id": i, "name": f"item {i}", "tags": ["a", "b"], "score": i / 3}
            for i in range(10_000 // scale)
        ],
        "100,000 dicts of plain data (4.6 MB: two frames)": lambda: [
            {"id": i, "name": f"item {i}", "tags": ["a", "b"], "score": i / 3}
            for i in range(100_000 // scale)
        ],
    }


def load_time(data: bytes, safe: bool) -> float:
    start = time.perf_counter()
    sp.loads(data, safe=safe)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of each record")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    output = args.output or (h.QUICK_RESULTS if args.quick else h.RESULTS)
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as copy:
        digest = h.snapshot(Path(copy))  # what was measured: this process's own
        rows = []
        for label, make in records(10 if args.quick else 1).items():
            data = sp.dumps(make())
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeat):
                for safe in (False, True):
                    times[safe].append(load_time(data, safe))
            ratio = h.med(times[True]) / h.med(times[False])
            h.log(f"{label:45s} {ratio:6.1f}x")
            rows.append(
                [
                    label,
                    f"{len(data) / 1e6:.2f}",
                    h.fmt_time([t * 1e3 for t in times[False]], 2),
                    h.fmt_time([t * 1e3 for t in times[True]], 2),
                    f"{ratio:.1f}x",
                ]
            )
    lines = [
        "## safe: what safe=True costs a load (safe.py)",
        "",
        *h.header(h.command_line("safe.py"), started, digest),
        f"- `sp.loads(data, safe=...)` of the same bytes in one process; milliseconds, "
        f"median (min–max) of {args.repeat} rounds, the two modes alternating",
        "",
        *h.table(["record", "MB", "safe=False ms", "safe=True ms", "safe / not"], rows),
    ]
    h.publish("safe", lines, output)


if __name__ == "__main__":
    main()
