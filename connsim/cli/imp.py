"""``connsim imp``: iterative magnitude pruning with rewinding, resumable from its folder."""

from __future__ import annotations

import math

from ..files import check_writable
from ._common import (
    Progress,
    add_arch_args,
    big_arch,
    check_inputs,
    emit,
    nonneg_int,
    open_fraction,
    table,
)
from .train import add_training_args, train_config, train_data_arch


def add_parser(sub):
    """Add the ``imp`` command to ``sub``."""
    from ..imp import SCOPES
    from ..trainer.data import DATASETS

    p = sub.add_parser(
        "imp", help="iterative magnitude pruning with rewinding (resumable)",
        description=(
            "Iterative magnitude pruning: train, remove --fraction of the surviving weights by "
            "magnitude, rewind to initialisation (--rewind 0) or to the state after --rewind "
            "iterations, repeat for --levels levels. Every level records its mask, direct and "
            "effective density and test accuracy in --out as it finishes; re-running the same "
            "command resumes an interrupted run without losing or repeating a level."
        ),
        epilog="Example: connsim imp --arch lenet-300-100 --dataset mnist --levels 10 "
               "--fraction 0.2 --epochs 5 --out runs/imp",
    )
    add_arch_args(p)
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset")
    p.add_argument("--data-dir", help="dataset folder or file")
    p.add_argument("--levels", type=nonneg_int, default=5, help="pruned levels after the dense one")
    p.add_argument("--fraction", type=open_fraction, default=0.2,
                   help="fraction of surviving weights removed per level (default 0.2)")
    p.add_argument("--rewind", type=nonneg_int, default=0,
                   help="rewind iteration (0 = initialisation, default)")
    p.add_argument("--scope", choices=SCOPES, default="global",
                   help="magnitude ranking over all layers (default) or within each layer")
    add_training_args(p)
    p.add_argument("--out", required=True, help="run folder (resumed if it exists)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    """Run (or resume) iterative magnitude pruning; returns the exit status."""
    from ..imp import imp

    config = train_config(args)
    check_writable(args.out, folder=True)
    check_inputs(args)
    data, arch = train_data_arch(args)
    big_arch(arch, 64, "training")
    bar = Progress(f"imp {arch.name}", args.levels + 1, not args.json)
    records = imp(arch, data, args.out, levels=args.levels, fraction=args.fraction,
                  rewind=args.rewind, scope=args.scope, config=config,
                  progress=lambda level, r: bar.set(level + 1,
                                                    note=f"acc {r['test_accuracy']:.4f}"))
    bar.close()
    obj = {"arch": arch.name, "dataset": data.name, "out": args.out, "levels": records}
    rows = [[r["level"], r["direct_compression"], r["effective_compression"] or math.inf,
             r["test_accuracy"], r["seconds"]] for r in records]
    text = (table(rows, ["level", "compression", "eff.compression", "test accuracy", "seconds"])
            + f"\n\nrecords and masks in {args.out} (re-run the same command to resume)")
    emit(args, obj, text)
    return 0
