/* The opcode table of _pickle_opcodes.h, filled once at import. */
#include "_pickle_opcodes.h"

unsigned char arg_of[256], width_of[256], lines_of[256];
unsigned char reaches_code[256];
unsigned char watched[256];
unsigned char dag_bits[256];
Py_ssize_t costly_from[256];
Py_ssize_t chosen_from[256];
unsigned char raises[256];
unsigned char adds_to[256];
Py_ssize_t step_over[256], step_over_strict[256];

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
    dag_bits[TUPLE] = dag_bits[TUPLE1] = dag_bits[TUPLE2] = dag_bits[TUPLE3] = COSTLY | CHOSEN;
    dag_bits[LONG4] = COSTLY | CHOSEN; /* what LONG1 cannot hold */
    static const unsigned char sized[] = {
        LONG, INT, BINUNICODE, BINUNICODE8, UNICODE, BINBYTES, BINBYTES8, BINSTRING, STRING,
        LONG1};
    for (size_t i = 0; i < sizeof(sized); i++) {
        dag_bits[sized[i]] = BY_SIZE;
        costly_from[sized[i]] = sized[i] == LONG || sized[i] == INT ? 256 : 4096;
    }
    costly_from[LONG1] = PY_SSIZE_T_MAX; /* at most 255 bytes */
    chosen_from[LONG1] = 10; /* the opcode, its length and 8 bytes */
    chosen_from[INT] = chosen_from[LONG] = 1; /* any: int_chosen reads the text */
    dag_bits[SETITEM] = dag_bits[SETITEMS] = dag_bits[ADDITEMS] = HASHES;
    dag_bits[FROZENSET] = HASHES | COSTLY | CHOSEN;
    dag_bits[DICT] = HASHES;
    /* (LONG1, INT, LONG: BY_SIZE, with chosen_from) */
    dag_bits[BININT] = dag_bits[BININT1] = dag_bits[BININT2] = dag_bits[FLOAT] = NUMBERS;
    dag_bits[LONG4] |= NUMBERS;
    dag_bits[FLOAT] |= CHOSEN;
    for (int op = 0; op < 256; op++)
        step_over[op] = step_over_strict[op] =
            arg_of[op] == FIXED && !watched[op] && !raises[op] && !adds_to[op]
                    && !reaches_code[op] && !(dag_bits[op] & ~NUMBERS)
                ? 1 + width_of[op]
                : ACT_ON;
    /* strict mode reads numbers (NUMBERS) and each BINFLOAT (float_chosen) */
    step_over_strict[BININT] = step_over_strict[BININT1] = ACT_ON;
    step_over_strict[BININT2] = step_over_strict[BINFLOAT] = ACT_ON;
}

int64_t
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

int
int_chosen(unsigned char op, const unsigned char *arg, uint64_t n)
{
    if (op == LONG1)
        return n > 8 || (n == 8 && arg[7] >= 0x10 && arg[7] < 0xf0);
    if (op != INT && op != LONG)
        return 1;
    /* a sign and up to 18 digits (10**18 < 2**60), LONG's L after them; any
     * other text (0x..., 1_000, blanks) may be wider (CPython reads base 0) */
    uint64_t i = n && (arg[0] == '-' || arg[0] == '+'), end = n - (op == LONG && n && arg[n - 1] == 'L');
    if (end <= i || end - i > 18)
        return 1;
    for (; i < end; i++)
        if (!Py_ISDIGIT(arg[i]))
            return 1;
    return 0;
}

int
float_chosen(const unsigned char *big_endian)
{
    int exponent = ((big_endian[0] & 0x7f) << 4 | big_endian[1] >> 4) - 1023;
    int zero = exponent == -1023 && !(big_endian[1] & 0x0f) &&
               !memcmp(big_endian + 2, "\0\0\0\0\0\0", 6);
    return !zero && (exponent < -60 || exponent > 60);
}
