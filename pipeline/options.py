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
        group.add_argument("--subscription", help="projects/P/subscriptions/S to read")
        group.add_argument("--topic", help="projects/P/topics/T: create a subscription on it")
        group.add_argument("--deltas_topic",
                           help="projects/P/topics/T: publish every new delta there after "
                                "its commit (at least once; sqlite and postgresql sinks)")
        group.add_argument("--control_subscription",
                           help="streaming: projects/P/subscriptions/S of control messages "
                                "(sweeps); default: one the launcher creates beside the "
                                "events subscription, on the topic <events topic>-control")
        group.add_argument("--drain_timeout_seconds", type=float, default=300.0,
                           help="streaming: how long SIGTERM/Ctrl-C waits for the job to "
                                "drain before it cancels it")
        group.add_argument("--definitions_refresh_seconds", type=float, default=60.0,
                           help="streaming: how often the definition file is re-read")
        group.add_argument("--pubsub_reader", default="auto", choices=("auto", "native", "pull"),
                           help="streaming: the runner's own Pub/Sub source (native: "
                                "DirectRunner, Dataflow) or the portable pull reader "
                                "(pull: Prism, Flink, ...); auto picks by runner")
        group.add_argument("--fix", action="store_true",
                           help="reconcile: write the corrective deltas")
        group.add_argument("--report_dir", help="reconcile: where the report files go "
                                                "(default: a new temporary folder)")
        group.add_argument("--exactly_once", default="auto", choices=("auto", "yes", "no"),
                           help="stream on Flink: write a row only once a checkpoint holds "
                                "it, so a restart after a failure writes no other history "
                                "(rows wait up to one checkpoint interval; auto: yes on "
                                "Flink; no: rows at once, at least once)")
        group.add_argument("--resume_from_sink", default="auto", choices=("auto", "yes", "no"),
                           help="start a lead from its stored profile when its state is "
                                "empty (auto: yes for stream, no for backfill)")


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


def require(options, *names):
    for name in names:
        if not getattr(options, name):
            raise UsageError(f"--{name} is required")
