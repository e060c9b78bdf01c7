"""Instructions per small message on each end of a socketpair, counted by
valgrind (cachegrind): deterministic, unlike this VM's clocks, so it shows
differences of a few percent that the rates of sockets.py cannot.

Run from the repository root (needs valgrind; writes its section of
benchmarks/RESULTS.md)::

    python benchmarks/small_instructions.py [--quick] [--output PATH]

For each end ("send", "receive") and contender, the measured process runs
under valgrind with its peer as a plain child process (not counted): a peer
that drains the socket, or that sends what the contender's sender sends. It
runs twice, with 2000 and 4000 messages of sockets.py's ``build_small``
(~1 KiB pickled); the difference over 2000 is the cost of one message, free
of start-up. ``OPENBLAS_NUM_THREADS=1 PYTHONHASHSEED=0`` make runs repeat to
the instruction. Contenders: streampickle's Pickler/Unpickler (one stream),
sp.dump/sp.load (a stream per message), multiprocessing.connection's
send/recv, and "pickle + length": pickle.dumps with a 4-byte length and one
sendall, two recvs and pickle.loads, no checks: a floor.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness as h  # noqa: E402

CONTENDERS = {
    "sp-pickler": "streampickle Pickler / Unpickler",
    "sp-dump": "streampickle sp.dump / sp.load per message",
    "mpconn": "multiprocessing.connection send / recv",
    "pickle": "pickle + length, no checks (floor)",
}
SIDES = {"send": "sender", "receive": "receiver"}


def messages(count: int) -> list[dict[str, object]]:
    from sockets import build_small

    return (build_small(1000) * (count // 1000 + 1))[:count]


def send(sock: socket.socket, key: str, count: int) -> None:
    import multiprocessing.connection as mpc

    import streampickle as sp

    msgs = messages(count)
    if key == "sp-pickler":
        with sp.Pickler(sock) as p:
            for m in msgs:
                p.dump(m)
    elif key == "sp-dump":
        for m in msgs:
            sp.dump(m, sock)
    elif key == "mpconn":
        conn = mpc.Connection(os.dup(sock.fileno()))
        for m in msgs:
            conn.send(m)
        conn.close()
    else:
        for m in msgs:
            data = pickle.dumps(m, 5)
            sock.sendall(len(data).to_bytes(4, "little") + data)


def receive(sock: socket.socket, key: str, count: int) -> None:
    import multiprocessing.connection as mpc

    import streampickle as sp

    if key == "sp-pickler":
        u = sp.Unpickler(sock)
        for _ in range(count):
            u.load()
    elif key == "sp-dump":
        for _ in range(count):
            sp.load(sock)
    elif key == "mpconn":
        conn = mpc.Connection(os.dup(sock.fileno()))
        for _ in range(count):
            conn.recv()
    else:
        for _ in range(count):
            n = int.from_bytes(sock.recv(4, socket.MSG_WAITALL), "little")
            pickle.loads(sock.recv(n, socket.MSG_WAITALL))


def child(side: str, key: str, count: int, fd: int | None) -> None:
    """One end; with ``fd``, the uncounted peer on that descriptor."""
    h.check_snapshot()
    if fd is not None:
        peer = socket.socket(fileno=fd)
        if side == "send":  # the measured end sends: drain
            buf = bytearray(1 << 20)
            while peer.recv_into(buf):
                pass
        else:
            send(peer, key, count)
            peer.shutdown(socket.SHUT_WR)
        return
    ours, theirs = socket.socketpair()
    spec = [side, key, str(count), str(theirs.fileno())]
    peer_process = subprocess.Popen(
        [sys.executable, __file__, "--child", *spec], pass_fds=[theirs.fileno()]
    )
    theirs.close()
    if side == "send":
        send(ours, key, count)
        ours.shutdown(socket.SHUT_WR)
    else:
        receive(ours, key, count)
    peer_process.wait()


def instructions(side: str, key: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cachegrind.out"
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        done = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                side,
                key,
                str(count),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    assert found, done.stderr[-500:]
    return int(found[1].replace(",", ""))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        side, key, count, *fd = sys.argv[2:]
        child(side, key, int(count), int(fd[0]) if fd else None)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 and 1000 messages")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    few_n, many_n = (500, 1000) if args.quick else (2000, 4000)
    output = args.output or (h.QUICK_RESULTS if args.quick else h.RESULTS)
    if shutil.which("valgrind") is None:
        sys.exit("small_instructions.py needs valgrind")
    started = dt.datetime.now(dt.UTC)
    per: dict[tuple[str, str], int] = {}
    with tempfile.TemporaryDirectory() as data:
        digest = h.snapshot(Path(data))  # the children run this copy
        for key in CONTENDERS:
            for side in SIDES:
                few, many = (instructions(side, key, n) for n in (few_n, many_n))
                per[side, key] = (many - few) // (many_n - few_n)
                h.log(f"{side:8s} {key:11s} {per[side, key]:7d} instructions a message")
    rows = [
        [
            label,
            *(f"{per[side, key] / 1000:.1f}k" for side in SIDES),
            *(f"{per[side, key] / per[side, 'mpconn']:.2f}x" for side in SIDES),
        ]
        for key, label in CONTENDERS.items()
    ]
    lines = [
        "## small messages: instructions per message (small_instructions.py)",
        "",
        *h.header(h.command_line("small_instructions.py"), started, digest),
        "- counted by valgrind cachegrind in the measured end only (its peer is an "
        f"uncounted child); {many_n} messages minus {few_n}, over {many_n - few_n}; "
        "~1 KiB messages of sockets.py's build_small over a socketpair",
        "",
        *h.table(
            [
                "contender",
                "sender",
                "receiver",
                "sender / multiprocessing.connection",
                "receiver / multiprocessing.connection",
            ],
            rows,
            "|---|---:|---:|---:|---:|",
        ),
    ]
    h.publish("small_instructions", lines, output)


if __name__ == "__main__":
    main()
