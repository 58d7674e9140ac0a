"""Monte Carlo against the exact theory. Tolerances: |mc - theory| <= K standard errors with
K = 4 (a two-sided 4-sigma band: about 6e-5 false alarms per comparison), plus half a weight for
runs whose samples are all identical (standard error 0). Seeds are fixed."""

import math

import numba
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connsim import _kernels, get_arch, quota
from connsim.montecarlo import monte_carlo, wilson_interval
from connsim.theory import predict
from connsim.zoo import ZOO

K = 4.0


def check_agreement(arch, rule, c, samples, seed, mask_model="bernoulli"):
    q = quota(arch, rule, 1 / c)
    p = predict(arch, q)
    mc = monte_carlo(arch, q, samples=samples, rng=seed, mask_model=mask_model)
    assert abs(mc.mean_effective_params - p.expected_effective_params) <= K * mc.stderr + 0.5, (
        c, mc.mean_effective_params, p.expected_effective_params, mc.stderr)
    pd = p.p_disconnected
    se = math.sqrt(pd * (1 - pd) / samples)
    assert abs(mc.p_disconnected - pd) <= K * se + 1.0 / samples, (c, mc.p_disconnected, pd)
    return p, mc


@pytest.mark.kernel_heavy
@pytest.mark.parametrize("c", [10, 100, 300, 1000, 10_000])
@pytest.mark.parametrize("name", ["lenet-300-100", "lenet-5"])
def test_theory_matches_monte_carlo(name, c):
    check_agreement(get_arch(name), "uniform", c, samples=2000, seed=c)


@pytest.mark.kernel_heavy
@pytest.mark.parametrize("rule", ["erk", "igq"])
def test_theory_matches_monte_carlo_other_rules(rule):
    for c in (30, 300, 3000):
        check_agreement(get_arch("lenet-5"), rule, c, samples=2000, seed=7)


@pytest.mark.slow
@pytest.mark.parametrize(("c", "samples"), [(10, 60), (100, 300), (1000, 2000), (10_000, 2000)])
def test_theory_matches_monte_carlo_vgg19(c, samples):
    check_agreement(get_arch("vgg-19"), "uniform", c, samples=samples, seed=1)


@pytest.mark.kernel_heavy
def test_channel_kernel_matches_position_engine_on_unpadded_net():
    # LeNet-5 has valid convs, so both levels coincide; the kernel samples positions itself while
    # the position path draws full masks with NumPy: the two must agree statistically.
    arch = get_arch("lenet-5")
    q = quota(arch, "uniform", 1 / 100)
    a = monte_carlo(arch, q, samples=3000, rng=1)
    b = monte_carlo(arch, q, samples=400, rng=2, level="position")
    se = math.hypot(a.stderr, b.stderr)
    assert abs(a.mean_effective_params - b.mean_effective_params) <= K * se


def test_exact_model_and_extremes():
    arch = get_arch("lenet-5")
    full = monte_carlo(arch, quota(arch, "uniform", 1.0), samples=5, mask_model="exact", rng=0)
    assert (full.total_effective == arch.total_params).all() and not full.disconnected.any()
    empty = monte_carlo(arch, quota(arch, "uniform", 0.0), samples=5, rng=0)
    assert empty.disconnected.all() and (empty.total_effective == 0).all()
    # exact counts: every sample keeps exactly the quota (effective <= kept, equality when dense)
    q = quota(arch, "uniform", 0.5)
    ex = monte_carlo(arch, q, samples=50, mask_model="exact", rng=0, level="position")
    assert (ex.total_effective <= q.kept.sum()).all()


@pytest.mark.kernel_heavy
def test_same_seed_same_result_on_any_thread_count():
    arch = get_arch("lenet-300-100")
    q = quota(arch, "uniform", 1 / 300)
    before = numba.get_num_threads()
    try:
        runs = []
        for t in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(t)
            runs.append(monte_carlo(arch, q, samples=300, rng=5))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(runs[0].effective, runs[1].effective)
    np.testing.assert_array_equal(runs[0].disconnected, runs[1].disconnected)
    other = monte_carlo(arch, q, samples=300, rng=6)
    assert (other.effective != runs[0].effective).any()


@pytest.mark.parametrize(("name", "c", "model", "first", "total", "active", "disc"), [
    ("lenet-300-100", 100, "bernoulli", [63380, 8464, 2815], 74659, 12597, 0),
    ("vgg-11", 1000, "exact", [380, 591, 1342, 3147, 8512, 11912], 41332, 28732, 38),
    ("resnet-20", 300, "bernoulli", [242, 36, 37, 43, 46, 51], 12621, 9546, 147)])
def test_same_seed_same_samples_as_recorded(name, c, model, first, total, active, disc):
    """Totals recorded from an earlier implementation of the sampler and counter: a faster kernel
    must draw the same masks from the same seeds and count them identically."""
    arch = get_arch(name)
    mc = monte_carlo(arch, quota(arch, "uniform", 1 / c), samples=300, rng=7, mask_model=model)
    assert mc.effective.sum(axis=0).tolist()[:6] == first
    assert (int(mc.effective.sum()), int(mc.active.sum()), int(mc.disconnected.sum())) == \
        (total, active, disc)


@numba.njit
def _stream(seed, n, counts, fast):
    """Distinct draws below ``n`` in runs of ``counts``, each followed by a binomial draw from
    ``np.random``: through the sampler's reads of the generator state (``fast``) or through
    ``np.random.randint`` calls. The binomials check that the state is left where the calls
    leave it."""
    np.random.seed(seed)  # noqa: NPY002
    seen = np.zeros((n + 63) // 64, np.uint64)
    out = np.empty(counts.sum() + counts.shape[0], np.int64)
    t = 0
    for m in counts:
        picked = np.empty(m, np.int64)
        if fast:
            _kernels._distinct_draws(n, picked, seen)
        else:
            _kernels._distinct_calls(n, picked, seen)
        out[t:t + m] = picked
        for c in range(m):
            seen[picked[c] >> 6] = 0
        out[t + m] = np.random.binomial(1000, 0.3)  # noqa: NPY002
        t += m + 1
    return out


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT: the sampler makes the "
                    "np.random calls themselves")
@pytest.mark.parametrize("n", [2, 3, 63, 64, 65, 1000, 2**16, 235_200, 2_359_296, 2**27 + 1,
                               2**31 + 1])
def test_draws_from_the_generator_state_equal_numbas_calls(n):
    """The sampler reads Numba's Mersenne Twister state itself (regeneration and tempering
    included); its draws must be Numba's ``np.random.randint(0, n)`` draws, number for number,
    across regenerations of the state (runs longer than 624 words), up to 32-bit draws."""
    counts = np.minimum(np.array([1, 700, 5, 1300, 2000]), n // 2)
    for seed in (0, 1, 2**32 - 1) if n < 2**31 else (7,):
        fast, calls = _stream(seed, n, counts, True), _stream(seed, n, counts, False)
        np.testing.assert_array_equal(fast, calls)
    runs = np.split(fast, np.cumsum(counts + 1))[:-1]
    assert all(np.unique(r[:-1]).size == m for r, m in zip(runs, counts, strict=True))
    assert all(((r[:-1] >= 0) & (r[:-1] < n)).all() for r in runs)


@settings(deadline=None, max_examples=300)
@given(st.integers(0, 2**51 - 1), st.integers(1, 2**32))
@example(784 * 300 - 1, 784)
@example(784 * 300, 784)
@example(2**51 - 1, 3)
@example(2**51 - 2, 2**32)
@example(2**51 - 1, 2**51 - 1)
def test_quotient_is_floor_division(x, d):
    """The count's edge ends divide by a reciprocal product, corrected by the remainder."""
    assert _kernels._quotient(x, d, 1.0 / d) == x // d


@pytest.mark.parametrize(("model", "sums"), [
    ("exact", [80302, 2306669, 922631594, 40693886, 280941]),
    ("bernoulli", [80684, 2281008, 921811795, 40743582, 278687])])
def test_dense_sample_positions_as_recorded(model, sums):
    """At density 0.8 every layer draws its pruned positions and keeps the rest (the complement
    branch of the sampler): the kept positions, recorded from an earlier implementation."""
    from connsim.montecarlo import sampled_masks

    arch = get_arch("lenet-5")
    masks = sampled_masks(arch, quota(arch, "uniform", 0.8), 123, model)
    assert [int(np.flatnonzero(masks[n]).sum()) for n in arch.layer_names] == sums


@pytest.mark.kernel_heavy
@pytest.mark.parametrize("c", [30, 100, 300, 1000])
def test_residual_theory_matches_monte_carlo(c):
    # residual blocks are exact (fork-join recursion, docs/theory.md), also near collapse
    check_agreement(get_arch("resnet-20"), "uniform", c, samples=2000, seed=c)


@pytest.mark.slow
@pytest.mark.parametrize(("rule", "c"), [("uniform", 1000), ("igq", 10_000)])
def test_residual_theory_matches_monte_carlo_resnet18(rule, c):
    check_agreement(get_arch("resnet-18"), rule, c, samples=2000, seed=4)


def test_result_summary_and_validation():
    arch = get_arch("lenet-5")
    q = quota(arch, "uniform", 0.01)
    mc = monte_carlo(arch, q, samples=100, rng=0)
    d = mc.to_dict()
    assert d["samples"] == 100 and len(d["mean_active_units"]) == 5
    lo, hi = d["p_disconnected_ci95"]
    assert lo <= d["p_disconnected"] <= hi
    assert wilson_interval(0, 100)[0] == 0.0
    assert wilson_interval(100, 100)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="mask_model"):
        monte_carlo(arch, q, mask_model="poisson")
    with pytest.raises(ValueError, match="samples"):
        monte_carlo(arch, q, samples=0)


# ------------------------------------------- the count of Monte Carlo, checked exactly

def _exact_counts(arch, masks):
    from connsim import connectivity

    conn = connectivity(arch, masks, level="channel")
    eff = [int(np.count_nonzero(conn.effective[n])) for n in arch.layer_names]
    active = [int(np.count_nonzero(conn.active(n))) for n in arch.layer_names]
    return eff, conn.disconnected, active


SMALL_ZOO = ["lenet-300-100", "lenet-5", "resnet-20", "mlp:20-10-10-3"]


@pytest.mark.parametrize("name", SMALL_ZOO)
@pytest.mark.parametrize("density", [0.3, 0.02, 0.002])
def test_monte_carlo_count_equals_connectivity(name, density):
    # Monte Carlo's count and connectivity() lower the network independently; on the same masks
    # they must agree exactly, not only statistically
    from connsim.montecarlo import count_effective
    from tests.strategies import random_masks

    arch = get_arch(name)
    masks = random_masks(arch, density, 11)
    eff, disc, active = count_effective(arch, masks)
    assert (eff.tolist(), disc, active.tolist()) == _exact_counts(arch, masks)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ZOO if n not in SMALL_ZOO and not n.startswith("mlp")])
def test_monte_carlo_count_equals_connectivity_large(name):
    """Together with the small zoo above: every network of the zoo."""
    from connsim.montecarlo import count_effective
    from tests.strategies import random_masks

    arch = get_arch(name)
    for density in (0.01, 0.0005):
        masks = random_masks(arch, density, 3)
        eff, disc, active = count_effective(arch, masks)
        assert (eff.tolist(), disc, active.tolist()) == _exact_counts(arch, masks)


@pytest.mark.parametrize("mask_model", ["bernoulli", "exact"])
def test_dense_samples_in_one_block_are_recountable(mask_model):
    """At density 0.8 every layer draws its pruned positions and keeps the rest; one thread's
    samples share one bitmap, which each sample must leave clear for the next."""
    from connsim.montecarlo import count_effective, sample_seeds, sampled_masks

    arch = get_arch("lenet-5")
    q = quota(arch, "uniform", 0.8)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        mc = monte_carlo(arch, q, samples=5, mask_model=mask_model, rng=3)
    finally:
        numba.set_num_threads(before)
    for s, seed in enumerate(sample_seeds(5, 3)):
        masks = sampled_masks(arch, q, seed, mask_model)
        eff, disc, active = count_effective(arch, masks)
        assert mc.effective[s].tolist() == eff.tolist() and mc.disconnected[s] == disc
        assert mc.active[s].tolist() == active.tolist()


@pytest.mark.parametrize("mask_model", ["bernoulli", "exact"])
def test_monte_carlo_samples_are_recountable(mask_model):
    # the samples a run draws can be rebuilt and recounted by connectivity(): equal per sample
    from connsim.montecarlo import sample_seeds, sampled_masks

    arch = get_arch("resnet-20")
    q = quota(arch, "uniform", 1 / 200)
    mc = monte_carlo(arch, q, samples=6, mask_model=mask_model, rng=5)
    for s, seed in enumerate(sample_seeds(6, 5)):
        masks = sampled_masks(arch, q, seed, mask_model)
        if mask_model == "exact":
            assert [int(masks[n].sum()) for n in arch.layer_names] == q.kept.tolist()
        eff, disc, active = _exact_counts(arch, masks)
        assert mc.effective[s].tolist() == eff and mc.disconnected[s] == disc
        assert mc.active[s].tolist() == active


def test_effective_compression_band():
    arch = get_arch("lenet-300-100")
    n = arch.total_params
    mc = monte_carlo(arch, quota(arch, "uniform", 0.01), samples=100, rng=0)
    centre, low, high = mc.effective_compression_band(z=2.0)
    m, se = mc.mean_effective_params, mc.stderr
    assert se > 0 and low < centre < high
    assert (centre, low, high) == pytest.approx((n / m, n / (m + 2 * se), n / (m - 2 * se)))
    one = monte_carlo(arch, quota(arch, "uniform", 0.01), samples=1, rng=0)
    assert len(set(one.effective_compression_band())) == 1  # no standard error: the point
    empty = monte_carlo(arch, quota(arch, "uniform", 0.0), samples=5, rng=0)
    assert empty.effective_compression_band() == (math.inf, math.inf, math.inf)


def _kernel_masks(arch, density, rng):
    """Bernoulli masks that keep each conv kernel (and each dense weight) with ``density``."""
    out = {}
    for name in arch.layer_names:
        shape = arch.weight_shape(name)
        keep = rng.random(shape[:2]) < density
        out[name] = np.broadcast_to(keep.reshape(keep.shape + (1,) * (len(shape) - 2)),
                                    shape).copy()
    return out


@pytest.mark.parametrize("density", [0.05, 0.2])
def test_kernel_granularity_theory_matches_monte_carlo(density):
    from connsim.montecarlo import count_effective

    arch = get_arch("lenet-5")
    p = predict(arch, [density] * len(arch.layer_names), granularity="kernel")
    weight = predict(arch, [density] * len(arch.layer_names))
    rng = np.random.default_rng(11)
    counts = np.array([count_effective(arch, _kernel_masks(arch, density, rng))[0]
                       for _ in range(400)], dtype=float)
    for k, name in enumerate(arch.layer_names):
        mean, se = counts[:, k].mean(), counts[:, k].std(ddof=1) / math.sqrt(len(counts))
        assert abs(mean - p.expected_effective[k]) <= K * se + 0.5, (name, mean,
                                                                     p.expected_effective[k])
    conv = arch.layer_names.index("conv2")  # fewer, fuller channel pairs than weight-level pruning
    se = counts[:, conv].std(ddof=1) / math.sqrt(len(counts))
    assert p.expected_effective[conv] < weight.expected_effective[conv] - 10 * se
    with pytest.raises(ValueError, match="granularity"):
        predict(arch, [density] * len(arch.layer_names), granularity="channel")
