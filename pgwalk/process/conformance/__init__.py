"""The live differential: the same sequences of memory operations on this
machine's kernel and on ``MM``, compared observation by observation.

* ``steps.py``: the step format, what a step observes, a scenario as JSON;
* ``scenarios.py``: the random generators, one per kind (``KINDS``);
* ``model.py``: the steps on ``MM``;
* ``live.py``: the steps on the live kernel (ctypes, in a forked runner),
  and the probe for what this kernel can run (guard regions, pagemap);
* ``compare.py``: both sides, the first difference, the minimiser;
* ``cli.py``: ``python -m pgwalk conformance``.

``live`` is not imported here (it loads libc through ctypes): import it as
``pgwalk.process.conformance.live``."""

from .model import model_step, run_model, run_model_final
from .scenarios import KINDS
from .steps import FLAG_MASK, SMAPS_FIELDS

__all__ = ["FLAG_MASK", "KINDS", "SMAPS_FIELDS", "model_step", "run_model", "run_model_final"]
