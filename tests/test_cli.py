"""The ``streampickle`` command, run in a subprocess as a user runs it.

Each test writes small streams in ``tmp_path`` and checks what the command
prints and its exit status; ``test_memory`` measures the peak RSS of ``dis``,
``info`` and ``verify`` on a ~300 MiB file, and ``test_convert_memory`` that of
``convert`` on a 400 MiB buffer, each in a fresh interpreter.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streampickle as sp
from streampickle import format as fmt

RECORDS = [
    {"a": np.arange(1000, dtype=np.float32), "name": "x"},
    {"b": np.zeros((50, 40)), "c": [1, 2, 3]},
]


def run(*args: Any, status: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "streampickle", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == status, proc.stdout + proc.stderr
    return proc


def error(*args: Any, status: int = 1) -> str:
    """The command's one error line, checked for its form and status."""
    proc = run(*args, status=status)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streampickle: error: "), proc.stderr
    return lines[0]


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    path = tmp_path / "s.sp"
    with sp.Pickler(path) as p:
        for record in RECORDS:
            p.dump(record)
    return path


@pytest.fixture
def zstream(tmp_path: Path) -> Path:
    """Compressed: whole chunks, and chunks in byte lanes (SHUFFLE)."""
    path = tmp_path / "z.sp"
    obj = {"z": np.zeros(100_000), "i": (np.arange(100_000) % 1000).astype(">i4")}
    sp.dump(obj, path, compress="zstd", frame_size=1 << 16)
    return path


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


def index_offset(path: Path) -> int:
    """Where the INDEX frame starts: END's raw_size."""
    return int(struct.unpack_from("<Q", path.read_bytes(), -16)[0])


# -- info ---------------------------------------------------------------------


def test_info_json(stream: Path) -> None:
    info = json.loads(run("info", "--json", stream).stdout)
    index = sp.read_index(stream)
    assert index is not None
    assert (info["version"], info["record_count"], info["buffer_count"]) == (1, 2, 2)
    assert info["index"] == {"present": True, "valid": True, "problem": None}
    r0, r1 = info["records"]
    assert [r0["offset"], r1["offset"]] == [r.offset for r in index.records]
    (b0,) = r0["buffers"]["list"]
    assert b0 == {"number": 0, "offset": index.buffers[0], "size": 4000, "stored": 4000,
                  "codec": "none", "dtype": "float32", "shape": [1000]}
    assert r1["buffers"]["list"][0]["dtype"] == "float64"
    assert r1["buffers"]["list"][0]["shape"] == [50, 40]
    assert r0["pickle"]["raw"] == r0["pickle"]["stored"] > 0
    assert info["compression"]["BUFFER"] == {"raw": 20000, "stored": 20000, "ratio": 1.0}
    assert info["compression"]["PICKLE"]["ratio"] == 1.0


def test_info_text_and_compression(stream: Path, zstream: Path) -> None:
    out = run("info", stream).stdout
    assert "2 records, 2 buffers" in out and "index: present, valid" in out
    assert "float32 (1000,)" in out and "float64 (50, 40)" in out
    info = json.loads(run("info", "--json", zstream).stdout)
    assert info["compression"]["BUFFER"]["ratio"] < 0.1
    kinds = [(b["codec"], b["dtype"]) for b in info["records"][0]["buffers"]["list"]]
    assert kinds == [("zstd", "float64"), ("zstd", ">i4")]


# -- dis ----------------------------------------------------------------------


def test_dis(stream: Path) -> None:
    out = run("dis", stream).stdout
    index = sp.read_index(stream)
    assert index is not None
    off = index.buffers[0]
    taken = rf"NEXT_BUFFER +-> buffer 0 \(4000 bytes, BUFFER frame at offset {off}\)$"
    assert re.search(taken, out, re.M), out
    assert re.search(r"\d+ +1 +MEMOIZE +\(as 0\)$", out, re.M)
    assert re.search(r"\d+ +0 +STOP$", out, re.M)  # the stack is empty after STOP
    assert re.search(r"SHORT_BINUNICODE +'name'", out)
    assert re.search(r"REDUCE +-> ndarray float32 \(1000,\) from buffer 0", out)
    frames = re.findall(r"^ +(\d+)  (\w+) +(none|zstd) +\S+ +(\d+) +(\d+)  (\S+(?: \S+)?)",
                        out, re.M)
    kinds = [f[1] for f in frames]
    assert kinds == ["PAD", "BUFFER", "PICKLE", "RECORD_END"] * 2 + ["INDEX", "END"]
    assert int(frames[1][0]) == off and frames[1][5] == "not read"
    assert [f[5] for f in frames if f[1] == "PICKLE"] == ["ok", "ok"]


def test_dis_record_and_damage_it_does_not_read(stream: Path) -> None:
    index = sp.read_index(stream)
    assert index is not None
    flip(stream, index.buffers[1] + 32 + 5)  # buffers are not read: not seen
    out = run("dis", stream, "--record", "-1").stdout
    assert "buffer 0 (16000 bytes" in out and "4000 bytes" not in out
    assert "1 record, 1 buffer shown" in out
    assert "no record 2" in error("dis", stream, "--record", "2", status=2)
    data = stream.read_bytes()
    name = data.index(b"\x8c\x04name")  # in record 0's pickle: still valid, check BAD
    flip(stream, name + 2)
    assert re.search(r"PICKLE .* BAD ", run("dis", stream).stdout)


def test_dis_compressed_lanes(zstream: Path) -> None:
    out = run("dis", zstream).stdout
    lane = r"CHUNK +zstd +CHECKED\|SHUFFLE .* not read +chunk 0, lane 3$"
    assert re.search(lane, out, re.M), out
    assert "-> ndarray >i4 (100000,) from buffer 1" in out


def test_dis_long_arguments_are_skipped(tmp_path: Path) -> None:
    """In-band bytes, strings and ints longer than 4 KiB are not held, even
    across PICKLE frames; what a terminal cannot print is summarised."""
    path = tmp_path / "long.sp"
    obj = {"b": b"y" * 20000, "u": "z" * 9000, "n": 10**5000}
    sp.dump(obj, path, frame_size=4096)
    out = run("dis", path).stdout
    assert len(re.findall(r"^ +\d+  PICKLE ", out, re.M)) > 5
    assert re.search(r"BINBYTES +'<20000 bytes, not shown>'$", out, re.M)
    assert re.search(r"BINUNICODE +'<9000 bytes, not shown>'$", out, re.M)
    assert re.search(r"LONG4 +<int of 16610 bits>$", out, re.M)
    run("verify", path)
    assert "{'b': <bytes, 19.5 KiB>," in run("cat", path).stdout


# -- verify -------------------------------------------------------------------


def test_verify_good(stream: Path, zstream: Path, tmp_path: Path) -> None:
    assert "ok: format version 1, 2 records, 2 buffers" in run("verify", stream).stdout
    assert "index ok" in run("verify", zstream).stdout

    class Pipe:  # not seekable: the stream gets no index
        data = bytearray()

        def write(self, b: bytes) -> int:
            self.data += b
            return len(b)

    pipe = Pipe()
    sp.dump(RECORDS, pipe)
    piped = tmp_path / "piped.sp"
    piped.write_bytes(pipe.data)
    assert "ok: format version 1, 1 record, 2 buffers" in run("verify", piped).stdout
    assert "no index" in run("verify", piped).stdout
    unchecked = tmp_path / "unchecked.sp"
    sp.dump(RECORDS[0], unchecked, checksum=False)
    assert "index ok; 2 frames without checks" in run("verify", unchecked).stdout


def test_verify_flipped_buffer_byte(stream: Path) -> None:
    index = sp.read_index(stream)
    assert index is not None
    data_at = index.buffers[1] + 32
    flip(stream, data_at + 1000)
    line = error("verify", stream)
    assert f"bad at offset {data_at}: check mismatch in chunk 0" in line


def test_verify_flipped_chunk_byte(zstream: Path) -> None:
    index = sp.read_index(zstream)
    assert index is not None
    payload = index.buffers[0] + 64  # after the BUFFER and first CHUNK headers
    flip(zstream, payload + 3)
    line = error("verify", zstream)
    assert f"bad at offset {payload}: payload check mismatch in CHUNK frame" in line


@pytest.mark.parametrize("cut", ["buffer", "index", "end"])
def test_verify_truncated(stream: Path, cut: str) -> None:
    index = sp.read_index(stream)
    assert index is not None
    size = {"buffer": index.buffers[1] + 100, "index": index_offset(stream) + 40,
            "end": stream.stat().st_size - 32}[cut]
    stream.write_bytes(stream.read_bytes()[:size])
    line = error("verify", stream)
    assert re.search(r"bad at offset \d+: .*(remain|ended|without)", line), line


def test_verify_damaged_index(stream: Path) -> None:
    at = index_offset(stream)
    flip(stream, at + 32 + 20)
    line = error("verify", stream)
    assert f"bad at offset {at + 32}: payload check mismatch in INDEX frame" in line
    assert "index: present, INVALID" in run("info", stream).stdout


def test_verify_stale_index(stream: Path) -> None:
    """An index with a valid check that disagrees with the frames."""
    at = index_offset(stream)
    index = sp.read_index(stream)
    assert index is not None
    records = (index.records[0], index.records[1]._replace(offset=17))
    wrong = fmt.Index(records, index.buffers)
    stream.write_bytes(stream.read_bytes()[:at] + fmt.encode_tail(wrong, at))
    line = error("verify", stream)
    assert f"bad at offset {at}: the index is damaged: record 1" in line


def test_verify_record_counts(stream: Path) -> None:
    index = sp.read_index(stream)
    assert index is not None
    end_at = index.records[1].offset - 32  # record 0's RECORD_END
    data = bytearray(stream.read_bytes())
    assert data[end_at] == fmt.Kind.RECORD_END
    data[end_at : end_at + 32] = fmt.frame(fmt.Kind.RECORD_END, raw_size=5, param=1)
    stream.write_bytes(bytes(data))
    assert f"bad at offset {end_at}: RECORD_END frame" in error("verify", stream)


# -- convert ------------------------------------------------------------------


def test_convert_roundtrip(tmp_path: Path) -> None:
    records = [{"x": np.arange(300_000, dtype=np.int64) % 7, "s": "hi"}, [np.ones(5000)]]
    plain, packed, back = (tmp_path / n for n in ("plain.sp", "packed.sp", "back.sp"))
    with sp.Pickler(plain) as p:
        for r in records:
            p.dump(r)
    out = run("convert", plain, packed, "--compress", "zstd", "--level", "5",
              "--frame-size", "65536").stdout
    assert "2 records from streampickle file" in out
    assert packed.stat().st_size < plain.stat().st_size / 10
    run("verify", packed)
    run("convert", packed, back, "--compress", "none")
    for path in (packed, back):
        got = list(sp.Unpickler(path))
        np.testing.assert_array_equal(got[0]["x"], records[0]["x"])
        np.testing.assert_array_equal(got[1][0], records[1][0])
        assert got[0]["x"].flags.writeable  # as it was: convert copies the pickle
    assert back.stat().st_size == plain.stat().st_size


def convert_records() -> list[Any]:
    """Records whose buffers have every kind of dtype convert must follow."""
    rng = np.random.default_rng(5)
    return [
        {
            "f4": np.linspace(0, 1, 300_000, dtype=np.float32),  # several 64 KiB chunks
            "be_f8": np.cumsum(rng.standard_normal(20_000)).astype(">f8"),
            "i2": np.linspace(-30_000, 30_000, 50_000).astype(np.int16),
            "c16": np.arange(5_000) * (1 + 2j),
            "fortran_i8": np.asfortranarray(np.arange(60_000).reshape(200, 300)),
            "u1": np.arange(90_000).astype(np.uint8),
            "structured": np.array(
                [(i, i / 2) for i in range(4_000)], dtype=[("a", "<i4"), ("b", "<f8")]
            ),
            "readonly_u2": np.frombuffer(bytes(range(256)) * 64, dtype="<u2"),
            "strided": np.arange(20_000.0)[::3],  # not contiguous: in-band
            "noise": rng.integers(0, 256, 10_000, dtype=np.uint8),  # stored raw
        },
        {"step": 1, "text": "pickle bytes " * 2_000, "bytes": bytes(300_000)},
        [np.linspace(0, 7.5, 3_000), np.zeros(10)],
    ]


def assert_same(got: Any, want: Any) -> None:
    """Equal values, and arrays with the same dtype, order and writability."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype
        assert got.flags.f_contiguous == want.flags.f_contiguous
        assert got.flags.writeable == want.flags.writeable
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, dict | list):
        assert type(got) is type(want) and len(got) == len(want)
        for g, w in zip(
            got.values() if isinstance(got, dict) else got,
            want.values() if isinstance(want, dict) else want,
            strict=True,
        ):
            assert_same(g, w)
    else:
        assert got == want


def chunk_lanes(path: Path) -> list[int]:
    """Per compressed buffer, in stream order: how many frames (byte lanes)
    its first chunk is stored in, 1 when whole (from ``dis``)."""
    lanes: list[int] = []
    for line in run("dis", path).stdout.splitlines():
        if re.match(r" +\d+  BUFFER +zstd ", line):
            lanes.append(0)
        elif re.match(r" +\d+  CHUNK .* chunk 0(, lane \d+)?$", line):
            lanes[-1] += 1
    return lanes


def test_convert_streams_frame_by_frame(tmp_path: Path) -> None:
    """plain -> zstd -> plain -> zstd, with other levels and frame sizes: the
    records survive every step, and numeric buffers are shuffled by their
    item size, which only the pickle after each buffer gives."""
    steps = [
        ("plain.sp", []),
        ("z5.sp", ["--compress", "zstd", "--level", "5", "--frame-size", "65536"]),
        ("plain4k.sp", ["--frame-size", "4096"]),
        ("z1.sp", ["--compress", "zstd", "--level", "1", "--frame-size", "1048576"]),
    ]
    with sp.Pickler(tmp_path / "plain.sp") as p:
        for r in convert_records():
            p.dump(r)
    with sp.Unpickler(tmp_path / "plain.sp") as u:
        records = list(u)  # as loaded: the strided array is contiguous now
    for (before, _), (after, options) in zip(steps, steps[1:], strict=False):
        out = run("convert", tmp_path / before, tmp_path / after, *options).stdout
        assert f"3 records from streampickle file {tmp_path / before}" in out
        run("verify", tmp_path / after)
        with sp.Unpickler(tmp_path / after) as u:
            got = list(u)
        assert_same(got, records)
    sizes = {name: (tmp_path / name).stat().st_size for name, _ in steps}
    assert sizes["plain4k.sp"] > 3 * sizes["z5.sp"]
    # f4 be_f8 i2 c16 fortran_i8 u1 structured readonly_u2, then record 2's
    for name in ("z5.sp", "z1.sp"):
        assert chunk_lanes(tmp_path / name) == [4, 8, 2, 16, 8, 1, 1, 1, 8], name
    info = json.loads(run("info", "--json", tmp_path / "z1.sp").stdout)
    codecs = [b["codec"] for r in info["records"] for b in r["buffers"]["list"]]
    assert codecs == ["zstd"] * 8 + ["none", "zstd"]  # noise: stored raw


def test_convert_stream_without_index_or_checks(tmp_path: Path) -> None:
    class Pipe:  # not seekable: the stream gets no index
        data = bytearray()

        def write(self, b: bytes) -> int:
            self.data += bytes(b)  # the writer may hand over numpy arrays
            return len(b)

    pipe = Pipe()
    with sp.Pickler(pipe, compress="zstd", checksum=False, frame_size=8192) as p:
        for r in convert_records():
            p.dump(r)
    src, out = tmp_path / "piped.sp", tmp_path / "out.sp"
    src.write_bytes(pipe.data)
    assert sp.read_index(src) is None
    run("convert", src, out)
    assert "index ok" in run("verify", out).stdout  # and every frame checked
    with sp.Unpickler(src) as u, sp.Unpickler(out) as v:
        assert_same(list(v), list(u))


@pytest.mark.parametrize("where", ["raw buffer", "chunk", "pickle"])
def test_convert_damaged_stream(tmp_path: Path, where: str) -> None:
    """One line, exit status 1, and no output file, not even a temp file."""
    src, out = tmp_path / "in.sp", tmp_path / "out.sp"
    sp.dump(
        {"a": np.arange(100_000.0), "s": "a string"}, src,
        compress="zstd" if where == "chunk" else None, frame_size=1 << 16,
    )  # fmt: skip
    index = sp.read_index(src)
    assert index is not None
    data = src.read_bytes()
    at = {"raw buffer": index.buffers[0] + 32 + 300_000,
          "chunk": index.buffers[0] + 64 + 10,  # after the BUFFER and CHUNK headers
          "pickle": data.index(b"a string")}[where]  # fmt: skip
    flip(src, at)
    line = error("convert", src, out, "--compress", "zstd")
    assert re.search(r"check mismatch in (chunk 4 .* of BUFFER|CHUNK|PICKLE) frame", line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.sp"]


def test_convert_plain_pickle_and_joblib(tmp_path: Path) -> None:
    src, out = tmp_path / "in.pkl", tmp_path / "out.sp"
    with open(src, "wb") as f:
        pickle.dump({"a": np.arange(3000)}, f, protocol=4)
        pickle.dump("second", f)
    assert "2 records from pickle file" in run("convert", src, out).stdout
    got = list(sp.Unpickler(out))
    np.testing.assert_array_equal(got[0]["a"], np.arange(3000))
    assert got[1] == "second"
    joblib = pytest.importorskip("joblib")
    for compress in (0, 3):
        joblib.dump({"w": np.arange(5000.0)}, src, compress=compress)
        assert "1 record from joblib file" in run("convert", src, out).stdout
        np.testing.assert_array_equal(sp.load(out)["w"], np.arange(5000.0))


def test_convert_bad_arguments(stream: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.sp"
    assert "level" in error("convert", stream, out, "--level", "99", status=2)
    assert "frame_size" in error("convert", stream, out, "--frame-size", "10", status=2)
    assert "invalid choice" in error("convert", stream, out, "--compress", "lz4", status=2)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "not a streampickle stream, a pickle" in error("convert", text, out)
    old_pickle = tmp_path / "p0.pkl"  # protocols 0 and 1 have no header to know them by
    old_pickle.write_bytes(pickle.dumps({"a": 1}, protocol=0))
    assert "a pickle (protocol 2 or later)" in error("convert", old_pickle, out)
    assert not out.exists()


# -- cat ----------------------------------------------------------------------


def test_cat(stream: Path) -> None:
    out = run("cat", stream).stdout
    assert "# record 0\n{'a': <ndarray float32 (1000,), 3.9 KiB>, 'name': 'x'}\n" in out
    assert "'b': <ndarray float64 (50, 40), 15.6 KiB>" in out and "'c': [1, 2, 3]" in out
    out = run("cat", stream, "--record", "1").stdout
    assert out.startswith("# record 1\n") and "record 0" not in out


# -- errors -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["info", "dis", "verify", "cat"])
def test_bad_files(command: str, tmp_path: Path, stream: Path) -> None:
    assert "No such file or directory" in error(command, tmp_path / "missing.sp")
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a stream")
    assert "not a streampickle stream" in error(command, text)
    empty = tmp_path / "empty.sp"
    empty.write_bytes(b"")
    assert "empty" in error(command, empty)
    stream.write_bytes(stream.read_bytes()[:200])
    assert re.search(r"ended|remain", error(command, stream))


def test_bad_usage() -> None:
    assert "required" in error(status=2)
    assert "invalid choice" in error("frobnicate", status=2)
    assert "FILE" in error("info", status=2)
    assert "invalid int" in error("dis", "x.sp", "--record", "x", status=2)
    assert "never unpickled" in run("convert", "--help").stdout
    assert "info" in run("--help").stdout


# -- memory -------------------------------------------------------------------

MEASURE = r"""
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_mib(*argv: Any) -> tuple[int, float]:
    """Exit status and peak RSS of ``argv``, the only child of a fresh process."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *map(str, argv)],
                         capture_output=True, text=True, check=True, timeout=120)
    status, kib = out.stdout.split()
    return int(status), int(kib) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB")
def test_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.sp"
    with sp.Pickler(path) as p:
        p.dump({"raw": np.arange(300 << 17, dtype=np.float64)})  # 300 MiB, raw
    with sp.Pickler(path, append=True, compress="zstd") as p:
        p.dump({"zeros": np.zeros(6 << 20), "inband": bytes(32 << 20)})  # 48 + 32 MiB
    assert path.stat().st_size > 300 << 20
    # The harness sees a process that holds 200 MiB.
    status, peak = peak_mib(sys.executable, "-c", "x = b'x' * (200 << 20)")
    assert status == 0 and peak > 200
    for command in ("dis", "info", "verify"):
        status, peak = peak_mib(sys.executable, "-m", "streampickle", command, path)
        assert status == 0 and peak < 100, (command, peak)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB")
def test_convert_memory(tmp_path: Path) -> None:
    """A 400 MiB buffer goes zstd -> raw -> zstd a chunk at a time; loading
    the stream, as convert once did, holds it whole."""
    packed, raw, back = (tmp_path / n for n in ("packed.sp", "raw.sp", "back.sp"))
    smooth = np.linspace(0, 1, 50 << 20)  # 400 MiB that compresses
    sp.dump({"w": smooth}, packed, compress="zstd")
    assert packed.stat().st_size < 40 << 20
    load = "import sys, streampickle as sp; sp.load(sys.argv[1])"
    status, peak = peak_mib(sys.executable, "-c", load, packed)
    assert status == 0 and peak > 400
    for src, out, options in ((packed, raw, ()), (raw, back, ("--compress", "zstd"))):
        argv = ("-m", "streampickle", "convert", src, out, *options)
        status, peak = peak_mib(sys.executable, *argv)
        assert status == 0 and peak < 150, (out.name, peak)
    assert raw.stat().st_size > 400 << 20 and back.stat().st_size < 40 << 20
    assert np.array_equal(sp.load(raw, mmap_mode="r")["w"], smooth)
    assert np.array_equal(sp.load(back)["w"], smooth)
