"""The granularity study's pieces (docs/granularity.md): groups, excluded layers, unit semantics in
the trainer and in effective accounting, the criteria against slow references, the unit-deletion
theory against Monte Carlo, and IMP at every granularity through a crash."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import connsim.imp as imp_module
from connsim import ArchBuilder, get_arch, ones_masks
from connsim.architectures import from_dict
from connsim.criteria import check_criterion, criterion_scores
from connsim.effective import connectivity
from connsim.granularity import (
    GRANULARITIES,
    UnitMasks,
    expand,
    group_shape,
    prunable_layers,
    unit_masks,
    unit_sites,
)
from connsim.imp import GroupPruning, imp
from connsim.measures import measure
from connsim.orders import GlobalOrder
from connsim.theory import predict
from connsim.trainer.data import make_synthetic
from connsim.trainer.layers import cross_entropy, init_weight
from connsim.trainer.loop import TrainConfig
from connsim.trainer.network import Network
from tests.test_layers import numeric_grad_fn

EXCLUDE = ("fc", "*.shortcut")


def block_net(activation="relu"):
    """A conv stem, one residual block with a projection shortcut, and two dense layers."""
    b = ArchBuilder("block", (2, 6, 6))
    b.conv(3, 3, padding=1, name="stem", bias=True, batchnorm=True, activation=activation)
    b.conv(4, 3, padding=1, stride=2, name="b.conv1", batchnorm=True, activation=activation)
    b.conv(4, 3, padding=1, name="b.conv2", batchnorm=True)
    b.conv(4, 1, stride=2, src="stem", name="b.shortcut", batchnorm=True)
    b.add(["b.conv2", "b.shortcut"], name="b.add", activation=activation)
    b.global_pool(name="gap")
    b.flatten()
    b.dense(5, name="hidden", activation=activation)
    b.dense(3, name="fc", bias=True)
    return b.build()


def test_resnet20_preset_counts_match_the_paper():
    arch = get_arch("resnet-20")
    weights = sum(arch.n_params(n) for n in prunable_layers(arch, "weight", EXCLUDE))
    kernels = sum(int(np.prod(group_shape(arch, n, "kernel")))
                  for n in prunable_layers(arch, "kernel", EXCLUDE))
    channels = sum(arch[n].channels for n in prunable_layers(arch, "channel", EXCLUDE))
    assert (weights, kernels, channels) == (267_696, 29_744, 688)
    sites = unit_sites(arch, "channel", EXCLUDE)
    assert sites["layer1.0.conv2"] == "layer1.0.add" and sites["layer1.0.conv1"] == "layer1.0.conv1"


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("exclude", [(), ("b.shortcut",), ("stem", "b.conv*")])
def test_groups_cover_every_prunable_weight_once(granularity, exclude):
    arch = block_net()
    layers = prunable_layers(arch, granularity, exclude)
    cover = {n: np.zeros(arch.weight_shape(n), dtype=np.int64) for n in arch.layer_names}
    for n in layers:
        shape = group_shape(arch, n, granularity)
        for idx in np.ndindex(shape):
            one = {m: np.zeros(group_shape(arch, m, granularity), bool) for m in arch.layer_names}
            one[n][idx] = True
            for m, w in expand(arch, one, granularity).items():
                cover[m] += w
    for n in arch.layer_names:
        expected = 1 if n in layers else 0
        assert (cover[n] == expected).all(), n
    assert "fc" not in layers or granularity in ("weight", "kernel")
    assert not any(arch[n].op == "conv" for n in layers) or granularity != "node"


def test_exclude_is_checked_and_excluded_layers_are_untouched():
    arch = block_net()
    with pytest.raises(ValueError, match="exclude.*match a layer"):
        prunable_layers(arch, "weight", ("nope*",))
    with pytest.raises(ValueError, match="no hidden dense units"):
        prunable_layers(get_arch("mlp:4-3"), "node")
    rng = np.random.default_rng(0)
    scores = {n: rng.random(group_shape(arch, n, "kernel")) for n in arch.layer_names}
    order = GlobalOrder(arch, scores, granularity="kernel", exclude=EXCLUDE)
    masks = order.masks(order.total // 4)
    assert masks["fc"].all() and masks["b.shortcut"].all()
    assert not masks["b.conv2"].all()


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(["channel", "node"]), st.integers(0, 2**31))
def test_classes_are_never_pruned(granularity, seed):
    arch = block_net()
    rng = np.random.default_rng(seed)
    scores = {n: rng.normal(size=group_shape(arch, n, granularity)) for n in arch.layer_names}
    order = GlobalOrder(arch, scores, granularity=granularity)
    masks = order.masks(int(rng.integers(0, order.total + 1)))
    assert masks["fc"].all()
    if granularity == "node":
        assert all(masks[n].all() for n in ("stem", "b.conv1", "b.conv2", "b.shortcut"))


def test_unit_masks_on_a_flatten_name_its_input_instead():
    arch = get_arch("lenet-5")
    flat = next(n for n in arch.nodes if n.op == "flatten")
    units = UnitMasks({flat.name: np.ones(flat.channels, bool)})
    with pytest.raises(ValueError, match=f"flatten node '{flat.name}'; mask the channels of "
                                         f"the node it flattens \\('{flat.inputs[0]}'\\)"):
        connectivity(arch, ones_masks(arch), units=units)


def test_activation_spec_round_trip_and_errors():
    arch = get_arch("dbsn-mlp")
    assert arch.total_params == 11_965_000
    assert [n.activation for n in arch.layers] == ["scaled-tanh"] * 5 + [""]
    assert from_dict(arch.to_dict()) == arch
    spec = {"name": "x", "input": [4], "layers": [{"type": "dense", "out": 2, "activation": "gelu"}]}
    with pytest.raises(ValueError, match="activation"):
        from_dict(spec)
    w = init_weight((50, 40), "uniform", np.random.default_rng(0))
    assert np.abs(w).max() <= 0.05 and w.std() == pytest.approx(0.05 / np.sqrt(3), rel=0.05)


@pytest.mark.parametrize("position", ["post", "pre"])
@pytest.mark.parametrize("activation", ["relu", "scaled-tanh"])
def test_unit_masks_gradient_check_and_exact_zero_outputs(position, activation):
    arch = block_net(activation)
    rng = np.random.default_rng(3)
    sites = ["stem", "b.conv1", "b.add", "hidden"] if position == "post" else ["hidden"]
    keep = {s: np.arange(arch[s].channels) % 2 == 0 for s in sites}
    units = UnitMasks(keep, position)
    net = Network(arch, rng=1, dtype="float64", units=units)
    for _, layer, key in net.parameters():
        layer.params[key] = rng.normal(0.3, 1.0, layer.params[key].shape)
    x = rng.normal(size=(4, *arch.input_shape))
    labels = np.array([0, 1, 2, 1])
    for u in net.unit_masks.values():
        u.record = True
    _, g = cross_entropy(np, net.forward(x, True), labels)
    for s, u in net.unit_masks.items():  # a masked unit outputs exactly 0
        assert (u.output[:, ~keep[s]] == 0).all() and (u.output[:, keep[s]] != 0).any()
    net.backward(g)

    def f():
        return float(cross_entropy(np, net.forward(x, True), labels)[0])

    for name, layer, key in net.parameters():
        analytic = layer.grads[key].copy()
        host = layer.params[key].copy()

        def f_at(value, layer=layer, key=key):
            layer.params[key] = value
            return f()

        numeric = numeric_grad_fn(f_at, host)
        layer.params[key] = host
        np.testing.assert_allclose(analytic, numeric, atol=1e-6, rtol=1e-4, err_msg=name)
    for s, u in net.unit_masks.items():  # dL/dmask, the unit SNIP score, by finite differences
        net.forward(x, True)
        net.backward(g)
        analytic = u.mask_grad.copy()
        base = u.keep.copy()

        def f_mask(value, u=u):
            u.keep = value
            return f()

        numeric = numeric_grad_fn(f_mask, base.astype(np.float64))
        u.keep = base
        smooth = keep[s] if (position, activation) == ("pre", "relu") else slice(None)
        # (a masked unit before a ReLU sits on its kink: there the derivative is not defined)
        np.testing.assert_allclose(analytic[smooth], numeric[smooth], atol=1e-6, rtol=1e-4,
                                   err_msg=s)


def test_weights_semantics_leave_the_bias_as_a_constant_output_semantics_zero_it():
    arch = get_arch("lenet-300-100", input_shape=(16,))
    group = {n: np.ones(group_shape(arch, n, "channel"), bool) for n in arch.layer_names}
    group["fc1"][:150] = False
    masks = expand(arch, group, "channel")
    x = np.random.default_rng(0).normal(size=(8, 16))
    out = {}
    for sem in ("weights", "output"):
        net = Network(arch, masks, rng=0, dtype="float64",
                      units=unit_masks(arch, masks, "channel", sem))
        net.ops["fc1"][1].params["bias"] = np.full(300, 0.7)  # the BatchNorm shift
        y = x
        for op in net.ops["fc1"]:
            y = op.forward(y, False)
        out[sem] = y
    assert (out["weights"][:, :150] == 0.7).all()  # a constant, not a zero
    assert (out["output"][:, :150] == 0).all() and (out["output"][:, 150:] != 0).any()


def test_output_semantics_delete_the_next_input_slice_and_the_identity_path():
    arch = block_net()
    group = {n: np.ones(group_shape(arch, n, "channel"), bool) for n in arch.layer_names}
    group["b.conv2"][1] = False
    masks = expand(arch, group, "channel")
    plain = connectivity(arch, masks)
    units = unit_masks(arch, masks, "channel", "output")
    deleted = connectivity(arch, masks, units=units)
    assert plain.active("b.add")[1] and not deleted.active("b.add")[1]
    for level in ("channel", "position"):
        m = measure(arch, masks, level=level, units=units)
        eff = connectivity(arch, masks, level=level, units=units).effective
        assert not eff["b.conv2"][1].any() and not eff["b.shortcut"][1].any()
        assert eff["hidden"][:, 1].sum() == 0 and m.effective < measure(arch, masks, level=level).effective
    # the same as a slow reference: delete the unit by hand in a copy of the graph
    keep = units.keep["b.add"]
    manual = dict(masks)
    manual["b.shortcut"] = masks["b.shortcut"] & keep[:, None, None, None]
    manual["hidden"] = masks["hidden"] & keep[None, :]
    ref = connectivity(arch, manual)
    for n in ("stem", "b.conv1", "hidden", "fc"):
        assert (ref.effective[n] == deleted.effective[n]).all(), n


@pytest.mark.parametrize("criterion", ["magnitude", "snip", "stat", "bad-snip"])
@pytest.mark.parametrize("granularity", ["weight", "kernel", "channel", "node"])
def test_criteria_match_slow_references(criterion, granularity):
    if criterion == "stat" and granularity in ("weight", "kernel"):
        with pytest.raises(ValueError, match="stat"):
            check_criterion(criterion, granularity)
        return
    arch = block_net()
    data = make_synthetic(arch.input_shape, classes=3, n_train=64, n_test=8, seed=2)
    rng = np.random.default_rng(4)
    net = Network(arch, rng=5, dtype="float64")
    for _, layer, key in net.parameters():
        layer.params[key] = rng.normal(0.2, 1.0, layer.params[key].shape)
    state = net.state_dict()
    masks = ones_masks(arch)
    sem = "output" if granularity in ("channel", "node") else None
    got = criterion_scores(criterion, arch, state, masks, granularity=granularity, semantics=sem,
                           data=data, samples=40, rng=0)
    idx = np.sort(np.random.default_rng(0).choice(64, 40, replace=False))
    x, y = data.x_train[idx], data.y_train[idx]
    layers = prunable_layers(arch, granularity)
    sites = unit_sites(arch, granularity) if sem else {}
    for n in layers:
        for g in np.ndindex(group_shape(arch, n, granularity)):
            w = state[f"{n}.weight"][g]
            if criterion == "magnitude":
                ref = np.abs(w).mean()
            elif criterion.endswith("snip"):  # |dL/dm| by central differences in float64
                def loss(m, n=n, g=g):
                    if sem:
                        keep = {s: np.ones(arch[s].channels) for s in set(sites.values())}
                        probe = Network(arch, rng=0, dtype="float64",
                                        units=UnitMasks(keep, "pre" if granularity == "node" else "post"))
                        probe.unit_masks[sites[n]].keep[g] = m  # a scaled output, not 0/1
                    else:
                        probe = Network(arch, rng=0, dtype="float64")
                    probe.load_state_dict(state)
                    if not sem:
                        probe.ops[n][0].params["weight"][g] *= m
                    return float(cross_entropy(np, probe.forward(x, True), y)[0])
                ref = abs(loss(1 + 1e-6) - loss(1 - 1e-6)) / 2e-6
                ref = -ref if criterion.startswith("bad-") else ref
            else:  # stat: a plain forward pass read at the site
                keep = {s: np.ones(arch[s].channels) for s in set(sites.values())}
                probe = Network(arch, rng=0, dtype="float64",
                                units=UnitMasks(keep, "pre" if granularity == "node" else "post"))
                probe.load_state_dict(state)
                probe.unit_masks[sites[n]].record = True
                probe.forward(x, False)
                a = probe.unit_masks[sites[n]].output[:, g[0]].reshape(len(x), -1).mean(axis=1)
                ref = -1 / (a.mean() + 1e-8) + a.std(ddof=1)
            assert got[n][g] == pytest.approx(ref, rel=1e-4, abs=1e-6), (n, g)


@pytest.mark.parametrize("name,granularity,semantics", [
    ("mlp:12-30-20-3", "node", None), ("block", "channel", "output"),
    ("block", "channel", "weights"), ("resnet-20", "channel", "output")])
def test_unit_deletion_theory_matches_monte_carlo(name, granularity, semantics):
    arch = block_net() if name == "block" else get_arch(name)
    exclude = EXCLUDE if name == "resnet-20" else ()
    layers = prunable_layers(arch, granularity, exclude)
    rng = np.random.default_rng(11)
    f = {n: (rng.uniform(0.2, 0.8) if n in layers else 1.0) for n in arch.layer_names}
    p = predict(arch, [f[n] for n in arch.layer_names], granularity=granularity,
                semantics=semantics, exclude=exclude)
    n_samples = 150 if name == "resnet-20" else 600
    vals = np.empty((n_samples, len(arch.layer_names)))
    for t in range(n_samples):
        group = {n: rng.random(group_shape(arch, n, granularity)) < f[n] for n in arch.layer_names}
        masks = expand(arch, group, granularity)
        m = measure(arch, masks, units=unit_masks(arch, masks, granularity, semantics, exclude))
        vals[t] = [lm.effective for lm in m.layers]
    mean, se = vals.mean(axis=0), vals.std(axis=0, ddof=1) / np.sqrt(n_samples)
    tol = 4 * np.maximum(se, 1e-9) + 1e-9
    assert (np.abs(p.expected_effective - mean) <= tol).all(), (p.expected_effective, mean, se)
    total = vals.sum(axis=1)
    assert abs(p.expected_effective_params - total.mean()) <= 4 * total.std(ddof=1) / np.sqrt(n_samples)


def test_unit_deletion_theory_checks_its_densities():
    arch = get_arch("mlp:12-30-20-3")
    with pytest.raises(ValueError, match="densities"):
        predict(arch, [0.5, 0.5, 0.5], granularity="node")
    with pytest.raises(ValueError, match="semantics"):
        predict(arch, [0.5, 0.5, 1.0], granularity="node", semantics="weights")


@pytest.mark.parametrize("granularity,criterion", [
    ("weight", "magnitude"), ("kernel", "snip"), ("channel", "stat"), ("node", "bad-magnitude")])
def test_group_imp_resumes_after_a_crash(tmp_path, monkeypatch, granularity, criterion):
    arch = block_net()
    data = make_synthetic(arch.input_shape, classes=3, n_train=120, n_test=30, seed=0)
    cfg = TrainConfig(iterations=8, batch_size=30, lr=0.05, seed=1)
    groups = GroupPruning(0.3, granularity, criterion,
                          semantics="output" if granularity == "channel" else None,
                          exclude=("fc",) if granularity != "node" else (), samples=40)
    reference = imp(arch, data, str(tmp_path / "clean"), levels=2, config=cfg, groups=groups)
    real_train = imp_module.train
    calls = {"n": 0}

    def crashing_train(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(imp_module, "train", crashing_train)
    with pytest.raises(KeyboardInterrupt):
        imp(arch, data, str(tmp_path / "run"), levels=2, config=cfg, groups=groups)
    assert len(json.loads((tmp_path / "run" / "levels.json").read_text())) == 1
    monkeypatch.setattr(imp_module, "train", real_train)
    resumed = imp(arch, data, str(tmp_path / "run"), levels=2, config=cfg, groups=groups)
    assert [r["level"] for r in resumed] == [0, 1, 2]
    for a, b in zip(resumed, reference, strict=True):
        for key in ("direct_density", "effective_density", "test_accuracy", "group_density"):
            assert a[key] == b[key]
    assert resumed[2]["group_density"] == pytest.approx(0.3, abs=0.15)  # rounding of 5 units
    last = np.load(tmp_path / "run" / resumed[2]["masks"])
    if granularity != "node":
        assert last["fc"].all()
    with pytest.raises(ValueError, match="other settings"):
        imp(arch, data, str(tmp_path / "run"), levels=2, config=cfg,
            groups=GroupPruning(0.5, granularity, criterion, semantics=groups.semantics,
                                exclude=groups.exclude, samples=40))
