/* Where a pickle of plain data ends, found without unpickling it.
 *
 * The format asks a reader to refuse pickle bytes after a record's STOP
 * opcode. The C unpickler does not say where it stopped unless it reads
 * through a file object, one per record: for a small message that costs a
 * third again of unpickling it. This walk of the opcodes costs a few percent,
 * after which ``pickle.loads`` may read the record.
 *
 * It accepts only opcodes that build plain data (numbers, strings, bytes,
 * containers, memo references; protocols 0 to 5) and refuses any that can
 * reach code or a hook: globals, REDUCE, BUILD, object creation, extension
 * codes, persistent IDs, out-of-band buffers. Such a pickle runs no Python
 * code when loaded, so no hook or safe-mode check has anything to decide.
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
    NO_ARG,
    STOP,
    FIXED_1,  /* PROTO, BININT1, BINGET, BINPUT */
    FIXED_2,  /* BININT2 */
    FIXED_4,  /* BININT, LONG_BINGET, LONG_BINPUT */
    FIXED_8,  /* BINFLOAT */
    LINE,     /* protocol 0 text arguments, through '\n' */
    SIZED_1,  /* uint8 length, then that many bytes */
    SIZED_4,  /* uint32 little-endian length, then bytes */
    SIZED_4S, /* int32 little-endian length (negative is an error), then bytes */
    SIZED_8,  /* uint64 little-endian length, then bytes */
    FRAME,    /* uint64 length of the opcodes that follow */
};

static unsigned char arg_of[256];

static void
fill_table(void)
{
    static const char no_arg[] = "N]ael)t}dsu02(1";
    static const unsigned char no_arg_2[] = {
        0x88, 0x89,       /* NEWTRUE, NEWFALSE */
        0x85, 0x86, 0x87, /* TUPLE1..3 */
        0x8f, 0x90, 0x91, /* EMPTY_SET, ADDITEMS, FROZENSET */
        0x94,             /* MEMOIZE */
    };
    for (const char *c = no_arg; *c; c++)
        arg_of[(unsigned char)*c] = NO_ARG;
    for (size_t i = 0; i < sizeof(no_arg_2); i++)
        arg_of[no_arg_2[i]] = NO_ARG;
    arg_of['.'] = STOP;
    arg_of[0x80] = FIXED_1; /* PROTO */
    arg_of['K'] = FIXED_1;
    arg_of['h'] = FIXED_1;
    arg_of['q'] = FIXED_1;
    arg_of['M'] = FIXED_2;
    arg_of['J'] = FIXED_4;
    arg_of['j'] = FIXED_4;
    arg_of['r'] = FIXED_4;
    arg_of['G'] = FIXED_8;
    for (const char *c = "ILSVFgp"; *c; c++)
        arg_of[(unsigned char)*c] = LINE;
    arg_of[0x8a] = SIZED_1; /* LONG1 */
    arg_of['U'] = SIZED_1;
    arg_of['C'] = SIZED_1;
    arg_of[0x8c] = SIZED_1; /* SHORT_BINUNICODE */
    arg_of['B'] = SIZED_4;
    arg_of['X'] = SIZED_4;
    arg_of['T'] = SIZED_4S;
    arg_of[0x8b] = SIZED_4S; /* LONG4 */
    arg_of[0x8d] = SIZED_8;  /* BINUNICODE8 */
    arg_of[0x8e] = SIZED_8;  /* BINBYTES8 */
    arg_of[0x96] = SIZED_8;  /* BYTEARRAY8 */
    arg_of[0x95] = FRAME;
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
    static const int fixed[] = {[FIXED_1] = 1, [FIXED_2] = 2, [FIXED_4] = 4, [FIXED_8] = 8,
                                [SIZED_1] = 1, [SIZED_4] = 4, [SIZED_4S] = 4, [SIZED_8] = 8,
                                [FRAME] = 8};
    Py_ssize_t i = 0;
    while (i < n) {
        int arg = arg_of[p[i++]];
        uint64_t size;
        switch (arg) {
        case NO_ARG:
            break;
        case STOP:
            return i;
        case LINE: {
            const unsigned char *nl = memchr(p + i, '\n', (size_t)(n - i));
            if (nl == NULL)
                return -1;
            i = nl - p + 1;
            break;
        }
        case FIXED_1:
        case FIXED_2:
        case FIXED_4:
        case FIXED_8:
            if (n - i < fixed[arg])
                return -1;
            i += fixed[arg];
            break;
        case SIZED_1:
        case SIZED_4:
        case SIZED_4S:
        case SIZED_8:
        case FRAME:
            if (n - i < fixed[arg])
                return -1;
            size = little_endian(p + i, fixed[arg]);
            i += fixed[arg];
            if (arg == SIZED_4S && size >= (1u << 31))
                return -1;
            if (size > (uint64_t)(n - i))
                return -1;
            if (arg != FRAME) /* a frame's bytes are the opcodes that follow */
                i += (Py_ssize_t)size;
            break;
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

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streampickle._pickle_scan",
    .m_doc = "Where a pickle of plain data ends (see _pickle_scan.c).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__pickle_scan(void)
{
    fill_table();
    return PyModule_Create(&module);
}
