"""The portable pull reader on its own: what it does when Pub/Sub cannot be reached."""

import socket
import time

from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker

from transforms.pubsub import PullMessages


class Finalizer:
    def __init__(self):
        self.callbacks = []

    def register(self, callback):
        self.callbacks.append(callback)


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the probe is


def test_a_pull_that_fails_is_tried_again_later_and_leaves_the_watermark(monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{closed_port()}")
    reader = PullMessages(pull_timeout_s=0.5, error_resume_s=1.5)
    reader.setup()
    tracker = ThreadsafeRestrictionTracker(OffsetRestrictionTracker(OffsetRange(0, 100)))
    watermark = ManualWatermarkEstimator(None)
    finalizer = Finalizer()
    started = time.monotonic()
    out = list(reader.process("projects/p/subscriptions/s", finalizer=finalizer,
                              tracker=RestrictionTrackerView(tracker), watermark=watermark))
    assert out == []
    assert time.monotonic() - started < 10, "no minute-long client retries in a bundle"
    assert watermark.current_watermark() is None, "nobody knows what is waiting"
    residual, delay = tracker.deferred_status()
    assert residual is not None and 1_000_000 < delay.micros <= 1_500_000
    assert len(finalizer.callbacks) == 1  # Prism finalizes every bundle of the reader
