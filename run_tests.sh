#!/usr/bin/env bash
# Set up (as run_local.sh does) and run the whole test suite; arguments go to pytest.
# Under CI=true the suite runs twice: on .venv (the oldest supported Python the
# machine has) and on .venv-newest, made with the newest supported one (3.13).
set -euo pipefail
cd "$(dirname "$0")"
tools/bootstrap.sh
if [ "${CI:-}" != true ]; then
  exec .venv/bin/python -m pytest "$@"
fi
tools/system_parts.sh
newest=$(tools/newest_python.sh) || exit 1
echo "== the suite on $(.venv/bin/python --version)" >&2
.venv/bin/python -m pytest "$@"
echo "== the suite on $("$newest" --version)" >&2
DYNLISTS_PYTHON=$newest DYNLISTS_VENV=.venv-newest tools/bootstrap.sh
exec .venv-newest/bin/python -m pytest "$@"
