/* Time: the tables of the date and activity windows (set_time) and next_flip, the
 * next moment a list's time-window condition flips for a lead.
 *
 * Part of rules/_native.c, which includes it: one translation unit, so the parts share
 * their static functions and types, and their order there is the order of definition.
 */

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
