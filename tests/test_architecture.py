"""The package's import graph: no cycle (deferred imports included) and the
layering of docs/architecture.md.

The graph is read from the sources (AST for Python, the import and cimport
lines of Cython files), so an import hidden inside a function counts as much
as one at the top of a module."""

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "pgwalk"

# What each room may import, besides itself.  The walker knows nothing of
# the process model and images; they reach it only through its public names
# (``pgwalk.walker`` and its modules without a leading underscore) and its
# C contract (cimports of ``pgwalk.walker._core`` / ``_entries`` /
# ``_constants``, and the batched walker's ``_ptrange``).
BASE = {"pgwalk.constants", "pgwalk.entries"}
C_CONTRACT = {"pgwalk.walker._core", "pgwalk.walker._entries", "pgwalk.walker._constants",
              "pgwalk.walker._ptrange"}


def room(mod):
    """The room a module belongs to: walker, process, image, base or face."""
    parts = mod.split(".")
    if mod in BASE:
        return "base"
    if len(parts) > 1 and parts[1] in ("walker", "process", "image"):
        return parts[1]
    return "face"     # pgwalk itself, its compatibility names, internal, _examples


def module_name(path, root):
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(mod, is_pkg, level, target):
    """The absolute name of a relative import ``from <level dots><target>``."""
    if level == 0:
        return target
    base = mod.split(".")
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


CY_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+c?import\s+([^\n#]+)|c?import\s+([\w., ]+))", re.M)


def imports(path, mod, modules):
    """The package modules that ``path`` (module ``mod``) imports, each as
    (target, kind) with kind "import" or "cimport"."""
    is_pkg = path.name.startswith("__init__.")
    src = path.read_text()
    out = set()

    def add(name, kind, names=()):
        # ``from X import y``: y may be a submodule of X
        if (name == "pgwalk" or name.startswith("pgwalk.")) and name not in modules:
            out.add((name, "missing"))
            return
        found = False
        for n in names:
            if f"{name}.{n}" in modules:
                out.add((f"{name}.{n}", kind))
                found = True
        if not found or name in modules and any(f"{name}.{n}" not in modules for n in names):
            if name in modules:
                out.add((name, kind))

    if path.suffix == ".py":
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                for a in node.names:
                    add(a.name, "import")
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, is_pkg, node.level, node.module or "")
                add(target, "import", [a.name for a in node.names])
    else:
        for m in CY_IMPORT.finditer(src):
            line = m.group(0)
            kind = "cimport" if "cimport" in line else "import"
            if m.group(1):
                names = [n.strip(" ()") for n in m.group(2).split(",")]
                add(m.group(1), kind, [n for n in names if n and n != "*"])
            else:
                for n in m.group(3).split(","):
                    add(n.strip().split(" as ")[0], kind)
    out.discard((mod, "import"))
    out.discard((mod, "cimport"))
    return out


def graph(root=PKG):
    """{module: {(imported module, kind)}} for every .py/.pyx/.pxd below ``root``."""
    files = [p for p in root.rglob("*") if p.suffix in (".py", ".pyx", ".pxd")]
    modules = {module_name(p, root) for p in files}
    g = {}
    for p in files:
        m = module_name(p, root)
        g.setdefault(m, set()).update(imports(p, m, modules))
    return g


def cycles(g):
    """Every import cycle of the graph (Python imports; a .pxd's cimport of
    another is resolved at compile time), as lists of modules."""
    edges = {m: {t for t, kind in deps if kind == "import"} for m, deps in g.items()}
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))
    for v in sorted(edges):
        if v not in index:
            strong(v)
    # a package's __init__ importing its own submodules is not a cycle with
    # them unless a submodule imports the package's __init__ back
    return found


def is_package_parent(a, b):
    return b.startswith(a + ".")


def layering_violations(g):
    """Imports against the layering, as readable strings."""
    bad = []
    for mod, deps in sorted(g.items()):
        src = room(mod)
        for target, kind in sorted(deps):
            dst = room(target)
            if src == "base":
                if dst != "base":
                    bad.append(f"{mod} -> {target}: constants and entries import nothing else")
                continue
            if dst in (src, "base") or src == "face":
                continue
            if src == "walker":
                bad.append(f"{mod} -> {target}: the walker imports neither the process model nor images")
            elif dst == "walker":
                private = any(p.startswith("_") for p in target.split(".")[2:])
                if private and not (kind == "cimport" and target in C_CONTRACT):
                    bad.append(f"{mod} -> {target}: only the walker's public names and its .pxd contract")
            elif dst == "face":
                bad.append(f"{mod} -> {target}: a room does not import the package's public face")
            else:
                bad.append(f"{mod} -> {target}: {src} does not use {dst}")
    return bad


def test_every_import_of_the_package_resolves():
    """An import of a pgwalk module that does not exist (a deferred one
    fails only when its function runs) is caught here."""
    missing = sorted((m, t) for m, deps in graph().items() for t, kind in deps if kind == "missing")
    assert missing == []


def test_the_package_has_no_import_cycle():
    g = graph()
    assert len(g) > 30, sorted(g)       # the whole package was read
    assert cycles(g) == []


def test_imports_follow_the_layering():
    assert layering_violations(graph()) == []


def _plant(tmp_path, files):
    root = tmp_path / "pgwalk"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_a_planted_deferred_import_cycle_is_found(tmp_path):
    root = _plant(tmp_path, {
        "__init__.py": "",
        "process/__init__.py": "",
        "process/syscalls.py": "from .mm import MM\n",
        "process/mm.py": "def fork():\n    from . import syscalls\n",
    })
    assert cycles(graph(root)) == [["pgwalk.process.mm", "pgwalk.process.syscalls"]]


@pytest.mark.parametrize("files, expected", [
    ({"walker/api.py": "from ..process import MM\n"}, "the walker imports neither"),
    ({"image/physimage.py": "from ..process.mm import MM\n"}, "image does not use process"),
    ({"process/mm.py": "from ..walker._args import check_mm\n"}, "only the walker's public names"),
    ({"image/_image.pyx": "from pgwalk.walker._core cimport PageTables\n"}, None),
    ({"process/mm.py": "from .. import walker\n"}, None),
    ({"constants.py": "from .walker import api\n"}, "constants and entries import nothing else"),
])
def test_a_planted_layering_violation_is_found(tmp_path, files, expected):
    base = {"__init__.py": "", "constants.py": "", "walker/__init__.py": "", "walker/_core.pxd": "",
            "walker/_args.py": "", "walker/api.py": "", "process/__init__.py": "",
            "process/mm.py": "", "image/__init__.py": "", "image/physimage.py": "",
            "image/_image.pyx": ""}
    bad = layering_violations(graph(_plant(tmp_path, {**base, **files})))
    if expected is None:
        assert bad == []
    else:
        assert len(bad) == 1 and expected in bad[0], bad


def test_the_python_and_c_views_of_the_constants_agree():
    """Levels, actions, errnos, the table size and the zero pages are
    defined once for C (``walker/_constants.pxd``) and once for Python
    (``pgwalk.constants``); the compiled core reports its view."""
    from pgwalk import constants
    from pgwalk.walker import _core
    from pgwalk.walker import _ptrange
    assert _core.C_CONSTANTS, "the core exposes its C constants"
    assert _ptrange.C_CONSTANTS, "the batched walker exposes its C constants"
    for name, value in {**_core.C_CONSTANTS, **_ptrange.C_CONSTANTS}.items():
        assert getattr(constants, name) == value, name


def test_the_python_and_c_views_of_the_pagemap_bits_agree():
    """pagemap's word bits: ``pgwalk.constants`` (Python) and the process
    model's C ops (``_mmops.C_PAGEMAP_BITS``)."""
    from pgwalk import constants
    from pgwalk.process import _mmops
    assert _mmops.C_PAGEMAP_BITS
    for name, value in _mmops.C_PAGEMAP_BITS.items():
        assert getattr(constants, name) == value, name


def test_page_flags_are_defined_once():
    """The process model's page flags come from the C enum (``_mmops.pxd``)
    and are not assigned anywhere else in the package."""
    from pgwalk.process import _mmops, objects
    for flag in _mmops.PageFlag:
        assert getattr(objects, flag.name) == flag.value
    assigned = re.compile(r"^\s*PF_[A-Z_]+\s*(,\s*PF_[A-Z_]+\s*)*=\s*\d", re.M)
    offenders = [str(p) for p in PKG.rglob("*.p[xy]*")      # .py .pyx .pxd (not the .pyi stub)
                 if p.suffix != ".pyi" and assigned.search(p.read_text())]
    assert offenders == [str(PKG / "process" / "_mmops.pxd")]


def test_page_mask_is_defined_once():
    assigned = re.compile(r"^\s*PAGE_MASK\s*=", re.M)
    offenders = [p.name for p in PKG.rglob("*.py*") if assigned.search(p.read_text())]
    assert offenders == ["constants.py"]


def test_no_module_assigns_a_name_of_the_constants_again():
    """A module-level assignment to a name ``pgwalk.constants`` defines
    (PMD_SIZE, LEVEL_NAMES, PM_PRESENT, ...) anywhere else in the package is
    a second definition: import it instead."""
    from pgwalk import constants
    names = {n for n in dir(constants) if n.isupper()}
    offenders = []
    for p in PKG.rglob("*.py"):
        if p.name == "constants.py" or "_examples" in p.parts:
            continue
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    offenders += [f"{p.relative_to(PKG)}:{node.lineno} {n.id}" for n in ast.walk(target)
                                  if isinstance(n, ast.Name) and n.id in names]
    assert offenders == []


def test_the_old_import_paths_hand_out_the_new_objects():
    """The compatibility modules keep every earlier import path working,
    with the very objects of the rooms (not copies)."""
    import importlib
    pairs = [("pgwalk._core", "pgwalk.walker._core", ["PageTables", "CFunc", "MMWalk", "batch"]),
             ("pgwalk._builtin", "pgwalk.walker._builtin", ["MincoreOp", "CountOp"]),
             ("pgwalk.reference", "pgwalk.walker.reference", ["walk_page_range", "walk_page_range_novma"]),
             ("pgwalk.internal", "pgwalk.walker.internal", ["walk_page_range_mm"]),
             ("pgwalk.ptdump", "pgwalk.walker.ptdump", ["x86_64_markers"]),
             ("pgwalk.lowlevel", "pgwalk.walker.lowlevel", ["LowLevelCallable", "SIGNATURES"]),
             ("pgwalk.ops", "pgwalk.walker.ops", ["MMWalkOps"]),
             ("pgwalk.mm", "pgwalk.process", ["MM", "init_mm", "VMA", "InvariantError"])]
    for old, new, names in pairs:
        a, b = importlib.import_module(old), importlib.import_module(new)
        for n in names:
            assert getattr(a, n) is getattr(b, n), (old, n)
