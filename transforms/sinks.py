"""Write the output tables to the store a sink URI names.

Rows are buffered per bundle and written in one transaction (or one part file per table)
when the bundle ends or the buffer fills. The store client is made in setup(), so the
DoFn pickles as plain configuration.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas import tables
from storage import open_store
from storage.rows import dead_letter_row, delta_row
from transforms.evaluate import now_us
from transforms.definitions import NAMESPACE

FLUSH_ROWS = 5000


class WriteRowsFn(beam.DoFn):
    """Writes the records of one table; one instance per table keeps each writer fused
    with the step that produces its records (no shuffle before the sink)."""

    _ROWS = {tables.MEMBERSHIP_DELTAS: delta_row,
             tables.DEAD_LETTERS: lambda dead, stamp: dead_letter_row(dead),
             tables.LEAD_PROFILES: lambda row, stamp: row}

    def __init__(self, sink, table):
        self.sink = sink
        self.table = table
        self.new_deltas = Metrics.counter(NAMESPACE, "sink_new_deltas")
        self.rows = Metrics.counter(NAMESPACE, "sink_rows")

    def setup(self):
        self.store = open_store(self.sink)
        self.to_row = self._ROWS[self.table]

    def start_bundle(self):
        self.batch = []

    def process(self, record):
        self.batch.append(record)
        if len(self.batch) >= FLUSH_ROWS:
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        if not self.batch:
            return
        stamp = now_us()
        rows = [self.to_row(record, stamp) for record in self.batch]
        new = self.store.write({self.table: rows})
        if self.table == tables.MEMBERSHIP_DELTAS:
            self.new_deltas.inc(new)
        self.rows.inc(len(rows))
        self.batch = []

    def teardown(self):
        store = getattr(self, "store", None)
        if store is not None:
            store.close()


class WriteTables(beam.PTransform):
    """{'deltas', 'dead_letters', 'profiles'} PCollections -> the sink's tables."""

    def __init__(self, sink):
        super().__init__()
        self.sink = sink

    def expand(self, outputs):
        for name, table, label in (("deltas", tables.MEMBERSHIP_DELTAS, "WriteDeltas"),
                                   ("dead_letters", tables.DEAD_LETTERS, "WriteDeadLetters"),
                                   ("profiles", tables.LEAD_PROFILES, "WriteProfiles")):
            outputs[name] | label >> beam.ParDo(WriteRowsFn(self.sink, table))
