"""The snappy framing format's chunk headers read in C, for the index an
AVML dump builds on open (formats/avml.py): a large machine's dump has a
chunk per 64 KiB, millions of them.

``walk`` takes only the chunks that need no judgement -- a well-formed data
chunk that fits the range, the stream identifier, padding and skippable
chunks -- and stops at any other, which the Python reader then handles
(and names in its error): the index and the errors are the Python loop's.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, int64_t

cnp.import_array()

cdef enum:
    MAX_DATA = 1 << 16             # bytes of data one chunk may hold


def walk(const uint8_t[::1] m, Py_ssize_t pos, Py_ssize_t size, int64_t start, int64_t done,
         int64_t want, Py_ssize_t cap=1 << 16):
    """From the chunk at offset ``pos`` of ``m`` (``size`` bytes), whose
    range begins at physical address ``start`` and has ``done`` of its
    ``want`` bytes: chunks while they are ordinary, until the range is
    whole or ``cap`` data chunks are taken.  Returns (pos, done, pa, nbytes,
    at, stop): where it stopped, the bytes then done, and per data chunk
    taken (int64 arrays) its physical address, its data's length, the
    offset of its header and the end of its body."""
    cdef cnp.ndarray[cnp.int64_t, ndim=1] pa = np.empty(cap, dtype=np.int64)
    cdef cnp.ndarray[cnp.int64_t, ndim=1] nb = np.empty(cap, dtype=np.int64)
    cdef cnp.ndarray[cnp.int64_t, ndim=1] at = np.empty(cap, dtype=np.int64)
    cdef cnp.ndarray[cnp.int64_t, ndim=1] stop = np.empty(cap, dtype=np.int64)
    cdef Py_ssize_t k = 0, body, n, i, last
    cdef int64_t got
    cdef int kind, shift
    cdef bint ok
    if size > m.shape[0]:
        size = m.shape[0]
    with nogil:
        while done < want and k < cap and pos + 4 <= size:
            kind = m[pos]
            n = m[pos + 1] | (<Py_ssize_t>m[pos + 2] << 8) | (<Py_ssize_t>m[pos + 3] << 16)
            body = pos + 4
            if body + n > size:
                break
            if kind == 0xFF:
                if not (n == 6 and m[body] == 0x73 and m[body + 1] == 0x4E and m[body + 2] == 0x61
                        and m[body + 3] == 0x50 and m[body + 4] == 0x70 and m[body + 5] == 0x59):
                    break                              # not "sNaPpY"
            elif kind == 0x01 or kind == 0x00:
                if kind == 0x01:
                    if n < 4:
                        break
                    got = n - 4
                else:
                    if n <= 4:
                        break
                    got = 0                            # the varint preamble, at most 5 bytes
                    shift = 0
                    ok = False
                    last = min(body + n, body + 9)
                    i = body + 4
                    while i < last:
                        got |= <int64_t>(m[i] & 0x7F) << shift
                        shift += 7
                        if not (m[i] & 0x80):
                            ok = True
                            break
                        i += 1
                    if not ok:
                        break
                if got > MAX_DATA or done + got > want:
                    break
                if got:
                    pa[k] = start + done
                    nb[k] = got
                    at[k] = pos
                    stop[k] = body + n
                    k += 1
                done += got
            elif kind < 0x80:
                break                                  # reserved: the Python reader's error
            pos = body + n                             # padding, skippable: passed over
    return pos, done, pa[:k], nb[:k], at[:k], stop[:k]
