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
from bisect import bisect_left, bisect_right

from rules.definitions import (DATE_OPS, EMPTY_OPS, NUMERIC_OPS, SCALAR_OPS, SET_OPS,
                               TenantDefs, activity_bounds)
from rules.lead import ActivityPolicy
from rules.values import NAN, canon, days_to_us, to_date_us, to_number

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


def _first(entry):
    return entry[0]


def _mark(table, key, idx, joins):
    """Record list `idx` under `key`: it may join (or leave) when the predicate turns true."""
    pair = table.get(key)
    if pair is None:
        pair = table[key] = (set(), set())
    pair[0 if joins else 1].add(idx)


class _Codegen:
    """Turns rule trees into expressions and fills the indexes as it meets predicates."""

    def __init__(self, tenant):
        self.t = tenant
        self.consts = {}
        self._const_ids = {}

    def const(self, value, prefix="_k"):
        key = (prefix, repr(value))
        name = self._const_ids.get(key)
        if name is None:
            name = f"{prefix}{len(self._const_ids)}"
            self._const_ids[key] = name
            self.consts[name] = value
        return name

    def expr(self, node, idx, positive=True):
        """Python source of `node` for list `idx`; `positive` is False under an odd `not`."""
        if "all" in node or "any" in node:
            key = "all" if "all" in node else "any"
            parts = [self.expr(child, idx, positive) for child in node[key]]
            if not parts:
                return "True" if key == "all" else "False"
            return "(" + (" and " if key == "all" else " or ").join(parts) + ")"
        if "not" in node:
            return f"(not {self.expr(node['not'], idx, not positive)})"
        t = self.t
        if "field" in node:
            t.own[idx] = True
            return self.field_expr(node["field"], node["op"], node.get("value"), idx, positive)
        if "tag" in node:
            t.own[idx] = True
            tag = node["tag"].lower()
            _mark(t.tag_index, tag, idx, positive)
            return f"({tag!r} in T)"
        if "list" in node:
            _mark(t.rev, t.pos[node["list"]], idx, positive)
            return f"({node['list']!r} in M)"
        return self.activity_expr(node, idx)

    def field_expr(self, name, op, value, idx, positive):
        t = self.t
        f = repr(name)
        if op in SCALAR_OPS or op in SET_OPS:
            keys = [canon(value)] if op in SCALAR_OPS else [canon(v) for v in value]
            bucket = t.eq_index.setdefault(name, {})
            # eq/in turn true when the field starts matching a key; neq/not_in turn false
            joins = positive == (op in ("eq", "in"))
            for key in keys:
                _mark(bucket, key, idx, joins)
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
                entries.append((float(bound), idx, true_on_rise == positive))
            _mark(t.num_all, name, idx, positive)
            if op == "between":
                return f"({float(value[0])!r} <= N.get({f}, _nan) <= {float(value[1])!r})"
            return f"(N.get({f}, _nan) {_CMP[op]} {float(value)!r})"
        if op in EMPTY_OPS:
            _mark(t.empty_index, name, idx, positive == (op == "is_not_empty"))
            return f"({f} {'not in' if op == 'is_empty' else 'in'} C)"
        if op in DATE_OPS:
            t.date_fields.add(name)
            t.date_index.setdefault(name, set()).add(idx)
            t.time_lists.add(idx)
            window = days_to_us(value)
            windows = t.date_windows.setdefault(name, (set(), set()))
            windows[0 if op == "within_last_days" else 1].add(window)
            if op == "within_last_days":
                return f"(now - {window} < DT.get({f}, _nan) <= now)"
            return f"(DT.get({f}, _nan) <= now - {window})"
        # string operators: evaluated on the lower-case text ('' when empty)
        if op == "matches":
            pred = re.compile(value, re.IGNORECASE).search
            fn = self.const(pred, "_r")
            code = f"({fn}(C.get({f}, '')) is not None)"
            check = lambda text, pred=pred: pred(text) is not None  # noqa: E731
        else:
            needle = canon(value)
            code = {"contains": f"({needle!r} in C.get({f}, ''))",
                    "not_contains": f"({needle!r} not in C.get({f}, ''))",
                    "starts_with": f"C.get({f}, '').startswith({needle!r})",
                    "ends_with": f"C.get({f}, '').endswith({needle!r})"}[op]
            check = {"contains": lambda text, n=needle: n in text,
                     "not_contains": lambda text, n=needle: n in text,
                     "starts_with": lambda text, n=needle: text.startswith(n),
                     "ends_with": lambda text, n=needle: text.endswith(n)}[op]
        atoms = t.string_atoms.setdefault(name, {})
        atoms.setdefault((op, repr(value)), (check, set()))[1].add(idx)
        return code

    def activity_expr(self, node, idx):
        t = self.t
        t.own[idx] = True
        kind = node["activity"].lower()
        ref = node["ref"].lower() if node.get("ref") else None
        low, high = activity_bounds(node)
        window = days_to_us(node["within_days"]) if "within_days" in node else None
        t.act_index.setdefault((kind, ref), set()).add(idx)
        needed = max(low, (high + 1) if high is not None else 0, 1)
        horizon, cap, refs = t.policy_parts.get(kind, (0, 1, set()))
        horizon = None if window is None or horizon is None else max(horizon, window)
        if ref is not None:
            refs.add(ref)
        t.policy_parts[kind] = (horizon, max(cap, needed), refs)
        if window is not None:
            t.time_lists.add(idx)
            t.window_atoms.setdefault(kind, set()).add((ref, window, low, high))
        count = f"_count(A, {kind!r}, {ref!r}, {window!r}, now)"
        if high is None:
            return "True" if low == 0 else f"({count} >= {low})"
        return f"({low} <= {count} <= {high})"


class CompiledTenant:
    """Everything needed to evaluate the leads of one tenant quickly."""

    def __init__(self, tenant: TenantDefs, version):
        self.tenant_id = tenant.tenant_id
        self.version = version
        self.order = list(tenant.order)
        self.pos = {lid: i for i, lid in enumerate(self.order)}
        self.static = frozenset(lid for lid, d in tenant.lists.items() if d.static)
        size = len(self.order)
        self.own = [False] * size
        self.rev = {}
        self.eq_index, self.empty_index, self.string_atoms = {}, {}, {}
        self.thresholds, self.num_all, self.numeric_fields = {}, {}, set()
        self.date_index, self.date_windows, self.date_fields = {}, {}, set()
        self.tag_index, self.act_index, self.window_atoms = {}, {}, {}
        self.time_lists, self.policy_parts = set(), {}

        gen = _Codegen(self)
        bodies, full = [], ["def _full(C, N, DT, T, S, M, A, now):"]
        for i, lid in enumerate(self.order):
            definition = tenant.lists[lid]
            if definition.static:
                self.own[i] = True
                expr = f"({lid!r} in S)"
            else:
                expr = gen.expr(definition.rules, i)
            bodies.append(f"def _l{i}(C, N, DT, T, S, M, A, now):\n    return {expr}\n")
            full.append(f"    if {expr}: M.add({lid!r})")
        full.append("    return M")
        namespace = {"_nan": NAN, "_count": count_activities, **gen.consts}
        exec(compile("\n".join(bodies + ["\n".join(full)]),  # noqa: S102 - generated here
                     f"<lists of {self.tenant_id}>", "exec"), namespace)
        self.fns = [namespace[f"_l{i}"] for i in range(size)]
        self._full = namespace["_full"]
        self.sources = bodies

        self.rev = {i: (tuple(sorted(up)), tuple(sorted(down)))
                    for i, (up, down) in self.rev.items()}
        for name, entries in self.thresholds.items():
            entries.sort(key=lambda e: e[0])
            # two sorted runs per field: lists that may join when the value rises across
            # a bound, and lists that may leave
            runs = []
            for joins in (True, False):
                picked = [e for e in entries if e[2] == joins]
                runs.append(([e[0] for e in picked], [e[1] for e in picked]))
            self.thresholds[name] = runs
        self.string_atoms = {name: list(atoms.values())
                             for name, atoms in self.string_atoms.items()}
        self.date_windows = {name: (tuple(sorted(w)), tuple(sorted(b)))
                             for name, (w, b) in self.date_windows.items()}
        self.window_atoms = {kind: tuple(sorted(atoms, key=repr))
                             for kind, atoms in self.window_atoms.items()}
        self.policies = {kind: ActivityPolicy(horizon, cap, frozenset(refs))
                         for kind, (horizon, cap, refs) in self.policy_parts.items()}
        self.has_time = bool(self.time_lists)

    # -- the field view -----------------------------------------------------------------
    def field_entry(self, name, value):
        """(comparison key, number, date) of one field value, as the compiled code reads."""
        number = to_number(value) if name in self.numeric_fields else None
        date = to_date_us(value) if name in self.date_fields else None
        return canon(value), number, date

    def view_of(self, state):
        """The (C, N, DT) dictionaries of a lead, cached on its state for this tenant."""
        if state.view_owner is not self:
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
        """Set one field of a cached view to its new value."""
        for table, item in zip(view, self.field_entry(name, value)):
            if item is None:
                table.pop(name, None)
            else:
                table[name] = item

    # -- evaluation ---------------------------------------------------------------------
    def evaluate_all(self, view, tags, statics, acts, now):
        """Every list, from scratch: the set of list ids the lead belongs to."""
        C, N, DT = view
        return self._full(C, N, DT, tags, statics, set(), acts, now)

    def diff(self, before, after):
        """Deltas (list id, added, depth) turning `before` into `after`, in list order.

        A list with predicates of its own changed at depth 0; a list made only of
        references changed through the shallowest changed list it references.
        """
        changed = sorted(self.pos[lid] for lid in before ^ after if lid in self.pos)
        depth = {}
        out = []
        for i in changed:
            lid = self.order[i]
            if self.own[i]:
                d = 0
            else:
                d = min((depth[j] + 1 for j in self._refs_of(i) if j in depth), default=0)
            depth[i] = d
            out.append((lid, lid in after, d))
        # lists that no longer exist leave too
        out.extend((lid, False, 0) for lid in sorted(before - after) if lid not in self.pos)
        return out

    def _refs_of(self, i):
        refs = getattr(self, "_fwd", None)
        if refs is None:
            refs = {}
            for target, (up, down) in self.rev.items():
                for user in up + down:
                    refs.setdefault(user, []).append(target)
            self._fwd = refs
        return refs.get(i, ())

    def candidates(self, view, tags, changes, old_fields):
        """(join, leave, any) sets of list indexes whose own predicates changed value.

        Lists in `join` can only join (a predicate turned true un-negated, or false
        under a `not`), lists in `leave` can only leave, lists in `any` may do either.
        """
        join, leave, both = set(), set(), set()
        C, N, DT = view
        for name, (old_key, old_num, old_date) in old_fields.items():
            new_key = C.get(name)
            if old_key != new_key:
                bucket = self.eq_index.get(name)
                if bucket:
                    now_matching = bucket.get(new_key)
                    if now_matching:
                        join |= now_matching[0]
                        leave |= now_matching[1]
                    no_longer = bucket.get(old_key)
                    if no_longer:
                        join |= no_longer[1]
                        leave |= no_longer[0]
                if (old_key is None) != (new_key is None):
                    pair = self.empty_index.get(name)
                    if pair:
                        appeared = old_key is None
                        join |= pair[0 if appeared else 1]
                        leave |= pair[1 if appeared else 0]
                atoms = self.string_atoms.get(name)
                if atoms:
                    before, after = old_key or "", new_key or ""
                    for check, lists in atoms:
                        if check(before) != check(after):
                            both |= lists
            new_num = N.get(name)
            if old_num != new_num and name in self.num_all:
                if old_num is None or new_num is None:
                    appeared = old_num is None
                    pair = self.num_all[name]
                    join |= pair[0 if appeared else 1]
                    leave |= pair[1 if appeared else 0]
                else:
                    rising = new_num > old_num
                    low, high = (old_num, new_num) if rising else (new_num, old_num)
                    for joins, (bounds, lists) in zip((rising, not rising),
                                                      self.thresholds[name]):
                        hit = lists[bisect_left(bounds, low):bisect_right(bounds, high)]
                        (join if joins else leave).update(hit)
            if old_date != DT.get(name) and name in self.date_index:
                both |= self.date_index[name]
        for tag in changes.tags:
            pair = self.tag_index.get(tag)
            if pair:
                added = tag in tags
                join |= pair[0 if added else 1]
                leave |= pair[1 if added else 0]
        for lid in changes.statics:
            i = self.pos.get(lid)
            if i is not None and lid in self.static:
                both.add(i)
        for kind, ref in changes.activities:
            for key in ((kind, None), (kind, ref)):
                hit = self.act_index.get(key)
                if hit:
                    both |= hit
        return join, leave, both

    def member_indexes(self, members):
        pos = self.pos
        return {pos[lid] for lid in members if lid in pos}

    def evaluate_dirty(self, view, tags, statics, acts, members, candidates, now):
        """Re-evaluate candidate lists and their cascades in dependency order.

        `candidates` is (join, leave, any) as from `candidates()`; `members` (a set of
        list ids) is updated in place. Returns deltas (list id, added, depth).
        """
        join, leave, both = candidates
        inside = self.member_indexes(members)
        heap = sorted((join - inside) | (leave & inside) | both)
        if not heap:
            return []
        C, N, DT = view
        fns, order, rev = self.fns, self.order, self.rev
        depth = dict.fromkeys(heap, 0)
        out = []
        while heap:
            i = heapq.heappop(heap)
            value = fns[i](C, N, DT, tags, statics, members, acts, now)
            if value != (i in inside):
                lid = order[i]
                d = depth[i]
                if value:
                    members.add(lid)
                    inside.add(i)
                else:
                    members.discard(lid)
                    inside.discard(i)
                out.append((lid, value, d))
                users = rev.get(i)
                if users:
                    joiners, leavers = users if value else users[::-1]
                    for j in joiners:
                        if j not in inside:
                            self._push(heap, depth, j, d + 1)
                    for j in leavers:
                        if j in inside:
                            self._push(heap, depth, j, d + 1)
        return out

    @staticmethod
    def _push(heap, depth, j, d):
        known = depth.get(j)
        if known is None:
            depth[j] = d
            heapq.heappush(heap, j)
        elif known > d:
            depth[j] = d

    # -- time ---------------------------------------------------------------------------
    def next_flip(self, view, acts, now):
        """The earliest moment after `now` at which a time-window predicate changes value.

        None when nothing can change with time alone. Exact per predicate: counts are
        followed down as activities leave their window, dates cross their bounds.
        """
        best = math.inf
        DT = view[2]
        for name, (within, before) in self.date_windows.items():
            date = DT.get(name)
            if date is None:
                continue
            if within and now < date < best:
                best = date
            for window in within + before:
                moment = date + window
                if now < moment < best:
                    best = moment
        for kind, atoms in self.window_atoms.items():
            entries = acts.get(kind)
            if not entries:
                continue
            for ref, window, low, high in atoms:
                cutoff = now - window
                times = [e[0] for e in entries if e[0] > cutoff and (ref is None or e[2] == ref)]
                count = len(times)
                if high is not None and count > high:
                    moment = times[count - high - 1] + window
                elif low >= 1 and count >= low:
                    moment = times[count - low] + window
                else:
                    continue
                if moment < best:
                    best = moment
        return None if best == math.inf else best


def compile_definitions(definitions):
    """tenant id -> CompiledTenant for every tenant of a `Definitions`."""
    return {tid: CompiledTenant(tenant, definitions.version)
            for tid, tenant in definitions.tenants.items()}
