"""The fuzz harness in CI: a short coverage-guided run in a subprocess (atheris, about a
minute at most), a replay of the whole seed corpus in-process, the harness's own parts
(the in-memory JSON Lines store against the file store, the choices an input's bytes
make) and the crashes the long campaign found, each as the event that caused it.

The short run by hand (what test_a_short_fuzz_run_finds_no_crash runs):
    .venv/bin/python tests/fuzz/fuzz_pipeline.py -runs=20000 -max_total_time=50 \
        -max_len=4096 -seed=1 -artifact_prefix=/tmp/ /tmp/fuzz-corpus tests/fuzz/corpus
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import pytest

from rules import LeadProcessor, LeadState, parse_definitions
from schemas import tables
from schemas.events import parse_event
from schemas.records import make_dead_letter
from storage.jsonl import JsonlStore
from storage.rows import dead_letter_row, delta_row, profile_row, state_from_row
from tests.conftest import IN_CI, require_native
from tests.fuzz.harness import SETS, MemoryJsonl, Provider, record, run

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "fuzz")
CORPUS = os.path.join(FUZZ, "corpus")
ROOT = os.path.dirname(HERE)
SHORT_RUNS = 20_000   # or as many as fit in SHORT_SECONDS, whichever comes first
SHORT_SECONDS = 50   # libFuzzer's clock, loading the corpus included
REQUIRED = {"event_id", "tenant_id", "lead_id", "type", "occurred_at"}


def corpus():
    return sorted(os.listdir(CORPUS))


def test_the_seed_corpus_is_small_and_holds_raw_and_structured_inputs():
    names = corpus()
    sizes = [os.path.getsize(os.path.join(CORPUS, n)) for n in names]
    assert 50 <= len(names) <= 300 and sum(sizes) <= 2 << 20
    modes = {open(os.path.join(CORPUS, n), "rb").read(1)[0] % 8 for n in names}
    assert {0, 1} <= modes and modes - {0, 1}, "raw records and structured inputs"


@pytest.mark.parametrize("name", corpus())
def test_every_corpus_input_runs_through_the_harness(name):
    require_native(True)
    with open(os.path.join(CORPUS, name), "rb") as handle:
        run(handle.read())


def test_a_short_fuzz_run_finds_no_crash(tmp_path):
    try:
        import atheris  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("atheris is not installed (CI=true: this test must run)")
        pytest.skip("atheris is not installed (pip install atheris==3.0.0)")
    require_native(True)
    work = tmp_path / "corpus"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, os.path.join(FUZZ, "fuzz_pipeline.py"), f"-runs={SHORT_RUNS}",
         f"-max_total_time={SHORT_SECONDS}", "-max_len=4096", "-seed=1",
         f"-artifact_prefix={tmp_path}/", str(work), CORPUS],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    crashes = [n for n in os.listdir(tmp_path) if n.startswith(("crash-", "timeout-",
                                                                "oom-"))]
    assert done.returncode == 0 and not crashes, (crashes, done.stderr[-3000:])
    # the whole seed corpus ran under the instrumentation, then mutations of it
    assert "INITED" in done.stderr, done.stderr[-3000:]
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert runs and int(runs[1]) > len(corpus()), done.stderr[-3000:]
    # the coverage the fuzzer follows is the project's: not the harness's, not Beam's
    instrumented = set(re.findall(r"Instrumenting ([\w.]+)", done.stderr))
    assert {"schemas.events", "rules.processor", "storage.rows", "storage.sqlite",
            "transforms.sinks"} <= instrumented, instrumented
    assert {m.split(".")[0] for m in instrumented} == {
        "rules", "schemas", "storage", "transforms"}, instrumented


def _rows_to_store():
    """Deltas, a profile and a dead letter of a few events, with text beyond ASCII
    (line separators among it that JSON does not escape)."""
    definitions, native, _ = SETS[1][0]
    state = LeadState()
    deltas = []
    for n, (kind, extra) in enumerate([
            ("lead_upserted", {"fields": {"state": "NY", "city": "Zürich ✓", "score": 51,
                                          "title": "line\u2028sep\x85next\u2029para"}}),
            ("tag_added", {"tag": "vip"}),
            ("activity", {"activity": {"kind": "email_open", "ref": "c-é"}})]):
        event = parse_event(json.dumps({
            "event_id": f"e{n}", "tenant_id": "fz", "lead_id": "L-ß", "type": kind,
            "occurred_at": f"2026-05-01T0{n}:00:00Z", **extra}, ensure_ascii=False),
            definitions)
        deltas += native.on_event(state, event)[1]
    profiles = [profile_row("fz", "L-ß", state, 1_777_593_600_000_000)]
    dead = [dead_letter_row(make_dead_letter("f:1", "not_json: x", "{oops ✗\u2028", 1))]
    return deltas, profiles, dead


def test_the_in_memory_json_lines_store_writes_the_bytes_the_file_store_writes(tmp_path):
    require_native(True)
    deltas, profiles, dead = _rows_to_store()
    assert len(deltas) >= 2
    files, memory = JsonlStore(str(tmp_path)), MemoryJsonl()
    for store in (files, memory):
        store.write_deltas(deltas + deltas[:1], "2026-05-01T00:00:00.000001Z", profiles)
        store.write({tables.DEAD_LETTERS: dead})
    for table in (tables.MEMBERSHIP_DELTAS, tables.LEAD_PROFILES, tables.DEAD_LETTERS):
        on_disk = sorted(p.read_bytes() for p in (tmp_path / table).glob("part-*.jsonl"))
        assert on_disk and on_disk == sorted(memory.parts[table]), table
        assert files.rows(table) == memory.rows(table), table
    assert memory.profile("fz", "L-ß") == files.profile("fz", "L-ß") == profiles[0]
    assert len(memory.rows(tables.MEMBERSHIP_DELTAS)) == len(deltas)  # each one once
    # text that UTF-8 cannot hold fails both the same way
    lone = [{**dead[0], "payload": "\ud800"}]
    for store in (JsonlStore(str(tmp_path / "lone")), MemoryJsonl()):
        with pytest.raises(UnicodeEncodeError):
            store.write({tables.DEAD_LETTERS: lone})


def test_an_input_that_ends_early_goes_on_with_plain_records():
    """Past its end an input reads zeros, and a zero takes no rare case: the record is
    the plainest one (not a thousand fields, not damaged, nothing missing)."""
    definitions = SETS[1][0][0]
    assert json.loads(record(Provider(b""), "fz", "L1", definitions)) == {
        "event_id": "e1", "tenant_id": "fz", "lead_id": "L1", "type": "lead_upserted",
        "occurred_at": "2026-05-01T00:00:00Z", "fields": {}}
    assert [Provider(bytes([b])).chance(4) for b in range(9)] == [
        False, False, False, True, False, False, False, True, False]


def test_the_rare_cases_still_come_from_the_bytes():
    definitions = SETS[1][0][0]
    rng = random.Random(1)
    found = set()
    for _ in range(3000):
        text = record(Provider(rng.randbytes(rng.randint(1, 300))), "fz", "L1", definitions)
        try:
            out = json.loads(text)
        except ValueError:
            found.add("damaged")
            continue
        except RecursionError:  # a value nested deeper than json.loads reads here
            continue
        if not isinstance(out, dict):
            continue
        if isinstance(out.get("fields"), dict) and len(out["fields"]) >= 999:
            found.add("a thousand fields")
        if not REQUIRED <= set(out):
            found.add("a required field missing")
        if out.get("type") == "lead_upserted" and "tag" in out:
            found.add("a field another type has")
    assert found == {"damaged", "a thousand fields", "a required field missing",
                     "a field another type has"}, found


@pytest.mark.parametrize("native", [True, False])
def test_a_time_window_that_ends_after_the_year_9999_prints_and_flips(native):
    """Found by the fuzzer: an email open at the last moment an event can have, in a
    list of opens in the last 7 days, flips 7 days later, in the year 10000; printing
    that time (the timer's cause, the delta's time, the profile's clock) raised
    OverflowError on both backends."""
    require_native(native)
    definitions = parse_definitions({"tenants": ["t"], "lists": [
        {"tenant_id": "t", "list_id": "opened", "rules": {
            "activity": "email_open", "within_days": 7}}]})
    processor = LeadProcessor(definitions, native=native)
    event = parse_event(json.dumps({
        "event_id": "e1", "tenant_id": "t", "lead_id": "L", "type": "activity",
        "occurred_at": "9999-12-31T23:59:59.999999Z", "activity": {"kind": "email_open"}}),
        definitions)
    state = LeadState()
    assert [d.action for d in processor.on_event(state, event)[1]] == ["added"]
    assert state.next_flip == event.occurred_at + 7 * 86_400_000_000
    left, = processor.on_timer(state, "t", "L", state.next_flip)
    assert (left.action, left.cause) == ("removed", "timer:10000-01-07T23:59:59.999999Z")
    assert delta_row(left, 0)["event_time"] == "10000-01-07T23:59:59.999999Z"
    row = profile_row("t", "L", state, 0)
    assert row["clock"] == "10000-01-07T23:59:59.999999Z"
    assert state_from_row(row).clock == state.clock
