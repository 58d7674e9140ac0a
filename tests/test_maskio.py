import os
import pickle
import zipfile

import numpy as np
import pytest

from connsim import get_arch, ones_masks
from connsim.maskio import MaskFileError, load_masks, masks_from_arrays, save_masks
from connsim.masks import to_layout
from connsim.safepickle import UnsafePickleError
from tests.conftest import random_masks


def assert_masks_equal(a, b):
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("layout", ["torch", "keras"])
def test_roundtrip(tmp_path, suffix, layout):
    arch = get_arch("lenet-5")
    masks = random_masks(arch, 0.2, 0)
    path = tmp_path / f"m{suffix}"
    save_masks(path, masks, layout=layout)
    assert_masks_equal(load_masks(path, arch, layout=layout), masks)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left


def test_torch_prune_api_file(data_dir):
    arch = get_arch("mlp:6-5-4-3")
    got = load_masks(os.path.join(data_dir, "mlp_prune_api.pt"), arch)
    with np.load(os.path.join(data_dir, "mlp_prune_api_expected.npz")) as f:
        assert_masks_equal(got, {k: f[k] for k in f.files})


def test_torch_checkpoint_with_weights_inferred(data_dir):
    arch = get_arch("lenet-5")
    got = load_masks(os.path.join(data_dir, "lenet5_ckpt.pth"), arch)
    with np.load(os.path.join(data_dir, "lenet5_ckpt_expected.npz")) as f:
        assert_masks_equal(got, {k: f[k] for k in f.files})


def test_mapping_by_name_with_suffixes_beats_order():
    arch = get_arch("mlp:4-4-4")
    a, b = np.eye(4, dtype=bool), np.ones((4, 4), bool)
    # names given in reverse order with torch suffixes; mask entries win over weights
    arrays = {"fc2.weight": np.zeros((4, 4)), "fc2.weight_mask": b.astype(np.float32),
              "fc1.weight": a * 0.3, "fc1.bias": np.ones(4)}
    got = masks_from_arrays(arch, arrays)
    np.testing.assert_array_equal(got["fc1"], a)
    np.testing.assert_array_equal(got["fc2"], b)


def test_mismatch_lists_expected_and_found():
    arch = get_arch("lenet-5")
    with pytest.raises(MaskFileError, match=r"(?s)expected: conv1 \(6, 3, 5, 5\).*found:    w \(3, 3\)"):
        masks_from_arrays(arch, {"w": np.ones((3, 3))})


def test_nan_weights_rejected():
    arch = get_arch("mlp:2-2")
    with pytest.raises(MaskFileError, match="NaN"):
        masks_from_arrays(arch, {"fc1.weight": np.full((2, 2), np.nan)})


def test_truncated_files_fail_cleanly(tmp_path, data_dir):
    arch = get_arch("lenet-5")
    path = tmp_path / "m.npz"
    save_masks(path, ones_masks(arch))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MaskFileError, match="truncated"):
        load_masks(path, arch)
    with open(os.path.join(data_dir, "lenet5_ckpt.pth"), "rb") as f:
        src = f.read()
    pt = tmp_path / "m.pth"
    pt.write_bytes(src[: len(src) // 2])
    with pytest.raises(MaskFileError):
        load_masks(pt, arch)
    with pytest.raises(FileNotFoundError):
        load_masks(tmp_path / "missing.npz", arch)
    other = tmp_path / "m.txt"
    other.write_text("x")
    with pytest.raises(MaskFileError, match="unknown mask file type"):
        load_masks(other, arch)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _torch_like_zip(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    _torch_like_zip(path, pickle.dumps({"fc1.weight": _Evil()}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        load_masks(path, get_arch("mlp:2-2"))
    assert not (tmp_path / "pwned.txt").exists()
    _torch_like_zip(path, pickle.dumps({"fc1.weight": eval}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"(__builtin__|builtins)\.eval"):
        load_masks(path, get_arch("mlp:2-2"))


def test_tampered_tensor_metadata(tmp_path, data_dir):
    # a pickle that asks for a view beyond its storage
    path = tmp_path / "tampered.pt"
    with zipfile.ZipFile(os.path.join(data_dir, "mlp_prune_api.pt")) as src, \
            zipfile.ZipFile(path, "w") as z:
        names = src.namelist()
        pkl_name = next(n for n in names if n.endswith("data.pkl"))
        pkl = src.read(pkl_name)
        bad = pkl.replace(b"K\x05K\x06\x86", b"K\x50K\x06\x86", 1)  # size (5, 6) -> (80, 6)
        assert bad != pkl
        for n in names:
            z.writestr(n, bad if n == pkl_name else src.read(n))
    with pytest.raises(MaskFileError, match="outside its storage"):
        load_masks(path, get_arch("mlp:6-5-4-3"))


def test_save_rejects_unknown_suffix_and_keeps_old_file(tmp_path):
    arch = get_arch("mlp:2-2")
    path = tmp_path / "m.npz"
    save_masks(path, ones_masks(arch))
    before = path.read_bytes()
    with pytest.raises(ValueError, match=".npz or .safetensors"):
        save_masks(tmp_path / "m.h5", ones_masks(arch))
    with pytest.raises(ValueError, match="reuse mask names"):
        save_masks(path, ones_masks(arch), extra={"fc1": np.zeros(2)})
    assert path.read_bytes() == before


def test_keras_layout_file():
    arch = get_arch("lenet-5")
    masks = random_masks(arch, 0.5, 3)
    keras = {k: to_layout(v, "keras") for k, v in masks.items()}
    assert_masks_equal(masks_from_arrays(arch, keras, layout="keras"), masks)


def test_load_weights_prefers_weights_and_recognises_a_run_state(tmp_path, data_dir):
    from connsim.maskio import load_weights
    from connsim.network import Network

    arch = get_arch("mlp:6-5-4-3")
    w, state = load_weights(os.path.join(data_dir, "mlp_prune_api.pt"), arch)
    assert state == {}  # a plain state dict: weights only
    assert all((v != 0).all() for v in w.values())  # weight_orig, not the pruned weight_mask
    net = Network(arch, rng=0)
    path = tmp_path / "weights.npz"
    np.savez(path, **net.state_dict())
    w2, state2 = load_weights(path, arch)
    np.testing.assert_array_equal(w2["fc2"], net.weights()["fc2"])
    assert set(state2) == set(net.state_dict())
    bad = tmp_path / "nan.npz"
    np.savez(bad, **{k: (np.full_like(v, np.nan) if v.ndim == 2 else v)
                     for k, v in net.state_dict().items()})
    with pytest.raises(MaskFileError, match="NaN"):
        load_weights(bad, arch)
