"""Helpers shared by the tests (imported as ``helpers``; pytest puts tests/
on ``sys.path`` through ``pythonpath`` in pyproject.toml):

* ``support``: scripted callbacks, table dumps, the golden-trace adapter;
* ``garbage``: random garbage page tables and walks over them;
* ``live_kernel``: the live-kernel runner and the model's side of a step;
* ``scenarios``: random scenarios for the live-kernel differential;
* ``image_gen``: random physical-memory images for the image walks."""
