"""Bounded memory: each promise measured in a fresh interpreter.

Every measurement runs in its own ``python -c`` subprocess (``run_measured``),
so nothing the test process or an earlier test allocated can hide or inflate
it. Inside, ``Meter`` takes the baseline as the current RSS just before the
operation (after the object is built and the modules imported) and the peak as
the highest of:

* the kernel's high-water mark (``VmHWM``), reset to the current RSS at the
  baseline by writing ``5`` to ``/proc/self/clear_refs``, where allowed;
* ``ru_maxrss`` after the operation, if it rose during it (it is a high-water
  mark for the whole process, so it only speaks for the operation when it
  moved);
* a thread sampling ``psutil`` RSS every 2 ms.

Objects are 512 MiB (2 GiB for the memory map), so a copy of the data cannot
hide in the 64 MiB allowance, and ``test_control_protocol_4_copy_is_detected``
shows the harness sees a copy when there is one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psutil")
pytest.importorskip("numpy")

from streampickle import unpickler  # noqa: E402

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="RSS accounting (ru_maxrss in KiB, /proc) as on Linux",
)

OBJ_MIB = 512  # the object dumped and loaded
MAP_MIB = 2048  # the file loaded with mmap_mode="r"
SLACK_MIB = 64  # the promised bound on extra memory
RECORDS = 4000  # records of RECORD_ELEMS float32 (256 KiB) each: ~1 GiB
RECORD_ELEMS = 64 * 1024

# Run at the top of every measuring subprocess.
PRELUDE = r'''
import gc
import json
import mmap
import os
import resource
import sys
import threading

import numpy as np
import psutil

import streampickle as sp

MiB = 1 << 20
PARAMS = json.loads(sys.argv[1])
_proc = psutil.Process()


def rss():
    return _proc.memory_info().rss


def ru_maxrss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def reset_hwm():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def vm_hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Meter:
    """Peak RSS growth over the RSS just before the ``with`` block."""

    def __init__(self, interval=0.002):
        self.interval = interval

    def __enter__(self):
        gc.collect()
        self.hwm_reset = reset_hwm()
        self.maxrss_before = ru_maxrss()
        self.baseline = rss()
        self.sampled = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.sampled = max(self.sampled, rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.end = rss()
        self.sampled = max(self.sampled, self.end)
        self.maxrss_after = ru_maxrss()
        self.hwm = vm_hwm() if self.hwm_reset else 0
        peaks = [self.sampled, self.hwm]
        if self.maxrss_after > self.maxrss_before:
            peaks.append(self.maxrss_after)
        self.peak = max(peaks)
        self.growth = self.peak - self.baseline
        return False

    def report(self, prefix=""):
        mib = lambda n: round(n / MiB, 1)  # noqa: E731
        return {
            prefix + "baseline_mib": mib(self.baseline),
            prefix + "peak_mib": mib(self.peak),
            prefix + "growth_mib": mib(self.growth),
            prefix + "end_growth_mib": mib(self.end - self.baseline),
            prefix + "sampled_growth_mib": mib(self.sampled - self.baseline),
            prefix + "hwm_growth_mib": mib(self.hwm - self.baseline) if self.hwm else None,
            prefix + "ru_maxrss_growth_mib": mib(self.maxrss_after - self.baseline),
            prefix + "ru_maxrss_rose": self.maxrss_after > self.maxrss_before,
        }


def emit(result):
    print("RESULT " + json.dumps(result), flush=True)


def make_dict(total_mib, n_arrays):
    """``n_arrays`` float32 arrays totalling ``total_mib``; entry k of array
    i is k + i (exact in float32). Built in place: no temporary copies, and
    every page touched, so the RSS is real."""
    per = total_mib * MiB // n_arrays // 4
    obj = {"meta": {"name": "memory test", "small": np.arange(10, dtype=np.float32)}}
    for i in range(n_arrays):
        a = np.arange(per, dtype=np.float32)
        a += i
        obj[f"a{i:03d}"] = a
    return obj


def array_items(obj):
    return [(int(k[1:]), v) for k, v in obj.items() if k.startswith("a")]


def check_samples(obj):
    """A few entries of every array against k + i: touches a few pages."""
    for i, a in array_items(obj):
        for k in (0, 1, a.size // 2, a.size - 1):
            assert a[k] == np.float32(k + i), (i, k, a[k])
'''


def run_measured(body: str, timeout: float = 300, **params: Any) -> dict[str, Any]:
    """Run ``body`` after ``PRELUDE`` in a fresh interpreter; return what it
    ``emit``-ted (a dict, as JSON on a ``RESULT`` line of stdout)."""
    code = PRELUDE + "\n" + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(params)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"measuring subprocess exited with {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    results = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert results, f"no RESULT line in subprocess output:\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, Any] = json.loads(results[-1][len("RESULT ") :])
    return result


def describe(what: str, m: dict[str, Any], bound: float | None = None) -> str:
    """A one-line account of a measurement, printed and used in asserts."""
    text = (
        f"{what}: peak RSS growth {m['growth_mib']:.1f} MiB over a baseline of "
        f"{m['baseline_mib']:.1f} MiB (sampled {m['sampled_growth_mib']:.1f}, "
        f"VmHWM {m['hwm_growth_mib']}, ru_maxrss {m['ru_maxrss_growth_mib']:.1f}"
        f"{'' if m['ru_maxrss_rose'] else ' (did not rise)'}; "
        f"growth still held at the end {m['end_growth_mib']:.1f})"
    )
    if bound is not None:
        text += f"; bound {bound:.1f} MiB"
    print(text)
    return text


# ---------------------------------------------------------------------------
# Input files, each written by its own subprocess


WRITE_DICT = """
obj = make_dict(PARAMS["mib"], PARAMS["n_arrays"])
sp.dump(obj, PARAMS["path"], compress=PARAMS.get("compress"))
emit({"nbytes": sum(a.nbytes for _, a in array_items(obj))})
"""


@pytest.fixture(scope="module")
def dict_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-record stream of a 512 MiB dict of 32 float32 arrays."""
    path = tmp_path_factory.mktemp("memory") / "dict.sp"
    run_measured(WRITE_DICT, path=str(path), mib=OBJ_MIB, n_arrays=32)
    return path


@pytest.fixture(scope="module")
def zstd_dict_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 512 MiB dict, written with compress="zstd"."""
    path = tmp_path_factory.mktemp("memory") / "dict-zstd.sp"
    run_measured(WRITE_DICT, path=str(path), mib=OBJ_MIB, n_arrays=32, compress="zstd")
    return path


@pytest.fixture(scope="module")
def big_dict_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-record stream of a 2 GiB dict of 64 float32 arrays."""
    path = tmp_path_factory.mktemp("memory") / "big.sp"
    run_measured(WRITE_DICT, path=str(path), mib=MAP_MIB, n_arrays=64)
    return path


@pytest.fixture(scope="module")
def records_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4000 records, each {"i": i, "a": 256 KiB float32 array of k + i}."""
    path = tmp_path_factory.mktemp("memory") / "records.sp"
    run_measured(
        """
        with sp.Pickler(PARAMS["path"]) as p:
            for i in range(PARAMS["records"]):
                a = np.arange(PARAMS["elems"], dtype=np.float32)
                a += i
                p.dump({"i": i, "a": a})
        emit({})
        """,
        path=str(path),
        records=RECORDS,
        elems=RECORD_ELEMS,
    )
    return path


# ---------------------------------------------------------------------------
# 1. dump: memory stays flat, whatever the destination


DUMP = """
import socket

target = PARAMS["target"]
if target == "socket-in-band":  # bytes go in the pickle: a pickle of the object's size
    obj = [bytes([i % 256]) * MiB for i in range(PARAMS["mib"])]
    nbytes = sum(map(len, obj))
    target = "socket"
else:
    obj = make_dict(PARAMS["mib"], 32)
    nbytes = sum(a.nbytes for _, a in array_items(obj))
extra = {}
if target in ("path", "path-zstd"):
    with Meter() as m:
        sp.dump(obj, PARAMS["path"], compress="zstd" if target == "path-zstd" else None)
    extra["written"] = os.path.getsize(PARAMS["path"])
elif target == "file":
    with open(PARAMS["path"], "wb") as f:
        with Meter() as m:
            sp.dump(obj, f)
    extra["written"] = os.path.getsize(PARAMS["path"])
elif target == "socket":
    ours, theirs = socket.socketpair()
    drained = [0]

    def drain():  # discard what arrives, through one reused buffer
        view = memoryview(bytearray(1 << 20))
        while n := theirs.recv_into(view):
            drained[0] += n

    reader = threading.Thread(target=drain)
    reader.start()
    with Meter() as m:
        sp.dump(obj, ours)
        ours.shutdown(socket.SHUT_WR)
    reader.join()
    ours.close()
    theirs.close()
    extra["written"] = drained[0]
else:
    raise ValueError(target)
emit({**m.report(), "nbytes": nbytes, **extra})
"""


@pytest.mark.parametrize(
    "target", ["path", "file", "socket", "socket-in-band", "path-zstd"]
)
def test_dump_memory_is_flat(tmp_path: Path, target: str) -> None:
    """socket-in-band: sp.dump to a socket gathers a small message whole
    (one send); a large pickle, arrays or not, streams."""
    m = run_measured(DUMP, path=str(tmp_path / "out.sp"), mib=OBJ_MIB, target=target)
    msg = describe(f"dump of a {OBJ_MIB} MiB dict to a {target}", m, SLACK_MIB)
    if target != "path-zstd":  # compressed, it is smaller
        assert m["written"] >= m["nbytes"], f"only {m['written']} bytes written"
    assert m["growth_mib"] <= SLACK_MIB, msg


# ---------------------------------------------------------------------------
# 2. load: the object itself, and little more


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "zstd"])
def test_load_memory_is_the_object(
    compressed: bool, request: pytest.FixtureRequest
) -> None:
    path = request.getfixturevalue("zstd_dict_file" if compressed else "dict_file")
    m = run_measured(
        """
        with Meter() as m:
            obj = sp.load(PARAMS["path"])
        check_samples(obj)
        emit({**m.report(), "loaded_mib": sum(a.nbytes for _, a in array_items(obj)) / MiB,
              "file_mib": os.path.getsize(PARAMS["path"]) / MiB})
        """,
        path=str(path),
    )
    bound = m["loaded_mib"] + SLACK_MIB
    what = "zstd-compressed" if compressed else "from a path"
    msg = describe(f"load of a {m['loaded_mib']:.0f} MiB dict, {what}", m, bound)
    assert m["loaded_mib"] >= OBJ_MIB * 0.99
    if compressed:
        assert m["file_mib"] < m["loaded_mib"] * 0.9, "the file should be compressed"
    assert m["growth_mib"] <= bound, msg


def test_receiver_in_another_process_holds_only_the_object() -> None:
    m = run_measured(
        """
        import socket

        ours, theirs = socket.socketpair()
        if os.fork() == 0:  # the sender: its own process and memory
            ours.close()
            sp.dump(make_dict(PARAMS["mib"], 32), theirs)
            theirs.close()
            os._exit(0)
        theirs.close()
        with Meter() as m:
            obj = sp.load(ours)
        os.wait()
        check_samples(obj)
        emit({**m.report(), "loaded_mib": sum(a.nbytes for _, a in array_items(obj)) / MiB})
        """,
        mib=OBJ_MIB,
    )
    bound = m["loaded_mib"] + SLACK_MIB
    msg = describe(f"receive of a {m['loaded_mib']:.0f} MiB dict over a socket", m, bound)
    assert m["loaded_mib"] >= OBJ_MIB * 0.99
    assert m["growth_mib"] <= bound, msg


# ---------------------------------------------------------------------------
# 3. load with mmap_mode="r": nothing read until touched


def test_mmap_load_reads_nothing_until_touched(big_dict_file: Path) -> None:
    m = run_measured(
        """
        with Meter() as m:
            obj = sp.load(PARAMS["path"], mmap_mode="r")
            items = array_items(obj)
            for _, a in items:
                assert type(a) is np.ndarray, type(a)  # not np.memmap
                assert not a.flags.writeable and not a.flags.owndata
                root = a
                while isinstance(root, np.ndarray):
                    root = root.base
                assert isinstance(root, mmap.mmap) or (
                    isinstance(root, memoryview) and isinstance(root.obj, mmap.mmap)
                ), f"array is not a view of the map: its memory is {root!r}"
            check_samples(obj)
        untouched = m.report()
        mapped = sum(a.nbytes for _, a in items)
        # Control: reading every page does show in RSS.
        with Meter() as t:
            for _, a in items:
                a[::1024].sum()  # 1024 float32 = one 4 KiB page
        touched = {"touched_growth_mib": round((t.peak - m.baseline) / MiB, 1)}
        emit({**untouched, **touched, "arrays": 64, "mapped_mib": mapped / MiB})
        """,
        path=str(big_dict_file),
    )
    msg = describe(
        f"mmap_mode='r' load of a {m['mapped_mib']:.0f} MiB file, before touching",
        m,
        SLACK_MIB,
    )
    print(f"  after touching every page: growth {m['touched_growth_mib']:.1f} MiB")
    assert m["mapped_mib"] >= MAP_MIB * 0.99
    assert m["growth_mib"] <= SLACK_MIB, msg
    # Without this, a harness blind to file-backed pages would pass anything.
    assert m["touched_growth_mib"] >= m["mapped_mib"] / 2, (
        f"touching all {m['mapped_mib']:.0f} MiB of the map grew RSS by only "
        f"{m['touched_growth_mib']:.1f} MiB: the measurement does not see mapped pages"
    )


# ---------------------------------------------------------------------------
# 4. iterating records: one record at a time


WRITE_STRINGS = """
sp.dump(["%07d" % i * (1 << 17) for i in range(PARAMS["strings"])], PARAMS["path"])
emit({})
"""


@pytest.mark.parametrize("strings", [40, 160])
def test_safe_load_of_plain_data_holds_its_pickle_once_at_most_64_mib(
    strings: int, tmp_path: Path
) -> None:
    """Safe mode reads a record's PICKLE frames of plain data ahead, up to
    SAFE_WHOLE_MAX, to judge the whole pickle: beside the object it holds
    them once (40 strings of 0.9 MB: 35 MiB), and for a larger record no
    more than 64 MiB (160: 140 MiB, the rest streamed)."""
    path = tmp_path / "strings.sp"
    run_measured(WRITE_STRINGS, path=str(path), strings=strings)
    m = run_measured(
        """
        with Meter() as m:
            obj = sp.load(PARAMS["path"], safe=True)
        emit({**m.report(), "loaded_mib": sum(map(len, obj)) / MiB,
              "file_mib": os.path.getsize(PARAMS["path"]) / MiB})
        """,
        path=str(path),
    )
    held = min(m["file_mib"], unpickler.SAFE_WHOLE_MAX / (1 << 20))
    bound = m["loaded_mib"] + held + 16
    msg = describe(f"safe load of {strings} strings ({m['file_mib']:.0f} MiB)", m, bound)
    assert m["loaded_mib"] >= strings * 0.87
    assert m["growth_mib"] <= bound, msg


WRITE_HASHED = """
import struct
big = b"B" + struct.pack("<I", 60 << 20) + bytes(60 << 20)
hashed = b"\\x8f(K\\x01\\x85\\x94h\\x00\\x90"  # a set given a shared tuple twice
pickled = b"\\x80\\x04(" + big + hashed + b"l."
with sp.Pickler(PARAMS["path"]) as pickler:
    pickler.write_record(lambda writer: writer.write(pickled))
emit({})
"""


def test_safe_load_of_a_gathered_record_not_plain_holds_its_pickle_once(
    tmp_path: Path,
) -> None:
    """A record whose pickle frames were gathered and that the whole scan
    then sends to the counted unpickler (it hashes a tuple it shares): its
    pickle bytes are held once while it runs (fifteenth review: twice, 182
    MiB for 60 MiB of pickle)."""
    path = tmp_path / "hashed.sp"
    run_measured(WRITE_HASHED, path=str(path))
    m = run_measured(
        """
        with Meter() as m:
            obj = sp.load(PARAMS["path"], safe=True)
        emit({**m.report(), "loaded_mib": len(obj[0]) / MiB,
              "file_mib": os.path.getsize(PARAMS["path"]) / MiB})
        """,
        path=str(path),
    )
    bound = m["loaded_mib"] + m["file_mib"] + 16
    msg = describe("safe load of 60 MiB of bytes beside a hashed tuple", m, bound)
    assert m["loaded_mib"] == 60
    assert m["growth_mib"] <= bound, msg
    # and none of it after: the Unpickler is freed at once, in no cycle
    assert m["end_growth_mib"] <= m["loaded_mib"] + 16, msg


def test_iterating_records_holds_one_record(records_file: Path) -> None:
    m = run_measured(
        """
        n = 0
        with Meter() as m:
            with sp.Unpickler(PARAMS["path"]) as records:
                for rec in records:
                    a = rec["a"]
                    assert rec["i"] == n and a.size == PARAMS["elems"], (n, rec["i"])
                    assert a[0] == n and a[-1] == n + a.size - 1, (n, a[0], a[-1])
                    n += 1
        file_mib = os.path.getsize(PARAMS["path"]) / MiB
        emit({**m.report(), "records": n, "file_mib": file_mib})
        """,
        path=str(records_file),
        elems=RECORD_ELEMS,
    )
    msg = describe(
        f"iterating {m['records']} records ({m['file_mib']:.0f} MiB file)", m, SLACK_MIB
    )
    assert m["records"] == RECORDS
    assert m["growth_mib"] <= SLACK_MIB, msg


def test_long_connection_keeps_nothing_per_record() -> None:
    """A Pickler on a socket or pipe writes no index, so it must not keep
    the record and buffer offsets an index needs: a connection that lives
    for millions of messages would grow without end."""
    m = run_measured(
        """
        class Discard:  # a pipe that is always drained: non-seekable
            def write(self, data):
                return memoryview(data).nbytes

            def seekable(self):
                return False

        payload = {"values": np.zeros(256)}  # a 2 KiB buffer: out of band
        pickler = sp.Pickler(Discard())
        for _ in range(1000):  # warm up allocator pools
            pickler.dump(payload)
        with Meter() as m:
            for _ in range(PARAMS["records"]):
                pickler.dump(payload)
        emit(m.report())
        """,
        records=150_000,
    )
    msg = describe("150k records with a buffer each, to a pipe", m, 4)
    assert m["growth_mib"] <= 4, msg


STALLING_PEERS = """
import socket
import time

class Stall:  # a sender that stops after PARAMS["sent"] bytes of its stream
    def __init__(self, sock):
        self.sock, self.sent = sock, 0

    def write(self, data):
        data = memoryview(data).cast("B")
        take = min(data.nbytes, PARAMS["sent"] - self.sent)
        self.sock.sendall(data[:take])
        self.sent += take
        if take < data.nbytes:
            time.sleep(2)
            os._exit(0)
        return data.nbytes

    def seekable(self):
        return False

ours = []
for _ in range(PARAMS["peers"]):
    a, b = socket.socketpair()
    if os.fork() == 0:  # its own process: its memory is not measured
        a.close()
        sp.dump({"a": np.zeros(PARAMS["declared"], dtype=np.uint8)}, Stall(b))
        os._exit(1)
    b.close()
    ours.append(a)
errors = []

def load(sock):
    try:
        sp.load(sock)
    except sp.TruncatedStreamError as exc:
        errors.append(str(exc))

import asyncio  # (imported before measuring)

from streampickle import aio


async def load_all():  # the same peers, read by aio.load on one event loop
    async def one(sock):
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            await aio.load(reader)
        except sp.TruncatedStreamError as exc:
            errors.append(str(exc))
        writer.close()

    await asyncio.gather(*(one(s) for s in ours))

with Meter() as m:
    if PARAMS["aio"]:
        asyncio.run(load_all())
    else:
        loads = [threading.Thread(target=load, args=(s,)) for s in ours]
        for t in loads:
            t.start()
        for t in loads:
            t.join()
for _ in ours:
    os.wait()
emit({**m.report(), "errors": errors})
"""


@pytest.mark.parametrize("aio", [False, True], ids=["blocking", "asyncio"])
@pytest.mark.parametrize(
    "peers, sent",
    [(1, 8 << 20), (4, 3 << 20), (8, 4096)],
    ids=["one-sent-8-MiB", "four-sent-3-MiB", "eight-sent-4-KiB"],
)
def test_peers_that_stall_inside_large_buffers_cost_twice_what_they_sent(
    peers: int, sent: int, aio: bool
) -> None:
    """256 MiB buffers declared, a little sent, then two seconds of silence:
    the pages faulted in ahead of each reader (prefault.py) stay within what
    arrived, twice over, and a huge page or two (numpy's large arrays are
    faulted in 2 MiB at a time, by the reader too), not the declared size;
    and each failed load frees them at once (no cycle through its error's
    traceback waiting for a GC pass)."""
    m = run_measured(STALLING_PEERS, peers=peers, sent=sent, declared=256 << 20, aio=aio)
    bound = 2 * peers * sent / (1 << 20) + 4 * peers + 8
    reader = "aio.load" if aio else "sp.load"
    what = f"{peers} peers that stall after {sent} bytes of a 256 MiB buffer, {reader}"
    msg = describe(what, m, bound)
    assert len(m["errors"]) == peers, m["errors"]
    assert all("inside" in e and "buffer" in e.lower() for e in m["errors"]), m["errors"]
    assert m["growth_mib"] <= bound, msg
    assert m["end_growth_mib"] <= 4, msg


def test_populate_faults_a_new_buffer_in_without_writing_it() -> None:
    """The call prefault.py makes: the pages count in RSS afterwards (so
    the reader's copy finds them there), their bytes untouched."""
    if sys.platform != "linux":
        pytest.skip("madvise is Linux's")
    m = run_measured(
        """
        from streampickle._pages import populate

        a = np.empty(PARAMS["mib"] * MiB, dtype=np.uint8)
        a[: 1 << 20] = 7  # some pages already written
        before = rss()
        done = populate(memoryview(a), 0, a.nbytes)
        emit({"done": done, "growth_mib": (rss() - before) / MiB,
              "kept": bool((a[: 1 << 20] == 7).all())})
        """,
        mib=256,
    )
    if not m["done"]:
        pytest.skip("this kernel cannot populate (before 5.14)")
    assert m["growth_mib"] >= 250, m
    assert m["kept"], m


# ---------------------------------------------------------------------------
# 5. control: the harness does see a copy


def test_control_protocol_4_copy_is_detected(tmp_path: Path) -> None:
    m = run_measured(
        """
        import pickle

        obj = make_dict(PARAMS["mib"], 32)
        with open(PARAMS["path"], "wb") as f:
            with Meter() as m:
                pickle.dump(obj, f, protocol=4)
        emit(m.report())
        """,
        path=str(tmp_path / "out.pkl"),
        mib=OBJ_MIB,
    )
    msg = describe(f"control: pickle protocol 4 dump of a {OBJ_MIB} MiB dict", m)
    assert m["growth_mib"] > 256, (
        "the harness failed to see protocol 4's copies of the arrays, so the "
        f"bounds above prove nothing: {msg}"
    )
