"""The fuzz harness in CI: a short coverage-guided run in a subprocess (atheris), a replay
of the whole seed corpus in-process, and the crashes the long campaign found, each as
the event that caused it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rules import LeadProcessor, LeadState, parse_definitions
from schemas.events import parse_event
from storage.rows import delta_row, profile_row, state_from_row
from tests.conftest import IN_CI, require_native
from tests.fuzz.harness import run

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "fuzz")
CORPUS = os.path.join(FUZZ, "corpus")
ROOT = os.path.dirname(HERE)
SHORT_RUNS = 3000


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
         "-max_total_time=120", "-max_len=4096", "-seed=1",
         f"-artifact_prefix={tmp_path}/", str(work), CORPUS],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    crashes = [n for n in os.listdir(tmp_path) if n.startswith(("crash-", "timeout-",
                                                                "oom-"))]
    assert done.returncode == 0 and not crashes, (crashes, done.stderr[-3000:])
    assert "Done " in done.stderr, done.stderr[-3000:]


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
