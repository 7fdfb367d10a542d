"""`./run_local.sh stream`: the streaming job on the bundled sample, on this machine.

    python -m tools.stream_demo [--rate N] [--sink URI] [job options ...]

Starts the bundled Pub/Sub server (tools/pstest, built with Go on first use) on a
loopback port, creates a topic, starts `python -m pipeline stream --topic ...` on the
local default runner (job options such as --runner pass through), publishes the
sample's records at `--rate` events/s with a progress bar, shows the deltas arriving in
the sink, then stops the job with Ctrl-C's drain and prints its summary. Everything it
started is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from pipeline import pubsub
from tools import parts
from transforms.progress import redraw

ROOT = parts.ROOT
TOPIC = "projects/dynlists-demo/topics/events"
START_TIMEOUT_S = 180
QUIET_S = 3.0     # no new row for this long after publishing: the job has caught up
CATCH_UP_S = 180  # at most this long


def _count(sink):
    """(delta rows, lead profiles, dead letters) in the sink so far; zeros before its
    tables exist."""
    from storage import open_store
    try:
        store = open_store(sink)
    except Exception:  # noqa: BLE001 - not created yet
        return 0, 0, 0
    try:
        return (store.count("membership_deltas"), store.count("lead_profiles"),
                store.count("dead_letters"))
    except Exception:  # noqa: BLE001 - no tables yet
        return 0, 0, 0
    finally:
        store.close()


def _show(line, tty):
    if tty:
        redraw(line)


def _wait_for_start(job, log_path):
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if job.poll() is not None:
            return False
        with open(log_path, errors="replace") as handle:
            if "streaming job running" in handle.read():
                return True
        time.sleep(0.2)
    return False


def _follow(sink, tty):
    """Show the deltas arriving until the sink has been quiet for QUIET_S seconds."""
    last, quiet_since, deadline = None, time.monotonic(), time.monotonic() + CATCH_UP_S
    while time.monotonic() < deadline:
        counts = _count(sink)
        _show(f"in the sink: {counts[0]:,} deltas, {counts[1]:,} leads, {counts[2]:,} dead "
              "letters", tty)
        if counts != last:
            last, quiet_since = counts, time.monotonic()
        elif counts[0] and time.monotonic() - quiet_since >= QUIET_S:
            break
        time.sleep(0.25)
    if tty:
        print(file=sys.stderr)
    return last or (0, 0, 0)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="./run_local.sh stream",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300, help="events/s published")
    parser.add_argument("--sink", default=f"sqlite:///{os.path.join(ROOT, 'out', 'stream.db')}")
    args, job_args = parser.parse_known_args(argv)
    tty = sys.stderr.isatty()
    try:
        server, address = parts.start_pstest()
    except (parts.Missing, parts.BuildFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    job = None
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": address}
    os.environ["PUBSUB_EMULATOR_HOST"] = address
    try:
        from storage import parse_sink_uri
        pubsub.ensure_topic(TOPIC)
        if parse_sink_uri(args.sink).scheme == "sqlite":
            path = parse_sink_uri(args.sink).location
            os.makedirs(os.path.dirname(path), exist_ok=True)
            for suffix in ("", "-wal", "-shm"):  # each run starts from an empty sink
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
        log_path = os.path.join(ROOT, "out", "stream.log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        print(f"Pub/Sub server (pstest) at {address}; the job's log: {log_path}",
              file=sys.stderr)
        with open(log_path, "w") as log:
            job = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "stream", "--topic", TOPIC,
                 "--lists", os.path.join(ROOT, "sample", "lists.json"), "--sink", args.sink,
                 *job_args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
                text=True, start_new_session=True)
        if not _wait_for_start(job, log_path):
            with open(log_path, errors="replace") as handle:
                tail = handle.read().strip().splitlines()[-5:]
            print("error: the streaming job did not start:\n  " + "\n  ".join(tail),
                  file=sys.stderr)
            return 1
        print("streaming job running; publishing the sample", file=sys.stderr)
        published = subprocess.run(
            [sys.executable, "-m", "pipeline", "publish", "--events",
             os.path.join(ROOT, "sample", "events", "*"), "--topic", TOPIC,
             "--rate", f"{args.rate:g}"], cwd=ROOT, env=env)
        if published.returncode != 0:
            return published.returncode
        deltas, leads, dead = _follow(args.sink, tty)
        print(f"caught up: {deltas:,} deltas for {leads:,} leads, {dead:,} dead letters; "
              "draining the job", file=sys.stderr)
        job.send_signal(signal.SIGINT)  # the job drains: evaluated, written, acknowledged
        summary, _ = job.communicate(timeout=300)
        with open(log_path, errors="replace") as handle:  # the job's own word on its end
            lines = handle.read().splitlines()
        ends = [i for i, line in enumerate(lines) if line.startswith("draining (")]
        for line in lines[ends[-1] + 1:] if ends else lines[-3:]:
            print(line, file=sys.stderr)
        print(summary, end="")
        print(f"the sink: {args.sink}")
        return job.returncode
    except KeyboardInterrupt:
        return 130
    except pubsub.PubSubError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if job is not None:
            parts.stop_group(job, signal.SIGKILL)
        parts.stop_group(server, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
