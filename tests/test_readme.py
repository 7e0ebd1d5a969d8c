"""The README's examples run as written (against the installed package)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 8
    env = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), env)
    assert env["rc"] == 0
    assert env["found"]
