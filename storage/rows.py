"""Rows of the output tables, built from the pipeline's records (no Beam, no I/O).

Timestamps are RFC 3339 text (UTC, microseconds), JSON columns are compact JSON text;
every backend writes these dictionaries as they are, or converts them trivially.
"""

from __future__ import annotations

import json

from rules.lead import LeadState
from schemas.values import format_ts
from schemas import tables


_TEXTS = {}
_TEXTS_KEPT = 1 << 16


def _ts(micros):
    """format_ts, remembered: a lead's deltas of one event, and its memberships joined
    by one event, share their time, and formatting it was a large part of writing a
    delta-heavy history."""
    text = _TEXTS.get(micros)
    if text is None:
        if len(_TEXTS) >= _TEXTS_KEPT:
            _TEXTS.clear()
        text = _TEXTS[micros] = format_ts(micros)
    return text


def _json(value):
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def delta_values(delta, processed_at):
    """The values of a Delta's row in the table's column order; `processed_at` is the
    RFC 3339 text of the batch (one for all its rows)."""
    return (delta.delta_id, delta.tenant_id, delta.lead_id, delta.list_id, delta.action,
            _ts(delta.event_time), delta.cause, delta.cascade_depth, delta.seq,
            processed_at)


def delta_row(delta, processed_at):
    """The row of a Delta, `processed_at` in microseconds."""
    return dict(zip(_COLUMNS[tables.MEMBERSHIP_DELTAS],
                    delta_values(delta, format_ts(processed_at))))


def dead_letter_row(dead):
    """The row of a DeadLetter. Its text holds no NUL character (U+FFFD in its place),
    which PostgreSQL's text cannot store, so that every sink keeps the same row; its id,
    made from the raw payload, is unchanged."""
    return {"dead_letter_id": dead.dead_letter_id, "received_at": format_ts(dead.received_at),
            "source": _no_nul(dead.source), "reason": _no_nul(dead.reason),
            "payload": _no_nul(dead.payload)}


def _no_nul(text):
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


def profile_row(tenant_id, lead_id, state, updated_at):
    """The lead_profiles row of a state: readable columns plus the state to resume from."""
    profile = state.profile()
    return {
        "tenant_id": tenant_id, "lead_id": lead_id, "deleted": profile is None,
        "fields": _json(profile.fields if profile else {}),
        "tags": _json(sorted(profile.tags) if profile else []),
        "static_lists": _json(sorted(profile.static_lists) if profile else []),
        "activities": _json([list(a) for a in profile.activities] if profile else []),
        "memberships": _json({k: _ts(v) for k, v in state.members.items()}),
        "clock": format_ts(state.clock) if state.clock is not None else None,
        "state": state_json(state),
        "updated_at": format_ts(updated_at),
    }


def state_json(state):
    """The `state` column of a lead's profile row: what a job resumes the lead from."""
    return json.dumps(state.to_dict(), separators=(",", ":"), ensure_ascii=False)


def state_from_row(row):
    """The LeadState stored in a lead_profiles row."""
    return LeadState.from_dict(json.loads(row["state"]))


_COLUMNS = {table: tuple(tables.column_names(table)) for table in tables.TABLES}


def ordered(table, row):
    """The row's values in the table's column order."""
    return tuple(map(row.get, _COLUMNS[table]))


_AT = {name: i for i, name in enumerate(tables.column_names(tables.MEMBERSHIP_DELTAS))}


def membership_changes(deltas, newest=None):
    """(rows to upsert, keys to delete) in list_memberships from delta tuples in column
    order: per (tenant, list, lead), the last delta decides.

    `newest` ({(tenant, list, lead): highest seq in the table}, after this batch's
    deltas went in): a change older than the table's newest delta for its key is left
    out. A batch some of whose deltas the table already held is a replay, and may come
    after newer rows of its leads (a writer of a failed attempt finishing late): its
    changes must not undo theirs. Fresh deltas come in each lead's order."""
    tenant, list_id, lead = _AT["tenant_id"], _AT["list_id"], _AT["lead_id"]
    action, since, seq = _AT["action"], _AT["event_time"], _AT["seq"]
    final = {(d[tenant], d[list_id], d[lead]): d for d in deltas}
    if newest:
        final = {key: d for key, d in final.items() if d[seq] >= newest.get(key, 0)}
    joins = [key + (d[since], d[seq]) for key, d in final.items() if d[action] == "added"]
    leaves = [key for key, d in final.items() if d[action] == "removed"]
    return joins, leaves


def lead_pairs(deltas):
    """The distinct (tenant, lead) of delta tuples in column order."""
    tenant, lead = _AT["tenant_id"], _AT["lead_id"]
    return sorted({(d[tenant], d[lead]) for d in deltas})


class BatchWrites:
    """The write calls of a store whose `_write_values(deltas, dead, profiles, queue)`
    writes rows (tuples in column order) in one transaction."""

    def write(self, batch):
        """Write {table: [row, ...]} in one transaction; returns the number of new deltas."""
        def rows(table):
            return [ordered(table, r) for r in batch.get(table, ())]
        return self._write_values(rows(tables.MEMBERSHIP_DELTAS), rows(tables.DEAD_LETTERS),
                                  rows(tables.LEAD_PROFILES))

    def write_deltas(self, deltas, processed_at, profiles=()):
        """Write Delta records (the hot path: no row dictionaries), and the profile rows
        of their leads in the same transaction; returns the number of new deltas.
        `processed_at` is the RFC 3339 text of the batch."""
        return self._write_values([delta_values(d, processed_at) for d in deltas], (),
                                  [ordered(tables.LEAD_PROFILES, r) for r in profiles])

    def write_queued(self, deltas, processed_at, profiles=()):
        """As write_deltas, and the new deltas also go to the outbox in the same
        transaction (for the deltas topic); returns their rows (tuples in column order)."""
        return self._write_values([delta_values(d, processed_at) for d in deltas], (),
                                  [ordered(tables.LEAD_PROFILES, r) for r in profiles],
                                  queue=True)
