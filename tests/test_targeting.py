import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connsim import GlobalOrder, get_arch, measure, random_order, target_effective


@pytest.mark.parametrize("rule", ["uniform", "igq"])
@pytest.mark.parametrize("level", ["channel", "position"])
def test_target_met_and_one_more_weight_exceeds(rule, level):
    arch = get_arch("lenet-5")
    order = random_order(arch, rule, rng=3)
    target = 0.01
    res = target_effective(arch, order, target, level=level)
    m = res.measurement
    assert m.effective_density <= target
    assert m.kept == res.kept == sum(int(v.sum()) for v in res.masks.values())
    nxt = measure(arch, order.masks(res.kept + 1), level=level)
    assert nxt.effective_density > target
    n = arch.total_params
    assert res.probes <= math.ceil(math.log2(n)) + 1
    assert res.probes >= math.floor(math.log2((1 - target) * n)) - 1


@settings(max_examples=15)
@given(st.floats(1e-4, 0.5), st.integers(0, 10**6))
def test_target_property_lenet300(target, seed):
    arch = get_arch("lenet-300-100")
    order = random_order(arch, rng=seed)
    res = target_effective(arch, order, target)
    assert res.measurement.effective_density <= target
    if res.kept < arch.total_params:
        assert measure(arch, order.masks(res.kept + 1)).effective_density > target


def test_global_order_targeting_and_edges():
    arch = get_arch("mlp:8-8-8-2")
    rng = np.random.default_rng(0)
    order = GlobalOrder(arch, {n.name: rng.random(arch.weight_shape(n)) for n in arch.layers})
    res = target_effective(arch, order, 1.0)
    assert res.kept == arch.total_params
    res = target_effective(arch, order, 0.0)
    assert res.measurement.effective == 0 and res.kept >= 0
    with pytest.raises(ValueError, match="target effective density"):
        target_effective(arch, order, 1.5)


def test_random_uniform_is_effectively_sparser():
    # the headline effect: at direct compression 100 random uniform pruning of LeNet-300-100
    # leaves a far sparser effective network
    arch = get_arch("lenet-300-100")
    m = measure(arch, random_order(arch, rng=0).masks(round(arch.total_params / 100)))
    assert m.effective_compression > 5 * m.compression
