"""The streaming job end to end on real parts: Google's pstest Pub/Sub server, the
`stream` command in its own process (on the DirectRunner with Beam's Pub/Sub source, and
on Prism and Flink with the portable pull reader), a real SQLite sink.

The sample events are from May 2026, long before the wall clock the job's watermark
follows, so every time-window flip between then and now fires as a timer: the expected
memberships are the reference evaluation of the final profiles at the current time.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from schemas.values import format_ts
from tests.helpers import SAMPLE, expected_memberships
from tests.test_pipeline_batch import sample_events
from tools import parts

ROOT = os.path.dirname(SAMPLE)
LISTS = os.path.join(SAMPLE, "lists.json")
EVENTS = os.path.join(SAMPLE, "events", "*")


def cli(*args, check=True):
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


class Job:
    """`python -m pipeline stream` in its own process group."""

    def __init__(self, tmp_path, topic, sink, lists=LISTS, name="job", runner=None):
        self.log = open(tmp_path / f"{name}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "stream", "--topic", topic, "--lists", lists,
             "--sink", sink, "--definitions_refresh_seconds=1",
             *(runner or parts.runner_args("DirectRunner"))],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, sig=signal.SIGKILL):
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=60)
        self.log.close()


def members_of(db_path):
    if not os.path.exists(db_path):
        return set()
    db = sqlite3.connect(db_path, timeout=30)
    try:
        return set(db.execute("SELECT tenant_id, list_id, lead_id FROM list_memberships"))
    except sqlite3.OperationalError:
        return set()
    finally:
        db.close()


def wait_for(predicate, timeout, what, job=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if job is not None and job.process.poll() is not None:
            raise AssertionError(f"the job stopped while waiting for {what}; see its log "
                                 f"{job.log.name}")
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def runner_args(request, name):
    """Command-line options of a local runner; Prism and Flink read through the portable
    pull reader, the DirectRunner through Beam's own Pub/Sub source."""
    return parts.runner_args(
        name, prism=request.getfixturevalue("prism") if name == "PrismRunner" else None,
        flink_jar=(request.getfixturevalue("flink_job_server") if name == "FlinkRunner"
                   else None))


ACK_DEADLINE_S = 10  # Pub/Sub's shortest


def topic_name():
    """A new topic with the job's subscription already on it, so that events published
    before the job starts wait for it, as they do in production."""
    from pipeline import pubsub
    topic = f"projects/test-project/topics/events-{uuid.uuid4().hex[:8]}"
    pubsub.ensure_topic(topic)
    pubsub.ensure_subscription(topic, ack_deadline_seconds=ACK_DEADLINE_S)
    return topic


def unacknowledged(topic):
    """Messages the job's subscription delivers again once the job is gone and every
    ack deadline has passed: those it never acknowledged."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    from pipeline import pubsub
    subscriber = pubsub_v1.SubscriberClient()
    try:
        response = subscriber.pull(request={
            "subscription": pubsub.ensure_subscription(topic), "max_messages": 1000},
            timeout=10)
        return len(response.received_messages)
    except exceptions.DeadlineExceeded:
        return 0
    finally:
        subscriber.close()


def deltas_alternate(db_path):
    """Each lead's deltas of each list alternate added/removed, starting with added: the
    proof that no delta was emitted twice and no state was lost."""
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT tenant_id, lead_id, list_id, action FROM membership_deltas "
                      "ORDER BY tenant_id, lead_id, list_id, seq").fetchall()
    last = {}
    for tenant, lead, lid, action in rows:
        previous = last.get((tenant, lead, lid), "removed")
        assert previous != action, (tenant, lead, lid, action)
        last[(tenant, lead, lid)] = action
    return len(rows)


@pytest.mark.parametrize("runner", parts.RUNNERS)
def test_sample_through_pubsub_equals_the_reference(tmp_path, pubsub_emulator, request,
                                                    runner):
    _, definitions, events, bad, _ = sample_events()
    topic = topic_name()
    db = tmp_path / "stream.db"
    cli("publish", "--events", EVENTS, "--topic", topic)  # published before the job starts
    huge = json.dumps({"event_id": "huge", "tenant_id": "acme", "lead_id": "x",
                       "type": "tag_added", "occurred_at": "2026-05-01T00:00:00Z",
                       "tag": "x" * (1 << 20)})
    (tmp_path / "bad.jsonl").write_text(huge + "\n" + '{"event_id": 1}\n')
    job = Job(tmp_path, topic, f"sqlite:///{db}", runner=runner_args(request, runner))
    try:
        expected = expected_memberships(definitions, events, int(time.time() * 1e6))
        wait_for(lambda: members_of(str(db)) == expected, 240, "the reference memberships",
                 job)
        # bad messages while it runs: dead letters, and the job keeps going
        cli("publish", "--events", str(tmp_path / "bad.jsonl"), "--topic", topic)
        reasons = lambda: [  # noqa: E731
            r[0].split(":")[0] for r in sqlite3.connect(str(db)).execute(
                "SELECT reason FROM dead_letters ORDER BY reason")]
        wait_for(lambda: len(reasons()) == bad + 2, 120, "the dead letters", job)
        assert "oversized" in reasons() and "wrong_type" in reasons()
        assert job.process.poll() is None, "the job is still running"
        assert members_of(str(db)) == expected
        # the last bundles' acknowledgements (Flink's come with its next checkpoint)
        from pipeline.stream import FLINK_CHECKPOINT_MS
        time.sleep(FLINK_CHECKPOINT_MS / 1000 + 2 if runner == "FlinkRunner" else 3)
    finally:
        job.kill()
    assert deltas_alternate(str(db)) > 1000
    time.sleep(ACK_DEADLINE_S + 2)
    assert unacknowledged(topic) == 0, "messages were read but never acknowledged"


@pytest.mark.parametrize("runner", parts.RUNNERS)
def test_a_killed_job_restarts_from_the_sink(tmp_path, pubsub_emulator, request, runner):
    _, definitions, events, _, _ = sample_events()
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    half = len(events) // 2
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    from tests.helpers import event_json
    (first / "a.jsonl").write_text("".join(event_json(e) + "\n" for e in ordered[:half]))
    (second / "b.jsonl").write_text("".join(event_json(e) + "\n" for e in ordered[half:]))
    topic = topic_name()
    db = tmp_path / "stream.db"
    sink = f"sqlite:///{db}"
    cli("publish", "--events", str(first / "*.jsonl"), "--topic", topic)
    job = Job(tmp_path, topic, sink, name="first-run", runner=runner_args(request, runner))
    try:
        part = expected_memberships(definitions, ordered[:half], int(time.time() * 1e6))
        wait_for(lambda: members_of(str(db)) == part, 240, "the first half", job)
    finally:
        job.kill()  # SIGKILL: Beam state is gone, the sink remains
    # the second half, and the whole history once more (re-deliveries)
    cli("publish", "--events", str(second / "*.jsonl"), "--topic", topic)
    cli("publish", "--events", str(first / "*.jsonl"), "--topic", topic)
    restart_completes(tmp_path, topic, db, definitions, events,
                      runner_args(request, runner), "second-run")


def restart_completes(tmp_path, topic, db, definitions, events, runner, name):
    """A job started again on the sink reaches the reference memberships of all
    `events`, with no delta repeated."""
    job = Job(tmp_path, topic, f"sqlite:///{db}", name=name, runner=runner)
    try:
        expected = expected_memberships(definitions, events, int(time.time() * 1e6))
        wait_for(lambda: members_of(str(db)) == expected, 240, "all memberships", job)
    finally:
        job.kill()
    deltas_alternate(str(db))


def test_hand_over_from_a_backfill_and_live_definitions(tmp_path, pubsub_emulator):
    """A stream started on a backfilled sink continues from it; a bad definition file is
    refused; a good new one reaches every stored lead through the launcher's sweep."""
    db = tmp_path / "sink.db"
    sink = f"sqlite:///{db}"
    lists = tmp_path / "lists.json"
    with open(LISTS) as handle:
        document = json.load(handle)
    lists.write_text(json.dumps(document))
    cli("backfill", "--events", EVENTS, "--lists", str(lists), "--sink", sink)
    connect = lambda: sqlite3.connect(str(db), timeout=30)  # noqa: E731
    before = connect().execute("SELECT COUNT(*) FROM membership_deltas").fetchone()[0]
    leads = connect().execute("SELECT COUNT(*) FROM lead_profiles").fetchone()[0]
    topic = topic_name()
    job = Job(tmp_path, topic, sink, lists=str(lists))
    try:
        # an event for Dana, already known from the backfill: evaluated against her
        # stored profile, so only what it changes is emitted (she leaves one list)
        event = {"event_id": "live-1", "tenant_id": "acme", "lead_id": "lead-0001",
                 "type": "lead_upserted", "occurred_at": "2026-05-30T00:00:00Z",
                 "fields": {"title": "Engineer"}}
        (tmp_path / "live.jsonl").write_text(json.dumps(event) + "\n")
        cli("publish", "--events", str(tmp_path / "live.jsonl"), "--topic", topic)
        caused = lambda cause: connect().execute(  # noqa: E731
            "SELECT list_id, action FROM membership_deltas WHERE cause = ?",
            (cause,)).fetchall()
        wait_for(lambda: caused("live-1"), 120, "the live event's deltas", job)
        assert ("ne-exec-briefing", "removed") in caused("live-1")
        assert all(action == "removed" for _, action in caused("live-1"))
        # a bad file: refused, the job goes on with the definitions it has
        lists.write_text('{"lists": [{"tenant_id": "acme", "list_id": "x", '
                         '"rules": {"field": "a", "op": "nope"}}]}')
        time.sleep(3)
        assert job.process.poll() is None
        # a good one: a new list every stored lead of acme belongs to
        document["lists"].append({"tenant_id": "acme", "list_id": "everyone",
                                  "rules": {"all": []}})
        lists.write_text(json.dumps(document))
        from rules import parse_definitions
        version = parse_definitions(document).version
        acme = connect().execute("SELECT COUNT(*) FROM lead_profiles WHERE tenant_id = "
                                 "'acme' AND deleted = 0").fetchone()[0]
        wait_for(lambda: len(caused(f"definition:{version}")) == acme, 180,
                 "the sweep's deltas", job)
        assert {action for _, action in caused(f"definition:{version}")} == {"added"}
    finally:
        job.kill()
    assert leads == connect().execute("SELECT COUNT(*) FROM lead_profiles").fetchone()[0]
    # the other new deltas are time windows that closed between the backfill's as-of time
    # (the newest sample event) and now, the stream's watermark
    as_of = format_ts(max(e.occurred_at for e in sample_events()[2]))
    late_flips = connect().execute(
        "SELECT COUNT(*) FROM membership_deltas WHERE cause LIKE 'timer:%' AND "
        "event_time > ?", (as_of,)).fetchone()[0]
    total = connect().execute("SELECT COUNT(*) FROM membership_deltas").fetchone()[0]
    assert total == before + len(caused("live-1")) + acme + late_flips
    deltas_alternate(str(db))


def test_the_reader_follows_the_runner():
    from transforms.pubsub import reader_for
    assert reader_for("DirectRunner") == reader_for(None) == "native"
    assert reader_for("DataflowRunner") == "native"
    assert reader_for("PrismRunner") == reader_for("FlinkRunner") == "pull"
    assert reader_for("DirectRunner", "pull") == "pull"


@pytest.mark.parametrize("runner", parts.RUNNERS)
def test_a_window_closes_on_time_while_the_stream_is_quiet(tmp_path, pubsub_emulator, request,
                                                           runner):
    """A lead opens an email now; a list of "opened in the last 8.64 s" loses it by timer,
    with the exact flip instant, though no other message arrives."""
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps({"tenants": ["acme"], "lists": [
        {"tenant_id": "acme", "list_id": "just-opened",
         "rules": {"activity": "email_open", "within_days": 0.0001}}]}))
    topic = topic_name()
    db = tmp_path / "stream.db"
    job = Job(tmp_path, topic, f"sqlite:///{db}", lists=str(lists),
              runner=runner_args(request, runner))
    try:
        opened = int(time.time() * 1e6) + 1_234  # not on a whole millisecond
        (tmp_path / "open.jsonl").write_text(json.dumps(
            {"event_id": "open-1", "tenant_id": "acme", "lead_id": "L1", "type": "activity",
             "occurred_at": format_ts(opened), "activity": {"kind": "email_open"}}) + "\n")
        cli("publish", "--events", str(tmp_path / "open.jsonl"), "--topic", topic)
        rows = lambda: sqlite3.connect(str(db), timeout=30).execute(  # noqa: E731
            "SELECT action, cause, event_time FROM membership_deltas ORDER BY seq").fetchall() \
            if os.path.exists(db) else []
        wait_for(lambda: len(rows()) >= 2, 180, "the timer's delta", job)
        flip = format_ts(opened + 8_640_000)
        assert rows() == [("added", "open-1", format_ts(opened)),
                          ("removed", f"timer:{flip}", flip)]
    finally:
        job.kill()


def test_the_control_plane_cannot_be_forged(tmp_path, pubsub_emulator):
    """Rules come only from the job's own definition file. A sweep naming a version the
    file never held (rules and a far-future issue time inside), a sweep for the current
    version carrying other rules, and a control message on the events subscription each
    change no membership and no lead's version; a genuine change is still swept."""
    from pipeline import pubsub
    from rules import parse_definitions
    from transforms.pubsub import CONTROL_ATTRIBUTE
    tagged = {"tenant_id": "acme", "list_id": "tagged", "rules": {"tag": "vip"}}
    v1 = {"tenants": ["acme"], "lists": [tagged]}
    forged = {"tenants": ["acme"], "lists": [{**tagged, "rules": {"tag": "nobody"}}]}
    v2 = {"tenants": ["acme"], "lists": [tagged, {"tenant_id": "acme", "list_id": "all",
                                                  "rules": {"all": []}}]}
    version1, forged_version, version2 = (parse_definitions(d).version
                                          for d in (v1, forged, v2))
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps(v1))
    topic = topic_name()
    control_topic = f"{topic}-control"
    db = tmp_path / "stream.db"
    connect = lambda: sqlite3.connect(str(db), timeout=30)  # noqa: E731
    job = Job(tmp_path, topic, f"sqlite:///{db}", lists=str(lists))
    try:
        events = [{"event_id": f"e{n}", "tenant_id": "acme", "lead_id": lead,
                   "type": "tag_added", "occurred_at": "2026-05-01T00:00:00Z",
                   "tag": "vip"} for n, lead in enumerate(("L1", "L2"))]
        pubsub.publish(topic, [(json.dumps(e).encode(), None) for e in events])
        wait_for(lambda: members_of(str(db)) == {("acme", "tagged", "L1"),
                                                 ("acme", "tagged", "L2")}, 180,
                 "the first memberships", job)
        before = members_of(str(db))

        def sweep(version, rules, issued_at=None):
            body = {"version": version, "leads": [["acme", "L1"], ["acme", "L2"]],
                    "definitions": json.dumps(rules)}
            if issued_at is not None:
                body["issued_at"] = issued_at
            return json.dumps(body).encode(), {CONTROL_ATTRIBUTE: "sweep"}
        far_future = int((time.time() + 10 * 365 * 86400) * 1e6)
        pubsub.ensure_topic(control_topic)
        pubsub.publish(control_topic, [
            sweep(forged_version, forged, far_future),  # a version the file never held
            sweep(version1, forged, far_future),        # ours, with other rules inside
            (b"not a sweep", {CONTROL_ATTRIBUTE: "sweep"})])  # a marker: bad_control
        pubsub.publish(topic, [sweep(forged_version, forged)])  # control on events
        reasons = lambda: {r[0].split(":")[0] for r in connect().execute(  # noqa: E731
            "SELECT reason FROM dead_letters")} if os.path.exists(db) else set()
        wait_for(lambda: {"bad_control", "control_on_events"} <= reasons(), 120,
                 "the refused control messages", job)
        time.sleep(3)
        assert members_of(str(db)) == before
        followed = lambda: {r[0] for r in connect().execute(  # noqa: E731
            "SELECT json_extract(state, '$.defs_version') FROM lead_profiles")}
        assert followed() == {version1}
        # the genuine change: the launcher sees the file and sweeps; neither the forged
        # version nor the far-future issue time holds it back
        lists.write_text(json.dumps(v2))
        caused = lambda cause: connect().execute(  # noqa: E731
            "SELECT lead_id, list_id, action FROM membership_deltas WHERE cause = ?",
            (cause,)).fetchall()
        wait_for(lambda: len(caused(f"definition:{version2}")) == 2, 120,
                 "the genuine sweep", job)
        time.sleep(3)
    finally:
        job.kill()
    assert sorted(caused(f"definition:{version2}")) == [("L1", "all", "added"),
                                                       ("L2", "all", "added")]
    assert caused(f"definition:{forged_version}") == []
    assert caused(f"definition:{version1}") == []
    assert members_of(str(db)) == before | {("acme", "all", "L1"), ("acme", "all", "L2")}
    assert followed() == {version2}
    deltas_alternate(str(db))


def outstanding(topic):
    """(event ids, payloads) of the messages the job's subscription would deliver now:
    never acknowledged, or never delivered. They are taken off it; the caller publishes
    the payloads again for the next job."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    from pipeline import pubsub
    subscription = pubsub.ensure_subscription(topic)
    subscriber = pubsub_v1.SubscriberClient()
    ids, payloads = set(), []
    try:
        while True:
            try:
                response = subscriber.pull(request={"subscription": subscription,
                                                    "max_messages": 1000}, timeout=10)
            except exceptions.DeadlineExceeded:
                break
            if not response.received_messages:
                break
            for item in response.received_messages:
                payloads.append(item.message.data)
                try:
                    ids.add(json.loads(item.message.data)["event_id"])
                except (ValueError, KeyError, TypeError):
                    pass
            subscriber.acknowledge(request={
                "subscription": subscription,
                "ack_ids": [item.ack_id for item in response.received_messages]})
    finally:
        subscriber.close()
    return ids, payloads


def written_event_ids(db_path):
    """Ids of the events the sink's profiles say were applied (each lead's seen ids)."""
    rows = sqlite3.connect(db_path).execute("SELECT state FROM lead_profiles")
    return {eid for (state,) in rows for eid in json.loads(state)["seen"]}


@pytest.mark.parametrize("runner", parts.RUNNERS)
def test_sigterm_drains_the_job_and_a_restart_goes_on(tmp_path, pubsub_emulator, request,
                                                      runner):
    """SIGTERM mid-stream: the job stops pulling, finishes, writes and acknowledges what
    it holds, and exits 0; nothing it wrote is delivered again, and a restart completes
    the memberships with no delta repeated."""
    _, definitions, events, _, _ = sample_events()
    from tests.helpers import event_json
    unique = {e.event_id: e for e in events}  # one message per event: ids tell them apart
    first, *rest = sorted(unique.values(), key=lambda e: (e.occurred_at, e.event_id))
    (tmp_path / "events.jsonl").write_text("".join(event_json(e) + "\n" for e in rest))
    topic = topic_name()
    db = tmp_path / "stream.db"
    sink = f"sqlite:///{db}"
    job = Job(tmp_path, topic, sink, name="drained", runner=runner_args(request, runner))
    publisher = None
    try:
        from pipeline import pubsub
        pubsub.publish(topic, [(event_json(first).encode(), None)])
        count = lambda: sqlite3.connect(str(db), timeout=30).execute(  # noqa: E731
            "SELECT COUNT(*) FROM lead_profiles").fetchone()[0] if os.path.exists(db) else 0
        wait_for(lambda: count() >= 1, 240, "the job to be up", job)
        # then the rest at a steady rate (~27 s of it), stopped a few seconds in
        publisher = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "publish", "--events",
             str(tmp_path / "events.jsonl"), "--topic", topic, "--rate", "40"], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: count() >= 10, 120, "the stream to be under way", job)
        job.process.send_signal(signal.SIGTERM)  # the launcher only: a user's Ctrl-C
        assert job.process.wait(timeout=240) == 0, open(job.log.name).read()[-3000:]
        assert "drained" in open(job.log.name).read()
        assert publisher.wait(timeout=240) == 0
    finally:
        job.kill()
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
    written = written_event_ids(str(db))
    assert written and len(written) < len(unique), "drained mid-stream"
    time.sleep(ACK_DEADLINE_S + 2)  # what the job pulled and did not acknowledge is back
    waiting, payloads = outstanding(topic)
    assert not written & waiting, "applied events were delivered again"
    assert set(unique) <= written | waiting, "events were lost"
    from pipeline import pubsub
    pubsub.publish(topic, [(data, None) for data in payloads])
    restart_completes(tmp_path, topic, db, definitions, events,
                      runner_args(request, runner), "restarted")


def test_pubsub_problems_are_one_line(tmp_path, pubsub_emulator):
    """A missing subscription or topic, and an emulator nobody listens on: one line on
    stderr, exit status 2, no traceback."""
    db = tmp_path / "sink.db"
    cli("backfill", "--events", EVENTS, "--lists", LISTS, "--sink", f"sqlite:///{db}")
    cases = [
        (["stream", "--subscription", "projects/test-project/subscriptions/missing",
          "--lists", LISTS, "--sink", f"sqlite:///{db}"], {},
         "no subscription projects/test-project/subscriptions/missing"),
        (["sweep", "--control_topic", "projects/test-project/topics/missing", "--lists",
          LISTS, "--sink", f"sqlite:///{db}"], {},
         "no topic projects/test-project/topics/missing to publish to"),
        (["stream", "--topic", "projects/test-project/topics/t", "--lists", LISTS,
          "--sink", f"sqlite:///{db}"], {"PUBSUB_EMULATOR_HOST": "127.0.0.1:9"},
         "cannot reach the emulator at 127.0.0.1:9"),
    ]
    for args, env, message in cases:
        done = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 2, done.stderr[-2000:]
        assert len(lines) == 1 and message in lines[0], done.stderr[-2000:]
        assert "Traceback" not in done.stderr
