"""Parse and check sink URIs, with one-line errors for the command line; the error a
store raises for a sink it must not use. (No store is imported here: the stores import
this.)"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_BQ = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]\.[A-Za-z0-9_]{1,1024}$")


class SinkUri(NamedTuple):
    scheme: str     # sqlite | jsonl | bigquery | postgresql
    location: str   # file path, directory, PROJECT.DATASET, or the whole PostgreSQL URI


def parse_sink_uri(text):
    """A SinkUri, or ValueError with a sentence saying what a sink URI looks like."""
    scheme, sep, rest = (text or "").partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        split_uri(text)
        return SinkUri("postgresql", text)
    if not sep or scheme not in ("sqlite", "jsonl", "bigquery"):
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


class IncompatibleSink(Exception):
    """A sink that exists but that this version must not read or write: made by a newer
    version, or not a dynlists sink at all. `reason` is a sentence saying so and what to
    do; the file is left as it was."""

    def __init__(self, location, reason):
        super().__init__(f"{location}: {reason}")
        self.location, self.reason = location, reason


_SCHEMES = ("postgresql", "postgres")


def split_uri(text):
    """(write conninfo, read conninfo or None, the URI with its password hidden) of a
    sink URI; ValueError with a sentence when it is not one."""
    parts = urlsplit(text)
    if parts.scheme not in _SCHEMES or not parts.hostname or not parts.path.strip("/"):
        raise ValueError(f"bad PostgreSQL sink {shown_uri(text)!r}: use "
                         "postgresql://USER@HOST:PORT/DATABASE[?read_host=HOST&read_port=PORT]")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    read_host, read_port = query.pop("read_host", None), query.pop("read_port", None)
    if read_port is not None and not read_port.isdigit():
        raise ValueError(f"bad PostgreSQL sink {shown_uri(text)!r}: read_port must be a "
                         "port number")
    write = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))
    read = None
    if read_host or read_port:
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0] + "@" if len(netloc) == 2 else ""
        host = read_host or parts.hostname
        host = f"[{host}]" if ":" in host else host
        port = read_port or (str(parts.port) if parts.port else "")
        read = urlunsplit(("postgresql", f"{user}{host}{':' + port if port else ''}",
                           parts.path, urlencode(query), ""))
    return write, read, shown_uri(text)


def shown_uri(text):
    """The URI with any password replaced by ***, for messages."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", text or "")
