"""Pruned networks as layered sparse graphs (channel level).

A :class:`LayeredGraph` is a DAG of node groups joined by edge blocks. Group ``0`` holds the input
units, the last group the output units. Each :class:`Block` is a SciPy CSR bipartite adjacency with
rows = source group and columns = destination group, and ``src < dst`` (groups are numbered in
topological order). See ``docs/conventions.md`` for the full conventions.

From an architecture and its masks (:func:`build_graph`) there is one group per architecture node,
and one block per edge of the architecture's lowering (:func:`connsim.ops.lower`):

* dense layer: one edge per kept weight (the block is the transposed mask);
* conv layer: channel edge ``i -> o`` iff any of the ``kh*kw`` entries of kernel ``(o, i)`` is kept
  (a grouped conv only joins channels of the same group);
* dense layer after a flatten: the flatten's group keeps the ``C`` channels, and edge ``c -> o``
  is present iff any of the ``H*W`` weights from channel ``c`` to unit ``o`` is kept;
* pooling, residual add, concat: identity blocks (one per input; a concat's place each input in
  its own slice of channels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from . import _kernels
from ._validation import InvalidArgument, check_shape
from .architectures import Architecture
from .masks import check_masks
from .ops import Edge, lower

__all__ = [
    "Block", "LayeredGraph", "build_graph", "chain", "check_csr", "effective_edges", "reachability",
]


@dataclass(frozen=True)
class Block:
    """An edge block: ``adj[i, j]`` is the edge from unit ``i`` of group ``src`` to ``j`` of ``dst``.

    Attributes
    ----------
    src, dst : int
        Source and destination groups (``src < dst``).
    adj : scipy.sparse.csr_array
        Boolean adjacency of shape ``(sizes[src], sizes[dst])``: rows are source nodes.
    layer : str or None
        The prunable layer it comes from (``None`` if structural: pooling, flatten, adds).

    See Also
    --------
    LayeredGraph : Holds the blocks of a graph.

    Examples
    --------
    >>> import numpy as np
    >>> g = chain([np.eye(2, dtype=bool)])
    >>> b = g.blocks[0]
    >>> b.src, b.dst, b.adj.shape, b.adj.nnz
    (0, 1, (2, 2), 2)
    """

    src: int
    dst: int
    adj: sp.csr_array
    layer: str | None = None


def check_csr(adj, shape: tuple[int, int], where: str) -> sp.csr_array:
    """Canonical CSR: boolean data, no explicit zeros, sorted indices, int64 index arrays.

    int64 is the one index type the kernels are compiled for; every block of a
    :class:`LayeredGraph` passes through this function.

    Parameters
    ----------
    adj : array_like or sparse array
        A dense or sparse adjacency; an edge is present where the entry is nonzero.
    shape : tuple of int
        The expected ``(source nodes, destination nodes)``.
    where : str
        What the adjacency is, for error messages.

    Returns
    -------
    scipy.sparse.csr_array
        The canonical form.

    Raises
    ------
    ValueError
        For another shape, or NaN entries.

    See Also
    --------
    LayeredGraph : Stores its blocks in this form.

    Examples
    --------
    >>> import numpy as np
    >>> a = check_csr(np.array([[0.0, 2.0], [0.0, 0.0]]), (2, 2), "example")
    >>> a.dtype, a.indices.dtype, a.nnz
    (dtype('bool'), dtype('int64'), 1)
    """
    if not sp.issparse(adj):
        adj = sp.csr_array(np.asarray(adj))
    check_shape(adj.shape, shape, f"{where}: adjacency", "rows are source nodes, columns "
                                                         "destination nodes")
    adj = sp.csr_array(adj)
    if adj.dtype != bool:
        data = adj.data
        if data.dtype.kind == "f" and np.isnan(data).any():
            raise InvalidArgument(f"{where}: adjacency", "a 0/1, boolean or weighted adjacency",
                                  got="NaN", fix="an edge is present where the entry is nonzero")
        adj = sp.csr_array(adj != 0)
    adj.eliminate_zeros()
    adj.sum_duplicates()
    adj.sort_indices()
    return _index64(adj)


def _index64(adj: sp.csr_array) -> sp.csr_array:
    """``adj`` with contiguous int64 ``indptr`` and ``indices`` (SciPy may pick int32)."""
    adj.indptr = np.ascontiguousarray(adj.indptr, dtype=np.int64)
    adj.indices = np.ascontiguousarray(adj.indices, dtype=np.int64)
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

    See Also
    --------
    build_graph : The graph of a pruned architecture.
    chain : A graph from a list of adjacency matrices.
    reachability, effective_edges : What the kernels compute on it.

    Notes
    -----
    The blocks are stored in canonical form (:func:`check_csr`), and their index arrays are views
    into two buffers shared by the whole graph, which the kernels read in one call.

    Examples
    --------
    >>> import numpy as np
    >>> adj = np.array([[1, 0], [0, 0]], dtype=bool)
    >>> g = LayeredGraph(("in", "out"), (2, 2), (Block(0, 1, adj),))
    >>> g.n_edges, [f.tolist() for f in reachability(g)[0]]
    (1, [[True, True], [True, False]])
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    blocks: tuple[Block, ...]
    _packed: tuple = field(init=False, repr=False, compare=False)

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
        object.__setattr__(self, "_packed", _pack(self))

    @property
    def n_edges(self) -> int:
        """Number of edges over all blocks."""
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


def _pack(graph: LayeredGraph) -> tuple:
    """The graph as the one-call kernels read it (``connsim._kernels``): every block's index
    arrays are moved into two shared buffers and the blocks keep views of them, so the packed
    form costs no second copy of the edges."""
    blocks = graph.blocks
    ptr_off = np.cumsum([0] + [b.adj.indptr.size for b in blocks], dtype=np.int64)
    idx_off = np.cumsum([0] + [b.adj.nnz for b in blocks], dtype=np.int64)
    indptr = np.empty(ptr_off[-1], dtype=np.int64)
    indices = np.empty(idx_off[-1], dtype=np.int64)
    for k, b in enumerate(blocks):
        indptr[ptr_off[k]:ptr_off[k + 1]] = b.adj.indptr
        indices[idx_off[k]:idx_off[k + 1]] = b.adj.indices
        b.adj.indptr = indptr[ptr_off[k]:ptr_off[k + 1]]
        b.adj.indices = indices[idx_off[k]:idx_off[k + 1]]
    src = np.array([b.src for b in blocks], dtype=np.int64)
    dst = np.array([b.dst for b in blocks], dtype=np.int64)
    order_f = np.argsort(dst, kind="stable")
    order_b = np.argsort(-src, kind="stable")
    node_off = np.cumsum([0, *graph.sizes], dtype=np.int64)
    return order_f, order_b, src, dst, node_off, ptr_off, idx_off, indptr, indices


def _split(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[k]:offsets[k + 1]] for k in range(offsets.size - 1)]


def reachability(graph: LayeredGraph) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Forward reachability from group 0 and backward co-reachability from the last group.

    Parameters
    ----------
    graph : LayeredGraph
        The graph.

    Returns
    -------
    forward, backward : list of ndarray of bool
        One array per group.

    See Also
    --------
    effective_edges : The edges on input-output paths.
    connsim.effective.connectivity : The same from masks.

    Notes
    -----
    One kernel call for the whole graph: a push pass and a pull pass over the blocks in
    topological order, each stopping early once its destinations are settled, so the cost is at
    most O(nnz + number of nodes) and usually a fraction of one read of the edges.

    Examples
    --------
    >>> import numpy as np
    >>> g = chain([np.array([[1, 1], [0, 0]], dtype=bool), np.array([[1], [0]], dtype=bool)])
    >>> forward, backward = reachability(g)
    >>> [f.tolist() for f in forward], [b.tolist() for b in backward]
    ([[True, True], [True, True], [True]], [[True, False], [True, False], [True]])
    """
    order_f, order_b, *packed = graph._packed
    node_off = packed[2]
    fwd = np.zeros(node_off[-1], dtype=bool)
    bwd = np.zeros(node_off[-1], dtype=bool)
    fwd[:node_off[1]] = True
    bwd[node_off[-2]:] = True
    _kernels.graph_reach(order_f, order_b, *packed, fwd.view(np.uint8), bwd.view(np.uint8))
    return _split(fwd, node_off), _split(bwd, node_off)


def effective_edges(graph: LayeredGraph, forward=None, backward=None) -> list[np.ndarray]:
    """Per block, a boolean array aligned with ``adj.data``: whether each edge is on an input-output path.

    An edge ``i -> j`` is effective iff ``i`` is forward-reachable and ``j`` co-reachable.

    Parameters
    ----------
    graph : LayeredGraph
        The graph.
    forward, backward : list of ndarray of bool, optional
        The node states of :func:`reachability`; computed when not given.

    Returns
    -------
    list of ndarray of bool
        One array per block, aligned with the block's ``adj.data``.

    Raises
    ------
    ValueError
        If ``forward`` or ``backward`` do not have the graph's group sizes.

    See Also
    --------
    reachability : The node states.
    connsim.effective.effective_masks : The same from masks, per layer.

    Examples
    --------
    >>> import numpy as np
    >>> g = chain([np.array([[1, 1], [0, 0]], dtype=bool), np.array([[1], [0]], dtype=bool)])
    >>> [e.tolist() for e in effective_edges(g)]
    [[True, False], [True]]
    """
    if forward is None or backward is None:
        forward, backward = reachability(graph)
    packed = graph._packed[2:]
    fwd = np.concatenate(forward).astype(bool, copy=False)
    bwd = np.concatenate(backward).astype(bool, copy=False)
    n_nodes = int(packed[2][-1])
    if fwd.shape != (n_nodes,) or bwd.shape != (n_nodes,):
        raise InvalidArgument("forward and backward", f"one array per group with the group's "
                              f"sizes {graph.sizes}", got=f"{fwd.size} and {bwd.size} nodes in all",
                              fix="pass what reachability(graph) returns")
    out = np.empty(packed[-1].size, dtype=bool)
    _kernels.graph_effective(*packed, fwd.view(np.uint8), bwd.view(np.uint8), out.view(np.uint8))
    return _split(out, packed[4])


def dense_to_csr(a: np.ndarray) -> sp.csr_array:
    """CSR of a 2-D boolean array, with int64 index arrays (see :func:`check_csr`)."""
    rows, cols = np.nonzero(a)
    indptr = np.zeros(a.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=a.shape[0]), out=indptr[1:])
    return _index64(sp.csr_array((np.ones(cols.size, dtype=bool), cols, indptr), shape=a.shape))


def layer_adjacency(edge: Edge, n_src: int, n_dst: int, mask: np.ndarray,
                    flat: np.ndarray | None = None) -> sp.csr_array:
    """The ``(n_src, n_dst)`` adjacency of a prunable edge: group edge present iff any of its ``k``
    weights is kept (:mod:`connsim.ops`). ``flat`` may hold the mask's flat nonzero indices.

    Marking the groups of the kept entries is several times faster than a reduction over the
    kernel axes on sparse masks.
    """
    if edge.k == 1 and edge.a == n_src:  # a plain dense layer: the block is the transposed mask
        return dense_to_csr(mask.reshape(n_dst, n_src).T)
    if flat is None:
        flat = np.flatnonzero(mask)
    pairs = np.zeros(n_dst * edge.a, dtype=bool)
    pairs[flat // edge.k] = True
    if edge.a == n_src:
        return dense_to_csr(pairs.reshape(n_dst, n_src).T)
    src, dst = edge.group_ends(np.flatnonzero(pairs))  # grouped: place each group's block
    return sp.csr_array((np.ones(src.size, dtype=bool), (src, dst)), shape=(n_src, n_dst))


def _structural(edge: Edge, n_src: int, n_dst: int) -> sp.csr_array:
    indptr = np.arange(n_src + 1, dtype=np.int64)
    indices = np.arange(edge.offset, edge.offset + n_src, dtype=np.int64)
    return sp.csr_array((np.ones(n_src, dtype=bool), indices, indptr), shape=(n_src, n_dst))


def build_graph(arch: Architecture, masks: Mapping, *, layout: str = "torch") -> LayeredGraph:
    """The channel-level :class:`LayeredGraph` of a pruned architecture (module docstring).

    Parameters
    ----------
    arch : Architecture
        The network.
    masks : mapping of str to array_like
        Binary masks keyed by layer name.
    layout : {'torch', 'keras'}
        Layout of the given masks.

    Returns
    -------
    LayeredGraph
        One group per node of the architecture (channels or units), one block per edge of the
        lowering: a conv's group edge is present iff any entry of its kernel is kept.

    See Also
    --------
    reachability, effective_edges : Run on the graph.
    connsim.effective.connectivity : Reads the masks directly, without building a graph.

    Examples
    --------
    >>> from connsim import get_arch, ones_masks
    >>> arch = get_arch("mlp:4-3-2")
    >>> g = build_graph(arch, ones_masks(arch))
    >>> g.sizes, g.n_edges
    ((4, 3, 2), 18)
    """
    return _build_graph(arch, check_masks(arch, masks, layout=layout))


def _build_graph(arch: Architecture, masks: dict, kept_flat: dict | None = None,
                 keep: dict | None = None) -> LayeredGraph:
    """:func:`build_graph` on masks already in canonical form; ``kept_flat`` may hold the flat
    indices of the kept entries of some layers (``np.flatnonzero``), computed once by the caller.
    ``keep`` (node name -> bool per channel, checked by the caller) deletes units: every edge
    into a unit it masks is dropped."""
    kept_flat, keep = kept_flat or {}, keep or {}
    topo = lower(arch)
    blocks = []
    for e in topo.edges:
        n_src, n_dst = topo.sizes[e.src], topo.sizes[e.dst]
        if e.layer is None:
            adj = _structural(e, n_src, n_dst)
        else:
            adj = layer_adjacency(e, n_src, n_dst, masks[e.layer], kept_flat.get(e.layer))
        k = keep.get(topo.names[e.dst])
        if k is not None:
            coo = adj.tocoo()
            sel = k[coo.col]
            adj = _index64(sp.csr_array((coo.data[sel], (coo.row[sel], coo.col[sel])),
                                        shape=adj.shape))
        blocks.append(Block(e.src, e.dst, adj, e.layer))
    return LayeredGraph(topo.names, topo.sizes, tuple(blocks))


def chain(blocks: Sequence, names: Sequence[str] | None = None) -> LayeredGraph:
    """A plain chain from a list of adjacency matrices (rows = source layer).

    Parameters
    ----------
    blocks : sequence of array_like or sparse arrays
        Adjacency ``k`` joins group ``k`` to group ``k + 1``; consecutive shapes must agree.
    names : sequence of str, optional
        Group names; default ``g0``, ``g1``, ...

    Returns
    -------
    LayeredGraph
        The chain.

    Raises
    ------
    ValueError
        For no blocks, or consecutive blocks whose shapes do not agree.

    See Also
    --------
    LayeredGraph : Any DAG of groups.
    build_graph : The graph of an architecture.

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
