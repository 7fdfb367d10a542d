#!/usr/bin/env bash
# Run the main job on the bundled sample data: DirectRunner, SQLite sink, then a summary.
# Extra arguments pass through to the job (any Beam option: --runner, --project, ...).
#   ./run_local.sh stream [--rate N] [job options]: the streaming job on the sample, fed
#   through the bundled Pub/Sub server (needs Go to build it once): tools/stream_demo.py
set -euo pipefail
cd "$(dirname "$0")"
tools/bootstrap.sh
if [ "${1:-}" = stream ]; then
  shift
  exec .venv/bin/python -m tools.stream_demo "$@"
fi
mkdir -p out
rm -f out/local.db out/local.db-wal out/local.db-shm  # each run starts from an empty sink
exec .venv/bin/python -m pipeline backfill \
  --events 'sample/events/*' \
  --lists sample/lists.json \
  --sink "sqlite:///$PWD/out/local.db" \
  "$@"
