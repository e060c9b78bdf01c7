"""Writes the format-1 test vectors in this folder (run once per format version).

    python tests/vectors/make_vectors.py

The committed files must stay readable by every later version of the library;
tests/test_format.py loads them and compares with ``expected(name)``.
"""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np

import streampickle as sp

HERE = Path(__file__).parent


def expected(name: str) -> list[Any]:
    """The records each vector holds."""
    if name == "v1_plain":
        return [
            {
                "int": 1,
                "neg": -(2**70),
                "float": 2.5,
                "str": "héllo",
                "bytes": b"\x00\xff",
                "list": [1, [2, 3]],
                "tuple": (None, True),
                "set": {1, 2},
                "frozenset": frozenset({"a"}),
                "complex": 1 - 2j,
                "big": bytes(range(256)) * 40,
            }
        ]
    if name in ("v1_arrays", "v1_unchecked"):
        return [
            {
                "f32": np.arange(1000, dtype="<f4") / 7,
                "i64_fortran": np.asfortranarray(
                    np.arange(600, dtype="<i8").reshape(20, 30)
                ),
                "u8": np.arange(5000, dtype=np.uint8),
                "be_f8": np.linspace(0, 1, 300).astype(">f8"),
                "structured": np.array(
                    [(i, i / 2) for i in range(200)], dtype=[("a", "<i4"), ("b", "<f8")]
                ),
                "small": np.arange(3, dtype="<i2"),
                "scalar": np.float64(3.25),
            }
        ]
    if name == "v1_zstd":
        rng = np.random.default_rng(7)
        return [
            {
                "smooth_f8": np.cumsum(rng.standard_normal(3000)),  # shuffled, compressed
                "low_i8": rng.integers(0, 50, 3000).astype("<i8"),
                "noise_u1": rng.integers(0, 256, 20000, dtype=np.uint8),  # stored raw
                "mixed_u1": np.concatenate(  # compressed and raw chunks in one buffer
                    [np.zeros(8192, np.uint8), rng.integers(0, 256, 8192, dtype=np.uint8)]
                ),
                "text": "streampickle " * 400,  # a compressed PICKLE frame
                "rows": [{"id": i, "name": f"row{i}"} for i in range(300)],
            }
        ]
    if name in ("v1_records", "v1_no_index"):
        return [
            {"step": i, "w": np.full(512, i, dtype="<i4"), "tag": "x" * i} for i in range(4)
        ]
    raise KeyError(name)


NAMES = ["v1_plain", "v1_arrays", "v1_unchecked", "v1_records", "v1_no_index", "v1_zstd"]


def write(name: str) -> bytes:
    records = expected(name)
    if name == "v1_no_index":  # written to a socket: no INDEX frame
        a, b = socket.socketpair()
        out = bytearray()

        def drain() -> None:
            for chunk in iter(lambda: b.recv(1 << 16), b""):
                out.extend(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        with sp.Pickler(a, frame_size=4096) as p:
            for r in records:
                p.dump(r)
        a.close()
        reader.join()
        b.close()
        return bytes(out)
    options: dict[str, Any] = {"checksum": name != "v1_unchecked"}
    if name == "v1_zstd":
        options.update(compress="zstd", threads=0)
    bio = io.BytesIO()
    with sp.Pickler(bio, frame_size=4096, **options) as p:
        for r in records:
            p.dump(r)
    return bio.getvalue()


if __name__ == "__main__":
    for name in NAMES:
        (HERE / f"{name}.sp").write_bytes(write(name))
        print(name)
