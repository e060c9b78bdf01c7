"""The asyncio adapters, against each other and against the blocking API."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

import streampickle as sp
from streampickle import aio
from streampickle import format as fmt
from streampickle.format import Codec, Flag, Kind

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def run_pair(body: Callable[[Streams, Streams], Awaitable[Any]], tcp: bool = False) -> Any:
    """Run ``body`` with the two ends of a socketpair (or of a loopback TCP
    connection) as asyncio streams."""

    async def main() -> Any:
        a, b = socket.socketpair() if not tcp else _tcp_pair()
        left = await asyncio.open_connection(sock=a)
        right = await asyncio.open_connection(sock=b)
        try:
            return await asyncio.wait_for(body(left, right), 30)
        finally:
            for _, w in (left, right):
                w.close()

    return asyncio.run(main())


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname())
        return a, listener.accept()[0]


def sample(i: int) -> dict[str, Any]:
    return {"i": i, "w": np.arange(300_000, dtype=np.float32) * i, "meta": ["m"] * 3}


def check(rec: Any, i: int) -> None:
    assert rec["i"] == i and rec["meta"] == ["m"] * 3
    np.testing.assert_array_equal(rec["w"], np.arange(300_000, dtype=np.float32) * i)


class TestRoundTrip:
    def test_records_arrive_in_order(self) -> None:
        async def body(left: Streams, right: Streams) -> None:
            async def send() -> None:
                async with aio.Pickler(left[1]) as p:
                    for i in range(4):
                        await p.dump(sample(i))

            sender = asyncio.create_task(send())
            got = [rec async for rec in aio.Unpickler(right[0])]
            await sender
            assert len(got) == 4
            for i, rec in enumerate(got):
                check(rec, i)

        run_pair(body)

    def test_streams_back_to_back_are_read_by_separate_loads(self) -> None:
        async def body(left: Streams, right: Streams) -> None:
            async def send() -> None:
                for i in range(3):
                    await aio.dump(sample(i), left[1])

            sender = asyncio.create_task(send())
            for i in range(3):
                check(await aio.load(right[0]), i)
            await sender

        run_pair(body)

    def test_blocking_writer_and_async_reader_interoperate(self) -> None:
        a, b = socket.socketpair()
        t = threading.Thread(target=lambda: (sp.dump(sample(5), a), a.close()))
        t.start()

        async def receive() -> Any:
            reader, writer = await asyncio.open_connection(sock=b)
            try:
                return await aio.load(reader)
            finally:
                writer.close()

        check(asyncio.run(receive()), 5)
        t.join()

    def test_async_writer_and_blocking_reader_interoperate(self) -> None:
        a, b = socket.socketpair()

        async def send() -> None:
            _, writer = await asyncio.open_connection(sock=a)
            await aio.dump(sample(7), writer)
            writer.close()
            # what the transport still buffers is sent before the loop ends
            # (without it, the reader waited for bytes never sent: a rare hang)
            await writer.wait_closed()

        t = threading.Thread(target=lambda: asyncio.run(send()))
        t.start()
        b.settimeout(60)  # (a hang would fail here, not stall the suite)
        check(sp.load(b), 7)
        t.join()
        b.close()


def test_compressed_buffer_with_lanes_stored_raw_goes_through_a_transport() -> None:
    """Lanes stored raw reach transport.write as bytes-likes, not arrays."""
    x = np.random.default_rng(1).normal(size=50_000).cumsum()  # 8 lanes of 50 kB

    async def body(left: Streams, right: Streams) -> Any:
        sender = asyncio.create_task(aio.dump(x, left[1], compress="zstd", threads=0))
        got = await aio.load(right[0])
        await sender
        return got

    np.testing.assert_array_equal(run_pair(body), x)


class TestBadPeers:
    def feed(self, data: bytes, **kw: Any) -> Any:
        async def main() -> Any:
            reader = asyncio.StreamReader()
            reader.feed_data(data)
            reader.feed_eof()
            return await aio.load(reader, **kw)

        return asyncio.run(main())

    @pytest.mark.parametrize("fraction", [0.0001, 0.01, 0.3, 0.9, 0.9999])
    def test_peer_closing_mid_record_raises_truncated(self, fraction: float) -> None:
        data = sp.dumps(sample(1))
        with pytest.raises(sp.TruncatedStreamError, match="offset"):
            self.feed(data[: max(1, int(len(data) * fraction))])

    def test_empty_input_raises_eof(self) -> None:
        with pytest.raises(EOFError):
            self.feed(b"")

    def test_damaged_buffer_raises_corrupt(self) -> None:
        data = bytearray(sp.dumps(sample(1)))
        data[len(data) // 2] ^= 0x10
        with pytest.raises(sp.CorruptStreamError, match="check mismatch"):
            self.feed(bytes(data))

    def test_a_cut_at_every_offset_raises_truncated(self) -> None:
        """Inside the headers, the pickle bytes, the buffer (read in pieces as
        they arrive) and its check table."""
        data = sp.dumps({"w": np.arange(512, dtype=np.float32)})
        for cut in range(1, len(data)):
            with pytest.raises(sp.TruncatedStreamError):
                self.feed(data[:cut])

    def test_a_flipped_bit_anywhere_in_a_buffer_raises_corrupt(self) -> None:
        w = np.arange(512, dtype=np.float32)
        data = sp.dumps({"w": w})
        start = data.index(w.tobytes())
        for i in range(start, start + w.nbytes, 7):
            damaged = bytearray(data)
            damaged[i] ^= 1 << (i % 8)
            with pytest.raises(sp.CorruptStreamError, match="check mismatch"):
                self.feed(bytes(damaged))

    def test_max_size_refuses_large_records(self) -> None:
        with pytest.raises(sp.StreamError, match="max_size"):
            self.feed(sp.dumps(sample(1)), max_size=10_000)

    def test_safe_mode_refuses_globals(self) -> None:
        with pytest.raises(sp.ForbiddenGlobalError):
            self.feed(sp.dumps(threading.Thread), safe=True)


def _pickle_frame(data: bytes) -> bytes:
    return (
        fmt.frame(
            Kind.PICKLE,
            stored_size=len(data),
            raw_size=len(data),
            flags=Flag.CHECKED,
            payload_check=fmt.checksum(data),
        )
        + data
    )


def _empty_buffer(ordinal: int) -> bytes:
    check = fmt.buffer_ordinal_check(ordinal)
    return fmt.frame(Kind.BUFFER, param=4096, payload_check=check)


_FLOODS = {
    "empty PICKLE frames": lambda i: _pickle_frame(b""),
    "empty BUFFER frames": _empty_buffer,
}


class TestHostilePeers:
    """39th review: what a peer sends inside a record is bounded by max_size
    as it arrives, not once the record has all come."""

    async def _load_fed(self, data: bytes, **kw: Any) -> tuple[Any, int]:
        """aio.load of ``data`` (its end never comes): the outcome and the
        bytes left unread in the reader."""
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        try:
            outcome: Any = await asyncio.wait_for(aio.load(reader, **kw), 10)
        except (sp.StreamError, EOFError) as exc:
            outcome = exc
        return outcome, len(reader._buffer)  # noqa: SLF001  (what is left unread)

    @pytest.mark.parametrize("flood", _FLOODS)
    def test_a_flood_of_empty_frames_is_refused_by_max_size(self, flood: str) -> None:
        """4 MB of empty frames after a record's first: refused once their
        headers pass max_size, having read no more than that of them."""
        head = fmt.encode_stream_header() + _pickle_frame(b"\x80\x05")
        frames = b"".join(_FLOODS[flood](i) for i in range(1 << 17))
        data = head + frames
        outcome, unread = asyncio.run(self._load_fed(data, max_size=1 << 16))
        assert isinstance(outcome, sp.StreamError) and "max_size=65536" in str(outcome)
        assert len(data) - unread <= len(head) + (1 << 16) + 64
        with pytest.raises(sp.StreamError, match="max_size=65536"):
            sp.load(io.BytesIO(data), max_size=1 << 16)

    @pytest.mark.parametrize("kind", [Kind.CHUNK, Kind.INDEX])
    def test_a_frame_out_of_place_is_refused_as_it_arrives(self, kind: Kind) -> None:
        """A CHUNK without its compressed BUFFER, or an INDEX inside a record,
        then 4 MB more: refused at once (before, aio took the whole record in
        first; the blocking reader refused it at once)."""
        payload = bytes(1 << 12)
        stray = fmt.frame(kind, stored_size=len(payload), raw_size=len(payload))
        if kind is Kind.INDEX:
            stray = fmt.frame(
                kind,
                stored_size=len(payload),
                raw_size=len(payload),
                flags=Flag.CHECKED,
                payload_check=fmt.checksum(payload),
            )
        head = fmt.encode_stream_header() + _pickle_frame(b"\x80\x05") + stray + payload
        data = head + bytes(4 << 20)
        outcome, unread = asyncio.run(self._load_fed(data))
        assert isinstance(outcome, sp.CorruptStreamError)
        assert f"{kind.name} frame at offset" in str(outcome)
        assert unread >= 4 << 20

    def test_a_load_cancelled_before_its_record_came_may_be_tried_again(self) -> None:
        async def body(left: Streams, right: Streams) -> Any:
            u = aio.Unpickler(right[0])
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(u.load(), 0.2)  # nothing sent yet
            sender = asyncio.create_task(aio.dump(sample(2), left[1]))
            got = await u.load()
            await sender
            return got

        check(run_pair(body), 2)

    def test_a_load_cancelled_inside_its_record_leaves_the_stream_unreadable(self) -> None:
        data = sp.dumps(sample(3))

        async def body(left: Streams, right: Streams) -> None:
            u = aio.Unpickler(right[0])
            left[1].write(data[: len(data) // 2])
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(u.load(), 0.3)
            left[1].write(data[len(data) // 2 :])
            with pytest.raises(sp.StreamError, match="cancelled load"):
                await u.load()

        run_pair(body)

    def test_loads_after_the_end_read_nothing_of_the_next_stream(self) -> None:
        async def main() -> list[Any]:
            reader = asyncio.StreamReader()
            reader.feed_data(sp.dumps("first") + sp.dumps("second"))
            reader.feed_eof()
            u = aio.Unpickler(reader)
            got = [await u.load()]
            for _ in range(2):
                with pytest.raises(EOFError):
                    await u.load()
            return [*got, await aio.load(reader)]

        assert asyncio.run(main()) == ["first", "second"]


class TestLargeRecords:
    """A record still coming past STREAM_FROM bytes is decoded as it comes,
    in a thread, holding no more than STREAM_AHEAD ahead of it."""

    def test_large_in_band_records_arrive_whole_and_in_order(self) -> None:
        big = bytes(range(256)) * (40 << 12)  # 40 MiB of pickle bytes: streamed
        records = ["a", big, {"b": np.arange(10)}, big[:1000]]

        async def body(left: Streams, right: Streams) -> list[Any]:
            async def send() -> None:
                async with aio.Pickler(left[1]) as p:
                    for r in records:
                        await p.dump(r)

            sender = asyncio.create_task(send())
            got = [r async for r in aio.Unpickler(right[0], max_size=64 << 20)]
            await sender
            return got

        got = run_pair(body)
        assert got[0] == "a" and got[1] == big and got[3] == big[:1000]
        np.testing.assert_array_equal(got[2]["b"], np.arange(10))

    def test_a_large_record_cut_or_cancelled_midway_fails_cleanly(self) -> None:
        data = sp.dumps(bytes(40 << 20))
        for cut in (20 << 20, len(data) - 100):
            with pytest.raises(sp.TruncatedStreamError):
                TestBadPeers().feed(data[:cut])

        async def body(left: Streams, right: Streams) -> None:
            u = aio.Unpickler(right[0])
            left[1].write(data[: 30 << 20])
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(u.load(), 1)
            with pytest.raises(sp.StreamError, match="cancelled load"):
                await u.load()

        run_pair(body)

    @pytest.mark.parametrize(
        "sent, mib, over",
        [
            # 39th review: the record was held whole, twice the object
            ("os.urandom(1 << 20) * 256", 256, 64),
            # each buffer received straight into its array
            ("{i: np.full(64 << 20, i, np.uint8) for i in range(8)}", 512, 32),
        ],
        ids=["in-band bytes", "arrays"],
    )
    def test_a_large_record_takes_little_more_than_itself(
        self, sent: str, mib: int, over: int
    ) -> None:
        """In a fresh process: a record from a forked sender, loaded with aio,
        peaks at the object + ``over`` MiB."""
        script = textwrap.dedent(
            f"""
            import asyncio, os, resource, socket
            import numpy as np
            import streampickle as sp
            from streampickle import aio
            a, b = socket.socketpair()
            if os.fork() == 0:
                b.close()
                sp.dump({sent}, a)
                os._exit(0)
            a.close()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            got = []
            async def main():
                reader, _ = await asyncio.open_connection(sock=b)
                got.append(await aio.load(reader))  # (asyncio.run reprs main's result)
            asyncio.run(main())
            os.wait()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            obj = got[0]
            if isinstance(obj, bytes):
                size = len(obj)
            else:
                assert all((obj[i] == i).all() for i in obj)
                size = sum(a.nbytes for a in obj.values())
            print(size >> 20, (peak - before) >> 10)
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, timeout=120, check=True
        )
        size, extra = map(int, done.stdout.split())
        assert size == mib and extra <= mib + over

    def test_an_index_is_read_past_not_held(self) -> None:
        """A stream's INDEX (up to 4 GiB) is skipped as it comes (41st review:
        aio read it whole, 200 MiB held for a max_size of 1000)."""
        index = bytes(64 << 20)
        head = fmt.encode_stream_header()
        tail = fmt.frame(
            Kind.INDEX,
            stored_size=len(index),
            raw_size=len(index),
            flags=Flag.CHECKED,
            payload_check=fmt.checksum(index),
        )
        data = head + tail + index + fmt.frame(Kind.END, raw_size=len(head))

        async def main() -> int:
            reader = asyncio.StreamReader(limit=1 << 16)
            tracemalloc.start()
            try:

                async def feed() -> None:
                    for at in range(0, len(data), 1 << 20):
                        reader.feed_data(data[at : at + (1 << 20)])
                        await asyncio.sleep(0)
                    reader.feed_eof()

                feeding = asyncio.create_task(feed())
                with pytest.raises(EOFError):
                    await aio.load(reader, max_size=1000)
                await feeding
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        assert asyncio.run(main()) < 16 << 20

    def test_a_chunk_past_what_its_buffer_owes_is_refused_as_it_arrives(self) -> None:
        """41st review: a compressed BUFFER of 1 byte, then a CHUNK of 4 MiB:
        refused before its payload is read (aio read it whole first)."""
        buffer = fmt.frame(
            Kind.BUFFER,
            codec=Codec.ZSTD,
            raw_size=1,
            param=4096,
            payload_check=fmt.buffer_ordinal_check(0),
        )
        payload = bytes(4 << 20)
        chunk = fmt.frame(
            Kind.CHUNK, codec=Codec.ZSTD, stored_size=len(payload), raw_size=len(payload)
        )
        data = fmt.encode_stream_header() + buffer + chunk + payload
        outcome, unread = asyncio.run(TestHostilePeers()._load_fed(data, max_size=1000))
        assert isinstance(outcome, sp.CorruptStreamError)
        assert unread >= 4 << 20

    def test_peers_quiet_inside_large_records_hold_no_shared_thread(self) -> None:
        """42nd review: each decoding thread waits while its peer is quiet;
        in the loop's default pool, 6 quiet peers starved it (a healthy
        connection, to_thread and getaddrinfo hung). Each has its own."""
        data = sp.dumps(bytes(40 << 20))[: 12 << 20]

        async def main() -> int:
            readers = [asyncio.StreamReader() for _ in range(8)]
            for reader in readers:
                reader.feed_data(data)  # and nothing more, no end
            loads = [asyncio.create_task(aio.load(r)) for r in readers]
            await asyncio.sleep(0.5)
            try:
                return await asyncio.wait_for(asyncio.to_thread(lambda: 7), 5)
            finally:
                for task in loads:
                    task.cancel()
                await asyncio.gather(*loads, return_exceptions=True)

        assert asyncio.run(main()) == 7

    def test_a_large_record_where_the_stream_should_end_is_refused_unread(self) -> None:
        """aio.load reads one record; a second, large, where END should be is
        refused at its header (42nd review: a thread decoded it while the
        caller read the tail: wrong errors, or the first record returned)."""
        out = io.BytesIO()
        with sp.Pickler(out) as p:
            p.dump(b"first")
            p.dump(bytes(40 << 20))
        outcome, unread = asyncio.run(TestHostilePeers()._load_fed(out.getvalue()))
        assert isinstance(outcome, sp.StreamError)
        assert "more than one record" in str(outcome)
        assert unread >= 40 << 20

    @pytest.mark.parametrize("fault", ["a flipped bit", "a bad opcode"])
    def test_an_error_the_decoding_thread_finds_is_raised_while_the_peer_is_quiet(
        self, fault: str
    ) -> None:
        """42nd review: the thread's error waited for the peer to send on,
        close, or the load's timeout; the receiving is now stopped."""
        sent = _cut_after_the_buffer(fault)

        async def main() -> BaseException:
            reader = asyncio.StreamReader()
            reader.feed_data(sent)  # then the peer is quiet
            try:
                await asyncio.wait_for(aio.load(reader, safe=fault == "a flipped bit"), 10)
            except BaseException as exc:  # noqa: BLE001 (the outcome, checked below)
                return exc
            raise AssertionError("loaded a record that never ended")

        outcome = asyncio.run(main())
        assert isinstance(outcome, sp.CorruptStreamError), repr(outcome)

    def test_the_threads_error_reaches_a_task_that_was_cancelled_before(self) -> None:
        """43rd review: stopping the receiving cancelled the caller's task, so
        one whose earlier cancel was caught (a server loop, cleanup) got
        CancelledError instead of the thread's error."""
        sent = _cut_after_the_buffer("a flipped bit")

        async def main() -> tuple[BaseException, int]:
            me = asyncio.current_task()
            assert me is not None
            me.cancel()
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                pass  # caught, not uncancelled: cancelling() is 1
            reader = asyncio.StreamReader()
            reader.feed_data(sent)
            try:
                await aio.load(reader)
            except BaseException as exc:  # noqa: BLE001 (the outcome, checked below)
                return exc, me.cancelling()
            raise AssertionError("loaded a record that never ended")

        outcome, cancelling = asyncio.run(main())
        assert isinstance(outcome, sp.CorruptStreamError), repr(outcome)
        assert cancelling == 1


def _cut_after_the_buffer(fault: str) -> bytes:
    """A stream whose one record of 20 MiB has ``fault`` in its pickle
    frames, which come first, cut after its buffer: a thread decodes it
    (past 8 MiB) and finds the fault while nothing more comes."""
    record = ["x" * 200_000, np.zeros(20 << 20, np.uint8), "y"]
    data = bytearray(sp.dumps(record, frame_size=64 << 10))
    first = fmt.STREAM_HEADER.size  # pickle frames of 64 KiB, then the buffer
    assert data[first] == Kind.PICKLE  # (the kind byte: see FORMAT.md)
    if fault == "a flipped bit":
        data[first + 42 + fmt.FRAME_HEADER.size + 1000] ^= 1  # (in the second)
    else:  # checked, but no pickle (safe mode would wait for the whole record)
        pickled = data[first + 32 : first + 42]  # PROTO 5 first: now no opcode
        data[first : first + 42] = _pickle_frame(b"\xff" + pickled[1:])
    at = first
    while data[at] != Kind.BUFFER:
        h = fmt.decode_frame_header(bytes(data[at : at + 32]), at, None)
        at += fmt.FRAME_HEADER.size + h.stored_size
    h = fmt.decode_frame_header(bytes(data[at : at + 32]), at, None)
    return bytes(data[: at + fmt.FRAME_HEADER.size + h.stored_size + h.check_table_size()])


class TestDirectReceive:
    """A buffer of DIRECT_FROM bytes or more is received by the transport
    straight into its array (the StreamReader copied each piece twice)."""

    def test_large_buffers_bypass_the_stream_reader_and_nothing_after_them(self) -> None:
        arrays = [np.arange(i << 20, dtype=np.uint8) for i in (1, 16, 3)]

        async def body(left: Streams, right: Streams) -> list[Any]:
            fed = []
            feed_data = right[0].feed_data
            right[0].feed_data = lambda data: (fed.append(len(data)), feed_data(data))[1]
            u = aio.Unpickler(right[0])
            async with aio.Pickler(left[1]) as p:
                sending = asyncio.create_task(p.dump(arrays))
                got = await u.load()
                await sending
                await p.dump("next")  # through the stream's reader again
            got.append(await u.load())
            got.append(sum(fed))
            return got

        *got, after, fed = run_pair(body)
        for a, b in zip(got, arrays, strict=True):
            np.testing.assert_array_equal(a, b)
        assert after == "next" and fed < 2 << 20  # (of 20 MiB)

    def test_a_peer_that_closes_or_resets_inside_a_buffer_fails_cleanly(self) -> None:
        data = sp.dumps(np.ones(8 << 20, np.uint8))
        for how in ("close", "reset"):

            async def body(left: Streams, right: Streams, how: str = how) -> None:
                loading = asyncio.create_task(aio.load(right[0]))
                left[1].write(data[: 4 << 20])
                await left[1].drain()
                await asyncio.sleep(0.05)
                sock = left[1].get_extra_info("socket")
                if how == "reset":  # (SO_LINGER on, 0 seconds: close sends RST)
                    linger = struct.pack("ii", 1, 0)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                left[1].transport.abort()
                with pytest.raises(sp.TruncatedStreamError if how == "close" else OSError):
                    await loading

            run_pair(body, tcp=True)

    def test_writing_on_the_same_connection_while_receiving_goes_on(self) -> None:
        """Both ends send 64 MiB to each other at once: the writer's flow
        control reaches the stream while a buffer is received directly."""
        ours, theirs = np.ones(64 << 20, np.uint8), np.full(64 << 20, 2, np.uint8)

        async def body(left: Streams, right: Streams) -> list[Any]:
            async def both(end: Streams, obj: Any) -> Any:
                sending = asyncio.create_task(aio.dump(obj, end[1]))
                got = await aio.load(end[0])
                await sending
                return got

            return list(await asyncio.gather(both(left, ours), both(right, theirs)))

        a, b = run_pair(body)
        assert (a == 2).all() and (b == 1).all()

    def test_a_load_cancelled_inside_a_buffer_gives_the_transport_back(self) -> None:
        data = sp.dumps(np.ones(8 << 20, np.uint8))

        async def body(left: Streams, right: Streams) -> None:
            transport = right[1].transport
            protocol = transport.get_protocol()
            left[1].write(data[: 4 << 20])
            u = aio.Unpickler(right[0])
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(u.load(), 0.5)
            assert transport.get_protocol() is protocol
            with pytest.raises(sp.StreamError, match="cancelled load"):
                await u.load()
            left[1].write(b"more")  # the stream's reader receives again
            assert await right[0].read(10 << 20)

        run_pair(body)

    def test_a_subprocess_pipe_loads_in_order(self) -> None:
        """44th review: a subprocess's pipe feeds its reader a loop turn after
        reading; standing in for its protocol, bytes came out of order."""
        code = (
            "import sys, numpy as np, streampickle as sp\n"
            "data = sp.dumps(np.arange(4 << 20, dtype=np.uint8))\n"
            "sys.stdout.buffer.write(data + b'TAIL')"
        )

        async def main() -> list[Any]:
            got = []
            for _ in range(3):
                child = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
                )
                assert child.stdout is not None
                got.append(await asyncio.wait_for(aio.load(child.stdout), 30))
                got.append(await child.stdout.read())
                await child.wait()
            return got

        got = asyncio.run(main())
        for array, tail in zip(got[::2], got[1::2], strict=True):
            np.testing.assert_array_equal(array, np.arange(4 << 20, dtype=np.uint8))
            assert tail == b"TAIL"

    def test_a_reader_an_application_protocol_feeds_gets_what_that_feeds(self) -> None:
        """44th review: the transport's protocol was replaced whatever it was;
        one that feeds the reader other bytes (here XOR 0x5A) was bypassed."""
        array = np.arange(1 << 20, dtype=np.uint8)
        masked = bytes(np.frombuffer(sp.dumps(array), np.uint8) ^ 0x5A)

        class Unmasking(asyncio.Protocol):
            def __init__(self, reader: asyncio.StreamReader) -> None:
                self.reader = reader

            def connection_made(self, transport: Any) -> None:
                self.reader.set_transport(transport)  # (flow control, as asyncio's do)

            def data_received(self, data: bytes) -> None:
                self.reader.feed_data(bytes(np.frombuffer(data, np.uint8) ^ 0x5A))

        async def main() -> Any:
            a, b = socket.socketpair()
            reader = asyncio.StreamReader()
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_connection(lambda: Unmasking(reader), sock=b)
            with a:
                loading = asyncio.create_task(aio.load(reader))
                for at in range(0, len(masked), 1000):  # the header first, alone
                    await loop.sock_sendall(a, masked[at : at + 1000])
                    await asyncio.sleep(0)
                got = await asyncio.wait_for(loading, 10)
            transport.close()
            return got

        np.testing.assert_array_equal(asyncio.run(main()), array)

    def test_the_transport_is_given_back_before_the_cancelled_load_returns(self) -> None:
        """44th review: cancelled in the caller's own task (asyncio.timeout)
        while a record past 8 MiB came, the stand-in stayed a loop turn."""
        data = sp.dumps([np.ones(10 << 20, np.uint8), np.ones(8 << 20, np.uint8)])

        async def body(left: Streams, right: Streams) -> None:
            transport = right[1].transport
            protocol = transport.get_protocol()
            left[1].write(data[: 14 << 20])
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await aio.load(right[0])
            assert transport.get_protocol() is protocol

        run_pair(body)
