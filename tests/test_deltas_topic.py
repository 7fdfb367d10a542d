"""The deltas topic end to end on Google's pstest Pub/Sub server: every delta committed to
the sink (SQLite or PostgreSQL) is published at least once, as its row, with its
attributes and ordering key; a delta committed by a writer that died before publishing
it is published by the next job; a stream job killed mid-stream and started again
leaves no committed delta unpublished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from schemas import tables
from schemas.records import make_delta
from storage import open_store
from tests.helpers import SAMPLE, expected_memberships, sink_memberships
from tests.test_pipeline_batch import sample_events
from tools import parts

T = tables
ROOT = os.path.dirname(SAMPLE)
LISTS = os.path.join(SAMPLE, "lists.json")
EVENTS = os.path.join(SAMPLE, "events", "*")
COLUMNS = T.column_names(T.MEMBERSHIP_DELTAS)


def cli(*args):
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def deltas_topic():
    """A new topic with an ordered subscription on it (made before anything publishes,
    as a subscriber's would be); returns (topic, subscription)."""
    from google.cloud import pubsub_v1

    from pipeline import pubsub
    name = uuid.uuid4().hex[:8]
    topic = f"projects/test-project/topics/deltas-{name}"
    subscription = f"projects/test-project/subscriptions/deltas-{name}"
    pubsub.ensure_topic(topic)
    subscriber = pubsub_v1.SubscriberClient()
    try:
        subscriber.create_subscription(request={
            "name": subscription, "topic": topic, "enable_message_ordering": True,
            "ack_deadline_seconds": 60})
    finally:
        subscriber.close()
    return topic, subscription


def received(subscription, quiet_s=3.0):
    """Every message the subscription holds now (pulled and acknowledged until none
    comes for `quiet_s`): [(row, attributes, ordering key)]."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1
    subscriber = pubsub_v1.SubscriberClient()
    found, quiet_since = [], time.monotonic()
    try:
        while time.monotonic() - quiet_since < quiet_s:
            try:
                response = subscriber.pull(request={"subscription": subscription,
                                                    "max_messages": 1000}, timeout=5)
            except exceptions.DeadlineExceeded:
                continue
            if not response.received_messages:
                time.sleep(0.1)
                continue
            quiet_since = time.monotonic()
            for item in response.received_messages:
                message = item.message
                found.append((json.loads(message.data), dict(message.attributes),
                              message.ordering_key))
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": [
                item.ack_id for item in response.received_messages]})
    finally:
        subscriber.close()
    return found


def sink_deltas(sink):
    store = open_store(sink)
    try:
        return {row["delta_id"]: row for row in store.rows(T.MEMBERSHIP_DELTAS)}
    finally:
        store.close()


def outbox_size(sink):
    store = open_store(sink)
    try:
        return len(store.queued(1_000_000))
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def sink(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/out.db"
    return request.getfixturevalue("postgres_sink")


def test_every_committed_delta_is_published_as_its_row(pubsub_emulator, sink):
    topic, subscription = deltas_topic()
    cli("backfill", "--events", EVENTS, "--lists", LISTS, "--sink", sink,
        "--deltas_topic", topic)
    stored = sink_deltas(sink)
    messages = received(subscription)
    assert len(stored) > 100
    # at least once; in a run where nothing failed, exactly once
    assert sorted(row["delta_id"] for row, _, _ in messages) == sorted(stored)
    for row, attributes, key in messages:
        assert row == stored[row["delta_id"]]  # every column, processed_at too
        assert list(row) == COLUMNS
        assert attributes == {"tenant_id": row["tenant_id"], "list_id": row["list_id"],
                              "action": row["action"]}
        assert key == f"{row['tenant_id']}/{row['lead_id']}"
    # a lead's deltas arrive in the order they were made
    last = {}
    for row, _, key in messages:
        assert row["seq"] > last.get(key, -1), key
        last[key] = row["seq"]
    assert outbox_size(sink) == 0
    # a replay writes no new delta, so publishes none
    cli("backfill", "--events", EVENTS, "--lists", LISTS, "--sink", sink,
        "--deltas_topic", topic)
    assert received(subscription) == []


def test_deltas_a_dead_writer_left_are_published_by_the_next_job(pubsub_emulator, sink):
    topic, subscription = deltas_topic()
    store = open_store(sink)
    # a writer that committed and died before publishing: its deltas wait in the outbox
    left = store.write_queued(
        [make_delta("acme", "lead-x", "vip", True, 1_700_000_000_000_000, "e-left", 0, 1),
         make_delta("acme", "lead-x", "big", True, 1_700_000_000_000_000, "e-left", 0, 2)],
        "2026-05-01T00:00:00.000000Z")
    store.close()
    assert len(left) == 2 and outbox_size(sink) == 2
    done = cli("backfill", "--events", EVENTS, "--lists", LISTS, "--sink", sink,
               "--deltas_topic", topic)
    assert "published 2 deltas an earlier job committed" in done.stderr
    published = {row["delta_id"] for row, _, _ in received(subscription)}
    assert published == set(sink_deltas(sink))
    assert {dict(zip(COLUMNS, v))["delta_id"] for v in left} <= published
    assert outbox_size(sink) == 0


def test_a_killed_stream_job_publishes_every_delta_once_restarted(tmp_path, pubsub_emulator,
                                                                  postgres_sink):
    from tests.test_streaming_pubsub import Job, topic_name, wait_for
    _, definitions, events, _, _ = sample_events()
    topic, subscription = deltas_topic()
    events_topic = topic_name()
    extra = [*parts.runner_args("DirectRunner"), "--deltas_topic", topic]
    cli("publish", "--events", EVENTS, "--topic", events_topic)
    job = Job(tmp_path, events_topic, postgres_sink, name="first", runner=extra)
    try:
        wait_for(lambda: len(sink_deltas(postgres_sink)) > 200, 240, "some deltas", job)
    finally:
        job.kill()  # SIGKILL, mid-stream: whatever was committed and not yet published
    # the whole history once more (re-deliveries), and the job again
    cli("publish", "--events", EVENTS, "--topic", events_topic)
    job = Job(tmp_path, events_topic, postgres_sink, name="second", runner=extra)
    try:
        expected = expected_memberships(definitions, events, int(time.time() * 1e6))
        wait_for(lambda: sink_memberships(postgres_sink) == expected, 240,
                 "all memberships", job)
        published = {row["delta_id"] for row, _, _ in received(subscription)}
    finally:
        job.kill()
    published |= {row["delta_id"] for row, _, _ in received(subscription, quiet_s=1)}
    stored = sink_deltas(postgres_sink)
    assert set(stored) <= published, f"{len(set(stored) - published)} never published"
    assert published <= set(stored)
    assert outbox_size(postgres_sink) == 0


def test_a_deltas_topic_needs_a_transactional_sink(tmp_path, pubsub_emulator):
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "backfill", "--events", EVENTS, "--lists", LISTS,
         "--sink", f"jsonl:///{tmp_path}/out", "--deltas_topic",
         "projects/test-project/topics/d"], cwd=ROOT, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --deltas_topic needs")
