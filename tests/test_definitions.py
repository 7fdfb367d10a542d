"""Validation of definition documents: each kind of error, named with tenant and list."""

import json

import pytest

from rules import DefinitionError, parse_definitions
from rules.definitions import definitions_from_text, load_definitions


def lists(*entries, tenants=("acme",)):
    return {"tenants": list(tenants), "lists": list(entries)}


def dyn(lid, rules, tenant="acme"):
    return {"tenant_id": tenant, "list_id": lid, "rules": rules}


def errors_of(doc):
    with pytest.raises(DefinitionError) as caught:
        parse_definitions(doc)
    return caught.value.errors


@pytest.mark.parametrize("rules, expected", [
    ({"field": "score", "op": "gtt", "value": 5}, 'unknown operator "gtt"'),
    ({"field": "score", "op": "gt", "value": "50"}, "'gt' needs a number"),
    ({"field": "score", "op": "between", "value": [1]}, "'between' needs [low, high]"),
    ({"field": "score", "op": "between", "value": [9, 1]}, "low 9 is greater than high 1"),
    ({"field": "state", "op": "in", "value": "NY"}, "'in' needs a list"),
    ({"field": "state", "op": "eq", "value": ""}, "'eq' needs a non-empty string"),
    ({"field": "state", "op": "eq"}, "'eq' needs a value"),
    ({"field": "email", "op": "matches", "value": "(unclosed"}, "invalid regular expression"),
    ({"field": "d", "op": "within_last_days", "value": -1}, "number of days >= 0"),
    ({"field": "d", "op": "is_empty", "value": 3}, "'is_empty' takes no value"),
    ({"fld": "state", "op": "eq", "value": "NY"}, "unknown rule node"),
    ({"tag": "vip", "activity": "x"}, "ambiguous rule node"),
    ({"all": {"tag": "vip"}}, "'all' needs a list of rule nodes"),
    ({"tag": ""}, "'tag' needs a non-empty string"),
    ({"activity": "email_open", "min_count": -1}, "'min_count' needs a whole number"),
    ({"activity": "email_open", "min_count": 3, "max_count": 1}, "greater than max_count"),
    ({"activity": "email_open", "within_days": 0}, "'within_days' needs a number > 0"),
    ({"activity": "email_open", "within_days": 1e308}, "'within_days' needs a number > 0"),
    ({"field": "d", "op": "before_days_ago", "value": 1e300}, "number of days >= 0 and <="),
    ({"field": "score", "op": "gt", "value": 10 ** 400}, "'gt' needs a number"),
    ({"field": "state", "op": "eq", "value": "NY", "extra": 1}, "unknown key(s) ['extra']"),
    ("not a node", "a rule node must be an object"),
])
def test_each_rule_error_names_tenant_list_and_path(rules, expected):
    found = errors_of(lists(dyn("my-list", {"all": [{"tag": "ok"}, rules]})))
    assert len(found) == 1, found
    assert found[0].startswith("tenant acme, list my-list: ")
    assert expected in found[0]
    assert "rules.all[1]" in found[0]


def test_all_errors_of_a_file_are_reported_together():
    found = errors_of(lists(dyn("a", {"field": "x", "op": "nope"}),
                            dyn("b", {"field": "x", "op": "gt", "value": "y"}),
                            dyn("c", {"list": "missing"})))
    assert [line.split(":")[0] for line in found] == [
        "tenant acme, list a", "tenant acme, list b", "tenant acme, list c"]


def test_unknown_list_reference():
    assert errors_of(lists(dyn("a", {"list": "ghost"}))) == [
        "tenant acme, list a: references unknown list 'ghost'"]


def test_reference_to_another_tenants_list():
    found = errors_of(lists(dyn("a", {"list": "theirs"}), dyn("theirs", {"tag": "x"}, "other"),
                            tenants=("acme", "other")))
    assert found == ["tenant acme, list a: references list 'theirs' of another tenant "
                     "(other); lists meet only inside one tenant"]
    found = errors_of(lists(dyn("a", {"list": "a2", "tenant_id": "other"}),
                            dyn("a2", {"tag": "x"})))
    assert "of another tenant (other)" in found[0]


def test_cycles_are_named_self_reference_included():
    found = errors_of(lists(dyn("a", {"list": "b"}), dyn("b", {"all": [{"list": "c"}]}),
                            dyn("c", {"not": {"list": "a"}}), dyn("self", {"list": "self"})))
    assert "tenant acme, list a: cycle of list references: a -> b -> c -> a" in found
    assert "tenant acme, list self: cycle of list references: self -> self" in found


def test_duplicate_list_id_and_bad_static_lists():
    found = errors_of(lists(dyn("a", {"tag": "x"}), dyn("a", {"tag": "y"}),
                            {"tenant_id": "acme", "list_id": "s", "static": True,
                             "rules": {"tag": "x"}},
                            {"tenant_id": "acme", "list_id": "d"}))
    assert found == ["tenant acme, list a: duplicate list id within tenant acme",
                     "tenant acme, list s: a static list has no rules",
                     "tenant acme, list d: a dynamic list needs 'rules' (or \"static\": true "
                     "for a manual list)"]


def test_dependency_order_puts_every_list_after_its_references():
    doc = lists(dyn("top", {"all": [{"list": "mid"}, {"list": "base"}]}),
                dyn("mid", {"list": "base"}), dyn("base", {"tag": "x"}),
                {"tenant_id": "acme", "list_id": "manual", "static": True},
                dyn("uses-manual", {"list": "manual"}))
    order = parse_definitions(doc).tenants["acme"].order
    assert order.index("base") < order.index("mid") < order.index("top")
    assert order.index("manual") < order.index("uses-manual")


def test_known_tenants_and_version():
    doc = lists(dyn("a", {"tag": "x"}), tenants=("acme", "empty-tenant"))
    first = parse_definitions(doc)
    assert set(first.tenants) == {"acme", "empty-tenant"}
    assert first.tenant("nobody") is None
    changed = json.loads(json.dumps(doc))
    changed["lists"][0]["rules"] = {"tag": "y"}
    assert parse_definitions(changed).version != first.version
    assert parse_definitions(json.loads(json.dumps(doc))).version == first.version


def test_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DefinitionError) as caught:
        load_definitions(str(bad))
    assert caught.value.errors == [f"{bad}: not valid JSON: Expecting property name enclosed "
                                   "in double quotes at line 1 column 2"]
    with pytest.raises(DefinitionError) as caught:
        load_definitions(str(tmp_path / "missing.json"))
    assert "cannot read" in caught.value.errors[0]
    with pytest.raises(DefinitionError):
        definitions_from_text("[]")


@pytest.mark.parametrize("text, expected", [
    (json.dumps(lists(dyn("x\ud800", {"tag": "vip"}))),
     "a lone surrogate escape (half a UTF-16 pair) at the top.lists[0].list_id"),
    (json.dumps(lists(dyn("x", {"field": "score", "op": "gt", "value": float("nan")}))),
     "not valid JSON: NaN is not a JSON value"),
    ('{"tenants": ["acme"], "lists": [], "n": ' + "9" * 5000 + "}", "not valid JSON"),
    # ids are keys of text columns, which in PostgreSQL cannot hold NUL
    (json.dumps(lists(dyn("a\x00b", {"tag": "vip"}))), "neither holding NUL"),
    (json.dumps(lists(tenants=["ac\x00me"])), "without '/' or NUL"),
])
def test_text_no_table_can_store_is_one_error_line(text, expected):
    from rules import definitions_from_text
    with pytest.raises(DefinitionError) as caught:
        definitions_from_text(text)
    assert len(caught.value.errors) == 1 and expected in caught.value.errors[0]
