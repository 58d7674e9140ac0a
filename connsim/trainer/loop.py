"""Training loop: masked training of any zoo architecture on a :class:`~connsim.trainer.data.Dataset`.

Batches, augmentation and initialisation are drawn from NumPy generators seeded by ``seed``, so the
same seed and backend give identical runs. Pruned weights stay exactly zero (masked gradients, and
masks re-applied after every step). A run folder holds ``history.json`` (loss and accuracy curves),
``summary.json``, ``weights.npz`` and ``masks.npz``, each written atomically.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from .._validation import check_choice, check_int, check_real
from ..architectures import Architecture
from ..files import atomic_write, write_json
from ..maskio import save_masks
from ..masks import check_masks, ones_masks
from ..measures import Measurement, measure
from .backend import to_numpy
from .data import Dataset, augment, batches
from .layers import cross_entropy
from .network import Network
from .optim import make_optimizer, make_schedule


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (defaults: the LeNet-300-100 / MNIST setup, shortened).

    Parameters
    ----------
    iterations : int, optional
        Length of the run in iterations, or
    epochs : float, optional
        in epochs (give at most one; default one epoch).
    batch_size : int
        Examples per step; the last incomplete batch of an epoch is dropped.
    lr : float
        Peak learning rate.
    schedule : {'step', 'cosine', 'constant'}
        ``step`` multiplies by ``gamma`` at ``milestones`` (default 50 % and 75 % of the run).
    milestones : tuple of int
        Iterations of the step schedule.
    gamma : float
        Factor of the step schedule.
    warmup : int
        Iterations of a linear warm-up prepended to the schedule.
    optimizer : {'sgd', 'nesterov', 'adam'}
        The optimiser.
    momentum : float
        SGD's momentum.
    weight_decay : float
        Added to every parameter's gradient, as ``torch.optim.SGD`` does.
    augment : bool
        Small rotations (MNIST) or random crops and flips (CIFAR).
    eval_every : int, optional
        Iterations between test evaluations (default: one epoch).
    init : {'kaiming', 'xavier', 'fan-avg', 'uniform'}
        Weight initialisation.
    seed : int
        Seed of the initialisation and of the batches.
    backend : str
        Array backend (``'numpy'``, ``'cupy'`` or a registered one).
    sparse : {'auto', True, False}
        Whether masked dense and conv layers multiply by their kept weights only
        (:class:`connsim.trainer.network.Network`'s ``sparse``): ``'auto'`` on NumPy for large
        layers of at most 5 % density (conv layers only where the Numba kernels run, not under
        ``NUMBA_DISABLE_JIT``); ``False`` always multiplies dense masked weights.

    Raises
    ------
    ValueError
        For both ``iterations`` and ``epochs``, or a value out of its range.

    See Also
    --------
    train : Takes it.

    Examples
    --------
    >>> TrainConfig(epochs=2, lr=0.05, optimizer="adam").schedule
    'step'
    """

    iterations: int | None = None
    epochs: float | None = None
    batch_size: int = 100
    lr: float = 0.1
    schedule: str = "step"
    milestones: tuple = ()
    gamma: float = 0.1
    warmup: int = 0
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-3
    augment: bool = False
    eval_every: int | None = None
    init: str = "kaiming"
    seed: int = 0
    backend: str = "numpy"
    sparse: str | bool = "auto"

    def __post_init__(self):
        from .backend import backend_names
        from .layers import INITS, SPARSE_CHOICES
        from .optim import OPTIMIZERS, SCHEDULES

        if self.iterations is not None and self.epochs is not None:
            raise ValueError("give iterations or epochs, not both")
        if self.iterations is not None:
            check_int(self.iterations, "iterations", 1)
        if self.epochs is not None:
            check_real(self.epochs, "epochs", 0, low_open=True)
        check_int(self.batch_size, "batch_size", 1)
        check_real(self.lr, "lr", 0, low_open=True)
        check_real(self.gamma, "gamma", 0, low_open=True)
        check_int(self.warmup, "warmup", 0)
        check_real(self.momentum, "momentum", 0, 1, high_open=True)
        check_real(self.weight_decay, "weight_decay", 0)
        if self.eval_every is not None:
            check_int(self.eval_every, "eval_every", 1)
        check_int(self.seed, "seed", 0)
        for m in self.milestones:
            check_int(m, "milestones", 1)
        check_choice(self.schedule, SCHEDULES, "schedule")
        check_choice(self.optimizer, OPTIMIZERS, "optimizer")
        check_choice(self.init, INITS, "init")
        check_choice(self.backend, backend_names(), "backend")
        if self.sparse not in SPARSE_CHOICES or not isinstance(self.sparse, (str, bool)):
            raise ValueError(f"sparse must be 'auto', True or False, got {self.sparse!r}")

    def check_data(self, n_train: int) -> None:
        """Raise before any work if the batch size does not fit ``n_train`` examples."""
        if self.batch_size > n_train:
            raise ValueError(f"batch size {self.batch_size} exceeds the {n_train} training "
                             f"examples; choose a batch size of at most {n_train}")

    def total_iterations(self, n_train: int) -> int:
        """Iterations of the run on ``n_train`` examples (``iterations``, else ``epochs`` worth)."""
        self.check_data(n_train)
        per_epoch = max(1, n_train // self.batch_size)
        if self.iterations is not None:
            return int(self.iterations)
        return max(1, math.ceil((self.epochs if self.epochs is not None else 1) * per_epoch))


@dataclass
class TrainResult:
    """What a run produced.

    Attributes
    ----------
    network : Network
        The trained network.
    history : list of dict
        One record per evaluation: iteration, epoch, learning rate, training loss, test accuracy,
        seconds.
    test_accuracy, train_loss : float
        At the end of the run.
    epochs, seconds : float
        The run's length and time.
    measurement : Measurement
        Direct and effective density of the masks trained under.

    See Also
    --------
    train : Returns it.

    Examples
    --------
    >>> from connsim import get_arch
    >>> from connsim.trainer.data import make_synthetic
    >>> data = make_synthetic((1, 4, 4), classes=3, noise=0.5)
    >>> res = train(get_arch("mlp:16-8-3", input_shape=(1, 4, 4)), data,
    ...             config=TrainConfig(epochs=1, batch_size=50, lr=0.05))
    >>> sorted(res.summary("mlp:16-8-3", "synthetic"))[:4]
    ['arch', 'dataset', 'direct', 'effective']
    """

    network: Network
    history: list
    test_accuracy: float
    train_loss: float
    epochs: float
    seconds: float
    measurement: Measurement

    def summary(self, arch: str, dataset: str) -> dict:
        """JSON-ready summary of the run on ``arch`` and ``dataset``."""
        m = self.measurement.to_dict()
        return {"arch": arch, "dataset": dataset, "test_accuracy": self.test_accuracy,
                "train_loss": self.train_loss, "epochs": self.epochs, "seconds": self.seconds,
                "direct": m["direct"], "effective": m["effective"]}


def evaluate(net: Network, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy in evaluation mode.

    Parameters
    ----------
    net : Network
        The network.
    x, y : ndarray
        Inputs and integer labels.
    batch_size : int
        Examples per forward pass (memory only).

    Returns
    -------
    float
        The share of correct predictions.

    See Also
    --------
    train : Evaluates on the test set during a run.

    Examples
    --------
    >>> import numpy as np
    >>> from connsim import get_arch
    >>> net = Network(get_arch("mlp:4-8-3"), rng=0)
    >>> 0.0 <= evaluate(net, np.ones((5, 4), np.float32), np.zeros(5, int)) <= 1.0
    True
    """
    correct = 0
    for k in range(0, len(y), batch_size):
        logits = net.forward(x[k:k + batch_size], train=False)
        correct += int((logits.argmax(axis=1) == net.xp.asarray(y[k:k + batch_size])).sum())
    return correct / len(y)


class Trainer:
    """Masked training that can be advanced in steps (``train`` runs it to the end at once).

    Building a trainer draws the initialisation (or loads ``initial_state``), the batch order and
    the schedule exactly as :func:`train` does, so ``Trainer(...).run()`` and ``train(...)`` give
    identical networks. :meth:`run` with a number of iterations continues where the last call
    stopped (the batch order, optimiser state and schedule carry on), which is how IMP rounds
    with a stopping rule train epoch by epoch (:mod:`connsim.stopping`).

    Parameters are those of :func:`train`; ``log_test=False`` skips the test-set evaluations of
    the history (the caller evaluates what it needs).
    """

    def __init__(self, arch: Architecture, data: Dataset, masks: Mapping | None = None,
                 config: TrainConfig | None = None, *, initial_state: Mapping | None = None,
                 log_test: bool = True, units=None):
        config = self.config = config or TrainConfig()
        if tuple(data.input_shape) != tuple(arch.input_shape):
            raise ValueError(f"data has inputs {data.input_shape} but {arch.name} expects "
                             f"{arch.input_shape}; build the architecture with input_shape="
                             f"{data.input_shape}")
        if data.classes != arch.output.channels:
            raise ValueError(f"data has {data.classes} classes but {arch.name} has "
                             f"{arch.output.channels} outputs")
        config.check_data(len(data.y_train))
        self.arch, self.data, self.log_test = arch, data, log_test
        self.masks = check_masks(arch, masks) if masks is not None else ones_masks(arch)
        self.units = units.check(arch) if units is not None else None
        seeds = np.random.SeedSequence(config.seed).spawn(2)
        self.network = Network(arch, self.masks, backend=config.backend, init=config.init,
                               rng=np.random.default_rng(seeds[0]), units=self.units,
                               sparse=config.sparse)
        if initial_state is not None:
            self.network.load_state_dict(initial_state)
        self.rng = np.random.default_rng(seeds[1])
        self.total = config.total_iterations(len(data.y_train))
        self.per_epoch = max(1, len(data.y_train) // config.batch_size)
        self.schedule = make_schedule(config.schedule, config.lr, self.total,
                                      milestones=config.milestones or (), gamma=config.gamma,
                                      warmup_iters=config.warmup)
        self.optimizer = make_optimizer(config.optimizer, self.network, momentum=config.momentum,
                                        weight_decay=config.weight_decay)
        self.eval_every = config.eval_every or self.per_epoch
        self.history: list = []
        self.iteration = 0
        self.seconds = 0.0
        self._order = iter(())
        xp = self.network.xp
        # the loss is summed on the device and read once per logged step: no transfer per step
        self._loss_sum, self._loss_count = xp.zeros((), dtype="float64"), 0

    def _next_batch(self):
        idx = next(self._order, None)
        if idx is None:  # a new epoch: a fresh permutation from the run's generator
            self._order = batches(len(self.data.y_train), self.config.batch_size, self.rng)
            idx = next(self._order)
        return idx

    def run(self, iterations: int | None = None, *, out_dir: str | None = None,
            progress: Callable | None = None) -> float:
        """Train ``iterations`` more steps (default: to the end of the schedule).

        Returns the mean training loss of these steps. Raises ``FloatingPointError`` when the
        loss diverges.
        """
        end = self.total if iterations is None else self.iteration + check_int(
            iterations, "iterations", 1)
        data, net, config = self.data, self.network, self.config
        xp = net.xp
        run_sum, run_count = xp.zeros((), dtype="float64"), 0
        start = time.perf_counter()
        while self.iteration < end:
            idx = self._next_batch()
            x = data.x_train[idx]
            if config.augment:
                x = augment(x, data.name, self.rng)
            logits = net.forward(x, train=True)
            loss, grad = cross_entropy(xp, logits, xp.asarray(data.y_train[idx]))
            net.backward(grad)
            self.optimizer.step(self.schedule(self.iteration))
            self._loss_sum, self._loss_count = self._loss_sum + loss, self._loss_count + 1
            run_sum, run_count = run_sum + loss, run_count + 1
            self.iteration = it = self.iteration + 1
            record = None
            if it % self.eval_every == 0 or it == self.total or it == end:
                record = self._log(it, start)
                if out_dir is not None:
                    write_json(os.path.join(out_dir, "history.json"), self.history)
            if progress is not None:
                progress(it, self.total, record)
        self.seconds += time.perf_counter() - start
        mean = float(run_sum) / max(1, run_count)
        if not math.isfinite(mean):
            raise FloatingPointError(f"training diverged by iteration {self.iteration} (loss "
                                     f"{mean}); lower the learning rate")
        return mean

    def _log(self, it: int, start: float) -> dict:
        record = {"iteration": it, "epoch": it / self.per_epoch, "lr": self.schedule(it - 1),
                  "train_loss": float(self._loss_sum) / self._loss_count}
        if self.log_test:
            record["test_accuracy"] = evaluate(self.network, self.data.x_test, self.data.y_test)
        record["seconds"] = self.seconds + time.perf_counter() - start
        if not math.isfinite(record["train_loss"]):
            raise FloatingPointError(f"training diverged at iteration {it} (loss "
                                     f"{record['train_loss']}); lower the learning rate")
        self.history.append(record)
        self._loss_sum, self._loss_count = self.network.xp.zeros((), dtype="float64"), 0
        return record

    def result(self) -> TrainResult:
        """The run so far as a :class:`TrainResult` (test accuracy evaluated now)."""
        last = self.history[-1] if self.history else {}
        acc = last.get("test_accuracy")
        if acc is None or last.get("iteration") != self.iteration:
            acc = evaluate(self.network, self.data.x_test, self.data.y_test)
        return TrainResult(self.network, self.history, acc, last.get("train_loss", math.nan),
                           self.iteration / self.per_epoch, self.seconds,
                           measure(self.arch, self.masks, units=self.units))


def train(arch: Architecture, data: Dataset, masks: Mapping | None = None,
          config: TrainConfig | None = None, *, out_dir: str | None = None,
          progress: Callable | None = None, initial_state: Mapping | None = None,
          units=None) -> TrainResult:
    """Train ``arch`` on ``data`` under ``masks`` and evaluate on the test set.

    Parameters
    ----------
    arch : Architecture
        Its input shape and class count must match ``data``.
    data : Dataset
    masks : mapping, optional
        Binary masks (PyTorch layout); dense when omitted.
    config : TrainConfig
    out_dir : str, optional
        Run folder for history, summary, weights and masks.
    progress : callable, optional
        Called as ``progress(iteration, total, record_or_None)`` after every step.
    initial_state : mapping, optional
        Start from these parameters and BatchNorm statistics (``Network.state_dict`` form)
        instead of a fresh initialisation (IMP rewinding); masks are applied to them.
    units : UnitMasks, optional
        Channels/units whose output is multiplied by 0 (:class:`connsim.granularity.UnitMasks`,
        the ``output`` semantics of channel and node pruning); the measurement deletes them.

    Returns
    -------
    TrainResult
        The trained network, its history, final accuracy and loss, and the masks' measurement.

    See Also
    --------
    TrainConfig : The hyper-parameters.
    load_dataset : The data.
    connsim.imp.imp : Training, pruning and rewinding, level after level.

    Examples
    --------
    >>> from connsim import get_arch
    >>> from connsim.trainer.data import make_synthetic
    >>> data = make_synthetic((1, 4, 4), classes=3, noise=0.5)
    >>> arch = get_arch("mlp:16-32-3", input_shape=(1, 4, 4))
    >>> res = train(arch, data, config=TrainConfig(epochs=2, batch_size=50, lr=0.05))
    >>> res.test_accuracy > 0.9
    True
    """
    trainer = Trainer(arch, data, masks, config, initial_state=initial_state, units=units)
    trainer.run(out_dir=out_dir, progress=progress)
    result = trainer.result()
    if out_dir is not None:
        save_run(out_dir, result, arch.name, data.name, trainer.config)
    return result


def save_run(out_dir: str, result: TrainResult, arch: str, dataset: str,
             config: TrainConfig) -> None:
    """Write the run folder (history, summary with the config, final weights and masks)."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "history.json"), result.history)
    summary = result.summary(arch, dataset)
    summary["config"] = asdict(config)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    net = result.network
    save_masks(os.path.join(out_dir, "masks.npz"), {k: to_numpy(v) for k, v in net.masks.items()})
    with atomic_write(os.path.join(out_dir, "weights.npz"), ".npz") as tmp:
        np.savez_compressed(tmp, **net.state_dict())
