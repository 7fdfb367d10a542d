"""The list definitions each worker evaluates with, and where they come from.

Batch: the document enters as a side input (text and version); each worker compiles a
version once. Streaming: Beam's local streaming runners cannot refresh a side input in
the global window (Prism rejects triggered global-window side inputs, Beam issue 31438;
the Python direct runner cannot run PeriodicImpulse in streaming), and Beam gives timer
callbacks no side inputs at all, so each worker re-reads the definition file itself every
`refresh_seconds`, keeping the last good version when a new file is bad. A definitions
sweep (see pipeline/sweep.py) can also carry a document, which is then installed at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from rules import DefinitionError, LeadProcessor, definitions_from_text

NAMESPACE = "dynlists"
_LOG = logging.getLogger(__name__)


class DefinitionsDoc(NamedTuple):
    version: str
    text: str


def read_text(path):
    from apache_beam.io.filesystems import FileSystems
    try:
        with FileSystems.open(path) as handle:
            return handle.read().decode("utf-8")
    except (OSError, ValueError) as err:
        raise DefinitionError([f"cannot read {path}: {err}"]) from None


def read_definitions(path):
    """(Definitions, DefinitionsDoc) of a local or gs:// file; DefinitionError when bad."""
    text = read_text(path)
    definitions = definitions_from_text(text, path)
    return definitions, DefinitionsDoc(definitions.version, text)


class ProcessorCache:
    """The LeadProcessor of the definitions a worker should use now."""

    def __init__(self, path=None, refresh_seconds=None):
        self.path = path
        self.refresh = refresh_seconds
        self.processor = None
        self.loaded_at = 0  # microseconds since the epoch when `processor` was taken up
        self._checked = 0.0
        self._file_text = None
        self._rechecked = {}  # version -> when a sweep for it made the file be read
        self._lock = threading.RLock()
        self.rejected = Metrics.counter(NAMESPACE, "definitions_rejected")
        self.loaded = Metrics.counter(NAMESPACE, "definitions_loaded")
        self.stale_sweeps = Metrics.counter(NAMESPACE, "sweeps_stale")

    def get(self, doc):
        """The processor of a given document (the batch side input)."""
        processor = self.processor
        if processor is None or processor.version != doc.version:
            processor = self.install(doc)
        return processor

    def install(self, doc):
        with self._lock:
            if self.processor is None or self.processor.version != doc.version:
                self._take(LeadProcessor(definitions_from_text(doc.text)))
            return self.processor

    def for_sweep(self, sweep):
        """Streaming: the processor to bring a swept lead in line with.

        A sweep's document is installed when it is newer than the one in use (issued
        after it was taken up); a sweep issued earlier is late or re-delivered, and the
        lead is brought in line with the current definitions instead. A sweep without a
        document or an issue time uses the current definitions / is installed as it is.
        """
        current = self.current()
        if sweep.text is None or current.version == sweep.version:
            return current
        with self._lock:
            if self.processor.version == sweep.version:
                return self.processor
            if sweep.issued_at is not None and sweep.issued_at <= self.loaded_at:
                # older than what this worker took up, by the clocks; the file decides
                # (read at most once per refresh interval and version)
                self._recheck(sweep.version)
                if self.processor.version != sweep.version:
                    self.stale_sweeps.inc()
                return self.processor
            try:
                definitions = definitions_from_text(sweep.text)
            except DefinitionError as err:  # a sweep with a bad document: keep ours
                self._reject(err)
                return self.processor
            self._take(LeadProcessor(definitions), sweep.issued_at)
            return self.processor

    def _recheck(self, version):
        now = time.monotonic()
        if now - self._rechecked.get(version, -1e9) >= (self.refresh or 0):
            self._rechecked[version] = now
            self._checked = now
            self._poll()

    def _take(self, processor, issued_at=None):
        self.processor = processor
        self.loaded_at = max(self.loaded_at, issued_at or int(time.time() * 1e6))
        self.loaded.inc()

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

    def _poll(self):
        try:
            text = read_text(self.path)
        except DefinitionError as err:
            self._reject(err)
            return
        if text == self._file_text:
            return
        self._file_text = text  # a bad file is reported once, not at every poll
        try:
            definitions = definitions_from_text(text, self.path)
        except DefinitionError as err:
            self._reject(err)
            return
        if self.processor is None or self.processor.version != definitions.version:
            self._take(LeadProcessor(definitions))
            _LOG.warning("definitions %s loaded from %s", definitions.version, self.path)

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
