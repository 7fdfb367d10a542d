"""The streaming commands: `stream` (the job), `publish` (replay files into a topic) and
`sweep` (re-evaluate stored leads after the definitions changed).

A definitions change reaches a lead at its next event or timer on its own; `sweep`
brings every stored lead in line without waiting: it publishes, on the control topic,
sweep messages naming the new version and the lead ids (never the rules: each worker
reads those from its own definitions source), which the job applies in each lead's own
state, so Beam state and the sink stay in agreement. `stream` runs the sweep itself when
it sees the definition file change, while its launcher runs.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from pipeline.options import UsageError

_LOG = logging.getLogger(__name__)
SWEEP_BATCH = 500
FLINK_CHECKPOINT_MS = 10_000
# exactly once: a row waits for the checkpoint after it, so checkpoints come often
FLINK_STABLE_CHECKPOINT_MS = 1_000
FLINK_RUNNERS = ("FlinkRunner", "PortableRunner")


def on_flink(options):
    """A PortableRunner may be talking to a Flink job server too: it is treated as one
    (other job servers ignore the Flink options)."""
    from apache_beam.options.pipeline_options import StandardOptions

    from transforms.pubsub import runner_name
    return runner_name(options.view_as(StandardOptions).runner) in FLINK_RUNNERS


def exactly_once(options, choice):
    """Whether the sink writes only what a checkpoint holds (transforms.sinks.StableParDo).
    After a failure Flink replays from the last checkpoint, and a lead's events and
    timers may then interleave otherwise than in the attempt that failed: rows written
    straight away would keep both histories. Only Flink needs and honours it."""
    if choice == "auto":
        return on_flink(options)
    if choice == "yes" and not on_flink(options):
        raise UsageError("--exactly_once=yes needs the FlinkRunner (the DirectRunner and "
                         "Prism cannot run it; Dataflow is exactly once by itself)")
    return choice == "yes"


def flink_checkpoints(options, stable=False):
    """Flink finalizes bundles (the pull reader acknowledges what it read) only when a
    checkpoint completes, and checkpoints only when asked: a streaming job on Flink
    without --checkpointing_interval would never acknowledge a message, and Pub/Sub
    would deliver each again every ack deadline. Set a default (shorter when the sink
    waits for checkpoints, `stable`); returns it (or None)."""
    from pipeline.options import FlinkBundleOptions
    flink = options.view_as(FlinkBundleOptions)
    if not on_flink(options) or flink.checkpointing_interval is not None:
        return None
    flink.checkpointing_interval = FLINK_STABLE_CHECKPOINT_MS if stable \
        else FLINK_CHECKPOINT_MS
    return flink.checkpointing_interval


def _usage(err):
    return UsageError(str(err))


def run_stream(argv):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions
    from pipeline import pubsub
    from pipeline.options import job_options
    from pipeline.prepare import prepare_deltas_topic, prepare_sink
    from pipeline.graph import build_stream
    from transforms.definitions import read_definitions
    options, ours = job_options(argv, "lists", "sink", command="stream")
    if not ours.subscription and not ours.topic:
        raise UsageError("--subscription (or --topic, to create one) is required")
    stable = exactly_once(options, ours.exactly_once)
    try:
        if ours.topic:
            pubsub.check_topic(ours.topic)
        if ours.subscription:
            pubsub.check_subscription(ours.subscription)
        if ours.control_subscription:
            pubsub.check_subscription(ours.control_subscription)
    except ValueError as err:
        raise _usage(err) from None
    definitions, doc = read_definitions(ours.lists)
    subscription = ours.subscription
    if ours.topic:
        subscription = pubsub.ensure_subscription(ours.topic, subscription)
        print(f"reading {subscription} (on {ours.topic})", file=sys.stderr)
    control = ours.control_subscription
    if control:
        control_topic = pubsub.topic_of(control)
    else:
        control_topic, control = pubsub.control_names(
            ours.topic or pubsub.topic_of(subscription), subscription)
        pubsub.ensure_topic(control_topic)
        pubsub.ensure_subscription(control_topic, control)
    print(f"control messages (sweeps) from {control} (on {control_topic})",
          file=sys.stderr)
    options.view_as(StandardOptions).streaming = True
    interval = flink_checkpoints(options, stable)
    if interval:
        print(f"checkpoints every {interval} ms on Flink (messages are acknowledged "
              "at checkpoints; --checkpointing_interval changes it)", file=sys.stderr)
    if stable:
        print("exactly once: rows are written when the checkpoint after them completes "
              "(--exactly_once=no writes them at once)", file=sys.stderr)
    resume = ours.resume_from_sink != "no"
    prepare_sink(ours.sink)
    prepare_deltas_topic(ours.deltas_topic, ours.sink)
    pipeline = beam.Pipeline(options=options)
    from transforms.pubsub import reader_for
    reader = reader_for(options.view_as(StandardOptions).runner, ours.pubsub_reader)
    build_stream(pipeline, subscription, ours.lists, ours.definitions_refresh_seconds,
                 ours.sink, resume, reader, control, ours.deltas_topic, stable)
    from transforms.pubsub import DRAIN_FINISHES_READS, DRAINING, drain_direct_reads
    DRAINING.clear()
    drain_direct_reads()
    from transforms.direct import tune_direct_runner
    tune_direct_runner()
    # Flink's streaming jobs do not end when their sources do: there the launcher
    # cancels the job once everything pulled is acknowledged
    by_acks = on_flink(options)
    if by_acks:
        DRAIN_FINISHES_READS.clear()
    else:
        DRAIN_FINISHES_READS.set()
    result = pipeline.run()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_definitions, daemon=True, args=(
        stop, ours.lists, doc.version, ours.sink, control_topic,
        ours.definitions_refresh_seconds))
    watcher.start()
    status = _run_until_drained(result, stop, definitions.version,
                                ours.drain_timeout_seconds, by_acks)
    if status == 0 and DRAINING.is_set():
        _summary(ours.sink)
    return status


def _summary(sink):
    """What the sink holds after a drain. (Not the backfill's counts of records read
    and applied: the DirectRunner's streaming mode reports only part of a job's
    counters, so the stream prints none rather than wrong ones.)"""
    from pipeline.summary import print_sink_summary
    print_sink_summary(sink)


ACKED_SETTLE_S = 2.0  # nothing unacknowledged for this long: the drain by acks is done


def _run_until_drained(result, stop, version, drain_timeout, by_acks=False):
    """Wait for the job; the first SIGTERM or Ctrl-C drains it (the readers stop
    pulling, what is in flight is evaluated, written and acknowledged, the job ends:
    exit 0), a second one, or a drain longer than `drain_timeout` seconds, cancels it
    (exit 130). `by_acks`: the job does not end by itself; it is cancelled once every
    batch pulled is acknowledged (an acknowledgement follows the checkpoint that holds
    the batch's results, sink writes included)."""
    from transforms.pubsub import DRAINING
    drained = threading.Event()
    acked = threading.Event()

    def on_signal(signum, _frame):
        stop.set()
        if not DRAINING.is_set():
            DRAINING.set()
            print(f"draining ({signal.Signals(signum).name}): no more messages are "
                  "pulled; finishing what is in flight (again to cancel)",
                  file=sys.stderr)
            threading.Thread(target=_cancel_after, daemon=True,
                             args=(result, drained, drain_timeout)).start()
            if by_acks:
                threading.Thread(target=_cancel_when_acknowledged, daemon=True,
                                 args=(result, drained, acked)).start()
            return
        _cancel(result)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"streaming job running on definitions {version}; Ctrl-C drains and stops it",
          file=sys.stderr)
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        return 130
    except RuntimeError:  # portable runners raise for a cancelled job
        if not acked.is_set():
            raise
    finally:
        drained.set()
        stop.set()
    if DRAINING.is_set() and (acked.is_set() or str(result.state).endswith("DONE")):
        print("drained: every message pulled was evaluated, written and acknowledged",
              file=sys.stderr)
        return 0
    if DRAINING.is_set():
        print(f"the job ended in state {result.state} while draining", file=sys.stderr)
        return 130
    return 0


def _cancel(result):
    try:
        result.cancel()
    except Exception:  # noqa: BLE001 - a runner that cannot cancel just stops
        pass


def _cancel_when_acknowledged(result, drained, acked):
    from transforms.pubsub import unacknowledged
    settled = None
    while not drained.wait(0.2):
        if unacknowledged() > 0:
            settled = None
        elif settled is None:
            settled = time.monotonic()
        elif time.monotonic() - settled >= ACKED_SETTLE_S:
            acked.set()
            _cancel(result)
            return


def _cancel_after(result, drained, seconds):
    if not drained.wait(seconds):
        print(f"the drain took longer than {seconds:g} s: cancelling", file=sys.stderr)
        _cancel(result)


def _watch_definitions(stop, path, version, sink, control_topic, refresh):
    """Launcher side: when the definition file changes to a good version, sweep."""
    from rules import DefinitionError
    from transforms.definitions import read_definitions
    while not stop.wait(refresh):
        try:
            _, doc = read_definitions(path)
        except DefinitionError as err:
            _LOG.error("definition file is bad, the job keeps %s: %s", version,
                       "; ".join(err.errors))
            continue
        if doc.version == version:
            continue
        try:
            sweep_leads(doc, sink, control_topic)
            version = doc.version
        except Exception as err:  # noqa: BLE001 - retried at the next poll
            _LOG.error("sweep for definitions %s failed: %s", doc.version, err)


def sweep_leads(doc, sink, control_topic, label="sweep"):
    """Publish sweep messages for every lead stored in the sink, reading the leads page
    by page (never all of them at once); returns how many leads."""
    from pipeline import pubsub
    from storage import open_store
    from transforms.pubsub import sweep_message
    store = open_store(sink)
    counted = [0]

    def messages():
        for page in store.lead_key_pages(SWEEP_BATCH):
            counted[0] += len(page)
            yield sweep_message(doc.version, page)
    try:
        pubsub.publish(control_topic, messages(), label=label)
    finally:
        store.close()
    return counted[0]


def run_sweep(argv):
    import argparse
    from pipeline import pubsub
    from pipeline.options import parse_args
    from storage import parse_sink_uri
    from transforms.definitions import read_definitions
    parser = argparse.ArgumentParser(prog="python -m pipeline sweep")
    parser.add_argument("--lists", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--control_topic", "--topic", dest="control_topic", required=True,
                        help="the job's control topic (projects/P/topics/T)")
    args = parse_args(parser, argv)
    try:
        pubsub.check_topic(args.control_topic)
        parse_sink_uri(args.sink)
    except ValueError as err:
        raise _usage(err) from None
    from pipeline.prepare import usable_sink
    usable_sink(args.sink, must_exist=True)
    _, doc = read_definitions(args.lists)
    count = sweep_leads(doc, args.sink, args.control_topic)
    print(f"asked for {count} leads to be re-evaluated against definitions {doc.version}")
    return 0


def run_publish(argv):
    import argparse
    from pipeline import pubsub
    from pipeline.options import parse_args
    from transforms.io import Unreadable, matching_files, records_of_glob
    parser = argparse.ArgumentParser(prog="python -m pipeline publish")
    parser.add_argument("--events", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, default=None,
                        help="messages per second (default: as fast as possible)")
    args = parse_args(parser, argv)
    try:
        pubsub.check_topic(args.topic)
    except ValueError as err:
        raise _usage(err) from None
    if args.rate is not None and args.rate <= 0:
        raise UsageError("--rate must be a positive number of messages per second")
    if not matching_files(args.events):
        raise UsageError(f"no event files match {args.events!r}")
    pubsub.ensure_topic(args.topic)
    records = [(payload.raw if isinstance(payload, Unreadable) else payload, None)
               for _, payload in records_of_glob(args.events)]
    started = time.monotonic()
    count, _ = pubsub.publish(args.topic, records, args.rate)
    print(f"published {count} records to {args.topic} in "
          f"{time.monotonic() - started:.1f}s")
    return 0
