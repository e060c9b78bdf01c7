"""Benchmark streampickle against pickle, joblib and the raw-I/O limits.

Run from the repository root::

    python benchmarks/bench.py            # full run: ~2 GiB and ~1 GiB workloads
    python benchmarks/bench.py --quick    # smoke run: ~64 MiB workloads, ~1 minute
    python benchmarks/bench.py --repeat 5 --cold --data-dir /mnt/disk/tmp

Workloads: (a) a dict of random float32 arrays plus a little metadata; (b) low-
entropy int64 and smooth float64 arrays plus a list of small dicts.

Every dump and every load runs in a fresh subprocess (``--child``, internal).
A dump child builds the workload (untimed, in place, without temporaries),
records its RSS, resets the kernel's peak-RSS mark where Linux allows it, and
times only the dump call (and, inside it, os.fsync); a load child imports
everything, records its RSS and times only the load call. "Extra peak" is peak
RSS minus that RSS. Dumps to open files are followed by flush + fsync, as
``streampickle.dump`` to a path fsyncs too. Loads read the file just written,
from a warm page cache; ``--cold`` then drops the page cache (root only) before
each load. Times are medians (with min–max) over ``--repeat`` runs, memory the
maximum. Data files live in a temporary folder (``--data-dir``), removed at the
end. Tables are printed and written to the "core" section of benchmarks/RESULTS.md
(``--output``); the other sections are kept. Shared helpers live in harness.py;
``python benchmarks/run.py`` runs this and the other suites.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np

import streampickle as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    machine,
    make_array,
    parse_args,  # noqa: E402
    reset_peak,
    snapshot,
    vm_kib,
    write_section,
)

MiB = 1 << 20
GiB = 1 << 30
CHUNK = 4 * MiB
HERE = Path(__file__).resolve().parent
WORKLOADS = {
    "a": "(a) random float32 arrays + metadata",
    "b": "(b) int64 + float64 arrays + list of small dicts",
}
DUMPS = ["streampickle", "pickle5", "pickle4", "joblib", "raw"]
# Table rows: label, dump key, load key (a load reads the file of the dump of
# its key without "-mmap").
ROWS: list[tuple[str, str | None, str]] = [
    ("streampickle", "streampickle", "streampickle"),
    ("streampickle mmap_mode='r'", None, "streampickle-mmap"),
    ("pickle protocol 5 + fsync", "pickle5", "pickle5"),
    ("pickle protocol 4 + fsync", "pickle4", "pickle4"),
    ("joblib + fsync", "joblib", "joblib"),
    ("joblib mmap_mode='r'", None, "joblib-mmap"),
    ("raw os.write + fsync / readinto", "raw", "raw"),
]

Layout = list[tuple[str, str, str, int]]  # name, generator, dtype, elements


def layout(workload: str, quick: bool) -> Layout:
    """The arrays of a workload, in order."""
    size = 16 * MiB if quick else 64 * MiB
    if workload == "a":
        count = 4 if quick else 32
        return [(f"layer{i:02d}", "uniform", "float32", size // 4) for i in range(count)]
    half = 2 if quick else 8
    return [(f"ints{i}", "ints", "int64", size // 8) for i in range(half)] + [
        (f"walk{i}", "walk", "float64", size // 8) for i in range(half)
    ]


def record_count(quick: bool) -> int:
    return 20_000 if quick else 200_000


def build(workload: str, quick: bool) -> tuple[Any, list[np.ndarray]]:
    """The workload object and its arrays, generated in place (no peak above
    the final RSS, so the peak-RSS mark is honest even without a reset)."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for name, kind, dtype, n in layout(workload, quick):
        arrays[name] = make_array(rng, kind, dtype, n)
    meta = {"workload": workload, "seed": 0, "arrays": len(arrays), "version": "1"}
    if workload == "a":
        return {**arrays, "meta": meta}, list(arrays.values())
    records = [
        {"id": i, "name": f"item{i}", "score": i * 0.5, "tags": ["a", "b"]}
        for i in range(record_count(quick))
    ]
    return {"arrays": arrays, "records": records, "meta": meta}, list(arrays.values())


def check_loaded(obj: Any, workload: str, quick: bool) -> None:
    """Cheap sanity check that does not touch array pages (mmap loads)."""
    want = sum(n * np.dtype(d).itemsize for _, _, d, n in layout(workload, quick))
    if isinstance(obj, list):  # the raw load
        got = sum(a.nbytes for a in obj)
    elif workload == "a":
        got = sum(v.nbytes for v in obj.values() if isinstance(v, np.ndarray))
    else:
        got = sum(a.nbytes for a in obj["arrays"].values())
        assert len(obj["records"]) == record_count(quick), "records lost"
    assert got == want, f"loaded {got} array bytes, expected {want}"


def slices(arrays: list[np.ndarray]) -> Iterator[memoryview]:
    for arr in arrays:
        view = arr.data.cast("B")
        for start in range(0, view.nbytes, CHUNK):
            yield view[start : start + CHUNK]


def raw_write(arrays: list[np.ndarray], path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for piece in slices(arrays):
            done = 0
            while done < piece.nbytes:
                done += os.write(fd, piece[done:])
        os.fsync(fd)
    finally:
        os.close(fd)


def raw_readinto(arrays: list[np.ndarray], path: str) -> list[np.ndarray]:
    with open(path, "rb", buffering=0) as f:
        for piece in slices(arrays):
            if f.readinto(piece) != piece.nbytes:
                raise EOFError(f"short read from {path}")
    return arrays


def dumper(key: str, obj: Any, arrays: list[np.ndarray], path: str) -> Callable[[], Any]:
    def pickle_fsync(protocol: int) -> None:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
            f.flush()
            os.fsync(f.fileno())

    def joblib_fsync() -> None:
        joblib.dump(obj, path)
        with open(path, "rb") as f:
            os.fsync(f.fileno())

    return {
        "streampickle": lambda: sp.dump(obj, path),
        "pickle5": lambda: pickle_fsync(5),
        "pickle4": lambda: pickle_fsync(4),
        "joblib": joblib_fsync,
        "raw": lambda: raw_write(arrays, path),
    }[key]


def loader(key: str, path: str, workload: str, quick: bool) -> Callable[[], Any]:
    def pickle_load() -> Any:
        with open(path, "rb") as f:
            return pickle.load(f)

    if key == "raw":  # preallocated, untouched: first touch happens in readinto
        arrays = [np.empty(n, dtype=d) for _, _, d, n in layout(workload, quick)]
        return lambda: raw_readinto(arrays, path)
    return {
        "streampickle": lambda: sp.load(path),
        "streampickle-mmap": lambda: sp.load(path, mmap_mode="r"),
        "pickle5": pickle_load,
        "pickle4": pickle_load,
        "joblib": lambda: joblib.load(path),
        "joblib-mmap": lambda: joblib.load(path, mmap_mode="r"),
    }[key]


def child(spec: dict[str, Any]) -> dict[str, float]:
    src = os.environ.get("BENCH_SRC")
    assert not src or Path(sp.__file__).is_relative_to(src), f"ran {sp.__file__}"
    workload, quick, path, key = spec["workload"], spec["quick"], spec["path"], spec["key"]
    if spec["op"] == "dump":
        obj, arrays = build(workload, quick)
        run = dumper(key, obj, arrays, path)
    else:
        run = loader(key, path, workload, quick)
    fsync, in_fsync = os.fsync, [0.0]

    def timed_fsync(fd: Any) -> None:  # streampickle calls os.fsync too
        start = time.perf_counter()
        fsync(fd)
        in_fsync[0] += time.perf_counter() - start

    os.fsync = timed_fsync
    before = vm_kib("VmRSS")
    reset_peak()
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    extra_mib = max(0, vm_kib("VmHWM") - before) / 1024
    if spec["op"] != "dump":
        check_loaded(result, workload, quick)
    return {
        "seconds": seconds,
        "fsync_s": in_fsync[0],
        "extra_mib": extra_mib,
        "file_mib": os.path.getsize(path) / MiB,
    }


def run_child(spec: dict[str, Any]) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


Samples = dict[tuple[str, str], list[dict[str, float]]]  # (op, key) -> runs


def measure(workload: str, args: argparse.Namespace, data: Path) -> Samples:
    samples: Samples = {}
    for rep in range(args.repeat):
        for dump_key in DUMPS:
            path = data / f"{workload}-{dump_key}.bin"
            base = {"workload": workload, "quick": args.quick, "path": str(path)}
            loads = [k for _, _, k in ROWS if k.removesuffix("-mmap") == dump_key]
            ops = ["load", "cold"] if args.cold else ["load"]
            jobs = [("dump", dump_key)] + [(op, k) for op in ops for k in loads]
            for op, key in jobs:
                if op == "cold":
                    os.sync()
                    Path("/proc/sys/vm/drop_caches").write_text("3\n")
                child_op = "dump" if op == "dump" else "load"
                r = run_child({**base, "op": child_op, "key": key})
                samples.setdefault((op, key), []).append(r)
                print(
                    f"  [{workload} {rep + 1}/{args.repeat}] {op:4} {key:18} "
                    f"{r['seconds']:8.3f} s  extra {r['extra_mib']:8.1f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
            for leftover in data.glob(f"{workload}-{dump_key}*"):
                leftover.unlink()
    return samples


def runs_of(samples: Samples, op: str, key: str | None, field: str) -> list[float]:
    return [r[field] for r in samples.get((op, key or ""), [])]


def timing(samples: Samples, op: str, key: str | None, field: str = "seconds") -> str:
    """Median time, with the range over runs when there are several."""
    runs = runs_of(samples, op, key, field)
    if not runs:
        return "—"
    text = f"{statistics.median(runs):.3f}"
    return text + f" ({min(runs):.2f}–{max(runs):.2f})" if len(runs) > 1 else text


def peak(samples: Samples, op: str, key: str | None, field: str = "extra_mib") -> str:
    runs = runs_of(samples, op, key, field)
    return f"{max(runs):.1f}" if runs else "—"


def report_workload(workload: str, samples: Samples, cold: bool) -> list[str]:
    cold_head = " cold load s |" if cold else ""
    lines = [
        f"### {WORKLOADS[workload]}",
        "",
        "| contender | dump s | of which fsync s | load s | dump extra peak MiB "
        f"| load extra peak MiB |{cold_head} file MiB |",
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if cold else "") + "---:|",
    ]
    for label, dump_key, load_key in ROWS:
        cells = [
            label,
            timing(samples, "dump", dump_key),
            timing(samples, "dump", dump_key, "fsync_s"),
            timing(samples, "load", load_key),
            peak(samples, "dump", dump_key),
            peak(samples, "load", load_key),
            *([timing(samples, "cold", load_key)] if cold else []),
            peak(samples, "load", load_key, "file_mib"),
        ]
        lines.append("| " + " | ".join(cells) + " |")

    def ratio(op: str, other: str, agg: Callable[[list[float]], float]) -> float:
        """streampickle's time over ``other``'s (``agg`` of the runs)."""
        mine = agg(runs_of(samples, op, "streampickle", "seconds"))
        return mine / agg(runs_of(samples, op, other, "seconds"))

    vs_raw, vs_pickle5 = {"a": (1.25, None), "b": (None, 0.9)}[workload]
    checks: list[tuple[str, str, str, float | None]] = [
        ("streampickle dump / pickle 5 dump", "dump", "pickle5", 1.05),
        ("streampickle dump / raw write", "dump", "raw", 1.25),
        ("streampickle load / raw readinto", "load", "raw", vs_raw),
        ("streampickle load / pickle 5 load", "load", "pickle5", vs_pickle5),
    ]
    if cold:
        checks.append(("streampickle cold load / raw cold readinto", "cold", "raw", None))
    lines += [
        "",
        "| ratio (of medians) | value | target | | ratio of minimums |",
        "|---|---:|---:|---|---:|",
    ]
    for name, op, other, target in checks:
        value = ratio(op, other, statistics.median)
        verdict = "—" if target is None else ("met" if value <= target else "**missed**")
        shown = "—" if target is None else f"<= {target:g}x"
        lines.append(
            f"| {name} | {value:.3f}x | {shown} | {verdict} | "
            f"{ratio(op, other, min):.3f}x |"
        )
    extra = max(runs_of(samples, "dump", "streampickle", "extra_mib"))
    lines.append(
        f"| streampickle dump extra peak (max) | {extra:.1f} MiB | <= 64 MiB | "
        f"{'met' if extra <= 64 else '**missed**'} | |"
    )
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~64 MiB workloads")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="also time loads after dropping the page cache (root)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="parent folder for the temporary data files (default: TMPDIR)",
    )
    parsed = parse_args(parser, child)
    if parsed is None:
        return
    args = parsed
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.cold and not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        print("cannot write /proc/sys/vm/drop_caches: skipping cold loads", file=sys.stderr)
        args.cold = False

    command = " ".join(["python", "benchmarks/bench.py", *sys.argv[1:]])
    started = dt.datetime.now(dt.UTC)
    data = Path(tempfile.mkdtemp(prefix="streampickle-bench-", dir=args.data_dir))
    print(f"data files in {data}", file=sys.stderr)
    try:
        digest = snapshot(data)
        results = {w: measure(w, args, data) for w in WORKLOADS}
    finally:
        shutil.rmtree(data, ignore_errors=True)
    elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()

    lines = [
        "## core: dump and load against pickle, joblib and raw I/O (bench.py)",
        "",
        f"- command: `{command}`",
        f"- date: {started:%Y-%m-%d %H:%M} UTC (took {elapsed / 60:.1f} min)",
        *machine(digest),
        f"- data folder: {data.parent} (all contenders on the same disk; removed after)",
        f"- times: median (min–max) of {args.repeat} runs, each in a fresh subprocess, "
        "timing only the dump or load call; memory: max over runs of peak RSS minus RSS "
        "before the call; run-to-run spread is large on shared or virtual machines, so "
        "the ratio of minimums is shown too (targets are judged on medians)",
        "- loads read the file just written: **warm page cache**"
        + (" (cold: after `echo 3 > /proc/sys/vm/drop_caches`)" if args.cold else ""),
        "- every dump is durable: streampickle fsyncs its temp file and renames it; "
        "pickle, joblib and raw are followed by fsync",
        "- mmap loads map the file and do not touch array pages",
        "- raw: the arrays' bytes only (no metadata, no dicts), 4 MiB os.write / readinto "
        "slices; readinto fills preallocated, untouched np.empty arrays",
        "",
    ]
    for workload, samples in results.items():
        lines += report_workload(workload, samples, args.cold)
    text = "\n".join(lines)
    print(text)
    write_section("core", lines, args.output)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
