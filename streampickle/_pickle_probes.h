/* Where CPython's dict and set tables put keys, and how many occupied slots
 * each insert passes on its way (probes), for safe mode.
 *
 * Keys of distinct hashes make a load slow too when their probe paths meet:
 * ints filling every fourth slot of a dict, then ints whose perturbed paths
 * stay in those slots, each insert passing thousands (32nd review: a dict of
 * 82,768 plain ints, 464 KB, 4.8 s; 1 MB, 18 s, as with pickle.loads). No
 * count of equal hashes sees it; this model of the tables does: a table is
 * 8 slots to start, a dict's keys probe slot i = hash & mask, then
 * i = 5i + perturb + 1 with perturb = hash, shifted right 5 bits each step
 * (Objects/dictobject.c), a set's the same but 10 slots at a time while
 * they lie within the table (LINEAR_PROBES, Objects/setobject.c); a dict
 * grows to the power of two at least 3 times its keys once they fill 2/3
 * of it, a set to one past 4 times its keys (2 past 50,000) once they fill
 * 3/5, each placing its keys again (a dict in insertion order, a set in
 * slot order). As in CPython 3.11 to 3.13. A caller may leave out keys
 * whose hashes are secret (strings): a table of fewer keys is smaller and
 * fuller, and no pickle can aim the others.
 */
#ifndef STREAMPICKLE_PICKLE_PROBES_H
#define STREAMPICKLE_PICKLE_PROBES_H
#include "_pickle_scan.h"

typedef struct {
    uint64_t hash;
    uintptr_t key; /* the caller's: keys of one hash told apart by ``same`` */
} probe_entry;

typedef struct {
    uint64_t *slots;       /* 2**log2 of them: 0 empty, else 1 + an entry (and its hash) */
    probe_entry *entries;  /* a dict's in insertion order */
    Py_ssize_t used, cap;  /* entries, and room for them */
    Py_ssize_t usable;     /* a dict's: entries it takes before it grows */
    uint8_t log2, is_set;  /* log2 0: no table yet */
} probe_table;

/* Its slots (0: no table yet). */
static inline Py_ssize_t
probe_size(const probe_table *t)
{
    return t->log2 ? (Py_ssize_t)1 << t->log2 : 0;
}

/* Whether two keys of one hash are one: 1, 0, or -1 with an error set. */
typedef int (*same_key_fn)(void *context, uintptr_t a, uintptr_t b);

/* The occupied slots passed so far (each weighed by the slots of its table
 * and the record's others: slot_cost), and how many may be: a model passes
 * them too, so it stops
 * past the limit (a path may be as long as the table, and each resize
 * places every key again). */
typedef struct {
    Py_ssize_t passed, limit;
    Py_ssize_t others; /* slots of the other tables the record fills */
} probe_count;

/* Add ``key`` of ``hash`` to ``t`` as CPython would, counting the occupied
 * slots passed (and passed again as the table grows) in ``c`` and the
 * memory taken against ``*room`` (when not NULL): 1 if added, 2 if an
 * equal key was there, 0 past the limit or room (``t`` then fit only to be
 * freed), or -1 with an error set. */
int probe_add(probe_table *t, uint64_t hash, uintptr_t key, same_key_fn same, void *context,
              probe_count *c, Py_ssize_t *room);
void probe_free(probe_table *t);

/* The type the counting unpickler's tables are: ProbeTable(is_set). */
extern PyType_Spec ProbeTable_spec;

#endif
