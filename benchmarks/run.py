"""Run the benchmark suites, one after another; each writes its own section of
benchmarks/RESULTS.md.

    python benchmarks/run.py                 # core, compress, sockets, safe (~36 min)
    python benchmarks/run.py --quick         # the same, smoke-sized
    python benchmarks/run.py compress        # some suites only
    python benchmarks/run.py huge            # the 30 GiB suite (~15 min; never by default)
    python benchmarks/run.py pagecache       # 12 GiB files (~6 min; never by default)
    python benchmarks/run.py instructions    # small messages under valgrind (~2 min)

Every suite is also a script of its own (bench.py is "core"), with ``--quick``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITES = {
    "core": "bench.py",
    "compress": "compress.py",
    "sockets": "sockets.py",
    "huge": "huge.py",
    "pagecache": "pagecache.py",
    "instructions": "small_instructions.py",
    "safe": "safe.py",
}
DEFAULT = ["core", "compress", "sockets", "safe"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="suite",
        help=f"{', '.join([*SUITES, 'all'])}; default: core compress sockets safe "
        "('all' is the same; huge, pagecache and instructions only when named)",
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    suites = args.suites or DEFAULT
    for name in suites:
        if name not in [*SUITES, "all"]:
            parser.error(f"unknown suite {name!r}")
    suites = [s for name in suites for s in (DEFAULT if name == "all" else [name])]
    os.environ["BENCH_VIA"] = " ".join(["python", "benchmarks/run.py", *sys.argv[1:]])
    failed = []
    for suite in suites:
        cmd = [
            sys.executable,
            str(HERE / SUITES[suite]),
            *(["--quick"] if args.quick else []),
        ]
        print(f"== {suite}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        if subprocess.run(cmd, check=False).returncode:
            failed.append(suite)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
