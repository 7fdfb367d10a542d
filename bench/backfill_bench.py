"""Backfill throughput through Beam into SQLite, against a plain-Python ceiling.

Usage: python -m bench.backfill_bench [--workload standard|delta-heavy] [--events N]
       [--leads N] [--lists 200] [--tenants 2] [--files N] [--skip-single] [--profile]
       [--postgresql] [--flink-cluster]

Writes the workload (initial profiles, then change events) as JSON Lines files, then in
one run measures: (1) the ceiling, a plain loop that parses every record and runs each
lead's sorted history through the same engine, without Beam or a sink; (2) the backfill
job on the DirectRunner in one process; (3) the same with two worker processes
(`--direct_num_workers=2 --direct_running_mode=multi_processing`). Each job starts from
an empty SQLite file. `standard`: 1M events over 8 files, ~3 deltas per event.
`delta-heavy`: 440k events in one file, rules of one or two criteria on the fields that
change most, so a lead's first upsert puts it in dozens of lists and each event makes
~14 deltas. After every job the invariants are checked (read = applied + duplicates +
dead letters; the memberships equal the ceiling's; the last job run again into its sink
adds no row); `--postgresql` also runs the two-process job into a PostgreSQL server
started for the run (durable: fsync and synchronous commits on) and compares its deltas/s
with SQLite's; `--profile` runs the two-process job once more under py-spy and splits
its samples by stage; `--flink-cluster` (implies `--postgresql`) also runs the job on a
Flink session cluster started for the run (a JobManager and two TaskManagers of two
slots, each its own JVM, parallelism 2, the Python code in a worker pool:
tools/flink/cluster.py) into PostgreSQL. The last line holds the headline figures and
the checks' verdict.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time

from bench.workload import Workload
from rules import LeadProcessor, LeadState, definitions_from_text
from schemas.events import parse_event
from storage import open_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (events, leads, files, Workload arguments)
WORKLOADS = {
    "standard": (1_000_000, 100_000, 8, {}),
    "delta-heavy": (440_000, 50_000, 1, {"children": (1, 2), "field_exponent": 2.0,
                                         "numeric_step_share": 0.3}),
}
FLINK_RUN = "Flink cluster, into PostgreSQL"
TABLES = ("membership_deltas", "list_memberships", "lead_profiles", "dead_letters")


def write_workload(folder, args):
    workload = Workload(tenants=args.tenants, lists_per_tenant=args.lists,
                        leads=args.leads // args.tenants, seed=11,
                        **WORKLOADS[args.workload][3])
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "lists.json"), "w") as handle:
        handle.write(workload.definitions_json())
    width = args.files
    files = [open(os.path.join(folder, f"events-{i:02d}.jsonl"), "w") for i in range(width)]
    count = 0
    for tenant in workload.tenant_ids:
        for record in workload.initial_events(tenant):
            files[count % width].write(json.dumps(record) + "\n")
            count += 1
    for record in workload.change_events(args.events - count):
        files[count % width].write(json.dumps(record) + "\n")
        count += 1
    for handle in files:
        handle.close()
    return count


def ceiling(folder):
    """Parse + per-lead sorted replay through the engine, no Beam, no sink. Returns
    (seconds, parse seconds, engine seconds, deltas, {(tenant, list, lead)} members)."""
    with open(os.path.join(folder, "lists.json")) as handle:
        definitions = definitions_from_text(handle.read())
    processor = LeadProcessor(definitions)
    started = time.perf_counter()
    histories = collections.defaultdict(list)
    for name in sorted(os.listdir(folder)):
        if name.startswith("events-"):
            with open(os.path.join(folder, name), "rb") as handle:
                for line in handle:
                    event = parse_event(line.rstrip(b"\n"), definitions)
                    histories[event.lead_key].append(event)
    parsed = time.perf_counter()
    as_of = max(e.occurred_at for h in histories.values() for e in h)
    deltas = 0
    states = []
    for events in histories.values():
        state = LeadState()
        _, found = processor.run_history(state, events, as_of)
        deltas += len(found)
        states.append((events[0].tenant_id, events[0].lead_id, state))
    done = time.perf_counter()
    members = {(tenant, list_id, lead) for tenant, lead, state in states
               for list_id in state.members}
    return done - started, parsed - started, done - parsed, deltas, members


def job_command(folder, sink, extra):
    return [sys.executable, "-m", "pipeline", "backfill",
            "--events", os.path.join(folder, "events-*.jsonl"),
            "--lists", os.path.join(folder, "lists.json"),
            "--sink", sink,
            *([] if any(a.startswith("--runner=") for a in extra) else ["--runner=DirectRunner"]),
            *extra]


def run_job(command):
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: the counts do not balance, checked below
        raise SystemExit(f"backfill failed:\n{done.stderr[-3000:]}")
    return elapsed, done.stdout


def table_counts(sink):
    store = open_store(sink)
    try:
        return {t: store.count(t) for t in TABLES}
    finally:
        store.close()


def sink_members(sink):
    store = open_store(sink)
    try:
        return set(store.memberships())
    finally:
        store.close()


def accounted(stdout):
    return re.search(r"^\s*accounted:\s+yes\b", stdout, re.M) is not None


# -- the profile's stages -----------------------------------------------------------------
# Each sample goes to the stage of its innermost frame that one of these names (first
# match wins within a frame); frames of the standard library and C extensions are looked
# through, so json.dumps under profile_row counts as profile rows. A thread parked on a
# condition, a gRPC poll or a child process is waiting, not working: py-spy does not
# always see it as idle, so such samples are counted apart, outside the shares.
WAITING = re.compile(r"^(Condition\.wait|_serve|_run_channel_spin_thread\b|Popen\._try_wait"
                     r"|Popen\.wait|Event\.wait|Thread\._wait_for_tstate_lock|select|poll"
                     r"|Queue\.get|_worker|Thread\.run|process \d+:)[ .]")
STAGE_RULES = [
    ("profile rows", re.compile(r"^profile_row .*storage/rows\.py")),
    ("sink", re.compile(r"storage/sqlite\.py|storage/rows\.py|transforms/sinks\.py")),
    ("engine", re.compile(r"/rules/|transforms/evaluate\.py")),
    ("parse", re.compile(r"schemas/|transforms/parse\.py")),
    ("read", re.compile(r"transforms/io\.py|apache_beam/io/")),
    ("shuffle", re.compile(r"apache_beam/coders/|transforms/coders\.py|apache_beam/runners/portability/fn_api_runner"
                           r"|data_plane\.py|/grpc/|group_by_key|combiners\.py")),
    ("Beam, other", re.compile(r"apache_beam/")),
]
STAGES = ["read", "parse", "shuffle", "engine", "profile rows", "sink", "Beam, other",
          "other"]


def stage_of(stack):
    frames = stack.split(";")
    if WAITING.match(frames[-1]):
        return "waiting"
    for frame in reversed(frames):
        for stage, pattern in STAGE_RULES:
            if pattern.search(frame):
                return stage
    return "other"


def profile_job(command, out_path):
    """py-spy over the job and its worker processes: {stage: samples}."""
    spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or \
        shutil.which("py-spy")
    if spy is None:
        print("profile: py-spy not found (pip install py-spy)", file=sys.stderr)
        return None
    done = subprocess.run([spy, "record", "--subprocesses", "--rate", "50", "--format",
                           "raw", "--output", out_path, "--", *command],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0 or not os.path.exists(out_path):
        print(f"profile: py-spy failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return read_profile(out_path)


def read_profile(out_path):
    stages = collections.Counter()
    with open(out_path) as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack:
                stages[stage_of(stack)] += int(count)
    return stages


def print_stages(stages):
    """Shares of the working samples (py-spy slows the job: its seconds are not the
    timed run's)."""
    working = sum(n for stage, n in stages.items() if stage != "waiting")
    print(f"{'stage (py-spy, 2 processes)':<30} {'share':>8} {'samples':>10}")
    for stage in STAGES:
        print(f"{stage:<30} {stages[stage] / working:>8.0%} {stages[stage]:>10,}")
    print(f"{'(waiting, not in the shares)':<30} {'':>8} {stages['waiting']:>10,}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="standard")
    parser.add_argument("--events", type=int)
    parser.add_argument("--leads", type=int)
    parser.add_argument("--files", type=int, help="input files (default: the workload's)")
    parser.add_argument("--lists", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="run the two-process job again under py-spy, split by stage")
    parser.add_argument("--postgresql", action="store_true",
                        help="also write into a PostgreSQL server started for the run")
    parser.add_argument("--flink-cluster", action="store_true",
                        help="also run the job on a Flink cluster started for the run, "
                             "into PostgreSQL")
    parser.add_argument("--data", default=os.path.join(ROOT, ".cache", "bench-backfill"))
    args = parser.parse_args(argv)
    args.data = os.path.abspath(args.data)  # the job runs elsewhere, and sqlite:/// is absolute
    events, leads, files, _ = WORKLOADS[args.workload]
    args.events = args.events or events
    args.leads = args.leads or leads
    args.files = args.files or files

    shutil.rmtree(args.data, ignore_errors=True)
    total = write_workload(args.data, args)
    print(f"workload {args.workload}: {total} events, {args.leads} leads, {args.tenants} "
          f"tenants x {args.lists} lists, {args.files} file(s) in {args.data}; load "
          f"{os.getloadavg()[0]:.1f}", file=sys.stderr)

    seconds, parse_seconds, engine_seconds, deltas, reference = ceiling(args.data)
    rows = [("plain Python loop (ceiling)", seconds)]
    print(f"ceiling: {total / seconds:,.0f} events/s ({parse_seconds:.1f}s parsing, "
          f"{engine_seconds:.1f}s engine, {deltas} deltas, {deltas / total:.1f} per event)",
          file=sys.stderr)
    runs = [] if args.skip_single else [("DirectRunner, 1 process", [])]
    two = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    runs.append(("DirectRunner, 2 processes", two))
    sink = f"sqlite:///{os.path.join(args.data, 'bench.db')}"
    cluster = flink = pool = None
    args.postgresql = args.postgresql or args.flink_cluster
    if args.postgresql:
        from tools.postgres import Cluster
        cluster = Cluster(durable=True)
        runs.append(("... into PostgreSQL", two))
    failures = []
    try:
        if args.flink_cluster:
            from tools.flink.cluster import FlinkCluster, WorkerPool
            flink = FlinkCluster(taskmanagers=2, slots=2).start()
            pool = WorkerPool().start()
            print(f"Flink cluster up in {flink.start_seconds:.1f}s at {flink.rest_address}",
                  file=sys.stderr)
            runs.append((FLINK_RUN, flink.runner_args(pool)))
        for label, extra in runs:
            target = sink
            if label.endswith("PostgreSQL"):
                target = cluster.primary.uri(cluster.create_database(f"bench{len(rows)}"))
            elif os.path.exists(sink[len("sqlite:///"):]):
                os.remove(sink[len("sqlite:///"):])
            elapsed, out = run_job(job_command(args.data, target, extra))
            rows.append((label, elapsed))
            print(f"{label}: {total / elapsed:,.0f} events/s, load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr)
            if not accounted(out):
                failures.append(f"{label}: read != applied + duplicates + dead letters")
            found = sink_members(target)
            if found != reference:
                failures.append(f"{label}: memberships differ from the reference "
                                f"({len(found - reference)} extra, {len(reference - found)} "
                                "missing)")
            if label == "... into PostgreSQL" or (label == "DirectRunner, 2 processes"
                                                 and not args.postgresql):
                # the last job of each kind of sink again: a replay adds no row
                before = table_counts(target)
                _, out = run_job(job_command(args.data, target, two))
                after = table_counts(target)
                if after != before or not accounted(out):
                    failures.append(f"replay into {target.split(':')[0]}: rows {before} -> "
                                    f"{after}")
                if sink_members(target) != reference:
                    failures.append("replay: memberships differ from the reference")
    finally:
        for part in (pool, flink, cluster):
            if part:
                part.stop()

    best = total / seconds
    print(f"{'run':<30} {'seconds':>8} {'events/s':>10} {'deltas/s':>10} {'of ceiling':>11}")
    for label, elapsed in rows:
        rate = total / elapsed
        print(f"{label:<30} {elapsed:>8.1f} {rate:>10,.0f} {deltas / elapsed:>10,.0f} "
              f"{rate / best:>10.0%}")
    if args.profile:
        profiled = f"sqlite:///{os.path.join(args.data, 'profile.db')}"
        stages = profile_job(job_command(args.data, profiled, two),
                             os.path.join(args.data, "profile.txt"))
        if stages:
            print_stages(stages)
    for failure in failures:
        print(f"check failed: {failure}")
    sqlite_seconds = dict(rows)["DirectRunner, 2 processes"]
    rate = total / sqlite_seconds
    verdict = "FAILED" if failures else "hold"
    server = ""
    if args.postgresql:
        pg_seconds = dict(rows)["... into PostgreSQL"]
        server = (f"; into PostgreSQL {deltas / pg_seconds:,.0f} deltas/s, "
                  f"{sqlite_seconds / pg_seconds:.2f}x SQLite's")
    if args.flink_cluster:
        flink_seconds = dict(rows)[FLINK_RUN]
        server += (f"; on the Flink cluster {total / flink_seconds:,.0f} events/s, "
                   f"{deltas / flink_seconds:,.0f} deltas/s, "
                   f"{pg_seconds / flink_seconds:.2f}x the DirectRunner's into PostgreSQL")
    print(f"backfill ({args.workload}, {args.files} file(s)): {rate:,.0f} events/s, "
          f"{deltas / sqlite_seconds:,.0f} deltas/s end to end into SQLite on 2 processes, "
          f"{rate / best:.0%} of the plain-Python ceiling ({best:,.0f} events/s){server}; "
          f"invariants {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
