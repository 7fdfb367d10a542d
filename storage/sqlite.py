"""The embedded sink: one SQLite file holding the four tables.

A batch of rows is written in one transaction, with one statement per table and kind of
change. In `list_memberships` the last delta of a batch for a (tenant, list, lead)
decides, whether `membership_deltas` had it already or not: writing the same deltas
twice (a replay, a retried bundle) changes nothing, and a backfill run again with more
events (its deltas a lead's whole history, some known, some new) leaves each lead as its
last delta says, not as its last *new* delta says. A lead's deltas arrive in the order
they were made: the writing step is fused with the step that makes them. WAL mode and a
busy timeout let several worker processes write to the same file.
"""

from __future__ import annotations

import os
import sqlite3
import time

from schemas import tables
from storage.rows import delta_values, ordered

T = tables
CACHE_KIB = 128 * 1024    # page cache per connection
CHECKPOINT_PAGES = 20_000  # pages in the write-ahead log before it is checkpointed


class SqliteStore:
    def __init__(self, path):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=120, isolation_level=None,
                                  check_same_thread=False)
        self._set_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        # keep the key indexes' pages in memory, and checkpoint the log less often, so a
        # page is copied back once for many inserts (the log is checkpointed and emptied
        # when the last connection closes)
        self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self.db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        for table in T.TABLES:
            for statement in T.sqlite_ddl(table):
                self.db.execute(statement)
        self._insert = {table: self._insert_sql(table) for table in T.TABLES}

    def _set_wal(self):
        # Switching the journal mode does not wait on the busy timeout when another
        # process opens the file at the same moment; it is retried here instead.
        for attempt in range(200):
            try:
                if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if attempt == 199:
                    raise
                time.sleep(0.05)

    @staticmethod
    def _insert_sql(table, verb="INSERT OR IGNORE"):
        names = T.column_names(table)
        return (f"{verb} INTO {table} ({', '.join(names)}) "
                f"VALUES ({', '.join('?' * len(names))})")

    def write(self, batch):
        """Write {table: [row, ...]} in one transaction; returns the number of new deltas."""
        return self._write_values(
            [ordered(T.MEMBERSHIP_DELTAS, r) for r in batch.get(T.MEMBERSHIP_DELTAS, ())],
            [ordered(T.DEAD_LETTERS, r) for r in batch.get(T.DEAD_LETTERS, ())],
            [ordered(T.LEAD_PROFILES, r) for r in batch.get(T.LEAD_PROFILES, ())])

    def write_deltas(self, deltas, processed_at, profiles=()):
        """Write Delta records (the hot path: no row dictionaries), and the profile rows
        of their leads in the same transaction; returns the number of new deltas.
        `processed_at` is the RFC 3339 text of the batch."""
        return self._write_values([delta_values(d, processed_at) for d in deltas], (),
                                  [ordered(T.LEAD_PROFILES, r) for r in profiles])

    def _write_values(self, deltas, dead, profiles):
        """Rows as tuples in column order, written in one transaction.

        Everything is prepared before the write lock is taken, so that worker processes
        writing the same file hold it only for the inserts.
        """
        joins, leaves = _membership_changes(deltas)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            new = self._insert_deltas(deltas)
            db.executemany(
                f"INSERT OR REPLACE INTO {T.LIST_MEMBERSHIPS} "
                "(tenant_id, list_id, lead_id, since, seq) VALUES (?, ?, ?, ?, ?)", joins)
            db.executemany(
                f"DELETE FROM {T.LIST_MEMBERSHIPS} WHERE tenant_id = ? AND list_id = ? "
                "AND lead_id = ?", leaves)
            db.executemany(self._insert[T.DEAD_LETTERS], dead)
            db.executemany(self._insert_sql(T.LEAD_PROFILES, "INSERT OR REPLACE"), profiles)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(new)

    def _insert_deltas(self, values):
        """Insert the deltas not in the table yet; return them.

        Fresh deltas are the common case: one plain insert of them all. Only when some
        are already there (a replay) does it find out which, and insert the others.
        """
        if not values:
            return []
        self.db.execute("SAVEPOINT fresh")
        try:
            self.db.executemany(self._insert_sql(T.MEMBERSHIP_DELTAS, "INSERT"), values)
            self.db.execute("RELEASE fresh")
            return values
        except sqlite3.IntegrityError:
            self.db.execute("ROLLBACK TO fresh")
            self.db.execute("RELEASE fresh")
        # some are known: insert one by one, keeping those that went in (a conflict on
        # the key is skipped; any other constraint still fails the write)
        cursor = self.db.cursor()
        sql = self._insert_sql(T.MEMBERSHIP_DELTAS, "INSERT") + " ON CONFLICT DO NOTHING"
        new = []
        for value in values:
            cursor.execute(sql, value)
            if cursor.rowcount == 1:
                new.append(value)
        return new

    # -- reading --------------------------------------------------------------------------
    def rows(self, table, where="", params=()):
        cursor = self.db.execute(f"SELECT * FROM {table} {where}", params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values)) for values in cursor]

    def count(self, table):
        return self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def memberships(self):
        """{(tenant, list, lead)} of the current members."""
        return set(self.db.execute(
            f"SELECT tenant_id, list_id, lead_id FROM {T.LIST_MEMBERSHIPS}"))

    def profile(self, tenant_id, lead_id):
        found = self.rows(T.LEAD_PROFILES, "WHERE tenant_id = ? AND lead_id = ?",
                          (tenant_id, lead_id))
        return found[0] if found else None

    def profiles(self):
        return self.rows(T.LEAD_PROFILES)

    def lead_keys(self):
        return list(self.db.execute(f"SELECT tenant_id, lead_id FROM {T.LEAD_PROFILES}"))

    def list_sizes(self):
        """[(tenant, list, members)] largest first."""
        return list(self.db.execute(
            f"SELECT tenant_id, list_id, COUNT(*) AS n FROM {T.LIST_MEMBERSHIPS} "
            "GROUP BY tenant_id, list_id ORDER BY n DESC, tenant_id, list_id"))

    def delta_counts(self):
        return dict(self.db.execute(
            f"SELECT action, COUNT(*) FROM {T.MEMBERSHIP_DELTAS} GROUP BY action"))

    def close(self):
        self.db.close()


_AT = {name: i for i, name in enumerate(T.column_names(T.MEMBERSHIP_DELTAS))}


def _membership_changes(deltas):
    """(rows to upsert, keys to delete) in list_memberships from delta tuples: per
    (tenant, list, lead), the last delta decides."""
    tenant, list_id, lead = _AT["tenant_id"], _AT["list_id"], _AT["lead_id"]
    action, since, seq = _AT["action"], _AT["event_time"], _AT["seq"]
    final = {(d[tenant], d[list_id], d[lead]): d for d in deltas}
    joins = [key + (d[since], d[seq]) for key, d in final.items() if d[action] == "added"]
    leaves = [key for key, d in final.items() if d[action] == "removed"]
    return joins, leaves
