#!/usr/bin/env bash
# Create .venv (or $DYNLISTS_VENV) with a supported Python (3.11 to 3.13: $DYNLISTS_PYTHON
# if set, else the first of python3.11, python3.12, python3.13, python3 that is one) if it
# is missing, and install the locked dependencies and this project (with the engine's C
# module where a C compiler is found); does nothing when requirements.lock, setup.py and
# the C source (rules/_native.c and its parts in rules/native/) have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

supported='import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))'
python=""
for candidate in ${DYNLISTS_PYTHON:-} python3.11 python3.12 python3.13 python3 python; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "$supported" 2>/dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "error: Python 3.11, 3.12 or 3.13 is needed (none found on PATH; DYNLISTS_PYTHON names one)" >&2
  exit 1
fi

venv=${DYNLISTS_VENV:-.venv}
stamp=$venv/.installed
want=$(cat requirements.lock setup.py rules/_native.c rules/native/*.c | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv with $($python --version)" >&2
  "$python" -m venv "$venv"
fi
echo "installing locked dependencies into $venv (first run takes a few minutes)" >&2
"$venv/bin/python" -m pip install --quiet -r requirements.lock
"$venv/bin/python" -m pip install --quiet --no-deps -e . 2>"$venv/install.log" ||
  { cat "$venv/install.log" >&2; exit 1; }
if ! "$venv/bin/python" -c 'import rules._native' 2>/dev/null; then
  echo "note: the engine's C module was not built (no C compiler?): the engine runs in" \
       "pure Python, slower; see $venv/install.log" >&2
fi
echo "$want" > "$stamp"
