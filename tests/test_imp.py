import json

import numpy as np
import pytest

import connsim.imp as imp_module
from connsim import get_arch
from connsim.data import make_synthetic
from connsim.imp import imp, prune_survivors
from connsim.train import TrainConfig


def setup():
    data = make_synthetic((1, 6, 6), classes=3, n_train=240, n_test=60, noise=0.8, seed=0)
    arch = get_arch("mlp:36-24-12-3", input_shape=(1, 6, 6))
    cfg = TrainConfig(iterations=30, batch_size=30, lr=0.05, seed=1)
    return arch, data, cfg


@pytest.mark.parametrize("rewind", [0, 10])
def test_levels_shrink_geometrically_and_masks_are_nested(tmp_path, rewind):
    arch, data, cfg = setup()
    records = imp(arch, data, str(tmp_path), levels=3, fraction=0.3, rewind=rewind, config=cfg)
    assert [r["level"] for r in records] == [0, 1, 2, 3]
    dens = [r["direct_density"] for r in records]
    total = arch.total_params
    kept = [round(d * total) for d in dens]
    assert kept[0] == total
    for a, b in zip(kept, kept[1:], strict=False):
        assert b == round(0.7 * a)
    prev = None
    for r in records:
        m = np.load(tmp_path / r["masks"])
        if prev is not None:
            assert all(not (m[k] & ~prev[k]).any() for k in m.files)
        prev = {k: m[k] for k in m.files}
        assert r["effective_density"] <= r["direct_density"] and 0 <= r["test_accuracy"] <= 1


def test_resume_after_a_crash_loses_and_repeats_no_level(tmp_path, monkeypatch):
    arch, data, cfg = setup()
    reference = imp(arch, data, str(tmp_path / "clean"), levels=3, fraction=0.3, config=cfg)
    real_train = imp_module.train
    calls = {"n": 0}

    def crashing_train(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # die while training level 2
            raise KeyboardInterrupt("simulated crash")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(imp_module, "train", crashing_train)
    with pytest.raises(KeyboardInterrupt):
        imp(arch, data, str(tmp_path / "run"), levels=3, fraction=0.3, config=cfg)
    partial = json.loads((tmp_path / "run" / "levels.json").read_text())
    assert [r["level"] for r in partial] == [0, 1]
    monkeypatch.setattr(imp_module, "train", real_train)
    resumed = imp(arch, data, str(tmp_path / "run"), levels=3, fraction=0.3, config=cfg)
    assert [r["level"] for r in resumed] == [0, 1, 2, 3]
    for a, b in zip(resumed, reference, strict=True):
        for key in ("direct_density", "effective_density", "test_accuracy"):
            assert a[key] == b[key]  # deterministic: the resumed run equals an uninterrupted one


def test_prune_survivors_scopes_and_validation():
    arch = get_arch("mlp:4-4-2")
    rng = np.random.default_rng(0)
    w = {n.name: rng.normal(size=arch.weight_shape(n)) for n in arch.layers}
    masks = {n.name: np.ones(arch.weight_shape(n), bool) for n in arch.layers}
    g = prune_survivors(arch, w, masks, 0.5)
    assert sum(int(m.sum()) for m in g.values()) == 12
    layer = prune_survivors(arch, w, masks, 0.5, scope="layerwise")
    assert [int(layer[n].sum()) for n in ("fc1", "fc2")] == [8, 4]
    assert np.abs(w["fc1"][layer["fc1"]]).min() >= np.abs(w["fc1"][~layer["fc1"]]).max()
    with pytest.raises(ValueError, match="fraction"):
        prune_survivors(arch, w, masks, 1.0)
    with pytest.raises(ValueError, match="scope"):
        prune_survivors(arch, w, masks, 0.2, scope="random")


def test_tampered_levels_file_is_refused(tmp_path):
    arch, data, cfg = setup()
    (tmp_path / "levels.json").write_text('[{"level": 1}]')
    with pytest.raises(ValueError, match="in order"):
        imp(arch, data, str(tmp_path), levels=1, config=cfg)
