"""A trainable network built from an :class:`~connsim.architectures.Architecture`.

The architecture that drives the graph and the theory also drives the model: every node becomes
the layer that :func:`connsim.trainer.layers.make_layer` (the trainer's table of operations) builds
for it, followed by BatchNorm and its activation when the node says so. Masks multiply the prunable weights;
every optimiser step leaves pruned weights at exactly zero (SGD masks the arrays it writes, or on a
layer's sparse path updates its kept weights only; Adam calls :meth:`Network.apply_masks`).

The pruning scores that need gradients use only :meth:`Network.forward`, :meth:`Network.backward`,
:meth:`Network.set_weights` and :meth:`Network.weight_gradients` (``docs/pruning.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .._validation import check_rng
from ..architectures import Architecture
from ..masks import check_masks
from .backend import get_backend, to_numpy
from .layers import BatchNorm, UnitMask, init_weight, make_activation, make_layer


class Network:
    """Forward and backward passes over an architecture DAG.

    Parameters
    ----------
    arch : Architecture
    masks : mapping, optional
        Binary masks keyed by layer name (PyTorch layout); all ones when omitted.
    backend : {'numpy', 'cupy'}
    init : {'kaiming', 'xavier', 'fan-avg'}
    rng : seed or Generator, optional
        Initialisation is drawn on the host with NumPy, so it is the same on every backend.
    dtype : str
        'float32' for training, 'float64' for gradient checks.
    units : UnitMasks, optional
        Unit (channel) masks that multiply node outputs (:class:`connsim.granularity.UnitMasks`):
        at ``'post'`` after the node's activation, at ``'pre'`` just before it. A masked unit
        outputs exactly 0.
    sparse : {'auto', True, False}
        Whether masked dense and conv layers multiply by their kept weights only (sparse
        products, and weight gradients at the kept weights): ``'auto'`` on NumPy for layers of
        at least :data:`connsim.trainer.layers.SPARSE_MIN` weights and at most
        :data:`connsim.trainer.layers.SPARSE_BELOW` density (:class:`connsim.trainer.layers.Dense`,
        :class:`connsim.trainer.layers.Conv2d`).

    See Also
    --------
    connsim.trainer.train : Trains one.
    connsim.architectures.Architecture : What it is built from.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> net = Network(get_arch("mlp:4-8-3"), rng=0)
    >>> net.forward(np.ones((2, 4), dtype=np.float32)).shape
    (2, 3)
    """

    def __init__(self, arch: Architecture, masks: Mapping | None = None, *, backend="numpy",
                 init="kaiming", rng=None, dtype="float32", units=None, sparse="auto"):
        self.arch, self.backend, self.dtype = arch, backend, dtype
        xp = self.xp = get_backend(backend)
        rng = check_rng(rng)
        canon = check_masks(arch, masks) if masks is not None else None
        self.masks = {}
        self.ops: dict[str, list] = {}
        self.unit_masks: dict[str, UnitMask] = {}
        # nodes that depend on the data alone, through no parameter (the input, a flatten or a
        # pool after it): the backward pass computes no gradient for them
        self.data_only = {arch.nodes[0].name}
        keep = units.check(arch).keep if units is not None else {}
        for node in arch.nodes[1:]:
            w = b = m = None
            if node.prunable:
                shape = arch.weight_shape(node)
                w = xp.asarray(init_weight(shape, init, rng).astype(dtype))
                b = xp.zeros(shape[0], dtype=dtype) if node.bias else None
                if canon is not None:
                    m = self.masks[node.name] = xp.asarray(canon[node.name].astype(dtype))
            ops = [make_layer(xp, node, w, b, m, sparse=sparse)]
            if all(s in self.data_only for s in node.inputs):
                if node.prunable:  # the gradient with respect to the data is never used
                    ops[0].input_grad = False
                elif not node.batchnorm:  # no parameters: still a function of the data alone
                    self.data_only.add(node.name)
            unit = None
            if node.name in keep:
                unit = self.unit_masks[node.name] = UnitMask(
                    xp, xp.asarray(keep[node.name].astype(dtype)))
            # BatchNorm runs the ReLU that follows it straight away, unless a unit mask comes
            # between them (the same values, one pass fewer)
            fuse = node.batchnorm and node.activation == "relu" and not (
                unit is not None and units.position == "pre")
            if node.batchnorm:
                ops.append(BatchNorm(xp, node.channels, dtype=dtype, relu=fuse))
            if unit is not None and units.position == "pre":
                ops.append(unit)
            if node.activation and not fuse:
                ops.append(make_activation(xp, node.activation))
            if unit is not None and units.position == "post":
                ops.append(unit)
            self.ops[node.name] = ops
        self.apply_masks()

    # ------------------------------------------------------------------ parameters

    def parameters(self):
        """``(name, layer, key)`` for every trainable array (``layer.params[key]``)."""
        out = []
        for node, ops in self.ops.items():
            for k, op in enumerate(ops):
                prefix = node if k == 0 and not isinstance(op, BatchNorm) else f"{node}.bn"
                for key in op.params:
                    out.append((f"{prefix}.{key}", op, key))
        return out

    def state_dict(self) -> dict:
        """Host copies of all parameters and BatchNorm running statistics (never the arrays
        that training goes on to change)."""
        state = {name: to_numpy(op.params[key], copy=True) for name, op, key in self.parameters()}
        for node, ops in self.ops.items():
            for op in ops:
                if isinstance(op, BatchNorm):
                    state[f"{node}.bn.running_mean"] = to_numpy(op.running_mean, copy=True)
                    state[f"{node}.bn.running_var"] = to_numpy(op.running_var, copy=True)
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Load arrays written by :meth:`state_dict` (shapes must match), then re-apply masks."""
        xp = self.xp
        for name, op, key in self.parameters():
            if name not in state:
                raise ValueError(f"state has no entry {name!r}")
            arr = np.asarray(state[name])
            if arr.shape != op.params[key].shape:
                raise ValueError(f"{name}: shape {arr.shape}, expected {op.params[key].shape}")
            op.params[key] = xp.asarray(arr.astype(self.dtype))
        for node, ops in self.ops.items():
            for op in ops:
                if isinstance(op, BatchNorm):
                    op.running_mean = xp.asarray(state[f"{node}.bn.running_mean"])
                    op.running_var = xp.asarray(state[f"{node}.bn.running_var"])
        self.apply_masks()

    def apply_masks(self) -> None:
        """Set pruned weights to exactly zero."""
        for name, m in self.masks.items():
            layer = self.ops[name][0]
            layer.params["weight"] = layer.params["weight"] * m

    def weights(self) -> dict:
        """Host copies of the prunable weights, keyed by layer name (never the arrays that
        training goes on to change)."""
        return {n.name: to_numpy(self.ops[n.name][0].params["weight"], copy=True)
                for n in self.arch.layers}

    def set_weights(self, weights: Mapping) -> None:
        """Replace prunable weights (host arrays keyed by layer name), then re-apply the masks."""
        for name, w in weights.items():
            self.ops[name][0].params["weight"] = self.xp.asarray(np.asarray(w, dtype=self.dtype))
        self.apply_masks()

    def weight_gradients(self) -> dict:
        """dLoss/dw of every prunable weight after :meth:`backward` (backend arrays, masked)."""
        return {n.name: self.ops[n.name][0].grads["weight"] for n in self.arch.layers}

    # ------------------------------------------------------------------ passes

    def forward(self, x, train: bool = True, tap: Callable | None = None):
        """Logits for a batch ``x`` of shape ``(N, *input_shape)``.

        ``tap``, when given, is called as ``tap(name, y)`` with the output of every conv and dense
        node **before** its BatchNorm and ReLU (the flow statistics of :mod:`connsim.flow` read
        activations this way, without a second forward pass).
        """
        acts = {self.arch.nodes[0].name: self.xp.asarray(x, dtype=self.dtype)}
        for node in self.arch.nodes[1:]:
            ops = self.ops[node.name]
            y = [acts[s] for s in node.inputs] if ops[0].multi else acts[node.inputs[0]]
            for k, op in enumerate(ops):
                y = op.forward(y, train)
                if k == 0 and tap is not None and node.prunable:
                    tap(node.name, y)
            acts[node.name] = y
        return acts[self.arch.output.name]

    def backward(self, dlogits, tap: Callable | None = None) -> None:
        """Gradients of every parameter (in ``layer.grads``) given dLoss/dlogits (no gradient
        with respect to the input batch, or to nodes computed from it without parameters).

        ``tap``, when given, is called as ``tap(name, dy)`` with the gradient of the loss with
        respect to the output of every conv and dense node before its BatchNorm and ReLU (the
        outputs :meth:`forward`'s ``tap`` sees).
        """
        grads = {self.arch.output.name: dlogits}
        for node in reversed(self.arch.nodes[1:]):
            if node.name in self.data_only:
                continue
            ops = self.ops[node.name]
            g = grads.pop(node.name)
            for k in range(len(ops) - 1, -1, -1):
                if k == 0 and tap is not None and node.prunable:
                    tap(node.name, g)
                g = ops[k].backward(g)
            for s, gs in zip(node.inputs, g if ops[0].multi else [g], strict=True):
                if s not in self.data_only:
                    grads[s] = grads[s] + gs if s in grads else gs
