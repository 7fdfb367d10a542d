"""The streaming evaluation under a controlled clock: TestStream on Prism.

Prism is built from the Go module at the pinned Beam version and passed with
--prism_location, with LOOPBACK workers, as Beam's own tests run it. Each test states the
runner it ran on: the result class must be Prism's.
"""

from __future__ import annotations

import json
import sqlite3

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from rules import parse_definitions
from schemas.values import DAY_US, format_ts, parse_timestamp
from schemas.records import Sweep, lead_key
from transforms.evaluate import DELTAS, PROFILES, EvaluateLeadsStreaming
from transforms.parse import DEAD_LETTERS, EVENTS, ParseEvents
from transforms.sinks import WriteTables

T0 = parse_timestamp("2026-05-01T10:00:00Z")
ENGAGED = {"tenant_id": "acme", "list_id": "engaged", "name": "Opened in the last 3 days",
           "rules": {"activity": "email_open", "within_days": 3}}
EAST = {"tenant_id": "acme", "list_id": "east", "rules": {"field": "state", "op": "in",
                                                          "value": ["NY", "MA"]}}
EAST_ENGAGED = {"tenant_id": "acme", "list_id": "east-engaged",
                "rules": {"all": [{"list": "east"}, {"list": "engaged"}]}}


def event(n, lead, at, kind, **extra):
    record = {"event_id": f"e{n}", "tenant_id": "acme", "lead_id": lead, "type": kind,
              "occurred_at": format_ts(at)}
    record.update(extra)
    return json.dumps(record).encode()


class WriteOnSweep(beam.DoFn):
    """Writes `text` into the definition file as the first sweep passes: the launcher
    sweeps after the file changed, and the workers read the file, not the sweep."""

    def __init__(self, path, text):
        self.path, self.text = path, text

    def process(self, item):
        if isinstance(item[1], Sweep) and self.text is not None:
            with open(self.path, "w") as handle:
                handle.write(self.text)
            self.text = None
        yield item


def run_stream(tmp_path, prism, document, steps, changed=None):
    """Run the streaming transforms over a TestStream; return the deltas in the sink.
    `changed`: the document the file holds from the first sweep on."""
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps(document))
    sink = f"sqlite:///{tmp_path}/out.db"
    stream = TestStream()
    for kind, value in steps:
        if kind == "watermark":
            stream = stream.advance_watermark_to(value / 1e6)
        else:
            stream = stream.add_elements([TimestampedValue(value, T0 / 1e6)])
    stream = stream.advance_watermark_to_infinity()
    # Beam keeps one Prism job server per process; a DirectRunner job of another test
    # may already have made one without --prism_location, so ask for our own.
    options = PipelineOptions(["--runner=PrismRunner", f"--prism_location={prism}",
                               "--environment_type=LOOPBACK", "--streaming",
                               "--experiments=disable_prism_server_singleton"])
    pipeline = beam.Pipeline(options=options)
    items = pipeline | stream
    records = items | "Records" >> beam.Filter(lambda x: not isinstance(x[1], Sweep))
    sweeps = (items | "Sweeps" >> beam.Filter(lambda x: isinstance(x[1], Sweep))
              | "NewFile" >> beam.ParDo(WriteOnSweep(
                  str(lists), None if changed is None else json.dumps(changed))))
    parsed = records | ParseEvents((str(lists), 3600))
    out = parsed[EVENTS] | EvaluateLeadsStreaming(str(lists), 3600, sink, sweeps=sweeps)
    {"deltas": out[DELTAS], "dead_letters": parsed[DEAD_LETTERS],
     "profiles": out[PROFILES]} | WriteTables(sink)
    result = pipeline.run()
    # a bounded wait: a timer that keeps firing (as one set between milliseconds once
    # did on Prism) must fail the test, not hang it
    state = result.wait_until_finish(duration=120_000)
    if state != beam.runners.runner.PipelineState.DONE:
        result.cancel()
        pytest.fail(f"the stream did not finish within 120 s (state {state})")
    assert type(result).__module__.endswith("portable_runner") and \
        "prism" in options.get_all_options()["runner"].lower(), "ran on Prism"
    db = sqlite3.connect(f"{tmp_path}/out.db")
    deltas = db.execute("SELECT lead_id, list_id, action, cause, event_time, cascade_depth "
                        "FROM membership_deltas ORDER BY lead_id, seq").fetchall()
    members = set(db.execute("SELECT lead_id, list_id FROM list_memberships"))
    dead = db.execute("SELECT reason FROM dead_letters").fetchall()
    return deltas, members, dead


# 1,234 µs: the flip falls inside a millisecond, and Prism keeps timer times in ms
@pytest.mark.parametrize("micros", [0, 1_234])
def test_a_window_passing_removes_the_lead_with_a_timer_delta(tmp_path, prism, micros):
    document = {"tenants": ["acme"], "lists": [ENGAGED, EAST, EAST_ENGAGED]}
    opened = T0 + 3600_000_000 + micros
    steps = [
        ("element", ("t:1", event(1, "L1", T0, "lead_upserted", fields={"state": "NY"}))),
        ("element", ("t:2", event(2, "L1", opened, "activity",
                                  activity={"kind": "email_open"}))),
        ("watermark", T0 + 10 * DAY_US),
    ]
    deltas, members, _ = run_stream(tmp_path, prism, document, steps)
    flip = opened + 3 * DAY_US
    assert deltas == [
        ("L1", "east", "added", "e1", format_ts(T0), 0),
        ("L1", "engaged", "added", "e2", format_ts(opened), 0),
        ("L1", "east-engaged", "added", "e2", format_ts(opened), 1),
        ("L1", "engaged", "removed", f"timer:{format_ts(flip)}", format_ts(flip), 0),
        ("L1", "east-engaged", "removed", f"timer:{format_ts(flip)}", format_ts(flip), 1),
    ]
    assert members == {("L1", "east")}


def test_out_of_order_late_and_duplicate_events_converge(tmp_path, prism):
    opened = {"tenant_id": "acme", "list_id": "opened-ever",
              "rules": {"activity": "email_open", "min_count": 1}}
    twice = {"tenant_id": "acme", "list_id": "opened-twice",
             "rules": {"activity": "email_open", "min_count": 2}}
    document = {"tenants": ["acme"], "lists": [EAST, opened, twice]}
    hour = 3600_000_000
    steps = [
        ("element", ("t:3", event(3, "L2", T0 + 5 * hour, "lead_upserted",
                                  fields={"state": "CA"}))),
        ("watermark", T0 + 6 * hour),
        # late: older than the watermark and than the lead's newest state; the newer
        # state value wins, the activity still counts, its duplicate does not
        ("element", ("t:1", event(1, "L2", T0, "lead_upserted", fields={"state": "MA"}))),
        ("element", ("t:2", event(2, "L2", T0 + hour, "activity",
                                  activity={"kind": "email_open"}))),
        ("element", ("t:2", event(2, "L2", T0 + hour, "activity",
                                  activity={"kind": "email_open"}))),
        ("element", ("t:9", b"{not json")),
        ("watermark", T0 + 2 * DAY_US),
    ]
    deltas, members, dead = run_stream(tmp_path, prism, document, steps)
    assert members == {("L2", "opened-ever")}
    assert deltas == [("L2", "opened-ever", "added", "e2", format_ts(T0 + hour), 0)]
    assert len(dead) == 1 and dead[0][0].startswith("not_json")


def test_a_definition_change_mid_stream_reaches_a_quiet_lead(tmp_path, prism):
    document = {"tenants": ["acme"], "lists": [EAST]}
    changed = {"tenants": ["acme"], "lists": [
        {**EAST, "rules": {"field": "state", "op": "in", "value": ["CA"]}},
        {"tenant_id": "acme", "list_id": "everyone", "rules": {"all": []}}]}
    version = parse_definitions(changed).version
    steps = [
        ("element", ("t:1", event(1, "L3", T0, "lead_upserted", fields={"state": "NY"}))),
        ("watermark", T0 + DAY_US),
        ("element", (lead_key("acme", "L3"), Sweep(version))),
        ("element", (lead_key("acme", "L3"), Sweep(version))),
        # a lead neither Beam nor the sink knows: nothing to bring in line, no profile
        ("element", (lead_key("acme", "ghost"), Sweep(version))),
        # a version the file never held: ignored
        ("element", (lead_key("acme", "L3"), Sweep("f0f0f0f0f0f0"))),
        ("watermark", T0 + 2 * DAY_US),
    ]
    deltas, members, _ = run_stream(tmp_path, prism, document, steps, changed)
    profiles = sqlite3.connect(f"{tmp_path}/out.db").execute(
        "SELECT DISTINCT lead_id FROM lead_profiles").fetchall()
    assert profiles == [("L3",)]
    assert members == {("L3", "everyone")}
    assert deltas == [
        ("L3", "east", "added", "e1", format_ts(T0), 0),
        ("L3", "east", "removed", f"definition:{version}", format_ts(T0), 0),
        ("L3", "everyone", "added", f"definition:{version}", format_ts(T0), 0),
    ]
