/* The compiled tenant (Tenant): its programs and index entries checked once when set
 * (check_node), lists evaluated, the watch, and the cascade (marks, evaluate_dirty);
 * the helpers every table setter uses (keep_once, malformed).
 *
 * Part of rules/_native.c, which includes it: one translation unit, so the parts share
 * their static functions and types, and their order there is the order of definition.
 */

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
