"""What happens to one lead when an event arrives, a timer fires or the definitions change.

This is the whole per-lead algorithm, free of Beam: the stateful DoFn, the benchmarks and
the tests call it with a `LeadState` and get membership deltas back. Order of work for an
event: follow a definition change, let time-window flips up to the event's time happen
(each with its own `timer:` cause), merge the event, then evaluate only what it touched.
"""

from __future__ import annotations

from rules.compiler import _native, compile_definitions, use_native
from rules.lead import SEEN_MAX
from schemas.values import format_ts
from schemas.records import Delta, make_delta

DEFINITION_CAUSE = "definition:"

APPLIED, DUPLICATE, STALE, NO_TENANT = "applied", "duplicate", "stale", "no_tenant"


class DefinitionsBehind(RuntimeError):
    """These definitions are older than ones the lead has already followed: evaluating
    it with them would take its memberships back (the caller loads newer ones first, or
    waits until it can)."""
_IN_C = frozenset({"lead_upserted", "activity"})  # the events Tenant.on_event takes


class LeadProcessor:
    """Evaluates leads against one version of the definitions."""

    def __init__(self, definitions, native=None, order=None):
        """`native`: evaluate with rules/_native.c (None: whenever it is built).

        `order`: where these definitions stand among the versions of their source (its
        modification time when it held them, microseconds); None when unordered (tests,
        tools), which no lead is ever held back by.
        """
        self.definitions = definitions
        self.version = definitions.version
        self.order = order
        self.native = use_native(native)
        self.compiled = compile_definitions(definitions, self.native)

    def knows(self, tenant_id):
        return tenant_id in self.compiled

    def behind(self, state):
        """True when the lead has followed definitions newer than these: it must not be
        evaluated with them (its memberships would go back, then forth again)."""
        theirs = state.defs_order
        return (theirs is not None and self.order is not None
                and state.defs_version != self.version
                and (theirs, state.defs_version) > (self.order, self.version))

    def _check_order(self, state):
        if self.behind(state):
            raise DefinitionsBehind(
                f"definitions {self.version} are older than {state.defs_version}, which "
                "the lead has followed")

    # -- entry points -------------------------------------------------------------------
    def on_event(self, state, event):
        """Merge `event` into `state`; return (outcome, deltas)."""
        ct = self.compiled.get(event.tenant_id)
        if ct is None or ct.native is None or event.type not in _IN_C:
            return self._on_event(state, event, ct)
        # the common events, an upsert or activity of a lead evaluated against these
        # definitions, in one call into C: the steps of _on_event in the same order.
        # False when a timer is due first; None when it needs more (the state untouched)
        deltas = ct.native.on_event(state, event, ct, ct.version, SEEN_MAX, Delta,
                                    ct.policies)
        if type(deltas) is list:
            return APPLIED, deltas
        if deltas is None:
            return self._on_event(state, event, ct)
        flipped = self._advance(ct, state, event.tenant_id, event.lead_id,
                                max(state.clock, event.occurred_at))
        deltas = ct.native.on_event(state, event, ct, ct.version, SEEN_MAX, Delta,
                                    ct.policies)
        outcome, deltas = (APPLIED, deltas) if type(deltas) is list else \
            self._on_event(state, event, ct)
        return outcome, flipped + deltas

    def _on_event(self, state, event, ct):
        """on_event's general path: any event, any state."""
        self._check_order(state)
        if state.is_duplicate(event):
            return DUPLICATE, []
        tenant, lead = event.tenant_id, event.lead_id
        if ct is None:
            # validated against definitions that had the tenant, evaluated after they
            # dropped it: the lead leaves its lists, as a sweep would have it
            return NO_TENANT, self.on_definitions(state, tenant, lead)
        deltas = [] if state.defs_version == ct.version else \
            self._sync_definitions(ct, state, tenant, lead)
        now = event.occurred_at if state.clock is None else max(state.clock, event.occurred_at)
        if state.next_flip is not None and state.next_flip <= now:
            deltas += self._advance(ct, state, tenant, lead, now)
        state.clock = now
        existed = state.exists
        changes = state.apply(event, ct.policies, ct.merge)
        if changes is None:
            return STALE, deltas
        if not changes and existed == state.exists:
            return APPLIED, deltas
        cause, when = event.event_id, event.occurred_at
        exists = state.exists
        watch = state.watch if state.watch is not None and len(state.watch) == ct.size \
            else None
        if state.view_owner is ct and exists and existed and not changes.deleted \
                and watch is not None and ct.native is not None \
                and not (changes.tags or changes.statics):
            # the common case in one call into C: the view updated, candidates,
            # evaluation, deltas
            found, state.seq = ct.native.on_change(
                state.view, state.tag_set, state.static_set, state.acts, watch, state.values,
                changes.fields, changes.activities, now, state.members, tenant, lead, when,
                cause, state.seq, Delta)
            deltas += found
            view = state.view
        else:
            if state.view_owner is ct:
                # the cached view still holds the old values: update it, keeping them
                view = state.view
                old_fields = ct.update_fields(view, state.values, changes.fields)
            else:
                view = ct.view_of(state)
                old_fields = {name: ct.field_entry(name, old)
                              for name, old in changes.fields.items()}
            if not exists:
                found = [(lid, False, 0) for lid in sorted(state.members)]
                state.watch = None  # a lead that comes back is evaluated from scratch
            elif not existed or changes.deleted:
                found = self._full(ct, state, view, now)
            else:
                candidates = ct.candidates(view, state.tag_set, state.acts, changes,
                                           old_fields, now, watch)
                found = self._evaluate(ct, state, view, candidates, now)
            deltas += self._record(state, tenant, lead, found, when, cause)
        if ct.has_time and (changes.activities or changes.deleted or not existed
                            or not ct.date_fields.isdisjoint(changes.fields)):
            state.next_flip = ct.next_flip(view, state.acts, now) if exists else None
        return APPLIED, deltas

    def on_timer(self, state, tenant, lead, now):
        """A timer fired at `now`: deltas of every time-window flip up to then."""
        self._check_order(state)
        ct = self.compiled.get(tenant)
        if ct is None:  # the tenant is gone: its lists with it, and nothing flips
            return self.on_definitions(state, tenant, lead)
        deltas = self._sync_definitions(ct, state, tenant, lead)
        deltas += self._advance(ct, state, tenant, lead, now)
        if state.clock is not None and now > state.clock:
            state.clock = now  # nothing flips between the last flip and now
        return deltas

    def on_definitions(self, state, tenant, lead):
        """Bring a lead in line with these definitions (its tenant may be gone)."""
        self._check_order(state)
        ct = self.compiled.get(tenant)
        if ct is None:
            cause = f"{DEFINITION_CAUSE}{self.version}"
            found = [(lid, False, 0) for lid in sorted(state.members)]
            if state.defs_version != self.version:
                state.defs_version = self.version
                state.defs_order = self.order
                state.defs_changes += 1
            state.next_flip = None
            return self._record(state, tenant, lead, found, state.clock or 0, cause,
                                state.defs_changes)
        return self._sync_definitions(ct, state, tenant, lead)

    def run_history(self, state, events, until=None):
        """Apply a lead's events in time order, then let time run to `until`.

        Sorting makes the deltas of a replay identical to the first run's, so their ids
        match and the sink adds nothing. Returns ({outcome: count}, deltas).
        """
        outcomes = {APPLIED: 0, DUPLICATE: 0, STALE: 0, NO_TENANT: 0}
        deltas = []
        for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
            outcome, found = self.on_event(state, event)
            outcomes[outcome] += 1
            deltas += found
        if until is not None and events and state.clock is not None and until > state.clock:
            deltas += self.on_timer(state, events[0].tenant_id, events[0].lead_id, until)
        return outcomes, deltas

    # -- the steps ----------------------------------------------------------------------
    def _sync_definitions(self, ct, state, tenant, lead):
        if state.defs_version == ct.version:
            return []
        first = state.defs_version is None
        state.defs_version = ct.version
        state.defs_order = self.order
        state.defs_changes += 1  # the n-th version this lead follows: its deltas' salt
        state.compact(ct.policies)
        if first or state.clock is None:
            return []
        found = self._full(ct, state, ct.view_of(state), state.clock) if state.exists else []
        if state.exists and ct.has_time:
            state.next_flip = ct.next_flip(ct.view_of(state), state.acts, state.clock)
        elif not ct.has_time:
            state.next_flip = None
        return self._record(state, tenant, lead, found, state.clock,
                            f"{DEFINITION_CAUSE}{ct.version}", state.defs_changes)

    def _advance(self, ct, state, tenant, lead, now):
        """Evaluate each time-window flip up to `now`, in time order."""
        deltas = []
        while state.next_flip is not None and state.next_flip <= now:
            moment = state.next_flip
            view = ct.view_of(state)
            flipped = ct.flipping(view, state.acts, moment)  # before compaction drops them
            state.clock = moment
            state.compact(ct.policies)
            found = self._evaluate(ct, state, view, flipped, moment)
            deltas += self._record(state, tenant, lead, found, moment,
                                   f"timer:{format_ts(moment)}")
            state.next_flip = ct.next_flip(view, state.acts, moment)
        return deltas

    def _evaluate(self, ct, state, view, candidates, now):
        """Incremental evaluation of `candidates`, or a full one when the state has no
        watches for these definitions (a state restored from a profile)."""
        watch = state.watch
        if watch is None or len(watch) != ct.size:
            return self._full(ct, state, view, now)
        return ct.evaluate_dirty(view, state.tag_set, state.static_set, state.acts, watch,
                                 candidates, now)

    @staticmethod
    def _full(ct, state, view, now):
        state.watch = bytearray(ct.size)
        after = ct.evaluate_all(view, state.tag_set, state.static_set, state.acts, now,
                                state.watch)
        return ct.diff(set(state.members), after, view, state.tag_set, state.static_set,
                       state.acts, state.watch, now)

    def _record(self, state, tenant, lead, found, when, cause, salt=None):
        """Apply `found` to the lead's memberships; its deltas, numbered on from seq."""
        if self.native:
            deltas, state.seq = _native.record(found, state.members, tenant, lead, when,
                                               cause, state.seq, salt, Delta)
            return deltas
        members = state.members
        deltas = []
        for lid, added, depth in found:
            if added:
                members[lid] = when
            else:
                members.pop(lid, None)
            state.seq += 1
            deltas.append(make_delta(tenant, lead, lid, added, when, cause, depth, state.seq,
                                     salt))
        return deltas
