"""Safe mode's count in C of keys whose hash a pickle may choose
(streampickle/_pickle_scan_keys.c): plain data that hashes them goes to the C
unpickler when each hash has no more than a few distinct keys, with every
hash worked out as CPython's own; else to the counting unpickler."""

from __future__ import annotations

import collections
import io
import itertools
import pickle
import struct
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tuple_hash import last_item_hash

import streampickle as sp
from streampickle import safe_budget
from streampickle._pickle_scan import check_whole, key_hashes

PRIME = 2**61 - 1  # ints x + j * PRIME share x's hash
KEY_SHARE = 8  # distinct keys of one chosen hash the pass takes

_NUMBERS = (
    st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
    | st.sampled_from(["", b""])
)
#: Keys whose hash a pickle may choose and the pass reads: tuples of two or
#: three numbers, and ints past 60 bits of up to 64.
_KEYS = st.tuples(_NUMBERS, _NUMBERS) | st.tuples(_NUMBERS, _NUMBERS, _NUMBERS)
_KEYS |= st.integers(2**60, 2**63 - 1) | st.integers(-(2**63), -(2**60) - 1)
#: Any key of numbers and strings, nested: what safe mode judges.
_ANY_KEYS = st.recursive(
    _NUMBERS | st.integers(-(2**64), 2**64) | st.text(max_size=2) | st.binary(max_size=2),
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=5,
)


def _pickled(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=5)


@settings(max_examples=300, deadline=None)
@given(st.lists(_KEYS, min_size=1, max_size=20))
def test_each_key_hash_is_cpythons_own(keys: list[Any]) -> None:
    """The pass works out each hash it counts as CPython does (ints modulo
    2**61 - 1, tuples by xxHash's lanes, floats, None, '' and b'' taken from
    CPython): were one wrong, keys of one hash could hide in different
    buckets of its count."""
    table = dict.fromkeys(keys)
    assert key_hashes(_pickled(table)) == [hash(key) for key in table]
    assert key_hashes(_pickled(set(keys))) == [hash(key) for key in set(keys)]


@pytest.mark.parametrize("distinct", [KEY_SHARE, KEY_SHARE + 1])
def test_more_than_a_few_distinct_keys_of_one_hash_go_to_the_counting_unpickler(
    distinct: int,
) -> None:
    pickled = _pickled(set(_pairs_of_one_hash(distinct)))
    assert check_whole(pickled, strict=True) is (distinct <= KEY_SHARE)
    assert (key_hashes(pickled) is not None) is (distinct <= KEY_SHARE)


def test_equal_keys_built_apart_count_once() -> None:
    """A key equal to one counted (another object, or the int its float or
    boolean equals) is no other key of its hash: dicts that each have their
    own (1, 2), 2**62 and (1.0, True) or (1, 1) stay on the C unpickler."""
    records = [
        {tuple([1, 2]): i, 2**62 + 0 * i: i, tuple([1.0, True] if i % 2 else [1, 1]): i}
        for i in range(1000)
    ]
    pickled = _pickled(records)
    assert check_whole(pickled, strict=True) is True
    assert sp.loads(sp.dumps(records), safe=True) == records


@pytest.mark.parametrize(
    "key",
    [
        ("text", 1, 2),  # a string in a tuple: its hash is not worked out here
        ((1, 2), 3),  # nested
        (1, 2, 3, 4),  # longer than KEY_ITEMS
        frozenset({1, 2}),
        2**64,  # past 64 bits
        (float("nan"), 1),  # hashed by identity
    ],
)
def test_keys_the_pass_does_not_read_go_to_the_counting_unpickler(key: Any) -> None:
    pickled = _pickled({key: 0, (1, 2): 0})
    assert key_hashes(pickled) is None
    assert check_whole(pickled, strict=True) is False
    assert len(sp.loads(sp.dumps({key: 0}), safe=True)) == 1


def _pairs_of_one_hash(count: int) -> list[tuple[int, int]]:
    """(a, b) with b solved so that hash((a, b)) is one value (tuple_hash.py;
    b's hash is itself where it is below 2**60)."""
    pairs = []
    for a in range(10 * count):
        b = last_item_hash(0x123456789ABCDEF, [a], 2)
        if -(2**60) <= b < 2**60 and b != -1:
            pairs.append((a, b))
            if len(pairs) == count:
                return pairs
    raise AssertionError(f"fewer than {count} pairs")


def test_tuples_of_one_hash_are_refused_in_time() -> None:
    """20,000 (a, b) tuples solved for one hash, each read by the pass (two
    ints): it counts more than a few of that hash and leaves the record to
    the counting unpickler, which refuses it, in a child under a time limit
    (taken uncounted, CPython compares each with all before it: minutes)."""
    pairs = _pairs_of_one_hash(20_000)
    assert len({hash(pair) for pair in pairs}) == 1
    pickled = _pickled(set(pairs))
    assert key_hashes(pickled) is None
    data = sp.dumps(set(pairs))
    script = textwrap.dedent(
        """
        import sys, streampickle as sp
        try:
            sp.loads(sys.stdin.buffer.read(), safe=True)
            print("loaded")
        except sp.StreamError as exc:
            print(type(exc).__name__, exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, timeout=60
    )
    assert done.stdout.startswith(b"ForbiddenGlobalError safe mode builds or hashes")


def test_the_pass_holds_memory_bounded_by_the_pickle() -> None:
    """In a fresh process: counting 200,000 distinct tuple keys (each memo'd,
    as picklers write them) takes no more than 32 times the pickle's bytes
    (the pass's room: past it, the record is the counting unpickler's)."""
    script = textwrap.dedent(
        """
        import pickle, tracemalloc
        from streampickle._pickle_scan import check_whole
        keys = {(i, -i): None for i in range(200_000)}
        pickled = pickle.dumps(keys, protocol=5)
        tracemalloc.start()
        plain = check_whole(pickled, strict=True)
        peak = tracemalloc.get_traced_memory()[1]
        print(plain, peak / len(pickled))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=120, check=True
    )
    plain, ratio = done.stdout.split()
    assert plain == b"True"
    assert float(ratio) <= 32


@pytest.mark.parametrize(
    "key, plain",
    [
        (("a", 1), True),  # strings and one number: hashed with the strings' secret
        (("a", "b", 1), True),  # up to 224 variants of a hash: counted by class
        (("a", b"a"), True),  # up to 16 variants of one hash
        (("a", "b", "c"), True),  # 64 variants (a str and bytes of one data hash alike)
        (("a", 1, 2), False),  # two numbers
        (("a", 2**62), True),  # a number of a chosen hash, counted by class
        (("a", ("b", 1)), False),  # nested
    ],
)
def test_a_shared_string_in_tuple_keys_stays_on_the_c_unpickler(
    key: Any, plain: bool
) -> None:
    """1000 dicts whose keys share one string object (memo'd: shared,
    tuples, hashed) load on the C unpickler where each key's hash is secret
    or its variants of one hash are counted by the count in C; else
    (key_hashes: None) the counting unpickler."""
    shared = "a key prefix shared by every tuple"
    records = [{(shared, *key[1:]): i, (shared, i): i} for i in range(1000)]
    pickled = _pickled(records)
    assert check_whole(pickled, strict=True) is plain
    assert (key_hashes(pickled) == []) is plain


@pytest.mark.parametrize(
    "key, plain",
    [
        (lambda i: ("x", i), True),  # 4 variants of a string, ~16 of a number: 64
        (lambda i: ("x", "y"), True),  # 16
        (lambda i: ("x", "y", i), True),  # 256: counted by class, one key in each
        (lambda i: ("x", "y", i, i), False),  # two numbers
    ],
)
def test_short_strings_shared_in_tuple_keys_with_many_variants_are_counted(
    key: Any, plain: bool
) -> None:
    """However short its strings, a tuple key with more than 64 variants of
    its hash, re-added from the memo or by a DUP (a byte), is compared with
    each at ~30 ns (34th review: 192 of one hash, 4-6 s a MB on the C
    unpickler): counted, by the count in C where it reads the key."""
    records = [{key(i): i} for i in range(1000)]  # "x", "y": one object each, shared
    pickled = _pickled(records)
    assert check_whole(pickled, strict=True) is plain


@pytest.mark.parametrize(
    "size, plain",
    [
        (63, True),  # 64 variants of one hash each compared: 4032 bytes of memcmp
        (64, False),
    ],
)
def test_a_longer_string_shared_in_tuple_keys_goes_to_the_counting_unpickler(
    size: int, plain: bool
) -> None:
    """A string compared with an equal one that is not the same object is
    compared byte by byte, and a tuple of it and a number has up to 64
    variants of one hash (4 of a string, ~16 of a number: 33rd review, 48
    such keys, one re-added from the memo 500,000 times, 125 GB of memcmp
    from 1 MB): where a record shares objects, one whose compares with the
    others of its hash may cost more than one string of 4 KiB is counted in
    Python; a shorter one is not. A string alone, up to 4 KiB."""
    text = "x" * size
    pickled = _pickled([{(text, i): i} for i in range(10)])
    assert check_whole(pickled, strict=True) is plain
    for length, alone in ((4000, True), (5000, False)):
        shared = "x" * length  # one object, in each dict
        pickled = _pickled([{shared: i} for i in range(10)])
        assert check_whole(pickled, strict=True, count_keys=False) is alone
        assert check_whole(pickled, strict=True) is alone


@settings(max_examples=500, deadline=None)
@given(st.lists(_ANY_KEYS | _KEYS | st.tuples(st.text(max_size=2), _NUMBERS), max_size=6))
@example([((0, "0"),)])  # a number wrapped twice, among strings: chosen
def test_the_count_takes_as_chosen_the_keys_safe_mode_counts(keys: list[Any]) -> None:
    """Where the count in C takes a record, it counted each key whose hash
    a pickle may choose as the counting unpickler would have
    (safe_budget.chosen), and no other: a key it passed as unchosen goes to
    CPython uncounted."""
    table = dict.fromkeys(keys)
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=5)
    pickler.fast = True  # no memo: each key as it is
    pickler.dump(table)
    counted = key_hashes(out.getvalue())
    if counted is not None:  # (tuples of strings: counted by class, not listed)
        assert counted == [
            hash(key) for key in table if safe_budget.chosen(key) and not _texts_in(key)
        ]


def _texts_in(key: Any) -> int:
    """The strings of a tuple key (not '' or b'', which count as numbers)."""
    if not isinstance(key, tuple):
        return 0
    return sum(isinstance(k, str | bytes) and len(k) > 0 for k in key)


#: Four strings of one hash: their data bytes are the same (latin-1, bytes,
#: UCS-2 and UCS-4), and they are distinct keys.
_VARIANTS = ["\x01\x01\x01\x00", b"\x01\x01\x01\x00", "\u0101\u0001", "\U00010101"]


def _le32(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def _put(slot: int) -> bytes:
    return b"r" + struct.pack("<I", slot)  # LONG_BINPUT


def _get(slot: int) -> bytes:
    return b"j" + struct.pack("<I", slot)  # LONG_BINGET


def test_strings_from_the_memo_count_as_strings() -> None:
    """Tuples of three of the variants, each from the memo: 64 keys of one
    hash (33rd review: the memo gave back a string without its count, and
    nested, 4**9 keys of one hash took 47 s from 351 KB on the C
    unpickler). Counted in Python."""
    assert len({hash(v) for v in _VARIANTS}) == 1 and len(set(_VARIANTS)) == 4
    ops = [b"C" + bytes([len(v)]) + v if isinstance(v, bytes) else b"X" + _le32(v.encode())
           for v in _VARIANTS]  # fmt: skip
    body = b"".join(op + _put(i) + b"0" for i, op in enumerate(ops))
    triples = itertools.product(range(4), repeat=3)
    keys = b"".join(_get(a) + _get(b) + _get(c) + b"\x87" for a, b, c in triples)
    pickled = b"\x80\x04" + body + b"\x8f(" + keys + b"\x90."
    assert len(pickle.loads(pickled)) == 64
    assert key_hashes(pickled) is None
    assert check_whole(pickled, strict=True) is False


def test_a_tuple_of_tuples_from_the_memo_is_counted() -> None:
    """T = (T', T') thirty times over from a string, each from the memo,
    added to a set: hashing it visits 2**30 strings (33rd review: 256 bytes,
    9.4 s on the C unpickler). A tuple in a tuple is hashed again each time:
    counted in Python."""
    body = b"\x8c\x01a" + _put(0) + b"0"
    for level in range(30):
        body += _get(level) + _get(level) + b"\x86" + _put(level + 1) + b"0"
    pickled = b"\x80\x04" + body + b"\x8f(" + _get(30) + b"\x90."
    assert key_hashes(pickled) is None
    assert check_whole(pickled, strict=True) is False


def _forms(data: bytes) -> list[str | bytes]:
    """Every string whose data bytes, as CPython holds them, are ``data``:
    the bytes, a str of a byte a character, and where ``data`` allows, of 2
    or 4 (lone surrogates too): one secret hash, four distinct keys."""
    forms: list[str | bytes] = [data, data.decode("latin-1")]
    for width, code in ((2, "H"), (4, "I")):
        if len(data) % width == 0:
            units = struct.unpack(f"<{len(data) // width}{code}", data)
            if (0xFF if width == 2 else 0xFFFF) < max(units) <= 0x10FFFF:
                forms.append("".join(map(chr, units)))
    return forms


_DATA = [b"\x00\x01\x01\x00", b"\x01\x01", b"ab", b"\xe9\x00\x00\xd8", b"\x00\xdc\x10\x00"]
_LANE = st.sampled_from(_DATA).flatmap(lambda data: st.sampled_from(_forms(data)))
_STRING_TUPLES = st.builds(
    lambda lanes, number, at: tuple(lanes[:at] + number + lanes[at:]),
    st.lists(_LANE, min_size=1, max_size=5),
    st.sampled_from([[], [1], [-1], [-2], [1.0], [True], [1 + PRIME], [2**62]]),
    st.integers(0, 5),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_STRING_TUPLES, min_size=1, max_size=40))
@example([(s, t, u) for s in _forms(_DATA[0])[:3] for t in _forms(_DATA[0])[:3]
          for u in _forms(_DATA[0])[:1]])  # fmt: skip
def test_tuples_of_strings_are_counted_by_the_hash_cpython_gives_them(
    keys: list[Any],
) -> None:
    """Tuples of strings in every form (bytes; a str of 1, 2 or 4 bytes a
    character) and at most one number, whose variants of one hash a pickle
    may multiply (more than two strings, or two and a number, or a number
    of a chosen hash): the count in C takes a record of them exactly where
    no hash CPython gives them has more than 8 distinct keys, and it loads
    as it was."""
    table = dict.fromkeys(keys)
    counted = [
        key
        for key in table
        if _texts_in(key) > 2
        or (_texts_in(key) == 2 and len(key) == 3)
        or any(k in (1 + PRIME, 2**62) for k in key if not isinstance(k, str | bytes))
    ]
    crowded = max(collections.Counter(map(hash, counted)).values(), default=0) > KEY_SHARE
    pickled = _pickled(table)
    assert check_whole(pickled, strict=True) is not crowded
    assert sp.loads(sp.dumps(table), safe=True) == table


@pytest.mark.parametrize(
    "lanes, plain",
    [
        (["a" * 131] * 3, True),  # 3 lanes of 64 and 393 bytes: 585
        (["a" * 132] * 3, False),
        (["a"] * 9, True),  # 9 of 64 and 9 bytes
        (["a"] * 10, False),  # (40th review: 62 lanes re-added, 3 s a MB)
        (["a" * 30 + "\U00010000"] * 3, True),  # 4 bytes a character: 372
        (["a" * 32 + "\U00010000"] * 3, False),  # 396
    ],
)
def test_tuple_keys_whose_compares_cost_more_than_4_kib_go_to_the_counting_unpickler(
    lanes: list[str], plain: bool
) -> None:
    """A key added is compared with each other key of its class (7 at most),
    lane by lane (~10-15 ns each), byte by byte where equal strings are not
    one object: counted in C up to 585 bytes a compare (7 x 585 < 4 KiB, as
    one long string's), a lane 64, its strings' data as CPython holds it (1,
    2 or 4 bytes a character); else in Python."""
    last = lanes[-1]
    keys = [(*lanes[:-1], last[:-1] + chr(ord(last[-1]) + i)) for i in range(10)]
    assert check_whole(_pickled(dict.fromkeys(keys)), strict=True) is plain


def test_a_tuple_key_of_malformed_utf8_goes_to_the_counting_unpickler() -> None:
    """A string the count cannot read as CPython would (UTF-8 CPython's
    decoder refuses) leaves its key to Python, whose unpickler refuses it."""
    bad = b"\x8c\x02\xc0\xaf"  # an overlong '/'
    keys = b"".join(b"\x8c\x01" + c + bad + b"\x8c\x01z\x87" for c in (b"a", b"b"))
    pickled = b"\x80\x04\x8f(" + keys + b"\x90."
    assert check_whole(pickled, strict=True) is False
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(pickled)
