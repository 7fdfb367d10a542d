"""A synthetic but account-shaped workload shared by every benchmark.

Tenants with many lists whose rules pick fields with a Zipf skew (so state, score and
country are each read by hundreds of lists), nested groups, 30% of lists referencing
other lists plus a chain of references deeper than 15, lead profiles of 40 fields, and
change events of 1-3 fields that are skewed (Zipf) over the leads. Seeded: the same
arguments give the same workload.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random

from schemas.values import DAY_US, format_ts, parse_timestamp

START = parse_timestamp("2026-06-01T00:00:00Z")

STATES = ["CA", "OR", "WA", "NV", "AZ", "NY", "MA", "NJ", "CT", "PA", "TX", "FL", "GA",
          "IL", "OH", "MI", "NC", "VA", "CO", "MN"]
COUNTRIES = ["US", "CA", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "AU", "JP", "BR", "IN",
             "MX", "SG"]
WORDS = ["cloud", "retail", "health", "finance", "energy", "media", "logistics", "saas",
         "public", "education", "travel", "gaming", "security", "telecom", "food"]
KINDS = ["email_open", "email_click", "web_visit", "form_fill", "webinar", "download"]
TAGS = ["vip", "partner", "churn-risk", "newsletter", "beta", "event-2026", "champion",
        "do-not-call"]

# 40 fields; the first ones are the popular ones rules pick most often.
FIELDS = (
    [("state", "state"), ("score", "number"), ("country", "country"),
     ("lifecycle_stage", "stage"), ("industry", "word"), ("employees", "number"),
     ("last_purchase", "date"), ("title", "text"), ("email_domain", "text"),
     ("annual_revenue", "number"), ("signup_date", "date"), ("plan", "stage"),
     ("city", "word"), ("age", "number"), ("lead_source", "word")]
    + [(f"attr_{i:02d}", ("word", "number", "text", "date", "stage")[i % 5])
       for i in range(25)]
)
STAGES = ["subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist"]


def zipf_weights(count, exponent):
    return [1.0 / (rank ** exponent) for rank in range(1, count + 1)]


class _Zipf:
    """Draws indexes 0..n-1 with Zipf weights, quickly."""

    def __init__(self, count, exponent, rng):
        self.cumulative = list(itertools.accumulate(zipf_weights(count, exponent)))
        self.total = self.cumulative[-1]
        self.rng = rng

    def draw(self):
        return bisect.bisect_left(self.cumulative, self.rng.random() * self.total)


def field_value(kind, rng, now=START):
    if kind == "state":
        return rng.choice(STATES)
    if kind == "country":
        return rng.choice(COUNTRIES)
    if kind == "stage":
        return rng.choice(STAGES)
    if kind == "number":
        return rng.randint(0, 100)
    if kind == "word":
        return rng.choice(WORDS)
    if kind == "text":
        return f"{rng.choice(WORDS)} {rng.choice(WORDS)}-{rng.randint(0, 99)}"
    return format_ts(now - rng.randint(0, 120) * DAY_US)[:10]


class Workload:
    """Definitions, initial leads and change events of one seeded workload."""

    def __init__(self, tenants=1, lists_per_tenant=1000, leads=100_000, seed=7,
                 field_exponent=1.1, lead_exponent=1.05, chain=20, numeric_step_share=0.8,
                 children=(2, 4), any_share=None):
        self.rng = random.Random(seed)
        self.children = children
        self.any_share = any_share
        self.numeric_step_share = numeric_step_share
        self._numbers = {}
        self.tenant_ids = [f"tenant-{i}" for i in range(tenants)]
        self.lists_per_tenant = lists_per_tenant
        self.lead_count = leads
        self.chain = chain
        self.fields = _Zipf(len(FIELDS), field_exponent, self.rng)
        self.leads = _Zipf(leads, lead_exponent, self.rng)
        self.definitions = self._definitions()

    # -- definitions --------------------------------------------------------------------
    def _atom(self):
        rng = self.rng
        roll = rng.random()
        if roll < 0.06:
            return {"tag": rng.choice(TAGS)}
        if roll < 0.14:
            node = {"activity": rng.choice(KINDS)}
            if rng.random() < 0.3:
                node["ref"] = f"campaign-{rng.randint(1, 5)}"
            if rng.random() < 0.7:
                node["within_days"] = rng.choice([7, 14, 30, 90])
            if rng.random() < 0.2:
                node["max_count"] = 0
            elif rng.random() < 0.5:
                node["min_count"] = rng.randint(1, 3)
            return node
        name, kind = FIELDS[self.fields.draw()]
        if kind in ("state", "country", "stage", "word"):
            pool = {"state": STATES, "country": COUNTRIES, "stage": STAGES, "word": WORDS}[kind]
            op = rng.choice(["eq", "in", "in", "neq", "not_in", "is_not_empty"])
            if op in ("in", "not_in"):
                return {"field": name, "op": op, "value": rng.sample(pool, rng.randint(2, 4))}
            if op == "is_not_empty":
                return {"field": name, "op": op}
            return {"field": name, "op": op, "value": rng.choice(pool)}
        if kind == "number":
            op = rng.choice(["gt", "gte", "lt", "lte", "between", "eq"])
            if op == "between":
                low = rng.randint(0, 80)
                return {"field": name, "op": op, "value": [low, low + rng.randint(5, 20)]}
            return {"field": name, "op": op, "value": rng.randint(0, 100)}
        if kind == "text":
            op = rng.choice(["contains", "starts_with", "ends_with", "not_contains", "matches"])
            word = rng.choice(WORDS)
            if op == "matches":
                return {"field": name, "op": op, "value": f"^{word[:3]}.*-[0-4]"}
            if op == "ends_with":
                return {"field": name, "op": op, "value": f"-{rng.randint(0, 9)}"}
            return {"field": name, "op": op, "value": word}
        op = rng.choice(["within_last_days", "before_days_ago"])
        return {"field": name, "op": op, "value": rng.choice([7, 30, 60, 90])}

    def _tree(self, refs, depth=0):
        rng = self.rng
        children = []
        for _ in range(rng.randint(*self.children)):
            if depth < 2 and rng.random() < 0.25:
                children.append(self._tree(refs, depth + 1))
            else:
                children.append(self._atom())
        if refs:
            children.append({"list": refs} if isinstance(refs, str)
                            else {"list": rng.choice(refs)})
        if self.any_share is None:  # "all" at the top, either below
            kind = "all" if depth % 2 == 0 or rng.random() < 0.5 else "any"
        else:
            kind = "any" if rng.random() < self.any_share else "all"
        node = {kind: children}
        return {"not": node} if depth > 0 and rng.random() < 0.1 else node

    def _definitions(self):
        rng = self.rng
        lists = []
        for tenant in self.tenant_ids:
            made = []
            statics = [f"static-{i}" for i in range(max(2, self.lists_per_tenant // 50))]
            for lid in statics:
                lists.append({"tenant_id": tenant, "list_id": lid, "static": True})
            made.extend(statics)
            chain_ids = [f"chain-{i:02d}" for i in range(self.chain)]
            for i, lid in enumerate(chain_ids):
                previous = chain_ids[i - 1] if i else None
                rules = {"all": [self._atom(), {"list": previous}]} if previous else \
                    {"all": [{"field": "state", "op": "in", "value": STATES[5:9]}]}
                lists.append({"tenant_id": tenant, "list_id": lid, "name": f"chain {i}",
                              "rules": rules})
            made.extend(chain_ids)
            for i in range(self.lists_per_tenant - len(statics) - len(chain_ids)):
                lid = f"list-{i:04d}"
                refs = rng.sample(made, 1) if rng.random() < 0.3 else None
                lists.append({"tenant_id": tenant, "list_id": lid,
                              "rules": self._tree(refs[0] if refs else None)})
                made.append(lid)
        return {"tenants": self.tenant_ids, "lists": lists}

    def definitions_json(self):
        return json.dumps(self.definitions)

    # -- leads and events ---------------------------------------------------------------
    def lead_id(self, index):
        return f"lead-{index:07d}"

    def initial_fields(self, index):
        rng = random.Random(index * 7919 + 1)
        return {name: field_value(kind, rng) for name, kind in FIELDS}

    def initial_events(self, tenant):
        """One lead_upserted with all 40 fields per lead, a day before the changes start."""
        at = START - DAY_US
        for index in range(self.lead_count):
            yield {"event_id": f"{tenant}-init-{index}", "tenant_id": tenant,
                   "lead_id": self.lead_id(index), "type": "lead_upserted",
                   "occurred_at": format_ts(at), "fields": self.initial_fields(index)}

    def _next_value(self, lead_id, name, kind, at):
        """A field's next value: numbers mostly move in steps (a score gains points), the
        rest jump to any value of the field's pool."""
        rng = self.rng
        if kind == "number" and rng.random() < self.numeric_step_share:
            key = (lead_id, name)
            current = self._numbers.get(key)
            if current is None:
                current = self.initial_fields(int(lead_id.split("-")[1]))[name]
            value = min(100, max(0, current + rng.choice([-1, 1]) * rng.randint(1, 10)))
        else:
            value = field_value(kind, rng, at)
        if kind == "number":
            self._numbers[(lead_id, name)] = value
        return value

    def change_events(self, count, spacing_us=1_000_000):
        """`count` change events, Zipf over leads, 1-3 fields each (some activities, tags)."""
        rng = self.rng
        at = START
        for n in range(count):
            at += rng.randint(0, 2 * spacing_us)
            tenant = self.tenant_ids[n % len(self.tenant_ids)]
            base = {"event_id": f"{tenant}-ev-{n}", "tenant_id": tenant,
                    "lead_id": self.lead_id(self.leads.draw()), "occurred_at": format_ts(at)}
            roll = rng.random()
            if roll < 0.85:
                changed = {}
                for _ in range(rng.randint(1, 3)):
                    name, kind = FIELDS[self.fields.draw()]
                    changed[name] = self._next_value(base["lead_id"], name, kind, at)
                base.update(type="lead_upserted", fields=changed)
            elif roll < 0.95:
                activity = {"kind": rng.choice(KINDS)}
                if rng.random() < 0.5:
                    activity["ref"] = f"campaign-{rng.randint(1, 5)}"
                base.update(type="activity", activity=activity)
            else:
                base.update(type=rng.choice(["tag_added", "tag_removed"]), tag=rng.choice(TAGS))
            yield base
