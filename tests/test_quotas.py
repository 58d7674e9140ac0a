import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connsim import InfeasibleQuota, get_arch, kept_counts, quota
from connsim.quotas import RULES, _er_raw, igq_force

ZOO = ["lenet-300-100", "lenet-5", "vgg-16", "vgg-19", "resnet-18", "resnet-20"]


def test_igq_reference_values():
    q = quota(get_arch("lenet-300-100"), "igq", 1 / 100)
    np.testing.assert_allclose(q.densities, [0.00462, 0.0351, 0.522], rtol=3e-3)
    assert q.force == pytest.approx(9.16e-4, rel=1e-3)
    n = q.params
    np.testing.assert_allclose(q.densities, 1 / (1 + q.force * n))  # closed form
    assert abs((n / (1 + q.force * n)).sum() - 0.01 * n.sum()) <= 1.0  # within one weight


def test_igq_low_density_keeps_about_one_over_f_per_layer():
    arch = get_arch("vgg-19")
    q = quota(arch, "igq", 1e-6)
    per_layer = q.densities * q.params
    np.testing.assert_allclose(per_layer, 1 / q.force, rtol=0.02)


@pytest.mark.parametrize(("name", "limit"), [("lenet-5", 100), ("resnet-18", 507),
                                              ("vgg-19", 1677), ("vgg-16", 5347)])
def test_uniform_plus_feasibility_limit(name, limit):
    arch = get_arch(name)
    q = quota(arch, "uniform+", 1 / (limit * 0.99))
    assert q.densities[0] == 1.0 and q.densities[-1] >= 0.2 - 1e-12
    with pytest.raises(InfeasibleQuota, match="compression <= ") as e:
        quota(arch, "uniform+", 1 / (limit * 1.01))
    stated = float(re.search(r"compression <= ([0-9.]+)", str(e.value)).group(1))
    assert stated == pytest.approx(limit, rel=2e-3)


def test_uniform_plus_fails_on_lenet5_at_compression_100():
    with pytest.raises(InfeasibleQuota, match="'conv1' dense and layer 'fc3'"):
        quota(get_arch("lenet-5"), "uniform+", 1 / 100)


def test_uniform_plus_shape():
    arch = get_arch("vgg-16")
    q = quota(arch, "uniform+", 0.5)  # all but the first uniform while the last stays >= 20 %
    assert q.densities[0] == 1.0
    np.testing.assert_allclose(q.densities[1:], q.densities[1])
    q = quota(arch, "uniform+", 0.01)  # last held at 20 %, the excess spread over the middle
    assert q.densities[-1] == pytest.approx(0.2)
    np.testing.assert_allclose(q.densities[1:-1], q.densities[1])
    with pytest.raises(InfeasibleQuota, match="'fc1' dense"):
        quota(get_arch("lenet-300-100"), "uniform+", 0.5)  # fc1 alone is 88 % of the weights


@pytest.mark.parametrize(("name", "limit"), [("vgg-16", 73), ("vgg-19", 76), ("resnet-18", 50)])
def test_erk_redistribute_infeasible_below_limit(name, limit):
    arch = get_arch(name)
    quota(arch, "erk-redistribute", 1 / (limit * 1.02))
    with pytest.raises(InfeasibleQuota, match="no previous layer"):
        quota(arch, "erk-redistribute", 1 / (limit * 0.98))
    quota(arch, "erk", 1 / (limit * 0.98))  # RigL's saturating variant is always feasible


def test_erk_closed_form_and_saturation():
    arch = get_arch("vgg-16")
    q = quota(arch, "erk", 0.01)
    raw = _er_raw(arch, True)
    free = q.densities < 1
    ratio = q.densities[free] / raw[free]
    np.testing.assert_allclose(ratio, ratio[0])  # d_l = k * raw_l on unsaturated layers
    assert (q.densities[~free] == 1).all() and (~free).any()
    lenet = get_arch("lenet-300-100")
    q = quota(lenet, "er", 0.05)  # ER on dense layers = ERK
    np.testing.assert_allclose(q.densities, quota(lenet, "erk", 0.05).densities)
    n_in, n_out = 784, 300
    assert q.densities[0] / q.densities[1] == pytest.approx(
        ((n_in + n_out) / (n_in * n_out)) / ((300 + 100) / (300 * 100)))


def test_er_uses_channel_counts_for_convs():
    arch = get_arch("lenet-5")
    q = quota(arch, "er", 0.003)  # low enough that no layer saturates
    assert q.densities[0] / q.densities[1] == pytest.approx(((3 + 6) / 18) / ((6 + 16) / 96))


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_budget_exact(name, rule):
    arch = get_arch(name)
    for d in (0.3, 0.01, 0.001):
        try:
            q = quota(arch, rule, d)
        except InfeasibleQuota:
            continue
        assert int(q.kept.sum()) == round(d * arch.total_params)
        assert ((q.densities >= 0) & (q.densities <= 1)).all()
        assert ((q.kept >= 0) & (q.kept <= q.params)).all()
        assert abs((q.densities * q.params).sum() - d * arch.total_params) <= 1.0


@given(st.sampled_from(ZOO[:3] + ["resnet-20"]), st.sampled_from(sorted(RULES)),
       st.floats(1e-5, 1.0))
def test_rules_property(name, rule, d):
    arch = get_arch(name)
    try:
        q = quota(arch, rule, d)
    except InfeasibleQuota:
        assert rule in ("uniform+", "erk-redistribute")
        return
    assert ((q.densities >= 0) & (q.densities <= 1)).all()
    assert int(q.kept.sum()) == round(d * arch.total_params)
    if rule == "igq":  # bigger layers are pruned harder
        order = np.argsort(q.params, kind="stable")
        assert (np.diff(q.densities[order]) <= 1e-12).all()


def test_induced_and_custom():
    arch = get_arch("lenet-300-100")
    rng = np.random.default_rng(0)
    masks = {n.name: rng.random(arch.weight_shape(n)) < p
             for n, p in zip(arch.layers, (0.01, 0.1, 0.5), strict=True)}
    q = quota(arch, "induced", masks=masks)
    assert q.kept.tolist() == [int(masks[k].sum()) for k in arch.layer_names]
    q = quota(arch, "custom", densities=[0.01, 0.1, 0.5])
    assert q.density == pytest.approx((2352 + 3000 + 500) / 266200)
    assert quota(arch, "custom", densities={"fc1": 0.01, "fc2": 0.1, "fc3": 0.5}).kept.tolist() \
        == q.kept.tolist()
    with pytest.raises(ValueError, match="implies density"):
        quota(arch, "custom", 0.5, densities=[0.01, 0.1, 0.5])
    with pytest.raises(ValueError, match="one value per layer"):
        quota(arch, "custom", densities=[0.1])
    with pytest.raises(InfeasibleQuota, match="outside"):
        quota(arch, "custom", densities=[0.1, 1.5, 0.1])
    q = quota(arch, lambda a, d: np.full(3, d), 0.2)
    assert q.kept.sum() == round(0.2 * 266200)


def test_unknown_rule_and_bad_density():
    arch = get_arch("lenet-5")
    with pytest.raises(ValueError, match="rule must be one of uniform, uniform\\+, er"):
        quota(arch, "magic", 0.1)
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="density"):
            quota(arch, "uniform", bad)
    with pytest.raises(ValueError, match="needs a global density"):
        quota(arch, "igq")


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=8), st.data())
def test_kept_counts_sum_exactly(params, data):
    d = data.draw(st.lists(st.floats(0, 1), min_size=len(params), max_size=len(params)))
    n = np.array(params)
    total = data.draw(st.integers(0, int(n.sum())))
    k = kept_counts(n, d, total)
    assert k.sum() == total and (k >= 0).all() and (k <= n).all()


def test_igq_force_edges():
    n = np.array([10.0, 1000.0])
    assert igq_force(n, 1.0) == 0.0
    assert math.isinf(igq_force(n, 0.0))
    assert quota(get_arch("lenet-5"), "igq", 0.0).kept.sum() == 0
