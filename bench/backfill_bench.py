"""Backfill throughput through Beam into SQLite, against a plain-Python ceiling.

Usage: python -m bench.backfill_bench [--events 1000000] [--leads 100000] [--lists 200]
       [--tenants 2] [--skip-single]

Writes the workload (initial profiles, then change events) as JSON Lines files, then in
one run measures: (1) the ceiling, a plain loop that parses every record and runs each
lead's sorted history through the same engine, without Beam or a sink; (2) the backfill
job on the DirectRunner in one process; (3) the same with two worker processes
(`--direct_num_workers=2 --direct_running_mode=multi_processing`). Each job starts from
an empty SQLite file. The last line holds the headline figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time

from bench.workload import Workload
from rules import LeadProcessor, LeadState, definitions_from_text
from schemas.events import parse_event

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_workload(folder, args):
    workload = Workload(tenants=args.tenants, lists_per_tenant=args.lists,
                        leads=args.leads // args.tenants, seed=11)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "lists.json"), "w") as handle:
        handle.write(workload.definitions_json())
    files = [open(os.path.join(folder, f"events-{i:02d}.jsonl"), "w") for i in range(8)]
    count = 0
    for tenant in workload.tenant_ids:
        for record in workload.initial_events(tenant):
            files[count % 8].write(json.dumps(record) + "\n")
            count += 1
    for record in workload.change_events(args.events - count):
        files[count % 8].write(json.dumps(record) + "\n")
        count += 1
    for handle in files:
        handle.close()
    return count


def ceiling(folder):
    """Parse + per-lead sorted replay through the engine, no Beam, no sink."""
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
    for events in histories.values():
        _, found = processor.run_history(LeadState(), events, as_of)
        deltas += len(found)
    done = time.perf_counter()
    return done - started, parsed - started, deltas


def run_job(folder, sink_path, extra):
    if os.path.exists(sink_path):
        os.remove(sink_path)
    command = [sys.executable, "-m", "pipeline", "backfill",
               "--events", os.path.join(folder, "events-*.jsonl"),
               "--lists", os.path.join(folder, "lists.json"),
               "--sink", f"sqlite:///{sink_path}", "--runner=DirectRunner", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"backfill failed:\n{done.stderr[-3000:]}")
    return elapsed, done.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--lists", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--data", default=os.path.join(ROOT, ".cache", "bench-backfill"))
    args = parser.parse_args(argv)

    shutil.rmtree(args.data, ignore_errors=True)
    total = write_workload(args.data, args)
    print(f"workload: {total} events, {args.leads} leads, {args.tenants} tenants x "
          f"{args.lists} lists, in {args.data}", file=sys.stderr)

    seconds, parse_seconds, deltas = ceiling(args.data)
    rows = [("plain Python loop (ceiling)", seconds, "")]
    print(f"ceiling: {total / seconds:,.0f} events/s ({parse_seconds:.0f}s parsing, "
          f"{deltas} deltas)", file=sys.stderr)
    runs = [] if args.skip_single else [("DirectRunner, 1 process", [])]
    runs.append(("DirectRunner, 2 processes", ["--direct_num_workers=2",
                                               "--direct_running_mode=multi_processing"]))
    outputs = {}
    for label, extra in runs:
        elapsed, out = run_job(args.data, os.path.join(args.data, "bench.db"), extra)
        rows.append((label, elapsed, out))
        outputs[label] = out
        print(f"{label}: {total / elapsed:,.0f} events/s", file=sys.stderr)

    best = total / seconds
    print(f"{'run':<30} {'seconds':>8} {'events/s':>10} {'of ceiling':>11}")
    for label, elapsed, _ in rows:
        rate = total / elapsed
        print(f"{label:<30} {elapsed:>8.1f} {rate:>10,.0f} {rate / best:>10.0%}")
    two = total / rows[-1][1]
    print(f"backfill: {two:,.0f} events/s end to end into SQLite on 2 processes, "
          f"{two / best:.0%} of the plain-Python ceiling ({best:,.0f} events/s)")


if __name__ == "__main__":
    main()
