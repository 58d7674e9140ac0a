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
from ._validation import LEVELS as LEVELS  # the levels, named here where they are computed
from ._validation import InvalidArgument, InvalidType, check_level
from .architectures import Architecture
from .masks import check_masks
from .ops import OPS, lower

__all__ = [
    "Connectivity", "connectivity", "effective_masks",
]


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

    See Also
    --------
    connectivity : Computes it.
    connsim.measures.summarize : Its counts, as a Measurement.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:2-2-1")
    >>> c = connectivity(arch, {"fc1": np.array([[1, 1], [0, 1]]), "fc2": np.array([[1, 0]])})
    >>> c.forward["fc1"], c.backward["fc1"], c.active("fc1")
    (array([ True,  True]), array([ True, False]), array([ True, False]))
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


def _rows(a: np.ndarray, n_dst: int) -> np.ndarray:
    """A layer's mask (or effective mask) as the ``uint8`` matrix of the mask kernels."""
    return a.reshape(n_dst, -1).view(np.uint8)


def _expand(nodes: np.ndarray, k: int) -> np.ndarray:
    """Node states repeated for the ``k`` weights of each group edge (``uint8``)."""
    return nodes.view(np.uint8) if k == 1 else np.repeat(nodes.view(np.uint8), k)


def _channel_level(arch: Architecture, masks: dict, keep: dict, out: dict | None = None,
                   counts: dict | None = None, reach: bool = True) -> Connectivity:
    """One forward pass and one fused backward/effective pass straight over the masks, in the
    lowering's order: no sparse matrix is built (``docs/performance.md``).

    The effective masks are written into ``out`` (checked by :func:`_check_out`) when given, else
    into fresh arrays. With ``counts`` (a dict), nothing is written: each layer's
    ``(kept, effective)`` counts go into it, and the result's ``effective`` is empty. A layer's
    mask is read for the last time in its own backward step, so ``out`` may be the masks.

    ``reach=False`` is for callers that report no co-reachability (effective masks and counts
    only): a layer whose source node has no reached unit then passes none back, and its rows are
    not read except to count their weights. What it would pass back marks only units that no
    input reaches, and so does all that those marks pass back in turn: an unreached unit's kept
    in-weights all come from unreached units, an identity edge (add, concat, pool, flatten)
    joins unreached units only to unreached units, and a deleted unit passes nothing back. So no
    effective weight and no active unit changes."""
    topo = lower(arch)
    keep = {topo.names.index(name): k for name, k in keep.items()}
    fwd = [np.zeros(n, dtype=bool) for n in topo.sizes]
    bwd = [np.zeros(n, dtype=bool) for n in topo.sizes]
    fwd[0][:] = True
    bwd[-1][:] = True
    fwd_x = {}  # per layer, its settled sources expanded to weights; absent: none reached
    for e in topo.edges:  # by destination: every source is settled before it is read
        if e.layer is None:
            fwd[e.dst][e.offset:e.offset + topo.sizes[e.src]] |= fwd[e.src]
        elif fwd[e.src].any():  # else no row can reach: the mask is not read
            fwd_x[e.layer] = _expand(fwd[e.src], e.k)
            _kernels.mask_push(_rows(masks[e.layer], topo.sizes[e.dst]), e.b, fwd_x[e.layer],
                               fwd[e.dst].view(np.uint8))
        if e.dst in keep:  # a deleted unit has no in-edges, and is on no path
            fwd[e.dst] &= keep[e.dst]
    effective, units = {}, {}
    for e in reversed(topo.edges):  # every destination is settled before it is read
        if e.dst in keep:
            bwd[e.dst] &= keep[e.dst]
        if e.layer is None:
            bwd[e.src] |= bwd[e.dst][e.offset:e.offset + topo.sizes[e.src]]
            continue
        mask, n_dst = masks[e.layer], topo.sizes[e.dst]
        rows, bwd_dst = _rows(mask, n_dst), bwd[e.dst].view(np.uint8)
        bwd_x = bwd[e.src] if e.k == 1 else np.zeros(topo.sizes[e.src] * e.k, dtype=bool)
        x = fwd_x.get(e.layer)  # absent: no reached source, so nothing is effective
        if x is None and not reach:  # nothing to pass back (see the docstring)
            bwd_dst = np.zeros(n_dst, np.uint8)  # rows are then counted, or zeroed, unread
        if counts is not None:
            x = np.zeros(topo.sizes[e.src] * e.k, np.uint8) if x is None else x
            counts[e.layer] = _kernels.mask_count(rows, e.b, x, bwd_dst, bwd_x.view(np.uint8))
        elif x is None and out is None:
            if reach:
                _kernels.mask_or(rows, e.b, bwd_dst, bwd_x.view(np.uint8))
            eff = np.zeros(mask.shape, dtype=bool)  # fresh zero pages, never written
        else:  # each row is read before it is written: ``out`` may be the masks
            eff = np.empty(mask.shape, dtype=bool) if out is None else out[e.layer]
            _kernels.mask_pull(rows, e.b, _kernels.NONE_REACHED if x is None else x, bwd_dst,
                               bwd_x.view(np.uint8), _rows(eff, n_dst))
        if e.k > 1:
            _kernels.group_any(bwd_x.view(np.uint8), e.k, bwd[e.src].view(np.uint8))
            if arch.nodes[e.src].op == "flatten":  # the units a co-reached unit reads
                units[e.src] = units[e.src] | bwd_x if e.src in units else bwd_x  # every reader
        if counts is None:
            effective[e.layer] = eff
    forward, backward = {}, {}
    for k, node in enumerate(arch.nodes):
        forward[node.name], backward[node.name] = fwd[k], bwd[k]
        if node.op == "flatten" and node.size != topo.sizes[k]:  # report units, not channels
            per = node.size // topo.sizes[k]
            forward[node.name] = np.repeat(fwd[k], per)
            backward[node.name] = units.get(k, np.repeat(bwd[k], per))  # the output: all units
    effective = {} if counts is not None else {name: effective[name] for name in arch.layer_names}
    return Connectivity(arch, "channel", masks, forward, backward, effective)


def _position_level(arch: Architecture, masks: dict, keep: dict, out: dict | None = None
                    ) -> Connectivity:
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
    if out is not None:  # every mask has been read: ``out`` may be the masks
        for name, eff in effective.items():
            np.copyto(out[name], eff)
        effective = {name: out[name] for name in effective}
    return Connectivity(arch, "position", masks, fwd, bwd, effective)


def _check_out(arch: Architecture, out, masks: dict, given: Mapping, in_place: bool) -> dict:
    """``out`` as the effective masks' destination: one writeable, C-contiguous boolean array per
    layer, of the layer's PyTorch-layout shape, that overlaps no other output, no mask as given
    and no canonical mask, except (with ``in_place``) exactly its own layer's canonical mask."""
    if not isinstance(out, Mapping):
        raise InvalidType("out", "a mapping from layer name to a boolean array",
                          got=str(type(out)))
    names = arch.layer_names
    if set(out) != set(names) or len(out) != len(names):
        raise InvalidArgument("out", f"one array for each layer of {arch.name!r}, exactly "
                              f"{list(names)}", got=f"the keys {list(out)}")
    fix = ("allocate it with np.empty(arch.weight_shape(name), dtype=bool)" + (
        ", or pass the masks themselves (as boolean PyTorch-layout arrays) to overwrite them"
        if in_place else "; effective_masks can overwrite the masks themselves"))
    for name in names:
        a, where = out[name], f"out[{name!r}]"
        if not isinstance(a, np.ndarray) or a.dtype != bool:
            raise InvalidType(where, "a boolean ndarray", fix=fix,
                              got=type(a).__name__ if not isinstance(a, np.ndarray)
                              else f"an array of dtype {a.dtype}")
        if a.shape != arch.weight_shape(name):
            raise InvalidArgument(where, f"of shape {arch.weight_shape(name)} (PyTorch layout)",
                                  fix=fix, got=f"shape {a.shape}")
        if not (a.flags.c_contiguous and a.flags.writeable):
            raise InvalidArgument(where, "a writeable, C-contiguous array", fix=fix,
                                  got="a read-only array" if a.flags.c_contiguous
                                  else "a non-contiguous array")
    # every array is C-contiguous: overlaps are those of byte ranges, checked all pairs at once
    def spans(arrays):
        start = np.array([a.ctypes.data for a in arrays], dtype=np.int64)
        return start, start + np.array([a.nbytes for a in arrays], dtype=np.int64)

    o0, o1 = spans([out[n] for n in names])
    raw = [n for n in names if isinstance(given[n], np.ndarray) and given[n] is not masks[n]]
    others = [("mask", names, spans([masks[n] for n in names])), ("output", names, (o0, o1))]
    if raw:  # masks given in another layout or dtype: their canonical form is a copy
        others.append(("mask as given", raw, spans([given[n] for n in raw])))
    for what, of, (m0, m1) in others:
        hit = (o0[:, None] < m1[None, :]) & (m0[None, :] < o1[:, None])
        if what == "output":  # each pair once, named by its later layer
            hit = np.tril(hit, -1)
        elif what == "mask" and in_place:  # a layer's own mask, exactly, is allowed
            np.fill_diagonal(hit, hit.diagonal() & ((o0 != m0) | (o1 != m1)))
        if hit.any():
            i, j = np.argwhere(hit)[0]
            raise InvalidArgument(f"out[{names[i]!r}]", "memory of its own" + (
                " (or its own layer's boolean PyTorch-layout mask)" if in_place else ""),
                fix=fix, got=f"an array that overlaps the {what} of layer {of[j]!r}")
    return {name: out[name] for name in names}


def _prepare(arch: Architecture, masks: Mapping, level: str, layout: str, units):
    check_level(level)
    masks = check_masks(arch, masks, layout=layout)
    keep = dict(units.check(arch).keep) if units is not None else {}
    return masks, keep


def connectivity(
    arch: Architecture, masks: Mapping, *, level: str = "channel", layout: str = "torch",
    units=None, out: Mapping | None = None,
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
    out : mapping of str to ndarray of bool, optional
        Where to write the effective masks: one writeable, C-contiguous boolean array per layer,
        in PyTorch layout, that overlaps no mask and no other output. At the channel level,
        buffers reused across calls save the cost of fresh pages, which is most of the time on
        large masks (``docs/performance.md``); the position level computes the masks, then
        copies them in. The result's ``effective`` holds these arrays. (To overwrite the masks
        with their effective masks, use :func:`effective_masks` with ``out=masks``.)

    Returns
    -------
    Connectivity

    See Also
    --------
    effective_masks : Only the effective masks.
    connsim.measures.measure : The counts, per layer and in total.

    Notes
    -----
    A kept weight is effective iff it lies on a directed path from an input unit to an output
    unit (Vysogorets & Kempe, "Connectivity Matters", JMLR 2023). A unit fed only by its bias is
    not forward-reachable. Cost: the channel level reads the masks themselves, with no sparse
    matrix: a forward step that stops in each row at the first kept weight from a reached input,
    then one fused pass that writes the effective mask (about one copy of the masks in all,
    ``docs/performance.md``); position level O(kept weights x output positions) in the worst case,
    far less when maps fill up early.

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
    return _connectivity(arch, masks, level, layout, units, out, in_place=False, reach=True)


def _connectivity(arch, given, level, layout, units, out, in_place, reach):
    """``in_place``: ``out`` may be the masks; ``reach``: see :func:`_channel_level`."""
    masks, keep = _prepare(arch, given, level, layout, units)
    if out is not None:
        out = _check_out(arch, out, masks, given, in_place)
    if level == "channel":
        return _channel_level(arch, masks, keep, out, reach=reach)
    return _position_level(arch, masks, keep, out)


def effective_masks(arch: Architecture, masks: Mapping, *, level="channel", layout="torch",
                    out: Mapping | None = None):
    """The effective mask of every prunable layer (PyTorch layout); see :func:`connectivity`.

    A kept weight is effective iff it lies on a path from an input unit to an output unit.

    Parameters
    ----------
    arch : Architecture
        The network.
    masks : mapping of str to array_like
        Binary masks keyed by layer name.
    level : {'channel', 'position'}
        Channel-level topology, or the exact position level.
    layout : {'torch', 'keras'}
        Layout of the given masks; the result is in PyTorch layout.
    out : mapping of str to ndarray of bool, optional
        Arrays to write the result into (see :func:`connectivity`). ``out=masks`` overwrites
        boolean, C-contiguous, PyTorch-layout masks with their effective masks (checked before
        anything is written; a call interrupted while it writes leaves some layers overwritten).

    Returns
    -------
    dict of str to ndarray of bool
        One effective mask per prunable layer, a subset of its mask (the arrays of ``out`` when
        given).

    See Also
    --------
    connectivity : The reachability of every node as well.
    connsim.measures.measure : Direct and effective counts.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> arch = get_arch("mlp:2-2-1")
    >>> m = {"fc1": np.array([[1, 1], [0, 1]]), "fc2": np.array([[1, 0]])}
    >>> effective_masks(arch, m)["fc1"].astype(int)
    array([[1, 1],
           [0, 0]])

    In place, on boolean masks:

    >>> m = {name: a.astype(bool) for name, a in m.items()}
    >>> eff = effective_masks(arch, m, out=m)
    >>> eff["fc1"] is m["fc1"], m["fc1"].astype(int).tolist()
    (True, [[1, 1], [0, 0]])
    """
    return _connectivity(arch, masks, level, layout, None, out, in_place=True,
                         reach=False).effective
