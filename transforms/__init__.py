"""The pipeline's PTransforms and DoFns: thin shells over the engine and the stores.

Read events (files or Pub/Sub), parse them with dead letters, key them by lead,
evaluate each lead, write the tables. Batch and streaming share every step but the
source and the way a lead's events are grouped.
"""
