"""Shared test configuration.  The helpers (tests/helpers/) are imported as
``helpers`` through pytest's ``pythonpath = ["tests"]`` (pyproject.toml);
the test folders have no ``__init__.py``, so pytest's default import mode
never puts the repository root, and the source ``pgwalk/`` in it, on
``sys.path`` ahead of the installed package."""
import os

from hypothesis import settings

# Hypothesis profiles.  Every other hypothesis test here pins its own
# max_examples/deadline/derandomize, so these only shape the stateful tests
# (tests/process/test_state_machine.py): "default" keeps that file quick;
# HYPOTHESIS_PROFILE=long runs thousands of sequences of up to 100 steps.
settings.register_profile("default", max_examples=50, stateful_step_count=30, deadline=None,
                          derandomize=True, database=None)
settings.register_profile("long", max_examples=2000, stateful_step_count=100, deadline=None,
                          derandomize=False, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
