"""The ``streampickle`` command (also ``python -m streampickle``).

    streampickle info FILE [--json]      what the stream holds, record by record
    streampickle dis FILE [--record N]   its frames and pickle opcodes, as laid out
    streampickle verify FILE             check every byte; exit 1 at the first bad one
    streampickle convert IN OUT [...]    rewrite with other options, or import a
                                         plain pickle or joblib file
    streampickle cat FILE [--record N]   print records, arrays summarised

``info``, ``dis``, ``verify`` and ``convert`` of a stream never unpickle: they walk
the frames, and each record's pickle opcode by opcode (with ``pickletools``'
opcode table), in bounded memory. ``info`` and ``dis`` seek past buffer payloads;
``verify`` reads them in 1 MiB blocks, ``convert`` a chunk at a time. ``cat``
loads records, and ``convert`` a pickle or joblib file, which runs their pickles:
use them on files you trust. Errors are one line on stderr, exit status 1 for a
bad file and 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import pprint
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import numpy as np

from . import __version__
from . import format as fmt
from .convert import convert_stream
from .errors import StreamError
from .pickler import Pickler, check_options
from .unpickler import Unpickler
from .walk import (
    BLOCK,
    Bad,
    CliError,
    Progress,
    UsageError,
    Walker,
    count,
    index_problem,
    short,
    size_text,
)

# ---------------------------------------------------------------------------
# The commands.


def cmd_dis(args: argparse.Namespace) -> int:
    walker = Walker(args.file, "dis")
    try:
        walker.frames.stream_header()  # before printing anything about the file
        walker.source.seek(0)
        print(f"{args.file}: {walker.size} bytes")
        print(
            f"{'offset':>12}  {'kind':<10} {'code':<4} {'flags':<16} {'stored':>11} "
            f"{'raw':>11}  check     note\n{'pickle byte':>24}  depth  opcode"
        )
        walker.run(args.record)
        shown = walker.buffers - walker.rec.first_buffer * (args.record is not None)
        print(
            f"# format version {walker.version}: {count(walker.count, 'record')}, "
            f"{count(shown, 'buffer')} shown; buffer payloads not read (verify reads)"
        )
    finally:
        walker.source.close()
    return 0


def ratio(raw: int, stored: int) -> dict[str, Any]:
    return {"raw": raw, "stored": stored, "ratio": round(stored / raw, 4) if raw else None}


def cmd_info(args: argparse.Namespace) -> int:
    walker = Walker(args.file, "info")
    try:
        walker.run()
        present, problem = index_problem(walker.source)
    finally:
        walker.source.close()
    recs = [
        {
            "record": r.number,
            "offset": r.offset,
            "pickle": ratio(r.pickle_raw, r.pickle_stored),
            "buffers": {
                "count": len(r.buffers),
                **ratio(sum(b.size for b in r.buffers), sum(b.stored for b in r.buffers)),
                "list": [vars(b) for b in r.buffers],
            },
        }
        for r in walker.records
    ]
    info = {
        "file": args.file,
        "size": walker.size,
        "version": walker.version,
        "record_count": walker.count,
        "buffer_count": walker.buffers,
        "index": {
            "present": present,
            "valid": present and not problem,
            "problem": problem or None,
        },
        "compression": {k: ratio(*v) for k, v in walker.totals.items()},
        "trailing_bytes": walker.trailing,
        "records": recs,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"{args.file}: streampickle format version {walker.version}, "
        f"{size_text(walker.size)}, {count(walker.count, 'record')}, "
        f"{count(walker.buffers, 'buffer')}"
    )
    state = ("valid" if not problem else f"INVALID: {problem}") if present else "none"
    print(f"index: {'present, ' * present}{state}")
    for kind, (raw, stored) in walker.totals.items():
        print(
            f"{kind} compression (stored/raw): {stored / raw if raw else 1:.3g} "
            f"({size_text(stored)} / {size_text(raw)})"
        )
    for r in walker.records:
        size = sum(b.size for b in r.buffers)
        print(
            f"record {r.number} at offset {r.offset}: pickle {size_text(r.pickle_raw)} "
            f"(stored {size_text(r.pickle_stored)}), {count(len(r.buffers), 'buffer')} "
            f"({size_text(size)})"
        )
        for b in r.buffers:
            what = f": {b.dtype} {b.shape}" if b.dtype else ""
            print(
                f"  buffer {b.number} at offset {b.offset}: {size_text(b.size)}, "
                f"{b.codec}, stored {size_text(b.stored)}{what}"
            )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    walker = Walker(args.file, "verify")
    progress = walker.progress = Progress(walker.size, "verify")
    try:
        walker.run()
        if walker.trailing:
            at = walker.size - walker.trailing
            raise Bad(at, f"{walker.trailing} bytes after the END frame")
        present, problem = index_problem(walker.source)
        if problem:
            raise Bad(walker.index_at, f"the index is damaged: {problem}")
    except StreamError as exc:  # where it says, else at the frame being read
        m = re.search(r"offset (\d+)", str(exc))
        raise Bad(int(m[1]) if m else walker.at, str(exc)) from None
    finally:
        progress.close()
        walker.source.close()
    print(
        f"{args.file}: ok: format version {walker.version}, "
        f"{count(walker.count, 'record')}, {count(walker.buffers, 'buffer')} "
        f"({size_text(walker.totals['BUFFER'][0])}), "
        f"{'index ok' if present else 'no index'}"
        + f"; {count(walker.unchecked, 'frame')} without checks"
        * bool(walker.unchecked)
    )
    return 0


JOBLIB_MAGIC = (
    b"\x78\x01",
    b"\x78\x5e",
    b"\x78\x9c",
    b"\x78\xda",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ",
    b"\x5d\x00\x00",
    b"\x04\x22\x4d\x18",
    b"ZF",
)


def sniff(path: str) -> str:
    """'streampickle', 'pickle' or 'joblib': what the file at ``path`` holds."""
    with open(path, "rb") as f:
        head = f.read(len(fmt.MAGIC))
        if head and fmt.MAGIC.startswith(head):
            return "streampickle"
        if head.startswith(JOBLIB_MAGIC):
            return "joblib"
        if head.startswith(b"\x80"):  # a pickle; joblib's name its array wrapper
            needle, tail = b"joblib.numpy_pickle", head
            while block := f.read(BLOCK):
                if needle in tail + block:
                    return "joblib"
                tail = block[-len(needle) :]
            return "pickle"
    raise CliError(
        "not a streampickle stream, a pickle (protocol 2 or later) or a joblib file"
        if head
        else "empty file"
    )


def load_records(path: str, kind: str, progress: Progress) -> Iterator[Any]:
    """The objects in the pickle or joblib file at ``path``."""
    if kind == "joblib":
        try:
            import joblib
        except ImportError:
            raise CliError("a joblib file: install joblib to convert it") from None
        yield joblib.load(path)
    else:
        with open(path, "rb") as f:
            while f.peek(1):
                yield pickle.load(f)
                progress(f.tell())


def cmd_convert(args: argparse.Namespace) -> int:
    compress = None if args.compress == "none" else "zstd"
    try:
        check_options(None, compress, args.level, None, args.frame_size)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    kind, records, size = sniff(args.input), 0, os.path.getsize(args.input)
    progress = Progress(size, "convert")  # by input bytes done
    try:
        with Pickler(
            args.output, compress=compress, level=args.level, frame_size=args.frame_size
        ) as out:
            if kind == "streampickle":
                records = convert_stream(args.input, out, progress)
            else:
                for obj in load_records(args.input, kind, progress):
                    out.dump(obj)
                    records += 1
    finally:
        progress.close()
    print(
        f"{args.output}: {count(records, 'record')} from {kind} file {args.input} "
        f"({size_text(size)} -> {size_text(os.path.getsize(args.output))})"
    )
    return 0


class Summary:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def summarize(obj: Any, seen: dict[int, Any]) -> Any:
    """A copy of ``obj`` to print: arrays and long bytes become one-line
    summaries, through dicts, lists and tuples."""
    if isinstance(obj, np.ndarray):
        return Summary(
            f"<{type(obj).__name__} {obj.dtype} {obj.shape}, {size_text(obj.nbytes)}>"
        )
    if isinstance(obj, bytes | bytearray) and len(obj) > 256:
        return Summary(f"<{type(obj).__name__}, {size_text(len(obj))}>")
    if isinstance(obj, int) and obj.bit_length() > 4096:
        return Summary(short(obj))
    if id(obj) in seen:
        return seen[id(obj)]
    if isinstance(obj, dict):
        out: Any = seen.setdefault(id(obj), {})
        out.update((k, summarize(v, seen)) for k, v in obj.items())
    elif isinstance(obj, list):
        out = seen.setdefault(id(obj), [])
        out.extend(summarize(v, seen) for v in obj)
    elif isinstance(obj, tuple):
        items = [summarize(v, seen) for v in obj]
        out = obj._make(items) if hasattr(obj, "_make") else tuple(items)
    else:
        return obj
    return out


def cmd_cat(args: argparse.Namespace) -> int:
    if os.path.getsize(args.file) == 0:  # the Unpickler's clean end
        raise CliError("empty input: no streampickle stream to read")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "compressed buffers are not mapped"
        with Unpickler(args.file, mmap_mode="r") as unpickler:
            records: Iterator[tuple[int, Any]] = enumerate(unpickler)
            if args.record is not None:
                n = len(unpickler)
                if not -n <= args.record < n:
                    raise UsageError(f"no record {args.record}: the stream has {n}")
                records = iter([(args.record % n, unpickler[args.record])])
            for i, obj in records:
                print(f"# record {i}")
                pprint.pprint(summarize(obj, {}), width=92, sort_dicts=False)
    return 0


# ---------------------------------------------------------------------------
# Arguments.


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"streampickle: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


CONVERT_HELP = """Rewrite a stream with other options, or import a plain pickle file
(protocol 2 or later; every pickle in it becomes a record) or a joblib file (needs
joblib).

A stream is copied frame by frame and never unpickled: pickle bytes are reframed, and
each buffer is read, checked and written one chunk at a time (recompressed, or
decompressed), byte-shuffled by the item size of the dtype its pickle gives it. Memory
stays at a few chunks per thread whatever the buffers' sizes. Whether a buffer is worth
compressing is decided from its first chunk. A damaged input stops it (exit status 1).
A pickle or joblib file is loaded one object at a time, whole: that runs its pickles,
so import only files you trust. OUT is written atomically (temp file, then rename)."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="streampickle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        run: Callable[[argparse.Namespace], int],
        text: str,
        description: str = "",
        files: tuple[str, ...] = ("file",),
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            run.__name__[4:],
            help=text,
            description=description or text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for dest in files:
            p.add_argument(dest, metavar={"input": "IN", "output": "OUT"}.get(dest, "FILE"))
        p.set_defaults(run=run)
        return p

    p = command(
        cmd_info,
        "version, records, buffers (dtype and shape), index and "
        "compression; reads no buffer payload",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = command(
        cmd_dis,
        "every frame and each record's pickle opcodes (memo, buffers, "
        "stack depth); checks PICKLE payloads, reads no buffer payload",
    )
    p.add_argument("--record", type=int, metavar="N", help="only record N (-1: the last)")
    command(
        cmd_verify,
        "check every header, payload, chunk, record and the index, "
        "reading buffers in 1 MiB blocks; exit 1 at the first bad byte",
    )
    p = command(
        cmd_convert,
        "rewrite a stream with other options, or convert a pickle or joblib file",
        CONVERT_HELP,
        ("input", "output"),
    )
    p.add_argument(
        "--compress",
        choices=["zstd", "none"],
        default="none",
        help="compress buffers and pickle frames with zstd (default: none)",
    )
    p.add_argument("--level", type=int, default=3, help="zstd level (default 3)")
    p.add_argument(
        "--frame-size",
        type=int,
        metavar="N",
        default=None,
        help="bytes per pickle frame and buffer chunk (default 4 MiB)",
    )
    p = command(cmd_cat, "print records with pprint, arrays summarised")
    p.add_argument("--record", type=int, metavar="N", help="only record N (-1: the last)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; its exit status."""
    args = build_parser().parse_args(argv)
    name = getattr(args, "file", None) or getattr(args, "input", "")

    def fail(message: str, status: int) -> int:
        sys.stderr.write(f"streampickle: error: {' '.join(message.split())}\n")
        return status

    try:
        status = int(args.run(args))
        sys.stdout.flush()
        return status
    except UsageError as exc:
        return fail(str(exc), 2)
    except BrokenPipeError:  # a reader such as `head` stopped early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except OSError as exc:
        return fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc), 1)
    except (CliError, StreamError, EOFError) as exc:
        return fail(f"{name}: {exc}", 1)
    except Exception as exc:  # an unpickled object's own error (cat, convert)
        return fail(f"{name}: {type(exc).__name__}: {exc}", 1)
