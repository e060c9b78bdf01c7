"""Compression of one frame's payload: zstd, the byte-shuffle filter, and the
sampling that decides whether a buffer is worth compressing at all.

Everything here works on bytes and memoryviews; nothing knows of files.
zstd contexts are not thread-safe, so each thread keeps its own.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
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
#: zstd settings for byte lanes, besides a plain level (``compress``'s key).
#: "entropy": a match finder that almost never finds a match (a 64-entry hash
#: table, 7-byte matches), so a lane is coded as Huffman literals in 128 KiB
#: blocks. For lanes of skewed but unrepeating bytes (a float's exponent byte,
#: the high byte of small random ints) it is 7-20% smaller than level 3, and
#: faster. "match4": level 1's fast strategy with 4-byte matches and a 512 KiB
#: window: the short repeats of a lane of slowly varying bytes (the high
#: mantissa bytes of a smooth series), which level 3's 5-byte matches miss.
LANE_PARAMS: dict[str, dict[str, int]] = {
    "entropy": dict(
        window_log=17,
        hash_log=6,
        chain_log=6,
        search_log=1,
        min_match=7,
        target_length=0,
        strategy=zstandard.STRATEGY_FAST,
    ),
    "match4": dict(
        window_log=19,
        hash_log=17,
        chain_log=16,
        search_log=1,
        min_match=4,
        target_length=0,
        strategy=zstandard.STRATEGY_FAST,
    ),
}
#: Levels whose lanes use "match4" instead (higher levels keep their own).
MATCH4_LEVELS = range(1, 4)
#: "entropy" is chosen for a lane when its samples shrink below this fraction
#: of the other setting's (small samples flatter it: their Huffman tables are
#: local).
ENTROPY_EDGE = 0.97

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


def _compressor(level: int | str) -> zstandard.ZstdCompressor:
    """This thread's compressor for a level or a LANE_PARAMS name."""
    cache: dict[int | str, zstandard.ZstdCompressor] = _local.__dict__.setdefault("c", {})
    if level not in cache:
        if isinstance(level, str):
            params = zstandard.ZstdCompressionParameters(**LANE_PARAMS[level])
            cache[level] = zstandard.ZstdCompressor(compression_params=params)
        else:
            cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "d"):
        _local.d = zstandard.ZstdDecompressor()
    return _local.d  # type: ignore[no-any-return]


#: Item sizes shuffled through words: byte j of a little-endian word is
#: ``(word >> 8j)`` cast to uint8, which numpy vectorises; k=8 goes as two
#: 4-byte halves (uint64 shifts are no faster than strided byte copies).
_WORDS: dict[int, np.dtype[Any]] = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
#: Items per block of the word shuffles: their temporaries stay in cache.
_BLOCK = 1 << 17


def scratch(name: str, nbytes: int) -> np.ndarray:
    """This thread's scratch memory called ``name``, at least ``nbytes``: fresh
    multi-MiB temporaries for every chunk cost page faults (more than the
    shuffle itself on some machines)."""
    if nbytes > RECYCLED_MAX_BYTES:  # kept, it would stay for the thread's life
        return np.empty(nbytes, dtype=np.uint8)
    kept: dict[str, np.ndarray] = _local.__dict__.setdefault("scratch", {})
    buf = kept.get(name)
    if buf is None or buf.nbytes < nbytes:
        buf = kept[name] = np.empty(nbytes, dtype=np.uint8)
    return buf[:nbytes]


#: Arrays ``recycled`` keeps per thread for reuse (a thread's chunks in
#: flight and the one it makes), and the largest it, or ``scratch``, keeps:
#: they stay allocated while the thread lives.
RECYCLED_PER_THREAD, RECYCLED_MAX_BYTES = 3, 16 << 20


def recycled(nbytes: int) -> np.ndarray:
    """A uint8 array of ``nbytes`` for output that outlives the call (a
    shuffled chunk, written later by another thread): one this thread made
    before and that nothing references any more, else a new one. Fresh
    multi-MiB arrays per chunk cost page faults on every chunk (twice the
    system time of a compressed dump on 2 threads)."""
    kept: list[np.ndarray] = _local.__dict__.setdefault("recycled", [])
    unused = None  # a free array of another size, to replace
    for i in range(len(kept)):
        # Free if only the list (and getrefcount's argument) refer to it; a
        # view of it may otherwise still be waiting to be written.
        if sys.getrefcount(kept[i]) == 2:
            if kept[i].nbytes == nbytes:
                return kept[i]
            unused = i
    arr = np.empty(nbytes, dtype=np.uint8)
    if nbytes <= RECYCLED_MAX_BYTES:
        if len(kept) < RECYCLED_PER_THREAD:
            kept.append(arr)
        elif unused is not None:
            kept[unused] = arr
    return arr


def _shuffle_words(words: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    """Byte lanes of ``words`` (uint16 or uint32) into the rows of ``out``."""
    out[0] = words  # the cast keeps the low byte
    for j in range(1, len(out)):
        np.right_shift(words, 8 * j, out=tmp)
        out[j] = tmp


def shuffle(data: Any, itemsize: int) -> np.ndarray:
    """Group byte j of every item together: for ``m`` items,
    ``out[j*m + i] = data[i*itemsize + j]``.

    >>> bytes(shuffle(b"abcABC", 3)), bytes(shuffle(b"abAB", 2))
    (b'aAbBcC', b'aAbB')
    >>> bytes(shuffle(b"abcdABCD", 4)), bytes(shuffle(b"abcdefghABCDEFGH", 8))
    (b'aAbBcCdD', b'aAbBcCdDeEfFgGhH')
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    m = raw.size // itemsize
    out = recycled(itemsize * m).reshape(itemsize, m)
    if m and (itemsize in _WORDS or itemsize == 8):
        dtype = _WORDS.get(itemsize, _WORDS[4])
        size = min(m, _BLOCK) * dtype.itemsize
        tmp = scratch("shuffle", 2 * size)
        words = raw.view(dtype).reshape(m, -1)  # one column, or k=8: two halves
        for s in range(0, m, _BLOCK):
            block = words[s : s + _BLOCK]
            n = len(block)
            t = tmp[: n * dtype.itemsize].view(dtype)
            if itemsize != 8:
                _shuffle_words(block[:, 0], out[:, s : s + n], t)
                continue
            half = tmp[size : size + n * 4].view(dtype)
            for h in (0, 1):
                half[...] = block[:, h]
                _shuffle_words(half, out[4 * h : 4 * h + 4, s : s + n], t)
    else:
        items = raw.reshape(-1, itemsize)
        for j in range(itemsize):  # one strided copy per byte lane: ~4x a transpose
            out[j] = items[:, j]
    return out.reshape(-1)


def unshuffle_into(lanes: Sequence[Any], out: Any) -> None:
    """Undo ``shuffle``: byte lane j of ``lanes`` (one bytes-like each, of
    one byte per item) becomes byte j of every item of ``out``."""
    k = len(lanes)
    rows = [np.frombuffer(lane, dtype=np.uint8) for lane in lanes]
    if k in _WORDS:  # or each lane, shifted into place, into the words
        dtype = _WORDS[k]
        words = np.frombuffer(out, dtype=dtype)
        m = len(words)
        tmp = scratch("unshuffle", min(m, _BLOCK) * k).view(dtype)
        for s in range(0, m, _BLOCK):
            w = words[s : s + _BLOCK]
            t = tmp[: len(w)]
            w[...] = rows[0][s : s + _BLOCK]
            for j in range(1, k):
                t[...] = rows[j][s : s + _BLOCK]
                np.left_shift(t, 8 * j, out=t)
                np.bitwise_or(w, t, out=w)
        return
    items = np.frombuffer(out, dtype=np.uint8).reshape(-1, k)
    for j in range(k):  # one strided copy per lane (words of 8 are no faster)
        items[:, j] = rows[j]


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


def compress(data: Any, level: int | str) -> bytes:
    return _compressor(level).compress(data)


@dataclass(frozen=True)
class Plan:
    """How to store a buffer's chunks: byte-shuffled by ``itemsize`` (0: not)
    and, per byte lane (a single entry when not shuffled), the zstd setting to
    try (a level or a LANE_PARAMS name), or None to store the lane raw. Random
    float mantissas fill whole lanes that never shrink: storing those raw saves
    most of the compression time."""

    itemsize: int
    compress: tuple[int | str | None, ...]


def lane_settings(level: int) -> tuple[int | str, str]:
    """The two zstd settings a byte lane may get at ``level``: one that finds
    matches, and "entropy"."""
    return ("match4" if level in MATCH4_LEVELS else level), "entropy"


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
    best, best_size = Plan(0, (level,)), plain
    if itemsize:
        settings = lane_settings(level)
        # packed[setting][j]: lane j of each sample, compressed with setting
        packed: dict[int | str, list[list[int]]] = {
            key: [[] for _ in range(itemsize)] for key in settings
        }
        for p in samples:
            for j, lane in enumerate(shuffle(p, itemsize).reshape(itemsize, -1)):
                for key in settings:
                    packed[key][j].append(len(compress(lane, key)))
        lane_bytes = size // itemsize  # of one sample
        choice: list[int | str | None] = []
        lanes_size = 0
        for j in range(itemsize):
            match, entropy = (packed[key][j] for key in settings)
            key = settings[1] if sum(entropy) < ENTROPY_EDGE * sum(match) else settings[0]
            sizes = packed[key][j]
            # Worth trying if one sample shrinks, not only their total: a
            # smooth series' mantissa bytes repeat only where it moves slowly.
            worth = any(k <= WORTH_COMPRESSING * lane_bytes for k in sizes)
            choice.append(key if worth else None)
            lanes_size += min(sum(sizes), lane_bytes * len(samples))
        if shuffle_option or (shuffle_option is None and lanes_size < plain):
            best, best_size = Plan(itemsize, tuple(choice)), lanes_size
    if best_size > WORTH_COMPRESSING * total or all(c is None for c in best.compress):
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
