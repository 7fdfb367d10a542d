"""Coders for the records that cross a shuffle, registered when transforms are imported.

A ChangeEvent travels as a plain pickled tuple: without this Beam would pickle each
NamedTuple with its class path, a third more bytes and time at every GroupByKey.
"""

from __future__ import annotations

import pickle

from apache_beam import coders

from schemas.records import ChangeEvent


class ChangeEventCoder(coders.Coder):
    def encode(self, value):
        return pickle.dumps(tuple(value), protocol=5)

    def decode(self, encoded):
        return ChangeEvent(*pickle.loads(encoded))

    def is_deterministic(self):
        return False  # `fields` is a dict; events are values, never keys

    def to_type_hint(self):
        return ChangeEvent


coders.registry.register_coder(ChangeEvent, ChangeEventCoder)
