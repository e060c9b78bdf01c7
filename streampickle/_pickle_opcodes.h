/* Pickle opcodes as one table, the scan's (_pickle_scan.c) and its light
 * loop's (_pickle_scan_light.c): what each opcode is called, how its argument
 * is laid out, and what the scans do with it. Filled once (fill_table). */
#ifndef STREAMPICKLE_PICKLE_OPCODES_H
#define STREAMPICKLE_PICKLE_OPCODES_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* The opcodes, as pickletools names them. */
enum opcode {
    MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', FLOAT = 'F',
    INT = 'I', BININT = 'J', BININT1 = 'K', LONG = 'L', BININT2 = 'M', NONE = 'N',
    PERSID = 'P', BINPERSID = 'Q', REDUCE = 'R', STRING = 'S', BINSTRING = 'T',
    SHORT_BINSTRING = 'U', UNICODE = 'V', BINUNICODE = 'X', APPEND = 'a', BUILD = 'b',
    GLOBAL = 'c', DICT = 'd', EMPTY_DICT = '}', APPENDS = 'e', GET = 'g', BINGET = 'h',
    INST = 'i', LONG_BINGET = 'j', LIST = 'l', EMPTY_LIST = ']', OBJ = 'o', PUT = 'p',
    BINPUT = 'q', LONG_BINPUT = 'r', SETITEM = 's', TUPLE = 't', EMPTY_TUPLE = ')',
    SETITEMS = 'u', BINFLOAT = 'G', BINBYTES = 'B', SHORT_BINBYTES = 'C',
    PROTO = 0x80, NEWOBJ = 0x81, EXT1 = 0x82, EXT2 = 0x83, EXT4 = 0x84, TUPLE1 = 0x85,
    TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a,
    LONG4 = 0x8b, SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINBYTES8 = 0x8e,
    EMPTY_SET = 0x8f, ADDITEMS = 0x90, FROZENSET = 0x91, NEWOBJ_EX = 0x92,
    STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95, BYTEARRAY8 = 0x96,
    NEXT_BUFFER = 0x97, READONLY_BUFFER = 0x98,
};

/* How the bytes after each opcode are laid out. */
enum arg {
    UNKNOWN = 0, /* the table's default */
    FIXED,       /* as many bytes as width_of says (maybe none) */
    SIZED,       /* a little-endian length of width_of bytes, then that many */
    SIZED_SIGNED,
    TEXT,        /* lines_of lines, each through '\n' */
    TEXT_SLOT,   /* one line, a memo slot (PUT, GET) */
};
extern unsigned char arg_of[256], width_of[256], lines_of[256];
/* Opcodes that reach code, a hook or an out-of-band buffer: not plain data. */
extern unsigned char reaches_code[256];
/* Opcodes of fixed size that scan_light acts on: memo stores, FRAME, STOP. */
extern unsigned char watched[256];
/* What it takes to hash in time beyond a bounded factor of a pickle's bytes
 * (T = (T, T), eighty times: 168 bytes, 2**80 visits; a megabyte int hashed
 * as often as the pickle refers to it; two equal frozensets built alike,
 * compared item by item through what they share): an object shared
 * (SHARES), one whose hash or comparison is not cached and grows with it
 * (COSTLY: tuples, frozensets, LONG4's ints; ints written as text and
 * strings or bytes whose opcode and argument take costly_from[op] bytes or
 * more (BY_SIZE): an int's hash reads all its digits each time, and equal
 * strings that are not one object are compared byte by byte), and an opcode
 * that hashes keys or items (HASHES). In safe mode a pickle with all three
 * is not plain: Python's unpickler runs it, counting what hashing visits
 * (safe.py). Strings shorter than 4 KiB stay plain: records of text shared
 * and hashed are common, and such a string compared on each of the 500,000
 * adds a 1 MiB record can make costs ~2 GB of memcmp. */
enum { SHARES = 1, COSTLY = 2, HASHES = 4, HASHES_SHARED = 7, BY_SIZE = 8, CHOSEN = 16,
       NUMBERS = 32 };
extern unsigned char dag_bits[256];
extern Py_ssize_t costly_from[256];
/* What may have a hash a pickle chooses (CHOSEN): ints past 60 bits (LONG1
 * of chosen_from[LONG1] bytes or more, LONG4, INT and LONG: x + j*(2**61 -
 * 1) hash alike), floats beyond 2**-60 to 2**61 in size (float_chosen: ~200
 * floats m * 2**e share a hash, ~12 within those), tuples and frozensets
 * (their hashes are formulas of their items' that can be solved for a
 * collision where two items are numbers).
 * In safe mode a pickle with it and HASHES is scanned in full, which tells
 * whether such an object is hashed (_pickle_scan.c). */
extern Py_ssize_t chosen_from[256];
/* NUMBERS: a number (an int, a float), whose hash a pickle knows: keys of
 * distinct such hashes may still share their paths through a dict's or
 * set's table (_pickle_probes.h), so in safe mode plain data with numbers
 * and HASHES goes to the count in C, which models the tables. */
/* Opcodes whose result may be higher than what they take (see the top). */
extern unsigned char raises[256];
/* Opcodes that give an object more (higher, if a call made it). */
extern unsigned char adds_to[256];
/* The size of an opcode scan_light only steps over (fixed-size, neither
 * watched nor counted: numbers, empty containers, marks); for any other, a
 * size no pickle reaches, so that one comparison sends it the long way. */
#define ACT_ON ((Py_ssize_t)1 << 60)
extern Py_ssize_t step_over[256];
/* The same for strict mode, which reads each BINFLOAT (float_chosen). */
extern Py_ssize_t step_over_strict[256];

/* Whether the int an INT, LONG, LONG1 or LONG4 makes of its argument (``n``
 * bytes at ``arg``: text without its newline, or little-endian two's
 * complement) may be outside [-2**60, 2**60): a hash a pickle may choose. */
int int_chosen(unsigned char op, const unsigned char *arg, uint64_t n);
/* Whether a BINFLOAT's float (its 8 bytes) is outside [2**-60, 2**61) in
 * size and not zero: a hash a pickle may choose with ~200 others. */
int float_chosen(const unsigned char *big_endian);
void fill_table(void);
/* A protocol-0 memo argument (PUT, GET): decimal digits between blanks, as
 * int() takes them; -1 if it is anything else or too long to be a slot.
 * CPython reads the argument as a C string, so it ends at a NUL byte. */
int64_t text_slot(const unsigned char *p, Py_ssize_t n);

#endif
