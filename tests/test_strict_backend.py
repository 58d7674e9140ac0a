"""The trainer on the strict device-array double (tests/strict.py): CuPy's conversion rules on the
CPU, results equal to NumPy's bit for bit, device-to-host transfers counted."""

import numpy as np
import pytest

from connsim import get_arch
from connsim.pruning import prune
from connsim.trainer.backend import get_backend
from connsim.trainer.data import make_synthetic
from connsim.trainer.layers import cross_entropy
from connsim.trainer.loop import TrainConfig, train
from connsim.trainer.network import Network
from connsim.trainer.optim import OPTIMIZERS, SCHEDULES
from connsim.zoo import ZOO
from tests import strict as strict_module
from tests.strict import TRANSFERS, DeviceArray, strict

# conftest.py registers the double as backend "strict"


@pytest.fixture(autouse=True)
def _array_versions(monkeypatch):
    """NumPy runs the array versions too, which the double runs: its fused Numba kernels sum in
    another order and are compared with those versions in test_layers.py (BatchNorm, pooling,
    a sparse layer's products and weight gradient) and test_train.py (SGD)."""
    from connsim.trainer import backend

    monkeypatch.setattr(backend, "_FUSED", [None])


def _masks(arch, density=0.6, seed=1):
    rng = np.random.default_rng(seed)
    return {n.name: rng.random(arch.weight_shape(n)) < density for n in arch.layers}


def _same_state(a, b):
    assert a.network.xp is np and b.network.xp is strict  # the double really ran
    assert isinstance(b.network.ops[b.network.arch.layer_names[0]][0].params["weight"],
                      DeviceArray)
    sa, sb = a.network.state_dict(), b.network.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)  # bit for bit


# ------------------------------------------------------------ the double catches mistakes

def test_double_refuses_implicit_conversion():
    x = strict.asarray(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(x)  # a planted np.asarray on a device array
    with pytest.raises(TypeError, match="NumPy array"):
        x + np.ones(3)  # host and device arrays do not mix
    with pytest.raises(TypeError, match="list"):
        x + [1.0, 2.0, 3.0]  # nor do lists (CuPy: unsupported type)
    assert np.exp(x).get().tolist() == pytest.approx([np.e] * 3)  # NumPy dispatches, as in CuPy


def test_double_refuses_functions_cupy_lacks():
    x = strict.asarray(np.zeros(4))
    with pytest.raises(AttributeError, match="add.at"):
        np.add.at(x, [0, 0], 1.0)  # a planted host-only function
    with pytest.raises(AttributeError, match="cupy.random"):
        strict.random.default_rng(0)
    with pytest.raises(AttributeError, match="numpy.nanmedian"):
        np.nanmedian(x)
    with pytest.raises(AttributeError, match="cupy.lexsort"):
        _ = strict.lexsort


def test_double_counts_transfers():
    strict_module.reset()
    x = strict.asarray(np.arange(4.0))
    assert TRANSFERS == {"to_host": 0, "to_device": 1}
    float(x.sum())
    x.get()
    assert TRANSFERS["to_host"] == 2


# ------------------------------------------------------------ every trainer path on it

SMALL = {"resnet-18": ((3, 32, 32), 10), "vgg-16": ((3, 32, 32), 10),
         "vgg-19": ((3, 32, 32), 10), "vgg-11": ((3, 32, 32), 10), "vgg-13": ((3, 32, 32), 10)}


@pytest.mark.parametrize("name", [n for n in ZOO if not n.startswith("mlp")])
def test_every_zoo_architecture_equals_numpy_bit_for_bit(name):
    shape, classes = SMALL.get(name, (None, None))
    arch = get_arch(name, input_shape=shape, classes=classes)
    data = make_synthetic(arch.input_shape, classes=arch.output.channels, n_train=8, n_test=4,
                          seed=0)
    masks = _masks(arch)
    cfg = {"iterations": 2, "batch_size": 4, "lr": 0.05, "seed": 3}
    a = train(arch, data, masks, TrainConfig(backend="numpy", **cfg))
    b = train(arch, data, masks, TrainConfig(backend="strict", **cfg))
    _same_state(a, b)
    assert a.history == [{**r, "seconds": a.history[k]["seconds"]}
                         for k, r in enumerate(b.history)]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_optimiser_and_schedule(optimizer, schedule):
    arch = get_arch("resnet-20", input_shape=(3, 8, 8), classes=4)
    data = make_synthetic((3, 8, 8), classes=4, n_train=32, n_test=8, seed=0)
    cfg = {"iterations": 4, "batch_size": 8, "lr": 0.05, "seed": 1, "optimizer": optimizer,
           "schedule": schedule, "warmup": 2, "weight_decay": 1e-3, "augment": True}
    masks = _masks(arch, 0.5)
    _same_state(train(arch, data, masks, TrainConfig(backend="numpy", **cfg)),
                train(arch, data, masks, TrainConfig(backend="strict", **cfg)))


def test_batchnorm_eval_pooling_and_residual_forward_backward():
    arch = get_arch("resnet-20", input_shape=(3, 8, 8), classes=4)
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    for train_mode in (True, False):
        nets = [Network(arch, _masks(arch), backend=b, rng=0) for b in ("numpy", "strict")]
        out = []
        for net in nets:
            logits = net.forward(x, train=train_mode)
            loss, g = cross_entropy(net.xp, logits, net.xp.asarray(y))
            net.backward(g)
            out.append((np.asarray(net.xp.asnumpy(logits)) if net.xp is strict else logits,
                        {n: (op.grads["weight"].get() if net.xp is strict
                             else op.grads["weight"]) for n, ops in net.ops.items()
                         for op in ops[:1] if "weight" in op.grads}))
        np.testing.assert_array_equal(out[0][0], out[1][0])
        for k in out[0][1]:
            np.testing.assert_array_equal(out[0][1][k], out[1][1][k])


def test_transfers_per_step_saving_and_loading(tmp_path):
    arch = get_arch("mlp:144-32-16-3", input_shape=(1, 12, 12))
    data = make_synthetic((1, 12, 12), classes=3, n_train=200, n_test=20, seed=0)
    cfg = TrainConfig(iterations=40, batch_size=10, lr=0.05, eval_every=20, backend="strict")
    seen = []
    strict_module.reset()
    res = train(arch, data, _masks(arch), cfg, out_dir=str(tmp_path),
                progress=lambda it, n, rec: seen.append((rec is not None, TRANSFERS["to_host"])))
    steps = np.diff([0] + [h for _, h in seen])
    logged = np.array([r for r, _ in seen])
    # nothing per training step; per logged step one scalar loss and one count per test batch
    assert (steps[~logged] == 0).all()
    assert (steps[logged] == 2).all()
    with np.load(tmp_path / "weights.npz") as f:
        state = {k: f[k] for k in f.files}
    net = Network(arch, backend="strict", rng=5)
    net.load_state_dict(state)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    np.testing.assert_array_equal(res.network.weights()["fc1"], state["fc1.weight"])


@pytest.mark.parametrize("method", ["snip", "iterative-snip", "grasp", "synflow"])
def test_gradient_scores_equal_numpy_bit_for_bit(method):
    arch = get_arch("resnet-20", input_shape=(3, 8, 8), classes=4)
    data = make_synthetic((3, 8, 8), classes=4, n_train=32, n_test=8, seed=0)
    kw = {"data": data, "batch_size": 16, "n_batches": 2, "rounds": 3, "rng": 0}
    a = prune(arch, method, 0.1, **kw)
    strict_module.reset()
    b = prune(arch, method, 0.1, backend="strict", **kw)
    assert TRANSFERS["to_host"] > 0  # the passes really ran on the double
    for n in arch.layer_names:
        np.testing.assert_array_equal(a.masks[n], b.masks[n])


def test_get_backend_knows_registered_names():
    assert get_backend("strict") is strict
    with pytest.raises(ValueError, match="strict"):
        get_backend("jax")
    assert isinstance(strict.zeros(2), DeviceArray)


@pytest.mark.parametrize("rewind", [0, 5])
def test_imp_on_the_double_equals_numpy(tmp_path, rewind):
    from connsim.imp import imp

    arch = get_arch("mlp:36-24-12-3", input_shape=(1, 6, 6))
    data = make_synthetic((1, 6, 6), classes=3, n_train=120, n_test=30, seed=0)
    runs = []
    for backend in ("numpy", "strict"):
        cfg = TrainConfig(iterations=12, batch_size=20, lr=0.05, seed=1, backend=backend)
        strict_module.reset()
        runs.append(imp(arch, data, str(tmp_path / backend), levels=2, fraction=0.4,
                        rewind=rewind, config=cfg))
    assert TRANSFERS["to_device"] > 0
    for a, b in zip(*runs, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == \
            {k: v for k, v in b.items() if k != "seconds"}
