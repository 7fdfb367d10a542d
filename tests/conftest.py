"""Fixtures that build and start real parts: Google's pstest Pub/Sub server and Prism.

Both are built from the Go module proxy into .cache/bin (ignored by git) on first use.
Without Go the tests that need them skip with one line; under CI=true they must run, so
a missing tool fails them instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".cache", "bin")
BEAM_VERSION = "2.77.0"
FLINK_BUILD = os.path.join(ROOT, "tools", "flink", "build_job_server.sh")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _need_go(what):
    if shutil.which("go"):
        return
    message = f"{what} needs Go (https://go.dev) to build it; Go is not on PATH"
    if IN_CI:
        pytest.fail(message + " (CI=true: this test must run)")
    pytest.skip(message)


def _go(args, cwd, env=None):
    done = subprocess.run(["go", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"go {' '.join(args)} failed:\n{done.stderr[-2000:]}")


def build_pstest():
    _need_go("the Pub/Sub fake server")
    target = os.path.join(BIN, "pstest")
    source = os.path.join(ROOT, "tools", "pstest")
    newest = max(os.path.getmtime(os.path.join(source, n)) for n in os.listdir(source))
    if not os.path.exists(target) or os.path.getmtime(target) < newest:
        os.makedirs(BIN, exist_ok=True)
        _go(["build", "-o", target, "."], source)
    return target


def build_prism():
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


@pytest.fixture(scope="session")
def prism():
    return build_prism()


@pytest.fixture(scope="session")
def pubsub_emulator():
    """PUBSUB_EMULATOR_HOST of a running pstest server (this process and children)."""
    binary = build_pstest()
    process = subprocess.Popen([binary, "-host", "127.0.0.1", "-port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if not line.startswith("PSTEST_ADDR="):
        process.kill()
        pytest.fail(f"pstest did not start: {line!r} {process.stderr.read()[-500:]}")
    address = line.split("=", 1)[1]
    threading.Thread(target=process.stdout.read, daemon=True).start()
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = address
    yield address
    if previous is None:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    else:
        os.environ["PUBSUB_EMULATOR_HOST"] = previous
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def flink_job_server():
    """Path of the job server's launcher jar (built on first use, minutes when cold)."""
    missing = [tool for tool in ("java", "jar", "mvn") if not shutil.which(tool)]
    if missing:
        message = (f"the Flink job server needs Java 17 and Maven to build it; "
                   f"{', '.join(missing)} not on PATH")
        if IN_CI:
            pytest.fail(message + " (CI=true: this test must run)")
        pytest.skip(message)
    done = subprocess.run(["bash", FLINK_BUILD], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"{FLINK_BUILD} failed:\n{done.stderr[-2000:]}")
    launcher = done.stdout.strip().splitlines()[-1]
    assert os.path.isfile(launcher), done.stdout
    return launcher
