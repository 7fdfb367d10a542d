"""Write the bundled sample data under sample/ (deterministic; run to regenerate).

The story the project exists for: Dana (acme/lead-0001) moves from San Francisco to
Boston. She leaves the West Coast lists and joins the East Coast one, and that change
cascades through 17 lists that reference each other. Around her: a few hundred other
leads in two tenants that share lead ids, activities, tags, static lists, events out of
order and twice, a deletion, and a handful of bad records.

Usage: python tools/make_sample.py [--out sample]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random

import fastavro

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

T0 = "2026-05-01T09:00:00Z"
STATES = {"CA": ["San Francisco", "Oakland", "Los Angeles"], "OR": ["Portland"],
          "WA": ["Seattle"], "NY": ["New York", "Brooklyn"], "MA": ["Boston", "Cambridge"],
          "NJ": ["Newark"], "TX": ["Austin"], "IL": ["Chicago"]}


def ts(day, hour=9, minute=0, second=0):
    return f"2026-05-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def acme_lists():
    L = []

    def add(lid, name, rules=None, static=False):
        entry = {"tenant_id": "acme", "list_id": lid, "name": name}
        if static:
            entry["static"] = True
        else:
            entry["rules"] = rules
        L.append(entry)

    add("vip-manual", "VIPs (hand-picked)", static=True)
    add("unsubscribed", "Unsubscribed", static=True)
    add("west-coast", "West Coast", {"field": "state", "op": "in", "value": ["CA", "OR", "WA"]})
    add("west-coast-customers", "West Coast customers", {"all": [
        {"list": "west-coast"}, {"field": "lifecycle_stage", "op": "eq", "value": "customer"}]})
    add("sf-bay-area", "SF Bay Area customers", {"all": [
        {"list": "west-coast-customers"},
        {"field": "city", "op": "in", "value": ["San Francisco", "Oakland", "San Jose"]}]})
    add("west-events-invite", "West events invite", {"all": [
        {"list": "sf-bay-area"}, {"not": {"list": "unsubscribed"}}]})
    # the East Coast cascade: each list narrows the one before it
    chain = [
        ("east-coast", "East Coast", {"field": "state", "op": "in",
                                      "value": ["NY", "MA", "NJ", "CT", "PA"]}),
        ("east-coast-customers", "East Coast customers",
         {"field": "lifecycle_stage", "op": "eq", "value": "Customer"}),
        ("east-coast-engaged", "East Coast, engaged",
         {"activity": "email_open", "min_count": 1, "within_days": 30}),
        ("east-coast-high-score", "East Coast, score 60+",
         {"field": "score", "op": "gte", "value": 60}),
        ("boston-area", "Boston area", {"field": "city", "op": "in",
                                        "value": ["Boston", "Cambridge", "Somerville"]}),
        ("ne-events-invite", "New England events invite", {"not": {"list": "unsubscribed"}}),
        ("ne-vip-dinner", "New England VIP dinner", {"any": [
            {"tag": "vip"}, {"list": "vip-manual"}]}),
        ("ne-account-review", "Account review", {"field": "employees", "op": "gt",
                                                 "value": 500}),
        ("ne-exec-briefing", "Executive briefing", {"field": "title", "op": "matches",
                                                    "value": "^(vp|chief|director)\\b"}),
        ("ne-renewal-push", "Renewal push", {"field": "renewal_date", "op": "is_not_empty"}),
        ("ne-upsell", "Upsell", {"field": "plan", "op": "in", "value": ["pro", "team"]}),
        ("ne-advocates", "Advocates", {"activity": "webinar", "min_count": 1}),
        ("ne-case-study", "Case study candidates", {"not": {"tag": "do-not-contact"}}),
        ("ne-reference-program", "Reference program", {"field": "industry", "op": "neq",
                                                       "value": "government"}),
        ("ne-advisory-board", "Advisory board", {"field": "score", "op": "between",
                                                 "value": [80, 100]}),
        ("ne-gala-2026", "Gala 2026", {"field": "email", "op": "ends_with", "value": ".com"}),
        ("ne-gala-table-1", "Gala 2026, table 1", {"field": "employees", "op": "gte",
                                                   "value": 1000}),
    ]
    previous = None
    for lid, name, own in chain:
        add(lid, name, own if previous is None else {"all": [{"list": previous}, own]})
        previous = lid
    add("engaged-anywhere", "Opened an email in the last 30 days",
        {"activity": "email_open", "min_count": 1, "within_days": 30})
    add("no-opens-30d", "No email open in the last 30 days",
        {"activity": "email_open", "max_count": 0, "within_days": 30})
    add("recent-signups", "Signed up in the last 14 days",
        {"field": "signup_date", "op": "within_last_days", "value": 14})
    add("long-time-customers", "Customers for over a year", {"all": [
        {"field": "lifecycle_stage", "op": "eq", "value": "customer"},
        {"field": "signup_date", "op": "before_days_ago", "value": 365}]})
    add("campaign-7-clickers", "Clicked campaign 7 twice or more",
        {"activity": "email_click", "ref": "campaign-7", "min_count": 2})
    add("gmail-users", "Gmail users", {"field": "email", "op": "contains", "value": "@gmail."})
    add("no-phone", "No phone number", {"field": "phone", "op": "is_empty"})
    add("mid-market", "Mid-market", {"field": "employees", "op": "between", "value": [100, 999]})
    add("not-customers", "Prospects", {"field": "lifecycle_stage", "op": "not_in",
                                       "value": ["customer", "evangelist"]})
    add("startups", "Startups", {"all": [{"field": "employees", "op": "lt", "value": 50},
                                         {"field": "company", "op": "starts_with",
                                          "value": "the "}]})
    add("nurture", "Nurture track", {"all": [
        {"list": "not-customers"}, {"list": "no-opens-30d"},
        {"not": {"list": "unsubscribed"}}]})
    return L


def globex_lists():
    return [
        {"tenant_id": "globex", "list_id": "east-coast", "name": "East Coast",
         "rules": {"field": "state", "op": "in", "value": ["NY", "MA", "NJ"]}},
        {"tenant_id": "globex", "list_id": "hot-leads", "name": "Hot leads",
         "rules": {"all": [{"field": "score", "op": "gt", "value": 70},
                           {"not": {"tag": "churn-risk"}}]}},
        {"tenant_id": "globex", "list_id": "hot-east", "name": "Hot East Coast leads",
         "rules": {"all": [{"list": "east-coast"}, {"list": "hot-leads"}]}},
        {"tenant_id": "globex", "list_id": "partners", "static": True},
        {"tenant_id": "globex", "list_id": "partner-hot", "name": "Hot partners",
         "rules": {"all": [{"list": "partners"}, {"list": "hot-leads"}]}},
    ]


class Events:
    def __init__(self):
        self.items = []
        self.count = 0

    def add(self, tenant, lead, kind, at, **extra):
        self.count += 1
        event = {"event_id": f"{tenant}-{self.count:05d}", "tenant_id": tenant,
                 "lead_id": lead, "type": kind, "occurred_at": at}
        event.update(extra)
        self.items.append(event)
        return event


def story(ev):
    dana = "lead-0001"
    ev.add("acme", dana, "lead_upserted", ts(1), fields={
        "first_name": "Dana", "email": "dana.rivera@example.com", "state": "CA",
        "city": "San Francisco", "lifecycle_stage": "customer", "score": 72,
        "employees": 1200, "title": "VP Marketing", "plan": "pro", "industry": "software",
        "renewal_date": "2026-09-30", "signup_date": "2024-03-02", "phone": "+1 415 555 0101"})
    ev.add("acme", dana, "tag_added", ts(1, 10), tag="VIP")
    ev.add("acme", dana, "activity", ts(3, 14), activity={"kind": "webinar", "ref": "w-12"})
    ev.add("acme", dana, "activity", ts(20, 8), activity={"kind": "email_open",
                                                          "ref": "campaign-7"})
    ev.add("acme", dana, "lead_upserted", ts(21, 11), fields={"score": 85})
    # the move: one event, 17 lists joined through the cascade, the West Coast lists left
    ev.add("acme", dana, "lead_upserted", ts(22, 16, 30),
           fields={"state": "MA", "city": "Boston"})


def filler(ev, rng):
    stages = ["subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist"]
    titles = ["VP Sales", "Director of IT", "Engineer", "Chief of Staff", "Analyst", None]
    for tenant in ("acme", "globex"):
        for n in range(2, 161):
            lead = f"lead-{n:04d}"
            state = rng.choice(sorted(STATES))
            ev.add(tenant, lead, "lead_upserted", ts(rng.randint(1, 5), rng.randint(0, 23)),
                   fields={"email": f"user{n}@{rng.choice(['gmail.com', 'corp.example.com'])}",
                           "state": state, "city": rng.choice(STATES[state]),
                           "lifecycle_stage": rng.choice(stages),
                           "score": rng.randint(0, 100),
                           "employees": rng.choice([10, 45, 120, 800, 2500, None]),
                           "title": rng.choice(titles), "plan": rng.choice(["free", "pro",
                                                                            "team"]),
                           "industry": rng.choice(["software", "government", "retail"]),
                           "signup_date": f"20{rng.randint(24, 26)}-0{rng.randint(1, 5)}-1"
                                          f"{rng.randint(0, 9)}",
                           "company": rng.choice(["The Widget Co", "Acme Corp", "the labs"])})
            for _ in range(rng.randint(0, 4)):
                kind = rng.choice(["email_open", "email_click", "webinar", "web_visit"])
                ev.add(tenant, lead, "activity", ts(rng.randint(1, 28), rng.randint(0, 23)),
                       activity={"kind": kind, "ref": f"campaign-{rng.randint(6, 8)}"})
            if rng.random() < 0.3:
                ev.add(tenant, lead, "lead_upserted", ts(rng.randint(6, 28)),
                       fields={"score": rng.randint(0, 100),
                               "phone": None if rng.random() < 0.5 else "+1 555 0100"})
            if rng.random() < 0.15:
                ev.add(tenant, lead, "tag_added", ts(rng.randint(2, 20)),
                       tag=rng.choice(["vip", "churn-risk", "do-not-contact"]))
            if tenant == "acme" and rng.random() < 0.08:
                ev.add(tenant, lead, "static_list_added", ts(rng.randint(2, 20)),
                       list_id=rng.choice(["vip-manual", "unsubscribed"]))
            if tenant == "globex" and rng.random() < 0.1:
                ev.add(tenant, lead, "static_list_added", ts(rng.randint(2, 20)),
                       list_id="partners")
    # a deletion, and an older event arriving after it that must not bring the lead back
    for lead in ("lead-0900", "lead-0901"):
        ev.add("acme", lead, "lead_upserted", ts(2), fields={
            "state": "NY", "lifecycle_stage": "customer", "email": f"{lead}@gmail.com"})
        ev.add("acme", lead, "lead_deleted", ts(15))
    ev.add("acme", "lead-0900", "lead_upserted", ts(14), fields={"score": 99})
    ev.add("acme", "lead-0901", "lead_upserted", ts(16), fields={"state": "NY",
                                                                 "lifecycle_stage": "lead"})


BAD_LINES = [
    "this is not json",
    '{"event_id": "bad-1", "tenant_id": "acme", "lead_id": "lead-0001", "type": "lead_upserted"}',
    '{"event_id": "bad-2", "tenant_id": "umbrella", "lead_id": "x", "type": "tag_added", '
    '"occurred_at": "2026-05-02T00:00:00Z", "tag": "vip"}',
    '{"event_id": "bad-3", "tenant_id": "acme", "lead_id": "x", "type": "lead_merged", '
    '"occurred_at": "2026-05-02T00:00:00Z"}',
    '{"event_id": "bad-4", "tenant_id": "acme", "lead_id": "x", "type": "tag_added", '
    '"occurred_at": "yesterday", "tag": "vip"}',
    '{"event_id": "bad-5", "tenant_id": "acme", "lead_id": "x", "type": "static_list_added", '
    '"occurred_at": "2026-05-02T00:00:00Z", "list_id": "west-coast"}',
    '{"event_id": 17, "tenant_id": "acme", "lead_id": "x", "type": "tag_added", '
    '"occurred_at": "2026-05-02T00:00:00Z", "tag": "vip"}',
    '["an", "array"]',
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "sample"))
    args = parser.parse_args(argv)
    rng = random.Random(2026)
    os.makedirs(os.path.join(args.out, "events"), exist_ok=True)
    definitions = {"tenants": ["acme", "globex", "initech"],
                   "lists": acme_lists() + globex_lists()}
    with open(os.path.join(args.out, "lists.json"), "w", encoding="utf-8") as handle:
        json.dump(definitions, handle, indent=1)
        handle.write("\n")

    ev = Events()
    story(ev)
    filler(ev, rng)
    events = ev.items
    duplicates = rng.sample(events, 25)
    shuffled = events + duplicates
    rng.shuffle(shuffled)  # arrival order is not time order
    avro_part = shuffled[:40]
    plain, gz_part = shuffled[40:700], shuffled[700:]
    with open(os.path.join(args.out, "events", "part-1.jsonl"), "w", encoding="utf-8") as h:
        for event in plain:
            h.write(json.dumps(event) + "\n")
        for line in BAD_LINES:
            h.write(line + "\n")
    with gzip.open(os.path.join(args.out, "events", "part-2.jsonl.gz"), "wt",
                   encoding="utf-8") as h:
        for event in gz_part:
            h.write(json.dumps(event) + "\n")
    with open(os.path.join(ROOT, "schemas", "change_event.avsc"), encoding="utf-8") as h:
        schema = fastavro.parse_schema(json.load(h))
    with open(os.path.join(args.out, "events", "part-3.avro"), "wb") as h:
        fastavro.writer(h, schema, avro_part, codec="deflate")
    print(f"wrote {len(shuffled)} events ({len(duplicates)} duplicates) and "
          f"{len(BAD_LINES)} bad records into {args.out}")


if __name__ == "__main__":
    main()
