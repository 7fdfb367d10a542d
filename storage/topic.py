"""The deltas topic (--deltas_topic): every delta committed to the sink, published to
Pub/Sub after its commit, at least once.

A batch's new deltas go into the sink's outbox (`delta_outbox`) in the transaction that
writes them. Once it has committed they are published, and once Pub/Sub has taken them
they leave the outbox. A writer that dies between the commit and the end of the publish
leaves them there: a job publishes what the outbox holds when it starts (`drain`), and
running writers publish what has waited longer than STALE_SECONDS (a writer that died
while its job goes on). A delta can so be published more than once, never not at all;
subscribers de-duplicate by `delta_id`.

A message: data, the delta's row as JSON (the membership_deltas columns); attributes
`tenant_id`, `list_id`, `action`; ordering key `tenant_id/lead_id` (a tenant id holds no
'/'), so a subscription with message ordering gets a lead's deltas in the order they
were published. Nothing here knows whether it talks to Pub/Sub or an emulator
(PUBSUB_EMULATOR_HOST).
"""

from __future__ import annotations

import json
import os
import threading
import time

from schemas.values import format_ts
from schemas import tables

COLUMNS = tuple(tables.column_names(tables.MEMBERSHIP_DELTAS))
STALE_SECONDS = 30.0
DRAIN_BATCH = 1000
PUBLISH_TIMEOUT_S = 120
_PUBLISHERS = {}
_LOCK = threading.Lock()
_SWEPT = {}


def message(values):
    """(data, attributes, ordering key) of the delta whose row is `values`."""
    row = dict(zip(COLUMNS, values))
    data = json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()
    attributes = {"tenant_id": row["tenant_id"], "list_id": row["list_id"],
                  "action": row["action"]}
    return data, attributes, f"{row['tenant_id']}/{row['lead_id']}"


def _publisher():
    """This process's publisher client (ordering on; batches of up to 1,000 messages or
    10 ms)."""
    from google.cloud import pubsub_v1
    key = os.getpid()
    with _LOCK:
        client = _PUBLISHERS.get(key)
        if client is None:
            client = _PUBLISHERS[key] = pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000,
                                                             max_latency=0.01),
                publisher_options=pubsub_v1.types.PublisherOptions(
                    enable_message_ordering=True))
    return client


def publish(topic, rows):
    """Publish the deltas of `rows` and wait until Pub/Sub has taken every one; raises
    the first error (after letting the failed ordering keys publish again)."""
    client = _publisher()
    sent = []
    for values in rows:
        data, attributes, key = message(values)
        sent.append((key, client.publish(topic, data, ordering_key=key, **attributes)))
    failed, error = set(), None
    for key, future in sent:
        try:
            future.result(timeout=PUBLISH_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - re-raised below, once keys resume
            failed.add(key)
            error = error or err
    for key in failed:
        # a key whose publish failed is paused until resumed; its deltas stay in the
        # outbox and go again
        client.resume_publish(topic, key)
    if error is not None:
        raise error


def drain(store, topic, written_before=None):
    """Publish and take out of the outbox every delta in it (written before
    `written_before`, RFC 3339, when given); returns how many."""
    count = 0
    while True:
        rows = store.queued(DRAIN_BATCH, written_before)
        if not rows:
            return count
        publish(topic, rows)
        store.unqueue(rows)
        count += len(rows)


def publish_committed(store, topic, rows):
    """After a write's commit: publish its new deltas, take them out of the outbox, and
    now and then publish those another writer left there."""
    if rows:
        publish(topic, rows)
        store.unqueue(rows)
    now = time.monotonic()
    key = (os.getpid(), id(store))
    if now - _SWEPT.setdefault(key, now) >= STALE_SECONDS:
        _SWEPT[key] = now
        drain(store, topic, format_ts(int((time.time() - STALE_SECONDS) * 1e6)))
