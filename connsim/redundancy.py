"""Effective filters: how many units of each layer are really independent (a reconstruction of
Zhou et al. 2022, whose abstract only is public; ``docs/redundancy.md`` lists every choice).

For a hidden layer ``l`` with ``n_l`` units read by one conv or dense layer ``c`` (through pooling
or flattening only), the *outgoing gradient matrix* ``H_l`` has one row per unit: the per-sample
gradients of the weights of ``c`` that read the unit. Units whose rows are linearly dependent are
redundant: duplicated units (overlap), linear combinations of others, constant units (their row is
a multiple of ``b``, the per-sample gradient of ``c``'s bias, so ``b`` is appended), and units
with no path to the output (*output-eliminated*: their own back-propagated error is zero on the
sample). ``H_l`` is never formed: the Gram matrix ``K = [H; b][H; b]^T`` is accumulated batch by
batch in float64 (dense consumer: ``K_jk = sum_n ||delta(n)||^2 <a_j(n), a_k(n)>``; conv consumer:
the per-sample weight gradients of one batch, summed over output channels and kernel offsets).

The effective filters ``r_l`` are the numerical rank of the rows of the units that are not
eliminated after the bias direction is projected out (the Schur complement of ``K_bb``), counting
singular values above ``tol * sigma_1``; ranks at several tolerances and energy fractions are
reported. For any mask, ``r_l <= active_l`` (connsim's active units): the data-free structural
bound. Removing ``k`` units of layer ``l`` frees their incoming weights, bias, BatchNorm scale and
shift, and the weights of ``c`` that read them, counted exactly on the masks
(:func:`freed_parameters`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ._validation import InvalidArgument, check_int, check_real
from .architectures import Architecture
from .masks import check_masks, ones_masks
from .measures import measure
from .trainer.backend import to_numpy
from .trainer.layers import cross_entropy
from .trainer.network import Network

__all__ = [
    "Hierarchical", "LayerRedundancy", "Redundancy", "at_tolerance", "freed_parameters",
    "hierarchical_prune", "prune_units", "redundancy", "total_parameters",
]


TOLS = (1e-2, 1e-3, 1e-4)
ENERGIES = (0.99, 0.999)
_PASS_THROUGH = ("pool", "flatten")
_CHUNK = 2 * 10 ** 7  # float64 entries of one batch's per-sample conv gradients


def analysable_layers(arch: Architecture) -> tuple[dict, dict]:
    """Hidden layers whose units one conv or dense layer reads through pooling or flattening only.

    Returns
    -------
    layers : dict
        ``name -> consumer name`` in topological order.
    skipped : dict
        ``name -> reason`` for the other prunable layers (the classifier, layers feeding a
        residual ``add`` or a ``concat``, several consumers, a grouped consumer).
    """
    consumers: dict[str, list] = {n.name: [] for n in arch.nodes}
    for node in arch.nodes:
        for s in node.inputs:
            consumers[s].append(node)
    nodes = {n.name: n for n in arch.nodes}
    layers, skipped = {}, {}
    for node in arch.layers:
        if node.name == arch.output.name:
            skipped[node.name] = "the classifier (its units are the classes)"
            continue
        cur = node
        while True:
            nxt = consumers[cur.name]
            if len(nxt) != 1:
                skipped[node.name] = f"{cur.name} feeds {len(nxt)} nodes"
                break
            cur = nodes[nxt[0].name]
            if cur.op in _PASS_THROUGH:
                continue
            if not cur.prunable:
                skipped[node.name] = f"feeds a {cur.op} node ({cur.name})"
            elif cur.op == "conv" and cur.groups != 1:
                skipped[node.name] = f"read by the grouped conv {cur.name}"
            else:
                layers[node.name] = cur.name
            break
    return layers, skipped


@dataclass
class _Gram:
    """Streaming Gram of ``[H; b]`` for one layer, and the units' error magnitudes."""

    n: int
    k: np.ndarray = field(init=False)
    kb: np.ndarray = field(init=False)
    kbb: float = 0.0
    error: np.ndarray = field(init=False)
    samples: int = 0

    def __post_init__(self):
        self.k = np.zeros((self.n, self.n))
        self.kb = np.zeros(self.n)
        self.error = np.zeros(self.n)


def _consumer_input(op, node, batch: int) -> np.ndarray:
    """What the consumer read in the last forward pass: ``(N, C, R, P)`` for a conv (kernel offsets
    R, output positions P), ``(N, F)`` for a dense layer."""
    if node.op == "conv":
        n_cols = op.cols.shape[1]
        kh, kw = node.kernel
        cols = to_numpy(op.cols).reshape(n_cols // (kh * kw), kh * kw, batch, -1)
        return cols.transpose(2, 0, 1, 3)
    return to_numpy(op.x).reshape(batch, -1)


def _accumulate(g: _Gram, x: np.ndarray, d: np.ndarray, conv: bool) -> None:
    """Add one batch: ``x`` the consumer's input, ``d`` its per-sample output errors."""
    b = len(d)
    if conv:
        d = d.reshape(b, d.shape[1], -1)  # (N, O, P)
        beta = d.sum(axis=2)  # per-sample bias gradient of the consumer, (N, O)
        o, c, r = d.shape[1], x.shape[1], x.shape[2]
        step = max(1, _CHUNK // (o * c * r))
        for s in range(0, b, step):
            xs = x[s:s + step]
            n = len(xs)  # per-sample weight gradients through BLAS: (n, O, C*R)
            grad = np.matmul(d[s:s + step], xs.reshape(n, c * r, -1).transpose(0, 2, 1))
            rows = grad.reshape(n * o, c, r).transpose(1, 0, 2).reshape(c, -1)
            g.k += rows @ rows.T
            g.kb += np.tensordot(beta[s:s + step].ravel(), grad.reshape(n * o, c, r),
                                 axes=1).sum(axis=1)
        g.kbb += r * float((beta ** 2).sum())
    else:
        x = x.reshape(b, g.n, -1)  # (N, C, P): a flattened input reads P values per unit
        d2 = (d ** 2).sum(axis=1)
        rows = (x * np.sqrt(d2)[:, None, None]).transpose(1, 0, 2).reshape(g.n, -1)
        g.k += rows @ rows.T
        g.kb += np.tensordot(d2, x, axes=1).sum(axis=1)
        g.kbb += x.shape[2] * float(d2.sum())
    g.samples += b


@dataclass(frozen=True)
class LayerRedundancy:
    """Effective filters of one layer (see :func:`redundancy`).

    Attributes
    ----------
    name : str
        The analysed layer, whose output units are counted.
    consumer : str
        The one conv or dense layer that reads them.
    units : int
        The layer's units (channels), n_l.
    active : int
        Units on an input-output path under the masks (the data-free bound).
    eliminated : int
        Units whose incoming gradient vanishes: nothing they feed reaches the output.
    ranks : dict of str to int
        The rank at every reported tolerance and energy fraction (``'tol=0.001'``, ...).
    effective : int
        The rank at the result's tolerance, r_l: the effective filters.
    params_per_unit : float
        Parameters one unit of the layer carries (weights in and out, bias, BatchNorm).

    See Also
    --------
    Redundancy : Holds one per analysed layer.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> from connsim.trainer import Network
    >>> arch = get_arch("mlp:6-12-8-3")
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.standard_normal((200, 6)), rng.integers(0, 3, 200)
    >>> red = redundancy(arch, Network(arch, rng=0).state_dict(), x, y, tol=0.3)
    >>> fc1 = red.layers[0]
    >>> fc1.name, fc1.consumer, fc1.units, fc1.effective, fc1.redundancy
    ('fc1', 'fc2', 12, 4, 8)
    """

    name: str
    consumer: str
    units: int
    active: int
    eliminated: int
    ranks: dict
    effective: int
    params_per_unit: float

    @property
    def redundancy(self) -> int:
        """``n_l - r_l``: units removable without losing a direction of the outgoing gradients."""
        return self.units - self.effective

    @property
    def structural(self) -> int:
        """``n_l - active_l``: the data-free lower bound on :attr:`redundancy`."""
        return self.units - self.active

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"name": self.name, "consumer": self.consumer, "units": self.units,
                "active": self.active, "eliminated": self.eliminated, "ranks": self.ranks,
                "effective": self.effective, "redundancy": self.redundancy,
                "structural": self.structural, "params_per_unit": self.params_per_unit}


@dataclass(frozen=True)
class Redundancy:
    """Per-layer effective filters of a network, and the maximum compression they allow.

    Attributes
    ----------
    arch : str
        The architecture's name.
    samples : int
        Examples of the sample the ranks were measured on.
    tol : float
        The tolerance of the ``effective`` ranks.
    layers : tuple of LayerRedundancy
        The analysed layers.
    skipped : dict of str to str
        Layers not analysed, with the reason (the classifier, layers read by several consumers).
    params, freed : int
        All parameters of the prunable layers, and those freed by removing every redundant unit;
        ``max_redundancy`` and ``max_compression`` follow from them.
    grams, masks : dict
        The accumulated Gram matrices and the masks, kept so that :func:`at_tolerance` and
        :func:`hierarchical_prune` need no second pass over the data.

    See Also
    --------
    redundancy : Computes it.
    at_tolerance : The same at another tolerance.
    hierarchical_prune : Prunes within it.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> from connsim.trainer import Network
    >>> arch = get_arch("mlp:6-12-8-3")
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.standard_normal((200, 6)), rng.integers(0, 3, 200)
    >>> red = redundancy(arch, Network(arch, rng=0).state_dict(), x, y, tol=0.3)
    >>> red.params, red.freed, round(red.max_compression, 2)
    (215, 168, 4.57)
    """

    arch: str
    samples: int
    tol: float
    layers: tuple
    skipped: dict
    params: int
    freed: int
    grams: dict = field(repr=False, compare=False, default_factory=dict)
    masks: dict = field(repr=False, compare=False, default_factory=dict)

    @property
    def max_redundancy(self) -> float:
        """Share of the parameters freed by removing every redundant unit."""
        return self.freed / self.params

    @property
    def max_compression(self) -> float:
        """``P_total / (P_total - freed)``."""
        return self.params / (self.params - self.freed) if self.freed < self.params else np.inf

    def layer(self, name: str) -> LayerRedundancy:
        """The record of layer ``name``."""
        for lr in self.layers:
            if lr.name == name:
                return lr
        raise KeyError(name)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"arch": self.arch, "samples": self.samples, "tol": self.tol,
                "layers": [lr.to_dict() for lr in self.layers], "skipped": self.skipped,
                "params": self.params, "freed": self.freed,
                "max_redundancy": self.max_redundancy,
                "max_compression": None if np.isinf(self.max_compression)
                else self.max_compression}


def _reduced(g: _Gram, alive: np.ndarray) -> np.ndarray:
    """The Gram of the alive units' rows with the bias direction projected out."""
    k = g.k[np.ix_(alive, alive)]
    if g.kbb > 0:
        kb = g.kb[alive]
        k = k - np.outer(kb, kb) / g.kbb
    return (k + k.T) / 2


def _ranks(eig: np.ndarray) -> dict:
    """Numerical ranks at :data:`TOLS` (on singular values) and :data:`ENERGIES`."""
    eig = np.sort(np.clip(eig, 0.0, None))[::-1]
    out = {f"tol={tol:g}": rank_at(eig, tol) for tol in TOLS}
    total = eig.sum()
    for e in ENERGIES:
        out[f"energy={e:g}"] = int(np.searchsorted(np.cumsum(eig), e * total) + 1) \
            if total > 0 else 0
    return out


def rank_at(eig: np.ndarray, tol: float) -> int:
    """Singular values ``sqrt(eig)`` above ``tol`` times the largest."""
    eig = np.clip(eig, 0.0, None)
    top = eig.max(initial=0.0)
    return int((eig > tol * tol * top).sum()) if top > 0 else 0


def _unit_slices(arch: Architecture, name: str, consumer: str) -> tuple[int, int]:
    """(units, values of the consumer's input per unit)."""
    units, cons = arch[name].channels, arch[consumer]
    return units, arch.weight_shape(cons)[1] // units if cons.op == "dense" else 1


def total_parameters(arch: Architecture, masks: Mapping | None = None) -> int:
    """Kept weights, biases and BatchNorm scales and shifts of every prunable layer.

    Parameters
    ----------
    arch : Architecture
        The network.
    masks : mapping of str to ndarray, optional
        Masks; a unit whose incoming weights are all pruned keeps no bias or BatchNorm parameter.
        Dense when omitted.

    Returns
    -------
    int
        The parameter count that the maximum compression of :func:`redundancy` divides.

    See Also
    --------
    redundancy : Its maximum compression is relative to this count.

    Examples
    --------
    >>> from connsim import get_arch
    >>> total_parameters(get_arch("mlp:6-12-8-3"))
    215
    """
    masks = check_masks(arch, masks) if masks is not None else ones_masks(arch)
    total = 0
    for node in arch.layers:
        total += int(masks[node.name].sum()) + node.channels * (int(node.bias)
                                                                 + 2 * int(node.batchnorm))
    return total


def _input_slice(arch: Architecture, consumer: str, unit: int, per: int):
    """Index of the consumer's weight entries that read ``unit``."""
    if arch[consumer].op == "dense":
        return (slice(None), slice(unit * per, (unit + 1) * per))
    return (slice(None), unit)


def freed_parameters(arch: Architecture, removed: Mapping, masks: Mapping | None = None) -> int:
    """Parameters freed by removing units.

    A weight is freed when its output unit or the unit it reads is removed (counted once), plus
    the removed units' biases and BatchNorm scales and shifts.

    Parameters
    ----------
    arch : Architecture
        The network.
    removed : mapping of str to array_like of bool
        Per analysable layer (a layer whose units a next layer reads), which of its units are
        removed.
    masks : mapping of str to array_like, optional
        Only kept weights count as freed; all weights when omitted.

    Returns
    -------
    int
        Weights, biases and BatchNorm parameters that the removal frees.

    Raises
    ------
    InvalidArgument
        If ``removed`` names a layer that is not analysable, or has the wrong number of units.

    See Also
    --------
    redundancy : Which units can be removed.
    prune_units : Removes units, in order, to reach a parameter compression.

    Examples
    --------
    Removing one hidden unit of a 4-3-2 MLP frees its 4 input weights, its bias and the 2
    weights that read it:

    >>> import numpy as np
    >>> from connsim import get_arch
    >>> freed_parameters(get_arch("mlp:4-3-2"), {"fc1": np.array([True, False, False])})
    7
    """
    layers, _ = analysable_layers(arch)
    masks = check_masks(arch, masks) if masks is not None else ones_masks(arch)
    after = {k: v.astype(bool).copy() for k, v in masks.items()}
    extra = 0
    for name, gone in removed.items():
        if name not in layers:
            raise InvalidArgument("removed", f"keyed by analysable layers ({', '.join(layers)})",
                                  name)
        gone = np.asarray(gone, dtype=bool)
        units, per = _unit_slices(arch, name, layers[name])
        if gone.shape != (units,):
            raise InvalidArgument(f"removed[{name!r}]", f"a boolean array of {units} units",
                                  got=f"shape {gone.shape}")
        after[name][gone] = False
        for u in np.flatnonzero(gone):
            after[layers[name]][_input_slice(arch, layers[name], int(u), per)] = False
        node = arch[name]
        extra += int(gone.sum()) * (int(node.bias) + 2 * int(node.batchnorm))
    kept_before = sum(int(m.sum()) for m in masks.values())
    kept_after = sum(int(m.sum()) for m in after.values())
    return kept_before - kept_after + extra


def removal_masks(arch: Architecture, removed: Mapping, masks: Mapping | None = None) -> dict:
    """Channel masks without the removed units: their incoming weights and the consumer's
    weights that read them are zero (usable everywhere in connsim: measure, train, prune)."""
    layers, _ = analysable_layers(arch)
    out = {k: v.astype(bool).copy() for k, v in
           (check_masks(arch, masks) if masks is not None else ones_masks(arch)).items()}
    for name, gone in removed.items():
        gone = np.asarray(gone, dtype=bool)
        _, per = _unit_slices(arch, name, layers[name])
        out[name][gone] = False
        for u in np.flatnonzero(gone):
            out[layers[name]][_input_slice(arch, layers[name], int(u), per)] = False
    return out


def redundancy(arch: Architecture, state: Mapping, x: np.ndarray, y: np.ndarray, *,
               masks: Mapping | None = None, tol: float = 1e-3, batch_size: int = 64,
               backend: str = "numpy") -> Redundancy:
    """Effective filters, redundancy and maximum compression of a trained network on a sample.

    Parameters
    ----------
    arch : Architecture
    state : mapping
        Network parameters (``Network.state_dict`` form, e.g. ``weights.npz`` of
        ``connsim train``).
    x, y : ndarray
        The sample (inputs and labels), e.g. 1024 training images.
    masks : mapping, optional
        The network's masks (dense when omitted).
    tol : float
        The tolerance whose rank is ``effective`` (all of :data:`TOLS` are reported).
    batch_size : int
        Examples per pass (memory only).
    backend : str
        Where the passes run; the Gram matrices are accumulated on the host in float64.

    Returns
    -------
    Redundancy
        One :class:`LayerRedundancy` per analysed layer, the layers skipped, and the parameters
        freed by removing every redundant unit.

    See Also
    --------
    at_tolerance : Re-read at another tolerance.
    hierarchical_prune : Prune within the redundancy.

    Examples
    --------
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:6-12-8-3")
    >>> net = Network(arch, rng=0)
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.standard_normal((200, 6)), rng.integers(0, 3, 200)
    >>> red = redundancy(arch, net.state_dict(), x, y)
    >>> [(lr.name, lr.units, lr.effective) for lr in red.layers]
    [('fc1', 12, 12), ('fc2', 8, 8)]
    """
    check_real(tol, "tol", 0, 1, low_open=True, high_open=True)
    check_int(batch_size, "batch_size", 1)
    x = np.asarray(x)
    y = np.asarray(y)
    if len(x) != len(y) or len(x) < 1:
        raise InvalidArgument("x", "a non-empty sample with one label per input",
                              got=f"{len(x)} inputs and {len(y)} labels")
    layers, skipped = analysable_layers(arch)
    if not layers:
        raise InvalidArgument("arch", "a network with a hidden conv or dense layer read by one "
                              "conv or dense layer", arch.name, "; ".join(
                                  f"{k}: {v}" for k, v in skipped.items()))
    canon = check_masks(arch, masks) if masks is not None else ones_masks(arch)
    net = Network(arch, canon, dtype="float64", backend=backend, rng=0)
    net.load_state_dict(state)
    grams = {name: _Gram(arch[name].channels) for name in layers}
    consumers = {c: name for name, c in layers.items()}
    xp = net.xp
    inputs = {}

    def tap(name, dy):
        dy = to_numpy(dy)
        if name in consumers:
            _accumulate(grams[consumers[name]], inputs[name], dy, arch[name].op == "conv")
        if name in grams:
            g = grams[name]
            g.error += np.abs(dy).reshape(len(dy), g.n, -1).sum(axis=(0, 2))

    for s in range(0, len(x), batch_size):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        logits = net.forward(xb, train=False)
        inputs.update({c: _consumer_input(net.ops[c][0], arch[c], len(yb)) for c in consumers})
        _, grad = cross_entropy(xp, logits, xp.asarray(yb))
        net.backward(grad * len(yb), tap=tap)  # the sum of per-sample losses
    return _summary(arch, canon, layers, skipped, grams, tol, len(x))


def _summary(arch, canon, layers, skipped, grams, tol, samples) -> Redundancy:
    m = measure(arch, canon)
    active = {lm.name: lm.active_out for lm in m.layers}
    records, plan = [], {}
    for name, consumer in layers.items():
        g = grams[name]
        alive = g.error > 0
        eig = np.linalg.eigvalsh(_reduced(g, alive)) if alive.any() else np.zeros(0)
        eff = rank_at(eig, tol)
        plan[name] = np.isin(np.arange(g.n), removal_order(g, eff)[:g.n - eff])
        every = {name: np.ones(g.n, dtype=bool)}
        records.append(LayerRedundancy(name, consumer, g.n, active[name], int((~alive).sum()),
                                       _ranks(eig), eff,
                                       freed_parameters(arch, every, canon) / g.n))
    return Redundancy(arch.name, samples, float(tol), tuple(records), skipped,
                      total_parameters(arch, canon), freed_parameters(arch, plan, canon), grams,
                      canon)


def at_tolerance(arch: Architecture, red: Redundancy, tol: float) -> Redundancy:
    """``red`` with its effective filters, redundancy and maximum compression taken at another
    tolerance, from the Gram matrices and masks it holds (no pass over the data).

    Parameters
    ----------
    arch : Architecture
        The architecture ``red`` was measured on.
    red : Redundancy
        From :func:`redundancy`.
    tol : float
        The new tolerance, in (0, 1).

    Returns
    -------
    Redundancy
        Equal to ``redundancy(arch, state, x, y, masks=masks, tol=tol)`` on the same sample and
        masks.

    See Also
    --------
    redundancy : The analysis.

    Examples
    --------
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:4-10-3")
    >>> x = np.random.default_rng(1).standard_normal((100, 4))
    >>> red = redundancy(arch, Network(arch, rng=1).state_dict(), x, np.arange(100) % 3)
    >>> at_tolerance(arch, red, 0.5).layers[0].effective <= red.layers[0].effective
    True
    """
    check_real(tol, "tol", 0, 1, low_open=True, high_open=True)
    if red.arch != arch.name:
        raise InvalidArgument("red", f"a measurement of {arch.name}", red.arch,
                              "pass what redundancy() returned for this architecture")
    if not red.grams or not red.masks:
        raise InvalidArgument("red", "a measurement that holds its Gram matrices and masks",
                              got="a Redundancy without them",
                              fix="pass what redundancy() returned, not a rebuilt copy")
    layers = {lr.name: lr.consumer for lr in red.layers}
    return _summary(arch, red.masks, layers, red.skipped, red.grams, tol, red.samples)


def removal_order(g: _Gram, effective: int) -> np.ndarray:
    """Units in the order hierarchical pruning removes them: output-eliminated units first, then
    the units that column-pivoted QR of the reduced Gram's square root leaves after its first
    ``effective`` pivots (last pivots first)."""
    from scipy.linalg import qr

    alive = np.flatnonzero(g.error > 0)
    dead = np.flatnonzero(g.error <= 0)
    if alive.size == 0:
        return dead
    k = _reduced(g, g.error > 0)
    lam, vec = np.linalg.eigh(k)
    root = (vec * np.sqrt(np.clip(lam, 0.0, None))) @ vec.T
    _, _, piv = qr(root, pivoting=True, mode="economic")
    order = alive[piv]
    rest = order[effective:][::-1]
    return np.concatenate([dead, rest, order[:effective][::-1]])


@dataclass(frozen=True)
class Hierarchical:
    """Result of :func:`hierarchical_prune`.

    Attributes
    ----------
    masks : dict of str to ndarray of bool
        Channel masks without the removed units (their incoming weights and the consumer's weights
        that read them).
    removed : dict of str to ndarray of bool
        Per analysed layer, the removed units.
    params, freed : int
        All parameters, and those freed; ``compression`` is ``params / (params - freed)``.
    lam : float
        The share of every layer's redundancy that was used.
    state : dict or None
        The compensated network parameters (``compensate=True``), else None.

    See Also
    --------
    hierarchical_prune : Computes it.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> from connsim.trainer import Network
    >>> arch = get_arch("mlp:6-12-8-3")
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.standard_normal((200, 6)), rng.integers(0, 3, 200)
    >>> red = redundancy(arch, Network(arch, rng=0).state_dict(), x, y, tol=0.3)
    >>> h = hierarchical_prune(arch, red, 1.2)
    >>> {name: int(r.sum()) for name, r in h.removed.items()}, round(h.compression, 3)
    ({'fc1': 2, 'fc2': 1}, 1.257)
    """

    masks: dict
    removed: dict
    params: int
    freed: int
    lam: float
    state: dict | None

    @property
    def compression(self) -> float:
        """Achieved parameter compression ``params / (params - freed)``."""
        return self.params / (self.params - self.freed)


def hierarchical_prune(arch: Architecture, red: Redundancy, compression: float, *,
                       masks: Mapping | None = None, state: Mapping | None = None,
                       compensate: bool = False) -> Hierarchical:
    """Remove units layer by layer within each layer's redundancy until ``compression`` is met.

    Layer budgets are ``k_l = floor(lam (n_l - r_l))``, never above the redundancy; within a layer
    units go in removal order (eliminated first, then the ones column-pivoted QR leaves).
    ``lam`` is raised unit by unit (the exact discrete form of a bisection on ``lam``) until the
    parameters freed reach ``params (1 - 1/compression)``: the request is met or exceeded by at
    most the parameters of the last unit removed.

    Parameters
    ----------
    arch : Architecture
    red : Redundancy
        From :func:`redundancy` on the same architecture and masks.
    compression : float
        Requested parameter compression, at most ``red.max_compression``.
    masks : mapping, optional
        The masks ``red`` was computed with.
    state : mapping, optional
        Network parameters; needed with ``compensate``.
    compensate : bool
        Fold each removed unit's least-squares reconstruction from the kept units (and a constant)
        into the consumer's weights and bias: exact for duplicated, linearly dependent and constant
        units. The result's ``state`` holds the new parameters.

    Returns
    -------
    Hierarchical
        The masks, the removed units, the parameters freed and, with ``compensate``, the new
        parameters.

    Raises
    ------
    ValueError
        If ``compression`` exceeds ``red.max_compression``, or ``compensate`` lacks ``state``.

    See Also
    --------
    redundancy : The analysis it prunes within.
    prune_units : The same removal from any per-layer unit orders.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> from connsim.trainer import Network
    >>> arch = get_arch("mlp:6-12-8-3")
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.standard_normal((200, 6)), rng.integers(0, 3, 200)
    >>> red = redundancy(arch, Network(arch, rng=0).state_dict(), x, y, tol=0.3)
    >>> h = hierarchical_prune(arch, red, 1.2)
    >>> h.compression >= 1.2, int(h.masks["fc1"].any(axis=1).sum())
    (True, 10)
    """
    from ._validation import check_compression

    check_compression(compression, "compression")
    canon = check_masks(arch, masks) if masks is not None else ones_masks(arch)
    if compensate and state is None:
        raise InvalidArgument("state", "the network's parameters when compensate=True", None,
                              "pass the trained weights (weights.npz of connsim train)")
    target = red.params * (1 - 1 / compression)
    if target > red.freed:
        raise InvalidArgument("compression", f"at most {red.max_compression:.6g}, the maximum "
                              "compression the measured redundancy allows", compression,
                              "ask for less, or measure with a larger tolerance")
    orders = {lr.name: removal_order(red.grams[lr.name], lr.effective)[:lr.redundancy]
              for lr in red.layers}
    removed, freed, lam = prune_units(arch, orders, compression, masks=canon)
    new_state = _compensated(arch, red, removed, state) if compensate else None
    return Hierarchical(removal_masks(arch, removed, canon), removed, red.params, freed, lam,
                        new_state)


def prune_units(arch: Architecture, orders: Mapping, compression: float, *,
                masks: Mapping | None = None) -> tuple[dict, int, float]:
    """Remove the fewest units, taken from each layer's ``orders`` at equal shares, that reach a
    parameter compression.

    The units enter one at a time in the order of the share ``(i + 1) / len(orders[l])`` of
    their layer's list at which they come (ties: the layers' order in ``orders``); the shortest
    prefix whose freed parameters (exact on the masks) reach
    ``P_total (1 - 1/compression)`` is taken. Lists truncated to the layers' redundancy give
    hierarchical pruning; full lists ranked by a score give uniform filter pruning (e.g. L1 norm).

    Parameters
    ----------
    arch : Architecture
    orders : mapping
        Layer name to the layer's units (indices) in the order they may go.
    compression : float
        Requested parameter compression (at least 1).
    masks : mapping, optional
        The network's masks (dense when omitted).

    Returns
    -------
    removed : dict
        Layer name to a boolean array of its removed units.
    freed : int
        Parameters freed; the request is met or exceeded by at most one unit's parameters.
    share : float
        The share of its list that the last unit taken came at (``lam`` of hierarchical pruning).

    Raises
    ------
    InvalidArgument
        If removing every listed unit does not reach ``compression``.

    See Also
    --------
    hierarchical_prune : Orders limited to each layer's redundancy.

    Examples
    --------
    >>> from connsim import get_arch
    >>> arch = get_arch("lenet-300-100")
    >>> removed, freed, share = prune_units(arch, {"fc1": np.arange(300), "fc2": np.arange(100)},
    ...                                     1.5)
    >>> int(removed["fc1"].sum()), int(removed["fc2"].sum()), share
    (93, 31, 0.31)
    """
    from ._validation import check_compression

    check_compression(compression, "compression")
    canon = check_masks(arch, masks) if masks is not None else ones_masks(arch)
    analysable, _ = analysable_layers(arch)
    unknown = [name for name in orders if name not in analysable]
    if unknown:
        raise InvalidArgument("orders", f"keyed by analysable layers ({', '.join(analysable)})",
                              got=", ".join(map(repr, unknown)),
                              fix="the classifier and layers feeding an add, a concat or "
                                  "several consumers cannot lose units")
    units = {name: arch[name].channels for name in orders}
    entries = []
    for index, (name, order) in enumerate(orders.items()):
        order = np.asarray(order, dtype=np.int64)
        if order.ndim != 1 or np.any((order < 0) | (order >= units[name])) \
                or len(np.unique(order)) != len(order):
            raise InvalidArgument(f"orders[{name!r}]", f"distinct unit indices below "
                                  f"{units[name]}", order, "list each unit of the layer once")
        entries += [((i + 1) / len(order), index, name, int(u)) for i, u in enumerate(order)]
    entries.sort()
    params = total_parameters(arch, canon)
    target = params * (1 - 1 / compression)

    def removed_by(k):
        out = {name: np.zeros(n, dtype=bool) for name, n in units.items()}
        for _, _, name, u in entries[:k]:
            out[name][u] = True
        return out

    most = freed_parameters(arch, removed_by(len(entries)), canon)
    if target > most:
        raise InvalidArgument("compression", f"at most {params / (params - most):.6g}, what "
                              "removing every listed unit gives", compression,
                              "ask for less, or list more units (measure redundancy with a "
                              "larger tolerance)")
    lo, hi = 0, len(entries)  # the shortest prefix that frees enough
    while lo < hi:
        mid = (lo + hi) // 2
        if freed_parameters(arch, removed_by(mid), canon) >= target:
            hi = mid
        else:
            lo = mid + 1
    removed = removed_by(lo)
    return removed, freed_parameters(arch, removed, canon), entries[lo - 1][0] if lo else 0.0


def _compensated(arch: Architecture, red: Redundancy, removed: Mapping, state: Mapping) -> dict:
    out = {k: np.array(v, dtype=np.float64, copy=True) for k, v in state.items()}
    for lr in red.layers:
        g = red.grams[lr.name]
        gone = removed[lr.name] & (g.error > 0)  # eliminated units contribute nothing
        keep = ~removed[lr.name] & (g.error > 0)
        if not gone.any():
            continue
        s_idx, r_idx = np.flatnonzero(keep), np.flatnonzero(gone)
        a = np.zeros((len(s_idx) + 1, len(s_idx) + 1))
        a[:-1, :-1] = g.k[np.ix_(s_idx, s_idx)]
        a[:-1, -1] = a[-1, :-1] = g.kb[s_idx]
        a[-1, -1] = g.kbb
        rhs = np.vstack([g.k[np.ix_(s_idx, r_idx)], g.kb[r_idx][None, :]])
        coef = np.linalg.lstsq(a, rhs, rcond=None)[0]
        _, per = _unit_slices(arch, lr.name, lr.consumer)
        w = out[f"{lr.consumer}.weight"]
        bias_key = f"{lr.consumer}.bias"
        for col, k in enumerate(r_idx):
            wk = w[_input_slice(arch, lr.consumer, int(k), per)].copy()
            for row, j in enumerate(s_idx):
                w[_input_slice(arch, lr.consumer, int(j), per)] += coef[row, col] * wk
            if bias_key in out:
                out[bias_key] += coef[-1, col] * wk.reshape(wk.shape[0], -1).sum(axis=1)
    return out
