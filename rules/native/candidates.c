/* Candidates: which lists a changed field (field_candidates, from the predicate
 * indexes set by set_index) or a new activity (activity_candidates) can move.
 *
 * Part of rules/_native.c, which includes it: one translation unit, so the parts share
 * their static functions and types, and their order there is the order of definition.
 */

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
