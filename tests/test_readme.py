"""The README's examples run as written (against the installed package)."""

import code
import contextlib
import io
import re
import sys
import traceback
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


class _PasteConsole(code.InteractiveConsole):
    """The interactive interpreter, with its error reports recorded instead
    of printed: what a user sees after pasting into ``python``'s prompt."""

    def __init__(self):
        super().__init__(filename="<README paste>")
        self.errors = []

    def showsyntaxerror(self, filename=None, **kwargs):
        self.errors.append("".join(traceback.format_exception_only(*sys.exc_info()[:2])))

    def showtraceback(self):
        self.errors.append(traceback.format_exc())


def test_readme_python_blocks_paste_into_the_interactive_prompt():
    """Each python block, in order, pasted line by line into the REPL (one
    interpreter for the whole README, as a reader working down the page):
    an indented block must end with a blank line before unindented code, and
    no block may fail because of what an earlier one left behind."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    console = _PasteConsole()
    with contextlib.redirect_stdout(io.StringIO()):
        for i, block in enumerate(blocks):
            more = False
            for line in block.splitlines():
                more = console.push(line)
                assert not console.errors, f"python block {i + 1}, at line {line!r}:\n{console.errors[0]}"
            if more:                    # the Enter that ends a pasted compound statement
                console.push("")
            assert not console.errors, f"python block {i + 1} (its end):\n{console.errors[0]}"
