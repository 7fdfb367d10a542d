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


def test_a_late_sweep_does_not_take_a_worker_back_to_older_definitions(tmp_path):
    v1, v2, v3 = (document([dict(OPENED, rules={"tag": tag})]) for tag in "abc")
    versions = [parse_definitions(doc).version for doc in (v1, v2, v3)]
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps(v1))
    cache = ProcessorCache(str(lists), refresh_seconds=3600)
    assert cache.current().version == versions[0]
    started = cache.loaded_at

    # v2's sweep, issued after the worker took up v1: installed at once
    sweep2 = Sweep(versions[1], json.dumps(v2), started + 1)
    assert cache.for_sweep(sweep2).version == versions[1]
    # v3's sweep, later still
    sweep3 = Sweep(versions[2], json.dumps(v3), started + 2)
    assert cache.for_sweep(sweep3).version == versions[2]
    # v2's sweep re-delivered: the lead is brought in line with v3, the worker stays
    assert cache.for_sweep(sweep2).version == versions[2]
    assert cache.current().version == versions[2]
    # a roll-back is a new sweep, issued later: v1 again
    sweep1 = Sweep(versions[0], json.dumps(v1), started + 3)
    assert cache.for_sweep(sweep1).version == versions[0]
    # the same version again, or a sweep without a document: the current definitions
    assert cache.for_sweep(sweep1).version == versions[0]
    assert cache.for_sweep(Sweep(versions[2])).version == versions[0]


def test_a_sweep_message_that_cannot_be_read_is_a_dead_letter_not_a_crash():
    from apache_beam import pvalue
    from apache_beam.io.gcp.pubsub import PubsubMessage

    from transforms.pubsub import CONTROL_ATTRIBUTE, SplitMessages, sweep_message
    split = SplitMessages("projects/p/subscriptions/s")

    def outcome(data):
        message = PubsubMessage(data, {CONTROL_ATTRIBUTE: "sweep"}, message_id="m1")
        out = list(split.process(message))
        return [("sweep", o.value) if isinstance(o, pvalue.TaggedOutput) else ("record", o)
                for o in out]
    for data in (b"[]", b'"x"', b'{"version": "v", "leads": null}',
                 b'{"version": "v", "leads": [["acme"]]}',
                 b'{"version": "v", "leads": [["acme", "L1"], ["acme", 7]]}',
                 b'{"version": "v", "leads": [], "issued_at": "soon"}', b"{not json"):
        assert outcome(data) == [("record", ("pubsub:projects/p/subscriptions/s:m1", data))]
    data, _ = sweep_message("v2", [("acme", "L1"), ("beta", "L2")], "{}", 17)
    assert outcome(data) == [("sweep", ("acme/L1", Sweep("v2", "{}", 17))),
                             ("sweep", ("beta/L2", Sweep("v2", "{}", 17)))]


def test_a_sweep_the_clocks_call_stale_is_taken_when_the_file_holds_it(tmp_path):
    """The launcher's clock may run behind a worker's: the file, read again, decides."""
    v1, v2 = (document([dict(OPENED, rules={"tag": tag})]) for tag in "ab")
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps(v1))
    cache = ProcessorCache(str(lists), refresh_seconds=3600)
    cache.current()
    lists.write_text(json.dumps(v2))  # the launcher saw it, its clock says "earlier"
    version2 = parse_definitions(v2).version
    behind = Sweep(version2, json.dumps(v2), cache.loaded_at - 1_000_000)
    assert cache.for_sweep(behind).version == version2


def test_a_sweep_with_a_bad_document_keeps_the_definitions(tmp_path):
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps(document([OPENED])))
    cache = ProcessorCache(str(lists), refresh_seconds=3600)
    good = cache.current().version
    bad = Sweep("v-bad", json.dumps({"lists": [{"tenant_id": "acme", "list_id": "x",
                                                 "rules": {"field": "a", "op": "nope"}}]}),
                cache.loaded_at + 1)
    assert cache.for_sweep(bad).version == good  # no exception: the bundle goes on


def test_an_event_whose_tenant_left_is_a_dead_letter_in_the_streaming_step():
    """SPEC: input = applied + duplicates + dead letters. An event valid when parsed but
    evaluated after its tenant left the definitions is the third kind."""
    from apache_beam import pvalue

    from transforms.evaluate import DEAD_LETTERS, PROFILES, StatefulLeadFn

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
        def set(self, when):
            pass

        def clear(self):
            pass

    with_acme, without = processor([OPENED, BETA]), processor([BETA])
    state = LeadState()
    with_acme.on_event(state, ChangeEvent("e1", "acme", "L1", "activity", T0,
                                          activity_kind="email_open"))
    fn = StatefulLeadFn("unused.json", 60)
    fn.cache = type("Cache", (), {"current": lambda self: without})()
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
