"""Two fixes to the Python DirectRunner's streaming mode, pinned with Beam's version: its
Pub/Sub read and its search for due timers. The local `stream` runs on it.

The runner runs every step of the job on one thread, in turn. Its Pub/Sub read pulls
10 messages at a time and asks the server to wait when none are there (pstest waits
500 ms; Pub/Sub may wait too), while no other step runs; and after every step it asks the
state of every key the job has ever seen whether a timer is due, so its time per step
grows with the number of leads. `tune_direct_runner` makes the read pull up to
PULL_MAX messages and return at once when there are none (pausing EMPTY_PULL_PAUSE_S
then, so an idle job does not spin), and keeps, per step, an index of the keys whose
state holds a timer, so that only those are asked.
"""

from __future__ import annotations

import threading
import time
import warnings

PULL_MAX = 1000
EMPTY_PULL_PAUSE_S = 0.02
_LOCK = threading.Lock()


class _Pulls:
    """A subscriber client whose pull takes up to PULL_MAX messages and does not wait."""

    def __init__(self, client):
        self.client = client

    def pull(self, subscription, max_messages, timeout):
        with warnings.catch_warnings():
            # deprecated in the API, still honoured by the service and the emulators
            warnings.simplefilter("ignore", DeprecationWarning)
            found = self.client.pull(subscription=subscription, return_immediately=True,
                                     max_messages=max(max_messages, PULL_MAX),
                                     timeout=timeout)
        if not found.received_messages:
            time.sleep(EMPTY_PULL_PAUSE_S)
        return found

    def __getattr__(self, name):
        return getattr(self.client, name)


class TimerIndex(dict):
    """A step's states by key that knows which keys' states hold a timer.

    The runner never changes a stored state's timers in place: a step works on a copy
    and stores it back under its key (its timers deep-copied), so looking at each state
    as it is stored is enough."""

    def __init__(self):
        super().__init__()
        self.with_timers = set()

    def __setitem__(self, key, state):
        super().__setitem__(key, state)
        timers = getattr(state, "timers", None)
        if timers is None or any(timers.values()):
            self.with_timers.add(key)
        else:
            self.with_timers.discard(key)

    def __delitem__(self, key):
        super().__delitem__(key)
        self.with_timers.discard(key)


def tune_direct_runner():
    """Apply both fixes (once per process; they change no result, only the time)."""
    from apache_beam.runners.direct import evaluation_context, transform_evaluator
    from apache_beam.runners.direct import watermark_manager
    with _LOCK:
        reader = transform_evaluator._PubSubReadEvaluator  # noqa: SLF001
        if getattr(reader, "_tuned", False):
            return
        client_of = reader._get_subscriber_client.__func__  # noqa: SLF001
        reader._get_subscriber_client = classmethod(  # noqa: SLF001
            lambda cls, transform: _Pulls(client_of(cls, transform)))

        context = evaluation_context.EvaluationContext
        initialize = context._initialize_keyed_states  # noqa: SLF001

        def indexed_keyed_states(self, *args, **kwargs):
            return {step: TimerIndex() for step in initialize(self, *args, **kwargs)}
        context._initialize_keyed_states = indexed_keyed_states  # noqa: SLF001

        watermarks = watermark_manager._TransformWatermarks  # noqa: SLF001
        extract = watermarks.extract_transform_timers

        def extract_transform_timers(self):
            states = self._keyed_states  # noqa: SLF001
            if not isinstance(states, TimerIndex):
                return extract(self)
            # the runner's steps and its timer search all run on its one thread
            self._keyed_states = {key: states[key] for key in states.with_timers}
            try:
                return extract(self)
            finally:
                self._keyed_states = states
        watermarks.extract_transform_timers = extract_transform_timers
        reader._tuned = True  # noqa: SLF001
