"""The server sink: the four tables in a PostgreSQL database, read from a replica if named.

`postgresql://USER[:PASSWORD]@HOST:PORT/DB[?read_host=H&read_port=P]`. A batch is one
transaction: its rows are copied (COPY) into temporary tables of the connection, then
merged with one statement per table, in key order so that two writers never wait on
each other in opposite orders. Semantics and ids are the SQLite sink's: a delta already
there is skipped, the last delta of a batch for a (tenant, list, lead) decides its
membership, the last profile of a lead replaces the stored one. Each worker process
keeps one pool of connections per server.

Reads go to the replica when one is named, but only once it has replayed what the
primary had written when the store last looked (a fence renewed every FENCE_SECONDS):
a summary after a job sees the whole job, and a lead resumed after a restart sees its
last profile. A store that has written since its fence takes a new one before it reads
(a worker process outlives a job on some runners). When the replica lags more than REPLICA_WAIT_SECONDS behind that point,
the read goes to the primary.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone

from schemas import tables
from storage.uri import IncompatibleSink, split_uri
from storage.rows import BatchWrites, membership_changes

T = tables
SCHEMA_VERSION = 1
POOL_SIZE = 4
CONNECT_SECONDS = 10
FENCE_SECONDS = 10.0
REPLICA_WAIT_SECONDS = 10.0
FRESH_RETRY = 16
_MARK = "dynlists schema "  # the comment on membership_deltas that stamps the version
_LOG = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_POOLS = {}
_POOLS_LOCK = threading.Lock()
def _pool(conninfo, writes=True):
    """This process's pool of connections to `conninfo` (made on first use); a pool
    that `writes` has its staging tables (a replica cannot have them)."""
    from psycopg_pool import ConnectionPool
    key = (os.getpid(), conninfo, writes)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ConnectionPool(
                conninfo, min_size=1, max_size=POOL_SIZE,
                configure=_configure if writes else _configure_reads,
                kwargs={"connect_timeout": CONNECT_SECONDS}, open=True,
                name=f"dynlists-{len(_POOLS)}")
    return pool


@atexit.register
def _close_pools():
    with _POOLS_LOCK:
        pools = [pool for (pid, *_), pool in _POOLS.items() if pid == os.getpid()]
        _POOLS.clear()
    for pool in pools:
        pool.close()


def _configure_reads(conn):
    """A new connection: json is read as the text stored."""
    from psycopg.types.string import TextLoader
    conn.adapters.register_loader("json", TextLoader)


def _configure(conn):
    """A new connection of a pool that writes: also its staging tables."""
    _configure_reads(conn)
    conn.autocommit = True
    for statement in _STAGING:
        conn.execute(statement)
    conn.autocommit = False


_STAGED = (T.MEMBERSHIP_DELTAS, T.LIST_MEMBERSHIPS, T.DEAD_LETTERS, T.LEAD_PROFILES)
_STAGING = [f"CREATE TEMPORARY TABLE IF NOT EXISTS stage_{table} (LIKE {table}) "
            "ON COMMIT DELETE ROWS" for table in _STAGED] + [
    "CREATE TEMPORARY TABLE IF NOT EXISTS stage_leaves (tenant_id TEXT COLLATE \"C\", "
    "list_id TEXT COLLATE \"C\", lead_id TEXT COLLATE \"C\") ON COMMIT DELETE ROWS"]


def _merge(table, update):
    key = T.SQLITE_KEYS[table]
    names = T.column_names(table)
    sql = (f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(names)} "
           f"FROM stage_{table} ORDER BY {', '.join(key)} ON CONFLICT ({', '.join(key)}) ")
    if not update:
        return sql + "DO NOTHING"
    sql += "DO UPDATE SET " + ", ".join(
        f"{name} = EXCLUDED.{name}" for name in names if name not in key)
    if table == T.LEAD_PROFILES:
        # a profile replaces the stored one unless older: a late writer of a failed
        # attempt does not take a lead back
        sql += f" WHERE EXCLUDED.updated_at >= {table}.updated_at"
    return sql


_MERGE = {T.MEMBERSHIP_DELTAS: _merge(T.MEMBERSHIP_DELTAS, False),
          T.LIST_MEMBERSHIPS: _merge(T.LIST_MEMBERSHIPS, True),
          T.DEAD_LETTERS: _merge(T.DEAD_LETTERS, False),
          T.LEAD_PROFILES: _merge(T.LEAD_PROFILES, True)}
_MERGE_QUEUED = (f"WITH new AS ({_MERGE[T.MEMBERSHIP_DELTAS]} RETURNING "
                 f"{', '.join(T.OUTBOX_KEY)}), queued AS (INSERT INTO {T.DELTA_OUTBOX} "
                 f"SELECT * FROM new ON CONFLICT DO NOTHING) SELECT delta_id FROM new")
# {(tenant, list, lead): highest seq} of the leads of the staged deltas
_NEWEST = (f"SELECT d.tenant_id, d.list_id, d.lead_id, MAX(d.seq) FROM {T.MEMBERSHIP_DELTAS} d "
           f"JOIN (SELECT DISTINCT tenant_id, lead_id FROM stage_{T.MEMBERSHIP_DELTAS}) s "
           "ON d.tenant_id = s.tenant_id AND d.lead_id = s.lead_id GROUP BY 1, 2, 3")
_LEAVE = (f"DELETE FROM {T.LIST_MEMBERSHIPS} m USING stage_leaves s "
          "WHERE m.tenant_id = s.tenant_id AND m.lead_id = s.lead_id "
          "AND m.list_id = s.list_id")


def _fence(conn):
    """A position in the primary's log at or after the commit of every transaction
    committed so far, that the log will surely reach a replica up to.

    A transaction that writes to the log and commits synchronously flushes it up to its
    commit, past every commit before it (asynchronous ones too); a message in the log is
    the smallest such write. The insert position alone would do as a bound, but the
    last bytes of an idle server's log can stay unsent."""
    import psycopg
    try:
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = on")
            conn.execute("SELECT pg_logical_emit_message(true, 'dynlists', 'fence')")
        return conn.execute("SELECT pg_current_wal_flush_lsn()").fetchone()[0]
    except psycopg.errors.InsufficientPrivilege:
        return conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]


def _micros_text(value):
    from schemas.values import format_ts
    return format_ts((value - _EPOCH) // timedelta(microseconds=1))


class PostgresStore(BatchWrites):
    """The tables in one database. `create`: make them when missing (a job's sink);
    otherwise (a command that only reads) the tables must be there, and are checked on
    the replica when one is named, so reads go on while the primary is down."""

    def __init__(self, location, create=True, primary_only=False):
        self.write_info, self.read_info, self.shown = split_uri(location)
        self._fenced_at = None
        self._fresh_wait = {}
        self._check_schema(create, primary_only)

    @property
    def pool(self):
        return _pool(self.write_info)

    @property
    def replica(self):
        return _pool(self.read_info, writes=False) if self.read_info else None

    # -- the schema -----------------------------------------------------------------------
    def _connect(self, info=None):
        import psycopg
        return psycopg.connect(info or self.write_info, connect_timeout=CONNECT_SECONDS,
                               autocommit=True)

    def _check_schema(self, create, primary_only):
        """Create the tables when there are none (create=True), refuse a database whose
        tables are not this version's; IncompatibleSink says why. With the primary down
        (and not `primary_only`), the replica's tables are checked instead: reads go on,
        writes fail as they would anyway."""
        import psycopg
        try:
            if create:
                return self._create_schema()
            with self._connect() as conn:
                stamp, missing = self._stamp(conn)
        except psycopg.OperationalError:
            if not self.read_info or primary_only:
                raise
            with self._connect(self.read_info) as conn:
                stamp, missing = self._stamp(conn)
        if len(missing) == len(T.TABLES):
            raise FileNotFoundError(f"no dynlists tables in {self.shown}")

    def _create_schema(self):
        with self._connect() as conn:
            stamp, missing = self._stamp(conn)
            if stamp == SCHEMA_VERSION and not missing and _has_outbox(conn):
                return
            with conn.transaction():
                # one creator at a time: concurrent CREATE TABLE IF NOT EXISTS can fail
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('dynlists schema'))")
                stamp, missing = self._stamp(conn)
                if stamp not in (None, SCHEMA_VERSION):
                    raise IncompatibleSink(self.shown, (
                        f"made by a newer version of dynlists (schema {stamp}, this one "
                        f"reads up to {SCHEMA_VERSION}): upgrade dynlists to use it"))
                for table in missing:
                    for statement in T.postgres_ddl(table):
                        conn.execute(statement)
                conn.execute(T.outbox_ddl('TEXT COLLATE "C"'))
                conn.execute(f"COMMENT ON TABLE {T.MEMBERSHIP_DELTAS} IS "
                             f"'{_MARK}{SCHEMA_VERSION}'")

    def _stamp(self, conn):
        """(stamped version or None, names of missing tables); IncompatibleSink for
        tables of the same names that are not dynlists' own."""
        found = {}
        for table, column in conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ANY(%s) "
                "ORDER BY table_name, ordinal_position", (list(T.TABLES),)):
            found.setdefault(table, []).append(column)
        for table, columns in found.items():
            if columns != T.column_names(table):
                raise IncompatibleSink(self.shown, (
                    f"not a dynlists database (its table {table} has the columns "
                    f"{', '.join(columns[:5])}): name another database for the sink"))
        comment = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')",
                               (T.MEMBERSHIP_DELTAS,)).fetchone()[0]
        stamp = None
        if comment and comment.startswith(_MARK) and comment[len(_MARK):].isdigit():
            stamp = int(comment[len(_MARK):])
        elif T.MEMBERSHIP_DELTAS in found:
            raise IncompatibleSink(self.shown, "not a dynlists database (its table "
                                   f"{T.MEMBERSHIP_DELTAS} is not stamped by dynlists): "
                                   "name another database for the sink")
        if stamp is not None and stamp > SCHEMA_VERSION:
            raise IncompatibleSink(self.shown, (
                f"made by a newer version of dynlists (schema {stamp}, this one reads up "
                f"to {SCHEMA_VERSION}): upgrade dynlists to use it"))
        return stamp, [table for table in T.TABLES if table not in found]

    # -- writing --------------------------------------------------------------------------
    def _write_values(self, deltas, dead, profiles, queue=False):
        # the last profile of a lead wins, as each replaces the one before
        profiles = list({(p[0], p[1]): p for p in profiles}.values())
        with self.pool.connection() as conn:
            with conn.cursor() as cursor:
                new = self._write_deltas(cursor, deltas, queue)
                self._write_rows(cursor, T.DEAD_LETTERS, dead)
                joins, leaves = self._changes(cursor, deltas, len(new) if queue else new)
                self._write_rows(cursor, T.LIST_MEMBERSHIPS, joins)
                self._write_rows(cursor, T.LEAD_PROFILES, profiles)
                if leaves:
                    _copy(cursor, "stage_leaves", leaves)
                    cursor.execute(_LEAVE)
            conn.commit()  # before the pool takes the connection back
        self._fenced_at = None  # this store reads its own writes: a new fence
        return new

    def _write_deltas(self, cursor, deltas, queue):
        """The deltas; how many were new (with `queue`, the new ones, for the outbox)."""
        table = T.MEMBERSHIP_DELTAS
        if not deltas:
            return [] if queue else 0
        if self._copied_fresh(cursor, table, deltas):
            return self._queue_fresh(cursor, deltas) if queue else len(deltas)
        _copy(cursor, f"stage_{table}", deltas)
        if queue:
            cursor.execute(_MERGE_QUEUED)
            ids = {found for (found,) in cursor.fetchall()}
            return list({v[0]: v for v in deltas if v[0] in ids}.values())
        cursor.execute(_MERGE[table])
        return cursor.rowcount

    def _write_rows(self, cursor, table, rows):
        """Rows into a table: copied straight in when it holds none of their keys yet,
        else staged and merged."""
        if rows and not self._copied_fresh(cursor, table, rows):
            _copy(cursor, f"stage_{table}", rows)
            cursor.execute(_MERGE[table])

    @staticmethod
    def _changes(cursor, deltas, written):
        """(joins, leaves) of the deltas, `written` of which were new. A replay (some
        were known) may be older than the stored memberships: then only changes at
        least as new as the stored ones count."""
        if written >= len(deltas):
            return membership_changes(deltas)
        cursor.execute(_NEWEST)
        return membership_changes(deltas, {
            (t, li, le): seq for t, li, le, seq in cursor.fetchall()})

    def _copied_fresh(self, cursor, table, rows):
        """Rows none of whose keys the table holds yet (a backfill's, mostly) are copied
        straight into it, without staging and merging; False, with nothing written, when
        one of them is there (then the merge does it). After a miss a table is merged
        for the next FRESH_RETRY batches without trying: a stream's memberships and
        profiles are mostly known ones."""
        import psycopg
        waiting = self._fresh_wait.get(table, 0)
        if waiting:
            self._fresh_wait[table] = waiting - 1
            return False
        cursor.execute("SAVEPOINT fresh")
        try:
            _copy(cursor, table, _unique(table, rows))
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT fresh")
            self._fresh_wait[table] = FRESH_RETRY
            return False
        cursor.execute("RELEASE SAVEPOINT fresh")
        return True

    @staticmethod
    def _queue_fresh(cursor, rows):
        rows = _unique(T.MEMBERSHIP_DELTAS, rows)
        _copy(cursor, T.DELTA_OUTBOX, [(v[1], v[2], v[0]) for v in rows])
        return rows

    def queued(self, limit=1000, written_before=None):
        """Rows (tuples in column order) of at most `limit` deltas in the outbox, those
        written before the RFC 3339 time `written_before` only, when given. Read from
        the primary: the outbox is the writers' own."""
        keys = ", ".join(T.OUTBOX_KEY)
        where, params = "", (limit,)
        if written_before is not None:
            where, params = "WHERE d.processed_at < %s::timestamptz", (written_before, limit)
        with self.pool.connection() as conn:
            cursor = conn.execute(
                f"SELECT d.* FROM {T.DELTA_OUTBOX} o JOIN {T.MEMBERSHIP_DELTAS} d "
                f"USING ({keys}) {where} ORDER BY d.processed_at LIMIT %s", params)
            names = [d.name for d in cursor.description]
            found = cursor.fetchall()
            conn.rollback()
        return [tuple(_row(T.MEMBERSHIP_DELTAS, names, values).values())
                for values in found]

    def unqueue(self, rows):
        """Take the deltas of these rows out of the outbox (they are published)."""
        if not rows:
            return
        with self.pool.connection() as conn:
            conn.execute(f"DELETE FROM {T.DELTA_OUTBOX} WHERE (tenant_id, lead_id, "
                         "delta_id) IN (SELECT * FROM unnest(%s::text[], %s::text[], "
                         "%s::text[]))", ([v[1] for v in rows], [v[2] for v in rows],
                                          [v[0] for v in rows]))
            conn.commit()

    # -- reading --------------------------------------------------------------------------
    def _reader(self):
        """The pool to read from: the replica once it has replayed the primary's writes
        up to a fence at most FENCE_SECONDS old; the primary otherwise."""
        import psycopg
        if self.read_info is None:
            return self.pool
        now = time.monotonic()
        if self._fenced_at is not None and now - self._fenced_at < FENCE_SECONDS:
            return self.replica
        try:
            with self._connect() as conn:
                target = _fence(conn)
        except psycopg.OperationalError as err:
            # nothing writes without the primary: the replica has all there is to read
            _LOG.warning("the primary of %s cannot be reached (%s); reading from the "
                         "replica", self.shown, " ".join(str(err).split())[:200])
            return self.replica
        deadline = now + REPLICA_WAIT_SECONDS
        with self.replica.connection() as conn:
            while True:
                replayed = conn.execute(
                    "SELECT COALESCE(pg_last_wal_replay_lsn() >= %s::pg_lsn, TRUE)",
                    (target,)).fetchone()[0]
                conn.rollback()
                if replayed:
                    self._fenced_at = now
                    return self.replica
                if time.monotonic() > deadline:
                    _LOG.warning("the read replica of %s has not replayed the primary's "
                                 "writes after %.0f s; reading from the primary",
                                 self.shown, REPLICA_WAIT_SECONDS)
                    return self.pool
                time.sleep(0.01)

    def _query(self, sql, params=()):
        with self._reader().connection() as conn:
            cursor = conn.execute(sql, params)
            names = [d.name for d in cursor.description]
            found = cursor.fetchall()
            conn.rollback()
        return names, found

    def rows(self, table):
        names, found = self._query(f"SELECT * FROM {table}")
        return [_row(table, names, values) for values in found]

    def count(self, table):
        return self._query(f"SELECT COUNT(*) FROM {table}")[1][0][0]

    def memberships(self):
        return set(self._query(
            f"SELECT tenant_id, list_id, lead_id FROM {T.LIST_MEMBERSHIPS}")[1])

    def profile(self, tenant_id, lead_id):
        names, found = self._query(f"SELECT * FROM {T.LEAD_PROFILES} "
                                   "WHERE tenant_id = %s AND lead_id = %s",
                                   (tenant_id, lead_id))
        return _row(T.LEAD_PROFILES, names, found[0]) if found else None

    def profiles(self):
        return self.rows(T.LEAD_PROFILES)

    def lead_keys(self):
        return [key for page in self.lead_key_pages() for key in page]

    def lead_key_pages(self, page_size=500):
        """Lists of at most `page_size` (tenant_id, lead_id) of the stored profiles, in key
        order, each one range read of the key index from the last key handed out."""
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        first = (f"SELECT tenant_id, lead_id FROM {T.LEAD_PROFILES} "
                 "ORDER BY tenant_id, lead_id LIMIT %s")
        after = (f"SELECT tenant_id, lead_id FROM {T.LEAD_PROFILES} "
                 "WHERE (tenant_id, lead_id) > (%s, %s) ORDER BY tenant_id, lead_id LIMIT %s")
        page = [tuple(r) for r in self._query(first, (page_size,))[1]]
        while page:
            yield page
            if len(page) < page_size:
                return
            page = [tuple(r) for r in self._query(after, (*page[-1], page_size))[1]]

    def list_sizes(self):
        return [tuple(r) for r in self._query(
            f"SELECT tenant_id, list_id, COUNT(*) AS n FROM {T.LIST_MEMBERSHIPS} "
            "GROUP BY tenant_id, list_id ORDER BY n DESC, tenant_id, list_id")[1]]

    def delta_counts(self):
        return dict(self._query(
            f"SELECT action, COUNT(*) FROM {T.MEMBERSHIP_DELTAS} GROUP BY action")[1])

    def served_by_replica(self):
        """Whether this store's reads go to a replica now."""
        return self.read_info is not None and self._reader() is self.replica

    def close(self):
        pass  # the pools are the process's, closed when it exits


_TIMES = {table: {c.name for c in columns if c.type == "TIMESTAMP"}
          for table, columns in T.TABLES.items()}


def _row(table, names, values):
    """A row as the other sinks give it: times as RFC 3339 text, JSON as its text."""
    times = _TIMES[table]
    return {name: (_micros_text(value) if name in times and value is not None else value)
            for name, value in zip(names, values)}


_KEY_POSITIONS = {table: [T.column_names(table).index(name) for name in T.SQLITE_KEYS[table]]
                  for table in T.TABLES}


def _unique(table, rows):
    """The rows with one per key (the first: a repeated delta or dead letter is the same
    row; memberships and profiles come here already one per key)."""
    positions = _KEY_POSITIONS[table]
    seen, kept = set(), []
    for row in rows:
        key = tuple(row[i] for i in positions)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def _has_outbox(conn):
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                        (T.DELTA_OUTBOX,)).fetchone()[0]


def _copy(cursor, target, rows):
    with cursor.copy(f"COPY {target} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)

