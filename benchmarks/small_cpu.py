"""Where small messages spend CPU: process CPU time per message on each end of
a socketpair, streampickle against multiprocessing.connection.

Run from the repository root (prints a table; the hand notes of RESULTS.md
quote it)::

    python benchmarks/small_cpu.py [--repeat 3]

First, without sockets: the time per message to write 10k records to a BytesIO
with one Pickler and to read them back with one Unpickler, against
pickle.dumps and pickle.loads of the same messages (median of 5 passes).

Per contender and run: a socketpair, a fork; the child receives 10k messages
(build_small of sockets.py, ~1 KiB pickled), the parent sends them; each
process measures its own CPU time (``resource.getrusage``) around its loop.
Contenders: "sp" (Pickler / Unpickler), "mpconn" (Connection.send / recv) and
"lean": our sender, with a receiver reduced to what the format asks of it (a
checked header, the payload with the RECORD_END header, a C unpickler per
record reading through a minimal ``peek``/``read`` object) and no layering: a
floor for a pure-Python reader of this format (streampickle's own reader goes
below it where its C walk of the opcodes lets ``pickle.loads`` read a record).

Last, which end sets the pace: messages per second of each end alone, "sp"
and "mpconn", against a peer that only drains the socket (sender alone) or
sends all the wire bytes with one sendall (receiver alone).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sockets import build_small  # noqa: E402

import streampickle as sp  # noqa: E402
from streampickle import format as fmt  # noqa: E402

COUNT = 10_000


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Whole:
    """The pickle bytes of one record, as the C unpickler reads them."""

    __slots__ = ("chunk", "pos")

    def read(self, n: int) -> bytes:
        self.pos += n
        return self.chunk[self.pos - n : self.pos]

    def peek(self, n: int = 0) -> bytes:
        return self.chunk[self.pos :]

    def readline(self) -> bytes:
        raise ValueError("no lines in these pickles")


def lean_receive(sock: socket.socket) -> None:
    def recv(n: int) -> bytes:
        return sock.recv(n, socket.MSG_WAITALL)

    whole = _Whole()
    recv(fmt.STREAM_HEADER.size)
    for _ in range(COUNT):
        h = fmt.decode_frame_header(recv(32), 0, None)
        n = h.stored_size
        both = recv(n + 32)
        chunk = both[:n]
        if fmt.checksum(chunk) != h.payload_check:
            raise ValueError("payload check")
        end = fmt.decode_frame_header(both[n:], 0, None)
        whole.chunk, whole.pos = chunk, 0
        pickle.Unpickler(whole).load()  # a fresh one per record, as ours
        if whole.pos != n or end.raw_size != n or end.param:
            raise ValueError("record")


def receive(key: str, sock: socket.socket) -> None:
    import multiprocessing.connection as mpc

    if key == "mpconn":
        conn = mpc.Connection(os.dup(sock.fileno()))
        for _ in range(COUNT):
            conn.recv()
    elif key == "lean":
        lean_receive(sock)
    else:
        u = sp.Unpickler(sock)
        for _ in range(COUNT):
            u.load()


def send(key: str, sock: socket.socket, msgs: list[Any]) -> None:
    import multiprocessing.connection as mpc

    if key == "mpconn":
        conn = mpc.Connection(os.dup(sock.fileno()))
        for m in msgs:
            conn.send(m)
    else:
        p = sp.Pickler(sock)
        for m in msgs:
            p.dump(m)


def run(key: str) -> dict[str, float]:
    msgs = build_small(COUNT)
    a, b = socket.socketpair()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        a.close()
        start = cpu()
        receive(key, b)
        os.write(w, json.dumps(cpu() - start).encode())
        os._exit(0)
    b.close()
    start = cpu()
    send(key, a, msgs)
    sender = cpu() - start
    os.waitpid(pid, 0)
    receiver = json.loads(os.read(r, 100))
    a.close()
    return {"sender": sender / COUNT * 1e6, "receiver": receiver / COUNT * 1e6}


def wire_bytes(key: str, msgs: list[Any]) -> bytes:
    """What ``send(key, ...)`` puts on the wire for ``msgs``."""
    a, b = socket.socketpair()
    chunks: list[bytes] = []

    def drain() -> None:
        while data := b.recv(1 << 20):
            chunks.append(data)

    t = threading.Thread(target=drain)
    t.start()
    send(key, a, msgs)
    a.close()
    t.join()
    b.close()
    return b"".join(chunks)


def alone(key: str, end: str) -> float:
    """Messages per second of one end when the other costs (nearly) nothing:
    ``end`` "receiver" is fed the wire bytes by one sendall; "sender" writes
    to a peer that only drains the socket. Timed from the sender's start to
    the receiver's end, in separate processes."""
    msgs = build_small(COUNT)
    wire = wire_bytes(key, msgs)
    a, b = socket.socketpair()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        a.close()
        os.write(w, b"r")
        if end == "receiver":
            receive(key, b)
        else:
            got = 0
            while got < len(wire) and (data := b.recv(1 << 16)):
                got += len(data)
        os.write(w, json.dumps(time.perf_counter()).encode())
        os._exit(0)
    b.close()
    os.read(r, 1)
    start = time.perf_counter()
    if end == "receiver":
        a.sendall(wire)
    else:
        send(key, a, msgs)
    done = json.loads(os.read(r, 100))
    os.waitpid(pid, 0)
    a.close()
    return COUNT / (done - start)


def in_memory() -> dict[str, float]:
    """µs per message of each pass, median of 5."""
    import io

    msgs = build_small(COUNT)
    pickles = [pickle.dumps(m, protocol=5) for m in msgs]
    out = io.BytesIO()
    with sp.Pickler(out) as p:
        for m in msgs:
            p.dump(m)
    data = out.getvalue()

    def sp_dump() -> None:
        p = sp.Pickler(io.BytesIO())
        for m in msgs:
            p.dump(m)

    def sp_load() -> None:
        u = sp.Unpickler(io.BytesIO(data))
        for _ in range(COUNT):
            u.load()

    def dumps() -> None:  # each result dropped, as the passes above do
        for m in msgs:
            pickle.dumps(m, protocol=5)

    def loads() -> None:
        for b in pickles:
            pickle.loads(b)

    passes = {
        "streampickle Pickler.dump": sp_dump,
        "pickle.dumps": dumps,
        "streampickle Unpickler.load": sp_load,
        "pickle.loads": loads,
    }
    times: dict[str, float] = {}
    for name, fn in passes.items():
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - start) / COUNT * 1e6)
        times[name] = statistics.median(runs)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("µs per message in memory (BytesIO), median of 5 passes")
    print("| pass | µs |\n|---|---:|")
    for name, took in in_memory().items():
        print(f"| {name} | {took:.2f} |")
    runs: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.repeat):
        for key in ("sp", "mpconn", "lean"):
            runs.setdefault(key, []).append(run(key))
    print(f"CPU µs per message, median of {args.repeat} (10k messages, socketpair)")
    print("| contender | sender | receiver | sum |\n|---|---:|---:|---:|")
    for key, got in runs.items():
        s = statistics.median(g["sender"] for g in got)
        r = statistics.median(g["receiver"] for g in got)
        print(f"| {key} | {s:.1f} | {r:.1f} | {s + r:.1f} |")
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for key in ("sp", "mpconn"):
            for end in ("sender", "receiver"):
                rates.setdefault((key, end), []).append(alone(key, end))
    print(
        f"Each end alone, messages/s, median of {args.repeat} (10k messages, socketpair;"
        " the other end only drains the socket or sends all the bytes at once)"
    )
    print("| contender | sender alone | receiver alone |\n|---|---:|---:|")
    for key in ("sp", "mpconn"):
        s, r = (statistics.median(rates[key, end]) for end in ("sender", "receiver"))
        print(f"| {key} | {s:.0f} | {r:.0f} |")


if __name__ == "__main__":
    main()
