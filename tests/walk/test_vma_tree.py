"""VMATree, the one VMA index of an mm: every operation against a plain
sorted list searched linearly, on random sequences (hypothesis)."""

import pytest
from hypothesis import given, settings, strategies as st

from pgwalk.constants import PAGE_SIZE
from pgwalk.walker import VMA
from pgwalk.walker.vma import VMATree

P = PAGE_SIZE


def naive_find(vmas, addr):
    return next((v for v in sorted(vmas, key=lambda v: v.vm_start) if v.vm_end > addr), None)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["insert", "remove", "split", "merge", "resize"]),
                          st.integers(0, 63), st.integers(1, 8)), max_size=60),
       st.lists(st.integers(0, 80), min_size=1, max_size=10))
def test_tree_agrees_with_a_linear_list(steps, probes):
    tree, vmas = VMATree(), []
    for op, page, n in steps:
        ordered = sorted(vmas, key=lambda v: v.vm_start)
        if op == "insert":
            v = VMA(page * P, (page + n) * P)
            if any(o.vm_start < v.vm_end and v.vm_start < o.vm_end for o in vmas):
                with pytest.raises(ValueError, match="overlaps"):
                    tree.insert(v)
            else:
                tree.insert(v)
                vmas.append(v)
        elif not ordered:
            continue
        elif op == "remove":
            v = ordered[page % len(ordered)]
            tree.remove(v)
            vmas.remove(v)
        elif op == "split":
            v = ordered[page % len(ordered)]
            pages = (v.vm_end - v.vm_start) // P
            if pages < 2:
                continue
            addr = v.vm_start + (1 + page % (pages - 1)) * P
            hi = VMA(addr, v.vm_end)
            tree.split(v, hi)
            vmas.append(hi)
            assert v.vm_end == addr
        elif op == "merge":
            i = page % len(ordered)
            if i + 1 >= len(ordered):
                continue
            a, b = ordered[i], ordered[i + 1]
            if a.vm_end != b.vm_start:
                with pytest.raises(ValueError):
                    tree.merge(a, b)
                continue
            tree.merge(a, b)
            vmas.remove(b)
        elif op == "resize":
            i = page % len(ordered)
            v = ordered[i]
            end = v.vm_end + (n - 4) * P
            limit = ordered[i + 1].vm_start if i + 1 < len(ordered) else 1 << 47
            if v.vm_start < end <= limit:
                tree.resize(v, end)
            else:
                with pytest.raises(ValueError):
                    tree.resize(v, end)
        ordered = sorted(vmas, key=lambda v: v.vm_start)
        assert list(tree) == ordered
        assert tree.check(None) is None
    ordered = sorted(vmas, key=lambda v: v.vm_start)
    for page in probes:
        addr = page * P
        assert tree.find(addr) is naive_find(vmas, addr)
        want = [v for v in ordered if v.vm_start < addr + 4 * P and v.vm_end > addr]
        assert tree.range(addr, addr + 4 * P) == want
    for i, v in enumerate(ordered):
        assert tree.prev(v) is (ordered[i - 1] if i else None)
        assert tree.next(v) is (ordered[i + 1] if i + 1 < len(ordered) else None)


def test_a_vma_not_in_the_tree_is_refused():
    tree = VMATree()
    tree.insert(VMA(0, 4 * P))
    with pytest.raises(ValueError, match="not in this tree"):
        tree.remove(VMA(0, 4 * P))


def test_check_reports_an_index_out_of_step():
    tree = VMATree()
    tree.insert(VMA(0, 4 * P))
    tree.insert(VMA(8 * P, 12 * P))
    tree[0].vm_end = 5 * P            # edited behind the tree's back
    assert "index out of date" in tree.check(None)
