/* Keys' values and hashes, as _pickle_key_values.h says. */
#include "_pickle_key_values.h"
#include "_pickle_opcodes.h"

static uint64_t none_hash, empty_str_hash, empty_bytes_hash;
static uint64_t data_seed; /* random: where every string's data hash starts */

#define FNV_PRIME 1099511628211ULL

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
    return 0; /* not usable: key_values_init */
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

int
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

/* The code point of the UTF-8 at ``*c`` (lone surrogates as pickle's
 * "surrogatepass" reads them), moving ``*c`` past it; -1 where CPython's
 * decoder would refuse it. */
static int32_t
code_point(const unsigned char **c, const unsigned char *end)
{
    const unsigned char *at = *c;
    uint32_t cp = at[0];
    int more = cp < 0x80 ? 0 : cp >= 0xC2 && cp < 0xE0 ? 1 : cp >= 0xE0 && cp < 0xF0 ? 2
             : cp >= 0xF0 && cp < 0xF5                ? 3
                                                      : -1;
    if (more < 0 || end - at <= more)
        return -1;
    cp &= 0x7Fu >> more;
    for (int i = 1; i <= more; i++) {
        if ((at[i] & 0xC0) != 0x80)
            return -1;
        cp = cp << 6 | (at[i] & 0x3F);
    }
    if ((more == 2 && cp < 0x800) || (more == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
        return -1; /* overlong, or past Unicode */
    *c = at + 1 + more;
    return (int32_t)cp;
}

/* Hash a string's data bytes as CPython holds them (a bytes' own; a str's
 * 1, 2 or 4 bytes a character, as its largest needs: what its secret hash
 * is of, so a str and bytes of equal data bytes share it) into ``v->hash``,
 * their size into bits[2], and which it is into ``tags[2]``: 0 bytes, 1, 2
 * or 3 a str of 1, 2 or 4 bytes a character. 0, or -1 where its UTF-8 is
 * not a str's. */
static int
data_hash(value *v)
{
    const unsigned char *p = (const unsigned char *)(uintptr_t)v->bits[0];
    const unsigned char *end = p + v->bits[1], *c = p;
    uint64_t h = data_seed;
    if (v->tags[0] == BYTES_TEXT) {
        for (; c < end; c++)
            h = (h ^ *c) * FNV_PRIME;
        v->bits[2] = v->bits[1];
    }
    else {
        int32_t largest = 0, cp;
        uint64_t characters = 0;
        for (; c < end; characters++)
            if ((cp = code_point(&c, end)) < 0)
                return -1;
            else if (cp > largest)
                largest = cp;
        int width = largest < 0x100 ? 1 : largest < 0x10000 ? 2 : 4;
        v->tags[2] = (uint8_t)(width == 4 ? 3 : width); /* (0: bytes) */
        v->bits[2] = characters * (uint64_t)width;
        for (c = p; c < end;) {
            uint32_t unit = (uint32_t)code_point(&c, end);
            for (int i = 0; i < width; i++) /* the data bytes, little-endian */
                h = (h ^ (unit >> 8 * i & 0xFF)) * FNV_PRIME;
        }
    }
    v->hash = h;
    return 0;
}

int
text_data(value *v, value *pool)
{
    if (v->tags[1] == 0 && pool != NULL && v->pooled) /* a copy from the memo: */
        *v = pool[v->pooled - 1]; /* its hash, if worked out since */
    if (v->tags[1] == 0 && v->tags[0] != OLD_TEXT) {
        v->tags[1] = data_hash(v) < 0 ? 2 : 1;
        if (pool != NULL && v->pooled) /* once for each memo'd string */
            pool[v->pooled - 1] = *v;
    }
    return v->tags[1] == 1;
}

/* One lane more of a TEXT_TUPLE_KEY's class: ``kind`` 1 a string's data
 * hash, 2 a number's hash. */
static uint64_t
class_lane(uint64_t acc, int kind, uint64_t lane)
{
    acc = (acc ^ (uint64_t)kind) * FNV_PRIME + lane * XXPRIME_2;
    return XXROTATE(acc) * XXPRIME_1;
}

/* A tuple of strings and numbers (``items``: ``n``, at least one string).
 * One of at most two strings and at most one number whose hash is not
 * chosen hashes with its strings' secret (_pickle_scan_hash.h's
 * hash_flags): a TEXT_KEY, not counted. But up to 4 strings share a hash
 * with each (a str and bytes of one data, and strs of other widths), and
 * ~14 numbers with a number (-1 and -2, ~12 floats), so as many such tuples
 * may, and an equal one added again (from the memo, for 2 bytes) is
 * compared with each, its strings byte by byte (33rd review: 125 GB of
 * memcmp a MiB): a LONG_TEXT_KEY (counted in Python where a record shares
 * objects) where that passes what comparing one string of 4 KiB costs.
 * More strings, two and a number, or a number of a chosen hash (up to 4**k
 * variants of one hash, 224 of two strings and a number: 34th review) make
 * a TEXT_TUPLE_KEY, counted by its class: its strings' data hashes and its
 * number's hash, lane by lane, what its hash is a function of (xxHash's
 * lanes: one number among fixed strings collides only as a number of its
 * hash; strings of other data by chance of the secret). Keys of a class are
 * told apart by their strings' forms (bytes, or a str of 1, 2 or 4 bytes a
 * character: data_hash) and by the number itself. Two
 * numbers (whose lanes a pickle may solve against the strings' unknown
 * ones), a long or protocol 0-2 string, or a compare that may cost more
 * than TEXT_TUPLE_COST (lanes and data: a key re-added from the memo for 2
 * bytes is compared with each other key of its class, 40th review): OTHER. */
static void
text_tuple(value *v, value *items, Py_ssize_t n, value *pool)
{
    value t = {.kind = TEXT_KEY, .n = (uint8_t)n};
    int strings = 0, numbers = 0, long_text = 0;
    uint64_t data = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const value *item = &items[i];
        if (is_string(item)) {
            strings++;
            long_text |= item->kind == LONG_TEXT_KEY;
            t.longest = item->longest > t.longest ? item->longest : t.longest;
            data += item->longest;
            continue;
        }
        if (item->kind != NUMBER_KEY) { /* (a tuple of strings too) */
            *v = (value){.kind = OTHER};
            return;
        }
        numbers++;
        t.tags[0] = item->tags[0];
        t.bits[0] = item->bits[0];
        t.chosen |= item->chosen;
    }
    if (!(numbers > 1 || strings > 2 || (strings == 2 && numbers) || t.chosen)) {
        uint64_t variants = ((uint64_t)1 << 2 * strings) * (numbers ? 16 : 1);
        t.kind = long_text || variants * t.longest >= COMPARED_TEXT ? LONG_TEXT_KEY : TEXT_KEY;
        *v = t;
        return;
    }
    uint64_t cost = (uint64_t)n * LANE_COST; /* and the data bytes compared */
    if (numbers > 1 || long_text || cost + data > TEXT_TUPLE_COST) {
        *v = (value){.kind = OTHER}; /* (data: UTF-8, what is hashed below) */
        return;
    }
    uint64_t class = data_seed ^ (uint64_t)n, forms = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        value *item = &items[i];
        if (item->kind == NUMBER_KEY) {
            class = class_lane(class, 2, item->hash);
            continue;
        }
        if (!text_data(item, pool)) {
            *v = (value){.kind = OTHER};
            return;
        }
        class = class_lane(class, 1, item->hash);
        forms |= (uint64_t)item->tags[2] << 2 * i;
        cost += item->bits[2];
    }
    if (cost > TEXT_TUPLE_COST) { /* (a str of 2 or 4 bytes a character) */
        *v = (value){.kind = OTHER};
        return;
    }
    t.kind = TEXT_TUPLE_KEY;
    t.chosen = 1;
    t.hash = class;
    t.bits[1] = forms;
    *v = t;
}

/* A tuple of the ``n`` values at ``items``: a TUPLE_KEY if all are numbers
 * and there are 1 to KEY_ITEMS, its hash chosen where two are or one has a
 * chosen hash; of strings and numbers, text_tuple's. A tuple in it is
 * hashed again each time, as deep as they nest: OTHER. */
void
tuple_of(value *v, value *items, Py_ssize_t n, value *pool)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (is_string(&items[i]))
            return text_tuple(v, items, n, pool);
    value t = {.kind = n >= 1 && n <= KEY_ITEMS ? TUPLE_KEY : OTHER, .n = (uint8_t)n};
    uint64_t lanes[KEY_ITEMS];
    for (Py_ssize_t i = 0; i < n && t.kind != OTHER; i++) {
        const value *item = &items[i];
        if (item->kind != NUMBER_KEY) {
            t.kind = OTHER;
            break;
        }
        t.tags[i] = item->tags[0];
        t.bits[i] = item->bits[0];
        t.chosen |= item->chosen;
        lanes[i] = item->hash;
    }
    if (t.kind == TUPLE_KEY) {
        t.chosen |= n > 1;
        t.hash = tuple_hash(lanes, (int)n);
    }
    *v = t;
}

int
same_key(const value *a, const value *b)
{
    if (a->kind != b->kind || a->n != b->n || a->hash != b->hash)
        return 0;
    int items = a->kind == TEXT_TUPLE_KEY ? 2 : a->n; /* its number; its strings' forms */
    for (int i = 0; i < items; i++)
        if (a->tags[i] != b->tags[i] || a->bits[i] != b->bits[i])
            return 0;
    return 1;
}

/* A string of ``n`` bytes, pushed by the opcode at ``p``, as ``v``. */
static int
text_at(value *v, uint8_t kind, enum text text, const unsigned char *p, uint64_t n)
{
    *v = (value){.kind = kind, .longest = n < UINT32_MAX ? (uint32_t)n : UINT32_MAX};
    v->tags[0] = (uint8_t)text;
    v->bits[0] = (uint64_t)(uintptr_t)(p + 1 + width_of[p[0]]);
    v->bits[1] = n;
    return 0;
}

int
scalar(value *v, const unsigned char *p, uint64_t n)
{
    unsigned char op = p[0];
    uint8_t text = dag_bits[op] & BY_SIZE && 1 + width_of[op] + n >= (uint64_t)costly_from[op]
                       ? LONG_TEXT_KEY
                       : TEXT_KEY;
    *v = (value){.kind = OTHER}; /* containers, FLOAT and strings as text, LONG4 */
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
    case INT: /* text: a sign and up to 18 digits (int_chosen), "00"/"01" booleans */
    case LONG: {
        if (int_chosen(op, p + 1, n))
            return 0;
        int64_t digits = 0, negative = p[1] == '-';
        for (const unsigned char *c = p + 1 + (p[1] == '-' || p[1] == '+'); Py_ISDIGIT(*c); c++)
            digits = digits * 10 + (*c - '0');
        return number(v, INT_TAG, (uint64_t)(negative ? -digits : digits), 0);
    }
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
        return n ? text_at(v, text, STR_TEXT, p, n) : number(v, EMPTY_STR_TAG, 0, 0);
    case SHORT_BINBYTES:
    case BINBYTES:
    case BINBYTES8:
        return n ? text_at(v, text, BYTES_TEXT, p, n) : number(v, EMPTY_BYTES_TAG, 0, 0);
    case SHORT_BINSTRING:
    case BINSTRING: /* str or bytes, as the unpickler's encoding says */
        return n ? text_at(v, text, OLD_TEXT, p, n) : 0;
    default:
        return 0;
    }
}

/* Whether the formulas above give this Python's hash() of ``obj``, a tuple
 * of numbers (or the number itself, ``alone``). */
static int
matches(PyObject *obj, value *items, Py_ssize_t n, int alone)
{
    value t;
    tuple_of(&t, items, n, NULL);
    Py_hash_t h = PyObject_Hash(obj);
    Py_DECREF(obj);
    return (uint64_t)h == (alone ? items[0].hash : t.hash);
}

int
key_values_init(uint64_t seed)
{
    data_seed = seed;
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
    return PyErr_Occurred() ? -1 : SIZEOF_VOID_P == 8 && all;
}
