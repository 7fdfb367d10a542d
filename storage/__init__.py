"""Where the output tables live: a sink URI opens a store (no Beam in here).

`sqlite:///path.db` (the embedded default), `jsonl:///dir` (files),
`postgresql://USER@HOST:PORT/DB` (a shared server, with an optional read replica) and
`bigquery://PROJECT.DATASET` (production on Google Cloud). A store writes batches of rows in one
transaction where it can, and reads the tables back for summaries, `explain` and
`reconcile`.
"""

import threading

from storage.uri import IncompatibleSink, SinkUri, parse_sink_uri  # noqa: F401 - the package's names

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
    if sink.scheme == "postgresql":
        from storage.postgres import PostgresStore
        return PostgresStore(sink.location)
    from storage.bigquery import BigQueryStore
    return BigQueryStore(sink.location)


def check_sink(uri, must_exist):
    """ValueError (one sentence) unless the sink can be opened and used: a job's sink is
    created when missing, the sink a command reads (`explain`, `reconcile`) must exist,
    and a sink of an older layout is brought up to date (IncompatibleSink if it cannot
    be)."""
    import os
    import sqlite3
    sink = uri if isinstance(uri, SinkUri) else parse_sink_uri(uri)
    if sink.scheme == "bigquery":
        return
    if sink.scheme == "postgresql":
        return _check_postgres(sink.location, must_exist)
    path = sink.location
    uri = f"{sink.scheme}://{path}"
    if must_exist and not os.path.exists(path):
        kind = "SQLite file" if sink.scheme == "sqlite" else "folder"
        raise ValueError(f"no sink at {uri}: the {kind} {path} does not exist")
    if sink.scheme == "sqlite" and os.path.isdir(path):
        raise ValueError(f"bad sink {uri}: {path} is a folder, not an SQLite file")
    if sink.scheme == "jsonl" and os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"bad sink {uri}: {path} is a file, not a folder")
    try:
        store = open_store(sink)
        if hasattr(store, "close"):
            store.close()
    except IncompatibleSink as err:
        raise ValueError(f"cannot use sink {uri}: {err.reason}") from None
    except (OSError, sqlite3.Error) as err:
        raise ValueError(f"cannot open sink {uri}: {err}") from None


def _check_postgres(uri, must_exist):
    import psycopg
    from storage.postgres import PostgresStore
    from storage.uri import shown_uri
    try:
        # a job's sink (not must_exist) is written: its primary must answer
        PostgresStore(uri, create=not must_exist, primary_only=not must_exist).close()
    except FileNotFoundError:
        raise ValueError(f"no sink at {shown_uri(uri)}: the database has no dynlists "
                         "tables") from None
    except IncompatibleSink as err:
        raise ValueError(f"cannot use sink {shown_uri(uri)}: {err.reason}") from None
    except psycopg.Error as err:
        why = " ".join(str(err).split())  # libpq's messages span lines
        raise ValueError(f"cannot open sink {shown_uri(uri)}: {why}") from None


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


__all__ = ["IncompatibleSink", "SinkUri", "check_sink", "open_store", "parse_sink_uri",
           "shared_store"]
