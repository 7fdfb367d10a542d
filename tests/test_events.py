"""Parsing and validating change events: every kind of bad record has its reason."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import parse_definitions
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
    (b"[" * 100_000 + b"]" * 100_000, "not_json"),
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
