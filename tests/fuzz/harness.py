"""The fuzz harness: one input is a few events of a lead on their whole way (parse, the
engine on both backends, which must agree, the profile row and back, every sink's rows).
A dead letter is a pass; any other exception, or a disagreement, is a crash."""

from __future__ import annotations

import io
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from rules import LeadProcessor, LeadState, parse_definitions  # noqa: E402
from schemas.values import format_ts, parse_timestamp, reject_json_constant  # noqa: E402
from schemas import tables  # noqa: E402
from schemas.events import InvalidEvent, parse_event  # noqa: E402
from schemas.records import EVENT_TYPES, make_dead_letter  # noqa: E402
from storage.bigquery import SNAPSHOTS, table_schema, written_tables  # noqa: E402
from storage.jsonl import JsonlStore  # noqa: E402
from storage.rows import (dead_letter_row, delta_row, profile_row,  # noqa: E402
                          state_from_row)
from storage.sqlite import SqliteStore  # noqa: E402
from tests.test_bigquery import check_row  # noqa: E402
from transforms.parse import payload_text  # noqa: E402
from transforms.sinks import failed_row_dead_letter  # noqa: E402

T = tables
DAY = 86_400 * 1_000_000
NOW = 1_777_593_600_000_000  # 2026-05-01T00:00:00Z
LAST_US = parse_timestamp("9999-12-31T23:59:59.999999Z")  # the last time an event can have

# The lists the tests use beside the sample's: every operator, tags, activities with
# windows and bounds, static lists and a cascade, in two versions so that a lead also
# follows a definition change.
RICH_RULES = {
    "eq": {"field": "state", "op": "eq", "value": "NY"},
    "neq": {"field": "state", "op": "neq", "value": "CA"},
    "in": {"field": "city", "op": "in", "value": ["Boston", "NYC", 5, True]},
    "not-in": {"field": "plan", "op": "not_in", "value": ["free", "trial"]},
    "contains": {"field": "email", "op": "contains", "value": "@gmail"},
    "not-contains": {"field": "email", "op": "not_contains", "value": "spam"},
    "starts": {"field": "company", "op": "starts_with", "value": "Acme"},
    "ends": {"field": "email", "op": "ends_with", "value": ".org"},
    "gt": {"field": "score", "op": "gt", "value": 50},
    "gte": {"field": "score", "op": "gte", "value": 50.5},
    "lt": {"field": "score", "op": "lt", "value": -3},
    "lte": {"field": "employees", "op": "lte", "value": 1e15},
    "between": {"field": "employees", "op": "between", "value": [10, 9007199254740993]},
    "empty": {"field": "phone", "op": "is_empty"},
    "not-empty": {"field": "tags_field", "op": "is_not_empty"},
    "matches": {"field": "title", "op": "matches", "value": "^(vp|chief|head)\\b"},
    "recent": {"field": "signup_date", "op": "within_last_days", "value": 30},
    "old": {"field": "signup_date", "op": "before_days_ago", "value": 365},
    "vip": {"tag": "vip"},
    "opened": {"activity": "email_open", "min_count": 2, "within_days": 7},
    "clicked": {"activity": "email_click", "ref": "campaign-7"},
    "quiet": {"activity": "email_open", "max_count": 0, "within_days": 30},
    "few": {"activity": "webinar", "min_count": 1, "max_count": 3, "within_days": 0.5},
    "east-vip": {"all": [{"list": "eq"}, {"any": [{"list": "vip"}, {"list": "manual"}]}]},
    "not-east": {"not": {"list": "east-vip"}},
    "deep": {"all": [{"list": "not-east"}, {"any": [{"list": "gt"}, {"list": "recent"},
                                                    {"not": {"list": "quiet"}}]}]},
}


def rich_document(version):
    lists = [{"tenant_id": "fz", "list_id": lid, "rules": rules}
             for lid, rules in RICH_RULES.items()]
    lists.append({"tenant_id": "fz", "list_id": "manual", "static": True})
    if version == 2:
        lists[0]["rules"] = {"field": "state", "op": "in", "value": ["NY", "NJ"]}
        lists.append({"tenant_id": "fz", "list_id": "later", "rules": {"list": "deep"}})
    return {"tenants": ["fz", "empty"], "lists": lists}


def _processors(document):
    definitions = parse_definitions(document)
    return definitions, LeadProcessor(definitions, native=True), \
        LeadProcessor(definitions, native=False)


with open(os.path.join(ROOT, "sample", "lists.json")) as _handle:
    SAMPLE_DOC = json.load(_handle)
# the first set decides the parse; a second one of the same tenants is a definition change
SETS = [[_processors(SAMPLE_DOC)], [_processors(rich_document(1)),
                                     _processors(rich_document(2))]]

TENANTS = ("acme", "globex", "initech", "fz", "empty", "nobody")
LEADS = ("L1", "L2", "lead-0001")
FIELDS = ("state", "city", "plan", "email", "company", "score", "employees", "phone",
          "tags_field", "title", "signup_date", "renewal_date", "lifecycle_stage",
          "industry", "x", "")
STRINGS = ("NY", "ny", "NJ", "CA", "Boston", "boston", "NYC", "free", "trial", "pro",
           "a@gmail.com", "x@spam.org", "Acme Corp", "acme", "VP Sales", "chief", "5",
           "50", "50.5", "-3", " 51 ", "1e2", "1_000", "nan", "inf", "0x10", "５０", "",
           " ", "true", "2026-05-01", "2026-04-20", "2025-01-01", "2026-02-30",
           "2026-05-01T00:00:00Z", "2026-05-01T00:00:00+14:00", "0001-01-01", "9999-12-31",
           "ß", "SS", "İ", "ǅ", "\u0000", "\x1f", "/", "\ud800", "\U0001F600", "ﬀ",
           "a\u2028b", "\x85", "\u2029")  # line separators JSON leaves unescaped
NUMBERS = (0, 1, -1, 5, 50, 51, -3, -4, 10, 2 ** 31, 2 ** 53, 2 ** 53 + 1, 2 ** 63 - 1,
           2 ** 63, -2 ** 63, -2 ** 63 - 1, 10 ** 20, 0.5, 50.5, 5.0, -0.0, 1e15, 1e16,
           1e308, 5e-324, 1e-7, 9007199254740993.0)
TIMES = ("2026-05-01T00:00:00Z", "2026-05-01T00:00:00.000001Z", "2026-04-30T23:59:59Z",
         "2026-05-08T00:00:00+00:00", "2026-06-01T12:00:00-05:00", "1970-01-01T00:00:00Z",
         "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2026-05-01 00:00:00z",
         "2026-05-01T00:00:00.123456789Z", "2026-05-01", "not a time")
KINDS = ("email_open", "email_click", "webinar", "Email_Open", "EMAIL_OPEN", "other")
REFS = (None, "campaign-7", "CAMPAIGN-7", "c")
TAGS = ("vip", "VIP", "churn-risk", "do-not-contact", "other")
STATIC = ("manual", "vip-manual", "unsubscribed", "partners", "eq", "nope")
EVENT_IDS = ("e1", "e2", "e3", "e10", "E1")


class Provider:
    """Reads choices from the fuzzer's bytes (zeros once they run out), so that the
    harness runs without atheris too and each input means one thing. A zero picks the
    first option and no rare case (`chance`): an input that ends early goes on with
    plain events, not with the costliest ones (a thousand fields in every record)."""

    def __init__(self, data):
        self.data = data
        self.at = 0

    def byte(self):
        if self.at >= len(self.data):
            return 0
        self.at += 1
        return self.data[self.at - 1]

    def below(self, n):
        """An int in [0, n)."""
        value = self.byte() if n <= 256 else self.byte() << 8 | self.byte()
        return value % n

    def chance(self, n):
        """True once in n: on the last of the n values, never on a zero."""
        return self.below(n) == n - 1

    def pick(self, options):
        return options[self.below(len(options))]

    def text(self, most=12):
        # bytes that are not UTF-8 become lone surrogates: JSON escapes them
        return bytes(self.byte() for _ in range(self.below(most + 1))).decode(
            "utf-8", "surrogateescape")

    def rest(self):
        rest, self.at = self.data[self.at:], len(self.data)
        return rest


def value(p, depth=0):
    choice = p.below(12)
    if choice < 3:
        return p.pick(STRINGS)
    if choice < 5:
        return p.pick(NUMBERS)
    if choice == 5:
        return p.pick((None, True, False))
    if choice == 6:
        return p.text()
    if choice == 7:
        return (p.byte() - 128) * 10 ** p.below(25) + p.below(1000) / 8
    if choice == 8 and depth < 6:
        return [value(p, depth + 1) for _ in range(p.below(4))]
    if choice == 9 and depth < 6:
        return {p.pick(FIELDS) or p.text(): value(p, depth + 1) for _ in range(p.below(3))}
    if choice == 10:  # a long string or a deep value, around the limits
        return p.pick(("x", "é", "[", "\\")) * p.pick((255, 256, 257, 65536, 65537))
    if depth:  # one deep value at the top of a field at most: json.dumps must write it
        return p.pick(NUMBERS)
    nest = p.pick((1, 31, 32, 33, 100, 900, 950))  # deeper: see record()
    inner = value(p, 6)
    for level in range(nest):
        inner = [inner] if level % 2 else {"k": inner}
    return inner


def record(p, tenant, lead, definitions):
    kind = p.pick(EVENT_TYPES + ("bogus",))
    out = {"event_id": p.text() if p.chance(4) else p.pick(EVENT_IDS),
           "tenant_id": tenant, "lead_id": lead, "type": kind,
           "occurred_at": format_ts(NOW + (p.byte() - 128) * DAY // 4 + p.byte())
           if p.chance(4) else p.pick(TIMES)}
    if kind == "lead_upserted" or p.chance(16):
        out["fields"] = {p.text() if p.chance(4) else p.pick(FIELDS): value(p)
                         for _ in range(p.below(6))}
        if p.chance(32):
            out["fields"].update((f"f{i}", i) for i in range(p.pick((999, 1000, 1001))))
    if kind == "activity" or p.chance(16):
        out["activity"] = {"kind": p.pick(KINDS), "ref": p.pick(REFS)}
    if kind.startswith("tag") or p.chance(16):
        out["tag"] = p.pick(TAGS)
    if kind.startswith("static") or p.chance(16):
        out["list_id"] = p.pick(STATIC)
    if p.chance(8):  # a required field missing, or of the wrong type
        key = p.pick(tuple(out))
        if p.below(2):
            del out[key]
        else:
            out[key] = value(p)
    text = json.dumps(out, ensure_ascii=bool(p.below(2)))
    if p.chance(16):  # damaged text, or nested past what the JSON parser reads
        cut = p.below(len(text) + 1)
        depth = p.pick((0, 0, 990, 3000))
        text = text[:cut] + "[" * depth + p.text(4) + "]" * depth + text[cut + p.below(4):]
    return text.encode("utf-8", "surrogatepass")


class MemoryJsonl(JsonlStore):
    """The JSON Lines store with its part files in memory: each batch's rows become the
    bytes JsonlStore.write puts in a part file (tests/test_fuzz.py holds the two to the
    same bytes), and the store's own code reads them back (`rows`, `profile`)."""

    def __init__(self):  # no folder: nothing touches the disk
        self.folder = None
        self._profiles = None
        self.parts = {}

    def write(self, batch):
        for table, rows in batch.items():
            if not rows or table == T.LIST_MEMBERSHIPS:
                continue
            self.parts.setdefault(table, []).append("".join(
                json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"
                for row in rows).encode("utf-8"))  # the part file's encoding: UTF-8, strict
        if self._profiles is not None:
            for row in batch.get(T.LEAD_PROFILES, ()):
                self._profiles[(row["tenant_id"], row["lead_id"])] = row
        return len(batch.get(T.MEMBERSHIP_DELTAS, ()))

    def _raw(self, table):
        for part in self.parts.get(table, ()):
            # read as the store reads a file (text lines split at newlines only, not at
            # U+2028 or U+0085, which JSON leaves in its strings)
            for line in io.TextIOWrapper(io.BytesIO(part), encoding="utf-8"):
                yield json.loads(line)


class Sinks:
    """One SQLite store in memory for the whole campaign, emptied now and then so that it
    stays small; a JSON Lines store in memory per input."""

    def __init__(self):
        self.sqlite = SqliteStore(":memory:")
        self.uses = 0
        self.schemas = {t: table_schema(spec) for t, (spec, _) in written_tables().items()}

    def tick(self):
        self.uses += 1
        if self.uses % 2000 == 0:
            for table in T.TABLES:
                self.sqlite.db.execute(f"DELETE FROM {table}")


_SINKS = None


def sinks():
    global _SINKS
    if _SINKS is None:
        _SINKS = Sinks()
    return _SINKS


def strict_json(text):
    """JSON as BigQuery's PARSE_JSON and SQLite's json functions read it."""
    return json.loads(text, parse_constant=reject_json_constant)


def refused(table, row):
    """BigQuery refuses a TIMESTAMP after 9999-12-31: the row becomes a dead letter."""
    dead = failed_row_dead_letter((f"p:d.{table}", row, [{"reason": "invalid"}]))
    check_row(sinks().schemas[T.DEAD_LETTERS], dead_letter_row(dead))


def check_rows(deltas, profiles, dead):
    out = sinks()
    out.tick()
    processed_at = NOW + 1
    rows = [delta_row(d, processed_at) for d in deltas]
    dead_rows = [dead_letter_row(d) for d in dead]
    for delta, row in zip(deltas, rows):
        assert row["tenant_id"] and row["list_id"], row
        if delta.event_time > LAST_US:  # a window that ends after the year 9999
            assert delta.cause.startswith("timer:"), row
            refused(T.MEMBERSHIP_DELTAS, row)
        else:
            check_row(out.schemas[T.MEMBERSHIP_DELTAS], row)
    for row in profiles:
        for column in ("fields", "tags", "static_lists", "activities", "memberships"):
            strict_json(row[column])
        if strict_json(row["state"])["clock"] > LAST_US:
            refused(SNAPSHOTS, row)
        else:
            check_row(out.schemas[SNAPSHOTS], row)
    for row in dead_rows:
        check_row(out.schemas[T.DEAD_LETTERS], row)
    for row in rows + profiles + dead_rows:  # what insert_rows_json sends to BigQuery
        json.dumps(row, allow_nan=False)
    store = out.sqlite
    store.write_deltas(deltas, format_ts(processed_at), profiles)
    if dead_rows:
        store.write({T.DEAD_LETTERS: dead_rows})
    for row in profiles:
        assert store.profile(row["tenant_id"], row["lead_id"]) == row
    files = MemoryJsonl()
    files.write_deltas(deltas, format_ts(processed_at), profiles)
    files.write({T.DEAD_LETTERS: dead_rows})
    assert sorted(files.rows(T.MEMBERSHIP_DELTAS), key=lambda r: r["delta_id"]) == sorted(
        {r["delta_id"]: r for r in rows}.values(), key=lambda r: r["delta_id"])
    for row in profiles:
        assert files.profile(row["tenant_id"], row["lead_id"]) == row


def comparable(row):
    """A profile row with an empty watch read as none: a tenant without lists has nothing
    to watch, and LeadState.from_dict loads the one as the other."""
    stored = json.loads(row["state"])
    if stored.get("watch") == "":
        stored["watch"] = None
    return {**row, "state": stored}


def same(found_c, found_py, what, *args):
    """`what % args` names the step: it is only printed when the backends disagree."""
    assert found_c == found_py, f"{what % args}: the C engine gave {found_c!r}, Python " \
                                f"{found_py!r}"


def run(data):
    """One fuzz input: a few events of a lead (or raw records), through everything."""
    p = Provider(data)
    mode = p.byte()
    group = SETS[mode % 2]
    definitions = group[0][0]
    if mode % 8 < 2:  # raw records, one a line: the seeds from the sample are these
        p.at = len(data)
        payloads = data[1:].split(b"\n")[:6]
    else:
        tenant, lead = p.pick(TENANTS), p.pick(LEADS)
        payloads = [record(p, tenant, lead, definitions) for _ in range(1 + p.below(4))]
    states = {}
    deltas, dead = [], []
    for source, payload in enumerate(payloads):
        try:
            event = parse_event(payload, definitions)
        except InvalidEvent as bad:
            dead.append(make_dead_letter(f"fuzz:{source}", f"{bad.code}: {bad.message}",
                                         payload_text(payload), NOW))
            continue
        key = (event.tenant_id, event.lead_id)
        pair = states.setdefault(key, (LeadState(), LeadState()))
        _, native, python = group[p.below(len(group))]
        found_c, found_py = native.on_event(pair[0], event), python.on_event(pair[1], event)
        same(found_c, found_py, "on_event(%r)", event)
        deltas += found_c[1]
        if p.below(4) == 0:  # a timer: when the lead asked for one, or any time later
            later = pair[0].next_flip if pair[0].next_flip is not None and p.below(2) else \
                min(event.occurred_at + p.pick((1, DAY, 7 * DAY, 31 * DAY, 400 * DAY)),
                    LAST_US)
            found_c = native.on_timer(pair[0], event.tenant_id, event.lead_id, later)
            same(found_c, python.on_timer(pair[1], event.tenant_id, event.lead_id, later),
                 "on_timer(%d)", later)
            deltas += found_c
    profiles = []
    for (tenant, lead), (state_c, state_py) in states.items():
        row = profile_row(tenant, lead, state_c, NOW)
        same(row, profile_row(tenant, lead, state_py, NOW), "profile_row")
        again = profile_row(tenant, lead, state_from_row(row), NOW)
        same(comparable(again), comparable(row), "profile_row(state_from_row(row)) and row")
        profiles.append(row)
    check_rows(deltas, profiles, dead)
