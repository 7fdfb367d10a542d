"""The BigQuery sink without Google Cloud: rows against the schemas, the views' SQL run
on SQLite over the same rows, the refused-row path, the calls that make the views, and
lead keys read a page of the query result at a time.

Not exercised here: real inserts and load jobs, and the views on BigQuery itself.
"""

from __future__ import annotations

import json
import os
import sqlite3

import apache_beam as beam
import pytest
from apache_beam.io.gcp.bigquery_tools import parse_table_schema_from_json
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from rules import LeadProcessor, LeadState
from schemas.values import parse_timestamp
from schemas import tables
from schemas.records import make_dead_letter
from storage.bigquery import (SNAPSHOTS, bigquery_views, ensure_views, memberships_view_sql,
                              profiles_view_sql, table_schema, written_tables)
from storage.rows import dead_letter_row, delta_row, profile_row
from tests.helpers import SAMPLE, run_backfill
from tests.test_pipeline_batch import sample_events
from transforms.sinks import failed_row_dead_letter


def check_row(schema, row):
    """Raise AssertionError unless `row` fits the BigQuery schema."""
    fields = {f["name"]: f for f in schema["fields"]}
    assert set(row) <= set(fields), set(row) - set(fields)
    for name, field in fields.items():
        value = row.get(name)
        if value is None:
            assert field["mode"] == "NULLABLE", f"{name} is required"
            continue
        kind = field["type"]
        if kind == "STRING":
            assert isinstance(value, str), (name, value)
        elif kind == "INT64":
            assert isinstance(value, int) and not isinstance(value, bool), (name, value)
        elif kind == "BOOL":
            assert isinstance(value, bool), (name, value)
        elif kind == "TIMESTAMP":
            parse_timestamp(value)
        else:
            raise AssertionError(f"unexpected type {kind}")


def test_every_row_the_pipeline_makes_fits_its_schema():
    _, definitions, events, _, _ = sample_events()
    processor = LeadProcessor(definitions)
    states, deltas = {}, []
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        state = states.setdefault((event.tenant_id, event.lead_id), LeadState())
        deltas += processor.on_event(state, event)[1]
    schemas = {t: table_schema(spec) for t, (spec, _) in written_tables().items()}
    for schema in schemas.values():
        parse_table_schema_from_json(json.dumps(schema))  # BigQuery's own reading of it
    for delta in deltas:
        check_row(schemas[tables.MEMBERSHIP_DELTAS], delta_row(delta, 1_800_000_000_000_000))
    for (tenant, lead), state in states.items():
        row = profile_row(tenant, lead, state, 1_800_000_000_000_000)
        check_row(schemas[SNAPSHOTS], row)
        json.loads(row["state"])
    dead = make_dead_letter("f:1", "not_json: x", "{oops", 1_800_000_000_000_000)
    check_row(schemas[tables.DEAD_LETTERS], dead_letter_row(dead))
    assert written_tables()[tables.MEMBERSHIP_DELTAS][1] == {
        "timePartitioning": {"type": "DAY", "field": "event_time"},
        "clustering": {"fields": ["tenant_id", "list_id"]}}


def test_the_views_give_what_the_sqlite_sink_keeps(tmp_path):
    document, _, _, _, _ = sample_events()
    run_backfill(os.path.join(SAMPLE, "events", "*"), document, f"sqlite:///{tmp_path}/o.db")
    db = sqlite3.connect(f"{tmp_path}/o.db")
    kept = set(db.execute("SELECT tenant_id, list_id, lead_id, since, seq "
                          "FROM list_memberships"))
    assert len(kept) > 500
    assert set(db.execute(memberships_view_sql("membership_deltas"))) == kept
    # at-least-once appends: every delta twice more, later; the view does not change
    db.execute("CREATE TABLE appended AS SELECT * FROM membership_deltas")
    db.execute("INSERT INTO appended SELECT delta_id, tenant_id, lead_id, list_id, action, "
               "event_time, cause, cascade_depth, seq, '2999-01-01T00:00:00.000000Z' "
               "FROM membership_deltas")
    assert set(db.execute(memberships_view_sql("appended"))) == kept
    # profile snapshots: an older snapshot of every lead beside the newest
    latest = set(db.execute("SELECT * FROM lead_profiles"))
    db.execute("CREATE TABLE snapshots AS SELECT * FROM lead_profiles")
    db.execute("INSERT INTO snapshots SELECT tenant_id, lead_id, deleted, '{}', tags, "
               "static_lists, activities, memberships, clock, "
               "json_set(state, '$.seq', json_extract(state, '$.seq') - 1), updated_at "
               "FROM lead_profiles")
    view = profiles_view_sql("snapshots", "json_extract(state, '$.seq')")
    assert set(db.execute(view)) == latest


def test_refused_rows_become_dead_letters():
    failure = ("test-project:lists.membership_deltas", {"delta_id": "d1", "seq": "x"},
               [{"reason": "invalid", "message": "seq: not an integer"}])
    with TestPipeline() as p:
        dead = p | beam.Create([failure, failure]) | beam.Map(failed_row_dead_letter)
        assert_that(dead | beam.Map(lambda d: (d.source, d.reason.split(":")[0],
                                               json.loads(d.payload)["delta_id"],
                                               len(d.dead_letter_id))),
                    equal_to([("bigquery:test-project:lists.membership_deltas",
                               "bigquery_insert", "d1", 32)] * 2))
    first, second = failed_row_dead_letter(failure), failed_row_dead_letter(failure)
    assert first.dead_letter_id == second.dead_letter_id, "a retry adds no second row"


class RecordingClient:
    """Stands in for google.cloud.bigquery.Client: Google Cloud is out of reach here."""

    def __init__(self):
        self.calls = []
        self.tables = set()

    def create_dataset(self, name, exists_ok):
        self.calls.append(("dataset", name, exists_ok))

    def create_table(self, table):
        from google.api_core.exceptions import Conflict
        if str(table.reference) in self.tables:
            raise Conflict(f"Already Exists: {table.reference}")
        self.tables.add(str(table.reference))
        self.calls.append(("view", str(table.reference), table.view_query))

    def update_table(self, table, fields):
        self.calls.append(("update", str(table.reference), table.view_query, tuple(fields)))


def test_launcher_creates_the_dataset_and_the_views():
    client = RecordingClient()
    ensure_views("test-project", "lists", client)
    assert client.calls[0] == ("dataset", "test-project.lists", True)
    views = {call[1]: call[2] for call in client.calls if call[0] == "view"}
    assert set(views) == {"test-project.lists.list_memberships",
                          "test-project.lists.lead_profiles"}
    assert views == {f"test-project.lists.{k}": v
                     for k, v in bigquery_views("test-project", "lists").items()}
    assert "`test-project.lists.membership_deltas`" in views["test-project.lists.list_memberships"]
    # the next launch updates the views in place: never dropped, so readers never miss one
    client.calls.clear()
    ensure_views("test-project", "lists", client)
    assert sorted(call[0] for call in client.calls) == ["dataset", "update", "update"]
    assert {call[1]: call[2] for call in client.calls if call[0] == "update"} == views
    assert all(call[3] == ("view_query",) for call in client.calls if call[0] == "update")


def test_reconcile_fixes_go_through_the_bigquery_writers():
    """`reconcile --fix` on a BigQuery sink writes its deltas and profiles with the same
    writers as the jobs (it called a store method BigQuery does not have)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.reconcile import build_reconcile
    from transforms.definitions import read_definitions
    _, doc = read_definitions(os.path.join(SAMPLE, "lists.json"))
    pipeline = beam.Pipeline(options=PipelineOptions(["--project=test-project"]))
    build_reconcile(pipeline, "bigquery://test-project.lists", doc, "/nonexistent", fix=True,
                    run_id="r1")
    labels, stack = [], list(pipeline.transforms_stack[0].parts)
    while stack:
        node = stack.pop()
        labels.append(node.full_label)
        stack.extend(node.parts)
    writers = {label for label in labels if label.startswith("WriteFixes/")
               and label.count("/") <= 2}
    assert writers == {"WriteFixes/BigQuery", "WriteFixes/BigQuery/DeltaRows",
                       f"WriteFixes/BigQuery/Write_{tables.MEMBERSHIP_DELTAS}",
                       f"WriteFixes/BigQuery/Write_{SNAPSHOTS}"}


class QueryingClient:
    """Stands in for the client for queries: runs their SQL on SQLite, where the dataset's
    tables are SQLite tables, and hands the result back through the client library's own
    RowIterator, one request a page, answered as BigQuery pages a query's results."""

    def __init__(self, db):
        self.db = db
        self.queries, self.requests = [], []

    def query(self, sql, job_config=None):
        self.queries.append(sql)
        cursor = self.db.execute(sql.replace("`test-project.lists.", "").replace("`", ""))
        names, rows = [d[0] for d in cursor.description], cursor.fetchall()
        return _FinishedQuery(self, names, rows)


class _FinishedQuery:
    def __init__(self, client, names, rows):
        self.client, self.names, self.rows = client, names, rows

    def result(self, page_size=None):
        from google.cloud.bigquery import SchemaField
        from google.cloud.bigquery.table import RowIterator
        rows = self.rows

        def api_request(method, path, query_params):
            self.client.requests.append(dict(query_params))
            start = int(query_params.get("pageToken", 0))
            end = start + query_params.get("maxResults", len(rows))
            response = {"rows": [{"f": [{"v": v} for v in row]} for row in rows[start:end]],
                        "totalRows": str(len(rows))}
            if end < len(rows):
                response["pageToken"] = str(end)
            return response
        return RowIterator(None, api_request, "/projects/test-project/queries/job-1",
                           [SchemaField(name, "STRING") for name in self.names],
                           page_size=page_size)


@pytest.mark.parametrize("page_size", [1, 2, 500])
def test_bigquery_lead_key_pages_are_the_result_pages(page_size):
    """One query in key order, read a page per request of `page_size` rows: every lead
    once, in order, and no more than a page held at a time."""
    from storage.bigquery import BigQueryStore
    from tests.test_lead_key_pages import KEYS, check_pages
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE lead_profiles (tenant_id TEXT, lead_id TEXT)")
    db.executemany("INSERT INTO lead_profiles VALUES (?, ?)", reversed(KEYS))
    client = QueryingClient(db)
    store = BigQueryStore("test-project.lists", client=client)
    pages = store.lead_key_pages(page_size=page_size)
    first = next(pages)
    assert len(client.requests) == 1  # the next page is asked for when it is needed
    pages = [first, *pages]
    check_pages(pages, KEYS, page_size)
    assert len(client.requests) == len(pages)
    assert all(request["maxResults"] == page_size for request in client.requests)
    assert client.queries == ["SELECT tenant_id, lead_id FROM "
                              "`test-project.lists.lead_profiles` "
                              "ORDER BY tenant_id, lead_id"]
    assert store.lead_keys() == sorted(KEYS)


def test_bigquery_lead_key_pages_of_an_empty_dataset():
    from storage.bigquery import BigQueryStore
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE lead_profiles (tenant_id TEXT, lead_id TEXT)")
    client = QueryingClient(db)
    store = BigQueryStore("test-project.lists", client=client)
    assert list(store.lead_key_pages(page_size=2)) == []
    assert client.requests == [{"maxResults": 2}]  # one page, with no row
    assert store.lead_keys() == []
    with pytest.raises(ValueError, match="page_size must be at least 1"):
        next(store.lead_key_pages(page_size=0))
