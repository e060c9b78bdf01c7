"""Finding records without decoding them: the trailing index, a scan of frame
headers when the index is missing or damaged, and ``repair``, which writes a
scanned index back."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from . import format as fmt
from .errors import CorruptStreamError, StreamError, TruncatedStreamError
from .format import Kind
from .frames import FrameReader
from .io import FileSource, MmapSource, PathLike, open_source

SeekableSource = FileSource | MmapSource


def index_from_end(source: SeekableSource) -> fmt.Index | None:
    """The index that the stream's END frame points to; None if it has none.

    Reads only the END frame and the index. Raises a StreamError if either is
    damaged or missing (a writer that crashed).
    """
    frames = FrameReader(source)
    source.seek(0)
    size = source.remaining() or 0
    header = fmt.FRAME_HEADER.size
    if size < fmt.STREAM_HEADER.size + header:
        raise TruncatedStreamError(f"stream of {size} bytes has no END frame")
    end_at = size - header
    source.seek(end_at)
    end = frames.next_header()
    if end is None or end.kind is not Kind.END:
        raise CorruptStreamError(
            f"no END frame at offset {end_at}: the stream is not closed"
        )
    if end.raw_size == 0:
        return None
    at = end.raw_size
    if not fmt.STREAM_HEADER.size <= at <= end_at - header:
        raise CorruptStreamError(f"{end.where()} points to an index at {at}, out of range")
    source.seek(at)
    # Decoded without the "claims more than remains" limit: an index that does
    # not fit before END is a corrupt tail, not a cut input.
    h = fmt.decode_frame_header(frames.exact(header, "the INDEX frame header"), at, None)
    if h.kind is not Kind.INDEX or at + header + h.stored_size != end_at:
        raise CorruptStreamError(f"the frame at offset {at} is not the index END points to")
    index = fmt.Index.decode(frames.payload(h), h.where())
    if any(r.offset >= at for r in index.records) or any(b >= at for b in index.buffers):
        raise CorruptStreamError(f"offsets beyond the stream in {h.where()}")
    return index


@dataclass(frozen=True)
class Scan:
    """What one pass over the frame headers found."""

    index: fmt.Index  # the complete records and their buffers
    end: int  # offset just past the last complete record
    closed: bool  # the records are followed by the stream's INDEX or END
    problem: StreamError | None  # what stopped the scan early, if anything


def scan_index(source: SeekableSource) -> Scan:
    """Rebuild the index by reading frame headers only, seeking past payloads.

    Stops at the stream's tail, at the end of the input, or at the first bad
    frame; the records before that point are complete and listed.
    """
    frames = FrameReader(source)
    source.seek(0)
    frames.stream_header()
    records: list[fmt.RecordEntry] = []
    buffers: list[int] = []
    start, pending = source.position, []
    closed, problem = False, None
    try:
        while (h := frames.next_header()) is not None:
            if h.kind in (Kind.INDEX, Kind.END):
                closed = True
                break
            if h.kind is Kind.BUFFER:
                pending.append(h.offset)
            if h.kind is Kind.RECORD_END:
                records.append(fmt.RecordEntry(start, len(buffers), len(pending)))
                buffers += pending
                start, pending = source.position, []
            else:
                frames.skip(h.stored_size + h.check_table_size(), h.where())
    except StreamError as exc:
        problem = exc
    return Scan(fmt.Index(tuple(records), tuple(buffers)), start, closed, problem)


def read_index(file: Any) -> fmt.Index | None:
    """The index of a seekable stream, found from its END frame; None if the
    stream has none (it was written to a socket or a pipe).

    ``file`` is a path or a seekable binary file positioned at the stream's
    start. Raises CorruptStreamError if the END frame or the index is damaged.
    """
    source = open_source(file, None)
    try:
        if not source.seekable:
            raise ValueError("read_index needs a path or a seekable file")
        assert isinstance(source, FileSource)
        return index_from_end(source)
    finally:
        source.close()


def repair(path: PathLike) -> int:
    """Make a stream file whose writer crashed (or whose index is damaged)
    whole again: keep its complete records, cut what follows them, and write
    a fresh index and END frame. Returns the number of records kept.

    A file that is already whole is left as it is.
    """
    with open(path, "r+b") as f:
        source = FileSource(f)
        try:
            index = index_from_end(source)
            if index is not None:
                return len(index.records)
        except StreamError:
            pass
        scan = scan_index(source)
        f.seek(scan.end)
        f.truncate()
        f.write(fmt.encode_tail(scan.index, scan.end))
        f.flush()
        os.fsync(f.fileno())
    return len(scan.index.records)
