"""Coverage-guided fuzzing (atheris, libFuzzer) of tests/fuzz/harness.py's `run`; the
project's own modules are instrumented, the libraries under them are not.

Long campaign:  nice -n 10 .venv/bin/python tests/fuzz/fuzz_pipeline.py -runs=1000000 \
                    -max_len=4096 /tmp/fuzz-corpus tests/fuzz/corpus
Replay inputs:  .venv/bin/python tests/fuzz/fuzz_pipeline.py crash-<sha1> ...
"""

import os
import sys

import atheris

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

with atheris.instrument_imports(include=["rules", "schemas", "storage", "transforms",
                                         "tests.fuzz"]):
    from tests.fuzz.harness import run

if __name__ == "__main__":
    atheris.Setup(sys.argv, run)
    atheris.Fuzz()
