"""Read change events (and definition sweeps) from a Pub/Sub subscription.

A message's data is one event's JSON; its source is `pubsub:<subscription>:<message id>`,
so a re-delivered bad message gets the same dead-letter id. A message with the attribute
`dynlists_control=sweep` is not an event: it asks for some leads to be re-evaluated
against new definitions, and leaves as keyed Sweep elements on the 'sweeps' output.
Nothing here knows whether it talks to Pub/Sub or an emulator (PUBSUB_EMULATOR_HOST).
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam import pvalue

from schemas.records import Sweep, lead_key

CONTROL_ATTRIBUTE = "dynlists_control"
RECORDS = "records"
SWEEPS = "sweeps"


def sweep_message(version, leads, text=None):
    """(data, attributes) of a sweep message for (tenant, lead) pairs."""
    body = {"version": version, "leads": [list(pair) for pair in leads]}
    if text is not None:
        body["definitions"] = text
    return json.dumps(body).encode(), {CONTROL_ATTRIBUTE: "sweep"}


class SplitMessages(beam.DoFn):
    def __init__(self, subscription):
        self.subscription = subscription

    def process(self, message):
        if (message.attributes or {}).get(CONTROL_ATTRIBUTE) == "sweep":
            try:
                body = json.loads(message.data)
                sweep = Sweep(body["version"], body.get("definitions"))
                leads = body["leads"]
            except (ValueError, KeyError, TypeError):
                yield (f"pubsub:{self.subscription}:{message.message_id}", message.data)
                return
            for tenant, lead in leads:
                yield pvalue.TaggedOutput(SWEEPS, (lead_key(tenant, lead), sweep))
            return
        yield (f"pubsub:{self.subscription}:{message.message_id}", message.data)


class ReadPubSubRecords(beam.PTransform):
    """-> (source, payload) records (main) and keyed sweeps ('sweeps')."""

    def __init__(self, subscription):
        super().__init__()
        self.subscription = subscription

    def expand(self, pbegin):
        return (pbegin
                | "ReadPubSub" >> beam.io.ReadFromPubSub(subscription=self.subscription,
                                                         with_attributes=True)
                | "SplitControl" >> beam.ParDo(SplitMessages(self.subscription)).with_outputs(
                    SWEEPS, main=RECORDS))
