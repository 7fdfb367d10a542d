"""Writes the fuzz campaign's seed corpus (tests/fuzz/corpus/) from the sample's events
and the tests' records: raw records of one lead (mode byte 0) and choice bytes for the
structured mode. Deterministic; the corpus also keeps inputs a campaign found new
coverage with (kept while it stays within ~300 files and 2 MB)."""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import os
import random
import sys

import fastavro

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
LEADS = 120  # leads of the sample with a seed each
STRUCTURED = 60


def sample_lines():
    folder = os.path.join(ROOT, "sample", "events")
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".avro"):
            with open(path, "rb") as handle:
                yield from (json.dumps(r).encode() for r in fastavro.reader(handle))
        else:
            with (gzip.open if name.endswith(".gz") else open)(path, "rb") as handle:
                yield from (line.rstrip(b"\r\n") for line in handle if line.strip())


def seeds():
    by_lead = collections.defaultdict(list)
    for line in sample_lines():
        try:
            record = json.loads(line)
            key = (record["tenant_id"], record["lead_id"])
        except (ValueError, KeyError, TypeError):
            key = ("bad", "bad")  # the sample's dead letters, a seed of their own
        by_lead[key].append(line)
    for key in sorted(by_lead)[:LEADS] + [("bad", "bad")]:
        yield b"\x00" + b"\n".join(by_lead[key][:4])
    fz = {"event_id": "e1", "tenant_id": "fz", "lead_id": "L1", "type": "lead_upserted",
          "occurred_at": "2026-05-01T09:00:00.5Z",
          "fields": {"state": "NY", "score": 51, "signup_date": "2026-04-20", "phone": None}}
    for changes in ({}, {"type": "activity", "activity": {"kind": "email_open"}},
                    {"type": "tag_added", "tag": "vip"},
                    {"type": "static_list_added", "list_id": "manual"},
                    {"type": "lead_deleted"}):
        yield b"\x01" + json.dumps({**fz, **changes}).encode()
    rng = random.Random(7)
    for mode in range(STRUCTURED):
        yield bytes([2 + mode % 6]) + bytes(rng.getrandbits(8) for _ in range(rng.randint(8, 200)))


def main():
    os.makedirs(CORPUS, exist_ok=True)
    for seed in seeds():
        name = hashlib.sha1(seed).hexdigest()
        with open(os.path.join(CORPUS, name), "wb") as handle:
            handle.write(seed)
    print(f"{len(os.listdir(CORPUS))} files in {CORPUS}", file=sys.stderr)


if __name__ == "__main__":
    main()
