"""Write the output tables to the store a sink URI names.

Rows are buffered per bundle and written in one transaction (or one part file per table)
when the bundle ends or the buffer fills. The store client is made in setup(), so the
DoFn pickles as plain configuration.
"""

from __future__ import annotations

import collections

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas import tables
from storage import open_store
from storage.rows import dead_letter_row, delta_row
from transforms.evaluate import now_us
from transforms.definitions import NAMESPACE

FLUSH_ROWS = 5000


class WriteRowsFn(beam.DoFn):
    def __init__(self, sink):
        self.sink = sink
        self.new_deltas = Metrics.counter(NAMESPACE, "sink_new_deltas")
        self.rows = Metrics.counter(NAMESPACE, "sink_rows")

    def setup(self):
        self.store = open_store(self.sink)

    def start_bundle(self):
        self.batch = collections.defaultdict(list)
        self.size = 0

    def process(self, item):
        table, record = item
        self.batch[table].append(record)
        self.size += 1
        if self.size >= FLUSH_ROWS:
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        if not self.size:
            return
        stamp = now_us()
        batch = dict(self.batch)
        deltas = batch.get(tables.MEMBERSHIP_DELTAS)
        if deltas:
            batch[tables.MEMBERSHIP_DELTAS] = [delta_row(d, stamp) for d in deltas]
        dead = batch.get(tables.DEAD_LETTERS)
        if dead:
            batch[tables.DEAD_LETTERS] = [dead_letter_row(d) for d in dead]
        self.new_deltas.inc(self.store.write(batch))
        self.rows.inc(self.size)
        self.batch = collections.defaultdict(list)
        self.size = 0

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
        tagged = [
            outputs["deltas"] | "TagDeltas" >> beam.Map(
                lambda d: (tables.MEMBERSHIP_DELTAS, d)),
            outputs["dead_letters"] | "TagDeadLetters" >> beam.Map(
                lambda d: (tables.DEAD_LETTERS, d)),
            outputs["profiles"] | "TagProfiles" >> beam.Map(
                lambda r: (tables.LEAD_PROFILES, r)),
        ]
        return (tagged | "AllRows" >> beam.Flatten()
                | "Write" >> beam.ParDo(WriteRowsFn(self.sink)))
