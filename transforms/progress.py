"""Progress of a local job on a terminal: records read so far and the rate.

The readers of the job's workers (transforms/io.py, `read_records`) count what they read
into small files of a folder named by PROGRESS_DIR in their environment, one file per
worker process; `Progress` sums them twice a second and redraws one line on stderr. It
only runs when stderr is a terminal (or DYNLISTS_PROGRESS=1), and only sees workers on
this machine (the DirectRunner's, Prism's): a remote runner's workers count nothing
here, and the line stays at zero.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time

PROGRESS_DIR = "DYNLISTS_PROGRESS_DIR"
INTERVAL_S = 0.5


def redraw(line, final=False):
    """Draw `line` over the terminal line stderr is on (ending it when `final`): the one
    way this project's commands show progress."""
    print(f"\r{line}\033[K", end="\n" if final else "", file=sys.stderr, flush=True)


def wanted():
    forced = os.environ.get("DYNLISTS_PROGRESS")
    if forced is not None:
        return forced == "1"
    return sys.stderr.isatty()


class Progress:
    """`with Progress(...) as progress:` around a job's run: workers started inside it
    report to it (their environment names its folder). `files`: how many input files
    the line counts down (backfill); `total`: how many records there are, when known
    (reconcile's profiles)."""

    def __init__(self, files=None, label="read", unit="records", total=None):
        self.files, self.label, self.unit, self.total = files, label, unit, total
        self.folder = None
        self.done = threading.Event()
        self.thread = None
        self.started = None

    def __enter__(self):
        if not wanted():
            return self
        self.folder = tempfile.mkdtemp(prefix="dynlists-progress-")
        os.environ[PROGRESS_DIR] = self.folder
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.folder is None:
            return
        self.done.set()
        self.thread.join()
        os.environ.pop(PROGRESS_DIR, None)
        shutil.rmtree(self.folder, ignore_errors=True)

    def counts(self):
        """(records, files) the workers have read so far."""
        records = files = 0
        for name in os.listdir(self.folder):
            try:
                with open(os.path.join(self.folder, name)) as handle:
                    found = handle.read().split()
                records, files = records + int(found[0]), files + int(found[1])
            except (OSError, ValueError, IndexError):
                pass  # being replaced
        return records, files

    def line(self):
        records, files = self.counts()
        seconds = max(time.monotonic() - self.started, 1e-9)
        of = f" of {self.total:,}" if self.total is not None else ""
        done = f"{files} of {self.files} file(s) done, " if self.files is not None else ""
        return (f"{self.label} {records:,}{of} {self.unit} ({records / seconds:,.0f}/s), "
                f"{done}{seconds:.0f}s")

    def _run(self):
        while not self.done.wait(INTERVAL_S):
            redraw(self.line())
        redraw(self.line(), final=True)


class Counter:
    """A worker process's count of records and files read, written to its file in the
    progress folder at most every INTERVAL_S (and when a file is done)."""

    def __init__(self, folder):
        self.path = os.path.join(folder, f"{os.getpid()}-{threading.get_ident()}")
        self.records = self.files = self._flushed = 0
        self.written = 0.0

    def record(self):
        self.records += 1
        if self.records % 1000 == 0 and time.monotonic() - self.written >= INTERVAL_S:
            self.write()

    def file_done(self):
        self.files += 1
        self.write()

    def flush(self):
        """At a bundle's end: the count written even when it is not due."""
        if self.records != self._flushed:
            self._flushed = self.records
            self.write()

    def write(self):
        self.written = time.monotonic()
        temporary = self.path + ".tmp"
        with open(temporary, "w") as handle:
            handle.write(f"{self.records} {self.files}\n")
        os.replace(temporary, self.path)


_COUNTERS = threading.local()


def counter():
    """This thread's Counter, or None when no progress folder is named."""
    folder = os.environ.get(PROGRESS_DIR)
    if not folder or not os.path.isdir(folder):
        return None
    found = getattr(_COUNTERS, "counter", None)
    if found is None or not found.path.startswith(folder):
        found = _COUNTERS.counter = Counter(folder)
    return found
