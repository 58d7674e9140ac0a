"""The task kinds of a study: each a pure function of its configuration.

A study (:mod:`connsim.study`) expands into tasks; a task is a kind and a flat configuration
(``arch``, ``rule``, ``compression``, ``seed``, ...). :func:`execute` runs one on a Dask worker and
returns its result columns. The same configuration always gives the same result: every random
choice is seeded from the configuration's ``seed``.

Each :class:`Kind` names its inputs with their defaults (``REQUIRED`` when a study must give one)
and the result columns it returns, so that a study file is checked before anything runs and the
results database knows its columns. Inputs that are costly to build and shared by many tasks (a
dataset, a designed quota) are cached per worker process.

Kinds
-----
predict
    The theory (:func:`connsim.predict`) for a quota rule at a compression.
montecarlo
    Monte Carlo of random pruning under a quota (:func:`connsim.monte_carlo`), with the theory.
measure
    One random mask drawn from a quota, measured at channel or position level.
prune
    A pruning method at initialisation (:func:`connsim.prune`), measured.
train
    A pruning method at initialisation, then training (:func:`connsim.trainer.loop.train`).
imp
    Iterative magnitude pruning (:func:`connsim.imp.imp`); the last level's figures.

The quota rule ``designed`` stands for :func:`connsim.design_quota` at the task's density
(objective ``effective``, started from IGQ).
"""

from __future__ import annotations

import functools
import math
import os
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from ._validation import (
    InvalidArgument,
    check_choice,
    check_compression,
    check_int,
    check_level,
    check_samples,
)

REQUIRED = object()  # marks an input a study must give
DESIGNED = "designed"


@dataclass(frozen=True)
class Kind:
    """A task kind: its function, its inputs with their defaults, and its result columns."""

    name: str
    run: Callable
    inputs: dict
    results: tuple[str, ...]
    doc: str = ""


# ------------------------------------------------------------------------- input checks


def _arch(value, name):
    from .zoo import get_arch

    if not isinstance(value, str):
        raise InvalidArgument(name, "an architecture name", value, "see 'connsim arch --list'")
    try:
        get_arch(value)
    except (ValueError, KeyError) as e:
        raise InvalidArgument(name, "a zoo architecture", value, str(e.args[0])) from None
    return value


def _rule(value, name):
    from .quotas import check_rule

    if value == DESIGNED:
        return value
    if not isinstance(value, str):
        raise InvalidArgument(name, "a quota rule name", value)
    check_rule(value)
    return value


def _method(value, name):
    from .scores import METHODS

    return check_choice(value, METHODS, name)


def _choices(*names):
    return lambda value, name: check_choice(value, names, name)


def _bool(value, name):
    if not isinstance(value, bool):
        raise InvalidArgument(name, "true or false", value)
    return value


def _int(low=0):
    return lambda value, name: check_int(value, name, low=low)


def _real(low=0.0, high=None, **kw):
    from ._validation import check_real

    return lambda value, name: check_real(value, name, low=low, high=high, **kw)


def _text(value, name):
    if not isinstance(value, str):
        raise InvalidArgument(name, "a string", value)
    return value


def _optional(check):
    return lambda value, name: value if value is None or value == "" else check(value, name)


def _backend(value, name):
    from .trainer.backend import backend_names

    return check_choice(value, backend_names(), name)


def _library_names(module: str, attr: str):
    """A choice among a tuple the library defines (``connsim.MODULE.ATTR``)."""
    def check(value, name):
        from importlib import import_module

        return check_choice(value, getattr(import_module(f"connsim.{module}"), attr), name)
    return check


CHECKS = {
    "arch": _arch, "rule": _rule, "method": _method,
    "compression": lambda v, n: check_compression(v, n),
    "seed": _int(), "samples": lambda v, n: check_samples(v, n), "levels": _int(1),
    "level": lambda v, n: check_level(v), "mask_model": _library_names("montecarlo", "MC_MASK_MODELS"),
    "granularity": _choices("weight", "kernel", "channel"),  # what connsim.prune prunes
    "target": _library_names("pruning", "TARGETS"),
    "scope": _optional(_library_names("pruning", "SCOPES")),
    "theory": _bool, "augment": _bool, "save_masks": _bool, "rounds": _optional(_int(1)),
    "prune_batch": _int(1), "iterations": _int(1), "batch_size": _int(1),
    "data_dir": _optional(_text),
    "dataset": lambda v, n: v if v == "auto" else _library_names("trainer.data", "DATASETS")(v, n),
    "optimizer": _library_names("trainer.optim", "OPTIMIZERS"),
    "schedule": _library_names("trainer.optim", "SCHEDULES"),
    "init": _library_names("trainer.layers", "INITS"), "backend": _backend,
    "lr": _real(low_open=True), "momentum": _real(high=1.0, high_open=True),
    "weight_decay": _real(), "fraction": _real(high=1.0, low_open=True, high_open=True),
    "milestones": lambda v, n: [check_int(x, f"{n}[{k}]", low=1) for k, x in enumerate(v)],
}


def check_input(key: str, value, name: str):
    """``value`` of input ``key`` in canonical form; raises naming ``name`` (its place in the
    study file) when it is outside its domain. Values that need more than one input to check
    (a rule's feasibility at a compression) are checked when the task runs."""
    try:
        return CHECKS[key](value, name)
    except InvalidArgument:
        raise
    except (ValueError, TypeError, KeyError) as e:
        msg = e.args[0] if e.args else str(e)
        raise InvalidArgument(name, "a valid value", value, str(msg)) from None


# ------------------------------------------------------------------- shared, cached inputs


@functools.lru_cache(maxsize=64)
def _designed_densities(arch_name: str, density: float) -> tuple:
    from .design import design_quota
    from .zoo import get_arch

    return tuple(design_quota(get_arch(arch_name), density).quota.densities)


def _quota(arch, rule: str, density: float):
    from .quotas import quota

    if rule == DESIGNED:
        return quota(arch, "custom", densities=_designed_densities(arch.name, density))
    return quota(arch, rule, density)


@functools.lru_cache(maxsize=4)
def _dataset(name: str, data_dir: str | None, input_shape: tuple, classes: int):
    """A dataset, loaded once per worker process and reshaped for the architecture."""
    from .trainer.data import load_dataset

    if name == "synthetic":
        return load_dataset(name, input_shape=input_shape, classes=classes)
    return load_dataset(name, data_dir or None).reshaped(input_shape)


def _data_for(arch, config: dict):
    name = config["dataset"]
    if name == "auto":
        name = "mnist" if arch.input_shape == (784,) else "synthetic"
    return _dataset(name, config.get("data_dir") or None, tuple(arch.input_shape),
                    arch.output.channels)


def _theory(arch, q) -> dict:
    from .theory import predict

    p = predict(arch, q)
    return {"theory_effective_compression": p.effective_compression,
            "theory_effective_params": p.expected_effective_params,
            "theory_p_disconnected": p.p_disconnected, "theory_exact": bool(p.exact)}


THEORY = ("theory_effective_compression", "theory_effective_params", "theory_p_disconnected",
          "theory_exact")


def _measured(m) -> dict:
    return {"direct_compression": m.compression, "effective_compression": m.effective_compression,
            "direct_density": m.density, "effective_density": m.effective_density,
            "removable_units": int(m.removable_units), "disconnected": bool(m.disconnected)}


MEASURED = ("direct_compression", "effective_compression", "direct_density", "effective_density",
            "removable_units", "disconnected")


# ---------------------------------------------------------------------------- artifacts

ARTIFACTS = "_artifacts"  # result key of the files a task returns: {file name: bytes}


def _json_bytes(obj) -> bytes:
    from .files import dumps

    return dumps(obj).encode()


def _masks_artifact(c: dict, masks: dict) -> dict:
    """``{ARTIFACTS: {'masks.npz': ...}}`` when the study asks for masks (``save_masks``)."""
    if not c.get("save_masks"):
        return {}
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v, dtype=bool) for k, v in masks.items()})
    return {ARTIFACTS: {"masks.npz": buf.getvalue()}}


# -------------------------------------------------------------------------------- kinds


def _predict(c: dict) -> dict:
    from .zoo import get_arch

    arch = get_arch(c["arch"])
    q = _quota(arch, c["rule"], 1 / c["compression"])
    return {"direct_compression": 1 / q.density, **_theory(arch, q)}


def _montecarlo(c: dict) -> dict:
    import numpy as np

    from .montecarlo import monte_carlo
    from .zoo import get_arch

    arch = get_arch(c["arch"])
    q = _quota(arch, c["rule"], 1 / c["compression"])
    mc = monte_carlo(arch, q, samples=c["samples"], mask_model=c["mask_model"], level=c["level"],
                     rng=np.random.SeedSequence(c["seed"]))
    lo, hi = mc.p_disconnected_ci
    out = {"direct_compression": 1 / q.density,
           "mc_effective_params": mc.mean_effective_params, "mc_stderr": mc.stderr,
           "mc_effective_compression": arch.total_params / mc.mean_effective_params
           if mc.mean_effective_params > 0 else math.inf,
           "mc_p_disconnected": mc.p_disconnected, "mc_p_disconnected_lo": lo,
           "mc_p_disconnected_hi": hi}
    return out | (_theory(arch, q) if c["theory"] else {})


def _measure(c: dict) -> dict:
    from .measures import measure
    from .sampling import random_masks
    from .zoo import get_arch

    arch = get_arch(c["arch"])
    q = _quota(arch, c["rule"], 1 / c["compression"])
    masks = random_masks(arch, q, model=c["mask_model"], rng=c["seed"])
    out = _measured(measure(arch, masks, level=c["level"]))
    return out | (_theory(arch, q) if c["theory"] else {}) | _masks_artifact(c, masks)


def _pruned(c: dict, arch):
    from .pruning import prune

    kw = {"rule": c["rule"]}
    if c["rule"] == DESIGNED:
        kw = {"rule": "custom", "rule_kw": {"densities": _designed_densities(arch.name,
                                                                          1 / c["compression"])}}
    needs_data = c["method"] in ("snip", "iterative-snip", "grasp")
    return prune(arch, c["method"], 1 / c["compression"], granularity=c["granularity"],
                 scope=c["scope"] or None, target=c["target"], level=c["level"],
                 data=_data_for(arch, c) if needs_data else None, batch_size=c["prune_batch"],
                 rounds=c["rounds"] or None, rng=c["seed"], **kw)


PRUNED = MEASURED + ("group_fraction", "target_met")


def _pruned_columns(c: dict, res) -> dict:
    """The ``PRUNED`` columns of a :class:`connsim.pruning.PruneResult` (and its masks when the
    study saves them)."""
    return (_measured(res.measurement) | _masks_artifact(c, res.masks)
            | {"group_fraction": res.group_fraction, "target_met": bool(res.target_met)})


def _prune(c: dict) -> dict:
    from .zoo import get_arch

    return _pruned_columns(c, _pruned(c, get_arch(c["arch"])))


def _train_config(c: dict):
    from .trainer.loop import TrainConfig

    return TrainConfig(iterations=c["iterations"], batch_size=c["batch_size"], lr=c["lr"],
                       optimizer=c["optimizer"], schedule=c["schedule"],
                       milestones=tuple(c["milestones"]), momentum=c["momentum"],
                       weight_decay=c["weight_decay"], augment=c["augment"], init=c["init"],
                       seed=c["seed"], backend=c["backend"])


def _train(c: dict) -> dict:
    from .trainer.loop import train
    from .zoo import get_arch

    data = _data_for(get_arch(c["arch"]), c)
    arch = get_arch(c["arch"], input_shape=data.input_shape)
    res = _pruned(c, arch)
    out = train(arch, data, res.masks, _train_config(c))
    columns = _pruned_columns(c, res) | {"test_accuracy": out.test_accuracy}
    columns.setdefault(ARTIFACTS, {})["history.json"] = _json_bytes(out.history)
    return columns


def _imp(c: dict) -> dict:
    from .imp import imp
    from .zoo import get_arch

    data = _data_for(get_arch(c["arch"]), c)
    arch = get_arch(c["arch"], input_shape=data.input_shape)
    with tempfile.TemporaryDirectory(prefix="connsim-imp-") as out_dir:
        levels = imp(arch, data, out_dir, levels=c["levels"], fraction=c["fraction"],
                     config=_train_config(c))
    last = levels[-1]
    return {"direct_compression": last["direct_compression"],
            "effective_compression": last["effective_compression"] or math.inf,
            "test_accuracy": last["test_accuracy"],
            "dense_accuracy": levels[0]["test_accuracy"],
            ARTIFACTS: {"levels.json": _json_bytes(levels)}}


QUOTA = {"arch": REQUIRED, "rule": "uniform", "compression": REQUIRED, "seed": 0}
PRUNING = {"arch": REQUIRED, "method": REQUIRED, "rule": "uniform", "scope": "",
           "compression": REQUIRED, "target": "direct", "level": "channel",
           "granularity": "weight", "seed": 0, "dataset": "auto", "data_dir": "", "rounds": "",
           "prune_batch": 128, "save_masks": False}
TRAINING = {"iterations": 1000, "batch_size": 100, "lr": 0.1, "optimizer": "sgd",
            "schedule": "step", "milestones": [], "momentum": 0.9, "weight_decay": 1e-3,
            "augment": False, "init": "kaiming", "backend": "numpy"}

KINDS = {k.name: k for k in (
    Kind("predict", _predict, {k: v for k, v in QUOTA.items() if k != "seed"},
         ("direct_compression",) + THEORY,
         "the theory for a quota rule"),
    Kind("montecarlo", _montecarlo,
         QUOTA | {"samples": 1000, "mask_model": "bernoulli", "level": "channel", "theory": True},
         ("direct_compression", "mc_effective_params", "mc_stderr", "mc_effective_compression",
          "mc_p_disconnected", "mc_p_disconnected_lo", "mc_p_disconnected_hi") + THEORY,
         "Monte Carlo of random pruning under a quota"),
    Kind("measure", _measure,
         QUOTA | {"level": "channel", "mask_model": "exact", "theory": False, "save_masks": False},
         MEASURED + THEORY,
         "one random mask from a quota, measured"),
    Kind("prune", _prune, PRUNING, PRUNED, "a pruning method at initialisation, measured"),
    Kind("train", _train, PRUNING | TRAINING, PRUNED + ("test_accuracy",),
         "a pruning method at initialisation, then training"),
    Kind("imp", _imp, {"arch": REQUIRED, "levels": 3, "fraction": 0.2, "seed": 0,
                       "dataset": "auto", "data_dir": ""} | TRAINING,
         ("direct_compression", "effective_compression", "test_accuracy", "dense_accuracy"),
         "iterative magnitude pruning; the last level"),
)}


def check_kind(kind) -> Kind:
    """The :class:`Kind` named ``kind``; raises naming the valid kinds."""
    return KINDS[check_choice(kind, KINDS, "kind")]


# ----------------------------------------------------------------------------- running


def execute(kind: str, config: dict, version: str) -> dict:
    """Run one task on this process; never raises for the task's own errors.

    Returns a dict with ``status`` (``'done'`` or ``'failed'``), ``result`` (the result columns;
    ``None`` when failed), ``error`` (the exception and its traceback), ``started``,
    ``seconds`` and ``worker`` (host and process id). ``version`` is the driver's connsim
    version: a worker with another version refuses the task, since its results would be filed
    under the driver's hash.
    """
    from . import __version__

    started = time.time()
    clock = time.perf_counter()
    out = {"started": started, "worker": f"{platform.node()}:{os.getpid()}", "result": None,
           "error": None}
    try:
        if version != __version__:
            raise RuntimeError(f"this worker runs connsim {__version__}, the driver "
                               f"{version}; install the same version on every worker")
        kind_ = KINDS[kind]
        result = kind_.run(config)
        missing = set(kind_.results) - set(result)
        if missing - set(THEORY):
            raise RuntimeError(f"task kind {kind!r} returned no {sorted(missing)}")
        out.update(status="done", result=result)
    except Exception as e:  # noqa: BLE001 -- any task error is recorded, the study goes on
        out.update(status="failed", error="".join(traceback.format_exception_only(e)).strip()
                   + "\n\n" + traceback.format_exc())
    out["seconds"] = time.perf_counter() - clock
    return out
