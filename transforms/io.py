"""Read change events from files: JSON Lines (optionally gzip) and Avro, by glob.

Each record leaves as (source, payload): `path:line` (or `path#record` for Avro) and the
raw bytes, so a bad record can go to the dead letters exactly as it was read.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes


class Unreadable(NamedTuple):
    """A payload that could not be read at all; parsing turns it into a dead letter."""
    reason: str
    raw: bytes = b""


def read_records(readable):
    """(source, payload bytes) of every record of one matched file."""
    path = readable.metadata.path
    if path.endswith(".avro"):
        yield from _avro_records(readable, path)
        return
    with readable.open(compression_type=CompressionTypes.AUTO) as handle:
        for number, line in enumerate(iter(handle.readline, b""), 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield f"{path}:{number}", line


def _avro_records(readable, path):
    import fastavro
    with readable.open(compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        try:
            for number, record in enumerate(fastavro.reader(handle), 1):
                clean = {k: v for k, v in record.items() if v is not None}
                yield f"{path}#{number}", json.dumps(clean, ensure_ascii=False).encode()
        except (ValueError, EOFError, OSError, StopIteration) as err:
            # a damaged file: what was read stays, the rest becomes one dead letter
            yield f"{path}#unreadable", Unreadable(f"unreadable Avro file: {err}")


class ReadEventFiles(beam.PTransform):
    """(source, payload) of every record in the files matching a glob."""

    def __init__(self, pattern):
        super().__init__()
        self.pattern = pattern

    def expand(self, pbegin):
        return (pbegin
                | "MatchFiles" >> fileio.MatchFiles(self.pattern)
                | "OpenFiles" >> fileio.ReadMatches()
                | "ReadRecords" >> beam.FlatMap(read_records)
                | "SpreadRecords" >> beam.Reshuffle())
