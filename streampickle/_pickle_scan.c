/* A check of a record's pickle bytes before the C unpickler runs them.
 *
 * CPython's unpickler trusts a pickle in ways a hostile one of a few bytes
 * can abuse: it sizes its memo from the largest slot a PUT names (LONG_BINPUT
 * 2**26 allocates and zeroes 1 GiB), it allocates a bytes argument's claimed
 * length before reading it, it hashes dict keys and set items (tuples nested
 * ~130,000 deep overflow the C stack: tuple hashing recurses with no guard;
 * so does freeing slices or numpy object arrays nested a few thousand deep),
 * and, reading a pickle FRAME whole from a file, it drops what is left of the
 * FRAME when an opcode runs past its end and reads on after it. This scan
 * simulates the unpickler's stacks on object ids instead of objects, so that
 * it can refuse those before they run:
 *
 * - a PUT may name a slot at most the number of memo stores before it (every
 *   pickler numbers them in order; MEMOIZE takes the next one itself);
 * - no object may nest deeper than sys.getrecursionlimit() (below), as deep
 *   as CPython's pickler can write (each level is a recursive call);
 * - no opcode may run past the end of its FRAME, nor a FRAME begin inside
 *   another (writers never make them; Python's own unpickler refuses most);
 * - a length must fit in what is left of a whole record; a streamed record
 *   reports what it still owes (``owed``), for the reader to bound.
 *
 * It mirrors the unpickler's stack rules (marks, the fence below the last
 * mark, what each opcode pops and pushes; CPython 3.11's Modules/_pickle.c)
 * and refuses what the unpickler would refuse there, so that it never stops
 * tracking while the unpickler goes on. Bytes arrive in any pieces (a frame
 * boundary may fall inside an opcode), and after STOP none may follow.
 *
 * Depth. Each object the pickle builds gets an id and a height: how deep a
 * chain of C recursion (hashing, freeing) can run through it, or through
 * what a callable may build from its contents. A tuple (TUPLE*) is 1 + the
 * highest of its items; whatever REDUCE, NEWOBJ(_EX), OBJ, INST or BINPERSID
 * builds may be a tuple of its arguments: 1 + the highest. Lists, dicts, sets
 * and frozensets neither recurse when hashed (or cannot be hashed) nor when
 * freed (CPython's trashcan): they take the highest of their items, so a
 * cycle through them does not grow heights. APPEND(S), SETITEM(S), ADDITEMS
 * and BUILD raise their target's height to that of what they add. Memo and
 * DUP copy ids, so a container changed after it was memoized is seen changed.
 * Strings, numbers and other scalars are id 0, height 0.
 *
 * An object a call made (REDUCE and the like) may hold what it is given later
 * in a way that recurses (numpy object arrays): APPEND(S), SETITEM(S),
 * ADDITEMS and BUILD on it add 1, as a tuple does.
 *
 * Heights are taken when an object is built: a container changed after
 * another took it (``late``) leaves the taker's height low, and a callable
 * that copies contents (tuple(L); numpy's __setstate__) can turn that into
 * real depth, as can a call's result that shares its arguments' contents (a
 * numpy view). No chain is longer than the number of links made (tuples,
 * calls, and what is given to what a call made), so a pickle with fewer than
 * the depth allowed is safe whatever its heights; past that, ``strict`` (safe
 * mode) refuses a late change, or any change to what a call made. Without strict, a pickle that names globals can run any code
 * anyway, and one without them has no callable to copy contents: heights
 * hold.
 *
 * ``plain`` says whether every opcode built plain data: none of globals,
 * REDUCE, BUILD, object creation, extension codes, persistent IDs or
 * out-of-band buffers. Such a pickle calls nothing of its own choosing, so
 * ``pickle.loads`` may read it with no hook of ours.
 */
#include "_pickle_scan.h"


/* The deepest nesting taken whatever the recursion limit: freeing numpy
 * object arrays nested ~5,000 deep overflows an 8 MiB stack (~2 KB a level). */
#define MAX_DEPTH 2000
#define TOO_DEEP "objects nested deeper than sys.getrecursionlimit() levels (at most 2000)"
#define PAST_FRAME "an opcode that runs past the end of its FRAME"
#define SCALAR 0
#define ABSENT UINT32_MAX
/* A height's top bit: another object took this one as an item. */
#define HELD 0x80000000u
/* ... and this one: a call (REDUCE and the like) made it, so what it is given
 * later may be held in a way that recurses when freed or hashed (numpy object
 * arrays), and it may share its contents with its arguments (a numpy view). */
#define CALLED 0x40000000u
#define FLAGS (HELD | CALLED)
#define UNBOUNDED "more tuples and objects than sys.getrecursionlimit(), and a container " \
                  "changed after another took it: nesting that cannot be bounded"

static void
array_init(array *a, Py_ssize_t item_size)
{
    a->items = a->small;
    a->len = 0;
    a->cap = (Py_ssize_t)sizeof(a->small) / item_size;
}

static void
array_free(array *a)
{
    if (a->items != a->small)
        PyMem_Free(a->items);
    a->items = a->small;
}

/* Room for ``need`` items; 0, or -1 with MemoryError set. */
static int
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

#define U32(a) ((uint32_t *)(a).items)
#define SSIZE(a) ((Py_ssize_t *)(a).items)


void
scan_init(scan *s)
{
    array_init(&s->stack, sizeof(uint32_t));
    array_init(&s->marks, sizeof(Py_ssize_t));
    array_init(&s->memo, sizeof(uint32_t));
    array_init(&s->height, sizeof(uint32_t));
    U32(s->height)[0] = 0; /* SCALAR */
    s->height.len = 1;
    s->fence = s->filled = s->stores = s->at = s->frame_end = 0;
    s->line_end = PY_SSIZE_T_MAX;
    int limit = Py_GetRecursionLimit();
    s->max_depth = (uint32_t)(limit < MAX_DEPTH ? limit : MAX_DEPTH);
    s->raising = s->late = 0;
    s->skip = 0;
    s->lines = 0;
    s->plain = 1;
    s->hashes_shared = 0;
    s->stopped = 0;
    s->whole = 0;
    s->pending_len = 0;
}

void
scan_free(scan *s)
{
    array_free(&s->stack);
    array_free(&s->marks);
    array_free(&s->memo);
    array_free(&s->height);
}

/* ValueError(what, offset): the caller names the record. */
static int
refuse(scan *s, const char *what)
{
    PyObject *args = Py_BuildValue("(sn)", what, s->at);
    if (args != NULL) {
        PyErr_SetObject(PyExc_ValueError, args);
        Py_DECREF(args);
    }
    return -1;
}

static int
push_grown(scan *s, uint32_t id)
{
    if (array_reserve(&s->stack, s->stack.len + 1, sizeof(uint32_t)) < 0)
        return -1;
    U32(s->stack)[s->stack.len++] = id;
    return 0;
}

/* Most opcodes push: the common case inline, growth out of line. */
static inline int
push(scan *s, uint32_t id)
{
    if (s->stack.len == s->stack.cap)
        return push_grown(s, id);
    U32(s->stack)[s->stack.len++] = id;
    return 0;
}

/* A new object of the given height, pushed. */
static int
push_new(scan *s, uint32_t height)
{
    if (height > s->max_depth)
        return refuse(s, TOO_DEEP);
    if (s->height.len >= (Py_ssize_t)ABSENT)
        return refuse(s, "more objects than can be checked");
    if (array_reserve(&s->height, s->height.len + 1, sizeof(uint32_t)) < 0)
        return -1;
    U32(s->height)[s->height.len] = height;
    return push(s, (uint32_t)s->height.len++);
}

/* The highest height among stack items from ``start`` up, which the
 * caller's object takes: each is marked held. */
static uint32_t
highest(scan *s, Py_ssize_t start)
{
    uint32_t top = 0;
    for (Py_ssize_t i = start; i < s->stack.len; i++) {
        uint32_t *h = &U32(s->height)[U32(s->stack)[i]];
        if ((*h & ~FLAGS) > top)
            top = *h & ~FLAGS;
        *h |= HELD;
    }
    return top;
}

/* Heights bound nesting unless a held object rose later, when no more than
 * one level per tuple or object built does (see the top). */
static int
check_bound(scan *s)
{
    if (s->strict && s->late && s->raising > (Py_ssize_t)s->max_depth)
        return refuse(s, UNBOUNDED);
    return 0;
}

/* What needs the stack to hold ``n`` items above the fence. */
static int
need(scan *s, Py_ssize_t n)
{
    if (s->stack.len - n < s->fence)
        return refuse(s, "unpickling stack underflow");
    return 0;
}

/* Pop the last mark, as the unpickler's marker(): its stack length. */
static Py_ssize_t
pop_mark(scan *s)
{
    if (s->marks.len == 0)
        return refuse(s, "MARK missing");
    Py_ssize_t mark = SSIZE(s->marks)[--s->marks.len];
    s->fence = s->marks.len ? SSIZE(s->marks)[s->marks.len - 1] : 0;
    return mark;
}

/* Replace the items from ``start`` up by one new object, ``extra`` higher
 * than the highest of them. */
static int
build(scan *s, Py_ssize_t start, uint32_t extra, uint32_t flags)
{
    uint32_t h = highest(s, start) + extra;
    s->stack.len = start;
    s->raising += extra;
    if (check_bound(s) < 0 || push_new(s, h) < 0)
        return -1;
    U32(s->height)[U32(s->stack)[s->stack.len - 1]] |= flags;
    return 0;
}

/* Add the items from ``start`` up to the object just below them (APPENDS,
 * SETITEMS, ADDITEMS, BUILD), then drop them. ``pairs``: keys and values. */
static int
add_to(scan *s, Py_ssize_t start, int pairs)
{
    if (start > s->stack.len || start <= s->fence)
        return refuse(s, "unpickling stack underflow");
    if (pairs && (s->stack.len - start) % 2)
        return refuse(s, "odd number of items for SETITEMS");
    uint32_t target = U32(s->stack)[start - 1];
    uint32_t h = highest(s, start);
    uint32_t *height = &U32(s->height)[target];
    if (*height & CALLED && s->stack.len > start) { /* a link, as a call's result */
        h++;
        s->raising++;
    }
    if (target != SCALAR && h > (*height & ~FLAGS)) {
        if (h > s->max_depth)
            return refuse(s, TOO_DEEP);
        s->late |= (*height & FLAGS) != 0;
        *height = h | (*height & FLAGS);
        if (check_bound(s) < 0)
            return -1;
    }
    s->stack.len = start;
    return 0;
}

static int
memo_put(scan *s, uint64_t slot)
{
    if (need(s, 1) < 0)
        return -1;
    if (slot > (uint64_t)s->stores)
        return refuse(s, "a memo slot numbered past the stores before it");
    Py_ssize_t i = (Py_ssize_t)slot, old = s->memo.len;
    if (i >= old) {
        if (array_reserve(&s->memo, i + 1, sizeof(uint32_t)) < 0)
            return -1;
        memset(&U32(s->memo)[old], 0xff, (size_t)(i + 1 - old) * sizeof(uint32_t));
        s->memo.len = i + 1;
    }
    if (U32(s->memo)[i] == ABSENT)
        s->filled++;
    U32(s->memo)[i] = U32(s->stack)[s->stack.len - 1];
    s->stores++;
    return 0;
}

static int
memo_get(scan *s, uint64_t slot)
{
    if (slot >= (uint64_t)s->memo.len || U32(s->memo)[slot] == ABSENT)
        return refuse(s, "memo value not found");
    return push(s, U32(s->memo)[slot]);
}

/* A protocol-0 memo argument (PUT, GET): decimal digits between blanks, as
 * int() takes them; -1 if it is anything else or too long to be a slot.
 * CPython reads the argument as a C string, so it ends at a NUL byte. */
static int64_t
text_slot(const unsigned char *p, Py_ssize_t n)
{
    const unsigned char *nul = memchr(p, '\0', (size_t)n);
    if (nul != NULL)
        n = nul - p;
    Py_ssize_t i = 0;
    while (i < n && Py_ISSPACE(p[i]))
        i++;
    int64_t slot = 0;
    Py_ssize_t digits = 0;
    while (i < n && Py_ISDIGIT(p[i])) {
        if (++digits > 15)
            return -1;
        slot = slot * 10 + (p[i++] - '0');
    }
    while (i < n && Py_ISSPACE(p[i]))
        i++;
    return digits && i == n ? slot : -1;
}

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
static unsigned char arg_of[256], width_of[256], lines_of[256];
/* Opcodes that reach code, a hook or an out-of-band buffer: not plain data. */
static unsigned char reaches_code[256];
/* Opcodes of fixed size that scan_light acts on: memo stores, FRAME, STOP. */
static unsigned char watched[256];
/* What it takes to hash in time beyond a bounded factor of a pickle's bytes
 * (T = (T, T), eighty times: 168 bytes, 2**80 visits; a megabyte int hashed
 * as often as the pickle refers to it; two equal frozensets built alike,
 * compared item by item through what they share): an object shared
 * (SHARES), one whose hash or comparison is not cached and grows with it
 * (COSTLY: tuples, frozensets, LONG4's ints), and an opcode that hashes
 * keys or items (HASHES). In safe mode a pickle with all three is not
 * plain: Python's unpickler runs it, counting what hashing visits
 * (safe.py). */
enum { SHARES = 1, COSTLY = 2, HASHES = 4, HASHES_SHARED = 7 };
static unsigned char dag_bits[256];
/* Opcodes whose result may be higher than what they take (see the top). */
static unsigned char raises[256];
/* Opcodes that give an object more (higher, if a call made it). */
static unsigned char adds_to[256];
/* The size of an opcode scan_light only steps over (fixed-size, neither
 * watched nor counted: numbers, empty containers, marks); for any other, a
 * size no pickle reaches, so that one comparison sends it the long way. */
#define ACT_ON ((Py_ssize_t)1 << 60)
static Py_ssize_t step_over[256];

static void
set(const unsigned char *codes, enum arg arg, unsigned char width)
{
    for (const unsigned char *c = codes; *c; c++) {
        arg_of[*c] = arg;
        width_of[*c] = arg == TEXT ? 0 : width;
        lines_of[*c] = arg == TEXT ? width : 0;
    }
}

#define SET(arg, width, ...) set((const unsigned char[]){__VA_ARGS__, 0}, arg, width)

void
fill_table(void)
{
    SET(FIXED, 0, NONE, EMPTY_LIST, APPEND, APPENDS, LIST, EMPTY_TUPLE, TUPLE,
        EMPTY_DICT, DICT, SETITEM, SETITEMS, POP, DUP, MARK, POP_MARK, STOP, REDUCE,
        BUILD, OBJ, BINPERSID, NEWOBJ, TUPLE1, TUPLE2, TUPLE3, NEWTRUE, NEWFALSE,
        EMPTY_SET, ADDITEMS, FROZENSET, NEWOBJ_EX, STACK_GLOBAL, MEMOIZE, NEXT_BUFFER,
        READONLY_BUFFER);
    SET(FIXED, 1, PROTO, BININT1, BINGET, BINPUT, EXT1);
    SET(FIXED, 2, BININT2, EXT2);
    SET(FIXED, 4, BININT, LONG_BINGET, LONG_BINPUT, EXT4);
    SET(FIXED, 8, BINFLOAT, FRAME); /* a FRAME's bytes are more opcodes */
    SET(SIZED, 1, LONG1, SHORT_BINSTRING, SHORT_BINBYTES, SHORT_BINUNICODE);
    SET(SIZED, 4, BINBYTES, BINUNICODE);
    SET(SIZED_SIGNED, 4, BINSTRING, LONG4);
    SET(SIZED, 8, BINUNICODE8, BINBYTES8, BYTEARRAY8);
    SET(TEXT, 1, INT, LONG, STRING, UNICODE, FLOAT, PERSID);
    SET(TEXT, 2, GLOBAL, INST); /* module and name */
    SET(TEXT_SLOT, 0, PUT, GET);
    static const unsigned char code[] = {
        GLOBAL, STACK_GLOBAL, INST, OBJ, NEWOBJ, NEWOBJ_EX, REDUCE, BUILD, EXT1, EXT2,
        EXT4, PERSID, BINPERSID, NEXT_BUFFER, READONLY_BUFFER};
    for (size_t i = 0; i < sizeof(code); i++)
        reaches_code[code[i]] = 1;
    watched[STOP] = watched[MEMOIZE] = watched[BINPUT] = watched[LONG_BINPUT] = 1;
    watched[FRAME] = 1;
    static const unsigned char up[] = {
        EMPTY_TUPLE, TUPLE, TUPLE1, TUPLE2, TUPLE3, REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST,
        BINPERSID};
    for (size_t i = 0; i < sizeof(up); i++)
        raises[up[i]] = 1;
    adds_to[APPEND] = adds_to[APPENDS] = adds_to[SETITEM] = adds_to[SETITEMS] = 1;
    adds_to[ADDITEMS] = adds_to[BUILD] = 1;
    dag_bits[DUP] = dag_bits[GET] = dag_bits[BINGET] = dag_bits[LONG_BINGET] = SHARES;
    dag_bits[TUPLE] = dag_bits[TUPLE1] = dag_bits[TUPLE2] = dag_bits[TUPLE3] = COSTLY;
    dag_bits[LONG4] = COSTLY;
    dag_bits[SETITEM] = dag_bits[SETITEMS] = dag_bits[ADDITEMS] = HASHES;
    dag_bits[FROZENSET] = HASHES | COSTLY;
    dag_bits[DICT] = HASHES;
    for (int op = 0; op < 256; op++)
        step_over[op] = arg_of[op] == FIXED && !watched[op] && !raises[op] && !adds_to[op]
                                && !reaches_code[op] && !dag_bits[op]
                            ? 1 + width_of[op]
                            : ACT_ON;
}

/* Bytes of the opcode at ``p`` the scan must have before acting on it (the
 * opcode and its fixed part); 0 if more are needed than the ``n`` here. */
static Py_ssize_t
head_size(scan *s, const unsigned char *p, Py_ssize_t n)
{
    switch (arg_of[p[0]]) {
    case UNKNOWN:
        return refuse(s, "unknown opcode");
    case TEXT:
        return 1;
    case TEXT_SLOT: {
        const unsigned char *nl = memchr(p + 1, '\n', (size_t)(n - 1));
        if (nl != NULL ? nl - p - 1 > SLOT_TEXT_MAX : n - 1 > SLOT_TEXT_MAX)
            return refuse(s, "a memo argument longer than any slot number");
        return nl != NULL ? nl - p + 1 : 0;
    }
    default:
        return 1 + width_of[p[0]] <= n ? 1 + width_of[p[0]] : 0;
    }
}

/* Act on one opcode whose head (``size`` bytes) is at ``p``; ``left`` bytes
 * of this piece follow it. Sets skip or lines for what follows the head. */
static int
run(scan *s, const unsigned char *p, Py_ssize_t size, Py_ssize_t left)
{
    unsigned char op = p[0];
    Py_ssize_t len = s->stack.len, mark;
    /* Bytes of the FRAME this opcode starts in still to come after its head. */
    Py_ssize_t in_frame = s->at < s->frame_end ? s->frame_end - s->at - size : PY_SSIZE_T_MAX;
    if (in_frame < 0)
        return refuse(s, PAST_FRAME);
    s->plain &= !reaches_code[op];
    switch (arg_of[op]) {
    case SIZED:
    case SIZED_SIGNED: {
        uint64_t n = little_endian(p + 1, width_of[op]);
        if (arg_of[op] == SIZED_SIGNED && n >= (1u << 31))
            return refuse(s, "a negative length");
        if (n > (uint64_t)PY_SSIZE_T_MAX)
            return refuse(s, "a length past the largest object");
        if (s->whole && n > (uint64_t)left)
            return refuse(s, "a length past the end of the pickle");
        if (n > (uint64_t)in_frame)
            return refuse(s, PAST_FRAME);
        s->skip = n;
        return op == BYTEARRAY8 ? push_new(s, 0) : push(s, SCALAR);
    }
    case TEXT:
        s->lines = lines_of[op];
        s->line_end = s->at < s->frame_end ? s->frame_end : PY_SSIZE_T_MAX;
        break;
    default:
        break;
    }
    if (op == FRAME) {
        /* CPython's C unpickler drops what is left of a FRAME read in one
         * piece when an opcode runs past its end, and reads on after it:
         * it would run other opcodes than those scanned. Writers never
         * make either case below. */
        uint64_t n = little_endian(p + 1, 8);
        if (s->at < s->frame_end)
            return refuse(s, "a FRAME inside a FRAME");
        if (s->whole ? n > (uint64_t)left : n > (uint64_t)(PY_SSIZE_T_MAX - s->at - size))
            return refuse(s, "a FRAME past the end of the pickle");
        s->frame_end = s->at + size + (Py_ssize_t)n;
    }
    switch (op) {
    case MARK:
        if (array_reserve(&s->marks, s->marks.len + 1, sizeof(Py_ssize_t)) < 0)
            return -1;
        SSIZE(s->marks)[s->marks.len++] = s->fence = len;
        return 0;
    case POP: /* a mark if it is on top, else an item */
        if (s->marks.len && SSIZE(s->marks)[s->marks.len - 1] == len)
            return pop_mark(s) < 0 ? -1 : 0;
        if (need(s, 1) < 0)
            return -1;
        s->stack.len--;
        return 0;
    case POP_MARK:
        if ((mark = pop_mark(s)) < 0)
            return -1;
        s->stack.len = mark;
        return 0;
    case DUP:
        return need(s, 1) < 0 ? -1 : push(s, U32(s->stack)[len - 1]);
    case STOP:
        if (need(s, 1) < 0)
            return -1;
        s->stopped = 1;
        return 0;
    case APPEND:
        return add_to(s, len - 1, 0);
    case SETITEM:
        return add_to(s, len - 2, 1);
    case APPENDS:
    case SETITEMS:
    case ADDITEMS:
        return (mark = pop_mark(s)) < 0 ? -1 : add_to(s, mark, op == SETITEMS);
    case BUILD:
        if (need(s, 2) < 0)
            return -1;
        /* Safe mode builds only numpy's dtypes and arrays, which no writer
         * gives a state holding themselves: numpy takes such a cycle (a
         * dtype whose field is itself), and hashing it never ends. */
        if (s->strict && U32(s->height)[U32(s->stack)[len - 2]] & HELD)
            return refuse(s, "an object given its state after another took it");
        return add_to(s, len - 1, 0);
    case EMPTY_LIST:
    case EMPTY_DICT:
    case EMPTY_SET:
        return push_new(s, 0);
    case EMPTY_TUPLE:
        return build(s, len, 1, 0);
    case TUPLE1:
    case TUPLE2:
    case TUPLE3:
        if (need(s, op - TUPLE1 + 1) < 0)
            return -1;
        return build(s, len - (op - TUPLE1 + 1), 1, 0);
    case TUPLE:
    case LIST:
    case DICT:
    case FROZENSET:
        if ((mark = pop_mark(s)) < 0)
            return -1;
        if (op == DICT && (len - mark) % 2)
            return refuse(s, "odd number of items for DICT");
        return build(s, mark, op == TUPLE, 0);
    case REDUCE: /* callable, arguments */
    case NEWOBJ: /* class, arguments */
        return need(s, 2) < 0 ? -1 : build(s, len - 2, 1, CALLED);
    case NEWOBJ_EX: /* class, arguments, keywords */
        return need(s, 3) < 0 ? -1 : build(s, len - 3, 1, CALLED);
    case OBJ: /* mark, class, arguments */
        if ((mark = pop_mark(s)) < 0)
            return -1;
        if (len - mark < 1)
            return refuse(s, "unpickling stack underflow");
        return build(s, mark, 1, CALLED);
    case INST: /* mark, arguments; module and name follow as text */
        return (mark = pop_mark(s)) < 0 ? -1 : build(s, mark, 1, CALLED);
    case BINPERSID: /* the ID */
        return need(s, 1) < 0 ? -1 : build(s, len - 1, 1, CALLED);
    case STACK_GLOBAL: /* module and name */
        return need(s, 2) < 0 ? -1 : build(s, len - 2, 0, 0);
    case GLOBAL:
    case PERSID:
    case EXT1:
    case EXT2:
    case EXT4:
    case NEXT_BUFFER:
        return push_new(s, 0);
    case READONLY_BUFFER:
        return need(s, 1);
    case MEMOIZE:
        return memo_put(s, (uint64_t)s->filled);
    case BINPUT:
    case LONG_BINPUT:
        return memo_put(s, little_endian(p + 1, width_of[op]));
    case BINGET:
    case LONG_BINGET:
        return memo_get(s, little_endian(p + 1, width_of[op]));
    case PUT:
    case GET: {
        int64_t slot = text_slot(p + 1, size - 1);
        if (slot < 0)
            return refuse(s, "a memo argument that is not a slot number");
        return op == PUT ? memo_put(s, (uint64_t)slot) : memo_get(s, (uint64_t)slot);
    }
    case FRAME:
    case PROTO:
        return 0;
    default: /* numbers, strings, None, booleans: scalars */
        return push(s, SCALAR);
    }
}

int
scan_bytes(scan *s, const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        if (s->stopped)
            return refuse(s, "pickle bytes after STOP");
        if (s->skip) {
            Py_ssize_t take = (uint64_t)(n - i) < s->skip ? n - i : (Py_ssize_t)s->skip;
            i += take;
            s->at += take;
            s->skip -= (uint64_t)take;
            continue;
        }
        if (s->lines) {
            const unsigned char *nl = memchr(p + i, '\n', (size_t)(n - i));
            Py_ssize_t end = nl == NULL ? n : nl - p + 1;
            s->at += end - i;
            i = end;
            s->lines -= nl != NULL;
            if (s->at > s->line_end)
                return refuse(s, PAST_FRAME);
            continue;
        }
        const unsigned char *head = p + i;
        Py_ssize_t have = n - i, size, taken;
        if (s->pending_len) { /* an opcode begun in an earlier piece */
            taken = have < SLOT_TEXT_MAX + 2 - s->pending_len ? have
                                                         : SLOT_TEXT_MAX + 2 - s->pending_len;
            memcpy(s->pending + s->pending_len, head, (size_t)taken);
            head = s->pending;
            have = s->pending_len + taken;
        }
        if ((size = head_size(s, head, have)) < 0)
            return -1;
        if (size == 0) { /* the rest of this piece is the start of an opcode */
            if (s->whole)
                return refuse(s, "an opcode cut off by the end of the pickle");
            memmove(s->pending, head, (size_t)have);
            i = n;
            s->pending_len = (int)have;
            continue;
        }
        Py_ssize_t from_here = size - s->pending_len;
        s->pending_len = 0;
        if (run(s, head, size, n - i - from_here) < 0)
            return -1;
        i += from_here;
        s->at += size;
    }
    return 0;
}

/* A whole pickle with no more opcodes that raise a height (TUPLE*, REDUCE
 * and the like) than the depth allowed cannot nest deeper: then only memo
 * slots, lengths, FRAMEs and STOP need checking, and the unpickler refuses a
 * broken stack itself. One tight loop, one lookup per opcode: the reader's
 * fast path for small messages. The same refusals as scan_bytes in whole
 * mode, where both check; *raising is how many such opcodes it met (past
 * max_depth, the caller scans again with scan_bytes). */
static int
scan_light(scan *s, const unsigned char *p, Py_ssize_t n, Py_ssize_t *raising)
{
    Py_ssize_t i = 0, stores = 0, frame_end = 0, ups = 0, adds = 0, code = 0;
    Py_ssize_t limit = n; /* where the current FRAME, else the pickle, ends */
    int dag = 0;
#define REFUSE(offset, what) return (s->at = (offset), refuse(s, what))
    while (i < n) {
        /* most opcodes: one lookup and one comparison each */
        while (i < limit && i + step_over[p[i]] <= limit)
            i += step_over[p[i]];
        if (i >= n)
            break;
        unsigned char op = p[i];
        if (i >= frame_end)
            limit = n;
        ups += raises[op];
        adds += adds_to[op];
        code += reaches_code[op];
        dag |= dag_bits[op];
        int arg = arg_of[op];
        Py_ssize_t size = 1 + width_of[op], end = i + size;
        if (arg == UNKNOWN)
            REFUSE(i, "unknown opcode");
        if (arg != TEXT && arg != TEXT_SLOT && size > n - i)
            REFUSE(i, "an opcode cut off by the end of the pickle");
        uint64_t slot;
        if (arg == SIZED || arg == SIZED_SIGNED) {
            uint64_t length = little_endian(p + i + 1, width_of[op]);
            if (arg == SIZED_SIGNED && length >= (1u << 31))
                REFUSE(i, "a negative length");
            if (length > (uint64_t)PY_SSIZE_T_MAX)
                REFUSE(i, "a length past the largest object");
            if (length > (uint64_t)(n - end))
                REFUSE(i, "a length past the end of the pickle");
            end += (Py_ssize_t)length;
        }
        else if (arg == TEXT || arg == TEXT_SLOT) {
            const unsigned char *line = p + i + 1, *nl = line - 1;
            for (int lines = arg == TEXT ? lines_of[op] : 1; lines; lines--)
                if ((nl = memchr(nl + 1, '\n', (size_t)(p + n - nl - 1))) == NULL)
                    REFUSE(i, arg == TEXT ? "a text argument without its newline"
                                          : "an opcode cut off by the end of the pickle");
            end = nl - p + 1;
            if (arg == TEXT_SLOT && end - i - 2 > SLOT_TEXT_MAX)
                REFUSE(i, "a memo argument longer than any slot number");
        }
        if (i < frame_end && end > frame_end)
            REFUSE(i, PAST_FRAME);
        if (op == PUT) {
            int64_t text = text_slot(p + i + 1, end - i - 1);
            if (text < 0)
                REFUSE(i, "a memo argument that is not a slot number");
            slot = (uint64_t)text;
        }
        else if (op == BINPUT || op == LONG_BINPUT)
            slot = little_endian(p + i + 1, width_of[op]);
        else {
            if (op == FRAME) {
                if (i < frame_end)
                    REFUSE(i, "a FRAME inside a FRAME");
                uint64_t length = little_endian(p + i + 1, 8);
                if (length > (uint64_t)(n - end))
                    REFUSE(i, "a FRAME past the end of the pickle");
                limit = frame_end = end + (Py_ssize_t)length;
            }
            else if (op == STOP) {
                s->plain = code == 0;
                s->hashes_shared = dag == HASHES_SHARED;
                s->stopped = 1;
                *raising = ups + (code ? adds : 0); /* what a call made may take */
                if (end != n)
                    REFUSE(end, "pickle bytes after STOP");
                return 0;
            }
            stores += op == MEMOIZE;
            i = end;
            continue;
        }
        if (slot > (uint64_t)stores)
            REFUSE(i, "a memo slot numbered past the stores before it");
        stores++;
        i = end;
    }
    REFUSE(n, "no STOP");
#undef REFUSE
}

/* -- a pickle all in memory ---------------------------------------------- */

int
scan_whole(const unsigned char *p, Py_ssize_t n, int strict)
{
    scan s;
    scan_init(&s);
    s.whole = 1;
    Py_ssize_t raising = 0;
    int failed = scan_light(&s, p, n, &raising);
    int hashes_shared = s.hashes_shared;
    /* It may nest too deep, or (strict) give a call's result a state */
    if (!failed && (raising > (Py_ssize_t)s.max_depth || (strict && !s.plain))) {
        scan_free(&s);
        scan_init(&s);
        s.whole = 1;
        s.strict = strict;
        failed = scan_bytes(&s, p, n);
    }
    if (!failed && !s.stopped)
        failed = refuse(&s, s.lines ? "a text argument without its newline" : "no STOP");
    int plain = s.plain && !(strict && hashes_shared);
    scan_free(&s);
    return failed ? -1 : plain;
}

