#!/usr/bin/env bash
# The engine's C module (rules/_native.c) under AddressSanitizer and
# UndefinedBehaviorSanitizer: builds it with both into a copy of the tree under
# .cache/sanitize/ (never in place: the checkout's own module is what every other run of
# the tests loads), runs the engine's tests against that copy, then replays the fuzz
# corpus (tests/fuzz/corpus, when there is one) through its harness, and exits non-zero
# on any failed test or sanitizer report. The build is redone only when rules/_native.c
# (or a part of it in rules/native/), setup.py, these flags or the compiler change.
#
#   tools/sanitize.sh [pytest arguments]   default: the engine's property tests
#   HYPOTHESIS_MAX_EXAMPLES=N              caps each property at N examples
#   SANITIZE_PLANT=FILE                    a C file appended to the module's source
#                                          before the build (to show that a report fails)
#   SANITIZE_ASAN_OPTIONS=...              more ASan options, e.g. fast_unwind_on_malloc=0
#                                          to see where a leak was allocated (the
#                                          interpreter has no frame pointers: by default a
#                                          leak's stack stops inside it), ~20x slower
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

command -v gcc >/dev/null 2>&1 || { echo "sanitize: gcc not found" >&2; exit 2; }
[ -x .venv/bin/python ] || tools/bootstrap.sh
python=$root/.venv/bin/python

cache=$root/.cache/sanitize
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9  # one run at a time: they share the copy and the logs

# -fno-wrapv undoes CPython's -fwrapv for this module, so that UBSan checks its signed
# arithmetic (a time plus a window that wraps is a wrong answer even where it is defined);
# -UNDEBUG turns on CPython's own assertions in its inline functions.
sanitizers=address,undefined,float-cast-overflow
cflags="-fsanitize=$sanitizers -fno-sanitize-recover=all -fno-omit-frame-pointer -fno-wrapv -g -UNDEBUG"
ldflags="-fsanitize=$sanitizers"

plant=${SANITIZE_PLANT:-}
key=$({ cat rules/_native.c rules/native/*.c setup.py; [ -z "$plant" ] || cat "$plant"
        echo "$cflags $ldflags"; gcc --version; } | sha256sum | cut -d' ' -f1)
module=$cache/module-$key.so

# what git knows of the working tree (changes not yet committed included), no ignored files
copy_tree() {
  rm -rf "$1"
  mkdir -p "$1"
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$1"
}

if [ ! -f "$module" ]; then
  echo "sanitize: building rules/_native.c with -fsanitize=$sanitizers" >&2
  build=$cache/build
  copy_tree "$build"
  [ -z "$plant" ] || cat "$plant" >> "$build/rules/_native.c"
  # setup.py makes the module optional: a failed build would only warn, so the .so is checked
  if ! (cd "$build" && CFLAGS="$cflags" LDFLAGS="$ldflags" \
          nice -n 10 "$python" setup.py build_ext --inplace >"$cache/build.log" 2>&1) ||
     ! ls "$build"/rules/_native*.so >/dev/null 2>&1; then
    cat "$cache/build.log" >&2
    echo "sanitize: the sanitized build of rules/_native.c failed" >&2
    exit 2
  fi
  cp "$build"/rules/_native*.so "$module"
  ls -t "$cache"/module-*.so | tail -n +5 | xargs -r rm -f  # the last few builds stay
fi

tree=$cache/tree
copy_tree "$tree"
rm -f "$tree"/rules/_native*.so
cp "$module" "$tree/rules/_native$("$python" -c \
  'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"

# ASan's reports go to log files (log_path), UBSan's fatal ones to stderr whatever its
# log_path says: each step's stderr is kept there too.
logs=$cache/logs
rm -rf "$logs"
mkdir -p "$logs"
# ASan's runtime must be the process's first library, so it is preloaded into python.
# PYTHONMALLOC=malloc gives every object its own malloc block, which ASan guards: inside
# pymalloc's arenas an overrun or a use after free of a Python object would go unseen.
sanitized=(env
  LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
  PYTHONMALLOC=malloc
  ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:exitcode=86:log_path=$logs/asan${SANITIZE_ASAN_OPTIONS:+:$SANITIZE_ASAN_OPTIONS}"
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87"
  PYTHONPATH="$tree" PYTHONDONTWRITEBYTECODE=1)

cd "$tree"
if [ $# -eq 0 ]; then
  set -- tests/test_engine_properties.py tests/test_native.py tests/test_operators.py \
         tests/test_values.py
fi
status=0
start=$SECONDS
# one process: the module it loads is the sanitized copy's, then the tests
"${sanitized[@]}" nice -n 10 "$python" - "$tree" -q -p tools.hypothesis_cap "$@" \
  2>"$logs/tests.stderr" <<'PY' ||
import sys
import pytest
import rules._native as native
if not native.__file__.startswith(sys.argv[1] + "/"):
    sys.exit(f"sanitize: loaded {native.__file__}, not the sanitized copy")
sys.exit(pytest.main(sys.argv[2:]))
PY
  status=$?
cat "$logs/tests.stderr" >&2
echo "sanitize: tests ran in $((SECONDS - start)) s (exit $status)" >&2

# the fuzz corpus, replayed input by input through the harness's run(data) (no atheris
# needed, and no coverage-guided search: only these inputs). The harness loads the sinks'
# libraries (cffi, cryptography's and orjson's Rust), which keep memory LeakSanitizer
# calls leaked and whose stacks (no frame pointers) cannot be told from the engine's: here
# leaks are not checked; the tests above check them, through the same C functions.
if [ "$status" -eq 0 ] && [ -d tests/fuzz/corpus ] && [ -f tests/fuzz/harness.py ]; then
  start=$SECONDS
  "${sanitized[@]}" ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=86:log_path=$logs/asan${SANITIZE_ASAN_OPTIONS:+:$SANITIZE_ASAN_OPTIONS}" \
    nice -n 10 "$python" - tests/fuzz/corpus 2>"$logs/fuzz.stderr" <<'PY' || status=$?
import pathlib, sys, traceback
from tests.fuzz.harness import run
inputs = sorted(p for p in pathlib.Path(sys.argv[1]).iterdir() if p.is_file())
failed = 0
for path in inputs:
    try:
        run(path.read_bytes())
    except Exception:
        failed += 1
        print(f"fuzz input {path} fails:", file=sys.stderr)
        traceback.print_exc()
print(f"sanitize: replayed {len(inputs)} fuzz inputs, {failed} failed", file=sys.stderr)
sys.exit(1 if failed or not inputs else 0)
PY
  cat "$logs/fuzz.stderr" >&2
  echo "sanitize: the fuzz corpus ran in $((SECONDS - start)) s" >&2
else
  echo "sanitize: no fuzz corpus replayed (tests/fuzz/corpus and tests/fuzz/harness.py" \
       "are needed, and the tests must pass)" >&2
fi

cd "$root"
"$python" tools/sanitizer_reports.py "$logs" || status=1
exit "$status"
