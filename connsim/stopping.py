"""Stopping rules inside IMP rounds (InCoP, Gharatappeh & Sekeh 2025), and the warm-up they need.

In round mode (any ``stop`` but ``'none'``) an IMP round trains *iteration by iteration*, one
iteration being the training configuration's ``epochs`` (or ``iterations``), at most
``max_iterations`` of them. After each iteration the validation accuracy and, for the flow rule,
the flow statistic (:mod:`connsim.flow`) are measured, and the round stops when a rule fires:

``flow``
    ``||s - s_dense||_2 < eps``, ``s`` the information flow ``phi`` (``flow='if'``) or gradient
    flow ``gamma`` (``flow='gf'``) of the pruned network, ``s_dense`` the dense network's at the
    rewind point.
``accuracy``
    The validation accuracy is back to the best one seen during the warm-up.
``cap``
    ``max_iterations`` iterations ran (always active; ``stop='cap'`` uses only it, the fixed
    schedule of the LTH and SAP baselines).

The warm-up trains the dense network ``warmup_iterations`` iterations, evaluating after each; its
end state is the rewind point and its best validation accuracy the accuracy rule's target.

The validation split is carved from the training set by a seeded permutation
(:meth:`~connsim.trainer.data.Dataset.holdout`, seed 0, the same for every run seed) and the
network trains on the rest; the test set is only reported (``reference='test'`` reproduces the
original code's use of the test set, not recommended). The information flow is computed on a fixed
subset of ``flow_samples`` examples of the training split (seed 1); the gradient flow on the first
``gf_batches`` batches of the validation split. ``gf_variant='authors'`` reproduces the original
code instead: the stale gradient of the last training batch, its per-layer L2 norms as the dense
reference and its mean magnitudes during rounds.

Cost accounting: every evaluation and statistic pass is counted in examples (forward, and backward
for the gradient flow), and ``overhead_epochs`` converts what the rule needs to training epochs
assuming a training example costs three forward passes (forward plus a backward of twice the
cost); validation passes count only when the accuracy rule is active.

The configuration's ``epochs`` (or ``iterations``) is the length of one iteration; a round's
schedule must be constant (rounds of different lengths would otherwise see different rates).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from ._validation import InvalidArgument, check_choice, check_fraction, check_int, check_real
from .architectures import Architecture
from .flow import flow_layers, gradient_flow, information_flow
from .trainer.data import Dataset
from .trainer.loop import TrainConfig, Trainer, evaluate

__all__ = [
    "StopRule",
]


STOPS = ("none", "cap", "flow", "accuracy", "flow+accuracy")
FLOWS = ("if", "gf")
GF_VARIANTS = ("held-out", "authors")
REFERENCES = ("validation", "test")


@dataclass(frozen=True)
class StopRule:
    """How IMP rounds train and when they stop (see the module docstring).

    Parameters
    ----------
    stop : {'none', 'cap', 'flow', 'accuracy', 'flow+accuracy'}
        ``'none'``: every level trains the configuration's full schedule (plain IMP).
    flow : {'if', 'gf'}
        The flow statistic of the ``flow`` rule.
    eps : float
        The flow rule's threshold on ``||s - s_dense||_2``.
    max_iterations : int
        ``K_max``, iterations per round.
    warmup_iterations : int
        ``W``, dense iterations before round 0; their end state is the rewind point.
    validation : float
        Share of the training set held out for validation.
    flow_samples : int
        Training examples the information flow is computed on.
    gf_batches : int
        Held-out batches the gradient flow averages over.
    gf_variant : {'held-out', 'authors'}
    reference : {'validation', 'test'}
        The accuracy the accuracy rule watches.

    Raises
    ------
    ValueError
        For a value out of its range or an unknown name (checked when made).

    See Also
    --------
    connsim.imp.imp : Takes it as ``stop``.
    connsim.flow : The flow statistics.

    Examples
    --------
    >>> rule = StopRule(stop="flow+accuracy", flow="gf", eps=0.5, warmup_iterations=2)
    >>> rule.stop, rule.max_iterations
    ('flow+accuracy', 10)
    """

    stop: str = "none"
    flow: str = "if"
    eps: float = 1.0
    max_iterations: int = 10
    warmup_iterations: int = 0
    validation: float = 0.1
    flow_samples: int = 10000
    gf_batches: int = 10
    gf_variant: str = "held-out"
    reference: str = "validation"

    def __post_init__(self):
        check_choice(self.stop, STOPS, "stop")
        check_choice(self.flow, FLOWS, "flow")
        check_real(self.eps, "eps", 0, low_open=True)
        check_int(self.max_iterations, "max_iterations", 1)
        check_int(self.warmup_iterations, "warmup_iterations", 0)
        check_fraction(self.validation, "validation", open=True)
        check_int(self.flow_samples, "flow_samples", 2)
        check_int(self.gf_batches, "gf_batches", 1)
        check_choice(self.gf_variant, GF_VARIANTS, "gf_variant")
        check_choice(self.reference, REFERENCES, "reference")
        if self.stop == "none" and self.warmup_iterations:
            raise InvalidArgument("warmup_iterations", "0 with stop='none'",
                                  self.warmup_iterations,
                                  "a warm-up needs round mode (stop='cap' for fixed rounds); "
                                  "plain IMP rewinds with rewind=ITERATIONS instead")
        if "accuracy" in self.rules and not self.warmup_iterations:
            raise InvalidArgument("warmup_iterations", ">= 1 with the accuracy rule", 0,
                                  "the accuracy rule stops at the warm-up's best accuracy")
        if "flow" in self.rules and self.flow == "gf" and self.gf_variant == "authors" \
                and not self.warmup_iterations:
            raise InvalidArgument("warmup_iterations", ">= 1 with gf_variant='authors'", 0,
                                  "the authors' variant reads the last warm-up batch's gradient")

    @property
    def rounds(self) -> bool:
        """Whether rounds train iteration by iteration (any ``stop`` but ``'none'``)."""
        return self.stop != "none"

    @property
    def rules(self) -> frozenset:
        """The rules that may end a round early (``'flow'``, ``'accuracy'``)."""
        return frozenset(r for r in self.stop.split("+") if r in ("flow", "accuracy"))

    def to_dict(self) -> dict:
        """JSON-ready settings."""
        return asdict(self)


def bn_carry(network) -> dict:
    """BatchNorm scales and running statistics: what a round does *not* rewind."""
    return {k: v for k, v in network.state_dict().items()
            if ".bn." in k and not k.endswith(".bn.bias")}


class Monitor:
    """The held-out data, flow data and cost counters of round-mode IMP.

    Parameters
    ----------
    rule : StopRule
    data : Dataset
        The full dataset; :attr:`train` is the part the network trains on.
    batch_size : int
        Batch size of the gradient flow's held-out batches.
    """

    def __init__(self, rule: StopRule, data: Dataset, batch_size: int):
        self.rule = rule
        self.train, self.x_val, self.y_val = data.holdout(rule.validation, seed=0)
        self.data = data
        n = len(self.train.y_train)
        pick = np.random.default_rng(1).permutation(n)[:min(n, rule.flow_samples)]
        self.x_flow = self.train.x_train[np.sort(pick)]
        b = min(batch_size, len(self.y_val))
        self.gf_batches = [(self.x_val[k:k + b], self.y_val[k:k + b])
                           for k in range(0, b * min(rule.gf_batches, len(self.y_val) // b), b)]
        self.reset()

    def reset(self) -> None:
        """Zero the cost counters."""
        self.validation_examples = 0
        self.forward_examples = 0
        self.backward_examples = 0

    def cost(self) -> dict:
        """Counters, and their total in training epochs (a training example = 3 forward passes).

        Validation passes count only when the accuracy rule needs them (every arm evaluates the
        validation set after each iteration for its record)."""
        needed = self.validation_examples if "accuracy" in self.rule.rules else 0
        forward = needed + self.forward_examples + 2 * self.backward_examples
        return {"validation_examples": self.validation_examples,
                "statistic_forward_examples": self.forward_examples,
                "statistic_backward_examples": self.backward_examples,
                "overhead_epochs": forward / (3 * len(self.train.y_train))}

    def accuracy(self, net) -> float:
        """Accuracy on the validation split (or the test set with ``reference='test'``)."""
        if self.rule.reference == "test":
            x, y = self.data.x_test, self.data.y_test
        else:
            x, y = self.x_val, self.y_val
        self.validation_examples += len(y)
        return evaluate(net, x, y)

    def test_accuracy(self, net) -> float:
        """Test accuracy (reported only; not counted as a cost of the rule)."""
        return evaluate(net, self.data.x_test, self.data.y_test)

    def statistic(self, net, dense_reference: bool = False) -> np.ndarray:
        """The flow statistic of ``net`` (``dense_reference``: the authors' GF reference form)."""
        rule = self.rule
        if rule.flow == "if":
            self.forward_examples += len(self.x_flow)
            return information_flow(net, self.x_flow)
        if rule.gf_variant == "authors":  # the last training batch's stale gradient
            grads = net.weight_gradients()
            xp = net.xp
            if dense_reference:
                return np.array([float(xp.sqrt((grads[n] ** 2).sum()))
                                 for n in net.arch.layer_names])
            return np.array([float(xp.abs(grads[n]).mean()) for n in net.arch.layer_names])
        n = sum(len(y) for _, y in self.gf_batches)
        self.forward_examples += n
        self.backward_examples += n
        return gradient_flow(net, self.gf_batches)


def warm_up(arch: Architecture, monitor: Monitor, config: TrainConfig, rule: StopRule,
            initial_state: dict) -> tuple[dict, dict]:
    """Train the dense network ``warmup_iterations`` iterations from ``initial_state``.

    Returns the rewind state and the warm-up's record: validation accuracy after each iteration,
    their maximum (the accuracy rule's target), epochs, the dense reference statistic, costs.
    """
    monitor.reset()
    steps = config.total_iterations(len(monitor.train.y_train))
    w = rule.warmup_iterations
    trainer = Trainer(arch, monitor.train, None,
                      replace(config, iterations=steps * max(1, w), epochs=None),
                      initial_state=initial_state, log_test=False)
    accs = []
    for _ in range(w):
        trainer.run(steps)
        accs.append(monitor.accuracy(trainer.network))
    net = trainer.network
    reference = monitor.statistic(net, dense_reference=True) if "flow" in rule.rules else None
    layers = list(flow_layers(arch) if rule.flow == "if" else arch.layer_names)
    units = {n.name: n.channels for n in arch.layers}
    record = {"iterations": w, "epochs": trainer.iteration / trainer.per_epoch,
              "accuracies": accs, "max_accuracy": max(accs) if accs else None,
              "reference": None if reference is None else reference.tolist(),
              "flow_layers": layers, "units": [units[n] for n in layers],
              "seconds": trainer.seconds, **monitor.cost()}
    return net.state_dict(), record


def train_round(arch: Architecture, monitor: Monitor, masks: dict, state: dict,
                config: TrainConfig, rule: StopRule, warmup: dict):
    """Train one round from ``state`` under ``masks`` until a rule fires or the cap is reached.

    Returns the trained network and the round's fields: ``iterations``, ``epochs``,
    ``stopped_by`` (``'flow'``, ``'accuracy'``, ``'flow+accuracy'`` or ``'cap'``),
    ``validation_accuracy``, ``flow_distance`` and ``flow_statistic`` (last check, or None), costs.
    """
    monitor.reset()
    steps = config.total_iterations(len(monitor.train.y_train))
    trainer = Trainer(arch, monitor.train, masks,
                      replace(config, iterations=steps * rule.max_iterations, epochs=None),
                      initial_state=state, log_test=False)
    reference = None if warmup["reference"] is None else np.asarray(warmup["reference"])
    start = time.perf_counter()
    fired, stat, distance, acc = "cap", None, None, None
    for _ in range(rule.max_iterations):
        trainer.run(steps)
        acc = monitor.accuracy(trainer.network)
        hits = []
        if "flow" in rule.rules:
            stat = monitor.statistic(trainer.network)
            distance = float(np.linalg.norm(stat - reference))
            if distance < rule.eps:
                hits.append("flow")
        if "accuracy" in rule.rules and acc >= warmup["max_accuracy"]:
            hits.append("accuracy")
        if hits:
            fired = "+".join(hits)
            break
    return trainer.network, {
        "iterations": trainer.iteration // steps, "epochs": trainer.iteration / trainer.per_epoch,
        "stopped_by": fired, "validation_accuracy": acc, "flow_distance": distance,
        "flow_statistic": None if stat is None else stat.tolist(),
        "seconds": time.perf_counter() - start, **monitor.cost()}
