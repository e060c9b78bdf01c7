"""Where the time of a compressed dump and load goes (support for the
compress suite, not a benchmark of its own).

    python benchmarks/profile_compress.py            # W1 and W2, full size
    python benchmarks/profile_compress.py --quick

In one process per workload (fresh subprocess), the workload of compress.py
is built, then dumped to a path with compress="zstd" and loaded back, while
streampickle's inner functions are wrapped with timers that add up wall time
per function over all threads (inclusive: a wrapper that calls another
wrapped one counts that time too). Functions missing from the code under test
are skipped. Load is also timed with threads=0 (inline) for the parallel
speed-up. The table goes to the "profile" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compress as cb  # noqa: E402
import harness as h  # noqa: E402

SCRIPT = Path(__file__).resolve()
# (module, attribute) of the functions to time; "Class.method" for methods.
TARGETS = [
    ("writer", "_encode_chunk"),
    ("writer", "_encode_pickle"),
    ("writer", "_chunk_frame"),
    ("codecs", "plan"),
    ("codecs", "choose"),
    ("codecs", "compress"),
    ("codecs", "shuffle"),
    ("codecs", "decompress_into"),
    ("codecs", "unshuffle_into"),
    ("frames", "_decode_chunk"),
    ("frames", "decode_lanes"),
    ("format", "checksum"),
    ("io", "FileSource.readinto"),
    ("io", "FileSink.write"),
    ("io", "MmapSource.readinto"),
]


def instrument() -> tuple[dict[str, list[float]], Any]:
    import importlib

    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    lock = threading.Lock()

    def wrap(name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt_ = time.perf_counter() - t0
                with lock:
                    totals[name][0] += dt_
                    totals[name][1] += 1

        return timed

    for mod_name, attr in TARGETS:
        mod = importlib.import_module(f"streampickle.{mod_name}")
        owner, _, meth = attr.rpartition(".")
        target = getattr(mod, owner, None) if owner else mod
        if target is None or not hasattr(target, meth):
            continue
        setattr(target, meth, wrap(f"{mod_name}.{attr}", getattr(target, meth)))
    real_fsync = os.fsync
    os.fsync = wrap("os.fsync", real_fsync)
    return totals, real_fsync


def child(spec: dict[str, Any]) -> dict[str, Any]:
    h.check_snapshot()
    import streampickle as sp

    obj = cb.build(spec["workload"], spec["quick"])
    path = spec["path"]
    out: dict[str, Any] = {}
    totals, _ = instrument()
    for label, run in (
        ("dump", lambda: sp.dump(obj, path, compress="zstd")),
        ("load", lambda: sp.load(path)),
        ("load threads=0", lambda: sp.load(path, threads=0)),
        ("dump threads=0", lambda: sp.dump(obj, path, compress="zstd", threads=0)),
    ):
        totals.clear()
        t0 = time.perf_counter()
        c0 = time.process_time()
        result = run()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        del result
        out[label] = {
            "wall": wall,
            "cpu": cpu,
            "parts": {
                k: list(v) for k, v in sorted(totals.items(), key=lambda kv: -kv[1][0])
            },
        }
    out["file_bytes"] = os.path.getsize(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2"])
    parsed = h.parse_args(parser, child)
    if parsed is None:
        return
    args = parsed
    command = h.command_line("profile_compress.py")
    started = dt.datetime.now(dt.UTC)
    data = Path(tempfile.mkdtemp(prefix="streampickle-profile-"))
    results = {}
    try:
        digest = h.snapshot(data)
        for w in args.workloads:
            results[w] = h.run_child(
                SCRIPT, {"workload": w, "quick": args.quick, "path": str(data / f"{w}.sp")}
            )
            h.log(
                f"  {w}: "
                + ", ".join(
                    f"{k} {v['wall']:.2f} s"
                    for k, v in results[w].items()
                    if isinstance(v, dict)
                )
            )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    lines = [
        "## profile: where a compressed dump and load spend their time "
        "(profile_compress.py)",
        "",
        *h.header(command, started, digest),
        "- one run per workload in a fresh subprocess (not a benchmark: timers add a "
        "little overhead); 'cpu' = process CPU time over all threads (2 cores: at "
        "most 2x wall); parts = wall time summed over all threads, inclusive of "
        "wrapped callees, with call counts",
        "",
    ]
    for w, r in results.items():
        lines += [f"### {cb.WORKLOADS[w]} (file {r['file_bytes'] / h.MiB:.0f} MiB)", ""]
        rows = []
        for label in ("dump", "dump threads=0", "load", "load threads=0"):
            v = r[label]
            parts = "; ".join(
                f"{k} {t:.2f} s ({n})" for k, (t, n) in v["parts"].items() if t >= 0.01
            )
            rows.append([label, f"{v['wall']:.2f}", f"{v['cpu']:.2f}", parts])
        lines += h.table(
            ["call", "wall s", "cpu s", "parts: function total s (calls)"],
            rows,
            "|---|---:|---:|---|",
        )
    h.write_section("profile", lines, args.output)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
