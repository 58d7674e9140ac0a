"""The NumPy/CuPy trainer: backends, layers, networks, optimisers, datasets and the training loop.

The connectivity core of connsim (graphs, effective masks, theory, quotas) never imports this
subpackage; the pruning methods and IMP use it through :class:`Network` (``docs/rationale.md``).

Examples
--------
>>> from connsim import get_arch
>>> from connsim.trainer import Network
>>> Network(get_arch("mlp:4-8-3"), rng=0).forward([[1.0, 0.0, 0.0, 1.0]]).shape
(1, 3)
"""

from .backend import backend_names, get_backend, register_backend, to_numpy
from .data import Dataset, load_dataset
from .loop import TrainConfig, TrainResult, evaluate, train
from .network import Network

__all__ = [
    "Dataset", "Network", "TrainConfig", "TrainResult", "backend_names", "evaluate",
    "get_backend", "load_dataset", "register_backend", "to_numpy", "train",
]
