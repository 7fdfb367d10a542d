"""Hypothesis strategies: random list definitions, lead profiles and event histories.

Values are drawn from small pools on purpose, so that random rules and random leads meet
often: equal values in other case, numbers as strings, dates on window boundaries.
"""

from __future__ import annotations

from hypothesis import strategies as st

from rules.lead import Profile, activity_order
from schemas.values import DAY_US, format_ts, parse_timestamp
from schemas.records import ChangeEvent

BASE = parse_timestamp("2026-01-01T00:00:00Z")
HOUR = 3_600_000_000

STATES = ["NY", "ny", "CA", "MA", "Tx", "nj"]
WORDS = ["alpha", "Beta", "gamma-ray", "ALPHABET", "delta", "x"]
NUMBERS = [0, 1, 5, 5.0, 10, 42, 49.5, 50, 51, 99.9, 100, -3]
TAGS = ["vip", "VIP", "partner", "churn-risk"]
KINDS = ["email_open", "click"]
REFS = [None, "c1", "C2"]
FIELDS = {
    "state": "state", "city": "word", "email": "word", "score": "number", "age": "number",
    "signup": "date", "last_seen": "date", "flag": "bool",
}


def _date_text(offset_days, as_date):
    moment = BASE + offset_days * DAY_US
    return format_ts(moment)[:10] if as_date else format_ts(moment)


field_values = {
    "state": st.sampled_from(STATES + [None, ""]),
    "word": st.sampled_from(WORDS + [None, "", "Alpha beta"]),
    "number": st.one_of(st.sampled_from(NUMBERS), st.sampled_from(["42", " 7 ", "abc", "1e2"]),
                        st.none(), st.booleans()),
    "date": st.one_of(st.builds(_date_text, st.integers(-90, 30), st.booleans()),
                      st.sampled_from([None, "not a date", 20260101, "2026-13-45"])),
    "bool": st.one_of(st.booleans(), st.sampled_from(["true", "False", None])),
}

_OPS_BY_TYPE = {
    "state": ["eq", "neq", "in", "not_in", "is_empty", "is_not_empty", "starts_with",
              "matches"],
    "word": ["eq", "neq", "contains", "not_contains", "starts_with", "ends_with", "matches",
             "is_empty", "is_not_empty", "in"],
    "number": ["gt", "gte", "lt", "lte", "between", "eq", "neq", "in", "not_in", "is_empty"],
    "date": ["within_last_days", "before_days_ago", "is_empty", "is_not_empty"],
    "bool": ["eq", "neq", "is_empty"],
}


@st.composite
def field_atom(draw):
    name = draw(st.sampled_from(sorted(FIELDS)))
    kind = FIELDS[name]
    op = draw(st.sampled_from(_OPS_BY_TYPE[kind]))
    node = {"field": name, "op": op}
    if op in ("is_empty", "is_not_empty"):
        return node
    if op in ("gt", "gte", "lt", "lte"):
        node["value"] = draw(st.sampled_from([0, 5, 42, 50, 49.5, 100]))
    elif op == "between":
        low = draw(st.sampled_from([0, 5, 42, 50]))
        node["value"] = [low, low + draw(st.sampled_from([0, 1, 8, 50]))]
    elif op in ("within_last_days", "before_days_ago"):
        node["value"] = draw(st.sampled_from([0, 1, 7, 30, 0.5]))
    elif op == "matches":
        node["value"] = draw(st.sampled_from(["^a", "ph", "^(ny|ma)$", "[0-9]", "^$", "a.*t"]))
    elif op in ("in", "not_in"):
        pool = {"state": STATES, "word": WORDS, "number": NUMBERS}[kind]
        node["value"] = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
    elif kind == "number":
        node["value"] = draw(st.sampled_from(NUMBERS + ["42"]))
    elif kind == "bool":
        node["value"] = draw(st.sampled_from([True, False, "true"]))
    elif kind == "state":
        node["value"] = draw(st.sampled_from(STATES if op != "starts_with" else ["n", "C"]))
    else:
        node["value"] = draw(st.sampled_from(WORDS + ["ph", "A"]))
    return node


@st.composite
def activity_atom(draw):
    node = {"activity": draw(st.sampled_from(KINDS))}
    ref = draw(st.sampled_from(REFS))
    if ref:
        node["ref"] = ref
    shape = draw(st.sampled_from(["min", "max", "range", "default"]))
    if shape in ("min", "range"):
        node["min_count"] = draw(st.integers(0, 3))
    if shape in ("max", "range"):
        node["max_count"] = node.get("min_count", 0) + draw(st.integers(0, 2))
    if draw(st.booleans()):
        node["within_days"] = draw(st.sampled_from([1, 7, 30, 2.5]))
    return node


def rule_tree(refs):
    leaves = [field_atom(), activity_atom(),
              st.builds(lambda t: {"tag": t}, st.sampled_from(TAGS))]
    if refs:
        leaves.append(st.builds(lambda r: {"list": r}, st.sampled_from(refs)))
    leaf = st.one_of(*leaves)
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(lambda xs: {"all": xs}, st.lists(inner, max_size=3)),
            st.builds(lambda xs: {"any": xs}, st.lists(inner, max_size=3)),
            st.builds(lambda x: {"not": x}, inner)),
        max_leaves=6)


@st.composite
def definitions_doc(draw, tenants=("t1",), max_lists=8):
    """A valid definition document: references form a DAG, listed in random order."""
    lists = []
    for tenant in tenants:
        count = draw(st.integers(1, max_lists))
        statics = draw(st.integers(0, 2))
        ids = []
        for s in range(statics):
            lid = f"s{s}"
            lists.append({"tenant_id": tenant, "list_id": lid, "static": True})
            ids.append(lid)
        for i in range(count):
            lid = f"l{i}"
            lists.append({"tenant_id": tenant, "list_id": lid, "rules": draw(rule_tree(ids))})
            ids.append(lid)
    order = draw(st.permutations(range(len(lists))))
    return {"tenants": list(tenants), "lists": [lists[i] for i in order]}


def times():
    """Moments around BASE, in whole hours or on exact day boundaries."""
    return st.one_of(st.integers(-60 * 24, 40 * 24).map(lambda h: BASE + h * HOUR),
                     st.integers(-60, 40).map(lambda d: BASE + d * DAY_US))


@st.composite
def profiles(draw):
    fields = {}
    for name, kind in FIELDS.items():
        if draw(st.booleans()):
            value = draw(field_values[kind])
            if value is not None:
                fields[name] = value
    tags = frozenset(t.casefold() for t in draw(st.sets(st.sampled_from(TAGS))))
    statics = frozenset(draw(st.sets(st.sampled_from(["s0", "s1"]))))
    acts = draw(st.lists(st.tuples(times(), st.sampled_from(KINDS), st.sampled_from(REFS)),
                         max_size=6))
    activities = tuple(sorted(((ts, kind, ref.casefold() if ref else None, f"a{i}")
                               for i, (ts, kind, ref) in enumerate(acts)),
                              key=activity_order))
    return Profile(fields, tags, statics, activities)


@st.composite
def event_histories(draw, tenant="t1", leads=("L1",), max_events=25):
    """Events of a few leads, with duplicates, in arrival order (not time order)."""
    events = []
    count = draw(st.integers(1, max_events))
    for i in range(count):
        lead = draw(st.sampled_from(leads))
        kind = draw(st.sampled_from(["lead_upserted"] * 4 + ["activity"] * 3 + [
            "tag_added", "tag_removed", "static_list_added", "static_list_removed",
            "lead_deleted"]))
        at = draw(times())
        extra = {}
        if kind == "lead_upserted":
            names = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3))
            extra["fields"] = {n: draw(field_values[FIELDS[n]]) for n in names}
        elif kind == "activity":
            extra["activity_kind"] = draw(st.sampled_from(KINDS + ["Email_Open", "unused"]))
            extra["activity_ref"] = draw(st.sampled_from(REFS + ["c1"]))
        elif kind.startswith("tag"):
            extra["tag"] = draw(st.sampled_from(TAGS))
        elif kind.startswith("static"):
            extra["list_id"] = draw(st.sampled_from(["s0", "s1"]))
        events.append(ChangeEvent(f"e{i:03d}", tenant, lead, kind, at, **extra))
    duplicates = draw(st.lists(st.sampled_from(events), max_size=5))
    arrival = draw(st.permutations(events + duplicates))
    return list(arrival)
