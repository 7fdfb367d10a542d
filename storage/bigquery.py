"""The production sink: BigQuery tables and the views that stand in for upserts.

BigQuery cannot update rows as they stream in, so every table is written append-only
and views give the current state (SPEC section 4): `list_memberships` is the latest
delta per (tenant, list, lead) by the lead's `seq`, after removing repeated deltas (a
re-delivered or retried write repeats a row with the same deterministic `delta_id`);
`lead_profiles` is the newest snapshot per lead from `lead_profile_snapshots`. The view
SQL is plain enough to run on SQLite too, which is how it is tested here.

The client is only made when a method needs it, and only in the launcher or a worker,
so this module imports without Google Cloud credentials.
"""

from __future__ import annotations

import json

from schemas import tables

T = tables
SNAPSHOTS = "lead_profile_snapshots"
# JSON columns are written as JSON text into STRING columns: the same rows load through
# streaming inserts and through file loads (a JSON column would take a text value from a
# load file as a JSON string, not as the object), and PARSE_JSON reads them in queries.
_TYPES = {"JSON": "STRING"}

# Where a table name stands in the view SQL; filled per engine.
DELTAS_VIEW_SQL = """
SELECT tenant_id, list_id, lead_id, event_time AS since, seq FROM (
  SELECT tenant_id, list_id, lead_id, event_time, seq, action,
         ROW_NUMBER() OVER (PARTITION BY tenant_id, list_id, lead_id
                            ORDER BY seq DESC) AS newest
  FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY delta_id ORDER BY processed_at) AS copy
    FROM {deltas}
  ) AS unique_deltas
  WHERE copy = 1
) AS latest
WHERE newest = 1 AND action = 'added'
"""

PROFILES_VIEW_SQL = """
SELECT {columns} FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY tenant_id, lead_id
                               ORDER BY {seq} DESC, updated_at DESC) AS newest
  FROM {snapshots}
) AS latest
WHERE newest = 1
"""


def table_schema(table):
    """BigQuery schema ({'fields': [...]}) of one of the SPEC tables."""
    schema = T.bigquery_schema(table)
    for field in schema["fields"]:
        field["type"] = _TYPES.get(field["type"], field["type"])
    return schema


def memberships_view_sql(deltas):
    return DELTAS_VIEW_SQL.format(deltas=deltas).strip()


def profiles_view_sql(snapshots, seq_expression):
    columns = ", ".join(T.column_names(T.LEAD_PROFILES))
    return PROFILES_VIEW_SQL.format(columns=columns, snapshots=snapshots,
                                    seq=seq_expression).strip()


def bigquery_views(project, dataset):
    """{view name: SQL} of the views over the append-only tables."""
    def ref(name):
        return f"`{project}.{dataset}.{name}`"
    return {
        T.LIST_MEMBERSHIPS: memberships_view_sql(ref(T.MEMBERSHIP_DELTAS)),
        T.LEAD_PROFILES: profiles_view_sql(
            ref(SNAPSHOTS), "CAST(JSON_VALUE(state, '$.seq') AS INT64)"),
    }


def written_tables():
    """BigQuery table name -> (SPEC table whose rows it holds, create parameters)."""
    return {
        T.MEMBERSHIP_DELTAS: (T.MEMBERSHIP_DELTAS, {
            "timePartitioning": {"type": "DAY", "field": "event_time"},
            "clustering": {"fields": ["tenant_id", "list_id"]}}),
        T.DEAD_LETTERS: (T.DEAD_LETTERS, {
            "timePartitioning": {"type": "DAY", "field": "received_at"}}),
        SNAPSHOTS: (T.LEAD_PROFILES, {
            "clustering": {"fields": ["tenant_id", "lead_id"]}}),
    }


def ensure_views(project, dataset, client=None):
    """Create the dataset (if missing) and the views, or update the views' SQL in place
    (never dropped and re-made: readers would see "not found" in between); the launcher
    calls it."""
    from google.api_core.exceptions import Conflict
    from google.cloud import bigquery
    client = client or bigquery.Client(project=project)
    client.create_dataset(f"{project}.{dataset}", exists_ok=True)
    for name, sql in bigquery_views(project, dataset).items():
        view = bigquery.Table(f"{project}.{dataset}.{name}")
        view.view_query = sql
        try:
            client.create_table(view)
        except Conflict:
            client.update_table(view, ["view_query"])


class BigQueryStore:
    """Reads for the commands (summary, explain, reconcile) from a BigQuery dataset."""

    def __init__(self, location, client=None):
        self.project, self.dataset = location.split(".", 1)
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from google.cloud import bigquery
            self._client = bigquery.Client(project=self.project)
        return self._client

    def _ref(self, name):
        return f"`{self.project}.{self.dataset}.{name}`"

    def _query(self, sql, **params):
        from google.cloud import bigquery
        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter(k, "STRING", v) for k, v in params.items()])
        return [dict(row.items()) for row in self.client.query(sql, job_config=config)]

    def profiles(self):
        return self._query(f"SELECT * FROM {self._ref(T.LEAD_PROFILES)}")

    def profile(self, tenant_id, lead_id):
        rows = self._query(f"SELECT * FROM {self._ref(T.LEAD_PROFILES)} WHERE "
                           "tenant_id = @tenant AND lead_id = @lead",
                           tenant=tenant_id, lead=lead_id)
        return rows[0] if rows else None

    def lead_keys(self):
        return [key for page in self.lead_key_pages() for key in page]

    def lead_key_pages(self, page_size=500):
        """Lists of at most `page_size` (tenant_id, lead_id) of the stored profiles, in key
        order: one query, its result read a page at a time through the client's page
        iterator (each page one request for the next rows of the query's result table),
        so only a page of keys is held here."""
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        job = self.client.query(f"SELECT tenant_id, lead_id FROM {self._ref(T.LEAD_PROFILES)} "
                                "ORDER BY tenant_id, lead_id")
        for page in job.result(page_size=page_size).pages:
            keys = [(row["tenant_id"], row["lead_id"]) for row in page]
            if keys:  # an empty result still comes as one empty page; no store yields one
                yield keys

    def memberships(self):
        return {(r["tenant_id"], r["list_id"], r["lead_id"]) for r in self._query(
            f"SELECT tenant_id, list_id, lead_id FROM {self._ref(T.LIST_MEMBERSHIPS)}")}

    def count(self, table):
        return self._query(f"SELECT COUNT(*) AS n FROM {self._ref(table)}")[0]["n"]

    def list_sizes(self):
        return [(r["tenant_id"], r["list_id"], r["n"]) for r in self._query(
            f"SELECT tenant_id, list_id, COUNT(*) AS n FROM {self._ref(T.LIST_MEMBERSHIPS)} "
            "GROUP BY tenant_id, list_id ORDER BY n DESC, tenant_id, list_id")]

    def delta_counts(self):
        return {r["action"]: r["n"] for r in self._query(
            f"SELECT action, COUNT(DISTINCT delta_id) AS n FROM "
            f"{self._ref(T.MEMBERSHIP_DELTAS)} GROUP BY action")}

    def write(self, batch):
        """Streaming inserts from outside Beam (reconcile --fix); returns rows written."""
        written = 0
        for table, rows in batch.items():
            if not rows or table == T.LIST_MEMBERSHIPS:
                continue
            target = SNAPSHOTS if table == T.LEAD_PROFILES else table
            errors = self.client.insert_rows_json(
                f"{self.project}.{self.dataset}.{target}", rows,
                row_ids=[r.get("delta_id") or r.get("dead_letter_id") for r in rows]
                if table != T.LEAD_PROFILES else None)
            if errors:
                raise RuntimeError(f"BigQuery refused rows of {target}: "
                                   f"{json.dumps(errors)[:500]}")
            written += len(rows)
        return written

    def close(self):
        if self._client is not None:
            self._client.close()
