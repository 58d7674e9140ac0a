"""Information flow and gradient flow between layers: the statistics of InCoP's stopping rule.

**Information flow (IF).** The units are the outputs of every conv and dense op *before*
BatchNorm and ReLU, in execution order, projection shortcuts excluded and the classifier
included (:func:`flow_layers`); a conv output is averaged over its positions, one value per channel
and sample. Each unit is standardised over the data (``z = (a - mean) / max(std, 1e-6)``; a unit
that is constant on the data, dead or disconnected, has ``z = 0`` exactly, never NaN), and
``C_l = (1/N) sum_n z_l(n) z_{l+1}(n)^T`` is the correlation between consecutive hooked layers;
``kappa_l`` is the (signed) mean of all entries of ``C_l`` and ``phi = (kappa_1 ... kappa_{L-1})``.
The activations come from one evaluation-mode forward pass over the data through
:meth:`Network.forward`'s ``tap`` hook; means, variances and co-moment matrices are merged batch by
batch (Chan et al.'s pairwise update), so no ``N x n`` matrix is held and one pass suffices.

**Gradient flow (GF).** ``gamma_l`` is the mean of ``|dL/dW_l|`` over all entries of each prunable
weight tensor (pruned entries have zero gradient), each batch's cross-entropy gradient taken in
evaluation mode and the per-batch means averaged over a fixed set of held-out batches.

The stopping rule compares the statistic of the pruned network with the dense network's at the
rewind point: it fires when ``||phi - phi_dense||_2 < eps`` (:mod:`connsim.stopping`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .architectures import Architecture
from .trainer.backend import to_numpy
from .trainer.layers import cross_entropy
from .trainer.network import Network

__all__ = [
    "flow_layers", "gradient_flow", "information_flow",
]


STD_FLOOR = 1e-6


def _ancestors(arch: Architecture, name: str) -> set:
    inputs = {n.name: n.inputs for n in arch.nodes}
    seen, todo = set(), [name]
    while todo:
        for s in inputs[todo.pop()]:
            if s not in seen:
                seen.add(s)
                todo.append(s)
    return seen


def shortcut_layers(arch: Architecture) -> tuple[str, ...]:
    """Projection shortcuts: prunable nodes feeding an ``add`` that bypass another input of it
    (their own input is upstream of that input, they are not): ResNet's 1x1 downsampling convs."""
    nodes = {n.name: n for n in arch.nodes}
    out = []
    for node in arch.nodes:
        if node.op != "add":
            continue
        for s in node.inputs:
            src = nodes[s]
            if src.prunable and any(src.inputs[0] in up and s not in up
                                    for up in (_ancestors(arch, o) for o in node.inputs if o != s)):
                out.append(s)
    return tuple(n for n in arch.layer_names if n in out)


def flow_layers(arch: Architecture) -> tuple[str, ...]:
    """The hooked layers of the information flow.

    Prunable nodes in execution order, projection shortcuts excluded (found structurally: a
    prunable input of an ``add`` that bypasses another input of it), the classifier included.

    Parameters
    ----------
    arch : Architecture
        The network.

    Returns
    -------
    tuple of str
        Layer names; ``kappa_l`` correlates layer ``l`` with layer ``l + 1`` of this tuple.

    See Also
    --------
    information_flow : Computes ``phi`` over these layers.

    Examples
    --------
    >>> from connsim import get_arch
    >>> flow_layers(get_arch("lenet-300-100"))
    ('fc1', 'fc2', 'fc3')
    >>> len(flow_layers(get_arch("resnet-20"))), len(get_arch("resnet-20").layer_names)
    (20, 22)
    """
    skip = set(shortcut_layers(arch))
    return tuple(n for n in arch.layer_names if n not in skip)


class _Moments:
    """Streaming mean, variance and consecutive co-moments of the hooked units (float64)."""

    def __init__(self, layers):
        self.layers = layers
        self.n = 0
        self.mean: dict = {}
        self.m2: dict = {}
        self.co: list = [None] * (len(layers) - 1)
        self.low: dict = {}
        self.high: dict = {}

    def add(self, acts: dict) -> None:
        b = len(next(iter(acts.values())))
        n_new = self.n + b
        batch_mean = {k: a.mean(axis=0) for k, a in acts.items()}
        centred = {k: a - batch_mean[k] for k, a in acts.items()}
        delta = {k: batch_mean[k] - self.mean.get(k, 0.0) for k in acts}
        w = self.n * b / n_new
        for i in range(len(self.layers) - 1):
            k0, k1 = self.layers[i], self.layers[i + 1]
            c = centred[k0].T @ centred[k1] + w * np.outer(delta[k0], delta[k1])
            self.co[i] = c if self.co[i] is None else self.co[i] + c
        for k, a in acts.items():
            m2 = (centred[k] ** 2).sum(axis=0) + w * delta[k] ** 2
            self.m2[k] = m2 + self.m2.get(k, 0.0)
            self.mean[k] = self.mean.get(k, 0.0) + delta[k] * b / n_new
            self.low[k] = np.minimum(self.low.get(k, np.inf), a.min(axis=0))
            self.high[k] = np.maximum(self.high.get(k, -np.inf), a.max(axis=0))
        self.n = n_new

    def kappa(self) -> np.ndarray:
        inv = {}
        for k in self.layers:
            std = np.sqrt(np.maximum(self.m2[k], 0.0) / self.n)
            inv[k] = np.where(self.low[k] == self.high[k], 0.0, 1.0 / np.maximum(std, STD_FLOOR))
        out = []
        for i in range(len(self.layers) - 1):
            k0, k1 = self.layers[i], self.layers[i + 1]
            corr = inv[k0][:, None] * (self.co[i] / self.n) * inv[k1][None, :]
            out.append(float(corr.mean()))
        return np.array(out)


def information_flow(net: Network, x: np.ndarray, *, batch_size: int = 1000,
                     layers: Iterable[str] | None = None) -> np.ndarray:
    """``phi``: the mean correlation ``kappa_l`` between consecutive hooked layers on inputs ``x``.

    Parameters
    ----------
    net : Network
        Evaluated in evaluation mode (BatchNorm with running statistics).
    x : ndarray
        Inputs ``(N, *input_shape)``; the statistic is over all of them.
    batch_size : int
        Examples per forward pass (memory, not the result).
    layers : iterable of str, optional
        Hooked layers in execution order (default :func:`flow_layers`).

    Returns
    -------
    ndarray
        ``L - 1`` values for ``L`` hooked layers.

    See Also
    --------
    gradient_flow : The other statistic of InCoP's flow rule.
    flow_layers : The layers it reads.
    connsim.stopping.StopRule : Where the statistic stops a round.

    Examples
    --------
    >>> from connsim import get_arch
    >>> net = Network(get_arch("mlp:4-8-8-3"), rng=0)
    >>> x = np.random.default_rng(0).standard_normal((256, 4)).astype(np.float32)
    >>> information_flow(net, x).shape
    (2,)
    """
    layers = tuple(flow_layers(net.arch) if layers is None else layers)
    if len(layers) < 2:
        raise ValueError(f"information flow needs at least two hooked layers, got {layers}")
    if len(x) < 2:
        raise ValueError("information flow needs at least two examples")
    wanted = set(layers)
    stats = _Moments(layers)
    acts = {}

    def tap(name, y):
        if name in wanted:
            y = to_numpy(y).astype(np.float64)
            acts[name] = y.mean(axis=(2, 3)) if y.ndim == 4 else y

    for k in range(0, len(x), batch_size):
        net.forward(x[k:k + batch_size], train=False, tap=tap)
        stats.add(acts)
    return stats.kappa()


def gradient_flow(net: Network, batches: Iterable) -> np.ndarray:
    """``gamma``: per prunable layer, the mean ``|dL/dW|`` over its entries, averaged over batches.

    Parameters
    ----------
    net : Network
        Gradients are taken in evaluation mode (BatchNorm running statistics, which stay as they
        are); the parameters are not changed.
    batches : iterable of (x, y)
        The fixed held-out batches (the same ones at every check).

    Returns
    -------
    ndarray
        One value per layer of ``net.arch.layer_names``.

    See Also
    --------
    information_flow : The other statistic of InCoP's flow rule.
    connsim.stopping.StopRule : Where the statistic stops a round.

    Examples
    --------
    >>> from connsim import get_arch
    >>> net = Network(get_arch("mlp:4-8-3"), rng=0)
    >>> rng = np.random.default_rng(0)
    >>> batch = (rng.standard_normal((16, 4)).astype(np.float32), rng.integers(0, 3, 16))
    >>> gradient_flow(net, [batch]).shape
    (2,)
    """
    xp = net.xp
    total = np.zeros(len(net.arch.layer_names))
    count = 0
    for x, y in batches:
        _, g = cross_entropy(xp, net.forward(x, train=False), xp.asarray(y))
        net.backward(g)
        grads = net.weight_gradients()
        total += [float(xp.abs(grads[n]).mean()) for n in net.arch.layer_names]
        count += 1
    if count == 0:
        raise ValueError("gradient flow needs at least one batch")
    return total / count
