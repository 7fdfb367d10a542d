"""Where the output tables live: a sink URI opens a store (no Beam in here).

`sqlite:///path.db` (the embedded default), `jsonl:///dir` (files) and
`bigquery://PROJECT.DATASET` (production). A store writes batches of rows in one
transaction where it can, and reads the tables back for summaries, `explain` and
`reconcile`.
"""

from storage.uri import SinkUri, parse_sink_uri


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


__all__ = ["SinkUri", "open_store", "parse_sink_uri"]
