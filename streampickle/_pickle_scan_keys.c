/* Keys of a chosen hash, counted in C: whether plain data that hashes them
 * may still go to the C unpickler in safe mode.
 *
 * A pickle may choose the hashes of some keys (_pickle_scan_hash.h): keys of
 * one hash make each insert compare with all of them. In safe mode the scan
 * sends plain data that hashes such keys to Python's counting unpickler
 * (safe_budget.DistinctKeys), 17-31 times slower than the C one for a dict
 * of (i, j) or 64-bit keys. This pass reads such a whole record once more
 * and works out what CPython will: the hash of each key hashed (a dict key,
 * a set or frozenset item) that is a number (an int of up to 64 bits, a
 * float, a boolean, None, '' or b'') or a tuple of one to KEY_ITEMS of them,
 * and how many distinct ones share each hash. When no hash has more than
 * KEY_SHARE distinct keys of a chosen hash, no insert compares more than
 * that many (each in a few steps: a tuple of a few numbers), besides the
 * few that share an unchosen hash by nature (-1 and -2; ~12 usual floats):
 * the record loads in linear time and goes to the C unpickler. A record that
 * hashes any other key whose hash it may choose, or any it cannot read
 * (longer ints, strings in tuples, nested tuples, frozensets, text
 * opcodes), stays with the counting unpickler.
 *
 * Hashes are CPython's own: an int's is its value modulo _PyHASH_MODULUS,
 * a tuple's the xxHash-like formula of Objects/tupleobject.c, a float's and
 * the constants' (None, '', b'') taken from CPython itself; keys_init checks
 * the formulas against hash() and leaves every record to the counting
 * unpickler if one differs (another Python). Distinct keys are counted by
 * value, exactly (an int and its equal float or boolean count as one; 0.0
 * and -0.0 too), in a table indexed by a random multiplier (multiply-shift:
 * universal, so keys of distinct hashes share a bucket no more often than
 * chance, whatever hashes a pickle chooses).
 *
 * Memory: a value (48 bytes) for each stack item, number or tuple memo'd
 * and distinct key counted, and 4 bytes a memo slot: at most ROOM times the
 * pickle's bytes (a record that needs more is the counting unpickler's),
 * less than the unpickler then makes of them, and freed before it runs.
 */
#include "_pickle_scan.h"
#include "_pickle_opcodes.h"

#define KEY_ITEMS 3 /* numbers in a tuple key read */
#define KEY_SHARE 8 /* distinct keys of one chosen hash taken */
#define ROOM 32     /* bytes of memory a pickle byte */

/* What a stack item or memo slot is, as this pass reads it (a memo slot:
 * the kind, or POOLED + where in the pool a number or tuple is). */
enum kind { ABSENT, OTHER, TEXT_KEY, LONG_TEXT_KEY, NUMBER_KEY, TUPLE_KEY, POOLED };
/* What each number of a key is: its bits an int64, a double, or unused. */
enum tag { INT_TAG, FLOAT_TAG, NONE_TAG, EMPTY_STR_TAG, EMPTY_BYTES_TAG };

typedef struct {
    uint64_t hash;              /* CPython's, as unsigned (NUMBER_KEY, TUPLE_KEY) */
    uint64_t bits[KEY_ITEMS];   /* the numbers */
    uint32_t pooled;            /* 1 + where in the pool, once memo'd; else 0 */
    uint8_t kind, n, chosen;    /* n numbers (1 for NUMBER_KEY) */
    uint8_t tags[KEY_ITEMS];
    uint8_t strings, wrapped;   /* a TEXT_KEY's strings (up to 3), and number */
} value;

/* The distinct keys of a chosen hash counted so far, chained by bucket:
 * each its hash and where the pool holds it. */
typedef struct {
    uint64_t hash;
    uint32_t key, next; /* (NO_KEY: none) */
} entry;
#define NO_KEY UINT32_MAX

typedef struct {
    value *stack, *pool;   /* the pool: numbers and tuples memo'd or counted */
    uint32_t *memo;        /* by slot: a kind, or POOLED + where in the pool */
    entry *entries;        /* of the keys counted */
    uint32_t *heads;       /* by bucket: the first entry of its chain */
    Py_ssize_t *marks;
    Py_ssize_t stack_len, stack_cap, pool_len, pool_cap, memo_len, memo_cap;
    Py_ssize_t entries_len, entries_cap, marks_len, marks_cap, filled, room;
    int bits;              /* 2**bits buckets */
    int shared;            /* the record may hash an object again (see hashed) */
    int stopped;
    PyObject *seen;
} pass;

static uint64_t multiplier; /* odd, random: the buckets' multiply-shift */
static uint64_t none_hash, empty_str_hash, empty_bytes_hash;
static int usable; /* the formulas match this Python's hash() */

#if SIZEOF_VOID_P == 8
#define XXPRIME_1 11400714785074694791ULL
#define XXPRIME_2 14029467366897019727ULL
#define XXPRIME_5 2870177450012600261ULL
#define XXROTATE(x) ((x) << 31 | (x) >> 33)
#endif

static uint64_t
int_hash(int64_t v)
{
    uint64_t size = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    uint64_t h = size < (uint64_t)_PyHASH_MODULUS ? size : size % (uint64_t)_PyHASH_MODULUS;
    if (v < 0)
        h = 0 - h;
    return h == (uint64_t)-1 ? (uint64_t)-2 : h;
}

/* A float's hash (CPython's: finite ones only reach here), or -1 (error). */
static int
float_hash(double d, uint64_t *hash)
{
    PyObject *f = PyFloat_FromDouble(d);
    if (f == NULL)
        return -1;
    Py_hash_t h = PyObject_Hash(f);
    Py_DECREF(f);
    *hash = (uint64_t)h;
    return h == -1 && PyErr_Occurred() ? -1 : 0;
}

static uint64_t
tuple_hash(const uint64_t *lanes, int n)
{
#if SIZEOF_VOID_P == 8
    uint64_t acc = XXPRIME_5;
    for (int i = 0; i < n; i++) {
        acc += lanes[i] * XXPRIME_2;
        acc = XXROTATE(acc);
        acc *= XXPRIME_1;
    }
    acc += (uint64_t)n ^ (XXPRIME_5 ^ 3527539ULL);
    return acc == (uint64_t)-1 ? 1546275796ULL : acc;
#else
    (void)lanes, (void)n;
    return 0; /* not usable: keys_init */
#endif
}

/* Each number's own hash, for its tuple's. */
static uint64_t
number_hash(const value *v, int i, int *failed)
{
    switch (v->tags[i]) {
    case INT_TAG:
        return int_hash((int64_t)v->bits[i]);
    case FLOAT_TAG: {
        double d;
        uint64_t h = 0;
        memcpy(&d, &v->bits[i], 8);
        *failed |= float_hash(d, &h) < 0;
        return h;
    }
    case NONE_TAG:
        return none_hash;
    case EMPTY_STR_TAG:
        return empty_str_hash;
    default:
        return empty_bytes_hash;
    }
}

/* A number pushed: an int of up to 64 bits, a float (an integral one as
 * the int it equals), None, '' or b''. 0, or -1 with an error set. */
static int
number(value *v, enum tag tag, uint64_t bits, int chosen)
{
    if (tag == FLOAT_TAG) {
        double d;
        memcpy(&d, &bits, 8);
        if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(int64_t)d)
            tag = INT_TAG, bits = (uint64_t)(int64_t)d; /* 2.0 == 2, -0.0 == 0 */
    }
    *v = (value){.kind = NUMBER_KEY, .n = 1, .chosen = (uint8_t)chosen};
    v->tags[0] = (uint8_t)tag;
    v->bits[0] = bits;
    int failed = 0;
    v->hash = number_hash(v, 0, &failed);
    return failed ? -1 : 0;
}

/* A tuple of the ``n`` values at ``items``: a TUPLE_KEY if all are numbers
 * and there are 1 to KEY_ITEMS, its hash chosen where two are or one has a
 * chosen hash; one of strings and at most one number whose hash is not
 * chosen (_pickle_scan_hash.h's hash_flags) hashes as its strings do, with
 * a secret: a TEXT_KEY (LONG_TEXT_KEY if one is); else OTHER. */
static void
tuple_of(value *v, const value *items, Py_ssize_t n)
{
    value t = {.kind = n >= 1 && n <= KEY_ITEMS ? TUPLE_KEY : OTHER, .n = (uint8_t)n};
    int strings = 0, numbers = 0;
    uint64_t lanes[KEY_ITEMS];
    for (Py_ssize_t i = 0; i < n && t.kind != OTHER; i++) {
        if (items[i].kind == TEXT_KEY || items[i].kind == LONG_TEXT_KEY) {
            strings += items[i].strings;
            t.wrapped |= items[i].wrapped; /* a number in a tuple in it: WRAPPED */
            t.kind = t.kind == LONG_TEXT_KEY ? t.kind : items[i].kind;
            continue;
        }
        if (items[i].kind != NUMBER_KEY) {
            t.kind = OTHER;
            break;
        }
        numbers++;
        t.tags[i] = items[i].tags[0];
        t.bits[i] = items[i].bits[0];
        t.chosen |= items[i].chosen;
        lanes[i] = items[i].hash;
    }
    if (t.kind == TUPLE_KEY) {
        t.chosen |= n > 1;
        t.hash = tuple_hash(lanes, (int)n);
    }
    else if (t.kind != OTHER && (numbers > 1 || strings > 2 || t.chosen || t.wrapped))
        t.kind = OTHER; /* a hash a pickle may choose, not worked out here */
    t.strings = (uint8_t)strings;
    t.wrapped = numbers > 0;
    *v = t;
}

static int
same_key(const value *a, const value *b)
{
    if (a->kind != b->kind || a->n != b->n || a->hash != b->hash)
        return 0;
    for (int i = 0; i < a->n; i++)
        if (a->tags[i] != b->tags[i] || a->bits[i] != b->bits[i])
            return 0;
    return 1;
}

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
    if (s->seen != NULL) {
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

/* Hash the items from ``start`` up, every ``step``-th (keys of pairs). */
static int
hash_items(pass *s, Py_ssize_t start, Py_ssize_t step)
{
    for (Py_ssize_t i = start; i < s->stack_len; i += step) {
        int taken = hashed(s, &s->stack[i]);
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
    if (top->kind == NUMBER_KEY || top->kind == TUPLE_KEY) {
        if ((got = pooled(s, top)) <= 0) /* each object once, however many slots hold it */
            return got;
        s->memo[slot] = POOLED + top->pooled - 1;
    }
    else
        s->memo[slot] = top->kind;
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
        *v = s->memo[slot] >= POOLED ? s->pool[s->memo[slot] - POOLED]
                                     : (value){.kind = (uint8_t)s->memo[slot]};
    return got;
}

/* A number or string pushed by the opcode at ``p`` (``n``: its argument's
 * length), as ``v``: 0, or -1 with an error set. */
static int
scalar(value *v, const unsigned char *p, uint64_t n)
{
    unsigned char op = p[0];
    uint8_t text = dag_bits[op] & BY_SIZE && 1 + width_of[op] + n >= (uint64_t)costly_from[op]
                       ? LONG_TEXT_KEY
                       : TEXT_KEY;
    *v = (value){.kind = OTHER}; /* containers, text numbers and strings, LONG4 */
    switch (op) {
    case BININT1:
        return number(v, INT_TAG, p[1], 0);
    case BININT2:
        return number(v, INT_TAG, little_endian(p + 1, 2), 0);
    case BININT:
        return number(v, INT_TAG, (uint64_t)(int64_t)(int32_t)little_endian(p + 1, 4), 0);
    case NEWTRUE:
    case NEWFALSE:
        return number(v, INT_TAG, op == NEWTRUE, 0);
    case NONE:
        return number(v, NONE_TAG, 0, 0);
    case LONG1: { /* two's complement, little-endian: of up to 8 bytes read */
        if (n > 8)
            return 0;
        uint64_t bits = n ? little_endian(p + 2, (int)n) : 0;
        if (n && n < 8 && p[1 + n] & 0x80)
            bits |= ~(uint64_t)0 << (8 * n); /* the sign, extended */
        return number(v, INT_TAG, bits, int_chosen(LONG1, p + 2, n));
    }
    case BINFLOAT: {
        uint64_t big = 0; /* big-endian on the wire */
        for (int i = 0; i < 8; i++)
            big = big << 8 | p[1 + i];
        double d;
        memcpy(&d, &big, 8);
        return d != d ? 0 : number(v, FLOAT_TAG, big, float_chosen(p + 1)); /* NaN: by id */
    }
    case SHORT_BINUNICODE:
    case BINUNICODE:
    case BINUNICODE8:
        return n ? (v->kind = text, v->strings = 1, 0) : number(v, EMPTY_STR_TAG, 0, 0);
    case SHORT_BINBYTES:
    case BINBYTES:
    case BINBYTES8:
        return n ? (v->kind = text, v->strings = 1, 0) : number(v, EMPTY_BYTES_TAG, 0, 0);
    case SHORT_BINSTRING:
    case BINSTRING: /* str or bytes, as the unpickler's encoding says */
        v->kind = n ? text : OTHER;
        v->strings = 1;
        return 0;
    default:
        return 0;
    }
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
        if (!len || (v = push_value(s, &got)) == NULL)
            return len ? got : 0;
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
        return hashed(s, &s->stack[len - 2]);
    case APPENDS:
    case SETITEMS:
    case ADDITEMS:
        if ((mark = pop_mark_at(s)) < 1)
            return 0;
        got = op == APPENDS ? 1 : hash_items(s, mark, op == SETITEMS ? 2 : 1);
        s->stack_len = mark;
        return got;
    case DICT:
    case FROZENSET:
    case LIST:
    case TUPLE:
        if ((mark = pop_mark_at(s)) < 0)
            return 0;
        if ((op == DICT || op == FROZENSET)
            && (got = hash_items(s, mark, op == DICT ? 2 : 1)) <= 0)
            return got;
        if ((got = GROW(s, stack, mark + 1)) <= 0) /* (room for an empty one) */
            return got;
        if (op == TUPLE)
            tuple_of(&s->stack[mark], &s->stack[mark], len - mark);
        else
            s->stack[mark] = (value){.kind = OTHER};
        s->stack_len = mark + 1;
        return 1;
    case TUPLE1:
    case TUPLE2:
    case TUPLE3:
        if ((mark = len - (op - TUPLE1 + 1)) < 0)
            return 0;
        tuple_of(&s->stack[mark], &s->stack[mark], len - mark);
        s->stack_len = mark + 1;
        return 1;
    }
    if ((v = push_value(s, &got)) == NULL)
        return got;
    return scalar(v, p, n) < 0 ? -1 : 1;
}

int
keys_counted(const unsigned char *p, Py_ssize_t n, int shared, PyObject *seen)
{
    if (!usable)
        return 0;
    pass s = {.seen = seen, .room = ROOM * n + (1 << 20), .shared = shared};
    const unsigned char *at = p, *end = p + n;
    int result = 1;
    while (result > 0 && at < end && !s.stopped) {
        uint64_t arg = 0;
        Py_ssize_t size = reaches_code[*at] ? 0 : opcode_size(at, end, &arg);
        result = size ? step(&s, at, size, arg) : 0;
        at += size;
    }
    PyMem_Free(s.stack);
    PyMem_Free(s.pool);
    PyMem_Free(s.memo);
    PyMem_Free(s.marks);
    PyMem_Free(s.entries);
    PyMem_Free(s.heads);
    return result <= 0 ? result : s.stopped && at == end;
}

/* Whether the formulas above give this Python's hash() of ``obj``, a tuple
 * of numbers (or the number itself, ``alone``). */
static int
matches(PyObject *obj, const value *items, Py_ssize_t n, int alone)
{
    value t;
    tuple_of(&t, items, n);
    Py_hash_t h = PyObject_Hash(obj);
    Py_DECREF(obj);
    return (uint64_t)h == (alone ? items[0].hash : t.hash);
}

int
keys_init(void)
{
    PyObject *os = PyImport_ImportModule("os");
    PyObject *random = os ? PyObject_CallMethod(os, "urandom", "i", 8) : NULL;
    Py_XDECREF(os);
    if (random == NULL)
        return -1;
    memcpy(&multiplier, PyBytes_AS_STRING(random), 8);
    Py_DECREF(random);
    multiplier |= 1;
    Py_hash_t none = PyObject_Hash(Py_None);
    PyObject *str = PyUnicode_FromStringAndSize(NULL, 0), *bytes = PyBytes_FromStringAndSize(NULL, 0);
    Py_hash_t empty_str = str ? PyObject_Hash(str) : -1, empty_bytes = bytes ? PyObject_Hash(bytes) : -1;
    Py_XDECREF(str);
    Py_XDECREF(bytes);
    if (PyErr_Occurred())
        return -1;
    none_hash = (uint64_t)none, empty_str_hash = (uint64_t)empty_str;
    empty_bytes_hash = (uint64_t)empty_bytes;
    /* (2**62 + 3, -7, 2.5), 2**62 + 3, (-1,), (None, '', b'') */
    double half = 2.5;
    uint64_t half_bits;
    memcpy(&half_bits, &half, 8);
    value items[3], minus, constants[3];
    if (number(&items[0], INT_TAG, (1ULL << 62) + 3, 1) < 0
        || number(&items[1], INT_TAG, (uint64_t)-7, 0) < 0
        || number(&items[2], FLOAT_TAG, half_bits, 0) < 0
        || number(&minus, INT_TAG, (uint64_t)-1, 0) < 0
        || number(&constants[0], NONE_TAG, 0, 0) < 0
        || number(&constants[1], EMPTY_STR_TAG, 0, 0) < 0
        || number(&constants[2], EMPTY_BYTES_TAG, 0, 0) < 0)
        return -1;
    PyObject *wide = PyLong_FromUnsignedLongLong((1ULL << 62) + 3);
    if (wide == NULL)
        return -1;
    PyObject *three = Py_BuildValue("(Oid)", wide, -7, 2.5);
    PyObject *minus_one = Py_BuildValue("(i)", -1);
    PyObject *empties = Py_BuildValue("(Osy#)", Py_None, "", "", (Py_ssize_t)0);
    if (three == NULL || minus_one == NULL || empties == NULL) {
        Py_DECREF(wide), Py_XDECREF(three), Py_XDECREF(minus_one), Py_XDECREF(empties);
        return -1;
    }
    int all = matches(three, items, 3, 0);
    all &= matches(wide, items, 1, 1);
    all &= matches(minus_one, &minus, 1, 0);
    all &= matches(empties, constants, 3, 0);
    usable = SIZEOF_VOID_P == 8 && all;
    return PyErr_Occurred() ? -1 : 0;
}
