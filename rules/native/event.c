/* An event's whole path in one call (Tenant.on_event): the LeadState's slots read in
 * place, the merge, the activity, the evaluation, the records and next_flip.
 *
 * Part of rules/_native.c, which includes it: one translation unit, so the parts share
 * their static functions and types, and their order there is the order of definition.
 */

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
