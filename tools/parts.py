"""The real parts the tests and benchmarks run against, built on first use into .cache.

Google's pstest Pub/Sub server (tools/pstest, `go build`), Prism at the pinned Beam
version (`go install`), and Beam's Flink job server (tools/flink/build_job_server.sh),
plus the command-line options of each local runner. A missing tool raises `Missing`, a
failed build `BuildFailed`, each with a one-line message; the callers decide what that
means (a test skips or fails, a benchmark stops).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".cache", "bin")
BEAM_VERSION = "2.77.0"  # as pinned in requirements.lock
FLINK_BUILD = os.path.join(ROOT, "tools", "flink", "build_job_server.sh")
RUNNERS = ("DirectRunner", "PrismRunner", "FlinkRunner")


class Missing(Exception):
    """A tool needed to build a part is not on PATH."""


class BuildFailed(Exception):
    """Building a part failed."""


def _need_go(what):
    if not shutil.which("go"):
        raise Missing(f"{what} needs Go (https://go.dev) to build it; Go is not on PATH")


def _go(args, cwd, env=None):
    done = subprocess.run(["go", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=1800)
    if done.returncode != 0:
        raise BuildFailed(f"go {' '.join(args)} failed:\n{done.stderr[-2000:]}")


def build_pstest():
    """Path of the pstest server binary, rebuilt when its source is newer."""
    _need_go("the Pub/Sub fake server")
    target = os.path.join(BIN, "pstest")
    source = os.path.join(ROOT, "tools", "pstest")
    newest = max(os.path.getmtime(os.path.join(source, n)) for n in os.listdir(source))
    if not os.path.exists(target) or os.path.getmtime(target) < newest:
        os.makedirs(BIN, exist_ok=True)
        _go(["build", "-o", target, "."], source)
    return target


def build_prism():
    """Path of Prism at BEAM_VERSION."""
    _need_go("Prism")
    target = os.path.join(BIN, "prism")
    stamp = target + ".version"
    if not (os.path.exists(target) and os.path.exists(stamp)
            and open(stamp).read() == BEAM_VERSION):
        os.makedirs(BIN, exist_ok=True)
        _go(["install", f"github.com/apache/beam/sdks/v2/go/cmd/prism@v{BEAM_VERSION}"],
            ROOT, {"GOBIN": BIN})
        with open(stamp, "w") as handle:
            handle.write(BEAM_VERSION)
    return target


def build_flink_job_server():
    """Path of the Flink job server's launcher jar (minutes when cold)."""
    missing = [tool for tool in ("java", "jar", "mvn") if not shutil.which(tool)]
    if missing:
        raise Missing(f"the Flink job server needs Java 17 and Maven to build it; "
                      f"{', '.join(missing)} not on PATH")
    done = subprocess.run(["bash", FLINK_BUILD], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        raise BuildFailed(f"{FLINK_BUILD} failed:\n{done.stderr[-2000:]}")
    launcher = done.stdout.strip().splitlines()[-1]
    if not os.path.isfile(launcher):
        raise BuildFailed(f"{FLINK_BUILD} named no jar: {done.stdout[-500:]}")
    return launcher


def start_pstest():
    """(process, address) of a pstest server on a loopback port, in its own group."""
    process = subprocess.Popen([build_pstest(), "-host", "127.0.0.1", "-port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    line = process.stdout.readline().strip()
    if not line.startswith("PSTEST_ADDR="):
        process.kill()
        raise BuildFailed(f"pstest did not start: {line!r} {process.stderr.read()[-500:]}")
    threading.Thread(target=process.stdout.read, daemon=True).start()
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process, line.split("=", 1)[1]


def stop_group(process, sig=signal.SIGKILL):
    """Stop a process started in its own group, with everything it started."""
    if process is not None and process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass


def runner_args(runner, prism=None, flink_jar=None):
    """Command-line options of a local runner; Prism and Flink need their part's path."""
    if runner == "DirectRunner":
        return ["--runner=DirectRunner"]
    if runner == "PrismRunner":
        return ["--runner=PrismRunner", f"--prism_location={prism}",
                "--environment_type=LOOPBACK"]
    if runner == "FlinkRunner":
        # a streaming stage's output waits for its bundle to close: Flink's 1 s default
        # is most of the latency at low rates
        return ["--runner=FlinkRunner", "--flink_master=[local]", "--parallelism=2",
                "--max_bundle_time_mills=100", "--environment_type=LOOPBACK",
                f"--flink_job_server_jar={flink_jar}"]
    raise ValueError(f"unknown runner {runner!r}; one of {', '.join(RUNNERS)}")
