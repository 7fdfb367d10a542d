"""The job's options, and early checks that turn bad arguments into one sentence.

Every Beam option passes through untouched (runner, project, region, workers, ...);
an argument that neither this project nor Beam knows is an error, not a silent no-op.
"""

from __future__ import annotations

import difflib

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser


class UsageError(ValueError):
    """A command-line problem, reported as one line and exit status 2."""


class DynListsOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("dynamic lists")
        group.add_argument("--events", help="glob of event files (.jsonl, .jsonl.gz, .avro)")
        group.add_argument("--lists", help="list definition file (local path or gs://)")
        group.add_argument("--sink", help="sqlite:///file.db, jsonl:///dir, "
                                          "postgresql://USER@HOST:PORT/DB[?read_host=H] "
                                          "or bigquery://PROJECT.DATASET")
        group.add_argument("--as_of", help="RFC 3339 evaluation time for time windows at "
                                           "the end of a backfill (default: latest event)")
        group.add_argument("--subscription", help="the subscription to read")
        group.add_argument("--topic", help="instead of --subscription: read through a "
                                           "subscription of its own on this topic")
        group.add_argument("--deltas_topic",
                           help="projects/P/topics/T: publish each new delta there once "
                                "committed (sqlite and postgresql sinks)")
        group.add_argument("--control_subscription",
                           help="where sweeps come from (default: one on the topic "
                                "<events topic>-control, created)")
        group.add_argument("--drain_timeout_seconds", type=float, default=300.0,
                           help="how long Ctrl-C/SIGTERM waits for a drain before "
                                "cancelling")
        group.add_argument("--definitions_refresh_seconds", type=float, default=60.0,
                           help="how often the definition file is read again")
        group.add_argument("--pubsub_reader", default="auto", choices=("auto", "native", "pull"),
                           help="the runner's own Pub/Sub source (DirectRunner, "
                                "Dataflow) or the pull reader (Prism, Flink)")
        group.add_argument("--fix", action="store_true",
                           help="reconcile: write the corrective deltas")
        group.add_argument("--report_dir", help="reconcile: where the report files go "
                                                "(default: a new temporary folder)")
        group.add_argument("--exactly_once", default="auto", choices=("auto", "yes", "no"),
                           help="Flink: write rows once a checkpoint holds them (auto: "
                                "yes on Flink; no: at once, at least once)")
        group.add_argument("--resume_from_sink", default="auto", choices=("auto", "yes", "no"),
                           help="a lead new to the job starts from its stored profile "
                                "(auto: yes for stream, no for backfill)")


class FlinkBundleOptions(PipelineOptions):
    """Options of Beam's Flink runner that its Python options lack; the job server reads
    them from the pipeline options by name (max_bundle_size -> maxBundleSize)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("Flink bundles")
        group.add_argument("--max_bundle_size", type=int, default=None,
                           help="FlinkRunner: most elements in a bundle (Flink's default "
                                "1000)")
        group.add_argument("--max_bundle_time_mills", type=int, default=None,
                           help="FlinkRunner: longest a bundle stays open, in ms (Flink's "
                                "default 1000); a streaming stage's output waits for it")
        group.add_argument("--checkpointing_interval", type=int, default=None,
                           help="FlinkRunner: ms between checkpoints (default: none)")


def _known_parser():
    # Runner modules register their own option classes when imported.
    import apache_beam.runners.portability.flink_runner  # noqa: F401
    import apache_beam.runners.portability.prism_runner  # noqa: F401
    parser = _BeamArgumentParser(allow_abbrev=False)
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - how Beam collects its options
    return parser


def check_arguments(argv):
    """Raise UsageError naming the first argument no option class knows."""
    parser = _known_parser()
    _, unknown = parser.parse_known_args(argv)
    if not unknown:
        return
    arg = unknown[0]
    known = [opt for action in parser._actions for opt in action.option_strings]  # noqa: SLF001
    hint = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1)
    raise UsageError(f"unknown argument {arg}" + (f" (did you mean {hint[0]}?)" if hint else ""))


# The options each job command shows in its --help (all of Beam's: --help-beam).
COMMAND_OPTIONS = {
    "backfill": (("events", "lists", "sink"),
                 ("as_of", "deltas_topic", "resume_from_sink")),
    "stream": (("subscription", "lists", "sink"),
               ("topic", "control_subscription", "deltas_topic", "exactly_once",
                "pubsub_reader", "resume_from_sink", "definitions_refresh_seconds",
                "drain_timeout_seconds")),
    "reconcile": (("lists", "sink"), ("fix", "as_of", "report_dir", "deltas_topic")),
}
METAVARS = {"events": "GLOB", "lists": "FILE", "sink": "URI", "as_of": "TS",
            "subscription": "projects/P/subscriptions/S", "topic": "projects/P/topics/T",
            "deltas_topic": "T", "control_subscription": "S", "report_dir": "DIR",
            "definitions_refresh_seconds": "SECONDS", "drain_timeout_seconds": "SECONDS"}
RUNNER_HELP = """runner (Beam's options; all of them: python -m pipeline {command} --help-beam):
  --runner R            DirectRunner (default), PrismRunner, FlinkRunner, DataflowRunner
  --direct_num_workers N --direct_running_mode multi_processing
                        the DirectRunner on N processes
  --flink_master HOST:PORT --parallelism N --environment_type LOOPBACK|EXTERNAL|DOCKER
                        FlinkRunner ([local]: an embedded cluster)
  --project P --region R --temp_location gs://...
                        DataflowRunner
"""


def command_help(command):
    """The short --help of a job command: its own options, then the runner's main ones."""
    import argparse
    required, optional = COMMAND_OPTIONS[command]
    helps = {action.dest: action for action in _known_parser()._actions}  # noqa: SLF001
    parser = argparse.ArgumentParser(
        prog=f"python -m pipeline {command}", add_help=False, usage=argparse.SUPPRESS,
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=34,
                                                            width=100))
    for title, names in (("required", required), ("options", optional)):
        group = parser.add_argument_group(title)
        for name in names:
            action = helps[name]
            if action.nargs == 0:  # a flag
                group.add_argument(f"--{name}", action="store_true", help=action.help)
                continue
            shown = "|".join(action.choices) if action.choices else METAVARS.get(
                name, name.upper())
            group.add_argument(f"--{name}", metavar=shown, help=action.help)
    first = f"usage: python -m pipeline {command} " + " ".join(
        f"--{name} {METAVARS.get(name, name.upper())}" for name in required) + " [options]\n"
    body = parser.format_help().strip("\n")
    return f"{first}\n{body}\n\n{RUNNER_HELP.format(command=command)}"


def beam_help(command):
    """Every option, Beam's included (the long --help)."""
    parser = _known_parser()
    parser.prog = f"python -m pipeline {command}"
    return parser.format_help()


def require(options, *names):
    for name in names:
        if not getattr(options, name):
            raise UsageError(f"--{name} is required")


class HelpShown(Exception):
    """--help or --help-beam was printed: the command ends there (exit 0)."""


def parse_args(parser, argv):
    """argparse's result; its errors are UsageError (one line), not its own exit."""
    def fail(message):
        raise UsageError(message)
    parser.error = fail
    return parser.parse_args(argv)


def job_options(argv, *required, command=None):
    """(PipelineOptions, DynListsOptions) of a job command's arguments; its --help
    (HelpShown), every argument known, the `required` ones given, the sink URI valid."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from storage import parse_sink_uri
    if "--help-beam" in argv:
        print(beam_help(command), end="")
        raise HelpShown
    if "-h" in argv or "--help" in argv:
        print(command_help(command), end="")
        raise HelpShown
    check_arguments(argv)
    options = PipelineOptions(argv)
    ours = options.view_as(DynListsOptions)
    require(ours, *required)
    try:
        parse_sink_uri(ours.sink)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return options, ours


def parse_time_arg(text, name):
    """The µs of an RFC 3339 option value, or UsageError."""
    from schemas.values import parse_timestamp
    try:
        return parse_timestamp(text)
    except ValueError:
        raise UsageError(f"--{name} {text!r} is not an RFC 3339 timestamp "
                         "(e.g. 2026-06-01T00:00:00Z)") from None


def write_output(path, text):
    """Write the file an option names (a report, a graph), or UsageError in one line."""
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror}") from None
