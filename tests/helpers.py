"""Shared test helpers: write event files, run the real batch pipeline, compute oracles."""

from __future__ import annotations

import collections
import json
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.summary import job_counters
from pipeline.graph import build_backfill
from rules import evaluate_tenant
from storage import open_store
from schemas.events import event_json  # noqa: F401 - the tests import it from here
from tests.oracle import fold
from transforms.definitions import DefinitionsDoc

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample")


def write_events(folder, events, files=2, extra_lines=()):
    """Spread events over `files` JSONL files (arrival order kept per file)."""
    os.makedirs(folder, exist_ok=True)
    handles = [open(os.path.join(folder, f"part-{i}.jsonl"), "w", encoding="utf-8")
               for i in range(files)]
    try:
        for i, event in enumerate(events):
            handles[i % files].write(event_json(event) + "\n")
        for line in extra_lines:
            handles[0].write(line + "\n")
    finally:
        for handle in handles:
            handle.close()
    return os.path.join(folder, "*.jsonl")


def doc_of(document):
    from rules import parse_definitions
    text = json.dumps(document)
    return DefinitionsDoc(parse_definitions(document).version, text)


def run_backfill(events_glob, document, sink, as_of=None, extra_args=()):
    """Run the batch pipeline on the DirectRunner; return the job's counters."""
    options = PipelineOptions(["--runner=DirectRunner", *extra_args])
    pipeline = beam.Pipeline(options=options)
    build_backfill(pipeline, events_glob, doc_of(document), sink, as_of)
    result = pipeline.run()
    result.wait_until_finish()
    return job_counters(result)


def expected_memberships(definitions, events, as_of):
    """{(tenant, list, lead)} of a from-scratch evaluation of the folded profiles."""
    by_lead = collections.defaultdict(list)
    for event in events:
        by_lead[(event.tenant_id, event.lead_id)].append(event)
    found = set()
    for (tenant, lead), history in by_lead.items():
        for lid in evaluate_tenant(definitions.tenants[tenant], fold(history), as_of):
            found.add((tenant, lid, lead))
    return found


def table_counts(sink):
    from schemas import tables
    store = open_store(sink)
    try:
        return {table: store.count(table) for table in tables.TABLES}
    finally:
        store.close()


def sink_memberships(sink):
    store = open_store(sink)
    try:
        return store.memberships()
    finally:
        store.close()
