"""Slow, obviously-correct references for the fast paths. Each shares no code with connsim's
kernels: networkx for reachability, dense boolean matrix products, and float64 gradients of the
linearised |W|*M network (SynFlow's reference method) for the position level."""

import networkx as nx
import numpy as np


def nx_effective_edges(graph):
    """Per block, a boolean array aligned with ``adj.data``, via networkx path queries."""
    g = graph.to_networkx()
    src, dst = ("__source__",), ("__sink__",)
    g.add_edges_from((src, (graph.names[0], i)) for i in range(graph.sizes[0]))
    g.add_edges_from(((graph.names[-1], j), dst) for j in range(graph.sizes[-1]))
    fwd = nx.descendants(g, src)
    bwd = nx.ancestors(g, dst)
    out = []
    for b in graph.blocks:
        coo = b.adj.tocoo()  # same order as data for canonical CSR
        s, d = graph.names[b.src], graph.names[b.dst]
        out.append(np.array([(s, int(i)) in fwd and (d, int(j)) in bwd
                             for i, j in zip(coo.row, coo.col, strict=True)], dtype=bool))
    return out, fwd, bwd


def dense_reachability(graph):
    """Forward/backward reachability by dense boolean matrix-vector products."""
    n = len(graph.sizes)
    fwd = [np.zeros(s, bool) for s in graph.sizes]
    bwd = [np.zeros(s, bool) for s in graph.sizes]
    fwd[0][:] = True
    bwd[-1][:] = True
    for k in range(1, n):
        for b in graph.blocks:
            if b.dst == k:
                fwd[k] |= (fwd[b.src].astype(np.int64) @ b.adj.toarray().astype(np.int64)) > 0
    for k in range(n - 2, -1, -1):
        for b in graph.blocks:
            if b.src == k:
                bwd[k] |= (b.adj.toarray().astype(np.int64) @ bwd[b.dst].astype(np.int64)) > 0
    return fwd, bwd


def _conv_slices(node):
    (kh, kw), (sh, sw) = node.kernel, node.stride
    _, ho, wo = node.shape
    for ky in range(kh):
        for kx in range(kw):
            yield ky, kx, (slice(ky, ky + sh * (ho - 1) + 1, sh), slice(kx, kx + sw * (wo - 1) + 1, sw))


def linearised_gradients(arch, masks, rng=None, weights=None):
    """dR/dW for R = sum of outputs of the network with weights |W|*M (W random positive unless
    given), no nonlinearity, average pooling for every pool, on an all-ones input; float64."""
    rng = np.random.default_rng(rng)
    if weights is None:
        weights = {n.name: rng.uniform(0.5, 1.5, arch.weight_shape(n)) * masks[n.name]
                   for n in arch.layers}
    act = {arch.nodes[0].name: np.ones(arch.input_shape)}
    padded = {}
    for node in arch.nodes[1:]:
        x = act[node.inputs[0]]
        if node.op == "dense":
            y = weights[node.name] @ x
        elif node.op == "conv":
            ph, pw = node.padding
            xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
            padded[node.name] = xp
            y = np.zeros(node.shape)
            for ky, kx, (sy, sx) in _conv_slices(node):
                y += np.einsum("oi,ihw->ohw", weights[node.name][:, :, ky, kx], xp[:, sy, sx])
        elif node.op == "pool":
            (kh, kw), (sh, sw) = node.kernel, node.stride
            y = np.zeros(node.shape)
            for yy in range(node.shape[1]):
                for xx in range(node.shape[2]):
                    y[:, yy, xx] = x[:, yy * sh:yy * sh + kh, xx * sw:xx * sw + kw].mean(axis=(1, 2))
        elif node.op == "flatten":
            y = x.reshape(-1)
        else:
            y = sum(act[s] for s in node.inputs)
        act[node.name] = y

    grad = {n.name: np.zeros(n.shape) for n in arch.nodes}
    grad[arch.output.name][:] = 1.0
    wgrad = {}
    for node in reversed(arch.nodes[1:]):
        g = grad[node.name]
        src = node.inputs[0]
        x = act[src]
        if node.op == "dense":
            wgrad[node.name] = np.outer(g, x)
            grad[src] += weights[node.name].T @ g
        elif node.op == "conv":
            xp = padded[node.name]
            gp = np.zeros_like(xp)
            gw = np.zeros(arch.weight_shape(node))
            for ky, kx, (sy, sx) in _conv_slices(node):
                gw[:, :, ky, kx] = np.einsum("ohw,ihw->oi", g, xp[:, sy, sx])
                gp[:, sy, sx] += np.einsum("oi,ohw->ihw", weights[node.name][:, :, ky, kx], g)
            ph, pw = node.padding
            grad[src] += gp[:, ph:ph + x.shape[1], pw:pw + x.shape[2]]
            wgrad[node.name] = gw
        elif node.op == "pool":
            (kh, kw), (sh, sw) = node.kernel, node.stride
            for yy in range(node.shape[1]):
                for xx in range(node.shape[2]):
                    grad[src][:, yy * sh:yy * sh + kh, xx * sw:xx * sw + kw] += (
                        g[:, yy, xx][:, None, None] / (kh * kw))
        elif node.op == "flatten":
            grad[src] += g.reshape(x.shape)
        else:
            for s in node.inputs:
                grad[s] += g
    return wgrad


def synflow_effective(arch, masks, rng=None):
    """Effective masks as the nonzero pattern of SynFlow gradients on kept weights."""
    wgrad = linearised_gradients(arch, masks, rng)
    return {k: masks[k] & (wgrad[k] != 0) for k in masks}
