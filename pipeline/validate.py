"""`validate`: check a definition file and print each tenant's lists in order."""

from __future__ import annotations

import argparse

from pipeline.options import parse_args


def run_validate(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline validate")
    parser.add_argument("--lists", required=True)
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
    return 0

