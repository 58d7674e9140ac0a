"""Pruning granularity: which weights are pruned together (Heyman & Zylberberg 2024).

* ``weight``: every weight on its own;
* ``kernel``: the ``kh*kw`` entries of kernel ``(o, i)`` of a conv (a dense weight is its own
  kernel);
* ``channel``: all weights into an output channel (a row of a dense layer). The output layer's
  channels are the classes: at channel granularity they are never pruned, and they are left out
  of every count, keep-fraction and quota (:func:`prunable_layers`).

A group's score aggregates its weights' scores; keep-fractions count groups. :func:`expand` turns
group masks back into weight masks.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_choice
from .architectures import Architecture

GRANULARITIES = ("weight", "kernel", "channel")
AGGREGATES = ("sum", "mean", "abs-sum")  # how to_groups combines a group's values


def check_granularity(granularity) -> str:
    """``granularity`` if it is one of :data:`GRANULARITIES`."""
    return check_choice(granularity, GRANULARITIES, "granularity",
                        "prune single weights, whole kernels or whole output channels")


def group_shape(arch: Architecture, layer: str, granularity: str) -> tuple[int, ...]:
    """Shape of the group array of one layer."""
    check_granularity(granularity)
    shape = arch.weight_shape(layer)
    if granularity == "weight":
        return shape
    if granularity == "kernel":
        return shape[:2]
    return shape[:1]


def _axes(shape: tuple, granularity: str) -> tuple[int, ...]:
    keep = {"weight": len(shape), "kernel": 2, "channel": 1}[granularity]
    return tuple(range(keep, len(shape)))


def to_groups(arch: Architecture, values: dict, granularity: str, how: str = "sum") -> dict:
    """Aggregate weight-shaped ``values`` over groups: ``sum``, ``mean`` or ``abs-sum``
    (``|sum|``, SNIP's group score)."""
    check_granularity(granularity)
    check_choice(how, AGGREGATES, "how")
    out = {}
    for name in arch.layer_names:
        v = np.asarray(values[name], dtype=np.float64)
        axes = _axes(v.shape, granularity)
        if not axes:
            out[name] = np.abs(v) if how == "abs-sum" else v
            continue
        s = v.mean(axis=axes) if how == "mean" else v.sum(axis=axes)
        out[name] = np.abs(s) if how == "abs-sum" else s
    return out


def expand(arch: Architecture, group_masks: dict, granularity: str) -> dict:
    """Weight masks from group masks (every weight of a kept group is kept)."""
    check_granularity(granularity)
    out = {}
    for name in arch.layer_names:
        shape = arch.weight_shape(name)
        g = np.asarray(group_masks[name], dtype=bool)
        out[name] = np.ascontiguousarray(
            np.broadcast_to(g.reshape(g.shape + (1,) * (len(shape) - g.ndim)), shape))
    return out


def prunable_layers(arch: Architecture, granularity: str) -> tuple[str, ...]:
    """Layers whose groups may be pruned: all prunable layers, except the classifier at channel
    granularity (removing an output channel would remove a class)."""
    check_granularity(granularity)
    if granularity == "channel":
        names = tuple(n for n in arch.layer_names if n != arch.output.name)
        if not names:
            raise ValueError(f"{arch.name} has no hidden or convolutional channels to prune: at "
                             "channel granularity the classifier's channels (the classes) are "
                             "kept; use weight or kernel granularity")
        return names
    return arch.layer_names


def group_sizes(arch: Architecture, granularity: str) -> np.ndarray:
    """Number of groups in each layer."""
    return np.array([int(np.prod(group_shape(arch, n, granularity))) for n in arch.layer_names],
                    dtype=np.int64)
