"""`reconcile`: recompute every stored lead with the reference interpreter and compare.

The shadow check: from `lead_profiles` alone, each lead's memberships are evaluated with
the reference interpreter (not the engine that made them) at the lead's own evaluation
time, and compared with `list_memberships`. The report gives, per list, how many leads
it should have, has, misses and has in excess; the command exits 1 on any difference.
With `--fix` the corrective deltas (cause `reconcile:<run>`) are written, so the sink
agrees with the definitions again. It is a Beam batch job: the comparison is a
CoGroupByKey by (tenant, list, lead), which scales like the backfill.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid

import apache_beam as beam

from rules import evaluate_tenant
from schemas import tables
from schemas.records import make_delta
from storage import open_store, parse_sink_uri
from storage.rows import state_from_row
from transforms.definitions import shared_cache
from transforms.evaluate import now_us
from transforms.progress import Progress, counter
from transforms.sinks import WriteTables

EXPECTED, FOUND = "expected", "found"


class ReadStoredTable(beam.PTransform):
    """Rows of one table of a sink: a query for BigQuery, the store's rows otherwise
    (read when the graph is built; `count` says how many, None for BigQuery)."""

    def __init__(self, sink, table):
        super().__init__()
        self.sink = sink
        self.table = table
        self.count = None

    def expand(self, pbegin):
        uri = parse_sink_uri(self.sink)
        if uri.scheme == "bigquery":
            project, dataset = uri.location.split(".", 1)
            return pbegin | beam.io.ReadFromBigQuery(
                query=f"SELECT * FROM `{project}.{dataset}.{self.table}`",
                use_standard_sql=True)
        store = open_store(self.sink)
        try:
            rows = store.rows(self.table)
        finally:
            store.close()
        self.count = len(rows)
        return pbegin | beam.Create(rows, reshuffle=False)


class ExpectedFn(beam.DoFn):
    """A stored profile -> ((tenant, list, lead), (row of the lead)) for each list the
    reference interpreter puts the lead in at its own evaluation time."""

    def setup(self):
        self.cache = shared_cache()

    def start_bundle(self):
        self.progress = counter()  # the launcher's progress line, when it shows one

    def finish_bundle(self):
        if self.progress is not None:
            self.progress.flush()

    def process(self, row, doc, as_of):
        if self.progress is not None:
            self.progress.record()
        definitions = self.cache.get(doc).definitions
        tenant = definitions.tenant(row["tenant_id"])
        state = state_from_row(row)
        now = as_of or state.clock or 0
        members = evaluate_tenant(tenant, state.profile(), now) if tenant else set()
        yield (row["tenant_id"], row["lead_id"]), (sorted(members), row)


def compare(element):
    """One lead: expected lists vs found lists -> per-list outcomes and fixes."""
    (tenant, lead), grouped = element
    expected = next(iter(grouped[EXPECTED]), None)
    found = set(grouped[FOUND])
    members, row = expected if expected else ([], None)
    for lid in set(members) | found:
        kind = "ok" if lid in found and lid in members else (
            "missing" if lid in members else "extra")
        yield "report", ((tenant, lid), kind)
    if row is not None and set(members) != found:
        yield "fix", (tenant, lead, sorted(set(members) - found), sorted(found - set(members)),
                      row)
    elif row is None:  # memberships of a lead without a stored profile: nothing to fix from
        for lid in sorted(found):
            yield "orphan", json.dumps({"tenant_id": tenant, "lead_id": lead, "list_id": lid})


def tally(element):
    (tenant, lid), kinds = element
    counts = {"expected": 0, "found": 0, "missing": 0, "extra": 0}
    for kind in kinds:
        counts["expected"] += kind in ("ok", "missing")
        counts["found"] += kind in ("ok", "extra")
        if kind in ("missing", "extra"):
            counts[kind] += 1
    return json.dumps({"tenant_id": tenant, "list_id": lid, **counts})


class FixFn(beam.DoFn):
    """Corrective deltas (and the lead's profile with its new memberships)."""

    def __init__(self, run_id):
        self.run_id = run_id

    def process(self, item):
        tenant, lead, missing, extra, row = item
        state = state_from_row(row)
        when = state.clock or now_us()
        cause = f"reconcile:{self.run_id}"
        for lid, added in [(lid, True) for lid in missing] + [(lid, False) for lid in extra]:
            state.seq += 1
            if added:
                state.members[lid] = when
            else:
                state.members.pop(lid, None)
            yield make_delta(tenant, lead, lid, added, when, cause, 0, state.seq)
        from storage.rows import profile_row
        yield beam.pvalue.TaggedOutput("profiles", profile_row(tenant, lead, state, now_us()))


def build_reconcile(p, sink, doc, report_dir, fix=False, as_of=None, run_id=None,
                    deltas_topic=None):
    """The reconcile job's graph; returns how many profiles it re-evaluates (None when
    the sink is BigQuery, whose rows the job reads itself)."""
    definitions = p | "Definitions" >> beam.Create([doc])
    as_of_pc = p | "AsOf" >> beam.Create([as_of or 0])
    read_profiles = ReadStoredTable(sink, tables.LEAD_PROFILES)
    profiles = p | "ReadProfiles" >> read_profiles
    expected = profiles | "Recompute" >> beam.ParDo(
        ExpectedFn(), beam.pvalue.AsSingleton(definitions), beam.pvalue.AsSingleton(as_of_pc))
    found = (p | "ReadMemberships" >> ReadStoredTable(sink, tables.LIST_MEMBERSHIPS)
             | "ByLead" >> beam.Map(lambda r: ((r["tenant_id"], r["lead_id"]), r["list_id"])))
    outcomes = ({EXPECTED: expected, FOUND: found} | "Join" >> beam.CoGroupByKey()
                | "Compare" >> beam.FlatMap(compare))
    (outcomes | "Report" >> beam.Filter(lambda o: o[0] == "report")
     | "ReportItems" >> beam.Map(lambda o: o[1])
     | "PerList" >> beam.GroupByKey()
     | "Tally" >> beam.Map(tally)
     | "WriteReport" >> beam.io.WriteToText(os.path.join(report_dir, "report"),
                                            file_name_suffix=".jsonl"))
    (outcomes | "Orphans" >> beam.Filter(lambda o: o[0] == "orphan")
     | "OrphanItems" >> beam.Map(lambda o: o[1])
     | "WriteOrphans" >> beam.io.WriteToText(os.path.join(report_dir, "orphans"),
                                             file_name_suffix=".jsonl"))
    if fix:
        fixed = (outcomes | "Fixes" >> beam.Filter(lambda o: o[0] == "fix")
                 | "FixItems" >> beam.Map(lambda o: o[1])
                 | "Correct" >> beam.ParDo(FixFn(run_id)).with_outputs("profiles",
                                                                       main="deltas"))
        {"deltas": fixed["deltas"], "profiles": fixed["profiles"]} | "WriteFixes" >> \
            WriteTables(sink, deltas_topic)
    return read_profiles.count


def read_report(report_dir, prefix="report"):
    rows = []
    for name in sorted(os.listdir(report_dir)):
        if name.startswith(prefix) and name.endswith(".jsonl"):
            with open(os.path.join(report_dir, name), encoding="utf-8") as handle:
                rows += [json.loads(line) for line in handle if line.strip()]
    return sorted(rows, key=lambda r: (r["tenant_id"], r["list_id"]))


def run_reconcile(argv):
    from pipeline.options import job_options, parse_time_arg
    from pipeline.prepare import prepare_deltas_topic, usable_sink
    from pipeline.options import UsageError
    from transforms.definitions import read_definitions
    options, ours = job_options(argv, "lists", "sink", command="reconcile")
    usable_sink(ours.sink, must_exist=True)
    if ours.events or ours.subscription or ours.topic:
        raise UsageError("reconcile reads the sink only: --events, --subscription and "
                         "--topic do not apply")
    as_of = parse_time_arg(ours.as_of, "as_of") if ours.as_of else None
    _, doc = read_definitions(ours.lists)
    fix = ours.fix
    if ours.deltas_topic and not fix:
        raise UsageError("--deltas_topic applies to reconcile --fix only (it writes deltas)")
    if fix:
        prepare_deltas_topic(ours.deltas_topic, ours.sink)
    report_dir = ours.report_dir or tempfile.mkdtemp(prefix="reconcile-")
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    pipeline = beam.Pipeline(options=options)
    profiles = build_reconcile(pipeline, ours.sink, doc, report_dir, fix, as_of, run_id,
                               ours.deltas_topic)
    # profiles re-evaluated and rate, on a terminal
    with Progress(label="re-evaluated", unit="profiles", total=profiles):
        pipeline.run().wait_until_finish()
    rows = read_report(report_dir)
    differ = [r for r in rows if r["missing"] or r["extra"]]
    print(f"{'tenant':<12} {'list':<28} {'expected':>9} {'found':>7} {'missing':>8} "
          f"{'extra':>6}")
    for r in rows:
        print(f"{r['tenant_id']:<12} {r['list_id']:<28} {r['expected']:>9} {r['found']:>7} "
              f"{r['missing']:>8} {r['extra']:>6}")
    missing = sum(r["missing"] for r in rows)
    extra = sum(r["extra"] for r in rows)
    if not differ:
        print(f"reconcile: the sink agrees with the definitions ({len(rows)} lists checked)")
        return 0
    action = f"fixed with cause reconcile:{run_id}" if fix else "run with --fix to repair"
    orphans = len(read_report(report_dir, "orphans"))
    if orphans:
        action += (f"; {orphans} of the extra memberships belong to leads with no stored "
                   f"profile, which --fix cannot re-evaluate and leaves (listed in "
                   f"{os.path.join(report_dir, 'orphans-*.jsonl')})")
    print(f"reconcile: {missing} missing and {extra} extra memberships in {len(differ)} "
          f"lists; {action}")
    return 1
