"""Group criteria of the granularity study (Heyman & Zylberberg 2024; ``docs/granularity.md``).

Scores of the groups of one granularity (higher = keep) for the network in a state (trained or at
initialisation), under its current masks:

* ``random``: uniform priorities;
* ``magnitude``: the block mean ``|w|`` (a kernel's ``kh*kw`` weights, a channel's incoming filter,
  a node's incoming row; ``|w|`` at weight granularity);
* ``snip``: ``|dL/dm|`` for the group's mask ``m`` on one batch of ``samples`` training examples
  (the plain batch gradient of the mean cross-entropy, BatchNorm in training mode). A weight
  group's mask multiplies its weights, so the score is ``|sum of w dL/dw|`` over the group; under
  output semantics a unit's mask multiplies its output ``a`` and the score is ``|sum of a dL/da|``;
* ``stat`` (channel and node granularity): ``-alpha / (mu_u + 1e-8) + sigma_u / beta`` on the
  post-mask outputs of ``samples`` training examples in evaluation mode, with ``mu_u`` the mean of
  unit ``u``'s per-example value (a channel's spatial mean) and ``sigma_u`` its standard deviation
  over the examples (``ddof=1``); ``alpha = beta = 1``. Weights semantics read the same point
  (after the activation, or after the residual add) without masking anything;
* ``bad-<criterion>``: the negated scores, so the highest-scoring groups go first (a control).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._validation import InvalidArgument, check_int, check_rng
from .architectures import Architecture
from .granularity import (
    UNIT_GRANULARITIES,
    UnitMasks,
    check_granularity,
    check_semantics,
    group_shape,
    to_groups,
    unit_masks,
    unit_sites,
)
from .trainer.backend import to_numpy
from .trainer.data import Dataset
from .trainer.layers import cross_entropy
from .trainer.network import Network

__all__ = [
    "criterion_scores",
]


CRITERIA = ("random", "magnitude", "snip", "stat")
STAT_EPS = 1e-8


def check_criterion(criterion, granularity: str) -> str:
    """``criterion`` if it is one of :data:`CRITERIA` or ``bad-`` + one of them (not random), and
    defined at ``granularity`` (``stat`` scores units: channel and node only)."""
    check_granularity(granularity)
    base = criterion[4:] if isinstance(criterion, str) and criterion.startswith("bad-") else criterion
    if base not in CRITERIA or criterion == "bad-random":
        raise InvalidArgument("criterion", f"one of {list(CRITERIA)} or bad-<criterion>",
                              criterion, "bad-magnitude, bad-snip and bad-stat prune the highest "
                                         "scores first")
    if base == "stat" and granularity not in UNIT_GRANULARITIES:
        raise InvalidArgument("criterion", "'stat' only at channel or node granularity",
                              criterion, "the activation statistic scores units; use magnitude "
                                         "or snip for weights and kernels")
    return criterion


def _sample(data: Dataset | None, samples: int, rng) -> tuple[np.ndarray, np.ndarray]:
    if data is None:
        raise InvalidArgument("data", "a dataset for snip and stat", None,
                              "these criteria read training examples; pass data=")
    n = len(data.y_train)
    check_int(samples, "samples", 1, fix="the number of training examples snip and stat read")
    idx = np.sort(rng.choice(n, min(samples, n), replace=False))
    return data.x_train[idx], data.y_train[idx]


def _probe(arch: Architecture, state: Mapping, masks: Mapping, units: UnitMasks | None,
           backend: str) -> Network:
    net = Network(arch, masks, dtype="float32", rng=0, backend=backend, units=units)
    net.load_state_dict(state)
    return net


def _unit_probe(arch, masks, granularity, semantics, exclude) -> UnitMasks:
    """Unit masks at the study's sites: the real ones under output semantics, all ones (which
    mask nothing) to read the same points under weights semantics."""
    units = unit_masks(arch, masks, granularity, semantics, exclude)
    if units is not None:
        return units
    sites = set(unit_sites(arch, granularity, exclude).values())
    return UnitMasks({s: np.ones(arch[s].channels, dtype=bool) for s in sites}, "post")


def _site_to_layers(arch, granularity, exclude, values: dict) -> dict:
    """Per prunable layer, the unit values of its site."""
    return {layer: values[site] for layer, site in unit_sites(arch, granularity, exclude).items()}


def _full(arch: Architecture, granularity: str, per_layer: dict) -> dict:
    """Group-shaped scores for every layer (layers without a score get zeros: they are not in
    the order anyway)."""
    return {n: np.asarray(per_layer[n], dtype=np.float64) if n in per_layer
            else np.zeros(group_shape(arch, n, granularity)) for n in arch.layer_names}


def criterion_scores(criterion: str, arch: Architecture, state: Mapping, masks: Mapping, *,
                     granularity: str, semantics: str | None = None, exclude=(),
                     data: Dataset | None = None, samples: int = 2000, rng=None,
                     backend: str = "numpy", alpha: float = 1.0, beta: float = 1.0) -> dict:
    """Group scores of ``criterion`` (module docstring), higher = keep.

    Parameters
    ----------
    criterion : str
        One of :data:`CRITERIA`, or ``bad-`` + one of them.
    arch : Architecture
    state : mapping
        Network parameters (``Network.state_dict`` form).
    masks : mapping
        The current weight masks (group-expanded).
    granularity : {'weight', 'kernel', 'channel', 'node'}
    semantics : {'weights', 'output'}, optional
        Unit semantics (:func:`connsim.granularity.check_semantics`).
    exclude : sequence of str
        Layer-name patterns that are not pruned.
    data : Dataset, optional
        Needed by ``snip`` and ``stat``.
    samples : int
        Training examples ``snip`` and ``stat`` read (drawn once with ``rng``).
    rng : seed or Generator, optional
    backend : str
    alpha, beta : float
        The ``stat`` weights.

    Returns
    -------
    dict of str to ndarray
        Group-shaped scores for every layer.

    See Also
    --------
    connsim.imp.GroupPruning : IMP that ranks groups by these scores.
    connsim.granularity : The groups.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch, ones_masks
    >>> from connsim.trainer.network import Network
    >>> arch = get_arch("mlp:4-3-2")
    >>> state = Network(arch, rng=0).state_dict()
    >>> s = criterion_scores("magnitude", arch, state, ones_masks(arch), granularity="node")
    >>> s["fc1"].shape
    (3,)
    """
    check_criterion(criterion, granularity)
    semantics = check_semantics(granularity, semantics)
    rng = check_rng(rng)
    bad = criterion.startswith("bad-")
    base = criterion[4:] if bad else criterion
    weights = {n: np.asarray(state[f"{n}.weight"], dtype=np.float64) for n in arch.layer_names}
    if base == "random":
        scores = {n: rng.random(group_shape(arch, n, granularity)) for n in arch.layer_names}
    elif base == "magnitude":
        scores = to_groups(arch, {n: np.abs(w) for n, w in weights.items()}, granularity, "mean")
    elif base == "snip" and semantics != "output":
        x, y = _sample(data, samples, rng)
        net = _probe(arch, state, masks, None, backend)
        _, g = cross_entropy(net.xp, net.forward(x, train=True), net.xp.asarray(y))
        net.backward(g)
        grads = {n: to_numpy(v).astype(np.float64) for n, v in net.weight_gradients().items()}
        scores = to_groups(arch, {n: weights[n] * grads[n] for n in arch.layer_names},
                           granularity, "abs-sum")
    else:
        x, y = _sample(data, samples, rng)
        units = _unit_probe(arch, masks, granularity, semantics, exclude)
        net = _probe(arch, state, masks, units, backend)
        if base == "snip":
            _, g = cross_entropy(net.xp, net.forward(x, train=True), net.xp.asarray(y))
            net.backward(g)
            values = {s: np.abs(to_numpy(u.mask_grad).astype(np.float64))
                      for s, u in net.unit_masks.items()}
        else:
            for u in net.unit_masks.values():
                u.record = True
            net.forward(x, train=False)
            values = {}
            for s, u in net.unit_masks.items():
                out = to_numpy(u.output).astype(np.float64)
                per = out.reshape(out.shape[0], out.shape[1], -1).mean(axis=2)  # (examples, units)
                mu = per.mean(axis=0)
                sigma = per.std(axis=0, ddof=1) if len(per) > 1 else np.zeros_like(mu)
                values[s] = -alpha / (mu + STAT_EPS) + sigma / beta
        scores = _full(arch, granularity, _site_to_layers(arch, granularity, exclude, values))
    return {n: -v if bad else v for n, v in scores.items()}
