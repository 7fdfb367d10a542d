"""The sample backfill on Apache Flink writes the same sink as on the DirectRunner.

Flink runs embedded in Beam's Flink job server (`--flink_master=[local]`) with LOOPBACK
workers, i.e. the Python code runs in the `python -m pipeline` subprocess itself and its
SQLite writer can reach the test's files. The job server is built by
tools/flink/build_job_server.sh into .cache/flink (ignored by git) on first use. Without
Java or Maven the test skips with one line; under CI=true it must run, so a missing tool
fails it instead.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

from schemas import tables as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "tools", "flink", "build_job_server.sh")
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
PYTHON = VENV_PYTHON if os.path.exists(VENV_PYTHON) else sys.executable
IN_CI = os.environ.get("CI", "").lower() == "true"

# Columns a run stamps with its own wall-clock time; everything else must match.
IGNORED = {"processed_at", "received_at", "updated_at"}


@pytest.fixture(scope="session")
def flink_job_server():
    """Path of the job server's launcher jar (built on first use, minutes when cold)."""
    missing = [tool for tool in ("java", "jar", "mvn") if not shutil.which(tool)]
    if missing:
        message = (f"the Flink job server needs Java 17 and Maven to build it; "
                   f"{', '.join(missing)} not on PATH")
        if IN_CI:
            pytest.fail(message + " (CI=true: this test must run)")
        pytest.skip(message)
    done = subprocess.run(["bash", BUILD], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"{BUILD} failed:\n{done.stderr[-2000:]}")
    launcher = done.stdout.strip().splitlines()[-1]
    assert os.path.isfile(launcher), done.stdout
    return launcher


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
        flink_db, "--runner=FlinkRunner", "--flink_master=[local]", "--parallelism=2",
        "--environment_type=LOOPBACK", f"--flink_job_server_jar={flink_job_server}")
    direct, direct_seconds = backfill(direct_db, "--runner=DirectRunner")
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
