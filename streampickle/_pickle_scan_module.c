/* The Python face of the scan (_pickle_scan.c): PickleScan for a record's
 * pickle bytes in pieces, check_whole for a pickle in memory; and the module,
 * with SmallRecords (_small_records.c). */
#include "_pickle_opcodes.h"
#include "_pickle_probes.h"
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
    PyTypeObject *type = Py_TYPE(self);
    scan_free(&self->s);
    type->tp_free((PyObject *)self);
    Py_DECREF(type); /* a heap type: each instance holds a reference to it */
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

static PyObject *
PickleScan_get_calls_only(PickleScan *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->s.calls_only);
}

static PyObject *
PickleScan_get_next_buffers(PickleScan *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->s.next_buffers);
}

static PyGetSetDef PickleScan_getset[] = {
    {"plain", (getter)PickleScan_get_plain, NULL,
     "True while every opcode so far builds plain data.", NULL},
    {"calls_only", (getter)PickleScan_get_calls_only, NULL,
     "True while its only code is calls (check_whole's 2, strict) so far.", NULL},
    {"next_buffers", (getter)PickleScan_get_next_buffers, NULL,
     "NEXT_BUFFER opcodes so far.", NULL},
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
    int strict = 0, count_keys = 1;
    static char *keywords[] = {"", "strict", "count_keys", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*|$pp", keywords, &view, &strict,
                                     &count_keys))
        return NULL;
    int plain = scan_whole(view.buf, view.len, strict, count_keys);
    PyBuffer_Release(&view);
    return plain < 0 ? NULL : plain == 2 ? PyLong_FromLong(2) : PyBool_FromLong(plain);
}

static PyObject *
key_hashes(PyObject *Py_UNUSED(module), PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *seen = PyList_New(0);
    int counted = seen == NULL ? -1 : keys_counted(view.buf, view.len, 1, seen);
    PyBuffer_Release(&view);
    if (counted <= 0)
        Py_CLEAR(seen);
    return counted < 0 ? NULL : seen != NULL ? seen : Py_NewRef(Py_None);
}

static PyMethodDef methods[] = {
    {"check_whole", (PyCFunction)(void (*)(void))check_whole, METH_VARARGS | METH_KEYWORDS,
     "check_whole(data, /, *, strict=False, count_keys=True)\n--\n\n"
     "Check a whole pickle, STOP last; ValueError says what is refused and\n"
     "where. True if every opcode builds plain data (strict: and, where it\n"
     "hashes keys of a chosen hash or shares and hashes tuples, the count in\n"
     "C of its keys takes it, never if not count_keys; where it hashes\n"
     "numbers, the count's model of the dict and set tables takes it, or\n"
     "count_keys is False); strict, 2 if its only code is calls whose\n"
     "results are given nothing and hashed as no key (safe_calls.py)."},
    {"key_hashes", key_hashes, METH_O,
     "key_hashes(data, /)\n--\n\n"
     "The hashes of the keys of a chosen hash a plain pickle hashes, as\n"
     "safe mode works them out (_pickle_scan_keys.c); None if it leaves the\n"
     "pickle to the counting unpickler; ValueError if it refuses it."},
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
    if (keys_init() < 0 || small_records_init() < 0)
        return -1;
    if (add_type(module, &PickleScan_spec, "PickleScan") < 0
        || add_type(module, &ProbeTable_spec, "ProbeTable") < 0)
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
