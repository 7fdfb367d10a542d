"""Parse and check sink URIs, with one-line errors for the command line."""

from __future__ import annotations

import re
from typing import NamedTuple

_BQ = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]\.[A-Za-z0-9_]{1,1024}$")


class SinkUri(NamedTuple):
    scheme: str     # sqlite | jsonl | bigquery | postgresql
    location: str   # file path, directory, PROJECT.DATASET, or the whole PostgreSQL URI


def parse_sink_uri(text):
    """A SinkUri, or ValueError with a sentence saying what a sink URI looks like."""
    scheme, sep, rest = (text or "").partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        from storage.postgres import split_uri
        split_uri(text)
        return SinkUri("postgresql", text)
    if not sep or scheme not in ("sqlite", "jsonl", "bigquery"):
        from storage.postgres import shown_uri
        raise ValueError(f"unsupported sink {shown_uri(text)!r}: use "
                         "sqlite:///path/to/file.db, jsonl:///path/to/dir, "
                         "postgresql://USER@HOST:PORT/DB or bigquery://PROJECT.DATASET")
    if scheme == "bigquery":
        if not _BQ.match(rest):
            raise ValueError(f"bad BigQuery sink {text!r}: use bigquery://PROJECT.DATASET")
        return SinkUri(scheme, rest)
    # sqlite:///abs/path.db is absolute (URI style); sqlite://rel/path.db is relative
    if not rest or rest.endswith("/") and scheme == "sqlite":
        raise ValueError(f"bad sink {text!r}: name a file, e.g. sqlite:///tmp/lists.db")
    return SinkUri(scheme, rest)
