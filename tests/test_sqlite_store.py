"""The SQLite store: the fast path for delta records writes exactly what the row path
writes, and memberships follow the deltas in order, known ones included; a sink keeps
up with definitions that come back and with a backfill run again with more events."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.values import format_ts
from schemas import tables
from schemas.records import make_delta
from storage.rows import delta_row
from storage.sqlite import SqliteStore

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
    # memberships: every delta in order, known or new (the last of a batch decides)
    seen, members = set(), {}
    for delta in itertools.chain.from_iterable(batches):
        seen.add(delta.delta_id)
        key = (delta.tenant_id, delta.list_id, delta.lead_id)
        if delta.action == "added":
            members[key] = delta.seq
        else:
            members.pop(key, None)
    assert fast.memberships() == set(members)
    assert new_fast == len(seen)
    assert fast.count(tables.MEMBERSHIP_DELTAS) == len(seen)


def test_a_file_with_the_earlier_keys_still_takes_writes_and_replays(tmp_path):
    """Files made before the tables were keyed by lead have delta_id and (tenant, list,
    lead) as their keys; writing, replaying and reading them works the same."""
    import sqlite3
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    for name in tables.TABLES:
        ddl = tables.sqlite_ddl(name)[0]
        keys = ", ".join(tables.KEYS[name])
        db.execute(ddl.replace(f"PRIMARY KEY ({', '.join(tables.SQLITE_KEYS[name])})",
                               f"PRIMARY KEY ({keys})"))
    db.commit()
    db.close()
    first = [make_delta("t1", "L1", "a", True, 1, "e1", 0, 1),
             make_delta("t1", "L1", "b", True, 1, "e1", 0, 2),
             make_delta("t1", "L2", "a", True, 2, "e2", 0, 1)]
    later = [make_delta("t1", "L1", "a", False, 3, "e3", 0, 3)]
    store = SqliteStore(path)
    assert "PRIMARY KEY (delta_id)" in store.db.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'membership_deltas'").fetchone()[0]
    stamp = format_ts(STAMP)
    assert store.write_deltas(first, stamp) == 3
    assert store.write_deltas(first + later, stamp) == 1  # a replay plus one new delta
    assert store.count(tables.MEMBERSHIP_DELTAS) == 4
    assert store.memberships() == {("t1", "b", "L1"), ("t1", "a", "L2")}
    assert [size for _, lid, size in store.list_sizes() if lid == "a"] == [1]


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
