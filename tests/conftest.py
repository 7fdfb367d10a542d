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


@pytest.fixture(scope="session")
def flink_cluster():
    """A real Flink 1.19 session cluster on loopback (tools/flink/cluster.py): a
    JobManager and two TaskManagers of two slots, each its own JVM in its own process
    group; `.rest_address` is the --flink_master, `.runner_args(pool)` the options of a
    job on it. Needs Java 17 and Maven (the jars come from the job server's build)."""
    from tools.flink.cluster import FlinkCluster
    cluster = FlinkCluster(taskmanagers=2, slots=2)
    _part(cluster.start)
    print(f"\nFlink cluster at {cluster.rest_address}: up in {cluster.start_seconds:.1f}s")
    try:
        yield cluster
    finally:
        cluster.stop()
