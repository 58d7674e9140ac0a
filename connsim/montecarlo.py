"""Monte Carlo of random pruning: the truth the theory is checked against (``docs/theory.md``).

Every sample draws a mask under the chosen model and counts its effective weights. Sample ``s``
uses its own seed (from :class:`numpy.random.SeedSequence`), so results do not depend on the number
of threads. The channel level runs in one parallel Numba kernel that samples kept positions
directly; the position level runs the exact position-level engine on full masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from . import _kernels
from ._validation import (
    check_choice,
    check_int,
    check_level,
    check_quota,
    check_rng,
    check_samples,
)
from .architectures import Architecture
from .effective import connectivity
from .files import json_safe
from .memory import check_memory
from .ops import lower
from .quotas import Quota
from .sampling import MASK_MODELS as SAMPLING_MODELS
from .sampling import random_masks

# the mask models of connsim.sampling that draw one mask at a time ('nested' is an order)
MC_MASK_MODELS = tuple(m for m in SAMPLING_MODELS if m != "nested")
CHUNK = 256  # samples per kernel call


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default).

    Parameters
    ----------
    hits : int
        Successes (here: disconnected samples).
    n : int
        Trials (samples).
    z : float
        Normal quantile of the interval (1.96: 95 %).

    Returns
    -------
    tuple of float
        ``(low, high)`` within [0, 1]; ``(0, 1)`` when ``n`` is 0.

    See Also
    --------
    MonteCarlo.p_disconnected_ci : The interval of a run's P(disconnected).

    Examples
    --------
    >>> [round(x, 4) for x in wilson_interval(1297, 2000)]
    [0.6273, 0.6691]
    >>> wilson_interval(0, 2000)[1] < 0.002
    True
    """
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class MonteCarlo:
    """Per-sample results of a Monte Carlo run.

    Attributes
    ----------
    effective : ndarray, shape (samples, layers)
        Effective weights per sample and layer.
    disconnected : ndarray of bool, shape (samples,)
    active : ndarray, shape (samples, layers)
        Active units (channels for convs) of each layer's output.

    See Also
    --------
    monte_carlo : Computes it.
    connsim.theory.Prediction : The theory it checks.

    Examples
    --------
    >>> from connsim import get_arch, quota
    >>> arch = get_arch("lenet-300-100")
    >>> mc = monte_carlo(arch, quota(arch, "uniform", 0.01), samples=50, rng=0)
    >>> mc.samples, mc.effective.shape, mc.p_disconnected
    (50, (50, 3), 0.0)
    """

    arch: str
    names: tuple[str, ...]
    params: np.ndarray
    mask_model: str
    level: str
    effective: np.ndarray
    disconnected: np.ndarray
    active: np.ndarray

    @property
    def samples(self) -> int:
        """Number of samples."""
        return self.effective.shape[0]

    @property
    def total_effective(self) -> np.ndarray:
        """Effective weights of each sample, summed over layers."""
        return self.effective.sum(axis=1)

    @property
    def mean_effective_params(self) -> float:
        """Mean effective weights over the samples."""
        return float(self.total_effective.mean())

    @property
    def stderr(self) -> float:
        """Standard error of the mean effective weights."""
        t = self.total_effective
        return float(t.std(ddof=1) / math.sqrt(t.size)) if t.size > 1 else math.nan

    @property
    def p_disconnected(self) -> float:
        """Fraction of the samples with no input-output path."""
        return float(self.disconnected.mean())

    @property
    def mean_effective_params_connected(self) -> float:
        """Mean effective weights over the connected samples (``nan`` if none is connected)."""
        t = self.total_effective[~self.disconnected]
        return float(t.mean()) if t.size else math.nan

    @property
    def stderr_connected(self) -> float:
        """Standard error of :attr:`mean_effective_params_connected`."""
        t = self.total_effective[~self.disconnected]
        return float(t.std(ddof=1) / math.sqrt(t.size)) if t.size > 1 else math.nan

    @property
    def p_disconnected_ci(self) -> tuple[float, float]:
        """95 % Wilson interval of :attr:`p_disconnected`."""
        return wilson_interval(int(self.disconnected.sum()), self.samples)

    def effective_compression_band(self, z: float = 2.0) -> tuple[float, float, float]:
        """Effective compression ``N / mean`` with its error band ``N / (mean ± z · stderr)``.

        Parameters
        ----------
        z : float
            Half-width of the band of the mean effective weights, in standard errors.

        Returns
        -------
        compression, low, high : float
            ``N`` is the number of prunable weights; a quotient whose denominator is not positive
            is ``inf``. One sample has no standard error: its band is the point.

        Examples
        --------
        >>> mc = MonteCarlo("toy", ("fc1",), np.array([100]), "bernoulli", "channel",
        ...                 np.array([[8], [10], [12]]), np.zeros(3, bool), np.ones((3, 1)))
        >>> [round(c, 3) for c in mc.effective_compression_band()]
        [10.0, 8.124, 13.003]
        >>> mc.effective_compression_band(z=10)[2]
        inf
        """
        n, m = float(self.params.sum()), self.mean_effective_params
        half = z * self.stderr if self.samples > 1 else 0.0
        low, centre, high = (n / x if x > 0 else math.inf for x in (m + half, m, m - half))
        return centre, low, high

    def quantiles(self, qs=(0.05, 0.5, 0.95)) -> dict:
        """Quantiles ``qs`` of the effective weights, keyed by ``str(q)``."""
        return {str(q): float(np.quantile(self.total_effective, q)) for q in qs}

    def to_dict(self) -> dict:
        """JSON-ready summary (standard errors ``None`` where undefined)."""
        lo, hi = self.p_disconnected_ci
        return {
            "samples": self.samples, "mask_model": self.mask_model, "level": self.level,
            "mean_effective_params": self.mean_effective_params, "stderr": json_safe(self.stderr),
            "mean_effective_params_connected": json_safe(self.mean_effective_params_connected),
            "stderr_connected": json_safe(self.stderr_connected),
            "p_disconnected": self.p_disconnected, "p_disconnected_ci95": [lo, hi],
            "quantiles": self.quantiles(),
            "mean_active_units": [float(x) for x in self.active.mean(axis=0)],
        }


@dataclass(frozen=True)
class _Lowered:
    """The lowering of :func:`connsim.ops.lower` as the arrays the Monte Carlo kernels read."""

    offsets: np.ndarray  # node ranges of the groups in one flat array
    layers: tuple  # l_src, l_dst, l_a, l_b, l_k: per layer, in arch.layer_names order
    edges: tuple  # e_kind, e_src, e_dst, e_layer, e_off: sorted by destination

    @classmethod
    def of(cls, arch: Architecture) -> _Lowered:
        topo = lower(arch)
        offsets = np.zeros(len(topo.sizes) + 1, dtype=np.int64)
        np.cumsum(topo.sizes, out=offsets[1:])
        lays = topo.layer_edges
        # b = 0 marks a layer with one group, so the kernels skip the group arithmetic
        one = [e.b == topo.sizes[e.dst] for e in lays]
        layers = (*(np.array([getattr(e, f) for e in lays], dtype=np.int64)
                    for f in ("src", "dst", "a")),
                  np.array([0 if o else e.b for e, o in zip(lays, one, strict=True)], np.int64),
                  np.array([e.k for e in lays], dtype=np.int64))
        index = {n: k for k, n in enumerate(arch.layer_names)}
        rows = [(e.layer is None, e.src, e.dst, -1 if e.layer is None else index[e.layer], e.offset)
                for e in topo.edges]
        table = np.array(rows, dtype=np.int64).reshape(-1, 5)
        return cls(offsets, layers, tuple(table[:, j].copy() for j in range(5)))


def count_effective(arch: Architecture, masks) -> tuple[np.ndarray, bool, np.ndarray]:
    """Monte Carlo's own count on one given mask: effective weights and active output nodes per
    layer, and whether the network is disconnected (channel level).

    This is the count every Monte Carlo sample runs (the same compiled routine), exposed so that
    it can be checked exactly against :func:`connsim.connectivity` on the same masks.

    Parameters
    ----------
    arch : Architecture
        The network.
    masks : mapping of str to array_like
        Binary masks keyed by layer name.

    Returns
    -------
    effective : ndarray of int
        Effective weights per prunable layer.
    disconnected : bool
        Whether no input-output path remains.
    active : ndarray of int
        Active output units (channels for convs) per prunable layer.

    See Also
    --------
    sampled_masks : The masks of one Monte Carlo sample, to recount.
    connsim.effective.connectivity : The reference it is checked against.

    Examples
    --------
    >>> from connsim import get_arch, ones_masks
    >>> eff, disc, active = count_effective(get_arch("mlp:4-3-2"), ones_masks(get_arch("mlp:4-3-2")))
    >>> eff.tolist(), disc, active.tolist()
    ([12, 6], False, [3, 2])
    """
    from .masks import check_masks

    canon = check_masks(arch, masks)
    low = _Lowered.of(arch)
    pos = [np.flatnonzero(canon[n]).astype(np.int64) for n in arch.layer_names]
    starts = np.concatenate([[0], np.cumsum([p.size for p in pos])]).astype(np.int64)
    flat = np.concatenate(pos) if pos else np.zeros(0, np.int64)
    eff = np.zeros(len(pos), np.int64)
    active = np.zeros(len(pos), np.int64)
    disc = _kernels.mc_count(flat, starts, low.offsets, *low.layers, *low.edges, eff, active)
    return eff, bool(disc), active


def _seed_sequence(rng) -> np.random.SeedSequence:
    if isinstance(rng, np.random.SeedSequence):
        return rng
    return np.random.SeedSequence(check_rng(rng).integers(0, 2**63))


def _check_mask_model(mask_model) -> str:
    return check_choice(mask_model, MC_MASK_MODELS, "mask_model",
                        "Monte Carlo draws one mask at a time ('nested' is an order)")


def sample_seeds(samples: int, rng=None) -> np.ndarray:
    """The per-sample seeds the channel-level :func:`monte_carlo` uses for ``rng``.

    Parameters
    ----------
    samples : int
        Number of samples.
    rng : seed or SeedSequence, optional
        What :func:`monte_carlo` was given as ``rng``.

    Returns
    -------
    ndarray of int64
        One seed per sample, in ``[0, 2**32)``.

    See Also
    --------
    sampled_masks : The masks a seed draws.

    Examples
    --------
    >>> sample_seeds(3, rng=0).tolist()
    [2871696860, 3480764256, 1411070928]
    """
    samples = check_samples(samples)
    return _seed_sequence(rng).generate_state(samples, dtype=np.uint32).astype(np.int64)


def sampled_masks(arch: Architecture, q: Quota, seed: int, mask_model="bernoulli") -> dict:
    """The masks that the channel-level Monte Carlo draws for a sample seeded ``seed``.

    ``seed`` is one of :func:`sample_seeds`; the masks let a sample be recounted by any other
    method.

    Parameters
    ----------
    arch : Architecture
        The network.
    q : Quota
        The quota of the run.
    seed : int
        One of the run's per-sample seeds.
    mask_model : {'bernoulli', 'exact'}
        The run's mask model.

    Returns
    -------
    dict of str to ndarray of bool
        One mask per prunable layer, in PyTorch layout.

    See Also
    --------
    sample_seeds : The seeds of a run.
    count_effective : Monte Carlo's count on given masks.

    Examples
    --------
    >>> from connsim import get_arch, quota
    >>> arch = get_arch("lenet-300-100")
    >>> q = quota(arch, "uniform", 0.01)
    >>> mc = monte_carlo(arch, q, samples=10, rng=0)
    >>> masks = sampled_masks(arch, q, sample_seeds(10, rng=0)[7])
    >>> count_effective(arch, masks)[0].tolist() == mc.effective[7].tolist()
    True
    """
    _check_mask_model(mask_model)
    check_quota(q, arch)
    seed = check_int(seed, "seed", 0, 2**32 - 1, fix="one of the seeds sample_seeds returns")
    flat, starts = _kernels.mc_sample(seed, mask_model == "bernoulli",
                                      np.asarray(q.params, np.int64),
                                      np.asarray(q.densities, np.float64),
                                      np.asarray(q.kept, np.int64))
    out = {}
    for k, name in enumerate(arch.layer_names):
        m = np.zeros(arch.n_params(name), dtype=bool)
        m[flat[starts[k]:starts[k + 1]]] = True
        out[name] = m.reshape(arch.weight_shape(name))
    return out


def monte_carlo(arch: Architecture, q: Quota, *, samples: int = 1000, mask_model="bernoulli",
                level: str = "channel", rng=None) -> MonteCarlo:
    """Monte Carlo estimate of effective weights and disconnection under random pruning.

    Parameters
    ----------
    arch : Architecture
    q : Quota
        Per-layer densities (``bernoulli``) and exact kept counts (``exact``).
    samples : int
    mask_model : {'bernoulli', 'exact'}
        Independent weights with probability d_l, or exactly ``q.kept[l]`` uniformly placed.
    level : {'channel', 'position'}
    rng : seed or Generator, optional
        Seeds the per-sample seeds; the same value gives the same result on any thread count.

    Returns
    -------
    MonteCarlo

    See Also
    --------
    connsim.theory.predict : The exact theory for Bernoulli masks.
    sample_seeds, sampled_masks : Rebuild the masks of a sample.

    Examples
    --------
    >>> from connsim import get_arch, quota
    >>> arch = get_arch("lenet-300-100")
    >>> mc = monte_carlo(arch, quota(arch, "uniform", 0.01), samples=200, rng=0)
    >>> 200 < mc.mean_effective_params < 300
    True
    """
    _check_mask_model(mask_model)
    check_level(level)
    samples = check_samples(samples)
    check_quota(q, arch)
    seq = _seed_sequence(rng)
    params = q.params
    n_layers = len(params)
    once = 16 * arch.total_params if level == "position" else 0  # one sample's masks at a time
    check_memory(samples * (16 * n_layers + 1) + once,
                 f"{samples:,} Monte Carlo samples of {arch.name}", "ask for fewer samples")
    eff = np.zeros((samples, n_layers), dtype=np.int64)
    active = np.zeros((samples, n_layers), dtype=np.int64)
    disc = np.zeros(samples, dtype=bool)
    if level == "channel":
        seeds = sample_seeds(samples, seq)
        low = _Lowered.of(arch)
        sampling = (np.asarray(q.params, np.int64), np.asarray(q.densities, np.float64),
                    np.asarray(q.kept, np.int64))
        # chunks: the kernel cannot be interrupted, so Ctrl-C is seen between chunks; per-sample
        # seeds make the result independent of the chunking
        blocks = numba.get_num_threads()
        for s in range(0, samples, CHUNK):
            t = slice(s, min(s + CHUNK, samples))
            _kernels.mc_channel(seeds[t], mask_model == "bernoulli", low.offsets, *low.layers,
                                *sampling, *low.edges, min(blocks, t.stop - t.start), eff[t],
                                disc[t], active[t])
    else:
        for s, child in enumerate(seq.spawn(samples)):
            masks = random_masks(arch, q, model=mask_model, rng=np.random.default_rng(child))
            conn = connectivity(arch, masks, level="position")
            for k, name in enumerate(arch.layer_names):
                eff[s, k] = np.count_nonzero(conn.effective[name])
                active[s, k] = np.count_nonzero(conn.active(name))
            disc[s] = conn.disconnected
    return MonteCarlo(arch.name, arch.layer_names, params, mask_model, level, eff, disc, active)
