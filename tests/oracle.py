"""The obviously-correct fold of an event history into a final profile.

Events are de-duplicated by id, sorted by (occurred_at, event_id) and applied one by
one; a deletion wipes everything. Any arrival order must end where this ends.
"""

from rules.lead import Profile, activity_order


def fold(events):
    """The final Profile of one lead's events, or None when the lead ends deleted."""
    unique = {e.event_id: e for e in events}
    fields, tags, statics, acts, exists = {}, {}, {}, {}, False
    for e in sorted(unique.values(), key=lambda e: (e.occurred_at, e.event_id)):
        if e.type == "lead_deleted":
            fields, tags, statics, acts, exists = {}, {}, {}, {}, False
            continue
        exists = True
        if e.type == "lead_upserted":
            fields.update(e.fields or {})
        elif e.type == "activity":
            ref = e.activity_ref.casefold() if e.activity_ref else None
            acts[e.event_id] = (e.occurred_at, e.activity_kind.casefold(), ref, e.event_id)
        elif e.type in ("tag_added", "tag_removed"):
            tags[e.tag.casefold()] = e.type == "tag_added"
        else:
            statics[e.list_id] = e.type == "static_list_added"
    if not exists:
        return None
    return Profile({k: v for k, v in fields.items() if v is not None},
                   frozenset(t for t, on in tags.items() if on),
                   frozenset(s for s, on in statics.items() if on),
                   tuple(sorted(acts.values(), key=activity_order)))
