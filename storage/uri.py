"""Parse and check sink URIs, with one-line errors for the command line."""

from __future__ import annotations

import re
from typing import NamedTuple

_BQ = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]\.[A-Za-z0-9_]{1,1024}$")


class SinkUri(NamedTuple):
    scheme: str     # sqlite | jsonl | bigquery
    location: str   # file path, directory, or PROJECT.DATASET


def parse_sink_uri(text):
    """A SinkUri, or ValueError with a sentence saying what a sink URI looks like."""
    scheme, sep, rest = (text or "").partition("://")
    if not sep or scheme not in ("sqlite", "jsonl", "bigquery"):
        raise ValueError(f"unsupported sink {text!r}: use sqlite:///path/to/file.db, "
                         "jsonl:///path/to/dir or bigquery://PROJECT.DATASET")
    if scheme == "bigquery":
        if not _BQ.match(rest):
            raise ValueError(f"bad BigQuery sink {text!r}: use bigquery://PROJECT.DATASET")
        return SinkUri(scheme, rest)
    # sqlite:///abs/path.db is absolute (URI style); sqlite://rel/path.db is relative
    if not rest or rest.endswith("/") and scheme == "sqlite":
        raise ValueError(f"bad sink {text!r}: name a file, e.g. sqlite:///tmp/lists.db")
    return SinkUri(scheme, rest)
