"""``streampickle convert`` of a stream: its records copied frame by frame,
never unpickled, in memory bounded by a few chunks whatever the buffers' sizes.

A buffer's BUFFER frame comes before the pickle that says what it is, so a
first pass (``Walker`` in "info" mode, which seeks past buffer payloads) checks
the stream's structure and learns each buffer's dtype from its record's
pickle. The second pass copies each record through ``Pickler.write_record``:
pickle bytes go to the frame writer, reframed and compressed anew, and each
buffer is fed to ``FrameWriter.write_streamed_buffer`` a block or a chunk at a
time as it is read and checked, shuffled by its dtype's item size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import codecs
from .format import Codec, Flag, FrameHeader, Kind
from .frames import decode_lanes, verify_chunks
from .pickler import Pickler
from .walk import Payload, Rec, Walker
from .writer import FrameWriter


def convert_stream(path: str, out: Pickler, progress: Callable[[int], None]) -> int:
    """Copy the records of the stream file ``path`` to ``out``; how many.
    ``progress`` is told how many input bytes are done, now and then."""
    walker = Walker(path, "info")
    try:
        walker.run()
        walker.progress = progress
        for rec in walker.records:
            walker.source.seek(rec.offset)
            out.write_record(functools.partial(copy_record, walker, rec))
            progress(walker.source.position)
    finally:
        walker.source.close()
    return len(walker.records)


def copy_record(walker: Walker, rec: Rec, writer: FrameWriter) -> None:
    """Hand the record ``rec``, at the walker's position, to ``writer``: its
    pickle bytes and its buffers in stream order, a buffer before the pickle
    bytes that take it as they were."""
    buffers = iter(rec.buffers)
    while (h := walker.header()).kind is not Kind.RECORD_END:
        if h.kind is Kind.PICKLE:
            writer.write(walker.frames.decoded_payload(h))
        elif h.kind is Kind.BUFFER:
            n, dtype = h.raw_size, next(buffers).dtype
            readonly = Flag.READONLY in h.flags
            pieces = buffer_pieces(walker, h)
            writer.write_streamed_buffer(pieces, n, readonly, shuffle_itemsize(dtype, n))
        else:  # a PAD, checked by the first pass: the writer aligns anew
            walker.frames.skip(h.stored_size, h.where())


def shuffle_itemsize(dtype: str | None, n: int) -> int:
    """The item size the Pickler would shuffle an ``n``-byte buffer by if it
    held an array of ``dtype`` (as ``walk`` labels it); 0 for no shuffle."""
    if dtype is None:
        return 0
    try:
        typed = np.empty(0, np.dtype(dtype)).data
    except Exception:  # a label from the stream, whatever it says: no dtype
        return 0
    itemsize = codecs.shuffle_itemsize(typed, None)
    return itemsize if itemsize and not n % itemsize else 0


def buffer_pieces(walker: Walker, h: FrameHeader) -> Iterator[Any]:
    """The bytes of the buffer whose BUFFER frame ``h`` was just read, each
    piece checked before it is handed on (a raw buffer's blocks against its
    check table once the table, which follows them, is read)."""
    if h.codec is Codec.NONE:
        sums = []
        for start in range(0, h.raw_size, h.param):
            chunk = Payload(walker, min(h.param, h.raw_size - start), h.where())
            while chunk.left:
                yield chunk.read()
            sums.append(chunk.check())
        if h.checked:
            table = walker.frames.exact(h.check_table_size(), f"check table of {h.where()}")
            verify_chunks(h, sums, table)
        return
    for start in range(0, h.raw_size, h.param):
        yield decoded_chunk(walker, min(h.param, h.raw_size - start))
        walker.progress(walker.source.position)


def decoded_chunk(walker: Walker, size: int) -> bytes | bytearray:
    """The next ``size``-byte chunk of a compressed buffer, from its CHUNK
    frame or frames (byte lanes), whose layout the first pass checked."""
    frames, c = walker.frames, walker.header()
    if Flag.SHUFFLE in c.flags:
        lanes = [(c, frames.payload(c))]
        for _ in range(1, c.param):
            lane = walker.header()
            lanes.append((lane, frames.payload(lane)))
        out = bytearray(size)
        decode_lanes(lanes, memoryview(out))
        return out
    if c.codec is Codec.NONE:
        return frames.payload(c)
    out = bytearray(size)
    codecs.decompress_into(frames.payload(c), memoryview(out), c.where())
    return out
