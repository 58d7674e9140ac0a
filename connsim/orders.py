"""Nested pruning orders and the one exact top-k that turns scores into masks.

An order ranks the weights from most to least important (``keep rank`` 0 is kept longest). The mask
with ``K`` kept weights keeps the ``K`` best, so masks at decreasing ``K`` are subsets of each other,
which effective targeting needs (SPEC 6). Ties are broken deterministically by flat index: among
equal scores the lower index is kept longer.

* :class:`GlobalOrder`: one ranking over all layers (global threshold).
* :class:`LayerwiseOrder`: a ranking inside each layer; the per-layer counts at ``K`` come from a
  quota rule evaluated at density ``K / N``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .architectures import Architecture
from .granularity import expand, group_shape, group_sizes
from .quotas import kept_counts, quota


def keep_ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of each entry when sorted by descending score, ties by ascending flat index.

    Examples
    --------
    >>> keep_ranks(np.array([0.5, 2.0, 0.5, 1.0])).tolist()
    [2, 0, 3, 1]
    """
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    if np.isnan(flat).any():
        raise ValueError("scores contain NaN; every weight needs a comparable score")
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
        raise ValueError(f"scores need exactly the layers {list(names)}, got {list(scores)}")
    out = {}
    for n in names:
        s = np.asarray(scores[n])
        expected = group_shape(arch, n, granularity)
        if s.shape != expected:
            raise ValueError(f"scores of layer {n!r} have shape {s.shape}, expected {expected} "
                             f"({granularity} granularity)")
        out[n] = s
    return out


class GlobalOrder:
    """One ranking of all prunable weights (or groups) of ``arch`` by ``scores``.

    ``scores`` is a dict of arrays of the group shape of ``granularity`` (weight-shaped by
    default), or precomputed keep ranks with ``ranks=True``. Counts are in groups;
    :meth:`masks` returns weight masks.

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
                 granularity: str = "weight"):
        scores = _check_scores(arch, scores, granularity)
        self.arch, self.granularity = arch, granularity
        self.total = int(group_sizes(arch, granularity).sum())
        if ranks:
            self.ranks = {k: np.asarray(v, dtype=np.int64) for k, v in scores.items()}
        else:
            flat = keep_ranks(np.concatenate([scores[n].reshape(-1) for n in arch.layer_names]))
            self.ranks, start = {}, 0
            for n in arch.layer_names:
                size = scores[n].size
                self.ranks[n] = flat[start:start + size].reshape(scores[n].shape)
                start += size

    def masks(self, kept: int) -> dict:
        """Weight masks keeping the ``kept`` best-ranked groups overall."""
        kept = _check_kept(kept, self.total)
        return expand(self.arch, {k: r < kept for k, r in self.ranks.items()}, self.granularity)


class LayerwiseOrder:
    """Per-layer rankings; the count of each layer at ``K`` kept groups follows a quota rule.

    Parameters
    ----------
    arch : Architecture
    scores : dict of str to ndarray
        Scores of the group shape of ``granularity`` (higher = more important), or keep ranks
        with ``ranks=True``.
    rule : str or callable
        Quota rule evaluated at density ``K / total`` for every ``K`` (see :func:`connsim.quota`);
        its densities are applied to each layer's number of groups.
    granularity : {'weight', 'kernel', 'channel'}
    """

    def __init__(self, arch: Architecture, scores: Mapping, rule="uniform", *, ranks: bool = False,
                 granularity: str = "weight"):
        scores = _check_scores(arch, scores, granularity)
        self.arch, self.rule, self.granularity = arch, rule, granularity
        self.params = group_sizes(arch, granularity)
        self.total = int(self.params.sum())
        self.ranks = {k: (np.asarray(v, dtype=np.int64) if ranks else keep_ranks(v))
                      for k, v in scores.items()}

    def counts(self, kept: int) -> np.ndarray:
        kept = _check_kept(kept, self.total)
        q = quota(self.arch, self.rule, kept / self.total)
        return kept_counts(self.params, q.densities, kept)

    def masks_from_counts(self, counts) -> dict:
        """Weight masks keeping the ``counts[l]`` best-ranked groups of each layer ``l``."""
        return expand(self.arch, {n: self.ranks[n] < int(c) for n, c in
                                  zip(self.arch.layer_names, counts, strict=True)},
                      self.granularity)

    def masks(self, kept: int) -> dict:
        """Weight masks keeping exactly ``kept`` groups, split over layers by the quota rule."""
        return self.masks_from_counts(self.counts(kept))


def _check_kept(kept, total: int) -> int:
    kept = int(kept)
    if not 0 <= kept <= total:
        raise ValueError(f"kept must lie in [0, {total}], got {kept}")
    return kept


def topk_masks(arch: Architecture, scores: Mapping, counts, granularity: str = "weight") -> dict:
    """Exact per-layer top-k: layer ``l`` keeps its ``counts[l]`` highest-scoring groups (ties by
    lower flat index); returns weight masks."""
    scores = _check_scores(arch, scores, granularity)
    counts = np.asarray(counts, dtype=np.int64)
    return expand(arch, {n: keep_ranks(scores[n]) < c
                         for n, c in zip(arch.layer_names, counts, strict=True)}, granularity)
