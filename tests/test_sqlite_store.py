"""The SQLite store: the fast path for delta records writes exactly what the row path
writes, and memberships follow the first occurrence of each delta, in order."""

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
    # memberships: fold each delta the first time its id is seen, in order
    seen, members = set(), {}
    for delta in itertools.chain.from_iterable(batches):
        if delta.delta_id in seen:
            continue
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
