"""Write the output tables to the store a sink URI names.

Rows are buffered per bundle and written in one transaction (or one part file per table)
when the bundle ends or the buffer fills; a bundle ends once its rows are written. The
store client is made where it is used, so the DoFn pickles as plain configuration.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import typing
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.portability import common_urns
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from schemas.values import format_ts
from schemas import tables
from schemas.records import lead_key, make_dead_letter
from storage import parse_sink_uri, shared_store
from storage.bigquery import SNAPSHOTS, table_schema, written_tables
from storage.rows import dead_letter_row, delta_row
from storage.topic import publish_committed
from transforms.evaluate import LEADS, LeadRows, now_us
from transforms.definitions import NAMESPACE

FLUSH_ROWS = 20_000
IN_FLIGHT = 2  # batches of a bundle handed to the writer and not yet written
_PENDING = threading.local()
_WRITERS = {}
_WRITERS_LOCK = threading.Lock()


def _writer(sink):
    """The one thread of this process that writes deltas and profiles to `sink`.

    Worker processes writing one SQLite file take turns at its write lock; a worker that
    waited for it on its own thread would stop evaluating meanwhile. Writing on a thread
    of its own, a worker goes on evaluating while its batch waits for the lock or is
    being written (SQLite lets go of the interpreter lock while it works). Keyed by
    process: a forked worker does not inherit its parent's thread.
    """
    key = (os.getpid(), str(sink))
    with _WRITERS_LOCK:
        pool = _WRITERS.get(key)
        if pool is None:
            pool = _WRITERS[key] = ThreadPoolExecutor(1, thread_name_prefix="sink-writer")
    return pool


def _write_lead_rows(sink, deltas, profiles, deltas_topic=None):
    # the writer thread's own store: a connection is used by one thread only
    store = shared_store(sink)
    if not deltas_topic:
        return store.write_deltas(deltas, format_ts(now_us()), profiles)
    new = store.write_queued(deltas, format_ts(now_us()), profiles)
    publish_committed(store, deltas_topic, new)
    return len(new)


def _pending_lead_rows(sink):
    """This thread's (delta records, profile rows) not yet written to `sink`."""
    batches = getattr(_PENDING, "batches", None)
    if batches is None:
        batches = _PENDING.batches = {}
    return batches.setdefault(sink, ([], []))


class WriteRowsFn(beam.DoFn):
    """Writes the records of one table, or LeadRows (`table` LEADS: each lead's deltas
    and profile), fused with the step that produces them (no shuffle before the sink).

    The delta writer and the profile writer of a sink share one buffer per thread: a
    fused bundle runs both on one thread, and whichever flushes writes both kinds in one
    transaction, deltas first. A profile says which events a lead has seen, and a
    restarted job resumes from it, so it must not land without the deltas of those
    events. (A runner that does not fuse them, the Python DirectRunner, writes each in
    its own transaction; LeadRows keep them together there too.)
    """

    def __init__(self, sink, table, deltas_topic=None):
        self.sink = sink
        self.table = table
        self.deltas_topic = deltas_topic
        self.new_deltas = Metrics.counter(NAMESPACE, "sink_new_deltas")
        self.rows = Metrics.counter(NAMESPACE, "sink_rows")

    def setup(self):
        self.lead_rows = self.table != tables.DEAD_LETTERS

    def start_bundle(self):
        self.in_flight = collections.deque()
        if self.lead_rows:
            # rows of a failed bundle on this thread are not this bundle's to write
            _PENDING.batches = {}
        else:
            self.batch = []

    def _buffers(self):
        return _pending_lead_rows(self.sink) if self.lead_rows else (self.batch, ())

    def process(self, record):
        deltas, profiles = self._buffers()
        if self.table == LEADS:
            deltas.extend(record.deltas)
            profiles.append(record.profile)
        elif self.table == tables.LEAD_PROFILES:
            profiles.append(record)
        else:
            deltas.append(record)
        if len(deltas) + len(profiles) >= FLUSH_ROWS:
            self._flush()

    def finish_bundle(self):
        self._flush()
        while self.in_flight:
            self._written()

    def _written(self):
        """Wait for the oldest batch in flight; a failed write fails the bundle."""
        future, rows = self.in_flight.popleft()
        # counted here: metrics belong to the bundle's thread, not the writer's
        self.new_deltas.inc(future.result())
        self.rows.inc(rows)

    def _flush(self):
        first, profiles = self._buffers()
        if not first and not profiles:
            return
        if self.lead_rows:
            # one transaction: a lead's deltas with its profile (the buffers are handed
            # over as copies: the next rows are already coming in)
            self.in_flight.append((_writer(self.sink).submit(
                _write_lead_rows, self.sink, first[:], profiles[:], self.deltas_topic),
                len(first) + len(profiles)))
            while len(self.in_flight) > IN_FLIGHT:
                self._written()
        else:
            # the store of the thread running this bundle: a DoFn instance set up on
            # one thread may run its bundles on others (portable workers' thread pools)
            shared_store(self.sink).write({self.table: [dead_letter_row(r) for r in first]})
            self.rows.inc(len(first))
        del first[:]
        if profiles:
            del profiles[:]


def failed_row_dead_letter(failure):
    """A dead letter for a row BigQuery refused: (destination, row, errors) in."""
    destination, row, errors = failure
    return make_dead_letter(f"bigquery:{destination}", f"bigquery_insert: "
                            f"{json.dumps(errors, default=str)[:2000]}",
                            json.dumps(row, sort_keys=True, default=str), now_us())


class WriteBigQueryTables(beam.PTransform):
    """The tables in BigQuery: file loads in batch (each load job is all-or-nothing),
    streaming inserts in streaming, rows BigQuery refuses going to `dead_letters`.

    Storage Write API would give exactly-once appends, but in the Python SDK it is a
    cross-language transform that needs a Java expansion service at submission; the
    views de-duplicate by the deterministic ids instead, which makes at-least-once
    appends exact for every reader.
    """

    def __init__(self, location):
        super().__init__()
        self.project, self.dataset = location.split(".", 1)

    def _write(self, rows, bq_table, spec_table, params, streaming, label):
        from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
        from apache_beam.io.gcp.bigquery_tools import RetryStrategy
        method = (WriteToBigQuery.Method.STREAMING_INSERTS if streaming
                  else WriteToBigQuery.Method.FILE_LOADS)
        return rows | label >> WriteToBigQuery(
            table=f"{self.project}:{self.dataset}.{bq_table}",
            schema=table_schema(spec_table), method=method,
            create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
            write_disposition=BigQueryDisposition.WRITE_APPEND,
            additional_bq_parameters=params,
            insert_retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR)

    def expand(self, outputs):
        from apache_beam.options.pipeline_options import StandardOptions
        streaming = outputs["deltas"].pipeline.options.view_as(StandardOptions).streaming
        stamp = now_us
        rows = {
            tables.MEMBERSHIP_DELTAS: outputs["deltas"] | "DeltaRows" >> beam.Map(
                lambda d: delta_row(d, stamp())),
            SNAPSHOTS: outputs["profiles"],
        }
        if "dead_letters" in outputs:
            rows[tables.DEAD_LETTERS] = outputs["dead_letters"] | "DeadLetterRows" >> \
                beam.Map(dead_letter_row)
        refused = []
        for bq_table, (spec_table, params) in written_tables().items():
            if bq_table not in rows:
                continue
            result = self._write(rows[bq_table], bq_table, spec_table, params, streaming,
                                 f"Write_{bq_table}")
            if streaming:
                refused.append(result.failed_rows_with_errors)
        if refused:
            dead = (refused | "Refused" >> beam.Flatten()
                    | "RefusedRows" >> beam.Map(failed_row_dead_letter)
                    | "RefusedRowsAsDeadLetters" >> beam.Map(dead_letter_row))
            self._write(dead, tables.DEAD_LETTERS, tables.DEAD_LETTERS,
                        written_tables()[tables.DEAD_LETTERS][1], True, "WriteRefused")


class StableParDo(beam.ParDo):
    """A ParDo that sees only input a checkpoint holds (Beam's RequiresStableInput,
    which the Python SDK has no decorator for): Flink buffers the input of its stage in
    the checkpoint and hands it over once that checkpoint completes. Needs checkpoints
    in exactly-once mode; the DirectRunner's batch mode and Prism refuse it.
    """

    def to_runner_api_parameter(self, context, **extra_kwargs):
        urn, payload = super().to_runner_api_parameter(context, **extra_kwargs)
        payload.requires_stable_input = True
        context.add_requirement(common_urns.requirements.REQUIRES_STABLE_INPUT.urn)
        return urn, payload


class StableWriteLeadsFn(WriteRowsFn):
    """WriteRowsFn of LeadRows keyed by lead, run as a StableParDo: exactly once on Flink.

    After a failure Flink replays the input since the last checkpoint, and a lead's
    events and timers may then interleave otherwise than in the attempt that failed (a
    flip timer that fired before the lead's next event fires after it), making other
    deltas with other ids: rows written as they came would keep both histories. Here
    the rows wait, in the checkpoint, until it completes; a lost attempt's rows after
    it were never written, and those before it are written again as they were (the
    sink skips known ids).

    Stateful (an unused cell) so that it is a stage of its own, keyed by lead: the
    buffer then holds the evaluation's output, not its input (Flink fails replaying a
    buffered timer of a stateful stage: "State backend must be locked"), and a lead's
    rows stay on one writer, in order."""

    KEYED = ReadModifyWriteStateSpec("keyed", beam.coders.BooleanCoder())

    def process(self, element, _keyed=beam.DoFn.StateParam(KEYED)):
        return super().process(element[1])


def _by_lead(rows):
    return lead_key(rows.profile["tenant_id"], rows.profile["lead_id"]), rows


class WriteTables(beam.PTransform):
    """{'deltas', 'profiles'[, 'dead_letters']} or {'leads'[, 'dead_letters']}
    PCollections -> the sink's tables ('leads': all but BigQuery); with `deltas_topic`
    (SQLite and PostgreSQL), each new delta is published there after its commit
    (storage/topic.py). `stable`: write each lead's rows only once a checkpoint holds
    them (StableWriteLeadsFn; dead letters are written at once: their ids come from
    the message, so a replay writes the same ones)."""

    def __init__(self, sink, deltas_topic=None, stable=False):
        super().__init__()
        self.sink = sink
        self.deltas_topic = deltas_topic
        self.stable = stable

    def expand(self, outputs):
        uri = parse_sink_uri(self.sink)
        if uri.scheme == "bigquery":
            return outputs | "BigQuery" >> WriteBigQueryTables(uri.location)
        for name, table, label in (("leads", LEADS, "WriteLeads"),
                                   ("deltas", tables.MEMBERSHIP_DELTAS, "WriteDeltas"),
                                   ("profiles", tables.LEAD_PROFILES, "WriteProfiles"),
                                   ("dead_letters", tables.DEAD_LETTERS, "WriteDeadLetters")):
            if name not in outputs:
                continue
            if self.stable and table == LEADS:
                (outputs[name]
                 | "KeyForSink" >> beam.Map(_by_lead).with_output_types(
                     typing.Tuple[str, LeadRows])
                 | label >> StableParDo(
                     StableWriteLeadsFn(self.sink, table, self.deltas_topic)))
            else:
                outputs[name] | label >> beam.ParDo(
                    WriteRowsFn(self.sink, table, self.deltas_topic))
