"""Where the output tables live: a sink URI opens a store (no Beam in here).

`sqlite:///path.db` (the embedded default), `jsonl:///dir` (files) and
`bigquery://PROJECT.DATASET` (production). A store writes batches of rows in one
transaction where it can, and reads the tables back for summaries, `explain` and
`reconcile`.
"""

import threading

from storage.uri import SinkUri, parse_sink_uri

_SHARED = {}


def open_store(uri):
    """The store behind a sink URI (text or SinkUri), opened for reading and writing."""
    sink = uri if isinstance(uri, SinkUri) else parse_sink_uri(uri)
    if sink.scheme == "sqlite":
        from storage.sqlite import SqliteStore
        return SqliteStore(sink.location)
    if sink.scheme == "jsonl":
        from storage.jsonl import JsonlStore
        return JsonlStore(sink.location)
    from storage.bigquery import BigQueryStore
    return BigQueryStore(sink.location)


def shared_store(uri):
    """A store for this thread of this process, opened once and kept open.

    Workers use it instead of opening a store per DoFn instance: some runners make a
    new instance for every bundle, and a connection per bundle would dominate. One per
    thread, because a SQLite connection must not be used by two threads at once.
    """
    key = (str(uri), threading.get_ident())
    store = _SHARED.get(key)
    if store is None:
        store = _SHARED[key] = open_store(uri)
    return store


__all__ = ["SinkUri", "open_store", "parse_sink_uri", "shared_store"]
