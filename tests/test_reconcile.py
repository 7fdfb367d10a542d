"""reconcile finds every planted difference between the sink and the definitions, and
--fix repairs them with corrective deltas."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from tests.helpers import SAMPLE

ROOT = os.path.dirname(SAMPLE)
LISTS = os.path.join(SAMPLE, "lists.json")


def cli(*args):
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    return done


def report(stdout):
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[2].isdigit():
            rows[(parts[0], parts[1])] = tuple(int(x) for x in parts[2:])
    return rows


def test_planted_differences_are_found_and_fixed(tmp_path):
    db_path = tmp_path / "sink.db"
    sink = f"sqlite:///{db_path}"
    assert cli("backfill", "--events", "sample/events/*", "--lists", LISTS,
               "--sink", sink).returncode == 0
    clean = cli("reconcile", "--lists", LISTS, "--sink", sink)
    assert clean.returncode == 0 and "agrees" in clean.stdout
    db = sqlite3.connect(db_path)
    before = set(db.execute("SELECT tenant_id, list_id, lead_id FROM list_memberships"))
    # plant: two memberships lost, one list gained by a lead that does not belong, one by
    # a lead of the other tenant's list id space
    lost = sorted(before)[:2]
    with db:
        for key in lost:
            db.execute("DELETE FROM list_memberships WHERE tenant_id = ? AND list_id = ? "
                       "AND lead_id = ?", key)
        db.execute("INSERT INTO list_memberships VALUES ('acme', 'ne-gala-table-1', "
                   "'lead-0002', '2026-05-01T00:00:00.000000Z', 1)")
        db.execute("INSERT INTO list_memberships VALUES ('globex', 'hot-east', "
                   "'lead-0003', '2026-05-01T00:00:00.000000Z', 1)")
    found = cli("reconcile", "--lists", LISTS, "--sink", sink)
    assert found.returncode == 1
    rows = report(found.stdout)
    assert sum(r[2] for r in rows.values()) == 2 and sum(r[3] for r in rows.values()) == 2
    for tenant, lid, _ in lost:
        assert rows[(tenant, lid)][2] >= 1
    assert rows[("acme", "ne-gala-table-1")][3] == 1
    assert rows[("globex", "hot-east")][3] == 1
    assert "2 missing and 2 extra memberships" in found.stdout
    fixed = cli("reconcile", "--lists", LISTS, "--sink", sink, "--fix")
    assert fixed.returncode == 1 and "fixed with cause reconcile:" in fixed.stdout
    assert set(db.execute("SELECT tenant_id, list_id, lead_id FROM list_memberships")) == before
    causes = {r[0].split(":")[0] for r in db.execute(
        "SELECT cause FROM membership_deltas WHERE cause LIKE 'reconcile:%'")}
    assert causes == {"reconcile"}
    again = cli("reconcile", "--lists", LISTS, "--sink", sink)
    assert again.returncode == 0, again.stdout
    # a membership of a lead the sink has no profile of: reported, and --fix says that
    # it leaves it rather than claiming a repair
    with db:
        db.execute("INSERT INTO list_memberships VALUES ('acme', 'ne-gala-table-1', "
                   "'ghost', '2026-05-01T00:00:00.000000Z', 1)")
    ghost = cli("reconcile", "--lists", LISTS, "--sink", sink, "--fix")
    assert ghost.returncode == 1
    assert "0 missing and 1 extra memberships" in ghost.stdout
    assert "1 of the extra memberships belong to leads with no stored profile" in ghost.stdout
    assert ("acme", "ne-gala-table-1", "ghost") in set(
        db.execute("SELECT tenant_id, list_id, lead_id FROM list_memberships"))
