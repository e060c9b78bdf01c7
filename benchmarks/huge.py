"""Huge-file benchmark (issue 7): a ~30 GiB checkpoint, larger than RAM,
written with bounded memory and read back by memory map and record by record,
against joblib and numpy's .npy on the same data.

Run from the repository root (not part of ``run.py``'s default run)::

    python benchmarks/huge.py            # 120 x 256 MiB float32 = 30 GiB; ~15 min
    python benchmarks/huge.py --quick    # 4 x 16 MiB, smoke test

Data: ``--arrays`` float32 arrays of ``--mib`` MiB each. Array i is
``base + i`` where ``base`` is one random array (``rng.random``): the writer
holds ``base`` and one reused output array, so it stays at ~2 arrays whatever
the total. Formats, one after another (each deleted before the next is
written, all deleted at the end):

- streampickle: one ``sp.Pickler(path)`` stream of 120 records,
  ``{"name": ..., "i": i, "array": arr}``, one array per record (a single
  record would need the whole 30 GiB in memory, or a dict of np.memmap arrays
  backed by another 30 GiB file: not possible on this disk).
- joblib: one ``joblib.dump(arr, file)`` per array (120 files), each fsynced;
  a single joblib file would need the whole object in memory.
- npy: one ``np.save`` per array (120 files), each fsynced.

Every pass runs in a fresh subprocess after ``drop_caches`` (root; the file is
larger than RAM anyway): write; raw ``readinto`` of the same file(s) into one
reused 16 MiB buffer (the disk's rate), once plainly and once dropping the
pages read behind it every 64 MiB (``posix_fadvise``, as streampickle's
``page_cache="auto"`` does for a stream larger than a quarter of RAM); load
with ``mmap_mode="r"`` and hash every array (xxh3_64 of its bytes, which
reads every page of the map); load every array into memory one at a time
(``sp.Unpickler`` iteration,
``joblib.load``, ``np.load``) and hash it. The digests are checked against the
writer's. Peak RSS is VmHWM minus RSS before the pass (mapped file pages count
in RSS: they are page cache the kernel can drop); "peak anon" is RssAnon
sampled every 20 ms (memory the process owns). Results go to the "huge" section
of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402
from harness import (  # noqa: E402
    GiB,
    MiB,
)

SCRIPT = Path(__file__).resolve()
DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", 4)
FORMATS = {
    "sp": "streampickle: one stream, one record per array",
    "joblib": "joblib: one file per array",
    "npy": "np.save: one .npy file per array",
}
PASSES = {
    "raw": "raw readinto (16 MiB, reused buffer)",
    "raw-drop": "raw readinto, pages dropped behind every 64 MiB",
    "mmap": 'mmap_mode="r" + xxh3 of every array',
    "iterate": "load one array at a time into memory + xxh3",
}


def files(fmt: str, where: Path, count: int) -> list[Path]:
    if fmt == "sp":
        return [where / "ckpt.sp"]
    ext = {"joblib": "pkl", "npy": "npy"}[fmt]
    return [where / f"a{i:03d}.{ext}" for i in range(count)]


def digest(arr: np.ndarray) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(memoryview(np.ascontiguousarray(arr)).cast("B"))


def child_write(spec: dict[str, Any]) -> dict[str, Any]:
    import joblib

    import streampickle as sp

    fmt, where, count = spec["fmt"], Path(spec["dir"]), spec["arrays"]
    n = spec["mib"] * MiB // 4
    base = np.empty(n, dtype=np.float32)
    np.random.default_rng(0).random(dtype=np.float32, out=base)
    arr = np.empty_like(base)
    arr[:] = 0  # touch it before the peak mark
    digests, gen_s = [], 0.0
    paths = files(fmt, where, count)

    def make(i: int) -> np.ndarray:
        nonlocal gen_s
        t0 = time.perf_counter()
        np.add(base, np.float32(i), out=arr)
        digests.append(digest(arr))
        gen_s += time.perf_counter() - t0
        return arr

    def fsync(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    with h.Peak(sample_anon=True) as p:
        if fmt == "sp":
            with sp.Pickler(paths[0]) as pickler:
                for i in range(count):
                    pickler.dump({"name": f"a{i:03d}", "i": i, "array": make(i)})
        else:
            for i, path in enumerate(paths):
                a = make(i)
                if fmt == "joblib":
                    joblib.dump(a, path)
                else:
                    np.save(path, a)
                fsync(path)
    size = sum(f.stat().st_size for f in paths)
    return {
        **p.result(),
        "gen_s": gen_s,
        "digests": digests,
        "bytes": size,
        "files": len(paths),
    }


def child_read(spec: dict[str, Any]) -> dict[str, Any]:
    import joblib

    import streampickle as sp

    fmt, where, count, how = spec["fmt"], Path(spec["dir"]), spec["arrays"], spec["pass"]
    paths = files(fmt, where, count)
    digests: list[int] = []
    buf = bytearray(16 * MiB)
    with h.Peak(sample_anon=True) as p:
        if how.startswith("raw"):
            for path in paths:
                with open(path, "rb", buffering=0) as f:
                    done = dropped = 0
                    while n := f.readinto(buf):
                        done += n
                        if how == "raw-drop" and done - dropped >= 64 * MiB:
                            os.posix_fadvise(f.fileno(), dropped, done - dropped, DONTNEED)
                            dropped = done
        elif fmt == "sp":
            mode = "r" if how == "mmap" else None
            for rec in sp.Unpickler(paths[0], mmap_mode=mode):
                digests.append(digest(rec["array"]))
                del rec
        else:
            mode = "r" if how == "mmap" else None
            for path in paths:
                a = (
                    joblib.load(path, mmap_mode=mode)
                    if fmt == "joblib"
                    else np.load(path, mmap_mode=mode)
                )
                digests.append(digest(a))
                del a
    return {**p.result(), "digests": digests, "bytes": sum(f.stat().st_size for f in paths)}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    h.check_snapshot()
    return child_write(spec) if spec["op"] == "write" else child_read(spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 arrays of 16 MiB")
    parser.add_argument("--arrays", type=int, default=None, help="default 120 (quick 4)")
    parser.add_argument(
        "--mib", type=int, default=None, help="MiB per array (256; quick 16)"
    )
    parser.add_argument(
        "--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS)
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parsed = h.parse_args(parser, child)
    if parsed is None:
        return
    args = parsed
    count = args.arrays or (4 if args.quick else 120)
    mib = args.mib or (16 if args.quick else 256)
    total = count * mib * MiB
    free = shutil.disk_usage(args.data_dir or tempfile.gettempdir()).free
    if free < total * 1.1 + 2 * GiB:
        sys.exit(f"need {total * 1.1 / GiB:.0f} GiB free, have {free / GiB:.0f} GiB")
    cold = h.can_drop_caches()
    command = h.command_line("huge.py")
    started = dt.datetime.now(dt.UTC)
    data = Path(tempfile.mkdtemp(prefix="streampickle-huge-", dir=args.data_dir))
    h.log(
        f"data files in {data}; {count} x {mib} MiB = {total / GiB:.1f} GiB; "
        f"drop caches: {cold}"
    )
    results: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        digest_sha = h.snapshot(data)
        where = data / "files"
        for fmt in args.formats:
            where.mkdir()
            spec = {"fmt": fmt, "dir": str(where), "arrays": count, "mib": mib}
            h.drop_caches() if cold else os.sync()
            w = h.run_child(SCRIPT, {**spec, "op": "write"})
            results[(fmt, "write")] = w
            h.log(
                f"  {fmt:6} write    {w['seconds']:7.1f} s  peak {w['extra_mib']:8.1f} MiB "
                f"anon {w['anon_extra_mib']:8.1f} MiB  {w['bytes'] / GiB:.2f} GiB"
            )
            for how in PASSES:
                h.drop_caches() if cold else os.sync()
                r = h.run_child(SCRIPT, {**spec, "op": "read", "pass": how})
                if not how.startswith("raw") and r["digests"] != w["digests"]:
                    raise RuntimeError(f"{fmt} {how}: digests differ from the writer's")
                results[(fmt, how)] = r
                h.log(
                    f"  {fmt:6} {how:8} {r['seconds']:7.1f} s  peak {r['extra_mib']:8.1f} "
                    f"MiB anon {r['anon_extra_mib']:8.1f} MiB  "
                    f"{r['bytes'] / 1e9 / r['seconds']:.2f} GB/s"
                )
            shutil.rmtree(where)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    h.log(f"removed {data}")

    rows, ratio_rows = [], []
    for fmt in args.formats:
        w = results[(fmt, "write")]
        rows.append(
            [
                FORMATS[fmt],
                "write (incl. fsync)",
                f"{w['seconds']:.1f}",
                f"{w['bytes'] / 1e9 / (w['seconds'] - w['gen_s']):.2f}",
                f"{w['extra_mib']:.0f}",
                f"{w['anon_extra_mib']:.0f}",
                f"{w['bytes'] / GiB:.2f} GiB in {w['files']} file(s); generating "
                f"+ hashing took {w['gen_s']:.1f} s of it (the rate excludes it)",
            ]
        )
        for how, label in PASSES.items():
            r = results[(fmt, how)]
            rows.append(
                [
                    FORMATS[fmt],
                    label,
                    f"{r['seconds']:.1f}",
                    f"{r['bytes'] / 1e9 / r['seconds']:.2f}",
                    f"{r['extra_mib']:.0f}",
                    f"{r['anon_extra_mib']:.0f}",
                    "" if how.startswith("raw") else "digests match the writer's",
                ]
            )
        raw = results[(fmt, "raw")]["seconds"]
        raw_drop = results[(fmt, "raw-drop")]["seconds"]
        for how in ("mmap", "iterate"):
            took = results[(fmt, how)]["seconds"]
            ratio_rows.append(
                [FORMATS[fmt], PASSES[how], f"{raw / took:.2f}x", f"{raw_drop / took:.2f}x"]
            )
    lines = [
        "## huge: a 30 GiB checkpoint, larger than RAM (issue 7; huge.py)",
        "",
        *h.header(command, started, digest_sha),
        f"- data: {count} float32 arrays of {mib} MiB ({total / GiB:.1f} GiB); array i = "
        "base + i, base one `rng.random` array; the writer holds base and one reused "
        "output array (2 arrays), and hashes each array (xxh3_64) for the check",
        "- streampickle: one `sp.Pickler(path)` stream, one record per array "
        "(`{'name', 'i', 'array'}`); joblib and np.save: one file per array, each fsynced "
        "(a single joblib or npz file would need all 30 GiB in memory; np.savez is not "
        "mappable); formats written one after another, each deleted before the next",
        "- every pass in a fresh subprocess, one run each (30 GiB per pass), "
        + (
            "after `sync; echo 3 > /proc/sys/vm/drop_caches`"
            if cold
            else "**page cache not dropped (not root)**"
        )
        + "; peak RSS = VmHWM - RSS before (mapped file pages count: they are page cache); "
        "peak anon = RssAnon sampled every 20 ms, minus before; "
        "GB/s = file bytes / 1e9 / s",
        "",
        *h.table(
            ["format", "pass", "seconds", "GB/s", "peak RSS MiB", "peak anon MiB", "notes"],
            rows,
            "|---|---|---:|---:|---:|---:|---|",
        ),
        "Read rate relative to the raw readinto of the same file(s) in the same run, "
        "plain and dropping pages behind (what streampickle's default does for a "
        "stream larger than a quarter of RAM):",
        "",
        *h.table(
            ["format", "pass", "rate / raw readinto", "rate / raw readinto, dropping"],
            rows=ratio_rows,
            align="|---|---|---:|---:|",
        ),
    ]
    h.publish("huge", lines, args.output)


if __name__ == "__main__":
    main()
