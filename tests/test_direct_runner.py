"""The DirectRunner's streaming fixes (transforms/direct.py): its timer search visits
only the keys whose state holds a timer, and every timer still fires when it is due;
its Pub/Sub read pulls many messages without waiting. The whole streaming job runs on
the tuned runner in tests/test_streaming_pubsub.py."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (ReadModifyWriteStateSpec, TimerSpec,
                                              on_timer)
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.direct import PULL_MAX, TimerIndex, _Pulls, tune_direct_runner


class _State:
    def __init__(self, timers):
        self.timers = timers


def test_the_index_follows_each_stored_state():
    index = TimerIndex()
    index["a"] = _State({"w": {("t", "watermark", ""): 5}})
    index["b"] = _State({})
    index["c"] = _State({"w": {}})  # a window whose timers were all cleared
    index["d"] = object()           # a state that does not say: asked, as before
    assert index.with_timers == {"a", "d"}
    index["a"] = _State({"w": {}})  # stored again after its timer fired
    index["b"] = _State({"w": {("t", "watermark", ""): 9}})
    del index["d"]
    assert index.with_timers == {"b"}
    assert set(index) == {"a", "b", "c"}


class TimersFn(beam.DoFn):
    """Per key: 'set:T' sets a timer at T seconds, 'clear' clears it, anything else sets
    nothing; a timer that fires emits (key, its time)."""

    LAST = ReadModifyWriteStateSpec("last", StrUtf8Coder())
    ALARM = TimerSpec("alarm", TimeDomain.WATERMARK)

    def process(self, element, alarm=beam.DoFn.TimerParam(ALARM),
                last=beam.DoFn.StateParam(LAST)):
        key, command = element
        last.write(command)
        if command.startswith("set:"):
            alarm.set(Timestamp(int(command[4:])))
        elif command == "clear":
            alarm.clear()

    @on_timer(ALARM)
    def fired(self, key=beam.DoFn.KeyParam, timestamp=beam.DoFn.TimestampParam):
        yield key, int(timestamp.micros // 1_000_000)


def test_timers_fire_on_the_tuned_runner_and_keys_without_timers_are_not_asked():
    tune_direct_runner()
    tune_direct_runner()  # once per process, however often it is asked
    quiet = [(f"quiet-{i}", "nothing") for i in range(300)]
    stream = (TestStream()
              .add_elements([TimestampedValue(e, 1) for e in quiet])
              .add_elements([TimestampedValue(("a", "set:50"), 2),
                             TimestampedValue(("b", "set:70"), 2),
                             TimestampedValue(("c", "set:60"), 2)])
              .advance_watermark_to(20)
              .add_elements([TimestampedValue(("c", "clear"), 21),
                             TimestampedValue(("b", "set:40"), 21)])  # moved earlier
              .advance_watermark_to(55)
              .add_elements([TimestampedValue(("a", "set:90"), 56)])  # set again
              .advance_watermark_to(100)
              .advance_watermark_to_infinity())
    options = PipelineOptions(["--runner=DirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as pipeline:
        fired = pipeline | stream | beam.ParDo(TimersFn())
        assert_that(fired, equal_to([("b", 40), ("a", 50), ("a", 90)]))


def test_a_pull_takes_many_messages_at_once_and_pauses_when_there_are_none():
    class Client:
        def __init__(self, answers):
            self.answers, self.calls = answers, []

        def pull(self, **request):
            self.calls.append(request)
            return self.answers.pop(0)

        def acknowledge(self, **request):
            return "acknowledged"

    class Response:
        def __init__(self, n):
            self.received_messages = list(range(n))

    client = Client([Response(3), Response(0)])
    pulls = _Pulls(client)
    assert len(pulls.pull(subscription="s", max_messages=10, timeout=30)
               .received_messages) == 3
    import time
    started = time.monotonic()
    assert pulls.pull(subscription="s", max_messages=10, timeout=30).received_messages == []
    assert time.monotonic() - started >= 0.015
    assert all(call["max_messages"] == PULL_MAX and call["return_immediately"]
               for call in client.calls)
    assert pulls.acknowledge(subscription="s", ack_ids=[]) == "acknowledged"
