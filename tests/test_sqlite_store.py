"""The SQLite store: the fast path for delta records writes exactly what the row path
writes, and memberships follow the deltas in order, known ones included; a sink keeps
up with definitions that come back and with a backfill run again with more events."""

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.values import format_ts
from schemas import tables
from schemas.records import make_dead_letter, make_delta
from storage import IncompatibleSink, check_sink
from storage.rows import dead_letter_row, delta_row
from storage.sqlite import SCHEMA_VERSION, SqliteStore

STAMP = 1_800_000_000_000_000

deltas = st.builds(
    lambda tenant, lead, lid, added, when, cause: make_delta(tenant, lead, lid, added,
                                                             when, cause, 0, when),
    st.sampled_from(["t1", "t2"]), st.sampled_from(["L1", "L2"]),
    st.sampled_from(["a", "b", "c"]), st.booleans(),
    st.integers(1_700_000_000_000_000, 1_700_000_100_000_000), st.sampled_from(["e1", "e2"]))


def table(store, name):
    return sorted(tuple(sorted(row.items())) for row in store.rows(name))


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(deltas, max_size=8), max_size=5))
def test_delta_records_and_rows_write_the_same_tables(tmp_path_factory, batches):
    folder = tmp_path_factory.mktemp("stores")
    fast, rows = SqliteStore(str(folder / "fast.db")), SqliteStore(str(folder / "rows.db"))
    stamp_text = format_ts(STAMP)
    new_fast = new_rows = 0
    for batch in batches:
        new_fast += fast.write_deltas(batch, stamp_text)
        new_rows += rows.write({tables.MEMBERSHIP_DELTAS: [delta_row(d, STAMP)
                                                           for d in batch]})
    assert new_fast == new_rows
    for name in (tables.MEMBERSHIP_DELTAS, tables.LIST_MEMBERSHIPS):
        assert table(fast, name) == table(rows, name)
    # memberships: per batch, the last delta of each (tenant, list, lead) decides; in a
    # replay (a batch with deltas already stored, or the same one twice) only where no
    # stored delta of that key has a higher seq
    seen, members, stored = set(), {}, {}
    for batch in batches:
        fresh = {delta.delta_id for delta in batch} - seen
        replay = len(fresh) < len(batch)
        for delta in batch:
            if delta.delta_id not in seen:
                seen.add(delta.delta_id)
                key = (delta.tenant_id, delta.list_id, delta.lead_id)
                stored[key] = max(stored.get(key, delta.seq), delta.seq)
        last = {(d.tenant_id, d.list_id, d.lead_id): d for d in batch}
        for key, delta in last.items():
            if replay and delta.seq < stored[key]:
                continue
            if delta.action == "added":
                members[key] = delta.seq
            else:
                members.pop(key, None)
    assert fast.memberships() == set(members)
    assert new_fast == len(seen)
    assert fast.count(tables.MEMBERSHIP_DELTAS) == len(seen)


# The tables as version 1 (user_version 0) made them, before deltas and memberships were
# keyed by lead: written out, not derived, so that a change to today's DDL leaves them be.
V1_DDL = """
CREATE TABLE IF NOT EXISTS membership_deltas (
  delta_id TEXT NOT NULL, tenant_id TEXT NOT NULL, lead_id TEXT NOT NULL,
  list_id TEXT NOT NULL, action TEXT NOT NULL, event_time TEXT NOT NULL,
  cause TEXT NOT NULL, cascade_depth INTEGER NOT NULL, seq INTEGER NOT NULL,
  processed_at TEXT NOT NULL,
  PRIMARY KEY (delta_id)
);
CREATE TABLE IF NOT EXISTS list_memberships (
  tenant_id TEXT NOT NULL, list_id TEXT NOT NULL, lead_id TEXT NOT NULL,
  since TEXT NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, list_id, lead_id)
);
CREATE TABLE IF NOT EXISTS dead_letters (
  dead_letter_id TEXT NOT NULL, received_at TEXT NOT NULL, source TEXT NOT NULL,
  reason TEXT NOT NULL, payload TEXT NOT NULL,
  PRIMARY KEY (dead_letter_id)
);
CREATE TABLE IF NOT EXISTS lead_profiles (
  tenant_id TEXT NOT NULL, lead_id TEXT NOT NULL, deleted INTEGER NOT NULL,
  fields TEXT, tags TEXT, static_lists TEXT, activities TEXT, memberships TEXT,
  clock TEXT, state TEXT NOT NULL, updated_at TEXT NOT NULL,
  PRIMARY KEY (tenant_id, lead_id)
);
"""

FIRST = [make_delta("t1", "L1", "a", True, 1, "e1", 0, 1),
         make_delta("t1", "L1", "b", True, 1, "e1", 0, 2),
         make_delta("t1", "L2", "a", True, 2, "e2", 0, 1)]
LATER = [make_delta("t1", "L1", "a", False, 3, "e3", 0, 3)]


def _profile(tenant, lead):
    return {"tenant_id": tenant, "lead_id": lead, "deleted": False, "fields": "{}",
            "tags": "[]", "static_lists": "[]", "activities": "{}", "memberships": "{}",
            "clock": None, "state": '{"seq": 1}', "updated_at": format_ts(STAMP)}


def copy_into_v1_file(source, path):
    """A version 1 file holding the rows of the store at `source`."""
    db = sqlite3.connect(path)
    db.executescript(V1_DDL)
    db.execute("ATTACH DATABASE ? AS src", (source,))
    for name in tables.TABLES:
        db.execute(f"INSERT INTO {name} SELECT * FROM src.{name}")
    db.commit()
    db.execute("DETACH DATABASE src")
    db.close()


def primary_key(db, name):
    info = db.execute(f"PRAGMA table_info({name})").fetchall()
    return tuple(column[1] for column in sorted(info, key=lambda c: c[5]) if column[5])


def user_version(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def test_a_file_with_the_earlier_keys_is_rebuilt_with_todays_keys(tmp_path):
    """Version 1 files key deltas by delta_id and memberships by (tenant, list, lead):
    opening one rebuilds those tables with today's keys and index, every row kept; a
    replay then adds no row, and writes go on as on a new file."""
    reference = SqliteStore(str(tmp_path / "today.db"))
    stamp = format_ts(STAMP)
    reference.write_deltas(FIRST, stamp, [_profile("t1", "L1"), _profile("t1", "L2")])
    reference.write({tables.DEAD_LETTERS: [dead_letter_row(
        make_dead_letter("f:1", "not_json: x", "{oops", STAMP))]})
    old = str(tmp_path / "old.db")
    copy_into_v1_file(reference.path, old)
    assert user_version(old) == 0
    store = SqliteStore(old)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    for name in tables.TABLES:
        assert primary_key(store.db, name) == tables.SQLITE_KEYS[name]
        assert table(store, name) == table(reference, name)
    assert store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                            "name = 'list_memberships_by_list'").fetchone()
    assert {n for (n,) in store.db.execute("SELECT name FROM sqlite_master WHERE type = "
                                           "'table'")} == set(tables.TABLES)
    # idempotence after the rebuild: the same deltas again are no new row
    assert store.write_deltas(FIRST, stamp) == 0
    assert store.count(tables.MEMBERSHIP_DELTAS) == 3
    for both in (store, reference):
        assert both.write_deltas(FIRST + LATER, stamp) == 1  # a replay plus one new delta
    for name in tables.TABLES:
        assert table(store, name) == table(reference, name)
    assert store.memberships() == {("t1", "b", "L1"), ("t1", "a", "L2")}
    store.close()
    again = SqliteStore(old)  # opened again: already today's, nothing to do
    assert table(again, tables.MEMBERSHIP_DELTAS) == table(reference, tables.MEMBERSHIP_DELTAS)


def test_a_rebuild_that_fails_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    """The rebuild is one transaction: a failure after the deltas were copied leaves the
    version 1 file whole, to be rebuilt at the next opening."""
    reference = SqliteStore(str(tmp_path / "today.db"))
    reference.write_deltas(FIRST, format_ts(STAMP))
    old = str(tmp_path / "old.db")
    copy_into_v1_file(reference.path, old)
    rekey = SqliteStore._rekey

    def rekey_then_fail(self):
        rekey(self)
        assert primary_key(self.db, tables.MEMBERSHIP_DELTAS) == \
            tables.SQLITE_KEYS[tables.MEMBERSHIP_DELTAS]
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(SqliteStore, "_rekey", rekey_then_fail)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        SqliteStore(old)
    db = sqlite3.connect(old)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    assert primary_key(db, tables.MEMBERSHIP_DELTAS) == ("delta_id",)
    assert primary_key(db, tables.LIST_MEMBERSHIPS) == ("tenant_id", "list_id", "lead_id")
    assert db.execute("SELECT COUNT(*) FROM membership_deltas").fetchone()[0] == 3
    db.close()
    monkeypatch.setattr(SqliteStore, "_rekey", rekey)
    assert SqliteStore(old).count(tables.MEMBERSHIP_DELTAS) == 3


def test_a_file_of_todays_layout_without_a_version_is_stamped(tmp_path):
    """Files the current layout made before files carried a version: stamped 2 as they
    are, nothing rebuilt."""
    path = str(tmp_path / "unstamped.db")
    db = sqlite3.connect(path)
    for name in tables.TABLES:
        for statement in tables.sqlite_ddl(name):
            db.execute(statement)
    db.commit()
    before = sorted(db.execute("SELECT type, name, sql FROM sqlite_master"))
    db.close()
    store = SqliteStore(path)
    assert store.write_deltas(FIRST, format_ts(STAMP)) == 3
    assert sorted(store.db.execute("SELECT type, name, sql FROM sqlite_master")) == before
    store.close()
    assert user_version(path) == SCHEMA_VERSION


def test_a_new_file_is_made_at_todays_version(tmp_path):
    store = SqliteStore(str(tmp_path / "new.db"))
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    for name in tables.TABLES:
        assert primary_key(store.db, name) == tables.SQLITE_KEYS[name]


def _newer(path):
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()


def _foreign(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('keep me')")
    db.commit()
    db.close()


def _ours_and_more(path):
    SqliteStore(path).close()
    _foreign(path)


def _other_columns(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE lead_profiles (id TEXT PRIMARY KEY, name TEXT)")
    db.close()


def _other_keys(path):
    db = sqlite3.connect(path)
    for statement in tables.sqlite_ddl(tables.MEMBERSHIP_DELTAS):
        db.execute(statement.replace("PRIMARY KEY (tenant_id, lead_id, delta_id)",
                                     "PRIMARY KEY (list_id, delta_id)"))
    db.close()


def _newer_of_another_program(path):
    _foreign(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 40")
    db.close()


REFUSED = [
    (_newer, "made by a newer version of dynlists (schema 3, this one reads up to 2): "
             "upgrade dynlists to use it"),
    (_foreign, "not a dynlists database (it has tables dynlists does not make: notes): "
               "name another file for the sink"),
    (_ours_and_more, "not a dynlists database (it has tables dynlists does not make: notes)"),
    (_other_columns, "not a dynlists database (its table lead_profiles has the columns "
                     "id, name)"),
    (_other_keys, "not a dynlists database (its table membership_deltas is keyed by "
                  "(list_id, delta_id))"),
    (_newer_of_another_program, "not a dynlists database (it has tables dynlists does not "
                                "make: notes)"),
]


@pytest.mark.parametrize("make, reason", REFUSED, ids=[m.__name__ for m, _ in REFUSED])
def test_files_this_version_cannot_use_are_refused_untouched(tmp_path, make, reason):
    path = str(tmp_path / "refused.db")
    make(path)
    before = open(path, "rb").read()
    with pytest.raises(IncompatibleSink) as refused:
        SqliteStore(path)
    assert refused.value.reason.startswith(reason)
    assert str(refused.value).startswith(path + ": ")
    assert open(path, "rb").read() == before
    db = sqlite3.connect(path)  # not switched to WAL, not stamped
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == (
        "wal" if make in (_newer, _ours_and_more) else "delete")
    db.close()
    with pytest.raises(ValueError) as sentence:
        check_sink(f"sqlite://{path}", must_exist=True)
    assert str(sentence.value) == f"cannot use sink sqlite://{path}: {refused.value.reason}"
    assert "\n" not in str(sentence.value)


def _scenario_processor(bound):
    from rules import LeadProcessor, parse_definitions
    return LeadProcessor(parse_definitions({"lists": [{
        "tenant_id": "t", "list_id": "high", "name": "high",
        "rules": {"field": "score", "op": "gt", "value": bound}}]}))


def _upsert(processor, event_id, day, score):
    import json

    from schemas.events import parse_event
    return parse_event(json.dumps({
        "event_id": event_id, "tenant_id": "t", "lead_id": "x", "type": "lead_upserted",
        "occurred_at": f"2024-01-0{day}T00:00:00Z", "fields": {"score": score}}),
        processor.definitions)


def test_definitions_that_come_back_keep_the_sink_with_the_state(tmp_path):
    """v1 -> v2 -> v1 -> v2: the second roll-out of v2 removes the lead again; that
    delta is a new row, and the sink's memberships are the state's at every step."""
    from rules import LeadState
    v1, v2 = _scenario_processor(50), _scenario_processor(70)
    store, state = SqliteStore(str(tmp_path / "s.db")), LeadState()
    stamp = format_ts(STAMP)
    _, deltas = v1.on_event(state, _upsert(v1, "e1", 1, 60))
    store.write_deltas(deltas, stamp)
    written = len(deltas)
    for processor in (v2, v1, v2):
        deltas = processor.on_definitions(state, "t", "x")
        assert len(deltas) == 1
        assert store.write_deltas(deltas, stamp) == 1
        written += 1
        assert store.memberships() == {("t", lid, "x") for lid in state.members}
    assert store.count(tables.MEMBERSHIP_DELTAS) == written == 4
    assert not state.members


def test_a_backfill_run_again_with_an_older_event_ends_where_its_history_ends(tmp_path):
    """Run 1: e1 (joins), e2 (leaves). Run 2 adds an older e0: its history is e0 (joins),
    e1 (no change), e2 (leaves, a delta the sink has). The lead is not a member."""
    from rules import LeadState
    processor = _scenario_processor(50)
    store = SqliteStore(str(tmp_path / "s.db"))
    run1 = [_upsert(processor, "e1", 2, 60), _upsert(processor, "e2", 3, 10)]
    run2 = [_upsert(processor, "e0", 1, 70)] + run1
    for events in (run1, run2):
        state = LeadState()
        _, deltas = processor.run_history(state, events)
        store.write_deltas(deltas, format_ts(STAMP))
        assert store.memberships() == {("t", lid, "x") for lid in state.members} == set()


def test_deltas_and_their_profiles_are_one_transaction(tmp_path):
    """A lead's profile says which events it has seen: it must never land without the
    deltas of those events. A write that fails part-way leaves neither."""
    import sqlite3

    import pytest

    from rules import LeadState
    from storage.rows import profile_row
    processor = _scenario_processor(50)
    store = SqliteStore(str(tmp_path / "s.db"))
    state = LeadState()
    _, deltas = processor.on_event(state, _upsert(processor, "e1", 1, 60))
    good = profile_row("t", "x", state, STAMP)
    broken = dict(good, lead_id=None)  # NOT NULL: fails after the deltas went in
    with pytest.raises(sqlite3.IntegrityError):
        store.write_deltas(deltas, format_ts(STAMP), [good, broken])
    assert store.count(tables.MEMBERSHIP_DELTAS) == store.count(tables.LEAD_PROFILES) == 0
    assert store.write_deltas(deltas, format_ts(STAMP), [good]) == len(deltas) == 1
    assert store.profile("t", "x")["state"] == good["state"]


def test_the_json_lines_store_reads_back_the_profiles_it_wrote(tmp_path):
    from rules import LeadState
    from storage.jsonl import JsonlStore
    from storage.rows import profile_row
    processor = _scenario_processor(50)
    store, state = JsonlStore(str(tmp_path / "sink")), LeadState()
    _, deltas = processor.on_event(state, _upsert(processor, "e1", 1, 60))
    store.write_deltas(deltas, format_ts(STAMP), [profile_row("t", "x", state, STAMP)])
    assert store.profile("t", "x")["state"] == profile_row("t", "x", state, STAMP)["state"]
    _, deltas = processor.on_event(state, _upsert(processor, "e2", 2, 10))
    newer = profile_row("t", "x", state, STAMP + 1)
    store.write_deltas(deltas, format_ts(STAMP), [newer])
    assert store.profile("t", "x")["state"] == newer["state"]  # not the first one, cached
    assert store.memberships() == set()


def test_a_definition_change_replayed_in_another_order_is_the_same_row(tmp_path):
    """After a restore, a re-delivered sweep can run before an event it first followed:
    the lead's seq differs between the two orders, its definition change must not."""
    from rules import LeadProcessor, LeadState, parse_definitions
    from schemas.records import ChangeEvent

    def version(bound):
        return LeadProcessor(parse_definitions({"tenants": ["t"], "lists": [
            {"tenant_id": "t", "list_id": "high",
             "rules": {"field": "score", "op": "gt", "value": bound}},
            {"tenant_id": "t", "list_id": "tagged", "rules": {"tag": "x"}}]}))
    v1, v2 = version(50), version(70)
    store = SqliteStore(str(tmp_path / "s.db"))
    e1 = ChangeEvent("e1", "t", "L", "lead_upserted", 1, fields={"score": 60})
    e2 = ChangeEvent("e2", "t", "L", "tag_added", 2, tag="x")
    runs = []
    for sweep_first in (False, True):
        state, deltas = LeadState(), []
        deltas += v1.on_event(state, e1)[1]
        if sweep_first:
            deltas += v2.on_definitions(state, "t", "L")
            deltas += v2.on_event(state, e2)[1]
        else:
            deltas += v1.on_event(state, e2)[1]
            deltas += v2.on_definitions(state, "t", "L")
        store.write_deltas(deltas, format_ts(STAMP))
        runs.append({(d.list_id, d.action, d.cause): d.seq for d in deltas})
    assert runs[0].keys() == runs[1].keys()
    assert runs[0] != runs[1]  # the seqs differ between the orders...
    assert store.count(tables.MEMBERSHIP_DELTAS) == 3  # ...the rows do not
    assert store.memberships() == {("t", "tagged", "L")}
