"""`report`: one self-contained HTML file about the lists and the sink (the dependency
graph, list sizes over time, deltas per hour by cause, dead letters by reason, the
deepest cascade chains); pipeline/pictures.py draws it."""

from __future__ import annotations

import argparse
import sys

from pipeline.options import UsageError, parse_args, write_output
from pipeline.prepare import usable_sink


def run_report(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline report")
    parser.add_argument("--lists", required=True, metavar="FILE", help="list definitions")
    parser.add_argument("--sink", required=True, metavar="URI",
                        help="sqlite:///FILE, postgresql://..., jsonl:///DIR")
    parser.add_argument("--out", required=True, metavar="FILE.html",
                        help="the report: one self-contained HTML file")
    args = parse_args(parser, argv)
    from pipeline.pictures import build_report
    from storage import open_store, parse_sink_uri
    from storage.uri import shown_uri
    from transforms.definitions import read_definitions
    try:
        uri = parse_sink_uri(args.sink)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if uri.scheme == "bigquery":
        raise UsageError("report reads SQLite, PostgreSQL and JSON Lines sinks; for "
                         "BigQuery, chart its tables where they are")
    definitions, _ = read_definitions(args.lists)
    usable_sink(args.sink, must_exist=True)  # reading: never creates an empty sink
    store = open_store(args.sink)
    try:
        page = build_report(definitions, store, args.lists, shown_uri(args.sink))
    finally:
        store.close()
    write_output(args.out, page)
    print(f"report written to {args.out} ({len(page.encode()) / 1e6:.1f} MB, "
          "self-contained: open it in any browser)", file=sys.stderr)
    return 0
