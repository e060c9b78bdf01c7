"""Where streams go and come from: paths, file objects, pipes, sockets, maps."""

from __future__ import annotations

import io
import os
import pickle
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streampickle as sp

OBJ = {"w": np.arange(200_000, dtype=np.float32), "meta": {"step": 7, "name": "run"}}


def same(a: Any, b: Any) -> None:
    assert a["meta"] == b["meta"]
    np.testing.assert_array_equal(a["w"], b["w"])


class TestPaths:
    def test_dump_to_path_and_load_round_trip(self, tmp_path: Path) -> None:
        path = tmp_path / "ckpt.sp"
        sp.dump(OBJ, path)
        same(sp.load(path), OBJ)
        same(sp.load(str(path)), OBJ)

    def test_dump_to_path_leaves_no_temp_file(self, tmp_path: Path) -> None:
        sp.dump(OBJ, tmp_path / "ckpt.sp")
        assert os.listdir(tmp_path) == ["ckpt.sp"]

    def test_failed_dump_keeps_the_old_file_and_leaves_no_temp(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "ckpt.sp"
        sp.dump("old", path)
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            sp.dump({"a": np.zeros(100_000), "bad": lambda: 0}, path)
        assert sp.load(path) == "old"
        assert os.listdir(tmp_path) == ["ckpt.sp"]

    def test_exception_inside_pickler_block_keeps_the_old_file(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "ckpt.sp"
        sp.dump("old", path)
        with pytest.raises(RuntimeError):
            with sp.Pickler(path) as p:
                p.dump("new")
                raise RuntimeError("crash")
        assert sp.load(path) == "old"

    def test_path_is_not_replaced_before_close(self, tmp_path: Path) -> None:
        path = tmp_path / "ckpt.sp"
        sp.dump("old", path)
        p = sp.Pickler(path)
        p.dump("new")
        assert sp.load(path) == "old"
        p.close()
        assert sp.load(path) == "new"

    def test_pickler_cannot_dump_after_close(self, tmp_path: Path) -> None:
        p = sp.Pickler(tmp_path / "x.sp")
        p.close()
        with pytest.raises(ValueError, match="closed"):
            p.dump(1)

    def test_load_of_missing_file_raises_file_not_found(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            sp.load(tmp_path / "missing.sp")

    def test_empty_file_raises_eof_error(self, tmp_path: Path) -> None:
        (tmp_path / "empty").write_bytes(b"")
        with pytest.raises(EOFError):
            sp.load(tmp_path / "empty")


class TestFileObjects:
    def test_bytesio_round_trip(self) -> None:
        bio = io.BytesIO()
        sp.dump(OBJ, bio)
        bio.seek(0)
        same(sp.load(bio), OBJ)

    def test_streams_back_to_back_in_one_file_load_in_turn(self, tmp_path: Path) -> None:
        path = tmp_path / "many"
        with open(path, "wb") as f:
            for i in range(3):
                sp.dump({"i": i, "a": np.full(5000, i)}, f)
        with open(path, "rb") as f:
            for i in range(3):
                assert sp.load(f)["i"] == i
            assert f.read() == b""

    def test_stream_after_other_data_keeps_its_alignment(self, tmp_path: Path) -> None:
        path = tmp_path / "offset"
        with open(path, "wb") as f:
            f.write(b"preamble!")
            sp.dump(np.arange(10_000.0), f)
        with open(path, "rb") as f:
            assert f.read(9) == b"preamble!"
            a = sp.load(f, mmap_mode="r")
        assert a.ctypes.data % 64 == 0
        np.testing.assert_array_equal(a, np.arange(10_000.0))

    def test_unbuffered_file_objects_work(self, tmp_path: Path) -> None:
        path = tmp_path / "raw"
        with open(path, "wb", buffering=0) as f:
            sp.dump(OBJ, f)
        with open(path, "rb", buffering=0) as f:
            same(sp.load(f), OBJ)

    def test_wrong_file_types_raise_type_error(self) -> None:
        with pytest.raises(TypeError, match="cannot write"):
            sp.dump(1, 42)
        with pytest.raises(TypeError, match="cannot read"):
            sp.load(42)


class TestMemoryMap:
    @pytest.mark.parametrize("mode", ["r", "c"])
    def test_mmap_load_gives_aligned_views(self, tmp_path: Path, mode: str) -> None:
        path = tmp_path / "m.sp"
        sp.dump({"a": np.arange(100_000.0), "b": np.ones((300, 7), order="F")}, path)
        out = sp.load(path, mmap_mode=mode)
        np.testing.assert_array_equal(out["a"], np.arange(100_000.0))
        assert out["b"].flags.f_contiguous and out["b"].sum() == 2100
        assert not out["a"].flags.owndata and out["a"].ctypes.data % 64 == 0
        assert out["a"].flags.writeable == (mode == "c")

    def test_copy_on_write_map_does_not_change_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "m.sp"
        sp.dump(np.zeros(10_000), path)
        a = sp.load(path, mmap_mode="c")
        a[:] = 5
        assert sp.load(path).sum() == 0

    def test_read_only_map_refuses_writes(self, tmp_path: Path) -> None:
        path = tmp_path / "m.sp"
        sp.dump(np.zeros(10_000), path)
        a = sp.load(path, mmap_mode="r")
        with pytest.raises(ValueError):
            a[0] = 1

    @pytest.mark.parametrize("mode", ["r+", "w", 1])
    def test_bad_mmap_mode_is_a_value_error(self, tmp_path: Path, mode: Any) -> None:
        path = tmp_path / "m.sp"
        sp.dump(1, path)
        with pytest.raises(ValueError, match="mmap_mode"):
            sp.load(path, mmap_mode=mode)

    def test_mmap_of_bytesio_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="mmap_mode"):
            sp.load(io.BytesIO(sp.dumps(1)), mmap_mode="r")


#: The Nagle handling of TCP sockets tested here is Linux's (elsewhere a TCP
#: socket simply gets TCP_NODELAY).
LINUX_PUSH = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="TCP pushes are Linux-only"
)


class _NodelayLog(socket.socket):
    """A socket that records the TCP_NODELAY and SO_SNDBUF values set on it,
    and in ``events`` the first and the size of every send, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nodelay_calls: list[int] = []
        self.sndbuf_calls: list[int] = []
        self.events: list[tuple[str, int]] = []

    def setsockopt(self, level: int, option: int, value: Any, *rest: Any) -> None:
        if (level, option) == (socket.IPPROTO_TCP, socket.TCP_NODELAY):
            self.nodelay_calls.append(value)
            self.events.append(("nodelay", value))
        if (level, option) == (socket.SOL_SOCKET, socket.SO_SNDBUF):
            self.sndbuf_calls.append(value)
        super().setsockopt(level, option, value, *rest)

    def sendall(self, data: Any, *rest: Any) -> None:
        self.events.append(("send", memoryview(data).nbytes))
        super().sendall(data, *rest)

    def sendmsg(self, buffers: Any, *rest: Any) -> int:
        sent = super().sendmsg(buffers, *rest)
        self.events.append(("send", sent))
        return sent


class TestSocketsAndPipes:
    def test_socketpair_records_back_to_back_are_read_by_separate_readers(self) -> None:
        a, b = socket.socketpair()
        msgs = [{"i": i, "arr": np.full(50_000, i, dtype=np.int64)} for i in range(4)]

        def send() -> None:
            for m in msgs:
                sp.dump(m, a)
            a.close()

        t = threading.Thread(target=send)
        t.start()
        for m in msgs:
            got = sp.load(b)  # a new reader each time: none may over-read
            assert got["i"] == m["i"] and (got["arr"] == m["i"]).all()
        t.join()
        assert b.recv(1) == b""  # nothing left over, nothing lost
        b.close()

    @pytest.mark.parametrize("transport", ["pair", "tcp"])
    def test_a_socket_class_that_wraps_a_c_socket_is_written_to(
        self, transport: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """gevent's patched socket.socket wraps a C socket instead of being
        one: the C socket's fields cannot be read from it directly."""

        class WrappedSocket:
            def __init__(self, sock: socket.socket) -> None:
                self._sock = sock

            def __getattr__(self, name: str) -> Any:
                return getattr(self._sock, name)

        if transport == "pair":
            a, b = socket.socketpair()
        else:
            with socket.create_server(("127.0.0.1", 0)) as listener:
                a = socket.create_connection(listener.getsockname())
                b, _ = listener.accept()
        wrapped = WrappedSocket(a)
        monkeypatch.setattr(socket, "socket", WrappedSocket)
        sp.dump({"x": np.arange(1000)}, wrapped)  # fits in the socket buffer
        monkeypatch.undo()
        a.close()
        with b:
            assert (sp.load(b)["x"] == np.arange(1000)).all()

    def test_pickler_on_a_socket_streams_records_as_dumped(self) -> None:
        a, b = socket.socketpair()
        p = sp.Pickler(a)
        u = sp.Unpickler(b)
        for i in range(3):  # the reader gets each record before the writer closes
            p.dump([i, np.arange(10_000) * i])
            got = u.load()
            assert got[0] == i and got[1][-1] == 9999 * i
        p.close()
        with pytest.raises(EOFError):
            u.load()
        a.close()
        b.close()

    def test_headers_go_out_with_the_data_after_them(self) -> None:
        """On a socket, small gathered frames are sent in one sendmsg with the
        large payload that follows, and a partial sendmsg is finished."""

        class TrickleSocket(socket.socket):
            calls: list[int] = []

            def sendmsg(self, buffers: Any, *args: Any) -> int:  # type: ignore[override]
                sizes = [memoryview(b).nbytes for b in buffers]
                self.calls.append(len(sizes))
                return super().sendmsg([bytes(memoryview(buffers[0])[:1000])])

        a, b = socket.socketpair()
        trickle = TrickleSocket(a.family, a.type, fileno=a.detach())
        obj = {"x": np.arange(300_000), "y": np.arange(200_000) * 2.0}
        t = threading.Thread(target=lambda: (sp.dump(obj, trickle), trickle.close()))
        t.start()
        got = sp.load(b)
        t.join()
        np.testing.assert_array_equal(got["x"], obj["x"])
        np.testing.assert_array_equal(got["y"], obj["y"])
        assert TrickleSocket.calls and TrickleSocket.calls[0] == 2  # headers + data
        assert b.recv(1) == b""
        b.close()

    def test_a_small_message_is_one_write(self) -> None:
        """An uncompressed record without buffers reaches an unbuffered pipe as
        one write (its PICKLE frame and RECORD_END together), checked or not."""

        class CountingPipe(io.RawIOBase):
            def __init__(self, fd: int) -> None:
                self.fd, self.writes = fd, 0

            def writable(self) -> bool:
                return True

            def write(self, data: Any) -> int:
                self.writes += 1
                return os.write(self.fd, data)

        for options in ({}, {"checksum": False}):
            r, w = os.pipe()
            pipe = CountingPipe(w)
            p = sp.Pickler(pipe, **options)
            with open(r, "rb", buffering=0) as received:
                u = sp.Unpickler(received)
                for i in range(3):
                    pipe.writes = 0
                    p.dump({"id": i, "text": "x" * 500})
                    assert pipe.writes == 1
                    assert u.load() == {"id": i, "text": "x" * 500}
                p.close()
            os.close(w)

    def test_sp_dump_of_a_small_message_is_one_send(self) -> None:
        """Stream header, record and END go out together: the record is not
        sent on its own first, since the END follows it at once."""

        class CountingSocket(socket.socket):
            sends = 0

            def sendall(self, data: Any, *args: Any) -> None:  # type: ignore[override]
                CountingSocket.sends += 1
                super().sendall(data, *args)

        a, b = socket.socketpair()
        sender = CountingSocket(a.family, a.type, fileno=a.detach())
        for i in range(3):
            CountingSocket.sends = 0
            sp.dump({"id": i}, sender)
            assert CountingSocket.sends == 1
            assert sp.load(b) == {"id": i}
        sender.close()
        b.close()

    def test_a_socket_without_a_working_sendmsg_gets_sendall(self) -> None:
        """ssl.SSLSocket has a sendmsg that raises NotImplementedError."""

        class NoSendmsg(socket.socket):
            def sendmsg(self, *args: Any) -> int:  # type: ignore[override]
                raise NotImplementedError

        a, b = socket.socketpair()
        sender = NoSendmsg(a.family, a.type, fileno=a.detach())
        t = threading.Thread(target=lambda: (sp.dump({"x": np.arange(100_000.0)}, sender)))
        t.start()
        assert sp.load(b)["x"][-1] == 99_999.0
        t.join()
        sender.close()
        b.close()

    def test_a_dead_peer_surfaces_as_the_socket_error(self) -> None:
        """Not as a BufferError from clearing a buffer the failed send still views."""
        a, b = socket.socketpair()
        b.close()
        with pytest.raises(OSError) as caught:
            sp.dump({"x": np.arange(100_000.0)}, a)
        assert not isinstance(caught.value, BufferError)
        a.close()

    @staticmethod
    def _tcp_pair(nodelay: bool = False) -> tuple[_NodelayLog, socket.socket]:
        listener = socket.create_server(("127.0.0.1", 0))
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
        listener.close()
        if nodelay:
            a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _NodelayLog(a.family, a.type, a.proto, fileno=a.detach()), b

    def test_a_unix_socket_sends_a_records_large_data_through_a_wide_buffer(
        self,
    ) -> None:
        """The kernel's default send buffer makes the sender wait on the
        receiver every few hundred KiB: widened for each record's large
        writes, then set back; a record of small writes leaves it alone."""
        pair = socket.socketpair()
        a = _NodelayLog(pair[0].family, pair[0].type, fileno=pair[0].detach())
        b = pair[1]
        own = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        big = {"x": np.arange(1 << 20)}  # 8 MiB

        def send() -> None:
            with sp.Pickler(a) as p:
                p.dump(big)
                p.dump({"small": 1})
                p.dump(big)

        with a, b:
            t = threading.Thread(target=send)
            t.start()
            with sp.Unpickler(b) as u:
                got = list(u)
            t.join()
            assert [sorted(r) for r in got] == [["x"], ["small"], ["x"]]
            np.testing.assert_array_equal(got[2]["x"], big["x"])
            wide = sp.io.SocketSink.WIDE_SEND_BUFFER
            assert a.sndbuf_calls == [wide, own // 2] * 2
            assert a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == own

    def test_a_tcp_socket_keeps_its_own_send_buffer(self) -> None:
        """Setting it would end TCP's own tuning of it for good."""
        a, b = self._tcp_pair()
        with a, b:
            t = threading.Thread(target=lambda: sp.dump({"x": np.arange(1 << 20)}, a))
            t.start()
            sp.load(b)
            t.join()
            assert a.sndbuf_calls == []

    @LINUX_PUSH
    def test_small_records_over_tcp_keep_nagle_and_are_never_pushed(self) -> None:
        """A stream of small messages shares packets, as with Nagle's
        algorithm everywhere else (one packet each cost a third of the rate)."""
        a, b = self._tcp_pair()
        with a, b:
            with sp.Pickler(a) as p:
                for i in range(100):
                    p.dump({"i": i, "s": "x" * 500})
            assert [r["i"] for r in sp.Unpickler(b)] == list(range(100))
            assert a.nodelay_calls == []
            assert not a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    @LINUX_PUSH
    def test_large_sends_over_tcp_are_pushed_out_at_once(self) -> None:
        """Nagle's algorithm would hold each large send's last packet until a
        delayed acknowledgement (1 GiB over loopback: 2.3 s instead of 0.33 s):
        every large send, and the end of its record, is pushed (TCP_NODELAY
        set, which flushes, then cleared)."""
        a, b = self._tcp_pair()
        obj = {"x": np.arange(1 << 20)}  # 8 MiB: two 4 MiB chunks
        with a, b:
            t = threading.Thread(target=lambda: sp.dump(obj, a, frame_size=4 << 20))
            t.start()
            np.testing.assert_array_equal(sp.load(b)["x"], obj["x"])
            t.join()
            pushes = len(a.nodelay_calls) // 2
            assert a.nodelay_calls == [1, 0] * pushes
            assert pushes == 3  # two chunks and the record's end
            assert not a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    @LINUX_PUSH
    @pytest.mark.parametrize(
        "obj",
        [
            {"big": np.zeros(1 << 15), "smalls": [np.zeros(512) for _ in range(40)]},
            {"smalls": [np.zeros(256) for _ in range(60)]},  # small writes only
        ],
        ids=["large-then-small", "small-writes-past-64KiB"],
    )
    def test_a_record_that_sent_64_kib_or_more_ends_with_a_push(self, obj: Any) -> None:
        """Its last small packet must not wait for the peer's delayed ACK."""
        a, b = self._tcp_pair()
        with a, b:
            t = threading.Thread(target=lambda: sp.Pickler(a).dump(obj))
            t.start()
            got = sp.Unpickler(b).load()
            t.join()
            assert len(got["smalls"]) == len(obj["smalls"])
            sends = [n for event, n in a.events if event == "send"]
            assert sum(sends) >= 1 << 16
            assert a.events[-2:] == [("nodelay", 1), ("nodelay", 0)]
            assert not a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    @LINUX_PUSH
    def test_nodelay_set_by_the_owner_after_the_pickler_is_made_is_kept(self) -> None:
        a, b = self._tcp_pair()
        with a, b:
            p = sp.Pickler(a)
            a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=lambda: p.dump({"x": np.arange(1 << 18)}))
            t.start()
            assert sp.Unpickler(b).load()["x"][-1] == (1 << 18) - 1
            t.join()
            assert a.nodelay_calls == [1]  # the owner's call only
            assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    def test_a_tcp_socket_with_nodelay_set_is_left_as_it_is(self) -> None:
        a, b = self._tcp_pair(nodelay=True)
        with a, b:
            t = threading.Thread(target=lambda: sp.dump({"x": np.arange(1 << 18)}, a))
            t.start()
            assert sp.load(b)["x"][-1] == (1 << 18) - 1
            t.join()
            assert a.nodelay_calls == []
            assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    def test_peer_closing_mid_record_raises_truncated(self) -> None:
        data = sp.dumps({"a": np.arange(100_000)})
        a, b = socket.socketpair()
        t = threading.Thread(target=lambda: (a.sendall(data[: len(data) // 2]), a.close()))
        t.start()
        with pytest.raises(sp.TruncatedStreamError, match="offset"):
            sp.load(b)
        t.join()
        b.close()

    def test_pipe_to_a_subprocess_child(self, tmp_path: Path) -> None:
        child = (
            "import sys, numpy as np, streampickle as sp\n"
            "u = sp.Unpickler(sys.stdin.buffer)\n"
            "print(sum(int(r['a'].sum()) for r in u))\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert proc.stdin is not None
        with sp.Pickler(proc.stdin) as p:
            for i in range(5):
                p.dump({"a": np.full(100_000, i)})
        out, _ = proc.communicate(timeout=60)  # closes the child's stdin
        assert int(out) == 100_000 * sum(range(5))

    def test_os_pipe_round_trip(self) -> None:
        r, w = os.pipe()
        with open(r, "rb") as fr, open(w, "wb") as fw:
            t = threading.Thread(target=lambda: (sp.dump(OBJ, fw), fw.close()))
            t.start()
            same(sp.load(fr), OBJ)
            t.join()


class TestSafeMode:
    def test_plain_data_and_arrays_load_in_safe_mode(self) -> None:
        obj = {
            "a": np.arange(5000.0),
            "s": {1, 2},
            "f": frozenset([3]),
            "c": 1 + 2j,
            "r": range(3),
            "sl": slice(1, 2),
            "ba": bytearray(b"x"),
            "o": np.array([1, "x"], dtype=object),
            "st": np.zeros(3, dtype=[("a", "i4")]),
            "sc": np.float64(2.5),
            "dt": np.dtype("f4"),
        }
        out = sp.loads(sp.dumps(obj), safe=True)
        assert out["s"] == {1, 2} and out["c"] == 1 + 2j and out["sc"] == 2.5
        np.testing.assert_array_equal(out["a"], obj["a"])

    def test_other_globals_are_forbidden_before_they_are_called(self) -> None:
        data = sp.dumps(os.system)  # would run a shell command if called
        with pytest.raises(sp.ForbiddenGlobalError, match="posix.system"):
            sp.loads(data, safe=True)

    def test_forbidden_global_error_is_a_stream_error(self) -> None:
        assert issubclass(sp.ForbiddenGlobalError, sp.StreamError)
        assert issubclass(sp.StreamError, pickle.UnpicklingError)

    def test_allow_lets_named_globals_through(self) -> None:
        from collections import OrderedDict

        data = sp.dumps(OrderedDict(a=1))
        with pytest.raises(sp.ForbiddenGlobalError):
            sp.loads(data, safe=True)
        assert sp.loads(data, safe=True, allow=["collections.OrderedDict"]) == {"a": 1}

    def test_safe_check_runs_before_a_subclass_find_class(self) -> None:
        calls = []

        class U(sp.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                calls.append(name)
                return super().find_class(module, name)

        with U(io.BytesIO(sp.dumps(os.system)), safe=True) as u:
            with pytest.raises(sp.ForbiddenGlobalError):
                u.load()
        assert calls == []
