"""The pictures: `validate --graph` and `report`, the report opened in headless Chromium
(Debian's package; the test skips without it, fails under CI=true) with its DOM checked
and a screenshot kept in test-artifacts/."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from pipeline.pictures import cascade_chains, cause_kind, dependency_dot
from rules import parse_definitions
from tests.conftest import IN_CI
from tests.helpers import table_counts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_LISTS = os.path.join(ROOT, "sample", "lists.json")
ARTIFACTS = os.path.join(ROOT, "test-artifacts")


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)


def _need(program, package):
    found = shutil.which(program)
    if found:
        return found
    message = f"{program} is not installed (Debian: apt-get install {package})"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: this test must run)")
    pytest.skip(message)


def _sample_ids():
    with open(SAMPLE_LISTS) as handle:
        doc = json.load(handle)
    return [(item["tenant_id"], item["list_id"]) for item in doc["lists"]]


def _backfill(sink):
    done = _cli("backfill", "--events", os.path.join(ROOT, "sample", "events", "*"),
                "--lists", SAMPLE_LISTS, "--sink", sink)
    assert done.returncode == 0, done.stderr[-2000:]
    return sink


@pytest.fixture(scope="module")
def sample_sink(tmp_path_factory):
    """The bundled sample, backfilled into a fresh SQLite file."""
    return _backfill(f"sqlite:///{tmp_path_factory.mktemp('report') / 'sample.db'}")


CHAIN_DOC = {"lists": [
    {"tenant_id": "t", "list_id": "base", "static": True},
    {"tenant_id": "t", "list_id": "a", "rules": {"list": "base"}},
    {"tenant_id": "t", "list_id": "b", "rules": {"all": [{"list": "a"}, {"tag": "x"}]}},
    {"tenant_id": "t", "list_id": "c", "rules": {"any": [{"list": "b"}, {"list": "base"}]}},
    {"tenant_id": "t", "list_id": "side", "rules": {"not": {"list": "a"}}},
    {"tenant_id": "u", "list_id": "alone", "rules": {"tag": "y"}},
]}


def test_cascade_chains_are_the_longest_reference_paths():
    chains = cascade_chains(parse_definitions(CHAIN_DOC))
    assert chains == [("t", ["base", "a", "b", "c"]), ("t", ["base", "a", "side"])]


def test_dot_names_every_list_and_each_reference_once():
    definitions = parse_definitions(CHAIN_DOC)
    source = dependency_dot(definitions, {("t", "a"): 3})
    for tid, tenant in definitions.tenants.items():
        for lid in tenant.lists:
            assert f'"list:{tid}/{lid}" [' in source
    assert source.count("->") == 5  # base->a, a->b, b->c, base->c, a->side
    assert "3 members" in source and "dashed" in source


def test_cause_kinds():
    assert [cause_kind(c) for c in ("e-1", "timer:2026-01-01T00:00:00Z",
                                    "definition:v2", "reconcile:20261203T000000Z-ab12cd",
                                    "weird:x")] == \
        ["event", "timer", "definition", "reconcile", "event"]


def test_validate_draws_the_graph(tmp_path):
    _need("dot", "graphviz")
    out = tmp_path / "lists.svg"
    done = _cli("validate", "--lists", SAMPLE_LISTS, "--graph", str(out))
    assert done.returncode == 0, done.stderr
    svg = html.unescape(out.read_text())  # dot writes "-" as &#45;
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for tid, lid in _sample_ids():
        assert f'id="list:{tid}/{lid}"' in svg


def test_validate_graph_without_graphviz_is_one_line(tmp_path):
    env = dict(os.environ, DYNLISTS_DOT=str(tmp_path / "no-dot-here"))
    done = _cli("validate", "--lists", SAMPLE_LISTS, "--graph", str(tmp_path / "g.svg"),
                env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: Graphviz's dot is needed to draw the dependency graph "
        "(Debian: apt-get install graphviz)"]


def test_report_errors_are_one_line(tmp_path):
    done = _cli("report", "--lists", SAMPLE_LISTS, "--sink",
                f"sqlite:///{tmp_path}/missing.db", "--out", str(tmp_path / "r.html"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "does not exist" in done.stderr
    done = _cli("report", "--lists", SAMPLE_LISTS, "--sink", "bigquery://p.d",
                "--out", str(tmp_path / "r.html"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def _sizes(sink):
    from storage import open_store
    store = open_store(sink)
    try:
        return {(t, lid): n for t, lid, n in store.list_sizes()}
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "jsonl", "postgresql"])
def test_sizes_over_time_end_at_the_memberships(kind, sample_sink, tmp_path, request):
    """In every sink the report reads, the picture of each list, summed from its
    deltas, ends at the list's members in list_memberships (and the sample does move
    lists both ways); the report command reads it."""
    from pipeline.pictures import sink_facts
    from storage import open_store
    if kind == "jsonl":
        sample_sink = _backfill(f"jsonl:///{tmp_path}/sink")
    elif kind == "postgresql":
        sample_sink = _backfill(request.getfixturevalue("postgres_sink"))
    store = open_store(sample_sink)
    try:
        facts = sink_facts(store)
    finally:
        store.close()
    sizes = _sizes(sample_sink)
    assert sizes and table_counts(sample_sink)["membership_deltas"] > sum(sizes.values())
    for key in set(sizes) | set(facts["per_list"]):
        assert sum(facts["per_list"][key].values()) == sizes.get(key, 0), key
    by_cause = sum(sum(c.values()) for c in facts["per_cause"].values())
    assert by_cause == table_counts(sample_sink)["membership_deltas"]
    done = _cli("report", "--lists", SAMPLE_LISTS, "--sink", sample_sink, "--out",
                str(tmp_path / "report.html"))
    assert done.returncode == 0, done.stderr
    assert f"{by_cause:,} deltas, {sum(sizes.values()):,} memberships now" in \
        (tmp_path / "report.html").read_text()


def test_report_renders_in_chromium(sample_sink, tmp_path):
    _need("dot", "graphviz")
    chromium = _need("chromium", "chromium")
    out = tmp_path / "report.html"
    done = _cli("report", "--lists", SAMPLE_LISTS, "--sink", sample_sink, "--out", str(out))
    assert done.returncode == 0, done.stderr
    written = out.read_text()
    # self-contained: every script inline, and outside the scripts no reference to
    # anything on a network (script, style, image or font)
    assert not [tag for tag in re.findall(r"<script[^>]*>", written) if "src=" in tag]
    markup = re.sub(r"<script[^>]*>.*?</script>", "", written, flags=re.S)
    assert not re.search(r"""(src|href)=["']?(https?:)?//|<link|@import|url\(""", markup)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--virtual-time-budget=15000", "--window-size=1400,3200"]
    profile = tmp_path / "chromium-profile"
    dom = subprocess.run([chromium, *flags, f"--user-data-dir={profile}", "--dump-dom",
                          out.as_uri()], capture_output=True, text=True, timeout=300)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    for tid, lid in _sample_ids():  # every list is a node of the drawn graph
        assert f'id="list:{tid}/{lid}"' in page, (tid, lid)
    for index in range(3):  # each chart was drawn by plotly.js in the page
        chart = re.search(rf'<div id="chart-{index}"[^>]*class="[^"]*js-plotly-plot', page)
        assert chart, f"chart {index} not drawn"
    drawn = page.count('class="main-svg"')
    assert drawn >= 6, f"{drawn} plot surfaces"
    # each node says its list's member count, as the sink holds it
    for (tid, lid), members in _sizes(sample_sink).items():
        node = re.search(rf'<g id="list:{re.escape(tid)}/{re.escape(lid)}".*?</g>', page,
                         re.S)
        assert f"{members:,} member" in node.group(0), (tid, lid, members)
    assert "<tr><td>" in page.split('id="cascade-chains"')[1]
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "report.png")
    if os.path.exists(shot):
        os.remove(shot)
    done = subprocess.run([chromium, *flags, f"--user-data-dir={profile}",
                           f"--screenshot={shot}", out.as_uri()],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and os.path.getsize(shot) > 20_000, done.stderr[-2000:]
    with open(shot, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")
