"""The sample backfill on Apache Flink writes the same sink as on the DirectRunner.

Flink runs embedded in Beam's Flink job server (`--flink_master=[local]`) with LOOPBACK
workers, i.e. the Python code runs in the `python -m pipeline` subprocess itself and its
SQLite writer can reach the test's files. The job server comes from the
`flink_job_server` fixture (tests/conftest.py).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

from schemas import tables as T
from tools import parts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable

# Columns a run stamps with its own wall-clock time; everything else must match.
IGNORED = {"processed_at", "received_at", "updated_at"}


def backfill(db, *runner_args):
    started = time.monotonic()
    done = subprocess.run(
        [PYTHON, "-m", "pipeline", "backfill", "--events", "sample/events/*",
         "--lists", "sample/lists.json", "--sink", f"sqlite:///{db}", *runner_args],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    assert done.returncode == 0, f"{runner_args[0]}: exit {done.returncode}\n" \
                                 f"{done.stdout}\n{done.stderr[-4000:]}"
    return done, seconds


def counts(stdout):
    """The summary's count lines (records read .. deltas this run), without timings/paths."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("records read:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("deltas this run:"))
    return lines[start:end + 1]


def table(db, name, columns=None):
    columns = columns or [c for c in T.column_names(name) if c not in IGNORED]
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute(f"SELECT {', '.join(columns)} FROM {name}").fetchall()
    finally:
        connection.close()
    return sorted(rows, key=repr)


def test_flink_backfill_matches_direct_runner(flink_job_server, tmp_path):
    flink_db, direct_db = tmp_path / "flink.db", tmp_path / "direct.db"
    flink, flink_seconds = backfill(
        flink_db, *parts.runner_args("FlinkRunner", flink_jar=flink_job_server))
    direct, direct_seconds = backfill(direct_db, *parts.runner_args("DirectRunner"))
    print(f"\nFlinkRunner (job server {flink_job_server}): {flink_seconds:.1f}s; "
          f"DirectRunner: {direct_seconds:.1f}s")

    assert "accounted:    yes" in flink.stdout, flink.stdout
    # "accounted" also holds when no counter came back at all (0 = 0 + 0 + 0), so the
    # counts themselves must be the DirectRunner's.
    assert counts(flink.stdout) == counts(direct.stdout)
    assert int(counts(flink.stdout)[0].split(":")[1]) > 0

    membership = ["tenant_id", "list_id", "lead_id", "since"]
    assert table(flink_db, T.LIST_MEMBERSHIPS, membership) == \
        table(direct_db, T.LIST_MEMBERSHIPS, membership)
    for name in (T.MEMBERSHIP_DELTAS, T.DEAD_LETTERS, T.LEAD_PROFILES):
        flink_rows, direct_rows = table(flink_db, name), table(direct_db, name)
        assert flink_rows, f"no {name} rows on Flink"
        assert flink_rows == direct_rows, f"{name} differs between Flink and DirectRunner"
