/* Keys' values and hashes, as _pickle_key_values.h says. */
#include "_pickle_key_values.h"
#include "_pickle_opcodes.h"

static uint64_t none_hash, empty_str_hash, empty_bytes_hash;

/* What comparing one string of 4 KiB costs, where shorter ones stay on
 * the C unpickler when shared (_pickle_opcodes.h's costly_from). */
#define COMPARED_TEXT 4096

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

/* A tuple of the ``n`` values at ``items``: a TUPLE_KEY if all are numbers
 * and there are 1 to KEY_ITEMS, its hash chosen where two are or one has a
 * chosen hash. One of strings (at most two) and at most one number whose
 * hash is not chosen hashes with its strings' secret (_pickle_scan_hash.h's
 * hash_flags): a TEXT_KEY, not counted. But up to 4 strings share a hash
 * with each (a str and bytes of one data), and ~14 numbers with a number
 * (-1 and -2, ~12 floats), so as many such tuples may, and an equal one
 * added again (from the memo, for 2 bytes) is compared with each, its
 * strings byte by byte (33rd review: 125 GB of memcmp a MiB): a
 * LONG_TEXT_KEY (counted in Python where a record shares objects) where
 * that passes what comparing one string of 4 KiB costs. (Two strings and a
 * number have up to 224 variants: a hash a pickle may choose, hash_flags.)
 * A tuple in it is hashed again each time, as deep as they nest: OTHER. */
void
tuple_of(value *v, const value *items, Py_ssize_t n)
{
    value t = {.kind = n >= 1 && n <= KEY_ITEMS ? TUPLE_KEY : OTHER, .n = (uint8_t)n};
    int strings = 0, numbers = 0, long_text = 0;
    uint64_t lanes[KEY_ITEMS];
    for (Py_ssize_t i = 0; i < n && t.kind != OTHER; i++) {
        const value *item = &items[i];
        if ((item->kind == TEXT_KEY || item->kind == LONG_TEXT_KEY) && item->n == 0) {
            strings++;
            long_text |= item->kind == LONG_TEXT_KEY;
            t.longest = item->longest > t.longest ? item->longest : t.longest;
            t.kind = TEXT_KEY;
            continue;
        }
        if (item->kind != NUMBER_KEY) { /* (a tuple of strings too) */
            t.kind = OTHER;
            break;
        }
        numbers++;
        t.tags[i] = item->tags[0];
        t.bits[i] = item->bits[0];
        t.chosen |= item->chosen;
        lanes[i] = item->hash;
    }
    if (t.kind == TUPLE_KEY) {
        t.chosen |= n > 1;
        t.hash = tuple_hash(lanes, (int)n);
    }
    else if (t.kind == TEXT_KEY) {
        uint64_t variants = ((uint64_t)1 << 2 * strings) * (numbers ? 16 : 1);
        if (numbers > 1 || strings > 2 || (strings == 2 && numbers) || t.chosen)
            t.kind = OTHER; /* a hash a pickle may choose, not worked out here */
        else if (long_text || variants * t.longest >= COMPARED_TEXT)
            t.kind = LONG_TEXT_KEY;
    }
    *v = t;
}

int
same_key(const value *a, const value *b)
{
    if (a->kind != b->kind || a->n != b->n || a->hash != b->hash)
        return 0;
    for (int i = 0; i < a->n; i++)
        if (a->tags[i] != b->tags[i] || a->bits[i] != b->bits[i])
            return 0;
    return 1;
}

int
scalar(value *v, const unsigned char *p, uint64_t n)
{
    unsigned char op = p[0];
    uint8_t text = dag_bits[op] & BY_SIZE && 1 + width_of[op] + n >= (uint64_t)costly_from[op]
                       ? LONG_TEXT_KEY
                       : TEXT_KEY;
    uint32_t longest = n < UINT32_MAX ? (uint32_t)n : UINT32_MAX;
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
        return n ? (v->kind = text, v->longest = longest, 0) : number(v, EMPTY_STR_TAG, 0, 0);
    case SHORT_BINBYTES:
    case BINBYTES:
    case BINBYTES8:
        return n ? (v->kind = text, v->longest = longest, 0) : number(v, EMPTY_BYTES_TAG, 0, 0);
    case SHORT_BINSTRING:
    case BINSTRING: /* str or bytes, as the unpickler's encoding says */
        v->kind = n ? text : OTHER;
        v->longest = longest;
        return 0;
    default:
        return 0;
    }
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
key_values_init(void)
{
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
