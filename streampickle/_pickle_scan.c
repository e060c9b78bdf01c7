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
 * Strings, numbers and other scalars take ids 0-2 (SCALAR and after), height 0.
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
 * mode) refuses a late change once the pickle is not plain (at its first
 * opcode that reaches code, for the late changes before it; at each after).
 * Plain data has no callable to copy contents: its heights hold (a list
 * that holds a tuple holding it, beside a thousand tuples, loads). A call's
 * result given more before another took it is not late: safe mode gives
 * more only to results that are new objects sharing no container with their
 * arguments (a list, dict or set; numpy's _reconstruct, once; a dtype numpy
 * copied: safe.py), so its height, raised, holds. Without strict, a pickle
 * that names globals can run any code anyway.
 *
 * The opcodes' table is _pickle_opcodes.c; which hashes a pickle may
 * choose, _pickle_scan_hash.h; the light loop that most small pickles take
 * instead of this scan, _pickle_scan_light.c.
 *
 * ``plain`` says whether every opcode built plain data: none of globals,
 * REDUCE, BUILD, object creation, extension codes, persistent IDs or
 * out-of-band buffers. Such a pickle calls nothing of its own choosing, so
 * ``pickle.loads`` may read it with no hook of ours. ``calls_only``, that its
 * only code is globals it calls (NAMED) and REDUCE, whose results are given
 * nothing and hashed as no key (CHOSEN_HASH: the count refuses them), and
 * read-only views of out-of-band buffers: safe mode's C path (safe_calls.py).
 */
#include "_pickle_scan.h"
#include "_pickle_opcodes.h"
#include "_pickle_scan_hash.h"

/* The deepest nesting taken whatever the recursion limit: freeing numpy
 * object arrays nested ~5,000 deep overflows an 8 MiB stack (~2 KB a level). */
#define MAX_DEPTH 2000
#define TOO_DEEP "objects nested deeper than sys.getrecursionlimit() levels (at most 2000)"
#define ABSENT UINT32_MAX /* a memo slot never stored */
/* A height's top bit: another object took this one as an item. */
#define HELD 0x80000000u
/* ... and this one: a call (REDUCE and the like) made it, so what it is given
 * later may be held in a way that recurses when freed or hashed (numpy object
 * arrays), and it may share its contents with its arguments (a numpy view). */
#define CALLED 0x40000000u
/* ... and this one: a global (GLOBAL, STACK_GLOBAL), which a record of calls
 * may only call (safe mode's C path gives it a checking stand-in: it must
 * not end up in what the record makes; 45th review). */
#define NAMED 0x01000000u
/* ... and those of _pickle_scan_hash.h. */
#define FLAGS (HELD | CALLED | NAMED | HASH_FLAGS)
/* Refusals of strict mode only begin with "safe mode" (records.refused). */
#define UNBOUNDED "safe mode refuses more tuples and objects than sys.getrecursionlimit() " \
                  "in a record that names a global, and a container changed after another " \
                  "took it: nesting that cannot be bounded"

void
scan_init(scan *s)
{
    array_init(&s->stack, sizeof(uint32_t));
    array_init(&s->marks, sizeof(Py_ssize_t));
    array_init(&s->memo, sizeof(uint32_t));
    array_init(&s->height, sizeof(uint32_t));
    U32(s->height)[SCALAR] = 1u << SECRET_SHIFT;
    U32(s->height)[NUMBER] = CHOSEN_IN;
    U32(s->height)[CHOSEN_NUMBER] = CHOSEN_IN | CHOSEN_HASH;
    s->height.len = 3;
    s->fence = s->filled = s->stores = s->at = s->frame_end = 0;
    s->line_end = PY_SSIZE_T_MAX;
    int limit = Py_GetRecursionLimit();
    s->max_depth = (uint32_t)(limit < MAX_DEPTH ? limit : MAX_DEPTH);
    s->raising = s->late = 0;
    s->skip = 0;
    s->lines = 0;
    s->plain = s->calls_only = 1;
    s->callee = -1;
    s->next_buffers = 0;
    s->last_op = 0;
    s->hashes_shared = s->hashes_chosen = s->hashes_numbers = s->keys_chosen = 0;
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

int
scan_refuse(scan *s, const char *what)
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
        return scan_refuse(s, TOO_DEEP);
    if (s->height.len >= (Py_ssize_t)ABSENT)
        return scan_refuse(s, "more objects than can be checked");
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
        if (*h & NAMED && i != s->callee) /* a global taken, not called */
            s->calls_only = 0;
        *h |= HELD;
    }
    return top;
}

/* Heights bound nesting unless a held object rose later, when no more than
 * one level per tuple or object built does (see the top). In plain data no
 * callable copies contents, so heights hold: checked from its first opcode
 * that is not plain on. */
static int
check_bound(scan *s)
{
    if (s->strict && !s->plain && s->late && s->raising > (Py_ssize_t)s->max_depth)
        return scan_refuse(s, UNBOUNDED);
    return 0;
}

/* What needs the stack to hold ``n`` items above the fence. */
static int
need(scan *s, Py_ssize_t n)
{
    if (s->stack.len - n < s->fence)
        return scan_refuse(s, "unpickling stack underflow");
    return 0;
}

/* Pop the last mark, as the unpickler's marker(): its stack length. */
static Py_ssize_t
pop_mark(scan *s)
{
    if (s->marks.len == 0)
        return scan_refuse(s, "MARK missing");
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
 * SETITEMS, ADDITEMS, BUILD), then drop them. ``pairs``: keys and values;
 * ``hashes``: the keys (or items) are hashed. */
static int
add_to(scan *s, Py_ssize_t start, int pairs, int hashes)
{
    if (start > s->stack.len || start <= s->fence)
        return scan_refuse(s, "unpickling stack underflow");
    if (pairs && (s->stack.len - start) % 2)
        return scan_refuse(s, "odd number of items for SETITEMS");
    uint32_t target = U32(s->stack)[start - 1];
    if (hashes)
        s->keys_chosen |= any_chosen(s, start, pairs ? 2 : 1);
    uint32_t h = highest(s, start);
    uint32_t *height = &U32(s->height)[target];
    if (*height & CALLED) /* even nothing (47th review: the C path took it) */
        s->calls_only = 0;
    if (*height & CALLED && s->stack.len > start) { /* a link, as a call's result */
        h++;
        s->raising++;
    }
    if (target > CHOSEN_NUMBER && h > (*height & ~FLAGS)) {
        if (h > s->max_depth)
            return scan_refuse(s, TOO_DEEP);
        s->late |= (*height & HELD) != 0;
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
        return scan_refuse(s, "a memo slot numbered past the stores before it");
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
        return scan_refuse(s, "memo value not found");
    return push(s, U32(s->memo)[slot]);
}

/* Bytes of the opcode at ``p`` the scan must have before acting on it (the
 * opcode and its fixed part); 0 if more are needed than the ``n`` here. */
static Py_ssize_t
head_size(scan *s, const unsigned char *p, Py_ssize_t n)
{
    switch (arg_of[p[0]]) {
    case UNKNOWN:
        return scan_refuse(s, "unknown opcode");
    case TEXT:
        return 1;
    case TEXT_SLOT: {
        const unsigned char *nl = memchr(p + 1, '\n', (size_t)(n - 1));
        if (nl != NULL ? nl - p - 1 > SLOT_TEXT_MAX : n - 1 > SLOT_TEXT_MAX)
            return scan_refuse(s, "a memo argument longer than any slot number");
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
    unsigned char op = p[0], before = s->last_op;
    Py_ssize_t len = s->stack.len, mark;
    uint32_t number = NUMBER; /* a text number's id */
    s->last_op = op;
    /* Bytes of the FRAME this opcode starts in still to come after its head. */
    Py_ssize_t in_frame = s->at < s->frame_end ? s->frame_end - s->at - size : PY_SSIZE_T_MAX;
    if (in_frame < 0)
        return scan_refuse(s, PAST_FRAME);
    if (reaches_code[op] && s->plain) {
        s->plain = 0;
        if (check_bound(s) < 0) /* the late changes before it count now */
            return -1;
    }
    switch (arg_of[op]) {
    case SIZED:
    case SIZED_SIGNED: {
        uint64_t n = little_endian(p + 1, width_of[op]);
        if (arg_of[op] == SIZED_SIGNED && n >= (1u << 31))
            return scan_refuse(s, "a negative length");
        if (n > (uint64_t)PY_SSIZE_T_MAX)
            return scan_refuse(s, "a length past the largest object");
        if (s->whole && n > (uint64_t)left)
            return scan_refuse(s, "a length past the end of the pickle");
        if (n > (uint64_t)in_frame)
            return scan_refuse(s, PAST_FRAME);
        s->skip = n;
        if (op == LONG1 || op == LONG4) { /* in a piece, its bytes may be to come */
            int chosen = !s->whole || int_chosen(op, p + size, n);
            return push(s, chosen ? CHOSEN_NUMBER : NUMBER);
        }
        if (op == BYTEARRAY8)
            return push_new(s, 0);
        return push(s, n ? SCALAR : NUMBER); /* '' and b'' hash to 0 */
    }
    case TEXT:
        if (op == FLOAT)
            number = CHOSEN_NUMBER; /* text: its size unread */
        if (op == INT || op == LONG) { /* pushed below */
            const unsigned char *nl = s->whole ? memchr(p + 1, '\n', (size_t)left) : NULL;
            if (nl == NULL || int_chosen(op, p + 1, (uint64_t)(nl - p - 1)))
                number = CHOSEN_NUMBER;
        }
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
            return scan_refuse(s, "a FRAME inside a FRAME");
        if (s->whole ? n > (uint64_t)left : n > (uint64_t)(PY_SSIZE_T_MAX - s->at - size))
            return scan_refuse(s, "a FRAME past the end of the pickle");
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
        if (U32(s->height)[U32(s->stack)[len - 1]] & NAMED) /* a global as the result */
            s->calls_only = 0;
        s->stopped = 1;
        return 0;
    case APPEND:
        return add_to(s, len - 1, 0, 0);
    case SETITEM:
        return add_to(s, len - 2, 1, 1);
    case APPENDS:
    case SETITEMS:
    case ADDITEMS:
        if ((mark = pop_mark(s)) < 0)
            return -1;
        return add_to(s, mark, op == SETITEMS, op != APPENDS);
    case BUILD:
        s->calls_only = 0;
        if (need(s, 2) < 0)
            return -1;
        /* Safe mode builds only numpy's dtypes and arrays, which no writer
         * gives a state holding themselves: numpy takes such a cycle (a
         * dtype whose field is itself), and hashing it never ends. */
        if (s->strict && U32(s->height)[U32(s->stack)[len - 2]] & HELD)
            return scan_refuse(s, "safe mode gives no state to an object after another took it");
        return add_to(s, len - 1, 0, 0);
    case EMPTY_LIST:
    case EMPTY_DICT:
    case EMPTY_SET:
        return push_new(s, 0);
    case EMPTY_TUPLE:
        return build(s, len, 1, hash_flags(s, len, 0));
    case TUPLE1:
    case TUPLE2:
    case TUPLE3:
        if (need(s, op - TUPLE1 + 1) < 0)
            return -1;
        mark = len - (op - TUPLE1 + 1); /* its items */
        return build(s, mark, 1, hash_flags(s, mark, 0));
    case TUPLE:
    case LIST:
    case DICT:
    case FROZENSET:
        if ((mark = pop_mark(s)) < 0)
            return -1;
        if (op == DICT && (len - mark) % 2)
            return scan_refuse(s, "odd number of items for DICT");
        if (op == DICT || op == FROZENSET)
            s->keys_chosen |= any_chosen(s, mark, op == DICT ? 2 : 1);
        int tuple_like = op == TUPLE || op == FROZENSET;
        uint32_t flags = tuple_like ? hash_flags(s, mark, op == FROZENSET) : 0;
        return build(s, mark, op == TUPLE, flags);
    case REDUCE: { /* callable, arguments */
        if (need(s, 2) < 0)
            return -1;
        /* (a numpy scalar's hash is its number's: a key of a chosen hash) */
        s->callee = len - 2;
        int built = build(s, len - 2, 1, CALLED | CHOSEN_HASH);
        s->callee = -1;
        return built;
    }
    case NEWOBJ: /* class, arguments */
        s->calls_only = 0;
        return need(s, 2) < 0 ? -1 : build(s, len - 2, 1, CALLED);
    case NEWOBJ_EX: /* class, arguments, keywords */
        s->calls_only = 0;
        return need(s, 3) < 0 ? -1 : build(s, len - 3, 1, CALLED);
    case OBJ: /* mark, class, arguments */
        s->calls_only = 0;
        if ((mark = pop_mark(s)) < 0)
            return -1;
        if (len - mark < 1)
            return scan_refuse(s, "unpickling stack underflow");
        return build(s, mark, 1, CALLED);
    case INST: /* mark, arguments; module and name follow as text */
        s->calls_only = 0;
        return (mark = pop_mark(s)) < 0 ? -1 : build(s, mark, 1, CALLED);
    case BINPERSID: /* the ID */
        s->calls_only = 0;
        return need(s, 1) < 0 ? -1 : build(s, len - 1, 1, CALLED);
    case STACK_GLOBAL: /* module and name */
        return need(s, 2) < 0 ? -1 : build(s, len - 2, 0, NAMED);
    case PERSID:
    case EXT1:
    case EXT2:
    case EXT4:
        s->calls_only = 0;
        return push_new(s, 0);
    case GLOBAL:
        if (push_new(s, 0) < 0)
            return -1;
        U32(s->height)[U32(s->stack)[s->stack.len - 1]] |= NAMED;
        return 0;
    case NEXT_BUFFER:
        s->next_buffers++;
        return push_new(s, 0);
    case READONLY_BUFFER: /* in a record of calls, of an out-of-band buffer only */
        s->calls_only &= before == NEXT_BUFFER;
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
            return scan_refuse(s, "a memo argument that is not a slot number");
        return op == PUT ? memo_put(s, (uint64_t)slot) : memo_get(s, (uint64_t)slot);
    }
    case FRAME:
    case PROTO:
        return 0;
    case BINFLOAT:
        return push(s, float_chosen(p + 1) ? CHOSEN_NUMBER : NUMBER);
    case BININT:
    case BININT1:
    case BININT2:
    case NEWTRUE:
    case NEWFALSE:
        return push(s, NUMBER);
    case INT:
    case LONG:
    case FLOAT:
        return push(s, number);
    default: /* None (a constant hash from 3.12), strings as text (unread) */
        return push(s, NUMBER);
    }
}

int
scan_bytes(scan *s, const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        if (s->stopped)
            return scan_refuse(s, "pickle bytes after STOP");
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
                return scan_refuse(s, PAST_FRAME);
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
                return scan_refuse(s, "an opcode cut off by the end of the pickle");
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
