"""The list definitions as a side input, and the compiled engine each worker keeps.

The side input carries the definition document's text and version; each worker parses
and compiles a version once, on first use, and keeps it until the version changes.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

from rules import DefinitionError, LeadProcessor, definitions_from_text


class DefinitionsDoc(NamedTuple):
    version: str
    text: str


def read_definitions(path):
    """(Definitions, DefinitionsDoc) of a local or gs:// file; DefinitionError when bad."""
    from apache_beam.io.filesystems import FileSystems
    try:
        with FileSystems.open(path) as handle:
            text = handle.read().decode("utf-8")
    except (OSError, ValueError) as err:
        raise DefinitionError([f"cannot read {path}: {err}"]) from None
    definitions = definitions_from_text(text, path)
    return definitions, DefinitionsDoc(definitions.version, text)


class ProcessorCache:
    """The LeadProcessor of the newest definitions a worker has seen."""

    def __init__(self):
        self.processor = None

    def get(self, doc):
        if self.processor is None or self.processor.version != doc.version:
            self.processor = LeadProcessor(definitions_from_text(doc.text))
        return self.processor


class StaticDefinitions(beam.PTransform):
    """One definitions document, read and validated when the pipeline is built."""

    def __init__(self, doc):
        super().__init__()
        self.doc = doc

    def expand(self, pbegin):
        return pbegin | "Definitions" >> beam.Create([self.doc])
