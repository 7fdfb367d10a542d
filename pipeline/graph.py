"""Assemble the pipeline graph: source -> parse -> key -> evaluate -> sink.

`build_backfill` and `build_stream` differ only in the source and in how a lead's events
are grouped; both return the main PCollections by name (exposed for tests).
"""

from __future__ import annotations

import apache_beam as beam

from transforms.definitions import StaticDefinitions
from transforms.evaluate import DEAD_LETTERS as EVALUATION_DEAD_LETTERS
from storage import parse_sink_uri
from transforms.evaluate import (DELTAS, LEADS, PROFILES, EvaluateLeads,
                                 EvaluateLeadsStreaming)
from transforms.io import ReadEventFiles
from transforms.parse import DEAD_LETTERS, EVENTS, ParseEvents
from transforms.pubsub import DEAD_LETTERS as CONTROL_DEAD_LETTERS
from transforms.pubsub import SWEEPS, ReadControl, ReadPubSubRecords
from transforms.sinks import WriteTables


def parse_evaluate_write(records, definitions, evaluate, sink, dead_letters=(),
                         deltas_topic=None, stable=False):
    """The steps batch and streaming share once records are read: parse (dead letters
    aside), evaluate each lead, write the tables (and publish the new deltas to
    `deltas_topic`). `dead_letters`: more of them, from elsewhere (the control
    subscription). `stable`: the sink writes only what a checkpoint holds."""
    parsed = records | "Parse" >> ParseEvents(definitions)
    evaluated = parsed[EVENTS] | "Evaluate" >> evaluate
    dead = ((parsed[DEAD_LETTERS], evaluated[EVALUATION_DEAD_LETTERS], *dead_letters)
            | "DeadLetters" >> beam.Flatten())
    outputs = {"events": parsed[EVENTS], "dead_letters": dead}
    if getattr(evaluate, "per_lead", False):
        outputs["leads"] = evaluated[LEADS]
    else:
        outputs.update(deltas=evaluated[DELTAS], profiles=evaluated[PROFILES])
    if sink:
        outputs | "WriteTables" >> WriteTables(sink, deltas_topic, stable)
    return outputs


def _per_lead(sink):
    """Every sink but BigQuery takes each lead's rows as one element (LeadRows)."""
    return bool(sink) and parse_sink_uri(sink).scheme != "bigquery"


def build_backfill(p, events_glob, doc, sink, as_of_us=None, deltas_topic=None):
    """Batch: event files into the sink. Returns the main PCollections by name: every
    sink but BigQuery takes each lead's rows as one element ('leads'); BigQuery (and no
    sink) its deltas and profile apart ('deltas', 'profiles')."""
    definitions = p | "Definitions" >> StaticDefinitions(doc)
    records = p | "ReadEvents" >> ReadEventFiles(events_glob)
    as_of = None if as_of_us is None else p | "AsOf" >> beam.Create([as_of_us])
    return parse_evaluate_write(records, definitions,
                                EvaluateLeads(definitions, as_of, _per_lead(sink)), sink,
                                deltas_topic=deltas_topic)


def build_stream(p, subscription, lists_path, refresh_seconds, sink, resume=True,
                 reader="native", control_subscription=None, deltas_topic=None,
                 stable=False):
    """Streaming: a Pub/Sub subscription into the sink (by lead, as build_backfill);
    definitions polled from a file, sweeps read from `control_subscription` (None: no sweeps).
    `reader` is 'native' (the runner's ReadFromPubSub) or 'pull' (portable runners);
    `stable`: rows are written once a checkpoint holds them (exactly once on Flink)."""
    records = p | "ReadPubSub" >> ReadPubSubRecords(subscription, reader)
    sweeps, dead = None, ()
    if control_subscription:
        control = p | "ReadControl" >> ReadControl(control_subscription, reader)
        sweeps, dead = control[SWEEPS], (control[CONTROL_DEAD_LETTERS],)
    evaluate = EvaluateLeadsStreaming(lists_path, refresh_seconds, sink, resume,
                                      sweeps=sweeps, per_lead=_per_lead(sink))
    return parse_evaluate_write(records, (lists_path, refresh_seconds), evaluate, sink, dead,
                                deltas_topic, stable)
