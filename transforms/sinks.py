"""Write the output tables to the store a sink URI names.

Rows are buffered per bundle and written in one transaction (or one part file per table)
when the bundle ends or the buffer fills. The store client is made in setup(), so the
DoFn pickles as plain configuration.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.metrics import Metrics

from rules.values import format_ts
from schemas import tables
from schemas.records import make_dead_letter
from storage import parse_sink_uri, shared_store
from storage.bigquery import SNAPSHOTS, table_schema, written_tables
from storage.rows import dead_letter_row, delta_row
from transforms.evaluate import now_us
from transforms.definitions import NAMESPACE

FLUSH_ROWS = 5000


LEAD_ROWS = "lead rows"  # delta records and profile rows, written together


class WriteRowsFn(beam.DoFn):
    """Writes dead letters (table DEAD_LETTERS) or a lead's rows (LEAD_ROWS: its delta
    records and its profile rows, in one transaction, deltas first: a profile, which
    says which events a lead has seen, never lands without the deltas of those events).
    Each writer is fused with the step that produces its records (no shuffle before
    the sink)."""

    def __init__(self, sink, table):
        self.sink = sink
        self.table = table
        self.new_deltas = Metrics.counter(NAMESPACE, "sink_new_deltas")
        self.rows = Metrics.counter(NAMESPACE, "sink_rows")

    def start_bundle(self):
        self.batch, self.profiles = [], []

    def process(self, record):
        if type(record) is dict:  # a profile row; deltas and dead letters are records
            self.profiles.append(record)
        else:
            self.batch.append(record)
        if len(self.batch) + len(self.profiles) >= FLUSH_ROWS:
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        if not self.batch and not self.profiles:
            return
        # the store of the thread running this bundle: a DoFn instance set up on one
        # thread may run its bundles on others (portable workers' thread pools)
        store = shared_store(self.sink)
        if self.table == tables.DEAD_LETTERS:
            store.write({self.table: [dead_letter_row(r) for r in self.batch]})
        else:
            self.new_deltas.inc(store.write_deltas(self.batch, format_ts(now_us()),
                                                   self.profiles))
        self.rows.inc(len(self.batch) + len(self.profiles))
        self.batch, self.profiles = [], []



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


class WriteTables(beam.PTransform):
    """{'deltas', 'profiles'[, 'dead_letters']} PCollections -> the sink's tables."""

    def __init__(self, sink):
        super().__init__()
        self.sink = sink

    def expand(self, outputs):
        uri = parse_sink_uri(self.sink)
        if uri.scheme == "bigquery":
            return outputs | "BigQuery" >> WriteBigQueryTables(uri.location)
        ((outputs["deltas"], outputs["profiles"]) | "LeadRows" >> beam.Flatten()
         | "WriteLeadRows" >> beam.ParDo(WriteRowsFn(self.sink, LEAD_ROWS)))
        if "dead_letters" in outputs:
            outputs["dead_letters"] | "WriteDeadLetters" >> beam.ParDo(
                WriteRowsFn(self.sink, tables.DEAD_LETTERS))
