"""What safe mode's work costs against a record's budget (``safe.py``): the
budget itself, the cost of each kind of work in one table, and what hashing,
copying and ranges take. A unit is a byte copied, ~0.05 µs: the costs below
were measured so, and a record's own bytes pay for what numpy and pickle
write of it (a dtype state takes 36 bytes or more, an array 23), while a
hostile record may take the parts from the memo for 2 bytes each.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from itertools import chain
from math import isnan
from sys import getrefcount
from typing import Any

import numpy as np

from ._pickle_scan import ProbeTable
from .safe_dtypes import TEXT_UNIT, dtype_nodes

#: The budget: what a record in safe mode may copy, hash and have checked, in
#: units of a byte copied (~0.05 µs): this many a pickle byte, and the floor.
SPEND_FACTOR = 8
SPEND_FLOOR = 1 << 20
#: What things cost, in those units (a dtype state numpy writes takes 36 bytes
#: or more, an array 23; their parts may come from the memo for 2 bytes each):
STR_ITEM = 10  # a character of a str copied or parsed: it may become an object
DTYPE_STATE = 256  # checking a dtype's state: making the dtype again, ~15 µs
DTYPE_FIELD = 16  # each of its fields, ~1 µs
DTYPE_NODE = 8  # each dtype in it, walked, ~0.4 µs
HASHED = 8  # an item whose hashing _spend_hashing counts in Python, ~0.4 µs
WALKED = 6  # an item inside it that hash_visits walks, ~0.3 µs
ARRAY_CALL = 128  # _frombuffer or _reconstruct and its BUILD checked, ~10 µs
EXTENT = 8  # each extent of an array's shape
VIEW_BYTES = 16  # bytes of memoryviews compared a unit: item by item, ~2 ns a byte
#: Two keys of one hash in a set or dict holding a numpy scalar or dtype are
#: compared, through numpy where either is numpy's: this a compare (a float
#: against a timedelta64 in a 1-tuple, 6.9 µs, twenty-fifth review), and
#: NUMPY_COMPARED each number they hold (np.True_ == 1.0, 0.86 µs; 0.66-1.05
#: for every pair of kinds), an int also by its digits (PRINTED_DIGITS).
NUMPY_PAIR = 128
PLAIN_PAIR = 1  # two plain keys: ~17 ns for ints, more by a key's visits
#: a table of a container's keys (Compared), made: ~3 µs (26th review: sets
#: of one numpy key, 5 bytes each, 2 s a MB), charged what a set of a shared
#: numpy key, 6 bytes, leaves (27th review: more refused such lists); a key
#: walked into it, ~1.4 µs
TABLE = 32
WALKED_KEY = 24
#: HashedKeys sweeps its containers when they pass twice those left after
#: the last sweep plus this; one held by it alone has this many references
#: in getrefcount (its tuple's and getrefcount's argument)
SWEEP_FROM = 1024
HELD_ONLY = 2
LISTED_ONLY = 3  # in a list: the list's, the loop's and getrefcount's
NUMPY_COMPARED = 16
#: slots a key's path through a dict's or set's table passes (ProbedTables),
#: weighed as misses where the tables are large: this many a unit, so that the
#: budget allows 32 a pickle byte, as the count in C does (PROBE_SHARE)
PROBES_A_UNIT = 4
#: the table of a container of at most this many keys (a dict's or set's first
#: 8 slots) is made again when keys are added to it, not held (ProbedTables)
SMALL_TABLE = 5
#: the largest range length counted as such (beyond, past any budget)
RANGE_BITS = 62
#: an int meeting a numpy longdouble is printed in decimal first, in time
#: quadratic in its 30-bit digits: one more item compared per this many
#: digits squared (twenty-second review: 14,200 bits, 244 µs)
PRINTED_DIGITS = 512
#: What counted_in_c takes: sequences, and kinds of item whose hash does not
#: grow with them.
SEQUENCES = frozenset({list, tuple, str, bytes, bytearray})
UNSIZED = frozenset({float, bool, type(None)})
#: Keys whose hash a pickle cannot choose, or not for many keys at once:
#: strings and bytes (hashed with a secret key), ints in [-OWN_HASH,
#: OWN_HASH) (each its own hash, but -1 and -2), floats of size in [2**-60,
#: 2**61) (~12 of one hash there, ~200 beyond: 28th review); others are
#: counted by DistinctKeys (ints x + j*(2**61 - 1) hash alike, and tuples',
#: frozensets', ranges' and complex numbers' hashes are formulas of their
#: parts' that can be solved for a collision).
UNCHOSEN = frozenset({str, bytes, float, bool, type(None)})
NUMBERS = frozenset({int, float, bool})
OWN_HASH_BITS = 60
OWN_HASH = 1 << OWN_HASH_BITS
FLOAT_SIZES = (2.0**-60, 2.0**61)


def usual_floats(floats: Iterable[float]) -> bool:
    """Whether each float is zero or of a size in FLOAT_SIZES (one pass in C)."""
    sizes = list(filter(None, map(abs, floats)))
    smallest, largest = FLOAT_SIZES
    if not sizes or any(map(isnan, sizes)):
        return not sizes
    return smallest <= min(sizes) and max(sizes) < largest


def counted_in_c(items: Any, keys: bool = False) -> int | None:
    """What hashing the items of a sequence visits, counted in one pass in C
    where they are all of one plain kind (an int by its 30-bit digits, a
    string by its length, compared when equal but not the same); else None.
    ``keys``: None too for numbers whose hash may be chosen (DistinctKeys)."""
    kinds = set(map(type, items))
    if kinds <= UNSIZED:
        if keys and float in kinds:
            floats = items if len(kinds) == 1 else [i for i in items if type(i) is float]
            if not usual_floats(floats):
                return None
        return len(items)
    if kinds == {int}:
        bits = list(map(int.bit_length, items))
        if keys and max(bits) > OWN_HASH_BITS:
            return None
        return len(items) + sum(bits) // 30
    if kinds == {str} or kinds == {bytes}:
        return len(items) + sum(map(len, items)) // TEXT_UNIT
    return None


def hash_visits(obj: Any, limit: int) -> tuple[int, int, bool]:
    """Steps hashing ``obj`` takes, or comparing it with an equal object of
    the same hash, counted up to just past ``limit``; the items a comparison
    with an equal object may compare through numpy, at ~1 µs, where it is or
    meets a numpy object (numbers and numpy's, as ``compared`` counts them);
    and whether one is a numpy scalar or dtype. A tuple hashes its
    items each time (no cache), equal frozensets compare item by item, a
    range hashes its ints, an int's hash reads each of its 30-bit digits.
    Strings and bytes cache their hashes, but an equal one that is not the
    same object is compared byte by byte (review: a 1.5 MB string added to
    a set a million times), as are numpy's string scalars; a memoryview of
    a buffer hashes its bytes (each READONLY_BUFFER makes a new one)."""
    visits, items, numpy, todo = 1, 0, False, [obj]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is tuple or kind is frozenset:
            plain = counted_in_c(item) if len(item) > 8 else None  # worth its set
            if plain is not None:
                visits += plain
                items += compared(item)
                continue
            visits += WALKED * len(item)  # each walked here, in Python (review)
            if visits > limit:
                break
            todo.extend(item)
            continue
        if kind is range:  # numpy makes an array of it to compare it (review)
            todo += (item.start, item.stop, item.step)
            items += range_length(item, limit)
        elif kind is str or kind is bytes:
            visits += len(item) // TEXT_UNIT  # compared when equal but not the same
        elif isinstance(item, np.dtype):
            visits += dtype_nodes(item, limit - visits)
            items, numpy = items + 1, True
        elif isinstance(item, np.generic):
            visits += item.nbytes // TEXT_UNIT  # hashed or compared byte by byte
            items, numpy = items + 1, True
        elif isinstance(item, memoryview):
            visits += item.nbytes // VIEW_BYTES
        else:  # a number: compared through numpy with a numpy scalar
            digits = item.bit_length() // 30 if kind is int else 0
            visits += digits
            items += 1 + digits * digits // PRINTED_DIGITS
    return visits, items, numpy


def compared(items: Any) -> int:
    """The items of a sequence of one plain kind that compare through numpy
    with equal numpy scalars: numbers, an int also by its digits squared
    (strings compare with numpy's at the speed of their bytes, counted by
    their length)."""
    first = next(iter(items), None)  # a frozenset's too (26th review)
    if first is None or isinstance(first, str | bytes):
        return 0
    if type(first) is not int:
        return len(items)
    bits = list(map(int.bit_length, items))
    if max(bits) < 30:  # in C (a tuple of small ints added again, 27th review)
        return len(items)
    squares = sum((b // 30) ** 2 for b in bits)
    return len(items) + squares // PRINTED_DIGITS


def range_length(r: range, limit: int) -> int:
    """Its length, or just past ``limit`` where its ints pass RANGE_BITS."""
    ints = (r.start, r.stop, r.step)
    return len(r) if max(abs(i) for i in ints).bit_length() <= RANGE_BITS else limit + 1


def through_numpy(visits: int, items: int) -> int:
    """What comparing an object through numpy costs (see hash_visits)."""
    return max(visits, NUMPY_COMPARED * items)


class Compared:
    """What a set, frozenset or dict holding a numpy scalar or dtype holds
    that may be compared: how many of its keys have each hash (only keys of
    one hash are ever compared), the hashes of its keys that are or hold
    numpy's (compared through numpy), how many pairs of keys of one hash
    there are either way, and the most comparing one key through numpy
    costs (a tuple 63 deep takes numpy 14 µs; a range, an array of its
    length)."""

    __slots__ = ("hashes", "numpy_hashes", "pairs", "plain_pairs", "largest")

    def __init__(self) -> None:
        self.hashes: dict[int, int] = {}
        self.numpy_hashes: set[int] = set()
        self.pairs = self.plain_pairs = self.largest = 0

    def add(self, key: Any, visits: int, cost: int, numpy: bool) -> int:
        """Count ``key``, whose hash visits ``visits`` and whose compare
        through numpy costs ``cost``; what its compares with the keys of its
        hash held cost (CPython compares it with each on its way; ints of
        one hash are free to make: a numpy key added again past 1,000 of
        them, 1.3 ms, twenty-fifth review). Two plain keys compare in no
        more steps than hashing one visits (hash(-1) == hash(-2): a dict of
        (-1, i) and (-2, i) beside a numpy key, 26th review)."""
        try:
            key_hash = hash(key)
        except TypeError:  # unhashable: the add fails
            return 0
        met = self.hashes.get(key_hash, 0)
        self.hashes[key_hash] = met + 1
        if numpy:
            self.numpy_hashes.add(key_hash)
        work = 0
        if met and key_hash in self.numpy_hashes:
            self.pairs += met
            work = met * (NUMPY_PAIR + cost + self.largest)
        elif met:
            self.plain_pairs += met
            work = met * (PLAIN_PAIR + visits)
        self.largest = max(self.largest, cost)
        return work

    def copy(self) -> tuple[int, Compared]:
        """The same keys hashed into a new container: what its pairs cost
        compared again, and its table."""
        made = Compared()
        made.hashes, made.numpy_hashes = dict(self.hashes), set(self.numpy_hashes)
        made.pairs, made.plain_pairs = self.pairs, self.plain_pairs
        made.largest = self.largest
        work = self.pairs * (NUMPY_PAIR + 2 * self.largest)
        return work + self.plain_pairs * (PLAIN_PAIR + self.largest), made


def chosen(key: Any) -> bool:
    """Whether a pickle may choose ``key``'s hash to be many keys' (UNCHOSEN),
    as the scan judges it (_pickle_scan_hash.h's hash_flags): such a number,
    a tuple or frozenset holding such a number, two numbers (ints, floats,
    booleans; and '', b'', None, (), frozenset(), whose hashes every process
    knows), a number in a tuple or frozenset in it, more than two strings
    (a frozenset: one), or two and a number, anything else but strings.
    Its hash is a one-to-one function of each item's, the others fixed: one
    number among strings, whose hashes are keyed by a secret, collides only
    as that number or it wrapped once ((n,), frozenset({n})), but each
    deeper wrapping is another function that can be inverted (31st review);
    a str and bytes of the same data bytes hash alike (up to 4 variants of a
    string: 16 of two; 224 of two and a number, ~14 numbers sharing a hash:
    34th review), and in a frozenset two such cancel."""
    kind = type(key)
    if kind is not tuple and kind is not frozenset:
        return _chosen_number(key) if kind in NUMBERS else kind not in UNCHOSEN
    # Counted over the key (within the budget hash_visits walked), as the
    # scan's counts add up through each tuple: a frozenset's two strings
    # share the outermost frozenset they are in (each one walked: a token)
    numbers = strings = frozensets = 0
    first_in = None  # the first string's outermost frozenset
    todo: list[tuple[Iterator[Any], int | None]] = [(iter((key,)), None)]
    while todo:  # by iterators: most keys are decided by their first items
        items, outer = todo[-1]
        item = next(items, todo)  # (todo: no item is it)
        if item is todo:
            todo.pop()
            continue
        kind = type(item)
        if (kind is tuple or kind is frozenset) and item:
            if kind is frozenset and outer is None:
                frozensets += 1
                outer = frozensets
            todo.append((iter(item), outer))
            continue
        if (kind is str or kind is bytes) and item:
            strings += 1
            if strings > 2 or strings == 2 and outer is not None and outer == first_in:
                return True
            first_in = outer
            continue
        if kind in NUMBERS:
            if _chosen_number(item):
                return True
        elif item is not None and kind not in (str, bytes, tuple, frozenset):
            return True
        numbers += 1  # or '', b'', None, (), frozenset()
        if numbers > 1 or len(todo) > 2:  # (in a container in the key)
            return True
    return strings == 2 and numbers == 1


def _chosen_number(number: Any) -> bool:
    if type(number) is float:
        return not usual_floats((number,))
    return not -OWN_HASH <= number < OWN_HASH


class DistinctKeys:
    """The distinct keys of each chosen hash (see UNCHOSEN) a record has
    hashed into any set, frozenset or dict so far, and those others of
    their hashes, held while the record holds them. No container holds
    more keys of one hash than there are distinct ones, and CPython compares
    a key added with each of its hash on its way: so a key charged what
    comparing it with each distinct one of its hash costs bounds what
    colliding keys cost (a set of 45,454 ints x + j*(2**61 - 1), 544 KB:
    15.9 s, 26th review; a small int of their hash added again, 28th), while
    keys equal in many containers (a legit record's) meet none. Held by hash
    alone, so that colliding keys are compared here no more than the charge
    counts."""

    def __init__(self) -> None:
        self._by_hash: dict[int, Any] = {}  # one key, or a list of distinct ones
        self._sweep_at = SWEEP_FROM
        self._last: Any = _NONE_HELD  # the last key met, and what it meets again
        self._last_met = 0

    def contested(self, items: Any) -> bool:
        """Whether a key of the hash of one of ``items`` is held."""
        return bool(self._by_hash) and not self._by_hash.keys().isdisjoint(map(hash, items))

    def meet(self, key: Any, chosen: bool) -> int:
        """How many distinct keys held of ``key``'s hash, not equal to it, it
        may be compared with on its way into a container (0 if unhashable:
        the add fails); then it is held if chosen or if others of its hash
        are. The compare with an equal key costs what hashing it does,
        charged with that."""
        if key is self._last:  # the same key again at once (a memo'd one, a list of it)
            return self._last_met
        try:
            key_hash = hash(key)
        except TypeError:
            return 0
        met = self._meet(key, key_hash, chosen)
        self._last, self._last_met = key, met  # held now, it meets as many again
        return met

    def _meet(self, key: Any, key_hash: int, chosen: bool) -> int:
        held = self._by_hash.get(key_hash, _NONE_HELD)
        if held is _NONE_HELD:
            if chosen:
                self._by_hash[key_hash] = key
                if len(self._by_hash) > self._sweep_at:
                    self._sweep()
            return 0
        if type(held) is not list:  # a list is no key: one key held
            if held is key or held == key:
                return 0
            self._by_hash[key_hash] = [held, key]
            return 1
        for other in held:  # (in no container's order)
            if other is key or other == key:
                return len(held) - 1
        held.append(key)
        return len(held) - 1

    def _sweep(self) -> None:
        """Forget the keys only this holds: the record dropped them (sets of
        distinct frozensets, each dropped: 53 times the record's bytes held
        to the end of the load, 28th review)."""
        by_hash, live = self._by_hash, {}
        for key_hash in by_hash:  # by key: an items() iterator holds its last
            if type(by_hash[key_hash]) is not list:
                if getrefcount(by_hash[key_hash]) > HELD_ONLY:
                    live[key_hash] = by_hash[key_hash]
                continue
            held = [key for key in by_hash[key_hash] if getrefcount(key) > LISTED_ONLY]
            if held:
                live[key_hash] = held
        self._by_hash, self._sweep_at = live, 2 * len(live) + SWEEP_FROM


_NONE_HELD = object()


class HashedKeys:
    """What hashing keys into sets, frozensets and dicts costs, and what the
    containers a record filled hold where keys compare (by id, held): where
    numpy may compare them, and where plain keys of one hash met. A numpy
    scalar compared with an equal-hashed number goes through numpy's ufuncs
    (~1-7 µs), with a tuple or range makes an array of it (twenty-first
    review: range(10**8) beside np.int64(hash of it), 138 bytes); hashes of
    ints, floats, tuples and ranges can be chosen."""

    def __init__(self) -> None:
        # by id: the container, its table, its keys' meetings and their cost
        self._held: dict[int, tuple[Any, Compared | None, int, int]] = {}
        self._sweep_at = SWEEP_FROM
        self._distinct = DistinctKeys()
        # the last work's: plain keys met of their chosen hash, and their cost
        self.met = self.met_cost = 0

    def _of(self, container: Any) -> tuple[Any, Compared | None, int, int] | None:
        held = self._held.get(id(container))
        return held if held is not None and held[0] is container else None

    def of(self, container: Any) -> Compared | None:
        held = self._of(container)
        return held[1] if held is not None else None

    def note(self, container: Any, compared: Compared | None) -> None:
        """``container`` was filled by the last work, and holds ``compared``."""
        if compared is None and not self.met:
            return
        met, cost = self.met, self.met_cost
        held = self._of(container)
        if held is not None:  # filled before
            met, cost = met + held[2], cost + held[3]
        self._held[id(container)] = (container, compared, met, cost)
        if len(self._held) > self._sweep_at:
            # forget what only this holds: what the record dropped (held, a
            # 4 MB record of sets of a numpy key took 1.8 GB: 26th review)
            live = {k: v for k, v in self._held.items() if getrefcount(v[0]) > HELD_ONLY}
            self._held, self._sweep_at = live, 2 * len(live) + SWEEP_FROM

    def work(self, items: Any, target: Any, limit: int) -> tuple[int, Compared | None]:
        """What hashing ``items`` into ``target`` (None: a new container)
        costs, counted up to just past ``limit``, and what it then holds
        that numpy may compare: in one pass in C where the items are of one
        plain kind, else HASHED an item (a memo'd list hashed again for 6
        bytes: 6.6 s from 1 MB, review), each compare of plain keys of a
        chosen hash (DistinctKeys) and, once a numpy key is there, each
        compare of keys of one hash (see Compared.add)."""
        self.met = self.met_cost = 0
        if not items:  # MARK ADDITEMS, again and again (twenty-fifth review)
            return 0, None
        compared = self.of(target)
        if isinstance(items, dict | set | frozenset):  # a container's keys
            held = self._of(items)
            if held is None:
                return len(items), None  # hashed as they are (a dict's keys, once)
            # added to a new container, its keys of one hash compare again
            # (set() of a dict compares each with those of its hash before it)
            _, table, self.met, self.met_cost = held
            if table is None:
                return len(items) + self.met_cost, None
            pairs, made = table.copy()
            return TABLE + HASHED * len(items) + pairs + self.met_cost, made
        if compared is None and type(items) in SEQUENCES:
            plain = counted_in_c(items, keys=True)
            if plain is not None and not self._distinct.contested(items):
                return plain, None  # numbers or text, none numpy's, none met
        work = 0
        for i, item in enumerate(items):
            visits, count, numpy = hash_visits(item, limit - work)
            work += HASHED + visits
            if compared is None and numpy:  # the first numpy key: the keys it may meet
                compared = Compared()
                work += TABLE + self._walk(
                    compared, chain(target or (), items[:i]), limit - work
                )
            if work > limit:  # before hashing it (T = (T, T), eighty times)
                break
            if not numpy:
                met = self._distinct.meet(item, chosen(item))
                cost = met * (PLAIN_PAIR + visits)
                self.met += met
                self.met_cost += cost
                work += cost
            if compared is not None:
                work += compared.add(item, visits, through_numpy(visits, count), numpy)
        return work, compared

    @staticmethod
    def _walk(compared: Compared, keys: Iterable[Any], limit: int) -> int:
        """Count ``keys`` (held already, compared as they came) into
        ``compared``; what walking them visits, up to just past ``limit``."""
        work = 0
        for key in keys:
            visits, items, numpy = hash_visits(key, limit - work)
            work += WALKED_KEY + visits
            if work > limit:
                break
            compared.add(key, visits, through_numpy(visits, items), numpy)
        return work


class ProbedTables:
    """The record's dicts and sets as CPython lays out their tables
    (ProbeTable, _pickle_probes.h), by id, held: where keys of distinct
    hashes share paths through a table, each insert passes all the keys on
    it (32nd review: a dict of 82,768 plain ints, 464 KB, 4.8 s). Strings
    and bytes are left out (their hashes are secret). The table of a
    container of at most SMALL_TABLE keys is not held but made again from
    its keys, in the order a dict keeps (a set's, close to it), once more
    keys come (most come at once: SETITEMS of up to 1,000); a frozenset's
    never (none is added to it)."""

    def __init__(self) -> None:
        self._held: dict[int, tuple[Any, ProbeTable]] = {}
        self._keys = self._slots = 0  # in the tables held
        self._sweep_at = SWEEP_FROM
        self._made: ProbeTable | None = None  # the last new container's

    def _of(self, container: Any) -> ProbeTable | None:
        held = self._held.get(id(container))
        return held[1] if held is not None and held[0] is container else None

    def passed(self, items: Any, target: Any, is_set: bool, limit: int) -> int:
        """The slots hashing ``items`` into ``target`` passes (None: a new
        set or frozenset if ``is_set``, else dict, noted by ``made`` once
        made; of a container's keys, as CPython makes one of another),
        counted up to just past ``limit``, each weighed by the slots of its
        table and of those held (a slot_cost of _pickle_probes.c)."""
        self._made = None
        if target is not None:
            table = self._of(target)
            if table is not None:
                keys, size = len(table), table.size
                passed = table.add(items, limit, self._slots - size)
                self._keys += len(table) - keys
                self._slots += table.size - size
                return int(passed)
            table = ProbeTable(is_set)
            table.add(list(target))  # (its keys' passes counted as they came)
            passed = table.add(items, limit, self._slots)
            if len(table) > SMALL_TABLE or len(target) > SMALL_TABLE:
                # held, even of no key placed: made again on each add, a dict
                # of 80,000 strings added to by SETITEM took 49 s a MB (36th review)
                self._hold(target, table)
            return int(passed)
        table = ProbeTable(is_set)
        if isinstance(items, dict | set | frozenset):
            passed = table.merge(items, self._of(items), limit, self._slots)
        else:
            passed = table.add(items, limit, self._slots)
        self._made = table if len(table) > SMALL_TABLE else None
        return int(passed)

    def made(self, container: Any) -> None:
        """``container`` is the new one the last ``passed`` hashed into."""
        if self._made is not None and type(container) is not frozenset:
            self._hold(container, self._made)
        self._made = None

    def _hold(self, container: Any, table: ProbeTable) -> None:
        self._held[id(container)] = (container, table)
        self._keys += len(table) + 1  # (a container of strings alone: one)
        self._slots += table.size
        if self._keys > self._sweep_at:
            # forget what only this holds, by the keys and containers held:
            # sets of 1,000 frozensets each dropped once made, 40 of them
            # held 53 times the record (the 28th review's record)
            live = {k: v for k, v in self._held.items() if getrefcount(v[0]) > HELD_ONLY}
            self._keys = sum(len(table) + 1 for _, table in live.values())
            self._slots = sum(table.size for _, table in live.values())
            self._held, self._sweep_at = live, 2 * self._keys + SWEEP_FROM


def copied(arg: Any) -> int:
    """What a call copying, parsing or reading ``arg`` costs: its length; a
    str's characters may each become an object of ~80 bytes (``list`` or
    ``set`` of one beyond Latin-1)."""
    if isinstance(arg, str):
        return STR_ITEM * len(arg)
    return len(arg) if isinstance(arg, Sized) else 1


def range_work(args: tuple[Any, ...]) -> int:
    """What making a range takes: its length is a division of its ints (of
    30-bit digits: 50,000 by 25,000 took 3 s, review)."""
    digits = [a.bit_length() // 30 + 1 if type(a) is int else 1 for a in args]
    return max(digits, default=1) * (digits[2] if len(digits) > 2 else 1)
