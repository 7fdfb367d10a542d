"""The C module's boundary: whatever it is handed, an exception, never a crash.

rules/compiler.py is its only caller, and the engine properties hold its results to the
reference interpreter; these tests hold its checks: a malformed program is refused when
the tenant is built, and malformed arguments raise at the call.
"""

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import require_native


@pytest.fixture(autouse=True)
def _native_built():
    require_native(True)


def native():
    from rules import _native
    return _native


def tenant(words, starts=(0,), consts=("f",), order=("a",), rev=(None,)):
    return native().Tenant(array("q", words).tobytes(), list(starts), tuple(consts),
                           tuple(order), tuple(rev))


def view(t, C=None, N=None, DT=None):
    """A view of tenant t's fields holding these keys, numbers and dates."""
    C, N, DT = C or {}, N or {}, DT or {}
    v = t.view()
    for name in {**C, **N, **DT}:
        try:
            t.set_entry(v, name, C.get(name), N.get(name), DT.get(name))
        except KeyError:
            pass  # no list reads the field
    return v


def empty_call(t, size=1):
    return t.evaluate_all(view(t), set(), set(), {}, bytearray(size), 0)


def test_a_well_formed_program_evaluates():
    n = native()
    t = tenant([1, n.OP_EMPTY, 3, 0])  # one slot: is_empty("f")
    assert empty_call(t) == {"a"}
    watch = bytearray(1)
    assert t.evaluate_all(view(t, {"f": "x"}, {}, {}), set(), set(), {}, watch, 0) == set()
    assert watch == bytearray([0])


@pytest.mark.parametrize("words, starts, consts", [
    (lambda n: [1, 99, 2], (0,), ("f",)),                    # unknown op
    (lambda n: [1, 0, 2], (0,), ("f",)),                     # op 0
    (lambda n: [1, n.OP_EMPTY, 3, 5], (0,), ("f",)),         # constant out of range
    (lambda n: [1, n.OP_EMPTY, 9, 0], (0,), ("f",)),         # node beyond the program
    (lambda n: [1, n.OP_ALL, 1], (0,), ("f",)),              # shorter than its header
    (lambda n: [0], (0,), ("f",)),                           # no slot
    (lambda n: [2, n.OP_EMPTY, 3, 0], (0,), ("f",)),         # a second slot missing
    (lambda n: [1, n.OP_EMPTY, 3, 0], (7,), ("f",)),         # start beyond the program
    (lambda n: [1, n.OP_EMPTY, 3, 0], (-1,), ("f",)),
    (lambda n: [1, n.OP_IN, 4, 0, 1], (0,), ("f", "x")),     # `in` needs a set
    (lambda n: [1, n.OP_CONTAINS, 4, 0, 1], (0,), ("f", 3)),  # a needle is text
    (lambda n: [1, n.OP_NOT, 5, n.OP_TRUE, 2, n.OP_TRUE, 2], (0,), ("f",)),  # not: one child
    (lambda n: [1, n.OP_ACT, 8, 0, 7, 0, 0, 1, -1], (0,), ("f",)),  # ref out of range
])
def test_a_malformed_program_is_refused(words, starts, consts):
    with pytest.raises((ValueError, OverflowError)):
        tenant(words(native()), starts, consts)


def test_nesting_is_bounded():
    """Evaluation recurses in C: a program nested deeper than any compiled list is
    refused rather than allowed to exhaust the stack."""
    n = native()

    def nots(depth):
        return [n.OP_NOT, 2 * depth + 2] + nots(depth - 1) if depth else [n.OP_TRUE, 2]

    import sys
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)
    try:
        deep, fine = nots(20_000), nots(900)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(ValueError):
        tenant([1, *deep])
    assert empty_call(tenant([1, *fine])) == {"a"}  # an even number of nots


def test_list_references_must_stay_inside_the_tenant():
    n = native()
    with pytest.raises(ValueError):
        tenant([1, n.OP_LIST, 3, 1])
    assert empty_call(tenant([1, n.OP_NOT, 5, n.OP_LIST, 3, 0])) == {"a"}


def test_evaluate_list_reads_the_watch_it_is_given_and_leaves_it():
    """What a cascade depth is worked out with: one list over other memberships."""
    n = native()
    t = tenant([1, n.OP_EMPTY, 3, 0, 1, n.OP_NOT, 5, n.OP_LIST, 3, 0], starts=(0, 4),
               order=("a", "b"), rev=(None, None))
    watch = bytearray(b"\xff\xff")
    assert t.evaluate_list(view(t), set(), set(), {}, watch, 1, 0) == 0
    assert watch == bytearray(b"\xff\xff")
    assert t.evaluate_list(view(t), set(), set(), {}, bytearray(2), 1, 0) == 255
    with pytest.raises(IndexError):
        t.evaluate_list(view(t), set(), set(), {}, watch, 2, 0)
    with pytest.raises(TypeError):
        t.evaluate_list(view(t), set(), set(), {}, watch, "1", 0)
    with pytest.raises(TypeError):
        t.evaluate_list(view(t), set(), set(), {}, watch, 1)
    with pytest.raises(ValueError):
        t.evaluate_list(view(t), set(), set(), {}, bytearray(1), 1, 0)


@settings(max_examples=1000, deadline=None)
@given(words=st.lists(st.integers(-3, 40), max_size=24), start=st.integers(-2, 30))
def test_random_words_never_crash(words, start):
    """Any program either is refused or evaluates (to some value) on any small lead."""
    try:
        t = tenant(words, (start,), consts=("f", frozenset({"x"}), "x"))
    except (ValueError, OverflowError):
        return
    for keys in ({}, {"f": "x"}):
        watch = bytearray(1)
        try:
            t.evaluate_all(view(t, keys, {"f": 1.0}, {"f": 5}), {"x"}, {"x"}, {"x": []},
                           watch, 9)
        except TypeError:
            pass  # e.g. a string operator whose needle is a set: refused, not crashed
        assert watch[0] <= 255


def test_bad_arguments_raise():
    n = native()
    t = tenant([1, n.OP_EMPTY, 3, 0])
    with pytest.raises(ValueError):
        t.evaluate_all(view(t, {}, {}, {}), set(), set(), {}, bytearray(2), 0)  # watch size
    with pytest.raises(TypeError):
        t.evaluate_all({}, set(), set(), {}, bytearray(1), 0)  # a dict is not a view
    with pytest.raises(TypeError):
        t.evaluate_all(view(t, {}, {}, {}), [], set(), {}, bytearray(1), 0)  # tags are a set
    with pytest.raises(OverflowError):
        t.evaluate_all(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), 2 ** 70)
    dirty = t.evaluate_dirty
    with pytest.raises(IndexError):
        dirty(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), [((5, 0),)], [], set(), 0)
    with pytest.raises(IndexError):
        dirty(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), [], [(-1,)], set(), 0)
    with pytest.raises(TypeError):
        dirty(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), [(5,)], [], set(), 0)
    with pytest.raises(IndexError):
        dirty(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), [], [], {3}, 0)
    packed = lambda *ints: array("i", ints).tobytes()  # noqa: E731 - runs as packed
    with pytest.raises(IndexError):
        dirty(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), [packed(1, 0)], [], set(), 0)
    with pytest.raises(IndexError):
        dirty(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), [], [packed(-1)], set(), 0)
    with pytest.raises(TypeError):
        dirty(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), [packed(0)], [], set(), 0)
    with pytest.raises(TypeError):
        dirty(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), [], [b"\0\0"], set(), 0)
    assert dirty(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), [packed(0, 1)], [], set(),
                 0) == []  # the watch is 0, not slot 1
    assert dirty(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), [packed(0, 0)], [], set(),
                 0) == [("a", True, 0)]
    assert dirty(view(t, {"f": "x"}, {}, {}), set(), set(), {}, bytearray(b"\xff"), [], [packed(0)],
                 set(), 0) == [("a", False, 0)]
    with pytest.raises(ValueError):
        t.set_index({}, {"f": (b"\0", b"", b"", b"")}, {}, {}, {}, {})  # half a pair
    assert dirty(view(t, {}, {}, {}), set(), set(), {}, bytearray(1), [((0, 0),)], [], set(), 0) == \
        [("a", True, 0)]
    with pytest.raises(RuntimeError):
        t.next_flip(view(t), {}, 0)  # before set_time
    with pytest.raises(RuntimeError):
        t.flipping(view(t), {}, 0)  # before set_index and set_activity
    with pytest.raises(TypeError):
        t.flipping({}, {}, 0)
    with pytest.raises(ValueError):
        t.set_time((("f", True, (3, 1)),), ())  # windows out of order
    with pytest.raises(ValueError):
        t.set_index({}, {"f": (1, 2)}, {}, {}, {}, {})  # an entry is a 4-tuple
    with pytest.raises(RuntimeError):
        t.activity_candidates({}, {("k", None, 1, "e")}, 5)  # before set_activity
    with pytest.raises(ValueError):
        t.set_activity({"k": ((None, None, ((1, None, (1, 2)),)),)})
    with pytest.raises(ValueError):
        t.set_activity({"k": ((None, "7", ((1, None, ((), (), (), ())),)),)})
    t.set_activity({"k": ((None, None, ((1, None, (((0, 0),), (), (), ())),)),)})
    with pytest.raises(TypeError):
        t.activity_candidates({}, {("k", None)}, 5)
    assert t.activity_candidates({"k": [(1, "e", None)]}, {("k", None, 1, "e")}, 5) == \
        ([((0, 0),)], [()])  # the count rose from 0 to 1: `at least 1` turned true
    with pytest.raises(TypeError):
        t.on_change(view(t), set(), set(), {}, bytearray(1), {}, set(), 0)  # too few
    with pytest.raises(TypeError):
        t.on_change({}, set(), set(), {}, bytearray(1), {}, {}, set(), 0, {}, "t", "l", 0,
                    "c", 0, tuple)  # a dict is not a view
    with pytest.raises(TypeError):
        n.record([("a", True, 0)], [], "t", "l", 0, "c", 0, None, tuple)
    with pytest.raises(TypeError):
        n.record([("a", True)], {}, "t", "l", 0, "c", 0, None, tuple)


def test_malformed_activities_raise():
    n = native()
    t = tenant([1, n.OP_ACT, 8, 0, -1, 1, 10, 1, -1])  # kind "f" within 10 µs, at least 1
    with pytest.raises(TypeError):
        t.evaluate_all(view(t, {}, {}, {}), set(), set(), {"f": [(1,)]}, bytearray(1), 5)
    with pytest.raises(TypeError):
        t.evaluate_all(view(t, {}, {}, {}), set(), set(), {"f": ((1, "e", None),)}, bytearray(1), 5)
    assert t.evaluate_all(view(t, {}, {}, {}), set(), set(), {"f": [(1, "e", None)]},
                          bytearray(1), 5) == {"a"}
    assert t.evaluate_all(view(t, {}, {}, {}), set(), set(), {"f": [(1, "e", None)]},
                          bytearray(1), 11) == set()


def test_python_code_run_mid_evaluation_cannot_break_it():
    """A callable in the program (as a regex's search is) that resizes the watch, a row
    whose truth empties the list being recorded, a caller changing its own indexes: an
    exception or the right answer, never a crash."""
    n = native()
    size = 50_000
    watch = bytearray(size)

    def shrink(text):
        watch[:] = b"x"
        return None

    words, starts = [], []
    for _ in range(size):
        starts.append(len(words))
        words += [1, n.OP_MATCHES, 4, 0, 1]
    t = n.Tenant(array("q", words).tobytes(), starts, ("f", shrink),
                 tuple(f"l{k}" for k in range(size)), (None,) * size)
    with pytest.raises(RuntimeError):
        t.evaluate_all(view(t, {}, {}, {}), set(), set(), {}, watch, 0)

    found = []

    class Flips:
        def __bool__(self):
            found.clear()
            return True

    found.extend((f"list-{k}", Flips(), 0) for k in range(100))
    members = {}
    deltas, seq = n.record(found, members, "t", "l", 0, "c", 0, None, tuple)
    assert seq == 100 and len(members) == 100 and deltas[99][3] == "list-99"

    with pytest.raises(ValueError):
        n.Tenant(array("q", [1, n.OP_EMPTY, 3, 0]).tobytes(), [0], ("f",), ("a",), (12345,))


def test_the_c_module_holds_copies_of_the_indexes():
    from rules import parse_definitions
    from rules.compiler import CompiledTenant
    doc = {"tenants": ["t"], "lists": [
        {"tenant_id": "t", "list_id": "ny", "rules": {"field": "state", "op": "eq",
                                                       "value": "NY"}}]}
    definitions = parse_definitions(doc)
    ct = CompiledTenant(definitions.tenants["t"], definitions.version, True)
    ct.eq_index["state"]["ny"] = 12345  # what the C module checked is not this dict
    pair = array("i", [0, 0]).tobytes()  # the entry as the compiler packs it
    assert ct.native.field_candidates(view(ct.native, {"state": "ny"}),
                                      {"state": (None, None, None)}, 0) == ([pair], [b""])
    with pytest.raises(RuntimeError):
        ct.native.set_index({}, {}, {}, {}, {}, {})  # once only


def test_regex_results_are_remembered_by_text_not_by_slot():
    """The module remembers regex results in a fixed-size table: more texts than it
    holds, equal texts in distinct objects and two searches on one text must all give
    search()'s own answer."""
    import random
    import re
    n = native()
    starts_a = re.compile("^a", re.IGNORECASE).search
    ends_z = re.compile("z$", re.IGNORECASE).search
    t = tenant([2, n.OP_MATCHES, 4, 0, 1, n.OP_MATCHES, 4, 0, 2], consts=("f", starts_a, ends_z))
    rng = random.Random(5)
    texts = [rng.choice("ab") + str(k % 7000) + rng.choice("yz") for k in range(20_000)]
    outcomes = set()
    for text in texts + texts[::-1]:
        fresh = "".join(text)  # an equal text in another object
        watch = bytearray(1)
        members = t.evaluate_all(view(t, {"f": fresh}, {}, {}), set(), set(), {}, watch, 0)
        first = starts_a(fresh) is not None
        expected = 255 if first and ends_z(fresh) else (0 if not first else 1)
        assert watch[0] == expected and (members == {"a"}) == (expected == 255)
        outcomes.add(expected)
    assert outcomes == {0, 1, 255}


def test_string_predicates_that_can_mark_no_list_are_not_worked_out():
    """With the lead's watch, field_candidates skips a string predicate whose lists can
    neither join (watch elsewhere) nor leave (not a member): its regex is not run."""
    from rules import parse_definitions
    from rules.compiler import CompiledTenant
    doc = {"tenants": ["t"], "lists": [
        {"tenant_id": "t", "list_id": "l", "rules": {"all": [
            {"field": "a", "op": "eq", "value": "x"},
            {"field": "title", "op": "matches", "value": "^ceo"}]}}]}
    definitions = parse_definitions(doc)
    ct = CompiledTenant(definitions.tenants["t"], definitions.version, True)
    old = {"title": ("cto", None, None)}
    v = view(ct.native, {"title": "ceo"})
    pair = array("i", [0, 1]).tobytes()  # list 0 may join when slot 1 turns true
    assert ct.native.field_candidates(v, old, 0) == ([pair], [b""])
    assert ct.native.field_candidates(v, old, 0, bytearray([1])) == ([pair], [b""])
    assert ct.native.field_candidates(v, old, 0, bytearray([0])) == ([], [])
    with pytest.raises(ValueError):
        ct.native.field_candidates(v, old, 0, bytearray(2))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) |
    st.floats(allow_nan=True, allow_infinity=True) |
    st.text(st.sampled_from("aZ 09.-_:TzéSSß\u0130"), max_size=12) |
    st.sampled_from(["2026-06-15", "2026-06-15T12:00:00Z", " 5 ", "1e3", "ABC", ""]),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner,
                                                                 max_size=2),
    max_leaves=4)


@settings(max_examples=1000, deadline=None)
@given(updates=st.lists(st.tuples(st.integers(0, 5), st.sampled_from("abcd"),
                                  st.dictionaries(st.sampled_from(["n", "d", "s", "x"]), _JSON,
                                                  max_size=3)),
                        max_size=6))
def test_the_c_merge_and_view_update_are_the_python_ones(updates):
    """merge_fields and update_view in C give exactly what rules/lead.py's merge_fields and
    CompiledTenant.update_view give, for any JSON values, in any order of versions (the C
    views hold only the fields lists read)."""
    from rules import parse_definitions
    from rules.compiler import CompiledTenant
    from rules.lead import merge_fields
    doc = {"tenants": ["t"], "lists": [
        {"tenant_id": "t", "list_id": "l", "rules": {"all": [
            {"field": "n", "op": "gt", "value": 1},
            {"field": "d", "op": "within_last_days", "value": 3},
            {"field": "s", "op": "eq", "value": "x"}]}}]}
    definitions = parse_definitions(doc)
    tenant = definitions.tenants["t"]
    py, c = (CompiledTenant(tenant, definitions.version, native) for native in (False, True))
    sides = [(py, merge_fields, {}, {}, ({}, {}, {})), (c, native().merge_fields, {}, {},
                                                        c.native.view())]
    for time, eid, fields in updates:
        results = []
        for ct, merge, values, versions, v in sides:
            changed = {}
            merge(values, versions, fields, (time, eid), changed)
            # fields no list reads ("x") have no entry in the C module's views
            olds = {name: old for name, old in ct.update_fields(v, values, changed).items()
                    if name != "x"}
            if ct is py:
                entries = {name: (v[0].get(name), v[1].get(name), v[2].get(name))
                           for name in {**v[0], **v[1], **v[2]} if name != "x"}
            else:
                entries = ct.native.entries(v)
                # a view made from the values at once holds the same entries
                assert ct.native.entries(ct.native.view(values)) == entries
            results.append((changed, olds, values, versions, sorted(entries.items())))
        py_result, c_result = results
        assert repr(py_result) == repr(c_result)  # repr: NaN and -0.0 compare exactly


def test_the_c_on_event_finishes_only_the_events_it_can_and_leaves_the_rest_untouched():
    """Tenant.on_event is LeadProcessor.on_event for an upsert or activity of a lead
    evaluated against these definitions: it gives the general path's deltas and state;
    with a timer due first it returns False, for anything more None, the state as it
    was."""
    import pickle

    from rules import LeadProcessor, LeadState, parse_definitions
    from rules.lead import SEEN_MAX
    from schemas.records import ChangeEvent, Delta
    doc = {"tenants": ["t"], "lists": [
        {"tenant_id": "t", "list_id": "hot", "rules": {"all": [
            {"field": "score", "op": "gt", "value": 5},
            {"field": "seen_at", "op": "within_last_days", "value": 2}]}},
        {"tenant_id": "t", "list_id": "vip", "rules": {"list": "hot"}},
        {"tenant_id": "t", "list_id": "reader", "rules": {
            "activity": "Email_Open", "ref": "C1", "min_count": 2, "within_days": 1}}]}
    definitions = parse_definitions(doc)
    day, hour = 86_400_000_000, 3_600_000_000
    t0 = 10 * day + 2 * hour
    c, py = LeadProcessor(definitions, native=True), LeadProcessor(definitions, native=False)
    ct = c.compiled["t"]

    def upsert(n, at, **fields):
        return ChangeEvent(f"e{n}", "t", "L", "lead_upserted", at, fields)

    state = LeadState()
    c.on_event(state, upsert(0, t0, score=1, seen_at="1970-01-11"))
    assert state.view_owner is ct

    def in_c(s, event, owner=ct, version=ct.version):
        return ct.native.on_event(s, event, owner, version, SEEN_MAX, Delta, ct.policies)

    # the common event: the general path's deltas, seq, next_flip and state
    event = upsert(1, t0 + 1, score=9)
    twin = pickle.loads(pickle.dumps(state))
    deltas = in_c(state, event)
    assert [d.list_id for d in deltas] == ["hot", "vip"]
    assert ("applied", deltas) == py.on_event(twin, event)
    assert state.to_dict() == twin.to_dict()
    assert state.next_flip == 12 * day  # seen_at leaves its window
    # a date field changed: the next flip moved
    deltas = in_c(state, upsert(2, t0 + 2, seen_at="1970-01-11T01:00:00Z"))
    assert deltas == [] and state.next_flip == 12 * day + hour
    # activities: added in (time, id) order whatever the arrival order, case-folded, a
    # kind no rule reads not kept; the general path's deltas, seq and state again
    for n, at, kind, ref in [(4, t0 + 4, "EMAIL_OPEN", "c1"), (5, t0 + 3, "email_open", "C1"),
                             (6, t0 + 6, "email_open", None), (7, t0 + 7, "unread", "c1")]:
        event = ChangeEvent(f"e{n}", "t", "L", "activity", at, activity_kind=kind,
                            activity_ref=ref)
        twin = pickle.loads(pickle.dumps(state))
        deltas = in_c(state, event)
        assert ("applied", deltas) == py.on_event(twin, event)
        assert state.to_dict() == twin.to_dict()
        assert state.next_flip == twin.next_flip
    assert [(e[1], e[2]) for e in state.acts["email_open"]] == [
        ("e5", "c1"), ("e4", "c1"), ("e6", None)]
    assert "reader" in state.members and "unread" not in state.acts

    def untouched(s, event, answer=None, **kwargs):
        before = s.to_dict()
        assert in_c(s, event, **kwargs) is answer
        assert s.to_dict() == before

    later = upsert(9, t0 + 9, score=1)
    untouched(state, upsert(1, t0 + 9, score=1))  # a duplicate
    untouched(state, later, owner=object())             # the view is another tenant's
    untouched(state, later, version="other")            # definitions not followed yet
    untouched(state, later._replace(type="tag_added", fields=None, tag="k"))
    untouched(state, later._replace(fields=None))
    full = pickle.loads(pickle.dumps(state))
    c.on_event(full, upsert(3, t0 + 3, score=2))  # its view again
    full.seen.update((f"x{k}", 0) for k in range(SEEN_MAX - len(full.seen)))
    untouched(full, later)                              # its seen ids to prune
    state.next_flip = later.occurred_at
    untouched(state, later, False)                      # a timer due by the event's time
    state.next_flip, state.tomb = 13 * day, (t0 + 1, "d")
    assert state.exists
    untouched(state, later._replace(occurred_at=t0))    # older than the deletion
    state.tomb = (state.last[0] + 1, "d")
    assert not state.exists
    untouched(state, later)                             # deleted: the lead does not exist
    with pytest.raises(TypeError):
        ct.native.on_event(state, later, ct, ct.version, SEEN_MAX, Delta)
    with pytest.raises(TypeError):
        ct.native.on_event(state, ("e", "t"), ct, ct.version, SEEN_MAX, Delta, ct.policies)


def test_the_c_merge_keeps_a_versions_dict_out_of_the_collectors_way():
    """An (int, str) version stored by the C merge is untracked by the garbage collector,
    so the versions dict it enters stays untracked (young collections walked every
    upserted lead's versions dict); a version holding a container stays tracked."""
    import gc
    values, versions = {}, {}
    native().merge_fields(values, versions, {"a": 1, "b": "x"}, (5, "e1"), {})
    assert not gc.is_tracked(versions) and not gc.is_tracked(versions["a"])
    odd = (6, ["not", "atomic"])
    native().merge_fields(values, versions, {"a": 2}, odd, {})
    assert gc.is_tracked(odd) and versions["a"] is odd


def test_a_tenant_holding_the_last_reference_to_its_constants_is_freed_cleanly():
    """Freeing a tenant read its constant tuple's size after letting go of the tuple. A
    tuple longer than CPython keeps on its free lists, held by the tenant alone, is
    really freed there: the sanitized build (tools/sanitize.sh) reports the read."""
    import sys
    n = native()
    consts = tuple(["f"] + [f"key-{k}" for k in range(40)])
    t = n.Tenant(array("q", [1, n.OP_EMPTY, 3, 0]).tobytes(), [0], consts, ("a",), (None,))
    assert sys.getrefcount(consts) == 3  # here, the tenant's and the call's: one is held
    del consts
    assert empty_call(t) == {"a"}
    del t


def test_the_regex_memo_is_bounded_by_bytes():
    """Fields hold texts of up to 1 MiB: the memo holds no more than REGEX_MEMO_BYTES of
    them however many it meets, never holds one over REGEX_MEMO_TEXT_MAX, and every
    answer is search()'s own, remembered, given way or never held."""
    import re
    n = native()
    pattern = re.compile("needle")
    calls = []

    def search(text):
        calls.append(text)
        return pattern.search(text)

    t = tenant([1, n.OP_MATCHES, 4, 0, 1], consts=("f", search))

    def matches(text):
        watch = bytearray(1)
        members = t.evaluate_all(view(t, {"f": text}), set(), set(), {}, watch, 0)
        assert (members == {"a"}) == (watch[0] == 255)
        return members == {"a"}

    budget, most = n.REGEX_MEMO_BYTES, n.REGEX_MEMO_TEXT_MAX
    for text in ("a needle", "a pin"):
        found = matches(text)
        calls.clear()
        assert matches(text) == found == (text == "a needle") and calls == []  # remembered

    def large(k):  # just under the text limit, distinct, every other one a match
        return f"{k:06d}" + ("needle" if k % 2 else "thread") + "x" * (most - 200)

    count = 3 * budget // most
    for k in range(count):
        assert matches(large(k)) == bool(k % 2)
        held, size = n.regex_memo()
        assert size <= budget, (k, held, size)
    assert size > budget // 2  # the budget is used, not just kept clear
    assert [matches(large(k)) for k in range(4)] == [False, True, False, True]

    before = n.regex_memo()
    for text in ("needle" + "y" * 2 * most, "€" * (most // 2)):  # over the limit in bytes
        calls.clear()
        assert [matches(text), matches(text)] == [search(text) is not None] * 2
        assert len(calls) == 3 and n.regex_memo() == before  # searched each time, not held
