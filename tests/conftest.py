import os
import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# Hypothesis profiles.  Every other hypothesis test here pins its own
# max_examples/deadline/derandomize, so these only shape the stateful tests
# (tests/test_state_machine.py): "default" keeps that file quick;
# HYPOTHESIS_PROFILE=long runs thousands of sequences of up to 100 steps.
settings.register_profile("default", max_examples=50, stateful_step_count=30, deadline=None,
                          derandomize=True, database=None)
settings.register_profile("long", max_examples=2000, stateful_step_count=100, deadline=None,
                          derandomize=False, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
