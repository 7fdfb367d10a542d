"""Paged lead keys (lead_key_pages): the pages of a store cover every stored lead once, in
key order, however small the page; SQLite reads each page as a range of the key index
from where the last one ended. BigQuery's pages are in tests/test_bigquery.py."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import tables
from storage.jsonl import JsonlStore
from storage.sqlite import LEAD_KEYS_AFTER, LEAD_KEYS_FIRST, SqliteStore
from tests.test_sqlite_store import _profile

# ties on tenant, leads that are prefixes of others, a tenant that is a prefix of another
# (("t1", "x") < ("t10", "a") as tuples, unlike the keys' concatenations), non-ASCII
KEYS = [("t1", "L1"), ("t1", "L10"), ("t1", "L2"), ("t1", "a"), ("t1", "ab"), ("t1", "é"),
        ("t1", "x"), ("t10", "a"), ("t2", "L1"), ("t2", "L2"), ("tb", "c"), ("t", "zz")]


def make_store(kind, folder):
    if kind == "sqlite":
        return SqliteStore(str(folder / "s.db"))
    return JsonlStore(str(folder / "sink"))


def store_profiles(store, keys, batches=3):
    """The keys' profiles in several batches (JSON Lines: part files), every lead's row
    written again in a later batch, as a job that resumes leads does."""
    keys = list(keys)
    for start in range(batches):
        chunk = keys[start::batches] + keys[:start]
        if chunk:
            store.write({tables.LEAD_PROFILES: [_profile(*key) for key in chunk]})


def check_pages(pages, keys, page_size):
    assert all(isinstance(page, list) and page for page in pages)
    assert all(len(page) == page_size for page in pages[:-1])
    assert all(len(page) <= page_size for page in pages[-1:])
    flat = [key for page in pages for key in page]
    assert flat == sorted(set(keys))
    assert [tuple(key) for key in flat] == flat


@pytest.mark.parametrize("kind", ["sqlite", "jsonl"])
@pytest.mark.parametrize("page_size", [1, 2, 500])
def test_pages_cover_every_key_once_in_order(tmp_path, kind, page_size):
    store = make_store(kind, tmp_path)
    store_profiles(store, reversed(KEYS))
    pages = list(store.lead_key_pages(page_size=page_size))
    check_pages(pages, KEYS, page_size)
    assert len(pages) == -(-len(KEYS) // page_size)
    assert store.lead_keys() == sorted(KEYS)


@pytest.mark.parametrize("kind", ["sqlite", "jsonl"])
def test_an_empty_store_has_no_page(tmp_path, kind):
    store = make_store(kind, tmp_path)
    assert list(store.lead_key_pages(page_size=1)) == []
    assert list(store.lead_key_pages()) == []
    assert store.lead_keys() == []
    with pytest.raises(ValueError, match="page_size must be at least 1"):
        next(store.lead_key_pages(page_size=0))


@settings(max_examples=60, deadline=None)
@given(keys=st.sets(st.tuples(st.sampled_from(["t", "t1", "t10", "u"]),
                              st.text(min_size=1, max_size=4)), max_size=30),
       page_size=st.integers(1, 7))
def test_any_keys_any_page_size(tmp_path_factory, keys, page_size):
    folder = tmp_path_factory.mktemp("pages")
    for kind in ("sqlite", "jsonl"):
        store = make_store(kind, folder)
        store_profiles(store, keys)
        check_pages(list(store.lead_key_pages(page_size=page_size)), keys, page_size)
        store.close()


def test_sqlite_pages_go_on_from_the_last_key_read(tmp_path):
    """A page starts after the last key of the page before (not at an offset): a lead
    stored meanwhile before that key neither repeats a key nor hides one, and a lead
    stored after it comes in a later page."""
    store = make_store("sqlite", tmp_path)
    store_profiles(store, [("t1", "b"), ("t1", "c"), ("t1", "d"), ("t1", "e")])
    pages = store.lead_key_pages(page_size=2)
    assert next(pages) == [("t1", "b"), ("t1", "c")]
    store.write({tables.LEAD_PROFILES: [_profile("t1", "a"), _profile("t1", "cc")]})
    assert list(pages) == [[("t1", "cc"), ("t1", "d")], [("t1", "e")]]


def test_sqlite_pages_are_range_reads_of_the_key_index(tmp_path):
    """Neither query sorts or scans the table: the first page reads the primary key's
    index from its start, the others seek into it past the last key."""
    store = make_store("sqlite", tmp_path)

    def plan(sql, params):
        return " | ".join(row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + sql,
                                                              params))
    index = "USING COVERING INDEX sqlite_autoindex_lead_profiles_1"  # the primary key's
    first, after = plan(LEAD_KEYS_FIRST, (2,)), plan(LEAD_KEYS_AFTER, ("t", "L", 2))
    assert index in first and "TEMP B-TREE" not in first, first
    assert index in after and "TEMP B-TREE" not in after, after
    assert after.startswith("SEARCH") and "((tenant_id,lead_id)>(?,?))" in after, after
