/* The Python face of the scan (_pickle_scan.c): PickleScan for a record's
 * pickle bytes in pieces, check_whole for a pickle in memory, SmallRecords
 * for the reader's fast path. */
#include "_pickle_scan.h"

/* -- PickleScan: a record's pickle bytes, in pieces ------------------------ */

typedef struct {
    PyObject_HEAD
    scan s;
} PickleScan;

static PyObject *
PickleScan_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    int strict = 0;
    static char *keywords[] = {"strict", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$p", keywords, &strict))
        return NULL;
    PickleScan *self = (PickleScan *)type->tp_alloc(type, 0);
    if (self != NULL) {
        scan_init(&self->s);
        self->s.strict = strict;
    }
    return (PyObject *)self;
}

static void
PickleScan_dealloc(PickleScan *self)
{
    scan_free(&self->s);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
PickleScan_reset(PickleScan *self, PyObject *Py_UNUSED(ignored))
{
    int strict = self->s.strict;
    scan_free(&self->s);
    scan_init(&self->s);
    self->s.strict = strict;
    Py_RETURN_NONE;
}

static PyObject *
PickleScan_feed(PickleScan *self, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int failed = scan_bytes(&self->s, view.buf, view.len);
    PyBuffer_Release(&view);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
PickleScan_get_plain(PickleScan *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->s.plain);
}

static PyObject *
PickleScan_get_stopped(PickleScan *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->s.stopped);
}

static PyObject *
PickleScan_get_owed(PickleScan *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->s.skip);
}

static PyMethodDef PickleScan_methods[] = {
    {"feed", (PyCFunction)PickleScan_feed, METH_O,
     "feed(data, /)\n--\n\n"
     "Check the next pickle bytes; ValueError says what is refused and where."},
    {"reset", (PyCFunction)PickleScan_reset, METH_NOARGS,
     "reset()\n--\n\nStart over, for the next record's pickle."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef PickleScan_getset[] = {
    {"plain", (getter)PickleScan_get_plain, NULL,
     "True while every opcode so far builds plain data.", NULL},
    {"stopped", (getter)PickleScan_get_stopped, NULL, "True once STOP is taken.", NULL},
    {"owed", (getter)PickleScan_get_owed, NULL,
     "Bytes of an argument claimed but not yet fed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot PickleScan_slots[] = {
    {Py_tp_doc, "Checks a record's pickle bytes, fed in any pieces, before they "
                "are unpickled (see streampickle/_pickle_scan.c)."},
    {Py_tp_new, PickleScan_new},
    {Py_tp_dealloc, PickleScan_dealloc},
    {Py_tp_methods, PickleScan_methods},
    {Py_tp_getset, PickleScan_getset},
    {0, NULL},
};

static PyType_Spec PickleScan_spec = {
    .name = "streampickle._pickle_scan.PickleScan",
    .basicsize = sizeof(PickleScan),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = PickleScan_slots,
};

static PyObject *
check_whole(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwds)
{
    Py_buffer view;
    int strict = 0;
    static char *keywords[] = {"", "strict", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*|$p", keywords, &view, &strict))
        return NULL;
    int plain = scan_whole(view.buf, view.len, strict);
    PyBuffer_Release(&view);
    return plain < 0 ? NULL : PyBool_FromLong(plain);
}

/* -- SmallRecords: the reader's fast path for small messages --------------- */

/* A record that is one checked, uncompressed PICKLE frame and its RECORD_END
 * is most small messages. Checking its two headers, its payload and its
 * pickle, then loading it, costs several Python calls, each more than its
 * work; here they are two. The frame layout is FORMAT.md's (u32 first word:
 * kind, codec, flags; u32 param; u64 stored size; u64 raw size; u32 payload
 * check; u32 check of the 28 bytes before it); the values to expect are
 * given by format.py. Anything amiss is left to the general path, which says
 * what is wrong. */
#define HEADER_SIZE 32
#define HEADER_CHECKED 28

typedef struct {
    PyObject_HEAD
    uint32_t pickle_word, end_word;
    uint64_t max_size;
    PyObject *checksum, *loads;
} SmallRecords;

typedef struct {
    uint32_t word, param;
    uint64_t stored, raw;
    uint32_t payload_check, check;
} header;

static header
read_header(const unsigned char *p)
{
    header h = {
        (uint32_t)little_endian(p, 4), (uint32_t)little_endian(p + 4, 4),
        little_endian(p + 8, 8), little_endian(p + 16, 8),
        (uint32_t)little_endian(p + 24, 4), (uint32_t)little_endian(p + 28, 4),
    };
    return h;
}

/* The low half of the XXH3-64 of ``data``; -1 with an error set. */
static int64_t
checksum(SmallRecords *self, PyObject *data)
{
    PyObject *sum = PyObject_CallOneArg(self->checksum, data);
    if (sum == NULL)
        return -1;
    unsigned long long value = PyLong_AsUnsignedLongLong(sum);
    Py_DECREF(sum);
    if (value == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    return (int64_t)(value & 0xFFFFFFFFu);
}

/* 1 if the 32 bytes at ``p`` are a valid header of the plain kind with
 * ``word``, 0 if not, -1 with an error set. */
static int
valid_header(SmallRecords *self, const char *p, header h)
{
    PyObject *checked = PyBytes_FromStringAndSize(p, HEADER_CHECKED);
    if (checked == NULL)
        return -1;
    int64_t check = checksum(self, checked);
    Py_DECREF(checked);
    return check < 0 ? -1 : check == h.check;
}

static PyObject *
SmallRecords_size(SmallRecords *self, PyObject *data)
{
    if (!PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) != HEADER_SIZE)
        return PyLong_FromLong(-1); /* a file's read() may give another type */
    const char *p = PyBytes_AS_STRING(data);
    header h = read_header((const unsigned char *)p);
    if (h.word != self->pickle_word || h.param || h.stored != h.raw
        || h.stored > self->max_size)
        return PyLong_FromLong(-1);
    int valid = valid_header(self, p, h);
    return valid < 0 ? NULL : PyLong_FromLongLong(valid ? (long long)h.stored : -1);
}

static PyObject *
SmallRecords_load(SmallRecords *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "load() takes a header, the bytes after it, strict");
        return NULL;
    }
    int strict = PyObject_IsTrue(args[2]);
    if (strict < 0)
        return NULL;
    if (!PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])
        || PyBytes_GET_SIZE(args[0]) != HEADER_SIZE)
        Py_RETURN_NOTIMPLEMENTED;
    header h = read_header((const unsigned char *)PyBytes_AS_STRING(args[0]));
    const char *p = PyBytes_AS_STRING(args[1]);
    Py_ssize_t n = (Py_ssize_t)h.stored;
    if (PyBytes_GET_SIZE(args[1]) != n + HEADER_SIZE)
        Py_RETURN_NOTIMPLEMENTED;
    header end = read_header((const unsigned char *)p + n);
    if (end.word != self->end_word || end.param || end.stored || end.raw != h.stored
        || end.payload_check)
        Py_RETURN_NOTIMPLEMENTED;
    int valid = valid_header(self, p + n, end);
    if (valid <= 0)
        return valid < 0 ? NULL : Py_NewRef(Py_NotImplemented);
    PyObject *chunk = PyBytes_FromStringAndSize(p, n);
    if (chunk == NULL)
        return NULL;
    PyObject *result = NULL;
    int64_t check = checksum(self, chunk);
    if (check >= 0) {
        int plain = check == h.payload_check ? scan_whole((const unsigned char *)p, n, strict) : -1;
        if (plain < 0) { /* the general path says what is wrong */
            PyErr_Clear();
            result = Py_NewRef(Py_NotImplemented);
        }
        else
            result = plain ? PyObject_CallOneArg(self->loads, chunk) : Py_NewRef(Py_Ellipsis);
    }
    Py_DECREF(chunk);
    return result;
}

static void
put_le(unsigned char *p, uint64_t x, int n)
{
    for (int i = 0; i < n; i++, x >>= 8)
        p[i] = (unsigned char)x;
}

/* Write the header ``h`` at ``p``, its own check last; -1 with an error set. */
static int
write_header(SmallRecords *self, unsigned char *p, header h)
{
    put_le(p, h.word, 4);
    put_le(p + 4, h.param, 4);
    put_le(p + 8, h.stored, 8);
    put_le(p + 16, h.raw, 8);
    put_le(p + 24, h.payload_check, 4);
    PyObject *checked = PyBytes_FromStringAndSize((const char *)p, HEADER_CHECKED);
    if (checked == NULL)
        return -1;
    int64_t check = checksum(self, checked);
    Py_DECREF(checked);
    if (check < 0)
        return -1;
    put_le(p + HEADER_CHECKED, (uint64_t)check, 4);
    return 0;
}

static PyObject *
SmallRecords_frame(SmallRecords *self, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = view.len;
    PyObject *result = NULL;
    int64_t check = checksum(self, data);
    if (check >= 0)
        result = PyBytes_FromStringAndSize(NULL, n + 2 * HEADER_SIZE);
    if (result != NULL) {
        unsigned char *p = (unsigned char *)PyBytes_AS_STRING(result);
        memcpy(p + HEADER_SIZE, view.buf, (size_t)n);
        header first = {self->pickle_word, 0, (uint64_t)n, (uint64_t)n, (uint32_t)check, 0};
        header end = {self->end_word, 0, 0, (uint64_t)n, 0, 0};
        if (write_header(self, p, first) < 0
            || write_header(self, p + HEADER_SIZE + n, end) < 0)
            Py_CLEAR(result);
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
SmallRecords_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    unsigned int pickle_word, end_word;
    unsigned long long max_size;
    PyObject *checksum, *loads;
    static char *keywords[] = {"pickle_word", "end_word", "max_size", "checksum", "loads",
                               NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "IIKOO", keywords, &pickle_word,
                                     &end_word, &max_size, &checksum, &loads))
        return NULL;
    SmallRecords *self = (SmallRecords *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->pickle_word = pickle_word;
    self->end_word = end_word;
    self->max_size = max_size;
    self->checksum = Py_NewRef(checksum);
    self->loads = Py_NewRef(loads);
    return (PyObject *)self;
}

static void
SmallRecords_dealloc(SmallRecords *self)
{
    Py_XDECREF(self->checksum);
    Py_XDECREF(self->loads);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef SmallRecords_methods[] = {
    {"size", (PyCFunction)SmallRecords_size, METH_O,
     "size(header, /)\n--\n\n"
     "The payload size if ``header`` is a valid header of a checked,\n"
     "uncompressed PICKLE frame of at most max_size bytes; else -1."},
    {"load", (PyCFunction)(void (*)(void))SmallRecords_load, METH_FASTCALL,
     "load(header, after, strict, /)\n--\n\n"
     "``loads`` of the pickle that follows ``header`` (size() >= 0) if\n"
     "``after`` is exactly its payload, of the right check, and a valid\n"
     "RECORD_END for it, and the pickle passes check_whole as plain data.\n"
     "Ellipsis if all that holds but the pickle is not plain; NotImplemented\n"
     "if anything else is wrong (the general path says what)."},
    {"frame", (PyCFunction)SmallRecords_frame, METH_O,
     "frame(pickle, /)\n--\n\n"
     "The record of the pickle bytes ``pickle`` as one checked PICKLE frame\n"
     "and its RECORD_END (no buffers): what load() takes."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot SmallRecords_slots[] = {
    {Py_tp_doc, "SmallRecords(pickle_word, end_word, max_size, checksum, loads)\n--\n\n"
                "Records of one PICKLE frame: encoded for the writer, checked and\n"
                "loaded for the reader's fast path."},
    {Py_tp_new, SmallRecords_new},
    {Py_tp_dealloc, SmallRecords_dealloc},
    {Py_tp_methods, SmallRecords_methods},
    {0, NULL},
};

static PyType_Spec SmallRecords_spec = {
    .name = "streampickle._pickle_scan.SmallRecords",
    .basicsize = sizeof(SmallRecords),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = SmallRecords_slots,
};

static PyMethodDef methods[] = {
    {"check_whole", (PyCFunction)(void (*)(void))check_whole, METH_VARARGS | METH_KEYWORDS,
     "check_whole(data, /, *, strict=False)\n--\n\n"
     "Check a whole pickle, STOP last; ValueError says what is refused and\n"
     "where. True if every opcode builds plain data."},
    {NULL, NULL, 0, NULL},
};

static int
add_type(PyObject *module, PyType_Spec *spec, const char *name)
{
    PyObject *type = PyType_FromModuleAndSpec(module, spec, NULL);
    if (type == NULL)
        return -1;
    int failed = PyModule_AddObject(module, name, type);
    if (failed)
        Py_DECREF(type);
    return failed;
}

static int
exec_module(PyObject *module)
{
    if (add_type(module, &PickleScan_spec, "PickleScan") < 0)
        return -1;
    return add_type(module, &SmallRecords_spec, "SmallRecords");
}

/* The tables are filled once, before any scan, and only read after; each
 * scan's state is its own, so the module needs no GIL where a build has none. */
static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streampickle._pickle_scan",
    .m_doc = "A check of a record's pickle bytes before they run (see _pickle_scan.c).",
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
