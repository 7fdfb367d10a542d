/* The field view: field values converted as the compiler's conversions do (update_view,
 * set_fields), the upsert's field merge (merge_fields), due timers (flipping) and a
 * change's evaluation (on_change).
 *
 * Part of rules/_native.c, which includes it: one translation unit, so the parts share
 * their static functions and types, and their order there is the order of definition.
 */

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
