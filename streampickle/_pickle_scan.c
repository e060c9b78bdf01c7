/* Where a pickle of plain data ends, found without unpickling it.
 *
 * The format asks a reader to refuse pickle bytes after a record's STOP
 * opcode. The C unpickler does not say where it stopped unless it reads
 * through a file object, one per record: for a 1 KiB message that costs
 * ~1.1 us, half again of unpickling it (2.4 us). This walk of the opcodes
 * costs ~0.35 us (3 ns an opcode), after which ``pickle.loads`` may read it.
 *
 * It accepts only opcodes that build plain data (numbers, strings, bytes,
 * containers, memo references; protocols 0 to 5) and refuses any that can
 * reach code or a hook: globals, REDUCE, BUILD, object creation, extension
 * codes, persistent IDs, out-of-band buffers. Such a pickle calls nothing
 * of its own choosing when loaded (only CPython's own machinery, such as the
 * DeprecationWarning for a bad escape in a protocol-0 string), so no hook or
 * safe-mode check has anything to decide.
 *
 * Every argument is read as CPython's unpickler reads it (see pickletools
 * for the opcode table): a FRAME's bytes are more opcodes; a length that
 * runs past the end, a negative one, a text argument without its newline,
 * an unknown or refused opcode, or no STOP: -1, and the caller reads the
 * record the general way, which reports what is wrong.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* How each opcode's argument is laid out. REFUSED is 0: the table's default. */
enum arg {
    REFUSED = 0,
    FIXED,    /* none, or as many bytes as size_of says */
    STOP,
    LINE,     /* protocol 0 text arguments, through '\n' */
    SIZED,    /* a little-endian length of size_of bytes, then that many bytes */
    SIZED_4S, /* a signed 4-byte length (negative is an error), then bytes */
    FRAME,    /* a uint64 length of the opcodes that follow */
};

/* Two tables read side by side: each opcode's position depends on the one
 * before it, so one lookup per opcode, not two in a row, sets the pace. */
static unsigned char arg_of[256];
static unsigned char size_of[256];

static void
set(const char *codes, enum arg arg, unsigned char size)
{
    for (const char *c = codes; *c; c++) {
        arg_of[(unsigned char)*c] = arg;
        size_of[(unsigned char)*c] = size;
    }
}

static void
fill_table(void)
{
    /* NONE, EMPTY_LIST, APPEND(S), LIST, EMPTY_TUPLE, TUPLE, EMPTY_DICT,
     * DICT, SETITEM(S), POP, DUP, MARK, POP_MARK; NEWTRUE, NEWFALSE, TUPLE1-3,
     * EMPTY_SET, ADDITEMS, FROZENSET, MEMOIZE */
    set("N]ael)t}dsu02(1", FIXED, 0);
    set("\x88\x89\x85\x86\x87\x8f\x90\x91\x94", FIXED, 0);
    set("\x80Khq", FIXED, 1); /* PROTO, BININT1, BINGET, BINPUT */
    set("M", FIXED, 2);       /* BININT2 */
    set("Jjr", FIXED, 4);     /* BININT, LONG_BINGET, LONG_BINPUT */
    set("G", FIXED, 8);       /* BINFLOAT */
    set(".", STOP, 0);
    set("ILSVFgp", LINE, 0);
    set("\x8aUC\x8c", SIZED, 1);  /* LONG1, SHORT_BINSTRING, SHORT_BINBYTES,
                                    SHORT_BINUNICODE */
    set("BX", SIZED, 4);           /* BINBYTES, BINUNICODE */
    set("T\x8b", SIZED_4S, 4);     /* BINSTRING, LONG4 */
    set("\x8d\x8e\x96", SIZED, 8); /* BINUNICODE8, BINBYTES8, BYTEARRAY8 */
    set("\x95", FRAME, 8);
}

static uint64_t
little_endian(const unsigned char *p, int n)
{
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}

/* The offset just past the first STOP, or -1 (see the top of the file). */
static Py_ssize_t
plain_end(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char op = p[i++];
        int arg = arg_of[op], size = size_of[op];
        if (n - i < size)
            return -1;
        if (arg == FIXED) {
            i += size;
            continue;
        }
        switch (arg) {
        case STOP:
            return i;
        case LINE: {
            const unsigned char *nl = memchr(p + i, '\n', (size_t)(n - i));
            if (nl == NULL)
                return -1;
            i = nl - p + 1;
            break;
        }
        case SIZED:
        case SIZED_4S:
        case FRAME: {
            uint64_t length = little_endian(p + i, size);
            i += size;
            if (arg == SIZED_4S && length >= (1u << 31))
                return -1;
            if (length > (uint64_t)(n - i))
                return -1;
            if (arg != FRAME) /* a frame's bytes are the opcodes that follow */
                i += (Py_ssize_t)length;
            break;
        }
        default:
            return -1;
        }
    }
    return -1;
}

static PyObject *
plain_pickle_end(PyObject *Py_UNUSED(module), PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t end = plain_end((const unsigned char *)view.buf, view.len);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(end);
}

static PyMethodDef methods[] = {
    {"plain_pickle_end", plain_pickle_end, METH_O,
     "plain_pickle_end(data, /)\n--\n\n"
     "The offset just past the first STOP of the pickle ``data`` if every\n"
     "opcode before it builds plain data and every argument fits; else -1."},
    {NULL, NULL, 0, NULL},
};

/* The tables are filled once, before any walk, and only read after: the
 * module holds no other state, so it needs no GIL where a build has none. */
static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streampickle._pickle_scan",
    .m_doc = "Where a pickle of plain data ends (see _pickle_scan.c).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__pickle_scan(void)
{
    fill_table();
    return PyModuleDef_Init(&module);
}
