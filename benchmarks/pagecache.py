"""Page-cache benchmark: what writing and reading a large stream costs through
the page cache, and what ``page_cache="drop"`` changes.

Run from the repository root (not part of ``run.py``'s default run)::

    python benchmarks/pagecache.py              # 12 GiB files, 2 runs each; ~6 min
    python benchmarks/pagecache.py --quick      # 256 MiB, 1 run

Two levels, each measurement in a fresh subprocess, contenders in a shuffled
order each repetition, every file deleted after its measurement:

- raw: the same bytes (one random 4 MiB block, repeated) written with
  ``os.write`` and fsynced, then read back with ``readinto`` into one 4 MiB
  buffer: "plain" (the kernel's default), "writeback" (writeback started every
  64 MiB, what streampickle does with ``page_cache="keep"``) and "drop"
  (writeback started, and the pages of earlier steps dropped once written back;
  for reads, dropped behind the reader every 64 MiB);
- streampickle: ``sp.Pickler(path)`` writing records of one 256 MiB float32
  array each (the same array every time: only the writing is timed), then
  ``sp.Unpickler`` reading them back one at a time, with ``page_cache="keep"``
  and ``"drop"``.

Reads start cold: the writer drops the whole file from the cache after its
fsync (``posix_fadvise``), so that every read pass reads the disk. Results go
to the "pagecache" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402
from harness import GiB, MiB  # noqa: E402

SCRIPT = Path(__file__).resolve()
BLOCK = 4 * MiB
STEP = 64 * MiB
RAW_MODES = ("plain", "writeback", "drop")
SP_MODES = ("keep", "drop")


def cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def uncache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def raw_write(path: Path, size: int, mode: str) -> None:
    from streampickle import pagecache

    block = os.urandom(BLOCK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    behind = pagecache.WriteBehind(fd, "drop" if mode == "drop" else "keep")
    written = 0
    while written < size:
        written += os.write(fd, block)
        if mode != "plain" and behind.due(written):
            behind.step(written)
    os.fsync(fd)
    os.close(fd)


def raw_read(path: Path, mode: str) -> None:
    buf = memoryview(bytearray(BLOCK))
    with open(path, "rb", buffering=0) as f:
        done = dropped = 0
        while n := f.readinto(buf):
            done += n
            if mode == "drop" and done - dropped >= STEP:
                os.posix_fadvise(
                    f.fileno(), dropped, done - dropped, os.POSIX_FADV_DONTNEED
                )
                dropped = done


def sp_write(path: Path, size: int, mode: str) -> None:
    import streampickle as sp

    # The same array in every record: only the writing is timed.
    array = np.random.default_rng(0).random(256 * MiB // 4, dtype=np.float32)
    with sp.Pickler(path, page_cache=mode) as p:
        for i in range(max(1, size // array.nbytes)):
            p.dump({"i": i, "array": array})


def sp_read(path: Path, mode: str) -> None:
    import streampickle as sp

    with sp.Unpickler(path, page_cache=mode) as u:
        for record in u:
            del record


def child(spec: dict[str, Any]) -> dict[str, Any]:
    h.check_snapshot()
    path, size, level, mode = Path(spec["path"]), spec["bytes"], spec["level"], spec["mode"]
    u0, s0 = cpu()
    start = time.perf_counter()
    if spec["op"] == "write":
        (raw_write if level == "raw" else sp_write)(path, size, mode)
    else:
        (raw_read if level == "raw" else sp_read)(path, mode)
    seconds = time.perf_counter() - start
    u1, s1 = cpu()
    if spec["op"] == "write":
        uncache(path)
    return {"seconds": seconds, "user": u1 - u0, "sys": s1 - s0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB, 1 run")
    parser.add_argument("--gib", type=float, default=None, help="file size (default 12)")
    parser.add_argument("--repeat", type=int, default=None, help="runs (default 2)")
    parsed = h.parse_args(parser, child)
    if parsed is None:
        return
    args = parsed
    size = int((args.gib or (0.25 if args.quick else 12)) * GiB)
    repeat = args.repeat or (1 if args.quick else 2)
    command = h.command_line("pagecache.py")
    started = dt.datetime.now(dt.UTC)
    data = Path(tempfile.mkdtemp(prefix="streampickle-pagecache-"))
    jobs = [("raw", m, r) for m in RAW_MODES for r in ("plain", "drop")]
    jobs += [("sp", m, m) for m in SP_MODES]
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    try:
        digest = h.snapshot(data)
        for rep in range(repeat):
            random.Random(rep).shuffle(jobs)
            for level, write_mode, read_mode in jobs:
                path = data / "file"
                spec = {"path": str(path), "bytes": size, "level": level}
                w = h.run_child(SCRIPT, {**spec, "op": "write", "mode": write_mode})
                r = h.run_child(SCRIPT, {**spec, "op": "read", "mode": read_mode})
                gb = path.stat().st_size / 1e9
                path.unlink()
                for op, mode, got in (("write", write_mode, w), ("read", read_mode, r)):
                    runs.setdefault((level, op, mode), []).append({**got, "gb": gb})
                    h.log(
                        f"  {level:3} {op:5} {mode:9} {got['seconds']:6.2f} s "
                        f"(sys {got['sys']:.2f})"
                    )
    finally:
        shutil.rmtree(data, ignore_errors=True)

    rows = []
    for (level, op, mode), got in sorted(runs.items()):
        rates = [g["gb"] / g["seconds"] for g in got]
        rows.append(
            [
                "raw os.write/readinto" if level == "raw" else "streampickle",
                op,
                mode,
                h.fmt_time([g["seconds"] for g in got], 2),
                h.fmt_time(rates, 2),
                h.fmt_time([g["sys"] for g in got], 2),
            ]
        )
    lines = [
        "## pagecache: large files through the page cache, and dropping behind "
        "(pagecache.py)",
        "",
        *h.header(command, started, digest),
        f"- files of {size / GiB:.2f} GiB; {repeat} run(s) each, median (min–max); each "
        "write and each read in a fresh subprocess; reads start cold (the writer drops "
        "the file from the cache after its fsync); writes include the fsync",
        "- raw modes: plain = the kernel's default; writeback = writeback started every "
        '64 MiB (`page_cache="keep"`); drop = that, and earlier steps dropped once '
        "written back (reads: dropped behind every 64 MiB)",
        "",
        *h.table(
            ["level", "op", "mode", "seconds", "GB/s", "system CPU s"],
            rows,
            "|---|---|---|---:|---:|---:|",
        ),
    ]
    h.publish("pagecache", lines, args.output)


if __name__ == "__main__":
    main()
