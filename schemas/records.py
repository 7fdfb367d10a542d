"""Typed records that carry the data contracts through the code (no Beam here).

`ChangeEvent` is one validated change event (SPEC section 2) with its time already in
microseconds; `Delta` and `DeadLetter` are rows of the output tables (SPEC section 4).
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Optional

EVENT_TYPES = ("lead_upserted", "lead_deleted", "activity", "tag_added", "tag_removed",
               "static_list_added", "static_list_removed")


class ChangeEvent(NamedTuple):
    event_id: str
    tenant_id: str
    lead_id: str
    type: str
    occurred_at: int                     # microseconds since the epoch
    fields: Optional[dict] = None        # lead_upserted: the changed fields
    activity_kind: Optional[str] = None  # activity
    activity_ref: Optional[str] = None
    tag: Optional[str] = None            # tag_added / tag_removed
    list_id: Optional[str] = None        # static_list_added / static_list_removed

    @property
    def lead_key(self):
        return lead_key(self.tenant_id, self.lead_id)


class Delta(NamedTuple):
    """One membership change, the row of `membership_deltas` without processed_at."""
    delta_id: str
    tenant_id: str
    lead_id: str
    list_id: str
    action: str          # "added" | "removed"
    event_time: int      # microseconds since the epoch
    cause: str           # event id, "timer:<flip time>", "definition:<version>", "reconcile:..."
    cascade_depth: int
    seq: int = 0         # per-lead order: the lead's n-th delta


class DeadLetter(NamedTuple):
    dead_letter_id: str
    source: str
    reason: str
    payload: str
    received_at: int     # microseconds since the epoch


def lead_key(tenant_id, lead_id):
    """The plain-string key of a lead; tenant ids hold no '/', so it splits back exactly."""
    return f"{tenant_id}/{lead_id}"


def split_lead_key(key):
    tenant_id, _, lead_id = key.partition("/")
    return tenant_id, lead_id


def stable_id(*parts):
    """A deterministic id from text parts, so that a replay writes the same ids."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def make_delta(tenant_id, lead_id, list_id, added, event_time, cause, depth, seq=0,
               salt=None, _sha=hashlib.sha256, _new=tuple.__new__):
    """A Delta whose id is stable_id(tenant_id, lead_id, list_id, action, cause[, salt]).

    An event or a timer moment changes a list once, but definitions can come back: a
    roll-back to v1 and a second roll-out of v2 give a lead the same `definition:v2`
    change twice, and a sink that drops repeated ids would drop the second. Their
    deltas pass the lead's count of definition changes as `salt`: it tells the two
    apart, and unlike `seq` it does not depend on how the lead's events, timers and
    sweeps interleave, so a replay after a restore gives the same id.
    Written out by hand: it runs once per delta, ~10 times per event.
    """
    action = "added" if added else "removed"
    text = f"{tenant_id}\x1f{lead_id}\x1f{list_id}\x1f{action}\x1f{cause}"
    if salt is not None:
        text = f"{text}\x1f{salt}"
    return _new(Delta, (_sha(text.encode("utf-8", "surrogatepass")).hexdigest()[:32],
                        tenant_id, lead_id, list_id, action, event_time, cause, depth, seq))


def make_dead_letter(source, reason, payload, received_at):
    return DeadLetter(stable_id(source, payload), source, reason, payload, received_at)


class Sweep(NamedTuple):
    """A request to re-evaluate one lead against definitions `version` (after they
    changed). It names the version and nothing else: a worker applies it only with
    definitions it read from its own source, and ignores it when the source does not
    hold that version."""
    version: str
