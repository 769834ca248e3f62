"""Hypothesis profiles: "ci" (200 derandomized examples) when CI is set, else "dev" (100 examples)."""

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if "CI" in os.environ else "dev")
