"""What a job command does before its job starts: the sink opens (and has its tables or
BigQuery's views), the deltas topic exists and an earlier job's outbox is published."""

from __future__ import annotations

import sys


def usable_sink(sink, must_exist):
    """UsageError unless the sink opens (see storage.check_sink)."""
    from pipeline.options import UsageError
    from storage import check_sink
    try:
        check_sink(sink, must_exist)
    except ValueError as err:
        raise UsageError(str(err)) from None


def prepare_sink(sink):
    """Before a job writes: the sink opens (SQLite, JSON Lines), BigQuery has its
    dataset and views in place."""
    from storage import parse_sink_uri
    uri = parse_sink_uri(sink)
    usable_sink(uri, must_exist=False)
    if uri.scheme == "bigquery":
        from storage.bigquery import ensure_views
        ensure_views(*uri.location.split(".", 1))


def prepare_deltas_topic(topic, sink):
    """Before a job that publishes deltas: the topic exists (created if missing), the
    sink has an outbox, and deltas an earlier job left in it are published now."""
    if not topic:
        return
    from pipeline import pubsub
    from pipeline.options import UsageError
    from storage import open_store, parse_sink_uri
    from storage.topic import drain
    try:
        pubsub.check_topic(topic)
    except ValueError as err:
        raise UsageError(f"--deltas_topic: {err}") from None
    scheme = parse_sink_uri(sink).scheme
    if scheme not in ("sqlite", "postgresql"):
        raise UsageError(f"--deltas_topic needs a sqlite or postgresql sink, whose "
                         f"transactions publish only committed deltas; not {scheme}")
    pubsub.ensure_topic(topic)
    store = open_store(sink)
    try:
        left = pubsub._admin(lambda: drain(store, topic), f"publishing to {topic}")
    finally:
        store.close()
    if left:
        print(f"published {left} deltas an earlier job committed but had not published",
              file=sys.stderr)

