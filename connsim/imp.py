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

A resume with a different configuration (architecture, data, fraction, rewind point, scope,
training settings) is refused with the differing keys named; a second run on a folder that another
run holds (an exclusive lock on ``.lock``) is refused rather than interleaved.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, replace

import numpy as np

from ._validation import check_choice, check_fraction, check_int
from .architectures import Architecture
from .files import atomic_write, clean_stale_temps, write_json
from .maskio import load_masks, read_npz, save_masks
from .masks import ones_masks
from .measures import measure
from .orders import GlobalOrder, topk_masks
from .pruning import SCOPES as PRUNE_SCOPES
from .trainer.data import Dataset
from .trainer.loop import TrainConfig, train
from .trainer.network import Network

SCOPES = tuple(s for s in PRUNE_SCOPES if s != "layer-matched")  # IMP has no reference mask


def prune_survivors(arch: Architecture, weights: dict, masks: dict, fraction: float,
                    scope: str = "global") -> dict:
    """Remove ``fraction`` of the surviving weights with the smallest magnitude (global ranking,
    or the same fraction of every layer)."""
    _check_fraction(fraction)
    _check_scope(scope)
    scores = {n: np.where(masks[n], np.abs(weights[n]), -1.0) for n in arch.layer_names}
    if scope == "global":
        kept = sum(int(m.sum()) for m in masks.values())
        return GlobalOrder(arch, scores).masks(round((1 - fraction) * kept))
    counts = [round((1 - fraction) * int(masks[n].sum())) for n in arch.layer_names]
    return topk_masks(arch, scores, counts)


def _check_fraction(fraction) -> float:
    return check_fraction(fraction, "fraction", open=True,
                          fix="the share of the surviving weights each level removes")


def _check_scope(scope) -> str:
    return check_choice(scope, SCOPES, "scope", "'global' ranks all layers together, "
                                                "'layerwise' prunes each layer by the fraction")


@contextlib.contextmanager
def run_lock(out_dir: str):
    """Hold an exclusive lock on ``out_dir`` (released when the process ends, also on a crash)."""
    path = os.path.join(out_dir, ".lock")
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"run folder {out_dir!r} is in use by another connsim imp run; wait "
                             "for it to finish or use another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
        keys = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
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
        config: TrainConfig | None = None, progress: Callable | None = None) -> list:
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
        Fraction of the surviving weights removed per level.
    rewind : int
        Rewind to initialisation (0) or to the state after this many iterations of dense training.
    scope : {'global', 'layerwise'}
    config : TrainConfig
        Training of every level.
    progress : callable, optional
        Called as ``progress(level, record)`` after each finished level.

    Returns
    -------
    list of dict
        Per level: ``level``, ``masks`` (file name), ``direct_density``, ``effective_density``,
        ``direct_compression``, ``effective_compression`` (None when disconnected),
        ``test_accuracy``, ``epochs``, ``seconds``.
    """
    config = config or TrainConfig()
    check_int(levels, "levels", 0)
    _check_fraction(fraction)
    check_int(rewind, "rewind", 0)
    _check_scope(scope)
    config.check_data(len(data.y_train))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"run folder {out_dir!r} is an existing file; give a folder")
    os.makedirs(out_dir, exist_ok=True)
    with run_lock(out_dir):
        clean_stale_temps(out_dir)
        _check_config(out_dir, {
            "arch": arch.to_dict(), "dataset": data.name, "n_train": int(len(data.y_train)),
            "n_test": int(len(data.y_test)), "data_sha256": data_fingerprint(data),
            "fraction": float(fraction), "rewind": int(rewind),
            "scope": scope, "train": asdict(config)})
        return _run(arch, data, out_dir, levels, fraction, rewind, scope, config, progress)


def _run(arch, data, out_dir, levels, fraction, rewind, scope, config, progress) -> list:
    records = _read_levels(out_dir)[:levels + 1]
    rewind_path = os.path.join(out_dir, "rewind.npz")
    if os.path.exists(rewind_path):
        state = read_npz(rewind_path)
    else:
        if rewind > 0:  # late rewinding: the state after `rewind` iterations of dense training
            warm = train(arch, data, None, replace(config, iterations=rewind, epochs=None))
            state = warm.network.state_dict()
        else:  # the initialisation train() itself would draw for this seed
            seed = np.random.SeedSequence(config.seed).spawn(2)[0]
            state = Network(arch, init=config.init, rng=np.random.default_rng(seed)).state_dict()
        with atomic_write(rewind_path, ".npz") as tmp:
            np.savez(tmp, **state)
    for level in range(len(records), levels + 1):
        mask_file = f"masks_{level}.npz"
        mask_path = os.path.join(out_dir, mask_file)
        if level == 0 and not os.path.exists(mask_path):
            save_masks(mask_path, ones_masks(arch))
        masks = load_masks(mask_path, arch)
        res = train(arch, data, masks, replace(config, seed=config.seed + level),
                    initial_state=state)
        m = measure(arch, masks)
        # the successor of the last level too: a finished run can be extended with more levels
        nxt = prune_survivors(arch, res.network.weights(), masks, fraction, scope)
        save_masks(os.path.join(out_dir, f"masks_{level + 1}.npz"), nxt)
        record = {"level": level, "masks": mask_file, "direct_density": m.density,
                  "effective_density": m.effective_density, "direct_compression": m.compression,
                  "effective_compression": None if m.disconnected else m.effective_compression,
                  "test_accuracy": res.test_accuracy, "epochs": res.epochs,
                  "seconds": res.seconds}
        records.append(record)
        write_json(os.path.join(out_dir, "levels.json"), records)
        if progress is not None:
            progress(level, record)
    return records
