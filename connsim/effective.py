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

from . import _kernels
from .architectures import Architecture
from .graph import _build_graph, dense_to_csr, reachability
from .masks import check_masks

LEVELS = ("channel", "position")


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


def _channel_level(arch: Architecture, masks: dict) -> Connectivity:
    flat = {n.name: np.flatnonzero(masks[n.name]) for n in arch.layers if n.op == "conv"}
    graph = _build_graph(arch, masks, flat)
    fwd, bwd = reachability(graph)
    forward = {n.name: fwd[k] for k, n in enumerate(arch.nodes)}
    backward = {n.name: bwd[k] for k, n in enumerate(arch.nodes)}
    effective = {}
    for node in arch.layers:
        mask, src_fwd, dst_bwd = masks[node.name], forward[node.inputs[0]], backward[node.name]
        if node.op == "dense":
            effective[node.name] = mask & src_fwd[None, :] & dst_bwd[:, None]
        else:  # scatter the kept entries whose kernel joins a reached and a co-reached channel
            n_in, k = mask.shape[1], mask.shape[2] * mask.shape[3]
            pair = flat[node.name] // k
            eff = np.zeros(mask.shape, dtype=bool)
            eff.reshape(-1)[flat[node.name][src_fwd[pair % n_in] & dst_bwd[pair // n_in]]] = True
            effective[node.name] = eff
    return Connectivity(arch, "channel", masks, forward, backward, effective)


@dataclass(frozen=True)
class _KeptConv:
    """Kept entries of one conv mask: flat indices, coordinates, and two groupings."""

    flat: np.ndarray  # flat index into the mask, ascending (so grouped by output channel)
    co: np.ndarray
    ci: np.ndarray
    ky: np.ndarray
    kx: np.ndarray
    out_ptr: np.ndarray  # entries of output channel o: out_ptr[o]:out_ptr[o + 1]
    in_order: np.ndarray  # permutation grouping the entries by input channel
    in_ptr: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray) -> _KeptConv:
        n_out, n_in, kh, kw = mask.shape
        flat = np.flatnonzero(mask)
        co, rest = np.divmod(flat, n_in * kh * kw)
        ci, k = np.divmod(rest, kh * kw)
        ky, kx = np.divmod(k, kw)
        # a stable sort on a narrow integer type is a radix sort: O(kept)
        narrow = ci.astype(np.int16 if n_in < 2**15 else np.int64)
        in_order = np.argsort(narrow, kind="stable")
        return cls(flat, co, ci, ky, kx, _pointers(co, n_out), in_order, _pointers(ci, n_in))

    def by_output(self):
        return self.out_ptr, self.ci, self.ky, self.kx

    def by_input(self):
        o = self.in_order
        return self.in_ptr, self.co[o], self.ky[o], self.kx[o]


def _pointers(group: np.ndarray, n: int) -> np.ndarray:
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(group, minlength=n), out=ptr[1:])
    return ptr


def _position_level(arch: Architecture, masks: dict) -> Connectivity:
    fwd = {arch.nodes[0].name: np.ones(arch.input_shape, dtype=bool)}
    csr, kept = {}, {}
    for node in arch.nodes[1:]:
        x = fwd[node.inputs[0]]
        out = np.zeros(node.shape, dtype=bool)
        if node.op == "dense":
            csr[node.name] = dense_to_csr(masks[node.name].T)
            _kernels.push_reach(csr[node.name].indptr, csr[node.name].indices, x, out)
        elif node.op == "conv":
            kept[node.name] = _KeptConv.of(masks[node.name])
            _kernels.conv_push(*kept[node.name].by_output(), x, *node.stride, *node.padding, out)
        elif node.op == "pool":
            _kernels.pool_push(x, *node.kernel, *node.stride, out)
        elif node.op == "flatten":
            out = x.reshape(-1).copy()
        else:  # add
            for src in node.inputs:
                out |= fwd[src]
        fwd[node.name] = out

    bwd = {n.name: np.zeros(n.shape, dtype=bool) for n in arch.nodes}
    bwd[arch.output.name][:] = True
    for node in reversed(arch.nodes[1:]):
        y = bwd[node.name]
        src = node.inputs[0]
        if node.op == "dense":
            _kernels.pull_reach(csr[node.name].indptr, csr[node.name].indices, y, bwd[src])
        elif node.op == "conv":
            _kernels.conv_pull(*kept[node.name].by_input(), y, *node.stride, *node.padding,
                               bwd[src])
        elif node.op == "pool":
            _kernels.pool_pull(y, *node.kernel, *node.stride, bwd[src])
        elif node.op == "flatten":
            bwd[src] |= y.reshape(bwd[src].shape)
        else:  # add: co-reachability flows into every branch
            for s in node.inputs:
                bwd[s] |= y

    effective = {}
    for node in arch.layers:
        mask, src = masks[node.name], node.inputs[0]
        if node.op == "dense":
            effective[node.name] = (
                mask & fwd[src][None, :] & bwd[node.name].reshape(-1)[:, None]
            )
        else:
            kc = kept[node.name]
            hit = np.empty(kc.flat.size, dtype=bool)
            _kernels.conv_effective(*kc.by_output(), fwd[src], bwd[node.name], *node.stride,
                                    *node.padding, hit)
            eff = np.zeros(mask.shape, dtype=bool)
            eff.reshape(-1)[kc.flat[hit]] = True
            effective[node.name] = eff
    return Connectivity(arch, "position", masks, fwd, bwd, effective)


def connectivity(
    arch: Architecture, masks: Mapping, *, level: str = "channel", layout: str = "torch"
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
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    masks = check_masks(arch, masks, layout=layout)
    if level == "channel":
        return _channel_level(arch, masks)
    return _position_level(arch, masks)


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
