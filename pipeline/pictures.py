"""Pictures of the lists and the sink: the dependency graph of each tenant's lists
(Graphviz's `dot` lays it out as SVG) and the report, one self-contained HTML file with
the graph and plotly charts of what the sink holds (plotly.js inlined: nothing is
fetched when it is opened)."""

from __future__ import annotations

import collections
import html
import os
import subprocess

DOT_PROGRAM = "dot"
TOP_LISTS = 12  # lists drawn in "list sizes over time": the largest now
CHAINS = 10     # deepest cascade chains listed
CAUSES = ("event", "timer", "definition", "reconcile")


class NoGraphviz(Exception):
    """Graphviz's `dot` is not installed (the graph cannot be laid out)."""


def node_id(tenant, list_id):
    """The id of a list's node in the SVG (and so in the report's page)."""
    return f"list:{tenant}/{list_id}"


def _quoted(*lines):
    """A DOT string of `lines` (DOT's own line breaks between them)."""
    return '"' + "\\n".join(str(line).replace("\\", "\\\\").replace('"', '\\"')
                             for line in lines) + '"'


def dependency_dot(definitions, sizes=None):
    """Graphviz source of the lists' dependency graph: one cluster per tenant, an arrow
    from a list to each list whose rules reference it (the way a change cascades),
    static lists dashed; with `sizes` {(tenant, list): members} each node says its
    member count and is shaded by it."""
    sizes = sizes or {}
    largest = max(sizes.values(), default=0)
    lines = ["digraph lists {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", '
             'fontname="DejaVu Sans", fontsize=11, fillcolor="#ffffff"];',
             '  edge [color="#5b6b7f"];']
    for t_index, tid in enumerate(sorted(definitions.tenants)):
        tenant = definitions.tenants[tid]
        lines += [f"  subgraph cluster_{t_index} {{", f"    label={_quoted('tenant ' + tid)};",
                  '    style="rounded"; color="#9aa7b5"; fontname="DejaVu Sans";']
        for lid in tenant.order:
            definition = tenant.lists[lid]
            label = [lid] if definition.name == lid else [lid, definition.name]
            attributes = [f"id={_quoted(node_id(tid, lid))}"]
            if (tid, lid) in sizes:
                members = sizes[(tid, lid)]
                label.append(f"{members:,} member{'s' if members != 1 else ''}")
                shade = int(255 - 120 * members / largest) if largest else 255
                attributes.append(f'fillcolor="#{shade:02x}{shade:02x}ff"')
            if definition.static:
                attributes.append('style="rounded,filled,dashed"')
            attributes.append(f"label={_quoted(*label)}")
            lines.append(f"    {_quoted(node_id(tid, lid))} [{', '.join(attributes)}];")
        for lid in tenant.order:
            for ref in sorted(set(tenant.lists[lid].references())):
                lines.append(f"    {_quoted(node_id(tid, ref))} -> {_quoted(node_id(tid, lid))};")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(dot_source):
    """The SVG text `dot` lays out from `dot_source`."""
    program = os.environ.get("DYNLISTS_DOT", DOT_PROGRAM)
    try:
        done = subprocess.run([program, "-Tsvg"], input=dot_source.encode(),
                              capture_output=True, timeout=300, check=False)
    except FileNotFoundError:
        raise NoGraphviz("Graphviz's dot is needed to draw the dependency graph "
                         "(Debian: apt-get install graphviz)") from None
    if done.returncode != 0:
        raise RuntimeError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode()


def cascade_chains(definitions, limit=CHAINS):
    """The longest chains of list references, deepest first: [(tenant, [list ids from
    the one referenced by no other in the chain to the last])], chains of 2 or more."""
    chains = []
    for tid in sorted(definitions.tenants):
        tenant = definitions.tenants[tid]
        longest = {}
        for lid in tenant.order:  # dependency order: a list's references come first
            refs = sorted(set(tenant.lists[lid].references()))
            best = max((longest[ref] for ref in refs), key=len, default=[])
            longest[lid] = best + [lid]
        referenced = {ref for lid in tenant.lists for ref in tenant.lists[lid].references()}
        # only chains that end at a list nothing else extends
        chains += [(tid, chain) for lid, chain in longest.items()
                   if len(chain) > 1 and lid not in referenced]
    chains.sort(key=lambda item: (-len(item[1]), item[0], item[1]))
    return chains[:limit]


def cause_kind(cause):
    """'timer', 'definition', 'reconcile' (a `reconcile --fix`) or 'event', from a
    delta's cause."""
    kind = cause.split(":", 1)[0] if ":" in cause else ""
    return kind if kind in CAUSES[1:] else "event"


def _hour(text):
    """'YYYY-MM-DDTHH:00' of a stored time (every store gives RFC 3339 text)."""
    return text[:13] + ":00"


def sink_facts(store):
    """What the report shows of the sink, from one read of its deltas and dead letters."""
    from schemas import tables
    per_list = collections.defaultdict(collections.Counter)   # (tenant, list) -> hour -> net
    per_cause = collections.defaultdict(collections.Counter)  # hour -> kind -> deltas
    depth = collections.Counter()                              # (tenant, list) -> max depth
    for row in store.rows(tables.MEMBERSHIP_DELTAS):
        key, hour = (row["tenant_id"], row["list_id"]), _hour(row["event_time"])
        per_list[key][hour] += 1 if row["action"] == "added" else -1
        per_cause[hour][cause_kind(row["cause"])] += 1
        depth[key] = max(depth[key], int(row["cascade_depth"]))
    reasons = collections.Counter(
        row["reason"].split(":", 1)[0] for row in store.rows(tables.DEAD_LETTERS))
    sizes = {(tenant, lid): n for tenant, lid, n in store.list_sizes()}
    return {"per_list": per_list, "per_cause": per_cause, "depth": depth,
            "reasons": reasons, "sizes": sizes}


def _sizes_over_time(facts):
    import plotly.graph_objects as go
    figure = go.Figure()
    largest = sorted(facts["sizes"].items(), key=lambda item: (-item[1], item[0]))[:TOP_LISTS]
    last = max(facts["per_cause"], default=None)
    for (tenant, lid), _members in largest:
        changes = facts["per_list"].get((tenant, lid), {})
        hours = sorted(changes)
        running, values = 0, []
        for hour in hours:
            running += changes[hour]
            values.append(running)
        if hours and hours[-1] != last:  # the line goes on to the sink's last hour
            hours.append(last)
            values.append(running)
        figure.add_trace(go.Scatter(x=hours, y=values, mode="lines", line_shape="hv",
                                    name=f"{tenant} / {lid}"))
    figure.update_layout(title=f"List sizes over time (the {len(largest)} largest lists, "
                               "from membership_deltas by event time)",
                         xaxis_title="event time (hour)", yaxis_title="members")
    return figure


def _deltas_by_cause(facts):
    import plotly.graph_objects as go
    hours = sorted(facts["per_cause"])
    figure = go.Figure([go.Bar(x=hours, y=[facts["per_cause"][h][kind] for h in hours],
                               name=kind) for kind in CAUSES])
    figure.update_layout(barmode="stack", title="Deltas per hour, by cause",
                         xaxis_title="event time (hour)", yaxis_title="deltas")
    return figure


def _dead_letters(facts):
    import plotly.graph_objects as go
    reasons = sorted(facts["reasons"].items(), key=lambda item: (-item[1], item[0]))
    figure = go.Figure([go.Bar(x=[n for _, n in reasons], y=[r for r, _ in reasons],
                               orientation="h")])
    figure.update_layout(title="Dead letters by reason"
                               + ("" if reasons else ": none"),
                         xaxis_title="dead letters", yaxis_autorange="reversed")
    return figure


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: "DejaVu Sans", sans-serif; margin: 24px; color: #1d2733; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 32px; }}
.graph {{ overflow: auto; border: 1px solid #d5dbe2; padding: 8px; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 3px 10px; text-align: left;
border-bottom: 1px solid #e3e7ec; }}
.note {{ color: #66707c; }}
</style></head><body>
<h1>{title}</h1>
<p class="note">{subtitle}</p>
<h2>Dependency graph (arrows point the way a change cascades)</h2>
<div class="graph" id="dependency-graph">{graph}</div>
<h2>List sizes over time</h2>{sizes}
<h2>Deltas per hour by cause</h2>{causes}
<h2>Dead letters by reason</h2>{dead}
<h2>Deepest cascade chains</h2>
<table id="cascade-chains"><tr><th>tenant</th><th>lists</th><th>references</th>
<th>deepest cascade seen</th></tr>{chains}</table>
</body></html>
"""


def build_report(definitions, store, lists_path, sink_label):
    """The report's HTML text."""
    import plotly.io as pio
    facts = sink_facts(store)
    try:
        graph = render_svg(dependency_dot(definitions, facts["sizes"]))
        graph = graph[graph.find("<svg"):]  # the SVG element, without its XML prologue
    except NoGraphviz as err:
        graph = f'<p class="note">{html.escape(str(err))}</p>'
    charts = []
    for index, figure in enumerate((_sizes_over_time(facts), _deltas_by_cause(facts),
                                    _dead_letters(facts))):
        charts.append(pio.to_html(figure, full_html=False, include_plotlyjs=index == 0,
                                  div_id=f"chart-{index}", config={"displaylogo": False}))
    rows = []
    for tenant, chain in cascade_chains(definitions):
        seen = max((facts["depth"].get((tenant, lid), 0) for lid in chain), default=0)
        rows.append(f"<tr><td>{html.escape(tenant)}</td>"
                    f"<td>{' &rarr; '.join(html.escape(lid) for lid in chain)}</td>"
                    f"<td>{len(chain) - 1}</td><td>{seen}</td></tr>")
    if not rows:
        rows.append('<tr><td colspan="4" class="note">no list references another</td></tr>')
    lists = sum(len(t.lists) for t in definitions.tenants.values())
    members = sum(facts["sizes"].values())
    deltas = sum(sum(c.values()) for c in facts["per_cause"].values())
    return PAGE.format(
        title="Dynamic lists: report", graph=graph, sizes=charts[0], causes=charts[1],
        dead=charts[2], chains="\n".join(rows),
        subtitle=html.escape(f"definitions {definitions.version} from {lists_path} "
                             f"({len(definitions.tenants)} tenant(s), {lists} lists); sink "
                             f"{sink_label}: {deltas:,} deltas, {members:,} memberships now, "
                             f"{sum(facts['reasons'].values()):,} dead letters"))
