"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

Each level trains the network under the current mask from the rewind point, records its
accuracy and its direct and effective density, and prunes a fraction of the surviving weights
by magnitude (global or per layer) to form the next level's mask. The rewind point is the
initialisation (``rewind=0``) or the weights and BatchNorm statistics after ``rewind`` iterations
of dense training; every level then trains with the full schedule again.

A run folder makes the run resumable: ``config.json`` (everything that defines the run except the
number of levels), ``rewind.npz`` (the rewind state), ``masks_L.npz`` (the mask of level L) and
``levels.json`` (one record per finished level). A level's successor mask is written before its
record is appended, each file atomically, so an interrupted run restarted with the same folder
repeats no recorded level and loses none. The successor of the last level is written too, so a
finished run can be extended by asking for more levels.

With ``pruner='sap'`` the share pruned per level comes from the PQ index of the survivors
(:mod:`connsim.sap`); ``fraction`` and ``scope`` are LTH's and unused. With a
:class:`~connsim.stopping.StopRule` (round mode, InCoP) a warm-up sets the rewind point
(``warmup.json`` holds its record) and each level trains iteration by iteration until its rule
fires; BatchNorm scales and running statistics carry over between rounds (``carry_L.npz``, written
before ``masks_L.npz``).

With :class:`GroupPruning` (Heyman & Zylberberg 2024) the unit of pruning is a group of a
granularity (weight, kernel, channel, node) and the ranking a criterion of :mod:`connsim.criteria`:
level ``k`` keeps ``keep^(k/levels)`` of the prunable groups (globally ranked, or that share of
every layer), so level ``levels`` keeps ``keep``. Under the output unit semantics the masked units'
outputs are zeroed in training and deleted in the measurement (:class:`~connsim.granularity.UnitMasks`,
derived from each level's masks).

A resume with a different configuration (architecture, data, fraction, rewind point, scope,
training settings) is refused with the differing keys named; a second run on a folder that another
run holds (an exclusive lock on ``.lock``) is refused rather than interleaved.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ._validation import InvalidArgument, check_choice, check_fraction, check_int, check_real
from .architectures import Architecture
from .criteria import check_criterion, criterion_scores
from .files import atomic_write, clean_stale_temps, exclusive_lock, write_json
from .flow import flow_layers
from .granularity import (
    check_exclude,
    check_granularity,
    check_semantics,
    prunable_layers,
    to_groups,
    unit_masks,
)
from .maskio import load_masks, read_npz, save_masks
from .masks import ones_masks
from .measures import measure
from .orders import GlobalOrder, LayerwiseOrder, topk_masks
from .pruning import SCOPES as PRUNE_SCOPES
from .sap import SapSettings
from .stopping import Monitor, StopRule, bn_carry, train_round, warm_up
from .trainer.data import Dataset, holdout_size
from .trainer.loop import TrainConfig, train
from .trainer.network import Network

__all__ = [
    "GroupPruning", "imp", "prune_survivors",
]


SCOPES = tuple(s for s in PRUNE_SCOPES if s != "layer-matched")  # IMP has no reference mask
PRUNERS = ("lth", "sap")


def prune_survivors(arch: Architecture, weights: dict, masks: dict, fraction: float,
                    scope: str = "global") -> dict:
    """Remove ``fraction`` of the surviving weights with the smallest magnitude.

    The magnitude step of IMP (Frankle & Carbin 2019): one global ranking, or the same fraction of
    every layer.

    Parameters
    ----------
    arch : Architecture
        The network.
    weights : dict of str to ndarray
        The trained weights, PyTorch layout.
    masks : dict of str to ndarray of bool
        The current masks; only kept weights are ranked.
    fraction : float
        Share of the surviving weights to remove, in [0, 1].
    scope : {'global', 'layerwise'}
        One ranking over all layers, or ``fraction`` of every layer.

    Returns
    -------
    dict of str to ndarray of bool
        The next level's masks, subsets of ``masks``.

    See Also
    --------
    imp : Trains, prunes with this step and rewinds, level after level.

    Examples
    --------
    >>> from connsim import get_arch, ones_masks
    >>> from connsim.trainer import Network
    >>> arch = get_arch("mlp:4-8-3")
    >>> masks = prune_survivors(arch, Network(arch, rng=0).weights(), ones_masks(arch), 0.5)
    >>> sum(int(m.sum()) for m in masks.values())
    28
    """
    _check_fraction(fraction)
    _check_scope(scope)
    scores = {n: np.where(masks[n], np.abs(weights[n]), -1.0) for n in arch.layer_names}
    if scope == "global":
        kept = sum(int(m.sum()) for m in masks.values())
        return GlobalOrder(arch, scores).masks(round((1 - fraction) * kept))
    counts = [round((1 - fraction) * int(masks[n].sum())) for n in arch.layer_names]
    return topk_masks(arch, scores, counts)


@dataclass(frozen=True)
class GroupPruning:
    """IMP at a granularity with a criterion (module docstring; ``docs/granularity.md``).

    Parameters
    ----------
    keep : float
        Share of the prunable groups kept after the last level (the preservation rate).
    granularity : {'weight', 'kernel', 'channel', 'node'}
    criterion : str
        A criterion of :mod:`connsim.criteria` (``magnitude``, ``snip``, ``stat``, ``random``,
        ``bad-...``), evaluated on each level's trained network under its masks.
    semantics : {'weights', 'output'}, optional
        Unit semantics at channel granularity (node: always output).
    exclude : tuple of str
        Layer-name patterns never pruned (``('fc', '*.shortcut')``).
    samples : int
        Training examples read by ``snip`` and ``stat``.

    Raises
    ------
    ValueError
        For a ``keep`` outside (0, 1], an unknown granularity, criterion or semantics.

    See Also
    --------
    imp : Takes it as ``groups``.
    connsim.criteria.criterion_scores : The criteria.

    Examples
    --------
    >>> GroupPruning(0.1, "node", "snip")
    GroupPruning(keep=0.1, granularity='node', criterion='snip', semantics='output', exclude=(), samples=2000)
    """

    keep: float
    granularity: str = "weight"
    criterion: str = "magnitude"
    semantics: str | None = None
    exclude: tuple = field(default_factory=tuple)
    samples: int = 2000

    def __post_init__(self):
        check_real(self.keep, "keep", 0, 1, low_open=True,
                   fix="the share of the prunable groups kept at the last level, in (0, 1]")
        check_granularity(self.granularity)
        check_criterion(self.criterion, self.granularity)
        object.__setattr__(self, "semantics", check_semantics(self.granularity, self.semantics))
        exclude = self.exclude.split(",") if isinstance(self.exclude, str) else self.exclude
        object.__setattr__(self, "exclude", tuple(p.strip() for p in exclude if p.strip()))
        check_int(self.samples, "samples", 1)

    def to_dict(self) -> dict:
        """JSON form (stored in the run's ``config.json``)."""
        return asdict(self)

    def units(self, arch: Architecture, masks: dict):
        """The unit masks that go with ``masks`` (None unless output semantics)."""
        return unit_masks(arch, masks, self.granularity, self.semantics, self.exclude)

    def prune(self, arch: Architecture, state: dict, masks: dict, level: int, levels: int,
              scope: str, data: Dataset, seed: int) -> dict:
        """The masks of level ``level`` (keeping ``keep^(level/levels)`` of the groups) from the
        trained ``state`` and the current ``masks``: survivors ranked by the criterion."""
        scores = criterion_scores(self.criterion, arch, state, masks,
                                  granularity=self.granularity, semantics=self.semantics,
                                  exclude=self.exclude, data=data, samples=self.samples,
                                  rng=np.random.default_rng([seed, level]))
        alive = to_groups(arch, masks, self.granularity, "sum")
        scores = {n: np.where(alive[n] > 0, scores[n], -np.inf) for n in arch.layer_names}
        share = self.keep ** (level / max(1, levels))
        layers = prunable_layers(arch, self.granularity, self.exclude)
        if scope == "global":
            order = GlobalOrder(arch, scores, granularity=self.granularity, exclude=self.exclude)
            return order.masks(round(share * order.total))
        order = LayerwiseOrder(arch, scores, granularity=self.granularity, exclude=self.exclude)
        sizes = [scores[n].size for n in layers]
        return order.masks_from_counts([round(share * n) for n in sizes])


def _check_fraction(fraction) -> float:
    return check_fraction(fraction, "fraction", open=True,
                          fix="the share of the surviving weights each level removes")


def _check_scope(scope) -> str:
    return check_choice(scope, SCOPES, "scope", "'global' ranks all layers together, "
                                                "'layerwise' prunes each layer by the fraction")


def run_lock(out_dir: str):
    """Hold an exclusive lock on ``out_dir`` (released when the process ends, also on a crash)."""
    return exclusive_lock(os.path.join(out_dir, ".lock"),
                          f"run folder {out_dir!r} is in use by another connsim imp run; wait "
                          "for it to finish or use another --out")


def _check_config(out_dir: str, config: dict) -> None:
    """Write ``config.json`` on a new run; refuse to resume one made with another config."""
    path = os.path.join(out_dir, "config.json")
    if not os.path.exists(path):
        if os.path.exists(os.path.join(out_dir, "levels.json")):
            raise ValueError(f"run folder {out_dir!r} has levels but no config.json (made by an "
                             "older connsim?); remove it or use another --out")
        write_json(path, config)
        return
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path!r} is unreadable ({e}); remove the folder to start over") from None
    normal = json.loads(json.dumps(config))  # tuples as lists, as they were stored
    if old != normal:
        was, now = _flat(old), _flat(normal)
        for d in (was, now):  # SAP's settings are stored only with --pruner sap
            d["pruner"] = "sap" if any(k.startswith("sap.") for k in d) else "lth"
        keys = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
        if "pruner" in keys:  # name the pruner, not each of SAP's settings
            keys = [k for k in keys if not k.startswith("sap.")]
        detail = "; ".join(f"{k}: {was.get(k)!r} in the folder, {now.get(k)!r} now"
                           for k in keys[:6]) + ("; ..." if len(keys) > 6 else "")
        raise ValueError(f"run folder {out_dir!r} was made with other settings ({detail}); "
                         "re-run with the same settings to resume (only --levels may change), "
                         "or use another --out")


def _flat(obj, prefix: str = "") -> dict:
    """Nested dicts as one dict with dotted keys (``train.lr``), for naming what differs."""
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def data_fingerprint(data: Dataset) -> str:
    """SHA-256 of a dataset's arrays: any other source, subset or preprocessing (standardising,
    another ``--data-dir``) gives another fingerprint."""
    h = hashlib.sha256(data.name.encode())
    for a in (data.x_train, data.y_train, data.x_test, data.y_test):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _read_levels(out_dir: str) -> list:
    path = os.path.join(out_dir, "levels.json")
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            records = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path!r} is unreadable ({e}); remove the folder to start over") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records) \
            or [r.get("level") for r in records] != list(range(len(records))):
        raise ValueError(f"{path!r} does not list levels 0, 1, ... in order; refusing to resume")
    return records


def imp(arch: Architecture, data: Dataset, out_dir: str, *, levels: int = 5,
        fraction: float = 0.2, rewind: int = 0, scope: str = "global",
        config: TrainConfig | None = None, progress: Callable | None = None,
        pruner: str = "lth", sap: SapSettings | None = None,
        stop: StopRule | None = None, groups: GroupPruning | None = None) -> list:
    """Run (or resume) IMP for ``levels`` pruning levels; returns the level records.

    Parameters
    ----------
    arch : Architecture
    data : Dataset
    out_dir : str
        Run folder; an existing one is resumed.
    levels : int
        Number of pruned levels after the dense level 0 (records 0 .. levels).
    fraction : float
        ``pruner='lth'``: fraction of the surviving weights removed per level.
    rewind : int
        Rewind to initialisation (0) or to the state after this many iterations of dense training
        (plain IMP; in round mode the warm-up sets the rewind point).
    scope : {'global', 'layerwise'}
        ``pruner='lth'``: one magnitude ranking over all layers, or ``fraction`` of every layer.
    config : TrainConfig
        Training of every level; in round mode, of one *iteration* of a round.
    progress : callable, optional
        Called as ``progress(level, record)`` after each finished level.
    pruner : {'lth', 'sap'}
        Magnitude pruning by ``fraction``, or the PQ-index-driven ratio of :mod:`connsim.sap`.
    sap : SapSettings, optional
        SAP's parameters (default ``p=1, q=2``).
    stop : StopRule, optional
        Round mode with a warm-up and a stopping rule (:mod:`connsim.stopping`); default: plain
        IMP, every level training the full schedule.
    groups : GroupPruning, optional
        Prune groups of a granularity by a criterion, level ``k`` keeping ``keep^(k/levels)`` of
        them (plain IMP with ``pruner='lth'`` only; ``fraction`` is then unused).

    Returns
    -------
    list of dict
        Per level: ``level``, ``masks`` (file name), ``direct_density``, ``effective_density``,
        ``direct_compression``, ``effective_compression`` (None when disconnected),
        ``test_accuracy``, ``epochs``, ``seconds``, ``prune_ratio`` (the share of the survivors
        removed to form the next level's mask) and ``stopped_by`` (``'schedule'`` in plain IMP).
        Round mode adds ``iterations``, ``validation_accuracy``, ``flow_distance``,
        ``flow_statistic``, the per-layer ``active_units`` of the flow's layers, and the cost
        counters (``validation_examples``, ``statistic_forward_examples``,
        ``statistic_backward_examples``, ``overhead_epochs``); ``warmup.json`` holds the warm-up.
        With ``groups``: ``group_density``, the kept share of the prunable groups.

    See Also
    --------
    prune_survivors : The magnitude step of plain IMP.
    connsim.stopping.StopRule : Round mode and its stopping rules.
    connsim.sap.SapSettings : SAP's parameters.
    GroupPruning : IMP at a granularity.

    Examples
    --------
    >>> import tempfile
    >>> from connsim import get_arch
    >>> from connsim.trainer.data import make_synthetic
    >>> data = make_synthetic((1, 4, 4), classes=3, noise=0.5, n_train=600)
    >>> arch = get_arch("mlp:16-32-3", input_shape=(1, 4, 4))
    >>> rule = StopRule(stop="flow+accuracy", warmup_iterations=2, max_iterations=3, eps=0.5)
    >>> records = imp(arch, data, tempfile.mkdtemp(), levels=2, pruner="sap", stop=rule,
    ...               config=TrainConfig(epochs=1, batch_size=50, lr=0.05, momentum=0,
    ...                                  schedule="constant"))
    >>> [r["stopped_by"] in ("flow", "accuracy", "flow+accuracy", "cap") for r in records]
    [True, True, True]
    """
    config = config or TrainConfig()
    stop = stop or StopRule()
    check_int(levels, "levels", 0)
    _check_fraction(fraction)
    check_int(rewind, "rewind", 0)
    _check_scope(scope)
    check_choice(pruner, PRUNERS, "pruner", "'lth' removes --fraction by magnitude, 'sap' "
                                            "the PQ-index ratio")
    sap = sap or SapSettings()
    if stop.rounds:
        _check_rounds(arch, data, config, stop, rewind)
    if groups is not None:
        if pruner != "lth" or stop.rounds:
            raise InvalidArgument("groups", "used in plain IMP (pruner='lth', no stopping rule)",
                                  got=f"pruner={pruner!r}, stop={stop.stop!r}",
                                  fix="group pruning replaces LTH's magnitude step; drop the SAP "
                                      "pruner or the stopping rule")
        check_exclude(arch, groups.exclude)
    config.check_data(len(data.y_train))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"run folder {out_dir!r} is an existing file; give a folder")
    os.makedirs(out_dir, exist_ok=True)
    settings = {
        "arch": arch.to_dict(), "dataset": data.name, "n_train": int(len(data.y_train)),
        "n_test": int(len(data.y_test)), "data_sha256": data_fingerprint(data),
        "fraction": float(fraction), "rewind": int(rewind),
        "scope": scope, "train": asdict(config)}
    if config.sparse == "auto":  # stored only when set: older run folders stay resumable
        del settings["train"]["sparse"]
    if pruner != "lth":  # only what differs from plain IMP: older run folders stay resumable
        settings["sap"] = sap.to_dict()
    if stop.rounds:
        settings["stop"] = stop.to_dict()
    if groups is not None:
        settings["groups"] = groups.to_dict()

    def prune(net, masks, level):
        """The next masks, and the share of the survivors they remove."""
        if groups is not None:
            nxt = groups.prune(arch, net.state_dict(), masks, level + 1, levels, scope, data,
                               config.seed)
        elif pruner == "sap":
            nxt = sap.prune(arch, net.weights(), masks)[0]
        else:
            nxt = prune_survivors(arch, net.weights(), masks, fraction, scope)
        kept = sum(int(m.sum()) for m in masks.values())
        return nxt, (1 - sum(int(m.sum()) for m in nxt.values()) / kept) if kept else 0.0

    with run_lock(out_dir):
        clean_stale_temps(out_dir)
        _check_config(out_dir, settings)
        records = _read_levels(out_dir)[:levels + 1]
        run = _Rounds(arch, data, out_dir, config, stop) if stop.rounds else \
            _Plain(arch, data, out_dir, config, rewind, groups)
        for level in range(len(records), levels + 1):
            mask_file = f"masks_{level}.npz"
            mask_path = os.path.join(out_dir, mask_file)
            if level == 0 and not os.path.exists(mask_path):
                save_masks(mask_path, ones_masks(arch))
            masks = load_masks(mask_path, arch)
            net, fields = run.level(level, masks)
            m = measure(arch, masks, units=groups.units(arch, masks) if groups else None)
            # the successor of the last level too: a finished run can be extended with more levels
            nxt, ratio = prune(net, masks, level)
            run.carry(level + 1, net)
            save_masks(os.path.join(out_dir, f"masks_{level + 1}.npz"), nxt)
            record = {"level": level, "masks": mask_file, "direct_density": m.density,
                      "effective_density": m.effective_density,
                      "direct_compression": m.compression,
                      "effective_compression": None if m.disconnected else m.effective_compression,
                      **fields, "prune_ratio": ratio}
            if groups is not None:
                record["group_density"] = _group_density(arch, masks, groups)
            if stop.rounds:
                active = {lm.name: lm.active_out for lm in m.layers}
                record["active_units"] = [active[n] for n in run.warmup["flow_layers"]]
            records.append(record)
            write_json(os.path.join(out_dir, "levels.json"), records)
            if progress is not None:
                progress(level, record)
        return records


def _group_density(arch: Architecture, masks: dict, groups: GroupPruning) -> float:
    """Kept share of the prunable groups of ``masks``."""
    alive = to_groups(arch, masks, groups.granularity, "sum")
    layers = prunable_layers(arch, groups.granularity, groups.exclude)
    return sum(int((alive[n] > 0).sum()) for n in layers) / sum(alive[n].size for n in layers)


def _check_rounds(arch, data, config, stop, rewind) -> None:
    """Refuse, before any work, what round mode cannot do."""
    if rewind:
        raise InvalidArgument("rewind", "0 with a stopping rule", rewind,
                              "in round mode the warm-up (warmup_iterations, CLI "
                              "--warmup-iterations) sets the rewind point")
    if config.schedule != "constant" or config.warmup or config.milestones:
        raise InvalidArgument("schedule", "'constant' without warm-up or milestones in round "
                              "mode", config.schedule,
                              "rounds stop after a varying number of iterations, so a schedule "
                              "over the round would differ between arms; use --schedule constant")
    if "flow" in stop.rules and stop.flow == "if" and len(flow_layers(arch)) < 2:
        raise InvalidArgument("flow", "'gf' on a network with one hooked layer", stop.flow,
                              "the information flow needs two consecutive conv or dense layers; "
                              "use the gradient flow (--flow gf)")
    n = len(data.y_train) - holdout_size(len(data.y_train), stop.validation)
    if config.batch_size > n:
        raise InvalidArgument("validation", f"small enough to leave a batch of "
                              f"{config.batch_size} to train on", stop.validation,
                              f"the split leaves {n} training examples; lower --validation or "
                              "--batch-size")


class _Plain:
    """Plain IMP: every level trains the full schedule from the rewind state."""

    def __init__(self, arch, data, out_dir, config, rewind, groups=None):
        self.arch, self.data, self.config, self.groups = arch, data, config, groups
        rewind_path = os.path.join(out_dir, "rewind.npz")
        if os.path.exists(rewind_path):
            self.state = read_npz(rewind_path)
            return
        if rewind > 0:  # late rewinding: the state after `rewind` iterations of dense training
            warm = train(arch, data, None, replace(config, iterations=rewind, epochs=None))
            self.state = warm.network.state_dict()
        else:  # the initialisation train() itself would draw for this seed
            seed = np.random.SeedSequence(config.seed).spawn(2)[0]
            self.state = Network(arch, init=config.init,
                                 rng=np.random.default_rng(seed)).state_dict()
        _save_state(rewind_path, self.state)

    def level(self, level, masks):
        units = self.groups.units(self.arch, masks) if self.groups else None
        res = train(self.arch, self.data, masks, replace(self.config, seed=self.config.seed + level),
                    initial_state=self.state, units=units)
        return res.network, {"test_accuracy": res.test_accuracy, "epochs": res.epochs,
                             "seconds": res.seconds, "stopped_by": "schedule"}

    def carry(self, level, net):
        """Plain IMP rewinds everything: nothing carries over."""


class _Rounds:
    """Round mode: warm-up, then rounds that stop by rule; BatchNorm scales and running statistics
    carry over from round to round (``carry_L.npz``), everything else rewinds to the warm-up's end.
    """

    def __init__(self, arch, data, out_dir, config, stop):
        self.arch, self.config, self.stop, self.out_dir = arch, config, stop, out_dir
        self.monitor = Monitor(stop, data, config.batch_size)
        rewind_path = os.path.join(out_dir, "rewind.npz")
        warm_path = os.path.join(out_dir, "warmup.json")
        if os.path.exists(rewind_path) and os.path.exists(warm_path):
            self.state = read_npz(rewind_path)
            with open(warm_path) as f:
                self.warmup = json.load(f)
            return
        seed = np.random.SeedSequence(config.seed).spawn(2)[0]
        init = Network(arch, init=config.init, rng=np.random.default_rng(seed)).state_dict()
        self.state, self.warmup = warm_up(arch, self.monitor, config, stop, init)
        write_json(warm_path, self.warmup)
        _save_state(rewind_path, self.state)

    def level(self, level, masks):
        state = dict(self.state)
        carry = os.path.join(self.out_dir, f"carry_{level}.npz")
        if level > 0 and os.path.exists(carry):
            state.update(read_npz(carry))
        net, fields = train_round(self.arch, self.monitor, masks, state,
                                  replace(self.config, seed=self.config.seed + level), self.stop,
                                  self.warmup)
        return net, {"test_accuracy": self.monitor.test_accuracy(net), **fields}

    def carry(self, level, net):
        """Save what the next round does not rewind (before its mask: a resume finds both)."""
        _save_state(os.path.join(self.out_dir, f"carry_{level}.npz"), bn_carry(net))


def _save_state(path: str, state: dict) -> None:
    with atomic_write(path, ".npz") as tmp:
        np.savez(tmp, **state)
