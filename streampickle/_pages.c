/* Faulting in the pages of a writable buffer without writing to them
 * (madvise MADV_POPULATE_WRITE, Linux 5.14), with the GIL released: what
 * prefault.py runs on a spare core while a new array is being filled. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef __linux__
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#endif

/* populate(buffer, start, end) -> bool: whether bytes [start, end) of the
 * buffer are now faulted in; False where the system cannot (not Linux, or a
 * kernel before 5.14), so that the caller stops asking; OSError for a failure
 * of this call (ENOMEM under a memory limit, a poisoned page...). */
static PyObject *
populate(PyObject *module, PyObject *args)
{
    PyObject *obj;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "Onn", &obj, &start, &end))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (start < 0 || end > view.len || start > end) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "populate: range outside the buffer");
        return NULL;
    }
#ifdef __linux__
    int failed = 0, error = 0;
    if (start < end) {
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t first = ((uintptr_t)view.buf + start) & ~(page - 1);
        uintptr_t last = (uintptr_t)view.buf + end;
        Py_BEGIN_ALLOW_THREADS
        failed = madvise((void *)first, last - first, MADV_POPULATE_WRITE);
        error = errno;
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&view);
    if (failed && error != EINVAL && error != ENOSYS) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyBool_FromLong(!failed);
#else
    PyBuffer_Release(&view);
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"populate", populate, METH_VARARGS,
     "populate(buffer, start, end) -> bool: fault in bytes [start, end) of a "
     "writable buffer without writing them; False where the system cannot, "
     "OSError for a failure of this call."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pages", NULL, 0, methods,
};

PyMODINIT_FUNC
PyInit__pages(void)
{
    return PyModule_Create(&module);
}
