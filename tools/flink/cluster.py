"""A real Flink 1.19 session cluster on loopback, for tests and benchmarks: a JobManager
and N TaskManagers, each a JVM of its own in its own process group, plus a Beam worker
pool for `--environment_type=EXTERNAL`.

No Flink distribution is needed (the Maven mirror does not serve flink-dist): the
processes run Flink's own entry points from the jars the job server build already holds
(.cache/flink/<beam version>/lib: flink-runtime, flink-rpc-akka-loader, the Beam runner),
with a config written into a temporary folder. Usage:

    with FlinkCluster(taskmanagers=2) as cluster, WorkerPool() as pool:
        args = cluster.runner_args(pool)   # --runner=FlinkRunner --flink_master=... EXTERNAL
        ...
        cluster.kill_taskmanager(0)        # SIGKILL, as a lost machine
        cluster.start_taskmanager()
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from tools import parts


# Memory of one TaskManager (Flink's model, set piece by piece: TaskManagerRunner, unlike
# Flink's start scripts, derives nothing). Small enough for a 2-core CI machine shared
# with other jobs; the network buffers are the piece Beam's batch jobs need most (a
# DataSet plan deploys many tasks at once: 64 MB was too little for the sample).
TM_MEMORY = {
    "taskmanager.memory.framework.heap.size": "128m",
    "taskmanager.memory.task.heap.size": "384m",
    "taskmanager.memory.framework.off-heap.size": "128m",
    "taskmanager.memory.task.off-heap.size": "64m",
    "taskmanager.memory.network.min": "256m",
    "taskmanager.memory.network.max": "256m",
    "taskmanager.memory.managed.size": "128m",
    "taskmanager.memory.jvm-metaspace.size": "512m",
    "taskmanager.memory.jvm-overhead.min": "192m",
    "taskmanager.memory.jvm-overhead.max": "192m",
}
# the JVM flags Flink's scripts would derive from TM_MEMORY
TM_JVM = ["-Xms128m", "-Xmx512m",                 # framework + task heap
          "-XX:MaxDirectMemorySize=448m",          # framework + task off-heap + network
          "-XX:MaxMetaspaceSize=512m"]
JM_JVM = ["-Xms64m", "-Xmx512m", "-XX:MaxMetaspaceSize=256m", "-XX:+UseSerialGC"]
START_TIMEOUT_S = 120


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _java_opens(launcher):
    """The --add-opens Flink needs on Java 17: the launcher's manifest holds the list
    (build_job_server.sh writes it), so it is kept in one place."""
    manifest = os.path.join(os.path.dirname(launcher), "MANIFEST.MF")
    with open(manifest) as handle:
        for line in handle:
            if line.startswith("Add-Opens:"):
                return [f"--add-opens={module}=ALL-UNNAMED"
                        for module in line.split(":", 1)[1].split()]
    raise parts.BuildFailed(f"{manifest} has no Add-Opens line")


def _tail(path, size=3000):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


class FlinkCluster:
    """A JobManager and `taskmanagers` TaskManagers of `slots` slots each.

    `start()` (or `with`) builds the jars if needed, writes the config, starts every
    process and returns once the REST API lists all TaskManagers; `stop()` kills them
    all and removes the folder (logs included, unless `keep`)."""

    def __init__(self, taskmanagers=2, slots=2, root=None, keep=None, settings=None):
        self.count, self.slots = taskmanagers, slots
        self.root = root
        # DYNLISTS_KEEP_FLINK=1: leave the folder (config, logs, checkpoints) for a look
        self.keep = keep if keep is not None else os.environ.get("DYNLISTS_KEEP_FLINK") == "1"
        self.settings = dict(settings or {})
        self.jobmanager = None
        self.taskmanagers = []  # (resource id, Popen), killed ones included
        self.rest_port = None
        self.start_seconds = None

    # -- life cycle --------------------------------------------------------------------
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        if not shutil.which("java"):
            raise parts.Missing("a Flink cluster needs Java 17; java is not on PATH")
        self.launcher = parts.build_flink_job_server()
        self.lib = os.path.join(os.path.dirname(self.launcher), "lib")
        self.opens = _java_opens(self.launcher)
        started = time.monotonic()
        self.root = self.root or tempfile.mkdtemp(prefix="dynlists-flink-")
        for folder in ("conf", "logs", "tmp", "checkpoints"):
            os.makedirs(os.path.join(self.root, folder), exist_ok=True)
        self.rest_port = free_port()
        self._write_config(free_port())
        try:
            # all at once: a TaskManager retries until the JobManager answers
            self.jobmanager = self._java(
                "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
                "jobmanager", JM_JVM)
            for _ in range(self.count):
                self._start_taskmanager()
            self.wait_for_taskmanagers(self.count)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self):
        for _, process in self.taskmanagers:
            parts.stop_group(process, signal.SIGKILL)
        if self.jobmanager is not None:
            parts.stop_group(self.jobmanager, signal.SIGKILL)
        if self.root and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- processes ---------------------------------------------------------------------
    def _write_config(self, rpc_port):
        config = {
            "jobmanager.rpc.address": "localhost",
            "jobmanager.rpc.port": rpc_port,
            "jobmanager.bind-host": "127.0.0.1",
            "rest.address": "localhost",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port,
            "taskmanager.host": "localhost",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.cpu.cores": self.slots,
            **TM_MEMORY,
            # both TaskManagers get work (and the shuffle crosses JVMs), so losing either
            # one hits the job
            "cluster.evenly-spread-out-slots": "true",
            # the Beam runner is on every JVM's class path: load it from there, once,
            # not again per job from the jars the job server ships
            "classloader.resolve-order": "parent-first",
            "classloader.check-leaked-classloader": "false",
            "io.tmp.dirs": os.path.join(self.root, "tmp"),
            "state.backend.type": "hashmap",
            "state.checkpoints.dir": "file://" + os.path.join(self.root, "checkpoints"),
            "state.savepoints.dir": "file://" + os.path.join(self.root, "savepoints"),
            # a lost TaskManager is noticed in seconds (its connections drop at once;
            # the heartbeat is the backstop) and the job restarts from its checkpoint
            "heartbeat.interval": 1000,
            "heartbeat.timeout": 10000,
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": 20,
            "restart-strategy.fixed-delay.delay": "1 s",
            "slot.request.timeout": 60000,
            **self.settings,
        }
        # Flink 1.19's config.yaml (standard YAML, flat keys)
        with open(os.path.join(self.root, "conf", "config.yaml"), "w") as handle:
            for key, value in config.items():
                handle.write(f"{key}: {value}\n")

    def _java(self, main, name, jvm, *args):
        log = open(os.path.join(self.root, "logs", f"{name}.log"), "ab")
        try:
            return subprocess.Popen(
                ["java", *jvm, *self.opens,
                 "-Dorg.slf4j.simpleLogger.showDateTime=true",
                 "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
                 "-cp", os.path.join(self.lib, "*"), main,
                 "--configDir", os.path.join(self.root, "conf"), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.root, start_new_session=True)
        finally:
            log.close()

    def _start_taskmanager(self):
        resource_id = f"tm-{len(self.taskmanagers)}"
        process = self._java("org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
                             resource_id, TM_JVM, f"-Dtaskmanager.resource-id={resource_id}")
        self.taskmanagers.append((resource_id, process))
        return resource_id

    def start_taskmanager(self, timeout=START_TIMEOUT_S):
        """Start one more TaskManager; returns its resource id once it is registered."""
        resource_id = self._start_taskmanager()
        deadline = time.monotonic() + timeout
        while resource_id not in self.registered():
            if self.taskmanagers[-1][1].poll() is not None or time.monotonic() > deadline:
                raise parts.BuildFailed(f"TaskManager {resource_id} did not register:\n"
                                        f"{_tail(self.log(resource_id))}")
            time.sleep(0.2)
        return resource_id

    def kill_taskmanager(self, which):
        """SIGKILL a TaskManager (index or resource id), as a machine lost at once."""
        for index, (resource_id, process) in enumerate(self.taskmanagers):
            if which in (index, resource_id):
                parts.stop_group(process, signal.SIGKILL)
                return resource_id
        raise KeyError(which)

    def alive(self):
        return sum(process.poll() is None for _, process in self.taskmanagers)

    def log(self, name="jobmanager"):
        return os.path.join(self.root, "logs", f"{name}.log")

    # -- REST --------------------------------------------------------------------------
    @property
    def rest_address(self):
        return f"localhost:{self.rest_port}"

    def rest(self, path, method="GET", timeout=10):
        request = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}",
                                         method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def registered(self):
        """Resource ids of the TaskManagers the ResourceManager knows."""
        return [tm["id"] for tm in self.rest("/taskmanagers")["taskmanagers"]]

    def wait_for_taskmanagers(self, count, timeout=START_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while True:
            if self.jobmanager.poll() is not None:
                raise parts.BuildFailed(
                    f"the Flink JobManager exited ({self.jobmanager.returncode}):\n"
                    f"{_tail(self.log())}")
            try:
                if len(self.registered()) == count:
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass  # the REST endpoint is not up yet
            if time.monotonic() > deadline:
                raise parts.BuildFailed(
                    f"Flink did not report {count} TaskManagers within {timeout}s; "
                    f"logs in {os.path.join(self.root, 'logs')}:\n{_tail(self.log())}")
            time.sleep(0.2)

    def jobs(self):
        """[{'jid', 'name', 'state', ...}] of every job the cluster knows."""
        return self.rest("/jobs/overview")["jobs"]

    def running_job(self, timeout=120):
        """The id of the one job in state RUNNING (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [job["jid"] for job in self.jobs() if job["state"] == "RUNNING"]
            if len(running) == 1:
                return running[0]
            time.sleep(0.5)
        raise AssertionError(f"no single running job after {timeout}s: {self.jobs()}")

    def job_taskmanagers(self, job_id):
        """Resource ids of the TaskManagers running a task of the job."""
        found = set()
        for vertex in self.rest(f"/jobs/{job_id}")["vertices"]:
            hosts = self.rest(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")
            found.update(tm["taskmanager-id"] for tm in hosts["taskmanagers"])
        return found

    def describe(self):
        """One line on the cluster's state, for a failing test's message."""
        try:
            jobs = [(job["jid"][:8], job["state"], job["tasks"]) for job in self.jobs()]
            line = f"TaskManagers {self.registered()}, jobs {jobs}"
            for jid, state, _ in jobs:
                if state in ("RUNNING", "RESTARTING"):
                    full = next(j["jid"] for j in self.jobs() if j["jid"].startswith(jid))
                    counts = self.checkpoints(full)["counts"]
                    line += f", checkpoints of {jid}: {counts}, records in/out by vertex: "
                    line += ", ".join(
                        f"{v['name'][:40]}: {v['metrics']['read-records']}/"
                        f"{v['metrics']['write-records']}"
                        for v in self.rest(f"/jobs/{full}")["vertices"])
            return line + f"; logs in {os.path.join(self.root, 'logs')}"
        except Exception as err:  # noqa: BLE001 - a description must not fail
            return f"(no answer from the REST API: {err})"

    def checkpoints(self, job_id):
        """Flink's checkpoint statistics of a job (counts, latest completed/restored)."""
        return self.rest(f"/jobs/{job_id}/checkpoints")

    def cancel_jobs(self, timeout=60):
        """Cancel every job not yet ended; wait until they are."""
        ended = ("FINISHED", "CANCELED", "FAILED")
        for job in self.jobs():
            if job["state"] not in ended:
                try:
                    self.rest(f"/jobs/{job['jid']}?mode=cancel", method="PATCH")
                except urllib.error.HTTPError:
                    pass  # it ended meanwhile
        deadline = time.monotonic() + timeout
        while any(job["state"] not in ended for job in self.jobs()):
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still running after cancel: {self.jobs()}")
            time.sleep(0.5)

    # -- submitting ----------------------------------------------------------------------
    def runner_args(self, pool, parallelism=2, streaming=False):
        """Command-line options that run a job on this cluster through Beam's Flink job
        server, its Python code in `pool`'s workers."""
        # A batch job's stages run one after another: without a cache each starts its
        # SDK workers again (36 s against 7 s for the sample). A streaming job's stages
        # all run at once, and there the cache would hand the tasks of a restarted job
        # the SDK workers of the attempt that failed, in-process state and all (3 of 9
        # runs of the TaskManager-loss test then stopped writing to the sink).
        cache = 0 if streaming else 60_000
        return ["--runner=FlinkRunner", f"--flink_master={self.rest_address}",
                f"--flink_job_server_jar={self.launcher}", f"--parallelism={parallelism}",
                f"--environment_cache_millis={cache}",
                "--max_bundle_time_mills=100", *pool.environment_args()]


class WorkerPool:
    """A worker pool (tools/flink/worker_pool.py) on a loopback port, in its own process
    group with the SDK workers it starts: a TaskManager running a stage of a job asks it
    for a worker (`--environment_type=EXTERNAL --environment_config=localhost:PORT`).
    `env`: extra environment of the workers (e.g. PUBSUB_EMULATOR_HOST)."""

    def __init__(self, env=None, root=None, keep=False):
        self.env = dict(env or {})
        self.root, self.keep = root, keep
        self.process = None
        self.port = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=60):
        self.root = self.root or tempfile.mkdtemp(prefix="dynlists-workers-")
        self.port = free_port()
        with open(os.path.join(self.root, "pool.log"), "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tools.flink.worker_pool", "serve",
                 f"--port={self.port}", f"--root={self.root}"],
                cwd=parts.ROOT, env={**os.environ, **self.env}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("localhost", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = _tail(os.path.join(self.root, "pool.log"))
                    self.stop()
                    raise parts.BuildFailed(f"the worker pool did not start:\n{log}") from None
                time.sleep(0.1)

    @property
    def address(self):
        return f"localhost:{self.port}"

    def environment_args(self):
        return ["--environment_type=EXTERNAL", f"--environment_config={self.address}"]

    def workers(self):
        """Pids of the SDK workers running now (the pool's children)."""
        found = []
        for task in glob.glob(f"/proc/{self.process.pid}/task/*/children"):
            try:
                with open(task) as handle:
                    found += [int(pid) for pid in handle.read().split()]
            except OSError:
                pass  # the thread ended
        return found

    def stop(self):
        # the workers are in the pool's process group: one signal ends them all
        parts.stop_group(self.process, signal.SIGKILL)
        if self.root and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
