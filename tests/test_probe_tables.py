"""Safe mode's model of CPython's dict and set tables
(streampickle/_pickle_probes.c): keys of distinct hashes whose paths through a
table meet make each insert pass all the keys on them (32nd review: a dict of
82,768 plain ints, 464 KB, 4.8 s to load). The model lays keys out as
CPython does, checked here against CPython's own tables; records whose keys
pass too many slots are refused, on the C path and the counting one."""

from __future__ import annotations

import io
import pickle
import random
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from real_tables import READABLE, dict_slots, set_slots

import streampickle as sp
from streampickle._pickle_scan import ProbeTable, check_whole

_KEYS = st.lists(
    st.integers(-(2**63), 2**64)
    | st.integers(0, 64).map(lambda i: i << 40)
    | st.floats(allow_nan=False)
    | st.tuples(st.integers(0, 9), st.integers(0, 9))
    | st.booleans()
    | st.none(),
    max_size=200,
)
real_only = pytest.mark.skipif(not READABLE, reason="reads CPython 3.11's tables")


def _distinct(keys: list[Any]) -> list[Any]:
    """The keys as a table holds them: the first of each equal ones."""
    held: dict[Any, Any] = {}
    for key in keys:
        held.setdefault(key, key)
    return list(held.values())


def _set_by_ids(table: ProbeTable, entries: list[Any]) -> list[int | None]:
    return [None if e < 0 else id(entries[e]) for e in table.slots()]


def _pickled(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=5)


@real_only
@settings(max_examples=400, deadline=None)
@given(_KEYS)
def test_keys_go_where_cpython_puts_them(keys: list[Any]) -> None:
    """Added one by one (SETITEM, ADDITEMS), each key lands in the slot of
    CPython's own table, through every resize: a dict's index table and a
    set's, read from the objects (their equal keys, 1 and 1.0 and True,
    one entry)."""
    table, real = ProbeTable(False), {}
    for key in keys:
        real[key] = None
    table.add(keys)
    if real:
        assert table.slots() == dict_slots(real)
    table, made = ProbeTable(True), set()
    for key in keys:
        made.add(key)
    table.add(keys)
    if made:
        assert _set_by_ids(table, _distinct(keys)) == set_slots(made)


@real_only
@settings(max_examples=300, deadline=None)
@given(_KEYS.filter(bool), st.sampled_from([set, frozenset, dict]), st.booleans())
def test_containers_made_of_another_lay_out_as_cpythons(
    keys: list[Any], kind: type, from_dict: bool
) -> None:
    """set(d), frozenset(s), dict(d): CPython resizes once for all of the
    other's keys, or copies its table (a dict clean and full enough, a set
    of the same size); the model does the same."""
    if kind is dict and not from_dict:
        return
    source: Any = {} if from_dict else set()
    for key in keys:
        if from_dict:
            source[key] = None
        else:
            source.add(key)
    source_table = ProbeTable(not from_dict)
    source_table.add(keys)
    made, table = kind(source), ProbeTable(kind is not dict)
    table.merge(source, source_table)
    if kind is dict:
        assert table.slots() == dict_slots(made)
    else:  # the entries: the source's (copied) or its keys in its order
        real = set_slots(made)
        copied = _set_by_ids(table, _distinct(keys)) == real
        assert copied or _set_by_ids(table, list(source)) == real


def test_strings_are_left_out_and_merge_takes_a_new_table_only() -> None:
    """Strings and bytes hash with a secret: no pickle aims them, so the
    model leaves them out. merge() makes a new table, of nothing else."""
    table = ProbeTable(False)
    assert table.add(["a", b"b", "c" * 100]) == 0 and len(table) == 0
    table.add([1, "a", 2])
    assert len(table) == 2
    with pytest.raises(ValueError, match="new table"):
        table.merge([3], None)
    with pytest.raises(TypeError):
        ProbeTable(True).add([[1]])  # unhashable, as set.add refuses it


def _crowding_keys(k: int, count: int) -> list[int]:
    """The 32nd review's keys: ints filling every fourth slot of a dict of
    2**k, then ``count`` ints whose perturbed paths stay in those slots and
    join the i -> 5i + 1 cycle in one window: no two of one hash, each
    insert passing those before it."""
    mask = (1 << k) - 1
    order = np.empty(1 << k, np.int64)
    i = 0
    for step in range(1 << k):
        order[i] = step
        i = (5 * i + 1) & mask
    forced, fixed = 0, 3  # bits 0, 1 clear: slots 0 mod 4
    for t in range(1, 6):  # bits 5t, 5t+1 set: the path stays in them
        forced |= 3 << (5 * t)
        fixed |= 3 << (5 * t)
    free = [b for b in range(31) if not fixed >> b & 1]
    index = np.arange(1 << len(free), dtype=np.uint64)
    hashes = np.full(index.shape, forced, np.uint64)
    for j, b in enumerate(free):
        hashes |= ((index >> np.uint64(j)) & np.uint64(1)) << np.uint64(b)
    slot, perturb = hashes & np.uint64(mask), hashes.copy()
    for _ in range(13):
        perturb >>= np.uint64(5)
        slot = (slot * np.uint64(5) + perturb + np.uint64(1)) & np.uint64(mask)
    crowded = hashes[np.argsort(order[slot.astype(np.int64)], kind="stable")]
    chosen = [int(h) for h in crowded[:count]]
    random.Random(2).shuffle(chosen)
    return [4 * j for j in range(1 << (k - 2))] + chosen


def _loaded_in_a_child(streams: list[bytes], timeout: float) -> list[bytes]:
    """What loading each of ``streams`` in safe mode gives, in a fresh process
    under a time limit: b"loaded", or the error's type and message."""
    script = textwrap.dedent(
        """
        import sys, streampickle as sp
        for data in sys.stdin.buffer.read().split(b"--next--"):
            try:
                sp.loads(data, safe=True)
                print("loaded")
            except sp.StreamError as exc:
                print(type(exc).__name__, exc)
        """
    )
    data = b"--next--".join(streams)
    done = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, timeout=timeout
    )
    lines = done.stdout.splitlines()
    assert len(lines) == len(streams), done.stderr
    return lines


def test_keys_crowding_one_path_are_refused_in_time() -> None:
    """A dict of 12,192 plain ints (80 KB) whose paths crowd together passes
    47 million slots (587 a pickle byte; pickle.loads: quadratic, 1 MB of
    them 18 s): past what the model allows (32 a byte), the C path refuses
    it, also beside numpy's calls (safe_calls.py); the counting unpickler,
    which reads a record with a BUILD (a structured array), charges them and
    refuses it too. As many ints of a range or random load."""
    keys = _crowding_keys(15, 8000)
    assert len({hash(key) for key in keys}) == len(keys)
    assert ProbeTable(False).add(keys) > 32 * len(_pickled(dict.fromkeys(keys)))
    with pytest.raises(ValueError, match="paths through their dicts' and sets' tables"):
        check_whole(_pickled(dict.fromkeys(keys)), strict=True)
    built = np.zeros(2, [("a", "<f8")])
    crowded = [dict.fromkeys(keys), [np.zeros(2), dict.fromkeys(keys)]]
    crowded.append([built, dict.fromkeys(keys)])
    plain, calls, counted = _loaded_in_a_child([sp.dumps(o) for o in crowded], timeout=60)
    assert plain.startswith(b"ForbiddenGlobalError safe mode refuses keys whose paths")
    assert calls.startswith(b"ForbiddenGlobalError safe mode refuses keys whose paths")
    assert counted.startswith(b"ForbiddenGlobalError safe mode builds or hashes")
    randoms = random.Random(3).sample(range(1 << 31), len(keys))
    for legit in (list(range(len(keys))), randoms):
        assert check_whole(_pickled(dict.fromkeys(legit)), strict=True) is True
        assert sp.loads(sp.dumps([np.zeros(2), set(legit)]), safe=True)[1] == set(legit)


@pytest.mark.parametrize(
    "keys",
    [
        [i << 40 for i in range(20_000)],  # all in slot 0 at first: 17 a key
        [i / 1024 for i in range(20_000)],  # floats: i << 51 (21 a key)
        [-(i << 39) for i in range(20_000)],
        [(i, j) for i in range(150) for j in range(150)],
        [random.Random(4).getrandbits(64) - (1 << 63) for _ in range(20_000)],
    ],
)
def test_legit_keys_of_strided_hashes_stay_plain(keys: list[Any]) -> None:
    """Keys of equal low bits (multiples of a power of two, dyadic floats)
    share the first steps of their paths, 17-47 slots a key (a few bytes
    each): within what the model allows; so dicts and sets of them, and
    with strings beside them, go to the C unpickler."""
    for obj in (dict.fromkeys(keys), set(keys), {**dict.fromkeys(keys), "a": 1, "b": 2}):
        assert check_whole(_pickled(obj), strict=True) is True
        assert sp.loads(sp.dumps(obj), safe=True) == obj


def test_text_ints_are_read_and_placed() -> None:
    """INT and LONG as text (protocol 0), of up to 18 digits, are read as
    the ints they are (booleans for 00 and 01): placed, and plain."""
    pickled = b"\x80\x04\x8f(I12\nI-123\nI01\nL-5L\n\x90."
    assert pickle.loads(pickled) == {12, -123, True, -5}
    assert check_whole(pickled, strict=True) is True


def _reference_probes(hashes: list[int], others: int = 0) -> int:
    """A dict's slots passed, as _pickle_probes.h describes the table, for
    new keys of distinct hashes: each looked up (its path to an empty slot),
    then, where the table is full, every key placed again in one of the
    least power of two at least 3 times as many slots, and it placed there;
    each slot passed weighed 1 where the table's slots and ``others`` are
    at most 2**16, 2 up to 2**19, else 4. In Python."""
    size, passed, table, entries = 8, 0, [False] * 8, []

    def path_end(h: int) -> int:
        nonlocal passed
        mask, i, perturb = size - 1, h & (size - 1), h
        slots = size + others
        while table[i]:
            passed += 1 if slots <= 1 << 16 else 2 if slots <= 1 << 19 else 4
            perturb >>= 5
            i = (i * 5 + perturb + 1) & mask
        return i

    for h in hashes:
        at = path_end(h)
        if len(entries) >= size * 2 // 3:
            size = 8
            while size < 3 * len(entries):
                size *= 2
            table = [False] * size
            for e in entries:
                table[path_end(e)] = True
            at = path_end(h)
        table[at] = True
        entries.append(h)
    return passed


@pytest.mark.parametrize(
    "count, others", [(1000, 0), (400_000, 0), (1000, 60_000), (1000, 1 << 19)]
)
def test_slots_passed_are_weighed_by_the_tables_size(count: int, others: int) -> None:
    """Each slot passed counts 1 where the record's tables hold at most
    2**16 slots, 2 up to 2**19 and 4 beyond (misses: paths spread over a
    dict of 2**22 slots took 37 ns a slot, 36th review; sixty dicts of 2**16
    filled in turn, 22 ns, 37th), through every resize, as a model written
    apart from it counts them (400,000 keys end in a table of 2**20)."""
    rng = random.Random(count)
    keys = [rng.getrandbits(62) for _ in range(count)]
    hashes = [hash(k) % 2**64 for k in keys]
    passed = ProbeTable(False).add(keys, sys.maxsize, others)
    assert passed == _reference_probes(hashes, others)


def test_a_dict_of_strings_added_to_one_key_at_a_time_loads_in_time() -> None:
    """The counting unpickler made a container's table again from its keys
    on each add where it held none, as for a dict of strings alone (none
    placed): 80,000 of them, then one of them added again 80,000 times by
    SETITEM, took 44 s (36th review); now held once it has more than a few
    keys, it loads as fast as any record there (~0.6 s)."""
    named = b"\x8c\x08builtins\x8c\x03set\x93)R0"  # set(), dropped: a global
    texts = (b"%x" % i for i in range(80_000))
    keys = b"".join(b"\x8c%c%sN" % (len(text), text) for text in texts)
    added = b"\x8c\x01k\x940" + b"h\x00Ns" * 80_000  # memo'd, then from the memo
    pickled = b"\x80\x05" + named + b"}(" + keys + b"u" + added + b"."
    assert len(pickle.loads(pickled)) == 80_001
    assert _loaded_in_a_child([_stream_of(pickled)], timeout=20) == [b"loaded"]


def _stream_of(pickled: bytes) -> bytes:
    """A one-record stream whose record's pickle bytes are ``pickled``."""
    data = io.BytesIO()
    with sp.Pickler(data) as p:
        p.write_record(lambda writer: writer.write(pickled))
    return data.getvalue()


def test_the_model_stops_past_its_limit() -> None:
    """A model passes each slot CPython would, so it stops once past the
    limit asked (a path may be as long as the table, and each resize places
    every key again): the crowding keys, counted to just past 10,000."""
    keys = _crowding_keys(13, 2000)
    assert ProbeTable(False).add(keys) > 1_000_000
    assert ProbeTable(False).add(keys, 10_000) == 10_001
    assert ProbeTable(False).merge(keys, None, 10_000) == 10_001


def test_containers_a_record_drops_are_let_go_by_the_tables() -> None:
    """40,000 dicts of seven strings, each built by SETITEM (so its table is
    held once it has more than a few keys, though none is placed) and
    dropped: the counting unpickler's tables held every one to the end of
    the load (20 times the record's bytes); swept by the containers they
    hold too, ~3 times (tracemalloc, in a fresh process)."""
    named = b"\x8c\x08builtins\x8c\x03set\x93)R0"  # set(), dropped: a global
    one = b"}" + b"".join(b"\x8c\x02k%cNs" % (48 + i) for i in range(7)) + b"0"
    pickled = b"\x80\x05" + named + one * 40_000 + b"N."
    script = textwrap.dedent(
        """
        import sys, tracemalloc, streampickle as sp
        data = sys.stdin.buffer.read()
        tracemalloc.start()
        sp.loads(data, safe=True)
        print(tracemalloc.get_traced_memory()[1])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=_stream_of(pickled),
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert int(done.stdout) < 8 * len(pickled), (int(done.stdout), len(pickled))
