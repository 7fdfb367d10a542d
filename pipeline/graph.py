"""Assemble the pipeline graph: source -> parse -> key -> evaluate -> sink.

`build_backfill` returns the key PCollections (exposed for tests); the definitions enter
once, as a side input shared by parsing and evaluation.
"""

from __future__ import annotations

import apache_beam as beam

from transforms.definitions import StaticDefinitions
from transforms.evaluate import DELTAS, PROFILES, EvaluateLeads
from transforms.io import ReadEventFiles
from transforms.parse import DEAD_LETTERS, EVENTS, ParseEvents
from transforms.sinks import WriteTables


def latest(times):
    """The evaluation time at the end of a backfill: the newest event time (0 if none)."""
    return max(times, default=0)


def evaluate_and_write(records, definitions, as_of, sink):
    """The steps batch and streaming share once records are read."""
    parsed = records | "Parse" >> ParseEvents(definitions)
    events = parsed[EVENTS]
    if as_of is None:
        as_of = (events | "EventTimes" >> beam.Map(lambda e: e.occurred_at)
                 | "LatestEventTime" >> beam.CombineGlobally(latest))
    evaluated = events | "Evaluate" >> EvaluateLeads(definitions, as_of)
    outputs = {"events": events, "deltas": evaluated[DELTAS],
               "dead_letters": parsed[DEAD_LETTERS], "profiles": evaluated[PROFILES]}
    if sink:
        outputs | "WriteTables" >> WriteTables(sink)
    return outputs


def build_backfill(p, events_glob, doc, sink, as_of_us=None):
    """Batch: event files into the sink. Returns the main PCollections by name."""
    definitions = p | "Definitions" >> StaticDefinitions(doc)
    records = p | "ReadEvents" >> ReadEventFiles(events_glob)
    as_of = None if as_of_us is None else p | "AsOf" >> beam.Create([as_of_us])
    return evaluate_and_write(records, definitions, as_of, sink)
