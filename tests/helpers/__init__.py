"""Helpers shared by the tests (imported as ``helpers``; pytest puts tests/
on ``sys.path`` through ``pythonpath`` in pyproject.toml):

* ``support``: scripted callbacks, table dumps, the golden-trace adapter;
* ``garbage``: random garbage page tables and walks over them;
* ``live_kernel``: the names the tests use from the live differential
  (``pgwalk.process.conformance``: runner, model side, step format) and
  two checks of their own;
* ``regressions``: minimised scenarios that once differed from the kernel;
* ``image_gen``: random physical-memory images for the image walks."""
