"""InCoP: SAP pruning, the information and gradient flow statistics, stopping rules in IMP rounds."""

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import connsim.stopping as stopping_module
from connsim import get_arch
from connsim._validation import InvalidArgument
from connsim.flow import flow_layers, gradient_flow, information_flow
from connsim.imp import imp
from connsim.masks import ones_masks
from connsim.sap import (
    SapSettings,
    pq_index,
    pruned_count,
    sap_prune,
    sap_ratio,
    sap_trajectory,
)
from connsim.stopping import Monitor, StopRule, train_round
from connsim.trainer.data import make_synthetic
from connsim.trainer.layers import cross_entropy
from connsim.trainer.loop import TrainConfig, Trainer
from connsim.trainer.network import Network
from tests.naive import numeric_grad
from tests.strategies import random_masks

# ----------------------------------------------------------------------------- SAP


def test_closed_forms_of_the_retained_count():
    w = np.random.default_rng(3).standard_normal(5000) * np.linspace(0.1, 2, 5000)
    d = w.size
    m12 = math.ceil(np.abs(w).sum() ** 2 / (w ** 2).sum())  # participation ratio
    assert sap_ratio(w, 1, 2) == pytest.approx(1 - m12 / d, abs=1e-12)
    m051 = math.ceil(np.sqrt(np.abs(w)).sum() ** 2 / np.abs(w).sum())
    assert sap_ratio(w, 0.5, 1) == pytest.approx(1 - m051 / d, abs=1e-12)
    assert pq_index(w, 1, 2) == pytest.approx(1 - np.abs(w).mean() / np.sqrt((w ** 2).mean()))


def test_gaussian_first_ratios():
    w = np.random.default_rng(0).standard_normal(10 ** 6)
    assert sap_ratio(w, 1, 2) == pytest.approx(1 - 2 / math.pi, abs=0.002)  # 0.3634
    assert sap_ratio(w, 0.5, 1) == pytest.approx(1 - math.gamma(0.75) ** 2 / math.sqrt(math.pi),
                                                 abs=0.002)  # 0.1527


def test_ratio_cap_scale_and_eta():
    w = np.r_[100.0, np.full(999, 1e-3)]  # almost all mass on one weight: the ratio wants ~1
    assert sap_ratio(w, 1, 2) == 0.9
    assert sap_ratio(w, 1, 2, max_ratio=0.5) == 0.5
    g = np.random.default_rng(1).standard_normal(10000)
    base = sap_ratio(g, 1, 2)
    assert sap_ratio(g, 1, 2, scale=0.5) == pytest.approx(base / 2, abs=1e-4)
    assert sap_ratio(g, 1, 2, eta=0.5) > base  # eta lowers the retained count
    assert sap_ratio(np.ones(10), 1, 2) == 0.0 and pq_index(np.zeros(5)) == 0.0


def test_pq_index_is_scale_invariant_and_refuses_bad_exponents():
    w = np.random.default_rng(2).standard_normal(100)
    assert pq_index(w * 1e-30) == pytest.approx(pq_index(w)) == pytest.approx(pq_index(w * 1e30))
    for p, q in ((2, 1), (1, 1), (0, 1)):
        with pytest.raises(InvalidArgument, match="p"):
            pq_index(w, p, q)
    with pytest.raises(InvalidArgument, match="NaN"):
        sap_ratio([1.0, np.nan])


@settings(deadline=None, max_examples=25)
@given(data=st.data(), pq=st.sampled_from([(1, 2), (0.5, 1), (1, 3)]))
def test_sap_prune_uses_one_global_threshold_on_the_survivors(data, pq):
    arch = get_arch("mlp:12-9-6-3")
    rng = np.random.default_rng(data.draw(st.integers(0, 10 ** 6)))
    masks = random_masks(arch, data.draw(st.floats(0.05, 1.0)), rng)
    weights = {n.name: rng.standard_normal(arch.weight_shape(n)) * (1 + k)  # layers differ
               for k, n in enumerate(arch.layers)}
    new, ratio = sap_prune(arch, weights, masks, p=pq[0], q=pq[1])
    alive = np.concatenate([np.abs(weights[n])[masks[n].astype(bool)] for n in arch.layer_names])
    assert ratio == pytest.approx(sap_ratio(alive, *pq))
    d = alive.size
    m = math.ceil(alive.sum() ** 2 / (alive ** 2).sum()) if pq == (1, 2) else None
    kept_count = sum(int(m_.sum()) for m_ in new.values())
    if m is not None and 1 - m / d < 0.9:  # the closed form, in integers, when not capped
        assert kept_count == m
    assert kept_count == d - pruned_count(d, ratio)
    kept = np.concatenate([np.abs(weights[n])[new[n].astype(bool)] for n in arch.layer_names])
    gone = np.concatenate([np.abs(weights[n])[masks[n].astype(bool) & ~new[n].astype(bool)]
                           for n in arch.layer_names])
    assert all(not (new[n].astype(bool) & ~masks[n].astype(bool)).any() for n in arch.layer_names)
    if kept.size and gone.size:
        assert kept.min() >= gone.max()  # one threshold over all layers


def test_trajectory_closed_form_matches_pruning_gaussian_weights():
    w = np.random.default_rng(5).standard_normal(200_000)
    for p, q in ((1, 2), (0.5, 1)):
        analytic = sap_trajectory(8, p=p, q=q)
        exact = sap_trajectory(8, w, p=p, q=q)
        np.testing.assert_allclose(analytic, exact, rtol=0.01)
        assert np.all(np.diff(analytic) < 0)
    # far slower than 20 % per round: after 14 rounds LTH keeps 0.8**14 ~ 4.4 %
    assert sap_trajectory(14)[-1] > 3 * 0.8 ** 14


def test_pruned_count_survives_rounding():
    assert 220 * (1 - 142 / 220) < 78 and pruned_count(220, 1 - 142 / 220) == 78
    for d in (7, 220, 10 ** 6 + 3):
        for m in range(1, min(d, 400)):
            assert pruned_count(d, 1 - m / d) == d - m


def test_sap_settings_prune_as_the_function():
    arch = get_arch("mlp:8-6-2")
    rng = np.random.default_rng(0)
    w = {n.name: rng.standard_normal(arch.weight_shape(n)) for n in arch.layers}
    a, ra = SapSettings(p=0.5, q=1).prune(arch, w, ones_masks(arch))
    b, rb = sap_prune(arch, w, ones_masks(arch), p=0.5, q=1)
    assert ra == rb and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(InvalidArgument, match="max_ratio"):
        SapSettings(max_ratio=1.5)


# ----------------------------------------------------------------------------- flow statistics


def _mlp(seed=0):
    arch = get_arch("mlp:6-10-8-4")
    net = Network(arch, rng=seed, dtype="float64")
    rng = np.random.default_rng(seed + 1)
    for _, op, key in net.parameters():  # non-zero biases: pre-activations are not centred
        if key == "bias":
            op.params[key] = rng.standard_normal(op.params[key].shape)
    x = rng.standard_normal((300, 6))
    return arch, net, x


def _naive_kappa(net, x, dead=()):
    """Pre-activations by hand in float64, np.corrcoef between consecutive layers."""
    hs, a = [], x
    for k, name in enumerate(net.arch.layer_names):
        layer = net.ops[name][0]
        h = a @ (layer.params["weight"] * net.masks.get(name, 1)).T + layer.params["bias"]
        hs.append(h)
        a = np.maximum(h, 0) if k < len(net.arch.layer_names) - 1 else h
    out = []
    for i in range(len(hs) - 1):
        z = [(h - h.mean(0)) / np.where(h.std(0) > 0, h.std(0), 1) for h in hs[i:i + 2]]
        for j, name in enumerate(net.arch.layer_names[i:i + 2]):
            for unit in dict(dead).get(name, ()):
                z[j][:, unit] = 0.0
        out.append((z[0].T @ z[1] / len(x)).mean())
    return np.array(out)


def test_information_flow_equals_a_direct_float64_computation():
    _, net, x = _mlp()
    expected = _naive_kappa(net, x)
    np.testing.assert_allclose(information_flow(net, x), expected, rtol=1e-10, atol=1e-12)
    # the streaming merge does not depend on the batching
    np.testing.assert_allclose(information_flow(net, x, batch_size=7), expected, rtol=1e-10,
                               atol=1e-12)
    # and the direct form agrees with np.corrcoef where no unit is constant
    h1 = x @ net.ops["fc1"][0].params["weight"].T + net.ops["fc1"][0].params["bias"]
    h2 = np.maximum(h1, 0) @ net.ops["fc2"][0].params["weight"].T + net.ops["fc2"][0].params["bias"]
    c = np.corrcoef(h1.T, h2.T)[:10, 10:]
    assert expected[0] == pytest.approx(c.mean(), rel=1e-10)


def test_information_flow_is_invariant_to_rescaling_a_unit():
    _, net, x = _mlp()
    before = information_flow(net, x)
    fc1, fc2 = net.ops["fc1"][0], net.ops["fc2"][0]
    for unit, c in ((3, 7.5), (0, 0.01)):  # scale a unit's pre-activation, undo it downstream
        fc1.params["weight"][unit] *= c
        fc1.params["bias"][unit] *= c
        fc2.params["weight"][:, unit] /= c
    np.testing.assert_allclose(information_flow(net, x), before, rtol=1e-9)


def test_constant_units_contribute_zero_without_warnings():
    _, net, x = _mlp()
    fc1 = net.ops["fc1"][0]
    fc1.params["weight"][2] = 0.0  # unit 2 of fc1: its bias only, constant on every input
    fc1.params["weight"][5] = 0.0
    fc1.params["bias"][5] = 0.0  # unit 5: dead, exactly zero
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        phi = information_flow(net, x, batch_size=50)
    assert np.isfinite(phi).all()
    np.testing.assert_allclose(phi, _naive_kappa(net, x, dead={"fc1": (2, 5)}), rtol=1e-10,
                               atol=1e-12)


def _conv_by_loops(x, w, b):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    y = np.zeros((n, o, h - kh + 1, wd - kw + 1))
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            y[:, :, i, j] = np.einsum("nckl,ockl->no", x[:, :, i:i + kh, j:j + kw], w)
    return y + b[None, :, None, None]


def test_information_flow_on_a_conv_net_reads_outputs_before_batchnorm():
    from connsim.architectures import ArchBuilder

    b = ArchBuilder("bnnet", (2, 7, 7))
    b.conv(4, 3, bias=True, batchnorm=True, relu=True)
    b.conv(5, 3, bias=True, batchnorm=True, relu=True)
    b.flatten()
    b.dense(3)
    arch = b.build()
    net = Network(arch, rng=0, dtype="float64")
    rng = np.random.default_rng(0)
    for ops in net.ops.values():  # BatchNorm with non-trivial statistics and a negative scale
        for op in ops[1:]:
            if hasattr(op, "running_mean"):
                op.running_mean = rng.standard_normal(op.running_mean.shape)
                op.running_var = rng.random(op.running_var.shape) + 0.5
                op.params["weight"] = rng.standard_normal(op.params["weight"].shape)
    for _, op, key in net.parameters():
        if key == "bias":
            op.params[key] = rng.standard_normal(op.params[key].shape)
    x = rng.standard_normal((40, 2, 7, 7))
    c1, c2 = net.ops["conv1"], net.ops["conv2"]
    pre1 = _conv_by_loops(x, c1[0].params["weight"], c1[0].params["bias"])
    post1 = np.maximum(c1[1].forward(pre1, train=False), 0)
    pre2 = _conv_by_loops(post1, c2[0].params["weight"], c2[0].params["bias"])
    post2 = np.maximum(c2[1].forward(pre2, train=False), 0).reshape(40, -1)
    fc = net.ops["dense1"][0]
    units = [pre1.mean(axis=(2, 3)), pre2.mean(axis=(2, 3)),
             post2 @ fc.params["weight"].T + fc.params["bias"]]
    expected = []
    for a, b in zip(units, units[1:], strict=False):
        za = (a - a.mean(0)) / a.std(0)
        zb = (b - b.mean(0)) / b.std(0)
        expected.append((za.T @ zb / len(x)).mean())
    np.testing.assert_allclose(information_flow(net, x, batch_size=16), expected, rtol=1e-9)


def test_flow_layers_skip_projection_shortcuts_and_keep_the_classifier():
    arch = get_arch("resnet-20")
    layers = flow_layers(arch)
    assert "layer2.0.shortcut" not in layers and "layer3.0.shortcut" not in layers
    assert layers[0] == "conv1" and layers[-1] == arch.layer_names[-1]
    assert len(layers) == len(arch.layer_names) - 2
    assert flow_layers(get_arch("vgg-16")) == get_arch("vgg-16").layer_names


def _loss(net, x, y):
    logits = net.forward(x, train=False)
    z = logits - logits.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))


def test_gradient_flow_equals_finite_differences():
    arch = get_arch("mlp:5-7-3")
    rng = np.random.default_rng(0)
    masks = ones_masks(arch)
    masks["fc1"][rng.random(masks["fc1"].shape) < 0.4] = 0
    net = Network(arch, masks, rng=0, dtype="float64")
    batches = [(rng.standard_normal((9, 5)), rng.integers(0, 3, 9)) for _ in range(3)]
    expected = np.zeros(2)
    for x, y in batches:  # pruned entries: the loss does not see them, their difference is 0
        for k, name in enumerate(arch.layer_names):
            w = net.ops[name][0].params["weight"]
            expected[k] += np.abs(numeric_grad(lambda x=x, y=y: _loss(net, x, y), w)).mean() \
                / len(batches)
    np.testing.assert_allclose(gradient_flow(net, batches), expected, rtol=1e-6)
    _, g = cross_entropy(np, net.forward(batches[0][0], train=False), batches[0][1])
    assert g.shape == (9, 3)


# ----------------------------------------------------------------------------- stopping rules


def _setup(n_train=400):
    data = make_synthetic((1, 4, 4), classes=3, n_train=n_train, n_test=90, noise=0.8, seed=0)
    arch = get_arch("mlp:16-12-8-3", input_shape=(1, 4, 4))
    cfg = TrainConfig(epochs=1, batch_size=40, lr=0.05, schedule="constant", momentum=0.0, seed=2)
    return arch, data, cfg


def _scripted(monkeypatch, accs, distances):
    """Monitor.accuracy / Monitor.statistic return the scripted values, one per call."""
    accs, distances = iter(accs), iter(distances)
    monkeypatch.setattr(Monitor, "accuracy", lambda self, net: next(accs))
    monkeypatch.setattr(Monitor, "statistic",
                        lambda self, net, dense_reference=False: np.array([next(distances), 0.0]))


@pytest.mark.parametrize("stop, accs, dists, iterations, fired", [
    ("flow", [0.1] * 6, [3, 2, 0.5, 0.1, 0, 0], 3, "flow"),
    ("flow", [0.1] * 6, [1.0] * 6, 6, "cap"),  # strict: a distance equal to eps does not stop
    ("accuracy", [0.8] + [0.9] * 5, [0] * 6, 1, "accuracy"),  # equal to the target stops
    ("flow", [0.9] * 6, [3] * 6, 6, "cap"),  # the accuracy rule is not active
    ("accuracy", [0.1, 0.5, 0.8, 0.9, 0.9, 0.9], [0] * 6, 3, "accuracy"),
    ("flow+accuracy", [0.1, 0.8, 0.9, 0.9, 0.9, 0.9], [3, 3, 3, 0, 0, 0], 2, "accuracy"),
    ("flow+accuracy", [0.1, 0.1, 0.8, 0.9, 0.9, 0.9], [3, 3, 0.99, 0, 0, 0], 3, "flow+accuracy"),
    ("flow+accuracy", [0.1] * 6, [2] * 6, 6, "cap"),
    ("cap", [0.9] * 6, [0] * 6, 6, "cap"),
])
def test_a_rule_fires_exactly_when_its_condition_holds(monkeypatch, stop, accs, dists,
                                                       iterations, fired):
    arch, data, cfg = _setup()
    rule = StopRule(stop=stop, eps=1.0, max_iterations=6, warmup_iterations=1)
    monitor = Monitor(rule, data, cfg.batch_size)
    _scripted(monkeypatch, accs, dists)
    state = Network(arch, rng=0).state_dict()
    warm = {"reference": [0.0, 0.0], "max_accuracy": 0.8}
    _, fields = train_round(arch, monitor, ones_masks(arch), state, cfg, rule, warm)
    assert fields["iterations"] == iterations and fields["stopped_by"] == fired
    assert fields["epochs"] == pytest.approx(iterations)
    if "flow" in rule.rules:
        assert fields["flow_distance"] == pytest.approx(dists[iterations - 1])


def test_authors_options_read_the_test_set_and_the_stale_gradient():
    arch, data, cfg = _setup()
    net = Network(arch, rng=0)
    test_rule = Monitor(StopRule(stop="accuracy", warmup_iterations=1, reference="test"), data, 40)
    from connsim.trainer.loop import evaluate

    assert test_rule.accuracy(net) == evaluate(net, data.x_test, data.y_test)
    held = Monitor(StopRule(stop="accuracy", warmup_iterations=1), data, 40)
    assert held.accuracy(net) == evaluate(net, held.x_val, held.y_val)
    x, y = data.x_train[:40], data.y_train[:40]
    _, g = cross_entropy(np, net.forward(x), y)
    net.backward(g)  # the stale gradient of a "last training batch"
    grads = net.weight_gradients()
    authors = Monitor(StopRule(stop="flow", flow="gf", gf_variant="authors", warmup_iterations=1),
                      data, 40)
    np.testing.assert_allclose(authors.statistic(net, dense_reference=True),
                               [np.linalg.norm(grads[n]) for n in arch.layer_names], rtol=1e-6)
    np.testing.assert_allclose(authors.statistic(net),
                               [np.abs(grads[n]).mean() for n in arch.layer_names], rtol=1e-6)
    assert authors.cost()["statistic_forward_examples"] == 0


def test_stop_rule_settings_are_checked():
    with pytest.raises(InvalidArgument, match="warmup_iterations"):
        StopRule(stop="accuracy")
    with pytest.raises(InvalidArgument, match="warmup_iterations"):
        StopRule(warmup_iterations=3)  # stop='none'
    with pytest.raises(InvalidArgument, match="authors"):
        StopRule(stop="flow", flow="gf", gf_variant="authors")
    with pytest.raises(InvalidArgument, match="stop"):
        StopRule(stop="sometimes")
    arch, data, cfg = _setup()
    with pytest.raises(InvalidArgument, match="rewind"):
        imp(arch, data, "unused", rewind=5, stop=StopRule(stop="cap"))
    with pytest.raises(InvalidArgument, match="pruner"):
        imp(arch, data, "unused", pruner="magic")


def test_trainer_in_steps_equals_one_run():
    arch, data, cfg = _setup()
    cfg = TrainConfig(epochs=3, batch_size=40, lr=0.05, seed=4)
    whole = Trainer(arch, data, None, cfg)
    whole.run()
    steps = Trainer(arch, data, None, cfg)
    for n in (7, 1, 12, 10):  # 30 iterations in uneven pieces, across epoch boundaries
        steps.run(n)
    a, b = whole.network.state_dict(), steps.network.state_dict()
    assert steps.iteration == whole.iteration == 30
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_holdout_is_seeded_disjoint_and_leaves_the_test_set():
    _, data, _ = _setup()
    rest, xv, yv = data.holdout(0.25, seed=3)
    again = data.holdout(0.25, seed=3)
    assert len(yv) == 100 and len(rest.y_train) == 300
    assert np.array_equal(again[1], xv) and np.array_equal(rest.x_test, data.x_test)
    rows = {r.tobytes() for r in data.x_train}
    assert {r.tobytes() for r in xv} | {r.tobytes() for r in rest.x_train} == rows
    assert not {r.tobytes() for r in xv} & {r.tobytes() for r in rest.x_train}


def _strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.parametrize("flow, crash", [("if", "training"), ("gf", "training"),
                                         ("if", "masks"), ("if", "records")])
def test_rounds_resume_after_a_crash_and_repeat_exactly(tmp_path, monkeypatch, flow, crash):
    import connsim.imp as imp_module

    arch, data, cfg = _setup()
    # eps too small to fire: every round runs its three iterations
    rule = StopRule(stop="flow", flow=flow, eps=1e-12, max_iterations=3,
                    warmup_iterations=2, flow_samples=200, gf_batches=2)
    kw = dict(levels=3, config=cfg, pruner="sap", sap=SapSettings(0.5, 1), stop=rule)
    clean = imp(arch, data, str(tmp_path / "clean"), **kw)
    assert all(r["iterations"] == 3 and r["stopped_by"] == "cap" for r in clean)
    again = imp(arch, data, str(tmp_path / "again"), **kw)
    assert _strip(clean) == _strip(again)  # same seed, identical records
    calls = {"n": 0}

    def crashing(real, when):
        def f(*args, **kwargs):
            calls["n"] += 1
            if when(calls["n"], args):
                raise KeyboardInterrupt("simulated crash")
            return real(*args, **kwargs)
        return f

    if crash == "training":  # warm-up 2 calls, round 0 3 calls, then mid-round 1
        monkeypatch.setattr(stopping_module.Trainer, "run",
                            crashing(stopping_module.Trainer.run, lambda n, a: n == 7))
    elif crash == "masks":  # after carry_2.npz, before masks_2.npz
        monkeypatch.setattr(imp_module, "save_masks", crashing(
            imp_module.save_masks, lambda n, a: str(a[0]).endswith("masks_2.npz")))
    else:  # after masks_2.npz, before the record of level 1
        monkeypatch.setattr(imp_module, "write_json", crashing(
            imp_module.write_json, lambda n, a: str(a[0]).endswith("levels.json")
            and len(a[1]) == 2))
    with pytest.raises(KeyboardInterrupt):
        imp(arch, data, str(tmp_path / "run"), **kw)
    monkeypatch.undo()
    partial = json.loads((tmp_path / "run" / "levels.json").read_text())
    assert [r["level"] for r in partial] == [0]
    resumed = imp(arch, data, str(tmp_path / "run"), **kw)
    assert _strip(resumed) == _strip(clean)
    r = clean[1]
    for key in ("iterations", "validation_accuracy", "flow_distance", "flow_statistic",
                "statistic_forward_examples", "overhead_epochs", "active_units", "prune_ratio"):
        assert key in r
    assert all(b["direct_density"] < a["direct_density"] for a, b in zip(clean, clean[1:],
                                                                        strict=False))
    warm = json.loads((tmp_path / "run" / "warmup.json").read_text())
    assert len(warm["accuracies"]) == 2 and warm["max_accuracy"] == max(warm["accuracies"])


def test_rounds_rewind_weights_but_carry_batchnorm_scales(tmp_path):
    data = make_synthetic((3, 8, 8), classes=3, n_train=300, n_test=60, noise=0.8, seed=0)
    arch = get_arch("resnet-20", input_shape=(3, 8, 8), classes=3)
    cfg = TrainConfig(iterations=3, batch_size=30, lr=0.05, schedule="constant", momentum=0.0)
    with pytest.raises(InvalidArgument, match="constant"):
        imp(arch, data, str(tmp_path), config=TrainConfig(iterations=3, batch_size=30),
            stop=StopRule(stop="cap"))
    rule = StopRule(stop="cap", max_iterations=1, warmup_iterations=1)
    imp(arch, data, str(tmp_path), levels=1, config=cfg, pruner="sap", stop=rule)
    carry = np.load(tmp_path / "carry_1.npz")
    rewind = np.load(tmp_path / "rewind.npz")
    assert carry.files and all(".bn." in k for k in carry.files)
    assert not any(k.endswith(".bn.bias") for k in carry.files)  # beta rewinds
    assert any(not np.array_equal(carry[k], rewind[k]) for k in carry.files)
