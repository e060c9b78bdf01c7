"""What every benchmark suite shares: fresh-subprocess children, peak-RSS
measurement, a snapshot of streampickle's sources, statistics, and the
sections of benchmarks/RESULTS.md.

A suite is a script in this folder. Its main process copies the package aside
(``snapshot``) so that every child runs the same code while the working tree is
being edited, then runs each measurement in a fresh interpreter
(``run_child``): ``python benchmarks/<suite>.py --child '<json spec>'``, which
prints one JSON line. Peak memory is measured inside the child as the kernel's
peak-RSS mark (VmHWM, reset through /proc/self/clear_refs) minus the RSS just
before the timed call.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

MiB = 1 << 20
GiB = 1 << 30
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
#: Where --quick runs write, so that smoke runs never replace real figures.
QUICK_RESULTS = HERE / "RESULTS-quick.md"
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


# -- memory ------------------------------------------------------------------


def make_array(rng: np.random.Generator, kind: str, dtype: str, n: int) -> np.ndarray:
    """A workload array, generated in place (no temporaries): "ints" low-entropy
    int64 (0..999), "bytes" uniform uint8, "uniform" random float32 in [0, 1),
    "walk" a cumulative sum of normals (smooth float64)."""
    if kind == "ints":
        return rng.integers(0, 1000, n)
    if kind == "bytes":
        return rng.integers(0, 256, n, dtype=np.uint8)
    arr = np.empty(n, dtype=dtype)
    if kind == "uniform":
        rng.random(dtype=np.float32, out=arr)
    else:
        rng.standard_normal(out=arr)
        np.cumsum(arr, out=arr)
    return arr


def vm_kib(field: str) -> int:
    """A field of /proc/self/status (VmRSS, VmHWM, RssAnon, ...) in KiB."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    if field == "VmHWM":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import psutil

    return int(psutil.Process().memory_info().rss) // 1024


def reset_peak() -> None:
    """Reset the peak-RSS mark where Linux allows it (>= 4.0)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class Peak:
    """Measures a timed region: seconds, extra peak RSS (VmHWM minus RSS
    before), and, sampled every ``every`` s by a thread, the peak of anonymous
    RSS (RssAnon: memory the process owns, not file pages it maps).

    >>> with Peak() as p: ...
    >>> p.result()  # doctest: +SKIP
    """

    def __init__(self, sample_anon: bool = False, every: float = 0.02) -> None:
        self.sample_anon, self.every = sample_anon, every
        self.anon_peak_kib = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.anon_peak_kib = max(self.anon_peak_kib, vm_kib("RssAnon"))
            self._stop.wait(self.every)

    def __enter__(self) -> Peak:
        self.before = vm_kib("VmRSS")
        self.anon_before = vm_kib("RssAnon")
        if self.sample_anon:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        reset_peak()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start
        self.extra_mib = max(0, vm_kib("VmHWM") - self.before) / 1024
        self.after_mib = (vm_kib("VmRSS") - self.before) / 1024
        if self.sample_anon:
            self._stop.set()
            self._thread.join()
            self.anon_peak_kib = max(self.anon_peak_kib, vm_kib("RssAnon"))

    def result(self) -> dict[str, float]:
        out = {
            "seconds": self.seconds,
            "extra_mib": self.extra_mib,
            "retained_mib": self.after_mib,
        }
        if self.sample_anon:
            out["anon_extra_mib"] = max(0, self.anon_peak_kib - self.anon_before) / 1024
        return out


# -- children ----------------------------------------------------------------


def snapshot(data: Path) -> str:
    """Copy streampickle's sources into ``data`` and put them first on the
    children's PYTHONPATH; return a digest of them."""
    import streampickle as sp

    src = data / "src" / "streampickle"
    shutil.copytree(Path(sp.__file__).parent, src, ignore=shutil.ignore_patterns("*.pyc"))
    os.environ["BENCH_SRC"] = str(src.parent)  # inherited by the children
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(src.parent), *([path] if path else [])])
    files = sorted(src.rglob("*.py"))
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]


def check_snapshot() -> None:
    """In a child: assert that streampickle comes from the snapshot."""
    src = os.environ.get("BENCH_SRC")
    if src:
        import streampickle as sp

        assert Path(sp.__file__).is_relative_to(src), f"ran {sp.__file__}"


def run_child(
    script: str | Path, spec: dict[str, Any], timeout: float | None = None
) -> dict[str, Any]:
    cmd = [sys.executable, str(script), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def drop_caches() -> bool:
    """Write back and drop the page cache (root only); False if not allowed."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError:
        return False
    return True


def can_drop_caches() -> bool:
    return os.access(DROP_CACHES, os.W_OK)


def log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# -- statistics --------------------------------------------------------------


def med(runs: Iterable[float]) -> float:
    return statistics.median(list(runs))


def fmt_time(runs: list[float], digits: int = 3) -> str:
    """Median, with the range over runs when there are several."""
    if not runs:
        return "—"
    text = f"{statistics.median(runs):.{digits}f}"
    if len(runs) > 1:
        text += f" ({min(runs):.{min(digits, 2)}f}–{max(runs):.{min(digits, 2)}f})"
    return text


def verdict(value: float, limit: float, smaller_is_better: bool = True) -> str:
    ok = value <= limit if smaller_is_better else value >= limit
    return "met" if ok else "**missed**"


# -- reporting ---------------------------------------------------------------


def machine(digest: str) -> list[str]:
    import joblib
    import numpy as np
    import psutil

    import streampickle as sp

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    git = ["git", "rev-parse", "--short", "HEAD"]  # read-only
    commit = subprocess.run(git, cwd=HERE, capture_output=True, text=True).stdout.strip()
    return [
        f"- machine: nproc {os.cpu_count()}, RAM {psutil.virtual_memory().total / GiB:.1f}"
        f" GiB, CPU {cpu}, {platform.platform()}",
        f"- python {platform.python_version()}, numpy {np.__version__}, joblib "
        f"{joblib.__version__}, streampickle {sp.__version__} (HEAD {commit or '?'}; "
        f"working tree copied at start, sha256 of its .py files {digest})",
    ]


def header(command: str, started: dt.datetime, digest: str) -> list[str]:
    elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
    return [
        "- command: "
        + " (run by ".join(f"`{c}`" for c in command.split("\0"))
        + (")" if "\0" in command else ""),
        f"- date: {started:%Y-%m-%d %H:%M} UTC (took {elapsed / 60:.1f} min)",
        *machine(digest),
    ]


def command_line(script: str) -> str:
    """The command that ran this suite (and run.py's, if it ran it)."""
    text = " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])
    via = os.environ.get("BENCH_VIA")
    return f"{text}\0{via}" if via else text


SECTION_ORDER = [
    "core",
    "compress",
    "checksum",
    "profile",
    "sockets",
    "small_instructions",
    "safe",
    "huge",
    "pagecache",
]
TITLE = "# streampickle benchmark results\n\n"


def _marks(name: str) -> tuple[str, str]:
    return f"<!-- section {name}: begin -->", f"<!-- section {name}: end -->"


def write_section(name: str, lines: list[str], path: Path = RESULTS) -> None:
    """Replace section ``name`` of RESULTS.md (between its markers), keeping
    the others and any hand-written text outside the markers."""
    begin, end = _marks(name)
    body = f"{begin}\n" + "\n".join(lines).rstrip() + f"\n{end}"
    text = path.read_text() if path.exists() else TITLE
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: body, text)
    else:  # before the first later section that exists, else at the end
        known = name in SECTION_ORDER
        rank = SECTION_ORDER.index(name) + 1 if known else len(SECTION_ORDER)
        later = SECTION_ORDER[rank:]
        spots = [text.find(_marks(s)[0]) for s in later if _marks(s)[0] in text]
        at = min(spots) if spots else len(text)
        text = text[:at].rstrip() + "\n\n" + body + "\n\n" + text[at:].lstrip()
    path.write_text(text.rstrip() + "\n")


def publish(name: str, lines: list[str], path: Path = RESULTS) -> None:
    """Write section ``name`` (``write_section``), print it, and say where."""
    write_section(name, lines, path)
    print("\n".join(lines))
    log(f"wrote {path}")


def table(head: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "|---" + "|---:" * (len(head) - 1) + "|"
    return [
        "| " + " | ".join(head) + " |",
        align,
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def parse_args(
    parser: argparse.ArgumentParser, child: Callable[[dict[str, Any]], Any]
) -> argparse.Namespace | None:
    """Add the options every suite shares (``--output``, the hidden
    ``--child``) and parse. A ``--child`` run measures one spec, prints its
    result as JSON and returns None: the caller has nothing more to do."""
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="default: benchmarks/RESULTS.md (--quick: RESULTS-quick.md)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.output = args.output or (QUICK_RESULTS if args.quick else RESULTS)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return None
    return args
