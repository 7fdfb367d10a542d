"""The summary a job command prints when its job ends: the job's counters and what the
sink holds."""

from __future__ import annotations


def job_counters(result):
    """{counter name: value} of the project's counters in a finished job."""
    from apache_beam.metrics.metric import MetricsFilter
    from transforms.definitions import NAMESPACE
    totals = {}
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for counter in found["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    for dist in found["distributions"]:
        value = dist.committed or dist.attempted
        if value is not None and value.count:
            totals[dist.key.metric.name] = value
    return totals


def print_summary(result, sink, seconds):
    counts = job_counters(result)
    read = counts.get("records_read", 0)
    applied, stale = counts.get("events_applied", 0), counts.get("events_stale", 0)
    duplicates, dead = counts.get("events_duplicate", 0), counts.get("dead_letters", 0)
    reasons = {k[len("dead_letter_"):]: v for k, v in counts.items()
               if k.startswith("dead_letter_") and v}
    print(f"job finished in {seconds:.1f}s ({read / max(seconds, 1e-9):,.0f} records/s)")
    print(f"records read:   {read}")
    print(f"  applied:      {applied + stale}"
          + (f" ({stale} older than a deletion, no effect)" if stale else ""))
    print(f"  duplicates:   {duplicates}")
    print(f"  dead letters: {dead}"
          + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})"
             if reasons else ""))
    balanced = read == applied + stale + duplicates + dead
    print(f"  accounted:    {'yes' if balanced else 'NO'} "
          f"(read = applied + duplicates + dead letters)")
    print(f"deltas this run: {counts.get('deltas_added', 0)} added, "
          f"{counts.get('deltas_removed', 0)} removed; "
          f"{counts.get('sink_new_deltas', 0)} new rows in the sink")
    depth, engine = counts.get("cascade_depth"), counts.get("engine_us_per_event")
    if depth is not None:
        print(f"cascade depth: mean {depth.mean:.2f}, max {depth.max}")
    if engine is not None:
        print(f"engine time: mean {engine.mean:,.0f} µs per event, max {engine.max:,} µs "
              f"(per lead history)")
    if counts.get("timers_fired"):
        print(f"timers fired: {counts['timers_fired']}")
    print_sink_summary(sink)
    return 0 if balanced else 1


def print_sink_summary(sink):
    """What the sink holds: deltas, memberships, the largest lists."""
    from schemas import tables
    from storage import open_store
    store = open_store(sink)
    try:
        totals = store.delta_counts()
        print(f"sink {sink}: {totals.get('added', 0)} added / {totals.get('removed', 0)} "
              f"removed deltas in all, {store.count(tables.LIST_MEMBERSHIPS)} memberships now")
        sizes = store.list_sizes()[:10]
        if sizes:
            print("largest lists:")
            for tenant, lid, size in sizes:
                print(f"  {size:>8}  {tenant} / {lid}")
    finally:
        store.close()

