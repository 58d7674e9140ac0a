"""Hypothesis strategies and random inputs shared by the tests."""

import numpy as np
from hypothesis import strategies as st

from connsim import ArchBuilder
from connsim.graph import Block, LayeredGraph


def random_masks(arch, density, rng):
    rng = np.random.default_rng(rng)
    return {n.name: rng.random(arch.weight_shape(n)) < density for n in arch.layers}


@st.composite
def layered_graphs(draw, max_groups=5, max_size=6):
    """Random DAGs of groups with consecutive and skip blocks."""
    n = draw(st.integers(2, max_groups))
    sizes = [draw(st.integers(1, max_size)) for _ in range(n)]
    seed = draw(st.integers(0, 2**32 - 1))
    p = draw(st.floats(0.05, 0.9))
    rng = np.random.default_rng(seed)
    blocks = []
    for dst in range(1, n):
        srcs = {dst - 1} | {s for s in range(dst - 1) if rng.random() < 0.3}
        for src in sorted(srcs):
            blocks.append(Block(src, dst, rng.random((sizes[src], sizes[dst])) < p))
    return LayeredGraph(tuple(f"g{k}" for k in range(n)), tuple(sizes), tuple(blocks))


@st.composite
def conv_archs(draw, residual=None, padded=None):
    """Tiny conv nets: conv (stride, padding), optional pool, optional residual, flatten, dense."""
    c = draw(st.integers(1, 3))
    h = draw(st.integers(3, 7))
    b = ArchBuilder("tiny", (c, h, h))
    k = draw(st.integers(1, 3))
    if padded is None:
        pad = draw(st.integers(0, 2))
    else:
        pad = draw(st.integers(1, 2)) if padded else 0
    stride = draw(st.integers(1, 2))
    b.conv(draw(st.integers(1, 4)), k, stride=stride, padding=pad, name="c1")
    if draw(st.booleans()) and min(b.last.shape[1:]) >= 2:
        b.pool(draw(st.sampled_from(["avg", "max"])), 2, name="p1")
    use_res = draw(st.booleans()) if residual is None else residual
    if use_res:
        x = b.last.name
        k2 = 1 if padded is False else draw(st.sampled_from([1, 3]))
        p2 = k2 // 2
        b.conv(b.last.channels, k2, padding=p2, name="c2")
        b.add([x, "c2"], name="add")
    b.flatten(name="flat")
    b.dense(draw(st.integers(1, 4)), name="fc")
    return b.build()


@st.composite
def modern_archs(draw):
    """Tiny conv nets with the operations of modern networks: a stem, then a grouped or depthwise
    conv (channel multiplier 1 or 2), optionally an inverted-residual add or a concat of two
    branches, flatten, dense."""
    c = draw(st.sampled_from([2, 4]))
    h = draw(st.integers(2, 5))
    b = ArchBuilder("modern", (c, h, h))
    join = draw(st.sampled_from(["none", "add", "concat"]))
    k = draw(st.sampled_from([1, 3])) if h >= 3 else 1
    pad = k // 2 if join == "add" else draw(st.integers(0, k // 2))
    stem = b.conv(c, 1, name="stem")
    groups = draw(st.sampled_from([1, 2, c]))
    out = c * draw(st.sampled_from([1, 2]))
    b.conv(out, k, padding=pad, groups=groups, name="g")
    if join == "add":
        b.conv(c, 1, name="project")
        b.add([stem, "project"], name="join")
    elif join == "concat":
        side = b.conv(draw(st.integers(1, 3)), 1, src=stem, name="side")
        if b["g"].shape[1:] != b[side].shape[1:]:
            side = b.pool("max", b[side].shape[1] - b["g"].shape[1] + 1, stride=1, src=side)
        b.concat(["g", side], name="join")
    b.flatten(name="flat")
    b.dense(draw(st.integers(1, 3)), name="fc")
    return b.build()
