"""The output tables (SPEC section 4): one definition that every sink derives from.

Each table is a list of columns (name, type, mode, description). The SQLite DDL, the
BigQuery schema and the row converters are generated from it, so column names and
types are written down once.
"""

from __future__ import annotations

from typing import NamedTuple


class Column(NamedTuple):
    name: str
    type: str            # STRING, INT64, TIMESTAMP, BOOL, JSON
    mode: str = "REQUIRED"
    description: str = ""


MEMBERSHIP_DELTAS = "membership_deltas"
LIST_MEMBERSHIPS = "list_memberships"
DEAD_LETTERS = "dead_letters"
LEAD_PROFILES = "lead_profiles"

TABLES = {
    MEMBERSHIP_DELTAS: [
        Column("delta_id", "STRING", description="hash of tenant, lead, list, action, cause "
                                                 "(and, for a definition cause, the "
                                                 "lead's count of definition versions)"),
        Column("tenant_id", "STRING"),
        Column("lead_id", "STRING"),
        Column("list_id", "STRING"),
        Column("action", "STRING", description="added | removed"),
        Column("event_time", "TIMESTAMP", description="time of the cause"),
        Column("cause", "STRING",
               description="event id, timer:<flip time>, definition:<version>, reconcile:<run>"),
        Column("cascade_depth", "INT64", description="list references between cause and list"),
        Column("seq", "INT64", description="per-lead order of the lead's deltas"),
        Column("processed_at", "TIMESTAMP"),
    ],
    LIST_MEMBERSHIPS: [
        Column("tenant_id", "STRING"),
        Column("list_id", "STRING"),
        Column("lead_id", "STRING"),
        Column("since", "TIMESTAMP", description="event time of the joining delta"),
        Column("seq", "INT64", description="seq of the joining delta"),
    ],
    DEAD_LETTERS: [
        Column("dead_letter_id", "STRING", description="hash of source and payload"),
        Column("received_at", "TIMESTAMP"),
        Column("source", "STRING", description="file:line, or pubsub subscription and id"),
        Column("reason", "STRING"),
        Column("payload", "STRING", description="the raw record, as received"),
    ],
    LEAD_PROFILES: [
        Column("tenant_id", "STRING"),
        Column("lead_id", "STRING"),
        Column("deleted", "BOOL", description="deleted with nothing newer"),
        Column("fields", "JSON", "NULLABLE", "current field values"),
        Column("tags", "JSON", "NULLABLE"),
        Column("static_lists", "JSON", "NULLABLE"),
        Column("activities", "JSON", "NULLABLE", "the history the definitions still need"),
        Column("memberships", "JSON", "NULLABLE", "list id -> since"),
        Column("clock", "TIMESTAMP", "NULLABLE", "evaluation time of the memberships"),
        Column("state", "JSON", description="the versioned state, to resume from"),
        Column("updated_at", "TIMESTAMP"),
    ],
}

KEYS = {
    MEMBERSHIP_DELTAS: ("delta_id",),
    LIST_MEMBERSHIPS: ("tenant_id", "list_id", "lead_id"),
    DEAD_LETTERS: ("dead_letter_id",),
    LEAD_PROFILES: ("tenant_id", "lead_id"),
}

# SQLite clusters a table's key index by its first columns. A delta's id is a hash that
# includes its tenant and lead, so keying deltas by (tenant, lead, id) is as unique as
# the id alone, and a lead's deltas, written together, land on the same index pages
# instead of one random page each.
# Memberships are keyed by lead for the same reason, with an index by list for readers.
SQLITE_KEYS = {**KEYS, MEMBERSHIP_DELTAS: ("tenant_id", "lead_id", "delta_id"),
               LIST_MEMBERSHIPS: ("tenant_id", "lead_id", "list_id")}
SQLITE_INDEXES = {LIST_MEMBERSHIPS: {"list_memberships_by_list": ("tenant_id", "list_id")}}

_SQLITE_TYPES = {"STRING": "TEXT", "INT64": "INTEGER", "TIMESTAMP": "TEXT", "BOOL": "INTEGER",
                 "JSON": "TEXT"}


def column_names(table):
    return [c.name for c in TABLES[table]]


def _ddl(table, types):
    """The statements creating a table (the table, then its indexes) with `types`."""
    cols = [f"{c.name} {types[c.type]}{' NOT NULL' if c.mode == 'REQUIRED' else ''}"
            for c in TABLES[table]]
    cols.append(f"PRIMARY KEY ({', '.join(SQLITE_KEYS[table])})")
    ddl = [f"CREATE TABLE IF NOT EXISTS {table} (\n  " + ",\n  ".join(cols) + "\n)"]
    ddl += [f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({', '.join(columns)})"
            for name, columns in SQLITE_INDEXES.get(table, {}).items()]
    return ddl


def sqlite_ddl(table):
    """The statements creating a table in SQLite (the table, then its indexes);
    timestamps are RFC 3339 text, JSON is text."""
    return _ddl(table, _SQLITE_TYPES)


# PostgreSQL: the same keys and index (a lead's deltas, written together, share index
# pages there too). Text compares byte by byte (COLLATE "C"), as in SQLite, so keys sort
# alike in both and a page of lead keys means the same whatever the database's locale.
# JSON is `json`, kept as written: `jsonb` would reorder keys, drop -0.0's sign and
# refuse the escape \u0000, which a field value may hold.
_POSTGRES_TYPES = {"STRING": 'TEXT COLLATE "C"', "INT64": "BIGINT",
                   "TIMESTAMP": "TIMESTAMPTZ", "BOOL": "BOOLEAN", "JSON": "JSON"}


def postgres_ddl(table):
    """The statements creating a table in PostgreSQL (the table, then its indexes)."""
    return _ddl(table, _POSTGRES_TYPES)


# Not one of SPEC's tables: the deltas committed and not yet published to the deltas
# topic (--deltas_topic), keyed as membership_deltas is. In SQLite it is made by the
# first job that publishes; in PostgreSQL with the other tables.
DELTA_OUTBOX = "delta_outbox"
OUTBOX_KEY = SQLITE_KEYS[MEMBERSHIP_DELTAS]


def outbox_ddl(text_type="TEXT"):
    cols = ", ".join(f"{name} {text_type} NOT NULL" for name in OUTBOX_KEY)
    return (f"CREATE TABLE IF NOT EXISTS {DELTA_OUTBOX} ({cols}, "
            f"PRIMARY KEY ({', '.join(OUTBOX_KEY)}))")


def bigquery_schema(table):
    """The table's schema in BigQuery's JSON form ({'fields': [...]})."""
    return {"fields": [{"name": c.name, "type": c.type, "mode": c.mode,
                        "description": c.description} for c in TABLES[table]]}
