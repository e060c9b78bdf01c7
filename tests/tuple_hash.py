"""CPython's tuple hash (Objects/tupleobject.c, 64-bit: xxHash's lanes, acc
+= lane * P2, rotated left 31 bits, times P1; then + the length's term),
inverted for its last item: the tests that make keys of one hash."""

MASK = 2**64 - 1
P1, P2, P5 = 11400714785074694791, 14029467366897019727, 2870177450012600261


def last_item_hash(target: int, first: list[int], length: int) -> int:
    """The hash the last of ``length`` items must have, after items of the
    hashes ``first``, for the tuple to hash to ``target`` (signed, as
    ``hash()`` gives; -1 where none can)."""
    acc = P5
    for lane in first:
        acc = (acc + (lane & MASK) * P2) & MASK
        acc = ((acc << 31 | acc >> 33) & MASK) * P1 & MASK
    last = ((target & MASK) - (length ^ (P5 ^ 3527539))) * pow(P1, -1, 2**64) & MASK
    last = (last >> 31 | last << 33) & MASK  # acc + lane * P2 before the last turn
    lane = (last - acc) * pow(P2, -1, 2**64) & MASK
    return lane - 2**64 if lane >> 63 else lane
