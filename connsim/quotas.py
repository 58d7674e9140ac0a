"""Layerwise quota rules: (architecture, global density D) -> per-layer densities d_l.

Every rule satisfies sum_l n_l d_l = D N (n_l prunable weights of layer l, N = sum n_l) and
0 <= d_l <= 1, or raises :class:`InfeasibleQuota` naming the layer and the feasible range. Integer
kept counts (:func:`kept_counts`) sum to round(D N) exactly. Formulas and sources are in
``docs/quotas.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._validation import (
    InvalidArgument,
    Names,
    Registry,
    check_choice,
    check_densities,
    check_density,
    check_int,
)
from .architectures import Architecture

__all__ = [
    "ALL_RULES", "InfeasibleQuota", "Quota", "er", "erk", "erk_redistribute", "feasible_densities",
    "igq", "kept_counts", "quota", "register_rule", "uniform", "uniform_plus",
]


class InfeasibleQuota(ValueError):
    """A quota rule cannot reach the requested density with every d_l in [0, 1].

    A subclass of :class:`ValueError`; the message names the layer that cannot fit and the feasible
    range. Rules never clip silently.

    See Also
    --------
    feasible_densities : The densities at which a rule is valid.
    quota : Raises it.

    Examples
    --------
    >>> from connsim import get_arch
    >>> try:
    ...     quota(get_arch("lenet-5"), "uniform+", 0.001)
    ... except InfeasibleQuota as e:
    ...     print(str(e)[:30])
    uniform+ keeps layer 'conv1' d
    """


class LayerSubset:
    """Some prunable layers of an architecture, seen as the architecture a quota rule reads
    (``name``, ``layers``, ``layer_names``, ``weight_shape``, ``n_params``)."""

    def __init__(self, arch: Architecture, names):
        unknown = [n for n in names if n not in arch.layer_names]
        if unknown:
            raise ValueError(f"layers {unknown} are not prunable layers of {arch.name}")
        self.arch, self.name = arch, arch.name
        keep = set(names)
        self.layers = tuple(node for node in arch.layers if node.name in keep)
        self.layer_names = tuple(node.name for node in self.layers)

    def weight_shape(self, layer) -> tuple[int, ...]:
        """Weight shape of ``layer`` in the whole architecture."""
        return self.arch.weight_shape(layer)

    def n_params(self, layer) -> int:
        """Number of weights of ``layer``."""
        return self.arch.n_params(layer)


def restrict(arch: Architecture, names) -> Architecture | LayerSubset:
    """``arch`` itself when ``names`` are all its prunable layers, else a :class:`LayerSubset`."""
    return arch if tuple(names) == arch.layer_names else LayerSubset(arch, names)


def _params(arch: Architecture) -> np.ndarray:
    return np.array([arch.n_params(n) for n in arch.layers], dtype=np.float64)


def uniform(arch: Architecture, density: float) -> np.ndarray:
    """d_l = D for every layer.

    Parameters
    ----------
    arch : Architecture
        The network (or a subset of its layers).
    density : float
        Global density D in [0, 1].

    Returns
    -------
    ndarray
        One density per prunable layer, in layer order, with ``sum_l n_l d_l = D N``.

    See Also
    --------
    quota : Densities and exact kept counts of any rule, by name.
    uniform, uniform_plus, er, erk, erk_redistribute, igq : The built-in rules.

    Examples
    --------
    >>> from connsim import get_arch
    >>> uniform(get_arch("lenet-300-100"), 0.01)
    array([0.01, 0.01, 0.01])
    """
    return np.full(len(arch.layers), check_density(density))


def uniform_plus(arch: Architecture, density: float) -> np.ndarray:
    """First layer dense, the rest uniform, but the last layer keeps at least 20 %.

    When the uniform density of layers 2..L falls below 0.2, the last layer is held at 0.2 and the
    remaining budget is spread evenly over the middle layers (Gale et al. 2019; the name is from
    LAMP, Lee et al. 2021). Feasible down to density (n_1 + 0.2 n_L) / N.

    Parameters
    ----------
    arch : Architecture
        The network (or a subset of its layers).
    density : float
        Global density D in [0, 1].

    Returns
    -------
    ndarray
        One density per prunable layer, in layer order, with ``sum_l n_l d_l = D N``.

    Raises
    ------
    InfeasibleQuota
        Below the minimum density (the message gives it).

    See Also
    --------
    quota : Densities and exact kept counts of any rule, by name.
    uniform, uniform_plus, er, erk, erk_redistribute, igq : The built-in rules.

    Examples
    --------
    >>> from connsim import get_arch
    >>> uniform_plus(get_arch("lenet-5"), 0.05).round(4)
    array([1.    , 0.0408, 0.0408, 0.0408, 0.2   ])
    """
    density = check_density(density)
    n = _params(arch)
    names = arch.layer_names
    budget = density * n.sum()
    if len(n) < 2:
        raise InfeasibleQuota("uniform+ needs at least two prunable layers")
    floor = n[0] + 0.2 * n[-1]
    if budget < floor - 1e-9 * n.sum():
        raise InfeasibleQuota(
            f"uniform+ keeps layer {names[0]!r} dense and layer {names[-1]!r} at >= 20 %, which "
            f"needs density >= {floor / n.sum():.6g} (compression <= {n.sum() / floor:.6g}) on "
            f"{arch.name}; asked for density {density:.6g} (compression "
            f"{_inv(density):.6g})"
        )
    d = np.empty_like(n)
    d[0] = 1.0
    rest = (budget - n[0]) / n[1:].sum()
    if rest >= 0.2 or len(n) == 2:
        d[1:] = rest
    else:
        d[-1] = 0.2
        d[1:-1] = (budget - n[0] - 0.2 * n[-1]) / n[1:-1].sum()
    return np.clip(d, 0.0, 1.0)  # only rounding noise is clipped; feasibility was checked


def _inv(d: float) -> float:
    return math.inf if d == 0 else 1.0 / d


def _er_raw(arch: Architecture, with_kernel: bool) -> np.ndarray:
    """Unscaled Erdos-Renyi(-Kernel) densities: sum of shape dims / product of shape dims."""
    out = []
    for node in arch.layers:
        shape = arch.weight_shape(node)
        dims = shape if with_kernel else shape[:2]
        out.append(sum(dims) / math.prod(dims))
    return np.array(out)


def _scaled_saturating(raw: np.ndarray, n: np.ndarray, density: float) -> np.ndarray:
    """d_l = min(1, k raw_l) with k solved exactly; saturated layers are made dense and k is
    re-solved over the rest until no layer exceeds 1 (RigL's procedure)."""
    budget = density * n.sum()
    dense = np.zeros(len(n), dtype=bool)
    while True:
        free = ~dense
        rest = budget - n[dense].sum()
        denom = (raw[free] * n[free]).sum()
        k = rest / denom if denom > 0 else 0.0
        d = np.where(dense, 1.0, k * raw)
        over = free & (d > 1.0)
        if not over.any():
            return np.clip(d, 0.0, 1.0)
        dense |= over


def er(arch: Architecture, density: float) -> np.ndarray:
    """Erdos-Renyi (Mocanu et al. 2018): d_l proportional to (fan_in + fan_out)/(fan_in fan_out).

    Convolutions use their channel counts; saturated layers are made dense and the scale
    re-solved.

    Parameters
    ----------
    arch : Architecture
        The network (or a subset of its layers).
    density : float
        Global density D in [0, 1].

    Returns
    -------
    ndarray
        One density per prunable layer, in layer order, with ``sum_l n_l d_l = D N``.

    See Also
    --------
    quota : Densities and exact kept counts of any rule, by name.
    uniform, uniform_plus, er, erk, erk_redistribute, igq : The built-in rules.

    Examples
    --------
    >>> from connsim import get_arch
    >>> er(get_arch("lenet-300-100"), 0.01).round(4)
    array([0.0077, 0.0223, 0.1837])
    """
    return _scaled_saturating(_er_raw(arch, False), _params(arch), check_density(density))


def erk(arch: Architecture, density: float) -> np.ndarray:
    """Erdos-Renyi-Kernel (Evci et al. 2020, RigL): d_l = k (sum of shape dims)/(product of shape dims).

    Kernel dimensions are included; layers that would exceed 1 are made dense and k re-solved over
    the rest, repeatedly. For dense layers ``erk`` and ``er`` coincide.

    Parameters
    ----------
    arch : Architecture
        The network (or a subset of its layers).
    density : float
        Global density D in [0, 1].

    Returns
    -------
    ndarray
        One density per prunable layer, in layer order, with ``sum_l n_l d_l = D N``.

    See Also
    --------
    quota : Densities and exact kept counts of any rule, by name.
    uniform, uniform_plus, er, erk, erk_redistribute, igq : The built-in rules.

    Examples
    --------
    >>> from connsim import get_arch
    >>> erk(get_arch("lenet-5"), 0.01).round(4)
    array([0.03  , 0.0095, 0.0077, 0.0144, 0.0795])
    """
    return _scaled_saturating(_er_raw(arch, True), _params(arch), check_density(density))


def erk_redistribute(arch: Architecture, density: float) -> np.ndarray:
    """ERK as in the Connectivity Matters code: one k for all layers, overflow pushed to earlier layers.

    Walking from the last layer to the first, each layer's overflow above 1 is pushed into the
    previous layer in list order. Infeasible when the overflow reaches the first layer.

    Parameters
    ----------
    arch : Architecture
        The network (or a subset of its layers).
    density : float
        Global density D in [0, 1].

    Returns
    -------
    ndarray
        One density per prunable layer, in layer order, with ``sum_l n_l d_l = D N``.

    Raises
    ------
    InfeasibleQuota
        Above the maximum density (the overflow reaches the first layer).

    See Also
    --------
    quota : Densities and exact kept counts of any rule, by name.
    uniform, uniform_plus, er, erk, erk_redistribute, igq : The built-in rules.

    Examples
    --------
    >>> from connsim import get_arch
    >>> erk_redistribute(get_arch("lenet-5"), 0.01).round(4)
    array([0.03  , 0.0095, 0.0077, 0.0144, 0.0795])
    """
    density = check_density(density)
    n = _params(arch)
    raw = _er_raw(arch, True)
    kept = density * n.sum() / (raw * n).sum() * raw * n
    for k in range(len(n) - 1, 0, -1):
        if kept[k] > n[k]:
            kept[k - 1] += kept[k] - n[k]
            kept[k] = n[k]
    if kept[0] > n[0] * (1 + 1e-12):
        limit = _erk_redistribute_limit(raw, n)
        raise InfeasibleQuota(
            f"erk-redistribute pushes overflow into layer {arch.layer_names[0]!r}, which has no "
            f"previous layer: on {arch.name} it needs density <= {limit:.6g} (compression >= "
            f"{_inv(limit):.6g}); asked for density {density:.6g}. Use rule 'erk' instead."
        )
    return np.clip(kept / n, 0.0, 1.0)


def _erk_redistribute_limit(raw: np.ndarray, n: np.ndarray) -> float:
    """Largest density at which erk-redistribute is feasible (bisection on the overflow test)."""
    def feasible(dens):
        kept = dens * n.sum() / (raw * n).sum() * raw * n
        for k in range(len(n) - 1, 0, -1):
            if kept[k] > n[k]:
                kept[k - 1] += kept[k] - n[k]
                kept[k] = n[k]
        return kept[0] <= n[0]

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if feasible(mid) else (lo, mid)
    return lo


def igq_force(n: np.ndarray, density: float) -> float:
    """The common piston force F >= 0 with sum_l n_l / (1 + F n_l) = D N.

    The root is solved to machine precision (Brent's method on log F after bracketing), so the
    continuous densities 1 / (1 + F n_l) meet the budget D N exactly up to rounding: a quota, and
    a prediction made from it, at compression C is for C.
    """
    n = np.asarray(n, dtype=np.float64)
    target = density * n.sum()
    if target >= n.sum():
        return 0.0
    if target <= 0:
        return math.inf

    def excess(log_f):
        # n / (1 + F n) written with e^-log_f, finite for every log F in the bracket below
        g = math.exp(-log_f)
        return (n * g / (g + n)).sum() - target

    lo, hi = -1.0, 1.0  # log F; kept weights fall monotonically as F grows
    while excess(lo) < 0:
        if lo < -700:
            return 0.0  # F below 1e-304: the budget differs from N by less than rounding
        lo *= 2.0
    while excess(hi) > 0:
        if hi > 700:
            return math.inf  # F above 1e304: fewer than 1e-290 weights are asked for
        hi *= 2.0
    from scipy.optimize import brentq  # imported here: scipy.optimize is slow to import

    root = brentq(excess, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    return math.exp(root) if root < 709 else math.inf


def igq(arch: Architecture, density: float) -> np.ndarray:
    """Ideal-gas quotas: d_l = 1 / (1 + F n_l), one force F for all layers.

    Each layer is a gas cylinder of length n_l and cross-section 1/n_l; all pistons are pushed by
    the same force F, and Boyle's law gives kept weights n_l / (1 + F n_l). F is found by a
    monotone root-find. Always feasible; as D -> 0 every layer keeps about 1/F weights.

    Parameters
    ----------
    arch : Architecture
        The network (or a subset of its layers).
    density : float
        Global density D in [0, 1].

    Returns
    -------
    ndarray
        One density per prunable layer, in layer order, with ``sum_l n_l d_l = D N``.

    See Also
    --------
    quota : Densities and exact kept counts of any rule, by name.
    uniform, uniform_plus, er, erk, erk_redistribute, igq : The built-in rules.

    Examples
    --------
    >>> from connsim import get_arch
    >>> igq(get_arch("lenet-300-100"), 0.01).round(4)
    array([0.0046, 0.0351, 0.5219])
    """
    n = _params(arch)
    f = igq_force(n, check_density(density))
    return np.zeros_like(n) if math.isinf(f) else 1.0 / (1.0 + f * n)


def scaled_rule(reference: Sequence[float]) -> Callable:
    """A rule that keeps the per-layer densities ``reference`` at their own global density and
    scales them proportionally elsewhere (saturated layers made dense, as in ERK): the
    layer-matched scope."""
    ref = np.asarray(reference, dtype=np.float64)

    def matched(arch: Architecture, density: float) -> np.ndarray:
        return _scaled_saturating(ref, _params(arch), check_density(density))

    matched.__name__ = "layer-matched"
    return matched


RULES = Registry("rule", {
    "uniform": uniform,
    "uniform+": uniform_plus,
    "er": er,
    "erk": erk,
    "erk-redistribute": erk_redistribute,
    "igq": igq,
})  # rules (arch, density) -> densities; register_rule adds more
IMPLIED_RULES = ("induced", "custom")  # rules whose per-layer densities imply the density
#: Every quota rule name, built-in and registered: ``uniform``, ``uniform+``, ``er``, ``erk``,
#: ``erk-redistribute``, ``igq``, ``induced``, ``custom``, then the names given to
#: :func:`register_rule` (a live sequence: ``name in ALL_RULES`` sees rules added later).
#:
#: See Also
#: --------
#: quota : Takes any of these names.
#: register_rule : Adds a name.
#:
#: Examples
#: --------
#: >>> ALL_RULES[:3]
#: ('uniform', 'uniform+', 'er')
ALL_RULES = Names(RULES, IMPLIED_RULES)


def register_rule(name: str, fn: Callable) -> None:
    """Make ``fn`` a quota rule named ``name``, usable wherever a rule name is.

    :func:`quota`, :func:`connsim.prune` (``rule=name``), :func:`connsim.theory.predict_rule`
    and the command line's ``--rule`` accept the name from then on.

    Parameters
    ----------
    name : str
        A name that is not yet a rule (:data:`ALL_RULES`).
    fn : callable
        ``fn(arch, density) -> densities``: one density in [0, 1] per prunable layer of ``arch``
        (in ``arch.layers`` order) with ``sum_l n_l d_l = density * N``. ``arch`` may be a
        :class:`LayerSubset` (the layers a channel-granularity order prunes).

    Raises
    ------
    ValueError
        If ``name`` is already a rule or not a non-empty string.
    TypeError
        If ``fn`` is not callable (or ``name`` not a string).

    See Also
    --------
    quota : Evaluates registered rules like built-in ones.

    Examples
    --------
    A rule that keeps the first layer dense and spreads the rest of the budget evenly:

    >>> from connsim import get_arch
    >>> def dense_first(arch, density):
    ...     n = np.array([arch.n_params(x) for x in arch.layers], dtype=float)
    ...     rest = (density * n.sum() - n[0]) / n[1:].sum()
    ...     return np.concatenate([[1.0], np.full(len(n) - 1, rest)])
    >>> register_rule("dense-first", dense_first)
    >>> quota(get_arch("lenet-5"), "dense-first", 0.1).densities.round(4).tolist()
    [1.0, 0.0934, 0.0934, 0.0934, 0.0934]
    >>> "dense-first" in ALL_RULES
    True
    """
    RULES.add(name, fn, taken=ALL_RULES)


def check_rule(rule) -> str | Callable:
    """``rule`` if it is a function or the name of a rule (:data:`ALL_RULES`)."""
    if callable(rule):
        return rule
    return check_choice(rule, ALL_RULES, "rule",
                        "give a function (arch, density) -> densities, or name it with "
                        "connsim.quotas.register_rule")


def kept_counts(params: Sequence[int], densities: Sequence[float], total: int) -> np.ndarray:
    """Integer kept counts close to ``densities * params`` that sum to ``total`` exactly.

    Floors first, then the largest fractional remainders get one more weight (or the smallest lose
    one), never leaving [0, n_l].

    Parameters
    ----------
    params : sequence of int
        Weights of each layer, n_l.
    densities : sequence of float
        The rule's densities d_l.
    total : int
        The exact number of weights to keep, ``round(D N)``.

    Returns
    -------
    ndarray of int
        One count per layer, summing to ``total``.

    See Also
    --------
    quota : Uses it for every rule.

    Examples
    --------
    >>> kept_counts([10, 20, 30], [0.15, 0.15, 0.15], 9)
    array([2, 3, 4])
    """
    n = np.asarray(params, dtype=np.int64)
    x = np.clip(np.asarray(densities, dtype=np.float64), 0.0, 1.0) * n
    k = np.minimum(np.floor(x + 1e-9).astype(np.int64), n)
    total = check_int(total, "total", 0, int(n.sum()), fix="the kept weights of all layers")
    frac = x - k
    order = np.lexsort((np.arange(len(n)), -frac))  # largest remainder first, ties by layer
    while k.sum() != total:
        step = 1 if k.sum() < total else -1
        candidates = [i for i in (order if step == 1 else order[::-1])
                      if (k[i] < n[i] if step == 1 else k[i] > 0)]
        for i in candidates[: abs(total - k.sum())]:
            k[i] += step
    return k


@dataclass(frozen=True)
class Quota:
    """Per-layer densities and exact integer kept counts of a quota rule at one global density.

    Attributes
    ----------
    arch, rule : str
        The architecture's name and the rule's.
    density : float
        The global density D.
    names : tuple of str
        The prunable layers, in order.
    params : ndarray of int
        Weights of each layer, n_l.
    densities : ndarray
        The rule's densities d_l.
    kept : ndarray of int
        Exact kept counts, summing to ``round(D N)``.
    force : float or None
        IGQ's piston force F; None for other rules.

    See Also
    --------
    quota : Computes it.
    connsim.sampling.random_masks : Random masks with these counts.
    connsim.theory.predict : The theory at these densities.

    Examples
    --------
    >>> from connsim import get_arch
    >>> q = quota(get_arch("lenet-300-100"), "uniform", 0.01)
    >>> q.names, q.kept.tolist(), q.to_dict()["layers"][2]
    (('fc1', 'fc2', 'fc3'), [2352, 300, 10], {'name': 'fc3', 'params': 1000, 'density': 0.01, 'kept': 10})
    """

    arch: str
    rule: str
    density: float
    names: tuple[str, ...]
    params: np.ndarray
    densities: np.ndarray
    kept: np.ndarray
    force: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready form: the rule, density, force and one entry per layer."""
        return {
            "arch": self.arch, "rule": self.rule, "density": self.density,
            "force": self.force,
            "layers": [{"name": n, "params": int(p), "density": int(k) / int(p), "kept": int(k)}
                       for n, p, k in zip(self.names, self.params, self.kept, strict=True)],
        }


def quota(arch: Architecture, rule: str | Callable, density: float | None = None, *,
          masks: Mapping | None = None, densities=None) -> Quota:
    """Per-layer densities and kept counts of a quota rule.

    Parameters
    ----------
    arch : Architecture
    rule : str or callable
        One of ``uniform, uniform+, er, erk, erk-redistribute, igq, induced, custom`` or a name
        given to :func:`register_rule`, or a function ``(arch, density) -> densities`` (treated
        like ``custom``).
    density : float, optional
        Global density D. Optional for ``induced`` and ``custom``, whose densities imply it.
    masks : mapping, optional
        For ``induced``: masks whose per-layer densities are copied (layerwise shuffling).
    densities : sequence or mapping, optional
        For ``custom``: one density per layer (list in layer order, or dict by name).

    Returns
    -------
    Quota

    Raises
    ------
    InfeasibleQuota
        When the rule cannot reach ``density`` (the message names the layer and the feasible range).
    ValueError
        For an unknown rule (the message lists the valid ones) or inconsistent inputs.

    See Also
    --------
    feasible_densities : Where a rule is valid.
    register_rule : Add a rule.
    connsim.sampling.random_masks : Random masks under the quota.

    Examples
    --------
    >>> from connsim import get_arch
    >>> q = quota(get_arch("lenet-300-100"), "igq", 0.01)
    >>> q.densities.round(4).tolist(), float(f"{q.force:.3g}")
    ([0.0046, 0.0351, 0.5219], 0.000916)
    >>> int(q.kept.sum())
    2662
    """
    n = _params(arch)
    force = None
    rule = check_rule(rule)
    name = getattr(rule, "__name__", "custom") if callable(rule) else rule
    if density is not None:
        density = check_density(density)
    elif name not in IMPLIED_RULES:
        raise ValueError(f"rule {name!r} needs a global density")
    if callable(rule):
        d = rule(arch, density)
    elif rule == "induced":
        if masks is None:
            raise ValueError("rule 'induced' copies the per-layer densities of masks: pass masks")
        from .masks import check_masks

        canon = check_masks(arch, masks)
        d = np.array([canon[k].mean() for k in arch.layer_names])
    elif rule == "custom":
        if densities is None:
            raise ValueError("rule 'custom' needs densities (one per layer, or a dict by name)")
        d = _custom_densities(arch, densities)
    else:
        d = RULES[rule](arch, density)
        if rule == "igq":
            force = igq_force(n, density)
    d = check_densities(d, arch.layer_names, f"the densities rule {name!r} returns",
                        bounded=False, fix="a rule returns one density per layer")
    bad = np.flatnonzero((d < 0) | (d > 1))
    if bad.size:
        raise InfeasibleQuota(
            f"rule {name!r} gives layer {arch.layer_names[bad[0]]!r} density {d[bad[0]]:.6g}, "
            "outside [0, 1]"
        )
    implied = float((d * n).sum() / n.sum())
    if density is None:
        density = implied
    elif abs(implied - density) * n.sum() > 1.0:
        raise ValueError(
            f"rule {name!r} keeps {implied * n.sum():.1f} weights, but density {density:.6g} "
            f"asks for {density * n.sum():.1f}; the rule implies density {implied:.6g}"
        )
    kept = kept_counts(n.astype(np.int64), d, round(density * n.sum()))
    return Quota(arch.name, name, float(density), arch.layer_names, n.astype(np.int64), d, kept,
                 force)


def feasible_densities(arch: Architecture, rule, **rule_kw) -> tuple[float, float] | None:
    """The interval ``(d_min, d_max)`` of global densities at which ``rule`` gives a valid quota.

    Every built-in rule is feasible on one interval: ``uniform+`` from a minimum density up to 1,
    ``erk-redistribute`` from 0 up to a maximum density, the others everywhere. The ends are
    found by a scan and bisection to about 1e-12 relative; ``None`` if the rule is feasible
    nowhere.

    Parameters
    ----------
    arch : Architecture
        The network.
    rule : str or callable
        A rule as :func:`quota` takes it.
    **rule_kw
        Passed on to :func:`quota` at every probed density.

    Returns
    -------
    tuple of float or None
        ``(d_min, d_max)``.

    See Also
    --------
    quota : Raises :class:`InfeasibleQuota` outside the interval.
    connsim.theory.half_disconnection_compression : Searches only inside it.

    Examples
    --------
    >>> from connsim import get_arch
    >>> lo, hi = feasible_densities(get_arch("lenet-5"), "uniform+")
    >>> round(1 / lo, 2), hi
    (99.95, 1.0)
    """
    def ok(d):
        try:
            quota(arch, rule, d, **rule_kw)
        except InfeasibleQuota:
            return False
        return True

    if ok(0.0) and ok(1.0):
        return 0.0, 1.0
    grid = np.concatenate([[0.0], np.geomspace(1e-12, 1.0, 97)])
    good = [k for k, d in enumerate(grid) if ok(d)]
    if not good:
        return None

    def edge(inside, outside):
        for _ in range(100):
            mid = 0.5 * (inside + outside)
            if mid in (inside, outside):
                break
            inside, outside = (mid, outside) if ok(mid) else (inside, mid)
        return inside

    d_min = grid[0] if good[0] == 0 else edge(grid[good[0]], grid[good[0] - 1])
    d_max = 1.0 if good[-1] == len(grid) - 1 else edge(grid[good[-1]], grid[good[-1] + 1])
    return float(d_min), float(d_max)


def _custom_densities(arch: Architecture, densities) -> np.ndarray:
    names = arch.layer_names
    if isinstance(densities, Mapping):
        missing = [k for k in names if k not in densities]
        unknown = [k for k in densities if k not in names]
        if missing or unknown:
            raise InvalidArgument("custom densities", f"a density for each layer of {list(names)}",
                                  got=f"missing layers {missing}, unknown {unknown}")
        densities = [densities[k] for k in names]
    return check_densities(densities, names, "custom densities", bounded=False,
                           fix="give one value per layer, as a list in layer order or a dict by "
                               "layer name")
