"""The state of one lead: a versioned profile that converges whatever the arrival order.

Every field, tag and static-list membership carries the version `(occurred_at, event_id)`
of the event that set it, and the larger version wins (SPEC section 2). A deletion is a
tombstone version: everything older is dropped and no older event applies again, while
newer data survives, so the final profile is the same for any order and any duplicates.

Field names, tags, activity kinds and refs are interned as events store them: the
compiled lists hold interned names too, so the C evaluation loop finds them by identity.
A state loaded from storage keeps its names as loaded (equal, found by comparison):
interning them on every load would cost more than it saves.
"""

from __future__ import annotations

from bisect import insort
from itertools import islice
from sys import intern
from typing import NamedTuple

from schemas.records import ChangeEvent

# Seen event ids are kept to recognise re-deliveries: the last SEEN_MAX ids the lead
# received. A duplicate that is no longer recognised is still harmless (versions make
# re-applying a no-op, activities are de-duplicated by id), so the bound only affects the
# duplicate count.
SEEN_MAX = 256


def activity_order(activity):
    """Profile activities sort by (occurred_at, event_id): the version order."""
    return activity[0], activity[3]


_CONTAINERS = (list, dict)


def merge_fields(values, versions, fields, version, changed):
    """An upsert's fields merged into a lead's `values`: a field takes a value whose
    version is newer than its own. `changed` receives the previous value (None when
    absent) of each field whose value changed, the first one kept: a value of another
    type, or unequal, or a list or object (Python's equality holds [0] equal to [false],
    which the rules tell apart). rules/native/view.c (merge_fields) is the same for the C
    backend."""
    for name, value in fields.items():
        name = intern(name)
        current = versions.get(name)
        if current is None or version > current:
            old = values.get(name)
            values[name] = value
            versions[name] = version
            if type(old) is not type(value) or type(value) in _CONTAINERS or old != value:
                changed.setdefault(name, old)


class Profile(NamedTuple):
    """What the rules read of a lead: the input of a from-scratch evaluation."""
    fields: dict          # name -> value (cleared fields are absent)
    tags: frozenset       # case-folded tags
    static_lists: frozenset
    activities: tuple     # (occurred_at, kind, ref or None, event_id), kind and ref case-folded


class Changes:
    """What one applied event changed, for incremental evaluation."""
    __slots__ = ("fields", "tags", "statics", "activities", "deleted")

    def __init__(self):
        self.fields = {}        # name -> previous value (None when it was absent)
        self.tags = set()
        self.statics = set()
        self.activities = set()  # (kind, ref, occurred_at, event_id) of added activities
        self.deleted = False

    def __bool__(self):
        return bool(self.fields or self.tags or self.statics or self.activities
                    or self.deleted)


class ActivityPolicy(NamedTuple):
    """How much history of one activity kind the definitions can still look at."""
    horizon: object       # microseconds, or None when a rule counts over all time
    cap: int              # newest entries kept per ref group: enough to decide every count
    refs: frozenset       # refs that rules filter on; other refs share one group


class LeadState:
    """One lead's profile, memberships and bookkeeping; plain data, picklable."""

    __slots__ = ("values", "versions", "tags", "statics", "acts", "tomb", "last", "seen",
                 "clock", "members", "next_flip", "defs_version", "seq", "watch", "view",
                 "view_owner", "tag_set", "static_set", "defs_changes", "defs_order")

    def __init__(self):
        self.values = {}      # field -> raw value (None: cleared, kept for its version)
        self.versions = {}    # field -> (occurred_at, event_id)
        self.tags = {}        # tag -> (present, occurred_at, event_id)
        self.statics = {}     # static list id -> (present, occurred_at, event_id)
        self.acts = {}        # kind -> sorted [(occurred_at, event_id, ref)]
        self.tomb = None      # version of the newest deletion
        self.last = None      # newest version of any non-deletion event
        self.seen = {}        # event_id -> occurred_at
        self.clock = None     # evaluation time of `members`
        self.members = {}     # list id -> since (microseconds)
        self.next_flip = None
        self.defs_version = None
        self.seq = 0          # number of deltas emitted so far
        self.defs_changes = 0  # number of definition versions the lead has followed
        # the order of `defs_version` at its source (its modification time, microseconds):
        # a lead never follows definitions older than these (None: not known)
        self.defs_order = None
        self.watch = None     # per list: its first false conjunct (see CompiledTenant)
        self._reset_derived()

    @classmethod
    def from_profile(cls, profile, version=(0, "")):
        """A state holding `profile`, every entry at `version` (for rebuilds and tests)."""
        state = cls()
        if profile is None:
            return state
        state.last = version
        state.values = dict(profile.fields)
        state.versions = dict.fromkeys(profile.fields, version)
        state.tags = {t: (True,) + version for t in profile.tags}
        state.statics = {s: (True,) + version for s in profile.static_lists}
        for ts, kind, ref, eid in profile.activities:
            state.acts.setdefault(kind, []).append((ts, eid, ref))
        for entries in state.acts.values():
            entries.sort(key=lambda e: e[:2])
        state._reset_derived()
        return state

    def _reset_derived(self):
        self.view = None      # compiled view of the fields, owned by one CompiledTenant
        self.view_owner = None
        self.tag_set = {t for t, (present, _, _) in self.tags.items() if present}
        self.static_set = {s for s, (present, _, _) in self.statics.items() if present}

    # -- persistence: derived views are rebuilt, not stored ---------------------------
    _STORED = ("values", "versions", "tags", "statics", "acts", "tomb", "last", "seen",
               "clock", "members", "next_flip", "defs_version", "seq", "watch",
               "defs_changes", "defs_order")

    def __getstate__(self):
        return tuple(getattr(self, name) for name in self._STORED)

    def __setstate__(self, data):
        self.defs_changes = 0  # states pickled before these existed
        self.defs_order = None
        for name, value in zip(self._STORED, data):
            setattr(self, name, value)
        self._reset_derived()

    def to_dict(self):
        """A JSON-ready form of the whole state (versions included), to resume from."""
        return {
            "fields": {k: [v, *self.versions[k]] for k, v in self.values.items()},
            "tags": {k: list(v) for k, v in self.tags.items()},
            "static_lists": {k: list(v) for k, v in self.statics.items()},
            "activities": {k: [list(e) for e in v] for k, v in self.acts.items()},
            "tomb": list(self.tomb) if self.tomb else None,
            "last": list(self.last) if self.last else None,
            "seen": self.seen, "clock": self.clock, "members": self.members,
            "next_flip": self.next_flip, "defs_version": self.defs_version, "seq": self.seq,
            "defs_changes": self.defs_changes, "defs_order": self.defs_order,
            "watch": self.watch.hex() if self.watch is not None else None,
        }

    @classmethod
    def from_dict(cls, data):
        state = cls()
        state.values = {k: v[0] for k, v in data["fields"].items()}
        state.versions = {k: (v[1], v[2]) for k, v in data["fields"].items()}
        # tags and activity kinds are case-folded; states stored when they were only
        # lower-cased fold on loading (two tags that now fold together keep the newer)
        state.tags = {}
        for key, value in data["tags"].items():
            key, value = key.casefold(), tuple(value)
            if key not in state.tags or state.tags[key][1:] < value[1:]:
                state.tags[key] = value
        state.statics = {k: tuple(v) for k, v in data["static_lists"].items()}
        state.acts = {}
        for kind, entries in data["activities"].items():
            state.acts.setdefault(kind.casefold(), []).extend(
                (ts, eid, ref.casefold() if ref else ref) for ts, eid, ref in entries)
        for entries in state.acts.values():
            entries.sort(key=lambda e: e[:2])
        state.tomb = tuple(data["tomb"]) if data["tomb"] else None
        state.last = tuple(data["last"]) if data["last"] else None
        state.seen = dict(data["seen"])
        state.clock = data["clock"]
        state.members = dict(data["members"])
        state.next_flip = data["next_flip"]
        state.defs_version = data["defs_version"]
        state.seq = data["seq"]
        state.defs_changes = data.get("defs_changes", 0)
        state.defs_order = data.get("defs_order")
        watch = data.get("watch")
        state.watch = bytearray.fromhex(watch) if watch is not None else None
        state._reset_derived()
        return state

    @property
    def exists(self):
        return self.last is not None and (self.tomb is None or self.last > self.tomb)

    @property
    def is_empty(self):
        """True when nothing but bookkeeping is left, so the state may be freed."""
        return not (self.values or self.tags or self.statics or self.acts or self.members)

    def profile(self):
        if not self.exists:
            return None
        activities = tuple(sorted(((ts, kind, ref, eid) for kind, entries in self.acts.items()
                                   for ts, eid, ref in entries), key=activity_order))
        return Profile({k: v for k, v in self.values.items() if v is not None},
                       frozenset(self.tag_set), frozenset(self.static_set), activities)

    # -- applying events ----------------------------------------------------------------
    def is_duplicate(self, event):
        return event.event_id in self.seen

    def apply(self, event: ChangeEvent, policies, merge=merge_fields):
        """Merge one event; return the Changes, or None when it is older than a deletion.

        `policies` maps an activity kind to its ActivityPolicy; activities of kinds no
        rule reads are not kept. `merge` merges an upsert's fields (merge_fields or the
        C module's).
        """
        version = (event.occurred_at, event.event_id)
        self._remember(event)
        tomb = self.tomb
        changes = Changes()
        kind = event.type
        if kind == "lead_deleted":
            if tomb is None or version > tomb:
                self.tomb = version
                self._purge_before(version, changes)
            return changes
        if tomb is not None and version < tomb:
            return None
        if self.last is None or version > self.last:
            self.last = version
        if kind == "lead_upserted":
            merge(self.values, self.versions, event.fields or {}, version, changes.fields)
        elif kind == "activity":
            kind_ = intern(event.activity_kind.casefold())
            policy = policies.get(kind_)
            if policy is not None:
                ref = intern(event.activity_ref.casefold()) if event.activity_ref else None
                entries = self.acts.setdefault(kind_, [])
                if not any(e[1] == event.event_id for e in entries):
                    insort(entries, (event.occurred_at, event.event_id, ref))
                    changes.activities.add((kind_, ref, event.occurred_at, event.event_id))
                    self._compact_kind(kind_, policy)
        elif kind in ("tag_added", "tag_removed"):
            self._set_flag(self.tags, self.tag_set, intern(event.tag.casefold()),
                           kind == "tag_added", version, changes.tags)
        else:
            self._set_flag(self.statics, self.static_set, event.list_id,
                           kind == "static_list_added", version, changes.statics)
        return changes

    @staticmethod
    def _set_flag(flags, present_set, name, present, version, changed):
        current = flags.get(name)
        if current is not None and version <= (current[1], current[2]):
            return
        flags[name] = (present, version[0], version[1])
        was = current is not None and current[0]
        if was != present:
            changed.add(name)
            if present:
                present_set.add(name)
            else:
                present_set.discard(name)

    def _purge_before(self, version, changes):
        changes.deleted = True
        for name in [n for n, v in self.versions.items() if v < version]:
            changes.fields.setdefault(name, self.values.pop(name))
            del self.versions[name]
        for flags, present_set, changed in ((self.tags, self.tag_set, changes.tags),
                                            (self.statics, self.static_set, changes.statics)):
            for name in [n for n, f in flags.items() if (f[1], f[2]) < version]:
                if flags.pop(name)[0]:
                    present_set.discard(name)
                    changed.add(name)
        for kind in list(self.acts):
            kept = [e for e in self.acts[kind] if (e[0], e[1]) > version]
            if len(kept) != len(self.acts[kind]):
                changes.activities.update((kind, e[2], e[0], e[1]) for e in self.acts[kind])
            if kept:
                self.acts[kind] = kept
            else:
                del self.acts[kind]

    def _remember(self, event):
        seen = self.seen
        seen[event.event_id] = event.occurred_at
        if len(seen) > SEEN_MAX:
            # the dict is in arrival order: keep the newest three quarters, so that a busy
            # lead prunes once every 64 events
            self.seen = dict(islice(seen.items(), len(seen) - SEEN_MAX * 3 // 4, None))

    # -- activity history -------------------------------------------------------------
    def _compact_kind(self, kind, policy):
        """Keep only what a rule can still count: inside the horizon, newest `cap` a group."""
        entries = self.acts[kind]
        if policy.horizon is not None and self.clock is not None:
            cutoff = self.clock - policy.horizon
            if entries and entries[0][0] <= cutoff:
                entries = [e for e in entries if e[0] > cutoff]
        if len(entries) > policy.cap:
            counts = {}
            kept = []
            for entry in reversed(entries):
                group = entry[2] if entry[2] in policy.refs else None
                seen = counts.get(group, 0)
                if seen < policy.cap:
                    counts[group] = seen + 1
                    kept.append(entry)
            kept.reverse()
            entries = kept
        if entries:
            self.acts[kind] = entries
        else:
            del self.acts[kind]

    def compact(self, policies):
        """Drop activity history no rule can count any more (after the clock moved)."""
        for kind in list(self.acts):
            policy = policies.get(kind)
            if policy is None:
                del self.acts[kind]
            else:
                self._compact_kind(kind, policy)
