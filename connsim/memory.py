"""Memory checks before large allocations: a request that cannot fit says how much it needs.

A user who asks for 10^12 Monte Carlo samples or a network with 10^13 weights gets one clear
error before any work, not a ``MemoryError`` traceback (or a machine that swaps to a halt).
"""

from __future__ import annotations

import os


def physical_memory() -> int:
    """Bytes of physical memory on this machine (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def check_memory(nbytes: float, what: str, hint: str = "") -> None:
    """Raise ``MemoryError`` with a clear message if ``nbytes`` exceeds physical memory.

    Parameters
    ----------
    nbytes : float
        Estimated bytes the work will hold at once.
    what : str
        What needs it, e.g. ``"10^12 Monte Carlo samples of vgg-19"``.
    hint : str
        How to ask for less.
    """
    total = physical_memory()
    if total and nbytes > total:
        raise MemoryError(f"{what} needs about {_gib(nbytes)} of memory, more than this machine's "
                          f"{_gib(total)}" + (f"; {hint}" if hint else ""))
