/* Which hashes a pickle may choose, as the scan (_pickle_scan.c) tracks them.
 *
 * CPython compares a key added to a set, frozenset or dict with every key of
 * its hash on its way, so keys of one hash make a load quadratic. Strings
 * and bytes hash with a secret key; numbers do not (x + j * (2**61 - 1) all
 * hash alike), and a tuple's or frozenset's hash is a formula of its items'
 * that can be solved. The scan gives every scalar one of the ids below and
 * every object flags beside its height; in safe mode, plain data that hashes
 * a key of a chosen hash (a dict key, a set or frozenset item) is plain only
 * if the count in C of its keys takes it (_pickle_scan_keys.c); else
 * Python's unpickler runs it, counting keys of one hash
 * (safe_budget.DistinctKeys, whose ``chosen`` judges keys as this file does).
 */
#ifndef STREAMPICKLE_PICKLE_SCAN_HASH_H
#define STREAMPICKLE_PICKLE_SCAN_HASH_H
#include "_pickle_scan.h"

/* Ids of scalars: strings and bytes, whose hashes are keyed by a secret;
 * numbers (ints in [-2**60, 2**60), floats and booleans) and others whose
 * hash a pickle knows ('', b'', None), which make the hash of a tuple or
 * frozenset holding two one it may choose (29th review: 3**12 tuples of
 * '', b'' and (), each with an int solved for one hash); numbers whose own
 * hash it may choose (int_chosen, float_chosen: _pickle_opcodes.h). */
#define SCALAR 0
#define NUMBER 1
#define CHOSEN_NUMBER 2

/* Height flags: its hash may be one a pickle chose (CHOSEN_NUMBER; see
 * hash_flags), or it holds a number (NUMBER too). */
#define CHOSEN_HASH 0x20000000u
#define CHOSEN_IN 0x10000000u
/* ... and how many strings it holds (up to 2): a str and bytes of the same
 * data bytes hash alike, as may strs of other kinds ('ā' and b'\x01\x01':
 * up to 4 of one hash), so a tuple of k strings has up to 4**k variants of
 * one hash, and in a frozenset two such cancel (XOR): 30th review. */
#define SECRET_SHIFT 26
#define SECRETS(h) ((h) >> SECRET_SHIFT & 3u)
/* ... and whether it is a tuple or frozenset holding a number: the hash of
 * one holding that is a function of the number's that can be inverted, a
 * different one for each way of wrapping it ((n,), frozenset({n}), ((n,),)
 * ...), so 2**d wrappings d deep give 2**(d-3) keys of any one hash (31st
 * review: ~100 s for 1 MB). */
#define WRAPPED 0x02000000u
#define HASH_FLAGS (CHOSEN_HASH | CHOSEN_IN | WRAPPED | 3u << SECRET_SHIFT)

/* Whether any of every ``step``-th stack item from ``start`` up (keys
 * hashed) has a hash a pickle may choose. */
static inline int
any_chosen(const scan *s, Py_ssize_t start, Py_ssize_t step)
{
    for (Py_ssize_t i = start; i < s->stack.len; i += step)
        if (U32(s->height)[U32(s->stack)[i]] & CHOSEN_HASH)
            return 1;
    return 0;
}

/* The hash flags of a tuple (a frozenset: ``frozen``) of the stack items
 * from ``start`` up: CHOSEN_IN and WRAPPED if one holds a number (see
 * NUMBER), CHOSEN_IN alone if it is empty; the strings it holds;
 * CHOSEN_HASH if one has a chosen hash, two hold numbers, one is WRAPPED,
 * or it holds more than two strings (a frozenset, one), or a tuple two and
 * a number. Its hash is a one-to-one function of each item's hash, the
 * others fixed (xxHash's lanes; a frozenset's XOR): one number among
 * strings, whose hashes are keyed by a secret, collides only as itself,
 * one of ~14 numbers of its hash (-1 and -2, ~12 floats), or as it wrapped
 * once ((n,), frozenset({n}): three forms); a string as one of 4 variants.
 * So up to 64 keys of strings and a number share a hash, and 16 of two
 * strings, but 224 of two strings and a number: each compared with a key
 * added again by a DUP of a byte, 4-6 s a MB (34th review). */
static inline uint32_t
hash_flags(const scan *s, Py_ssize_t start, int frozen)
{
    if (start == s->stack.len) /* () and frozenset(): a hash every process knows */
        return CHOSEN_IN;
    uint32_t numbers = 0, strings = 0;
    for (Py_ssize_t i = start; i < s->stack.len; i++) {
        uint32_t h = U32(s->height)[U32(s->stack)[i]];
        numbers += (h & CHOSEN_IN) != 0;
        strings += SECRETS(h);
        if (h & (CHOSEN_HASH | WRAPPED) || numbers > 1 || strings > (frozen ? 1u : 2u)
            || (strings == 2 && numbers))
            return CHOSEN_HASH | CHOSEN_IN;
    }
    return (numbers ? CHOSEN_IN | WRAPPED : 0) | strings << SECRET_SHIFT;
}

#endif
