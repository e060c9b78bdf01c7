"""The C check of pickle bytes (streampickle/_pickle_scan.c) and the reader's
use of it: every record's pickle is scanned before the unpickler runs it, and
a small record of plain data is read by ``pickle.loads``.

The scan is held to CPython's own unpickler (what it loads, the scan must
take; where the scan finds the stack broken, the unpickler must fail too) and
to ``pickletools``' opcode table (where STOP is, which opcodes build plain
data, which memo slots are named), on pickles of plain data at every protocol,
on those pickles damaged, and on garbage, fed whole and in pieces.
"""

from __future__ import annotations

import gc
import io
import pickle
import pickletools
import struct
import sys
import warnings
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streampickle as sp
from streampickle import format as fmt
from streampickle import safe_budget, unpickler
from streampickle._pickle_scan import PickleScan, check_whole

#: Opcodes that reach code, a hook or an out-of-band buffer: not plain.
REACHES_CODE = {
    "GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "REDUCE",
    "BUILD", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID", "NEXT_BUFFER",
    "READONLY_BUFFER",
}  # fmt: skip
MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
#: The scan's refusals that are its own limits, not the unpickler's.
GUARDS = (
    "memo slot numbered past",
    "nested deeper than",
    "past the end of the pickle",
    "FRAME",  # stricter than CPython reading through peek, as Python's own unpickler
)


def outcome(check: Any, data: Any) -> Any:
    try:
        return check(data)
    except ValueError as exc:
        return exc.args


def reference(data: bytes) -> tuple[int | None, bool] | None:
    """From pickletools: None if ``data`` is not one whole pickle with STOP
    last; else where the first memo slot is named past the stores before it
    (or None), and whether every opcode builds plain data."""
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # malformed: pickletools' own errors are of several kinds
        return None
    if not ops or ops[-1][0].name != "STOP" or len(data) != ops[-1][2] + 1:
        return None
    plain = all(op.name not in REACHES_CODE for op, _, _ in ops)
    slot = slot_past_the_stores(data)
    return (None if slot is None or slot < 0 else slot), plain


def slot_past_the_stores(data: bytes) -> int | None:
    """The offset of the first PUT that names a slot past the memo stores
    before it; or -(1 + the offset) of an opcode pickletools cannot read
    (its arguments decoded: bad UTF-8 too) before any such PUT."""
    stores, at = 0, 0
    try:
        for op, arg, at in pickletools.genops(data):
            if op.name in MEMO_PUTS:
                if int(arg) > stores:
                    return at
                stores += 1
            stores += op.name == "MEMOIZE"
    except Exception:
        return -1 - at
    return None


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError("no globals here")


class PeekFile:
    """What the reader gives CPython's unpickler (records.WholeRecord): a file
    with ``peek``. (Without it, as io.BytesIO, the C unpickler drops what is
    left of a FRAME when an opcode runs past its end.)"""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        start = self.pos
        self.pos = len(self.data) if n < 0 else min(start + n, len(self.data))
        return self.data[start : self.pos]

    def peek(self, n: int = 0) -> bytes:
        return self.data[self.pos :]

    def readline(self) -> bytes:
        end = self.data.find(b"\n", self.pos) + 1 or len(self.data)
        return self.read(end - self.pos)


def cpython_result(data: bytes) -> BaseException | None:
    """None if CPython's unpickler loads ``data`` (no globals, no buffers, no
    persistent IDs) and stops at its last byte, else what it raised."""
    file = PeekFile(data)
    try:
        _NoGlobals(file, buffers=()).load()
    except Exception as exc:
        return exc
    return None if file.pos == len(data) else ValueError("bytes after STOP")


def cpython_loads(data: bytes) -> bool:
    return cpython_result(data) is None


#: CPython's own messages for a broken stack, marks or memo (Modules/_pickle.c).
STACK_ERRORS = (
    "unpickling stack underflow", "could not find MARK", "unexpected MARK found",
    "odd number of items", "Memo value not found",
)  # fmt: skip


def assert_scan_refuses_a_broken_stack(data: bytes) -> None:
    """The other half: where CPython's unpickler fails on its stack, marks or
    memo, the scan (following the stack: PickleScan) has refused, so it never
    tracks on past a point where the unpickler stops."""
    error = cpython_result(data)
    if isinstance(error, pickle.UnpicklingError) and any(
        message in str(error) for message in STACK_ERRORS
    ):
        assert refusal(scan_in_pieces(data, [])) is not None, (data, error)


def scan_in_pieces(data: bytes, cuts: list[int]) -> Any:
    scan = PickleScan()
    try:
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            scan.feed(data[a:b])
    except ValueError as exc:
        return exc.args
    return scan.stopped, scan.plain, scan.owed


def refusal(got: Any) -> tuple[str, int] | None:
    """The scan's (what, offset) if ``got`` is one, else None."""
    return got if isinstance(got, tuple) and isinstance(got[0], str) else None


def assert_scan_agrees_with_cpython(data: bytes) -> None:
    """What CPython loads, the scan takes (but for its guards, which
    pickletools confirms), plain as pickletools' table says; where the scan
    finds the stack broken, CPython fails too. Both ways: ``check_whole``
    (which follows the stack only where a pickle has enough tuple and
    REDUCE-like opcodes to nest too deep) and ``PickleScan`` (which always
    does)."""
    whole = outcome(check_whole, data)
    fed = scan_in_pieces(data, [])
    slot = slot_past_the_stores(data)  # >= 0: CPython would grow its memo to it
    for got in map(refusal, (whole, fed)):
        if got is not None and "memo slot" in got[0]:
            assert slot is not None and (slot < 0 or slot == got[1]), (data, got)
            return
        if got is not None and any(guard in got[0] for guard in GUARDS):
            return  # a limit of the scan's own (a FRAME rule, depth, a claimed length)
        assert slot is None or slot < 0 or (got is not None and slot >= got[1]), (data, got)
    if slot is not None and slot >= 0:
        return
    broken = refusal(fed)
    if cpython_loads(data):
        ref = reference(data)
        assert whole in (True, False) and (ref is None or whole is ref[1]), (data, whole)
        assert fed == (True, whole, 0), (data, fed)
    elif broken is not None and not any(guard in broken[0] for guard in GUARDS):
        assert not cpython_loads(data)  # a broken stack: CPython fails too
    # else: the scan may take what the unpickler then refuses (a bad callable,
    # a bad float, an unknown protocol): it checks the stack, not the values


hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
plain = st.recursive(
    hashable | st.floats() | st.binary(min_size=200, max_size=600).map(bytearray)
    | st.integers(min_value=-(2**600), max_value=2**600),
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner, inner)
    | st.dictionaries(hashable, inner, max_size=4) | st.sets(hashable, max_size=4),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(plain, st.integers(0, 5))
def test_pickles_of_plain_data_pass_at_every_protocol_and_are_plain_at_5(
    obj: Any, protocol: int
) -> None:
    pickled = pickle.dumps(obj, protocol=protocol)
    ref = reference(pickled)
    assert ref is not None and ref[0] is None
    assert check_whole(pickled) is ref[1]
    if protocol == 5:  # what our writer makes of plain data (sets and bytes
        assert ref[1]  # need REDUCE at lower protocols)


def damaged(data: Any, pickled: bytearray) -> bytes:
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(pickled)))
        edit = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if edit == "flip" and at < len(pickled):
            pickled[at] ^= 1 << data.draw(st.integers(0, 7))
        elif edit == "cut":
            del pickled[at:]
        elif edit == "insert":
            pickled[at:at] = data.draw(st.binary(min_size=1, max_size=9))
        elif at < len(pickled):
            del pickled[at]
    return bytes(pickled)


@settings(max_examples=400, deadline=None)
@given(plain, st.data())
def test_the_scan_agrees_with_cpython_on_damaged_pickles(obj: Any, data: Any) -> None:
    pickled = damaged(data, bytearray(pickle.dumps(obj, data.draw(st.integers(0, 5)))))
    assert_scan_agrees_with_cpython(pickled)


OPCODES = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}
opcode_soup = st.lists(
    st.sampled_from(sorted(OPCODES)).map(lambda b: bytes([b])) | st.binary(max_size=9),
    max_size=40,
).map(b"".join)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300) | opcode_soup)
def test_the_scan_agrees_with_cpython_on_garbage(data: bytes) -> None:
    assert_scan_agrees_with_cpython(data + b".")


def shortest_argument(op: pickletools.OpcodeInfo) -> bytes:
    """A well-formed argument of ``op``: zeros, an empty length, or a line."""
    n = op.arg.n if op.arg is not None else 0
    if n == pickletools.UP_TO_NEWLINE:
        return b"0\n"
    widths = {
        pickletools.TAKEN_FROM_ARGUMENT1: 1,
        pickletools.TAKEN_FROM_ARGUMENT4: 4,
        pickletools.TAKEN_FROM_ARGUMENT4U: 4,
        pickletools.TAKEN_FROM_ARGUMENT8U: 8,
    }
    return bytes(n if n >= 0 else widths[n])


#: Stacks to run each opcode on: empty; a mark alone; a dict under a mark
#: with a key and value; a list (memo 0) and a tuple above a mark.
CONTEXTS = [
    b"",
    b"(",
    b"}(K\x01K\x02",
    b"]\x94(K\x01)",
    b"(K\x01",
    b"]\x94(K\x01K\x02K\x03",
]


@pytest.mark.parametrize(
    "context", CONTEXTS, ids=["empty", "mark", "dict", "list", "mark-item", "list-items"]
)
@pytest.mark.parametrize("code", range(256))
def test_each_opcode_moves_the_stack_as_cpython_does(code: int, context: bytes) -> None:
    op = OPCODES.get(code)
    arg = shortest_argument(op) if op else b""
    for after in (b".", b"0.", b"1N.", b"t.", b"a.", b"e.", b"u."):
        pickled = b"\x80\x05" + context + bytes([code]) + arg + after
        assert_scan_agrees_with_cpython(pickled)
        assert_scan_refuses_a_broken_stack(pickled)


STACK_SOUP = [
    b"(", b"(", b"0", b"1", b"2", b"N", b"K\x01", b"]", b"}", b")", b"\x8f", b"\x85",
    b"\x86", b"\x87", b"t", b"l", b"d", b"\x91", b"a", b"e", b"s", b"u", b"\x90", b"b",
    b"R", b"\x81", b"\x92", b"o", b"\x93", b"\x94", b"q\x00", b"h\x00", b"h\x01", b"Q",
    b"\x98", b".",
]  # fmt: skip


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(STACK_SOUP), max_size=25).map(b"".join))
def test_the_scan_refuses_every_broken_stack_cpython_refuses(data: bytes) -> None:
    assert_scan_refuses_a_broken_stack(b"\x80\x05" + data + b".")


@pytest.mark.parametrize(
    "pickled",
    [
        b"\x80\x05.",  # STOP on an empty stack
        b"\x80\x05\x85.", b"\x80\x05(\x85.", b"\x80\x05]\x94(K\x01)\x870.",  # TUPLEn
        b"\x80\x05(o.", b"\x80\x05(K\x01d.", b"\x80\x05}(K\x01u.",  # OBJ, odd DICT/SETITEMS
        b"\x80\x05](K\x01a.", b"\x80\x05(K\x01a.", b"\x80\x05](K\x01b.",  # below the fence
    ],
)  # fmt: skip
def test_broken_stacks_cpython_refuses_are_refused(pickled: bytes) -> None:
    error = cpython_result(pickled)
    assert isinstance(error, pickle.UnpicklingError), error
    assert refusal(scan_in_pieces(pickled, [])) is not None


def test_tuples_of_the_mark_opcode_count_towards_the_depth() -> None:
    limit = sys.getrecursionlimit()

    def nested(depth: int) -> bytes:
        return b"(" * depth + b"N" + b"t" * depth + b"."

    assert check_whole(nested(limit)) is True
    assert outcome(check_whole, nested(limit + 1))[0].startswith("objects nested deeper")


def test_readonly_buffer_alone_is_not_plain() -> None:
    pickled = b"\x80\x05C\x01x\x98."
    assert pickle.loads(pickled) == b"x"
    assert check_whole(pickled) is False
    assert scan_in_pieces(pickled, [3]) == (True, False, 0)


@pytest.mark.parametrize("blanks", [0, 38, 39, 40, 50])
def test_a_text_memo_slot_is_judged_alike_whole_and_cut_anywhere(blanks: int) -> None:
    """Up to 40 characters before its newline are taken; more are refused,
    whole or cut (CPython takes any number of blanks; no pickler writes them)."""
    pickled = b"Np" + b" " * blanks + b"0\n."
    whole = scan_in_pieces(pickled, [])
    assert whole == ((True, True, 0) if blanks < 40 else whole)
    assert refusal(outcome(check_whole, pickled)) == refusal(whole)
    for cut in range(len(pickled) + 1):
        assert scan_in_pieces(pickled, [cut]) == whole, cut


@pytest.mark.parametrize(
    "pickled", [b"(lp0\x00\n.", b"(lp0\x00 zz\n.", b"(lp\x000\n.", b"(lp0\n g0\x00\x01\n."]
)
def test_a_text_memo_slot_ends_at_a_nul_byte_as_cpython_reads_it(pickled: bytes) -> None:
    """CPython reads a PUT/GET argument as a C string (hypothesis found the
    scan refusing ``p0\\x00``, which CPython takes as slot 0)."""
    whole = scan_in_pieces(pickled, [])
    assert (whole == (True, True, 0)) is cpython_loads(pickled), whole
    for cut in range(len(pickled) + 1):
        assert scan_in_pieces(pickled, [cut]) == whole, cut


@settings(max_examples=600, deadline=None)
@given(plain, st.data())
def test_the_scan_says_the_same_of_a_pickle_in_any_pieces(obj: Any, data: Any) -> None:
    """Frames may cut a pickle inside an opcode or its argument."""
    pickled = pickle.dumps(obj, data.draw(st.integers(0, 5)))
    if data.draw(st.booleans()):
        pickled = damaged(data, bytearray(pickled))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(pickled)), max_size=8)))
    assert scan_in_pieces(pickled, cuts) == scan_in_pieces(pickled, [])


def test_the_scan_says_the_same_of_a_pickle_cut_at_every_offset() -> None:
    pickled = pickle.dumps({"a": [1, 2.5, "x" * 300, (None, True)], b"k": {3}}, 0)
    pickled += pickle.dumps(None, 0)  # bytes after STOP
    whole = scan_in_pieces(pickled, [])
    assert whole[0].startswith("pickle bytes after STOP")
    for cut in range(len(pickled) + 1):
        assert scan_in_pieces(pickled, [cut]) == whole
        assert scan_in_pieces(pickled, list(range(len(pickled)))) == whole


# -- the guards -------------------------------------------------------------


def test_a_memo_slot_may_be_at_most_the_number_of_stores_before_it() -> None:
    assert check_whole(b"\x80\x02Nq\x00Nq\x01Nq\x02]q\x02.") is True  # reused: fine
    assert outcome(check_whole, b"\x80\x02Nq\x00Nq\x02.") == (
        "a memo slot numbered past the stores before it",
        6,
    )
    big = b"\x80\x04Nr" + struct.pack("<I", 1 << 26) + b"."
    assert outcome(check_whole, big)[0].startswith("a memo slot numbered past")
    assert check_whole(b"Np0\np1\ng1\n.") is True  # protocol 0 text slots
    assert outcome(check_whole, b"Np0\np5\n.")[0].startswith("a memo slot numbered past")
    assert (
        outcome(check_whole, b"Np-1\n.")[0] == "a memo argument that is not a slot number"
    )


def nested_tuples(depth: int) -> bytes:
    return b"\x80\x04N" + b"\x85" * depth + b"."


def test_tuples_may_nest_as_deep_as_the_recursion_limit_and_no_deeper() -> None:
    """CPython's pickler cannot write deeper either (each level is a call)."""
    limit = sys.getrecursionlimit()
    for scan in (check_whole, lambda data: scan_in_pieces(data, [])):
        assert outcome(scan, nested_tuples(limit)) in (True, (True, True, 0))
        assert outcome(scan, nested_tuples(limit + 1)) == (
            "objects nested deeper than sys.getrecursionlimit() levels (at most 2000)",
            limit + 3,
        )


def test_the_depth_allowed_follows_the_recursion_limit_up_to_2000() -> None:
    """Freeing numpy object arrays nested ~5,000 deep overflows the C stack
    whatever the limit, so 2000 caps it."""
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(1500)
        assert check_whole(nested_tuples(1500)) is True
        assert outcome(check_whole, nested_tuples(1501))[0].startswith("objects nested")
        sys.setrecursionlimit(100_000)
        assert check_whole(nested_tuples(2000)) is True
        assert outcome(check_whole, nested_tuples(2001))[0].startswith("objects nested")
    finally:
        sys.setrecursionlimit(limit)


def test_lists_and_dicts_nest_without_limit_for_they_are_never_hashed() -> None:
    deep = b"\x80\x04" + b"]" * 100_000 + b"a" * 99_999 + b"."
    assert check_whole(deep) is True
    assert pickle.loads(deep) is not None


def test_a_list_that_holds_itself_in_many_batches_does_not_grow_deeper() -> None:
    items = [0] * 3_000_000
    items[::1000] = [items] * 3000  # a reference to itself in each batch of APPENDS
    assert check_whole(pickle.dumps(items, 5)) is True


def test_a_list_changed_after_it_was_memoized_is_seen_changed() -> None:
    """tuple(L) of a list L filled after it was memoized: the tuple holds what
    L holds now. (Ids, not copies, on the scan's stack: a copy would see L
    empty, and 600 + 600 levels would pass.)"""
    chain = b"N" + b"\x85" * 600
    pickled = (
        b"\x80\x04\x8c\x08builtins\x94\x8c\x05tuple\x94\x93\x94"  # tuple, memo 2
        + b"]\x94"  # L, memo 3
        + chain
        + b"a0"  # L.append(chain); drop L
        + b"h\x02h\x03\x85R"  # tuple(L)
        + b"\x85" * 600
        + b"."
    )
    assert outcome(check_whole, pickled)[0].startswith("objects nested deeper than")
    assert check_whole(pickled[:-601] + b"\x85" * 100 + b".") is False


def laundered(levels: int) -> bytes:
    """tuple(*T) with T = (L,) built while L was empty, L given the tuple of
    the level below only then: heights taken when T was built stay low."""

    def get(slot: int) -> bytes:
        return b"j" + struct.pack("<I", slot)

    setup = b"".join(get(0) + b"]\x94\x85" + get(i + 1) for i in range(levels))
    return b"\x80\x04cbuiltins\ntuple\n\x940" + setup + b")" + b"a0R" * levels + b"."


def test_strict_refuses_nesting_that_heights_cannot_bound() -> None:
    """Past sys.getrecursionlimit() tuples and objects, a container changed
    after another took it leaves heights unsound if a callable copies it (the
    laundering above): strict (safe mode) refuses a pickle that names one;
    without strict, such a pickle can run any code anyway."""
    limit = sys.getrecursionlimit()
    deep = laundered(limit + 10)
    assert outcome(lambda d: check_whole(d, strict=True), deep)[0].startswith(
        "safe mode refuses more tuples and objects than sys.getrecursionlimit()"
    )
    assert check_whole(deep) is False  # heights say 2
    # too few to matter; its code calls alone (of builtins.tuple, which the C
    # path of numpy's calls does not give it: safe_calls.py)
    assert check_whole(laundered(limit // 2 - 5), strict=True) == 2
    # Many tuples and a list that holds a tuple holding it (a late change), but
    # fewer than the limit of objects: fine; many tuples, no late change: fine.
    cycle = b"\x80\x04]\x94h\x00\x85a"  # L = []; L.append((L,))
    tuples = b"N\x85" * (limit - 10) + b"0" * (limit - 10)
    assert check_whole(cycle + tuples + b".", strict=True) is True
    many = pickle.dumps([(i,) for i in range(5 * limit)], 5)
    assert check_whole(many, strict=True) is True
    # Past the limit, a late change in plain data: no callable to copy it
    # deeper (fourteenth review: refused); a global after it: refused.
    past = b"N\x85" * (limit + 10) + b"0" * (limit + 10)
    assert check_whole(cycle + past + b".", strict=True) is True
    PickleScan(strict=True).feed(cycle + past + b".")
    named = cycle + past + b"cbuiltins\nlen\n0."
    for scan in (lambda d: check_whole(d, strict=True), PickleScan(strict=True).feed):
        assert outcome(scan, named)[0].startswith("safe mode refuses more tuples"), scan
    assert check_whole(named) is False


def framed(body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return b"\x95" + n.to_bytes(8, "little") + body


@pytest.mark.parametrize(
    "pickled",
    [
        framed(b"N0" * 5 + b"J\xaa", 12) + b"\x00\x00\x00.",  # a fixed argument
        framed(b"N0\x8c\x05ab", 6) + b"cde0N.",  # a length-prefixed one
        framed(b"N0I12", 5) + b"34\n0N.",  # a text line
        framed(b"N0p0", 4) + b"\n0N.",  # a memo slot's line
        framed(b"N0" + framed(b"N0", 2), 13) + b"N.",  # a FRAME inside a FRAME
    ],
    ids=["fixed", "sized", "text", "slot", "frame-in-frame"],
)
def test_an_opcode_that_runs_past_its_frame_is_refused_as_python_refuses_it(
    pickled: bytes,
) -> None:
    """CPython's C unpickler, reading a FRAME whole from a file, drops what is
    left of it when an opcode runs past its end and reads on after it: it
    would run other opcodes than the scan saw. Python's own unpickler refuses
    these pickles; so does the scan, whole and in any pieces."""
    with pytest.raises(pickle.UnpicklingError):
        pickle._loads(pickled)  # type: ignore[attr-defined]
    whole = refusal(outcome(check_whole, pickled))
    assert whole is not None and "FRAME" in whole[0], whole
    for cut in range(len(pickled) + 1):
        fed = refusal(scan_in_pieces(pickled, [cut]))
        assert fed is not None and "FRAME" in fed[0], (cut, fed)


def test_pickles_whose_frames_hold_whole_opcodes_pass() -> None:
    data = {"a": list(range(50_000)), "b": ["x" * 100] * 2000, "c": b"y" * 300_000}
    pickled = pickle.dumps(data, 5)
    assert pickled.count(b"\x95") >= 1
    assert check_whole(pickled) is True
    assert scan_in_pieces(pickled, list(range(0, len(pickled), 4093))) == (True, True, 0)


@pytest.mark.parametrize(
    "pickled, what",
    [
        (b"\x8d" + (1 << 63).to_bytes(8, "little") + b".", "a length past the largest"),
        (b"\x8b\xff\xff\xff\xff.", "a negative length"),
        (b"T\x00\x00\x00\x80.", "a negative length"),
        (b"X\xff\xff\xff\xffab.", "a length past the end of the pickle"),
        (b"\x95" + (10).to_bytes(8, "little") + b"N.", "a FRAME past the end"),
        (b"\x95" + (2**64 - 1).to_bytes(8, "little") + b"N.", "a FRAME past the end"),
        (b"I12", "a text argument without its newline"),
        (b"N", "no STOP"),
        (b"", "no STOP"),
        (b"\x8e\x00\x00", "an opcode cut off by the end of the pickle"),
    ],
)
def test_hostile_and_short_lengths_are_refused_in_a_whole_pickle(
    pickled: bytes, what: str
) -> None:
    assert outcome(check_whole, pickled)[0].startswith(what)


def test_a_streamed_pickle_owes_the_rest_of_an_argument_it_has_begun() -> None:
    scan = PickleScan()
    scan.feed(b"\x80\x05\x8e" + (1 << 40).to_bytes(8, "little") + b"abc")
    assert (scan.owed, scan.stopped) == ((1 << 40) - 3, False)
    scan.feed(memoryview(b"x" * 1000))
    assert scan.owed == (1 << 40) - 1003
    scan.reset()
    scan.feed(b"N.")
    assert (scan.owed, scan.stopped, scan.plain) == (0, True, True)
    with pytest.raises(ValueError, match="pickle bytes after STOP"):
        scan.feed(b"N")


def _binunicode(n: int) -> bytes:
    return b"X" + struct.pack("<I", n) + b"x" * n


@pytest.mark.parametrize(
    "body, shares_costly_hashed, keys_read",
    [
        (b"(K\x00\x85" + b"2\x86" * 3 + b"\x91", True, False),  # DUP, tuples, FROZENSET
        (b"}K\x00\x85\x940h\x00Ns", True, True),  # GET, a tuple key, SETITEM
        (b"(\x8b\x01\x00\x00\x00\x01\x94h\x00\x91", True, False),  # GET, LONG4
        (b"(\x8c\x01a\x85\x8c\x01b\x86\x91", False, True),  # nothing shared
        (b"(K\x00\x85" + b"2\x86" * 3 + b"l", False, True),  # nothing hashed
        (b"(\x91\x94(h\x00\x91", True, False),  # GET, FROZENSET (compared item by item)
        (b"\x8f(K\x00\x94h\x00\x90", False, True),  # nothing whose hash grows with it
        (b"}" + _binunicode(300) + b"\x94K\x01sh\x00K\x02s", False, True),  # a short text
        (b"}" + _binunicode(5000) + b"\x94K\x01sh\x00K\x02s", True, False),  # compared
        (b"\x8f(L" + b"9" * 300 + b"L\n\x94h\x00\x90", True, False),  # a long int, text
        (b"\x8f(I12\n\x94h\x00\x90", False, True),  # a short one
    ],
)
def test_strict_runs_pickles_that_hash_shared_tuples_with_the_checked_unpickler(
    body: bytes, shares_costly_hashed: bool, keys_read: bool
) -> None:
    """A tuple hashes its items each time: shared, eighty tuples hash 2**80
    items (equal frozensets compare so). Strict mode (safe) takes such a
    pickle for not plain (count_keys=False), so that the unpickler that
    counts what hashing visits runs it; plain otherwise, or where every key
    it hashes is one _pickle_scan_keys.c reads, each hashed in a few steps
    (numbers, tuples of up to three, strings shorter than 4 KiB)."""
    pickled = b"\x80\x04" + body + b"."
    pickle.loads(pickled)  # a pickle CPython loads
    assert check_whole(pickled) is True
    assert check_whole(pickled, strict=True, count_keys=False) is not shares_costly_hashed
    plain = not shares_costly_hashed or keys_read
    assert check_whole(pickled, strict=True) is plain


def _binfloat(x: float) -> bytes:
    return b"G" + struct.pack(">d", x)


def _long1(n: int) -> bytes:
    return b"\x8a\x08" + n.to_bytes(8, "little", signed=True)


@pytest.mark.parametrize(
    "body, hashes_chosen",
    [
        (b"}K\x00K\x01\x86Ns", True),  # a key: a tuple of ints
        (b"}K\x00K\x01K\x02\x86s", False),  # a tuple of ints, a value
        (b"}\x8c\x01a\x8c\x01b\x86Ns", False),  # a key: a tuple of text
        (b"}\x8c\x01aK\x00\x86Ns", False),  # ... of text and an int: its hash
        (b"}\x8c\x00K\x00\x86Ns", True),  # '' hashes to 0 (29th review)
        (b"}C\x00K\x00\x86Ns", True),  # b'' too
        (b"}NK\x00\x86Ns", True),  # None: a constant from 3.12
        (b"})K\x00\x86Ns", True),  # () and frozenset(): constants
        (b"}(\x91K\x00\x86Ns", True),
        (b"}\x8c\x01aC\x01a\x86Ns", False),  # two strings: 16 variants at most
        (b"}\x8c\x01aC\x01a\x8c\x01b\x87Ns", True),  # three (30th review)
        (b"}\x8c\x01a\x85C\x01a\x85\x8c\x01b\x85\x87Ns", True),  # ... in tuples
        (b"\x8f((\x8c\x01a\x91\x90", False),  # a frozenset of one string
        (b"\x8f((\x8c\x01aC\x01a\x91\x90", True),  # two: 'a' and b'a' cancel
        (b"}G" + bytes(8) + b"\x85Ns", False),  # a float in a tuple: its hash
        (b"}G" + bytes(8) + b"G" + bytes(8) + b"\x86Ns", True),  # two floats
        (b"}\x88\x89\x86Ns", True),  # two booleans
        (b"}" + _long1(2**60) + b"\x85Ns", True),  # an int past 60 bits
        (b"}K\x00\x85Ns", False),  # an int wrapped once: one of three forms
        (b"}(K\x00\x91Ns", False),
        (b"}K\x00\x85\x85Ns", True),  # ... twice: another function of its hash
        (b"}(K\x00\x91\x85Ns", True),
        (b"}(K\x00\x85\x91Ns", True),
        (b"})\x85\x85Ns", True),  # () counts as a number
        (b"}\x8c\x01aK\x00\x85\x86Ns", True),  # text and a tuple of an int
        (b"}\x8c\x01aK\x00\x86\x85Ns", True),
        (b"}\x8c\x01a\x8c\x01bK\x00\x87Ns", True),  # two strings and a number: 224 variants
        (b"}\x8c\x01a\x8c\x01b\x86Ns", False),  # 16
        (b"}\x8c\x01aK\x00\x85K\x01\x87Ns", True),  # ... and another int
        (b"(K\x00K\x01\x86Nd", True),  # DICT
        (b"\x8f(K\x00K\x01\x90", False),  # ints of their own hash
        (b"\x8f(" + _long1(2**60 - 1) + _long1(-(2**60)) + b"\x90", False),
        (b"\x8f(" + _long1(2**60) + b"\x90", True),  # past 60 bits
        (b"\x8f(" + _long1(-(2**60) - 1) + b"\x90", True),
        (b"\x8f(\x8a\x09" + bytes(9) + b"\x90", True),  # 9 bytes (0, not minimal)
        (b"\x8f(\x8b\x01\x00\x00\x00\x01\x90", True),  # LONG4
        (b"\x8f(I" + b"9" * 18 + b"\n\x90", False),  # 18 digits: below 2**60
        (b"\x8f(I" + b"9" * 19 + b"\n\x90", True),
        (b"\x8f(L" + b"9" * 19 + b"L\n\x90", True),
        (b"(K\x00K\x01\x91", False),  # a frozenset of ints
        (b"\x8f((K\x00K\x01\x91\x90", True),  # ... itself an item
        (b"(K\x00K\x01\x86\x91", True),  # an item of a frozenset
        (b"\x8f(K\x00K\x01\x86\x94h\x00\x90", True),  # memo'd
        (b"]K\x00\x85a\x8f(\x90", False),  # nothing chosen hashed
        (b"}" + _binfloat(1.5) + b"Ns", False),  # a float of a usual size
        (b"}(" + _binfloat(-(2.0**60)) + b"N" + _binfloat(2.0**-60) + b"Nu", False),
        (b"}(" + _binfloat(0.0) + b"N" + _binfloat(-0.0) + b"Nu", False),
        (b"}" + _binfloat(2.0**61) + b"Ns", True),  # ~200 floats of its hash
        (b"}" + _binfloat(1e-30) + b"Ns", True),
        (b"}" + _binfloat(5e-324) + b"Ns", True),  # subnormal
        (b"}" + _binfloat(float("inf")) + b"Ns", True),
        (b"}\x8c\x01a" + _binfloat(1e-30) + b"\x86Ns", True),  # ... in a tuple
        (b"\x8f(I0xffffffffffffffff\n\x90", True),  # 18 characters, 2**64 - 1
        (b"\x8f(I-123\n\x90", False),
        (b"\x8f(I1_000\n\x90", True),  # not digits: read, not judged
        (b"}F1.5\nNs", True),  # a float as text: its size not read
    ],
)
def test_strict_runs_pickles_that_hash_keys_of_a_chosen_hash_with_the_counting_unpickler(
    body: bytes, hashes_chosen: bool
) -> None:
    """Ints past 60 bits (x + j*(2**61 - 1) hash alike) and tuples and
    frozensets holding two numbers (their hashes are formulas of their
    items' that can be solved for a collision; one number among strings
    collides only as itself) may share a hash a pickle chose:
    a set of 45,000 such ints, 544 KB of plain data, took 15.9 s (26th
    review). Strict mode takes a pickle that hashes one (a dict key, a set
    or frozenset item) for not plain, so that keys of one hash are counted
    (count_keys=False: by the unpickler that counts them); a tuple that is
    a value, or of text and at most one number, stays plain."""
    pickled = b"\x80\x04" + body + b"."
    pickle.loads(pickled)  # a pickle CPython loads
    assert check_whole(pickled) is True
    assert check_whole(pickled, strict=True, count_keys=False) is not hashes_chosen


_KEYS = st.recursive(
    st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
    | st.text(max_size=2)
    | st.binary(max_size=2),
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)


@given(_KEYS)
def test_the_scan_and_safe_mode_judge_a_chosen_hash_alike(key: Any) -> None:
    """A plain record goes to the counting unpickler where a key's hash may
    be chosen (the scan), and there that key is counted (safe_budget.chosen):
    the two judge every key alike (a pickle of no memo: nothing shared)."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=5)
    pickler.fast = True
    pickler.dump({key: None})
    plain = check_whole(out.getvalue(), strict=True, count_keys=False)
    assert plain is not safe_budget.chosen(key)


def test_the_scan_refuses_what_is_not_a_buffer() -> None:
    with pytest.raises(TypeError):
        check_whole("N.")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PickleScan().feed("N.")  # type: ignore[arg-type]


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


@pytest.mark.parametrize(
    "obj",
    [Point(1), [1, Point(2)], complex(1, 2), {"f": len}, pickle.PickleBuffer(b"x" * 9)],
    ids=["instance", "nested-instance", "reduce", "function", "buffer"],
)
def test_pickles_that_reach_code_or_buffers_are_not_plain(obj: Any) -> None:
    pickled = pickle.dumps(obj, protocol=5, buffer_callback=lambda b: False)
    assert check_whole(pickled) is False


# ---------------------------------------------------------------------------
# The reader


FRAME_SIZE = fmt.MIN_FRAME_SIZE
RECORDS = [
    {"id": 7, "kind": "tick", "values": [0.5, 1.5, float("inf")], "tags": {"a", "b"}},
    [b"x" * 300, bytearray(b"y" * 10), (1, 2**80), frozenset({3})],
    Point(5),  # a global: read through an unpickler of ours
    "x" * 10_000,  # three PICKLE frames (FRAME_SIZE), cut inside the argument
]


def test_records_of_every_kind_read_back() -> None:
    out = io.BytesIO()
    with sp.Pickler(out, frame_size=FRAME_SIZE) as p:
        for r in RECORDS:
            p.dump(r)
    assert list(sp.Unpickler(io.BytesIO(out.getvalue()))) == RECORDS
    assert [sp.loads(sp.dumps(r)) for r in RECORDS] == RECORDS


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Replace the class ``unpickler.<name>`` by a subclass that counts the
    instances made (in the list returned)."""
    made: list[int] = []
    base = getattr(unpickler, name)

    class Counting(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(unpickler, name, Counting)
    return made


def test_small_records_of_plain_data_skip_the_per_record_unpickler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = counting(monkeypatch, "_RecordUnpickler")
    out = io.BytesIO()
    with sp.Pickler(out, frame_size=FRAME_SIZE) as p:
        for r in RECORDS:
            p.dump(r)
    assert list(sp.Unpickler(io.BytesIO(out.getvalue()))) == RECORDS
    assert len(made) == 2  # the instance and the two-frame record, not the plain two


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_safe_mode_reads_plain_data_of_several_frames_with_the_c_unpickler(
    monkeypatch: pytest.MonkeyPatch, compress: str | None
) -> None:
    """Safe mode gathers a record's PICKLE frames so that the scan judges the
    whole pickle: plain data takes pickle.loads, ~20x faster a pickle byte
    than the counted Python unpickler; a global, tuples shared and hashed, or
    more than SAFE_WHOLE_MAX bytes of pickle still take the counted one."""
    made = counting(monkeypatch, "SafeRecordUnpickler")
    shared = tuple(range(40))
    for obj, counted in [
        (["x" * 10_000, list(range(3000))], False),
        ([complex(i, 1) for i in range(1000)], True),  # calls builtins.complex
        ({(shared, i): i for i in range(1000)}, True),  # hashes a shared tuple
    ]:
        data = sp.dumps(obj, frame_size=FRAME_SIZE, compress=compress)
        assert sp.loads(data, safe=True) == obj
        assert made == ([1] if counted else []), obj
        made.clear()
    monkeypatch.setattr(unpickler, "SAFE_WHOLE_MAX", 3 * FRAME_SIZE)
    obj = ["x" * 10_000, list(range(3000))]  # more than three frames: streamed
    assert sp.loads(sp.dumps(obj, frame_size=FRAME_SIZE), safe=True) == obj
    assert made == [1]


def stream_of(pickled: bytes) -> bytes:
    """A one-record stream whose record's pickle bytes are ``pickled``."""

    def write(writer: Any) -> None:
        writer.write(pickled)

    data = io.BytesIO()
    with sp.Pickler(data) as p:
        p.write_record(write)
    return data.getvalue()


class OwnFindClass(sp.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(module, name)


@pytest.mark.parametrize("kind", [sp.Unpickler, OwnFindClass])
@pytest.mark.parametrize("safe", [True, False])
def test_an_unpickler_is_freed_when_dropped_not_by_a_gc_cycle(
    kind: type[sp.Unpickler], safe: bool
) -> None:
    """Its hooks are set on each record's unpickler, not held by it: a bound
    method or closure held would keep it, and the record's pickle bytes,
    until a GC cycle (review: 60 MiB held after sp.load returned)."""
    data = sp.dumps(complex(1, 2))  # not plain: an unpickler of ours and its hooks
    gc.disable()
    try:
        unpickler = kind(io.BytesIO(data), safe=safe)
        assert unpickler.load() == complex(1, 2)
        dropped = weakref.ref(unpickler)
        del unpickler
        assert dropped() is None
    finally:
        gc.enable()


def test_what_only_safe_mode_refuses_is_forbidden_not_corrupt() -> None:
    """A valid pickle that strict mode refuses: ForbiddenGlobalError, naming
    the record and pickle byte (was a CorruptStreamError: review)."""
    unbounded = stream_of(laundered(sys.getrecursionlimit() + 10))
    with pytest.raises(
        sp.ForbiddenGlobalError, match=r"^safe mode refuses more tuples .*\(record 0, pick"
    ):
        sp.loads(unbounded, safe=True)
    held_then_built = stream_of(b"\x80\x04]\x94h\x00\x850Nb.")  # L; (L,); BUILD L
    with pytest.raises(sp.ForbiddenGlobalError, match="^safe mode gives no state"):
        sp.loads(held_then_built, safe=True)
    with pytest.raises(sp.CorruptStreamError, match="not a valid pickle: a memo slot"):
        sp.loads(stream_of(b"\x80\x04Nq\x05."), safe=True)


@pytest.mark.parametrize(
    "pickled",
    [
        pickle.dumps([1, 2], protocol=5) + b"N.",
        b"\x80\x05\x95\x0a\x00\x00\x00\x00\x00\x00\x00K\x01.GARBAGE",
    ],
    ids=["after-the-frame", "inside-the-frame"],
)
def test_pickle_bytes_after_stop_are_refused(pickled: bytes) -> None:
    with pytest.raises(
        sp.CorruptStreamError,
        match="record 0 is not a valid pickle: pickle bytes after STOP at byte",
    ):
        sp.loads(stream_of(pickled))


def test_a_malformed_plain_pickle_is_a_corrupt_stream() -> None:
    with pytest.raises(sp.CorruptStreamError, match="record 0 is not a valid pickle"):
        sp.loads(stream_of(b"\x80\x05a."))  # APPEND on an empty stack


def test_an_error_from_the_callers_warning_hook_reaches_the_caller_as_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A protocol-0 string with a bad escape makes CPython warn while a plain
    record loads: a failing ``showwarning`` is the caller's error, not ours."""

    def showwarning(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the caller's showwarning")

    monkeypatch.setattr(warnings, "showwarning", showwarning)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="the caller's showwarning"):
            sp.loads(stream_of(b"S'a\\qb'\n."))


def test_safe_mode_and_hooks_still_see_the_globals_of_small_records() -> None:
    data = sp.dumps(Point(1))
    with pytest.raises(sp.ForbiddenGlobalError):
        sp.loads(data, safe=True)
    assert sp.loads(sp.dumps([1, "a"]), safe=True) == [1, "a"]


# -- SmallRecords: the reader's fast path ---------------------------------------


def one_frame_record(pickled: bytes) -> tuple[bytes, bytes]:
    """The header of a record of one PICKLE frame and the bytes after it."""
    header = fmt.plain_pickle_header(len(pickled), fmt.checksum(pickled))
    return header, pickled + fmt.whole_record_end(len(pickled))


def test_the_fast_path_loads_a_whole_checked_record_of_plain_data_and_no_other() -> None:
    small = unpickler._SMALL
    header, after = one_frame_record(pickle.dumps({"a": [1, 2.5]}, 5))
    assert small.size(header) == len(after) - 32
    assert small.load(header, after, False) == {"a": [1, 2.5]}
    for at in range(len(after)):  # any damage: the general path says what
        damaged = bytearray(after)
        damaged[at] ^= 0x40
        assert small.load(header, bytes(damaged), False) is NotImplemented, at
    assert small.load(header, after[:-1], False) is NotImplemented  # cut
    assert small.load(header, after + b"x", False) is NotImplemented  # more than its END
    assert small.load(header, bytearray(after), False) is NotImplemented  # not bytes
    memo = b"\x80\x04Nr" + struct.pack("<I", 1 << 26) + b"."  # refused by the scan
    assert small.load(*one_frame_record(memo), False) is NotImplemented
    assert small.load(*one_frame_record(pickle.dumps(Point(1), 5)), False) is Ellipsis
    assert small.size(header[:-1]) == small.size(bytearray(header)) == -1
    with pytest.raises(TypeError):
        small.load(header)  # type: ignore[call-arg]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([2, 0, 3]) | st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1]) | st.integers(0, 2**32 - 1),
)
def test_the_fast_path_takes_exactly_the_record_end_format_py_writes(
    raw: int, param: int
) -> None:
    """Its own reading of the RECORD_END header, held to format.py's: the END
    of a record of these pickle bytes and no buffers is taken, none other."""
    pickled = b"N."
    header, _ = one_frame_record(pickled)
    end = fmt.frame(fmt.Kind.RECORD_END, raw_size=raw, param=param)
    taken = unpickler._SMALL.load(header, pickled + end, False) is None
    assert taken == (end == fmt.whole_record_end(len(pickled)))
