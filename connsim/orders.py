"""Nested pruning orders and the one exact top-k that turns scores into masks.

An order ranks the weights from most to least important (``keep rank`` 0 is kept longest). The mask
with ``K`` kept weights keeps the ``K`` best, so masks at decreasing ``K`` are subsets of each other,
which effective targeting needs (``docs/quotas.md``). Ties are broken deterministically by flat index: among
equal scores the lower index is kept longer.

* :class:`GlobalOrder`: one ranking over all layers (global threshold).
* :class:`LayerwiseOrder`: a ranking inside each layer; the per-layer counts at ``K`` come from a
  quota rule evaluated at density ``K / N``.

At channel granularity the classifier's channels (the classes) are not part of an order: they are
always kept, and counts, totals and quotas cover the other layers only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ._validation import InvalidArgument, check_int, check_shape
from .architectures import Architecture
from .granularity import expand, group_shape, prunable_layers
from .quotas import InfeasibleQuota, check_rule, feasible_densities, kept_counts, quota, restrict

__all__ = [
    "GlobalOrder", "LayerwiseOrder", "keep_ranks", "topk_masks",
]


def keep_ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of each entry when sorted by descending score, ties by ascending flat index.

    Parameters
    ----------
    scores : ndarray
        Scores of any shape (higher = kept longer).

    Returns
    -------
    ndarray of int64
        Ranks of the same shape: 0 for the entry kept longest; keeping the ``k`` entries with
        ranks below ``k`` is the exact top-k.

    See Also
    --------
    topk_masks : Per-layer top-k masks from scores.
    GlobalOrder : Ranks all layers together.

    Examples
    --------
    >>> import numpy as np
    >>> keep_ranks(np.array([0.5, 2.0, 0.5, 1.0])).tolist()
    [2, 0, 3, 1]
    """
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    if np.isnan(flat).any():
        raise InvalidArgument("scores", "comparable numbers", got="NaN",
                              fix="every weight needs a score that can be ranked")
    order = np.argsort(-flat, kind="stable")
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks.reshape(np.shape(scores))


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` largest entries of a 1-D array, ties by lower index: the same
    set as ``keep_ranks(values) < k``, in O(n) (a partition instead of a sort).

    Examples
    --------
    >>> top_k(np.array([0.5, 2.0, 0.5, 1.0]), 3).tolist()
    [True, True, False, True]
    """
    v = np.asarray(values, dtype=np.float64)
    if k <= 0:
        return np.zeros(v.size, dtype=bool)
    if k >= v.size:
        return np.ones(v.size, dtype=bool)
    threshold = np.partition(v, v.size - k)[v.size - k]
    out = v > threshold
    ties = np.flatnonzero(v == threshold)
    out[ties[: k - int(out.sum())]] = True
    return out


def _check_scores(arch: Architecture, scores: Mapping, granularity: str = "weight") -> dict:
    names = arch.layer_names
    if set(scores) != set(names):
        raise InvalidArgument("scores", f"one array for each layer, exactly {list(names)}",
                              got=f"layers {list(scores)}")
    out = {}
    for n in names:
        out[n] = np.asarray(scores[n])
        check_shape(out[n].shape, group_shape(arch, n, granularity), f"scores of layer {n!r}",
                    f"one score per group at {granularity} granularity")
    return out


class GlobalOrder:
    """One ranking of all prunable weights (or groups) of ``arch`` by ``scores``.

    Counts are in groups; :meth:`masks` returns weight masks. Layers matching ``exclude`` patterns
    (and those :func:`~connsim.granularity.prunable_layers` leaves out at ``granularity``) are
    always kept. Masks along the order are nested: keeping fewer groups keeps a subset.

    Parameters
    ----------
    arch : Architecture
        The network.
    scores : dict of str to ndarray
        Scores of the group shape of ``granularity`` (weight-shaped by default; higher = more
        important), or precomputed keep ranks with ``ranks=True``.
    ranks : bool
        Whether ``scores`` are keep ranks (0 = kept longest) instead of scores.
    granularity : {'weight', 'kernel', 'channel', 'node'}
        What one group is (:mod:`connsim.granularity`).
    exclude : sequence of str
        Layer-name patterns left out of the order.

    See Also
    --------
    LayerwiseOrder : Per-layer rankings with a quota rule.
    connsim.targeting.target_effective : Bisects along an order for an effective density.
    keep_ranks : The ranking, with its tie-breaking.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:2-2-1")
    >>> order = GlobalOrder(arch, {"fc1": np.array([[4., 3.], [2., 1.]]), "fc2": np.array([[5., 0.]])})
    >>> {k: v.astype(int).tolist() for k, v in order.masks(3).items()}
    {'fc1': [[1, 1], [0, 0]], 'fc2': [[1, 0]]}
    """

    def __init__(self, arch: Architecture, scores: Mapping, *, ranks: bool = False,
                 granularity: str = "weight", exclude=()):
        scores = _check_scores(arch, scores, granularity)
        self.arch, self.granularity = arch, granularity
        self.layers = prunable_layers(arch, granularity, exclude)
        self.total = int(sum(scores[n].size for n in self.layers))
        self.ranks = {n: np.full(scores[n].shape, -1, dtype=np.int64)  # always kept
                      for n in arch.layer_names if n not in self.layers}
        if ranks:
            self.ranks.update({n: np.asarray(scores[n], dtype=np.int64) for n in self.layers})
        else:
            flat = keep_ranks(np.concatenate([scores[n].reshape(-1) for n in self.layers]))
            start = 0
            for n in self.layers:
                size = scores[n].size
                self.ranks[n] = flat[start:start + size].reshape(scores[n].shape)
                start += size

    def kept_range(self) -> tuple[int, int]:
        """Every kept count in ``[0, total]`` is valid for a global order."""
        return 0, self.total

    def masks(self, kept: int) -> dict:
        """Weight masks keeping the ``kept`` best-ranked groups overall."""
        kept = _check_kept(kept, self.total)
        return expand(self.arch, {n: self.ranks[n] < kept for n in self.arch.layer_names},
                      self.granularity)


class LayerwiseOrder:
    """Per-layer rankings; the count of each layer at ``K`` kept groups follows a quota rule.

    Parameters
    ----------
    arch : Architecture
        The network.
    scores : dict of str to ndarray
        Scores of the group shape of ``granularity`` (higher = more important), or keep ranks
        with ``ranks=True``.
    rule : str or callable
        Quota rule evaluated at density ``K / total`` for every ``K`` (see
        :func:`connsim.quotas.quota`); its densities are applied to each layer's number of groups.
    ranks : bool
        Whether ``scores`` are keep ranks (0 = kept longest) instead of scores.
    granularity : {'weight', 'kernel', 'channel', 'node'}
        What one group is (:mod:`connsim.granularity`).
    exclude : sequence of str
        Layer-name patterns left out of the order (always kept;
        :func:`~connsim.granularity.prunable_layers`).

    See Also
    --------
    GlobalOrder : One ranking over all layers.
    connsim.sampling.random_order : A random layerwise order.
    connsim.targeting.target_effective : Bisects along an order for an effective density.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("lenet-300-100")
    >>> rng = np.random.default_rng(0)
    >>> order = LayerwiseOrder(arch, {n: rng.random(arch.weight_shape(n)) for n in arch.layer_names},
    ...                        "igq")
    >>> order.counts(2662).tolist()
    [1087, 1053, 522]
    """

    def __init__(self, arch: Architecture, scores: Mapping, rule="uniform", *, ranks: bool = False,
                 granularity: str = "weight", exclude=()):
        scores = _check_scores(arch, scores, granularity)
        self.arch, self.rule, self.granularity = arch, check_rule(rule), granularity
        self.layers = prunable_layers(arch, granularity, exclude)
        self._view = restrict(arch, self.layers)
        self.params = np.array([scores[n].size for n in self.layers], dtype=np.int64)
        self.total = int(self.params.sum())
        self.ranks = {n: np.full(scores[n].shape, -1, dtype=np.int64)  # always kept
                      for n in arch.layer_names if n not in self.layers}
        self.ranks.update({n: (np.asarray(scores[n], dtype=np.int64) if ranks
                               else keep_ranks(scores[n])) for n in self.layers})
        self._range = None

    def _feasible(self, kept: int) -> bool:
        try:
            quota(self._view, self.rule, kept / self.total)
        except InfeasibleQuota:
            return False
        return True

    def kept_range(self) -> tuple[int, int]:
        """The kept counts ``(k_min, k_max)`` at which the quota rule is feasible: all of
        ``[0, total]`` for most rules, less for ``uniform+`` and ``erk-redistribute``.

        Raises
        ------
        InfeasibleQuota
            If the rule is feasible at no kept count.
        """
        if self._range is None:
            span = feasible_densities(self._view, self.rule)
            if span is None:
                raise InfeasibleQuota(f"rule {self.rule!r} has no valid quota at any density")
            lo = max(0, min(self.total, math.ceil(span[0] * self.total)))
            hi = max(0, min(self.total, math.floor(span[1] * self.total)))
            while lo < self.total and not self._feasible(lo):  # rounding at the ends
                lo += 1
            while hi > lo and not self._feasible(hi):
                hi -= 1
            self._range = (lo, hi)
        return self._range

    def counts(self, kept: int) -> np.ndarray:
        """Kept groups of each layer in :attr:`layers` at ``kept`` groups in total."""
        kept = _check_kept(kept, self.total)
        q = quota(self._view, self.rule, kept / self.total)
        return kept_counts(self.params, q.densities, kept)

    def masks_from_counts(self, counts) -> dict:
        """Weight masks keeping the ``counts[l]`` best-ranked groups of each layer ``l`` of
        :attr:`layers` (and every group of the layers left out of the order)."""
        counts = dict(zip(self.layers, counts, strict=True))
        return expand(self.arch, {n: self.ranks[n] < int(counts.get(n, 0))
                                  for n in self.arch.layer_names}, self.granularity)

    def masks(self, kept: int) -> dict:
        """Weight masks keeping exactly ``kept`` groups, split over layers by the quota rule."""
        return self.masks_from_counts(self.counts(kept))


def _check_kept(kept, total: int) -> int:
    return check_int(kept, "kept", 0, total, fix=f"the order ranks {total} groups")


def topk_masks(arch: Architecture, scores: Mapping, counts, granularity: str = "weight") -> dict:
    """Exact per-layer top-k: layer ``l`` keeps its ``counts[l]`` highest-scoring groups.

    Ties are broken by the lower flat index, so the masks are deterministic.

    Parameters
    ----------
    arch : Architecture
        The network.
    scores : mapping of str to ndarray
        Scores of the group shape of ``granularity``, one array per prunable layer.
    counts : sequence of int
        Groups to keep in each layer, in layer order.
    granularity : {'weight', 'kernel', 'channel', 'node'}
        What one group is.

    Returns
    -------
    dict of str to ndarray of bool
        Weight masks (every weight of a kept group is kept).

    See Also
    --------
    keep_ranks : The ranking.
    connsim.quotas.quota : Per-layer counts of a quota rule.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:2-2-1")
    >>> masks = topk_masks(arch, {"fc1": np.array([[4., 3.], [2., 1.]]), "fc2": np.array([[5., 0.]])},
    ...                    [1, 1])
    >>> {k: v.astype(int).tolist() for k, v in masks.items()}
    {'fc1': [[1, 0], [0, 0]], 'fc2': [[1, 0]]}
    """
    scores = _check_scores(arch, scores, granularity)
    counts = np.asarray(counts, dtype=np.int64)
    return expand(arch, {n: keep_ranks(scores[n]) < c
                         for n, c in zip(arch.layer_names, counts, strict=True)}, granularity)
