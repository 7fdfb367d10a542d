"""`./run_local.sh stream`: the stream demo end to end (the bundled Pub/Sub server, the
job on the local default runner, the sample published, a drain, the summary)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from storage import open_store
from tests.helpers import expected_memberships, sink_memberships
from tests.test_pipeline_batch import sample_events

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tools.stream_demo", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def test_the_stream_demo_streams_the_sample_and_drains(tmp_path, pubsub_emulator):
    # (the fixture builds pstest, or fails under CI=true; the demo starts its own server)
    sink = f"sqlite:///{tmp_path}/stream.db"
    done = demo("--rate", "1000", "--sink", sink)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "drained: every message pulled was evaluated, written and acknowledged" in \
        done.stderr
    assert f"sink {sink}:" in done.stdout and "largest lists:" in done.stdout
    _, definitions, events, bad, total = sample_events()
    assert f"published {total} records" in done.stdout + done.stderr
    assert sink_memberships(sink) == expected_memberships(definitions, events,
                                                          int(time.time() * 1e6))
    store = open_store(sink)
    try:
        assert store.count("dead_letters") == bad
        assert store.count("lead_profiles") == len({e.lead_key for e in events})
    finally:
        store.close()
    assert not [line for line in done.stderr.splitlines() if "error" in line.lower()]


def test_the_stream_demo_without_go_says_so_in_one_line(tmp_path):
    env = {**os.environ, "PATH": os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not os.path.exists(
            os.path.join(p, "go")))}
    done = demo("--sink", f"sqlite:///{tmp_path}/x.db", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: the Pub/Sub fake server needs Go (https://go.dev) to build it; Go is not "
        "on PATH"]
