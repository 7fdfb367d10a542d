"""Each operator's edge cases, checked on the compiled paths (Python functions, and the C
module where it is built) and the reference alike."""

import pytest

from rules import LeadState, Profile, evaluate_tenant, parse_definitions
from rules.compiler import NATIVE, CompiledTenant
from schemas.values import DAY_US, parse_timestamp
from tests.conftest import require_native

NOW = parse_timestamp("2026-06-15T12:00:00Z")


def decide(rules, fields=None, tags=(), activities=(), now=NOW):
    """(compiled, reference) value of one rule for one lead."""
    doc = {"tenants": ["t"], "lists": [{"tenant_id": "t", "list_id": "x", "rules": rules}]}
    definitions = parse_definitions(doc)
    tenant = definitions.tenants["t"]
    profile = Profile({k: v for k, v in (fields or {}).items() if v is not None},
                      frozenset(tags), frozenset(), tuple(activities))
    values = set()
    for native in (False, True) if NATIVE else (False,):
        ct = CompiledTenant(tenant, definitions.version, native)
        state = LeadState.from_profile(profile)
        values.add("x" in ct.evaluate_all(ct.view_of(state), state.tag_set,
                                          state.static_set, state.acts, now))
    assert len(values) == 1, "the C and Python paths agree"
    reference = "x" in evaluate_tenant(tenant, profile, now)
    return values.pop(), reference


def check(rules, expected, **lead):
    assert decide(rules, **lead) == (expected, expected)


F = "f"
CASES = [
    # eq / neq: case-insensitive, numbers by value, "05" is not 5, empty is never equal
    ("eq", "NY", "ny", True), ("eq", "NY", "NJ", False), ("eq", "NY", None, False),
    ("eq", "STRASSE", "straße", True), ("contains", "SS", "Großmann", True),  # folding
    ("eq", 5, 5.0, True), ("eq", 5, "5", True), ("eq", 5, "05", False),
    ("eq", True, "TRUE", True), ("eq", "x", "", False),
    ("neq", "NY", "ny", False), ("neq", "NY", None, True), ("neq", "NY", "", True),
    ("neq", "NY", "CA", True),
    # in / not_in
    ("in", ["NY", "MA"], "ma", True), ("in", ["NY"], None, False), ("in", [1, 2], 2.0, True),
    ("not_in", ["NY"], None, True), ("not_in", ["NY"], "Ny", False),
    # string operators: empty is the empty string
    ("contains", "ph", "Alpha", True), ("contains", "ph", None, False),
    ("not_contains", "ph", None, True), ("not_contains", "PH", "alpha", False),
    ("starts_with", "al", "ALPHA", True), ("starts_with", "al", None, False),
    ("ends_with", ".COM", "x@y.com", True), ("ends_with", ".com", "x@y.org", False),
    ("contains", 42, "order 42", True),
    # numeric: false on empty or non-numeric, numeric strings count
    ("gt", 50, 51, True), ("gt", 50, 50, False), ("gt", 50, "51", True),
    ("gt", 50, "abc", False), ("gt", 50, None, False), ("gt", 50, True, False),
    ("gte", 50, 50, True), ("lt", 50, 50, False), ("lte", 50, 50, True),
    ("lt", 50, "", False), ("lt", 0, -0.5, True),
    ("between", [10, 20], 10, True), ("between", [10, 20], 20, True),
    ("between", [10, 20], 20.0001, False), ("between", [10, 20], 9.999, False),
    ("between", [10, 20], None, False), ("between", [10, 20], "15", True),
    # emptiness
    ("is_empty", None, None, True), ("is_empty", None, "", True), ("is_empty", None, [], True),
    ("is_empty", None, 0, False), ("is_empty", None, False, False),
    ("is_not_empty", None, "x", True), ("is_not_empty", None, None, False),
    # regular expressions, case-insensitive
    ("matches", "^(vp|chief)\\b", "VP Sales", True), ("matches", "^vp", "svp", False),
    ("matches", "^$", None, True), ("matches", "[0-9]", None, False),
]


@pytest.mark.parametrize("op, value, field_value, expected", CASES)
def test_field_operators(op, value, field_value, expected):
    node = {"field": F, "op": op}
    if value is not None:
        node["value"] = value
    check(node, expected, fields={F: field_value})


DATE = "2026-06-01"  # midnight UTC, 14.5 days before NOW


@pytest.mark.parametrize("op, days, now, expected", [
    ("within_last_days", 15, NOW, True),
    ("within_last_days", 14, NOW, False),
    # the window is [date, date + days): it closes exactly at date + days
    ("within_last_days", 14, parse_timestamp("2026-06-15T00:00:00Z") - 1, True),
    ("within_last_days", 14, parse_timestamp("2026-06-15T00:00:00Z"), False),
    ("within_last_days", 30, parse_timestamp("2026-05-31T23:59:59Z"), False),  # future date
    ("within_last_days", 30, parse_timestamp("2026-06-01T00:00:00Z"), True),
    ("before_days_ago", 14, NOW, True),
    ("before_days_ago", 15, NOW, False),
    ("before_days_ago", 14, parse_timestamp("2026-06-15T00:00:00Z"), True),
    ("before_days_ago", 14, parse_timestamp("2026-06-15T00:00:00Z") - 1, False),
])
def test_date_windows_and_their_boundaries(op, days, now, expected):
    check({"field": F, "op": op, "value": days}, expected, fields={F: DATE}, now=now)


@pytest.mark.parametrize("value", [None, "soon", 1717200000, "2026-02-30"])
def test_date_operators_are_false_on_non_dates(value):
    for op in ("within_last_days", "before_days_ago"):
        check({"field": F, "op": op, "value": 30}, False, fields={F: value})


def test_rfc3339_timestamps_are_dates_too():
    check({"field": F, "op": "within_last_days", "value": 1}, True,
          fields={F: "2026-06-15T01:00:00+02:00"})


def act(days_ago, kind="email_open", ref=None, n=0):
    return (NOW - int(days_ago * DAY_US), kind, ref, f"a{n}-{days_ago}")


@pytest.mark.parametrize("node, activities, expected", [
    ({"activity": "email_open"}, [], False),
    ({"activity": "email_open"}, [act(400)], True),
    ({"activity": "Email_Open", "within_days": 30}, [act(29.9)], True),
    ({"activity": "email_open", "within_days": 30}, [act(30)], False),  # leaves exactly then
    ({"activity": "email_open", "min_count": 2, "within_days": 30}, [act(1), act(40)], False),
    ({"activity": "email_open", "min_count": 2, "within_days": 30}, [act(1), act(2)], True),
    ({"activity": "email_open", "max_count": 0, "within_days": 30}, [], True),
    ({"activity": "email_open", "max_count": 0, "within_days": 30}, [act(31)], True),
    ({"activity": "email_open", "max_count": 0, "within_days": 30}, [act(3)], False),
    ({"activity": "email_open", "min_count": 1, "max_count": 2}, [act(1), act(2), act(3)],
     False),
    ({"activity": "email_open", "ref": "C7"}, [act(1, ref="c8")], False),
    ({"activity": "email_open", "ref": "C7"}, [act(1, ref="c7")], True),
    ({"activity": "email_open", "min_count": 0}, [], True),
    ({"activity": "click"}, [act(1)], False),
])
def test_activity_counts(node, activities, expected):
    check(node, expected, activities=sorted(activities, key=lambda a: (a[0], a[3])))


def test_activity_bounds_beyond_64_bits():
    """Validation takes any whole number; the C module holds bounds in 64 bits, clamped
    where no count can reach."""
    acts = [act(1)]
    check({"activity": "email_open", "max_count": 2 ** 63}, True, activities=acts)
    check({"activity": "email_open", "min_count": 2 ** 64}, False, activities=acts)
    check({"activity": "email_open", "min_count": 1, "max_count": 2 ** 70, "within_days": 30},
          True, activities=acts)


def test_groups_nest_and_empty_groups_are_vacuous():
    check({"all": []}, True)
    check({"any": []}, False)
    check({"not": {"all": [{"any": [{"tag": "vip"}, {"field": F, "op": "eq", "value": 1}]},
                           {"not": {"tag": "churn"}}]}}, False, tags={"vip"})
    check({"tag": "VIP"}, True, tags={"vip"})


@pytest.mark.parametrize("depth", [39, 40, 41, 120, 240])
def test_groups_nest_deeper_than_one_python_expression_allows(depth):
    """Python's parser refuses 200 nested parentheses; groups nest to any depth (SPEC §3),
    so deep subtrees compile to functions of their own."""
    node = {"field": F, "op": "eq", "value": "a"}
    nots = 0
    for level in range(depth):
        if level % 3 == 0:
            node = {"all": [node, {"field": "g", "op": "is_not_empty"}]}
        elif level % 3 == 1:
            node = {"any": [node, {"tag": "vip"}]}
        else:
            node, nots = {"not": node}, nots + 1
    odd = nots % 2 == 1
    check(node, not odd, fields={F: "A", "g": 1})
    check(node, odd, fields={F: "b", "g": 1})
    # with the tag, the last `any` holds, and only a `not` after it (levels 3k + 2) flips it
    check(node, (depth - 1) % 3 == 1, fields={F: "b", "g": 1}, tags={"vip"})


def test_tags_and_activity_kinds_fold_case_too():
    from rules import LeadProcessor, LeadState, parse_definitions
    from schemas.records import ChangeEvent
    processor = LeadProcessor(parse_definitions({"tenants": ["t"], "lists": [
        {"tenant_id": "t", "list_id": "tagged", "rules": {"tag": "MASSE"}},
        {"tenant_id": "t", "list_id": "opened", "rules": {"activity": "E-MAIL_ÖFFNEN"}}]}))
    state = LeadState()
    processor.on_event(state, ChangeEvent("e1", "t", "L", "tag_added", 1, tag="maße"))
    processor.on_event(state, ChangeEvent("e2", "t", "L", "activity", 2,
                                          activity_kind="e-mail_öffnen"))
    assert set(state.members) == {"tagged", "opened"}


def test_a_state_stored_lower_cased_folds_on_loading():
    """Profiles written when tags were only lower-cased: `straße` must meet a later
    `tag_removed Straße` (folded `strasse`), or the lead would stay in the list."""
    from rules import LeadState
    stored = LeadState().to_dict()
    stored["tags"] = {"straße": [True, 5, "e1"], "strasse": [False, 3, "e0"]}
    stored["activities"] = {"e-mail_öffnen": [[1, "a1", "Kampagne-ß"]]}
    state = LeadState.from_dict(stored)
    assert state.tags == {"strasse": (True, 5, "e1")}  # the newer of the two
    assert state.acts == {"e-mail_öffnen": [(1, "a1", "kampagne-ss")]}


def test_a_lead_remembers_the_ids_it_received_last():
    """Re-deliveries are recognised among the last 192-256 ids a lead received, in
    arrival order (not event time): the newest are always remembered."""
    from rules import LeadProcessor
    from rules.lead import SEEN_MAX
    from schemas.records import ChangeEvent
    defs = parse_definitions({"tenants": ["t"], "lists": [
        {"tenant_id": "t", "list_id": "x", "rules": {"field": "a", "op": "eq", "value": 1}}]})
    processor = LeadProcessor(defs)
    state = LeadState()
    # arrival order is not time order: ids received later carry earlier times
    events = [ChangeEvent(f"e{n}", "t", "L", "lead_upserted", 10_000 - n, fields={"a": n})
              for n in range(SEEN_MAX + 1)]
    for event in events:
        assert processor.on_event(state, event)[0] == "applied"
    assert len(state.seen) == SEEN_MAX * 3 // 4
    assert list(state.seen) == [e.event_id for e in events[-(SEEN_MAX * 3 // 4):]]
    assert processor.on_event(state, events[-1])[0] == "duplicate"
    assert processor.on_event(state, events[0])[0] == "applied"  # forgotten, harmless


@pytest.mark.parametrize("native", [False, True])
def test_an_array_that_equals_the_old_one_in_python_but_not_in_json_changes_the_lead(native):
    """[0] == [False] in Python, yet the rules compare arrays by their JSON text: replacing
    one by the other is a change, and the lead joins the list that reads "[0]"."""
    from rules import LeadProcessor
    from schemas.records import ChangeEvent
    if native:
        require_native(True)
    defs = parse_definitions({"tenants": ["t"], "lists": [
        {"tenant_id": "t", "list_id": "x", "rules": {"field": "a", "op": "eq",
                                                     "value": "[0]"}}]})
    processor = LeadProcessor(defs, native=native)
    state = LeadState()
    upsert = lambda n, value: ChangeEvent(f"e{n}", "t", "L", "lead_upserted", n,  # noqa: E731
                                          fields={"a": value, "b": n})
    assert processor.on_event(state, upsert(1, [False]))[1] == []
    processor.on_event(state, upsert(2, [False]))  # the C path's turn: the view is owned
    deltas = processor.on_event(state, upsert(3, [0]))[1]
    assert [(d.list_id, d.action) for d in deltas] == [("x", "added")]
