"""The batch pipeline on the DirectRunner: each composite alone, then the four invariants
of SPEC section 5 through the whole job into a real SQLite file."""

from __future__ import annotations

import glob
import gzip
import json
import os
import sqlite3

import apache_beam as beam
import fastavro
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules import parse_definitions
from schemas.values import parse_timestamp
from schemas.events import InvalidEvent, parse_event
from tests.helpers import (SAMPLE, doc_of, event_json, expected_memberships, run_backfill,
                           sink_memberships, table_counts, write_events)
from tests.strategies import definitions_doc, event_histories
from transforms.definitions import StaticDefinitions
from transforms.evaluate import DELTAS, PROFILES, EvaluateLeads
from transforms.io import ReadEventFiles
from transforms.parse import DEAD_LETTERS, EVENTS, ParseEvents

DOC = {"tenants": ["acme"], "lists": [
    {"tenant_id": "acme", "list_id": "east", "rules": {"field": "state", "op": "in",
                                                        "value": ["NY", "MA"]}},
    {"tenant_id": "acme", "list_id": "east-vip", "rules": {"all": [{"list": "east"},
                                                                    {"tag": "vip"}]}},
]}


def test_read_event_files_reads_jsonl_gzip_and_avro(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"x": 1}\n\n{"x": 2}\r\n')
    with gzip.open(tmp_path / "b.jsonl.gz", "wb") as handle:
        handle.write(b'{"x": 3}\n')
    with open(os.path.join(os.path.dirname(SAMPLE), "schemas", "change_event.avsc")) as h:
        schema = fastavro.parse_schema(json.load(h))
    with open(tmp_path / "c.avro", "wb") as handle:
        fastavro.writer(handle, schema, [{
            "event_id": "e1", "tenant_id": "acme", "lead_id": "L", "type": "activity",
            "occurred_at": "2026-05-01T00:00:00Z",
            "activity": {"kind": "email_open", "ref": None}}])
    with TestPipeline() as p:
        records = p | ReadEventFiles(str(tmp_path / "*"))
        assert_that(records | beam.Map(lambda r: (os.path.basename(r[0]), r[1])), equal_to([
            ("a.jsonl:1", b'{"x": 1}'), ("a.jsonl:3", b'{"x": 2}'),
            ("b.jsonl.gz:1", b'{"x": 3}'),
            ("c.avro#1", b'{"event_id": "e1", "tenant_id": "acme", "lead_id": "L", "type": '
                         b'"activity", "occurred_at": "2026-05-01T00:00:00Z", "activity": '
                         b'{"kind": "email_open", "ref": null}}')]))


def test_damaged_files_keep_what_was_read_and_become_one_dead_letter(tmp_path):
    """A .gz that is not gzip, an Avro file cut short, an Avro timestamp logical type:
    the job goes on, and each file's unreadable rest is one Unreadable record."""
    import datetime

    from transforms.io import Unreadable
    (tmp_path / "good.jsonl").write_bytes(b'{"x": 1}\n')
    (tmp_path / "plain.jsonl.gz").write_bytes(b'{"x": 2}\n')  # not gzip at all
    schema = fastavro.parse_schema({
        "type": "record", "name": "E", "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-micros"}}]})
    stamp = datetime.datetime(2026, 5, 1, 9, 0, tzinfo=datetime.timezone.utc)
    whole = tmp_path / "whole.avro"
    with open(whole, "wb") as handle:
        fastavro.writer(handle, schema, [{"event_id": f"e{i}", "occurred_at": stamp}
                                         for i in range(500)])
    data = whole.read_bytes()
    (tmp_path / "cut.avro").write_bytes(data[:len(data) - 40])
    with TestPipeline() as p:
        records = p | ReadEventFiles(str(tmp_path / "*"))
        shown = records | beam.Map(lambda r: (
            os.path.basename(r[0]),
            r[1].reason.split(":")[0] if isinstance(r[1], Unreadable) else r[1]))
        assert_that(shown | "Damaged" >> beam.Filter(lambda r: "unreadable" in r[0]),
                    equal_to([("plain.jsonl.gz:unreadable", "unreadable file after line 0"),
                              ("cut.avro#unreadable", "unreadable Avro file after record 0")]),
                    label="damaged")
        assert_that(shown | "Good" >> beam.Filter(lambda r: r[0] in ("good.jsonl:1",
                                                                     "whole.avro#1")),
                    equal_to([("good.jsonl:1", b'{"x": 1}'),
                              ("whole.avro#1", b'{"event_id": "e0", "occurred_at": '
                                               b'"2026-05-01T09:00:00+00:00"}')]),
                    label="good")


def test_a_storage_error_is_not_damage_it_fails_the_read():
    """A connection reset part-way is not a damaged file: swallowing it would lose the
    rest of the file for good; failing lets the runner read the file again."""
    import io

    import pytest

    from transforms.io import records_of

    class Flaky(io.BytesIO):
        def readline(self, *args):
            if self.tell() > 10:
                raise ConnectionResetError("connection reset by peer")
            return super().readline(*args)
    with pytest.raises(ConnectionResetError):
        list(records_of("gs://b/events.jsonl", lambda _: Flaky(b'{"x": 1}\n{"x": 2}\n')))


def test_parse_events_splits_events_and_dead_letters():
    good = json.dumps({"event_id": "e1", "tenant_id": "acme", "lead_id": "L1",
                       "type": "tag_added", "occurred_at": "2026-05-01T00:00:00Z",
                       "tag": "vip"})
    with TestPipeline() as p:
        definitions = p | StaticDefinitions(doc_of(DOC))
        parsed = (p | beam.Create([("f:1", good.encode()), ("f:2", b"{oops"),
                                   ("f:3", good.replace("acme", "nobody").encode())])
                  | ParseEvents(definitions))
        assert_that(parsed[EVENTS] | beam.Map(lambda e: (e.event_id, e.tag)),
                    equal_to([("e1", "vip")]), label="events")
        assert_that(parsed[DEAD_LETTERS] | beam.Map(lambda d: (d.source,
                                                               d.reason.split(":")[0])),
                    equal_to([("f:2", "not_json"), ("f:3", "unknown_tenant")]),
                    label="dead")


def test_evaluate_leads_sorts_each_history_and_cascades():
    events = [parse_event(json.dumps(r), parse_definitions(DOC)) for r in [
        {"event_id": "b", "tenant_id": "acme", "lead_id": "L1", "type": "tag_added",
         "occurred_at": "2026-05-02T00:00:00Z", "tag": "VIP"},
        {"event_id": "a", "tenant_id": "acme", "lead_id": "L1", "type": "lead_upserted",
         "occurred_at": "2026-05-01T00:00:00Z", "fields": {"state": "ny"}},
    ]]
    with TestPipeline() as p:
        definitions = p | StaticDefinitions(doc_of(DOC))
        as_of = p | "AsOf" >> beam.Create([parse_timestamp("2026-05-03T00:00:00Z")])
        out = p | beam.Create(events) | EvaluateLeads(definitions, as_of)
        assert_that(out[DELTAS] | beam.Map(lambda d: (d.list_id, d.action, d.cause,
                                                      d.cascade_depth, d.seq)),
                    equal_to([("east", "added", "a", 0, 1),
                              ("east-vip", "added", "b", 0, 2)]), label="deltas")
        assert_that(out[PROFILES] | beam.Map(lambda r: (r["lead_id"], json.loads(r["fields"]),
                                                        json.loads(r["memberships"]))),
                    equal_to([("L1", {"state": "ny"},
                               {"east": "2026-05-01T00:00:00.000000Z",
                                "east-vip": "2026-05-02T00:00:00.000000Z"})]),
                    label="profiles")


def valid_events(document, events):
    definitions = parse_definitions(document)
    kept = []
    for event in events:
        try:
            kept.append(parse_event(event_json(event), definitions))
        except InvalidEvent:
            pass
    return definitions, kept


def sample_lines():
    """Every record of the sample, bad ones included, in the sample's order."""
    lines = []
    for name in sorted(glob.glob(os.path.join(SAMPLE, "events", "*"))):
        if name.endswith(".avro"):
            with open(name, "rb") as handle:
                lines += [json.dumps(r).encode() for r in fastavro.reader(handle)]
        else:
            opener = gzip.open if name.endswith(".gz") else open
            with opener(name, "rb") as handle:
                lines += [line.rstrip(b"\n") for line in handle if line.strip()]
    return lines


def sample_events():
    """The sample's valid events, read the plain way (no Beam)."""
    with open(os.path.join(SAMPLE, "lists.json")) as handle:
        document = json.load(handle)
    definitions = parse_definitions(document)
    lines = sample_lines()
    events, bad = [], 0
    for line in lines:
        try:
            events.append(parse_event(line, definitions))
        except InvalidEvent:
            bad += 1
    return document, definitions, events, bad, len(lines)


def test_sample_backfill_equals_reference_and_tells_the_story(tmp_path):
    document, definitions, events, bad, total = sample_events()
    sink = f"sqlite:///{tmp_path}/out.db"
    counts = run_backfill(os.path.join(SAMPLE, "events", "*"), document, sink)
    as_of = max(e.occurred_at for e in events)
    assert sink_memberships(sink) == expected_memberships(definitions, events, as_of)
    assert counts["records_read"] == total
    assert counts["dead_letters"] == bad > 0
    db = sqlite3.connect(f"{tmp_path}/out.db")
    move = db.execute("SELECT list_id, action, cascade_depth FROM membership_deltas WHERE "
                      "tenant_id = 'acme' AND lead_id = 'lead-0001' AND cause = 'acme-00006'"
                      ).fetchall()
    joined = [lid for lid, action, _ in move if action == "added"]
    assert len(joined) >= 15 and "east-coast" in joined and "ne-gala-table-1" in joined
    assert {lid for lid, action, _ in move if action == "removed"} >= {"west-coast",
                                                                       "sf-bay-area"}
    assert max(depth for _, _, depth in move) >= 10
    # an older event arriving after a deletion does not bring lead-0900 back; a newer one
    # starts lead-0901 again from nothing
    lists_of = lambda lead: {r[0] for r in db.execute(  # noqa: E731
        "SELECT list_id FROM list_memberships WHERE tenant_id = 'acme' AND lead_id = ?",
        (lead,))}
    assert lists_of("lead-0900") == set()
    assert "east-coast" in lists_of("lead-0901") and "gmail-users" not in lists_of("lead-0901")


def test_replaying_the_same_input_adds_no_rows(tmp_path):
    document, _, _, _, _ = sample_events()
    sink = f"sqlite:///{tmp_path}/out.db"
    glob_ = os.path.join(SAMPLE, "events", "*")
    first = run_backfill(glob_, document, sink)
    before = table_counts(sink)
    second = run_backfill(glob_, document, sink)
    assert table_counts(sink) == before
    assert first["sink_new_deltas"] > 0 and second.get("sink_new_deltas", 0) == 0


def test_the_json_lines_sink_holds_what_the_sqlite_sink_holds(tmp_path):
    document, definitions, events, _, _ = sample_events()
    glob_ = os.path.join(SAMPLE, "events", "*")
    files, db = f"jsonl:///{tmp_path}/out", f"sqlite:///{tmp_path}/out.db"
    run_backfill(glob_, document, db)
    first = run_backfill(glob_, document, files)
    second = run_backfill(glob_, document, files)  # a replay repeats rows readers fold
    as_of = max(e.occurred_at for e in events)
    assert sink_memberships(files) == expected_memberships(definitions, events, as_of)
    assert table_counts(files) == table_counts(db)
    assert first["sink_new_deltas"] == second["sink_new_deltas"] == table_counts(db)[
        "membership_deltas"]


def test_two_worker_processes_write_the_same_result(tmp_path):
    document, definitions, events, _, _ = sample_events()
    sink = f"sqlite:///{tmp_path}/out.db"
    run_backfill(os.path.join(SAMPLE, "events", "*"), document, sink,
                 extra_args=["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    as_of = max(e.occurred_at for e in events)
    assert sink_memberships(sink) == expected_memberships(definitions, events, as_of)


@st.composite
def two_tenant_inputs(draw):
    """Definitions of two tenants with the same list ids, and events of leads with the
    same ids in both tenants, in any order, with duplicates and a few bad lines."""
    document = draw(definitions_doc(tenants=("t1", "t2"), max_lists=6))
    events = draw(event_histories(tenant="t1", leads=("L1", "L2", "L3"), max_events=20))
    others = draw(event_histories(tenant="t2", leads=("L1", "L2"), max_events=12))
    events += [e._replace(event_id="x" + e.event_id) for e in others]
    order = draw(st.permutations(range(len(events))))
    return document, [events[i] for i in order]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=two_tenant_inputs())
def test_invariants_hold_for_random_inputs_through_the_pipeline(tmp_path_factory, case):
    document, events = case
    folder = tmp_path_factory.mktemp("case")
    bad = ["not json", '{"event_id": "z", "tenant_id": "t3", "lead_id": "L1", '
                       '"type": "tag_added", "occurred_at": "2026-01-01T00:00:00Z", "tag": "a"}']
    pattern = write_events(str(folder / "events"), events, files=3, extra_lines=bad)
    sink = f"sqlite:///{folder}/out.db"
    counts = run_backfill(pattern, document, sink)
    definitions, valid = valid_events(document, events)
    as_of = max((e.occurred_at for e in valid), default=0)
    members = sink_memberships(sink)
    # 1. convergence: equal to a from-scratch evaluation of the final profiles
    assert members == expected_memberships(definitions, valid, as_of)
    # 3. isolation: a membership only ever pairs a lead with a list of its own tenant
    for tenant, lid, lead in members:
        assert lid in definitions.tenants[tenant].lists
        assert any(e.tenant_id == tenant and e.lead_id == lead for e in valid)
    # 4. nothing lost: every record read is applied, a duplicate or a dead letter
    read = len(events) + len(bad)
    assert counts["records_read"] == read
    assert read == (counts.get("events_applied", 0) + counts.get("events_stale", 0)
                    + counts.get("events_duplicate", 0) + counts.get("dead_letters", 0))
    unique = len({(e.tenant_id, e.lead_id, e.event_id) for e in valid})
    assert counts.get("events_duplicate", 0) == len(valid) - unique
    assert table_counts(sink)["dead_letters"] == counts["dead_letters"]
    # 2. idempotence: the same input again adds no row anywhere
    before = table_counts(sink)
    run_backfill(pattern, document, sink)
    assert table_counts(sink) == before


def test_a_value_nested_950_deep_is_a_dead_letter_and_the_job_goes_on(tmp_path):
    """It used to pass parsing and fail the bundle in the engine and the profile row."""
    upsert = {"event_id": "deep", "tenant_id": "acme", "lead_id": "L1",
              "type": "lead_upserted", "occurred_at": "2026-05-01T00:00:00Z",
              "fields": {"state": "NY", "history": 0}}
    deep = json.dumps(upsert).replace('"history": 0',
                                      '"history": ' + "[" * 950 + "]" * 950)
    good = dict(upsert, event_id="good", fields={"state": "NY"})
    folder = tmp_path / "events"
    folder.mkdir()
    (folder / "part-0.jsonl").write_text(deep + "\n" + json.dumps(good) + "\n")
    sink = f"sqlite:///{tmp_path}/out.db"
    counts = run_backfill(str(folder / "*.jsonl"), DOC, sink)
    assert counts["records_read"] == 2 and counts["dead_letters"] == 1
    assert counts["dead_letter_too_deep"] == 1
    db = sqlite3.connect(f"{tmp_path}/out.db")
    (reason, payload), = db.execute("SELECT reason, payload FROM dead_letters").fetchall()
    assert reason.startswith("too_deep: ") and payload == deep
    assert sink_memberships(sink) == {("acme", "east", "L1")}
