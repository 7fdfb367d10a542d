#!/usr/bin/env bash
# Print the path of a Python 3.13 (the newest version the project supports): python3.13
# on PATH, or one that pyenv installed; fail with one line when there is none.
set -euo pipefail
works='import sys; sys.exit(sys.version_info[:2] != (3, 13))'
for candidate in python3.13 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13; do
  if [ -x "$(command -v "$candidate" 2>/dev/null)" ] && "$candidate" -c "$works" 2>/dev/null; then
    command -v "$candidate"
    exit 0
  fi
done
echo "error: Python 3.13 is needed to run the suite on the newest supported version" >&2
exit 1
