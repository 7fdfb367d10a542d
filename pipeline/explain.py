"""`explain`: why a lead is or is not in each list, from its stored profile."""

from __future__ import annotations

import argparse

from pipeline.options import parse_args, parse_time_arg
from pipeline.prepare import usable_sink


def run_explain(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline explain")
    for name in ("lists", "sink", "tenant", "lead"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--list")
    parser.add_argument("--as_of")
    args = parse_args(parser, argv)
    from pipeline.options import UsageError
    from rules import explain_lead
    from storage import open_store, parse_sink_uri
    from storage.rows import state_from_row
    from transforms.definitions import read_definitions
    try:
        parse_sink_uri(args.sink)
    except ValueError as err:
        raise UsageError(str(err)) from None
    definitions, _ = read_definitions(args.lists)
    tenant = definitions.tenant(args.tenant)
    if tenant is None:
        raise UsageError(f"tenant {args.tenant!r} is not in {args.lists}")
    if args.list and args.list not in tenant.lists:
        raise UsageError(f"tenant {args.tenant} has no list {args.list!r}")
    usable_sink(args.sink, must_exist=True)  # reading: never creates an empty sink
    store = open_store(args.sink)
    try:
        row = store.profile(args.tenant, args.lead)
    finally:
        store.close()
    if row is None:
        raise UsageError(f"no profile of lead {args.lead!r} of tenant {args.tenant!r} "
                         f"in {args.sink}")
    state = state_from_row(row)
    now = parse_time_arg(args.as_of, "as_of") if args.as_of else (state.clock or 0)
    print(f"lead {args.lead} of tenant {args.tenant}, "
          f"{len(state.members)} stored membership(s)")
    print(explain_lead(tenant, state.profile(), now, args.list))
    return 0

