"""Random masks under a quota: exact counts, Bernoulli, or nested (``docs/quotas.md``).

Every function takes ``rng`` (anything :func:`numpy.random.default_rng` accepts). Sampling uses
NumPy generators only, so the masks do not depend on the number of Numba threads.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_choice, check_quota, check_rng
from .architectures import Architecture
from .orders import LayerwiseOrder
from .quotas import Quota

__all__ = [
    "random_masks", "random_order",
]


MASK_MODELS = ("exact", "bernoulli", "nested")


def random_masks(arch: Architecture, q: Quota, *, model: str = "exact", rng=None) -> dict:
    """Random masks with per-layer densities from a quota.

    Parameters
    ----------
    arch : Architecture
    q : Quota
        From :func:`connsim.quota`.
    model : {'exact', 'bernoulli', 'nested'}
        ``exact``: layer ``l`` keeps exactly ``q.kept[l]`` weights chosen uniformly.
        ``bernoulli``: each weight kept independently with probability ``q.densities[l]``.
        ``nested``: one random priority per weight; the layer keeps its ``q.kept[l]`` highest
        priorities, so masks drawn with the same ``rng`` seed at lower densities are subsets.
    rng : seed or Generator, optional

    Returns
    -------
    dict of str to ndarray of bool
        One mask per prunable layer, in PyTorch layout.

    See Also
    --------
    connsim.quotas.quota : The quota the masks follow.
    random_order : A nested random order, for effective targeting.
    connsim.montecarlo.monte_carlo : Many random masks, counted.

    Examples
    --------
    >>> from connsim import get_arch, quota
    >>> arch = get_arch("lenet-300-100")
    >>> m = random_masks(arch, quota(arch, "uniform", 0.01), rng=0)
    >>> sum(int(v.sum()) for v in m.values())
    2662
    """
    check_choice(model, MASK_MODELS, "model")
    check_quota(q, arch)
    rng = check_rng(rng)
    if model == "nested":
        return random_order(arch, rng=rng).masks_from_counts(q.kept)
    out = {}
    for name, d, k in zip(arch.layer_names, q.densities, q.kept, strict=True):
        shape = arch.weight_shape(name)
        if model == "bernoulli":
            out[name] = rng.random(shape) < d
        else:
            flat = np.zeros(int(np.prod(shape)), dtype=bool)
            flat[rng.choice(flat.size, size=int(k), replace=False)] = True
            out[name] = flat.reshape(shape)
    return out


def random_order(arch: Architecture, rule="uniform", *, rng=None) -> LayerwiseOrder:
    """Random nested order: one random priority (a permutation rank) per weight in each layer.

    Parameters
    ----------
    arch : Architecture
        The network.
    rule : str or callable
        Quota rule that splits each kept count over the layers.
    rng : seed or Generator, optional
        Anything :func:`numpy.random.default_rng` accepts.

    Returns
    -------
    LayerwiseOrder
        Random pruning under ``rule`` at any kept count, with nested masks.

    See Also
    --------
    random_masks : Masks at one density.
    connsim.targeting.target_effective : Random pruning to an effective density.

    Examples
    --------
    >>> from connsim import get_arch
    >>> arch = get_arch("lenet-300-100")
    >>> order = random_order(arch, "igq", rng=0)
    >>> small, large = order.masks(1000), order.masks(2000)
    >>> all((small[n] <= large[n]).all() for n in arch.layer_names)
    True
    """
    rng = check_rng(rng)
    ranks = {n.name: rng.permutation(arch.n_params(n)).reshape(arch.weight_shape(n))
             for n in arch.layers}
    return LayerwiseOrder(arch, ranks, rule, ranks=True)
