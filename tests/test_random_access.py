"""Random access through the index, index rebuilding, repair and append."""

from __future__ import annotations

import io
import os
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streampickle as sp


def write_records(path: Path, n: int, start: int = 0, **kw: Any) -> None:
    with sp.Pickler(path, **kw) as p:
        for i in range(start, start + n):
            p.dump({"i": i, "a": np.full(2000 + i, i, dtype=np.int32)})


def check_record(rec: Any, i: int) -> None:
    assert rec["i"] == i and rec["a"].shape == (2000 + i,) and (rec["a"] == i).all()


def socket_written(n: int) -> bytes:
    """A stream as a socket receives it: no index."""
    a, b = socket.socketpair()
    out = bytearray()

    def drain() -> None:
        for chunk in iter(lambda: b.recv(1 << 16), b""):
            out.extend(chunk)

    t = threading.Thread(target=drain)
    t.start()
    with sp.Pickler(a) as p:
        for i in range(n):
            p.dump({"i": i, "a": np.full(2000 + i, i, dtype=np.int32)})
    a.close()
    t.join()
    b.close()
    return bytes(out)


class TestRandomAccess:
    @pytest.mark.parametrize("mmap_mode", [None, "r"])
    def test_len_and_indexing_read_any_record(self, tmp_path: Path, mmap_mode: Any) -> None:
        path = tmp_path / "r.sp"
        write_records(path, 10)
        with sp.Unpickler(path, mmap_mode=mmap_mode) as u:
            assert len(u) == 10
            for i in (0, 5, 9, -1, -10):
                check_record(u[i], i % 10)

    def test_out_of_range_index_raises_index_error(self, tmp_path: Path) -> None:
        path = tmp_path / "r.sp"
        write_records(path, 3)
        with sp.Unpickler(path) as u:
            with pytest.raises(IndexError, match="3"):
                u[3]
            with pytest.raises(IndexError):
                u[-4]

    def test_indexing_does_not_disturb_iteration(self, tmp_path: Path) -> None:
        path = tmp_path / "r.sp"
        write_records(path, 5)
        with sp.Unpickler(path) as u:
            check_record(u.load(), 0)
            check_record(u[4], 4)
            check_record(u.load(), 1)

    def test_bytesio_supports_random_access(self) -> None:
        bio = io.BytesIO()
        with sp.Pickler(bio) as p:
            for i in range(4):
                p.dump(i)
        bio.seek(0)
        u = sp.Unpickler(bio)
        assert len(u) == 4 and u[2] == 2 and u[-1] == 3

    def test_socket_has_no_random_access(self) -> None:
        a, b = socket.socketpair()
        with sp.Unpickler(b) as u:
            with pytest.raises(TypeError, match="seekable"):
                len(u)
        a.close()
        b.close()

    @pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/self/io")
    def test_reading_the_last_record_of_a_large_file_reads_little(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "big.sp"
        block = np.ones(1 << 20, dtype=np.uint8)
        with sp.Pickler(path) as p:
            for i in range(1024):  # 1 GiB of records before the last one
                p.dump({"i": i, "block": block})
            p.dump({"last": True})

        def rchar() -> int:
            with open("/proc/self/io") as f:
                return int(next(line for line in f if line.startswith("rchar")).split()[1])

        before = rchar()
        with sp.Unpickler(path) as u:
            assert u[-1] == {"last": True}
        read = rchar() - before
        assert read < 1 << 20, f"read {read} bytes to load the last record"


class TestIndexRebuild:
    def test_stream_without_index_is_indexed_by_a_scan(self, tmp_path: Path) -> None:
        path = tmp_path / "s.sp"
        path.write_bytes(socket_written(6))
        assert sp.read_index(path) is None
        with sp.Unpickler(path) as u:
            assert len(u) == 6
            check_record(u[3], 3)

    def test_damaged_index_falls_back_to_a_scan(self, tmp_path: Path) -> None:
        path = tmp_path / "d.sp"
        write_records(path, 6)
        data = bytearray(path.read_bytes())
        data[-40] ^= 0xFF  # inside the INDEX payload
        path.write_bytes(bytes(data))
        with pytest.raises(sp.CorruptStreamError):
            sp.read_index(path)
        with sp.Unpickler(path) as u:
            assert len(u) == 6
            check_record(u[-1], 5)
        with sp.Unpickler(path) as u:  # front to back, the index is not needed
            for i, rec in enumerate(u):
                check_record(rec, i)

    @pytest.mark.parametrize("cut", [1, 100, 5000])
    def test_crashed_writer_keeps_its_complete_records(
        self, tmp_path: Path, cut: int
    ) -> None:
        path = tmp_path / "c.sp"
        write_records(path, 5)
        tail = sp.read_index(path)
        assert tail is not None
        last_record = tail.records[-1].offset
        data = path.read_bytes()
        path.write_bytes(data[: last_record + cut])  # cut inside record 4
        with sp.Unpickler(path) as u:
            assert len(u) == 4
            check_record(u[-1], 3)
        with sp.Unpickler(path) as u:
            for i in range(4):
                check_record(u.load(), i)
            with pytest.raises(sp.TruncatedStreamError):
                u.load()


class TestRepair:
    def test_repair_makes_a_crashed_file_whole(self, tmp_path: Path) -> None:
        path = tmp_path / "c.sp"
        write_records(path, 5)
        index = sp.read_index(path)
        assert index is not None
        data = path.read_bytes()
        path.write_bytes(data[: index.records[-1].offset + 77])
        assert sp.repair(path) == 4
        repaired = sp.read_index(path)
        assert repaired is not None and repaired.records == index.records[:4]
        with sp.Unpickler(path) as u:
            assert [r["i"] for r in u] == [0, 1, 2, 3]  # ends cleanly: EOF, no error

    def test_repair_leaves_a_whole_file_unchanged(self, tmp_path: Path) -> None:
        path = tmp_path / "w.sp"
        write_records(path, 3)
        before = path.read_bytes()
        assert sp.repair(path) == 3
        assert path.read_bytes() == before

    def test_repair_rewrites_a_damaged_index(self, tmp_path: Path) -> None:
        path = tmp_path / "d.sp"
        write_records(path, 3)
        good = sp.read_index(path)
        data = bytearray(path.read_bytes())
        data[-40] ^= 0x01
        path.write_bytes(bytes(data))
        assert sp.repair(path) == 3
        assert sp.read_index(path) == good


class TestAppend:
    def test_append_adds_records_and_a_complete_index(self, tmp_path: Path) -> None:
        path = tmp_path / "a.sp"
        write_records(path, 3)
        write_records(path, 2, start=3, append=True)
        index = sp.read_index(path)
        assert index is not None and len(index.records) == 5
        with sp.Unpickler(path) as u:
            for i, rec in enumerate(u):
                check_record(rec, i)
            assert len(u) == 5
            check_record(u[4], 4)

    def test_append_to_a_missing_file_creates_it(self, tmp_path: Path) -> None:
        path = tmp_path / "new.sp"
        write_records(path, 2, append=True)
        with sp.Unpickler(path) as u:
            assert len(u) == 2

    def test_append_after_a_crash_drops_the_cut_record(self, tmp_path: Path) -> None:
        path = tmp_path / "c.sp"
        write_records(path, 3)
        index = sp.read_index(path)
        assert index is not None
        path.write_bytes(path.read_bytes()[: index.records[-1].offset + 50])
        write_records(path, 1, start=2, append=True)
        with sp.Unpickler(path) as u:
            for i, rec in enumerate(u):
                check_record(rec, i)
            assert len(u) == 3

    def test_crash_while_appending_keeps_the_earlier_records(self, tmp_path: Path) -> None:
        path = tmp_path / "a.sp"
        write_records(path, 3)
        p = sp.Pickler(path, append=True)
        p.dump({"i": 3, "a": np.full(2003, 3, dtype=np.int32)})
        p._sink.file.flush()  # what reached the disk when the process died
        data = path.read_bytes()
        p._fail()
        path.write_bytes(data)
        with sp.Unpickler(path) as u:
            assert len(u) == 4  # the scan finds old and new complete records
            for i in range(4):
                check_record(u.load(), i)
            with pytest.raises(sp.TruncatedStreamError):
                u.load()

    def test_append_refuses_a_file_damaged_before_its_end(self, tmp_path: Path) -> None:
        path = tmp_path / "d.sp"
        write_records(path, 4)
        index = sp.read_index(path)
        assert index is not None
        data = bytearray(path.read_bytes())
        data[index.records[1].offset + 3] ^= 0xFF  # a frame header in record 1
        path.write_bytes(bytes(data))
        with pytest.raises(sp.CorruptStreamError):
            sp.Pickler(path, append=True)
        assert path.read_bytes() == bytes(data)

    def test_append_needs_a_path(self) -> None:
        with pytest.raises(ValueError, match="path"):
            sp.Pickler(io.BytesIO(), append=True)
