"""Pruning scores (``docs/pruning.md``), in registries of plain functions (:func:`register_score`
adds more).

A one-shot score maps ``(ScoreContext, granularity)`` to group-shaped scores (higher = keep).
Iterative methods (``iterative-snip``, ``synflow``) prune in rounds to the requested density and
return rank keys instead: a group removed in round ``t`` gets ``2 t + u`` with ``u`` in [0, 1] a
strictly increasing function of its score in that round; survivors rank above every removed group,
so every prefix of the order is a state of the iterative run (what effective targeting needs).

* ``random``: uniform priorities.
* ``magnitude``: ``|w|`` (group: mean ``|w|``).
* ``lamp`` (Lee et al. 2021): ``w^2 / (sum of w'^2 over the weights of the same layer with
  w'^2 >= w^2)``; groups use their mean ``|w|``.
* ``snip`` (Lee et al. 2019): ``|w dL/dw|`` at initialisation, cross-entropy summed over data
  batches (group: ``|sum of w dL/dw|``).
* ``iterative-snip`` (de Jorge et al. 2021): SNIP rescored on the masked network over rounds with
  kept fraction ``D^(t/T)``.
* ``grasp`` (Wang et al. 2020): prunes the highest ``-w (H g)``, i.e. keeps the highest
  ``w (H g)``; the Hessian-gradient product is a central difference of gradients.
* ``synflow`` (Tanaka et al. 2020): data-free, ``|w dR/dw|`` with ``R = 1^T (prod |W_l| M_l) 1``
  on the linearised network (no BatchNorm, no ReLU, average pooling, all-ones input), 100 rounds
  with kept fraction ``D^(t/100)``. Activations and adjoints are rescaled to a maximum of 1 after
  every node and the scales kept as logarithms, so scores never overflow or underflow; they are
  compared as log-scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from ._validation import Names, Registry, check_choice, check_int
from .architectures import Architecture
from .granularity import group_shape, group_sizes, to_groups
from .orders import top_k
from .trainer.backend import get_backend, to_numpy
from .trainer.data import Dataset, batches
from .trainer.layers import cross_entropy, make_layer
from .trainer.network import Network

__all__ = [
    "METHODS", "ScoreContext", "iterative_keys", "lamp", "register_score", "synflow_log_scores",
    "weight_gradients",
]


@dataclass
class ScoreContext:
    """What scores may use: weights (PyTorch layout), data batches, a generator, a network state.

    A registered score (:func:`register_score`) receives one; ``ctx.network()`` builds a trainer
    :class:`~connsim.trainer.Network` with the weights (and the state), and ``ctx.batches()`` returns
    the ``n_batches`` training batches the data-driven scores sum over.

    Parameters
    ----------
    arch : Architecture
        The network.
    weights : dict of str to ndarray
        Prunable weights, PyTorch layout.
    rng : numpy.random.Generator
        For random scores.
    data : Dataset, optional
        Training data of the data-driven scores.
    n_batches, batch_size : int
        How many batches of how many examples ``batches()`` returns.
    state : dict, optional
        A full network state (BatchNorm statistics and the like), as ``connsim train`` writes it.
    backend : str
        Array backend of the gradient passes (:mod:`connsim.trainer.backend`); scores are returned
        on the host.

    Raises
    ------
    ValueError
        If ``n_batches`` or ``batch_size`` is not a positive integer.

    See Also
    --------
    register_score : Scores are functions of a context.
    weight_gradients : Gradients of the loss on the context's batches.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> from connsim.trainer import Network
    >>> arch = get_arch("mlp:4-8-3")
    >>> ctx = ScoreContext(arch, Network(arch, rng=0).weights(), np.random.default_rng(0))
    >>> ctx.network().forward(np.ones((2, 4))).shape
    (2, 3)
    """

    arch: Architecture
    weights: dict
    rng: np.random.Generator
    data: Dataset | None = None
    n_batches: int = 1
    batch_size: int = 128
    state: dict = field(default_factory=dict)  # full network state (BatchNorm etc.), optional
    backend: str = "numpy"  # where gradients are computed (connsim.trainer.backend); scores are host

    def __post_init__(self):
        check_int(self.n_batches, "n_batches", 1, fix="the data batches a score sums over "
                                                       "(CLI: --batches)")
        check_int(self.batch_size, "batch_size", 1)

    def network(self, masks=None, dtype="float32") -> Network:
        """A :class:`Network` with the context's weights and state, under ``masks``."""
        # dense products on every backend: scores sum in the same order everywhere
        net = Network(self.arch, masks, dtype=dtype, rng=0, backend=self.backend, sparse=False)
        if self.state:
            net.load_state_dict(self.state)
        net.set_weights(self.weights)
        return net

    def batches(self):
        """The first ``n_batches`` training batches ``(x, y)``, the same on every call."""
        if self.data is None:
            raise ValueError("this score needs data: pass a dataset (CLI: --dataset D --batches K)")
        n = len(self.data.y_train)
        if n < self.batch_size:
            raise ValueError(f"the dataset has {n} training samples, fewer than one batch of "
                             f"{self.batch_size}; lower the batch size")
        order = batches(n, self.batch_size, np.random.default_rng(0))
        return [(self.data.x_train[idx], self.data.y_train[idx])
                for idx, _ in zip(order, range(self.n_batches), strict=False)]


def weight_gradients(ctx: ScoreContext, masks=None, dtype="float32") -> dict:
    """dL/dw of every prunable weight, cross-entropy summed over ``ctx``'s batches.

    Parameters
    ----------
    ctx : ScoreContext
        Weights, state and data (``ctx.data`` is required).
    masks : mapping of str to ndarray, optional
        Masks the forward pass applies (default: dense).
    dtype : str
        Precision of the passes.

    Returns
    -------
    dict of str to ndarray
        One weight-shaped gradient per prunable layer, on the host.

    Raises
    ------
    ValueError
        If the context has no data, or fewer examples than one batch.

    See Also
    --------
    ScoreContext : What the gradients are computed from.
    register_score : Use them in a score of your own.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> from connsim.trainer import Network
    >>> from connsim.trainer.data import make_synthetic
    >>> arch = get_arch("mlp:4-8-3")
    >>> data = make_synthetic((4,), classes=3, n_train=64, n_test=8)
    >>> ctx = ScoreContext(arch, Network(arch, rng=0).weights(), np.random.default_rng(0), data,
    ...                    batch_size=32)
    >>> {name: g.shape for name, g in weight_gradients(ctx).items()}
    {'fc1': (8, 4), 'fc2': (3, 8)}
    """
    net = ctx.network(masks, dtype)
    xp = net.xp
    total = {n: 0.0 for n in ctx.arch.layer_names}
    for x, y in ctx.batches():
        _, g = cross_entropy(xp, net.forward(x, train=True), xp.asarray(y))
        net.backward(g)
        for n, g in net.weight_gradients().items():
            total[n] = total[n] + g
    return {n: to_numpy(v).astype(np.float64) for n, v in total.items()}


# ----------------------------------------------------------------------------- one-shot


def score_random(ctx: ScoreContext, granularity: str) -> dict:
    """Uniform random priorities, one per group."""
    return {n: ctx.rng.random(group_shape(ctx.arch, n, granularity)) for n in ctx.arch.layer_names}


def score_magnitude(ctx: ScoreContext, granularity: str) -> dict:
    """Mean ``|w|`` of each group."""
    return to_groups(ctx.arch, {n: np.abs(w) for n, w in ctx.weights.items()}, granularity, "mean")


def lamp(values: np.ndarray) -> np.ndarray:
    """LAMP scores of one layer from magnitudes: ``v^2 / (sum of v'^2 over v'^2 >= v^2)``.

    Lee et al. (2021): the largest magnitude of a layer scores 1, so every layer keeps at least one
    weight under one global threshold.

    Parameters
    ----------
    values : ndarray
        Magnitudes (or group means of them) of one layer.

    Returns
    -------
    ndarray
        Scores of the same shape, in (0, 1].

    See Also
    --------
    register_score : The ``lamp`` method uses these scores per layer.

    Examples
    --------
    >>> import numpy as np
    >>> lamp(np.array([1.0, 2.0, 3.0])).round(3).tolist()
    [0.071, 0.308, 1.0]
    """
    sq = np.asarray(values, dtype=np.float64).reshape(-1) ** 2
    order = np.argsort(sq, kind="stable")
    suffix = np.cumsum(sq[order][::-1])[::-1]  # sum of the squares at or above each position
    out = np.empty_like(sq)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[order] = np.where(suffix > 0, sq[order] / suffix, 0.0)
    return out.reshape(np.shape(values))


def score_lamp(ctx: ScoreContext, granularity: str) -> dict:
    """LAMP scores of the groups' mean magnitudes, per layer."""
    mags = score_magnitude(ctx, granularity)
    return {n: lamp(v) for n, v in mags.items()}


def score_snip(ctx: ScoreContext, granularity: str, masks=None) -> dict:
    """SNIP: ``|sum of w dL/dw|`` of each group, under ``masks``."""
    g = weight_gradients(ctx, masks)
    wg = {n: np.asarray(ctx.weights[n], np.float64) * g[n] for n in g}
    return to_groups(ctx.arch, wg, granularity, "abs-sum")


def hessian_gradient(ctx: ScoreContext, eps: float = 1e-2) -> dict:
    """H g by a central difference of gradients along g (float64)."""
    g = weight_gradients(ctx, dtype="float64")
    norm = math.sqrt(sum(float((v ** 2).sum()) for v in g.values()))
    if norm == 0:
        return {n: np.zeros_like(v) for n, v in g.items()}
    step = eps / norm
    w0 = ctx.weights
    plus = replace(ctx, weights={n: w0[n] + step * g[n] for n in g})
    minus = replace(ctx, weights={n: w0[n] - step * g[n] for n in g})
    gp, gm = weight_gradients(plus, dtype="float64"), weight_gradients(minus, dtype="float64")
    return {n: (gp[n] - gm[n]) / (2 * step) for n in g}


def score_grasp(ctx: ScoreContext, granularity: str) -> dict:
    """GraSP: ``sum of w (H g)`` of each group (higher = keep)."""
    hg = hessian_gradient(ctx)
    return to_groups(ctx.arch, {n: np.asarray(ctx.weights[n], np.float64) * hg[n] for n in hg},
                     granularity, "sum")


# ----------------------------------------------------------------------------- SynFlow


def _rescale(a):
    m = float(abs(a).max())  # one scalar to the host per node
    return (a / m, math.log(m)) if m > 0 else (a, -math.inf)


def _common(parts):
    """Arrays given with log scales, brought to their largest finite scale: (arrays, scale)."""
    finite = [sc for _, sc in parts if math.isfinite(sc)]
    if not finite:
        return [a * 0 for a, _ in parts], -math.inf
    top = max(finite)
    return [a * math.exp(sc - top) if math.isfinite(sc) else a * 0 for a, sc in parts], top


def synflow_log_scores(arch: Architecture, weights: Mapping, masks: Mapping | None = None, *,
                       backend: str = "numpy") -> dict:
    """``log |w dR/dw|`` of every weight (``-inf`` where the score is 0), with per-node rescaling.

    ``R`` is the sum of the outputs of the linearised network with weights ``|W| * M`` on an
    all-ones input (no BatchNorm, no ReLU, every pool averaging). Activations and adjoints are
    rescaled to a maximum of 1 after every node and the scales kept as logarithms, so nothing
    overflows or underflows (Tanaka et al. 2020).

    Parameters
    ----------
    arch : Architecture
        The network.
    weights : mapping of str to ndarray
        Prunable weights, PyTorch layout.
    masks : mapping of str to ndarray, optional
        The current masks (default: dense).
    backend : str
        Array backend of the passes; the scores are returned on the host.

    Returns
    -------
    dict of str to ndarray
        One weight-shaped array of log-scores per prunable layer.

    See Also
    --------
    iterative_keys : The rounds of iterative SynFlow.
    connsim.pruning.prune : ``method='synflow'``.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> from connsim.trainer import Network
    >>> arch = get_arch("mlp:4-8-3")
    >>> scores = synflow_log_scores(arch, Network(arch, rng=0).weights())
    >>> sorted((name, s.shape, bool(np.isfinite(s).all())) for name, s in scores.items())
    [('fc1', (8, 4), True), ('fc2', (3, 8), True)]
    """
    xp = get_backend(backend)
    ops, act = {}, {}
    act[arch.nodes[0].name] = (xp.ones((1, *arch.input_shape), dtype="float64"), 0.0)
    for node in arch.nodes[1:]:
        w = m = None
        if node.prunable:
            w = xp.asarray(np.abs(np.asarray(weights[node.name], np.float64)))
            m = None if masks is None else xp.asarray(np.asarray(masks[node.name], np.float64))
        op = ops[node.name] = make_layer(xp, node, w, None, m, linear=True, sparse=False)
        xs, sc = _common([act[x] for x in node.inputs])
        a, s = _rescale(op.forward(xs if op.multi else xs[0]))
        act[node.name] = (a, s + sc)
    grads = {arch.output.name: [(xp.ones_like(act[arch.output.name][0]), 0.0)]}
    out = {}
    for node in reversed(arch.nodes[1:]):
        parts = grads.pop(node.name, [])
        if not parts or not any(math.isfinite(sc) for _, sc in parts):
            if node.prunable:
                out[node.name] = np.full(arch.weight_shape(node), -np.inf)
            continue
        gs, sc = _common(parts)
        g, s = _rescale(sum(gs))
        op = ops[node.name]
        gin = op.backward(g)
        if node.prunable:
            wabs = np.abs(np.asarray(weights[node.name], np.float64))
            with np.errstate(divide="ignore"):
                out[node.name] = (np.log(wabs * to_numpy(op.grads["weight"])) + s + sc
                                  + act[node.inputs[0]][1])
        for x, gx in zip(node.inputs, gin if op.multi else [gin], strict=True):
            a, sx = _rescale(gx)
            grads.setdefault(x, []).append((a, sx + s + sc))
    return out


# ----------------------------------------------------------------------------- iterative


def _unit(values: np.ndarray) -> np.ndarray:
    """A strictly increasing map of scores (log-scores included, +-inf allowed) into [0, 1]."""
    return 0.5 + np.arctan(values) / np.pi


def iterative_keys(arch: Architecture, density: float, rounds: int, rescore,
                   granularity: str, progress=None) -> dict:
    """Prune in ``rounds`` rounds with kept fraction ``density^(t/rounds)``, rescoring every round.

    Each round partitions only the surviving groups, so the cost shrinks with them.

    Parameters
    ----------
    arch : Architecture
        The network.
    density : float
        Kept fraction of the groups after the last round.
    rounds : int
        Number of rounds T.
    rescore : callable
        ``rescore(masks)`` returns group scores for the current weight masks (higher = keep,
        comparable across layers).
    granularity : {'weight', 'kernel', 'channel', 'node'}
        What one group is.
    progress : callable, optional
        Called as ``progress(t, rounds)`` after every round.

    Returns
    -------
    dict of str to ndarray
        The rank keys of the module docstring, group-shaped: a group removed in round ``t`` gets
        ``2 t + u``, ``u`` in [0, 1] increasing with its score; every prefix of the order is a state
        of the run.

    See Also
    --------
    register_score : ``iterative=True`` registers a method that returns such keys.
    connsim.orders.GlobalOrder : Masks from the keys at any kept count.

    Examples
    --------
    Iterative magnitude pruning of the weights at initialisation in four rounds:

    >>> import numpy as np
    >>> from connsim import get_arch
    >>> from connsim.orders import GlobalOrder
    >>> from connsim.trainer import Network
    >>> arch = get_arch("mlp:4-8-3")
    >>> w = Network(arch, rng=0).weights()
    >>> keys = iterative_keys(arch, 0.25, 4, lambda m: {n: np.abs(w[n]) * m[n] for n in w}, "weight")
    >>> sum(int(m.sum()) for m in GlobalOrder(arch, keys).masks(14).values())
    14
    """
    from .granularity import expand, prunable_layers

    names = arch.layer_names
    shapes = [group_shape(arch, n, granularity) for n in names]
    sizes = group_sizes(arch, granularity)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    prunable = np.zeros(total, dtype=bool)
    for k, n in enumerate(names):
        prunable[offsets[k]:offsets[k + 1]] = n in prunable_layers(arch, granularity)
    fixed = np.flatnonzero(~prunable)  # the classes at channel granularity: always kept

    def as_masks(alive_idx):
        flat = np.zeros(total, dtype=bool)
        flat[alive_idx] = True
        flat[fixed] = True
        return expand(arch, {n: flat[offsets[k]:offsets[k + 1]].reshape(shapes[k])
                             for k, n in enumerate(names)}, granularity)

    def flat_scores(alive_idx):
        scores = rescore(as_masks(alive_idx))
        return np.concatenate([np.asarray(scores[n], np.float64).reshape(-1) for n in names])

    alive = np.flatnonzero(prunable)
    n_prunable = alive.size
    keys = np.full(total, 2.0 * (rounds + 2))  # fixed groups outrank every prunable one
    for t in range(1, rounds + 1):
        scores = flat_scores(alive)[alive]
        keep = top_k(scores, round(n_prunable * density ** (t / rounds)))
        keys[alive[~keep]] = 2 * t + _unit(scores[~keep])
        alive = alive[keep]
        if progress is not None:
            progress(t, rounds)
    keys[alive] = 2 * (rounds + 1) + _unit(flat_scores(alive)[alive])
    return {n: keys[offsets[k]:offsets[k + 1]].reshape(shapes[k]) for k, n in enumerate(names)}


def _log_groups(arch, log_scores: dict, granularity: str) -> dict:
    """Group log-scores: log of the sum of the group's scores."""
    if granularity == "weight":
        return log_scores
    out = {}
    for n, v in log_scores.items():
        axes = tuple(range({"kernel": 2, "channel": 1}[granularity], v.ndim))
        out[n] = np.logaddexp.reduce(v, axis=axes) if axes else v
    return out


def keys_synflow(ctx: ScoreContext, granularity: str, density: float, rounds: int = 100,
                 progress=None) -> dict:
    """Rank keys of iterative SynFlow (log-scores rescored on the masked network every round)."""
    def rescore(masks):
        return _log_groups(ctx.arch, synflow_log_scores(ctx.arch, ctx.weights, masks,
                                                        backend=ctx.backend), granularity)
    return iterative_keys(ctx.arch, density, rounds, rescore, granularity, progress)


def keys_iterative_snip(ctx: ScoreContext, granularity: str, density: float,
                        rounds: int = 10, progress=None) -> dict:
    """Rank keys of iterative SNIP (SNIP rescored on the masked network every round)."""
    def rescore(masks):
        return score_snip(ctx, granularity, masks)
    return iterative_keys(ctx.arch, density, rounds, rescore, granularity, progress)


ONE_SHOT = Registry("method", {
    "random": score_random,
    "magnitude": score_magnitude,
    "lamp": score_lamp,
    "snip": score_snip,
    "grasp": score_grasp,
})  # (ctx, granularity) -> group scores
ITERATIVE_KEYS = Registry("method", {
    "iterative-snip": keys_iterative_snip,
    "synflow": keys_synflow,
})  # (ctx, granularity, density, rounds=..., progress=None) -> rank keys
#: Every pruning method name, built-in and registered: ``random``, ``magnitude``, ``lamp``,
#: ``snip``, ``grasp``, ``iterative-snip``, ``synflow``, then the names given to
#: :func:`register_score` (a live sequence).
#:
#: See Also
#: --------
#: connsim.pruning.prune : Takes any of these names as ``method``.
#: register_score : Adds a name.
#:
#: Examples
#: --------
#: >>> "synflow" in METHODS
#: True
METHODS = Names(ONE_SHOT, ITERATIVE_KEYS)


def register_score(name: str, fn, iterative: bool = False) -> None:
    """Make ``fn`` a pruning method named ``name``, usable by :func:`connsim.prune`.

    :func:`connsim.prune` (``method=name``) and the command line's ``--method`` accept the name
    from then on, at every granularity, scope and target.

    Parameters
    ----------
    name : str
        A name that is not yet a method (:data:`METHODS`).
    fn : callable
        One-shot: ``fn(ctx, granularity) -> scores``, one array of group scores per prunable
        layer (shape :func:`connsim.granularity.group_shape`; higher = keep, comparable across
        layers), from a :class:`ScoreContext`. Iterative: ``fn(ctx, granularity, density,
        rounds=..., progress=None) -> keys``, the rank keys of the module docstring (see
        :func:`iterative_keys`); ``rounds`` is passed only when the caller gives it.
    iterative : bool
        Whether ``fn`` is iterative.

    Raises
    ------
    ValueError
        If ``name`` is already a method or not a non-empty string.
    TypeError
        If ``fn`` is not callable (or ``name`` not a string).

    See Also
    --------
    ScoreContext : What a score receives.
    connsim.pruning.prune : Uses registered methods like built-in ones.

    Examples
    --------
    Keep the weights of largest squared magnitude (the same order as ``magnitude`` at weight
    granularity):

    >>> from connsim import get_arch, prune
    >>> def squared(ctx, granularity):
    ...     w2 = {n: np.asarray(w) ** 2 for n, w in ctx.weights.items()}
    ...     return to_groups(ctx.arch, w2, granularity, "mean")
    >>> register_score("squared", squared)
    >>> arch = get_arch("lenet-300-100")
    >>> a, b = prune(arch, "squared", 0.01, rng=0), prune(arch, "magnitude", 0.01, rng=0)
    >>> all((a.masks[n] == b.masks[n]).all() for n in arch.layer_names)
    True
    """
    (ITERATIVE_KEYS if iterative else ONE_SHOT).add(name, fn, taken=METHODS)


def check_method(method) -> str:
    """``method`` if it names a pruning method (:data:`METHODS`)."""
    return check_choice(method, METHODS, "method",
                        "add a method with connsim.scores.register_score")


def method_scores(method: str, ctx: ScoreContext, granularity: str, density: float,
                  rounds: int | None = None, progress=None) -> dict:
    """Group scores (one-shot) or rank keys (iterative) of ``method``; ``progress(t, rounds)`` is
    called after every round of an iterative method."""
    if check_method(method) in ONE_SHOT:
        return ONE_SHOT[method](ctx, granularity)
    kw = {} if rounds is None else {"rounds": rounds}
    return ITERATIVE_KEYS[method](ctx, granularity, density, progress=progress, **kw)
