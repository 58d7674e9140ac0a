import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connsim import ArchBuilder, from_dict, get_arch, quota
from connsim.theory import half_disconnection_compression, predict, transition
from tests.naive import synflow_effective


def tiny_archs():
    b = ArchBuilder("conv-flatten", (1, 2, 2))  # flatten of A = 4 positions before the dense
    b.conv(1, 1, name="c")
    b.flatten()
    b.dense(2, name="fc")
    yield b.build()
    b = ArchBuilder("conv-k2", (1, 2, 2))  # kernel groups of 4 weights
    b.conv(2, 2, name="c")
    b.flatten()
    b.dense(1, name="fc")
    yield b.build()
    yield get_arch("mlp:2-3-2")
    yield get_arch("mlp:1-2-2-1")


def enumerate_masks(arch, densities):
    """Exact expectations over all 2^N masks, each weighed by its Bernoulli probability."""
    shapes = [arch.weight_shape(n) for n in arch.layers]
    sizes = [math.prod(s) for s in shapes]
    exp_eff = np.zeros(len(shapes))
    exp_active = np.zeros(len(shapes))
    p_disc = 0.0
    for bits in itertools.product([False, True], repeat=sum(sizes)):
        bits = np.array(bits)
        masks, prob, start = {}, 1.0, 0
        for name, shape, size, d in zip(arch.layer_names, shapes, sizes, densities, strict=True):
            m = bits[start:start + size]
            start += size
            prob *= d ** m.sum() * (1 - d) ** (size - m.sum())
            masks[name] = m.reshape(shape)
        eff = synflow_effective(arch, masks, rng=0)
        counts = np.array([eff[n].sum() for n in arch.layer_names])
        exp_eff += prob * counts
        # a layer's output unit/channel is active iff some effective weight enters it
        exp_active += prob * np.array([eff[n].reshape(eff[n].shape[0], -1).any(axis=1).sum()
                                       for n in arch.layer_names])
        p_disc += prob * (counts.sum() == 0)
    return exp_eff, exp_active, p_disc


def tiny_dags():
    b = ArchBuilder("identity-block", (1,))  # stem -> c1 -> c2, added to the stem
    b.dense(2, name="stem")
    b.dense(2, name="c1")
    b.dense(2, name="c2")
    b.add(["stem", "c2"], name="add")
    b.dense(1, name="fc")
    yield b.build()
    b = ArchBuilder("projection-block", (1,))  # main branch plus a one-layer shortcut
    b.dense(2, name="stem")
    b.dense(1, name="c1")
    b.dense(2, name="c2")
    b.dense(2, src="stem", name="short")
    b.add(["c2", "short"], name="add")
    b.dense(1, name="fc")
    yield b.build()
    b = ArchBuilder("two-deep-branches", (2,))  # two multi-layer branches from one fork
    b.dense(1, name="a1")
    b.dense(2, name="a2")
    b.dense(1, src="input", name="b1")
    b.dense(2, name="b2")
    b.add(["a2", "b2"], name="add")
    b.dense(1, name="fc")
    yield b.build()


def long_skip_dag():
    """A join whose branches leave different forks: the documented approximation applies."""
    b = ArchBuilder("long-skip", (1,))
    b.dense(2, name="s")
    b.dense(2, name="a")
    b.add(["s", "a"], name="j1")
    b.dense(2, name="b")
    b.add(["b", "s"], name="j2")
    b.dense(1, name="fc")
    return b.build()


@pytest.mark.parametrize("arch", list(tiny_archs()) + list(tiny_dags()), ids=lambda a: a.name)
def test_theory_equals_exhaustive_enumeration(arch):
    rng = np.random.default_rng(len(arch.layer_names))
    for _ in range(2):
        d = rng.uniform(0.1, 0.9, len(arch.layers))
        exp_eff, exp_active, p_disc = enumerate_masks(arch, d)
        p = predict(arch, d)
        assert p.exact
        np.testing.assert_allclose(p.expected_effective, exp_eff, rtol=0, atol=1e-12)
        np.testing.assert_allclose(p.expected_active, exp_active, rtol=0, atol=1e-12)
        assert p.p_disconnected == pytest.approx(p_disc, abs=1e-12)


def test_long_skip_falls_back_to_the_documented_approximation():
    arch = long_skip_dag()
    d = np.array([0.5, 0.4, 0.6, 0.7])
    exp_eff, _, p_disc = enumerate_masks(arch, d)
    p = predict(arch, d)
    assert not p.exact
    # measured (docs/theory.md): treating the branches as independent overestimates the effective
    # weights by 12-16 % here and underestimates P(disconnected) (0.22 vs 0.35)
    np.testing.assert_allclose(p.expected_effective, exp_eff, rtol=0.2)
    assert (p.expected_effective >= exp_eff - 1e-12).all()
    assert p.p_disconnected < p_disc


def test_transition_is_a_binomial_mixture():
    from scipy.stats import binom

    pmf = np.array([0.1, 0.2, 0.3, 0.4])
    q = 0.3
    ref = sum(pmf[r] * binom.pmf(np.arange(6), 5, 1 - (1 - q) ** r) for r in range(4))
    np.testing.assert_allclose(transition(pmf, 5, q), ref, atol=1e-15)
    assert transition(pmf, 5, 0.0)[0] == pytest.approx(1.0)
    np.testing.assert_allclose(transition(pmf, 5, 1.0), [0.1, 0, 0, 0, 0, 0.9])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.floats(1e-9, 1 - 1e-9), st.data())
def test_banded_binomial_equals_scipy(n, p, data):
    """The banded kernel (ratio recurrence between saddle-point evaluations) against SciPy's
    binomial pmf, at every count whose probability is representable."""
    from scipy.stats import binom

    from connsim._kernels import binomial_mix, log_binom_pmf

    s = np.arange(n + 1)
    ref = binom.pmf(s, n, p)
    out = np.zeros(n + 1)
    binomial_mix(np.array([1.0]), np.array([math.log1p(-p)]), out)
    big = ref > 1e-250  # SciPy's own tails are less accurate than this below
    # e^-L is as exact as L's last bits allow: both sides carry a relative error of a few L ulps
    # in the far tails (n = 2999, p = 0.3455: 4.7e-13 here, 6.6e-13 SciPy's, at L ~ 460)
    rtol = 1e-12 + 4e-15 * np.abs(np.log(ref[big]))
    assert np.all(np.abs(out[big] - ref[big]) <= rtol * ref[big])
    assert np.abs(out[~big]).max(initial=0) < 1e-240
    k = data.draw(st.integers(0, n))
    if ref[k] > 1e-280:
        lm = math.log1p(-p)
        assert log_binom_pmf(k, n, -math.expm1(lm), math.exp(lm), lm) == pytest.approx(
            binom.logpmf(k, n, p), rel=1e-12)


@pytest.mark.parametrize(("n", "log_miss", "points"), [
    (100_000, math.log(0.5), [49_500, 50_000, 50_017, 50_500]),  # mode and +-3 sd
    (100_000, -2e-5, [0, 1, 2, 5, 20]),  # mode at 2: P(disconnected)-like ends
    (100_000, -14.3, [100_000, 99_999, 99_997]),  # p = 1 - 6e-7
    (1_000_000, -3.3e-7, [0, 1, 3]),
    (1_000_000, -14.3, [1_000_000, 999_999]),
    (500, -705.0, [500]),  # p / q near the largest double
    (500, -750.0, [500, 499]),  # q underflows to 0: all the mass at n
])
def test_banded_binomial_to_forty_digits(n, log_miss, points):
    """The kernel against exact binomial probabilities (40-digit decimals) at widths up to 10^6,
    at the mode, in the tails and at both ends, where rounding grows with n if anything does.

    The reference is exact for ``p = 1 - exp(log_miss)``; the kernel works with ``p`` and ``q``
    rounded to doubles, which alone moves a probability by up to about ``|k - n p|`` units of
    2.3e-16 (a tilt of the distribution), so that is allowed on top of 2e-14."""
    from decimal import Decimal, getcontext

    from connsim._kernels import binomial_mix

    getcontext().prec = 40
    q = Decimal(log_miss).exp()
    lp, lq = (1 - q).ln(), Decimal(log_miss)
    out = np.zeros(n + 1)
    binomial_mix(np.array([1.0]), np.array([log_miss]), out)
    assert out.sum() == pytest.approx(1.0, abs=1e-13)
    for k in points:
        exact = float((Decimal(math.comb(n, k)).ln() + k * lp + (n - k) * lq).exp())
        tilt = 2.3e-16 * abs(k - n * float(1 - q))
        assert out[k] == pytest.approx(exact, rel=2e-14 + tilt, abs=1e-300), k


def test_stirling_remainders_are_exact():
    """The table behind the saddle-point pmf, recomputed to 40 digits."""
    from decimal import Decimal, getcontext

    from connsim._kernels import STIRLERR, _stirlerr

    getcontext().prec = 40
    pi = Decimal("3.141592653589793238462643383279502884197")
    for n in range(1, 40):
        d = Decimal(n)
        exact = Decimal(math.factorial(n)).ln() - (d + Decimal("0.5")) * d.ln() + d \
            - (2 * pi).sqrt().ln()
        # an absolute error in a log-probability is the relative error of the probability
        assert abs(_stirlerr(n) - float(exact)) < 2e-16
    for n in (40, 81, 501, 900):  # the series' branches
        d = Decimal(n)
        exact = sum(Decimal(k).ln() for k in range(1, n + 1)) - (d + Decimal("0.5")) * d.ln() \
            + d - (2 * pi).sqrt().ln()
        assert abs(_stirlerr(n) - float(exact)) < 2e-16
    assert STIRLERR.size == 16


def _dense_transition(pmf, n_dst, q, log_miss0=0.0, share=1.0):
    """A (support x width) table of SciPy binomial pmfs: the method the banded kernel replaced."""
    from scipy.stats import binom

    rows = np.flatnonzero(pmf > 1e-300)
    lm = np.where(rows > 0, rows * share * (math.log1p(-q) if q < 1 else -math.inf), 0.0) \
        + log_miss0
    table = binom.pmf(np.arange(n_dst + 1)[None, :], n_dst, -np.expm1(lm)[:, None])
    return pmf[rows] @ table


@pytest.mark.parametrize(("name", "rule", "c"), [
    ("lenet-300-100", "uniform", 100), ("vgg-19", "uniform", 1e4), ("vgg-19", "igq", 1e3),
    ("resnet-18", "erk", 300), ("mobilenet-v2", "uniform", 30),
    ("mlp:784-3000-3000-10", "uniform", 3000), ("mlp:784-3000-3000-10", "uniform", 600)])
def test_banded_prediction_equals_dense_tables(monkeypatch, name, rule, c):
    arch = get_arch(name)
    q = quota(arch, rule, 1 / c)
    p = predict(arch, q)
    monkeypatch.setattr("connsim.theory.transition", _dense_transition)
    ref = predict(arch, q)
    for field in ("expected_effective", "p_reach", "p_coreach"):
        np.testing.assert_allclose(getattr(p, field), getattr(ref, field), rtol=1e-12, atol=1e-300)
    assert p.p_disconnected == pytest.approx(ref.p_disconnected, rel=1e-11, abs=1e-300)


@pytest.mark.parametrize("name", ["lenet-300-100", "lenet-5", "vgg-19", "mlp:784-4096-4096-10"])
def test_stable_at_extreme_widths_and_densities(name):
    arch = get_arch(name)
    for d in (0.5, 1e-2, 1e-4, 1e-6):
        p = predict(arch, quota(arch, "uniform", d))
        assert np.isfinite(p.expected_effective).all()
        assert 0.0 <= p.p_disconnected <= 1.0
        assert p.effective_density <= p.direct_density * (1 + 1e-12)
        assert ((p.p_reach >= 0) & (p.p_reach <= 1)).all()
    assert predict(arch, quota(arch, "uniform", 1.0)).effective_density == pytest.approx(1.0)
    assert predict(arch, quota(arch, "uniform", 1e-6)).p_disconnected > 0.99


@settings(max_examples=25)
@given(st.sampled_from(["lenet-300-100", "lenet-5", "vgg-16", "resnet-20"]),
       st.sampled_from(["uniform", "erk", "igq"]), st.floats(1e-4, 1.0))
def test_effective_never_exceeds_direct(name, rule, d):
    arch = get_arch(name)
    p = predict(arch, quota(arch, rule, d))
    assert p.effective_density <= p.direct_density * (1 + 1e-9) + 1e-15
    assert (p.expected_effective <= p.params * p.densities * (1 + 1e-9) + 1e-12).all()


@pytest.mark.parametrize("name", ["lenet-300-100", "lenet-5", "vgg-19"])
def test_disconnection_rises_as_density_falls(name):
    arch = get_arch(name)
    ps = [predict(arch, quota(arch, "uniform", 10 ** -e)).p_disconnected
          for e in np.linspace(0.5, 4.5, 17)]
    assert all(b >= a - 1e-12 for a, b in zip(ps, ps[1:], strict=False))


def test_independent_of_layer_names():
    arch = get_arch("lenet-5")
    spec = arch.to_dict()
    renamed = {n: f"renamed_{k}" for k, n in enumerate(arch.layer_names)}
    for layer in spec["layers"]:
        layer["name"] = renamed.get(layer["name"], layer["name"])
        layer["inputs"] = [renamed.get(x, x) for x in layer["inputs"]]
    other = from_dict(spec)
    d = [0.3, 0.1, 0.02, 0.05, 0.2]
    a, b = predict(arch, d), predict(other, d)
    np.testing.assert_array_equal(a.expected_effective, b.expected_effective)
    assert a.p_disconnected == b.p_disconnected


def test_resnets_are_exact_and_paths():
    for name in ("resnet-20", "resnet-18"):
        p = predict(get_arch(name), quota(get_arch(name), "uniform", 0.01))
        assert p.exact and math.isnan(p.expected_paths)
    q = predict(get_arch("mlp:4-4-4"), [0.5, 0.5])
    assert q.expected_paths == pytest.approx(4 * 4 * 4 * 0.25)


def test_half_disconnection_compression():
    arch = get_arch("lenet-300-100")
    c = half_disconnection_compression(arch, "uniform")
    assert 100 < c < 1000
    assert predict(arch, quota(arch, "uniform", 1 / c)).p_disconnected == pytest.approx(0.5,
                                                                                          abs=2e-3)
    assert half_disconnection_compression(arch, "uniform", hi=50) == math.inf


def test_bad_densities():
    arch = get_arch("lenet-5")
    with pytest.raises(ValueError, match="one per layer"):
        predict(arch, [0.1, 0.2])
    with pytest.raises(ValueError, match="one per layer"):
        predict(arch, [0.1, 0.2, np.nan, 0.1, 0.1])
