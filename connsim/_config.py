"""The one place that fixes how connsim compiles its Numba kernels.

Kernels are boolean/integer graph code: no fastmath is needed and none is used, so results are
bit-identical across thread counts. ``njit`` is the serial variant, ``pnjit`` the parallel one
(loops written with ``prange`` over independent rows that write to disjoint slots). All cache
compiled code on disk so that only the first run of a fresh install pays for compilation.

The trainer's float sums are the one exception: ``sum_njit`` lets a reduction be reassociated,
so that it is vectorised. That changes the last bits of a sum, as NumPy's own pairwise sums differ
from a sequential one; the kernels are tested against NumPy within rounding.
"""

import numba

njit = numba.njit(cache=True, nogil=True)
pnjit = numba.njit(cache=True, nogil=True, parallel=True)
sum_njit = numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
prange = numba.prange
