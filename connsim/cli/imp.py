"""``connsim imp``: iterative magnitude pruning with rewinding, resumable from its folder."""

from __future__ import annotations

import math

from .._validation import InvalidArgument, check_int
from ..files import check_writable
from ._common import (
    Progress,
    add_arch_args,
    big_arch,
    check_inputs,
    emit,
    nonneg_float,
    nonneg_int,
    number,
    open_fraction,
    positive_float,
    positive_int,
    table,
    unit_float,
)
from .train import add_training_args, train_config, train_data_arch

HELP = "iterative magnitude pruning with rewinding (resumable)"


def add_parser(sub):
    """Add the ``imp`` command to ``sub``."""
    from ..imp import PRUNERS, SCOPES
    from ..stopping import FLOWS, GF_VARIANTS, REFERENCES, STOPS
    from ..trainer.data import DATASETS

    p = sub.add_parser(
        "imp", help=HELP,
        description=(
            "Iterative magnitude pruning: train, remove --fraction of the surviving weights by "
            "magnitude, rewind to initialisation (--rewind 0) or to the state after --rewind "
            "iterations, repeat for --levels levels. Every level records its mask, direct and "
            "effective density and test accuracy in --out as it finishes; re-running the same "
            "command resumes an interrupted run without losing or repeating a level."
        ),
        epilog="Examples: connsim imp --arch lenet-300-100 --dataset mnist --levels 10 "
               "--fraction 0.2 --epochs 5 --out runs/imp. InCoP with the information flow: "
               "connsim imp --arch lenet-300-100 --dataset mnist --pruner sap --p 1 --q 2 "
               "--stop flow+accuracy --flow if --eps 1 --warmup-iterations 5 "
               "--max-iterations 10 --epochs 1 --schedule constant --lr 0.01 --momentum 0 "
               "--batch-size 64 --weight-decay 5e-4 --levels 10 --out runs/incop. Node "
               "pruning by SNIP to a tenth of the units in 2 rounds: connsim imp --arch dbsn-mlp "
               "--dataset mnist --keep 0.1 --granularity node --criterion snip --levels 2 "
               "--optimizer adam --lr 2e-5 --init uniform --out runs/node",
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
    g = p.add_argument_group(
        "pruner", "what each level removes: --pruner lth removes --fraction of the survivors by "
                  "magnitude; --pruner sap removes the share the PQ index of the survivors sets "
                  "(Diao et al. 2023), one global threshold")
    g.add_argument("--pruner", choices=PRUNERS, default="lth", help="default lth")
    g.add_argument("--p", type=positive_float, default=1.0, help="SAP: PQ index p (default 1)")
    g.add_argument("--q", type=positive_float, default=2.0, help="SAP: PQ index q > p (default 2)")
    g.add_argument("--sap-eta", type=nonneg_float, default=0.0, help="SAP: eta (default 0)")
    g.add_argument("--sap-scale", type=positive_float, default=1.0,
                   help="SAP: the ratio's factor gamma (default 1)")
    g.add_argument("--sap-max-ratio", type=unit_float, default=0.9,
                   help="SAP: cap beta on the ratio (default 0.9)")
    g = p.add_argument_group(
        "rounds with a stopping rule (InCoP)",
        "with --stop other than none, a warm-up of --warmup-iterations dense iterations sets the "
        "rewind point and the accuracy target, and each round trains iteration by iteration "
        "(one iteration = --epochs or --iterations) until its rule fires or --max-iterations "
        "ran; a validation split is held out of the training set; the schedule must be "
        "constant; see docs/incop.md")
    g.add_argument("--stop", choices=STOPS, default="none",
                   help="none: plain IMP (default); cap: always --max-iterations; flow: the flow "
                        "statistic is within --eps of the dense one; accuracy: the validation "
                        "accuracy is back to the warm-up's best; flow+accuracy: either")
    g.add_argument("--flow", choices=FLOWS, default="if",
                   help="if: information flow between layers (default); gf: gradient flow")
    g.add_argument("--eps", type=positive_float, default=1.0, help="flow threshold (default 1)")
    g.add_argument("--warmup-iterations", type=nonneg_int, default=0,
                   help="dense iterations before round 0 (default 0)")
    g.add_argument("--max-iterations", type=positive_int, default=10,
                   help="iterations per round at most (default 10)")
    g.add_argument("--validation", type=open_fraction, default=0.1,
                   help="share of the training set held out (default 0.1)")
    g.add_argument("--flow-samples", type=number(int, check_int, low=2), default=10000,
                   help="training examples of the information flow (default 10000)")
    g.add_argument("--gf-batches", type=positive_int, default=10,
                   help="held-out batches of the gradient flow (default 10)")
    g.add_argument("--gf-variant", choices=GF_VARIANTS, default="held-out",
                   help="authors: the original code's stale last-batch gradient (not recommended)")
    g.add_argument("--reference", choices=REFERENCES, default="validation",
                   help="test: the accuracy rule watches the test set, as the original code "
                        "did (not recommended)")
    from ..criteria import CRITERIA
    from ..granularity import GRANULARITIES, SEMANTICS

    g = p.add_argument_group(
        "group pruning (granularity study)",
        "with --keep, each level prunes whole groups of --granularity ranked by --criterion and "
        "level k keeps keep^(k/levels) of the prunable groups (globally with --scope global, of "
        "every layer with --scope layerwise); --fraction is unused; see docs/granularity.md")
    g.add_argument("--keep", type=open_fraction, default=None,
                   help="share of the prunable groups kept at the last level")
    g.add_argument("--granularity", choices=GRANULARITIES, default="weight",
                   help="weight (default), kernel, channel or node (dense units)")
    g.add_argument("--criterion", default="magnitude",
                   help=f"one of {', '.join(CRITERIA)}, or bad-<criterion> to prune the highest "
                        "scores first (default magnitude: the block mean |w|)")
    g.add_argument("--semantics", choices=SEMANTICS, default=None,
                   help="channel: 'weights' removes a pruned channel's incoming weights "
                        "(default), 'output' also zeroes its output after BatchNorm and "
                        "activation (after the residual add for a block's second conv)")
    g.add_argument("--exclude", default="",
                   help="comma-separated layer-name patterns never pruned, e.g. 'fc,*.shortcut'")
    g.add_argument("--samples", type=positive_int, default=2000,
                   help="training examples snip and stat read (default 2000)")
    add_training_args(p)
    p.add_argument("--out", required=True, help="run folder (resumed if it exists)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    """Run (or resume) iterative magnitude pruning; returns the exit status."""
    from ..imp import GroupPruning, imp
    from ..sap import SapSettings
    from ..stopping import StopRule

    config = train_config(args)
    check_writable(args.out, folder=True)
    check_inputs(args)
    data, arch = train_data_arch(args)
    big_arch(arch, 64, "training")
    _check_flags(args)
    groups = None
    if args.keep is not None:
        groups = GroupPruning(args.keep, args.granularity, args.criterion,
                              semantics=args.semantics, exclude=args.exclude,
                              samples=args.samples)
    bar = Progress(f"imp {arch.name}", args.levels + 1, not args.json)
    sap = SapSettings(p=args.p, q=args.q, eta=args.sap_eta, scale=args.sap_scale,
                      max_ratio=args.sap_max_ratio)
    stop = StopRule(stop=args.stop, flow=args.flow, eps=args.eps,
                    max_iterations=args.max_iterations,
                    warmup_iterations=args.warmup_iterations, validation=args.validation,
                    flow_samples=args.flow_samples, gf_batches=args.gf_batches,
                    gf_variant=args.gf_variant, reference=args.reference)
    records = imp(arch, data, args.out, levels=args.levels, fraction=args.fraction,
                  rewind=args.rewind, scope=args.scope, config=config, pruner=args.pruner,
                  sap=sap, stop=stop, groups=groups,
                  progress=lambda level, r: bar.set(level + 1,
                                                    note=f"acc {r['test_accuracy']:.4f}"))
    bar.close()
    obj = {"arch": arch.name, "dataset": data.name, "out": args.out, "levels": records}
    header = ["level", "compression", "eff.compression", "test accuracy", "seconds"]
    rows = [[r["level"], r["direct_compression"], r["effective_compression"] or math.inf,
             r["test_accuracy"], r["seconds"]] for r in records]
    if stop.rounds:
        header += ["epochs", "stopped by", "val. accuracy"]
        for row, r in zip(rows, records, strict=True):
            row += [r["epochs"], r["stopped_by"], r["validation_accuracy"]]
    text = (table(rows, header)
            + f"\n\nrecords and masks in {args.out} (re-run the same command to resume)")
    emit(args, obj, text)
    return 0


def _check_flags(args) -> None:
    """Refuse flag combinations that round mode or SAP cannot honour, naming the flags."""
    rounds = args.stop != "none"
    if not rounds and args.warmup_iterations:
        raise InvalidArgument("--warmup-iterations", "0 with --stop none",
                              args.warmup_iterations, "a warm-up needs rounds: --stop cap for "
                              "fixed rounds; plain IMP rewinds with --rewind ITERATIONS")
    if "accuracy" in args.stop and not args.warmup_iterations:
        raise InvalidArgument("--warmup-iterations", f">= 1 with --stop {args.stop}", 0,
                              "the accuracy rule stops at the warm-up's best accuracy")
    if rounds and args.rewind:
        raise InvalidArgument("--rewind", "0 with a stopping rule", args.rewind,
                              "in round mode --warmup-iterations sets the rewind point")
    group_flags = [(f, v) for f, v, d in (("--granularity", args.granularity, "weight"),
                                          ("--criterion", args.criterion, "magnitude"),
                                          ("--semantics", args.semantics, None),
                                          ("--exclude", args.exclude, "")) if v != d]
    if args.keep is None and group_flags:
        flag, value = group_flags[0]
        raise InvalidArgument(flag, "used with --keep", value,
                              "group pruning needs the final preservation rate: add --keep F")
    if args.pruner == "sap" and args.scope != "global":
        raise InvalidArgument("--scope", "global with --pruner sap", args.scope,
                              "SAP prunes by one global threshold; --scope is LTH's")
