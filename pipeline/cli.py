"""The command line (SPEC section 6): `python -m pipeline COMMAND ...` runs
pipeline/<module>.run_<command> (COMMAND_MODULES); the commands share pipeline/options.py
(arguments), pipeline/prepare.py (sink and topic before a job) and pipeline/summary.py.

Each command checks its arguments before doing anything and reports a problem as one
line on stderr (exit status 2 for usage, 1 for a bad definition file or a failed run);
no traceback reaches the user for bad input.
"""

from __future__ import annotations

import importlib
import os
import sys

from rules import DefinitionError

# command -> the module of pipeline/ whose run_<command>(argv) runs it
COMMAND_MODULES = {"backfill": "backfill", "stream": "stream", "explain": "explain",
                   "validate": "validate", "publish": "stream", "sweep": "stream",
                   "reconcile": "reconcile", "report": "report"}
COMMANDS = tuple(COMMAND_MODULES)
USAGE = """usage: python -m pipeline COMMAND [options]

commands:
  backfill --events GLOB --lists FILE --sink URI [--as_of TS] [Beam options]
  stream   --subscription projects/P/subscriptions/S --lists FILE --sink URI [Beam options]
           (or --topic projects/P/topics/T to read through a subscription of its own;
           sweeps from --control_subscription, default S-control; Ctrl-C drains)
  explain  --lists FILE --sink URI --tenant T --lead L [--list X] [--as_of TS]
  validate --lists FILE [--graph FILE.svg]
  publish  --events GLOB --topic projects/P/topics/T [--rate N]
  sweep    --lists FILE --sink URI --control_topic projects/P/topics/T
  reconcile --lists FILE --sink URI [--fix] [--as_of TS] [--report_dir DIR] [Beam options]
  report   --lists FILE --sink URI --out FILE.html

COMMAND --help: its options; COMMAND --help-beam: Beam's too
"""


def _error(message, status=2):
    print(f"error: {message}", file=sys.stderr)
    return status


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _error(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
    from pipeline.options import HelpShown, UsageError
    try:
        module = importlib.import_module(f"pipeline.{COMMAND_MODULES[command]}")
        return getattr(module, f"run_{command}")(rest)
    except UsageError as err:
        return _error(str(err))
    except DefinitionError as err:
        for line in err.errors:
            print(f"error: {line}", file=sys.stderr)
        return 1
    except HelpShown:
        return 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout must stay usable
        return 0
    except Exception as err:  # noqa: BLE001 - only a missing credential is turned into a line
        if not _no_credentials(err):
            raise
        return _error("no Google Cloud credentials (Pub/Sub, BigQuery, gs:// need them): "
                      "run `gcloud auth application-default login`, or point "
                      "PUBSUB_EMULATOR_HOST at a Pub/Sub emulator", 1)


def _no_credentials(err):
    try:
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:
        return False
    return isinstance(err, DefaultCredentialsError)
