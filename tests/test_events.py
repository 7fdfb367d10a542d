"""Parsing and validating change events: every kind of bad record has its reason."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import parse_definitions
from schemas import events as limits
from schemas.events import MAX_RECORD_BYTES, InvalidEvent, parse_event
from schemas.records import Delta, make_delta, stable_id

DEFS = parse_definitions({"tenants": ["acme", "quiet"], "lists": [
    {"tenant_id": "acme", "list_id": "manual", "static": True},
    {"tenant_id": "acme", "list_id": "dyn", "rules": {"tag": "x"}}]})
GOOD = {"event_id": "e1", "tenant_id": "acme", "lead_id": "L1", "type": "lead_upserted",
        "occurred_at": "2026-05-01T09:00:00.5Z", "fields": {"state": "NY", "gone": None}}


def record(**changes):
    out = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return json.dumps(out)


def test_a_good_event():
    event = parse_event(record().encode(), DEFS)
    assert (event.event_id, event.tenant_id, event.lead_id, event.type) == \
        ("e1", "acme", "L1", "lead_upserted")
    assert event.occurred_at == 1777626000500000
    assert event.fields == {"state": "NY", "gone": None}
    assert event.lead_key == "acme/L1"


def test_a_surrogate_pair_escape_is_one_character():
    event = parse_event(record(lead_id="L\U0001F600").encode(), DEFS)  # "\ud83d\ude00"
    assert event.lead_id == "L\U0001F600"


def test_a_tenant_without_lists_is_known_when_declared():
    assert parse_event(record(tenant_id="quiet"), DEFS).tenant_id == "quiet"


@pytest.mark.parametrize("payload, code", [
    (b"not json", "not_json"),
    (b"\xff\xfe{}", "not_utf8"),
    (record(lead_id="x\ud800"), "not_utf8"),  # JSON escapes half a UTF-16 pair
    (record(fields={"score": float("nan")}), "not_json"),  # NaN: Python's, not JSON's
    ('{"event_id": "e", "n": ' + "9" * 5000 + "}", "not_json"),  # over 4,300 digits
    (record(occurred_at="9999-12-31T23:59:59-01:00"), "bad_timestamp"),  # year 10000 UTC
    (record(fields={"state": ["NY", {"\udc00": 1}]}), "not_utf8"),
    (b"[1, 2]", "not_object"),
    (record(event_id=...), "missing_field"),
    (record(occurred_at=...), "missing_field"),
    (record(event_id=7), "wrong_type"),
    (record(lead_id=""), "wrong_type"),
    (record(lead_id="a\x00b"), "wrong_type"),  # ids are text keys: no NUL
    (record(event_id="\x00"), "wrong_type"),
    (record(type="lead_merged"), "unknown_type"),
    (record(occurred_at="2026-05-01"), "bad_timestamp"),
    (record(occurred_at="2026-05-01T09:00:00"), "bad_timestamp"),  # no offset
    (record(occurred_at="2026-02-30T09:00:00Z"), "bad_timestamp"),
    (record(tenant_id="umbrella"), "unknown_tenant"),
    (record(fields=[1]), "wrong_type"),
    (record(fields=...), "missing_field"),
    (record(type="activity"), "missing_field"),
    (record(type="activity", activity={"ref": "c"}), "missing_field"),
    (record(type="tag_added"), "missing_field"),
    (record(type="static_list_added", list_id="dyn"), "unknown_static_list"),
    (record(type="static_list_removed", list_id="nope"), "unknown_static_list"),
    (b"[" * 100_000 + b"]" * 100_000, "too_deep"),  # deeper than json.loads goes
    (b'{"a": "' + b"x" * MAX_RECORD_BYTES + b'"}', "oversized"),
])
def test_bad_records_have_a_reason(payload, code):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(payload, DEFS)
    assert caught.value.code == code
    assert "\n" not in caught.value.message


def test_each_type_with_its_payload():
    act = parse_event(record(type="activity", activity={"kind": "email_open", "ref": "c7"}),
                      DEFS)
    assert (act.activity_kind, act.activity_ref) == ("email_open", "c7")
    tag = parse_event(record(type="tag_removed", tag="VIP"), DEFS)
    assert tag.tag == "VIP"
    static = parse_event(record(type="static_list_added", list_id="manual"), DEFS)
    assert static.list_id == "manual"
    assert parse_event(record(type="lead_deleted", fields=...), DEFS).type == "lead_deleted"


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.text(), min_size=4, max_size=4), added=st.booleans(),
       salt=st.one_of(st.none(), st.integers(1, 10 ** 6)), seq=st.integers(1, 10 ** 6))
def test_a_delta_id_is_the_stable_id_of_what_it_says(parts, added, salt, seq):
    tenant, lead, list_id, cause = parts
    delta = make_delta(tenant, lead, list_id, added, 0, cause, 1, seq, salt)
    expected = (stable_id(tenant, lead, list_id, delta.action, cause) if salt is None else
                stable_id(tenant, lead, list_id, delta.action, cause, str(salt)))
    assert delta.delta_id == expected
    assert delta == Delta(delta.delta_id, tenant, lead, list_id,
                          "added" if added else "removed", 0, cause, 1, seq)
    # the seq never changes an id (a replay may number differently); a salt does
    again = make_delta(tenant, lead, list_id, added, 0, cause, 1, seq + 1, salt)
    assert again.delta_id == delta.delta_id
    if salt is not None:
        assert make_delta(tenant, lead, list_id, added, 0, cause, 1, seq,
                          salt + 1).delta_id != delta.delta_id


def nested(depth, leaf=0):
    """A value of `depth` arrays (every other one an object) around `leaf`."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def code_of(payload, definitions=DEFS):
    try:
        parse_event(payload, definitions)
    except InvalidEvent as bad:
        assert "\n" not in bad.message
        return bad.code
    return None


def fields_of(size):
    """`fields` whose compact JSON text is exactly `size` characters (size > 50), some of
    its characters escapes, so that the text is longer than its strings."""
    count = size // 60_000 + 1
    names = [f"f{i}" for i in range(count)]
    room = size - len(json.dumps(dict.fromkeys(names, ""), separators=(",", ":")))
    fields = {name: "x" * (room // count) for name in names}
    first = room // count + room % count
    fields["f0"] = "\n" * (first // 2) + "x" * (first % 2)  # \n is two characters of JSON
    assert len(json.dumps(fields, ensure_ascii=False, separators=(",", ":"))) == size
    return fields


LIMIT = limits.MAX_FIELDS_CHARS
UNDER_AND_OVER = [  # (fields, the reason past the limit); each case exactly at it
    (lambda n: {"v": nested(n)}, limits.MAX_DEPTH, "too_deep"),
    (lambda n: {"v": nested(n, "s")}, limits.MAX_DEPTH, "too_deep"),
    (lambda n: {f"f{i}": i for i in range(n)}, limits.MAX_FIELDS, "too_many_fields"),
    (lambda n: {"v": [0] * n}, limits.MAX_VALUES, "too_many_values"),
    (lambda n: {"v": [[0]] * (n // 2) + [0] * (n % 2), "w": {"a": 1, "b": 2}},
     limits.MAX_VALUES - 2,
     "too_many_values"),
    (lambda n: {"n" * n: 1}, limits.MAX_NAME_CHARS, "too_long"),
    (lambda n: {"s": "é" * n}, limits.MAX_STRING_CHARS, "too_long"),
    (lambda n: {"s": [1, {"t": "z" * n}]}, limits.MAX_STRING_CHARS, "too_long"),
    (lambda n: {"o": {"k" * n: 1}}, limits.MAX_STRING_CHARS, "too_long"),
    (lambda n: {"i": n}, limits.MAX_INT, "bad_number"),
    (lambda n: {"i": [-n - 1]}, limits.MAX_INT, "bad_number"),
    (fields_of, LIMIT, "fields_too_large"),
]


@pytest.mark.parametrize("make, limit, code", UNDER_AND_OVER)
def test_fields_at_a_limit_pass_and_one_past_it_is_a_dead_letter(make, limit, code):
    at = make(limit)
    assert parse_event(record(fields=at), DEFS).fields == at
    assert code_of(record(fields=make(limit + 1))) == code


def test_a_number_beyond_a_double_is_a_dead_letter():
    assert parse_event(record(fields={"x": 1e308}), DEFS).fields == {"x": 1e308}
    assert code_of(record(fields={"x": 1}).replace('"x": 1', '"x": 1e400')) == "bad_number"
    assert code_of(record(fields={"x": [1]}).replace("[1]", "[-1e400]")) == "bad_number"


@pytest.mark.parametrize("key, changes", [
    ("event_id", {}), ("lead_id", {}), ("tenant_id", {}),
    ("tag", {"type": "tag_added"}), ("list_id", {"type": "static_list_added"})])
def test_identifiers_at_their_limit_pass_and_one_past_it_are_too_long(key, changes):
    n = limits.MAX_ID_CHARS
    # without the definitions: a tenant or static list of 256 characters is unknown
    assert getattr(parse_event(record(**changes, **{key: "i" * n})), key) == "i" * n
    assert code_of(record(**changes, **{key: "i" * (n + 1)}), None) == "too_long"


@pytest.mark.parametrize("part", ["kind", "ref"])
def test_an_activity_kind_or_ref_past_its_limit_is_too_long(part):
    n = limits.MAX_ID_CHARS
    activity = {"kind": "email_open", "ref": "c7"}
    event = parse_event(record(type="activity", activity={**activity, part: "a" * n}), DEFS)
    assert (event.activity_kind, event.activity_ref)[part == "ref"] == "a" * n
    assert code_of(record(type="activity", activity={**activity, part: "a" * (n + 1)})) == \
        "too_long"


def on_a_deep_stack(frames, call):
    """`call()` run `frames` calls down, as inside a Beam worker's bundle."""
    return call() if frames == 0 else on_a_deep_stack(frames - 1, call)


@pytest.mark.parametrize("changes, code", [
    ({"event_id": nested(700)}, "wrong_type"),
    ({"occurred_at": nested(700)}, "bad_timestamp"),
    ({"fields": {"v": nested(700)}}, "too_deep"),
    ({"fields": {"v": nested(700, "\ud800")}}, "not_utf8"),
])
def test_a_deeply_nested_value_anywhere_has_its_reason_even_on_a_deep_stack(changes, code):
    """Whatever json.loads reads (~990 levels down), each place gets its own reason."""
    payload = record(**changes)
    assert on_a_deep_stack(150, lambda: code_of(payload)) == code


def test_nesting_deeper_than_the_parser_goes_is_too_deep():
    # (Python 3.11's parser gives up on it; 3.12 and later parse it, and the depth check
    # refuses it)
    payload = record(fields={"v": "DEEP"}).replace('"DEEP"', "[" * 5000 + "]" * 5000)
    assert code_of(payload) == "too_deep"
