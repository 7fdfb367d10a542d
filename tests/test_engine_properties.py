"""Property tests of the engine: the fast paths always agree with the reference.

Random definitions (nested groups, DAGs of references, every operator, activities,
dates) meet random leads; each property runs at least 1,000 examples. Every example
runs on both backends: the compiled Python functions and, where it is built, the C
evaluation loop (rules/_native.c), which must give the very same deltas.
"""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import LeadProcessor, LeadState, evaluate_tenant, parse_definitions
from rules.compiler import CompiledTenant
from rules.lead import Changes, activity_order
from rules.reference import deltas_between
from schemas.values import DAY_US
from rules.compiler import NATIVE
from tests.conftest import require_native
from tests.oracle import fold
from tests.strategies import definitions_doc, event_histories, profiles, times

MANY = settings(max_examples=1000, deadline=None)
BACKENDS = (False, True) if NATIVE else (False,)  # native: evaluate with rules/_native.c


def test_the_c_backend_is_built():
    """Says so (or fails under CI=true) when the properties below ran in Python only."""
    require_native(True)


def compiled(doc, native=False):
    definitions = parse_definitions(doc)
    tenant = definitions.tenants["t1"]
    return tenant, CompiledTenant(tenant, definitions.version, native)


def full(ct, state, now):
    return ct.evaluate_all(ct.view_of(state), state.tag_set, state.static_set, state.acts, now)


@MANY
@given(doc=definitions_doc(), profile=profiles(), now=times())
def test_compiled_equals_reference(doc, profile, now):
    watches = set()
    for native in BACKENDS:
        tenant, ct = compiled(doc, native)
        state = LeadState.from_profile(profile)
        watch = bytearray(ct.size)
        assert ct.evaluate_all(ct.view_of(state), state.tag_set, state.static_set,
                               state.acts, now, watch) == evaluate_tenant(tenant, profile, now)
        watches.add(bytes(watch))
    assert len(watches) == 1, "both backends set the same watches"


def _changes_between(before, after):
    changes = Changes()
    for name in set(before.fields) | set(after.fields):
        if before.fields.get(name) != after.fields.get(name) or \
                type(before.fields.get(name)) is not type(after.fields.get(name)):
            changes.fields[name] = before.fields.get(name)
    changes.tags = set(before.tags ^ after.tags)
    changes.statics = set(before.static_lists ^ after.static_lists)
    assert set(before.activities) <= set(after.activities), "activities are only added"
    changes.activities = {(kind, ref, at, eid) for at, kind, ref, eid in
                          set(after.activities) - set(before.activities)}
    return changes


@st.composite
def profile_pairs(draw):
    """A profile and a second one: either unrelated, or the first with a few edits."""
    first = draw(profiles())
    other = draw(profiles())
    added = tuple((ts, kind, ref, "new-" + eid) for ts, kind, ref, eid in other.activities)
    if draw(st.booleans()):
        acts = tuple(sorted(set(first.activities + added), key=activity_order))
        return first, other._replace(activities=acts)
    names = draw(st.lists(st.sampled_from(sorted(set(first.fields) | set(other.fields)
                                                 | {"score"})), max_size=3))
    fields = dict(first.fields)
    for name in names:
        if name in other.fields:
            fields[name] = other.fields[name]
        else:
            fields.pop(name, None)
    acts = first.activities + added[:draw(st.integers(0, 2))]
    return first, first._replace(fields=fields,
                                 activities=tuple(sorted(set(acts), key=activity_order)))


# memberships a lead may hold before a definition change: any lists, some gone since
EARLIER_MEMBERS = st.sets(st.sampled_from([f"l{i}" for i in range(8)] + ["s0", "s1", "gone"]))


@MANY
@given(doc=definitions_doc(), pair=profile_pairs(), now=times(), earlier=EARLIER_MEMBERS)
def test_incremental_equals_full(doc, pair, now, earlier):
    """The incremental deltas equal the full path's and the reference's, depths included,
    and so do a new lead's and a lead's after a definition change (memberships `earlier`)."""
    results = [check_incremental(*compiled(doc, native), pair, now, earlier)
               for native in BACKENDS]
    assert results.count(results[0]) == len(results), "both backends agree"


def check_incremental(tenant, ct, pair, now, earlier=frozenset()):
    before, after = pair
    old = LeadState.from_profile(before)
    watch = bytearray(ct.size)
    members = ct.evaluate_all(ct.view_of(old), old.tag_set, old.static_set, old.acts, now,
                              watch)
    members_before = set(members)
    new = LeadState.from_profile(after)
    view = ct.view_of(new)
    changes = _changes_between(before, after)
    old_fields = {name: ct.field_entry(name, value) for name, value in changes.fields.items()}
    candidates = ct.candidates(view, new.tag_set, new.acts, changes, old_fields, now)
    deltas = ct.evaluate_dirty(view, new.tag_set, new.static_set, new.acts, watch,
                               candidates, now)
    expected = evaluate_tenant(tenant, after, now)
    assert ct.members_of(watch) == expected
    for lid, added, _ in deltas:
        assert (lid in members) != added, "a delta changes the membership"
        (members.add if added else members.discard)(lid)
    assert members == expected
    fresh = bytearray(ct.size)
    ct.evaluate_all(view, new.tag_set, new.static_set, new.acts, now, fresh)
    assert [w == 255 for w in watch] == [w == 255 for w in fresh]
    assert {lid for lid, _, _ in deltas} == \
        (full(ct, old, now) ^ expected), "each changed list gets exactly one delta"
    assert deltas == deltas_between(tenant, members_before, after, now), "depths too"
    diff = ct.diff  # the full path: evaluate_all, then diff against the memberships before
    context = (view, new.tag_set, new.static_set, new.acts, fresh, now)
    assert diff(members_before, expected, *context) == deltas
    fresh_lead = diff(set(), expected, *context)
    assert fresh_lead == deltas_between(tenant, set(), after, now), "a new lead"
    earlier = set(earlier)
    redefined = diff(earlier, expected, *context)
    assert redefined == deltas_between(tenant, earlier, after, now), "a definition change"
    return deltas, bytes(watch), fresh_lead, redefined


@MANY
@given(doc=definitions_doc(), profile=profiles(), now=times(),
       fractions=st.lists(st.floats(0, 1), max_size=4))
def test_next_flip_is_never_later_than_a_real_flip(doc, profile, now, fractions):
    flips = set()
    for native in BACKENDS:
        tenant, ct = compiled(doc, native)
        state = LeadState.from_profile(profile)
        flips.add(ct.next_flip(ct.view_of(state), state.acts, now))
    assert len(flips) == 1, "both backends give the same moment"
    flip = flips.pop()
    assert flip is None or flip > now
    at_now = evaluate_tenant(tenant, profile, now)
    end = flip if flip is not None else now + 400 * DAY_US
    for moment in [end - 1] + [now + int(f * (end - 1 - now)) for f in fractions]:
        assert evaluate_tenant(tenant, profile, moment) == at_now, moment


def check_depths(tenant, deltas, members, before, after, now):
    """Each cause's run of `deltas` is what rules.reference.deltas_between gives from the
    memberships before it, depths included: a time-window flip's over the profile
    `before` the event, at the flip; the event's over the profile `after` it, at `now`."""
    members = set(members)
    for cause, run in itertools.groupby(deltas, key=lambda d: d.cause):
        run = list(run)
        profile, moment = (before, run[0].event_time) if cause.startswith("timer:") else \
            (after, now)
        # the same changes at the same depths; the order within a run is the engine's
        # (a deletion lists its removals by list id, the reference by dependency order)
        assert sorted((d.list_id, d.action == "added", d.cascade_depth) for d in run) == \
            sorted(deltas_between(tenant, members, profile, moment)), cause
        for d in run:
            (members.add if d.action == "added" else members.discard)(d.list_id)


@MANY
@given(doc=definitions_doc(), events=event_histories(leads=("L1", "L2")),
       later=st.integers(0, 60 * DAY_US))
def test_processor_converges_for_any_order_and_duplicates(doc, events, later):
    """Per event, the incremental result equals a from-scratch evaluation of the fold,
    its deltas' depths are the reference's, and the C backend's deltas (ids, order,
    depths, seq) equal the Python one's."""
    definitions = parse_definitions(doc)
    tenant = definitions.tenants["t1"]
    processor = LeadProcessor(definitions, False)
    twin = LeadProcessor(definitions, True) if NATIVE else None
    states, twins, seen, memberships = {}, {}, {}, {}
    for event in events:
        state = states.setdefault(event.lead_id, LeadState())
        outcome, deltas = processor.on_event(state, event)
        if twin:
            assert twin.on_event(twins.setdefault(event.lead_id, LeadState()), event) == \
                (outcome, deltas)
        history = seen.setdefault(event.lead_id, [])
        assert (outcome == "duplicate") == any(e.event_id == event.event_id for e in history)
        folded_before = fold(history)
        history.append(event)
        current = memberships.setdefault(event.lead_id, set())
        check_depths(tenant, deltas, current, folded_before, fold(history), state.clock)
        for delta in deltas:
            assert (delta.action == "added") != (delta.list_id in current)
            (current.add if delta.action == "added" else current.discard)(delta.list_id)
        expected = evaluate_tenant(tenant, fold(history), state.clock)
        assert set(state.members) == expected == current
    for lead, state in states.items():
        moment = state.clock + later
        members_before = set(state.members)
        deltas = processor.on_timer(state, "t1", lead, moment)
        assert set(state.members) == evaluate_tenant(tenant, fold(seen[lead]), moment)
        check_depths(tenant, deltas, members_before, fold(seen[lead]), None, None)
        if twin:
            assert twin.on_timer(twins[lead], "t1", lead, moment) == deltas
            assert twins[lead].to_dict() == state.to_dict()


_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
                max_size=40)


@MANY
@given(parts=st.tuples(_TEXT, _TEXT, _TEXT, st.booleans(), _TEXT),
       salt=st.none() | st.integers(0, 10 ** 6))
def test_c_delta_ids_equal_make_delta(parts, salt):
    """The C SHA-256 gives make_delta's ids, lone surrogates and salts included."""
    require_native(True)
    from rules import _native
    from schemas.records import make_delta
    tenant, lead, list_id, added, cause = parts
    expected = make_delta(tenant, lead, list_id, added, 0, cause, 0, 1, salt).delta_id
    action = "added" if added else "removed"
    assert _native.delta_id(tenant, lead, list_id, action, cause, salt) == expected


def test_c_delta_ids_of_every_padding_length_and_of_long_text():
    """Messages of every length modulo the 64-byte block (the padding takes one block or
    two) and longer than the C module's stack buffer, in ASCII and not."""
    require_native(True)
    from rules import _native
    from schemas.records import make_delta
    for size in [*range(0, 140), 500, 700, 5000]:
        for cause in ("c" * size, "é" * size):
            expected = make_delta("t", "l", "x", True, 0, cause, 0, 1, None).delta_id
            assert _native.delta_id("t", "l", "x", "added", cause, None) == expected, size


def test_both_c_sha256_paths_give_hashlib_digests():
    """rules._native hashes with the CPU's SHA extensions where it has them, in plain C
    otherwise (or with DYNLISTS_NO_SHA_NI set): both give hashlib's ids, over one and
    several blocks."""
    require_native(True)
    import os
    import subprocess
    import sys
    script = (
        "import hashlib, random\n"
        "from rules import _native\n"
        "r = random.Random(5)\n"
        "for n in range(3000):\n"
        "    parts = [''.join(chr(r.choice([r.randint(1, 127), r.randint(128, 0x10FFFF)]))\n"
        "                     for _ in range(r.randint(0, 70))) for _ in range(5)]\n"
        "    text = '\\x1f'.join(parts)\n"
        "    want = hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:32]\n"
        "    assert _native.delta_id(*parts, None) == want, parts\n"
        "print(_native.SHA256)\n")
    paths = set()
    for env in ({}, {"DYNLISTS_NO_SHA_NI": "1"}):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={**os.environ, **env}, check=False)
        assert done.returncode == 0, done.stderr
        paths.add(done.stdout.strip())
    assert "c" in paths


_DEPTH_DOC = {"tenants": ["t1"], "lists": [
    {"tenant_id": "t1", "list_id": "A", "rules": {"field": "x", "op": "eq", "value": 1}},
    {"tenant_id": "t1", "list_id": "C", "rules": {"field": "y", "op": "eq", "value": 1}},
    {"tenant_id": "t1", "list_id": "A1", "rules": {"list": "C"}},
    # its own criteria hold all along: it joins through A
    {"tenant_id": "t1", "list_id": "B", "rules": {"all": [
        {"list": "A"}, {"not": {"field": "s", "op": "eq", "value": 9}}]}},
    # z changes with A, but only w = 1 lets z's change count
    {"tenant_id": "t1", "list_id": "B2", "rules": {"any": [
        {"all": [{"field": "z", "op": "eq", "value": 1},
                 {"field": "w", "op": "eq", "value": 1}]}, {"list": "A"}]}},
    # A's change cannot mark it while A1 is false, yet A is its shallowest change
    {"tenant_id": "t1", "list_id": "B3", "rules": {"all": [{"list": "A1"}, {"list": "A"}]}},
]}


@pytest.mark.parametrize("native", BACKENDS)
@pytest.mark.parametrize("earlier, final, depths", [
    ({"x": 0, "y": 0, "z": 0}, {"x": 1, "y": 1, "z": 1},
     {"A": 0, "C": 0, "A1": 1, "B": 1, "B2": 1, "B3": 1}),
    ({"x": 0, "y": 0, "z": 0, "w": 1}, {"x": 1, "y": 1, "z": 1, "w": 1},
     {"A": 0, "C": 0, "A1": 1, "B": 1, "B2": 0, "B3": 1}),
])
def test_an_existing_and_a_new_lead_get_the_same_depths(native, earlier, final, depths):
    """The depth of a delta does not depend on the path that found it: an existing lead's
    incremental evaluation and a new lead's full one give the same depths for the same
    change, and the reference's."""
    from schemas.records import ChangeEvent
    from tests.strategies import BASE
    definitions = parse_definitions(_DEPTH_DOC)
    processor = LeadProcessor(definitions, native)
    existing, new = LeadState(), LeadState()
    outcome, deltas = processor.on_event(
        existing, ChangeEvent("e1", "t1", "L1", "lead_upserted", BASE, fields=earlier))
    assert outcome == "applied" and not deltas, "in no list before the change"
    _, changed = processor.on_event(
        existing, ChangeEvent("e2", "t1", "L1", "lead_upserted", BASE + 1, fields=final))
    _, created = processor.on_event(
        new, ChangeEvent("e2", "t1", "L2", "lead_upserted", BASE + 1, fields=final))
    for found in (changed, created):
        assert {d.list_id: d.cascade_depth for d in found} == depths
        assert all(d.action == "added" for d in found)
    tenant = definitions.tenants["t1"]
    profile = fold([ChangeEvent("e2", "t1", "L2", "lead_upserted", BASE + 1, fields=final)])
    assert dict((lid, d) for lid, _, d in deltas_between(tenant, set(), profile, BASE + 1)) \
        == depths
