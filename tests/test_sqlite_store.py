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
