/* Evaluation: one list program's value for a lead (eval_node), and what it reads:
 * times and activity counts, regular expressions (with their memo) and string operators.
 *
 * Part of rules/_native.c, which includes it: one translation unit, so the parts share
 * their static functions and types, and their order there is the order of definition.
 */

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
