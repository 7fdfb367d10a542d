"""Key events by lead and evaluate each lead with the engine.

Batch groups a lead's whole history and replays it in time order (so a replay emits
exactly the same deltas, with the same ids); streaming keeps each lead's state in a
stateful DoFn and applies events as they come. Both hand the work to LeadProcessor and
emit the same outputs: deltas (main) and profile rows ('profiles').
"""

from __future__ import annotations

import time

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from rules import LeadState
from schemas.records import split_lead_key
from storage.rows import profile_row
from transforms.definitions import ProcessorCache
from transforms.parse import NAMESPACE

DELTAS = "deltas"
PROFILES = "profiles"


def now_us():
    return int(time.time() * 1_000_000)


class KeyByLead(beam.PTransform):
    """event -> ("tenant/lead", event), the plain-string key of the lead's state."""

    def expand(self, events):
        return events | "LeadKey" >> beam.Map(lambda event: (event.lead_key, event))


class _Counters:
    """The metrics a dashboard needs, shared by the batch and streaming shells."""

    def __init__(self):
        self.outcomes = {name: Metrics.counter(NAMESPACE, f"events_{name}")
                         for name in ("applied", "duplicate", "stale")}
        self.added = Metrics.counter(NAMESPACE, "deltas_added")
        self.removed = Metrics.counter(NAMESPACE, "deltas_removed")
        self.depth = Metrics.distribution(NAMESPACE, "cascade_depth")
        self.engine_us = Metrics.distribution(NAMESPACE, "engine_us_per_event")
        self.timers = Metrics.counter(NAMESPACE, "timers_fired")

    def count(self, outcomes, deltas, elapsed_us, events):
        for name, value in outcomes.items():
            if value:
                self.outcomes[name].inc(value)
        for delta in deltas:
            (self.added if delta.action == "added" else self.removed).inc()
            self.depth.update(delta.cascade_depth)
        if events:
            self.engine_us.update(int(elapsed_us / events))


class EvaluateHistoryFn(beam.DoFn):
    """Batch: one lead's events, sorted by time, then time windows up to `as_of`."""

    def __init__(self):
        self.counters = _Counters()

    def setup(self):
        self.cache = ProcessorCache()

    def process(self, element, doc, as_of):
        key, events = element
        events = list(events)
        processor = self.cache.get(doc)
        state = LeadState()
        started = time.perf_counter()
        outcomes, deltas = processor.run_history(state, events, as_of or None)
        elapsed = (time.perf_counter() - started) * 1e6
        self.counters.count(outcomes, deltas, elapsed, len(events))
        yield from deltas
        tenant, lead = split_lead_key(key)
        yield pvalue.TaggedOutput(PROFILES, profile_row(tenant, lead, state, now_us()))


class EvaluateLeads(beam.PTransform):
    """events -> deltas (main) and profile rows ('profiles'), batch form."""

    def __init__(self, definitions, as_of):
        super().__init__()
        self.definitions = definitions
        self.as_of = as_of

    def expand(self, events):
        return (events
                | "KeyByLead" >> KeyByLead()
                | "GroupHistories" >> beam.GroupByKey()
                | "Evaluate" >> beam.ParDo(
                    EvaluateHistoryFn(), pvalue.AsSingleton(self.definitions),
                    pvalue.AsSingleton(self.as_of)).with_outputs(PROFILES, main=DELTAS))
