"""One contract for every store: the same input gives the same tables in SQLite, JSON
Lines and PostgreSQL (a real server, read through its streaming replica), batch by
batch and through the whole job; and PostgreSQL's reads really are the replica's."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.values import format_ts
from schemas import tables
from schemas.records import make_dead_letter, make_delta
from storage import check_sink, open_store
from storage.rows import dead_letter_row
from tests.helpers import (SAMPLE, expected_memberships, run_backfill, sink_memberships,
                           table_counts)
from tests.test_pipeline_batch import sample_events

T = tables
STAMP = format_ts(1_800_000_000_000_000)
_KINDS = {table: {c.name: c.type for c in columns} for table, columns in T.TABLES.items()}
# set by the writer at the moment it writes: equal only within one run
WRITE_TIMES = {"processed_at", "updated_at", "received_at"}


def canonical(store, table, skip=()):
    """A table as a sorted list of rows, JSON parsed and booleans as booleans."""
    kinds = _KINDS[table]
    rows = []
    for row in store.rows(table):
        rows.append(tuple(sorted(
            (name, json.loads(value) if kinds[name] == "JSON" and value is not None
             else bool(value) if kinds[name] == "BOOL" else value)
            for name, value in row.items() if name not in skip)))
    return sorted(rows, key=repr)


def tables_of(sink, skip=()):
    store = open_store(sink)
    try:
        return {table: canonical(store, table, skip) for table in T.TABLES}
    finally:
        store.close()


# -- batch by batch ----------------------------------------------------------------------
# (tenant, lead, list, added, time): made into deltas in write order, each with its own
# cause and a seq that grows, as a lead's deltas are made
deltas = st.tuples(st.sampled_from(["t1", "t2"]), st.sampled_from(["L1", "L2", "é"]),
                   st.sampled_from(["a", "b", "c"]), st.booleans(),
                   st.integers(1_700_000_000_000_000, 1_700_000_100_000_000))
field_values = st.one_of(st.text(max_size=5), st.integers(-(1 << 63), (1 << 63) - 1),
                         st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                         st.none())
leads = st.tuples(st.sampled_from(["t1", "t2"]), st.sampled_from(["L1", "L2", "é"]),
                  st.booleans(), st.dictionaries(st.text(max_size=3), field_values,
                                                 max_size=3))
# the reason follows from the payload, as parsing it again gives the same one
dead = st.builds(lambda payload: dead_letter_row(make_dead_letter(
    "file.jsonl:1", f"not_json: {payload[:2]}", payload, 1_700_000_000_000_000)),
    st.text(max_size=8))
batches = st.lists(st.tuples(st.lists(deltas, max_size=6), st.lists(leads, max_size=3),
                             st.lists(dead, max_size=2), st.booleans()), max_size=5)


def profile(tenant, lead, deleted, fields, seq):
    """A lead_profiles row (its `state` carries `seq`, which orders a lead's rows)."""
    text = lambda value: json.dumps(value, separators=(",", ":"))  # noqa: E731
    return {"tenant_id": tenant, "lead_id": lead, "deleted": deleted,
            "fields": text(fields), "tags": "[]", "static_lists": "[]", "activities": "[]",
            "memberships": "{}", "clock": None if deleted else STAMP,
            "state": text({"seq": seq, "fields": fields, "neg_zero": -0.0}),
            "updated_at": format_ts(1_800_000_000_000_000 + seq)}


@pytest.fixture(scope="module")
def pg_database(postgres):
    name = postgres.create_database("contract")
    return f"{postgres.primary.uri(name)}?read_port={postgres.replica.port}"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=batches)
def test_every_store_holds_the_same_tables_batch_by_batch(tmp_path_factory, pg_database,
                                                          batches):
    folder = tmp_path_factory.mktemp("stores")
    pg = open_store(pg_database)
    with pg.pool.connection() as conn:
        conn.execute(f"TRUNCATE {', '.join(T.TABLES)}")
    stores = {"sqlite": open_store(f"sqlite:///{folder}/s.db"),
              "jsonl": open_store(f"jsonl:///{folder}/j"), "postgresql": pg}
    seq = itertools.count(1)
    new = dict.fromkeys(stores, 0)
    written = []
    for spec, lead_batch, dead_batch, twice in batches:
        delta_batch = [make_delta(*d, f"e{n}", 0, n)
                       for d, n in zip(spec, iter(lambda: next(seq), None))]
        written += delta_batch
        profiles = [profile(*lead, next(seq)) for lead in lead_batch]
        for _ in range(2 if twice else 1):  # a retried bundle writes the same rows again
            for name, store in stores.items():
                new[name] += store.write_deltas(delta_batch, STAMP, profiles)
                store.write({T.DEAD_LETTERS: dead_batch})
    # files cannot tell a known delta from a new one: they count every row written
    assert new["postgresql"] == new["sqlite"], new
    assert new["sqlite"] == len({d.delta_id for d in written})
    found = {name: {table: canonical(store, table) for table in T.TABLES}
             for name, store in stores.items()}
    assert found["postgresql"] == found["sqlite"] == found["jsonl"]
    keys = sorted({(p[0], p[1]) for b in batches for p in b[1]})
    for name, store in stores.items():
        assert store.lead_keys() == keys, name
        assert store.delta_counts() == stores["sqlite"].delta_counts(), name
        assert store.list_sizes() == stores["sqlite"].list_sizes(), name
    for store in stores.values():
        store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.tuples(st.lists(deltas, min_size=1, max_size=6),
                                  st.lists(leads, max_size=3)), min_size=2, max_size=6),
       late=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1,
                     max_size=4))
def test_a_batch_written_again_after_newer_ones_changes_nothing(tmp_path_factory,
                                                                pg_database, batches, late):
    """A writer of a failed attempt may finish after the restarted job wrote newer rows
    of the same leads: its batch, written again late, must not take memberships or
    profiles back. `late`: (after batch i, batch j <= i again)."""
    folder = tmp_path_factory.mktemp("late")
    pg = open_store(pg_database)
    with pg.pool.connection() as conn:
        conn.execute(f"TRUNCATE {', '.join(T.TABLES)}")
    reference = open_store(f"sqlite:///{folder}/in_order.db")
    stores = {"sqlite": open_store(f"sqlite:///{folder}/late.db"), "postgresql": pg}
    seq = itertools.count(1)
    made = []
    for spec, lead_batch in batches:
        made.append(([make_delta(*d, f"e{n}", 0, n)
                      for d, n in zip(spec, iter(lambda: next(seq), None))],
                     [profile(*lead, next(seq)) for lead in lead_batch]))
    again = {}
    for after, which in late:
        after %= len(made)
        again.setdefault(after, []).append(which % (after + 1))
    for index, (delta_batch, profiles) in enumerate(made):
        reference.write_deltas(delta_batch, STAMP, profiles)
        for store in stores.values():
            store.write_deltas(delta_batch, STAMP, profiles)
            for old in again.get(index, ()):
                store.write_deltas(*made[old][:1], STAMP, made[old][1])
    expected = {table: canonical(reference, table) for table in T.TABLES}
    for name, store in stores.items():
        assert {table: canonical(store, table) for table in T.TABLES} == expected, name
    for store in (reference, *stores.values()):
        store.close()


# -- the whole job -----------------------------------------------------------------------
def test_the_sample_job_writes_the_same_tables_to_every_store(tmp_path, postgres_sink):
    document, definitions, events, bad, _ = sample_events()
    glob_ = os.path.join(SAMPLE, "events", "*")
    sinks = {"sqlite": f"sqlite:///{tmp_path}/out.db", "jsonl": f"jsonl:///{tmp_path}/out",
             "postgresql": postgres_sink}
    counts = {name: run_backfill(glob_, document, sink) for name, sink in sinks.items()}
    found = {name: tables_of(sink, WRITE_TIMES) for name, sink in sinks.items()}
    assert found["postgresql"] == found["sqlite"] == found["jsonl"]
    as_of = max(e.occurred_at for e in events)
    assert sink_memberships(postgres_sink) == expected_memberships(definitions, events, as_of)
    assert len(found["postgresql"][T.DEAD_LETTERS]) == bad > 0
    assert counts["postgresql"]["sink_new_deltas"] == counts["sqlite"]["sink_new_deltas"]
    # a replay adds no row
    before = table_counts(postgres_sink)
    again = run_backfill(glob_, document, postgres_sink)
    assert table_counts(postgres_sink) == before and again.get("sink_new_deltas", 0) == 0


def test_two_worker_processes_write_the_same_tables_to_postgresql(tmp_path, postgres_sink):
    document, _, _, _, _ = sample_events()
    glob_ = os.path.join(SAMPLE, "events", "*")
    single = f"sqlite:///{tmp_path}/one.db"
    run_backfill(glob_, document, single)
    run_backfill(glob_, document, postgres_sink,
                 extra_args=["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert tables_of(postgres_sink, WRITE_TIMES) == tables_of(single, WRITE_TIMES)


def _record(row, path):
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
    return row


def test_bigquery_recorded_rows_give_the_same_tables(tmp_path, monkeypatch):
    """BigQuery without Google Cloud: the rows the job hands to BigQuery's writers are
    recorded, loaded into SQLite as the append-only tables, and read through the views'
    SQL; they give the SQLite sink's four tables (deltas once each by id)."""
    import sqlite3

    import apache_beam as beam

    from storage.bigquery import SNAPSHOTS, memberships_view_sql, profiles_view_sql
    from transforms import sinks
    recorded = tmp_path / "recorded"
    recorded.mkdir()

    def record(self, rows, bq_table, spec_table, params, streaming, label):
        return rows | label >> beam.Map(_record, str(recorded / f"{bq_table}.jsonl"))
    monkeypatch.setattr(sinks.WriteBigQueryTables, "_write", record)
    document, _, _, _, _ = sample_events()
    glob_ = os.path.join(SAMPLE, "events", "*")
    run_backfill(glob_, document, "bigquery://test-project.dataset")
    reference = f"sqlite:///{tmp_path}/reference.db"
    run_backfill(glob_, document, reference)

    db = sqlite3.connect(str(tmp_path / "appended.db"))
    for name, spec in ((T.MEMBERSHIP_DELTAS, T.MEMBERSHIP_DELTAS),
                       (T.DEAD_LETTERS, T.DEAD_LETTERS), (SNAPSHOTS, T.LEAD_PROFILES)):
        names = T.column_names(spec)
        db.execute(f"CREATE TABLE {name} ({', '.join(names)})")
        with open(recorded / f"{name}.jsonl", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle]
        assert rows, name
        db.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(names))})",
                       [tuple(row.get(n) for n in names) for row in rows])
    found = {
        T.MEMBERSHIP_DELTAS: db.execute(f"SELECT DISTINCT * FROM {T.MEMBERSHIP_DELTAS}"),
        T.DEAD_LETTERS: db.execute(f"SELECT DISTINCT * FROM {T.DEAD_LETTERS}"),
        T.LIST_MEMBERSHIPS: db.execute(memberships_view_sql(T.MEMBERSHIP_DELTAS)),
        T.LEAD_PROFILES: db.execute(profiles_view_sql(SNAPSHOTS,
                                                      "json_extract(state, '$.seq')")),
    }
    store = open_store(reference)
    try:
        for table, cursor in found.items():
            names = [d[0] for d in cursor.description]
            def norm(name, value):  # SQLite holds booleans as 0 and 1
                return bool(value) if name == "deleted" else value
            rows = sorted((tuple((n, norm(n, v)) for n, v in zip(names, values)
                                 if n not in WRITE_TIMES) for values in cursor), key=repr)
            kept = sorted((tuple((n, norm(n, row[n])) for n in names if n not in WRITE_TIMES)
                           for row in store.rows(table)), key=repr)
            assert rows == kept, table
    finally:
        store.close()


# -- reads from the replica --------------------------------------------------------------
def _write_one(sink, cause):
    store = open_store(sink) if isinstance(sink, str) else sink
    store.write_deltas([make_delta("t", "L", "a", True, 1_700_000_000_000_000, cause, 0, 1)],
                       STAMP)


def test_reads_wait_for_the_replica_or_go_to_the_primary(postgres, postgres_sink,
                                                         monkeypatch):
    import psycopg
    from storage import postgres as pg
    monkeypatch.setattr(pg, "REPLICA_WAIT_SECONDS", 0.5)
    store = open_store(postgres_sink)
    assert store.served_by_replica()
    with store.replica.connection() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    with psycopg.connect(postgres.replica.uri(), autocommit=True) as replica:
        replica.execute("SELECT pg_wal_replay_pause()")
        try:
            _write_one(postgres_sink, "e1")
            # the replica has not replayed the write: the read goes to the primary
            assert open_store(postgres_sink).count(T.MEMBERSHIP_DELTAS) == 1
            assert not open_store(postgres_sink).served_by_replica()
            # a store reads its own writes, however fresh its last fence
            _write_one(store, "e2")
            assert store.count(T.MEMBERSHIP_DELTAS) == 2
        finally:
            replica.execute("SELECT pg_wal_replay_resume()")
    fresh = open_store(postgres_sink)
    assert fresh.served_by_replica() and fresh.count(T.MEMBERSHIP_DELTAS) == 2


def test_explain_is_served_by_the_replica_while_the_primary_is_down(tmp_path):
    """Its own servers: the primary is stopped. `explain` (a separate process) still
    answers, from the replica, which is the only server left."""
    from tools.postgres import Cluster
    from tests.conftest import _part
    cluster = _part(Cluster)
    try:
        replica = cluster.add_replica()
        name = cluster.create_database("explain")
        sink = f"{cluster.primary.uri(name)}?read_port={replica.port}"
        document, _, _, _, _ = sample_events()
        run_backfill(os.path.join(SAMPLE, "events", "*"), document, sink)
        cluster.wait_replayed(replica)
        members = sink_memberships(sink)
        cluster.primary.stop()
        with pytest.raises(ValueError, match="cannot open sink"):
            check_sink(cluster.primary.uri(name), must_exist=True)
        assert sink_memberships(sink) == members
        lists = tmp_path / "lists.json"
        lists.write_text(json.dumps(document))
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "explain", "--lists", str(lists),
             "--sink", sink, "--tenant", "acme", "--lead", "lead-0001"],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("lead lead-0001 of tenant acme")
    finally:
        cluster.stop()


# -- opening ------------------------------------------------------------------------------
def test_a_sink_that_cannot_be_used_is_one_line(postgres, postgres_sink):
    import psycopg
    with pytest.raises(ValueError) as caught:
        check_sink("postgresql://me:secret@127.0.0.1:1/db", must_exist=False)
    assert "cannot open sink" in str(caught.value) and "secret" not in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="the database has no dynlists tables"):
        check_sink(postgres_sink, must_exist=True)
    name = postgres.create_database("foreign")
    with psycopg.connect(postgres.primary.uri(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE membership_deltas (id int)")
    with pytest.raises(ValueError, match="not a dynlists database"):
        check_sink(postgres.primary.uri(name), must_exist=False)
    check_sink(postgres_sink, must_exist=False)  # a job's sink is created
    with psycopg.connect(postgres_sink.split("?")[0], autocommit=True) as conn:
        conn.execute("COMMENT ON TABLE membership_deltas IS 'dynlists schema 99'")
    with pytest.raises(ValueError, match="newer version of dynlists"):
        check_sink(postgres_sink, must_exist=False)
