"""Parse raw records into ChangeEvents; bad ones become dead letters with a reason.

Validation needs the definitions (known tenant, declared static list), so they come in
as the side input. Nothing is dropped: every record read leaves as an event or as a
dead letter, and counters say how many of each (and why).
"""

from __future__ import annotations

import time

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from schemas.events import InvalidEvent, parse_event
from schemas.records import make_dead_letter
from transforms.definitions import NAMESPACE, shared_cache
from transforms.io import Unreadable

EVENTS = "events"
DEAD_LETTERS = "dead_letters"


def payload_text(payload):
    if isinstance(payload, Unreadable):
        payload = payload.raw
    if isinstance(payload, (bytes, bytearray)):
        return payload.decode("utf-8", "backslashreplace")
    return payload


class ParseEventFn(beam.DoFn):
    """Batch passes the definitions as a side input; streaming names the file to poll."""

    def __init__(self, lists_path=None, refresh_seconds=None):
        self.lists_path = lists_path
        self.refresh = refresh_seconds
        self.read = Metrics.counter(NAMESPACE, "records_read")
        self.valid = Metrics.counter(NAMESPACE, "events_valid")
        self.dead = Metrics.counter(NAMESPACE, "dead_letters")
        self.reasons = {}

    def setup(self):
        self.cache = shared_cache(self.lists_path, self.refresh)

    def process(self, record, doc=None):
        source, payload = record
        self.read.inc()
        try:
            if isinstance(payload, Unreadable):
                raise InvalidEvent(payload.code, payload.reason)
            processor = self.cache.get(doc) if doc is not None else self.cache.current()
            event = parse_event(payload, processor.definitions)
        except InvalidEvent as bad:
            self.dead.inc()
            counter = self.reasons.get(bad.code)
            if counter is None:
                counter = self.reasons[bad.code] = Metrics.counter(
                    NAMESPACE, f"dead_letter_{bad.code}")
            counter.inc()
            yield pvalue.TaggedOutput(DEAD_LETTERS, make_dead_letter(
                source, f"{bad.code}: {bad.message}", payload_text(payload),
                int(time.time() * 1_000_000)))
            return
        self.valid.inc()
        yield event


class ParseEvents(beam.PTransform):
    """(source, payload) -> events (main output) and dead letters ('dead_letters').

    `definitions` is the side-input PCollection (batch) or a (path, refresh seconds)
    pair naming the file each worker polls (streaming).
    """

    def __init__(self, definitions):
        super().__init__()
        self.definitions = definitions

    def expand(self, records):
        if isinstance(self.definitions, tuple):
            parse = beam.ParDo(ParseEventFn(*self.definitions))
        else:
            parse = beam.ParDo(ParseEventFn(), beam.pvalue.AsSingleton(self.definitions))
        return records | "Validate" >> parse.with_outputs(DEAD_LETTERS, main=EVENTS)
