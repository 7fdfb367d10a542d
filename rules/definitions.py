"""Load, validate and order list definitions (SPEC section 3).

`load_definitions` turns a definition document into `Definitions`: every list checked,
every tenant's lists in dependency order. All problems of a document are collected and
raised together as one `DefinitionError`, one line per problem naming tenant and list.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from dataclasses import dataclass, field

from schemas.values import lone_surrogate, reject_json_constant, to_number

FIELD_OPS = (
    "eq", "neq", "in", "not_in", "contains", "not_contains", "starts_with", "ends_with",
    "gt", "gte", "lt", "lte", "between", "is_empty", "is_not_empty", "matches",
    "within_last_days", "before_days_ago",
)
SCALAR_OPS = frozenset({"eq", "neq"})
SET_OPS = frozenset({"in", "not_in"})
STRING_OPS = frozenset({"contains", "not_contains", "starts_with", "ends_with"})
NUMERIC_OPS = frozenset({"gt", "gte", "lt", "lte"})
EMPTY_OPS = frozenset({"is_empty", "is_not_empty"})
DATE_OPS = frozenset({"within_last_days", "before_days_ago"})
NODE_KINDS = ("all", "any", "not", "field", "tag", "list", "activity")
_NODE_KEYS = {
    "all": {"all"}, "any": {"any"}, "not": {"not"},
    "field": {"field", "op", "value"}, "tag": {"tag"}, "list": {"list", "tenant_id"},
    "activity": {"activity", "ref", "min_count", "max_count", "within_days"},
}
_LIST_KEYS = {"tenant_id", "list_id", "name", "description", "rules", "static"}


class DefinitionError(ValueError):
    """A definition document with problems; `errors` holds one line per problem."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class ListDef:
    tenant_id: str
    list_id: str
    name: str
    rules: object  # the rule tree (plain JSON) of a dynamic list; None for a static list
    static: bool = False

    def references(self):
        """Ids of the lists this list's rules refer to."""
        nodes = []
        _collect_list_nodes(self.rules, nodes)
        return [node["list"] for node in nodes if isinstance(node["list"], str)]


@dataclass
class TenantDefs:
    tenant_id: str
    lists: dict = field(default_factory=dict)   # list_id -> ListDef
    order: list = field(default_factory=list)   # list ids, each after every list it references


@dataclass
class Definitions:
    tenants: dict   # tenant_id -> TenantDefs
    version: str    # content hash of the document, names the definitions in `cause`

    def tenant(self, tenant_id):
        return self.tenants.get(tenant_id)


def activity_bounds(node):
    """(min, max) counts of an activity node: min defaults to 1, or 0 when only max is given."""
    high = node.get("max_count")
    low = node.get("min_count", 0 if high is not None else 1)
    return low, high


MAX_DAYS = 3_650_000  # ~10,000 years: every window stays within the timestamps' range


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        to_number(value) is not None


def _is_scalar(value):
    """A value `eq` and `in` can compare with: a non-empty string, a number or a boolean
    (an empty string would mean "is empty", which has operators of its own)."""
    return (isinstance(value, str) and value != "") or isinstance(value, bool) \
        or _is_number(value)


class _Checker:
    """Walks one list's rule tree and records problems with their path."""

    def __init__(self, where, errors):
        self.where = where
        self.errors = errors

    def fail(self, path, message):
        self.errors.append(f"{self.where}: {message} at {path}")

    def node(self, node, path):
        if not isinstance(node, dict):
            self.fail(path, f"a rule node must be an object, got {json.dumps(node)[:60]}")
            return
        kinds = [k for k in NODE_KINDS if k in node]
        if len(kinds) != 1:
            self.fail(path, f"unknown rule node with keys {sorted(node)}" if not kinds
                      else f"ambiguous rule node with keys {sorted(node)}")
            return
        kind = kinds[0]
        extra = set(node) - _NODE_KEYS[kind]
        if extra:
            self.fail(path, f"unknown key(s) {sorted(extra)} in a '{kind}' node")
        getattr(self, "node_" + kind)(node, path)

    def node_all(self, node, path, key="all"):
        children = node[key]
        if not isinstance(children, list):
            self.fail(path, f"'{key}' needs a list of rule nodes")
            return
        for i, child in enumerate(children):
            self.node(child, f"{path}.{key}[{i}]")

    def node_any(self, node, path):
        self.node_all(node, path, "any")

    def node_not(self, node, path):
        self.node(node["not"], f"{path}.not")

    def node_tag(self, node, path):
        if not isinstance(node["tag"], str) or not node["tag"]:
            self.fail(path, "'tag' needs a non-empty string")

    def node_list(self, node, path):
        if not isinstance(node["list"], str) or not node["list"]:
            self.fail(path, "'list' needs a non-empty list id")

    def node_activity(self, node, path):
        if not isinstance(node["activity"], str) or not node["activity"]:
            self.fail(path, "'activity' needs a non-empty activity kind")
        if "ref" in node and (not isinstance(node["ref"], str) or not node["ref"]):
            self.fail(path, "activity 'ref' needs a non-empty string")
        for key in ("min_count", "max_count"):
            if key in node:
                value = node[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    self.fail(path, f"activity '{key}' needs a whole number >= 0, "
                                    f"got {json.dumps(value)}")
        lo, hi = node.get("min_count"), node.get("max_count")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            self.fail(path, f"activity min_count {lo} is greater than max_count {hi}")
        if "within_days" in node:
            days = node["within_days"]
            if not _is_number(days) or not 0 < days <= MAX_DAYS:
                self.fail(path, f"activity 'within_days' needs a number > 0 and <= "
                                f"{MAX_DAYS}, got {json.dumps(days)}")

    def node_field(self, node, path):
        name, op = node.get("field"), node.get("op")
        if not isinstance(name, str) or not name:
            self.fail(path, "'field' needs a non-empty field name")
        if op not in FIELD_OPS:
            self.fail(path, f"unknown operator {json.dumps(op)}")
            return
        has_value = "value" in node
        value = node.get("value")
        shown = json.dumps(value)[:60]
        if op in EMPTY_OPS:
            if has_value and value is not None:
                self.fail(path, f"'{op}' takes no value, got {shown}")
        elif not has_value:
            self.fail(path, f"'{op}' needs a value")
        elif op in SCALAR_OPS:
            if not _is_scalar(value):
                self.fail(path, f"'{op}' needs a non-empty string, a number or a boolean, "
                                f"got {shown}")
        elif op in SET_OPS:
            if not isinstance(value, list) or not all(_is_scalar(v) for v in value):
                self.fail(path, f"'{op}' needs a list of non-empty strings, numbers or booleans, "
                                f"got {shown}")
        elif op in STRING_OPS:
            if not (isinstance(value, str) and value) and not _is_number(value):
                self.fail(path, f"'{op}' needs a non-empty string, got {shown}")
        elif op in NUMERIC_OPS:
            if not _is_number(value):
                self.fail(path, f"'{op}' needs a number, got {shown}")
        elif op == "between":
            if not (isinstance(value, list) and len(value) == 2
                    and all(_is_number(v) for v in value)):
                self.fail(path, f"'between' needs [low, high], two numbers, got {shown}")
            elif value[0] > value[1]:
                self.fail(path, f"'between' low {value[0]} is greater than high {value[1]}")
        elif op == "matches":
            if not isinstance(value, str):
                self.fail(path, f"'matches' needs a regular expression string, got {shown}")
            else:
                try:
                    re.compile(value)
                except re.error as err:
                    self.fail(path, f"invalid regular expression {shown}: {err}")
        elif op in DATE_OPS:
            if not _is_number(value) or not 0 <= value <= MAX_DAYS:
                self.fail(path, f"'{op}' needs a number of days >= 0 and <= {MAX_DAYS}, "
                                f"got {shown}")


def _find_cycles(lists):
    """The reference cycles among a tenant's lists, each as a list of ids, first id repeated."""
    graph = {lid: sorted(set(d.references()) & lists.keys()) for lid, d in lists.items()}
    cycles, state, stack = [], {}, []

    def visit(lid):
        state[lid] = "open"
        stack.append(lid)
        for ref in graph[lid]:
            if state.get(ref) == "open":
                cycles.append(stack[stack.index(ref):] + [ref])
            elif ref not in state:
                visit(ref)
        stack.pop()
        state[lid] = "done"

    for lid in sorted(graph):
        if lid not in state:
            visit(lid)
    return cycles


def _order(lists):
    """List ids so that each comes after every list it references (ties by id)."""
    deps = {lid: set(d.references()) & lists.keys() for lid, d in lists.items()}
    users = {lid: [] for lid in lists}
    for lid, refs in deps.items():
        for ref in refs:
            users[ref].append(lid)
    ready = [lid for lid, refs in deps.items() if not refs]
    heapq.heapify(ready)
    waiting = {lid: len(refs) for lid, refs in deps.items()}
    order = []
    while ready:
        lid = heapq.heappop(ready)
        order.append(lid)
        for user in users[lid]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    return order


def parse_definitions(document):
    """Validate a parsed definition document; return `Definitions` or raise DefinitionError."""
    errors = []
    if not isinstance(document, dict):
        raise DefinitionError(["the definition document must be a JSON object "
                               "with 'tenants' and 'lists'"])
    extra = set(document) - {"tenants", "lists"}
    if extra:
        errors.append(f"unknown top-level key(s) {sorted(extra)}")
    raw_tenants = document.get("tenants", [])
    raw_lists = document.get("lists", [])
    if not isinstance(raw_tenants, list):
        errors.append("'tenants' must be a list of tenant ids")
        raw_tenants = []
    if not isinstance(raw_lists, list):
        raise DefinitionError(errors + ["'lists' must be a list of list definitions"])

    tenants = {}
    for i, entry in enumerate(raw_tenants):
        tid = entry.get("tenant_id") if isinstance(entry, dict) else entry
        if not isinstance(tid, str) or not tid or "/" in tid or "\x00" in tid:
            errors.append(f"tenants[{i}]: a tenant needs a non-empty tenant_id without '/' "
                          "or NUL")
            continue
        tenants.setdefault(tid, TenantDefs(tid))

    for i, raw in enumerate(raw_lists):
        if not isinstance(raw, dict):
            errors.append(f"lists[{i}]: a list definition must be an object")
            continue
        tid, lid = raw.get("tenant_id"), raw.get("list_id")
        if not isinstance(tid, str) or not tid or "/" in tid \
                or not isinstance(lid, str) or not lid or "\x00" in tid + lid:
            # NUL: PostgreSQL's text, where ids are keys, cannot hold it
            errors.append(f"lists[{i}]: a list needs a non-empty tenant_id (without '/') "
                          "and a non-empty list_id, neither holding NUL")
            continue
        where = f"tenant {tid}, list {lid}"
        extra = set(raw) - _LIST_KEYS
        if extra:
            errors.append(f"{where}: unknown key(s) {sorted(extra)}")
        tenant = tenants.setdefault(tid, TenantDefs(tid))
        if lid in tenant.lists:
            errors.append(f"{where}: duplicate list id within tenant {tid}")
            continue
        static = raw.get("static", False)
        if not isinstance(static, bool):
            errors.append(f"{where}: 'static' must be true or false")
            static = False
        rules = raw.get("rules")
        if static and rules is not None:
            errors.append(f"{where}: a static list has no rules")
        elif not static:
            if rules is None:
                errors.append(f"{where}: a dynamic list needs 'rules' "
                              "(or \"static\": true for a manual list)")
            else:
                _Checker(where, errors).node(rules, "rules")
        name = raw.get("name", lid)
        tenant.lists[lid] = ListDef(tid, lid, name if isinstance(name, str) else lid,
                                    None if static else rules, static)

    owner = {}
    for tid, tenant in tenants.items():
        for lid in tenant.lists:
            owner.setdefault(lid, []).append(tid)
    for tid, tenant in tenants.items():
        for lid, definition in tenant.lists.items():
            where = f"tenant {tid}, list {lid}"
            refs = []
            _collect_list_nodes(definition.rules, refs)
            for ref in refs:
                target, other = ref.get("list"), ref.get("tenant_id", tid)
                if not isinstance(target, str):
                    continue
                if other != tid:
                    errors.append(f"{where}: references list '{target}' of another tenant "
                                  f"({other}); lists meet only inside one tenant")
                elif target not in tenant.lists:
                    elsewhere = [t for t in owner.get(target, []) if t != tid]
                    if elsewhere:
                        errors.append(f"{where}: references list '{target}' of another "
                                      f"tenant ({', '.join(elsewhere)}); lists meet only "
                                      "inside one tenant")
                    else:
                        errors.append(f"{where}: references unknown list '{target}'")
        for cycle in _find_cycles(tenant.lists):
            errors.append(f"tenant {tid}, list {cycle[0]}: cycle of list references: "
                          + " -> ".join(cycle))
    if errors:
        raise DefinitionError(errors)
    for tenant in tenants.values():
        tenant.order = _order(tenant.lists)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    version = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return Definitions(tenants, version)


def _collect_list_nodes(node, found):
    if not isinstance(node, dict):
        return
    if "list" in node and "field" not in node:
        found.append(node)
    for key in ("all", "any"):
        if isinstance(node.get(key), list):
            for child in node[key]:
                _collect_list_nodes(child, found)
    if "not" in node:
        _collect_list_nodes(node["not"], found)


def definitions_from_text(text, source="definition text"):
    """Parse and validate a definition document given as JSON text."""
    try:
        document = json.loads(text, parse_constant=reject_json_constant)
    except json.JSONDecodeError as err:
        raise DefinitionError([f"{source}: not valid JSON: {err.msg} at line {err.lineno} "
                               f"column {err.colno}"]) from None
    except (ValueError, RecursionError) as err:  # NaN, 4,300+ digits, nested too deep
        raise DefinitionError([f"{source}: not valid JSON: {err}"[:300]]) from None
    bad = lone_surrogate(document) if "\\u" in text else None
    if bad is not None:  # only an escape can make one
        raise DefinitionError([f"{source}: a lone surrogate escape (half a UTF-16 pair) "
                               f"at {bad[0]}: no table can store it"])
    return parse_definitions(document)


def load_definitions(path):
    """Read a definition file and validate it."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise DefinitionError([f"cannot read {path}: {reason}"]) from None
    return definitions_from_text(text, path)
