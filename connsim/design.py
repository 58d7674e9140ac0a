"""Quota design: per-layer densities optimised with the exact theory under the direct budget.

Densities are parametrised as ``d_l = sigmoid(z_l + s)``; for every ``z`` the shift ``s`` is found by
a monotone root-find so that ``sum_l n_l d_l = D N`` holds exactly, which leaves an unconstrained
problem in ``z``. The objective is the theory of :mod:`connsim.theory` for Bernoulli masks:

* ``effective``: maximise the expected effective weights;
* ``connectivity``: minimise P(disconnected) (its logarithm, so that tiny probabilities still
  steer the search), breaking ties by expected effective weights.

The search starts from IGQ and uses a derivative-free Powell search (the objective is smooth but its
gradient is not available in closed form); the result is never worse than the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize
from scipy.special import expit, logit

from ._validation import check_choice, check_density, check_int
from .architectures import Architecture
from .quotas import Quota, kept_counts, quota
from .theory import Prediction, predict

__all__ = [
    "Design", "design_quota",
]


OBJECTIVES = ("effective", "connectivity")


def _budget_shift(z: np.ndarray, n: np.ndarray, target: float) -> float:
    def excess(s):
        return float((n * expit(z + s)).sum() - target)

    lo, hi = -50.0, 50.0
    while excess(lo) > 0:
        lo *= 2
    while excess(hi) < 0:
        hi *= 2
    return brentq(excess, lo, hi, xtol=1e-13, rtol=1e-15)


def _score(p: Prediction, objective: str) -> float:
    if objective == "effective":
        return -p.expected_effective_params
    # log P(disconnected), with the effective weights as a tie-breaker once it underflows
    return math.log(max(p.p_disconnected, 1e-300)) - 1e-9 * p.expected_effective_params


@dataclass(frozen=True)
class Design:
    """A designed quota and the theory at its densities.

    Attributes
    ----------
    quota : Quota
        The designed densities and exact kept counts (rule ``designed-OBJECTIVE``).
    prediction : Prediction
        The theory at the designed densities.
    objective : {'effective', 'connectivity'}
        What was optimised.
    evaluations : int
        Objective evaluations made.

    See Also
    --------
    design_quota : Computes it.

    Examples
    --------
    >>> from connsim import get_arch
    >>> d = design_quota(get_arch("mlp:20-10-5"), 0.2, maxfev=20)
    >>> d.quota.rule, int(d.quota.kept.sum()), d.objective
    ('designed-effective', 50, 'effective')
    """

    quota: Quota
    prediction: Prediction
    objective: str
    evaluations: int


def design_quota(arch: Architecture, density: float, *, objective: str = "effective",
                 start: str = "igq", maxfev: int | None = None, progress=None) -> Design:
    """Per-layer densities that optimise the theory's objective at global density ``density``.

    Parameters
    ----------
    arch : Architecture
    density : float
        Direct budget D (the designed counts sum to round(D N) exactly).
    objective : {'effective', 'connectivity'}
    start : str
        Quota rule to start from (default IGQ).
    maxfev : int, optional
        Objective evaluations allowed (default ``40 * layers``).
    progress : callable, optional
        Called as ``progress(evaluations, maxfev)`` after every objective evaluation.

    Returns
    -------
    Design

    See Also
    --------
    connsim.theory.predict : The objective's theory.
    connsim.quotas.quota : The built-in rules it is compared with.

    Examples
    --------
    >>> from connsim import get_arch
    >>> arch = get_arch("lenet-300-100")
    >>> d = design_quota(arch, 0.001, maxfev=60)
    >>> d.prediction.expected_effective_params >= predict(arch, quota(arch, "igq", 0.001)
    ...                                                   ).expected_effective_params
    True
    """
    check_choice(objective, OBJECTIVES, "objective",
                 "'effective' for expected effective weights, 'connectivity' for P(disconnected)")
    density = check_density(density, open=True)
    n = np.array([arch.n_params(x) for x in arch.layers], dtype=np.float64)
    target = density * n.sum()
    d0 = np.clip(quota(arch, start, density).densities, 1e-12, 1 - 1e-12)
    evaluations = 0

    def densities(z):
        return expit(z + _budget_shift(z, n, target))

    budget = 40 * len(n) if maxfev is None else check_int(maxfev, "maxfev", 1)

    def f(z):
        nonlocal evaluations
        evaluations += 1
        if progress is not None:
            progress(evaluations, budget)
        return _score(predict(arch, densities(z)), objective)

    z0 = logit(d0)
    best_z, best_f = z0, f(z0)
    res = minimize(f, z0, method="Powell", options={"maxfev": budget, "xtol": 1e-3, "ftol": 1e-9})
    if res.fun < best_f:
        best_z = res.x
    d = densities(best_z)
    total = round(target)
    kept = kept_counts(n.astype(np.int64), d, total)
    q = Quota(arch.name, f"designed-{objective}", float(density), arch.layer_names,
              n.astype(np.int64), d, kept)
    return Design(q, predict(arch, d), objective, evaluations)
