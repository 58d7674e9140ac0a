"""One entry point for every pruning method, granularity, scope and target.

``prune`` computes scores (or an iterative method's rank keys, :mod:`connsim.scores`), turns them
into a nested order over groups (:mod:`connsim.orders`) and then keeps

* ``target="direct"``: exactly ``round(D * groups)`` groups;
* ``target="effective"``: as many groups as still leave the effective density at most ``D``
  (:func:`connsim.targeting.target_effective`).

Scopes: ``global`` (one ranking), ``layerwise`` (a quota rule splits the budget), ``layer-matched``
(per-layer densities copied from reference masks, scaled proportionally when the budget differs).
Random pruning defaults to ``layerwise`` and, at weight granularity with a direct target, draws its
masks from the quota under a mask model (:func:`connsim.sampling.random_masks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._validation import check_choice, check_density, check_int, check_level, check_rng
from .architectures import Architecture
from .granularity import check_granularity, prunable_layers
from .masks import check_masks
from .measures import Measurement, measure
from .orders import GlobalOrder, LayerwiseOrder
from .quotas import IMPLIED_RULES, check_rule, quota, scaled_rule
from .sampling import MASK_MODELS, random_masks
from .scores import ScoreContext, check_method, method_scores
from .targeting import target_effective
from .trainer.data import Dataset
from .trainer.network import Network

__all__ = [
    "PruneResult", "prune",
]


SCOPES = ("global", "layerwise", "layer-matched")
TARGETS = ("direct", "effective")


@dataclass(frozen=True)
class PruneResult:
    """Masks and what they achieve.

    Attributes
    ----------
    masks : dict of str to ndarray of bool
        The weight masks, in PyTorch layout.
    measurement : Measurement
        Their direct and effective counts at the requested level.
    kept_groups, total_groups : int
        The groups the order may prune, kept and in all (at channel granularity the classes are
        always kept and not counted); ``group_fraction`` is their ratio.
    probes : int or None
        Effective-mask evaluations of an effective target; None for a direct one.
    scope : str
        The scope used (the default one when none was given).
    density : float
        The density used (the one a rule ``induced``/``custom`` implies when none was given).
    target_met : bool
        False, with the reason in ``message``, when an effective target could not be met (see
        :func:`connsim.targeting.target_effective`).
    message : str or None
        Why the target was not met.

    See Also
    --------
    prune : Computes it.

    Examples
    --------
    >>> from connsim import get_arch
    >>> res = prune(get_arch("lenet-300-100"), "random", 0.01, rule="igq", target="effective", rng=0)
    >>> res.target_met, res.probes, res.measurement.effective_density <= 0.01
    (True, 18, True)
    """

    masks: dict
    measurement: Measurement
    kept_groups: int
    total_groups: int
    probes: int | None
    scope: str
    density: float
    target_met: bool = True
    message: str | None = None

    @property
    def group_fraction(self) -> float:
        """Fraction of the groups kept."""
        return self.kept_groups / self.total_groups


def prune(arch: Architecture, method: str, density: float | None, *, granularity: str = "weight",
          scope: str | None = None, rule="uniform", rule_kw: Mapping | None = None,
          mask_model: str | None = None, reference_masks: Mapping | None = None,
          target: str = "direct", level: str = "channel", weights: Mapping | None = None,
          state: Mapping | None = None, data: Dataset | None = None, n_batches: int = 1,
          batch_size: int = 128, rounds: int | None = None, rng=None,
          progress=None, backend: str = "numpy") -> PruneResult:
    """Prune ``arch`` with ``method`` to global density ``density``.

    Parameters
    ----------
    arch : Architecture
    method : str
        One of ``random, magnitude, lamp, snip, grasp, iterative-snip, synflow`` or a name given
        to :func:`connsim.scores.register_score`.
    density : float or None
        Fraction of groups to keep (``target='direct'``) or the effective density to reach
        (``target='effective'``). ``None`` only with a rule ``induced`` or ``custom`` on the
        mask-model path (see ``mask_model``), whose densities imply it.
    granularity : {'weight', 'kernel', 'channel'}
    scope : {'global', 'layerwise', 'layer-matched'}, optional
        Default: ``layerwise`` for ``random``, ``global`` for every score method.
    rule : str or callable
        Quota rule for ``scope='layerwise'`` (see :func:`connsim.quota`;
        :func:`connsim.quotas.register_rule` names new ones).
    rule_kw : mapping, optional
        Keyword arguments of :func:`connsim.quota` for ``rule``: ``masks`` for ``induced``,
        ``densities`` for ``custom``.
    mask_model : {'exact', 'bernoulli', 'nested'}, optional
        Random pruning with ``scope='layerwise'``, ``target='direct'`` at weight granularity draws
        its masks from the quota under this model (:func:`connsim.sampling.random_masks`; default
        ``exact``). Any other combination ranks groups and refuses a ``mask_model``.
    reference_masks : mapping, optional
        For ``scope='layer-matched'``: masks whose per-layer densities are copied.
    target : {'direct', 'effective'}
    level : {'channel', 'position'}
        Level of the effective masks (reported, and used by ``target='effective'``).
    weights, state : mapping, optional
        Prunable weights (PyTorch layout) and, optionally, a full network state (BatchNorm etc.)
        as written by ``connsim train``; a seeded Kaiming initialisation otherwise.
    data : Dataset, optional
        Needed by ``snip``, ``iterative-snip`` and ``grasp``.
    n_batches : int
        Training batches the data-driven scores sum over.
    batch_size : int
        Examples per batch.
    rounds : int, optional
        Rounds of an iterative method (default 100 for SynFlow, 10 for iterative SNIP).
    rng : seed or Generator
    progress : callable, optional
        ``progress(t, rounds)`` after every round of an iterative method.
    backend : str
        Array backend of the gradient passes (SNIP, GraSP, SynFlow): ``'numpy'`` or
        ``'cupy'`` (:mod:`connsim.trainer.backend`); scores and masks are on the host either way.

    Returns
    -------
    PruneResult

    See Also
    --------
    connsim.scores.register_score : Add a method.
    connsim.targeting.target_effective : The search behind ``target='effective'``.
    connsim.granularity : Groups of each granularity.
    connsim.measures.measure : Measures the masks.

    Examples
    --------
    >>> from connsim import get_arch
    >>> arch = get_arch("lenet-300-100")
    >>> res = prune(arch, "magnitude", 0.01, rng=0)
    >>> res.kept_groups, round(res.measurement.density, 4)
    (2662, 0.01)
    >>> res = prune(arch, "random", 0.01, rule="igq", mask_model="exact", rng=0)
    >>> res.scope, [int(m.sum()) for m in res.masks.values()]
    ('layerwise', [1087, 1053, 522])
    """
    check_method(method)
    if scope is None:
        scope = "layerwise" if method == "random" else "global"
    check_granularity(granularity)
    check_choice(scope, SCOPES, "scope", "'layerwise' splits the budget by a quota rule")
    check_choice(target, TARGETS, "target", "'effective' prunes until the effective density is "
                                            "reached")
    check_level(level)
    check_rule(rule)
    if mask_model is not None:
        check_choice(mask_model, MASK_MODELS, "mask_model", "or None for exact per-layer counts")
    sampled = (method, scope, target, granularity) == ("random", "layerwise", "direct", "weight")
    if not sampled and mask_model is not None:
        raise ValueError("mask_model applies to method 'random' with scope 'layerwise', target "
                         f"'direct' and weight granularity; got method {method!r}, scope "
                         f"{scope!r}, target {target!r}, granularity {granularity!r}")
    if not sampled and rule in IMPLIED_RULES:
        raise ValueError("rules induced/custom work with method 'random', scope 'layerwise', "
                         "target 'direct' and weight granularity; scope 'layer-matched' with "
                         "reference_masks copies another mask's per-layer densities")
    if density is None and rule not in IMPLIED_RULES:
        raise ValueError("a density is needed (only the rules induced/custom imply it)")
    if density is not None:
        density = check_density(density)
    if rounds is not None:
        check_int(rounds, "rounds", 1, fix="the rounds of an iterative method")
    rng = check_rng(rng)
    if sampled:
        q = quota(arch, rule, density, **(rule_kw or {}))
        masks = random_masks(arch, q, model=mask_model or "exact", rng=rng)
        kept = sum(int(np.count_nonzero(m)) for m in masks.values())
        return PruneResult(masks, measure(arch, masks, level=level), kept, arch.total_params, None,
                           scope, q.density)
    if weights is None:
        net = Network(arch, rng=rng, dtype="float64")
        weights = net.weights()
    else:
        weights = {n: np.asarray(weights[n], np.float64) for n in arch.layer_names}
    ctx = ScoreContext(arch, dict(weights), rng, data, n_batches, batch_size,
                       state=dict(state or {}), backend=backend)
    scores = method_scores(method, ctx, granularity, density, rounds, progress)
    if scope == "global":
        order = GlobalOrder(arch, scores, granularity=granularity)
    else:
        if scope == "layer-matched":
            if reference_masks is None:
                raise ValueError("scope 'layer-matched' needs reference masks (CLI: --match FILE)")
            ref = check_masks(arch, reference_masks)
            rule = scaled_rule([ref[n].mean() for n in prunable_layers(arch, granularity)])
        order = LayerwiseOrder(arch, scores, rule, granularity=granularity)
    if target == "direct":
        kept = round(density * order.total)
        masks = order.masks(kept)
        return PruneResult(masks, measure(arch, masks, level=level), kept, order.total, None, scope,
                           density)
    res = target_effective(arch, order, density, level=level)
    return PruneResult(res.masks, res.measurement, res.kept, order.total, res.probes, scope,
                       density, res.met, res.message)
