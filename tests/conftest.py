"""Fixtures shared by several test folders."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: the models and layers in these tests are tiny, and
    extra threads only add contention on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Hypothesis profiles: "ci" (the default) bounds the fuzz tests (tests/test_fuzz.py) for the
# normal suite and derandomizes them, so `make test` tries the same cases on every machine;
# "long" tries many more, freshly drawn cases on demand:
#     HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/test_fuzz.py
# Tests that pin max_examples themselves keep their own count.
_FUZZ_SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow,
                                                              HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=200, derandomize=True, **_FUZZ_SETTINGS)
settings.register_profile("long", max_examples=2000, **_FUZZ_SETTINGS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
