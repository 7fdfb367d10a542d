"""Key events by lead and evaluate each lead with the engine.

Batch groups a lead's whole history and replays it in time order (so a replay emits
exactly the same deltas, with the same ids); streaming keeps each lead's state in a
stateful DoFn, applies events as they come and sets an event-time timer at the next
moment a time window flips. Both hand the work to LeadProcessor and emit the same
outputs: deltas (main) and profile rows ('profiles'); batch can instead emit one
LeadRows per lead ('leads').
"""

from __future__ import annotations

import pickle
import time
import typing

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (ReadModifyWriteStateSpec, TimerSpec,
                                              on_timer)
from apache_beam.utils.timestamp import Timestamp

from rules import LeadState
from rules.processor import NO_TENANT
from schemas.values import LAST_US
from schemas.events import event_json
from schemas.records import ChangeEvent, Sweep, make_dead_letter, split_lead_key
from storage import shared_store
from storage.rows import profile_row, state_from_row, state_json
from transforms import coders  # noqa: F401 - registers the event coder
from transforms.definitions import NAMESPACE, shared_cache
from transforms.fnapi import pipeline_state_commits
from transforms.pubsub import DRAINING

DELTAS = "deltas"
PROFILES = "profiles"
DEAD_LETTERS = "dead_letters"  # events that could not be evaluated (their tenant left)
LEADS = "leads"


class LeadRows(typing.NamedTuple):
    """A lead's deltas, in the order they were made, and its profile row after them.

    One element per lead instead of one per delta: a lead's first upsert alone can put
    it in dozens of lists, and the runner's cost per element would outweigh the rows'.
    Carried whole, a lead's deltas and profile also reach the sink's buffer together
    whether or not the runner fuses the sink with the evaluation.
    """
    deltas: tuple
    profile: dict


class LeadRowsCoder(beam.coders.Coder):
    """Pickles LeadRows; tells its size without encoding it. The runner samples the size
    of the elements a step emits by encoding them, and a lead's rows (dozens of deltas
    and a profile of kilobytes) made that sampling a cost of its own."""

    def encode(self, value):
        return pickle.dumps(value, protocol=5)

    def decode(self, encoded):
        return pickle.loads(encoded)

    def estimate_size(self, value):
        return 200 * len(value.deltas) + 4 * len(value.profile.get("state") or "")

    def is_deterministic(self):
        return False  # rows are values, never keys

    def to_type_hint(self):
        return LeadRows


beam.coders.registry.register_coder(LeadRows, LeadRowsCoder)


def now_us():
    return int(time.time() * 1_000_000)


def latest(times):
    """The evaluation time at the end of a backfill: the newest event time (0 if none)."""
    return max(times, default=0)


class KeyByLead(beam.PTransform):
    """event -> ("tenant/lead", event), the plain-string key of the lead's state."""

    def expand(self, events):
        return events | "LeadKey" >> beam.Map(lambda event: (event.lead_key, event)
                                              ).with_output_types(typing.Tuple[str, ChangeEvent])


class _Counters:
    """The metrics a dashboard needs, shared by the batch and streaming shells."""

    def __init__(self):
        self.outcomes = {name: Metrics.counter(NAMESPACE, f"events_{name}")
                         for name in ("applied", "duplicate", "stale", "no_tenant")}
        self.added = Metrics.counter(NAMESPACE, "deltas_added")
        self.removed = Metrics.counter(NAMESPACE, "deltas_removed")
        self.depth = Metrics.distribution(NAMESPACE, "cascade_depth")
        self.engine_us = Metrics.distribution(NAMESPACE, "engine_us_per_event")
        self.timers = Metrics.counter(NAMESPACE, "timers_fired")
        self.dead = (Metrics.counter(NAMESPACE, "dead_letters"),
                     Metrics.counter(NAMESPACE, "dead_letter_unknown_tenant"))

    def count(self, outcomes, deltas, elapsed_us, events):
        for name, value in outcomes.items():
            if value:
                self.outcomes[name].inc(value)
        if deltas:
            added = sum(delta.action == "added" for delta in deltas)
            if added:
                self.added.inc(added)
            if added < len(deltas):
                self.removed.inc(len(deltas) - added)
            depth = self.depth
            for delta in deltas:
                depth.update(delta.cascade_depth)
        if events:
            self.engine_us.update(int(elapsed_us / events))


class EvaluateHistoryFn(beam.DoFn):
    """Batch: one lead's events, sorted by time, then time windows up to `as_of`.
    `per_lead`: one LeadRows per lead, instead of each delta and the profile row."""

    def __init__(self, per_lead=False):
        self.counters = _Counters()
        self.per_lead = per_lead

    def setup(self):
        self.cache = shared_cache()

    def process(self, element, doc, as_of):
        key, events = element
        events = list(events)
        processor = self.cache.get(doc)
        state = LeadState()
        started = time.perf_counter()
        outcomes, deltas = processor.run_history(state, events, as_of or None)
        elapsed = (time.perf_counter() - started) * 1e6
        self.counters.count(outcomes, deltas, elapsed, len(events))
        tenant, lead = split_lead_key(key)
        yield from lead_outputs(deltas, profile_row(tenant, lead, state, now_us()),
                                self.per_lead)


def lead_outputs(deltas, profile, per_lead):
    """A lead's evaluation as the DoFn's outputs: one LeadRows (`per_lead`), or each
    delta (main) and the profile row ('profiles')."""
    if per_lead:
        yield LeadRows(tuple(deltas), profile)
        return
    yield from deltas
    yield pvalue.TaggedOutput(PROFILES, profile)


def with_lead_outputs(pardo, per_lead):
    """The ParDo's tagged outputs for lead_outputs (and DEAD_LETTERS)."""
    return pardo.with_output_types(LeadRows if per_lead else typing.Any).with_outputs(
        *(() if per_lead else (PROFILES,)), DEAD_LETTERS,
        main=LEADS if per_lead else DELTAS)


class EvaluateLeads(beam.PTransform):
    """events -> deltas (main) and profile rows ('profiles'), batch form; with
    `per_lead`, LeadRows ('leads', main) instead of both."""

    def __init__(self, definitions, as_of=None, per_lead=False):
        super().__init__()
        self.definitions = definitions
        self.as_of = as_of
        self.per_lead = per_lead

    def expand(self, events):
        as_of = self.as_of
        if as_of is None:  # the newest event time of the input
            as_of = (events | "EventTimes" >> beam.Map(lambda e: e.occurred_at)
                     | "LatestEventTime" >> beam.CombineGlobally(latest))
        return (events
                | "KeyByLead" >> KeyByLead()
                | "GroupHistories" >> beam.GroupByKey()
                | "Evaluate" >> with_lead_outputs(beam.ParDo(
                    EvaluateHistoryFn(self.per_lead), pvalue.AsSingleton(self.definitions),
                    pvalue.AsSingleton(as_of)), self.per_lead))


TOMBSTONE_RETENTION_US = 7 * 86_400 * 1_000_000


def _timer_time(micros):
    """A timer's time: the instant rounded up to the millisecond.

    Prism and Flink keep timer times in milliseconds, so a timer set at an instant with
    microseconds fires at the millisecond before it; the lead's clock would then stop
    short of its flip, nothing would flip, and the same timer would be set again, for
    ever. Rounded up, the timer fires at or after the flip, and the flip's deltas still
    carry its exact instant.
    """
    return Timestamp(micros=-(-micros // 1000) * 1000)


def _event_time(event):
    return beam.window.TimestampedValue(event, event.occurred_at / 1e6)


class Deferred(typing.NamedTuple):
    """A lead whose events wait, in arrival order, for this worker to hold definitions at
    least as new as those the lead has followed (kept in the lead's own state cell, so
    the common path reads nothing more)."""
    state: LeadState
    events: tuple = ()
    retries: int = 0


DEFER_RETRY_US = 10_000_000  # how soon a deferred lead tries again
DEFER_RETRIES = 360          # then it waits for its next event (an hour of retries)
# A timer that fires this far ahead of the wall clock was not reached by time passing:
# a drain moved the watermark to the end of time (the flip belongs to the job that
# resumes from the sink, at the lead's next event or sweep).
AHEAD_OF_CLOCK_US = 5 * 60 * 1_000_000
EXPIRY_RECHECK_US = 10_000_000  # how soon an expiry the sink is not ready for looks again


class StatefulLeadFn(beam.DoFn):
    """Streaming: one lead's state, its next time-window flip, and its expiry.

    State is the LeadState (pickled); FLIP fires at the engine's next_flip; EXPIRY frees
    the state of a lead that stayed deleted for TOMBSTONE_RETENTION_US (an older event
    arriving later than that would start the lead again). When the state is empty and
    `resume` is on, the lead starts from its profile stored in the sink, so a job started
    after a backfill or a restart continues where the sink is.

    A lead that has followed newer definitions than this worker can read (it moved from
    a worker that polled sooner, and the source cannot be read now) is never evaluated
    backwards: its events wait in its state (Deferred) and FLIP tries again every
    DEFER_RETRY_US, until the worker has caught up.
    """

    LEAD = ReadModifyWriteStateSpec("lead", PickleCoder())
    FLIP = TimerSpec("flip", TimeDomain.WATERMARK)
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, lists_path, refresh_seconds, sink=None, resume=True, per_lead=False):
        self.per_lead = per_lead
        self.lists_path = lists_path
        self.refresh = refresh_seconds
        self.sink = sink
        self.resume = resume
        self.counters = _Counters()
        self.resumed = Metrics.counter(NAMESPACE, "leads_resumed_from_sink")
        self.sweeps = Metrics.counter(NAMESPACE, "sweeps")
        self.expired = Metrics.counter(NAMESPACE, "leads_expired")
        self.deferred = Metrics.counter(NAMESPACE, "events_deferred")
        self.held = Metrics.counter(NAMESPACE, "timers_held_at_drain")
        self.dropped_at_drain = Metrics.counter(NAMESPACE, "dead_letter_deferred_at_drain")

    def setup(self):
        # in the worker's process, whichever runner started it
        pipeline_state_commits()
        self.cache = shared_cache(self.lists_path, self.refresh)
        self.resume_from = self.sink if self.sink and self.resume else None

    def _load(self, key, lead):
        """The lead's state (or Deferred), or None when neither Beam nor the sink knows
        the lead."""
        state = lead.read()
        if state is not None:
            return state
        if self.resume_from is not None:
            # this thread's store: bundles of one DoFn instance may run on other threads
            row = shared_store(self.resume_from).profile(*split_lead_key(key))
            if row is not None:
                self.resumed.inc()
                return state_from_row(row)
        return None

    def process(self, element, lead=beam.DoFn.StateParam(LEAD),
                flip=beam.DoFn.TimerParam(FLIP), expiry=beam.DoFn.TimerParam(EXPIRY)):
        key, item = element
        tenant, lead_id = split_lead_key(key)
        state = self._load(key, lead)
        if isinstance(state, Deferred):
            yield from self._retry(key, state, item, lead, flip, expiry)
            return
        if isinstance(item, Sweep):
            if state is None:
                # a lead nobody knows has nothing to bring in line
                return
            self.sweeps.inc()
            processor = self.cache.for_sweep(item.version)
            if processor is None or processor.behind(state):
                # not a version of our source, or older than the lead's
                return
            deltas = processor.on_definitions(state, tenant, lead_id)
            self.counters.count({}, deltas, 0, 0)
            yield from self._finish(tenant, lead_id, state, deltas, lead, flip, expiry)
            return
        if state is None:
            state = LeadState()
        processor = self.cache.catch_up(state)
        if processor is None:
            self._defer(Deferred(state, (item,)), lead, flip)
            return
        yield from self._apply(key, processor, state, [item], lead, flip, expiry)

    def _apply(self, key, processor, state, events, lead, flip, expiry):
        tenant, lead_id = split_lead_key(key)
        deltas = []
        started = time.perf_counter()
        outcomes = {}
        for event in events:
            outcome, found = processor.on_event(state, event)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            deltas += found
            if outcome == NO_TENANT:  # valid when parsed; its tenant has left since
                for counter in self.counters.dead:
                    counter.inc()
                yield pvalue.TaggedOutput(DEAD_LETTERS, make_dead_letter(
                    f"lead:{key}", f"unknown_tenant: tenant {tenant!r} left the "
                    f"definitions before the event was evaluated", event_json(event),
                    now_us()))
        self.counters.count(outcomes, deltas, (time.perf_counter() - started) * 1e6,
                            len(events))
        yield from self._finish(tenant, lead_id, state, deltas, lead, flip, expiry)

    def _defer(self, deferred, lead, flip):
        self.deferred.inc(len(deferred.events))
        lead.write(deferred)
        flip.set(_timer_time(now_us() + DEFER_RETRY_US))

    def _retry(self, key, deferred, item, lead, flip, expiry):
        """A deferred lead's next event (it waits in line), sweep (not needed: the lead
        is ahead of this worker) or retry (item None)."""
        events, retries = deferred.events, deferred.retries
        if item is None:
            retries += 1
        elif not isinstance(item, Sweep):
            events, retries = events + (item,), 0
        processor = self.cache.catch_up(deferred.state)
        if processor is not None:
            yield from self._apply(key, processor, deferred.state, list(events), lead,
                                   flip, expiry)
            return
        if item is None and DRAINING.is_set():
            # the job ends and its state with it: the waiting events become dead letters
            # (the event as JSON), to be published again once the definitions are good
            self.counters.dead[0].inc(len(events))
            self.dropped_at_drain.inc(len(events))
            for event in events:
                yield pvalue.TaggedOutput(DEAD_LETTERS, make_dead_letter(
                    f"lead:{key}", "deferred_at_drain: the lead follows definitions "
                    f"{deferred.state.defs_version}, newer than this worker could read, "
                    "when the job drained", event_json(event), now_us()))
            lead.write(deferred.state)
            flip.clear()
            return
        self.deferred.inc(len(events) - len(deferred.events))
        lead.write(Deferred(deferred.state, events, retries))
        if retries < DEFER_RETRIES:
            flip.set(_timer_time(now_us() + DEFER_RETRY_US))
        else:  # no more retries: its next event tries again
            flip.clear()

    @on_timer(FLIP)
    def on_flip(self, key=beam.DoFn.KeyParam, when=beam.DoFn.TimestampParam,
                lead=beam.DoFn.StateParam(LEAD), flip=beam.DoFn.TimerParam(FLIP),
                expiry=beam.DoFn.TimerParam(EXPIRY)):
        state = lead.read()
        if state is None:
            return
        if isinstance(state, Deferred):
            yield from self._retry(key, state, None, lead, flip, expiry)
            return
        ahead = when.micros - now_us()
        if ahead > AHEAD_OF_CLOCK_US or (ahead > 0 and DRAINING.is_set()):
            # not due: the job is draining; flipping now would put the lead out of its
            # lists before its time
            self.held.inc()
            return
        processor = self.cache.catch_up(state)
        if processor is None:  # the flip waits too: its timer is set again on catching up
            self._defer(Deferred(state), lead, flip)
            return
        self.counters.timers.inc()
        tenant, lead_id = split_lead_key(key)
        deltas = processor.on_timer(state, tenant, lead_id, when.micros)
        self.counters.count({}, deltas, 0, 0)
        yield from self._finish(tenant, lead_id, state, deltas, lead, flip, expiry)

    @on_timer(EXPIRY)
    def on_expiry(self, key=beam.DoFn.KeyParam, lead=beam.DoFn.StateParam(LEAD),
                  flip=beam.DoFn.TimerParam(FLIP), expiry=beam.DoFn.TimerParam(EXPIRY)):
        state = lead.read()
        if isinstance(state, Deferred):
            return  # it has events waiting: not gone
        if state is None or state.exists:
            return
        if not self._stored(key, state):
            # The sink does not hold this state yet (exactly once: its rows wait for a
            # checkpoint). Freed now, the lead's next event would start it over from an
            # older profile, or none, and write a second history. Look again later; a
            # draining job keeps the state to its end.
            if not DRAINING.is_set():
                expiry.set(_timer_time(now_us() + EXPIRY_RECHECK_US))
            return
        lead.clear()
        flip.clear()
        self.expired.inc()

    def _stored(self, key, state):
        """Whether the sink the job resumes from holds exactly this state (always, when
        it does not resume: a lead freed then starts over, by design)."""
        if self.resume_from is None:
            return True
        row = shared_store(self.resume_from).profile(*split_lead_key(key))
        return row is not None and row["state"] == state_json(state)

    def _finish(self, tenant, lead_id, state, deltas, lead, flip, expiry):
        lead.write(state)
        # a window that closes after the last instant an event can carry (a long window
        # on an event near 9999-12-31) never closes: no timer, no row past that year
        if state.next_flip is not None and state.next_flip <= LAST_US:
            flip.set(_timer_time(state.next_flip))
        else:
            flip.clear()
        if not state.exists and state.tomb is not None:
            expiry.set(_timer_time(state.tomb[0] + TOMBSTONE_RETENTION_US))
        yield from lead_outputs(deltas, profile_row(tenant, lead_id, state, now_us()),
                                self.per_lead)


class EvaluateLeadsStreaming(beam.PTransform):
    """events (and keyed Sweeps) -> deltas (main) and profile rows ('profiles'); with
    `per_lead`, LeadRows ('leads', main) instead of both, as in batch."""

    def __init__(self, lists_path, refresh_seconds, sink, resume=True, sweeps=None,
                 per_lead=False):
        super().__init__()
        self.per_lead = per_lead
        self.fn = StatefulLeadFn(lists_path, refresh_seconds, sink, resume, per_lead)
        self.sweeps = sweeps

    def expand(self, events):
        keyed = (events
                 | "EventTime" >> beam.Map(_event_time)
                 | "KeyByLead" >> KeyByLead())
        if self.sweeps is not None:
            keyed = (keyed, self.sweeps) | "WithSweeps" >> beam.Flatten().with_output_types(
                typing.Tuple[str, typing.Any])
        # a str key hint gives the state a deterministic key coder
        return keyed | "Evaluate" >> with_lead_outputs(beam.ParDo(self.fn).with_input_types(
            typing.Tuple[str, typing.Any]), self.per_lead)
