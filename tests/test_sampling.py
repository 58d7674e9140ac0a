import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connsim import GlobalOrder, get_arch, keep_ranks, quota, random_masks, random_order, topk_masks


@given(st.sampled_from(["uniform", "igq", "erk"]), st.floats(0.001, 1.0), st.integers(0, 10**6))
def test_exact_masks_have_exact_counts(rule, d, seed):
    arch = get_arch("lenet-5")
    q = quota(arch, rule, d)
    for model in ("exact", "nested"):
        m = random_masks(arch, q, model=model, rng=seed)
        assert [int(m[k].sum()) for k in arch.layer_names] == q.kept.tolist()


@given(st.floats(0.01, 1.0), st.floats(0.01, 1.0), st.integers(0, 10**6))
def test_nested_masks_are_nested(d1, d2, seed):
    arch = get_arch("lenet-5")
    lo, hi = sorted((d1, d2))
    small = random_masks(arch, quota(arch, "igq", lo), model="nested", rng=seed)
    big = random_masks(arch, quota(arch, "igq", hi), model="nested", rng=seed)
    for k in small:
        assert not (small[k] & ~big[k]).any()


def test_bernoulli_density_statistics():
    arch = get_arch("lenet-300-100")
    q = quota(arch, "igq", 0.05)
    m = random_masks(arch, q, model="bernoulli", rng=1)
    for k, d, n in zip(arch.layer_names, q.densities, q.params, strict=True):
        se = np.sqrt(d * (1 - d) / n)
        assert abs(m[k].mean() - d) <= 5 * se  # 5 standard errors


def test_exact_masks_are_uniform_over_positions():
    arch = get_arch("mlp:10-10")
    q = quota(arch, "uniform", 0.3)
    hits = sum(random_masks(arch, q, rng=s)["fc1"].astype(int) for s in range(2000))
    p = hits / 2000  # each entry kept with probability 0.3
    assert np.abs(p - 0.3).max() <= 5 * np.sqrt(0.3 * 0.7 / 2000)


def test_same_seed_same_mask_on_any_thread_count():
    arch = get_arch("lenet-5")
    q = quota(arch, "erk", 0.1)
    before = numba.get_num_threads()
    try:
        out = []
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            out.append(random_masks(arch, q, model="nested", rng=7))
    finally:
        numba.set_num_threads(before)
    for k in out[0]:
        np.testing.assert_array_equal(out[0][k], out[1][k])
    again = random_masks(arch, q, model="nested", rng=7)
    other = random_masks(arch, q, model="nested", rng=8)
    assert all((again[k] == out[0][k]).all() for k in again)
    assert any((other[k] != out[0][k]).any() for k in other)


def test_random_masks_validation():
    arch = get_arch("lenet-5")
    with pytest.raises(ValueError, match="model must be"):
        random_masks(arch, quota(arch, "uniform", 0.1), model="poisson")
    with pytest.raises(ValueError, match="q must be a quota for the layers"):
        random_masks(arch, quota(get_arch("lenet-300-100"), "uniform", 0.1))


def test_keep_ranks_ties_by_index_and_nan():
    assert keep_ranks(np.array([1.0, 1.0, 3.0, 1.0])).tolist() == [1, 2, 0, 3]
    with pytest.raises(ValueError, match="NaN"):
        keep_ranks(np.array([1.0, np.nan]))


def test_global_order_and_topk():
    arch = get_arch("mlp:3-2-2")
    scores = {"fc1": np.array([[1.0, 5.0, 2.0], [0.0, 4.0, 4.0]]), "fc2": np.array([[3.0, 6.0],
                                                                                    [0.5, 0.0]])}
    g = GlobalOrder(arch, scores)
    m = g.masks(4)  # 6, 5, 4 (index 4 before 5), 4
    assert m["fc2"].tolist() == [[False, True], [False, False]]
    assert m["fc1"].tolist() == [[False, True, False], [False, True, True]]
    t = topk_masks(arch, scores, [2, 1])
    assert t["fc1"].sum() == 2 and t["fc1"][0, 1] and t["fc1"][1, 1]
    assert t["fc2"].tolist() == [[False, True], [False, False]]
    with pytest.raises(ValueError, match="kept must be an integer in"):
        g.masks(99)
    with pytest.raises(ValueError, match="shape"):
        GlobalOrder(arch, {"fc1": np.ones(3), "fc2": np.ones((2, 2))})


def test_layerwise_order_follows_quota():
    arch = get_arch("lenet-300-100")
    order = random_order(arch, "igq", rng=0)
    kept = 2662
    m = order.masks(kept)
    assert [int(m[k].sum()) for k in arch.layer_names] == quota(arch, "igq", 0.01).kept.tolist()
