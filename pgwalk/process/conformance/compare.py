"""One scenario on both sides, where they first differ, and the smallest
step list that still differs (delta debugging over the steps)."""

from . import live
from .model import model_final, run_model

_FLAG_NAMES = ((63, "present"), (62, "swap"), (61, "file"), (58, "guard"), (56, "exclusive"))
_MAX_PAGES = 8     # differing pages shown per observation


def _thp_collapses():
    try:
        with open("/proc/vmstat") as f:
            return sum(int(line.split()[1]) for line in f
                       if line.startswith(("thp_collapse_alloc", "thp_file_alloc")))
    except OSError:
        return 0


def run_both(steps, npages):
    """(model observations, live observations); the live run is repeated if
    khugepaged collapsed something meanwhile (not part of the scenario)."""
    _, model = run_model(steps, npages)
    for _ in range(3):
        before = _thp_collapses()
        _, obs = live.run_live(steps, npages)
        if _thp_collapses() == before:
            break
    return model, obs


def run_both_all(steps, npages):
    """Like ``run_both``, with the final smaps figures and mincore bytes of
    the region's VMAs: ((model observations, model final), (live
    observations, live final)).  A model that raises (an errno it should not
    give is an observation; an exception is not) gives ``("model error",
    text)`` in place of its observations."""
    try:
        mm, model = run_model(steps, npages)
        mfinal = model_final(mm, npages)
    except Exception as e:     # the model broke: that is a difference too
        model, mfinal = ("model error", f"{type(e).__name__}: {e}"), None
    for _ in range(3):
        before = _thp_collapses()
        obs, lfinal = live.run_live_all(steps, npages)
        if _thp_collapses() == before:
            break
    return (model, mfinal), (obs, lfinal)


def flag_names(w):
    """The pagemap flags of ``w`` by name ("present,exclusive"; "none")."""
    return ",".join(n for b, n in _FLAG_NAMES if w >> b & 1) or "none"


def _pages(m, k):
    diff = [(j, a, b) for j, (a, b) in enumerate(zip(m, k)) if a != b]
    return {"pages": len(diff),
            "model": [[j, flag_names(a)] for j, a, _ in diff[:_MAX_PAGES]],
            "kernel": [[j, flag_names(b)] for j, _, b in diff[:_MAX_PAGES]]}


def _result_difference(step, m, k):
    """What differs between two results of ``step`` (fork: the child's
    pagemap; a child step: its result, pagemap and VMAs)."""
    if step[0] == "fork" and isinstance(m, list) and isinstance(k, list):
        return {"what": "child pagemap after fork", **_pages(m, k)}
    if step[0] == "child" and isinstance(m, tuple) and isinstance(k, tuple):
        for name, a, b in zip(("child result", "child pagemap", "child VMAs"), m, k):
            if a != b:
                if name == "child pagemap":
                    return {"what": name, **_pages(a, b)}
                return {"what": name, "model": a, "kernel": b}
    return {"what": "result", "model": m, "kernel": k}


def first_difference(steps, model, kernel):
    """The first observation on which the model and the kernel differ, as a
    JSON-ready dict (``step``: its index, or "final" for the smaps and
    mincore at the end; ``what``; ``model``; ``kernel``), or None.
    ``model`` and ``kernel`` are (observations, final) pairs."""
    (mobs, mfinal), (kobs, kfinal) = model, kernel
    if isinstance(mobs, tuple) and mobs and mobs[0] == "model error":
        return {"step": None, "what": "model error", "model": mobs[1], "kernel": None}
    for i, (st, m, k) in enumerate(zip(steps, mobs, kobs)):
        if m == k:
            continue
        out = {"step": i, "at": list(st)}
        if m[0] != k[0]:
            out.update(_result_difference(st, m[0], k[0]))
        elif m[1] != k[1]:
            out.update({"what": "pagemap", **_pages(m[1], k[1])})
        else:
            out.update({"what": "VMAs", "model": m[2], "kernel": k[2]})
        return out
    if mfinal is not None and kfinal is not None and mfinal != kfinal:
        (mv, mmc), (kv, kmc) = mfinal, kfinal
        if len(mv) != len(kv):
            return {"step": "final", "what": "smaps VMAs", "model": mv, "kernel": kv}
        for a, b in zip(mv, kv):
            if a != b:
                keys = [x for x in a if a.get(x) != b.get(x)]
                where = f"{a['start']}-{a['end']}"
                return {"step": "final", "what": f"smaps of VMA {where}",
                        "model": {x: a.get(x) for x in keys}, "kernel": {x: b.get(x) for x in keys}}
        for a, b, v in zip(mmc, kmc, mv):
            if a != b:
                return {"step": "final", "what": f"mincore of VMA {v['start']}-{v['end']}",
                        "model": a, "kernel": b}
    return None


def describe(steps, model, live_obs):
    """The first difference of two observation lists as text (for a
    failing test's message), or "identical"."""
    for i, (st, m, lv) in enumerate(zip(steps, model, live_obs)):
        if m != lv:
            out = [f"first difference at step {i}: {st}",
                   *(f"   {s}" for s in steps[:i + 1])]
            if m[0] != lv[0]:
                out.append(f"   result: model {m[0] if not isinstance(m[0], list) else 'child pagemap'}"
                           f" live {lv[0] if not isinstance(lv[0], list) else 'child pagemap'}")
                if isinstance(m[0], list):
                    out.append("   child pagemap: " + str([(j, hex(a), hex(b)) for j, (a, b)
                                                          in enumerate(zip(m[0], lv[0])) if a != b][:8]))
            if m[1] != lv[1]:
                out.append("   pagemap (page, model, live): " + str(
                    [(j, hex(a), hex(b)) for j, (a, b) in enumerate(zip(m[1], lv[1])) if a != b][:8]))
            if m[2] != lv[2]:
                out.append(f"   VMAs model {m[2]}\n   VMAs live  {lv[2]}")
            return "\n".join(out)
    return "identical"


def minimise(steps, differs, max_runs=300):
    """A smallest list of ``steps`` (a subsequence, in order) for which
    ``differs(steps)`` still holds: ddmin-style removal of halves, quarters,
    ... down to single steps, until no one step can go (or ``max_runs``
    calls of ``differs`` are spent).  ``steps`` must differ."""
    steps = list(steps)
    runs = 0
    n = 2
    while len(steps) >= 2 and runs < max_runs:
        size = -(-len(steps) // n)
        removed = False
        for start in range(0, len(steps), size):
            rest = steps[:start] + steps[start + size:]
            if not rest:
                continue
            runs += 1
            if differs(rest):
                steps = rest
                n = max(n - 1, 2)
                removed = True
                break
            if runs >= max_runs:
                break
        if not removed:
            if size == 1:
                break
            n = min(2 * n, len(steps))
    return steps
