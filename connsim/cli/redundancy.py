"""``connsim redundancy``: effective filters per layer, the maximum compression they allow, and
hierarchical filter pruning within that redundancy."""

from __future__ import annotations

import math

from ._common import (
    add_arch_args,
    check_inputs,
    emit,
    fmt,
    number,
    positive_int,
    table,
)

HELP = "effective filters per layer, maximum compression, hierarchical filter pruning"


def add_parser(sub):
    """Add the ``redundancy`` command to ``sub``."""
    from .._validation import check_compression, check_real
    from ..trainer.data import DATASETS

    p = sub.add_parser(
        "redundancy", help=HELP,
        description=(
            "Effective filters (a reconstruction of Zhou et al. 2022, docs/redundancy.md): for "
            "every hidden layer read by one conv or dense layer, the numerical rank of the "
            "per-sample gradients of the weights that read each unit, on --samples training "
            "examples; units that duplicate others, are linear combinations of them, are "
            "constant, or have no path to the output do not add to it. Reports ranks at several "
            "tolerances and energy fractions, output-eliminated units, the data-free structural "
            "bound (inactive units), the parameters freed, and the maximum compression. With "
            "--compression and --out, removes units within each layer's redundancy "
            "(hierarchical pruning) and writes channel masks usable everywhere in connsim."
        ),
        epilog="Example: connsim train --arch lenet-5 --dataset mnist --epochs 2 --out runs/l5; "
               "connsim redundancy --arch lenet-5 --weights runs/l5/weights.npz --dataset mnist "
               "--compression 1.5 --out l5_filters.npz",
    )
    add_arch_args(p)
    p.add_argument("--weights", required=True,
                   help="the network state (weights.npz written by connsim train)")
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset of the sample")
    p.add_argument("--data-dir", help="dataset folder or file")
    p.add_argument("--masks", help="the network's masks (.npz); dense if omitted")
    p.add_argument("--samples", type=positive_int, default=1024,
                   help="training examples of the sample (default 1024)")
    p.add_argument("--tol", type=number(float, check_real, low=0, high=1, low_open=True,
                                        high_open=True),
                   default=1e-3, help="tolerance of the effective rank (default 1e-3)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="examples per pass")
    p.add_argument("--compression", type=number(float, check_compression),
                   help="hierarchical pruning to this parameter compression (needs --out)")
    p.add_argument("--compensate", action="store_true",
                   help="fold removed units into the kept ones (least squares); writes "
                        "--weights-out")
    p.add_argument("--out", help="masks file of the hierarchical pruning")
    p.add_argument("--weights-out", help="compensated network state (.npz)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    """Measure effective filters (and prune hierarchically); returns the exit status."""
    import numpy as np

    from .._validation import InvalidArgument
    from ..files import atomic_write, check_writable
    from ..maskio import load_masks, load_weights, save_masks
    from ..redundancy import hierarchical_prune, redundancy
    from .train import train_data_arch

    if (args.compression is None) != (args.out is None):
        raise InvalidArgument("--compression", "given together with --out", args.compression,
                              "hierarchical pruning needs both; omit both to only measure")
    if args.compensate and not args.weights_out:
        raise InvalidArgument("--weights-out", "a file with --compensate", None,
                              "compensation changes the weights: say where to write them")
    for path in (args.out, args.weights_out):
        if path:
            check_writable(path)
    check_inputs(args)
    args.standardize, args.seed = False, 0
    data, arch = train_data_arch(args)
    _, state = load_weights(args.weights, arch)
    if not state:
        raise InvalidArgument("--weights", "a full network state", args.weights,
                              "pass the weights.npz that connsim train writes (biases and "
                              "BatchNorm included)")
    masks = load_masks(args.masks, arch) if args.masks else None
    n = min(args.samples, len(data.y_train))
    pick = np.sort(np.random.default_rng(0).permutation(len(data.y_train))[:n])
    red = redundancy(arch, state, data.x_train[pick], data.y_train[pick], masks=masks,
                     tol=args.tol, batch_size=args.batch_size)
    obj = red.to_dict()
    tols = [k for k in red.layers[0].ranks]
    rows = [[lr.name, lr.units, *(lr.ranks[k] for k in tols), lr.eliminated, lr.structural,
             lr.redundancy, fmt(lr.params_per_unit * lr.redundancy, 6)] for lr in red.layers]
    text = table(rows, ["layer", "units", *tols, "eliminated", "structural", "redundancy",
                        "params freed"])
    text += (f"\n\n{red.samples} samples, rank at tol={red.tol:g}; maximum redundancy "
             f"{red.max_redundancy:.4f} of {red.params} parameters, maximum compression "
             f"{fmt(red.max_compression if not math.isinf(red.max_compression) else math.inf)}")
    if red.skipped:
        text += "\nnot analysed: " + "; ".join(f"{k} ({v})" for k, v in red.skipped.items())
    if args.compression is not None:
        res = hierarchical_prune(arch, red, args.compression, masks=masks, state=state,
                                 compensate=args.compensate)
        save_masks(args.out, res.masks)
        if res.state is not None:
            with atomic_write(args.weights_out, ".npz") as tmp:
                np.savez(tmp, **{k: v.astype(np.float32) for k, v in res.state.items()})
        obj["pruning"] = {"requested": args.compression, "compression": res.compression,
                          "freed": res.freed, "lambda": res.lam, "out": args.out,
                          "removed": {k: int(v.sum()) for k, v in res.removed.items()}}
        text += (f"\n\nhierarchical pruning: compression {res.compression:.4f} (asked "
                 f"{args.compression:g}), lambda {res.lam:.3f}, removed "
                 + ", ".join(f"{k} {int(v.sum())}" for k, v in res.removed.items())
                 + f"; masks in {args.out}")
    emit(args, obj, text)
    return 0
