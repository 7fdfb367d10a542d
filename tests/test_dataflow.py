"""The batch and streaming graphs translate for the DataflowRunner, offline.

`--dry_run=True` makes the DataflowRunner build the whole job (the runner API pipeline
and the Dataflow job request, with the setup.py package built for staging) and stop
before it calls Google Cloud; `--no_auth` keeps credentials out of it. So a graph that
Dataflow would reject at submission fails here instead. Not exercised: the upload to
Cloud Storage, the job creation call, and anything running on Dataflow workers.
"""

from __future__ import annotations

import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.graph import build_backfill, build_stream
from tests.helpers import SAMPLE
from transforms.definitions import read_definitions

ROOT = os.path.dirname(SAMPLE)
BASE = ["--runner=DataflowRunner", "--project=test-project", "--region=us-central1",
        "--temp_location=gs://test-bucket/tmp", "--staging_location=gs://test-bucket/staging",
        "--no_auth", "--dry_run=True", "--sdk_location=container"]


def translate(build, extra):
    pipeline = beam.Pipeline(options=PipelineOptions(BASE + extra))
    build(pipeline)
    result = pipeline.run()
    names = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    return result.job, names


def stateful(job):
    """Names of the transforms whose DoFn keeps per-key state."""
    from apache_beam.portability.api import beam_runner_api_pb2
    found = set()
    for transform in job.proto_pipeline.components.transforms.values():
        if transform.spec.urn == "beam:transform:pardo:v1":
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            if payload.state_specs or payload.timer_family_specs:
                found.add(transform.unique_name)
    return found


def test_backfill_translates_with_the_setup_file(monkeypatch):
    monkeypatch.chdir(ROOT)
    _, doc = read_definitions(os.path.join(SAMPLE, "lists.json"))
    job, names = translate(
        lambda p: build_backfill(p, "gs://test-bucket/events/*.jsonl", doc,
                                 "bigquery://test-project.lists"),
        ["--setup_file=./setup.py"])
    assert job.proto.type.name == "JOB_TYPE_BATCH"
    assert {"Evaluate/GroupHistories", "Parse/Validate",
            "WriteTables/BigQuery/Write_membership_deltas"} <= names
    assert any("BigQueryBatchFileLoads" in n for n in names)
    assert not stateful(job), "batch groups histories; no per-key state"


def test_stream_translates_as_a_streaming_job_with_state_and_timers():
    job, names = translate(
        lambda p: build_stream(p, "projects/test-project/subscriptions/events",
                               "gs://test-bucket/lists.json", 60,
                               "bigquery://test-project.lists"),
        ["--streaming", "--enable_streaming_engine", "--max_num_workers=10"])
    assert job.proto.type.name == "JOB_TYPE_STREAMING"
    assert "ReadPubSub/ReadPubSub/Read" in names or any("ReadFromPubSub" in n or
                                                       "ReadPubSub" in n for n in names)
    assert stateful(job) == {"Evaluate/Evaluate/ParDo(StatefulLeadFn)"}
    assert any("StreamInsertRows" in n for n in names)
    assert "WriteTables/BigQuery/WriteRefused" in names
