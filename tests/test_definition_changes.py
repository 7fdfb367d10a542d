"""Definitions that change under a running job: a tenant that goes away, and sweeps that
arrive late or out of order."""

import json

from rules import LeadProcessor, LeadState, parse_definitions
from schemas.records import ChangeEvent, Sweep
from transforms.definitions import ProcessorCache

DAY = 86_400 * 1_000_000
T0 = 1_700_000_000_000_000
OPENED = {"tenant_id": "acme", "list_id": "opened", "rules": {
    "activity": "email_open", "min_count": 1, "within_days": 30}}
BETA = {"tenant_id": "beta", "list_id": "tagged", "rules": {"tag": "x"}}


def document(lists):
    return {"tenants": sorted({entry["tenant_id"] for entry in lists}), "lists": lists}


def processor(lists):
    return LeadProcessor(parse_definitions(document(lists)))


def test_a_tenant_that_goes_away_takes_its_lists_and_timers_with_it():
    with_acme, without = processor([OPENED, BETA]), processor([BETA])
    state = LeadState()
    _, deltas = with_acme.on_event(state, ChangeEvent(
        "e1", "acme", "L1", "activity", T0, activity_kind="email_open"))
    assert [(d.list_id, d.action) for d in deltas] == [("opened", "added")]
    assert state.next_flip == T0 + 30 * DAY

    # an event validated while acme existed, evaluated after it was dropped
    outcome, deltas = without.on_event(state, ChangeEvent(
        "e2", "acme", "L1", "tag_added", T0 + DAY, tag="x"))
    assert outcome == "no_tenant"
    assert [(d.list_id, d.action, d.cause) for d in deltas] == [
        ("opened", "removed", f"definition:{without.version}")]
    assert not state.members and state.next_flip is None

    # a timer set before the change fires after it: nothing flips, nothing is re-set
    again = LeadState()
    with_acme.on_event(again, ChangeEvent("e1", "acme", "L2", "activity", T0,
                                          activity_kind="email_open"))
    deltas = without.on_timer(again, "acme", "L2", again.next_flip)
    assert [(d.list_id, d.action) for d in deltas] == [("opened", "removed")]
    assert again.next_flip is None
    assert without.on_timer(again, "acme", "L2", T0 + 40 * DAY) == []


def test_a_sweep_is_applied_only_with_a_version_the_source_holds(tmp_path, monkeypatch):
    import transforms.definitions as module
    monkeypatch.setattr(module, "FORCED_READ_GAP_S", 0)
    v1, v2, forged = (document([dict(OPENED, rules={"tag": tag})]) for tag in "abz")
    versions = [parse_definitions(doc).version for doc in (v1, v2, forged)]
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps(v1))
    cache = ProcessorCache(str(lists), refresh_seconds=3600)
    assert cache.current().version == versions[0]
    assert cache.for_sweep(versions[0]).version == versions[0]
    # a version the file does not hold (forged, or never written): ignored
    assert cache.for_sweep(versions[2]) is None
    assert cache.current().version == versions[0]
    # the file changes: a sweep for the new version makes the worker read it at once,
    # long before its refresh interval
    lists.write_text(json.dumps(v2))
    assert cache.for_sweep(versions[1]).version == versions[1]
    # v1's sweep, late or re-delivered: the file no longer holds v1, so it is ignored
    assert cache.for_sweep(versions[0]) is None
    assert cache.current().version == versions[1]
    # a roll-back is a new file version, swept anew
    lists.write_text(json.dumps(v1))
    assert cache.for_sweep(versions[0]).version == versions[0]


def test_control_messages_on_the_events_subscription_are_dead_letters():
    from apache_beam.io.gcp.pubsub import PubsubMessage

    from transforms.io import Unreadable
    from transforms.pubsub import CONTROL_ATTRIBUTE, EventRecords, sweep_message
    records = EventRecords("projects/p/subscriptions/events")
    data, attributes = sweep_message("v2", [("acme", "L1")])
    for attrs in (attributes, {CONTROL_ATTRIBUTE: "anything"}):
        [(source, payload)] = records.process(PubsubMessage(data, attrs, message_id="m1"))
        assert source == "pubsub:projects/p/subscriptions/events:m1"
        assert isinstance(payload, Unreadable) and payload.code == "control_on_events"
        assert payload.raw == data
    event = b'{"event_id": "e1"}'
    assert list(records.process(PubsubMessage(event, {"other": "x"}, message_id="m2"))) \
        == [("pubsub:projects/p/subscriptions/events:m2", event)]


def test_a_control_message_that_is_not_a_sweep_is_a_dead_letter_not_a_crash():
    from apache_beam import pvalue
    from apache_beam.io.gcp.pubsub import PubsubMessage

    from transforms.pubsub import CONTROL_ATTRIBUTE, ControlMessages, sweep_message
    control = ControlMessages("projects/p/subscriptions/control")

    def outcome(data, attributes=None):
        message = PubsubMessage(data, attributes or {CONTROL_ATTRIBUTE: "sweep"},
                                message_id="m1")
        return [("dead", o.value.reason.split(":")[0], o.value.payload)
                if isinstance(o, pvalue.TaggedOutput) else ("sweep", o)
                for o in control.process(message)]
    for data in (b"[]", b'"x"', b'{"version": "v", "leads": null}',
                 b'{"version": "v", "leads": [["acme"]]}',
                 b'{"version": "v", "leads": [["acme", "L1"], ["acme", 7]]}',
                 b'{"version": "", "leads": []}', b"{not json"):
        assert outcome(data) == [("dead", "bad_control", data.decode())]
    data, _ = sweep_message("v2", [("acme", "L1")])
    assert outcome(data, {"dynlists_control": "other"}) == [
        ("dead", "bad_control", data.decode())]
    assert outcome(data, {"x": "y"})[0][:2] == ("dead", "bad_control")
    data, _ = sweep_message("v2", [("acme", "L1"), ("beta", "L2")])
    assert outcome(data) == [("sweep", ("acme/L1", Sweep("v2"))),
                             ("sweep", ("beta/L2", Sweep("v2")))]
    # a sweep as older launchers sent it, rules and an issue time inside: only the
    # version and the leads are read
    old = json.dumps({"version": "v2", "leads": [["acme", "L1"]], "definitions": "{}",
                      "issued_at": 2 ** 62}).encode()
    assert outcome(old) == [("sweep", ("acme/L1", Sweep("v2")))]


def test_an_event_whose_tenant_left_is_a_dead_letter_in_the_streaming_step():
    """SPEC: input = applied + duplicates + dead letters. An event valid when parsed but
    evaluated after its tenant left the definitions is the third kind."""
    from apache_beam import pvalue

    from transforms.evaluate import DEAD_LETTERS, PROFILES, StatefulLeadFn

    with_acme, without = processor([OPENED, BETA]), processor([BETA])
    state = LeadState()
    with_acme.on_event(state, ChangeEvent("e1", "acme", "L1", "activity", T0,
                                          activity_kind="email_open"))
    fn = StatefulLeadFn("unused.json", 60)
    fn.cache = type("Cache", (), {"current": lambda self: without,
                                  "catch_up": lambda self, state: without})()
    fn.resume_from = None
    event = ChangeEvent("e2", "acme", "L1", "tag_added", T0 + DAY, tag="x")
    out = list(fn.process(("acme/L1", event), lead=Cell(state), flip=Timer(),
                          expiry=Timer()))
    tagged = {}
    for item in out:
        if isinstance(item, pvalue.TaggedOutput):
            tagged.setdefault(item.tag, []).append(item.value)
        else:
            tagged.setdefault("deltas", []).append(item)
    [dead] = tagged[DEAD_LETTERS]
    assert dead.reason.startswith("unknown_tenant: tenant 'acme' left the definitions")
    assert json.loads(dead.payload)["event_id"] == "e2"
    assert [(d.list_id, d.action) for d in tagged["deltas"]] == [("opened", "removed")]
    assert len(tagged[PROFILES]) == 1


# -- a lead never follows older definitions than it has followed ----------------------
SCORED = {"tenant_id": "acme", "list_id": "scored"}


def scored(bound):
    return document([dict(SCORED, rules={"field": "score", "op": "gt", "value": bound})])


class Source:
    """A definition file whose versions are written at increasing modification times."""

    def __init__(self, path):
        self.path, self.moment = path, 1_700_000_000

    def write(self, doc):
        import os
        self.moment += 10
        self.path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        os.utime(self.path, (self.moment, self.moment))


def upsert(n, value):
    return ChangeEvent(f"e{n}", "acme", "L1", "lead_upserted", T0 + n, fields={"x": value})


def test_a_lead_handed_between_workers_on_different_versions_never_flaps(tmp_path,
                                                                         monkeypatch):
    """Two workers read one file; one polls sooner. The lead moves to the one still on
    v1 after it followed v2: that worker reads its file first, and evaluates with v2."""
    import transforms.definitions as module
    monkeypatch.setattr(module, "FORCED_READ_GAP_S", 0)
    source = Source(tmp_path / "lists.json")
    source.write(scored(50))
    soon, late = (ProcessorCache(str(source.path), refresh) for refresh in (0, 3600))
    state, deltas = LeadState(), []
    first = ChangeEvent("e0", "acme", "L1", "lead_upserted", T0, fields={"score": 60})
    deltas += late.current().on_event(state, first)[1]
    assert [(d.list_id, d.action) for d in deltas] == [("scored", "added")]
    source.write(scored(70))
    v2 = soon.current().version
    for n in range(1, 7):  # back and forth
        worker = soon if n % 2 else late
        processor = worker.catch_up(state)
        assert processor is not None and processor.version == v2
        deltas += processor.on_event(state, upsert(n, n))[1]
    assert [(d.list_id, d.action, d.cause) for d in deltas] == [
        ("scored", "added", "e0"), ("scored", "removed", f"definition:{v2}")]
    assert late.current().version == v2


def test_the_engine_refuses_to_take_a_lead_back():
    from rules.processor import DefinitionsBehind
    older = LeadProcessor(parse_definitions(scored(50)), order=1)
    newer = LeadProcessor(parse_definitions(scored(70)), order=2)
    state = LeadState()
    newer.on_event(state, ChangeEvent("e0", "acme", "L1", "lead_upserted", T0,
                                      fields={"score": 60}))
    assert older.behind(state) and not newer.behind(state)
    import copy
    for call in (lambda s: older.on_event(s, upsert(1, 1)),
                 lambda s: older.on_timer(s, "acme", "L1", T0 + DAY),
                 lambda s: older.on_definitions(s, "acme", "L1")):
        kept = copy.deepcopy(state)
        try:
            call(state)
            raise AssertionError("evaluated with older definitions")
        except DefinitionsBehind:
            pass
        assert state.to_dict() == kept.to_dict()  # untouched
    # unordered processors (tools, tests) hold nobody back
    assert not LeadProcessor(parse_definitions(scored(10))).behind(state)
    # a roll-back is a new file version: newer by order, though its content is old
    rolled_back = LeadProcessor(parse_definitions(scored(50)), order=3)
    assert not rolled_back.behind(state)
    _, deltas = rolled_back.on_event(state, upsert(1, 1))
    assert [(d.action, d.cause) for d in deltas] == [
        ("added", f"definition:{rolled_back.version}")]
    assert newer.behind(state)
    assert not older.behind(state)  # the same rules as the lead's: nothing to take back


class Cell:
    def __init__(self, value=None):
        self.value = value

    def read(self):
        return self.value

    def write(self, value):
        self.value = value

    def clear(self):
        self.value = None


class Timer:
    def __init__(self):
        self.at = None

    def set(self, when):
        self.at = when

    def clear(self):
        self.at = None


def outputs(items):
    from apache_beam import pvalue
    return [item for item in items if not isinstance(item, pvalue.TaggedOutput)]


def test_a_worker_that_cannot_read_newer_definitions_defers_the_lead(tmp_path, monkeypatch):
    """The lead followed v2 elsewhere; this worker holds v1 and its file now holds a bad
    document: the lead's events wait in its state, then apply once the file is good."""
    import transforms.definitions as module
    from transforms.evaluate import Deferred, StatefulLeadFn
    monkeypatch.setattr(module, "FORCED_READ_GAP_S", 0)
    source = Source(tmp_path / "lists.json")
    source.write(scored(50))
    fn = StatefulLeadFn(str(source.path), 3600)
    fn.setup()
    fn.cache = ProcessorCache(str(source.path), 3600)  # this worker's own
    assert fn.cache.current() is not None
    source.write(scored(70))
    elsewhere = ProcessorCache(str(source.path), 0).current()
    state = LeadState()
    elsewhere.on_event(state, ChangeEvent("e0", "acme", "L1", "lead_upserted", T0,
                                          fields={"score": 60}))
    assert not state.members  # v2: 60 is not over 70
    source.write('{"lists": [{"tenant_id": "acme", "list_id": "x", "rules": {"op": 1}}]}')
    cell, flip, expiry = Cell(state), Timer(), Timer()
    for n in (1, 2):
        out = outputs(fn.process(("acme/L1", upsert(n, n)), lead=cell, flip=flip,
                                 expiry=expiry))
        assert out == []
        assert isinstance(cell.value, Deferred) and len(cell.value.events) == n
        assert flip.at is not None  # it tries again
    # a retry while the file is still bad: still waiting
    assert outputs(fn.on_flip(key="acme/L1", when=None, lead=cell, flip=flip,
                              expiry=expiry)) == []
    assert isinstance(cell.value, Deferred) and cell.value.retries == 1
    # the file is good again (a v3 that lowers the bound): the events apply, in order
    source.write(scored(5))
    v3 = LeadProcessor(parse_definitions(scored(5))).version
    deltas = outputs(fn.on_flip(key="acme/L1", when=None, lead=cell, flip=flip,
                                expiry=expiry))
    assert isinstance(cell.value, LeadState)
    assert cell.value.values["x"] == 2 and cell.value.defs_version == v3
    assert [(d.list_id, d.action, d.cause) for d in deltas] == [
        ("scored", "added", f"definition:{v3}")]


def test_any_hand_over_between_workers_moves_a_lead_forward_only():
    """Any interleaving of file changes, worker polls and events on any of three workers:
    the order of the definitions a lead follows never goes back, and it ends where a
    from-scratch evaluation with the file's last version is."""
    import tempfile
    from pathlib import Path

    from hypothesis import given, settings
    from hypothesis import strategies as st

    import transforms.definitions as module
    step = st.one_of(st.tuples(st.just("write"), st.integers(0, 100)),
                     st.tuples(st.just("poll"), st.integers(0, 2)),
                     st.tuples(st.just("event"), st.integers(0, 2), st.integers(0, 100)))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(step, max_size=25))
    def check(steps):
        with tempfile.TemporaryDirectory() as folder:
            source = Source(Path(folder) / "lists.json")
            source.write(scored(50))
            workers = [ProcessorCache(str(source.path), 3600) for _ in range(3)]
            for worker in workers:
                worker.current()
            state, events, orders, last = LeadState(), [], [], scored(50)
            for n, item in enumerate(steps):
                if item[0] == "write":
                    last = scored(item[1])
                    source.write(last)
                elif item[0] == "poll":
                    workers[item[1]]._checked = -1e9
                    workers[item[1]].current()
                else:
                    processor = workers[item[1]].catch_up(state)
                    assert processor is not None  # the file is always good here
                    event = ChangeEvent(f"e{n}", "acme", "L1", "lead_upserted", T0 + n,
                                        fields={"score": item[2]})
                    events.append(event)
                    processor.on_event(state, event)
                    orders.append(state.defs_order)
            assert orders == sorted(orders)
            if events:
                workers[0]._checked = -1e9
                final = workers[0].current()
                assert final.version == parse_definitions(last).version
                final.on_definitions(state, "acme", "L1")
                fresh = LeadState()
                final.run_history(fresh, events)
                assert set(state.members) == set(fresh.members)

    saved = module.FORCED_READ_GAP_S
    module.FORCED_READ_GAP_S = 0
    try:
        check()
    finally:
        module.FORCED_READ_GAP_S = saved


def test_a_window_closing_after_the_year_9999_sets_no_timer():
    """An activity near the last instant an event can carry, in a 7-day window: the
    window would close in the year 10000, which no event or row can hold."""
    from transforms.evaluate import StatefulLeadFn
    from schemas.values import parse_timestamp
    fn = StatefulLeadFn("unused.json", 60)
    weekly = processor([dict(OPENED, rules={"activity": "email_open", "within_days": 7})])
    fn.cache = type("Cache", (), {"current": lambda self: weekly,
                                  "catch_up": lambda self, state: weekly})()
    fn.resume_from = None
    late = parse_timestamp("9999-12-30T00:00:00Z")
    cell, flip, expiry = Cell(), Timer(), Timer()
    deltas = outputs(fn.process(("acme/L1", ChangeEvent(
        "e1", "acme", "L1", "activity", late, activity_kind="email_open")),
        lead=cell, flip=flip, expiry=expiry))
    assert [(d.list_id, d.action) for d in deltas] == [("opened", "added")]
    assert cell.value.next_flip > late and flip.at is None
    # a week earlier the same window closes in time, on its timer
    cell, flip = Cell(), Timer()
    outputs(fn.process(("acme/L2", ChangeEvent(
        "e2", "acme", "L2", "activity", late - 7 * DAY, activity_kind="email_open")),
        lead=cell, flip=flip, expiry=expiry))
    assert flip.at is not None and flip.at.micros >= cell.value.next_flip


def test_a_state_with_an_empty_watch_comes_back_as_it_was():
    state = LeadState()
    state.watch = bytearray()
    assert LeadState.from_dict(state.to_dict()).watch == bytearray()


def test_events_still_waiting_when_the_job_drains_become_dead_letters(tmp_path,
                                                                       monkeypatch):
    from apache_beam import pvalue

    import transforms.definitions as module
    from transforms.evaluate import DEAD_LETTERS, Deferred, StatefulLeadFn
    from transforms.pubsub import DRAINING
    monkeypatch.setattr(module, "FORCED_READ_GAP_S", 0)
    source = Source(tmp_path / "lists.json")
    source.write(scored(50))
    fn = StatefulLeadFn(str(source.path), 3600)
    fn.cache = ProcessorCache(str(source.path), 3600)
    fn.resume_from = None
    fn.cache.current()
    source.write(scored(70))
    state = LeadState()
    ProcessorCache(str(source.path), 0).current().on_event(state, upsert(0, 0))
    source.write("not json")
    cell, flip, expiry = Cell(state), Timer(), Timer()
    outputs(fn.process(("acme/L1", upsert(1, 1)), lead=cell, flip=flip, expiry=expiry))
    assert isinstance(cell.value, Deferred)
    DRAINING.set()
    try:
        out = list(fn.on_flip(key="acme/L1", when=None, lead=cell, flip=flip, expiry=expiry))
    finally:
        DRAINING.clear()
    [dead] = [o.value for o in out if isinstance(o, pvalue.TaggedOutput)
              and o.tag == DEAD_LETTERS]
    assert dead.reason.startswith("deferred_at_drain:")
    assert json.loads(dead.payload)["event_id"] == "e1"
    assert cell.value is state and flip.at is None
