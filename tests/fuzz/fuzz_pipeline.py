"""Coverage-guided fuzzing (atheris, libFuzzer) of tests/fuzz/harness.py's `run`; the
project's own modules are instrumented, the libraries under them and the harness are not.

Long campaign (a million inputs; one worker a core, each its own seed and half the runs,
both reading and adding to one corpus folder; `nice` leaves the machine to others):
    mkdir -p /tmp/fuzz-corpus /tmp/fuzz-artifacts
    nice -n 10 .venv/bin/python tests/fuzz/fuzz_pipeline.py -runs=500000 -seed=11 \
        -max_len=4096 -print_final_stats=1 -artifact_prefix=/tmp/fuzz-artifacts/ \
        /tmp/fuzz-corpus tests/fuzz/corpus > /tmp/fuzz-11.log 2>&1 &
    (the same with -seed=12 > /tmp/fuzz-12.log for the second core)
Short run (tests/test_fuzz.py's): -runs=20000 -max_total_time=50 -seed=1
Replay inputs:  .venv/bin/python tests/fuzz/fuzz_pipeline.py crash-<sha1> ...
"""

import os
import sys

import atheris

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

# only the project's modules are instrumented: the coverage the fuzzer follows is theirs,
# not the harness's choices nor Beam's or the standard library's code
with atheris.instrument_imports(include=["rules", "schemas", "storage", "transforms"]):
    from tests.fuzz.harness import run

if __name__ == "__main__":
    atheris.Setup(sys.argv, run)
    atheris.Fuzz()
