"""The engine's C module under AddressSanitizer and UndefinedBehaviorSanitizer: its tests
and the fuzz corpus against a sanitized build of rules/_native.c (tools/sanitize.sh, in a
copy of the tree under .cache/), with no report; and a fault of each kind planted in that
build fails the run with its report, so that a clean run means something.

The properties run EXAMPLES examples each here (1,000 as written takes many minutes under
ASan); `tools/sanitize.sh` alone runs them in full. Without gcc these tests skip; under
CI=true they must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import IN_CI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "sanitize.sh")
EXAMPLES = 50


@pytest.fixture(autouse=True)
def _gcc():
    if shutil.which("gcc") is None:
        message = "gcc not found: the sanitized build of rules/_native.c needs it"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: this test must run)")
        pytest.skip(message)


def sanitize(*args, examples=EXAMPLES, plant=None):
    env = {**os.environ, "HYPOTHESIS_MAX_EXAMPLES": str(examples)}
    env.pop("SANITIZE_PLANT", None)
    if plant is not None:
        env["SANITIZE_PLANT"] = str(plant)
    return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)


def test_the_engine_tests_and_the_fuzz_corpus_give_no_sanitizer_report():
    done = sanitize()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-20000:]
    assert "sanitize: 0 log(s) with a sanitizer report" in done.stderr
    assert " passed" in done.stdout and " failed" not in done.stdout
    if os.path.isdir(os.path.join(ROOT, "tests", "fuzz", "corpus")):
        assert ", 0 failed" in done.stderr and "replayed 0 " not in done.stderr, output


# Each runs when the module is loaded, before any test: its report must fail the run.
# (A leak's stack stops in the interpreter, which is built without frame pointers.)
PLANTS = {
    "overflow": ("""
__attribute__((constructor)) static void planted(void) {
    char *p = PyMem_Malloc(8); volatile int i = 8; p[i] = 1; PyMem_Free(p); }
""", ["ERROR: AddressSanitizer: heap-buffer-overflow", "in planted rules/_native.c:"]),
    "leak": ("""
__attribute__((constructor)) static void planted(void) {
    (void)PyUnicode_FromString("a planted leak: this str loses its only reference"); }
""", ["ERROR: LeakSanitizer: detected memory leaks", "in PyUnicode_New"]),
    "undefined": ("""
__attribute__((constructor)) static void planted(void) {
    volatile int64_t x = INT64_MAX; volatile int64_t y = x + 1; (void)y; }
""", ["runtime error: signed integer overflow", "in planted rules/_native.c:"]),
}


@pytest.mark.parametrize("kind", PLANTS)
def test_a_planted_fault_fails_the_run_with_its_report(kind, tmp_path):
    source, report = PLANTS[kind]
    plant = tmp_path / "plant.c"
    plant.write_text(source)
    done = sanitize("tests/test_values.py", examples=5, plant=plant)
    assert done.returncode != 0, done.stderr[-5000:]
    for line in report:
        assert line in done.stderr, done.stderr[-5000:]
    assert "sanitize: 1 log(s) with a sanitizer report" in done.stderr
