"""Read change events, and control messages (sweeps), from Pub/Sub subscriptions.

Events and control travel on separate subscriptions, so that the right to publish lead
events and the right to steer the job can be granted to different identities. On the
events subscription a message's data is one event's JSON; its source is
`pubsub:<subscription>:<message id>`, so a re-delivered bad message gets the same
dead-letter id, and a control-looking message there is a dead letter
(`control_on_events`), never obeyed. On the control subscription a sweep (attribute
`dynlists_control=sweep`) names a definitions version and some leads; it carries no
rules, and anything else there is a dead letter (`bad_control`).
Nothing here knows whether it talks to Pub/Sub or an emulator (PUBSUB_EMULATOR_HOST).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import typing

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas.records import Sweep, lead_key, make_dead_letter
from transforms.io import Unreadable

_LOG = logging.getLogger(__name__)
NAMESPACE = "dynlists"
CONTROL_ATTRIBUTE = "dynlists_control"
SWEEPS = "sweeps"
DEAD_LETTERS = "dead_letters"
MAX_SWEEP_LEADS = 10_000  # leads one sweep message may name (the launcher sends 500)

# Set when the job in this process drains (pipeline/stream.py): the readers pull no
# more and, where the runner then completes (the direct runner, Prism), finish, so the
# runner evaluates and acknowledges what is in flight. On Flink, whose streaming jobs do
# not end when their sources do, the pull reader only stops pulling, and the launcher
# cancels the job once every batch it pulled is acknowledged (`unacknowledged()`).
# Workers in the launcher's process (the direct runner, LOOPBACK) see these.
DRAINING = threading.Event()
DRAIN_FINISHES_READS = threading.Event()
_UNACKED = [0]  # batches pulled in this process and not yet acknowledged
_UNACKED_LOCK = threading.Lock()


def unacknowledged():
    """How many batches the pull readers of this process hold unacknowledged."""
    return _UNACKED[0]


def _count_unacked(delta):
    with _UNACKED_LOCK:
        _UNACKED[0] += delta


def drain_direct_reads():
    """Make the direct runner's own Pub/Sub read honour DRAINING: once set, it pulls no
    more and reports itself done (no more work, watermark at the end of time), so the
    runner finishes the messages it already pulled and completes. The direct runner
    has no drain of its own; this is its read evaluator, pinned with Beam's version."""
    from apache_beam.runners.direct import transform_evaluator as evaluators
    from apache_beam.utils.timestamp import MAX_TIMESTAMP
    reader = evaluators._PubSubReadEvaluator  # noqa: SLF001
    if getattr(reader, "_drains", False):
        return
    finish = reader.finish_bundle

    def finish_bundle(self):
        if DRAINING.is_set():
            return evaluators.TransformResult(self, [], [], None, {None: MAX_TIMESTAMP})
        return finish(self)
    reader.finish_bundle = finish_bundle
    reader._drains = True  # noqa: SLF001


def sweep_message(version, leads):
    """(data, attributes) of a sweep message for (tenant, lead) pairs."""
    body = {"version": version, "leads": [list(pair) for pair in leads]}
    return json.dumps(body).encode(), {CONTROL_ATTRIBUTE: "sweep"}


def _source(subscription, message):
    return f"pubsub:{subscription}:{message.message_id}"


class EventRecords(beam.DoFn):
    """Events subscription: message -> (source, payload); a control message here is
    refused as a dead letter (whoever may publish events may not steer the job)."""

    def __init__(self, subscription):
        self.subscription = subscription

    def process(self, message):
        source = _source(self.subscription, message)
        control = (message.attributes or {}).get(CONTROL_ATTRIBUTE)
        if control is not None:
            yield source, Unreadable(
                f"a message with attribute {CONTROL_ATTRIBUTE}={control[:40]!r} on the "
                "events subscription: control messages are only read from the control "
                "subscription", message.data or b"", code="control_on_events")
            return
        yield source, message.data


class ControlMessages(beam.DoFn):
    """Control subscription: sweep messages -> keyed Sweeps (main); anything else is a
    dead letter ('dead_letters')."""

    def __init__(self, subscription):
        self.subscription = subscription
        self.bad = Metrics.counter(NAMESPACE, "dead_letter_bad_control")

    def process(self, message):
        found = None
        if (message.attributes or {}).get(CONTROL_ATTRIBUTE) == "sweep":
            found = sweep_of(message.data)
        if found is None:
            self.bad.inc()
            yield pvalue.TaggedOutput(DEAD_LETTERS, make_dead_letter(
                _source(self.subscription, message),
                f"bad_control: not a sweep message (attribute {CONTROL_ATTRIBUTE}=sweep, "
                'data {"version": V, "leads": [[tenant, lead], ...]})',
                (message.data or b"").decode("utf-8", "backslashreplace"),
                int(time.time() * 1_000_000)))
            return
        sweep, leads = found
        for tenant, lead in leads:
            yield lead_key(tenant, lead), sweep


def sweep_of(data):
    """(Sweep, [(tenant, lead), ...]) of a sweep message's body, or None when it is not
    one: every part is checked before any lead is swept. Other keys (a document, an
    issue time, as older launchers sent) are not read."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    version, leads = body.get("version"), body.get("leads")
    if not (isinstance(version, str) and 0 < len(version) <= 128
            and isinstance(leads, list) and len(leads) <= MAX_SWEEP_LEADS):
        return None
    pairs = []
    for pair in leads:
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(part, str) and part for part in pair)
                and "/" not in pair[0]):
            return None
        pairs.append((pair[0], pair[1]))
    return Sweep(version), pairs


NATIVE_READERS = ("DirectRunner", "BundleBasedDirectRunner", "DataflowRunner",
                  "TestDataflowRunner")


def runner_name(runner):
    """The class name of a --runner value (None: Beam's default, the DirectRunner)."""
    if runner is None:
        return "DirectRunner"
    if isinstance(runner, str):
        return runner.rsplit(".", 1)[-1]
    return type(runner).__name__


def reader_for(runner, choice="auto"):
    """'native' (ReadFromPubSub, which only the direct and Dataflow runners implement)
    or 'pull' (PullMessages, for every portable runner)."""
    if choice != "auto":
        return choice
    return "native" if runner_name(runner) in NATIVE_READERS else "pull"


class _FromSubscription(beam.PTransform):
    """A read of one subscription, by the runner's own source ('native') or the portable
    pull reader ('pull')."""

    def __init__(self, subscription, reader="native"):
        super().__init__()
        self.subscription = subscription
        self.reader = reader


class ReadMessages(_FromSubscription):
    """-> PubsubMessages."""

    def expand(self, pbegin):
        if self.reader == "pull":
            return (pbegin
                    | "Subscription" >> beam.Create([self.subscription])
                    | "PullPubSub" >> beam.ParDo(PullMessages()))
        return pbegin | "ReadPubSub" >> beam.io.ReadFromPubSub(
            subscription=self.subscription, with_attributes=True)


class ReadPubSubRecords(_FromSubscription):
    """Events subscription -> (source, payload) records."""

    def expand(self, pbegin):
        return (pbegin
                | "Messages" >> ReadMessages(self.subscription, self.reader)
                | "RefuseControl" >> beam.ParDo(EventRecords(self.subscription)))


class ReadControl(_FromSubscription):
    """Control subscription -> keyed Sweeps (main) and dead letters ('dead_letters')."""

    def expand(self, pbegin):
        return (pbegin
                | "Messages" >> ReadMessages(self.subscription, self.reader)
                | "Sweeps" >> beam.ParDo(ControlMessages(self.subscription))
                .with_output_types(typing.Tuple[str, Sweep])
                .with_outputs(DEAD_LETTERS, main=SWEEPS))


# -- a pull reader for runners without a native Pub/Sub source (Prism, Flink) ------------

_FOREVER = 2 ** 62
IDLE_WATERMARK_LAG_S = 1


class _Endless(RestrictionProvider):
    """One restriction per subscription: positions 0, 1, 2, ... one per pull."""

    def initial_restriction(self, element):
        return OffsetRange(0, _FOREVER)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def split(self, element, restriction):
        yield restriction

    def truncate(self, element, restriction):
        return None  # a drained reader stops reading


def _nothing():
    pass


class PullMessages(beam.DoFn):
    """Unbounded splittable DoFn: pulls batches from one subscription and emits them as
    PubsubMessages stamped with their publish time.

    Messages are acknowledged when the runner has committed the bundle that carried them
    (bundle finalization), so a crash before that re-delivers them; the lead state's seen
    event ids make the re-delivery harmless. The watermark is the oldest publish time of
    the last batch pulled, and the wall clock less IDLE_WATERMARK_LAG_S when a pull comes
    back empty (never moving back).

    Messages are read from the raw protobuf response: the client's wrapper types convert
    on every field access (~27 us per message against ~4 us).
    """

    def __init__(self, max_messages=1000, pull_timeout_s=1.0, idle_resume_s=0.2,
                 error_resume_s=1.0):
        self.max_messages = max_messages
        self.pull_timeout_s = pull_timeout_s
        self.idle_resume_s = idle_resume_s
        self.error_resume_s = error_resume_s
        self.pull_errors = Metrics.counter("dynlists", "pubsub_pull_errors")

    def setup(self):
        from google.cloud import pubsub_v1
        self.client = pubsub_v1.SubscriberClient()
        self._last_error_log = -1e9

    @beam.DoFn.unbounded_per_element()
    def process(self, subscription, finalizer=beam.DoFn.BundleFinalizerParam,
                tracker=beam.DoFn.RestrictionParam(_Endless()),
                watermark=beam.DoFn.WatermarkEstimatorParam(
                    ManualWatermarkEstimator.default_provider())):
        from google.api_core import exceptions
        if DRAINING.is_set() and DRAIN_FINISHES_READS.is_set():
            # the job drains: claim the rest, so the reader is done and the runner
            # completes (finalizing, so acknowledging, every bundle it has)
            tracker.try_claim(tracker.current_restriction().stop - 1)
            finalizer.register(_nothing)
            return
        if not tracker.try_claim(tracker.current_restriction().start):
            return
        if DRAINING.is_set():  # the job drains: pull no more, finalize what was pulled
            finalizer.register(_nothing)
            tracker.defer_remainder(Duration(seconds=self.idle_resume_s))
            return
        try:
            # no client-side retries: they would hold the bundle for up to a minute;
            # the next resumption is the retry
            response = self.client.pull(
                request={"subscription": subscription, "max_messages": self.max_messages},
                timeout=self.pull_timeout_s, retry=None)
            received = type(response).pb(response).received_messages
        except exceptions.DeadlineExceeded:
            received = ()  # nothing to deliver within the timeout
        except (exceptions.GoogleAPICallError, exceptions.RetryError) as err:
            # unreachable, throttled, ...: the job keeps running and tries again; the
            # watermark stays where it is, since nobody knows what is waiting
            self.pull_errors.inc()
            now = time.monotonic()
            if now - self._last_error_log >= 60:
                self._last_error_log = now
                _LOG.warning("pulling %s failed (retrying): %s", subscription, err)
            finalizer.register(_nothing)
            tracker.defer_remainder(Duration(seconds=self.error_resume_s))
            return
        if not received:
            # runners that finalize every bundle of a finalizing DoFn (Prism) expect
            # each bundle to ask for it
            finalizer.register(_nothing)
            self._advance(watermark, Timestamp.now() - IDLE_WATERMARK_LAG_S)
            tracker.defer_remainder(Duration(seconds=self.idle_resume_s))
            return
        ack_ids, oldest = [], None
        for item in received:
            pulled = item.message
            published = pulled.publish_time
            stamp = Timestamp(seconds=published.seconds, micros=published.nanos // 1000)
            ack_ids.append(item.ack_id)
            oldest = stamp if oldest is None else min(oldest, stamp)
            yield TimestampedValue(PubsubMessage(pulled.data, dict(pulled.attributes),
                                                 message_id=pulled.message_id), stamp)
        self._advance(watermark, oldest)
        _count_unacked(1)
        finalizer.register(functools.partial(self._ack, subscription, ack_ids))
        # one pull per bundle: what was pulled moves on (and is acknowledged) right away
        tracker.defer_remainder()

    @staticmethod
    def _advance(watermark, moment):
        current = watermark.current_watermark()
        if current is None or moment > current:
            watermark.set_watermark(moment)

    def _ack(self, subscription, ack_ids):
        try:
            self.client.acknowledge(request={"subscription": subscription,
                                             "ack_ids": ack_ids})
        finally:
            _count_unacked(-1)
