import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import connsim.imp as imp_module
from connsim import get_arch
from connsim.imp import imp, prune_survivors
from connsim.trainer.data import make_synthetic
from connsim.trainer.loop import TrainConfig


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
    imp(arch, data, str(tmp_path), levels=0, config=cfg)
    (tmp_path / "levels.json").write_text('[{"level": 1}]')
    with pytest.raises(ValueError, match="in order"):
        imp(arch, data, str(tmp_path), levels=1, config=cfg)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match="no config.json"):
        imp(arch, data, str(tmp_path), levels=1, config=cfg)


def test_resume_with_other_settings_is_refused(tmp_path):
    # regression: a resume with other arguments silently built a hybrid run
    arch, data, cfg = setup()
    imp(arch, data, str(tmp_path), levels=1, fraction=0.3, config=cfg)
    before = (tmp_path / "levels.json").read_text()
    for kwargs, key in [({"fraction": 0.5}, "fraction"), ({"scope": "layerwise"}, "scope"),
                        ({"rewind": 5}, "rewind"),
                        ({"config": replace(cfg, lr=0.01)}, "train")]:
        args = {"levels": 2, "fraction": 0.3, "config": cfg} | kwargs
        with pytest.raises(ValueError, match=f"other settings.*{key}"):
            imp(arch, data, str(tmp_path), **args)
    with pytest.raises(ValueError, match=r"train\.lr: 0\.05 in the folder, 0\.01 now"):
        imp(arch, data, str(tmp_path), levels=2, fraction=0.3, config=replace(cfg, lr=0.01))
    with pytest.raises(ValueError, match="data_sha256"):  # standardised, or other files
        imp(arch, data.standardized(), str(tmp_path), levels=2, fraction=0.3, config=cfg)
    other = get_arch("mlp:36-20-3", input_shape=(1, 6, 6))
    with pytest.raises(ValueError, match="arch"):
        imp(other, data, str(tmp_path), levels=2, fraction=0.3, config=cfg)
    assert (tmp_path / "levels.json").read_text() == before  # nothing was touched


def test_the_sparse_switch_is_stored_only_when_set(tmp_path):
    """Run folders made before TrainConfig had ``sparse`` (no such key) still resume with the
    default; a run that sets it records it and refuses a resume without it."""
    arch, data, cfg = setup()
    imp(arch, data, str(tmp_path / "auto"), levels=1, fraction=0.3, config=cfg)
    with open(tmp_path / "auto" / "config.json") as f:
        assert "sparse" not in json.load(f)["train"]
    imp(arch, data, str(tmp_path / "auto"), levels=2, fraction=0.3, config=cfg)  # resumes
    imp(arch, data, str(tmp_path / "off"), levels=1, fraction=0.3,
        config=replace(cfg, sparse=False))
    with open(tmp_path / "off" / "config.json") as f:
        assert json.load(f)["train"]["sparse"] is False
    with pytest.raises(ValueError, match=r"train\.sparse: False in the folder, None now"):
        imp(arch, data, str(tmp_path / "off"), levels=2, fraction=0.3, config=cfg)


def test_finished_run_extends_with_more_levels(tmp_path):
    arch, data, cfg = setup()
    reference = imp(arch, data, str(tmp_path / "once"), levels=3, fraction=0.3, config=cfg)
    imp(arch, data, str(tmp_path / "twice"), levels=1, fraction=0.3, config=cfg)
    extended = imp(arch, data, str(tmp_path / "twice"), levels=3, fraction=0.3, config=cfg)
    assert [r["level"] for r in extended] == [0, 1, 2, 3]
    for a, b in zip(extended, reference, strict=True):
        assert a["direct_density"] == b["direct_density"] and a["test_accuracy"] == b["test_accuracy"]


def test_concurrent_run_on_one_folder_is_refused(tmp_path):
    arch, data, cfg = setup()
    code = ("import sys, time; from connsim.imp import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match="in use by another"):
            imp(arch, data, str(tmp_path), levels=1, config=cfg)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert not (tmp_path / "levels.json").exists()
    assert len(imp(arch, data, str(tmp_path), levels=0, config=cfg)) == 1  # lock died with it


def test_stale_temp_files_are_removed_on_the_next_run(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".tmp-connsim-{dead}-abc.npz"
    stale.write_bytes(b"partial")
    mine = tmp_path / f".tmp-connsim-{os.getpid()}-xyz.npz"  # a live process's: kept
    mine.write_bytes(b"in progress")
    arch, data, cfg = setup()
    imp(arch, data, str(tmp_path), levels=0, config=cfg)
    assert not stale.exists() and mine.exists()


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    arch, data, cfg = setup()
    for kwargs in ({"fraction": 1.5}, {"levels": -2}, {"rewind": -3}, {"scope": "random"}):
        with pytest.raises(ValueError):
            imp(arch, data, str(tmp_path / "run"), config=cfg, **kwargs)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="batch size"):
        imp(arch, data, str(tmp_path / "run"), config=replace(cfg, batch_size=1000))
    assert not (tmp_path / "run").exists()


def test_corrupt_run_files_give_clean_errors(tmp_path):
    arch, data, cfg = setup()
    imp(arch, data, str(tmp_path), levels=0, config=cfg)
    raw = bytearray((tmp_path / "rewind.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "rewind.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="rewind.npz"):
        imp(arch, data, str(tmp_path), levels=1, config=cfg)
    (tmp_path / "levels.json").write_text('{"level": 0}')
    with pytest.raises(ValueError, match="in order"):
        imp(arch, data, str(tmp_path), levels=1, config=cfg)
