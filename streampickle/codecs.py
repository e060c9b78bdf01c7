"""Compression of one frame's payload: zstd, the byte-shuffle filter, and the
sampling that decides whether a buffer is worth compressing at all.

Everything here works on bytes and memoryviews; nothing knows of files.
zstd contexts are not thread-safe, so each thread keeps its own.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
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


def choose(
    raw: memoryview, itemsize: int, level: int, shuffle_option: bool | None
) -> int | None:
    """Decide how to store a buffer from a few samples, as dask does: None to
    store it raw, else the shuffle item size to compress with (0: none)."""
    n = raw.nbytes
    size = min(SAMPLE_SIZE, n)
    if itemsize:
        size -= size % itemsize
    starts = sorted({(n - size) * k // max(1, SAMPLES - 1) for k in range(SAMPLES)})
    if itemsize:
        starts = [s - s % itemsize for s in starts]
    samples = [raw[s : s + size] for s in starts]
    total = sum(p.nbytes for p in samples)
    plain = sum(len(compress(p, level)) for p in samples)
    shuffled = (
        sum(len(compress(shuffle(p, itemsize), level)) for p in samples)
        if itemsize
        else plain + 1
    )
    if shuffle_option is None and itemsize and plain <= shuffled:
        itemsize, best = 0, plain  # shuffling does not help these bytes
    else:
        best = shuffled if itemsize else plain
    return itemsize if best <= WORTH_COMPRESSING * total else None


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
