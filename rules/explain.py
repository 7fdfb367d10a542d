"""Why a lead is or is not in a list: the rule tree with every node's value, as text.

Built on the reference interpreter, so the explanation is the same computation as the
oracle, and worded for the person who wrote the list, not for the engine.
"""

from __future__ import annotations

import json

from rules.definitions import activity_bounds
from rules.reference import activity_count, evaluate
from schemas.values import format_ts

_PHRASES = {
    "eq": "is {v}", "neq": "is not {v}", "in": "is one of {v}", "not_in": "is none of {v}",
    "contains": "contains {v}", "not_contains": "does not contain {v}",
    "starts_with": "starts with {v}", "ends_with": "ends with {v}",
    "gt": "is greater than {v}", "gte": "is at least {v}", "lt": "is less than {v}",
    "lte": "is at most {v}", "between": "is between {v}", "is_empty": "is empty",
    "is_not_empty": "has a value", "matches": "matches the pattern {v}",
    "within_last_days": "is a date within the last {v} days",
    "before_days_ago": "is a date more than {v} days ago",
}


def _show(value):
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value)
    return json.dumps(value, ensure_ascii=False)


def _mark(value):
    return "[yes]" if value else "[no] "


def explain_node(node, profile, members, now, depth=0):
    """Lines explaining `node`, each indented by `depth`, with its value in front."""
    pad = "  " * depth
    value = evaluate(node, profile, members, now)
    if "all" in node or "any" in node:
        key = "all" if "all" in node else "any"
        head = "ALL of these are true" if key == "all" else "ANY of these is true"
        lines = [f"{pad}{_mark(value)} {head}:"]
        for child in node[key]:
            lines += explain_node(child, profile, members, now, depth + 1)
        return lines
    if "not" in node:
        return [f"{pad}{_mark(value)} NOT:"] + explain_node(node["not"], profile, members,
                                                            now, depth + 1)
    if "field" in node:
        name, op, target = node["field"], node["op"], node.get("value")
        if op == "between":
            phrase = f"is between {_show(target[0])} and {_show(target[1])}"
        else:
            phrase = _PHRASES[op].format(v=_show(target))
        raw = profile.fields.get(name)
        seen = "empty" if raw is None else _show(raw)
        return [f"{pad}{_mark(value)} {name} {phrase}  ({name} = {seen})"]
    if "tag" in node:
        return [f"{pad}{_mark(value)} has the tag {_show(node['tag'])}"]
    if "list" in node:
        return [f"{pad}{_mark(value)} is in the list {_show(node['list'])}"]
    low, high = activity_bounds(node)
    what = node["activity"] + (f" on {node['ref']}" if node.get("ref") else "")
    if high is None:
        times = f"at least {low} time{'s' if low != 1 else ''}"
    elif low == 0:
        times = f"at most {high} time{'s' if high != 1 else ''}"
    else:
        times = f"between {low} and {high} times"
    period = f"in the last {node['within_days']} days" if "within_days" in node else "ever"
    count = activity_count(node, profile, now)
    return [f"{pad}{_mark(value)} did {what} {times} {period}  (counted {count})"]


def explain_lead(tenant, profile, now, only_list=None):
    """Text explaining each list of `tenant` (TenantDefs) for one lead at `now`."""
    lines = [f"evaluated at {format_ts(now)}"]
    if profile is None:
        lines.append("the lead is deleted or unknown: it is in no list")
        return "\n".join(lines)
    members = set()
    for lid in tenant.order:
        definition = tenant.lists[lid]
        if definition.static:
            inside = lid in profile.static_lists
        else:
            inside = evaluate(definition.rules, profile, members, now)
        if inside:
            members.add(lid)
        if only_list is not None and lid != only_list:
            continue
        title = f"list {lid}" + (f" ({definition.name})" if definition.name != lid else "")
        lines.append("")
        lines.append(f"{title}: {'MEMBER' if inside else 'not a member'}")
        if definition.static:
            lines.append("  static list: members are added and removed by hand")
        else:
            lines += explain_node(definition.rules, profile, members, now, 1)
    return "\n".join(lines)
