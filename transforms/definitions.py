"""The list definitions each worker evaluates with, and where they come from.

Batch: the document enters as a side input (text, version and order); each worker
compiles a version once. Streaming: Beam's local streaming runners cannot refresh a side
input in the global window (Prism rejects triggered global-window side inputs, Beam issue
31438; the Python direct runner cannot run PeriodicImpulse in streaming), and Beam gives
timer callbacks no side inputs at all, so each worker re-reads the definition file itself
every `refresh_seconds`, keeping the last good version when a new file is bad.

The file is the only place rules come from. A sweep (pipeline/stream.py) names a version
and never carries rules: a worker reads its source again to find that version, and
ignores the sweep when the source does not hold it. Versions are ordered by the source's
own clock (the file's modification time when it held them), so workers that poll at
different moments agree which of two versions is newer, and a lead that has followed a
version is never evaluated with an older one (LeadProcessor.behind).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import NamedTuple, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from rules import DefinitionError, LeadProcessor, definitions_from_text

NAMESPACE = "dynlists"
_LOG = logging.getLogger(__name__)
# a sweep or a lead naming a version this worker lacks makes it read its source at once,
# at most this often per version (a flood of unknown versions reads the file once each;
# a sweep ignored within the gap leaves its leads to follow at their next event or timer)
FORCED_READ_GAP_S = 0.2
_ASKED_MAX = 1024  # versions remembered for that limit


class DefinitionsDoc(NamedTuple):
    version: str
    text: str
    order: Optional[int] = None  # the source's modification time, microseconds


def read_text(path):
    from apache_beam.io.filesystems import FileSystems
    try:
        with FileSystems.open(path) as handle:
            return handle.read().decode("utf-8")
    except (OSError, ValueError) as err:
        raise DefinitionError([f"cannot read {path}: {err}"]) from None


def _modified_us(path):
    from apache_beam.io.filesystems import FileSystems
    try:
        return int(FileSystems.last_updated(path) * 1e6)
    except Exception as err:  # noqa: BLE001 - any filesystem's error: one sentence
        read_text(path)  # a missing or unreadable file: its own plain message
        raise DefinitionError([f"cannot read {path}: {err}"]) from None


def read_source(path):
    """(text, order) of a definition file: its text and its modification time (µs) while
    it held that text (read again if the file changed during the read)."""
    order = _modified_us(path)
    for _ in range(3):
        text = read_text(path)
        after = _modified_us(path)
        if after == order:
            break
        order = after
    return text, order


def read_definitions(path):
    """(Definitions, DefinitionsDoc) of a local or gs:// file; DefinitionError when bad."""
    text, order = read_source(path)
    definitions = definitions_from_text(text, path)
    return definitions, DefinitionsDoc(definitions.version, text, order)


class ProcessorCache:
    """The LeadProcessor of the definitions a worker should use now."""

    def __init__(self, path=None, refresh_seconds=None):
        self.path = path
        self.refresh = refresh_seconds
        self.processor = None
        self._checked = 0.0
        self._file_text = None
        self._file_good = False  # whether _file_text is the document `processor` runs
        self._asked = {}  # version -> when a sweep or lead for it made the file be read
        self._lock = threading.RLock()
        self.rejected = Metrics.counter(NAMESPACE, "definitions_rejected")
        self.loaded = Metrics.counter(NAMESPACE, "definitions_loaded")
        self.ignored_sweeps = Metrics.counter(NAMESPACE, "sweeps_ignored")
        self._last_ignored_log = -1e9

    def get(self, doc):
        """The processor of a given document (the batch side input)."""
        processor = self.processor
        if processor is None or processor.version != doc.version:
            with self._lock:
                if self.processor is None or self.processor.version != doc.version:
                    self._take(LeadProcessor(definitions_from_text(doc.text),
                                             order=doc.order))
                processor = self.processor
        return processor

    def current(self):
        """Streaming: the newest good definitions, re-reading the file when it is time."""
        now = time.monotonic()
        if self.processor is None or (self.refresh is not None
                                      and now - self._checked >= self.refresh):
            with self._lock:
                if self.processor is None or now - self._checked >= (self.refresh or 0):
                    self._checked = now
                    self._poll()
        return self.processor

    def for_sweep(self, version):
        """Streaming: the processor a sweep for `version` is applied with, or None.

        Only the source decides: a version this worker does not have makes it read the
        file now; if the file does not hold that version either (a forged, stale or
        re-delivered sweep), the sweep is ignored, and nothing of it is taken up.
        """
        processor = self.current()
        if processor.version == version:
            return processor
        processor = self._read_for(version)
        if processor.version == version:
            return processor
        self.ignored_sweeps.inc()
        now = time.monotonic()
        if now - self._last_ignored_log >= 60:
            self._last_ignored_log = now
            _LOG.warning("sweep for definitions %s ignored: %s holds %s", version,
                         self.path, processor.version)
        return None

    def catch_up(self, state):
        """Streaming: a processor not older than what the lead followed, or None.

        A lead that has followed newer definitions than this worker holds (it moved
        from a worker that polled sooner) makes the worker read its source now.
        """
        processor = self.current()
        if not processor.behind(state):
            return processor
        processor = self._read_for(state.defs_version)
        return None if processor.behind(state) else processor

    def _read_for(self, version):
        """Read the file now on behalf of `version`, at most every FORCED_READ_GAP_S."""
        with self._lock:
            now = time.monotonic()
            if now - self._asked.get(version, -1e9) >= FORCED_READ_GAP_S:
                if len(self._asked) >= _ASKED_MAX:
                    self._asked.clear()
                self._asked[version] = now
                self._checked = now
                self._poll()
            return self.processor

    def _take(self, processor):
        self.processor = processor
        self.loaded.inc()

    def _poll(self):
        try:
            text, order = read_source(self.path)
        except DefinitionError as err:
            self._reject(err)
            return
        if text == self._file_text:
            if self._file_good:
                self._confirm(order)
            return
        self._file_text = text  # a bad file is reported once, not at every poll
        self._file_good = False
        try:
            definitions = definitions_from_text(text, self.path)
        except DefinitionError as err:
            self._reject(err)
            return
        self._file_good = True
        if self.processor is None or self.processor.version != definitions.version:
            self._take(LeadProcessor(definitions, order=order))
            _LOG.warning("definitions %s loaded from %s", definitions.version, self.path)
        else:
            self._confirm(order)

    def _confirm(self, order):
        """The source still holds our version as of `order`: a version rolled back to,
        or a file touched, stands that much later among the source's versions."""
        if self.processor.order is None or order > self.processor.order:
            self.processor.order = order

    def _reject(self, err):
        self.rejected.inc()
        if self.processor is None:
            raise err
        _LOG.error("keeping definitions %s: %s", self.processor.version, "; ".join(err.errors))


_CACHES = {}
_CACHES_LOCK = threading.Lock()


def shared_cache(path=None, refresh_seconds=None):
    """The worker process's ProcessorCache for a definition source.

    Some runners (the Python direct runner in streaming) make a new DoFn instance and
    call setup() for every bundle; sharing the cache per process keeps a definitions
    version compiled once per worker, as the design intends. Process-level, never
    pickled with a DoFn.
    """
    key = (path, refresh_seconds)
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = ProcessorCache(path, refresh_seconds)
        return cache


class StaticDefinitions(beam.PTransform):
    """One definitions document, read and validated when the pipeline is built."""

    def __init__(self, doc):
        super().__init__()
        self.doc = doc

    def expand(self, pbegin):
        return pbegin | "Definitions" >> beam.Create([self.doc])
