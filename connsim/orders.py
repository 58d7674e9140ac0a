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


def _check_scores(arch: Architecture, scores: Mapping) -> dict:
    names = arch.layer_names
    if set(scores) != set(names):
        raise ValueError(f"scores need exactly the layers {list(names)}, got {list(scores)}")
    out = {}
    for n in names:
        s = np.asarray(scores[n])
        if s.shape != arch.weight_shape(n):
            raise ValueError(f"scores of layer {n!r} have shape {s.shape}, expected "
                             f"{arch.weight_shape(n)}")
        out[n] = s
    return out


class GlobalOrder:
    """One ranking of all prunable weights of ``arch`` by ``scores`` (a dict of weight-shaped
    arrays, or precomputed keep ranks with ``ranks=True``).

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:2-2-1")
    >>> order = GlobalOrder(arch, {"fc1": np.array([[4., 3.], [2., 1.]]), "fc2": np.array([[5., 0.]])})
    >>> {k: v.astype(int).tolist() for k, v in order.masks(3).items()}
    {'fc1': [[1, 1], [0, 0]], 'fc2': [[1, 0]]}
    """

    def __init__(self, arch: Architecture, scores: Mapping, *, ranks: bool = False):
        scores = _check_scores(arch, scores)
        self.arch = arch
        self.total = arch.total_params
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
        """Masks keeping the ``kept`` best-ranked weights overall."""
        kept = _check_kept(kept, self.total)
        return {k: r < kept for k, r in self.ranks.items()}


class LayerwiseOrder:
    """Per-layer rankings; the count of each layer at ``K`` kept weights follows a quota rule.

    Parameters
    ----------
    arch : Architecture
    scores : dict of str to ndarray
        Weight-shaped scores (higher = more important), or keep ranks with ``ranks=True``.
    rule : str or callable
        Quota rule evaluated at density ``K / N`` for every ``K`` (see :func:`connsim.quota`).
    """

    def __init__(self, arch: Architecture, scores: Mapping, rule="uniform", *, ranks: bool = False):
        scores = _check_scores(arch, scores)
        self.arch, self.rule = arch, rule
        self.total = arch.total_params
        self.params = np.array([arch.n_params(n) for n in arch.layer_names], dtype=np.int64)
        self.ranks = {k: (np.asarray(v, dtype=np.int64) if ranks else keep_ranks(v))
                      for k, v in scores.items()}

    def counts(self, kept: int) -> np.ndarray:
        kept = _check_kept(kept, self.total)
        q = quota(self.arch, self.rule, kept / self.total)
        return kept_counts(self.params, q.densities, kept)

    def masks_from_counts(self, counts) -> dict:
        """Masks keeping the ``counts[l]`` best-ranked weights of each layer ``l``."""
        return {n: self.ranks[n] < int(c)
                for n, c in zip(self.arch.layer_names, counts, strict=True)}

    def masks(self, kept: int) -> dict:
        """Masks keeping exactly ``kept`` weights, split over layers by the quota rule."""
        return self.masks_from_counts(self.counts(kept))


def _check_kept(kept, total: int) -> int:
    kept = int(kept)
    if not 0 <= kept <= total:
        raise ValueError(f"kept must lie in [0, {total}], got {kept}")
    return kept


def topk_masks(arch: Architecture, scores: Mapping, counts) -> dict:
    """Exact per-layer top-k masks: layer ``l`` keeps its ``counts[l]`` highest scores (ties by
    lower flat index)."""
    scores = _check_scores(arch, scores)
    counts = np.asarray(counts, dtype=np.int64)
    return {n: keep_ranks(scores[n]) < c for n, c in zip(arch.layer_names, counts, strict=True)}
