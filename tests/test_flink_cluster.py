"""The jobs on a real Flink session cluster: a JobManager and two TaskManagers, each its
own JVM on loopback (the `flink_cluster` fixture), the jobs submitted through Beam's
Flink job server with --flink_master=localhost:PORT, their Python code in SDK workers of
a worker pool (--environment_type=EXTERNAL), their tables in PostgreSQL (a worker cannot
be trusted to reach the launcher's SQLite file).

The streams get the sample in rounds: round k holds every lead's k-th record (in the
sample's order) and is published once round k-1 is applied and its time windows have
closed up to now. A lead's deltas depend on the order its events arrive in, and on
whether a flip timer fires before or after its next event (pstest hands messages out in
random order, and a stream's watermark follows the wall clock); in rounds, both runners
see each lead's events in one order, every due timer fired before the next, and their
deltas can be compared row by row. Both streams evaluate windows up to their own wall
clock: deltas at or after the reference run's start are left out of the comparison.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from schemas.values import parse_timestamp
from storage import open_store
from tests.helpers import expected_memberships, sink_memberships
from tests.test_pipeline_batch import sample_events, sample_lines
from tests.test_sink_contract import WRITE_TIMES, tables_of
from tools import parts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "sample")
LISTS = os.path.join(SAMPLE, "lists.json")
CHECKPOINT_MS = 2000  # short: a lead's next event is delivered once the last is acknowledged
ACK_DEADLINE_S = 10
TIMINGS = {}



def now_us():
    return int(time.time() * 1e6)


def timed(name):
    """Record how long a block took (printed with the cluster's figures)."""
    class Timer:
        def __enter__(self):
            self.started = time.monotonic()

        def __exit__(self, *exc):
            TIMINGS[name] = time.monotonic() - self.started
            print(f"\n{name}: {TIMINGS[name]:.1f}s")
    return Timer()


@pytest.fixture
def cluster(flink_cluster):
    """The session's cluster, left as found: no job running, two TaskManagers."""
    yield flink_cluster
    flink_cluster.cancel_jobs()
    while flink_cluster.alive() < 2:
        flink_cluster.start_taskmanager()


@pytest.fixture
def workers(request):
    """A worker pool for the test's jobs; its workers see the Pub/Sub emulator when the
    test uses one."""
    from tools.flink.cluster import WorkerPool
    env = {}
    if "pubsub_emulator" in request.fixturenames:
        env["PUBSUB_EMULATOR_HOST"] = request.getfixturevalue("pubsub_emulator")
    pool = WorkerPool(env=env).start()
    yield pool
    pool.stop()


def new_database(postgres, stem):
    name = postgres.create_database(f"{stem}{uuid.uuid4().hex[:10]}")
    return f"{postgres.primary.uri(name)}?read_port={postgres.replica.port}"


def run(args, timeout=900):
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n" \
                                 f"{done.stderr[-4000:]}"
    return done


def counts(stdout):
    """The summary's counts (records read .. deltas this run), no timings or paths."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("records read:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("deltas this run:"))
    return lines[start:end + 1]


# -- (a) the backfill ----------------------------------------------------------------------

def test_backfill_on_the_cluster_equals_the_direct_runner(cluster, workers, postgres,
                                                          tmp_path):
    sink = new_database(postgres, "flinkbatch")
    backfill = ["backfill", "--events", os.path.join(SAMPLE, "events", "*"),
                "--lists", LISTS]
    with timed("backfill on the cluster"):
        flink = run([*backfill, "--sink", sink, *cluster.runner_args(workers)])
    reference = f"sqlite:///{tmp_path}/direct.db"
    with timed("backfill on the DirectRunner"):
        direct = run([*backfill, "--sink", reference, "--runner=DirectRunner"])

    # it really ran on the cluster, on both TaskManagers
    finished = [job for job in cluster.jobs() if job["state"] == "FINISHED"]
    assert finished, cluster.jobs()
    job = max(finished, key=lambda job: job["start-time"])
    assert job["tasks"]["finished"] == job["tasks"]["total"] > 0
    assert len(cluster.job_taskmanagers(job["jid"])) == 2
    assert counts(flink.stdout) == counts(direct.stdout)
    assert int(counts(flink.stdout)[0].split(":")[1]) > 1000

    found, expected = tables_of(sink, WRITE_TIMES), tables_of(reference, WRITE_TIMES)
    for table in expected:
        assert found[table], f"no {table} rows from the cluster"
        assert found[table] == expected[table], f"{table} differs from the DirectRunner's"


# -- the streams -----------------------------------------------------------------------

def lead_of(line):
    try:
        record = json.loads(line)
        return record["tenant_id"], record["lead_id"]
    except (ValueError, KeyError, TypeError):
        return None


def in_rounds(lines):
    """[[line, ...], ...]: round k holds every lead's k-th record; records of no lead
    (bad ones) go in the first round."""
    rounds = collections.defaultdict(list)
    seen = collections.Counter()
    for line in lines:
        lead = lead_of(line)
        rounds[seen[lead] if lead else 0].append(line)
        if lead:
            seen[lead] += 1
    return [rounds[number] for number in sorted(rounds)]


def new_subscription():
    """A new topic, and the job's subscription on it (a short ack deadline: what a lost
    attempt pulled comes back soon)."""
    from pipeline import pubsub
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    topic = f"projects/test-project/topics/{name}"
    pubsub.ensure_topic(topic)
    return topic, pubsub.ensure_subscription(
        topic, f"projects/test-project/subscriptions/{name}", ACK_DEADLINE_S)


class Stream:
    """`python -m pipeline stream` in its own process group, its output in a log."""

    def __init__(self, tmp_path, subscription, sink, runner, name):
        self.log_path = tmp_path / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.started = now_us()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "stream", "--subscription", subscription,
             "--lists", LISTS, "--sink", sink, *runner],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def check(self):
        if self.process.poll() is not None:
            raise AssertionError(f"the stream stopped ({self.process.returncode}):\n"
                                 f"{self.log_path.read_text()[-3000:]}")

    def stop(self):
        parts.stop_group(self.process, signal.SIGKILL)
        self.log.close()


def applied_ids(sink):
    """Ids of the events the sink's lead profiles say were applied."""
    store = open_store(sink)
    try:
        return {eid for row in store.rows("lead_profiles")
                for eid in json.loads(row["state"])["seen"]}
    except Exception:  # noqa: BLE001 - no tables yet
        return set()
    finally:
        store.close()


def wait_for(predicate, timeout, what, stream, describe=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stream.check()
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; the stream's "
                         f"log: {stream.log_path}; {describe() if describe else ''}")


def deltas_before(sink, cutoff):
    """The delta rows (without write times) of events before `cutoff` (µs)."""
    rows = tables_of(sink, WRITE_TIMES)["membership_deltas"]
    return [row for row in rows if parse_timestamp(dict(row)["event_time"]) < cutoff]


def not_alternating(sink):
    """The first (tenant, lead, list) whose deltas do not alternate added/removed
    starting with added (a delta emitted twice, or one lost), or None."""
    rows = sorted((dict(row) for row in tables_of(sink, WRITE_TIMES)["membership_deltas"]),
                  key=lambda r: (r["tenant_id"], r["lead_id"], r["list_id"], r["seq"]))
    last = {}
    for row in rows:
        key = (row["tenant_id"], row["lead_id"], row["list_id"])
        if last.get(key, "removed") == row["action"]:
            return key
        last[key] = row["action"]
    return None


def reasons(sink):
    rows = tables_of(sink, WRITE_TIMES)["dead_letters"]
    return sorted(dict(row)["reason"].split(":")[0] for row in rows)


Result = collections.namedtuple("Result", "sink started members expected deltas reasons")


def stream_sample(tmp_path, sink, runner, name, during=None, timeout=300, settle=120,
                  cluster=None):
    """Stream the sample into `sink` in rounds: each is published, then waited for until
    every event of it is applied (`timeout` s), then until the memberships are the
    reference's up to now (at most `settle` s: the due timers fire, the rows of a
    checkpoint are written), and so again at the end; `during(stream,
    share applied)` is called while it runs. Returns a Result (its memberships may differ
    from `expected` after `settle`: the caller judges)."""
    from pipeline import pubsub
    from schemas.events import InvalidEvent, parse_event
    _, definitions, events, bad, _ = sample_events()
    ids = {event.event_id for event in events}
    topic, subscription = new_subscription()
    stream = Stream(tmp_path, subscription, sink, runner, name)
    so_far, wanted = [], set()
    expected = lambda: expected_memberships(definitions, so_far, now_us())  # noqa: E731
    try:
        def applied():
            found = applied_ids(sink)
            if during is not None:
                during(stream, len(found & ids) / len(ids))
            return wanted <= found

        def describe():
            found = applied_ids(sink)
            members = sink_memberships(sink) if found else set()
            state = (f"{len(found & wanted)}/{len(wanted)} events applied, "
                     f"{len(members ^ expected())} memberships off")
            if cluster is not None:
                state += f"; cluster: {cluster.describe()}"
            return state + "; " + waiting_messages(subscription)
        for lines in in_rounds(sample_lines()):
            pubsub.publish(topic, [(line, None) for line in lines], label="round")
            for line in lines:
                try:
                    so_far.append(parse_event(line, definitions))
                except InvalidEvent:
                    continue
                wanted.add(so_far[-1].event_id)
            wait_for(applied, timeout, "the round's events applied", stream, describe)
            settled(sink, expected, settle, stream)
        wait_for(lambda: len(reasons(sink)) == bad, timeout, "the dead letters", stream,
                 describe)
        settled(sink, expected, settle, stream)
        members, reference = sink_memberships(sink), expected()
    finally:
        stream.stop()
    return Result(sink, stream.started, members, reference,
                  deltas_before(sink, stream.started), reasons(sink))


def settled(sink, expected, settle, stream):
    """Wait at most `settle` s for the sink's memberships to be the reference's (rows
    wait for a checkpoint, and after a failure for the restarted job's first ones); the
    caller compares them in the end."""
    try:
        wait_for(lambda: sink_memberships(sink) == expected(), settle,
                 "the reference memberships", stream)
    except AssertionError:
        pass


def waiting_messages(subscription):
    """How many messages the job has not taken (those pulled here become outstanding
    for an ack deadline: for a failing test's message only)."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1
    subscriber = pubsub_v1.SubscriberClient()
    try:
        waiting = subscriber.pull(request={"subscription": subscription,
                                           "max_messages": 1000}, timeout=10)
        return f"{len(waiting.received_messages)} messages waiting"
    except exceptions.DeadlineExceeded:
        return "no message waiting"
    finally:
        subscriber.close()


@pytest.fixture(scope="module")
def reference_stream(pubsub_emulator, tmp_path_factory):
    """The sample streamed on the DirectRunner (into SQLite)."""
    folder = tmp_path_factory.mktemp("reference")
    with timed("stream on the DirectRunner"):
        result = stream_sample(folder, f"sqlite:///{folder}/direct.db",
                               parts.runner_args("DirectRunner"), "direct")
    assert result.members == result.expected
    return result


def cluster_stream_args(cluster, workers):
    return [*cluster.runner_args(workers, streaming=True),
            f"--checkpointing_interval={CHECKPOINT_MS}"]


def history(rows, lead):
    return [f"  {r['seq']:>3} {r['action']:<7} {r['list_id']:<20} {r['cause']}"
            for r in sorted((dict(row) for row in rows), key=lambda r: r["seq"])
            if (r["tenant_id"], r["lead_id"]) == lead]


def delta_differences(result, reference):
    """None when the stream's deltas are the reference's, row for row (ids, causes,
    depths, seq), up to the reference's start, and alternate in the sink; otherwise what
    differs, with the first lead's two histories."""
    found = [row for row in result.deltas
             if parse_timestamp(dict(row)["event_time"]) < reference.started]
    broken = not_alternating(result.sink)
    if found == reference.deltas and broken is None:
        return None
    missing = [dict(row) for row in set(reference.deltas) - set(found)]
    extra = [dict(row) for row in set(found) - set(reference.deltas)]
    leads = sorted({(r["tenant_id"], r["lead_id"]) for r in missing + extra})
    lines = [f"{len(found)} deltas against the DirectRunner's {len(reference.deltas)}: "
             f"{len(missing)} of its rows missing, {len(extra)} rows of ours extra, in "
             f"{len(leads)} lead(s) {leads[:5]}; first list whose deltas do not "
             f"alternate: {broken}"]
    for lead in leads[:1]:
        lines += [f"{lead} on the DirectRunner:", *history(reference.deltas, lead),
                  f"{lead} on the cluster:", *history(found, lead)]
    return "\n".join(lines)


# -- (b) the stream ------------------------------------------------------------------------

def test_stream_on_the_cluster_equals_the_direct_runner(pubsub_emulator, reference_stream,
                                                        cluster, workers, postgres,
                                                        tmp_path):
    sink = new_database(postgres, "flinkstream")
    with timed("stream on the cluster"):
        result = stream_sample(tmp_path, sink, cluster_stream_args(cluster, workers),
                               "flink", cluster=cluster)
    assert result.members == result.expected
    job = cluster.running_job()
    assert len(cluster.job_taskmanagers(job)) == 2, "the job runs on both TaskManagers"
    stats = cluster.checkpoints(job)
    assert stats["counts"]["completed"] >= 1, "acknowledged at checkpoints"
    assert len(result.deltas) > 1000
    assert result.reasons == reference_stream.reasons
    problem = delta_differences(result, reference_stream)
    assert problem is None, problem
    assert not broken_histories(result.sink)


# -- (c) a TaskManager lost mid-stream -------------------------------------------------------

def test_a_lost_taskmanager_restarts_the_job_from_its_checkpoint(
        pubsub_emulator, reference_stream, cluster, workers, postgres, tmp_path):
    sink = new_database(postgres, "flinkfault")
    lost = {}

    def kill_midway(stream, applied):
        if lost or applied < 0.3:
            return
        job = cluster.running_job()
        stats = cluster.checkpoints(job)
        if not stats["counts"]["completed"]:
            return  # nothing to restart from yet
        victim = sorted(cluster.job_taskmanagers(job))[0]
        lost.update(job=job, victim=victim, applied=applied, wall=now_us(),
                    checkpoint=stats["latest"]["completed"]["id"], at=time.monotonic())
        print(f"killing {victim} of {sorted(cluster.registered())} ({applied:.0%} applied, "
              f"checkpoint {lost['checkpoint']} completed)")
        cluster.kill_taskmanager(victim)
        cluster.start_taskmanager()  # a replacement, as Kubernetes would start one
        lost["replaced"] = time.monotonic() - lost["at"]

    with timed("stream on the cluster, a TaskManager killed"):
        result = stream_sample(tmp_path, sink, cluster_stream_args(cluster, workers),
                               "fault", during=kill_midway, settle=90, cluster=cluster)
    assert lost, "the stream ended before a TaskManager could be killed"
    print(f"killed {lost['victim']} with {lost['applied']:.0%} of the events applied, "
          f"after checkpoint {lost['checkpoint']}; replacement registered in "
          f"{lost['replaced']:.1f}s")
    assert lost["applied"] < 0.95, "killed mid-stream"
    # the same job, restarted (not resubmitted) from a checkpoint taken before the loss
    job = cluster.running_job()
    assert job == lost["job"]
    restored = cluster.checkpoints(job)["latest"]["restored"]
    assert restored is not None and not restored["is_savepoint"]
    assert restored["id"] >= lost["checkpoint"]
    entries = cluster.rest(f"/jobs/{job}/exceptions")["exceptionHistory"]["entries"]
    assert entries, "the loss is in the job's exception history"
    print("failures:", [(e["exceptionName"].rsplit(".", 1)[-1], e.get("taskManagerId"))
                        for e in entries])
    assert lost["victim"] not in cluster.registered()
    # nothing lost: every event applied (stream_sample waited for it), the same dead
    # letters
    assert result.reasons == reference_stream.reasons
    # Nothing twice, nothing lost, the DirectRunner's deltas: a lead whose rows were all
    # written before the loss has exactly the DirectRunner's; a lead the replay wrote
    # for has one history: seq 1..n without gap or repeat, each list alternating
    # added/removed. (Not the DirectRunner's row for row: the watermark starts again
    # from the checkpoint, so a re-delivered late event may now be evaluated before a
    # flip timer that fired before it the first time, both valid orders, which changes
    # that lead's deltas and their number.)
    touched = leads_written_after(result.sink, lost["wall"])
    found, expected = by_lead(result.deltas, reference_stream.started), \
        by_lead(reference_stream.deltas, reference_stream.started)
    untouched = set(expected) - touched
    assert untouched and all(found.get(lead) == expected[lead] for lead in untouched), \
        delta_differences(result, reference_stream)
    differing = sorted(lead for lead in touched if found.get(lead) != expected.get(lead))
    total = sum(len(rows) for rows in found.values())
    print(f"{len(untouched)} leads written before the loss equal the DirectRunner's; of "
          f"{len(touched)} written after it, {len(differing)} differ {differing[:5]}; "
          f"{total} deltas against the DirectRunner's {len(reference_stream.deltas)}")
    # one history per lead (the sink wrote only what a checkpoint held: what the lost
    # attempt wrote, its replay wrote again with the same ids), and the reference
    # memberships
    assert not forked_leads(result.sink), "two histories written for a lead"
    assert not broken_histories(result.sink), "deltas lost, repeated or out of order"
    assert result.members == result.expected, wrong_memberships(result, cluster)


def wrong_memberships(result, cluster):
    """What a failing membership check shows: the leads, the first one's deltas and
    stored state, the watermarks of the job's steps and the wall clock."""
    wrong = sorted(result.members ^ result.expected)
    tenant, _, lead = wrong[0]
    store = open_store(result.sink)
    try:
        profile = store.profile(tenant, lead)
    finally:
        store.close()
    state = json.loads(profile["state"]) if profile else {}
    lines = [f"{len(wrong)} memberships differ {wrong[:5]}, now {now_us()}",
             f"{(tenant, lead)}: profile updated {profile and profile['updated_at']}, "
             f"state {json.dumps({k: v for k, v in state.items() if k != 'seen'})[:800]}",
             *history(tables_of(result.sink, WRITE_TIMES)["membership_deltas"],
                      (tenant, lead))]
    try:
        job = cluster.running_job(timeout=5)
        for vertex in cluster.rest(f"/jobs/{job}")["vertices"]:
            marks = cluster.rest(f"/jobs/{job}/vertices/{vertex['id']}/watermarks")
            lines.append(f"{vertex['name'][:60]}: {[m['value'] for m in marks]}")
    except Exception as err:  # noqa: BLE001 - a description must not fail
        lines.append(f"(no watermarks: {err})")
    return "\n".join(lines)


def by_lead(rows, cutoff):
    """{(tenant, lead): sorted delta rows} of the rows of events before `cutoff`."""
    found = collections.defaultdict(list)
    for row in rows:
        fields = dict(row)
        if parse_timestamp(fields["event_time"]) < cutoff:
            found[(fields["tenant_id"], fields["lead_id"])].append(row)
    return {lead: sorted(rows, key=repr) for lead, rows in found.items()}


def leads_written_after(sink, moment):
    """Leads with a delta row written (processed_at) at or after `moment` (µs)."""
    return {(row["tenant_id"], row["lead_id"])
            for row in map(dict, tables_of(sink)["membership_deltas"])
            if parse_timestamp(row["processed_at"]) >= moment}


def broken_histories(sink):
    """Leads whose deltas are not one history: seq not exactly 1..n, or a list's
    deltas not alternating added/removed from added."""
    rows = sorted(map(dict, tables_of(sink, WRITE_TIMES)["membership_deltas"]),
                  key=lambda r: (r["tenant_id"], r["lead_id"], r["seq"]))
    seqs, last, broken = collections.defaultdict(list), {}, set()
    for row in rows:
        lead = (row["tenant_id"], row["lead_id"])
        seqs[lead].append(row["seq"])
        key = (*lead, row["list_id"])
        if last.get(key, "removed") == row["action"]:
            broken.add(lead)
        last[key] = row["action"]
    return broken | {lead for lead, found in seqs.items()
                     if found != list(range(1, len(found) + 1))}


def forked_leads(sink):
    """Leads two of whose deltas carry the same seq: two histories written for them."""
    seen, forked = set(), set()
    for row in tables_of(sink, WRITE_TIMES)["membership_deltas"]:
        row = dict(row)
        key = (row["tenant_id"], row["lead_id"], row["seq"])
        if key in seen:
            forked.add(key[:2])
        seen.add(key)
    return forked
