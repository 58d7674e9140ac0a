import importlib.util

import numpy as np
import pytest

from connsim import get_arch
from connsim.trainer.backend import get_backend, to_numpy
from connsim.trainer.data import make_synthetic
from connsim.trainer.loop import TrainConfig, train


def _gpu_available() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        get_backend("cupy")
    except ImportError:
        return False
    return True


def test_numpy_backend_and_errors():
    assert get_backend("numpy") is np
    assert isinstance(to_numpy(np.ones(2)), np.ndarray)
    with pytest.raises(ValueError, match="backend must be"):
        get_backend("jax")
    if importlib.util.find_spec("cupy") is None:
        with pytest.raises(ImportError, match=r"connsim\[gpu\]"):
            get_backend("cupy")


@pytest.mark.skipif(not _gpu_available(), reason="CuPy with a GPU is not available here")
def test_cupy_matches_numpy():
    data = make_synthetic((3, 8, 8), classes=4, n_train=128, n_test=64, seed=0)
    arch = get_arch("resnet-20", input_shape=(3, 8, 8), classes=4)
    masks = {n.name: np.random.default_rng(1).random(arch.weight_shape(n)) < 0.5
             for n in arch.layers}
    cfg = dict(iterations=10, batch_size=32, lr=0.05, seed=2)
    a = train(arch, data, masks, TrainConfig(backend="numpy", **cfg))
    b = train(arch, data, masks, TrainConfig(backend="cupy", **cfg))
    for k, v in a.network.state_dict().items():
        np.testing.assert_allclose(v, b.network.state_dict()[k], rtol=1e-3, atol=1e-4)
    for name, w in b.network.weights().items():
        assert (w[~masks[name]] == 0).all()
