"""`backfill`: event files into the sink, in one batch job."""

from __future__ import annotations

import logging
import time

from pipeline.options import job_options, parse_time_arg
from pipeline.prepare import prepare_deltas_topic, prepare_sink
from pipeline.summary import print_summary
from transforms.progress import Progress


def run_backfill(argv):
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from pipeline.graph import build_backfill
    from pipeline.options import UsageError
    from transforms.definitions import read_definitions
    options, ours = job_options(argv, "events", "lists", "sink", command="backfill")
    as_of = parse_time_arg(ours.as_of, "as_of") if ours.as_of else None
    _, doc = read_definitions(ours.lists)
    try:
        matched = FileSystems.match([ours.events])[0].metadata_list
    except Exception as err:  # noqa: BLE001 - any filesystem error is one line for the user
        raise UsageError(f"cannot list --events {ours.events!r}: {err}") from None
    if not matched:
        raise UsageError(f"no event files match {ours.events!r}")
    logging.getLogger().setLevel(logging.WARNING)
    started = time.time()
    prepare_sink(ours.sink)
    prepare_deltas_topic(ours.deltas_topic, ours.sink)
    pipeline = beam.Pipeline(options=options)
    build_backfill(pipeline, ours.events, doc, ours.sink, as_of, ours.deltas_topic)
    with Progress(len(matched)):  # records read and rate, on a terminal
        result = pipeline.run()
        result.wait_until_finish()
    return print_summary(result, ours.sink, time.time() - started)

