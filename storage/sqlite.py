"""The embedded sink: one SQLite file holding the four tables.

A batch of rows is written in one transaction, with one statement per table and kind of
change. In `list_memberships` the last delta of a batch for a (tenant, list, lead)
decides, whether `membership_deltas` had it already or not: writing the same deltas
twice (a replay, a retried bundle) changes nothing, and a backfill run again with more
events (its deltas a lead's whole history, some known, some new) leaves each lead as its
last delta says, not as its last *new* delta says. A lead's deltas arrive in the order
they were made: the writing step is fused with the step that makes them. WAL mode and a
busy timeout let several worker processes write to the same file.

The file carries its layout's version in `PRAGMA user_version` (SCHEMA_VERSION). Version
1 is the layout before deltas and memberships were keyed by lead (files of that time
carry 0); such a file is rebuilt with today's keys in one transaction when opened. A file
of a newer version, or one that is not a dynlists database, is refused before anything
writes to it.
"""

from __future__ import annotations

import os
import sqlite3
import time

from schemas import tables
from storage.uri import IncompatibleSink
from storage.rows import BatchWrites, lead_pairs, membership_changes

T = tables
CACHE_KIB = 128 * 1024    # page cache per connection
CHECKPOINT_PAGES = 20_000  # pages in the write-ahead log before it is checkpointed

SCHEMA_VERSION = 2
# each version's primary keys; version 1 had no index by list either
_KEYS = {1: T.KEYS, 2: T.SQLITE_KEYS}
_REKEYED = [t for t in T.TABLES if _KEYS[1][t] != _KEYS[2][t]]
_ANOTHER_FILE = "name another file for the sink"

LEAD_KEYS_FIRST = (f"SELECT tenant_id, lead_id FROM {T.LEAD_PROFILES} "
                   "ORDER BY tenant_id, lead_id LIMIT ?")
LEAD_KEYS_AFTER = (f"SELECT tenant_id, lead_id FROM {T.LEAD_PROFILES} "
                   "WHERE (tenant_id, lead_id) > (?, ?) ORDER BY tenant_id, lead_id LIMIT ?")


class SqliteStore(BatchWrites):
    def __init__(self, path):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=120, isolation_level=None,
                                  check_same_thread=False)
        try:
            # before the journal mode: switching it writes to the file, which a refused
            # file must not see
            current = self._schema() == (SCHEMA_VERSION, SCHEMA_VERSION, len(T.TABLES))
            self._set_wal()
            self.db.execute("PRAGMA synchronous=NORMAL")
            # keep the key indexes' pages in memory, and checkpoint the log less often, so
            # a page is copied back once for many inserts (the log is checkpointed and
            # emptied when the last connection closes)
            self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self.db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
            if not current:
                self._upgrade()
        except BaseException:
            self.db.close()
            raise
        self._insert = {table: self._insert_sql(table) for table in T.TABLES}
        # a profile replaces the stored one unless older: a late writer of a failed
        # attempt does not take a lead back
        names = T.column_names(T.LEAD_PROFILES)
        self._profile_upsert = (
            self._insert_sql(T.LEAD_PROFILES, "INSERT")
            + f" ON CONFLICT ({', '.join(T.KEYS[T.LEAD_PROFILES])}) DO UPDATE SET "
            + ", ".join(f"{n} = excluded.{n}" for n in names
                        if n not in T.KEYS[T.LEAD_PROFILES])
            + f" WHERE excluded.updated_at >= {T.LEAD_PROFILES}.updated_at")

    def _schema(self):
        """(stamped version, version of the tables' layout or None when there are none
        yet, number of dynlists tables), or IncompatibleSink."""
        db = self.db
        stamped = db.execute("PRAGMA user_version").fetchone()[0]
        names = [name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite!_%' ESCAPE '!'")]
        names = [name for name in names if name != T.DELTA_OUTBOX]  # optional, ours
        ours = [name for name in names if name in T.TABLES]
        if stamped > SCHEMA_VERSION:
            if names and not ours:
                raise self._foreign(f"it has tables dynlists does not make: {_few(names)}")
            raise IncompatibleSink(self.path, (
                f"made by a newer version of dynlists (schema {stamped}, this one reads "
                f"up to {SCHEMA_VERSION}): upgrade dynlists to use it"))
        if len(ours) < len(names):
            raise self._foreign("it has tables dynlists does not make: "
                                f"{_few(sorted(set(names) - set(ours)))}")
        versions = set(_KEYS)
        for table in ours:
            info = db.execute(f"PRAGMA table_info({table})").fetchall()
            columns = [column[1] for column in info]
            if columns != T.column_names(table):
                raise self._foreign(f"its table {table} has the columns {_few(columns)}")
            key = tuple(column[1] for column in sorted(info, key=lambda c: c[5]) if column[5])
            fits = {version for version, keys in _KEYS.items() if keys[table] == key}
            if not fits:
                raise self._foreign(f"its table {table} is keyed by ({', '.join(key)})")
            versions &= fits
        if not versions:
            raise self._foreign("its tables' keys are of different versions")
        # tables keyed alike in every version (or none yet) are today's
        layout = max(versions) if ours else None
        if stamped == SCHEMA_VERSION and layout not in (None, SCHEMA_VERSION):
            raise self._foreign(f"it is stamped schema {stamped} but its tables are "
                                f"schema {layout}'s")
        return stamped, layout, len(ours)

    def _foreign(self, why):
        return IncompatibleSink(self.path, f"not a dynlists database ({why}): {_ANOTHER_FILE}")

    def _upgrade(self):
        """Bring the file to SCHEMA_VERSION in one transaction: create what is missing,
        rebuild tables of an older layout, stamp the version. Several processes may open
        a new or old file at once: the first to take the write lock upgrades it, the
        others find it done."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            _, layout, _ = self._schema()  # again, under the lock
            if layout == 1:
                self._rekey()
            for table in T.TABLES:
                for statement in T.sqlite_ddl(table):
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _rekey(self):
        """Version 1 -> 2: the tables whose keys changed are copied into new tables with
        today's keys (and indexes). No two rows can collide in a copy: each new key holds
        all of the old key's columns."""
        for table in _REKEYED:
            old = f"{table}_v1"
            self.db.execute(f"ALTER TABLE {table} RENAME TO {old}")
            for statement in T.sqlite_ddl(table):
                self.db.execute(statement)
            columns = ", ".join(T.column_names(table))
            # in key order: the new index is filled front to back
            self.db.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {old} "
                            f"ORDER BY {', '.join(_KEYS[2][table])}")
            self.db.execute(f"DROP TABLE {old}")

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

    def _write_values(self, deltas, dead, profiles, queue=False):
        """Rows as tuples in column order, written in one transaction; the number of new
        deltas, or (`queue`) their rows, queued in the outbox.

        Everything is prepared before the write lock is taken, so that worker processes
        writing the same file hold it only for the inserts.
        """
        joins, leaves = membership_changes(deltas)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            new = self._insert_deltas(deltas)
            if len(new) < len(deltas):  # a replay: its changes may be older than the table's
                joins, leaves = membership_changes(deltas, self._newest_seqs(deltas))
            if queue:
                db.execute(T.outbox_ddl())
                db.executemany(f"INSERT OR IGNORE INTO {T.DELTA_OUTBOX} VALUES (?, ?, ?)",
                               [(v[1], v[2], v[0]) for v in new])
            db.executemany(
                f"INSERT OR REPLACE INTO {T.LIST_MEMBERSHIPS} "
                "(tenant_id, list_id, lead_id, since, seq) VALUES (?, ?, ?, ?, ?)", joins)
            db.executemany(
                f"DELETE FROM {T.LIST_MEMBERSHIPS} WHERE tenant_id = ? AND list_id = ? "
                "AND lead_id = ?", leaves)
            db.executemany(self._insert[T.DEAD_LETTERS], dead)
            db.executemany(self._profile_upsert, profiles)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return new if queue else len(new)

    def queued(self, limit=1000, written_before=None):
        """Rows (tuples in column order) of at most `limit` deltas in the outbox, those
        written before the RFC 3339 time `written_before` only, when given."""
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = ?",
                               (T.DELTA_OUTBOX,)).fetchone():
            return []
        keys = ", ".join(T.OUTBOX_KEY)
        where, params = "", (limit,)
        if written_before is not None:
            where, params = "WHERE d.processed_at < ?", (written_before, limit)
        return self.db.execute(
            f"SELECT d.* FROM {T.DELTA_OUTBOX} o JOIN {T.MEMBERSHIP_DELTAS} d "
            f"USING ({keys}) {where} ORDER BY d.processed_at LIMIT ?", params).fetchall()

    def unqueue(self, rows):
        """Take the deltas of these rows out of the outbox (they are published)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(f"DELETE FROM {T.DELTA_OUTBOX} WHERE tenant_id = ? AND "
                           "lead_id = ? AND delta_id = ?", [(v[1], v[2], v[0]) for v in rows])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _newest_seqs(self, deltas):
        """{(tenant, list, lead): highest seq in the table} for the leads of `deltas`."""
        newest = {}
        for tenant, lead in lead_pairs(deltas):
            for list_id, seq in self.db.execute(
                    f"SELECT list_id, MAX(seq) FROM {T.MEMBERSHIP_DELTAS} WHERE tenant_id = ? "
                    "AND lead_id = ? GROUP BY list_id", (tenant, lead)):
                newest[(tenant, list_id, lead)] = seq
        return newest

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
        return [key for page in self.lead_key_pages() for key in page]

    def lead_key_pages(self, page_size=500):
        """Lists of at most `page_size` (tenant_id, lead_id) of the stored profiles, in key
        order. Each page is one range read of the key index from the last key handed
        out, so memory and the cost of a page do not grow with the sink, and a lead
        stored meanwhile comes in a later page if its key sorts after that one. A page
        is read whole before it is handed out: no read stays open between pages to hold
        back the log's checkpoints."""
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        page = self.db.execute(LEAD_KEYS_FIRST, (page_size,)).fetchall()
        while page:
            yield page
            if len(page) < page_size:
                return
            page = self.db.execute(LEAD_KEYS_AFTER, (*page[-1], page_size)).fetchall()

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


def _few(names):
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
