"""Effective filters: the Gram matrices against explicit per-sample gradients, planted
singularities, the structural bound, parameter accounting and hierarchical pruning."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connsim import get_arch
from connsim._validation import InvalidArgument
from connsim.architectures import ArchBuilder
from connsim.masks import ones_masks
from connsim.redundancy import (
    analysable_layers,
    at_tolerance,
    freed_parameters,
    hierarchical_prune,
    prune_units,
    redundancy,
    total_parameters,
)
from connsim.trainer.data import make_synthetic
from connsim.trainer.loop import TrainConfig, train
from connsim.trainer.network import Network
from tests.naive import numeric_grad
from tests.strategies import random_masks


def _mlp():
    b = ArchBuilder("mlp", (8,))
    b.dense(10, relu=True)
    b.dense(6, relu=True)
    b.dense(3)
    return b.build()


def _convnet():
    b = ArchBuilder("convnet", (2, 8, 8))
    b.conv(5, 3, bias=True, relu=True)
    b.conv(4, 3, bias=True, relu=True)
    b.flatten()
    b.dense(3)
    return b.build()


def _sample(shape, n=120, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)), rng.integers(0, 3, n)


def _per_sample_loss(net, x, y):
    logits = net.forward(x[None], train=False)[0]
    z = logits - logits.max()
    return float(np.log(np.exp(z).sum()) - z[y])


def _explicit_gram(arch, state, x, y, layer, consumer):
    """[H; b] by finite differences of each sample's loss, then its Gram."""
    net = Network(arch, dtype="float64", rng=0)
    net.load_state_dict(state)
    w = net.ops[consumer][0].params["weight"]
    bias = net.ops[consumer][0].params["bias"]
    units = arch[layer].channels
    per = w.shape[1] // units if w.ndim == 2 else int(np.prod(w.shape[2:]))
    rows = [[] for _ in range(units + 1)]
    for xn, yn in zip(x, y, strict=True):
        def loss(xn=xn, yn=yn):
            return _per_sample_loss(net, xn, yn)

        gw, gb = numeric_grad(loss, w), numeric_grad(loss, bias)
        for j in range(units):
            block = gw[:, j * per:(j + 1) * per] if w.ndim == 2 else gw[:, j].reshape(len(gb), -1)
            rows[j].append(block.ravel())
        rows[units].append(np.repeat(gb, per))
    hb = np.array([np.concatenate(r) for r in rows])
    return hb @ hb.T


@pytest.mark.parametrize("chunk", [None, 1])  # 1: one sample per chunk of conv gradients
@pytest.mark.parametrize("make, shape, layer", [
    (_mlp, (8,), "dense1"), (_convnet, (2, 8, 8), "conv1"), (_convnet, (2, 8, 8), "conv2")])
def test_gram_equals_explicit_per_sample_gradients(make, shape, layer, chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr("connsim.redundancy._CHUNK", chunk)
    arch = make()
    net = Network(arch, dtype="float64", rng=1)
    state = net.state_dict()
    for k in state:  # non-zero biases
        if k.endswith("bias"):
            state[k] = np.random.default_rng(2).standard_normal(state[k].shape) * 0.3
    x, y = _sample(shape, n=4)
    red = redundancy(arch, state, x, y, batch_size=3)
    g = red.grams[layer]
    consumer = analysable_layers(arch)[0][layer]
    expected = _explicit_gram(arch, state, x, y, layer, consumer)
    n = g.n
    np.testing.assert_allclose(g.k, expected[:n, :n], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(g.kb, expected[:n, n], rtol=1e-5, atol=1e-9)
    assert g.kbb == pytest.approx(expected[n, n], rel=1e-5)


def _trained(arch, shape, seed=0):
    data = make_synthetic(shape if len(shape) == 3 else (1, 1, shape[0]), classes=3, n_train=600,
                          n_test=60, noise=0.6, seed=seed)
    data = data.reshaped(shape)
    res = train(arch, data, None, TrainConfig(epochs=3, batch_size=30, lr=0.05, seed=seed))
    return res.network.state_dict(), data.x_train[:400], data.y_train[:400]


def _plant(state, arch, layer, how):
    s = {k: np.array(v, dtype=np.float64) for k, v in state.items()}
    w, b = s[f"{layer}.weight"], s[f"{layer}.bias"]
    consumer = analysable_layers(arch)[0][layer]
    if how == "duplicate":
        w[3], b[3] = w[1], b[1]
    elif how == "constant":
        w[3], b[3] = 0.0, 0.7
    elif how == "no-outgoing":
        s[f"{consumer}.weight"][:, 3] = 0.0
    elif how == "combination":
        w[3], b[3] = 0.5 * w[1] - 2.0 * w[2], 0.5 * b[1] - 2.0 * b[2]
    return s


@pytest.mark.parametrize("how", ["duplicate", "constant", "no-outgoing"])
def test_planted_singularities_lower_the_rank_by_one(how):
    for arch, shape, layer in ((_mlp(), (8,), "dense1"), (_convnet(), (2, 8, 8), "conv1")):
        state, x, y = _trained(arch, shape)
        before = redundancy(arch, state, x, y, tol=1e-3).layer(layer)
        assert before.effective == before.units  # trained, generic: full rank
        after = redundancy(arch, _plant(state, arch, layer, how), x, y, tol=1e-3).layer(layer)
        assert after.effective == before.effective - 1, (arch.name, how)
        assert after.eliminated == (1 if how == "no-outgoing" else 0)


def test_a_linear_combination_in_a_linear_layer_lowers_the_rank_by_one():
    b = ArchBuilder("wide", (16,))
    b.dense(10)  # linear: no ReLU, so a combination of units stays a combination
    b.dense(6, relu=True)
    b.dense(3)
    wide = b.build()
    state, x, y = _trained(wide, (16,))
    full = redundancy(wide, state, x, y).layer("dense1")
    planted = redundancy(wide, _plant(state, wide, "dense1", "combination"), x, y).layer("dense1")
    assert full.effective == 10 and planted.effective == 9


@settings(deadline=None, max_examples=15)
@given(density=st.floats(0.05, 0.6), seed=st.integers(0, 10 ** 6))
def test_structural_bound_holds_on_random_masks(density, seed):
    arch = _convnet()
    masks = random_masks(arch, density, seed)
    net = Network(arch, masks, dtype="float64", rng=seed)
    x, y = _sample((2, 8, 8), n=40, seed=seed)
    red = redundancy(arch, net.state_dict(), x, y, masks=masks)
    for lr in red.layers:
        assert lr.effective <= lr.active  # n - r >= n - active
        assert lr.redundancy >= lr.structural


def test_parameter_accounting_is_exact():
    arch = get_arch("lenet-300-100")
    gone = {"fc1": np.zeros(300, dtype=bool)}
    gone["fc1"][[0, 5]] = True
    per = 784 + 1 + 2 + 100  # incoming weights, bias, BatchNorm scale and shift, outgoing
    assert freed_parameters(arch, gone) == 2 * per
    gone["fc2"] = np.zeros(100, dtype=bool)
    gone["fc2"][7] = True  # shares the two weights fc2[7, 0] and fc2[7, 5]: counted once
    assert freed_parameters(arch, gone) == 2 * per + (300 + 1 + 2 + 10) - 2
    assert total_parameters(arch) == 266_200 + 410 + 2 * 400
    with pytest.raises(InvalidArgument, match="fc3"):
        freed_parameters(arch, {"fc3": np.zeros(10, dtype=bool)})


def test_hierarchical_pruning_respects_budgets_and_meets_the_request():
    arch = _convnet()
    state, x, y = _trained(arch, (2, 8, 8))
    state = _plant(_plant(state, arch, "conv1", "duplicate"), arch, "conv2", "constant")
    red = redundancy(arch, state, x, y)
    assert red.max_compression > 1
    per_unit = min(lr.params_per_unit for lr in red.layers if lr.redundancy)
    for fraction in (0.3, 1.0):
        target = fraction * red.freed
        res = hierarchical_prune(arch, red, red.params / (red.params - target))
        for lr in red.layers:
            assert res.removed[lr.name].sum() <= lr.redundancy
        assert target <= res.freed < target + max(lr.params_per_unit for lr in red.layers) + 1
    assert per_unit > 0
    with pytest.raises(InvalidArgument, match="maximum compression"):
        hierarchical_prune(arch, red, red.max_compression * 1.5)


@settings(max_examples=25, deadline=None)
@given(st.floats(1.0, 1.6), st.integers(0, 2**16))
def test_prune_units_takes_the_shortest_prefix_at_equal_shares(compression, seed):
    arch = get_arch("lenet-5")
    masks = random_masks(arch, 0.5, seed)
    rng = np.random.default_rng(seed)
    orders = {"conv2": rng.permutation(16), "fc1": rng.permutation(120)[:60]}
    removed, freed, share = prune_units(arch, orders, compression, masks=masks)
    target = total_parameters(arch, masks) * (1 - 1 / compression)
    assert freed == freed_parameters(arch, removed, masks) >= target
    counts = {k: int(v.sum()) for k, v in removed.items()}
    for name, order in orders.items():  # each layer removes a prefix of its list
        assert removed[name][order[:counts[name]]].all()
    if not any(counts.values()):
        return
    index = {name: k for k, name in enumerate(orders)}
    last = max((k for k in orders if counts[k]), key=lambda k: (counts[k] / len(orders[k]),
                                                                 index[k]))
    assert share == counts[last] / len(orders[last])
    for name, order in orders.items():  # every unit up to that share (ties: list order) ...
        assert counts[name] == sum(((i + 1) / len(order), index[name]) <= (share, index[last])
                                   for i in range(len(order)))
    fewer = {k: v.copy() for k, v in removed.items()}  # ... and one unit fewer is not enough
    fewer[last][orders[last][counts[last] - 1]] = False
    assert freed_parameters(arch, fewer, masks) < target


def test_prune_units_refuses_what_its_lists_cannot_reach():
    arch = get_arch("lenet-300-100")
    most = total_parameters(arch) / (total_parameters(arch) - 50 * (300 + 1 + 2 + 10))
    with pytest.raises(InvalidArgument, match=f"at most {most:.6g}, what removing"):
        prune_units(arch, {"fc2": np.arange(50)}, 2)
    with pytest.raises(InvalidArgument, match=r"orders.*'fc3'"):
        prune_units(arch, {"fc3": [0]}, 1.1)
    with pytest.raises(InvalidArgument, match=r"orders\['fc1'\]"):
        prune_units(arch, {"fc1": [0, 0]}, 1.1)
    with pytest.raises(InvalidArgument, match=r"orders\['fc1'\]"):
        prune_units(arch, {"fc1": [300]}, 1.1)


def test_another_tolerance_from_the_stored_grams_equals_a_new_measurement():
    arch = _convnet()
    state, x, y = _trained(arch, (2, 8, 8))
    masks = random_masks(arch, 0.6, 3)
    red = redundancy(arch, state, x, y, masks=masks)
    for tol in (1e-2, 0.3):
        again = at_tolerance(arch, red, tol)
        assert again.to_dict() == redundancy(arch, state, x, y, masks=masks, tol=tol).to_dict()
    assert at_tolerance(arch, red, 0.3).freed > red.freed
    with pytest.raises(InvalidArgument, match="a measurement of mlp"):
        at_tolerance(_mlp(), red, 0.1)
    with pytest.raises(InvalidArgument, match="Gram matrices and masks"):
        at_tolerance(arch, dataclasses.replace(red, grams={}), 0.1)


def test_compensation_is_exact_for_overlap():
    arch = _convnet()
    state, x, y = _trained(arch, (2, 8, 8))
    state = _plant(state, arch, "conv1", "duplicate")
    red = redundancy(arch, state, x, y)
    lr = red.layer("conv1")
    assert lr.redundancy == 1
    only = red.params / (red.params - min(p.params_per_unit for p in red.layers
                                          if p.redundancy))
    res = hierarchical_prune(arch, red, only, state=state, compensate=True)
    assert res.removed["conv1"].sum() == 1 and res.removed["conv1"][[1, 3]].any()
    ref = Network(arch, dtype="float64", rng=0)
    ref.load_state_dict(state)
    pruned = Network(arch, res.masks, dtype="float64", rng=0)
    pruned.load_state_dict(res.state)
    np.testing.assert_allclose(pruned.forward(x, train=False), ref.forward(x, train=False),
                               rtol=1e-8, atol=1e-8)
    plain = Network(arch, res.masks, dtype="float64", rng=0)
    plain.load_state_dict(state)
    assert not np.allclose(plain.forward(x, train=False), ref.forward(x, train=False))


def test_skipped_layers_are_named():
    layers, skipped = analysable_layers(get_arch("resnet-20"))
    assert "layer1.0.conv1" in layers and layers["layer1.0.conv1"] == "layer1.0.conv2"
    assert "add" in skipped["layer1.0.conv2"] and "classifier" in skipped["fc"]
    layers, _ = analysable_layers(get_arch("lenet-5"))
    assert layers == {"conv1": "conv2", "conv2": "fc1", "fc1": "fc2", "fc2": "fc3"}
    masks = ones_masks(get_arch("lenet-5"))
    assert total_parameters(get_arch("lenet-5"), masks) > 0
