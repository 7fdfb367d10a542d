"""`validate`: check a definition file and print each tenant's lists in order;
`--graph FILE.svg` also draws their dependency graph (pipeline/pictures.py)."""

from __future__ import annotations

import argparse

from pipeline.options import parse_args


def run_validate(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline validate")
    parser.add_argument("--lists", required=True, metavar="FILE")
    parser.add_argument("--graph", metavar="FILE.svg",
                        help="draw the lists' dependency graph into this SVG file")
    args = parse_args(parser, argv)
    from transforms.definitions import read_definitions
    definitions, _ = read_definitions(args.lists)
    count = sum(len(t.lists) for t in definitions.tenants.values())
    print(f"{args.lists}: OK, version {definitions.version}, "
          f"{len(definitions.tenants)} tenant(s), {count} list(s)")
    for tid in sorted(definitions.tenants):
        tenant = definitions.tenants[tid]
        print(f"tenant {tid}: {len(tenant.lists)} list(s) in dependency order")
        for i, lid in enumerate(tenant.order, 1):
            definition = tenant.lists[lid]
            refs = sorted(set(definition.references()))
            note = "static" if definition.static else (
                f"after {', '.join(refs)}" if refs else "")
            print(f"  {i:>4}. {lid}" + (f"  ({note})" if note else ""))
    if args.graph:
        _draw(definitions, args.graph)
    return 0


def _draw(definitions, path):
    from pipeline.options import UsageError, write_output
    from pipeline.pictures import NoGraphviz, dependency_dot, render_svg
    try:
        svg = render_svg(dependency_dot(definitions))
    except NoGraphviz as err:
        raise UsageError(str(err)) from None
    write_output(path, svg)
    print(f"dependency graph written to {path}")

