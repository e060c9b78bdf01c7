/* SmallRecords: most small messages are a record of one checked PICKLE
 * frame and its RECORD_END. Encoding one for the writer, and for the reader
 * reading one from a socket, checking its headers, payload and pickle, and
 * loading it, cost several Python calls each, each more than its work; here
 * they are one C call. */
#include "_pickle_scan.h"

/* The frame layout is FORMAT.md's (u32 first word:
 * kind, codec, flags; u32 param; u64 stored size; u64 raw size; u32 payload
 * check; u32 check of the 28 bytes before it); the values to expect are
 * given by format.py. Anything amiss is left to the general path, which says
 * what is wrong. */
#define HEADER_SIZE 32
#define HEADER_CHECKED 28

#define STREAM_HEADER_SIZE 16

typedef struct {
    PyObject_HEAD
    uint32_t pickle_word, end_word;
    uint64_t max_size;
    PyObject *checksum, *loads;
    /* What a writer puts before and after a one-record stream's record. */
    char stream_header[STREAM_HEADER_SIZE], stream_end[HEADER_SIZE];
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

/* A header's own check: the low half of the XXH3-64 (seed 0) of its first
 * 28 bytes. Computed here, not by a call to the xxhash module that payloads
 * take: for 17 to 128 bytes XXH3 is a few multiplications (xxHash's spec,
 * doc/xxhash_spec.md; XXH3_len_17to128_64b), and two headers go with every
 * small message. The tests hold it to xxhash's own. */
static uint64_t
fold_product(uint64_t a, uint64_t b) /* the 128-bit a * b, its halves xored */
{
#ifdef __SIZEOF_INT128__
    __uint128_t product = (__uint128_t)a * b;
    return (uint64_t)product ^ (uint64_t)(product >> 64);
#else
    uint64_t lo_lo = (a & 0xFFFFFFFF) * (b & 0xFFFFFFFF), hi_lo = (a >> 32) * (b & 0xFFFFFFFF);
    uint64_t lo_hi = (a & 0xFFFFFFFF) * (b >> 32), hi_hi = (a >> 32) * (b >> 32);
    uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFF) + lo_hi;
    uint64_t upper = (hi_lo >> 32) + (cross >> 32) + hi_hi;
    return ((cross << 32) | (lo_lo & 0xFFFFFFFF)) ^ upper;
#endif
}

static uint64_t
mix16(const unsigned char *p, const unsigned char *secret)
{
    return fold_product(little_endian(p, 8) ^ little_endian(secret, 8),
                        little_endian(p + 8, 8) ^ little_endian(secret + 8, 8));
}

static uint32_t
header_check(const unsigned char *p)
{
    /* The first 32 bytes of XXH3's default secret: all 28 bytes use. */
    static const unsigned char secret[32] = {
        0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81,
        0x2c, 0xf7, 0x21, 0xad, 0x1c, 0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90,
        0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f};
    uint64_t acc = HEADER_CHECKED * 0x9E3779B185EBCA87u; /* len * PRIME64_1 */
    acc += mix16(p, secret) + mix16(p + HEADER_CHECKED - 16, secret + 16);
    acc ^= acc >> 37; /* XXH3's avalanche */
    acc *= 0x165667919E3779F9u;
    acc ^= acc >> 32;
    return (uint32_t)acc;
}

/* 1 if the 32 bytes at ``p`` (read as ``h``) check, else 0. */
static int
valid_header(const char *p, header h)
{
    return header_check((const unsigned char *)p) == h.check;
}

/* The header at ``p`` (``got`` bytes read) if it is one size() takes, of at
 * most ``limit`` bytes: its payload size; else -1. */
static Py_ssize_t
small_size(SmallRecords *self, const char *p, Py_ssize_t got, Py_ssize_t limit)
{
    if (got < HEADER_SIZE)
        return -1;
    header h = read_header((const unsigned char *)p);
    return h.word == self->pickle_word && !h.param && h.stored == h.raw
                   && h.stored <= self->max_size && (Py_ssize_t)h.stored <= limit
                   && valid_header(p, h)
               ? (Py_ssize_t)h.stored
               : -1;
}

static PyObject *
SmallRecords_size(SmallRecords *self, PyObject *data)
{
    if (!PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) != HEADER_SIZE)
        return PyLong_FromLong(-1); /* a file's read() may give another type */
    return PyLong_FromSsize_t(
        small_size(self, PyBytes_AS_STRING(data), HEADER_SIZE, PY_SSIZE_T_MAX));
}

/* The record whose PICKLE header is ``h``, if the ``n`` payload bytes and
 * the 32 bytes after them at ``p`` (alive through the call) are its payload,
 * of the right check, and a valid RECORD_END for it, and the pickle passes
 * the scan as plain data: its ``loads``. Ellipsis if all that holds but the
 * pickle is not plain; NotImplemented if anything else is wrong. */
static PyObject *
load_record(SmallRecords *self, header h, const char *p, Py_ssize_t n, int strict)
{
    header end = read_header((const unsigned char *)p + n);
    if (end.word != self->end_word || end.param || end.stored || end.raw != h.stored
        || end.payload_check || !valid_header(p + n, end))
        Py_RETURN_NOTIMPLEMENTED;
    /* A view, not a copy: neither the check nor the unpickler keeps it. */
    PyObject *chunk = PyMemoryView_FromMemory((char *)p, n, PyBUF_READ);
    if (chunk == NULL)
        return NULL;
    PyObject *result = NULL;
    int64_t check = checksum(self, chunk);
    if (check >= 0) {
        int plain = check == h.payload_check ? scan_whole((const unsigned char *)p, n, strict, 1) : -1;
        if (plain < 0) { /* the general path says what is wrong */
            PyErr_Clear();
            result = Py_NewRef(Py_NotImplemented);
        }
        else
            result = plain == 1 ? PyObject_CallOneArg(self->loads, chunk)
                                : Py_NewRef(Py_Ellipsis); /* not plain: its own reader */
    }
    Py_DECREF(chunk);
    return result;
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
    const char *p = PyBytes_AS_STRING(args[0]);
    header h = read_header((const unsigned char *)p);
    Py_ssize_t n = small_size(self, p, HEADER_SIZE, PY_SSIZE_T_MAX);
    if (n < 0 || PyBytes_GET_SIZE(args[1]) != n + HEADER_SIZE)
        Py_RETURN_NOTIMPLEMENTED;
    return load_record(self, h, PyBytes_AS_STRING(args[1]), n, strict);
}

/* -- the socket adapter's read of a small record ---------------------------
 *
 * Over a socket a small message costs its two recv calls and little else,
 * so the Python around them (the reads, the position, the calls of size()
 * and load()) shows; here a small record's reading, checks and loads are
 * one C call. What it does not take goes on the general path. */

static PyObject *fileno_name, *position_name; /* interned */

int
small_records_init(void)
{
    if (fileno_name == NULL)
        fileno_name = PyUnicode_InternFromString("fileno");
    if (position_name == NULL)
        position_name = PyUnicode_InternFromString("position");
    return fileno_name == NULL || position_name == NULL ? -1 : 0;
}

#ifndef MS_WINDOWS
#include <errno.h>
#include <sys/socket.h>

/* One recv of up to ``n`` bytes from ``fd`` into ``buf``: how many came, 0
 * where the peer closed or the socket would block (a timeout is set: the
 * caller's socket.recv then waits as it says), -1 with an error set. */
static Py_ssize_t
recv_once(int fd, char *buf, Py_ssize_t n)
{
    for (;;) {
        ssize_t r;
        Py_BEGIN_ALLOW_THREADS
        r = recv(fd, buf, (size_t)n, 0);
        Py_END_ALLOW_THREADS
        if (r >= 0)
            return r;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) /* a handler raised, as in socket.recv */
            return -1;
    }
}

/* Up to ``n`` bytes into ``buf``: fewer where recv_once stops, and no more
 * than the first recv to reach ``sure`` brought, so that a reader never
 * waits for bytes past ``sure`` that a stream need not have. How many came,
 * or -1 with an error set. */
static Py_ssize_t
recv_upto(int fd, char *buf, Py_ssize_t n, Py_ssize_t sure)
{
    Py_ssize_t got = 0, r;
    while (got < sure) {
        if ((r = recv_once(fd, buf + got, n - got)) <= 0)
            return r < 0 ? -1 : got;
        got += r;
    }
    return got;
}
#endif

/* The socket ``sock``'s descriptor, or -1 where it has none (closed) or
 * reads are not done here (Windows). -2 with an error set. */
static int
socket_fd(PyObject *sock)
{
    PyObject *fileno = PyObject_CallMethodNoArgs(sock, fileno_name);
    if (fileno == NULL)
        return -2;
    long fd = PyLong_AsLong(fileno);
    Py_DECREF(fileno);
    if (fd == -1 && PyErr_Occurred())
        return -2;
#ifdef MS_WINDOWS
    fd = -1;
#endif
    return fd >= 0 && fd <= INT_MAX ? (int)fd : -1;
}

/* A new bytes of up to ``want`` bytes read from ``fd``, as recv_upto reads
 * them (``sure``: as it takes it). */
static PyObject *
recv_bytes(int fd, Py_ssize_t want, Py_ssize_t sure)
{
    PyObject *data = PyBytes_FromStringAndSize(NULL, want);
    if (data == NULL)
        return NULL;
    Py_ssize_t got = 0;
#ifndef MS_WINDOWS
    got = recv_upto(fd, PyBytes_AS_STRING(data), want, sure);
#endif
    if (got < 0 || (got < want && _PyBytes_Resize(&data, got) < 0)) {
        Py_XDECREF(data);
        return NULL;
    }
    return data;
}

/* Read on into ``*data`` (all of it read so far) up to ``want`` bytes;
 * fewer where recv_upto stops. -1 with an error set. */
static int
recv_more(int fd, PyObject **data, Py_ssize_t want)
{
    Py_ssize_t have = PyBytes_GET_SIZE(*data);
    if (_PyBytes_Resize(data, want) < 0)
        return -1;
    Py_ssize_t got = 0;
#ifndef MS_WINDOWS
    got = recv_upto(fd, PyBytes_AS_STRING(*data) + have, want - have, want - have);
#endif
    if (got < 0)
        return -1;
    return have + got < want ? _PyBytes_Resize(data, have + got) : 0;
}

static PyObject *
recv_all(int fd, Py_ssize_t want)
{
    return recv_bytes(fd, want, want);
}

/* The arguments of receive_record and receive_stream: the socket first, then
 * (of ``want``) a size limit, strict and the list ``parts`` last. 0, or -1
 * with an error set. */
static int
read_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage,
          Py_ssize_t *limit, int *strict, int *fd)
{
    if (nargs != want || !PyList_CheckExact(args[want - 1])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    *limit = PyLong_AsSsize_t(args[want - 3]);
    if (*limit == -1 && PyErr_Occurred())
        return -1;
    *strict = PyObject_IsTrue(args[want - 2]);
    return *strict < 0 || (*fd = socket_fd(args[0])) == -2 ? -1 : 0;
}

/* ``source.position += n``: the socket source's count of bytes read, for
 * what later errors say. */
static int
advance(PyObject *source, Py_ssize_t n)
{
    PyObject *at = PyObject_GetAttr(source, position_name);
    if (at == NULL)
        return -1;
    PyObject *step = PyLong_FromSsize_t(n);
    PyObject *moved = step == NULL ? NULL : PyNumber_Add(at, step);
    Py_DECREF(at);
    Py_XDECREF(step);
    int failed = moved == NULL ? -1 : PyObject_SetAttr(source, position_name, moved);
    Py_XDECREF(moved);
    return failed;
}

/* Unpickler.load of the next record of an open stream from a plain socket:
 * the frame header in one recv and, if it is one size() takes, of at most
 * ``limit`` bytes, the payload and RECORD_END in another; the checks and
 * loads between them. ``source.position`` counts the bytes read. Else
 * NotImplemented (or Ellipsis: load_record's "checked but not plain") with
 * the bytes read appended to ``parts``, cut short where the peer closed or
 * the socket would block (a timeout is set: the general path reads on with
 * it). An error of ``loads`` is raised. */
static PyObject *
SmallRecords_receive_record(SmallRecords *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t limit;
    int strict, fd;
    if (read_args(args, nargs, 5,
                  "receive_record() takes a socket, its source, a size limit, strict, a list",
                  &limit, &strict, &fd) < 0)
        return NULL;
    PyObject *parts = args[4], *result = NULL, *rest = NULL;
    PyObject *first = fd >= 0 ? recv_all(fd, HEADER_SIZE) : PyBytes_FromString("");
    if (first == NULL)
        return NULL;
    const char *p = PyBytes_AS_STRING(first);
    Py_ssize_t n = small_size(self, p, PyBytes_GET_SIZE(first), limit);
    if (n >= 0 && (rest = recv_all(fd, n + HEADER_SIZE)) == NULL)
        goto done;
    if (advance(args[1], PyBytes_GET_SIZE(first) + (rest ? PyBytes_GET_SIZE(rest) : 0)) < 0)
        goto done;
    if (rest != NULL && PyBytes_GET_SIZE(rest) == n + HEADER_SIZE) {
        result = load_record(self, read_header((const unsigned char *)p),
                             PyBytes_AS_STRING(rest), n, strict);
        if (result != Py_Ellipsis && result != Py_NotImplemented)
            goto done; /* the object, or the error of loads */
    }
    if (PyList_Append(parts, first) < 0 || (rest != NULL && PyList_Append(parts, rest) < 0))
        Py_CLEAR(result);
    else if (result == NULL)
        result = Py_NewRef(Py_NotImplemented);
done:
    Py_DECREF(first);
    Py_XDECREF(rest);
    return result;
}

/* sp.load of a one-record stream of one small record, as sp.dump writes it
 * to a socket: the stream header and the first frame header in one recv,
 * the payload, RECORD_END and END in another, the checks and loads between
 * them. Anything else, or a record load_record does not take, returns
 * NotImplemented with the bytes read appended to ``parts``, for the general
 * path to read on from. An error of reading or of ``loads`` is raised. */
static PyObject *
SmallRecords_receive_stream(SmallRecords *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t limit;
    int strict, fd;
    if (read_args(args, nargs, 4, "receive_stream() takes a socket, a size limit, strict, a list",
                  &limit, &strict, &fd) < 0)
        return NULL;
    PyObject *parts = args[3], *result = NULL, *rest = NULL;
    PyObject *first = fd >= 0 ? recv_all(fd, STREAM_HEADER_SIZE + HEADER_SIZE)
                              : PyBytes_FromString("");
    if (first == NULL)
        return NULL;
    const char *p = PyBytes_AS_STRING(first);
    Py_ssize_t got = PyBytes_GET_SIZE(first), n = -1;
    if (got == STREAM_HEADER_SIZE + HEADER_SIZE
        && memcmp(p, self->stream_header, STREAM_HEADER_SIZE) == 0)
        n = small_size(self, p + STREAM_HEADER_SIZE, HEADER_SIZE, limit);
    /* The payload and RECORD_END, and the END too if it came with them (a
     * writer sends all three at once); the END is waited for only once the
     * record has loaded, as the general path reads it. */
    Py_ssize_t record = n + HEADER_SIZE, whole = record + HEADER_SIZE;
    if (n >= 0 && (rest = recv_bytes(fd, whole, record)) == NULL)
        goto done;
    if (rest != NULL && PyBytes_GET_SIZE(rest) >= record) {
        header h = read_header((const unsigned char *)p + STREAM_HEADER_SIZE);
        result = load_record(self, h, PyBytes_AS_STRING(rest), n, strict);
        if (result == NULL) /* the error of loads */
            goto done;
        if (result != Py_Ellipsis && result != Py_NotImplemented) {
            if (PyBytes_GET_SIZE(rest) < whole && recv_more(fd, &rest, whole) < 0)
                Py_CLEAR(result);
            if (result == NULL || (PyBytes_GET_SIZE(rest) == whole
                                   && memcmp(PyBytes_AS_STRING(rest) + record,
                                             self->stream_end, HEADER_SIZE) == 0))
                goto done;
            /* not the END a writer puts after one record: the general way
             * loads the record again and says what follows it */
        }
        Py_CLEAR(result);
    }
    if (PyList_Append(parts, first) == 0 && (rest == NULL || PyList_Append(parts, rest) == 0))
        result = Py_NewRef(Py_NotImplemented);
done:
    Py_DECREF(first);
    Py_XDECREF(rest);
    return result;
}

static void
put_le(unsigned char *p, uint64_t x, int n)
{
    for (int i = 0; i < n; i++, x >>= 8)
        p[i] = (unsigned char)x;
}

/* Write the header ``h`` at ``p``, its own check last. */
static void
write_header(unsigned char *p, header h)
{
    put_le(p, h.word, 4);
    put_le(p + 4, h.param, 4);
    put_le(p + 8, h.stored, 8);
    put_le(p + 16, h.raw, 8);
    put_le(p + 24, h.payload_check, 4);
    put_le(p + HEADER_CHECKED, header_check(p), 4);
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
        write_header(p, first);
        write_header(p + HEADER_SIZE + n, end);
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
    const char *stream_header, *stream_end;
    Py_ssize_t header_len, end_len;
    static char *keywords[] = {"pickle_word", "end_word", "max_size", "checksum", "loads",
                               "stream_header", "stream_end", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "IIKOOy#y#", keywords, &pickle_word,
                                     &end_word, &max_size, &checksum, &loads, &stream_header,
                                     &header_len, &stream_end, &end_len))
        return NULL;
    if (header_len != STREAM_HEADER_SIZE || end_len != HEADER_SIZE) {
        PyErr_SetString(PyExc_ValueError, "a stream header is 16 bytes, an END frame 32");
        return NULL;
    }
    SmallRecords *self = (SmallRecords *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    memcpy(self->stream_header, stream_header, STREAM_HEADER_SIZE);
    memcpy(self->stream_end, stream_end, HEADER_SIZE);
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
    PyTypeObject *type = Py_TYPE(self);
    Py_XDECREF(self->checksum);
    Py_XDECREF(self->loads);
    type->tp_free((PyObject *)self);
    Py_DECREF(type); /* a heap type: each instance holds a reference to it */
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
    {"receive_record", (PyCFunction)(void (*)(void))SmallRecords_receive_record,
     METH_FASTCALL,
     "receive_record(sock, source, limit, strict, parts, /)\n--\n\n"
     "The next record's object, read from the connected socket ``sock`` if\n"
     "it is one load() loads, of at most ``limit`` bytes; ``source.position``\n"
     "counts the bytes read. Else NotImplemented, or Ellipsis where load()\n"
     "would return it, with the bytes read appended to ``parts`` (cut short\n"
     "where the peer closed or the socket would block) for the general path\n"
     "to read on from. Nothing is read on Windows."},
    {"receive_stream", (PyCFunction)(void (*)(void))SmallRecords_receive_stream,
     METH_FASTCALL,
     "receive_stream(sock, limit, strict, parts, /)\n--\n\n"
     "The object of a one-record stream, as dump writes it, read from the\n"
     "socket ``sock`` if its record is one load() loads, of at most\n"
     "``limit`` bytes. Else NotImplemented, with the bytes read appended to\n"
     "``parts`` for the general path to read on from."},
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

PyType_Spec SmallRecords_spec = {
    .name = "streampickle._pickle_scan.SmallRecords",
    .basicsize = sizeof(SmallRecords),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = SmallRecords_slots,
};
