"""The reference interpreter: a plain recursion over the rule JSON, obviously correct.

It reads a `Profile` directly (no views, no indexes, no generated code) and is the oracle
the tests hold the compiled, incremental path to. It is also what `explain` and
`reconcile` use, where clarity matters more than speed.
"""

from __future__ import annotations

import re

from rules.definitions import activity_bounds
from schemas.values import canon, days_to_us, to_date_us, to_number


def field_matches(op, target, raw, now):
    """Whether a field with value `raw` satisfies `op target` at time `now`."""
    key = canon(raw)
    if op == "eq":
        return key is not None and key == canon(target)
    if op == "neq":
        return key is None or key != canon(target)
    if op == "in":
        return key is not None and key in {canon(v) for v in target}
    if op == "not_in":
        return key is None or key not in {canon(v) for v in target}
    if op == "is_empty":
        return key is None
    if op == "is_not_empty":
        return key is not None
    text = key or ""
    if op == "contains":
        return canon(target) in text
    if op == "not_contains":
        return canon(target) not in text
    if op == "starts_with":
        return text.startswith(canon(target))
    if op == "ends_with":
        return text.endswith(canon(target))
    if op == "matches":
        return re.search(target, text, re.IGNORECASE) is not None
    if op in ("gt", "gte", "lt", "lte", "between"):
        number = to_number(raw)
        if number is None:
            return False
        if op == "between":
            return target[0] <= number <= target[1]
        return {"gt": number > target, "gte": number >= target,
                "lt": number < target, "lte": number <= target}[op]
    if op in ("within_last_days", "before_days_ago"):
        date = to_date_us(raw)
        if date is None:
            return False
        window = days_to_us(target)
        if op == "within_last_days":
            return date <= now < date + window
        return date + window <= now
    raise ValueError(f"unknown operator {op}")


def activity_count(node, profile, now):
    """How many of the lead's activities the activity node counts at `now`."""
    kind = node["activity"].casefold()
    ref = node["ref"].casefold() if node.get("ref") else None
    window = days_to_us(node["within_days"]) if "within_days" in node else None
    return sum(1 for ts, k, r, _ in profile.activities
               if k == kind and (ref is None or r == ref)
               and (window is None or now < ts + window))


def activity_matches(node, profile, now):
    low, high = activity_bounds(node)
    count = activity_count(node, profile, now)
    return count >= low and (high is None or count <= high)


def evaluate(node, profile, members, now):
    """The value of one rule node for a lead; `members` holds the lists it is in so far."""
    if "all" in node:
        return all(evaluate(child, profile, members, now) for child in node["all"])
    if "any" in node:
        return any(evaluate(child, profile, members, now) for child in node["any"])
    if "not" in node:
        return not evaluate(node["not"], profile, members, now)
    if "field" in node:
        return field_matches(node["op"], node.get("value"), profile.fields.get(node["field"]),
                             now)
    if "tag" in node:
        return node["tag"].casefold() in profile.tags
    if "list" in node:
        return node["list"] in members
    return activity_matches(node, profile, now)


def evaluate_tenant(tenant, profile, now):
    """The lists of `tenant` (TenantDefs) a lead belongs to at `now`; none when deleted."""
    members = set()
    if profile is None:
        return members
    for lid in tenant.order:
        definition = tenant.lists[lid]
        if definition.static:
            value = lid in profile.static_lists
        else:
            value = evaluate(definition.rules, profile, members, now)
        if value:
            members.add(lid)
    return members


def _references(node, out):
    """Adds to `out` the lists `node` references; True when it has criteria of its own."""
    if "all" in node or "any" in node:
        own = False
        for child in node["all" if "all" in node else "any"]:
            own = _references(child, out) or own
        return own
    if "not" in node:
        return _references(node["not"], out)
    if "list" in node:
        out.add(node["list"])
        return False
    return True


def deltas_between(tenant, before, profile, now):
    """The deltas (list id, added, depth) from the memberships `before` (a set of list
    ids; empty for a new lead) to the lists of `tenant` the lead with `profile` (None:
    deleted) belongs to at `now`, in dependency order, then removals from lists that
    no longer exist.

    Cascade depth, a function of the before memberships and the after state only, not of
    how an engine reached it: a changed list has depth 0 when its own criteria account
    for the change, that is, it has criteria other than list references (a static list
    counts) and, evaluated on the after state with every list it references read at its
    before membership, it already takes its new value; depth 0 too when none of the
    lists it references changed. Otherwise its depth is 1 + the least depth among the
    referenced lists that changed (one did: with them all at their before value the
    list would not have changed). A deleted lead leaves everything at depth 0.
    """
    after = evaluate_tenant(tenant, profile, now)
    depth, out = {}, []
    for lid in tenant.order:
        if (lid in before) == (lid in after):
            continue
        definition = tenant.lists[lid]
        refs = set()
        own = definition.static or _references(definition.rules, refs)
        changed = [depth[r] for r in refs if r in depth]
        if not changed or profile is None or (
                own and evaluate(definition.rules, profile, before, now) == (lid in after)):
            depth[lid] = 0
        else:
            depth[lid] = 1 + min(changed)
        out.append((lid, lid in after, depth[lid]))
    out.extend((lid, False, 0) for lid in sorted(before) if lid not in tenant.lists)
    return out
