"""What the LiME and AVML readers share: ranges of physical memory, each
announced by a header, sorted and checked disjoint on open, looked up by
address, and the whole frames they hold."""

from bisect import bisect_right

from .errors import ImageError


class RangeStore:
    """A store whose ``ranges`` are ``(start, end, ...)`` tuples (``end``
    exclusive), sorted and disjoint; the rest of each tuple is the
    reader's."""

    def _set_ranges(self, name, found):
        """``found``: ``[(start, end, header offset, *rest)]`` in file order.
        Sorted; two that overlap are an ImageError naming both headers;
        kept as ``(start, end, *rest)``."""
        found = sorted(found)
        if not found:
            raise ImageError(f"{self.path}: no {name} range")
        for (a, b, ha, *_), (c, _, hc, *_) in zip(found, found[1:]):
            if c < b:
                raise ImageError(f"{self.path}: {name} ranges overlap: [{a:#x}, {b:#x}) (header at offset "
                                 f"{ha:#x}) and one from {c:#x} (header at offset {hc:#x})")
        self.ranges = [(a, b, *rest) for a, b, _, *rest in found]
        self._starts = [r[0] for r in self.ranges]

    def _range(self, pa, n):
        """The range holding all of ``[pa, pa + n)``, or None."""
        i = bisect_right(self._starts, pa) - 1
        if i >= 0 and pa + n <= self.ranges[i][1]:
            return self.ranges[i]
        return None

    def present(self):
        """Sorted (first pfn, frames) runs of the whole frames held: one a range."""
        out = []
        for a, b, *_ in self.ranges:
            lo, hi = (a + 4095) >> 12, b >> 12
            if hi > lo:
                out.append((lo, hi - lo))
        return out
