"""Reachability, active units and effective masks of a pruned architecture, at two levels.

``level="channel"`` works on the channel-level graph of :mod:`connsim.graph` (topology only).
``level="position"`` is exact and spatially resolved: every node is a boolean feature map over
``(channel, y, x)`` positions, and convolutions (stride, zero padding), pooling ("any position in the
window" for both average and max), flatten and residual adds move reachability between positions.
It equals the pattern of nonzero SynFlow gradients of the linearised ``|W|*M`` network on an
all-ones input, without float overflow or underflow. The two levels agree exactly on MLPs and on
unpadded convolutions; they differ where a kept weight reads only zero padding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._validation import LEVELS as LEVELS  # the levels, named here where they are computed
from ._validation import check_level
from .architectures import Architecture
from .graph import _build_graph, reachability
from .masks import check_masks
from .ops import OPS, lower


@dataclass(frozen=True)
class Connectivity:
    """Reachability of every node and the effective mask of every prunable layer.

    Attributes
    ----------
    arch : Architecture
    level : {'channel', 'position'}
    masks : dict of str to ndarray of bool
        The canonical (validated, PyTorch-layout) masks.
    forward, backward : dict of str to ndarray of bool
        Per architecture node: forward reachability from the input and backward co-reachability
        from the output. Channel level: one entry per channel/unit (``C*H*W`` units for a
        flatten). Position level: the node's full output shape.
    effective : dict of str to ndarray of bool
        Per prunable layer, the effective mask in PyTorch layout.
    """

    arch: Architecture
    level: str
    masks: dict
    forward: dict
    backward: dict
    effective: dict

    @property
    def disconnected(self) -> bool:
        """True when no input-output path remains."""
        return not self.forward[self.arch.output.name].any()

    def active(self, node: str) -> np.ndarray:
        """Boolean per channel (spatial nodes) or unit (vector nodes): on an input-output path.

        At the position level a channel is active iff at least one of its positions is both
        forward- and backward-reachable.
        """
        both = self.forward[node] & self.backward[node]
        if both.ndim == 3:
            return both.reshape(both.shape[0], -1).any(axis=1)
        return both


def _channel_level(arch: Architecture, masks: dict, keep: dict) -> Connectivity:
    topo = lower(arch)
    flat = {n.name: np.flatnonzero(masks[n.name]) for n in arch.layers}
    fwd, bwd = reachability(_build_graph(arch, masks, flat, keep))
    for name, k in keep.items():  # a deleted unit has no in-edges, and is on no path
        g = topo.names.index(name)
        fwd[g], bwd[g] = fwd[g] & k, bwd[g] & k
    effective, units = {}, {}
    for e in topo.layer_edges:
        src, dst = e.ends(flat[e.layer])
        hit = fwd[e.src][src] & bwd[e.dst][dst]
        eff = np.zeros(masks[e.layer].shape, dtype=bool)
        eff.reshape(-1)[flat[e.layer][hit]] = True
        effective[e.layer] = eff
        if e.k > 1 and arch.nodes[e.src].op == "flatten":  # the units a co-reached unit reads
            n_in = masks[e.layer].shape[1]
            seen = units.setdefault(e.src, np.zeros(n_in, dtype=bool))
            seen[flat[e.layer][bwd[e.dst][flat[e.layer] // n_in]] % n_in] = True
    forward, backward = {}, {}
    for k, node in enumerate(arch.nodes):
        forward[node.name], backward[node.name] = fwd[k], bwd[k]
        if node.op == "flatten" and node.size != topo.sizes[k]:  # report units, not channels
            per = node.size // topo.sizes[k]
            forward[node.name] = np.repeat(fwd[k], per)
            backward[node.name] = units.get(k, np.repeat(bwd[k], per))  # the output: all units
    return Connectivity(arch, "channel", masks, forward, backward, effective)


def _position_level(arch: Architecture, masks: dict, keep: dict) -> Connectivity:
    cache = {n.name: OPS[n.op].prepare(n, masks[n.name]) for n in arch.layers}
    keep = {name: k.reshape((-1,) + (1,) * (len(arch[name].shape) - 1)) for name, k in keep.items()}
    fwd = {arch.nodes[0].name: np.ones(arch.input_shape, dtype=bool)}
    for node in arch.nodes[1:]:
        fwd[node.name] = OPS[node.op].push(node, [fwd[s] for s in node.inputs],
                                           cache.get(node.name))
        if node.name in keep:
            fwd[node.name] = fwd[node.name] & keep[node.name]
    bwd = {n.name: np.zeros(n.shape, dtype=bool) for n in arch.nodes}
    bwd[arch.output.name][:] = True
    for node in reversed(arch.nodes[1:]):
        if node.name in keep:
            bwd[node.name] &= keep[node.name]
        OPS[node.op].pull(node, bwd[node.name], [bwd[s] for s in node.inputs],
                          cache.get(node.name))
    effective = {n.name: OPS[n.op].effective(n, masks[n.name], cache[n.name],
                                             fwd[n.inputs[0]], bwd[n.name])
                 for n in arch.layers}
    return Connectivity(arch, "position", masks, fwd, bwd, effective)


def connectivity(
    arch: Architecture, masks: Mapping, *, level: str = "channel", layout: str = "torch",
    units=None,
) -> Connectivity:
    """Reachability and effective masks of a pruned architecture.

    Parameters
    ----------
    arch : Architecture
    masks : mapping of str to array_like
        Binary masks keyed by layer name (see :func:`connsim.masks.check_masks`).
    level : {'channel', 'position'}
        Channel-level topology, or the exact position level (module docstring).
    layout : {'torch', 'keras'}
        Layout of the given masks.
    units : UnitMasks, optional
        Units whose output is masked (:class:`connsim.granularity.UnitMasks`, the ``output``
        channel semantics): each masked unit is deleted with every edge into it, so nothing
        reaches it and nothing downstream is reached through it.

    Returns
    -------
    Connectivity

    Notes
    -----
    A kept weight is effective iff it lies on a directed path from an input unit to an output
    unit (Vysogorets & Kempe, "Connectivity Matters", JMLR 2023). A unit fed only by its bias is
    not forward-reachable. Cost: channel level O(nnz + units); position level
    O(kept weights x output positions) in the worst case, far less when maps fill up early.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:3-2-2")
    >>> masks = {"fc1": np.array([[1, 0, 0], [0, 0, 0]]), "fc2": np.array([[0, 1], [0, 0]])}
    >>> c = connectivity(arch, masks)
    >>> c.disconnected, int(c.effective["fc1"].sum())
    (True, 0)
    """
    check_level(level)
    masks = check_masks(arch, masks, layout=layout)
    keep = dict(units.check(arch).keep) if units is not None else {}
    if level == "channel":
        return _channel_level(arch, masks, keep)
    return _position_level(arch, masks, keep)


def effective_masks(arch: Architecture, masks: Mapping, *, level="channel", layout="torch"):
    """The effective mask of every prunable layer (PyTorch layout); see :func:`connectivity`.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:2-2-1")
    >>> m = {"fc1": np.array([[1, 1], [0, 1]]), "fc2": np.array([[1, 0]])}
    >>> effective_masks(arch, m)["fc1"].astype(int)
    array([[1, 1],
           [0, 0]])
    """
    return connectivity(arch, masks, level=level, layout=layout).effective
