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
    padded, full = {}, {}
    for node in arch.nodes[1:]:
        x = act[node.inputs[0]]
        if node.op == "dense":
            y = weights[node.name] @ x
        elif node.op == "conv":
            ph, pw = node.padding
            xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
            padded[node.name] = xp
            full[node.name] = w = _ungrouped(weights[node.name], node.groups)
            y = np.zeros(node.shape)
            for ky, kx, (sy, sx) in _conv_slices(node):
                y += np.einsum("oi,ihw->ohw", w[:, :, ky, kx], xp[:, sy, sx])
        elif node.op == "pool":
            (kh, kw), (sh, sw) = node.kernel, node.stride
            y = np.zeros(node.shape)
            for yy in range(node.shape[1]):
                for xx in range(node.shape[2]):
                    y[:, yy, xx] = x[:, yy * sh:yy * sh + kh, xx * sw:xx * sw + kw].mean(axis=(1, 2))
        elif node.op == "flatten":
            y = x.reshape(-1)
        elif node.op == "concat":
            y = np.concatenate([act[s] for s in node.inputs])
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
            gw = np.zeros(full[node.name].shape)
            for ky, kx, (sy, sx) in _conv_slices(node):
                gw[:, :, ky, kx] = np.einsum("ohw,ihw->oi", g, xp[:, sy, sx])
                gp[:, sy, sx] += np.einsum("oi,ohw->ihw", full[node.name][:, :, ky, kx], g)
            ph, pw = node.padding
            grad[src] += gp[:, ph:ph + x.shape[1], pw:pw + x.shape[2]]
            wgrad[node.name] = _grouped(gw, node.groups)
        elif node.op == "pool":
            (kh, kw), (sh, sw) = node.kernel, node.stride
            for yy in range(node.shape[1]):
                for xx in range(node.shape[2]):
                    grad[src][:, yy * sh:yy * sh + kh, xx * sw:xx * sw + kw] += (
                        g[:, yy, xx][:, None, None] / (kh * kw))
        elif node.op == "flatten":
            grad[src] += g.reshape(x.shape)
        elif node.op == "concat":
            start = 0
            for s in node.inputs:
                grad[s] += g[start:start + len(act[s])]
                start += len(act[s])
        else:
            for s in node.inputs:
                grad[s] += g
    return wgrad


def _ungrouped(w, groups):
    """A grouped conv weight ``(out, in/groups, kh, kw)`` as the equivalent dense ``(out, in, ...)``
    weight, zero outside each output's group."""
    out, per = w.shape[:2]
    full = np.zeros((out, per * groups, *w.shape[2:]))
    for o in range(out):
        g = o // (out // groups)
        full[o, g * per:(g + 1) * per] = w[o]
    return full


def _grouped(full, groups):
    """The inverse of :func:`_ungrouped` (drops the entries outside each output's group)."""
    out, n_in = full.shape[:2]
    per = n_in // groups
    return np.stack([full[o, (o // (out // groups)) * per:(o // (out // groups) + 1) * per]
                     for o in range(out)])


def synflow_effective(arch, masks, rng=None):
    """Effective masks as the nonzero pattern of SynFlow gradients on kept weights."""
    wgrad = linearised_gradients(arch, masks, rng)
    return {k: masks[k] & (wgrad[k] != 0) for k in masks}


def _offsets(arch, node):
    """Channel offset of each input of a concat (0 for every other operation)."""
    out, start = [], 0
    for s in node.inputs:
        out.append(start)
        start += arch[s].channels if node.op == "concat" else 0
    return out


def nx_position_effective(arch, masks):
    """Position-level effective masks from networkx path queries over explicit positions: every
    kept weight application is an edge ``(node, c, y, x) -> (node', c', y', x')``."""
    g = nx.DiGraph()
    uses = {}  # edge -> kept weights (layer, flat index) that make it
    for node in arch.nodes[1:]:
        for s, off in zip(node.inputs, _offsets(arch, node), strict=True):
            src = arch[s]
            if node.op == "dense":
                for o, i in zip(*np.nonzero(masks[node.name]), strict=True):
                    e = ((s, int(i)), (node.name, int(o)))
                    uses.setdefault(e, []).append((node.name, (int(o), int(i))))
            elif node.op == "conv":
                _, h, w = src.shape
                (sh, sw), (ph, pw) = node.stride, node.padding
                per_out = node.channels // node.groups
                for o, il, ky, kx in zip(*np.nonzero(masks[node.name]), strict=True):
                    ci = (o // per_out) * masks[node.name].shape[1] + il
                    for y in range(node.shape[1]):
                        for x in range(node.shape[2]):
                            yy, xx = y * sh + ky - ph, x * sw + kx - pw
                            if 0 <= yy < h and 0 <= xx < w:
                                e = ((s, int(ci), yy, xx), (node.name, int(o), y, x))
                                uses.setdefault(e, []).append(
                                    (node.name, (int(o), int(il), int(ky), int(kx))))
            elif node.op == "pool":
                (kh, kw), (sh, sw) = node.kernel, node.stride
                for c in range(node.shape[0]):
                    for y in range(node.shape[1]):
                        for x in range(node.shape[2]):
                            g.add_edges_from(((s, c, y * sh + i, x * sw + j), (node.name, c, y, x))
                                             for i in range(kh) for j in range(kw))
            elif node.op == "flatten":
                g.add_edges_from(((s, *np.unravel_index(u, src.shape)), (node.name, u))
                                 for u in range(src.size))
            else:  # add, concat: position p of input -> position p (+ channel offset)
                for p in np.ndindex(*src.shape):
                    g.add_edge((s, *p), (node.name, p[0] + off, *p[1:]))
    g.add_edges_from(uses)
    source, sink = ("__source__",), ("__sink__",)
    g.add_edges_from((source, (arch.nodes[0].name, *p)) for p in np.ndindex(*arch.input_shape))
    g.add_edges_from(((arch.output.name, *p), sink) for p in np.ndindex(*arch.output.shape))
    fwd, bwd = nx.descendants(g, source), nx.ancestors(g, sink)
    eff = {n.name: np.zeros(arch.weight_shape(n), dtype=bool) for n in arch.layers}
    for (u, v), ws in uses.items():
        if u in fwd and v in bwd:
            for layer, idx in ws:
                eff[layer][idx] = True
    return eff


def nx_channel_effective(arch, masks):
    """Channel-level effective masks from networkx over an independent lowering: a node per channel,
    and per unit after a flatten (each unit read from its channel); a conv joins input channel
    ``ci`` to output ``o`` when any entry of kernel ``(o, ci)`` is kept."""
    g = nx.DiGraph()
    edge_of = {}  # kept weight (layer, index) -> channel edge
    for node in arch.nodes[1:]:
        for s, off in zip(node.inputs, _offsets(arch, node), strict=True):
            src = arch[s]
            if node.op == "dense":
                for o, i in zip(*np.nonzero(masks[node.name]), strict=True):
                    edge_of[(node.name, (int(o), int(i)))] = ((s, int(i)), (node.name, int(o)))
            elif node.op == "conv":
                per_out = node.channels // node.groups
                for o, il, ky, kx in zip(*np.nonzero(masks[node.name]), strict=True):
                    ci = (o // per_out) * masks[node.name].shape[1] + il
                    edge_of[(node.name, (int(o), int(il), int(ky), int(kx)))] = (
                        (s, int(ci)), (node.name, int(o)))
            elif node.op == "flatten":
                per = src.size // src.channels if len(src.shape) == 3 else 1
                g.add_edges_from(((s, u // per), (node.name, u)) for u in range(src.size))
            else:  # pool, add, concat
                g.add_edges_from(((s, c), (node.name, c + off)) for c in range(src.channels))
    g.add_edges_from(edge_of.values())
    source, sink = ("__source__",), ("__sink__",)
    g.add_edges_from((source, (arch.nodes[0].name, c)) for c in range(arch.nodes[0].channels))
    g.add_edges_from(((arch.output.name, c), sink) for c in range(arch.output.channels))
    fwd, bwd = nx.descendants(g, source), nx.ancestors(g, sink)
    eff = {n.name: np.zeros(arch.weight_shape(n), dtype=bool) for n in arch.layers}
    for (layer, idx), (u, v) in edge_of.items():
        eff[layer][idx] = u in fwd and v in bwd
    return eff



def numeric_grad(f, x, eps=1e-6):
    """d f() / d x by central differences, entry by entry (``x`` is changed in place, restored)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        g[i] = (up - down) / (2 * eps)
    return g
