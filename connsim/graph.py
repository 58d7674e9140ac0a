"""Pruned networks as layered sparse graphs (channel level).

A :class:`LayeredGraph` is a DAG of node groups joined by edge blocks. Group ``0`` holds the input
units, the last group the output units. Each :class:`Block` is a SciPy CSR bipartite adjacency with
rows = source group and columns = destination group, and ``src < dst`` (groups are numbered in
topological order). See ``docs/conventions.md`` for the full conventions.

From an architecture and its masks (:func:`build_graph`) there is one group per architecture node:

* dense layer: one edge per kept weight (the block is the transposed mask);
* conv layer: channel edge ``i -> o`` iff any of the ``kh*kw`` entries of kernel ``(o, i)`` is kept;
* pooling and residual add: identity blocks (one per input of an add);
* flatten: a block from each channel to its ``H*W`` units, so that each unit inherits its
  channel's forward status and a channel is co-reachable iff any of its units is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import _kernels
from .architectures import Architecture
from .masks import check_masks


@dataclass(frozen=True)
class Block:
    """An edge block: ``adj[i, j]`` is the edge from unit ``i`` of group ``src`` to unit ``j`` of
    group ``dst``. ``layer`` names the prunable layer it comes from (``None`` if structural)."""

    src: int
    dst: int
    adj: sp.csr_array
    layer: str | None = None


def check_csr(adj, shape: tuple[int, int], where: str) -> sp.csr_array:
    """Canonical CSR: boolean data, no explicit zeros, sorted indices, int32/int64 index arrays."""
    if not sp.issparse(adj):
        adj = sp.csr_array(np.asarray(adj))
    if adj.shape != shape:
        raise ValueError(f"{where}: adjacency has shape {adj.shape}, expected {shape}")
    adj = sp.csr_array(adj)
    if adj.dtype != bool:
        data = adj.data
        if data.dtype.kind == "f" and np.isnan(data).any():
            raise ValueError(f"{where}: adjacency contains NaN")
        adj = sp.csr_array(adj != 0)
    adj.eliminate_zeros()
    adj.sum_duplicates()
    adj.sort_indices()
    return adj


@dataclass(frozen=True)
class LayeredGraph:
    """A DAG of node groups joined by CSR edge blocks (see the module docstring).

    Parameters
    ----------
    names : sequence of str
        One name per group, in topological order (group 0 = inputs, last = outputs).
    sizes : sequence of int
        Number of nodes in each group.
    blocks : sequence of Block
        Edge blocks with ``src < dst``; adjacency shapes must be ``(sizes[src], sizes[dst])``.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    blocks: tuple[Block, ...]

    def __post_init__(self):
        if len(self.names) != len(self.sizes) or len(self.sizes) < 2:
            raise ValueError("a layered graph needs at least two groups and one name per group")
        if any(int(s) <= 0 for s in self.sizes):
            raise ValueError(f"every group needs at least one node, got sizes {self.sizes}")
        checked = []
        for k, b in enumerate(self.blocks):
            if not 0 <= b.src < b.dst < len(self.sizes):
                raise ValueError(
                    f"block {k}: needs 0 <= src < dst < {len(self.sizes)} (topological order), "
                    f"got src={b.src}, dst={b.dst}"
                )
            adj = check_csr(b.adj, (self.sizes[b.src], self.sizes[b.dst]), f"block {k}")
            checked.append(Block(b.src, b.dst, adj, b.layer))
        object.__setattr__(self, "blocks", tuple(checked))

    @property
    def n_edges(self) -> int:
        return sum(b.adj.nnz for b in self.blocks)

    def reversed(self) -> LayeredGraph:
        """The same graph with every edge reversed (outputs become inputs)."""
        g = len(self.sizes) - 1
        blocks = [Block(g - b.dst, g - b.src, sp.csr_array(b.adj.T), b.layer) for b in self.blocks]
        return LayeredGraph(self.names[::-1], self.sizes[::-1], tuple(blocks[::-1]))

    def to_networkx(self, max_nodes: int = 100_000):
        """A ``networkx.DiGraph`` with nodes ``(group_name, index)``; meant for small graphs."""
        import networkx as nx

        if sum(self.sizes) > max_nodes:
            raise ValueError(
                f"graph has {sum(self.sizes)} nodes, more than max_nodes={max_nodes}; "
                "raise max_nodes if you really want a networkx copy"
            )
        g = nx.DiGraph()
        for name, size in zip(self.names, self.sizes, strict=True):
            g.add_nodes_from((name, i) for i in range(size))
        for b in self.blocks:
            coo = b.adj.tocoo()
            s, d = self.names[b.src], self.names[b.dst]
            g.add_edges_from(
                ((s, int(i)), (d, int(j))) for i, j in zip(coo.row, coo.col, strict=True)
            )
        return g


def _csr_arrays(adj: sp.csr_array):
    return adj.indptr, adj.indices


def reachability(graph: LayeredGraph) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Forward reachability from group 0 and backward co-reachability from the last group.

    Returns
    -------
    forward, backward : list of ndarray of bool
        One array per group.

    Notes
    -----
    One push pass and one pull pass over the blocks in topological order; each stops early once
    its destinations are settled, so the cost is at most O(nnz + number of nodes).
    """
    fwd = [np.zeros(n, dtype=bool) for n in graph.sizes]
    bwd = [np.zeros(n, dtype=bool) for n in graph.sizes]
    fwd[0][:] = True
    bwd[-1][:] = True
    by_dst = sorted(graph.blocks, key=lambda b: b.dst)
    for b in by_dst:
        _kernels.push_reach(*_csr_arrays(b.adj), fwd[b.src], fwd[b.dst])
    for b in sorted(graph.blocks, key=lambda b: -b.src):
        _kernels.pull_reach(*_csr_arrays(b.adj), bwd[b.dst], bwd[b.src])
    return fwd, bwd


def effective_edges(graph: LayeredGraph, forward=None, backward=None) -> list[np.ndarray]:
    """Per block, a boolean array aligned with ``adj.data``: is the edge on an input-output path?

    An edge ``i -> j`` is effective iff ``i`` is forward-reachable and ``j`` co-reachable.
    ``forward`` and ``backward`` default to :func:`reachability` of the graph.
    """
    if forward is None or backward is None:
        forward, backward = reachability(graph)
    out = []
    for b in graph.blocks:
        src_fwd, dst_bwd = forward[b.src], backward[b.dst]
        dst_all = bool(dst_bwd.all())
        if dst_all and src_fwd.all():  # the whole block is effective: a memset, not a loop
            eff = np.ones(b.adj.nnz, dtype=bool)
        else:
            eff = np.empty(b.adj.nnz, dtype=bool)
            _kernels.edge_effective(*_csr_arrays(b.adj), src_fwd, dst_bwd, dst_all, eff)
        out.append(eff)
    return out


def dense_to_csr(a: np.ndarray) -> sp.csr_array:
    """CSR of a 2-D boolean array, with the smallest index dtype that fits."""
    rows, cols = np.nonzero(a)
    idx = np.int32 if max(a.shape[0], a.shape[1], rows.size) < 2**31 - 1 else np.int64
    indptr = np.zeros(a.shape[0] + 1, dtype=idx)
    np.cumsum(np.bincount(rows, minlength=a.shape[0]), out=indptr[1:])
    return sp.csr_array(
        (np.ones(cols.size, dtype=bool), cols.astype(idx, copy=False), indptr), shape=a.shape
    )


def kernel_edges(mask: np.ndarray, flat: np.ndarray | None = None) -> np.ndarray:
    """``(out, in)`` boolean: is any entry of kernel ``(o, i)`` of a conv mask kept?

    Marks the kernels of the kept entries (``flat``, the mask's flat nonzero indices), which is
    several times faster than a reduction over the kernel axes on sparse masks.
    """
    out_ch, in_ch, kh, kw = mask.shape
    if flat is None:
        flat = np.flatnonzero(mask)
    edges = np.zeros(out_ch * in_ch, dtype=bool)
    edges[flat // (kh * kw)] = True
    return edges.reshape(out_ch, in_ch)


def _identity(n: int) -> sp.csr_array:
    return sp.csr_array(sp.identity(n, dtype=bool, format="csr"))


def _expand(channels: int, per: int) -> sp.csr_array:
    indptr = np.arange(channels + 1, dtype=np.int64) * per
    indices = np.arange(channels * per, dtype=np.int64)
    return sp.csr_array(
        (np.ones(channels * per, dtype=bool), indices, indptr), shape=(channels, channels * per)
    )


def group_size(arch: Architecture, index: int) -> int:
    """Channel-level group size of node ``index``: channels, units, or C*H*W for a flatten."""
    node = arch.nodes[index]
    return node.size if node.op == "flatten" else node.channels


def build_graph(arch: Architecture, masks: Mapping, *, layout: str = "torch") -> LayeredGraph:
    """The channel-level :class:`LayeredGraph` of a pruned architecture (module docstring).

    Examples
    --------
    >>> from connsim import get_arch, ones_masks
    >>> arch = get_arch("mlp:4-3-2")
    >>> g = build_graph(arch, ones_masks(arch))
    >>> g.sizes, g.n_edges
    ((4, 3, 2), 18)
    """
    return _build_graph(arch, check_masks(arch, masks, layout=layout))


def _build_graph(arch: Architecture, masks: dict, kept_flat: dict | None = None) -> LayeredGraph:
    """:func:`build_graph` on masks already in canonical form; ``kept_flat`` may hold the flat
    indices of the kept entries of conv layers (``np.flatnonzero``), computed once by the caller."""
    kept_flat = kept_flat or {}
    blocks = []
    for k, node in enumerate(arch.nodes[1:], 1):
        for src_name in node.inputs:
            s = arch.index(src_name)
            if node.op == "dense":
                adj = dense_to_csr(masks[node.name].T)
            elif node.op == "conv":
                adj = dense_to_csr(kernel_edges(masks[node.name], kept_flat.get(node.name)).T)
            elif node.op == "flatten":
                src = arch.nodes[s]
                adj = _expand(src.channels, src.size // src.channels)
            else:
                adj = _identity(arch.nodes[s].channels)
            blocks.append(Block(s, k, adj, node.name if node.prunable else None))
    sizes = tuple(group_size(arch, k) for k in range(len(arch.nodes)))
    return LayeredGraph(tuple(n.name for n in arch.nodes), sizes, tuple(blocks))


def chain(blocks: Sequence, names: Sequence[str] | None = None) -> LayeredGraph:
    """A plain chain from a list of adjacency matrices (rows = source layer).

    Examples
    --------
    >>> import numpy as np
    >>> g = chain([np.eye(3, dtype=bool), np.ones((3, 2), dtype=bool)])
    >>> g.sizes
    (3, 3, 2)
    """
    if not blocks:
        raise ValueError("chain needs at least one adjacency matrix")
    shapes = [tuple(np.shape(b)) if not sp.issparse(b) else b.shape for b in blocks]
    for k in range(1, len(shapes)):
        if shapes[k][0] != shapes[k - 1][1]:
            raise ValueError(
                f"adjacency {k} has {shapes[k][0]} rows but adjacency {k - 1} has "
                f"{shapes[k - 1][1]} columns; consecutive blocks must agree"
            )
    sizes = (shapes[0][0],) + tuple(s[1] for s in shapes)
    names = tuple(names) if names is not None else tuple(f"g{k}" for k in range(len(sizes)))
    return LayeredGraph(names, sizes, tuple(Block(k, k + 1, b) for k, b in enumerate(blocks)))
