"""The one place that fixes how connsim compiles its Numba kernels.

Kernels are boolean/integer graph code: no fastmath is needed and none is used,
so results are bit-identical across thread counts. ``njit`` is the serial
variant, ``pnjit`` the parallel one (loops written with ``prange`` over
independent rows that write to disjoint slots). Both cache compiled code on
disk so that only the first run of a fresh install pays for compilation.
"""

import numba

njit = numba.njit(cache=True, nogil=True)
pnjit = numba.njit(cache=True, nogil=True, parallel=True)
prange = numba.prange
