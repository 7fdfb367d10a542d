"""The command line as a user meets it: real subprocesses, one-line errors, no tracebacks."""

import os
import subprocess
import sys

import pytest

from tests.helpers import SAMPLE, table_counts

ROOT = os.path.dirname(SAMPLE)
LISTS = os.path.join(SAMPLE, "lists.json")


def run(*args, cwd=ROOT):
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_validate_prints_dependency_order():
    done = run("validate", "--lists", LISTS)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert "OK" in lines[0] and "3 tenant(s)" in lines[0]
    acme = [line.split(".", 1)[1].split()[0] for line in lines
            if line.startswith("  ") and "tenant" not in line][:34]
    assert acme.index("east-coast") < acme.index("east-coast-customers") < \
        acme.index("ne-gala-table-1")


def test_validate_reports_every_error_and_exits_1(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"lists": [{"tenant_id": "a", "list_id": "x", "rules": {"list": "y"}},'
                   '{"tenant_id": "a", "list_id": "y", "rules": {"list": "x"}},'
                   '{"tenant_id": "a", "list_id": "z", "rules": {"field": "s", "op": "gt",'
                   '"value": "no"}}]}')
    done = run("validate", "--lists", str(bad))
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()
    assert errors == ["error: tenant a, list z: 'gt' needs a number, got \"no\" at rules",
                      "error: tenant a, list x: cycle of list references: x -> y -> x"]


@pytest.mark.parametrize("args, message", [
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["validate"], "the following arguments are required: --lists"),
    (["validate", "--lists", "/nonexistent.json"], "cannot read /nonexistent.json"),
    (["backfill", "--lists", LISTS, "--sink", "sqlite:///tmp/x.db"], "--events is required"),
    (["backfill", "--events", "nothing/*.jsonl", "--lists", LISTS, "--sink",
      "sqlite:///tmp/x.db"], "no event files match 'nothing/*.jsonl'"),
    (["backfill", "--events", "sample/events/*", "--lists", LISTS, "--sink", "mysql://x"],
     "unsupported sink 'mysql://x'"),
    (["backfill", "--events", "sample/events/*", "--lists", LISTS, "--sink",
      "sqlite:///tmp/x.db", "--as_of", "tomorrow"], "--as_of 'tomorrow' is not an RFC 3339"),
    (["backfill", "--events", "sample/events/*", "--lists", LISTS, "--sink",
      "sqlite:///tmp/x.db", "--sinks", "x"], "unknown argument --sinks (did you mean --sink?)"),
    (["stream", "--topic", "projects/p/topics/t", "--lists", LISTS, "--sink",
      "sqlite:///tmp/x.db"], "bad topic 'projects/p/topics/t': Invalid PubSub project"),
    (["stream", "--lists", LISTS, "--sink", "sqlite:///tmp/x.db"],
     "--subscription (or --topic, to create one) is required"),
    (["publish", "--events", "sample/events/*", "--topic", "topics/t"], "bad topic"),
    (["explain", "--lists", LISTS, "--sink", "sqlite:///nonexistent/x.db", "--tenant", "acme",
      "--lead", "L", "--list", "nope"], "tenant acme has no list 'nope'"),
    (["explain", "--lists", LISTS, "--sink", "sqlite:///nonexistent/x.db", "--tenant", "acme",
      "--lead", "L"], "no sink at sqlite:///nonexistent/x.db: the SQLite file"),
    (["explain", "--lists", LISTS, "--sink", "sqlite:///tmp", "--tenant", "acme",
      "--lead", "L"], "bad sink sqlite:///tmp: /tmp is a folder, not an SQLite file"),
    (["reconcile", "--lists", LISTS, "--sink", "jsonl:///proc/zz"],
     "no sink at jsonl:///proc/zz: the folder /proc/zz does not exist"),
    (["backfill", "--events", "sample/events/*", "--lists", LISTS, "--sink",
      "jsonl:///proc/zz"], "cannot open sink jsonl:///proc/zz"),
    (["backfill", "--events", "sample/events/*", "--lists", LISTS, "--sink",
      "sqlite:///proc/zz/x.db"], "cannot open sink sqlite:///proc/zz/x.db"),
])
def test_bad_arguments_get_one_line(args, message):
    done = run(*args)
    assert done.returncode in (1, 2)
    assert done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr


def test_backfill_then_explain(tmp_path):
    db = tmp_path / "out.db"
    done = run("backfill", "--events", "sample/events/*", "--lists", LISTS,
               "--sink", f"sqlite:///{db}")
    assert done.returncode == 0, done.stderr
    assert "accounted:    yes" in done.stdout
    assert "dead letters: 8" in done.stdout
    explained = run("explain", "--lists", LISTS, "--sink", f"sqlite:///{db}",
                    "--tenant", "acme", "--lead", "lead-0001", "--list", "ne-exec-briefing")
    assert explained.returncode == 0, explained.stderr
    text = explained.stdout
    assert "list ne-exec-briefing (Executive briefing): MEMBER" in text
    assert '[yes] title matches the pattern "^(vp|chief|director)\\\\b"  (title = "VP Marketing")' \
        in text
    assert "[yes] is in the list \"ne-account-review\"" in text
    missing = run("explain", "--lists", LISTS, "--sink", f"sqlite:///{db}",
                  "--tenant", "acme", "--lead", "nobody")
    assert missing.returncode == 2 and "no profile of lead 'nobody'" in missing.stderr


def test_flink_bundle_options_reach_the_job_server():
    """Flink's bundle size and time are options of its Java job server that Beam's Python
    options lack: the command line accepts them and they travel in the pipeline options
    the job server reads (beam:option:<name>:v1), which is how Flink picks them up."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    from pipeline.options import check_arguments
    args = ["--runner=FlinkRunner", "--max_bundle_time_mills=50", "--max_bundle_size=200",
            "--checkpointing_interval=10000"]
    check_arguments(args)  # raises UsageError on an unknown argument
    encoded = JobServiceHandle.encode_pipeline_options(PipelineOptions(args).get_all_options())
    assert encoded["beam:option:max_bundle_time_mills:v1"] == "50"
    assert encoded["beam:option:max_bundle_size:v1"] == "200"
    assert encoded["beam:option:checkpointing_interval:v1"] == "10000"
    # left out, Flink keeps its own defaults: nothing is sent
    untouched = JobServiceHandle.encode_pipeline_options(
        PipelineOptions(["--runner=FlinkRunner"]).get_all_options())
    assert not {"beam:option:max_bundle_time_mills:v1", "beam:option:max_bundle_size:v1",
                "beam:option:checkpointing_interval:v1"} & set(untouched)


def test_a_stream_on_flink_checkpoints_unless_told_otherwise():
    """Flink acknowledges Pub/Sub messages only at checkpoints: without one, every
    message would come back each ack deadline for ever."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import FlinkBundleOptions
    from pipeline.stream import FLINK_CHECKPOINT_MS, flink_checkpoints

    def interval(*args):
        options = PipelineOptions(list(args))
        flink_checkpoints(options)
        return options.view_as(FlinkBundleOptions).checkpointing_interval
    assert interval("--runner=FlinkRunner") == FLINK_CHECKPOINT_MS
    assert interval("--runner=FlinkRunner", "--checkpointing_interval=2000") == 2000
    assert interval("--runner=PortableRunner", "--job_endpoint=localhost:8099") == \
        FLINK_CHECKPOINT_MS  # may be a Flink job server
    assert interval("--runner=PrismRunner") is None
    assert interval() is None


def test_a_stream_on_flink_is_exactly_once_unless_told_otherwise():
    """On Flink the sink waits for checkpoints (a replay after a failure may be another
    history), and checkpoints then come every second; elsewhere it cannot, and says so
    in one line."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import FlinkBundleOptions, UsageError
    from pipeline.stream import FLINK_STABLE_CHECKPOINT_MS, exactly_once, flink_checkpoints

    def decided(choice, *args):
        options = PipelineOptions(list(args))
        stable = exactly_once(options, choice)
        flink_checkpoints(options, stable)
        return stable, options.view_as(FlinkBundleOptions).checkpointing_interval
    assert decided("auto", "--runner=FlinkRunner") == (True, FLINK_STABLE_CHECKPOINT_MS)
    assert decided("auto", "--runner=FlinkRunner", "--checkpointing_interval=5000") == \
        (True, 5000)
    assert decided("no", "--runner=FlinkRunner")[0] is False
    assert decided("auto", "--runner=PrismRunner") == (False, None)
    assert decided("auto") == (False, None)
    with pytest.raises(UsageError, match="needs the FlinkRunner"):
        decided("yes", "--runner=PrismRunner")
    done = run("stream", "--subscription", "projects/p/subscriptions/s", "--lists", LISTS,
               "--sink", "sqlite:////tmp/never.db", "--exactly_once=yes")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "needs the FlinkRunner" in done.stderr.strip().splitlines()[-1]


def test_a_file_that_is_not_a_database_is_one_line(tmp_path):
    not_db = tmp_path / "notes.db"
    not_db.write_text("these are notes, not a database\n" * 100)
    done = run("explain", "--lists", LISTS, "--sink", f"sqlite:///{not_db}", "--tenant", "acme",
               "--lead", "L")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot open sink" in done.stderr and "not a database" in done.stderr
    assert not_db.read_text().startswith("these are notes")


def _set_user_version(path, version):
    import sqlite3
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {version}")
    db.close()


def _user_version(path):
    import sqlite3
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def _newer_file(path):
    from storage.sqlite import SqliteStore
    SqliteStore(str(path)).close()
    _set_user_version(path, 3)


def _notes_file(path):
    import sqlite3
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.commit()
    db.close()


@pytest.mark.parametrize("command", ["backfill", "explain"])
@pytest.mark.parametrize("make, reason", [
    (_newer_file, "made by a newer version of dynlists (schema 3, this one reads up to 2): "
                  "upgrade dynlists to use it"),
    (_notes_file, "not a dynlists database (it has tables dynlists does not make: notes): "
                  "name another file for the sink"),
])
def test_a_sink_file_this_version_cannot_use_is_one_line(tmp_path, command, make, reason):
    path = tmp_path / "sink.db"
    make(path)
    before = path.read_bytes()
    args = {"backfill": ["--events", "sample/events/*"],
            "explain": ["--tenant", "acme", "--lead", "lead-0001"]}[command]
    done = run(command, "--lists", LISTS, "--sink", f"sqlite://{path}", *args)
    assert done.returncode == 2
    assert done.stderr == f"error: cannot use sink sqlite://{path}: {reason}\n"
    assert path.read_bytes() == before


def test_sink_files_of_earlier_layouts_are_brought_up_to_date(tmp_path):
    """A file with the keys before deltas were keyed by lead (version 1) is rebuilt by the
    next job on it, which as a replay of the same events adds no row; a file of today's
    layout from before files carried a version is stamped by `explain`."""
    import sqlite3

    from tests.test_sqlite_store import copy_into_v1_file, primary_key
    today, old, unstamped = (tmp_path / name for name in ("today.db", "old.db", "u.db"))
    done = run("backfill", "--events", "sample/events/*", "--lists", LISTS,
               "--sink", f"sqlite://{today}")
    assert done.returncode == 0, done.stderr
    copy_into_v1_file(str(today), str(old))
    assert _user_version(old) == 0
    replay = run("backfill", "--events", "sample/events/*", "--lists", LISTS,
                 "--sink", f"sqlite://{old}")
    assert replay.returncode == 0, replay.stderr
    assert " 0 new rows in the sink" in replay.stdout
    assert _user_version(old) == 2

    def rows(path, sql):
        db = sqlite3.connect(path)
        try:
            return sorted(db.execute(sql))
        finally:
            db.close()
    for sql in ("SELECT * FROM membership_deltas", "SELECT * FROM list_memberships",
                "SELECT tenant_id, lead_id, state FROM lead_profiles"):
        assert rows(old, sql) == rows(today, sql)
    assert len(rows(old, "SELECT * FROM list_memberships")) > 500
    db = sqlite3.connect(old)
    assert primary_key(db, "membership_deltas") == ("tenant_id", "lead_id", "delta_id")
    db.close()

    unstamped.write_bytes(today.read_bytes())
    _set_user_version(unstamped, 0)
    explained = run("explain", "--lists", LISTS, "--sink", f"sqlite://{unstamped}",
                    "--tenant", "acme", "--lead", "lead-0001", "--list", "ne-exec-briefing")
    assert explained.returncode == 0, explained.stderr
    assert "list ne-exec-briefing (Executive briefing): MEMBER" in explained.stdout
    assert _user_version(unstamped) == 2


@pytest.mark.parametrize("command", ["backfill", "stream", "reconcile", "explain", "validate",
                                     "publish", "sweep", "report"])
def test_every_command_help_is_short_and_its_own(command):
    """A command's --help fits a screen and starts with its own options; the job
    commands point to --help-beam for all of Beam's."""
    done = run(command, "--help")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert 3 < len(lines) < 40, len(lines)
    assert lines[0].startswith(f"usage: python -m pipeline {command}")
    assert "--lists" in done.stdout or "--events" in done.stdout
    assert "--dataflow_service_options" not in done.stdout  # none of Beam's long list
    if command in ("backfill", "stream", "reconcile"):
        assert f"python -m pipeline {command} --help-beam" in done.stdout
        every = run(command, "--help-beam")
        assert every.returncode == 0
        assert "--dataflow_service_options" in every.stdout and "--sink" in every.stdout


def test_no_cloud_credentials_is_one_line(tmp_path):
    """Pub/Sub without an emulator needs credentials: without them, one line."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PUBSUB_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")}
    env.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
               GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "stream", "--subscription",
         "projects/test-project/subscriptions/s", "--lists", LISTS, "--sink",
         f"sqlite:///{tmp_path}/x.db"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no Google Cloud credentials") and \
        "PUBSUB_EMULATOR_HOST" in last


def test_reconcile_shows_its_progress_on_a_terminal_only(tmp_path):
    """Profiles re-evaluated of how many, and the rate; nothing off a terminal."""
    sink = f"sqlite:///{tmp_path}/a.db"
    done = run("backfill", "--events", os.path.join(SAMPLE, "events", "*"), "--lists",
               LISTS, "--sink", sink)
    assert done.returncode == 0, done.stderr[-2000:]
    profiles = table_counts(sink)["lead_profiles"]
    env = {**os.environ, "DYNLISTS_PROGRESS": "1"}
    shown = subprocess.run([sys.executable, "-m", "pipeline", "reconcile", "--lists", LISTS,
                            "--sink", sink], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    last = shown.stderr.split("\r")[-1]
    assert f"re-evaluated {profiles:,} of {profiles:,} profiles (" in last, last
    quiet = run("reconcile", "--lists", LISTS, "--sink", sink)
    assert quiet.returncode == 0 and "profiles (" not in quiet.stderr


def test_backfill_shows_its_progress_on_a_terminal_only(tmp_path):
    """Records read and the rate, redrawn on one line; nothing when stderr is not a
    terminal (DYNLISTS_PROGRESS=1 stands for one here)."""
    import glob
    files = len(glob.glob(os.path.join(SAMPLE, "events", "*")))
    args = ("backfill", "--events", os.path.join(SAMPLE, "events", "*"), "--lists", LISTS,
            "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    env = {**os.environ, "DYNLISTS_PROGRESS": "1"}
    shown = subprocess.run([sys.executable, "-m", "pipeline", *args, "--sink",
                            f"sqlite:///{tmp_path}/a.db"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    read = shown.stdout.split("records read:")[1].split()[0]
    last = shown.stderr.split("\r")[-1]
    assert f"read {int(read):,} records (" in last and f"{files} of {files} file(s) done" in last
    quiet = run(*args, "--sink", f"sqlite:///{tmp_path}/b.db")
    assert quiet.returncode == 0 and "records (" not in quiet.stderr
