"""Compression of one frame's payload: zstd, the byte-shuffle filter, and the
sampling that decides whether a buffer is worth compressing at all.

Everything here works on bytes and memoryviews; nothing knows of files.
zstd contexts are not thread-safe, so each thread keeps its own.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from .errors import CorruptStreamError
from .format import MAX_SHUFFLE_ITEMSIZE

#: Numeric buffer formats (struct codes, byte order stripped) that shuffle.
SHUFFLE_FORMATS = frozenset("hHiIlLqQefdg") | {"Zf", "Zd", "Zg"}
#: Sampling: this many slices of this size, spread over the buffer.
SAMPLES, SAMPLE_SIZE = 4, 64 << 10
#: A buffer whose samples shrink to more than this fraction is stored raw.
WORTH_COMPRESSING = 0.95

#: Worker threads for ``threads=None``: one per core.
CPUS = os.cpu_count() or 1

_local = threading.local()
_pools: dict[int, tuple[int, ThreadPoolExecutor]] = {}
_pools_lock = threading.Lock()


def pool(threads: int) -> ThreadPoolExecutor:
    """The process-wide pool of ``threads`` workers, made at first use and
    kept: starting threads for every small stream would cost more than the
    work. A forked child makes its own (the parent's threads are not there)."""
    with _pools_lock:
        entry = _pools.get(threads)
        if entry is None or entry[0] != os.getpid():
            entry = (os.getpid(), ThreadPoolExecutor(threads, "streampickle-zstd"))
            _pools[threads] = entry
        return entry[1]


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("c", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "d"):
        _local.d = zstandard.ZstdDecompressor()
    return _local.d  # type: ignore[no-any-return]


def shuffle(data: Any, itemsize: int) -> np.ndarray:
    """Group byte j of every item together: for ``m`` items,
    ``out[j*m + i] = data[i*itemsize + j]``.

    >>> bytes(shuffle(b"abcABC", 3))
    b'aAbBcC'
    """
    items = np.frombuffer(data, dtype=np.uint8).reshape(-1, itemsize)
    out = np.empty((itemsize, len(items)), dtype=np.uint8)
    for j in range(itemsize):  # one strided copy per byte lane: ~4x a transpose
        out[j] = items[:, j]
    return out.reshape(-1)


def unshuffle_into(data: Any, itemsize: int, out: Any) -> None:
    """Undo ``shuffle``, writing the items into ``out``."""
    lanes = np.frombuffer(data, dtype=np.uint8).reshape(itemsize, -1)
    items = np.frombuffer(out, dtype=np.uint8).reshape(-1, itemsize)
    for j in range(itemsize):
        items[:, j] = lanes[j]


def shuffle_itemsize(view: memoryview, option: bool | None) -> int:
    """The item size to shuffle ``view`` by, or 0 for no shuffle.

    ``option`` True forces it (by the buffer's item size), False refuses it,
    None shuffles numeric buffers whose items are wider than one byte.
    """
    itemsize = view.itemsize
    if option is False or not 1 < itemsize <= MAX_SHUFFLE_ITEMSIZE:
        return 0
    if option is True or view.format.lstrip("@=<>!") in SHUFFLE_FORMATS:
        return itemsize
    return 0


def compress(data: Any, level: int) -> bytes:
    return _compressor(level).compress(data)


@dataclass(frozen=True)
class Plan:
    """How to store a buffer's chunks: byte-shuffled by ``itemsize`` (0: not)
    and, per byte lane (a single entry when not shuffled), whether zstd is
    worth trying. Random float mantissas fill whole lanes that never shrink:
    storing those raw saves most of the compression time."""

    itemsize: int
    compress: tuple[bool, ...]


def plan(
    raw: memoryview, itemsize: int, level: int, shuffle_option: bool | None
) -> Plan | None:
    """Decide from a few samples spread over the buffer (as dask does); None
    means store the buffer raw. ``itemsize`` 0 rules out shuffling."""
    n = raw.nbytes
    size = min(SAMPLE_SIZE, n)
    size -= size % itemsize if itemsize else 0
    starts = {(n - size) * k // max(1, SAMPLES - 1) for k in range(SAMPLES)}
    samples = [raw[s - (s % itemsize if itemsize else 0) :][:size] for s in sorted(starts)]
    total = sum(p.nbytes for p in samples)
    plain = sum(len(compress(p, level)) for p in samples)
    best, best_size = Plan(0, (True,)), plain
    if itemsize:
        stored = [0] * itemsize
        packed = [0] * itemsize
        for p in samples:
            for j, lane in enumerate(shuffle(p, itemsize).reshape(itemsize, -1)):
                stored[j] += lane.nbytes
                packed[j] += len(compress(lane, level))
        worth = tuple(packed[j] <= WORTH_COMPRESSING * stored[j] for j in range(itemsize))
        lanes_size = sum(min(packed[j], stored[j]) for j in range(itemsize))
        if shuffle_option or (shuffle_option is None and lanes_size < plain):
            best, best_size = Plan(itemsize, worth), lanes_size
    if best_size > WORTH_COMPRESSING * total or not any(best.compress):
        return None
    return best


def decompress_into(payload: bytes, out: memoryview, where: str) -> None:
    """Decompress one zstd frame into ``out``, which it must fill exactly.

    Output beyond ``out`` is never produced: a frame that would decompress to
    more than its header says is refused, without allocating for it.
    """
    try:
        reader = _decompressor().stream_reader(payload)
        got = 0
        while got < out.nbytes:
            n = reader.readinto(out[got:])
            if not n:
                break
            got += n
        extra = reader.read(1)
    except zstandard.ZstdError as exc:
        raise CorruptStreamError(f"cannot decompress {where}: {exc}") from None
    if got != out.nbytes or extra:
        raise CorruptStreamError(
            f"{where} decompresses to {'more' if extra else got} bytes, "
            f"not the {out.nbytes} its header says"
        )
