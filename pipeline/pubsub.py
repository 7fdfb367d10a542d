"""Pub/Sub from the launcher: topics and subscriptions, publishing events and sweeps.

The client libraries honour PUBSUB_EMULATOR_HOST, so the same calls reach Google's
emulator, the pstest fake server of the tests, or Pub/Sub itself.
"""

from __future__ import annotations

import os
import re
import sys
import time

from pipeline.options import UsageError
from transforms.progress import redraw

_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")
_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")


def _check(name, pattern, form, beam_parse):
    try:
        if not name or not pattern.match(name):
            raise ValueError(f"the form is {form}")
        beam_parse(name)
    except ValueError as err:
        raise ValueError(f"bad {form.split('/')[2][:-1]} {name!r}: {err}") from None
    return name


def check_topic(name):
    """The topic, or ValueError with a sentence; Beam's own naming rules apply."""
    from apache_beam.io.gcp.pubsub import parse_topic
    return _check(name, _TOPIC, "projects/PROJECT/topics/TOPIC", parse_topic)


def check_subscription(name):
    """The subscription, or ValueError with a sentence; Beam's own naming rules apply."""
    from apache_beam.io.gcp.pubsub import parse_subscription
    return _check(name, _SUBSCRIPTION, "projects/PROJECT/subscriptions/SUBSCRIPTION",
                  parse_subscription)


def _publisher(max_messages=1000):
    from google.cloud import pubsub_v1
    settings = pubsub_v1.types.BatchSettings(max_messages=max_messages, max_latency=0.01)
    return pubsub_v1.PublisherClient(batch_settings=settings)


ADMIN_TIMEOUT_S = 15.0


class PubSubError(UsageError):
    """Pub/Sub refused or could not be reached: one sentence, no traceback."""


def _where():
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    return f"the emulator at {host} (PUBSUB_EMULATOR_HOST)" if host else "Pub/Sub"


def _admin(call, what, missing=None):
    """Run a Pub/Sub call; its errors become a PubSubError sentence. `missing`: what to
    say when the resource is not found."""
    from google.api_core import exceptions
    try:
        return call()
    except exceptions.NotFound:
        raise PubSubError(missing or f"{what}: not found") from None
    except exceptions.PermissionDenied as err:
        raise PubSubError(f"{what}: permission denied ({err.message})") from None
    except (exceptions.ServiceUnavailable, exceptions.RetryError,
            exceptions.DeadlineExceeded) as err:
        reason = getattr(err, "message", None) or str(err)
        raise PubSubError(f"cannot reach {_where()} ({what}): "
                          f"{reason.splitlines()[0][:160]}") from None
    except exceptions.GoogleAPICallError as err:
        raise PubSubError(f"{what}: {err.message}") from None


def ensure_topic(topic):
    from google.api_core.exceptions import AlreadyExists
    publisher = _publisher()

    def create():
        try:
            publisher.create_topic(name=topic, retry=None, timeout=ADMIN_TIMEOUT_S)
        except AlreadyExists:
            pass
    _admin(create, f"creating topic {topic}")


def ensure_subscription(topic, subscription=None, ack_deadline_seconds=60):
    """A subscription on `topic` (created if missing); its name is returned."""
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import pubsub_v1
    if subscription is None:
        project, name = topic.split("/")[1], topic.split("/")[3]
        subscription = f"projects/{project}/subscriptions/{name}-dynlists"
    subscriber = pubsub_v1.SubscriberClient()

    def create():
        try:
            subscriber.create_subscription(name=subscription, topic=topic,
                                           ack_deadline_seconds=ack_deadline_seconds,
                                           retry=None, timeout=ADMIN_TIMEOUT_S)
        except AlreadyExists:
            pass
    try:
        _admin(create, f"creating subscription {subscription}",
               f"no topic {topic} to create subscription {subscription} on (publish to "
               "it once, or create it)")
    finally:
        subscriber.close()
    return subscription


def topic_of(subscription):
    from google.cloud import pubsub_v1
    subscriber = pubsub_v1.SubscriberClient()
    try:
        return _admin(lambda: subscriber.get_subscription(
            subscription=subscription, retry=None, timeout=ADMIN_TIMEOUT_S).topic,
            f"reading subscription {subscription}",
            f"no subscription {subscription} (create it, or pass --topic and one is made)")
    finally:
        subscriber.close()


class Progress:
    """A one-line progress bar on stderr, redrawn at most every half second; a count
    alone when the total is not known."""

    def __init__(self, total, label):
        self.total, self.label, self.shown, self.started = total, label, 0.0, time.monotonic()

    def update(self, done, force=False, final=False):
        now = time.monotonic()
        if not force and now - self.shown < 0.5:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        if self.total is None:
            line = f"{self.label} {done} ({rate:,.0f}/s)"
        else:
            width = 30
            filled = int(width * done / self.total) if self.total else width
            line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                    f"{done}/{self.total} ({rate:,.0f}/s)")
        redraw(line, final)

    def close(self, done):
        self.update(done, force=True, final=True)


def publish(topic, messages, rate=None, label="published", total=None):
    """Publish (data, attributes) pairs at a steady `rate` per second (None: flat out).

    `messages` may be any iterable (a generator is consumed as it is published; give
    `total` for a progress bar). Returns (count, seconds). Waits until Pub/Sub has
    accepted every message.
    """
    if total is None and hasattr(messages, "__len__"):
        total = len(messages)
    publisher = _publisher()
    progress = Progress(total, label)
    started = time.monotonic()
    futures = []
    n = -1
    for n, (data, attributes) in enumerate(messages):
        if rate:
            due = started + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        futures.append(publisher.publish(topic, data, **(attributes or {})))
        progress.update(n + 1)
        if len(futures) >= 5000:
            _settle(futures, topic, progress)
            futures = []
    _settle(futures, topic, progress)
    progress.close(n + 1)
    return n + 1, time.monotonic() - started


def _settle(futures, topic, progress):
    """Wait until Pub/Sub has taken every message (a PubSubError sentence if not)."""
    try:
        for future in futures:
            _admin(lambda: future.result(timeout=120), f"publishing to {topic}",
                   f"no topic {topic} to publish to")
    except PubSubError:
        sys.stderr.write("\n")  # the error's line after the progress line
        raise


def control_names(events_topic, events_subscription):
    """(topic, subscription) of the control messages that go with an events
    subscription, when none is named: `<events topic>-control`, and
    `<events subscription>-control` on it."""
    return f"{events_topic}-control", f"{events_subscription}-control"
