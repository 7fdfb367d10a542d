"""Flex-template entry point: `--command=backfill|stream|reconcile` plus the job's options.

Dataflow's template launcher runs this file with the template parameters as
`--name=value` arguments; the command picks what `python -m pipeline COMMAND` runs.
"""

import sys

from pipeline.cli import main


def split_command(argv):
    command, rest = "stream", []
    for arg in argv:
        if arg.startswith("--command="):
            command = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return [command] + rest


if __name__ == "__main__":
    sys.exit(main(split_command(sys.argv[1:])))
