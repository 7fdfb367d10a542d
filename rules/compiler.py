"""Compile one tenant's lists into Python functions and index them by what they read.

Each list becomes a generated function over a lead's field view; the tenant gets one more
function that evaluates every list in dependency order. Beside them sit predicate
indexes: value -> lists for `eq`/`in`, sorted thresholds for numeric operators, and
kind/tag/field tables, so that a change re-evaluates only lists whose predicates can
actually change value, then the lists that reference those (the cascade).

The indexes also know each predicate's polarity. Groups are monotone, so a predicate
that turns true where it appears un-negated can only make a list join, never leave;
with the lead's memberships in hand, most candidate lists are ruled out by one set
operation instead of an evaluation.
"""

from __future__ import annotations

import heapq
import math
import re
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from operator import itemgetter

from rules.definitions import (DATE_OPS, EMPTY_OPS, NUMERIC_OPS, SCALAR_OPS, SET_OPS,
                               TenantDefs, activity_bounds)
from rules.lead import ActivityPolicy, merge_fields
from schemas.values import NAN, canon, days_to_us, to_date_us, to_number

try:  # the evaluation loop in C (rules/_native.c), built where a C compiler is found
    from rules import _native
except ImportError:
    _native = None

NATIVE = _native is not None


def use_native(native=None):
    """Whether to evaluate with the C module: `native` if given (True fails without the
    module), else whenever the module is built."""
    if native is None:
        return NATIVE
    if native and not NATIVE:
        raise RuntimeError("rules._native is not built (a C compiler builds it on install)")
    return bool(native)

_CMP = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def count_activities(acts, kind, ref, window, now):
    """How many activities of `kind` (on `ref`, when given) count at `now`.

    `window` is in microseconds, or None for all time; an activity at time `a` counts
    while `now < a + window`.
    """
    entries = acts.get(kind)
    if not entries:
        return 0
    if window is None:
        if ref is None:
            return len(entries)
        return sum(1 for e in entries if e[2] == ref)
    cutoff = now - window
    if ref is None:
        return len(entries) - bisect_right(entries, cutoff, key=_first)
    count = 0
    for entry in reversed(entries):
        if entry[0] <= cutoff:
            break
        if entry[2] == ref:
            count += 1
    return count


_first = itemgetter(0)  # an activity entry's time


_NO_LISTS = frozenset()


def _in_bounds(count, low, high):
    return count >= low and (high is None or count <= high)


def _date_truth(op, window, date, now):
    """A date predicate's value for a date (None when the field is not a date)."""
    if date is None:
        return False
    if op == "within_last_days":
        return date <= now < date + window
    return date + window <= now


ALL_TRUE = 255  # the watch of a list whose conjuncts are all true (a member)


def _mark(table, key, code, joins):
    """Record a predicate occurrence under `key`.

    The entry is four sets: codes and list indexes of the lists that may join when the
    predicate turns true (and leave when it turns false), then the same for lists that
    may leave when it turns true. A code is list << 8 | slot, the slot being the
    top-level conjunct the predicate sits in: joining is checked against the watch,
    which needs the slot; leaving is checked against membership, which needs the list.
    """
    entry = table.get(key)
    if entry is None:
        entry = table[key] = (set(), set(), set(), set())
    side = 0 if joins else 2
    entry[side].add(code)
    entry[side + 1].add(code >> 8)


def _frozen(entry):
    """An entry of `_mark` for lookups: join codes become (list, slot) pairs, all sorted
    tuples (a pair is checked against the lead's watch without arithmetic)."""
    join_codes, join_lists, leave_codes, leave_lists = entry
    return (tuple((code >> 8, code & 255) for code in sorted(join_codes)),
            tuple(sorted(join_lists)),
            tuple((code >> 8, code & 255) for code in sorted(leave_codes)),
            tuple(sorted(leave_lists)))


def _packed(entry):
    """An index entry as the C module reads it fastest: each run's ints packed as int32
    (the (list, slot) pairs flattened)."""
    join, join_lists, leave, leave_lists = entry
    return (_int32([word for pair in join for word in pair]), _int32(join_lists),
            _int32([word for pair in leave for word in pair]), _int32(leave_lists))


def _int32(values):
    return array("i", values).tobytes()


def turned(entry, true):
    """((list, slot) pairs that may join, lists that may leave) when the predicate turns
    true/false."""
    return (entry[0], entry[3]) if true else (entry[2], entry[1])


class _Codegen:
    """Turns rule trees into expressions and fills the indexes as it meets predicates."""

    # groups in one generated expression: Python's parser refuses more than 200 nested
    # parentheses, and the language nests groups to any depth, so deeper subtrees become
    # functions of their own
    MAX_NEST = 40

    def __init__(self, tenant):
        self.t = tenant
        self.consts = {}
        self._const_ids = {}
        self.code = 0  # list << 8 | slot of the conjunct being compiled
        self.helpers = []  # sources of the functions deep subtrees became

    def const(self, value, prefix="_k"):
        key = (prefix, repr(value))
        name = self._const_ids.get(key)
        if name is None:
            name = f"{prefix}{len(self._const_ids)}"
            self._const_ids[key] = name
            self.consts[name] = value
        return name

    def expr(self, node, idx, positive=True, depth=0):
        """Python source of `node` for list `idx`; `positive` is False under an odd `not`."""
        if "all" in node or "any" in node or "not" in node:
            if depth >= self.MAX_NEST:
                slot = len(self.helpers)
                self.helpers.append(None)  # the name is taken before deeper ones are made
                name = f"_g{slot}"
                body = self.expr(node, idx, positive)
                self.helpers[slot] = (f"def {name}(C, N, DT, T, S, W, A, now):\n"
                                      f"    return {body}\n")
                return f"{name}(C, N, DT, T, S, W, A, now)"
        if "all" in node or "any" in node:
            key = "all" if "all" in node else "any"
            parts = [self.expr(child, idx, positive, depth + 1) for child in node[key]]
            if not parts:
                return "True" if key == "all" else "False"
            return "(" + (" and " if key == "all" else " or ").join(parts) + ")"
        if "not" in node:
            return f"(not {self.expr(node['not'], idx, not positive, depth + 1)})"
        t = self.t
        if "field" in node:
            t.own[idx] = True
            return self.field_expr(node["field"], node["op"], node.get("value"), idx, positive)
        if "tag" in node:
            t.own[idx] = True
            tag = node["tag"].casefold()
            _mark(t.tag_index, tag, self.code, positive)
            return f"({tag!r} in T)"
        if "list" in node:
            j = t.pos[node["list"]]
            _mark(t.rev, j, self.code, positive)
            return f"(W[{j}] == 255)"
        return self.activity_expr(node, idx, positive)

    def field_expr(self, name, op, value, idx, positive):
        t = self.t
        f = repr(name)
        if op in SCALAR_OPS or op in SET_OPS:
            keys = [canon(value)] if op in SCALAR_OPS else [canon(v) for v in value]
            bucket = t.eq_index.setdefault(name, {})
            # eq/in turn true when the field starts matching a key; neq/not_in turn false
            joins = positive == (op in ("eq", "in"))
            for key in keys:
                _mark(bucket, key, self.code, joins)
            if op == "eq":
                return f"(C.get({f}) == {keys[0]!r})"
            if op == "neq":
                return f"(C.get({f}) != {keys[0]!r})"
            consts = self.const(frozenset(keys))
            return f"(C.get({f}) {'in' if op == 'in' else 'not in'} {consts})"
        if op in NUMERIC_OPS or op == "between":
            t.numeric_fields.add(name)
            # (bound, turns true when the value rises across it)
            bounds = [(value[0], True), (value[1], False)] if op == "between" else \
                [(value, op in ("gt", "gte"))]
            entries = t.thresholds.setdefault(name, [])
            for bound, true_on_rise in bounds:
                entries.append((float(bound), self.code, true_on_rise == positive))
            _mark(t.num_all, name, self.code, positive)
            if op == "between":
                return f"({float(value[0])!r} <= N.get({f}, _nan) <= {float(value[1])!r})"
            return f"(N.get({f}, _nan) {_CMP[op]} {float(value)!r})"
        if op in EMPTY_OPS:
            _mark(t.empty_index, name, self.code, positive == (op == "is_not_empty"))
            return f"({f} {'not in' if op == 'is_empty' else 'in'} C)"
        if op in DATE_OPS:
            t.date_fields.add(name)
            window = days_to_us(value)
            _mark(t.date_atoms.setdefault(name, {}), (op, window), self.code, positive)
            if op == "within_last_days":
                return f"(now - {window} < DT.get({f}, _nan) <= now)"
            return f"(DT.get({f}, _nan) <= now - {window})"
        # string operators: evaluated on the case-folded text ('' when empty)
        if op == "matches":
            pred = re.compile(value, re.IGNORECASE).search
            fn = self.const(pred, "_r")
            code = f"({fn}(C.get({f}, '')) is not None)"
            check = lambda text, pred=pred: pred(text) is not None  # noqa: E731 - truth
        else:
            needle = canon(value)
            code = {"contains": f"({needle!r} in C.get({f}, ''))",
                    "not_contains": f"({needle!r} not in C.get({f}, ''))",
                    "starts_with": f"C.get({f}, '').startswith({needle!r})",
                    "ends_with": f"C.get({f}, '').endswith({needle!r})"}[op]
            check = {"contains": lambda text, n=needle: n in text,
                     "not_contains": lambda text, n=needle: n not in text,
                     "starts_with": lambda text, n=needle: text.startswith(n),
                     "ends_with": lambda text, n=needle: text.endswith(n)}[op]
        key = (op, repr(value))
        _mark(t.string_atoms.setdefault(name, {}), key, self.code, positive)
        t.string_checks[(name, key)] = check
        t.string_ops[(name, key)] = (op, pred if op == "matches" else needle)
        return code

    def activity_expr(self, node, idx, positive):
        t = self.t
        t.own[idx] = True
        # interned, as the lead state's are: the C module compares refs by identity first
        kind = sys.intern(node["activity"].casefold())
        ref = sys.intern(node["ref"].casefold()) if node.get("ref") else None
        low, high = activity_bounds(node)
        window = days_to_us(node["within_days"]) if "within_days" in node else None
        _mark(t.activity_atoms.setdefault(kind, {}), (ref, window, low, high), self.code,
              positive)
        needed = max(low, (high + 1) if high is not None else 0, 1)
        horizon, cap, refs = t.policy_parts.get(kind, (0, 1, set()))
        horizon = None if window is None or horizon is None else max(horizon, window)
        if ref is not None:
            refs.add(ref)
        t.policy_parts[kind] = (horizon, max(cap, needed), refs)
        count = f"_count(A, {kind!r}, {ref!r}, {window!r}, now)"
        if high is None:
            return "True" if low == 0 else f"({count} >= {low})"
        return f"({low} <= {count} <= {high})"


# Activity bounds as the C module holds them (int64): no lead holds 2**62 activities, so
# a larger bound decides exactly as it would unclamped
COUNT_MAX = 2 ** 62


def _count_bound(bound):
    return None if bound is None else min(bound, COUNT_MAX)


class _WordCode:
    """Turns rule trees into the word code of rules/_native.c (see its header).

    The same trees as _Codegen, the same semantics: the property tests hold both
    against the reference interpreter. Indexes are _Codegen's to fill, not this one's.
    """

    def __init__(self, pos):
        self.pos = pos
        self.consts = []
        self._ids = {}
        n = _native
        self.field_ops = {"eq": n.OP_EQ, "neq": n.OP_NEQ, "in": n.OP_IN,
                          "not_in": n.OP_NOT_IN, "gt": n.OP_GT, "gte": n.OP_GTE,
                          "lt": n.OP_LT, "lte": n.OP_LTE, "between": n.OP_BETWEEN,
                          "is_empty": n.OP_EMPTY, "is_not_empty": n.OP_NOT_EMPTY,
                          "within_last_days": n.OP_WITHIN, "before_days_ago": n.OP_BEFORE,
                          "contains": n.OP_CONTAINS, "not_contains": n.OP_NOT_CONTAINS,
                          "starts_with": n.OP_STARTS, "ends_with": n.OP_ENDS,
                          "matches": n.OP_MATCHES}

    def const(self, value):
        if isinstance(value, str):
            value = sys.intern(value)  # as the lead state's names are (rules/lead.py)
        key = (type(value).__name__, id(value) if callable(value) else repr(value))
        index = self._ids.get(key)
        if index is None:
            index = self._ids[key] = len(self.consts)
            self.consts.append(value)
        return index

    @staticmethod
    def _bits(number):
        return struct.unpack("<q", struct.pack("<d", float(number)))[0]

    def program(self, definition):
        """[slots, node, ...]: a list's watch is its first false node."""
        if definition.static:
            return [1, _native.OP_STATIC, 3, self.const(definition.list_id)]
        rules = definition.rules
        children = rules.get("all") if isinstance(rules, dict) else None
        if not children:
            return [1, *self.node(rules)]
        return [len(children), *(word for child in children for word in self.node(child))]

    def node(self, node):
        n = _native
        if "all" in node or "any" in node:
            key = "all" if "all" in node else "any"
            body = [word for child in node[key] for word in self.node(child)]
            return [n.OP_ALL if key == "all" else n.OP_ANY, len(body) + 2, *body]
        if "not" in node:
            body = self.node(node["not"])
            return [n.OP_NOT, len(body) + 2, *body]
        if "field" in node:
            return self.field(node["field"], node["op"], node.get("value"))
        if "tag" in node:
            return [n.OP_TAG, 3, self.const(node["tag"].casefold())]
        if "list" in node:
            return [n.OP_LIST, 3, self.pos[node["list"]]]
        kind = node["activity"].casefold()
        ref = node["ref"].casefold() if node.get("ref") else None
        low, high = map(_count_bound, activity_bounds(node))
        window = days_to_us(node["within_days"]) if "within_days" in node else None
        return [n.OP_ACT, 8, self.const(kind), -1 if ref is None else self.const(ref),
                int(window is not None), window or 0, low, -1 if high is None else high]

    def field(self, name, op, value):
        code = self.field_ops[op]
        f = self.const(sys.intern(name))
        if op in SCALAR_OPS:
            return [code, 4, f, self.const(canon(value))]
        if op in SET_OPS:
            return [code, 4, f, self.const(frozenset(canon(v) for v in value))]
        if op == "between":
            return [code, 5, f, self._bits(value[0]), self._bits(value[1])]
        if op in NUMERIC_OPS:
            return [code, 4, f, self._bits(value)]
        if op in EMPTY_OPS:
            return [code, 3, f]
        if op in DATE_OPS:
            return [code, 4, f, days_to_us(value)]
        if op == "matches":
            return [code, 4, f, self.const(re.compile(value, re.IGNORECASE).search)]
        return [code, 4, f, self.const(canon(value))]


class CompiledTenant:
    """Everything needed to evaluate the leads of one tenant quickly."""

    def __init__(self, tenant: TenantDefs, version, native=None):
        self.tenant_id = tenant.tenant_id
        self.version = version
        self.order = list(tenant.order)
        self.pos = {lid: i for i, lid in enumerate(self.order)}
        self.static = frozenset(lid for lid, d in tenant.lists.items() if d.static)
        size = len(self.order)
        self.own = [False] * size
        self.rev = {}
        self.eq_index, self.empty_index, self.tag_index = {}, {}, {}
        self.string_atoms, self.string_checks, self.string_ops = {}, {}, {}
        self.thresholds, self.num_all, self.numeric_fields = {}, {}, set()
        self.date_atoms, self.date_fields = {}, set()
        self.activity_atoms, self.policy_parts = {}, {}

        gen = _Codegen(self)
        bodies, full = [], ["def _full(C, N, DT, T, S, M, A, now, W):"]
        # a list reads the lists it references through the watch W: W[j] == 255 when the
        # lead belongs to list j, and lists are evaluated in dependency order
        for i, lid in enumerate(self.order):
            expr = self._watch_expr(gen, i, tenant.lists[lid])
            bodies.append(f"def _l{i}(C, N, DT, T, S, W, A, now):\n    return {expr}\n")
            full.append(f"    W[{i}] = r = {expr}")
            full.append(f"    if r == 255: M.add({lid!r})")
        full.append("    return M")
        namespace = {"_nan": NAN, "_count": count_activities, **gen.consts}
        exec(compile("\n".join(gen.helpers + bodies + ["\n".join(full)]),  # noqa: S102
                     f"<lists of {self.tenant_id}>", "exec"), namespace)
        self.fns = [namespace[f"_l{i}"] for i in range(size)]
        self._full = namespace["_full"]
        self.sources = bodies

        # every index entry from here on: ((list, slot) pairs that may join, lists, the
        # same for leaving), see _frozen
        self.rev = {i: _frozen(entry) for i, entry in self.rev.items()}
        # list -> the lists that reference it, and the other way round (cascade depths)
        self.users = {j: tuple(sorted(set(entry[1]) | set(entry[3])))
                      for j, entry in self.rev.items()}
        self.refs = {}
        for j, users in self.users.items():
            for i in users:
                self.refs.setdefault(i, []).append(j)
        for table in (self.empty_index, self.tag_index, self.num_all,
                      *self.eq_index.values()):
            for key, entry in table.items():
                table[key] = _frozen(entry)
        for tables in (self.string_atoms, self.date_atoms, self.activity_atoms):
            for atoms in tables.values():
                for key, entry in atoms.items():
                    atoms[key] = _frozen(entry)
        self.size = size
        for name, entries in self.thresholds.items():
            entries.sort(key=lambda e: e[0])
            # two sorted runs per field: lists that may join when the value rises across
            # a bound, and lists that may leave
            runs = []
            for joins in (True, False):
                picked = [e for e in entries if e[2] == joins]
                runs.append(([e[0] for e in picked], [(e[1] >> 8, e[1] & 255) for e in picked],
                             [e[1] >> 8 for e in picked]))
            self.thresholds[name] = runs
        # per field: (check, entry) for the Python path, (op, operand, entry) for C
        self.string_ops = {name: tuple(self.string_ops[(name, key)] + (entry,)
                                       for key, entry in atoms.items())
                           for name, atoms in self.string_atoms.items()}
        self.string_atoms = {name: [(self.string_checks[(name, key)], entry)
                                    for key, entry in atoms.items()]
                             for name, atoms in self.string_atoms.items()}
        self.date_atoms = {name: list(atoms.items()) for name, atoms in self.date_atoms.items()}
        # activity predicates grouped by what they count: (ref, window, [(low, high,
        # entry)], sorted lows >= 1, sorted highs); the timed groups are for next_flip
        self.activity_groups, self.timed_groups = {}, {}
        for kind, atoms in self.activity_atoms.items():
            groups = {}
            for (ref, window, low, high), entry in atoms.items():
                groups.setdefault((ref, window), []).append((low, high, entry))
            self.activity_groups[kind] = [
                (ref, window, bounds, sorted({b[0] for b in bounds if b[0] >= 1}),
                 sorted({b[1] for b in bounds if b[1] is not None}))
                for (ref, window), bounds in groups.items()]
            timed = [(ref, window, lows, highs) for ref, window, _, lows, highs
                     in self.activity_groups[kind] if window is not None]
            if timed:
                self.timed_groups[kind] = timed
        # date predicates per field: (any within_last_days, sorted windows)
        self.date_windows = {
            name: (any(op == "within_last_days" for (op, _), _ in atoms),
                   sorted({window for (_, window), _ in atoms}))
            for name, atoms in self.date_atoms.items()}
        self.policies = {kind: ActivityPolicy(horizon, cap, frozenset(refs))
                         for kind, (horizon, cap, refs) in self.policy_parts.items()}
        self.has_time = bool(self.date_atoms or self.timed_groups)
        self.native = self._native_tenant(tenant) if use_native(native) else None
        # an upsert's field merge (LeadState.apply), in C with the C backend
        self.merge = merge_fields if self.native is None else _native.merge_fields

    def _native_tenant(self, tenant):
        words, starts = _WordCode(self.pos), []
        code = array("q")
        for lid in self.order:
            starts.append(len(code))
            code.extend(words.program(tenant.lists[lid]))
        rev = tuple(_packed(self.rev[i]) if i in self.rev else None for i in range(self.size))
        native = _native.Tenant(code.tobytes(), starts, tuple(words.consts),
                                tuple(self.order), rev)
        native.set_time(
            tuple((name, has_within, tuple(windows))
                  for name, (has_within, windows) in self.date_windows.items()),
            tuple((kind, tuple((ref, window, tuple(map(_count_bound, lows)),
                                tuple(map(_count_bound, highs)))
                               # by ref: next_flip filters a kind's entries once per ref
                               for ref, window, lows, highs in sorted(
                                   groups, key=lambda g: (g[0] is not None, g[0] or ""))))
                  for kind, groups in self.timed_groups.items()))
        ops = words.field_ops
        # the C module gets copies of the indexes (it checks them once, so nothing may
        # change them afterwards), entries packed
        native.set_index(
            {name: {key: _packed(entry) for key, entry in bucket.items()}
             for name, bucket in self.eq_index.items()},
            {name: _packed(entry) for name, entry in self.empty_index.items()},
            {name: tuple((ops[op], operand, _packed(entry)) for op, operand, entry in atoms)
             for name, atoms in self.string_ops.items()},
            {name: _packed(entry) for name, entry in self.num_all.items()},
            {name: tuple((tuple(bounds), _int32([w for pair in codes for w in pair]),
                          _int32(lists)) for bounds, codes, lists in runs)
             for name, runs in self.thresholds.items()},
            {name: tuple((op == "within_last_days", window, _packed(entry))
                         for (op, window), entry in atoms)
             for name, atoms in self.date_atoms.items()})
        native.set_fields(frozenset(self.numeric_fields), frozenset(self.date_fields), canon,
                          to_number, to_date_us)
        native.set_activity({
            kind: tuple((ref, window, tuple((_count_bound(low), _count_bound(high),
                                             _packed(entry))
                                            for low, high, entry in bounds))
                        for ref, window, bounds, _, _ in groups)
            for kind, groups in self.activity_groups.items()})
        return native

    @staticmethod
    def _watch_expr(gen, i, definition):
        """Source of the list's watch: the index of its first false top-level conjunct,
        or ALL_TRUE (255) when the lead belongs to the list.

        A list the lead is not in stays out as long as that conjunct stays false, so a
        predicate turning true elsewhere in the list needs no evaluation.
        """
        if definition.static:
            gen.t.own[i] = True
            return f"255 if {definition.list_id!r} in S else 0"
        rules = definition.rules
        children = rules.get("all") if isinstance(rules, dict) else None
        if not children:
            gen.code = i << 8
            return f"255 if {gen.expr(rules, i)} else 0"
        parts = []
        for slot, child in enumerate(children):
            slot = min(slot, ALL_TRUE - 1)
            gen.code = (i << 8) | slot
            parts.append(f"{slot} if not {gen.expr(child, i)} else ")
        return "".join(parts) + "255"

    # -- the field view -----------------------------------------------------------------
    def field_entry(self, name, value):
        """(comparison key, number, date) of one field value, as the compiled code reads."""
        number = to_number(value) if name in self.numeric_fields else None
        date = to_date_us(value) if name in self.date_fields else None
        return canon(value), number, date

    def view_of(self, state):
        """The field view of a lead, cached on its state for this tenant: with the C
        module one of its views (entries by field number), else the (C, N, DT) dicts."""
        if state.view_owner is not self and self.native is not None:
            state.view, state.view_owner = self.native.view(state.values), self
        elif state.view_owner is not self:
            C, N, DT = {}, {}, {}
            for name, value in state.values.items():
                key, number, date = self.field_entry(name, value)
                if key is not None:
                    C[name] = key
                if number is not None:
                    N[name] = number
                if date is not None:
                    DT[name] = date
            state.view, state.view_owner = (C, N, DT), self
        return state.view

    def update_view(self, view, name, value):
        """Set one field of a cached view to its new value; return the old (key, number,
        date) entry."""
        C, N, DT = view
        old = C.get(name), N.get(name), DT.get(name)
        key, number, date = self.field_entry(name, value)
        if key is None:
            C.pop(name, None)
        else:
            C[name] = key
        if number is None:
            N.pop(name, None)
        else:
            N[name] = number
        if date is None:
            DT.pop(name, None)
        else:
            DT[name] = date
        return old

    def update_fields(self, view, values, changed):
        """update_view() for each field in `changed`: {field: its old (key, number, date)}."""
        if self.native is not None:
            return self.native.update_view(view, values, changed)
        update = self.update_view
        return {name: update(view, name, values.get(name)) for name in changed}

    # -- evaluation ---------------------------------------------------------------------
    def evaluate_all(self, view, tags, statics, acts, now, watch=None):
        """Every list, from scratch: the set of list ids the lead belongs to.

        `watch` (a bytearray of one byte per list), when given, receives each list's watch.
        """
        if watch is None:
            watch = bytearray(self.size)
        if self.native is not None:
            return self.native.evaluate_all(view, tags, statics, acts, watch, now)
        C, N, DT = view
        return self._full(C, N, DT, tags, statics, set(), acts, now, watch)

    def evaluate_list(self, view, tags, statics, acts, watch, i, now):
        """List i's watch, reading the lists it references in `watch` (left unchanged)."""
        if self.native is not None:
            return self.native.evaluate_list(view, tags, statics, acts, watch, i, now)
        C, N, DT = view
        return self.fns[i](C, N, DT, tags, statics, watch, acts, now)

    def diff(self, before, after, view, tags, statics, acts, watch, now):
        """Deltas (list id, added, depth) turning `before` into `after`, in list order.

        `after` and `watch` are what evaluate_all gave for the lead's view, tags, statics
        and activities at `now`. Depths as rules.reference.deltas_between defines them:
        0 when no list the changed list references changed, or when its own criteria
        account for the change (read with the lists it references at their `before`
        membership, it already takes its new value); else 1 + the least depth among the
        referenced lists that changed.
        """
        changed = sorted(self.pos[lid] for lid in before ^ after if lid in self.pos)
        depth = {}
        out = []
        counter = None  # the watch with every changed list at its before membership
        for i in changed:
            lid = self.order[i]
            value = lid in after
            via = [depth[j] for j in self._refs_of(i) if j in depth]
            if via and self.own[i]:
                if counter is None:
                    counter = bytearray(watch)
                    for j in changed:
                        counter[j] = ALL_TRUE if self.order[j] in before else 0
                if (self.evaluate_list(view, tags, statics, acts, counter, i, now)
                        == ALL_TRUE) == value:
                    via = None
            depth[i] = d = 1 + min(via) if via else 0
            out.append((lid, value, d))
        # lists that no longer exist leave too
        out.extend((lid, False, 0) for lid in sorted(before - after) if lid not in self.pos)
        return out

    def _refs_of(self, i):
        """The lists list i references."""
        return self.refs.get(i, ())

    def candidates(self, view, tags, acts, changes, old_fields, now, watch=None):
        """(join, leave, any): what may change because of `changes`.

        `join` is a list of collections of (list, slot) pairs of lists that can only
        join (a predicate turned true un-negated, or false under a `not`), `leave` a list
        of collections of list indexes that can only leave, `any` a set of list indexes
        that may do either. Collections are the indexes' own, never copied (the C
        module's are packed). With the lead's `watch`, the C module does not work out
        string predicates that could mark no list under it.
        """
        if self.native is not None:
            join, leave = self.native.field_candidates(view, old_fields, now, watch)
            if changes.activities:
                more_join, more_leave = self.native.activity_candidates(
                    acts, changes.activities, now)
                join += more_join
                leave += more_leave
            if not (changes.tags or changes.statics):
                return join, leave, _NO_LISTS
        else:
            join, leave = [], []
            self._field_candidates(view, old_fields, now, join, leave)
            self._activity_candidates(acts, changes.activities, now, join, leave)
        both = set()
        for tag in changes.tags:
            entry = self.tag_index.get(tag)
            if entry:
                codes, lists = turned(entry, tag in tags)
                join.append(codes)
                leave.append(lists)
        for lid in changes.statics:
            i = self.pos.get(lid)
            if i is not None and lid in self.static:
                both.add(i)
        return join, leave, both

    def _activity_candidates(self, acts, activities, now, join, leave):
        """The added activities' part of candidates(), appended to join and leave."""
        added = {}
        for kind, ref, at, _ in activities:
            added.setdefault(kind, []).append((ref, at))
        for kind, new in added.items():
            for want, window, atoms, _, _ in self.activity_groups.get(kind, ()):
                fresh = sum(1 for ref, at in new if (want is None or want == ref)
                            and (window is None or now < at + window))
                if not fresh:
                    continue
                count = count_activities(acts, kind, want, window, now)
                for low, high, entry in atoms:
                    now_true = _in_bounds(count, low, high)
                    if _in_bounds(count - fresh, low, high) != now_true:
                        codes, lists = turned(entry, now_true)
                        join.append(codes)
                        leave.append(lists)

    def _field_candidates(self, view, old_fields, now, join, leave):
        """The changed fields' part of candidates(), appended to join and leave."""
        C, N, DT = view
        for name, (old_key, old_num, old_date) in old_fields.items():
            new_key = C.get(name)
            if old_key != new_key:
                bucket = self.eq_index.get(name)
                if bucket:
                    entry = bucket.get(new_key)
                    if entry:
                        join.append(entry[0])
                        leave.append(entry[3])
                    entry = bucket.get(old_key)
                    if entry:
                        join.append(entry[2])
                        leave.append(entry[1])
                if (old_key is None) != (new_key is None):
                    entry = self.empty_index.get(name)
                    if entry:
                        codes, lists = turned(entry, old_key is None)
                        join.append(codes)
                        leave.append(lists)
                atoms = self.string_atoms.get(name)
                if atoms:
                    before, after = old_key or "", new_key or ""
                    for check, entry in atoms:
                        now_true = check(after)
                        if check(before) != now_true:
                            codes, lists = turned(entry, now_true)
                            join.append(codes)
                            leave.append(lists)
            new_num = N.get(name)
            if old_num != new_num and name in self.num_all:
                if old_num is None or new_num is None:
                    codes, lists = turned(self.num_all[name], old_num is None)
                    join.append(codes)
                    leave.append(lists)
                else:
                    rising = new_num > old_num
                    low, high = (old_num, new_num) if rising else (new_num, old_num)
                    up, down = self.thresholds[name]
                    if not rising:
                        up, down = down, up
                    bounds, codes, _ = up
                    join.append(codes[bisect_left(bounds, low):bisect_right(bounds, high)])
                    bounds, _, lists = down
                    leave.append(lists[bisect_left(bounds, low):bisect_right(bounds, high)])
            new_date = DT.get(name)
            if old_date != new_date and name in self.date_atoms:
                for (op, window), entry in self.date_atoms[name]:
                    now_true = _date_truth(op, window, new_date, now)
                    if _date_truth(op, window, old_date, now) != now_true:
                        codes, lists = turned(entry, now_true)
                        join.append(codes)
                        leave.append(lists)

    def flipping(self, view, acts, moment):
        """(join, leave, any), as from candidates(), of the time predicates that change
        value exactly at `moment` (a moment next_flip returned)."""
        if self.native is not None:
            join, leave = self.native.flipping(view, acts, moment)
            return join, leave, _NO_LISTS
        join, leave = [], []
        DT = view[2]
        for name, atoms in self.date_atoms.items():
            date = DT.get(name)
            if date is None:
                continue
            for (op, window), entry in atoms:
                if op == "within_last_days":
                    if date == moment or date + window == moment:
                        now_true = date == moment and window > 0
                    else:
                        continue
                elif date + window == moment:
                    now_true = True
                else:
                    continue
                codes, lists = turned(entry, now_true)
                join.append(codes)
                leave.append(lists)
        for kind, groups in self.activity_groups.items():
            if kind not in acts:
                continue
            for ref, window, atoms, _, _ in groups:
                if window is None:
                    continue
                count = count_activities(acts, kind, ref, window, moment)
                before = count_activities(acts, kind, ref, window, moment - 1)
                if count == before:
                    continue
                for low, high, entry in atoms:
                    now_true = _in_bounds(count, low, high)
                    if _in_bounds(before, low, high) != now_true:
                        codes, lists = turned(entry, now_true)
                        join.append(codes)
                        leave.append(lists)
        return join, leave, _NO_LISTS

    def members_of(self, watch):
        """The list ids a watch says the lead belongs to."""
        order = self.order
        return {order[i] for i, w in enumerate(watch) if w == ALL_TRUE}

    def evaluate_dirty(self, view, tags, statics, acts, watch, candidates, now):
        """Re-evaluate candidate lists and their cascades in dependency order.

        `candidates` is (join, leave, any) as from `candidates()`; `watch` (one byte per
        list, ALL_TRUE for a member) is updated in place. Returns deltas (list id, added,
        depth), the depths those diff() gives for the same before and after state.
        """
        join, leave, both = candidates
        if self.native is not None:
            return self.native.evaluate_dirty(view, tags, statics, acts, watch, join, leave,
                                              both, now)
        todo = set(both)
        add = todo.add
        # a join code counts only while its conjunct is the list's first false one; a
        # member's watch is ALL_TRUE, above every slot, so members drop out here too
        for pairs in join:
            for i, slot in pairs:
                if watch[i] == slot:
                    add(i)
        for lists in leave:
            for i in lists:
                if watch[i] == ALL_TRUE:
                    add(i)
        if not todo:
            return []
        heap = sorted(todo)
        C, N, DT = view
        fns, order, rev, users = self.fns, self.order, self.rev, self.users
        queued = set(todo)
        # list -> the least depth among the changed lists it references, noted for every
        # list that references a changed one (not only those its change could mark: a
        # list marked through another reference may have this one as its shallowest)
        via = {}
        changed = []
        out = []
        while heap:
            i = heapq.heappop(heap)
            was = watch[i] == ALL_TRUE
            watch[i] = result = fns[i](C, N, DT, tags, statics, watch, acts, now)
            value = result == ALL_TRUE
            if value != was:
                # the depth of diff() and rules.reference.deltas_between. A list no
                # candidate of its own marked would not have changed with its references
                # as before (the watch argument that makes this evaluation exact), so
                # only one that was needs reading with them reverted
                d = via.get(i)
                if d is None:
                    d = 0
                elif i in todo and self._own_account(view, tags, statics, acts, watch,
                                                     changed, i, value, now):
                    d = 0
                else:
                    d += 1
                changed.append(i)
                out.append((order[i], value, d))
                entry = rev.get(i)
                if entry:
                    for j in users[i]:
                        if via.get(j, d + 1) > d:
                            via[j] = d
                    pairs, lists = turned(entry, value)
                    for j, slot in pairs:
                        if watch[j] == slot and j not in queued:
                            queued.add(j)
                            heapq.heappush(heap, j)
                    for j in lists:
                        if watch[j] == ALL_TRUE and j not in queued:
                            queued.add(j)
                            heapq.heappush(heap, j)
        return out

    def _own_account(self, view, tags, statics, acts, watch, changed, i, value, now):
        """Whether list i, read with the lists in `changed` back at their before
        membership, already takes its new value: its own criteria account for the change."""
        counter = bytearray(watch)
        for j in changed:
            counter[j] = 0 if counter[j] == ALL_TRUE else ALL_TRUE
        C, N, DT = view
        return (self.fns[i](C, N, DT, tags, statics, counter, acts, now) == ALL_TRUE) == value

    # -- time ---------------------------------------------------------------------------
    def next_flip(self, view, acts, now):
        """The earliest moment after `now` at which a time-window predicate changes value.

        None when nothing can change with time alone. Exact: a date predicate flips when
        `now` crosses the date or the date plus a window; a count over a window drops by
        one each time an activity leaves it, so the first flip of a group of predicates
        on (kind, ref, window) comes from the largest bound the count can still cross.
        """
        if self.native is not None:
            return self.native.next_flip(view, acts, now)
        best = math.inf
        DT = view[2]
        for name, (has_within, windows) in self.date_windows.items():
            date = DT.get(name)
            if date is None:
                continue
            if has_within and now < date < best:
                best = date
            k = bisect_right(windows, now - date)  # the smallest window still ahead
            if k < len(windows) and date + windows[k] < best:
                best = date + windows[k]
        for kind, groups in self.timed_groups.items():
            entries = acts.get(kind)
            if not entries:
                continue
            by_ref = {None: entries}  # (time, id, ref) ascending, per campaign ref
            for ref, window, lows, highs in groups:
                times = by_ref.get(ref)
                if times is None:
                    times = by_ref[ref] = [e for e in entries if e[2] == ref]
                start = bisect_right(times, now - window, key=_first)  # first one inside
                count = len(times) - start
                if not count:
                    continue
                # the count falls to each bound below it in turn: leaving `high` (from
                # above) happens when count - high activities have left, reaching
                # `low - 1` when count - low + 1 have
                k = bisect_left(highs, count) - 1
                if k >= 0:
                    moment = times[start + count - highs[k] - 1][0] + window
                    if moment < best:
                        best = moment
                k = bisect_right(lows, count) - 1
                if k >= 0:
                    moment = times[start + count - lows[k]][0] + window
                    if moment < best:
                        best = moment
        return None if best == math.inf else best


def compile_definitions(definitions, native=None):
    """tenant id -> CompiledTenant for every tenant of a `Definitions`."""
    return {tid: CompiledTenant(tenant, definitions.version, native)
            for tid, tenant in definitions.tenants.items()}
