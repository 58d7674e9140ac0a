"""Exact expected disconnection of random pruning (``docs/theory.md``).

Under Bernoulli masks (every weight of layer l kept independently with probability d_l) the
channel-level group edge of a layer is present independently with probability
``q_l = 1 - (1 - d_l)^k_l`` (``k_l = kh*kw`` for a conv, ``A`` for the dense layer after a flatten of
``A`` positions, 1 for a plain dense layer). Given ``R_{l-1} = r`` forward-reachable nodes, the nodes
of group l are reachable independently with probability ``1 - (1 - q_l)^r``, so
``R_l | r ~ Binomial(n_l, 1 - (1 - q_l)^r)``. Propagating the full pmf of ``R_l`` is exact on chains;
backward co-reachability ``C_l`` is the same recursion from the output. Edge presence, source
reachability (layers before) and target co-reachability (layers after) are independent, so

    E[effective weights of layer l] = n_l^w d_l P(source reachable) P(target co-reachable).

Residual blocks (DAGs) are exact too: at a join (a residual add forward, a block input backward)
whose branches all leave one fork, the pmf is computed conditionally on the fork's reached count r
(:func:`_join`): a branch without layers delivers the fork's own set, a branch with layers reaches
each join node independently given the count before its last layer, and branches are independent
given the fork's set. Joins whose branches leave different forks (e.g. a skip over several
blocks), or whose branches hold a general grouped conv or a concat's slice or end in a depthwise
conv, fall back to treating the branches as independent exchangeable subsets (hypergeometric
union, :func:`union`; this ignores that every branch is empty when the fork is, so P(disconnected)
can be far off); such results carry ``exact = False``.

Grouped convolutions and concats (:class:`Step`): a depthwise conv (each output reads one input
channel) thins the count, ``R_l | r ~ Binomial(r, q_l)``, exactly in both directions; a concat's
count is the sum of its inputs' (exact when they leave one fork), and backward each input's slice
of the co-reached set is hypergeometric (exact when every consumer of the concat reads all of it).
A general grouped conv (``1 < groups < channels``) takes the reached sources as spread evenly over
its groups: an approximation, flagged ``exact = False``. See ``docs/theory.md``.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import gammaln

from ._kernels import binomial_mix
from ._validation import InvalidArgument, check_choice, check_compression, check_densities
from .architectures import Architecture
from .files import json_safe
from .granularity import UNIT_GRANULARITIES, check_granularity, check_semantics, prunable_layers, unit_sites
from .ops import lower
from .quotas import Quota, quota

TINY = 1e-300  # pmf entries below this contribute nothing representable


@dataclass(frozen=True)
class TheoryLayer:
    """A prunable layer of the theory graph: group edge probability from ``k`` weights each.

    Attributes
    ----------
    name : str
        The layer.
    src, dst : int
        Its source and destination groups in :class:`TheoryGraph`.
    k : int
        Weights per group edge (1 for a dense layer, ``kh*kw`` for a conv, the positions of a
        flatten for the dense layer after it).
    params : int
        The layer's prunable weights.
    a, b : int
        The source nodes one destination reads and the destinations per group
        (:mod:`connsim.ops`): a plain layer reads every source (``a = n_src``), a depthwise conv
        ``a = b = 1``.

    See Also
    --------
    TheoryGraph : Holds the layers.

    Examples
    --------
    >>> from connsim import get_arch
    >>> TheoryGraph.of(get_arch("lenet-5")).layers[0]
    TheoryLayer(name='conv1', src=0, dst=1, k=25, params=450, a=3, b=6)
    """

    name: str
    src: int
    dst: int
    k: int  # weights per group edge
    params: int
    a: int = 1
    b: int = 1


@dataclass(frozen=True)
class TheoryGraph:
    """Channel-level groups of an architecture and how they connect: the lowering of :mod:`connsim.ops`.

    Node order is kept. ``TheoryGraph.of(arch)`` builds it.

    Attributes
    ----------
    names : tuple of str
        One group per architecture node.
    sizes : tuple of int
        ``sizes[g]`` is the number of channels/units of group ``g`` (a flatten keeps its channels).
    layers : tuple of TheoryLayer
        The prunable layers.
    identity : tuple of tuple of int
        ``(src, dst, offset)`` structural edges (pooling, flatten, add, concat).
    concat : frozenset of int
        The groups that concatenate their inputs (their count is a sum, not a union).

    See Also
    --------
    predict : Propagates the reach distributions over it.

    Examples
    --------
    >>> from connsim import get_arch
    >>> g = TheoryGraph.of(get_arch("lenet-5"))
    >>> g.sizes, g.is_chain
    ((3, 6, 6, 16, 16, 16, 120, 84, 10), True)
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    layers: tuple[TheoryLayer, ...]
    identity: tuple[tuple[int, int, int], ...]
    concat: frozenset = frozenset()

    @property
    def is_chain(self) -> bool:
        """Whether every group has at most one edge in and one edge out."""
        ins = [0] * len(self.sizes)
        outs = [0] * len(self.sizes)
        for s, d in [(lay.src, lay.dst) for lay in self.layers] + [e[:2] for e in self.identity]:
            outs[s] += 1
            ins[d] += 1
        return all(x <= 1 for x in ins + outs)

    @classmethod
    def of(cls, arch: Architecture) -> TheoryGraph:
        """The theory graph of ``arch``."""
        topo = lower(arch)
        layers = tuple(TheoryLayer(e.layer, e.src, e.dst, e.k, arch.n_params(e.layer), e.a, e.b)
                       for e in topo.layer_edges)
        identity = tuple((e.src, e.dst, e.offset) for e in topo.edges if e.layer is None)
        concat = frozenset(k for k, n in enumerate(arch.nodes) if n.op == "concat")
        return cls(topo.names, topo.sizes, layers, identity, concat)


@dataclass(frozen=True)
class Step:
    """How a count crosses one directed edge of the propagation.

    Attributes
    ----------
    mode : {'full', 'thin', 'share', 'slice'}
        ``full`` (every destination may read every reached source: :func:`transition`), ``thin``
        (each reached source feeds ``factor`` destinations of its own: a Binomial thinning, exact),
        ``share`` (a grouped layer: each destination reads a ``factor`` share of the sources; the
        reached sources are taken as spread evenly over the groups, an approximation) or ``slice``
        (backward through a concat: the co-reached nodes of one input's slice, hypergeometric,
        exact when the concat's co-reached set is exchangeable).
    q : float
        The group edge probability.
    factor : float
        Destinations per source (``thin``) or the share of sources read (``share``).
    exact : bool
        Whether the step is exact.
    keep : float
        Each destination unit then survives with this probability (unit deletion).

    See Also
    --------
    transition, thin, select : The pmf operations of the modes.

    Examples
    --------
    >>> Step("thin", q=0.5, factor=2)
    Step(mode='thin', q=0.5, factor=2, exact=True, keep=1.0)
    """

    mode: str
    q: float = 1.0
    factor: float = 1.0
    exact: bool = True
    keep: float = 1.0  # then each destination unit survives with this probability (unit deletion)


def _layer_step(lay: TheoryLayer, q: float, n_src: int, n_dst: int, forward: bool) -> Step:
    a, b, n_in = (lay.a, lay.b, n_src) if forward else (lay.b, lay.a, n_dst)
    if a == n_in:
        return Step("full", q)
    if a == 1:
        return Step("thin", q, b)
    return Step("share", q, a / n_in, exact=False)


# ---------------------------------------------------------------------------- pmf algebra


@functools.lru_cache(maxsize=8)
def _log_factorials(n: int) -> np.ndarray:
    """``log k!`` for ``k = 0..n`` (read-only, cached: the tables of a network's widths)."""
    table = gammaln(np.arange(n + 1) + 1.0)
    table.flags.writeable = False
    return table


def transition(pmf: np.ndarray, n_dst: int, q: float, log_miss0: float = 0.0,
               share: float = 1.0) -> np.ndarray:
    """pmf of the reached count of a group of ``n_dst`` nodes whose sources are reached ``r ~ pmf``.

    Each of the ``n_dst`` nodes is joined to each of the ``r`` reached source nodes independently
    with probability ``q``.

    Exact: ``sum_r pmf[r] Binomial(n_dst, 1 - exp(log_miss0) (1 - q)^r)``, computed in log space;
    ``log_miss0 <= 0`` is an extra log-probability that a node is missed by other, independent
    routes (used at residual joins). ``share < 1`` replaces ``r`` by ``share * r`` (a grouped
    layer whose destinations read that share of the sources; an approximation). Source counts
    with probability below 1e-300 are skipped (their contribution is not representable), and each
    binomial is summed over its band only, where its terms are representable
    (:func:`connsim._kernels.binomial_mix`): cost and memory grow with the width times the
    supports, not with a (support x width) table.

    Parameters
    ----------
    pmf : ndarray
        ``pmf[r]``: probability that ``r`` source nodes are reached.
    n_dst : int
        Nodes of the destination group.
    q : float
        Group edge probability.
    log_miss0 : float
        Log-probability, at most 0, that a node is missed by other routes.
    share : float
        Share of the sources a destination reads (1 for a plain layer).

    Returns
    -------
    ndarray
        The pmf of the destination's reached count, on ``0..n_dst``.

    See Also
    --------
    thin : The depthwise step.
    union : Two independent reached sets joined.

    Examples
    --------
    >>> import numpy as np
    >>> transition(np.array([0.0, 1.0]), 2, 0.5).round(4).tolist()
    [0.25, 0.5, 0.25]
    """
    out = np.zeros(n_dst + 1)
    rows = np.flatnonzero(pmf > TINY)
    if rows.size == 0:
        return out
    lq = math.log1p(-q) if q < 1.0 else -math.inf
    with np.errstate(invalid="ignore"):  # 0 * -inf for r = 0 is replaced by 0 below
        log_miss = np.where(rows > 0, rows * share * lq, 0.0) + log_miss0
    none, every = log_miss == 0.0, np.isneginf(log_miss)
    out[0] += pmf[rows[none]].sum()
    out[n_dst] += pmf[rows[every]].sum()
    mid = ~(none | every)
    if mid.any():
        rows, log_miss = rows[mid], log_miss[mid]
        binomial_mix(pmf[rows], log_miss, out)
    return out


def union(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """pmf of ``|A u B|`` for independent exchangeable random subsets ``A``, ``B`` of ``n`` nodes.

    ``|A| ~ pa`` and ``|B| ~ pb``.

    Given ``|A| = a`` and ``|B| = b``, the number ``x`` of nodes of ``B`` outside ``A`` is
    hypergeometric: ``C(n - a, x) C(a, b - x) / C(n, b)``, and ``|A u B| = a + x``. Sizes whose
    probability is below 1e-17 of the largest are skipped (relative error below 1e-14).

    Parameters
    ----------
    pa, pb : ndarray
        The pmfs of ``|A|`` and ``|B|``, both on ``0..n``.

    Returns
    -------
    ndarray
        The pmf of ``|A u B|``, on ``0..n``.

    See Also
    --------
    transition : One layer's step.

    Examples
    --------
    >>> import numpy as np
    >>> one = np.array([0.0, 1.0, 0.0])  # one node of two
    >>> union(one, one).round(4).tolist()
    [0.0, 0.5, 0.5]
    """
    n = pa.size - 1
    out = np.zeros(n + 1)
    ra = np.flatnonzero(pa > 1e-17 * pa.max()) if pa.max() > 0 else np.array([], int)
    rb = np.flatnonzero(pb > 1e-17 * pb.max()) if pb.max() > 0 else np.array([], int)
    if ra.size == 0 or rb.size == 0:
        return out
    lf = _log_factorials(n)
    b = rb[:, None]
    log_cnb = lf[n] - lf[b] - lf[n - b]
    wb = pb[rb][:, None]
    for a in ra:
        x = np.arange(n - a + 1)[None, :]
        inside = b - x
        ok = (inside >= 0) & (inside <= a)
        ins = np.where(ok, inside, 0)
        logh = (lf[n - a] - lf[x] - lf[n - a - x] + lf[a] - lf[ins] - lf[a - ins] - log_cnb)
        w = np.where(ok, np.exp(np.where(ok, logh, 0.0)), 0.0)
        out[a:] += pa[a] * (wb * w).sum(axis=0)
    return out


def thin(pmf: np.ndarray, n_dst: int, factor: int, q: float) -> np.ndarray:
    """pmf of ``Binomial(factor * r, q)`` with ``r ~ pmf``, on ``0..n_dst``.

    A depthwise layer: each reached source feeds ``factor`` destinations of its own, each kept with
    probability ``q``.

    Parameters
    ----------
    pmf : ndarray
        The pmf of the reached sources.
    n_dst : int
        Nodes of the destination group.
    factor : int
        Destinations per source.
    q : float
        Group edge probability.

    Returns
    -------
    ndarray
        The pmf of the reached destinations, on ``0..n_dst``.

    See Also
    --------
    transition : The step of a plain layer.

    Examples
    --------
    >>> import numpy as np
    >>> thin(np.array([0.0, 1.0]), 2, 2, 0.5).round(4).tolist()
    [0.25, 0.5, 0.25]
    """
    rows = np.flatnonzero(pmf > TINY)
    table = _thinning(pmf.size - 1, factor, q)
    out = np.zeros(n_dst + 1)
    out[:table.shape[1]] += pmf[rows] @ table[rows]
    return out


@functools.lru_cache(maxsize=16)
def _thinning(n_src: int, factor: int, q: float) -> np.ndarray:
    """``table[r, s] = P(Binomial(factor * r, q) = s)``, computed once per layer in log space."""
    n = factor * np.arange(n_src + 1)[:, None]
    s = np.arange(factor * n_src + 1)[None, :]
    if q <= 0.0 or q >= 1.0:  # every destination missed, or every one hit
        return (s == (0 * n if q <= 0.0 else n)).astype(float)
    lf = _log_factorials(factor * n_src)
    ok = s <= n
    logp = (lf[n] - lf[s] - lf[np.where(ok, n - s, 0)] + s * math.log(q)
            + (n - s) * math.log1p(-q))
    table = np.where(ok, np.exp(np.where(ok, logp, -np.inf)), 0.0)
    table.flags.writeable = False
    return table


def select(pmf: np.ndarray, n_dst: int) -> np.ndarray:
    """pmf of how many of ``n_dst`` given nodes of an ``N``-node group lie in a random subset.

    ``N = pmf.size - 1``; the subset is uniformly random with a size that follows ``pmf``
    (hypergeometric, in log space).

    Parameters
    ----------
    pmf : ndarray
        The pmf of the subset's size, on ``0..N``.
    n_dst : int
        The given nodes (a concat input's slice).

    Returns
    -------
    ndarray
        The pmf on ``0..n_dst``.

    See Also
    --------
    Step : ``slice`` steps use it.

    Examples
    --------
    >>> import numpy as np
    >>> select(np.array([0.0, 0.0, 1.0, 0.0, 0.0]), 2).round(4).tolist()
    [0.1667, 0.6667, 0.1667]
    """
    rows = np.flatnonzero(pmf > TINY)
    out = np.zeros(n_dst + 1)
    if rows.size == 0:
        return out
    total = pmf.size - 1
    lf = _log_factorials(total)
    x = np.arange(n_dst + 1)[None, :]
    c = rows[:, None]
    ok = (x <= c) & (c - x <= total - n_dst)
    xs, rest = np.where(ok, x, 0), np.where(ok, c - x, 0)
    logp = (lf[n_dst] - lf[xs] - lf[n_dst - xs] + lf[total - n_dst] - lf[rest]
            - lf[np.where(ok, total - n_dst - rest, 0)] - (lf[total] - lf[c] - lf[total - c]))
    return out + np.where(ok, np.exp(np.where(ok, logp, -np.inf)), 0.0).T @ pmf[rows]


def _apply(pmf: np.ndarray, n_dst: int, step: Step | None) -> np.ndarray:
    """The pmf after crossing one directed edge (``None``: a node-to-node identity)."""
    if step is None:
        return pmf
    if step.mode == "full":
        out = transition(pmf, n_dst, step.q)
    elif step.mode == "share":
        out = transition(pmf, n_dst, step.q, share=step.factor)
    elif step.mode == "thin":
        out = thin(pmf, n_dst, int(step.factor), step.q)
    else:
        out = select(pmf, n_dst)
    return _keep(out, n_dst, step.keep)


def _keep(pmf: np.ndarray, n: int, keep: float) -> np.ndarray:
    """Each counted unit survives independently with probability ``keep`` (unit deletion)."""
    return pmf if keep >= 1 else thin(pmf, n, 1, keep)


def _point(n: int, at: int) -> np.ndarray:
    p = np.zeros(n + 1)
    p[at] = 1.0
    return p


def _directed_edges(graph: TheoryGraph, q: dict, forward: bool, keep: dict | None = None):
    """Edges ``(src, dst, step)`` in the direction of propagation (``step`` None = identity).

    ``keep`` (group -> unit survival probability): a step into a group with one in-edge carries
    the group's survival; a join applies it after joining (:func:`_propagate`)."""
    sizes = graph.sizes
    edges = [(lay.src, lay.dst, _layer_step(lay, q[lay.name], sizes[lay.src], sizes[lay.dst],
                                            forward)) for lay in graph.layers]
    if forward:
        edges = edges + [(s, d, None) for s, d, _ in graph.identity]
    else:
        # a concat's co-reached set is exchangeable when every consumer is a layer reading all
        plain = {g for g in graph.concat
                 if all(st.mode == "full" for s, _, st in edges if s == g)
                 and not any(s == g for s, _, _ in graph.identity)}
        edges = [(d, s, st) for s, d, st in edges]
        edges = edges + [(d, s, None if sizes[s] == sizes[d] else Step("slice", exact=d in plain))
                         for s, d, _ in graph.identity]
    if not keep:
        return edges
    fan_in = [0] * len(sizes)
    for _, d, _ in edges:
        fan_in[d] += 1
    out = []
    for s, d, st in edges:
        k = keep.get(d, 1.0)
        if k < 1 and fan_in[d] == 1:
            st = Step("thin", q=k) if st is None else replace(st, keep=k)
        out.append((s, d, st))
    return out


def _branches(join, ins, outs, start):
    """Trace every in-edge of ``join`` back through nodes with one in- and one out-edge.

    Returns the common fork and, per branch, its edges from the fork to the join, or ``None`` when
    the branches do not all start at one fork (then the join is not a simple residual block).
    """
    forks, paths = set(), []
    for edge in ins[join]:
        path = [edge]
        node = edge[0]
        while node != start and len(ins[node]) == 1 and len(outs[node]) == 1:
            path.append(ins[node][0])
            node = path[-1][0]
        forks.add(node)
        paths.append(path[::-1])
    if len(forks) != 1:
        return None
    return forks.pop(), paths


def _join(pmf_fork: np.ndarray, n_join: int, paths, sizes) -> np.ndarray:
    """Exact pmf of the reached count of a join whose branches all leave one fork.

    Given the fork's reached count ``r``: a branch without layers delivers the fork's own set
    (``r`` nodes); a branch with layers reaches each join node independently with probability
    ``1 - (1 - q_last)^c``, ``c`` the reached count at the source of its last layer (a layer that
    reads all its sources), whose law given ``r`` follows from the branch's earlier steps. Branches
    use disjoint weights, so given the fork's set they are independent, and a join node outside
    the fixed set is missed with probability ``prod_b (1 - q_b)^(c_b)``. Sums over the joint counts
    of all multi-layer branches but one; the last enters through :func:`transition`.
    """
    fixed = False
    direct, nested = [], []  # last-layer q of branches whose last layer reads the fork; others
    for path in paths:
        layers = [k for k, (_, _, st) in enumerate(path) if st is not None]
        if not layers:
            fixed = True
        elif len(layers) == 1:
            direct.append(path[layers[0]][2].q)
        else:
            nested.append((path[:layers[-1]], path[layers[-1]][2].q))

    def log1m(qq):
        return math.log1p(-qq) if qq < 1 else -math.inf

    out = np.zeros(n_join + 1)
    for r in np.flatnonzero(pmf_fork > 1e-17 * pmf_fork.max()):
        base = r if fixed else 0
        log_miss0 = sum(r * log1m(qd) if r else 0.0 for qd in direct)
        counts = [_along(inner, r, sizes) for inner, _ in nested]  # law of c given r
        if not nested:
            counts, qs = [_point(0, 0)], [0.0]
        else:
            qs = [q_last for _, q_last in nested]
        supports = [np.flatnonzero(c > TINY) for c in counts[:-1]]
        for combo in itertools.product(*supports):
            w = math.prod(c[k] for c, k in zip(counts, combo, strict=False))
            extra = sum(k * log1m(qq) if k else 0.0 for qq, k in zip(qs, combo, strict=False))
            out[base:] += (pmf_fork[r] * w) * transition(counts[-1], n_join - base, qs[-1],
                                                          log_miss0 + extra)
    return out


def _along(path, r: int, sizes) -> np.ndarray:
    """pmf of the count at the end of ``path`` (a list of directed edges) given ``r`` at its start."""
    pmf = _point(sizes[path[0][0]], r)
    for _, dst, st in path:
        pmf = _apply(pmf, sizes[dst], st)
    return pmf


def _concat(pmf_fork: np.ndarray, n: int, paths, sizes) -> np.ndarray:
    """Exact pmf of the reached count of a concat whose branches all leave one fork: given the
    fork's count the branches are independent, and the concat's count is the sum of theirs."""
    out = np.zeros(n + 1)
    for r in np.flatnonzero(pmf_fork > TINY):
        total = _point(0, 0)
        for path in paths:
            total = np.convolve(total, _along(path, r, sizes))
        out += pmf_fork[r] * total
    return out


def _exact_join(paths) -> bool:
    """Whether :func:`_join` is exact for these branches: only layer steps that depend on counts
    alone, and every branch with layers ends in a layer that reads all its sources."""
    steps = [st for path in paths for _, _, st in path if st is not None]
    lasts = [next(st for _, _, st in reversed(p) if st is not None) for p in paths
             if any(st is not None for _, _, st in p)]
    return (all(st.mode in ("full", "thin") for st in steps)
            and all(st.mode == "full" and st.keep >= 1 for st in lasts))


def _propagate(graph: TheoryGraph, q: dict, forward: bool,
               keep: dict | None = None) -> tuple[list[np.ndarray], bool]:
    """Per group, the pmf of the number of forward-reachable (or co-reachable) nodes, and whether
    every step and join could be treated exactly. ``keep`` maps groups to the probability that
    each of their units survives (unit deletion; default: all survive)."""
    keep = keep or {}
    g = len(graph.sizes)
    ins: list[list] = [[] for _ in range(g)]
    outs: list[list] = [[] for _ in range(g)]
    edges = _directed_edges(graph, q, forward, keep)
    for e in edges:
        ins[e[1]].append(e)
        outs[e[0]].append(e)
    pmf: list[np.ndarray | None] = [None] * g
    start = 0 if forward else g - 1
    pmf[start] = _point(graph.sizes[start], graph.sizes[start])
    exact = all(st is None or st.exact for _, _, st in edges)
    for node in (range(1, g) if forward else range(g - 2, -1, -1)):
        n = graph.sizes[node]
        if not ins[node]:  # nothing feeds it: no node is reached
            pmf[node] = _point(n, 0)
            continue
        if len(ins[node]) == 1:
            src, _, st = ins[node][0]
            pmf[node] = _apply(pmf[src], n, st)
            continue
        found = _branches(node, ins, outs, start)
        summed = forward and node in graph.concat
        if found is not None and (summed or _exact_join(found[1])):
            fork, paths = found
            pmf[node] = _keep((_concat if summed else _join)(pmf[fork], n, paths, graph.sizes), n,
                              keep.get(node, 1.0))
            continue
        # branches from different forks, or steps the join cannot condition on: independent
        # branches (documented approximation)
        exact = False
        parts = [_apply(pmf[s], graph.sizes[s] if summed else n, st) for s, _, st in ins[node]]
        joined = parts[0]
        for extra in parts[1:]:
            joined = np.convolve(joined, extra) if summed else union(joined, extra)
        pmf[node] = _keep(joined, n, keep.get(node, 1.0))
    return pmf, exact


# ----------------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class Prediction:
    """Theory for Bernoulli masks with given per-layer densities (see the module docstring).

    ``exact`` is True for chains, residual networks and MobileNetV2; False when some join fell
    back to the branch-independence approximation or a general grouped conv was approximated
    (module docstring).

    Attributes
    ----------
    arch : str
        The architecture's name.
    names : tuple of str
        The prunable layers.
    params, densities : ndarray
        Weights and densities d_l of each layer.
    expected_effective : ndarray
        Expected effective weights of each layer.
    p_reach, p_coreach : ndarray
        Per group: the probability that a given node is forward-reachable, and co-reachable.
    group_sizes : ndarray
        Nodes (channels or units) of each group.
    p_disconnected, p_connected : float
        ``P(R_L = 0)`` and its complement, summed from the pmf's nonzero part (accurate also when
        P(disconnected) is within 1e-16 of 1).
    exact : bool
        Whether the result is exact.
    layer_groups : tuple of int
        The output group of each layer.
    expected_paths : float
        Expected number of input-output paths on chains (about 1 near collapse); nan for DAGs.
    unit_keep : ndarray or None
        Per group, the unit survival probability under unit deletion.

    See Also
    --------
    predict : Computes it.
    connsim.montecarlo.MonteCarlo : The Monte Carlo estimate it is checked against.

    Examples
    --------
    >>> from connsim import get_arch, quota
    >>> arch = get_arch("lenet-300-100")
    >>> p = predict(arch, quota(arch, "uniform", 0.001))
    >>> round(p.p_disconnected, 3), round(p.expected_effective_params_connected, 2)
    (0.861, 3.93)
    """

    arch: str
    names: tuple[str, ...]
    params: np.ndarray
    densities: np.ndarray
    expected_effective: np.ndarray  # per layer
    p_reach: np.ndarray  # per group (architecture node)
    p_coreach: np.ndarray
    group_sizes: np.ndarray
    p_disconnected: float
    p_connected: float  # summed from the pmf's nonzero part: accurate also when P(disc) ~ 1
    exact: bool
    layer_groups: tuple[int, ...]  # output group of each layer
    expected_paths: float  # n_0 prod b_l q_l on chains (about 1 near collapse); nan for DAGs
    unit_keep: np.ndarray | None = None  # per group: unit survival probability (unit deletion)

    @property
    def direct_density(self) -> float:
        """Global direct density ``sum_l n_l d_l / N``."""
        return float((self.densities * self.params).sum() / self.params.sum())

    @property
    def expected_effective_params(self) -> float:
        """Expected effective weights over all layers."""
        return float(self.expected_effective.sum())

    @property
    def effective_density(self) -> float:
        """Expected effective weights / prunable weights."""
        return self.expected_effective_params / float(self.params.sum())

    @property
    def effective_compression(self) -> float:
        """``1 / effective_density`` (``inf`` when no effective weight is expected)."""
        e = self.effective_density
        return math.inf if e <= 0 else 1.0 / e

    @property
    def expected_effective_params_connected(self) -> float:
        """E[effective weights | connected]: a disconnected mask has no effective weight, so
        this is E[effective] / P(connected); ``nan`` when the network is surely disconnected."""
        if self.p_connected <= 0:
            return math.nan
        return self.expected_effective_params / self.p_connected

    @property
    def effective_compression_connected(self) -> float:
        """Prunable weights / E[effective | connected]: the effective compression of the masks
        that stay connected (``nan`` when none does)."""
        e = self.expected_effective_params_connected
        return math.nan if not e > 0 else float(self.params.sum()) / e

    @property
    def compression(self) -> float:
        """Direct compression ``1 / direct_density``."""
        d = self.direct_density
        return math.inf if d <= 0 else 1.0 / d

    @property
    def expected_active(self) -> np.ndarray:
        """Expected active units of each prunable layer's output group."""
        g = np.array(self.layer_groups)
        both = self.group_sizes[g] * self.p_reach[g] * self.p_coreach[g]
        if self.unit_keep is None:
            return both
        k = self.unit_keep[g]  # a kept unit's survival enters both reach and co-reach: once only
        return np.divide(both, k, out=np.zeros_like(both), where=k > 0)

    def to_dict(self) -> dict:
        """JSON-ready form (infinite compressions as ``None``)."""
        eff_c = self.effective_compression
        return {
            "compression": self.compression,
            "direct_density": self.direct_density,
            "expected_effective_params": self.expected_effective_params,
            "effective_density": self.effective_density,
            "effective_compression": None if math.isinf(eff_c) else eff_c,
            "p_disconnected": self.p_disconnected,
            "expected_effective_params_connected": json_safe(
                self.expected_effective_params_connected),
            "effective_compression_connected": json_safe(
                self.effective_compression_connected),
            "active_units": [float(x) for x in self.expected_active],
            "exact": self.exact,
            "layers": [{"name": n, "params": int(p), "density": float(d),
                        "expected_effective": float(e)}
                       for n, p, d, e in zip(self.names, self.params, self.densities,
                                             self.expected_effective, strict=True)],
        }


def predict(arch: Architecture, densities, *, granularity: str = "weight",
            semantics: str | None = None, exclude=()) -> Prediction:
    """Expected effective weights, P(disconnected) and active units of random Bernoulli pruning.

    Parameters
    ----------
    arch : Architecture
    densities : Quota or sequence of float
        Per-layer densities d_l (a :class:`connsim.quotas.Quota` or one value per layer): the
        probability that each group of layer l is kept.
    granularity : {'weight', 'kernel', 'channel', 'node'}
        What is kept independently with probability d_l: every weight, every kernel of a conv
        (its ``kh*kw`` weights together; a dense weight is its own kernel), or every unit
        (channel: a conv's output channel or a dense unit; node: a dense unit). At kernel
        granularity a conv's group edge is present with probability ``q_l = d_l`` instead of
        ``1 - (1 - d_l)^k_l``. At channel and node granularity pruning deletes units: the weights
        among kept units are all present, and each unit of the layer's site survives with
        probability d_l (unit deletion; module docstring). The direct density is the same.
    semantics : {'weights', 'output'}, optional
        Channel granularity: where a pruned channel is deleted, at the layer itself
        (``weights``, the default) or at its output site, after a residual add for a block's
        second conv (``output``; :func:`connsim.granularity.unit_sites`). Node: always output.
    exclude : sequence of str
        Layer-name patterns that are not pruned; with the layers a granularity never prunes
        (the classifier at channel and node granularity, convs at node) their density must be 1.

    Returns
    -------
    Prediction
        Exact for chains (MLPs, LeNets, VGGs), residual networks and MobileNetV2; joins whose
        branches leave different forks (or hold grouped convs or concat slices) and general grouped
        convs use the documented approximations (``exact`` is then False). Unit deletion is exact
        on chains; in a residual block it is exact where the deleted units sit inside the block
        or after the add (``output`` semantics), and approximate (``exact`` False) when a
        branch's last layer deletes its own units (``weights`` semantics on a block's second conv).

    See Also
    --------
    predict_rule : The theory for a quota rule by name.
    connsim.montecarlo.monte_carlo : The same by sampling.
    connsim.design.design_quota : Densities optimised with this theory.

    Notes
    -----
    Cost: one (support of R_{l-1}) x (n_l + 1) binomial table per layer and direction; source
    counts whose probability is below 1e-300 are skipped. Stable for any width in the zoo and any
    density down to 1e-6 (log-space binomials, ``log1p``/``expm1`` for the hit probabilities).

    Examples
    --------
    >>> from connsim import get_arch, quota
    >>> arch = get_arch("lenet-300-100")
    >>> p = predict(arch, quota(arch, "uniform", 0.01))
    >>> round(p.effective_compression), f"{p.p_disconnected:.2g}"
    (1053, '7.2e-05')

    Unit deletion: keeping half of the hidden units of an MLP keeps about a quarter of the
    hidden-to-hidden weights effective.

    >>> p = predict(get_arch("mlp:10-40-40-3"), [0.5, 0.5, 1.0], granularity="node")
    >>> round(float(p.expected_effective[1]) / (40 * 40), 3)
    0.25
    """
    if isinstance(densities, Quota):
        densities = densities.densities
    names = arch.layer_names
    d = check_densities(densities, names, fix="pass a Quota (connsim.quota) or the densities in "
                                              "layer order")
    check_granularity(granularity)
    graph = TheoryGraph.of(arch)
    by_name = dict(zip(names, d, strict=True))
    pruned = prunable_layers(arch, granularity, exclude)
    fixed = [n for n in names if n not in pruned and by_name[n] != 1]
    if fixed:
        raise InvalidArgument("densities", f"1 for the layers not pruned at {granularity} "
                                           "granularity", got=f"{fixed[0]}: {by_name[fixed[0]]}",
                              fix="the classifier (channel, node), conv layers (node) and "
                                  "excluded layers keep all their groups")
    keep: dict = {}
    if granularity in UNIT_GRANULARITIES:
        semantics = check_semantics(granularity, semantics)
        sites = unit_sites(arch, granularity, exclude) if semantics == "output" else \
            {n: n for n in pruned}
        for layer, site in sites.items():
            g = graph.names.index(site)
            keep[g] = keep.get(g, 1.0) * float(by_name[layer])
        presence = dict.fromkeys(names, 1.0)  # weights among kept units are all present
        q = {lay.name: 1.0 for lay in graph.layers}
    else:
        presence = by_name

        def edge(lay):  # probability that a group edge (a channel pair) keeps a weight
            if granularity == "kernel" and arch[lay.name].op == "conv":
                return float(by_name[lay.name])
            return float(-np.expm1(lay.k * np.log1p(-by_name[lay.name]))) \
                if by_name[lay.name] < 1 else 1.0

        q = {lay.name: edge(lay) for lay in graph.layers}
    fwd, fwd_exact = _propagate(graph, q, True, keep)
    bwd, bwd_exact = _propagate(graph, q, False, keep)
    sizes = np.array(graph.sizes, dtype=np.float64)
    mean = np.array([(p * np.arange(p.size)).sum() for p in fwd]) / sizes
    cmean = np.array([(p * np.arange(p.size)).sum() for p in bwd]) / sizes
    params = np.array([arch.n_params(n) for n in names], dtype=np.int64)
    eff = {lay.name: lay.params * presence[lay.name] * mean[lay.src] * cmean[lay.dst]
           for lay in graph.layers}
    exact = fwd_exact and bwd_exact
    paths = (float(sizes[0] * np.prod([float(lay.b) for lay in graph.layers])
                   * np.prod(list(q.values()))) if graph.is_chain and not keep else math.nan)
    survive = np.ones(len(sizes))
    for g, k in keep.items():
        survive[g] = k
    return Prediction(
        arch=arch.name, names=names, params=params, densities=d,
        expected_effective=np.array([eff[n] for n in names]),
        p_reach=np.clip(mean, 0, 1), p_coreach=np.clip(cmean, 0, 1),
        group_sizes=sizes.astype(np.int64),
        p_disconnected=float(min(1.0, max(0.0, fwd[-1][0]))),
        p_connected=float(min(1.0, max(0.0, fwd[-1][1:].sum()))), exact=exact,
        layer_groups=tuple(graph.names.index(n) for n in names), expected_paths=paths,
        unit_keep=survive,
    )


def predict_rule(arch: Architecture, rule, density: float, *, granularity: str = "weight",
                 **rule_kw) -> Prediction:
    """:func:`predict` (at weight or kernel ``granularity``) for the densities of a quota rule.

    Parameters
    ----------
    arch : Architecture
        The network.
    rule : str or callable
        A quota rule, as :func:`connsim.quotas.quota` takes it.
    density : float
        The global density.
    granularity : {'weight', 'kernel'}
        What is kept independently.
    **rule_kw
        Passed on to :func:`connsim.quotas.quota`.

    Returns
    -------
    Prediction
        The theory at the rule's densities.

    Raises
    ------
    InfeasibleQuota
        If the rule has no quota at ``density``.

    See Also
    --------
    predict : The theory for given densities.
    half_disconnection_compression : Where a rule disconnects half of the masks.

    Examples
    --------
    >>> from connsim import get_arch
    >>> p = predict_rule(get_arch("lenet-300-100"), "igq", 0.001)
    >>> round(p.effective_compression), p.exact
    (5712, True)
    """
    check_choice(granularity, ("weight", "kernel"), "granularity",
                 "quota rules split weights; for unit granularities call predict with the kept "
                 "unit fractions")
    return predict(arch, quota(arch, rule, density, **rule_kw), granularity=granularity)


def half_disconnection_compression(arch: Architecture, rule="uniform", *, lo: float = 1.0,
                                   hi: float = 1e8, tol: float = 1e-3, **rule_kw) -> float:
    """Direct compression at which P(disconnected) = 1/2 for a quota rule.

    The search (bisection in log compression; P(disconnected) rises with compression) runs over
    the part of ``[lo, hi]`` where the rule is feasible: ``erk-redistribute`` only from about
    compression 50-80, ``uniform+`` only up to its limit.

    Parameters
    ----------
    arch : Architecture
        The network.
    rule : str or callable
        A quota rule.
    lo, hi : float
        The range of direct compressions searched.
    tol : float
        Relative precision of the result.
    **rule_kw
        Passed on to :func:`connsim.quotas.quota`.

    Returns
    -------
    float
        The compression, to relative precision ``tol``; ``inf`` if P(disconnected) stays below
        1/2 up to ``hi`` and the rule is feasible there.

    Raises
    ------
    InfeasibleQuota
        If the rule is feasible nowhere in ``[lo, hi]``.
    ValueError
        If P(disconnected) = 1/2 is never reached inside the rule's feasible range (the
        message gives the range and P(disconnected) at its ends).

    See Also
    --------
    predict_rule : The theory of a rule at one density.
    connsim.quotas.feasible_densities : Where a rule is valid.

    Examples
    --------
    >>> from connsim import get_arch
    >>> arch = get_arch("lenet-300-100")
    >>> round(half_disconnection_compression(arch, "uniform"))
    520
    """
    from .quotas import InfeasibleQuota, feasible_densities

    lo = check_compression(lo, "lo")
    if check_compression(hi, "hi") <= lo:
        raise InvalidArgument("hi", f"a compression above lo = {lo:g}", hi,
                              "the search runs over [lo, hi]")

    def p(c):
        return predict_rule(arch, rule, 1.0 / c, **rule_kw).p_disconnected

    name = getattr(rule, "__name__", rule)
    span = feasible_densities(arch, rule, **rule_kw)
    inward = 1.0 + 1e-9  # the range's ends are feasible; step inside so rounding keeps them so
    a, b = (lo, hi) if span is None else (
        max(lo, inward / span[1]), min(hi, math.inf if span[0] == 0 else 1.0 / (inward * span[0])))
    if span is None or a > b:
        raise InfeasibleQuota(f"rule {name!r} is infeasible at every compression in "
                              f"[{lo:g}, {hi:g}] on {arch.name}")
    pa, pb = p(a), p(b)
    if pb < 0.5:
        if b >= hi:
            return math.inf
        raise ValueError(
            f"P(disconnected) never reaches 1/2 where rule {name!r} is feasible on {arch.name}: "
            f"compression {a:.6g}..{b:.6g} (P = {pa:.3g}..{pb:.3g}); beyond {b:.6g} the rule "
            "has no valid quota")
    if pa >= 0.5:
        if a <= lo:
            return lo
        raise ValueError(
            f"P(disconnected) is already {pa:.3g} >= 1/2 at compression {a:.6g}, the smallest "
            f"at which rule {name!r} is feasible on {arch.name}")
    x, y = math.log(a), math.log(b)
    while y - x > tol:
        m = 0.5 * (x + y)
        x, y = (m, y) if p(math.exp(m)) < 0.5 else (x, m)
    return math.exp(0.5 * (x + y))
