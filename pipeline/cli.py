"""The command line: validate, backfill, stream, explain (SPEC section 6).

Each command checks its arguments before doing anything and reports a problem as one
line on stderr (exit status 2 for usage, 1 for a bad definition file or a failed run);
no traceback reaches the user for bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from rules import DefinitionError
from rules.values import parse_timestamp

COMMANDS = ("backfill", "stream", "explain", "validate", "publish", "sweep", "reconcile")
USAGE = """usage: python -m pipeline COMMAND [options]

commands:
  backfill --events GLOB --lists FILE --sink URI [--as_of TS] [Beam options]
  stream   --subscription projects/P/subscriptions/S --lists FILE --sink URI [Beam options]
           (or --topic projects/P/topics/T to read through a subscription of its own;
           sweeps from --control_subscription, default S-control; Ctrl-C drains)
  explain  --lists FILE --sink URI --tenant T --lead L [--list X] [--as_of TS]
  validate --lists FILE
  publish  --events GLOB --topic projects/P/topics/T [--rate N]
  sweep    --lists FILE --sink URI --control_topic projects/P/topics/T
  reconcile --lists FILE --sink URI [--fix] [--as_of TS] [--report_dir DIR] [Beam options]

COMMAND --help: its options; COMMAND --help-beam: Beam's too
"""


def _error(message, status=2):
    print(f"error: {message}", file=sys.stderr)
    return status


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _error(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
    from pipeline.options import UsageError
    try:
        return globals()[f"cmd_{command}"](rest)
    except UsageError as err:
        return _error(str(err))
    except DefinitionError as err:
        for line in err.errors:
            print(f"error: {line}", file=sys.stderr)
        return 1
    except HelpShown:
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - only a missing credential is turned into a line
        if not _no_credentials(err):
            raise
        return _error("no Google Cloud credentials (Pub/Sub, BigQuery, gs:// need them): "
                      "run `gcloud auth application-default login`, or point "
                      "PUBSUB_EMULATOR_HOST at a Pub/Sub emulator", 1)
    except BrokenPipeError:  # output piped into `head` and friends
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout must stay usable
        return 0


def _no_credentials(err):
    try:
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:
        return False
    return isinstance(err, DefaultCredentialsError)


# -- validate ---------------------------------------------------------------------------
def cmd_validate(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline validate")
    parser.add_argument("--lists", required=True)
    args = _parse(parser, argv)
    from transforms.definitions import read_definitions
    definitions, _ = read_definitions(args.lists)
    count = sum(len(t.lists) for t in definitions.tenants.values())
    print(f"{args.lists}: OK, version {definitions.version}, "
          f"{len(definitions.tenants)} tenant(s), {count} list(s)")
    for tid in sorted(definitions.tenants):
        tenant = definitions.tenants[tid]
        print(f"tenant {tid}: {len(tenant.lists)} list(s) in dependency order")
        for i, lid in enumerate(tenant.order, 1):
            definition = tenant.lists[lid]
            refs = sorted(set(definition.references()))
            note = "static" if definition.static else (
                f"after {', '.join(refs)}" if refs else "")
            print(f"  {i:>4}. {lid}" + (f"  ({note})" if note else ""))
    return 0


def _parse(parser, argv):
    from pipeline.options import UsageError

    def fail(message):
        raise UsageError(message)
    parser.error = fail
    return parser.parse_args(argv)


# -- backfill ---------------------------------------------------------------------------
class HelpShown(Exception):
    """--help or --help-beam was printed: the command ends there (exit 0)."""


def _job_options(argv, *required, command=None):
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipeline.options import (DynListsOptions, beam_help, check_arguments, command_help,
                                  require)
    from storage import parse_sink_uri
    if "--help-beam" in argv:
        print(beam_help(command), end="")
        raise HelpShown
    if "-h" in argv or "--help" in argv:
        print(command_help(command), end="")
        raise HelpShown
    check_arguments(argv)
    options = PipelineOptions(argv)
    ours = options.view_as(DynListsOptions)
    require(ours, *required)
    try:
        parse_sink_uri(ours.sink)
    except ValueError as err:
        from pipeline.options import UsageError
        raise UsageError(str(err)) from None
    return options, ours


def usable_sink(sink, must_exist):
    """UsageError unless the sink opens (see storage.check_sink)."""
    from pipeline.options import UsageError
    from storage import check_sink
    try:
        check_sink(sink, must_exist)
    except ValueError as err:
        raise UsageError(str(err)) from None


def prepare_sink(sink):
    """Before a job writes: the sink opens (SQLite, JSON Lines), BigQuery has its
    dataset and views in place."""
    from storage import parse_sink_uri
    uri = parse_sink_uri(sink)
    usable_sink(uri, must_exist=False)
    if uri.scheme == "bigquery":
        from storage.bigquery import ensure_views
        ensure_views(*uri.location.split(".", 1))


def prepare_deltas_topic(topic, sink):
    """Before a job that publishes deltas: the topic exists (created if missing), the
    sink has an outbox, and deltas an earlier job left in it are published now."""
    if not topic:
        return
    from pipeline import pubsub
    from pipeline.options import UsageError
    from storage import open_store, parse_sink_uri
    from storage.topic import drain
    try:
        pubsub.check_topic(topic)
    except ValueError as err:
        raise UsageError(f"--deltas_topic: {err}") from None
    scheme = parse_sink_uri(sink).scheme
    if scheme not in ("sqlite", "postgresql"):
        raise UsageError(f"--deltas_topic needs a sqlite or postgresql sink, whose "
                         f"transactions publish only committed deltas; not {scheme}")
    pubsub.ensure_topic(topic)
    store = open_store(sink)
    try:
        left = pubsub._admin(lambda: drain(store, topic), f"publishing to {topic}")
    finally:
        store.close()
    if left:
        print(f"published {left} deltas an earlier job committed but had not published",
              file=sys.stderr)


def _timestamp(text, name):
    from pipeline.options import UsageError
    try:
        return parse_timestamp(text)
    except ValueError:
        raise UsageError(f"--{name} {text!r} is not an RFC 3339 timestamp "
                         "(e.g. 2026-06-01T00:00:00Z)") from None


def cmd_backfill(argv):
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from pipeline.graph import build_backfill
    from pipeline.options import UsageError
    from transforms.definitions import read_definitions
    options, ours = _job_options(argv, "events", "lists", "sink", command="backfill")
    as_of = _timestamp(ours.as_of, "as_of") if ours.as_of else None
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
    result = pipeline.run()
    result.wait_until_finish()
    return print_summary(result, ours.sink, time.time() - started)


# -- summary ----------------------------------------------------------------------------
def job_counters(result):
    """{counter name: value} of the project's counters in a finished job."""
    from apache_beam.metrics.metric import MetricsFilter
    from transforms.definitions import NAMESPACE
    totals = {}
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for counter in found["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    for dist in found["distributions"]:
        value = dist.committed or dist.attempted
        if value is not None and value.count:
            totals[dist.key.metric.name] = value
    return totals


def print_summary(result, sink, seconds):
    counts = job_counters(result)
    read = counts.get("records_read", 0)
    applied, stale = counts.get("events_applied", 0), counts.get("events_stale", 0)
    duplicates, dead = counts.get("events_duplicate", 0), counts.get("dead_letters", 0)
    reasons = {k[len("dead_letter_"):]: v for k, v in counts.items()
               if k.startswith("dead_letter_") and v}
    print(f"job finished in {seconds:.1f}s ({read / max(seconds, 1e-9):,.0f} records/s)")
    print(f"records read:   {read}")
    print(f"  applied:      {applied + stale}"
          + (f" ({stale} older than a deletion, no effect)" if stale else ""))
    print(f"  duplicates:   {duplicates}")
    print(f"  dead letters: {dead}"
          + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})"
             if reasons else ""))
    balanced = read == applied + stale + duplicates + dead
    print(f"  accounted:    {'yes' if balanced else 'NO'} "
          f"(read = applied + duplicates + dead letters)")
    print(f"deltas this run: {counts.get('deltas_added', 0)} added, "
          f"{counts.get('deltas_removed', 0)} removed; "
          f"{counts.get('sink_new_deltas', 0)} new rows in the sink")
    depth, engine = counts.get("cascade_depth"), counts.get("engine_us_per_event")
    if depth is not None:
        print(f"cascade depth: mean {depth.mean:.2f}, max {depth.max}")
    if engine is not None:
        print(f"engine time: mean {engine.mean:,.0f} µs per event, max {engine.max:,} µs "
              f"(per lead history)")
    if counts.get("timers_fired"):
        print(f"timers fired: {counts['timers_fired']}")
    print_sink_summary(sink)
    return 0 if balanced else 1


def print_sink_summary(sink):
    """What the sink holds: deltas, memberships, the largest lists."""
    from schemas import tables
    from storage import open_store
    store = open_store(sink)
    try:
        totals = store.delta_counts()
        print(f"sink {sink}: {totals.get('added', 0)} added / {totals.get('removed', 0)} "
              f"removed deltas in all, {store.count(tables.LIST_MEMBERSHIPS)} memberships now")
        sizes = store.list_sizes()[:10]
        if sizes:
            print("largest lists:")
            for tenant, lid, size in sizes:
                print(f"  {size:>8}  {tenant} / {lid}")
    finally:
        store.close()


# -- explain ----------------------------------------------------------------------------
def cmd_explain(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline explain")
    for name in ("lists", "sink", "tenant", "lead"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--list")
    parser.add_argument("--as_of")
    args = _parse(parser, argv)
    from pipeline.options import UsageError
    from rules import explain_lead
    from storage import open_store, parse_sink_uri
    from storage.rows import state_from_row
    from transforms.definitions import read_definitions
    try:
        parse_sink_uri(args.sink)
    except ValueError as err:
        raise UsageError(str(err)) from None
    definitions, _ = read_definitions(args.lists)
    tenant = definitions.tenant(args.tenant)
    if tenant is None:
        raise UsageError(f"tenant {args.tenant!r} is not in {args.lists}")
    if args.list and args.list not in tenant.lists:
        raise UsageError(f"tenant {args.tenant} has no list {args.list!r}")
    usable_sink(args.sink, must_exist=True)  # reading: never creates an empty sink
    store = open_store(args.sink)
    try:
        row = store.profile(args.tenant, args.lead)
    finally:
        store.close()
    if row is None:
        raise UsageError(f"no profile of lead {args.lead!r} of tenant {args.tenant!r} "
                         f"in {args.sink}")
    state = state_from_row(row)
    now = _timestamp(args.as_of, "as_of") if args.as_of else (state.clock or 0)
    print(f"lead {args.lead} of tenant {args.tenant}, "
          f"{len(state.members)} stored membership(s)")
    print(explain_lead(tenant, state.profile(), now, args.list))
    return 0


def cmd_stream(argv):
    from pipeline.stream import run_stream
    return run_stream(argv)


def cmd_publish(argv):
    from pipeline.stream import run_publish
    return run_publish(argv)


def cmd_reconcile(argv):
    from pipeline.reconcile import run_reconcile
    return run_reconcile(argv)


def cmd_sweep(argv):
    from pipeline.stream import run_sweep
    return run_sweep(argv)


