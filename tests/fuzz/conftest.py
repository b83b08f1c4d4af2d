"""Hypothesis settings for the fuzz tests: one profile, so `make test` stays within a minute.

`PLAZA_FUZZ=long` runs every property with twenty times the examples (a nightly or a
pre-release run); the default keeps each property to a few seconds. The deadline is there to
catch a hang (a parser looping on a lying length), not to time anything: it is generous
because this machine runs other tests at the same time.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": timedelta(seconds=5),
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,  # a failure prints the @reproduce_failure blob to replay it
}
settings.register_profile("plaza", max_examples=150, **_COMMON)
settings.register_profile("long", max_examples=3000, **_COMMON)
settings.load_profile("long" if os.environ.get("PLAZA_FUZZ") == "long" else "plaza")
