"""Sparsity-informed adaptive pruning (SAP): the PQ index decides how much each IMP round prunes.

The PQ index of a weight vector ``w`` with ``d`` entries (Diao et al. 2023) is
``I = 1 - M_p / M_q`` with the power means ``M_r = (sum |w_i|^r / d)^(1/r)`` and ``0 < p < q``;
it is 0 for a vector of equal magnitudes and grows as the mass concentrates on few entries. SAP
keeps ``m = ceil(d (1 + eta)^(q/(p-q)) (1 - I)^(qp/(q-p)))`` of the ``d`` surviving weights, so
a round prunes the ratio ``clip(scale (1 - m/d), 0, max_ratio)`` of them, the smallest magnitudes
by one global threshold: layer quotas emerge from the ranking. Closed forms: ``(p, q) = (1, 2)``
keeps ``||w||_1^2 / ||w||_2^2`` (the participation ratio), ``(0.5, 1)`` keeps
``(sum sqrt|w|)^2 / sum |w|``; on Gaussian weights the first ratio tends to ``1 - 2/pi ~ 0.3634``
and ``1 - Gamma(3/4)^2 / sqrt(pi) ~ 0.1527``.

As the survivors' magnitudes become uniform the ratio decays, so SAP sparsifies far more slowly
than pruning 20 % per round: :func:`sap_trajectory` predicts the densities it reaches round by
round from a weight law, assuming retraining leaves the survivors' magnitudes as they were.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ._validation import InvalidArgument, check_real
from .architectures import Architecture
from .masks import check_masks
from .orders import GlobalOrder

__all__ = [
    "SapSettings", "pq_index", "sap_prune", "sap_ratio", "sap_trajectory",
]


def _check_pq(p, q) -> tuple[float, float]:
    p = check_real(p, "p", 0, low_open=True)
    q = check_real(q, "q", 0, low_open=True)
    if not p < q:
        raise InvalidArgument("q", "greater than p", got=f"p={p}, q={q}",
                              fix="the PQ index needs 0 < p < q, e.g. p=1, q=2")
    return p, q


def _magnitudes(w) -> np.ndarray:
    a = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    if not np.isfinite(a).all():
        raise InvalidArgument("weights", "finite", got="NaN or infinity",
                              fix="SAP ranks finite magnitudes; check the training run")
    return a


def pq_index(w, p: float = 1.0, q: float = 2.0) -> float:
    """The PQ index ``1 - M_p / M_q`` of the entries of ``w`` (0 when all magnitudes are equal).

    ``M_r = (mean |w|^r)^(1/r)`` are power means (Diao et al. 2023); the index grows with how
    concentrated the magnitudes are.

    Parameters
    ----------
    w : array_like
        Weights of any shape.
    p, q : float
        The exponents, ``0 < p < q``.

    Returns
    -------
    float
        The index, in [0, 1].

    Raises
    ------
    ValueError
        Unless ``0 < p < q``.

    See Also
    --------
    sap_ratio : The pruning ratio it sets.

    Examples
    --------
    >>> pq_index([1.0, 1.0, 1.0])
    0.0
    >>> round(pq_index([1.0, 0.0, 0.0, 0.0]), 4)  # 1 - (1/4) / (1/4)**0.5
    0.5
    """
    p, q = _check_pq(p, q)
    a = _magnitudes(w)
    top = a.max(initial=0.0)
    if top == 0.0:
        return 0.0
    a = a / top  # the ratio of power means is scale invariant; this keeps |w|^r in range
    m_p = np.mean(a ** p) ** (1 / p)
    m_q = np.mean(a ** q) ** (1 / q)
    return float(min(1.0, max(0.0, 1.0 - m_p / m_q)))


def pruned_count(d: int, ratio: float) -> int:
    """``floor(d * ratio)``, robust to the rounding of ``ratio = 1 - m/d`` (which can land just
    below an integer: ``220 * (1 - 142/220)`` is 77.99999999999999, the count is 78)."""
    return min(d, math.floor(d * ratio * (1 + 1e-12)))


def _ratio(keep_fraction: float, scale: float, max_ratio: float) -> float:
    return float(min(max_ratio, max(0.0, scale * (1.0 - keep_fraction))))


def _check_sap(p, q, eta, scale, max_ratio):
    p, q = _check_pq(p, q)
    check_real(eta, "eta", 0)
    check_real(scale, "scale", 0, low_open=True)
    check_real(max_ratio, "max_ratio", 0, 1)
    return p, q


def sap_ratio(w, p: float = 1.0, q: float = 2.0, *, eta: float = 0.0, scale: float = 1.0,
              max_ratio: float = 0.9) -> float:
    """The share of the entries of ``w`` (the survivors) that one SAP round prunes.

    The retained count is ``m = ceil(d (1 + eta)^(q/(p-q)) (1 - I)^(qp/(q-p)))`` with ``I`` the
    PQ index of the ``d`` survivors; the ratio is ``scale * (1 - m/d)`` clipped to
    ``[0, max_ratio]``.

    Parameters
    ----------
    w : array_like
        The surviving weights, pooled.
    p, q : float
        The PQ index's exponents, ``0 < p < q``.
    eta : float
        ``eta >= 0`` lowers the retained count.
    scale : float
        ``gamma``, multiplies the ratio.
    max_ratio : float
        ``beta``, the cap on the ratio.

    Returns
    -------
    float
        The ratio, in ``[0, max_ratio]`` (0 for no survivors).

    Raises
    ------
    ValueError
        For exponents or parameters out of their ranges.

    See Also
    --------
    pq_index : The index behind the ratio.
    sap_prune : One round on a network.
    sap_trajectory : The densities of many rounds.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.random.default_rng(0).standard_normal(10**6)
    >>> round(sap_ratio(w, 1, 2), 2)  # 1 - 2/pi
    0.36
    """
    p, q = _check_sap(p, q, eta, scale, max_ratio)
    a = _magnitudes(w)
    d = a.size
    if d == 0:
        return 0.0
    index = pq_index(a, p, q)
    kept = d * (1 + eta) ** (q / (p - q)) * (1 - index) ** (q * p / (q - p))
    m = min(d, math.ceil(kept * (1 - 1e-12)))  # guard the ceiling against rounding just above m
    return _ratio(m / d, scale, max_ratio)


def sap_prune(arch: Architecture, weights: Mapping, masks: Mapping, *, p: float = 1.0,
              q: float = 2.0, eta: float = 0.0, scale: float = 1.0,
              max_ratio: float = 0.9) -> tuple[dict, float]:
    """One SAP round: the masks after pruning, and the ratio of the survivors it pruned.

    The surviving weights of every prunable layer are pooled, :func:`sap_ratio` says how many to
    prune, and the ``floor(d * ratio)`` smallest magnitudes go by one global threshold (ties
    broken as :class:`~connsim.orders.GlobalOrder` breaks them).

    Parameters
    ----------
    arch : Architecture
    weights : mapping
        Trained weights keyed by layer name (PyTorch layout).
    masks : mapping
        The current masks; only their survivors are pooled and ranked.
    p, q : float
        The PQ index's exponents, ``0 < p < q``.
    eta, scale, max_ratio : float
        ``eta >= 0`` lowers the retained count; the ratio is ``scale * (1 - m/d)`` clipped to
        ``[0, max_ratio]``.

    Returns
    -------
    masks : dict
    ratio : float

    See Also
    --------
    sap_ratio : How many survivors a round prunes.
    SapSettings : The same parameters, as IMP's pruner.

    Examples
    --------
    >>> from connsim import get_arch
    >>> from connsim.masks import ones_masks
    >>> arch = get_arch("mlp:20-10-2")
    >>> rng = np.random.default_rng(0)
    >>> w = {n.name: rng.standard_normal(arch.weight_shape(n)) for n in arch.layers}
    >>> new, ratio = sap_prune(arch, w, ones_masks(arch))
    >>> sum(int(m.sum()) for m in new.values()) == 220 - pruned_count(220, ratio)
    True
    """
    p, q = _check_sap(p, q, eta, scale, max_ratio)
    canon = check_masks(arch, masks)
    survivors = []
    scores = {}
    for n in arch.layer_names:
        w = np.asarray(weights[n], dtype=np.float64)
        if w.shape != canon[n].shape:
            raise InvalidArgument(f"weights[{n!r}]", f"of shape {canon[n].shape}",
                                  got=f"shape {w.shape}",
                                  fix="pass the weights of this architecture")
        keep = canon[n].astype(bool)
        survivors.append(_magnitudes(w[keep]))
        scores[n] = np.where(keep, np.abs(w), -1.0)
    pooled = np.concatenate(survivors)
    ratio = sap_ratio(pooled, p, q, eta=eta, scale=scale, max_ratio=max_ratio)
    d = pooled.size
    return GlobalOrder(arch, scores).masks(d - pruned_count(d, ratio)), ratio


def _gaussian_keep_fraction(density: float, p: float, q: float, eta: float) -> float:
    """m/d for the survivors ``|w| > t`` of a standard normal law with ``P(|w| > t) = density``."""
    from scipy.special import gamma, gammaincc
    from scipy.stats import norm

    t = norm.isf(density / 2)

    def mean_power(r):  # E[|w|^r | |w| > t]
        return 2 ** (r / 2) * gamma((r + 1) / 2) * gammaincc((r + 1) / 2, t * t / 2) \
            / math.sqrt(math.pi) / density

    ratio = mean_power(p) ** (1 / p) / mean_power(q) ** (1 / q)
    return (1 + eta) ** (q / (p - q)) * ratio ** (q * p / (q - p))


def sap_trajectory(rounds: int, law="gaussian", *, p: float = 1.0, q: float = 2.0,
                   eta: float = 0.0, scale: float = 1.0, max_ratio: float = 0.9) -> np.ndarray:
    """Densities SAP reaches after 0, 1, ..., ``rounds`` rounds if retraining kept the weights.

    Parameters
    ----------
    rounds : int
    law : 'gaussian' or array
        ``'gaussian'``: the survivors of a normal law, in closed form (upper incomplete gamma
        functions, the continuum limit). An array: these magnitudes, pruned exactly as
        :func:`sap_prune` would, round by round (e.g. the trained weights of the dense network).
    p, q, eta, scale, max_ratio : float
        As :func:`sap_prune`.

    Returns
    -------
    ndarray
        ``rounds + 1`` densities, starting at 1.

    See Also
    --------
    sap_ratio : One round's ratio.

    Examples
    --------
    >>> sap_trajectory(2).round(4)  # the first round prunes 1 - 2/pi of a Gaussian law
    array([1.    , 0.6366, 0.523 ])
    """
    from ._validation import check_int

    check_int(rounds, "rounds", 0)
    p, q = _check_sap(p, q, eta, scale, max_ratio)
    out = [1.0]
    if isinstance(law, str):
        if law != "gaussian":
            raise InvalidArgument("law", "'gaussian' or an array of weights", law)
        for _ in range(rounds):
            d = out[-1]
            keep = min(1.0, _gaussian_keep_fraction(d, p, q, eta))
            out.append(d * (1 - _ratio(keep, scale, max_ratio)))
        return np.array(out)
    a = np.sort(_magnitudes(law))[::-1]
    if a.size == 0:
        raise InvalidArgument("law", "a non-empty array", got="an empty array",
                              fix="pass the weights whose trajectory you want")
    alive = a.size
    for _ in range(rounds):
        ratio = sap_ratio(a[:alive], p, q, eta=eta, scale=scale, max_ratio=max_ratio)
        alive -= pruned_count(alive, ratio)
        out.append(alive / a.size)
    return np.array(out)


@dataclass(frozen=True)
class SapSettings:
    """The parameters of :func:`sap_prune`, as IMP's pruner (``connsim imp --pruner sap``).

    Parameters
    ----------
    p, q : float
        The PQ index's exponents, ``0 < p < q``.
    eta, scale, max_ratio : float
        As in :func:`sap_ratio`.

    Raises
    ------
    ValueError
        For parameters out of their ranges (checked when made).

    See Also
    --------
    sap_prune : What :meth:`prune` calls.
    connsim.imp.imp : Takes it as ``sap`` with ``pruner='sap'``.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch, ones_masks
    >>> arch = get_arch("mlp:20-10-2")
    >>> rng = np.random.default_rng(0)
    >>> w = {n: rng.standard_normal(arch.weight_shape(n)) for n in arch.layer_names}
    >>> masks, ratio = SapSettings(p=0.5, q=1).prune(arch, w, ones_masks(arch))
    >>> 0 < ratio < 0.9
    True
    """

    p: float = 1.0
    q: float = 2.0
    eta: float = 0.0
    scale: float = 1.0
    max_ratio: float = 0.9

    def __post_init__(self):
        _check_sap(self.p, self.q, self.eta, self.scale, self.max_ratio)

    def prune(self, arch: Architecture, weights: Mapping, masks: Mapping) -> tuple[dict, float]:
        """:func:`sap_prune` with these settings."""
        return sap_prune(arch, weights, masks, **asdict(self))

    def to_dict(self) -> dict:
        """JSON-ready settings."""
        return asdict(self)
