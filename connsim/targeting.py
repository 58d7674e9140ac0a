"""Effective targeting: prune until the *effective* density reaches a target (SPEC 6).

With nested masks (an order from :mod:`connsim.orders`), the effective density never rises as
weights are removed, so the smallest number of pruned weights whose effective density is at most
the target is found by bisection over the kept count, one effective-mask pass per probe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .architectures import Architecture
from .measures import Measurement, measure


@dataclass(frozen=True)
class TargetResult:
    """Masks that reach an effective-density target, and how they were found.

    Attributes
    ----------
    masks : dict
        The masks at ``kept`` kept weights.
    kept : int
        Kept weights (or groups, for a group order); keeping one more would exceed the target.
    measurement : Measurement
        Direct and effective counts of ``masks``.
    target : float
        The requested effective density.
    probes : int
        Effective-mask evaluations made.
    """

    masks: dict
    kept: int
    measurement: Measurement
    target: float
    probes: int


def target_effective(arch: Architecture, order, density: float, *, level: str = "channel",
                     progress=None) -> TargetResult:
    """Prune along a nested order until the effective density is at most ``density``.

    Parameters
    ----------
    arch : Architecture
    order : GlobalOrder or LayerwiseOrder
        Any object with ``total`` (weights or groups) and ``masks(kept) -> dict`` (weight masks)
        whose masks are nested in ``kept``.
    density : float
        Target effective density D*.
    level : {'channel', 'position'}
        Level of the effective masks.
    progress : callable, optional
        Called as ``progress(probes, lo, hi)`` after every probe.

    Returns
    -------
    TargetResult
        The largest kept count ``K`` with effective density <= D*: the smallest number of pruned
        weights that reaches the target. The achieved effective density is reported exactly; it
        meets the target up to the discrete jump that removing one more weight causes.

    Notes
    -----
    Since effective <= direct, ``K = floor(D* N)`` always qualifies, so the search runs over
    ``[floor(D* N), N]``: about ``log2((1 - D*) N)`` probes, each one O(nnz) effective-mask pass.

    Examples
    --------
    >>> from connsim import get_arch
    >>> from connsim.sampling import random_order
    >>> arch = get_arch("lenet-300-100")
    >>> res = target_effective(arch, random_order(arch, rng=0), 0.001)
    >>> res.measurement.effective_density <= 0.001 < res.measurement.density
    True
    """
    if not 0.0 <= density <= 1.0 or math.isnan(density):
        raise ValueError(f"target effective density must lie in [0, 1], got {density}")
    total = order.total
    probes = 0

    def probe(kept):
        nonlocal probes
        probes += 1
        masks = order.masks(kept)
        return masks, measure(arch, masks, level=level)

    limit = density * arch.total_params  # effective weights allowed
    # keeping floor(limit) single weights always qualifies (effective <= direct); an order over
    # larger groups (kernels, channels) gets no such shortcut
    lo = math.floor(limit) if total == arch.total_params else 0
    hi = total + 1  # exclusive; total itself may qualify
    best = None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        masks, m = probe(mid)
        if m.effective <= limit:
            lo, best = mid, (masks, m)
        else:
            hi = mid
        if progress is not None:
            progress(probes, lo, hi)
    if best is None:
        best = probe(lo)
    return TargetResult(best[0], lo, best[1], float(density), probes)
