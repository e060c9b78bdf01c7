/* Keys as the count of keys in C (_pickle_scan_keys.c) reads them: what a
 * stack item, memo slot or key is, and its hash, worked out as CPython's.
 *
 * Hashes are CPython's own: an int's is its value modulo _PyHASH_MODULUS,
 * a tuple's the xxHash-like formula of Objects/tupleobject.c, a float's and
 * the constants' (None, '', b'') taken from CPython itself; key_values_init
 * checks the formulas against hash(). Keys are told apart by value, exactly
 * (an int and its equal float or boolean are one value; 0.0 and -0.0 too).
 */
#ifndef STREAMPICKLE_PICKLE_KEY_VALUES_H
#define STREAMPICKLE_PICKLE_KEY_VALUES_H
#include "_pickle_scan.h"

#define KEY_ITEMS 3 /* numbers in a tuple key read */
#define KEY_SHARE 8 /* distinct keys of one chosen hash the count takes */
/* What comparing one string of 4 KiB costs, where shorter ones stay on
 * the C unpickler when shared (_pickle_opcodes.h's costly_from). */
#define COMPARED_TEXT 4096
/* What comparing two tuple keys costs a lane besides its bytes (a rich
 * compare of two equal strings that are not one object, ~10-15 ns: 40th
 * review), in bytes of memcmp. */
#define LANE_COST 64
/* A TEXT_TUPLE_KEY's compare with another of its class, at most: its lanes
 * at LANE_COST and its strings' data bytes as CPython holds them. One
 * added is compared with each other key of its class (KEY_SHARE - 1 at
 * most), lane by lane, byte by byte where strings are equal but not one
 * object: no more than one string of COMPARED_TEXT in all. (So 9 lanes at
 * most.) */
#define TEXT_TUPLE_COST (COMPARED_TEXT / (KEY_SHARE - 1))

/* What a stack item is, as the count reads it (a memo slot: ABSENT, OTHER,
 * or POOLED + where the count's pool holds it); a dict or set made by the
 * record is a TABLE (bits[0]: which of the count's probe tables). A
 * TEXT_TUPLE_KEY is a tuple of strings and at most one number whose
 * variants of one hash a pickle may multiply (more than two strings, or
 * two and a number, or a number of a chosen hash): counted by its data
 * (tuple_of). */
enum kind {
    ABSENT, OTHER, TEXT_KEY, LONG_TEXT_KEY, NUMBER_KEY, TUPLE_KEY, TEXT_TUPLE_KEY, TABLE,
    POOLED
};
/* What each number of a key is: its bits an int64, a double, or unused. */
enum tag { INT_TAG, FLOAT_TAG, NONE_TAG, EMPTY_STR_TAG, EMPTY_BYTES_TAG };
/* What a string is (a TEXT_KEY's tags[0]): a str read from UTF-8, a bytes,
 * or a protocol 0-2 string (str or bytes as the unpickler's encoding says). */
enum text { STR_TEXT = 1, BYTES_TEXT, OLD_TEXT };

/* A string (TEXT_KEY or LONG_TEXT_KEY with n == 0) keeps where its data is
 * in the pickle (bits[0], bits[1]: address and length), and once a tuple
 * key needs it, the hash of its data bytes in ``hash`` and their size in
 * bits[2] (text_data). */
typedef struct {
    uint64_t hash;              /* CPython's, as unsigned (NUMBER_KEY, TUPLE_KEY) */
    uint64_t bits[KEY_ITEMS];   /* the numbers */
    uint32_t pooled;            /* 1 + where in the pool, once memo'd; else 0 */
    uint32_t longest;           /* a TEXT_KEY's longest string's bytes */
    uint8_t kind, n, chosen;    /* n items of a tuple (1 for NUMBER_KEY) */
    uint8_t tags[KEY_ITEMS];
} value;

/* A number pushed as ``v``: an int of up to 64 bits, a float (an integral
 * one as the int it equals), None, '' or b''. 0, or -1 with an error set. */
int number(value *v, enum tag tag, uint64_t bits, int chosen);
/* A number or string pushed by the opcode at ``p`` (``n``: its argument's
 * length, a text one's without its newline), as ``v`` (OTHER for any
 * other): 0, or -1 with an error set. */
int scalar(value *v, const unsigned char *p, uint64_t n);
/* The tuple of the ``n`` values at ``items``, as ``v`` (which may be the
 * first of them). A string's data hash, worked out for it, is kept in
 * ``pool`` too where the item came from there (``pool`` may be NULL). */
void tuple_of(value *v, value *items, Py_ssize_t n, value *pool);
/* Whether ``v`` is one string (not a tuple of them). */
static inline int
is_string(const value *v)
{
    return (v->kind == TEXT_KEY || v->kind == LONG_TEXT_KEY) && v->n == 0;
}

/* Whether a string's data hash (for a TEXT_TUPLE_KEY's class) is in ``v``:
 * worked out once (``tags[1]``: 1, or 2 where its UTF-8 is not a str's),
 * and kept in ``pool`` too where ``v`` came from there (``pool`` may be
 * NULL). A string of protocol 0-2: 0. */
int text_data(value *v, value *pool);
/* Whether two keys are one value. */
int same_key(const value *a, const value *b);
/* The constants' hashes, then the formulas checked against hash(): 1 if
 * they match, 0 if not (another Python: nothing is counted in C), -1 with
 * an error set. ``seed``: random, where strings' data hashes start. */
int key_values_init(uint64_t seed);

#endif
