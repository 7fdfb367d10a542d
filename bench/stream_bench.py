"""Streaming latency: publish to pstest at steady rates, time each delta into SQLite.

Usage: python -m bench.stream_bench [--rates 100,500,2000] [--seconds 60] [--drain 60]
       [--flips 20] [--flip-load 0] [--runner DirectRunner] [--job-arg=--OPTION=VALUE]
       [--sdk-workers N (FlinkRunner: N Python worker processes instead of LOOPBACK)]

Starts Google's pstest Pub/Sub fake server (built from tools/pstest into .cache/bin if
missing), points PUBSUB_EMULATOR_HOST at it, and for each rate runs a fresh
`python -m pipeline stream` job (its own topic, subscription `<topic>-dynlists` and
SQLite file, in its own process group) on two lists of one tenant:

- `positive`: `n > 0`. Every measured event is a `lead_upserted` of a new lead with
  `n = 1`, so it makes exactly one `added` delta whose cause is the event id. A thread of
  this process publishes the events at the steady rate for `--seconds`, recording each
  one's publish wall time; another polls the SQLite file every 50 ms for rows with a
  rowid above the last one seen (WAL mode: each poll is its own read transaction).
  Latency = the poll that first sees the row (resolution 50 ms) minus the publish time;
  `processed_at` (stamped by the sink just before its transaction) minus the publish
  time is a second, poll-independent figure.
- `recent-open`: an `email_open` activity within 0.0002 days (17.28 s). For flip lateness
  `--flips` new leads each get one activity dated now; the job sets an event-time timer
  at the exact flip instant, and the DirectRunner's watermark follows the wall clock, so
  a `removed` delta with cause `timer:<flip>` appears soon after. Lateness = the poll that
  sees it (and its processed_at) minus the flip instant. Measured on the first rate's
  job before its rate runs, optionally under `--flip-load` background events/s.

After each job stops, the invariants are checked on its SQLite file: a profile for every
lead published to and no dead letter (nothing lost: every event applied or a duplicate);
`reconcile` finds the memberships equal to the reference interpreter's evaluation of
the stored profiles; and a backfill of every event the job was sent, into the same file,
adds no row (the stream wrote exactly the deltas a replay makes). A job stopped before
it caught up (a rate it did not sustain) is held to the reference only. The last line
says whether they held.

A rate is sustained when every event's delta arrived, the job caught up within
`--catchup` seconds after publishing stopped, and the backlog did not grow: the latency
p50 of the last 10 s of the window is at most 0.5 s above that of the first 10 s. A fresh
job per rate keeps one rate's backlog out of the next one's figures; a rate that has not
drained `--drain` seconds after its window reports the missing events as censored
latencies (shown as `>X`).

Runners (`--runner`): the DirectRunner runs the Python BundleBasedDirectRunner in
streaming mode with Beam's own Pub/Sub source (it pulls at most 10 messages per bundle);
PrismRunner (LOOPBACK workers) and FlinkRunner (embedded, parallelism 2, LOOPBACK) read
through the project's portable pull reader (transforms/pubsub.py). The publisher and the
poller run in this process, on the same machine as the job: their CPU is part of what
the job competes with. The last line holds the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

from bench.backfill_bench import accounted, table_counts
from schemas.values import format_ts, parse_timestamp
from tools import parts
from tools.parts import stop_group

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TENANT = "bench"
WINDOW_DAYS = 0.0002  # 17.28 s
LISTS = {"tenants": [TENANT], "lists": [
    {"tenant_id": TENANT, "list_id": "positive", "name": "n above zero",
     "rules": {"field": "n", "op": "gt", "value": 0}},
    {"tenant_id": TENANT, "list_id": "recent-open", "name": "opened an email just now",
     "rules": {"activity": "email_open", "within_days": WINDOW_DAYS}},
]}
POLL_SECONDS = 0.05


# -- the parts -----------------------------------------------------------------------------
def part(build):
    """A part from tools/parts.py, or the benchmark stops with its one-line reason."""
    try:
        return build()
    except (parts.Missing, parts.BuildFailed) as err:
        raise SystemExit(str(err)) from None


def runner_args(runner):
    """Command-line options of a local runner, its part built into .cache if missing."""
    return parts.runner_args(
        runner, prism=part(parts.build_prism) if runner == "PrismRunner" else None,
        flink_jar=part(parts.build_flink_job_server) if runner == "FlinkRunner" else None)


# -- the job and what it writes -------------------------------------------------------------
class Job:
    """`python -m pipeline stream` on a new topic and SQLite file, in its own group."""

    def __init__(self, folder, name, runner, extra=()):
        from pipeline import pubsub
        self.topic = f"projects/bench-project/topics/{name}-{uuid.uuid4().hex[:8]}"
        pubsub.ensure_topic(self.topic)
        pubsub.ensure_subscription(self.topic)  # before publishing: nothing is lost
        self.db = os.path.join(folder, f"{name}.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)
        self.log_path = os.path.join(folder, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "stream", "--topic", self.topic,
             "--lists", os.path.join(folder, "lists.json"), "--sink", f"sqlite:///{self.db}",
             *runner_args(runner), *extra],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.watcher = DeltaWatcher(self.db)
        self.published = []  # every event's JSON, for the checks after the job

    def publish(self, client, event):
        """Publish one event to the job's topic; returns the publish future."""
        body = json.dumps(event).encode()
        self.published.append(body)
        return client.publish(self.topic, body)

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        self.watcher.stop()
        stop_group(self.process)
        self.log.close()


class DeltaWatcher(threading.Thread):
    """Polls membership_deltas for new rows; remembers when each was first seen."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.last_rowid = 0
        # (list_id, action, cause) -> (seen wall time, processed_at, event_time) in seconds
        self.seen = {}
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.start()

    def run(self):
        db = None
        while not self.halt.is_set():
            started = time.time()
            try:
                if db is None and os.path.exists(self.path):
                    db = sqlite3.connect(self.path, timeout=5, isolation_level=None,
                                         check_same_thread=False)
                if db is not None:
                    rows = db.execute(
                        "SELECT rowid, list_id, action, cause, processed_at, event_time "
                        "FROM membership_deltas WHERE rowid > ? ORDER BY rowid",
                        (self.last_rowid,)).fetchall()
                    with self.lock:
                        for rowid, list_id, action, cause, processed, event_time in rows:
                            self.last_rowid = max(self.last_rowid, rowid)
                            self.seen.setdefault((list_id, action, cause), (
                                started, parse_timestamp(processed) / 1e6,
                                parse_timestamp(event_time) / 1e6))
            except sqlite3.OperationalError:  # no table yet, or busy: the next poll
                pass
            self.halt.wait(max(0.0, POLL_SECONDS - (time.time() - started)))
        if db is not None:
            db.close()

    def get(self, key):
        with self.lock:
            return self.seen.get(key)

    def count(self, keys):
        with self.lock:
            return sum(1 for key in keys if key in self.seen)

    def stop(self):
        self.halt.set()
        self.join(timeout=5)


# -- publishing -----------------------------------------------------------------------------
def publisher_client():
    from google.cloud import pubsub_v1
    settings = pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=0.01)
    return pubsub_v1.PublisherClient(batch_settings=settings)


def upsert(lead, now):
    return {"event_id": f"{lead}-e", "tenant_id": TENANT, "lead_id": lead,
            "type": "lead_upserted", "occurred_at": format_ts(int(now * 1e6)),
            "fields": {"n": 1}}


def email_open(lead, now):
    return {"event_id": f"{lead}-open", "tenant_id": TENANT, "lead_id": lead,
            "type": "activity", "occurred_at": format_ts(int(now * 1e6)),
            "activity": {"kind": "email_open"}}


class SteadyPublisher(threading.Thread):
    """Publishes `make(lead, now)` for new leads at `rate` per second for `seconds`
    (or until stopped); `sent` maps event id -> publish wall time."""

    def __init__(self, client, job, rate, seconds, prefix, make=upsert):
        super().__init__(daemon=True)
        self.client, self.job, self.rate, self.seconds = client, job, rate, seconds
        self.prefix, self.make = prefix, make
        self.sent = {}
        self.failed = 0
        self.halt = threading.Event()
        self.started_at = self.ended_at = None
        self.start()

    def run(self):
        futures = []
        total = None if self.seconds is None else int(round(self.rate * self.seconds))
        self.started_at = start = time.time()
        n = 0
        while (total is None or n < total) and not self.halt.is_set():
            due = start + n / self.rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            event = self.make(f"{self.prefix}-{n:07d}", now)
            futures.append(self.job.publish(self.client, event))
            self.sent[event["event_id"]] = now
            n += 1
        self.ended_at = time.time()
        for future in futures:
            try:
                future.result(timeout=120)
            except Exception:  # noqa: BLE001 - counted and reported
                self.failed += 1

    def stop(self):
        self.halt.set()
        self.join()


def wait_until(predicate, timeout, job, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if not job.alive():
            raise SystemExit(f"the job stopped while waiting for {what}; see {job.log_path}")
        time.sleep(0.1)
    return False


def warm_up(job, client, timeout):
    """Publish one event and wait for its delta: the job is reading and writing."""
    started = time.time()
    event = upsert(f"warmup-{uuid.uuid4().hex[:6]}", started)
    key = ("positive", "added", event["event_id"])
    deadline = started + timeout
    while time.time() < deadline:  # re-published until seen: the first may predate the job
        job.publish(client, upsert(event["lead_id"], time.time())).result(timeout=60)
        if wait_until(lambda: job.watcher.get(key) is not None, 10, job, "the warm-up delta"):
            return time.time() - started
    raise SystemExit(f"the job wrote no delta within {timeout}s; see {job.log_path}")


# -- figures --------------------------------------------------------------------------------
def percentile(values, q):
    """values: sorted [(seconds, censored)]; nearest-rank percentile."""
    if not values:
        return None
    index = min(len(values) - 1, max(0, int(round(q / 100 * len(values) + 0.5)) - 1))
    return values[index]


def show(value):
    if value is None:
        return "-"
    seconds, censored = value
    return f">{seconds:.2f}" if censored else f"{seconds:.2f}"


def latencies(sent, watcher, list_id, action, deadline, cause=lambda event_id: event_id):
    """[(publish time, seen latency, processed_at latency, censored)] per event."""
    found = []
    for event_id, published in sent.items():
        hit = watcher.get((list_id, action, cause(event_id)))
        if hit is None:
            found.append((published, deadline - published, deadline - published, True))
        else:
            found.append((published, hit[0] - published, hit[1] - published, False))
    return found


def summary(rows, column):
    values = sorted((row[column], row[3]) for row in rows)
    return [percentile(values, q) for q in (50, 99, 100)]


def p50_of(rows):
    return percentile(sorted((row[1], row[3]) for row in rows), 50)


# -- the runs -------------------------------------------------------------------------------
def measure_flips(job, client, count, load):
    """`count` leads each open an email now; lateness of their timer deltas."""
    background = (SteadyPublisher(client, job, load, None, "flipload")
                  if load else None)
    try:
        for i in range(count):
            event = email_open(f"flip-{i:03d}", time.time())
            job.publish(client, event)
            time.sleep(0.25)
        window = WINDOW_DAYS * 86400
        # each removed row's cause names its exact flip instant
        def all_seen():
            rows = removed_rows(job.db)
            return len(rows) >= count and all(
                job.watcher.get(("recent-open", "removed", cause)) for _, cause, _ in rows)
        wait_until(all_seen, window + 0.25 * count + 120, job, "the flip deltas")
    finally:
        if background is not None:
            background.stop()
    rows = removed_rows(job.db)
    lateness = []
    for lead, cause, event_time in rows:
        flip = parse_timestamp(cause.split(":", 1)[1]) / 1e6
        hit = job.watcher.get(("recent-open", "removed", cause))
        if hit is None:  # not seen by the poller in time: counted as missing
            continue
        lateness.append((hit[0] - flip, hit[1] - flip,
                         parse_timestamp(event_time) / 1e6 - flip))
    return lateness, count - len(lateness)


def removed_rows(path):
    try:
        db = sqlite3.connect(path, timeout=5)
        try:
            return db.execute("SELECT lead_id, cause, event_time FROM membership_deltas "
                              "WHERE list_id = 'recent-open' AND action = 'removed' AND "
                              "lead_id LIKE 'flip-%'").fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return []


def span_of(args):
    """The stretch at each end of a window whose p50s tell whether the backlog grew."""
    return min(10.0, args.seconds / 3)


def run_rate(job, client, rate, args):
    if args.warmup:  # the same stream, unmeasured, straight into the measured window
        SteadyPublisher(client, job, rate, args.warmup, f"w{rate}").join()
    publisher = SteadyPublisher(client, job, rate, args.seconds, f"r{rate}")
    publisher.join()
    window_end = publisher.ended_at
    keys = [("positive", "added", event_id) for event_id in publisher.sent]
    wait_until(lambda: job.watcher.count(keys) == len(keys), args.drain, job,
               f"the deltas of {rate} events/s")
    deadline = time.time()
    rows = latencies(publisher.sent, job.watcher, "positive", "added", deadline)
    delivered = [row for row in rows if not row[3]]
    last_seen = max((job.watcher.get(k)[0] for k in keys if job.watcher.get(k)),
                    default=window_end)
    caught_up = last_seen if len(delivered) == len(rows) else deadline
    catch_up = max(0.0, caught_up - window_end)
    span = span_of(args)
    first = [r for r in rows if r[0] < publisher.started_at + span]
    last = [r for r in rows if r[0] >= window_end - span]
    p50_first, p50_last = p50_of(first), p50_of(last)
    achieved = len(publisher.sent) / max(window_end - publisher.started_at, 1e-9)
    grew = p50_first is None or p50_last is None or p50_last[1] or \
        p50_last[0] > p50_first[0] + 0.5
    sustained = (len(delivered) == len(rows) and publisher.failed == 0
                 and catch_up <= args.catchup and not grew
                 and achieved >= 0.95 * rate)
    return {"rate": rate, "events": len(rows), "delivered": len(delivered),
            "achieved": achieved, "seen": summary(rows, 1), "processed": summary(rows, 2),
            "p50_first": p50_first, "p50_last": p50_last, "catch_up": catch_up,
            "failed": publisher.failed, "sustained": sustained}


def check_job(job, folder, caught_up=True):
    """The invariants on a stopped job's SQLite file; a sentence for each that failed.
    A job stopped before it had caught up (a rate it did not sustain) is only held to
    the reference: the events it had not read are missing by design."""
    name = os.path.basename(job.db)[:-3]
    events_path = os.path.join(folder, f"{name}-events.jsonl")
    with open(events_path, "wb") as handle:
        for body in job.published:
            handle.write(body + b"\n")
    leads = {json.loads(body)["lead_id"] for body in job.published}
    counts = table_counts(f"sqlite:///{job.db}")
    profiles, dead = counts["lead_profiles"], counts["dead_letters"]
    failures = []
    if dead or (caught_up and profiles != len(leads)):
        failures.append(f"{name}: {len(leads)} leads published to, {profiles} profiles "
                        f"and {dead} dead letters in the sink")
    lists, sink = os.path.join(folder, "lists.json"), f"sqlite:///{job.db}"
    done = subprocess.run([sys.executable, "-m", "pipeline", "reconcile", "--lists", lists,
                           "--sink", sink, "--runner=DirectRunner"],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        failures.append(f"{name}: reconcile found memberships that differ from the "
                        f"reference (exit {done.returncode}): "
                        f"{(done.stdout + done.stderr).strip().splitlines()[-1:]}")
    if not caught_up:
        print(f"{name}: stopped before it caught up: only the reference is checked",
              file=sys.stderr)
        return failures
    done = subprocess.run([sys.executable, "-m", "pipeline", "backfill", "--events",
                           events_path, "--lists", lists, "--sink", sink,
                           "--runner=DirectRunner"],
                          cwd=ROOT, capture_output=True, text=True)
    if not (done.returncode == 0 and accounted(done.stdout)
            and re.search(r"; 0 new rows in the sink", done.stdout)):
        found = re.search(r"(\d+) new rows in the sink", done.stdout)
        failures.append(f"{name}: a backfill of the {len(job.published)} events sent "
                        f"added {found.group(1) if found else 'unknown'} rows "
                        f"(exit {done.returncode})")
    print(f"{name}: {len(job.published)} events to {len(leads)} leads; checks "
          f"{'failed' if failures else 'hold'}", file=sys.stderr)
    return failures


def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,500,2000",
                        help="events/s, comma-separated (ascending)")
    parser.add_argument("--seconds", type=float, default=60, help="publishing window per rate")
    parser.add_argument("--warmup", type=float, default=0,
                        help="seconds of publishing at each rate before its measured "
                             "window (a job that has been running, JIT compilers warm)")
    parser.add_argument("--drain", type=float, default=60,
                        help="seconds to wait after a window for the last deltas")
    parser.add_argument("--catchup", type=float, default=5,
                        help="a sustained rate catches up within this many seconds")
    parser.add_argument("--flips", type=int, default=20, help="leads for flip lateness")
    parser.add_argument("--flip-load", type=float, default=0,
                        help="background events/s while flips are measured")
    parser.add_argument("--runner", default="DirectRunner",
                        choices=parts.RUNNERS)
    parser.add_argument("--startup", type=float, default=300,
                        help="seconds a job may take to write its first delta")
    parser.add_argument("--sdk-workers", type=int, default=0,
                        help="FlinkRunner: this many Python SDK worker processes from a "
                             "worker pool (EXTERNAL) instead of the LOOPBACK worker")
    parser.add_argument("--job-arg", action="append", default=[],
                        help="an extra option for the job (repeatable), e.g. "
                             "--job-arg=--max_bundle_time_millis=100")
    parser.add_argument("--data", default=os.path.join(ROOT, ".cache", "bench-stream"))
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",") if r.strip()]

    shutil.rmtree(args.data, ignore_errors=True)
    os.makedirs(args.data)
    with open(os.path.join(args.data, "lists.json"), "w") as handle:
        json.dump(LISTS, handle, indent=1)
    print(f"load average before: {load_average()} ({os.cpu_count()} cores)", file=sys.stderr)

    def terminate(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)  # so that `finally` stops the processes
    pstest, job, pool = None, None, None
    results, flips, missing_flips, failures = [], [], 0, []
    try:
        pstest, address = part(parts.start_pstest)
        os.environ["PUBSUB_EMULATOR_HOST"] = address
        job_args = list(args.job_arg)
        if args.sdk_workers:
            from tools.flink.cluster import WorkerPool
            pool = WorkerPool(env={"PUBSUB_EMULATOR_HOST": address}).start()
            job_args += pool.environment_args() + [
                f"--sdk_worker_parallelism={args.sdk_workers}"]
        client = publisher_client()
        for n, rate in enumerate(rates):
            job = Job(args.data, f"rate-{rate}", args.runner, job_args)
            startup = warm_up(job, client, args.startup)
            print(f"{rate} events/s: job up in {startup:.1f}s (log {job.log_path})",
                  file=sys.stderr)
            if n == 0 and args.flips:
                flips, missing_flips = measure_flips(job, client, args.flips, args.flip_load)
                print(f"flips: {len(flips)} measured, {missing_flips} missing",
                      file=sys.stderr)
            result = run_rate(job, client, rate, args)
            results.append(result)
            print(f"{rate} events/s: {result['delivered']}/{result['events']} deltas, "
                  f"p99 {show(result['seen'][1])}s, caught up in {result['catch_up']:.1f}s",
                  file=sys.stderr)
            job.stop()
            failures += check_job(job, args.data,
                                  caught_up=result["delivered"] == result["events"])
            job = None
    finally:
        if job is not None:
            job.stop()
        stop_group(pstest, signal.SIGTERM)
        if pool is not None:
            pool.stop()
    print(f"load average after: {load_average()}", file=sys.stderr)

    runner = args.runner
    engine = {"DirectRunner": "BundleBasedDirectRunner in streaming mode, Beam's Pub/Sub "
                              "source",
              "PrismRunner": "LOOPBACK workers, the pull reader",
              "FlinkRunner": "embedded Flink, parallelism 2, LOOPBACK, the pull reader"}[runner]
    if args.sdk_workers:
        engine = engine.replace("LOOPBACK", f"{args.sdk_workers} SDK worker processes "
                                            "from a worker pool")
    if args.job_arg:
        engine += ", job options " + " ".join(args.job_arg)
    print(f"runner: {runner} ({engine}), "
          f"{args.seconds:g}s per rate"
          + (f" after {args.warmup:g}s of warm-up at that rate" if args.warmup else "")
          + f", SQLite polled every {POLL_SECONDS * 1000:.0f} ms; "
          f"seconds from publish to the delta row seen by the poller (p50/p99/max), to "
          f"its processed_at (proc), seen p50 over the first/last {span_of(args):g}s")
    print(f"{'events/s':>8} {'sent/s':>7} {'events':>7} {'p50 s':>7} {'p99 s':>7} "
          f"{'max s':>7} {'proc p50':>8} {'p99':>7} {'max':>7} {'p50 first':>9} "
          f"{'last':>7} {'catch-up s':>10} {'sustained':>9}")
    for r in results:
        seen, proc = r["seen"], r["processed"]
        print(f"{r['rate']:>8} {r['achieved']:>7,.0f} {r['events']:>7} {show(seen[0]):>7} "
              f"{show(seen[1]):>7} {show(seen[2]):>7} {show(proc[0]):>8} "
              f"{show(proc[1]):>7} {show(proc[2]):>7} {show(r['p50_first']):>9} "
              f"{show(r['p50_last']):>7} "
              f"{show((r['catch_up'], r['delivered'] < r['events'])):>10} "
              f"{'yes' if r['sustained'] else 'no':>9}")
        if r["delivered"] < r["events"] or r["failed"]:
            print(f"{'':>8} {r['events'] - r['delivered']} deltas not seen {args.drain:g}s "
                  f"after the window; {r['failed']} publishes failed")
    flip_p50 = flip_max = None
    if flips:
        seen = sorted((f[0], False) for f in flips)
        proc = sorted((f[1], False) for f in flips)
        exact = max(abs(f[2]) for f in flips)
        flip_p50, flip_max = percentile(seen, 50), percentile(seen, 100)
        print(f"flip lateness ({len(flips)} leads, window {WINDOW_DAYS * 86400:.2f}s"
              f"{f', {args.flip_load:g} events/s background' if args.flip_load else ''}): "
              f"seen p50 {show(flip_p50)}s max {show(flip_max)}s; processed_at "
              f"p50 {show(percentile(proc, 50))}s max {show(percentile(proc, 100))}s; "
              f"event_time off the flip by at most {exact * 1e6:.0f} µs"
              + (f"; {missing_flips} flips not seen" if missing_flips else ""))
    for failure in failures:
        print(f"check failed: {failure}")
    headline_rate = 500 if 500 in rates else rates[-1]
    at = next(r for r in results if r["rate"] == headline_rate)
    sustained = [r["rate"] for r in results if r["sustained"]]
    print(f"stream: p99 {show(at['seen'][1])} s at {headline_rate} events/s on the "
          f"{runner}, highest sustained {max(sustained) if sustained else 'none'}"
          f"{' events/s' if sustained else ''}, "
          + (f"flip lateness p50 {show(flip_p50)} s / max {show(flip_max)} s" if flips
             else "flip lateness not measured")
          + f"; invariants {'FAILED' if failures else 'hold'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
