"""The jobs on a real Flink session cluster: a JobManager and two TaskManagers, each its
own JVM on loopback (the `flink_cluster` fixture), the jobs submitted through Beam's
Flink job server with --flink_master=localhost:PORT, their Python code in SDK workers of
a worker pool (--environment_type=EXTERNAL), their tables in PostgreSQL (a worker cannot
be trusted to reach the launcher's SQLite file).

The streams read a subscription with message ordering, each lead's events published in
their sample order with the lead as ordering key: pstest otherwise hands messages out in
random order, and the deltas of a lead depend on the order its events arrive in (the
memberships they end in do not). So both runners see each lead's events in one order,
and their deltas can be compared row by row. Both streams evaluate time windows up to
their own wall clock: deltas at or after the reference run's start are left out of the
comparison (a window may close between the two runs).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import fastavro
import pytest

from rules.values import parse_timestamp
from storage import open_store
from tests.helpers import expected_memberships, sink_memberships
from tests.test_pipeline_batch import sample_events
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


def ordering_key(line, index):
    try:
        record = json.loads(line)
        return f"{record['tenant_id']}/{record['lead_id']}"
    except (ValueError, KeyError, TypeError):
        return f"unkeyed-{index}"


def ordered_subscription():
    """A new topic, and a subscription on it with message ordering."""
    from google.cloud import pubsub_v1

    from pipeline import pubsub
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    topic = f"projects/test-project/topics/{name}"
    subscription = f"projects/test-project/subscriptions/{name}"
    pubsub.ensure_topic(topic)
    subscriber = pubsub_v1.SubscriberClient()
    try:
        subscriber.create_subscription(request={
            "name": subscription, "topic": topic, "ack_deadline_seconds": ACK_DEADLINE_S,
            "enable_message_ordering": True})
    finally:
        subscriber.close()
    return topic, subscription


def publish_ordered(topic, lines):
    """Each key's records in order: round k holds every key's k-th record, one publish
    call per round, so that publish times follow the order within a key."""
    from google.cloud import pubsub_v1
    rounds = collections.defaultdict(list)
    seen = collections.Counter()
    for index, line in enumerate(lines):
        key = ordering_key(line, index)
        rounds[seen[key]].append(pubsub_v1.types.PubsubMessage(data=line, ordering_key=key))
        seen[key] += 1
    publisher = pubsub_v1.PublisherClient()
    try:
        for number in sorted(rounds):
            publisher.api.publish(topic=topic, messages=rounds[number], timeout=60)
            time.sleep(0.01)
    finally:
        publisher.stop()
    return len(rounds)


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


def wait_for(predicate, timeout, what, stream):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stream.check()
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; the stream's "
                         f"log: {stream.log_path}")


def deltas_before(sink, cutoff):
    """The delta rows (without write times) of events before `cutoff` (µs)."""
    rows = tables_of(sink, WRITE_TIMES)["membership_deltas"]
    return [row for row in rows if parse_timestamp(dict(row)["event_time"]) < cutoff]


def alternate(sink):
    """Each lead's deltas of each list alternate added/removed starting with added:
    no delta was emitted twice and none was lost. Returns how many there are."""
    rows = sorted((dict(row) for row in tables_of(sink, WRITE_TIMES)["membership_deltas"]),
                  key=lambda r: (r["tenant_id"], r["lead_id"], r["list_id"], r["seq"]))
    last = {}
    for row in rows:
        key = (row["tenant_id"], row["lead_id"], row["list_id"])
        assert last.get(key, "removed") != row["action"], row
        last[key] = row["action"]
    return len(rows)


def reasons(sink):
    rows = tables_of(sink, WRITE_TIMES)["dead_letters"]
    return sorted(dict(row)["reason"].split(":")[0] for row in rows)


Result = collections.namedtuple("Result", "sink started members deltas reasons")


def stream_sample(tmp_path, sink, runner, name, during=None, timeout=300):
    """Publish the sample in order, stream it into `sink` until every event is applied
    and the memberships are the reference's; `during(stream, applied)` is called while
    it runs. Returns a Result."""
    _, definitions, events, bad, _ = sample_events()
    ids = {event.event_id for event in events}
    topic, subscription = ordered_subscription()
    publish_ordered(topic, sample_lines())
    stream = Stream(tmp_path, subscription, sink, runner, name)
    try:
        def done():
            applied = applied_ids(sink)
            if during is not None:
                during(stream, len(applied & ids) / len(ids))
            return (ids <= applied and len(reasons(sink)) == bad and sink_memberships(sink)
                    == expected_memberships(definitions, events, now_us()))
        wait_for(done, timeout, "every event applied and the reference memberships", stream)
        members = sink_memberships(sink)
    finally:
        stream.stop()
    return Result(sink, stream.started, members, deltas_before(sink, stream.started),
                  reasons(sink))


@pytest.fixture(scope="module")
def reference_stream(pubsub_emulator, tmp_path_factory):
    """The sample streamed on the DirectRunner (into SQLite)."""
    folder = tmp_path_factory.mktemp("reference")
    with timed("stream on the DirectRunner"):
        return stream_sample(folder, f"sqlite:///{folder}/direct.db",
                             parts.runner_args("DirectRunner"), "direct")


def cluster_stream_args(cluster, workers):
    return [*cluster.runner_args(workers), f"--checkpointing_interval={CHECKPOINT_MS}"]


def compare_with_reference(result, reference):
    # deltas up to the reference's start: row for row (ids, causes, depths, seq, ...)
    found = [row for row in result.deltas
             if parse_timestamp(dict(row)["event_time"]) < reference.started]
    assert len(found) == len(reference.deltas) > 1000
    assert found == reference.deltas, "the deltas differ from the DirectRunner's"
    assert result.reasons == reference.reasons
    alternate(result.sink)


# -- (b) the stream ------------------------------------------------------------------------

def test_stream_on_the_cluster_equals_the_direct_runner(pubsub_emulator, reference_stream,
                                                        cluster, workers, postgres,
                                                        tmp_path):
    sink = new_database(postgres, "flinkstream")
    with timed("stream on the cluster"):
        result = stream_sample(tmp_path, sink, cluster_stream_args(cluster, workers),
                               "flink")
    job = cluster.running_job()
    assert len(cluster.job_taskmanagers(job)) == 2, "the job runs on both TaskManagers"
    stats = cluster.checkpoints(job)
    assert stats["counts"]["completed"] >= 1, "acknowledged at checkpoints"
    compare_with_reference(result, reference_stream)


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
        lost.update(job=job, victim=victim, applied=applied,
                    checkpoint=stats["latest"]["completed"]["id"], at=time.monotonic())
        cluster.kill_taskmanager(victim)
        cluster.start_taskmanager()  # a replacement, as Kubernetes would start one
        lost["replaced"] = time.monotonic() - lost["at"]

    with timed("stream on the cluster, a TaskManager killed"):
        result = stream_sample(tmp_path, sink, cluster_stream_args(cluster, workers),
                               "fault", during=kill_midway)
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
    restarts = cluster.rest(f"/jobs/{job}/metrics?get=numRestarts")
    assert int(restarts[0]["value"]) >= 1
    assert lost["victim"] not in cluster.registered()
    # nothing lost, nothing twice: the memberships are the reference's (stream_sample
    # waited for them), the deltas the DirectRunner's, row for row and in number
    compare_with_reference(result, reference_stream)
