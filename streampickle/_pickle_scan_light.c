/* The light scan of a whole pickle (the reader's fast path for small
 * messages), and scan_whole, which takes it or the full scan (_pickle_scan.c). */
#include "_pickle_scan.h"
#include "_pickle_opcodes.h"

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
    const Py_ssize_t *steps = s->strict ? step_over_strict : step_over;
    Py_ssize_t i = 0, stores = 0, frame_end = 0, ups = 0, adds = 0, code = 0;
    Py_ssize_t limit = n; /* where the current FRAME, else the pickle, ends */
    int dag = 0;
#define REFUSE(offset, what) return (s->at = (offset), scan_refuse(s, what))
    while (i < n) {
        /* most opcodes: one lookup and one comparison each */
        while (i < limit && i + steps[p[i]] <= limit)
            i += steps[p[i]];
        if (i >= n)
            break;
        unsigned char op = p[i];
        if (i >= frame_end)
            limit = n;
        ups += raises[op];
        adds += adds_to[op];
        code += reaches_code[op];
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
        int bits = dag_bits[op];
        if (bits & BY_SIZE)
            bits = (end - i >= costly_from[op] ? COSTLY : 0)
                   | (chosen_from[op] && end - i >= chosen_from[op] ? CHOSEN : 0)
                   | (chosen_from[op] ? NUMBERS : 0);
        else if (op == BINFLOAT)
            bits = NUMBERS | (float_chosen(p + i + 1) ? CHOSEN : 0);
        dag |= bits;
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
                s->hashes_shared = (dag & HASHES_SHARED) == HASHES_SHARED;
                s->hashes_chosen = (dag & (HASHES | CHOSEN)) == (HASHES | CHOSEN);
                s->hashes_numbers = (dag & (HASHES | NUMBERS)) == (HASHES | NUMBERS);
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
scan_whole(const unsigned char *p, Py_ssize_t n, int strict, int count_keys)
{
    scan s;
    scan_init(&s);
    s.whole = 1;
    s.strict = strict;
    Py_ssize_t raising = 0;
    int failed = scan_light(&s, p, n, &raising);
    int hashes_shared = s.hashes_shared, hashes_numbers = s.hashes_numbers;
    /* It may nest too deep, or (strict) give a call's result a state or
     * hash what has a chosen hash */
    int full = raising > (Py_ssize_t)s.max_depth || (strict && (!s.plain || s.hashes_chosen));
    if (!failed && full) {
        scan_free(&s);
        scan_init(&s);
        s.whole = 1;
        s.strict = strict;
        failed = scan_bytes(&s, p, n);
    }
    if (!failed && !s.stopped)
        failed = scan_refuse(&s, s.lines ? "a text argument without its newline" : "no STOP");
    /* (keys_chosen, calls_only: the full scan's); numbers hashed: their
     * probe paths; calls, as plain data, made nothing a key */
    int plain = s.plain, counted = strict && (hashes_shared || s.keys_chosen);
    int verdict = plain ? 1 : strict && s.calls_only ? 2 : 0;
    scan_free(&s);
    if (failed)
        return -1;
    if (verdict && (counted || (strict && hashes_numbers))) {
        int taken = count_keys ? keys_counted(p, n, hashes_shared, NULL) : !counted;
        return taken > 0 ? verdict : taken;
    }
    return verdict;
}
