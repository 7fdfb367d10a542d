"""Fixtures that build and start real parts: Google's pstest Pub/Sub server, Prism and
Beam's Flink job server (tools/parts.py builds them into .cache, ignored by git, on
first use), and a PostgreSQL primary with a streaming replica (tools/postgres.py).
Without Go, Java and Maven, or PostgreSQL, the tests that need them skip with one line;
under CI=true they must run, so a missing tool fails them instead.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from tools import parts

IN_CI = os.environ.get("CI", "").lower() == "true"


def _part(build):
    """A part from tools/parts.py: skip without its tools (fail under CI=true), fail when
    its build fails."""
    try:
        return build()
    except parts.Missing as err:
        if IN_CI:
            pytest.fail(f"{err} (CI=true: this test must run)")
        pytest.skip(str(err))
    except parts.BuildFailed as err:
        pytest.fail(str(err))


def require_native(native):
    """For tests parametrized over the engine's backends: the C one needs rules/_native,
    which a C compiler builds on install. Skips without it (fails under CI=true)."""
    from rules.compiler import NATIVE
    if native and not NATIVE:
        message = "rules._native is not built (no C compiler found on install)"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: this test must run)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def prism():
    return _part(parts.build_prism)


@pytest.fixture(scope="session")
def flink_job_server():
    """Path of the job server's launcher jar (built on first use, minutes when cold)."""
    return _part(parts.build_flink_job_server)


@pytest.fixture(scope="session")
def pubsub_emulator():
    """PUBSUB_EMULATOR_HOST of a running pstest server (this process and children)."""
    process, address = _part(parts.start_pstest)
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = address
    yield address
    if previous is None:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    else:
        os.environ["PUBSUB_EMULATOR_HOST"] = previous
    parts.stop_group(process, signal.SIGTERM)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL primary (`.primary`) and its streaming replica (`.replica`)."""
    from tools.postgres import Cluster
    cluster = _part(Cluster)
    try:
        cluster.replica = _part(cluster.add_replica)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_sink(postgres):
    """The sink URI of a new empty database, its reads going to the replica."""
    name = postgres.create_database(f"t{uuid.uuid4().hex[:12]}")
    return f"{postgres.primary.uri(name)}?read_port={postgres.replica.port}"

