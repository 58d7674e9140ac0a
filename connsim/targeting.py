"""Effective targeting: prune until the *effective* density reaches a target (``docs/quotas.md``).

With nested masks (an order from :mod:`connsim.orders`), the effective density never rises as
weights are removed, so the smallest number of pruned weights whose effective density is at most
the target is found by bisection over the kept count, one effective-mask pass per probe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._validation import check_density, check_level
from .architectures import Architecture
from .measures import Measurement, measure

__all__ = [
    "TargetResult", "target_effective",
]


@dataclass(frozen=True)
class TargetResult:
    """Masks that reach an effective-density target, and how they were found.

    Attributes
    ----------
    masks : dict
        The masks at ``kept`` kept weights (or groups).
    kept : int
        Kept weights (or groups, for a group order).
    measurement : Measurement
        Direct and effective counts of ``masks``.
    target : float
        The requested effective density.
    probes : int
        Effective-mask evaluations made.
    met : bool
        Whether ``measurement`` meets the target with a connected network (or the target is 0).
    message : str or None
        Why the target was not met, when it was not.

    See Also
    --------
    target_effective : Computes it.

    Examples
    --------
    >>> from connsim import get_arch
    >>> from connsim.sampling import random_order
    >>> arch = get_arch("lenet-300-100")
    >>> res = target_effective(arch, random_order(arch, rng=0), 0.001)
    >>> res.kept > 266, res.probes, res.message
    (True, 18, None)
    """

    masks: dict
    kept: int
    measurement: Measurement
    target: float
    probes: int
    met: bool = True
    message: str | None = None


def target_effective(arch: Architecture, order, density: float, *, level: str = "channel",
                     progress=None) -> TargetResult:
    """Prune along a nested order until the effective density is at most ``density``.

    Parameters
    ----------
    arch : Architecture
    order : GlobalOrder or LayerwiseOrder
        Any object with ``total`` (weights or groups), ``kept_range() -> (k_min, k_max)`` (the
        kept counts it supports) and ``masks(kept) -> dict`` (weight masks) whose masks are
        nested in ``kept``.
    density : float
        Target effective density D*.
    level : {'channel', 'position'}
        Level of the effective masks.
    progress : callable, optional
        Called as ``progress(probes, lo, hi)`` after every probe.

    Returns
    -------
    TargetResult
        Normally the largest kept count ``K`` with effective density <= D*: the smallest number of
        pruned weights that reaches the target, reported exactly (it meets the target up to the
        discrete jump that removing one more weight causes). Two cases do not meet the target and
        say so in ``met`` and ``message``:

        * the effective density falls from above D* straight to 0 (a coarse order that cuts the
          network): the connected side of the jump is returned, above the target, rather than a
          disconnected network;
        * the order's quota rule is infeasible at low enough densities (``uniform+``): its
          sparsest valid masks are returned.

    See Also
    --------
    connsim.orders.GlobalOrder, connsim.orders.LayerwiseOrder : Orders to prune along.
    connsim.sampling.random_order : A random nested order.
    connsim.pruning.prune : ``target='effective'`` with any method.

    Notes
    -----
    Since effective <= direct, ``K = floor(D* N)`` always qualifies for a weight order, so the
    search runs over ``[floor(D* N), N]``: about ``log2((1 - D*) N)`` probes, each one O(nnz)
    effective-mask pass. A rule feasible only at some densities (``erk-redistribute``,
    ``uniform+``) restricts the search to its feasible kept counts.

    Examples
    --------
    >>> from connsim import get_arch
    >>> from connsim.sampling import random_order
    >>> arch = get_arch("lenet-300-100")
    >>> res = target_effective(arch, random_order(arch, rng=0), 0.001)
    >>> res.measurement.effective_density <= 0.001 < res.measurement.density, res.met
    (True, True)
    """
    density = check_density(density, "target effective density")
    check_level(level)
    probes = 0

    def probe(kept):
        nonlocal probes
        probes += 1
        masks = order.masks(kept)
        return masks, measure(arch, masks, level=level)

    limit = density * arch.total_params  # effective weights allowed
    k_min, k_max = order.kept_range()
    best = hi_masks = None
    # keeping floor(limit) single weights always qualifies (effective <= direct); an order over
    # larger groups (kernels, channels) gets no such shortcut
    if order.total == arch.total_params and k_min <= math.floor(limit) <= k_max:
        lo = math.floor(limit)
    else:
        lo = k_min
        best = probe(lo)
        if best[1].effective > limit:
            m = best[1]
            return TargetResult(best[0], lo, m, float(density), probes, False,
                                f"the target effective density {density:.6g} is below what the "
                                f"order's quota rule allows: its sparsest valid masks keep {lo} "
                                f"and reach effective density {m.effective_density:.6g}")
    hi = k_max + 1  # exclusive; k_max itself may qualify
    while hi - lo > 1:
        mid = (lo + hi) // 2
        masks, m = probe(mid)
        if m.effective <= limit:
            lo, best = mid, (masks, m)
        else:
            hi, hi_masks = mid, (masks, m)
        if progress is not None:
            progress(probes, lo, hi)
    if best is None:
        best = probe(lo)
    masks, m = best
    if m.disconnected and density > 0 and hi > k_max:
        return TargetResult(masks, lo, m, float(density), probes, False,
                            f"the order's quota rule allows at most {k_max} kept, and the "
                            f"network is disconnected there: effective density {density:.6g} "
                            "cannot be reached with a connected network")
    if m.disconnected and density > 0:  # hi <= k_max: hi was probed, and it is connected
        return TargetResult(
            hi_masks[0], hi, hi_masks[1], float(density), probes, False,
            f"effective density {density:.6g} cannot be reached with a connected network along "
            f"this order: it falls from {hi_masks[1].effective_density:.6g} (keeping {hi}) straight "
            f"to 0 (disconnected, keeping {lo}); the connected masks at "
            f"{hi_masks[1].effective_density:.6g} are returned")
    if lo == k_max < order.total and m.effective_density < density:
        return TargetResult(masks, lo, m, float(density), probes, False,
                            f"the order's quota rule allows at most {k_max} of {order.total} "
                            f"kept (density {k_max / order.total:.6g}); its densest valid masks "
                            f"reach effective density {m.effective_density:.6g}, below the target "
                            f"{density:.6g}")
    return TargetResult(masks, lo, m, float(density), probes)
