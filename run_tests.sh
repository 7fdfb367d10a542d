#!/usr/bin/env bash
# Set up (as run_local.sh does) and run the whole test suite; arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
tools/bootstrap.sh
if [ "${CI:-}" = true ]; then tools/system_parts.sh; fi
exec .venv/bin/python -m pytest "$@"
