"""What every node operation does, in one table, and the one lowering built from it.

Each operation is one small class in :data:`OPS`. It is the only place in the core that knows
what the operation means:

* ``group_size`` and ``edges``: its channel-level lowering (node groups and edge blocks), which
  the graph (:mod:`connsim.graph`), the theory (:mod:`connsim.theory`) and Monte Carlo
  (:mod:`connsim.montecarlo`) all consume through :func:`lower`;
* ``push`` and ``pull``: how exact position-level reachability crosses it
  (:mod:`connsim.effective`);
* ``weight_shape`` (prunable operations): the PyTorch layout of its weight.

The trainer keeps its own table of layers keyed by the same names (:mod:`connsim.trainer.layers`).
``docs/rationale.md`` lists the files that adding an operation touches.

Channel-level conventions
-------------------------
A group has one node per channel (spatial nodes) or unit (vectors); a flatten keeps the channels
of the map it reads, and the dense layer after it joins channel ``c`` to unit ``o`` when any of the
``A = H*W`` weights ``(o, c*A + p)`` is kept. A prunable edge reads weights in groups of ``k``
consecutive entries (``kh*kw`` for a conv, ``A`` after a flatten, 1 otherwise); group edge ``g``
(``g = flat // k``) joins destination ``o = g // a`` to source ``(o // b) * a + g % a``, where ``a``
is the number of input channels one output reads and ``b`` the number of outputs per group (a plain
layer has ``a`` = all inputs and ``b`` = all outputs; a depthwise conv ``a = b = 1``). Structural
edges join source node ``j`` to destination node ``offset + j`` (``offset`` > 0 only in a concat).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .architectures import Architecture, Node


@dataclass(frozen=True)
class Edge:
    """One channel-level edge block of a lowered architecture (module docstring).

    Attributes
    ----------
    src, dst : int
        Group (architecture node) indices, ``src < dst``.
    layer : str or None
        The prunable layer whose weights form the edge; ``None`` for a structural (identity) edge.
    k, a, b : int
        Prunable edges: weights per group edge, input channels per output, outputs per group.
    offset : int
        Structural edges: destination index of source node 0.
    """

    src: int
    dst: int
    layer: str | None = None
    k: int = 1
    a: int = 1
    b: int = 1
    offset: int = 0

    def ends(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source and destination node of the group edge of each kept weight (flat indices)."""
        return self.group_ends(flat // self.k)

    def group_ends(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source and destination node of group edges ``g`` (flat indices over ``(out, a)``)."""
        o, within = np.divmod(g, self.a)
        return (o // self.b) * self.a + within, o


@dataclass(frozen=True)
class Topology:
    """The channel-level lowering of an architecture: group sizes and edge blocks.

    ``edges`` are sorted by destination (topological order) and, for one destination, in the
    order of its inputs.
    """

    arch: Architecture
    sizes: tuple[int, ...]
    edges: tuple[Edge, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Group names: the architecture's node names."""
        return tuple(n.name for n in self.arch.nodes)

    def layer_edge(self, name: str) -> Edge:
        """The edge of prunable layer ``name``."""
        return next(e for e in self.edges if e.layer == name)

    @property
    def layer_edges(self) -> tuple[Edge, ...]:
        """The prunable edges in the order of ``arch.layer_names``."""
        by_name = {e.layer: e for e in self.edges if e.layer is not None}
        return tuple(by_name[n] for n in self.arch.layer_names)


@functools.lru_cache(maxsize=64)
def lower(arch: Architecture) -> Topology:
    """The channel-level :class:`Topology` of ``arch`` (cached; architectures are immutable).

    Examples
    --------
    >>> from connsim import get_arch
    >>> t = lower(get_arch("lenet-5"))
    >>> t.sizes[t.arch.index("flatten")], t.layer_edge("fc1").k
    (16, 25)
    """
    sizes, edges = [], []
    for k, node in enumerate(arch.nodes):
        op = OPS[node.op]
        sizes.append(op.group_size(node, arch))
        edges.extend(op.edges(node, arch, k))
    return Topology(arch, tuple(sizes), tuple(edges))


# ----------------------------------------------------------------------------- the operations


def _kernels():
    from . import _kernels as kernels  # Numba loads only when reachability is computed

    return kernels


class Op:
    """An operation without weights that joins node ``j`` of each input to node ``j``."""

    prunable = False

    def group_size(self, node: Node, arch: Architecture) -> int:
        """Number of channel-level nodes of the node's group."""
        return node.channels

    def edges(self, node: Node, arch: Architecture, k: int) -> list[Edge]:
        """The channel-level edges into the node (group ``k``)."""
        return [Edge(arch.index(s), k) for s in node.inputs]

    def push(self, node: Node, xs: list, cache) -> np.ndarray:
        """Forward position-level reachability of the node from its inputs' (``xs``)."""
        return xs[0].copy()

    def pull(self, node: Node, y: np.ndarray, bwds: list, cache) -> None:
        """Add the node's backward reachability ``y`` into its inputs' (``bwds``, in place)."""
        bwds[0] |= y


class Input(Op):
    """The input node: no edge leads into it."""

    def edges(self, node, arch, k):
        """No edges: nothing feeds the input."""
        return []


class Pool(Op):
    """Pooling: "any position of the window" for average and max alike."""

    def push(self, node, xs, cache):
        """A window position is reached iff any position of its window is."""
        out = np.zeros(node.shape, dtype=bool)
        _kernels().pool_push(xs[0], *node.kernel, *node.stride, out)
        return out

    def pull(self, node, y, bwds, cache):
        """Every position of a co-reached window is co-reached."""
        _kernels().pool_pull(y, *node.kernel, *node.stride, bwds[0])


class Flatten(Op):
    """``(C, H, W) -> (C*H*W,)``: its group keeps the C channels (module docstring)."""

    def group_size(self, node, arch):
        """The channels of the map the flatten reads."""
        return arch[node.inputs[0]].channels

    def push(self, node, xs, cache):
        """The input map, flattened."""
        return xs[0].reshape(-1).copy()

    def pull(self, node, y, bwds, cache):
        """Add the output's co-reachability, reshaped, to the input map's."""
        bwds[0] |= y.reshape(bwds[0].shape)


class Add(Op):
    """Elementwise sum of equal-shape inputs: node ``j`` of every input feeds node ``j``."""

    def push(self, node, xs, cache):
        """Union of the inputs' reachability."""
        out = xs[0].copy()
        for x in xs[1:]:
            out |= x
        return out

    def pull(self, node, y, bwds, cache):
        """Every input is co-reached where the sum is."""
        for b in bwds:
            b |= y


class Concat(Op):
    """Channel concatenation of equal-size maps (or vectors), in the order of the inputs."""

    def edges(self, node, arch, k):
        """One structural edge per input, into its own slice of channels."""
        out, offset = [], 0
        for s in node.inputs:
            out.append(Edge(arch.index(s), k, offset=offset))
            offset += arch[s].channels
        return out

    def push(self, node, xs, cache):
        """The inputs' reachability, concatenated along channels."""
        return np.concatenate(xs, axis=0)

    def pull(self, node, y, bwds, cache):
        """Each input is co-reached where its slice of the output is."""
        offset = 0
        for b in bwds:
            b |= y[offset:offset + b.shape[0]]
            offset += b.shape[0]


class Dense(Op):
    """Fully connected layer, weight ``(out, in)``."""

    prunable = True

    def weight_shape(self, node: Node, arch: Architecture) -> tuple[int, ...]:
        """``(out, in)``."""
        return (node.channels, arch[node.inputs[0]].size)

    def edges(self, node, arch, k):
        """One prunable edge; after a flatten each group edge reads the ``H*W`` weights of a channel."""
        src = arch[node.inputs[0]]
        per = src.size // lower_size(src, arch)  # A units per channel after a flatten, else 1
        return [Edge(arch.index(src.name), k, node.name, per, src.size // per, node.channels)]

    def prepare(self, node, mask):
        """The mask as the ``uint8`` rows the mask kernels read (a view, no copy)."""
        return mask.view(np.uint8)

    def push(self, node, xs, cache):
        """An output unit is reached iff a kept weight reads a reached input."""
        out = np.zeros(node.shape, dtype=bool)
        _kernels().mask_push(cache, cache.shape[0], xs[0].view(np.uint8), out.view(np.uint8))
        return out

    def pull(self, node, y, bwds, cache):
        """An input unit is co-reached iff a kept weight carries it to a co-reached output."""
        _kernels().mask_or(cache, cache.shape[0], y.view(np.uint8), bwds[0].view(np.uint8))

    def effective(self, node, mask, cache, fwd_in, bwd_out):
        """Kept weights from a reached input to a co-reached output."""
        eff = np.empty(mask.shape, dtype=bool)
        _kernels().mask_pull(cache, cache.shape[0], fwd_in.view(np.uint8), bwd_out.view(np.uint8),
                             np.zeros(fwd_in.shape, np.uint8), eff.view(np.uint8))
        return eff


class Conv(Op):
    """2-D convolution with stride, zero padding and ``groups``; weight ``(out, in/groups, kh, kw)``."""

    prunable = True

    def weight_shape(self, node, arch):
        """``(out, in/groups, kh, kw)``."""
        return (node.channels, arch[node.inputs[0]].channels // node.groups, *node.kernel)

    def edges(self, node, arch, k):
        """One prunable edge whose group edges read the ``kh*kw`` weights of a kernel."""
        n_in = arch[node.inputs[0]].channels
        return [Edge(arch.index(node.inputs[0]), k, node.name, node.kernel[0] * node.kernel[1],
                     n_in // node.groups, node.channels // node.groups)]

    def prepare(self, node, mask):
        """The kept entries of the mask (:class:`KeptConv`)."""
        return KeptConv.of(mask, node.groups)

    def push(self, node, xs, cache):
        """Output positions read by a kept weight from a reached, in-bounds input position."""
        out = np.zeros(node.shape, dtype=bool)
        _kernels().conv_push(*cache.by_output(), xs[0], *node.stride, *node.padding, out)
        return out

    def pull(self, node, y, bwds, cache):
        """Input positions that a kept weight carries to a co-reached output position."""
        _kernels().conv_pull(*cache.by_input(), y, *node.stride, *node.padding, bwds[0])

    def effective(self, node, mask, cache, fwd_in, bwd_out):
        """Kept weights on a path from a reached input position to a co-reached output position."""
        hit = np.empty(cache.flat.size, dtype=bool)
        _kernels().conv_effective(*cache.by_output(), fwd_in, bwd_out, *node.stride,
                                  *node.padding, hit)
        eff = np.zeros(mask.shape, dtype=bool)
        eff.reshape(-1)[cache.flat[hit]] = True
        return eff


def lower_size(node: Node, arch: Architecture) -> int:
    """Channel-level group size of ``node``."""
    return OPS[node.op].group_size(node, arch)


OPS: dict[str, Op] = {
    "input": Input(), "dense": Dense(), "conv": Conv(), "pool": Pool(), "flatten": Flatten(),
    "add": Add(), "concat": Concat(),
}


# ----------------------------------------------------------------------------- kept conv entries


@dataclass(frozen=True)
class KeptConv:
    """Kept entries of one conv mask: flat indices, coordinates (input channels counted over the
    whole input, so grouped convs need nothing else), and two groupings."""

    flat: np.ndarray  # flat index into the mask, ascending (so grouped by output channel)
    co: np.ndarray
    ci: np.ndarray
    ky: np.ndarray
    kx: np.ndarray
    out_ptr: np.ndarray  # entries of output channel o: out_ptr[o]:out_ptr[o + 1]
    in_order: np.ndarray  # permutation grouping the entries by input channel
    in_ptr: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray, groups: int = 1) -> KeptConv:
        """The kept entries of ``mask`` (shape ``(out, in/groups, kh, kw)``) of a conv with ``groups``."""
        n_out, per_group, kh, kw = mask.shape
        n_in = per_group * groups
        flat = np.flatnonzero(mask)
        co, rest = np.divmod(flat, per_group * kh * kw)
        ci, k = np.divmod(rest, kh * kw)
        ci += (co // (n_out // groups)) * per_group
        ky, kx = np.divmod(k, kw)
        # a stable sort on a narrow integer type is a radix sort: O(kept)
        narrow = ci.astype(np.int16 if n_in < 2**15 else np.int64)
        in_order = np.argsort(narrow, kind="stable")
        return cls(flat, co, ci, ky, kx, _pointers(co, n_out), in_order, _pointers(ci, n_in))

    def by_output(self):
        """``(ptr, ci, ky, kx)``: the kept entries grouped by output channel."""
        return self.out_ptr, self.ci, self.ky, self.kx

    def by_input(self):
        """``(ptr, co, ky, kx)``: the kept entries grouped by input channel."""
        o = self.in_order
        return self.in_ptr, self.co[o], self.ky[o], self.kx[o]


def _pointers(group: np.ndarray, n: int) -> np.ndarray:
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(group, minlength=n), out=ptr[1:])
    return ptr
