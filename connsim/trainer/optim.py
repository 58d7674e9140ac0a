"""Optimisers and learning-rate schedules with PyTorch's semantics.

Weight decay is PyTorch-style (L2 added to the gradient: ``g + wd * w``), applied to every parameter
as ``torch.optim.SGD`` does by default. Schedules are functions of the iteration (0-based).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .._validation import check_choice
from .backend import fused_kernels


class SGD:
    """SGD with momentum, optional Nesterov, and weight decay (``torch.optim.SGD``, dampening 0)."""

    def __init__(self, network, momentum=0.0, nesterov=False, weight_decay=0.0):
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.net, self.momentum, self.nesterov, self.wd = network, momentum, nesterov, weight_decay
        self.buf: dict[str, object] = {}
        self.made: dict[str, object] = {}  # the sparse-path weights this optimiser last returned

    def step(self, lr: float) -> None:
        """One update with learning rate ``lr``; masked weights come out masked.

        The weight of a layer on the sparse path (:class:`connsim.trainer.layers.Dense`,
        :class:`connsim.trainer.layers.Conv2d`) is updated at its kept weights only: its pruned
        weights and their gradients are 0, so the dense update would leave them 0, and the
        momentum buffer holds the kept entries only.
        The first step writes a new array; later steps update the array that this optimiser
        returned, in place, as long as the layer still holds it (no dense copy per step).
        :meth:`~connsim.trainer.network.Network.weights` and ``state_dict`` return copies, so
        a snapshot taken through them never changes.
        """
        fused = fused_kernels(self.net.xp)
        for name, layer, key in self.net.parameters():
            kept = getattr(layer, "kept", None) if key == "weight" else None
            mask = getattr(layer, "mask", None) if key == "weight" and kept is None else None
            layer.params[key] = self._update(name, layer.params[key], layer.grads[key], mask, lr,
                                             kept, fused)

    def _update(self, name, p, g, mask, lr, kept, kernels):
        """The new value of one parameter: by the fused kernel when ``kernels`` is given (NumPy),
        else by array operations, into a new array; at the ``kept`` entries only for a layer on
        the sparse path, in place when ``p`` is the array this optimiser returned last time, else
        into a copy (``p`` may be shared)."""
        update = self._arrays if kernels is None else self._fused
        if kept is None:
            return update(kernels, name, p, g, mask, lr)
        flat = kept[2]
        full = p if self.made.get(name) is p else p.copy()
        full.ravel()[flat] = update(kernels, name, p.ravel()[flat], g.ravel()[flat], None, lr)
        self.made[name] = full
        return full

    def _arrays(self, kernels, name, p, g, mask, lr):
        """The update in array operations (any backend)."""
        if self.wd:  # wd * p + g: the same sum as g + wd * p, one temporary fewer
            g_wd = self.wd * p
            g_wd += g
            g = g_wd
        if self.momentum:
            b = self.buf.get(name)
            if b is None:
                b = g.copy()  # the buffer is updated in place from now on
            else:
                b *= self.momentum
                b += g
            self.buf[name] = b
            g = g + self.momentum * b if self.nesterov else b
        new = p - lr * g
        if mask is not None:  # a fresh array: masked in place, as Network.apply_masks would
            new *= mask
        return new

    def _fused(self, kernels, name, p, g, mask, lr):
        """The same update in one pass of the Numba kernel (NumPy arrays); bit-identical."""
        dt = p.dtype.type
        b = self.buf.get(name)
        has_buf = b is not None
        if not has_buf:  # shaped as the array update shapes it, C-ordered (so a view when flat)
            b = np.empty(p.shape, dtype=p.dtype)
            if self.momentum:
                self.buf[name] = b
        m = np.empty(0, p.dtype) if mask is None else mask.reshape(-1)
        out = np.empty(p.size, dtype=p.dtype)
        kernels.sgd_update(p.reshape(-1), g.reshape(-1), b.reshape(-1), has_buf, m, dt(lr),
                           dt(self.momentum), dt(self.wd), bool(self.nesterov), out)
        return out.reshape(p.shape)


class Adam:
    """Adam (``torch.optim.Adam``: L2 weight decay added to the gradient, bias-corrected moments)."""

    def __init__(self, network, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.net, self.betas, self.eps, self.wd = network, betas, eps, weight_decay
        self.m: dict[str, object] = {}
        self.v: dict[str, object] = {}
        self.t = 0

    def step(self, lr: float) -> None:
        """One update with learning rate ``lr``, then re-apply the masks."""
        self.t += 1
        b1, b2 = self.betas
        for name, layer, key in self.net.parameters():
            p, g = layer.params[key], layer.grads[key]
            if self.wd:
                g = g + self.wd * p
            m = b1 * self.m.get(name, 0.0) + (1 - b1) * g
            v = b2 * self.v.get(name, 0.0) + (1 - b2) * g * g
            self.m[name], self.v[name] = m, v
            mhat, vhat = m / (1 - b1 ** self.t), v / (1 - b2 ** self.t)
            layer.params[key] = p - lr * mhat / (vhat ** 0.5 + self.eps)
        self.net.apply_masks()


OPTIMIZERS = ("sgd", "nesterov", "adam")


def make_optimizer(name: str, network, *, momentum=0.9, weight_decay=0.0):
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`) for ``network``."""
    if check_choice(name, OPTIMIZERS, "optimizer") == "sgd":
        return SGD(network, momentum=momentum, weight_decay=weight_decay)
    if name == "nesterov":
        return SGD(network, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    return Adam(network, weight_decay=weight_decay)


def step_schedule(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Callable:
    """``lr`` times ``gamma`` for every milestone already passed."""
    ms = sorted(int(m) for m in milestones)
    return lambda it: lr * gamma ** sum(it >= m for m in ms)


def cosine_schedule(lr: float, total: int, min_lr: float = 0.0) -> Callable:
    """Cosine decay from ``lr`` to ``min_lr`` over ``total`` iterations."""
    return lambda it: min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(it, total) / total))


def warmup(schedule: Callable, iterations: int) -> Callable:
    """Linear warm-up from 0 to ``schedule(iterations)`` over the first ``iterations`` steps."""
    if iterations <= 0:
        return schedule
    return lambda it: schedule(iterations) * (it + 1) / iterations if it < iterations else schedule(it)


SCHEDULES = ("constant", "step", "cosine")


def make_schedule(name: str, lr: float, total: int, *, milestones=(), gamma=0.1,
                  warmup_iters=0) -> Callable:
    """``constant``, ``step`` (at ``milestones``, default 50 % and 75 % of ``total``) or
    ``cosine``, optionally after a linear warm-up."""
    if check_choice(name, SCHEDULES, "schedule") == "constant":
        def s(it):
            return lr
    elif name == "step":
        s = step_schedule(lr, milestones or (total // 2, (3 * total) // 4), gamma)
    else:
        s = cosine_schedule(lr, total)
    return warmup(s, warmup_iters)
