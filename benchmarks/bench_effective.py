"""Effective-mask speed against named baselines, all measured in the same run.

    python benchmarks/bench_effective.py [--quick] [--repeat N]

Workloads: the dense chain 784-4096-4096-4096-4096-10 at density 0.2 and 0.01; VGG-19 (CIFAR-100)
at compression 100 and 1000 at both levels. For each, the time of connsim's effective-mask pass on a
prebuilt CSR graph is printed next to:

  stream   one streaming read of every CSR index array (a parallel Numba sum): the memory floor
  dense    dense boolean-as-float matrix products, the method of the reference paper's code
  scipy    SciPy sparse matrix-vector products
  csgraph  scipy.sparse.csgraph breadth-first search on the whole graph
  networkx networkx descendants/ancestors (small graphs only)
  torch    SynFlow-style autograd on the linearised |W|*M network (only when torch is installed)

Ratios are baseline time / connsim time (> 1 means connsim is faster), except 'x stream', which is
connsim time / streaming-read time. Every method is called once before timing (compilation).
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

import connsim
from connsim import effective_edges, reachability
from connsim.graph import _build_graph, chain, dense_to_csr


def best_time(fn, repeat):
    fn()  # warm-up: compile, fault in pages
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@numba.njit(parallel=True, cache=True)
def _stream_sum(a):
    s = 0
    for i in numba.prange(a.shape[0]):
        s += a[i]
    return s


def stream_read(graph):
    return sum(_stream_sum(b.adj.indices) for b in graph.blocks)


def connsim_pass(graph):
    fwd, bwd = reachability(graph)
    return effective_edges(graph, fwd, bwd)


def dense_method(mats):
    """Float matrix products over dense masks (rows = source), as in the paper's code."""
    fwd = [np.ones(mats[0].shape[0], np.float32)]
    for m in mats:
        fwd.append(((fwd[-1] @ m) > 0).astype(np.float32))
    bwd = [np.ones(mats[-1].shape[1], np.float32)]
    for m in reversed(mats):
        bwd.append(((m @ bwd[-1]) > 0).astype(np.float32))
    bwd = bwd[::-1]
    return [m * np.outer(fwd[k], bwd[k + 1]) for k, m in enumerate(mats)]


def scipy_method(graph):
    fwd = [np.ones(graph.sizes[0])]
    for b in graph.blocks:
        fwd.append((b.adj.T @ fwd[-1] > 0).astype(float))
    bwd = [np.ones(graph.sizes[-1])]
    for b in reversed(graph.blocks):
        bwd.append((b.adj @ bwd[-1] > 0).astype(float))
    bwd = bwd[::-1]
    out = []
    for k, b in enumerate(graph.blocks):
        rows = np.repeat(np.arange(b.adj.shape[0]), np.diff(b.adj.indptr))
        out.append((fwd[k][rows] > 0) & (bwd[k + 1][b.adj.indices] > 0))
    return out


def big_matrix(graph):
    """One square CSR over all nodes plus a super source (first) and super sink (last)."""
    n = [1, *graph.sizes, 1]
    off = np.cumsum([0, *n])
    total = off[-1]
    rows, cols = [np.zeros(graph.sizes[0], np.int64)], [off[1] + np.arange(graph.sizes[0])]
    for b in graph.blocks:
        coo = b.adj.tocoo()
        rows.append(off[b.src + 1] + coo.row)
        cols.append(off[b.dst + 1] + coo.col)
    rows.append(off[len(graph.sizes)] + np.arange(graph.sizes[-1]))
    cols.append(np.full(graph.sizes[-1], total - 1))
    r, c = np.concatenate(rows), np.concatenate(cols)
    a = sp.csr_array((np.ones(r.size, bool), (r, c)), shape=(total, total))
    return a, sp.csr_array(a.T), off


def csgraph_method(big, big_t, off, graph):
    f = np.zeros(big.shape[0], bool)
    f[csgraph.breadth_first_order(big, 0, return_predecessors=False)] = True
    b = np.zeros(big.shape[0], bool)
    b[csgraph.breadth_first_order(big_t, big.shape[0] - 1, return_predecessors=False)] = True
    out = []
    for blk in graph.blocks:
        rows = np.repeat(np.arange(blk.adj.shape[0]), np.diff(blk.adj.indptr))
        out.append(f[off[blk.src + 1] + rows] & b[off[blk.dst + 1] + blk.adj.indices])
    return out


def networkx_method(graph):
    import networkx as nx

    g = graph.to_networkx(max_nodes=10**7)
    g.add_edges_from(("S", (graph.names[0], i)) for i in range(graph.sizes[0]))
    g.add_edges_from(((graph.names[-1], j), "T") for j in range(graph.sizes[-1]))
    return nx.descendants(g, "S"), nx.ancestors(g, "T")


def torch_synflow_mlp(torch, weights):
    """weights: list of (out, in) float tensors |W|*M; effective = mask & grad != 0."""
    ws = [w.clone().requires_grad_(True) for w in weights]
    x = torch.ones(ws[0].shape[1], dtype=torch.float64)
    for w in ws:
        x = w @ x
    x.sum().backward()
    return [(w.grad != 0) & (w.detach() != 0) for w in ws]


def torch_synflow_arch(torch, arch, weights):
    """Linearised network on the arch DAG: conv/dense with |W|*M, avg pooling, ones input."""
    F = torch.nn.functional
    ws = {k: w.clone().requires_grad_(True) for k, w in weights.items()}
    act = {arch.nodes[0].name: torch.ones((1, *arch.input_shape), dtype=torch.float64)}
    for node in arch.nodes[1:]:
        x = act[node.inputs[0]]
        if node.op == "conv":
            y = F.conv2d(x, ws[node.name], stride=node.stride, padding=node.padding)
        elif node.op == "dense":
            y = x @ ws[node.name].T
        elif node.op == "pool":
            y = F.avg_pool2d(x, node.kernel, node.stride)
        elif node.op == "flatten":
            y = x.flatten(1)
        else:
            y = sum(act[s] for s in node.inputs)
        act[node.name] = y
    act[arch.output.name].sum().backward()
    return {k: (w.grad != 0) & (w.detach() != 0) for k, w in ws.items()}


def row(label, t_ref, results):
    parts = [f"{label:<34} connsim {t_ref * 1e3:9.2f} ms"]
    for name, t in results:
        if name == "stream":
            parts.append(f"stream {t * 1e3:8.2f} ms (= {t_ref / t:5.2f} x stream)")
        else:
            parts.append(f"{name} {t * 1e3:9.1f} ms ({t / t_ref:7.1f}x)")
    print("  ".join(parts), flush=True)


def bench_chain(widths, density, repeat, rng, torch):
    mats = [rng.random((a, b), dtype=np.float32) < density
            for a, b in zip(widths[:-1], widths[1:], strict=True)]
    graph = chain([dense_to_csr(m) for m in mats])
    ref = connsim_pass(graph)
    t_ref = best_time(lambda: connsim_pass(graph), repeat)
    res = [("stream", best_time(lambda: stream_read(graph), repeat))]
    fmats = [m.astype(np.float32) for m in mats]
    res.append(("dense", best_time(lambda: dense_method(fmats), max(1, repeat // 3))))
    res.append(("scipy", best_time(lambda: scipy_method(graph), repeat)))
    big, big_t, off = big_matrix(graph)
    got = csgraph_method(big, big_t, off, graph)
    assert all((a == b).all() for a, b in zip(got, ref, strict=True)), "csgraph disagrees"
    res.append(("csgraph", best_time(lambda: csgraph_method(big, big_t, off, graph), repeat)))
    if graph.n_edges < 200_000:
        res.append(("networkx", best_time(lambda: networkx_method(graph), 1)))
    if torch is not None:
        tw = [torch.from_numpy(m.T.astype(np.float64)) for m in mats]
        res.append(("torch", best_time(lambda: torch_synflow_mlp(torch, tw), max(1, repeat // 3))))
    row(f"chain {'-'.join(map(str, widths))} d={density}", t_ref, res)
    print(f"{'':34} edges {graph.n_edges:,}; index bytes "
          f"{sum(b.adj.indices.nbytes for b in graph.blocks) / 2**20:.1f} MiB")


def bench_arch(arch, compression, repeat, rng, torch):
    masks = {n.name: rng.random(arch.weight_shape(n), dtype=np.float32) < 1 / compression
             for n in arch.layers}
    canonical = connsim.check_masks(arch, masks)
    graph = _build_graph(arch, canonical)
    t_graph = best_time(lambda: connsim_pass(graph), repeat)
    t_build = best_time(lambda: _build_graph(arch, canonical), max(1, repeat // 3))
    t_ch = best_time(lambda: connsim.connectivity(arch, masks, level="channel"), repeat)
    t_pos = best_time(lambda: connsim.connectivity(arch, masks, level="position"), repeat)
    res = [("stream", best_time(lambda: stream_read(graph), repeat))]
    mats = [b.adj.toarray().astype(np.float32) for b in graph.blocks]
    res.append(("dense", best_time(lambda: dense_method(mats), max(1, repeat // 3))))
    res.append(("scipy", best_time(lambda: scipy_method(graph), repeat)))
    row(f"{arch.name} c={compression} graph pass", t_graph, res)
    print(f"{'':34} channel level, masks->effective masks {t_ch * 1e3:.1f} ms "
          f"(graph build {t_build * 1e3:.1f} ms); position level {t_pos * 1e3:.1f} ms")
    if torch is not None:
        weights = {k: torch.from_numpy(v.astype(np.float64)) for k, v in canonical.items()}
        t_torch = best_time(lambda: torch_synflow_arch(torch, arch, weights), max(1, repeat // 3))
        pos = connsim.effective_masks(arch, masks, level="position")
        ref = torch_synflow_arch(torch, arch, weights)
        assert all((ref[k].numpy() == pos[k]).all() for k in pos), "torch SynFlow disagrees"
        print(f"{'':34} torch SynFlow autograd (float64, position-level pattern) "
              f"{t_torch * 1e3:.1f} ms = {t_torch / t_pos:.1f}x connsim position level; "
              "patterns identical")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(numba.get_num_threads())
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    print(f"numba threads {numba.get_num_threads()}, torch "
          f"{'not installed' if torch is None else torch.__version__}")
    widths = [784, 300, 100, 10] if args.quick else [784, 4096, 4096, 4096, 4096, 10]
    for d in (0.2, 0.01):
        bench_chain(widths, d, args.repeat, rng, torch)
    if not args.quick:
        bench_chain([784, 300, 100, 10], 0.01, args.repeat, rng, torch)
    arch = connsim.get_arch("lenet-5" if args.quick else "vgg-19")
    for c in (100, 1000):
        bench_arch(arch, c, args.repeat, rng, torch)


if __name__ == "__main__":
    main()
