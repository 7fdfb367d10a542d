"""Throwaway PostgreSQL servers for the tests and benchmarks: a primary and, on demand,
a streaming replica made with pg_basebackup, each in a temporary folder, on loopback.

PostgreSQL's own programs (initdb, pg_ctl, pg_basebackup) refuse to run as root; as
root the servers run as the `postgres` user that Debian's package creates. Without the
programs this raises tools.parts.Missing with one line saying what to install.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

from tools.parts import BuildFailed, Missing

USER = "dynlists"  # the clusters' superuser (trust authentication on loopback only)
INSTALL = "install PostgreSQL (Debian: apt-get install postgresql)"


def bin_dir():
    """The folder holding initdb and pg_ctl: on PATH, or Debian's versioned folder."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(folder, "initdb")):
            return folder
    raise Missing(f"PostgreSQL's server programs (initdb, pg_ctl) were not found: {INSTALL}")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """One running server: `port`, `data` folder, `uri(database)`."""

    def __init__(self, cluster, data, port):
        self.cluster, self.data, self.port = cluster, data, port

    def uri(self, database="postgres"):
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def stop(self, mode="fast"):
        self.cluster._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)


class Cluster:
    """A primary (and replicas) under one temporary folder; `stop()` removes it all.

    Durability is relaxed (no fsync): these servers hold test data only."""

    def __init__(self, durable=False):
        self.bin = bin_dir()
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise Missing("PostgreSQL will not run as root and there is no `postgres` "
                              f"user to run it as: {INSTALL}") from None
        self.root = tempfile.mkdtemp(prefix="dynlists-pg-")
        if self.user:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.durable = durable
        self.servers = []
        self.primary = self._start_primary()

    def _run(self, program, *args, check=True, timeout=120):
        done = subprocess.run([os.path.join(self.bin, program), *args], capture_output=True,
                              text=True, timeout=timeout, cwd=self.root,
                              user=self.user.pw_uid if self.user else None,
                              group=self.user.pw_gid if self.user else None,
                              extra_groups=[] if self.user else None)
        if check and done.returncode != 0:
            raise BuildFailed(f"{program} failed: {(done.stderr or done.stdout)[-1500:]}")
        return done

    def _configure(self, data, port):
        settings = {
            "listen_addresses": "'127.0.0.1'", "port": str(port),
            "unix_socket_directories": f"'{self.root}'",
            "wal_level": "replica", "max_wal_senders": "5", "hot_standby": "on",
            "max_connections": "100", "shared_buffers": "'256MB'",
            "logging_collector": "off",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        with open(os.path.join(data, "postgresql.auto.conf"), "a") as conf:
            for name, value in settings.items():
                conf.write(f"{name} = {value}\n")

    def _start(self, data, port):
        self._run("pg_ctl", "-D", data, "-l", os.path.join(self.root, f"{port}.log"),
                  "-w", "-t", "60", "start")
        server = Server(self, data, port)
        self.servers.append(server)
        return server

    def _start_primary(self):
        data, port = os.path.join(self.root, "primary"), _free_port()
        self._run("initdb", "-D", data, "-U", USER, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        with open(os.path.join(data, "pg_hba.conf"), "w") as hba:
            hba.write("local all all trust\nhost all all 127.0.0.1/32 trust\n"
                      "host replication all 127.0.0.1/32 trust\n")
        self._configure(data, port)
        return self._start(data, port)

    def add_replica(self):
        """A streaming replica of the primary (pg_basebackup -R), started and serving
        reads; returns its Server."""
        data, port = os.path.join(self.root, f"replica{len(self.servers)}"), _free_port()
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
                  "-U", USER, "-D", data, "-R", "-X", "stream", "--no-sync")
        self._configure(data, port)  # its own port; the rest as the primary's
        return self._start(data, port)

    def create_database(self, name):
        """A new empty database on the primary (on its replicas too, once replayed)."""
        import psycopg
        with psycopg.connect(self.primary.uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def wait_replayed(self, replica, timeout=30):
        """Wait until `replica` has replayed everything the primary has written."""
        import psycopg
        with psycopg.connect(self.primary.uri(), autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.time() + timeout
        with psycopg.connect(replica.uri(), autocommit=True) as conn:
            while True:
                done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                    (target,)).fetchone()[0]
                if done:
                    return
                if time.time() > deadline:
                    raise TimeoutError(f"replica on port {replica.port} did not catch up")
                time.sleep(0.02)

    def stop(self):
        for server in reversed(self.servers):
            server.stop("immediate")
        self.servers = []
        shutil.rmtree(self.root, ignore_errors=True)
