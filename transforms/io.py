"""Read change events from files: JSON Lines (optionally gzip) and Avro, by glob.

Each record leaves as (source, payload): `path:line` (or `path#record` for Avro) and the
raw bytes, so a bad record can go to the dead letters exactly as it was read. The same
reader serves the backfill job and the `publish` command.
"""

from __future__ import annotations

import gzip
import json
import lzma
import zlib
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


# What a damaged file raises, as opposed to the storage under it (OSError in general):
# the codecs' own errors, and what fastavro raises on bytes that are not what they claim.
_DAMAGE = (zlib.error, EOFError, gzip.BadGzipFile, lzma.LZMAError, ValueError)


def _avro_damage():
    from fastavro._schema_common import SchemaParseException
    return _DAMAGE + (StopIteration, IndexError, KeyError, TypeError, AttributeError,
                      SchemaParseException)


class Unreadable(NamedTuple):
    """A payload that is not to be parsed; parsing turns it into a dead letter with
    reason `code: reason`."""
    reason: str
    raw: bytes = b""
    code: str = "unreadable"


def records_of(path, open_file):
    """(source, payload) of every record of one file; `open_file(compression)` opens it.

    A damaged file (not gzip, a corrupt gzip or Avro block, ...) keeps the records read
    before the damage, and the rest becomes one dead letter: the job goes on. Errors of
    the storage itself (a connection reset on gs://, a missing file) are not damage: they
    fail the bundle, and the runner reads the file again. (A gzip file cut short ends
    without an error in Beam's reader: its last line, if cut, is a `not_json` dead letter.)
    """
    if path.endswith(".avro"):
        yield from _avro_records(path, open_file)
        return
    number = 0
    try:
        with open_file(CompressionTypes.AUTO) as handle:
            for number, line in enumerate(iter(handle.readline, b""), 1):
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield f"{path}:{number}", line
    except _DAMAGE as err:
        yield f"{path}:unreadable", Unreadable(
            f"unreadable file after line {number}: {type(err).__name__}: {err}"[:500])


def _avro_records(path, open_file):
    import fastavro
    number = 0
    try:
        with open_file(CompressionTypes.UNCOMPRESSED) as handle:
            for number, record in enumerate(fastavro.reader(handle), 1):
                clean = {k: v for k, v in record.items() if v is not None}
                yield f"{path}#{number}", json.dumps(clean, ensure_ascii=False,
                                                     default=_json_value).encode()
    except _avro_damage() as err:  # a damaged file: what was read stays
        yield f"{path}#unreadable", Unreadable(
            f"unreadable Avro file after record {number}: {type(err).__name__}: "
            f"{err}"[:500])


def _json_value(value):
    """JSON for the values Avro's logical types give (timestamps, dates, decimals)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()  # an aware datetime: RFC 3339
    return str(value)


def read_records(readable):
    """Records of a file matched by fileio (the backfill job), counted for the launcher's
    progress line when it asked for one (transforms/progress.py)."""
    from transforms.progress import counter
    path = readable.metadata.path
    records = records_of(path, lambda compression: readable.open(compression_type=compression))
    progress = counter()
    if progress is None:
        return records
    return _counted(records, progress)


def _counted(records, progress):
    for record in records:
        progress.record()
        yield record
    progress.file_done()


def matching_files(pattern):
    """Paths matching a glob, sorted (local or any Beam filesystem)."""
    found = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in found)


def records_of_glob(pattern):
    """Records of every file matching a glob, file by file (the publish command)."""
    for path in matching_files(pattern):
        yield from records_of(path, lambda compression, path=path: FileSystems.open(
            path, compression_type=compression))


class ReadEventFiles(beam.PTransform):
    """(source, payload) of every record in the files matching a glob.

    A file is the unit of parallel reading (records are grouped by lead right after
    parsing anyway); a large history reads faster as several files.
    """

    def __init__(self, pattern):
        super().__init__()
        self.pattern = pattern

    def expand(self, pbegin):
        return (pbegin
                | "MatchFiles" >> fileio.MatchFiles(self.pattern)
                | "OpenFiles" >> fileio.ReadMatches()
                | "ReadRecords" >> beam.FlatMap(read_records))
