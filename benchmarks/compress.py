"""Compression benchmark (issue 5): streampickle compress="zstd" against
pickle 5 through a zstd stream (anchor A) and joblib's zlib and lz4 (anchor B).

Run from the repository root::

    python benchmarks/compress.py            # full: W1 2 GiB, W2 1 GiB, W3 1 GiB (~20 min)
    python benchmarks/compress.py --quick    # smoke: 64 MiB workloads, 1 run each

Workloads: W1 a dict of random float32 arrays (``rng.random``) + metadata;
W2 low-entropy int64 (``rng.integers(0, 1000)``) and smooth float64
(``cumsum`` of normals) arrays + a list of 200k small dicts; W3 uniformly random
uint8 arrays. Every dump goes to a path and is fsynced; every load reads that
file (warm page cache). Each dump and each load runs in a fresh subprocess that
times only the call (see harness.py). Also: a zstd level table on W2; zstd's own
single-thread decompression speed on the same kinds of data (the ceiling of a
parallel load); the cost of streampickle's checksums and the speed of three
hashes. The results go to the "compress" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402
from harness import (
    MiB,  # noqa: E402
)

SCRIPT = Path(__file__).resolve()
WORKLOADS = {
    "W1": "W1: random float32 arrays (~2 GiB) + metadata",
    "W2": "W2: low-entropy int64 + smooth float64 arrays (~1 GiB) + 200k small dicts",
    "W3": "W3: uniformly random uint8 (1 GiB)",
}
LABELS = {
    "sp-zstd": 'streampickle compress="zstd" (level 3, threads=None, shuffle=None)',
    "sp-none": "streampickle uncompressed",
    "sp-none-nocheck": "streampickle uncompressed, checksum=False",
    "A": "anchor A: pickle 5 through zstandard stream_writer(level=3, threads=-1)",
    "joblib-zlib": 'anchor B: joblib compress=("zlib", 3)',
    "joblib-lz4": 'anchor B: joblib compress="lz4"',
}
MAIN = ["sp-zstd", "sp-none", "A", "joblib-zlib", "joblib-lz4"]
LEVELS = [-5, 1, 3, 9, 19]


# -- workloads ---------------------------------------------------------------


def layout(workload: str, quick: bool) -> list[tuple[str, str, str, int]]:
    """name, generator, dtype, elements of each array."""
    size = 16 * MiB if quick else 64 * MiB
    if workload == "W1":
        count = 4 if quick else 32
        return [(f"layer{i:02d}", "uniform", "float32", size // 4) for i in range(count)]
    if workload == "W3":
        count = 4 if quick else 16
        return [(f"bytes{i:02d}", "bytes", "uint8", size) for i in range(count)]
    half = 2 if quick else 8
    return [(f"ints{i}", "ints", "int64", size // 8) for i in range(half)] + [
        (f"walk{i}", "walk", "float64", size // 8) for i in range(half)
    ]


def record_count(quick: bool) -> int:
    return 20_000 if quick else 200_000


def raw_bytes(workload: str, quick: bool) -> int:
    return sum(n * np.dtype(d).itemsize for _, _, d, n in layout(workload, quick))


def arrays_of(workload: str, quick: bool, limit: int | None = None) -> list[np.ndarray]:
    """The workload's arrays, generated in place (no temporaries)."""
    rng = np.random.default_rng(0)
    specs = layout(workload, quick)[:limit]
    return [h.make_array(rng, kind, dtype, n) for _, kind, dtype, n in specs]


def build(workload: str, quick: bool) -> Any:
    names = [name for name, *_ in layout(workload, quick)]
    arrays = dict(zip(names, arrays_of(workload, quick), strict=True))
    meta = {"workload": workload, "seed": 0, "arrays": len(arrays), "version": "1"}
    if workload != "W2":
        return {**arrays, "meta": meta}
    records = [
        {"id": i, "name": f"item{i}", "score": i * 0.5, "tags": ["a", "b"]}
        for i in range(record_count(quick))
    ]
    return {"arrays": arrays, "records": records, "meta": meta}


def check_loaded(obj: Any, workload: str, quick: bool) -> None:
    arrays = obj["arrays"] if workload == "W2" else obj
    got = sum(v.nbytes for v in arrays.values() if isinstance(v, np.ndarray))
    assert got == raw_bytes(workload, quick), f"loaded {got} array bytes"
    if workload == "W2":
        assert len(obj["records"]) == record_count(quick), "records lost"


# -- contenders --------------------------------------------------------------


def fsync_path(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def dumper(key: str, obj: Any, path: str) -> Callable[[], None]:
    import joblib
    import zstandard

    import streampickle as sp

    def anchor_a() -> None:
        cctx = zstandard.ZstdCompressor(level=3, threads=-1)
        with open(path, "wb") as f:
            with cctx.stream_writer(f, closefd=False) as w:
                pickle.dump(obj, w, protocol=5)
            f.flush()
            os.fsync(f.fileno())

    def joblib_dump(compress: Any) -> None:
        joblib.dump(obj, path, compress=compress)
        fsync_path(path)

    if key.startswith("sp-zstd-L"):
        level = int(key.removeprefix("sp-zstd-L"))
        return lambda: sp.dump(obj, path, compress="zstd", level=level)
    return {
        "sp-zstd": lambda: sp.dump(obj, path, compress="zstd"),
        "sp-none": lambda: sp.dump(obj, path),
        "sp-none-nocheck": lambda: sp.dump(obj, path, checksum=False),
        "A": anchor_a,
        "joblib-zlib": lambda: joblib_dump(("zlib", 3)),
        "joblib-lz4": lambda: joblib_dump("lz4"),
    }[key]


def loader(key: str, path: str) -> Callable[[], Any]:
    import joblib
    import zstandard

    import streampickle as sp

    def anchor_a() -> Any:
        with open(path, "rb") as f:
            return pickle.load(zstandard.ZstdDecompressor().stream_reader(f))

    if key.startswith(("sp-", "sp-zstd-L")):
        return lambda: sp.load(path)
    if key == "A":
        return anchor_a
    return lambda: joblib.load(path)


# -- children ----------------------------------------------------------------


def child_dump_load(spec: dict[str, Any]) -> dict[str, Any]:
    workload, quick, path, key = spec["workload"], spec["quick"], spec["path"], spec["key"]
    if spec["op"] == "dump":
        run = dumper(key, build(workload, quick), path)
    else:
        run = loader(key, path)
    fsync, in_fsync = os.fsync, [0.0]

    def timed_fsync(fd: Any) -> None:
        start = time.perf_counter()
        fsync(fd)
        in_fsync[0] += time.perf_counter() - start

    os.fsync = timed_fsync
    with h.Peak() as p:
        result = run()
    if spec["op"] == "load":
        check_loaded(result, workload, quick)
    return {**p.result(), "fsync_s": in_fsync[0], "file_bytes": os.path.getsize(path)}


def child_zstd_speed(spec: dict[str, Any]) -> dict[str, Any]:
    """zstd's own single-thread decompression speed on 4 MiB chunks of a
    workload's arrays compressed at level 3, in three layouts: plain chunks;
    whole shuffled chunks (decode = decompress + un-shuffle); one zstd frame
    per byte lane, lanes that do not shrink to 95% stored raw (decode =
    decompress each lane into a scratch buffer + strided copy into the items).
    Self-contained, so that it does not depend on streampickle's internals."""
    import zstandard

    from streampickle import codecs  # the package copy this run measures

    quick, workload, limit = spec["quick"], spec["workload"], spec["limit"]
    arrays = arrays_of(workload, quick, limit)
    cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    chunk = 4 * MiB
    out: dict[str, Any] = {"raw_bytes": sum(a.nbytes for a in arrays)}
    out["choices"] = sorted(  # what streampickle's sampler picks
        {
            str(codecs.plan(memoryview(a.data).cast("B"), a.itemsize, 3, None))
            for a in arrays
        }
    )
    dest = np.empty(chunk, dtype=np.uint8)
    tmp = np.empty(chunk, dtype=np.uint8)
    for mode in ("plain", "shuffled", "lanes"):
        pieces = []  # (itemsize, nbytes, [(compressed or None, raw lane)])
        for a in arrays:
            b = memoryview(a.data).cast("B")
            for s in range(0, b.nbytes, chunk):
                piece = b[s : s + chunk]
                if mode == "plain":
                    parts = [(cctx.compress(piece), None)]
                elif mode == "shuffled":
                    parts = [(cctx.compress(codecs.shuffle(piece, a.itemsize)), None)]
                else:
                    parts = []
                    for lane in codecs.shuffle(piece, a.itemsize).reshape(a.itemsize, -1):
                        packed = cctx.compress(lane)
                        keep = len(packed) <= 0.95 * lane.nbytes
                        parts.append((packed, None) if keep else (None, lane.tobytes()))
                pieces.append((a.itemsize, piece.nbytes, parts))
        stored = sum(
            len(c) if c is not None else len(r) for _, _, ps in pieces for c, r in ps
        )
        best: dict[str, float] = {}
        for _ in range(spec["repeat"]):
            t0 = time.perf_counter()
            for _, _, parts in pieces:
                for c, _ in parts:
                    if c is not None:
                        dctx.decompress(c)
            t1 = time.perf_counter()
            for item, n, parts in pieces:  # the full decode into the final bytes
                d = memoryview(dest)[:n]
                if mode == "plain":
                    codecs.decompress_into(parts[0][0], d, "chunk")
                elif mode == "shuffled":
                    codecs.decompress_into(parts[0][0], memoryview(tmp)[:n], "chunk")
                    codecs.unshuffle_into(tmp[:n].reshape(item, -1), d)
                else:
                    items = dest[:n].reshape(-1, item)
                    m = n // item
                    for j, (c, r) in enumerate(parts):
                        if c is None:
                            items[:, j] = np.frombuffer(r, dtype=np.uint8)
                        else:
                            codecs.decompress_into(c, memoryview(tmp)[:m], "lane")
                            items[:, j] = tmp[:m]
            t2 = time.perf_counter()
            for k, v in (("decompress", t1 - t0), ("decode", t2 - t1)):
                best[k] = min(best.get(k, v), v)
        out[mode] = {"stored_bytes": stored, **best}
    return out


def child_hashes(spec: dict[str, Any]) -> dict[str, Any]:
    import google_crc32c
    import xxhash

    rng = np.random.default_rng(1)
    pieces = [rng.bytes(4 * MiB) for _ in range(64 if not spec["quick"] else 16)]
    total = sum(len(p) for p in pieces)
    fns: dict[str, Callable[[bytes], Any]] = {
        "zlib.crc32": zlib.crc32,
        "xxhash.xxh3_64_intdigest": xxhash.xxh3_64_intdigest,
        "google_crc32c.value": google_crc32c.value,
    }
    out: dict[str, Any] = {
        "bytes": total,
        "impl": f"google_crc32c {google_crc32c.implementation}",
    }
    for name, fn in fns.items():
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for p in pieces:
                fn(p)
            runs.append(time.perf_counter() - t0)
        out[name] = runs
    return out


def child(spec: dict[str, Any]) -> dict[str, Any]:
    h.check_snapshot()
    if spec["op"] in ("dump", "load"):
        return child_dump_load(spec)
    if spec["op"] == "zstd-speed":
        return child_zstd_speed(spec)
    return child_hashes(spec)


# -- main --------------------------------------------------------------------


Samples = dict[tuple[str, str, str], list[dict[str, Any]]]  # (workload, op, key)


def measure(args: argparse.Namespace, data: Path) -> Samples:
    samples: Samples = {}

    def plan(workload: str) -> list[tuple[str, int]]:
        """(dump key, runs) for a workload."""
        if args.checksum_only:
            return [("sp-none", args.repeat), ("sp-none-nocheck", args.repeat)]
        keys = [(k, args.repeat) for k in MAIN]
        if workload == "W1":
            keys.append(("sp-none-nocheck", args.repeat))
            if not args.quick:  # joblib zlib on W1 takes ~70 s per dump
                keys[MAIN.index("joblib-zlib")] = ("joblib-zlib", 1)
        if workload == "W2" and not args.no_levels:
            for level in LEVELS:
                if level != 3:
                    keys.append((f"sp-zstd-L{level}", 1 if level >= 19 else args.repeat))
        return keys

    for workload in args.workloads:
        todo = plan(workload)
        for rep in range(max(n for _, n in todo)):
            # A fresh order each repetition: whoever runs first after another
            # workload or a large run meets this VM's slow first-touch memory
            # and page cache; it must not always be the same contender.
            random.Random(rep).shuffle(todo)
            for key, runs in todo:
                if rep >= runs:
                    continue
                path = data / f"{workload}-{key}.bin"
                base = {
                    "workload": workload,
                    "quick": args.quick,
                    "path": str(path),
                    "key": key,
                }
                for op in ("dump", "load"):
                    r = h.run_child(SCRIPT, {**base, "op": op})
                    samples.setdefault((workload, op, key), []).append(r)
                    h.log(
                        f"  [{workload} {rep + 1}/{runs}] {op:4} {key:16} "
                        f"{r['seconds']:8.3f} s  extra {r['extra_mib']:8.1f} MiB  "
                        f"file {r['file_bytes'] / MiB:9.1f} MiB"
                    )
                path.unlink(missing_ok=True)
    return samples


def report(
    args: argparse.Namespace,
    samples: Samples,
    speed: dict[str, Any],
    hashes: dict[str, Any],
) -> list[str]:
    def runs(w: str, op: str, key: str, field: str = "seconds") -> list[float]:
        return [r[field] for r in samples.get((w, op, key), [])]

    def m(w: str, op: str, key: str, field: str = "seconds") -> float:
        return h.med(runs(w, op, key, field))

    def size(w: str, key: str) -> float:
        return m(w, "dump", key, "file_bytes")

    lines: list[str] = []
    for w in [] if args.checksum_only else args.workloads:
        raw = raw_bytes(w, args.quick)
        lines += [
            f"### {WORKLOADS[w]}",
            "",
            f"Raw array bytes: {raw / MiB:.0f} MiB (the ratio column is file size / "
            "that)."
            + (
                " Joblib zlib: 1 run (a dump takes over a minute)."
                if w == "W1" and not args.quick
                else ""
            ),
            "",
        ]
        rows = []
        keys = [k for k in [*MAIN, "sp-none-nocheck"] if (w, "dump", k) in samples]
        for k in keys:
            rows.append(
                [
                    LABELS[k],
                    h.fmt_time(runs(w, "dump", k)),
                    h.fmt_time(runs(w, "load", k)),
                    f"{size(w, k) / MiB:.1f}",
                    f"{size(w, k) / raw:.3f}",
                    f"{max(runs(w, 'dump', k, 'extra_mib')):.1f}",
                    f"{max(runs(w, 'load', k, 'extra_mib')):.1f}",
                    f"{h.med(runs(w, 'load', k, 'retained_mib')):.1f}",
                ]
            )
        lines += h.table(
            [
                "contender",
                "dump s",
                "load s",
                "file MiB",
                "size / raw",
                "dump extra peak MiB",
                "load extra peak MiB",
                "load retained MiB",
            ],
            rows,
        )
        # targets
        checks: list[tuple[str, float, str, bool]] = []  # name, value, target, ok

        def ratio(
            name: str,
            a: float,
            b: float,
            limit: float,
            checks: list[tuple[str, float, str, bool]] = checks,
        ) -> None:
            checks.append((name, a / b, f"<= {limit:g}x", a / b <= limit))

        if w == "W2":
            ratio("size / anchor A size", size(w, "sp-zstd"), size(w, "A"), 0.8)
            ratio("dump / anchor A dump", m(w, "dump", "sp-zstd"), m(w, "dump", "A"), 0.5)
            ratio("load / anchor A load", m(w, "load", "sp-zstd"), m(w, "load", "A"), 0.4)
            extra = max(runs(w, "load", "sp-zstd", "extra_mib"))
            obj = h.med(runs(w, "load", "sp-zstd", "retained_mib"))
            checks.append(
                (
                    f"load extra peak, MiB (object = RSS kept after load: {obj:.0f} MiB)",
                    extra,
                    f"<= {obj + 64:.0f} (object + 64)",
                    extra <= obj + 64,
                )
            )
        if w == "W1":
            ratio("size / anchor A size", size(w, "sp-zstd"), size(w, "A"), 1.0)
            ratio("dump / anchor A dump", m(w, "dump", "sp-zstd"), m(w, "dump", "A"), 0.6)
            ratio("load / anchor A load", m(w, "load", "sp-zstd"), m(w, "load", "A"), 0.35)
        if w == "W3":
            ratio(
                "zstd dump / uncompressed dump",
                m(w, "dump", "sp-zstd"),
                m(w, "dump", "sp-none"),
                1.15,
            )
            ratio(
                "zstd load / uncompressed load",
                m(w, "load", "sp-zstd"),
                m(w, "load", "sp-none"),
                1.15,
            )
        for b in ("joblib-zlib", "joblib-lz4"):
            for what, op in (("dump", "dump"), ("load", "load")):
                ratio(
                    f"{what} / {b} {what} (beaten: < 1)",
                    m(w, op, "sp-zstd"),
                    m(w, op, b),
                    1.0,
                )
            ratio(f"size / {b} size (beaten: <= 1)", size(w, "sp-zstd"), size(w, b), 1.0)
        lines += h.table(
            ["target (streampickle zstd, medians)", "value", "target", ""],
            [
                [
                    n,
                    f"{v:.3f}" + ("" if "MiB" in n else "x"),
                    t,
                    "met" if ok else "**missed**",
                ]
                for n, v, t, ok in checks
            ],
        )

    if "W2" in args.workloads and not args.no_levels and not args.checksum_only:
        w, raw = "W2", raw_bytes("W2", args.quick)
        rows = []
        for level in LEVELS:
            k = "sp-zstd" if level == 3 else f"sp-zstd-L{level}"
            if (w, "dump", k) not in samples:
                continue
            rows.append(
                [
                    str(level),
                    f"{size(w, k) / MiB:.1f}",
                    f"{size(w, k) / raw:.3f}",
                    h.fmt_time(runs(w, "dump", k)),
                    h.fmt_time(runs(w, "load", k)),
                    str(len(runs(w, "dump", k))),
                ]
            )
        lines += [
            "### zstd level table on W2 (streampickle, threads=None, shuffle=None)",
            "",
            *h.table(["level", "file MiB", "size / raw", "dump s", "load s", "runs"], rows),
        ]

    if speed:
        cores = os.cpu_count() or 1
        lines += [
            "### Decompression throughput: our load against zstd's own speed",
            "",
            "zstd's speed: the workload's arrays cut in 4 MiB chunks, compressed with "
            "`ZstdCompressor(level=3)` in three layouts: *plain* chunks; *shuffled* "
            "(each chunk byte-shuffled by item size, one zstd frame); *lanes* (one zstd "
            "frame per byte lane, a lane that does not shrink to 95% stored raw). Then, in "
            "one thread, best of 3: `ZstdDecompressor().decompress(frame)` of every frame "
            "(zstd alone), and the full *decode* into a 4 MiB output: `stream_reader` + "
            "`readinto` (what streampickle's `decompress_into` does) plus the un-shuffle "
            "(strided copies per lane; raw lanes copied). Rates are raw bytes / s. "
            f"Ceiling = single-thread decode rate x {cores} cores (threads=None: one "
            "thread per core). Our load = raw array bytes / median `sp.load` time of the "
            'compress="zstd" file (table above; warm cache; includes allocating the '
            "arrays and, on W2, unpickling 200k dicts).",
            "",
        ]
        rows = []
        for w, s in speed.items():
            gb = s["raw_bytes"] / 1e9
            load_rate = raw_bytes(w, args.quick) / 1e9 / m(w, "load", "sp-zstd")
            for mode in ("plain", "shuffled", "lanes"):
                d = s[mode]
                rows.append(
                    [
                        w,
                        f"{s['raw_bytes'] / MiB:.0f}",
                        mode,
                        f"{d['stored_bytes'] / s['raw_bytes']:.3f}",
                        f"{gb / d['decompress']:.2f}",
                        f"{gb / d['decode']:.2f}",
                        f"{gb / d['decode'] * cores:.2f}",
                        f"{load_rate:.2f}",
                        f"{load_rate / (gb / d['decode'] * cores):.2f}",
                    ]
                )
        lines += h.table(
            [
                "data",
                "MiB",
                "layout",
                "zstd size / raw",
                "zstd decompress GB/s (1 thread)",
                "full decode GB/s (1 thread)",
                f"ceiling: decode x {cores} GB/s",
                "our load GB/s",
                "our load / ceiling",
            ],
            rows,
        )
        lines += [
            "streampickle's sampler on these arrays (codecs.plan; None = stored raw): "
            + "; ".join(f"{w}: {', '.join(s['choices'])}" for w, s in speed.items()),
            "",
        ]

    if "W1" in args.workloads and (("W1", "load", "sp-none-nocheck") in samples):
        w = "W1"
        on, off = m(w, "load", "sp-none"), m(w, "load", "sp-none-nocheck")
        dump_on, dump_off = m(w, "dump", "sp-none"), m(w, "dump", "sp-none-nocheck")
        lines += [
            "### Checksum cost (W1, uncompressed)",
            "",
            *h.table(
                ["", "checksum=True s", "checksum=False s", "extra", "target", ""],
                [
                    [
                        "load",
                        h.fmt_time(runs(w, "load", "sp-none")),
                        h.fmt_time(runs(w, "load", "sp-none-nocheck")),
                        f"{(on / off - 1) * 100:+.1f}%",
                        "< +10%",
                        h.verdict(on / off - 1, 0.10),
                    ],
                    [
                        "dump",
                        h.fmt_time(runs(w, "dump", "sp-none")),
                        h.fmt_time(runs(w, "dump", "sp-none-nocheck")),
                        f"{(dump_on / dump_off - 1) * 100:+.1f}%",
                        "—",
                        "",
                    ],
                ],
            ),
        ]
    if hashes:
        gb = hashes["bytes"] / 1e9
        rows = [
            [name, f"{gb / min(hashes[name]):.2f}", f"{gb / h.med(hashes[name]):.2f}"]
            for name in ("zlib.crc32", "xxhash.xxh3_64_intdigest", "google_crc32c.value")
        ]
        lines += [
            f"Hash throughput, one thread, {hashes['bytes'] // (4 * MiB)} pieces of "
            f"4 MiB `bytes` ({hashes['impl']}), 5 passes:",
            "",
            *h.table(["function", "best GB/s", "median GB/s"], rows),
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB workloads, 1 run")
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs (default 3; quick 1)"
    )
    parser.add_argument(
        "--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS)
    )
    parser.add_argument("--no-levels", action="store_true", help="skip the level table")
    parser.add_argument(
        "--checksum-only",
        action="store_true",
        help="only the checksum cost (W1 uncompressed, checksum on/off) "
        "and the hash speeds, into a section of its own",
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parsed = h.parse_args(parser, child)
    if parsed is None:
        return
    args = parsed
    if args.checksum_only:
        args.workloads = ["W1"]
    args.repeat = args.repeat or (1 if args.quick else 3)
    command = h.command_line("compress.py")
    started = dt.datetime.now(dt.UTC)
    data = Path(tempfile.mkdtemp(prefix="streampickle-compress-", dir=args.data_dir))
    h.log(f"data files in {data}")
    try:
        digest = h.snapshot(data)
        samples = measure(args, data)
        speed = {}
        for w in ("W1", "W2"):
            if w in args.workloads and not args.checksum_only:
                limit = None if (w == "W2" or args.quick) else 8  # W1: 8 of its 32 arrays
                speed[w] = h.run_child(
                    SCRIPT,
                    {
                        "op": "zstd-speed",
                        "workload": w,
                        "quick": args.quick,
                        "limit": limit,
                        "repeat": 3,
                    },
                )
                h.log(f"  zstd speed {w}: {speed[w]}")
        hashes = h.run_child(SCRIPT, {"op": "hashes", "quick": args.quick})
    finally:
        shutil.rmtree(data, ignore_errors=True)
    title = (
        "## checksum cost, more runs (compress.py --checksum-only)"
        if args.checksum_only
        else "## compress: zstd against pickle+zstd and joblib (issue 5; compress.py)"
    )
    lines = [
        title,
        "",
        *h.header(command, started, digest),
        f"- data folder: {data.parent} (removed after); times: median (min–max) of "
        f"{args.repeat} runs unless the table says otherwise, each dump and load in a "
        "fresh subprocess timing only the call; dumps to a path, fsynced (streampickle "
        "fsyncs and renames itself; the others are followed by fsync); loads from the "
        "warm page cache; memory: max over runs of peak RSS minus RSS before the call; "
        "'load retained' = RSS after the load minus before (the loaded object)",
        "- workloads as the core suite's; W1 arrays are 32 x 64 MiB float32, W2 8 x 64 MiB "
        "int64 + 8 x 64 MiB float64, W3 16 x 64 MiB uint8"
        if not args.quick
        else "- **--quick**: 16 MiB arrays, small workloads; for smoke tests only",
        "- the speed table uses W1's first 8 arrays (512 MiB, same generator) and all of "
        "W2's arrays"
        if not args.quick
        else "",
        "",
        *report(args, samples, speed, hashes),
    ]
    h.publish("checksum" if args.checksum_only else "compress", lines, args.output)


if __name__ == "__main__":
    main()
