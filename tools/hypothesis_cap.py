"""A pytest plugin that caps every Hypothesis property at $HYPOTHESIS_MAX_EXAMPLES examples.

The properties fix their own counts (1,000) in @settings, which a Hypothesis profile
cannot lower; a run that is slow per example (tools/sanitize.sh under AddressSanitizer)
loads this with `-p tools.hypothesis_cap` to run the same properties on fewer examples.
Without the variable it changes nothing.
"""

from __future__ import annotations

import os

from hypothesis import settings

VARIABLE = "HYPOTHESIS_MAX_EXAMPLES"


def pytest_collection_modifyitems(items):
    value = os.environ.get(VARIABLE, "").strip()
    if not value:
        return
    cap = int(value)
    if cap < 1:
        raise ValueError(f"{VARIABLE} must be at least 1, not {value}")
    for item in items:
        test = getattr(item, "obj", None)
        # what @given's wrapper reads when it runs, so a smaller value here is the count
        current = getattr(test, "_hypothesis_internal_use_settings", None)
        if current is not None and current.max_examples > cap:
            test._hypothesis_internal_use_settings = settings(current, max_examples=cap)
