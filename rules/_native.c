/* The engine's hot loop in C: list evaluation, the cascade and delta records.
 *
 * rules/compiler.py compiles each list twice: to Python source (the portable path) and
 * to the word code evaluated here. Both read a lead's field view, tags (T), static lists
 * (S), watch (W) and activities (A), and must agree on every value: the property tests
 * run each against the reference interpreter. The Python path's view is three dicts
 * (keys, numbers, dates by field name); this module's is a View, an array of entries
 * (key, key number, number, date) indexed by field number (the fields the tenant's lists
 * read, numbered when the tenant is built), which update_view fills with the same
 * conversions. Without a C compiler this module is
 * simply absent and the Python path runs.
 *
 * Word code (int64 words). A list's program is [slots, node, node, ...]: its watch is
 * the index of the first false node (at most 254), or 255 when all hold. A node is
 * [op, size, operands...], `size` counting every word of the node, children included,
 * so that a short-circuit skips a whole subtree. Operand words that name objects index
 * the tenant's constant tuple; doubles are stored as their bits.
 *
 * Whatever it is handed, the module raises rather than crashes: programs and tables are
 * checked once when they are set (and cannot be set twice), tables are the caller's
 * copies, values are read only when they have the exact types the compiler produces (so
 * reading them runs no Python code), and the watch's size is checked again after
 * anything that could run Python code (a regex, a collection).
 *
 * This file holds what every part uses (the opcodes, the field view's type), includes
 * the parts in rules/native/ by concern (evaluation, the compiled tenant and the
 * cascade, time, candidates, the field view, an event's path, records and ids), and
 * ends with the Tenant type's method table and the module's. One translation unit: the
 * parts share static functions. docs/engine.md says where an operator's pieces go.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>  /* T_OBJECT_EX, READONLY */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    OP_ALL = 1, OP_ANY, OP_NOT, OP_TRUE, OP_FALSE,
    OP_EQ, OP_NEQ, OP_IN, OP_NOT_IN,           /* field, key or frozenset (constants) */
    OP_GT, OP_GTE, OP_LT, OP_LTE,              /* field, bound (double bits) */
    OP_BETWEEN,                                /* field, low, high (double bits) */
    OP_EMPTY, OP_NOT_EMPTY,                    /* field */
    OP_WITHIN, OP_BEFORE,                      /* field, window (microseconds) */
    OP_CONTAINS, OP_NOT_CONTAINS, OP_STARTS, OP_ENDS,  /* field, needle */
    OP_MATCHES,                                /* field, search callable */
    OP_TAG,                                    /* tag */
    OP_LIST,                                   /* list index */
    OP_STATIC,                                 /* static list id */
    OP_ACT,                                    /* kind, ref (-1: any), has_window, window,
                                                  low, high (-1: none) */
    OP_LAST
};

#define ALL_TRUE 255
#define MAX_SLOT 254

static PyObject *EMPTY_STR;   /* "" */
static PyObject *EMPTY_SET;   /* frozenset() */
static PyObject *ADDED, *REMOVED;

/* -- the field view -------------------------------------------------------------------- */

/* What the lists read of a lead's fields, one entry per field the tenant's lists read (its
 * field number): the comparison key (a str, NULL when the field is empty), the number (NaN
 * when it is not numeric) and the date (NO_DATE when it is not a date). Made by
 * Tenant.view() for that tenant's field numbers. */
#define NO_DATE INT64_MIN

typedef struct {
    PyObject *key;
    int32_t kid;       /* the key's number among the tenant's eq/in constants: 0 for an
                          empty field, -1 for a key no constant equals */
    double num;
    int64_t date;
} Field;               /* one field's entry, together: a predicate reads one cache line */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    Field *f;
} ViewObject;

static void
View_dealloc(ViewObject *self)
{
    for (Py_ssize_t i = 0; i < self->n; i++)
        Py_XDECREF(self->f[i].key);
    PyMem_Free(self->f);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ViewType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rules._native.View",
    .tp_basicsize = sizeof(ViewObject),
    .tp_dealloc = (destructor)View_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A lead's field view for one tenant's lists (Tenant.view() makes one)",
};

static ViewObject *
view_new(Py_ssize_t n)
{
    ViewObject *view = PyObject_New(ViewObject, &ViewType);
    if (view == NULL)
        return NULL;
    view->n = n;
    view->f = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Field));
    if (view->f == NULL) {
        view->n = 0;
        Py_DECREF(view);
        return (ViewObject *)PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        view->f[i].num = NAN;
        view->f[i].date = NO_DATE;
    }
    return view;
}

/* The module's parts, by concern (each says what it holds). */
#include "native/eval.c"
#include "native/tenant.c"
#include "native/time.c"
#include "native/candidates.c"
#include "native/view.c"
#include "native/event.c"
#include "native/ids.c"

static PyMethodDef Tenant_methods[] = {
    {"set_activity", (PyCFunction)Tenant_set_activity, METH_VARARGS,
     "set_activity(groups): the activity predicates, grouped by what they count"},
    {"activity_candidates", (PyCFunction)(void (*)(void))Tenant_activity_candidates,
     METH_FASTCALL, "activity_candidates(A, activities, now) -> (join, leave)"},
    {"set_index", (PyCFunction)Tenant_set_index, METH_VARARGS,
     "set_index(eq, empty, strings, num_all, thresholds, dates): the predicate indexes"},
    {"field_candidates", (PyCFunction)(void (*)(void))Tenant_field_candidates, METH_FASTCALL,
     "field_candidates(V, old_fields, now, W=None) -> (join, leave)"},
    {"set_fields", (PyCFunction)Tenant_set_fields, METH_VARARGS,
     "set_fields(numeric, dates, canon, to_number, to_date_us): what update_view needs"},
    {"update_view", (PyCFunction)(void (*)(void))Tenant_update_view, METH_FASTCALL,
     "update_view(V, values, changed) -> {field: old (key, number, date)}"},
    {"on_change", (PyCFunction)(void (*)(void))Tenant_on_change, METH_FASTCALL,
     "on_change(V, T, S, A, W, values, changed, activities, now, members, tenant, lead, "
     "when, cause, seq, Delta) -> (deltas, seq)"},
    {"on_event", (PyCFunction)(void (*)(void))Tenant_on_event, METH_FASTCALL,
     "on_event(state, event, owner, version, seen_max, Delta, policies) -> deltas; None "
     "when the event needs LeadProcessor.on_event's general path, False when a timer is "
     "due first"},
    {"flipping", (PyCFunction)(void (*)(void))Tenant_flipping, METH_FASTCALL,
     "flipping(V, A, moment) -> (join, leave) of the time predicates flipping at moment"},
    {"view", (PyCFunction)(void (*)(void))Tenant_view, METH_FASTCALL,
     "view(values=None) -> a field view for this tenant's lists, empty or holding values"},
    {"set_entry", (PyCFunction)(void (*)(void))Tenant_set_entry, METH_FASTCALL,
     "set_entry(V, field, key, number, date): one field of a view, as given"},
    {"entries", (PyCFunction)Tenant_entries, METH_O,
     "entries(V) -> {field: (key, number, date)} of the fields that are not empty"},
    {"set_time", (PyCFunction)Tenant_set_time, METH_VARARGS,
     "set_time(dates, timed): the tables next_flip reads"},
    {"next_flip", (PyCFunction)(void (*)(void))Tenant_next_flip, METH_FASTCALL,
     "next_flip(V, A, now) -> the earliest moment a time predicate changes, or None"},
    {"evaluate_all", (PyCFunction)(void (*)(void))Tenant_evaluate_all, METH_FASTCALL,
     "evaluate_all(V, T, S, A, W, now) -> set of list ids"},
    {"evaluate_list", (PyCFunction)(void (*)(void))Tenant_evaluate_list, METH_FASTCALL,
     "evaluate_list(V, T, S, A, W, i, now) -> list i's watch"},
    {"evaluate_dirty", (PyCFunction)(void (*)(void))Tenant_evaluate_dirty, METH_FASTCALL,
     "evaluate_dirty(V, T, S, A, W, join, leave, both, now) -> deltas"},
    {NULL}
};

static PyTypeObject TenantType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rules._native.Tenant",
    .tp_basicsize = sizeof(TenantObject),
    .tp_dealloc = (destructor)Tenant_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One tenant's lists as word code, with the index of list references.",
    .tp_methods = Tenant_methods,
    .tp_new = Tenant_new,
};


static PyMethodDef module_methods[] = {
    {"merge_fields", (PyCFunction)(void (*)(void))native_merge_fields, METH_FASTCALL,
     "merge_fields(values, versions, fields, version, changed): an upsert's field merge"},
    {"record", (PyCFunction)(void (*)(void))native_record, METH_FASTCALL,
     "record(found, members, tenant, lead, when, cause, seq, salt, Delta) -> (deltas, seq)"},
    {"delta_id", (PyCFunction)(void (*)(void))native_delta_id, METH_FASTCALL,
     "delta_id(tenant, lead, list_id, action, cause, salt) -> the id make_delta gives"},
    {"regex_memo", native_regex_memo, METH_NOARGS,
     "regex_memo() -> (texts held, their bytes) of the regex results remembered"},
    {NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "rules._native",
    "The engine's evaluation loop and delta records in C (see rules/compiler.py).", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&TenantType) < 0 || PyType_Ready(&ViewType) < 0)
        return NULL;
    EMPTY_STR = PyUnicode_FromString("");
    EMPTY_SET = PyFrozenSet_New(NULL);
    ADDED = PyUnicode_InternFromString("added");
    REMOVED = PyUnicode_InternFromString("removed");
    UPSERTED = PyUnicode_InternFromString("lead_upserted");
    ACTIVITY = PyUnicode_InternFromString("activity");
    if (EMPTY_STR == NULL || EMPTY_SET == NULL || ADDED == NULL || REMOVED == NULL ||
        UPSERTED == NULL || ACTIVITY == NULL)
        return NULL;
    for (int k = 0; k < ST_COUNT; k++)
        if ((STATE_ATTRS[k] = PyUnicode_InternFromString(STATE_NAMES[k])) == NULL)
            return NULL;
    const char *sha = "c";
#ifdef HAVE_SHA_NI_PATH
    if (cpu_has_sha() && getenv("DYNLISTS_NO_SHA_NI") == NULL) {
        sha256_block = sha256_block_ni;
        sha = "sha-ni";
    }
#endif
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    Py_INCREF(&TenantType);
    if (PyModule_AddObject(module, "Tenant", (PyObject *)&TenantType) < 0 ||
        PyModule_AddIntConstant(module, "OP_LAST", OP_LAST) < 0 ||
        PyModule_AddStringConstant(module, "SHA256", sha) < 0) {
        Py_DECREF(&TenantType);
        Py_DECREF(module);
        return NULL;
    }
#define OPCODE(name) if (PyModule_AddIntConstant(module, #name, name) < 0) goto fail
    OPCODE(OP_ALL); OPCODE(OP_ANY); OPCODE(OP_NOT); OPCODE(OP_TRUE); OPCODE(OP_FALSE);
    OPCODE(OP_EQ); OPCODE(OP_NEQ); OPCODE(OP_IN); OPCODE(OP_NOT_IN);
    OPCODE(OP_GT); OPCODE(OP_GTE); OPCODE(OP_LT); OPCODE(OP_LTE); OPCODE(OP_BETWEEN);
    OPCODE(OP_EMPTY); OPCODE(OP_NOT_EMPTY); OPCODE(OP_WITHIN); OPCODE(OP_BEFORE);
    OPCODE(OP_CONTAINS); OPCODE(OP_NOT_CONTAINS); OPCODE(OP_STARTS); OPCODE(OP_ENDS);
    OPCODE(OP_MATCHES); OPCODE(OP_TAG); OPCODE(OP_LIST); OPCODE(OP_STATIC); OPCODE(OP_ACT);
#undef OPCODE
    if (PyModule_AddIntConstant(module, "REGEX_MEMO_BYTES", (long)MEMO_BYTES) < 0 ||
        PyModule_AddIntConstant(module, "REGEX_MEMO_TEXT_MAX", (long)MEMO_TEXT_MAX) < 0)
        goto fail;
    return module;
fail:
    Py_DECREF(module);
    return NULL;
}
