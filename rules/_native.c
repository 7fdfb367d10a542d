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

/* -- evaluation ------------------------------------------------------------------------ */

typedef struct {
    const ViewObject *V;
    const Py_ssize_t *field_of;  /* constant index -> field number */
    const int32_t *kid_of;       /* constant index -> its number as an eq key */
    int32_t *const *in_kids;     /* constant index -> an in-set's key numbers, sorted */
    const Py_ssize_t *in_len;
    PyObject *T, *S, *A, *W;
    PyObject **consts;
    Py_ssize_t nconsts;
    Py_ssize_t size;   /* lists: the valid range of OP_LIST */
    int64_t now;
} Ctx;

static double
bits_to_double(int64_t word)
{
    double value;
    memcpy(&value, &word, sizeof value);
    return value;
}

/* 1 when obj is an exact int that fits 64 bits (a time), read into *out; 0 when not
 * (no error set). Public API only: the int's layout is the interpreter's business. */
static inline int
small_time(PyObject *obj, int64_t *out)
{
    if (!PyLong_CheckExact(obj))
        return 0;
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow)
        return 0;
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = (int64_t)value;
    return 1;
}

/* A tuple of strs, ints and None can be in no cycle: untracked, the collector need not
 * walk it, nor a dict or list it enters (CPython untracks such tuples itself, but only
 * at their first collection, and a tracked tuple makes an untracked dict tracked again).
 * Leaves any other tuple as it is. */
static void
untrack_atomic(PyObject *tuple)
{
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tuple); k++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, k);
        if (!PyUnicode_CheckExact(item) && !PyLong_CheckExact(item) && item != Py_None)
            return;
    }
    if (PyObject_GC_IsTracked(tuple))
        PyObject_GC_UnTrack(tuple);
}

/* A time stored in a dict (an int), or -1 with an error set when it is not one. */
static inline int
as_time(PyObject *obj, int64_t *out)
{
    if (small_time(obj, out))
        return 0;  /* the common case */
    if (!PyLong_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "a time is an int");
        return -1;
    }
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "time beyond 64 bits");
        return -1;
    }
    if (value == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)value;
    return 0;
}

static int
as_number(PyObject *obj, double *out)
{
    if (!PyFloat_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "a number of the view is a float");
        return -1;
    }
    *out = PyFloat_AS_DOUBLE(obj);
    return 0;
}

/* Whether an activity's ref (a str or None) is `ref` (a str): by identity when both are
 * interned, as the lead state and the compiled lists keep them; -1 on error. */
static inline int
same_ref(PyObject *have, PyObject *ref)
{
    if (have == ref)
        return 1;
    if (have == Py_None)
        return 0;
    if (!PyUnicode_CheckExact(have) || !PyUnicode_CheckExact(ref)) {
        PyErr_SetString(PyExc_TypeError, "an activity ref is text or None");
        return -1;
    }
    if (PyUnicode_CHECK_INTERNED(have) && PyUnicode_CHECK_INTERNED(ref))
        return 0;
    return PyUnicode_Compare(have, ref) == 0 ? 1 : (PyErr_Occurred() ? -1 : 0);
}

/* 0 when `entry` is an activity entry, a (time, id, ref) tuple; -1 with an error. */
static int
activity_shape(PyObject *entry)
{
    if (PyTuple_Check(entry) && PyTuple_GET_SIZE(entry) >= 3)
        return 0;
    PyErr_SetString(PyExc_TypeError, "an activity is a (time, id, ref) tuple");
    return -1;
}

/* The time of an activity entry, checking its shape. */
static int
entry_time(PyObject *entry, int64_t *at)
{
    if (activity_shape(entry) < 0)
        return -1;
    return as_time(PyTuple_GET_ITEM(entry, 0), at);
}

/* Whether an activity entry is on `ref` (any entry when ref is NULL), checking its
 * shape; -1 on error. */
static int
entry_on(PyObject *entry, PyObject *ref)
{
    if (activity_shape(entry) < 0)
        return -1;
    return ref == NULL ? 1 : same_ref(PyTuple_GET_ITEM(entry, 2), ref);
}

/* How many activities of `kind` (on `ref`, unless NULL) count at `now`; -1 on error.
 * Entries are (time, event id, ref) tuples in time order. Mirrors count_activities. */
static Py_ssize_t
count_activities(PyObject *A, PyObject *kind, PyObject *ref, int has_window, int64_t window,
                 int64_t now)
{
    PyObject *entries = PyDict_GetItemWithError(A, kind);
    if (entries == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyList_Check(entries)) {
        PyErr_SetString(PyExc_TypeError, "activities must be lists");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(entries);
    Py_ssize_t count = 0;
    if (!has_window) {
        if (ref == NULL)
            return n;
        for (Py_ssize_t k = 0; k < n; k++) {
            int same = entry_on(PyList_GET_ITEM(entries, k), ref);
            if (same < 0)
                return -1;
            count += same;
        }
        return count;
    }
    int64_t cutoff = now - window;
    if (ref == NULL) {
        /* the first entry later than the cutoff, by bisection */
        Py_ssize_t lo = 0, hi = n;
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            int64_t at;
            if (entry_time(PyList_GET_ITEM(entries, mid), &at) < 0)
                return -1;
            if (cutoff < at)
                hi = mid;
            else
                lo = mid + 1;
        }
        return n - lo;
    }
    for (Py_ssize_t k = n - 1; k >= 0; k--) {
        PyObject *entry = PyList_GET_ITEM(entries, k);
        int64_t at;
        if (entry_time(entry, &at) < 0)
            return -1;
        if (at <= cutoff)
            break;
        int same = entry_on(entry, ref);
        if (same < 0)
            return -1;
        count += same;
    }
    return count;
}

static inline PyObject *
constant(const Ctx *ctx, int64_t index)
{
    return ctx->consts[index];  /* checked when the tenant was built */
}

/* Regex results, remembered: the same texts (titles, domains) come back across leads and
 * evaluations, and a search is the costliest predicate. Direct-mapped on (search, text),
 * holding references to both, so that a hit can never be a reused address.
 * Bounded by bytes as well as by slots: a field holds up to 1 MiB, so 4,096 texts could
 * keep 4 GiB alive. The texts held count against MEMO_BYTES (past it, slots give way in
 * turn round the table), and a text over MEMO_TEXT_MAX is searched every time instead: such
 * texts are rare, and a search over that much text costs more than a lookup saves. */
#define MEMO_SIZE 4096
#define MEMO_BYTES ((size_t)32 << 20)
#define MEMO_TEXT_MAX ((size_t)64 << 10)
typedef struct {
    PyObject *search, *text;
    size_t bytes;  /* what the text counts against MEMO_BYTES */
    int value;
} Memo;
static Memo memo[MEMO_SIZE];
static size_t memo_bytes;  /* of the texts held */
static size_t memo_hand;   /* the next slot to give up for room */

/* About the memory a str takes: its characters (with the terminating one) and header. */
static size_t
text_bytes(PyObject *text)
{
    return ((size_t)PyUnicode_GET_LENGTH(text) + 1) * PyUnicode_KIND(text) +
        sizeof(PyCompactUnicodeObject);
}

/* Empties a slot; its references go last, as releasing them may run code (a search
 * callable's finalizer) that uses the memo. */
static void
memo_drop(Memo *m)
{
    PyObject *search = m->search, *text = m->text;
    memo_bytes -= m->bytes;
    m->search = m->text = NULL;
    m->bytes = 0;
    Py_XDECREF(search);
    Py_XDECREF(text);
}

/* Drops other slots, in turn round the table, until the texts held fit the budget;
 * bounded in steps, since a drop may run code that fills slots again. */
static void
memo_make_room(const Memo *keep)
{
    for (int step = 0; memo_bytes > MEMO_BYTES && step < 2 * MEMO_SIZE; step++) {
        Memo *m = &memo[memo_hand];
        memo_hand = (memo_hand + 1) & (MEMO_SIZE - 1);
        if (m != keep && m->text != NULL)
            memo_drop(m);
    }
}

/* Whether search(text) finds a match; -1 on error. */
static int
regex_search(PyObject *search, PyObject *text)
{
    Memo *m = NULL;
    size_t bytes = 0;
    if (PyUnicode_CheckExact(text) && (bytes = text_bytes(text)) <= MEMO_TEXT_MAX) {
        Py_hash_t hash = PyObject_Hash(text);  /* an exact str: cached, runs no code */
        if (hash == -1)
            return -1;
        size_t slot = ((size_t)hash ^ ((size_t)search >> 4) * (size_t)0x9E3779B97F4A7C15ull)
            & (MEMO_SIZE - 1);
        m = &memo[slot];
        if (m->search == search && (m->text == text ||
                (PyUnicode_GET_LENGTH(m->text) == PyUnicode_GET_LENGTH(text) &&
                 PyUnicode_Compare(m->text, text) == 0)))
            return m->value;
    }
    PyObject *match = PyObject_CallOneArg(search, text);
    if (match == NULL)
        return -1;
    int value = match != Py_None;
    Py_DECREF(match);
    if (m != NULL) {
        /* the search may have run code that filled this slot: read it again */
        PyObject *old_search = m->search, *old_text = m->text;
        Py_INCREF(search);
        Py_INCREF(text);
        memo_bytes = memo_bytes - m->bytes + bytes;
        m->search = search;
        m->text = text;
        m->bytes = bytes;
        m->value = value;
        Py_XDECREF(old_search);
        Py_XDECREF(old_text);
        memo_make_room(m);
    }
    return value;
}

/* regex_memo() -> (texts held, their bytes): for the tests of the memo's bounds */
static PyObject *
native_regex_memo(PyObject *module, PyObject *unused)
{
    Py_ssize_t held = 0;
    for (size_t k = 0; k < MEMO_SIZE; k++)
        held += memo[k].text != NULL;
    return Py_BuildValue("nn", held, (Py_ssize_t)memo_bytes);
}

/* A string operator's value on case-folded text; -1 on error. */
static int
string_check(long op, PyObject *operand, PyObject *text)
{
    if (op == OP_MATCHES)
        return regex_search(operand, text);
    if (op == OP_CONTAINS || op == OP_NOT_CONTAINS) {
        int found = PyUnicode_Contains(text, operand);
        if (found < 0)
            return -1;
        return op == OP_CONTAINS ? found : !found;
    }
    Py_ssize_t found = PyUnicode_Tailmatch(text, operand, 0, PY_SSIZE_T_MAX,
                                           op == OP_STARTS ? -1 : 1);
    return found < 0 ? -1 : (int)found;
}

/* dict.get(key, fallback), borrowed; NULL with an error set when the lookup failed. */
static inline PyObject *
get_or(PyObject *dict, PyObject *key, PyObject *fallback)
{
    PyObject *value = PyDict_GetItemWithError(dict, key);
    if (value == NULL && !PyErr_Occurred())
        value = fallback;
    return value;
}

/* The value of the node at `p`: 1, 0, or -1 with an error set. */
static int
eval_node(const Ctx *ctx, const int64_t *p)
{
    int64_t op = p[0];
    switch (op) {
    case OP_ALL:
    case OP_ANY: {
        const int64_t *child = p + 2, *end = p + p[1];
        while (child < end) {
            int value = eval_node(ctx, child);
            if (value < 0)
                return -1;
            if (op == OP_ALL ? !value : value)
                return value;
            child += child[1];
        }
        return op == OP_ALL;
    }
    case OP_NOT: {
        int value = eval_node(ctx, p + 2);
        return value < 0 ? -1 : !value;
    }
    case OP_TRUE:
        return 1;
    case OP_FALSE:
        return 0;
    case OP_EQ:
    case OP_NEQ:
    case OP_IN:
    case OP_NOT_IN: {
        /* the field's key compared with the constant by their numbers: equal keys have
           the same, a key no constant equals has -1, an empty field (None) 0 */
        int32_t kid = ctx->V->f[ctx->field_of[p[2]]].kid;
        int found;
        if (op == OP_EQ || op == OP_NEQ)
            found = kid == ctx->kid_of[p[3]];
        else {
            const int32_t *kids = ctx->in_kids[p[3]];
            Py_ssize_t lo = 0, hi = ctx->in_len[p[3]];
            while (lo < hi) {
                Py_ssize_t mid = (lo + hi) / 2;
                if (kids[mid] < kid)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            found = kid >= 0 && lo < ctx->in_len[p[3]] && kids[lo] == kid;
        }
        return (op == OP_EQ || op == OP_IN) ? found : !found;
    }
    case OP_GT:
    case OP_GTE:
    case OP_LT:
    case OP_LTE:
    case OP_BETWEEN: {
        /* NaN when the field is not numeric: every comparison with it is false */
        double x = ctx->V->f[ctx->field_of[p[2]]].num;
        double bound = bits_to_double(p[3]);
        switch (op) {
        case OP_GT: return x > bound;
        case OP_GTE: return x >= bound;
        case OP_LT: return x < bound;
        case OP_LTE: return x <= bound;
        default: return bound <= x && x <= bits_to_double(p[4]);
        }
    }
    case OP_EMPTY:
    case OP_NOT_EMPTY: {
        int found = ctx->V->f[ctx->field_of[p[2]]].key != NULL;
        return op == OP_NOT_EMPTY ? found : !found;
    }
    case OP_WITHIN:
    case OP_BEFORE: {
        int64_t date = ctx->V->f[ctx->field_of[p[2]]].date;
        if (date == NO_DATE)
            return 0;
        int64_t window = p[3];
        if (op == OP_WITHIN)
            return ctx->now - window < date && date <= ctx->now;
        return date <= ctx->now - window;
    }
    case OP_CONTAINS:
    case OP_NOT_CONTAINS:
    case OP_STARTS:
    case OP_ENDS:
    case OP_MATCHES: {
        /* the case-folded text, '' when empty */
        PyObject *text = ctx->V->f[ctx->field_of[p[2]]].key;
        if (text == NULL)
            text = EMPTY_STR;
        if (op != OP_MATCHES && !PyUnicode_Check(text)) {
            PyErr_SetString(PyExc_TypeError, "a comparison key is text");
            return -1;
        }
        Py_INCREF(text);  /* a regex runs Python's code */
        int value = string_check((long)op, constant(ctx, p[3]), text);
        Py_DECREF(text);
        return value;
    }
    case OP_TAG:
        return PySet_Contains(ctx->T, constant(ctx, p[2]));
    case OP_STATIC:
        return PySet_Contains(ctx->S, constant(ctx, p[2]));
    case OP_LIST:
        if (p[2] >= PyByteArray_GET_SIZE(ctx->W)) {
            PyErr_SetString(PyExc_RuntimeError, "the watch changed size during evaluation");
            return -1;
        }
        return (unsigned char)PyByteArray_AS_STRING(ctx->W)[p[2]] == ALL_TRUE;
    case OP_ACT: {
        PyObject *ref = p[3] < 0 ? NULL : constant(ctx, p[3]);
        Py_ssize_t count = count_activities(ctx->A, constant(ctx, p[2]), ref, (int)p[4],
                                            p[5], ctx->now);
        if (count < 0)
            return -1;
        if (count < p[6])
            return 0;
        return p[7] < 0 || count <= p[7];
    }
    }
    PyErr_Format(PyExc_SystemError, "unknown op %lld", (long long)op);
    return -1;
}

/* -- the compiled tenant ------------------------------------------------------------- */

static int
compare_int32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

typedef struct {
    PyObject_HEAD
    Py_ssize_t size;       /* number of lists */
    int64_t *code;         /* every list's program, one after the other */
    Py_ssize_t ncode;
    Py_ssize_t *start;     /* where each list's program begins */
    PyObject *consts;      /* tuple */
    PyObject *order;       /* tuple: list ids in dependency order */
    PyObject *rev;         /* tuple: per list, None or the index entry of its users */
    PyObject *dates;       /* for next_flip: ((field, has_within, (windows...)), ...) */
    PyObject *timed;       /* ((kind, ((ref, window, (lows...), (highs...)), ...)), ...) */
    PyObject *index;       /* for field_candidates: the predicate indexes, see set_index */
    PyObject *activity;    /* for activity_candidates: see set_activity */
    PyObject *fields;      /* for update_view: see set_fields */
    Py_ssize_t nfields;    /* the fields the lists read, numbered as they are met */
    Py_ssize_t *field_of;  /* per constant: its field number, -1 when not a field */
    PyObject *field_names; /* tuple: field number -> name */
    PyObject *field_ids;   /* dict: name -> field number */
    Py_ssize_t *date_ids;  /* per entry of `dates` (set_time): its field number or -1 */
    struct TimeTables *time;  /* `dates` and `timed` as C arrays, for next_flip */
    PyObject *key_ids;     /* dict: each eq/in constant key (a str) -> its number, from 1 */
    int32_t *kid_of;       /* per constant: its number as an eq key (None: 0), else -1 */
    int32_t **in_kids;     /* per constant: the sorted numbers of an in-set's keys */
    Py_ssize_t *in_len;
} TenantObject;

/* The number of an eq/in constant key, numbered the first time it is met: None (an empty
 * field) is 0, a str 1 on; -1 for anything else (or on error). */
static int32_t
key_number(TenantObject *t, PyObject *key)
{
    if (key == Py_None)
        return 0;
    if (!PyUnicode_CheckExact(key))
        return -1;
    if (t->key_ids == NULL && (t->key_ids = PyDict_New()) == NULL)
        return -1;
    PyObject *id = PyDict_GetItemWithError(t->key_ids, key);
    if (id != NULL)
        return (int32_t)PyLong_AsLong(id);
    if (PyErr_Occurred() || PyDict_GET_SIZE(t->key_ids) >= INT32_MAX - 1)
        return -1;
    int32_t number = (int32_t)PyDict_GET_SIZE(t->key_ids) + 1;
    id = PyLong_FromLong(number);
    if (id == NULL || PyDict_SetItem(t->key_ids, key, id) < 0) {
        Py_XDECREF(id);
        return -1;
    }
    Py_DECREF(id);
    return number;
}

/* A view key's number: 0 for None, a constant's number, or -1 when no constant equals it;
 * -2 on error. */
static int32_t
key_kid(const TenantObject *t, PyObject *key)
{
    if (key == Py_None)
        return 0;
    if (t->key_ids == NULL)
        return -1;
    PyObject *id = PyDict_GetItemWithError(t->key_ids, key);
    if (id == NULL)
        return PyErr_Occurred() ? -2 : -1;
    return (int32_t)PyLong_AsLong(id);
}

/* The sorted numbers of the keys of the in-set at constant c; 0, or -1 when it holds
 * anything but str and None. */
static int
in_set_numbers(TenantObject *t, Py_ssize_t c)
{
    PyObject *set = PyTuple_GET_ITEM(t->consts, c), *key;
    Py_ssize_t n = PySet_GET_SIZE(set), k = 0;
    int32_t *kids = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    PyObject *iter = kids == NULL ? NULL : PyObject_GetIter(set);
    if (iter == NULL) {
        PyMem_Free(kids);
        return -1;
    }
    while ((key = PyIter_Next(iter)) != NULL) {
        int32_t number = k < n ? key_number(t, key) : -1;
        Py_DECREF(key);
        if (number < 0) {
            Py_DECREF(iter);
            PyMem_Free(kids);
            return -1;
        }
        kids[k++] = number;
    }
    Py_DECREF(iter);
    if (PyErr_Occurred()) {
        PyMem_Free(kids);
        return -1;
    }
    qsort(kids, (size_t)k, sizeof(int32_t), compare_int32);
    t->in_kids[c] = kids;
    t->in_len[c] = k;
    return 0;
}

/* A run of an index entry: (list, slot) pairs or list indexes, either a tuple of them
 * or, as the compiler hands them, packed in bytes as native int32 (a pair is two). Its
 * length, or -1 when it is neither. */
static Py_ssize_t
run_length(PyObject *run, int pairs)
{
    if (PyBytes_CheckExact(run)) {
        Py_ssize_t width = pairs ? 8 : 4;
        return PyBytes_GET_SIZE(run) % width ? -1 : PyBytes_GET_SIZE(run) / width;
    }
    return PyTuple_Check(run) ? PyTuple_GET_SIZE(run) : -1;
}

/* An index entry: (join pairs, lists, pairs, lists), four runs (see turned()). */
static int
is_entry(PyObject *entry)
{
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 4)
        return 0;
    for (int k = 0; k < 4; k++)
        if (run_length(PyTuple_GET_ITEM(entry, k), k % 2 == 0) < 0)
            return 0;
    return 1;
}

/* Groups nest at most this deep: the compiler recurses in Python, which stops far
 * sooner, and evaluation recurses in C, whose stack this bounds. */
#define MAX_DEPTH 10000

/* Checks one node (and its subtree) so that evaluation never reads out of bounds. */
static int
check_node(TenantObject *t, const int64_t *p, const int64_t *end, int depth)
{
    if (end - p < 2 || p[1] < 2 || p[1] > end - p || depth > MAX_DEPTH)
        return -1;
    int64_t op = p[0], size = p[1];
    const int64_t *node_end = p + size;
    Py_ssize_t nconsts = PyTuple_GET_SIZE(t->consts);
#define NEED(n) do { if (size != (n)) return -1; } while (0)
#define CONST_OK(w) ((w) >= 0 && (w) < nconsts)
    if (op >= OP_EQ && op <= OP_MATCHES) {
        /* a field operand: a name, numbered the first time it is met */
        if (size < 3 || !CONST_OK(p[2]) ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(t->consts, p[2])))
            return -1;
        if (t->field_of[p[2]] < 0)
            t->field_of[p[2]] = t->nfields++;
    }
    switch (op) {
    case OP_ALL:
    case OP_ANY: {
        const int64_t *child = p + 2;
        while (child < node_end) {
            if (check_node(t, child, node_end, depth + 1) < 0)
                return -1;
            child += child[1];
        }
        return 0;
    }
    case OP_NOT:
        if (size < 3 || check_node(t, p + 2, node_end, depth + 1) < 0 || p[3] != size - 2)
            return -1;
        return 0;
    case OP_TRUE:
    case OP_FALSE:
        NEED(2);
        return 0;
    case OP_EQ:
    case OP_NEQ:
        NEED(4);
        if (!CONST_OK(p[2]) || !CONST_OK(p[3]))
            return -1;
        if (t->kid_of[p[3]] < 0)
            t->kid_of[p[3]] = key_number(t, PyTuple_GET_ITEM(t->consts, p[3]));
        return t->kid_of[p[3]] >= 0 ? 0 : -1;
    case OP_IN:
    case OP_NOT_IN:
        NEED(4);
        if (!CONST_OK(p[2]) || !CONST_OK(p[3]) ||
            !PyFrozenSet_CheckExact(PyTuple_GET_ITEM(t->consts, p[3])))
            return -1;
        return t->in_kids[p[3]] != NULL ? 0 : in_set_numbers(t, p[3]);
    case OP_GT:
    case OP_GTE:
    case OP_LT:
    case OP_LTE:
        NEED(4);
        return CONST_OK(p[2]) ? 0 : -1;
    case OP_BETWEEN:
        NEED(5);
        return CONST_OK(p[2]) ? 0 : -1;
    case OP_EMPTY:
    case OP_NOT_EMPTY:
        NEED(3);
        return CONST_OK(p[2]) ? 0 : -1;
    case OP_WITHIN:
    case OP_BEFORE:
        NEED(4);
        return CONST_OK(p[2]) ? 0 : -1;
    case OP_CONTAINS:
    case OP_NOT_CONTAINS:
    case OP_STARTS:
    case OP_ENDS:
        NEED(4);
        if (!CONST_OK(p[2]) || !CONST_OK(p[3]))
            return -1;
        return PyUnicode_Check(PyTuple_GET_ITEM(t->consts, p[3])) ? 0 : -1;
    case OP_MATCHES:
        NEED(4);
        return CONST_OK(p[2]) && CONST_OK(p[3]) ? 0 : -1;
    case OP_TAG:
    case OP_STATIC:
        NEED(3);
        return CONST_OK(p[2]) ? 0 : -1;
    case OP_LIST:
        NEED(3);
        return p[2] >= 0 && p[2] < t->size ? 0 : -1;
    case OP_ACT:
        NEED(8);
        if (!CONST_OK(p[2]) || !(p[3] == -1 || CONST_OK(p[3])))
            return -1;
        return p[6] >= 0 && p[7] >= -1 ? 0 : -1;
    }
    return -1;
#undef NEED
#undef CONST_OK
}

static void
Tenant_dealloc(TenantObject *self)
{
    PyMem_Free(self->code);
    PyMem_Free(self->start);
    /* before consts goes: its size counts in_kids, and this may be its last reference */
    if (self->in_kids != NULL)
        for (Py_ssize_t c = 0; c < PyTuple_GET_SIZE(self->consts); c++)
            PyMem_Free(self->in_kids[c]);
    Py_XDECREF(self->consts);
    Py_XDECREF(self->order);
    Py_XDECREF(self->rev);
    Py_XDECREF(self->dates);
    Py_XDECREF(self->timed);
    Py_XDECREF(self->index);
    Py_XDECREF(self->activity);
    Py_XDECREF(self->fields);
    PyMem_Free(self->field_of);
    Py_XDECREF(self->field_names);
    Py_XDECREF(self->field_ids);
    PyMem_Free(self->date_ids);
    PyMem_Free(self->time);
    Py_XDECREF(self->key_ids);
    PyMem_Free(self->kid_of);
    PyMem_Free(self->in_kids);
    PyMem_Free(self->in_len);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Tenant(code: bytes of int64 words, starts: sequence of int, consts: tuple,
 *        order: tuple of list ids, rev: tuple of None or index entries) */
static PyObject *
Tenant_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_buffer code;
    PyObject *starts, *consts, *order, *rev;
    if (!PyArg_ParseTuple(args, "y*OO!O!O!:Tenant", &code, &starts, &PyTuple_Type, &consts,
                          &PyTuple_Type, &order, &PyTuple_Type, &rev))
        return NULL;
    TenantObject *self = (TenantObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        PyBuffer_Release(&code);
        return NULL;
    }
    self->size = PyTuple_GET_SIZE(order);
    self->ncode = code.len / (Py_ssize_t)sizeof(int64_t);
    Py_INCREF(consts);
    self->consts = consts;
    Py_INCREF(order);
    self->order = order;
    Py_INCREF(rev);
    self->rev = rev;
    self->code = PyMem_Malloc((size_t)(self->ncode ? self->ncode : 1) * sizeof(int64_t));
    self->start = PyMem_Malloc((size_t)(self->size ? self->size : 1) * sizeof(Py_ssize_t));
    if (self->code == NULL || self->start == NULL) {
        PyBuffer_Release(&code);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    memcpy(self->code, code.buf, (size_t)self->ncode * sizeof(int64_t));
    Py_ssize_t nconsts = PyTuple_GET_SIZE(consts);
    self->field_of = PyMem_Malloc((size_t)(nconsts ? nconsts : 1) * sizeof(Py_ssize_t));
    if (self->field_of == NULL) {
        PyBuffer_Release(&code);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->kid_of = PyMem_Malloc((size_t)(nconsts ? nconsts : 1) * sizeof(int32_t));
    self->in_kids = PyMem_Calloc((size_t)(nconsts ? nconsts : 1), sizeof(int32_t *));
    self->in_len = PyMem_Calloc((size_t)(nconsts ? nconsts : 1), sizeof(Py_ssize_t));
    if (self->kid_of == NULL || self->in_kids == NULL || self->in_len == NULL) {
        PyBuffer_Release(&code);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t c = 0; c < nconsts; c++) {
        self->field_of[c] = -1;
        self->kid_of[c] = -1;
    }
    int bad = code.len % (Py_ssize_t)sizeof(int64_t) != 0 || PyTuple_GET_SIZE(rev) != self->size;
    PyBuffer_Release(&code);
    for (Py_ssize_t i = 0; !bad && i < self->size; i++)
        bad = !is_entry(PyTuple_GET_ITEM(rev, i)) && PyTuple_GET_ITEM(rev, i) != Py_None;
    PyObject *fast = bad ? NULL : PySequence_Tuple(starts);
    if (fast == NULL || PyTuple_GET_SIZE(fast) != self->size) {
        Py_XDECREF(fast);
        Py_DECREF(self);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "malformed tenant program");
        return NULL;
    }
    const int64_t *end = self->code + self->ncode;
    for (Py_ssize_t i = 0; i < self->size; i++) {
        PyObject *item = PyTuple_GET_ITEM(fast, i);
        Py_ssize_t at = PyLong_CheckExact(item) ? PyLong_AsSsize_t(item) : -1;
        if (at < 0 || at >= self->ncode) {
            Py_DECREF(fast);
            Py_DECREF(self);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "list %zd: bad program offset", i);
            return NULL;
        }
        self->start[i] = at;
        const int64_t *p = self->code + at;
        int64_t slots = p[0];
        p++;
        for (int64_t k = 0; k < slots; k++) {
            if (p >= end || check_node(self, p, end, 0) < 0) {
                Py_DECREF(fast);
                Py_DECREF(self);
                PyErr_Format(PyExc_ValueError, "list %zd: malformed program", i);
                return NULL;
            }
            p += p[1];
        }
        if (slots < 1) {
            Py_DECREF(fast);
            Py_DECREF(self);
            PyErr_Format(PyExc_ValueError, "list %zd: a program has a slot at least", i);
            return NULL;
        }
    }
    Py_DECREF(fast);
    self->field_names = PyTuple_New(self->nfields);
    self->field_ids = PyDict_New();
    if (self->field_names == NULL || self->field_ids == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    for (Py_ssize_t c = 0; c < nconsts; c++) {
        if (self->field_of[c] < 0)
            continue;
        PyObject *name = PyTuple_GET_ITEM(consts, c), *id = PyLong_FromSsize_t(self->field_of[c]);
        if (id == NULL || PyDict_SetItem(self->field_ids, name, id) < 0) {
            Py_XDECREF(id);
            Py_DECREF(self);
            return NULL;
        }
        Py_DECREF(id);
        Py_INCREF(name);
        PyTuple_SET_ITEM(self->field_names, self->field_of[c], name);
    }
    if (PyDict_GET_SIZE(self->field_ids) != self->nfields) {
        Py_DECREF(self);  /* one name in two constants: the compiler makes no such thing */
        PyErr_SetString(PyExc_ValueError, "a field name appears as two constants");
        return NULL;
    }
    return (PyObject *)self;
}

/* -1 with an error when the watch no longer has one byte per list (something that ran
 * Python code during the evaluation resized it). */
static int
watch_resized(PyObject *W, Py_ssize_t size)
{
    if (PyByteArray_GET_SIZE(W) == size)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "the watch changed size during evaluation");
    return -1;
}

/* A list's watch: the first false slot (at most 254), or 255; -1 on error. */
static int
eval_list(const TenantObject *t, const Ctx *ctx, Py_ssize_t i)
{
    const int64_t *p = t->code + t->start[i];
    int64_t slots = p[0];
    p++;
    for (int64_t k = 0; k < slots; k++) {
        int value = eval_node(ctx, p);
        if (value < 0)
            return -1;
        if (!value)
            return k < MAX_SLOT ? (int)k : MAX_SLOT;
        p += p[1];
    }
    return ALL_TRUE;
}

static int
make_ctx(TenantObject *t, Ctx *ctx, PyObject *V, PyObject *T, PyObject *S, PyObject *A,
         PyObject *W, PyObject *now)
{
    if (!Py_IS_TYPE(V, &ViewType) || ((ViewObject *)V)->n != t->nfields) {
        PyErr_SetString(PyExc_TypeError, "the view is one of this tenant's (Tenant.view())");
        return -1;
    }
    if (!PyDict_Check(A)) {
        PyErr_SetString(PyExc_TypeError, "activities are a dict");
        return -1;
    }
    if (!PyAnySet_Check(T) || !PyAnySet_Check(S)) {
        PyErr_SetString(PyExc_TypeError, "tags and static lists are sets");
        return -1;
    }
    if (!PyByteArray_Check(W) || PyByteArray_GET_SIZE(W) != t->size) {
        PyErr_SetString(PyExc_ValueError, "the watch is a bytearray of one byte per list");
        return -1;
    }
    ctx->V = (const ViewObject *)V;
    ctx->field_of = t->field_of;
    ctx->kid_of = t->kid_of;
    ctx->in_kids = t->in_kids;
    ctx->in_len = t->in_len;
    ctx->T = T;
    ctx->S = S;
    ctx->A = A;
    ctx->W = W;
    ctx->consts = &PyTuple_GET_ITEM(t->consts, 0);
    ctx->nconsts = PyTuple_GET_SIZE(t->consts);
    ctx->size = t->size;
    return as_time(now, &ctx->now);
}

/* evaluate_all(V, T, S, A, W, now) -> set of list ids; W receives every watch */
static PyObject *
Tenant_evaluate_all(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "evaluate_all(V, T, S, A, W, now)");
        return NULL;
    }
    Ctx ctx;
    if (make_ctx(self, &ctx, args[0], args[1], args[2], args[3], args[4], args[5]) < 0)
        return NULL;
    PyObject *members = PySet_New(NULL);
    if (members == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->size; i++) {
        int watch = eval_list(self, &ctx, i);
        if (watch < 0 || watch_resized(ctx.W, self->size) < 0)
            goto error;
        PyByteArray_AS_STRING(ctx.W)[i] = (char)watch;
        if (watch == ALL_TRUE && PySet_Add(members, PyTuple_GET_ITEM(self->order, i)) < 0)
            goto error;
    }
    return members;
error:
    Py_DECREF(members);
    return NULL;
}

/* A list's flags in an evaluate_dirty call. A changed list's cascade depth (see
 * CompiledTenant.evaluate_dirty) needs to know whether its own criteria were candidates
 * and which lists it references changed, unfiltered by the watch: a referenced list
 * whose change could not mark it may still be the shallowest one that changed. */
#define MARKED 1     /* to evaluate */
#define BY_OWN 2     /* marked by a candidate of its own criteria */
#define VIA 4        /* a list it references changed: `via` holds the least depth of those */
#define CHANGED 8    /* changed in this call */

typedef struct {
    unsigned char *pending;  /* flags, above */
    Py_ssize_t *via;
    Py_ssize_t lo, hi;   /* the marked range */
    Py_ssize_t size;
} Marks;

static void
mark(Marks *m, Py_ssize_t j, int own)
{
    m->pending[j] |= own ? MARKED | BY_OWN : MARKED;
    if (j < m->lo)
        m->lo = j;
    if (j > m->hi)
        m->hi = j;
}

static int
list_index(PyObject *obj, Py_ssize_t size, Py_ssize_t *out)
{
    if (!PyLong_CheckExact(obj)) {
        PyErr_SetString(PyExc_TypeError, "a list index is an int");
        return -1;
    }
    Py_ssize_t i = PyLong_AsSsize_t(obj);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < 0 || i >= size) {
        PyErr_Format(PyExc_IndexError, "list index %zd out of range", i);
        return -1;
    }
    *out = i;
    return 0;
}

/* Marks (list, slot) pairs whose slot is the list's watch (own: by their own criteria). */
static int
mark_pairs(Marks *m, PyObject *W, PyObject *pairs, int own)
{
    if (PyBytes_CheckExact(pairs)) {
        const unsigned char *watch = (const unsigned char *)PyByteArray_AS_STRING(W);
        const char *at = PyBytes_AS_STRING(pairs);
        Py_ssize_t n = run_length(pairs, 1);
        if (n < 0) {
            PyErr_SetString(PyExc_TypeError, "packed join codes are pairs of int32");
            return -1;
        }
        for (Py_ssize_t k = 0; k < n; k++, at += 8) {
            int32_t pair[2];
            memcpy(pair, at, sizeof pair);
            if (pair[0] < 0 || pair[0] >= m->size) {
                PyErr_Format(PyExc_IndexError, "list index %d out of range", (int)pair[0]);
                return -1;
            }
            if (watch[pair[0]] == pair[1])
                mark(m, pair[0], own);
        }
        return 0;
    }
    PyObject *fast = PySequence_Fast(pairs, "join codes are a sequence");
    if (fast == NULL)
        return -1;
    const unsigned char *watch = (const unsigned char *)PyByteArray_AS_STRING(W);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(fast, k);
        Py_ssize_t i, slot;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "a join code is a (list, slot) pair");
            goto error;
        }
        if (list_index(PyTuple_GET_ITEM(pair, 0), m->size, &i) < 0)
            goto error;
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "a slot is an int");
            goto error;
        }
        slot = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 1));
        if (slot == -1 && PyErr_Occurred())
            goto error;
        if (watch[i] == slot)
            mark(m, i, own);
    }
    Py_DECREF(fast);
    return 0;
error:
    Py_DECREF(fast);
    return -1;
}

/* Marks lists the lead belongs to (own: by their own criteria). */
static int
mark_members(Marks *m, PyObject *W, PyObject *lists, int own)
{
    if (PyBytes_CheckExact(lists)) {
        const unsigned char *watch = (const unsigned char *)PyByteArray_AS_STRING(W);
        const char *at = PyBytes_AS_STRING(lists);
        Py_ssize_t n = run_length(lists, 0);
        if (n < 0) {
            PyErr_SetString(PyExc_TypeError, "packed lists are int32");
            return -1;
        }
        for (Py_ssize_t k = 0; k < n; k++, at += 4) {
            int32_t i;
            memcpy(&i, at, sizeof i);
            if (i < 0 || i >= m->size) {
                PyErr_Format(PyExc_IndexError, "list index %d out of range", (int)i);
                return -1;
            }
            if (watch[i] == ALL_TRUE)
                mark(m, i, own);
        }
        return 0;
    }
    PyObject *fast = PySequence_Fast(lists, "leave lists are a sequence");
    if (fast == NULL)
        return -1;
    const unsigned char *watch = (const unsigned char *)PyByteArray_AS_STRING(W);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t i;
        if (list_index(PySequence_Fast_GET_ITEM(fast, k), m->size, &i) < 0) {
            Py_DECREF(fast);
            return -1;
        }
        if (watch[i] == ALL_TRUE)
            mark(m, i, own);
    }
    Py_DECREF(fast);
    return 0;
}

/* Notes in each of `lists` (the lists that reference one that changed at depth d) the
 * least depth among the changes of the lists it references. */
static int
note_via(Marks *m, PyObject *lists, Py_ssize_t d)
{
    PyObject *fast = NULL;
    const char *at = NULL;
    Py_ssize_t n;
    if (PyBytes_CheckExact(lists)) {
        at = PyBytes_AS_STRING(lists);
        n = run_length(lists, 0);
        if (n < 0) {
            PyErr_SetString(PyExc_TypeError, "packed lists are int32");
            return -1;
        }
    }
    else {
        fast = PySequence_Fast(lists, "lists are a sequence");
        if (fast == NULL)
            return -1;
        n = PySequence_Fast_GET_SIZE(fast);
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t j;
        if (at != NULL) {
            int32_t i;
            memcpy(&i, at + 4 * k, sizeof i);
            j = i;
            if (j < 0 || j >= m->size) {
                PyErr_Format(PyExc_IndexError, "list index %zd out of range", j);
                return -1;
            }
        }
        else if (list_index(PySequence_Fast_GET_ITEM(fast, k), m->size, &j) < 0) {
            Py_DECREF(fast);
            return -1;
        }
        if (!(m->pending[j] & VIA) || m->via[j] > d) {
            m->pending[j] |= VIA;
            m->via[j] = d;
        }
    }
    Py_XDECREF(fast);
    return 0;
}

/* 1 when list i, read with every list changed so far back at its before membership,
 * already takes its new value (`value`): its own criteria account for its change; 0 when
 * not, -1 on error. */
static int
own_account(const TenantObject *t, const Ctx *ctx, const Marks *m, Py_ssize_t i, int value)
{
    PyObject *before = PyByteArray_FromStringAndSize(PyByteArray_AS_STRING(ctx->W),
                                                     PyByteArray_GET_SIZE(ctx->W));
    if (before == NULL)
        return -1;
    unsigned char *w = (unsigned char *)PyByteArray_AS_STRING(before);
    for (Py_ssize_t j = m->lo; j < i; j++)
        if (m->pending[j] & CHANGED)
            w[j] = w[j] == ALL_TRUE ? 0 : ALL_TRUE;
    Ctx counter = *ctx;
    counter.W = before;
    int result = eval_list(t, &counter, i);
    Py_DECREF(before);
    return result < 0 ? -1 : (result == ALL_TRUE) == value;
}

/* evaluate_list(V, T, S, A, W, i, now) -> list i's watch, reading the lists it references
 * in W (left as it is) */
static PyObject *
Tenant_evaluate_list(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "evaluate_list(V, T, S, A, W, i, now)");
        return NULL;
    }
    Ctx ctx;
    Py_ssize_t i;
    if (make_ctx(self, &ctx, args[0], args[1], args[2], args[3], args[4], args[6]) < 0 ||
        list_index(args[5], self->size, &i) < 0)
        return NULL;
    int watch = eval_list(self, &ctx, i);
    return watch < 0 ? NULL : PyLong_FromLong(watch);
}

/* evaluate_dirty(C, N, DT, T, S, A, W, join, leave, both, now)
 *   -> [(list id, added, depth)], as CompiledTenant.evaluate_dirty */
static PyObject *
Tenant_evaluate_dirty(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError,
                        "evaluate_dirty(V, T, S, A, W, join, leave, both, now)");
        return NULL;
    }
    Ctx ctx;
    if (make_ctx(self, &ctx, args[0], args[1], args[2], args[3], args[4], args[8]) < 0)
        return NULL;
    PyObject *W = args[4], *join = args[5], *leave = args[6], *both = args[7];
    PyObject *out = NULL, *iter = NULL, *item;
    Py_ssize_t size = self->size;
    unsigned char small_pending[1024];
    Py_ssize_t small_via[1024];
    Marks m = {small_pending, small_via, size, -1, size};
    if (size > 1024) {
        m.pending = PyMem_Malloc((size_t)size);
        m.via = PyMem_Malloc((size_t)size * sizeof(Py_ssize_t));
        if (m.pending == NULL || m.via == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    memset(m.pending, 0, (size_t)size);

    PyObject *fast = PySequence_Fast(join, "join is a sequence");
    if (fast == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(fast); k++) {
        if (mark_pairs(&m, W, PySequence_Fast_GET_ITEM(fast, k), 1) < 0) {
            Py_DECREF(fast);
            goto done;
        }
    }
    Py_DECREF(fast);
    fast = PySequence_Fast(leave, "leave is a sequence");
    if (fast == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(fast); k++) {
        if (mark_members(&m, W, PySequence_Fast_GET_ITEM(fast, k), 1) < 0) {
            Py_DECREF(fast);
            goto done;
        }
    }
    Py_DECREF(fast);
    iter = PyObject_GetIter(both);
    if (iter == NULL)
        goto done;
    while ((item = PyIter_Next(iter)) != NULL) {
        Py_ssize_t i;
        int bad = list_index(item, size, &i);
        Py_DECREF(item);
        if (bad < 0)
            goto done;
        mark(&m, i, 1);
    }
    if (PyErr_Occurred())
        goto done;

    out = PyList_New(0);
    if (out == NULL)
        goto done;
    /* lists reference only lists before them, so a cascade only marks lists ahead */
    for (Py_ssize_t i = m.lo; i <= m.hi; i++) {
        if (!(m.pending[i] & MARKED))
            continue;
        unsigned char *watch = (unsigned char *)PyByteArray_AS_STRING(W);
        int was = watch[i] == ALL_TRUE;
        int result = eval_list(self, &ctx, i);
        if (result < 0 || watch_resized(W, size) < 0)
            goto error;
        watch = (unsigned char *)PyByteArray_AS_STRING(W);
        watch[i] = (unsigned char)result;
        int value = result == ALL_TRUE;
        if (value == was)
            continue;
        /* with no referenced list changed, its own criteria changed it; with one, they
         * did only if they were candidates and still do with the references as before */
        Py_ssize_t d = 0;
        if (m.pending[i] & VIA) {
            int own = 0;
            if ((m.pending[i] & BY_OWN) &&
                ((own = own_account(self, &ctx, &m, i, value)) < 0 || watch_resized(W, size) < 0))
                goto error;
            if (!own)
                d = m.via[i] + 1;
        }
        m.pending[i] |= CHANGED;
        PyObject *row = PyTuple_New(3), *depth = PyLong_FromSsize_t(d);
        if (row == NULL || depth == NULL) {
            Py_XDECREF(row);
            Py_XDECREF(depth);
            goto error;
        }
        PyObject *list_id = PyTuple_GET_ITEM(self->order, i), *added = value ? Py_True : Py_False;
        Py_INCREF(list_id);
        Py_INCREF(added);
        PyTuple_SET_ITEM(row, 0, list_id);
        PyTuple_SET_ITEM(row, 1, added);
        PyTuple_SET_ITEM(row, 2, depth);
        if (PyList_Append(out, row) < 0) {
            Py_DECREF(row);
            goto error;
        }
        Py_DECREF(row);
        PyObject *entry = PyTuple_GET_ITEM(self->rev, i);
        if (entry == Py_None)
            continue;
        /* entry: (pairs that may join, lists, pairs, lists that may leave); see turned() */
        PyObject *pairs = PyTuple_GET_ITEM(entry, value ? 0 : 2);
        PyObject *lists = PyTuple_GET_ITEM(entry, value ? 3 : 1);
        if (note_via(&m, PyTuple_GET_ITEM(entry, 1), d) < 0 ||
            note_via(&m, PyTuple_GET_ITEM(entry, 3), d) < 0 ||
            mark_pairs(&m, W, pairs, 0) < 0 || mark_members(&m, W, lists, 0) < 0)
            goto error;
    }
    goto done;
error:
    Py_CLEAR(out);
done:
    Py_XDECREF(iter);
    if (m.pending != small_pending)
        PyMem_Free(m.pending);
    if (m.via != small_via)
        PyMem_Free(m.via);
    return out;
}


/* -- the tables, each set once ------------------------------------------------------- */

/* Keeps `value` in `*slot`, which must still be empty: a table is checked once, when it
 * is set, and never replaced while an evaluation may be reading it. */
static int
keep_once(PyObject **slot, PyObject *value, const char *setter)
{
    if (*slot != NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s is called once", setter);
        return -1;
    }
    Py_INCREF(value);
    *slot = value;
    return 0;
}

/* NULL with a ValueError saying what, unless a check already raised. */
static PyObject *
malformed(const char *what)
{
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, what);
    return NULL;
}

/* -- time: next_flip --------------------------------------------------------------- */

static int
int64_item(PyObject *tuple, Py_ssize_t k, int64_t *out)
{
    *out = 0;
    return as_time(PyTuple_GET_ITEM(tuple, k), out);
}

/* A tuple of int64-sized ints, sorted ascending. */
static int
check_sorted_ints(PyObject *obj)
{
    if (!PyTuple_Check(obj))
        return -1;
    int64_t last = INT64_MIN, value;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(obj); k++) {
        if (!PyLong_Check(PyTuple_GET_ITEM(obj, k)) || int64_item(obj, k, &value) < 0 ||
            value < last)
            return -1;
        last = value;
    }
    return 0;
}

/* Whether a sorted int tuple starts below `least` (lows count from 1, highs from 0). */
static int
first_below(PyObject *tuple, int64_t least)
{
    int64_t value;
    return PyTuple_GET_SIZE(tuple) > 0 && int64_item(tuple, 0, &value) == 0 &&
        value < least;
}

/* next_flip's tables as C arrays, in one block: per date entry its windows, per timed
 * kind its groups, per group its window and bounds (read on every activity and date
 * change, they were ~100 tuple reads a call). Refs and kinds are borrowed from the
 * tuples the tenant keeps. */
typedef struct {
    PyObject *ref;            /* NULL: any ref */
    int64_t window;
    Py_ssize_t nlows, nhighs;
    const int64_t *lows, *highs;
} TimedGroup;

typedef struct {
    PyObject *kind;
    Py_ssize_t first, end;    /* its groups */
} TimedKind;

typedef struct {
    int has_within;
    Py_ssize_t nwindows;
    const int64_t *windows;
} DateTable;

struct TimeTables {
    Py_ssize_t ndates, nkinds;
    DateTable *dates;
    TimedKind *kinds;
    TimedGroup *groups;
    int64_t words[];          /* every windows, lows and highs array */
};

/* Copies a checked tuple of ints into words[*at...]; the copy. */
static const int64_t *
copy_ints(struct TimeTables *tt, Py_ssize_t *at, PyObject *tuple)
{
    int64_t *out = tt->words + *at;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tuple); k++)
        int64_item(tuple, k, &out[k]);
    *at += PyTuple_GET_SIZE(tuple);
    return out;
}

/* The tables of set_time's checked tuples, or NULL with an error. */
static struct TimeTables *
time_tables(PyObject *dates, PyObject *timed)
{
    Py_ssize_t ndates = PyTuple_GET_SIZE(dates), nkinds = PyTuple_GET_SIZE(timed);
    Py_ssize_t ngroups = 0, nwords = 0;
    for (Py_ssize_t k = 0; k < ndates; k++)
        nwords += PyTuple_GET_SIZE(PyTuple_GET_ITEM(PyTuple_GET_ITEM(dates, k), 2));
    for (Py_ssize_t k = 0; k < nkinds; k++) {
        PyObject *groups = PyTuple_GET_ITEM(PyTuple_GET_ITEM(timed, k), 1);
        ngroups += PyTuple_GET_SIZE(groups);
        for (Py_ssize_t g = 0; g < PyTuple_GET_SIZE(groups); g++)
            nwords += PyTuple_GET_SIZE(PyTuple_GET_ITEM(PyTuple_GET_ITEM(groups, g), 2)) +
                PyTuple_GET_SIZE(PyTuple_GET_ITEM(PyTuple_GET_ITEM(groups, g), 3));
    }
    size_t words = (size_t)nwords * sizeof(int64_t);
    size_t size = sizeof(struct TimeTables) + words + (size_t)ndates * sizeof(DateTable) +
        (size_t)nkinds * sizeof(TimedKind) + (size_t)ngroups * sizeof(TimedGroup);
    struct TimeTables *tt = PyMem_Malloc(size);
    if (tt == NULL)
        return (struct TimeTables *)PyErr_NoMemory();
    tt->ndates = ndates;
    tt->nkinds = nkinds;
    tt->dates = (DateTable *)((char *)tt->words + words);
    tt->kinds = (TimedKind *)(tt->dates + ndates);
    tt->groups = (TimedGroup *)(tt->kinds + nkinds);
    Py_ssize_t at = 0, g = 0;
    for (Py_ssize_t k = 0; k < ndates; k++) {
        PyObject *d = PyTuple_GET_ITEM(dates, k);
        int has_within = PyObject_IsTrue(PyTuple_GET_ITEM(d, 1));
        if (has_within < 0) {
            PyMem_Free(tt);
            return NULL;
        }
        tt->dates[k].has_within = has_within;
        tt->dates[k].nwindows = PyTuple_GET_SIZE(PyTuple_GET_ITEM(d, 2));
        tt->dates[k].windows = copy_ints(tt, &at, PyTuple_GET_ITEM(d, 2));
    }
    for (Py_ssize_t k = 0; k < nkinds; k++) {
        PyObject *t = PyTuple_GET_ITEM(timed, k), *groups = PyTuple_GET_ITEM(t, 1);
        tt->kinds[k].kind = PyTuple_GET_ITEM(t, 0);
        tt->kinds[k].first = g;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(groups); j++, g++) {
            PyObject *group = PyTuple_GET_ITEM(groups, j);
            TimedGroup *tg = &tt->groups[g];
            tg->ref = PyTuple_GET_ITEM(group, 0) == Py_None ? NULL : PyTuple_GET_ITEM(group, 0);
            int64_item(group, 1, &tg->window);
            tg->nlows = PyTuple_GET_SIZE(PyTuple_GET_ITEM(group, 2));
            tg->lows = copy_ints(tt, &at, PyTuple_GET_ITEM(group, 2));
            tg->nhighs = PyTuple_GET_SIZE(PyTuple_GET_ITEM(group, 3));
            tg->highs = copy_ints(tt, &at, PyTuple_GET_ITEM(group, 3));
        }
        tt->kinds[k].end = g;
    }
    return tt;
}

/* The first index of a sorted array whose value is > x (right) or >= x (left). */
static Py_ssize_t
bisect_int64(const int64_t *values, Py_ssize_t n, int64_t x, int right)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (right ? x < values[mid] : x <= values[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* set_time(dates, timed): the tables next_flip reads (see CompiledTenant.next_flip) */
static PyObject *
Tenant_set_time(TenantObject *self, PyObject *args)
{
    PyObject *dates, *timed;
    if (!PyArg_ParseTuple(args, "O!O!:set_time", &PyTuple_Type, &dates, &PyTuple_Type, &timed))
        return NULL;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(dates); k++) {
        PyObject *d = PyTuple_GET_ITEM(dates, k);
        if (!PyTuple_Check(d) || PyTuple_GET_SIZE(d) != 3 || !PyUnicode_Check(PyTuple_GET_ITEM(d, 0))
            || check_sorted_ints(PyTuple_GET_ITEM(d, 2)) < 0)
            goto bad;
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(timed); k++) {
        PyObject *t = PyTuple_GET_ITEM(timed, k);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(t, 1)))
            goto bad;
        PyObject *groups = PyTuple_GET_ITEM(t, 1);
        for (Py_ssize_t g = 0; g < PyTuple_GET_SIZE(groups); g++) {
            PyObject *group = PyTuple_GET_ITEM(groups, g);
            int64_t window;
            if (!PyTuple_Check(group) || PyTuple_GET_SIZE(group) != 4 ||
                !PyLong_Check(PyTuple_GET_ITEM(group, 1)) || int64_item(group, 1, &window) < 0 ||
                check_sorted_ints(PyTuple_GET_ITEM(group, 2)) < 0 ||
                check_sorted_ints(PyTuple_GET_ITEM(group, 3)) < 0 ||
                first_below(PyTuple_GET_ITEM(group, 2), 1) ||
                first_below(PyTuple_GET_ITEM(group, 3), 0))
                goto bad;
        }
    }
    /* each date field's number, once: a field no list reads is never a date */
    Py_ssize_t *ids = PyMem_Malloc((size_t)(PyTuple_GET_SIZE(dates) + 1) * sizeof(Py_ssize_t));
    if (ids == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(dates); k++) {
        PyObject *id = PyDict_GetItemWithError(self->field_ids,
                                               PyTuple_GET_ITEM(PyTuple_GET_ITEM(dates, k), 0));
        if (id == NULL && PyErr_Occurred()) {
            PyMem_Free(ids);
            return NULL;
        }
        ids[k] = id == NULL ? -1 : PyLong_AsSsize_t(id);
    }
    struct TimeTables *tt = self->dates == NULL ? time_tables(dates, timed) : NULL;
    if ((self->dates == NULL && tt == NULL) ||
        keep_once(&self->dates, dates, "set_time") < 0 ||
        keep_once(&self->timed, timed, "set_time") < 0) {
        PyMem_Free(ids);
        PyMem_Free(tt);
        return NULL;
    }
    self->date_ids = ids;
    self->time = tt;
    Py_RETURN_NONE;
bad:
    return malformed("malformed time tables");
}

/* One kind's activities for next_flip, read once: times[] and refs[] newest first, and
 * for the group being looked at, the times of the entries on its ref (`on`, newest
 * first). The refs are borrowed: nothing runs Python code while they are held. */
typedef struct {
    Py_ssize_t n, non;
    int64_t *times, *on;
    PyObject **refs;
    int64_t small[3 * 32];
} KindTimes;

static void
kind_times_free(KindTimes *k)
{
    if (k->times != k->small)
        PyMem_Free(k->times);
}

/* Read `entries` (a list of activity entries in time order); -1 with an error set. */
static int
kind_times_read(KindTimes *k, PyObject *entries)
{
    Py_ssize_t n = PyList_GET_SIZE(entries);
    k->n = k->non = 0;
    k->times = k->small;
    if (n > 32) {
        k->times = PyMem_Malloc((size_t)n * 3 * sizeof(int64_t));
        if (k->times == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    k->on = k->times + (n > 32 ? n : 32);
    k->refs = (PyObject **)(k->on + (n > 32 ? n : 32));
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *entry = PyList_GET_ITEM(entries, n - 1 - j);
        if (entry_time(entry, &k->times[j]) < 0)
            return -1;
        k->refs[j] = PyTuple_GET_ITEM(entry, 2);
    }
    k->n = n;
    return 0;
}

/* Keep in `on` the times of the entries on `ref` (every entry when NULL). */
static int
kind_times_on(KindTimes *k, PyObject *ref)
{
    k->non = 0;
    for (Py_ssize_t j = 0; j < k->n; j++) {
        int same = ref == NULL ? 1 : same_ref(k->refs[j], ref);
        if (same < 0)
            return -1;
        if (same)
            k->on[k->non++] = k->times[j];
    }
    return 0;
}

/* next_flip(DT, A, now) -> int or None, as CompiledTenant.next_flip */
static PyObject *
Tenant_next_flip(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !Py_IS_TYPE(args[0], &ViewType) ||
        ((ViewObject *)args[0])->n != self->nfields || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "next_flip(V: this tenant's view, A: dict, now)");
        return NULL;
    }
    if (self->dates == NULL || self->timed == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_time was not called");
        return NULL;
    }
    const ViewObject *V = (const ViewObject *)args[0];
    PyObject *A = args[1];
    int64_t now, best = 0;
    int found = 0;
    if (as_time(args[2], &now) < 0)
        return NULL;
#define OFFER(moment) do { int64_t m_ = (moment); \
        if (!found || m_ < best) { best = m_; found = 1; } } while (0)
    const struct TimeTables *tt = self->time;
    for (Py_ssize_t k = 0; k < tt->ndates; k++) {
        const DateTable *d = &tt->dates[k];
        int64_t date = self->date_ids[k] < 0 ? NO_DATE : V->f[self->date_ids[k]].date;
        if (date == NO_DATE)
            continue;
        if (d->has_within && now < date)
            OFFER(date);
        /* the smallest window ahead */
        Py_ssize_t w = bisect_int64(d->windows, d->nwindows, now - date, 1);
        if (w < d->nwindows)
            OFFER(date + d->windows[w]);
    }
    for (Py_ssize_t k = 0; k < tt->nkinds; k++) {
        PyObject *entries = PyDict_GetItemWithError(A, tt->kinds[k].kind);
        if (entries == NULL) {
            if (PyErr_Occurred())
                return NULL;
            continue;
        }
        if (!PyList_Check(entries)) {
            PyErr_SetString(PyExc_TypeError, "activities must be lists");
            return NULL;
        }
        if (PyList_GET_SIZE(entries) == 0)
            continue;
        /* the kind's entries are read once; each group then counts on its ref's times */
        KindTimes kt;
        if (kind_times_read(&kt, entries) < 0) {
            kind_times_free(&kt);
            return NULL;
        }
        PyObject *last = NULL;
        for (Py_ssize_t g = tt->kinds[k].first; g < tt->kinds[k].end; g++) {
            const TimedGroup *group = &tt->groups[g];
            if (g == tt->kinds[k].first || group->ref != last) {
                if (kind_times_on(&kt, group->ref) < 0) {
                    kind_times_free(&kt);
                    return NULL;
                }
                last = group->ref;
            }
            int64_t window = group->window;
            /* the activities on ref inside the window: the newest `count` of them */
            Py_ssize_t count = 0;
            while (count < kt.non && kt.on[count] > now - window)
                count++;
            if (!count)
                continue;
            /* the count falls to each bound below it in turn: leaving `high` (from above)
               happens when the (high + 1)-th newest leaves, reaching `low - 1` when the
               low-th newest does */
            Py_ssize_t h = bisect_int64(group->highs, group->nhighs, count, 0) - 1;
            if (h >= 0)
                OFFER(kt.on[group->highs[h]] + window);  /* high < count */
            Py_ssize_t l = bisect_int64(group->lows, group->nlows, count, 1) - 1;
            if (l >= 0)
                OFFER(kt.on[group->lows[l] - 1] + window);  /* 1 <= low <= count */
        }
        kind_times_free(&kt);
    }
#undef OFFER
    if (!found)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(best);
}


/* -- field_candidates ------------------------------------------------------------------ */

enum { IX_EQ, IX_EMPTY, IX_STRING, IX_NUM_ALL, IX_THRESHOLDS, IX_DATES, IX_SIZE };

/* set_index(eq, empty, strings, num_all, thresholds, dates): CompiledTenant's indexes,
 *   eq: {field: {key: entry}}, empty: {field: entry}, num_all: {field: entry},
 *   strings: {field: ((op, operand, entry), ...)},
 *   thresholds: {field: (run that may join, run that may leave) on a rise}, a run being
 *     ([bounds, ascending floats], [(list, slot) codes], [lists]),
 *   dates: {field: ((within, window, entry), ...)};
 * an entry is (join pairs, lists, pairs, lists), see turned(). */
static PyObject *
Tenant_set_index(TenantObject *self, PyObject *args)
{
    PyObject *tables[IX_SIZE];
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!:set_index", &PyDict_Type, &tables[0],
                          &PyDict_Type, &tables[1], &PyDict_Type, &tables[2], &PyDict_Type,
                          &tables[3], &PyDict_Type, &tables[4], &PyDict_Type, &tables[5]))
        return NULL;
    PyObject *key, *value, *entry;
    Py_ssize_t pos = 0, inner;
    /* shapes are checked here so that field_candidates can read them unchecked */
    while (PyDict_Next(tables[IX_EQ], &pos, &key, &value)) {
        if (!PyDict_Check(value))
            goto bad;
        inner = 0;
        while (PyDict_Next(value, &inner, &key, &entry))
            if (!is_entry(entry))
                goto bad;
    }
    for (int t = IX_EMPTY; t <= IX_NUM_ALL; t += IX_NUM_ALL - IX_EMPTY) {
        pos = 0;
        while (PyDict_Next(tables[t], &pos, &key, &entry))
            if (!is_entry(entry))
                goto bad;
    }
    pos = 0;
    while (PyDict_Next(tables[IX_STRING], &pos, &key, &value)) {
        if (!PyTuple_Check(value))
            goto bad;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(value); k++) {
            PyObject *atom = PyTuple_GET_ITEM(value, k);
            if (!PyTuple_Check(atom) || PyTuple_GET_SIZE(atom) != 3 ||
                !is_entry(PyTuple_GET_ITEM(atom, 2)))
                goto bad;
            long op = PyLong_AsLong(PyTuple_GET_ITEM(atom, 0));
            if (op < OP_CONTAINS || op > OP_MATCHES ||
                (op != OP_MATCHES && !PyUnicode_Check(PyTuple_GET_ITEM(atom, 1))))
                goto bad;
        }
    }
    pos = 0;
    while (PyDict_Next(tables[IX_THRESHOLDS], &pos, &key, &value)) {
        if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 2)
            goto bad;
        for (int r = 0; r < 2; r++) {
            PyObject *run = PyTuple_GET_ITEM(value, r);
            if (!PyTuple_Check(run) || PyTuple_GET_SIZE(run) != 3)
                goto bad;
            PyObject *bounds = PyTuple_GET_ITEM(run, 0);
            if (!PyTuple_Check(bounds) ||
                run_length(PyTuple_GET_ITEM(run, 1), 1) != PyTuple_GET_SIZE(bounds) ||
                run_length(PyTuple_GET_ITEM(run, 2), 0) != PyTuple_GET_SIZE(bounds))
                goto bad;
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(bounds); k++)
                if (!PyFloat_CheckExact(PyTuple_GET_ITEM(bounds, k)))
                    goto bad;
        }
    }
    pos = 0;
    while (PyDict_Next(tables[IX_DATES], &pos, &key, &value)) {
        if (!PyTuple_Check(value))
            goto bad;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(value); k++) {
            PyObject *atom = PyTuple_GET_ITEM(value, k);
            int64_t window;
            if (!PyTuple_Check(atom) || PyTuple_GET_SIZE(atom) != 3 ||
                !PyLong_Check(PyTuple_GET_ITEM(atom, 1)) || int64_item(atom, 1, &window) < 0 ||
                !is_entry(PyTuple_GET_ITEM(atom, 2)))
                goto bad;
        }
    }
    PyObject *index = PyTuple_New(IX_SIZE);
    if (index == NULL)
        return NULL;
    for (int k = 0; k < IX_SIZE; k++) {
        Py_INCREF(tables[k]);
        PyTuple_SET_ITEM(index, k, tables[k]);
    }
    int kept = keep_once(&self->index, index, "set_index");
    Py_DECREF(index);
    if (kept < 0)
        return NULL;
    Py_RETURN_NONE;
bad:
    return malformed("malformed predicate index");
}

/* Whether an index entry can mark any list under this watch: a join pair at its list's
 * watch, or a list the lead belongs to (see mark_pairs and mark_members). When none can,
 * whatever its predicate does changes nothing, and its value need not be worked out.
 * Runs that are not packed count as able to. */
static int
entry_can_mark(PyObject *entry, const unsigned char *watch, Py_ssize_t size)
{
    for (int k = 0; k < 4; k++) {
        PyObject *run = PyTuple_GET_ITEM(entry, k);
        if (!PyBytes_CheckExact(run))
            return 1;
        Py_ssize_t width = k % 2 ? 4 : 8, n = PyBytes_GET_SIZE(run) / width;
        const char *at = PyBytes_AS_STRING(run);
        for (Py_ssize_t j = 0; j < n; j++, at += width) {
            int32_t word[2] = {0, 0};
            memcpy(word, at, (size_t)width);
            if (word[0] < 0 || word[0] >= size)
                return 1;  /* marking it raises */
            if (k % 2 ? watch[word[0]] == ALL_TRUE : watch[word[0]] == word[1])
                return 1;
        }
    }
    return 0;
}

/* run[lo:hi] of a threshold run (checked by set_index), a new reference. */
static PyObject *
run_slice(PyObject *run, Py_ssize_t lo, Py_ssize_t hi, int pairs)
{
    if (PyBytes_CheckExact(run)) {
        Py_ssize_t width = pairs ? 8 : 4;
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(run) + lo * width,
                                         (hi - lo) * width);
    }
    return PyTuple_GetSlice(run, lo, hi);
}

/* Appends run[lo:hi] of a threshold run to `out`, unless it is empty. */
static int
append_slice(PyObject *out, PyObject *run, Py_ssize_t lo, Py_ssize_t hi, int pairs)
{
    if (lo >= hi)
        return 0;
    PyObject *slice = run_slice(run, lo, hi, pairs);
    if (slice == NULL)
        return -1;
    int failed = PyList_Append(out, slice);
    Py_DECREF(slice);
    return failed;
}

/* Appends what an index entry says may change when its predicate turns true/false. */
static int
add_turned(PyObject *join, PyObject *leave, PyObject *entry, int now_true)
{
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 4) {
        PyErr_SetString(PyExc_TypeError, "an index entry is a 4-tuple");
        return -1;
    }
    if (PyList_Append(join, PyTuple_GET_ITEM(entry, now_true ? 0 : 2)) < 0)
        return -1;
    return PyList_Append(leave, PyTuple_GET_ITEM(entry, now_true ? 3 : 1));
}

/* A date predicate's value for a date (has_date false: not a date), as _date_truth. */
static int
date_truth(int within, int64_t window, int has_date, int64_t date, int64_t now)
{
    if (!has_date)
        return 0;
    if (within)
        return date <= now && now < date + window;
    return date + window <= now;
}

/* The first index of a tuple of floats whose value is > x (right) or >= x (left). */
static Py_ssize_t
bisect_floats(PyObject *list, double x, int right)
{
    Py_ssize_t lo = 0, hi = PyTuple_GET_SIZE(list);
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        double value = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(list, mid));
        if (right ? x < value : x <= value)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* A field's number in this tenant's views, or -1 when no list reads it (-2 on error). */
static Py_ssize_t
field_id(TenantObject *self, PyObject *name)
{
    PyObject *id = PyDict_GetItemWithError(self->field_ids, name);
    if (id == NULL)
        return PyErr_Occurred() ? -2 : -1;
    return PyLong_AsSsize_t(id);
}

/* The key part of field_changed: eq, emptiness and string predicates. */
static int
field_key_changed(TenantObject *self, PyObject *join, PyObject *leave, PyObject *W,
                  PyObject *name, PyObject *old_key, PyObject *new_key, PyObject **ix)
{
    PyObject *entry, *table;
    int differ = PyObject_RichCompareBool(old_key, new_key, Py_NE);
    if (differ < 0)
        return -1;
    if (differ) {
        PyObject *bucket = PyDict_GetItemWithError(ix[IX_EQ], name);
        if (bucket != NULL) {
            if ((entry = PyDict_GetItemWithError(bucket, new_key)) != NULL) {
                if (PyList_Append(join, PyTuple_GET_ITEM(entry, 0)) < 0 ||
                    PyList_Append(leave, PyTuple_GET_ITEM(entry, 3)) < 0)
                    return -1;
            }
            else if (PyErr_Occurred())
                return -1;
            if ((entry = PyDict_GetItemWithError(bucket, old_key)) != NULL) {
                if (PyList_Append(join, PyTuple_GET_ITEM(entry, 2)) < 0 ||
                    PyList_Append(leave, PyTuple_GET_ITEM(entry, 1)) < 0)
                    return -1;
            }
            else if (PyErr_Occurred())
                return -1;
        }
        else if (PyErr_Occurred())
            return -1;
        if ((old_key == Py_None) != (new_key == Py_None)) {
            if ((entry = PyDict_GetItemWithError(ix[IX_EMPTY], name)) != NULL) {
                if (add_turned(join, leave, entry, old_key == Py_None) < 0)
                    return -1;
            }
            else if (PyErr_Occurred())
                return -1;
        }
        if ((table = PyDict_GetItemWithError(ix[IX_STRING], name)) != NULL) {
            PyObject *before = old_key == Py_None ? EMPTY_STR : old_key;
            PyObject *after = new_key == Py_None ? EMPTY_STR : new_key;
            if (!PyUnicode_Check(before) || !PyUnicode_Check(after)) {
                PyErr_SetString(PyExc_TypeError, "a comparison key is text");
                return -1;
            }
            Py_INCREF(before);
            Py_INCREF(after);
            int failed = 0;
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(table) && !failed; k++) {
                PyObject *atom = PyTuple_GET_ITEM(table, k);
                if (W != NULL) {  /* a regex may have run code: the watch is read anew */
                    if (watch_resized(W, self->size) < 0) {
                        failed = 1;
                        break;
                    }
                    if (!entry_can_mark(PyTuple_GET_ITEM(atom, 2),
                                        (const unsigned char *)PyByteArray_AS_STRING(W),
                                        self->size))
                        continue;
                }
                long op = PyLong_AsLong(PyTuple_GET_ITEM(atom, 0));
                PyObject *operand = PyTuple_GET_ITEM(atom, 1);
                int now_true = string_check(op, operand, after);
                int was = now_true < 0 ? -1 : string_check(op, operand, before);
                if (now_true < 0 || was < 0)
                    failed = 1;
                else if (was != now_true &&
                         add_turned(join, leave, PyTuple_GET_ITEM(atom, 2), now_true) < 0)
                    failed = 1;
            }
            Py_DECREF(before);
            Py_DECREF(after);
            if (failed)
                return -1;
        }
        else if (PyErr_Occurred())
            return -1;
    }
    return 0;
}


/* One field's candidates from its entry before and after (keys None when empty). */
static int
entry_changed(TenantObject *self, PyObject *join, PyObject *leave, PyObject *W, PyObject *name,
              PyObject *old_key, double before_num, int64_t before_date, PyObject *new_key,
              double after_num, int64_t after_date, int64_t now)
{
    PyObject *entry, *table;
    PyObject **ix = &PyTuple_GET_ITEM(self->index, 0);
    if (field_key_changed(self, join, leave, W, name, old_key, new_key, ix) < 0)
        return -1;
    int differ = isnan(before_num) != isnan(after_num) ||
        (!isnan(before_num) && before_num != after_num);
    if (differ && (entry = PyDict_GetItemWithError(ix[IX_NUM_ALL], name)) != NULL) {
        if (isnan(before_num) || isnan(after_num)) {
            if (add_turned(join, leave, entry, isnan(before_num)) < 0)
                return -1;
        }
        else {
            double before = before_num, after = after_num;
            PyObject *runs = PyDict_GetItemWithError(ix[IX_THRESHOLDS], name);
            if (runs == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_KeyError, "a numeric field without thresholds");
                return -1;
            }
            int rising = after > before;
            double low = rising ? before : after, high = rising ? after : before;
            /* on a rise the first run's lists may join and the second's leave */
            PyObject *up = PyTuple_GET_ITEM(runs, rising ? 0 : 1);
            PyObject *down = PyTuple_GET_ITEM(runs, rising ? 1 : 0);
            PyObject *bounds = PyTuple_GET_ITEM(up, 0);
            if (append_slice(join, PyTuple_GET_ITEM(up, 1), bisect_floats(bounds, low, 0),
                             bisect_floats(bounds, high, 1), 1) < 0)
                return -1;
            bounds = PyTuple_GET_ITEM(down, 0);
            if (append_slice(leave, PyTuple_GET_ITEM(down, 2), bisect_floats(bounds, low, 0),
                             bisect_floats(bounds, high, 1), 0) < 0)
                return -1;
        }
    }
    else if (PyErr_Occurred())
        return -1;
    if (before_date != after_date &&
        (table = PyDict_GetItemWithError(ix[IX_DATES], name)) != NULL) {
        int has_before = before_date != NO_DATE, has_after = after_date != NO_DATE;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(table); k++) {
            PyObject *atom = PyTuple_GET_ITEM(table, k);
            int within = PyObject_IsTrue(PyTuple_GET_ITEM(atom, 0));
            int64_t window;
            if (within < 0)
                return -1;
            int64_item(atom, 1, &window);
            int now_true = date_truth(within, window, has_after, after_date, now);
            if (date_truth(within, window, has_before, before_date, now) != now_true &&
                add_turned(join, leave, PyTuple_GET_ITEM(atom, 2), now_true) < 0)
                return -1;
        }
    }
    else if (PyErr_Occurred())
        return -1;
    return 0;
}

/* One changed field's candidates, as the field loop of CompiledTenant.candidates. */
static int
field_changed(TenantObject *self, PyObject *join, PyObject *leave, const ViewObject *V,
              PyObject *W, PyObject *name, PyObject *old, int64_t now)
{
    if (!PyTuple_Check(old) || PyTuple_GET_SIZE(old) != 3) {
        PyErr_SetString(PyExc_TypeError, "an old field is (key, number, date)");
        return -1;
    }
    PyObject *old_key = PyTuple_GET_ITEM(old, 0), *old_num = PyTuple_GET_ITEM(old, 1);
    PyObject *old_date = PyTuple_GET_ITEM(old, 2);
    double before_num = NAN;
    int64_t before_date = NO_DATE;
    if ((old_num != Py_None && as_number(old_num, &before_num) < 0) ||
        (old_date != Py_None && as_time(old_date, &before_date) < 0))
        return -1;
    /* the field's entry now: missing when no list reads the field */
    Py_ssize_t f = field_id(self, name);
    if (f == -2)
        return -1;
    PyObject *new_key = f < 0 || V->f[f].key == NULL ? Py_None : V->f[f].key;
    Py_INCREF(new_key);  /* a regex may run code that changes the view */
    int failed = entry_changed(self, join, leave, W, name, old_key, before_num, before_date,
                               new_key, f < 0 ? NAN : V->f[f].num,
                               f < 0 ? NO_DATE : V->f[f].date, now);
    Py_DECREF(new_key);
    return failed;
}


/* field_candidates(V, old_fields, now, W=None) -> (join, leave): the field part of
 * CompiledTenant.candidates, old_fields being {name: (key, number, date) before} */
static PyObject *
Tenant_field_candidates(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 3 || nargs > 4 || !Py_IS_TYPE(args[0], &ViewType) ||
        ((ViewObject *)args[0])->n != self->nfields || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "field_candidates(V: this tenant's view, old_fields, now, W=None)");
        return NULL;
    }
    /* W, the lead's watch: predicates that can mark no list under it are not worked out */
    PyObject *W = nargs == 4 && args[3] != Py_None ? args[3] : NULL;
    if (W != NULL && (!PyByteArray_Check(W) || PyByteArray_GET_SIZE(W) != self->size)) {
        PyErr_SetString(PyExc_ValueError, "W is a bytearray of one byte per list");
        return NULL;
    }
    if (self->index == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_index was not called");
        return NULL;
    }
    int64_t now;
    if (as_time(args[2], &now) < 0)
        return NULL;
    PyObject *join = PyList_New(0), *leave = PyList_New(0), *name, *old;
    if (join == NULL || leave == NULL)
        goto error;
    PyObject *items = PyDict_Items(args[1]);  /* a copy: a regex runs in between */
    if (items == NULL)
        goto error;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(items); k++) {
        PyObject *item = PyList_GET_ITEM(items, k);
        name = PyTuple_GET_ITEM(item, 0);
        old = PyTuple_GET_ITEM(item, 1);
        if (field_changed(self, join, leave, (const ViewObject *)args[0], W, name, old,
                          now) < 0) {
            Py_DECREF(items);
            goto error;
        }
    }
    Py_DECREF(items);
    return Py_BuildValue("(NN)", join, leave);
error:
    Py_XDECREF(join);
    Py_XDECREF(leave);
    return NULL;
}


/* -- activity_candidates ---------------------------------------------------------------- */

/* set_activity(groups): {kind: ((ref or None, window or None, ((low, high or None, entry),
 * ...)), ...)}, CompiledTenant.activity_groups without its sorted bounds. */
static PyObject *
Tenant_set_activity(TenantObject *self, PyObject *args)
{
    PyObject *groups, *kind, *value;
    if (!PyArg_ParseTuple(args, "O!:set_activity", &PyDict_Type, &groups))
        return NULL;
    Py_ssize_t pos = 0;
    while (PyDict_Next(groups, &pos, &kind, &value)) {
        if (!PyTuple_Check(value))
            goto bad;
        for (Py_ssize_t g = 0; g < PyTuple_GET_SIZE(value); g++) {
            PyObject *group = PyTuple_GET_ITEM(value, g);
            int64_t number;
            if (!PyTuple_Check(group) || PyTuple_GET_SIZE(group) != 3 ||
                !(PyTuple_GET_ITEM(group, 0) == Py_None ||
                  PyUnicode_Check(PyTuple_GET_ITEM(group, 0))) ||
                !(PyTuple_GET_ITEM(group, 1) == Py_None ||
                  (PyLong_Check(PyTuple_GET_ITEM(group, 1)) &&
                   int64_item(group, 1, &number) == 0)) ||
                !PyTuple_Check(PyTuple_GET_ITEM(group, 2)))
                goto bad;
            PyObject *atoms = PyTuple_GET_ITEM(group, 2);
            for (Py_ssize_t a = 0; a < PyTuple_GET_SIZE(atoms); a++) {
                PyObject *atom = PyTuple_GET_ITEM(atoms, a);
                if (!PyTuple_Check(atom) || PyTuple_GET_SIZE(atom) != 3 ||
                    !PyLong_Check(PyTuple_GET_ITEM(atom, 0)) ||
                    int64_item(atom, 0, &number) < 0 ||
                    !(PyTuple_GET_ITEM(atom, 1) == Py_None ||
                      (PyLong_Check(PyTuple_GET_ITEM(atom, 1)) &&
                       int64_item(atom, 1, &number) == 0)))
                    goto bad;
                if (!is_entry(PyTuple_GET_ITEM(atom, 2)))
                    goto bad;
            }
        }
    }
    if (keep_once(&self->activity, groups, "set_activity") < 0)
        return NULL;
    Py_RETURN_NONE;
bad:
    return malformed("malformed activity groups");
}

static inline int
in_bounds(Py_ssize_t count, int64_t low, PyObject *high)
{
    if (count < low)
        return 0;
    if (high == Py_None)
        return 1;
    int64_t limit = 0;
    as_time(high, &limit);  /* checked by set_activity */
    return count <= limit;
}

/* Appends what the atoms ((low, high, entry), ...) of one activity group say may change
 * when its count goes from `before` to `count`: those whose bounds hold for one and not
 * the other. */
static int
add_crossed(PyObject *join, PyObject *leave, PyObject *atoms, Py_ssize_t before,
            Py_ssize_t count)
{
    for (Py_ssize_t a = 0; a < PyTuple_GET_SIZE(atoms); a++) {
        PyObject *atom = PyTuple_GET_ITEM(atoms, a);
        int64_t low = 0;
        as_time(PyTuple_GET_ITEM(atom, 0), &low);  /* checked by set_activity */
        int now_true = in_bounds(count, low, PyTuple_GET_ITEM(atom, 1));
        if (in_bounds(before, low, PyTuple_GET_ITEM(atom, 1)) != now_true &&
            add_turned(join, leave, PyTuple_GET_ITEM(atom, 2), now_true) < 0)
            return -1;
    }
    return 0;
}

/* activity_candidates(A, activities, now) -> (join, leave): the activity part of
 * CompiledTenant.candidates; `activities` holds (kind, ref, at, event id) of the
 * activities the event added. */
static PyObject *
Tenant_activity_candidates(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "activity_candidates(A: dict, activities, now)");
        return NULL;
    }
    if (self->activity == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_activity was not called");
        return NULL;
    }
    int64_t now;
    if (as_time(args[2], &now) < 0)
        return NULL;
    PyObject *added = PySequence_List(args[1]);
    PyObject *join = PyList_New(0), *leave = PyList_New(0), *done = PySet_New(NULL);
    if (added == NULL || join == NULL || leave == NULL || done == NULL)
        goto error;
    Py_ssize_t n = PyList_GET_SIZE(added);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyList_GET_ITEM(added, k);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 4) {
            PyErr_SetString(PyExc_TypeError, "an added activity is (kind, ref, at, id)");
            goto error;
        }
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *first = PyList_GET_ITEM(added, k);
        PyObject *kind = PyTuple_GET_ITEM(first, 0);
        int seen = PySet_Contains(done, kind);
        if (seen < 0 || (!seen && PySet_Add(done, kind) < 0))
            goto error;
        if (seen)
            continue;  /* each kind once, with every activity of that kind */
        PyObject *groups = PyDict_GetItemWithError(self->activity, kind);
        if (groups == NULL) {
            if (PyErr_Occurred())
                goto error;
            continue;
        }
        for (Py_ssize_t g = 0; g < PyTuple_GET_SIZE(groups); g++) {
            PyObject *group = PyTuple_GET_ITEM(groups, g);
            PyObject *want = PyTuple_GET_ITEM(group, 0), *window_obj = PyTuple_GET_ITEM(group, 1);
            int64_t window = 0;
            if (window_obj != Py_None)
                as_time(window_obj, &window);  /* checked by set_activity */
            Py_ssize_t fresh = 0;
            for (Py_ssize_t m = k; m < n; m++) {
                PyObject *other = PyList_GET_ITEM(added, m);
                int64_t at;
                int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(other, 0), kind, Py_EQ);
                if (same < 0)
                    goto error;
                if (!same)
                    continue;
                if (want != Py_None) {
                    same = PyObject_RichCompareBool(want, PyTuple_GET_ITEM(other, 1), Py_EQ);
                    if (same < 0)
                        goto error;
                    if (!same)
                        continue;
                }
                if (window_obj != Py_None) {
                    if (as_time(PyTuple_GET_ITEM(other, 2), &at) < 0)
                        goto error;
                    if (!(now < at + window))
                        continue;
                }
                fresh++;
            }
            if (!fresh)
                continue;
            Py_ssize_t count = count_activities(args[0], kind, want == Py_None ? NULL : want,
                                                window_obj != Py_None, window, now);
            if (count < 0 ||
                add_crossed(join, leave, PyTuple_GET_ITEM(group, 2), count - fresh, count) < 0)
                goto error;
        }
    }
    Py_DECREF(added);
    Py_DECREF(done);
    return Py_BuildValue("(NN)", join, leave);
error:
    Py_XDECREF(added);
    Py_XDECREF(done);
    Py_XDECREF(join);
    Py_XDECREF(leave);
    return NULL;
}

/* -- the field view ------------------------------------------------------------------ */

enum { FX_NUMERIC, FX_DATES, FX_CANON, FX_NUMBER, FX_DATE, FX_SIZE };

/* set_fields(numeric, dates, canon, to_number, to_date_us): the fields numeric and date
 * predicates read (frozensets) and the conversions of schemas/values.py, which update_view
 * calls for every value it does not convert itself. */
static PyObject *
Tenant_set_fields(TenantObject *self, PyObject *args)
{
    PyObject *parts[FX_SIZE];
    if (!PyArg_ParseTuple(args, "O!O!OOO:set_fields", &PyFrozenSet_Type, &parts[0],
                          &PyFrozenSet_Type, &parts[1], &parts[2], &parts[3], &parts[4]))
        return NULL;
    for (int k = FX_CANON; k < FX_SIZE; k++)
        if (!PyCallable_Check(parts[k]))
            return malformed("the conversions are callables");
    PyObject *fields = PyTuple_New(FX_SIZE);
    if (fields == NULL)
        return NULL;
    for (int k = 0; k < FX_SIZE; k++) {
        Py_INCREF(parts[k]);
        PyTuple_SET_ITEM(fields, k, parts[k]);
    }
    int kept = keep_once(&self->fields, fields, "set_fields");
    Py_DECREF(fields);
    if (kept < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* canon(value), as schemas/values.py has it: an ASCII string without capitals is its own
 * key, a capitalised one lower-cased (casefold() of ASCII), an int its decimal text;
 * anything else is canon's to convert. A new reference. */
static PyObject *
canon_of(PyObject *value, PyObject *canon)
{
    if (value == Py_None)
        Py_RETURN_NONE;
    if (PyUnicode_CheckExact(value) && PyUnicode_IS_ASCII(value)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(value);
        const Py_UCS1 *text = PyUnicode_1BYTE_DATA(value);
        if (n == 0)
            Py_RETURN_NONE;
        Py_ssize_t k = 0;
        while (k < n && !(text[k] >= 'A' && text[k] <= 'Z'))
            k++;
        if (k == n) {
            Py_INCREF(value);
            return value;
        }
        PyObject *lower = PyUnicode_New(n, 127);
        if (lower == NULL)
            return NULL;
        Py_UCS1 *out = PyUnicode_1BYTE_DATA(lower);
        for (k = 0; k < n; k++)
            out[k] = (text[k] >= 'A' && text[k] <= 'Z') ? (Py_UCS1)(text[k] + 32) : text[k];
        return lower;
    }
    if (PyLong_CheckExact(value))
        return PyObject_Str(value);
    return PyObject_CallOneArg(canon, value);
}

/* to_number(value): a finite float (ints and floats converted here), else to_number's. */
static PyObject *
number_of(PyObject *value, PyObject *to_number)
{
    if (value == Py_None || PyBool_Check(value))
        Py_RETURN_NONE;
    if (PyFloat_CheckExact(value)) {
        if (!isfinite(PyFloat_AS_DOUBLE(value)))
            Py_RETURN_NONE;
        Py_INCREF(value);
        return value;
    }
    if (PyLong_CheckExact(value)) {
        double number = PyLong_AsDouble(value);
        if (number == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                return NULL;
            PyErr_Clear();  /* an integer beyond any float */
            Py_RETURN_NONE;
        }
        return PyFloat_FromDouble(number);
    }
    return PyObject_CallOneArg(to_number, value);
}

/* A view entry as Python objects: (key or None, number or None, date or None). */
static PyObject *
entry_of(const ViewObject *V, Py_ssize_t f)
{
    PyObject *key = V->f[f].key ? V->f[f].key : Py_None;
    PyObject *number = isnan(V->f[f].num) ? Py_None : PyFloat_FromDouble(V->f[f].num);
    PyObject *date = V->f[f].date == NO_DATE ? Py_None : PyLong_FromLongLong(V->f[f].date);
    if (number == NULL || date == NULL) {
        if (number != Py_None)
            Py_XDECREF(number);
        if (date != Py_None)
            Py_XDECREF(date);
        return NULL;
    }
    if (number == Py_None)
        Py_INCREF(Py_None);
    if (date == Py_None)
        Py_INCREF(Py_None);
    Py_INCREF(key);
    PyObject *entry = PyTuple_New(3);
    if (entry == NULL) {
        Py_DECREF(key);
        Py_DECREF(number);
        Py_DECREF(date);
        return NULL;
    }
    PyTuple_SET_ITEM(entry, 0, key);
    PyTuple_SET_ITEM(entry, 1, number);
    PyTuple_SET_ITEM(entry, 2, date);
    return entry;
}

/* Field f of a tenant's view set to (key, number, date), each None or a str, float and
 * int. */
static int
set_entry(const TenantObject *t, ViewObject *V, Py_ssize_t f, PyObject *key, PyObject *number,
          PyObject *date)
{
    double x = NAN;
    int64_t day = NO_DATE;
    if (key != Py_None && !PyUnicode_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "a comparison key is a str");
        return -1;
    }
    int32_t kid = key_kid(t, key);
    if (kid == -2)
        return -1;
    if (number != Py_None) {
        if (as_number(number, &x) < 0)
            return -1;
        if (isnan(x)) {
            PyErr_SetString(PyExc_ValueError, "a number of the view is not NaN");
            return -1;
        }
    }
    if (date != Py_None) {
        if (as_time(date, &day) < 0)
            return -1;
        if (day == NO_DATE) {
            PyErr_SetString(PyExc_ValueError, "a date beyond the years 1-9999");
            return -1;
        }
    }
    PyObject *old = V->f[f].key;
    if (key == Py_None)
        V->f[f].key = NULL;
    else {
        Py_INCREF(key);
        V->f[f].key = key;
    }
    Py_XDECREF(old);
    V->f[f].kid = kid;
    V->f[f].num = x;
    V->f[f].date = day;
    return 0;
}


/* A field's value as a view holds it, (key, number, date) in entry[] as new references
 * (CompiledTenant.field_entry); -1 on error, with entry[] cleared. */
static int
convert_value(TenantObject *self, PyObject *name, PyObject *value, PyObject *entry[3])
{
    PyObject **fx = &PyTuple_GET_ITEM(self->fields, 0);
    entry[0] = entry[1] = entry[2] = NULL;
    int numeric = PySet_Contains(fx[FX_NUMERIC], name);
    int dated = numeric < 0 ? -1 : PySet_Contains(fx[FX_DATES], name);
    if (dated < 0)
        return -1;
    entry[0] = canon_of(value, fx[FX_CANON]);
    if (entry[0] == NULL)
        goto error;
    if (numeric)
        entry[1] = number_of(value, fx[FX_NUMBER]);
    else {
        Py_INCREF(Py_None);
        entry[1] = Py_None;
    }
    if (entry[1] == NULL)
        goto error;
    if (dated && PyUnicode_Check(value))
        entry[2] = PyObject_CallOneArg(fx[FX_DATE], value);
    else {
        Py_INCREF(Py_None);
        entry[2] = Py_None;  /* only text is a date */
    }
    if (entry[2] == NULL)
        goto error;
    return 0;
error:
    for (int k = 0; k < 3; k++)
        Py_CLEAR(entry[k]);
    return -1;
}

/* The changed fields of a lead set in its view, each field's candidates appended to join
 * and leave as it goes (update_view, then field_candidates, without the old entries as
 * Python objects); -1 on error. */
static int
update_and_mark(TenantObject *self, ViewObject *V, PyObject *values, PyObject *changed,
                PyObject *W, int64_t now, PyObject *join, PyObject *leave)
{
    PyObject *names = PyDict_Keys(changed);  /* a copy: conversions run Python code */
    if (names == NULL)
        return -1;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(names); k++) {
        PyObject *name = PyList_GET_ITEM(names, k), *entry[3];
        Py_ssize_t f = field_id(self, name);
        if (f == -1)
            continue;  /* no list reads it */
        PyObject *value = f < 0 ? NULL : get_or(values, name, Py_None);
        if (value == NULL)
            goto error;
        Py_INCREF(value);
        int failed = convert_value(self, name, value, entry);
        Py_DECREF(value);
        if (failed < 0)
            goto error;
        Field old = V->f[f];
        PyObject *old_key = old.key ? old.key : Py_None;
        Py_INCREF(old_key);
        failed = set_entry(self, V, f, entry[0], entry[1], entry[2]);
        for (int e = 0; e < 3; e++)
            Py_DECREF(entry[e]);
        if (failed == 0) {
            Field now_ = V->f[f];
            PyObject *new_key = now_.key ? now_.key : Py_None;
            Py_INCREF(new_key);  /* a regex may run code that changes the view */
            failed = entry_changed(self, join, leave, W, name, old_key, old.num, old.date,
                                   new_key, now_.num, now_.date, now);
            Py_DECREF(new_key);
        }
        Py_DECREF(old_key);
        if (failed < 0)
            goto error;
    }
    Py_DECREF(names);
    return 0;
error:
    Py_DECREF(names);
    return -1;
}

/* The view's entries of `names` (the fields lists read among them) set to their values'
 * in `values`; each old entry into `olds` unless it is NULL. 0, or -1 on error. */
static int
set_fields_of(TenantObject *self, ViewObject *V, PyObject *values, PyObject *names,
              PyObject *olds)
{
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(names); k++) {
        PyObject *name = PyList_GET_ITEM(names, k), *entry[3], *old = NULL;
        Py_ssize_t f = field_id(self, name);
        if (f == -1)
            continue;  /* no list reads it */
        PyObject *value = f < 0 ? NULL : get_or(values, name, Py_None);
        if (value == NULL)
            return -1;
        Py_INCREF(value);
        int failed = convert_value(self, name, value, entry);
        Py_DECREF(value);
        if (failed < 0)
            return -1;
        if (olds != NULL)
            failed = (old = entry_of(V, f)) == NULL || PyDict_SetItem(olds, name, old) < 0;
        Py_XDECREF(old);
        if (!failed)
            failed = set_entry(self, V, f, entry[0], entry[1], entry[2]) < 0;
        for (int e = 0; e < 3; e++)
            Py_DECREF(entry[e]);
        if (failed)
            return -1;
    }
    return 0;
}

/* update_view(V, values, changed) -> {field: old (key, number, date)}: the view's entries
 * of the changed fields that lists read set to their values' now, as
 * CompiledTenant.update_view does one field at a time. */
static PyObject *
Tenant_update_view(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !Py_IS_TYPE(args[0], &ViewType) ||
        ((ViewObject *)args[0])->n != self->nfields || !PyDict_Check(args[1]) ||
        !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "update_view(V: this tenant's view, values, changed)");
        return NULL;
    }
    if (self->fields == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_fields was not called");
        return NULL;
    }
    PyObject *names = PyDict_Keys(args[2]);  /* a copy: conversions run Python code */
    PyObject *olds = names == NULL ? NULL : PyDict_New();
    if (olds != NULL && set_fields_of(self, (ViewObject *)args[0], args[1], names, olds) < 0)
        Py_CLEAR(olds);
    Py_XDECREF(names);
    return olds;
}

/* view(values=None) -> a view of this tenant's fields, empty or holding `values` */
static PyObject *
Tenant_view(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1 || (nargs == 1 && !PyDict_Check(args[0]))) {
        PyErr_SetString(PyExc_TypeError, "view(values: dict = None)");
        return NULL;
    }
    if (nargs == 1 && self->fields == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_fields was not called");
        return NULL;
    }
    ViewObject *view = view_new(self->nfields);
    if (view == NULL || nargs == 0)
        return (PyObject *)view;
    PyObject *names = PyDict_Keys(args[0]);  /* a copy: conversions run Python code */
    if (names == NULL || set_fields_of(self, view, args[0], names, NULL) < 0)
        Py_CLEAR(view);
    Py_XDECREF(names);
    return (PyObject *)view;
}

/* set_entry(V, field, key, number, date): one field of a view set as it is given */
static PyObject *
Tenant_set_entry(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !Py_IS_TYPE(args[0], &ViewType) ||
        ((ViewObject *)args[0])->n != self->nfields) {
        PyErr_SetString(PyExc_TypeError,
                        "set_entry(V: this tenant's view, field, key, number, date)");
        return NULL;
    }
    Py_ssize_t f = field_id(self, args[1]);
    if (f == -1)
        PyErr_SetString(PyExc_KeyError, "no list reads this field");
    if (f < 0 || set_entry(self, (ViewObject *)args[0], f, args[2], args[3], args[4]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* entries(V) -> {field: (key, number, date)} of the fields that are not empty */
static PyObject *
Tenant_entries(TenantObject *self, PyObject *arg)
{
    if (!Py_IS_TYPE(arg, &ViewType) || ((ViewObject *)arg)->n != self->nfields) {
        PyErr_SetString(PyExc_TypeError, "entries(V: this tenant's view)");
        return NULL;
    }
    const ViewObject *V = (const ViewObject *)arg;
    PyObject *out = PyDict_New();
    for (Py_ssize_t f = 0; out != NULL && f < V->n; f++) {
        if (V->f[f].key == NULL && isnan(V->f[f].num) && V->f[f].date == NO_DATE)
            continue;
        PyObject *entry = entry_of(V, f);
        if (entry == NULL ||
            PyDict_SetItem(out, PyTuple_GET_ITEM(self->field_names, f), entry) < 0)
            Py_CLEAR(out);
        Py_XDECREF(entry);
    }
    return out;
}

/* 1 when a > b, 0 when not, -1 with an error set, as Python compares them: times (ints)
 * and versions ((time, event id) tuples) are compared here, the rest by Python. */
static int
later(PyObject *a, PyObject *b)
{
    int64_t x, y;
    if (small_time(a, &x) && small_time(b, &y))
        return x > y;
    if (PyTuple_CheckExact(a) && PyTuple_CheckExact(b) && PyTuple_GET_SIZE(a) == 2 &&
        PyTuple_GET_SIZE(b) == 2 && small_time(PyTuple_GET_ITEM(a, 0), &x) &&
        small_time(PyTuple_GET_ITEM(b, 0), &y)) {
        if (x != y)
            return x > y;
        return PyObject_RichCompareBool(PyTuple_GET_ITEM(a, 1), PyTuple_GET_ITEM(b, 1), Py_GT);
    }
    return PyObject_RichCompareBool(a, b, Py_GT);
}

/* merge_fields(values, versions, fields, version, changed): an upsert's fields merged
 * into the lead's, as rules/lead.py's merge_fields: a field takes a value whose version
 * is newer than its own; `changed` receives the previous value of each field whose value
 * changed (first one kept): another type, a list or object, or unequal. Names are
 * interned, as the compiled lists' are. */
static PyObject *
native_merge_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyDict_Check(args[0]) || !PyDict_Check(args[1]) ||
        !PyDict_Check(args[2]) || !PyDict_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "merge_fields(values, versions, fields, version, changed)");
        return NULL;
    }
    PyObject *values = args[0], *versions = args[1], *version = args[3], *changed = args[4];
    PyObject *items = PyDict_Items(args[2]);  /* a copy: comparisons may run code */
    if (items == NULL)
        return NULL;
    /* left tracked, an (int, str) version would make the untracked versions dict it
       enters tracked again, and the next young collection would walk that dict */
    if (PyTuple_CheckExact(version))
        untrack_atomic(version);
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(items); k++) {
        PyObject *item = PyList_GET_ITEM(items, k);
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        if (!PyUnicode_CheckExact(name)) {
            PyErr_SetString(PyExc_TypeError, "a field name is a str");
            goto error;
        }
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name);
        PyObject *current = PyDict_GetItemWithError(versions, name);
        int newer = 1;
        if (current != NULL) {
            Py_INCREF(current);
            newer = later(version, current);
            Py_DECREF(current);
        }
        else if (PyErr_Occurred())
            newer = -1;
        if (newer <= 0) {
            Py_DECREF(name);
            if (newer < 0)
                goto error;
            continue;
        }
        PyObject *old = PyDict_GetItemWithError(values, name);
        if (old == NULL && PyErr_Occurred()) {
            Py_DECREF(name);
            goto error;
        }
        old = old == NULL ? Py_None : old;
        Py_INCREF(old);
        int failed = PyDict_SetItem(values, name, value) < 0 ||
            PyDict_SetItem(versions, name, version) < 0;
        /* a list or object counts as changed: equality holds [0] equal to [false] */
        int differ = failed ? -1 : Py_TYPE(old) != Py_TYPE(value) ? 1 :
            PyList_CheckExact(value) || PyDict_CheckExact(value) ? 1 :
            PyObject_RichCompareBool(old, value, Py_NE);
        if (differ > 0) {
            PyObject *kept = PyDict_SetDefault(changed, name, old);
            differ = kept == NULL ? -1 : 0;
        }
        Py_DECREF(old);
        Py_DECREF(name);
        if (differ < 0)
            goto error;
    }
    Py_DECREF(items);
    Py_RETURN_NONE;
error:
    Py_DECREF(items);
    return NULL;
}

static PyObject *native_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* flipping(V, A, moment) -> (join, leave): the time predicates that change value exactly
 * at `moment` (a moment next_flip returned), as CompiledTenant.flipping. */
static PyObject *
Tenant_flipping(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !Py_IS_TYPE(args[0], &ViewType) ||
        ((ViewObject *)args[0])->n != self->nfields || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "flipping(V: this tenant's view, A: dict, moment)");
        return NULL;
    }
    if (self->index == NULL || self->activity == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_index and set_activity were not called");
        return NULL;
    }
    const ViewObject *V = (const ViewObject *)args[0];
    PyObject *A = args[1], *name, *table, *kind, *groups;
    int64_t moment;
    if (as_time(args[2], &moment) < 0)
        return NULL;
    PyObject *join = PyList_New(0), *leave = PyList_New(0);
    if (join == NULL || leave == NULL)
        goto error;
    Py_ssize_t pos = 0;
    while (PyDict_Next(PyTuple_GET_ITEM(self->index, IX_DATES), &pos, &name, &table)) {
        Py_ssize_t f = field_id(self, name);
        if (f == -2)
            goto error;
        if (f < 0 || V->f[f].date == NO_DATE)
            continue;
        int64_t date = V->f[f].date;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(table); k++) {
            PyObject *atom = PyTuple_GET_ITEM(table, k);
            int within = PyObject_IsTrue(PyTuple_GET_ITEM(atom, 0)), now_true;
            int64_t window;
            if (within < 0)
                goto error;
            int64_item(atom, 1, &window);
            if (within) {
                if (date != moment && date + window != moment)
                    continue;
                now_true = date == moment && window > 0;
            }
            else if (date + window == moment)
                now_true = 1;
            else
                continue;
            if (add_turned(join, leave, PyTuple_GET_ITEM(atom, 2), now_true) < 0)
                goto error;
        }
    }
    pos = 0;
    while (PyDict_Next(self->activity, &pos, &kind, &groups)) {
        int present = PyDict_Contains(A, kind);
        if (present < 0)
            goto error;
        if (!present)
            continue;
        for (Py_ssize_t g = 0; g < PyTuple_GET_SIZE(groups); g++) {
            PyObject *group = PyTuple_GET_ITEM(groups, g);
            PyObject *ref = PyTuple_GET_ITEM(group, 0), *window_obj = PyTuple_GET_ITEM(group, 1);
            if (window_obj == Py_None)
                continue;
            int64_t window = 0;
            as_time(window_obj, &window);  /* checked by set_activity */
            ref = ref == Py_None ? NULL : ref;
            Py_ssize_t count = count_activities(A, kind, ref, 1, window, moment);
            Py_ssize_t before = count < 0 ? -1 :
                count_activities(A, kind, ref, 1, window, moment - 1);
            if (before < 0)
                goto error;
            if (count != before &&
                add_crossed(join, leave, PyTuple_GET_ITEM(group, 2), before, count) < 0)
                goto error;
        }
    }
    return Py_BuildValue("(NN)", join, leave);
error:
    Py_XDECREF(join);
    Py_XDECREF(leave);
    return NULL;
}

/* on_change(V, T, S, A, W, values, changed, activities, now, members, tenant, lead, when,
 * cause, seq, Delta) -> (deltas, seq): the incremental step of an event that changed fields
 * and activities only, in one call: the view updated with the changed fields' values, then
 * field_candidates, activity_candidates, evaluate_dirty and record, as
 * CompiledTenant.update_fields and candidates and LeadProcessor._evaluate and _record
 * chain them. */
static PyObject *
Tenant_on_change(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 16) {
        PyErr_SetString(PyExc_TypeError, "on_change(V, T, S, A, W, values, changed, "
                        "activities, now, members, tenant, lead, when, cause, seq, Delta)");
        return NULL;
    }
    PyObject *V = args[0], *T = args[1], *S = args[2], *A = args[3], *W = args[4];
    PyObject *values = args[5], *changed = args[6], *activities = args[7], *now = args[8];
    int64_t at;
    if (!Py_IS_TYPE(V, &ViewType) || ((ViewObject *)V)->n != self->nfields ||
        !PyDict_Check(values) || !PyDict_Check(changed) || !PyByteArray_Check(W) ||
        PyByteArray_GET_SIZE(W) != self->size) {
        PyErr_SetString(PyExc_TypeError, "on_change: V is this tenant's view, values and "
                        "changed dicts, W a bytearray of one byte per list");
        return NULL;
    }
    if (self->fields == NULL || self->index == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_fields and set_index were not called");
        return NULL;
    }
    if (as_time(now, &at) < 0)
        return NULL;
    PyObject *found = NULL, *join = PyList_New(0), *leave = PyList_New(0);
    PyObject *pair = join && leave ? PyTuple_Pack(2, join, leave) : NULL;
    Py_XDECREF(join);
    Py_XDECREF(leave);
    if (pair == NULL)
        return NULL;
    if (update_and_mark(self, (ViewObject *)V, values, changed, W, at, join, leave) < 0)
        goto done;
    int truth = PyObject_IsTrue(activities);
    if (truth < 0)
        goto done;
    if (truth) {
        PyObject *more_args[3] = {A, activities, now};
        PyObject *more = Tenant_activity_candidates(self, more_args, 3);
        if (more == NULL)
            goto done;
        int failed = PyList_SetSlice(join, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX,
                                     PyTuple_GET_ITEM(more, 0)) < 0 ||
            PyList_SetSlice(leave, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX,
                            PyTuple_GET_ITEM(more, 1)) < 0;
        Py_DECREF(more);
        if (failed)
            goto done;
    }
    PyObject *evaluate[9] = {V, T, S, A, W, join, leave, EMPTY_SET, now};
    found = Tenant_evaluate_dirty(self, evaluate, 9);
    if (found == NULL)
        goto done;
    PyObject *record[9] = {found, args[9], args[10], args[11], args[12], args[13], args[14],
                           Py_None, args[15]};
    PyObject *result = native_record(NULL, record, 9);
    Py_DECREF(found);
    Py_DECREF(pair);
    return result;
done:
    Py_DECREF(pair);
    return NULL;
}

/* What on_event reads of a LeadState (rules/lead.py), by attribute. */
enum { ST_SEEN, ST_DEFS_VERSION, ST_VIEW_OWNER, ST_VIEW, ST_WATCH, ST_CLOCK, ST_NEXT_FLIP,
       ST_TOMB, ST_LAST, ST_VALUES, ST_VERSIONS, ST_TAG_SET, ST_STATIC_SET, ST_ACTS,
       ST_MEMBERS, ST_SEQ, ST_COUNT };
static const char *const STATE_NAMES[ST_COUNT] = {
    "seen", "defs_version", "view_owner", "view", "watch", "clock", "next_flip", "tomb",
    "last", "values", "versions", "tag_set", "static_set", "acts", "members", "seq"};
static PyObject *STATE_ATTRS[ST_COUNT];
static PyObject *UPSERTED, *ACTIVITY;  /* "lead_upserted", "activity" */
/* the containers on_event changes, held for the call; the rest it borrows (nothing the
   call runs can reach the state) */
static const int STATE_HELD[] = {ST_SEEN, ST_VIEW, ST_WATCH, ST_VALUES, ST_VERSIONS,
                                 ST_MEMBERS};
#define N_HELD ((int)(sizeof STATE_HELD / sizeof STATE_HELD[0]))

/* Where a LeadState keeps those attributes: its __slots__, read in place (an attribute
 * lookup per read took ~5% of an event). Found once per type. */
static PyTypeObject *state_type;
static Py_ssize_t state_offsets[ST_COUNT];
#define SLOT(state, k) (*(PyObject **)((char *)(state) + state_offsets[k]))

static int
state_layout(PyObject *state)
{
    PyTypeObject *type = Py_TYPE(state);
    if (type == state_type)
        return 0;
    Py_ssize_t offsets[ST_COUNT];
    for (int k = 0; k < ST_COUNT; k++) {
        /* the class attribute: a slot's member descriptor (new reference) */
        PyObject *slot = PyObject_GetAttr((PyObject *)type, STATE_ATTRS[k]);
        if (slot == NULL)
            PyErr_Clear();
        const PyMemberDef *member = slot != NULL && Py_IS_TYPE(slot, &PyMemberDescr_Type) ?
            ((PyMemberDescrObject *)slot)->d_member : NULL;
        Py_XDECREF(slot);  /* the type holds it */
        if (member == NULL || member->type != T_OBJECT_EX || (member->flags & READONLY)) {
            PyErr_Format(PyExc_TypeError, "on_event: the state keeps '%U' elsewhere than "
                         "in LeadState's slots", STATE_ATTRS[k]);
            return -1;
        }
        offsets[k] = member->offset;
    }
    Py_INCREF(type);
    Py_XSETREF(state_type, type);
    memcpy(state_offsets, offsets, sizeof offsets);
    return 0;
}

static void
set_slot(PyObject *state, int k, PyObject *value)
{
    PyObject *old = SLOT(state, k);
    SLOT(state, k) = Py_NewRef(value);
    Py_XDECREF(old);
}


/* An activity event's entry added to its kind's history, as LeadState.apply adds it:
 * kind and ref case-folded and interned, nothing when no rule reads the kind or the
 * entry is there already, else inserted in (time, id) order and the history compacted
 * (LeadState._compact_kind, called when it has something to drop). 1 with *added set to
 * the changed activities' set, 0 when nothing changed, -1 on error. */
static int
add_activity(PyObject *state, PyObject *acts, PyObject *policies, PyObject *event,
             PyObject *clock, PyObject **added)
{
    PyObject *event_id = PyTuple_GET_ITEM(event, 0), *at = PyTuple_GET_ITEM(event, 4);
    PyObject *kind = PyTuple_GET_ITEM(event, 6), *ref = PyTuple_GET_ITEM(event, 7);
    int truth = PyObject_IsTrue(ref);
    if (truth < 0)
        return -1;
    if (!PyUnicode_Check(kind) || (truth && !PyUnicode_Check(ref))) {
        PyErr_SetString(PyExc_TypeError, "an activity's kind and ref are text");
        return -1;
    }
    kind = PyObject_CallMethod(kind, "casefold", NULL);
    if (kind == NULL)
        return -1;
    PyUnicode_InternInPlace(&kind);
    ref = truth ? PyObject_CallMethod(ref, "casefold", NULL) : Py_NewRef(Py_None);
    if (ref == NULL) {
        Py_DECREF(kind);
        return -1;
    }
    if (ref != Py_None)
        PyUnicode_InternInPlace(&ref);
    int result = -1;
    PyObject *entry = NULL;
    Py_INCREF(acts);  /* held: _compact_kind runs Python code */
    PyObject *policy = PyDict_GetItemWithError(policies, kind);
    if (policy == NULL) {
        result = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    if (!PyTuple_Check(policy) || PyTuple_GET_SIZE(policy) < 2) {
        PyErr_SetString(PyExc_TypeError, "a policy is an ActivityPolicy");
        goto done;
    }
    Py_ssize_t cap = PyLong_AsSsize_t(PyTuple_GET_ITEM(policy, 1));
    if (cap == -1 && PyErr_Occurred())
        goto done;
    PyObject *entries = PyDict_GetItemWithError(acts, kind);
    if (entries == NULL) {
        if (PyErr_Occurred() || (entries = PyList_New(0)) == NULL)
            goto done;
        int failed = PyDict_SetItem(acts, kind, entries);
        Py_DECREF(entries);
        if (failed < 0)
            goto done;
    }
    else if (!PyList_Check(entries)) {
        PyErr_SetString(PyExc_TypeError, "activities must be lists");
        goto done;
    }
    Py_INCREF(entries);
    /* the id is not there already; the place after every older (time, id) */
    Py_ssize_t n = PyList_GET_SIZE(entries), place = n;
    for (Py_ssize_t k = n - 1; k >= 0; k--) {
        PyObject *e = PyList_GET_ITEM(entries, k);
        if (activity_shape(e) < 0)
            goto drop;
        int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(e, 1), event_id, Py_EQ);
        if (same != 0) {
            result = same < 0 ? -1 : 0;
            goto drop;
        }
    }
    if ((entry = PyTuple_Pack(3, at, event_id, ref)) == NULL)
        goto drop;
    untrack_atomic(entry);
    while (place > 0) {
        /* insort: after every entry whose (time, id) is not later than the new one's */
        PyObject *e = PyList_GET_ITEM(entries, place - 1);
        int after = later(PyTuple_GET_ITEM(e, 0), at);
        if (after == 0) {
            int before = later(at, PyTuple_GET_ITEM(e, 0));
            if (before < 0)
                goto drop;
            after = before ? 0 : later(PyTuple_GET_ITEM(e, 1), event_id);  /* by id */
        }
        if (after < 0)
            goto drop;
        if (!after)
            break;
        place--;
    }
    if (PyList_Insert(entries, place, entry) < 0)
        goto drop;
    /* compaction when it has something to drop: entries past the horizon, or more than
       `cap` (the per-group count is LeadState's to work out) */
    int compact = PyList_GET_SIZE(entries) > cap;
    PyObject *horizon = PyTuple_GET_ITEM(policy, 0);
    if (!compact && horizon != Py_None && clock != Py_None) {
        int64_t first, now, span;
        if (entry_time(PyList_GET_ITEM(entries, 0), &first) < 0 || as_time(clock, &now) < 0
            || as_time(horizon, &span) < 0)
            goto drop;
        compact = first <= now - span;
    }
    if (compact) {
        PyObject *done_ = PyObject_CallMethod(state, "_compact_kind", "OO", kind, policy);
        if (done_ == NULL)
            goto drop;
        Py_DECREF(done_);
    }
    PyObject *change = PyTuple_Pack(4, kind, ref, at, event_id);
    *added = change ? PySet_New(NULL) : NULL;
    if (*added != NULL && PySet_Add(*added, change) < 0)
        Py_CLEAR(*added);
    Py_XDECREF(change);
    result = *added == NULL ? -1 : 1;
drop:
    Py_DECREF(entries);
done:
    Py_XDECREF(entry);
    Py_DECREF(acts);
    Py_DECREF(kind);
    Py_DECREF(ref);
    return result;
}

/* on_event(state, event, owner, version, seen_max, Delta, policies) -> deltas, or None
 *
 * LeadProcessor.on_event for the common events, an upsert or an activity of a lead that
 * exists and is evaluated against these definitions (`owner` is the CompiledTenant,
 * `version` its definitions' version, `policies` its activity policies), in one call:
 * the event id remembered, the clock moved, the fields merged (merge_fields) or the
 * activity added, then on_change, and next_flip when a date field or the activities
 * changed. None, with the state untouched, when the event needs more than that: another
 * kind of event, a duplicate, the seen ids to prune (seen_max), a deletion newer than
 * the event, a lead that does not exist, definitions or view not followed yet. False,
 * with the state untouched, when only a timer due by the event's time stands in the
 * way. */
static PyObject *
Tenant_on_event(TenantObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyDict_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "on_event(state, event, owner, version, seen_max, Delta, policies)");
        return NULL;
    }
    PyObject *state = args[0], *event = args[1];
    if (!PyTuple_Check(event) || PyTuple_GET_SIZE(event) < 8) {
        PyErr_SetString(PyExc_TypeError, "on_event: event is a ChangeEvent");
        return NULL;
    }
    Py_ssize_t seen_max = PyLong_AsSsize_t(args[4]);
    if (seen_max == -1 && PyErr_Occurred())
        return NULL;
    PyObject *event_id = PyTuple_GET_ITEM(event, 0), *type = PyTuple_GET_ITEM(event, 3);
    PyObject *at = PyTuple_GET_ITEM(event, 4), *fields = PyTuple_GET_ITEM(event, 5);
    int upsert = type == UPSERTED, activity = type == ACTIVITY;
    if (!upsert && !activity) {
        if ((upsert = PyObject_RichCompareBool(type, UPSERTED, Py_EQ)) < 0 ||
            (!upsert && (activity = PyObject_RichCompareBool(type, ACTIVITY, Py_EQ)) < 0))
            return NULL;
        if (!upsert && !activity)
            Py_RETURN_NONE;
    }
    if (upsert && !PyDict_Check(fields))
        Py_RETURN_NONE;
    if (state_layout(state) < 0)
        return NULL;
    PyObject *st[ST_COUNT];
    for (int k = 0; k < ST_COUNT; k++)
        if ((st[k] = SLOT(state, k)) == NULL)
            Py_RETURN_NONE;  /* unset: the general path says so */
    for (int k = 0; k < N_HELD; k++)
        Py_INCREF(st[STATE_HELD[k]]);
    PyObject *result = NULL, *version = NULL, *changed = NULL, *now = NULL, *added = NULL;
    PyObject *V = st[ST_VIEW], *W = st[ST_WATCH], *tomb = st[ST_TOMB], *last = st[ST_LAST];
    /* the conditions, state untouched */
    int ok;
    if (st[ST_VIEW_OWNER] != args[2] || !Py_IS_TYPE(V, &ViewType) ||
        ((ViewObject *)V)->n != self->nfields || !PyByteArray_Check(W) ||
        PyByteArray_GET_SIZE(W) != self->size || !PyDict_Check(st[ST_SEEN]) ||
        PyDict_GET_SIZE(st[ST_SEEN]) >= seen_max || last == Py_None ||
        !PyDict_Check(st[ST_VALUES]) || !PyDict_Check(st[ST_VERSIONS]) ||
        !PyDict_Check(st[ST_MEMBERS]) || !PyDict_Check(st[ST_ACTS]))
        goto fallback;
    if ((ok = PyObject_RichCompareBool(st[ST_DEFS_VERSION], args[3], Py_EQ)) <= 0)
        goto checked;
    if ((ok = PyDict_Contains(st[ST_SEEN], event_id)) != 0) {
        ok = ok < 0 ? -1 : 0;
        goto checked;
    }
    if ((version = PyTuple_Pack(2, at, event_id)) == NULL)
        goto done;
    if (tomb != Py_None) {
        /* the lead exists (last > tomb) and the event is no older than the deletion */
        if ((ok = later(last, tomb)) <= 0)
            goto checked;
        if ((ok = later(tomb, version)) != 0) {
            ok = ok < 0 ? -1 : 0;
            goto checked;
        }
    }
    now = at;
    if (st[ST_CLOCK] != Py_None) {
        if ((ok = later(at, st[ST_CLOCK])) < 0)
            goto done;
        now = ok ? at : st[ST_CLOCK];
    }
    Py_INCREF(now);
    if (st[ST_NEXT_FLIP] != Py_None && (ok = later(st[ST_NEXT_FLIP], now)) <= 0) {
        if (ok == 0)  /* all else holds: the caller lets time run, then calls again */
            result = Py_NewRef(Py_False);
        goto done;
    }
    /* the event applies: LeadState._remember and apply, as on_event orders them */
    if (PyDict_SetItem(st[ST_SEEN], event_id, at) < 0)
        goto done;
    set_slot(state, ST_CLOCK, now);
    if ((ok = later(version, last)) < 0)
        goto done;
    if (ok)
        set_slot(state, ST_LAST, version);
    if ((changed = PyDict_New()) == NULL)
        goto done;
    if (upsert) {
        PyObject *merge[5] = {st[ST_VALUES], st[ST_VERSIONS], fields, version, changed};
        PyObject *merged = native_merge_fields(NULL, merge, 5);
        if (merged == NULL)
            goto done;
        Py_DECREF(merged);
        ok = PyDict_GET_SIZE(changed) > 0;
    }
    else if ((ok = add_activity(state, st[ST_ACTS], args[6], event, now, &added)) < 0)
        goto done;
    if (!ok) {
        result = PyList_New(0);
        goto done;
    }
    PyObject *step[16] = {V, st[ST_TAG_SET], st[ST_STATIC_SET], st[ST_ACTS], W,
                          st[ST_VALUES], changed, added ? added : EMPTY_SET, now,
                          st[ST_MEMBERS], PyTuple_GET_ITEM(event, 1),
                          PyTuple_GET_ITEM(event, 2), at, event_id, st[ST_SEQ], args[5]};
    PyObject *out = Tenant_on_change(self, step, 16);
    if (out == NULL)
        goto done;
    set_slot(state, ST_SEQ, PyTuple_GET_ITEM(out, 1));
    result = Py_NewRef(PyTuple_GET_ITEM(out, 0));
    Py_DECREF(out);
    /* the activities or a date field changed: the next flip may have moved */
    int dated = activity && self->time != NULL &&
        (self->time->ndates > 0 || self->time->nkinds > 0);
    PyObject *name, *old;
    Py_ssize_t pos = 0;
    while (!dated && PyDict_Next(changed, &pos, &name, &old))
        if ((dated = PySet_Contains(PyTuple_GET_ITEM(self->fields, FX_DATES), name)) < 0)
            goto failed;
    if (dated) {
        PyObject *flip_args[3] = {V, st[ST_ACTS], now};
        PyObject *flip = Tenant_next_flip(self, flip_args, 3);
        if (flip == NULL)
            goto failed;
        set_slot(state, ST_NEXT_FLIP, flip);
        Py_DECREF(flip);
    }
    goto done;
checked:
    if (ok < 0)
        goto done;
fallback:
    result = Py_NewRef(Py_None);
    goto done;
failed:
    Py_CLEAR(result);
done:
    for (int k = 0; k < N_HELD; k++)
        Py_DECREF(st[STATE_HELD[k]]);
    Py_XDECREF(version);
    Py_XDECREF(changed);
    Py_XDECREF(added);
    Py_XDECREF(now);
    return result;
}

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

/* -- SHA-256 (FIPS 180-4), for delta ids ---------------------------------------------- */

typedef struct {
    uint32_t h[8];
} Sha256;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void
sha256_block_c(Sha256 *s, const unsigned char *b)
{
    uint32_t w[64], a, bb, c, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
               (uint32_t)b[4 * i + 2] << 8 | (uint32_t)b[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0]; bb = s->h[1]; c = s->h[2]; d = s->h[3];
    e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) +
                      K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
        h = g; g = f; f = e; e = d + t1;
        d = c; c = bb; bb = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += bb; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_NI_PATH 1

/* The same compression with the CPU's SHA extensions (checked at import). */
__attribute__((target("sha,sse4.1,ssse3"))) static void
sha256_block_ni(Sha256 *s, const unsigned char *b)
{
    const __m128i order = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&s->h[0]);      /* a b c d */
    __m128i state1 = _mm_loadu_si128((const __m128i *)&s->h[4]);   /* e f g h */
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                             /* c d a b */
    state1 = _mm_shuffle_epi32(state1, 0x1B);                       /* h g f e */
    __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);               /* a b e f */
    state1 = _mm_blend_epi16(state1, tmp, 0xF0);                    /* c d g h */
    __m128i abef = state0, cdgh = state1, w[4];
    for (int g = 0; g < 16; g++) {
        __m128i m;
        if (g < 4) {
            m = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b + 16 * g)), order);
        }
        else {
            m = _mm_sha256msg1_epu32(w[g & 3], w[(g + 1) & 3]);
            m = _mm_add_epi32(m, _mm_alignr_epi8(w[(g + 3) & 3], w[(g + 2) & 3], 4));
            m = _mm_sha256msg2_epu32(m, w[(g + 3) & 3]);
        }
        w[g & 3] = m;
        __m128i k = _mm_add_epi32(m, _mm_loadu_si128((const __m128i *)&K256[4 * g]));
        state1 = _mm_sha256rnds2_epu32(state1, state0, k);
        state0 = _mm_sha256rnds2_epu32(state0, state1, _mm_shuffle_epi32(k, 0x0E));
    }
    state0 = _mm_add_epi32(state0, abef);
    state1 = _mm_add_epi32(state1, cdgh);
    tmp = _mm_shuffle_epi32(state0, 0x1B);                          /* f e b a */
    state1 = _mm_shuffle_epi32(state1, 0xB1);                       /* d c h g */
    state0 = _mm_blend_epi16(tmp, state1, 0xF0);                    /* d c b a */
    state1 = _mm_alignr_epi8(state1, tmp, 8);                       /* h g f e */
    _mm_storeu_si128((__m128i *)&s->h[0], state0);
    _mm_storeu_si128((__m128i *)&s->h[4], state1);
}

static int
cpu_has_sha(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b & bit_SHA) != 0;
}
#endif

static void (*sha256_block)(Sha256 *, const unsigned char *) = sha256_block_c;

/* The SHA-256 of the n bytes at `message`, which has room for 72 more after them: the
 * padding goes there and the blocks are hashed in place. */
static void
sha256_message(unsigned char *message, size_t n, unsigned char out[32])
{
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    Sha256 s;
    memcpy(s.h, init, sizeof init);
    uint64_t bits = (uint64_t)n * 8;
    size_t padded = (n + 9 + 63) / 64 * 64;
    message[n] = 0x80;
    memset(message + n + 1, 0, padded - n - 9);
    for (int i = 0; i < 8; i++)
        message[padded - 8 + i] = (unsigned char)(bits >> (56 - 8 * i));
    for (size_t at = 0; at < padded; at += 64)
        sha256_block(&s, message + at);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(s.h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s.h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s.h[i] >> 8);
        out[4 * i + 3] = (unsigned char)s.h[i];
    }
}

/* The delta id of schemas.records.make_delta: the first 32 hex digits of the SHA-256 of
 * tenant, lead, list, action and cause (and salt, when not None) joined by \x1f, each in
 * UTF-8 ('surrogatepass', as make_delta encodes). The message is laid out in one buffer
 * and hashed there. */
static PyObject *
delta_id(PyObject *tenant, PyObject *lead, PyObject *list_id, PyObject *action,
         PyObject *cause, PyObject *salt_text)
{
    static const char hex[] = "0123456789abcdef";
    PyObject *parts[6] = {tenant, lead, list_id, action, cause, salt_text};
    PyObject *encoded[6] = {NULL};
    const char *bytes[6];
    Py_ssize_t sizes[6];
    int count = salt_text == NULL ? 5 : 6;
    size_t n = (size_t)count - 1;  /* the separators */
    PyObject *result = NULL;
    for (int k = 0; k < count; k++) {
        if (!PyUnicode_Check(parts[k])) {
            PyErr_SetString(PyExc_TypeError, "a delta id is made of text");
            goto done;
        }
        if (PyUnicode_IS_ASCII(parts[k])) {
            bytes[k] = PyUnicode_DATA(parts[k]);
            sizes[k] = PyUnicode_GET_LENGTH(parts[k]);
        }
        else {
            encoded[k] = PyUnicode_AsEncodedString(parts[k], "utf-8", "surrogatepass");
            if (encoded[k] == NULL)
                goto done;
            bytes[k] = PyBytes_AS_STRING(encoded[k]);
            sizes[k] = PyBytes_GET_SIZE(encoded[k]);
        }
        n += (size_t)sizes[k];
    }
    unsigned char stack[512], digest[32];
    unsigned char *message = n + 72 <= sizeof stack ? stack : PyMem_Malloc(n + 72);
    if (message == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t at = 0;
    for (int k = 0; k < count; k++) {
        if (k)
            message[at++] = 0x1f;
        memcpy(message + at, bytes[k], (size_t)sizes[k]);
        at += (size_t)sizes[k];
    }
    sha256_message(message, n, digest);
    if (message != stack)
        PyMem_Free(message);
    if ((result = PyUnicode_New(32, 127)) != NULL) {
        Py_UCS1 *text = PyUnicode_1BYTE_DATA(result);
        for (int k = 0; k < 16; k++) {
            text[2 * k] = (Py_UCS1)hex[digest[k] >> 4];
            text[2 * k + 1] = (Py_UCS1)hex[digest[k] & 15];
        }
    }
done:
    for (int k = 0; k < count; k++)
        Py_XDECREF(encoded[k]);
    return result;
}

/* record(found, members, tenant, lead, when, cause, seq, salt, Delta) -> (deltas, seq)
 *
 * CompiledTenant/LeadProcessor's _record: each (list id, added, depth) of `found`
 * updates `members` (list id -> since) and becomes a Delta numbered from seq + 1. */
static PyObject *
native_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError,
                        "record(found, members, tenant, lead, when, cause, seq, salt, Delta)");
        return NULL;
    }
    PyObject *found = args[0], *members = args[1], *tenant = args[2], *lead = args[3];
    PyObject *when = args[4], *cause = args[5], *salt = args[7];
    PyTypeObject *delta_type = (PyTypeObject *)args[8];
    if (!PyDict_Check(members) || !PyType_Check(args[8]) ||
        !PyType_IsSubtype(delta_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "members is a dict and Delta a tuple type");
        return NULL;
    }
    Py_ssize_t seq = PyLong_AsSsize_t(args[6]);
    if (seq == -1 && PyErr_Occurred())
        return NULL;
    PyObject *salt_text = NULL;
    if (salt != Py_None && (salt_text = PyObject_Str(salt)) == NULL)
        return NULL;
    /* a copy: its rows stay alive whatever happens to `found` meanwhile */
    PyObject *rows = PySequence_Tuple(found);
    if (rows == NULL) {
        Py_XDECREF(salt_text);
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(rows);
    PyObject *deltas = PyList_New(n);
    if (deltas == NULL)
        goto error;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *row = PyTuple_GET_ITEM(rows, k);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 3) {
            PyErr_SetString(PyExc_TypeError, "a change is (list id, added, depth)");
            goto error;
        }
        PyObject *list_id = PyTuple_GET_ITEM(row, 0), *depth = PyTuple_GET_ITEM(row, 2);
        int added = PyObject_IsTrue(PyTuple_GET_ITEM(row, 1));
        if (added < 0)
            goto error;
        if (added) {
            if (PyDict_SetItem(members, list_id, when) < 0)
                goto error;
        }
        else if (PyDict_DelItem(members, list_id) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError))
                goto error;
            PyErr_Clear();
        }
        seq++;
        PyObject *action = added ? ADDED : REMOVED;
        PyObject *id = delta_id(tenant, lead, list_id, action, cause, salt_text);
        if (id == NULL)
            goto error;
        PyObject *number = PyLong_FromSsize_t(seq);
        PyObject *delta = number ? delta_type->tp_alloc(delta_type, 9) : NULL;
        if (delta == NULL) {
            Py_DECREF(id);
            Py_XDECREF(number);
            goto error;
        }
        PyObject *items[9] = {id, tenant, lead, list_id, action, when, cause, depth, number};
        for (int f = 0; f < 9; f++) {
            if (f != 0 && f != 8)
                Py_INCREF(items[f]);
            PyTuple_SET_ITEM(delta, f, items[f]);
        }
        untrack_atomic(delta);
        PyList_SET_ITEM(deltas, k, delta);
    }
    Py_DECREF(rows);
    Py_XDECREF(salt_text);
    PyObject *result = Py_BuildValue("(Nn)", deltas, seq);
    return result;
error:
    Py_DECREF(rows);
    Py_XDECREF(salt_text);
    Py_XDECREF(deltas);
    return NULL;
}

/* delta_id(tenant, lead, list_id, action, cause, salt) -> str, for the tests */
static PyObject *
native_delta_id(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "delta_id(tenant, lead, list_id, action, cause, salt)");
        return NULL;
    }
    PyObject *salt_text = NULL;
    if (args[5] != Py_None && (salt_text = PyObject_Str(args[5])) == NULL)
        return NULL;
    PyObject *id = delta_id(args[0], args[1], args[2], args[3], args[4], salt_text);
    Py_XDECREF(salt_text);
    return id;
}

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
