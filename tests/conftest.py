import os
import tracemalloc

import numpy as np
import pytest
import scipy.linalg  # noqa: F401 - loads SciPy's BLAS so that the limit below reaches it
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from connsim import ArchBuilder
from connsim.graph import Block, LayeredGraph
from connsim.trainer.backend import register_backend
from tests.strict import strict

# the strict CPU double of CuPy (tests/strict.py): trainer tests run on it as backend "strict"
register_backend("strict", lambda: strict)
TRAINER_BACKENDS = ("numpy", "strict")

# One BLAS thread for the whole suite: BLAS threads otherwise fight Numba's and each other on small
# machines (one trainer test took 105 s with default threads, 8 s with one BLAS thread). Every BLAS
# must be loaded first: the limit reaches only libraries already in the process.
threadpool_limits(limits=1, user_api="blas")

# JIT compile time makes wall-clock deadlines meaningless; CI derandomizes for reproducibility.
settings.register_profile("default", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=60, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nojit", deadline=None, max_examples=15, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI") else "default"))


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


@pytest.fixture(scope="session")
def data_dir():
    return os.path.join(os.path.dirname(__file__), "data")


def peak_memory(fn, *args):
    """Run ``fn(*args)``; return the exception it raised (or None) and its peak traced
    allocation in bytes."""
    tracemalloc.start()
    try:
        fn(*args)
    except Exception as e:  # the caller checks what was raised
        raised = e
    else:
        raised = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak
