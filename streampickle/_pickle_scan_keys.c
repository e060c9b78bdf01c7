/* Keys of a chosen hash, counted in C: whether plain data that hashes them
 * may still go to the C unpickler in safe mode.
 *
 * A pickle may choose the hashes of some keys (_pickle_scan_hash.h): keys of
 * one hash make each insert compare with all of them. In safe mode the scan
 * sends plain data that hashes such keys, or that shares and hashes tuples
 * (``shared``: _pickle_opcodes.h's HASHES_SHARED), to Python's counting
 * unpickler (safe_budget), 15-30 times slower than the C one. This pass reads
 * such a whole record once more, as the unpickler's stack, marks and memo
 * would hold it, and works out what CPython will: the hash of each key
 * hashed (a dict key, a set or frozenset item) whose hash a pickle may
 * choose (_pickle_key_values.c: ints of up to 64 bits, floats, booleans,
 * None, '' and b'', tuples of up to three of them) and how many distinct
 * ones share each hash. When no hash has more than KEY_SHARE, no insert
 * compares more than that many (each in a few steps), besides the few that
 * share an unchosen hash by nature (-1 and -2; ~12 usual floats); strings,
 * and tuples of strings and at most one number, hash with a secret, but
 * those whose variants of one hash a pickle may multiply are counted by
 * class (the data hashes of their strings, their number's hash: tuple_of's
 * TEXT_TUPLE_KEY), KEY_SHARE of a class at most. The
 * record then loads in linear time and goes to the C unpickler. One that
 * hashes any other key (longer ints, nested tuples, frozensets, text
 * opcodes), or, where it shares objects, a string of 4 KiB or more again or
 * a tuple of strings whose compares with the others of its hash may cost
 * as much (LONG_TEXT_KEY: equal strings compare byte by byte), stays with
 * the counting unpickler. Distinct keys are counted in a table indexed by a random
 * multiplier (multiply-shift: universal, so keys of distinct hashes share a
 * bucket no more often than chance, whatever hashes a pickle chooses).
 *
 * Keys of distinct hashes may still crowd one path through a table (32nd
 * review): the pass also places each key whose hash it worked out in a
 * model of the table of the dict or set it goes into (_pickle_probes.h),
 * and refuses a record whose keys pass more than PROBE_SHARE occupied
 * slots a pickle byte (ValueError, as the scan's refusals; the counting
 * unpickler models them too, and its budget would refuse it). The scan
 * sends it plain data that hashes numbers for this (_pickle_opcodes.h's
 * NUMBERS).
 *
 * Memory: a value (48 bytes) for each stack item, number, string, tuple,
 * dict or set memo'd, distinct key counted and key placed, 4 bytes a memo
 * slot, and the tables' slots: at most ROOM times the pickle's bytes (a
 * record that needs more is the counting unpickler's), less than the
 * unpickler then makes of them, and freed before it runs.
 */
#include "_pickle_key_values.h"
#include "_pickle_opcodes.h"
#include "_pickle_probes.h"

#define ROOM 32     /* bytes of memory a pickle byte */
/* Slots passed in the record's dicts and sets (_pickle_probes.h), ~5-40
 * ns each (weighed by the size of the record's tables): at most this many a pickle byte,
 * and PROBE_FLOOR, what the counting unpickler's budget allows
 * (safe_budget.PROBES_A_UNIT a unit): past it, the record is refused.
 * Ints and random keys pass 0-2 a key (a few bytes each); timestamps, ids
 * of a stride, grids, at most 4.7 a pickle byte (36th review). */
#define PROBE_SHARE 32
#define PROBE_FLOOR (4 << 20)
#define CROWDED                                                                        \
    "safe mode refuses keys whose paths through their dicts' and sets' tables pass "   \
    "more than 32 occupied slots a pickle byte (they crowd: CPython takes time "       \
    "quadratic in them)"

/* The distinct keys of a chosen hash counted so far, chained by bucket:
 * each its hash and where the pool holds it. */
typedef struct {
    uint64_t hash;
    uint32_t key, next; /* (NO_KEY: none) */
} entry;
#define NO_KEY UINT32_MAX

static uint64_t multiplier; /* odd, random: the buckets' multiply-shift */
static int usable;          /* the formulas match this Python's hash() */

typedef struct {
    value *stack, *pool;   /* the pool: what is memo'd (but OTHER), and counted */
    uint32_t *memo;        /* by slot: ABSENT, OTHER, or POOLED + where in the pool */
    entry *entries;        /* of the keys counted */
    uint32_t *heads;       /* by bucket: the first entry of its chain */
    Py_ssize_t *marks;
    probe_table *tables;   /* of the dicts and sets the record makes */
    Py_ssize_t stack_len, stack_cap, pool_len, pool_cap, memo_len, memo_cap;
    Py_ssize_t entries_len, entries_cap, marks_len, marks_cap, filled, room;
    Py_ssize_t tables_len, tables_cap, slots; /* (slots: of all the tables) */
    probe_count probes;    /* slots passed in the tables, and how many may be */
    int bits;              /* 2**bits buckets */
    int shared;            /* the record may hash an object again (see hashed) */
    int stopped;
    PyObject *seen;
} pass;

static uint32_t
bucket(const pass *s, uint64_t hash)
{
    return (uint32_t)((hash * multiplier) >> (64 - s->bits));
}

/* Room for more of what a pass holds: 1, 0 past its room, -1 (error set). */
static int
grow(void **items, Py_ssize_t *cap, size_t size, Py_ssize_t *room)
{
    Py_ssize_t more = *cap ? *cap : 64;
    if (*cap + more >= (Py_ssize_t)NO_KEY || (*room -= more * (Py_ssize_t)size) < 0)
        return 0;
    void *grown = PyMem_Realloc(*items, (size_t)(*cap + more) * size);
    if (grown == NULL)
        return PyErr_NoMemory(), -1;
    *items = grown;
    *cap += more;
    return 1;
}

#define GROW(s, name, need)                                                            \
    ((need) <= (s)->name##_cap ? 1                                                     \
                               : grow((void **)&(s)->name, &(s)->name##_cap,           \
                                      sizeof(*(s)->name), &(s)->room))

/* Room for one more entry: chains rebuilt over twice as many buckets as
 * entries once they fill them. 1, 0, -1 as grow. */
static int
entries_grow(pass *s)
{
    int got = GROW(s, entries, s->entries_len + 1);
    if (got <= 0 || ((Py_ssize_t)1 << s->bits) >= 2 * s->entries_cap)
        return got;
    while (((Py_ssize_t)1 << s->bits) < 2 * s->entries_cap)
        s->bits++;
    Py_ssize_t buckets = (Py_ssize_t)1 << s->bits;
    if ((s->room -= buckets * (Py_ssize_t)sizeof(uint32_t)) < 0)
        return 0;
    PyMem_Free(s->heads);
    if ((s->heads = PyMem_Malloc((size_t)buckets * sizeof(uint32_t))) == NULL)
        return PyErr_NoMemory(), -1;
    memset(s->heads, 0xff, (size_t)buckets * sizeof(uint32_t));
    for (Py_ssize_t i = 0; i < s->entries_len; i++) {
        uint32_t b = bucket(s, s->entries[i].hash);
        s->entries[i].next = s->heads[b];
        s->heads[b] = (uint32_t)i;
    }
    return 1;
}

/* The pool's copy of a stack item (its place there, 1 + it in ``pooled``):
 * 1, 0, -1 as grow. */
static int
pooled(pass *s, value *v)
{
    if (v->pooled)
        return 1;
    int got = GROW(s, pool, s->pool_len + 1);
    if (got <= 0)
        return got;
    v->pooled = (uint32_t)++s->pool_len;
    s->pool[s->pool_len - 1] = *v;
    return 1;
}

/* Count a key hashed: 1 if taken, 0 if the record is the counting
 * unpickler's, -1 with an error set. A string's hash is cached, but one
 * compared with an equal one not the same object is compared byte by byte:
 * of a long one hashed again and again (``shared``), each time
 * (_pickle_opcodes.h's BY_SIZE). */
static int
hashed(pass *s, value *key)
{
    if (key->kind == TEXT_KEY || (key->kind == LONG_TEXT_KEY && !s->shared))
        return 1; /* a secret hash */
    if (key->kind == OTHER || key->kind == LONG_TEXT_KEY)
        return 0;
    if (!key->chosen)
        return 1; /* a hash a pickle cannot choose */
    if (s->seen != NULL && key->kind != TEXT_TUPLE_KEY) { /* (a secret hash) */
        PyObject *h = PyLong_FromSsize_t((Py_ssize_t)key->hash);
        if (h == NULL || PyList_Append(s->seen, h) < 0)
            return Py_XDECREF(h), -1;
        Py_DECREF(h);
    }
    int others = 0;
    if (s->heads != NULL) {
        uint32_t i = s->heads[bucket(s, key->hash)];
        for (; i != NO_KEY; i = s->entries[i].next) {
            if (s->entries[i].hash != key->hash)
                continue;
            if (s->entries[i].key + 1 == key->pooled || same_key(&s->pool[s->entries[i].key], key))
                return 1;
            others++;
        }
    }
    int got;
    if (others >= KEY_SHARE || (got = entries_grow(s)) <= 0 || (got = pooled(s, key)) <= 0)
        return others >= KEY_SHARE ? 0 : got;
    uint32_t b = bucket(s, key->hash);
    s->entries[s->entries_len] = (entry){key->hash, key->pooled - 1, s->heads[b]};
    s->heads[b] = (uint32_t)s->entries_len++;
    return 1;
}

/* Room for one more on the stack: its place, or NULL (``*got``: 0 past the
 * room, -1 with an error set). */
static value *
push_value(pass *s, int *got)
{
    if ((*got = GROW(s, stack, s->stack_len + 1)) <= 0)
        return NULL;
    return &s->stack[s->stack_len++];
}

/* Whether pooled keys ``a`` and ``b`` are one value (a probe table's). */
static int
same_pooled(void *context, uintptr_t a, uintptr_t b)
{
    const pass *s = context;
    return same_key(&s->pool[a], &s->pool[b]);
}

/* The probe table of the stack item at ``at``: its index, or -1 if the
 * record did not make it a dict or set (a list's SETITEMS). */
static Py_ssize_t
table_at(const pass *s, Py_ssize_t at)
{
    return at >= 0 && s->stack[at].kind == TABLE ? (Py_ssize_t)s->stack[at].bits[0] : -1;
}

/* A new probe table (a set's: ``is_set``), as ``v``: 1, 0, -1 as grow. */
static int
new_table(pass *s, int is_set, value *v)
{
    int got = GROW(s, tables, s->tables_len + 1);
    if (got <= 0)
        return got;
    s->tables[s->tables_len] = (probe_table){.is_set = (uint8_t)is_set};
    *v = (value){.kind = TABLE, .bits = {(uint64_t)s->tables_len++}};
    return 1;
}

/* Place a key hashed into probe table ``t`` as CPython will, where a
 * pickle knows its hash (not a string's): 1, 0 once the slots passed in
 * the record's tables are past PROBE_SHARE a pickle byte (keys_counted
 * refuses it) or past the room, -1 (error set). */
static int
placed(pass *s, Py_ssize_t t, value *key)
{
    if (t < 0 || (key->kind != NUMBER_KEY && key->kind != TUPLE_KEY))
        return 1;
    int fresh = !key->pooled, got = pooled(s, key);
    probe_table *table = &s->tables[t];
    Py_ssize_t size = probe_size(table);
    s->probes.others = s->slots - size; /* (slot_cost) */
    if (got > 0)
        got = probe_add(table, key->hash, key->pooled - 1, same_pooled, s, &s->probes, &s->room);
    s->slots += probe_size(table) - size;
    if (got == 2 && fresh) { /* an equal key was there: this one is not kept */
        s->pool_len--;
        key->pooled = 0;
    }
    return got < 0 ? -1 : got > 0;
}

/* Hash the items from ``start`` up, every ``step``-th (keys of pairs),
 * into probe table ``t``. */
static int
hash_items(pass *s, Py_ssize_t start, Py_ssize_t step, Py_ssize_t t)
{
    for (Py_ssize_t i = start; i < s->stack_len; i += step) {
        int taken = hashed(s, &s->stack[i]);
        if (taken > 0)
            taken = placed(s, t, &s->stack[i]);
        if (taken <= 0)
            return taken;
    }
    return 1;
}

static Py_ssize_t
pop_mark_at(pass *s)
{
    return s->marks_len ? s->marks[--s->marks_len] : -1;
}

/* Memo slot ``slot`` set to the top of the stack: 1, 0, -1 as grow. */
static int
memo_put(pass *s, int64_t slot)
{
    if (!s->stack_len || slot < 0 || slot > s->memo_len) /* (the scan: none past the stores) */
        return 0;
    int got = GROW(s, memo, slot + 1);
    if (got <= 0)
        return got;
    if (slot == s->memo_len)
        s->memo[s->memo_len++] = ABSENT;
    s->filled += s->memo[slot] == ABSENT;
    value *top = &s->stack[s->stack_len - 1];
    if (top->kind == OTHER) {
        s->memo[slot] = OTHER;
        return 1;
    }
    if ((got = pooled(s, top)) <= 0) /* each object once, however many slots hold it */
        return got;
    s->memo[slot] = POOLED + top->pooled - 1; /* all of it: a string's size too (33rd review) */
    return 1;
}

static int
memo_get(pass *s, int64_t slot)
{
    if (slot < 0 || slot >= s->memo_len || s->memo[slot] == ABSENT)
        return 0;
    int got;
    value *v = push_value(s, &got);
    if (v != NULL)
        *v = s->memo[slot] == OTHER ? (value){.kind = OTHER} : s->pool[s->memo[slot] - POOLED];
    return got;
}

/* The size of the opcode at ``p`` with its argument (``*n``: a SIZED
 * argument's length), or 0 if it runs past ``end``. */
static Py_ssize_t
opcode_size(const unsigned char *p, const unsigned char *end, uint64_t *n)
{
    unsigned char op = p[0];
    Py_ssize_t size = 1 + width_of[op];
    if (arg_of[op] == UNKNOWN || end - p < size)
        return 0;
    if (arg_of[op] == SIZED || arg_of[op] == SIZED_SIGNED) {
        *n = little_endian(p + 1, width_of[op]);
        return *n > (uint64_t)(end - p - size) ? 0 : size + (Py_ssize_t)*n;
    }
    if (arg_of[op] == TEXT || arg_of[op] == TEXT_SLOT) {
        for (int i = 0; i < (arg_of[op] == TEXT ? lines_of[op] : 1); i++) {
            const unsigned char *nl = memchr(p + size, '\n', (size_t)(end - p - size));
            if (nl == NULL)
                return 0;
            size = nl - p + 1;
        }
    }
    return size;
}

/* Act on the opcode at ``p``, ``size`` bytes: 1, 0 when the record is the
 * counting unpickler's, -1 with an error set. */
static int
step(pass *s, const unsigned char *p, Py_ssize_t size, uint64_t n)
{
    unsigned char op = p[0];
    Py_ssize_t len = s->stack_len, mark;
    int got;
    value *v;
    switch (op) {
    case PROTO:
    case FRAME:
        return 1;
    case STOP:
        s->stopped = 1;
        return len > 0;
    case MARK:
        if ((got = GROW(s, marks, s->marks_len + 1)) <= 0)
            return got;
        s->marks[s->marks_len++] = len;
        return 1;
    case POP: /* a mark if it is on top, else an item */
        if (s->marks_len && s->marks[s->marks_len - 1] == len)
            s->marks_len--;
        else if (len)
            s->stack_len--;
        else
            return 0;
        return 1;
    case POP_MARK:
        if ((mark = pop_mark_at(s)) < 0)
            return 0;
        s->stack_len = mark;
        return 1;
    case DUP:
        if (!len)
            return 0;
        v = &s->stack[len - 1];
        if (is_string(v) && v->longest <= TEXT_TUPLE_COST)
            text_data(v, s->pool); /* copies, each in a tuple key, hash it once */
        if ((v = push_value(s, &got)) == NULL)
            return got;
        *v = s->stack[len - 1];
        return 1;
    case MEMOIZE:
        return memo_put(s, s->filled);
    case BINPUT:
    case LONG_BINPUT:
        return memo_put(s, (int64_t)little_endian(p + 1, width_of[op]));
    case PUT:
        return memo_put(s, text_slot(p + 1, size - 2));
    case BINGET:
    case LONG_BINGET:
        return memo_get(s, (int64_t)little_endian(p + 1, width_of[op]));
    case GET:
        return memo_get(s, text_slot(p + 1, size - 2));
    case APPEND:
        return len >= 2 ? (s->stack_len--, 1) : 0;
    case SETITEM:
        if (len < 3)
            return 0;
        s->stack_len -= 2;
        got = hashed(s, &s->stack[len - 2]);
        return got > 0 ? placed(s, table_at(s, len - 3), &s->stack[len - 2]) : got;
    case APPENDS:
    case SETITEMS:
    case ADDITEMS:
        if ((mark = pop_mark_at(s)) < 1)
            return 0;
        got = op == APPENDS ? 1
                            : hash_items(s, mark, op == SETITEMS ? 2 : 1, table_at(s, mark - 1));
        s->stack_len = mark;
        return got;
    case EMPTY_DICT:
    case EMPTY_SET:
        if ((v = push_value(s, &got)) == NULL)
            return got;
        return new_table(s, op == EMPTY_SET, v);
    case DICT:
    case FROZENSET: {
        value made;
        if ((mark = pop_mark_at(s)) < 0 || (got = new_table(s, op == FROZENSET, &made)) <= 0)
            return mark < 0 ? 0 : got;
        if ((got = hash_items(s, mark, op == DICT ? 2 : 1, s->tables_len - 1)) <= 0)
            return got;
        if (op == FROZENSET) { /* never added to again: its table is done with */
            probe_table *done = &s->tables[--s->tables_len];
            s->slots -= probe_size(done);
            probe_free(done);
            made = (value){.kind = OTHER};
        }
        if ((got = GROW(s, stack, mark + 1)) <= 0) /* (room for an empty one) */
            return got;
        s->stack[mark] = made;
        s->stack_len = mark + 1;
        return 1;
    }
    case LIST:
    case TUPLE:
        if ((mark = pop_mark_at(s)) < 0)
            return 0;
        if ((got = GROW(s, stack, mark + 1)) <= 0) /* (room for an empty one) */
            return got;
        if (op == TUPLE)
            tuple_of(&s->stack[mark], &s->stack[mark], len - mark, s->pool);
        else
            s->stack[mark] = (value){.kind = OTHER};
        s->stack_len = mark + 1;
        return 1;
    case TUPLE1:
    case TUPLE2:
    case TUPLE3:
        if ((mark = len - (op - TUPLE1 + 1)) < 0)
            return 0;
        tuple_of(&s->stack[mark], &s->stack[mark], len - mark, s->pool);
        s->stack_len = mark + 1;
        return 1;
    /* The code of a record of calls (scan_whole's 2): a global, a call's
     * result, a buffer, none of whose hashes the count knows (as a key: 0) */
    case STACK_GLOBAL:
    case REDUCE:
        if (len < 2)
            return 0;
        s->stack[len - 2] = (value){.kind = OTHER};
        s->stack_len--;
        return 1;
    case GLOBAL:
    case NEXT_BUFFER:
        if ((v = push_value(s, &got)) == NULL)
            return got;
        *v = (value){.kind = OTHER};
        return 1;
    case READONLY_BUFFER:
        return len > 0;
    }
    if ((v = push_value(s, &got)) == NULL)
        return got;
    return scalar(v, p, arg_of[op] == TEXT ? (uint64_t)size - 2 : n) < 0 ? -1 : 1;
}

/* The opcodes that reach code which ``step`` takes (calls: see there). */
static const unsigned char is_call[256] = {
    [STACK_GLOBAL] = 1, [REDUCE] = 1, [GLOBAL] = 1, [NEXT_BUFFER] = 1, [READONLY_BUFFER] = 1,
};

int
keys_counted(const unsigned char *p, Py_ssize_t n, int shared, PyObject *seen)
{
    if (!usable)
        return 0;
    pass s = {.seen = seen, .room = ROOM * n + (1 << 20), .shared = shared,
              .probes = {.limit = PROBE_SHARE * n + PROBE_FLOOR}};
    const unsigned char *at = p, *end = p + n;
    int result = 1;
    while (result > 0 && at < end && !s.stopped) {
        uint64_t arg = 0;
        Py_ssize_t size = reaches_code[*at] && !is_call[*at] ? 0 : opcode_size(at, end, &arg);
        result = size ? step(&s, at, size, arg) : 0;
        at += size;
    }
    PyMem_Free(s.stack);
    PyMem_Free(s.pool);
    PyMem_Free(s.memo);
    PyMem_Free(s.marks);
    PyMem_Free(s.entries);
    PyMem_Free(s.heads);
    for (Py_ssize_t i = 0; i < s.tables_len; i++)
        probe_free(&s.tables[i]);
    PyMem_Free(s.tables);
    if (result == 0 && s.probes.passed > s.probes.limit) { /* past what the budget allows */
        PyObject *args = Py_BuildValue("(sn)", CROWDED, (Py_ssize_t)(at - p));
        if (args != NULL)
            PyErr_SetObject(PyExc_ValueError, args), Py_DECREF(args);
        return -1;
    }
    return result <= 0 ? result : s.stopped && at == end;
}

int
keys_init(void)
{
    if (multiplier) /* once: a pass may be running in another module's thread */
        return 0;
    PyObject *os = PyImport_ImportModule("os");
    PyObject *random = os ? PyObject_CallMethod(os, "urandom", "i", 8) : NULL;
    Py_XDECREF(os);
    if (random == NULL)
        return -1;
    uint64_t drawn;
    memcpy(&drawn, PyBytes_AS_STRING(random), 8);
    Py_DECREF(random);
    if ((usable = key_values_init(drawn >> 1)) < 0)
        return -1;
    multiplier = drawn | 1;
    return 0;
}
