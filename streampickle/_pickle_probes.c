/* CPython's dict and set tables, as _pickle_probes.h says. */
#include "_pickle_probes.h"

#define MIN_LOG2 3 /* PyDict_LOG_MINSIZE, PySet_MINSIZE */
/* A slot: 1 + its entry, and the low 32 bits of the entry's hash above
 * (a path reads an entry only where they match: a miss fewer a slot). */
#define SLOT(hash, entry) ((uint64_t)(uint32_t)(hash) << 32 | (entry))
#define SLOT_ENTRY(slot) ((uint32_t)(slot))
#define PERTURB_SHIFT 5
#define LINEAR_PROBES 9
#define SET_DOUBLES 50000 /* a set past this many keys grows to 2x, not 4x */

/* What passing a slot of a table of ``mask + 1`` slots costs, in probes:
 * where the tables a record fills outgrow the caches (that one, or all of
 * them: ``c->others``' slots), each is a miss or two (36th review: paths
 * spread over a dict of 2**22 slots, 37 ns a slot, and as much again in
 * the model; 37th: sixty dicts of 2**16 filled in turn, 22 ns, against
 * ~4-10 ns where they fit). */
static inline Py_ssize_t
slot_cost(const probe_count *c, size_t mask)
{
    size_t slots = mask + 1 + (size_t)c->others;
    return slots <= ((size_t)1 << 16) ? 1 : slots <= ((size_t)1 << 19) ? 2 : 4;
}

/* The next slot of a path (both tables, past their linear runs). */
static inline size_t
next_slot(size_t i, uint64_t *perturb, size_t mask)
{
    *perturb >>= PERTURB_SHIFT;
    return (i * 5 + (size_t)*perturb + 1) & mask;
}

/* The first empty slot on ``hash``'s path (set_insert_clean,
 * build_indices_generic), counting those passed; PAST_LIMIT once they pass
 * the limit (a path may be as long as the table). */
#define PAST_LIMIT SIZE_MAX
static size_t
empty_slot(const uint64_t *slots, size_t mask, uint64_t hash, int is_set, probe_count *c)
{
    uint64_t perturb = hash;
    size_t i = (size_t)hash & mask;
    for (;;) {
        size_t run = is_set && i + LINEAR_PROBES <= mask ? LINEAR_PROBES : 0;
        for (size_t j = 0; j <= run; j++) {
            if (!slots[i + j])
                return i + j;
            if (!j && (c->passed += slot_cost(c, mask)) > c->limit) /* a set's run: a line or two */
                return PAST_LIMIT;
        }
        i = next_slot(i, &perturb, mask);
    }
}

/* A table of 2**log2 slots, its entries placed again: a dict's in order, a
 * set's in the order of its old slots. 1, 0 past the room or limit, -1. */
static int
resize(probe_table *t, uint8_t log2, probe_count *c, Py_ssize_t *room)
{
    size_t size = (size_t)1 << log2;
    if (log2 > 31 || (room != NULL && (*room -= (Py_ssize_t)(size * sizeof(uint64_t))) < 0))
        return 0;
    uint64_t *slots = PyMem_Calloc(size, sizeof(uint64_t));
    if (slots == NULL)
        return PyErr_NoMemory(), -1;
    size_t old = (size_t)probe_size(t);
    for (size_t k = 0; k < (t->is_set ? old : (size_t)t->used); k++) {
        uint32_t entry = t->is_set ? SLOT_ENTRY(t->slots[k]) : (uint32_t)k + 1;
        uint64_t hash = entry ? t->entries[entry - 1].hash : 0;
        size_t at = entry ? empty_slot(slots, size - 1, hash, t->is_set, c) : 0;
        if (at == PAST_LIMIT)
            return PyMem_Free(slots), 0;
        if (entry)
            slots[at] = SLOT(hash, entry);
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->log2 = log2;
    t->usable = (Py_ssize_t)(size * 2 / 3) - t->used; /* USABLE_FRACTION */
    return 1;
}

/* The least power of two (log2, at least MIN_LOG2) of ``least`` or more:
 * calculate_log2_keysize; a set's "more than", asked with least + 1. */
static uint8_t
log2_of(Py_ssize_t least)
{
    uint8_t log2 = MIN_LOG2;
    while (((Py_ssize_t)1 << log2) < least)
        log2++;
    return log2;
}

/* ``key`` on its path, or the empty slot ending it (*at), passing what
 * ``empty_slot`` does but stopping at an equal key: 1 found, 0 not, -1
 * (error set), 2 past the limit. */
static int
find(const probe_table *t, uint64_t hash, uintptr_t key, same_key_fn same, void *context,
     size_t *at, probe_count *c)
{
    size_t mask = ((size_t)1 << t->log2) - 1, i = (size_t)hash & mask;
    uint64_t perturb = hash;
    for (;;) {
        size_t run = t->is_set && i + LINEAR_PROBES <= mask ? LINEAR_PROBES : 0;
        for (size_t j = 0; j <= run; j++) {
            uint64_t slot = t->slots[i + j];
            if (!slot)
                return *at = i + j, 0;
            const probe_entry *e = &t->entries[SLOT_ENTRY(slot) - 1];
            if (slot >> 32 == (uint32_t)hash && e->hash == hash) { /* (its entry read only so) */
                int equal = e->key == key ? 1 : same(context, e->key, key);
                if (equal)
                    return equal;
            }
            if (!j && (c->passed += slot_cost(c, mask)) > c->limit)
                return 2;
        }
        i = next_slot(i, &perturb, mask);
    }
}

int
probe_add(probe_table *t, uint64_t hash, uintptr_t key, same_key_fn same, void *context,
          probe_count *c, Py_ssize_t *room)
{
    size_t at = 0;
    int got, grew = !t->log2;
    if (grew) /* the first key: an empty table of 8 */
        got = resize(t, MIN_LOG2, c, room);
    else if ((got = find(t, hash, key, same, context, &at, c)) != 0)
        return got == 1 ? 2 : got < 0 ? -1 : 0;
    else
        got = 1;
    if (got <= 0)
        return got;
    if (t->used == t->cap) {
        Py_ssize_t more = t->cap ? t->cap : 8;
        if (room != NULL && (*room -= more * (Py_ssize_t)sizeof(probe_entry)) < 0)
            return 0;
        size_t bytes = (size_t)(t->cap + more) * sizeof(probe_entry);
        probe_entry *grown = PyMem_Realloc(t->entries, bytes);
        if (grown == NULL)
            return PyErr_NoMemory(), -1;
        t->entries = grown;
        t->cap += more;
    }
    t->entries[t->used] = (probe_entry){hash, key};
    if (!t->is_set && t->usable <= 0) { /* a dict grows before it places the key */
        if ((got = resize(t, log2_of(t->used * 3), c, room)) <= 0)
            return got;
        grew = 1;
    }
    size_t mask = ((size_t)1 << t->log2) - 1;
    if (grew && (at = empty_slot(t->slots, mask, hash, t->is_set, c)) == PAST_LIMIT)
        return 0; /* (its path in the new table) */
    t->slots[at] = SLOT(hash, (uint32_t)++t->used);
    t->usable--;
    if (t->is_set && (size_t)t->used * 5 >= mask * 3) /* fill * 5 >= mask * 3 */
        return resize(t, log2_of((t->used > SET_DOUBLES ? t->used * 2 : t->used * 4) + 1), c,
                      room);
    return 1;
}

void
probe_free(probe_table *t)
{
    PyMem_Free(t->slots);
    PyMem_Free(t->entries);
    *t = (probe_table){.is_set = t->is_set};
}

/* -- the counting unpickler's tables (safe_budget.ProbedTables) ---------- */

typedef struct {
    PyObject_HEAD
    probe_table table; /* its keys: objects it holds */
} ProbeTable;

static int
same_object(void *Py_UNUSED(context), uintptr_t a, uintptr_t b)
{
    return PyObject_RichCompareBool((PyObject *)a, (PyObject *)b, Py_EQ);
}

static PyObject *
ProbeTable_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    int is_set = 0;
    static char *keywords[] = {"is_set", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "p", keywords, &is_set))
        return NULL;
    ProbeTable *self = (ProbeTable *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->table.is_set = (uint8_t)is_set;
    return (PyObject *)self;
}

static void
ProbeTable_dealloc(ProbeTable *self)
{
    PyTypeObject *type = Py_TYPE(self);
    for (Py_ssize_t i = 0; i < self->table.used; i++)
        Py_DECREF((PyObject *)self->table.entries[i].key);
    probe_free(&self->table);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

/* Keys whose hashes no pickle knows (str, bytes: keyed by a secret) are
 * left out, as the count in C leaves them. */
static inline int
left_out(PyObject *key)
{
    return PyUnicode_CheckExact(key) || PyBytes_CheckExact(key);
}

/* How many of ``keys`` a table places: -1 with an error set. */
static Py_ssize_t
placed_in(PyObject *keys)
{
    PyObject *items = PySequence_Fast(keys, "keys must be a sequence");
    if (items == NULL)
        return -1;
    Py_ssize_t placed = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items); i++)
        placed += !left_out(PySequence_Fast_GET_ITEM(items, i));
    Py_DECREF(items);
    return placed;
}

/* Add ``keys`` to the table, counting in ``c``, stopping past its limit:
 * 0, or -1 with an error set. */
static int
added(ProbeTable *self, PyObject *keys, probe_count *c)
{
    PyObject *items = PySequence_Fast(keys, "keys must be a sequence");
    if (items == NULL)
        return -1;
    int got = 1;
    for (Py_ssize_t i = 0; got > 0 && i < PySequence_Fast_GET_SIZE(items); i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(items, i);
        if (left_out(key))
            continue;
        Py_hash_t hash = PyObject_Hash(key);
        got = hash == -1 ? -1
                         : probe_add(&self->table, (uint64_t)hash, (uintptr_t)key, same_object,
                                     NULL, c, NULL);
        if (got == 1)
            Py_INCREF(key);
    }
    Py_DECREF(items);
    return got < 0 ? -1 : 0;
}

static PyObject *
ProbeTable_add(ProbeTable *self, PyObject *args)
{
    PyObject *keys;
    probe_count c = {.limit = PY_SSIZE_T_MAX};
    if (!PyArg_ParseTuple(args, "O|nn", &keys, &c.limit, &c.others))
        return NULL;
    return added(self, keys, &c) < 0 ? NULL : PyLong_FromSsize_t(c.passed);
}

/* Copy ``src``'s table into ``t``, empty: -1 with an error set, or 0. */
static int
copied(probe_table *t, const probe_table *src)
{
    size_t size = (size_t)probe_size(src);
    t->slots = PyMem_Malloc(size * sizeof(uint64_t));
    t->entries = PyMem_Malloc((size_t)(src->used ? src->used : 1) * sizeof(probe_entry));
    if (t->slots == NULL || t->entries == NULL)
        return probe_free(t), PyErr_NoMemory(), -1;
    memcpy(t->slots, src->slots, size * sizeof(uint64_t));
    memcpy(t->entries, src->entries, (size_t)src->used * sizeof(probe_entry));
    t->used = t->cap = src->used;
    t->usable = src->usable;
    t->log2 = src->log2;
    for (Py_ssize_t i = 0; i < t->used; i++)
        Py_INCREF((PyObject *)t->entries[i].key);
    return 0;
}

/* A new set, frozenset or dict of another's keys (set(d), dict(d)): one
 * resize first to what they need (set_update_internal, set_merge,
 * dict_merge), or the other's table copied where CPython copies it. */
static PyObject *
ProbeTable_merge(ProbeTable *self, PyObject *args)
{
    PyObject *keys, *source;
    probe_count c = {.limit = PY_SSIZE_T_MAX};
    if (!PyArg_ParseTuple(args, "OO|nn", &keys, &source, &c.limit, &c.others))
        return NULL;
    probe_table *t = &self->table;
    const probe_table *src = Py_IS_TYPE(source, Py_TYPE(self)) ? &((ProbeTable *)source)->table
                                                                 : NULL;
    if (t->used) {
        PyErr_SetString(PyExc_ValueError, "merge() into a new table only");
        return NULL;
    }
    Py_ssize_t n = src != NULL ? src->used : placed_in(keys);
    if (n <= 0)
        return n < 0 ? NULL : PyLong_FromLong(0);
    if (src != NULL && !t->is_set && !src->is_set
        && (src->log2 == MIN_LOG2 || ((Py_ssize_t)1 << src->log2) / 3 < n)) /* cloned */
        return copied(t, src) < 0 ? NULL : PyLong_FromLong(0);
    if ((t->is_set ? n * 5 >= 7 * 3 : 1) /* (an empty table: nothing passed) */
        && resize(t, t->is_set ? log2_of(2 * n + 1) : log2_of((n * 3 + 1) / 2), &c, NULL) <= 0)
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    if (src != NULL && t->is_set && src->is_set && (t->log2 ? t->log2 : MIN_LOG2) == src->log2) {
        probe_free(t); /* (it keeps is_set) */
        return copied(t, src) < 0 ? NULL : PyLong_FromLong(0);
    }
    return added(self, keys, &c) < 0 ? NULL : PyLong_FromSsize_t(c.passed);
}

static Py_ssize_t
ProbeTable_len(ProbeTable *self)
{
    return self->table.used;
}

static PyObject *
ProbeTable_get_size(ProbeTable *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(probe_size(&self->table));
}

static PyGetSetDef ProbeTable_getset[] = {
    {"size", (getter)ProbeTable_get_size, NULL, "Its slots (0: no table yet).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
ProbeTable_slots(ProbeTable *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t size = probe_size(&self->table);
    PyObject *slots = PyList_New(size);
    for (Py_ssize_t i = 0; slots != NULL && i < size; i++) {
        PyObject *entry = PyLong_FromLong((long)SLOT_ENTRY(self->table.slots[i]) - 1);
        if (entry == NULL)
            Py_CLEAR(slots);
        else
            PyList_SET_ITEM(slots, i, entry);
    }
    return slots;
}

static PyMethodDef ProbeTable_methods[] = {
    {"add", (PyCFunction)ProbeTable_add, METH_VARARGS,
     "add(keys, limit=sys.maxsize, others=0, /)\n--\n\n"
     "Add the keys, in order, as CPython adds them to a dict or set; the\n"
     "occupied slots they passed (and the keys already in passed again as\n"
     "the table grew), each weighed by the slots of this table and\n"
     "``others`` (see slot_cost), stopping once past ``limit``. Strings and\n"
     "bytes are left out."},
    {"merge", (PyCFunction)ProbeTable_merge, METH_VARARGS,
     "merge(keys, source, limit=sys.maxsize, others=0, /)\n--\n\n"
     "Into this new table, the keys of another container (its ProbeTable:\n"
     "``source``, else None), as CPython makes a set, frozenset or dict of\n"
     "it: the slots passed, as add's."},
    {"slots", (PyCFunction)ProbeTable_slots, METH_NOARGS,
     "slots()\n--\n\n"
     "By slot, the index of the key added there (in order added; -1: none)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ProbeTable_slots_[] = {
    {Py_tp_doc, "ProbeTable(is_set)\n--\n\n"
                "Where CPython's dict (or set) table puts keys, and the slots each\n"
                "passes on its way (see streampickle/_pickle_probes.h)."},
    {Py_tp_new, ProbeTable_new},
    {Py_tp_dealloc, ProbeTable_dealloc},
    {Py_tp_methods, ProbeTable_methods},
    {Py_tp_getset, ProbeTable_getset},
    {Py_sq_length, ProbeTable_len},
    {0, NULL},
};

PyType_Spec ProbeTable_spec = {
    .name = "streampickle._pickle_scan.ProbeTable",
    .basicsize = sizeof(ProbeTable),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = ProbeTable_slots_,
};
