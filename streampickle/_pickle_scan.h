/* The scan of pickle bytes (_pickle_scan.c, _pickle_scan_light.c), as the
 * module's Python types (_pickle_scan_module.c, _small_records.c) use it. */
#ifndef STREAMPICKLE_PICKLE_SCAN_H
#define STREAMPICKLE_PICKLE_SCAN_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The most characters a text memo argument (PUT, GET) may have before its
 * newline: digits and blanks (CPython takes any number of blanks, a sign and
 * underscores too; no pickler writes them). */
#define SLOT_TEXT_MAX 40

/* A growable array of fixed-size items that starts in place, so that a
 * small pickle is checked without a malloc. */
#define SMALL 64
typedef struct {
    char *items;
    Py_ssize_t len, cap;
    char small[SMALL * sizeof(Py_ssize_t)];
} array;
#define U32(a) ((uint32_t *)(a).items)
#define SSIZE(a) ((Py_ssize_t *)(a).items)

static inline void
array_init(array *a, Py_ssize_t item_size)
{
    a->items = a->small;
    a->len = 0;
    a->cap = (Py_ssize_t)sizeof(a->small) / item_size;
}

static inline void
array_free(array *a)
{
    if (a->items != a->small)
        PyMem_Free(a->items);
    a->items = a->small;
}

/* Room for ``need`` items; 0, or -1 with MemoryError set. */
static inline int
array_reserve(array *a, Py_ssize_t need, Py_ssize_t item_size)
{
    if (need <= a->cap)
        return 0;
    Py_ssize_t cap = a->cap;
    while (cap < need)
        cap *= 2;
    char *items;
    if (a->items == a->small) {
        items = PyMem_Malloc((size_t)(cap * item_size));
        if (items != NULL)
            memcpy(items, a->small, (size_t)(a->len * item_size));
    }
    else
        items = PyMem_Realloc(a->items, (size_t)(cap * item_size));
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    a->items = items;
    a->cap = cap;
    return 0;
}

typedef struct {
    array stack;  /* object ids */
    array marks;  /* stack lengths at each MARK */
    array memo;   /* object ids by slot; ABSENT where none */
    array height; /* by object id */
    Py_ssize_t fence;   /* the unpickler pops nothing below the last mark */
    Py_ssize_t filled;  /* memo slots in use: MEMOIZE's slot */
    Py_ssize_t stores;  /* memo stores so far */
    Py_ssize_t at;      /* pickle bytes taken so far */
    Py_ssize_t frame_end;  /* where the pickle FRAME taken last ends */
    Py_ssize_t line_end;   /* how far a text argument may run: its FRAME's end */
    uint32_t max_depth; /* sys.getrecursionlimit(): see the top of the file */
    Py_ssize_t raising; /* objects built higher than what they took */
    int late;           /* a held object's height rose (see the top) */
    int strict;         /* refuse what heights cannot bound (safe mode) */
    uint64_t skip;      /* bytes of an argument still to come */
    int lines;          /* newlines of text arguments still to come */
    int plain, stopped;
    int calls_only;     /* its code is calls alone: see scan_whole */
    Py_ssize_t callee;  /* the stack index a REDUCE calls, while it takes it */
    Py_ssize_t next_buffers; /* NEXT_BUFFER opcodes taken */
    unsigned char last_op; /* the opcode before */
    int hashes_shared;  /* scan_light's: shared objects, tuples, hashing */
    int hashes_chosen;  /* scan_light's: CHOSEN and HASHES (_pickle_opcodes.h) */
    int hashes_numbers; /* scan_light's: NUMBERS and HASHES */
    int keys_chosen;    /* scan_bytes's: a key or item of a chosen hash hashed */
    int whole;          /* every byte of the pickle is in this one piece */
    unsigned char pending[SLOT_TEXT_MAX + 2]; /* an opcode cut at a piece's end */
    int pending_len;
} scan;

void scan_init(scan *s);
void scan_free(scan *s);
/* Take the next ``n`` bytes of the pickle: 0, or -1 with ValueError(what,
 * offset) (or MemoryError) set. */
int scan_bytes(scan *s, const unsigned char *p, Py_ssize_t n);
/* 1 if the whole pickle at ``p`` passes and is plain, 0 if it passes and is
 * not, -1 (error set) if it is refused; strict, 2 if the code it reaches is
 * calls (globals, REDUCE) alone, whose results are given nothing (no BUILD,
 * APPEND, SETITEM to them) and hashed as no key, under the rules for plain
 * data below (safe mode's CallsUnpickler, safe_calls.py). Strict, plain data that hashes keys
 * of a chosen hash, or shares and hashes tuples, is plain only if
 * ``count_keys`` and keys_counted takes it; that hashes numbers, only if
 * keys_counted takes it (the tables' model, _pickle_probes.h), or if not
 * ``count_keys`` (the scan's judgment alone, for tests). */
int scan_whole(const unsigned char *p, Py_ssize_t n, int strict, int count_keys);
/* Safe mode: whether plain data at ``p`` that hashes keys of a chosen hash,
 * or may hash an object again (``shared``), hashes only keys whose hashes
 * _pickle_scan_keys.c works out, no more than a few distinct of each, and
 * no long string again, whose paths through the tables do not crowd: 1, 0
 * (Python's counting unpickler runs it), -1 (error set: ValueError(what,
 * offset) where they crowd). Each chosen key's hash is appended to ``seen``
 * if not NULL. */
int keys_counted(const unsigned char *p, Py_ssize_t n, int shared, PyObject *seen);
int keys_init(void);
/* ValueError(what, offset): the caller names the record; returns -1. */
int scan_refuse(scan *s, const char *what);
#define PAST_FRAME "an opcode that runs past the end of its FRAME"

/* The ``n``-byte little-endian number at ``p`` (inline: frame headers and
 * opcode arguments read several per record). */
static inline uint64_t
little_endian(const unsigned char *p, int n)
{
#if PY_LITTLE_ENDIAN
    if (n == 8) {
        uint64_t x8;
        memcpy(&x8, p, 8);
        return x8;
    }
    if (n == 4) {
        uint32_t x4;
        memcpy(&x4, p, 4);
        return x4;
    }
#endif
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}

/* SmallRecords (_small_records.c): its type, and what it needs made once. */
extern PyType_Spec SmallRecords_spec;
int small_records_init(void);

#endif
